//! In-process pipeline behaviour: fan-out isolation and shutdown accounting.

use std::time::{Duration, Instant};

use sluice::config::Config;
use sluice::loadgen::{self, Options};
use sluice::pipeline::Service;
use sluice::telemetry::Registry;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_exporter_does_not_stall_the_others() {
    // A backend that accepts connections and never answers.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let grpc_port = free_port();
    let dir = temp_dir("fanout");
    let out = dir.join("out.jsonl");
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n\
exporters:\n  file:\n    path: {}\n  otlp/stuck:\n    endpoint: 127.0.0.1:{stuck_port}\n    tls: {{insecure: true}}\n    timeout: 30s\n    sending_queue: {{queue_size: 2, num_consumers: 1}}\n\
service:\n  shutdown_timeout: 1s\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [otlp/stuck, file]}}\n  telemetry: {{metrics: {{level: none}}}}\n",
        out.display()
    );
    let config = Config::load_sources(&[("fanout.yaml".into(), text)]).unwrap();
    let registry = Registry::default();
    let service = Service::start(&config, registry.clone()).await.unwrap();

    let report = loadgen::run(Options {
        endpoint: Some(format!("127.0.0.1:{grpc_port}")),
        count: Some(2000),
        batch: 100,
        rate: 0.0,
        ..Options::default()
    })
    .await;
    assert_eq!(report.items_accepted, 2000, "{report}");
    wait_for(
        "the file exporter to write everything",
        Duration::from_secs(10),
        || registry.value("otelcol_exporter_sent_spans_total", "exporter=\"file\"") == 2000,
    )
    .await;
    let dropped = registry.value("otelcol_exporter_enqueue_failed_spans_total", "otlp/stuck");
    assert!(
        dropped >= 1000,
        "the stuck exporter's full queue should drop and count, got {dropped}"
    );

    let started = Instant::now();
    service.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    // Everything the stuck exporter held is accounted for: dropped at enqueue or failed at shutdown.
    let failed = registry.value("otelcol_exporter_send_failed_spans_total", "otlp/stuck");
    assert_eq!(
        dropped + failed,
        2000,
        "dropped {dropped} + failed {failed}"
    );
    let lines = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(lines, 20);
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_receiver_feeds_several_pipelines_and_batches_flush_on_shutdown() {
    let http_port = free_port();
    let dir = temp_dir("shared");
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http_port}\n\
processors:\n  batch:\n    send_batch_size: 100000\n    timeout: 1h\n\
exporters:\n  file/a:\n    path: {}\n  file/b:\n    path: {}\n\
service:\n  pipelines:\n    logs/a: {{receivers: [otlp], processors: [batch], exporters: [file/a]}}\n    logs/b: {{receivers: [otlp], exporters: [file/b]}}\n  telemetry: {{metrics: {{level: none}}}}\n",
        a.display(),
        b.display()
    );
    let config = Config::load_sources(&[("shared.yaml".into(), text)]).unwrap();
    let registry = Registry::default();
    let service = Service::start(&config, registry.clone()).await.unwrap();
    let report = loadgen::run(Options {
        signal: sluice::otlp::Signal::Logs,
        http: true,
        endpoint: Some(format!("127.0.0.1:{http_port}")),
        count: Some(300),
        batch: 50,
        rate: 0.0,
        ..Options::default()
    })
    .await;
    assert_eq!(report.items_accepted, 300, "{report}");
    wait_for("pipeline b", Duration::from_secs(10), || {
        registry.value("otelcol_exporter_sent_log_records_total", "file/b") == 300
    })
    .await;
    // Pipeline a holds everything in its batch until shutdown flushes it.
    assert_eq!(
        registry.value("otelcol_exporter_sent_log_records_total", "file/a"),
        0
    );
    service.shutdown().await;
    assert_eq!(
        registry.value("otelcol_exporter_sent_log_records_total", "file/a"),
        300
    );
    assert_eq!(std::fs::read_to_string(&a).unwrap().lines().count(), 1);
    assert_eq!(std::fs::read_to_string(&b).unwrap().lines().count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_report_delivery_and_drops() {
    use sluice::config::ComponentId;
    use sluice::otlp::{Batch, Signal};
    use sluice::pipeline::ack::Ack;
    use tokio::sync::oneshot;

    let dir = temp_dir("acks");
    let text = format!(
        "receivers:\n  otlp:\n    protocols: {{http: }}\nexporters:\n  file:\n    path: {}\n  otlp/nowhere:\n    endpoint: 127.0.0.1:1\n    tls: {{insecure: true}}\n    retry_on_failure: {{enabled: false}}\n    sending_queue: {{queue_size: 1, num_consumers: 1}}\nservice:\n  pipelines:\n    logs: {{receivers: [otlp], exporters: [file, otlp/nowhere]}}\n",
        dir.join("acks.jsonl").display()
    );
    let config = Config::load_sources(&[("acks.yaml".into(), text)]).unwrap();
    let registry = Registry::default();
    let (_stop, abort) = tokio::sync::watch::channel(false);
    let find = |name: &str| {
        config
            .exporters
            .iter()
            .find(|e| e.id == ComponentId::parse(name).unwrap())
            .unwrap()
    };
    let file = find("file");
    let (file_handle, _tasks) = sluice::exporters::start(
        &file.id,
        &file.config,
        &[Signal::Logs],
        &registry,
        abort.clone(),
    )
    .unwrap();
    let nowhere = find("otlp/nowhere");
    let (nowhere_handle, _tasks) = sluice::exporters::start(
        &nowhere.id,
        &nowhere.config,
        &[Signal::Logs],
        &registry,
        abort,
    )
    .unwrap();

    let payload = sluice::loadgen::generate(
        &Options {
            signal: Signal::Logs,
            ..Options::default()
        },
        3,
        &mut rand::rng(),
    );
    let tracked = |tx: oneshot::Sender<bool>| {
        let mut batch = Batch::from_encoded(Signal::Logs, payload.clone().into()).unwrap();
        batch.acks.push(Ack::new(move |ok| {
            let _ = tx.send(ok);
        }));
        batch
    };

    let (tx, delivered) = oneshot::channel();
    file_handle.enqueue(tracked(tx)).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), delivered)
            .await
            .unwrap()
            .unwrap()
    );

    // Fanned out to both: the refused connection fails it, so the ack reports a failure.
    let (tx, outcome) = oneshot::channel();
    let batch = tracked(tx);
    file_handle.enqueue(batch.clone()).await;
    nowhere_handle.enqueue(batch).await;
    assert!(
        !tokio::time::timeout(Duration::from_secs(10), outcome)
            .await
            .unwrap()
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sampling_keeps_every_error_and_slow_trace_whole() {
    let grpc_port = free_port();
    let dir = temp_dir("tail");
    let out = dir.join("kept.jsonl");
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n\
processors:\n  tail_sampling:\n    decision_wait: 500ms\n    policies:\n\
\x20     - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}\n\
\x20     - {{name: slow, type: latency, latency: {{threshold_ms: 1000}}}}\n\
\x20     - {{name: rest, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}\n\
exporters:\n  file:\n    path: {}\n\
service:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [tail_sampling], exporters: [file]}}\n  telemetry: {{metrics: {{level: none}}}}\n",
        out.display()
    );
    let config = Config::load_sources(&[("tail.yaml".into(), text)]).unwrap();
    let registry = Registry::default();
    let service = Service::start(&config, registry.clone()).await.unwrap();
    let report = loadgen::run(Options {
        endpoint: Some(format!("127.0.0.1:{grpc_port}")),
        count: Some(10_000),
        batch: 100,
        rate: 0.0,
        error_ratio: 0.05,
        slow_ratio: 0.05,
        ..Options::default()
    })
    .await;
    assert_eq!(report.items_accepted, 10_000, "{report}");
    let global = "otelcol_processor_tail_sampling_global_count_traces_sampled_total";
    // Decided on the pipeline's own ticks, not at shutdown.
    wait_for("every trace to be decided", Duration::from_secs(10), || {
        registry.value(global, "") == 2_000
    })
    .await;
    service.shutdown().await;

    // Group what the file exporter wrote by trace.
    let mut traces: std::collections::HashMap<String, (usize, bool, bool)> = Default::default();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for sp in ss["spans"].as_array().unwrap() {
                    let t = traces
                        .entry(sp["traceId"].as_str().unwrap().into())
                        .or_default();
                    t.0 += 1;
                    t.1 |= sp["status"]["code"].as_i64() == Some(2);
                    let ns = |k: &str| match &sp[k] {
                        serde_json::Value::String(s) => s.parse::<u64>().unwrap(),
                        n => n.as_u64().unwrap(),
                    };
                    t.2 |= ns("endTimeUnixNano") - ns("startTimeUnixNano") >= 1_000_000_000;
                }
            }
        }
    }
    assert!(
        traces.values().all(|t| t.0 == 5),
        "every kept trace is whole"
    );
    let errors = traces.values().filter(|t| t.1).count() as u64;
    let slow = traces.values().filter(|t| t.2).count() as u64;
    let count = "otelcol_processor_tail_sampling_count_traces_sampled_total";
    assert!(errors > 0 && slow > 0);
    assert_eq!(
        errors,
        registry.value(count, "policy=\"errors\",sampled=\"true\"")
    );
    assert_eq!(
        slow,
        registry.value(count, "policy=\"slow\",sampled=\"true\"")
    );
    assert_eq!(
        traces.len() as u64,
        registry.value(global, "sampled=\"true\"")
    );
    // 10% of the other ~1,800 traces, give or take.
    let rest = traces.values().filter(|t| !t.1 && !t.2).count();
    assert!(
        (100..=300).contains(&rest),
        "{rest} traces kept by the 10% policy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_exporter_delivers_the_same_data_with_every_compression() {
    let grpc_port = free_port();
    let kinds = ["gzip", "zstd", "none"];
    let ports = kinds.map(|_| free_port());
    let dir = temp_dir("compression");
    let direct = dir.join("direct.jsonl");
    let mut receivers = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
    );
    let mut exporters = format!(
        "exporters:\n  file/direct:\n    path: {}\n",
        direct.display()
    );
    let mut pipelines = String::from(
        "service:\n  pipelines:\n    traces: {receivers: [otlp], processors: [batch], exporters: [file/direct, otlp/gzip, otlp/zstd, otlp/none]}\n",
    );
    for (kind, port) in kinds.iter().zip(ports) {
        receivers.push_str(&format!(
            "  otlp/{kind}:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\n"
        ));
        exporters.push_str(&format!(
            "  otlp/{kind}:\n    endpoint: 127.0.0.1:{port}\n    tls: {{insecure: true}}\n    compression: {kind}\n  file/{kind}:\n    path: {}\n",
            dir.join(format!("{kind}.jsonl")).display()
        ));
        pipelines.push_str(&format!(
            "    traces/{kind}: {{receivers: [otlp/{kind}], exporters: [file/{kind}]}}\n"
        ));
    }
    let text = format!(
        "{receivers}processors:\n  batch:\n    send_batch_size: 1000\n    timeout: 100ms\n{exporters}{pipelines}  telemetry: {{metrics: {{level: none}}}}\n"
    );
    let config = Config::load_sources(&[("compression.yaml".into(), text)]).unwrap();
    let registry = Registry::default();
    let service = Service::start(&config, registry.clone()).await.unwrap();
    let report = loadgen::run(Options {
        endpoint: Some(format!("127.0.0.1:{grpc_port}")),
        count: Some(5000),
        batch: 250,
        rate: 0.0,
        ..Options::default()
    })
    .await;
    assert_eq!(report.items_accepted, 5000, "{report}");
    wait_for("every exporter", Duration::from_secs(20), || {
        kinds.iter().all(|k| {
            registry.value("otelcol_exporter_sent_spans_total", &format!("file/{k}")) == 5000
        })
    })
    .await;
    service.shutdown().await;
    let sorted = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    let expected = sorted("direct.jsonl");
    assert!(!expected.is_empty());
    for kind in kinds {
        assert_eq!(
            registry.value("otelcol_exporter_sent_spans_total", &format!("otlp/{kind}")),
            5000
        );
        assert!(
            sorted(&format!("{kind}.jsonl")) == expected,
            "{kind} changed the data"
        );
    }
}

