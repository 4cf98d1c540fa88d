//! Wakes the tailer when something changes under the include patterns (inotify, through
//! `notify`): a write marks its file to be read, a new, renamed or deleted entry asks for
//! discovery. The periodic poll stays as the fallback for what inotify cannot see (a full
//! event queue, a watch limit reached, paths through symlinks); while inotify works it is a
//! safety net that runs every `WATCHED_RESCAN`, so idle files cost next to nothing however
//! many there are.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{CreateKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::glob::Pattern;

/// With inotify working, the full poll (a walk of the patterns and a `stat` per file) runs
/// this often, or every 10 `poll_interval`s if that is longer. Writes, truncations, creations,
/// renames and deletions all arrive as events; lost events (a full queue) ask for a poll
/// at once.
pub const WATCHED_RESCAN: Duration = Duration::from_secs(30);
/// The rescan interval while inotify works.
pub fn watched_rescan(poll_interval: Duration) -> Duration {
    WATCHED_RESCAN.max(poll_interval * 10)
}
/// Written paths remembered between two passes; past this, a full discovery is asked for
/// instead (it stats every file), so the set stays bounded.
const MAX_PENDING_PATHS: usize = 4096;

/// What happened since the last `take`.
#[derive(Debug, Default)]
pub struct Changes {
    /// Files written to (by the path the event named).
    pub written: HashSet<PathBuf>,
    /// Entries were created, renamed or deleted, or events were lost: run discovery.
    pub discover: bool,
    /// Directories were created: their first entries may have come before their watch.
    pub new_dirs: bool,
    /// inotify stopped working (watch limit, read error): poll from now on.
    pub failed: Option<String>,
    /// Write events received: what others do to the files (our own opens and reads, which
    /// also arrive, are not counted, or reading many files would look like a flood).
    pub events: usize,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && !self.discover && !self.new_dirs && self.failed.is_none()
    }
}

/// The directories a `FileWatcher` watches: tells which files' writes it reports.
#[derive(Clone, Debug, Default)]
pub struct WatchedRoots(Vec<WatchedRoot>);

#[derive(Clone, Debug)]
struct WatchedRoot {
    /// As watched: events name paths below it.
    path: PathBuf,
    /// With symlinks resolved.
    resolved: PathBuf,
    recursive: bool,
}

struct Shared {
    changes: Mutex<Changes>,
    wake: tokio::sync::Notify,
}

pub struct FileWatcher {
    shared: Arc<Shared>,
    roots: WatchedRoots,
    _watcher: RecommendedWatcher,
}

impl FileWatcher {
    /// Watches the literal directory of every pattern. Fails if inotify is unavailable, a
    /// directory does not exist (yet), or the watch limit is reached.
    pub fn start(patterns: &[Pattern]) -> Result<FileWatcher, notify::Error> {
        let shared = Arc::new(Shared {
            changes: Mutex::new(Changes::default()),
            wake: tokio::sync::Notify::new(),
        });
        let handler_shared = Arc::clone(&shared);
        let mut watcher = notify::recommended_watcher(move |event| {
            record(&handler_shared, event);
        })?;
        let mut roots: Vec<(PathBuf, bool)> = Vec::new();
        for p in patterns {
            let (root, recursive) = p.watch_root();
            match roots.iter_mut().find(|(r, _)| *r == root) {
                Some(existing) => existing.1 |= recursive,
                None => roots.push((root, recursive)),
            }
        }
        let mut resolved = Vec::with_capacity(roots.len());
        for (root, recursive) in roots {
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher.watch(&root, mode)?;
            resolved.push(WatchedRoot {
                resolved: std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone()),
                path: root,
                recursive,
            });
        }
        Ok(FileWatcher {
            shared,
            roots: WatchedRoots(resolved),
            _watcher: watcher,
        })
    }

    /// Waits until something changed (returns at once if a change is pending).
    pub async fn changed(&self) {
        self.shared.wake.notified().await;
    }

    /// Whether changes wait to be taken.
    pub fn pending(&self) -> bool {
        match self.shared.changes.lock() {
            Ok(c) => !c.is_empty(),
            Err(poisoned) => !poisoned.into_inner().is_empty(),
        }
    }

    pub fn take(&self) -> Changes {
        match self.shared.changes.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    pub fn roots(&self) -> WatchedRoots {
        self.roots.clone()
    }
}

impl WatchedRoots {
    /// Whether writes to `path` are reported under that same path: it lies under a watched
    /// directory (directly, unless recursive) and no symlink lies below that directory.
    pub fn covers(&self, path: &Path) -> bool {
        let Ok(real) = std::fs::canonicalize(path) else {
            return false;
        };
        self.0.iter().any(|root| {
            path.strip_prefix(&root.path).is_ok_and(|rest| {
                (root.recursive || rest.components().count() == 1)
                    && real == root.resolved.join(rest)
            })
        })
    }
}

fn record(shared: &Shared, event: notify::Result<notify::Event>) {
    let mut changes = match shared.changes.lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    match event {
        Err(e) => changes.failed = Some(e.to_string()),
        Ok(event) if event.need_rescan() => changes.discover = true,
        Ok(event) => match event.kind {
            // Our own opens show as access events; attribute changes carry no data.
            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => return,
            EventKind::Modify(ModifyKind::Data(_)) => {
                changes.events += 1;
                if changes.written.len() + event.paths.len() > MAX_PENDING_PATHS {
                    changes.written.clear();
                    changes.discover = true;
                } else if !changes.discover {
                    changes.written.extend(event.paths);
                }
            }
            EventKind::Create(CreateKind::Folder) => {
                changes.discover = true;
                changes.new_dirs = true;
            }
            _ => changes.discover = true,
        },
    }
    drop(changes);
    shared.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(w: &FileWatcher, what: impl Fn(&Changes) -> bool) -> Changes {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Changes::default();
        while Instant::now() < deadline {
            let c = w.take();
            seen.written.extend(c.written);
            seen.discover |= c.discover;
            seen.new_dirs |= c.new_dirs;
            seen.failed = seen.failed.or(c.failed);
            if what(&seen) {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no such change: {seen:?}");
    }

    #[test]
    fn reports_new_entries_and_writes_below_the_pattern_root() {
        let dir = std::env::temp_dir().join(format!("sluice-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pattern = Pattern::new(&format!("{}/*/*/*.log", dir.display())).unwrap();
        let w = FileWatcher::start(&[pattern]).unwrap();
        let log = dir.join("ns_pod_uid/app/0.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "a\n").unwrap();
        wait_for(&w, |c| c.discover);
        assert!(w.roots().covers(&log));
        // New directories are watched too (recursive); writes made before their watch was
        // in place are found by the discovery their creation asked for.
        std::thread::sleep(Duration::from_millis(50));
        w.take();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"b\n"))
            .unwrap();
        let c = wait_for(&w, |c| c.written.contains(&log));
        assert!(!c.discover, "a write alone asks for no discovery: {c:?}");
        // A symlinked path is not covered: its writes show under the target's name.
        let link = dir.join("ns_pod_uid/app/1.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(!w.roots().covers(&link));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_to_retry() {
        let pattern = Pattern::new("/nonexistent-sluice-dir/*/*.log").unwrap();
        let Err(e) = FileWatcher::start(&[pattern]) else {
            panic!("watching a missing directory");
        };
        assert!(matches!(e.kind, notify::ErrorKind::PathNotFound), "{e}");
    }
}
