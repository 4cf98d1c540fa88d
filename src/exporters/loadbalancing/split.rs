//! Splitting a traces batch by routing key: the request's wire format is walked once to find
//! each span's owner; when spans go to more than one backend, each owner's request is written
//! in one exact-size buffer, its spans under their original resource and scope bytes, with
//! one copy of each span. (The tail sampler's `OutputBuilder` does the same for decided
//! traces, but grows per-scope buffers and copies them again: measured at twice the cost
//! here, where every span of every batch passes through.) A batch whose spans all go to one
//! backend is passed on as it is.

use bytes::Bytes;

use crate::otlp::Batch;
use crate::otlp::wire::{self, WIRE_LEN, WireError, encode_varint, len_field_len};
use crate::processors::tail_sampling::view;

const REQUEST_RESOURCES: u32 = 1;
const CHILDREN: u32 = 2;
const SPAN_TRACE_ID: u32 = 1;

/// What spans are routed by: the collector's `routing_key` values built so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingKey {
    TraceId,
    Service,
}

/// One `ScopeSpans` seen: the `ResourceSpans` it is in and its fields but spans.
struct Scope {
    resource: usize,
    fields: Vec<u8>,
}

/// One span: its owner, scope, and where its bytes are.
struct Rec {
    owner: u32,
    scope: u32,
    chunk: u32,
    start: u32,
    len: u32,
}

/// Splits `batch` into one batch per owning backend; `owner(key)` names the backend index.
/// Every part carries the original's acknowledgements (`Batch::derive`).
pub fn split_traces(
    batch: &Batch,
    by: RoutingKey,
    mut owner: impl FnMut(&[u8]) -> usize,
) -> Result<Vec<(usize, Batch)>, WireError> {
    let mut resources: Vec<Vec<u8>> = Vec::new();
    let mut scopes: Vec<Scope> = Vec::new();
    let mut recs: Vec<Rec> = Vec::with_capacity(batch.items);
    for (ci, chunk) in batch.chunks.iter().enumerate() {
        walk(
            chunk,
            ci as u32,
            by,
            &mut owner,
            &mut resources,
            &mut scopes,
            &mut recs,
        )?;
    }
    let Some(first) = recs.first().map(|r| r.owner) else {
        return Ok(Vec::new());
    };
    if recs.iter().all(|r| r.owner == first) {
        return Ok(vec![(first as usize, batch.clone())]);
    }
    let mut owners: Vec<u32> = recs.iter().map(|r| r.owner).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut scope_len = vec![0usize; scopes.len()];
    let mut resource_len = vec![0usize; resources.len()];
    let mut out = Vec::with_capacity(owners.len());
    for o in owners {
        // Sizes first, so the request is written once into a buffer of its exact size.
        scope_len.fill(0);
        resource_len.fill(0);
        let mut items = 0;
        for r in recs.iter().filter(|r| r.owner == o) {
            scope_len[r.scope as usize] += len_field_len(CHILDREN, r.len as usize);
            items += 1;
        }
        for (i, s) in scopes.iter().enumerate() {
            if scope_len[i] > 0 {
                scope_len[i] += s.fields.len();
                resource_len[s.resource] += len_field_len(CHILDREN, scope_len[i]);
            }
        }
        let mut total = 0;
        for (i, r) in resources.iter().enumerate() {
            if resource_len[i] > 0 {
                resource_len[i] += r.len();
                total += len_field_len(REQUEST_RESOURCES, resource_len[i]);
            }
        }
        let mut buf = Vec::with_capacity(total);
        let (mut cur_resource, mut cur_scope) = (usize::MAX, usize::MAX);
        for r in recs.iter().filter(|r| r.owner == o) {
            let si = r.scope as usize;
            if si != cur_scope {
                let ri = scopes[si].resource;
                if ri != cur_resource {
                    header(REQUEST_RESOURCES, resource_len[ri], &mut buf);
                    buf.extend_from_slice(&resources[ri]);
                    cur_resource = ri;
                }
                header(CHILDREN, scope_len[si], &mut buf);
                buf.extend_from_slice(&scopes[si].fields);
                cur_scope = si;
            }
            let span =
                &batch.chunks[r.chunk as usize][r.start as usize..(r.start + r.len) as usize];
            header(CHILDREN, span.len(), &mut buf);
            buf.extend_from_slice(span);
        }
        debug_assert_eq!(buf.len(), total);
        out.push((o as usize, batch.derive(Bytes::from(buf), items)));
    }
    Ok(out)
}

