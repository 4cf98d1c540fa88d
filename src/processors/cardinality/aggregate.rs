//! Re-aggregation of metric series whose labels were removed, shared by `cardinality` and
//! `attributes`: every incoming (source) series is mapped once to an output series, and each
//! output series is emitted at most once per flush, so no backend sees two points for one
//! series and timestamp, and collapsed counters neither double count nor look reset.
//!
//! - Cumulative sums and histograms: per source series the last value is kept, and its
//!   increments (a reset contributes its new value from 0) are added to the output's running
//!   total, whose start time never changes. A source that vanishes leaves its total in place.
//! - Delta sums and histograms add up between flushes; gauges keep the latest point of each
//!   source since the last flush and combine them with `gauge_aggregation`.
//! - Histograms merge only with equal bounds; a source with other bounds keeps its own labels.
//!   Summaries and exponential histograms pass unchanged when no label of theirs is removed
//!   and are dropped (and counted) otherwise.
//! - A source's output is decided when it is first seen and kept until it has been idle for
//!   `window`: a label limit that trips later applies to new series only, so no series moves
//!   (which would count its history twice).

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use prost::Message;

use crate::hash::{FxHashMap as HashMap, SeriesHasher};
pub use crate::otlp::metrics_wire::Num;
use crate::otlp::metrics_wire::{
    self as input, ATTRIBUTES, HistogramValues, Malformed, MetricHeader, NumberPoint, RawAttr,
    append_resource_metrics, frame_resource_metrics, resource_headroom, write_histogram_point,
    write_number_point,
};
use crate::otlp::wire::{len_field_len, write_len_field, write_len_header, write_varint_field};
use crate::seqmap::SeqMap;
use crate::telemetry::{Counter, Gauge as GaugeMetric, Registry};

/// The attribute the SDKs put on the series that holds everything over the series limit.
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

const NO_RECORDED_VALUE: u32 = 1;
const NANOS_PER_MILLI: u64 = 1_000_000;
/// The start of a delta output that has not received a point yet.
const UNSET: u64 = u64::MAX;

/// How the latest points of several gauge series that collapse into one are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GaugeAggregation {
    #[default]
    Last,
    Sum,
    Max,
    Min,
}

/// Decides what labels a series keeps. Implemented by each processor that removes labels.
pub trait LabelRules {
    /// Rewrites a resource's attributes; called for every resource of every batch.
    fn resource(&mut self, attributes: &mut Vec<KeyValue>);
    /// Whether [`LabelRules::observe`] wants to see points at all.
    fn observes(&self) -> bool {
        true
    }
    /// Sees the attributes of a series' points (to count distinct values): every point of a
    /// new series, then one at most every sweep interval.
    fn observe(&mut self, metric: &str, attributes: &[RawAttr<'_>], now: Instant);
    /// Rewrites the attributes of a series seen for the first time; returns how many of
    /// them were removed.
    fn rewrite(&mut self, metric: &str, attributes: &mut Vec<KeyValue>, now: Instant) -> u64;
    /// Forgets what is older than the window.
    fn sweep(&mut self, _now: Instant) {}
}

#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// 0: no limit. Includes the overflow series, as in the SDKs.
    pub max_series_per_metric: usize,
    pub window: Duration,
    /// 0: emit after every batch.
    pub flush_interval: Duration,
    pub gauge_aggregation: GaugeAggregation,
}

/// Why a data point was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Summary,
    ExponentialHistogram,
    HistogramBounds,
    UnspecifiedTemporality,
    Malformed,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::Summary,
        DropReason::ExponentialHistogram,
        DropReason::HistogramBounds,
        DropReason::UnspecifiedTemporality,
        DropReason::Malformed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::Summary => "summary",
            DropReason::ExponentialHistogram => "exponential_histogram",
            DropReason::HistogramBounds => "histogram_bounds",
            DropReason::UnspecifiedTemporality => "unspecified_temporality",
            DropReason::Malformed => "malformed",
        }
    }
}

/// Self-metrics of the engine, named after the processor that owns it.
pub struct EngineMetrics {
    pub labels_dropped: Counter,
    pub series_overflowed: Counter,
    pub histogram_bounds_mismatch: Counter,
    pub active_series: GaugeMetric,
    pub source_series: GaugeMetric,
    points_dropped: [Counter; DropReason::ALL.len()],
}

impl EngineMetrics {
    /// `prefix` is e.g. `sluice_processor_cardinality`.
    pub fn new(registry: &Registry, prefix: &str, id: &str) -> EngineMetrics {
        let labels = [("processor", id)];
        EngineMetrics {
            labels_dropped: registry.counter(
                &format!("{prefix}_labels_dropped_total"),
                "Labels removed from metric data points.",
                &labels,
            ),
            series_overflowed: registry.counter(
                &format!("{prefix}_series_overflowed_total"),
                "Series folded into the overflow series of their metric.",
                &labels,
            ),
            histogram_bounds_mismatch: registry.counter(
                &format!("{prefix}_histogram_bounds_mismatch_total"),
                "Histogram series kept apart because their bucket bounds differ.",
                &labels,
            ),
            active_series: registry.gauge(
                &format!("{prefix}_active_series"),
                "Output metric series held (all metrics).",
                &labels,
            ),
            source_series: registry.gauge(
                &format!("{prefix}_source_series"),
                "Incoming metric series tracked (all metrics).",
                &labels,
            ),
            points_dropped: DropReason::ALL.map(|r| {
                registry.counter(
                    &format!("{prefix}_points_dropped_total"),
                    "Metric data points that could not be re-aggregated.",
                    &[("processor", id), ("reason", r.as_str())],
                )
            }),
        }
    }

    pub fn dropped(&self, reason: DropReason) -> &Counter {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        &self.points_dropped[i]
    }
}

/// The shape of a metric, part of its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Gauge,
    Sum { cumulative: bool, monotonic: bool },
    Histogram { cumulative: bool },
}

