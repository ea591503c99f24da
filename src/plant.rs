//! The configured plant, indexed for the runtime: its assets with their
//! signals and detectors, the detector templates, and the operating mode in
//! which an asset raises no alarm. Built once from the configuration
//! ([`crate::config::Config::plant`]); sources, the engine and the API read it.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use usan_core::detector::DetectorConfig;
use usan_core::model::{AssetPath, SignalSpec};
use usan_core::threshold::ThresholdConfig;

/// One asset, indexed for the hot path.
#[derive(Debug, Clone)]
pub struct PlantAsset {
    /// Where it is.
    pub path: AssetPath,
    /// Its signals in frame order.
    pub signals: Vec<SignalSpec>,
    /// Signal name to index.
    pub signal_index: HashMap<String, usize>,
    /// Indices into [`Plant::detectors`].
    pub detectors: Vec<usize>,
    /// The operating mode without alarms: signal index and condition.
    pub suppress_alarms_when: Option<(usize, ModeCondition)>,
}

impl PlantAsset {
    /// Signal names in frame order.
    #[must_use]
    pub fn signal_names(&self) -> Vec<String> {
        self.signals.iter().map(|s| s.name.clone()).collect()
    }
}

/// The configured plant, indexed.
#[derive(Debug, Clone)]
pub struct Plant {
    /// Assets in configuration order.
    pub assets: Vec<PlantAsset>,
    /// Asset id to index.
    pub asset_index: HashMap<String, usize>,
    /// Detector templates.
    pub detectors: Vec<DetectorSpec>,
}

impl Plant {
    /// A plant of `(asset id, signal names)` without detectors (tests,
    /// fuzzing, tools that only route samples).
    #[must_use]
    pub fn of_signals(assets: &[(&str, &[&str])]) -> Plant {
        let assets: Vec<PlantAsset> = assets
            .iter()
            .map(|(id, signals)| PlantAsset {
                path: AssetPath { site: String::new(), line: String::new(), asset: (*id).to_string() },
                signals: signals
                    .iter()
                    .map(|name| SignalSpec {
                        name: (*name).to_string(),
                        unit: None,
                        lower_spec: None,
                        upper_spec: None,
                    })
                    .collect(),
                signal_index: signals.iter().enumerate().map(|(i, name)| ((*name).to_string(), i)).collect(),
                detectors: Vec::new(),
                suppress_alarms_when: None,
            })
            .collect();
        let asset_index = assets.iter().enumerate().map(|(i, a)| (a.path.asset.clone(), i)).collect();
        Plant { assets, asset_index, detectors: Vec::new() }
    }
}

/// `[[detectors]]`: a named detector, its threshold and how it learns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Name, referenced by assets and shown in findings.
    pub name: String,
    /// The algorithm and its settings (`type = "pca"`, ...), or a model
    /// package exported from Python (`type = "onnx"`).
    pub algorithm: Algorithm,
    /// Frames of each asset to learn from when no fitted model is loaded.
    #[serde(default = "default_baseline_frames")]
    pub baseline_frames: usize,
    /// Decision rule; defaults depend on the algorithm.
    #[serde(default)]
    pub threshold: Option<ThresholdConfig>,
}

fn default_baseline_frames() -> usize {
    100
}

impl DetectorSpec {
    /// The configured threshold, or the algorithm's default.
    #[must_use]
    pub fn threshold(&self) -> ThresholdConfig {
        self.threshold.clone().unwrap_or_else(|| self.algorithm.default_threshold())
    }
}

/// A detector's algorithm: one of usan's own (the core registry), which
/// learns each asset's baseline, or a model exported from Python that
/// arrives trained (`type = "onnx"`: a package, see docs/models.md).
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// A detector of usan's registry.
    Native(DetectorConfig),
    /// A model package.
    Onnx(OnnxAlgorithm),
}

/// `algorithm = { type = "onnx", package = "...", signals = { ... } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxAlgorithm {
    /// The package folder (`model.onnx`, `usan-model.toml`, `golden/`),
    /// relative to the configuration file.
    pub package: PathBuf,
    /// The manifest's signal name → the asset's signal, where they differ.
    #[serde(default)]
    pub signals: BTreeMap<String, String>,
}

/// The `type` of [`Algorithm::Onnx`].
pub const ONNX: &str = "onnx";

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut value = toml::Value::deserialize(deserializer)?;
        let is_onnx = value.get("type").and_then(toml::Value::as_str) == Some(ONNX);
        if is_onnx {
            if let Some(table) = value.as_table_mut() {
                table.remove("type");
            }
            return OnnxAlgorithm::deserialize(value).map(Algorithm::Onnx).map_err(D::Error::custom);
        }
        DetectorConfig::deserialize(value).map(Algorithm::Native).map_err(|e| {
            // The registry lists its own kinds; `onnx` is one more.
            let mut text = e.to_string();
            if let Some(start) = text.find("expected one of") {
                let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                text.insert_str(end, &format!(", `{ONNX}`"));
            }
            D::Error::custom(text)
        })
    }
}

impl Algorithm {
    /// The `type` it was configured with.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Algorithm::Native(config) => config.kind(),
            Algorithm::Onnx(_) => ONNX,
        }
    }

    /// Every problem with the settings (empty when valid). A package's own
    /// problems are found when it is loaded (`usan check`, start).
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        match self {
            Algorithm::Native(config) => config.validate(),
            Algorithm::Onnx(onnx) if onnx.package.as_os_str().is_empty() => vec!["package is empty".into()],
            Algorithm::Onnx(_) => Vec::new(),
        }
    }

    /// Frames it needs before it can score (a package needs none).
    #[must_use]
    pub fn min_baseline_rows(&self) -> usize {
        match self {
            Algorithm::Native(config) => config.min_baseline_rows(),
            Algorithm::Onnx(_) => 0,
        }
    }

    /// The threshold when neither the configuration nor (for a package)
    /// its manifest gives one.
    #[must_use]
    pub fn default_threshold(&self) -> ThresholdConfig {
        match self {
            Algorithm::Native(config) => config.default_threshold(),
            Algorithm::Onnx(_) => ThresholdConfig { value: None, quantile: Some(0.995), ..ThresholdConfig::fixed(0.0) },
        }
    }

    /// usan's own detector, when it is one.
    #[must_use]
    pub fn native(&self) -> Option<&DetectorConfig> {
        match self {
            Algorithm::Native(config) => Some(config),
            Algorithm::Onnx(_) => None,
        }
    }
}

/// A condition on one signal's value in a frame: any of `equals`, `below`,
/// `above` that is given must hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeCondition {
    /// The signal (one of the asset's).
    pub signal: String,
    /// Holds when the value is one of these.
    #[serde(default)]
    pub equals: Option<Vec<f64>>,
    /// Holds when the value is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Holds when the value is above this.
    #[serde(default)]
    pub above: Option<f64>,
}

impl ModeCondition {
    /// Whether `value` is in the mode (a missing value is not).
    #[must_use]
    pub fn holds(&self, value: f64) -> bool {
        !value.is_nan()
            && self.equals.as_ref().is_none_or(|set| set.contains(&value))
            && self.below.is_none_or(|b| value < b)
            && self.above.is_none_or(|a| value > a)
    }
}
