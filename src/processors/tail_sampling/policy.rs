//! Policies evaluated over a pending trace, and the collector's rule (`makeDecision`) that
//! combines their votes into one decision.

use std::time::Instant;

use super::config::{PolicyConfig, PolicySpec, PolicyType, StringMatch};
use super::store::TraceId;
use super::view::{AnyValue, SpanFacts, resource_attribute, tracestate_get};
use crate::otlp::wire::WireError;

/// A policy's vote, as the collector's `samplingpolicy.Decision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Unspecified,
    Sampled,
    NotSampled,
    /// From a `drop` policy: vetoes every other vote.
    Dropped,
    /// Deprecated `invert_match` votes.
    InvertSampled,
    InvertNotSampled,
}

/// A trace as the policies see it.
pub struct TraceView<'a> {
    pub trace_id: &'a TraceId,
    pub spans: &'a [SpanFacts<'a>],
    /// The encoded `Resource` of each envelope the trace's spans came under.
    pub resources: &'a [&'a [u8]],
    pub span_count: u64,
    /// Encoded size, for `bytes_limiting`.
    pub size_bytes: u64,
}

/// The time of an evaluation: `now` for token buckets, `second` (since the sampler's epoch)
/// for the composite policy's per-second budgets.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    pub second: u64,
}

pub struct Policy {
    pub name: String,
    pub kind: PolicyType,
    rule: Rule,
}

enum Rule {
    AlwaysSample,
    Latency {
        threshold_ms: i64,
        upper_threshold_ms: i64,
    },
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
    StatusCode(Vec<i32>),
    StringAttribute {
        key: String,
        matcher: StringMatch,
        invert: bool,
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
    RateLimiting(TokenBucket),
    BytesLimiting(TokenBucket),
    And(Vec<Policy>),
    Not(Box<Policy>),
    Drop(Vec<Policy>),
    Composite {
        max_total: i64,
        second: Option<u64>,
        subs: Vec<CompositeSub>,
    },
}

struct CompositeSub {
    policy: Policy,
    allocated: i64,
    sampled: i64,
}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Policy {
        let rule = match &config.spec {
            PolicySpec::AlwaysSample => Rule::AlwaysSample,
            PolicySpec::Latency {
                threshold_ms,
                upper_threshold_ms,
            } => Rule::Latency {
                threshold_ms: *threshold_ms,
                upper_threshold_ms: *upper_threshold_ms,
            },
            PolicySpec::NumericAttribute {
                key,
                min,
                max,
                invert,
            } => Rule::NumericAttribute {
                key: key.clone(),
                min: *min,
                max: *max,
                invert: *invert,
            },
            PolicySpec::Probabilistic {
                hash_salt,
                threshold,
            } => Rule::Probabilistic {
                hash_salt: hash_salt.clone(),
                threshold: *threshold,
            },
            PolicySpec::StatusCode { codes } => Rule::StatusCode(codes.clone()),
            PolicySpec::StringAttribute {
                key,
                matcher,
                invert,
            } => Rule::StringAttribute {
                key: key.clone(),
                matcher: matcher.clone(),
                invert: *invert,
            },
            PolicySpec::SpanCount { min, max } => Rule::SpanCount {
                min: *min,
                max: *max,
            },
            PolicySpec::TraceState { key, values } => Rule::TraceState {
                key: key.clone(),
                values: values.clone(),
            },
            PolicySpec::TraceFlags => Rule::TraceFlags,
            PolicySpec::BooleanAttribute { key, value, invert } => Rule::BooleanAttribute {
                key: key.clone(),
                value: *value,
                invert: *invert,
            },
            PolicySpec::RateLimiting { per_second, burst } => {
                Rule::RateLimiting(TokenBucket::new(*per_second, *burst))
            }
            PolicySpec::BytesLimiting { per_second, burst } => {
                Rule::BytesLimiting(TokenBucket::new(*per_second, *burst))
            }
            PolicySpec::And(subs) => Rule::And(subs.iter().map(Policy::new).collect()),
            PolicySpec::Not(sub) => Rule::Not(Box::new(Policy::new(sub))),
            PolicySpec::Drop(subs) => Rule::Drop(subs.iter().map(Policy::new).collect()),
            PolicySpec::Composite {
                max_total_spans_per_second,
                sub_policies,
            } => Rule::Composite {
                max_total: *max_total_spans_per_second,
                second: None,
                subs: sub_policies
                    .iter()
                    .map(|(p, allocated)| CompositeSub {
                        policy: Policy::new(p),
                        allocated: *allocated,
                        sampled: 0,
                    })
                    .collect(),
            },
        };
        Policy {
            name: config.name.clone(),
            kind: config.kind,
            rule,
        }
    }

