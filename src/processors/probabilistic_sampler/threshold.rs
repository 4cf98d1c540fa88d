//! OpenTelemetry consistent-probability sampling values (OTEP 235): 56 bits of randomness, the
//! rejection threshold they are compared with, and their hex encodings `rv` and `th`. Mirrors
//! the collector's `pkg/sampling` so thresholds round and print exactly as it does.

/// 2^56: one more than the largest randomness value; the threshold that never samples.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
/// Hex digits in a full-width `rv` or `th` value.
pub const NUM_HEX_DIGITS: usize = 14;
/// The smallest probability a threshold can express.
pub const MIN_SAMPLING_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;

const HEX_BITS: u32 = 4;

/// Why an `rv`/`th` value or a probability cannot be used. Messages are the collector's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("t-value exceeds 14 hex digits")]
    TValueSize,
    #[error("t-value is empty")]
    TValueEmpty,
    #[error("r-value must have 14 hex digits")]
    RValueSize,
    #[error("strconv.ParseUint: parsing {0:?}: invalid syntax")]
    Syntax(String),
    #[error("sampling probability out of the range [1/MaxAdjustedCount, 1]")]
    ProbabilityRange,
}

/// 56 random bits: from `ot=rv:`, the low 7 bytes of a W3C trace id, or a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

impl Randomness {
    /// Sampled at every probability; stands in where randomness is missing.
    pub const ALL_PROBABILITIES: Randomness = Randomness(MAX_ADJUSTED_COUNT - 1);

    /// Values of 2^56 and above are out of range and become `ALL_PROBABILITIES`, as upstream.
    pub fn from_unsigned(value: u64) -> Randomness {
        if value >= MAX_ADJUSTED_COUNT {
            Randomness::ALL_PROBABILITIES
        } else {
            Randomness(value)
        }
    }

    /// The least significant 56 bits of a trace id (bytes 9..16, big-endian), which W3C
    /// Trace Context level 2 makes random.
    pub fn from_trace_id(id: &[u8; 16]) -> Randomness {
        let mut low = [0u8; 8];
        low.copy_from_slice(&id[8..]);
        Randomness(u64::from_be_bytes(low) & (MAX_ADJUSTED_COUNT - 1))
    }

    /// Parses an `rv` value: exactly 14 hex digits, either case.
    pub fn parse_rvalue(text: &str) -> Result<Randomness, ValueError> {
        if text.len() != NUM_HEX_DIGITS {
            return Err(ValueError::RValueSize);
        }
        parse_hex(text).map(Randomness)
    }

    /// The `rv` encoding: 14 lower-case hex digits with leading zeros.
    pub fn rvalue(self) -> String {
        format!("{:014x}", self.0)
    }

    #[cfg(test)]
    pub fn unsigned(self) -> u64 {
        self.0
    }
}

/// The rejection threshold: an item is sampled when its randomness is at least this. 0 samples
/// everything; 2^56 samples nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

impl Threshold {
    pub const ALWAYS_SAMPLE: Threshold = Threshold(0);
    pub const NEVER_SAMPLE: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// Values above 2^56 are clamped to `NEVER_SAMPLE`.
    pub fn from_unsigned(value: u64) -> Threshold {
        Threshold(value.min(MAX_ADJUSTED_COUNT))
    }

    /// Parses a `th` value: 1 to 14 hex digits, trailing zeros implied.
    pub fn parse_tvalue(text: &str) -> Result<Threshold, ValueError> {
        if text.len() > NUM_HEX_DIGITS {
            return Err(ValueError::TValueSize);
        }
        if text.is_empty() {
            return Err(ValueError::TValueEmpty);
        }
        let value = parse_hex(text)?;
        let pad = (NUM_HEX_DIGITS - text.len()) as u32 * HEX_BITS;
        Ok(Threshold(value << pad))
    }

    /// The `th` encoding: 14 hex digits with trailing zeros trimmed; `0` for always-sample.
    pub fn tvalue(self) -> String {
        if self == Threshold::ALWAYS_SAMPLE {
            return "0".to_string();
        }
        if self.0 >= MAX_ADJUSTED_COUNT {
            return String::new();
        }
        let digits = format!("{:014x}", self.0);
        digits.trim_end_matches('0').to_string()
    }

    pub fn should_sample(self, randomness: Randomness) -> bool {
        randomness.0 >= self.0
    }

    pub fn probability(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    #[cfg(test)]
    pub fn adjusted_count(self) -> f64 {
        1.0 / self.probability()
    }

    #[cfg(test)]
    pub fn unsigned(self) -> u64 {
        self.0
    }

    /// Converts a probability in [2^-56, 1] to a threshold rounded (half up) to `precision`
    /// hex digits, adding digits near 0 and 1 where leading `f`s or `0`s would otherwise eat
    /// the precision. `precision` 0 means all 14 digits. Upstream's
    /// `ProbabilityToThresholdWithPrecision`.
    pub fn from_probability(fraction: f64, precision: i32) -> Result<Threshold, ValueError> {
        let precision = if precision == 0 {
            NUM_HEX_DIGITS as i32
        } else {
            precision
        };
        if !(MIN_SAMPLING_PROBABILITY..=1.0).contains(&fraction) {
            return Err(ValueError::ProbabilityRange);
        }
        if fraction == 1.0 {
            return Ok(Threshold::ALWAYS_SAMPLE);
        }
        let hex_bits = HEX_BITS as i32;
        let from_fraction = precision + frexp_exponent(fraction) / -hex_bits;
        let from_rest = precision + frexp_exponent(1.0 - fraction) / -hex_bits;
        let precision = from_fraction.max(from_rest).clamp(1, NUM_HEX_DIGITS as i32) as u32;

        let scaled = (fraction * MAX_ADJUSTED_COUNT as f64).round() as u64;
        let mut threshold = MAX_ADJUSTED_COUNT - scaled;
        let shift = HEX_BITS * (NUM_HEX_DIGITS as u32 - precision);
        if shift != 0 {
            let half = 1u64 << (shift - 1);
            threshold += half;
            threshold >>= shift;
            threshold <<= shift;
        }
        Ok(Threshold(threshold))
    }
}

/// Hex digits only: Rust's `from_str_radix` would also take a leading `+`, Go's does not.
fn parse_hex(text: &str) -> Result<u64, ValueError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ValueError::Syntax(text.to_string()));
    }
    u64::from_str_radix(text, 16).map_err(|_| ValueError::Syntax(text.to_string()))
}

