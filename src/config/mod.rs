//! The configuration contract: the OpenTelemetry Collector's YAML structure, component ids
//! `type[/name]`, env substitution, and validation whose errors point at file, line and key.

pub mod components;
pub mod error;
pub mod node;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

pub use crate::connectors::ConnectorConfig;
pub use components::{ExporterConfig, ExtensionConfig, ProcessorConfig, ReceiverConfig};
pub use error::{ConfigError, Loc};
use node::{Node, NodeKind};

use crate::otlp::Signal;

/// The embedded default config: OTLP in on loopback, batched, written to `./sluice-data/`.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/default.yaml");

/// A component id `type[/name]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub kind: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(text: &str) -> Result<ComponentId, String> {
        let (kind, name) = match text.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (text, None),
        };
        let valid_kind =
            !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_kind {
            return Err(format!(
                "invalid component id `{text}`: the type must be letters, digits or `_`"
            ));
        }
        if name.is_some_and(|n| n.is_empty() || n.contains('/')) {
            return Err(format!(
                "invalid component id `{text}`: expected `type` or `type/name`"
            ));
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind, n),
            None => f.write_str(&self.kind),
        }
    }
}

/// One configured component: its id, its typed settings and where it was defined.
#[derive(Clone, Debug)]
pub struct Component<T> {
    pub id: ComponentId,
    pub config: T,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// `traces`, `metrics/host`, ...
    pub id: String,
    pub signal: Signal,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// Where self-metrics are served; `None` when `level: none`.
    pub metrics_address: Option<String>,
    pub log_level: String,
    pub log_json: bool,
}

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub extensions: Vec<ComponentId>,
    pub pipelines: Vec<PipelineConfig>,
    pub telemetry: TelemetryConfig,
    /// How long shutdown may take before what is still queued is dropped and counted.
    pub shutdown_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub receivers: Vec<Component<ReceiverConfig>>,
    pub processors: Vec<Component<ProcessorConfig>>,
    pub exporters: Vec<Component<ExporterConfig>>,
    pub extensions: Vec<Component<ExtensionConfig>>,
    pub connectors: Vec<Component<ConnectorConfig>>,
    pub service: ServiceConfig,
}

impl Config {
    /// Loads and merges config files in order (later wins), then validates.
    pub fn load_files(paths: &[String]) -> Result<Config, ConfigError> {
        let mut sources = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::general(format!("cannot read config file {path}: {e}"))
            })?;
            sources.push((path.clone(), text));
        }
        Config::load_sources(&sources)
    }

    /// Loads the embedded default config.
    pub fn load_default() -> Result<Config, ConfigError> {
        Config::load_sources(&[(
            "<embedded default config>".to_string(),
            DEFAULT_CONFIG.to_string(),
        )])
    }

    /// Loads config from `(file name, text)` pairs, merged in order.
    pub fn load_sources(sources: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut merged: Option<Node> = None;
        for (file, text) in sources {
            let parsed = node::parse(file, text)?;
            merged = Some(match merged {
                Some(base) => node::merge(base, parsed),
                None => parsed,
            });
        }
        let mut root = merged.ok_or_else(|| ConfigError::general("no config given"))?;
        node::substitute_env(&mut root, "", &|name| std::env::var(name).ok())?;
        Config::from_root(&root)
    }

    fn from_root(root: &Node) -> Result<Config, ConfigError> {
        let entries = map_entries(root, "")?;
        const TOP: [&str; 6] = [
            "receivers",
            "processors",
            "exporters",
            "extensions",
            "connectors",
            "service",
        ];
        for (key, _) in entries {
            if !TOP.contains(&key.name.as_str()) {
                return Err(unknown_key(&key.loc, &key.name, &key.name, &TOP));
            }
        }
        let receivers = section(root, "receivers", components::parse_receiver)?;
        let processors = section(root, "processors", components::parse_processor)?;
        let exporters = section(root, "exporters", components::parse_exporter)?;
        let extensions = section(root, "extensions", components::parse_extension)?;
        let connectors = section(root, "connectors", components::parse_connector)?;
        let service_node = node::get(root, "service").ok_or_else(|| {
            ConfigError::at(&root.loc, "service", "missing required key `service`")
        })?;
        let service = parse_service(
            service_node,
            &receivers,
            &processors,
            &exporters,
            &extensions,
            &connectors,
        )?;
        check_storage_references(&receivers, &extensions, &service)?;
        Ok(Config {
            receivers,
            processors,
            exporters,
            extensions,
            connectors,
            service,
        })
    }

    /// A readable description of the pipeline graph, printed by `sluice validate`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for p in &self.service.pipelines {
            let list = |ids: &[ComponentId]| {
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "pipeline {}: [{}] -> [{}] -> [{}]\n",
                p.id,
                list(&p.receivers),
                list(&p.processors),
                list(&p.exporters)
            ));
        }
        if !self.service.extensions.is_empty() {
            let ext: Vec<String> = self
                .service
                .extensions
                .iter()
                .map(ToString::to_string)
                .collect();
            out.push_str(&format!("extensions: [{}]\n", ext.join(", ")));
        }
        if let Some(addr) = &self.service.telemetry.metrics_address {
            out.push_str(&format!("self-metrics: http://{addr}/metrics\n"));
        }
        out
    }
}

