//! OTLP metrics → Prometheus time series, following the collector's translator
//! (`pkg/translator/prometheus`, `prometheusremotewrite`): name normalisation with unit and
//! `_total` suffixes, label sanitising, `job`/`instance` from the resource, `target_info`,
//! classic histogram buckets, summary quantiles, and no-recorded-value points as stale NaN.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, SummaryDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::hash::{FxHashMap, SeriesHasher};
use crate::otlp::metrics_wire::{self as input, Malformed, RawAttr};
use crate::otlp::wire::{
    fields, fixed64_field_len, len_field_len, varint_field_len, write_fixed64, write_len_field,
    write_len_header, write_varint_field,
};
use crate::seqmap::SeqMap;

pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
const NO_RECORDED_VALUE: u32 = 1;

#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub namespace: String,
    pub external_labels: BTreeMap<String, String>,
    pub add_metric_suffixes: bool,
    pub resource_to_telemetry: bool,
    pub target_info: bool,
}

/// One request's series as encoded `WriteRequest`s of at most the size asked for (a single
/// larger series still goes alone), each snappy-compressed, series in first-seen order with their samples sorted by
/// time; and the number of data points that could not be translated (exponential
/// histograms).
pub struct Translated {
    pub requests: Vec<Bytes>,
    pub series: usize,
    pub dropped: u64,
}

