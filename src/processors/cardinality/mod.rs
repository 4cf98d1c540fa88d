//! The `cardinality` processor (sluice's own): removes high-cardinality labels and, on
//! metrics, re-aggregates the series that collapse (`aggregate.rs`), caps the distinct values
//! of a label per metric and the series per metric (an overflow series keeps totals right).
//! On spans and logs it only removes the configured attributes.
//!
//! A label is a data point attribute or a resource attribute. `drop_labels` and
//! `drop_label_patterns` apply to both; `max_values_per_label` counts data point attributes
//! only (resource attributes name where data comes from, and are capped by dropping them).

pub mod aggregate;
pub mod config;

#[cfg(test)]
mod tests;

use std::hash::Hasher;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use regex::Regex;

pub use config::CardinalityConfig;

use crate::hash::{FxHashMap, NameMap, NameSet, SeriesHasher};
use crate::otlp::metrics_wire::RawAttr;
use crate::otlp::{Batch, Signal};
use crate::telemetry::{Counter, Registry};
use aggregate::{Aggregator, EngineMetrics, EngineSettings, LabelRules};

const METRIC_PREFIX: &str = "sluice_processor_cardinality";

/// Label names decided once; past this many distinct names the decision is not cached.
const MAX_CACHED_NAMES: usize = 10_000;

pub struct CardinalityProcessor {
    id: String,
    rules: CardinalityRules,
    engine: Aggregator,
    flush_each_batch: bool,
    attributes_removed: [Counter; 2],
}

impl CardinalityProcessor {
    pub fn new(config: CardinalityConfig, id: &str, registry: &Registry) -> CardinalityProcessor {
        let settings = EngineSettings {
            max_series_per_metric: config.max_series_per_metric,
            window: config.window,
            flush_interval: config.flush_interval,
            gauge_aggregation: config.gauge_aggregation,
        };
        let removed = |signal: Signal| {
            registry.counter(
                &format!("{METRIC_PREFIX}_attributes_removed_total"),
                "Attributes removed from spans and log records (and their resources).",
                &[("processor", id), ("signal", signal.as_str())],
            )
        };
        CardinalityProcessor {
            id: id.to_string(),
            rules: CardinalityRules::new(&config, id, registry),
            engine: Aggregator::new(settings, EngineMetrics::new(registry, METRIC_PREFIX, id)),
            flush_each_batch: config.flush_interval.is_zero(),
            attributes_removed: [removed(Signal::Traces), removed(Signal::Logs)],
        }
    }

    pub fn process(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        let result = match batch.signal {
            // Metrics are read in place; a part that cannot be read is dropped and counted.
            Signal::Metrics => {
                self.process_metrics(&batch, now, out);
                return;
            }
            Signal::Traces => self.process_traces(&batch, out),
            Signal::Logs => self.process_logs(&batch, out),
        };
        if let Err(e) = result {
            // Receivers check structure but not, say, UTF-8 in strings, which decoding does.
            tracing::warn!(
                component = %self.id,
                signal = %batch.signal,
                items = batch.items,
                error = %e,
                "Cannot decode a batch to strip labels; passing it on unchanged."
            );
            out.push(batch);
        }
    }

    fn process_metrics(&mut self, batch: &Batch, now: Instant, out: &mut Vec<Batch>) {
        if let Some(passed) = self.engine.ingest(&batch.to_bytes(), &mut self.rules, now) {
            push_encoded(Signal::Metrics, passed.encode_to_vec(), out);
        }
        if self.flush_each_batch {
            self.flush(out);
        }
    }

