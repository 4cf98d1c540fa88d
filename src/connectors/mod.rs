//! Connectors: the exporter of one pipeline and the receiver of another, as in the collector.
//! At run time a connector is a pipeline task of its own: the pipelines that export to it feed
//! its input channel, its stage (if any) runs there, and its output goes, waiting for room
//! rather than dropping, to the input of every pipeline that lists it as a receiver.

pub mod spanmetrics;

use crate::config::ComponentId;
use crate::otlp::Signal;
use crate::processors::Processor;
use crate::telemetry::Registry;
use spanmetrics::{SpanMetrics, SpanMetricsConfig};

#[derive(Clone, Debug)]
pub enum ConnectorConfig {
    SpanMetrics(Box<SpanMetricsConfig>),
    /// Passes each signal on unchanged to pipelines of the same signal.
    Forward,
}

impl ConnectorConfig {
    /// The signal of the pipelines it receives into, when fed by a pipeline of `input`.
    pub fn output(&self, input: Signal) -> Option<Signal> {
        match self {
            ConnectorConfig::SpanMetrics(_) => (input == Signal::Traces).then_some(Signal::Metrics),
            ConnectorConfig::Forward => Some(input),
        }
    }

    /// The signals of the pipelines it can export from.
    pub fn inputs(&self) -> &'static [Signal] {
        match self {
            ConnectorConfig::SpanMetrics(_) => &[Signal::Traces],
            ConnectorConfig::Forward => &Signal::ALL,
        }
    }

    /// The signals of the pipelines it can receive into.
    pub fn outputs(&self) -> &'static [Signal] {
        match self {
            ConnectorConfig::SpanMetrics(_) => &[Signal::Metrics],
            ConnectorConfig::Forward => &Signal::ALL,
        }
    }
}

/// The stages a connector's task runs (none for `forward`).
pub fn stages(id: &ComponentId, config: &ConnectorConfig, registry: &Registry) -> Vec<Processor> {
    match config {
        ConnectorConfig::SpanMetrics(c) => vec![Processor::SpanMetrics(Box::new(
            SpanMetrics::new(c, &id.to_string(), registry),
        ))],
        ConnectorConfig::Forward => Vec::new(),
    }
}
