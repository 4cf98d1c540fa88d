//! Reading a metrics request in its wire encoding (the aggregation engine of `cardinality`
//! and `attributes`, the remote-write translation): resources, scopes and metric headers are
//! decoded (there are few), number points are read in place, and a point's attributes stay
//! encoded until someone needs them as values. A scrape of 50,000 series then costs a walk
//! over its bytes instead of 150,000 allocations.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use prost::Message;

use crate::otlp::wire::{Field, WireError, fields};

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

    pub(crate) fn value(self) -> number_data_point::Value {
        match self {
            Num::Int(i) => number_data_point::Value::AsInt(i),
            Num::Double(d) => number_data_point::Value::AsDouble(d),
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
            Malformed::Utf8 => f.write_str("an attribute key is not valid UTF-8"),
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

/// The last occurrence of length-delimited field `number` (protobuf's rule for singular
/// fields), or empty.
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
