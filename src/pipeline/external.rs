//! Detectors that arrive trained: model packages exported from Python
//! (`algorithm = { type = "onnx", package = "..." }`, docs/models.md).
//!
//! A package is loaded once at start, checked against its goldens (a model
//! that scores differently here than in the notebook is refused, and the
//! assets that use it show why while the rest runs) and shared by every
//! asset that names its detector; each asset binds the manifest's signals
//! to its own and keeps its own stream (held values, the window of frames).
//! The frames of every asset that runs a package and has a batch waiting
//! are scored in one model call (`Worker::score_packages`).

use crate::plant::{Algorithm, OnnxAlgorithm, Plant, PlantAsset};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// What the API and the dashboard show about a package: what it is and
/// where it came from.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct ModelInfo {
    /// The manifest's name.
    pub name: String,
    /// `detector`, `classifier` or `rul`.
    pub role: &'static str,
    /// The package folder.
    pub package: String,
    /// The program that wrote the ONNX file (`skl2onnx 1.20.0`).
    pub producer: String,
    /// The manifest's provenance: the exporter and its version.
    pub exporter: Option<String>,
    /// Library versions used to train and export.
    pub versions: BTreeMap<String, String>,
    /// SHA-256 of the training data.
    pub training_data_sha256: Option<String>,
    /// When it was trained.
    pub trained_at: Option<String>,
    /// Golden rows checked against onnxruntime's outputs at load (0: none).
    pub golden_rows: usize,
}

/// What a package is loaded for: its manifest's `role` must say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `[[detectors]]` with `type = "onnx"`: a detector or a classifier.
    Detector,
    /// `[[rul]]` with a package folder as its model.
    Rul,
}

impl Purpose {
    fn word(self) -> &'static str {
        match self {
            Purpose::Detector => "detector",
            Purpose::Rul => "rul",
        }
    }
}

/// A loaded package.
pub struct ExternalModel {
    /// What it is.
    pub info: ModelInfo,
    /// Its alarm level from the manifest: a value, or the quantile of its
    /// scores on the golden inputs (a classifier's: 0.5 by default).
    pub level: Option<f64>,
    /// A classifier: each frame (a part) is judged alone by default.
    pub classifier: bool,
    /// SHA-256 of the model file and the manifest (hex): a level learned
    /// with another package is not taken up.
    pub digest: String,
    #[cfg(feature = "onnx")]
    scorer: usan_onnx::Scorer,
}

/// One asset's use of a package.
pub struct ExternalRun {
    /// The package.
    pub model: Arc<ExternalModel>,
    /// Per manifest signal, its index in the asset's frame.
    columns: Vec<usize>,
    #[cfg(feature = "onnx")]
    stream: usan_onnx::Stream,
}

/// A scored frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The score (a detector's), the remaining life (a RUL model's) or the
    /// probability of a class that is not good (a classifier's).
    pub value: f64,
    /// Contributions in the asset's signal order (empty when the model
    /// gives none).
    pub contributions: Vec<f64>,
    /// A classifier's predicted class.
    pub label: Option<String>,
}

/// Every package detector of a plant by detector index, or why it was refused.
pub type Loaded = HashMap<usize, Result<Arc<ExternalModel>, String>>;

/// Load the package of every `type = "onnx"` detector. A package that
/// cannot be used is refused with its reason: its assets show it and the
/// rest of the plant runs.
#[must_use]
pub fn load_all(plant: &Plant) -> Loaded {
    plant
        .detectors
        .iter()
        .enumerate()
        .filter_map(|(d, spec)| match &spec.algorithm {
            Algorithm::Onnx(config) => Some((
                d,
                ExternalModel::load(config).map(Arc::new).map_err(|e| {
                    format!("detector {}: package {} refused: {e:#}", spec.name, config.package.display())
                }),
            )),
            Algorithm::Native(_) => None,
        })
        .collect()
}

/// What keeps a plant's packages from running: each refused package and
/// each asset that lacks a signal its package reads (`usan check`).
#[must_use]
pub fn problems(plant: &Plant, loaded: &Loaded) -> Vec<String> {
    let mut problems: Vec<String> = loaded.values().filter_map(|l| l.as_ref().err().cloned()).collect();
    problems.sort();
    for asset in &plant.assets {
        for &d in &asset.detectors {
            if let (Algorithm::Onnx(config), Some(Ok(model))) = (&plant.detectors[d].algorithm, loaded.get(&d))
                && let Err(why) = model.bind(asset, &config.signals)
            {
                problems.push(format!("detector {}: {why}", plant.detectors[d].name));
            }
        }
    }
    problems
}

