//! Settings of the `cardinality` processor (sluice's own; not a collector component).

use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer};

use super::aggregate::GaugeAggregation;
use crate::config::node::deserialize_duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardinalityConfig {
    /// Label (attribute) names removed everywhere, exactly.
    pub drop_labels: Vec<String>,
    /// Regular expressions; a label whose name matches anywhere is removed.
    pub drop_label_patterns: Vec<String>,
    /// Output series per metric stream, the overflow series included; 0: no limit.
    pub max_series_per_metric: usize,
    /// Distinct values a label may take per metric within `window`; 0: no limit.
    pub max_values_per_label: usize,
    /// How long distinct values are remembered, and how long idle series are kept.
    #[serde(deserialize_with = "deserialize_duration")]
    pub window: Duration,
    /// Labels never removed by a pattern or the value limit.
    pub exempt_labels: Vec<String>,
    #[serde(deserialize_with = "deserialize_gauge_aggregation")]
    pub gauge_aggregation: GaugeAggregation,
    /// How often aggregated metric points are sent; 0s sends after every batch.
    #[serde(deserialize_with = "deserialize_duration")]
    pub flush_interval: Duration,
}

impl Default for CardinalityConfig {
    fn default() -> Self {
        CardinalityConfig {
            drop_labels: Vec::new(),
            drop_label_patterns: Vec::new(),
            max_series_per_metric: 0,
            max_values_per_label: 0,
            window: Duration::from_secs(600),
            exempt_labels: Vec::new(),
            gauge_aggregation: GaugeAggregation::Last,
            flush_interval: Duration::from_secs(10),
        }
    }
}

impl CardinalityConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.patterns()?;
        if self.window.is_zero() {
            return Err("window must be greater than zero".into());
        }
        if self.flush_interval > self.window {
            return Err("flush_interval must not be longer than window".into());
        }
        if let Some(both) = self
            .drop_labels
            .iter()
            .find(|l| self.exempt_labels.contains(l))
        {
            return Err(format!(
                "label `{both}` is both in drop_labels and in exempt_labels"
            ));
        }
        Ok(())
    }

    pub fn patterns(&self) -> Result<Vec<Regex>, String> {
        self.drop_label_patterns
            .iter()
            .map(|p| {
                Regex::new(p)
                    .map_err(|e| format!("drop_label_patterns: invalid pattern {p:?}: {e}"))
            })
            .collect()
    }
}

fn deserialize_gauge_aggregation<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<GaugeAggregation, D::Error> {
    let text = String::deserialize(d)?;
    match text.as_str() {
        "last" => Ok(GaugeAggregation::Last),
        "sum" => Ok(GaugeAggregation::Sum),
        "max" => Ok(GaugeAggregation::Max),
        "min" => Ok(GaugeAggregation::Min),
        other => Err(serde::de::Error::custom(format!(
            "unknown gauge_aggregation `{other}` (expected last, sum, max or min)"
        ))),
    }
}
