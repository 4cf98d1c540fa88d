//! Pending traces, held compactly until they are decided. A trace is one byte buffer of span
//! records — the id of the resource+scope envelope the span came in, then the span exactly as
//! it was encoded — that is lz4-compressed in frames against a dictionary of recent spans, so a
//! pending span costs a fraction of its encoded size. Envelopes are interned: a span stores a
//! small id, not its resource and scope.

use std::collections::HashMap;
use std::sync::Arc;

use lz4_flex::block::{
    compress_into_with_dict, decompress_into_with_dict, get_maximum_output_size,
};

use crate::otlp::wire;

pub type TraceId = [u8; 16];

/// Bytes of recent spans that later spans are compressed against. lz4 matches reach back
/// 64 KiB, but every compression call hashes the whole dictionary first, so a few KiB that
/// hold each span shape once is the better trade (measured: see `bytes_per_pending_span`).
const DICT_BYTES: usize = 4096;
/// Spans compressed before the dictionary is rebuilt from current traffic.
const DICT_REFRESH_SPANS: u64 = 250_000;
/// What one pending trace costs besides its buffer: its map slot at the hash map's typical
/// load, and its entries in the decision queues. Counted so the byte budget bounds the whole
/// footprint, not just span bytes.
pub const TRACE_OVERHEAD: usize = 160;

/// The resource and scope a span was sent under: the encoded `ResourceSpans` fields other than
/// its scopes, then the encoded `ScopeSpans` fields other than its spans.
struct EnvelopeSlot {
    bytes: Option<Arc<[u8]>>,
    resource_len: usize,
    refs: u32,
}

/// Interned envelopes, reference-counted by the pending traces that hold spans under them.
#[derive(Default)]
pub struct Envelopes {
    ids: HashMap<Arc<[u8]>, u32>,
    slots: Vec<EnvelopeSlot>,
    free: Vec<u32>,
    key: Vec<u8>,
    bytes: usize,
}

impl Envelopes {
    /// The id of an envelope, with one reference taken for the caller.
    pub fn acquire(&mut self, resource: &[u8], scope: &[u8]) -> u32 {
        self.key.clear();
        self.key.extend_from_slice(resource);
        self.key.extend_from_slice(scope);
        if let Some(&id) = self.ids.get(self.key.as_slice()) {
            self.slots[id as usize].refs += 1;
            return id;
        }
        let bytes: Arc<[u8]> = Arc::from(self.key.as_slice());
        self.bytes += bytes.len() + 96;
        let slot = EnvelopeSlot {
            bytes: Some(bytes.clone()),
            resource_len: resource.len(),
            refs: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(bytes, id);
        id
    }

    pub fn retain(&mut self, id: u32) {
        if let Some(slot) = self.slots.get_mut(id as usize) {
            slot.refs += 1;
        }
    }

    pub fn release(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs == 0
            && let Some(bytes) = slot.bytes.take()
        {
            self.bytes = self.bytes.saturating_sub(bytes.len() + 96);
            self.ids.remove(&bytes);
            self.free.push(id);
        }
    }

    /// The encoded `ResourceSpans` fields other than `scope_spans`.
    pub fn resource(&self, id: u32) -> &[u8] {
        match self.slots.get(id as usize) {
            Some(EnvelopeSlot {
                bytes: Some(b),
                resource_len,
                ..
            }) => &b[..*resource_len],
            _ => &[],
        }
    }

    /// The encoded `ScopeSpans` fields other than `spans`.
    pub fn scope(&self, id: u32) -> &[u8] {
        match self.slots.get(id as usize) {
            Some(EnvelopeSlot {
                bytes: Some(b),
                resource_len,
                ..
            }) => &b[*resource_len..],
            _ => &[],
        }
    }

    pub fn live(&self) -> usize {
        self.ids.len()
    }
}

/// A compression dictionary; traces keep the one they were first compressed with.
pub struct Dict(Box<[u8]>);

/// One pending trace. Field order keeps the struct at 64 bytes.
pub struct PendingTrace {
    /// Compressed frames, each `raw_len`, `stored_len << 1 | lz4`, bytes; allocated to size.
    data: Box<[u8]>,
    dict: Option<Arc<Dict>>,
    /// Envelopes after the first; rare, so boxed: 8 bytes in every trace instead of 24.
    #[allow(clippy::box_collection)]
    more_envs: Option<Box<Vec<u32>>>,
    /// When the first span arrived, in ms since the sampler's epoch.
    pub arrived_ms: u64,
    /// Uncompressed size of all records.
    pub raw_size: u32,
    pub span_count: u32,
    /// Tells this trace apart from an older one with the same id in the decision queues.
    pub seq: u32,
    first_env: u32,
    /// Index into the store's `touched` while it has records staged in this batch.
    touched: u32,
    pub has_root: bool,
}

const NO_ENV: u32 = u32::MAX;
const NOT_TOUCHED: u32 = u32::MAX;

impl PendingTrace {
    fn footprint(&self) -> usize {
        TRACE_OVERHEAD
            + self.data.len()
            + self.more_envs.as_ref().map_or(0, |v| 32 + v.capacity() * 4)
    }

