//! The `file_storage` extension: a directory where components keep state across restarts
//! (the `filelog` receiver's checkpoints). The collector's keys; sluice writes its own small
//! files there (not the collector's bbolt database), so the two cannot share a directory's
//! contents, only its configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::node::deserialize_duration;
use crate::receivers::otlp::config::NotYet;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStorageConfig {
    pub directory: PathBuf,
    pub create_directory: bool,
    /// Octal permissions for a directory sluice creates (the collector's default is 0750).
    pub directory_permissions: String,
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Sluice always syncs its checkpoint files; accepted for compatibility.
    pub fsync: bool,
    /// The collector's bbolt compaction settings; sluice's files need no compaction.
    pub compaction: Option<serde::de::IgnoredAny>,
    pub recreate: Option<NotYet>,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: PathBuf::from("/var/lib/otelcol/file_storage"),
            create_directory: false,
            directory_permissions: "0750".to_string(),
            timeout: Duration::from_secs(1),
            fsync: false,
            compaction: None,
            recreate: None,
        }
    }
}

impl FileStorageConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.recreate.is_some() {
            return Err("`recreate` is not supported yet".into());
        }
        if self.directory.as_os_str().is_empty() {
            return Err("`directory` must not be empty".into());
        }
        u32::from_str_radix(&self.directory_permissions, 8).map_err(|_| {
            format!(
                "`directory_permissions` must be octal, like 0750, not `{}`",
                self.directory_permissions
            )
        })?;
        Ok(())
    }

    /// Makes sure the directory exists (creating it only if asked) and is writable.
    pub fn prepare(&self, id: &str) -> Result<&Path, String> {
        let dir = &self.directory;
        if !dir.is_dir() {
            if !self.create_directory {
                return Err(format!(
                    "extension {id}: directory {} does not exist (create it, or set create_directory: true)",
                    dir.display()
                ));
            }
            let mode = u32::from_str_radix(&self.directory_permissions, 8).unwrap_or(0o750);
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(|e| format!("extension {id}: cannot create {}: {e}", dir.display()))?;
        }
        let probe = dir.join(".sluice-write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| {
                format!(
                    "extension {id}: directory {} is not writable: {e}",
                    dir.display()
                )
            })?;
        Ok(dir)
    }
}
