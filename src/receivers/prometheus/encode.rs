//! Writes one scrape's `ExportMetricsServiceRequest` straight in protobuf wire format: points
//! are encoded as they are made, into one buffer per metric, and framed once at the end. No
//! message values are built, so a scrape of 50,000 series costs no per-label allocation and
//! no repeated length computation over nested messages.
//!
//! Attributes travel as encoded `KeyValue` fields tagged for field 7 (the attributes of
//! number and summary points); histogram points (field 9) re-tag them as they copy.

use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::convert::{Kind, ResKey, ResRef};
use super::parser::Family;
use crate::hash::{FxHashMap, SeriesHasher};
use crate::otlp::metrics_wire::{
    ATTRIBUTES, HistogramValues, Num, append_resource_metrics, fixed64_if, frame_resource_metrics,
    resource_headroom, varint_if, write_fixed64_if, write_histogram_point, write_number_point,
    write_varint_if,
};
use crate::otlp::string_kv;
use crate::otlp::wire::{
    len_field_len, varint_field_len, write_len_field, write_len_header, write_str_attr,
    write_varint_field,
};

pub const NO_RECORDED_VALUE: u32 = 1;
/// Prometheus' staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
const SCOPE_NAME: &str =
    "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver";

const CUMULATIVE: u64 = 2;

/// Appends a string attribute to an attribute list being encoded.
pub fn push_attr(key: &str, value: &str, attrs: &mut Vec<u8>) {
    write_str_attr(ATTRIBUTES, key, value, attrs);
}

struct MetricBuild {
    name: String,
    description: String,
    unit: String,
    kind: Kind,
    /// Identity of (resource, name, kind) for series keys.
    key: u64,
    /// Where its points were sealed into the resource's buffer: (offset, length).
    sealed: Option<(usize, usize)>,
    /// Encoded data points not sealed yet, each a complete `data_points` field.
    points: Vec<u8>,
}

struct ResourceBuild {
    key: ResKey,
    /// The encoded `Resource`.
    resource: Vec<u8>,
    metrics: Vec<MetricBuild>,
    index: FxHashMap<(String, Kind), usize>,
    /// Headroom for the `ResourceMetrics` and `ScopeMetrics` headers, then complete
    /// `ScopeMetrics.metrics` fields, in the order they were sealed.
    out: Vec<u8>,
    /// Bytes reserved at the start of `out`.
    headroom: usize,
    /// A metric got points after it was sealed: the request is rebuilt at the end.
    reopened: bool,
}

/// Where a metric sits in the request being built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetricSlot {
    r: usize,
    m: usize,
}

/// Builds one scrape's request. A metric's points are gathered in a buffer of their own
/// while the scrape is on that metric; when it moves to another, they are sealed as a
/// complete `Metric` into the request, after room left for the headers, so the request is
/// written once and the points are never held twice. A metric that gets points after it was
/// sealed (a stale marker; a family met again) has its resource's request rebuilt at the end.
pub struct Builder {
    scheme: String,
    scope: Vec<u8>,
    resources: Vec<ResourceBuild>,
    points: usize,
    /// The metric last looked up.
    last: Option<MetricSlot>,
    /// The metric points are being written to.
    open: Option<MetricSlot>,
    /// A points buffer to reuse.
    spare: Vec<u8>,
}

impl Builder {
    pub fn new(scheme: &str) -> Builder {
        Builder {
            scheme: scheme.to_string(),
            scope: InstrumentationScope {
                name: SCOPE_NAME.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            }
            .encode_to_vec(),
            resources: Vec::new(),
            points: 0,
            last: None,
            open: None,
            spare: Vec::new(),
        }
    }

    pub fn metric(
        &mut self,
        res: ResRef<'_>,
        name: &str,
        kind: Kind,
        family: Option<&Family<'_>>,
    ) -> MetricSlot {
        // Samples of a family are contiguous: most lookups hit the previous metric.
        if let Some(slot) = self.last {
            let rb = &self.resources[slot.r];
            let metric = &rb.metrics[slot.m];
            if metric.name == name && metric.kind == kind && rb.key.0 == res.0 && rb.key.1 == res.1
            {
                return slot;
            }
        }
        // Resources are few (one per target unless `honor_labels` keeps scraped job/instance).
        let r = match self
            .resources
            .iter()
            .position(|rb| rb.key.0 == res.0 && rb.key.1 == res.1)
        {
            Some(r) => r,
            None => {
                let resource = resource(res.0, res.1, &self.scheme).encode_to_vec();
                let headroom = resource_headroom(&resource, &self.scope);
                self.resources.push(ResourceBuild {
                    key: (res.0.to_string(), res.1.to_string()),
                    resource,
                    metrics: Vec::new(),
                    index: FxHashMap::default(),
                    out: vec![0; headroom],
                    headroom,
                    reopened: false,
                });
                self.resources.len() - 1
            }
        };
        let rb = &mut self.resources[r];
        if let Some(&m) = rb.index.get(&(name.to_string(), kind)) {
            let slot = MetricSlot { r, m };
            self.last = Some(slot);
            return slot;
        }
        let mut h = SeriesHasher::new();
        res.hash(&mut h);
        name.hash(&mut h);
        kind.hash(&mut h);
        rb.metrics.push(MetricBuild {
            name: name.to_string(),
            description: family
                .and_then(|f| f.help.as_deref())
                .unwrap_or("")
                .to_string(),
            unit: family.and_then(|f| f.unit).unwrap_or("").to_string(),
            kind,
            key: h.finish(),
            sealed: None,
            points: Vec::new(),
        });
        let m = rb.metrics.len() - 1;
        rb.index.insert((name.to_string(), kind), m);
        let slot = MetricSlot { r, m };
        self.last = Some(slot);
        slot
    }

