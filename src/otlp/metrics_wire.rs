//! Reading a metrics request in its wire encoding (the aggregation engine of `cardinality`
//! and `attributes`, the remote-write translation): resources, scopes and metric headers are
//! decoded (there are few), number points are read in place, and a point's attributes stay
//! encoded until someone needs them as values. A scrape of 50,000 series then costs a walk
//! over its bytes instead of 150,000 allocations.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

use crate::otlp::wire::{
    Field, WireError, fields, fixed64_field_len, len_field_len, varint_field_len, write_fixed64,
    write_len_field, write_len_header, write_varint_field,
};

/// A number as OTLP carries it; ints stay ints unless mixed with doubles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    Int(i64),
    Double(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Double(d) => d,
        }
    }

    pub(crate) fn zero_like(self) -> Num {
        match self {
            Num::Int(_) => Num::Int(0),
            Num::Double(_) => Num::Double(0.0),
        }
    }

    pub(crate) fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Num::Int(a.wrapping_add(b)),
            _ => Num::Double(self.as_f64() + other.as_f64()),
        }
    }

    pub(crate) fn sub(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Num::Int(a.wrapping_sub(b)),
            _ => Num::Double(self.as_f64() - other.as_f64()),
        }
    }

    pub(crate) fn less_than(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a < b,
            _ => self.as_f64() < other.as_f64(),
        }
    }
}

/// One attribute as encoded: its key, read to sort and match by, and the whole `KeyValue`.
#[derive(Clone, Copy, Debug)]
pub struct RawAttr<'a> {
    pub key: &'a str,
    pub encoded: &'a [u8],
}

impl<'a> RawAttr<'a> {
    pub fn decode(&self) -> Result<KeyValue, prost::DecodeError> {
        KeyValue::decode(self.encoded)
    }

    /// The encoded `AnyValue` (empty when unset), to tell values apart without decoding.
    pub fn value_bytes(&self) -> &'a [u8] {
        fields(self.encoded)
            .filter_map(Result::ok)
            .filter(|f| f.number == 2)
            .last()
            .and_then(|f| f.expect_len().ok())
            .unwrap_or_default()
    }
}

/// Why a part of a request could not be read.
#[derive(Debug)]
pub enum Malformed {
    Wire(WireError),
    Decode(prost::DecodeError),
    Utf8,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Wire(e) => write!(f, "{e}"),
            Malformed::Decode(e) => write!(f, "{e}"),
            Malformed::Utf8 => f.write_str("a string is not valid UTF-8"),
        }
    }
}

impl From<WireError> for Malformed {
    fn from(e: WireError) -> Self {
        Malformed::Wire(e)
    }
}

impl From<prost::DecodeError> for Malformed {
    fn from(e: prost::DecodeError) -> Self {
        Malformed::Decode(e)
    }
}

pub fn read_attr(encoded: &[u8]) -> Result<RawAttr<'_>, Malformed> {
    let mut key: &[u8] = &[];
    for f in fields(encoded) {
        let f = f?;
        if f.number == 1 {
            key = f.expect_len()?;
        }
    }
    let key = std::str::from_utf8(key).map_err(|_| Malformed::Utf8)?;
    Ok(RawAttr { key, encoded })
}

/// The payloads of every length-delimited field `number` of a message.
pub fn repeated(buf: &[u8], number: u32) -> impl Iterator<Item = Result<&[u8], WireError>> {
    fields(buf).filter_map(move |f| match f {
        Ok(f) if f.number == number => Some(f.expect_len()),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// The last occurrence of length-delimited field `number`, or empty: last wins, as for a
/// singular string (an embedded message sent twice would be merged; no sender does that).
pub fn last_len(buf: &[u8], number: u32) -> Result<&[u8], WireError> {
    let mut out: &[u8] = &[];
    for f in fields(buf) {
        let f = f?;
        if f.number == number {
            out = f.expect_len()?;
        }
    }
    Ok(out)
}

pub fn str_of(bytes: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed::Utf8)
}

/// A `NumberDataPoint` read in place; its attributes go to the caller's list.
#[derive(Clone, Copy, Debug, Default)]
pub struct NumberPoint {
    pub start: u64,
    pub time: u64,
    pub value: Option<Num>,
    pub flags: u32,
}

pub fn read_number_point<'a>(
    buf: &'a [u8],
    attrs: &mut Vec<RawAttr<'a>>,
) -> Result<NumberPoint, Malformed> {
    let mut p = NumberPoint::default();
    for f in fields(buf) {
        let f = f?;
        match f.number {
            2 => p.start = f.expect_fixed64()?,
            3 => p.time = f.expect_fixed64()?,
            4 => p.value = Some(Num::Double(f64::from_bits(f.expect_fixed64()?))),
            6 => p.value = Some(Num::Int(f.expect_fixed64()? as i64)),
            7 => attrs.push(read_attr(f.expect_len()?)?),
            8 => p.flags = varint_u32(&f)?,
            _ => {}
        }
    }
    Ok(p)
}

/// The attributes (field `number`) of a point decoded some other way.
pub fn read_attrs<'a>(
    buf: &'a [u8],
    number: u32,
    attrs: &mut Vec<RawAttr<'a>>,
) -> Result<(), Malformed> {
    for payload in repeated(buf, number) {
        attrs.push(read_attr(payload?)?);
    }
    Ok(())
}

