//! The `tail_sampling` processor: holds each trace's spans until `decision_wait` after its
//! first span, then keeps or drops the whole trace by the collector's policies. Spans stay
//! encoded and lz4-compressed while they wait (`store`), policies read them in the wire format
//! (`view`, `policy`), and decisions are remembered for spans that arrive late (`cache`).

pub mod cache;
pub mod config;
pub mod output;
pub mod policy;
pub mod store;
pub mod view;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cache::DecisionCache;
use config::TailSamplingConfig;
use output::{OutputBuilder, Slot};
use policy::{Clock, Decision, Policies, TraceView};
use store::{PendingTrace, Records, TraceId, TraceStore};
use view::SpanFacts;

use crate::otlp::Batch;
use crate::otlp::wire::{self, WireError};
use crate::telemetry::{Counter, Gauge, Histogram, Registry};

/// Decisions are made at most this often, so a steady stream of traces wakes the pipeline
/// ten times a second rather than once per trace; a trace waits `decision_wait` plus at most
/// this long.
const DECISION_TICK: Duration = Duration::from_millis(100);

const REQUEST_RESOURCES: u32 = 1;
const CHILDREN: u32 = 2;

/// A trace waiting for its decision at `due_ms`; `seq` tells it from a later trace that
/// reused the id after this one was decided.
#[derive(Clone, Copy)]
struct Due {
    due_ms: u64,
    seq: u32,
    id: TraceId,
}

#[derive(Clone, Copy, Debug)]
enum EarlyReason {
    NumTraces,
    MaxPendingBytes,
}

pub struct TailSampler {
    config: TailSamplingConfig,
    policies: Policies,
    store: TraceStore,
    sampled: DecisionCache,
    not_sampled: DecisionCache,
    /// Traces by first arrival: the order of their `decision_wait` deadlines and of eviction.
    arrivals: VecDeque<Due>,
    /// Earlier deadlines of traces whose root span arrived (`decision_wait_after_root_received`).
    root_due: VecDeque<Due>,
    next_seq: u32,
    /// Times are kept as ms since the first `now` this sampler saw.
    epoch: Option<Instant>,
    last_tick_ms: u64,
    wait_ms: u64,
    root_wait_ms: u64,
    output: OutputBuilder,
    records: Vec<u8>,
    metrics: Metrics,
}

struct Metrics {
    /// Per policy (in `Policies::list` order): sampled, not sampled, dropped.
    per_policy: Vec<[Counter; 3]>,
    global: [Counter; 3],
    /// Exported for dashboards built on the collector; sluice decides such traces early
    /// (`early_*`) rather than dropping them, so it stays 0.
    _dropped_too_early: Counter,
    dropped_too_large: Counter,
    new_traces: Counter,
    evaluation_errors: Counter,
    early_releases_sampled: Counter,
    early_releases_not_sampled: Counter,
    decision_latency: Histogram,
    late_span_age: Histogram,
    traces_on_memory: Gauge,
    pending_bytes: Gauge,
    pending_spans: Gauge,
    early_num_traces: Counter,
    early_max_pending_bytes: Counter,
    dropped_on_shutdown: Counter,
    malformed_spans: Counter,
}

const LATENCY_BUCKETS_US: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 750.0, 1000.0,
    2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 50000.0,
];
const LATE_AGE_BUCKETS_S: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

