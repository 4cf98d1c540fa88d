//! File patterns as the collector writes them (`*`, `?`, `[a-z]`, `[!x]`, `{a,b}` within a
//! path segment, `**` for any number of directories), matched segment by segment, and the
//! directory walk that finds the files a pattern names without listing unrelated trees.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// Directories deeper than this below a `**` are not searched (symlink loops, runaway trees).
const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug)]
enum Segment {
    /// `**`: zero or more directories.
    AnyDirs,
    /// Matched with wildcards (or compared literally when it has none).
    Name(String),
}

#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    absolute: bool,
    segments: Vec<Segment>,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("a file pattern must not be empty".into());
        }
        let mut segments = Vec::new();
        for part in text.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == "**" {
                segments.push(Segment::AnyDirs);
            } else {
                if part.contains("**") {
                    return Err(format!(
                        "pattern `{text}`: `**` must be a whole path segment"
                    ));
                }
                check_brackets(part).map_err(|e| format!("pattern `{text}`: {e}"))?;
                segments.push(Segment::Name(part.to_string()));
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            absolute: text.starts_with('/'),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (as found by the walk, or any path of the same shape) matches.
    pub fn matches(&self, path: &Path) -> bool {
        let Some(text) = path.to_str() else {
            return false;
        };
        let parts: Vec<&str> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        match_segments(&self.segments, &parts)
    }

    /// The deepest directory named literally by the pattern, and whether files can lie below
    /// its direct children (then it must be watched recursively): what a filesystem watch
    /// needs to see every change the pattern can match.
    pub fn watch_root(&self) -> (PathBuf, bool) {
        let mut root = if self.absolute {
            PathBuf::from("/")
        } else {
            PathBuf::from(".")
        };
        // The last segment names files; only the directories before it can be literal.
        let dirs = self.segments.len().saturating_sub(1);
        let mut literal = 0;
        for segment in &self.segments[..dirs] {
            match segment {
                Segment::Name(name) if !has_wildcard(name) => root.push(name),
                _ => break,
            }
            literal += 1;
        }
        (root, self.segments.len() - literal > 1)
    }

    /// Every regular file the pattern names right now, with its metadata (one `stat` per
    /// file; directories found by a wildcard are told apart by the directory entry's type).
    pub fn expand(&self, out: &mut Vec<(PathBuf, Metadata)>) {
        let root = if self.absolute {
            PathBuf::from("/")
        } else {
            PathBuf::from(".")
        };
        walk(&root, &self.segments, 0, out);
    }
}

fn walk(dir: &Path, segments: &[Segment], depth: usize, out: &mut Vec<(PathBuf, Metadata)>) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    match first {
        Segment::AnyDirs => {
            // Zero directories, then one more level (which keeps `**` in front).
            walk(dir, rest, depth, out);
            if depth >= MAX_DEPTH {
                return;
            }
            for entry in read_dir(dir) {
                if entry.1 {
                    walk(&entry.0, segments, depth + 1, out);
                }
            }
        }
        Segment::Name(name) if !has_wildcard(name) => {
            let path = dir.join(name);
            visit(&path, None, rest, depth, out);
        }
        Segment::Name(name) => {
            for (path, is_dir) in read_dir(dir) {
                let matched = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| match_name(name.as_bytes(), n.as_bytes()));
                if matched {
                    visit(&path, Some(is_dir), rest, depth, out);
                }
            }
        }
    }
}

/// `is_dir` is what the directory entry said, when the path came from one.
fn visit(
    path: &Path,
    is_dir: Option<bool>,
    rest: &[Segment],
    depth: usize,
    out: &mut Vec<(PathBuf, Metadata)>,
) {
    if rest.is_empty() {
        if is_dir != Some(true)
            && let Ok(meta) = std::fs::metadata(path)
            && meta.is_file()
        {
            out.push((path.to_path_buf(), meta));
        }
    } else if is_dir.unwrap_or_else(|| std::fs::metadata(path).is_ok_and(|m| m.is_dir())) {
        walk(path, rest, depth + 1, out);
    }
}

/// Entries of a directory with whether each is a directory (following symlinks).
fn read_dir(dir: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, bool)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            let is_dir = match e.file_type() {
                Ok(t) if t.is_symlink() => std::fs::metadata(&path).is_ok_and(|m| m.is_dir()),
                Ok(t) => t.is_dir(),
                Err(_) => false,
            };
            (path, is_dir)
        })
        .collect();
    found.sort();
    found
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn check_brackets(part: &str) -> Result<(), String> {
    let mut depth_sq = false;
    let mut braces = 0i32;
    for c in part.chars() {
        match c {
            '[' if !depth_sq => depth_sq = true,
            ']' if depth_sq => depth_sq = false,
            '{' if !depth_sq => braces += 1,
            '}' if !depth_sq => braces -= 1,
            _ => {}
        }
        if braces < 0 {
            return Err("unbalanced `}`".into());
        }
    }
    if depth_sq {
        return Err("unclosed `[`".into());
    }
    if braces != 0 {
        return Err("unclosed `{`".into());
    }
    Ok(())
}

