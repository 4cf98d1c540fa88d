//! One scrape → one OTLP `ExportMetricsServiceRequest`, as the collector's prometheus
//! receiver builds it: target labels merged (`honor_labels`), `metric_relabel_configs`,
//! limits, counters as cumulative monotonic sums with start times (`_created`, else first
//! seen; a decrease is a reset), histograms and summaries folded into one point per series,
//! staleness as `FLAG_NO_RECORDED_VALUE` points, and the `up`/`scrape_*` series.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use super::config::Job;
use super::encode::{Builder, MetricSlot, NO_RECORDED_VALUE, push_attr};
use super::parser::{Format, MetricType, ParseError, Sample, parse_each, parse_float};
use super::relabel::{self, Labels};
use crate::hash::{FxHashMap, SeriesHasher};
use crate::otlp::metrics_wire::HistogramValues;
use crate::seqmap::SeqMap;

pub use super::encode::STALE_NAN_BITS;

/// A label set borrowing from the scraped body and the target where it can.
type CowLabels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    #[default]
    Gauge,
    Sum,
    Histogram,
    Summary,
}

pub type ResKey = (String, String);
/// A resource (`job`, `instance`) as borrowed while building.
pub type ResRef<'a> = (&'a str, &'a str);

/// What is remembered of a series between scrapes.
struct Series {
    /// The scrape it was last seen in (a counter that wraps; only compared for equality).
    generation: u32,
    start_ns: u64,
    /// The value (sums) or count (histograms, summaries) last seen, to detect resets.
    last: f64,
    /// Index into [`TargetState::metrics`].
    metric: u32,
    /// Encoded attributes, to write its staleness marker.
    attrs: Box<[u8]>,
}

/// Per-target memory: known series (for start times, resets and staleness).
#[derive(Default)]
pub struct TargetState {
    /// In the order series were first seen, which is mostly the body's (see `SeqMap`).
    series: SeqMap<u64, Series>,
    /// (resource, name, kind) of the metrics of known series, and their index by identity.
    metrics: Vec<(ResKey, String, Kind)>,
    metric_index: FxHashMap<(ResKey, String, Kind), u32>,
    generation: u32,
    /// Series first seen in the scrape being converted.
    fresh: Vec<u64>,
}

/// One scrape as an encoded `ExportMetricsServiceRequest`.
pub struct Built {
    pub encoded: Vec<u8>,
    pub points: usize,
}

/// A converted scrape whose request is not framed yet. It borrows nothing from the scraped
/// body, so the caller frees the body before [`Converted::finish`] writes the headers (or, when
/// a metric was reopened, rebuilds the request): the body and a second copy of the request are
/// never held at once.
pub struct Converted(Builder);

impl Converted {
    pub fn finish(self) -> Built {
        finish(self.0)
    }
}

/// Why a scrape that returned a body still failed: a parse error or a limit.
#[derive(Debug, PartialEq, Eq)]
pub struct ScrapeFailed(pub String);

