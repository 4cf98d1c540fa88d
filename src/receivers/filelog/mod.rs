//! The `filelog` (`file_log`) receiver with the `container` operator: tails container log
//! files as a DaemonSet agent does, turns CRI and Docker lines into OTLP log records, and —
//! with `storage` — remembers how far each file was delivered. Positions advance only when
//! every exporter has acknowledged a batch (at-least-once); while the pipeline refuses data
//! the same batch is retried and nothing more is read.

pub mod checkpoint;
pub mod config;
pub mod expr;
pub mod fastjson;
pub mod field;
pub mod glob;
pub mod operators;
pub mod parser;
pub mod records;
pub mod tailer;
pub mod timefmt;
pub mod watch;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::otlp::{Batch, Signal};
use crate::pipeline::ack::Ack;
use crate::pipeline::consumer::Consumer;
use crate::receivers::otlp::Consumers;
use crate::telemetry::Registry;
use crate::telemetry::metrics::{Counter, Gauge, ReceiverMetrics};
use crate::telemetry::server::ShutdownRx;
use checkpoint::CheckpointStore;
use config::FilelogConfig;
use tailer::{TailStats, Tailer, TailerSettings};
use watch::{Changes, FileWatcher, watched_rescan};

/// Raw bytes read into one batch.
const BATCH_BYTES: usize = 256 * 1024;
/// Batches handed on and not yet acknowledged; reading pauses at this many.
const MAX_IN_FLIGHT: usize = 16;
/// First wait before offering a refused batch again; doubles up to `REFUSAL_BACKOFF_MAX`.
const REFUSAL_BACKOFF: Duration = Duration::from_millis(50);
const REFUSAL_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long shutdown waits for batches already handed on to be acknowledged.
const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(3);
/// The checkpoint is written at most this often.
const SAVE_INTERVAL: Duration = Duration::from_millis(200);
/// Passes woken by filesystem events are at least this far apart, so a busy node's writes
/// are read in batches rather than one pass per write.
const EVENT_PASS_GAP: Duration = Duration::from_millis(20);
/// After a directory appeared, discovery runs at once and again this much later.
const NEW_DIR_RESCAN: Duration = Duration::from_millis(100);
/// Past this many events a second (plus `BUSY_EVENTS_PER_FILE` per open file), waking for each
/// write costs more than looking at every file each `poll_interval`: the watcher is dropped
/// and the receiver polls, as the collector always does, for `BUSY_PAUSE`, then watches again.
const BUSY_EVENTS_PER_SEC: usize = 1000;
const BUSY_EVENTS_PER_FILE: usize = 10;
const BUSY_PAUSE: Duration = Duration::from_secs(10);

pub struct FilelogReceiver {
    id: String,
    config: FilelogConfig,
    storage_dir: Option<PathBuf>,
}

struct Metrics {
    receiver: ReceiverMetrics,
    files_open: Gauge,
    bytes_read: Counter,
    unparsed: Counter,
    split: Counter,
    truncations: Counter,
    files_skipped: Counter,
    dropped: Counter,
    checkpoint_age: Gauge,
    watching: Gauge,
    watch_pauses: Counter,
}

