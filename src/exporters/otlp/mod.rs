//! The `otlp` (also `otlp_grpc`) exporter: OTLP over gRPC, sending the encoded request bytes
//! as they are, with the collector's keys and its retryable-status rules.
//!
//! The gRPC message is framed (and compressed) here rather than by tonic's encoder: tonic
//! copies the message into its own buffer, then compresses that copy into a second buffer
//! reserved at the uncompressed size, all on top of the batch's chunks and the single buffer
//! they had to be concatenated into. Compressing straight from the chunks, or sending the
//! chunks themselves when uncompressed, keeps one copy of each batch in flight instead of
//! four. tonic still does the rest: the call, deadlines, status and trailers.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prost::Message;
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower_service::Service;

use super::{
    Compression, Delivered, ExportError, QueueConfig, RetryConfig, TlsClientConfig, check_plaintext,
};
use crate::config::node::deserialize_duration;
use crate::otlp::codec::RawCodec;
use crate::otlp::rpc;
use crate::otlp::{Batch, Signal};

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
    compression: Compression,
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
            compression: config.compression,
            timeout: config.timeout,
            headers,
        })
    }

    pub async fn send(&self, batch: &Batch) -> Result<Delivered, ExportError> {
        let message = frame(batch, self.compression)
            .map_err(|e| ExportError::Permanent(format!("cannot encode the request: {e}")))?;
        let mut client = tonic::client::Grpc::new(FramedChannel(self.channel.clone()));
        client.ready().await.map_err(|e| ExportError::Retryable {
            message: format!("connection not ready: {e}"),
            retry_after: None,
        })?;
        // tonic encodes this empty message; `FramedChannel` sends `message` in its place.
        let mut request = tonic::Request::new(Bytes::new());
        request.extensions_mut().insert(message);
        request.set_timeout(self.timeout);
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        let path = http::uri::PathAndQuery::from_static(batch.signal.grpc_path());
        match client.unary(request, path, RawCodec).await {
            Ok(response) => Ok(Delivered {
                rejected: rejected_items(batch.signal, response.get_ref()),
            }),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// gzip level, as tonic (and the collector, through Go's default) uses.
const GZIP_LEVEL: u32 = 6;
/// Size of the pieces compressed output is written into: no reallocation, little slack.
const BLOCK: usize = 64 * 1024;
/// gRPC's message prefix: a compressed flag and a big-endian u32 length.
const PREFIX: usize = 5;

/// A request body already framed as one gRPC message, with its `grpc-encoding`.
#[derive(Clone, Debug)]
struct Framed {
    encoding: Option<&'static str>,
    parts: Vec<Bytes>,
}

/// Frames a batch as one gRPC message, compressing straight from its chunks.
fn frame(batch: &Batch, compression: Compression) -> io::Result<Framed> {
    let len = batch.encoded_len();
    let (encoding, parts) = match compression {
        Compression::None | Compression::Empty => {
            let mut parts = Vec::with_capacity(batch.chunks.len() + 1);
            parts.push(Bytes::copy_from_slice(&prefix(false, len)?));
            parts.extend(batch.chunks.iter().cloned());
            (None, parts)
        }
        Compression::Gzip => {
            let mut gz =
                flate2::write::GzEncoder::new(Blocks::new(), flate2::Compression::new(GZIP_LEVEL));
            for chunk in &batch.chunks {
                gz.write_all(chunk)?;
            }
            (Some("gzip"), gz.finish()?.finish()?)
        }
        Compression::Zstd => {
            let mut zstd =
                zstd::stream::write::Encoder::new(Blocks::new(), zstd::DEFAULT_COMPRESSION_LEVEL)?;
            zstd.set_pledged_src_size(Some(len as u64))?;
            for chunk in &batch.chunks {
                zstd.write_all(chunk)?;
            }
            (Some("zstd"), zstd.finish()?.finish()?)
        }
    };
    Ok(Framed { encoding, parts })
}

fn prefix(compressed: bool, len: usize) -> io::Result<[u8; PREFIX]> {
    let len = u32::try_from(len).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a gRPC message cannot hold {len} bytes"),
        )
    })?;
    let mut out = [0u8; PREFIX];
    out[0] = u8::from(compressed);
    out[1..].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// A writer into fixed-size blocks that starts with room for the message prefix.
struct Blocks {
    full: Vec<Bytes>,
    current: Vec<u8>,
    len: usize,
}

impl Blocks {
    fn new() -> Blocks {
        let mut current = Vec::with_capacity(BLOCK);
        current.extend_from_slice(&[0; PREFIX]);
        Blocks {
            full: Vec::new(),
            current,
            len: 0,
        }
    }

    /// The compressed message's blocks, the first starting with its prefix.
    fn finish(mut self) -> io::Result<Vec<Bytes>> {
        let prefix = prefix(true, self.len)?;
        let mut blocks = std::mem::take(&mut self.full);
        if !self.current.is_empty() {
            blocks.push(Bytes::from(std::mem::take(&mut self.current)));
        }
        // The prefix is only known now: rebuild the first block with it (one block's copy).
        let first = &blocks[0];
        let mut head = Vec::with_capacity(first.len());
        head.extend_from_slice(&prefix);
        head.extend_from_slice(&first[PREFIX..]);
        blocks[0] = Bytes::from(head);
        Ok(blocks)
    }
}

impl Write for Blocks {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.current.len();
        let n = buf.len().min(room);
        self.current.extend_from_slice(&buf[..n]);
        self.len += n;
        if self.current.len() == BLOCK {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(BLOCK));
            self.full.push(Bytes::from(full));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A body of ready pieces.
struct Parts(VecDeque<Bytes>);

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

/// The channel, sending a request's `Framed` message (from its extensions) as its body.
#[derive(Clone)]
struct FramedChannel(Channel);

impl Service<http::Request<tonic::body::Body>> for FramedChannel {
    type Response = <Channel as Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Channel as Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let (mut head, body) = request.into_parts();
        let Some(framed) = head.extensions.remove::<Framed>() else {
            return self.0.call(http::Request::from_parts(head, body));
        };
        if let Some(encoding) = framed.encoding {
            head.headers
                .insert("grpc-encoding", http::HeaderValue::from_static(encoding));
        }
        let body = tonic::body::Body::new(Parts(framed.parts.into()));
        self.0.call(http::Request::from_parts(head, body))
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
