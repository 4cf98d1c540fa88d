//! The `loadbalancing` (also `load_balancing`) exporter: routes spans by trace id (or
//! service name) over a consistent hash ring of OTLP backends found by a static list or by
//! DNS, each backend with its own bounded queue and workers sending with the `otlp`
//! exporter's sender and retry rules.
//!
//! One router task owns the ring. It splits each batch by routing key (`split`), and queues
//! the parts on their backends. When the backend set changes, what was queued for a backend
//! that left is split again over the new ring (re-routed, not dropped). A backend whose
//! sends fail `DOWN_AFTER` times in a row is marked down: its queue and the batch in hand go
//! back to the router, its keys go to the next member of the ring, and one of its workers
//! probes it with empty requests until it answers, when its keys return.

pub mod ring;
pub mod split;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::otlp::{OtlpExporter, OtlpExporterConfig};
use super::{ExportError, ExporterHandle, QueueConfig, RetryConfig, check_plaintext, jitter};
use crate::config::ComponentId;
use crate::config::node::deserialize_duration;
use crate::otlp::{Batch, Signal};
use crate::telemetry::metrics::ExporterMetrics;
use crate::telemetry::server::{ShutdownRx, stopped};
use crate::telemetry::{Counter, Gauge, Registry};
use ring::Ring;
use split::{BufPool, RoutingKey, split_traces};

/// Consecutive failed attempts after which a backend is marked down.
const DOWN_AFTER: u32 = 3;
/// How often a down backend is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The collector's default OTLP port, added to static hostnames without one.
const DEFAULT_PORT: &str = "4317";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancingConfig {
    pub routing_key: String,
    pub routing_attributes: Option<IgnoredAny>,
    pub protocol: ProtocolConfig,
    pub resolver: ResolverConfig,
    /// The queue in front of the router (the collector's top-level `sending_queue`).
    pub sending_queue: QueueConfig,
    pub retry_on_failure: Option<IgnoredAny>,
    pub timeout: Option<IgnoredAny>,
}

