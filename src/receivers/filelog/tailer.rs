//! Finding and reading the files: discovery by pattern (every poll, or when the watcher saw
//! entries change), identity by device and inode plus the first bytes (fingerprint), reading
//! complete lines from where each file was left, and rotation. Only files that may have new
//! data are read: those the watcher saw written, and those whose size or modification time
//! changed at discovery — an idle file costs one `stat` per poll, nothing more. A file renamed away (kubelet's rename-then-create) or deleted keeps
//! its descriptor until it has been read to the end, then is closed; a file that shrank
//! (copytruncate) is read again from the start. Synchronous: the receiver runs it on the
//! blocking pool.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::checkpoint::{FileCheckpoint, from_hex, to_hex};
use super::config::{ContainerFormat, FilelogConfig, StartAt};
use super::glob::Pattern;
use super::operators::{OpStats, Operators};
use super::parser::{Joined, Joiner, Parsed, Stream, parse_line};
use super::records::{self, Attrs, Records};
use super::watch::WatchedRoots;

/// Bytes read from one file per pass, so one busy file cannot starve the others.
const READ_CHUNK: usize = 64 * 1024;
/// Closed files remembered so rotated siblings are not read twice.
const MAX_RELEASED: usize = 4096;

/// Settings the tailer needs, resolved from the receiver's config.
#[derive(Clone, Debug)]
pub struct TailerSettings {
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    pub start_at_beginning: bool,
    pub fingerprint_size: usize,
    pub max_log_size: usize,
    pub max_files: usize,
    /// `None` without a `container` operator: lines are passed on as they are.
    pub container: Option<ContainerSettings>,
    pub include_file_name: bool,
    pub include_file_path: bool,
    pub include_file_path_resolved: bool,
    pub include_file_name_resolved: bool,
    pub node_name: Option<String>,
    /// The operators after `container`, run on each record.
    pub operators: Operators,
}

#[derive(Clone, Debug)]
pub struct ContainerSettings {
    pub format: Option<ContainerFormat>,
    pub metadata_from_path: bool,
    pub max_joined_size: usize,
}

impl TailerSettings {
    pub fn from_config(c: &FilelogConfig, node_name: Option<String>) -> Result<Self, String> {
        let patterns = |list: &[String]| -> Result<Vec<Pattern>, String> {
            list.iter().map(|p| Pattern::new(p)).collect()
        };
        let max_log_size = usize::try_from(c.max_log_size.0).unwrap_or(usize::MAX);
        Ok(TailerSettings {
            include: patterns(&c.include)?,
            exclude: patterns(&c.exclude)?,
            start_at_beginning: c.start_at == StartAt::Beginning,
            fingerprint_size: usize::try_from(c.fingerprint_size.0).unwrap_or(1000),
            max_log_size,
            max_files: c.max_concurrent_files,
            container: c.container().map(|op| ContainerSettings {
                format: op.format,
                metadata_from_path: op.add_metadata_from_filepath,
                max_joined_size: match op.max_log_size.0 {
                    0 => max_log_size,
                    n => usize::try_from(n).unwrap_or(usize::MAX),
                },
            }),
            include_file_name: c.include_file_name,
            include_file_path: c.include_file_path,
            include_file_path_resolved: c.include_file_path_resolved,
            include_file_name_resolved: c.include_file_name_resolved,
            node_name,
            operators: Operators::new(&c.operators),
        })
    }
}

/// Counts the receiver turns into self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TailStats {
    pub bytes_read: u64,
    pub records: u64,
    /// Lines that were not container log lines (passed on as their text).
    pub unparsed: u64,
    /// Records cut because a line or a joined message reached the size limit.
    pub split: u64,
    pub truncations_detected: u64,
    pub files_opened: u64,
    pub files_closed: u64,
    /// Matching files not opened because `max_concurrent_files` were already open.
    pub files_skipped: u64,
    /// What the operators after `container` failed on and dropped.
    pub operators: OpStats,
}

