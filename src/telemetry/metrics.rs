//! A small self-metrics registry rendered in the Prometheus text format. Components get
//! atomic handles once at build time, so recording on the hot path is one atomic add.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed bucket bounds.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramState>);

#[derive(Debug)]
struct HistogramState {
    bounds: Vec<f64>,
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram(Arc::new(HistogramState {
            bounds: bounds.to_vec(),
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }))
    }

    pub fn record(&self, value: u64) {
        let s = &self.0;
        if let Some(i) = s.bounds.iter().position(|b| value as f64 <= *b) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        s.count.fetch_add(1, Ordering::Relaxed);
        s.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Debug)]
enum Instrument {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Series {
    name: String,
    help: &'static str,
    labels: String,
    instrument: Instrument,
}

/// All self-metrics of one agent process.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    series: Arc<Mutex<Vec<Series>>>,
}

impl Registry {
    pub fn counter(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
        match self.get_or_insert(name, help, labels, || {
            Instrument::Counter(Counter::default())
        }) {
            Instrument::Counter(c) => c,
            _ => Counter::default(),
        }
    }

    pub fn gauge(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        match self.get_or_insert(name, help, labels, || Instrument::Gauge(Gauge::default())) {
            Instrument::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &'static str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Histogram {
        match self.get_or_insert(name, help, labels, || {
            Instrument::Histogram(Histogram::new(bounds))
        }) {
            Instrument::Histogram(h) => h,
            _ => Histogram::new(bounds),
        }
    }

    fn get_or_insert(
        &self,
        name: &str,
        help: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Instrument,
    ) -> Instrument {
        let labels = render_labels(labels);
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = series.iter().find(|s| s.name == name && s.labels == labels) {
            return s.instrument.clone();
        }
        let instrument = make();
        series.push(Series {
            name: name.to_string(),
            help,
            labels,
            instrument: instrument.clone(),
        });
        instrument
    }

    /// The value of a counter or gauge, summed over all label sets whose rendering contains
    /// `label_filter`; for tests and the periodic summary line.
    pub fn value(&self, name: &str, label_filter: &str) -> u64 {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .iter()
            .filter(|s| s.name == name && s.labels.contains(label_filter))
            .map(|s| match &s.instrument {
                Instrument::Counter(c) => c.get(),
                Instrument::Gauge(g) => g.get().max(0) as u64,
                Instrument::Histogram(h) => h.count(),
            })
            .sum()
    }

    /// Renders every series in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut out = String::new();
        for name in names {
            let mut first = true;
            for s in series.iter().filter(|s| s.name == name) {
                if first {
                    let kind = match s.instrument {
                        Instrument::Counter(_) => "counter",
                        Instrument::Gauge(_) => "gauge",
                        Instrument::Histogram(_) => "histogram",
                    };
                    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", s.help);
                    first = false;
                }
                render_series(&mut out, s);
            }
        }
        out
    }
}

fn render_series(out: &mut String, s: &Series) {
    let name = &s.name;
    let braces = |extra: &str| -> String {
        match (s.labels.is_empty(), extra.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("{{{extra}}}"),
            (false, true) => format!("{{{}}}", s.labels),
            (false, false) => format!("{{{},{extra}}}", s.labels),
        }
    };
    match &s.instrument {
        Instrument::Counter(c) => {
            let _ = writeln!(out, "{name}{} {}", braces(""), c.get());
        }
        Instrument::Gauge(g) => {
            let _ = writeln!(out, "{name}{} {}", braces(""), g.get());
        }
        Instrument::Histogram(h) => {
            let st = &h.0;
            let mut cumulative = 0;
            for (bound, bucket) in st.bounds.iter().zip(&st.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = format!("le=\"{bound}\"");
                let _ = writeln!(out, "{name}_bucket{} {cumulative}", braces(&le));
            }
            let count = st.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{} {count}", braces("le=\"+Inf\""));
            let _ = writeln!(
                out,
                "{name}_sum{} {}",
                braces(""),
                st.sum.load(Ordering::Relaxed)
            );
            let _ = writeln!(out, "{name}_count{} {count}", braces(""));
        }
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{escaped}\"");
    }
    out
}

/// The counters every receiver keeps, with the collector's names.
#[derive(Clone, Debug)]
pub struct ReceiverMetrics {
    pub accepted: Counter,
    pub refused: Counter,
}

impl ReceiverMetrics {
    pub fn new(
        registry: &Registry,
        receiver: &str,
        transport: &str,
        signal: crate::otlp::Signal,
    ) -> Self {
        let item = signal.item_name();
        let labels = [("receiver", receiver), ("transport", transport)];
        ReceiverMetrics {
            accepted: registry.counter(
                &format!("otelcol_receiver_accepted_{item}_total"),
                "Items successfully pushed into the pipeline.",
                &labels,
            ),
            refused: registry.counter(
                &format!("otelcol_receiver_refused_{item}_total"),
                "Items that could not be pushed into the pipeline.",
                &labels,
            ),
        }
    }
}

/// The counters and gauges every exporter keeps, with the collector's names.
#[derive(Clone, Debug)]
pub struct ExporterMetrics {
    pub sent: Counter,
    pub send_failed: Counter,
    pub enqueue_failed: Counter,
    pub retries: Counter,
}

impl ExporterMetrics {
    pub fn new(registry: &Registry, exporter: &str, signal: crate::otlp::Signal) -> Self {
        let item = signal.item_name();
        let labels = [("exporter", exporter)];
        ExporterMetrics {
            sent: registry.counter(
                &format!("otelcol_exporter_sent_{item}_total"),
                "Items successfully sent to destination.",
                &labels,
            ),
            send_failed: registry.counter(
                &format!("otelcol_exporter_send_failed_{item}_total"),
                "Items that failed to be sent to destination and were dropped.",
                &labels,
            ),
            enqueue_failed: registry.counter(
                &format!("otelcol_exporter_enqueue_failed_{item}_total"),
                "Items dropped because the sending queue was full.",
                &labels,
            ),
            retries: registry.counter(
                &format!("sluice_exporter_retries_{item}_total"),
                "Items whose send was retried after a retryable failure.",
                &labels,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let r = Registry::default();
        r.counter("a_total", "A.", &[("exporter", "otlp/x")]).add(3);
        r.counter("a_total", "A.", &[("exporter", "otlp/x")]).add(2);
        r.gauge("q", "Q.", &[]).set(7);
        let h = r.histogram("h", "H.", &[("p", "batch")], &[10.0, 100.0]);
        h.record(5);
        h.record(50);
        h.record(500);
        let text = r.render();
        assert!(text.contains("a_total{exporter=\"otlp/x\"} 5"), "{text}");
        assert!(text.contains("q 7"));
        assert!(text.contains("h_bucket{p=\"batch\",le=\"10\"} 1"));
        assert!(text.contains("h_bucket{p=\"batch\",le=\"100\"} 2"));
        assert!(text.contains("h_bucket{p=\"batch\",le=\"+Inf\"} 3"));
        assert!(text.contains("h_sum{p=\"batch\"} 555"));
        assert_eq!(r.value("a_total", "otlp/x"), 5);
    }
}