    fn process_traces(
        &mut self,
        batch: &Batch,
        out: &mut Vec<Batch>,
    ) -> Result<(), prost::DecodeError> {
        let mut request = ExportTraceServiceRequest::decode(batch.to_bytes())?;
        let mut removed = 0;
        for rs in &mut request.resource_spans {
            if let Some(r) = &mut rs.resource {
                removed += self.rules.strip(&mut r.attributes);
            }
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    removed += self.rules.strip(&mut span.attributes);
                }
            }
        }
        self.finish_strip(Signal::Traces, batch, removed, request.encode_to_vec(), out);
        Ok(())
    }

    fn process_logs(
        &mut self,
        batch: &Batch,
        out: &mut Vec<Batch>,
    ) -> Result<(), prost::DecodeError> {
        let mut request = ExportLogsServiceRequest::decode(batch.to_bytes())?;
        let mut removed = 0;
        for rl in &mut request.resource_logs {
            if let Some(r) = &mut rl.resource {
                removed += self.rules.strip(&mut r.attributes);
            }
            for sl in &mut rl.scope_logs {
                for record in &mut sl.log_records {
                    removed += self.rules.strip(&mut record.attributes);
                }
            }
        }
        self.finish_strip(Signal::Logs, batch, removed, request.encode_to_vec(), out);
        Ok(())
    }

    /// Sends the edited request, or the original bytes when nothing was removed.
    fn finish_strip(
        &self,
        signal: Signal,
        batch: &Batch,
        removed: u64,
        encoded: Vec<u8>,
        out: &mut Vec<Batch>,
    ) {
        if removed == 0 {
            out.push(batch.clone());
            return;
        }
        let i = usize::from(signal == Signal::Logs);
        self.attributes_removed[i].add(removed);
        out.push(batch.derive(encoded.into(), batch.items));
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        if let Some(request) = self.engine.tick(&mut self.rules, now) {
            push_encoded(Signal::Metrics, request, out);
        }
    }

    pub fn flush(&mut self, out: &mut Vec<Batch>) {
        if let Some(request) = self.engine.emit() {
            push_encoded(Signal::Metrics, request, out);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.engine.next_deadline()
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Aggregator {
        &self.engine
    }
}

/// Wraps a request this processor encoded; counting its items cannot fail.
pub(crate) fn push_encoded(signal: Signal, encoded: Vec<u8>, out: &mut Vec<Batch>) {
    match Batch::from_encoded(signal, encoded.into()) {
        Ok(b) if b.items > 0 => out.push(b),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "Cannot count a batch this processor encoded."),
    }
}

/// The configured label rules, plus the distinct values seen per metric and label.
pub struct CardinalityRules {
    id: String,
    names: LabelNames,
    max_values: usize,
    window: Duration,
    /// metric name → label name → values seen.
    values: NameMap<String, NameMap<String, ValueTracker>>,
    limit_exceeded: Counter,
}

/// What the configuration says of a label name, decided once per name.
struct LabelNames {
    drop: NameSet<String>,
    patterns: Vec<Regex>,
    exempt: NameSet<String>,
    /// (dropped by `drop_labels`/`drop_label_patterns`, exempt) per name.
    decided: NameMap<String, (bool, bool)>,
}

impl LabelNames {
    fn decide(&mut self, name: &str) -> (bool, bool) {
        if let Some(d) = self.decided.get(name) {
            return *d;
        }
        let exempt = self.exempt.contains(name);
        let dropped =
            self.drop.contains(name) || (!exempt && self.patterns.iter().any(|p| p.is_match(name)));
        if self.decided.len() < MAX_CACHED_NAMES {
            self.decided.insert(name.to_string(), (dropped, exempt));
        }
        (dropped, exempt)
    }

    fn dropped(&mut self, name: &str) -> bool {
        self.decide(name).0
    }

    /// Whether a label's distinct values are counted: neither dropped nor exempt.
    fn counted(&mut self, name: &str) -> bool {
        self.decide(name) == (false, false)
    }
}

#[derive(Default)]
struct ValueTracker {
    /// Hash of each value → when last seen.
    seen: FxHashMap<u64, Instant>,
    /// While set and in the future, the label is removed from new series of the metric.
    dropped_until: Option<Instant>,
}