fn match_segments(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::AnyDirs, rest)) => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((Segment::Name(name), rest)) => match parts.split_first() {
            Some((first, others)) => {
                match_name(name.as_bytes(), first.as_bytes()) && match_segments(rest, others)
            }
            None => false,
        },
    }
}

/// Wildcard match of one path segment (no `/` inside either).
pub fn match_name(pattern: &[u8], name: &[u8]) -> bool {
    if let Some(open) = pattern.iter().position(|&c| c == b'{') {
        let Some(close_rel) = pattern[open..].iter().position(|&c| c == b'}') else {
            return false;
        };
        let close = open + close_rel;
        let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
        return pattern[open + 1..close].split(|&c| c == b',').any(|alt| {
            let mut p = head.to_vec();
            p.extend_from_slice(alt);
            p.extend_from_slice(tail);
            match_name(&p, name)
        });
    }
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, len)) = match_class(&pattern[p..], name[n])
                        && matched
                    {
                        p += len;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `[...]` at the start of `pattern`: whether `c` is in the class, and the class's length.
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let ch = pattern[i];
        if ch == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            if pattern[i] <= c && c <= pattern[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_root_is_the_literal_directory_prefix() {
        let root = |p: &str| Pattern::new(p).unwrap().watch_root();
        assert_eq!(
            root("/var/log/pods/*/*/*.log"),
            (PathBuf::from("/var/log/pods"), true)
        );
        assert_eq!(root("/var/log/*.log"), (PathBuf::from("/var/log"), false));
        assert_eq!(root("/var/log/a.log"), (PathBuf::from("/var/log"), false));
        assert_eq!(root("/var/**/x.log"), (PathBuf::from("/var"), true));
        assert_eq!(root("logs/*/x.log"), (PathBuf::from("./logs"), true));
    }

    fn m(p: &str, path: &str) -> bool {
        Pattern::new(p).unwrap().matches(Path::new(path))
    }

    #[test]
    fn segments_and_wildcards() {
        assert!(m("/var/log/pods/*/*/*.log", "/var/log/pods/ns_p_u/c/0.log"));
        assert!(!m(
            "/var/log/pods/*/*/*.log",
            "/var/log/pods/ns_p_u/c/0.log.20240101-000000"
        ));
        assert!(!m(
            "/var/log/pods/*/*/*.log",
            "/var/log/pods/ns_p_u/c/0.log.gz"
        ));
        assert!(!m(
            "/var/log/pods/*/*/*.log",
            "/var/log/pods/ns_p_u/c/d/0.log"
        ));
        assert!(m("/var/log/**/*.log", "/var/log/a.log"));
        assert!(m("/var/log/**/*.log", "/var/log/a/b/c.log"));
        assert!(m(
            "/var/log/pods/default_sluice*_*/sluice/*.log",
            "/var/log/pods/default_sluice-abc_u1/sluice/3.log"
        ));
        assert!(!m(
            "/var/log/pods/default_sluice*_*/sluice/*.log",
            "/var/log/pods/default_app_u1/sluice/3.log"
        ));
        assert!(m("/x/[0-9].log", "/x/7.log"));
        assert!(!m("/x/[!0-9].log", "/x/7.log"));
        assert!(m("/x/{a,b}.log", "/x/b.log"));
        assert!(m("/x/?.log", "/x/b.log"));
        assert!(!m("/x/?.log", "/x/bb.log"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(Pattern::new("/x/[a.log").is_err());
        assert!(Pattern::new("/x/a**.log").is_err());
        assert!(Pattern::new("").is_err());
    }

    #[test]
    fn expands_only_matching_files() {
        let dir = std::env::temp_dir().join(format!("sluice-glob-{}", std::process::id()));
        let c = dir.join("ns_pod_uid/app");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), b"x").unwrap();
        std::fs::write(c.join("0.log.gz"), b"x").unwrap();
        let p = Pattern::new(&format!("{}/*/*/*.log", dir.display())).unwrap();
        let mut out = Vec::new();
        p.expand(&mut out);
        let paths: Vec<_> = out.into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec![c.join("0.log")]);
        let p = Pattern::new(&format!("{}/**/*.log", dir.display())).unwrap();
        let mut out = Vec::new();
        p.expand(&mut out);
        let paths: Vec<_> = out.into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec![c.join("0.log")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
