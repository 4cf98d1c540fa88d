//! The `prometheusremotewrite` exporter: OTLP metrics → Prometheus remote write 1.0
//! (`prometheus.WriteRequest`, snappy), split at `max_batch_size_bytes`, with the collector's
//! keys. Its queue has one consumer, as the collector's does, so samples of a series are
//! never sent out of order.

pub mod prompb;
pub mod translate;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{Delivered, ExportError, QueueConfig, RetryConfig, TlsClientConfig, check_plaintext};
use crate::config::node::deserialize_duration;
use crate::otlp::Signal;
use crate::receivers::prometheus::config::Unsupported;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusRemoteWriteConfig {
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    pub tls: TlsClientConfig,
    pub compression: Option<String>,
    pub namespace: String,
    pub external_labels: BTreeMap<String, String>,
    pub resource_to_telemetry_conversion: Enabled,
    pub target_info: TargetInfo,
    pub add_metric_suffixes: bool,
    pub send_metadata: bool,
    pub export_created_metric: Enabled,
    pub remote_write_queue: RemoteWriteQueue,
    pub retry_on_failure: RetryConfig,
    pub max_batch_size_bytes: usize,
    pub max_batch_request_parallelism: Option<usize>,
    pub protobuf_message: Option<String>,
    pub wal: Option<Unsupported>,
    pub auth: Option<Unsupported>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetInfo {
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        TargetInfo { enabled: true }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteQueue {
    pub enabled: bool,
    pub queue_size: usize,
    /// The collector sends the requests one batch splits into with this much parallelism;
    /// sluice sends them in order (see the module doc).
    pub num_consumers: usize,
}

impl Default for RemoteWriteQueue {
    fn default() -> Self {
        RemoteWriteQueue {
            enabled: true,
            queue_size: 10000,
            num_consumers: 5,
        }
    }
}

impl Default for PrometheusRemoteWriteConfig {
    fn default() -> Self {
        PrometheusRemoteWriteConfig {
            endpoint: String::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            tls: TlsClientConfig::default(),
            compression: None,
            namespace: String::new(),
            external_labels: BTreeMap::new(),
            resource_to_telemetry_conversion: Enabled::default(),
            target_info: TargetInfo::default(),
            add_metric_suffixes: true,
            send_metadata: false,
            export_created_metric: Enabled::default(),
            remote_write_queue: RemoteWriteQueue::default(),
            // The collector's defaults for this exporter.
            retry_on_failure: RetryConfig {
                initial_interval: Duration::from_millis(50),
                max_interval: Duration::from_millis(200),
                max_elapsed_time: Duration::from_secs(60),
                ..RetryConfig::default()
            },
            max_batch_size_bytes: 3_000_000,
            max_batch_request_parallelism: None,
            protobuf_message: None,
            wal: None,
            auth: None,
        }
    }
}

impl PrometheusRemoteWriteConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err("`endpoint` is required".into());
        }
        if !self.endpoint.starts_with("http://") && !self.endpoint.starts_with("https://") {
            return Err(format!(
                "endpoint `{}` must start with http:// or https://",
                self.endpoint
            ));
        }
        check_plaintext(&self.endpoint, &self.tls)?;
        if let Some(c) = self.compression.as_deref()
            && c != "snappy"
        {
            return Err(format!(
                "compression `{c}` is not supported (remote write 1.0 uses `snappy`)"
            ));
        }
        if let Some(m) = self.protobuf_message.as_deref()
            && m != "prometheus.WriteRequest"
        {
            return Err(format!(
                "protobuf_message `{m}` is not supported yet (only `prometheus.WriteRequest`, remote write 1.0)"
            ));
        }
        if self.send_metadata {
            return Err("send_metadata is not supported yet".into());
        }
        if self.export_created_metric.enabled {
            return Err("export_created_metric is not supported yet".into());
        }
        for (k, v) in &self.external_labels {
            if !crate::receivers::prometheus::parser::is_label_name(k) {
                return Err(format!("external_labels: `{k}` is not a valid label name"));
            }
            if v.is_empty() {
                return Err(format!("external_labels: the value of `{k}` is empty"));
            }
        }
        if self.max_batch_size_bytes == 0 {
            return Err("max_batch_size_bytes must be greater than zero".into());
        }
        let q = &self.remote_write_queue;
        if q.enabled && (q.queue_size == 0 || q.num_consumers == 0) {
            return Err(
                "remote_write_queue.queue_size and num_consumers must be greater than zero".into(),
            );
        }
        Ok(())
    }

    /// The shared sending queue: one consumer, so batches go out in order.
    pub fn queue(&self) -> QueueConfig {
        QueueConfig {
            enabled: self.remote_write_queue.enabled,
            queue_size: self.remote_write_queue.queue_size,
            num_consumers: 1,
            block_on_overflow: false,
            ..QueueConfig::default()
        }
    }

    fn settings(&self) -> translate::Settings {
        translate::Settings {
            namespace: self.namespace.clone(),
            external_labels: self.external_labels.clone(),
            add_metric_suffixes: self.add_metric_suffixes,
            resource_to_telemetry: self.resource_to_telemetry_conversion.enabled,
            target_info: self.target_info.enabled,
        }
    }
}