/// An attribute as a label source: its original key and its value as text.
type Attr<'a> = (&'a str, Cow<'a, str>);
type LabelSet<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn label_hash(labels: &LabelSet<'_>) -> u64 {
    let mut h = SeriesHasher::new();
    for (k, v) in labels {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

/// A label set as `TimeSeries.labels` fields (values are never empty here).
fn encode_labels(labels: &LabelSet<'_>, out: &mut Vec<u8>) {
    for (k, v) in labels {
        // Label: name 1, value 2.
        let len = len_field_len(1, k.len()) + len_field_len(2, v.len());
        write_len_header(1, len, out);
        write_len_field(1, k.as_bytes(), out);
        write_len_field(2, v.as_bytes(), out);
    }
}

/// The label sets of number series seen in earlier requests, by a hash of what they are made
/// from (resource, metric name, encoded attributes): a scrape repeats its series, and building
/// a label set (attribute values read, names sanitised, sorted, merged with `job`, `instance`
/// and external labels) is most of a translation's work. Entries unused for ten minutes are
/// forgotten; past a million the cache starts over.
#[derive(Default)]
pub struct LabelCache {
    /// In the order series were first seen, which is mostly the order they come in.
    entries: SeqMap<u64, CachedLabels>,
    last_sweep: Option<Instant>,
    /// Series in the last translation: what the next one sizes its tables for.
    last_series: usize,
    /// What `CachedLabels::used` counts seconds from.
    epoch: Option<Instant>,
}

struct CachedLabels {
    hash: u64,
    encoded: Box<[u8]>,
    /// Seconds from the cache's epoch (4 bytes where an `Instant` takes 16, once per series).
    used: u32,
}

const CACHE_IDLE: Duration = Duration::from_secs(600);
const CACHE_MAX: usize = 1_000_000;

impl LabelCache {
    /// Seconds from the cache's epoch to `now`.
    fn tick(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs() as u32
    }

    fn sweep(&mut self, now: Instant) {
        if self.entries.len() > CACHE_MAX {
            self.entries = SeqMap::default();
        }
        match self.last_sweep {
            Some(t) if now.saturating_duration_since(t) < CACHE_IDLE / 10 => {}
            _ => {
                let tick = self.tick(now);
                let idle = CACHE_IDLE.as_secs() as u32;
                self.entries
                    .retain(|_, e| tick.saturating_sub(e.used) < idle);
                self.last_sweep = Some(now);
            }
        }
    }

    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.entries.len()
    }
}

/// Series in first-seen order (the order of the OTLP request, so of the scrape, which keeps
/// similar label sets together and compresses well). A label set is known by its hash and
/// encoded once, when first seen, or found in the label cache; samples are collected flat
/// and grouped at the end.
#[derive(Default)]
struct SeriesWriter {
    index: FxHashMap<u64, u32>,
    /// Encoded `TimeSeries.labels` fields of series not in the label cache, one after the
    /// other.
    labels: Vec<u8>,
    series: Vec<SeriesLabels>,
    /// (series, timestamp ms, value).
    samples: Vec<(u32, i64, f64)>,
}

/// Where a series' encoded labels are.
enum SeriesLabels {
    /// A range of [`SeriesWriter::labels`].
    Own(u32, u32),
    /// A position in the label cache (which nothing removes from while translating).
    Cached(u32),
}

impl SeriesWriter {
    fn push(&mut self, labels: &LabelSet<'_>, value: f64, ts: i64) {
        let hash = label_hash(labels);
        self.push_hashed(
            hash,
            |own| {
                let start = own.len() as u32;
                encode_labels(labels, own);
                SeriesLabels::Own(start, own.len() as u32)
            },
            value,
            ts,
        );
    }

    /// A sample of the series with this label-set hash; `labels` says where its labels are
    /// (writing them to the buffer it is given if need be) when the series is new to this
    /// request.
    fn push_hashed(
        &mut self,
        hash: u64,
        labels: impl FnOnce(&mut Vec<u8>) -> SeriesLabels,
        value: f64,
        ts: i64,
    ) {
        let next = self.series.len() as u32;
        let i = *self.index.entry(hash).or_insert(next);
        if i == next {
            let at = labels(&mut self.labels);
            self.series.push(at);
        }
        self.samples.push((i, ts, value));
    }

    /// The requests, snappy-compressed 64 KiB at a time as they are written, so no request
    /// is ever held uncompressed. Each request's length is worked out first (snappy's block
    /// format starts with it).
    fn finish(mut self, max_bytes: usize, cache: &LabelCache) -> Vec<Bytes> {
        // Not needed to write: freed before the requests are.
        drop(std::mem::take(&mut self.index));
        // Stable, and nearly sorted already (most series have one sample).
        self.samples.sort_by_key(|s| (s.0, s.1));
        let labels_of = |series: u32| match self.series[series as usize] {
            SeriesLabels::Own(start, end) => &self.labels[start as usize..end as usize],
            SeriesLabels::Cached(i) => cache
                .entries
                .get_index(i as usize)
                .map_or(&[][..], |c| &c.encoded[..]),
        };
        // Each series' run of samples and the size of its `TimeSeries` message.
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        let mut at = 0;
        while at < self.samples.len() {
            let series = self.samples[at].0;
            let end = at + self.samples[at..].partition_point(|s| s.0 == series);
            let payload = labels_of(series).len()
                + self.samples[at..end]
                    .iter()
                    .map(|(_, ts, v)| len_field_len(2, sample_len(*ts, *v)))
                    .sum::<usize>();
            runs.push((at, end, payload));
            at = end;
        }
        let mut requests = Vec::new();
        let mut field = Vec::new();
        let mut first = 0;
        while first < runs.len() {
            // As many series as fit in `max_bytes`, and at least one.
            let mut total = len_field_len(1, runs[first].2);
            let mut last = first + 1;
            while last < runs.len() && total + len_field_len(1, runs[last].2) <= max_bytes {
                total += len_field_len(1, runs[last].2);
                last += 1;
            }
            let mut body = SnappyWriter::new(total);
            for &(start, end, payload) in &runs[first..last] {
                let samples = &self.samples[start..end];
                let labels = labels_of(samples[0].0);
                field.clear();
                write_len_header(1, payload, &mut field);
                body.write(&field);
                body.write(labels);
                for (_, ts, v) in samples {
                    field.clear();
                    write_len_header(2, sample_len(*ts, *v), &mut field);
                    if *v != 0.0 {
                        write_fixed64(1, v.to_bits(), &mut field);
                    }
                    if *ts != 0 {
                        write_varint_field(2, *ts as u64, &mut field);
                    }
                    body.write(&field);
                }
            }
            requests.push(Bytes::from(body.finish()));
            first = last;
        }
        requests
    }
}

/// The encoded size of a `Sample` (value, then timestamp; zeros left out).
fn sample_len(ts: i64, v: f64) -> usize {
    let value = if v == 0.0 { 0 } else { fixed64_field_len(1) };
    let time = if ts == 0 {
        0
    } else {
        varint_field_len(2, ts as u64)
    };
    value + time
}

/// Snappy's block format written 64 KiB of input at a time: the uncompressed length, then
/// each 64 KiB compressed on its own with its own length prefix left out. That is what the
/// reference compressor produces for a long input (copies never reach back past their 64 KiB
/// fragment), so any snappy decoder reads it as one block.
struct SnappyWriter {
    encoder: snap::raw::Encoder,
    pending: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    #[cfg(debug_assertions)]
    announced: usize,
    #[cfg(debug_assertions)]
    written: usize,
}

const SNAPPY_FRAGMENT: usize = 1 << 16;

impl SnappyWriter {
    fn new(len: usize) -> SnappyWriter {
        let mut out = Vec::with_capacity(len / 4 + 16);
        crate::otlp::wire::encode_varint(len as u64, &mut out);
        SnappyWriter {
            encoder: snap::raw::Encoder::new(),
            pending: Vec::with_capacity(SNAPPY_FRAGMENT.min(len)),
            scratch: Vec::new(),
            out,
            #[cfg(debug_assertions)]
            announced: len,
            #[cfg(debug_assertions)]
            written: 0,
        }
    }

    fn write(&mut self, mut data: &[u8]) {
        #[cfg(debug_assertions)]
        {
            self.written += data.len();
        }
        while !data.is_empty() {
            let take = (SNAPPY_FRAGMENT - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == SNAPPY_FRAGMENT {
                self.compress_pending();
            }
        }
    }

    fn compress_pending(&mut self) {
        self.scratch
            .resize(snap::raw::max_compress_len(self.pending.len()), 0);
        // Cannot fail: the input is at most 64 KiB and the output large enough.
        let n = self
            .encoder
            .compress(&self.pending, &mut self.scratch)
            .unwrap_or(0);
        let prefix = crate::otlp::wire::varint_len(self.pending.len() as u64);
        self.out.extend_from_slice(&self.scratch[prefix.min(n)..n]);
        self.pending.clear();
    }

    fn finish(mut self) -> Vec<u8> {
        #[cfg(debug_assertions)]
        debug_assert_eq!(self.written, self.announced);
        if !self.pending.is_empty() {
            self.compress_pending();
        }
        self.out.shrink_to_fit();
        self.out
    }
}

pub fn translate(
    payload: &[u8],
    settings: &Settings,
    max_bytes: usize,
    cache: &mut LabelCache,
) -> Result<Translated, Malformed> {
    let now = Instant::now();
    cache.sweep(now);
    let tick = cache.tick(now);
    let mut out = SeriesWriter::default();
    // Sized for the last request's series (requests are alike: a scrape each, say), else a
    // guess from the payload; a table sized too large would cost memory on every request.
    let expected = match cache.last_series {
        0 => payload.len() / 64,
        n => n,
    };
    out.index.reserve(expected);
    out.samples.reserve(expected);
    let mut dropped = 0u64;
    for rm in input::repeated(payload, 1) {
        let mut ctx = Context {
            settings,
            cache: &mut *cache,
            tick,
            resource_key: 0,
        };
        dropped += add_resource(rm?, &mut ctx, &mut out)?;
    }
    let series = out.series.len();
    cache.last_series = series;
    Ok(Translated {
        requests: out.finish(max_bytes, cache),
        series,
        dropped,
    })
}

/// What a translation carries from resource to metric.
struct Context<'c> {
    settings: &'c Settings,
    cache: &'c mut LabelCache,
    /// Now, as the cache counts time.
    tick: u32,
    /// Hash of the encoded resource the current metrics come under.
    resource_key: u64,
}

fn add_resource(
    rm: &[u8],
    ctx: &mut Context<'_>,
    out: &mut SeriesWriter,
) -> Result<u64, Malformed> {
    let settings = ctx.settings;
    let encoded = input::last_len(rm, 1)?;
    let resource = Resource::decode(encoded)?;
    let mut h = SeriesHasher::new();
    h.write(encoded);
    ctx.resource_key = h.finish();
    let base = ResourceLabels::new(&resource.attributes, settings);
    let mut latest_ms: Option<i64> = None;
    let mut dropped = 0;
    for sm in input::repeated(rm, 2) {
        for m in input::repeated(sm?, 2) {
            let (n, last) = add_metric(m?, &base, ctx, out)?;
            dropped += n;
            if let Some(ts) = last {
                latest_ms = Some(latest_ms.map_or(ts, |l: i64| l.max(ts)));
            }
        }
    }
    if settings.target_info
        && let Some(ts) = latest_ms
    {
        add_target_info(&resource.attributes, &base, settings, ts, out);
    }
    Ok(dropped)
}

/// What every series of a resource carries: `job`, `instance`, promoted resource attributes.
struct ResourceLabels {
    job: Option<String>,
    instance: Option<String>,
    promoted: Vec<(String, String)>,
}

impl ResourceLabels {
    fn new(attrs: &[KeyValue], settings: &Settings) -> ResourceLabels {
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| value_string(&kv.value))
        };
        let job = get("service.name").map(|name| match get("service.namespace") {
            Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
            _ => name,
        });
        ResourceLabels {
            job,
            instance: get("service.instance.id"),
            promoted: if settings.resource_to_telemetry {
                attrs
                    .iter()
                    .map(|kv| (kv.key.clone(), value_string(&kv.value)))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// The collector's `createAttributes`: sanitised attributes (colliding names joined with
/// `;`), promoted resource attributes, `job`/`instance`, external labels that are not
/// already set, then the extra label (`le`, `quantile`) and the name.
fn labels<'a>(
    attrs: &[Attr<'a>],
    base: &'a ResourceLabels,
    settings: &'a Settings,
    extra: Option<(&'a str, Cow<'a, str>)>,
    name: &'a str,
) -> LabelSet<'a> {
    let mut scratch = Scratch::default();
    labels_into(&mut scratch, attrs, base, settings, extra, name);
    scratch.set
}

/// Buffers [`labels_into`] reuses from point to point.
#[derive(Default)]
struct Scratch<'a> {
    keyed: Vec<(Cow<'a, str>, &'a str, Cow<'a, str>)>,
    set: LabelSet<'a>,
}

/// [`labels`] into `scratch.set`.
fn labels_into<'a>(
    scratch: &mut Scratch<'a>,
    attrs: &[Attr<'a>],
    base: &'a ResourceLabels,
    settings: &'a Settings,
    extra: Option<(&'a str, Cow<'a, str>)>,
    name: &'a str,
) {
    let Scratch { keyed, set } = scratch;
    keyed.clear();
    set.clear();
    // Sanitised names, ordered by (name, original key) so colliding values join in key order.
    keyed.extend(
        attrs
            .iter()
            .map(|(k, v)| (label_name(k), *k, v.clone()))
            .chain(
                base.promoted
                    .iter()
                    .map(|(k, v)| (label_name(k), k.as_str(), Cow::Borrowed(v.as_str()))),
            ),
    );
    if keyed.len() > 1 {
        keyed.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    }
    for (key, _, value) in keyed.drain(..) {
        match set.last_mut() {
            Some((k, v)) if *k == key => {
                let joined = v.to_mut();
                joined.push(';');
                joined.push_str(&value);
            }
            _ => set.push((key, value)),
        }
    }
    let put = |set: &mut LabelSet<'a>, k: &'a str, v: Cow<'a, str>, overwrite: bool| match set
        .binary_search_by(|(x, _)| x.as_ref().cmp(k))
    {
        Ok(i) if overwrite => set[i].1 = v,
        Ok(_) => {}
        Err(i) => set.insert(i, (Cow::Borrowed(k), v)),
    };
    if let Some(job) = &base.job {
        put(set, "job", Cow::Borrowed(job), true);
    }
    if let Some(instance) = &base.instance {
        put(set, "instance", Cow::Borrowed(instance), true);
    }
    for (k, v) in &settings.external_labels {
        put(set, k, Cow::Borrowed(v), false);
    }
    if let Some((k, v)) = extra {
        put(set, k, v, true);
    }
    put(set, "__name__", Cow::Borrowed(name), true);
    set.retain(|(_, v)| !v.is_empty());
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// An encoded attribute as a label source; a string value is borrowed from the request.
fn raw_attr<'a>(a: &RawAttr<'a>) -> Result<Attr<'a>, Malformed> {
    let value = a.value_bytes();
    let mut string: Option<&[u8]> = None;
    let mut other = false;
    for f in fields(value) {
        let f = f?;
        if f.number == 1 {
            string = Some(f.expect_len()?);
            other = false;
        } else {
            string = None;
            other = true;
        }
    }
    let text = match (string, other) {
        (Some(s), _) => Cow::Borrowed(input::str_of(s)?),
        (None, false) => Cow::Borrowed(""),
        (None, true) => Cow::Owned(value_string(&Some(AnyValue::decode(value)?))),
    };
    Ok((a.key, text))
}

fn kv_attrs(attrs: &[KeyValue]) -> Vec<Attr<'_>> {
    attrs
        .iter()
        .map(|kv| (kv.key.as_str(), value_text(&kv.value)))
        .collect()
}

