//! One scrape → one OTLP `ExportMetricsServiceRequest`, as the collector's prometheus
//! receiver builds it: target labels merged (`honor_labels`), `metric_relabel_configs`,
//! limits, counters as cumulative monotonic sums with start times (`_created`, else first
//! seen; a decrease is a reset), histograms and summaries folded into one point per series,
//! staleness as `FLAG_NO_RECORDED_VALUE` points, and the `up`/`scrape_*` series.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::config::Job;
use super::parser::{Exposition, Family, MetricType};
use super::relabel::{self, Labels};
use crate::hash::{FxHashMap, SeriesHasher};
use crate::otlp::string_kv;

/// A label set borrowing from the scraped body and the target where it can.
type CowLabels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Prometheus' staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
const NO_RECORDED_VALUE: u32 = 1;
const SCOPE_NAME: &str =
    "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
enum Kind {
    #[default]
    Gauge,
    Sum,
    Histogram,
    Summary,
}

type ResKey = (String, String);
/// A resource (`job`, `instance`) as borrowed while building.
type ResRef<'a> = (&'a str, &'a str);

/// What is remembered of a series between scrapes.
struct Series {
    generation: u64,
    start_ns: u64,
    /// The value (sums) or count (histograms, summaries) last seen, to detect resets.
    last: f64,
    resource: ResKey,
    name: String,
    kind: Kind,
    attributes: Vec<KeyValue>,
}

/// Per-target memory: known series (for start times, resets and staleness).
#[derive(Default)]
pub struct TargetState {
    series: FxHashMap<u64, Series>,
    generation: u64,
}

pub struct Built {
    pub request: ExportMetricsServiceRequest,
    pub points: usize,
}

/// Why a scrape that returned a body still failed.
#[derive(Debug, PartialEq, Eq)]
pub struct LimitExceeded(pub String);

/// A scraped target: its final labels (with `job` and `instance`) and scheme.
#[derive(Clone, Debug)]
pub struct Target {
    pub labels: Labels,
    pub scheme: String,
}

impl Target {
    fn get(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn res_key(&self) -> ResRef<'_> {
        (self.get("job"), self.get("instance"))
    }
}

impl TargetState {
    pub fn tracked_series(&self) -> usize {
        self.series.len()
    }

