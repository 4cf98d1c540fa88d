//! Re-aggregation is where double counting hides: these tests feed series whose labels are
//! dropped through several batches and flushes and check every emitted point.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;

use super::aggregate::{GaugeAggregation, OVERFLOW_ATTRIBUTE};
use super::*;

const S: u64 = 1_000_000_000;

pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| kv(k, v)).collect()
}

fn metrics_batch(resource: &[(&str, &str)], metrics: Vec<Metric>) -> Batch {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs(resource),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Signal::Metrics, request.encode_to_vec().into()).unwrap()
}

fn number(labels: &[(&str, &str)], start: u64, time: u64, value: i64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs(labels),
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    }
}

fn sum(name: &str, cumulative: bool, points: Vec<NumberDataPoint>) -> Metric {
    let temporality = if cumulative {
        AggregationTemporality::Cumulative
    } else {
        AggregationTemporality::Delta
    };
    Metric {
        name: name.to_string(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn histogram(
    labels: &[(&str, &str)],
    start: u64,
    time: u64,
    bounds: &[f64],
    buckets: &[u64],
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attrs(labels),
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: buckets.iter().sum(),
        sum: Some(buckets.iter().sum::<u64>() as f64 * 1.5),
        bucket_counts: buckets.to_vec(),
        explicit_bounds: bounds.to_vec(),
        ..Default::default()
    }
}

fn histograms(name: &str, cumulative: bool, points: Vec<HistogramDataPoint>) -> Metric {
    let temporality = if cumulative {
        AggregationTemporality::Cumulative
    } else {
        AggregationTemporality::Delta
    };
    Metric {
        name: name.to_string(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temporality as i32,
        })),
        ..Default::default()
    }
}

fn config(drop: &[&str]) -> CardinalityConfig {
    CardinalityConfig {
        drop_labels: drop.iter().map(|s| s.to_string()).collect(),
        flush_interval: Duration::ZERO,
        ..Default::default()
    }
}

fn processor(config: CardinalityConfig) -> (CardinalityProcessor, Registry) {
    config.validate().unwrap();
    let registry = Registry::default();
    (
        CardinalityProcessor::new(config, "cardinality", &registry),
        registry,
    )
}

/// One emitted data point, flattened.
#[derive(Clone, Debug, PartialEq)]
struct Out {
    metric: String,
    resource: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    start: u64,
    time: u64,
    value: f64,
    buckets: Vec<u64>,
    bounds: Vec<f64>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn map(a: &[KeyValue]) -> BTreeMap<String, String> {
    a.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn decode(out: &[Batch]) -> Vec<Out> {
    let mut points = Vec::new();
    for b in out {
        assert_eq!(b.signal, Signal::Metrics);
        let request = ExportMetricsServiceRequest::decode(b.to_bytes()).unwrap();
        // Written without message values: it must be what prost writes.
        assert_eq!(request.encode_to_vec(), b.to_bytes().to_vec());
        let mut items = 0;
        for rm in &request.resource_metrics {
            let resource = map(&rm.resource.clone().unwrap_or_default().attributes);
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let base = |labels: &[KeyValue], start, time| Out {
                        metric: m.name.clone(),
                        resource: resource.clone(),
                        labels: map(labels),
                        start,
                        time,
                        value: 0.0,
                        buckets: Vec::new(),
                        bounds: Vec::new(),
                    };
                    let numbers = match &m.data {
                        Some(metric::Data::Sum(s)) => s.data_points.clone(),
                        Some(metric::Data::Gauge(g)) => g.data_points.clone(),
                        _ => Vec::new(),
                    };
                    for p in numbers {
                        let value = match p.value {
                            Some(number_data_point::Value::AsInt(i)) => i as f64,
                            Some(number_data_point::Value::AsDouble(d)) => d,
                            None => f64::NAN,
                        };
                        points.push(Out {
                            value,
                            ..base(&p.attributes, p.start_time_unix_nano, p.time_unix_nano)
                        });
                    }
                    if let Some(metric::Data::Histogram(h)) = &m.data {
                        for p in &h.data_points {
                            points.push(Out {
                                value: p.count as f64,
                                buckets: p.bucket_counts.clone(),
                                bounds: p.explicit_bounds.clone(),
                                ..base(&p.attributes, p.start_time_unix_nano, p.time_unix_nano)
                            });
                        }
                    }
                    if let Some(metric::Data::Summary(s)) = &m.data {
                        for p in &s.data_points {
                            points.push(Out {
                                value: p.count as f64,
                                ..base(&p.attributes, p.start_time_unix_nano, p.time_unix_nano)
                            });
                        }
                    }
                }
            }
        }
        items += points.len();
        assert!(items >= b.items);
    }
    points
}

