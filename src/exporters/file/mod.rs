//! The `file` exporter: one OTLP/JSON request per line, appended to `path`, rotated by size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use serde::Deserialize;

use super::{Delivered, ExportError};
use crate::otlp::{Signal, json};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileExporterConfig {
    pub path: String,
    pub format: Option<String>,
    pub rotation: Option<RotationConfig>,
    pub append: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    pub max_megabytes: u64,
    pub max_days: u64,
    pub max_backups: usize,
    pub localtime: bool,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            max_megabytes: 100,
            max_days: 0,
            max_backups: 100,
            localtime: false,
        }
    }
}

impl FileExporterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() {
            return Err("`path` is required".into());
        }
        if let Some(f) = self.format.as_ref().filter(|f| *f != "json") {
            return Err(format!("format `{f}` is not supported yet (only `json`)"));
        }
        if self.rotation.as_ref().is_some_and(|r| r.max_days > 0) {
            return Err("rotation.max_days is not supported yet".into());
        }
        Ok(())
    }
}

struct Output {
    file: File,
    written: u64,
}

pub struct FileExporter {
    path: PathBuf,
    rotation: Option<RotationConfig>,
    output: Mutex<Option<Output>>,
}

impl FileExporter {
    pub fn new(config: &FileExporterConfig) -> Result<FileExporter, String> {
        let path = PathBuf::from(&config.path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let exporter = FileExporter {
            path,
            rotation: config.rotation.clone(),
            output: Mutex::new(None),
        };
        let output = exporter
            .open()
            .map_err(|e| format!("cannot open {}: {e}", config.path))?;
        *exporter.output.lock().unwrap_or_else(|p| p.into_inner()) = Some(output);
        Ok(exporter)
    }

    fn open(&self) -> std::io::Result<Output> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let written = file.metadata()?.len();
        Ok(Output { file, written })
    }

    pub async fn send(&self, signal: Signal, payload: &Bytes) -> Result<Delivered, ExportError> {
        let mut line = json::proto_to_json(signal, payload).map_err(ExportError::Permanent)?;
        line.push('\n');
        let mut guard = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let io = |e: std::io::Error| ExportError::Retryable {
            message: format!("cannot write {}: {e}", self.path.display()),
            retry_after: None,
        };
        if guard.is_none() {
            *guard = Some(self.open().map_err(io)?);
        }
        if let (Some(rotation), Some(out)) = (&self.rotation, guard.as_ref()) {
            let limit = rotation.max_megabytes.max(1) * 1024 * 1024;
            if out.written > 0 && out.written + line.len() as u64 > limit {
                *guard = None;
                rotate(&self.path, rotation.max_backups).map_err(io)?;
                *guard = Some(self.open().map_err(io)?);
            }
        }
        let Some(out) = guard.as_mut() else {
            return Err(ExportError::Permanent("file not open".into()));
        };
        out.file.write_all(line.as_bytes()).map_err(io)?;
        out.written += line.len() as u64;
        Ok(Delivered::default())
    }
}

/// Renames the full file to `<stem>-<unix millis><ext>` and keeps at most `max_backups`.
fn rotate(path: &Path, max_backups: usize) -> std::io::Result<()> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("export");
    let ext = path
        .extension()
        .and_then(|s| s.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::rename(path, dir.join(format!("{stem}-{millis}{ext}")))?;
    if max_backups == 0 {
        return Ok(());
    }
    let prefix = format!("{stem}-");
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(&ext))
        })
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(max_backups);
    for old in backups.into_iter().take(excess) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}
