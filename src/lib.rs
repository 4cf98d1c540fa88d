//! Sluice: a telemetry agent that runs OpenTelemetry Collector configs with less CPU and memory.
#![forbid(unsafe_code)]

pub mod config;
pub mod connectors;
pub mod exporters;
pub mod extensions;
pub mod hash;
pub mod loadgen;
pub mod otlp;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod seqmap;
pub mod telemetry;
