//! Exporters and what they share: the sending queue, consumers, retry with backoff, and the
//! collector's exporter self-metrics. Each exporter only knows how to send one request.

pub mod debug;
pub mod file;
pub mod loadbalancing;
pub mod otlp;
pub mod otlphttp;
pub mod prometheusremotewrite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::config::node::deserialize_duration;
use crate::config::{ComponentId, ExporterConfig};
use crate::otlp::{Batch, Signal};
use crate::telemetry::metrics::ExporterMetrics;
use crate::telemetry::server::{ShutdownRx, stopped};
use crate::telemetry::{Gauge, Registry};

/// `retry_on_failure`, with the collector's defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "deserialize_duration")]
    pub initial_interval: Duration,
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_interval: Duration,
    /// Zero means retry forever.
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// `sending_queue`, with the collector's defaults; sized in requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub enabled: bool,
    pub queue_size: usize,
    pub num_consumers: usize,
    pub block_on_overflow: bool,
    pub sizer: String,
    pub wait_for_result: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            queue_size: 1000,
            num_consumers: 10,
            block_on_overflow: false,
            sizer: "requests".to_string(),
            wait_for_result: false,
        }
    }
}

impl QueueConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.sizer != "requests" {
            return Err(format!(
                "sending_queue.sizer `{}` is not supported yet (only `requests`)",
                self.sizer
            ));
        }
        if self.enabled && (self.queue_size == 0 || self.num_consumers == 0) {
            return Err(
                "sending_queue.queue_size and num_consumers must be greater than zero".into(),
            );
        }
        Ok(())
    }
}

/// Client `tls` settings. Only plaintext is built so far, so anything else is refused at
/// start-up rather than silently sent in the clear.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    pub insecure: bool,
    pub insecure_skip_verify: bool,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name_override: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
    #[serde(rename = "")]
    Empty,
}

impl Compression {
    pub fn is_none(self) -> bool {
        matches!(self, Compression::None | Compression::Empty)
    }
}

/// Why a send failed, in OTLP's terms: retryable failures are tried again.
#[derive(Debug)]
pub enum ExportError {
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    Permanent(String),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Retryable { message, .. } => write!(f, "{message} (retryable)"),
            ExportError::Permanent(m) => write!(f, "{m} (permanent)"),
        }
    }
}

/// A successful send may still have had some items rejected (OTLP partial success).
#[derive(Debug, Default)]
pub struct Delivered {
    pub rejected: u64,
}

pub enum Exporter {
    Otlp(otlp::OtlpExporter),
    OtlpHttp(Box<otlphttp::OtlpHttpExporter>),
    File(file::FileExporter),
    Debug(debug::DebugExporter),
    PrometheusRemoteWrite(Box<prometheusremotewrite::PrometheusRemoteWriteExporter>),
}

impl Exporter {
    fn build(id: &ComponentId, config: &ExporterConfig) -> Result<Exporter, String> {
        Ok(match config {
            ExporterConfig::Otlp(c) => Exporter::Otlp(otlp::OtlpExporter::new(c)?),
            ExporterConfig::OtlpHttp(c) => {
                Exporter::OtlpHttp(Box::new(otlphttp::OtlpHttpExporter::new(c)?))
            }
            ExporterConfig::File(c) => Exporter::File(file::FileExporter::new(c)?),
            ExporterConfig::Debug(c) => Exporter::Debug(debug::DebugExporter::new(id, c)),
            ExporterConfig::PrometheusRemoteWrite(c) => Exporter::PrometheusRemoteWrite(Box::new(
                prometheusremotewrite::PrometheusRemoteWriteExporter::new(c)?,
            )),
            ExporterConfig::LoadBalancing(_) => {
                return Err("the loadbalancing exporter is started by its router".into());
            }
        })
    }

    async fn send(&self, batch: &Batch) -> Result<Delivered, ExportError> {
        let signal = batch.signal;
        match self {
            Exporter::Otlp(e) => e.send(batch).await,
            Exporter::OtlpHttp(e) => e.send(signal, &batch.to_bytes()).await,
            Exporter::File(e) => e.send(signal, &batch.to_bytes()).await,
            Exporter::Debug(e) => e.send(signal, &batch.to_bytes(), batch.items),
            Exporter::PrometheusRemoteWrite(e) => e.send(signal, &batch.to_bytes()).await,
        }
    }
}

