//! The `batch` processor: gathers requests until `send_batch_size` items or `timeout`, and
//! splits at `send_batch_max_size`, as the collector does — by appending and slicing encoded
//! bytes rather than decoding.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::node::deserialize_duration;
use crate::otlp::{Batch, wire};
use crate::telemetry::{Counter, Histogram, Registry};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub send_batch_size: usize,
    pub send_batch_max_size: usize,
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    pub metadata_keys: Vec<String>,
    pub metadata_cardinality_limit: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
        }
    }
}

impl BatchConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err("send_batch_max_size must be greater or equal to send_batch_size".into());
        }
        if !self.metadata_keys.is_empty() {
            return Err("metadata_keys is not supported yet".into());
        }
        Ok(())
    }
}

pub struct BatchProcessor {
    config: BatchConfig,
    pending: Option<Batch>,
    deadline: Option<Instant>,
    send_size: Histogram,
    size_trigger: Counter,
    timeout_trigger: Counter,
}

const SIZE_BUCKETS: &[f64] = &[
    10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
    6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0,
];

impl BatchProcessor {
    pub fn new(config: BatchConfig, id: &str, registry: &Registry) -> BatchProcessor {
        let labels = [("processor", id)];
        BatchProcessor {
            config,
            pending: None,
            deadline: None,
            send_size: registry.histogram(
                "otelcol_processor_batch_batch_send_size",
                "Number of items in a batch that was sent.",
                &labels,
                SIZE_BUCKETS,
            ),
            size_trigger: registry.counter(
                "otelcol_processor_batch_batch_size_trigger_send_total",
                "Number of times the batch was sent due to a size trigger.",
                &labels,
            ),
            timeout_trigger: registry.counter(
                "otelcol_processor_batch_timeout_trigger_send_total",
                "Number of times the batch was sent due to a timeout trigger.",
                &labels,
            ),
        }
    }

    pub fn process(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        if batch.items == 0 {
            return;
        }
        match &mut self.pending {
            Some(p) => p.append(batch),
            None => {
                self.pending = Some(batch);
                self.deadline = Some(now + self.config.timeout);
            }
        }
        if self.config.send_batch_size == 0 {
            self.emit(out, false);
            return;
        }
        while self
            .pending
            .as_ref()
            .is_some_and(|p| p.items >= self.config.send_batch_size)
        {
            self.size_trigger.add(1);
            self.emit(out, true);
        }
        if self.pending.is_none() {
            self.deadline = None;
        }
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.timeout_trigger.add(1);
            self.flush(out);
        }
    }

    pub fn flush(&mut self, out: &mut Vec<Batch>) {
        while self.pending.is_some() {
            self.emit(out, false);
        }
        self.deadline = None;
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sends what is pending; with a max size, sends pieces of at most that many items and,
    /// when `keep_remainder`, keeps a last piece smaller than `send_batch_size` pending.
    fn emit(&mut self, out: &mut Vec<Batch>, keep_remainder: bool) {
        let Some(batch) = self.pending.take() else {
            return;
        };
        let max = self.config.send_batch_max_size;
        if max == 0 || batch.items <= max {
            self.send_size.record(batch.items as u64);
            out.push(batch);
            return;
        }
        let signal = batch.signal;
        let pieces = match wire::split(signal, &batch.to_bytes(), max) {
            Ok(p) => p,
            Err(e) => {
                // Receivers validate what they accept, so this is a bug, not bad input.
                tracing::error!(error = %e, "Cannot split a batch; sending it whole.");
                self.send_size.record(batch.items as u64);
                out.push(batch);
                return;
            }
        };
        let last = pieces.len().saturating_sub(1);
        for (i, (bytes, items)) in pieces.into_iter().enumerate() {
            let piece = batch.derive(bytes, items);
            if i == last && keep_remainder && items < self.config.send_batch_size {
                self.pending = Some(piece);
            } else {
                self.send_size.record(items as u64);
                out.push(piece);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::Signal;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn spans(n: usize) -> Batch {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..n)
                        .map(|i| Span {
                            name: format!("s{i}"),
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Batch::from_encoded(Signal::Traces, req.encode_to_vec().into()).unwrap()
    }

    fn processor(size: usize, max: usize) -> BatchProcessor {
        let config = BatchConfig {
            send_batch_size: size,
            send_batch_max_size: max,
            timeout: Duration::from_millis(200),
            ..Default::default()
        };
        BatchProcessor::new(config, "batch", &Registry::default())
    }

    #[test]
    fn sends_when_size_reached() {
        let mut p = processor(10, 0);
        let now = Instant::now();
        let mut out = Vec::new();
        p.process(spans(4), now, &mut out);
        p.process(spans(4), now, &mut out);
        assert!(out.is_empty());
        p.process(spans(4), now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].items, 12);
        assert_eq!(
            wire::count_items(Signal::Traces, &out[0].to_bytes()).unwrap(),
            12
        );
        assert!(p.next_deadline().is_none());
    }

    #[test]
    fn sends_on_timeout() {
        let mut p = processor(100, 0);
        let now = Instant::now();
        let mut out = Vec::new();
        p.process(spans(3), now, &mut out);
        p.tick(now + Duration::from_millis(100), &mut out);
        assert!(out.is_empty());
        p.tick(now + Duration::from_millis(200), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].items, 3);
    }

    #[test]
    fn max_size_splits_and_keeps_remainder() {
        let mut p = processor(5, 5);
        let now = Instant::now();
        let mut out = Vec::new();
        p.process(spans(12), now, &mut out);
        assert_eq!(out.iter().map(|b| b.items).collect::<Vec<_>>(), vec![5, 5]);
        let mut rest = Vec::new();
        p.flush(&mut rest);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].items, 2);
    }
}