    /// Converts a parsed body. On a limit violation nothing is kept and the caller reports
    /// the scrape as failed (see [`TargetState::failed`]).
    pub fn scraped(
        &mut self,
        job: &Job,
        target: &Target,
        exposition: &Exposition<'_>,
        scrape_ms: i64,
        duration_secs: f64,
    ) -> Result<Built, LimitExceeded> {
        let prepared = prepare(job, target, exposition)?;
        self.generation += 1;
        let generation = self.generation;
        let scrape_ns = ms_to_ns(scrape_ms);
        let mut b = Builder::default();
        let mut compound: FxHashMap<u64, usize> = FxHashMap::default();
        let mut accums: Vec<Accum> = Vec::new();
        let mut added = 0u64;

        for p in &prepared {
            let family = &exposition.families[p.family];
            let name = get(&p.labels, "__name__");
            let res: ResRef = (get(&p.labels, "job"), get(&p.labels, "instance"));
            let ts_ns = match p.timestamp_ms {
                Some(ms) if job.honor_timestamps => ms_to_ns(ms),
                _ => scrape_ns,
            };
            let compound_kind = match family.kind {
                MetricType::Counter if family.owns(name) => Some(Kind::Sum),
                MetricType::Histogram if family.owns(name) => Some(Kind::Histogram),
                MetricType::Summary if family.owns(name) => Some(Kind::Summary),
                _ => None,
            };
            let Some(kind) = compound_kind else {
                let (r, m) = b.metric(res, name, Kind::Gauge, Some(family));
                let attributes = attributes(&p.labels, None);
                if self
                    .track(
                        res,
                        name,
                        Kind::Gauge,
                        &attributes,
                        generation,
                        ts_ns,
                        p.value,
                        None,
                    )
                    .1
                {
                    added += 1;
                }
                b.push_number(r, m, attributes, ts_ns, 0, p.value);
                continue;
            };
            let suffix = &name[family.name.len()..];
            let skip = match kind {
                Kind::Histogram => Some("le"),
                Kind::Summary => Some("quantile"),
                _ => None,
            };
            let (r, m) = b.metric(res, family.name, kind, Some(family));
            let mut h = SeriesHasher::new();
            (r, m).hash(&mut h);
            for (k, v) in &p.labels {
                if k != "__name__" && Some(k.as_ref()) != skip {
                    k.hash(&mut h);
                    v.hash(&mut h);
                }
            }
            let index = *compound.entry(h.finish()).or_insert_with(|| {
                accums.push(Accum {
                    resource: r,
                    metric: m,
                    kind,
                    attributes: attributes(&p.labels, skip),
                    ts_ns,
                    ..Accum::default()
                });
                accums.len() - 1
            });
            let a = &mut accums[index];
            match (kind, suffix) {
                (_, "_created") => a.created = Some(p.value),
                (Kind::Sum, "" | "_total") => a.value = Some(p.value),
                (Kind::Histogram, "_bucket") => {
                    if let Some(le) = get_opt(&p.labels, "le").and_then(super::parser::parse_float)
                    {
                        a.buckets.push((le, p.value));
                    }
                }
                (Kind::Summary, "") => {
                    if let Some(q) =
                        get_opt(&p.labels, "quantile").and_then(super::parser::parse_float)
                    {
                        a.buckets.push((q, p.value));
                    }
                }
                (_, "_sum") => a.sum = Some(p.value),
                (_, "_count") => a.count = Some(p.value),
                _ => {}
            }
        }

        for a in accums {
            let progress = match a.kind {
                Kind::Sum => a.value,
                _ => a.count,
            };
            let Some(progress) = progress else { continue };
            let name = b.metric_name(a.resource, a.metric);
            let created_ns = a
                .created
                .filter(|c| c.is_finite() && *c > 0.0)
                .map(|c| (c * 1e9) as u64);
            let (start_ns, is_new) = self.track(
                b.res(a.resource),
                name,
                a.kind,
                &a.attributes,
                generation,
                a.ts_ns,
                progress,
                created_ns,
            );
            if is_new {
                added += 1;
            }
            match a.kind {
                Kind::Sum => b.push_number(
                    a.resource,
                    a.metric,
                    a.attributes,
                    a.ts_ns,
                    start_ns,
                    progress,
                ),
                Kind::Histogram => {
                    let mut buckets = a.buckets;
                    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
                    let mut bounds = Vec::with_capacity(buckets.len());
                    let mut counts = Vec::with_capacity(buckets.len() + 1);
                    let mut previous = 0.0;
                    for (le, cumulative) in &buckets {
                        let delta = (cumulative - previous).max(0.0);
                        previous = *cumulative;
                        counts.push(delta as u64);
                        if le.is_finite() {
                            bounds.push(*le);
                        }
                    }
                    // Without a +Inf bucket the overflow bucket holds what `_count` adds.
                    if buckets.last().is_none_or(|(le, _)| le.is_finite()) {
                        counts.push((progress - previous).max(0.0) as u64);
                    }
                    b.push(
                        a.resource,
                        a.metric,
                        Point::Histogram(HistogramDataPoint {
                            attributes: a.attributes,
                            start_time_unix_nano: start_ns,
                            time_unix_nano: a.ts_ns,
                            count: progress as u64,
                            sum: a.sum,
                            bucket_counts: counts,
                            explicit_bounds: bounds,
                            ..Default::default()
                        }),
                    );
                }
                Kind::Summary => {
                    let mut quantiles = a.buckets;
                    quantiles.sort_by(|x, y| x.0.total_cmp(&y.0));
                    b.push(
                        a.resource,
                        a.metric,
                        Point::Summary(SummaryDataPoint {
                            attributes: a.attributes,
                            start_time_unix_nano: start_ns,
                            time_unix_nano: a.ts_ns,
                            count: progress as u64,
                            sum: a.sum.unwrap_or(0.0),
                            quantile_values: quantiles
                                .into_iter()
                                .map(|(quantile, value)| ValueAtQuantile { quantile, value })
                                .collect(),
                            ..Default::default()
                        }),
                    );
                }
                Kind::Gauge => {}
            }
        }

        self.mark_stale(&mut b, generation, scrape_ns);
        let report = Report {
            up: true,
            duration_secs,
            scraped: exposition.samples.len() as u64,
            post_relabel: prepared.len() as u64,
            added,
        };
        report.emit(&mut b, target, scrape_ns);
        Ok(b.finish(target))
    }

    /// A failed scrape: `up` 0, and every series of the last good scrape goes stale.
    pub fn failed(&mut self, target: &Target, scrape_ms: i64, duration_secs: f64) -> Built {
        self.generation += 1;
        let scrape_ns = ms_to_ns(scrape_ms);
        let mut b = Builder::default();
        self.mark_stale(&mut b, self.generation, scrape_ns);
        Report {
            up: false,
            duration_secs,
            scraped: 0,
            post_relabel: 0,
            added: 0,
        }
        .emit(&mut b, target, scrape_ns);
        b.finish(target)
    }