impl From<ParseError> for ScrapeFailed {
    fn from(e: ParseError) -> Self {
        ScrapeFailed(format!("parse error: {e}"))
    }
}

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

    /// Parses and converts a body. On a parse error or a limit violation the series first
    /// seen in it are forgotten and the caller reports the scrape as failed (see
    /// [`TargetState::failed`]). `duration_secs` is asked for once the body is converted.
    pub fn scraped(
        &mut self,
        job: &Job,
        target: &Target,
        text: &str,
        format: Format,
        scrape_ms: i64,
        duration_secs: &dyn Fn() -> f64,
    ) -> Result<Converted, ScrapeFailed> {
        self.generation = self.generation.wrapping_add(1);
        self.fresh.clear();
        let built = self.convert(job, target, text, format, scrape_ms, duration_secs);
        if built.is_err() {
            // Series first seen in a scrape that failed were never sent: forget them rather
            // than send stale markers for them.
            for key in std::mem::take(&mut self.fresh) {
                self.series.remove(&key);
            }
        }
        built
    }

    /// Samples are converted as the parser reads them (target labels, relabeling, limits),
    /// so a scrape never holds its parsed samples or a second copy of its label sets. The
    /// samples of a counter, histogram or summary family are gathered per series until the
    /// family ends; a series met again later in the same body is a duplicate and, as in
    /// Prometheus, only its first occurrence counts.
    fn convert(
        &mut self,
        job: &Job,
        target: &Target,
        text: &str,
        format: Format,
        scrape_ms: i64,
        duration_secs: &dyn Fn() -> f64,
    ) -> Result<Converted, ScrapeFailed> {
        let generation = self.generation;
        let scrape_ns = ms_to_ns(scrape_ms);
        let mut b = Builder::new(&target.scheme);
        let mut family = Gathered::default();
        let mut attrs: Vec<u8> = Vec::new();
        let mut scraped = 0u64;
        let mut added = 0u64;
        let mut post_relabel = 0u64;

        parse_each(text, format, |families, sample| {
            scraped += 1;
            if family.index != Some(sample.family) {
                added += self.flush(&mut b, &mut family, generation);
                family.index = Some(sample.family);
            }
            let Some(p) = prepare(job, target, sample)? else {
                return Ok(());
            };
            post_relabel += 1;
            if job.sample_limit > 0 && post_relabel > job.sample_limit {
                return Err(ScrapeFailed(format!(
                    "sample_limit exceeded (limit {})",
                    job.sample_limit
                )));
            }
            let p = &p;
            let meta = &families[sample.family];
            let (name, res) = p.known.unwrap_or_else(|| {
                let res = (get(&p.labels, "job"), get(&p.labels, "instance"));
                (get(&p.labels, "__name__"), res)
            });
            let ts_ns = match p.timestamp_ms {
                Some(ms) if job.honor_timestamps => ms_to_ns(ms),
                _ => scrape_ns,
            };
            let compound_kind = match meta.kind {
                MetricType::Counter if meta.owns(name) => Some(Kind::Sum),
                MetricType::Histogram if meta.owns(name) => Some(Kind::Histogram),
                MetricType::Summary if meta.owns(name) => Some(Kind::Summary),
                _ => None,
            };
            let Some(kind) = compound_kind else {
                let slot = b.metric(res, name, Kind::Gauge, Some(meta));
                attrs.clear();
                encode_attributes(&p.labels, None, &mut attrs);
                let seen = self.track(
                    &b,
                    slot,
                    Kind::Gauge,
                    &attrs,
                    generation,
                    ts_ns,
                    p.value,
                    None,
                );
                if let Some((_, is_new)) = seen {
                    added += u64::from(is_new);
                    b.number(slot, &attrs, 0, ts_ns, p.value);
                }
                return Ok(());
            };
            let suffix = &name[meta.name.len()..];
            let skip = match kind {
                Kind::Histogram => Some("le"),
                Kind::Summary => Some("quantile"),
                _ => None,
            };
            let slot = b.metric(res, meta.name, kind, Some(meta));
            let a = family.accum(slot, kind, skip, &p.labels, ts_ns);
            // A repeated sample of the series is a duplicate: the first one counts.
            let first = |field: &mut Option<f64>| *field = Some(field.unwrap_or(p.value));
            match (kind, suffix) {
                (_, "_created") => first(&mut a.created),
                (Kind::Sum, "" | "_total") => first(&mut a.value),
                (Kind::Histogram, "_bucket") => {
                    if let Some(le) = get_opt(&p.labels, "le").and_then(parse_float) {
                        a.buckets.push((le, p.value));
                    }
                }
                (Kind::Summary, "") => {
                    if let Some(q) = get_opt(&p.labels, "quantile").and_then(parse_float) {
                        a.buckets.push((q, p.value));
                    }
                }
                (_, "_sum") => first(&mut a.sum),
                (_, "_count") => first(&mut a.count),
                _ => {}
            }
            Ok(())
        })?;
        added += self.flush(&mut b, &mut family, generation);

        self.mark_stale(&mut b, generation, scrape_ns);
        let report = Report {
            up: true,
            duration_secs: duration_secs(),
            scraped,
            post_relabel,
            added,
        };
        report.emit(&mut b, target, scrape_ns);
        Ok(Converted(b))
    }

    /// Converts the series gathered from a counter, histogram or summary family; returns how
    /// many of them are new.
    fn flush(&mut self, b: &mut Builder, family: &mut Gathered, generation: u32) -> u64 {
        let mut added = 0;
        for mut a in family.accums.drain(..) {
            let progress = match a.kind {
                Kind::Sum => a.value,
                _ => a.count,
            };
            let Some(progress) = progress else { continue };
            let created_ns = a
                .created
                .filter(|c| c.is_finite() && *c > 0.0)
                .map(|c| (c * 1e9) as u64);
            let attrs = &family.attrs[a.attrs.clone()];
            let seen = self.track(
                b, a.slot, a.kind, attrs, generation, a.ts_ns, progress, created_ns,
            );
            let Some((start_ns, is_new)) = seen else {
                continue;
            };
            added += u64::from(is_new);
            match a.kind {
                Kind::Sum => b.number(a.slot, attrs, start_ns, a.ts_ns, progress),
                Kind::Histogram => {
                    a.buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
                    let mut bounds = Vec::with_capacity(a.buckets.len());
                    let mut counts = Vec::with_capacity(a.buckets.len() + 1);
                    let mut previous = 0.0;
                    for (le, cumulative) in &a.buckets {
                        let delta = (cumulative - previous).max(0.0);
                        previous = *cumulative;
                        counts.push(delta as u64);
                        if le.is_finite() {
                            bounds.push(*le);
                        }
                    }
                    // Without a +Inf bucket the overflow bucket holds what `_count` adds.
                    if a.buckets.last().is_none_or(|(le, _)| le.is_finite()) {
                        counts.push((progress - previous).max(0.0) as u64);
                    }
                    let values = HistogramValues {
                        count: progress as u64,
                        sum: a.sum,
                        bucket_counts: &counts,
                        bounds: &bounds,
                        ..Default::default()
                    };
                    b.histogram(a.slot, attrs, start_ns, a.ts_ns, &values, 0);
                }
                Kind::Summary => {
                    a.buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
                    b.summary(
                        a.slot,
                        attrs,
                        start_ns,
                        a.ts_ns,
                        progress as u64,
                        a.sum.unwrap_or(0.0),
                        &a.buckets,
                        0,
                    );
                }
                Kind::Gauge => {}
            }
        }
        family.compound.clear();
        family.attrs.clear();
        added
    }

    /// A failed scrape: `up` 0, and every series of the last good scrape goes stale.
    pub fn failed(&mut self, target: &Target, scrape_ms: i64, duration_secs: f64) -> Built {
        self.generation = self.generation.wrapping_add(1);
        let scrape_ns = ms_to_ns(scrape_ms);
        let mut b = Builder::new(&target.scheme);
        self.mark_stale(&mut b, self.generation, scrape_ns);
        Report {
            up: false,
            duration_secs,
            scraped: 0,
            post_relabel: 0,
            added: 0,
        }
        .emit(&mut b, target, scrape_ns);
        finish(b)
    }

    /// The target is gone: one stale point for each of its series, which are forgotten.
    pub fn vanished(&mut self, target: &Target, ts_ms: i64) -> Built {
        self.generation = self.generation.wrapping_add(1);
        let mut b = Builder::new(&target.scheme);
        self.mark_stale(&mut b, self.generation, ms_to_ns(ts_ms));
        finish(b)
    }

    /// Records a series as seen; returns its start time and whether it is new, or `None`
    /// when it was already seen in this scrape (a duplicate, to be left out).
    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        b: &Builder,
        slot: MetricSlot,
        kind: Kind,
        attrs: &[u8],
        generation: u32,
        ts_ns: u64,
        progress: f64,
        created_ns: Option<u64>,
    ) -> Option<(u64, bool)> {
        let key = b.series_key(slot, attrs);
        if let Some(s) = self.series.get_mut(&key) {
            if s.generation == generation {
                return None;
            }
            s.generation = generation;
            if let Some(c) = created_ns {
                s.start_ns = c;
            } else if kind != Kind::Gauge && progress < s.last {
                // A counter reset: a new cumulative interval starts now.
                s.start_ns = ts_ns;
            }
            s.last = progress;
            return Some((s.start_ns, false));
        }
        let start_ns = created_ns.unwrap_or(ts_ns);
        let res = b.res(slot);
        let identity = (
            (res.0.to_string(), res.1.to_string()),
            b.name(slot).to_string(),
            kind,
        );
        let metric = match self.metric_index.get(&identity) {
            Some(m) => *m,
            None => {
                self.metrics.push(identity.clone());
                let m = (self.metrics.len() - 1) as u32;
                self.metric_index.insert(identity, m);
                m
            }
        };
        self.fresh.push(key);
        self.series.insert(
            key,
            Series {
                generation,
                start_ns,
                last: progress,
                metric,
                attrs: attrs.into(),
            },
        );
        Some((start_ns, true))
    }

    /// One no-recorded-value point per series not seen in this scrape, which is forgotten.
    fn mark_stale(&mut self, b: &mut Builder, generation: u32, ts_ns: u64) {
        let metrics = &self.metrics;
        self.series.retain(|_, s| {
            if s.generation == generation {
                return true;
            }
            let ((job, instance), name, kind) = &metrics[s.metric as usize];
            let slot = b.metric((job, instance), name, *kind, None);
            let stale = f64::from_bits(STALE_NAN_BITS);
            match kind {
                Kind::Gauge => b.number_flagged(slot, &s.attrs, 0, ts_ns, stale, NO_RECORDED_VALUE),
                Kind::Sum => {
                    b.number_flagged(slot, &s.attrs, s.start_ns, ts_ns, stale, NO_RECORDED_VALUE)
                }
                Kind::Histogram => {
                    let empty = HistogramValues::default();
                    b.histogram(slot, &s.attrs, s.start_ns, ts_ns, &empty, NO_RECORDED_VALUE);
                }
                Kind::Summary => b.summary(
                    slot,
                    &s.attrs,
                    s.start_ns,
                    ts_ns,
                    0,
                    0.0,
                    &[],
                    NO_RECORDED_VALUE,
                ),
            }
            false
        });
        if self.series.is_empty() {
            self.metrics.clear();
            self.metric_index.clear();
        }
    }
}

