//! Log records: randomness from the trace id, an attribute (`from_attribute`, hashed) or the
//! `sampling.randomness` attribute; the threshold kept in `sampling.threshold`; and the
//! configured `sampling_priority` attribute read as a percentage for that record.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::sampler::{
    Carrier, Decision, Extracted, Rnd, Sampler, SamplingError, Source, randomness_from_bytes,
    should_sample,
};
use super::threshold::{Randomness, Threshold};
use super::traces::trace_id;

const THRESHOLD_ATTRIBUTE: &str = "sampling.threshold";
const RANDOMNESS_ATTRIBUTE: &str = "sampling.randomness";

/// A record's sampling attributes while it is being decided, and the changes to make to them
/// if it is kept.
#[derive(Default)]
pub struct LogCarrier {
    threshold: Option<Threshold>,
    randomness: Option<Randomness>,
    new_randomness: Option<String>,
    /// `Some(None)` removes the attribute, `Some(Some(t))` sets it.
    new_threshold: Option<Option<String>>,
}

impl LogCarrier {
    /// Reads `sampling.threshold` and `sampling.randomness` (string values only; others are
    /// ignored as the collector ignores them).
    fn parse(attributes: &[KeyValue]) -> Result<LogCarrier, SamplingError> {
        let mut carrier = LogCarrier::default();
        if let Some(text) = string_attribute(attributes, THRESHOLD_ATTRIBUTE) {
            carrier.threshold = Some(Threshold::parse_tvalue(text)?);
        }
        if let Some(text) = string_attribute(attributes, RANDOMNESS_ATTRIBUTE) {
            carrier.randomness = Some(Randomness::parse_rvalue(text)?);
        }
        Ok(carrier)
    }

    fn set_randomness(&mut self, randomness: Randomness) {
        self.randomness = Some(randomness);
        self.new_randomness = Some(randomness.rvalue());
    }

    fn apply(self, attributes: &mut Vec<KeyValue>) {
        if let Some(rv) = self.new_randomness {
            put_str(attributes, RANDOMNESS_ATTRIBUTE, rv);
        }
        match self.new_threshold {
            Some(Some(th)) => put_str(attributes, THRESHOLD_ATTRIBUTE, th),
            Some(None) => {
                if let Some(i) = attributes
                    .iter()
                    .position(|kv| kv.key == THRESHOLD_ATTRIBUTE)
                {
                    attributes.remove(i);
                }
            }
            None => {}
        }
    }
}

impl Carrier for LogCarrier {
    fn threshold(&self) -> Option<Threshold> {
        self.threshold
    }

    fn clear_threshold(&mut self) {
        self.threshold = None;
        self.new_threshold = Some(None);
    }

    fn update_threshold(&mut self, threshold: Threshold) -> Result<(), SamplingError> {
        if self.threshold.is_some_and(|existing| threshold < existing) {
            return Err(SamplingError::InconsistentSampling);
        }
        self.new_threshold = Some(Some(threshold.tvalue()));
        Ok(())
    }
}

/// How the logs signal reads priorities: the attribute named by `sampling_priority`, with
/// the configured precision.
pub struct LogPriority<'a> {
    pub attribute: &'a str,
    pub precision: i32,
}

/// Decides one record and, when it is kept, updates its sampling attributes.
pub fn sample_record(
    sampler: &Sampler,
    fail_closed: bool,
    priority: &LogPriority<'_>,
    record: &mut LogRecord,
) -> Decision {
    let extracted = extract(sampler, record);
    let (decision, carrier) =
        should_sample(
            sampler,
            fail_closed,
            extracted,
            |rnd, threshold| match priority_threshold(priority, &record.attributes) {
                Some(th) => (Rnd::new(Source::SamplingPriority, rnd.value), th),
                None => (rnd, threshold),
            },
        );
    if decision.sampled
        && let Some(carrier) = carrier
    {
        carrier.apply(&mut record.attributes);
    }
    decision
}

fn extract(sampler: &Sampler, record: &LogRecord) -> Extracted<LogCarrier> {
    let parsed = LogCarrier::parse(&record.attributes);
    match sampler {
        Sampler::Never => {
            let rnd = Rnd::new(Source::SamplingPriority, Randomness::ALL_PROBABILITIES);
            match parsed {
                Ok(carrier) => Extracted::ok(rnd, carrier),
                Err(e) => Extracted::failed(rnd, e),
            }
        }
        Sampler::HashSeed(h) => {
            let mut rnd = Rnd::MISSING;
            if h.logs_trace_id
                && let Some(id) = trace_id(&record.trace_id)
            {
                rnd = Rnd::new(Source::TraceIdHash, randomness_from_bytes(id, h.seed));
            }
            if rnd.is_missing()
                && !h.logs_attribute.is_empty()
                && let Some(value) = attribute(&record.attributes, &h.logs_attribute)
            {
                let bytes = value_bytes(value);
                if !bytes.is_empty() {
                    rnd = Rnd::new(Source::Attribute, randomness_from_bytes(&bytes, h.seed));
                }
            }
            match parsed {
                Err(e) => Extracted::failed(rnd, e),
                Ok(c) if c.randomness.is_some() => {
                    Extracted::failed(rnd, SamplingError::RandomnessInUse)
                }
                Ok(c) if c.threshold.is_some() => {
                    Extracted::failed(rnd, SamplingError::ThresholdInUse)
                }
                Ok(mut c) => {
                    if !rnd.is_missing() {
                        c.set_randomness(rnd.value);
                    }
                    Extracted::ok(rnd, c)
                }
            }
        }
        Sampler::Equalizing { .. } | Sampler::Proportional { .. } => match parsed {
            Err(e) => Extracted::failed(Rnd::MISSING, e),
            Ok(c) => {
                let rnd = match (c.randomness, trace_id(&record.trace_id)) {
                    (Some(r), _) => Rnd::new(Source::SamplingRandomness, r),
                    (None, Some(id)) => Rnd::new(Source::TraceIdW3c, Randomness::from_trace_id(id)),
                    (None, None) => Rnd::MISSING,
                };
                Extracted::ok(rnd, c)
            }
        },
    }
}