/// Adds a metric's points; returns the points it could not translate and the latest timestamp.
fn add_metric(
    m: &[u8],
    base: &ResourceLabels,
    ctx: &mut Context<'_>,
    out: &mut SeriesWriter,
) -> Result<(u64, Option<i64>), Malformed> {
    let settings = ctx.settings;
    let header = input::read_metric_header(m)?;
    let Some((field, data)) = header.data else {
        return Ok((0, None));
    };
    let mut latest: Option<i64> = None;
    let mut seen = |ts: i64| latest = Some(latest.map_or(ts, |l: i64| l.max(ts)));
    let stale = f64::from_bits(STALE_NAN);
    match field {
        // Gauge, sum.
        5 | 7 => {
            let kind = match field {
                5 => NameKind::Gauge,
                _ if input::read_shape(data)?.1 => NameKind::Counter,
                _ => NameKind::Other,
            };
            let name = metric_name(header.name, header.unit, kind, settings);
            let metric_key = {
                let mut h = SeriesHasher::new();
                h.write_u64(ctx.resource_key);
                h.write(name.as_bytes());
                h.finish()
            };
            let mut raw = Vec::new();
            let mut attrs = Vec::new();
            let mut scratch = Scratch::default();
            for p in input::points(data) {
                raw.clear();
                attrs.clear();
                let p = input::read_number_point(p?, &mut raw)?;
                let ts = ms(p.time);
                seen(ts);
                let value = if p.flags & NO_RECORDED_VALUE != 0 {
                    stale
                } else {
                    match p.value {
                        Some(v) => v.as_f64(),
                        None => continue,
                    }
                };
                // Known series: the label set from the cache, by its encoded attributes.
                let mut h = SeriesHasher::new();
                h.write_u64(metric_key);
                for a in &raw {
                    h.write(a.encoded);
                    h.write_u8(0xff);
                }
                let key = h.finish();
                if let Some((at, c)) = ctx.cache.entries.get_full_mut(&key) {
                    c.used = ctx.tick;
                    out.push_hashed(c.hash, |_| SeriesLabels::Cached(at as u32), value, ts);
                    continue;
                }
                for a in &raw {
                    attrs.push(raw_attr(a)?);
                }
                labels_into(&mut scratch, &attrs, base, settings, None, &name);
                let hash = label_hash(&scratch.set);
                let mut encoded = Vec::new();
                encode_labels(&scratch.set, &mut encoded);
                let cached = CachedLabels {
                    hash,
                    encoded: encoded.into_boxed_slice(),
                    used: ctx.tick,
                };
                let (at, _) = ctx.cache.entries.insert_full(key, cached);
                out.push_hashed(hash, |_| SeriesLabels::Cached(at as u32), value, ts);
            }
        }
        // Histogram.
        9 => {
            let name = metric_name(header.name, header.unit, NameKind::Other, settings);
            let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
            let bucket = format!("{name}_bucket");
            for p in input::points(data) {
                let p = HistogramDataPoint::decode(p?)?;
                let attrs = kv_attrs(&p.attributes);
                let ts = ms(p.time_unix_nano);
                seen(ts);
                let is_stale = p.flags & NO_RECORDED_VALUE != 0;
                let v = |x: f64| if is_stale { stale } else { x };
                if let Some(sum) = p.sum.or(is_stale.then_some(0.0)) {
                    out.push(&labels(&attrs, base, settings, None, &sum_name), v(sum), ts);
                }
                let l = labels(&attrs, base, settings, None, &count_name);
                out.push(&l, v(p.count as f64), ts);
                let mut cumulative = 0u64;
                for (i, bound) in p.explicit_bounds.iter().enumerate() {
                    cumulative += p.bucket_counts.get(i).copied().unwrap_or(0);
                    let le = Some(("le", Cow::Owned(format_float(*bound))));
                    let l = labels(&attrs, base, settings, le, &bucket);
                    out.push(&l, v(cumulative as f64), ts);
                }
                let le = Some(("le", Cow::Borrowed("+Inf")));
                let l = labels(&attrs, base, settings, le, &bucket);
                out.push(&l, v(p.count as f64), ts);
            }
        }
        // Summary.
        11 => {
            let name = metric_name(header.name, header.unit, NameKind::Other, settings);
            let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
            for p in input::points(data) {
                let p = SummaryDataPoint::decode(p?)?;
                let attrs = kv_attrs(&p.attributes);
                let ts = ms(p.time_unix_nano);
                seen(ts);
                let is_stale = p.flags & NO_RECORDED_VALUE != 0;
                let v = |x: f64| if is_stale { stale } else { x };
                out.push(
                    &labels(&attrs, base, settings, None, &sum_name),
                    v(p.sum),
                    ts,
                );
                let l = labels(&attrs, base, settings, None, &count_name);
                out.push(&l, v(p.count as f64), ts);
                for q in &p.quantile_values {
                    let quantile = Some(("quantile", Cow::Owned(format_float(q.quantile))));
                    let l = labels(&attrs, base, settings, quantile, &name);
                    out.push(&l, v(q.value), ts);
                }
            }
        }
        // Exponential histogram: no classic series.
        10 => return Ok((input::points(data).count() as u64, None)),
        _ => {}
    }
    Ok((0, latest))
}