fn header(field: u32, len: usize, out: &mut Vec<u8>) {
    encode_varint((u64::from(field) << 3) | u64::from(WIRE_LEN), out);
    encode_varint(len as u64, out);
}

/// Walks one encoded request, recording every span with its owner.
fn walk(
    chunk: &[u8],
    ci: u32,
    by: RoutingKey,
    owner: &mut impl FnMut(&[u8]) -> usize,
    resources: &mut Vec<Vec<u8>>,
    scopes: &mut Vec<Scope>,
    recs: &mut Vec<Rec>,
) -> Result<(), WireError> {
    let base = chunk.as_ptr() as usize;
    for rs in wire::fields(chunk) {
        let rs = rs?;
        if rs.number != REQUEST_RESOURCES {
            continue;
        }
        let mut resource = Vec::new();
        for f in rs.nested()? {
            let f = f?;
            if f.number != CHILDREN {
                resource.extend_from_slice(&chunk[f.range()]);
            }
        }
        let service_owner = match by {
            RoutingKey::Service => {
                let r = view::resource_of(&resource)?;
                let name = view::resource_attribute(r, "service.name")?
                    .map(|v| v.str())
                    .unwrap_or_default();
                Some(owner(name))
            }
            RoutingKey::TraceId => None,
        };
        resources.push(resource);
        let ri = resources.len() - 1;
        for ss in rs.nested()? {
            let ss = ss?;
            if ss.number != CHILDREN {
                continue;
            }
            // One pass: the scope's own fields are gathered while its spans are recorded.
            let si = scopes.len();
            scopes.push(Scope {
                resource: ri,
                fields: Vec::new(),
            });
            for span in ss.nested()? {
                let span = span?;
                if span.number != CHILDREN {
                    scopes[si].fields.extend_from_slice(&chunk[span.range()]);
                    continue;
                }
                let si = si as u32;
                let raw = span.expect_len()?;
                let o = match service_owner {
                    Some(o) => o,
                    None => owner(trace_id(raw)?),
                };
                recs.push(Rec {
                    owner: o as u32,
                    scope: si,
                    chunk: ci,
                    start: (raw.as_ptr() as usize - base) as u32,
                    len: raw.len() as u32,
                });
            }
        }
    }
    Ok(())
}

