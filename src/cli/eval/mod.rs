//! `usan eval`: the detectors on public benchmarks, in the layouts the
//! benchmarks' scorers read (see `../shared/bench/README.md`).
//!
//! Each benchmark reads any folder in its layout, writes one prediction file
//! per input file, and prints its own metrics (the scorers' definitions),
//! the settings it used and its wall time. Settings come from a TOML file
//! (`--settings`) whose sections override the defaults below, so users
//! evaluate their own detector settings the same way. Labels are read only
//! to print metrics, never to fit or to choose a threshold.

pub mod cmapss;
mod cross_validation;
pub mod nab;
pub mod secom;
pub mod skab;
pub mod steel;
pub mod tep;
pub mod validation;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use usan_core::detector::{DetectorConfig, LimitMethod, PcaConfig};
use usan_core::threshold::ThresholdConfig;

/// `usan eval` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which benchmark.
    #[arg(value_enum)]
    benchmark: Benchmark,
    /// The benchmark's data folder.
    data: PathBuf,
    /// Folder for the prediction files (for `cmapss`: the `unit,rul` CSV file;
    /// for `secom`, optional: `secom_predictions.csv` is written there).
    #[arg(long)]
    out: Option<PathBuf>,
    /// TOML file overriding the default settings.
    #[arg(long)]
    settings: Option<PathBuf>,
    /// C-MAPSS subset: FD001, FD002, FD003 or FD004.
    #[arg(long, value_parser = Subset::parse)]
    subset: Option<Subset>,
    /// Validation (nab, skab, tep): choose among the candidate settings (the
    /// benchmark's section and each `[[candidates.<benchmark>]]`) without
    /// the held-out category or series (tep: fault run), score it there,
    /// and report the held-out score beside the in-sample one.
    #[arg(long, value_enum, value_name = "category|series")]
    folds: Option<validation::Folds>,
}

/// The benchmarks `usan eval` runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Benchmark {
    /// Tennessee Eastman Process (d00.dat, dXX_te.dat or dXX.dat).
    Tep,
    /// Skoltech Anomaly Benchmark (<group>/<name>.csv).
    Skab,
    /// Numenta Anomaly Benchmark (data/<category>/<file>.csv, labels/combined_windows.json).
    Nab,
    /// NASA C-MAPSS turbofans, remaining useful life (train_FD00x.txt, test_FD00x.txt).
    Cmapss,
    /// SECOM semiconductor yield, pass/fail (uci-secom.csv), by stratified cross-validation.
    Secom,
    /// Steel-plate defect classes (Faults.NNA), by stratified cross-validation.
    Steel,
}

/// The C-MAPSS subsets.
#[derive(Debug, Clone, Copy)]
enum Subset {
    /// One operating condition, one fault mode.
    Fd001,
    /// Six operating conditions, one fault mode.
    Fd002,
    /// One operating condition, two fault modes.
    Fd003,
    /// Six operating conditions, two fault modes.
    Fd004,
}

impl Subset {
    const ALL: [Subset; 4] = [Subset::Fd001, Subset::Fd002, Subset::Fd003, Subset::Fd004];

    /// `--subset`'s value, or the valid ones.
    fn parse(text: &str) -> Result<Subset, String> {
        Subset::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| format!("--subset must be FD001, FD002, FD003 or FD004, got {text:?}"))
    }

    fn name(self) -> &'static str {
        match self {
            Subset::Fd001 => "FD001",
            Subset::Fd002 => "FD002",
            Subset::Fd003 => "FD003",
            Subset::Fd004 => "FD004",
        }
    }
}

/// Run `usan eval`.
///
/// # Errors
/// When the settings are invalid, an argument the benchmark needs is
/// missing, or the benchmark fails (unreadable or malformed data).
pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = EvalSettings::load(args.settings.as_deref())?;
    let out = || args.out.clone().ok_or_else(|| anyhow::anyhow!("this benchmark needs --out"));
    if args.folds.is_some() && !matches!(args.benchmark, Benchmark::Nab | Benchmark::Skab | Benchmark::Tep) {
        anyhow::bail!("--folds is for usan eval nab, skab and tep (the other benchmarks have their own protocols)");
    }
    match args.benchmark {
        Benchmark::Secom => secom::run(&args.data, args.out.as_deref(), &settings.secom),
        Benchmark::Steel => steel::run(&args.data, &settings.steel),
        Benchmark::Tep => tep::run(&args.data, &out()?, &settings, args.folds),
        Benchmark::Skab => skab::run(&args.data, &out()?, &settings, args.folds),
        Benchmark::Nab => nab::run(&args.data, &out()?, &settings, args.folds),
        Benchmark::Cmapss => {
            let subset = args
                .subset
                .ok_or_else(|| anyhow::anyhow!("usan eval cmapss needs --subset FD001|FD002|FD003|FD004"))?;
            cmapss::run(&args.data, subset.name(), &out()?, &settings)
        }
    }
}

/// One detector and its decision rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSettings {
    /// The algorithm (`type = "pca"`, ...).
    pub algorithm: DetectorConfig,
    /// The decision rule over its scores.
    pub threshold: ThresholdConfig,
}

/// Settings of every benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    /// Tennessee Eastman.
    #[serde(default = "tep::default_settings")]
    pub tep: DetectorSettings,
    /// SKAB.
    #[serde(default = "skab::default_settings")]
    pub skab: skab::SkabSettings,
    /// NAB.
    #[serde(default = "nab::default_settings")]
    pub nab: DetectorSettings,
    /// C-MAPSS remaining useful life.
    #[serde(default)]
    pub cmapss: usan_core::rul::RulConfig,
    /// SECOM yield prediction.
    #[serde(default = "secom::default_settings")]
    pub secom: secom::SecomSettings,
    /// Steel-plate defect classes.
    #[serde(default = "steel::default_settings")]
    pub steel: steel::SteelSettings,
    /// Other settings that validation (`--folds`) chooses among.
    #[serde(default, skip_serializing_if = "Candidates::is_empty")]
    pub candidates: Candidates,
}

