//! Turning parsed lines into OTLP: one `ResourceLogs` per file, with the Kubernetes metadata
//! of its path (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`) as
//! resource attributes and the collector's log attribute names.

use std::path::Path;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
#[cfg(test)]
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use prost::Message;

use crate::otlp::wire::{len_field_len, write_len_field, write_len_header};

use super::fastjson::JsonPlan;
use super::operators::{OpStats, Operators};
use super::parser::{Entry, Extra, Stream};

/// What the path of a kubelet-managed log file says about its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPath {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
    pub restart_count: String,
}

impl PodPath {
    /// Matches the collector's pattern: `…/<ns>_<pod>_<uid>/<container>/<n>.log`, where
    /// namespace and pod have no `_`, the uid is lowercase hex and `-`, and the container
    /// name has no `.` or `_`.
    pub fn parse(path: &str) -> Option<PodPath> {
        let mut parts = path.rsplit('/');
        let file = parts.next()?;
        let container = parts.next()?;
        let pod_dir = parts.next()?;
        parts.next()?; // there must be a `/` before the pod directory
        let restart = file.strip_suffix(".log")?;
        if restart.is_empty() || !restart.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if container.is_empty() || container.contains(['.', '_']) {
            return None;
        }
        let mut fields = pod_dir.split('_');
        let (ns, pod, uid) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() || ns.is_empty() || pod.is_empty() || uid.is_empty() {
            return None;
        }
        if !uid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        {
            return None;
        }
        Some(PodPath {
            namespace: ns.to_string(),
            pod_name: pod.to_string(),
            pod_uid: uid.to_string(),
            container_name: container.to_string(),
            restart_count: restart.to_string(),
        })
    }
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn str_kv(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_string()))
}

/// The resource attributes of one file.
pub fn resource_attributes(path: &Path, from_path: bool, node_name: Option<&str>) -> Vec<KeyValue> {
    let mut attrs = Vec::new();
    if from_path && let Some(p) = path.to_str().and_then(PodPath::parse) {
        attrs.push(str_kv("k8s.pod.name", &p.pod_name));
        attrs.push(str_kv("k8s.pod.uid", &p.pod_uid));
        attrs.push(str_kv("k8s.container.name", &p.container_name));
        attrs.push(str_kv("k8s.container.restart_count", &p.restart_count));
        attrs.push(str_kv("k8s.namespace.name", &p.namespace));
    }
    if let Some(node) = node_name {
        attrs.push(str_kv("k8s.node.name", node));
    }
    attrs
}

/// Log attributes every record of a file carries (`log.file.name`, `log.file.path`, …).
pub fn file_attributes(
    path: &Path,
    include_name: bool,
    include_path: bool,
    include_path_resolved: bool,
    include_name_resolved: bool,
) -> Vec<KeyValue> {
    let mut attrs = Vec::new();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if include_name {
        attrs.push(str_kv("log.file.name", &name));
    }
    if include_path {
        attrs.push(str_kv("log.file.path", &path.to_string_lossy()));
    }
    if include_path_resolved || include_name_resolved {
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if include_name_resolved {
            let n = resolved
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            attrs.push(str_kv("log.file.name_resolved", &n));
        }
        if include_path_resolved {
            attrs.push(str_kv(
                "log.file.path_resolved",
                &resolved.to_string_lossy(),
            ));
        }
    }
    attrs
}

/// Attributes every record of a file carries, as values and as encoded `LogRecord.attributes`
/// fields, so a record copies them in one go.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    pub list: Vec<KeyValue>,
    wire: Vec<u8>,
}

impl Attrs {
    pub fn new(list: Vec<KeyValue>) -> Attrs {
        let mut wire = Vec::new();
        for kv in &list {
            prost::encoding::message::encode(LR_ATTRIBUTES, kv, &mut wire);
        }
        Attrs { list, wire }
    }
}

// Field numbers of the OTLP messages written here.
const REQ_RESOURCE_LOGS: u32 = 1;
const RL_RESOURCE: u32 = 1;
const RL_SCOPE_LOGS: u32 = 2;
const SL_LOG_RECORDS: u32 = 2;
const LR_TIME: u8 = (1 << 3) | 1; // fixed64
const LR_BODY: u32 = 5;
const LR_ATTRIBUTES: u32 = 6;
const LR_OBSERVED_TIME: u8 = (11 << 3) | 1; // fixed64
const AV_STRING: u32 = 1;