/// Counts spans in the file exporter's OTLP/JSON lines per (service, span name, kind, status).
fn span_counts(text: &str) -> std::collections::BTreeMap<(String, String, String, String), i64> {
    let kinds = [
        "SPAN_KIND_UNSPECIFIED",
        "SPAN_KIND_INTERNAL",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        "SPAN_KIND_PRODUCER",
        "SPAN_KIND_CONSUMER",
    ];
    let codes = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
                .unwrap();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for sp in ss["spans"].as_array().unwrap() {
                    let kind = sp["kind"].as_u64().unwrap_or(0) as usize;
                    let code = sp["status"]["code"].as_u64().unwrap_or(0) as usize;
                    *out.entry((
                        service.clone(),
                        sp["name"].as_str().unwrap().to_string(),
                        kinds[kind].to_string(),
                        codes[code].to_string(),
                    ))
                    .or_insert(0) += 1;
                }
            }
        }
    }
    out
}

/// Runs a config whose `file/traces` and `file/metrics` exporters write to a temporary
/// directory (`sections`: its connectors and processors; `pipelines`: its
/// `service.pipelines`) under `spans` loadgen spans with `error_ratio`, waits until span
/// metrics counted them all, shuts down, and returns what the two files hold.
async fn run_span_metrics(
    name: &str,
    sections: &str,
    pipelines: &str,
    spans: u64,
    error_ratio: f64,
) -> (String, String) {
    let grpc_port = free_port();
    let dir = temp_dir(name);
    let (traces, metrics) = (dir.join("traces.jsonl"), dir.join("metrics.jsonl"));
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n\
{sections}exporters:\n  file/traces:\n    path: {}\n  file/metrics:\n    path: {}\n\
service:\n  pipelines:\n{pipelines}  telemetry: {{metrics: {{level: none}}}}\n",
        traces.display(),
        metrics.display()
    );
    let config = Config::load_sources(&[(format!("{name}.yaml"), text)]).unwrap();
    let registry = Registry::default();
    let service = Service::start(&config, registry.clone()).await.unwrap();
    let report = loadgen::run(Options {
        endpoint: Some(format!("127.0.0.1:{grpc_port}")),
        count: Some(spans),
        batch: 100,
        rate: 0.0,
        error_ratio,
        ..Options::default()
    })
    .await;
    assert_eq!(report.items_accepted, spans, "{report}");
    wait_for(
        "span metrics to count every span",
        Duration::from_secs(10),
        || registry.value("sluice_spanmetrics_spans_total", "") == spans,
    )
    .await;
    // The flush interval is an hour: the metrics come from the flush at shutdown.
    service.shutdown().await;
    (
        std::fs::read_to_string(&traces).unwrap(),
        std::fs::read_to_string(&metrics).unwrap(),
    )
}