fn run(p: &mut CardinalityProcessor, batch: Batch, now: Instant) -> Vec<Out> {
    let mut out = Vec::new();
    p.process(batch, now, &mut out);
    decode(&out)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn cumulative_counters_collapse_into_their_sum_at_every_flush() {
    let (mut p, registry) = processor(config(&["user_id"]));
    let now = Instant::now();
    let mut values = (0, 0);
    for step in 1..=5u64 {
        values.0 += 3;
        values.1 += 10;
        let batch = metrics_batch(
            &[("service.name", "api")],
            vec![sum(
                "requests",
                true,
                vec![
                    number(
                        &[("user_id", "a"), ("route", "/x")],
                        S,
                        step * 10 * S,
                        values.0,
                    ),
                    number(
                        &[("user_id", "b"), ("route", "/x")],
                        S,
                        step * 10 * S,
                        values.1,
                    ),
                ],
            )],
        );
        let out = run(&mut p, batch, now + Duration::from_secs(step * 10));
        assert_eq!(
            out.len(),
            1,
            "one point per output series per flush: {out:?}"
        );
        assert_eq!(out[0].labels, labels(&[("route", "/x")]));
        assert_eq!(out[0].resource, labels(&[("service.name", "api")]));
        assert_eq!(out[0].value, (values.0 + values.1) as f64);
        assert_eq!(out[0].start, S, "start time stays put");
        assert_eq!(out[0].time, step * 10 * S);
    }
    assert_eq!(
        registry.value("sluice_processor_cardinality_labels_dropped_total", ""),
        10
    );
    assert_eq!(
        registry.value("sluice_processor_cardinality_active_series", ""),
        1
    );
}

#[test]
fn sources_in_separate_batches_are_still_one_point_per_flush() {
    let mut c = config(&["user_id"]);
    c.flush_interval = Duration::from_secs(10);
    let (mut p, _) = processor(c);
    let now = Instant::now();
    let mut out = Vec::new();
    let a = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![number(&[("user_id", "a")], S, 5 * S, 4)],
        )],
    );
    let b = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![number(&[("user_id", "b")], S, 6 * S, 6)],
        )],
    );
    p.process(a, now, &mut out);
    p.process(b, now + Duration::from_secs(1), &mut out);
    assert!(out.is_empty(), "nothing before the flush interval");
    assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(10)));
    p.tick(now + Duration::from_secs(9), &mut out);
    assert!(out.is_empty());
    p.tick(now + Duration::from_secs(10), &mut out);
    let points = decode(&out);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].value, 10.0);
    assert_eq!(points[0].time, 6 * S, "timestamp of the latest input");
    assert_eq!(p.next_deadline(), None, "nothing pending");
}

#[test]
fn a_source_that_vanishes_does_not_decrease_the_output() {
    let (mut p, _) = processor(config(&["user_id"]));
    let now = Instant::now();
    let both = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![
                number(&[("user_id", "a")], S, 10 * S, 100),
                number(&[("user_id", "b")], S, 10 * S, 50),
            ],
        )],
    );
    assert_eq!(run(&mut p, both, now)[0].value, 150.0);
    // b disappears; a grows by 1.
    let only_a = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![number(&[("user_id", "a")], S, 20 * S, 101)],
        )],
    );
    let out = run(&mut p, only_a, now + Duration::from_secs(10));
    assert_eq!(out[0].value, 151.0);
    assert_eq!(out[0].start, S);
}

#[test]
fn a_source_counter_reset_keeps_the_output_monotonic() {
    let (mut p, _) = processor(config(&["user_id"]));
    let now = Instant::now();
    let step = |a: i64, a_start: u64, b: i64, t: u64| {
        metrics_batch(
            &[],
            vec![sum(
                "c",
                true,
                vec![
                    number(&[("user_id", "a")], a_start, t * S, a),
                    number(&[("user_id", "b")], S, t * S, b),
                ],
            )],
        )
    };
    assert_eq!(run(&mut p, step(40, S, 10, 10), now)[0].value, 50.0);
    // a's counter resets without a new start time (value goes down): its new value is
    // its increment since the reset.
    assert_eq!(run(&mut p, step(5, S, 12, 20), now)[0].value, 57.0);
    assert_eq!(run(&mut p, step(8, S, 12, 30), now)[0].value, 60.0);
    // a restarts with a new start time.
    assert_eq!(run(&mut p, step(2, 25 * S, 13, 40), now)[0].value, 63.0);
    let out = run(&mut p, step(4, 25 * S, 13, 50), now);
    assert_eq!(out[0].value, 65.0);
    assert_eq!(out[0].start, S);
}

