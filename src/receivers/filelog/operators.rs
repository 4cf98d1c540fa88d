//! The collector's stanza operators after `container`: `json_parser`, `regex_parser`,
//! `trace_parser`, `severity_parser`, `time_parser`, `move`, `remove` and `add`, with their
//! keys, defaults and `on_error` behaviour. They run in order on each OTLP `LogRecord` the
//! tailer made, before the batch is encoded. An operator that fails on a record counts it and,
//! per `on_error`, passes the record on as it is (`send`) or drops it (`drop`); nothing here
//! panics on any input.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Visitor};

use super::config::ContainerOperator;
use super::expr::Expr;
use super::fastjson::{JsonPlan, Step};
use super::field::{self, Field, Root};
use super::timefmt::{TimeLayout, type_name};
use crate::config::error::ConfigError;
use crate::config::node::{self, Node, NodeKind};
use crate::receivers::otlp::config::NotYet;
use crate::telemetry::Registry;
use crate::telemetry::metrics::Counter;

/// Operator types sluice builds.
pub const OPERATOR_TYPES: &[&str] = &[
    "container",
    "json_parser",
    "regex_parser",
    "trace_parser",
    "severity_parser",
    "time_parser",
    "move",
    "remove",
    "add",
];

/// One entry of `operators`: the container parser (run by the tailer) or a record operator.
#[derive(Clone, Debug)]
pub enum OperatorConfig {
    Container(ContainerOperator),
    Record(Box<Op>),
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig::Container(ContainerOperator::default())
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Send,
    SendQuiet,
    Drop,
    DropQuiet,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeConfig {
    parse_from: Option<String>,
    layout_type: Option<String>,
    layout: Option<String>,
    location: Option<String>,
    time_zone_locations: Option<NotYet>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum MappingItem {
    Int(i64),
    Str(String),
    Range { min: i64, max: i64 },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum MappingValue {
    Many(Vec<MappingItem>),
    One(MappingItem),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityConfig {
    parse_from: Option<String>,
    preset: Option<String>,
    mapping: Option<std::collections::BTreeMap<String, MappingValue>>,
    overwrite_text: Option<NotYet>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParseFrom {
    parse_from: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceConfig {
    trace_id: Option<ParseFrom>,
    span_id: Option<ParseFrom>,
    trace_flags: Option<ParseFrom>,
}

/// Keys every operator has.
#[derive(Clone, Debug, Default)]
struct Common {
    id: Option<String>,
    output: Option<String>,
    on_error: OnError,
    if_expr: Option<String>,
}

macro_rules! operator_config {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            #[serde(rename = "type")]
            _kind: String,
            id: Option<String>,
            output: Option<String>,
            #[serde(default)]
            on_error: OnError,
            #[serde(rename = "if")]
            if_expr: Option<String>,
            $($field: $ty),*
        }
        impl $name {
            fn common(&self) -> Common {
                Common {
                    id: self.id.clone(),
                    output: self.output.clone(),
                    on_error: self.on_error,
                    if_expr: self.if_expr.clone(),
                }
            }
        }
    };
}

operator_config!(ParserConfig {
    parse_from: Option<String>,
    parse_to: Option<String>,
    body: Option<String>,
    timestamp: Option<TimeConfig>,
    severity: Option<SeverityConfig>,
    trace: Option<TraceConfig>,
    scope_name: Option<NotYet>,
    parse_ints: Option<bool>,
    regex: Option<String>,
    cache: Option<CacheConfig>,
});
operator_config!(TraceParserConfig {
    trace_id: Option<ParseFrom>,
    span_id: Option<ParseFrom>,
    trace_flags: Option<ParseFrom>,
});
operator_config!(SeverityParserConfig {
    parse_from: Option<String>,
    preset: Option<String>,
    mapping: Option<std::collections::BTreeMap<String, MappingValue>>,
    overwrite_text: Option<NotYet>,
});
operator_config!(TimeParserConfig {
    parse_from: Option<String>,
    layout_type: Option<String>,
    layout: Option<String>,
    location: Option<String>,
    time_zone_locations: Option<NotYet>,
});
operator_config!(MoveConfig {
    from: Option<String>,
    to: Option<String>,
});
operator_config!(RemoveConfig { field: Option<String> });
operator_config!(AddConfig {
    field: Option<String>,
    value: Option<serde_json::Value>,
});

/// `regex_parser`'s `cache` changes speed only, not output.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheConfig {
    #[serde(rename = "size")]
    _size: Option<u16>,
}

/// A compiled record operator.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: String,
    on_error: OnError,
    kind: Kind,
    /// `if`: the operator runs only on records for which it holds.
    condition: Option<Expr>,
    /// Self-metrics of this operator (unregistered until `Operators::count_in`).
    errors: Counter,
    dropped: Counter,
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // built once per receiver, not per record
enum Kind {
    Parse {
        how: ParseKind,
        from: Field,
        to: Field,
        body: Option<Field>,
        time: Option<TimeStep>,
        severity: Option<SeverityStep>,
        trace: Option<TraceStep>,
    },
    Trace(TraceStep),
    Severity(SeverityStep),
    Time(TimeStep),
    Move {
        from: Field,
        to: Field,
    },
    Remove(Field),
    Add {
        field: Field,
        value: AnyValue,
    },
}

#[derive(Clone, Debug)]
enum ParseKind {
    Json { parse_ints: bool },
    Regex(regex::Regex),
}

#[derive(Clone, Debug)]
struct TimeStep {
    from: Field,
    layout: TimeLayout,
}

#[derive(Clone, Debug)]
struct SeverityStep {
    from: Field,
    mapping: HashMap<String, i32>,
}

#[derive(Clone, Debug)]
struct TraceStep {
    trace_id: Field,
    span_id: Field,
    flags: Field,
}

/// An error while compiling, with the key it is about (for its location).
struct KeyError(&'static str, String);

fn field_at(key: &'static str, text: &str, rootable: bool) -> Result<Field, KeyError> {
    Field::parse(text, rootable).map_err(|e| KeyError(key, e))
}

fn opt_field(
    key: &'static str,
    text: Option<&String>,
    default: Field,
    rootable: bool,
) -> Result<Field, KeyError> {
    match text {
        Some(t) => field_at(key, t, rootable),
        None => Ok(default),
    }
}

fn time_step(key: &'static str, c: &TimeConfigView) -> Result<TimeStep, KeyError> {
    if c.time_zone_locations {
        return Err(KeyError(
            key,
            "`time_zone_locations` is not supported yet".into(),
        ));
    }
    if let Some(loc) = c.location
        && !matches!(loc, "UTC" | "Etc/UTC")
    {
        return Err(KeyError(
            key,
            format!(
                "`location: {loc}` is not supported yet (layouts without a zone are read as UTC)"
            ),
        ));
    }
    let Some(from) = c.parse_from else {
        return Err(KeyError(
            key,
            "missing required parameter `parse_from`".into(),
        ));
    };
    let from = field_at(key, from, false)?;
    let layout = TimeLayout::compile(c.layout_type.unwrap_or("strptime"), c.layout.unwrap_or(""))
        .map_err(|e| KeyError(key, e))?;
    Ok(TimeStep { from, layout })
}

struct TimeConfigView<'a> {
    parse_from: Option<&'a String>,
    layout_type: Option<&'a str>,
    layout: Option<&'a str>,
    location: Option<&'a str>,
    time_zone_locations: bool,
}

impl TimeConfig {
    fn view(&self) -> TimeConfigView<'_> {
        TimeConfigView {
            parse_from: self.parse_from.as_ref(),
            layout_type: self.layout_type.as_deref(),
            layout: self.layout.as_deref(),
            location: self.location.as_deref(),
            time_zone_locations: self.time_zone_locations.is_some(),
        }
    }
}

/// The collector's `aliases` preset (`otel`): names and numbers 1–24.
const OTEL_NAMES: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];

fn builtin_mapping(preset: &str) -> HashMap<String, i32> {
    let mut m = HashMap::new();
    if preset == "none" {
        return m;
    }
    for (i, name) in OTEL_NAMES.iter().enumerate() {
        for level in 0..4 {
            let n = (i * 4 + level + 1) as i32;
            let key = if level == 0 {
                (*name).to_string()
            } else {
                format!("{name}{}", level + 1)
            };
            m.insert(key, n);
            m.insert(n.to_string(), n);
        }
    }
    if preset != "otel" && preset != "aliases" {
        // The default preset also reads `warning` and `err`.
        for level in 0..4 {
            let suffix = if level == 0 {
                String::new()
            } else {
                (level + 1).to_string()
            };
            m.insert(format!("warning{suffix}"), 13 + level);
            m.insert(format!("err{suffix}"), 17 + level);
        }
    }
    m
}

fn mapping_values(item: &MappingItem) -> Vec<String> {
    let range = |a: i64, b: i64| {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        (lo..=hi.min(lo.saturating_add(100_000)))
            .map(|i| i.to_string())
            .collect()
    };
    match item {
        MappingItem::Int(i) => vec![i.to_string()],
        MappingItem::Str(s) => match s.as_str() {
            "2xx" => range(200, 299),
            "3xx" => range(300, 399),
            "4xx" => range(400, 499),
            "5xx" => range(500, 599),
            _ => vec![s.to_lowercase()],
        },
        MappingItem::Range { min, max } => range(*min, *max),
    }
}

fn severity_step(
    key: &'static str,
    parse_from: Option<&String>,
    preset: Option<&str>,
    mapping: Option<&std::collections::BTreeMap<String, MappingValue>>,
    overwrite_text: bool,
) -> Result<SeverityStep, KeyError> {
    if overwrite_text {
        return Err(KeyError(
            key,
            "`overwrite_text` is not supported yet".into(),
        ));
    }
    let Some(from) = parse_from else {
        return Err(KeyError(key, "missing required field `parse_from`".into()));
    };
    let from = field_at(key, from, false)?;
    let mut m = builtin_mapping(preset.unwrap_or(""));
    let aliases = builtin_mapping("aliases");
    for (sev, values) in mapping.into_iter().flatten() {
        // As the collector: a level it does not know is the default (unset) level.
        let level = aliases.get(&sev.to_lowercase()).copied().unwrap_or(0);
        let items: Vec<&MappingItem> = match values {
            MappingValue::Many(v) => v.iter().collect(),
            MappingValue::One(v) => vec![v],
        };
        for item in items {
            for v in mapping_values(item) {
                m.insert(v, level);
            }
        }
    }
    Ok(SeverityStep { from, mapping: m })
}

fn trace_step(
    trace_id: Option<&ParseFrom>,
    span_id: Option<&ParseFrom>,
    flags: Option<&ParseFrom>,
) -> Result<TraceStep, KeyError> {
    let f = |key: &'static str, p: Option<&ParseFrom>, default: &str| {
        opt_field(
            key,
            p.and_then(|p| p.parse_from.as_ref()),
            Field::body_key(default),
            false,
        )
    };
    Ok(TraceStep {
        trace_id: f("trace_id", trace_id, "trace_id")?,
        span_id: f("span_id", span_id, "span_id")?,
        flags: f("trace_flags", flags, "trace_flags")?,
    })
}

