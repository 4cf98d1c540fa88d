//! The `spanmetrics` connector: request, error and duration (R.E.D.) metrics from every span,
//! as the collector's connector computes them — a `calls` counter and a `duration` histogram
//! per service, span name, kind, status and configured dimensions, flushed every
//! `metrics_flush_interval`.
//!
//! Spans are read straight from the encoded request. Each span's series is found by its
//! identity bytes (span name, kind, status and dimension values, written into one reused
//! buffer) in a map per resource; only a new series builds attributes. Series per resource are
//! capped: past the cap, spans count into one series marked `otel.metric.overflow=true`.

pub mod config;
pub mod expo;
mod lean;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub use config::SpanMetricsConfig;
use config::{HistogramKind, Unit};
use expo::ExpHistogram;

use crate::hash::FxHashMap;
use crate::otlp::wire::{self, WireError};
use crate::otlp::{Batch, Signal, string_kv};
use crate::telemetry::{Counter, Gauge, Registry};

const SCOPE_NAME: &str = "spanmetricsconnector";
const SKIPPED_HELP: &str = "Spans not counted, by reason: no_service_name (their resource has none) or malformed (one per malformed request; its spans before the malformed part were counted).";
const OVERFLOW_KEY: &str = "otel.metric.overflow";
const INSTANCE_KEY: &str = "collector.instance.id";

// ExportTraceServiceRequest.resource_spans, ResourceSpans.{resource, scope_spans},
// ScopeSpans.spans, Resource.attributes.
const REQUEST_RESOURCES: u32 = 1;
const RS_RESOURCE: u32 = 1;
const RS_SCOPES: u64 = 2;
const SCOPE_SPANS: u64 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
// Span fields.
const SPAN_TRACE_ID: u64 = 1;
const SPAN_SPAN_ID: u64 = 2;
const SPAN_NAME: u64 = 5;
const SPAN_KIND: u64 = 6;
const SPAN_START: u64 = 7;
const SPAN_END: u64 = 8;
const SPAN_ATTRIBUTES: u64 = 9;
const SPAN_STATUS: u64 = 15;
const STATUS_CODE: u64 = 3;

const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// Which of the four default dimensions are kept (`exclude_dimensions` removes them).
#[derive(Clone, Copy)]
struct Defaults {
    service: bool,
    name: bool,
    kind: bool,
    status: bool,
}

struct Dim {
    name: String,
    /// The default as an encoded string `AnyValue`, so a default and an equal string
    /// attribute make the same series.
    default: Option<Vec<u8>>,
}

struct Settings {
    defaults: Defaults,
    dims: Vec<Dim>,
    /// Bit `n` set when a dimension's name is `n` bytes long (names of 64 bytes or more are
    /// always compared).
    dim_lengths: u64,
    key_attributes: Vec<String>,
    histogram: HistogramKind,
    unit: Unit,
    delta: bool,
    cap: usize,
    resource_cap: usize,
    flush_interval: Duration,
    metrics_expiration: Duration,
    series_expiration: Duration,
    exemplars: usize,
    calls_name: String,
    duration_name: String,
    instance_id: String,
}

struct Metrics {
    spans: Counter,
    skipped_no_service: Counter,
    malformed: Counter,
    overflow: Counter,
    series: Gauge,
}

pub struct SpanMetrics {
    settings: Settings,
    resources: Vec<ResourceState>,
    resource_index: FxHashMap<Box<[u8]>, usize>,
    next_flush: Instant,
    metrics: Metrics,
    active_series: usize,
    /// Spans counted in the current batch (the counter is updated once per batch).
    counted: u64,
    // Reused per resource and per span.
    resource_key: Vec<u8>,
    series_key: Vec<u8>,
}

struct ResourceState {
    key: Box<[u8]>,
    attributes: Vec<KeyValue>,
    service_name: Option<AnyValue>,
    last_seen: Instant,
    index: FxHashMap<Box<[u8]>, usize>,
    series: Vec<Series>,
    overflow: Option<Series>,
}