/// What is carried over from one point of a cumulative source series to the next.
#[derive(Clone, Debug)]
enum Previous {
    None,
    Number { start: u64, time: u64, value: Num },
    // Boxed, as most series are numbers.
    Histogram(Box<PreviousHistogram>),
}

#[derive(Clone, Debug)]
struct PreviousHistogram {
    start: u64,
    time: u64,
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
}

/// A 128-bit identity stored as two words: a `u128` field would align its struct (and every
/// table entry holding it) to 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Id([u64; 2]);

impl From<u128> for Id {
    fn from(k: u128) -> Id {
        Id([k as u64, (k >> 64) as u64])
    }
}

impl From<Id> for u128 {
    fn from(id: Id) -> u128 {
        u128::from(id.0[0]) | (u128::from(id.0[1]) << 64)
    }
}

/// A moment as nanoseconds since the aggregator was made: half the size of an `Instant`, and
/// every series holds some.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(u64);

impl Stamp {
    fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

struct Source {
    id: u64,
    output: u64,
    last_seen: Stamp,
    /// When its label values were last shown to [`LabelRules::observe`].
    observed: Stamp,
    labels_dropped: u32,
    previous: Previous,
}

#[derive(Clone, Debug, Default)]
struct HistogramTotal {
    bounds: Vec<f64>,
    count: u64,
    sum: f64,
    has_sum: bool,
    buckets: Vec<u64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl HistogramTotal {
    fn add(&mut self, count: u64, sum: Option<f64>, buckets: &[u64]) {
        self.count = self.count.wrapping_add(count);
        self.sum += sum.unwrap_or(0.0);
        self.has_sum &= sum.is_some();
        for (total, n) in self.buckets.iter_mut().zip(buckets) {
            *total = total.wrapping_add(*n);
        }
    }

    fn reset(&mut self) {
        self.count = 0;
        self.sum = 0.0;
        self.has_sum = true;
        self.buckets.iter_mut().for_each(|b| *b = 0);
        self.min = None;
        self.max = None;
    }
}

enum Value {
    /// Running total since `Output::start`.
    CumulativeSum(Option<Num>),
    /// Sum of the deltas since the last flush.
    DeltaSum(Option<Num>),
    /// Latest (time, value) per source since the last flush.
    // Boxed, as the map is larger than the other variants.
    Gauge(Box<HashMap<u64, (u64, Num)>>),
    // Boxed: an output of every kind is as large as its largest variant, and most are sums.
    CumulativeHistogram(Box<HistogramTotal>),
    DeltaHistogram(Box<HistogramTotal>),
}

/// The fields are ordered (and the attributes boxed) to keep it small: there is one per
/// series.
struct Output {
    stream: u64,
    key: Id,
    /// Encoded attributes, tagged for a number point's attributes field.
    attrs: Box<[u8]>,
    overflow: bool,
    pending: bool,
    sources: u32,
    last_seen: Stamp,
    /// Start time of cumulative output; earliest start of pending deltas.
    start: u64,
    /// Latest input timestamp since the last flush.
    latest: u64,
    last_emitted: u64,
    value: Value,
}

struct Stream {
    key: u128,
    group: u128,
    resource: Resource,
    resource_schema_url: String,
    scope: InstrumentationScope,
    scope_schema_url: String,
    name: String,
    description: String,
    unit: String,
    metadata: Vec<KeyValue>,
    kind: Kind,
    series: HashMap<u128, u64>,
    normal_series: usize,
}

/// The resource and scope a metric arrived under, and their identities.
struct Origin<'a> {
    source_resource: u128,
    out_resource: u128,
    scope_key: u128,
    group: u128,
    resource: &'a Resource,
    resource_schema_url: &'a str,
    resource_changed: bool,
    scope: &'a InstrumentationScope,
    scope_schema_url: &'a str,
}

/// Where a metric's points come from and go to.
struct MetricContext<'a> {
    source_prefix: u128,
    stream_key: u128,
    origin: &'a Origin<'a>,
    metric: &'a MetricHeader<'a>,
    kind: Kind,
}

pub struct Aggregator {
    settings: EngineSettings,
    metrics: EngineMetrics,
    streams: HashMap<u64, Stream>,
    stream_index: HashMap<u128, u64>,
    // In insertion order, which is the order points arrive in (see `SeqMap`).
    outputs: SeqMap<u64, Output>,
    sources: SeqMap<Id, Source>,
    /// (stream, id) of the outputs with data since the last flush.
    pending: Vec<(u64, u64)>,
    next_id: u64,
    next_flush: Option<Instant>,
    next_sweep: Option<Instant>,
    /// What [`Stamp`]s count from.
    epoch: Instant,
}

