//! Configuration errors that point at the file, line, column and key path
//! where the problem is, plus the "did you mean" helper used in their messages.

use std::fmt;
use std::sync::Arc;

/// A position in a configuration file (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// An error in a configuration, rendered as `file:line:column: path: message`.
///
/// It doubles as the `serde::de::Error` of the node deserializer, so errors
/// raised by any `Deserialize` impl arrive here; `loc == None` then means "not
/// yet attributed to a node", and the first node that sees it fills in both
/// `loc` and `path`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub loc: Option<Loc>,
    /// Dotted key path such as `receivers.otlp.protocols.grpc.endpoint`;
    /// empty for the document root or when not applicable.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{loc}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    /// An error at a known place in a file.
    pub fn at(loc: &Loc, path: impl Into<String>, msg: impl Into<String>) -> Self {
        ConfigError {
            loc: Some(loc.clone()),
            path: path.into(),
            message: msg.into(),
        }
    }

    /// An error that belongs to no particular place (e.g. a file that can't be read).
    pub fn general(msg: impl Into<String>) -> Self {
        ConfigError {
            loc: None,
            path: String::new(),
            message: msg.into(),
        }
    }

    /// Attributes the error to a node unless an inner node already claimed it.
    pub(crate) fn located(mut self, loc: &Loc, path: &str) -> Self {
        if self.loc.is_none() {
            self.loc = Some(loc.clone());
            self.path = path.to_owned();
        }
        self
    }

    fn unattributed(message: String) -> Self {
        ConfigError {
            loc: None,
            path: String::new(),
            message,
        }
    }
}

impl serde::de::Error for ConfigError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::unattributed(msg.to_string())
    }

    fn invalid_type(unexp: serde::de::Unexpected<'_>, exp: &dyn serde::de::Expected) -> Self {
        Self::unattributed(format!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_value(unexp: serde::de::Unexpected<'_>, exp: &dyn serde::de::Expected) -> Self {
        Self::unattributed(format!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_length(len: usize, exp: &dyn serde::de::Expected) -> Self {
        Self::unattributed(format!("expected {exp}, found {len} element(s)"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::unattributed(unknown_message("value", "values", variant, expected))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::unattributed(unknown_message("key", "keys", field, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::unattributed(format!("missing required key `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::unattributed(format!("duplicate key `{field}`"))
    }
}

/// Describes an unexpected value in YAML terms ("null", "mapping") rather
/// than serde's Rust terms ("unit value", "map"); numbers and booleans are
/// shown bare so messages read "found integer 5".
fn describe(unexp: &serde::de::Unexpected<'_>) -> String {
    use serde::de::Unexpected as U;
    match unexp {
        U::Bool(b) => format!("boolean {b}"),
        U::Unsigned(n) => format!("integer {n}"),
        U::Signed(n) => format!("integer {n}"),
        U::Float(x) => format!("float {x:?}"),
        U::Char(c) => format!("character `{c}`"),
        U::Str(s) => format!("string `{s}`"),
        U::Unit | U::Option => "null".to_owned(),
        U::Seq => "a sequence".to_owned(),
        U::Map => "a mapping".to_owned(),
        other => other.to_string(),
    }
}

fn unknown_message(what: &str, plural: &str, got: &str, expected: &[&str]) -> String {
    if expected.is_empty() {
        return format!("unknown {what} `{got}` (no {plural} are allowed here)");
    }
    let hint = closest(got, expected)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default();
    format!(
        "unknown {what} `{got}`{hint} (valid {plural}: {})",
        expected.join(", ")
    )
}

/// The candidate most similar to `name`, if it is similar enough to be a
/// plausible typo: Damerau–Levenshtein (optimal string alignment) distance at
/// most `max(2, len/3)`, and not a complete rewrite of the shorter word.
pub fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let len = name.chars().count();
    let limit = (len / 3).max(2);
    let lower = name.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for &cand in candidates {
        let d = osa_distance(&lower, &cand.to_lowercase());
        // Replacing every character of a short word is not a typo.
        let rewrite = d >= len.min(cand.chars().count()).max(1) && d > 0;
        if d <= limit && !rewrite && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions,
/// since swapped letters are the most common typo in keys.
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Loc {
        Loc {
            file: Arc::from("c.yaml"),
            line: 3,
            column: 7,
        }
    }

    #[test]
    fn display_has_all_parts() {
        let e = ConfigError::at(&loc(), "a.b", "bad");
        assert_eq!(e.to_string(), "c.yaml:3:7: a.b: bad");
    }

    #[test]
    fn display_omits_missing_parts() {
        assert_eq!(
            ConfigError::at(&loc(), "", "bad").to_string(),
            "c.yaml:3:7: bad"
        );
        assert_eq!(ConfigError::general("bad").to_string(), "bad");
        let e = ConfigError {
            loc: None,
            path: "x".into(),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "x: bad");
    }

    #[test]
    fn located_keeps_innermost() {
        let inner = Loc { line: 9, ..loc() };
        let e = ConfigError::general("m")
            .located(&inner, "a.b")
            .located(&loc(), "a");
        assert_eq!(e.loc, Some(inner));
        assert_eq!(e.path, "a.b");
    }

    #[test]
    fn closest_finds_typos() {
        let keys = ["endpoint", "max_recv_msg_size_mib", "tls"];
        assert_eq!(closest("endpont", &keys), Some("endpoint"));
        assert_eq!(closest("enpdoint", &keys), Some("endpoint"));
        assert_eq!(closest("Endpoint", &keys), Some("endpoint"));
        assert_eq!(closest("tsl", &keys), Some("tls"));
        assert_eq!(
            closest("max_recv_msg_size", &keys),
            Some("max_recv_msg_size_mib")
        );
        assert_eq!(closest("compression", &keys), None);
        assert_eq!(closest("ab", &keys), None);
        assert_eq!(closest("x", &[]), None);
    }

    #[test]
    fn distance_counts_transpositions_once() {
        assert_eq!(osa_distance("ab", "ba"), 1);
        assert_eq!(osa_distance("kitten", "sitting"), 3);
        assert_eq!(osa_distance("", "abc"), 3);
    }
}
