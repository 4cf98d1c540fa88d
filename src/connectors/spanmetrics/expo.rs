//! A base-2 exponential histogram of non-negative values, as the OpenTelemetry SDKs record
//! one: it starts at the finest scale (20) and halves its resolution whenever the populated
//! buckets would exceed `max_size`.

const MAX_SCALE: i32 = 20;
const MIN_SCALE: i32 = -10;

#[derive(Clone, Debug, PartialEq)]
pub struct ExpHistogram {
    pub scale: i32,
    /// Index of `counts[0]`.
    pub offset: i32,
    pub counts: Vec<u64>,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl ExpHistogram {
    pub fn new() -> ExpHistogram {
        ExpHistogram {
            scale: MAX_SCALE,
            offset: 0,
            counts: Vec::new(),
            zero_count: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    pub fn record(&mut self, value: f64, max_size: usize) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if value <= 0.0 || !value.is_finite() {
            self.zero_count += 1;
            return;
        }
        let mut index = index_of(value, self.scale);
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(1);
            return;
        }
        let end = self.offset + self.counts.len() as i32 - 1;
        let (low, high) = (self.offset.min(index), end.max(index));
        let mut shift = 0;
        while (i64::from(high >> shift) - i64::from(low >> shift) + 1) as usize > max_size.max(1)
            && self.scale - shift > MIN_SCALE
        {
            shift += 1;
        }
        if shift > 0 {
            self.downscale(shift);
            index >>= shift;
        }
        let end = self.offset + self.counts.len() as i32 - 1;
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        } else if index > end {
            self.counts
                .resize(self.counts.len() + (index - end) as usize, 0);
        }
        self.counts[(index - self.offset) as usize] += 1;
    }

    fn downscale(&mut self, shift: i32) {
        self.scale -= shift;
        if self.counts.is_empty() {
            return;
        }
        let new_offset = self.offset >> shift;
        let end = (self.offset + self.counts.len() as i32 - 1) >> shift;
        let mut merged = vec![0u64; (end - new_offset + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let idx = (self.offset + i as i32) >> shift;
            merged[(idx - new_offset) as usize] += c;
        }
        self.offset = new_offset;
        self.counts = merged;
    }
}

impl Default for ExpHistogram {
    fn default() -> Self {
        ExpHistogram::new()
    }
}

/// The bucket of a positive, finite value: bucket `i` holds `(base^i, base^(i+1)]` with
/// `base = 2^(2^-scale)`.
pub fn index_of(value: f64, scale: i32) -> i32 {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let exact_power = bits & ((1 << 52) - 1) == 0 && exponent > -1023;
    if scale <= 0 {
        let e = if exact_power { exponent - 1 } else { exponent };
        return e >> -scale;
    }
    if exact_power {
        return (exponent << scale) - 1;
    }
    let scaled = value.log2() * f64::from(1u32 << scale);
    (scaled.ceil() as i64 - 1) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(index: i32, scale: i32) -> f64 {
        2f64.powf(f64::from(index) / 2f64.powi(scale))
    }

    #[test]
    fn values_land_in_the_bucket_whose_bounds_hold_them() {
        for scale in [-2, 0, 1, 3, 8, 20] {
            for v in [0.001, 0.5, 1.0, 1.5, 2.0, 3.0, 7.9, 142.0, 1024.0, 9.99e5] {
                let i = index_of(v, scale);
                let (lo, hi) = (lower(i, scale), lower(i + 1, scale));
                assert!(
                    lo <= v * (1.0 + 1e-9) && v <= hi * (1.0 + 1e-9),
                    "{v} at scale {scale}: bucket {i} = ({lo}, {hi}]"
                );
            }
        }
        assert_eq!(index_of(1.0, 0), -1);
        assert_eq!(index_of(2.0, 0), 0);
        assert_eq!(index_of(4.0, 1), 3);
    }

    #[test]
    fn downscales_to_stay_within_max_size_and_keeps_every_count() {
        let mut h = ExpHistogram::new();
        let values: Vec<f64> = (0..1000).map(|i| 0.1 + f64::from(i) * 3.7).collect();
        for v in &values {
            h.record(*v, 20);
        }
        h.record(0.0, 20);
        assert!(h.counts.len() <= 20, "{} buckets", h.counts.len());
        assert_eq!(h.counts.iter().sum::<u64>() + h.zero_count, 1001);
        assert_eq!(h.count, 1001);
        assert_eq!(h.zero_count, 1);
        assert_eq!(h.min, 0.0);
        for v in &values {
            let i = index_of(*v, h.scale);
            assert!(i >= h.offset && i < h.offset + h.counts.len() as i32);
        }
        let total: f64 = values.iter().sum();
        assert!((h.sum - total).abs() < 1e-6);
    }
}
