use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric, number_data_point};
use prost::Message;

use super::*;
use crate::receivers::prometheus::config::PrometheusReceiverConfig;
use crate::receivers::prometheus::parser::Format;

fn job(extra: &str) -> Job {
    let yaml = format!(
        "config:\n  scrape_configs:\n    - job_name: app\n      static_configs: [{{targets: ['10.0.0.1:9100']}}]\n{extra}"
    );
    let node = crate::config::node::parse("t.yaml", &yaml).unwrap();
    let c: PrometheusReceiverConfig = crate::config::node::from_node(&node, "r").unwrap();
    c.jobs().unwrap().remove(0)
}

fn target() -> Target {
    Target {
        labels: vec![
            ("instance".into(), "10.0.0.1:9100".into()),
            ("job".into(), "app".into()),
            ("zone".into(), "a".into()),
        ],
        scheme: "http".into(),
    }
}

/// A scrape's request, decoded to be looked at.
struct Decoded {
    request: ExportMetricsServiceRequest,
    points: usize,
}

fn decoded(b: Built) -> Decoded {
    Decoded {
        request: ExportMetricsServiceRequest::decode(b.encoded.as_slice()).unwrap(),
        points: b.points,
    }
}

fn scrape(state: &mut TargetState, job: &Job, text: &str, format: Format, ms: i64) -> Decoded {
    decoded(
        state
            .scraped(job, &target(), text, format, ms, &|| 0.01)
            .unwrap()
            .finish(),
    )
}

fn metrics(b: &Decoded) -> &[Metric] {
    &b.request.resource_metrics[0].scope_metrics[0].metrics
}

fn find<'a>(b: &'a Decoded, name: &str) -> &'a Metric {
    metrics(b)
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn attr(kvs: &[KeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            _ => None,
        })
}

fn sum_points(m: &Metric) -> &[NumberDataPoint] {
    match &m.data {
        Some(metric::Data::Sum(s)) => {
            assert!(s.is_monotonic);
            assert_eq!(s.aggregation_temporality, 2);
            &s.data_points
        }
        other => panic!("{} is not a sum: {other:?}", m.name),
    }
}

fn gauge_points(m: &Metric) -> &[NumberDataPoint] {
    match &m.data {
        Some(metric::Data::Gauge(g)) => &g.data_points,
        other => panic!("{} is not a gauge: {other:?}", m.name),
    }
}

fn value(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        _ => panic!("no value"),
    }
}

const T0: i64 = 1_700_000_000_000;

#[test]
fn resource_and_attributes_as_the_collector() {
    let mut s = TargetState::default();
    let b = scrape(
        &mut s,
        &job(""),
        "# TYPE g gauge\n# HELP g A gauge.\ng{path=\"/x\"} 3\n",
        Format::Text,
        T0,
    );
    let rm = &b.request.resource_metrics[0];
    let r = &rm.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(r, "service.name").as_deref(), Some("app"));
    assert_eq!(
        attr(r, "service.instance.id").as_deref(),
        Some("10.0.0.1:9100")
    );
    assert_eq!(attr(r, "server.address").as_deref(), Some("10.0.0.1"));
    assert_eq!(attr(r, "server.port").as_deref(), Some("9100"));
    assert_eq!(attr(r, "url.scheme").as_deref(), Some("http"));
    let g = find(&b, "g");
    assert_eq!(g.description, "A gauge.");
    let p = &gauge_points(g)[0];
    assert_eq!(attr(&p.attributes, "path").as_deref(), Some("/x"));
    assert_eq!(attr(&p.attributes, "zone").as_deref(), Some("a"));
    assert_eq!(attr(&p.attributes, "job"), None);
    assert_eq!(p.time_unix_nano, T0 as u64 * 1_000_000);
    // Plus up and the four scrape_* series.
    for name in [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        assert_eq!(gauge_points(find(&b, name)).len(), 1, "{name}");
    }
    assert_eq!(value(&gauge_points(find(&b, "up"))[0]), 1.0);
    assert_eq!(
        value(&gauge_points(find(&b, "scrape_series_added"))[0]),
        1.0
    );
    assert_eq!(b.points, 6);
}

