//! Receivers: where data enters. Each is a plain struct started with the consumers of the
//! pipelines that list it.

pub mod filelog;
pub mod otlp;
pub mod prometheus;
