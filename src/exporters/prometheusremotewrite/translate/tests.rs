use super::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::super::prompb::{TimeSeries, WriteRequest};

/// The translation decoded back; every request is checked to be what prost would write.
struct Decoded {
    series: Vec<TimeSeries>,
    dropped: u64,
}

fn translate_max(
    request: &ExportMetricsServiceRequest,
    settings: &Settings,
    max: usize,
) -> (Vec<Vec<u8>>, Decoded) {
    let out = super::translate(
        &request.encode_to_vec(),
        settings,
        max,
        &mut LabelCache::default(),
    )
    .unwrap();
    let requests: Vec<Vec<u8>> = out.requests.iter().map(|r| unsnappy(r)).collect();
    let mut series = Vec::new();
    for r in &requests {
        let decoded = WriteRequest::decode(r.as_slice()).unwrap();
        assert_eq!(&decoded.encode_to_vec(), r);
        series.extend(decoded.timeseries);
    }
    assert_eq!(series.len(), out.series);
    (
        requests,
        Decoded {
            series,
            dropped: out.dropped,
        },
    )
}

fn unsnappy(body: &[u8]) -> Vec<u8> {
    snap::raw::Decoder::new().decompress_vec(body).unwrap()
}

fn translate(request: &ExportMetricsServiceRequest, settings: &Settings) -> Decoded {
    let (requests, decoded) = translate_max(request, settings, usize::MAX);
    assert!(requests.len() <= 1);
    decoded
}

fn with_suffixes() -> Settings {
    Settings {
        add_metric_suffixes: true,
        target_info: true,
        ..Settings::default()
    }
}

fn gauge(name: &str, unit: &str) -> String {
    metric_name(name, unit, NameKind::Gauge, &with_suffixes())
}

fn counter(name: &str, unit: &str) -> String {
    metric_name(name, unit, NameKind::Counter, &with_suffixes())
}

// The collector's pkg/translator/prometheus/normalize_name_test.go.
#[test]
fn metric_names_as_the_collector_normalizes_them() {
    assert_eq!(
        gauge("system.filesystem.usage", "By"),
        "system_filesystem_usage_bytes"
    );
    assert_eq!(counter("system.io", "By"), "system_io_bytes_total");
    assert_eq!(
        counter("network_transmitted_bytes_total", "By"),
        "network_transmitted_bytes_total"
    );
    assert_eq!(
        gauge("\t system.filesystem.usage       ", "  By\t"),
        "system_filesystem_usage_bytes"
    );
    assert_eq!(
        gauge("system.network.dropped", "{packets}"),
        "system_network_dropped"
    );
    assert_eq!(
        counter("system.network.dropped", "{packets}"),
        "system_network_dropped_total"
    );
    assert_eq!(
        gauge("system.network.dropped", "packets"),
        "system_network_dropped_packets"
    );
    assert_eq!(
        gauge("system.network.packets.dropped", "packets"),
        "system_network_packets_dropped"
    );
    assert_eq!(
        gauge("system.network.packets", "packets"),
        "system_network_packets"
    );
    assert_eq!(
        counter("system.network.packets", "packets"),
        "system_network_packets_total"
    );
    assert_eq!(
        gauge("hw.gpu.memory.utilization", "1"),
        "hw_gpu_memory_utilization_ratio"
    );
    assert_eq!(gauge("hw.fan.speed_ratio", "1"), "hw_fan_speed_ratio");
    assert_eq!(counter("objects", "1"), "objects_total");
    assert_eq!(
        gauge("hw.cpu.speed_limit", "Hz"),
        "hw_cpu_speed_limit_hertz"
    );
    assert_eq!(
        gauge("broken.metric.speed", "km/h"),
        "broken_metric_speed_km_per_hour"
    );
    assert_eq!(
        gauge("astro.light.speed_limit", "m/s"),
        "astro_light_speed_limit_meters_per_second"
    );
    assert_eq!(
        gauge("broken.metric.success_ratio", "%"),
        "broken_metric_success_ratio_percent"
    );
    assert_eq!(
        gauge("broken.metric.success_percent", "%"),
        "broken_metric_success_percent"
    );
    assert_eq!(gauge("test.metric.no_unit", ""), "test_metric_no_unit");
    assert_eq!(gauge("test.metric.spaces", "   \t  "), "test_metric_spaces");
    assert_eq!(
        gauge("unsupported.metric.temperature", "°F"),
        "unsupported_metric_temperature_F"
    );
    assert_eq!(
        gauge("unsupported.metric.weird", "+=.:,!* & #"),
        "unsupported_metric_weird"
    );
    assert_eq!(
        gauge("unsupported.metric.redundant", "__test $/°C"),
        "unsupported_metric_redundant_test_per_C"
    );
    assert_eq!(
        gauge("active_directory.ds.replication.object.rate", "{objects}/s"),
        "active_directory_ds_replication_object_rate_per_second"
    );
    assert_eq!(
        counter("system.disk.operation_time", "s"),
        "system_disk_operation_time_seconds_total"
    );
    assert_eq!(
        gauge("system.cpu.load_average.15m", "1"),
        "system_cpu_load_average_15m_ratio"
    );
    assert_eq!(
        gauge("mongodbatlas.process.oplog.rate", "GiBy/h"),
        "mongodbatlas_process_oplog_rate_gibibytes_per_hour"
    );
    assert_eq!(
        gauge(
            "mongodbatlas.process.db.query_targeting.scanned_per_returned",
            "{scanned}/{returned}"
        ),
        "mongodbatlas_process_db_query_targeting_scanned_per_returned"
    );
    assert_eq!(
        gauge("redis.latest_fork", "us"),
        "redis_latest_fork_microseconds"
    );
    assert_eq!(gauge("3.14 digits", ""), "_3_14_digits");
    assert_eq!(
        gauge("envoy__rule_engine_zlib_buf_error", ""),
        "envoy_rule_engine_zlib_buf_error"
    );
    assert_eq!(gauge(":foo::bar", ""), "foo_bar");
    assert_eq!(counter(":foo::bar", ""), "foo_bar_total");
    let ns = Settings {
        namespace: "space".into(),
        ..with_suffixes()
    };
    assert_eq!(metric_name("#test", "", NameKind::Gauge, &ns), "space_test");
    let ns = Settings {
        namespace: "system".into(),
        ..with_suffixes()
    };
    assert_eq!(
        metric_name("network.io", "By", NameKind::Counter, &ns),
        "system_network_io_bytes_total"
    );
}

