//! Each action on each signal, the collector's validation, and metric re-aggregation after a
//! delete.

use std::collections::BTreeMap;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::config::{ActionConfig, ConfigValue};
use super::*;

fn s(v: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(v.to_string())),
    }
}

fn int(v: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

fn action(action: &str, key: &str) -> ActionConfig {
    ActionConfig {
        action: action.to_string(),
        key: key.to_string(),
        ..Default::default()
    }
}

fn with_value(mut a: ActionConfig, v: ConfigValue) -> ActionConfig {
    a.value = Some(v);
    a
}

fn processor(actions: Vec<ActionConfig>) -> AttributesProcessor {
    let config = AttributesConfig {
        actions,
        ..Default::default()
    };
    config.validate().unwrap();
    AttributesProcessor::new(config, "attributes", &Registry::default())
}

fn spans(attributes: Vec<KeyValue>) -> Batch {
    let r = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "op".into(),
                    attributes,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Signal::Traces, r.encode_to_vec().into()).unwrap()
}

fn logs(attributes: Vec<KeyValue>) -> Batch {
    let r = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    attributes,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Signal::Logs, r.encode_to_vec().into()).unwrap()
}

fn counter_point(attributes: Vec<KeyValue>, time: u64, value: i64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: 1,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    }
}

fn metrics(points: Vec<NumberDataPoint>) -> Batch {
    let r = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "c".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Signal::Metrics, r.encode_to_vec().into()).unwrap()
}

fn metric_points(out: &[Batch]) -> Vec<NumberDataPoint> {
    out.iter()
        .flat_map(|b| {
            let r = ExportMetricsServiceRequest::decode(b.to_bytes()).unwrap();
            r.resource_metrics
                .into_iter()
                .flat_map(|rm| rm.scope_metrics)
                .flat_map(|sm| sm.metrics)
                .flat_map(|m| match m.data {
                    Some(metric::Data::Sum(s)) => s.data_points,
                    _ => Vec::new(),
                })
        })
        .collect()
}

fn as_map(attributes: &[KeyValue]) -> BTreeMap<String, AnyValue> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}

/// Runs the actions over the same attributes as a span, a log record and a metric point;
/// all three must agree. Returns the result.
fn on_every_signal(actions: Vec<ActionConfig>, input: Vec<KeyValue>) -> BTreeMap<String, AnyValue> {
    let mut p = processor(actions);
    let now = Instant::now();
    let mut out = Vec::new();
    p.process(spans(input.clone()), now, &mut out);
    let span = ExportTraceServiceRequest::decode(out[0].to_bytes()).unwrap();
    let from_span = as_map(&span.resource_spans[0].scope_spans[0].spans[0].attributes);

    let mut out = Vec::new();
    p.process(logs(input.clone()), now, &mut out);
    let log = ExportLogsServiceRequest::decode(out[0].to_bytes()).unwrap();
    let from_log = as_map(&log.resource_logs[0].scope_logs[0].log_records[0].attributes);

    let mut out = Vec::new();
    p.process(metrics(vec![counter_point(input, 10, 1)]), now, &mut out);
    let points = metric_points(&out);
    assert_eq!(points.len(), 1);
    let from_metric = as_map(&points[0].attributes);

    assert_eq!(from_span, from_log);
    assert_eq!(from_span, from_metric);
    from_span
}

fn expect(pairs: &[(&str, AnyValue)]) -> BTreeMap<String, AnyValue> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn insert_adds_only_missing_keys() {
    let got = on_every_signal(
        vec![
            with_value(action("insert", "env"), ConfigValue::Str("prod".into())),
            with_value(action("insert", "user"), ConfigValue::Str("x".into())),
        ],
        vec![kv("user", s("u1"))],
    );
    assert_eq!(got, expect(&[("env", s("prod")), ("user", s("u1"))]));
}

#[test]
fn update_changes_only_existing_keys_and_copies_from_attributes() {
    let mut from = action("update", "user");
    from.from_attribute = "tenant".into();
    let got = on_every_signal(
        vec![
            with_value(action("UPDATE", "missing"), ConfigValue::Int(1)),
            from,
        ],
        vec![kv("user", s("u1")), kv("tenant", s("t9"))],
    );
    assert_eq!(got, expect(&[("tenant", s("t9")), ("user", s("t9"))]));
}

#[test]
fn upsert_sets_typed_values_whether_or_not_the_key_exists() {
    let got = on_every_signal(
        vec![
            with_value(action("upsert", "count"), ConfigValue::Int(3)),
            with_value(action("upsert", "user"), ConfigValue::Bool(true)),
            with_value(action("upsert", "ratio"), ConfigValue::Double(0.5)),
        ],
        vec![kv("user", s("u1"))],
    );
    let b = AnyValue {
        value: Some(any_value::Value::BoolValue(true)),
    };
    let d = AnyValue {
        value: Some(any_value::Value::DoubleValue(0.5)),
    };
    assert_eq!(got, expect(&[("count", int(3)), ("ratio", d), ("user", b)]));
}

