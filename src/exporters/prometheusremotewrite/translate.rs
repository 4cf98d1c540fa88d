//! OTLP metrics → Prometheus time series, following the collector's translator
//! (`pkg/translator/prometheus`, `prometheusremotewrite`): name normalisation with unit and
//! `_total` suffixes, label sanitising, `job`/`instance` from the resource, `target_info`,
//! classic histogram buckets, summary quantiles, and no-recorded-value points as stale NaN.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};

use super::prompb::{Sample, TimeSeries};
use crate::hash::FxHashMap;

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

/// The series of one request, sorted by labels, samples sorted by time; and the number of
/// data points that could not be translated (exponential histograms).
pub struct Translated {
    pub series: Vec<TimeSeries>,
    pub dropped: u64,
}

type LabelSet = Vec<(String, String)>;

/// Series in first-seen order (the order of the OTLP request, so of the scrape, which keeps
/// similar label sets together and compresses well), each with its samples.
#[derive(Default)]
struct SeriesMap {
    index: FxHashMap<LabelSet, usize>,
    samples: Vec<Vec<Sample>>,
}

pub fn translate(request: &ExportMetricsServiceRequest, settings: &Settings) -> Translated {
    // Sized for the series the request can make, so the map never rehashes its label sets.
    let series = series_bound(request);
    let mut out = SeriesMap {
        index: FxHashMap::with_capacity_and_hasher(series, Default::default()),
        samples: Vec::with_capacity(series),
    };
    let mut dropped = 0u64;
    for rm in &request.resource_metrics {
        let resource_attrs: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let base = ResourceLabels::new(resource_attrs, settings);
        let mut latest_ms: Option<i64> = None;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let (n, last) = add_metric(m, &base, settings, &mut out);
                dropped += n;
                if let Some(ts) = last {
                    latest_ms = Some(latest_ms.map_or(ts, |l: i64| l.max(ts)));
                }
            }
        }
        if settings.target_info
            && let Some(ts) = latest_ms
        {
            add_target_info(resource_attrs, &base, settings, ts, &mut out);
        }
    }
    let mut ordered: Vec<(usize, LabelSet)> = out.index.into_iter().map(|(l, i)| (i, l)).collect();
    ordered.sort_unstable_by_key(|(i, _)| *i);
    let mut all_samples = out.samples;
    let series = ordered
        .into_iter()
        .map(|(i, labels)| {
            let mut samples = std::mem::take(&mut all_samples[i]);
            samples.sort_by_key(|s| s.timestamp);
            TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| super::prompb::Label { name, value })
                    .collect(),
                samples,
            }
        })
        .collect();
    Translated { series, dropped }
}

/// At most how many series a request translates into: a series per number point, a bucket
/// per bound plus `+Inf`, `_sum` and `_count` per histogram point, a quantile each plus
/// `_sum` and `_count` per summary point, and `target_info` per resource.
fn series_bound(request: &ExportMetricsServiceRequest) -> usize {
    let mut n = 0;
    for rm in &request.resource_metrics {
        n += 1;
        for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
            n += match &m.data {
                Some(metric::Data::Gauge(g)) => g.data_points.len(),
                Some(metric::Data::Sum(s)) => s.data_points.len(),
                Some(metric::Data::Histogram(h)) => h
                    .data_points
                    .iter()
                    .map(|p| p.explicit_bounds.len() + 3)
                    .sum(),
                Some(metric::Data::Summary(s)) => s
                    .data_points
                    .iter()
                    .map(|p| p.quantile_values.len() + 2)
                    .sum(),
                _ => 0,
            };
        }
    }
    n
}

/// What every series of a resource carries: `job`, `instance`, promoted resource attributes.
struct ResourceLabels {
    job: Option<String>,
    instance: Option<String>,
    promoted: Vec<KeyValue>,
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
                attrs.to_vec()
            } else {
                Vec::new()
            },
        }
    }
}

/// The collector's `createAttributes`: sanitised attributes (colliding names joined with
/// `;`), promoted resource attributes, `job`/`instance`, external labels that are not
/// already set, then the extra label (`le`, `quantile`) and the name.
fn labels(
    attrs: &[KeyValue],
    base: &ResourceLabels,
    settings: &Settings,
    extra: Option<(&str, String)>,
    name: &str,
) -> LabelSet {
    let n = attrs.len() + base.promoted.len();
    let mut set: LabelSet = Vec::with_capacity(n + 4 + settings.external_labels.len());
    // Sanitised names, ordered by (name, original key) so colliding values join in key order.
    let mut keyed: Vec<(String, &str, String)> = attrs
        .iter()
        .chain(base.promoted.iter())
        .map(|kv| {
            (
                normalize_label(&kv.key),
                kv.key.as_str(),
                value_string(&kv.value),
            )
        })
        .collect();
    if keyed.len() > 1 {
        keyed.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    }
    for (key, _, value) in keyed {
        match set.last_mut() {
            Some((k, v)) if *k == key => {
                v.push(';');
                v.push_str(&value);
            }
            _ => set.push((key, value)),
        }
    }
    let put = |set: &mut LabelSet, k: &str, v: String, overwrite: bool| match set
        .binary_search_by(|(x, _)| x.as_str().cmp(k))
    {
        Ok(i) if overwrite => set[i].1 = v,
        Ok(_) => {}
        Err(i) => set.insert(i, (k.to_string(), v)),
    };
    if let Some(job) = &base.job {
        put(&mut set, "job", job.clone(), true);
    }
    if let Some(instance) = &base.instance {
        put(&mut set, "instance", instance.clone(), true);
    }
    for (k, v) in &settings.external_labels {
        put(&mut set, k, v.clone(), false);
    }
    if let Some((k, v)) = extra {
        put(&mut set, k, v, true);
    }
    put(&mut set, "__name__", name.to_string(), true);
    set.retain(|(_, v)| !v.is_empty());
    set
}