impl Metrics {
    fn new(registry: &Registry, id: &str) -> Metrics {
        let l = [("receiver", id)];
        Metrics {
            receiver: ReceiverMetrics::new(registry, id, "", Signal::Logs),
            files_open: registry.gauge(
                "sluice_filelog_files_open",
                "Files the receiver holds open.",
                &l,
            ),
            bytes_read: registry.counter(
                "sluice_filelog_read_bytes_total",
                "Bytes read from log files.",
                &l,
            ),
            unparsed: registry.counter(
                "sluice_filelog_unparsed_lines_total",
                "Lines that were not container log lines, passed on as their text.",
                &l,
            ),
            split: registry.counter(
                "sluice_filelog_split_records_total",
                "Records cut because a line or a joined message reached max_log_size.",
                &l,
            ),
            truncations: registry.counter(
                "sluice_filelog_truncations_total",
                "Files found truncated (copytruncate) and read again from the start.",
                &l,
            ),
            files_skipped: registry.counter(
                "sluice_filelog_files_skipped_total",
                "Discoveries of matching files not opened because max_concurrent_files were open.",
                &l,
            ),
            dropped: registry.counter(
                "sluice_filelog_dropped_log_records_total",
                "Records an exporter failed to deliver and that were not retried (retry_on_failure off or exhausted).",
                &l,
            ),
            checkpoint_age: registry.gauge(
                "sluice_filelog_checkpoint_age_seconds",
                "Seconds since the checkpoint was last written (-1 without storage).",
                &l,
            ),
            watching: registry.gauge(
                "sluice_filelog_watching",
                "1 while file changes arrive as inotify events, 0 while polling.",
                &l,
            ),
            watch_pauses: registry.counter(
                "sluice_filelog_watch_pauses_total",
                "Times writes came too fast to wake for each, so the receiver polled for a while instead.",
                &l,
            ),
        }
    }

    fn add_stats(&self, now: TailStats, before: TailStats) {
        self.bytes_read.add(now.bytes_read - before.bytes_read);
        self.unparsed.add(now.unparsed - before.unparsed);
        self.split.add(now.split - before.split);
        self.truncations
            .add(now.truncations_detected - before.truncations_detected);
        self.files_skipped
            .add(now.files_skipped - before.files_skipped);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Handed on; waiting for the acknowledgement of `attempt`.
    Waiting,
    /// To be offered (again) at this time.
    Retry(Instant),
    /// Delivered, or given up on (and counted).
    Done,
}

struct InFlight {
    attempt: u32,
    payload: Bytes,
    items: usize,
    positions: Vec<(u64, u64)>,
    state: State,
    refusals: u32,
    failures: u32,
    first_failure: Option<Instant>,
}

impl FilelogReceiver {
    pub fn new(id: &str, config: &FilelogConfig, storage_dir: Option<PathBuf>) -> FilelogReceiver {
        FilelogReceiver {
            id: id.to_string(),
            config: config.clone(),
            storage_dir,
        }
    }

