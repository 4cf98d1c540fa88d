//! YAML configuration tree in which every node and key remembers its file,
//! line and column, with collector-style merging of several files,
//! `${env:VAR}` substitution, and typed decoding through serde whose errors
//! point at the offending key.

use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

use super::error::{ConfigError, Loc};

/// A YAML value together with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Also holds integers that don't fit in `i64`, so they survive as text and
    /// still decode into `u64` fields through the lenient number parsing.
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are unique (enforced by `parse`).
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub loc: Loc,
}

impl Node {
    /// The YAML name of this node's kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "boolean",
            NodeKind::Int(_) => "integer",
            NodeKind::Float(_) => "float",
            NodeKind::Str(_) => "string",
            NodeKind::Seq(_) => "sequence",
            NodeKind::Map(_) => "mapping",
        }
    }
}

/// The value under `key` if `node` is a mapping that has it.
pub fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.kind {
        NodeKind::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
        _ => None,
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Untyped YAML as serde-saphyr hands it over; `Spanned` supplies the
/// locations, which is why this intermediate tree exists at all (the file name
/// can't be threaded through `Spanned<T>`, which needs plain `Deserialize`).
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<RawKey>, Spanned<Raw>)>),
}

/// A mapping key; scalar keys of any type are kept as their text.
struct RawKey(String);

impl<'de> de::Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(i64::try_from(v).map_or_else(|_| Raw::Str(v.to_string()), Raw::Int))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(i64::try_from(v).map_or_else(|_| Raw::Str(v.to_string()), Raw::Int))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(i64::try_from(v).map_or_else(|_| Raw::Str(v.to_string()), Raw::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawKey>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

impl<'de> de::Deserialize<'de> for RawKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawKeyVisitor)
    }
}

struct RawKeyVisitor;

