//! Processors: synchronous stages a pipeline runs in order. Time is passed in, so a stage
//! never reads a clock and tests need none; stateful stages release data on `tick`.

pub mod attributes;
pub mod batch;
pub mod cardinality;
pub mod memory_limiter;
pub mod probabilistic_sampler;
pub mod tail_sampling;

use std::time::Instant;

use crate::config::{ComponentId, ProcessorConfig};
use crate::otlp::Batch;
use crate::telemetry::Registry;

pub enum Processor {
    Batch(batch::BatchProcessor),
    MemoryLimiter(memory_limiter::MemoryLimiter),
    // Boxed: its per-policy counters make it several times larger than the others.
    ProbabilisticSampler(Box<probabilistic_sampler::ProbabilisticSampler>),
    Cardinality(Box<cardinality::CardinalityProcessor>),
    Attributes(Box<attributes::AttributesProcessor>),
    TailSampling(Box<tail_sampling::TailSampler>),
    /// Not a processor in the config: the stage of a `spanmetrics` connector's task.
    SpanMetrics(Box<crate::connectors::spanmetrics::SpanMetrics>),
}

impl Processor {
    pub fn build(id: &ComponentId, config: &ProcessorConfig, registry: &Registry) -> Processor {
        match config {
            ProcessorConfig::Batch(c) => Processor::Batch(batch::BatchProcessor::new(
                c.clone(),
                &id.to_string(),
                registry,
            )),
            ProcessorConfig::MemoryLimiter(c) => Processor::MemoryLimiter(
                memory_limiter::MemoryLimiter::new(c.clone(), &id.to_string(), registry),
            ),
            ProcessorConfig::ProbabilisticSampler(c) => {
                let sampler = probabilistic_sampler::ProbabilisticSampler::new(
                    c.clone(),
                    &id.to_string(),
                    registry,
                );
                Processor::ProbabilisticSampler(Box::new(sampler))
            }
            ProcessorConfig::Cardinality(c) => Processor::Cardinality(Box::new(
                cardinality::CardinalityProcessor::new(c.clone(), &id.to_string(), registry),
            )),
            ProcessorConfig::Attributes(c) => Processor::Attributes(Box::new(
                attributes::AttributesProcessor::new(c.clone(), &id.to_string(), registry),
            )),
            ProcessorConfig::TailSampling(c) => Processor::TailSampling(Box::new(
                tail_sampling::TailSampler::new((**c).clone(), &id.to_string(), registry),
            )),
        }
    }

    pub fn process(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        match self {
            Processor::Batch(p) => p.process(batch, now, out),
            Processor::MemoryLimiter(_) => out.push(batch),
            Processor::ProbabilisticSampler(p) => p.process(batch, now, out),
            Processor::Cardinality(p) => p.process(batch, now, out),
            Processor::Attributes(p) => p.process(batch, now, out),
            Processor::TailSampling(p) => p.process(batch, now, out),
            Processor::SpanMetrics(p) => p.process(batch, now, out),
        }
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        match self {
            Processor::Batch(p) => p.tick(now, out),
            Processor::Cardinality(p) => p.tick(now, out),
            Processor::TailSampling(p) => p.tick(now, out),
            Processor::SpanMetrics(p) => p.tick(now, out),
            Processor::MemoryLimiter(_)
            | Processor::ProbabilisticSampler(_)
            | Processor::Attributes(_) => {}
        }
    }

    /// At shutdown: releases everything held (the tail sampler decides what is pending).
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Batch>) {
        match self {
            Processor::Batch(p) => p.flush(out),
            Processor::Cardinality(p) => p.flush(out),
            Processor::TailSampling(p) => p.flush(now, out),
            Processor::SpanMetrics(p) => p.flush(now, out),
            Processor::MemoryLimiter(_)
            | Processor::ProbabilisticSampler(_)
            | Processor::Attributes(_) => {}
        }
    }

    /// When this stage next wants `tick`, if it holds anything.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            Processor::Batch(p) => p.next_deadline(),
            Processor::Cardinality(p) => p.next_deadline(),
            Processor::TailSampling(p) => p.next_deadline(),
            Processor::SpanMetrics(p) => p.next_deadline(),
            Processor::MemoryLimiter(_)
            | Processor::ProbabilisticSampler(_)
            | Processor::Attributes(_) => None,
        }
    }
}

/// A pipeline's processors in order; what one stage emits is fed to the next.
pub struct Chain {
    stages: Vec<Processor>,
}

impl Chain {
    pub fn new(stages: Vec<Processor>) -> Chain {
        Chain { stages }
    }

    pub fn stages(&self) -> &[Processor] {
        &self.stages
    }

    pub fn process(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        feed(&mut self.stages, batch, now, out);
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        for i in 0..self.stages.len() {
            let mut emitted = Vec::new();
            self.stages[i].tick(now, &mut emitted);
            for b in emitted {
                feed(&mut self.stages[i + 1..], b, now, out);
            }
        }
    }

    pub fn flush(&mut self, now: Instant, out: &mut Vec<Batch>) {
        for i in 0..self.stages.len() {
            let mut emitted = Vec::new();
            self.stages[i].flush(now, &mut emitted);
            for b in emitted {
                feed(&mut self.stages[i + 1..], b, now, out);
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.stages
            .iter()
            .filter_map(Processor::next_deadline)
            .min()
    }
}

fn feed(stages: &mut [Processor], batch: Batch, now: Instant, out: &mut Vec<Batch>) {
    match stages.split_first_mut() {
        None => out.push(batch),
        Some((first, rest)) => {
            let mut emitted = Vec::new();
            first.process(batch, now, &mut emitted);
            for b in emitted {
                feed(rest, b, now, out);
            }
        }
    }
}
