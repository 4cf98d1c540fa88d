//! OTLP/JSON → protobuf: serde_json drives a schema-guided visitor that writes the wire format
//! straight into the output buffer, without building a JSON tree or message structs.

use std::fmt::{self, Write as _};

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::schema::{Card, Field, Kind, Message, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT};
use crate::otlp::wire::varint_len;

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes `body` as the protobuf form of `msg`.
pub fn encode(msg: &'static Message, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc = Encoder {
        out: Vec::with_capacity(body.len() / 2 + 16),
        path: Vec::with_capacity(16),
        error: None,
        written: Vec::with_capacity(64),
        scratch: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = (&mut de)
        .deserialize_any(MessageVisitor {
            enc: &mut enc,
            msg,
            head: None,
        })
        .and_then(|()| de.end());
    match result {
        Ok(()) => Ok(enc.out),
        Err(e) => Err(match enc.error.take() {
            Some(message) => message,
            None => enc.located(format_args!("invalid JSON: {e}")),
        }),
    }
}

#[derive(Clone, Copy)]
enum Segment {
    Field(&'static str),
    Index(usize),
}

struct Encoder {
    out: Vec<u8>,
    /// Where the walk is; left in place when an error unwinds, so it locates the error.
    path: Vec<Segment>,
    /// The first error, with its path (serde's own error type cannot carry it cleanly).
    error: Option<String>,
    /// The encoded fields of the messages being written, innermost last: each message
    /// appends its own and truncates them when done.
    written: Vec<Written>,
    /// Room to put a message's fields in order.
    scratch: Vec<u8>,
}

/// Where one JSON key's value was encoded: `out[start..end]`, for schema field `index`.
#[derive(Clone, Copy)]
struct Written {
    index: usize,
    start: usize,
    end: usize,
}

impl Encoder {
    fn located(&self, message: fmt::Arguments<'_>) -> String {
        let mut text = String::new();
        for segment in &self.path {
            match segment {
                Segment::Field(name) => {
                    if !text.is_empty() {
                        text.push('.');
                    }
                    text.push_str(name);
                }
                Segment::Index(i) => {
                    let _ = write!(text, "[{i}]");
                }
            }
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        let _ = text.write_fmt(message);
        text
    }

    fn fail<E: de::Error>(&mut self, message: fmt::Arguments<'_>) -> E {
        let text = self.located(message);
        let error = E::custom(&text);
        self.error.get_or_insert(text);
        error
    }

    /// Puts the fields of the message whose body starts at `body_start` in schema order
    /// (prost's encoding order), keeping repeated occurrences in the order they came, so the
    /// bytes do not depend on the order of the JSON keys.
    fn reorder(&mut self, body_start: usize, first_written: usize) {
        let written = &mut self.written[first_written..];
        written.sort_by_key(|w| w.index);
        self.scratch.clear();
        for w in written.iter() {
            self.scratch.extend_from_slice(&self.out[w.start..w.end]);
        }
        self.out[body_start..].copy_from_slice(&self.scratch);
    }

    #[inline]
    fn tag(&mut self, number: u32, wire_type: u8) {
        put_varint(
            &mut self.out,
            (u64::from(number) << 3) | u64::from(wire_type),
        );
    }

    /// Reserves one byte for the length of what follows; [`Encoder::end_len`] fills it in,
    /// moving the content if the length needs a longer varint.
    #[inline]
    fn begin_len(&mut self) -> usize {
        self.out.push(0);
        self.out.len()
    }

    #[inline]
    fn end_len(&mut self, start: usize) {
        let len = self.out.len() - start;
        if len < 0x80 {
            self.out[start - 1] = len as u8;
            return;
        }
        let extra = varint_len(len as u64) - 1;
        let end = self.out.len();
        self.out.resize(end + extra, 0);
        self.out.copy_within(start..end, start + extra);
        let mut at = start - 1;
        let mut v = len;
        while v >= 0x80 {
            self.out[at] = (v as u8) | 0x80;
            v >>= 7;
            at += 1;
        }
        self.out[at] = v as u8;
    }
}

/// A message as a JSON object. `head` is the field number to tag it with, or `None` for the
/// top-level message.
struct MessageVisitor<'a> {
    enc: &'a mut Encoder,
    msg: &'static Message,
    head: Option<u32>,
}

impl<'de> Visitor<'de> for MessageVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let enc = self.enc;
        let start = match self.head {
            Some(number) => {
                enc.tag(number, WIRE_LEN);
                Some(enc.begin_len())
            }
            None => None,
        };
        let body_start = enc.out.len();
        let first_written = enc.written.len();
        let mut in_order = true;
        let mut oneof_set: Option<&'static str> = None;
        while let Some(key) = map.next_key_seed(KeySeed(self.msg))? {
            let Some(index) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let field = &self.msg.fields[index];
            enc.path.push(Segment::Field(field.json));
            let before = enc.out.len();
            map.next_value_seed(ValueSeed {
                enc: &mut *enc,
                field,
                element: false,
            })?;
            if enc.out.len() != before {
                if field.oneof {
                    if let Some(other) = oneof_set {
                        return Err(enc.fail(format_args!(
                            "{other} is already set; only one of them may be given"
                        )));
                    }
                    oneof_set = Some(field.json);
                }
                if let Some(last) = enc.written[first_written..].last() {
                    in_order &= last.index <= index;
                }
                enc.written.push(Written {
                    index,
                    start: before,
                    end: enc.out.len(),
                });
            }
            enc.path.pop();
        }
        if !in_order {
            enc.reorder(body_start, first_written);
        }
        enc.written.truncate(first_written);
        if let Some(start) = start {
            enc.end_len(start);
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_an_object(Found::Null))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        Err(self.not_an_object(Found::Bool(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        Err(self.not_an_object(Found::U64(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        Err(self.not_an_object(Found::I64(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        Err(self.not_an_object(Found::F64(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        Err(self.not_an_object(Found::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        Err(self.not_an_object(Found::Array))
    }
}

impl MessageVisitor<'_> {
    /// Only the top-level value comes here as something other than an object.
    fn not_an_object<E: de::Error>(self, found: Found<'_>) -> E {
        self.enc
            .fail(format_args!("expected a JSON object, found {found}"))
    }
}

/// Resolves an object key to a field index (`None`: unknown, to be skipped).
struct KeySeed(&'static Message);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.by_name(v))
    }
}

/// The value of one field, or one element of a repeated field (`element`).
struct ValueSeed<'a> {
    enc: &'a mut Encoder,
    field: &'static Field,
    element: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A JSON value, described for error messages.
enum Found<'s> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'s str),
    Array,
    Object,
}

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Null => f.write_str("null"),
            Found::Bool(v) => write!(f, "{v}"),
            Found::U64(v) => write!(f, "{v}"),
            Found::I64(v) => write!(f, "{v}"),
            Found::F64(v) => write!(f, "{v}"),
            Found::Str(s) => write!(f, "{}", Quoted(s)),
            Found::Array => f.write_str("an array"),
            Found::Object => f.write_str("an object"),
        }
    }
}

/// A string as JSON shows it, shortened if long.
struct Quoted<'s>(&'s str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        match self.0.char_indices().nth(MAX) {
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

fn expected(field: &Field, element: bool) -> &'static str {
    if field.repeated() && !element {
        return "an array";
    }
    match field.kind {
        Kind::Message(_) => "an object",
        Kind::String => "a string",
        Kind::Bytes => "a base64 string",
        Kind::TraceId => "a trace id of 32 hex digits",
        Kind::SpanId => "a span id of 16 hex digits",
        Kind::Bool => "true or false",
        Kind::Int64 | Kind::Sfixed64 => "an integer",
        Kind::Int32 | Kind::Sint32 => "a 32-bit integer",
        Kind::Uint64 | Kind::Fixed64 => "a non-negative integer",
        Kind::Uint32 | Kind::Fixed32 => "a non-negative 32-bit integer",
        Kind::Double => "a number, \"NaN\", \"Infinity\" or \"-Infinity\"",
        Kind::Enum(_) => "an enum number or name",
    }
}

/// A JSON number, or a string that stands for one.
#[derive(Clone, Copy)]
enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Number {
    fn parse_int(s: &str) -> Option<Number> {
        if let Ok(v) = s.parse::<u64>() {
            Some(Number::U64(v))
        } else {
            s.parse::<i64>().ok().map(Number::I64)
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self {
            Number::U64(v) => i64::try_from(v).ok(),
            Number::I64(v) => Some(v),
            // Integral values written as floats (1e3, 5.0) are accepted, as protojson does.
            Number::F64(v)
                if v.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v) =>
            {
                Some(v as i64)
            }
            Number::F64(_) => None,
        }
    }

    fn as_u64(self) -> Option<u64> {
        match self {
            Number::U64(v) => Some(v),
            Number::I64(v) => u64::try_from(v).ok(),
            Number::F64(v)
                if v.fract() == 0.0 && (0.0..1.844_674_407_370_955_2e19).contains(&v) =>
            {
                Some(v as u64)
            }
            Number::F64(_) => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::U64(v) => v as f64,
            Number::I64(v) => v as f64,
            Number::F64(v) => v,
        }
    }
}

/// A value in its wire form.
enum Scalar {
    Varint(u64),
    I64(u64),
    I32(u32),
}

impl<'a> ValueSeed<'a> {
    fn mismatch<E: de::Error>(self, found: Found<'_>) -> E {
        let expected = expected(self.field, self.element);
        self.enc
            .fail(format_args!("expected {expected}, found {found}"))
    }

    /// True when the value has to be an array (a repeated field outside its array).
    fn wants_array(&self) -> bool {
        self.field.repeated() && !self.element
    }

    /// Writes the tag unless the value is an element of a packed array.
    #[inline]
    fn head(&mut self, wire_type: u8) {
        if !(self.element && self.field.packed()) {
            self.enc.tag(self.field.number, wire_type);
        }
    }

    /// Implicit-presence fields leave their default value out, as protobuf encoders do.
    #[inline]
    fn skips(&self, is_default: bool) -> bool {
        is_default && self.field.card == Card::Singular
    }

    fn put_scalar(mut self, value: Scalar) {
        let (wire_type, is_default) = match value {
            Scalar::Varint(v) => (WIRE_VARINT, v == 0),
            Scalar::I64(v) => (WIRE_I64, v == 0),
            Scalar::I32(v) => (WIRE_I32, v == 0),
        };
        if self.skips(is_default) {
            return;
        }
        self.head(wire_type);
        let out = &mut self.enc.out;
        match value {
            Scalar::Varint(v) => put_varint(out, v),
            Scalar::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }

    fn number<E: de::Error>(self, n: Number, found: Found<'_>) -> Result<(), E> {
        if self.wants_array() {
            return Err(self.mismatch(found));
        }
        let scalar = match self.field.kind {
            Kind::Int64 => n.as_i64().map(|v| Scalar::Varint(v as u64)),
            Kind::Sfixed64 => n.as_i64().map(|v| Scalar::I64(v as u64)),
            Kind::Int32 | Kind::Enum(_) => n
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                // Negative int32 values are sign-extended to ten bytes on the wire.
                .map(|v| Scalar::Varint(i64::from(v) as u64)),
            Kind::Sint32 => n
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .map(|v| Scalar::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32))),
            Kind::Uint64 => n.as_u64().map(Scalar::Varint),
            Kind::Fixed64 => n.as_u64().map(Scalar::I64),
            Kind::Uint32 => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(|v| Scalar::Varint(u64::from(v))),
            Kind::Fixed32 => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Scalar::I32),
            Kind::Double => Some(Scalar::I64(n.as_f64().to_bits())),
            Kind::Message(_)
            | Kind::String
            | Kind::Bytes
            | Kind::TraceId
            | Kind::SpanId
            | Kind::Bool => None,
        };
        match scalar {
            Some(scalar) => {
                self.put_scalar(scalar);
                Ok(())
            }
            None => Err(self.mismatch(found)),
        }
    }

    fn put_len_bytes(mut self, bytes: &[u8]) {
        if self.skips(bytes.is_empty()) {
            return;
        }
        self.head(WIRE_LEN);
        put_varint(&mut self.enc.out, bytes.len() as u64);
        self.enc.out.extend_from_slice(bytes);
    }

    fn string<E: de::Error>(mut self, s: &str) -> Result<(), E> {
        if self.wants_array() {
            return Err(self.mismatch(Found::Str(s)));
        }
        match self.field.kind {
            Kind::String => {
                self.put_len_bytes(s.as_bytes());
                Ok(())
            }
            Kind::TraceId | Kind::SpanId => {
                let want = if matches!(self.field.kind, Kind::TraceId) {
                    32
                } else {
                    16
                };
                // An empty id is an absent one; anything else must be a whole id, as the
                // collector requires.
                if s.is_empty() {
                    return Ok(());
                }
                if s.len() != want || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(self.mismatch(Found::Str(s)));
                }
                self.head(WIRE_LEN);
                let out = &mut self.enc.out;
                out.push((want / 2) as u8);
                out.extend(
                    s.as_bytes()
                        .chunks_exact(2)
                        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1])),
                );
                Ok(())
            }
            Kind::Bytes => {
                let Some(len) = base64_decoded_len(s.as_bytes()) else {
                    return Err(self.mismatch(Found::Str(s)));
                };
                if self.skips(len == 0) {
                    return Ok(());
                }
                self.head(WIRE_LEN);
                put_varint(&mut self.enc.out, len as u64);
                if !base64_decode(s.as_bytes(), &mut self.enc.out) {
                    return Err(self.mismatch(Found::Str(s)));
                }
                Ok(())
            }
            Kind::Double => match parse_double(s) {
                Some(v) => {
                    self.put_scalar(Scalar::I64(v.to_bits()));
                    Ok(())
                }
                None => Err(self.mismatch(Found::Str(s))),
            },
            Kind::Enum(names) => {
                if let Some(&(_, v)) = names.iter().find(|(name, _)| *name == s) {
                    self.put_scalar(Scalar::Varint(i64::from(v) as u64));
                    return Ok(());
                }
                match Number::parse_int(s) {
                    Some(n) => self.number(n, Found::Str(s)),
                    None => Err(self.mismatch(Found::Str(s))),
                }
            }
            Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Sint32
            | Kind::Uint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed64 => match Number::parse_int(s) {
                Some(n) => self.number(n, Found::Str(s)),
                None => Err(self.mismatch(Found::Str(s))),
            },
            Kind::Message(_) | Kind::Bool => Err(self.mismatch(Found::Str(s))),
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(expected(self.field, self.element))
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        if !self.element {
            // null stands for an absent field.
            return Ok(());
        }
        match self.field.kind {
            // The collector reads a null array element as an empty message.
            Kind::Message(_) => {
                self.head(WIRE_LEN);
                self.enc.out.push(0);
                Ok(())
            }
            _ => Err(self.mismatch(Found::Null)),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.wants_array() || !matches!(self.field.kind, Kind::Bool) {
            return Err(self.mismatch(Found::Bool(v)));
        }
        self.put_scalar(Scalar::Varint(u64::from(v)));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(Number::U64(v), Found::U64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(Number::I64(v), Found::I64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(Number::F64(v), Found::F64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.string(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.wants_array() {
            return Err(self.mismatch(Found::Array));
        }
        let enc = self.enc;
        let field = self.field;
        let packed = field.packed().then(|| {
            let tag_at = enc.out.len();
            enc.tag(field.number, WIRE_LEN);
            (tag_at, enc.begin_len())
        });
        let mut index = 0;
        loop {
            enc.path.push(Segment::Index(index));
            let next = seq.next_element_seed(ValueSeed {
                enc: &mut *enc,
                field,
                element: true,
            })?;
            enc.path.pop();
            if next.is_none() {
                break;
            }
            index += 1;
        }
        if let Some((tag_at, start)) = packed {
            if enc.out.len() == start {
                enc.out.truncate(tag_at);
            } else {
                enc.end_len(start);
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        match self.field.kind {
            Kind::Message(msg) if !self.wants_array() => MessageVisitor {
                enc: self.enc,
                msg,
                head: Some(self.field.number),
            }
            .visit_map(map),
            _ => Err(self.mismatch(Found::Object)),
        }
    }
}

/// A double from a JSON string: the protobuf JSON mapping's special values, or a number.
fn parse_double(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => {
            // Only JSON number syntax; Rust's parser also takes "inf", "+1", ...
            let digits = s.strip_prefix('-').unwrap_or(s);
            let json_like = digits.as_bytes().first().is_some_and(u8::is_ascii_digit)
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
            if json_like { s.parse().ok() } else { None }
        }
    }
}

#[inline]
fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

fn base64_value(b: u8) -> Option<u8> {
    Some(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        // The standard alphabet and the URL-safe one.
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    })
}

fn base64_unpadded(s: &[u8]) -> &[u8] {
    match s {
        [rest @ .., b'=', b'='] if s.len().is_multiple_of(4) => rest,
        [rest @ .., b'='] if s.len().is_multiple_of(4) => rest,
        _ => s,
    }
}

/// The decoded length of base64 text (padding optional), or `None` if the length is impossible.
fn base64_decoded_len(s: &[u8]) -> Option<usize> {
    let s = base64_unpadded(s);
    let tail = match s.len() % 4 {
        0 => 0,
        1 => return None,
        2 => 1,
        _ => 2,
    };
    Some(s.len() / 4 * 3 + tail)
}

fn base64_decode(s: &[u8], out: &mut Vec<u8>) -> bool {
    let s = base64_unpadded(s);
    let mut chunks = s.chunks(4);
    for chunk in &mut chunks {
        let mut acc = 0u32;
        for &b in chunk {
            let Some(v) = base64_value(b) else {
                return false;
            };
            acc = (acc << 6) | u32::from(v);
        }
        match chunk.len() {
            4 => out.extend_from_slice(&acc.to_be_bytes()[1..]),
            3 => out.extend_from_slice(&(acc << 6).to_be_bytes()[1..3]),
            2 => out.push((acc >> 4) as u8),
            _ => return false,
        }
    }
    true
}