#[derive(Debug)]
struct TrackedFile {
    /// Changes when the file is read again from the start (truncation), so acknowledgements
    /// of the earlier content cannot move the new position.
    id: u64,
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    fingerprint: Vec<u8>,
    /// Next byte to read.
    offset: u64,
    /// Bytes read after the last newline; they start at `offset - buf.len()`.
    buf: Vec<u8>,
    joiner: Joiner,
    /// The path still names this file (false once renamed away or deleted).
    present: bool,
    modified: Option<std::time::SystemTime>,
    /// Size at the last discovery: with `modified`, tells whether the file changed at all.
    size_seen: u64,
    /// May have data past `offset`: read on the next pass.
    dirty: bool,
    /// Writes to it are reported by the watcher under `path`.
    watched: bool,
    /// Inside a line longer than `max_log_size`: the stream and time of its first part.
    long_line: Option<Option<(Stream, u64)>>,
    resource: Vec<KeyValue>,
    file_attrs: Attrs,
}

impl TrackedFile {
    /// Reads the file again from the start under a new id (it was truncated or rewritten), so
    /// acknowledgements for the old content cannot move the new position.
    fn restart(&mut self, id: u64, fingerprint_size: usize) {
        tracing::debug!(path = %self.path.display(), "File was truncated; reading it from the start.");
        self.id = id;
        self.offset = 0;
        self.buf.clear();
        self.joiner = Joiner::default();
        self.long_line = None;
        self.fingerprint = read_fingerprint(&self.file, fingerprint_size);
        self.dirty = true;
    }

    /// The offset up to which every byte has been turned into records.
    fn safe_offset(&self) -> u64 {
        let line_start = self.offset - self.buf.len() as u64;
        self.joiner
            .held_from()
            .map_or(line_start, |h| h.min(line_start))
    }
}

/// A batch of records read in one pass, with where each file may resume once it is delivered.
#[derive(Debug, Default)]
pub struct ReadOutput {
    /// An encoded `ExportLogsServiceRequest`: one `ResourceLogs` per file read from.
    pub payload: Vec<u8>,
    pub records: usize,
    /// `(file id, offset)`: everything before `offset` is in this batch or an earlier one.
    pub positions: Vec<(u64, u64)>,
    /// Some file still has unread data (the byte budget ran out).
    pub more: bool,
    /// A file was written to but has nothing past its position: it may have been truncated,
    /// which only discovery can tell.
    pub rediscover: bool,
}

pub struct Tailer {
    settings: TailerSettings,
    files: Vec<TrackedFile>,
    next_id: u64,
    first_discovery: bool,
    resume: Vec<FileCheckpoint>,
    cursor: usize,
    /// The read buffer, kept between passes.
    chunk: Vec<u8>,
    /// Starting positions of files opened (or restarted) since last asked.
    started: Vec<(u64, u64)>,
    /// Files read to their end and closed, by device, inode and first bytes, so a rotated
    /// file found beside its path is not read twice.
    released: std::collections::VecDeque<(u64, u64, Vec<u8>)>,
    /// Where the watcher sees writes (`None`: no watcher, discovery finds them).
    watched_roots: Option<WatchedRoots>,
    pub stats: TailStats,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Tailer {
    /// `resume`: positions from a checkpoint; a file they recognise continues from there,
    /// whatever `start_at` says. `resuming`: a checkpoint was found, so files it does not
    /// know appeared while the agent was away and are read from their beginning
    /// (`start_at: end` applies only to a first start).
    pub fn new(settings: TailerSettings, resume: Vec<FileCheckpoint>, resuming: bool) -> Tailer {
        Tailer {
            settings,
            files: Vec::new(),
            next_id: 1,
            first_discovery: !resuming,
            resume,
            cursor: 0,
            chunk: Vec::new(),
            started: Vec::new(),
            released: std::collections::VecDeque::new(),
            watched_roots: None,
            stats: TailStats::default(),
        }
    }

    /// `(file id, offset)` of every file opened or restarted since the last call: where a
    /// checkpoint would resume it before anything of it is delivered.
    pub fn take_started(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.started)
    }