    /// The target is gone: one stale point for each of its series, which are forgotten.
    pub fn vanished(&mut self, target: &Target, ts_ms: i64) -> Built {
        self.generation += 1;
        let mut b = Builder::default();
        self.mark_stale(&mut b, self.generation, ms_to_ns(ts_ms));
        b.finish(target)
    }

    /// Records a series as seen; returns its start time and whether it is new.
    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        res: ResRef<'_>,
        name: &str,
        kind: Kind,
        attributes: &[KeyValue],
        generation: u64,
        ts_ns: u64,
        progress: f64,
        created_ns: Option<u64>,
    ) -> (u64, bool) {
        let key = series_key(res, name, kind, attributes);
        match self.series.get_mut(&key) {
            Some(s) => {
                s.generation = generation;
                if let Some(c) = created_ns {
                    s.start_ns = c;
                } else if kind != Kind::Gauge && progress < s.last {
                    // A counter reset: a new cumulative interval starts now.
                    s.start_ns = ts_ns;
                }
                s.last = progress;
                (s.start_ns, false)
            }
            None => {
                let start_ns = created_ns.unwrap_or(ts_ns);
                self.series.insert(
                    key,
                    Series {
                        generation,
                        start_ns,
                        last: progress,
                        resource: (res.0.to_string(), res.1.to_string()),
                        name: name.to_string(),
                        kind,
                        attributes: attributes.to_vec(),
                    },
                );
                (start_ns, true)
            }
        }
    }

    /// One no-recorded-value point per series not seen in this scrape, which is forgotten.
    fn mark_stale(&mut self, b: &mut Builder, generation: u64, ts_ns: u64) {
        let stale: Vec<u64> = self
            .series
            .iter()
            .filter(|(_, s)| s.generation != generation)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            let Some(s) = self.series.remove(&key) else {
                continue;
            };
            let (r, m) = b.metric((&s.resource.0, &s.resource.1), &s.name, s.kind, None);
            let point = match s.kind {
                Kind::Gauge | Kind::Sum => Point::Number(NumberDataPoint {
                    attributes: s.attributes,
                    start_time_unix_nano: if s.kind == Kind::Sum { s.start_ns } else { 0 },
                    time_unix_nano: ts_ns,
                    flags: NO_RECORDED_VALUE,
                    value: Some(number_data_point::Value::AsDouble(f64::from_bits(
                        STALE_NAN_BITS,
                    ))),
                    ..Default::default()
                }),
                Kind::Histogram => Point::Histogram(HistogramDataPoint {
                    attributes: s.attributes,
                    start_time_unix_nano: s.start_ns,
                    time_unix_nano: ts_ns,
                    flags: NO_RECORDED_VALUE,
                    ..Default::default()
                }),
                Kind::Summary => Point::Summary(SummaryDataPoint {
                    attributes: s.attributes,
                    start_time_unix_nano: s.start_ns,
                    time_unix_nano: ts_ns,
                    flags: NO_RECORDED_VALUE,
                    ..Default::default()
                }),
            };
            b.push(r, m, point);
        }
    }
}

struct Report {
    up: bool,
    duration_secs: f64,
    scraped: u64,
    post_relabel: u64,
    added: u64,
}

impl Report {
    fn emit(&self, b: &mut Builder, target: &Target, ts_ns: u64) {
        let res = target.res_key();
        let attrs = attributes(&target.labels, None);
        for (name, value) in [
            ("up", if self.up { 1.0 } else { 0.0 }),
            ("scrape_duration_seconds", self.duration_secs),
            ("scrape_samples_scraped", self.scraped as f64),
            (
                "scrape_samples_post_metric_relabeling",
                self.post_relabel as f64,
            ),
            ("scrape_series_added", self.added as f64),
        ] {
            let (r, m) = b.metric(res, name, Kind::Gauge, None);
            b.push_number(r, m, attrs.clone(), ts_ns, 0, value);
        }
    }
}