#[test]
fn metric_names_without_suffixes() {
    let plain = Settings::default();
    let name = |n: &str, kind| metric_name(n, "By", kind, &plain);
    assert_eq!(name("system.io", NameKind::Counter), "system_io");
    assert_eq!(name("3.14 digits", NameKind::Gauge), "_3_14_digits");
    assert_eq!(
        name("envoy__rule_engine_zlib_buf_error", NameKind::Gauge),
        "envoy__rule_engine_zlib_buf_error"
    );
    assert_eq!(name(":foo::bar", NameKind::Counter), ":foo::bar");
    let ns = Settings {
        namespace: "system".into(),
        ..Settings::default()
    };
    assert_eq!(
        metric_name("network (I/O)", "By", NameKind::Counter, &ns),
        "system_network_I_O"
    );
}

// The collector's normalize_label_test.go.
#[test]
fn label_names_are_sanitized() {
    assert_eq!(normalize_label(""), "");
    assert_eq!(normalize_label("label:with:colons"), "label_with_colons");
    assert_eq!(
        normalize_label("LabelWithCapitalLetters"),
        "LabelWithCapitalLetters"
    );
    assert_eq!(
        normalize_label("label!with&special$chars)"),
        "label_with_special_chars_"
    );
    assert_eq!(
        normalize_label("label_with_foreign_characters_字符"),
        "label_with_foreign_characters___"
    );
    assert_eq!(normalize_label("label.with.dots"), "label_with_dots");
    assert_eq!(normalize_label("123label"), "key_123label");
    assert_eq!(
        normalize_label("_label_starting_with_underscore"),
        "key_label_starting_with_underscore"
    );
    assert_eq!(
        normalize_label("__label_starting_with_2underscores"),
        "__label_starting_with_2underscores"
    );
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "api"),
                    kv("service.namespace", "shop"),
                    kv("service.instance.id", "pod-1:8080"),
                    kv("host.name", "node-7"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number(attrs: Vec<KeyValue>, ms: u64, v: f64, flags: u32) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: ms * 1_000_000,
        flags,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn gauge_metric(name: impl Into<String>, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge { data_points })),
        ..Default::default()
    }
}