/// SHA-256 (hex) of a package's files, in order.
#[cfg(feature = "onnx")]
fn package_digest(model: &Path, manifest: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for file in [model, manifest] {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        digest.update(&(bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
    }
    Ok(digest.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

impl ExternalModel {
    /// Load the package of a detector.
    ///
    /// # Errors
    /// A package without a manifest, a model usan cannot run, a manifest
    /// that is not a detector's or does not fit, outputs that differ from
    /// the goldens: each says which.
    pub fn load(config: &OnnxAlgorithm) -> anyhow::Result<Self> {
        Self::load_package(&config.package, Purpose::Detector)
    }

    /// Load a package for `purpose`.
    ///
    /// # Errors
    /// As [`load`](Self::load), and a manifest whose role is not `purpose`.
    #[cfg(feature = "onnx")]
    pub fn load_package(path: &Path, purpose: Purpose) -> anyhow::Result<Self> {
        use anyhow::Context;
        if !path.exists() {
            anyhow::bail!("{} does not exist", path.display());
        }
        let package = usan_onnx::Package::open(path)?;
        let Some(manifest) = package.manifest.clone() else {
            anyhow::bail!("{} has no usan-model.toml: a detector needs one (docs/models.md)", path.display());
        };
        use usan_onnx::manifest::Role;
        let fits = match purpose {
            Purpose::Detector => matches!(manifest.role, Role::Detector | Role::Classifier),
            Purpose::Rul => manifest.role == Role::Rul,
        };
        if !fits {
            anyhow::bail!("{}: its manifest's role is not {}", path.display(), purpose.word());
        }
        let classifier = manifest.role == Role::Classifier;
        let digest = package_digest(&package.model, &path.join("usan-model.toml"))?;
        let (model, comparison) = package.load()?;
        let golden = package.golden_inputs(&model)?;
        let scorer = usan_onnx::Scorer::new(model, manifest.clone())?;
        let level = match &manifest.threshold {
            Some(usan_onnx::manifest::Threshold { value: Some(v), .. }) => Some(*v),
            Some(usan_onnx::manifest::Threshold { quantile: Some(q), .. }) => {
                let rows = golden.with_context(|| {
                    format!("threshold.quantile is taken over the golden inputs, and {} has none", path.display())
                })?;
                let scores: Vec<f64> =
                    scorer.score_model_rows(rows.count, &rows.values)?.into_iter().flatten().map(|s| s.value).collect();
                let level = usan_core::stats::quantile(&scores, *q)
                    .with_context(|| format!("{}: no golden input gets a score", path.display()))?;
                Some(level)
            }
            // A part is bad when a bad class is more likely than not.
            _ if classifier => Some(0.5),
            _ => None,
        };
        let p = &manifest.provenance;
        let info = ModelInfo {
            name: manifest.name.clone(),
            role: match manifest.role {
                Role::Detector => "detector",
                Role::Rul => "rul",
                Role::Classifier => "classifier",
            },
            package: path.display().to_string(),
            producer: scorer.model().inspection().producer.clone(),
            exporter: p.exporter.clone(),
            versions: p.versions.clone(),
            training_data_sha256: p.training_data_sha256.clone(),
            trained_at: p.trained_at.clone(),
            golden_rows: comparison.map_or(0, |c| c.rows),
        };
        Ok(Self { info, level, classifier, digest, scorer })
    }

    /// Load a package for `purpose`.
    ///
    /// # Errors
    /// Always: this build has no ONNX runtime.
    #[cfg(not(feature = "onnx"))]
    pub fn load_package(path: &Path, purpose: Purpose) -> anyhow::Result<Self> {
        anyhow::bail!("{}: a {} package needs the `onnx` feature, not in this build", path.display(), purpose.word())
    }

    /// The manifest's signals, in the model's order.
    fn signals(&self) -> &[String] {
        #[cfg(feature = "onnx")]
        return self.scorer.signals();
        #[cfg(not(feature = "onnx"))]
        return &[];
    }

    /// Bind the package to an asset's signals (`names` maps a manifest
    /// name to the asset's, where they differ).
    ///
    /// # Errors
    /// The signals the asset lacks, named.
    pub fn bind(self: &Arc<Self>, asset: &PlantAsset, names: &BTreeMap<String, String>) -> Result<ExternalRun, String> {
        let wanted: Vec<&str> =
            self.signals().iter().map(|s| names.get(s).map_or(s.as_str(), String::as_str)).collect();
        let columns: Vec<Option<usize>> = wanted.iter().map(|s| asset.signal_index.get(*s).copied()).collect();
        let missing: Vec<&str> = wanted.iter().zip(&columns).filter(|(_, c)| c.is_none()).map(|(s, _)| *s).collect();
        if !missing.is_empty() {
            return Err(format!(
                "model {} reads signal{} {} that asset {} does not have (map names with `signals = {{ model_name = \"signal\" }}`)",
                self.info.name,
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                asset.path.asset
            ));
        }
        Ok(ExternalRun {
            model: self.clone(),
            columns: columns.into_iter().flatten().collect(),
            #[cfg(feature = "onnx")]
            stream: usan_onnx::Stream::default(),
        })
    }
}

impl ExternalRun {
    /// Score an asset's frames (values, indices of values the assembler
    /// filled in) in order, in one model call: `None` for a frame the
    /// model does not score (its window still filling, a gap
    /// the manifest skips, no usable output).
    ///
    /// # Errors
    /// A failure inside the model.
    pub fn score<'a>(
        &mut self,
        frames: impl Iterator<Item = (&'a [f64], &'a [usize])>,
        signals: usize,
    ) -> anyhow::Result<Vec<Option<Scored>>> {
        let prepared = self.prepare(frames)?;
        let scored = self.model.score_prepared(std::slice::from_ref(&prepared))?.pop().unwrap_or_default();
        Ok(self.finish(scored, signals))
    }

    /// An asset's frames as the package's model rows, advancing the
    /// asset's stream (held values, window): the first half of
    /// [`score`](Self::score), so that the rows of many assets go into one
    /// model call ([`ExternalModel::score_prepared`]).
    ///
    /// # Errors
    /// A frame the model cannot read.
    #[cfg(feature = "onnx")]
    pub fn prepare<'a>(&mut self, frames: impl Iterator<Item = (&'a [f64], &'a [usize])>) -> anyhow::Result<Prepared> {
        // A value the frame assembler filled in was not measured: the model
        // sees a gap, and the manifest's `missing` rule decides.
        let picked: Vec<Vec<f64>> = frames
            .map(|(values, filled)| {
                self.columns
                    .iter()
                    .map(|&c| if filled.contains(&c) { f64::NAN } else { values.get(c).copied().unwrap_or(f64::NAN) })
                    .collect()
            })
            .collect();
        Ok(self.model.scorer.prepare(&mut self.stream, &picked)?)
    }

    /// An asset's frames as model rows.
    ///
    /// # Errors
    /// Always: this build has no ONNX runtime (no run is ever bound).
    #[cfg(not(feature = "onnx"))]
    pub fn prepare<'a>(&mut self, _frames: impl Iterator<Item = (&'a [f64], &'a [usize])>) -> anyhow::Result<Prepared> {
        anyhow::bail!("this usan was built without the `onnx` feature")
    }

    /// The second half of [`score`](Self::score): the model's scores of
    /// this asset's prepared frames, with contributions in the asset's
    /// signal order (`signals` of them).
    #[must_use]
    pub fn finish(&self, scored: Vec<Option<ModelScored>>, signals: usize) -> Vec<Option<Scored>> {
        scored
            .into_iter()
            .map(|s| {
                s.map(|s| {
                    let mut contributions = vec![0.0; if s.contributions.is_empty() { 0 } else { signals }];
                    for (&c, v) in self.columns.iter().zip(&s.contributions) {
                        contributions[c] += v;
                    }
                    Scored { value: s.value, contributions, label: s.label }
                })
            })
            .collect()
    }
}

impl ExternalModel {
    /// Scores the prepared frames of one or many assets in one model call
    /// ([`ExternalRun::prepare`]), per batch in the order given.
    ///
    /// # Errors
    /// A failure inside the model (it fails every batch of the call).
    #[cfg(feature = "onnx")]
    pub fn score_prepared(&self, batches: &[Prepared]) -> anyhow::Result<Vec<Vec<Option<ModelScored>>>> {
        Ok(self.scorer.score_prepared(batches)?)
    }

    /// Scores prepared frames.
    ///
    /// # Errors
    /// Always: this build has no ONNX runtime.
    #[cfg(not(feature = "onnx"))]
    pub fn score_prepared(&self, _batches: &[Prepared]) -> anyhow::Result<Vec<Vec<Option<ModelScored>>>> {
        anyhow::bail!("this usan was built without the `onnx` feature")
    }
}

/// An asset's frames as a package's model rows ([`ExternalRun::prepare`]).
#[cfg(feature = "onnx")]
pub use usan_onnx::Prepared;
/// A model's score of a frame, contributions in the package's signal order.
#[cfg(feature = "onnx")]
pub use usan_onnx::Scored as ModelScored;

/// Frames as model rows (none in a build without ONNX).
#[cfg(not(feature = "onnx"))]
#[derive(Debug, Default)]
pub struct Prepared;

/// A model's score (none in a build without ONNX).
#[cfg(not(feature = "onnx"))]
#[derive(Debug, Clone)]
pub struct ModelScored {
    value: f64,
    contributions: Vec<f64>,
    label: Option<String>,
}
