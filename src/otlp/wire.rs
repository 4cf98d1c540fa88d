//! Just enough of the protobuf wire format to count, split and merge OTLP export requests while
//! they stay encoded, so the hot path never pays for decoding into message structs.

use std::iter::FusedIterator;
use std::ops::Range;

use bytes::Bytes;

use super::Signal;

pub const WIRE_VARINT: u8 = 0;
pub const WIRE_FIXED64: u8 = 1;
pub const WIRE_LEN: u8 = 2;
pub const WIRE_FIXED32: u8 = 5;

const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

// Traces, metrics and logs share these numbers: request → resource entries (1) → scope entries
// (2) → items (2). Metrics go two levels further, through the metric kind to its data points.
const REQUEST_RESOURCES: u32 = 1;
const CHILDREN: u32 = 2;
const METRIC_KINDS: [u32; 5] = [
    5,  // gauge
    7,  // sum
    9,  // histogram
    10, // exponential_histogram
    11, // summary
];
const KIND_DATA_POINTS: u32 = 1;

const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_START_TIME: u32 = 7;
const SPAN_END_TIME: u32 = 8;
const SPAN_STATUS: u32 = 15;
const STATUS_CODE: u32 = 3;

/// Why a buffer is not a well-formed protobuf message. Offsets are counted from the start of the
/// buffer handed to the public function, also for errors found in nested messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed protobuf: truncated field at byte {at}")]
    Truncated { at: usize },
    #[error("malformed protobuf: varint longer than 10 bytes or above 64 bits at byte {at}")]
    BadVarint { at: usize },
    #[error("malformed protobuf: unsupported wire type {wire_type} at byte {at}")]
    BadWireType { wire_type: u8, at: usize },
    #[error("malformed protobuf: invalid field number {number} at byte {at}")]
    BadField { number: u64, at: usize },
    #[error(
        "malformed protobuf: field {field} has wire type {found} where {expected} is required, at byte {at}"
    )]
    UnexpectedWireType {
        field: u32,
        expected: u8,
        found: u8,
        at: usize,
    },
}

enum VarintError {
    Truncated,
    Overflow,
}

/// Returns the value and the position just past it.
#[inline(always)]
fn read_varint(buf: &[u8], pos: usize) -> Result<(u64, usize), VarintError> {
    // Tags and most lengths take one byte.
    match buf.get(pos) {
        Some(&byte) if byte < 0x80 => Ok((u64::from(byte), pos + 1)),
        _ => read_varint_long(buf, pos),
    }
}

fn read_varint_long(buf: &[u8], pos: usize) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&byte) = buf.get(pos + i) else {
            return Err(VarintError::Truncated);
        };
        // The tenth byte only has room for bit 63.
        if i == 9 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((value, pos + i + 1));
        }
    }
    Err(VarintError::Overflow)
}

/// Decodes a varint at the start of `buf`, returning the value and the number of bytes it took.
pub fn decode_varint(buf: &[u8]) -> Result<(u64, usize), WireError> {
    match read_varint(buf, 0) {
        Ok(decoded) => Ok(decoded),
        Err(VarintError::Truncated) => Err(WireError::Truncated { at: 0 }),
        Err(VarintError::Overflow) => Err(WireError::BadVarint { at: 0 }),
    }
}

pub fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(field: u32, wire_type: u8) -> u64 {
    (u64::from(field) << 3) | u64::from(wire_type)
}

/// Size of a length-delimited field carrying `payload_len` bytes, header included.
pub fn len_field_len(field: u32, payload_len: usize) -> usize {
    varint_len(tag(field, WIRE_LEN)) + varint_len(payload_len as u64) + payload_len
}

pub fn write_len_field(field: u32, payload: &[u8], out: &mut Vec<u8>) {
    write_len_header(field, payload.len(), out);
    out.extend_from_slice(payload);
}

pub fn write_len_header(field: u32, payload_len: usize, out: &mut Vec<u8>) {
    encode_varint(tag(field, WIRE_LEN), out);
    encode_varint(payload_len as u64, out);
}

pub fn write_fixed64(field: u32, value: u64, out: &mut Vec<u8>) {
    encode_varint(tag(field, WIRE_FIXED64), out);
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn write_varint_field(field: u32, value: u64, out: &mut Vec<u8>) {
    encode_varint(tag(field, WIRE_VARINT), out);
    encode_varint(value, out);
}

/// Size of a varint field, tag included.
pub fn varint_field_len(field: u32, value: u64) -> usize {
    varint_len(tag(field, WIRE_VARINT)) + varint_len(value)
}

/// Size of a fixed64 field, tag included.
pub fn fixed64_field_len(field: u32) -> usize {
    varint_len(tag(field, WIRE_FIXED64)) + 8
}

/// A `KeyValue` with a string value, written as field `field` of the enclosing message.
pub fn write_str_attr(field: u32, key: &str, value: &str, out: &mut Vec<u8>) {
    // KeyValue { key = 1, value = 2 }, AnyValue { string_value = 1 }.
    let any_value = len_field_len(1, value.len());
    let kv = len_field_len(1, key.len()) + len_field_len(2, any_value);
    write_len_header(field, kv, out);
    write_len_field(1, key.as_bytes(), out);
    write_len_header(2, any_value, out);
    write_len_field(1, value.as_bytes(), out);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl WireValue<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => WIRE_VARINT,
            WireValue::Fixed64(_) => WIRE_FIXED64,
            WireValue::Len(_) => WIRE_LEN,
            WireValue::Fixed32(_) => WIRE_FIXED32,
        }
    }
}

/// One field of a message. `start..end` covers the whole field, tag included, and is measured
/// from the start of the outermost buffer so nested fields can be sliced out of it directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: WireValue<'a>,
    pub start: usize,
    pub end: usize,
}

impl<'a> Field<'a> {
    pub fn wire_type(&self) -> u8 {
        self.value.wire_type()
    }

    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    fn unexpected(&self, expected: u8) -> WireError {
        WireError::UnexpectedWireType {
            field: self.number,
            expected,
            found: self.wire_type(),
            at: self.start,
        }
    }