impl Visitor<'_> for RawKeyVisitor {
    type Value = RawKey;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a scalar mapping key")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKey, E> {
        Ok(RawKey(float_text(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKey, E> {
        Ok(RawKey(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKey, E> {
        Ok(RawKey(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawKey, E> {
        Err(E::custom("a mapping key must not be null"))
    }
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // The message goes into ConfigError; a rendered source snippet would not fit there.
        with_snippet: false,
        // `mode: off` or `country: no` must stay strings (YAML 1.2 / Go yaml.v3).
        strict_booleans: true,
        // Keep `0755` / `007` spelled as written for string fields; number
        // fields still parse them through the lenient path.
        leading_zero_numbers_as_strings: true,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
    }
}

/// Parses one YAML document into a located tree.
///
/// An empty document (or one that is just `null`) becomes an empty mapping,
/// as an empty config file means "all defaults". Duplicate keys in a mapping
/// are an error at the second key; anchors, aliases and `<<` merge keys are
/// expanded (an aliased node is located where it is used).
pub fn parse(file: &str, text: &str) -> Result<Node, ConfigError> {
    let file: Arc<str> = Arc::from(file);
    let raw: Option<Spanned<Raw>> = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| yaml_error(&file, &e))?;
    let start = Loc {
        file: file.clone(),
        line: 1,
        column: 1,
    };
    let node = match raw {
        Some(raw) => convert(raw, &file),
        None => Node {
            kind: NodeKind::Null,
            loc: start.clone(),
        },
    };
    Ok(match node.kind {
        NodeKind::Null => Node {
            kind: NodeKind::Map(Vec::new()),
            loc: if node.loc.line == 0 { start } else { node.loc },
        },
        _ => node,
    })
}

fn yaml_error(file: &Arc<str>, err: &serde_saphyr::Error) -> ConfigError {
    let err = err.without_snippet();
    let message = serde_saphyr::UserMessageFormatter
        .format_message(err)
        .into_owned();
    ConfigError {
        loc: err.location().and_then(|l| to_loc(file, &l)),
        path: String::new(),
        message,
    }
}

/// `None` for serde-saphyr's "unknown" sentinel (line 0).
fn to_loc(file: &Arc<str>, l: &serde_saphyr::Location) -> Option<Loc> {
    (l.line() > 0).then(|| Loc {
        file: file.clone(),
        line: u32::try_from(l.line()).unwrap_or(u32::MAX),
        column: u32::try_from(l.column()).unwrap_or(u32::MAX),
    })
}

/// Prefers where the text was written (`defined`) over where an alias or
/// merge key pulled it in (`referenced`): serde-saphyr gives every node under
/// an alias the alias's own position, which would make all errors inside
/// aliased content point at the same `*name` token.
fn span_loc<T>(file: &Arc<str>, s: &Spanned<T>) -> Loc {
    to_loc(file, &s.defined)
        .or_else(|| to_loc(file, &s.referenced))
        .unwrap_or_else(|| Loc {
            file: file.clone(),
            line: 0,
            column: 0,
        })
}

fn convert(raw: Spanned<Raw>, file: &Arc<str>) -> Node {
    let loc = span_loc(file, &raw);
    let kind = match raw.value {
        Raw::Null => NodeKind::Null,
        Raw::Bool(b) => NodeKind::Bool(b),
        Raw::Int(i) => NodeKind::Int(i),
        Raw::Float(f) => NodeKind::Float(f),
        Raw::Str(s) => NodeKind::Str(s),
        Raw::Seq(items) => NodeKind::Seq(items.into_iter().map(|i| convert(i, file)).collect()),
        Raw::Map(entries) => NodeKind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key {
                        loc: span_loc(file, &k),
                        name: k.value.0,
                    };
                    (key, convert(v, file))
                })
                .collect(),
        ),
    };
    Node { kind, loc }
}

/// Float as text that parses back to the same value and keeps a `.0` on
/// whole numbers, so `1.0` stays recognisably a float when rendered.
fn float_text(f: f64) -> String {
    format!("{f:?}")
}

// ---------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------

/// Deep-merges `over` onto `base` the way the collector combines several
/// `--config` files: mappings merge key by key (base's key order, new keys
/// appended), anything else in `over` — scalar, sequence or null — replaces.
/// Merged entries take `over`'s locations, as that is where the effective
/// value was written.
pub fn merge(base: Node, over: Node) -> Node {
    match (base.kind, over.kind) {
        (NodeKind::Map(mut entries), NodeKind::Map(over_entries)) => {
            for (key, value) in over_entries {
                match entries.iter_mut().find(|(k, _)| k.name == key.name) {
                    Some(slot) => {
                        let placeholder = Node {
                            kind: NodeKind::Null,
                            loc: value.loc.clone(),
                        };
                        let old = std::mem::replace(&mut slot.1, placeholder);
                        slot.1 = merge(old, value);
                        slot.0 = key;
                    }
                    None => entries.push((key, value)),
                }
            }
            Node {
                kind: NodeKind::Map(entries),
                loc: over.loc,
            }
        }
        (_, kind) => Node {
            kind,
            loc: over.loc,
        },
    }
}

// ---------------------------------------------------------------------------
// Environment substitution
// ---------------------------------------------------------------------------

/// Expands `${env:VAR}`, `${env:VAR:-default}` and `${VAR}` in every string
/// scalar (keys are left alone); `$$` is a literal `$`.
///
/// Follows the collector: an unset variable without a default becomes an empty
/// string, and a scalar that is exactly one reference is re-typed from the
/// variable's text (`true` → bool, `4317` → int, `0.5` → float). Re-typing
/// only happens when the typed value prints back to the same text, so a
/// string field still receives exactly what the variable held (`007`, `1e3`).
/// `path` is the key path of `node`, used in error messages.
pub fn substitute_env(
    node: &mut Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match &mut node.kind {
        NodeKind::Str(s) if s.contains('$') => {
            let (text, whole) =
                expand(s, lookup).map_err(|msg| ConfigError::at(&node.loc, path, msg))?;
            node.kind = if whole {
                retype(text)
            } else {
                NodeKind::Str(text)
            };
        }
        NodeKind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &index_path(path, i), lookup)?;
            }
        }
        NodeKind::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                substitute_env(value, &child_path(path, &key.name), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Returns the expanded text and whether the input was one single reference.
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    let mut whole = false;
    if s.starts_with("${") {
        start = reference(s, 0, lookup, &mut out)?;
        whole = start == s.len();
    }
    expand_until(s, start, false, lookup, &mut out)?;
    Ok((out, whole))
}

/// Expands from byte `i` to the end of `s`, or — inside a default value — up
/// to and including the `}` closing the enclosing reference. Returns the index
/// after the last consumed byte.
fn expand_until(
    s: &str,
    mut i: usize,
    in_default: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<usize, String> {
    loop {
        let Some(rest) = s.get(i..).filter(|r| !r.is_empty()) else {
            return if in_default {
                Err(format!("unterminated `${{` in `{s}`"))
            } else {
                Ok(i)
            };
        };
        if rest.starts_with("$$") {
            out.push('$');
            i += 2;
        } else if rest.starts_with("${") {
            i = reference(s, i, lookup, out)?;
        } else if in_default && rest.starts_with('}') {
            return Ok(i + 1);
        } else if let Some(c) = rest.chars().next() {
            out.push(c);
            i += c.len_utf8();
        }
    }
}

/// Expands the `${...}` starting at byte `start` into `out`; returns the index
/// just past its closing `}`.
fn reference(
    s: &str,
    start: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<usize, String> {
    let body_start = start + 2;
    let body = s.get(body_start..).unwrap_or("");
    let spec_len = body.find(['}', '$', '{']).unwrap_or(body.len());
    let (spec, default_at) = match body[..spec_len].find(":-") {
        Some(p) => (&body[..p], Some(body_start + p + 2)),
        None => (&body[..spec_len], None),
    };
    let (end, default) = match default_at {
        Some(at) => {
            let mut text = String::new();
            let end = expand_until(s, at, true, lookup, &mut text)?;
            (end, Some(text))
        }
        None if body[spec_len..].starts_with('}') => (body_start + spec_len + 1, None),
        None if spec_len == body.len() => return Err(format!("unterminated `${{` in `{s}`")),
        None => {
            return Err(format!(
                "invalid reference `${{{}` in `{s}` (write `$$` for a literal `$`)",
                &body[..=spec_len]
            ));
        }
    };
    let var = match spec.split_once(':') {
        Some(("env", var)) => var,
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported config source `{scheme}` in `${{{spec}}}` (only `env` is supported)"
            ));
        }
        None => spec,
    };
    if !is_env_name(var) {
        return Err(format!(
            "invalid environment variable name `{var}` in `{s}` (write `$$` for a literal `$`)"
        ));
    }
    match lookup(var) {
        Some(value) => out.push_str(&value),
        None => out.push_str(default.as_deref().unwrap_or("")),
    }
    Ok(end)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Types a substituted value like a plain YAML scalar, but only when that is
/// lossless (see `substitute_env`).
fn retype(text: String) -> NodeKind {
    match text.as_str() {
        "true" => return NodeKind::Bool(true),
        "false" => return NodeKind::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>()
        && i.to_string() == text
    {
        return NodeKind::Int(i);
    }
    let numeric = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if numeric
        && let Ok(f) = text.parse::<f64>()
        && float_text(f) == text
    {
        return NodeKind::Float(f);
    }
    NodeKind::Str(text)
}

// ---------------------------------------------------------------------------
// Typed decoding
// ---------------------------------------------------------------------------

/// Decodes `node` (found at key path `path`) into `T`.
///
/// Scalars are decoded leniently as the collector does after env
/// substitution: `"42"` fills a number field, `"true"` a bool, and numbers or
/// bools fill string fields. A null where a mapping or sequence is expected is
/// empty (`otlp:` means "otlp with defaults"). Errors carry the file, line,
/// column and dotted key path of the value (of the key, for unknown keys).
pub fn from_node<T: de::DeserializeOwned>(node: &Node, path: &str) -> Result<T, ConfigError> {
    T::deserialize(NodeDeserializer {
        node,
        path: path.to_owned(),
    })
    .map_err(|e| e.located(&node.loc, path))
}

struct NodeDeserializer<'a> {
    node: &'a Node,
    path: String,
}

impl<'a> NodeDeserializer<'a> {
    fn child(node: &'a Node, path: String) -> Self {
        NodeDeserializer { node, path }
    }

    fn locate<T>(&self, r: Result<T, ConfigError>) -> Result<T, ConfigError> {
        r.map_err(|e| e.located(&self.node.loc, &self.path))
    }

    fn any<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        match &self.node.kind {
            NodeKind::Null => v.visit_unit(),
            NodeKind::Bool(b) => v.visit_bool(*b),
            NodeKind::Int(i) => v.visit_i64(*i),
            NodeKind::Float(f) => v.visit_f64(*f),
            NodeKind::Str(s) => v.visit_str(s),
            NodeKind::Seq(items) => self.seq(items, v),
            NodeKind::Map(entries) => self.map(entries, v),
        }
    }

    fn seq<'de, V: Visitor<'de>>(&self, items: &'a [Node], v: V) -> Result<V::Value, ConfigError> {
        let mut access = SeqAccess {
            items: items.iter().enumerate(),
            parent: &self.path,
        };
        let value = v.visit_seq(&mut access)?;
        // Fixed-size targets (tuples, arrays) stop early; extra items are a user error.
        match access.items.len() {
            0 => Ok(value),
            extra => Err(ConfigError::custom(format!(
                "expected {} item(s), found {}",
                items.len() - extra,
                items.len()
            ))),
        }
    }

    fn map<'de, V: Visitor<'de>>(
        &self,
        entries: &'a [(Key, Node)],
        v: V,
    ) -> Result<V::Value, ConfigError> {
        v.visit_map(MapAccess {
            entries: entries.iter(),
            parent: &self.path,
            pending: None,
        })
    }

    fn bool<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        match &self.node.kind {
            NodeKind::Str(s) => match s.trim() {
                "true" | "True" | "TRUE" => v.visit_bool(true),
                "false" | "False" | "FALSE" => v.visit_bool(false),
                _ => self.any(v),
            },
            _ => self.any(v),
        }
    }

    fn int<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        if let NodeKind::Str(s) = &self.node.kind {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return v.visit_i64(i);
            }
            if let Ok(u) = t.parse::<u64>() {
                return v.visit_u64(u);
            }
        }
        self.any(v)
    }

    fn float<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        if let NodeKind::Str(s) = &self.node.kind
            && let Ok(f) = s.trim().parse::<f64>()
        {
            return v.visit_f64(f);
        }
        self.any(v)
    }

    fn string<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        match &self.node.kind {
            NodeKind::Bool(b) => v.visit_str(if *b { "true" } else { "false" }),
            NodeKind::Int(i) => v.visit_string(i.to_string()),
            NodeKind::Float(f) => v.visit_string(float_text(*f)),
            _ => self.any(v),
        }
    }

    fn seq_like<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        match &self.node.kind {
            NodeKind::Null => self.seq(&[], v),
            _ => self.any(v),
        }
    }

    fn map_like<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        match &self.node.kind {
            NodeKind::Null => self.map(&[], v),
            _ => self.any(v),
        }
    }

    fn enumeration<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, ConfigError> {
        let name = match &self.node.kind {
            NodeKind::Str(s) => s.clone(),
            NodeKind::Bool(b) => b.to_string(),
            NodeKind::Int(i) => i.to_string(),
            NodeKind::Float(f) => float_text(*f),
            NodeKind::Map(entries) => {
                return match entries.as_slice() {
                    [(key, value)] => v.visit_enum(EnumAccess {
                        key,
                        value,
                        path: child_path(&self.path, &key.name),
                    }),
                    _ => Err(ConfigError::custom(format!(
                        "expected {}, found a mapping with {} keys (a variant with settings is \
                         written as a mapping with exactly one key)",
                        ExpectedOf(&v),
                        entries.len()
                    ))),
                };
            }
            NodeKind::Null | NodeKind::Seq(_) => return self.any(v),
        };
        v.visit_enum(UnitVariant { name })
    }
}