/// The records of one file read in one pass. Without operators after `container` they are
/// encoded as they come as `ScopeLogs.log_records` fields (what prost would write for the
/// records `entry_record` and `raw_record` build, field for field), without building message
/// values: this is the tailer's hot path. With operators they are kept as values for them.
#[derive(Debug, Default)]
pub struct Records {
    wire: Vec<u8>,
    count: usize,
    scratch: Vec<u8>,
    values: Option<Vec<LogRecord>>,
    /// With a JSON plan: records are encoded by it where they can be; the others wait here,
    /// with the position in `wire` they belong at, for the operators (`settle`).
    plan: Option<Arc<JsonPlan>>,
    deferred: Vec<(usize, LogRecord)>,
    members: Vec<u8>,
}

impl Records {
    pub fn new(as_values: bool) -> Records {
        Records {
            values: as_values.then(Vec::new),
            ..Default::default()
        }
    }

    /// Records for what `ops` will do with them: encoded as they come without operators or
    /// with a JSON plan, values otherwise.
    pub fn for_operators(ops: &Operators) -> Records {
        match ops.json_plan() {
            Some(plan) => Records {
                plan: Some(Arc::clone(plan)),
                ..Default::default()
            },
            None => Records::new(!ops.is_empty()),
        }
    }

    /// Runs the operators on the records the plan left to them, and encodes those they keep
    /// where they belong.
    pub fn settle(&mut self, ops: &Operators, observed_ns: u64, stats: &mut OpStats) {
        if self.deferred.is_empty() {
            return;
        }
        let mut wire = Vec::with_capacity(self.wire.len() + 256 * self.deferred.len());
        let mut copied = 0;
        for (at, mut rec) in self.deferred.drain(..) {
            wire.extend_from_slice(&self.wire[copied..at]);
            copied = at;
            if ops.apply(&mut rec, &mut Vec::new(), observed_ns, stats) {
                prost::encoding::message::encode(SL_LOG_RECORDS, &rec, &mut wire);
                self.count += 1;
            }
        }
        wire.extend_from_slice(&self.wire[copied..]);
        self.wire = wire;
    }

    /// The records as values, if they were kept so.
    pub fn take_values(&mut self) -> Option<Vec<LogRecord>> {
        self.values.take()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.deferred.is_empty()
    }

    /// Records waiting for the operators (`settle`).
    #[cfg(test)]
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// A parsed (possibly joined) entry: `entry_record`, encoded.
    pub fn entry(&mut self, mut entry: Entry, file_attrs: &Attrs, observed_ns: u64) {
        if let Some(values) = &mut self.values {
            values.push(entry_record(entry, &file_attrs.list, observed_ns));
            self.count += 1;
            return;
        }
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.extend_from_slice(&file_attrs.wire);
        let stream = match entry.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        put_str_attr("log.iostream", stream, scratch);
        if let Some(tag) = &entry.logtag {
            put_str_attr("logtag", tag, scratch);
        }
        // The plan may hand the entry, extras included, to the general path.
        let extra = if self.plan.is_some() {
            entry.extra.clone()
        } else {
            std::mem::take(&mut entry.extra)
        };
        for (key, value) in extra {
            let kv = kv(&key, extra_value(value));
            prost::encoding::message::encode(LR_ATTRIBUTES, &kv, scratch);
        }
        if let Some(plan) = &self.plan {
            let taken = |k: &str| {
                k == "log.iostream"
                    || (k == "logtag" && entry.logtag.is_some())
                    || file_attrs.list.iter().any(|a| a.key == k)
                    || entry.extra.iter().any(|(e, _)| e == k)
            };
            let encoded = plan.encode(
                &entry,
                &self.scratch,
                &taken,
                observed_ns,
                &mut self.members,
                &mut self.wire,
            );
            if encoded {
                self.count += 1;
            } else {
                let rec = entry_record(entry, &file_attrs.list, observed_ns);
                self.deferred.push((self.wire.len(), rec));
            }
            return;
        }
        self.push(entry.time_ns, &entry.message, observed_ns);
    }