fn to_any(v: &serde_json::Value) -> AnyValue {
    let value = match v {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(b) => Some(Value::BoolValue(*b)),
        serde_json::Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or_default()),
        }),
        serde_json::Value::String(s) => Some(Value::StringValue(s.clone())),
        serde_json::Value::Array(a) => Some(Value::ArrayValue(ArrayValue {
            values: a.iter().map(to_any).collect(),
        })),
        serde_json::Value::Object(o) => Some(Value::KvlistValue(KeyValueList {
            values: o
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(to_any(v)),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

fn compile(kind: &str, item: &Node, path: &str) -> Result<(Common, Kind), ConfigError> {
    let located = |e: KeyError| {
        let (loc, p) = match node::get(item, e.0) {
            Some(n) => (n.loc.clone(), format!("{path}.{}", e.0)),
            None => (item.loc.clone(), path.to_string()),
        };
        ConfigError::at(&loc, p, e.1)
    };
    let (common, kind) = match kind {
        "json_parser" | "regex_parser" => {
            let c: ParserConfig = node::from_node(item, path)?;
            if c.scope_name.is_some() {
                return Err(located(KeyError(
                    "scope_name",
                    "`scope_name` is not supported yet".into(),
                )));
            }
            let how = if kind == "json_parser" {
                if c.regex.is_some() || c.cache.is_some() {
                    let key = if c.regex.is_some() { "regex" } else { "cache" };
                    return Err(located(KeyError(
                        key,
                        format!("unknown key `{key}` for json_parser"),
                    )));
                }
                ParseKind::Json {
                    parse_ints: c.parse_ints.unwrap_or(false),
                }
            } else {
                if c.parse_ints.is_some() {
                    return Err(located(KeyError(
                        "parse_ints",
                        "unknown key `parse_ints` for regex_parser".into(),
                    )));
                }
                let Some(re) = &c.regex else {
                    return Err(ConfigError::at(
                        &item.loc,
                        path,
                        "missing required field `regex`",
                    ));
                };
                let re = super::expr::go_regex(re).map_err(|e| located(KeyError("regex", e)))?;
                if !re.capture_names().any(|n| n.is_some()) {
                    return Err(located(KeyError(
                        "regex",
                        "no named capture groups in regex pattern".into(),
                    )));
                }
                ParseKind::Regex(re)
            };
            let from = opt_field("parse_from", c.parse_from.as_ref(), Field::body(), false)
                .map_err(located)?;
            let to = opt_field("parse_to", c.parse_to.as_ref(), Field::attributes(), true)
                .map_err(located)?;
            let body = c
                .body
                .as_ref()
                .map(|b| field_at("body", b, false))
                .transpose()
                .map_err(located)?;
            if body.is_some() && to == Field::body() {
                return Err(located(KeyError(
                    "body",
                    "`parse_to: body` not allowed when `body` is configured".into(),
                )));
            }
            let time = c
                .timestamp
                .as_ref()
                .map(|t| time_step("timestamp", &t.view()))
                .transpose()
                .map_err(located)?;
            let severity = c
                .severity
                .as_ref()
                .map(|s| {
                    severity_step(
                        "severity",
                        s.parse_from.as_ref(),
                        s.preset.as_deref(),
                        s.mapping.as_ref(),
                        s.overwrite_text.is_some(),
                    )
                })
                .transpose()
                .map_err(located)?;
            let trace = c
                .trace
                .as_ref()
                .map(|t| {
                    trace_step(
                        t.trace_id.as_ref(),
                        t.span_id.as_ref(),
                        t.trace_flags.as_ref(),
                    )
                })
                .transpose()
                .map_err(|e| located(KeyError("trace", e.1)))?;
            (
                c.common(),
                Kind::Parse {
                    how,
                    from,
                    to,
                    body,
                    time,
                    severity,
                    trace,
                },
            )
        }
        "trace_parser" => {
            let c: TraceParserConfig = node::from_node(item, path)?;
            let step = trace_step(
                c.trace_id.as_ref(),
                c.span_id.as_ref(),
                c.trace_flags.as_ref(),
            )
            .map_err(located)?;
            (c.common(), Kind::Trace(step))
        }
        "severity_parser" => {
            let c: SeverityParserConfig = node::from_node(item, path)?;
            let step = severity_step(
                "parse_from",
                c.parse_from.as_ref(),
                c.preset.as_deref(),
                c.mapping.as_ref(),
                c.overwrite_text.is_some(),
            )
            .map_err(located)?;
            (c.common(), Kind::Severity(step))
        }
        "time_parser" => {
            let c: TimeParserConfig = node::from_node(item, path)?;
            let view = TimeConfigView {
                parse_from: c.parse_from.as_ref(),
                layout_type: c.layout_type.as_deref(),
                layout: c.layout.as_deref(),
                location: c.location.as_deref(),
                time_zone_locations: c.time_zone_locations.is_some(),
            };
            let key = if c.parse_from.is_none() {
                "parse_from"
            } else {
                "layout"
            };
            let step = time_step(key, &view).map_err(located)?;
            (c.common(), Kind::Time(step))
        }
        "move" => {
            let c: MoveConfig = node::from_node(item, path)?;
            let (Some(from), Some(to)) = (&c.from, &c.to) else {
                return Err(ConfigError::at(
                    &item.loc,
                    path,
                    "`move` needs `from` and `to`",
                ));
            };
            let from = field_at("from", from, false).map_err(located)?;
            let to = field_at("to", to, false).map_err(located)?;
            (c.common(), Kind::Move { from, to })
        }
        "remove" => {
            let c: RemoveConfig = node::from_node(item, path)?;
            let Some(f) = &c.field else {
                return Err(ConfigError::at(&item.loc, path, "`remove` needs `field`"));
            };
            (
                c.common(),
                Kind::Remove(field_at("field", f, true).map_err(located)?),
            )
        }
        "add" => {
            let c: AddConfig = node::from_node(item, path)?;
            let Some(f) = &c.field else {
                return Err(ConfigError::at(&item.loc, path, "`add` needs `field`"));
            };
            let field = field_at("field", f, false).map_err(located)?;
            let value = match &c.value {
                None => {
                    return Err(ConfigError::at(&item.loc, path, "`add` needs `value`"));
                }
                Some(serde_json::Value::String(s))
                    if s.starts_with("EXPR(") && s.ends_with(')') =>
                {
                    return Err(located(KeyError(
                        "value",
                        "expressions (`EXPR(...)`) are not supported yet".into(),
                    )));
                }
                Some(v) => to_any(v),
            };
            (c.common(), Kind::Add { field, value })
        }
        _ => unreachable!("types are checked before compiling"),
    };
    Ok((common, kind))
}

/// Reads `operators` of a `filelog` receiver: each by its type, with located errors for
/// unknown types, keys and values, and the ordering sluice supports (a `container` operator
/// only first; `output` only to the next operator).
pub fn parse_operators(body: &Node, path: &str) -> Result<Vec<OperatorConfig>, ConfigError> {
    let Some(ops) = node::get(body, "operators") else {
        return Ok(Vec::new());
    };
    let items = match &ops.kind {
        NodeKind::Seq(items) => items,
        NodeKind::Null => return Ok(Vec::new()),
        _ => {
            return Err(ConfigError::at(
                &ops.loc,
                format!("{path}.operators"),
                "expected a list of operators",
            ));
        }
    };
    let mut out = Vec::new();
    let mut ids: Vec<(String, Option<String>)> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}.operators[{i}]");
        let Some(kind_node) = node::get(item, "type") else {
            return Err(ConfigError::at(
                &item.loc,
                &item_path,
                "an operator needs a `type`",
            ));
        };
        let NodeKind::Str(kind) = &kind_node.kind else {
            return Err(ConfigError::at(
                &kind_node.loc,
                format!("{item_path}.type"),
                "an operator's `type` must be a string",
            ));
        };
        if !OPERATOR_TYPES.contains(&kind.as_str()) {
            return Err(ConfigError::at(
                &kind_node.loc,
                format!("{item_path}.type"),
                format!(
                    "`{kind}` operator is not supported yet (supported: {})",
                    OPERATOR_TYPES.join(", ")
                ),
            ));
        }
        if kind == "container" {
            if i > 0 {
                return Err(ConfigError::at(
                    &kind_node.loc,
                    format!("{item_path}.type"),
                    "a `container` operator after other operators is not supported yet (it must be the first)",
                ));
            }
            let op: ContainerOperator = node::from_node(item, &item_path)?;
            let output = node::get(item, "output").and_then(|n| match &n.kind {
                NodeKind::Str(s) => Some(s.clone()),
                _ => None,
            });
            ids.push((op.id.clone().unwrap_or_else(|| "container".into()), output));
            types.push("container".into());
            out.push(OperatorConfig::Container(op));
            continue;
        }
        let (common, kind_c) = compile(kind, item, &item_path)?;
        let condition = match &common.if_expr {
            Some(text) => Some(Expr::parse(text).map_err(|e| {
                let loc = node::get(item, "if").map_or(&item.loc, |n| &n.loc);
                ConfigError::at(loc, format!("{item_path}.if"), e)
            })?),
            None => None,
        };
        let id = common.id.clone().unwrap_or_else(|| kind.clone());
        ids.push((id.clone(), common.output.clone()));
        types.push(kind.clone());
        out.push(OperatorConfig::Record(Box::new(Op {
            id,
            on_error: common.on_error,
            kind: kind_c,
            condition,
            errors: Counter::default(),
            dropped: Counter::default(),
        })));
    }
    // As the collector: operators left with their type as id are numbered (`add`, `add1`, …).
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..ids.len() {
        if ids[i].0 != types[i] {
            continue;
        }
        let n = seen.entry(types[i].clone()).or_insert(0);
        if *n == 0 {
            *n = 1;
            continue;
        }
        let mut new_id = format!("{}{}", types[i], n);
        while ids.iter().any(|(id, _)| *id == new_id) {
            *n += 1;
            new_id = format!("{}{}", types[i], n);
        }
        *n += 1;
        ids[i].0 = new_id.clone();
        if let Some(OperatorConfig::Record(op)) = out.get_mut(i) {
            op.id = new_id;
        }
    }
    for (i, (id, _)) in ids.iter().enumerate() {
        if ids[..i].iter().any(|(other, _)| other == id) {
            let item = &items[i];
            let loc = node::get(item, "id").map_or(&item.loc, |n| &n.loc);
            return Err(ConfigError::at(
                loc,
                format!("{path}.operators[{i}].id"),
                format!("operator id `{id}` is used twice (give each operator its own `id`)"),
            ));
        }
    }
    // Only a straight line is built: each `output` must name the next operator.
    for (i, (_, output)) in ids.iter().enumerate() {
        let Some(output) = output else { continue };
        if ids.get(i + 1).map(|(id, _)| id) != Some(output) {
            let item = &items[i];
            let loc = node::get(item, "output").map_or(&item.loc, |n| &n.loc);
            return Err(ConfigError::at(
                loc,
                format!("{path}.operators[{i}].output"),
                format!(
                    "`output: {output}` is not supported yet (operators run in order; `output` may only name the next operator)"
                ),
            ));
        }
    }
    Ok(out)
}

/// Counts of what the operators did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpStats {
    /// Records an operator failed on (passed on or dropped per `on_error`).
    pub errors: u64,
    /// Records dropped by `on_error: drop`/`drop_quiet`.
    pub dropped: u64,
}