/// `target_info` with every resource attribute but the ones `job`/`instance` come from.
fn add_target_info(
    attrs: &[KeyValue],
    base: &ResourceLabels,
    settings: &Settings,
    ts: i64,
    out: &mut SeriesWriter,
) {
    let rest: Vec<Attr> = kv_attrs(attrs)
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .collect();
    if rest.is_empty() {
        return;
    }
    let name = if settings.namespace.is_empty() {
        "target_info".to_string()
    } else {
        format!("{}_target_info", settings.namespace)
    };
    let plain = ResourceLabels {
        job: base.job.clone(),
        instance: base.instance.clone(),
        promoted: Vec::new(),
    };
    out.push(&labels(&rest, &plain, settings, None, &name), 1.0, ts);
}

/// A float as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn value_text(v: &Option<AnyValue>) -> Cow<'_, str> {
    match v {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        }) => Cow::Borrowed(s),
        other => Cow::Owned(value_string(other)),
    }
}

fn value_string(v: &Option<AnyValue>) -> String {
    let Some(AnyValue { value: Some(v) }) = v else {
        return String::new();
    };
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => format_float(*d),
        any_value::Value::BytesValue(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        any_value::Value::ArrayValue(a) => {
            let items: Vec<String> = a
                .values
                .iter()
                .map(|x| serde_json::Value::String(value_string(&Some(x.clone()))).to_string())
                .collect();
            format!("[{}]", items.join(","))
        }
        any_value::Value::KvlistValue(kv) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|x| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(x.key.clone()),
                        serde_json::Value::String(value_string(&x.value))
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => String::new(),
    }
}