/// Settings `usan eval --folds` chooses among, beside each benchmark's own
/// section (`[[candidates.nab]]`, `[[candidates.skab]]`,
/// `[[candidates.tep]]`: each what the benchmark's section holds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidates {
    /// NAB: each an `algorithm` and a `threshold`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nab: Vec<DetectorSettings>,
    /// SKAB: each an `algorithm`, a `threshold` and `reference_rows`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skab: Vec<skab::SkabSettings>,
    /// TEP: each an `algorithm` and a `threshold`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tep: Vec<DetectorSettings>,
}

impl Candidates {
    fn is_empty(&self) -> bool {
        self.nab.is_empty() && self.skab.is_empty() && self.tep.is_empty()
    }
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            tep: tep::default_settings(),
            skab: skab::default_settings(),
            nab: nab::default_settings(),
            cmapss: usan_core::rul::RulConfig::default(),
            secom: secom::default_settings(),
            steel: steel::default_settings(),
            candidates: Candidates::default(),
        }
    }
}

impl EvalSettings {
    /// The defaults, overridden by the sections of `path` when given.
    ///
    /// # Errors
    /// When the file cannot be read or has unknown or invalid settings.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let settings: EvalSettings = match path {
            None => EvalSettings::default(),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
        };
        let mut problems = Vec::new();
        for (algorithm, threshold) in [
            (&settings.tep.algorithm, &settings.tep.threshold),
            (&settings.skab.algorithm, &settings.skab.threshold),
            (&settings.nab.algorithm, &settings.nab.threshold),
        ] {
            problems.extend(algorithm.validate());
            problems.extend(threshold.validate());
        }
        let nab: Vec<_> = settings.candidates.nab.iter().map(|c| (&c.algorithm, &c.threshold)).collect();
        let skab: Vec<_> = settings.candidates.skab.iter().map(|c| (&c.algorithm, &c.threshold)).collect();
        let tep: Vec<_> = settings.candidates.tep.iter().map(|c| (&c.algorithm, &c.threshold)).collect();
        for (benchmark, candidates) in [("nab", nab), ("skab", skab), ("tep", tep)] {
            for (i, (algorithm, threshold)) in candidates.into_iter().enumerate() {
                let name = format!("candidates.{benchmark}[{}]", i + 1);
                problems.extend(algorithm.validate().into_iter().map(|p| format!("{name}: {p}")));
                problems.extend(threshold.validate().into_iter().map(|p| format!("{name}: {p}")));
            }
        }
        problems.extend(settings.cmapss.validate());
        problems.extend(settings.secom.validate());
        if !problems.is_empty() {
            anyhow::bail!("invalid eval settings:\n  {}", problems.join("\n  "));
        }
        Ok(settings)
    }
}

/// A benchmark file found under a data folder: `(group, file stem, path)`.
pub(crate) type GroupFile = (String, String, PathBuf);

/// Every `<root>/<group>/<name>.csv`, sorted by group then name.
///
/// # Errors
/// When `root` cannot be listed (the message says which layout was expected).
pub(crate) fn csv_files_by_group(root: &Path, layout: &str) -> anyhow::Result<Vec<GroupFile>> {
    use anyhow::Context;
    let mut files = Vec::new();
    let listing =
        std::fs::read_dir(root).with_context(|| format!("cannot list {} (expected {layout})", root.display()))?;
    for group in listing {
        let group = group?;
        if !group.file_type()?.is_dir() {
            continue;
        }
        let group_name = group.file_name().to_string_lossy().to_string();
        for file in std::fs::read_dir(group.path())? {
            let path = file?.path();
            if path.extension().is_some_and(|e| e == "csv") {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
                files.push((group_name.clone(), stem, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// PCA settings for the defaults: 90 % variance, theory limits unless smoothed.
pub(crate) fn pca_settings(alpha: f64, lags: usize, smoothing: usize) -> PcaConfig {
    PcaConfig {
        components: None,
        select: usan_core::detector::ComponentRule::Variance,
        variance: 0.9,
        alpha,
        limits: if smoothing > 1 { LimitMethod::Empirical } else { LimitMethod::Theory },
        lags,
        smoothing,
        ..PcaConfig::default()
    }
}

/// Print the candidates as the TOML that would reproduce them, numbered
/// from 2 (1 is the benchmark's own section).
pub(crate) fn print_candidates(candidates: &Candidates) {
    #[derive(Serialize)]
    struct Wrapper<'a> {
        candidates: &'a Candidates,
    }
    match toml::to_string(&Wrapper { candidates }) {
        Ok(text) => println!("candidates 2, 3, … in order:\n{text}"),
        Err(e) => println!("candidates: (cannot print: {e})"),
    }
}

/// Print settings as the TOML that would reproduce them.
pub(crate) fn print_settings<T: Serialize>(section: &str, settings: &T) {
    #[derive(Serialize)]
    struct Wrapper<'a, T: Serialize> {
        #[serde(flatten)]
        inner: std::collections::BTreeMap<&'a str, &'a T>,
    }
    let mut inner = std::collections::BTreeMap::new();
    inner.insert(section, settings);
    match toml::to_string(&Wrapper { inner }) {
        Ok(text) => println!("settings (pass with --settings FILE to change):\n{text}"),
        Err(e) => println!("settings: (cannot print: {e})"),
    }
}