/// The span's trace id (empty if absent: such spans all go to one backend). Encoders write
/// it first; the first occurrence is taken.
fn trace_id(raw: &[u8]) -> Result<&[u8], WireError> {
    for f in wire::fields(raw) {
        let f = f?;
        if f.number == SPAN_TRACE_ID {
            return f.expect_len();
        }
    }
    Ok(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ack::Ack;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    use std::collections::BTreeMap;

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{trace}-{id}"),
            ..Default::default()
        }
    }

    fn resource(service: &str, scopes: Vec<(&str, Vec<Span>)>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: scopes
                .into_iter()
                .map(|(name, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: name.into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: format!("url-{name}"),
                })
                .collect(),
            schema_url: "res-url".into(),
        }
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource(
                    "a",
                    vec![
                        ("s1", vec![span(1, 1), span(2, 1), span(3, 1)]),
                        ("s2", vec![span(2, 2), span(4, 1)]),
                    ],
                ),
                resource("b", vec![("s3", vec![span(1, 2), span(5, 1), span(2, 3)])]),
            ],
        }
    }

    fn batch(req: &ExportTraceServiceRequest) -> Batch {
        Batch::from_encoded(crate::otlp::Signal::Traces, req.encode_to_vec().into()).unwrap()
    }

    /// (service, scope, span name) for every span, per trace id, from decoded parts.
    /// (owner, service, scope, span name, scope schema url).
    type Placed = (usize, String, String, String, String);

    fn by_trace(parts: &[(usize, Batch)]) -> BTreeMap<u8, Vec<Placed>> {
        let mut out: BTreeMap<u8, Vec<_>> = BTreeMap::new();
        for (owner, b) in parts {
            let req = ExportTraceServiceRequest::decode(b.to_bytes()).unwrap();
            let mut n = 0;
            for rs in &req.resource_spans {
                let svc = match &rs.resource.as_ref().unwrap().attributes[0].value {
                    Some(AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    }) => s.clone(),
                    _ => panic!(),
                };
                assert_eq!(rs.schema_url, "res-url");
                for ss in &rs.scope_spans {
                    let scope = ss.scope.as_ref().unwrap().name.clone();
                    assert_eq!(ss.schema_url, format!("url-{scope}"));
                    for s in &ss.spans {
                        n += 1;
                        out.entry(s.trace_id[0]).or_default().push((
                            *owner,
                            svc.clone(),
                            scope.clone(),
                            s.name.clone(),
                            ss.schema_url.clone(),
                        ));
                    }
                }
            }
            assert_eq!(n, b.items);
        }
        out
    }

    #[test]
    fn splits_by_trace_id_keeping_envelopes_and_acks() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut b = batch(&request());
        b.acks.push(Ack::new(move |ok| tx.send(ok).unwrap()));
        let parts = split_traces(&b, RoutingKey::TraceId, |k| (k[0] % 3) as usize).unwrap();
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|p| p.1.items).sum::<usize>(), 8);
        let traces = by_trace(&parts);
        assert_eq!(traces.len(), 5);
        for (trace, spans) in &traces {
            // Every span of a trace went to its owner, under its original envelope.
            assert!(spans.iter().all(|s| s.0 == (*trace % 3) as usize));
        }
        assert_eq!(traces[&2].len(), 3);
        assert!(traces[&2].contains(&(2, "b".into(), "s3".into(), "s2-3".into(), "url-s3".into())));
        assert!(traces[&2].contains(&(2, "a".into(), "s2".into(), "s2-2".into(), "url-s2".into())));
        // The acknowledgement is shared by every part and settles when the last one drops.
        assert!(parts.iter().all(|p| p.1.acks.len() == 1));
        drop(b);
        assert!(rx.try_recv().is_err());
        parts[0].1.fail_acks();
        drop(parts);
        assert_eq!(rx.try_recv(), Ok(false));
    }

    #[test]
    fn one_owner_passes_the_batch_through() {
        let b = batch(&request());
        let parts = split_traces(&b, RoutingKey::TraceId, |_| 4).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, 4);
        assert_eq!(parts[0].1.chunks[0], b.chunks[0]);
    }

    #[test]
    fn splits_by_service() {
        let b = batch(&request());
        let parts = split_traces(&b, RoutingKey::Service, |k| usize::from(k == b"b")).unwrap();
        let traces = by_trace(&parts);
        for spans in traces.values() {
            for s in spans {
                assert_eq!(s.0, usize::from(s.1 == "b"));
            }
        }
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn multi_chunk_batches_and_malformed_input() {
        let mut b = batch(&request());
        b.append(batch(&request()));
        let parts = split_traces(&b, RoutingKey::TraceId, |k| (k[0] % 2) as usize).unwrap();
        assert_eq!(parts.iter().map(|p| p.1.items).sum::<usize>(), 16);
        let bad = Batch::new(crate::otlp::Signal::Traces, vec![0x0a, 0x05, 1].into(), 1);
        assert!(split_traces(&bad, RoutingKey::TraceId, |_| 0).is_err());
    }
}
