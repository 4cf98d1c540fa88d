//! The `otlp` receiver: OTLP over gRPC and HTTP (protobuf and JSON) for all three signals.
//! Requests are validated and counted on the wire format and passed on as bytes.

pub mod config;
mod grpc;
mod http;

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::otlp::{Batch, Signal};
use crate::pipeline::consumer::{Consumer, Refusal};
use crate::telemetry::Registry;
use crate::telemetry::metrics::ReceiverMetrics;
use crate::telemetry::server::ShutdownRx;
use config::OtlpReceiverConfig;

/// The consumers a receiver feeds, one slot per signal (empty when no pipeline wants it).
#[derive(Clone, Debug, Default)]
pub struct Consumers {
    pub traces: Option<Consumer>,
    pub metrics: Option<Consumer>,
    pub logs: Option<Consumer>,
}

impl Consumers {
    pub fn get(&self, signal: Signal) -> Option<&Consumer> {
        match signal {
            Signal::Traces => self.traces.as_ref(),
            Signal::Metrics => self.metrics.as_ref(),
            Signal::Logs => self.logs.as_ref(),
        }
    }

    pub fn set(&mut self, signal: Signal, consumer: Consumer) {
        match signal {
            Signal::Traces => self.traces = Some(consumer),
            Signal::Metrics => self.metrics = Some(consumer),
            Signal::Logs => self.logs = Some(consumer),
        }
    }
}

/// Why a request was not accepted.
#[derive(Debug)]
pub enum Rejection {
    /// Permanent: the client must not retry.
    Invalid(String),
    /// Retryable: the pipeline is full, memory is high, or the agent is stopping.
    Refused(Refusal),
    /// No pipeline takes this signal from this receiver.
    NoPipeline(Signal),
}

/// Per transport: consumers plus the counters to keep.
struct Intake {
    consumers: Consumers,
    metrics: [ReceiverMetrics; 3],
}

impl Intake {
    fn new(consumers: Consumers, registry: &Registry, id: &str, transport: &str) -> Intake {
        let unused = Registry::default();
        let metrics = Signal::ALL.map(|s| {
            let r = if consumers.get(s).is_some() {
                registry
            } else {
                &unused
            };
            ReceiverMetrics::new(r, id, transport, s)
        });
        Intake { consumers, metrics }
    }

    /// Validates an encoded request and hands it to the pipelines.
    async fn accept(&self, signal: Signal, payload: Bytes) -> Result<(), Rejection> {
        let consumer = self
            .consumers
            .get(signal)
            .ok_or(Rejection::NoPipeline(signal))?;
        let metrics = &self.metrics[signal as usize];
        let batch =
            Batch::from_encoded(signal, payload).map_err(|e| Rejection::Invalid(e.to_string()))?;
        if batch.items == 0 {
            return Ok(());
        }
        let items = batch.items as u64;
        match consumer.consume(batch).await {
            Ok(()) => {
                metrics.accepted.add(items);
                Ok(())
            }
            Err(refusal) => {
                metrics.refused.add(items);
                Err(Rejection::Refused(refusal))
            }
        }
    }
}

pub struct OtlpReceiver {
    id: String,
    config: OtlpReceiverConfig,
}

impl OtlpReceiver {
    pub fn new(id: &str, config: &OtlpReceiverConfig) -> OtlpReceiver {
        OtlpReceiver {
            id: id.to_string(),
            config: config.clone(),
        }
    }

    /// Binds every configured listener (failing start-up if one cannot) and serves until
    /// shutdown.
    pub async fn start(
        &self,
        consumers: Consumers,
        registry: &Registry,
        shutdown: ShutdownRx,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        self.config
            .validate()
            .map_err(|e| format!("receiver {}: {e}", self.id))?;
        let mut tasks = Vec::new();
        if let Some(g) = &self.config.protocols.grpc {
            let intake = Arc::new(Intake::new(consumers.clone(), registry, &self.id, "grpc"));
            let listener = crate::telemetry::server::bind(
                &g.endpoint,
                &format!("receiver {} (grpc)", self.id),
            )
            .await?;
            tracing::info!(receiver = %self.id, endpoint = %g.endpoint, "Listening for OTLP/gRPC.");
            tasks.push(grpc::serve(listener, g, intake, shutdown.clone()));
        }
        if let Some(h) = &self.config.protocols.http {
            let intake = Arc::new(Intake::new(consumers, registry, &self.id, "http"));
            let listener = crate::telemetry::server::bind(
                &h.endpoint,
                &format!("receiver {} (http)", self.id),
            )
            .await?;
            tracing::info!(receiver = %self.id, endpoint = %h.endpoint, "Listening for OTLP/HTTP.");
            tasks.push(http::serve(listener, h, intake, shutdown));
        }
        Ok(tasks)
    }
}