struct Series {
    /// Identity bytes within its resource (span name, kind, status, dimension values).
    key: Box<[u8]>,
    attributes: Vec<KeyValue>,
    start_ns: u64,
    last_seen: Instant,
    /// Whether a point was exported yet (a new cumulative `calls` series first reports 0,
    /// so the backend sees the counter start).
    reported: bool,
    calls: u64,
    /// Spans since the last flush (delta points carry these; idle series are let go).
    fresh: u64,
    hist: Hist,
    exemplars: Vec<Exemplar>,
}

enum Hist {
    None,
    Explicit { counts: Vec<u64>, sum: f64 },
    Exponential(Box<ExpHistogram>),
}

/// The fields of one span that the connector reads.
#[derive(Default)]
struct SpanView<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    name: &'a [u8],
    kind: u64,
    start: u64,
    end: u64,
    status: u64,
}

impl SpanMetrics {
    pub fn new(config: &SpanMetricsConfig, id: &str, registry: &Registry) -> SpanMetrics {
        let excluded = |n: &str| config.exclude_dimensions.iter().any(|e| e == n);
        let labels = [("connector", id)];
        let settings = Settings {
            defaults: Defaults {
                service: !excluded("service.name"),
                name: !excluded("span.name"),
                kind: !excluded("span.kind"),
                status: !excluded("status.code"),
            },
            dims: config
                .dimensions
                .iter()
                .map(|d| Dim {
                    name: d.name.clone(),
                    default: d.default.as_ref().map(|s| {
                        AnyValue {
                            value: Some(any_value::Value::StringValue(s.clone())),
                        }
                        .encode_to_vec()
                    }),
                })
                .collect(),
            dim_lengths: config
                .dimensions
                .iter()
                .map(|d| {
                    if d.name.len() < 64 {
                        1u64 << d.name.len()
                    } else {
                        0
                    }
                })
                .fold(0, |a, b| a | b),
            key_attributes: config.resource_metrics_key_attributes.clone(),
            histogram: config.histogram_kind(),
            unit: config.unit().unwrap_or(Unit::Milliseconds),
            delta: config.delta(),
            cap: config.series_cap(),
            resource_cap: config.resource_metrics_cache_size,
            flush_interval: config.metrics_flush_interval,
            metrics_expiration: config.metrics_expiration,
            series_expiration: config.series_expiration,
            exemplars: if config.exemplars.enabled {
                config.exemplars.max_per_data_point
            } else {
                0
            },
            calls_name: config.metric_name("calls"),
            duration_name: config.metric_name("duration"),
            instance_id: instance_id(),
        };
        SpanMetrics {
            next_flush: Instant::now() + settings.flush_interval,
            settings,
            resources: Vec::new(),
            resource_index: FxHashMap::default(),
            metrics: Metrics {
                spans: registry.counter(
                    "sluice_spanmetrics_spans_total",
                    "Spans counted into span metrics.",
                    &labels,
                ),
                skipped_no_service: registry.counter(
                    "sluice_spanmetrics_spans_skipped_total",
                    SKIPPED_HELP,
                    &[("connector", id), ("reason", "no_service_name")],
                ),
                malformed: registry.counter(
                    "sluice_spanmetrics_spans_skipped_total",
                    SKIPPED_HELP,
                    &[("connector", id), ("reason", "malformed")],
                ),
                overflow: registry.counter(
                    "sluice_spanmetrics_overflow_spans_total",
                    "Spans counted into a resource's overflow series (otel.metric.overflow=true) because its series cap was reached.",
                    &labels,
                ),
                series: registry.gauge(
                    "sluice_spanmetrics_series",
                    "Series the connector holds (each exports one calls and one duration point per flush).",
                    &labels,
                ),
            },
            active_series: 0,
            counted: 0,
            resource_key: Vec::new(),
            series_key: Vec::new(),
        }
    }

