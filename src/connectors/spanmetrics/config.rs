//! The `spanmetrics` connector's settings, with the collector's keys and defaults
//! (connector/spanmetricsconnector/config.go and factory.go).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::node::deserialize_duration;

/// The collector's default explicit buckets, in milliseconds.
const DEFAULT_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

/// The default for the exponential histogram's `max_size` (`structure.DefaultMaxSize`).
pub const DEFAULT_EXPONENTIAL_MAX_SIZE: usize = 160;

/// The series cap per resource and metric when `aggregation_cardinality_limit` is not set:
/// `dimensions_cache_size`, whose default this is (the collector leaves the count unbounded
/// and only bounds a cache; an agent on every node must not).
const DEFAULT_SERIES_CAP: usize = 1000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    pub histogram: HistogramConfig,
    pub dimensions: Vec<Dimension>,
    pub exclude_dimensions: Vec<String>,
    pub dimensions_cache_size: Option<usize>,
    pub aggregation_cardinality_limit: usize,
    pub resource_metrics_cache_size: usize,
    pub resource_metrics_key_attributes: Vec<String>,
    pub aggregation_temporality: String,
    pub namespace: String,
    #[serde(deserialize_with = "deserialize_duration")]
    pub metrics_flush_interval: Duration,
    #[serde(deserialize_with = "deserialize_duration")]
    pub metrics_expiration: Duration,
    #[serde(deserialize_with = "deserialize_duration")]
    pub series_expiration: Duration,
    pub exemplars: ExemplarsConfig,
    pub events: EventsConfig,
    pub include_instrumentation_scope: Vec<String>,
    pub add_resource_attributes: bool,
    pub calls_dimensions: Vec<Dimension>,
    pub enable_metrics_sampling_method: bool,
    pub delta_temporality: DeltaConfig,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            histogram: HistogramConfig::default(),
            dimensions: Vec::new(),
            exclude_dimensions: Vec::new(),
            dimensions_cache_size: None,
            aggregation_cardinality_limit: 0,
            resource_metrics_cache_size: 1000,
            resource_metrics_key_attributes: Vec::new(),
            aggregation_temporality: "AGGREGATION_TEMPORALITY_CUMULATIVE".to_string(),
            namespace: "traces.span.metrics".to_string(),
            metrics_flush_interval: Duration::from_secs(60),
            metrics_expiration: Duration::ZERO,
            series_expiration: Duration::ZERO,
            exemplars: ExemplarsConfig::default(),
            events: EventsConfig::default(),
            include_instrumentation_scope: Vec::new(),
            add_resource_attributes: false,
            calls_dimensions: Vec::new(),
            enable_metrics_sampling_method: false,
            delta_temporality: DeltaConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    pub name: String,
    #[serde(default, deserialize_with = "scalar_string")]
    pub default: Option<String>,
}

