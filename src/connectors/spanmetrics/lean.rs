//! A lean reader of one message's fields for the per-span hot path: the same wire format as
//! `wire::FieldIter`, without the absolute offsets and error detail it keeps for receivers
//! (spans reaching the connector were validated on receipt), so it stays in registers.

use crate::otlp::wire::{self, WireError};

#[derive(Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
}

pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    #[inline(always)]
    pub fn new(buf: &'a [u8]) -> Fields<'a> {
        Fields { buf, pos: 0 }
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => {
                let rest = self.buf.get(self.pos..).unwrap_or_default();
                let (v, n) = wire::decode_varint(rest)?;
                self.pos += n;
                Ok(v)
            }
        }
    }

    /// The next field's number and value; `None` at the end.
    #[inline(always)]
    pub fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self
                    .buf
                    .get(self.pos..self.pos + 8)
                    .ok_or(WireError::Truncated { at })?;
                self.pos += 8;
                Value::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| WireError::Truncated { at })?;
                let v = self
                    .buf
                    .get(self.pos..)
                    .and_then(|r| r.get(..len))
                    .ok_or(WireError::Truncated { at })?;
                self.pos += len;
                Value::Len(v)
            }
            5 => {
                if self.pos + 4 > self.buf.len() {
                    return Err(WireError::Truncated { at });
                }
                self.pos += 4;
                Value::Fixed32
            }
            wt => {
                return Err(WireError::BadWireType {
                    wire_type: wt as u8,
                    at,
                });
            }
        };
        Ok(Some((tag >> 3, value)))
    }
}

/// A `KeyValue`'s key (field 1) and encoded `AnyValue` (field 2); the last of each wins.
#[inline]
pub fn key_value(kv: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut k, mut v): (&[u8], &[u8]) = (&[], &[]);
    let mut f = Fields::new(kv);
    while let Some((n, value)) = f.next()? {
        match (n, value) {
            (1, Value::Len(x)) => k = x,
            (2, Value::Len(x)) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

/// Key and value of a `KeyValue` laid out as encoders write it — the key (field 1), then the
/// value (field 2), each with a one-byte length — without walking it; `None` otherwise.
#[inline(always)]
pub fn canonical_key_value(kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, klen, rest @ ..] = kv else {
        return None;
    };
    let klen = usize::from(*klen);
    if klen >= 0x80 {
        return None;
    }
    let (key, rest) = rest.split_at_checked(klen)?;
    match rest {
        [0x12, vlen, value @ ..] if usize::from(*vlen) == value.len() && *vlen < 0x80 => {
            Some((key, value))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use prost::Message;

    #[test]
    fn the_canonical_layout_reads_as_the_general_one() {
        for (key, value) in [
            ("http.route", any_value::Value::StringValue("/x".into())),
            ("n", any_value::Value::IntValue(-5)),
            ("b", any_value::Value::BoolValue(true)),
        ] {
            let kv = KeyValue {
                key: key.into(),
                value: Some(AnyValue { value: Some(value) }),
                ..Default::default()
            }
            .encode_to_vec();
            assert_eq!(canonical_key_value(&kv), Some(key_value(&kv).unwrap()));
        }
        // Longer than one length byte, value first, no value: the general reader handles them.
        let long = KeyValue {
            key: "k".repeat(200),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(canonical_key_value(&long), None);
        assert_eq!(canonical_key_value(&[0x12, 0, 0x0a, 1, b'k']), None);
        assert_eq!(
            key_value(&[0x12, 0, 0x0a, 1, b'k']).unwrap(),
            (&b"k"[..], &[][..])
        );
        assert_eq!(canonical_key_value(&[0x0a, 1, b'k']), None);
    }
}