    pub fn evaluate(&mut self, t: &TraceView<'_>, clock: Clock) -> Result<Decision, WireError> {
        use Decision::*;
        let sampled = |yes: bool| if yes { Sampled } else { NotSampled };
        let inverted = |matched: bool| {
            if matched {
                InvertNotSampled
            } else {
                InvertSampled
            }
        };
        Ok(match &mut self.rule {
            Rule::AlwaysSample => Sampled,
            Rule::Latency {
                threshold_ms,
                upper_threshold_ms,
            } => sampled(latency_matches(t.spans, *threshold_ms, *upper_threshold_ms)),
            Rule::NumericAttribute {
                key,
                min,
                max,
                invert,
            } => {
                let (min, max) = (*min, *max);
                let matched = any_attribute(t, key, false, |v| (min..=max).contains(&v.int()))?;
                if *invert {
                    inverted(matched)
                } else {
                    sampled(matched)
                }
            }
            Rule::Probabilistic {
                hash_salt,
                threshold,
            } => sampled(hash_trace_id(hash_salt, t.trace_id) <= *threshold),
            Rule::StatusCode(codes) => {
                sampled(t.spans.iter().any(|s| codes.contains(&s.status_code)))
            }
            Rule::StringAttribute {
                key,
                matcher,
                invert,
            } => {
                let matched = any_attribute(t, key, true, |v| string_matches(matcher, v.str()))?;
                if *invert {
                    inverted(matched)
                } else {
                    sampled(matched)
                }
            }
            Rule::SpanCount { min, max } => {
                let n = t.span_count as i64;
                let (min, max) = (i64::from(*min), i64::from(*max));
                sampled(n >= min && (max == 0 || n <= max))
            }
            Rule::TraceState { key, values } => sampled(t.spans.iter().any(|s| {
                std::str::from_utf8(s.trace_state)
                    .ok()
                    .and_then(|h| tracestate_get(h, key))
                    .is_some_and(|v| values.iter().any(|want| want == v))
            })),
            Rule::TraceFlags => sampled(t.spans.iter().any(|s| s.flags & 0x01 != 0)),
            Rule::BooleanAttribute { key, value, invert } => {
                let want = *value;
                let matched = any_attribute(t, key, false, |v| v.bool() == want)?;
                if *invert {
                    inverted(matched)
                } else {
                    sampled(matched)
                }
            }
            Rule::RateLimiting(bucket) => sampled(bucket.allow(clock.now, t.span_count)),
            Rule::BytesLimiting(bucket) => sampled(bucket.allow(clock.now, t.size_bytes)),
            Rule::And(subs) => {
                for sub in subs.iter_mut() {
                    if matches!(sub.evaluate(t, clock)?, NotSampled | InvertNotSampled) {
                        return Ok(NotSampled);
                    }
                }
                Sampled
            }
            Rule::Drop(subs) => {
                for sub in subs.iter_mut() {
                    if matches!(sub.evaluate(t, clock)?, NotSampled | InvertNotSampled) {
                        return Ok(NotSampled);
                    }
                }
                Dropped
            }
            Rule::Not(sub) => match sub.evaluate(t, clock)? {
                Sampled => NotSampled,
                NotSampled => Sampled,
                other => other,
            },
            Rule::Composite {
                max_total,
                second,
                subs,
            } => {
                if *second != Some(clock.second) {
                    *second = Some(clock.second);
                    for s in subs.iter_mut() {
                        s.sampled = 0;
                    }
                }
                for sub in subs.iter_mut() {
                    let d = sub.policy.evaluate(t, clock)?;
                    if matches!(d, Sampled | InvertSampled) {
                        let if_sampled = sub.sampled.saturating_add(t.span_count as i64);
                        // Only the first matching sub-policy is asked (collector issue #36959).
                        if if_sampled <= sub.allocated && if_sampled <= *max_total {
                            sub.sampled = if_sampled;
                            return Ok(Sampled);
                        }
                        return Ok(NotSampled);
                    }
                }
                NotSampled
            }
        })
    }
}

