//! The `prometheus` receiver: scrapes Prometheus and OpenMetrics endpoints named by
//! `scrape_configs` (static targets) and turns each scrape into one OTLP metrics request.

pub mod config;
pub mod convert;
pub mod discovery;
pub mod encode;
pub mod parser;
pub mod relabel;
pub mod scrape;

use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use crate::otlp::Signal;
use crate::receivers::otlp::Consumers;
use crate::telemetry::Registry;
use crate::telemetry::metrics::ReceiverMetrics;
use crate::telemetry::server::ShutdownRx;
use config::PrometheusReceiverConfig;

pub struct PrometheusReceiver {
    id: String,
    config: PrometheusReceiverConfig,
}

impl PrometheusReceiver {
    pub fn new(id: &str, config: &PrometheusReceiverConfig) -> PrometheusReceiver {
        PrometheusReceiver {
            id: id.to_string(),
            config: config.clone(),
        }
    }

    /// Starts one scrape loop per target; they stop at shutdown.
    pub async fn start(
        &self,
        consumers: Consumers,
        registry: &Registry,
        shutdown: ShutdownRx,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        let jobs = self
            .config
            .jobs()
            .map_err(|e| format!("receiver {}: {e}", self.id))?;
        let consumer = consumers.get(Signal::Metrics).cloned();
        let metrics = ReceiverMetrics::new(registry, &self.id, "http", Signal::Metrics);
        let mut tasks = Vec::new();
        for job in jobs {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(job.timeout));
            let client: scrape::HttpClient = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector);
            let job = Arc::new(job);
            let targets =
                scrape::targets(&job).map_err(|e| format!("receiver {}: {e}", self.id))?;
            tracing::info!(receiver = %self.id, job = %job.name, targets = targets.len(), interval = ?job.interval, "Scraping.");
            if !job.file_sd.is_empty() {
                let template = discovery::LoopTemplate {
                    receiver: self.id.clone(),
                    job: job.clone(),
                    client: client.clone(),
                    consumer: consumer.clone(),
                    metrics: metrics.clone(),
                };
                tasks.push(tokio::spawn(discovery::manage(
                    template,
                    targets,
                    shutdown.clone(),
                )));
                continue;
            }
            for target in targets {
                let task = scrape::TargetLoop {
                    receiver: self.id.clone(),
                    job: job.clone(),
                    target,
                    client: client.clone(),
                    consumer: consumer.clone(),
                    metrics: metrics.clone(),
                    removed: None,
                };
                tasks.push(tokio::spawn(task.run(shutdown.clone())));
            }
        }
        Ok(tasks)
    }
}