/// The collector's current reading (since v0.121, PR #38470): an int or double percentage in
/// (0, 100] replaces the configured one for this record, up or down. Anything else (missing,
/// 0, negative, above 100, other types) leaves the configured percentage in force.
fn priority_threshold(priority: &LogPriority<'_>, attributes: &[KeyValue]) -> Option<Threshold> {
    if priority.attribute.is_empty() {
        return None;
    }
    let min_probability = match attribute(attributes, priority.attribute)? {
        Value::DoubleValue(d) => d / 100.0,
        Value::IntValue(i) => *i as f64 / 100.0,
        _ => 0.0,
    };
    if min_probability == 0.0 {
        return None;
    }
    Threshold::from_probability(min_probability, priority.precision).ok()
}

/// The first attribute with this key, if it has a value.
fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key) {
        Some(Value::StringValue(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn put_str(attributes: &mut Vec<KeyValue>, key: &str, value: String) {
    let value = Some(AnyValue {
        value: Some(Value::StringValue(value)),
    });
    match attributes.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = value,
        None => attributes.push(KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        }),
    }
}

/// The bytes hashed for `from_attribute`: raw bytes, otherwise the value as text the way
/// the collector's `pcommon.Value.AsString` writes it.
fn value_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::BytesValue(b) => b.clone(),
        other => value_as_string(Some(other)).into_bytes(),
    }
}

fn value_as_string(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => {
            if d.is_finite() {
                go_json_float(*d)
            } else {
                format!("json: unsupported value: {}", go_g_special(*d))
            }
        }
        Some(Value::BytesValue(b)) => base64(b),
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
            let mut out = String::new();
            write_json(Some(v), &mut out);
            out
        }
    }
}

fn go_g_special(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// A float as Go's `encoding/json` writes it (ES6 number-to-string): shortest digits, and
/// exponent form only below 1e-6 or from 1e21.
fn go_json_float(d: f64) -> String {
    let abs = d.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{d:e}");
        return match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => text,
        };
    }
    format!("{d}")
}

/// JSON as Go's `encoding/json` writes `pcommon.Value.AsRaw()`: map keys sorted (a repeated
/// key keeps its last value), bytes as base64, HTML-sensitive characters escaped.
fn write_json(value: Option<&Value>, out: &mut String) {
    match value {
        None | Some(Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(Value::StringValue(s)) => write_json_string(s, out),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => out.push_str(&i.to_string()),
        Some(Value::DoubleValue(d)) if d.is_finite() => out.push_str(&go_json_float(*d)),
        Some(Value::DoubleValue(_)) => out.push_str("null"),
        Some(Value::BytesValue(b)) => write_json_string(&base64(b), out),
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kvs)) => {
            let mut entries: std::collections::BTreeMap<&str, Option<&Value>> =
                std::collections::BTreeMap::new();
            for kv in &kvs.values {
                entries.insert(&kv.key, kv.value.as_ref().and_then(|v| v.value.as_ref()));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn values_read_as_the_collector_writes_them() {
        let s = |v: Value| value_as_string(Some(&v));
        assert_eq!(s(Value::IntValue(-42)), "-42");
        assert_eq!(s(Value::BoolValue(true)), "true");
        assert_eq!(s(Value::DoubleValue(10.125)), "10.125");
        assert_eq!(s(Value::DoubleValue(100.0)), "100");
        assert_eq!(s(Value::DoubleValue(1e-7)), "1e-7");
        assert_eq!(s(Value::DoubleValue(1.5e21)), "1.5e+21");
        assert_eq!(
            s(Value::DoubleValue(f64::NAN)),
            "json: unsupported value: NaN"
        );
        assert_eq!(s(Value::BytesValue(b"hello".to_vec())), "aGVsbG8=");
        assert_eq!(s(Value::BytesValue(b"hi".to_vec())), "aGk=");
        assert_eq!(s(Value::BytesValue(b"abc".to_vec())), "YWJj");
        assert_eq!(
            s(Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("z", Value::StringValue("<a&b>".into())),
                    kv(
                        "a",
                        Value::ArrayValue(ArrayValue {
                            values: vec![
                                AnyValue {
                                    value: Some(Value::DoubleValue(1.0))
                                },
                                AnyValue { value: None },
                            ],
                        })
                    ),
                ],
            })),
            r#"{"a":[1,null],"z":"\u003ca\u0026b\u003e"}"#
        );
    }

    #[test]
    fn priority_is_a_percentage_in_range() {
        let p = LogPriority {
            attribute: "prio",
            precision: 4,
        };
        let th = |v: Value| priority_threshold(&p, &[kv("prio", v)]);
        assert_eq!(th(Value::IntValue(100)), Some(Threshold::ALWAYS_SAMPLE));
        assert_eq!(th(Value::DoubleValue(50.0)).unwrap().tvalue(), "8");
        assert_eq!(th(Value::IntValue(0)), None);
        assert_eq!(th(Value::IntValue(-5)), None);
        assert_eq!(th(Value::IntValue(101)), None);
        assert_eq!(th(Value::StringValue("50".into())), None);
        assert_eq!(priority_threshold(&p, &[]), None);
    }
}
