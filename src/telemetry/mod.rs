//! How the agent reports on itself: self-metrics in Prometheus text, the health endpoint
//! and its own logs.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod server;

pub use metrics::{Counter, Gauge, Histogram, Registry};
