//! OTLP data as it travels through the agent: encoded export requests, decoded only on demand.

pub mod codec;
pub mod json;
pub mod metrics_wire;
pub mod rpc;
pub mod wire;

use bytes::Bytes;

use crate::pipeline::ack::Ack;

/// The three OTLP signals; a pipeline carries exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The item a signal is counted in, as the collector names it in self-metrics.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    /// The gRPC method path of the OTLP export service for this signal.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The OTLP/HTTP path for this signal.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    pub fn parse(name: &str) -> Option<Signal> {
        match name {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One or more encoded OTLP export requests of one signal. Protobuf merges repeated fields
/// when messages are concatenated, so the chunks together form a single valid request and
/// batching never needs to decode. `acks` travel with the data so a receiver can learn when
/// it has been delivered (see `pipeline::ack`).
#[derive(Clone, Debug)]
pub struct Batch {
    pub signal: Signal,
    pub chunks: Vec<Bytes>,
    pub items: usize,
    pub acks: Vec<Ack>,
}

impl Batch {
    pub fn new(signal: Signal, payload: Bytes, items: usize) -> Batch {
        Batch {
            signal,
            chunks: vec![payload],
            items,
            acks: Vec::new(),
        }
    }

    /// A batch made from this one's data (split, filtered, re-encoded): it carries the same
    /// acknowledgements.
    pub fn derive(&self, payload: Bytes, items: usize) -> Batch {
        Batch {
            signal: self.signal,
            chunks: vec![payload],
            items,
            acks: self.acks.clone(),
        }
    }

    /// Marks every acknowledgement of this batch as failed (the data was dropped).
    pub fn fail_acks(&self) {
        self.acks.iter().for_each(Ack::fail);
    }

    /// Parses and counts an encoded request; fails on malformed protobuf.
    pub fn from_encoded(signal: Signal, payload: Bytes) -> Result<Batch, wire::WireError> {
        let items = wire::count_items(signal, &payload)?;
        Ok(Batch::new(signal, payload, items))
    }

    pub fn encoded_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// The whole request as one buffer (zero-copy when there is a single chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            many => wire::concat(many),
        }
    }

    pub fn append(&mut self, other: Batch) {
        self.items += other.items;
        self.chunks.extend(other.chunks);
        self.acks.extend(other.acks);
    }
}

/// A `KeyValue` with a string value.
pub fn string_kv(
    key: &str,
    value: impl Into<String>,
) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}