/// The exponent `e` of Go's `math.Frexp(x)`, where x = f·2^e with f in [0.5, 1), for
/// positive finite x.
fn frexp_exponent(x: f64) -> i32 {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        if x == 0.0 {
            return 0;
        }
        // Subnormal: scale into the normal range first.
        return frexp_exponent(x * f64::powi(2.0, 54)) - 54;
    }
    biased - 1022
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv(fraction: f64, precision: i32) -> String {
        Threshold::from_probability(fraction, precision)
            .unwrap()
            .tvalue()
    }

    #[test]
    fn frexp_matches_go() {
        assert_eq!(frexp_exponent(0.5), 0);
        assert_eq!(frexp_exponent(1.0), 1);
        assert_eq!(frexp_exponent(0.01), -6);
        assert_eq!(frexp_exponent(0.75), 0);
        assert_eq!(frexp_exponent(f64::MIN_POSITIVE / 4.0), -1023);
    }

    #[test]
    fn probability_to_threshold_vectors() {
        let one_pct = f64::from(1f32) / 100.0;
        assert_eq!(tv(one_pct, 0), "fd70a3d70a3d71");
        assert_eq!(tv(one_pct, 4), "fd70a");
        assert_eq!(tv(one_pct, 3), "fd71");
        assert_eq!(tv(f64::from(40f32) / 100.0, 3), "99a");
        assert_eq!(tv(f64::from(40f32) / 100.0, 6), "99999a");
        assert_eq!(tv(0.5 * f64::from(40f32) / 100.0, 6), "cccccd");
        assert_eq!(tv(0.5, 4), "8");
        assert_eq!(tv(0.25, 4), "c");
        assert_eq!(tv(10.125 / 100.0, 6), "e6147b");
        assert_eq!(tv(1.0, 4), "0");
        assert_eq!(
            Threshold::from_probability(0.0, 4),
            Err(ValueError::ProbabilityRange)
        );
        assert_eq!(
            Threshold::from_probability(1.5, 4),
            Err(ValueError::ProbabilityRange)
        );
        assert_eq!(
            Threshold::from_probability(f64::NAN, 4),
            Err(ValueError::ProbabilityRange)
        );
    }

    #[test]
    fn tvalue_parsing_and_trimming() {
        let th = Threshold::parse_tvalue("8").unwrap();
        assert_eq!(th.unsigned(), 1 << 55);
        assert_eq!(th.tvalue(), "8");
        assert_eq!(
            Threshold::parse_tvalue("80000000000000").unwrap().tvalue(),
            "8"
        );
        assert_eq!(
            Threshold::parse_tvalue("0").unwrap(),
            Threshold::ALWAYS_SAMPLE
        );
        assert_eq!(
            Threshold::parse_tvalue("abababababababab"),
            Err(ValueError::TValueSize)
        );
        assert_eq!(Threshold::parse_tvalue(""), Err(ValueError::TValueEmpty));
        let syntax = Threshold::parse_tvalue("-1").unwrap_err().to_string();
        assert!(syntax.contains("invalid syntax"), "{syntax}");
        assert!(Threshold::parse_tvalue("+1").is_err());
        assert_eq!(Threshold::NEVER_SAMPLE.tvalue(), "");
        assert_eq!(Threshold::parse_tvalue("c").unwrap().adjusted_count(), 4.0);
    }

    #[test]
    fn rvalue_parsing() {
        let r = Randomness::parse_rvalue("FD70A3D70A3D71").unwrap();
        assert_eq!(r.rvalue(), "fd70a3d70a3d71");
        assert_eq!(
            Randomness::parse_rvalue("abababababababab"),
            Err(ValueError::RValueSize)
        );
        assert!(Randomness::parse_rvalue("0000000000000g").is_err());
        assert_eq!(Randomness::from_unsigned(5).rvalue(), "00000000000005");
        assert_eq!(
            Randomness::from_unsigned(MAX_ADJUSTED_COUNT),
            Randomness::ALL_PROBABILITIES
        );
    }

    #[test]
    fn trace_id_randomness_is_low_56_bits() {
        let mut id = [0xfe; 16];
        id[9..].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Randomness::from_trace_id(&id).unsigned(), 0x80000000000000);
    }

    #[test]
    fn should_sample_is_inclusive() {
        let th = Threshold::parse_tvalue("8").unwrap();
        assert!(th.should_sample(Randomness::from_unsigned(0x80000000000000)));
        assert!(!th.should_sample(Randomness::from_unsigned(0x7fffffffffffff)));
        assert!(!Threshold::NEVER_SAMPLE.should_sample(Randomness::ALL_PROBABILITIES));
        assert!(Threshold::ALWAYS_SAMPLE.should_sample(Randomness::from_unsigned(0)));
    }
}