    pub fn expect_len(&self) -> Result<&'a [u8], WireError> {
        match self.value {
            WireValue::Len(payload) => Ok(payload),
            _ => Err(self.unexpected(WIRE_LEN)),
        }
    }

    pub fn expect_varint(&self) -> Result<u64, WireError> {
        match self.value {
            WireValue::Varint(v) => Ok(v),
            _ => Err(self.unexpected(WIRE_VARINT)),
        }
    }

    pub fn expect_fixed64(&self) -> Result<u64, WireError> {
        match self.value {
            WireValue::Fixed64(v) => Ok(v),
            _ => Err(self.unexpected(WIRE_FIXED64)),
        }
    }

    /// Iterates the fields of the embedded message this length-delimited field carries.
    pub fn nested(&self) -> Result<FieldIter<'a>, WireError> {
        let payload = self.expect_len()?;
        Ok(FieldIter::with_offset(
            payload,
            self.end.saturating_sub(payload.len()),
        ))
    }
}

/// Iterates the fields of one message; yields at most one error, then stops.
#[derive(Clone, Debug)]
pub struct FieldIter<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

pub fn fields(buf: &[u8]) -> FieldIter<'_> {
    FieldIter::new(buf)
}

impl<'a> FieldIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_offset(buf, 0)
    }

    /// `base` is where `buf` sits inside the outermost buffer, so reported offsets are absolute.
    pub fn with_offset(buf: &'a [u8], base: usize) -> Self {
        FieldIter { buf, pos: 0, base }
    }

    fn fail(&mut self, err: WireError) -> Option<Result<Field<'a>, WireError>> {
        self.pos = self.buf.len();
        Some(Err(err))
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        if start >= self.buf.len() {
            return None;
        }
        let at = self.base.saturating_add(start);
        let varint_err = |err, pos: usize| match err {
            VarintError::Truncated => WireError::Truncated { at },
            VarintError::Overflow => WireError::BadVarint {
                at: self.base.saturating_add(pos),
            },
        };
        let (tag, pos) = match read_varint(self.buf, start) {
            Ok(v) => v,
            Err(e) => return self.fail(varint_err(e, start)),
        };
        let number = tag >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return self.fail(WireError::BadField { number, at });
        }
        let wire_type = (tag & 7) as u8;
        let rest = self.buf.get(pos..).unwrap_or_default();
        let (value, end) = match wire_type {
            WIRE_VARINT => match read_varint(self.buf, pos) {
                Ok((v, end)) => (WireValue::Varint(v), end),
                Err(e) => return self.fail(varint_err(e, pos)),
            },
            WIRE_FIXED64 => match rest.first_chunk::<8>() {
                Some(b) => (WireValue::Fixed64(u64::from_le_bytes(*b)), pos + 8),
                None => return self.fail(WireError::Truncated { at }),
            },
            WIRE_FIXED32 => match rest.first_chunk::<4>() {
                Some(b) => (WireValue::Fixed32(u32::from_le_bytes(*b)), pos + 4),
                None => return self.fail(WireError::Truncated { at }),
            },
            WIRE_LEN => {
                let (len, data_start) = match read_varint(self.buf, pos) {
                    Ok(v) => v,
                    Err(e) => return self.fail(varint_err(e, pos)),
                };
                let payload = usize::try_from(len)
                    .ok()
                    .and_then(|len| self.buf.get(data_start..).and_then(|data| data.get(..len)));
                match payload {
                    Some(p) => (WireValue::Len(p), data_start + p.len()),
                    None => return self.fail(WireError::Truncated { at }),
                }
            }
            _ => return self.fail(WireError::BadWireType { wire_type, at }),
        };
        self.pos = end;
        Some(Ok(Field {
            // Fits: checked against MAX_FIELD_NUMBER above.
            number: number as u32,
            value,
            start: at,
            end: self.base.saturating_add(end),
        }))
    }
}

impl FusedIterator for FieldIter<'_> {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Resource,
    Scope,
    Metric,
}

impl Level {
    /// `None` when the children at field `CHILDREN` are the items themselves.
    fn child(self, signal: Signal) -> Option<Level> {
        match (self, signal) {
            (Level::Resource, _) => Some(Level::Scope),
            (Level::Scope, Signal::Metrics) => Some(Level::Metric),
            _ => None,
        }
    }
}

fn is_metric_kind(number: u32) -> bool {
    METRIC_KINDS.contains(&number)
}

/// Counts the items of a request: spans, log records or metric data points.
///
/// Every message between the request and the items must be well-formed; the items themselves
/// are not parsed, since validating every span would cost more than the count is worth.
pub fn count_items(signal: Signal, buf: &[u8]) -> Result<usize, WireError> {
    let mut total = 0;
    for field in fields(buf) {
        let field = field?;
        if field.number == REQUEST_RESOURCES {
            total += count_level(signal, Level::Resource, &field)?;
        }
    }
    Ok(total)
}

fn count_level(signal: Signal, level: Level, field: &Field<'_>) -> Result<usize, WireError> {
    let body = field.nested()?;
    if level == Level::Metric {
        return count_metric(body);
    }
    let child = level.child(signal);
    let mut n = 0;
    for f in body {
        let f = f?;
        if f.number == CHILDREN {
            n += match child {
                Some(level) => count_level(signal, level, &f)?,
                None => {
                    f.expect_len()?;
                    1
                }
            };
        }
    }
    Ok(n)
}

// `data` is a oneof: a decoder merges repeated occurrences of the same kind but lets a different
// kind replace what came before, so only the last run of one kind holds live data points.
fn count_metric(body: FieldIter<'_>) -> Result<usize, WireError> {
    let mut kind = 0;
    let mut n = 0;
    for f in body {
        let f = f?;
        if is_metric_kind(f.number) {
            let points = count_data_points(&f)?;
            if f.number == kind {
                n += points;
            } else {
                kind = f.number;
                n = points;
            }
        }
    }
    Ok(n)
}

