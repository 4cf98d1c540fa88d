//! Settings of the `tail_sampling` processor, with the collector's keys and defaults, and the
//! policy tree checked and compiled (regexes, status codes, rate allocations) at load time so a
//! bad policy fails start-up with its location rather than misbehaving later.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config::node::deserialize_duration;

/// Our own bound on pending span bytes; the collector bounds only the number of traces.
pub const DEFAULT_MAX_PENDING_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    #[serde(deserialize_with = "deserialize_duration")]
    pub decision_wait: Duration,
    #[serde(deserialize_with = "deserialize_duration")]
    pub decision_wait_after_root_received: Duration,
    pub num_traces: u64,
    /// A sizing hint in the collector; accepted, sluice sizes its tables as traffic comes.
    pub expected_new_traces_per_sec: u64,
    pub decision_cache: DecisionCacheConfig,
    pub sample_on_first_match: bool,
    pub drop_pending_traces_on_shutdown: bool,
    pub block_on_overflow: bool,
    pub maximum_trace_size_bytes: u64,
    /// Sluice's own: pending traces may hold at most this many bytes (compressed spans plus
    /// per-trace overhead); beyond it the oldest trace is decided early.
    pub max_pending_bytes: u64,
    pub sampling_strategy: String,
    /// Parallel decision loops in the collector; one loop gives the same decisions, so the
    /// value is accepted and sluice runs one.
    pub num_shards: u32,
    pub tail_storage: Option<IgnoredAny>,
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: Duration::from_secs(30),
            decision_wait_after_root_received: Duration::ZERO,
            num_traces: 50_000,
            expected_new_traces_per_sec: 0,
            decision_cache: DecisionCacheConfig::default(),
            sample_on_first_match: false,
            drop_pending_traces_on_shutdown: false,
            block_on_overflow: false,
            maximum_trace_size_bytes: 0,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            sampling_strategy: "trace-complete".into(),
            num_shards: 1,
            tail_storage: None,
            policies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    pub sampled_cache_size: usize,
    pub non_sampled_cache_size: usize,
}

impl TailSamplingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.policies.is_empty() {
            return Err("`policies` needs at least one policy".into());
        }
        let mut names = HashSet::new();
        for p in &self.policies {
            if !names.insert(p.name.as_str()) {
                return Err(format!("duplicate policy name {:?}", p.name));
            }
        }
        if self.block_on_overflow {
            return Err(
                "`block_on_overflow` is not supported yet: when `num_traces` or \
                        `max_pending_bytes` is reached, sluice decides the oldest pending trace \
                        early instead of evicting it undecided"
                    .into(),
            );
        }
        if self.sampling_strategy != "trace-complete" {
            return Err(format!(
                "sampling_strategy `{}` is not supported yet (supported: trace-complete)",
                self.sampling_strategy
            ));
        }
        if self.tail_storage.is_some() {
            return Err("`tail_storage` is not supported yet".into());
        }
        if self.num_traces == 0 {
            return Err("num_traces must be greater than zero".into());
        }
        if self.decision_wait.is_zero() {
            return Err("decision_wait must be greater than zero".into());
        }
        if self.max_pending_bytes == 0 {
            return Err("max_pending_bytes must be greater than zero".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    AlwaysSample,
    Latency,
    NumericAttribute,
    Probabilistic,
    StatusCode,
    StringAttribute,
    RateLimiting,
    BytesLimiting,
    SpanCount,
    TraceState,
    TraceFlags,
    BooleanAttribute,
    OttlCondition,
    And,
    Not,
    Drop,
    Composite,
}

impl PolicyType {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::AlwaysSample => "always_sample",
            PolicyType::Latency => "latency",
            PolicyType::NumericAttribute => "numeric_attribute",
            PolicyType::Probabilistic => "probabilistic",
            PolicyType::StatusCode => "status_code",
            PolicyType::StringAttribute => "string_attribute",
            PolicyType::RateLimiting => "rate_limiting",
            PolicyType::BytesLimiting => "bytes_limiting",
            PolicyType::SpanCount => "span_count",
            PolicyType::TraceState => "trace_state",
            PolicyType::TraceFlags => "trace_flags",
            PolicyType::BooleanAttribute => "boolean_attribute",
            PolicyType::OttlCondition => "ottl_condition",
            PolicyType::And => "and",
            PolicyType::Not => "not",
            PolicyType::Drop => "drop",
            PolicyType::Composite => "composite",
        }
    }
}