fn find<'a>(series: &'a [TimeSeries], name: &str, extra: &[(&str, &str)]) -> &'a TimeSeries {
    series
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == name)
                && extra
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|l| l.name == *k && l.value == *v))
        })
        .unwrap_or_else(|| panic!("no series {name} {extra:?}"))
}

#[test]
fn sums_gauges_job_instance_external_labels_and_target_info() {
    let metrics = vec![
        Metric {
            name: "http.requests".into(),
            data: Some(metric::Data::Sum(Sum {
                // Out of order on purpose: samples must come out sorted.
                data_points: vec![
                    number(vec![kv("http.method", "GET")], 2000, 5.0, 0),
                    number(vec![kv("http.method", "GET")], 1000, 3.0, 0),
                ],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        gauge_metric(
            "queue.depth",
            vec![number(vec![kv("region", "eu")], 1500, 7.0, 1)],
        ),
    ];
    let settings = Settings {
        external_labels: [
            ("cluster".to_string(), "c1".to_string()),
            ("region".to_string(), "us".to_string()),
        ]
        .into_iter()
        .collect(),
        ..with_suffixes()
    };
    let out = translate(&request(metrics), &settings);
    let s = find(
        &out.series,
        "http_requests_total",
        &[("http_method", "GET")],
    );
    let labels: Vec<(&str, &str)> = s
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("__name__", "http_requests_total"),
            ("cluster", "c1"),
            ("http_method", "GET"),
            ("instance", "pod-1:8080"),
            ("job", "shop/api"),
            ("region", "us"),
        ]
    );
    let samples: Vec<(i64, f64)> = s.samples.iter().map(|x| (x.timestamp, x.value)).collect();
    assert_eq!(samples, vec![(1000, 3.0), (2000, 5.0)]);
    // The point's own `region` wins over the external label; no recorded value is stale NaN.
    let g = find(&out.series, "queue_depth", &[("region", "eu")]);
    assert_eq!(g.samples[0].value.to_bits(), STALE_NAN);
    let info = find(&out.series, "target_info", &[("host_name", "node-7")]);
    assert_eq!(info.samples[0].timestamp, 2000);
    assert!(
        info.labels
            .iter()
            .any(|l| l.name == "job" && l.value == "shop/api")
    );
    assert!(!info.labels.iter().any(|l| l.name == "service_name"));
    // Promoting resource attributes.
    let promoted = translate(
        &request(vec![]),
        &Settings {
            resource_to_telemetry: true,
            target_info: false,
            ..with_suffixes()
        },
    );
    assert!(promoted.series.is_empty());
}

#[test]
fn colliding_labels_are_joined() {
    let metrics = vec![gauge_metric(
        "g",
        vec![number(vec![kv("a.b", "1"), kv("a_b", "2")], 1000, 1.0, 0)],
    )];
    let out = translate(&request(metrics), &Settings::default());
    find(&out.series, "g", &[("a_b", "1;2")]);
}

#[test]
fn histograms_become_cumulative_buckets_sum_and_count() {
    let metrics = vec![Metric {
        name: "http.server.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![kv("route", "/")],
                time_unix_nano: 3_000_000_000,
                count: 6,
                sum: Some(3.5),
                bucket_counts: vec![2, 3, 1],
                explicit_bounds: vec![0.1, 1.0],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    }];
    let out = translate(&request(metrics), &with_suffixes());
    let name = "http_server_duration_seconds";
    let v = |n: &str, extra: &[(&str, &str)]| find(&out.series, n, extra).samples[0].value;
    assert_eq!(v(&format!("{name}_bucket"), &[("le", "0.1")]), 2.0);
    assert_eq!(v(&format!("{name}_bucket"), &[("le", "1")]), 5.0);
    assert_eq!(v(&format!("{name}_bucket"), &[("le", "+Inf")]), 6.0);
    assert_eq!(v(&format!("{name}_sum"), &[]), 3.5);
    assert_eq!(v(&format!("{name}_count"), &[]), 6.0);
    assert_eq!(
        find(&out.series, &format!("{name}_count"), &[]).samples[0].timestamp,
        3000
    );
}

#[test]
fn summaries_become_quantiles() {
    let metrics = vec![Metric {
        name: "rpc".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: 1_000_000,
                count: 10,
                sum: 4.0,
                quantile_values: vec![ValueAtQuantile {
                    quantile: 0.5,
                    value: 0.3,
                }],
                ..Default::default()
            }],
        })),
        ..Default::default()
    }];
    let out = translate(&request(metrics), &with_suffixes());
    assert_eq!(
        find(&out.series, "rpc", &[("quantile", "0.5")]).samples[0].value,
        0.3
    );
    assert_eq!(find(&out.series, "rpc_sum", &[]).samples[0].value, 4.0);
    assert_eq!(find(&out.series, "rpc_count", &[]).samples[0].value, 10.0);
}

