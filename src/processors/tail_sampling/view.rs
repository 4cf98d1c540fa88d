//! Reading what policies need from encoded spans and resources — times, status, flags,
//! tracestate, attributes — without decoding them into message structs.

use crate::otlp::wire::{self, WireError, WireValue};

// Span fields (opentelemetry/proto/trace/v1/trace.proto).
const SPAN_TRACE_ID: u32 = 1;
const SPAN_TRACE_STATE: u32 = 3;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_START_TIME: u32 = 7;
const SPAN_END_TIME: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_STATUS: u32 = 15;
const SPAN_FLAGS: u32 = 16;
const STATUS_CODE: u32 = 3;
// ResourceSpans.resource, Resource.attributes, KeyValue.{key,value}.
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_ATTRIBUTES: u32 = 1;
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
// AnyValue oneof.
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;

/// What ingestion needs from a span: its trace id and whether it is a root.
pub fn span_key(raw: &[u8]) -> Result<(&[u8], bool), WireError> {
    let mut trace_id: &[u8] = &[];
    let mut parent: &[u8] = &[];
    for f in wire::fields(raw) {
        let f = f?;
        match f.number {
            SPAN_TRACE_ID => trace_id = f.expect_len()?,
            SPAN_PARENT_SPAN_ID => parent = f.expect_len()?,
            _ => {}
        }
    }
    Ok((trace_id, parent.is_empty()))
}

/// The span fields the non-attribute policies read. Absent fields read as protobuf defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanFacts<'a> {
    pub raw: &'a [u8],
    pub start: u64,
    pub end: u64,
    pub status_code: i32,
    pub flags: u32,
    pub trace_state: &'a [u8],
}

impl<'a> SpanFacts<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Self, WireError> {
        let mut s = SpanFacts {
            raw,
            ..SpanFacts::default()
        };
        for f in wire::fields(raw) {
            let f = f?;
            match (f.number, f.value) {
                (SPAN_TRACE_STATE, WireValue::Len(v)) => s.trace_state = v,
                (SPAN_START_TIME, WireValue::Fixed64(v)) => s.start = v,
                (SPAN_END_TIME, WireValue::Fixed64(v)) => s.end = v,
                (SPAN_FLAGS, WireValue::Fixed32(v)) => s.flags = v,
                (SPAN_STATUS, WireValue::Len(status)) => {
                    for g in wire::fields(status) {
                        let g = g?;
                        if g.number == STATUS_CODE {
                            // Enums are int32 on the wire, sign-extended to 64 bits.
                            s.status_code = g.expect_varint()? as i32;
                        }
                    }
                }
                (
                    SPAN_TRACE_STATE | SPAN_START_TIME | SPAN_END_TIME | SPAN_FLAGS | SPAN_STATUS,
                    _,
                ) => {
                    return Err(WireError::UnexpectedWireType {
                        field: f.number,
                        expected: match f.number {
                            SPAN_START_TIME | SPAN_END_TIME => wire::WIRE_FIXED64,
                            SPAN_FLAGS => wire::WIRE_FIXED32,
                            _ => wire::WIRE_LEN,
                        },
                        found: f.wire_type(),
                        at: f.start,
                    });
                }
                _ => {}
            }
        }
        Ok(s)
    }

    /// The span's attribute `key`, if present (the first one, as pdata's `Get`).
    pub fn attribute(&self, key: &str) -> Result<Option<AnyValue<'a>>, WireError> {
        find_attribute(self.raw, SPAN_ATTRIBUTES, key)
    }
}

/// The `Resource` message inside an encoded resource envelope (`ResourceSpans` minus scopes).
pub fn resource_of(envelope: &[u8]) -> Result<&[u8], WireError> {
    let mut resource: &[u8] = &[];
    for f in wire::fields(envelope) {
        let f = f?;
        if f.number == RESOURCE_SPANS_RESOURCE {
            resource = f.expect_len()?;
        }
    }
    Ok(resource)
}

/// The resource's attribute `key`, if present.
pub fn resource_attribute<'a>(
    resource: &'a [u8],
    key: &str,
) -> Result<Option<AnyValue<'a>>, WireError> {
    find_attribute(resource, RESOURCE_ATTRIBUTES, key)
}

/// An attribute value, as far as the policies look at it. pdata's accessors read another
/// type's value as the zero value (`Str()` of an int is ""), and so do ours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnyValue<'a> {
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Arrays, maps, bytes, or no value.
    Other,
}