impl Default for LoadBalancingConfig {
    fn default() -> Self {
        LoadBalancingConfig {
            routing_key: "traceID".into(),
            routing_attributes: None,
            protocol: ProtocolConfig::default(),
            resolver: ResolverConfig::default(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: None,
            timeout: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// The `otlp` exporter's settings; `endpoint` is ignored (the resolver supplies it).
    pub otlp: OtlpExporterConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    #[serde(rename = "static")]
    pub static_: Option<StaticResolver>,
    pub dns: Option<DnsResolver>,
    pub k8s: Option<IgnoredAny>,
    pub aws_cloud_map: Option<IgnoredAny>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticResolver {
    pub hostnames: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsResolver {
    pub hostname: String,
    pub port: String,
    #[serde(deserialize_with = "deserialize_duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

impl Default for DnsResolver {
    fn default() -> Self {
        DnsResolver {
            hostname: String::new(),
            port: DEFAULT_PORT.into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        }
    }
}

impl LoadBalancingConfig {
    pub fn routing(&self) -> Result<RoutingKey, String> {
        match self.routing_key.as_str() {
            "" | "traceID" => Ok(RoutingKey::TraceId),
            "service" => Ok(RoutingKey::Service),
            "resource" | "metric" | "streamID" | "attributes" => Err(format!(
                "routing_key `{}` is not supported yet (only `traceID` and `service`)",
                self.routing_key
            )),
            other => Err(format!(
                "unsupported routing_key `{other}`: expected traceID, service, resource, metric, streamID or attributes"
            )),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.routing()?;
        if self.routing_attributes.is_some() {
            return Err("routing_attributes is not supported yet".into());
        }
        if self.retry_on_failure.is_some() || self.timeout.is_some() {
            return Err("top-level retry_on_failure and timeout are not supported yet: set them under protocol.otlp".into());
        }
        self.sending_queue.validate()?;
        let otlp = &self.protocol.otlp;
        check_plaintext("backend:4317", &otlp.tls).map_err(|e| format!("protocol.otlp: {e}"))?;
        otlp.sending_queue
            .validate()
            .map_err(|e| format!("protocol.otlp: {e}"))?;
        let r = &self.resolver;
        if r.k8s.is_some() {
            return Err("resolver.k8s is not supported yet: use resolver.dns with the headless Service's name".into());
        }
        if r.aws_cloud_map.is_some() {
            return Err("resolver.aws_cloud_map is not supported yet".into());
        }
        match (&r.static_, &r.dns) {
            (None, None) => {
                Err("no resolver specified: set resolver.static or resolver.dns".into())
            }
            (Some(_), Some(_)) => {
                Err("only one resolver may be specified: resolver.static or resolver.dns".into())
            }
            (Some(s), None) if s.hostnames.is_empty() => {
                Err("resolver.static.hostnames must not be empty".into())
            }
            (None, Some(d)) if d.hostname.is_empty() => {
                Err("resolver.dns.hostname is required".into())
            }
            (None, Some(d)) if d.port.parse::<u16>().is_err() => Err(format!(
                "resolver.dns.port `{}` is not a port number",
                d.port
            )),
            (None, Some(d)) if d.interval.is_zero() || d.timeout.is_zero() => {
                Err("resolver.dns.interval and timeout must be greater than zero".into())
            }
            _ => Ok(()),
        }
    }
}

/// A static hostname with the default port added when it has none, as the collector does.
fn with_port(host: &str) -> String {
    let has_port = match host.rsplit_once(':') {
        Some((h, p)) => {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        host.to_string()
    } else {
        format!("{host}:{DEFAULT_PORT}")
    }
}

/// The self-metrics of one loadbalancing exporter.
#[derive(Clone)]
struct LbMetrics {
    exporter: String,
    registry: Registry,
    items: Arc<[ExporterMetrics; 3]>,
    backends: Gauge,
    rerouted: Counter,
    resolutions_ok: Counter,
    resolutions_failed: Counter,
}

impl LbMetrics {
    fn outcome(&self, endpoint: &str, success: bool) -> Counter {
        self.registry.counter(
            "otelcol_loadbalancer_backend_outcome",
            "Number of successful and failed requests per backend.",
            &[
                ("exporter", self.exporter.as_str()),
                ("endpoint", endpoint),
                ("success", if success { "true" } else { "false" }),
            ],
        )
    }

    fn down(&self, endpoint: &str) -> Gauge {
        self.registry.gauge(
            "sluice_loadbalancer_backend_down",
            "1 while a backend is marked down after repeated failures.",
            &[("exporter", self.exporter.as_str()), ("endpoint", endpoint)],
        )
    }

    fn failed(&self, endpoint: &str, signal: Signal) -> Counter {
        self.registry.counter(
            &format!(
                "sluice_loadbalancer_backend_failed_{}_total",
                signal.item_name()
            ),
            "Items whose send to a backend failed (re-routed or dropped).",
            &[("exporter", self.exporter.as_str()), ("endpoint", endpoint)],
        )
    }
}

/// One backend's bounded queue, shared by the router and the backend's workers.
struct BackendQueue {
    items: Mutex<VecDeque<Batch>>,
    ready: Notify,
    /// A worker took a batch: room for a router waiting on a full queue.
    space: Notify,
    /// The backend left the ring: workers hand back what they hold and stop.
    removed: AtomicBool,
    /// Shutdown: workers drain the queue and stop.
    finishing: AtomicBool,
    /// Marked down: the router sends it nothing; one worker probes it.
    down: AtomicBool,
    workers: AtomicUsize,
    failures: AtomicUsize,
}

impl BackendQueue {
    fn take_all(&self) -> Vec<Batch> {
        self.items.lock().unwrap().drain(..).collect()
    }

    fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }
}

enum Event {
    /// A batch a worker could not deliver (its backend is down or gone): route it again.
    Reroute(Batch),
    Down(String),
    Up(String),
}

struct Backend {
    queue: Arc<BackendQueue>,
}

/// Starts the router, the resolver and (through the router) each backend's workers.
pub fn start(
    id: &ComponentId,
    config: &LoadBalancingConfig,
    signals: &[Signal],
    registry: &Registry,
    abort: ShutdownRx,
) -> Result<(ExporterHandle, Vec<JoinHandle<()>>), String> {
    let routing = config.routing()?;
    let name = id.to_string();
    let capacity = if config.sending_queue.enabled {
        config.sending_queue.queue_size
    } else {
        1
    };
    let (queue_size, items) = super::exporter_metrics(registry, &name, capacity, signals);
    let labels = [("exporter", name.as_str())];
    let metrics = LbMetrics {
        exporter: name.clone(),
        registry: registry.clone(),
        items: items.clone(),
        backends: registry.gauge(
            "otelcol_loadbalancer_num_backends",
            "Current number of backends in use.",
            &labels,
        ),
        rerouted: registry.counter(
            "sluice_loadbalancer_rerouted_spans_total",
            "Spans queued for a backend that left or went down, routed again to the new owner.",
            &labels,
        ),
        resolutions_ok: registry.counter(
            "otelcol_loadbalancer_num_resolutions",
            "Number of times the resolver has triggered new resolutions.",
            &[("exporter", name.as_str()), ("success", "true")],
        ),
        resolutions_failed: registry.counter(
            "otelcol_loadbalancer_num_resolutions",
            "Number of times the resolver has triggered new resolutions.",
            &[("exporter", name.as_str()), ("success", "false")],
        ),
    };
    let (tx, rx) = mpsc::channel::<Batch>(capacity);
    let (members_tx, members_rx) = watch::channel::<Option<Vec<String>>>(None);
    let mut tasks = Vec::new();
    let r = &config.resolver;
    if let Some(s) = &r.static_ {
        let _ = members_tx.send(Some(s.hostnames.iter().map(|h| with_port(h)).collect()));
        tasks.push(tokio::spawn(async move {
            // Keeps the list alive for the router.
            members_tx.closed().await;
        }));
    } else if let Some(d) = r.dns.clone() {
        let metrics = metrics.clone();
        let abort = abort.clone();
        tasks.push(tokio::spawn(resolve_dns(d, members_tx, metrics, abort)));
    }
    let router = Router {
        id: name.clone(),
        routing,
        otlp: config.protocol.otlp.clone(),
        ring: Ring::default(),
        backends: BTreeMap::new(),
        workers: Vec::new(),
        metrics: metrics.clone(),
        queue_size: queue_size.clone(),
        abort: abort.clone(),
        pool: Arc::default(),
    };
    tasks.push(tokio::spawn(router.run(rx, members_rx)));
    let handle = ExporterHandle {
        id: name,
        tx,
        block: config.sending_queue.block_on_overflow || !config.sending_queue.enabled,
        queue_size,
        metrics: items,
    };
    Ok((handle, tasks))
}

/// Resolves the hostname now and every `interval`; a failed lookup keeps the last answer.
async fn resolve_dns(
    d: DnsResolver,
    members: watch::Sender<Option<Vec<String>>>,
    metrics: LbMetrics,
    mut abort: ShutdownRx,
) {
    let mut last: Option<Vec<String>> = None;
    loop {
        let lookup = tokio::net::lookup_host(format!("{}:{}", d.hostname, d.port));
        match tokio::time::timeout(d.timeout, lookup).await {
            Ok(Ok(addrs)) => {
                metrics.resolutions_ok.add(1);
                let mut found: Vec<String> = addrs.map(|a| a.to_string()).collect();
                found.sort();
                found.dedup();
                if last.as_ref() != Some(&found) {
                    tracing::info!(hostname = %d.hostname, backends = ?found, "Resolved backends.");
                    last = Some(found.clone());
                    if members.send(Some(found)).is_err() {
                        return;
                    }
                }
            }
            Ok(Err(e)) => {
                metrics.resolutions_failed.add(1);
                tracing::warn!(hostname = %d.hostname, error = %e, "DNS resolution failed; keeping the last backends.");
            }
            Err(_) => {
                metrics.resolutions_failed.add(1);
                tracing::warn!(hostname = %d.hostname, timeout = ?d.timeout, "DNS resolution timed out; keeping the last backends.");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(d.interval) => {}
            _ = members.closed() => return,
            _ = stopped(&mut abort) => return,
        }
    }
}

struct Router {
    id: String,
    routing: RoutingKey,
    otlp: OtlpExporterConfig,
    ring: Ring,
    /// Current members by endpoint, in ring member order.
    backends: BTreeMap<String, Backend>,
    workers: Vec<JoinHandle<()>>,
    metrics: LbMetrics,
    queue_size: Gauge,
    abort: ShutdownRx,
    /// Buffers of split parts, reused once the parts are sent.
    pool: Arc<BufPool>,
}

impl Router {
    async fn run(
        mut self,
        mut input: mpsc::Receiver<Batch>,
        mut members: watch::Receiver<Option<Vec<String>>>,
    ) {
        let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
        let mut abort = self.abort.clone();
        let mut input_open = true;
        let mut members_open = true;
        if let Some(list) = members.borrow_and_update().clone() {
            self.update(&list, &events_tx);
        }
        while input_open {
            tokio::select! {
                biased;
                Some(ev) = events.recv() => self.on_event(ev),
                changed = members.changed(), if members_open => match changed {
                    Ok(()) => {
                        if let Some(list) = members.borrow_and_update().clone() {
                            self.update(&list, &events_tx);
                        }
                    }
                    Err(_) => members_open = false,
                },
                next = input.recv(), if !self.ring.is_empty() => match next {
                    Some(batch) => {
                        self.queue_size.add(-1);
                        self.route_input(batch).await;
                    }
                    None => input_open = false,
                },
                _ = stopped(&mut abort) => {
                    // The deadline passed with input still queued (e.g. no backend ever found).
                    input.close();
                    while let Some(batch) = input.recv().await {
                        self.queue_size.add(-1);
                        self.drop_batch(&batch, "shutdown deadline passed before any backend was found");
                    }
                    input_open = false;
                }
            }
        }
        // Input is done: backends drain their queues; batches handed back meanwhile are
        // routed to backends still running, until every worker has stopped.
        for b in self.backends.values() {
            b.queue.finishing.store(true, Ordering::Release);
            b.queue.ready.notify_waiters();
        }
        drop(events_tx);
        let workers = std::mem::take(&mut self.workers);
        let mut all_done = Box::pin(async move {
            for w in workers {
                let _ = w.await;
            }
        });
        loop {
            tokio::select! {
                Some(ev) = events.recv() => self.on_event(ev),
                _ = &mut all_done => break,
            }
        }
        while let Ok(ev) = events.try_recv() {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Reroute(batch) => {
                self.metrics.rerouted.add(batch.items as u64);
                let _ = self.route(batch, true);
            }
            Event::Down(endpoint) => {
                let Some(b) = self.backends.get(&endpoint) else {
                    return;
                };
                tracing::warn!(exporter = %self.id, %endpoint, "Backend marked down after repeated failures; its share goes to the next ring member.");
                self.metrics.down(&endpoint).set(1);
                let queued = b.queue.take_all();
                for batch in queued {
                    self.metrics.rerouted.add(batch.items as u64);
                    let _ = self.route(batch, true);
                }
            }
            Event::Up(endpoint) => {
                tracing::info!(exporter = %self.id, %endpoint, "Backend is back; its share returns.");
                self.metrics.down(&endpoint).set(0);
            }
        }
    }

    /// Applies a new backend list: starts new backends, and re-routes what was queued for
    /// the ones that left over the new ring.
    fn update(&mut self, list: &[String], events: &mpsc::UnboundedSender<Event>) {
        let ring = Ring::new(list);
        if ring.members() == self.ring.members() {
            return;
        }
        tracing::info!(exporter = %self.id, backends = ?ring.members(), "Backend set changed.");
        let mut left = Vec::new();
        self.backends.retain(|endpoint, b| {
            let keep = ring.members().contains(endpoint);
            if !keep {
                b.queue.removed.store(true, Ordering::Release);
                b.queue.ready.notify_waiters();
                left.push((endpoint.clone(), b.queue.take_all()));
            }
            keep
        });
        for endpoint in ring.members() {
            if !self.backends.contains_key(endpoint) {
                match self.start_backend(endpoint, events) {
                    Ok(b) => {
                        self.backends.insert(endpoint.clone(), b);
                    }
                    Err(e) => {
                        tracing::error!(exporter = %self.id, %endpoint, error = %e, "Cannot use backend.")
                    }
                }
            }
        }
        self.ring = ring;
        self.metrics.backends.set(self.backends.len() as i64);
        for (endpoint, queued) in left {
            self.metrics.down(&endpoint).set(0);
            for batch in queued {
                self.metrics.rerouted.add(batch.items as u64);
                let _ = self.route(batch, true);
            }
        }
    }

    fn start_backend(
        &mut self,
        endpoint: &str,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Result<Backend, String> {
        let mut config = self.otlp.clone();
        config.endpoint = endpoint.to_string();
        let exporter = Arc::new(OtlpExporter::new(&config)?);
        let consumers = if config.sending_queue.enabled {
            config.sending_queue.num_consumers
        } else {
            1
        };
        let queue = Arc::new(BackendQueue {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            space: Notify::new(),
            removed: AtomicBool::new(false),
            finishing: AtomicBool::new(false),
            down: AtomicBool::new(false),
            workers: AtomicUsize::new(consumers),
            failures: AtomicUsize::new(0),
        });
        for _ in 0..consumers {
            let worker = BackendWorker {
                endpoint: endpoint.to_string(),
                exporter: exporter.clone(),
                retry: config.retry_on_failure.clone(),
                queue: queue.clone(),
                events: events.clone(),
                metrics: self.metrics.clone(),
                ok: self.metrics.outcome(endpoint, true),
                failed: self.metrics.outcome(endpoint, false),
            };
            let abort = self.abort.clone();
            self.workers
                .push(tokio::spawn(async move { worker.run(abort).await }));
        }
        Ok(Backend { queue })
    }

    fn index_down(&self) -> Vec<bool> {
        self.ring
            .members()
            .iter()
            .map(|m| {
                self.backends
                    .get(m)
                    .is_none_or(|b| b.queue.down.load(Ordering::Acquire))
            })
            .collect()
    }

    /// Splits a batch over the ring and queues the parts. `accepted`: the batch was already
    /// in a backend queue (re-routing), so it is queued even past the queue's size rather
    /// than dropped.
    fn route(&mut self, batch: Batch, accepted: bool) -> Vec<(String, Batch)> {
        let mut blocked = Vec::new();
        if self.ring.is_empty() {
            self.drop_batch(&batch, "no backends");
            return blocked;
        }
        let down = self.index_down();
        let ring = &self.ring;
        let parts = match split_traces(&batch, self.routing, &self.pool, ring::hash, |h| {
            ring.owner_of_hash(h, |m| down[m]).unwrap_or(0)
        }) {
            Ok(parts) => parts,
            Err(e) => {
                self.drop_batch(&batch, &format!("malformed request: {e}"));
                return blocked;
            }
        };
        drop(batch);
        let capacity = self.capacity();
        for (owner, part) in parts {
            let endpoint = &self.ring.members()[owner];
            let Some(b) = self.backends.get(endpoint) else {
                self.drop_batch(&part, "backend could not be started");
                continue;
            };
            let q = &b.queue;
            if q.workers.load(Ordering::Acquire) == 0 {
                self.drop_batch(&part, "backend stopped at shutdown");
                continue;
            }
            if !accepted && q.len() >= capacity {
                if self.blocking() {
                    blocked.push((endpoint.clone(), part));
                    continue;
                }
                let items = part.items as u64;
                part.fail_acks();
                self.metrics.items[0].enqueue_failed.add(items);
                tracing::warn!(exporter = %self.id, %endpoint, items, "Dropping data because the backend's sending queue is full.");
                continue;
            }
            q.items.lock().unwrap().push_back(part);
            q.ready.notify_one();
        }
        blocked
    }

    fn blocking(&self) -> bool {
        let q = &self.otlp.sending_queue;
        q.block_on_overflow || !q.enabled
    }

    fn capacity(&self) -> usize {
        let q = &self.otlp.sending_queue;
        if q.enabled { q.queue_size } else { 1 }
    }

    /// Routes a batch from the pipeline; with `block_on_overflow`, waits for room in full
    /// backend queues (the pipeline then waits on the exporter's own queue). A part whose
    /// backend goes down or leaves meanwhile is routed again.
    async fn route_input(&mut self, batch: Batch) {
        let mut waiting = self.route(batch, false);
        while let Some((endpoint, part)) = waiting.pop() {
            loop {
                let Some(q) = self.backends.get(&endpoint).map(|b| b.queue.clone()) else {
                    waiting.extend(self.route(part, false));
                    break;
                };
                if q.down.load(Ordering::Acquire) || q.removed.load(Ordering::Acquire) {
                    waiting.extend(self.route(part, false));
                    break;
                }
                if q.len() < self.capacity() {
                    q.items.lock().unwrap().push_back(part);
                    q.ready.notify_one();
                    break;
                }
                if *self.abort.borrow() {
                    self.drop_batch(
                        &part,
                        "shutdown deadline passed while the backend's queue was full",
                    );
                    break;
                }
                let space = q.space.notified();
                let _ = tokio::time::timeout(Duration::from_millis(50), space).await;
            }
        }
    }

    fn drop_batch(&self, batch: &Batch, why: &str) {
        batch.fail_acks();
        self.metrics.items[0].send_failed.add(batch.items as u64);
        tracing::error!(exporter = %self.id, items = batch.items, reason = why, "Dropping data.");
    }
}

struct BackendWorker {
    endpoint: String,
    exporter: Arc<OtlpExporter>,
    retry: RetryConfig,
    queue: Arc<BackendQueue>,
    events: mpsc::UnboundedSender<Event>,
    metrics: LbMetrics,
    ok: Counter,
    failed: Counter,
}

enum Next {
    Batch(Batch),
    Stop,
}

impl BackendWorker {
    async fn run(self, mut abort: ShutdownRx) {
        loop {
            match self.next().await {
                Next::Stop => break,
                Next::Batch(batch) => {
                    if *abort.borrow() {
                        self.fail(&batch, "shutdown deadline passed before it could be sent");
                        continue;
                    }
                    if self.deliver(batch, &mut abort).await {
                        self.probe(&mut abort).await;
                    }
                }
            }
        }
        self.queue.workers.fetch_sub(1, Ordering::AcqRel);
    }

    async fn next(&self) -> Next {
        loop {
            let notified = self.queue.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queue.removed.load(Ordering::Acquire) {
                return Next::Stop;
            }
            if self.queue.down.load(Ordering::Acquire)
                && !self.queue.finishing.load(Ordering::Acquire)
            {
                // Nothing is queued for a down backend; the worker that marked it probes.
                notified.await;
                continue;
            }
            let popped = self.queue.items.lock().unwrap().pop_front();
            if let Some(b) = popped {
                self.queue.space.notify_waiters();
                return Next::Batch(b);
            }
            if self.queue.finishing.load(Ordering::Acquire) {
                return Next::Stop;
            }
            notified.await;
        }
    }

    fn fail(&self, batch: &Batch, why: &str) {
        batch.fail_acks();
        self.metrics.items[0].send_failed.add(batch.items as u64);
        self.metrics
            .failed(&self.endpoint, batch.signal)
            .add(batch.items as u64);
        tracing::error!(exporter = %self.metrics.exporter, endpoint = %self.endpoint, items = batch.items, reason = why, "Dropping data.");
    }

    /// Gives a batch back to the router, to be sent to the key's next owner.
    fn hand_back(&self, batch: Batch) {
        self.metrics
            .failed(&self.endpoint, batch.signal)
            .add(batch.items as u64);
        if let Err(e) = self.events.send(Event::Reroute(batch)) {
            let Event::Reroute(batch) = e.0 else { return };
            self.fail(&batch, "router stopped");
        }
    }

    /// Sends with retries; true when this worker marked the backend down (it then probes).
    async fn deliver(&self, batch: Batch, abort: &mut ShutdownRx) -> bool {
        let started = Instant::now();
        let mut interval = self.retry.initial_interval;
        loop {
            let attempt = tokio::select! {
                r = self.exporter.send(&batch) => r,
                _ = stopped(abort) => {
                    self.fail(&batch, "shutdown deadline passed while sending");
                    return false;
                }
            };
            let message = match attempt {
                Ok(delivered) => {
                    self.ok.add(1);
                    self.queue.failures.store(0, Ordering::Release);
                    let rejected = delivered.rejected.min(batch.items as u64);
                    self.metrics.items[0]
                        .sent
                        .add(batch.items as u64 - rejected);
                    if rejected > 0 {
                        batch.fail_acks();
                        self.metrics.items[0].send_failed.add(rejected);
                    }
                    return false;
                }
                Err(ExportError::Permanent(message)) => {
                    self.failed.add(1);
                    self.fail(&batch, &format!("permanent error: {message}"));
                    return false;
                }
                Err(ExportError::Retryable {
                    message,
                    retry_after,
                }) => {
                    self.failed.add(1);
                    (message, retry_after)
                }
            };
            let (message, retry_after) = message;
            let failures = self.queue.failures.fetch_add(1, Ordering::AcqRel) as u32 + 1;
            let finishing = self.queue.finishing.load(Ordering::Acquire);
            // Gone, or down (another worker marked it): the key's next owner takes the batch.
            // While finishing, a down backend is retried with backoff instead: every member
            // may be down, and handing back would only bounce the batch between them.
            if self.queue.removed.load(Ordering::Acquire)
                || (self.queue.down.load(Ordering::Acquire) && !finishing)
            {
                self.hand_back(batch);
                return false;
            }
            if failures >= DOWN_AFTER && !finishing {
                let marked = !self.queue.down.swap(true, Ordering::AcqRel);
                if marked {
                    let _ = self.events.send(Event::Down(self.endpoint.clone()));
                }
                self.hand_back(batch);
                return marked;
            }
            if !self.retry.enabled {
                self.fail(&batch, &format!("retries disabled: {message}"));
                return false;
            }
            let wait =
                retry_after.unwrap_or_else(|| jitter(interval, self.retry.randomization_factor));
            let budget = self.retry.max_elapsed_time;
            if !budget.is_zero() && started.elapsed() + wait > budget {
                self.fail(
                    &batch,
                    &format!("gave up after max_elapsed_time: {message}"),
                );
                return false;
            }
            self.metrics.items[0].retries.add(batch.items as u64);
            tracing::info!(exporter = %self.metrics.exporter, endpoint = %self.endpoint, error = %message, retry_in = ?wait, "Export failed; will retry.");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(abort) => {
                    self.fail(&batch, &format!("shutdown deadline passed while retrying: {message}"));
                    return false;
                }
            }
            interval = interval
                .mul_f64(self.retry.multiplier.max(1.0))
                .min(self.retry.max_interval.max(self.retry.initial_interval));
        }
    }

    /// Sends empty requests to a down backend until one succeeds (or it leaves).
    async fn probe(&self, abort: &mut ShutdownRx) {
        let empty = Batch::new(Signal::Traces, bytes::Bytes::new(), 0);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROBE_EVERY) => {}
                _ = stopped(abort) => return,
            }
            if self.queue.removed.load(Ordering::Acquire)
                || self.queue.finishing.load(Ordering::Acquire)
            {
                self.queue.down.store(false, Ordering::Release);
                self.queue.ready.notify_waiters();
                return;
            }
            if self.exporter.send(&empty).await.is_ok() {
                self.queue.failures.store(0, Ordering::Release);
                self.queue.down.store(false, Ordering::Release);
                let _ = self.events.send(Event::Up(self.endpoint.clone()));
                self.queue.ready.notify_waiters();
                return;
            }
        }
    }
}