impl Aggregator {
    pub fn new(settings: EngineSettings, metrics: EngineMetrics) -> Aggregator {
        Aggregator {
            settings,
            metrics,
            streams: HashMap::default(),
            stream_index: HashMap::default(),
            outputs: SeqMap::default(),
            sources: SeqMap::default(),
            pending: Vec::new(),
            next_id: 1,
            next_flush: None,
            next_sweep: None,
            epoch: Instant::now(),
        }
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Takes every point of sums, gauges and histograms of an encoded request into the
    /// aggregation state; returns what passes through at once (summaries and exponential
    /// histograms whose labels stay). A part that cannot be read is dropped and counted.
    pub fn ingest(
        &mut self,
        request: &[u8],
        rules: &mut impl LabelRules,
        now: Instant,
    ) -> Option<ExportMetricsServiceRequest> {
        self.maybe_sweep(rules, now);
        let mut passed = ExportMetricsServiceRequest::default();
        for rm in input::repeated(request, 1) {
            let result = rm
                .map_err(Malformed::from)
                .and_then(|rm| self.ingest_resource(rm, rules, now, &mut passed));
            if let Err(e) = result {
                self.malformed(&e);
            }
        }
        self.metrics.source_series.set(self.sources.len() as i64);
        self.metrics.active_series.set(self.outputs.len() as i64);
        if !self.pending.is_empty() && self.next_flush.is_none() {
            self.next_flush = Some(now + self.settings.flush_interval);
        }
        (!passed.resource_metrics.is_empty()).then_some(passed)
    }

    fn malformed(&mut self, e: &Malformed) {
        self.metrics.dropped(DropReason::Malformed).add(1);
        tracing::warn!(error = %e, "Cannot read part of a metrics batch; dropping it.");
    }

    fn ingest_resource(
        &mut self,
        rm: &[u8],
        rules: &mut impl LabelRules,
        now: Instant,
        passed: &mut ExportMetricsServiceRequest,
    ) -> Result<(), Malformed> {
        let original = Resource::decode(input::last_len(rm, 1)?)?;
        let resource_schema_url = input::str_of(input::last_len(rm, 3)?)?;
        let mut resource = original.clone();
        rules.resource(&mut resource.attributes);
        let resource_changed = resource.attributes != original.attributes;
        let mut source_resource = Key::new();
        hash_attributes(&mut source_resource, &original.attributes);
        resource_schema_url.hash(&mut source_resource);
        let mut out_resource = Key::new();
        hash_attributes(&mut out_resource, &resource.attributes);
        resource_schema_url.hash(&mut out_resource);
        let (source_resource, out_resource) =
            (source_resource.finish128(), out_resource.finish128());
        let mut passed_slot = None;
        for sm in input::repeated(rm, 2) {
            let sm = sm?;
            let scope = InstrumentationScope::decode(input::last_len(sm, 1)?)?;
            let scope_schema_url = input::str_of(input::last_len(sm, 3)?)?;
            let mut scope_key = Key::new();
            scope.name.hash(&mut scope_key);
            scope.version.hash(&mut scope_key);
            hash_attributes(&mut scope_key, &scope.attributes);
            scope_schema_url.hash(&mut scope_key);
            let scope_key = scope_key.finish128();
            let group = {
                let mut k = Key::new();
                out_resource.hash(&mut k);
                scope_key.hash(&mut k);
                k.finish128()
            };
            let origin = Origin {
                source_resource,
                out_resource,
                scope_key,
                group,
                resource: &resource,
                resource_schema_url,
                resource_changed,
                scope: &scope,
                scope_schema_url,
            };
            let mut metrics = Vec::new();
            for m in input::repeated(sm, 2) {
                let result = m
                    .map_err(Malformed::from)
                    .and_then(|m| self.ingest_metric(&origin, m, rules, now, &mut metrics));
                if let Err(e) = result {
                    self.malformed(&e);
                }
            }
            if metrics.is_empty() {
                continue;
            }
            let slot = *passed_slot.get_or_insert_with(|| {
                passed.resource_metrics.push(ResourceMetrics {
                    resource: Some(resource.clone()),
                    scope_metrics: Vec::new(),
                    schema_url: resource_schema_url.to_string(),
                });
                passed.resource_metrics.len() - 1
            });
            passed.resource_metrics[slot]
                .scope_metrics
                .push(ScopeMetrics {
                    scope: Some(scope.clone()),
                    metrics,
                    schema_url: scope_schema_url.to_string(),
                });
        }
        Ok(())
    }

    fn ingest_metric(
        &mut self,
        origin: &Origin<'_>,
        m: &[u8],
        rules: &mut impl LabelRules,
        now: Instant,
        passed: &mut Vec<Metric>,
    ) -> Result<(), Malformed> {
        let header = input::read_metric_header(m)?;
        let cumulative = |t: i32| match t {
            t if t == AggregationTemporality::Cumulative as i32 => Some(true),
            t if t == AggregationTemporality::Delta as i32 => Some(false),
            _ => None,
        };
        let kind = match header.data {
            Some((5, _)) => Some(Kind::Gauge),
            Some((7, data)) => {
                let (temporality, monotonic) = input::read_shape(data)?;
                cumulative(temporality).map(|cumulative| Kind::Sum {
                    cumulative,
                    monotonic,
                })
            }
            Some((9, data)) => {
                let (temporality, _) = input::read_shape(data)?;
                cumulative(temporality).map(|cumulative| Kind::Histogram { cumulative })
            }
            _ => None,
        };
        let (Some(kind), Some((_, data))) = (kind, header.data) else {
            let mut metric = Metric::decode(m)?;
            self.pass_or_drop(&mut metric, origin.resource_changed, rules, now);
            if metric.data.as_ref().is_some_and(has_points) {
                passed.push(metric);
            }
            return Ok(());
        };
        let mut desc = Key::new();
        header.name.hash(&mut desc);
        header.unit.hash(&mut desc);
        kind.hash(&mut desc);
        let desc = desc.finish128();
        let prefix = |resource: u128| {
            let mut k = Key::new();
            resource.hash(&mut k);
            origin.scope_key.hash(&mut k);
            desc.hash(&mut k);
            k.finish128()
        };
        let ctx = MetricContext {
            source_prefix: prefix(origin.source_resource),
            stream_key: prefix(origin.out_resource),
            origin,
            metric: &header,
            kind,
        };
        let mut attrs = Vec::new();
        for p in input::points(data) {
            attrs.clear();
            let p = p?;
            let result = match kind {
                Kind::Histogram { .. } => HistogramDataPoint::decode(p)
                    .map_err(Malformed::from)
                    .and_then(|point| {
                        input::read_attrs(p, 9, &mut attrs)?;
                        self.ingest_histogram(&ctx, point, &attrs, rules, now)
                    }),
                _ => input::read_number_point(p, &mut attrs)
                    .and_then(|point| self.ingest_number(&ctx, point, &attrs, rules, now)),
            };
            if let Err(e) = result {
                self.malformed(&e);
            }
        }
        Ok(())
    }

    /// Summaries, exponential histograms and sums of unspecified temporality are not merged:
    /// they pass (with their rewritten labels) when no label is removed, and are dropped and
    /// counted otherwise.
    fn pass_or_drop(
        &mut self,
        m: &mut Metric,
        resource_changed: bool,
        rules: &mut impl LabelRules,
        now: Instant,
    ) {
        let name = m.name.clone();
        let mut keep = |attributes: &mut Vec<KeyValue>, reason: DropReason| {
            if rules.observes() {
                let encoded: Vec<Vec<u8>> = attributes.iter().map(Message::encode_to_vec).collect();
                let raw: Vec<RawAttr> = attributes
                    .iter()
                    .zip(&encoded)
                    .map(|(kv, encoded)| RawAttr {
                        key: &kv.key,
                        encoded,
                    })
                    .collect();
                rules.observe(&name, &raw, now);
            }
            let mut rewritten = attributes.clone();
            let removed = rules.rewrite(&name, &mut rewritten, now);
            if resource_changed || removed > 0 {
                self.metrics.dropped(reason).add(1);
                return false;
            }
            *attributes = rewritten;
            true
        };
        match &mut m.data {
            Some(metric::Data::Summary(s)) => s
                .data_points
                .retain_mut(|p| keep(&mut p.attributes, DropReason::Summary)),
            Some(metric::Data::ExponentialHistogram(e)) => e
                .data_points
                .retain_mut(|p| keep(&mut p.attributes, DropReason::ExponentialHistogram)),
            Some(metric::Data::Sum(s)) => s
                .data_points
                .retain_mut(|p| keep(&mut p.attributes, DropReason::UnspecifiedTemporality)),
            Some(metric::Data::Histogram(h)) => h
                .data_points
                .retain_mut(|p| keep(&mut p.attributes, DropReason::UnspecifiedTemporality)),
            _ => {}
        }
    }

    fn ingest_number(
        &mut self,
        ctx: &MetricContext,
        p: NumberPoint,
        attrs: &[RawAttr<'_>],
        rules: &mut impl LabelRules,
        now: Instant,
    ) -> Result<(), Malformed> {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return Ok(());
        }
        let Some(value) = p.value else {
            return Ok(());
        };
        let Some((source_key, output_id, stamp)) = self.seen(ctx, attrs, None, rules, now)? else {
            return Ok(());
        };
        let (Some(source), Some(output)) = (
            self.sources.get_mut(&source_key),
            self.outputs.get_mut(&output_id),
        ) else {
            return Ok(());
        };
        let contributed = match &mut output.value {
            Value::Gauge(latest) => {
                let entry = latest.entry(source.id).or_insert((p.time, value));
                if p.time >= entry.0 {
                    *entry = (p.time, value);
                }
                true
            }
            Value::DeltaSum(total) => {
                *total = Some(total.map_or(value, |t| t.add(value)));
                output.start = output.start.min(p.start);
                true
            }
            Value::CumulativeSum(total) => {
                let monotonic = matches!(
                    ctx.kind,
                    Kind::Sum {
                        monotonic: true,
                        ..
                    }
                );
                let emitted = output.last_emitted != 0;
                match cumulative_number(
                    &mut source.previous,
                    &p,
                    value,
                    monotonic,
                    emitted,
                    output.start,
                ) {
                    Some(delta) => {
                        if !emitted && (total.is_none() || p.start < output.start) {
                            output.start = p.start;
                        }
                        *total = Some(total.map_or(delta, |t| t.add(delta)));
                        true
                    }
                    None => false,
                }
            }
            Value::CumulativeHistogram(_) | Value::DeltaHistogram(_) => false,
        };
        if contributed {
            mark_pending(output, output_id, &mut self.pending, p.time, stamp);
        }
        Ok(())
    }

    fn ingest_histogram(
        &mut self,
        ctx: &MetricContext,
        p: HistogramDataPoint,
        attrs: &[RawAttr<'_>],
        rules: &mut impl LabelRules,
        now: Instant,
    ) -> Result<(), Malformed> {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return Ok(());
        }
        if p.bucket_counts.len() != p.explicit_bounds.len() + 1 && !p.bucket_counts.is_empty() {
            self.metrics.dropped(DropReason::HistogramBounds).add(1);
            return Ok(());
        }
        let bounds = Some(&p.explicit_bounds[..]);
        let Some((source_key, output_id, stamp)) = self.seen(ctx, attrs, bounds, rules, now)?
        else {
            return Ok(());
        };
        let (Some(source), Some(output)) = (
            self.sources.get_mut(&source_key),
            self.outputs.get_mut(&output_id),
        ) else {
            return Ok(());
        };
        let bounds_match = |total: &HistogramTotal| {
            total.bounds == p.explicit_bounds
                && (p.bucket_counts.is_empty() || total.buckets.len() == p.bucket_counts.len())
        };
        let contributed = match &mut output.value {
            Value::DeltaHistogram(total) => {
                if !bounds_match(total) {
                    self.metrics.dropped(DropReason::HistogramBounds).add(1);
                    return Ok(());
                }
                total.add(p.count, p.sum, &p.bucket_counts);
                total.min = min_opt(total.min, p.min);
                total.max = max_opt(total.max, p.max);
                output.start = output.start.min(p.start_time_unix_nano);
                true
            }
            Value::CumulativeHistogram(total) => {
                if !bounds_match(total) {
                    self.metrics.dropped(DropReason::HistogramBounds).add(1);
                    return Ok(());
                }
                let emitted = output.last_emitted != 0;
                let fresh = total.count == 0 && !output.pending && !emitted;
                match cumulative_histogram(&mut source.previous, &p, emitted, output.start) {
                    Some((count, sum, buckets)) => {
                        if !emitted && (fresh || p.start_time_unix_nano < output.start) {
                            output.start = p.start_time_unix_nano;
                        }
                        total.add(count, sum, &buckets);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if contributed {
            mark_pending(
                output,
                output_id,
                &mut self.pending,
                p.time_unix_nano,
                stamp,
            );
        }
        Ok(())
    }

    /// A point of a source series arrived: finds or creates the series (showing its label
    /// values to the rules when due) and marks it seen. Returns its key, its output's id and
    /// the stamp of `now`; `None` when it has no output.
    fn seen(
        &mut self,
        ctx: &MetricContext,
        attrs: &[RawAttr<'_>],
        bounds: Option<&[f64]>,
        rules: &mut impl LabelRules,
        now: Instant,
    ) -> Result<Option<(Id, u64, Stamp)>, Malformed> {
        let key = self.source_key(ctx, attrs);
        let stamp = self.stamp(now);
        self.observe(ctx, key, attrs, rules, now);
        let Some(source_key) = self.source_for(ctx, key, attrs, bounds, rules, now)? else {
            return Ok(None);
        };
        let Some(source) = self.sources.get_mut(&source_key) else {
            return Ok(None);
        };
        source.last_seen = stamp;
        self.metrics
            .labels_dropped
            .add(u64::from(source.labels_dropped));
        Ok(Some((source_key, source.output, stamp)))
    }

    /// The identity of a point's source series: its metric's and its encoded attributes'.
    fn source_key(&self, ctx: &MetricContext, attrs: &[RawAttr<'_>]) -> Id {
        let mut k = Key::new();
        ctx.source_prefix.hash(&mut k);
        hash_raw_attributes(&mut k, attrs);
        Id::from(k.finish128())
    }

    /// Shows a point's label values to the rules that count them: every point of a new
    /// series, then a series' values at most once per sweep interval (a tenth of `window`).
    /// A value carried by a live series is therefore never forgotten, and one whose last
    /// series stopped is forgotten up to a tenth of `window` early.
    fn observe(
        &mut self,
        ctx: &MetricContext,
        key: Id,
        attrs: &[RawAttr<'_>],
        rules: &mut impl LabelRules,
        now: Instant,
    ) {
        if !rules.observes() {
            return;
        }
        let interval = self.sweep_interval();
        let stamp = self.stamp(now);
        if let Some(s) = self.sources.get_mut(&key) {
            if stamp.since(s.observed) < interval {
                return;
            }
            s.observed = stamp;
        }
        rules.observe(ctx.metric.name, attrs, now);
    }

    /// Finds or creates the source series of a point and, for a new one, its output series.
    /// A known series is found by a hash of its encoded attributes, which are decoded only
    /// for a new one.
    fn source_for(
        &mut self,
        ctx: &MetricContext,
        key: Id,
        attrs: &[RawAttr<'_>],
        bounds: Option<&[f64]>,
        rules: &mut impl LabelRules,
        now: Instant,
    ) -> Result<Option<Id>, Malformed> {
        if self.sources.contains_key(&key) {
            return Ok(Some(key));
        }
        let attributes = attrs
            .iter()
            .map(RawAttr::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let mut rewritten = attributes.clone();
        let labels_dropped = rules.rewrite(ctx.metric.name, &mut rewritten, now);
        rewritten.sort_by(|a, b| a.key.cmp(&b.key));
        let stream = self.stream_for(ctx);
        let Some(output) = self.output_for(stream, rewritten, &attributes, bounds, now) else {
            return Ok(None);
        };
        if let Some(o) = self.outputs.get_mut(&output) {
            o.sources += 1;
        }
        let id = self.next_id();
        let stamp = self.stamp(now);
        self.sources.insert(
            key,
            Source {
                id,
                output,
                last_seen: stamp,
                observed: stamp,
                labels_dropped: labels_dropped.try_into().unwrap_or(u32::MAX),
                previous: Previous::None,
            },
        );
        Ok(Some(key))
    }

    fn stream_for(&mut self, ctx: &MetricContext) -> u64 {
        if let Some(id) = self.stream_index.get(&ctx.stream_key) {
            return *id;
        }
        let id = self.next_id();
        self.stream_index.insert(ctx.stream_key, id);
        self.streams.insert(
            id,
            Stream {
                key: ctx.stream_key,
                group: ctx.origin.group,
                resource: ctx.origin.resource.clone(),
                resource_schema_url: ctx.origin.resource_schema_url.to_string(),
                scope: ctx.origin.scope.clone(),
                scope_schema_url: ctx.origin.scope_schema_url.to_string(),
                name: ctx.metric.name.to_string(),
                description: ctx.metric.description.to_string(),
                unit: ctx.metric.unit.to_string(),
                metadata: ctx.metric.metadata.clone(),
                kind: ctx.kind,
                series: HashMap::default(),
                normal_series: 0,
            },
        );
        id
    }

    /// The output series for a new source: its rewritten labels, unless the metric is at its
    /// series limit (then the overflow series), or a histogram's bounds differ from that
    /// output's (then its original labels).
    fn output_for(
        &mut self,
        stream_id: u64,
        rewritten: Vec<KeyValue>,
        original: &[KeyValue],
        bounds: Option<&[f64]>,
        now: Instant,
    ) -> Option<u64> {
        let (key, attributes, overflow) = {
            let stream = self.streams.get(&stream_id)?;
            let key = attributes_key(&rewritten);
            let limit = self.settings.max_series_per_metric;
            let at_limit = limit > 0 && stream.normal_series + 1 >= limit;
            match stream.series.get(&key) {
                Some(existing) => {
                    let o = self.outputs.get(existing)?;
                    match (bounds, &o.value) {
                        (Some(b), Value::CumulativeHistogram(t) | Value::DeltaHistogram(t))
                            if t.bounds != b =>
                        {
                            self.metrics.histogram_bounds_mismatch.add(1);
                            let mut kept = original.to_vec();
                            kept.sort_by(|a, b| a.key.cmp(&b.key));
                            let key = attributes_key(&kept);
                            match stream.series.get(&key) {
                                Some(id) => return Some(*id),
                                None => (key, kept, false),
                            }
                        }
                        _ => return Some(*existing),
                    }
                }
                None if at_limit => {
                    self.metrics.series_overflowed.add(1);
                    let attributes = vec![KeyValue {
                        key: OVERFLOW_ATTRIBUTE.to_string(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::BoolValue(true)),
                        }),
                        ..Default::default()
                    }];
                    let key = attributes_key(&attributes);
                    if let Some(id) = stream.series.get(&key) {
                        return Some(*id);
                    }
                    (key, attributes, true)
                }
                None => (key, rewritten, false),
            }
        };
        let id = self.next_id();
        let stream = self.streams.get_mut(&stream_id)?;
        let histogram = || HistogramTotal {
            bounds: bounds.unwrap_or_default().to_vec(),
            buckets: vec![0; bounds.map_or(0, |b| b.len() + 1)],
            has_sum: true,
            ..Default::default()
        };
        let start = match stream.kind {
            Kind::Sum {
                cumulative: false, ..
            }
            | Kind::Histogram { cumulative: false } => UNSET,
            _ => 0,
        };
        let value = match stream.kind {
            Kind::Gauge => Value::Gauge(Box::default()),
            Kind::Sum {
                cumulative: true, ..
            } => Value::CumulativeSum(None),
            Kind::Sum { .. } => Value::DeltaSum(None),
            Kind::Histogram { cumulative: true } => {
                Value::CumulativeHistogram(Box::new(histogram()))
            }
            Kind::Histogram { cumulative: false } => Value::DeltaHistogram(Box::new(histogram())),
        };
        stream.series.insert(key, id);
        if !overflow {
            stream.normal_series += 1;
        }
        let last_seen = self.stamp(now);
        self.outputs.insert(
            id,
            Output {
                stream: stream_id,
                key: Id::from(key),
                attrs: encode_attributes(&attributes).into_boxed_slice(),
                overflow,
                pending: false,
                sources: 0,
                last_seen,
                start,
                latest: 0,
                last_emitted: 0,
                value,
            },
        );
        Some(id)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// When `tick` should next run: the next flush, if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            None
        } else {
            self.next_flush
        }
    }

    /// Emits what is pending if the flush interval has passed.
    pub fn tick(&mut self, rules: &mut impl LabelRules, now: Instant) -> Option<Vec<u8>> {
        self.maybe_sweep(rules, now);
        if self.next_flush.is_some_and(|t| t <= now) {
            self.emit()
        } else {
            None
        }
    }

    /// One point per output series that received data since the last flush. A stream's
    /// points are written together into one reused buffer and framed straight into the
    /// request of its resource and scope, so no stream's points are held twice.
    pub fn emit(&mut self) -> Option<Vec<u8>> {
        self.next_flush = None;
        if self.pending.is_empty() {
            return None;
        }
        // Pending outputs by stream (streams in the order they were made), then by id.
        let mut order = std::mem::take(&mut self.pending);
        order.sort_unstable();
        let aggregation = self.settings.gauge_aggregation;
        let mut groups: Vec<GroupOut> = Vec::new();
        let mut group_slot: HashMap<u128, usize> = HashMap::default();
        let mut points = Vec::new();
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            points.clear();
            for &(_, id) in run {
                if let Some(output) = self.outputs.get_mut(&id) {
                    write_point(output, aggregation, &mut points);
                }
            }
            let Some(stream) = self.streams.get(&run[0].0) else {
                continue;
            };
            if points.is_empty() {
                continue;
            }
            let slot = *group_slot.entry(stream.group).or_insert_with(|| {
                groups.push(GroupOut::new(stream));
                groups.len() - 1
            });
            write_metric(stream, &points, &mut groups[slot].out);
        }
        drop(points);
        let mut request = Vec::new();
        for group in groups {
            append_resource_metrics(&mut request, group.finish());
        }
        (!request.is_empty()).then_some(request)
    }

    fn maybe_sweep(&mut self, rules: &mut impl LabelRules, now: Instant) {
        match self.next_sweep {
            None => {
                self.next_sweep = Some(now + self.sweep_interval());
            }
            Some(t) if t <= now => {
                self.sweep(rules, now);
                self.next_sweep = Some(now + self.sweep_interval());
            }
            Some(_) => {}
        }
    }

    fn stamp(&self, now: Instant) -> Stamp {
        Stamp(now.saturating_duration_since(self.epoch).as_nanos() as u64)
    }

    fn sweep_interval(&self) -> Duration {
        (self.settings.window / 10).max(Duration::from_secs(1))
    }

    /// Forgets sources idle for `window`, then outputs with no source left and nothing
    /// pending, then empty streams.
    pub fn sweep(&mut self, rules: &mut impl LabelRules, now: Instant) {
        rules.sweep(now);
        let window = self.settings.window;
        let now = self.stamp(now);
        let outputs = &mut self.outputs;
        self.sources.retain(|_, s| {
            let keep = now.since(s.last_seen) < window;
            if !keep && let Some(o) = outputs.get_mut(&s.output) {
                o.sources = o.sources.saturating_sub(1);
            }
            keep
        });
        let streams = &mut self.streams;
        outputs.retain(|_, o| {
            let keep = o.sources > 0 || o.pending || now.since(o.last_seen) < window;
            if !keep && let Some(s) = streams.get_mut(&o.stream) {
                s.series.remove(&u128::from(o.key));
                if !o.overflow {
                    s.normal_series = s.normal_series.saturating_sub(1);
                }
            }
            keep
        });
        let index = &mut self.stream_index;
        streams.retain(|_, s| {
            let keep = !s.series.is_empty();
            if !keep {
                index.remove(&s.key);
            }
            keep
        });
        self.metrics.source_series.set(self.sources.len() as i64);
        self.metrics.active_series.set(self.outputs.len() as i64);
    }

    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.sources.len(), self.outputs.len(), self.streams.len())
    }
}

fn mark_pending(
    output: &mut Output,
    id: u64,
    pending: &mut Vec<(u64, u64)>,
    time: u64,
    now: Stamp,
) {
    output.last_seen = now;
    output.latest = output.latest.max(time);
    if !output.pending {
        output.pending = true;
        pending.push((output.stream, id));
    }
}

/// Writes the point an output emits now, if it has anything to say.
fn write_point(output: &mut Output, aggregation: GaugeAggregation, out: &mut Vec<u8>) {
    output.pending = false;
    // Never the same timestamp twice, even at the millisecond resolution of Prometheus.
    let time = if output.last_emitted == 0 {
        output.latest
    } else {
        output
            .latest
            .max((output.last_emitted / NANOS_PER_MILLI + 1) * NANOS_PER_MILLI)
    };
    let delta_start = match (output.last_emitted, output.start) {
        (0, UNSET) => 0,
        (0, start) => start,
        (last, _) => last,
    };
    let attrs = &output.attrs;
    fn histogram(total: &HistogramTotal, min_max: bool) -> HistogramValues<'_> {
        HistogramValues {
            count: total.count,
            sum: total.has_sum.then_some(total.sum),
            bucket_counts: &total.buckets,
            bounds: &total.bounds,
            min: total.min.filter(|_| min_max),
            max: total.max.filter(|_| min_max),
        }
    }
    match &mut output.value {
        Value::CumulativeSum(total) => {
            let Some(total) = *total else { return };
            write_number_point(attrs, output.start, time, total, 0, out);
        }
        Value::DeltaSum(total) => {
            let Some(value) = total.take() else { return };
            write_number_point(attrs, delta_start, time, value, 0, out);
        }
        Value::Gauge(latest) => {
            let Some(value) = combine_gauges(latest, aggregation) else {
                return;
            };
            latest.clear();
            write_number_point(attrs, 0, time, value, 0, out);
        }
        Value::CumulativeHistogram(total) => {
            write_histogram_point(attrs, output.start, time, &histogram(total, false), 0, out);
        }
        Value::DeltaHistogram(total) => {
            write_histogram_point(attrs, delta_start, time, &histogram(total, true), 0, out);
            total.reset();
        }
    }
    output.last_emitted = time;
    output.latest = 0;
}

/// The temporality and monotonicity fields that end a sum's or histogram's data.
fn data_tail(kind: Kind) -> Vec<u8> {
    let temporality = |cumulative: bool| {
        if cumulative {
            AggregationTemporality::Cumulative as u64
        } else {
            AggregationTemporality::Delta as u64
        }
    };
    let mut out = Vec::new();
    match kind {
        Kind::Gauge => {}
        Kind::Sum {
            cumulative,
            monotonic,
        } => {
            write_varint_field(2, temporality(cumulative), &mut out);
            if monotonic {
                write_varint_field(3, 1, &mut out);
            }
        }
        Kind::Histogram { cumulative } => write_varint_field(2, temporality(cumulative), &mut out),
    }
    out
}

fn metadata_len(stream: &Stream) -> usize {
    stream
        .metadata
        .iter()
        .map(|kv| len_field_len(12, kv.encoded_len()))
        .sum()
}

/// A metric's name, description and unit fields and the header of its data field, whose
/// payload (points and data tail) is `data_len` bytes.
fn metric_header(stream: &Stream, data_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, s) in [
        (1, &stream.name),
        (2, &stream.description),
        (3, &stream.unit),
    ] {
        if !s.is_empty() {
            write_len_field(field, s.as_bytes(), &mut out);
        }
    }
    let data_field = match stream.kind {
        Kind::Gauge => 5,
        Kind::Sum { .. } => 7,
        Kind::Histogram { .. } => 9,
    };
    write_len_header(data_field, data_len, &mut out);
    out
}

/// Attributes encoded as a number point's attributes fields.
fn encode_attributes(attributes: &[KeyValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for kv in attributes {
        prost::encoding::message::encode(ATTRIBUTES, kv, &mut out);
    }
    out
}

/// One resource and scope's `ResourceMetrics` being written: room for its headers, then
/// complete `ScopeMetrics.metrics` fields.
struct GroupOut {
    resource: Vec<u8>,
    scope: Vec<u8>,
    resource_schema_url: String,
    scope_schema_url: String,
    headroom: usize,
    out: Vec<u8>,
}

impl GroupOut {
    fn new(first: &Stream) -> GroupOut {
        let resource = first.resource.encode_to_vec();
        let scope = first.scope.encode_to_vec();
        let headroom = resource_headroom(&resource, &scope);
        GroupOut {
            resource,
            scope,
            resource_schema_url: first.resource_schema_url.clone(),
            scope_schema_url: first.scope_schema_url.clone(),
            headroom,
            out: vec![0; headroom],
        }
    }

    fn finish(self) -> (Vec<u8>, usize) {
        frame_resource_metrics(
            self.out,
            self.headroom,
            &self.resource,
            &self.scope,
            &self.scope_schema_url,
            &self.resource_schema_url,
        )
    }
}

/// A stream's points as a complete `ScopeMetrics.metrics` field.
fn write_metric(stream: &Stream, points: &[u8], out: &mut Vec<u8>) {
    let tail = data_tail(stream.kind);
    let header = metric_header(stream, points.len() + tail.len());
    let len = header.len() + points.len() + tail.len() + metadata_len(stream);
    write_len_header(2, len, out);
    out.extend_from_slice(&header);
    out.extend_from_slice(points);
    out.extend_from_slice(&tail);
    for kv in &stream.metadata {
        prost::encoding::message::encode(12, kv, out);
    }
}

fn combine_gauges(latest: &HashMap<u64, (u64, Num)>, aggregation: GaugeAggregation) -> Option<Num> {
    let mut values = latest.values();
    let first = *values.next()?;
    let combined = values.fold(first, |acc, v| match aggregation {
        GaugeAggregation::Last => {
            if v.0 > acc.0 {
                *v
            } else {
                acc
            }
        }
        GaugeAggregation::Sum => (acc.0.max(v.0), acc.1.add(v.1)),
        GaugeAggregation::Max => {
            if acc.1.less_than(v.1) {
                (acc.0.max(v.0), v.1)
            } else {
                (acc.0.max(v.0), acc.1)
            }
        }
        GaugeAggregation::Min => {
            if v.1.less_than(acc.1) {
                (acc.0.max(v.0), v.1)
            } else {
                (acc.0.max(v.0), acc.1)
            }
        }
    });
    Some(combined.1)
}

/// How much a cumulative number point adds to its output; `None` for a point to ignore
/// (a repeat, or older than what was seen).
fn cumulative_number(
    previous: &mut Previous,
    p: &NumberPoint,
    value: Num,
    monotonic: bool,
    output_emitted: bool,
    output_start: u64,
) -> Option<Num> {
    let (start, time) = (p.start, p.time);
    let delta = match previous {
        Previous::Number {
            start: s,
            time: t,
            value: v,
        } => {
            if start < *s || (start == *s && time <= *t) {
                return None;
            }
            let reset = start > *s || (monotonic && value.less_than(*v));
            if reset { value } else { value.sub(*v) }
        }
        // A series that began before its output was first sent has history the output's
        // start does not cover: only its increments from now on count.
        _ if output_emitted && start < output_start => value.zero_like(),
        _ => value,
    };
    *previous = Previous::Number { start, time, value };
    Some(delta)
}

type HistogramDelta = (u64, Option<f64>, Vec<u64>);

fn cumulative_histogram(
    previous: &mut Previous,
    p: &HistogramDataPoint,
    output_emitted: bool,
    output_start: u64,
) -> Option<HistogramDelta> {
    let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
    let delta = match previous {
        Previous::Histogram(h) => {
            let PreviousHistogram {
                start: s,
                time: t,
                count,
                sum,
                buckets,
            } = h.as_ref();
            if start < *s || (start == *s && time <= *t) {
                return None;
            }
            let reset = start > *s
                || p.count < *count
                || buckets.len() != p.bucket_counts.len()
                || buckets.iter().zip(&p.bucket_counts).any(|(a, b)| b < a);
            if reset {
                (p.count, p.sum, p.bucket_counts.clone())
            } else {
                (
                    p.count - *count,
                    p.sum.map(|x| x - *sum),
                    p.bucket_counts
                        .iter()
                        .zip(buckets.iter())
                        .map(|(b, a)| b - a)
                        .collect(),
                )
            }
        }
        _ if output_emitted && start < output_start => {
            (0, p.sum.map(|_| 0.0), vec![0; p.bucket_counts.len()])
        }
        _ => (p.count, p.sum, p.bucket_counts.clone()),
    };
    *previous = Previous::Histogram(Box::new(PreviousHistogram {
        start,
        time,
        count: p.count,
        sum: p.sum.unwrap_or(0.0),
        buckets: p.bucket_counts.clone(),
    }));
    Some(delta)
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn has_points(data: &metric::Data) -> bool {
    match data {
        metric::Data::Gauge(g) => !g.data_points.is_empty(),
        metric::Data::Sum(s) => !s.data_points.is_empty(),
        metric::Data::Histogram(h) => !h.data_points.is_empty(),
        metric::Data::ExponentialHistogram(e) => !e.data_points.is_empty(),
        metric::Data::Summary(s) => !s.data_points.is_empty(),
    }
}

/// A 128-bit hash from two differently seeded series hashes: identities are kept as hashes,
/// not copies of every label, and 128 bits make a collision practically impossible.
struct Key(SeriesHasher, SeriesHasher);

impl Key {
    fn new() -> Key {
        Key(SeriesHasher::new(), SeriesHasher::with_seed(0x5eed))
    }

    fn finish128(&self) -> u128 {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

impl Hasher for Key {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }

    fn write_u8(&mut self, i: u8) {
        self.0.write_u8(i);
        self.1.write_u8(i);
    }

    fn write_u64(&mut self, i: u64) {
        self.0.write_u64(i);
        self.1.write_u64(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.0.write_u128(i);
        self.1.write_u128(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.0.write_usize(i);
        self.1.write_usize(i);
    }
}

fn attributes_key(attributes: &[KeyValue]) -> u128 {
    let mut k = Key::new();
    hash_attributes(&mut k, attributes);
    k.finish128()
}

/// Hashes encoded attributes in key order, so the order they arrive in does not matter.
fn hash_raw_attributes(h: &mut impl Hasher, attrs: &[RawAttr<'_>]) {
    attrs.len().hash(h);
    if attrs.is_sorted_by(|a, b| a.key <= b.key) {
        attrs.iter().for_each(|a| a.encoded.hash(h));
    } else {
        let mut sorted: Vec<&RawAttr> = attrs.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(b.key));
        sorted.iter().for_each(|a| a.encoded.hash(h));
    }
}

/// Hashes attributes in key order, so the order they arrive in does not matter.
fn hash_attributes(h: &mut impl Hasher, attributes: &[KeyValue]) {
    let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted.len().hash(h);
    for kv in sorted {
        kv.key.hash(h);
        hash_value(h, kv.value.as_ref());
    }
}

pub(crate) fn hash_value(h: &mut impl Hasher, value: Option<&AnyValue>) {
    match value.and_then(|v| v.value.as_ref()) {
        None => 0u8.hash(h),
        Some(any_value::Value::StringValue(s)) => {
            1u8.hash(h);
            s.hash(h);
        }
        Some(any_value::Value::BoolValue(b)) => {
            2u8.hash(h);
            b.hash(h);
        }
        Some(any_value::Value::IntValue(i)) => {
            3u8.hash(h);
            i.hash(h);
        }
        Some(any_value::Value::DoubleValue(d)) => {
            4u8.hash(h);
            d.to_bits().hash(h);
        }
        Some(any_value::Value::ArrayValue(a)) => {
            5u8.hash(h);
            a.values.len().hash(h);
            for v in &a.values {
                hash_value(h, Some(v));
            }
        }
        Some(any_value::Value::KvlistValue(l)) => {
            6u8.hash(h);
            hash_attributes(h, &l.values);
        }
        Some(any_value::Value::BytesValue(b)) => {
            7u8.hash(h);
            b.hash(h);
        }
        Some(any_value::Value::StringValueStrindex(i)) => {
            8u8.hash(h);
            i.hash(h);
        }
    }
}
