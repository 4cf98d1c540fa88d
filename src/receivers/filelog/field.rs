//! The collector's stanza field syntax (`body`, `body.a.b`, `attributes.x`,
//! `attributes["a.b"]`, `resource.x`) and reading, writing and deleting such a field on an
//! OTLP `LogRecord`, with stanza's semantics: setting a map merges it into the target,
//! intermediate keys that are not maps are replaced by maps. Nothing here panics.

use std::fmt;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    Body,
    Attributes,
    Resource,
}

/// A parsed field: its root and the keys below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub root: Root,
    pub keys: Vec<String>,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.root {
            Root::Body => "body",
            Root::Attributes => "attributes",
            Root::Resource => "resource",
        };
        f.write_str(prefix)?;
        if self.keys.iter().any(|k| k.contains('.')) {
            for k in &self.keys {
                write!(f, "['{k}']")?;
            }
        } else {
            for k in &self.keys {
                write!(f, ".{k}")?;
            }
        }
        Ok(())
    }
}

impl Field {
    pub fn body() -> Field {
        Field {
            root: Root::Body,
            keys: Vec::new(),
        }
    }

    pub fn body_key(key: &str) -> Field {
        Field {
            root: Root::Body,
            keys: vec![key.to_string()],
        }
    }

    pub fn attributes() -> Field {
        Field {
            root: Root::Attributes,
            keys: Vec::new(),
        }
    }

    /// Parses a field as the collector does (`fromJSONDot`). `rootable`: `attributes` and
    /// `resource` alone are allowed (as for `parse_to`).
    pub fn parse(s: &str, rootable: bool) -> Result<Field, String> {
        let keys = split(s).map_err(|e| format!("field `{s}`: {e}"))?;
        let (first, rest) = keys
            .split_first()
            .ok_or_else(|| format!("field `{s}`: fields size is 0"))?;
        let root = match first.as_str() {
            "body" => Root::Body,
            "attributes" => Root::Attributes,
            "resource" => Root::Resource,
            _ => {
                return Err(format!(
                    "field `{s}`: unrecognized prefix (a field starts with `body`, `attributes` or `resource`)"
                ));
            }
        };
        if !rootable && rest.is_empty() && root != Root::Body {
            return Err(format!(
                "field `{s}`: {first} cannot be referenced without subfield"
            ));
        }
        Ok(Field {
            root,
            keys: rest.to_vec(),
        })
    }
}

/// The collector's `fromJSONDot`: dots separate keys, `['a.b']` or `["a.b"]` quote one.
fn split(s: &str) -> Result<Vec<String>, &'static str> {
    #[derive(PartialEq)]
    enum State {
        Begin,
        InBracket,
        InQuote,
        OutQuote,
        OutBracket,
        InToken,
    }
    let mut fields = Vec::new();
    let mut state = State::Begin;
    let mut quote = '"';
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match state {
            State::Begin => {
                if c == '[' {
                    state = State::InBracket;
                    continue;
                }
                start = i;
                state = State::InToken;
            }
            State::InBracket => {
                if c != '\'' && c != '"' {
                    return Err("strings in brackets must be surrounded by quotes");
                }
                state = State::InQuote;
                quote = c;
                start = i + c.len_utf8();
            }
            State::InQuote => {
                if c == quote {
                    fields.push(s[start..i].to_string());
                    state = State::OutQuote;
                }
            }
            State::OutQuote => {
                if c != ']' {
                    return Err("found characters between closed quote and closing bracket");
                }
                state = State::OutBracket;
            }
            State::OutBracket => match c {
                '.' => {
                    state = State::InToken;
                    start = i + 1;
                }
                '[' => state = State::InBracket,
                _ => {
                    return Err(
                        "bracketed access must be followed by a dot or another bracketed access",
                    );
                }
            },
            State::InToken => {
                if c == '.' {
                    fields.push(s[start..i].to_string());
                    start = i + 1;
                } else if c == '[' {
                    fields.push(s[start..i].to_string());
                    state = State::InBracket;
                }
            }
        }
    }
    match state {
        State::InBracket | State::OutQuote => return Err("found unclosed left bracket"),
        State::InQuote if quote == '"' => return Err("found unclosed double quote"),
        State::InQuote => return Err("found unclosed single quote"),
        State::InToken => fields.push(s[start..].to_string()),
        _ => {}
    }
    if fields.is_empty() {
        return Err("fields size is 0");
    }
    Ok(fields)
}

pub fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s)),
    }
}

pub fn map_get<'a>(map: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    map.iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_ref().unwrap_or(&EMPTY))
}

static EMPTY: AnyValue = AnyValue { value: None };