#[test]
fn from_attribute_that_is_missing_does_nothing() {
    let mut a = action("upsert", "user");
    a.from_attribute = "nope".into();
    let got = on_every_signal(vec![a], vec![kv("user", s("u1"))]);
    assert_eq!(got, expect(&[("user", s("u1"))]));
}

#[test]
fn delete_by_key_and_by_pattern() {
    let mut by_pattern = action("delete", "");
    by_pattern.pattern = "^http\\.".into();
    let got = on_every_signal(
        vec![action("delete", "user"), by_pattern],
        vec![
            kv("user", s("u1")),
            kv("http.url", s("/x")),
            kv("http.method", s("GET")),
            kv("route", s("/")),
        ],
    );
    assert_eq!(got, expect(&[("route", s("/"))]));
}

#[test]
fn hash_is_the_collectors_sha256_hex_for_each_type() {
    let mut by_pattern = action("hash", "");
    by_pattern.pattern = "^n_".into();
    let got = on_every_signal(
        vec![action("hash", "email"), by_pattern],
        vec![
            kv("email", s("abc")),
            kv("n_int", int(1)),
            kv("n_empty", s("")),
            kv("other", s("abc")),
        ],
    );
    let sha = |bytes: &[u8]| s(&sha256::hex(&sha256::digest(bytes)));
    assert_eq!(
        got,
        expect(&[
            (
                "email",
                s("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
            ),
            ("n_empty", s("")),
            ("n_int", sha(&1i64.to_le_bytes())),
            ("other", s("abc")),
        ])
    );
}

#[test]
fn extract_puts_named_groups() {
    let mut a = action("extract", "http.url");
    a.pattern = "^/api/(?P<version>v\\d+)/(?P<resource>\\w+)".into();
    let got = on_every_signal(vec![a], vec![kv("http.url", s("/api/v2/users?id=3"))]);
    assert_eq!(
        got,
        expect(&[
            ("http.url", s("/api/v2/users?id=3")),
            ("resource", s("users")),
            ("version", s("v2")),
        ])
    );
}

#[test]
fn deleting_a_metric_label_re_aggregates_the_series_that_collapse() {
    let mut p = processor(vec![action("delete", "user")]);
    let now = Instant::now();
    let mut totals = Vec::new();
    for (t, a, b) in [(10, 5, 7), (20, 6, 9), (30, 6, 9)] {
        let mut out = Vec::new();
        let batch = metrics(vec![
            counter_point(vec![kv("user", s("a")), kv("route", s("/"))], t, a),
            counter_point(vec![kv("user", s("b")), kv("route", s("/"))], t, b),
        ]);
        p.process(batch, now, &mut out);
        let points = metric_points(&out);
        assert_eq!(points.len(), 1, "one series after the delete");
        assert_eq!(as_map(&points[0].attributes), expect(&[("route", s("/"))]));
        totals.push(points[0].value);
    }
    let ints: Vec<_> = totals
        .into_iter()
        .map(|v| match v {
            Some(number_data_point::Value::AsInt(i)) => i,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ints, vec![12, 15, 15]);
}

#[test]
fn with_a_delete_summaries_pass_edited_unless_they_lose_a_label() {
    use opentelemetry_proto::tonic::metrics::v1::{Summary, SummaryDataPoint};
    let mut p = processor(vec![
        action("delete", "user"),
        with_value(action("insert", "env"), ConfigValue::Str("prod".into())),
    ]);
    let summary = |attributes: Vec<KeyValue>| Metric {
        name: "rpc".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes,
                count: 1,
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    summary(vec![kv("route", s("/"))]),
                    summary(vec![kv("user", s("a"))]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = Batch::from_encoded(Signal::Metrics, request.encode_to_vec().into()).unwrap();
    let mut out = Vec::new();
    p.process(batch, Instant::now(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 1);
    let got = ExportMetricsServiceRequest::decode(out[0].to_bytes()).unwrap();
    let m = &got.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::Summary(summary)) = &m.data else {
        panic!("{m:?}");
    };
    assert_eq!(
        as_map(&summary.data_points[0].attributes),
        expect(&[("env", s("prod")), ("route", s("/"))])
    );
}

#[test]
fn validation_follows_the_collector() {
    let check = |actions: Vec<ActionConfig>| {
        AttributesConfig {
            actions,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
    };
    assert!(check(vec![]).contains("missing required field \"actions\""));
    assert!(
        check(vec![action("insert", "")])
            .contains("missing required field \"key\" at the 0-th actions")
    );
    assert!(check(vec![action("insert", "k")]).contains("Either field \"value\""));
    assert!(check(vec![action("delete", "")]).contains("at least one of \"key\" and \"pattern\""));
    let mut both = with_value(action("upsert", "k"), ConfigValue::Int(1));
    both.from_attribute = "x".into();
    assert!(check(vec![both]).contains("multiple value sources"));
    let mut bad = action("hash", "");
    bad.pattern = "(".into();
    assert!(check(vec![bad]).contains("invalid pattern"));
    assert!(check(vec![action("rename", "k")]).contains("unsupported action \"rename\""));
    assert!(check(vec![action("convert", "k")]).contains("not supported yet"));
}
