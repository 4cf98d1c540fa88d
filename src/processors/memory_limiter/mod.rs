//! The `memory_limiter` processor: watches the process's resident memory and, above the soft
//! limit (`limit - spike`), makes receivers refuse data with a retryable error (gRPC
//! `ResourceExhausted`, HTTP 429) instead of growing until the kernel kills the agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::config::node::deserialize_duration;
use crate::telemetry::server::{ShutdownRx, stopped};
use crate::telemetry::{Counter, Gauge, Registry};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    #[serde(deserialize_with = "deserialize_duration")]
    pub check_interval: Duration,
    pub limit_mib: u64,
    pub spike_limit_mib: u64,
    pub limit_percentage: u64,
    pub spike_limit_percentage: u64,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::ZERO,
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
        }
    }
}

impl MemoryLimiterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.check_interval.is_zero() {
            return Err("check_interval must be greater than zero".into());
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return Err("either limit_mib or limit_percentage must be set".into());
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage > 100 {
            return Err("limit_percentage and spike_limit_percentage must be at most 100".into());
        }
        if self.limit_mib > 0 && self.spike_limit_mib >= self.limit_mib {
            return Err("spike_limit_mib must be smaller than limit_mib".into());
        }
        Ok(())
    }

    /// The (hard, soft) limits in bytes; percentages are of the cgroup limit or total memory.
    pub fn limits(&self) -> (u64, u64) {
        const MIB: u64 = 1024 * 1024;
        if self.limit_mib > 0 {
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib
            } else {
                self.limit_mib / 5
            };
            return (self.limit_mib * MIB, (self.limit_mib - spike) * MIB);
        }
        let total = total_memory_bytes();
        let hard = total / 100 * self.limit_percentage;
        let spike = total / 100 * self.spike_limit_percentage;
        (hard, hard.saturating_sub(spike))
    }
}

/// Shared between the limiter's checker and the receivers that must refuse.
#[derive(Clone, Debug, Default)]
pub struct MemoryGate(Arc<AtomicBool>);

impl MemoryGate {
    pub fn refusing(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, refusing: bool) {
        self.0.store(refusing, Ordering::Relaxed);
    }
}

pub struct MemoryLimiter {
    config: MemoryLimiterConfig,
    gate: MemoryGate,
    id: String,
    refused_checks: Counter,
    rss: Gauge,
}

impl MemoryLimiter {
    pub fn new(config: MemoryLimiterConfig, id: &str, registry: &Registry) -> MemoryLimiter {
        MemoryLimiter {
            config,
            gate: MemoryGate::default(),
            id: id.to_string(),
            refused_checks: registry.counter(
                "sluice_memory_limiter_refusing_checks_total",
                "Checks that found memory above the soft limit.",
                &[("processor", id)],
            ),
            rss: registry.gauge(
                "sluice_process_resident_memory_bytes",
                "Resident memory as the memory limiter last measured it.",
                &[("processor", id)],
            ),
        }
    }

    pub fn gate(&self) -> MemoryGate {
        self.gate.clone()
    }

    /// Starts the periodic check; it ends at shutdown.
    pub fn spawn_checker(&self, mut shutdown: ShutdownRx) {
        let (hard, soft) = self.config.limits();
        let interval = self.config.check_interval;
        let gate = self.gate.clone();
        let id = self.id.clone();
        let refused = self.refused_checks.clone();
        let rss_gauge = self.rss.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped(&mut shutdown) => return,
                }
                let rss = resident_bytes();
                rss_gauge.set(rss as i64);
                let over = rss >= soft;
                if over {
                    refused.add(1);
                }
                if over != gate.refusing() {
                    if over {
                        tracing::warn!(processor = %id, rss, soft_limit = soft, hard_limit = hard, "Memory usage is above the soft limit; refusing data.");
                    } else {
                        tracing::info!(processor = %id, rss, "Memory usage is back below the soft limit; accepting data.");
                    }
                    gate.set(over);
                }
            }
        });
    }
}

/// Resident set size of this process, from /proc.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn total_memory_bytes() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, meminfo) {
        (Some(c), Some(m)) => c.min(m),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_mib_default_spike_is_a_fifth() {
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: 100,
            ..Default::default()
        };
        assert_eq!(c.limits(), (100 << 20, 80 << 20));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_missing_interval_and_limits() {
        assert!(MemoryLimiterConfig::default().validate().is_err());
    }

    #[test]
    fn reads_own_rss() {
        assert!(resident_bytes() > 0);
    }
}
