//! protobuf → OTLP/JSON: walks the wire format guided by the schema and writes compact JSON
//! text directly, the way the collector's JSON marshaller (protojson) renders it: default
//! values and empty lists left out, 64-bit integers as decimal strings, trace and span ids as
//! lowercase hex, other bytes as base64, enums as numbers, and doubles in their shortest
//! round-trip form with NaN and infinities as "NaN", "Infinity" and "-Infinity".

use std::borrow::Cow;

use crate::otlp::wire::{self, WireError, WireValue};

use super::schema::{Card, Field, Kind, Message, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT};

/// Deeper nesting than any real payload needs; it bounds recursion on hostile input.
const MAX_DEPTH: usize = 128;

pub fn render(msg: &'static Message, buf: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(buf.len() * 2 + 2);
    let mut entries = Vec::with_capacity(64);
    render_message(&mut out, &mut entries, msg, buf, 0, 0).map_err(|e| e.to_string())?;
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(
        "malformed protobuf: field {number} of {message} has wire type {found} where {expected} is required, at byte {at}"
    )]
    WireType {
        message: &'static str,
        number: u32,
        expected: u8,
        found: u8,
        at: usize,
    },
    #[error("malformed protobuf: truncated packed field {number} of {message} at byte {at}")]
    Packed {
        message: &'static str,
        number: u32,
        at: usize,
    },
    #[error("malformed protobuf: messages nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// One known field occurrence of the message being rendered.
#[derive(Clone, Copy)]
struct Entry<'a> {
    field: usize,
    value: WireValue<'a>,
    /// Where the value's payload starts in the outermost buffer, for error offsets.
    at: usize,
}

/// Renders one message. `entries` is scratch space shared down the recursion: each message
/// appends its fields, renders them, and truncates back. `base` is where `buf` sits in the
/// outermost buffer.
fn render_message<'a>(
    out: &mut String,
    entries: &mut Vec<Entry<'a>>,
    msg: &'static Message,
    buf: &'a [u8],
    base: usize,
    depth: usize,
) -> Result<(), RenderError> {
    if depth > MAX_DEPTH {
        return Err(RenderError::TooDeep);
    }
    let first = entries.len();
    let mut sorted = true;
    let mut last_field = 0;
    // Protobuf keeps the last member of a oneof that appears.
    let mut oneof_winner = None;
    for item in wire::FieldIter::with_offset(buf, base) {
        let item = item?;
        let Some(index) = msg.by_number(u64::from(item.number)) else {
            continue;
        };
        let field = &msg.fields[index];
        let found = item.wire_type();
        let expected = field.kind.wire_type();
        if found != expected && !(field.packed() && found == WIRE_LEN) {
            return Err(RenderError::WireType {
                message: msg.name,
                number: item.number,
                expected,
                found,
                at: item.start,
            });
        }
        if field.oneof {
            oneof_winner = Some(index);
        }
        sorted &= index >= last_field;
        last_field = index;
        let at = match item.value {
            WireValue::Len(payload) => item.end - payload.len(),
            _ => item.start,
        };
        entries.push(Entry {
            field: index,
            value: item.value,
            at,
        });
    }
    let end = entries.len();
    if !sorted {
        // Stable, so repeated values keep their order.
        entries[first..end].sort_by_key(|e| e.field);
    }

    out.push('{');
    let mut comma = false;
    let mut i = first;
    while i < end {
        let index = entries[i].field;
        let mut j = i + 1;
        while j < end && entries[j].field == index {
            j += 1;
        }
        let field = &msg.fields[index];
        if !field.oneof || oneof_winner == Some(index) {
            render_field(out, entries, msg, field, i..j, &mut comma, depth)?;
        }
        i = j;
    }
    out.push('}');
    entries.truncate(first);
    Ok(())
}

