//! Spans: randomness from the trace id or `ot=rv:`, sampling state in the W3C `tracestate`,
//! and the OpenTracing `sampling.priority` attribute (0 drops, above 0 keeps).

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::sampler::{
    Carrier, Decision, Extracted, Rnd, Sampler, SamplingError, Source, randomness_from_bytes,
    should_sample,
};
use super::threshold::{Randomness, Threshold};
use super::tracestate::TraceState;

const SAMPLING_PRIORITY: &str = "sampling.priority";

/// A span's parsed tracestate while it is being decided.
pub struct SpanCarrier(TraceState);

impl Carrier for SpanCarrier {
    fn threshold(&self) -> Option<Threshold> {
        self.0.ot.th.as_ref().map(|t| t.value)
    }

    fn clear_threshold(&mut self) {
        self.0.ot.th = None;
    }

    fn update_threshold(&mut self, threshold: Threshold) -> Result<(), SamplingError> {
        if self
            .threshold()
            .is_some_and(|existing| existing > threshold)
        {
            return Err(SamplingError::InconsistentSampling);
        }
        self.0.ot.set_threshold(threshold);
        Ok(())
    }
}

/// Decides one span and, when it is kept, rewrites its tracestate.
pub fn sample_span(sampler: &Sampler, fail_closed: bool, span: &mut Span) -> Decision {
    let extracted = extract(sampler, span);
    let (decision, carrier) =
        should_sample(
            sampler,
            fail_closed,
            extracted,
            |rnd, threshold| match span_priority(&span.attributes) {
                Priority::Defer => (rnd, threshold),
                Priority::DoNotSample => (
                    Rnd::new(Source::SamplingPriority, rnd.value),
                    Threshold::NEVER_SAMPLE,
                ),
                Priority::MustSample => (
                    Rnd::new(Source::SamplingPriority, rnd.value),
                    Threshold::ALWAYS_SAMPLE,
                ),
            },
        );
    if decision.sampled
        && let Some(SpanCarrier(state)) = carrier
    {
        span.trace_state = state.serialize();
    }
    decision
}

/// The trace id if it is a valid one (16 bytes, not all zero).
pub fn trace_id(bytes: &[u8]) -> Option<&[u8; 16]> {
    let id: &[u8; 16] = bytes.try_into().ok()?;
    id.iter().any(|&b| b != 0).then_some(id)
}

fn extract(sampler: &Sampler, span: &Span) -> Extracted<SpanCarrier> {
    let parsed = TraceState::parse(&span.trace_state);
    match sampler {
        // The percentage cannot keep anything, so randomness does not matter; a stand-in
        // avoids a "missing randomness" error. Only a priority can keep the span.
        Sampler::Never => {
            let rnd = Rnd::new(Source::SamplingPriority, Randomness::ALL_PROBABILITIES);
            match parsed {
                Ok(state) => Extracted::ok(rnd, SpanCarrier(state)),
                Err(e) => Extracted::failed(rnd, e),
            }
        }
        Sampler::HashSeed(h) => {
            let rnd = match trace_id(&span.trace_id) {
                Some(id) => Rnd::new(Source::TraceIdHash, randomness_from_bytes(id, h.seed)),
                None => Rnd::MISSING,
            };
            match parsed {
                Err(e) => Extracted::failed(rnd, e),
                // Spans that carry OTel sampling information are left alone: this mode
                // cannot honour it.
                Ok(state) if state.ot.rv.is_some() => {
                    Extracted::failed(rnd, SamplingError::RandomnessInUse)
                }
                Ok(state) if state.ot.th.is_some() => {
                    Extracted::failed(rnd, SamplingError::ThresholdInUse)
                }
                Ok(mut state) => {
                    // The collector also writes `rv:ffffffffffffff` when the trace id is
                    // empty; that claims randomness the span does not have, so we do not.
                    if !rnd.is_missing() {
                        state.ot.set_randomness(rnd.value);
                    }
                    Extracted::ok(rnd, SpanCarrier(state))
                }
            }
        }
        Sampler::Equalizing { .. } | Sampler::Proportional { .. } => match parsed {
            Err(e) => Extracted::failed(Rnd::MISSING, e),
            Ok(state) => {
                let rnd = match (&state.ot.rv, trace_id(&span.trace_id)) {
                    (Some(rv), _) => Rnd::new(Source::SamplingRandomness, rv.value),
                    (None, Some(id)) => Rnd::new(Source::TraceIdW3c, Randomness::from_trace_id(id)),
                    (None, None) => Rnd::MISSING,
                };
                Extracted::ok(rnd, SpanCarrier(state))
            }
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Defer,
    MustSample,
    DoNotSample,
}

/// `sampling.priority` as an int, double or numeric string: 0 never samples, above 0 always
/// does; negative, NaN, unparsable or other types leave the decision to the sampler.
pub fn span_priority(attributes: &[KeyValue]) -> Priority {
    let Some(value) = attributes
        .iter()
        .find(|kv| kv.key == SAMPLING_PRIORITY)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
    else {
        return Priority::Defer;
    };
    let number = match value {
        Value::IntValue(i) => *i as f64,
        Value::DoubleValue(d) => *d,
        Value::StringValue(s) => match parse_go_float(s) {
            Some(d) => d,
            None => return Priority::Defer,
        },
        _ => return Priority::Defer,
    };
    if number == 0.0 {
        Priority::DoNotSample
    } else if number > 0.0 {
        Priority::MustSample
    } else {
        Priority::Defer
    }
}

/// Close to Go's `strconv.ParseFloat`: an out-of-range value such as `1e400` is an error
/// there (Rust would give infinity), while `inf`/`infinity` spelled out are accepted.
fn parse_go_float(text: &str) -> Option<f64> {
    let value: f64 = text.parse().ok()?;
    if value.is_infinite() && !text.to_ascii_lowercase().contains("inf") {
        return None;
    }
    Some(value)
}