fn count_data_points(kind: &Field<'_>) -> Result<usize, WireError> {
    let mut n = 0;
    for f in kind.nested()? {
        let f = f?;
        if f.number == KIND_DATA_POINTS {
            f.expect_len()?;
            n += 1;
        }
    }
    Ok(n)
}

/// Splits a request into requests of the same type holding at most `max_items` items each, in
/// order, with each piece's item count. `max_items == 0` means no limit.
///
/// Runs of whole resource entries are zero-copy slices of `buf`. Only an entry with more than
/// `max_items` items is cut open: its envelope (every field but its children) is repeated in
/// each piece it spreads over, down to the metric and its kind for metric data points.
pub fn split(
    signal: Signal,
    buf: &Bytes,
    max_items: usize,
) -> Result<Vec<(Bytes, usize)>, WireError> {
    let total = count_items(signal, buf)?;
    if max_items == 0 || total <= max_items {
        return Ok(vec![(buf.clone(), total)]);
    }
    let mut splitter = Splitter {
        signal,
        src: buf,
        max: max_items,
        stack: Vec::new(),
        top: Vec::new(),
        items: 0,
        pieces: Vec::with_capacity(total.div_ceil(max_items)),
    };
    for field in fields(buf) {
        let field = field?;
        if field.number == REQUEST_RESOURCES {
            splitter.handle(Level::Resource, &field)?;
        }
    }
    Ok(splitter.finish())
}

/// A message being re-emitted around a subset of its children.
#[derive(Debug)]
struct Frame {
    field: u32,
    envelope: Vec<Range<usize>>,
    parts: Vec<Node>,
}

/// Ranges index the source buffer, which outlives every node.
#[derive(Debug)]
enum Node {
    Src(Range<usize>),
    Msg(Frame),
}

fn push_range(ranges: &mut Vec<Range<usize>>, range: Range<usize>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

fn push_src(parts: &mut Vec<Node>, range: Range<usize>) {
    match parts.last_mut() {
        Some(Node::Src(last)) if last.end == range.start => last.end = range.end,
        _ => parts.push(Node::Src(range)),
    }
}

impl Frame {
    fn content_len(&self) -> usize {
        let envelope: usize = self.envelope.iter().map(ExactSizeIterator::len).sum();
        envelope + self.parts.iter().map(Node::encoded_len).sum::<usize>()
    }
}

impl Node {
    fn encoded_len(&self) -> usize {
        match self {
            Node::Src(r) => r.len(),
            Node::Msg(frame) => len_field_len(frame.field, frame.content_len()),
        }
    }

    fn write(&self, src: &[u8], out: &mut Vec<u8>) {
        match self {
            Node::Src(r) => out.extend_from_slice(src.get(r.clone()).unwrap_or_default()),
            Node::Msg(frame) => {
                write_len_header(frame.field, frame.content_len(), out);
                for r in &frame.envelope {
                    out.extend_from_slice(src.get(r.clone()).unwrap_or_default());
                }
                for part in &frame.parts {
                    part.write(src, out);
                }
            }
        }
    }
}

struct Splitter<'a> {
    signal: Signal,
    src: &'a Bytes,
    max: usize,
    /// Messages cut open on the way from the request down to the current item.
    stack: Vec<Frame>,
    /// Top-level content of the piece being filled.
    top: Vec<Node>,
    items: usize,
    pieces: Vec<(Bytes, usize)>,
}

impl Splitter<'_> {
    fn handle(&mut self, level: Level, field: &Field<'_>) -> Result<(), WireError> {
        let n = count_level(self.signal, level, field)?;
        if n <= self.max {
            self.push_whole(field.range(), n);
            return Ok(());
        }
        let body = field.nested()?;
        if level == Level::Metric {
            return self.split_metric(field.number, body);
        }
        let mut envelope = Vec::new();
        for f in body.clone() {
            let f = f?;
            if f.number != CHILDREN {
                push_range(&mut envelope, f.range());
            }
        }
        self.open(field.number, envelope);
        let child = level.child(self.signal);
        for f in body {
            let f = f?;
            if f.number == CHILDREN {
                match child {
                    Some(level) => self.handle(level, &f)?,
                    None => self.push_whole(f.range(), 1),
                }
            }
        }
        self.close();
        Ok(())
    }

    fn split_metric(&mut self, field: u32, body: FieldIter<'_>) -> Result<(), WireError> {
        let mut kind = 0;
        let mut live_from = 0;
        for f in body.clone() {
            let f = f?;
            if is_metric_kind(f.number) && f.number != kind {
                kind = f.number;
                live_from = f.start;
            }
        }
        let mut envelope = Vec::new();
        let mut kind_envelope = Vec::new();
        let mut points = Vec::new();
        for f in body {
            let f = f?;
            if !is_metric_kind(f.number) {
                push_range(&mut envelope, f.range());
            } else if f.number == kind && f.start >= live_from {
                // Settings such as temporality from every live occurrence go in each piece,
                // so each piece decodes to the same merged values as the original.
                for g in f.nested()? {
                    let g = g?;
                    if g.number == KIND_DATA_POINTS {
                        g.expect_len()?;
                        points.push(g.range());
                    } else {
                        push_range(&mut kind_envelope, g.range());
                    }
                }
            }
        }
        self.open(field, envelope);
        self.open(kind, kind_envelope);
        for point in points {
            self.push_whole(point, 1);
        }
        self.close();
        self.close();
        Ok(())
    }

    fn innermost(&mut self) -> &mut Vec<Node> {
        match self.stack.last_mut() {
            Some(frame) => &mut frame.parts,
            None => &mut self.top,
        }
    }

    /// The caller guarantees `n <= max`, so a flushed piece always has room for it.
    fn push_whole(&mut self, range: Range<usize>, n: usize) {
        if self.items > 0 && self.items + n > self.max {
            self.flush();
        }
        self.items += n;
        push_src(self.innermost(), range);
    }

    fn open(&mut self, field: u32, envelope: Vec<Range<usize>>) {
        self.stack.push(Frame {
            field,
            envelope,
            parts: Vec::new(),
        });
    }

    // An envelope without children would decode as an extra empty resource, scope or metric.
    fn close(&mut self) {
        match self.stack.pop() {
            Some(frame) if !frame.parts.is_empty() => self.innermost().push(Node::Msg(frame)),
            _ => {}
        }
    }

    fn flush(&mut self) {
        let reopen: Vec<(u32, Vec<Range<usize>>)> = self
            .stack
            .iter()
            .map(|frame| (frame.field, frame.envelope.clone()))
            .collect();
        while !self.stack.is_empty() {
            self.close();
        }
        let top = std::mem::take(&mut self.top);
        self.pieces.push((self.encode(&top), self.items));
        self.items = 0;
        for (field, envelope) in reopen {
            self.open(field, envelope);
        }
    }

    fn encode(&self, top: &[Node]) -> Bytes {
        match top {
            [Node::Src(r)] if r.end <= self.src.len() => return self.src.slice(r.clone()),
            _ => {}
        }
        let len = top.iter().map(Node::encoded_len).sum();
        let mut out = Vec::with_capacity(len);
        for node in top {
            node.write(self.src, &mut out);
        }
        Bytes::from(out)
    }

    fn finish(mut self) -> Vec<(Bytes, usize)> {
        while !self.stack.is_empty() {
            self.close();
        }
        if !self.top.is_empty() {
            let top = std::mem::take(&mut self.top);
            self.pieces.push((self.encode(&top), self.items));
        }
        self.pieces
    }
}

