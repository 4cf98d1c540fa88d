//! Sluice's Rust integration tests, in one binary: config fixtures and every file under
//! `configs/`, the CLI's exit codes, and in-process pipeline behaviour.

mod cardinality;
mod cli;
mod config_fixtures;
mod pipeline;