    /// A line that is not a container log line: `raw_record`, encoded.
    pub fn raw(&mut self, text: &str, file_attrs: &Attrs, observed_ns: u64) {
        if self.plan.is_some() {
            let rec = raw_record(text.to_string(), &file_attrs.list, observed_ns);
            self.deferred.push((self.wire.len(), rec));
            return;
        }
        if let Some(values) = &mut self.values {
            values.push(raw_record(text.to_string(), &file_attrs.list, observed_ns));
            self.count += 1;
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&file_attrs.wire);
        self.push(0, text, observed_ns);
    }

    /// Writes one record: times, the body, then the attributes waiting in `scratch`.
    fn push(&mut self, time_ns: u64, body: &str, observed_ns: u64) {
        let any_value = len_field_len(AV_STRING, body.len());
        let mut len = len_field_len(LR_BODY, any_value) + self.scratch.len();
        if time_ns != 0 {
            len += 9;
        }
        if observed_ns != 0 {
            len += 9;
        }
        let w = &mut self.wire;
        write_len_header(SL_LOG_RECORDS, len, w);
        if time_ns != 0 {
            w.push(LR_TIME);
            w.extend_from_slice(&time_ns.to_le_bytes());
        }
        write_len_header(LR_BODY, any_value, w);
        write_len_field(AV_STRING, body.as_bytes(), w);
        w.extend_from_slice(&self.scratch);
        if observed_ns != 0 {
            w.push(LR_OBSERVED_TIME);
            w.extend_from_slice(&observed_ns.to_le_bytes());
        }
        self.count += 1;
    }