fn finish(b: Builder) -> Built {
    let points = b.points();
    Built {
        encoded: b.finish(),
        points,
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
        let mut attrs = Vec::new();
        encode_attributes(&target.labels, None, &mut attrs);
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
            let slot = b.metric(res, name, Kind::Gauge, None);
            b.number(slot, &attrs, 0, ts_ns, value);
        }
    }
}

/// A sample with its final label set (target labels merged, metric relabeling applied).
struct Prepared<'a> {
    labels: CowLabels<'a>,
    /// `__name__`, `job` and `instance` of `labels`, when found without a search; else
    /// searched for.
    known: Option<(&'a str, ResRef<'a>)>,
    value: f64,
    timestamp_ms: Option<i64>,
}

/// A sample's final labels, or `None` when metric relabeling drops it.
fn prepare<'a>(
    job: &Job,
    target: &'a Target,
    sample: &'a Sample<'_>,
) -> Result<Option<Prepared<'a>>, ScrapeFailed> {
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
            return Ok(None);
        }
        labels = owned
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)))
            .collect();
    }
    // Without relabeling the name is the sample's, and without `honor_labels` the target's
    // job and instance win.
    let known = (job.metric_relabel.is_empty() && !job.honor_labels)
        .then(|| (sample.name, target.res_key()));
    if known.is_none() && get_opt(&labels, "__name__").is_none() {
        return Ok(None);
    }
    if job.label_limit > 0 && labels.len() as u64 > job.label_limit {
        return Err(ScrapeFailed(format!(
            "label_limit exceeded: a series has {} labels (limit {})",
            labels.len(),
            job.label_limit
        )));
    }
    for (k, v) in &labels {
        if job.label_name_length_limit > 0 && k.len() as u64 > job.label_name_length_limit {
            return Err(ScrapeFailed(format!(
                "label_name_length_limit exceeded by `{k}`"
            )));
        }
        if job.label_value_length_limit > 0 && v.len() as u64 > job.label_value_length_limit {
            return Err(ScrapeFailed(format!(
                "label_value_length_limit exceeded by the value of `{k}`"
            )));
        }
    }
    Ok(Some(Prepared {
        labels,
        known,
        value: sample.value,
        timestamp_ms: sample.timestamp_ms,
    }))
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

