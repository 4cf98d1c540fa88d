use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost::Message as _;
use serde_json::Value;

use super::schema::{self, Card, Kind, Message};
use super::*;

// The example payloads of opentelemetry-proto 1.x (examples/*.json, Apache-2.0), as shipped
// in the opentelemetry-proto 0.33 crate.
const TRACE_EXAMPLE: &str = include_str!("testdata/trace.json");
const METRICS_EXAMPLE: &str = include_str!("testdata/metrics.json");
const LOGS_EXAMPLE: &str = include_str!("testdata/logs.json");
const EVENTS_EXAMPLE: &str = include_str!("testdata/events.json");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn traces(json: &str) -> ExportTraceServiceRequest {
    let encoded = json_to_proto(Signal::Traces, json.as_bytes()).unwrap();
    let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap();
    // Whatever the order of the JSON keys, the bytes are prost's.
    assert_eq!(decoded.encode_to_vec(), encoded, "{json}");
    decoded
}

fn metrics(json: &str) -> ExportMetricsServiceRequest {
    let encoded = json_to_proto(Signal::Metrics, json.as_bytes()).unwrap();
    let decoded = ExportMetricsServiceRequest::decode(encoded.as_slice()).unwrap();
    // Whatever the order of the JSON keys, the bytes are prost's.
    assert_eq!(decoded.encode_to_vec(), encoded, "{json}");
    decoded
}

fn logs(json: &str) -> ExportLogsServiceRequest {
    let encoded = json_to_proto(Signal::Logs, json.as_bytes()).unwrap();
    let decoded = ExportLogsServiceRequest::decode(encoded.as_slice()).unwrap();
    // Whatever the order of the JSON keys, the bytes are prost's.
    assert_eq!(decoded.encode_to_vec(), encoded, "{json}");
    decoded
}

fn error(signal: Signal, json: &str) -> String {
    match json_to_proto(signal, json.as_bytes()) {
        Ok(encoded) => panic!("accepted {json} as {encoded:02x?}"),
        Err(e) => e,
    }
}

/// JSON → protobuf → JSON → protobuf gives the same bytes twice.
fn assert_stable(signal: Signal, json: &str) -> String {
    let first = json_to_proto(signal, json.as_bytes()).unwrap();
    let rendered = proto_to_json(signal, &first).unwrap();
    serde_json::from_str::<Value>(&rendered).expect("rendered JSON parses");
    let second = json_to_proto(signal, rendered.as_bytes()).unwrap();
    assert_eq!(first, second, "{rendered}");
    rendered
}

fn string_value(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    })
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: string_value(value),
        key_strindex: 0,
    }
}

fn snake_case(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The same JSON with every object key in snake_case (attribute keys are values, untouched).
fn snake_case_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (snake_case(k), snake_case_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(snake_case_keys).collect()),
        other => other.clone(),
    }
}

// ---- the spec examples ------------------------------------------------------------------

#[test]
fn spec_trace_example() {
    let req = traces(TRACE_EXAMPLE);
    let rs = &req.resource_spans[0];
    assert_eq!(
        rs.resource.as_ref().unwrap().attributes,
        vec![attr("service.name", "my.service")]
    );
    let ss = &rs.scope_spans[0];
    let scope = ss.scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("my.library", "1.0.0")
    );
    assert_eq!(
        scope.attributes,
        vec![attr("my.scope.attribute", "some scope attribute")]
    );
    let span = &ss.spans[0];
    assert_eq!(span.trace_id, hex("5b8efff798038103d269b633813fc60c"));
    assert_eq!(span.span_id, hex("eee19b7ec3c1b174"));
    assert_eq!(span.parent_span_id, hex("eee19b7ec3c1b173"));
    assert_eq!(span.name, "I'm a server span");
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(span.kind, 2);
    assert_eq!(span.attributes, vec![attr("my.span.attr", "some value")]);

    let rendered = assert_stable(Signal::Traces, TRACE_EXAMPLE);
    assert!(
        rendered.contains(r#""traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","name":"I'm a server span","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000""#),
        "{rendered}"
    );
}