/// The record operators of a receiver, in order.
#[derive(Clone, Debug, Default)]
pub struct Operators {
    ops: Vec<Op>,
    /// Some operator reads or writes `resource.*`: records then carry their own resource.
    touches_resource: bool,
    /// When the operators are JSON parsing of the body and steps on top-level attributes:
    /// records are encoded straight from the line when they can be (`fastjson`).
    plan: Option<Arc<JsonPlan>>,
}

/// Records grouped by the resource the operators left them with, in their order.
pub type ResourceGroups = Vec<(Vec<KeyValue>, Vec<LogRecord>)>;

impl Operators {
    pub fn new(configs: &[OperatorConfig]) -> Operators {
        let ops: Vec<Op> = configs
            .iter()
            .filter_map(|c| match c {
                OperatorConfig::Record(op) => Some(Op::clone(op)),
                OperatorConfig::Container(_) => None,
            })
            .collect();
        let touches_resource = ops
            .iter()
            .any(|op| op.fields().iter().any(|f| f.root == Root::Resource));
        let plan = json_plan(&ops).map(Arc::new);
        Operators {
            ops,
            touches_resource,
            plan,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The fast path's plan, when the operators are of the kinds it covers.
    pub fn json_plan(&self) -> Option<&Arc<JsonPlan>> {
        self.plan.as_ref()
    }

    /// Registers each operator's self-metrics, labelled with the receiver and operator ids.
    pub fn count_in(&mut self, registry: &Registry, receiver: &str) {
        for op in &mut self.ops {
            let labels = [("receiver", receiver), ("operator", op.id.as_str())];
            op.errors = registry.counter(
                "sluice_filelog_operator_errors_total",
                "Records an operator after `container` failed on; with on_error send they went on as they were.",
                &labels,
            );
            op.dropped = registry.counter(
                "sluice_filelog_operator_dropped_log_records_total",
                "Records dropped because an operator failed on them and its on_error is drop or drop_quiet.",
                &labels,
            );
        }
    }

    /// Runs the operators on each record of a file and drops those an operator dropped.
    /// When they touch `resource.*`, returns the records grouped by their resource (taken
    /// out of `records`); otherwise they all keep `resource` and stay in `records`.
    pub fn apply_all(
        &self,
        records: &mut Vec<LogRecord>,
        resource: &[KeyValue],
        now_ns: u64,
        stats: &mut OpStats,
    ) -> Option<ResourceGroups> {
        if self.ops.is_empty() {
            return None;
        }
        if !self.touches_resource {
            let mut none = Vec::new();
            records.retain_mut(|r| self.apply(r, &mut none, now_ns, stats));
            return None;
        }
        let mut groups: ResourceGroups = Vec::new();
        for mut r in records.drain(..) {
            let mut res = resource.to_vec();
            if !self.apply(&mut r, &mut res, now_ns, stats) {
                continue;
            }
            match groups.last_mut() {
                Some((last, recs)) if *last == res => recs.push(r),
                _ => groups.push((res, vec![r])),
            }
        }
        Some(groups)
    }

    /// Runs the operators on one record (and its resource); false when it is dropped.
    pub fn apply(
        &self,
        rec: &mut LogRecord,
        res: &mut Vec<KeyValue>,
        now_ns: u64,
        stats: &mut OpStats,
    ) -> bool {
        for op in &self.ops {
            let outcome = match &op.condition {
                Some(c) => match c.eval_bool(rec, res) {
                    Ok(true) => op.run(rec, res, now_ns),
                    Ok(false) => Ok(()),
                    Err(e) => Err(format!("running if expr: {e}")),
                },
                None => op.run(rec, res, now_ns),
            };
            if let Err(error) = outcome {
                stats.errors += 1;
                op.errors.add(1);
                tracing::debug!(operator = %op.id, %error, action = ?op.on_error, "Operator failed on a record.");
                if matches!(op.on_error, OnError::Drop | OnError::DropQuiet) {
                    stats.dropped += 1;
                    op.dropped.add(1);
                    return false;
                }
            }
        }
        true
    }
}

/// The fast path's plan for `ops`: `json_parser` from the body into the attributes first,
/// then only `trace_parser`, `severity_parser` and `time_parser` on top-level attributes, no
/// `if`. `None` for anything else.
fn json_plan(ops: &[Op]) -> Option<JsonPlan> {
    let key = |f: &Field| match f.keys.as_slice() {
        [k] if f.root == Root::Attributes => Some(k.clone()),
        _ => None,
    };
    let time = |t: &TimeStep| {
        Some(Step::Time {
            key: key(&t.from)?,
            layout: t.layout.clone(),
        })
    };
    let severity = |s: &SeverityStep| {
        Some(Step::Severity {
            key: key(&s.from)?,
            mapping: s.mapping.clone(),
        })
    };
    let trace = |t: &TraceStep| {
        Some(Step::Trace([
            key(&t.trace_id)?,
            key(&t.span_id)?,
            key(&t.flags)?,
        ]))
    };
    let (first, rest) = ops.split_first()?;
    let Kind::Parse {
        how: ParseKind::Json { parse_ints },
        from,
        to,
        body: None,
        time: t,
        severity: s,
        trace: tr,
    } = &first.kind
    else {
        return None;
    };
    let plain_body = from.root == Root::Body && from.keys.is_empty();
    let into_attributes = to.root == Root::Attributes && to.keys.is_empty();
    if first.condition.is_some() || !plain_body || !into_attributes {
        return None;
    }
    let mut steps = Vec::new();
    if let Some(t) = t {
        steps.push(time(t)?);
    }
    if let Some(s) = s {
        steps.push(severity(s)?);
    }
    if let Some(t) = tr {
        steps.push(trace(t)?);
    }
    for op in rest {
        if op.condition.is_some() {
            return None;
        }
        steps.push(match &op.kind {
            Kind::Trace(t) => trace(t)?,
            Kind::Severity(s) => severity(s)?,
            Kind::Time(t) => time(t)?,
            _ => return None,
        });
    }
    Some(JsonPlan {
        parse_ints: *parse_ints,
        steps,
    })
}

impl Op {
    fn fields(&self) -> Vec<&Field> {
        match &self.kind {
            Kind::Parse {
                from,
                to,
                body,
                time,
                severity,
                trace: tr,
                ..
            } => {
                let mut v = vec![from, to];
                v.extend(body);
                v.extend(time.iter().map(|t| &t.from));
                v.extend(severity.iter().map(|s| &s.from));
                if let Some(t) = tr {
                    v.extend(t.fields());
                }
                v
            }
            Kind::Trace(t) => t.fields().to_vec(),
            Kind::Severity(s) => vec![&s.from],
            Kind::Time(t) => vec![&t.from],
            Kind::Move { from, to } => vec![from, to],
            Kind::Remove(f) => vec![f],
            Kind::Add { field, .. } => vec![field],
        }
    }

    fn run(&self, rec: &mut LogRecord, res: &mut Vec<KeyValue>, now_ns: u64) -> Result<(), String> {
        match &self.kind {
            Kind::Parse {
                how,
                from,
                to,
                body,
                time,
                severity,
                trace,
            } => {
                let value = field::get(rec, res, from).ok_or_else(|| {
                    format!("entry is missing the expected parse_from field `{from}`")
                })?;
                let parsed = match how {
                    ParseKind::Json { parse_ints } => parse_json(value, *parse_ints)?,
                    ParseKind::Regex(re) => parse_regex(value, re)?,
                };
                field::set(rec, res, to, parsed).map_err(|e| format!("set parse_to: {e}"))?;
                if let Some(b) = body
                    && let Some(v) = field::get(rec, res, b)
                {
                    rec.body = Some(v.clone());
                }
                // As the collector: all are tried, the first error is reported.
                let t = time.as_ref().map_or(Ok(()), |t| t.run(rec, res, now_ns));
                let s = severity.as_ref().map_or(Ok(()), |s| s.run(rec, res));
                let tr = trace.as_ref().map_or(Ok(()), |t| t.run(rec, res));
                t.map_err(|e| format!("time parser: {e}"))?;
                s.map_err(|e| format!("severity parser: {e}"))?;
                tr.map_err(|e| format!("trace parser: {e}"))
            }
            Kind::Trace(t) => t.run(rec, res),
            Kind::Severity(s) => s.run(rec, res),
            Kind::Time(t) => t.run(rec, res, now_ns),
            Kind::Move { from, to } => {
                let v = field::delete(rec, res, from)
                    .ok_or_else(|| format!("move: field does not exist: {from}"))?;
                field::set(rec, res, to, v)
            }
            Kind::Remove(f) => {
                if f.root == Root::Attributes && f.keys.is_empty() {
                    rec.attributes.clear();
                    return Ok(());
                }
                field::delete(rec, res, f)
                    .map(|_| ())
                    .ok_or_else(|| format!("remove: field does not exist: {f}"))
            }
            Kind::Add { field: f, value } => field::set(rec, res, f, value.clone()),
        }
    }
}

impl TimeStep {
    fn run(&self, rec: &mut LogRecord, res: &[KeyValue], now_ns: u64) -> Result<(), String> {
        let v = field::get(rec, res, &self.from).ok_or_else(|| {
            format!(
                "log entry does not have the expected parse_from field `{}`",
                self.from
            )
        })?;
        rec.time_unix_nano = self.layout.parse(v, now_ns)?;
        Ok(())
    }
}

impl SeverityStep {
    fn run(&self, rec: &mut LogRecord, res: &[KeyValue]) -> Result<(), String> {
        let v = field::get(rec, res, &self.from).ok_or_else(|| {
            format!(
                "log entry does not have the expected parse_from field `{}`",
                self.from
            )
        })?;
        let (text, lookup) = match &v.value {
            Some(Value::StringValue(s)) => {
                let lookup = if s.chars().any(char::is_uppercase) {
                    s.to_lowercase()
                } else {
                    s.clone()
                };
                (s.clone(), lookup)
            }
            Some(Value::BytesValue(b)) => {
                let s = String::from_utf8_lossy(b).into_owned();
                let l = s.to_lowercase();
                (s, l)
            }
            Some(Value::IntValue(i)) => (i.to_string(), i.to_string()),
            Some(Value::DoubleValue(f)) => {
                if f.fract() != 0.0 || !f.is_finite() {
                    return Err(
                        "parse: type float64 cannot be a severity unless it is a whole number"
                            .to_string(),
                    );
                }
                let s = (*f as i64).to_string();
                (s.clone(), s)
            }
            _ => return Err(format!("parse: type {} cannot be a severity", type_name(v))),
        };
        rec.severity_number = self.mapping.get(&lookup).copied().unwrap_or(0);
        rec.severity_text = text;
        Ok(())
    }
}

/// Go's `%v` of a value, as the trace parser formats it before hex-decoding.
fn go_text(v: &AnyValue) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match &v.value {
        Some(Value::StringValue(s)) => Cow::Borrowed(s),
        Some(Value::IntValue(i)) => Cow::Owned(i.to_string()),
        Some(Value::DoubleValue(f)) if f.fract() == 0.0 && f.abs() < 1e21 => {
            Cow::Owned(format!("{}", *f as i64))
        }
        Some(Value::DoubleValue(f)) => Cow::Owned(f.to_string()),
        Some(Value::BoolValue(b)) => Cow::Owned(b.to_string()),
        Some(Value::BytesValue(b)) => Cow::Owned(format!("{b:?}")),
        _ => Cow::Borrowed("map[]"),
    }
}

pub(super) fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let nib = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("encoding/hex: invalid byte: {:?}", c as char)),
        }
    };
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks(2) {
        match pair {
            [h, l] => out.push(nib(*h)? << 4 | nib(*l)?),
            [h] => {
                nib(*h)?;
                return Err("encoding/hex: odd length hex string".into());
            }
            _ => {}
        }
    }
    Ok(out)
}

