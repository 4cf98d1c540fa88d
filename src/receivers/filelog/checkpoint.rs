//! Where each tailed file was read up to, kept in the `file_storage` directory: one JSON file
//! per receiver, replaced atomically (written beside it, synced, renamed) so a crash leaves
//! either the old or the new checkpoint, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One file's position. A file is recognised again by device and inode together with its
/// first bytes, so a reused inode holding other content starts from the beginning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Hex of the first bytes of the file (up to `fingerprint_size`).
    pub fingerprint: String,
    pub offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<FileCheckpoint>,
}

#[derive(Clone, Debug)]
pub struct CheckpointStore {
    path: PathBuf,
}

impl CheckpointStore {
    /// The store of receiver `receiver_id` in `directory` (the collector also keeps one
    /// file per component there).
    pub fn new(directory: &Path, receiver_id: &str) -> CheckpointStore {
        let name: String = receiver_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        CheckpointStore {
            path: directory.join(format!("receiver_filelog_{name}.checkpoint.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved positions; none when there is no checkpoint yet. A damaged file is an
    /// error, so the caller can say so and start without it.
    pub fn load(&self) -> Result<Vec<FileCheckpoint>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<CheckpointFile>(&bytes)
                .map(|f| f.files)
                .map_err(|e| format!("checkpoint {} is damaged: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!(
                "cannot read checkpoint {}: {e}",
                self.path.display()
            )),
        }
    }

    pub fn save(&self, files: &[FileCheckpoint]) -> std::io::Result<()> {
        let body = serde_json::to_vec(&CheckpointFile {
            version: 1,
            files: files.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = std::env::temp_dir().join(format!("sluice-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = CheckpointStore::new(&dir, "filelog/pods");
        assert_eq!(store.load().unwrap(), Vec::new());
        let entry = FileCheckpoint {
            path: "/var/log/pods/a_b_c/d/0.log".into(),
            dev: 1,
            ino: 2,
            fingerprint: to_hex(b"2024-01-01"),
            offset: 42,
        };
        store.save(std::slice::from_ref(&entry)).unwrap();
        assert_eq!(store.load().unwrap(), vec![entry]);
        assert!(
            store
                .path()
                .ends_with("receiver_filelog_filelog_pods.checkpoint.json")
        );
        assert!(!store.path().with_extension("json.tmp").exists());
        std::fs::write(store.path(), b"{torn").unwrap();
        assert!(store.load().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            from_hex(&to_hex(b"\x00\xffab")),
            Some(b"\x00\xffab".to_vec())
        );
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