#[test]
fn repeated_and_out_of_order_points_add_nothing() {
    let (mut p, _) = processor(config(&["user_id"]));
    let now = Instant::now();
    let point = |v: i64, t: u64| {
        metrics_batch(
            &[],
            vec![sum(
                "c",
                true,
                vec![number(&[("user_id", "a")], S, t * S, v)],
            )],
        )
    };
    assert_eq!(run(&mut p, point(10, 10), now)[0].value, 10.0);
    // A retried (duplicate) request and an older point change nothing and emit nothing.
    assert!(run(&mut p, point(10, 10), now).is_empty());
    assert!(run(&mut p, point(7, 5), now).is_empty());
    assert_eq!(run(&mut p, point(12, 20), now)[0].value, 12.0);
}

#[test]
fn a_series_joining_later_counts_from_its_start_when_that_is_inside_the_output() {
    let (mut p, _) = processor(config(&["user_id"]));
    let now = Instant::now();
    let a = |v: i64, t: u64| number(&[("user_id", "a")], 10 * S, t * S, v);
    run(
        &mut p,
        metrics_batch(&[], vec![sum("c", true, vec![a(5, 20)])]),
        now,
    );
    // b started after the output's start: all of its count is new.
    let b_new = number(&[("user_id", "b")], 15 * S, 30 * S, 7);
    let out = run(
        &mut p,
        metrics_batch(&[], vec![sum("c", true, vec![a(5, 30), b_new])]),
        now,
    );
    assert_eq!(out[0].value, 12.0);
    // c started before the output's start (its history predates what we counted): only
    // its later increments count.
    let c_old = |v: i64, t: u64| number(&[("user_id", "c")], S, t * S, v);
    let out = run(
        &mut p,
        metrics_batch(&[], vec![sum("c", true, vec![c_old(1000, 40)])]),
        now,
    );
    assert_eq!(out[0].value, 12.0);
    let out = run(
        &mut p,
        metrics_batch(&[], vec![sum("c", true, vec![c_old(1003, 50)])]),
        now,
    );
    assert_eq!(out[0].value, 15.0);
}

#[test]
fn delta_sums_add_within_a_flush_and_chain_their_intervals() {
    let mut c = config(&["user_id"]);
    c.flush_interval = Duration::from_secs(10);
    let (mut p, _) = processor(c);
    let now = Instant::now();
    let mut out = Vec::new();
    for (user, start, time, v) in [("a", 0, 5, 1), ("b", 0, 5, 2), ("a", 5, 8, 4)] {
        let point = number(&[("user_id", user)], start * S, time * S, v);
        p.process(
            metrics_batch(&[], vec![sum("d", false, vec![point])]),
            now,
            &mut out,
        );
    }
    p.tick(now + Duration::from_secs(10), &mut out);
    let first = decode(&out);
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].value, first[0].start, first[0].time),
        (7.0, 0, 8 * S)
    );
    out.clear();
    let later = number(&[("user_id", "b")], 5 * S, 15 * S, 3);
    p.process(
        metrics_batch(&[], vec![sum("d", false, vec![later])]),
        now,
        &mut out,
    );
    p.tick(now + Duration::from_secs(20), &mut out);
    let second = decode(&out);
    assert_eq!(
        (second[0].value, second[0].start, second[0].time),
        (3.0, 8 * S, 15 * S),
        "the next delta starts where the last one ended"
    );
}