#[test]
fn requests_split_at_the_size_limit() {
    let metrics = (0..100)
        .map(|i| gauge_metric(format!("metric_{i:04}"), vec![number(vec![], 1, 1.0, 0)]))
        .collect();
    let request = request(metrics);
    let settings = Settings::default();
    let (one, _) = translate_max(&request, &settings, 1 << 20);
    assert_eq!(one.len(), 1);
    let (many, decoded) = translate_max(&request, &settings, 500);
    assert!(many.len() > 1);
    assert_eq!(decoded.series.len(), 100);
    assert!(many.iter().all(|r| r.len() <= 500));
}

/// Requests are compressed 64 KiB at a time: requests of several fragments (and one large
/// one) must read back, with any snappy decoder, as the whole request prost would write.
#[test]
fn requests_larger_than_a_snappy_fragment_read_back_whole() {
    let metrics = (0..20)
        .map(|m| {
            let points = (0..400)
                .map(|i| {
                    let pod = format!("pod-{i}-{}", i * 7919 % 1000);
                    number(vec![kv("pod", &pod)], 5, i as f64, 0)
                })
                .collect();
            gauge_metric(format!("requests_{m}"), points)
        })
        .collect();
    let request = request(metrics);
    let settings = Settings::default();
    for max in [usize::MAX, 150_000] {
        let (requests, decoded) = translate_max(&request, &settings, max);
        assert_eq!(decoded.series.len(), 8000);
        let total: usize = requests.iter().map(Vec::len).sum();
        assert!(total > 4 * 65536, "{total} bytes: not several fragments");
        assert!(requests.iter().all(|r| r.len() <= max));
        assert_eq!(requests.len() > 1, max != usize::MAX);
    }
}

#[test]
fn exponential_histogram_points_are_counted_as_dropped() {
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint,
    };
    let metrics = vec![Metric {
        name: "latency".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default(); 2],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    }];
    let out = translate(&request(metrics), &with_suffixes());
    assert_eq!(out.dropped, 2);
    assert!(out.series.is_empty());
}

/// The second time a request's series come, their label sets come from the cache: the
/// output must be the same, and a resource with other labels must not reuse them.
#[test]
fn cached_label_sets_give_the_same_series_and_follow_the_resource() {
    let metrics = |v: f64| {
        vec![Metric {
            name: "requests".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![
                    number(vec![kv("route", "/a"), kv("code", "200")], 1000, v, 0),
                    number(vec![kv("route", "/b")], 1000, v, 0),
                ],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        }]
    };
    let settings = with_suffixes();
    let mut cache = LabelCache::default();
    let mut run = |request: &ExportMetricsServiceRequest| {
        let out =
            super::translate(&request.encode_to_vec(), &settings, usize::MAX, &mut cache).unwrap();
        WriteRequest::decode(unsnappy(&out.requests[0]).as_slice())
            .unwrap()
            .timeseries
    };
    let first = run(&request(metrics(1.0)));
    let again = run(&request(metrics(1.0)));
    assert_eq!(first, again);
    let mut other = request(metrics(1.0));
    other.resource_metrics[0].resource = Some(Resource {
        attributes: vec![kv("service.name", "billing")],
        ..Default::default()
    });
    let moved = run(&other);
    let job = |series: &[TimeSeries]| {
        series[0]
            .labels
            .iter()
            .find(|l| l.name == "job")
            .map(|l| l.value.clone())
    };
    assert_eq!(job(&first).as_deref(), Some("shop/api"));
    assert_eq!(job(&moved).as_deref(), Some("billing"));
    assert_eq!(cache.cached(), 4);
}