    pub fn is_open(&self, id: u64) -> bool {
        self.files.iter().any(|f| f.id == id)
    }

    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Tells which files the watcher reports writes for (`None`: it stopped, or there is none).
    pub fn set_watched_roots(&mut self, roots: Option<WatchedRoots>) {
        for f in &mut self.files {
            f.watched = roots.as_ref().is_some_and(|r| r.covers(&f.path));
        }
        self.watched_roots = roots;
    }

    /// Open files whose writes the watcher does not report (paths through symlinks, or no
    /// watcher): they must be looked at every poll.
    pub fn has_unwatched(&self) -> bool {
        self.files.iter().any(|f| f.present && !f.watched)
    }

    /// Marks the files named by write events, and those the watcher cannot see, to be read.
    pub fn mark_written(&mut self, written: &std::collections::HashSet<PathBuf>, unwatched: bool) {
        for f in &mut self.files {
            if written.contains(&f.path) || (unwatched && !f.watched) {
                f.dirty = true;
            }
        }
    }

    /// Finds the files the patterns name now and reconciles them with the open ones.
    pub fn discover(&mut self) {
        let mut paths = Vec::new();
        for p in &self.settings.include {
            p.expand(&mut paths);
        }
        paths.sort_by(|a, b| a.0.cmp(&b.0));
        paths.dedup_by(|a, b| a.0 == b.0);
        paths.retain(|(p, _)| {
            !p.to_string_lossy().ends_with(".gz")
                && !self.settings.exclude.iter().any(|e| e.matches(p))
        });
        let was_present: Vec<(u64, u64)> = self
            .files
            .iter()
            .filter(|f| f.present)
            .map(|f| (f.dev, f.ino))
            .collect();
        for f in &mut self.files {
            f.present = false;
        }
        for (path, meta) in paths {
            let (dev, ino, size) = (meta.dev(), meta.ino(), meta.size());
            if let Some(f) = self.files.iter_mut().find(|f| f.dev == dev && f.ino == ino) {
                // While we hold its descriptor the inode cannot be reused, so this is the same
                // file; it was truncated if it shrank or its first bytes changed.
                f.present = true;
                if f.path != path {
                    f.path = path;
                    f.file_attrs = file_attrs(&self.settings, &f.path);
                    f.resource = resource(&self.settings, &f.path);
                    f.watched = self
                        .watched_roots
                        .as_ref()
                        .is_some_and(|r| r.covers(&f.path));
                }
                // Same size and modification time as at the last look: nothing was written,
                // so neither the first bytes nor the end need reading. This keeps a poll over
                // many idle files to one `stat` each.
                let modified = meta.modified().ok();
                if size == f.size_seen && modified == f.modified {
                    continue;
                }
                f.size_seen = size;
                f.modified = modified;
                f.dirty |= size > f.offset;
                let changed = size < f.offset || {
                    let mut head = vec![0u8; f.fingerprint.len()];
                    read_full_at(&f.file, &mut head, 0) != f.fingerprint.len()
                        || head != f.fingerprint
                };
                if changed {
                    f.restart(self.next_id, self.settings.fingerprint_size);
                    self.next_id += 1;
                    self.stats.truncations_detected += 1;
                    self.started.push((f.id, 0));
                }
                continue;
            }
            if self.files.len() >= self.settings.max_files {
                self.stats.files_skipped += 1;
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // The opened file may differ from the one just examined (a rotation in between).
            let Ok(meta) = file.metadata() else { continue };
            let (dev, ino, size) = (meta.dev(), meta.ino(), meta.size());
            let fingerprint = read_fingerprint(&file, self.settings.fingerprint_size);
            let resumed = self.take_resume(dev, ino, &fingerprint, size);
            let offset = match resumed {
                Some(o) => o,
                None if self.first_discovery && !self.settings.start_at_beginning => size,
                None => 0,
            };
            tracing::debug!(path = %path.display(), ino, offset, resumed = resumed.is_some(), "Tailing file.");
            self.open_tracked(path, file, &meta, fingerprint, offset, true);
        }
        // A path that stopped naming a file was rotated. Files created and rotated again
        // between two polls never showed under the pattern: they are found beside it.
        let rotated: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|f| !f.present && was_present.contains(&(f.dev, f.ino)))
            .map(|f| f.path.clone())
            .collect();
        if !self.first_discovery {
            for path in rotated {
                self.adopt_rotated_siblings(&path);
            }
        }
        self.first_discovery = false;
        self.resume.clear();
        // Files that are gone are read first, oldest first, to their end, before their
        // successors.
        self.files.sort_by_key(|f| (f.present, f.modified));
    }