#[test]
fn spec_metrics_example() {
    let req = metrics(METRICS_EXAMPLE);
    let sm = &req.resource_metrics[0].scope_metrics[0];
    assert_eq!(sm.scope.as_ref().unwrap().name, "my.library");
    let m = &sm.metrics;
    assert_eq!(m.len(), 4);

    assert_eq!(
        (m[0].name.as_str(), m[0].unit.as_str()),
        ("my.counter", "1")
    );
    assert_eq!(m[0].description, "I am a Counter");
    let Some(metric::Data::Sum(sum)) = &m[0].data else {
        panic!("{:?}", m[0].data)
    };
    assert_eq!(sum.aggregation_temporality, 1);
    assert!(sum.is_monotonic);
    let p = &sum.data_points[0];
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(5.0)));
    assert_eq!(p.start_time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(p.time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(p.attributes, vec![attr("my.counter.attr", "some value")]);

    let Some(metric::Data::Gauge(gauge)) = &m[1].data else {
        panic!("{:?}", m[1].data)
    };
    assert_eq!(
        gauge.data_points[0].value,
        Some(number_data_point::Value::AsDouble(10.0))
    );

    let Some(metric::Data::Histogram(h)) = &m[2].data else {
        panic!("{:?}", m[2].data)
    };
    assert_eq!(h.aggregation_temporality, 1);
    let p = &h.data_points[0];
    assert_eq!(p.count, 2);
    assert_eq!(p.sum, Some(2.0));
    assert_eq!(p.bucket_counts, vec![1, 1]);
    assert_eq!(p.explicit_bounds, vec![1.0]);
    assert_eq!((p.min, p.max), (Some(0.0), Some(2.0)));
    assert_eq!(p.attributes, vec![attr("my.histogram.attr", "some value")]);

    let Some(metric::Data::ExponentialHistogram(e)) = &m[3].data else {
        panic!("{:?}", m[3].data)
    };
    let p = &e.data_points[0];
    assert_eq!(
        (p.count, p.sum, p.scale, p.zero_count),
        (3, Some(10.0), 0, 1)
    );
    assert_eq!(
        p.positive,
        Some(Buckets {
            offset: 1,
            bucket_counts: vec![0, 2]
        })
    );
    assert_eq!(p.negative, None);
    assert_eq!(
        (p.min, p.max, p.zero_threshold),
        (Some(0.0), Some(5.0), 0.0)
    );

    let rendered = assert_stable(Signal::Metrics, METRICS_EXAMPLE);
    // Optional fields keep their zero; implicit ones (scale, zeroThreshold) drop it.
    assert!(rendered.contains(r#""min":0,"max":2"#), "{rendered}");
    assert!(rendered.contains(r#""sum":10,"zeroCount":"1","positive":{"offset":1,"bucketCounts":["0","2"]},"min":0,"max":5}"#), "{rendered}");
}

#[test]
fn spec_logs_example() {
    let req = logs(LOGS_EXAMPLE);
    let r = &req.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(r.time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(r.observed_time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(r.severity_number, 10);
    assert_eq!(r.severity_text, "Information");
    assert_eq!(r.trace_id, hex("5b8efff798038103d269b633813fc60c"));
    assert_eq!(r.span_id, hex("eee19b7ec3c1b174"));
    assert_eq!(r.body, string_value("Example log record"));
    let values: Vec<_> = r
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap()))
        .collect();
    use any_value::Value as V;
    assert_eq!(
        values,
        vec![
            ("string.attribute", V::StringValue("some string".into())),
            ("boolean.attribute", V::BoolValue(true)),
            ("int.attribute", V::IntValue(10)),
            ("double.attribute", V::DoubleValue(637.704)),
            (
                "array.attribute",
                V::ArrayValue(ArrayValue {
                    values: vec![
                        string_value("many").unwrap(),
                        string_value("values").unwrap()
                    ]
                })
            ),
            (
                "map.attribute",
                V::KvlistValue(KeyValueList {
                    values: vec![attr("some.map.key", "some value")]
                })
            ),
        ]
    );
    assert_stable(Signal::Logs, LOGS_EXAMPLE);
}

#[test]
fn spec_events_example() {
    let req = logs(EVENTS_EXAMPLE);
    let r = &req.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(r.event_name, "browser.page_view");
    assert_eq!(r.severity_number, 9);
    let Some(any_value::Value::KvlistValue(body)) = r.body.clone().unwrap().value else {
        panic!("{:?}", r.body)
    };
    assert_eq!(body.values.len(), 4);
    assert_eq!(
        body.values[0].value.clone().unwrap().value,
        Some(any_value::Value::IntValue(0))
    );
    let rendered = assert_stable(Signal::Logs, EVENTS_EXAMPLE);
    // A oneof member keeps its zero.
    assert!(
        rendered.contains(r#"{"key":"type","value":{"intValue":"0"}}"#),
        "{rendered}"
    );
}

#[test]
fn snake_case_input_means_the_same() {
    for (signal, example) in [
        (Signal::Traces, TRACE_EXAMPLE),
        (Signal::Metrics, METRICS_EXAMPLE),
        (Signal::Logs, LOGS_EXAMPLE),
        (Signal::Logs, EVENTS_EXAMPLE),
    ] {
        let snake = snake_case_keys(&serde_json::from_str(example).unwrap()).to_string();
        assert!(snake.contains("time_unix_nano"), "{snake}");
        assert_eq!(
            json_to_proto(signal, snake.as_bytes()).unwrap(),
            json_to_proto(signal, example.as_bytes()).unwrap(),
            "{snake}"
        );
    }
    let req = traces(
        r#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","name":"x","start_time_unix_nano":1,"dropped_attributes_count":3}]}]}]}"#,
    );
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        (
            span.name.as_str(),
            span.start_time_unix_nano,
            span.dropped_attributes_count
        ),
        ("x", 1, 3)
    );
}

// ---- bug 1: bad values inside metric data are errors with a path --------------------------

fn metric_json(metric: &str) -> String {
    format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"ok","gauge":{{"dataPoints":[{{"asInt":"1"}}]}}}},{metric}]}}]}}]}}"#
    )
}