/// A sample with its final label set (target labels merged, metric relabeling applied).
struct Prepared<'a> {
    family: usize,
    labels: CowLabels<'a>,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn prepare<'a>(
    job: &Job,
    target: &'a Target,
    exposition: &'a Exposition<'_>,
) -> Result<Vec<Prepared<'a>>, LimitExceeded> {
    let mut out = Vec::with_capacity(exposition.samples.len());
    for sample in &exposition.samples {
        let mut labels: CowLabels<'a> =
            Vec::with_capacity(sample.labels.len() + target.labels.len() + 1);
        labels.push((Cow::Borrowed("__name__"), Cow::Borrowed(sample.name)));
        for (k, v) in &sample.labels {
            if !v.is_empty() {
                labels.push((Cow::Borrowed(*k), Cow::Borrowed(v.as_ref())));
            }
        }
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        merge_target_labels(&mut labels, &target.labels, job.honor_labels);
        if !job.metric_relabel.is_empty() {
            let mut owned: Labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if !relabel::apply(&job.metric_relabel, &mut owned) {
                continue;
            }
            labels = owned
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)))
                .collect();
        }
        if get_opt(&labels, "__name__").is_none() {
            continue;
        }
        if job.label_limit > 0 && labels.len() as u64 > job.label_limit {
            return Err(LimitExceeded(format!(
                "label_limit exceeded: a series has {} labels (limit {})",
                labels.len(),
                job.label_limit
            )));
        }
        for (k, v) in &labels {
            if job.label_name_length_limit > 0 && k.len() as u64 > job.label_name_length_limit {
                return Err(LimitExceeded(format!(
                    "label_name_length_limit exceeded by `{k}`"
                )));
            }
            if job.label_value_length_limit > 0 && v.len() as u64 > job.label_value_length_limit {
                return Err(LimitExceeded(format!(
                    "label_value_length_limit exceeded by the value of `{k}`"
                )));
            }
        }
        out.push(Prepared {
            family: sample.family,
            labels,
            value: sample.value,
            timestamp_ms: sample.timestamp_ms,
        });
        if job.sample_limit > 0 && out.len() as u64 > job.sample_limit {
            return Err(LimitExceeded(format!(
                "sample_limit exceeded (limit {})",
                job.sample_limit
            )));
        }
    }
    Ok(out)
}

/// Prometheus' rule: with `honor_labels` the scraped value wins; otherwise the target's does
/// and a conflicting scraped label is kept as `exported_<name>`.
fn merge_target_labels<'a>(labels: &mut CowLabels<'a>, target: &'a Labels, honor_labels: bool) {
    for (name, value) in target {
        match labels.binary_search_by(|(k, _)| k.as_ref().cmp(name.as_str())) {
            Ok(_) if honor_labels => {}
            Ok(i) => {
                let scraped = std::mem::replace(&mut labels[i].1, Cow::Borrowed(value.as_str()));
                let mut exported = format!("exported_{name}");
                while get_opt(labels, &exported).is_some() {
                    exported = format!("exported_{exported}");
                }
                if !scraped.is_empty() {
                    let at = labels
                        .binary_search_by(|(k, _)| k.as_ref().cmp(exported.as_str()))
                        .unwrap_or_else(|i| i);
                    labels.insert(at, (Cow::Owned(exported), scraped));
                }
            }
            Err(i) => labels.insert(
                i,
                (Cow::Borrowed(name.as_str()), Cow::Borrowed(value.as_str())),
            ),
        }
    }
}

fn get_opt<'a, K: AsRef<str>, V: AsRef<str>>(labels: &'a [(K, V)], name: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(k, _)| k.as_ref().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_ref())
}

fn get<'a, K: AsRef<str>, V: AsRef<str>>(labels: &'a [(K, V)], name: &str) -> &'a str {
    get_opt(labels, name).unwrap_or("")
}

/// Data point attributes: every label but the name, `job`, `instance` and `skip`.
fn attributes<K: AsRef<str>, V: AsRef<str>>(
    labels: &[(K, V)],
    skip: Option<&str>,
) -> Vec<KeyValue> {
    labels
        .iter()
        .filter(|(k, _)| {
            let k = k.as_ref();
            !matches!(k, "__name__" | "job" | "instance") && Some(k) != skip
        })
        .map(|(k, v)| string_kv(k.as_ref(), v.as_ref()))
        .collect()
}

fn series_key(res: ResRef<'_>, name: &str, kind: Kind, attributes: &[KeyValue]) -> u64 {
    let mut h = SeriesHasher::new();
    res.hash(&mut h);
    name.hash(&mut h);
    kind.hash(&mut h);
    for kv in attributes {
        kv.key.hash(&mut h);
        if let Some(AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        }) = &kv.value
        {
            s.hash(&mut h);
        }
    }
    h.finish()
}

fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