/// Concatenated requests of one type decode as a single request holding all their entries.
pub fn concat(parts: &[Bytes]) -> Bytes {
    if let [only] = parts {
        return only.clone();
    }
    let mut out = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    Bytes::from(out)
}

/// The fields of a span that routing and sampling look at, borrowed from the encoded request.
/// Absent fields read as empty or zero, as protobuf defaults them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanRef<'a> {
    raw: &'a [u8],
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent_span_id: &'a [u8],
    name: &'a [u8],
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    status_code: i32,
}

impl<'a> SpanRef<'a> {
    fn parse(raw: &'a [u8], base: usize) -> Result<Self, WireError> {
        let mut span = SpanRef {
            raw,
            ..SpanRef::default()
        };
        for f in FieldIter::with_offset(raw, base) {
            let f = f?;
            match f.number {
                SPAN_TRACE_ID => span.trace_id = f.expect_len()?,
                SPAN_SPAN_ID => span.span_id = f.expect_len()?,
                SPAN_PARENT_SPAN_ID => span.parent_span_id = f.expect_len()?,
                SPAN_NAME => span.name = f.expect_len()?,
                SPAN_START_TIME => span.start_time_unix_nano = f.expect_fixed64()?,
                SPAN_END_TIME => span.end_time_unix_nano = f.expect_fixed64()?,
                SPAN_STATUS => {
                    for g in f.nested()? {
                        let g = g?;
                        if g.number == STATUS_CODE {
                            // Enums are int32 on the wire, sign-extended to 64 bits.
                            span.status_code = g.expect_varint()? as i32;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(span)
    }

    /// The encoded `Span` message, without its tag and length.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn trace_id(&self) -> &'a [u8] {
        self.trace_id
    }

    pub fn span_id(&self) -> &'a [u8] {
        self.span_id
    }

    pub fn parent_span_id(&self) -> &'a [u8] {
        self.parent_span_id
    }

    /// UTF-8 if the sender obeyed the spec; see [`SpanRef::name_str`].
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    pub fn name_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.name).ok()
    }

    pub fn start_time_unix_nano(&self) -> u64 {
        self.start_time_unix_nano
    }

    pub fn end_time_unix_nano(&self) -> u64 {
        self.end_time_unix_nano
    }

    /// `Status.code`: 0 unset, 1 ok, 2 error.
    pub fn status_code(&self) -> i32 {
        self.status_code
    }
}