#[test]
fn bad_number_data_point_value_is_an_error() {
    let e = error(
        Signal::Metrics,
        &metric_json(r#"{"name":"g","gauge":{"dataPoints":[{"asInt":"not-a-number"}]}}"#),
    );
    assert_eq!(
        e,
        r#"resourceMetrics[0].scopeMetrics[0].metrics[1].gauge.dataPoints[0].asInt: expected an integer, found "not-a-number""#
    );
}

#[test]
fn bad_point_attribute_is_an_error() {
    let e = error(
        Signal::Metrics,
        &metric_json(
            r#"{"name":"g","sum":{"dataPoints":[{"asDouble":1,"attributes":[{"key":"k","value":{"intValue":"x"}}]}]}}"#,
        ),
    );
    assert_eq!(
        e,
        r#"resourceMetrics[0].scopeMetrics[0].metrics[1].sum.dataPoints[0].attributes[0].value.intValue: expected an integer, found "x""#
    );
}

#[test]
fn bad_bucket_count_is_an_error() {
    let e = error(
        Signal::Metrics,
        &metric_json(
            r#"{"name":"h","histogram":{"dataPoints":[{"count":"1","bucketCounts":["1","x"]}]}}"#,
        ),
    );
    assert_eq!(
        e,
        r#"resourceMetrics[0].scopeMetrics[0].metrics[1].histogram.dataPoints[0].bucketCounts[1]: expected a non-negative integer, found "x""#
    );
    let e = error(
        Signal::Metrics,
        &metric_json(
            r#"{"name":"h","exponentialHistogram":{"dataPoints":[{"negative":{"bucketCounts":[-1]}}]}}"#,
        ),
    );
    assert_eq!(
        e,
        "resourceMetrics[0].scopeMetrics[0].metrics[1].exponentialHistogram.dataPoints[0].negative.bucketCounts[0]: expected a non-negative integer, found -1"
    );
}

#[test]
fn bad_exemplar_id_is_an_error() {
    let e = error(
        Signal::Metrics,
        &metric_json(
            r#"{"name":"g","gauge":{"dataPoints":[{"asDouble":1,"exemplars":[{"asDouble":2,"spanId":"zz"}]}]}}"#,
        ),
    );
    assert_eq!(
        e,
        r#"resourceMetrics[0].scopeMetrics[0].metrics[1].gauge.dataPoints[0].exemplars[0].spanId: expected a span id of 16 hex digits, found "zz""#
    );
}

#[test]
fn invalid_inputs_are_errors_with_their_path() {
    let span = |fields: &str| {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"name":"a"}},{{{fields}}}]}}]}}]}}"#
        )
    };
    let at = "resourceSpans[0].scopeSpans[0].spans[1].";
    for (fields, want) in [
        (
            r#""traceId":"zz""#,
            r#"traceId: expected a trace id of 32 hex digits, found "zz""#,
        ),
        (
            r#""traceId":"5b8efff798038103d269b633813fc6""#,
            r#"traceId: expected a trace id of 32 hex digits, found "5b8efff798038103d269b633813fc6""#,
        ),
        (
            r#""spanId":"5b8efff798038103d269b633813fc60c""#,
            r#"spanId: expected a span id of 16 hex digits, found "5b8efff798038103d269b633813fc60c""#,
        ),
        (
            r#""parentSpanId":7"#,
            "parentSpanId: expected a span id of 16 hex digits, found 7",
        ),
        (r#""name":5"#, "name: expected a string, found 5"),
        (r#""name":["a"]"#, "name: expected a string, found an array"),
        (
            r#""attributes":{}"#,
            "attributes: expected an array, found an object",
        ),
        (
            r#""attributes":[1]"#,
            "attributes[0]: expected an object, found 1",
        ),
        (
            r#""attributes":[{"key":"k","value":{"bytesValue":"!!!"}}]"#,
            r#"attributes[0].value.bytesValue: expected a base64 string, found "!!!""#,
        ),
        (
            r#""attributes":[{"key":"k","value":{"bytesValue":"abcde"}}]"#,
            r#"attributes[0].value.bytesValue: expected a base64 string, found "abcde""#,
        ),
        (
            r#""attributes":[{"key":"k","value":{"boolValue":"true"}}]"#,
            r#"attributes[0].value.boolValue: expected true or false, found "true""#,
        ),
        (
            r#""attributes":[{"key":"k","value":{"doubleValue":"inf"}}]"#,
            r#"attributes[0].value.doubleValue: expected a number, "NaN", "Infinity" or "-Infinity", found "inf""#,
        ),
        (
            r#""attributes":[{"key":"k","value":{"stringValue":"a","intValue":1}}]"#,
            "attributes[0].value.intValue: stringValue is already set; only one of them may be given",
        ),
        (
            r#""attributes":[{"key":"k","value":{"arrayValue":{"values":[{"kvlistValue":{"values":[{"key":"x","value":{"intValue":1.5}}]}}]}}}]"#,
            "attributes[0].value.arrayValue.values[0].kvlistValue.values[0].value.intValue: expected an integer, found 1.5",
        ),
        (
            r#""kind":"SPAN_KIND_BOGUS""#,
            r#"kind: expected an enum number or name, found "SPAN_KIND_BOGUS""#,
        ),
        (
            r#""kind":2147483648"#,
            "kind: expected an enum number or name, found 2147483648",
        ),
        (
            r#""droppedAttributesCount":-1"#,
            "droppedAttributesCount: expected a non-negative 32-bit integer, found -1",
        ),
        (
            r#""droppedAttributesCount":4294967296"#,
            "droppedAttributesCount: expected a non-negative 32-bit integer, found 4294967296",
        ),
        (
            r#""startTimeUnixNano":"-1""#,
            r#"startTimeUnixNano: expected a non-negative integer, found "-1""#,
        ),
        (
            r#""startTimeUnixNano":"18446744073709551616""#,
            r#"startTimeUnixNano: expected a non-negative integer, found "18446744073709551616""#,
        ),
        (
            r#""endTimeUnixNano":true"#,
            "endTimeUnixNano: expected a non-negative integer, found true",
        ),
        (
            r#""flags":null,"status":{"code":"2"},"events":[{"name":{}}]"#,
            "events[0].name: expected a string, found an object",
        ),
        (
            r#""status":[]"#,
            "status: expected an object, found an array",
        ),
        (
            r#""status":{"code":1.5}"#,
            "status.code: expected an enum number or name, found 1.5",
        ),
    ] {
        assert_eq!(
            error(Signal::Traces, &span(fields)),
            format!("{at}{want}"),
            "{fields}"
        );
    }

    let e = error(
        Signal::Metrics,
        &metric_json(
            r#"{"name":"e","exponentialHistogram":{"dataPoints":[{"scale":2147483648}]}}"#,
        ),
    );
    assert!(e.ends_with("metrics[1].exponentialHistogram.dataPoints[0].scale: expected a 32-bit integer, found 2147483648"), "{e}");
    let e = error(
        Signal::Metrics,
        &metric_json(r#"{"name":"s","sum":{"isMonotonic":1}}"#),
    );
    assert!(
        e.ends_with("metrics[1].sum.isMonotonic: expected true or false, found 1"),
        "{e}"
    );
    let e = error(
        Signal::Metrics,
        &metric_json(r#"{"name":"s","gauge":{},"sum":{}}"#),
    );
    assert!(
        e.ends_with("metrics[1].sum: gauge is already set; only one of them may be given"),
        "{e}"
    );
    let e = error(
        Signal::Logs,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"LOUD"}]}]}]}"#,
    );
    assert_eq!(
        e,
        r#"resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber: expected an enum number or name, found "LOUD""#
    );
}

#[test]
fn malformed_json_is_an_error() {
    assert!(error(Signal::Logs, "{not json").starts_with("invalid JSON: "));
    assert!(error(Signal::Logs, "").starts_with("invalid JSON: "));
    assert!(error(Signal::Logs, "{} x").starts_with("invalid JSON: trailing characters"));
    assert_eq!(
        error(Signal::Logs, "[]"),
        "expected a JSON object, found an array"
    );
    assert_eq!(
        error(Signal::Logs, "null"),
        "expected a JSON object, found null"
    );
    assert_eq!(
        error(Signal::Logs, r#""x""#),
        r#"expected a JSON object, found "x""#
    );
    let e = error(
        Signal::Traces,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a""#,
    );
    assert!(
        e.starts_with("resourceSpans[0].scopeSpans[0].spans[0]: invalid JSON: EOF"),
        "{e}"
    );
    // serde_json's recursion limit bounds nesting; unknown fields are skipped without
    // recursing, however deep.
    let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(json_to_proto(Signal::Logs, deep.as_bytes()), Ok(Vec::new()));
    let nested_value = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{}"x"{}}}]}}]}}]}}"#,
        r#"{"arrayValue":{"values":["#.repeat(200),
        "]}}".repeat(200)
    );
    assert!(error(Signal::Logs, &nested_value).contains("recursion limit"));
}

// ---- what the decoder accepts --------------------------------------------------------------

