//! Building and running the pipeline graph: exporters first, then pipelines, then receivers;
//! shutdown in the reverse order, draining what was accepted within one grace deadline.

pub mod ack;
pub mod consumer;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{ComponentId, Config, ExtensionConfig, ReceiverConfig};
use crate::exporters::{self, ExporterHandle};
use crate::otlp::{Batch, Signal};
use crate::processors::{Chain, Processor};
use crate::receivers::filelog::FilelogReceiver;
use crate::receivers::otlp::{Consumers, OtlpReceiver};
use crate::receivers::prometheus::PrometheusReceiver;
use crate::telemetry::Registry;
use crate::telemetry::health::{self, Readiness};
use crate::telemetry::server::{self, ShutdownRx};
use consumer::{Consumer, PipelineInput};

/// Batches a pipeline's input channel holds before receivers must wait.
const PIPELINE_CHANNEL_CAPACITY: usize = 64;

/// A running agent.
pub struct Service {
    registry: Registry,
    readiness: Readiness,
    stop_receivers: watch::Sender<bool>,
    abort_exports: watch::Sender<bool>,
    stop_extensions: watch::Sender<bool>,
    receiver_tasks: Vec<JoinHandle<()>>,
    pipeline_tasks: Vec<JoinHandle<()>>,
    exporter_tasks: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Service {
    /// Starts every component of `config`. Fails (before accepting any data) when a port
    /// cannot be bound or an exporter cannot be built.
    pub async fn start(config: &Config, registry: Registry) -> Result<Service, String> {
        let readiness = Readiness::default();
        let (stop_receivers, receivers_rx) = watch::channel(false);
        let (abort_exports, abort_rx) = watch::channel(false);
        let (stop_extensions, extensions_rx) = watch::channel(false);
        let mut service = Service {
            registry: registry.clone(),
            readiness: readiness.clone(),
            stop_receivers,
            abort_exports,
            stop_extensions,
            receiver_tasks: Vec::new(),
            pipeline_tasks: Vec::new(),
            exporter_tasks: Vec::new(),
            shutdown_timeout: config.service.shutdown_timeout,
        };

        for id in &config.service.extensions {
            let Some(ext) = config.extensions.iter().find(|e| &e.id == id) else {
                continue;
            };
            match &ext.config {
                ExtensionConfig::HealthCheck(c) => {
                    health::start(c, readiness.clone(), extensions_rx.clone()).await?;
                }
                ExtensionConfig::FileStorage(c) => {
                    c.prepare(&id.to_string())?;
                }
            }
        }
        if let Some(addr) = &config.service.telemetry.metrics_address {
            start_metrics_server(addr, registry.clone(), extensions_rx.clone()).await?;
        }

        let used = crate::config::used_ids(config);
        let mut exporter_handles: BTreeMap<ComponentId, ExporterHandle> = BTreeMap::new();
        for exp in config.exporters.iter().filter(|e| used.contains(&e.id)) {
            let signals: Vec<Signal> = config
                .service
                .pipelines
                .iter()
                .filter(|p| p.exporters.contains(&exp.id))
                .map(|p| p.signal)
                .collect();
            let (handle, tasks) =
                exporters::start(&exp.id, &exp.config, &signals, &registry, abort_rx.clone())?;
            exporter_handles.insert(exp.id.clone(), handle);
            service.exporter_tasks.extend(tasks);
        }

        // Every pipeline's input first: connectors feed pipelines and are fed by them.
        let mut inputs = Vec::new();
        let mut pending = Vec::new();
        for pipeline in &config.service.pipelines {
            let mut stages = Vec::new();
            let mut gates = Vec::new();
            for pid in &pipeline.processors {
                let Some(p) = config.processors.iter().find(|p| &p.id == pid) else {
                    continue;
                };
                let processor = Processor::build(&p.id, &p.config, &registry);
                if let Processor::MemoryLimiter(m) = &processor {
                    gates.push(m.gate());
                    m.spawn_checker(extensions_rx.clone());
                }
                stages.push(processor);
            }
            let (tx, rx) = mpsc::channel(PIPELINE_CHANNEL_CAPACITY);
            inputs.push(PipelineInput {
                pipeline: pipeline.id.clone(),
                tx,
                gates,
            });
            pending.push((rx, stages));
        }

        // One task per connector and signal it is fed: its stage, then the pipelines it
        // receives into, which it waits for rather than dropping.
        let mut connector_inputs: BTreeMap<(ComponentId, Signal), mpsc::Sender<Batch>> =
            BTreeMap::new();
        let pipelines = &config.service.pipelines;
        for conn in config.connectors.iter().filter(|c| used.contains(&c.id)) {
            for signal in Signal::ALL {
                if !pipelines
                    .iter()
                    .any(|p| p.signal == signal && p.exporters.contains(&conn.id))
                {
                    continue;
                }
                let Some(out_signal) = conn.config.output(signal) else {
                    continue;
                };
                let outputs: Vec<Output> = pipelines
                    .iter()
                    .zip(&inputs)
                    .filter(|(p, _)| p.signal == out_signal && p.receivers.contains(&conn.id))
                    .map(|(_, input)| Output::Pipeline(input.tx.clone()))
                    .collect();
                let stages = crate::connectors::stages(&conn.id, &conn.config, &registry);
                let (tx, rx) = mpsc::channel(PIPELINE_CHANNEL_CAPACITY);
                connector_inputs.insert((conn.id.clone(), signal), tx);
                service.pipeline_tasks.push(tokio::spawn(run_pipeline(
                    format!("connector {}", conn.id),
                    signal,
                    rx,
                    Chain::new(stages),
                    outputs,
                )));
            }
        }

        let mut consumers: BTreeMap<ComponentId, Consumers> = BTreeMap::new();
        for ((pipeline, input), (rx, stages)) in pipelines.iter().zip(&inputs).zip(pending) {
            let outputs: Vec<Output> = pipeline
                .exporters
                .iter()
                .filter_map(|id| match exporter_handles.get(id) {
                    Some(h) => Some(Output::Exporter(h.clone())),
                    None => connector_inputs
                        .get(&(id.clone(), pipeline.signal))
                        .map(|tx| Output::Pipeline(tx.clone())),
                })
                .collect();
            for rid in &pipeline.receivers {
                if !config.receivers.iter().any(|r| &r.id == rid) {
                    continue; // a connector: fed above
                }
                let entry = consumers.entry(rid.clone()).or_default();
                let mut feeds = match entry.get(pipeline.signal) {
                    Some(c) => c.inputs().to_vec(),
                    None => Vec::new(),
                };
                feeds.push(input.clone());
                entry.set(pipeline.signal, Consumer::new(feeds));
            }
            let id = pipeline.id.clone();
            service.pipeline_tasks.push(tokio::spawn(run_pipeline(
                id,
                pipeline.signal,
                rx,
                Chain::new(stages),
                outputs,
            )));
        }
        drop(exporter_handles);
        drop(connector_inputs);
        drop(inputs);

        for rec in config.receivers.iter().filter(|r| used.contains(&r.id)) {
            let feeds = consumers.remove(&rec.id).unwrap_or_default();
            let tasks = match &rec.config {
                ReceiverConfig::Otlp(c) => {
                    OtlpReceiver::new(&rec.id.to_string(), c)
                        .start(feeds, &registry, receivers_rx.clone())
                        .await?
                }
                ReceiverConfig::Filelog(c) => {
                    let storage = c.storage.as_ref().and_then(|s| {
                        config.extensions.iter().find_map(|e| match &e.config {
                            ExtensionConfig::FileStorage(fs) if e.id.to_string() == *s => {
                                Some(fs.directory.clone())
                            }
                            _ => None,
                        })
                    });
                    FilelogReceiver::new(&rec.id.to_string(), c, storage)
                        .start(feeds, &registry, receivers_rx.clone())
                        .await?
                }
                ReceiverConfig::Prometheus(c) => {
                    PrometheusReceiver::new(&rec.id.to_string(), c)
                        .start(feeds, &registry, receivers_rx.clone())
                        .await?
                }
            };
            service.receiver_tasks.extend(tasks);
        }
        readiness.set(true);
        Ok(service)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stops receivers, lets pipelines flush and exporters drain, and gives up on what is
    /// still queued when the grace period ends (counted as failed, never silently lost).
    pub async fn shutdown(self) {
        self.readiness.set(false);
        let deadline = Instant::now() + self.shutdown_timeout;
        let _ = self.stop_receivers.send(true);
        let downstream = async {
            for t in self.receiver_tasks {
                let _ = t.await;
            }
            for t in self.pipeline_tasks {
                let _ = t.await;
            }
        };
        // Receivers' connections may linger; the pipelines close once the last one ends.
        let _ = tokio::time::timeout_at(deadline.into(), downstream).await;
        let mut exporters = self.exporter_tasks;
        let drained = tokio::time::timeout_at(deadline.into(), async {
            for t in exporters.iter_mut().filter(|t| !t.is_finished()) {
                let _ = t.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "Shutdown grace period ended; dropping what is still queued and counting it as failed."
            );
            let _ = self.abort_exports.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                for t in exporters.iter_mut().filter(|t| !t.is_finished()) {
                    let _ = t.await;
                }
            })
            .await;
        }
        let _ = self.stop_extensions.send(true);
    }
}

async fn run_pipeline(
    id: String,
    signal: Signal,
    mut rx: mpsc::Receiver<Batch>,
    mut chain: Chain,
    outputs: Vec<Output>,
) {
    let mut out = Vec::new();
    loop {
        let deadline = chain.next_deadline();
        tokio::select! {
            next = rx.recv() => match next {
                Some(batch) => chain.process(batch, Instant::now(), &mut out),
                None => break,
            },
            _ = sleep_until(deadline) => chain.tick(Instant::now(), &mut out),
        }
        for batch in out.drain(..) {
            fan_out(&outputs, batch).await;
        }
    }
    chain.flush(Instant::now(), &mut out);
    for batch in out.drain(..) {
        fan_out(&outputs, batch).await;
    }
    tracing::debug!(pipeline = %id, signal = %signal, "Pipeline stopped.");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Where a pipeline's output goes: an exporter's queue, or a connector's or (from a
/// connector) a pipeline's input, which is waited for: data inside the agent is not dropped.
#[derive(Clone)]
enum Output {
    Exporter(ExporterHandle),
    Pipeline(mpsc::Sender<Batch>),
}

impl Output {
    async fn send(&self, batch: Batch) {
        match self {
            Output::Exporter(h) => h.enqueue(batch).await,
            Output::Pipeline(tx) => {
                if let Err(e) = tx.send(batch).await {
                    // Only at shutdown, after the grace period.
                    e.0.fail_acks();
                }
            }
        }
    }
}

/// Gives each output its own copy (the bytes are shared, not copied).
async fn fan_out(outputs: &[Output], batch: Batch) {
    if let Some((last, rest)) = outputs.split_last() {
        for o in rest {
            o.send(batch.clone()).await;
        }
        last.send(batch).await;
    }
}

async fn start_metrics_server(
    addr: &str,
    registry: Registry,
    shutdown: ShutdownRx,
) -> Result<(), String> {
    use bytes::Bytes;
    use http_body_util::Full;
    let listener = server::bind(addr, "service.telemetry.metrics").await?;
    server::serve(
        listener,
        move |req: http::Request<hyper::body::Incoming>, _| {
            let registry = registry.clone();
            async move {
                if req.uri().path() != "/metrics" {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"not found")));
                    *r.status_mut() = http::StatusCode::NOT_FOUND;
                    return r;
                }
                let mut r = http::Response::new(Full::new(Bytes::from(registry.render())));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
        },
        shutdown,
    );
    Ok(())
}
