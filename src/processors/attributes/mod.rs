//! The collector's `attributes` processor: `insert`, `update`, `upsert`, `delete`, `hash` and
//! `extract` actions, in order, on span attributes, log record attributes and metric data
//! point attributes.
//!
//! On metrics, a `delete` makes series collapse; then the points go through the same
//! re-aggregation as the `cardinality` processor (emitted after every batch), so a deleted
//! label never leaves two points for one series and timestamp. Without `delete`, attributes
//! are edited in place, as the collector does.

pub mod config;
mod sha256;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use prost::Message;

pub use config::AttributesConfig;

use crate::otlp::metrics_wire::RawAttr;
use crate::otlp::{Batch, Signal};
use crate::processors::cardinality::aggregate::{
    Aggregator, EngineMetrics, EngineSettings, GaugeAggregation, LabelRules,
};
use crate::processors::cardinality::push_encoded;
use crate::telemetry::Registry;
use config::{Action, ValueSource};

/// How long the re-aggregation state of an idle metric series is kept.
const SERIES_WINDOW: Duration = Duration::from_secs(600);

pub struct AttributesProcessor {
    id: String,
    actions: Actions,
    /// Present when an action deletes: metric series then need re-aggregating.
    engine: Option<Aggregator>,
}

impl AttributesProcessor {
    pub fn new(config: AttributesConfig, id: &str, registry: &Registry) -> AttributesProcessor {
        // Validated when the config was read.
        let actions = Actions(config.compile().unwrap_or_default());
        let deletes = actions.0.iter().any(|a| matches!(a, Action::Delete(..)));
        let engine = deletes.then(|| {
            let settings = EngineSettings {
                max_series_per_metric: 0,
                window: SERIES_WINDOW,
                flush_interval: Duration::ZERO,
                gauge_aggregation: GaugeAggregation::Last,
            };
            Aggregator::new(
                settings,
                EngineMetrics::new(registry, "sluice_processor_attributes", id),
            )
        });
        AttributesProcessor {
            id: id.to_string(),
            actions,
            engine,
        }
    }

    pub fn process(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        let result = match batch.signal {
            Signal::Traces => ExportTraceServiceRequest::decode(batch.to_bytes()).map(|mut r| {
                for rs in &mut r.resource_spans {
                    for ss in &mut rs.scope_spans {
                        for span in &mut ss.spans {
                            self.actions.apply(&mut span.attributes);
                        }
                    }
                }
                out.push(batch.derive(r.encode_to_vec().into(), batch.items));
            }),
            Signal::Logs => ExportLogsServiceRequest::decode(batch.to_bytes()).map(|mut r| {
                for rl in &mut r.resource_logs {
                    for sl in &mut rl.scope_logs {
                        for record in &mut sl.log_records {
                            self.actions.apply(&mut record.attributes);
                        }
                    }
                }
                out.push(batch.derive(r.encode_to_vec().into(), batch.items));
            }),
            Signal::Metrics => match &mut self.engine {
                Some(engine) => {
                    if let Some(passed) = engine.ingest(&batch.to_bytes(), &mut self.actions, now) {
                        push_encoded(Signal::Metrics, passed.encode_to_vec(), out);
                    }
                    if let Some(aggregated) = engine.emit() {
                        push_encoded(Signal::Metrics, aggregated, out);
                    }
                    Ok(())
                }
                None => ExportMetricsServiceRequest::decode(batch.to_bytes())
                    .map(|r| self.process_metrics(r, out)),
            },
        };
        if let Err(e) = result {
            tracing::warn!(
                component = %self.id,
                signal = %batch.signal,
                items = batch.items,
                error = %e,
                "Cannot decode a batch to edit its attributes; passing it on unchanged."
            );
            out.push(batch);
        }
    }

    fn process_metrics(&mut self, mut request: ExportMetricsServiceRequest, out: &mut Vec<Batch>) {
        for rm in &mut request.resource_metrics {
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    self.edit_points(m);
                }
            }
        }
        push_encoded(Signal::Metrics, request.encode_to_vec(), out);
    }

    fn edit_points(&self, m: &mut opentelemetry_proto::tonic::metrics::v1::Metric) {
        let a = &self.actions;
        match &mut m.data {
            Some(metric::Data::Gauge(g)) => g
                .data_points
                .iter_mut()
                .for_each(|p| a.apply(&mut p.attributes)),
            Some(metric::Data::Sum(s)) => s
                .data_points
                .iter_mut()
                .for_each(|p| a.apply(&mut p.attributes)),
            Some(metric::Data::Histogram(h)) => h
                .data_points
                .iter_mut()
                .for_each(|p| a.apply(&mut p.attributes)),
            Some(metric::Data::ExponentialHistogram(e)) => e
                .data_points
                .iter_mut()
                .for_each(|p| a.apply(&mut p.attributes)),
            Some(metric::Data::Summary(s)) => s
                .data_points
                .iter_mut()
                .for_each(|p| a.apply(&mut p.attributes)),
            None => {}
        }
    }
}

