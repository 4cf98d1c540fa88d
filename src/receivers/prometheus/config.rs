//! The `prometheus` receiver's settings: the collector's wrapper keys around a Prometheus
//! `scrape_configs` section, with Prometheus' defaults. Keys sluice does not implement are
//! named and refused with their location instead of being ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::relabel::{self, RelabelConfig};

/// A key sluice recognises but does not implement yet: setting it fails, located.
#[derive(Clone, Debug)]
pub struct Unsupported;

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom(
            "is not supported yet by sluice's prometheus receiver (static_configs and file_sd_configs targets over plain HTTP are)",
        ))
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusReceiverConfig {
    pub config: PromConfig,
    pub trim_metric_suffixes: Option<Unsupported>,
    pub use_start_time_metric: Option<Unsupported>,
    pub start_time_metric_regex: Option<Unsupported>,
    pub target_allocator: Option<Unsupported>,
    pub api_server: Option<Unsupported>,
    /// The extra series (`scrape_timeout_seconds`, `scrape_sample_limit`, ...) are not emitted.
    pub report_extra_scrape_metrics: Option<Unsupported>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromConfig {
    pub global: GlobalConfig,
    pub scrape_configs: Vec<ScrapeConfig>,
    pub scrape_config_files: Option<Unsupported>,
    pub rule_files: Option<Unsupported>,
    pub alerting: Option<Unsupported>,
    pub remote_write: Option<Unsupported>,
    pub remote_read: Option<Unsupported>,
    pub storage: Option<Unsupported>,
    pub tracing: Option<Unsupported>,
    pub runtime: Option<Unsupported>,
    pub otlp: Option<Unsupported>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    #[serde(deserialize_with = "prom_duration")]
    pub scrape_interval: Duration,
    #[serde(deserialize_with = "prom_duration")]
    pub scrape_timeout: Duration,
    #[serde(deserialize_with = "prom_duration")]
    pub evaluation_interval: Duration,
    pub external_labels: Option<Unsupported>,
    pub query_log_file: Option<Unsupported>,
    pub scrape_protocols: Option<Vec<String>>,
    pub body_size_limit: Option<ByteSize>,
    pub sample_limit: Option<u64>,
    pub label_limit: Option<u64>,
    pub label_name_length_limit: Option<u64>,
    pub label_value_length_limit: Option<u64>,
    pub target_limit: Option<Unsupported>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
            evaluation_interval: Duration::from_secs(60),
            external_labels: None,
            query_log_file: None,
            scrape_protocols: None,
            body_size_limit: None,
            sample_limit: None,
            label_limit: None,
            label_name_length_limit: None,
            label_value_length_limit: None,
            target_limit: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(deserialize_with = "opt_prom_duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(deserialize_with = "opt_prom_duration")]
    pub scrape_timeout: Option<Duration>,
    pub metrics_path: Option<String>,
    pub scheme: Option<String>,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: Option<bool>,
    pub track_timestamps_staleness: Option<bool>,
    pub enable_compression: Option<bool>,
    pub scrape_protocols: Option<Vec<String>>,
    pub static_configs: Vec<StaticConfig>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    pub sample_limit: Option<u64>,
    pub label_limit: Option<u64>,
    pub label_name_length_limit: Option<u64>,
    pub label_value_length_limit: Option<u64>,
    pub body_size_limit: Option<ByteSize>,
    pub follow_redirects: Option<bool>,
    pub enable_http2: Option<bool>,

    pub target_limit: Option<Unsupported>,
    pub keep_dropped_targets: Option<Unsupported>,
    pub fallback_scrape_protocol: Option<Unsupported>,
    pub scrape_classic_histograms: Option<Unsupported>,
    pub always_scrape_classic_histograms: Option<Unsupported>,
    pub native_histogram_bucket_limit: Option<Unsupported>,
    pub native_histogram_min_bucket_factor: Option<Unsupported>,
    pub metric_name_validation_scheme: Option<Unsupported>,
    pub metric_name_escaping_scheme: Option<Unsupported>,
    pub basic_auth: Option<Unsupported>,
    pub authorization: Option<Unsupported>,
    pub bearer_token: Option<Unsupported>,
    pub bearer_token_file: Option<Unsupported>,
    pub oauth2: Option<Unsupported>,
    pub tls_config: Option<Unsupported>,
    pub proxy_url: Option<Unsupported>,
    pub no_proxy: Option<Unsupported>,
    pub proxy_from_environment: Option<Unsupported>,
    pub proxy_connect_header: Option<Unsupported>,
    pub http_headers: Option<Unsupported>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub kubernetes_sd_configs: Option<Unsupported>,
    pub http_sd_configs: Option<Unsupported>,
    pub dns_sd_configs: Option<Unsupported>,
    pub consul_sd_configs: Option<Unsupported>,
    pub ec2_sd_configs: Option<Unsupported>,
    pub gce_sd_configs: Option<Unsupported>,
    pub azure_sd_configs: Option<Unsupported>,
    pub docker_sd_configs: Option<Unsupported>,
    pub dockerswarm_sd_configs: Option<Unsupported>,
    pub eureka_sd_configs: Option<Unsupported>,
    pub openstack_sd_configs: Option<Unsupported>,
    pub digitalocean_sd_configs: Option<Unsupported>,
    pub hetzner_sd_configs: Option<Unsupported>,
    pub linode_sd_configs: Option<Unsupported>,
    pub marathon_sd_configs: Option<Unsupported>,
    pub nomad_sd_configs: Option<Unsupported>,
    pub serverset_sd_configs: Option<Unsupported>,
    pub triton_sd_configs: Option<Unsupported>,
    pub uyuni_sd_configs: Option<Unsupported>,
    pub scaleway_sd_configs: Option<Unsupported>,
    pub puppetdb_sd_configs: Option<Unsupported>,
    pub lightsail_sd_configs: Option<Unsupported>,
    pub ionos_sd_configs: Option<Unsupported>,
    pub vultr_sd_configs: Option<Unsupported>,
    pub kuma_sd_configs: Option<Unsupported>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// `file_sd_configs[]`: JSON or YAML files of `{targets, labels}` groups, re-read every
/// `refresh_interval`; a glob (`*`, `?`) is allowed in the file name.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default = "default_refresh", deserialize_with = "prom_duration")]
    pub refresh_interval: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

/// A scrape job with Prometheus' defaults filled in and its rules compiled.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub enable_compression: bool,
    pub accept: String,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd: Vec<FileSdConfig>,
    pub relabel: Vec<relabel::Rule>,
    pub metric_relabel: Vec<relabel::Rule>,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    /// Zero means no limit of the job's own; the receiver still caps bodies (see scrape.rs).
    pub body_size_limit: u64,
}

impl PrometheusReceiverConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.jobs().map(|_| ())
    }

    /// Resolves every scrape config against the global defaults.
    pub fn jobs(&self) -> Result<Vec<Job>, String> {
        let global = &self.config.global;
        if global.scrape_timeout > global.scrape_interval {
            return Err(
                "config.global.scrape_timeout must not be greater than scrape_interval".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut jobs = Vec::new();
        for (i, sc) in self.config.scrape_configs.iter().enumerate() {
            let at = format!("config.scrape_configs[{i}]");
            if sc.job_name.is_empty() {
                return Err(format!("{at}.job_name is required"));
            }
            if !seen.insert(sc.job_name.clone()) {
                return Err(format!("{at}: duplicate job_name `{}`", sc.job_name));
            }
            let interval = sc.scrape_interval.unwrap_or(global.scrape_interval);
            let timeout = match sc.scrape_timeout {
                Some(t) => t,
                None => global.scrape_timeout.min(interval),
            };
            if timeout > interval {
                return Err(format!(
                    "{at}: scrape_timeout ({timeout:?}) must not be greater than scrape_interval ({interval:?})"
                ));
            }
            if interval.is_zero() {
                return Err(format!("{at}.scrape_interval must be greater than zero"));
            }
            let scheme = sc.scheme.clone().unwrap_or_else(|| "http".into());
            match scheme.as_str() {
                "http" => {}
                "https" => {
                    return Err(format!(
                        "{at}.scheme `https` is not supported yet (scraping over TLS)"
                    ));
                }
                other => {
                    return Err(format!(
                        "{at}.scheme must be `http` or `https`, not `{other}`"
                    ));
                }
            }
            let protocols = sc
                .scrape_protocols
                .as_ref()
                .or(global.scrape_protocols.as_ref());
            let accept = accept_header(protocols.map(Vec::as_slice))
                .map_err(|e| format!("{at}.scrape_protocols: {e}"))?;
            let relabel = relabel::compile_all(&sc.relabel_configs)
                .map_err(|e| format!("{at}.relabel_configs: {e}"))?;
            let metric_relabel = relabel::compile_all(&sc.metric_relabel_configs)
                .map_err(|e| format!("{at}.metric_relabel_configs: {e}"))?;
            for (j, st) in sc.static_configs.iter().enumerate() {
                for name in st.labels.keys() {
                    if !super::parser::is_label_name(name) {
                        return Err(format!(
                            "{at}.static_configs[{j}].labels: `{name}` is not a valid label name"
                        ));
                    }
                }
            }
            for (j, fsd) in sc.file_sd_configs.iter().enumerate() {
                if fsd.files.is_empty() {
                    return Err(format!("{at}.file_sd_configs[{j}].files must not be empty"));
                }
                if fsd.refresh_interval.is_zero() {
                    return Err(format!(
                        "{at}.file_sd_configs[{j}].refresh_interval must be greater than zero"
                    ));
                }
                for f in &fsd.files {
                    let (dir, name) = f.rsplit_once('/').unwrap_or(("", f));
                    if dir.contains(['*', '?', '[']) {
                        return Err(format!(
                            "{at}.file_sd_configs[{j}].files: `{f}`: a glob is only allowed in the file name"
                        ));
                    }
                    if !(name.ends_with(".json")
                        || name.ends_with(".yml")
                        || name.ends_with(".yaml"))
                    {
                        return Err(format!(
                            "{at}.file_sd_configs[{j}].files: `{f}` must end in .json, .yml or .yaml"
                        ));
                    }
                }
            }
            jobs.push(Job {
                name: sc.job_name.clone(),
                interval,
                timeout,
                metrics_path: sc.metrics_path.clone().unwrap_or_else(|| "/metrics".into()),
                scheme,
                params: sc.params.clone(),
                honor_labels: sc.honor_labels,
                honor_timestamps: sc.honor_timestamps.unwrap_or(true),
                enable_compression: sc.enable_compression.unwrap_or(true),
                accept,
                static_configs: sc.static_configs.clone(),
                file_sd: sc.file_sd_configs.clone(),
                relabel,
                metric_relabel,
                sample_limit: sc.sample_limit.or(global.sample_limit).unwrap_or(0),
                label_limit: sc.label_limit.or(global.label_limit).unwrap_or(0),
                label_name_length_limit: sc
                    .label_name_length_limit
                    .or(global.label_name_length_limit)
                    .unwrap_or(0),
                label_value_length_limit: sc
                    .label_value_length_limit
                    .or(global.label_value_length_limit)
                    .unwrap_or(0),
                body_size_limit: sc
                    .body_size_limit
                    .or(global.body_size_limit)
                    .map(|b| b.0)
                    .unwrap_or(0),
            });
        }
        Ok(jobs)
    }
}

/// The `Accept` header for `scrape_protocols`, with Prometheus' default order and weights.
fn accept_header(protocols: Option<&[String]>) -> Result<String, String> {
    const DEFAULT: &[&str] = &[
        "OpenMetricsText1.0.0",
        "OpenMetricsText0.0.1",
        "PrometheusText0.0.4",
    ];
    let names: Vec<&str> = match protocols {
        Some(p) => p.iter().map(String::as_str).collect(),
        None => DEFAULT.to_vec(),
    };
    let mut parts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let media = match *name {
            "OpenMetricsText1.0.0" => "application/openmetrics-text;version=1.0.0",
            "OpenMetricsText0.0.1" => "application/openmetrics-text;version=0.0.1",
            "PrometheusText0.0.4" => "text/plain;version=0.0.4",
            "PrometheusText1.0.0" => "text/plain;version=1.0.0",
            "PrometheusProto" => {
                return Err("`PrometheusProto` (native histograms) is not supported yet".into());
            }
            other => return Err(format!("unknown scrape protocol `{other}`")),
        };
        let weight = 1.0 - 0.25 * i as f64;
        if i == 0 {
            parts.push(media.to_string());
        } else {
            parts.push(format!("{media};q={}", weight.max(0.2)));
        }
    }
    parts.push("*/*;q=0.1".into());
    Ok(parts.join(","))
}

/// Prometheus durations: `1y2w3d4h5m6s7ms`, no fractions.
pub fn parse_prom_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let ms = match rest.as_bytes().first()? {
                b'y' => 365 * 24 * 3_600_000,
                b'w' => 7 * 24 * 3_600_000,
                b'd' => 24 * 3_600_000,
                b'h' => 3_600_000,
                b'm' => 60_000,
                b's' => 1000,
                _ => return None,
            };
            (ms, 1)
        };
        rest = &rest[len..];
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