    /// Opens `<path>.*` files (not `.gz`) that are neither open nor already read.
    fn adopt_rotated_siblings(&mut self, path: &Path) {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let sibling = entry.file_name().to_string_lossy().into_owned();
            if !sibling.starts_with(&prefix) || sibling.ends_with(".gz") {
                continue;
            }
            let Ok(file) = File::open(entry.path()) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file()
                || self
                    .files
                    .iter()
                    .any(|f| f.dev == meta.dev() && f.ino == meta.ino())
            {
                continue;
            }
            let fingerprint = read_fingerprint(&file, self.settings.fingerprint_size);
            let same_start = |fp: &[u8]| {
                !fp.is_empty()
                    && !fingerprint.is_empty()
                    && (fingerprint.starts_with(fp) || fp.starts_with(&fingerprint))
            };
            let seen = self
                .released
                .iter()
                .any(|(dev, ino, fp)| *dev == meta.dev() && *ino == meta.ino() && same_start(fp));
            // A copy of a file already read (copytruncate's `0.log.1`) starts with the same
            // bytes as the original: reading it again would duplicate every line.
            let copy_of_known = self.files.iter().any(|f| same_start(&f.fingerprint))
                || self.released.iter().any(|(_, _, fp)| same_start(fp));
            if seen || copy_of_known {
                continue;
            }
            tracing::debug!(path = %entry.path().display(), "Reading a file rotated before it was seen.");
            self.open_tracked(path.to_path_buf(), file, &meta, fingerprint, 0, false);
        }
    }

    fn open_tracked(
        &mut self,
        path: PathBuf,
        file: File,
        meta: &std::fs::Metadata,
        fingerprint: Vec<u8>,
        offset: u64,
        present: bool,
    ) {
        self.stats.files_opened += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.started.push((id, offset));
        let watched = self.watched_roots.as_ref().is_some_and(|r| r.covers(&path));
        self.files.push(TrackedFile {
            id,
            file_attrs: file_attrs(&self.settings, &path),
            resource: resource(&self.settings, &path),
            path,
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            modified: meta.modified().ok(),
            size_seen: meta.size(),
            dirty: true,
            watched,
            fingerprint,
            offset,
            buf: Vec::new(),
            joiner: Joiner::default(),
            present,
            long_line: None,
        });
    }

    fn take_resume(&mut self, dev: u64, ino: u64, head: &[u8], size: u64) -> Option<u64> {
        let i = self.resume.iter().position(|c| {
            c.dev == dev
                && c.ino == ino
                && from_hex(&c.fingerprint).is_some_and(|fp| head.starts_with(&fp))
        })?;
        let c = self.resume.swap_remove(i);
        (c.offset <= size).then_some(c.offset)
    }

    /// Reads up to `budget` bytes across the files that may have new data and returns the
    /// records they complete. Files gone from disk and read to their end are closed
    /// afterwards.
    pub fn read(&mut self, budget: usize) -> ReadOutput {
        let mut out = ReadOutput::default();
        let observed = now_ns();
        let mut remaining = budget;
        let n = self.files.len();
        let mut exhausted = vec![false; n];
        let start = if n == 0 { 0 } else { self.cursor % n };
        // Gone files first (they are sorted to the front), then round-robin from the cursor.
        let order: Vec<usize> = (0..n)
            .filter(|&i| !self.files[i].present)
            .chain(
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| self.files[i].present && self.files[i].dirty),
            )
            .collect();
        if order.is_empty() {
            return out;
        }
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(READ_CHUNK, 0);
        for &i in &order {
            let mut records = Records::for_operators(&self.settings.operators);
            let f = &mut self.files[i];
            // copytruncate followed at once by more writes than before: the size alone does not
            // show it, and reading on from our offset would emit the middle of the new content
            // before discovery restarts the file from the top. Check the first bytes first.
            if f.present && f.offset > 0 && !f.fingerprint.is_empty() {
                let mut head = vec![0u8; f.fingerprint.len()];
                if read_full_at(&f.file, &mut head, 0) != head.len() || head != f.fingerprint {
                    f.restart(self.next_id, self.settings.fingerprint_size);
                    self.next_id += 1;
                    self.stats.truncations_detected += 1;
                    self.started.push((f.id, 0));
                }
            }
            let before = f.safe_offset();
            let mut got_any = false;
            loop {
                if remaining == 0 {
                    out.more = true;
                    break;
                }
                let want = READ_CHUNK.min(remaining);
                let got = match f.file.read_at(&mut chunk[..want], f.offset) {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::debug!(path = %f.path.display(), error = %e, "Read failed.");
                        0
                    }
                };
                if got == 0 {
                    exhausted[i] = true;
                    f.dirty = false;
                    // Told of a write but nothing past our position: truncated?
                    if !got_any && f.present && f.file.metadata().is_ok_and(|m| m.size() < f.offset)
                    {
                        out.rediscover = true;
                    }
                    break;
                }
                got_any = true;
                remaining -= got;
                f.offset += got as u64;
                if f.fingerprint.len() < self.settings.fingerprint_size {
                    f.fingerprint = read_fingerprint(&f.file, self.settings.fingerprint_size);
                }
                self.stats.bytes_read += got as u64;
                f.buf.extend_from_slice(&chunk[..got]);
                split_lines(f, &self.settings, &mut self.stats, observed, &mut records);
            }
            if !records.is_empty() || f.safe_offset() != before {
                out.positions.push((f.id, f.safe_offset()));
            }
            add_records(
                &mut out,
                &mut self.stats,
                &f.resource,
                records,
                &self.settings.operators,
                observed,
            );
        }
        self.chunk = chunk;
        self.cursor = self.cursor.wrapping_add(1);
        // Close what is gone and fully read: its last line (even without a newline) and any
        // partial message held for it are passed on first.
        let mut i = 0;
        while i < self.files.len() {
            if self.files[i].present || !exhausted.get(i).copied().unwrap_or(false) {
                i += 1;
                continue;
            }
            let mut f = self.files.remove(i);
            exhausted.remove(i);
            let mut records = Records::for_operators(&self.settings.operators);
            if !f.buf.is_empty() {
                let line = std::mem::take(&mut f.buf);
                let line_start = f.offset - line.len() as u64;
                emit_line(
                    &mut f,
                    &line,
                    line_start,
                    &self.settings,
                    &mut self.stats,
                    observed,
                    &mut records,
                );
            }
            flush_joiner(&mut f, &mut self.stats, observed, &mut records);
            out.positions.retain(|(id, _)| *id != f.id);
            add_records(
                &mut out,
                &mut self.stats,
                &f.resource,
                records,
                &self.settings.operators,
                observed,
            );
            self.stats.files_closed += 1;
            if self.released.len() >= MAX_RELEASED {
                self.released.pop_front();
            }
            self.released
                .push_back((f.dev, f.ino, std::mem::take(&mut f.fingerprint)));
            tracing::debug!(path = %f.path.display(), ino = f.ino, offset = f.offset, "Released a file that is gone and read to its end.");
        }
        out
    }

    /// Where each open file stands, given the positions delivered so far (by file id).
    pub fn checkpoint(
        &self,
        delivered: &std::collections::HashMap<u64, u64>,
    ) -> Vec<FileCheckpoint> {
        self.files
            .iter()
            .filter(|f| f.present)
            .filter_map(|f| {
                delivered.get(&f.id).map(|&offset| FileCheckpoint {
                    path: f.path.to_string_lossy().into_owned(),
                    dev: f.dev,
                    ino: f.ino,
                    fingerprint: to_hex(&f.fingerprint),
                    offset,
                })
            })
            .collect()
    }
}