/// One policy as written, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    #[serde(rename = "type")]
    kind: PolicyType,
    #[serde(default)]
    latency: Option<LatencyConfig>,
    #[serde(default)]
    numeric_attribute: Option<NumericAttributeConfig>,
    #[serde(default)]
    probabilistic: Option<ProbabilisticConfig>,
    #[serde(default)]
    status_code: Option<StatusCodeConfig>,
    #[serde(default)]
    string_attribute: Option<StringAttributeConfig>,
    #[serde(default)]
    rate_limiting: Option<LimitingConfig<SpansPerSecond>>,
    #[serde(default)]
    bytes_limiting: Option<LimitingConfig<BytesPerSecond>>,
    #[serde(default)]
    span_count: Option<SpanCountConfig>,
    #[serde(default)]
    trace_state: Option<TraceStateConfig>,
    #[serde(default)]
    trace_flags: Option<IgnoredAny>,
    #[serde(default)]
    always_sample: Option<IgnoredAny>,
    #[serde(default)]
    boolean_attribute: Option<BooleanAttributeConfig>,
    #[serde(default)]
    ottl_condition: Option<IgnoredAny>,
    #[serde(default)]
    and: Option<AndConfig>,
    #[serde(default)]
    not: Option<NotConfig>,
    #[serde(default)]
    drop: Option<DropConfig>,
    #[serde(default)]
    composite: Option<CompositeConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LatencyConfig {
    threshold_ms: i64,
    upper_threshold_ms: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NumericAttributeConfig {
    key: String,
    min_value: i64,
    max_value: i64,
    invert_match: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProbabilisticConfig {
    hash_salt: String,
    sampling_percentage: f64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StatusCodeConfig {
    status_codes: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StringAttributeConfig {
    key: String,
    values: Vec<String>,
    enabled_regex_matching: bool,
    cache_max_size: i64,
    invert_match: bool,
}

/// `rate_limiting` and `bytes_limiting` differ only in the name of the rate key.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitingConfig<R> {
    #[serde(flatten)]
    rate: R,
    burst_capacity: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct SpansPerSecond {
    spans_per_second: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct BytesPerSecond {
    bytes_per_second: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SpanCountConfig {
    min_spans: i32,
    max_spans: i32,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TraceStateConfig {
    key: String,
    values: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BooleanAttributeConfig {
    key: String,
    value: bool,
    invert_match: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
struct AndConfig {
    and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotConfig {
    not_sub_policy: PolicyConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct DropConfig {
    drop_sub_policy: Vec<PolicyConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct CompositeConfig {
    max_total_spans_per_second: i64,
    policy_order: Vec<String>,
    composite_sub_policy: Vec<PolicyConfig>,
    rate_allocation: Vec<RateAllocationConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RateAllocationConfig {
    policy: String,
    percent: i64,
}

/// A checked policy: its name, its type as written, and what it needs to evaluate.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct PolicyConfig {
    pub name: String,
    pub kind: PolicyType,
    pub spec: PolicySpec,
}

#[derive(Clone, Debug)]
pub enum StringMatch {
    Exact(HashSet<String>),
    Regex(Vec<regex::Regex>),
}

#[derive(Clone, Debug)]
pub enum PolicySpec {
    AlwaysSample,
    Latency {
        threshold_ms: i64,
        upper_threshold_ms: i64,
    },
    /// Bounds are inclusive; an unset (zero) bound is `i64::MIN` / `i64::MAX`.
    NumericAttribute {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    Probabilistic {
        hash_salt: String,
        threshold: u64,
    },
    /// `Status.code` values: 0 unset, 1 ok, 2 error.
    StatusCode {
        codes: Vec<i32>,
    },
    StringAttribute {
        key: String,
        matcher: StringMatch,
        invert: bool,
    },
    RateLimiting {
        per_second: i64,
        burst: i64,
    },
    BytesLimiting {
        per_second: i64,
        burst: i64,
    },
    SpanCount {
        min: i32,
        max: i32,
    },
    TraceState {
        key: String,
        values: Vec<String>,
    },
    TraceFlags,
    BooleanAttribute {
        key: String,
        value: bool,
        invert: bool,
    },
    And(Vec<PolicyConfig>),
    Not(Box<PolicyConfig>),
    Drop(Vec<PolicyConfig>),
    Composite {
        max_total_spans_per_second: i64,
        /// Sub-policies in evaluation order, each with its spans-per-second allocation.
        sub_policies: Vec<(PolicyConfig, i64)>,
    },
}

impl TryFrom<RawPolicy> for PolicyConfig {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        if raw.name.is_empty() {
            return Err("policy name cannot be empty".into());
        }
        check_settings_match_type(&raw)?;
        let spec = match raw.kind {
            PolicyType::AlwaysSample => PolicySpec::AlwaysSample,
            PolicyType::TraceFlags => PolicySpec::TraceFlags,
            PolicyType::OttlCondition => {
                return Err("`ottl_condition` policies are not supported".into());
            }
            PolicyType::Latency => {
                let c = raw.latency.unwrap_or_default();
                PolicySpec::Latency {
                    threshold_ms: c.threshold_ms,
                    upper_threshold_ms: c.upper_threshold_ms,
                }
            }
            PolicyType::NumericAttribute => {
                let c = raw.numeric_attribute.unwrap_or_default();
                // As the collector: a bound of 0 is "not set".
                if c.min_value == 0 && c.max_value == 0 {
                    return Err(
                        "numeric_attribute needs `min_value` or `max_value` (a bound \
                                of 0 counts as not set, as in the collector)"
                            .into(),
                    );
                }
                PolicySpec::NumericAttribute {
                    key: c.key,
                    min: if c.min_value != 0 {
                        c.min_value
                    } else {
                        i64::MIN
                    },
                    max: if c.max_value != 0 {
                        c.max_value
                    } else {
                        i64::MAX
                    },
                    invert: c.invert_match,
                }
            }
            PolicyType::Probabilistic => {
                let c = raw.probabilistic.unwrap_or_default();
                let salt = if c.hash_salt.is_empty() {
                    "default-hash-seed".to_string()
                } else {
                    c.hash_salt
                };
                PolicySpec::Probabilistic {
                    hash_salt: salt,
                    threshold: probability_threshold(c.sampling_percentage / 100.0),
                }
            }
            PolicyType::StatusCode => {
                let c = raw.status_code.unwrap_or_default();
                if c.status_codes.is_empty() {
                    return Err("expected at least one status code to filter on".into());
                }
                let mut codes = Vec::new();
                for s in &c.status_codes {
                    codes.push(match s.as_str() {
                        "OK" => 1,
                        "ERROR" => 2,
                        "UNSET" => 0,
                        other => {
                            return Err(format!(
                                "unknown status code {other:?}, supported: OK, ERROR, UNSET"
                            ));
                        }
                    });
                }
                PolicySpec::StatusCode { codes }
            }
            PolicyType::StringAttribute => {
                let c = raw.string_attribute.unwrap_or_default();
                let matcher = if c.enabled_regex_matching {
                    let mut regexes = Vec::new();
                    for v in &c.values {
                        regexes.push(regex::Regex::new(v).map_err(|e| {
                            format!("string_attribute value {v:?} is not a valid regex: {e}")
                        })?);
                    }
                    StringMatch::Regex(regexes)
                } else {
                    StringMatch::Exact(c.values.into_iter().filter(|v| !v.is_empty()).collect())
                };
                PolicySpec::StringAttribute {
                    key: c.key,
                    matcher,
                    invert: c.invert_match,
                }
            }
            PolicyType::RateLimiting => {
                let c = raw.rate_limiting.unwrap_or_default();
                let per_second = c.rate.spans_per_second;
                limiting(per_second, c.burst_capacity, "spans_per_second")?;
                PolicySpec::RateLimiting {
                    per_second,
                    burst: default_burst(per_second, c.burst_capacity),
                }
            }
            PolicyType::BytesLimiting => {
                let c = raw.bytes_limiting.unwrap_or_default();
                let per_second = c.rate.bytes_per_second;
                limiting(per_second, c.burst_capacity, "bytes_per_second")?;
                PolicySpec::BytesLimiting {
                    per_second,
                    burst: default_burst(per_second, c.burst_capacity),
                }
            }
            PolicyType::SpanCount => {
                let c = raw.span_count.unwrap_or_default();
                PolicySpec::SpanCount {
                    min: c.min_spans,
                    max: c.max_spans,
                }
            }
            PolicyType::TraceState => {
                let c = raw.trace_state.unwrap_or_default();
                let key = c.key;
                // As the collector: only values that fit a tracestate member count.
                let values = c
                    .values
                    .into_iter()
                    .filter(|v| !v.is_empty() && key.len() + v.len() < 256)
                    .collect();
                PolicySpec::TraceState { key, values }
            }
            PolicyType::BooleanAttribute => {
                let c = raw.boolean_attribute.unwrap_or_default();
                PolicySpec::BooleanAttribute {
                    key: c.key,
                    value: c.value,
                    invert: c.invert_match,
                }
            }
            PolicyType::And => {
                let c = raw.and.unwrap_or_default();
                sub_policies("and_sub_policy", &c.and_sub_policy)?;
                PolicySpec::And(c.and_sub_policy)
            }
            PolicyType::Drop => {
                let c = raw.drop.unwrap_or_default();
                sub_policies("drop_sub_policy", &c.drop_sub_policy)?;
                PolicySpec::Drop(c.drop_sub_policy)
            }
            PolicyType::Not => {
                let Some(c) = raw.not else {
                    return Err("a `not` policy needs `not.not_sub_policy`".into());
                };
                sub_policies("not_sub_policy", std::slice::from_ref(&c.not_sub_policy))?;
                PolicySpec::Not(Box::new(c.not_sub_policy))
            }
            PolicyType::Composite => composite(raw.composite.unwrap_or_default())?,
        };
        Ok(PolicyConfig {
            name: raw.name,
            kind: raw.kind,
            spec,
        })
    }
}

/// The collector reads only the settings named by `type` and silently ignores the others, so
/// `type: boolean_attribute` with `string_attribute: {...}` runs with empty settings. Say so.
fn check_settings_match_type(raw: &RawPolicy) -> Result<(), String> {
    let given: [(&str, bool); 17] = [
        ("latency", raw.latency.is_some()),
        ("numeric_attribute", raw.numeric_attribute.is_some()),
        ("probabilistic", raw.probabilistic.is_some()),
        ("status_code", raw.status_code.is_some()),
        ("string_attribute", raw.string_attribute.is_some()),
        ("rate_limiting", raw.rate_limiting.is_some()),
        ("bytes_limiting", raw.bytes_limiting.is_some()),
        ("span_count", raw.span_count.is_some()),
        ("trace_state", raw.trace_state.is_some()),
        ("trace_flags", raw.trace_flags.is_some()),
        ("always_sample", raw.always_sample.is_some()),
        ("boolean_attribute", raw.boolean_attribute.is_some()),
        ("ottl_condition", raw.ottl_condition.is_some()),
        ("and", raw.and.is_some()),
        ("not", raw.not.is_some()),
        ("drop", raw.drop.is_some()),
        ("composite", raw.composite.is_some()),
    ];
    let kind = raw.kind.as_str();
    for (key, present) in given {
        if present && key != kind {
            return Err(format!(
                "policy {:?} has type `{kind}` but `{key}` settings, which would be ignored; \
                 put the settings under `{kind}` or change `type`",
                raw.name
            ));
        }
    }
    Ok(())
}

/// Sub-policies may be any type but `drop` and `composite`, which only make sense at the top.
fn sub_policies(key: &str, subs: &[PolicyConfig]) -> Result<(), String> {
    for p in subs {
        if matches!(p.kind, PolicyType::Drop | PolicyType::Composite) {
            return Err(format!(
                "{key}: policy {:?} of type `{}` is only allowed in the top-level `policies`",
                p.name,
                p.kind.as_str()
            ));
        }
    }
    Ok(())
}

fn limiting(per_second: i64, burst: i64, key: &str) -> Result<(), String> {
    if per_second < 0 {
        return Err(format!("{key} must not be negative"));
    }
    if burst < 0 {
        return Err("burst_capacity must not be negative".into());
    }
    Ok(())
}

fn default_burst(per_second: i64, burst: i64) -> i64 {
    if burst > 0 {
        burst
    } else {
        per_second.saturating_mul(2)
    }
}

fn composite(c: CompositeConfig) -> Result<PolicySpec, String> {
    if c.composite_sub_policy.is_empty() {
        return Err("a `composite` policy needs `composite.composite_sub_policy`".into());
    }
    sub_policies("composite_sub_policy", &c.composite_sub_policy)?;
    let names: Vec<&str> = c
        .composite_sub_policy
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for a in &c.rate_allocation {
        if !names.contains(&a.policy.as_str()) {
            return Err(format!(
                "rate_allocation names policy {:?}, which is not in composite_sub_policy",
                a.policy
            ));
        }
    }
    for o in &c.policy_order {
        if !names.contains(&o.as_str()) {
            return Err(format!(
                "policy_order names policy {o:?}, which is not in composite_sub_policy"
            ));
        }
    }
    let max_total = c.max_total_spans_per_second as f64;
    let default_share = max_total / c.composite_sub_policy.len() as f64;
    let sub_policies = c
        .composite_sub_policy
        .into_iter()
        .map(|p| {
            // As the collector (since its PR #49857): a sub-policy without an allocation, or
            // with a percentage <= 0, gets an equal share.
            let share = match c.rate_allocation.iter().rfind(|a| a.policy == p.name) {
                Some(a) if a.percent > 0 => a.percent as f64 / 100.0 * max_total,
                _ => default_share,
            };
            (p, share as i64)
        })
        .collect();
    Ok(PolicySpec::Composite {
        max_total_spans_per_second: c.max_total_spans_per_second,
        sub_policies,
    })
}

/// `floor(MaxUint64 × ratio)` as the collector computes it: a `big.Float` product at 64-bit
/// precision (rounded to nearest even), then truncated to an integer and clamped.
pub fn probability_threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio.is_infinite() {
        return u64::MAX;
    }
    // ratio = mantissa × 2^exp exactly, with a 53-bit mantissa.
    let bits = ratio.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (mantissa, exp) = if raw_exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), raw_exp - 1075)
    };
    // The exact product (2^64 - 1) × mantissa has at most 117 bits.
    let product = u128::from(u64::MAX) * u128::from(mantissa);
    let len = 128 - product.leading_zeros() as i32;
    let (mut rounded, mut shift) = (product, exp);
    if len > 64 {
        let drop = (len - 64) as u32;
        let kept = product >> drop;
        let rest = product & ((1u128 << drop) - 1);
        let half = 1u128 << (drop - 1);
        let up = rest > half || (rest == half && kept & 1 == 1);
        rounded = kept + u128::from(up);
        shift += drop as i32;
    }
    // value = rounded × 2^shift, truncated toward zero.
    let value = if shift >= 0 {
        if shift >= 64 || rounded.leading_zeros() < shift as u32 + 64 {
            return u64::MAX;
        }
        rounded << shift
    } else if shift <= -128 {
        0
    } else {
        rounded >> (-shift) as u32
    };
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_the_collectors_big_float_arithmetic() {
        // Computed with the collector's arithmetic in /work/notes/tmp/tsp.py.
        assert_eq!(probability_threshold(0.5), 0x7fffffffffffffff);
        assert_eq!(probability_threshold(0.1), 0x19999999999999ff);
        assert_eq!(probability_threshold(0.25), 0x3fffffffffffffff);
        assert_eq!(probability_threshold(0.33), 0x547ae147ae147bff);
        assert_eq!(probability_threshold(0.001), 0x4189374bc6a7ef);
        assert_eq!(probability_threshold(1e-9), 0x44b82fa09);
        assert_eq!(probability_threshold(0.999999999), 0xfffffffbb47d07ff);
        assert_eq!(probability_threshold(1.0), u64::MAX);
        assert_eq!(probability_threshold(1.5), u64::MAX);
        assert_eq!(probability_threshold(0.0), 0);
        assert_eq!(probability_threshold(-0.5), 0);
    }
}