#[test]
fn lenient_forms_are_accepted() {
    let req = traces(
        r#"{"resourceSpans":[{"unknown":{"deep":[1,{"x":null}]},"resource":null,"scopeSpans":[{"spans":[
            null,
            {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"","parentSpanId":null,
             "kind":"SPAN_KIND_CLIENT","startTimeUnixNano":1e3,"endTimeUnixNano":"2000",
             "droppedAttributesCount":"4","flags":257.0,"status":{"code":"STATUS_CODE_ERROR","future":1},
             "attributes":[{"key":"b","value":{"bytesValue":"aGk"}},{"key":"u","value":{"bytesValue":"-_8="}},
                           {"key":"d","value":{"doubleValue":"1.5"}},{"key":"i","value":{"intValue":-7}},
                           {"key":"n","value":{"stringValue":null}}]}]}]}]}"#,
    );
    let rs = &req.resource_spans[0];
    assert_eq!(rs.resource, None);
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans[0], Span::default());
    let s = &spans[1];
    assert_eq!(s.trace_id, hex("5b8efff798038103d269b633813fc60c"));
    assert!(s.span_id.is_empty() && s.parent_span_id.is_empty());
    assert_eq!(s.kind, 3);
    assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (1000, 2000));
    assert_eq!((s.dropped_attributes_count, s.flags), (4, 257));
    assert_eq!(s.status.as_ref().unwrap().code, 2);
    use any_value::Value as V;
    let values: Vec<_> = s
        .attributes
        .iter()
        .map(|kv| kv.value.clone().unwrap().value)
        .collect();
    assert_eq!(
        values,
        vec![
            Some(V::BytesValue(b"hi".to_vec())),
            Some(V::BytesValue(vec![0xfb, 0xff])),
            Some(V::DoubleValue(1.5)),
            Some(V::IntValue(-7)),
            None,
        ]
    );
}

#[test]
fn extreme_integers_are_kept() {
    let req = metrics(
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"gauge":{"dataPoints":[{"asInt":"-9223372036854775808","timeUnixNano":"18446744073709551615"},{"asInt":9223372036854775807}]}},
            {"histogram":{"dataPoints":[{"count":18446744073709551615,"bucketCounts":["18446744073709551615",0]}]}},
            {"exponentialHistogram":{"dataPoints":[{"scale":-2147483648,"positive":{"offset":-5}}]}}]}]}]}"#,
    );
    let m = &req.resource_metrics[0].scope_metrics[0].metrics;
    let Some(metric::Data::Gauge(g)) = &m[0].data else {
        panic!()
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsInt(i64::MIN))
    );
    assert_eq!(g.data_points[0].time_unix_nano, u64::MAX);
    assert_eq!(
        g.data_points[1].value,
        Some(number_data_point::Value::AsInt(i64::MAX))
    );
    let Some(metric::Data::Histogram(h)) = &m[1].data else {
        panic!()
    };
    assert_eq!(h.data_points[0].count, u64::MAX);
    assert_eq!(h.data_points[0].bucket_counts, vec![u64::MAX, 0]);
    let Some(metric::Data::ExponentialHistogram(e)) = &m[2].data else {
        panic!()
    };
    assert_eq!(e.data_points[0].scale, i32::MIN);
    assert_eq!(e.data_points[0].positive.as_ref().unwrap().offset, -5);
}

// ---- bug 2: NaN and infinities ----------------------------------------------------------

#[test]
fn nan_and_infinities_are_accepted_everywhere() {
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"gauge":{"dataPoints":[{"asDouble":"NaN","attributes":[{"key":"d","value":{"doubleValue":"-Infinity"}}],
            "exemplars":[{"asDouble":"Infinity"}]}]}},
        {"histogram":{"dataPoints":[{"sum":"NaN","min":"-Infinity","max":"Infinity","explicitBounds":["-Infinity",0,"Infinity","NaN"]}]}},
        {"exponentialHistogram":{"dataPoints":[{"sum":"Infinity","min":"NaN","max":"NaN","zeroThreshold":"Infinity"}]}},
        {"summary":{"dataPoints":[{"sum":"NaN","quantileValues":[{"quantile":"NaN","value":"Infinity"},{"quantile":1,"value":"-Infinity"}]}]}}
    ]}]}]}"#;
    let req = metrics(json);
    let m = &req.resource_metrics[0].scope_metrics[0].metrics;
    let Some(metric::Data::Gauge(g)) = &m[0].data else {
        panic!()
    };
    let p = &g.data_points[0];
    assert!(matches!(p.value, Some(number_data_point::Value::AsDouble(v)) if v.is_nan()));
    assert_eq!(
        p.attributes[0].value.clone().unwrap().value,
        Some(any_value::Value::DoubleValue(f64::NEG_INFINITY))
    );
    assert_eq!(
        p.exemplars[0].value,
        Some(exemplar::Value::AsDouble(f64::INFINITY))
    );
    let Some(metric::Data::Histogram(h)) = &m[1].data else {
        panic!()
    };
    let p = &h.data_points[0];
    assert!(p.sum.unwrap().is_nan());
    assert_eq!(
        (p.min, p.max),
        (Some(f64::NEG_INFINITY), Some(f64::INFINITY))
    );
    assert_eq!(
        &p.explicit_bounds[..3],
        &[f64::NEG_INFINITY, 0.0, f64::INFINITY]
    );
    assert!(p.explicit_bounds[3].is_nan());
    let Some(metric::Data::ExponentialHistogram(e)) = &m[2].data else {
        panic!()
    };
    let p = &e.data_points[0];
    assert_eq!(
        (p.sum, p.zero_threshold),
        (Some(f64::INFINITY), f64::INFINITY)
    );
    assert!(p.min.unwrap().is_nan() && p.max.unwrap().is_nan());
    let Some(metric::Data::Summary(s)) = &m[3].data else {
        panic!()
    };
    let p = &s.data_points[0];
    assert!(p.sum.is_nan());
    assert!(p.quantile_values[0].quantile.is_nan());
    assert_eq!(p.quantile_values[0].value, f64::INFINITY);
    assert_eq!(p.quantile_values[1].value, f64::NEG_INFINITY);

    let rendered = assert_stable(Signal::Metrics, json);
    for expected in [
        r#""asDouble":"NaN""#,
        r#""doubleValue":"-Infinity""#,
        r#""asDouble":"Infinity""#,
        r#""sum":"NaN""#,
        r#""explicitBounds":["-Infinity",0,"Infinity","NaN"]"#,
        r#""zeroThreshold":"Infinity""#,
        r#"{"quantile":"NaN","value":"Infinity"}"#,
    ] {
        assert!(rendered.contains(expected), "{expected} in {rendered}");
    }
}

// ---- bug 3: doubles round-trip exactly -----------------------------------------------------

const TRICKY_DOUBLES: &[&str] = &[
    "254.03099999999998",
    "0.1",
    "0.30000000000000004",
    "5e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "9007199254740993",
    "123456789012345680000",
    "1e21",
    "1e-7",
    "0.000001",
    "-637.704",
    "-0",
];