    /// The envelopes this trace holds spans under, in first-seen order.
    pub fn envs(&self) -> impl Iterator<Item = u32> + '_ {
        let first = (self.first_env != NO_ENV).then_some(self.first_env);
        first
            .into_iter()
            .chain(self.more_envs.iter().flat_map(|v| v.iter().copied()))
    }

    /// Adds `env` to the trace's envelopes; true if it was new to the trace.
    fn add_env(&mut self, env: u32) -> bool {
        if self.first_env == env {
            return false;
        }
        if self.first_env == NO_ENV {
            self.first_env = env;
            return true;
        }
        let more = self.more_envs.get_or_insert_with(Default::default);
        if more.contains(&env) {
            return false;
        }
        more.push(env);
        true
    }

    /// Bytes of compressed frames this trace holds.
    pub fn stored_len(&self) -> usize {
        self.data.len()
    }
}

/// The span records of a decoded trace: `(envelope id, encoded span)`.
pub struct Records<'a> {
    buf: &'a [u8],
}

impl<'a> Records<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Records { buf }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let parsed = (|| {
            let (env, a) = wire::decode_varint(self.buf).ok()?;
            let (len, b) = wire::decode_varint(self.buf.get(a..)?).ok()?;
            let start = a + b;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            let span = self.buf.get(start..end)?;
            Some((u32::try_from(env).ok()?, span, end))
        })();
        match parsed {
            Some((env, span, end)) => {
                self.buf = &self.buf[end..];
                Some((env, span))
            }
            None => {
                // Only our own writer produces records, so this is a bug; stop rather than
                // read garbage.
                self.buf = &[];
                None
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt pending-trace buffer")]
pub struct CorruptTrace;

/// All pending traces by id, with the byte accounting the sampler's bounds use.
///
/// Records appended during one input batch go to a staging buffer that lives as long as the
/// store; `compress_touched` then gives each touched trace one new frame in one exact-size
/// allocation. Growing every trace's own buffer span by span would leave a trail of freed
/// blocks between long-lived ones, which the allocator cannot give back (measured: resident
/// memory grew by four times the accounted bytes).
pub struct TraceStore {
    traces: HashMap<TraceId, PendingTrace>,
    pub envelopes: Envelopes,
    dict: Option<Arc<Dict>>,
    spans_since_dict: u64,
    /// Traces with staged records, by their `touched` index: (id, seq).
    touched: Vec<(TraceId, u32)>,
    staging: Vec<u8>,
    /// Staged records: (touched index, start, end) in `staging`.
    staged: Vec<(u32, u32, u32)>,
    /// Sum of the traces' footprints.
    trace_bytes: usize,
    spans: usize,
    gather: Vec<u8>,
    scratch: Vec<u8>,
    dict_bytes: usize,
}

impl Default for TraceStore {
    fn default() -> Self {
        TraceStore::with_dict_bytes(DICT_BYTES)
    }
}

impl TraceStore {
    /// A store whose compression dictionary holds `dict_bytes` (0: no dictionary).
    pub fn with_dict_bytes(dict_bytes: usize) -> Self {
        TraceStore {
            traces: HashMap::new(),
            envelopes: Envelopes::default(),
            dict: None,
            spans_since_dict: 0,
            touched: Vec::new(),
            staging: Vec::new(),
            staged: Vec::new(),
            trace_bytes: 0,
            spans: 0,
            gather: Vec::new(),
            scratch: Vec::new(),
            dict_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.traces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// Pending spans over all traces.
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// What pending traces hold: compressed frames, per-trace overhead, records staged in this
    /// batch, envelopes and the dictionary.
    pub fn held_bytes(&self) -> usize {
        self.trace_bytes
            + self.staging.len()
            + self.envelopes.bytes
            + self.dict.as_ref().map_or(0, |d| d.0.len())
    }

    pub fn get(&self, id: &TraceId) -> Option<&PendingTrace> {
        self.traces.get(id)
    }

    pub fn get_mut(&mut self, id: &TraceId) -> Option<&mut PendingTrace> {
        self.traces.get_mut(id)
    }

    /// Starts a trace (the caller checked it is absent).
    pub fn insert(&mut self, id: TraceId, arrived_ms: u64, seq: u32) {
        let trace = PendingTrace {
            data: Box::default(),
            dict: None,
            more_envs: None,
            arrived_ms,
            raw_size: 0,
            span_count: 0,
            seq,
            first_env: NO_ENV,
            touched: NOT_TOUCHED,
            has_root: false,
        };
        self.trace_bytes += trace.footprint();
        if let Some(old) = self.traces.insert(id, trace) {
            self.forget(&old);
        }
    }

    /// Appends one span, held under `env` (the caller holds a reference to it that this
    /// function does not consume). Returns the trace's new uncompressed size.
    pub fn append(&mut self, id: &TraceId, env: u32, span: &[u8]) -> Option<u32> {
        let trace = self.traces.get_mut(id)?;
        let before = trace.footprint();
        if trace.add_env(env) {
            self.envelopes.retain(env);
        }
        if trace.touched == NOT_TOUCHED {
            trace.touched = self.touched.len() as u32;
            self.touched.push((*id, trace.seq));
        }
        let start = self.staging.len();
        wire::encode_varint(u64::from(env), &mut self.staging);
        wire::encode_varint(span.len() as u64, &mut self.staging);
        self.staging.extend_from_slice(span);
        let end = self.staging.len();
        self.staged.push((trace.touched, start as u32, end as u32));
        trace.raw_size = trace
            .raw_size
            .saturating_add(u32::try_from(end - start).unwrap_or(u32::MAX));
        trace.span_count += 1;
        let raw_size = trace.raw_size;
        self.trace_bytes = self.trace_bytes + trace.footprint() - before;
        self.spans += 1;
        Some(raw_size)
    }

    /// Compresses what the traces appended since the last call, one frame per trace. Called
    /// once per input batch, so the records of a trace that arrive together are compressed
    /// together.
    pub fn compress_touched(&mut self) {
        if self.staged.is_empty() {
            self.touched.clear();
            return;
        }
        // Stable: each trace's records stay in arrival order.
        self.staged.sort_by_key(|s| s.0);
        if self.dict_bytes > 0
            && (self.dict.is_none() || self.spans_since_dict >= DICT_REFRESH_SPANS)
        {
            self.rebuild_dict();
        }
        let staged = std::mem::take(&mut self.staged);
        for group in staged.chunk_by(|a, b| a.0 == b.0) {
            let index = group[0].0;
            let (id, seq) = self.touched[index as usize];
            let Some(trace) = self.traces.get_mut(&id) else {
                continue;
            };
            if trace.seq != seq || trace.touched != index {
                continue;
            }
            trace.touched = NOT_TOUCHED;
            self.gather.clear();
            for &(_, start, end) in group {
                self.gather
                    .extend_from_slice(&self.staging[start as usize..end as usize]);
            }
            let before = trace.footprint();
            self.spans_since_dict += group.len() as u64;
            append_frame(trace, &self.gather, &self.dict, &mut self.scratch);
            self.trace_bytes = self.trace_bytes + trace.footprint() - before;
        }
        self.staged = staged;
        self.staged.clear();
        self.staging.clear();
        self.touched.clear();
    }

    /// The dictionary: the first records of the traces touched in this batch, a few from each,
    /// so it holds the span shapes of several services rather than many copies of one.
    fn rebuild_dict(&mut self) {
        let max = self.dict_bytes;
        let per_trace = max / 4;
        let mut dict = Vec::with_capacity(max);
        for group in self.staged.chunk_by(|a, b| a.0 == b.0) {
            let mut taken = 0;
            for &(_, start, end) in group {
                let record = &self.staging[start as usize..end as usize];
                let take = record.len().min(per_trace - taken).min(max - dict.len());
                dict.extend_from_slice(&record[..take]);
                taken += take;
                if taken >= per_trace || dict.len() >= max {
                    break;
                }
            }
            if dict.len() >= max {
                break;
            }
        }
        if dict.len() < 64 {
            return;
        }
        self.dict = Some(Arc::new(Dict(dict.into_boxed_slice())));
        self.spans_since_dict = 0;
    }

    /// Removes a trace; its records stay readable with [`TraceStore::decode`] until the next
    /// `compress_touched`, and its envelopes stay interned until [`TraceStore::release`].
    pub fn remove(&mut self, id: &TraceId) -> Option<PendingTrace> {
        let trace = self.traces.remove(id)?;
        self.forget(&trace);
        Some(trace)
    }

    fn forget(&mut self, trace: &PendingTrace) {
        self.trace_bytes = self.trace_bytes.saturating_sub(trace.footprint());
        self.spans = self.spans.saturating_sub(trace.span_count as usize);
    }

    /// Drops the removed trace's references to its envelopes.
    pub fn release(&mut self, trace: PendingTrace) {
        for env in trace.envs() {
            self.envelopes.release(env);
        }
    }

    /// Appends the trace's records, uncompressed and in arrival order, to `out`.
    pub fn decode(&self, trace: &PendingTrace, out: &mut Vec<u8>) -> Result<(), CorruptTrace> {
        let dict: &[u8] = trace.dict.as_deref().map_or(&[], |d| &d.0);
        let frames = &trace.data[..];
        let mut pos = 0;
        while pos < frames.len() {
            let (raw_len, a) = wire::decode_varint(&frames[pos..]).map_err(|_| CorruptTrace)?;
            pos += a;
            let (stored, b) = wire::decode_varint(&frames[pos..]).map_err(|_| CorruptTrace)?;
            pos += b;
            let len = usize::try_from(stored >> 1).map_err(|_| CorruptTrace)?;
            let raw_len = usize::try_from(raw_len).map_err(|_| CorruptTrace)?;
            let body = frames.get(pos..pos + len).ok_or(CorruptTrace)?;
            pos += len;
            if stored & 1 == 1 {
                let start = out.len();
                out.resize(start + raw_len, 0);
                let n = decompress_into_with_dict(body, &mut out[start..], dict)
                    .map_err(|_| CorruptTrace)?;
                if n != raw_len {
                    return Err(CorruptTrace);
                }
            } else {
                out.extend_from_slice(body);
            }
        }
        if trace.touched != NOT_TOUCHED {
            for &(index, start, end) in &self.staged {
                if index == trace.touched {
                    out.extend_from_slice(&self.staging[start as usize..end as usize]);
                }
            }
        }
        Ok(())
    }
}

/// Compresses `records` into one more frame of the trace (kept as they are when lz4 would
/// not make them smaller), reallocating the trace's buffer to its exact new size.
fn append_frame(
    trace: &mut PendingTrace,
    records: &[u8],
    current: &Option<Arc<Dict>>,
    scratch: &mut Vec<u8>,
) {
    if records.is_empty() {
        return;
    }
    if trace.dict.is_none() {
        trace.dict = current.clone();
    }
    let dict: &[u8] = trace.dict.as_deref().map_or(&[], |d| &d.0);
    scratch.clear();
    scratch.resize(get_maximum_output_size(records.len()), 0);
    let (body, flag) = match compress_into_with_dict(records, scratch, dict) {
        Ok(n) if n < records.len() => (&scratch[..n], 1),
        _ => (records, 0),
    };
    let raw_len = records.len() as u64;
    let stored = ((body.len() as u64) << 1) | flag;
    let mut data = Vec::with_capacity(
        trace.data.len() + wire::varint_len(raw_len) + wire::varint_len(stored) + body.len(),
    );
    data.extend_from_slice(&trace.data);
    wire::encode_varint(raw_len, &mut data);
    wire::encode_varint(stored, &mut data);
    data.extend_from_slice(body);
    trace.data = data.into_boxed_slice();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        [n; 16]
    }

    fn records(store: &TraceStore, id: &TraceId) -> Vec<(u32, Vec<u8>)> {
        let mut buf = Vec::new();
        store.decode(store.get(id).unwrap(), &mut buf).unwrap();
        Records::new(&buf).map(|(e, s)| (e, s.to_vec())).collect()
    }

    #[test]
    fn records_survive_compression_in_several_frames() {
        let mut store = TraceStore::default();
        let env = store.envelopes.acquire(b"res", b"scope");
        store.insert(id(1), 0, 0);
        let span = |i: u8| vec![i; 100 + i as usize];
        for i in 0..3 {
            store.append(&id(1), env, &span(i));
        }
        store.compress_touched();
        for i in 3..5 {
            store.append(&id(1), env, &span(i));
        }
        let got = records(&store, &id(1));
        assert_eq!(got.len(), 5);
        for (i, (e, s)) in got.iter().enumerate() {
            assert_eq!(*e, env);
            assert_eq!(s, &span(i as u8));
        }
        store.compress_touched();
        assert_eq!(records(&store, &id(1)).len(), 5);
        assert!(store.get(&id(1)).unwrap().stored_len() < 5 * 100);
    }

    #[test]
    fn envelopes_are_shared_and_freed_with_their_last_trace() {
        let mut store = TraceStore::default();
        let a = store.envelopes.acquire(b"r", b"s");
        let b = store.envelopes.acquire(b"r", b"s");
        assert_eq!(a, b);
        store.insert(id(1), 0, 0);
        store.insert(id(2), 0, 1);
        store.append(&id(1), a, b"x");
        store.append(&id(2), a, b"y");
        store.envelopes.release(a);
        store.envelopes.release(b);
        assert_eq!(store.envelopes.live(), 1);
        let t1 = store.remove(&id(1)).unwrap();
        store.release(t1);
        assert_eq!(store.envelopes.resource(a), b"r");
        let t2 = store.remove(&id(2)).unwrap();
        store.release(t2);
        assert_eq!(store.envelopes.live(), 0);
        store.compress_touched();
        assert_eq!(store.held_bytes(), 0);
    }

    /// Stored bytes per pending loadgen span for several dictionary sizes, and the time it
    /// takes. Run: `cargo test --release --lib dict_sizes -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn dict_sizes() {
        use crate::loadgen::{Options, generate};
        use rand::SeedableRng;
        let o = Options::default();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let batches: Vec<Vec<u8>> = (0..500).map(|_| generate(&o, 100, &mut rng)).collect();
        let raw: usize = batches.iter().map(Vec::len).sum();
        for dict_bytes in [0, 1024, 2048, 4096, 8192, 16384] {
            let mut store = TraceStore::with_dict_bytes(dict_bytes);
            let env = store.envelopes.acquire(b"r", b"s");
            let started = std::time::Instant::now();
            let mut seq = 0;
            for b in &batches {
                wire::for_each_span(b, |s| {
                    let mut tid = [0u8; 16];
                    tid.copy_from_slice(s.trace_id());
                    if store.get(&tid).is_none() {
                        store.insert(tid, 0, seq);
                        seq += 1;
                    }
                    store.append(&tid, env, s.raw());
                })
                .unwrap();
                store.compress_touched();
            }
            let took = started.elapsed();
            let stored: usize = store.traces.values().map(|t| t.data.len()).sum();
            println!(
                "dict {dict_bytes:>5}: raw request {:.0} B/span, stored {:.1} B/span, held {:.1} B/span, {:.2} us/span",
                raw as f64 / store.spans() as f64,
                stored as f64 / store.spans() as f64,
                store.held_bytes() as f64 / store.spans() as f64,
                took.as_secs_f64() * 1e6 / store.spans() as f64
            );
        }
    }
}