    pub fn res(&self, slot: MetricSlot) -> ResRef<'_> {
        let key = &self.resources[slot.r].key;
        (&key.0, &key.1)
    }

    pub fn name(&self, slot: MetricSlot) -> &str {
        &self.resources[slot.r].metrics[slot.m].name
    }

    /// The identity of a series of this metric with these encoded attributes.
    pub fn series_key(&self, slot: MetricSlot, attrs: &[u8]) -> u64 {
        let mut h = SeriesHasher::new();
        self.resources[slot.r].metrics[slot.m].key.hash(&mut h);
        h.write(attrs);
        h.finish()
    }

    /// The buffer for a point of `slot`; the metric written before is sealed when it is a
    /// different one.
    fn points_of(&mut self, slot: MetricSlot) -> &mut Vec<u8> {
        self.points += 1;
        if self.open != Some(slot) {
            if let Some(open) = self.open {
                self.seal(open);
            }
            self.open = Some(slot);
            let rb = &mut self.resources[slot.r];
            let metric = &mut rb.metrics[slot.m];
            if metric.sealed.is_some() {
                rb.reopened = true;
            }
            if metric.points.capacity() == 0 {
                metric.points = std::mem::take(&mut self.spare);
            }
        }
        &mut self.resources[slot.r].metrics[slot.m].points
    }

    /// Writes a metric's points as a complete `Metric` into its resource's request, unless it
    /// was sealed before (then they stay for the rebuild at the end).
    fn seal(&mut self, slot: MetricSlot) {
        let rb = &mut self.resources[slot.r];
        let metric = &mut rb.metrics[slot.m];
        if metric.sealed.is_some() || metric.points.is_empty() {
            return;
        }
        let at = write_metric(metric, [&metric.points[..], &[]], &mut rb.out);
        metric.sealed = Some((at, metric.points.len()));
        metric.points.clear();
        if metric.points.capacity() > self.spare.capacity() {
            self.spare = std::mem::take(&mut metric.points);
        } else {
            metric.points = Vec::new();
        }
    }

    /// A gauge or sum point; a staleness marker is flagged as no recorded value.
    pub fn number(&mut self, slot: MetricSlot, attrs: &[u8], start: u64, time: u64, value: f64) {
        let flags = if value.to_bits() == STALE_NAN_BITS {
            NO_RECORDED_VALUE
        } else {
            0
        };
        self.number_flagged(slot, attrs, start, time, value, flags);
    }

    pub fn number_flagged(
        &mut self,
        slot: MetricSlot,
        attrs: &[u8],
        start: u64,
        time: u64,
        value: f64,
        flags: u32,
    ) {
        let out = self.points_of(slot);
        write_number_point(attrs, start, time, Num::Double(value), flags, out);
    }

    pub fn histogram(
        &mut self,
        slot: MetricSlot,
        attrs: &[u8],
        start: u64,
        time: u64,
        values: &HistogramValues<'_>,
        flags: u32,
    ) {
        let out = self.points_of(slot);
        write_histogram_point(attrs, start, time, values, flags, out);
    }

    /// A summary point; `quantiles` are `(quantile, value)`.
    #[allow(clippy::too_many_arguments)]
    pub fn summary(
        &mut self,
        slot: MetricSlot,
        attrs: &[u8],
        start: u64,
        time: u64,
        count: u64,
        sum: f64,
        quantiles: &[(f64, f64)],
        flags: u32,
    ) {
        // SummaryDataPoint: start 2, time 3, count 4, sum 5, quantile_values 6,
        // attributes 7, flags 8. ValueAtQuantile: quantile 1, value 2.
        let bits = |x: f64| if x == 0.0 { 0 } else { x.to_bits() };
        let quantile_len = |q: f64, v: f64| fixed64_if(1, bits(q)) + fixed64_if(2, bits(v));
        let len = fixed64_if(2, start)
            + fixed64_if(3, time)
            + fixed64_if(4, count)
            + fixed64_if(5, bits(sum))
            + quantiles
                .iter()
                .map(|(q, v)| len_field_len(6, quantile_len(*q, *v)))
                .sum::<usize>()
            + attrs.len()
            + varint_if(8, u64::from(flags));
        let out = self.points_of(slot);
        write_len_header(1, len, out);
        write_fixed64_if(2, start, out);
        write_fixed64_if(3, time, out);
        write_fixed64_if(4, count, out);
        write_fixed64_if(5, bits(sum), out);
        for (q, v) in quantiles {
            write_len_header(6, quantile_len(*q, *v), out);
            write_fixed64_if(1, bits(*q), out);
            write_fixed64_if(2, bits(*v), out);
        }
        out.extend_from_slice(attrs);
        write_varint_if(8, u64::from(flags), out);
    }

    pub fn points(&self) -> usize {
        self.points
    }

    /// Frames what was built as an encoded request: per resource one `ResourceMetrics` with
    /// one scope; metrics without points are left out.
    pub fn finish(mut self) -> Vec<u8> {
        if let Some(open) = self.open.take() {
            self.seal(open);
        }
        let mut request = Vec::new();
        for mut rb in std::mem::take(&mut self.resources) {
            // Points not sealed now are those of metrics sealed before.
            if rb.reopened {
                rb.out = rebuilt(&rb);
            }
            if rb.out.len() == rb.headroom {
                continue;
            }
            let framed =
                frame_resource_metrics(rb.out, rb.headroom, &rb.resource, &self.scope, "", "");
            append_resource_metrics(&mut request, framed);
        }
        request
    }
}

