//! Every invalid fixture fails with a message that names file, line, column, key path and
//! what is wrong; every valid fixture and every shipped config loads.

use std::path::{Path, PathBuf};

use sluice::config::Config;

fn fixture(kind: &str, name: &str) -> String {
    format!(
        "{}/tests/fixtures/config/{kind}/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn error_of(name: &str) -> String {
    match Config::load_files(&[fixture("invalid", name)]) {
        Ok(_) => panic!("{name} should be rejected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_fixtures_name_location_path_and_fix() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown_key",
            ":5:9: receivers.otlp.protocols.grpc.endpont",
            "unknown key `endpont`; did you mean `endpoint`?",
        ),
        (
            "unknown_type",
            ":2:3: receivers.otlpp",
            "unknown receiver type `otlpp`; did you mean `otlp`?",
        ),
        (
            "prometheus_kubernetes_sd",
            ":7:13: receivers.prometheus.config.scrape_configs[0].kubernetes_sd_configs",
            "is not supported yet",
        ),
        (
            "not_supported",
            ":5:3: processors.groupbytrace",
            "`groupbytrace` is not supported yet",
        ),
        (
            "loadbalancing_k8s",
            ":5:3: exporters.loadbalancing",
            "resolver.k8s is not supported yet",
        ),
        (
            "loadbalancing_resolver_key",
            ":12:9: exporters.load_balancing.resolver.dns.intervall",
            "unknown key `intervall`; did you mean `interval`?",
        ),
        (
            "tail_sampling_unknown_policy",
            ":8:15: processors.tail_sampling.policies[0].type",
            "unknown value `latncy`; did you mean `latency`?",
        ),
        (
            "tail_sampling_ottl",
            ":10:9: processors.tail_sampling.policies[1]",
            "`ottl_condition` policies are not supported",
        ),
        (
            "wrong_type",
            ":5:32: receivers.otlp.protocols.grpc.max_recv_msg_size_mib",
            "found string `lots`",
        ),
        (
            "bad_duration",
            ":6:14: processors.batch.timeout",
            "expected a duration like `200ms` or `10s`, found `5 seconds`",
        ),
        (
            "undefined_exporter",
            ":10:26: service.pipelines.traces.exporters[1]",
            "exporter `otlp/missing` is not defined under `exporters`",
        ),
        (
            "no_receiver",
            ":8:5: service.pipelines.traces",
            "a pipeline needs at least one receiver",
        ),
        (
            "duplicate_processor",
            ":12:27: service.pipelines.logs.processors[1]",
            "`batch` is listed twice in this pipeline",
        ),
        (
            "bad_pipeline_type",
            ":8:5: service.pipelines.spans",
            "unknown pipeline type `spans`",
        ),
        (
            "tls_exporter",
            ":5:3: exporters.otlp",
            "TLS to backends is not supported yet",
        ),
        ("yaml_syntax", ":4:10", "did not find expected ',' or '}'"),
        (
            "unknown_top_level",
            ":4:1: exporter",
            "did you mean `exporters`?",
        ),
        (
            "batch_sizes",
            ":5:3: processors.batch",
            "send_batch_max_size must be greater or equal to send_batch_size",
        ),
        (
            "receiver_tls",
            ":2:3: receivers.otlp",
            "protocols.http.tls is not supported yet",
        ),
        (
            "probabilistic_sampler_metrics",
            ":11:47: service.pipelines.metrics.processors[0]",
            "`probabilistic_sampler` does not support metrics",
        ),
        (
            "probabilistic_sampler_precision",
            ":5:3: processors.probabilistic_sampler",
            "sampling precision is too great, should be <= 14: 15",
        ),
        (
            "cardinality_gauge_aggregation",
            ":7:24: processors.cardinality.gauge_aggregation",
            "unknown gauge_aggregation `average` (expected last, sum, max or min)",
        ),
        (
            "attributes_include",
            ":5:3: processors.attributes",
            "include/exclude matching is not supported yet",
        ),
        (
            "filelog_operator",
            ":6:15: receivers.file_log.operators[1].type",
            "`recombine` operator is not supported yet",
        ),
        (
            "connector_unfed",
            ":6:3: connectors.spanmetrics",
            "connector `spanmetrics` is used as an exporter of pipeline `traces` but not as a receiver of any pipeline",
        ),
        (
            "connector_cycle",
            ":7:3: connectors.forward/b",
            "cycle detected: pipeline `traces/in` -> connector `forward/a` -> pipeline `traces/loop` -> connector `forward/b` -> pipeline `traces/in`",
        ),
        (
            "connector_signal",
            ":13:19: service.pipelines.logs.exporters[0]",
            "connector `spanmetrics` cannot be an exporter of a logs pipeline (only of traces)",
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        on_disk,
        cases.len(),
        "every invalid fixture needs an expected message"
    );
    for (name, location, message) in cases {
        let err = error_of(name);
        let file = fixture("invalid", name);
        assert!(
            err.starts_with(&format!("{file}{location}")),
            "{name}: {err}"
        );
        assert!(err.contains(message), "{name}: {err}");
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_shipped_config_and_valid_fixture_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = yaml_files(&root.join("configs"));
    files.retain(|p| !p.to_string_lossy().contains("/kubernetes/"));
    files.extend(yaml_files(&root.join("tests/fixtures/config/valid")));
    assert!(files.len() >= 3, "expected configs, found {files:?}");
    for file in files {
        let path = file.to_string_lossy().to_string();
        if let Err(e) = Config::load_files(std::slice::from_ref(&path)) {
            panic!("{path} should load: {e}");
        }
    }
}

#[test]
fn kubernetes_manifests_embed_valid_configs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/kubernetes");
    let mut checked = 0;
    for file in yaml_files(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        // The ConfigMap's `sluice.yaml: |` block, de-indented.
        let Some(start) = text.find("sluice.yaml: |") else {
            continue;
        };
        let block: Vec<&str> = text[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
            .collect();
        let config: String = block
            .iter()
            .map(|l| l.get(4..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let name = file.to_string_lossy().to_string();
        if let Err(e) = Config::load_sources(&[(name.clone(), config)]) {
            panic!("{name}: embedded config should load: {e}");
        }
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no ConfigMap with sluice.yaml found under configs/kubernetes"
    );
}

#[test]
fn kubernetes_configmap_is_configs_agent_yaml() {
    // The DaemonSet mounts configs/agent.yaml: its ConfigMap embeds the file verbatim, so the
    // two cannot drift apart (tests/e2e/test_manifests.py checks the same with a YAML parser).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let agent = std::fs::read_to_string(root.join("configs/agent.yaml")).unwrap();
    let manifest = std::fs::read_to_string(root.join("configs/kubernetes/daemonset.yaml")).unwrap();
    let start = manifest
        .find("  sluice.yaml: |\n")
        .expect("daemonset.yaml has a ConfigMap with sluice.yaml");
    let mut embedded: String = manifest[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    // A YAML literal block (`|`) keeps exactly one final newline.
    while embedded.ends_with("\n\n") {
        embedded.pop();
    }
    assert!(
        embedded == agent,
        "the ConfigMap's sluice.yaml in configs/kubernetes/daemonset.yaml differs from configs/agent.yaml"
    );
}

#[test]
fn the_embedded_default_config_loads() {
    let config = Config::load_default().unwrap();
    assert_eq!(config.service.pipelines.len(), 3);
    assert_eq!(
        config.service.telemetry.metrics_address.as_deref(),
        Some("127.0.0.1:8888")
    );
}

#[test]
fn later_files_win_when_merged() {
    let base = (
        "base.yaml".to_string(),
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:1111\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n".to_string(),
    );
    let over = (
        "over.yaml".to_string(),
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:2222\n"
            .to_string(),
    );
    let config = Config::load_sources(&[base, over]).unwrap();
    let sluice::config::ReceiverConfig::Otlp(otlp) = &config.receivers[0].config else {
        panic!("expected the otlp receiver");
    };
    assert_eq!(
        otlp.protocols.grpc.as_ref().unwrap().endpoint,
        "127.0.0.1:2222"
    );
}

#[test]
fn env_variables_are_substituted_with_defaults() {
    let text = "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: ${env:SLUICE_IT_UNSET_VAR:-127.0.0.1:3333}\n        max_request_body_size: ${env:SLUICE_IT_UNSET_SIZE:-1024}\nexporters:\n  debug:\nservice:\n  pipelines:\n    logs: {receivers: [otlp], exporters: [debug]}\n";
    let config = Config::load_sources(&[("env.yaml".into(), text.into())]).unwrap();
    let sluice::config::ReceiverConfig::Otlp(otlp) = &config.receivers[0].config else {
        panic!("expected the otlp receiver");
    };
    let http = otlp.protocols.http.as_ref().unwrap();
    assert_eq!(http.endpoint, "127.0.0.1:3333");
    assert_eq!(http.max_request_body_size, 1024);
}

#[test]
fn renamed_components_are_accepted_under_both_names() {
    let text = "receivers:\n  otlp:\n    protocols: {grpc: }\nexporters:\n  otlp_grpc:\n    endpoint: a:4317\n    tls: {insecure: true}\n  otlp_http:\n    endpoint: http://b:4318\n  otlphttp/old:\n    endpoint: http://c:4318\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [otlp_grpc, otlp_http, otlphttp/old]}\n";
    assert!(Config::load_sources(&[("renamed.yaml".into(), text.into())]).is_ok());
}

#[test]
fn prometheus_dollar_escaping_is_the_collectors() {
    // `$$` is a literal `$` (the collector's rule for Prometheus configs); `${1}` alone would
    // be read as an environment variable and is refused.
    let text = "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n        - job_name: a\n          relabel_configs:\n            - source_labels: [__address__]\n              regex: '(.+):\\d+'\n              target_label: host\n              replacement: '$${1}-$$1'\nexporters:\n  debug:\nservice:\n  pipelines:\n    metrics: {receivers: [prometheus], exporters: [debug]}\n";
    let config = Config::load_sources(&[("prom.yaml".into(), text.into())]).unwrap();
    let sluice::config::ReceiverConfig::Prometheus(prom) = &config.receivers[0].config else {
        panic!("not prometheus")
    };
    let rule = &prom.config.scrape_configs[0].relabel_configs[0];
    assert_eq!(rule.replacement, "${1}-$1");
    assert_eq!(rule.regex, "(.+):\\d+");
}