fn queue_and_retry(config: &ExporterConfig) -> (QueueConfig, RetryConfig) {
    match config {
        ExporterConfig::Otlp(c) => (c.sending_queue.clone(), c.retry_on_failure.clone()),
        ExporterConfig::OtlpHttp(c) => (c.sending_queue.clone(), c.retry_on_failure.clone()),
        ExporterConfig::PrometheusRemoteWrite(c) => (c.queue(), c.retry_on_failure.clone()),
        ExporterConfig::LoadBalancing(c) => (
            c.sending_queue.clone(),
            c.protocol.otlp.retry_on_failure.clone(),
        ),
        // Local sinks: one writer, no retries, and the pipeline waits for them.
        ExporterConfig::File(_) | ExporterConfig::Debug(_) => (
            QueueConfig {
                queue_size: 64,
                num_consumers: 1,
                block_on_overflow: true,
                ..QueueConfig::default()
            },
            RetryConfig {
                enabled: false,
                ..RetryConfig::default()
            },
        ),
    }
}

/// The pipeline's side of an exporter: its sending queue.
#[derive(Clone)]
pub struct ExporterHandle {
    pub id: String,
    tx: mpsc::Sender<Batch>,
    block: bool,
    queue_size: Gauge,
    metrics: Arc<[ExporterMetrics; 3]>,
}

impl ExporterHandle {
    /// Enqueues a batch: waits for room when blocking, else drops and counts when full.
    pub async fn enqueue(&self, batch: Batch) {
        let items = batch.items as u64;
        let signal = batch.signal;
        self.queue_size.add(1);
        let result = if self.block {
            self.tx.send(batch).await.map_err(|e| e.0)
        } else {
            self.tx.try_send(batch).map_err(|e| match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            })
        };
        if let Err(batch) = result {
            batch.fail_acks();
            self.queue_size.add(-1);
            self.metrics[signal_index(signal)].enqueue_failed.add(items);
            tracing::warn!(exporter = %self.id, items, "Dropping data because the sending queue is full.");
        }
    }
}

/// The collector's exporter metrics: the queue's size gauge (its capacity is set here) and the
/// item counters per signal, with series only for the signals the exporter carries, as the
/// collector reports them.
pub fn exporter_metrics(
    registry: &Registry,
    name: &str,
    capacity: usize,
    signals: &[Signal],
) -> (Gauge, Arc<[ExporterMetrics; 3]>) {
    let labels = [("exporter", name)];
    let queue_size = registry.gauge(
        "otelcol_exporter_queue_size",
        "Current size of the retry queue (in batches).",
        &labels,
    );
    registry
        .gauge(
            "otelcol_exporter_queue_capacity",
            "Fixed capacity of the retry queue (in batches).",
            &labels,
        )
        .set(capacity as i64);
    let unused = Registry::default();
    let metrics = Arc::new(Signal::ALL.map(|s| {
        let r = if signals.contains(&s) {
            registry
        } else {
            &unused
        };
        ExporterMetrics::new(r, name, s)
    }));
    (queue_size, metrics)
}

fn signal_index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

/// Builds an exporter and starts its queue consumers. They run until the queue closes (every
/// pipeline feeding it has stopped) and it is drained, or until `abort`, after which what is
/// left is counted as failed.
pub fn start(
    id: &ComponentId,
    config: &ExporterConfig,
    signals: &[Signal],
    registry: &Registry,
    abort: ShutdownRx,
) -> Result<(ExporterHandle, Vec<JoinHandle<()>>), String> {
    if let ExporterConfig::LoadBalancing(c) = config {
        return loadbalancing::start(id, c, signals, registry, abort)
            .map_err(|e| format!("exporter {id}: {e}"));
    }
    let exporter =
        Arc::new(Exporter::build(id, config).map_err(|e| format!("exporter {id}: {e}"))?);
    let (queue, retry) = queue_and_retry(config);
    let (capacity, consumers, block) = if queue.enabled {
        (
            queue.queue_size,
            queue.num_consumers,
            queue.block_on_overflow,
        )
    } else {
        (1, 1, true)
    };
    let name = id.to_string();
    let (queue_size, metrics) = exporter_metrics(registry, &name, capacity, signals);
    let (tx, rx) = mpsc::channel::<Batch>(capacity);
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let worker = Worker {
            id: name.clone(),
            exporter: exporter.clone(),
            retry: retry.clone(),
            metrics: metrics.clone(),
            queue_size: queue_size.clone(),
        };
        let rx = rx.clone();
        let abort = abort.clone();
        tasks.push(tokio::spawn(async move { worker.run(rx, abort).await }));
    }
    let handle = ExporterHandle {
        id: name,
        tx,
        block,
        queue_size,
        metrics,
    };
    Ok((handle, tasks))
}

struct Worker {
    id: String,
    exporter: Arc<Exporter>,
    retry: RetryConfig,
    metrics: Arc<[ExporterMetrics; 3]>,
    queue_size: Gauge,
}

impl Worker {
    async fn run(self, rx: Arc<Mutex<mpsc::Receiver<Batch>>>, mut abort: ShutdownRx) {
        loop {
            let next = { rx.lock().await.recv().await };
            let Some(batch) = next else { return };
            self.queue_size.add(-1);
            if *abort.borrow() {
                self.fail(&batch, "shutdown deadline passed before it could be sent");
                continue;
            }
            self.deliver(batch, &mut abort).await;
        }
    }

