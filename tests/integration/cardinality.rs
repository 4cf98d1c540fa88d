//! The `cardinality` processor as a pipeline builds it from a config: behind `batch`, counters
//! from many users come out as one series per route, on the flush interval.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use prost::Message;
use sluice::config::Config;
use sluice::otlp::{Batch, Signal};
use sluice::processors::{Chain, Processor};
use sluice::telemetry::Registry;

const CONFIG: &str = "receivers:\n  otlp:\n    protocols: {grpc: }\n\
processors:\n  batch: {timeout: 1s}\n  cardinality:\n    drop_labels: [user_id]\n    flush_interval: 5s\n\
exporters:\n  debug:\n\
service:\n  pipelines:\n    metrics: {receivers: [otlp], processors: [batch, cardinality], exporters: [debug]}\n";

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn request(time_s: u64, per_user: i64) -> Batch {
    let points = (0..100)
        .map(|u| NumberDataPoint {
            attributes: vec![
                kv("user_id", &u.to_string()),
                kv("route", ["/a", "/b"][u % 2]),
            ],
            start_time_unix_nano: 1_000_000_000,
            time_unix_nano: time_s * 1_000_000_000,
            value: Some(number_data_point::Value::AsInt(per_user)),
            ..Default::default()
        })
        .collect();
    let r = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "requests".into(),
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

fn values(out: &[Batch]) -> Vec<(String, i64)> {
    let mut v = Vec::new();
    for b in out {
        let r = ExportMetricsServiceRequest::decode(b.to_bytes()).unwrap();
        for m in r
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
        {
            if let Some(metric::Data::Sum(s)) = &m.data {
                for p in &s.data_points {
                    assert_eq!(p.attributes.len(), 1, "only route is left");
                    let Some(number_data_point::Value::AsInt(i)) = p.value else {
                        panic!("{p:?}");
                    };
                    v.push((format!("{:?}", p.attributes[0].value), i));
                }
            }
        }
    }
    v.sort();
    v
}

#[test]
fn a_pipeline_with_batch_and_cardinality_emits_one_series_per_route_per_flush() {
    let config = Config::load_sources(&[("cardinality.yaml".into(), CONFIG.into())]).unwrap();
    let registry = Registry::default();
    let stages = config
        .processors
        .iter()
        .map(|c| Processor::build(&c.id, &c.config, &registry))
        .collect();
    let mut chain = Chain::new(stages);
    let start = Instant::now();
    let mut out = Vec::new();
    chain.process(request(10, 1), start, &mut out);
    chain.process(request(20, 3), start + Duration::from_millis(10), &mut out);
    assert!(out.is_empty());
    // The batch timeout passes: the cardinality processor now holds the points.
    let deadline = chain.next_deadline().unwrap();
    chain.tick(deadline, &mut out);
    assert!(out.is_empty());
    let flush = chain
        .next_deadline()
        .expect("the cardinality flush is pending");
    assert!(flush >= deadline + Duration::from_secs(5));
    chain.tick(flush, &mut out);
    let got = values(&out);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter().all(|(_, v)| *v == 150),
        "50 users × 3 per route: {got:?}"
    );
    assert_eq!(
        registry.value("sluice_processor_cardinality_active_series", ""),
        2
    );
}