/// Writes `metric` as a complete `ScopeMetrics.metrics` field with the points in `parts`, one
/// after the other; returns where the points begin in `out`.
fn write_metric(metric: &MetricBuild, parts: [&[u8]; 2], out: &mut Vec<u8>) -> usize {
    let (data, len) = metric_lens(metric, parts[0].len() + parts[1].len());
    write_len_header(2, len, out);
    for (field, s) in [
        (1, &metric.name),
        (2, &metric.description),
        (3, &metric.unit),
    ] {
        if !s.is_empty() {
            write_len_field(field, s.as_bytes(), out);
        }
    }
    write_len_header(data_field(metric.kind), data, out);
    let at = out.len();
    out.extend_from_slice(parts[0]);
    out.extend_from_slice(parts[1]);
    match metric.kind {
        Kind::Sum => {
            write_varint_field(2, CUMULATIVE, out);
            write_varint_field(3, 1, out);
        }
        Kind::Histogram => write_varint_field(2, CUMULATIVE, out),
        Kind::Gauge | Kind::Summary => {}
    }
    at
}

/// (data message length, `Metric` length) for a metric with `points` bytes of points.
fn metric_lens(metric: &MetricBuild, points: usize) -> (usize, usize) {
    let data = points
        + match metric.kind {
            Kind::Sum => varint_field_len(2, CUMULATIVE) + varint_field_len(3, 1),
            Kind::Histogram => varint_field_len(2, CUMULATIVE),
            Kind::Gauge | Kind::Summary => 0,
        };
    let text = |field, s: &str| {
        if s.is_empty() {
            0
        } else {
            len_field_len(field, s.len())
        }
    };
    let len = text(1, &metric.name)
        + text(2, &metric.description)
        + text(3, &metric.unit)
        + len_field_len(data_field(metric.kind), data);
    (data, len)
}

/// A resource's metrics written again, after the same headroom, each metric once: its sealed
/// points followed by those it got later, in the order metrics were first met.
fn rebuilt(rb: &ResourceBuild) -> Vec<u8> {
    let pending: usize = rb.metrics.iter().map(|m| m.points.len() + 64).sum();
    let mut out = Vec::with_capacity(rb.out.len() + pending);
    out.resize(rb.headroom, 0);
    for m in &rb.metrics {
        let sealed = m.sealed.map_or(&[][..], |(at, len)| &rb.out[at..at + len]);
        if !sealed.is_empty() || !m.points.is_empty() {
            write_metric(m, [sealed, &m.points], &mut out);
        }
    }
    out
}

/// `Metric.data`: gauge 5, sum 7, histogram 9, summary 11.
fn data_field(kind: Kind) -> u32 {
    match kind {
        Kind::Gauge => 5,
        Kind::Sum => 7,
        Kind::Histogram => 9,
        Kind::Summary => 11,
    }
}

/// The collector's `CreateResource`: service name and instance from `job`/`instance`, the
/// instance split into `server.address`/`server.port` (no address for loopback hosts).
fn resource(job: &str, instance: &str, scheme: &str) -> Resource {
    let (host, port) = split_host_port(instance);
    let mut attributes = vec![string_kv("service.name", job)];
    if !matches!(
        host,
        "localhost" | "127.0.0.1" | "0.0.0.0" | "::1" | "::" | ""
    ) {
        attributes.push(string_kv("server.address", host));
    }
    attributes.push(string_kv("service.instance.id", instance));
    attributes.push(string_kv("server.port", port));
    attributes.push(string_kv("url.scheme", scheme));
    Resource {
        attributes,
        ..Default::default()
    }
}

fn split_host_port(instance: &str) -> (&str, &str) {
    if let Some(rest) = instance.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
    {
        return (host, port);
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port),
        _ => (instance, ""),
    }
}