/// Adds a file's records to the batch: one `ResourceLogs` with the file's resource, or, after
/// operators, one per resource they gave the records.
fn add_records(
    out: &mut ReadOutput,
    stats: &mut TailStats,
    resource: &[KeyValue],
    mut records: Records,
    operators: &Operators,
    observed: u64,
) {
    records.settle(operators, observed, &mut stats.operators);
    let Some(mut values) = records.take_values() else {
        if !records.is_empty() {
            out.records += records.len();
            stats.records += records.len() as u64;
            records.frame_into(resource, &mut out.payload);
        }
        return;
    };
    match operators.apply_all(&mut values, resource, observed, &mut stats.operators) {
        None => add_group(out, stats, resource, values),
        Some(groups) => {
            for (res, recs) in groups {
                add_group(out, stats, &res, recs);
            }
        }
    }
}

fn add_group(
    out: &mut ReadOutput,
    stats: &mut TailStats,
    resource: &[KeyValue],
    recs: Vec<LogRecord>,
) {
    if recs.is_empty() {
        return;
    }
    out.records += recs.len();
    stats.records += recs.len() as u64;
    records::encode_resource_logs(resource, &recs, &mut out.payload);
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

fn read_fingerprint(file: &File, size: usize) -> Vec<u8> {
    let mut head = vec![0u8; size];
    let n = read_full_at(file, &mut head, 0);
    head.truncate(n);
    head
}

fn file_attrs(s: &TailerSettings, path: &Path) -> Attrs {
    Attrs::new(records::file_attributes(
        path,
        s.include_file_name,
        s.include_file_path,
        s.include_file_path_resolved,
        s.include_file_name_resolved,
    ))
}

fn resource(s: &TailerSettings, path: &Path) -> Vec<KeyValue> {
    let from_path = s.container.as_ref().is_some_and(|c| c.metadata_from_path);
    records::resource_attributes(path, from_path, s.node_name.as_deref())
}

/// Turns the complete lines in the file's buffer into records; cuts lines that reached
/// `max_log_size` without a newline.
fn split_lines(
    f: &mut TrackedFile,
    s: &TailerSettings,
    stats: &mut TailStats,
    observed: u64,
    out: &mut Records,
) {
    let buf = std::mem::take(&mut f.buf);
    let buf_start = f.offset - buf.len() as u64;
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        match rest.iter().position(|&c| c == b'\n') {
            Some(nl) if nl <= s.max_log_size => {
                let mut line = &rest[..nl];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                emit_line(f, line, buf_start + pos as u64, s, stats, observed, out);
                f.long_line = None;
                pos += nl + 1;
            }
            _ if rest.len() >= s.max_log_size => {
                // A line longer than the limit: pass on this part, the rest follows as parts
                // of the same stream.
                stats.split += 1;
                let part = &rest[..s.max_log_size];
                emit_line(f, part, buf_start + pos as u64, s, stats, observed, out);
                pos += s.max_log_size;
            }
            _ => break,
        }
    }
    f.buf = buf[pos..].to_vec();
}