#[test]
fn gauges_combine_per_gauge_aggregation() {
    for (aggregation, expected) in [
        (GaugeAggregation::Last, 30.0),
        (GaugeAggregation::Sum, 70.0),
        (GaugeAggregation::Max, 40.0),
        (GaugeAggregation::Min, 30.0),
    ] {
        let mut c = config(&["pod"]);
        c.gauge_aggregation = aggregation;
        c.flush_interval = Duration::from_secs(10);
        let (mut p, _) = processor(c);
        let now = Instant::now();
        let mut out = Vec::new();
        // pod a reports twice: only its latest value (40, not 100) counts.
        let points = vec![
            number(&[("pod", "a")], 0, 10 * S, 100),
            number(&[("pod", "a")], 0, 11 * S, 40),
            number(&[("pod", "b")], 0, 12 * S, 30),
        ];
        p.process(
            metrics_batch(&[], vec![gauge("mem", points)]),
            now,
            &mut out,
        );
        p.flush(&mut out);
        let points = decode(&out);
        assert_eq!(points.len(), 1, "{aggregation:?}");
        assert_eq!(points[0].value, expected, "{aggregation:?}");
        assert_eq!(points[0].time, 12 * S);
    }
}

#[test]
fn histograms_with_equal_bounds_merge_bucket_wise() {
    let (mut p, _) = processor(config(&["user_id"]));
    let now = Instant::now();
    let bounds = [1.0, 5.0];
    let batch = |t: u64, a: [u64; 3], b: [u64; 3]| {
        metrics_batch(
            &[],
            vec![histograms(
                "latency",
                true,
                vec![
                    histogram(&[("user_id", "a")], S, t * S, &bounds, &a),
                    histogram(&[("user_id", "b")], S, t * S, &bounds, &b),
                ],
            )],
        )
    };
    let out = run(&mut p, batch(10, [1, 2, 3], [10, 0, 1]), now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].buckets, vec![11, 2, 4]);
    assert_eq!(out[0].value, 17.0);
    // b vanishes, a resets (count goes down): output keeps growing.
    let only_a = metrics_batch(
        &[],
        vec![histograms(
            "latency",
            true,
            vec![histogram(
                &[("user_id", "a")],
                S,
                20 * S,
                &bounds,
                &[1, 0, 0],
            )],
        )],
    );
    let out = run(&mut p, only_a, now);
    assert_eq!(out[0].buckets, vec![12, 2, 4]);
    assert_eq!(out[0].start, S);
}

#[test]
fn histograms_with_other_bounds_keep_their_labels_and_are_counted() {
    let (mut p, registry) = processor(config(&["user_id"]));
    let now = Instant::now();
    let batch = metrics_batch(
        &[],
        vec![histograms(
            "latency",
            true,
            vec![
                histogram(&[("user_id", "a")], S, 10 * S, &[1.0], &[1, 1]),
                histogram(&[("user_id", "b")], S, 10 * S, &[2.0], &[5, 5]),
            ],
        )],
    );
    let mut out = run(&mut p, batch, now);
    out.sort_by(|x, y| x.value.total_cmp(&y.value));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].labels, labels(&[]));
    assert_eq!(out[0].buckets, vec![1, 1]);
    assert_eq!(out[1].labels, labels(&[("user_id", "b")]));
    assert_eq!(out[1].bounds, vec![2.0]);
    assert_eq!(
        registry.value(
            "sluice_processor_cardinality_histogram_bounds_mismatch_total",
            ""
        ),
        1
    );
}

#[test]
fn delta_histograms_merge_and_reset_each_flush() {
    let mut c = config(&["user_id"]);
    c.flush_interval = Duration::from_secs(10);
    let (mut p, _) = processor(c);
    let now = Instant::now();
    let mut out = Vec::new();
    let bounds = [1.0];
    let points = vec![
        histogram(&[("user_id", "a")], 0, 5 * S, &bounds, &[1, 2]),
        histogram(&[("user_id", "b")], 0, 6 * S, &bounds, &[3, 4]),
    ];
    p.process(
        metrics_batch(&[], vec![histograms("h", false, points)]),
        now,
        &mut out,
    );
    p.flush(&mut out);
    let first = decode(&out);
    assert_eq!(first[0].buckets, vec![4, 6]);
    out.clear();
    let points = vec![histogram(
        &[("user_id", "a")],
        5 * S,
        15 * S,
        &bounds,
        &[0, 1],
    )];
    p.process(
        metrics_batch(&[], vec![histograms("h", false, points)]),
        now,
        &mut out,
    );
    p.flush(&mut out);
    let second = decode(&out);
    assert_eq!(second[0].buckets, vec![0, 1]);
    assert_eq!(second[0].start, 6 * S);
}

