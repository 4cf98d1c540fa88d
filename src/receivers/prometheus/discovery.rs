//! `file_sd_configs`: reads target groups from JSON/YAML files (globs in the file name) every
//! `refresh_interval`, and keeps one scrape loop running per discovered target, starting and
//! stopping loops as the files change. A file that cannot be read or parsed keeps its last
//! good content, as in Prometheus.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{FileSdConfig, Job, StaticConfig};
use super::scrape::{self, ScrapeTarget, TargetLoop};
use crate::telemetry::server::{ShutdownRx, stopped};

/// Expands `files` patterns (a glob only in the last element) to existing files, sorted.
pub fn expand(patterns: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?']) {
            if path.exists() {
                out.push(path.to_path_buf());
            }
            continue;
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if glob_match(&name, &entry.file_name().to_string_lossy()) {
                    out.push(entry.path());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `*` and `?` matching, as `filepath.Match` does within one path element.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Parses one file SD file (JSON is read as YAML, of which it is a subset).
pub fn parse_file(path: &Path) -> Result<Vec<StaticConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let name = path.display().to_string();
    let node = crate::config::node::parse(&name, &text).map_err(|e| e.to_string())?;
    crate::config::node::from_node(&node, "").map_err(|e| e.to_string())
}

/// The file contents last read successfully, per file.
#[derive(Default)]
pub struct FileCache {
    groups: BTreeMap<PathBuf, Vec<StaticConfig>>,
}

impl FileCache {
    /// Re-reads every file; returns every group with the file it came from.
    pub fn refresh(&mut self, configs: &[FileSdConfig], job: &str) -> Vec<(StaticConfig, String)> {
        let mut live = Vec::new();
        for c in configs {
            for path in expand(&c.files) {
                match parse_file(&path) {
                    Ok(groups) => {
                        self.groups.insert(path.clone(), groups);
                    }
                    Err(e) => {
                        tracing::warn!(job, file = %path.display(), error = %e, "Cannot read file_sd file; keeping its last good content.");
                    }
                }
                live.push(path);
            }
        }
        self.groups.retain(|p, _| live.contains(p));
        self.groups
            .iter()
            .flat_map(|(p, groups)| {
                groups
                    .iter()
                    .map(move |g| (g.clone(), p.display().to_string()))
            })
            .collect()
    }
}

/// What a target loop is started with, besides its target.
pub struct LoopTemplate {
    pub receiver: String,
    pub job: Arc<Job>,
    pub client: scrape::HttpClient,
    pub consumer: Option<crate::pipeline::consumer::Consumer>,
    pub metrics: crate::telemetry::metrics::ReceiverMetrics,
}

impl LoopTemplate {
    fn spawn(
        &self,
        target: ScrapeTarget,
        stop: ShutdownRx,
        removed: Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        let task = TargetLoop {
            removed: Some(removed),
            receiver: self.receiver.clone(),
            job: self.job.clone(),
            target,
            client: self.client.clone(),
            consumer: self.consumer.clone(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(task.run(stop))
    }
}

/// A running target loop and how to stop it.
struct Running {
    stop: watch::Sender<bool>,
    removed: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

fn target_key(t: &ScrapeTarget) -> String {
    let mut key = t.url.to_string();
    for (k, v) in &t.target.labels {
        key.push('\u{1}');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// Runs a job with file SD: static targets plus discovered ones, reconciled every refresh.
pub async fn manage(
    template: LoopTemplate,
    static_targets: Vec<ScrapeTarget>,
    mut shutdown: ShutdownRx,
) {
    let job = template.job.clone();
    let refresh = job
        .file_sd
        .iter()
        .map(|c| c.refresh_interval)
        .min()
        .unwrap_or(Duration::from_secs(300));
    let mut cache = FileCache::default();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let mut desired: HashMap<String, ScrapeTarget> = static_targets
            .iter()
            .map(|t| (target_key(t), t.clone()))
            .collect();
        for (group, file) in cache.refresh(&job.file_sd, &job.name) {
            let meta = [("__meta_filepath".to_string(), file)];
            for address in &group.targets {
                match scrape::target(&job, address, &group.labels, &meta) {
                    Ok(Some(t)) => {
                        desired.insert(target_key(&t), t);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(job = %job.name, error = %e, "Skipping a discovered target.")
                    }
                }
            }
        }
        running.retain(|key, r| {
            let keep = desired.contains_key(key);
            if !keep {
                r.removed.store(true, Ordering::Release);
                let _ = r.stop.send(true);
            }
            keep
        });
        let before = running.len();
        for (key, target) in desired {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                let (stop, rx) = watch::channel(false);
                let removed = Arc::new(AtomicBool::new(false));
                let handle = template.spawn(target, rx, removed.clone());
                slot.insert(Running {
                    stop,
                    removed,
                    handle,
                });
            }
        }
        if running.len() != before {
            tracing::info!(receiver = %template.receiver, job = %job.name, targets = running.len(), "Targets updated.");
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    for (_, r) in running {
        let _ = r.stop.send(true);
        let _ = r.handle.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_a_file_name() {
        assert!(glob_match("*.json", "targets.json"));
        assert!(glob_match("tg_?.yml", "tg_1.yml"));
        assert!(!glob_match("tg_?.yml", "tg_10.yml"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("*.json", "targets.yaml"));
    }

    #[test]
    fn reads_json_and_yaml_groups_and_keeps_the_last_good_content() {
        let dir = std::env::temp_dir().join(format!("sluice-filesd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.json"),
            r#"[{"targets": ["10.0.0.1:9100", "10.0.0.2:9100"], "labels": {"env": "prod"}}]"#,
        )
        .unwrap();
        std::fs::write(dir.join("b.yml"), "- targets: ['10.0.0.3:9100']\n").unwrap();
        let configs = vec![FileSdConfig {
            files: vec![
                format!("{}/*.json", dir.display()),
                format!("{}/b.yml", dir.display()),
            ],
            refresh_interval: Duration::from_secs(1),
        }];
        let mut cache = FileCache::default();
        let groups = cache.refresh(&configs, "j");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0.targets.len(), 2);
        assert_eq!(groups[0].0.labels["env"], "prod");
        assert!(groups[0].1.ends_with("a.json"));
        // A broken file keeps what it had; a removed one is forgotten.
        std::fs::write(dir.join("a.json"), "[{not json").unwrap();
        std::fs::remove_file(dir.join("b.yml")).unwrap();
        let groups = cache.refresh(&configs, "j");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0.targets.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
