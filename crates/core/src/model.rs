//! The plant data model shared by every part of usan.
//!
//! Names follow ISA-95: an enterprise has sites, a site has lines (areas),
//! a line has assets (equipment), an asset has signals (tags). Samples are
//! addressed by index into an asset's signal list once they enter the
//! engine, so the hot path never compares strings.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp `ms` milliseconds later (earlier when negative).
    #[must_use]
    pub fn add_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// OPC UA style quality of a sample. Only `Good` samples are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// A trustworthy measurement.
    #[default]
    Good,
    /// A measurement the source itself doubts (e.g. sensor out of calibration).
    Uncertain,
    /// Not a measurement (comm failure, sensor fault): kept, never scored.
    Bad,
}

/// The place of an asset in the plant hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetPath {
    /// Site (plant) name.
    pub site: String,
    /// Line or area within the site.
    pub line: String,
    /// Asset (equipment) identifier, unique across the configuration.
    pub asset: String,
}

impl fmt::Display for AssetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.site, self.line, self.asset)
    }
}

/// A measured quantity of an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalSpec {
    /// Name, unique within its asset.
    pub name: String,
    /// Engineering unit, free text (e.g. `degC`, `bar`, `rpm`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Lower specification limit, for SPC and capability.
    #[serde(default)]
    pub lower_spec: Option<f64>,
    /// Upper specification limit, for SPC and capability.
    #[serde(default)]
    pub upper_spec: Option<f64>,
}

/// One measurement of one signal of one asset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Index into the asset's signal list.
    pub signal: usize,
    /// When the value was measured.
    pub ts: Timestamp,
    /// The measured value.
    pub value: f64,
    /// How far the source trusts the value.
    pub quality: Quality,
}

/// How much one signal pushed a score up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Signal name.
    pub signal: String,
    /// Share of the score explained by this signal, in score units.
    pub value: f64,
}

/// The outcome of scoring one frame with one detector and its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Asset identifier.
    pub asset: String,
    /// Detector name as configured.
    pub detector: String,
    /// Frame timestamp.
    pub ts: Timestamp,
    /// Anomaly score: higher is more anomalous.
    pub score: f64,
    /// The threshold the score was compared with.
    pub threshold: f64,
    /// Whether the threshold (with persistence) declared the frame anomalous.
    pub anomalous: bool,
    /// Per-signal contributions, largest first.
    pub contributions: Vec<Contribution>,
    /// For detectors that watch several statistics (PCA: T² and SPE), each
    /// one with its limit and its own contributions, largest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<StatisticFinding>,
}

/// One statistic behind a [`Finding`], explained per signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticFinding {
    /// Short name: `t2` or `spe`.
    pub name: String,
    /// The statistic's value.
    pub value: f64,
    /// Its control limit.
    pub limit: f64,
    /// Per-signal shares of `value / limit`, largest first.
    pub contributions: Vec<Contribution>,
}

impl Finding {
    /// Contributions sorted largest first, keeping the `top` largest.
    #[must_use]
    pub fn ranked_contributions(signals: &[String], values: &[f64], top: usize) -> Vec<Contribution> {
        let mut ranked: Vec<Contribution> = signals
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite())
            .map(|(s, v)| Contribution { signal: s.clone(), value: *v })
            .collect();
        ranked.sort_by(|a, b| b.value.total_cmp(&a.value));
        ranked.truncate(top);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_are_ranked_and_truncated() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let ranked = Finding::ranked_contributions(&names, &[0.1, f64::NAN, 2.0], 5);
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].signal, "c");
        assert_eq!(ranked[1].signal, "a");
        let top1 = Finding::ranked_contributions(&names, &[0.1, 0.5, 2.0], 1);
        assert_eq!(top1.len(), 1);
    }

    #[test]
    fn quality_serde_is_lowercase() {
        assert_eq!(serde_json::to_string(&Quality::Bad).unwrap(), "\"bad\"");
        let q: Quality = serde_json::from_str("\"uncertain\"").unwrap();
        assert_eq!(q, Quality::Uncertain);
    }
}