#[test]
fn summaries_losing_labels_are_dropped_and_counted_others_pass() {
    let (mut p, registry) = processor(config(&["user_id"]));
    let summary = |labels: &[(&str, &str)]| Metric {
        name: "rpc".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: attrs(labels),
                count: 3,
                time_unix_nano: 10 * S,
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let batch = metrics_batch(
        &[],
        vec![summary(&[("user_id", "a")]), summary(&[("route", "/")])],
    );
    let out = run(&mut p, batch, Instant::now());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].labels, labels(&[("route", "/")]));
    assert_eq!(
        registry.value(
            "sluice_processor_cardinality_points_dropped_total",
            "reason=\"summary\""
        ),
        1
    );
}

#[test]
fn over_the_series_limit_series_fold_into_one_overflow_series_with_the_totals() {
    let mut c = config(&[]);
    c.max_series_per_metric = 3;
    let (mut p, registry) = processor(c);
    let now = Instant::now();
    let users = ["a", "b", "c", "d", "e"];
    let batch = |t: u64, v: i64| {
        let points = users
            .iter()
            .map(|u| number(&[("user_id", u)], S, t * S, v))
            .collect();
        metrics_batch(&[], vec![sum("c", true, points)])
    };
    let out = run(&mut p, batch(10, 1), now);
    assert_eq!(out.len(), 3, "two series and the overflow series: {out:?}");
    let overflow = labels(&[(OVERFLOW_ATTRIBUTE, "true")]);
    let total: f64 = out.iter().map(|o| o.value).sum();
    assert_eq!(total, 5.0);
    assert_eq!(
        out.iter().find(|o| o.labels == overflow).unwrap().value,
        3.0
    );
    let out = run(&mut p, batch(20, 4), now);
    assert_eq!(out.iter().map(|o| o.value).sum::<f64>(), 20.0);
    assert_eq!(
        registry.value("sluice_processor_cardinality_series_overflowed_total", ""),
        3
    );
}

#[test]
fn a_label_over_its_value_limit_is_dropped_for_new_series_until_the_window_passes() {
    let mut c = config(&[]);
    c.max_values_per_label = 3;
    c.window = Duration::from_secs(60);
    c.exempt_labels = vec!["route".into()];
    let (mut p, registry) = processor(c);
    let start = Instant::now();
    let point = |user: &str, route: &str, t: u64| {
        metrics_batch(
            &[],
            vec![sum(
                "c",
                true,
                vec![number(&[("user_id", user), ("route", route)], S, t * S, 1)],
            )],
        )
    };
    for (i, user) in ["a", "b", "c"].iter().enumerate() {
        let out = run(
            &mut p,
            point(user, "/", 10),
            start + Duration::from_secs(i as u64),
        );
        assert_eq!(out[0].labels, labels(&[("user_id", user), ("route", "/")]));
    }
    // The fourth value trips the limit: that series loses user_id; routes are exempt.
    for (i, route) in ["/1", "/2", "/3", "/4"].iter().enumerate() {
        let out = run(
            &mut p,
            point("d", route, 10),
            start + Duration::from_secs(5 + i as u64),
        );
        assert_eq!(out[0].labels, labels(&[("route", route)]));
    }
    assert_eq!(
        registry.value(
            "sluice_processor_cardinality_label_value_limit_exceeded_total",
            ""
        ),
        1
    );
    // Series that existed keep their labels (moving them would count their history twice).
    let out = run(&mut p, point("a", "/", 20), start + Duration::from_secs(10));
    assert_eq!(out[0].labels, labels(&[("user_id", "a"), ("route", "/")]));
    // A window later with few values, the label is kept again.
    let later = start + Duration::from_secs(5 + 61);
    let out = run(&mut p, point("e", "/", 30), later);
    assert_eq!(out[0].labels, labels(&[("user_id", "e"), ("route", "/")]));
}

#[test]
fn a_point_never_repeats_a_series_timestamp() {
    let (mut p, _) = processor(config(&["user_id"]));
    let now = Instant::now();
    let a = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![number(&[("user_id", "a")], S, 10 * S, 1)],
        )],
    );
    let b = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![number(&[("user_id", "b")], S, 10 * S, 2)],
        )],
    );
    let first = run(&mut p, a, now);
    let second = run(&mut p, b, now);
    assert_eq!(first[0].time, 10 * S);
    assert_eq!(
        second[0].time,
        10 * S + 1_000_000,
        "moved on by a millisecond"
    );
    assert_eq!(second[0].value, 3.0);
}