#[test]
fn doubles_round_trip_exactly() {
    for text in TRICKY_DOUBLES {
        let json = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{{"doubleValue":{text}}}}}]}}]}}]}}"#
        );
        let req = logs(&json);
        let body = req.resource_logs[0].scope_logs[0].log_records[0]
            .body
            .clone();
        let Some(any_value::Value::DoubleValue(v)) = body.unwrap().value else {
            panic!()
        };
        let want: f64 = text.parse().unwrap();
        assert_eq!(v.to_bits(), want.to_bits(), "{text}");
        let rendered = assert_stable(Signal::Logs, &json);
        let back: Value = serde_json::from_str(&rendered).unwrap();
        let printed =
            &back["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"]["doubleValue"];
        assert_eq!(
            printed.as_f64().unwrap().to_bits(),
            want.to_bits(),
            "{text} → {rendered}"
        );
    }
    assert!(assert_stable(
        Signal::Logs,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":254.03099999999998}}]}]}]}"#
    )
    .contains(r#"{"doubleValue":254.03099999999998}"#));
}

#[test]
fn doubles_print_like_protojson() {
    for (v, want) in [
        (254.03099999999998, "254.03099999999998"),
        (5.0, "5"),
        (-0.0, "-0"),
        (0.0, "0"),
        (0.5, "0.5"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (0.000001, "0.000001"),
        (1.25e-7, "1.25e-7"),
        (5e-324, "5e-324"),
        (f64::NAN, "\"NaN\""),
        (f64::INFINITY, "\"Infinity\""),
        (f64::NEG_INFINITY, "\"-Infinity\""),
        (-1234.5678, "-1234.5678"),
    ] {
        let mut out = String::new();
        to_json::push_f64(&mut out, v);
        assert_eq!(out, want, "{v:e}");
    }
}

// ---- bug 4: responses and default omission -------------------------------------------------

#[test]
fn a_full_success_response_is_an_empty_object() {
    for signal in Signal::ALL {
        assert_eq!(response_proto_to_json(signal, &[]), "{}");
        assert!(response_json_to_proto(signal, b"{}").unwrap().is_empty());
    }
}

#[test]
fn partial_success_responses() {
    let encoded = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 3,
            error_message: "too old".into(),
        }),
    }
    .encode_to_vec();
    let json = response_proto_to_json(Signal::Traces, &encoded);
    assert_eq!(
        json,
        r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"too old"}}"#
    );
    assert_eq!(
        response_json_to_proto(Signal::Traces, json.as_bytes()).unwrap(),
        encoded
    );

    let encoded = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess::default()),
    }
    .encode_to_vec();
    let json = response_proto_to_json(Signal::Metrics, &encoded);
    assert_eq!(json, r#"{"partialSuccess":{}}"#);
    assert_eq!(
        response_json_to_proto(Signal::Metrics, json.as_bytes()).unwrap(),
        encoded
    );

    let body = br#"{"partial_success":{"rejected_log_records":-2,"error_message":"x"}}"#;
    let decoded = ExportLogsServiceResponse::decode(
        response_json_to_proto(Signal::Logs, body)
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert_eq!(
        decoded.partial_success,
        Some(ExportLogsPartialSuccess {
            rejected_log_records: -2,
            error_message: "x".into()
        })
    );
    assert_eq!(response_proto_to_json(Signal::Logs, b"\xff"), "{}");
}

#[test]
fn rendering_follows_protojson() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![
                    Span {
                        trace_id: hex("5b8efff798038103d269b633813fc60c"),
                        span_id: hex("eee19b7ec3c1b174"),
                        name: "quote \" backslash \\ newline \n tab \t nul \u{0} é 🦀".into(),
                        kind: 2,
                        start_time_unix_nano: 1,
                        attributes: vec![
                            KeyValue {
                                key: "bytes".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::BytesValue(vec![
                                        0xfb, 0xff, 0x00, 0x41,
                                    ])),
                                }),
                                key_strindex: 0,
                            },
                            KeyValue {
                                key: "empty".into(),
                                value: Some(AnyValue { value: None }),
                                key_strindex: -1,
                            },
                            KeyValue {
                                key: "zero".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::BoolValue(false)),
                                }),
                                key_strindex: 0,
                            },
                            KeyValue {
                                key: "".into(),
                                value: None,
                                key_strindex: 0,
                            },
                        ],
                        status: Some(Status {
                            message: String::new(),
                            code: 2,
                        }),
                        flags: 0x301,
                        ..Span::default()
                    },
                    Span::default(),
                ],
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        }],
    };
    let encoded = req.encode_to_vec();
    let json = proto_to_json(Signal::Traces, &encoded).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"resourceSpans":[{"resource":{},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","#,
            r#""name":"quote \" backslash \\ newline \n tab \t nul \u0000 é 🦀","kind":2,"startTimeUnixNano":"1","attributes":["#,
            r#"{"key":"bytes","value":{"bytesValue":"+/8AQQ=="}},{"key":"empty","value":{},"keyStrindex":-1},"#,
            r#"{"key":"zero","value":{"boolValue":false}},{}],"status":{"code":2},"flags":769},{}]}],"#,
            r#""schemaUrl":"https://opentelemetry.io/schemas/1.21.0"}]}"#
        )
    );
    assert_eq!(
        json_to_proto(Signal::Traces, json.as_bytes()).unwrap(),
        encoded
    );
}

// ---- protobuf input that prost would not write -------------------------------------------

fn tag(number: u32, wire_type: u8) -> u8 {
    u8::try_from((number << 3) | u32::from(wire_type)).unwrap()
}

fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![tag(number, 2), u8::try_from(payload.len()).unwrap()];
    out.extend_from_slice(payload);
    out
}

#[test]
fn concatenated_requests_render_as_one() {
    let one = |name: &str| {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        severity_text: name.into(),
                        ..LogRecord::default()
                    }],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
        .encode_to_vec()
    };
    let mut both = one("a");
    both.extend(one("b"));
    let json = proto_to_json(Signal::Logs, &both).unwrap();
    assert_eq!(
        json,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityText":"a"}]}]},{"scopeLogs":[{"logRecords":[{"severityText":"b"}]}]}]}"#
    );
}