pub struct PrometheusRemoteWriteExporter {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    headers: http::HeaderMap,
    timeout: Duration,
    max_batch_size_bytes: usize,
    settings: translate::Settings,
    /// Label sets of known series; held only while a request is translated.
    labels: std::sync::Mutex<translate::LabelCache>,
}

impl PrometheusRemoteWriteExporter {
    pub fn new(config: &PrometheusRemoteWriteConfig) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let url = config
            .endpoint
            .parse::<http::Uri>()
            .map_err(|e| format!("invalid endpoint `{}`: {e}", config.endpoint))?;
        let mut headers = http::HeaderMap::new();
        for (k, v) in &config.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|_| format!("invalid value for header `{k}`"))?;
            headers.insert(name, value);
        }
        Ok(PrometheusRemoteWriteExporter {
            client,
            url,
            headers,
            timeout: config.timeout,
            max_batch_size_bytes: config.max_batch_size_bytes,
            settings: config.settings(),
            labels: Default::default(),
        })
    }

    pub async fn send(&self, signal: Signal, payload: &Bytes) -> Result<Delivered, ExportError> {
        if signal != Signal::Metrics {
            return Err(ExportError::Permanent(format!(
                "prometheusremotewrite exports metrics only, not {signal}"
            )));
        }
        let translated = {
            let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
            translate::translate(
                payload,
                &self.settings,
                self.max_batch_size_bytes,
                &mut labels,
            )
        }
        .map_err(|e| ExportError::Permanent(format!("invalid OTLP metrics: {e}")))?;
        if translated.dropped > 0 {
            tracing::debug!(
                dropped = translated.dropped,
                "Exponential histogram points cannot be sent as classic series; dropped."
            );
        }
        for body in &translated.requests {
            self.post(body).await?;
        }
        Ok(Delivered {
            rejected: translated.dropped,
        })
    }

    /// Posts one snappy-compressed `WriteRequest`.
    async fn post(&self, body: &Bytes) -> Result<(), ExportError> {
        let mut http_request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(
                http::header::USER_AGENT,
                concat!("sluice/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()))
            .map_err(|e| ExportError::Permanent(e.to_string()))?;
        for (k, v) in &self.headers {
            http_request.headers_mut().insert(k.clone(), v.clone());
        }
        let (status, retry_after, body) =
            super::http_exchange(&self.client, http_request, self.timeout).await?;
        if status.is_success() {
            return Ok(());
        }
        let message = format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(256)]).trim_end()
        );
        if status.as_u16() == 429 || status.is_server_error() {
            Err(ExportError::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(ExportError::Permanent(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use http_body_util::BodyExt;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    type Seen = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

    /// A remote-write backend answering with `statuses` in turn (then 204), recording requests.
    async fn backend(statuses: Vec<(u16, Option<&'static str>)>) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let queue = Arc::new(Mutex::new(statuses.into_iter()));
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let recorded = seen.clone();
        crate::telemetry::server::serve(
            listener,
            move |req: http::Request<hyper::body::Incoming>, _| {
                let recorded = recorded.clone();
                let queue = queue.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    recorded.lock().unwrap().push((parts.headers, body));
                    let (status, retry_after) = queue.lock().unwrap().next().unwrap_or((204, None));
                    let mut r =
                        http::Response::new(Full::new(Bytes::from_static(b"backend says no")));
                    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    if let Some(v) = retry_after {
                        r.headers_mut()
                            .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(v));
                    }
                    r
                }
            },
            rx,
        );
        std::mem::forget(_tx);
        (url, seen)
    }

    fn payload() -> Bytes {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("svc".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "temperature".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: 5_000_000_000,
                                value: Some(number_data_point::Value::AsDouble(21.5)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Bytes::from(request.encode_to_vec())
    }

    fn exporter(url: &str) -> PrometheusRemoteWriteExporter {
        let config = PrometheusRemoteWriteConfig {
            endpoint: url.into(),
            headers: [("X-Scope-OrgID".to_string(), "tenant-1".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        config.validate().unwrap();
        PrometheusRemoteWriteExporter::new(&config).unwrap()
    }

    #[tokio::test]
    async fn sends_snappy_protobuf_with_the_remote_write_headers() {
        let (url, seen) = backend(vec![]).await;
        exporter(&url)
            .send(Signal::Metrics, &payload())
            .await
            .unwrap();
        let (headers, body) = seen.lock().unwrap()[0].clone();
        assert_eq!(headers["content-encoding"], "snappy");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-prometheus-remote-write-version"], "0.1.0");
        assert!(
            headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("sluice/")
        );
        assert_eq!(headers["x-scope-orgid"], "tenant-1");
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let write = prompb::WriteRequest::decode(raw.as_slice()).unwrap();
        let series = &write.timeseries[0];
        let labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(labels, vec![("__name__", "temperature"), ("job", "svc")]);
        assert_eq!(series.samples[0].value, 21.5);
        assert_eq!(series.samples[0].timestamp, 5000);
    }

    #[tokio::test]
    async fn retries_5xx_and_429_but_not_other_4xx() {
        let (url, _) = backend(vec![
            (500, None),
            (503, None),
            (429, Some("7")),
            (400, None),
            (404, None),
        ])
        .await;
        let e = exporter(&url);
        for expected_retry_after in [None, None, Some(Duration::from_secs(7))] {
            match e.send(Signal::Metrics, &payload()).await {
                Err(ExportError::Retryable { retry_after, .. }) => {
                    assert_eq!(retry_after, expected_retry_after)
                }
                other => panic!("expected a retryable error, got {other:?}"),
            }
        }
        for _ in 0..2 {
            match e.send(Signal::Metrics, &payload()).await {
                Err(ExportError::Permanent(m)) => assert!(m.contains("backend says no"), "{m}"),
                other => panic!("expected a permanent error, got {other:?}"),
            }
        }
        assert!(e.send(Signal::Metrics, &payload()).await.is_ok());
    }

    #[test]
    fn config_rules() {
        let ok = PrometheusRemoteWriteConfig {
            endpoint: "http://prom:9090/api/v1/write".into(),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.queue().num_consumers, 1);
        for (bad, why) in [
            (
                PrometheusRemoteWriteConfig::default(),
                "`endpoint` is required",
            ),
            (
                PrometheusRemoteWriteConfig {
                    endpoint: "https://prom/api/v1/write".into(),
                    ..Default::default()
                },
                "TLS is not supported yet",
            ),
            (
                PrometheusRemoteWriteConfig {
                    external_labels: [("1bad".to_string(), "x".to_string())]
                        .into_iter()
                        .collect(),
                    ..ok.clone()
                },
                "not a valid label name",
            ),
            (
                PrometheusRemoteWriteConfig {
                    send_metadata: true,
                    ..ok.clone()
                },
                "not supported yet",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