    pub async fn start(
        &self,
        consumers: Consumers,
        registry: &Registry,
        shutdown: ShutdownRx,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        self.config
            .validate()
            .map_err(|e| format!("receiver {}: {e}", self.id))?;
        let Some(consumer) = consumers.logs.clone() else {
            return Ok(Vec::new());
        };
        let node_name = std::env::var("K8S_NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty());
        let mut settings = TailerSettings::from_config(&self.config, node_name)
            .map_err(|e| format!("receiver {}: {e}", self.id))?;
        settings.operators.count_in(registry, &self.id);
        let store = self
            .storage_dir
            .as_ref()
            .map(|d| CheckpointStore::new(d, &self.id));
        let (resume, resuming) = match &store {
            Some(s) => match s.load() {
                Ok(files) => (files, s.path().exists()),
                Err(e) => {
                    tracing::warn!(receiver = %self.id, error = %e, "Starting without the checkpoint.");
                    (Vec::new(), false)
                }
            },
            None => (Vec::new(), false),
        };
        if !resume.is_empty() {
            tracing::info!(receiver = %self.id, files = resume.len(), "Resuming from the checkpoint.");
        }
        let task = Task {
            id: self.id.clone(),
            consumer,
            store,
            metrics: Metrics::new(registry, &self.id),
            poll_interval: self.config.poll_interval,
            retry: self.config.retry_on_failure.clone(),
            include: settings.include.clone(),
        };
        let tailer = Tailer::new(settings, resume, resuming);
        tracing::info!(receiver = %self.id, include = ?self.config.include, "Tailing files.");
        Ok(vec![tokio::spawn(task.run(tailer, shutdown))])
    }
}

struct Task {
    id: String,
    consumer: Consumer,
    store: Option<CheckpointStore>,
    metrics: Metrics,
    poll_interval: Duration,
    retry: config::RetryOnFailure,
    include: Vec<glob::Pattern>,
}

/// The inotify side of discovery.
enum Watching {
    Active(FileWatcher),
    /// A watched directory does not exist yet: try again at each poll.
    Later,
    /// Writes came too fast to wake for each: polling until then, then watching again.
    Busy(Instant),
    /// Unavailable or failed: polling only.
    Off,
}

impl Watching {
    fn watcher(&self) -> Option<&FileWatcher> {
        match self {
            Watching::Active(w) => Some(w),
            _ => None,
        }
    }
}

impl Task {
    async fn run(self, tailer: Tailer, mut shutdown: ShutdownRx) {
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u64, u32, bool)>();
        let mut inflight: VecDeque<(u64, InFlight)> = VecDeque::new();
        let mut next_seq = 0u64;
        // Delivered position per file id; the checkpoint is made of these.
        let mut delivered: HashMap<u64, u64> = HashMap::new();
        let mut dirty = false;
        let mut last_save: Option<Instant> = None;
        let mut tailer = Some(tailer);
        let mut watching = Watching::Later;
        // Set when the watcher starts or stops, for the tailer's next pass.
        let mut roots_changed = false;
        let mut next_discovery = Instant::now();
        // While watching: when files the watcher cannot see are looked at next.
        let mut next_unwatched_poll = Instant::now();
        let mut last_event_pass: Option<Instant> = None;
        // Events counted since the window's start, to tell when writes come too fast.
        let mut event_window = (Instant::now(), 0usize);
        let mut read_again = false;
        let mut stats = TailStats::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while let Ok((seq, attempt, ok)) = ack_rx.try_recv() {
                self.on_ack(&mut inflight, seq, attempt, ok);
            }
            // Positions advance in order: a batch counts only once all earlier ones are done.
            while inflight
                .front()
                .is_some_and(|(_, f)| f.state == State::Done)
            {
                if let Some((_, f)) = inflight.pop_front() {
                    for (file, offset) in f.positions {
                        delivered.insert(file, offset);
                        dirty = true;
                    }
                }
            }
            let now = Instant::now();
            // Offer refused or failed batches again when their time has come.
            for (seq, f) in inflight.iter_mut() {
                if let State::Retry(at) = f.state
                    && at <= now
                {
                    self.send(*seq, f, &ack_tx).await;
                }
            }
            let blocked = inflight
                .iter()
                .any(|(_, f)| matches!(f.state, State::Retry(_)));
            let mut read_now = false;
            let can_read = !blocked && inflight.len() < MAX_IN_FLIGHT;
            let gap_over = last_event_pass.is_none_or(|at| now >= at + EVENT_PASS_GAP);
            if let Watching::Busy(until) = watching
                && now >= until
            {
                watching = Watching::Later;
            }
            if can_read && now >= next_discovery && matches!(watching, Watching::Later) {
                watching = self.start_watching().await;
                roots_changed = matches!(watching, Watching::Active(_));
                self.metrics
                    .watching
                    .set(i64::from(matches!(watching, Watching::Active(_))));
                event_window = (now, 0);
            }
            let mut changes = Changes::default();
            if can_read
                && gap_over
                && let Some(w) = watching.watcher()
            {
                changes = w.take();
                if now >= event_window.0 + Duration::from_secs(1) {
                    event_window = (now, 0);
                }
                event_window.1 += changes.events;
                let open = tailer.as_ref().map_or(0, Tailer::open_files);
                if event_window.1 > BUSY_EVENTS_PER_SEC + BUSY_EVENTS_PER_FILE * open {
                    tracing::debug!(receiver = %self.id, events = event_window.1, "Writes come faster than is worth waking for each; polling for a while.");
                    watching = Watching::Busy(now + BUSY_PAUSE);
                    self.metrics.watching.set(0);
                    self.metrics.watch_pauses.add(1);
                    roots_changed = true;
                    next_discovery = now;
                }
            }
            if let Some(error) = changes.failed.take() {
                tracing::warn!(receiver = %self.id, %error, "File watching failed; finding changes by polling every poll_interval from now on.");
                watching = Watching::Off;
                self.metrics.watching.set(0);
                roots_changed = true;
                next_discovery = now;
            }
            if can_read && let Some(mut t) = tailer.take() {
                let active = watching.watcher().is_some();
                let discover = now >= next_discovery || changes.discover;
                if discover {
                    next_discovery = now
                        + if active {
                            watched_rescan(self.poll_interval)
                        } else {
                            self.poll_interval
                        };
                }
                if changes.new_dirs {
                    // What is created in a new directory before its watch is in place shows
                    // no event: discovery looks again once the watch surely is.
                    next_discovery = next_discovery.min(now + NEW_DIR_RESCAN);
                }
                let unwatched = active && now >= next_unwatched_poll && t.has_unwatched();
                if unwatched {
                    next_unwatched_poll = now + self.poll_interval;
                }
                if !changes.is_empty() {
                    last_event_pass = Some(now);
                }
                if discover || read_again || unwatched || !changes.written.is_empty() {
                    let roots = roots_changed.then(|| watching.watcher().map(FileWatcher::roots));
                    roots_changed = false;
                    let joined = tokio::task::spawn_blocking(move || {
                        if let Some(roots) = roots {
                            t.set_watched_roots(roots);
                        }
                        t.mark_written(&changes.written, unwatched);
                        if discover {
                            t.discover();
                        }
                        let starts = t.take_started();
                        let out = t.read(BATCH_BYTES);
                        (t, out, starts)
                    })
                    .await;
                    let (t_back, out, starts) = match joined {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(receiver = %self.id, error = %e, "File reader failed; the receiver stops.");
                            return;
                        }
                    };
                    t = t_back;
                    for (file, offset) in starts {
                        delivered.entry(file).or_insert(offset);
                        dirty = true;
                    }
                    self.metrics.add_stats(t.stats, stats);
                    stats = t.stats;
                    self.metrics.files_open.set(t.open_files() as i64);
                    read_again = out.more;
                    if out.rediscover {
                        next_discovery = Instant::now();
                    }
                    read_now = true;
                    if out.records > 0 {
                        let payload = Bytes::from(out.payload);
                        let seq = next_seq;
                        next_seq += 1;
                        let mut f = InFlight {
                            attempt: 0,
                            payload,
                            items: out.records,
                            positions: out.positions,
                            state: State::Retry(now),
                            refusals: 0,
                            failures: 0,
                            first_failure: None,
                        };
                        self.send(seq, &mut f, &ack_tx).await;
                        inflight.push_back((seq, f));
                    } else if !out.positions.is_empty() {
                        // Nothing to deliver, but positions moved (or files were new): they
                        // count once what came before them is delivered.
                        next_seq += 1;
                        inflight.push_back((
                            next_seq - 1,
                            InFlight {
                                attempt: 0,
                                payload: Bytes::new(),
                                items: 0,
                                positions: out.positions,
                                state: State::Done,
                                refusals: 0,
                                failures: 0,
                                first_failure: None,
                            },
                        ));
                    }
                }
                tailer = Some(t);
            }
            if dirty && let Some(t) = &tailer {
                delivered.retain(|id, _| t.is_open(*id));
                if self.save(t, &delivered, &mut last_save, false).await {
                    dirty = false;
                }
            }
            if let Some(at) = last_save {
                self.metrics
                    .checkpoint_age
                    .set(at.elapsed().as_secs() as i64);
            } else if self.store.is_none() {
                self.metrics.checkpoint_age.set(-1);
            }
            if read_now && read_again && inflight.len() < MAX_IN_FLIGHT {
                tokio::task::yield_now().await;
                continue;
            }
            // While reading is paused only acknowledgements, retries and saving wake the loop.
            let can_read = inflight.len() < MAX_IN_FLIGHT
                && !inflight
                    .iter()
                    .any(|(_, f)| matches!(f.state, State::Retry(_)));
            let watcher = watching.watcher();
            let mut wake = if can_read {
                next_discovery
            } else {
                Instant::now() + watched_rescan(self.poll_interval)
            };
            if can_read && watcher.is_some() && tailer.as_ref().is_some_and(Tailer::has_unwatched) {
                wake = wake.min(next_unwatched_poll);
            }
            let event_gap_over =
                last_event_pass.is_none_or(|at| Instant::now() >= at + EVENT_PASS_GAP);
            // Events that arrive within the gap are taken when it ends.
            if let (true, Some(_), Some(at)) = (can_read, watcher, last_event_pass)
                && !event_gap_over
            {
                wake = wake.min(at + EVENT_PASS_GAP);
            }
            let listen = can_read && watcher.is_some() && event_gap_over;
            if dirty && let Some(at) = last_save {
                wake = wake.min(at + SAVE_INTERVAL);
            }
            for (_, f) in &inflight {
                if let State::Retry(at) = f.state {
                    wake = wake.min(at);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                ack = ack_rx.recv() => {
                    if let Some((seq, attempt, ok)) = ack {
                        self.on_ack(&mut inflight, seq, attempt, ok);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = async {
                    if let Some(w) = watcher {
                        w.changed().await;
                    }
                }, if listen => {}
            }
        }
        // Stopping: wait a little for what was handed on, then record how far it got.
        let deadline = Instant::now() + SHUTDOWN_ACK_WAIT;
        while inflight.iter().any(|(_, f)| f.state == State::Waiting) && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), ack_rx.recv()).await {
                Ok(Some((seq, attempt, ok))) => {
                    if let Some((_, f)) = inflight.iter_mut().find(|(s, _)| *s == seq)
                        && f.attempt == attempt
                        && f.state == State::Waiting
                    {
                        // No retries while stopping: an unacknowledged batch is read again
                        // after restart.
                        f.state = if ok {
                            State::Done
                        } else {
                            State::Retry(Instant::now())
                        };
                    }
                }
                _ => break,
            }
        }
        while inflight
            .front()
            .is_some_and(|(_, f)| f.state == State::Done)
        {
            if let Some((_, f)) = inflight.pop_front() {
                for (file, offset) in f.positions {
                    delivered.insert(file, offset);
                }
            }
        }
        if let Some(t) = &tailer {
            self.save(t, &delivered, &mut last_save, true).await;
        }
        tracing::debug!(receiver = %self.id, "Filelog receiver stopped.");
    }

    /// Starts watching the patterns' directories; a missing one is tried again later.
    async fn start_watching(&self) -> Watching {
        let include = self.include.clone();
        let started = tokio::task::spawn_blocking(move || FileWatcher::start(&include)).await;
        match started {
            Ok(Ok(w)) => {
                tracing::debug!(receiver = %self.id, "Watching for file changes (inotify); polling is the fallback.");
                Watching::Active(w)
            }
            Ok(Err(e)) if matches!(e.kind, notify::ErrorKind::PathNotFound) => Watching::Later,
            Ok(Err(e)) => {
                tracing::warn!(receiver = %self.id, error = %e, "Cannot watch for file changes; finding them by polling every poll_interval.");
                Watching::Off
            }
            Err(e) => {
                tracing::warn!(receiver = %self.id, error = %e, "Cannot watch for file changes; finding them by polling every poll_interval.");
                Watching::Off
            }
        }
    }

    fn on_ack(&self, inflight: &mut VecDeque<(u64, InFlight)>, seq: u64, attempt: u32, ok: bool) {
        let Some((_, f)) = inflight.iter_mut().find(|(s, _)| *s == seq) else {
            return;
        };
        if f.attempt != attempt || f.state != State::Waiting {
            return;
        }
        if ok {
            f.state = State::Done;
            return;
        }
        let now = Instant::now();
        let first = *f.first_failure.get_or_insert(now);
        let give_up = !self.retry.enabled
            || (!self.retry.max_elapsed_time.is_zero()
                && now.duration_since(first) >= self.retry.max_elapsed_time);
        if give_up {
            tracing::warn!(receiver = %self.id, records = f.items, "Records were not delivered and are not retried.");
            self.metrics.dropped.add(f.items as u64);
            f.state = State::Done;
        } else {
            let wait = self
                .retry
                .initial_interval
                .saturating_mul(2u32.saturating_pow(f.failures.min(16)))
                .min(self.retry.max_interval);
            f.failures += 1;
            f.state = State::Retry(now + wait);
        }
    }

    /// Offers a batch to the pipelines with a fresh acknowledgement. A refusal (pipeline full,
    /// memory high) is retried later without limit: that is backpressure, not failure.
    async fn send(
        &self,
        seq: u64,
        f: &mut InFlight,
        ack_tx: &mpsc::UnboundedSender<(u64, u32, bool)>,
    ) {
        f.attempt += 1;
        let attempt = f.attempt;
        let tx = ack_tx.clone();
        let mut batch = Batch::new(Signal::Logs, f.payload.clone(), f.items);
        batch.acks.push(Ack::new(move |ok| {
            let _ = tx.send((seq, attempt, ok));
        }));
        match self.consumer.consume(batch).await {
            Ok(()) => {
                self.metrics.receiver.accepted.add(f.items as u64);
                f.refusals = 0;
                f.state = State::Waiting;
            }
            Err(refusal) => {
                self.metrics.receiver.refused.add(f.items as u64);
                tracing::debug!(receiver = %self.id, %refusal, "Pipeline refused a batch; reading pauses.");
                let wait = REFUSAL_BACKOFF
                    .saturating_mul(2u32.saturating_pow(f.refusals.min(8)))
                    .min(REFUSAL_BACKOFF_MAX);
                f.refusals += 1;
                f.state = State::Retry(Instant::now() + wait);
            }
        }
    }

    async fn save(
        &self,
        tailer: &Tailer,
        delivered: &HashMap<u64, u64>,
        last_save: &mut Option<Instant>,
        force: bool,
    ) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        // Writing at most every SAVE_INTERVAL keeps a busy node from syncing the disk per batch.
        if !force && last_save.is_some_and(|t| t.elapsed() < SAVE_INTERVAL) {
            return false;
        }
        let entries = tailer.checkpoint(delivered);
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || store.save(&entries)).await;
        match result {
            Ok(Ok(())) => {
                *last_save = Some(Instant::now());
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(receiver = %self.id, error = %e, "Cannot write the checkpoint.");
                false
            }
            Err(e) => {
                tracing::warn!(receiver = %self.id, error = %e, "Checkpoint writer failed.");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::consumer::PipelineInput;
    use tokio::sync::watch;

    /// A full pipeline: the batch is refused, reading pauses, and the same records are
    /// offered again once there is room — none lost, none doubled.
    /// Starts a `filelog` receiver whose batches go to `tx`: its registry, stop switch, tasks.
    async fn start_receiver(
        config: &FilelogConfig,
        tx: mpsc::Sender<Batch>,
    ) -> (Registry, watch::Sender<bool>, Vec<JoinHandle<()>>) {
        let consumer = Consumer::new(vec![PipelineInput {
            pipeline: "logs".into(),
            tx,
            gates: Vec::new(),
        }]);
        let registry = Registry::default();
        let (stop, stop_rx) = watch::channel(false);
        let tasks = FilelogReceiver::new("filelog", config, None)
            .start(
                Consumers {
                    logs: Some(consumer),
                    ..Default::default()
                },
                &registry,
                stop_rx,
            )
            .await
            .unwrap();
        (registry, stop, tasks)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_batches_are_offered_again() {
        let dir = std::env::temp_dir().join(format!("sluice-refusal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ns_pod_0a1b/app")).unwrap();
        let lines: String = (0..100)
            .map(|i| format!("2024-01-01T00:00:00Z stdout F line {i}\n"))
            .collect();
        std::fs::write(dir.join("ns_pod_0a1b/app/0.log"), lines).unwrap();
        let config = FilelogConfig {
            include: vec![format!("{}/*/*/*.log", dir.display())],
            start_at: config::StartAt::Beginning,
            poll_interval: Duration::from_millis(20),
            operators: vec![Default::default()],
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(Batch::new(Signal::Logs, Bytes::new(), 0))
            .unwrap();
        let (registry, stop, tasks) = start_receiver(&config, tx).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let refused = registry.value("otelcol_receiver_refused_log_records_total", "");
        assert!(refused >= 100, "refused {refused}");
        assert_eq!(rx.recv().await.map(|b| b.items), Some(0)); // the filler
        let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch.items, 100);
        drop(batch);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "nothing is sent twice");
        assert_eq!(
            registry.value("otelcol_receiver_accepted_log_records_total", ""),
            100
        );
        stop.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// With inotify, new files and writes are read at once, long before the safety-net poll
    /// (here 30 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_files_and_writes_are_read_before_the_fallback_poll() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = FilelogConfig {
            include: vec![format!("{}/*/*/*.log", dir.display())],
            start_at: config::StartAt::End,
            poll_interval: Duration::from_secs(2),
            operators: vec![Default::default()],
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(16);
        let (_registry, stop, tasks) = start_receiver(&config, tx).await;
        // The first discovery (and the watch) happen at start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        // A new pod directory and file: read from its start (it appeared after start-up).
        std::fs::create_dir_all(dir.join("ns_pod_0a1b/app")).unwrap();
        let log = dir.join("ns_pod_0a1b/app/0.log");
        std::fs::write(&log, "2024-01-01T00:00:00Z stdout F first\n").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("a new file is read within a second")
            .unwrap();
        assert_eq!(batch.items, 1);
        drop(batch);
        // A write to it.
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(
                b"2024-01-01T00:00:01Z stdout F second\n2024-01-01T00:00:02Z stdout F third\n",
            )
            .unwrap();
        }
        let batch = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("a write is read within a second")
            .unwrap();
        assert_eq!(batch.items, 2);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "before any poll"
        );
        drop(batch);
        stop.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes faster than is worth waking for each: the receiver polls instead (and says so in
    /// its metrics), and every line still arrives once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_writes_switches_to_polling_and_loses_nothing() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("sluice-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ns_pod_0a1b/app")).unwrap();
        let logs = [
            dir.join("ns_pod_0a1b/app/0.log"),
            dir.join("ns_pod_0a1b/app/1.log"),
        ];
        for log in &logs {
            std::fs::write(log, "").unwrap();
        }
        let config = FilelogConfig {
            include: vec![format!("{}/*/*/*.log", dir.display())],
            start_at: config::StartAt::Beginning,
            poll_interval: Duration::from_millis(50),
            operators: vec![Default::default()],
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let (registry, stop, tasks) = start_receiver(&config, tx).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            registry
                .render()
                .contains("sluice_filelog_watching{receiver=\"filelog\"} 1")
        );
        // One write per line, as a container runtime writes: far more events than the limit.
        // The files take turns, as inotify merges an event into an identical one before it.
        let lines = 20_000;
        let mut files: Vec<_> = logs
            .iter()
            .map(|log| std::fs::OpenOptions::new().append(true).open(log).unwrap())
            .collect();
        for i in 0..lines {
            writeln!(files[i % 2], "2024-01-01T00:00:00Z stdout F line {i}").unwrap();
        }
        drop(files);
        let mut got = 0;
        while got < lines {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("every line arrives")
                .unwrap();
            got += batch.items;
        }
        assert_eq!(got, lines);
        let text = registry.render();
        assert!(
            text.contains("sluice_filelog_watch_pauses_total{receiver=\"filelog\"} 1"),
            "{text}"
        );
        assert!(text.contains("sluice_filelog_watching{receiver=\"filelog\"} 0"));
        stop.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