impl Metrics {
    fn new(id: &str, policy_names: &[String], registry: &Registry) -> Metrics {
        let p = [("processor", id)];
        let counter = |name: &str, help: &'static str| registry.counter(name, help, &p);
        // As the collector: `tail_sampling/foo` reports policies as `foo.<policy>`.
        let prefix = id.split_once('/').map(|(_, n)| format!("{n}."));
        let kinds = [
            ("true", "sampled"),
            ("false", "not_sampled"),
            ("false", "dropped"),
        ];
        let per_policy = policy_names
            .iter()
            .map(|name| {
                let policy = format!("{}{name}", prefix.as_deref().unwrap_or(""));
                kinds.map(|(sampled, decision)| {
                    registry.counter(
                        "otelcol_processor_tail_sampling_count_traces_sampled_total",
                        "Count of traces that were sampled or not per sampling policy.",
                        &[
                            ("processor", id),
                            ("policy", &policy),
                            ("sampled", sampled),
                            ("decision", decision),
                        ],
                    )
                })
            })
            .collect();
        let global = kinds.map(|(sampled, decision)| {
            registry.counter(
                "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
                "Global count of traces sampled by at least one policy.",
                &[
                    ("processor", id),
                    ("sampled", sampled),
                    ("decision", decision),
                ],
            )
        });
        let release = |sampled: &str| {
            registry.counter(
                "otelcol_processor_tail_sampling_early_releases_from_cache_decision_total",
                "Number of spans that were released early because of a remembered decision.",
                &[("processor", id), ("sampled", sampled)],
            )
        };
        let early = |reason: &str| {
            registry.counter(
                "sluice_processor_tail_sampling_early_decisions_total",
                "Traces decided before decision_wait because num_traces or max_pending_bytes was reached.",
                &[("processor", id), ("reason", reason)],
            )
        };
        Metrics {
            per_policy,
            global,
            _dropped_too_early: counter(
                "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total",
                "Count of traces dropped before a decision; sluice decides them early instead, so this stays 0.",
            ),
            dropped_too_large: counter(
                "otelcol_processor_tail_sampling_traces_dropped_too_large_total",
                "Count of traces dropped because they were larger than maximum_trace_size_bytes.",
            ),
            new_traces: counter(
                "otelcol_processor_tail_sampling_new_trace_id_received_total",
                "Counts the arrival of new traces.",
            ),
            evaluation_errors: counter(
                "otelcol_processor_tail_sampling_sampling_policy_evaluation_error_total",
                "Count of sampling policy evaluation errors.",
            ),
            early_releases_sampled: release("true"),
            early_releases_not_sampled: release("false"),
            decision_latency: registry.histogram(
                "otelcol_processor_tail_sampling_sampling_decision_latency",
                "Latency (in microseconds) of evaluating the policies for one trace.",
                &p,
                LATENCY_BUCKETS_US,
            ),
            late_span_age: registry.histogram(
                "otelcol_processor_tail_sampling_sampling_late_span_age",
                "Time (in seconds) from the sampling decision to the arrival of a late span.",
                &p,
                LATE_AGE_BUCKETS_S,
            ),
            traces_on_memory: registry.gauge(
                "otelcol_processor_tail_sampling_sampling_traces_on_memory",
                "Tracks the number of traces pending a decision.",
                &p,
            ),
            pending_bytes: registry.gauge(
                "sluice_processor_tail_sampling_pending_bytes",
                "Bytes held by pending traces (compressed spans plus per-trace overhead).",
                &p,
            ),
            pending_spans: registry.gauge(
                "sluice_processor_tail_sampling_pending_spans",
                "Spans held by pending traces.",
                &p,
            ),
            early_num_traces: early("num_traces"),
            early_max_pending_bytes: early("max_pending_bytes"),
            dropped_on_shutdown: counter(
                "sluice_processor_tail_sampling_dropped_on_shutdown_total",
                "Pending traces dropped undecided at shutdown (drop_pending_traces_on_shutdown).",
            ),
            malformed_spans: counter(
                "sluice_processor_tail_sampling_undecidable_spans_total",
                "Spans passed on without a decision because their trace id could not be read.",
            ),
        }
    }
}

impl TailSampler {
    pub fn new(config: TailSamplingConfig, id: &str, registry: &Registry) -> TailSampler {
        let policies = Policies::new(&config.policies, config.sample_on_first_match);
        let names: Vec<String> = policies.list.iter().map(|p| p.name.clone()).collect();
        let metrics = Metrics::new(id, &names, registry);
        // The collector's trace ring keeps decided traces (and so their decisions) until
        // `num_traces` newer ones push them out; remembering at least that many decisions of
        // each kind keeps late spans on their trace's decision for as long.
        let ring = config.num_traces as usize;
        let sampled = DecisionCache::new(config.decision_cache.sampled_cache_size.max(ring));
        let not_sampled =
            DecisionCache::new(config.decision_cache.non_sampled_cache_size.max(ring));
        let wait_ms = config.decision_wait.as_millis() as u64;
        let root_wait_ms = config.decision_wait_after_root_received.as_millis() as u64;
        TailSampler {
            policies,
            store: TraceStore::default(),
            sampled,
            not_sampled,
            arrivals: VecDeque::new(),
            root_due: VecDeque::new(),
            next_seq: 0,
            epoch: None,
            last_tick_ms: 0,
            wait_ms,
            root_wait_ms,
            output: OutputBuilder::default(),
            records: Vec::new(),
            metrics,
            config,
        }
    }