    /// Appends a `ResourceLogs` holding these records under `resource` to an encoded
    /// `ExportLogsServiceRequest`.
    pub fn frame_into(&self, resource: &[KeyValue], request: &mut Vec<u8>) {
        let resource = Resource {
            attributes: resource.to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        let rl_len = len_field_len(RL_RESOURCE, resource.len())
            + len_field_len(RL_SCOPE_LOGS, self.wire.len());
        write_len_header(REQ_RESOURCE_LOGS, rl_len, request);
        write_len_field(RL_RESOURCE, &resource, request);
        write_len_field(RL_SCOPE_LOGS, &self.wire, request);
    }
}

/// Appends a `ResourceLogs` of record values to an encoded `ExportLogsServiceRequest`.
/// Each record is encoded once, on its own: prost encoding the whole `ResourceLogs` would
/// compute every nested length once per level above it.
pub fn encode_resource_logs(resource: &[KeyValue], records: &[LogRecord], request: &mut Vec<u8>) {
    let mut encoded = Records::default();
    for r in records {
        prost::encoding::message::encode(SL_LOG_RECORDS, r, &mut encoded.wire);
    }
    encoded.count = records.len();
    encoded.frame_into(resource, request);
}

/// A `KeyValue` with a string value, as an attributes field.
fn put_str_attr(key: &str, value: &str, out: &mut Vec<u8>) {
    crate::otlp::wire::write_str_attr(LR_ATTRIBUTES, key, value, out);
}

fn extra_value(value: Extra) -> Value {
    match value {
        Extra::Str(s) | Extra::Json(s) => Value::StringValue(s),
        Extra::Int(i) => Value::IntValue(i),
        Extra::Double(d) => Value::DoubleValue(d),
        Extra::Bool(b) => Value::BoolValue(b),
    }
}

/// A record for a parsed (possibly joined) entry.
pub fn entry_record(entry: Entry, file_attrs: &[KeyValue], observed_ns: u64) -> LogRecord {
    let mut attributes = file_attrs.to_vec();
    attributes.push(str_kv("log.iostream", entry.stream.as_str()));
    if let Some(tag) = &entry.logtag {
        attributes.push(str_kv("logtag", tag));
    }
    for (key, value) in entry.extra {
        attributes.push(kv(&key, extra_value(value)));
    }
    LogRecord {
        time_unix_nano: entry.time_ns,
        observed_time_unix_nano: observed_ns,
        body: Some(AnyValue {
            value: Some(Value::StringValue(entry.message)),
        }),
        attributes,
        ..Default::default()
    }
}

/// A record for a line that is not a container log line: its text as the body.
pub fn raw_record(text: String, file_attrs: &[KeyValue], observed_ns: u64) -> LogRecord {
    LogRecord {
        observed_time_unix_nano: observed_ns,
        body: Some(AnyValue {
            value: Some(Value::StringValue(text)),
        }),
        attributes: file_attrs.to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
pub fn resource_logs(resource: &[KeyValue], records: Vec<LogRecord>) -> ResourceLogs {
    ResourceLogs {
        resource: Some(Resource {
            attributes: resource.to_vec(),
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

    /// The encoder writes exactly what prost writes for the records built as values.
    #[test]
    fn encoded_records_are_what_prost_writes() {
        let attrs = vec![
            str_kv("log.file.path", "/var/log/pods/ns_pod_0a/app/0.log"),
            kv("n", Value::IntValue(-3)),
        ];
        let file_attrs = Attrs::new(attrs.clone());
        let resource = vec![str_kv("k8s.pod.name", "pod")];
        let entries = || {
            vec![
                Entry {
                    stream: Stream::Stdout,
                    time_ns: 1_700_000_000_123_456_789,
                    message: "hello".into(),
                    logtag: Some("F".into()),
                    extra: Vec::new(),
                },
                Entry {
                    stream: Stream::Stderr,
                    time_ns: 0,
                    message: "x".repeat(300),
                    logtag: None,
                    extra: vec![
                        ("s".into(), Extra::Str("v".into())),
                        ("".into(), Extra::Int(7)),
                        ("d".into(), Extra::Double(0.5)),
                        ("b".into(), Extra::Bool(false)),
                        ("j".into(), Extra::Json("{}".into())),
                    ],
                },
                Entry {
                    stream: Stream::Stdout,
                    time_ns: 5,
                    message: String::new(),
                    logtag: Some("P".into()),
                    extra: Vec::new(),
                },
            ]
        };
        for observed in [0, 42] {
            let mut records = Records::default();
            let mut values = Vec::new();
            for e in entries() {
                values.push(entry_record(e.clone(), &attrs, observed));
                records.entry(e, &file_attrs, observed);
            }
            values.push(raw_record("not cri".into(), &attrs, observed));
            records.raw("not cri", &file_attrs, observed);
            assert_eq!(records.len(), 4);
            let mut ours = Vec::new();
            records.frame_into(&resource, &mut ours);
            records.frame_into(&[], &mut ours);
            let mut from_values = Vec::new();
            encode_resource_logs(&resource, &values, &mut from_values);
            encode_resource_logs(&[], &values, &mut from_values);
            assert_eq!(ours, from_values);
            let theirs = ExportLogsServiceRequest {
                resource_logs: vec![
                    resource_logs(&resource, values.clone()),
                    resource_logs(&[], values),
                ],
            }
            .encode_to_vec();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn pod_path_as_the_collector_reads_it() {
        let p = PodPath::parse(
            "/var/log/pods/some-ns_kube-controller-kind-control-plane_49cc7c1fd3702c40b2686ea7486091d6/kube-controller/1.log",
        )
        .unwrap();
        assert_eq!(p.namespace, "some-ns");
        assert_eq!(p.pod_name, "kube-controller-kind-control-plane");
        assert_eq!(p.pod_uid, "49cc7c1fd3702c40b2686ea7486091d6");
        assert_eq!(p.container_name, "kube-controller");
        assert_eq!(p.restart_count, "1");
        let uid = "/var/log/pods/default_web-0_5f0c3b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b/nginx/12.log";
        assert_eq!(
            PodPath::parse(uid).unwrap().pod_uid,
            "5f0c3b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
        );
        for bad in [
            "/var/log/pods/ns_pod_UID/c/0.log",
            "/var/log/pods/ns_pod/c/0.log",
            "/var/log/pods/ns_p_o_d/c/0.log",
            "/var/log/pods/ns_pod_abc/c.x/0.log",
            "/var/log/pods/ns_pod_abc/c/0.log.1",
            "/var/log/pods/ns_pod_abc/c/x.log",
            "ns_pod_abc/c/0.log",
        ] {
            assert_eq!(PodPath::parse(bad), None, "{bad}");
        }
    }
}