#[test]
fn idle_series_are_forgotten_after_the_window() {
    let mut c = config(&["user_id"]);
    c.window = Duration::from_secs(60);
    let (mut p, registry) = processor(c);
    let now = Instant::now();
    for (i, user) in ["a", "b", "c"].iter().enumerate() {
        let batch = metrics_batch(
            &[],
            vec![sum(
                "c",
                true,
                vec![number(&[("user_id", user)], S, 10 * S, 1)],
            )],
        );
        run(&mut p, batch, now + Duration::from_secs(i as u64));
    }
    assert_eq!(p.engine().counts(), (3, 1, 1));
    let other = metrics_batch(&[], vec![gauge("g", vec![number(&[], 0, 100 * S, 1)])]);
    run(&mut p, other, now + Duration::from_secs(100));
    assert_eq!(p.engine().counts(), (1, 1, 1), "only the gauge is left");
    assert_eq!(
        registry.value("sluice_processor_cardinality_source_series", ""),
        1
    );
}

#[test]
fn dropped_resource_attributes_merge_series_across_resources() {
    let (mut p, _) = processor(config(&["k8s.pod.uid"]));
    let mut out = Vec::new();
    let now = Instant::now();
    for (pod, v) in [("p1", 3), ("p2", 4)] {
        let batch = metrics_batch(
            &[("service.name", "api"), ("k8s.pod.uid", pod)],
            vec![sum("c", true, vec![number(&[], S, 10 * S, v)])],
        );
        p.process(batch, now, &mut out);
    }
    let points = decode(&out);
    assert_eq!(points.last().unwrap().value, 7.0);
    assert_eq!(
        points.last().unwrap().resource,
        labels(&[("service.name", "api")])
    );
}

#[test]
fn patterns_and_exemptions_apply_to_span_and_log_attributes() {
    let mut c = config(&["user_id"]);
    c.drop_label_patterns = vec![".*_uuid$".into()];
    c.exempt_labels = vec!["keep_uuid".into()];
    let (mut p, registry) = processor(c);
    let spans = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: attrs(&[("host_uuid", "x"), ("service.name", "s")]),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "op".into(),
                    attributes: attrs(&[
                        ("user_id", "1"),
                        ("order_uuid", "2"),
                        ("keep_uuid", "3"),
                        ("route", "/"),
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut out = Vec::new();
    let batch = Batch::from_encoded(Signal::Traces, spans.encode_to_vec().into()).unwrap();
    p.process(batch, Instant::now(), &mut out);
    let got = ExportTraceServiceRequest::decode(out[0].to_bytes()).unwrap();
    let rs = &got.resource_spans[0];
    assert_eq!(
        map(&rs.resource.as_ref().unwrap().attributes),
        labels(&[("service.name", "s")])
    );
    assert_eq!(
        map(&rs.scope_spans[0].spans[0].attributes),
        labels(&[("keep_uuid", "3"), ("route", "/")])
    );
    assert_eq!(out[0].items, 1);

    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    attributes: attrs(&[("user_id", "1"), ("level", "info")]),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut out = Vec::new();
    let batch = Batch::from_encoded(Signal::Logs, logs.encode_to_vec().into()).unwrap();
    p.process(batch, Instant::now(), &mut out);
    let got = ExportLogsServiceRequest::decode(out[0].to_bytes()).unwrap();
    assert_eq!(
        map(&got.resource_logs[0].scope_logs[0].log_records[0].attributes),
        labels(&[("level", "info")])
    );
    assert_eq!(
        registry.value(
            "sluice_processor_cardinality_attributes_removed_total",
            "signal=\"traces\""
        ),
        3
    );
}

#[test]
fn config_rejects_bad_patterns_and_contradictions() {
    let mut c = config(&["a"]);
    c.drop_label_patterns = vec!["(".into()];
    assert!(c.validate().unwrap_err().contains("invalid pattern"));
    let mut c = config(&["a"]);
    c.exempt_labels = vec!["a".into()];
    assert!(
        c.validate()
            .unwrap_err()
            .contains("both in drop_labels and in exempt_labels")
    );
}

/// One step of a random workload over counters labelled `user` (dropped) and `route`.
#[derive(Clone, Debug)]
enum Step {
    /// Source (user, route) grows by n.
    Add(usize, usize, i64),
    /// Source restarts (new start time) at value n.
    Restart(usize, usize, i64),
    /// The flush interval passes.
    Tick,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize, 0..2usize, 0..20i64).prop_map(|(u, r, n)| Step::Add(u, r, n)),
        1 => (0..4usize, 0..2usize, 0..20i64).prop_map(|(u, r, n)| Step::Restart(u, r, n)),
        2 => Just(Step::Tick),
    ]
}

