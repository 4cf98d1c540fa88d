//! Splitting a traces batch by routing key: the request's wire format is walked once to find
//! each span's owner; when spans go to more than one backend, each owner's request is written
//! in one exact-size buffer, its spans under their original resource and scope bytes, with
//! one copy of each span. (The tail sampler's `OutputBuilder` does the same for decided
//! traces, but grows per-scope buffers and copies them again: measured at twice the cost
//! here, where every span of every batch passes through.) A batch whose spans all go to one
//! backend is passed on as it is.
//!
//! Every span passes through here, so the walk is kept lean: consecutive spans of one trace
//! (as SDKs and the batch processor usually leave them) are hashed once, the runs' owners
//! are looked up on the ring together after the walk, consecutive spans of one owner in one
//! scope are copied as one run of their original bytes, tags and lengths included, and all
//! owners' requests are written in one pass over the runs. The parts' buffers come from a small `BufPool` and go back to it
//! when the part has been sent, so the next split writes into memory already mapped rather
//! than into fresh pages the kernel has to fault in and clear.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::otlp::Batch;
use crate::otlp::wire::{self, WIRE_LEN, WireError, encode_varint, len_field_len};
use crate::processors::tail_sampling::view;

const REQUEST_RESOURCES: u32 = 1;
const CHILDREN: u32 = 2;
const SPAN_TRACE_ID: u32 = 1;

/// How far ahead of the span being walked its chunk is touched.
const TOUCH_AHEAD: usize = 1024;

/// Buffers the pool keeps at most, and their total capacity at most.
const POOL_BUFFERS: usize = 6;
const POOL_BYTES: usize = 12 << 20;

/// What spans are routed by: the collector's `routing_key` values built so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingKey {
    TraceId,
    Service,
}

/// Free buffers for split parts, bounded in number and bytes.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// An empty buffer with room for `len` bytes: the smallest pooled one that fits, or a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap();
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => free.swap_remove(i),
            None => {
                drop(free);
                // Room for a little more: the next parts, of similar size, then fit too.
                Vec::with_capacity(len + len / 8)
            }
        }
    }

    fn give(&self, mut buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap();
        let held: usize = free.iter().map(Vec::capacity).sum();
        if free.len() < POOL_BUFFERS && held + buf.capacity() <= POOL_BYTES {
            buf.clear();
            free.push(buf);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.lock().unwrap().len()
    }
}

/// A part's bytes, returned to the pool when the last `Bytes` of them drops.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// One `ScopeSpans` seen: the `ResourceSpans` it is in and its fields but spans.
struct Scope {
    resource: usize,
    fields: Vec<u8>,
}

/// Consecutive spans of one scope going to one owner: where their fields (tags and lengths
/// included) are, and how many spans they hold. The walk records runs of one key (its hash);
/// owners are looked up after it, and adjacent runs of one owner joined.
#[derive(Clone, Copy)]
struct Run {
    key: u64,
    owner: u32,
    scope: u32,
    chunk: u32,
    start: u32,
    len: u32,
    spans: u32,
}

/// One owner's request being written.
struct Out {
    buf: Vec<u8>,
    items: usize,
    resource: usize,
    scope: usize,
}

