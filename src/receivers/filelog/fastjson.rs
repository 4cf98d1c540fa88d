//! The fast path for the most common operators after `container`: `json_parser` from the body
//! into the attributes (with its `timestamp`/`severity`/`trace` steps) and `trace_parser`,
//! `severity_parser`, `time_parser` reading top-level attributes. A line whose message is a
//! flat JSON object is encoded straight into OTLP wire format — byte for byte what running the
//! operators on a prost `LogRecord` and encoding it gives — with the JSON strings borrowed from
//! the line rather than copied into owned values. Anything else (nested values, a key that
//! repeats or that the record already has, a step that fails, not JSON at all) returns `false`
//! and the record takes the general path, errors and `on_error` included.

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use serde::de::{self, DeserializeSeed, Visitor};

use super::operators::{hex_decode, to_id};
use super::parser::Entry;
use super::timefmt::TimeLayout;
use crate::otlp::wire::{
    encode_varint, len_field_len, varint_len, write_len_field, write_len_header,
};

/// What the operators do, when they are of the kinds this path covers.
#[derive(Clone, Debug)]
pub struct JsonPlan {
    pub parse_ints: bool,
    /// In the order the operators run them; each reads a top-level attribute.
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub enum Step {
    Time {
        key: String,
        layout: TimeLayout,
    },
    Severity {
        key: String,
        mapping: HashMap<String, i32>,
    },
    /// Attribute keys of the trace id, span id and flags.
    Trace([String; 3]),
}

#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Null,
}

/// The record-level fields the steps set.
#[derive(Default)]
struct Outcome {
    time_ns: Option<u64>,
    severity: Option<(i32, String)>,
    flags: u32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
}

// Field numbers (opentelemetry/proto/logs/v1/logs.proto, common.proto).
const SL_LOG_RECORDS: u32 = 2;
const LR_TIME: u8 = (1 << 3) | 1;
const LR_SEVERITY_NUMBER: u8 = 2 << 3;
const LR_SEVERITY_TEXT: u32 = 3;
const LR_BODY: u32 = 5;
const LR_ATTRIBUTES: u32 = 6;
const LR_FLAGS: u8 = (8 << 3) | 5;
const LR_TRACE_ID: u32 = 9;
const LR_SPAN_ID: u32 = 10;
const LR_OBSERVED_TIME: u8 = (11 << 3) | 1;
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
const AV_STRING: u32 = 1;
const AV_BOOL: u8 = 2 << 3;
const AV_INT: u8 = 3 << 3;
const AV_DOUBLE: u8 = (4 << 3) | 1;