/// A dimension's `default` is a string in the collector; YAML may spell it as a number.
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    }))
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramConfig {
    pub disable: bool,
    pub unit: Option<String>,
    pub explicit: Option<ExplicitConfig>,
    pub exponential: Option<ExponentialConfig>,
    pub dimensions: Vec<Dimension>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplicitConfig {
    #[serde(deserialize_with = "durations")]
    pub buckets: Option<Vec<Duration>>,
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct D1(#[serde(deserialize_with = "deserialize_duration")] Duration);
    Ok(Option::<Vec<D1>>::deserialize(d)?.map(|v| v.into_iter().map(|x| x.0).collect()))
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExponentialConfig {
    pub max_size: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExemplarsConfig {
    pub enabled: bool,
    pub max_per_data_point: usize,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig {
            enabled: false,
            max_per_data_point: 5,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub enabled: bool,
    pub dimensions: Vec<Dimension>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeltaConfig {
    pub metric_timestamp_cache_size: Option<usize>,
}

/// The unit durations are recorded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Seconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
        }
    }

    /// Nanoseconds per unit.
    pub fn nanos(self) -> f64 {
        match self {
            Unit::Milliseconds => 1e6,
            Unit::Seconds => 1e9,
        }
    }
}

/// The histogram recorded per series.
#[derive(Clone, Debug, PartialEq)]
pub enum HistogramKind {
    Disabled,
    /// Upper bounds, in the unit, ascending.
    Explicit(Vec<f64>),
    Exponential {
        max_size: usize,
    },
}

const RESERVED: [&str; 4] = ["service.name", "span.kind", "status.code", "span.name"];

impl SpanMetricsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let mut seen: Vec<&str> = RESERVED.to_vec();
        for d in &self.dimensions {
            if seen.contains(&d.name.as_str()) {
                return Err(format!(
                    "failed validating dimensions: duplicate dimension name {}",
                    d.name
                ));
            }
            seen.push(&d.name);
        }
        if self.histogram.explicit.is_some() && self.histogram.exponential.is_some() {
            return Err("use either `explicit` or `exponential` buckets histogram".into());
        }
        self.unit()?;
        if let Some(b) = self
            .histogram
            .explicit
            .as_ref()
            .and_then(|e| e.buckets.as_ref())
            && b.windows(2).any(|w| w[0] >= w[1])
        {
            return Err("histogram.explicit.buckets must be in increasing order".into());
        }
        if self.dimensions_cache_size == Some(0) {
            return Err("invalid cache size: 0, the maximum number of the items in the cache should be positive".into());
        }
        if self.resource_metrics_cache_size == 0 {
            return Err("invalid resource_metrics_cache_size: 0, the maximum number of the items in the cache should be positive".into());
        }
        if self.metrics_flush_interval.is_zero() {
            return Err(
                "invalid metrics_flush_interval: 0s, the duration should be positive".into(),
            );
        }
        if self.delta_temporality.metric_timestamp_cache_size == Some(0) {
            return Err("invalid delta timestamp cache size: 0, the maximum number of the items in the cache should be positive".into());
        }
        let not_yet = |what: &str| Err(format!("{what} is not supported yet"));
        if self.events.enabled {
            return not_yet("events.enabled (the events metric)");
        }
        if !self.include_instrumentation_scope.is_empty() {
            return not_yet("include_instrumentation_scope");
        }
        if !self.calls_dimensions.is_empty() {
            return not_yet("calls_dimensions");
        }
        if !self.histogram.dimensions.is_empty() {
            return not_yet("histogram.dimensions");
        }
        if self.enable_metrics_sampling_method {
            return not_yet("enable_metrics_sampling_method");
        }
        Ok(())
    }

    pub fn unit(&self) -> Result<Unit, String> {
        match self.histogram.unit.as_deref().map(str::to_ascii_lowercase) {
            None => Ok(Unit::Milliseconds),
            Some(u) if u == "ms" => Ok(Unit::Milliseconds),
            Some(u) if u == "s" => Ok(Unit::Seconds),
            Some(_) => Err(format!(
                "unknown Unit {:?}, allowed units are \"ms\" and \"s\"",
                self.histogram.unit.as_deref().unwrap_or_default()
            )),
        }
    }

    pub fn histogram_kind(&self) -> HistogramKind {
        if self.histogram.disable {
            return HistogramKind::Disabled;
        }
        if let Some(e) = &self.histogram.exponential {
            let max_size = if e.max_size == 0 {
                DEFAULT_EXPONENTIAL_MAX_SIZE
            } else {
                e.max_size
            };
            return HistogramKind::Exponential { max_size };
        }
        let unit = self.unit().unwrap_or(Unit::Milliseconds);
        let bounds = match self
            .histogram
            .explicit
            .as_ref()
            .and_then(|e| e.buckets.as_ref())
        {
            Some(b) => b
                .iter()
                .map(|d| d.as_nanos() as f64 / unit.nanos())
                .collect(),
            None => DEFAULT_BUCKETS_MS
                .iter()
                .map(|ms| ms * 1e6 / unit.nanos())
                .collect(),
        };
        HistogramKind::Explicit(bounds)
    }

    pub fn delta(&self) -> bool {
        self.aggregation_temporality == "AGGREGATION_TEMPORALITY_DELTA"
    }

    /// Series per resource and metric before new ones fold into the overflow series.
    pub fn series_cap(&self) -> usize {
        if self.aggregation_cardinality_limit > 0 {
            self.aggregation_cardinality_limit
        } else {
            self.dimensions_cache_size.unwrap_or(DEFAULT_SERIES_CAP)
        }
    }

    /// A metric's full name: `namespace.name`, or the bare name without a namespace.
    pub fn metric_name(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.namespace)
        }
    }
}
