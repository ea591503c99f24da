//! `usan-model.toml`: what a package's model means to usan. The graph says
//! what it computes; the manifest says which signals feed it and in which
//! order, how many frames make a row, what the graph does not do to them
//! (scaling, filling gaps), what each output means (an anomaly score, a
//! per-signal reconstruction, a label, a remaining life), when a score is
//! an alarm, and where the model came from. Inert data, checked once
//! against the model with every problem reported.
//!
//! ```toml
//! format = 1
//! name = "pump-autoencoder"
//! role = "detector"                 # detector | rul | classifier
//! signals = ["temp", "flow", "vibration"]
//! window = 1                        # frames per row: [N, T, F] models take T
//!
//! [preprocessing]                   # applied before the graph, per signal
//! center = [60.0, 3.2, 0.1]
//! scale = [5.0, 0.4, 0.02]
//! missing = "skip"                  # skip the row | "hold" the last value
//!
//! [outputs]
//! reconstruction = "y"              # per-signal reconstruction: score = residual, explained by signal
//! # score = "scores"                # or an output that is the score itself,
//! # score_higher_is = "normal"      # when it points that way (IsolationForest)
//! # label = "label", probabilities = "probabilities", normal = ["pass"]; rul = "variable"
//!
//! [threshold]
//! value = 0.8                       # or quantile = 0.995 (of the golden inputs' scores)
//!
//! [provenance]
//! exporter = "torch 2.15.0 (dynamo)"
//! training_data_sha256 = "9f2c..."
//! versions = { torch = "2.15.0", numpy = "2.4.6" }
//! ```

use crate::{Inspection, ValueType};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The manifest format this usan writes and reads.
pub const FORMAT: u32 = 1;

/// What the model is for.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Scores frames (higher = more anomalous).
    Detector,
    /// Estimates remaining useful life.
    Rul,
    /// Labels frames with a class (quality, defect type).
    Classifier,
}

/// What to do with a row that has a missing value.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Give the row to the model as it is (trees route NaN; most networks give NaN).
    #[default]
    Pass,
    /// Do not score the row.
    Skip,
    /// Use the signal's last value.
    Hold,
}

/// What the graph does not hold, applied to each signal before it:
/// `(x - center) / scale`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Per-signal offsets (empty: none).
    #[serde(default)]
    pub center: Vec<f64>,
    /// Per-signal divisors (empty: none).
    #[serde(default)]
    pub scale: Vec<f64>,
    /// Rows with missing values.
    #[serde(default)]
    pub missing: Missing,
}

/// Which outputs mean what (output names as in `usan model check`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// An output whose (single) value per row is the anomaly score.
    pub score: Option<String>,
    /// Which way the score output points: `anomalous` (default: higher is
    /// more anomalous) or `normal` (scikit-learn's IsolationForest and
    /// OneClassSVM `decision_function`: usan negates it).
    #[serde(default)]
    pub score_higher_is: Direction,
    /// An output reconstructing the signals (one value per signal).
    pub reconstruction: Option<String>,
    /// A classifier's label output.
    pub label: Option<String>,
    /// The classes, in the order of the model's probability columns.
    #[serde(default)]
    pub classes: Vec<String>,
    /// A classifier's probability output (`[N, classes]`, or a ZipMap).
    pub probabilities: Option<String>,
    /// A classifier's classes that are good (a passing part): any other
    /// class is a finding, and the score is the probability of not being
    /// one of these.
    #[serde(default)]
    pub normal: Vec<String>,
    /// The remaining-useful-life output.
    pub rul: Option<String>,
}

/// What a higher value of a score output means.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is more anomalous (usan's own convention).
    #[default]
    Anomalous,
    /// Higher is more normal: usan scores its negation.
    Normal,
}

/// When a score is an alarm.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// A fixed level.
    pub value: Option<f64>,
    /// A quantile of the model's scores on the package's golden inputs
    /// (the data team's baseline rows, already preprocessed).
    pub quantile: Option<f64>,
}

