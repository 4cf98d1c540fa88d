//! The decision shared by spans and log records: where the randomness came from, the
//! threshold each mode applies, and the collector's order of checks (consistency, then
//! `fail_closed`, then priority, then writing the new threshold back).

use super::config::{ProbabilisticSamplerConfig, SamplerMode, TRACE_ID_SOURCE};
use super::threshold::{MIN_SAMPLING_PROBABILITY, Randomness, Threshold, ValueError};
use super::tracestate::TraceStateError;

const NUM_HASH_BUCKETS_LG2: u32 = 14;
const NUM_HASH_BUCKETS: u32 = 1 << NUM_HASH_BUCKETS_LG2;
const BIT_MASK_HASH_BUCKETS: u32 = NUM_HASH_BUCKETS - 1;
/// 16384 / 100, applied in float32 as the collector does (so 10% is 1638 buckets, not 1638.4).
const PERCENTAGE_SCALE_FACTOR: f32 = NUM_HASH_BUCKETS as f32 / 100.0;

/// Why an item could not be decided normally; `fail_closed` then decides. Messages are the
/// collector's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SamplingError {
    #[error("inconsistent arriving threshold: item should not have been sampled")]
    InconsistentArrivingThreshold,
    #[error("missing randomness")]
    MissingRandomness,
    #[error("item has sampling randomness, equalizing or proportional mode recommended")]
    RandomnessInUse,
    #[error("item has sampling threshold, equalizing or proportional mode recommended")]
    ThresholdInUse,
    /// Not a decision error: a kept item's threshold was left as it was.
    #[error("cannot raise existing sampling probability")]
    InconsistentSampling,
    #[error(transparent)]
    TraceState(#[from] TraceStateError),
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Where an item's randomness came from; the `policy` label of the sampled-count metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    TraceIdHash,
    TraceIdW3c,
    SamplingRandomness,
    SamplingPriority,
    MissingRandomness,
    /// Hashed from the log attribute named by `from_attribute` (the label is that name).
    Attribute,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::TraceIdHash,
        Source::TraceIdW3c,
        Source::SamplingRandomness,
        Source::SamplingPriority,
        Source::MissingRandomness,
        Source::Attribute,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn policy_name(self, attribute: &str) -> &str {
        match self {
            Source::TraceIdHash => "trace_id_hash",
            Source::TraceIdW3c => "trace_id_w3c",
            Source::SamplingRandomness => "sampling_randomness",
            Source::SamplingPriority => "sampling_priority",
            Source::MissingRandomness => "missing_randomness",
            Source::Attribute => attribute,
        }
    }
}

/// An item's randomness with its source. Missing randomness reads as sampled-at-every-
/// probability, which only matters once a priority or `fail_closed: false` has decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rnd {
    pub source: Source,
    pub value: Randomness,
}

impl Rnd {
    pub const MISSING: Rnd = Rnd {
        source: Source::MissingRandomness,
        value: Randomness::ALL_PROBABILITIES,
    };

    pub fn new(source: Source, value: Randomness) -> Rnd {
        Rnd { source, value }
    }

    pub fn is_missing(self) -> bool {
        self.source == Source::MissingRandomness
    }
}

/// The sampling information an item carries (tracestate for spans, attributes for logs).
pub trait Carrier {
    fn threshold(&self) -> Option<Threshold>;
    fn clear_threshold(&mut self);
    /// Records the threshold a kept item was sampled at; refuses to raise its probability.
    fn update_threshold(&mut self, threshold: Threshold) -> Result<(), SamplingError>;
}

/// What was read from an item before deciding. The carrier is `None` when the item's
/// sampling information is unusable or must be left alone.
pub struct Extracted<C> {
    pub rnd: Rnd,
    pub carrier: Option<C>,
    pub error: Option<SamplingError>,
}

impl<C> Extracted<C> {
    pub fn ok(rnd: Rnd, carrier: C) -> Extracted<C> {
        Extracted {
            rnd,
            carrier: Some(carrier),
            error: None,
        }
    }

    pub fn failed(rnd: Rnd, error: impl Into<SamplingError>) -> Extracted<C> {
        Extracted {
            rnd,
            carrier: None,
            error: Some(error.into()),
        }
    }
}

/// The outcome for one item; `problems` are what the collector would log (at debug).
#[derive(Debug)]
pub struct Decision {
    pub sampled: bool,
    pub source: Source,
    pub problems: Vec<SamplingError>,
}

