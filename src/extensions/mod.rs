//! Extensions that other components use (the `health_check` extension lives with the
//! telemetry it serves).

pub mod file_storage;
