//! The `otlphttp` (also `otlp_http`) exporter: OTLP/HTTP with protobuf bodies, per-signal
//! endpoints, gzip or zstd, and the collector's retryable-status rules.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{
    Compression, Delivered, ExportError, QueueConfig, RetryConfig, TlsClientConfig, check_plaintext,
};
use crate::config::node::deserialize_duration;
use crate::otlp::Signal;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpExporterConfig {
    pub endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    pub tls: TlsClientConfig,
    pub headers: BTreeMap<String, String>,
    pub compression: Compression,
    pub encoding: String,
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    pub retry_on_failure: RetryConfig,
    pub sending_queue: QueueConfig,
}

impl Default for OtlpHttpExporterConfig {
    fn default() -> Self {
        OtlpHttpExporterConfig {
            endpoint: None,
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            tls: TlsClientConfig::default(),
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            encoding: "proto".to_string(),
            timeout: Duration::from_secs(30),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
        }
    }
}

impl OtlpHttpExporterConfig {
    pub fn validate(&self) -> Result<(), String> {
        let urls: Vec<&String> = [
            &self.endpoint,
            &self.traces_endpoint,
            &self.metrics_endpoint,
            &self.logs_endpoint,
        ]
        .into_iter()
        .flatten()
        .collect();
        if urls.is_empty() {
            return Err("`endpoint` (or a per-signal endpoint) is required".into());
        }
        for url in urls {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!(
                    "endpoint `{url}` must start with http:// or https://"
                ));
            }
            let insecure = TlsClientConfig {
                insecure: true,
                ..self.tls.clone()
            };
            check_plaintext(url, &insecure)?;
        }
        if self.encoding != "proto" {
            return Err(format!(
                "encoding `{}` is not supported yet (only `proto`)",
                self.encoding
            ));
        }
        self.sending_queue.validate()
    }

    /// The URL for a signal: its own endpoint as given, else `endpoint` + `/v1/<signal>`.
    pub fn url_for(&self, signal: Signal) -> Option<String> {
        let own = match signal {
            Signal::Traces => &self.traces_endpoint,
            Signal::Metrics => &self.metrics_endpoint,
            Signal::Logs => &self.logs_endpoint,
        };
        own.clone().or_else(|| {
            self.endpoint
                .as_ref()
                .map(|e| format!("{}{}", e.trim_end_matches('/'), signal.http_path()))
        })
    }
}

pub struct OtlpHttpExporter {
    client: Client<HttpConnector, Full<Bytes>>,
    urls: [Option<http::Uri>; 3],
    headers: http::HeaderMap,
    compression: Compression,
    timeout: Duration,
}

impl OtlpHttpExporter {
    pub fn new(config: &OtlpHttpExporterConfig) -> Result<OtlpHttpExporter, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let parse = |s: Signal| -> Result<Option<http::Uri>, String> {
            config
                .url_for(s)
                .map(|u| {
                    u.parse::<http::Uri>()
                        .map_err(|e| format!("invalid endpoint `{u}`: {e}"))
                })
                .transpose()
        };
        let mut headers = http::HeaderMap::new();
        for (k, v) in &config.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|_| format!("invalid value for header `{k}`"))?;
            headers.insert(name, value);
        }
        Ok(OtlpHttpExporter {
            client,
            urls: [
                parse(Signal::Traces)?,
                parse(Signal::Metrics)?,
                parse(Signal::Logs)?,
            ],
            headers,
            compression: config.compression,
            timeout: config.timeout,
        })
    }

    pub async fn send(&self, signal: Signal, payload: &Bytes) -> Result<Delivered, ExportError> {
        let index = match signal {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        };
        let Some(url) = &self.urls[index] else {
            return Err(ExportError::Permanent(format!(
                "no endpoint configured for {signal}"
            )));
        };
        let (body, encoding) = compress(payload, self.compression)
            .map_err(|e| ExportError::Permanent(format!("compression failed: {e}")))?;
        let mut request = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| ExportError::Permanent(e.to_string()))?;
        if let Some(enc) = encoding {
            request.headers_mut().insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static(enc),
            );
        }
        for (k, v) in &self.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        let (status, retry_after, body) =
            super::http_exchange(&self.client, request, self.timeout).await?;
        if status.is_success() {
            return Ok(Delivered {
                rejected: super::otlp::rejected_items(signal, &body),
            });
        }
        let message = format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(256)])
        );
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(ExportError::Retryable {
                message,
                retry_after,
            }),
            _ => Err(ExportError::Permanent(message)),
        }
    }
}

/// Compresses a request body, returning the `Content-Encoding` to send with it.
pub fn compress(
    payload: &Bytes,
    compression: Compression,
) -> std::io::Result<(Bytes, Option<&'static str>)> {
    use std::io::Write;
    match compression {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(payload.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(payload)?;
            Ok((enc.finish()?.into(), Some("gzip")))
        }
        Compression::Zstd => Ok((zstd::bulk::compress(payload, 1)?.into(), Some("zstd"))),
        Compression::None | Compression::Empty => Ok((payload.clone(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_signal_urls() {
        let c = OtlpHttpExporterConfig {
            endpoint: Some("http://backend:4318/".into()),
            logs_endpoint: Some("http://logs:9999/custom".into()),
            ..Default::default()
        };
        assert_eq!(
            c.url_for(Signal::Traces).unwrap(),
            "http://backend:4318/v1/traces"
        );
        assert_eq!(c.url_for(Signal::Logs).unwrap(), "http://logs:9999/custom");
        assert!(c.validate().is_ok());
    }
}