fn emit_line(
    f: &mut TrackedFile,
    line: &[u8],
    line_start: u64,
    s: &TailerSettings,
    stats: &mut TailStats,
    observed: u64,
    out: &mut Records,
) {
    let Some(c) = &s.container else {
        out.raw(&super::parser::text(line), &f.file_attrs, observed);
        return;
    };
    if let Some(first) = f.long_line {
        // A later part of an over-long line: it has no prefix of its own.
        let text = super::parser::text(line);
        match first {
            Some((stream, time_ns)) => out.entry(
                super::parser::Entry {
                    stream,
                    time_ns,
                    message: text.into_owned(),
                    logtag: Some("F".into()),
                    extra: Vec::new(),
                },
                &f.file_attrs,
                observed,
            ),
            None => out.raw(&text, &f.file_attrs, observed),
        }
        return;
    }
    let over_long = line.len() >= s.max_log_size;
    match parse_line(line, c.format) {
        Parsed::Entry(entry) => {
            if over_long {
                f.long_line = Some(Some((entry.stream, entry.time_ns)));
            }
            let mut joined = Vec::new();
            f.joiner
                .push(entry, line_start, c.max_joined_size, &mut joined);
            for Joined { entry, split } in joined {
                if split {
                    stats.split += 1;
                }
                out.entry(entry, &f.file_attrs, observed);
            }
        }
        Parsed::Broken(text) => {
            if over_long {
                f.long_line = Some(None);
            }
            stats.unparsed += 1;
            out.raw(&text, &f.file_attrs, observed);
        }
    }
}