impl JsonPlan {
    /// Encodes one record as a `ScopeLogs.log_records` field onto `out`: the entry's time
    /// and message, the attributes already encoded in `attrs` (whose keys are `taken`), then
    /// the message's JSON members. `false` (nothing written) when the general path must run.
    pub fn encode(
        &self,
        entry: &Entry,
        attrs: &[u8],
        taken: &dyn Fn(&str) -> bool,
        observed_ns: u64,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> bool {
        let (time_ns, message) = (entry.time_ns, entry.message.as_str());
        let Some(members) = parse_object(message) else {
            return false;
        };
        for (i, (k, _)) in members.iter().enumerate() {
            if taken(k) || members[..i].iter().any(|(p, _)| p == k) {
                return false;
            }
        }
        let Some(o) = self.run_steps(&members, observed_ns) else {
            return false;
        };
        scratch.clear();
        for (k, v) in &members {
            self.put_member(k, v, scratch);
        }
        let time_ns = o.time_ns.unwrap_or(time_ns);
        let body = len_field_len(AV_STRING, message.len());
        let mut len = len_field_len(LR_BODY, body) + attrs.len() + scratch.len();
        if time_ns != 0 {
            len += 9;
        }
        if let Some((number, text)) = &o.severity {
            if *number != 0 {
                len += 1 + varint_len(*number as i64 as u64);
            }
            if !text.is_empty() {
                len += len_field_len(LR_SEVERITY_TEXT, text.len());
            }
        }
        if o.flags != 0 {
            len += 5;
        }
        if !o.trace_id.is_empty() {
            len += len_field_len(LR_TRACE_ID, o.trace_id.len());
        }
        if !o.span_id.is_empty() {
            len += len_field_len(LR_SPAN_ID, o.span_id.len());
        }
        if observed_ns != 0 {
            len += 9;
        }
        write_len_header(SL_LOG_RECORDS, len, out);
        if time_ns != 0 {
            out.push(LR_TIME);
            out.extend_from_slice(&time_ns.to_le_bytes());
        }
        if let Some((number, text)) = &o.severity {
            if *number != 0 {
                out.push(LR_SEVERITY_NUMBER);
                encode_varint(*number as i64 as u64, out);
            }
            if !text.is_empty() {
                write_len_field(LR_SEVERITY_TEXT, text.as_bytes(), out);
            }
        }
        write_len_header(LR_BODY, body, out);
        write_len_field(AV_STRING, message.as_bytes(), out);
        out.extend_from_slice(attrs);
        out.extend_from_slice(scratch);
        if o.flags != 0 {
            out.push(LR_FLAGS);
            out.extend_from_slice(&o.flags.to_le_bytes());
        }
        if !o.trace_id.is_empty() {
            write_len_field(LR_TRACE_ID, &o.trace_id, out);
        }
        if !o.span_id.is_empty() {
            write_len_field(LR_SPAN_ID, &o.span_id, out);
        }
        if observed_ns != 0 {
            out.push(LR_OBSERVED_TIME);
            out.extend_from_slice(&observed_ns.to_le_bytes());
        }
        true
    }

    /// The steps on the parsed members, as the operators run them; `None` where one would fail.
    fn run_steps(&self, members: &[(Cow<str>, Scalar)], now_ns: u64) -> Option<Outcome> {
        let get = |key: &str| members.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let mut o = Outcome::default();
        for step in &self.steps {
            match step {
                Step::Time { key, layout } => {
                    let value = self.any_value(get(key)?);
                    o.time_ns = Some(layout.parse(&value, now_ns).ok()?);
                }
                Step::Severity { key, mapping } => {
                    let Scalar::Str(s) = get(key)? else {
                        return None;
                    };
                    let number = if s.chars().any(char::is_uppercase) {
                        mapping.get(&s.to_lowercase())
                    } else {
                        mapping.get(s.as_ref())
                    };
                    o.severity = Some((number.copied().unwrap_or(0), s.to_string()));
                }
                Step::Trace([trace, span, flags]) => {
                    let read = |key: &str| -> Option<Option<Vec<u8>>> {
                        match get(key) {
                            None => Some(None),
                            Some(Scalar::Str(s)) => hex_decode(s).ok().map(Some),
                            Some(_) => None,
                        }
                    };
                    let (t, s, f) = (read(trace)?, read(span)?, read(flags)?);
                    o.flags = f.and_then(|b| b.first().copied()).map_or(0, u32::from);
                    o.trace_id = to_id(Ok(t), 16);
                    o.span_id = to_id(Ok(s), 8);
                }
            }
        }
        Some(o)
    }

    fn any_value(&self, v: &Scalar) -> AnyValue {
        let value = match v {
            Scalar::Str(s) => Some(Value::StringValue(s.to_string())),
            Scalar::Bool(b) => Some(Value::BoolValue(*b)),
            Scalar::I64(i) if self.parse_ints => Some(Value::IntValue(*i)),
            Scalar::I64(i) => Some(Value::DoubleValue(*i as f64)),
            Scalar::U64(u) => match i64::try_from(*u) {
                Ok(i) if self.parse_ints => Some(Value::IntValue(i)),
                _ => Some(Value::DoubleValue(*u as f64)),
            },
            Scalar::F64(f) => Some(Value::DoubleValue(*f)),
            Scalar::Null => None,
        };
        AnyValue { value }
    }

    /// One member as a `LogRecord.attributes` field, as prost writes the `KeyValue`.
    fn put_member(&self, key: &str, value: &Scalar, out: &mut Vec<u8>) {
        let value = match value {
            Scalar::Str(s) => Encoded::Str(s),
            Scalar::Bool(b) => Encoded::Bool(*b),
            Scalar::Null => Encoded::Null,
            number => match self.any_value(number).value {
                Some(Value::IntValue(i)) => Encoded::Int(i),
                Some(Value::DoubleValue(d)) => Encoded::Double(d),
                _ => unreachable!("numbers are ints or doubles"),
            },
        };
        let value_len = match value {
            Encoded::Str(s) => len_field_len(AV_STRING, s.len()),
            Encoded::Bool(_) => 2,
            Encoded::Int(i) => 1 + varint_len(i as u64),
            Encoded::Double(_) => 9,
            Encoded::Null => 0,
        };
        let mut kv = len_field_len(KV_VALUE, value_len);
        if !key.is_empty() {
            kv += len_field_len(KV_KEY, key.len());
        }
        write_len_header(LR_ATTRIBUTES, kv, out);
        if !key.is_empty() {
            write_len_field(KV_KEY, key.as_bytes(), out);
        }
        write_len_header(KV_VALUE, value_len, out);
        match value {
            Encoded::Str(s) => write_len_field(AV_STRING, s.as_bytes(), out),
            Encoded::Bool(b) => out.extend_from_slice(&[AV_BOOL, u8::from(b)]),
            Encoded::Int(i) => {
                out.push(AV_INT);
                encode_varint(i as u64, out);
            }
            Encoded::Double(d) => {
                out.push(AV_DOUBLE);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Encoded::Null => {}
        }
    }
}

/// An attribute value as it goes on the wire.
enum Encoded<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// JSON `null`: an empty `AnyValue`.
    Null,
}

/// The members of a JSON object whose values are all scalars, borrowed where unescaped, as
/// serde_json reads them for the general path; `None` for anything else.
fn parse_object(text: &str) -> Option<Vec<(Cow<'_, str>, Scalar<'_>)>> {
    if !text.starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = de::Deserializer::deserialize_map(&mut de, ObjectVisitor).ok()?;
    de.end().ok()?;
    Some(members)
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Vec<(Cow<'de, str>, Scalar<'de>)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(12);
        while let Some(key) = map.next_key_seed(StrSeed)? {
            let value = map.next_value_seed(ScalarSeed)?;
            out.push((key, value));
        }
        Ok(out)
    }
}

struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_string()))
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a scalar")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(u))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(f))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(s.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::super::operators::{OpStats, Operators, parse_operators};
    use super::super::parser::{Parsed, parse_line};
    use super::super::records::{self, Attrs, Records};
    use crate::config::node;

    fn operators(yaml: &str) -> Operators {
        let root = node::parse("t.yaml", yaml).unwrap();
        let configs = parse_operators(&root, "receivers.filelog").unwrap();
        Operators::new(&configs)
    }

    const OPS: &str = "operators:
  - type: container
  - type: json_parser
    timestamp:
      parse_from: attributes.time
      layout: '%Y-%m-%dT%H:%M:%S.%fZ'
    severity:
      parse_from: attributes.level
  - type: trace_parser
    trace_id:
      parse_from: attributes.trace_id
    span_id:
      parse_from: attributes.span_id
    trace_flags:
      parse_from: attributes.trace_flags
";

    /// Both paths over the same lines: the bytes, the record count and the operator errors.
    fn both(ops: &Operators, messages: &[String]) -> (usize, usize) {
        assert!(ops.json_plan().is_some(), "these operators have a plan");
        let attrs = Attrs::new(vec![records::str_kv(
            "log.file.path",
            "/var/log/pods/a_b_c/d/0.log",
        )]);
        let resource = vec![records::str_kv("k8s.pod.name", "b")];
        let lines: Vec<String> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let stream = if i % 3 == 0 { "stderr" } else { "stdout" };
                format!("2024-05-01T12:00:00.{i:09}Z {stream} F {m}")
            })
            .collect();
        let mut general = Records::new(true);
        let mut fast = Records::for_operators(ops);
        for line in &lines {
            let Parsed::Entry(e) = parse_line(line.as_bytes(), None) else {
                panic!("a CRI line: {line}")
            };
            general.entry(e.clone(), &attrs, 7);
            fast.entry(e, &attrs, 7);
        }
        // One line that is not a container line at all.
        general.raw("not cri", &attrs, 7);
        fast.raw("not cri", &attrs, 7);
        let deferred = fast_deferred(&fast);

        let mut expected = Vec::new();
        let mut stats_a = OpStats::default();
        let mut values = general.take_values().unwrap();
        assert!(
            ops.apply_all(&mut values, &resource, 7, &mut stats_a)
                .is_none()
        );
        records::encode_resource_logs(&resource, &values, &mut expected);

        let mut got = Vec::new();
        let mut stats_b = OpStats::default();
        fast.settle(ops, 7, &mut stats_b);
        assert!(fast.take_values().is_none());
        fast.frame_into(&resource, &mut got);
        assert_eq!(fast.len(), values.len());
        assert_eq!(
            (stats_a.errors, stats_a.dropped),
            (stats_b.errors, stats_b.dropped)
        );
        assert!(
            got == expected,
            "the fast path's bytes differ from the operators'"
        );
        (lines.len() + 1 - deferred, deferred)
    }

    fn fast_deferred(r: &Records) -> usize {
        r.deferred_len()
    }

    #[test]
    fn flat_json_lines_encode_byte_for_byte_as_the_operators_do() {
        let ops = operators(OPS);
        let mut messages = Vec::new();
        for seq in 0..200u64 {
            messages.push(format!(
                r#"{{"level":"{}","time":"2024-05-01T12:00:00.{:06}Z","trace_id":"{:016x}{:016x}","span_id":"{:016x}","trace_flags":"01","model_version":"v23","latency_ms":{},"ok":{},"ratio":{},"neg":-{},"big":18446744073709551615,"none":null,"esc":"a\"b\u00e9\n","":"empty key","msg":"request served"}}"#,
                ["error", "INFO", "Warn", "debug", "fatal", "unknown"][seq as usize % 6],
                seq,
                seq + 1,
                seq,
                seq + 1,
                seq % 500,
                seq % 2 == 0,
                seq as f64 / 7.0,
                seq,
            ));
        }
        let (fast, deferred) = both(&ops, &messages);
        assert_eq!(fast, 200, "every flat JSON line takes the fast path");
        assert_eq!(
            deferred, 1,
            "only the non-container line goes the general way"
        );
    }

    #[test]
    fn other_lines_take_the_general_path_with_the_same_result() {
        let ops = operators(OPS);
        let messages: Vec<String> = [
            r#"plain text, not JSON"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z","nested":{"a":1}}"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z","list":[1,2]}"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z","dup":1,"dup":2}"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z","log.iostream":"x"}"#,
            r#"{"level":"info","time":"not a time"}"#,
            r#"{"level":"info"}"#,
            r#"{"level":5,"time":"2024-05-01T12:00:00.000001Z"}"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z","trace_id":"zz"}"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z","trace_id":123}"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z"} trailing"#,
            r#"[1,2,3]"#,
            r#"null"#,
            r#"{"level":"info","time":"2024-05-01T12:00:00.000001Z","trace_id":"00000000000000000000000000000000"}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (fast, deferred) = both(&ops, &messages);
        // The all-zero trace id is flat and fine; the rest go the general way.
        assert_eq!(fast, 1);
        assert_eq!(deferred, messages.len());
    }

    #[test]
    fn parse_ints_and_standalone_parsers_are_covered_and_other_operators_are_not() {
        let ops = operators(
            "operators:
  - type: container
  - type: json_parser
    parse_ints: true
  - type: severity_parser
    parse_from: attributes.sev
  - type: time_parser
    parse_from: attributes.ts
    layout_type: epoch
    layout: s
",
        );
        let messages: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    r#"{{"sev":"WARN","ts":{},"n":{i},"f":1.5,"m":-{i}}}"#,
                    1_700_000_000 + i
                )
            })
            .collect();
        let (fast, _) = both(&ops, &messages);
        assert_eq!(fast, 20);
        for yaml in [
            "operators:\n  - type: container\n  - type: json_parser\n    parse_to: body\n",
            "operators:\n  - type: container\n  - type: json_parser\n  - type: move\n    from: attributes.a\n    to: attributes.b\n",
            "operators:\n  - type: container\n  - type: json_parser\n    if: body matches \"x\"\n",
            "operators:\n  - type: container\n  - type: json_parser\n    parse_from: attributes.log\n",
            "operators:\n  - type: container\n  - type: regex_parser\n    regex: '(?P<a>.*)'\n",
        ] {
            assert!(operators(yaml).json_plan().is_none(), "{yaml}");
        }
    }

    fn json_scalar() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-zA-Z0-9 _./:-]{0,12}".prop_map(|t| format!("{t:?}")),
            "[\\u{0}-\\u{7f}é€😀]{0,6}".prop_map(|t| serde_json::to_string(&t).unwrap()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            (-1e6f64..1e6).prop_map(|f| format!("{f}")),
            Just("-0".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            Just("null".to_string()),
            Just("INFO".to_string()).prop_map(|t| format!("{t:?}")),
            Just("\"0af7651916cd43dd8448eb211c80319c\"".to_string()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Random flat objects over a few keys (some the steps read, some repeated): whatever
        /// path each line takes, the bytes are the operators'.
        #[test]
        fn random_flat_objects_encode_as_the_operators_do(
            level in proptest::sample::select(vec!["\"info\"", "\"ERROR\"", "\"x\"", "3"]),
            members in proptest::collection::btree_map(
                proptest::sample::select(vec!["msg", "n", "k", "x", "y", "z", "ü", ""]),
                json_scalar(),
                0..8,
            ),
            trace in proptest::prelude::any::<bool>(),
            parse_ints in proptest::prelude::any::<bool>(),
        ) {
            let yaml = OPS.replace(
                "  - type: json_parser\n",
                &format!("  - type: json_parser\n    parse_ints: {parse_ints}\n"),
            );
            let ops = operators(&yaml);
            // A valid time and a level, so that most lines can take the fast path.
            let mut body = vec![
                r#""time":"2024-05-01T12:00:00.000001Z""#.to_string(),
                format!(r#""level":{level}"#),
            ];
            if trace {
                body.push(r#""trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","trace_flags":"01""#.to_string());
            }
            body.extend(members.iter().map(|(k, v)| format!("{k:?}:{v}")));
            let (fast, _) = both(&ops, &[format!("{{{}}}", body.join(","))]);
            // A string level and unique keys: the line takes the fast path.
            proptest::prop_assert_eq!(fast, usize::from(level != "3"));
        }
    }
}