    pub fn process(&mut self, batch: Batch, now: Instant, _out: &mut Vec<Batch>) {
        if batch.signal != Signal::Traces {
            return;
        }
        let now_ns = unix_nanos();
        for chunk in &batch.chunks {
            if let Err(e) = self.ingest(chunk, now, now_ns) {
                self.metrics.malformed.add(1);
                tracing::warn!(error = %e, "spanmetrics: skipping the rest of a malformed request");
            }
        }
        self.metrics.spans.add(std::mem::take(&mut self.counted));
        self.metrics.series.set(self.active_series as i64);
    }

    fn ingest(&mut self, request: &[u8], now: Instant, now_ns: u64) -> Result<(), WireError> {
        for rs in wire::fields(request) {
            let rs = rs?;
            if rs.number != REQUEST_RESOURCES {
                continue;
            }
            let rs = rs.expect_len()?;
            let mut resource: &[u8] = &[];
            for f in wire::fields(rs) {
                let f = f?;
                if f.number == RS_RESOURCE {
                    resource = f.expect_len()?;
                }
            }
            let Some(slot) = self.resource_slot(resource, now)? else {
                let spans = count_spans(rs)?;
                self.metrics.skipped_no_service.add(spans);
                continue;
            };
            // Dimension values the resource provides, used when a span lacks the attribute.
            let mut from_resource: Vec<Option<&[u8]>> =
                Vec::with_capacity(self.settings.dims.len());
            for d in &self.settings.dims {
                from_resource.push(attribute(resource, RESOURCE_ATTRIBUTES, &d.name)?);
            }
            let mut scopes = lean::Fields::new(rs);
            while let Some((number, scope)) = scopes.next()? {
                let (RS_SCOPES, lean::Value::Len(scope)) = (number, scope) else {
                    continue;
                };
                let mut spans = lean::Fields::new(scope);
                while let Some((number, span)) = spans.next()? {
                    if let (SCOPE_SPANS, lean::Value::Len(span)) = (number, span) {
                        self.record(slot, span, &from_resource, now, now_ns)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state of the resource a `ResourceSpans` belongs to; `None` without `service.name`.
    fn resource_slot(&mut self, resource: &[u8], now: Instant) -> Result<Option<usize>, WireError> {
        let mut attrs: Vec<(&[u8], &[u8])> = Vec::new();
        let mut service = false;
        for f in wire::fields(resource) {
            let f = f?;
            if f.number != RESOURCE_ATTRIBUTES {
                continue;
            }
            let (k, v) = lean::key_value(f.expect_len()?)?;
            service |= k == b"service.name";
            let keyed = self.settings.key_attributes.is_empty()
                || self
                    .settings
                    .key_attributes
                    .iter()
                    .any(|a| a.as_bytes() == k);
            if keyed {
                attrs.push((k, v));
            }
        }
        if !service {
            return Ok(None);
        }
        // The first of duplicate keys counts, as pdata's `Get`; order does not.
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        attrs.dedup_by(|later, first| later.0 == first.0);
        self.resource_key.clear();
        for (k, v) in &attrs {
            push_len(&mut self.resource_key, k);
            push_len(&mut self.resource_key, v);
        }
        if let Some(&i) = self.resource_index.get(self.resource_key.as_slice()) {
            self.resources[i].last_seen = now;
            return Ok(Some(i));
        }
        if self.resources.len() >= self.settings.resource_cap {
            self.evict_least_recent_resource();
        }
        let decoded = Resource::decode(resource).unwrap_or_default();
        let service_name = decoded
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.clone());
        let key: Box<[u8]> = self.resource_key.as_slice().into();
        self.resource_index
            .insert(key.clone(), self.resources.len());
        self.resources.push(ResourceState {
            key,
            attributes: decoded.attributes,
            service_name,
            last_seen: now,
            index: FxHashMap::default(),
            series: Vec::new(),
            overflow: None,
        });
        Ok(Some(self.resources.len() - 1))
    }

    fn evict_least_recent_resource(&mut self) {
        if let Some((i, _)) = self
            .resources
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.last_seen)
        {
            let gone = self.resources.swap_remove(i);
            self.active_series -= gone.series.len() + usize::from(gone.overflow.is_some());
            self.reindex_resources();
        }
    }

    fn reindex_resources(&mut self) {
        self.resource_index.clear();
        for (i, r) in self.resources.iter().enumerate() {
            self.resource_index.insert(r.key.clone(), i);
        }
    }

    fn record(
        &mut self,
        slot: usize,
        raw: &[u8],
        from_resource: &[Option<&[u8]>],
        now: Instant,
        now_ns: u64,
    ) -> Result<(), WireError> {
        use lean::Value::{Fixed64, Len, Varint};
        let settings = &self.settings;
        let mut span = SpanView::default();
        let mut dims: [Option<&[u8]>; 16] = [None; 16];
        let wanted = settings.dims.len().min(dims.len());
        let mut fields = lean::Fields::new(raw);
        while let Some((number, value)) = fields.next()? {
            match (number, value) {
                (SPAN_TRACE_ID, Len(v)) => span.trace_id = v,
                (SPAN_SPAN_ID, Len(v)) => span.span_id = v,
                (SPAN_NAME, Len(v)) => span.name = v,
                (SPAN_KIND, Varint(v)) => span.kind = v,
                (SPAN_START, Fixed64(v)) => span.start = v,
                (SPAN_END, Fixed64(v)) => span.end = v,
                (SPAN_ATTRIBUTES, Len(kv)) if wanted > 0 => {
                    // The key comes first in what every encoder writes; the value is read only
                    // for a dimension.
                    let (k, v) = match lean::canonical_key_value(kv) {
                        Some(kv) => kv,
                        None => lean::key_value(kv)?,
                    };
                    if k.len() < 64 && settings.dim_lengths & (1 << k.len()) == 0 {
                        continue;
                    }
                    for (i, d) in settings.dims.iter().take(wanted).enumerate() {
                        if dims[i].is_none() && d.name.as_bytes() == k {
                            dims[i] = Some(v);
                        }
                    }
                }
                (SPAN_STATUS, Len(status)) => {
                    let mut g = lean::Fields::new(status);
                    while let Some((n, v)) = g.next()? {
                        if let (STATUS_CODE, Varint(code)) = (n, v) {
                            span.status = code;
                        }
                    }
                }
                _ => {}
            }
        }
        for (i, d) in settings.dims.iter().take(wanted).enumerate() {
            if dims[i].is_none() {
                dims[i] = from_resource[i].or(d.default.as_deref());
            }
        }
        let kind = (span.kind as usize).min(SPAN_KINDS.len() - 1);
        let status = (span.status as usize).min(STATUS_CODES.len() - 1);

        let key = &mut self.series_key;
        key.clear();
        if settings.defaults.name {
            push_len(key, span.name);
        }
        if settings.defaults.kind {
            key.push(kind as u8);
        }
        if settings.defaults.status {
            key.push(status as u8);
        }
        for d in &dims[..wanted] {
            match d {
                Some(v) => {
                    key.push(1);
                    value_key(v, key);
                }
                None => key.push(0),
            }
        }

        self.counted += 1;
        let resource = &mut self.resources[slot];
        let series = match resource.index.get(key.as_slice()) {
            Some(&i) => &mut resource.series[i],
            None if resource.series.len() < settings.cap => {
                let mut attributes = Vec::with_capacity(5 + wanted);
                if settings.defaults.service
                    && let Some(v) = &resource.service_name
                {
                    attributes.push(KeyValue {
                        key: "service.name".into(),
                        value: Some(v.clone()),
                        ..Default::default()
                    });
                }
                if settings.defaults.name {
                    attributes.push(string_kv(
                        "span.name",
                        String::from_utf8_lossy(span.name).into_owned(),
                    ));
                }
                if settings.defaults.kind {
                    attributes.push(string_kv("span.kind", SPAN_KINDS[kind].to_string()));
                }
                if settings.defaults.status {
                    attributes.push(string_kv("status.code", STATUS_CODES[status].to_string()));
                }
                for (d, v) in settings.dims.iter().zip(&dims[..wanted]) {
                    if let Some(v) = v {
                        attributes.push(KeyValue {
                            key: d.name.clone(),
                            value: Some(AnyValue::decode(*v).unwrap_or_default()),
                            ..Default::default()
                        });
                    }
                }
                attributes.push(string_kv(INSTANCE_KEY, settings.instance_id.clone()));
                let key: Box<[u8]> = key.as_slice().into();
                resource.index.insert(key.clone(), resource.series.len());
                resource.series.push(Series::new(
                    key,
                    attributes,
                    &settings.histogram,
                    now,
                    now_ns,
                ));
                self.active_series += 1;
                resource.series.last_mut().expect("just pushed")
            }
            None => {
                self.metrics.overflow.add(1);
                if resource.overflow.is_none() {
                    self.active_series += 1;
                }
                resource.overflow.get_or_insert_with(|| {
                    let attributes = vec![
                        KeyValue {
                            key: OVERFLOW_KEY.into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::BoolValue(true)),
                            }),
                            ..Default::default()
                        },
                        string_kv(INSTANCE_KEY, settings.instance_id.clone()),
                    ];
                    Series::new(Box::default(), attributes, &settings.histogram, now, now_ns)
                })
            }
        };
        let duration = if span.end > span.start {
            (span.end - span.start) as f64 / settings.unit.nanos()
        } else {
            0.0
        };
        series.last_seen = now;
        series.calls += 1;
        series.fresh += 1;
        match &mut series.hist {
            Hist::None => {}
            Hist::Explicit { counts, sum } => {
                let HistogramKind::Explicit(bounds) = &settings.histogram else {
                    unreachable!("a series' histogram follows the settings")
                };
                counts[bounds.partition_point(|b| *b < duration)] += 1;
                *sum += duration;
            }
            Hist::Exponential(h) => {
                let HistogramKind::Exponential { max_size } = settings.histogram else {
                    unreachable!("a series' histogram follows the settings")
                };
                h.record(duration, max_size);
            }
        }
        if series.exemplars.len() < settings.exemplars && !span.trace_id.is_empty() {
            series.exemplars.push(Exemplar {
                trace_id: span.trace_id.to_vec(),
                span_id: span.span_id.to_vec(),
                value: Some(exemplar::Value::AsDouble(duration)),
                ..Default::default()
            });
        }
        Ok(())
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        Some(self.next_flush)
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        if now < self.next_flush {
            return;
        }
        self.next_flush = now + self.settings.flush_interval;
        self.emit(now, false, out);
    }