proptest! {
    /// Whatever the interleaving of increments, restarts, batches and flushes: per remaining
    /// label set the output never decreases, never repeats a timestamp, and in the end equals
    /// the sum of every source's increments (a restart counts its new value from 0). With a
    /// series limit, the sum over all output series equals the sum over all sources.
    #[test]
    fn output_increments_equal_input_increments(
        steps in proptest::collection::vec(step(), 1..60),
        limit in prop_oneof![Just(0usize), Just(2usize)],
    ) {
        let mut c = config(&["user"]);
        c.flush_interval = Duration::from_secs(10);
        c.max_series_per_metric = limit;
        let (mut p, _) = processor(c);
        let start = Instant::now();
        let mut now = start;
        let mut t = 100u64;
        // (start, value) per source
        let mut sources: HashMap<(usize, usize), (u64, i64)> = HashMap::new();
        let mut expected: HashMap<usize, i64> = HashMap::new();
        let mut out = Vec::new();
        for s in &steps {
            t += 1;
            now += Duration::from_millis(1500);
            let (key, point) = match *s {
                Step::Tick => {
                    now += Duration::from_secs(10);
                    p.tick(now, &mut out);
                    continue;
                }
                Step::Add(u, r, n) => {
                    let e = sources.entry((u, r)).or_insert((S, 0));
                    e.1 += n;
                    *expected.entry(r).or_default() += n;
                    ((u, r), *e)
                }
                Step::Restart(u, r, n) => {
                    // A source is first seen with the common start time; only a known one
                    // restarts.
                    let e = sources.entry((u, r)).or_insert((S, 0));
                    if e.1 == 0 && e.0 == S {
                        e.1 = n;
                    } else {
                        *e = (t * S, n);
                    }
                    *expected.entry(r).or_default() += n;
                    ((u, r), *e)
                }
            };
            let user = key.0.to_string();
            let route = key.1.to_string();
            let point = number(&[("user", &user), ("route", &route)], point.0, t * S, point.1);
            p.process(metrics_batch(&[], vec![sum("c", true, vec![point])]), now, &mut out);
        }
        p.flush(&mut out);
        let points = decode(&out);
        let mut last: HashMap<BTreeMap<String, String>, (u64, f64)> = HashMap::new();
        for o in &points {
            if let Some((time, value)) = last.get(&o.labels) {
                prop_assert!(o.time / 1_000_000 > time / 1_000_000, "repeated timestamp: {o:?}");
                prop_assert!(o.value >= *value, "output decreased: {o:?}");
            }
            prop_assert_eq!(o.start, S);
            last.insert(o.labels.clone(), (o.time, o.value));
        }
        if limit == 0 {
            for (route, total) in &expected {
                let key = labels(&[("route", &route.to_string())]);
                prop_assert_eq!(last.get(&key).map(|x| x.1), Some(*total as f64));
            }
        }
        let all: f64 = last.values().map(|x| x.1).sum();
        prop_assert_eq!(all, expected.values().sum::<i64>() as f64);
    }
}

#[test]
fn a_point_that_cannot_be_read_is_dropped_and_counted_and_the_rest_aggregate() {
    let (mut p, registry) = processor(config(&["user_id"]));
    let points = vec![
        number(&[("user_id", "a"), ("route", "/")], S, 10 * S, 2),
        number(&[("user_id", "b"), ("route", "/")], S, 10 * S, 3),
        number(&[("user_id", "c"), ("route", "PLACEHOLDER")], S, 10 * S, 5),
    ];
    let batch = metrics_batch(&[], vec![sum("c", true, points)]);
    // The third point's value becomes invalid UTF-8, which only decoding notices.
    let mut bytes = batch.to_bytes().to_vec();
    let at = bytes.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
    bytes[at] = 0xff;
    let batch = Batch::from_encoded(Signal::Metrics, bytes.into()).unwrap();
    let out = run(&mut p, batch, Instant::now());
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].labels, labels(&[("route", "/")]));
    assert_eq!(out[0].value, 5.0);
    assert_eq!(
        registry.value(
            "sluice_processor_cardinality_points_dropped_total",
            "reason=\"malformed\""
        ),
        1
    );
}