/// Borrows a visitor's `expecting` text for a hand-written message.
struct ExpectedOf<'v, V>(&'v V);

impl<'de, V: Visitor<'de>> std::fmt::Display for ExpectedOf<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }
}

/// Defines `Deserializer` methods that route to a helper and then attribute
/// any error to this node.
macro_rules! via {
    ($($method:ident => $helper:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ConfigError> {
            let r = self.$helper(v);
            self.locate(r)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = ConfigError;

    via! {
        deserialize_any => any,
        deserialize_bool => bool,
        deserialize_i8 => int,
        deserialize_i16 => int,
        deserialize_i32 => int,
        deserialize_i64 => int,
        deserialize_i128 => int,
        deserialize_u8 => int,
        deserialize_u16 => int,
        deserialize_u32 => int,
        deserialize_u64 => int,
        deserialize_u128 => int,
        deserialize_f32 => float,
        deserialize_f64 => float,
        deserialize_char => string,
        deserialize_str => string,
        deserialize_string => string,
        deserialize_identifier => string,
        deserialize_seq => seq_like,
        deserialize_map => map_like,
        deserialize_unit => any,
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ConfigError> {
        let r = match &self.node.kind {
            NodeKind::Str(s) => v.visit_bytes(s.as_bytes()),
            _ => self.any(v),
        };
        self.locate(r)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ConfigError> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ConfigError> {
        let r = match self.node.kind {
            NodeKind::Null => v.visit_none(),
            _ => v.visit_some(NodeDeserializer::child(self.node, self.path.clone())),
        };
        self.locate(r)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, ConfigError> {
        let r = v.visit_newtype_struct(NodeDeserializer::child(self.node, self.path.clone()));
        self.locate(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        v: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ConfigError> {
        let r = self.enumeration(v);
        self.locate(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ConfigError> {
        v.visit_unit()
    }
}

struct SeqAccess<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    parent: &'p str,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = ConfigError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ConfigError> {
        let Some((i, item)) = self.items.next() else {
            return Ok(None);
        };
        let path = index_path(self.parent, i);
        // Errors raised by a Deserialize impl after it got its value (e.g. a
        // validation `custom`) never pass through the item's deserializer, so
        // attribute them here.
        seed.deserialize(NodeDeserializer::child(item, path.clone()))
            .map(Some)
            .map_err(|e| e.located(&item.loc, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a, 'p> {
    entries: std::slice::Iter<'a, (Key, Node)>,
    parent: &'p str,
    pending: Option<(&'a Node, String)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let path = child_path(self.parent, &key.name);
        // Keys decode like string scalars (so numeric map keys still work) but
        // are located at the key, which is where an unknown-key error belongs.
        let key_node = Node {
            kind: NodeKind::Str(key.name.clone()),
            loc: key.loc.clone(),
        };
        let k = seed
            .deserialize(NodeDeserializer::child(&key_node, path.clone()))
            .map_err(|e| e.located(&key.loc, &path))?;
        self.pending = Some((value, path));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        let Some((value, path)) = self.pending.take() else {
            return Err(ConfigError::custom("map value requested before its key"));
        };
        seed.deserialize(NodeDeserializer::child(value, path.clone()))
            .map_err(|e| e.located(&value.loc, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum written as a single-key mapping: `{variant: content}`.
struct EnumAccess<'a> {
    key: &'a Key,
    value: &'a Node,
    path: String,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = ConfigError;
    type Variant = NodeDeserializer<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), ConfigError> {
        let key_node = Node {
            kind: NodeKind::Str(self.key.name.clone()),
            loc: self.key.loc.clone(),
        };
        let variant = seed
            .deserialize(NodeDeserializer::child(&key_node, self.path.clone()))
            .map_err(|e| e.located(&self.key.loc, &self.path))?;
        Ok((variant, NodeDeserializer::child(self.value, self.path)))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDeserializer<'_> {
    type Error = ConfigError;

    fn unit_variant(self) -> Result<(), ConfigError> {
        match self.node.kind {
            NodeKind::Null => Ok(()),
            _ => Err(ConfigError::at(
                &self.node.loc,
                self.path,
                format!(
                    "this value takes no settings, found {}",
                    self.node.kind_name()
                ),
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ConfigError> {
        let (loc, path) = (self.node.loc.clone(), self.path.clone());
        seed.deserialize(self).map_err(|e| e.located(&loc, &path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, ConfigError> {
        de::Deserializer::deserialize_seq(self, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ConfigError> {
        de::Deserializer::deserialize_map(self, v)
    }
}

/// An enum written as a plain scalar naming a unit variant.
struct UnitVariant {
    name: String,
}

impl<'de> de::EnumAccess<'de> for UnitVariant {
    type Error = ConfigError;
    type Variant = UnitOnly;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, UnitOnly), ConfigError> {
        let de: de::value::StringDeserializer<ConfigError> = self.name.into_deserializer();
        Ok((seed.deserialize(de)?, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> de::VariantAccess<'de> for UnitOnly {
    type Error = ConfigError;

    fn unit_variant(self) -> Result<(), ConfigError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        _seed: T,
    ) -> Result<T::Value, ConfigError> {
        Err(ConfigError::custom(
            "this value needs settings: write it as a mapping `name: {...}`",
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _v: V) -> Result<V::Value, ConfigError> {
        Err(ConfigError::custom(
            "this value needs settings: write it as a mapping `name: [...]`",
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, ConfigError> {
        Err(ConfigError::custom(
            "this value needs settings: write it as a mapping `name: {...}`",
        ))
    }
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

const DURATION_EXPECTED: &str = "a duration like `200ms` or `10s`";

/// Parses a Go `time.ParseDuration` string ("1h30m", "1.5s", "100µs", "0").
/// Negative durations are rejected since `std::time::Duration` can't hold them.
/// Parses a Go-style duration (`200ms`, `1h30m`), for flags as well as config values.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s.trim())
        .ok_or_else(|| format!("expected a duration like `200ms` or `10s`, found `{s}`"))
}

fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" || s == "+0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let not_digit = |c: char| !c.is_ascii_digit();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(not_digit).unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_end);
        rest = after;
        let mut frac = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let end = after_dot.find(not_digit).unwrap_or(after_dot.len());
            (frac, rest) = after_dot.split_at(end);
        }
        if int_part.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_end);
        rest = after;
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = whole.checked_mul(nanos_per_unit)?;
        // Digits beyond 18 are below a nanosecond even for hours; dropping
        // them keeps the arithmetic within u128.
        let frac = frac.get(..frac.len().min(18)).unwrap_or(frac);
        if !frac.is_empty() {
            let num: u128 = frac.parse().ok()?;
            let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
            value = value.checked_add(num.checked_mul(nanos_per_unit)? / scale)?;
        }
        total = total.checked_add(value)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        parse_go_duration(s)
            .ok_or_else(|| E::custom(format!("expected {DURATION_EXPECTED}, found `{s}`")))
    }

    // Other deserializers hand numbers over as numbers; only 0 is unambiguous.
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        self.visit_str(&n.to_string())
    }
}

/// `#[serde(deserialize_with = "deserialize_duration")]` for Go-style
/// duration strings such as `200ms`, `10s`, `1h30m`, `1.5s`, `100us`, `0`.
pub fn deserialize_duration<'de, D: de::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

struct OptDurationVisitor;

impl<'de> Visitor<'de> for OptDurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        deserialize_duration(d).map(Some)
    }
}

/// Like [`deserialize_duration`] for `Option<Duration>`; null means `None`.
/// Pair it with `#[serde(default)]` so a missing key is `None` too.
pub fn deserialize_opt_duration<'de, D: de::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    d.deserialize_option(OptDurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    const FILE: &str = "sluice.yaml";

    fn p(text: &str) -> Node {
        match parse(FILE, text) {
            Ok(n) => n,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn at<'a>(node: &'a Node, keys: &[&str]) -> &'a Node {
        keys.iter().fold(node, |n, k| match get(n, k) {
            Some(c) => c,
            None => panic!("no key {k}"),
        })
    }

    fn key_loc(node: &Node, key: &str) -> (u32, u32) {
        match &node.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, _)| (k.loc.line, k.loc.column))
                .unwrap_or_else(|| panic!("no key {key}")),
            _ => panic!("not a map"),
        }
    }

    fn lc(node: &Node) -> (u32, u32) {
        (node.loc.line, node.loc.column)
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn decode<T: de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
        from_node(&p(text), "")
    }

    const PIPELINE: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
processors:
  tail_sampling:
    policies:
      - name: errors
        type: status_code
      - name: slow
        type: latency
      - {name: rest, type: always_sample}
";

    #[test]
    fn nested_keys_and_items_are_located() {
        let root = p(PIPELINE);
        let grpc = at(&root, &["receivers", "otlp", "protocols", "grpc"]);
        assert_eq!(key_loc(grpc, "endpoint"), (5, 9));
        assert_eq!(lc(at(grpc, &["endpoint"])), (5, 19));
        assert_eq!(grpc.loc.file.as_ref(), FILE);

        let policies = at(&root, &["processors", "tail_sampling", "policies"]);
        let NodeKind::Seq(items) = &policies.kind else {
            panic!("policies is {}", policies.kind_name());
        };
        assert_eq!(items.len(), 3);
        assert_eq!(key_loc(&items[1], "type"), (12, 9));
        assert_eq!(lc(at(&items[1], &["type"])), (12, 15));
        assert_eq!(key_loc(&items[2], "type"), (13, 22));
        assert_eq!(lc(&items[2]), (13, 9));
    }

    #[test]
    fn scalars_are_typed() {
        let root = p(
            "a: 1\nb: 1.5\nc: true\nd: ~\ne: text\nf: '42'\ng: 18446744073709551615\n\
                      h: off\ni: 0755\n",
        );
        let kind = |k| &at(&root, &[k]).kind;
        assert_eq!(kind("a"), &NodeKind::Int(1));
        assert_eq!(kind("b"), &NodeKind::Float(1.5));
        assert_eq!(kind("c"), &NodeKind::Bool(true));
        assert_eq!(kind("d"), &NodeKind::Null);
        assert_eq!(kind("e"), &NodeKind::Str("text".into()));
        assert_eq!(kind("f"), &NodeKind::Str("42".into()));
        assert_eq!(kind("g"), &NodeKind::Str("18446744073709551615".into()));
        assert_eq!(kind("h"), &NodeKind::Str("off".into()));
        assert_eq!(kind("i"), &NodeKind::Str("0755".into()));
    }

    #[test]
    fn non_string_keys_become_text() {
        let root = p("1: a\ntrue: b\n");
        assert!(get(&root, "1").is_some());
        assert!(get(&root, "true").is_some());
    }

    #[test]
    fn empty_document_is_empty_map() {
        for text in ["", "\n", "# nothing here\n", "~\n"] {
            let root = p(text);
            assert_eq!(root.kind, NodeKind::Map(Vec::new()), "for {text:?}");
        }
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse(FILE, "a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        // The unclosed `[` is only noticed at the `:` on line 3.
        assert_eq!(
            err.to_string(),
            "sluice.yaml:3:2: illegal placement of ':' indicator"
        );
    }

    #[test]
    fn bad_indentation_is_located() {
        let err = parse(FILE, "a:\n  b: 1\n c: 2\n").unwrap_err();
        assert_eq!(err.loc.as_ref().map(|l| l.line), Some(3), "{err}");
    }

    #[test]
    fn duplicate_key_errors_at_second() {
        let err = parse(FILE, "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            err.loc.as_ref().map(|l| (l.line, l.column)),
            Some((3, 1)),
            "{err}"
        );
        assert!(err.message.contains("duplicate mapping key `a`"), "{err}");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let root = p("\
base: &base
  endpoint: x:1
  timeout: 5s
a:
  <<: *base
  timeout: 10s
b: *base
");
        let a = at(&root, &["a"]);
        assert_eq!(at(a, &["endpoint"]).kind, NodeKind::Str("x:1".into()));
        assert_eq!(at(a, &["timeout"]).kind, NodeKind::Str("10s".into()));
        assert_eq!(lc(at(a, &["timeout"])), (6, 12));
        let b = at(&root, &["b"]);
        assert_eq!(at(b, &["timeout"]).kind, NodeKind::Str("5s".into()));
        // Aliased and merged content is located where it was written.
        assert_eq!(lc(b), (2, 3));
        assert_eq!(lc(at(b, &["timeout"])), (3, 12));
        assert_eq!(key_loc(a, "endpoint"), (2, 3));
    }

    #[test]
    fn document_shape_errors() {
        let err = parse(FILE, "a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.loc.map(|l| l.line), Some(3));
        let err = parse(FILE, "~: 1\n").unwrap_err();
        assert_eq!(err.message, "a mapping key must not be null");
        let err = parse(FILE, "a:\n\tb: 1\n").unwrap_err();
        assert_eq!(err.loc.map(|l| (l.line, l.column)), Some((2, 2)));
    }

    #[test]
    fn merge_is_deep_and_keeps_order() {
        let base = p("a:\n  x: 1\n  y: [1, 2]\nb: keep\n");
        let over = parse("over.yaml", "a:\n  y: [3]\n  z: new\nc: added\n").unwrap();
        let merged = merge(base, over);
        let names = |n: &Node| match &n.kind {
            NodeKind::Map(e) => e.iter().map(|(k, _)| k.name.clone()).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        assert_eq!(names(&merged), ["a", "b", "c"]);
        let a = at(&merged, &["a"]);
        assert_eq!(names(a), ["x", "y", "z"]);
        assert_eq!(at(a, &["x"]).kind, NodeKind::Int(1));
        let y = at(a, &["y"]);
        assert!(matches!(&y.kind, NodeKind::Seq(v) if v.len() == 1));
        assert_eq!(y.loc.file.as_ref(), "over.yaml");
        assert_eq!(at(&merged, &["b"]).loc.file.as_ref(), FILE);
    }

    #[test]
    fn merge_scalar_replaces_map() {
        let merged = merge(p("a:\n  x: 1\n"), p("a: 5\n"));
        assert_eq!(at(&merged, &["a"]).kind, NodeKind::Int(5));
    }

    #[test]
    fn env_substitution() {
        let mut root = p("\
a: ${env:HOST}:${PORT}
b: ${env:MISSING:-fallback}
c: ${env:MISSING}
d: cost $$5 and $$${env:HOST}
e: ${env:PORT}
f: ${env:FLAG}
g: ${env:RATIO}
h: ${env:ZIP}
i: ${env:MISSING:-${env:HOST}-x}
j: plain $ sign
k: ${env:EMPTY:-unused}
l:
  - ${env:PORT}
");
        let lookup = env(&[
            ("HOST", "localhost"),
            ("PORT", "4317"),
            ("FLAG", "true"),
            ("RATIO", "0.25"),
            ("ZIP", "007"),
            ("EMPTY", ""),
        ]);
        substitute_env(&mut root, "", &lookup).unwrap();
        let kind = |k| at(&root, &[k]).kind.clone();
        let s = |v: &str| NodeKind::Str(v.into());
        assert_eq!(kind("a"), s("localhost:4317"));
        assert_eq!(kind("b"), s("fallback"));
        assert_eq!(kind("c"), s(""));
        assert_eq!(kind("d"), s("cost $5 and $localhost"));
        assert_eq!(kind("e"), NodeKind::Int(4317));
        assert_eq!(kind("f"), NodeKind::Bool(true));
        assert_eq!(kind("g"), NodeKind::Float(0.25));
        assert_eq!(kind("h"), s("007"));
        assert_eq!(kind("i"), s("localhost-x"));
        assert_eq!(kind("j"), s("plain $ sign"));
        assert_eq!(kind("k"), s(""));
        let NodeKind::Seq(items) = kind("l") else {
            panic!("l is not a sequence")
        };
        assert_eq!(items[0].kind, NodeKind::Int(4317));
    }

    #[test]
    fn env_keys_are_not_substituted() {
        let mut root = p("${env:A}: x\n");
        substitute_env(&mut root, "", &env(&[("A", "b")])).unwrap();
        assert!(get(&root, "${env:A}").is_some());
    }

    #[test]
    fn env_errors_are_located() {
        let cases = [
            ("x:\n  y: ${env:HOST\n", "unterminated"),
            ("x:\n  y: ${env:A:-b\n", "unterminated"),
            (
                "x:\n  y: ${file:/etc/x}\n",
                "unsupported config source `file`",
            ),
            (
                "x:\n  y: ${env:A-B}\n",
                "invalid environment variable name `A-B`",
            ),
        ];
        for (text, want) in cases {
            let mut root = p(text);
            let err = substitute_env(&mut root, "", &env(&[])).unwrap_err();
            assert!(err.message.contains(want), "{err}");
            assert_eq!(err.path, "x.y");
            assert!(
                err.to_string().starts_with("sluice.yaml:2:6: x.y: "),
                "{err}"
            );
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Grpc {
        endpoint: String,
        #[serde(default)]
        max_recv_msg_size_mib: u64,
    }

    #[derive(Debug, Deserialize)]
    struct Protocols {
        grpc: Option<Grpc>,
    }

    #[derive(Debug, Deserialize)]
    struct Otlp {
        protocols: Protocols,
    }

    #[test]
    fn unknown_key_message_points_at_key() {
        let root = p("\
receivers:
  otlp:
    protocols:
      grpc:
        endpont: 0.0.0.0:4317
");
        let otlp = at(&root, &["receivers", "otlp"]);
        let ok: Otlp = decode("protocols:\n  grpc:\n    endpoint: x\n").unwrap();
        assert_eq!(ok.protocols.grpc.map(|g| g.endpoint).as_deref(), Some("x"));
        let err = from_node::<Otlp>(otlp, "receivers.otlp").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:5:9: receivers.otlp.protocols.grpc.endpont: unknown key `endpont`; \
             did you mean `endpoint`? (valid keys: endpoint, max_recv_msg_size_mib)"
        );
    }

    #[test]
    fn unknown_key_without_suggestion() {
        let err = decode::<Grpc>("endpoint: x\ncompression: gzip\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:2:1: compression: unknown key `compression` \
             (valid keys: endpoint, max_recv_msg_size_mib)"
        );
    }

    #[test]
    fn missing_key_points_at_map() {
        let err =
            decode::<Otlp>("protocols:\n  grpc:\n    max_recv_msg_size_mib: 4\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:3:5: protocols.grpc: missing required key `endpoint`"
        );
    }

    #[test]
    fn wrong_type_is_located() {
        let err = decode::<Grpc>("endpoint: x\nmax_recv_msg_size_mib: [1]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:2:24: max_recv_msg_size_mib: expected u64, found a sequence"
        );
        let err = decode::<Grpc>("endpoint: x\nmax_recv_msg_size_mib: -3\n").unwrap_err();
        assert_eq!(err.message, "expected u64, found integer -3");
        let err = decode::<Grpc>("endpoint: {a: 1}\n").unwrap_err();
        assert_eq!(err.message, "expected a string, found a mapping");
        assert_eq!(err.path, "endpoint");
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Policy {
        AlwaysSample,
        Latency { threshold_ms: u64 },
        Probabilistic(f64),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Sampling {
        policies: Vec<Policy>,
    }

    #[test]
    fn enums_from_scalars_and_single_key_maps() {
        let s: Sampling = decode(
            "policies:\n  - always_sample\n  - latency: {threshold_ms: 500}\n  - probabilistic: 0.1\n",
        )
        .unwrap();
        assert_eq!(
            s.policies,
            [
                Policy::AlwaysSample,
                Policy::Latency { threshold_ms: 500 },
                Policy::Probabilistic(0.1)
            ]
        );
    }

    #[test]
    fn enum_unknown_value() {
        let err = decode::<Sampling>("policies:\n  - always_sample\n  - latncy: {}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:3:5: policies[1].latncy: unknown value `latncy`; did you mean `latency`? \
             (valid values: always_sample, latency, probabilistic)"
        );
        let err = decode::<Sampling>("policies: [sometimes]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:1:12: policies[0]: unknown value `sometimes` \
             (valid values: always_sample, latency, probabilistic)"
        );
    }

    #[test]
    fn enum_map_with_two_keys() {
        let err =
            decode::<Sampling>("policies:\n  - {latency: {}, always_sample: ~}\n").unwrap_err();
        assert!(err.message.contains("exactly one key"), "{err}");
        assert_eq!(err.path, "policies[0]");
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default)]
    struct Batch {
        send_batch_size: u32,
        label: Option<String>,
        tags: Vec<String>,
        #[serde(deserialize_with = "deserialize_duration")]
        timeout: Duration,
        #[serde(deserialize_with = "deserialize_opt_duration")]
        flush: Option<Duration>,
        ratio: f64,
        enabled: bool,
    }

    #[test]
    fn options_defaults_and_null_as_empty() {
        #[derive(Debug, Deserialize)]
        struct Processors {
            batch: Batch,
            other: Option<Batch>,
        }
        let p: Processors = decode("batch:\nother: ~\n").unwrap();
        assert_eq!(p.batch, Batch::default());
        assert!(p.other.is_none());

        let b: Batch = decode("label: ~\ntags: ~\nflush: ~\n").unwrap();
        assert_eq!(b, Batch::default());
        let b: Batch = decode("label: 123\ntags: [a, 2, true, 1.5]\nflush: 2s\n").unwrap();
        assert_eq!(b.label.as_deref(), Some("123"));
        assert_eq!(b.tags, ["a", "2", "true", "1.5"]);
        assert_eq!(b.flush, Some(Duration::from_secs(2)));
    }

    #[test]
    fn lenient_scalars_from_strings() {
        let mut root = p("send_batch_size: ${env:N}\nratio: '0.5'\nenabled: 'true'\n\
                          timeout: ${env:T}\n");
        substitute_env(&mut root, "", &env(&[("N", "8192"), ("T", "1s")])).unwrap();
        let b: Batch = from_node(&root, "").unwrap();
        assert_eq!(b.send_batch_size, 8192);
        assert_eq!(b.ratio, 0.5);
        assert!(b.enabled);
        assert_eq!(b.timeout, Duration::from_secs(1));

        let b: Batch = decode("send_batch_size: ' 12 '\nratio: 2\n").unwrap();
        assert_eq!(b.send_batch_size, 12);
        assert_eq!(b.ratio, 2.0);

        let err = decode::<Batch>("send_batch_size: lots\n").unwrap_err();
        assert_eq!(err.message, "expected u32, found string `lots`");
        let err = decode::<Batch>("send_batch_size: 99999999999\n").unwrap_err();
        assert_eq!(err.message, "expected u32, found integer 99999999999");
        let big: HashMap<u64, bool> = decode("18446744073709551615: true\n").unwrap();
        assert_eq!(big.get(&u64::MAX), Some(&true));
    }

    #[test]
    fn durations() {
        let ok = [
            ("200ms", Duration::from_millis(200)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("100μs", Duration::from_micros(100)),
            ("10ns", Duration::from_nanos(10)),
            ("1m0.5s", Duration::from_millis(60_500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_go_duration(text), Some(want), "{text}");
        }
        for bad in [
            "",
            "5",
            "s",
            "1.s.",
            "-1s",
            "1d",
            "10 s",
            "1e3s",
            "99999999999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn duration_errors_are_located() {
        let err = decode::<Batch>("enabled: true\ntimeout: 5\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:2:10: timeout: expected a duration like `200ms` or `10s`, found `5`"
        );
        let err = decode::<Batch>("timeout: {a: 1}\n").unwrap_err();
        assert_eq!(
            err.message,
            "expected a duration like `200ms` or `10s`, found a mapping"
        );
        let err = decode::<Batch>("flush: soon\n").unwrap_err();
        assert_eq!(err.path, "flush");
        let b: Batch = decode("timeout: 0\n").unwrap();
        assert_eq!(b.timeout, Duration::ZERO);
    }

    #[test]
    fn custom_errors_get_the_value_location() {
        fn port<'de, D: de::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
            let n = u16::deserialize(d)?;
            if n == 0 {
                return Err(D::Error::custom("port must not be 0"));
            }
            Ok(n)
        }
        #[derive(Debug, Deserialize)]
        struct Server {
            #[serde(deserialize_with = "port")]
            port: u16,
        }
        #[derive(Debug, Deserialize)]
        struct Root {
            servers: Vec<Server>,
        }
        let ok: Root = decode("servers:\n  - port: 1\n").unwrap();
        assert_eq!(ok.servers[0].port, 1);
        let err = decode::<Root>("servers:\n  - port: 1\n  - port: 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:3:11: servers[1].port: port must not be 0"
        );
    }

    #[test]
    fn tuples_reject_extra_items() {
        let pair: (u8, String) = decode::<HashMap<String, (u8, String)>>("a: [1, x]\n")
            .unwrap()
            .remove("a")
            .unwrap();
        assert_eq!(pair, (1, "x".to_owned()));
        let err = decode::<HashMap<String, (u8, String)>>("a: [1, x, y]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sluice.yaml:1:4: a: expected 2 item(s), found 3"
        );
    }

    #[test]
    fn ignored_and_untyped_values() {
        #[derive(Debug, Deserialize)]
        struct Only {
            keep: u8,
        }
        let o: Only = decode("keep: 1\nskip: {deep: [1, 2, {x: y}]}\n").unwrap();
        assert_eq!(o.keep, 1);
        let m: HashMap<String, Vec<u8>> = decode("a: [1]\nb: ~\n").unwrap();
        assert_eq!(m["b"], Vec::<u8>::new());
        let unit: () = from_node(at(&p("a: ~\n"), &["a"]), "a").unwrap();
        assert_eq!(unit, ());
    }

    #[test]
    fn kind_names() {
        let root = p("a: [1, 1.5, true, x, ~, {}]\n");
        let NodeKind::Seq(items) = &at(&root, &["a"]).kind else {
            panic!("not a sequence")
        };
        let names: Vec<_> = items.iter().map(Node::kind_name).collect();
        assert_eq!(
            names,
            ["integer", "float", "boolean", "string", "null", "mapping"]
        );
        assert_eq!(root.kind_name(), "mapping");
        assert_eq!(at(&root, &["a"]).kind_name(), "sequence");
    }
}
