//! Settings of the `probabilistic_sampler` processor, with the collector's keys, defaults and
//! validation messages.

use serde::{Deserialize, Deserializer};

use super::threshold::{MIN_SAMPLING_PROBABILITY, NUM_HEX_DIGITS};

pub const TRACE_ID_SOURCE: &str = "traceID";
pub const RECORD_SOURCE: &str = "record";

/// How the sampling decision is made. `Unset` picks `hash_seed`, as the collector's code does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SamplerMode {
    #[default]
    Unset,
    HashSeed,
    Equalizing,
    Proportional,
}

impl<'de> Deserialize<'de> for SamplerMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "" => Ok(SamplerMode::Unset),
            "hash_seed" => Ok(SamplerMode::HashSeed),
            "equalizing" => Ok(SamplerMode::Equalizing),
            "proportional" => Ok(SamplerMode::Proportional),
            other => Err(serde::de::Error::custom(format!(
                "unsupported sampler mode {other:?}"
            ))),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbabilisticSamplerConfig {
    /// Percent of items kept; above 100 means 100, 0 keeps nothing (but priorities).
    pub sampling_percentage: f32,
    pub hash_seed: u32,
    pub mode: SamplerMode,
    /// Hex digits of `th` written in `equalizing`/`proportional` mode.
    pub sampling_precision: i32,
    /// Whether an item whose randomness or tracestate cannot be used is dropped.
    pub fail_closed: bool,
    /// Logs: `traceID` or `record` (hash `from_attribute`). Empty acts like `record`.
    pub attribute_source: String,
    pub from_attribute: String,
    /// Logs: a record attribute holding a sampling percentage for that record.
    pub sampling_priority: String,
}

impl Default for ProbabilisticSamplerConfig {
    fn default() -> Self {
        ProbabilisticSamplerConfig {
            sampling_percentage: 0.0,
            hash_seed: 0,
            mode: SamplerMode::Unset,
            sampling_precision: 4,
            fail_closed: true,
            attribute_source: TRACE_ID_SOURCE.to_string(),
            from_attribute: String::new(),
            sampling_priority: String::new(),
        }
    }
}

impl ProbabilisticSamplerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let pct = self.sampling_percentage;
        if pct.is_nan() {
            return Err("sampling rate is invalid: NaN%".into());
        }
        if pct.is_infinite() {
            let sign = if pct > 0.0 { "+" } else { "-" };
            return Err(format!("sampling rate is invalid: {sign}Inf%"));
        }
        let ratio = f64::from(pct) / 100.0;
        if ratio < 0.0 {
            return Err(format!("sampling rate is negative: {pct:.6}%"));
        }
        if ratio != 0.0 && ratio < MIN_SAMPLING_PROBABILITY {
            return Err(format!("sampling rate is too small: {}%", go_g(pct)));
        }
        if !self.attribute_source.is_empty()
            && self.attribute_source != TRACE_ID_SOURCE
            && self.attribute_source != RECORD_SOURCE
        {
            return Err(format!(
                "invalid attribute source: {}. Expected: {TRACE_ID_SOURCE} or {RECORD_SOURCE}",
                self.attribute_source
            ));
        }
        // The collector accepts negative precisions and then computes nonsense; refusing them
        // with the zero case's message is kinder.
        if self.sampling_precision <= 0 {
            return Err(format!(
                "invalid sampling precision: {}",
                self.sampling_precision
            ));
        }
        if self.sampling_precision > NUM_HEX_DIGITS as i32 {
            return Err(format!(
                "sampling precision is too great, should be <= 14: {}",
                self.sampling_precision
            ));
        }
        Ok(())
    }
}

/// Go's `%g` for the tiny float32 values the "too small" message shows: shortest digits in
/// exponent form with an at-least-two-digit exponent (`1e-15`).
fn go_g(value: f32) -> String {
    let text = format!("{value:e}");
    match text.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node;

    fn parse(yaml: &str) -> Result<ProbabilisticSamplerConfig, String> {
        let root = node::parse("test.yaml", yaml).map_err(|e| e.to_string())?;
        let config: ProbabilisticSamplerConfig =
            node::from_node(&root, "processors.probabilistic_sampler")
                .map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_the_collectors() {
        let c = parse("sampling_percentage: 15.3").unwrap();
        assert_eq!(c.sampling_percentage, 15.3);
        assert_eq!(c.sampling_precision, 4);
        assert!(c.fail_closed);
        assert_eq!(c.mode, SamplerMode::Unset);
        assert_eq!(c.attribute_source, "traceID");
        assert_eq!(c.hash_seed, 0);
    }

    #[test]
    fn reads_every_key() {
        let c = parse(
            "sampling_percentage: 15.3\nhash_seed: 22\nmode: proportional\nsampling_precision: 6\n\
             fail_closed: false\nattribute_source: record\nfrom_attribute: foo\nsampling_priority: bar",
        )
        .unwrap();
        assert_eq!(c.hash_seed, 22);
        assert_eq!(c.mode, SamplerMode::Proportional);
        assert_eq!(c.sampling_precision, 6);
        assert!(!c.fail_closed);
        assert_eq!(c.attribute_source, "record");
        assert_eq!(c.from_attribute, "foo");
        assert_eq!(c.sampling_priority, "bar");
        assert_eq!(
            parse("mode: equalizing").unwrap().mode,
            SamplerMode::Equalizing
        );
        assert_eq!(
            parse("mode: hash_seed").unwrap().mode,
            SamplerMode::HashSeed
        );
    }

    #[test]
    fn invalid_configs_fail_with_the_collectors_messages() {
        let err = |yaml: &str| parse(yaml).unwrap_err();
        assert!(
            err("sampling_percentage: -15.3").contains("sampling rate is negative: -15.300000%")
        );
        assert!(
            err("sampling_percentage: .000000000000001")
                .contains("sampling rate is too small: 1e-15%")
        );
        assert!(err("sampling_percentage: .inf").contains("sampling rate is invalid: +Inf%"));
        assert!(err("sampling_percentage: .nan").contains("sampling rate is invalid: NaN%"));
        assert!(err("sampling_precision: 15").contains("sampling precision is too great"));
        assert!(err("sampling_precision: 0").contains("invalid sampling precision: 0"));
        assert!(err("sampling_precision: -1").contains("invalid sampling precision: -1"));
        assert!(
            err("attribute_source: span")
                .contains("invalid attribute source: span. Expected: traceID or record")
        );
        assert!(err("mode: downsample").contains("unsupported sampler mode \"downsample\""));
        assert!(err("sampling_percent: 10").contains("unknown key `sampling_percent`"));
    }

    #[test]
    fn zero_and_above_100_are_valid() {
        assert!(parse("sampling_percentage: 0").is_ok());
        assert!(parse("sampling_percentage: 200").is_ok());
        assert!(parse("attribute_source: \"\"").is_ok());
    }
}
