//! Settings of the collector's `attributes` processor: an ordered list of actions, with the
//! collector's keys and validation messages.

use regex::Regex;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

use crate::receivers::otlp::config::NotYet;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributesConfig {
    pub actions: Vec<ActionConfig>,
    pub include: Option<NotYet>,
    pub exclude: Option<NotYet>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionConfig {
    pub key: String,
    pub action: String,
    pub value: Option<ConfigValue>,
    pub pattern: String,
    pub from_attribute: String,
    pub from_context: String,
    pub converted_type: String,
}

/// A scalar from the YAML, typed as written (`value: 3` is an int, `value: "3"` a string).
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl ConfigValue {
    pub fn to_any(&self) -> AnyValue {
        let value = match self {
            ConfigValue::Str(s) => any_value::Value::StringValue(s.clone()),
            ConfigValue::Int(i) => any_value::Value::IntValue(*i),
            ConfigValue::Double(d) => any_value::Value::DoubleValue(*d),
            ConfigValue::Bool(b) => any_value::Value::BoolValue(*b),
        };
        AnyValue { value: Some(value) }
    }
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigValue, E> {
                i64::try_from(v)
                    .map(ConfigValue::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Double(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Bool(v))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

/// Where insert/update/upsert take their value from.
#[derive(Clone, Debug)]
pub enum ValueSource {
    Value(AnyValue),
    Attribute(String),
}

/// A validated action.
#[derive(Clone, Debug)]
pub enum Action {
    Insert(String, ValueSource),
    Update(String, ValueSource),
    Upsert(String, ValueSource),
    Delete(Option<String>, Option<Regex>),
    Hash(Option<String>, Option<Regex>),
    /// Source key, pattern, names of its groups (index 0 unused).
    Extract(String, Regex, Vec<String>),
}

impl AttributesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.include.is_some() || self.exclude.is_some() {
            return Err("include/exclude matching is not supported yet".into());
        }
        self.compile().map(|_| ())
    }

    /// The actions in order, checked as the collector checks them.
    pub fn compile(&self) -> Result<Vec<Action>, String> {
        if self.actions.is_empty() {
            return Err("missing required field \"actions\"".into());
        }
        self.actions
            .iter()
            .enumerate()
            .map(|(i, a)| a.compile(i))
            .collect()
    }
}

impl ActionConfig {
    fn compile(&self, i: usize) -> Result<Action, String> {
        let action = self.action.to_lowercase();
        if !self.from_context.is_empty() {
            return Err(format!(
                "from_context is not supported yet (the {i}-th action)"
            ));
        }
        if !self.converted_type.is_empty() || action == "convert" {
            return Err(format!(
                "the convert action is not supported yet (the {i}-th action)"
            ));
        }
        match action.as_str() {
            "delete" | "hash" => {
                if self.key.is_empty() && self.pattern.is_empty() {
                    return Err(format!(
                        "missing required field (at least one of \"key\" and \"pattern\" have to be used) at the {i}-th actions"
                    ));
                }
            }
            _ => {
                if self.key.is_empty() {
                    return Err(format!(
                        "missing required field \"key\" at the {i}-th actions"
                    ));
                }
            }
        }
        let sources =
            usize::from(self.value.is_some()) + usize::from(!self.from_attribute.is_empty());
        let regex = |pattern: &str| {
            Regex::new(pattern).map_err(|_| {
                format!("Field \"pattern\" has invalid pattern: \"{pattern}\" to be set at the {i}-th actions")
            })
        };
        match action.as_str() {
            "insert" | "update" | "upsert" => {
                if sources == 0 {
                    return Err(format!(
                        "Either field \"value\", \"from_attribute\" or \"from_context\" setting must be specified for {i}-th action"
                    ));
                }
                if sources > 1 {
                    return Err(format!(
                        "multiple value sources being set at the {i}-th actions"
                    ));
                }
                if !self.pattern.is_empty() {
                    return Err(format!(
                        "Action \"{action}\" does not use the \"pattern\" field. This must not be specified for {i}-th action"
                    ));
                }
                let source = match &self.value {
                    Some(v) => ValueSource::Value(v.to_any()),
                    None => ValueSource::Attribute(self.from_attribute.clone()),
                };
                let key = self.key.clone();
                Ok(match action.as_str() {
                    "insert" => Action::Insert(key, source),
                    "update" => Action::Update(key, source),
                    _ => Action::Upsert(key, source),
                })
            }
            "delete" | "hash" => {
                if sources > 0 {
                    return Err(format!(
                        "Action \"{action}\" does not use \"value\" or \"from_attribute\" field. These must not be specified for {i}-th action"
                    ));
                }
                let key = (!self.key.is_empty()).then(|| self.key.clone());
                let pattern = if self.pattern.is_empty() {
                    None
                } else {
                    Some(regex(&self.pattern)?)
                };
                Ok(if action == "delete" {
                    Action::Delete(key, pattern)
                } else {
                    Action::Hash(key, pattern)
                })
            }
            "extract" => {
                if sources > 0 {
                    return Err(format!(
                        "Action \"{action}\" does not use a value source field. These must not be specified for {i}-th action"
                    ));
                }
                if self.pattern.is_empty() {
                    return Err(format!(
                        "missing required field \"pattern\" for action \"{action}\" at the {i}-th action"
                    ));
                }
                let re = regex(&self.pattern)?;
                let names: Vec<String> = re
                    .capture_names()
                    .map(|n| n.unwrap_or_default().to_string())
                    .collect();
                if names.len() <= 1 {
                    return Err(format!(
                        "Field \"pattern\" contains no named matcher groups at the {i}-th actions"
                    ));
                }
                if names[1..].iter().any(String::is_empty) {
                    return Err(format!(
                        "Field \"pattern\" contains at least one unnamed matcher group at the {i}-th actions"
                    ));
                }
                Ok(Action::Extract(self.key.clone(), re, names))
            }
            other => Err(format!(
                "unsupported action \"{other}\" at the {i}-th actions"
            )),
        }
    }
}