#[derive(Default)]
struct Accum {
    resource: usize,
    metric: usize,
    kind: Kind,
    attributes: Vec<KeyValue>,
    ts_ns: u64,
    value: Option<f64>,
    created: Option<f64>,
    sum: Option<f64>,
    count: Option<f64>,
    /// `(le, cumulative count)` for histograms, `(quantile, value)` for summaries.
    buckets: Vec<(f64, f64)>,
}

enum Point {
    Number(NumberDataPoint),
    Histogram(HistogramDataPoint),
    Summary(SummaryDataPoint),
}

struct ResourceBuild {
    key: ResKey,
    metrics: Vec<Metric>,
    kinds: Vec<Kind>,
    index: HashMap<(String, Kind), usize>,
}

#[derive(Default)]
struct Builder {
    resources: Vec<ResourceBuild>,
    points: usize,
    last: Option<(usize, usize)>,
}

impl Builder {
    fn metric(
        &mut self,
        res: ResRef<'_>,
        name: &str,
        kind: Kind,
        family: Option<&Family<'_>>,
    ) -> (usize, usize) {
        // Samples of a family are contiguous: most lookups hit the previous metric.
        if let Some((r, m)) = self.last {
            let rb = &self.resources[r];
            let metric = &rb.metrics[m];
            if metric.name == name && rb.kinds[m] == kind && rb.key.0 == res.0 && rb.key.1 == res.1
            {
                return (r, m);
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
                self.resources.push(ResourceBuild {
                    key: (res.0.to_string(), res.1.to_string()),
                    metrics: Vec::new(),
                    kinds: Vec::new(),
                    index: HashMap::new(),
                });
                self.resources.len() - 1
            }
        };
        let rb = &mut self.resources[r];
        if let Some(&m) = rb.index.get(&(name.to_string(), kind)) {
            self.last = Some((r, m));
            return (r, m);
        }
        let cumulative = AggregationTemporality::Cumulative as i32;
        let data = match kind {
            Kind::Gauge => metric::Data::Gauge(Gauge::default()),
            Kind::Sum => metric::Data::Sum(Sum {
                data_points: Vec::new(),
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
            Kind::Histogram => metric::Data::Histogram(Histogram {
                data_points: Vec::new(),
                aggregation_temporality: cumulative,
            }),
            Kind::Summary => metric::Data::Summary(Summary::default()),
        };
        rb.metrics.push(Metric {
            name: name.to_string(),
            description: family
                .and_then(|f| f.help.as_deref())
                .unwrap_or("")
                .to_string(),
            unit: family.and_then(|f| f.unit).unwrap_or("").to_string(),
            data: Some(data),
            ..Default::default()
        });
        let m = rb.metrics.len() - 1;
        rb.kinds.push(kind);
        rb.index.insert((name.to_string(), kind), m);
        self.last = Some((r, m));
        (r, m)
    }

    fn res(&self, r: usize) -> ResRef<'_> {
        let key = &self.resources[r].key;
        (&key.0, &key.1)
    }

    fn metric_name(&self, r: usize, m: usize) -> &str {
        &self.resources[r].metrics[m].name
    }

    fn push_number(
        &mut self,
        r: usize,
        m: usize,
        attributes: Vec<KeyValue>,
        ts_ns: u64,
        start_ns: u64,
        value: f64,
    ) {
        let flags = if value.to_bits() == STALE_NAN_BITS {
            NO_RECORDED_VALUE
        } else {
            0
        };
        self.push(
            r,
            m,
            Point::Number(NumberDataPoint {
                attributes,
                start_time_unix_nano: start_ns,
                time_unix_nano: ts_ns,
                flags,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            }),
        );
    }

    fn push(&mut self, r: usize, m: usize, point: Point) {
        let Some(data) = &mut self.resources[r].metrics[m].data else {
            return;
        };
        match (data, point) {
            (metric::Data::Gauge(g), Point::Number(p)) => g.data_points.push(p),
            (metric::Data::Sum(s), Point::Number(p)) => s.data_points.push(p),
            (metric::Data::Histogram(h), Point::Histogram(p)) => h.data_points.push(p),
            (metric::Data::Summary(s), Point::Summary(p)) => s.data_points.push(p),
            _ => return,
        }
        self.points += 1;
    }

    fn finish(self, target: &Target) -> Built {
        let resource_metrics = self
            .resources
            .into_iter()
            .map(|rb| ResourceMetrics {
                resource: Some(resource(&rb.key.0, &rb.key.1, &target.scheme)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    metrics: rb.metrics,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Built {
            request: ExportMetricsServiceRequest { resource_metrics },
            points: self.points,
        }
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

#[cfg(test)]
mod tests;
