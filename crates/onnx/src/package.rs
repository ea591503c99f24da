//! A model package: a folder with `model.onnx`, the golden vectors the
//! exporter recorded (`golden/inputs.csv`, `golden/outputs.csv`, in the
//! `usan model run` formats) and, for the pipeline, `usan-model.toml`
//! ([`crate::manifest`]). Loading a package runs the goldens and
//! refuses the model when usan's outputs differ from onnxruntime's beyond
//! the tolerances, naming the worst value: a model that scores differently
//! on the edge box than in the notebook must not raise alarms.

use crate::manifest::Manifest;
use crate::table::{self, Comparison};
use crate::{Model, OnnxError};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where a model's files are.
#[derive(Clone, Debug, PartialEq)]
pub struct Package {
    /// The ONNX file.
    pub model: PathBuf,
    /// Golden inputs and outputs, when the package has them.
    pub golden: Option<(PathBuf, PathBuf)>,
    /// `usan-model.toml`, when the package has one.
    pub manifest: Option<Manifest>,
}

impl Package {
    /// A folder (a package) or an `.onnx` file (a bare model).
    ///
    /// # Errors
    /// A folder without `model.onnx`, or one golden file without the other.
    pub fn open(path: &Path) -> Result<Self, OnnxError> {
        if !path.is_dir() {
            return Ok(Self { model: path.to_path_buf(), golden: None, manifest: None });
        }
        let model = path.join("model.onnx");
        if !model.is_file() {
            return Err(OnnxError::Input(format!("{} is a folder without model.onnx", path.display())));
        }
        let (inputs, outputs) = (path.join("golden").join("inputs.csv"), path.join("golden").join("outputs.csv"));
        let golden = match (inputs.is_file(), outputs.is_file()) {
            (true, true) => Some((inputs, outputs)),
            (false, false) => None,
            _ => {
                return Err(OnnxError::Input(format!(
                    "{} has one of golden/inputs.csv and golden/outputs.csv",
                    path.display()
                )));
            }
        };
        let manifest_path = path.join("usan-model.toml");
        let manifest = if manifest_path.is_file() {
            let text = std::fs::read_to_string(&manifest_path)
                .map_err(|e| OnnxError::Input(format!("cannot read {}: {e}", manifest_path.display())))?;
            Some(Manifest::parse(&text).map_err(|e| OnnxError::Manifest(vec![e]))?)
        } else {
            None
        };
        Ok(Self { model, golden, manifest })
    }

    /// Reads and builds the model, then checks it against the goldens.
    ///
    /// # Errors
    /// What [`Model::load`] refuses, an unreadable file, or
    /// [`OnnxError::Golden`] when an output is outside the tolerances.
    pub fn load(&self) -> Result<(Model, Option<Comparison>), OnnxError> {
        let bytes = std::fs::read(&self.model)
            .map_err(|e| OnnxError::Input(format!("cannot read {}: {e}", self.model.display())))?;
        let model = Model::load(&bytes, None)?;
        if let Some(manifest) = &self.manifest {
            let problems = manifest.problems(model.inspection(), model.input_width());
            if !problems.is_empty() {
                return Err(OnnxError::Manifest(problems));
            }
        }
        let Some((inputs, outputs)) = &self.golden else {
            return Ok((model, None));
        };
        let open = |p: &Path| File::open(p).map_err(|e| OnnxError::Input(format!("cannot read {}: {e}", p.display())));
        let rows = table::read_rows(open(inputs)?, model.input_width(), model.takes_f32())?;
        let results = model.run(rows.count, &rows.values)?;
        let comparison = table::compare(&results, rows.count, open(outputs)?)?;
        if let Some(worst) = comparison.mismatch.clone() {
            return Err(OnnxError::Golden(worst));
        }
        Ok((model, Some(comparison)))
    }

    /// The golden inputs as the model takes them, when the package has
    /// them: the data team's baseline rows (a manifest's threshold
    /// quantile is taken over their scores).
    ///
    /// # Errors
    /// An unreadable file or rows that do not fit the model.
    pub fn golden_inputs(&self, model: &Model) -> Result<Option<table::Rows>, OnnxError> {
        let Some((inputs, _)) = &self.golden else {
            return Ok(None);
        };
        let file =
            File::open(inputs).map_err(|e| OnnxError::Input(format!("cannot read {}: {e}", inputs.display())))?;
        table::read_rows(file, model.input_width(), model.takes_f32()).map(Some)
    }
}