/// Data point attributes, encoded: every label but the name, `job`, `instance` and `skip`.
fn encode_attributes<K: AsRef<str>, V: AsRef<str>>(
    labels: &[(K, V)],
    skip: Option<&str>,
    out: &mut Vec<u8>,
) {
    for (k, v) in labels {
        let k = k.as_ref();
        if !matches!(k, "__name__" | "job" | "instance") && Some(k) != skip {
            push_attr(k, v.as_ref(), out);
        }
    }
}

fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

/// The counter, histogram or summary series of the family being read, gathered until it
/// ends.
#[derive(Default)]
struct Gathered {
    /// Index of the family (into the parser's families).
    index: Option<usize>,
    /// Series identity → index into `accums`.
    compound: FxHashMap<u64, usize>,
    accums: Vec<Accum>,
    /// The encoded attributes of every accumulator, one after the other.
    attrs: Vec<u8>,
}

impl Gathered {
    /// The accumulator of a sample's series (its labels but `skip`), new if need be.
    fn accum(
        &mut self,
        slot: MetricSlot,
        kind: Kind,
        skip: Option<&str>,
        labels: &CowLabels<'_>,
        ts_ns: u64,
    ) -> &mut Accum {
        let mut h = SeriesHasher::new();
        slot.hash(&mut h);
        for (k, v) in labels {
            if k != "__name__" && Some(k.as_ref()) != skip {
                k.hash(&mut h);
                v.hash(&mut h);
            }
        }
        let index = *self.compound.entry(h.finish()).or_insert_with(|| {
            let start = self.attrs.len();
            encode_attributes(labels, skip, &mut self.attrs);
            self.accums.push(Accum {
                slot,
                kind,
                attrs: start..self.attrs.len(),
                ts_ns,
                ..Accum::default()
            });
            self.accums.len() - 1
        });
        &mut self.accums[index]
    }
}

#[derive(Default)]
struct Accum {
    slot: MetricSlot,
    kind: Kind,
    /// Where its encoded attributes are in the scrape's attribute buffer.
    attrs: std::ops::Range<usize>,
    ts_ns: u64,
    value: Option<f64>,
    created: Option<f64>,
    sum: Option<f64>,
    count: Option<f64>,
    /// `(le, cumulative count)` for histograms, `(quantile, value)` for summaries.
    buckets: Vec<(f64, f64)>,
}

#[cfg(test)]
mod tests;