fn varint_u32(f: &Field<'_>) -> Result<u32, WireError> {
    // Protobuf truncates a uint32 carried in a wider varint.
    Ok(f.expect_varint()? as u32)
}

/// The parts of a `Metric` other than its data, and where its data is.
pub struct MetricHeader<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub unit: &'a str,
    pub metadata: Vec<KeyValue>,
    /// The oneof field number (5 gauge, 7 sum, 9 histogram, 10 exponential histogram,
    /// 11 summary) and its payload.
    pub data: Option<(u32, &'a [u8])>,
}

pub fn read_metric_header(buf: &[u8]) -> Result<MetricHeader<'_>, Malformed> {
    let mut h = MetricHeader {
        name: "",
        description: "",
        unit: "",
        metadata: Vec::new(),
        data: None,
    };
    for f in fields(buf) {
        let f = f?;
        match f.number {
            1 => h.name = str_of(f.expect_len()?)?,
            2 => h.description = str_of(f.expect_len()?)?,
            3 => h.unit = str_of(f.expect_len()?)?,
            5 | 7 | 9 | 10 | 11 => h.data = Some((f.number, f.expect_len()?)),
            12 => h.metadata.push(KeyValue::decode(f.expect_len()?)?),
            _ => {}
        }
    }
    Ok(h)
}

/// `aggregation_temporality` (field 2) and `is_monotonic` (field 3) of a sum or histogram.
pub fn read_shape(data: &[u8]) -> Result<(i32, bool), WireError> {
    let (mut temporality, mut monotonic) = (0, false);
    for f in fields(data) {
        let f = f?;
        match f.number {
            2 => temporality = f.expect_varint()? as i32,
            3 => monotonic = f.expect_varint()? != 0,
            _ => {}
        }
    }
    Ok((temporality, monotonic))
}

/// The data points (field 1) of a gauge, sum or histogram.
pub fn points(data: &[u8]) -> impl Iterator<Item = Result<&[u8], WireError>> {
    repeated(data, 1)
}

// Writing points. Attributes come encoded as `KeyValue` fields tagged for field 7 (the
// attributes of number and summary points); histogram points (field 9) re-tag them.

/// Field of `NumberDataPoint.attributes` and `SummaryDataPoint.attributes`.
pub const ATTRIBUTES: u32 = 7;
const HISTOGRAM_ATTRIBUTES: u32 = 9;

/// The size of `attrs` once tagged for `field`.
pub fn attrs_len(field: u32, attrs: &[u8]) -> usize {
    if field == ATTRIBUTES {
        return attrs.len();
    }
    fields(attrs)
        .filter_map(Result::ok)
        .map(|f| f.expect_len().map_or(0, |p| len_field_len(field, p.len())))
        .sum()
}

pub fn write_attrs(field: u32, attrs: &[u8], out: &mut Vec<u8>) {
    if field == ATTRIBUTES {
        out.extend_from_slice(attrs);
        return;
    }
    for f in fields(attrs).filter_map(Result::ok) {
        if let Ok(payload) = f.expect_len() {
            write_len_field(field, payload, out);
        }
    }
}

pub fn fixed64_if(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        fixed64_field_len(field)
    }
}

pub fn write_fixed64_if(field: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        write_fixed64(field, value, out);
    }
}

pub fn varint_if(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        varint_field_len(field, value)
    }
}

pub fn write_varint_if(field: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        write_varint_field(field, value, out);
    }
}

/// A `NumberDataPoint` as a `data_points` field, what prost writes for it.
pub fn write_number_point(
    attrs: &[u8],
    start: u64,
    time: u64,
    value: Num,
    flags: u32,
    out: &mut Vec<u8>,
) {
    // start 2, time 3, as_double 4 / as_int 6 (a oneof: always written), attributes 7,
    // flags 8.
    let len = fixed64_if(2, start)
        + fixed64_if(3, time)
        + fixed64_field_len(4)
        + attrs.len()
        + varint_if(8, u64::from(flags));
    write_len_header(1, len, out);
    write_fixed64_if(2, start, out);
    write_fixed64_if(3, time, out);
    match value {
        Num::Double(d) => write_fixed64(4, d.to_bits(), out),
        Num::Int(i) => write_fixed64(6, i as u64, out),
    }
    out.extend_from_slice(attrs);
    write_varint_if(8, u64::from(flags), out);
}

