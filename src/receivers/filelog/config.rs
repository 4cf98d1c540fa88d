//! The `filelog` receiver's settings: the collector's keys and defaults, with the
//! `container` operator (the record operators are read by `operators.rs`). Keys and operators sluice does not implement yet are named so a
//! config that uses them fails at start-up instead of running without them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::operators::OperatorConfig;
use crate::config::node::deserialize_duration;
use crate::receivers::otlp::config::NotYet;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilelogConfig {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub start_at: StartAt,
    pub include_file_path: bool,
    pub include_file_name: bool,
    pub include_file_path_resolved: bool,
    pub include_file_name_resolved: bool,
    #[serde(deserialize_with = "deserialize_duration")]
    pub poll_interval: Duration,
    pub max_log_size: ByteSize,
    pub max_concurrent_files: usize,
    pub fingerprint_size: ByteSize,
    pub encoding: String,
    pub storage: Option<String>,
    pub retry_on_failure: RetryOnFailure,
    /// Filled from `operators` by `operators::parse_operators` (each by its type).
    #[serde(skip)]
    pub operators: Vec<OperatorConfig>,
    #[serde(rename = "operators")]
    pub operators_node: Option<NotYet>,
    // The collector's keys that sluice does not implement yet.
    pub multiline: Option<NotYet>,
    pub header: Option<NotYet>,
    pub attributes: Option<NotYet>,
    pub resource: Option<NotYet>,
    pub ordering_criteria: Option<NotYet>,
    pub compression: Option<NotYet>,
    pub delete_after_read: Option<NotYet>,
    pub include_file_owner_name: Option<NotYet>,
    pub include_file_owner_group_name: Option<NotYet>,
    pub include_file_record_number: Option<NotYet>,
    pub include_file_record_offset: Option<NotYet>,
    pub exclude_older_than: Option<NotYet>,
    pub acquire_fs_lock: Option<NotYet>,
    pub preserve_leading_whitespaces: Option<NotYet>,
    pub preserve_trailing_whitespaces: Option<NotYet>,
    pub polls_to_archive: Option<NotYet>,
    pub max_batches: Option<NotYet>,
    pub force_flush_period: Option<NotYet>,
}

