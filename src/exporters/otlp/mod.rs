//! The `otlp` (also `otlp_grpc`) exporter: OTLP over gRPC, sending the encoded request bytes
//! as they are, with the collector's keys and its retryable-status rules.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{
    Compression, Delivered, ExportError, QueueConfig, RetryConfig, TlsClientConfig, check_plaintext,
};
use crate::config::node::deserialize_duration;
use crate::otlp::Signal;
use crate::otlp::codec::RawCodec;
use crate::otlp::rpc;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporterConfig {
    pub endpoint: String,
    pub tls: TlsClientConfig,
    pub headers: BTreeMap<String, String>,
    pub compression: Compression,
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    pub retry_on_failure: RetryConfig,
    pub sending_queue: QueueConfig,
    pub balancer_name: Option<String>,
    pub wait_for_ready: bool,
}

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        OtlpExporterConfig {
            endpoint: String::new(),
            tls: TlsClientConfig::default(),
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            timeout: Duration::from_secs(5),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            balancer_name: None,
            wait_for_ready: false,
        }
    }
}

impl OtlpExporterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err("`endpoint` is required".into());
        }
        check_plaintext(&self.endpoint, &self.tls)?;
        self.sending_queue.validate()
    }
}

pub struct OtlpExporter {
    channel: Channel,
    compression: Option<CompressionEncoding>,
    timeout: Duration,
    headers: Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
}

impl OtlpExporter {
    pub fn new(config: &OtlpExporterConfig) -> Result<OtlpExporter, String> {
        let uri = if config.endpoint.contains("://") {
            config.endpoint.clone()
        } else {
            format!("http://{}", config.endpoint)
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| format!("invalid endpoint `{}`: {e}", config.endpoint))?
            .connect_timeout(config.timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let compression = match config.compression {
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
            Compression::None | Compression::Empty => None,
        };
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let key = k
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value = v
                .parse()
                .map_err(|_| format!("invalid value for header `{k}`"))?;
            headers.push((key, value));
        }
        Ok(OtlpExporter {
            channel,
            compression,
            timeout: config.timeout,
            headers,
        })
    }

    pub async fn send(&self, signal: Signal, payload: &Bytes) -> Result<Delivered, ExportError> {
        let mut client = tonic::client::Grpc::new(self.channel.clone());
        if let Some(enc) = self.compression {
            client = client.send_compressed(enc);
        }
        client.ready().await.map_err(|e| ExportError::Retryable {
            message: format!("connection not ready: {e}"),
            retry_after: None,
        })?;
        let mut request = tonic::Request::new(payload.clone());
        request.set_timeout(self.timeout);
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
        match client.unary(request, path, RawCodec).await {
            Ok(response) => Ok(Delivered {
                rejected: rejected_items(signal, response.get_ref()),
            }),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// Reads `partial_success.rejected_*` from an encoded export response.
pub fn rejected_items(signal: Signal, body: &[u8]) -> u64 {
    use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
    match signal {
        Signal::Traces => trace::v1::ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64),
        Signal::Metrics => metrics::v1::ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_data_points.max(0) as u64),
        Signal::Logs => logs::v1::ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_log_records.max(0) as u64),
    }
}

/// OTLP's rule for which gRPC codes are worth retrying, with the server's `RetryInfo`.
fn classify(status: &Status) -> ExportError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Retryable {
            message,
            retry_after: rpc::retry_delay(status.details()),
        },
        // Only worth retrying when the server says when (OTLP spec; the collector does the same).
        Code::ResourceExhausted => match rpc::retry_delay(status.details()) {
            Some(delay) => ExportError::Retryable {
                message,
                retry_after: Some(delay),
            },
            None => ExportError::Permanent(message),
        },
        _ => ExportError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes_like_otlp() {
        assert!(matches!(
            classify(&Status::unavailable("x")),
            ExportError::Retryable { .. }
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("x")),
            ExportError::Permanent(_)
        ));
        assert!(matches!(
            classify(&Status::resource_exhausted("x")),
            ExportError::Permanent(_)
        ));
        let details = rpc::status_with_retry_info(8, "later", Duration::from_secs(2));
        let with_info = Status::with_details(Code::ResourceExhausted, "later", details.into());
        assert!(matches!(
            classify(&with_info),
            ExportError::Retryable {
                retry_after: Some(_),
                ..
            }
        ));
    }
}