fn key(out: &mut String, comma: &mut bool, name: &str) {
    if *comma {
        out.push(',');
    }
    *comma = true;
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

/// Renders the occurrences `range` of `entries` (all of `field`).
fn render_field<'a>(
    out: &mut String,
    entries: &mut Vec<Entry<'a>>,
    msg: &'static Message,
    field: &'static Field,
    range: std::ops::Range<usize>,
    comma: &mut bool,
    depth: usize,
) -> Result<(), RenderError> {
    if field.card == Card::Repeated {
        let mark = out.len();
        let had_comma = *comma;
        key(out, comma, field.json);
        out.push('[');
        let mut count = 0usize;
        for i in range {
            let entry = entries[i];
            match (field.kind, entry.value) {
                (Kind::Message(child), WireValue::Len(payload)) => {
                    if count > 0 {
                        out.push(',');
                    }
                    render_message(out, entries, child, payload, entry.at, depth + 1)?;
                    count += 1;
                }
                (kind, WireValue::Len(payload)) if kind.packable() => {
                    count += render_packed(out, msg, field, payload, entry.at, count)?;
                }
                (kind, value) => {
                    if count > 0 {
                        out.push(',');
                    }
                    scalar(out, kind, value);
                    count += 1;
                }
            }
        }
        if count == 0 {
            out.truncate(mark);
            *comma = had_comma;
        } else {
            out.push(']');
        }
        return Ok(());
    }

    match field.kind {
        Kind::Message(child) => {
            let entry = entries[range.start];
            let WireValue::Len(payload) = entry.value else {
                unreachable!("wire types are checked on collection");
            };
            key(out, comma, field.json);
            if range.len() == 1 {
                render_message(out, entries, child, payload, entry.at, depth + 1)
            } else {
                // A message field that occurs more than once is the merge of its occurrences,
                // which is what parsing their concatenation gives.
                let mut merged = Vec::new();
                for e in &entries[range] {
                    if let WireValue::Len(p) = e.value {
                        merged.extend_from_slice(p);
                    }
                }
                render_message(out, &mut Vec::new(), child, &merged, entry.at, depth + 1)
            }
        }
        kind => {
            // The last occurrence of a scalar wins.
            let value = entries[range.end - 1].value;
            if field.card == Card::Singular && is_default(kind, value) {
                return Ok(());
            }
            key(out, comma, field.json);
            scalar(out, kind, value);
            Ok(())
        }
    }
}

/// Renders the values of a packed field, returning how many there were.
fn render_packed(
    out: &mut String,
    msg: &'static Message,
    field: &'static Field,
    mut payload: &[u8],
    at: usize,
    mut count: usize,
) -> Result<usize, RenderError> {
    let before = count;
    let truncated = || RenderError::Packed {
        message: msg.name,
        number: field.number,
        at,
    };
    while !payload.is_empty() {
        let value = match field.kind.wire_type() {
            WIRE_VARINT => {
                let (v, n) = wire::decode_varint(payload).map_err(|_| truncated())?;
                payload = &payload[n..];
                WireValue::Varint(v)
            }
            WIRE_I64 => {
                let (b, rest) = payload.split_first_chunk::<8>().ok_or_else(truncated)?;
                payload = rest;
                WireValue::Fixed64(u64::from_le_bytes(*b))
            }
            WIRE_I32 => {
                let (b, rest) = payload.split_first_chunk::<4>().ok_or_else(truncated)?;
                payload = rest;
                WireValue::Fixed32(u32::from_le_bytes(*b))
            }
            _ => unreachable!("only numeric kinds are packed"),
        };
        if count > 0 {
            out.push(',');
        }
        scalar(out, field.kind, value);
        count += 1;
    }
    Ok(count - before)
}

fn is_default(kind: Kind, value: WireValue<'_>) -> bool {
    match value {
        WireValue::Len(p) => p.is_empty(),
        WireValue::Fixed64(v) => v == 0,
        WireValue::Fixed32(v) => v == 0,
        WireValue::Varint(v) => match kind {
            // 32-bit kinds read only the low 32 bits of the varint.
            Kind::Int32 | Kind::Uint32 | Kind::Sint32 | Kind::Enum(_) => v as u32 == 0,
            _ => v == 0,
        },
    }
}