    /// At shutdown: the counts as they are (a new series has no later flush to report them).
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Batch>) {
        self.emit(now, true, out);
    }

    /// Builds one metrics request with a point per series, then lets go of what expired.
    fn emit(&mut self, now: Instant, last: bool, out: &mut Vec<Batch>) {
        let now_ns = unix_nanos();
        let settings = &self.settings;
        let temporality = if settings.delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut request = ExportMetricsServiceRequest::default();
        let mut points = 0;
        for resource in &mut self.resources {
            let mut calls = Vec::new();
            let mut durations = Vec::new();
            let mut exp_durations = Vec::new();
            for series in resource.series.iter_mut().chain(resource.overflow.as_mut()) {
                if settings.delta && series.fresh == 0 {
                    continue;
                }
                let start = series.start_ns;
                let exemplars: Vec<Exemplar> = series
                    .exemplars
                    .drain(..)
                    .map(|mut e| {
                        e.time_unix_nano = now_ns;
                        e
                    })
                    .collect();
                let count = if settings.delta {
                    series.fresh
                } else if series.reported || last {
                    series.calls
                } else {
                    0
                };
                calls.push(NumberDataPoint {
                    attributes: series.attributes.clone(),
                    start_time_unix_nano: start,
                    time_unix_nano: now_ns,
                    exemplars: exemplars.clone(),
                    value: Some(number_data_point::Value::AsInt(count as i64)),
                    ..Default::default()
                });
                match &mut series.hist {
                    Hist::None => {}
                    Hist::Explicit { counts, sum } => {
                        let HistogramKind::Explicit(bounds) = &settings.histogram else {
                            unreachable!("a series' histogram follows the settings")
                        };
                        durations.push(HistogramDataPoint {
                            attributes: series.attributes.clone(),
                            start_time_unix_nano: start,
                            time_unix_nano: now_ns,
                            count: counts.iter().sum(),
                            sum: Some(*sum),
                            bucket_counts: counts.clone(),
                            explicit_bounds: bounds.clone(),
                            exemplars,
                            ..Default::default()
                        });
                        if settings.delta {
                            counts.iter_mut().for_each(|c| *c = 0);
                            *sum = 0.0;
                        }
                    }
                    Hist::Exponential(h) => {
                        exp_durations.push(ExponentialHistogramDataPoint {
                            attributes: series.attributes.clone(),
                            start_time_unix_nano: start,
                            time_unix_nano: now_ns,
                            count: h.count,
                            sum: Some(h.sum),
                            scale: h.scale,
                            zero_count: h.zero_count,
                            positive: Some(Buckets {
                                offset: h.offset,
                                bucket_counts: h.counts.clone(),
                            }),
                            exemplars,
                            min: (h.count > 0).then_some(h.min),
                            max: (h.count > 0).then_some(h.max),
                            ..Default::default()
                        });
                        if settings.delta {
                            **h = ExpHistogram::new();
                        }
                    }
                }
                series.reported = true;
                if settings.delta {
                    series.start_ns = now_ns;
                    series.calls = 0;
                }
                series.fresh = 0;
            }
            if calls.is_empty() {
                continue;
            }
            points += calls.len() + durations.len() + exp_durations.len();
            let mut metrics = vec![Metric {
                name: settings.calls_name.clone(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: calls,
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                })),
                ..Default::default()
            }];
            if !durations.is_empty() {
                metrics.push(Metric {
                    name: settings.duration_name.clone(),
                    unit: settings.unit.as_str().to_string(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: durations,
                        aggregation_temporality: temporality,
                    })),
                    ..Default::default()
                });
            }
            if !exp_durations.is_empty() {
                metrics.push(Metric {
                    name: settings.duration_name.clone(),
                    unit: settings.unit.as_str().to_string(),
                    data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: exp_durations,
                        aggregation_temporality: temporality,
                    })),
                    ..Default::default()
                });
            }
            request.resource_metrics.push(ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource.attributes.clone(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        self.expire(now);
        if points > 0 {
            out.push(Batch::new(
                Signal::Metrics,
                Bytes::from(request.encode_to_vec()),
                points,
            ));
        }
    }

    /// Delta: series idle for a whole interval are let go (a later span starts them afresh).
    /// Cumulative: resources and series unseen for `metrics_expiration` / `series_expiration`
    /// stop being exported (they were exported one last time just now).
    fn expire(&mut self, now: Instant) {
        let s = &self.settings;
        let idle = |last: Instant, limit: Duration| !limit.is_zero() && now - last >= limit;
        let mut removed = 0;
        let resources = self.resources.len();
        if !s.delta {
            self.resources.retain(|r| {
                let keep = !idle(r.last_seen, s.metrics_expiration);
                if !keep {
                    removed += r.series.len() + usize::from(r.overflow.is_some());
                }
                keep
            });
        }
        let expired = |series: &Series| {
            if s.delta {
                now - series.last_seen >= s.flush_interval
            } else {
                idle(series.last_seen, s.series_expiration)
            }
        };
        for r in &mut self.resources {
            if r.series.iter().any(expired) {
                let n = r.series.len();
                r.series.retain(|x| !expired(x));
                removed += n - r.series.len();
                r.index.clear();
                for (i, x) in r.series.iter().enumerate() {
                    r.index.insert(x.key.clone(), i);
                }
            }
            if r.overflow.as_ref().is_some_and(expired) {
                r.overflow = None;
                removed += 1;
            }
        }
        if self.resources.len() != resources {
            self.reindex_resources();
        }
        self.active_series -= removed;
        self.metrics.series.set(self.active_series as i64);
    }
}