#[test]
fn counters_start_when_first_seen_and_restart_on_reset() {
    let j = job("");
    let mut s = TargetState::default();
    let text = |v: u32| format!("# TYPE c_total counter\nc_total {v}\n");
    let b1 = scrape(&mut s, &j, &text(10), Format::Text, T0);
    let p1 = sum_points(find(&b1, "c_total"))[0].clone();
    assert_eq!(p1.start_time_unix_nano, p1.time_unix_nano);
    let b2 = scrape(&mut s, &j, &text(15), Format::Text, T0 + 1000);
    let p2 = &sum_points(find(&b2, "c_total"))[0];
    assert_eq!(p2.start_time_unix_nano, p1.time_unix_nano);
    assert_eq!(value(p2), 15.0);
    assert_eq!(
        value(&gauge_points(find(&b2, "scrape_series_added"))[0]),
        0.0
    );
    // A decrease is a reset: a new interval starts at this point.
    let b3 = scrape(&mut s, &j, &text(2), Format::Text, T0 + 2000);
    let p3 = &sum_points(find(&b3, "c_total"))[0];
    assert_eq!(p3.start_time_unix_nano, p3.time_unix_nano);
    let b4 = scrape(&mut s, &j, &text(4), Format::Text, T0 + 3000);
    assert_eq!(
        sum_points(find(&b4, "c_total"))[0].start_time_unix_nano,
        p3.time_unix_nano
    );
}

#[test]
fn openmetrics_counter_uses_created_and_the_family_name() {
    let mut s = TargetState::default();
    let b = scrape(
        &mut s,
        &job(""),
        "# TYPE req counter\n# UNIT req requests\nreq_total{code=\"200\"} 7\nreq_created{code=\"200\"} 1699999990.5\n# EOF\n",
        Format::OpenMetrics,
        T0,
    );
    let m = find(&b, "req");
    assert_eq!(m.unit, "requests");
    let p = &sum_points(m)[0];
    assert_eq!(value(p), 7.0);
    assert_eq!(p.start_time_unix_nano, 1_699_999_990_500_000_000);
    assert_eq!(attr(&p.attributes, "code").as_deref(), Some("200"));
}

#[test]
fn histogram_becomes_one_point_with_explicit_bounds() {
    let mut s = TargetState::default();
    let b = scrape(
        &mut s,
        &job(""),
        "# TYPE h histogram\nh_bucket{m=\"a\",le=\"0.1\"} 2\nh_bucket{m=\"a\",le=\"1\"} 5\nh_bucket{m=\"a\",le=\"+Inf\"} 6\nh_sum{m=\"a\"} 3.5\nh_count{m=\"a\"} 6\n",
        Format::Text,
        T0,
    );
    let Some(metric::Data::Histogram(h)) = &find(&b, "h").data else {
        panic!("not a histogram")
    };
    assert_eq!(h.aggregation_temporality, 2);
    assert_eq!(h.data_points.len(), 1);
    let p = &h.data_points[0];
    assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
    assert_eq!(p.bucket_counts, vec![2, 3, 1]);
    assert_eq!(p.count, 6);
    assert_eq!(p.sum, Some(3.5));
    assert_eq!(attr(&p.attributes, "m").as_deref(), Some("a"));
    assert_eq!(attr(&p.attributes, "le"), None);
}

#[test]
fn summary_becomes_quantiles() {
    let mut s = TargetState::default();
    let b = scrape(
        &mut s,
        &job(""),
        "# TYPE rpc summary\nrpc{quantile=\"0.5\"} 4773\nrpc{quantile=\"0.01\"} 3102\nrpc_sum 1.7560473e+07\nrpc_count 2693\n",
        Format::Text,
        T0,
    );
    let Some(metric::Data::Summary(sm)) = &find(&b, "rpc").data else {
        panic!("not a summary")
    };
    let p = &sm.data_points[0];
    assert_eq!(p.count, 2693);
    assert_eq!(p.sum, 1.7560473e7);
    let q: Vec<(f64, f64)> = p
        .quantile_values
        .iter()
        .map(|v| (v.quantile, v.value))
        .collect();
    assert_eq!(q, vec![(0.01, 3102.0), (0.5, 4773.0)]);
}