impl TraceStep {
    fn fields(&self) -> [&Field; 3] {
        [&self.trace_id, &self.span_id, &self.flags]
    }

    fn run(&self, rec: &mut LogRecord, res: &[KeyValue]) -> Result<(), String> {
        let read = |f: &Field| -> Result<Option<Vec<u8>>, String> {
            match field::get(rec, res, f) {
                None => Ok(None),
                Some(v) => hex_decode(&go_text(v)).map(Some),
            }
        };
        let (t, s, fl) = (read(&self.trace_id), read(&self.span_id), read(&self.flags));
        let mut errors = Vec::new();
        for (name, r) in [("trace_id", &t), ("span_id", &s), ("trace_flags", &fl)] {
            if let Err(e) = r {
                errors.push(format!("{name}: {e}"));
            }
        }
        rec.flags = match &fl {
            Ok(Some(b)) => b.first().map_or(0, |&x| u32::from(x)),
            _ => 0,
        };
        rec.trace_id = to_id(t, 16);
        rec.span_id = to_id(s, 8);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "error decoding traces for logs ({})",
                errors.join("; ")
            ))
        }
    }
}

/// As the collector's converter: the bytes padded or cut to the id's size; an unset (or
/// undecodable) field, or an all-zero id, leaves the id empty.
pub(super) fn to_id(r: Result<Option<Vec<u8>>, String>, n: usize) -> Vec<u8> {
    match r {
        Ok(Some(mut b)) if !b.iter().take(n).all(|&x| x == 0) => {
            b.resize(n, 0);
            b
        }
        _ => Vec::new(),
    }
}