    fn ms(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_millis() as u64
    }

    fn clock(&self, now: Instant, now_ms: u64) -> Clock {
        Clock {
            now,
            second: now_ms / 1000,
        }
    }

    pub fn process(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        let now_ms = self.ms(now);
        for chunk in &batch.chunks {
            if let Err(e) = self.ingest(chunk, now, now_ms, out) {
                // Receivers validate requests down to the spans, so this is not client input.
                tracing::error!(error = %e, "Malformed trace request in tail_sampling; the rest of it is dropped.");
            }
        }
        self.store.compress_touched();
        while self.store.held_bytes() as u64 > self.config.max_pending_bytes {
            if !self.decide_oldest(EarlyReason::MaxPendingBytes, now, now_ms, out) {
                break;
            }
        }
        self.output.finish_into(out);
        self.update_gauges();
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        let now_ms = self.ms(now);
        self.last_tick_ms = now_ms;
        while let Some(d) = self.root_due.front().copied() {
            if d.due_ms > now_ms {
                break;
            }
            self.root_due.pop_front();
            if self.store.get(&d.id).is_some_and(|t| t.seq == d.seq) {
                self.decide(&d.id, now, now_ms, out);
            }
        }
        while let Some(d) = self.arrivals.front().copied() {
            let live = self.store.get(&d.id).is_some_and(|t| t.seq == d.seq);
            if live && d.due_ms > now_ms {
                break;
            }
            self.arrivals.pop_front();
            if live {
                self.decide(&d.id, now, now_ms, out);
            }
        }
        self.output.finish_into(out);
        self.update_gauges();
    }