impl<'a> AnyValue<'a> {
    pub fn str(&self) -> &'a [u8] {
        match self {
            AnyValue::Str(s) => s,
            _ => &[],
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            AnyValue::Int(i) => *i,
            _ => 0,
        }
    }

    pub fn bool(&self) -> bool {
        matches!(self, AnyValue::Bool(true))
    }

    fn parse(raw: &'a [u8]) -> Result<Self, WireError> {
        // A oneof: the last member on the wire wins.
        let mut v = AnyValue::Other;
        for f in wire::fields(raw) {
            let f = f?;
            v = match (f.number, f.value) {
                (ANY_STRING, WireValue::Len(s)) => AnyValue::Str(s),
                (ANY_BOOL, WireValue::Varint(b)) => AnyValue::Bool(b != 0),
                (ANY_INT, WireValue::Varint(i)) => AnyValue::Int(i as i64),
                (ANY_DOUBLE, WireValue::Fixed64(d)) => AnyValue::Double(f64::from_bits(d)),
                (1..=7, _) => AnyValue::Other,
                _ => v,
            };
        }
        Ok(v)
    }
}

fn find_attribute<'a>(
    msg: &'a [u8],
    field: u32,
    key: &str,
) -> Result<Option<AnyValue<'a>>, WireError> {
    for f in wire::fields(msg) {
        let f = f?;
        if f.number != field {
            continue;
        }
        let kv = f.expect_len()?;
        let mut k: &[u8] = &[];
        let mut value: &[u8] = &[];
        for g in wire::fields(kv) {
            let g = g?;
            match g.number {
                KV_KEY => k = g.expect_len()?,
                KV_VALUE => value = g.expect_len()?,
                _ => {}
            }
        }
        if k == key.as_bytes() {
            return AnyValue::parse(value).map(Some);
        }
    }
    Ok(None)
}

/// The value of `key` in a W3C `tracestate`, parsed as OpenTelemetry Go's `ParseTraceState`
/// does: `None` when the key is absent or the header is invalid in any member.
pub fn tracestate_get<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    const MAX_MEMBERS: usize = 32;
    let mut found = None;
    let mut keys: Vec<&str> = Vec::new();
    for member in header.split(',') {
        if member.is_empty() {
            continue;
        }
        let (k, v) = member.split_once('=')?;
        let k = k.trim_start_matches([' ', '\t']);
        let v = v.trim_end_matches([' ', '\t']);
        if !tracestate_key_ok(k) || !tracestate_value_ok(v) || keys.contains(&k) {
            return None;
        }
        keys.push(k);
        if keys.len() > MAX_MEMBERS {
            return None;
        }
        if k == key {
            found = Some(v);
        }
    }
    found
}

fn key_rest_ok(rest: &[u8]) -> bool {
    rest.iter().all(|&c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
    })
}

fn key_part_ok(part: &[u8], max_rest: usize) -> bool {
    match part.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase() && rest.len() <= max_rest && key_rest_ok(rest)
        }
        None => false,
    }
}

fn tracestate_key_ok(key: &str) -> bool {
    match key.split_once('@') {
        None => key_part_ok(key.as_bytes(), 255),
        Some((tenant, system)) => {
            let tenant_ok = match tenant.as_bytes().split_first() {
                Some((first, rest)) => {
                    (first.is_ascii_lowercase() || first.is_ascii_digit())
                        && rest.len() <= 240
                        && key_rest_ok(rest)
                }
                None => false,
            };
            tenant_ok && key_part_ok(system.as_bytes(), 13)
        }
    }
}

fn tracestate_value_ok(value: &str) -> bool {
    let v = value.as_bytes();
    let Some((last, init)) = v.split_last() else {
        return false;
    };
    v.len() <= 256
        && init
            .iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && (0x21..=0x7e).contains(last)
        && *last != b','
        && *last != b'='
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracestate_values_are_found_only_in_valid_headers() {
        assert_eq!(tracestate_get("example=value", "example"), Some("value"));
        assert_eq!(
            tracestate_get("example=value,non_matching=value", "example"),
            Some("value")
        );
        assert_eq!(tracestate_get(" a=1 , example=v2\t", "example"), Some("v2"));
        assert_eq!(tracestate_get("non_matching=value", "example"), None);
        assert_eq!(tracestate_get("example=value,bad", "example"), None);
        assert_eq!(tracestate_get("example=a,example=b", "example"), None);
        assert_eq!(tracestate_get("Example=value", "Example"), None);
        assert_eq!(tracestate_get("t@sys=1", "t@sys"), Some("1"));
        assert_eq!(tracestate_get("example=", "example"), None);
        assert_eq!(tracestate_get("", "example"), None);
    }
}