#[test]
fn untyped_is_a_gauge() {
    let mut s = TargetState::default();
    let b = scrape(&mut s, &job(""), "u 1\n", Format::Text, T0);
    assert_eq!(gauge_points(find(&b, "u")).len(), 1);
}

#[test]
fn a_vanished_series_gets_one_no_recorded_value_point() {
    let j = job("");
    let mut s = TargetState::default();
    scrape(
        &mut s,
        &j,
        "# TYPE c_total counter\nc_total{a=\"1\"} 1\nc_total{a=\"2\"} 1\ng 5\n",
        Format::Text,
        T0,
    );
    let b = scrape(
        &mut s,
        &j,
        "# TYPE c_total counter\nc_total{a=\"1\"} 2\n",
        Format::Text,
        T0 + 1000,
    );
    let points = sum_points(find(&b, "c_total"));
    assert_eq!(points.len(), 2);
    let stale = points
        .iter()
        .find(|p| attr(&p.attributes, "a").as_deref() == Some("2"))
        .unwrap();
    assert_eq!(stale.flags, 1);
    assert_eq!(value(stale).to_bits(), STALE_NAN_BITS);
    let g = &gauge_points(find(&b, "g"))[0];
    assert_eq!(g.flags, 1);
    // Only once: the next scrape has no more stale points.
    let b = scrape(
        &mut s,
        &j,
        "# TYPE c_total counter\nc_total{a=\"1\"} 3\n",
        Format::Text,
        T0 + 2000,
    );
    assert_eq!(sum_points(find(&b, "c_total")).len(), 1);
    assert!(metrics(&b).iter().all(|m| m.name != "g"));
}

#[test]
fn a_failed_scrape_reports_down_and_stales_everything() {
    let j = job("");
    let mut s = TargetState::default();
    scrape(&mut s, &j, "g 5\n", Format::Text, T0);
    let b = decoded(s.failed(&target(), T0 + 1000, 0.5));
    assert_eq!(value(&gauge_points(find(&b, "up"))[0]), 0.0);
    assert_eq!(gauge_points(find(&b, "g"))[0].flags, 1);
    assert_eq!(s.tracked_series(), 0);
}

#[test]
fn target_labels_win_unless_honor_labels() {
    let mut s = TargetState::default();
    let b = scrape(&mut s, &job(""), "g{zone=\"b\"} 1\n", Format::Text, T0);
    let p = &gauge_points(find(&b, "g"))[0];
    assert_eq!(attr(&p.attributes, "zone").as_deref(), Some("a"));
    assert_eq!(attr(&p.attributes, "exported_zone").as_deref(), Some("b"));
    let mut s = TargetState::default();
    let b = scrape(
        &mut s,
        &job("      honor_labels: true\n"),
        "g{zone=\"b\"} 1\n",
        Format::Text,
        T0,
    );
    let p = &gauge_points(find(&b, "g"))[0];
    assert_eq!(attr(&p.attributes, "zone").as_deref(), Some("b"));
}

#[test]
fn metric_relabeling_and_timestamps() {
    let j = job(
        "      honor_timestamps: false\n      metric_relabel_configs:\n        - source_labels: [__name__]\n          regex: drop_.*\n          action: drop\n",
    );
    let mut s = TargetState::default();
    let b = scrape(&mut s, &j, "drop_me 1\nkeep 2 123\n", Format::Text, T0);
    assert!(metrics(&b).iter().all(|m| m.name != "drop_me"));
    assert_eq!(
        gauge_points(find(&b, "keep"))[0].time_unix_nano,
        T0 as u64 * 1_000_000
    );
    assert_eq!(
        value(&gauge_points(find(&b, "scrape_samples_scraped"))[0]),
        2.0
    );
    assert_eq!(
        value(&gauge_points(find(&b, "scrape_samples_post_metric_relabeling"))[0]),
        1.0
    );
    let mut s = TargetState::default();
    let b = scrape(&mut s, &job(""), "keep 2 123\n", Format::Text, T0);
    assert_eq!(
        gauge_points(find(&b, "keep"))[0].time_unix_nano,
        123_000_000
    );
}