/// The configured mode, resolved for one signal.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampler {
    /// 0% (or a hash_seed percentage below one bucket): only priorities keep items.
    Never,
    HashSeed(HashSeedSampler),
    /// Applies a fixed threshold, keeping a stricter arriving one.
    Equalizing {
        threshold: Threshold,
    },
    /// Multiplies the arriving probability by `ratio`.
    Proportional {
        ratio: f64,
        precision: i32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct HashSeedSampler {
    pub threshold: Threshold,
    pub seed: u32,
    /// Logs: hash the record's trace id first (`attribute_source: traceID`).
    pub logs_trace_id: bool,
    /// Logs: the attribute hashed when there is no trace id to hash.
    pub logs_attribute: String,
}

impl Sampler {
    /// Upstream's `makeSampler`.
    pub fn new(config: &ProbabilisticSamplerConfig, logs: bool) -> Sampler {
        let pct = config.sampling_percentage.min(100.0);
        let mode = match config.mode {
            SamplerMode::Unset => SamplerMode::HashSeed,
            m => m,
        };
        if pct <= 0.0 || pct.is_nan() {
            return Sampler::Never;
        }
        let ratio = (f64::from(pct) / 100.0).max(MIN_SAMPLING_PROBABILITY);
        match mode {
            SamplerMode::Equalizing => Sampler::Equalizing {
                threshold: Threshold::from_probability(ratio, config.sampling_precision)
                    .unwrap_or(Threshold::ALWAYS_SAMPLE),
            },
            SamplerMode::Proportional => Sampler::Proportional {
                ratio,
                precision: config.sampling_precision,
            },
            SamplerMode::HashSeed | SamplerMode::Unset => {
                // Truncating a float32 product keeps the collector's decisions bit for bit.
                let scaled = (pct * PERCENTAGE_SCALE_FACTOR) as u32;
                if scaled == 0 {
                    return Sampler::Never;
                }
                let reject = u64::from(NUM_HASH_BUCKETS - scaled.min(NUM_HASH_BUCKETS));
                Sampler::HashSeed(HashSeedSampler {
                    threshold: Threshold::from_unsigned(reject << 42),
                    seed: config.hash_seed,
                    logs_trace_id: logs && config.attribute_source == TRACE_ID_SOURCE,
                    logs_attribute: config.from_attribute.clone(),
                })
            }
        }
    }

    /// The threshold to apply given the threshold the item arrived with.
    pub fn decide(&self, arriving: Option<Threshold>) -> Threshold {
        match self {
            Sampler::Never => Threshold::NEVER_SAMPLE,
            Sampler::HashSeed(h) => h.threshold,
            Sampler::Equalizing { threshold } => match arriving {
                Some(t) if *threshold < t => t,
                _ => *threshold,
            },
            Sampler::Proportional { ratio, precision } => {
                let incoming = arriving.map_or(1.0, Threshold::probability);
                // A product below 2^-56 is unrepresentable: the item is simply not sampled.
                Threshold::from_probability(incoming * ratio, *precision)
                    .unwrap_or(Threshold::NEVER_SAMPLE)
            }
        }
    }
}

/// FNV-1a 32 over the little-endian seed followed by `key`: upstream's `computeHash`.
pub fn compute_hash(key: &[u8], seed: u32) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    seed.to_le_bytes()
        .iter()
        .chain(key)
        .fold(OFFSET_BASIS, |hash, &b| {
            (hash ^ u32::from(b)).wrapping_mul(PRIME)
        })
}

/// The hash as 56-bit randomness such that `threshold.should_sample(r)` holds exactly when
/// the legacy test `hash & 0x3fff < scaled` does: the top 14 bits are `16383 - bucket`, then
/// 28 bits mixed from the 18 unused hash bits, then the bucket. Upstream's
/// `randomnessFromBytes`.
pub fn randomness_from_bytes(key: &[u8], seed: u32) -> Randomness {
    let hashed32 = compute_hash(key, seed);
    let hashed = u64::from(hashed32 & BIT_MASK_HASH_BUCKETS);
    let rprime14 = u64::from(NUM_HASH_BUCKETS) - 1 - hashed;
    let unused18 = u64::from(hashed32 >> (32 - NUM_HASH_BUCKETS_LG2));
    let mixed28 = unused18 ^ (unused18 << 10);
    Randomness::from_unsigned((rprime14 << 42) | (mixed28 << 14) | hashed)
}

/// Upstream's `commonShouldSampleLogic` for one item. `priority` may override the threshold
/// (and then names `sampling_priority` as the source); it runs after `fail_closed`, so a
/// priority wins over both the percentage and errors. Returns the carrier, updated, to be
/// written back to the item when it is sampled.
pub fn should_sample<C: Carrier>(
    sampler: &Sampler,
    fail_closed: bool,
    item: Extracted<C>,
    priority: impl FnOnce(Rnd, Threshold) -> (Rnd, Threshold),
) -> (Decision, Option<C>) {
    let Extracted {
        rnd,
        mut carrier,
        mut error,
    } = item;
    if error.is_none() {
        error = consistency_check(rnd, carrier.as_mut()).err();
    }
    let mut problems = Vec::new();
    let threshold = match error {
        Some(e) => {
            problems.push(e);
            if fail_closed {
                Threshold::NEVER_SAMPLE
            } else {
                Threshold::ALWAYS_SAMPLE
            }
        }
        None => sampler.decide(carrier.as_ref().and_then(Carrier::threshold)),
    };
    let (rnd, threshold) = priority(rnd, threshold);
    let sampled = threshold.should_sample(rnd.value);
    if sampled
        && let Some(c) = carrier.as_mut()
        && let Err(e) = c.update_threshold(threshold)
    {
        problems.push(e);
    }
    let decision = Decision {
        sampled,
        source: rnd.source,
        problems,
    };
    (decision, carrier)
}

fn consistency_check<C: Carrier>(rnd: Rnd, carrier: Option<&mut C>) -> Result<(), SamplingError> {
    if rnd.is_missing() {
        return Err(SamplingError::MissingRandomness);
    }
    let Some(carrier) = carrier else {
        return Ok(());
    };
    if let Some(arriving) = carrier.threshold()
        && !arriving.should_sample(rnd.value)
    {
        // Cleared as the specification recommends, which matters when failing open.
        carrier.clear_threshold();
        return Err(SamplingError::InconsistentArrivingThreshold);
    }
    Ok(())
}