fn flush_joiner(f: &mut TrackedFile, stats: &mut TailStats, observed: u64, out: &mut Records) {
    for entry in f.joiner.drain() {
        stats.split += 1;
        out.entry(entry, &f.file_attrs, observed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::filelog::watch::WatchedRoots;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let dir =
                std::env::temp_dir().join(format!("sluice-tailer-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("ns_pod_0a1b/app")).unwrap();
            Tree(dir)
        }
        fn log(&self) -> PathBuf {
            self.0.join("ns_pod_0a1b/app/0.log")
        }
        fn settings(&self, beginning: bool) -> TailerSettings {
            let config = FilelogConfig {
                include: vec![format!("{}/*/*/*.log", self.0.display())],
                start_at: if beginning {
                    StartAt::Beginning
                } else {
                    StartAt::End
                },
                fingerprint_size: super::super::config::ByteSize(64),
                operators: vec![Default::default()],
                ..Default::default()
            };
            TailerSettings::from_config(&config, None).unwrap()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn line(i: usize) -> String {
        format!("2024-01-01T00:00:00Z stdout F line {i:04} padding\n")
    }

    fn bodies(out: &ReadOutput) -> Vec<String> {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use prost::Message;
        ExportLogsServiceRequest::decode(out.payload.as_slice())
            .unwrap()
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .filter_map(|r| match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn poll(t: &mut Tailer) -> Vec<String> {
        t.discover();
        bodies(&t.read(1 << 20))
    }

    fn append(path: &Path, lines: std::ops::Range<usize>) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for i in lines {
            f.write_all(line(i).as_bytes()).unwrap();
        }
    }

    fn expect(lines: std::ops::Range<usize>) -> Vec<String> {
        lines.map(|i| format!("line {i:04} padding")).collect()
    }

    #[test]
    fn start_at_end_skips_what_was_there_at_start_only() {
        let tree = Tree::new("end");
        append(&tree.log(), 0..3);
        let mut t = Tailer::new(tree.settings(false), Vec::new(), false);
        assert!(poll(&mut t).is_empty());
        append(&tree.log(), 3..5);
        assert_eq!(poll(&mut t), expect(3..5));
    }

    #[test]
    fn rename_then_create_reads_the_old_file_to_its_end_first() {
        let tree = Tree::new("rename");
        append(&tree.log(), 0..3);
        let mut t = Tailer::new(tree.settings(true), Vec::new(), false);
        assert_eq!(poll(&mut t), expect(0..3));
        append(&tree.log(), 3..5);
        std::fs::rename(tree.log(), tree.log().with_extension("log.20240101-000000")).unwrap();
        append(&tree.log(), 5..7);
        assert_eq!(poll(&mut t), expect(3..7));
        assert_eq!(t.open_files(), 1, "the rotated file is released");
    }

    #[test]
    fn a_file_rotated_between_polls_is_still_read() {
        let tree = Tree::new("fast");
        append(&tree.log(), 0..2);
        let mut t = Tailer::new(tree.settings(true), Vec::new(), false);
        assert_eq!(poll(&mut t), expect(0..2));
        std::fs::rename(tree.log(), tree.log().with_extension("log.1")).unwrap();
        append(&tree.log(), 2..4);
        std::fs::rename(tree.log(), tree.log().with_extension("log.2")).unwrap();
        append(&tree.log(), 4..6);
        assert_eq!(poll(&mut t), expect(2..6));
        append(&tree.log(), 6..7);
        assert_eq!(poll(&mut t), expect(6..7), "nothing is read twice");
    }

    #[test]
    fn truncation_is_detected_by_size_and_by_fingerprint() {
        let tree = Tree::new("trunc");
        append(&tree.log(), 0..3);
        let mut t = Tailer::new(tree.settings(true), Vec::new(), false);
        assert_eq!(poll(&mut t), expect(0..3));
        // Shrunk.
        std::fs::OpenOptions::new()
            .write(true)
            .open(tree.log())
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&tree.log(), 10..11);
        assert_eq!(poll(&mut t), expect(10..11));
        // Truncated and rewritten past the old offset: only the first bytes tell.
        std::fs::OpenOptions::new()
            .write(true)
            .open(tree.log())
            .unwrap()
            .set_len(0)
            .unwrap();
        let mut text = String::from("2024-01-01T00:00:01Z stdout F other first line\n");
        text.push_str(&line(20).repeat(3));
        std::fs::write(tree.log(), text).unwrap();
        let got = poll(&mut t);
        assert_eq!(got.first().map(String::as_str), Some("other first line"));
        assert_eq!(t.stats.truncations_detected, 2);
    }

    #[test]
    fn a_checkpoint_resumes_only_the_same_file() {
        let tree = Tree::new("resume");
        append(&tree.log(), 0..4);
        let mut t = Tailer::new(tree.settings(false), Vec::new(), false);
        t.discover();
        let id = t.take_started()[0].0;
        let offset = line(0).len() as u64 * 2;
        let delivered = std::collections::HashMap::from([(id, offset)]);
        let checkpoint = t.checkpoint(&delivered);
        assert_eq!(checkpoint.len(), 1);
        // Same file: resumes after line 1, whatever start_at says.
        let mut again = Tailer::new(tree.settings(false), checkpoint.clone(), true);
        assert_eq!(poll(&mut again), expect(2..4));
        // Other content under the same device and inode: not resumed.
        let mut other = checkpoint;
        other[0].fingerprint = to_hex(b"something else");
        let mut fresh = Tailer::new(tree.settings(true), other, true);
        assert_eq!(poll(&mut fresh), expect(0..4));
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let tree = Tree::new("idle");
        append(&tree.log(), 0..3);
        let mut t = Tailer::new(tree.settings(true), Vec::new(), false);
        assert_eq!(poll(&mut t), expect(0..3));
        t.discover();
        assert!(!t.files[0].dirty, "same size and time: nothing to read");
        append(&tree.log(), 3..4);
        t.discover();
        assert!(t.files[0].dirty);
        assert_eq!(bodies(&t.read(1 << 20)), expect(3..4));
    }

    #[test]
    fn written_files_are_read_without_discovery() {
        let tree = Tree::new("written");
        append(&tree.log(), 0..2);
        let mut t = Tailer::new(tree.settings(true), Vec::new(), false);
        t.set_watched_roots(Some(WatchedRoots::default()));
        assert_eq!(poll(&mut t), expect(0..2));
        append(&tree.log(), 2..3);
        assert!(bodies(&t.read(1 << 20)).is_empty(), "not told of the write");
        let written = std::collections::HashSet::from([tree.log()]);
        t.mark_written(&written, false);
        assert_eq!(bodies(&t.read(1 << 20)), expect(2..3));
        // Truncated and written again: the read sees the first bytes changed and starts over
        // itself, without waiting for discovery.
        std::fs::OpenOptions::new()
            .write(true)
            .open(tree.log())
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&tree.log(), 5..6);
        t.mark_written(&written, false);
        assert_eq!(bodies(&t.read(1 << 20)), expect(5..6));
        assert_eq!(t.stats.truncations_detected, 1);
        // Truncated to nothing, then written: read from the start too.
        std::fs::OpenOptions::new()
            .write(true)
            .open(tree.log())
            .unwrap()
            .set_len(0)
            .unwrap();
        t.mark_written(&written, false);
        assert!(bodies(&t.read(1 << 20)).is_empty());
        assert_eq!(t.stats.truncations_detected, 2);
        append(&tree.log(), 7..8);
        t.mark_written(&written, false);
        assert_eq!(bodies(&t.read(1 << 20)), expect(7..8));
    }
}