/// Splits `batch` into one batch per owning backend: `hash(key)` places a routing key and
/// `owner(hash)` names the backend index. Every part carries the original's acknowledgements
/// (`Batch::derive`); parts' buffers are taken from `pool` and returned to it when dropped.
///
/// The owners of all of a batch's keys are looked up together after the walk rather than
/// one by one during it: the walk streams the batch through the cache and evicts the ring, so
/// each lookup waited on memory in turn; looked up in one loop, the loads overlap.
pub fn split_traces(
    batch: &Batch,
    by: RoutingKey,
    pool: &Arc<BufPool>,
    hash: impl Fn(&[u8]) -> u64,
    mut owner: impl FnMut(u64) -> usize,
) -> Result<Vec<(usize, Batch)>, WireError> {
    let mut resources: Vec<Vec<u8>> = Vec::new();
    let mut scopes: Vec<Scope> = Vec::new();
    let mut runs: Vec<Run> = Vec::with_capacity(batch.items / 4 + 1);
    for (ci, chunk) in batch.chunks.iter().enumerate() {
        walk(
            chunk,
            ci as u32,
            by,
            &hash,
            &mut resources,
            &mut scopes,
            &mut runs,
        )?;
    }
    for r in runs.iter_mut() {
        r.owner = owner(r.key) as u32;
    }
    join_runs(&mut runs);
    let Some(first) = runs.first().map(|r| r.owner) else {
        return Ok(Vec::new());
    };
    if runs.iter().all(|r| r.owner == first) {
        return Ok(vec![(first as usize, batch.clone())]);
    }
    // Sizes first, for every owner at once, so each request is written once into a buffer
    // of its exact size.
    let owners = runs.iter().map(|r| r.owner as usize).max().unwrap_or(0) + 1;
    let (ns, nr) = (scopes.len(), resources.len());
    let mut scope_len = vec![0usize; owners * ns];
    let mut resource_len = vec![0usize; owners * nr];
    let mut items = vec![0usize; owners];
    for r in &runs {
        scope_len[r.owner as usize * ns + r.scope as usize] += r.len as usize;
        items[r.owner as usize] += r.spans as usize;
    }
    let mut total = vec![0usize; owners];
    for o in 0..owners {
        if items[o] == 0 {
            continue;
        }
        for (i, s) in scopes.iter().enumerate() {
            let l = &mut scope_len[o * ns + i];
            if *l > 0 {
                *l += s.fields.len();
                resource_len[o * nr + s.resource] += len_field_len(CHILDREN, *l);
            }
        }
        for (i, r) in resources.iter().enumerate() {
            let l = &mut resource_len[o * nr + i];
            if *l > 0 {
                *l += r.len();
                total[o] += len_field_len(REQUEST_RESOURCES, *l);
            }
        }
    }
    let mut outs: Vec<Out> = (0..owners)
        .map(|o| Out {
            buf: if items[o] > 0 {
                pool.take(total[o])
            } else {
                Vec::new()
            },
            items: items[o],
            resource: usize::MAX,
            scope: usize::MAX,
        })
        .collect();
    for r in &runs {
        let o = r.owner as usize;
        let out = &mut outs[o];
        let si = r.scope as usize;
        if si != out.scope {
            let ri = scopes[si].resource;
            if ri != out.resource {
                header(REQUEST_RESOURCES, resource_len[o * nr + ri], &mut out.buf);
                out.buf.extend_from_slice(&resources[ri]);
                out.resource = ri;
            }
            header(CHILDREN, scope_len[o * ns + si], &mut out.buf);
            out.buf.extend_from_slice(&scopes[si].fields);
            out.scope = si;
        }
        let start = r.start as usize;
        out.buf
            .extend_from_slice(&batch.chunks[r.chunk as usize][start..start + r.len as usize]);
    }
    let mut parts = Vec::with_capacity(owners);
    for (o, out) in outs.into_iter().enumerate() {
        if out.items == 0 {
            continue;
        }
        debug_assert_eq!(out.buf.len(), total[o]);
        let bytes = Bytes::from_owner(Pooled {
            buf: out.buf,
            pool: pool.clone(),
        });
        parts.push((o, batch.derive(bytes, out.items)));
    }
    Ok(parts)
}

fn header(field: u32, len: usize, out: &mut Vec<u8>) {
    encode_varint((u64::from(field) << 3) | u64::from(WIRE_LEN), out);
    encode_varint(len as u64, out);
}

/// Joins adjacent runs of one owner, scope and chunk whose bytes follow each other.
fn join_runs(runs: &mut Vec<Run>) {
    let mut kept = 0;
    for i in 0..runs.len() {
        let r = runs[i];
        if kept > 0 {
            let p = &mut runs[kept - 1];
            if p.owner == r.owner
                && p.scope == r.scope
                && p.chunk == r.chunk
                && p.start + p.len == r.start
            {
                p.len += r.len;
                p.spans += r.spans;
                continue;
            }
        }
        runs[kept] = r;
        kept += 1;
    }
    runs.truncate(kept);
}