/// Sets `key`, replacing its value where it is.
pub fn map_insert(map: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    if let Some(kv) = map.iter_mut().find(|kv| kv.key == key) {
        kv.value = Some(value);
    } else {
        map.push(KeyValue {
            key: key.to_string(),
            value: Some(value),
            ..Default::default()
        });
    }
}

fn map_remove(map: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let i = map.iter().position(|kv| kv.key == key)?;
    Some(map.remove(i).value.unwrap_or_default())
}

/// stanza's `getNestedMap`: the map under `key`, made one if missing or not a map.
fn nested_map<'a>(map: &'a mut Vec<KeyValue>, key: &str) -> &'a mut Vec<KeyValue> {
    let i = match map.iter().position(|kv| kv.key == key) {
        Some(i) => i,
        None => {
            map.push(KeyValue {
                key: key.to_string(),
                value: None,
                ..Default::default()
            });
            map.len() - 1
        }
    };
    let slot = map[i].value.get_or_insert_with(AnyValue::default);
    if !is_map(slot) {
        slot.value = Some(Value::KvlistValue(KeyValueList::default()));
    }
    match &mut slot.value {
        Some(Value::KvlistValue(list)) => &mut list.values,
        _ => unreachable!("the slot was made a map just above"),
    }
}

fn as_map(v: &AnyValue) -> Option<&Vec<KeyValue>> {
    match &v.value {
        Some(Value::KvlistValue(l)) => Some(&l.values),
        _ => None,
    }
}

fn as_map_mut(v: &mut AnyValue) -> Option<&mut Vec<KeyValue>> {
    match &mut v.value {
        Some(Value::KvlistValue(l)) => Some(&mut l.values),
        _ => None,
    }
}

fn lookup<'a>(map: &'a [KeyValue], keys: &[String]) -> Option<&'a AnyValue> {
    let (first, rest) = keys.split_first()?;
    let mut cur = map_get(map, first)?;
    for k in rest {
        cur = map_get(as_map(cur)?, k)?;
    }
    Some(cur)
}

/// The value at `field`, if the record (or its resource) has it.
pub fn get<'a>(rec: &'a LogRecord, res: &'a [KeyValue], field: &Field) -> Option<&'a AnyValue> {
    match field.root {
        Root::Body => {
            let body = rec.body.as_ref()?;
            if field.keys.is_empty() {
                return Some(body);
            }
            lookup(as_map(body)?, &field.keys)
        }
        Root::Attributes => lookup(&rec.attributes, &field.keys),
        Root::Resource => lookup(res, &field.keys),
    }
}

fn is_map(v: &AnyValue) -> bool {
    matches!(v.value, Some(Value::KvlistValue(_)))
}

/// Sets `field` to `value` as stanza does: a map is merged into the field's map.
pub fn set(
    rec: &mut LogRecord,
    res: &mut Vec<KeyValue>,
    field: &Field,
    value: AnyValue,
) -> Result<(), String> {
    match field.root {
        Root::Body => {
            if !is_map(&value) && field.keys.is_empty() {
                rec.body = Some(value);
                return Ok(());
            }
            let body = rec.body.get_or_insert_with(AnyValue::default);
            if !is_map(body) {
                *body = AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList::default())),
                };
            }
            match as_map_mut(body) {
                Some(map) => set_in(map, &field.keys, value),
                None => Err("body is not a map".into()),
            }
        }
        Root::Attributes => {
            if field.keys.is_empty() && !is_map(&value) {
                return Err("cannot set attributes root".into());
            }
            set_in(&mut rec.attributes, &field.keys, value)
        }
        Root::Resource => {
            if field.keys.is_empty() && !is_map(&value) {
                return Err("cannot set resource root".into());
            }
            set_in(res, &field.keys, value)
        }
    }
}

fn set_in(map: &mut Vec<KeyValue>, keys: &[String], value: AnyValue) -> Result<(), String> {
    if let Some(Value::KvlistValue(list)) = value.value {
        let mut target = map;
        for k in keys {
            target = nested_map(target, k);
        }
        target.reserve(list.values.len());
        for kv in list.values {
            match target.iter_mut().find(|t| t.key == kv.key) {
                Some(t) => t.value = kv.value,
                None => target.push(kv),
            }
        }
        return Ok(());
    }
    let Some((last, parents)) = keys.split_last() else {
        return Err("cannot set a map root to a value that is not a map".into());
    };
    let mut target = map;
    for k in parents {
        target = nested_map(target, k);
    }
    map_insert(target, last, value);
    Ok(())
}