#[test]
fn the_same_series_with_its_attributes_in_another_order_is_one_source() {
    let (mut p, _registry) = processor(config(&["user_id"]));
    let now = Instant::now();
    let first = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![number(&[("route", "/"), ("user_id", "a")], S, 10 * S, 2)],
        )],
    );
    let second = metrics_batch(
        &[],
        vec![sum(
            "c",
            true,
            vec![number(&[("user_id", "a"), ("route", "/")], S, 20 * S, 7)],
        )],
    );
    assert_eq!(run(&mut p, first, now)[0].value, 2.0);
    // Read as a second source, its whole value would be added again (9 + 7).
    assert_eq!(run(&mut p, second, now)[0].value, 7.0);
    assert_eq!(p.engine().counts().0, 1);
}

#[test]
fn emitted_metrics_keep_schema_urls_metadata_int_values_and_histogram_extremes() {
    let (mut p, _registry) = processor(config(&["user_id"]));
    let mut delta = histogram(&[("user_id", "a")], S, 10 * S, &[1.0], &[2, 1]);
    delta.min = Some(0.25);
    delta.max = Some(4.0);
    let mut with_metadata = gauge("g", vec![number(&[("user_id", "a")], 0, 10 * S, -3)]);
    with_metadata.metadata = vec![kv("origin", "test")];
    with_metadata.unit = "By".into();
    with_metadata.description = "a gauge".into();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs(&[("service.name", "api")]),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![histograms("h", false, vec![delta]), with_metadata],
                schema_url: "https://opentelemetry.io/schemas/1.1.0".into(),
                ..Default::default()
            }],
            schema_url: "https://opentelemetry.io/schemas/1.2.0".into(),
        }],
    };
    let batch = Batch::from_encoded(Signal::Metrics, request.encode_to_vec().into()).unwrap();
    let mut out = Vec::new();
    p.process(batch, Instant::now(), &mut out);
    decode(&out); // checks the encoding is prost's
    let got = ExportMetricsServiceRequest::decode(out[0].to_bytes()).unwrap();
    let rm = &got.resource_metrics[0];
    assert_eq!(rm.schema_url, "https://opentelemetry.io/schemas/1.2.0");
    assert_eq!(
        rm.scope_metrics[0].schema_url,
        "https://opentelemetry.io/schemas/1.1.0"
    );
    let metrics = &rm.scope_metrics[0].metrics;
    let Some(metric::Data::Histogram(h)) = &metrics[0].data else {
        panic!("{:?}", metrics[0]);
    };
    assert_eq!(
        h.aggregation_temporality,
        AggregationTemporality::Delta as i32
    );
    assert_eq!(
        (h.data_points[0].min, h.data_points[0].max),
        (Some(0.25), Some(4.0))
    );
    assert_eq!(h.data_points[0].bucket_counts, vec![2, 1]);
    assert_eq!(metrics[1].metadata, vec![kv("origin", "test")]);
    assert_eq!(
        (metrics[1].unit.as_str(), metrics[1].description.as_str()),
        ("By", "a gauge")
    );
    let Some(metric::Data::Gauge(g)) = &metrics[1].data else {
        panic!("{:?}", metrics[1]);
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsInt(-3))
    );
    assert!(g.data_points[0].attributes.is_empty());
}

#[test]
fn a_value_carried_by_a_live_series_keeps_counting_past_the_window() {
    let mut c = config(&[]);
    c.max_values_per_label = 2;
    c.window = Duration::from_secs(10);
    let (mut p, registry) = processor(c);
    let start = Instant::now();
    let point = |user: &str, t: u64| {
        metrics_batch(
            &[],
            vec![sum(
                "c",
                true,
                vec![number(&[("user_id", user)], S, t * S, 1)],
            )],
        )
    };
    // `a` is reported every second for 25 s, more than twice the window.
    for t in 0..25 {
        run(&mut p, point("a", t + 1), start + Duration::from_secs(t));
    }
    // With `a` still counted, `b` and `c` make three values: over the limit of two.
    run(&mut p, point("b", 30), start + Duration::from_secs(25));
    let out = run(
        &mut p,
        point("c", 30),
        start + Duration::from_millis(25_500),
    );
    assert_eq!(out[0].labels, labels(&[]));
    assert_eq!(
        registry.value(
            "sluice_processor_cardinality_label_value_limit_exceeded_total",
            ""
        ),
        1
    );
}