    fn fail(&self, batch: &Batch, why: &str) {
        batch.fail_acks();
        self.metrics[signal_index(batch.signal)]
            .send_failed
            .add(batch.items as u64);
        tracing::error!(exporter = %self.id, items = batch.items, signal = %batch.signal, reason = why, "Dropping data.");
    }

    async fn deliver(&self, batch: Batch, abort: &mut ShutdownRx) {
        let metrics = &self.metrics[signal_index(batch.signal)];
        let started = Instant::now();
        let mut interval = self.retry.initial_interval;
        loop {
            let attempt = tokio::select! {
                r = self.exporter.send(&batch) => r,
                _ = stopped(abort) => {
                    self.fail(&batch, "shutdown deadline passed while sending");
                    return;
                }
            };
            match attempt {
                Ok(delivered) => {
                    let rejected = delivered.rejected.min(batch.items as u64);
                    metrics.sent.add(batch.items as u64 - rejected);
                    if rejected > 0 {
                        batch.fail_acks();
                        metrics.send_failed.add(rejected);
                        tracing::warn!(exporter = %self.id, rejected, "The backend rejected part of a request.");
                    }
                    return;
                }
                Err(ExportError::Permanent(message)) => {
                    self.fail(&batch, &format!("permanent error: {message}"));
                    return;
                }
                Err(ExportError::Retryable {
                    message,
                    retry_after,
                }) => {
                    if !self.retry.enabled {
                        self.fail(&batch, &format!("retries disabled: {message}"));
                        return;
                    }
                    let wait = retry_after
                        .unwrap_or_else(|| jitter(interval, self.retry.randomization_factor));
                    let budget = self.retry.max_elapsed_time;
                    if !budget.is_zero() && started.elapsed() + wait > budget {
                        self.fail(
                            &batch,
                            &format!("gave up after max_elapsed_time: {message}"),
                        );
                        return;
                    }
                    metrics.retries.add(batch.items as u64);
                    tracing::info!(exporter = %self.id, error = %message, retry_in = ?wait, "Export failed; will retry.");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped(abort) => {
                            self.fail(&batch, &format!("shutdown deadline passed while retrying: {message}"));
                            return;
                        }
                    }
                    interval = interval
                        .mul_f64(self.retry.multiplier.max(1.0))
                        .min(self.retry.max_interval.max(self.retry.initial_interval));
                }
            }
        }
    }
}

fn jitter(interval: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let delta = interval.as_secs_f64() * factor.min(1.0);
    let low = interval.as_secs_f64() - delta;
    let secs = low + rand::rng().random::<f64>() * 2.0 * delta;
    Duration::from_secs_f64(secs.max(0.0))
}

/// Sends one HTTP request and reads the whole answer within `timeout`: the status, the
/// `Retry-After` delay if any, and the body. No connection or no answer in time is retryable.
pub async fn http_exchange(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
    timeout: Duration,
) -> Result<(http::StatusCode, Option<Duration>, bytes::Bytes), ExportError> {
    use http_body_util::BodyExt;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| ExportError::Retryable {
                message: format!("request failed: {e}"),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers().get(http::header::RETRY_AFTER));
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, ExportError>((status, retry_after, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ExportError::Retryable {
            message: format!("no response within {timeout:?}"),
            retry_after: None,
        })?
}

/// Parses a `Retry-After` header value given in seconds.
pub fn parse_retry_after(value: Option<&http::HeaderValue>) -> Option<Duration> {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Checks a client endpoint and `tls` block: plaintext only, for now.
pub fn check_plaintext(endpoint: &str, tls: &TlsClientConfig) -> Result<(), String> {
    if endpoint.starts_with("https://") {
        return Err(format!(
            "TLS is not supported yet: use an http:// endpoint instead of `{endpoint}`"
        ));
    }
    if !tls.insecure && !endpoint.starts_with("http://") {
        return Err(
            "TLS to backends is not supported yet: set `tls.insecure: true` to send plaintext"
                .into(),
        );
    }
    if tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some() {
        return Err("tls.ca_file, cert_file and key_file are not supported yet".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_factor() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10), 0.5);
            assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(15));
        }
    }

    #[test]
    fn plaintext_rules() {
        let insecure = TlsClientConfig {
            insecure: true,
            ..Default::default()
        };
        assert!(check_plaintext("localhost:4317", &insecure).is_ok());
        assert!(check_plaintext("http://localhost:4318", &TlsClientConfig::default()).is_ok());
        assert!(check_plaintext("localhost:4317", &TlsClientConfig::default()).is_err());
        assert!(check_plaintext("https://x:4318", &insecure).is_err());
    }
}