/// Walks one encoded request, recording every span's routing key (hashed) in runs.
fn walk(
    chunk: &[u8],
    ci: u32,
    by: RoutingKey,
    hash: &impl Fn(&[u8]) -> u64,
    resources: &mut Vec<Vec<u8>>,
    scopes: &mut Vec<Scope>,
    runs: &mut Vec<Run>,
) -> Result<(), WireError> {
    // The last trace id hashed and its hash: a trace's spans usually come together.
    let mut last: Option<(&[u8], u64)> = None;
    let mut touched = 0;
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
        let service_key = match by {
            RoutingKey::Service => {
                let r = view::resource_of(&resource)?;
                let name = view::resource_attribute(r, "service.name")?
                    .map(|v| v.str())
                    .unwrap_or_default();
                Some(hash(name))
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
            // Runs of this scope start at `first_run`: only those may be extended.
            let first_run = runs.len();
            for span in ss.nested()? {
                let span = span?;
                if span.number != CHILDREN {
                    scopes[si].fields.extend_from_slice(&chunk[span.range()]);
                    continue;
                }
                // Reading the next spans' tags is what the walk waits on (the batch is
                // rarely still in cache): touching every cache line a little ahead of the
                // span walked starts those loads early, in order, so they overlap instead of
                // each stalling the walk in turn, and the copy finds the spans in cache.
                while touched < (span.end + TOUCH_AHEAD).min(chunk.len()) {
                    std::hint::black_box(chunk[touched]);
                    touched += 64;
                }
                let raw = span.expect_len()?;
                let key = match service_key {
                    Some(k) => k,
                    None => {
                        let id = trace_id(raw)?;
                        match last {
                            Some((k, h)) if same_key(k, id) => h,
                            _ => {
                                let h = hash(id);
                                last = Some((id, h));
                                h
                            }
                        }
                    }
                };
                let (start, end) = (span.start as u32, span.end as u32);
                if runs.len() > first_run {
                    let run = runs.last_mut().expect("a run of this scope");
                    if run.key == key && run.start + run.len == start {
                        run.len = end - run.start;
                        run.spans += 1;
                        continue;
                    }
                }
                runs.push(Run {
                    key,
                    owner: 0,
                    scope: si as u32,
                    chunk: ci,
                    start,
                    len: end - start,
                    spans: 1,
                });
            }
        }
    }
    Ok(())
}

/// `a == b`, without a call to `memcmp` for the usual 16-byte trace ids.
#[inline]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    match (<&[u8; 16]>::try_from(a), <&[u8; 16]>::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from_ne_bytes(*a) == u128::from_ne_bytes(*b),
        _ => a == b,
    }
}