#[test]
fn sample_and_label_limits_fail_the_scrape() {
    let mut s = TargetState::default();
    let r = s.scraped(
        &job("      sample_limit: 2\n"),
        &target(),
        "a 1\nb 2\nc 3\n",
        Format::Text,
        T0,
        &|| 0.0,
    );
    assert!(r.is_err());
    let text = "a{x=\"1\",y=\"2\"} 1\n";
    // __name__, instance, job, zone, x, y = 6 labels.
    let label_limit = |n: u64| job(&format!("      label_limit: {n}\n"));
    let r = s.scraped(&label_limit(5), &target(), text, Format::Text, T0, &|| 0.0);
    assert!(r.is_err());
    let r = s.scraped(&label_limit(6), &target(), text, Format::Text, T0, &|| 0.0);
    assert!(r.is_ok());
}

#[test]
fn a_removed_target_gets_stale_markers_for_its_series() {
    let mut s = TargetState::default();
    scrape(
        &mut s,
        &job(""),
        "g 5\n# TYPE c_total counter\nc_total 1\n",
        Format::Text,
        T0,
    );
    let b = decoded(s.vanished(&target(), T0 + 500));
    assert_eq!(gauge_points(find(&b, "g"))[0].flags, 1);
    assert_eq!(sum_points(find(&b, "c_total"))[0].flags, 1);
    assert!(metrics(&b).iter().all(|m| m.name != "up"));
    assert_eq!(s.tracked_series(), 0);
}

/// The request is written without message values; it must be byte for byte what prost
/// writes for the same request (field order, defaults left out, packed repeats).
#[test]
fn the_encoding_is_what_prost_writes_for_the_same_request() {
    let j = job("");
    let mut s = TargetState::default();
    let text = "# TYPE g gauge\n# HELP g A gauge.\ng{path=\"/x\"} 3\ng{path=\"/y\"} 0\n\
                # TYPE c_total counter\n# UNIT c_total seconds\nc_total{a=\"1\"} 10\n\
                # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 4\nh_sum 2.5\nh_count 4\n\
                # TYPE s summary\ns{quantile=\"0\"} 0\ns{quantile=\"0.9\"} 7\ns_sum 0\ns_count 3\n";
    let built = s
        .scraped(&j, &target(), text, Format::Text, T0, &|| 0.01)
        .unwrap()
        .finish();
    let request = ExportMetricsServiceRequest::decode(built.encoded.as_slice()).unwrap();
    assert_eq!(request.encode_to_vec(), built.encoded);
    // Every series goes stale: the no-recorded-value points too.
    let stale = s.failed(&target(), T0 + 1000, 0.5);
    let request = ExportMetricsServiceRequest::decode(stale.encoded.as_slice()).unwrap();
    assert_eq!(request.encode_to_vec(), stale.encoded);
    assert_eq!(stale.points, 5 + 5);
}

/// Samples are converted as they are read, so a limit or a malformed line can stop the
/// scrape after some series were tracked: those never sent must not get stale markers when
/// the scrape is reported failed.
#[test]
fn a_scrape_failing_midway_marks_stale_only_the_series_that_were_sent() {
    let j = job("      sample_limit: 3\n");
    for (text, reason) in [
        ("a 1\nb 2\nnew 3\nnew2 4\n", "sample_limit exceeded"),
        ("a 1\nnew 3\nb 2\nbad{ 4\n", "parse error: line 4"),
    ] {
        let mut s = TargetState::default();
        scrape(&mut s, &j, "a 1\nb 2\n", Format::Text, T0);
        let r = s.scraped(&j, &target(), text, Format::Text, T0 + 1000, &|| 0.0);
        let Err(ScrapeFailed(why)) = r else {
            panic!("{text:?} did not fail")
        };
        assert!(why.starts_with(reason), "{why}");
        let failed = decoded(s.failed(&target(), T0 + 1000, 0.0));
        let mut stale: Vec<&str> = metrics(&failed)
            .iter()
            .filter(|m| {
                matches!(&m.data, Some(metric::Data::Gauge(g))
                    if g.data_points.iter().any(|p| p.flags & 1 == 1))
            })
            .map(|m| m.name.as_str())
            .collect();
        stale.sort();
        assert_eq!(stale, ["a", "b"], "{text:?}");
        assert_eq!(s.tracked_series(), 0);
    }
}