fn map_entries<'a>(
    node: &'a Node,
    path: &str,
) -> Result<Vec<(&'a node::Key, &'a Node)>, ConfigError> {
    match &node.kind {
        NodeKind::Map(entries) => Ok(entries.iter().map(|(k, v)| (k, v)).collect()),
        NodeKind::Null => Ok(Vec::new()),
        _ => Err(ConfigError::at(
            &node.loc,
            path,
            format!("expected a mapping, found {}", node.kind_name()),
        )),
    }
}

fn unknown_key(loc: &Loc, path: &str, key: &str, valid: &[&str]) -> ConfigError {
    let hint = match error::closest(key, valid) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => String::new(),
    };
    ConfigError::at(
        loc,
        path,
        format!(
            "unknown key `{key}`{hint} (valid keys: {})",
            valid.join(", ")
        ),
    )
}

type ParseFn<T> = fn(&ComponentId, &Node, &str, &Loc) -> Result<T, ConfigError>;

fn section<T>(
    root: &Node,
    name: &str,
    parse: ParseFn<T>,
) -> Result<Vec<Component<T>>, ConfigError> {
    let Some(section) = node::get(root, name) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (key, value) in map_entries(section, name)? {
        let path = format!("{name}.{}", key.name);
        let id = ComponentId::parse(&key.name).map_err(|e| ConfigError::at(&key.loc, &path, e))?;
        let config = parse(&id, value, &path, &key.loc)?;
        out.push(Component {
            id,
            config,
            loc: key.loc.clone(),
        });
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct PipelineRaw {
    receivers: Vec<String>,
    processors: Vec<String>,
    exporters: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct TelemetryRaw {
    metrics: MetricsTelemetryRaw,
    logs: LogsTelemetryRaw,
    resource: Option<std::collections::BTreeMap<String, Option<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetricsTelemetryRaw {
    address: Option<String>,
    level: String,
    readers: Vec<ReaderRaw>,
}

impl Default for MetricsTelemetryRaw {
    fn default() -> Self {
        MetricsTelemetryRaw {
            address: None,
            level: "normal".to_string(),
            readers: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReaderRaw {
    pull: PullReaderRaw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullReaderRaw {
    exporter: PullExporterRaw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullExporterRaw {
    prometheus: PrometheusReaderRaw,
}

#[derive(Deserialize)]
struct PrometheusReaderRaw {
    host: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogsTelemetryRaw {
    level: String,
    encoding: String,
}

impl Default for LogsTelemetryRaw {
    fn default() -> Self {
        LogsTelemetryRaw {
            level: "info".to_string(),
            encoding: "console".to_string(),
        }
    }
}

fn parse_service(
    service: &Node,
    receivers: &[Component<ReceiverConfig>],
    processors: &[Component<ProcessorConfig>],
    exporters: &[Component<ExporterConfig>],
    extensions: &[Component<ExtensionConfig>],
    connectors: &[Component<ConnectorConfig>],
) -> Result<ServiceConfig, ConfigError> {
    const KEYS: [&str; 4] = ["extensions", "pipelines", "telemetry", "shutdown_timeout"];
    for (key, _) in map_entries(service, "service")? {
        if !KEYS.contains(&key.name.as_str()) {
            return Err(unknown_key(
                &key.loc,
                &format!("service.{}", key.name),
                &key.name,
                &KEYS,
            ));
        }
    }

    let mut ext_ids = Vec::new();
    if let Some(list) = node::get(service, "extensions") {
        let names: Vec<String> = node::from_node(list, "service.extensions")?;
        for (i, name) in names.iter().enumerate() {
            let loc = seq_item_loc(list, i);
            let path = format!("service.extensions[{i}]");
            let id = ComponentId::parse(name).map_err(|e| ConfigError::at(&loc, &path, e))?;
            if !extensions.iter().any(|c| c.id == id) {
                return Err(ConfigError::at(
                    &loc,
                    &path,
                    format!("extension `{id}` is not defined under `extensions`"),
                ));
            }
            ext_ids.push(id);
        }
    }

    let pipelines_node = node::get(service, "pipelines").ok_or_else(|| {
        ConfigError::at(
            &service.loc,
            "service.pipelines",
            "missing required key `pipelines`",
        )
    })?;
    let mut pipelines = Vec::new();
    for (key, value) in map_entries(pipelines_node, "service.pipelines")? {
        let path = format!("service.pipelines.{}", key.name);
        let signal_name = key.name.split('/').next().unwrap_or_default();
        let signal = Signal::parse(signal_name).ok_or_else(|| {
            ConfigError::at(
                &key.loc,
                &path,
                format!(
                    "unknown pipeline type `{signal_name}` (valid types: traces, metrics, logs)"
                ),
            )
        })?;
        if key.name.split_once('/').is_some_and(|(_, n)| n.is_empty()) {
            return Err(ConfigError::at(
                &key.loc,
                &path,
                "a pipeline name after `/` must not be empty",
            ));
        }
        let raw: PipelineRaw = node::from_node(value, &path)?;
        let check = |role: &str,
                     names: &[String],
                     defined: &dyn Fn(&ComponentId) -> Option<Result<(), String>>|
         -> Result<Vec<ComponentId>, ConfigError> {
            let list_node = node::get(value, role);
            let mut ids = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let loc = list_node
                    .map(|n| seq_item_loc(n, i))
                    .unwrap_or_else(|| value.loc.clone());
                let item_path = format!("{path}.{role}[{i}]");
                let id =
                    ComponentId::parse(name).map_err(|e| ConfigError::at(&loc, &item_path, e))?;
                match defined(&id) {
                    None => {
                        return Err(ConfigError::at(
                            &loc,
                            &item_path,
                            format!(
                                "{} `{id}` is not defined under `{role}` or `connectors`",
                                &role[..role.len() - 1]
                            ),
                        ));
                    }
                    Some(Err(e)) => return Err(ConfigError::at(&loc, &item_path, e)),
                    Some(Ok(())) => {}
                }
                if ids.contains(&id) {
                    return Err(ConfigError::at(
                        &loc,
                        &item_path,
                        format!("`{id}` is listed twice in this pipeline"),
                    ));
                }
                ids.push(id);
            }
            Ok(ids)
        };
        let connector = |id: &ComponentId, as_exporter: bool| {
            connectors.iter().find(|c| &c.id == id).map(|c| {
                let (signals, role) = if as_exporter {
                    (c.config.inputs(), "an exporter")
                } else {
                    (c.config.outputs(), "a receiver")
                };
                supports(signals, signal, id).map_err(|_| {
                    let names: Vec<&str> = signals.iter().map(|s| s.as_str()).collect();
                    format!(
                        "connector `{id}` cannot be {role} of a {signal} pipeline (only of {})",
                        names.join(", ")
                    )
                })
            })
        };
        let receiver_ids = check("receivers", &raw.receivers, &|id| {
            receivers
                .iter()
                .find(|c| &c.id == id)
                .map(|c| supports(c.config.signals(), signal, id))
                .or_else(|| connector(id, false))
        })?;
        let processor_ids = check("processors", &raw.processors, &|id| {
            processors
                .iter()
                .find(|c| &c.id == id)
                .map(|c| supports(c.config.signals(), signal, id))
        })?;
        let exporter_ids = check("exporters", &raw.exporters, &|id| {
            exporters
                .iter()
                .find(|c| &c.id == id)
                .map(|c| supports(c.config.signals(), signal, id))
                .or_else(|| connector(id, true))
        })?;
        if receiver_ids.is_empty() {
            return Err(ConfigError::at(
                &key.loc,
                &path,
                "a pipeline needs at least one receiver",
            ));
        }
        if exporter_ids.is_empty() {
            return Err(ConfigError::at(
                &key.loc,
                &path,
                "a pipeline needs at least one exporter",
            ));
        }
        pipelines.push(PipelineConfig {
            id: key.name.clone(),
            signal,
            receivers: receiver_ids,
            processors: processor_ids,
            exporters: exporter_ids,
        });
    }
    if pipelines.is_empty() {
        return Err(ConfigError::at(
            &pipelines_node.loc,
            "service.pipelines",
            "at least one pipeline is required",
        ));
    }
    check_connectors(connectors, &pipelines)?;

    let telemetry_raw: TelemetryRaw = match node::get(service, "telemetry") {
        Some(t) => node::from_node(t, "service.telemetry")?,
        None => TelemetryRaw::default(),
    };
    let telemetry = telemetry_config(telemetry_raw, node::get(service, "telemetry"))?;
    let shutdown_timeout = match node::get(service, "shutdown_timeout") {
        Some(n) => node::from_node::<DurationValue>(n, "service.shutdown_timeout")?.0,
        None => Duration::from_secs(10),
    };
    Ok(ServiceConfig {
        extensions: ext_ids,
        pipelines,
        telemetry,
        shutdown_timeout,
    })
}

/// A duration setting on its own, for keys read outside a typed struct.
#[derive(Deserialize)]
#[serde(transparent)]
struct DurationValue(#[serde(deserialize_with = "node::deserialize_duration")] Duration);

fn telemetry_config(
    raw: TelemetryRaw,
    node: Option<&Node>,
) -> Result<TelemetryConfig, ConfigError> {
    let loc = node.map(|n| n.loc.clone());
    let at = |path: &str, msg: String| match &loc {
        Some(l) => ConfigError::at(l, path, msg),
        None => ConfigError::general(msg),
    };
    let metrics_address = if raw.metrics.level == "none" {
        None
    } else if let Some(reader) = raw.metrics.readers.first() {
        let p = &reader.pull.exporter.prometheus;
        Some(format!(
            "{}:{}",
            p.host.as_deref().unwrap_or("127.0.0.1"),
            p.port.unwrap_or(8888)
        ))
    } else {
        Some(
            raw.metrics
                .address
                .unwrap_or_else(|| "127.0.0.1:8888".to_string()),
        )
    };
    const LEVELS: [&str; 4] = ["none", "basic", "normal", "detailed"];
    if !LEVELS.contains(&raw.metrics.level.as_str()) {
        return Err(at(
            "service.telemetry.metrics.level",
            format!(
                "unknown value `{}` (valid values: {})",
                raw.metrics.level,
                LEVELS.join(", ")
            ),
        ));
    }
    const LOG_LEVELS: [&str; 5] = ["debug", "info", "warn", "error", "trace"];
    let level = raw.logs.level.to_ascii_lowercase();
    if !LOG_LEVELS.contains(&level.as_str()) {
        return Err(at(
            "service.telemetry.logs.level",
            format!(
                "unknown value `{}` (valid values: {})",
                raw.logs.level,
                LOG_LEVELS.join(", ")
            ),
        ));
    }
    let log_json = match raw.logs.encoding.as_str() {
        "json" => true,
        "console" => false,
        other => {
            return Err(at(
                "service.telemetry.logs.encoding",
                format!("unknown value `{other}` (valid values: console, json)"),
            ));
        }
    };
    let _ = raw.resource;
    Ok(TelemetryConfig {
        metrics_address,
        log_level: level,
        log_json,
    })
}

/// A receiver's `storage` must name a `file_storage` extension that the service starts.
fn check_storage_references(
    receivers: &[Component<ReceiverConfig>],
    extensions: &[Component<ExtensionConfig>],
    service: &ServiceConfig,
) -> Result<(), ConfigError> {
    for r in receivers {
        let ReceiverConfig::Filelog(c) = &r.config else {
            continue;
        };
        let Some(storage) = &c.storage else { continue };
        let path = format!("receivers.{}.storage", r.id);
        let id = ComponentId::parse(storage).map_err(|e| ConfigError::at(&r.loc, &path, e))?;
        let Some(ext) = extensions.iter().find(|e| e.id == id) else {
            return Err(ConfigError::at(
                &r.loc,
                &path,
                format!("storage extension `{id}` is not defined under `extensions`"),
            ));
        };
        if !matches!(ext.config, ExtensionConfig::FileStorage(_)) {
            return Err(ConfigError::at(
                &r.loc,
                &path,
                format!("extension `{id}` is not a storage extension (use `file_storage`)"),
            ));
        }
        if !service.extensions.contains(&id) {
            return Err(ConfigError::at(
                &r.loc,
                &path,
                format!("storage extension `{id}` must be listed in `service.extensions`"),
            ));
        }
    }
    Ok(())
}

/// As the collector checks them: a connector used as an exporter must be a receiver of a
/// pipeline of the signal it produces, and the other way round; and data must not flow in a
/// cycle through connectors.
fn check_connectors(
    connectors: &[Component<ConnectorConfig>],
    pipelines: &[PipelineConfig],
) -> Result<(), ConfigError> {
    for c in connectors {
        for p in pipelines.iter().filter(|p| p.exporters.contains(&c.id)) {
            let fed = c.config.output(p.signal).is_some_and(|out| {
                pipelines
                    .iter()
                    .any(|q| q.signal == out && q.receivers.contains(&c.id))
            });
            if !fed {
                return Err(ConfigError::at(
                    &c.loc,
                    format!("connectors.{}", c.id),
                    format!(
                        "connector `{}` is used as an exporter of pipeline `{}` but not as a receiver of any pipeline it can feed from {} (list it under `receivers` of a {} pipeline)",
                        c.id,
                        p.id,
                        p.signal,
                        c.config
                            .output(p.signal)
                            .map_or("other".to_string(), |s| s.to_string())
                    ),
                ));
            }
        }
        for p in pipelines.iter().filter(|p| p.receivers.contains(&c.id)) {
            let feeds = pipelines.iter().any(|q| {
                q.exporters.contains(&c.id) && c.config.output(q.signal) == Some(p.signal)
            });
            if !feeds {
                return Err(ConfigError::at(
                    &c.loc,
                    format!("connectors.{}", c.id),
                    format!(
                        "connector `{}` is used as a receiver of pipeline `{}` but not as an exporter of any pipeline that can feed it {}",
                        c.id, p.id, p.signal
                    ),
                ));
            }
        }
    }
    // Depth-first search over pipelines; an edge goes through a connector.
    let next = |from: usize| -> Vec<(usize, String)> {
        let p = &pipelines[from];
        let mut out = Vec::new();
        for c in connectors.iter().filter(|c| p.exporters.contains(&c.id)) {
            for (j, q) in pipelines.iter().enumerate() {
                if q.receivers.contains(&c.id) && c.config.output(p.signal) == Some(q.signal) {
                    out.push((j, c.id.to_string()));
                }
            }
        }
        out
    };
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; pipelines.len()];
    let mut path: Vec<String> = Vec::new();
    fn visit(
        i: usize,
        pipelines: &[PipelineConfig],
        next: &dyn Fn(usize) -> Vec<(usize, String)>,
        state: &mut [u8],
        path: &mut Vec<String>,
    ) -> Result<(), (String, String)> {
        state[i] = 1;
        path.push(format!("pipeline `{}`", pipelines[i].id));
        for (j, via) in next(i) {
            path.push(format!("connector `{via}`"));
            let via = via.clone();
            match state[j] {
                1 => {
                    path.push(format!("pipeline `{}`", pipelines[j].id));
                    let cycle = format!(
                        "cycle detected: {}; data must not flow back into a pipeline it came from",
                        path.join(" -> ")
                    );
                    return Err((via, cycle));
                }
                0 => visit(j, pipelines, next, state, path)?,
                _ => {}
            }
            path.pop();
        }
        path.pop();
        state[i] = 2;
        Ok(())
    }
    for i in 0..pipelines.len() {
        if state[i] == 0 {
            visit(i, pipelines, &next, &mut state, &mut path).map_err(|(via, e)| {
                let c = connectors.iter().find(|c| c.id.to_string() == via);
                match c {
                    Some(c) => ConfigError::at(&c.loc, format!("connectors.{via}"), e),
                    None => ConfigError::general(e),
                }
            })?;
        }
    }
    Ok(())
}

fn supports(signals: &[Signal], signal: Signal, id: &ComponentId) -> Result<(), String> {
    if signals.contains(&signal) {
        Ok(())
    } else {
        Err(format!("`{id}` does not support {signal}"))
    }
}

fn seq_item_loc(node: &Node, index: usize) -> Loc {
    match &node.kind {
        NodeKind::Seq(items) => items
            .get(index)
            .map(|n| n.loc.clone())
            .unwrap_or_else(|| node.loc.clone()),
        _ => node.loc.clone(),
    }
}

/// Component types named in a config, for the "is listed but unused" check in tests.
pub fn used_ids(config: &Config) -> BTreeSet<ComponentId> {
    let mut ids = BTreeSet::new();
    for p in &config.service.pipelines {
        ids.extend(p.receivers.iter().cloned());
        ids.extend(p.processors.iter().cloned());
        ids.extend(p.exporters.iter().cloned());
    }
    ids
}