/// Renders a non-message value; the wire type has been checked against the kind.
fn scalar(out: &mut String, kind: Kind, value: WireValue<'_>) {
    match (kind, value) {
        (Kind::String, WireValue::Len(p)) => {
            // JSON text cannot hold invalid UTF-8; such bytes become U+FFFD, as in the
            // collector's marshaller.
            let text = match std::str::from_utf8(p) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(p),
            };
            push_string(out, &text);
        }
        (Kind::Bytes, WireValue::Len(p)) => push_base64(out, p),
        (Kind::TraceId | Kind::SpanId, WireValue::Len(p)) => push_hex(out, p),
        (Kind::Bool, WireValue::Varint(v)) => out.push_str(if v != 0 { "true" } else { "false" }),
        (Kind::Int32 | Kind::Enum(_), WireValue::Varint(v)) => push_i64(out, i64::from(v as i32)),
        (Kind::Uint32, WireValue::Varint(v)) => push_u64(out, u64::from(v as u32)),
        (Kind::Sint32, WireValue::Varint(v)) => {
            let v = v as u32;
            push_i64(out, i64::from(((v >> 1) as i32) ^ -((v & 1) as i32)));
        }
        (Kind::Int64, WireValue::Varint(v)) => quoted(out, |out| push_i64(out, v as i64)),
        (Kind::Uint64, WireValue::Varint(v)) => quoted(out, |out| push_u64(out, v)),
        (Kind::Fixed64, WireValue::Fixed64(v)) => quoted(out, |out| push_u64(out, v)),
        (Kind::Sfixed64, WireValue::Fixed64(v)) => quoted(out, |out| push_i64(out, v as i64)),
        (Kind::Fixed32, WireValue::Fixed32(v)) => push_u64(out, u64::from(v)),
        (Kind::Double, WireValue::Fixed64(v)) => push_f64(out, f64::from_bits(v)),
        _ => unreachable!("wire types are checked on collection"),
    }
}

fn quoted(out: &mut String, f: impl FnOnce(&mut String)) {
    out.push('"');
    f(out);
    out.push('"');
}

pub(super) fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend(buf[at..].iter().map(|&b| char::from(b)));
}

fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// The shortest decimal that parses back to `v`, in the ECMAScript layout protojson uses:
/// plain digits for magnitudes in [1e-6, 1e21), exponent form otherwise.
pub(super) fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
        return;
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    if v == 0.0 {
        out.push('0');
        return;
    }
    // `{:e}` gives the shortest round-trip digits as "d.ddde±x".
    let mut buf = StackStr::<32>::new();
    std::fmt::Write::write_fmt(&mut buf, format_args!("{:e}", v.abs())).expect("fits");
    let text = buf.as_str();
    let (mantissa, exp) = text.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (lead, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_len = 1 + frac.len() as i32;
    if (-6..21).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(lead);
            out.push_str(frac);
        } else if digits_len <= exp + 1 {
            out.push_str(lead);
            out.push_str(frac);
            for _ in 0..(exp + 1 - digits_len) {
                out.push('0');
            }
        } else {
            let split = exp as usize;
            out.push_str(lead);
            out.push_str(&frac[..split]);
            out.push('.');
            out.push_str(&frac[split..]);
        }
    } else {
        out.push_str(lead);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        out.push('e');
        if exp > 0 {
            out.push('+');
        }
        push_i64(out, i64::from(exp));
    }
}

/// A fixed-size `fmt::Write` target, so formatting a float does not allocate.
struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    fn new() -> Self {
        StackStr {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("only ASCII is written")
    }
}

impl<const N: usize> std::fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

pub(super) fn push_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Only ASCII bytes are escaped, so `start..i` lies on character boundaries.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 2);
    out.push('"');
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out.push('"');
}

fn push_base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| char::from(ALPHABET[(v & 63) as usize]);
    out.reserve(bytes.len().div_ceil(3) * 4 + 2);
    out.push('"');
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let v = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend([sym(v >> 18), sym(v >> 12), sym(v >> 6), sym(v)]);
    }
    match *chunks.remainder() {
        [a] => {
            let v = u32::from(a) << 16;
            out.extend([sym(v >> 18), sym(v >> 12), '=', '=']);
        }
        [a, b] => {
            let v = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend([sym(v >> 18), sym(v >> 12), sym(v >> 6), '=']);
        }
        _ => {}
    }
    out.push('"');
}