/// Removes `field` and returns what it held.
pub fn delete(rec: &mut LogRecord, res: &mut Vec<KeyValue>, field: &Field) -> Option<AnyValue> {
    match field.root {
        Root::Body => {
            if field.keys.is_empty() {
                return rec.body.take();
            }
            let map = as_map_mut(rec.body.as_mut()?)?;
            delete_in(map, &field.keys)
        }
        Root::Attributes => {
            if field.keys.is_empty() {
                let all = std::mem::take(&mut rec.attributes);
                return Some(AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList { values: all })),
                });
            }
            delete_in(&mut rec.attributes, &field.keys)
        }
        Root::Resource => {
            if field.keys.is_empty() {
                let all = std::mem::take(res);
                return Some(AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList { values: all })),
                });
            }
            delete_in(res, &field.keys)
        }
    }
}

fn delete_in(map: &mut Vec<KeyValue>, keys: &[String]) -> Option<AnyValue> {
    let (last, parents) = keys.split_last()?;
    let mut target = map;
    for k in parents {
        let i = target.iter().position(|kv| &kv.key == k)?;
        target = as_map_mut(target[i].value.as_mut()?)?;
    }
    map_remove(target, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_parse_as_the_collector_splits_them() {
        let f = Field::parse("attributes.a.b", false).unwrap();
        assert_eq!(
            (f.root, f.keys.clone()),
            (Root::Attributes, vec!["a".into(), "b".into()])
        );
        let f = Field::parse(r#"attributes["a.b"]"#, false).unwrap();
        assert_eq!(f.keys, vec!["a.b".to_string()]);
        let f = Field::parse("body['x.y'].z", false).unwrap();
        assert_eq!(f.keys, vec!["x.y".to_string(), "z".to_string()]);
        assert_eq!(Field::parse("body", false).unwrap(), Field::body());
        assert_eq!(
            Field::parse("attributes", true).unwrap(),
            Field::attributes()
        );
        assert!(Field::parse("attributes", false).is_err());
        assert!(Field::parse("resource", false).is_err());
        assert!(Field::parse("trace_id", false).is_err());
        assert!(Field::parse("attributes[a]", false).is_err());
        assert!(Field::parse("attributes['a'", false).is_err());
        assert!(Field::parse("attributes['a']x", false).is_err());
        assert!(Field::parse("", false).is_err());
        assert_eq!(
            Field::parse(r#"attributes["a.b"]"#, false)
                .unwrap()
                .to_string(),
            "attributes['a.b']"
        );
    }

    #[test]
    fn set_merges_maps_and_replaces_non_maps() {
        let mut rec = LogRecord::default();
        let mut res = Vec::new();
        let f = Field::parse("attributes.a.b", false).unwrap();
        set(&mut rec, &mut res, &f, string_value("x".into())).unwrap();
        assert_eq!(get(&rec, &res, &f), Some(&string_value("x".into())));
        // A value where a map is needed is replaced.
        let g = Field::parse("attributes.a.b.c", false).unwrap();
        set(&mut rec, &mut res, &g, string_value("y".into())).unwrap();
        assert_eq!(get(&rec, &res, &g), Some(&string_value("y".into())));
        assert_eq!(
            delete(&mut rec, &mut res, &g),
            Some(string_value("y".into()))
        );
        assert_eq!(get(&rec, &res, &g), None);
        assert!(
            set(
                &mut rec,
                &mut res,
                &Field::attributes(),
                string_value("z".into())
            )
            .is_err()
        );
        let r = Field::parse("resource['service.name']", false).unwrap();
        set(&mut rec, &mut res, &r, string_value("svc".into())).unwrap();
        assert_eq!(res.len(), 1);
        assert_eq!(get(&rec, &res, &r), Some(&string_value("svc".into())));
    }

    proptest! {
        #[test]
        fn parsing_any_field_never_panics(s in "\\PC{0,40}") {
            let _ = Field::parse(&s, true);
            let _ = Field::parse(&s, false);
        }

        #[test]
        fn dotted_keys_round_trip(keys in proptest::collection::vec("[a-z_]{1,8}", 1..4)) {
            let text = format!("attributes.{}", keys.join("."));
            let f = Field::parse(&text, false).unwrap();
            prop_assert_eq!(&f.keys, &keys);
            prop_assert_eq!(f.to_string(), text);
        }

        #[test]
        fn bracketed_keys_round_trip(keys in proptest::collection::vec("[a-z.]{1,8}", 1..4)) {
            let text: String = std::iter::once("body".to_string())
                .chain(keys.iter().map(|k| format!("['{k}']")))
                .collect();
            let f = Field::parse(&text, false).unwrap();
            prop_assert_eq!(&f.keys, &keys);
        }

        #[test]
        fn set_then_get_returns_the_value(keys in proptest::collection::vec("[a-z]{1,4}", 1..4), v in "\\PC{0,10}") {
            let mut rec = LogRecord::default();
            let mut res = Vec::new();
            let f = Field { root: Root::Attributes, keys };
            set(&mut rec, &mut res, &f, string_value(v.clone())).unwrap();
            prop_assert_eq!(get(&rec, &res, &f), Some(&string_value(v)));
        }
    }
}