/// The collector's latency rule, including its habit of testing the running duration after
/// each span, so a prefix of the spans within the bounds samples the trace.
fn latency_matches(spans: &[SpanFacts<'_>], threshold_ms: i64, upper_ms: i64) -> bool {
    let (mut min, mut max) = (0u64, 0u64);
    spans.iter().any(|s| {
        if min == 0 || s.start < min {
            min = s.start;
        }
        if max == 0 || s.end > max {
            max = s.end;
        }
        // Go: time.Unix(0, int64(ts)), t.Sub(u) saturating, Milliseconds() truncating.
        let ns = (i128::from(max as i64) - i128::from(min as i64))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        let ms = (ns / 1_000_000) as i64;
        if upper_ms == 0 {
            ms > threshold_ms
        } else {
            threshold_ms < ms && ms <= upper_ms
        }
    })
}

/// Whether any resource or span carries `key` with a value that `cond` accepts. String
/// policies skip spans whose value reads as "" (pdata `Str()` of a non-string), as the
/// collector does; resources are checked either way.
fn any_attribute(
    t: &TraceView<'_>,
    key: &str,
    skip_empty_span_strings: bool,
    mut cond: impl FnMut(&AnyValue<'_>) -> bool,
) -> Result<bool, WireError> {
    for r in t.resources {
        if let Some(v) = resource_attribute(r, key)?
            && cond(&v)
        {
            return Ok(true);
        }
    }
    for s in t.spans {
        if let Some(v) = s.attribute(key)?
            && !(skip_empty_span_strings && v.str().is_empty())
            && cond(&v)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn string_matches(matcher: &StringMatch, value: &[u8]) -> bool {
    // Attribute strings are UTF-8 by the spec; anything else can match nothing.
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    match matcher {
        StringMatch::Exact(set) => set.contains(value),
        // Unanchored, as Go's `MatchString`.
        StringMatch::Regex(list) => list.iter().any(|r| r.is_match(value)),
    }
}

/// FNV-1a 64 over the salt then the trace id, as the collector's probabilistic policy.
pub fn hash_trace_id(salt: &str, trace_id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in salt.as_bytes().iter().chain(trace_id) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// `golang.org/x/time/rate.Limiter` as `AllowN` uses it: starts full, refills continuously,
/// and a request larger than the burst never passes.
pub struct TokenBucket {
    per_second: f64,
    burst: i64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(per_second: i64, burst: i64) -> TokenBucket {
        TokenBucket {
            per_second: per_second as f64,
            burst,
            tokens: 0.0,
            last: None,
        }
    }

    pub fn allow(&mut self, now: Instant, n: u64) -> bool {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if self.per_second == 0.0 {
            // x/time/rate with a zero limit spends the burst and never refills.
            if self.burst >= n {
                self.burst -= n;
                return true;
            }
            return false;
        }
        let tokens = match self.last {
            None => self.burst as f64,
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                (self.tokens + elapsed * self.per_second).min(self.burst as f64)
            }
        };
        let left = tokens - n as f64;
        if n <= self.burst && left >= 0.0 {
            self.tokens = left;
            self.last = Some(match self.last {
                Some(last) if now < last => last,
                _ => now,
            });
            true
        } else {
            false
        }
    }
}

/// The policies of one processor and the collector's rule for combining their votes.
pub struct Policies {
    /// Drop policies first: their veto wins, so they are evaluated before anything can stop
    /// evaluation early.
    pub list: Vec<Policy>,
    sample_on_first_match: bool,
}

/// The combined decision and the policy it is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub policy: Option<usize>,
}

impl Policies {
    pub fn new(configs: &[PolicyConfig], sample_on_first_match: bool) -> Policies {
        let (drops, rest): (Vec<_>, Vec<_>) =
            configs.iter().partition(|p| p.kind == PolicyType::Drop);
        Policies {
            list: drops.into_iter().chain(rest).map(Policy::new).collect(),
            sample_on_first_match,
        }
    }

    /// Evaluates the policies in order and reports each vote (or error) to `vote`.
    pub fn decide(
        &mut self,
        t: &TraceView<'_>,
        clock: Clock,
        mut vote: impl FnMut(usize, Result<Decision, &WireError>),
    ) -> Outcome {
        use Decision::*;
        let first = |d: Decision, firsts: &mut [Option<usize>; 5], i: usize| {
            let slot = match d {
                Sampled => 0,
                NotSampled => 1,
                Dropped => 2,
                InvertSampled => 3,
                InvertNotSampled => 4,
                Unspecified => return,
            };
            firsts[slot].get_or_insert(i);
        };
        let mut firsts: [Option<usize>; 5] = [None; 5];
        for (i, p) in self.list.iter_mut().enumerate() {
            let d = match p.evaluate(t, clock) {
                Ok(d) => d,
                Err(e) => {
                    vote(i, Err(&e));
                    continue;
                }
            };
            vote(i, Ok(d));
            first(d, &mut firsts, i);
            if d == Dropped || (self.sample_on_first_match && d == Sampled) {
                break;
            }
        }
        let [
            sampled,
            not_sampled,
            dropped,
            invert_sampled,
            invert_not_sampled,
        ] = firsts;
        let (decision, policy) = if dropped.is_some() {
            (Dropped, dropped)
        } else if invert_not_sampled.is_some() {
            (NotSampled, invert_not_sampled)
        } else if sampled.is_some() {
            (Sampled, sampled)
        } else if invert_sampled.is_some() && not_sampled.is_none() {
            (Sampled, invert_sampled)
        } else {
            (NotSampled, not_sampled)
        };
        Outcome { decision, policy }
    }
}