/// The configured actions, applied in order to one attribute list.
struct Actions(Vec<Action>);

impl Actions {
    fn apply(&self, attributes: &mut Vec<KeyValue>) {
        for action in &self.0 {
            match action {
                Action::Insert(key, source) => {
                    if let Some(v) = source_value(source, attributes)
                        && position(attributes, key).is_none()
                    {
                        attributes.push(new_kv(key, v));
                    }
                }
                Action::Update(key, source) => {
                    if let Some(v) = source_value(source, attributes)
                        && let Some(i) = position(attributes, key)
                    {
                        attributes[i].value = Some(v);
                    }
                }
                Action::Upsert(key, source) => {
                    if let Some(v) = source_value(source, attributes) {
                        upsert(attributes, key, v);
                    }
                }
                Action::Delete(key, pattern) => {
                    attributes.retain(|kv| {
                        key.as_ref() != Some(&kv.key)
                            && !pattern.as_ref().is_some_and(|p| p.is_match(&kv.key))
                    });
                }
                Action::Hash(key, pattern) => {
                    // As the collector: the key, then every key matching the pattern (a key
                    // named by both is hashed twice).
                    if let Some(i) = key.as_ref().and_then(|k| position(attributes, k)) {
                        hash_value(&mut attributes[i].value);
                    }
                    if let Some(p) = pattern {
                        for kv in attributes.iter_mut().filter(|kv| p.is_match(&kv.key)) {
                            hash_value(&mut kv.value);
                        }
                    }
                }
                Action::Extract(key, regex, names) => {
                    let Some(i) = position(attributes, key) else {
                        continue;
                    };
                    let Some(any_value::Value::StringValue(text)) =
                        attributes[i].value.as_ref().and_then(|v| v.value.clone())
                    else {
                        continue;
                    };
                    let Some(captures) = regex.captures(&text) else {
                        continue;
                    };
                    for (group, name) in names.iter().enumerate().skip(1) {
                        let matched = captures.get(group).map_or("", |m| m.as_str());
                        upsert(attributes, name, string_value(matched));
                    }
                }
            }
        }
    }
}

impl LabelRules for Actions {
    fn resource(&mut self, _attributes: &mut Vec<KeyValue>) {}

    fn observes(&self) -> bool {
        false
    }

    fn observe(&mut self, _metric: &str, _attributes: &[RawAttr<'_>], _now: Instant) {}

    fn rewrite(&mut self, _metric: &str, attributes: &mut Vec<KeyValue>, _now: Instant) -> u64 {
        let before: Vec<String> = attributes.iter().map(|kv| kv.key.clone()).collect();
        self.apply(attributes);
        before
            .iter()
            .filter(|k| position(attributes, k).is_none())
            .count() as u64
    }
}

fn position(attributes: &[KeyValue], key: &str) -> Option<usize> {
    attributes.iter().position(|kv| kv.key == key)
}

fn source_value(source: &ValueSource, attributes: &[KeyValue]) -> Option<AnyValue> {
    match source {
        ValueSource::Value(v) => Some(v.clone()),
        ValueSource::Attribute(from) => {
            position(attributes, from).map(|i| attributes[i].value.clone().unwrap_or_default())
        }
    }
}

fn upsert(attributes: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    match position(attributes, key) {
        Some(i) => attributes[i].value = Some(value),
        None => attributes.push(new_kv(key, value)),
    }
}

fn new_kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

/// The collector's hasher: SHA-256 of the string bytes, of one byte for a bool, of the
/// little-endian 8 bytes of an int or double; as lowercase hex. Other types become "".
fn hash_value(value: &mut Option<AnyValue>) {
    let bytes: Vec<u8> = match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.as_bytes().to_vec(),
        Some(any_value::Value::BoolValue(b)) => vec![u8::from(*b)],
        Some(any_value::Value::IntValue(i)) => i.to_le_bytes().to_vec(),
        Some(any_value::Value::DoubleValue(d)) => d.to_bits().to_le_bytes().to_vec(),
        _ => Vec::new(),
    };
    let hashed = if bytes.is_empty() {
        String::new()
    } else {
        sha256::hex(&sha256::digest(&bytes))
    };
    *value = Some(string_value(&hashed));
}
