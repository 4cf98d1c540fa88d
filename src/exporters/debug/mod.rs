//! The `debug` exporter: writes what passes through to the agent's log, at the verbosity the
//! collector names `basic`, `normal` or `detailed`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::Deserialize;

use super::{Delivered, ExportError};
use crate::config::ComponentId;
use crate::otlp::{Signal, json};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugExporterConfig {
    pub verbosity: Verbosity,
    pub sampling_initial: u64,
    pub sampling_thereafter: u64,
}

impl Default for DebugExporterConfig {
    fn default() -> Self {
        DebugExporterConfig {
            verbosity: Verbosity::Basic,
            sampling_initial: 2,
            sampling_thereafter: 1,
        }
    }
}

pub struct DebugExporter {
    id: String,
    config: DebugExporterConfig,
    seen: AtomicU64,
}

impl DebugExporter {
    pub fn new(id: &ComponentId, config: &DebugExporterConfig) -> DebugExporter {
        DebugExporter {
            id: id.to_string(),
            config: config.clone(),
            seen: AtomicU64::new(0),
        }
    }

    /// The collector's log sampling: the first `sampling_initial` messages, then every
    /// `sampling_thereafter`-th.
    fn sampled(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        let initial = self.config.sampling_initial;
        let every = self.config.sampling_thereafter.max(1);
        n < initial || (n - initial).is_multiple_of(every)
    }

    pub fn send(
        &self,
        signal: Signal,
        payload: &Bytes,
        items: usize,
    ) -> Result<Delivered, ExportError> {
        if !self.sampled() {
            return Ok(Delivered::default());
        }
        match self.config.verbosity {
            Verbosity::Basic => {
                tracing::info!(exporter = %self.id, signal = %signal, items, bytes = payload.len(), "Debug exporter received data.")
            }
            Verbosity::Normal | Verbosity::Detailed => {
                let text = json::proto_to_json(signal, payload).map_err(ExportError::Permanent)?;
                tracing::info!(exporter = %self.id, signal = %signal, items, data = %text, "Debug exporter received data.");
            }
        }
        Ok(Delivered::default())
    }
}
