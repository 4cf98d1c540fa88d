//! Span metrics are SLIs: these tests feed known spans and check every exported point —
//! names, attributes, counts, buckets, temporality, the series cap — as the collector's
//! connector produces them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, NumberDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::config::node;
use crate::telemetry::Registry;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

struct SpanSpec {
    name: &'static str,
    kind: i32,
    status: i32,
    millis: f64,
    attrs: Vec<KeyValue>,
    trace: u8,
}

fn span(name: &'static str, kind: i32, status: i32, millis: f64) -> SpanSpec {
    SpanSpec {
        name,
        kind,
        status,
        millis,
        attrs: Vec::new(),
        trace: 1,
    }
}

fn traces(resource: Vec<KeyValue>, spans: Vec<SpanSpec>) -> Batch {
    let start = 1_700_000_000_000_000_000u64;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .into_iter()
                    .map(|sp| Span {
                        trace_id: vec![sp.trace; 16],
                        span_id: vec![sp.trace; 8],
                        name: sp.name.into(),
                        kind: sp.kind,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + (sp.millis * 1e6) as u64,
                        attributes: sp.attrs,
                        status: Some(Status {
                            code: sp.status,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Signal::Traces, request.encode_to_vec().into()).unwrap()
}

fn service(name: &str) -> Vec<KeyValue> {
    vec![kv("service.name", s(name)), kv("host.name", s("node-1"))]
}

fn connector(yaml: &str) -> (SpanMetrics, Registry) {
    let root = node::parse("t.yaml", yaml).unwrap();
    let config: SpanMetricsConfig = node::from_node(&root, "connectors.spanmetrics").unwrap();
    config.validate().unwrap();
    let registry = Registry::default();
    (
        SpanMetrics::new(&config, "spanmetrics", &registry),
        registry,
    )
}

/// A periodic flush (the connector's `tick` when its interval is due).
fn flush(c: &mut SpanMetrics) -> Option<ExportMetricsServiceRequest> {
    let mut out = Vec::new();
    let due = c.next_deadline().unwrap();
    c.tick(due.max(Instant::now()), &mut out);
    assert!(out.len() <= 1);
    out.pop()
        .map(|b| ExportMetricsServiceRequest::decode(b.to_bytes()).unwrap())
}

fn feed(c: &mut SpanMetrics, batch: Batch) {
    let mut out = Vec::new();
    c.process(batch, Instant::now(), &mut out);
    assert!(out.is_empty(), "spans go nowhere but into metrics");
}

/// A point's attributes as text, without the per-process instance id.
fn labels(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter(|kv| kv.key != INSTANCE_KEY)
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                Some(any_value::Value::BoolValue(b)) => format!("bool:{b}"),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn calls(req: &ExportMetricsServiceRequest) -> Vec<(BTreeMap<String, String>, i64)> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                if let Some(metric::Data::Sum(sum)) = &m.data {
                    for p in &sum.data_points {
                        let Some(number_data_point::Value::AsInt(v)) = p.value else {
                            panic!("calls are ints")
                        };
                        out.push((labels(&p.attributes), v));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn histograms(req: &ExportMetricsServiceRequest) -> Vec<HistogramDataPoint> {
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(h.data_points.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn call_points(req: &ExportMetricsServiceRequest) -> Vec<NumberDataPoint> {
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => Some(s.data_points.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

#[test]
fn counts_calls_and_durations_per_service_name_kind_and_status_as_the_collector_names_them() {
    let (mut c, registry) = connector("{}");
    feed(
        &mut c,
        traces(
            service("checkout"),
            vec![
                span("GET /cart", SERVER, 0, 3.0),
                span("GET /cart", SERVER, 0, 7.5),
                span("GET /cart", SERVER, ERROR, 120.0),
                span("SELECT", CLIENT, 1, 1.0),
            ],
        ),
    );
    let first = flush(&mut c).unwrap();
    let rm = &first.resource_metrics[0];
    assert_eq!(
        labels(&rm.resource.as_ref().unwrap().attributes),
        l(&[("service.name", "checkout"), ("host.name", "node-1")])
    );
    let sm = &rm.scope_metrics[0];
    assert_eq!(sm.scope.as_ref().unwrap().name, "spanmetricsconnector");
    let names: Vec<(&str, &str)> = sm
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.unit.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("traces.span.metrics.calls", ""),
            ("traces.span.metrics.duration", "ms")
        ]
    );
    let Some(metric::Data::Sum(sum)) = &sm.metrics[0].data else {
        panic!("calls is a sum")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    // A new cumulative series first reports 0, so the backend sees the counter start.
    let get = |status: &str| {
        l(&[
            ("service.name", "checkout"),
            ("span.name", "GET /cart"),
            ("span.kind", "SPAN_KIND_SERVER"),
            ("status.code", status),
        ])
    };
    let select = l(&[
        ("service.name", "checkout"),
        ("span.name", "SELECT"),
        ("span.kind", "SPAN_KIND_CLIENT"),
        ("status.code", "STATUS_CODE_OK"),
    ]);
    let mut expected = vec![
        (get("STATUS_CODE_UNSET"), 0),
        (get("STATUS_CODE_ERROR"), 0),
        (select.clone(), 0),
    ];
    expected.sort();
    assert_eq!(calls(&first), expected);
    // Histograms count from the first flush.
    let unset: Vec<HistogramDataPoint> = histograms(&first)
        .into_iter()
        .filter(|p| labels(&p.attributes) == get("STATUS_CODE_UNSET"))
        .collect();
    assert_eq!(unset.len(), 1);
    let p = &unset[0];
    assert_eq!(p.count, 2);
    assert_eq!(p.sum, Some(10.5));
    assert_eq!(
        p.explicit_bounds,
        [
            2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0,
            5000.0, 10000.0, 15000.0
        ]
    );
    // 3 ms in (2, 4], 7.5 ms in (6, 8].
    let mut buckets = vec![0u64; 17];
    buckets[1] = 1;
    buckets[3] = 1;
    assert_eq!(p.bucket_counts, buckets);
    assert!(p.start_time_unix_nano > 0 && p.time_unix_nano >= p.start_time_unix_nano);
    let instance = p
        .attributes
        .iter()
        .find(|kv| kv.key == INSTANCE_KEY)
        .expect("collector.instance.id");
    assert_eq!(
        format!("{:?}", instance.value).len(),
        format!(
            "{:?}",
            Some(AnyValue {
                value: Some(s("00000000-0000-4000-8000-000000000000"))
            })
        )
        .len()
    );

    // The next flush carries the counts, cumulatively, with the same start times.
    feed(
        &mut c,
        traces(service("checkout"), vec![span("GET /cart", SERVER, 0, 2.0)]),
    );
    let second = flush(&mut c).unwrap();
    let mut expected = vec![
        (get("STATUS_CODE_UNSET"), 3),
        (get("STATUS_CODE_ERROR"), 1),
        (select, 1),
    ];
    expected.sort();
    assert_eq!(calls(&second), expected);
    let p2 = histograms(&second)
        .into_iter()
        .find(|p| labels(&p.attributes) == get("STATUS_CODE_UNSET"))
        .unwrap();
    assert_eq!(p2.count, 3);
    assert_eq!(
        p2.bucket_counts[0], 1,
        "2 ms is in the first bucket: bounds are inclusive"
    );
    assert_eq!(p2.start_time_unix_nano, p.start_time_unix_nano);
    // Nothing new: cumulative series are exported again, unchanged.
    let third = flush(&mut c).unwrap();
    assert_eq!(calls(&third), calls(&second));
    assert_eq!(registry.value("sluice_spanmetrics_spans_total", ""), 5);
    assert_eq!(registry.value("sluice_spanmetrics_series", ""), 3);
}

#[test]
fn dimensions_come_from_the_span_then_the_resource_then_the_default_and_are_omitted_otherwise() {
    let (mut c, _) = connector(
        "dimensions:\n  - name: model_version\n  - name: http.method\n    default: GET\n  - name: region\nexclude_dimensions: [span.kind]\n",
    );
    let mut resource = service("ranker");
    resource.push(kv("region", s("eu-west-1")));
    let mut a = span("rank", SERVER, 0, 5.0);
    a.attrs = vec![kv("model_version", s("v23")), kv("http.method", s("POST"))];
    let mut b = span("rank", SERVER, 0, 5.0);
    b.attrs = vec![kv("region", s("us-east-1"))];
    // An int attribute and the same text as a string are one series, as `AsString` keys it.
    let mut c1 = span("rank", SERVER, 0, 5.0);
    c1.attrs = vec![kv("model_version", any_value::Value::IntValue(7))];
    let mut c2 = span("rank", SERVER, 0, 5.0);
    c2.attrs = vec![kv("model_version", s("7"))];
    feed(&mut c, traces(resource, vec![a, b, c1, c2]));
    flush(&mut c);
    let req = flush(&mut c).unwrap();
    let base = |extra: &[(&str, &str)]| {
        let mut m = l(&[
            ("service.name", "ranker"),
            ("span.name", "rank"),
            ("status.code", "STATUS_CODE_UNSET"),
        ]);
        m.extend(l(extra));
        m
    };
    let mut expected = vec![
        (
            base(&[
                ("model_version", "v23"),
                ("http.method", "POST"),
                ("region", "eu-west-1"),
            ]),
            1,
        ),
        (base(&[("http.method", "GET"), ("region", "us-east-1")]), 1),
        (
            base(&[
                ("model_version", "int:7"),
                ("http.method", "GET"),
                ("region", "eu-west-1"),
            ]),
            2,
        ),
    ];
    expected.sort();
    assert_eq!(calls(&req), expected);
}

#[test]
fn past_the_series_cap_spans_count_into_one_overflow_series_so_totals_stay_right() {
    let (mut c, registry) = connector("aggregation_cardinality_limit: 2\n");
    let names = ["a", "b", "c", "d", "a"];
    let spans = names.iter().map(|n| span(n, SERVER, 0, 1.0)).collect();
    feed(&mut c, traces(service("svc"), spans));
    flush(&mut c);
    let req = flush(&mut c).unwrap();
    let got = calls(&req);
    assert_eq!(got.iter().map(|(_, v)| v).sum::<i64>(), 5);
    assert_eq!(got.len(), 3);
    assert!(got.contains(&(l(&[("otel.metric.overflow", "bool:true")]), 2)));
    assert_eq!(
        registry.value("sluice_spanmetrics_overflow_spans_total", ""),
        2
    );
}

#[test]
fn delta_temporality_exports_only_what_arrived_since_the_last_flush() {
    let (mut c, _) =
        connector("aggregation_temporality: AGGREGATION_TEMPORALITY_DELTA\nnamespace: ''\n");
    feed(
        &mut c,
        traces(
            service("svc"),
            vec![span("x", SERVER, 0, 1.0), span("x", SERVER, 0, 1.0)],
        ),
    );
    let first = flush(&mut c).unwrap();
    let m = &first.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(m[0].name, "calls");
    assert_eq!(m[1].name, "duration");
    let p1 = call_points(&first);
    assert_eq!(p1.len(), 1);
    assert_eq!(p1[0].value, Some(number_data_point::Value::AsInt(2)));
    assert_eq!(histograms(&first)[0].count, 2);
    assert!(flush(&mut c).is_none(), "nothing new, nothing exported");
    feed(
        &mut c,
        traces(service("svc"), vec![span("x", SERVER, 0, 1.0)]),
    );
    let third = flush(&mut c).unwrap();
    let p3 = call_points(&third);
    assert_eq!(p3[0].value, Some(number_data_point::Value::AsInt(1)));
    assert_eq!(histograms(&third)[0].count, 1);
    assert!(p3[0].start_time_unix_nano >= p1[0].time_unix_nano);
}

#[test]
fn exemplars_carry_trace_and_span_ids_up_to_the_limit_per_point_and_are_not_repeated() {
    let (mut c, _) = connector("exemplars:\n  enabled: true\n  max_per_data_point: 2\n");
    let spans = (1..=4)
        .map(|i| {
            let mut sp = span("x", SERVER, 0, f64::from(i));
            sp.trace = i as u8;
            sp
        })
        .collect();
    feed(&mut c, traces(service("svc"), spans));
    let req = flush(&mut c).unwrap();
    let h = &histograms(&req)[0];
    assert_eq!(h.exemplars.len(), 2);
    assert_eq!(h.exemplars[0].trace_id, vec![1u8; 16]);
    assert_eq!(h.exemplars[1].span_id, vec![2u8; 8]);
    assert_eq!(
        h.exemplars[1].value,
        Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(2.0))
    );
    assert_eq!(h.exemplars[0].time_unix_nano, h.time_unix_nano);
    let again = flush(&mut c).unwrap();
    assert!(histograms(&again)[0].exemplars.is_empty());
}

#[test]
fn seconds_custom_buckets_and_exponential_histograms() {
    let (mut c, _) =
        connector("histogram:\n  unit: s\n  explicit:\n    buckets: [100ms, 1s, 2500ms]\n");
    feed(
        &mut c,
        traces(
            service("svc"),
            vec![span("x", SERVER, 0, 50.0), span("x", SERVER, 0, 2000.0)],
        ),
    );
    let req = flush(&mut c).unwrap();
    let h = &histograms(&req)[0];
    assert_eq!(h.explicit_bounds, [0.1, 1.0, 2.5]);
    assert_eq!(h.bucket_counts, [1, 0, 1, 0]);
    assert_eq!(
        req.resource_metrics[0].scope_metrics[0].metrics[1].unit,
        "s"
    );

    let (mut e, _) = connector("histogram:\n  exponential:\n    max_size: 10\n");
    let spans = (1..=100)
        .map(|i| span("x", SERVER, 0, f64::from(i)))
        .collect();
    feed(&mut e, traces(service("svc"), spans));
    let req = flush(&mut e).unwrap();
    let m = &req.resource_metrics[0].scope_metrics[0].metrics[1];
    let Some(metric::Data::ExponentialHistogram(eh)) = &m.data else {
        panic!("exponential histogram expected")
    };
    let p = &eh.data_points[0];
    let buckets = p.positive.as_ref().unwrap();
    assert!(buckets.bucket_counts.len() <= 10);
    assert_eq!(buckets.bucket_counts.iter().sum::<u64>(), 100);
    assert_eq!((p.min, p.max, p.count), (Some(1.0), Some(100.0), 100));
}

#[test]
fn spans_without_service_name_are_skipped_and_counted() {
    let (mut c, registry) = connector("{}");
    feed(
        &mut c,
        traces(
            vec![kv("host.name", s("n"))],
            vec![span("x", SERVER, 0, 1.0)],
        ),
    );
    assert!(flush(&mut c).is_none());
    assert_eq!(
        registry.value("sluice_spanmetrics_spans_skipped_total", "no_service_name"),
        1
    );
}

#[test]
fn resource_key_attributes_group_resources_that_differ_elsewhere() {
    let (mut c, _) = connector("resource_metrics_key_attributes: [service.name]\n");
    let mut r1 = service("svc");
    r1.push(kv("process.pid", s("1")));
    let mut r2 = service("svc");
    r2.push(kv("process.pid", s("2")));
    feed(&mut c, traces(r1, vec![span("x", SERVER, 0, 1.0)]));
    feed(&mut c, traces(r2, vec![span("x", SERVER, 0, 1.0)]));
    flush(&mut c);
    let req = flush(&mut c).unwrap();
    assert_eq!(req.resource_metrics.len(), 1);
    assert_eq!(calls(&req)[0].1, 2);
}

#[test]
fn metrics_expiration_stops_exporting_idle_resources() {
    let (mut c, registry) = connector("metrics_expiration: 1ms\n");
    feed(
        &mut c,
        traces(service("svc"), vec![span("x", SERVER, 0, 1.0)]),
    );
    std::thread::sleep(Duration::from_millis(5));
    assert!(flush(&mut c).is_some(), "exported one last time");
    assert!(flush(&mut c).is_none());
    assert_eq!(registry.value("sluice_spanmetrics_series", ""), 0);
}

#[test]
fn config_errors_name_the_problem() {
    let err = |yaml: &str| {
        let root = node::parse("t.yaml", yaml).unwrap();
        match node::from_node::<SpanMetricsConfig>(&root, "connectors.spanmetrics") {
            Err(e) => e.to_string(),
            Ok(c) => c.validate().unwrap_err(),
        }
    };
    assert!(err("dimensions: [{name: span.name}]").contains("duplicate dimension name span.name"));
    assert!(err("histogram: {unit: h}").contains("unknown Unit"));
    assert!(
        err("histogram: {explicit: {buckets: [1ms]}, exponential: {max_size: 5}}")
            .contains("either `explicit` or `exponential`")
    );
    assert!(err("events: {enabled: true, dimensions: [{name: a}]}").contains("not supported yet"));
    assert!(err("metrics_flush_interval: 0s").contains("should be positive"));
    assert!(err("dimension: []").contains("unknown key"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (mut c, _) = connector("dimensions: [{name: a}]\nexemplars: {enabled: true}\n");
        let batch = Batch::new(Signal::Traces, bytes.into(), 1);
        let mut out = Vec::new();
        c.process(batch, Instant::now(), &mut out);
        c.flush(Instant::now(), &mut out);
    }
}

#[test]
fn integers_key_as_their_decimal_text() {
    for v in [0i64, 7, -7, 200, i64::MAX, i64::MIN] {
        assert_eq!(decimal(v, &mut [0; 20]), v.to_string().as_bytes());
    }
}

#[test]
fn dimensions_cache_size_caps_series_when_no_cardinality_limit_is_set() {
    let (mut c, _) = connector("dimensions_cache_size: 3\n");
    let spans = (0..10)
        .map(|i| span(["a", "b", "c", "d", "e"][i % 5], SERVER, 0, 1.0))
        .collect();
    feed(&mut c, traces(service("svc"), spans));
    flush(&mut c);
    let got = calls(&flush(&mut c).unwrap());
    assert_eq!(
        got.len(),
        4,
        "three series and the overflow series: {got:?}"
    );
    assert!(got.contains(&(l(&[("otel.metric.overflow", "bool:true")]), 4)));
    assert_eq!(got.iter().map(|(_, v)| v).sum::<i64>(), 10);
}