/// Calls `f` for every span of an encoded `ExportTraceServiceRequest`, in order. Spans before a
/// malformed part of the request have already been visited when the error is returned.
pub fn for_each_span(buf: &[u8], mut f: impl FnMut(SpanRef<'_>)) -> Result<(), WireError> {
    for resource in fields(buf) {
        let resource = resource?;
        if resource.number != REQUEST_RESOURCES {
            continue;
        }
        for scope in resource.nested()? {
            let scope = scope?;
            if scope.number != CHILDREN {
                continue;
            }
            for span in scope.nested()? {
                let span = span?;
                if span.number == CHILDREN {
                    let raw = span.expect_len()?;
                    f(SpanRef::parse(raw, span.end.saturating_sub(raw.len()))?);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        metric::Data, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use prost::Message;

    fn kv(key: &str, value: String) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value)),
            }),
            ..Default::default()
        }
    }

    fn resource(r: usize) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", format!("svc-{r}"))],
            ..Default::default()
        })
    }

    fn scope(r: usize, s: usize) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: format!("scope-{r}-{s}"),
            version: "1.2.3".into(),
            ..Default::default()
        })
    }

    fn span(r: usize, s: usize, i: usize) -> Span {
        Span {
            trace_id: vec![r as u8; 16],
            span_id: vec![s as u8, i as u8, 0, 0, 0, 0, 0, 1],
            name: format!("span-{r}-{s}-{i}"),
            start_time_unix_nano: 1_000 + i as u64,
            end_time_unix_nano: 2_000 + i as u64,
            ..Default::default()
        }
    }

    /// `shape[r][s]` is the number of spans in scope `s` of resource `r`.
    fn traces(shape: &[Vec<usize>]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: shape
                .iter()
                .enumerate()
                .map(|(r, scopes)| ResourceSpans {
                    resource: resource(r),
                    schema_url: format!("https://schema/{r}"),
                    scope_spans: scopes
                        .iter()
                        .enumerate()
                        .map(|(s, &n)| ScopeSpans {
                            scope: scope(r, s),
                            schema_url: format!("https://scope-schema/{r}/{s}"),
                            spans: (0..n).map(|i| span(r, s, i)).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn logs(shape: &[Vec<usize>]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: shape
                .iter()
                .enumerate()
                .map(|(r, scopes)| ResourceLogs {
                    resource: resource(r),
                    schema_url: format!("https://schema/{r}"),
                    scope_logs: scopes
                        .iter()
                        .enumerate()
                        .map(|(s, &n)| ScopeLogs {
                            scope: scope(r, s),
                            schema_url: String::new(),
                            log_records: (0..n)
                                .map(|i| LogRecord {
                                    time_unix_nano: i as u64,
                                    severity_text: "INFO".into(),
                                    body: Some(AnyValue {
                                        value: Some(any_value::Value::StringValue(format!(
                                            "log {r} {s} {i}"
                                        ))),
                                    }),
                                    ..Default::default()
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn number_points(n: usize) -> Vec<NumberDataPoint> {
        (0..n)
            .map(|i| NumberDataPoint {
                attributes: vec![kv("i", i.to_string())],
                time_unix_nano: i as u64,
                value: Some(number_data_point::Value::AsInt(i as i64)),
                ..Default::default()
            })
            .collect()
    }

    /// Kind 0 is a metric without data, 1..=5 are gauge, sum, histogram, exponential
    /// histogram and summary.
    fn metric(name: String, kind: u8, n: usize) -> Metric {
        let data = match kind {
            1 => Some(Data::Gauge(Gauge {
                data_points: number_points(n),
            })),
            2 => Some(Data::Sum(Sum {
                data_points: number_points(n),
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            3 => Some(Data::Histogram(Histogram {
                data_points: (0..n)
                    .map(|i| HistogramDataPoint {
                        count: i as u64,
                        bucket_counts: vec![i as u64, 1],
                        explicit_bounds: vec![1.5],
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 1,
            })),
            4 => Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: (0..n)
                    .map(|i| ExponentialHistogramDataPoint {
                        count: i as u64,
                        scale: -(i as i32),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
            })),
            5 => Some(Data::Summary(Summary {
                data_points: (0..n)
                    .map(|i| SummaryDataPoint {
                        count: i as u64,
                        sum: i as f64,
                        ..Default::default()
                    })
                    .collect(),
            })),
            _ => None,
        };
        Metric {
            name,
            description: "a metric".into(),
            unit: "1".into(),
            metadata: vec![kv("m", "v".into())],
            data,
        }
    }

    /// `shape[r][s]` lists the (kind, data point count) of each metric of scope `s`.
    fn metrics(shape: &[Vec<Vec<(u8, usize)>>]) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: shape
                .iter()
                .enumerate()
                .map(|(r, scopes)| ResourceMetrics {
                    resource: resource(r),
                    schema_url: format!("https://schema/{r}"),
                    scope_metrics: scopes
                        .iter()
                        .enumerate()
                        .map(|(s, ms)| ScopeMetrics {
                            scope: scope(r, s),
                            schema_url: format!("https://scope-schema/{r}/{s}"),
                            metrics: ms
                                .iter()
                                .enumerate()
                                .map(|(m, &(kind, n))| metric(format!("m-{r}-{s}-{m}"), kind, n))
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Each entry is the path from resource to item: [resource, scope, item]; a resource or
    /// scope without children shows up as a shorter path so dropping it is noticed.
    type Path = Vec<Vec<u8>>;

    fn key<M: Message>(msg: &Option<M>, schema_url: &str) -> Vec<u8> {
        let mut out = match msg {
            Some(m) => [vec![1], m.encode_to_vec()].concat(),
            None => vec![0],
        };
        out.extend_from_slice(schema_url.as_bytes());
        out
    }

    fn flatten_traces(buf: &[u8]) -> Vec<Path> {
        let req = ExportTraceServiceRequest::decode(buf).expect("piece decodes");
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let r = key(&rs.resource, &rs.schema_url);
            if rs.scope_spans.is_empty() {
                out.push(vec![r.clone()]);
            }
            for ss in rs.scope_spans {
                let s = key(&ss.scope, &ss.schema_url);
                if ss.spans.is_empty() {
                    out.push(vec![r.clone(), s.clone()]);
                }
                for span in ss.spans {
                    out.push(vec![r.clone(), s.clone(), span.encode_to_vec()]);
                }
            }
        }
        out
    }

    fn flatten_logs(buf: &[u8]) -> Vec<Path> {
        let req = ExportLogsServiceRequest::decode(buf).expect("piece decodes");
        let mut out = Vec::new();
        for rl in req.resource_logs {
            let r = key(&rl.resource, &rl.schema_url);
            if rl.scope_logs.is_empty() {
                out.push(vec![r.clone()]);
            }
            for sl in rl.scope_logs {
                let s = key(&sl.scope, &sl.schema_url);
                if sl.log_records.is_empty() {
                    out.push(vec![r.clone(), s.clone()]);
                }
                for log in sl.log_records {
                    out.push(vec![r.clone(), s.clone(), log.encode_to_vec()]);
                }
            }
        }
        out
    }

    /// The metric without its data points, and the data points.
    fn metric_parts(mut m: Metric) -> (Vec<u8>, Vec<Vec<u8>>) {
        fn take<T: Message>(points: &mut Vec<T>) -> Vec<Vec<u8>> {
            std::mem::take(points)
                .iter()
                .map(Message::encode_to_vec)
                .collect()
        }
        let points = match &mut m.data {
            Some(Data::Gauge(d)) => take(&mut d.data_points),
            Some(Data::Sum(d)) => take(&mut d.data_points),
            Some(Data::Histogram(d)) => take(&mut d.data_points),
            Some(Data::ExponentialHistogram(d)) => take(&mut d.data_points),
            Some(Data::Summary(d)) => take(&mut d.data_points),
            None => Vec::new(),
        };
        (m.encode_to_vec(), points)
    }

    fn flatten_metrics(buf: &[u8]) -> Vec<Path> {
        let req = ExportMetricsServiceRequest::decode(buf).expect("piece decodes");
        let mut out = Vec::new();
        for rm in req.resource_metrics {
            let r = key(&rm.resource, &rm.schema_url);
            if rm.scope_metrics.is_empty() {
                out.push(vec![r.clone()]);
            }
            for sm in rm.scope_metrics {
                let s = key(&sm.scope, &sm.schema_url);
                if sm.metrics.is_empty() {
                    out.push(vec![r.clone(), s.clone()]);
                }
                for m in sm.metrics {
                    let (envelope, points) = metric_parts(m);
                    if points.is_empty() {
                        out.push(vec![r.clone(), s.clone(), envelope.clone()]);
                    }
                    for p in points {
                        out.push(vec![r.clone(), s.clone(), envelope.clone(), p]);
                    }
                }
            }
        }
        out
    }

    fn flatten(signal: Signal, buf: &[u8]) -> Vec<Path> {
        match signal {
            Signal::Traces => flatten_traces(buf),
            Signal::Logs => flatten_logs(buf),
            Signal::Metrics => flatten_metrics(buf),
        }
    }

    /// Splits and checks every piece is a valid request within the limit and that together
    /// they hold exactly the original content, in order. Returns the piece counts.
    fn check_split(signal: Signal, buf: &Bytes, max: usize) -> Result<Vec<usize>, TestCaseError> {
        let total = count_items(signal, buf).expect("valid request");
        let pieces = split(signal, buf, max).expect("valid request");
        let mut union = Vec::new();
        let mut counts = Vec::new();
        for (piece, n) in &pieces {
            prop_assert!(max == 0 || *n <= max, "piece of {} items, max {}", n, max);
            prop_assert_eq!(count_items(signal, piece), Ok(*n));
            union.extend(flatten(signal, piece));
            counts.push(*n);
        }
        prop_assert_eq!(counts.iter().sum::<usize>(), total);
        prop_assert!(
            union == flatten(signal, buf),
            "split lost or reordered content"
        );
        Ok(counts)
    }

    #[test]
    fn varint_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            encode_varint(v, &mut out);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(decode_varint(&out), Ok((v, out.len())));
        }
    }

    #[test]
    fn varint_errors() {
        assert_eq!(decode_varint(&[]), Err(WireError::Truncated { at: 0 }));
        assert_eq!(
            decode_varint(&[0x80, 0x80]),
            Err(WireError::Truncated { at: 0 })
        );
        assert_eq!(
            decode_varint(&[0xff; 10]),
            Err(WireError::BadVarint { at: 0 })
        );
        let mut eleven = vec![0x80; 10];
        eleven.push(0);
        assert_eq!(decode_varint(&eleven), Err(WireError::BadVarint { at: 0 }));
        let mut top_bit = vec![0xff; 9];
        top_bit.push(0x01);
        assert_eq!(decode_varint(&top_bit), Ok((u64::MAX, 10)));
    }

    #[test]
    fn field_iteration() {
        let mut buf = Vec::new();
        encode_varint(tag(1, WIRE_VARINT), &mut buf);
        encode_varint(150, &mut buf);
        encode_varint(tag(2, WIRE_FIXED64), &mut buf);
        buf.extend_from_slice(&7u64.to_le_bytes());
        write_len_field(3, b"abc", &mut buf);
        encode_varint(tag(536_870_911, WIRE_FIXED32), &mut buf);
        buf.extend_from_slice(&9u32.to_le_bytes());
        let got: Vec<_> = fields(&buf).map(|f| f.unwrap()).collect();
        let values: Vec<_> = got.iter().map(|f| (f.number, f.value)).collect();
        assert_eq!(
            values,
            [
                (1, WireValue::Varint(150)),
                (2, WireValue::Fixed64(7)),
                (3, WireValue::Len(b"abc")),
                (536_870_911, WireValue::Fixed32(9)),
            ]
        );
        assert_eq!(got[2].range(), 12..17);
        assert_eq!(got[2].end, got[3].start);
        assert_eq!(got[3].end, buf.len());
    }

    #[test]
    fn malformed_input_is_reported_with_offsets() {
        let cases: [(&[u8], WireError); 8] = [
            (&[0x0a, 0x05, 0x01], WireError::Truncated { at: 0 }),
            (
                &[0x0b],
                WireError::BadWireType {
                    wire_type: 3,
                    at: 0,
                },
            ),
            (
                &[0x0c],
                WireError::BadWireType {
                    wire_type: 4,
                    at: 0,
                },
            ),
            (
                &[0x0e],
                WireError::BadWireType {
                    wire_type: 6,
                    at: 0,
                },
            ),
            (&[0x02, 0x00], WireError::BadField { number: 0, at: 0 }),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                WireError::BadVarint { at: 1 },
            ),
            (
                &[0x08, 0x01],
                WireError::UnexpectedWireType {
                    field: 1,
                    expected: WIRE_LEN,
                    found: WIRE_VARINT,
                    at: 0,
                },
            ),
            // A resource entry whose scope entry runs past its end.
            (&[0x0a, 0x02, 0x12, 0x05], WireError::Truncated { at: 2 }),
        ];
        for (buf, want) in cases {
            for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
                assert_eq!(count_items(signal, buf).as_ref(), Err(&want), "{buf:?}");
                let err = split(signal, &Bytes::copy_from_slice(buf), 1).unwrap_err();
                assert_eq!(err, want);
            }
        }
        assert_eq!(
            WireError::Truncated { at: 123 }.to_string(),
            "malformed protobuf: truncated field at byte 123"
        );
        let mut fixed = vec![0x09];
        fixed.extend_from_slice(&[0; 7]);
        assert_eq!(
            fields(&fixed).next(),
            Some(Err(WireError::Truncated { at: 0 }))
        );
        let mut iter = fields(&[0x0b, 0x08, 0x01]);
        assert!(iter.next().unwrap().is_err());
        assert_eq!(iter.next(), None, "iteration stops after an error");
    }

    #[test]
    fn counts_spans_and_logs() {
        let shape = vec![vec![3, 0, 2], vec![], vec![5]];
        let t = traces(&shape).encode_to_vec();
        assert_eq!(count_items(Signal::Traces, &t), Ok(10));
        let l = logs(&shape).encode_to_vec();
        assert_eq!(count_items(Signal::Logs, &l), Ok(10));
        assert_eq!(count_items(Signal::Traces, &[]), Ok(0));
    }

    #[test]
    fn counts_data_points_of_every_metric_kind() {
        for kind in 1..=5 {
            let req = metrics(&[vec![vec![(kind, 4), (kind, 0)], vec![(kind, 3)]]]);
            assert_eq!(
                count_items(Signal::Metrics, &req.encode_to_vec()),
                Ok(7),
                "kind {kind}"
            );
        }
        let mixed = metrics(&[
            vec![vec![(1, 1), (2, 2), (3, 3)]],
            vec![vec![(4, 4), (5, 5), (0, 0)]],
        ]);
        assert_eq!(count_items(Signal::Metrics, &mixed.encode_to_vec()), Ok(15));
    }

    /// Wraps encoded `Metric` bytes into a one-resource, one-scope metrics request.
    fn wrap_metric(metric: &[u8]) -> Bytes {
        let mut scope = Vec::new();
        write_len_field(2, metric, &mut scope);
        let mut resource = Vec::new();
        write_len_field(2, &scope, &mut resource);
        let mut req = Vec::new();
        write_len_field(1, &resource, &mut req);
        Bytes::from(req)
    }

    #[test]
    fn metric_kind_follows_oneof_merge_rules() {
        let gauge = metric("m".into(), 1, 2).encode_to_vec();
        let sum = metric("m".into(), 2, 3).encode_to_vec();

        let replaced = wrap_metric(&[gauge.clone(), sum.clone()].concat());
        let decoded = ExportMetricsServiceRequest::decode(replaced.clone()).unwrap();
        let Some(Data::Sum(s)) = &decoded.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("sum replaces gauge");
        };
        assert_eq!(s.data_points.len(), 3);
        assert_eq!(count_items(Signal::Metrics, &replaced), Ok(3));
        assert_eq!(
            check_split(Signal::Metrics, &replaced, 1).unwrap(),
            [1, 1, 1]
        );

        let merged = wrap_metric(&[gauge.clone(), sum, gauge.clone(), gauge].concat());
        assert_eq!(count_items(Signal::Metrics, &merged), Ok(4));
        assert_eq!(check_split(Signal::Metrics, &merged, 3).unwrap(), [3, 1]);
    }

    #[test]
    fn split_keeps_small_requests_whole_and_zero_copy() {
        let buf = Bytes::from(traces(&[vec![2, 3], vec![1]]).encode_to_vec());
        for max in [0, 6, 100] {
            let pieces = split(Signal::Traces, &buf, max).unwrap();
            assert_eq!(pieces.len(), 1);
            assert_eq!(pieces[0].0.as_ptr(), buf.as_ptr());
            assert_eq!(pieces[0].1, 6);
        }
        let empty = split(Signal::Logs, &Bytes::new(), 5).unwrap();
        assert_eq!(empty, [(Bytes::new(), 0)]);
    }

    #[test]
    fn split_takes_whole_resources_zero_copy() {
        let shape = vec![vec![2], vec![2], vec![3], vec![1]];
        let buf = Bytes::from(traces(&shape).encode_to_vec());
        let pieces = split(Signal::Traces, &buf, 4).unwrap();
        let counts: Vec<_> = pieces.iter().map(|p| p.1).collect();
        assert_eq!(counts, [4, 4]);
        let src = buf.as_ptr_range();
        for (piece, _) in &pieces {
            assert!(
                src.contains(&piece.as_ptr()),
                "piece should borrow the input"
            );
        }
        check_split(Signal::Traces, &buf, 4).unwrap();
    }

    #[test]
    fn split_inside_resources_scopes_and_metrics() {
        let shape = vec![vec![10]];
        let buf = Bytes::from(traces(&shape).encode_to_vec());
        assert_eq!(check_split(Signal::Traces, &buf, 3).unwrap(), [3, 3, 3, 1]);

        let shape = vec![vec![1], vec![4, 0, 4, 2], vec![0], vec![]];
        let buf = Bytes::from(logs(&shape).encode_to_vec());
        assert_eq!(check_split(Signal::Logs, &buf, 3).unwrap(), [3, 3, 3, 2]);

        // The second scope fits in a piece, so it starts a new one rather than being cut.
        for kind in 1..=5 {
            let req = metrics(&[vec![vec![(kind, 7), (0, 0)], vec![(kind, 2)]], vec![]]);
            let buf = Bytes::from(req.encode_to_vec());
            assert_eq!(
                check_split(Signal::Metrics, &buf, 2).unwrap(),
                [2, 2, 2, 1, 2],
                "kind {kind}"
            );
        }
    }

    #[test]
    fn split_carries_unknown_fields_of_envelopes() {
        let mut scope = ScopeSpans {
            scope: scope(0, 0),
            schema_url: "s".into(),
            spans: (0..4).map(|i| span(0, 0, i)).collect(),
        }
        .encode_to_vec();
        encode_varint(tag(99, WIRE_VARINT), &mut scope);
        encode_varint(7, &mut scope);
        let mut resource = ResourceSpans {
            resource: resource(0),
            ..Default::default()
        }
        .encode_to_vec();
        write_len_field(2, &scope, &mut resource);
        encode_varint(tag(98, WIRE_FIXED32), &mut resource);
        resource.extend_from_slice(&[1, 2, 3, 4]);
        let mut req = Vec::new();
        write_len_field(1, &resource, &mut req);
        encode_varint(tag(97, WIRE_VARINT), &mut req);
        encode_varint(1, &mut req);
        let buf = Bytes::from(req);

        assert_eq!(count_items(Signal::Traces, &buf), Ok(4));
        let pieces = split(Signal::Traces, &buf, 3).unwrap();
        assert_eq!(pieces.len(), 2);
        for (piece, _) in &pieces {
            let mut unknown = Vec::new();
            for r in fields(piece) {
                for s in r.unwrap().nested().unwrap() {
                    let s = s.unwrap();
                    unknown.push(s.number);
                    if s.number == 2 {
                        unknown.extend(s.nested().unwrap().map(|f| f.unwrap().number));
                    }
                }
            }
            unknown.retain(|&n| n > 90);
            assert_eq!(unknown, [98, 99]);
        }
        check_split(Signal::Traces, &buf, 3).unwrap();
    }

    #[test]
    fn concat_merges_requests() {
        let a = traces(&[vec![1, 2]]);
        let b = traces(&[vec![3], vec![0]]);
        let joined = concat(&[
            Bytes::from(a.encode_to_vec()),
            Bytes::new(),
            Bytes::from(b.encode_to_vec()),
        ]);
        let decoded = ExportTraceServiceRequest::decode(joined.clone()).unwrap();
        let mut want = a.resource_spans;
        want.extend(b.resource_spans);
        assert_eq!(decoded.resource_spans, want);
        assert_eq!(count_items(Signal::Traces, &joined), Ok(6));
        assert_eq!(concat(&[]), Bytes::new());
    }

    #[test]
    fn for_each_span_reads_span_fields() {
        let mut req = traces(&[vec![2], vec![1]]);
        let special = &mut req.resource_spans[1].scope_spans[0].spans[0];
        special.parent_span_id = vec![9; 8];
        special.status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
        let buf = req.encode_to_vec();
        let mut seen = Vec::new();
        for_each_span(&buf, |s| {
            assert_eq!(Span::decode(s.raw()).unwrap().name, s.name_str().unwrap());
            seen.push((
                s.trace_id().to_vec(),
                s.span_id().to_vec(),
                s.parent_span_id().to_vec(),
                s.name_str().unwrap().to_owned(),
                s.start_time_unix_nano(),
                s.end_time_unix_nano(),
                s.status_code(),
            ));
        })
        .unwrap();
        let want: Vec<_> = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| {
                (
                    s.trace_id.clone(),
                    s.span_id.clone(),
                    s.parent_span_id.clone(),
                    s.name.clone(),
                    s.start_time_unix_nano,
                    s.end_time_unix_nano,
                    s.status.as_ref().map_or(0, |st| st.code),
                )
            })
            .collect();
        assert_eq!(seen, want);
        assert_eq!(seen[2].6, 2);

        let mut bad_span = Vec::new();
        encode_varint(tag(SPAN_START_TIME, WIRE_VARINT), &mut bad_span);
        encode_varint(5, &mut bad_span);
        let mut scope = Vec::new();
        write_len_field(2, &bad_span, &mut scope);
        let mut resource = Vec::new();
        write_len_field(2, &scope, &mut resource);
        let mut req = Vec::new();
        write_len_field(1, &resource, &mut req);
        assert_eq!(
            for_each_span(&req, |_| {}),
            Err(WireError::UnexpectedWireType {
                field: SPAN_START_TIME,
                expected: WIRE_FIXED64,
                found: WIRE_VARINT,
                at: 6,
            })
        );
    }

    fn trace_shape() -> impl Strategy<Value = Vec<Vec<usize>>> {
        prop::collection::vec(prop::collection::vec(0usize..7, 0..4), 0..5)
    }

    fn metric_shape() -> impl Strategy<Value = Vec<Vec<Vec<(u8, usize)>>>> {
        let metric = (0u8..6, 0usize..9);
        prop::collection::vec(
            prop::collection::vec(prop::collection::vec(metric, 0..4), 0..3),
            0..4,
        )
    }

    const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// On input that is not a valid request, the functions must return rather than panic, and
    /// whatever split accepts must still add up.
    fn exercise(buf: &Bytes, max: usize) -> Result<(), TestCaseError> {
        let _ = for_each_span(buf, |s| {
            let _ = s.name_str();
        });
        for signal in SIGNALS {
            let count = count_items(signal, buf);
            if let Ok(pieces) = split(signal, buf, max) {
                prop_assert_eq!(count, Ok(pieces.iter().map(|p| p.1).sum::<usize>()));
                for (piece, n) in pieces {
                    prop_assert_eq!(count_items(signal, &piece), Ok(n));
                    prop_assert!(n <= max || max == 0);
                }
            } else {
                prop_assert!(count.is_err());
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            buf in prop::collection::vec(any::<u8>(), 0..300),
            max in 0usize..5,
        ) {
            exercise(&Bytes::from(buf), max)?;
        }

        #[test]
        fn corrupted_requests_never_panic(
            shape in metric_shape(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            max in 0usize..5,
        ) {
            let mut buf = metrics(&shape).encode_to_vec();
            for (at, byte) in flips {
                let i = at.index(buf.len().max(1));
                if let Some(b) = buf.get_mut(i) {
                    *b = byte;
                }
            }
            exercise(&Bytes::from(buf.clone()), max)?;
            buf.truncate(cut.index(buf.len() + 1));
            exercise(&Bytes::from(buf), max)?;
        }

        #[test]
        fn split_traces_preserves_content(shape in trace_shape(), max in 1usize..20) {
            let buf = Bytes::from(traces(&shape).encode_to_vec());
            check_split(Signal::Traces, &buf, max)?;
        }

        #[test]
        fn split_logs_preserves_content(shape in trace_shape(), max in 1usize..20) {
            let buf = Bytes::from(logs(&shape).encode_to_vec());
            check_split(Signal::Logs, &buf, max)?;
        }

        #[test]
        fn split_metrics_preserves_content(shape in metric_shape(), max in 1usize..20) {
            let buf = Bytes::from(metrics(&shape).encode_to_vec());
            check_split(Signal::Metrics, &buf, max)?;
        }
    }
}