fn parse_regex(value: &AnyValue, re: &regex::Regex) -> Result<AnyValue, String> {
    let Some(Value::StringValue(s)) = &value.value else {
        return Err(format!(
            "type '{}' cannot be parsed as regex",
            type_name(value)
        ));
    };
    let caps = re
        .captures(s)
        .ok_or_else(|| "regex pattern does not match".to_string())?;
    let mut values = Vec::new();
    for (i, name) in re.capture_names().enumerate() {
        if let Some(name) = name {
            let text = caps.get(i).map_or("", |m| m.as_str());
            field::map_insert(&mut values, name, field::string_value(text.to_string()));
        }
    }
    Ok(AnyValue {
        value: Some(Value::KvlistValue(KeyValueList { values })),
    })
}

/// A JSON object as an OTLP map, in one pass (numbers as doubles unless `parse_ints`, as the
/// collector's jsoniter decoding does).
pub fn parse_json(value: &AnyValue, parse_ints: bool) -> Result<AnyValue, String> {
    let Some(Value::StringValue(s)) = &value.value else {
        return Err(format!(
            "type {} cannot be parsed as JSON",
            type_name(value)
        ));
    };
    let mut de = serde_json::Deserializer::from_str(s);
    let v = JsonSeed(parse_ints)
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    match v.value {
        Some(Value::KvlistValue(_)) => Ok(v),
        // `null` decodes into an empty map in Go.
        None => Ok(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList::default())),
        }),
        _ => Err("cannot unmarshal a JSON value that is not an object into a map".into()),
    }
}