impl Series {
    fn new(
        key: Box<[u8]>,
        attributes: Vec<KeyValue>,
        histogram: &HistogramKind,
        now: Instant,
        now_ns: u64,
    ) -> Series {
        Series {
            key,
            attributes,
            start_ns: now_ns,
            last_seen: now,
            reported: false,
            calls: 0,
            fresh: 0,
            hist: match histogram {
                HistogramKind::Disabled => Hist::None,
                HistogramKind::Explicit(bounds) => Hist::Explicit {
                    counts: vec![0; bounds.len() + 1],
                    sum: 0.0,
                },
                HistogramKind::Exponential { .. } => Hist::Exponential(Box::default()),
            },
            exemplars: Vec::new(),
        }
    }
}

fn push_len(out: &mut Vec<u8>, bytes: &[u8]) {
    match u8::try_from(bytes.len()) {
        Ok(n) if n < 0x80 => out.push(n),
        _ => wire::encode_varint(bytes.len() as u64, out),
    }
    out.extend_from_slice(bytes);
}

/// Writes a value's identity as the collector keys it (`AsString`): a string and the same
/// text as an int or bool make one series.
fn value_key(raw: &[u8], out: &mut Vec<u8>) {
    // AnyValue: 1 string, 2 bool, 3 int, 4 double; the last member on the wire wins.
    use lean::Value::{Fixed64, Len, Varint};
    // A string, as encoders write it: one field with a one-byte length.
    if raw.len() >= 2 && raw[0] == 0x0a && usize::from(raw[1]) + 2 == raw.len() {
        return push_len(out, &raw[2..]);
    }
    let mut last = None;
    let mut fields = lean::Fields::new(raw);
    while let Ok(Some(f)) = fields.next() {
        last = Some(f);
    }
    match last {
        Some((1, Len(s))) => push_len(out, s),
        Some((2, Varint(b))) => push_len(out, if b != 0 { b"true" } else { b"false" }),
        Some((3, Varint(i))) => push_len(out, decimal(i as i64, &mut [0; 20])),
        Some((4, Fixed64(d))) => push_len(out, f64::from_bits(d).to_string().as_bytes()),
        _ => {
            out.push(0xff);
            push_len(out, raw);
        }
    }
}

/// An integer's decimal digits, written into `buf` without allocating.
fn decimal(value: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = value.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// The first attribute `name` of a message whose field `field` holds `KeyValue`s.
fn attribute<'a>(msg: &'a [u8], field: u32, name: &str) -> Result<Option<&'a [u8]>, WireError> {
    for f in wire::fields(msg) {
        let f = f?;
        if f.number == field {
            let (k, v) = lean::key_value(f.expect_len()?)?;
            if k == name.as_bytes() {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

fn count_spans(resource_spans: &[u8]) -> Result<u64, WireError> {
    let mut n = 0;
    for scope in wire::fields(resource_spans) {
        let scope = scope?;
        if u64::from(scope.number) == RS_SCOPES {
            for span in wire::fields(scope.expect_len()?) {
                if u64::from(span?.number) == SCOPE_SPANS {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A random UUID (version 4) naming this agent's series, as the collector's
/// `collector.instance.id`: agents on different nodes count different spans of the same
/// service, and without it their series would collide at the backend.
fn instance_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests;