impl CardinalityRules {
    pub fn new(config: &CardinalityConfig, id: &str, registry: &Registry) -> CardinalityRules {
        CardinalityRules {
            id: id.to_string(),
            names: LabelNames {
                drop: config.drop_labels.iter().cloned().collect(),
                // Validated when the config was read.
                patterns: config.patterns().unwrap_or_default(),
                exempt: config.exempt_labels.iter().cloned().collect(),
                decided: NameMap::default(),
            },
            max_values: config.max_values_per_label,
            window: config.window,
            values: NameMap::default(),
            limit_exceeded: registry.counter(
                &format!("{METRIC_PREFIX}_label_value_limit_exceeded_total"),
                "Times a label exceeded max_values_per_label for a metric and was dropped.",
                &[("processor", id)],
            ),
        }
    }

    fn value_limited(&self, metric: &str, label: &str, now: Instant) -> bool {
        self.values
            .get(metric)
            .and_then(|labels| labels.get(label))
            .and_then(|t| t.dropped_until)
            .is_some_and(|until| now < until)
    }

    /// Removes configured labels; returns how many.
    pub fn strip(&mut self, attributes: &mut Vec<KeyValue>) -> u64 {
        let before = attributes.len();
        attributes.retain(|kv| !self.names.dropped(&kv.key));
        (before - attributes.len()) as u64
    }
}

impl LabelRules for CardinalityRules {
    fn resource(&mut self, attributes: &mut Vec<KeyValue>) {
        self.strip(attributes);
    }

    fn observes(&self) -> bool {
        self.max_values > 0
    }

    fn observe(&mut self, metric: &str, attributes: &[RawAttr<'_>], now: Instant) {
        if self.max_values == 0 {
            return;
        }
        // Bit i: label i counts (i < 63); bit 63: some later label does (asked again below).
        let mut counted = 0u64;
        for (i, kv) in attributes.iter().enumerate() {
            if self.names.counted(kv.key) {
                counted |= 1 << i.min(63);
            }
        }
        if counted == 0 {
            return;
        }
        // The metric is looked up once per point, not per label.
        if !self.values.contains_key(metric) {
            self.values.insert(metric.to_string(), NameMap::default());
        }
        let Some(labels) = self.values.get_mut(metric) else {
            return;
        };
        for (i, kv) in attributes.iter().enumerate() {
            let counts = if i < 63 {
                counted & (1 << i) != 0
            } else {
                self.names.counted(kv.key)
            };
            if !counts {
                continue;
            }
            let mut h = SeriesHasher::new();
            h.write(kv.value_bytes());
            let value = h.finish();
            let tracker = match labels.get_mut(kv.key) {
                Some(t) => t,
                None => labels.entry(kv.key.to_string()).or_default(),
            };
            tracker.seen.insert(value, now);
            if tracker.seen.len() > self.max_values {
                let newly = tracker.dropped_until.is_none_or(|u| now >= u);
                tracker.dropped_until = Some(now + self.window);
                // Memory stays bounded: counting starts again, and the label stays dropped
                // as long as it keeps exceeding the limit within a window.
                tracker.seen.clear();
                if newly {
                    self.limit_exceeded.add(1);
                    tracing::info!(
                        component = %self.id,
                        metric = %metric,
                        label = %kv.key,
                        limit = self.max_values,
                        "Label exceeded max_values_per_label; new series of this metric lose it."
                    );
                }
            }
        }
    }

    fn rewrite(&mut self, metric: &str, attributes: &mut Vec<KeyValue>, now: Instant) -> u64 {
        let before = attributes.len();
        attributes.retain(|kv| {
            let (dropped, exempt) = self.names.decide(&kv.key);
            !(dropped || (!exempt && self.value_limited(metric, &kv.key, now)))
        });
        (before - attributes.len()) as u64
    }

    fn sweep(&mut self, now: Instant) {
        let window = self.window;
        for labels in self.values.values_mut() {
            for tracker in labels.values_mut() {
                tracker
                    .seen
                    .retain(|_, t| now.saturating_duration_since(*t) < window);
                if tracker.dropped_until.is_some_and(|u| u <= now) {
                    tracker.dropped_until = None;
                }
            }
            labels.retain(|_, t| !t.seen.is_empty() || t.dropped_until.is_some());
        }
        self.values.retain(|_, labels| !labels.is_empty());
    }
}