#[test]
fn unusual_but_valid_protobuf_renders_by_protobuf_rules() {
    // Histogram data point: unpacked bucket counts mixed with a packed run, an explicit zero
    // count, fields out of order, a repeated scalar (last wins) and an unknown field.
    let mut point = Vec::new();
    point.extend([tag(6, 1)]);
    point.extend(7u64.to_le_bytes());
    point.extend(len_field(
        6,
        &[8u64.to_le_bytes(), 9u64.to_le_bytes()].concat(),
    ));
    point.extend([tag(4, 1)]);
    point.extend(0u64.to_le_bytes());
    point.extend([tag(3, 1)]);
    point.extend(5u64.to_le_bytes());
    point.extend([tag(3, 1)]);
    point.extend(6u64.to_le_bytes());
    point.extend([tag(15, 0), 1]);
    point.extend(len_field(10, b"")); // flags is a varint: wrong wire type, rejected below
    let histogram = len_field(1, &point[..point.len() - 2]);
    let metric_body = [len_field(1, b"m"), len_field(9, &histogram)].concat();
    let req = len_field(1, &len_field(2, &len_field(2, &metric_body)));
    let json = proto_to_json(Signal::Metrics, &req).unwrap();
    assert_eq!(
        json,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","histogram":{"dataPoints":[{"timeUnixNano":"6","bucketCounts":["7","8","9"]}]}}]}]}]}"#
    );

    let histogram = len_field(1, &point);
    let metric_body = [len_field(1, b"m"), len_field(9, &histogram)].concat();
    let req = len_field(1, &len_field(2, &len_field(2, &metric_body)));
    let e = proto_to_json(Signal::Metrics, &req).unwrap_err();
    assert!(
        e.contains("field 10 of HistogramDataPoint has wire type 2 where 0 is required"),
        "{e}"
    );

    // A oneof keeps its last member; a repeated message field merges.
    let number_point = [
        vec![tag(4, 1)],
        1.5f64.to_le_bytes().to_vec(),
        vec![tag(6, 1)],
        (-3i64).to_le_bytes().to_vec(),
    ]
    .concat();
    let gauge = len_field(1, &number_point);
    let metric_body = [
        len_field(5, &gauge),
        len_field(1, b"x"),
        len_field(5, &len_field(1, b"")),
    ]
    .concat();
    let req = len_field(1, &len_field(2, &len_field(2, &metric_body)));
    assert_eq!(
        proto_to_json(Signal::Metrics, &req).unwrap(),
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"x","gauge":{"dataPoints":[{"asInt":"-3"},{}]}}]}]}]}"#
    );

    // Invalid UTF-8 in a string becomes U+FFFD.
    let req = len_field(1, &len_field(2, &len_field(2, &len_field(3, b"a\xffb"))));
    assert_eq!(
        proto_to_json(Signal::Logs, &req).unwrap(),
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityText":"a�b"}]}]}]}"#
    );
}

#[test]
fn malformed_protobuf_is_an_error() {
    assert!(
        proto_to_json(Signal::Traces, b"\x0a\x05ab")
            .unwrap_err()
            .contains("truncated")
    );
    assert!(proto_to_json(Signal::Traces, b"\x0b").is_err());
    assert!(
        proto_to_json(Signal::Traces, b"\x08\x01")
            .unwrap_err()
            .contains("wire type")
    );
    // Deeply nested AnyValues are refused, not a stack overflow.
    let mut value = len_field(1, b"x");
    for _ in 0..200 {
        let array = [vec![tag(1, 2)], encode_len(value.len()), value].concat();
        value = [vec![tag(5, 2)], encode_len(array.len()), array].concat();
    }
    let record = [vec![tag(5, 2)], encode_len(value.len()), value].concat();
    let scope_logs = [vec![tag(2, 2)], encode_len(record.len()), record].concat();
    let resource_logs = [vec![tag(2, 2)], encode_len(scope_logs.len()), scope_logs].concat();
    let req = [
        vec![tag(1, 2)],
        encode_len(resource_logs.len()),
        resource_logs,
    ]
    .concat();
    let e = proto_to_json(Signal::Logs, &req).unwrap_err();
    assert!(e.contains("nested more than"), "{e}");
}

fn encode_len(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    crate::otlp::wire::encode_varint(len as u64, &mut out);
    out
}

// ---- the schema ------------------------------------------------------------------------

fn all_messages() -> Vec<&'static Message> {
    let mut seen: Vec<&'static Message> = Vec::new();
    let mut todo: Vec<&'static Message> = Signal::ALL
        .iter()
        .flat_map(|&s| [schema::request(s), schema::response(s)])
        .collect();
    while let Some(m) = todo.pop() {
        if seen.iter().any(|s| std::ptr::eq(*s, m)) {
            continue;
        }
        seen.push(m);
        for f in m.fields {
            if let Kind::Message(child) = f.kind {
                todo.push(child);
            }
        }
    }
    seen
}

#[test]
fn schema_is_consistent() {
    let messages = all_messages();
    assert_eq!(messages.len(), 40);
    for m in messages {
        let mut numbers: Vec<_> = m.fields.iter().map(|f| f.number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), m.fields.len(), "{}", m.name);
        // prost's encoding order: by number, a oneof's members together at its lowest number.
        let position = |f: &schema::Field| {
            if f.oneof {
                m.fields
                    .iter()
                    .filter(|g| g.oneof)
                    .map(|g| g.number)
                    .min()
                    .unwrap()
            } else {
                f.number
            }
        };
        assert!(
            m.fields
                .windows(2)
                .all(|w| position(&w[0]) <= position(&w[1])),
            "{}",
            m.name
        );
        let oneof: Vec<_> = m.fields.iter().filter(|f| f.oneof).collect();
        assert!(oneof.iter().all(|f| f.card == Card::Present), "{}", m.name);
        for f in m.fields {
            assert_eq!(snake_case(f.json), f.proto, "{}.{}", m.name, f.json);
        }
    }
}

// ---- property tests ----------------------------------------------------------------------

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>().prop_map(|v| if v.is_nan() { f64::NAN } else { v }),
        1 => prop::sample::select(vec![
            0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 254.03099999999998, 0.1,
            5e-324, f64::MAX, f64::MIN_POSITIVE, 1e21, 1e-7, -1.5, 1e300,
        ]),
        1 => (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![2 => "[a-z._]{0,8}", 1 => any::<String>()]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..10)
}

fn arb_trace_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), vec(any::<u8>(), 16)]
}

fn arb_span_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), vec(any::<u8>(), 8)]
}

fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0..1000u64, any::<u64>()]
}

fn arb_i64() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), -1000..1000i64, any::<i64>()]
}

fn arb_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), any::<u32>()]
}

fn arb_i32() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0i32), -3..30i32, any::<i32>()]
}

