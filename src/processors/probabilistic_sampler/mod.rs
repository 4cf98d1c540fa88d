//! The `probabilistic_sampler` processor: keeps a percentage of spans and log records, each
//! decided on its own, with the collector's three modes (`hash_seed`, `proportional`,
//! `equalizing`), its tracestate/attribute bookkeeping and its self-metrics.
//!
//! A batch is decoded, filtered, and re-encoded: kept items may gain `ot=rv:`/`th:` in their
//! tracestate (or `sampling.*` attributes), so the bytes change anyway.

pub mod config;
mod logs;
mod sampler;
mod threshold;
mod traces;
mod tracestate;

#[cfg(test)]
mod tests;

use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

pub use config::ProbabilisticSamplerConfig;

use crate::otlp::{Batch, Signal};
use crate::telemetry::{Counter, Registry};
use logs::LogPriority;
use sampler::{Decision, Sampler, Source};

const TRACES_METRIC: &str = "otelcol_processor_probabilistic_sampler_count_traces_sampled_total";
const LOGS_METRIC: &str = "otelcol_processor_probabilistic_sampler_count_logs_sampled_total";

pub struct ProbabilisticSampler {
    id: String,
    config: ProbabilisticSamplerConfig,
    /// Resolved per signal: logs also read `attribute_source` and `from_attribute`.
    traces: Sampler,
    logs: Sampler,
    registry: Registry,
    traces_counts: SampledCounters,
    logs_counts: SampledCounters,
}

impl ProbabilisticSampler {
    pub fn new(
        config: ProbabilisticSamplerConfig,
        id: &str,
        registry: &Registry,
    ) -> ProbabilisticSampler {
        ProbabilisticSampler {
            id: id.to_string(),
            traces: Sampler::new(&config, false),
            logs: Sampler::new(&config, true),
            config,
            registry: registry.clone(),
            traces_counts: SampledCounters::default(),
            logs_counts: SampledCounters::default(),
        }
    }

    pub fn process(&mut self, batch: Batch, _now: Instant, out: &mut Vec<Batch>) {
        let kept = match batch.signal {
            Signal::Traces => self.process_traces(&batch),
            Signal::Logs => self.process_logs(&batch),
            // The config refuses this processor in metrics pipelines.
            Signal::Metrics => {
                out.push(batch);
                return;
            }
        };
        match kept {
            Ok(Some(kept)) => out.push(kept),
            Ok(None) => {}
            Err(e) => {
                // Receivers check structure but not, say, UTF-8 in names, which decoding
                // does. Such items have no readable randomness: fail_closed decides.
                tracing::warn!(
                    component = %self.id,
                    signal = %batch.signal,
                    items = batch.items,
                    fail_closed = self.config.fail_closed,
                    error = %e,
                    "Cannot decode a batch to sample it."
                );
                let sampled = !self.config.fail_closed;
                let decision = Decision {
                    sampled,
                    source: Source::MissingRandomness,
                    problems: Vec::new(),
                };
                let mut counts = Counts::default();
                counts.add_n(&decision, batch.items as u64);
                self.record(batch.signal, counts);
                if sampled {
                    out.push(batch);
                }
            }
        }
    }

    fn process_traces(&mut self, batch: &Batch) -> Result<Option<Batch>, prost::DecodeError> {
        let mut request = ExportTraceServiceRequest::decode(batch.to_bytes())?;
        let mut counts = Counts::default();
        let mut kept = 0;
        for resource in &mut request.resource_spans {
            for scope in &mut resource.scope_spans {
                scope.spans.retain_mut(|span| {
                    let decision = traces::sample_span(&self.traces, self.config.fail_closed, span);
                    log_problems(&self.id, "traces sampler", &decision);
                    counts.add(&decision);
                    decision.sampled
                });
                kept += scope.spans.len();
            }
            resource.scope_spans.retain(|s| !s.spans.is_empty());
        }
        request.resource_spans.retain(|r| !r.scope_spans.is_empty());
        self.record(Signal::Traces, counts);
        Ok((kept > 0).then(|| batch.derive(request.encode_to_vec().into(), kept)))
    }

    fn process_logs(&mut self, batch: &Batch) -> Result<Option<Batch>, prost::DecodeError> {
        let mut request = ExportLogsServiceRequest::decode(batch.to_bytes())?;
        let priority = LogPriority {
            attribute: &self.config.sampling_priority,
            precision: self.config.sampling_precision,
        };
        let mut counts = Counts::default();
        let mut kept = 0;
        for resource in &mut request.resource_logs {
            for scope in &mut resource.scope_logs {
                scope.log_records.retain_mut(|record| {
                    let decision =
                        logs::sample_record(&self.logs, self.config.fail_closed, &priority, record);
                    log_problems(&self.id, "logs sampler", &decision);
                    counts.add(&decision);
                    decision.sampled
                });
                kept += scope.log_records.len();
            }
            resource.scope_logs.retain(|s| !s.log_records.is_empty());
        }
        request.resource_logs.retain(|r| !r.scope_logs.is_empty());
        self.record(Signal::Logs, counts);
        Ok((kept > 0).then(|| batch.derive(request.encode_to_vec().into(), kept)))
    }

    /// Adds a batch's tallies to the self-metrics, creating each series on first use so only
    /// label sets that occurred are exported, as the collector does.
    fn record(&mut self, signal: Signal, counts: Counts) {
        let (counters, name, help) = match signal {
            Signal::Logs => (
                &mut self.logs_counts,
                LOGS_METRIC,
                "Count of logs that were sampled or not",
            ),
            _ => (
                &mut self.traces_counts,
                TRACES_METRIC,
                "Count of traces that were sampled or not",
            ),
        };
        for source in Source::ALL {
            for sampled in [false, true] {
                let n = counts.0[source.index()][usize::from(sampled)];
                if n == 0 {
                    continue;
                }
                let counter =
                    counters.0[source.index()][usize::from(sampled)].get_or_insert_with(|| {
                        let policy = source.policy_name(&self.config.from_attribute);
                        let sampled = if sampled { "true" } else { "false" };
                        self.registry.counter(
                            name,
                            help,
                            &[
                                ("processor", self.id.as_str()),
                                ("policy", policy),
                                ("sampled", sampled),
                            ],
                        )
                    });
                counter.add(n);
            }
        }
    }
}

/// Items decided in one batch, by source and outcome.
#[derive(Default)]
struct Counts([[u64; 2]; Source::ALL.len()]);

impl Counts {
    fn add(&mut self, decision: &Decision) {
        self.add_n(decision, 1);
    }

    fn add_n(&mut self, decision: &Decision, n: u64) {
        self.0[decision.source.index()][usize::from(decision.sampled)] += n;
    }
}

#[derive(Default)]
struct SampledCounters([[Option<Counter>; 2]; Source::ALL.len()]);

/// Per-item problems go to debug: with `fail_closed` they are how an operator finds out
/// why items vanish, but at info they would flood the log.
fn log_problems(id: &str, description: &str, decision: &Decision) {
    for problem in &decision.problems {
        tracing::debug!(component = %id, error = %problem, "{description}");
    }
}