fn prom_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_prom_duration(&s).ok_or_else(|| {
        de::Error::custom(format!(
            "expected a Prometheus duration like `15s`, `1m` or `1h30m`, found `{s}`"
        ))
    })
}

fn opt_prom_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    prom_duration(d).map(Some)
}

/// A size as Prometheus writes it (`0`, `512`, `10KB`, `100MB`, `1GiB`; powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_byte_size(&s).map(ByteSize).ok_or_else(|| {
            de::Error::custom(format!("expected a size like `10MB` or `0`, found `{s}`"))
        })
    }
}

pub fn parse_byte_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s.get(..digits)?.parse().ok()?;
    let mult: u64 = match &s[digits..] {
        "" | "B" => 1,
        "KB" | "KiB" | "K" => 1 << 10,
        "MB" | "MiB" | "M" => 1 << 20,
        "GB" | "GiB" | "G" => 1 << 30,
        "TB" | "TiB" | "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<PrometheusReceiverConfig, String> {
        let node = crate::config::node::parse("t.yaml", yaml).map_err(|e| e.to_string())?;
        let c: PrometheusReceiverConfig =
            crate::config::node::from_node(&node, "receivers.prometheus")
                .map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn prometheus_defaults() {
        let c = load(
            "config:\n  scrape_configs:\n    - job_name: a\n      static_configs: [{targets: ['h:1']}]\n",
        )
        .unwrap();
        let job = &c.jobs().unwrap()[0];
        assert_eq!(job.interval, Duration::from_secs(60));
        assert_eq!(job.timeout, Duration::from_secs(10));
        assert_eq!(job.metrics_path, "/metrics");
        assert_eq!(job.scheme, "http");
        assert!(job.honor_timestamps && !job.honor_labels);
        assert!(
            job.accept
                .starts_with("application/openmetrics-text;version=1.0.0,")
        );
        assert!(job.accept.contains("text/plain;version=0.0.4;q=0.5"));
    }

    #[test]
    fn timeout_follows_a_short_interval() {
        let c = load("config:\n  scrape_configs:\n    - job_name: a\n      scrape_interval: 5s\n")
            .unwrap();
        assert_eq!(c.jobs().unwrap()[0].timeout, Duration::from_secs(5));
        assert!(
            load("config:\n  scrape_configs:\n    - job_name: a\n      scrape_interval: 5s\n      scrape_timeout: 6s\n")
                .unwrap_err()
                .contains("must not be greater")
        );
    }

    #[test]
    fn unsupported_keys_are_named_with_their_location() {
        let e = load(
            "config:\n  scrape_configs:\n    - job_name: a\n      kubernetes_sd_configs:\n        - role: pod\n",
        )
        .unwrap_err();
        assert!(e.contains("t.yaml:5:"), "{e}");
        assert!(
            e.contains("receivers.prometheus.config.scrape_configs[0].kubernetes_sd_configs"),
            "{e}"
        );
        assert!(e.contains("not supported yet"), "{e}");
        let e = load("config:\n  scrape_configs:\n    - job_name: a\n      scrap_interval: 5s\n")
            .unwrap_err();
        assert!(e.contains("unknown key `scrap_interval`"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_prom_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_prom_duration("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(
            parse_prom_duration("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_prom_duration("1.5s"), None);
        assert_eq!(parse_prom_duration(""), None);
        assert_eq!(parse_byte_size("10MB"), Some(10 << 20));
        assert_eq!(parse_byte_size("0"), Some(0));
        assert_eq!(parse_byte_size("10 MB"), None);
    }
}