/// A histogram point's values.
#[derive(Default)]
pub struct HistogramValues<'a> {
    pub count: u64,
    pub sum: Option<f64>,
    pub bucket_counts: &'a [u64],
    pub bounds: &'a [f64],
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A `HistogramDataPoint` as a `data_points` field, what prost writes for it.
pub fn write_histogram_point(
    attrs: &[u8],
    start: u64,
    time: u64,
    values: &HistogramValues<'_>,
    flags: u32,
    out: &mut Vec<u8>,
) {
    // start 2, time 3, count 4, sum 5, bucket_counts 6 (packed), explicit_bounds 7
    // (packed), attributes 9, flags 10, min 11, max 12.
    let packed = |n: usize| if n == 0 { 0 } else { len_field_len(6, n * 8) };
    let optional = |field, v: Option<f64>| v.map_or(0, |_| fixed64_field_len(field));
    let len = fixed64_if(2, start)
        + fixed64_if(3, time)
        + fixed64_if(4, values.count)
        + optional(5, values.sum)
        + packed(values.bucket_counts.len())
        + packed(values.bounds.len())
        + attrs_len(HISTOGRAM_ATTRIBUTES, attrs)
        + varint_if(10, u64::from(flags))
        + optional(11, values.min)
        + optional(12, values.max);
    write_len_header(1, len, out);
    write_fixed64_if(2, start, out);
    write_fixed64_if(3, time, out);
    write_fixed64_if(4, values.count, out);
    if let Some(sum) = values.sum {
        write_fixed64(5, sum.to_bits(), out);
    }
    if !values.bucket_counts.is_empty() {
        write_len_header(6, values.bucket_counts.len() * 8, out);
        for c in values.bucket_counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
    }
    if !values.bounds.is_empty() {
        write_len_header(7, values.bounds.len() * 8, out);
        for b in values.bounds {
            out.extend_from_slice(&b.to_bits().to_le_bytes());
        }
    }
    write_attrs(HISTOGRAM_ATTRIBUTES, attrs, out);
    write_varint_if(10, u64::from(flags), out);
    for (field, v) in [(11, values.min), (12, values.max)] {
        if let Some(v) = v {
            write_fixed64(field, v.to_bits(), out);
        }
    }
}

/// Room for a tag and a length of up to five bytes.
const HEADER_MAX: usize = 6;

/// Bytes to leave at the start of a buffer that [`frame_resource_metrics`] frames in place.
pub fn resource_headroom(resource: &[u8], scope: &[u8]) -> usize {
    2 * HEADER_MAX + len_field_len(1, resource.len()) + len_field_len(1, scope.len())
}

/// Frames `out` (`headroom` bytes of room, then complete `ScopeMetrics.metrics` fields) as one
/// `ResourceMetrics` field with one scope, without copying the metrics: the headers are
/// written at the end of the room. Returns `out` and where the field starts in it; hand both
/// to [`append_resource_metrics`].
pub fn frame_resource_metrics(
    mut out: Vec<u8>,
    headroom: usize,
    resource: &[u8],
    scope: &[u8],
    scope_schema_url: &str,
    resource_schema_url: &str,
) -> (Vec<u8>, usize) {
    let text = |field, s: &str| {
        if s.is_empty() {
            0
        } else {
            len_field_len(field, s.len())
        }
    };
    let scope_metrics =
        len_field_len(1, scope.len()) + (out.len() - headroom) + text(3, scope_schema_url);
    let resource_metrics = len_field_len(1, resource.len())
        + len_field_len(2, scope_metrics)
        + text(3, resource_schema_url);
    let mut head = Vec::with_capacity(headroom);
    write_len_header(1, resource_metrics, &mut head);
    write_len_field(1, resource, &mut head);
    write_len_header(2, scope_metrics, &mut head);
    write_len_field(1, scope, &mut head);
    let start = headroom - head.len();
    out[start..headroom].copy_from_slice(&head);
    if !scope_schema_url.is_empty() {
        write_len_field(3, scope_schema_url.as_bytes(), &mut out);
    }
    if !resource_schema_url.is_empty() {
        write_len_field(3, resource_schema_url.as_bytes(), &mut out);
    }
    (out, start)
}

/// Adds a framed `ResourceMetrics` field to a request: the first one's buffer becomes the
/// request (the unused room before the field cut off), later ones are copied after it.
pub fn append_resource_metrics(request: &mut Vec<u8>, (mut out, start): (Vec<u8>, usize)) {
    if request.is_empty() {
        out.drain(..start);
        *request = out;
    } else {
        request.extend_from_slice(&out[start..]);
    }
}