fn push(out: &mut SeriesMap, labels: LabelSet, value: f64, ts: i64) {
    let sample = Sample {
        value,
        timestamp: ts,
    };
    let next = out.samples.len();
    let i = *out.index.entry(labels).or_insert(next);
    if i == next {
        out.samples.push(vec![sample]);
    } else {
        out.samples[i].push(sample);
    }
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// Adds a metric's points; returns the points it could not translate and the latest timestamp.
fn add_metric(
    m: &Metric,
    base: &ResourceLabels,
    settings: &Settings,
    out: &mut SeriesMap,
) -> (u64, Option<i64>) {
    let mut latest: Option<i64> = None;
    let mut seen = |ts: i64| latest = Some(latest.map_or(ts, |l: i64| l.max(ts)));
    let Some(data) = &m.data else {
        return (0, None);
    };
    let stale = f64::from_bits(STALE_NAN);
    match data {
        metric::Data::Gauge(_) | metric::Data::Sum(_) => {
            let (points, monotonic) = match data {
                metric::Data::Gauge(g) => (&g.data_points, false),
                metric::Data::Sum(s) => (&s.data_points, s.is_monotonic),
                _ => return (0, None),
            };
            let kind = if monotonic {
                NameKind::Counter
            } else if matches!(data, metric::Data::Gauge(_)) {
                NameKind::Gauge
            } else {
                NameKind::Other
            };
            let name = metric_name(&m.name, &m.unit, kind, settings);
            for p in points {
                let ts = ms(p.time_unix_nano);
                seen(ts);
                let value = if p.flags & NO_RECORDED_VALUE != 0 {
                    stale
                } else {
                    match p.value {
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        None => continue,
                    }
                };
                push(
                    out,
                    labels(&p.attributes, base, settings, None, &name),
                    value,
                    ts,
                );
            }
            (0, latest)
        }
        metric::Data::Histogram(h) => {
            let name = metric_name(&m.name, &m.unit, NameKind::Other, settings);
            for p in &h.data_points {
                let ts = ms(p.time_unix_nano);
                seen(ts);
                let is_stale = p.flags & NO_RECORDED_VALUE != 0;
                let v = |x: f64| if is_stale { stale } else { x };
                if let Some(sum) = p.sum.or(is_stale.then_some(0.0)) {
                    let l = labels(&p.attributes, base, settings, None, &format!("{name}_sum"));
                    push(out, l, v(sum), ts);
                }
                let l = labels(
                    &p.attributes,
                    base,
                    settings,
                    None,
                    &format!("{name}_count"),
                );
                push(out, l, v(p.count as f64), ts);
                let bucket = format!("{name}_bucket");
                let mut cumulative = 0u64;
                for (i, bound) in p.explicit_bounds.iter().enumerate() {
                    cumulative += p.bucket_counts.get(i).copied().unwrap_or(0);
                    let l = labels(
                        &p.attributes,
                        base,
                        settings,
                        Some(("le", format_float(*bound))),
                        &bucket,
                    );
                    push(out, l, v(cumulative as f64), ts);
                }
                let l = labels(
                    &p.attributes,
                    base,
                    settings,
                    Some(("le", "+Inf".into())),
                    &bucket,
                );
                push(out, l, v(p.count as f64), ts);
            }
            (0, latest)
        }
        metric::Data::Summary(s) => {
            let name = metric_name(&m.name, &m.unit, NameKind::Other, settings);
            for p in &s.data_points {
                let ts = ms(p.time_unix_nano);
                seen(ts);
                let is_stale = p.flags & NO_RECORDED_VALUE != 0;
                let v = |x: f64| if is_stale { stale } else { x };
                let l = labels(&p.attributes, base, settings, None, &format!("{name}_sum"));
                push(out, l, v(p.sum), ts);
                let l = labels(
                    &p.attributes,
                    base,
                    settings,
                    None,
                    &format!("{name}_count"),
                );
                push(out, l, v(p.count as f64), ts);
                for q in &p.quantile_values {
                    let l = labels(
                        &p.attributes,
                        base,
                        settings,
                        Some(("quantile", format_float(q.quantile))),
                        &name,
                    );
                    push(out, l, v(q.value), ts);
                }
            }
            (0, latest)
        }
        metric::Data::ExponentialHistogram(e) => (e.data_points.len() as u64, None),
    }
}

/// `target_info` with every resource attribute but the ones `job`/`instance` come from.
fn add_target_info(
    attrs: &[KeyValue],
    base: &ResourceLabels,
    settings: &Settings,
    ts: i64,
    out: &mut SeriesMap,
) {
    let rest: Vec<KeyValue> = attrs
        .iter()
        .filter(|kv| {
            !matches!(
                kv.key.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .cloned()
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
    push(out, labels(&rest, &plain, settings, None, &name), 1.0, ts);
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
