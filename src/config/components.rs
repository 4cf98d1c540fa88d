//! Which component types exist, under which names (old and new spellings), which signals
//! they carry, and the typed settings of each.

use super::ComponentId;
use super::error::{ConfigError, Loc, closest};
use super::node::{self, Node};
use crate::connectors::ConnectorConfig;
use crate::connectors::spanmetrics::SpanMetricsConfig;
use crate::exporters::debug::DebugExporterConfig;
use crate::exporters::file::FileExporterConfig;
use crate::exporters::loadbalancing::LoadBalancingConfig;
use crate::exporters::otlp::OtlpExporterConfig;
use crate::exporters::otlphttp::OtlpHttpExporterConfig;
use crate::exporters::prometheusremotewrite::PrometheusRemoteWriteConfig;
use crate::extensions::file_storage::FileStorageConfig;
use crate::otlp::Signal;
use crate::processors::attributes::AttributesConfig;
use crate::processors::batch::BatchConfig;
use crate::processors::cardinality::CardinalityConfig;
use crate::processors::memory_limiter::MemoryLimiterConfig;
use crate::processors::probabilistic_sampler::ProbabilisticSamplerConfig;
use crate::processors::tail_sampling::config::TailSamplingConfig;
use crate::receivers::filelog::config::FilelogConfig;
use crate::receivers::filelog::operators::parse_operators;
use crate::receivers::otlp::config::OtlpReceiverConfig;
use crate::receivers::prometheus::config::PrometheusReceiverConfig;
use crate::telemetry::health::HealthCheckConfig;

const ALL: &[Signal] = &Signal::ALL;
const TRACES_AND_LOGS: &[Signal] = &[Signal::Traces, Signal::Logs];
const LOGS: &[Signal] = &[Signal::Logs];
const METRICS: &[Signal] = &[Signal::Metrics];

#[derive(Clone, Debug)]
pub enum ReceiverConfig {
    Otlp(OtlpReceiverConfig),
    Filelog(FilelogConfig),
    Prometheus(PrometheusReceiverConfig),
}

impl ReceiverConfig {
    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ReceiverConfig::Otlp(_) => ALL,
            ReceiverConfig::Filelog(_) => LOGS,
            ReceiverConfig::Prometheus(_) => METRICS,
        }
    }
}

#[derive(Clone, Debug)]
pub enum ProcessorConfig {
    Batch(BatchConfig),
    MemoryLimiter(MemoryLimiterConfig),
    ProbabilisticSampler(ProbabilisticSamplerConfig),
    Cardinality(CardinalityConfig),
    Attributes(AttributesConfig),
    TailSampling(Box<TailSamplingConfig>),
}

impl ProcessorConfig {
    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ProcessorConfig::Batch(_)
            | ProcessorConfig::MemoryLimiter(_)
            | ProcessorConfig::Cardinality(_)
            | ProcessorConfig::Attributes(_) => ALL,
            ProcessorConfig::ProbabilisticSampler(_) => TRACES_AND_LOGS,
            ProcessorConfig::TailSampling(_) => &[Signal::Traces],
        }
    }
}

#[derive(Clone, Debug)]
pub enum ExporterConfig {
    Otlp(OtlpExporterConfig),
    OtlpHttp(OtlpHttpExporterConfig),
    File(FileExporterConfig),
    Debug(DebugExporterConfig),
    PrometheusRemoteWrite(Box<PrometheusRemoteWriteConfig>),
    LoadBalancing(Box<LoadBalancingConfig>),
}

impl ExporterConfig {
    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ExporterConfig::PrometheusRemoteWrite(_) => METRICS,
            ExporterConfig::LoadBalancing(_) => &[Signal::Traces],
            _ => ALL,
        }
    }
}

#[derive(Clone, Debug)]
pub enum ExtensionConfig {
    HealthCheck(HealthCheckConfig),
    FileStorage(FileStorageConfig),
}

/// Types the collector has that sluice does not yet: named so the error says "not supported
/// yet" rather than "unknown".
const PLANNED_RECEIVERS: &[&str] = &["hostmetrics", "kafka"];
const PLANNED_PROCESSORS: &[&str] = &[
    "resource",
    "filter",
    "transform",
    "k8sattributes",
    "k8s_attributes",
    "resourcedetection",
    "resource_detection",
    "groupbytrace",
];
const PLANNED_EXPORTERS: &[&str] = &["prometheus", "kafka"];
const PLANNED_CONNECTORS: &[&str] = &["count", "routing", "servicegraph", "exceptions"];
const PLANNED_EXTENSIONS: &[&str] = &["pprof", "zpages", "bearertokenauth", "basicauth"];

fn unknown_type(
    role: &str,
    id: &ComponentId,
    path: &str,
    loc: &Loc,
    supported: &[&str],
    planned: &[&str],
) -> ConfigError {
    if planned.contains(&id.kind.as_str()) {
        return ConfigError::at(loc, path, format!("`{}` is not supported yet", id.kind));
    }
    let hint = match closest(&id.kind, supported) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => String::new(),
    };
    ConfigError::at(
        loc,
        path,
        format!(
            "unknown {role} type `{}`{hint} (supported: {})",
            id.kind,
            supported.join(", ")
        ),
    )
}