/// [`normalize_label`] without allocating for a name that is already valid (most are).
fn label_name(label: &str) -> Cow<'_, str> {
    let b = label.as_bytes();
    let valid = b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && b.first().is_some_and(|c| !c.is_ascii_digit())
        && !(b[0] == b'_' && b.get(1) != Some(&b'_'));
    if valid {
        Cow::Borrowed(label)
    } else {
        Cow::Owned(normalize_label(label))
    }
}

/// The collector's `NormalizeLabel`: non-alphanumerics become `_`; a leading digit gets
/// `key_`, a single leading underscore `key`.
pub fn normalize_label(label: &str) -> String {
    if label.is_empty() {
        return String::new();
    }
    let s: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.as_bytes()[0].is_ascii_digit() {
        format!("key_{s}")
    } else if s.starts_with('_') && !s.starts_with("__") {
        format!("key{s}")
    } else {
        s
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Counter,
    Gauge,
    Other,
}

/// The collector's `BuildCompliantName`.
pub fn metric_name(name: &str, unit: &str, kind: NameKind, settings: &Settings) -> String {
    if settings.add_metric_suffixes {
        return normalize_name(name, unit, kind, &settings.namespace);
    }
    let cleaned = split_join(name, |c| c.is_alphanumeric() || c == '_' || c == ':');
    if !settings.namespace.is_empty() {
        return format!("{}_{cleaned}", settings.namespace);
    }
    if cleaned.starts_with(|c: char| c.is_ascii_digit()) {
        return format!("_{cleaned}");
    }
    cleaned
}

fn split_join(s: &str, keep: impl Fn(char) -> bool) -> String {
    s.split(|c: char| !keep(c))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

fn unit_name(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_name(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn normalize_name(name: &str, unit: &str, kind: NameKind, namespace: &str) -> String {
    let alnum = |c: char| c.is_alphanumeric();
    let mut tokens: Vec<String> = name
        .split(|c: char| !alnum(c))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let mut units = unit.splitn(2, '/');
    let main = units.next().unwrap_or("").trim();
    if !main.is_empty() && !main.contains(['{', '}']) {
        let prom = split_join(unit_name(main), alnum);
        if !prom.is_empty() && !tokens.contains(&prom) {
            tokens.push(prom);
        }
    }
    if let Some(per) = units.next().map(str::trim)
        && !per.is_empty()
        && !per.contains(['{', '}'])
    {
        let prom = split_join(per_unit_name(per), alnum);
        if !prom.is_empty() && !tokens.contains(&prom) {
            tokens.push("per".into());
            tokens.push(prom);
        }
    }
    if kind == NameKind::Counter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if unit == "1" && kind == NameKind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    if !namespace.is_empty() {
        tokens.insert(0, namespace.to_string());
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests;