/// A series given twice in one body (adjacent, or in a family declared again later) is
/// one point, with its first value, as Prometheus keeps the first of duplicate samples.
#[test]
fn a_series_repeated_in_a_body_is_one_point_with_its_first_value() {
    let text = "# TYPE c_total counter\nc_total{a=\"1\"} 1\nc_total{a=\"1\"} 5\n\
                g 1\ng 2\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 1\n\
                # TYPE x gauge\nx 1\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 4\nh_count 2\n";
    let mut s = TargetState::default();
    let b = scrape(&mut s, &job(""), text, Format::Text, T0);
    let c = sum_points(find(&b, "c_total"));
    assert_eq!((c.len(), value(&c[0])), (1, 1.0));
    let g = gauge_points(find(&b, "g"));
    assert_eq!((g.len(), value(&g[0])), (1, 1.0));
    let h: Vec<_> = metrics(&b)
        .iter()
        .filter(|m| m.name == "h")
        .flat_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.clone(),
            other => panic!("h is not a histogram: {other:?}"),
        })
        .collect();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].count, h[0].sum), (1, Some(3.0)));
    // c_total, g, h, x and the five scrape series.
    assert_eq!(b.points, 4 + 5);
}

/// A metric's points are sealed into the request when the scrape moves on to another metric.
/// A stale marker for a metric sealed earlier in the scrape (and a family declared again)
/// still leaves one `Metric` per name, with all its points, encoded as prost encodes it.
#[test]
fn a_metric_given_points_after_it_was_sealed_is_still_one_metric() {
    let j = job("");
    let mut s = TargetState::default();
    let first = "# TYPE c_total counter\nc_total{a=\"1\"} 1\nc_total{a=\"2\"} 1\ng{b=\"1\"} 5\n\
                 g{b=\"2\"} 5\nx 1\n";
    scrape(&mut s, &j, first, Format::Text, T0);
    // c_total and g are sealed before the end; each has a series that goes stale. g is met
    // again after x (its family declared again).
    let second = "# TYPE c_total counter\nc_total{a=\"1\"} 2\n# TYPE g gauge\ng{b=\"1\"} 6\n\
                  x 2\n# TYPE g gauge\ng{b=\"3\"} 7\n";
    let built = s
        .scraped(&j, &target(), second, Format::Text, T0 + 1000, &|| 0.01)
        .unwrap()
        .finish();
    let request = ExportMetricsServiceRequest::decode(built.encoded.as_slice()).unwrap();
    assert_eq!(request.encode_to_vec(), built.encoded);
    let b = decoded(built);
    let mut names: Vec<&str> = metrics(&b).iter().map(|m| m.name.as_str()).collect();
    let all = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all, "a name twice: {names:?}");
    let c = sum_points(find(&b, "c_total"));
    assert_eq!(c.len(), 2);
    assert_eq!(value(&c[0]), 2.0);
    assert_eq!(c[1].flags, 1);
    let g = gauge_points(find(&b, "g"));
    let by_b = |v: &str| {
        g.iter()
            .find(|p| attr(&p.attributes, "b").as_deref() == Some(v))
    };
    assert_eq!(by_b("1").map(value), Some(6.0));
    assert_eq!(by_b("3").map(value), Some(7.0));
    assert_eq!(by_b("2").map(|p| p.flags), Some(1));
    assert_eq!(g.len(), 3);
    // The metrics are in the order they were first met, the scrape series last.
    assert_eq!(metrics(&b)[0].name, "c_total");
    assert_eq!(metrics(&b)[1].name, "g");
    assert_eq!(metrics(&b)[2].name, "x");
}