fn arb_any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        Just(None),
        arb_string().prop_map(|v| Some(V::StringValue(v))),
        any::<bool>().prop_map(|v| Some(V::BoolValue(v))),
        arb_i64().prop_map(|v| Some(V::IntValue(v))),
        arb_f64().prop_map(|v| Some(V::DoubleValue(v))),
        arb_bytes().prop_map(|v| Some(V::BytesValue(v))),
        arb_i32().prop_map(|v| Some(V::StringValueStrindex(v))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            vec((arb_string(), option::of(inner), arb_i32()), 0..3).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, value, key_strindex)| KeyValue {
                            key,
                            value,
                            key_strindex,
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

fn arb_attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (arb_string(), option::of(arb_any_value()), arb_i32()).prop_map(
            |(key, value, key_strindex)| KeyValue {
                key,
                value,
                key_strindex,
            },
        ),
        0..3,
    )
}

fn arb_resource() -> impl Strategy<Value = Option<Resource>> {
    let entity = (
        arb_string(),
        arb_string(),
        vec(arb_string(), 0..3),
        vec(arb_string(), 0..2),
    )
        .prop_map(
            |(schema_url, r#type, id_keys, description_keys)| EntityRef {
                schema_url,
                r#type,
                id_keys,
                description_keys,
            },
        );
    option::of((arb_attributes(), arb_u32(), vec(entity, 0..2)).prop_map(
        |(attributes, dropped_attributes_count, entity_refs)| Resource {
            attributes,
            dropped_attributes_count,
            entity_refs,
        },
    ))
}

fn arb_scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    option::of(
        (arb_string(), arb_string(), arb_attributes(), arb_u32()).prop_map(
            |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            },
        ),
    )
}

fn arb_span() -> impl Strategy<Value = Span> {
    let event = (arb_u64(), arb_string(), arb_attributes(), arb_u32()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    );
    let link = (
        arb_trace_id(),
        arb_span_id(),
        arb_string(),
        arb_attributes(),
        arb_u32(),
        arb_u32(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                span::Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count,
                    flags,
                }
            },
        );
    let status =
        option::of((arb_string(), arb_i32()).prop_map(|(message, code)| Status { message, code }));
    (
        (
            arb_trace_id(),
            arb_span_id(),
            arb_string(),
            arb_span_id(),
            arb_u32(),
            arb_string(),
            arb_i32(),
            arb_u64(),
            arb_u64(),
        ),
        (
            arb_attributes(),
            arb_u32(),
            vec(event, 0..2),
            arb_u32(),
            vec(link, 0..2),
            arb_u32(),
            status,
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, trace_state, parent_span_id, flags, name, kind, start, end),
                (
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status,
                ),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count,
                events,
                dropped_events_count,
                links,
                dropped_links_count,
                status,
            },
        )
}

fn arb_traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (arb_scope(), vec(arb_span(), 0..3), arb_string()).prop_map(
        |(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        },
    );
    let resource_spans = (arb_resource(), vec(scope_spans, 0..3), arb_string()).prop_map(
        |(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        },
    );
    vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn arb_exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    let value = option::of(prop_oneof![
        arb_f64().prop_map(exemplar::Value::AsDouble),
        arb_i64().prop_map(exemplar::Value::AsInt),
    ]);
    vec(
        (
            arb_attributes(),
            arb_u64(),
            value,
            arb_span_id(),
            arb_trace_id(),
        )
            .prop_map(
                |(filtered_attributes, time_unix_nano, value, span_id, trace_id)| Exemplar {
                    filtered_attributes,
                    time_unix_nano,
                    value,
                    span_id,
                    trace_id,
                },
            ),
        0..2,
    )
}

fn arb_number_points() -> impl Strategy<Value = Vec<NumberDataPoint>> {
    let value = option::of(prop_oneof![
        arb_f64().prop_map(number_data_point::Value::AsDouble),
        arb_i64().prop_map(number_data_point::Value::AsInt),
    ]);
    vec(
        (
            arb_attributes(),
            arb_u64(),
            arb_u64(),
            arb_exemplars(),
            arb_u32(),
            value,
        )
            .prop_map(
                |(attributes, start_time_unix_nano, time_unix_nano, exemplars, flags, value)| {
                    NumberDataPoint {
                        attributes,
                        start_time_unix_nano,
                        time_unix_nano,
                        exemplars,
                        flags,
                        value,
                    }
                },
            ),
        0..3,
    )
}

fn arb_histogram_points() -> impl Strategy<Value = Vec<HistogramDataPoint>> {
    vec(
        (
            (
                arb_attributes(),
                arb_u64(),
                arb_u64(),
                arb_u64(),
                option::of(arb_f64()),
            ),
            (
                vec(arb_u64(), 0..4),
                vec(arb_f64(), 0..4),
                arb_exemplars(),
                arb_u32(),
                option::of(arb_f64()),
                option::of(arb_f64()),
            ),
        )
            .prop_map(
                |(
                    (attributes, start_time_unix_nano, time_unix_nano, count, sum),
                    (bucket_counts, explicit_bounds, exemplars, flags, min, max),
                )| HistogramDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count,
                    sum,
                    bucket_counts,
                    explicit_bounds,
                    exemplars,
                    flags,
                    min,
                    max,
                },
            ),
        0..3,
    )
}

fn arb_exponential_points() -> impl Strategy<Value = Vec<ExponentialHistogramDataPoint>> {
    let buckets = || {
        option::of(
            (arb_i32(), vec(arb_u64(), 0..4)).prop_map(|(offset, bucket_counts)| Buckets {
                offset,
                bucket_counts,
            }),
        )
    };
    vec(
        (
            (
                arb_attributes(),
                arb_u64(),
                arb_u64(),
                arb_u64(),
                option::of(arb_f64()),
                arb_i32(),
                arb_u64(),
            ),
            (
                buckets(),
                buckets(),
                arb_u32(),
                arb_exemplars(),
                option::of(arb_f64()),
                option::of(arb_f64()),
                arb_f64(),
            ),
        )
            .prop_map(
                |(
                    (
                        attributes,
                        start_time_unix_nano,
                        time_unix_nano,
                        count,
                        sum,
                        scale,
                        zero_count,
                    ),
                    (positive, negative, flags, exemplars, min, max, zero_threshold),
                )| ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count,
                    sum,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    flags,
                    exemplars,
                    min,
                    max,
                    zero_threshold,
                },
            ),
        0..3,
    )
}

fn arb_summary_points() -> impl Strategy<Value = Vec<SummaryDataPoint>> {
    let quantiles = vec(
        (arb_f64(), arb_f64()).prop_map(|(quantile, value)| ValueAtQuantile { quantile, value }),
        0..3,
    );
    vec(
        (
            arb_attributes(),
            arb_u64(),
            arb_u64(),
            arb_u64(),
            arb_f64(),
            quantiles,
            arb_u32(),
        )
            .prop_map(
                |(
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count,
                    sum,
                    quantile_values,
                    flags,
                )| {
                    SummaryDataPoint {
                        attributes,
                        start_time_unix_nano,
                        time_unix_nano,
                        count,
                        sum,
                        quantile_values,
                        flags,
                    }
                },
            ),
        0..3,
    )
}

