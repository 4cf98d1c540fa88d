//! Turning parsed lines into OTLP: one `ResourceLogs` per file, with the Kubernetes metadata
//! of its path (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`) as
//! resource attributes and the collector's log attribute names.

use std::path::Path;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::parser::{Entry, Extra};

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

/// A record for a parsed (possibly joined) entry.
pub fn entry_record(entry: Entry, file_attrs: &[KeyValue], observed_ns: u64) -> LogRecord {
    let mut attributes = file_attrs.to_vec();
    attributes.push(str_kv("log.iostream", entry.stream.as_str()));
    if let Some(tag) = &entry.logtag {
        attributes.push(str_kv("logtag", tag));
    }
    for (key, value) in entry.extra {
        let v = match value {
            Extra::Str(s) | Extra::Json(s) => Value::StringValue(s),
            Extra::Int(i) => Value::IntValue(i),
            Extra::Double(d) => Value::DoubleValue(d),
            Extra::Bool(b) => Value::BoolValue(b),
        };
        attributes.push(kv(&key, v));
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