impl Default for FilelogConfig {
    fn default() -> Self {
        FilelogConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            start_at: StartAt::End,
            include_file_path: false,
            include_file_name: true,
            include_file_path_resolved: false,
            include_file_name_resolved: false,
            poll_interval: Duration::from_millis(200),
            max_log_size: ByteSize(1024 * 1024),
            max_concurrent_files: 1024,
            fingerprint_size: ByteSize(1000),
            encoding: "utf-8".to_string(),
            storage: None,
            retry_on_failure: RetryOnFailure::default(),
            operators: Vec::new(),
            operators_node: None,
            multiline: None,
            header: None,
            attributes: None,
            resource: None,
            ordering_criteria: None,
            compression: None,
            delete_after_read: None,
            include_file_owner_name: None,
            include_file_owner_group_name: None,
            include_file_record_number: None,
            include_file_record_offset: None,
            exclude_older_than: None,
            acquire_fs_lock: None,
            preserve_leading_whitespaces: None,
            preserve_trailing_whitespaces: None,
            polls_to_archive: None,
            max_batches: None,
            force_flush_period: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

/// The collector's `consumerretry` settings: retry when the pipeline refuses data.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryOnFailure {
    pub enabled: bool,
    #[serde(deserialize_with = "deserialize_duration")]
    pub initial_interval: Duration,
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_interval: Duration,
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryOnFailure {
    fn default() -> Self {
        RetryOnFailure {
            enabled: false,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// The `container` operator (the other operators are in `operators.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerOperator {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    pub format: Option<ContainerFormat>,
    pub add_metadata_from_filepath: bool,
    /// 0: no limit of its own (the receiver's `max_log_size` still applies).
    pub max_log_size: ByteSize,
    pub output: Option<NotYet>,
    pub parse_from: Option<NotYet>,
    pub parse_to: Option<NotYet>,
    pub on_error: Option<NotYet>,
    #[serde(rename = "if")]
    pub if_expr: Option<NotYet>,
    pub severity: Option<NotYet>,
    pub timestamp: Option<NotYet>,
}

impl Default for ContainerOperator {
    fn default() -> Self {
        ContainerOperator {
            kind: "container".to_string(),
            id: None,
            format: None,
            add_metadata_from_filepath: true,
            max_log_size: ByteSize(0),
            output: None,
            parse_from: None,
            parse_to: None,
            on_error: None,
            if_expr: None,
            severity: None,
            timestamp: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerFormat {
    Docker,
    Crio,
    Containerd,
}

/// A size as the collector writes it: a number of bytes, or a number with a unit
/// (`1kb` = 1000, `1KiB` = 1024, `b`, `kb`, `kib`, `mb`, `mib`, `gb`, `gib`; case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<u64, String> {
        let t = text.trim().to_ascii_lowercase();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" => 1024,
            "mb" => 1000 * 1000,
            "mib" => 1024 * 1024,
            "gb" => 1000 * 1000 * 1000,
            "gib" => 1024 * 1024 * 1024,
            _ => {
                return Err(format!(
                    "expected a size like `1MiB` or `16kb`, found `{text}`"
                ));
            }
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("expected a size like `1MiB` or `16kb`, found `{text}`"))?;
        Ok((value * mult as f64) as u64)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size like `1MiB` or `16kb`, or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl FilelogConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.include.is_empty() {
            return Err("`include` must list at least one file pattern".into());
        }
        for pattern in self.include.iter().chain(&self.exclude) {
            super::glob::Pattern::new(pattern)?;
        }
        let not_yet = [
            ("multiline", self.multiline.is_some()),
            ("header", self.header.is_some()),
            ("attributes", self.attributes.is_some()),
            ("resource", self.resource.is_some()),
            ("ordering_criteria", self.ordering_criteria.is_some()),
            ("compression", self.compression.is_some()),
            ("delete_after_read", self.delete_after_read.is_some()),
            (
                "include_file_owner_name",
                self.include_file_owner_name.is_some(),
            ),
            (
                "include_file_owner_group_name",
                self.include_file_owner_group_name.is_some(),
            ),
            (
                "include_file_record_number",
                self.include_file_record_number.is_some(),
            ),
            (
                "include_file_record_offset",
                self.include_file_record_offset.is_some(),
            ),
            ("exclude_older_than", self.exclude_older_than.is_some()),
            ("acquire_fs_lock", self.acquire_fs_lock.is_some()),
            (
                "preserve_leading_whitespaces",
                self.preserve_leading_whitespaces.is_some(),
            ),
            (
                "preserve_trailing_whitespaces",
                self.preserve_trailing_whitespaces.is_some(),
            ),
            ("polls_to_archive", self.polls_to_archive.is_some()),
            ("max_batches", self.max_batches.is_some()),
            ("force_flush_period", self.force_flush_period.is_some()),
        ];
        if let Some((key, _)) = not_yet.iter().find(|(_, set)| *set) {
            return Err(format!("`{key}` is not supported yet"));
        }
        let enc = self.encoding.to_ascii_lowercase();
        if !["utf-8", "utf8", ""].contains(&enc.as_str()) {
            return Err(format!(
                "encoding `{}` is not supported yet (only utf-8)",
                self.encoding
            ));
        }
        if self.poll_interval.is_zero() {
            return Err("`poll_interval` must be greater than zero".into());
        }
        if self.max_log_size.0 == 0 {
            return Err("`max_log_size` must be greater than zero".into());
        }
        if self.fingerprint_size.0 < 16 {
            return Err("`fingerprint_size` must be at least 16 bytes".into());
        }
        if self.max_concurrent_files < 1 {
            return Err("`max_concurrent_files` must be at least 1".into());
        }
        for (i, op) in self.operators.iter().enumerate() {
            let OperatorConfig::Container(op) = op else {
                continue;
            };
            // `output` naming the next operator is checked where operators are read.
            let unsupported = [
                ("parse_from", op.parse_from.is_some()),
                ("parse_to", op.parse_to.is_some()),
                ("on_error", op.on_error.is_some()),
                ("if", op.if_expr.is_some()),
                ("severity", op.severity.is_some()),
                ("timestamp", op.timestamp.is_some()),
            ];
            if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
                return Err(format!("operators[{i}].{key} is not supported yet"));
            }
        }
        Ok(())
    }

    pub fn container(&self) -> Option<&ContainerOperator> {
        match self.operators.first() {
            Some(OperatorConfig::Container(op)) => Some(op),
            _ => None,
        }
    }
}