fn arb_metric() -> impl Strategy<Value = Metric> {
    let data = option::of(prop_oneof![
        arb_number_points().prop_map(|data_points| metric::Data::Gauge(Gauge { data_points })),
        (arb_number_points(), arb_i32(), any::<bool>()).prop_map(
            |(data_points, aggregation_temporality, is_monotonic)| metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality,
                is_monotonic,
            })
        ),
        (arb_histogram_points(), arb_i32()).prop_map(|(data_points, aggregation_temporality)| {
            metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality,
            })
        }),
        (arb_exponential_points(), arb_i32()).prop_map(|(data_points, aggregation_temporality)| {
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points,
                aggregation_temporality,
            })
        }),
        arb_summary_points().prop_map(|data_points| metric::Data::Summary(Summary { data_points })),
    ]);
    (
        arb_string(),
        arb_string(),
        arb_string(),
        data,
        arb_attributes(),
    )
        .prop_map(|(name, description, unit, data, metadata)| Metric {
            name,
            description,
            unit,
            data,
            metadata,
        })
}

fn arb_metrics() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics = (arb_scope(), vec(arb_metric(), 0..4), arb_string()).prop_map(
        |(scope, metrics, schema_url)| ScopeMetrics {
            scope,
            metrics,
            schema_url,
        },
    );
    let resource_metrics = (arb_resource(), vec(scope_metrics, 0..3), arb_string()).prop_map(
        |(resource, scope_metrics, schema_url)| ResourceMetrics {
            resource,
            scope_metrics,
            schema_url,
        },
    );
    vec(resource_metrics, 0..3)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

fn arb_log_record() -> impl Strategy<Value = LogRecord> {
    (
        (
            arb_u64(),
            arb_u64(),
            arb_i32(),
            arb_string(),
            option::of(arb_any_value()),
        ),
        (
            arb_attributes(),
            arb_u32(),
            arb_u32(),
            arb_trace_id(),
            arb_span_id(),
            arb_string(),
        ),
    )
        .prop_map(
            |(
                (time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body),
                (attributes, dropped_attributes_count, flags, trace_id, span_id, event_name),
            )| LogRecord {
                time_unix_nano,
                observed_time_unix_nano,
                severity_number,
                severity_text,
                body,
                attributes,
                dropped_attributes_count,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

fn arb_logs() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope_logs = (arb_scope(), vec(arb_log_record(), 0..4), arb_string()).prop_map(
        |(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        },
    );
    let resource_logs = (arb_resource(), vec(scope_logs, 0..3), arb_string()).prop_map(
        |(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        },
    );
    vec(resource_logs, 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

/// prost's bytes → JSON → our bytes must be prost's bytes again.
fn check_round_trip(signal: Signal, encoded: &[u8]) -> Result<(), TestCaseError> {
    let json = proto_to_json(signal, encoded).map_err(TestCaseError::fail)?;
    let parsed: Value =
        serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
    prop_assert!(parsed.is_object());
    let back = json_to_proto(signal, json.as_bytes()).map_err(TestCaseError::fail)?;
    prop_assert_eq!(back.as_slice(), encoded, "{}", json);
    Ok(())
}

/// JSON whose keys are OTLP field names (either spelling) and whose values are of any shape,
/// so the decoder is driven deep into the schema with wrong, odd and right values.
fn arb_json() -> impl Strategy<Value = Value> {
    let mut names: Vec<&'static str> = all_messages()
        .iter()
        .flat_map(|m| m.fields.iter().flat_map(|f| [f.json, f.proto]))
        .collect();
    names.sort_unstable();
    names.dedup();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "NaN",
            "Infinity",
            "-Infinity",
            "1",
            "-1",
            "1.5",
            "18446744073709551616",
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            "aGk=",
            "x",
            "SPAN_KIND_SERVER",
            "STATUS_CODE_OK",
        ])
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 64, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((prop::sample::select(names.clone()), inner), 0..5).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

fn check_json_input(text: &str) -> Result<(), TestCaseError> {
    for signal in Signal::ALL {
        if let Ok(encoded) = json_to_proto(signal, text.as_bytes()) {
            // Whatever is accepted is valid protobuf of the request type, and renders back.
            let ok = match signal {
                Signal::Traces => ExportTraceServiceRequest::decode(encoded.as_slice()).is_ok(),
                Signal::Metrics => ExportMetricsServiceRequest::decode(encoded.as_slice()).is_ok(),
                Signal::Logs => ExportLogsServiceRequest::decode(encoded.as_slice()).is_ok(),
            };
            prop_assert!(ok, "{}", text);
            let json = proto_to_json(signal, &encoded).map_err(TestCaseError::fail)?;
            let again = json_to_proto(signal, json.as_bytes()).map_err(TestCaseError::fail)?;
            let json_again = proto_to_json(signal, &again).map_err(TestCaseError::fail)?;
            prop_assert_eq!(json, json_again);
        }
        let _ = response_json_to_proto(signal, text.as_bytes());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn traces_round_trip_byte_for_byte(req in arb_traces()) {
        check_round_trip(Signal::Traces, &req.encode_to_vec())?;
    }

    #[test]
    fn metrics_round_trip_byte_for_byte(req in arb_metrics()) {
        check_round_trip(Signal::Metrics, &req.encode_to_vec())?;
    }

    #[test]
    fn logs_round_trip_byte_for_byte(req in arb_logs()) {
        check_round_trip(Signal::Logs, &req.encode_to_vec())?;
    }

    #[test]
    fn rendered_doubles_parse_back_exactly(v in any::<f64>()) {
        let mut out = String::new();
        to_json::push_f64(&mut out, v);
        let parsed: Value = serde_json::from_str(&out).unwrap();
        match parsed {
            Value::String(s) => prop_assert!(!v.is_finite(), "{} as {}", v, s),
            number => prop_assert_eq!(number.as_f64().unwrap().to_bits(), v.to_bits(), "{}", out),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        check_json_input(&value.to_string())?;
        for key in ["resourceSpans", "resource_metrics", "resourceLogs"] {
            let wrapped = serde_json::json!({ key: [value.clone()] }).to_string();
            check_json_input(&wrapped)?;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64), text in any::<String>()) {
        for signal in Signal::ALL {
            let _ = proto_to_json(signal, &bytes);
            let _ = response_proto_to_json(signal, &bytes);
            let _ = json_to_proto(signal, &bytes);
            let _ = json_to_proto(signal, text.as_bytes());
        }
    }
}
