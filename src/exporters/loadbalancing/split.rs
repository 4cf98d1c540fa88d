//! Splitting a traces batch by routing key: the request's wire format is walked once, each
//! span's owner is looked up, and when spans go to more than one backend they are re-encoded
//! per backend under their original resource and scope bytes (the tail sampler's
//! `OutputBuilder`). A batch whose spans all go to one backend is passed on as it is.

use crate::otlp::Batch;
use crate::otlp::wire::{self, WireError};
use crate::processors::tail_sampling::output::{OutputBuilder, Slot};
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

/// One scope's envelope: resource fields but scopes, and scope fields but spans.
struct Envelope {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

/// Splits `batch` into one batch per owning backend; `owner(key)` names the backend index.
/// Every part carries the original's acknowledgements (`Batch::derive`).
pub fn split_traces(
    batch: &Batch,
    by: RoutingKey,
    mut owner: impl FnMut(&[u8]) -> usize,
) -> Result<Vec<(usize, Batch)>, WireError> {
    // First pass: who owns each span, in order.
    let mut owners: Vec<u32> = Vec::with_capacity(batch.items);
    for chunk in &batch.chunks {
        walk(chunk, by, &mut owner, &mut |_, _, o, _| {
            owners.push(o as u32)
        })?;
    }
    let Some(&first) = owners.first() else {
        return Ok(Vec::new());
    };
    if owners.iter().all(|&o| o == first) {
        return Ok(vec![(first as usize, batch.clone())]);
    }
    // Second pass: re-encode each span under its envelope, per owner.
    let mut builders: Vec<(usize, OutputBuilder, Vec<Batch>)> = Vec::new();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut current_env = usize::MAX;
    let mut i = 0usize;
    for chunk in &batch.chunks {
        walk(chunk, by, &mut |_| 0, &mut |env_id, env, _, span| {
            let o = owners[i] as usize;
            i += 1;
            if env_id != current_env {
                current_env = env_id;
                slots.clear();
            }
            let b = match builders.iter().position(|b| b.0 == o) {
                Some(b) => b,
                None => {
                    builders.push((o, OutputBuilder::default(), Vec::new()));
                    builders.len() - 1
                }
            };
            if slots.len() <= b {
                slots.resize(b + 1, None);
            }
            let (_, builder, done) = &mut builders[b];
            if builder.is_full() {
                builder.finish_into(done);
            }
            let slot = match slots[b] {
                Some(s) if builder.is_valid(s) => s,
                _ => {
                    let s = builder.slot(&env.resource, &env.scope);
                    slots[b] = Some(s);
                    s
                }
            };
            builder.push(slot, span);
        })?;
    }
    let mut out = Vec::new();
    for (o, mut builder, mut done) in builders {
        builder.finish_into(&mut done);
        for part in done {
            out.push((o, batch.derive(part.to_bytes(), part.items)));
        }
    }
    Ok(out)
}

/// Walks one encoded request: `visit(envelope id, envelope, owner, span bytes)` per span.
fn walk(
    chunk: &[u8],
    by: RoutingKey,
    owner: &mut impl FnMut(&[u8]) -> usize,
    visit: &mut impl FnMut(usize, &Envelope, usize, &[u8]),
) -> Result<(), WireError> {
    let mut env = Envelope {
        resource: Vec::new(),
        scope: Vec::new(),
    };
    let mut env_id = 0usize;
    for rs in wire::fields(chunk) {
        let rs = rs?;
        if rs.number != REQUEST_RESOURCES {
            continue;
        }
        env.resource.clear();
        for f in rs.nested()? {
            let f = f?;
            if f.number != CHILDREN {
                env.resource.extend_from_slice(&chunk[f.range()]);
            }
        }
        let service_owner = match by {
            RoutingKey::Service => {
                let resource = view::resource_of(&env.resource)?;
                let name = view::resource_attribute(resource, "service.name")?
                    .map(|v| v.str())
                    .unwrap_or_default();
                Some(owner(name))
            }
            RoutingKey::TraceId => None,
        };
        for ss in rs.nested()? {
            let ss = ss?;
            if ss.number != CHILDREN {
                continue;
            }
            env.scope.clear();
            for f in ss.nested()? {
                let f = f?;
                if f.number != CHILDREN {
                    env.scope.extend_from_slice(&chunk[f.range()]);
                }
            }
            env_id += 1;
            for span in ss.nested()? {
                let span = span?;
                if span.number != CHILDREN {
                    continue;
                }
                let raw = span.expect_len()?;
                let o = match service_owner {
                    Some(o) => o,
                    None => owner(trace_id(raw)?),
                };
                visit(env_id, &env, o, raw);
            }
        }
    }
    Ok(())
}

/// The span's trace id (empty if absent: such spans all go to one backend).
fn trace_id(raw: &[u8]) -> Result<&[u8], WireError> {
    let mut id: &[u8] = &[];
    for f in wire::fields(raw) {
        let f = f?;
        if f.number == SPAN_TRACE_ID {
            id = f.expect_len()?;
        }
    }
    Ok(id)
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