#[derive(Clone, Copy)]
struct JsonSeed(bool);

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = AnyValue;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<AnyValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed {
    type Value = AnyValue;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<AnyValue, E> {
        Ok(AnyValue {
            value: Some(Value::BoolValue(b)),
        })
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<AnyValue, E> {
        let v = if self.0 {
            Value::IntValue(i)
        } else {
            Value::DoubleValue(i as f64)
        };
        Ok(AnyValue { value: Some(v) })
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<AnyValue, E> {
        let v = match i64::try_from(u) {
            Ok(i) if self.0 => Value::IntValue(i),
            _ => Value::DoubleValue(u as f64),
        };
        Ok(AnyValue { value: Some(v) })
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<AnyValue, E> {
        Ok(AnyValue {
            value: Some(Value::DoubleValue(f)),
        })
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<AnyValue, E> {
        Ok(field::string_value(s.to_string()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<AnyValue, E> {
        Ok(field::string_value(s))
    }
    fn visit_unit<E: de::Error>(self) -> Result<AnyValue, E> {
        Ok(AnyValue::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<AnyValue, E> {
        Ok(AnyValue::default())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
        let mut values = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            values.push(v);
        }
        Ok(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values })),
        })
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
        let mut values: Vec<KeyValue> = Vec::with_capacity(8);
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(self)?;
            // A repeated key: the last value wins, as in Go.
            field::map_insert(&mut values, &key, v);
        }
        Ok(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList { values })),
        })
    }
}

#[cfg(test)]
mod tests;