pub fn parse_receiver(
    id: &ComponentId,
    body: &Node,
    path: &str,
    loc: &Loc,
) -> Result<ReceiverConfig, ConfigError> {
    match id.kind.as_str() {
        "otlp" => {
            let config: OtlpReceiverConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ReceiverConfig::Otlp(config))
        }
        // `file_log` is the collector's newer spelling; `filelog` stays.
        "filelog" | "file_log" => {
            let operators = parse_operators(body, path)?;
            let mut config: FilelogConfig = node::from_node(body, path)?;
            config.operators = operators;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ReceiverConfig::Filelog(config))
        }
        "prometheus" => {
            let config: PrometheusReceiverConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ReceiverConfig::Prometheus(config))
        }
        _ => Err(unknown_type(
            "receiver",
            id,
            path,
            loc,
            &["otlp", "filelog", "file_log", "prometheus"],
            PLANNED_RECEIVERS,
        )),
    }
}

pub fn parse_processor(
    id: &ComponentId,
    body: &Node,
    path: &str,
    loc: &Loc,
) -> Result<ProcessorConfig, ConfigError> {
    match id.kind.as_str() {
        "batch" => {
            let config: BatchConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ProcessorConfig::Batch(config))
        }
        "memory_limiter" => {
            let config: MemoryLimiterConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ProcessorConfig::MemoryLimiter(config))
        }
        "probabilistic_sampler" => {
            let config: ProbabilisticSamplerConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ProcessorConfig::ProbabilisticSampler(config))
        }
        "attributes" => {
            let config: AttributesConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ProcessorConfig::Attributes(config))
        }
        "cardinality" => {
            let config: CardinalityConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ProcessorConfig::Cardinality(config))
        }
        "tail_sampling" => {
            let config: TailSamplingConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ProcessorConfig::TailSampling(Box::new(config)))
        }
        _ => Err(unknown_type(
            "processor",
            id,
            path,
            loc,
            &[
                "attributes",
                "batch",
                "cardinality",
                "memory_limiter",
                "probabilistic_sampler",
                "tail_sampling",
            ],
            PLANNED_PROCESSORS,
        )),
    }
}

pub fn parse_exporter(
    id: &ComponentId,
    body: &Node,
    path: &str,
    loc: &Loc,
) -> Result<ExporterConfig, ConfigError> {
    let config = match id.kind.as_str() {
        // `otlp_grpc` and `otlp_http` are the collector's names since v0.144; the old ones stay.
        "otlp" | "otlp_grpc" => ExporterConfig::Otlp(node::from_node(body, path)?),
        "otlphttp" | "otlp_http" => ExporterConfig::OtlpHttp(node::from_node(body, path)?),
        "file" => ExporterConfig::File(node::from_node(body, path)?),
        "debug" => ExporterConfig::Debug(node::from_node(body, path)?),
        "prometheusremotewrite" | "prometheus_remote_write" => {
            ExporterConfig::PrometheusRemoteWrite(Box::new(node::from_node(body, path)?))
        }
        "loadbalancing" | "load_balancing" => {
            ExporterConfig::LoadBalancing(Box::new(node::from_node(body, path)?))
        }
        _ => {
            return Err(unknown_type(
                "exporter",
                id,
                path,
                loc,
                &[
                    "otlp",
                    "otlp_grpc",
                    "otlphttp",
                    "otlp_http",
                    "file",
                    "debug",
                    "prometheusremotewrite",
                    "prometheus_remote_write",
                    "loadbalancing",
                    "load_balancing",
                ],
                PLANNED_EXPORTERS,
            ));
        }
    };
    let checked = match &config {
        ExporterConfig::Otlp(c) => c.validate(),
        ExporterConfig::OtlpHttp(c) => c.validate(),
        ExporterConfig::File(c) => c.validate(),
        ExporterConfig::Debug(_) => Ok(()),
        ExporterConfig::PrometheusRemoteWrite(c) => c.validate(),
        ExporterConfig::LoadBalancing(c) => c.validate(),
    };
    checked.map_err(|e| ConfigError::at(loc, path, e))?;
    Ok(config)
}

pub fn parse_extension(
    id: &ComponentId,
    body: &Node,
    path: &str,
    loc: &Loc,
) -> Result<ExtensionConfig, ConfigError> {
    match id.kind.as_str() {
        "health_check" => Ok(ExtensionConfig::HealthCheck(node::from_node(body, path)?)),
        "file_storage" => {
            let config: FileStorageConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ExtensionConfig::FileStorage(config))
        }
        _ => Err(unknown_type(
            "extension",
            id,
            path,
            loc,
            &["health_check", "file_storage"],
            PLANNED_EXTENSIONS,
        )),
    }
}

pub fn parse_connector(
    id: &ComponentId,
    body: &Node,
    path: &str,
    loc: &Loc,
) -> Result<ConnectorConfig, ConfigError> {
    match id.kind.as_str() {
        "spanmetrics" => {
            let config: SpanMetricsConfig = node::from_node(body, path)?;
            config
                .validate()
                .map_err(|e| ConfigError::at(loc, path, e))?;
            Ok(ConnectorConfig::SpanMetrics(Box::new(config)))
        }
        "forward" => {
            if !matches!(&body.kind, node::NodeKind::Null)
                && !matches!(&body.kind, node::NodeKind::Map(m) if m.is_empty())
            {
                return Err(ConfigError::at(
                    loc,
                    path,
                    "the `forward` connector has no settings",
                ));
            }
            Ok(ConnectorConfig::Forward)
        }
        _ => Err(unknown_type(
            "connector",
            id,
            path,
            loc,
            &["spanmetrics", "forward"],
            PLANNED_CONNECTORS,
        )),
    }
}