/// Where the model came from.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The exporter and its version.
    pub exporter: Option<String>,
    /// Library versions used to train and export.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// SHA-256 of the training data, hex.
    pub training_data_sha256: Option<String>,
    /// When it was trained (free text, RFC 3339 advised).
    pub trained_at: Option<String>,
    /// Anything else the data team wants on record.
    pub notes: Option<String>,
}

/// A package's `usan-model.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format ([`FORMAT`]).
    pub format: u32,
    /// The model's name, shown with its findings.
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// Input signals, in the order of the model's input columns.
    pub signals: Vec<String>,
    /// Frames per row (a window of `window` frames for `[N, T, F]` models).
    #[serde(default = "one")]
    pub window: usize,
    /// What the graph does not do to the signals.
    #[serde(default)]
    pub preprocessing: Preprocessing,
    /// What the outputs mean.
    #[serde(default)]
    pub outputs: Outputs,
    /// When a score is an alarm.
    pub threshold: Option<Threshold>,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
}

fn one() -> usize {
    1
}

impl Manifest {
    /// Parses a manifest's text.
    ///
    /// # Errors
    /// TOML that is not a manifest (unknown keys included), as one message.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }

    /// Everything that does not fit the model, each as one sentence (empty
    /// when the manifest and the model agree).
    pub fn problems(&self, model: &Inspection, input_width: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if self.format != FORMAT {
            problems.push(format!("format {} is not one this usan reads ({FORMAT})", self.format));
        }
        if self.name.trim().is_empty() {
            problems.push("name is empty".into());
        }
        if self.signals.is_empty() {
            problems.push("signals is empty".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.signals {
            if !seen.insert(s) {
                problems.push(format!("signal {s} is listed twice"));
            }
        }
        if self.window == 0 {
            problems.push("window must be at least 1".into());
        } else if self.signals.len() * self.window != input_width {
            problems.push(format!(
                "{} signals × window {} = {} values per row, but the model takes {input_width}",
                self.signals.len(),
                self.window,
                self.signals.len() * self.window
            ));
        }
        for (what, values) in [("center", &self.preprocessing.center), ("scale", &self.preprocessing.scale)] {
            if !values.is_empty() && values.len() != self.signals.len() {
                problems.push(format!(
                    "preprocessing.{what} has {} values for {} signals",
                    values.len(),
                    self.signals.len()
                ));
            }
        }
        if self.preprocessing.scale.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            problems.push("preprocessing.scale holds a zero or non-finite value".into());
        }
        let outputs = &model.signature.outputs;
        let width_of = |name: &str| -> Option<Option<usize>> {
            let port = outputs.iter().find(|p| p.name == name)?;
            Some(match &port.value {
                ValueType::Tensor { shape: Some(dims), .. } => Some(
                    dims.iter().skip(1).map(|d| if let crate::Dim::Fixed(n) = d { *n as usize } else { 0 }).product(),
                ),
                _ => None,
            })
        };
        let o = &self.outputs;
        for (key, name) in [
            ("score", &o.score),
            ("reconstruction", &o.reconstruction),
            ("label", &o.label),
            ("rul", &o.rul),
            ("probabilities", &o.probabilities),
        ] {
            if let Some(name) = name {
                match width_of(name) {
                    None => problems.push(format!(
                        "outputs.{key} names {name}, which the model does not have (it has {})",
                        outputs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                    )),
                    Some(Some(w)) if key == "reconstruction" && w != self.signals.len() => problems.push(format!(
                        "outputs.reconstruction {name} has {w} values per row for {} signals",
                        self.signals.len()
                    )),
                    Some(Some(w)) if (key == "score" || key == "rul") && w != 1 => {
                        problems.push(format!("outputs.{key} {name} has {w} values per row, not one"))
                    }
                    _ => {}
                }
            }
        }
        let needs = match self.role {
            Role::Detector if o.score.is_none() && o.reconstruction.is_none() => {
                Some("outputs.score or outputs.reconstruction")
            }
            Role::Rul if o.rul.is_none() => Some("outputs.rul"),
            Role::Classifier if o.label.is_none() => Some("outputs.label"),
            _ => None,
        };
        if let Some(needs) = needs {
            let role = match self.role {
                Role::Detector => "detector",
                Role::Rul => "RUL",
                Role::Classifier => "classifier",
            };
            problems.push(format!("a {role} model needs {needs}"));
        }
        if let Some(t) = &self.threshold {
            match (t.value, t.quantile) {
                (Some(_), Some(_)) => problems.push("threshold has both value and quantile".into()),
                (None, None) => problems.push("threshold needs value or quantile".into()),
                (None, Some(q)) if !(q > 0.0 && q < 1.0) => {
                    problems.push(format!("threshold.quantile {q} is not in (0, 1)"))
                }
                _ => {}
            }
        }
        if let Some(sha) = &self.provenance.training_data_sha256
            && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
        {
            problems.push("provenance.training_data_sha256 is not 64 hex digits".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dim, ElemType, Port, Signature};
    use std::collections::HashMap;

    fn model() -> Inspection {
        let tensor = |dims: Vec<Dim>| ValueType::Tensor { elem: ElemType::Float, shape: Some(dims) };
        Inspection {
            signature: Signature {
                inputs: vec![Port { name: "x".into(), value: tensor(vec![Dim::Dynamic(None), Dim::Fixed(3)]) }],
                outputs: vec![
                    Port { name: "y".into(), value: tensor(vec![Dim::Dynamic(None), Dim::Fixed(3)]) },
                    Port { name: "s".into(), value: tensor(vec![Dim::Dynamic(None), Dim::Fixed(1)]) },
                ],
            },
            unsupported: vec![],
            producer: String::new(),
            zipmap_classes: HashMap::new(),
            recurrent: false,
        }
    }

    const GOOD: &str = r#"
format = 1
name = "pump-autoencoder"
role = "detector"
signals = ["temp", "flow", "vibration"]
[preprocessing]
center = [60.0, 3.2, 0.1]
scale = [5.0, 0.4, 0.02]
missing = "skip"
[outputs]
reconstruction = "y"
[threshold]
quantile = 0.995
[provenance]
exporter = "torch 2.15.0 (dynamo)"
versions = { torch = "2.15.0" }
"#;

    #[test]
    fn a_manifest_that_fits_its_model_has_no_problems() {
        let m = Manifest::parse(GOOD).expect("parses");
        assert_eq!((m.role, m.window, m.preprocessing.missing), (Role::Detector, 1, Missing::Skip));
        assert_eq!(m.problems(&model(), 3), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = GOOD
            .replace("format = 1", "format = 2")
            .replace(r#""temp", "flow", "vibration""#, r#""temp", "temp""#)
            .replace("reconstruction = \"y\"", "reconstruction = \"z\"\nscore = \"y\"")
            .replace("quantile = 0.995", "quantile = 1.5");
        let problems = Manifest::parse(&bad).expect("parses").problems(&model(), 3);
        let expected = [
            "format 2 is not one",
            "signal temp is listed twice",
            "2 signals × window 1 = 2 values per row, but the model takes 3",
            "preprocessing.center has 3 values for 2 signals",
            "outputs.score y has 3 values per row, not one",
            "outputs.reconstruction names z, which the model does not have (it has y, s)",
            "threshold.quantile 1.5 is not in (0, 1)",
        ];
        for e in expected {
            assert!(problems.iter().any(|p| p.contains(e)), "missing {e:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), expected.len() + 1, "and scale's length: {problems:#?}");
    }

    #[test]
    fn unknown_keys_and_roles_are_refused() {
        let err = Manifest::parse(
            &GOOD.replace("window", "windw").replace("role = \"detector\"", "role = \"detector\"\ncolour = 1"),
        )
        .expect_err("unknown key");
        assert!(err.contains("colour"), "{err}");
        let err = Manifest::parse(&GOOD.replace("\"detector\"", "\"oracle\"")).expect_err("unknown role");
        assert!(err.contains("oracle"), "{err}");
    }
}