/// Every point of the span-metrics metric `name` in the file exporter's OTLP/JSON lines:
/// its string attributes and the point itself.
fn points(
    text: &str,
    name: &str,
) -> Vec<(
    std::collections::BTreeMap<String, String>,
    serde_json::Value,
)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rm in v["resourceMetrics"].as_array().unwrap() {
            for sm in rm["scopeMetrics"].as_array().unwrap() {
                assert_eq!(sm["scope"]["name"], "spanmetricsconnector");
                for m in sm["metrics"].as_array().unwrap() {
                    if m["name"] != name {
                        continue;
                    }
                    let data = if m["sum"].is_object() {
                        &m["sum"]
                    } else {
                        &m["histogram"]
                    };
                    for p in data["dataPoints"].as_array().unwrap() {
                        let attrs = p["attributes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter_map(|a| {
                                let s = a["value"]["stringValue"].as_str()?;
                                Some((a["key"].as_str().unwrap().to_string(), s.to_string()))
                            })
                            .collect();
                        out.push((attrs, p.clone()));
                    }
                }
            }
        }
    }
    out
}

fn count(p: &serde_json::Value, key: &str) -> i64 {
    p[key].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_metrics_through_connectors_count_every_span_the_trace_pipeline_saw() {
    let (traces, metrics) = run_span_metrics(
        "connectors",
        "connectors:\n  forward:\n  spanmetrics:\n    metrics_flush_interval: 1h\n",
        "    traces/in: {receivers: [otlp], exporters: [forward]}\n    traces/out: {receivers: [forward], exporters: [file/traces]}\n    traces/red: {receivers: [forward], exporters: [spanmetrics]}\n    metrics: {receivers: [spanmetrics], exporters: [file/metrics]}\n",
        3000,
        0.1,
    )
    .await;
    let expected = span_counts(&traces);
    assert_eq!(expected.values().sum::<i64>(), 3000);
    assert!(
        expected.keys().any(|k| k.3 == "STATUS_CODE_ERROR"),
        "the load has errors"
    );
    let mut got = std::collections::BTreeMap::new();
    for (a, p) in points(&metrics, "traces.span.metrics.calls") {
        let key = (
            a["service.name"].clone(),
            a["span.name"].clone(),
            a["span.kind"].clone(),
            a["status.code"].clone(),
        );
        assert!(
            got.insert(key, count(&p, "asInt")).is_none(),
            "one point per series"
        );
    }
    assert_eq!(got, expected);
    let durations = points(&metrics, "traces.span.metrics.duration");
    assert_eq!(durations.len(), got.len());
    assert_eq!(
        durations
            .iter()
            .map(|(_, p)| count(p, "count"))
            .sum::<i64>(),
        3000
    );
    assert!(metrics.contains("\"unit\":\"ms\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cardinality_processor_bounds_span_metrics_without_losing_counts() {
    let (traces, metrics) = run_span_metrics(
        "spanmetrics-cardinality",
        "connectors:\n  spanmetrics:\n    metrics_flush_interval: 1h\nprocessors:\n  cardinality:\n    drop_labels: [span.name]\n",
        "    traces: {receivers: [otlp], exporters: [spanmetrics, file/traces]}\n    metrics: {receivers: [spanmetrics], processors: [cardinality], exporters: [file/metrics]}\n",
        2000,
        0.2,
    )
    .await;
    // Ground truth without span names: (service, kind, status) -> spans.
    let mut expected = std::collections::BTreeMap::new();
    for ((service, _, kind, status), n) in span_counts(&traces) {
        *expected.entry((service, kind, status)).or_insert(0) += n;
    }
    let mut got = std::collections::BTreeMap::new();
    for (a, p) in points(&metrics, "traces.span.metrics.calls") {
        assert!(!a.contains_key("span.name"), "span.name dropped: {a:?}");
        let key = (
            a["service.name"].clone(),
            a["span.kind"].clone(),
            a["status.code"].clone(),
        );
        // Cumulative: the last point of each series is its total.
        got.insert(key, count(&p, "asInt"));
    }
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(got, expected);
}