/// The span's trace id (empty if absent: such spans all go to one backend). Encoders write
/// it first; the first occurrence is taken.
#[inline]
fn trace_id(raw: &[u8]) -> Result<&[u8], WireError> {
    // The usual shape, tag 1 with 16 bytes first, without the general walk.
    if raw.len() >= 18 && raw[0] == ((SPAN_TRACE_ID as u8) << 3 | WIRE_LEN) && raw[1] == 16 {
        return Ok(&raw[2..18]);
    }
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

    fn pool() -> Arc<BufPool> {
        Arc::default()
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

    /// Splits with `owner(key)` as the key's hash, so each key's owner is what the test says.
    fn split(
        b: &Batch,
        by: RoutingKey,
        pool: &Arc<BufPool>,
        owner: impl Fn(&[u8]) -> usize,
    ) -> Result<Vec<(usize, Batch)>, WireError> {
        split_traces(b, by, pool, |k| owner(k) as u64, |h| h as usize)
    }

    #[test]
    fn owners_are_found_from_key_hashes_and_runs_of_one_owner_joined() {
        // Every trace its own hash; owners by the hash's parity, so adjacent traces of one
        // owner are separate runs until joined.
        let b = batch(&request());
        let parts = split_traces(
            &b,
            RoutingKey::TraceId,
            &pool(),
            |k| u64::from(k[0]) * 10,
            |h| usize::from(h % 20 == 10),
        )
        .unwrap();
        let traces = by_trace(&parts);
        assert_eq!(traces.len(), 5);
        for (trace, spans) in &traces {
            assert!(spans.iter().all(|s| s.0 == usize::from(trace % 2 == 1)));
        }
        assert_eq!(parts.iter().map(|p| p.1.items).sum::<usize>(), 8);
        let mut runs = vec![
            Run {
                key: 1,
                owner: 0,
                scope: 0,
                chunk: 0,
                start: 0,
                len: 5,
                spans: 1,
            },
            Run {
                key: 2,
                owner: 0,
                scope: 0,
                chunk: 0,
                start: 5,
                len: 5,
                spans: 2,
            },
            Run {
                key: 3,
                owner: 1,
                scope: 0,
                chunk: 0,
                start: 10,
                len: 5,
                spans: 1,
            },
            Run {
                key: 4,
                owner: 1,
                scope: 1,
                chunk: 0,
                start: 15,
                len: 5,
                spans: 1,
            },
            Run {
                key: 5,
                owner: 1,
                scope: 1,
                chunk: 0,
                start: 21,
                len: 5,
                spans: 1,
            },
        ];
        join_runs(&mut runs);
        let joined: Vec<_> = runs
            .iter()
            .map(|r| (r.owner, r.start, r.len, r.spans))
            .collect();
        assert_eq!(
            joined,
            [(0, 0, 10, 3), (1, 10, 5, 1), (1, 15, 5, 1), (1, 21, 5, 1)]
        );
    }

    #[test]
    fn splits_by_trace_id_keeping_envelopes_and_acks() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut b = batch(&request());
        b.acks.push(Ack::new(move |ok| tx.send(ok).unwrap()));
        let parts = split(&b, RoutingKey::TraceId, &pool(), |k| (k[0] % 3) as usize).unwrap();
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
        let parts = split(&b, RoutingKey::TraceId, &pool(), |_| 4).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, 4);
        assert_eq!(parts[0].1.chunks[0], b.chunks[0]);
    }

    #[test]
    fn splits_by_service() {
        let b = batch(&request());
        let parts = split(&b, RoutingKey::Service, &pool(), |k| usize::from(k == b"b")).unwrap();
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
        let parts = split(&b, RoutingKey::TraceId, &pool(), |k| (k[0] % 2) as usize).unwrap();
        assert_eq!(parts.iter().map(|p| p.1.items).sum::<usize>(), 16);
        let bad = Batch::new(crate::otlp::Signal::Traces, vec![0x0a, 0x05, 1].into(), 1);
        assert!(split(&bad, RoutingKey::TraceId, &pool(), |_| 0).is_err());
    }

    #[test]
    fn a_second_owner_first_seen_in_a_later_chunk() {
        // The first chunks all go to owner 0; a later chunk has spans for owner 1, and many
        // chunks after it go to owner 1 only.
        let one = |t: u8| ExportTraceServiceRequest {
            resource_spans: vec![resource("a", vec![("s1", vec![span(t, 1), span(t, 2)])])],
        };
        let mut b = batch(&one(2));
        b.append(batch(&one(4)));
        b.append(batch(&request()));
        for _ in 0..300 {
            b.append(batch(&one(1)));
        }
        let owner = |k: &[u8]| usize::from(k[0] % 2 == 1);
        let parts = split(&b, RoutingKey::TraceId, &pool(), owner).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(|p| p.1.items).sum::<usize>(), 4 + 8 + 600);
        let traces = by_trace(&parts);
        for (trace, spans) in &traces {
            assert!(spans.iter().all(|s| s.0 == usize::from(trace % 2 == 1)));
        }
        assert_eq!(traces[&1].len(), 2 + 600);
        assert_eq!(traces[&2].len(), 2 + 3);
        assert_eq!(traces[&4].len(), 2 + 1);
        // Chunks of one owner throughout: passed as they are.
        let mut b = batch(&one(2));
        b.append(batch(&one(4)));
        let parts = split(&b, RoutingKey::TraceId, &pool(), owner).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1.chunks, b.chunks);
    }

    #[test]
    fn part_buffers_return_to_the_pool_and_are_reused() {
        let pool = pool();
        let b = batch(&request());
        let owner = |k: &[u8]| (k[0] % 3) as usize;
        let first = split(&b, RoutingKey::TraceId, &pool, owner).unwrap();
        let expected = by_trace(&first);
        let n = first.len();
        assert_eq!(pool.len(), 0);
        drop(first);
        assert_eq!(pool.len(), n);
        // Written again into the returned buffers: the same parts.
        let again = split(&b, RoutingKey::TraceId, &pool, owner).unwrap();
        assert_eq!(pool.len(), 0);
        assert_eq!(by_trace(&again), expected);
        drop(again);
        // Bounded: buffers past the limit are freed.
        for _ in 0..POOL_BUFFERS + 2 {
            pool.give(Vec::with_capacity(16));
        }
        assert_eq!(pool.len(), POOL_BUFFERS);
        pool.give(Vec::with_capacity(POOL_BYTES));
        assert_eq!(pool.len(), POOL_BUFFERS);
    }

    #[test]
    fn runs_do_not_cross_scope_fields_or_scopes() {
        // Spans of one trace in two scopes, with the scope's fields between spans.
        let mut req = request();
        req.resource_spans[0].scope_spans[1].spans[0].trace_id = vec![1; 16];
        req.resource_spans[0].scope_spans[1].spans[1].trace_id = vec![1; 16];
        let b = batch(&req);
        let parts = split(&b, RoutingKey::TraceId, &pool(), |k| usize::from(k[0] == 1)).unwrap();
        let traces = by_trace(&parts);
        assert_eq!(traces[&1].len(), 4);
        assert!(traces[&1].iter().all(|s| s.0 == 1));
        assert!(traces[&1].contains(&(1, "a".into(), "s2".into(), "s2-2".into(), "url-s2".into())));
        assert_eq!(parts.iter().map(|p| p.1.items).sum::<usize>(), 8);
    }
}