    /// At shutdown: decides every pending trace on what it has (or drops them all with
    /// `drop_pending_traces_on_shutdown`), oldest first.
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Batch>) {
        let now_ms = self.ms(now);
        while let Some(d) = self.arrivals.pop_front() {
            if self.store.get(&d.id).is_none_or(|t| t.seq != d.seq) {
                continue;
            }
            if self.config.drop_pending_traces_on_shutdown {
                if let Some(t) = self.store.remove(&d.id) {
                    self.store.release(t);
                    self.metrics.dropped_on_shutdown.add(1);
                }
            } else {
                self.decide(&d.id, now, now_ms, out);
            }
        }
        self.root_due.clear();
        self.output.finish_into(out);
        self.update_gauges();
    }

    /// When the next pending trace is due, no sooner than one decision tick after the last.
    pub fn next_deadline(&self) -> Option<Instant> {
        let epoch = self.epoch?;
        let due = [self.arrivals.front(), self.root_due.front()]
            .into_iter()
            .flatten()
            .map(|d| d.due_ms)
            .min()?;
        let due = due.max(self.last_tick_ms + DECISION_TICK.as_millis() as u64);
        Some(epoch + Duration::from_millis(due))
    }

    pub fn pending_traces(&self) -> usize {
        self.store.len()
    }

    pub fn pending_spans(&self) -> usize {
        self.store.spans()
    }

    pub fn pending_bytes(&self) -> usize {
        self.store.held_bytes()
    }

    fn update_gauges(&self) {
        self.metrics.traces_on_memory.set(self.store.len() as i64);
        self.metrics
            .pending_bytes
            .set(self.store.held_bytes() as i64);
        self.metrics.pending_spans.set(self.store.spans() as i64);
    }

    /// Routes every span of one encoded request.
    fn ingest(
        &mut self,
        chunk: &[u8],
        now: Instant,
        now_ms: u64,
        out: &mut Vec<Batch>,
    ) -> Result<(), WireError> {
        let mut resource_env = Vec::new();
        let mut scope_env = Vec::new();
        for rs in wire::fields(chunk) {
            let rs = rs?;
            if rs.number != REQUEST_RESOURCES {
                continue;
            }
            resource_env.clear();
            for f in rs.nested()? {
                let f = f?;
                if f.number != CHILDREN {
                    resource_env.extend_from_slice(&chunk[f.range()]);
                }
            }
            for ss in rs.nested()? {
                let ss = ss?;
                if ss.number != CHILDREN {
                    continue;
                }
                scope_env.clear();
                for f in ss.nested()? {
                    let f = f?;
                    if f.number != CHILDREN {
                        scope_env.extend_from_slice(&chunk[f.range()]);
                    }
                }
                let mut scope = ScopeState::default();
                let result = (|| {
                    for span in ss.nested()? {
                        let span = span?;
                        if span.number == CHILDREN {
                            let raw = span.expect_len()?;
                            self.route(
                                raw,
                                &resource_env,
                                &scope_env,
                                &mut scope,
                                now,
                                now_ms,
                                out,
                            );
                        }
                    }
                    Ok(())
                })();
                if let Some(env) = scope.env {
                    self.store.envelopes.release(env);
                }
                result?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        raw: &[u8],
        resource_env: &[u8],
        scope_env: &[u8],
        scope: &mut ScopeState,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<Batch>,
    ) {
        let Some((id, is_root)) = view::span_key(raw)
            .ok()
            .and_then(|(tid, root)| Some((TraceId::try_from(tid).ok()?, root)))
        else {
            // Without a readable 16-byte trace id there is no trace to decide on; pass the
            // span on rather than lose it.
            self.metrics.malformed_spans.add(1);
            self.forward(raw, resource_env, scope_env, scope, out);
            return;
        };
        if self.store.get(&id).is_none() {
            if let Some(r) = self.sampled.get(&id) {
                self.late_span(r.decided_ms, now_ms);
                self.metrics.early_releases_sampled.add(1);
                self.forward(raw, resource_env, scope_env, scope, out);
                return;
            }
            if let Some(r) = self.not_sampled.get(&id) {
                self.late_span(r.decided_ms, now_ms);
                self.metrics.early_releases_not_sampled.add(1);
                return;
            }
            while self.store.len() as u64 >= self.config.num_traces {
                if !self.decide_oldest(EarlyReason::NumTraces, now, now_ms, out) {
                    break;
                }
            }
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            self.store.insert(id, now_ms, seq);
            self.arrivals.push_back(Due {
                due_ms: now_ms + self.wait_ms,
                seq,
                id,
            });
            self.metrics.new_traces.add(1);
        }
        let env = match scope.env {
            Some(env) => env,
            None => {
                let env = self.store.envelopes.acquire(resource_env, scope_env);
                scope.env = Some(env);
                env
            }
        };
        let Some(size) = self.store.append(&id, env, raw) else {
            return;
        };
        if is_root && self.root_wait_ms > 0 {
            self.root_arrived(&id, now_ms);
        }
        if self.config.maximum_trace_size_bytes > 0
            && u64::from(size) > self.config.maximum_trace_size_bytes
        {
            // As the collector: an oversized trace is not sampled, and its later spans follow.
            if let Some(t) = self.store.remove(&id) {
                self.not_sampled.put(id, None, now_ms);
                self.store.release(t);
                self.metrics.dropped_too_large.add(1);
                self.metrics.global[1].add(1);
            }
        }
    }

    /// With `decision_wait_after_root_received`, a root span brings the decision forward,
    /// never back.
    fn root_arrived(&mut self, id: &TraceId, now_ms: u64) {
        let wait = self.wait_ms;
        let root_wait = self.root_wait_ms;
        let Some(trace) = self.store.get_mut(id) else {
            return;
        };
        if trace.has_root {
            return;
        }
        trace.has_root = true;
        let due_ms = now_ms + root_wait;
        if due_ms < trace.arrived_ms + wait {
            let seq = trace.seq;
            self.root_due.push_back(Due {
                due_ms,
                seq,
                id: *id,
            });
        }
    }

    fn late_span(&self, decided_ms: u64, now_ms: u64) {
        self.metrics
            .late_span_age
            .record(now_ms.saturating_sub(decided_ms) / 1000);
    }

    /// Passes one incoming span on as it came.
    fn forward(
        &mut self,
        raw: &[u8],
        resource_env: &[u8],
        scope_env: &[u8],
        scope: &mut ScopeState,
        out: &mut Vec<Batch>,
    ) {
        let slot = match scope.slot {
            Some(s) if self.output.is_valid(s) => s,
            _ => {
                let s = self.output.slot(resource_env, scope_env);
                scope.slot = Some(s);
                s
            }
        };
        self.output.push(slot, raw);
        if self.output.is_full() {
            self.output.finish_into(out);
        }
    }

    /// Decides the oldest pending trace now; false if there is none.
    fn decide_oldest(
        &mut self,
        reason: EarlyReason,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<Batch>,
    ) -> bool {
        while let Some(d) = self.arrivals.pop_front() {
            if self.store.get(&d.id).is_some_and(|t| t.seq == d.seq) {
                match reason {
                    EarlyReason::NumTraces => self.metrics.early_num_traces.add(1),
                    EarlyReason::MaxPendingBytes => self.metrics.early_max_pending_bytes.add(1),
                }
                self.decide(&d.id, now, now_ms, out);
                return true;
            }
        }
        false
    }

    /// Runs the policies over a pending trace and releases it: kept spans go to the output,
    /// and the decision is remembered for late spans.
    fn decide(&mut self, id: &TraceId, now: Instant, now_ms: u64, out: &mut Vec<Batch>) {
        let Some(trace) = self.store.remove(id) else {
            return;
        };
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        if self.store.decode(&trace, &mut records).is_err() {
            tracing::error!("Corrupt pending trace in tail_sampling; it is dropped.");
            self.store.release(trace);
            self.records = records;
            return;
        }
        let clock = self.clock(now, now_ms);
        let started = Instant::now();
        let outcome = self.evaluate(id, &trace, &records, clock);
        self.metrics
            .decision_latency
            .record(started.elapsed().as_micros() as u64);
        let kind = match outcome.decision {
            Decision::Sampled => 0,
            Decision::Dropped => 2,
            _ => 1,
        };
        self.metrics.global[kind].add(1);
        if kind == 0 {
            self.sampled.put(*id, outcome.policy, now_ms);
            let mut slots: Vec<(u32, Slot)> = Vec::new();
            for (env, span) in Records::new(&records) {
                let slot = match slots.iter().find(|(e, _)| *e == env) {
                    Some((_, s)) => *s,
                    None => {
                        let s = self.output.slot(
                            self.store.envelopes.resource(env),
                            self.store.envelopes.scope(env),
                        );
                        slots.push((env, s));
                        s
                    }
                };
                self.output.push(slot, span);
            }
            if self.output.is_full() {
                self.output.finish_into(out);
            }
        } else {
            self.not_sampled.put(*id, outcome.policy, now_ms);
        }
        self.store.release(trace);
        self.records = records;
    }

    fn evaluate(
        &mut self,
        id: &TraceId,
        trace: &PendingTrace,
        records: &[u8],
        clock: Clock,
    ) -> policy::Outcome {
        let mut spans = Vec::with_capacity(trace.span_count as usize);
        for (_, raw) in Records::new(records) {
            // A span whose known fields have the wrong wire type is still in the trace; the
            // policies that read it see defaults, and attribute lookups report the error.
            spans.push(SpanFacts::parse(raw).unwrap_or(SpanFacts {
                raw,
                ..SpanFacts::default()
            }));
        }
        let mut resources = Vec::new();
        let mut size = u64::from(trace.raw_size);
        for env in trace.envs() {
            let envelope = self.store.envelopes.resource(env);
            size += (envelope.len() + self.store.envelopes.scope(env).len() + 8) as u64;
            if let Ok(r) = view::resource_of(envelope) {
                resources.push(r);
            }
        }
        let view = TraceView {
            trace_id: id,
            spans: &spans,
            resources: &resources,
            span_count: u64::from(trace.span_count),
            size_bytes: size,
        };
        let metrics = &self.metrics;
        self.policies.decide(&view, clock, |i, vote| match vote {
            Ok(d) => {
                let kind = match d {
                    Decision::Sampled | Decision::InvertSampled => 0,
                    Decision::Dropped => 2,
                    Decision::NotSampled | Decision::InvertNotSampled => 1,
                    Decision::Unspecified => return,
                };
                if let Some(c) = metrics.per_policy.get(i) {
                    c[kind].add(1);
                }
            }
            Err(_) => metrics.evaluation_errors.add(1),
        })
    }
}

/// Per incoming `ScopeSpans`: its interned envelope (one reference held while the scope is
/// read) and its output slot for spans passed straight on.
#[derive(Default)]
struct ScopeState {
    env: Option<u32>,
    slot: Option<Slot>,
}
