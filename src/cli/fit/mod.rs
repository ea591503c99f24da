//! `usan fit`: the configuration's detectors learn from history (`usan fit
//! rul`, in [`rul`], trains a remaining-useful-life model instead).
//!
//! `fit` learns each asset's detectors from a history CSV and writes one
//! versioned artifact per asset and detector, `<out>/<asset>/<detector>.json`,
//! which `serve` loads (`[pipeline] models_dir`) so the edge scores exactly as
//! the fit did, and `usan score` replays a CSV through. The CSV is read with
//! the settings of one of the configuration's file sources, with its path
//! replaced by `--data`.

pub mod rul;

use crate::config::Config;
use crate::plant::Plant;
use crate::source::SourceConfig;
use crate::source::file::{FileSource, FileSourceConfig, RowCounts};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use usan_core::detector::{Detector, FittedModel};
use usan_core::frame::{FrameAssembler, FramePolicy};
use usan_core::model::Timestamp;

/// The frames of a history, per asset index.
pub(crate) type Rows = BTreeMap<usize, Vec<(Timestamp, Vec<f64>)>>;

/// `usan fit` as typed on the command line.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    model: Option<FitModel>,
    /// Configuration file (TOML).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// The CSV, read with the settings of the config's file source.
    #[arg(long, required = true)]
    data: Option<PathBuf>,
    /// Which file source of the config describes the CSV (when there are several).
    #[arg(long)]
    source: Option<String>,
    /// Folder for the artifacts, `<out>/<asset>/<detector>.json`.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Fit on each asset's first N rows only (all rows when absent).
    #[arg(long)]
    rows: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
enum FitModel {
    /// Train a remaining-useful-life model from run-to-failure history
    /// (the TOML file names the history, its columns and the output).
    Rul(rul::Args),
}

/// Run `usan fit`.
///
/// # Errors
/// As [`fit`] and [`rul::run`].
pub fn run(args: Args) -> anyhow::Result<()> {
    match args {
        Args { model: Some(FitModel::Rul(rul)), .. } => rul::run(&rul),
        Args { model: None, config: Some(config), data: Some(data), source, out: Some(out), rows } => {
            fit(&config, &data, source.as_deref(), &out, rows)
        }
        Args { .. } => anyhow::bail!("usan fit needs --config, --data and --out (or `usan fit rul --config FILE`)"),
    }
}

/// The file source `name` (or the only one) of `config`, reading `data`.
///
/// # Errors
/// When there is no such source, or several and no name.
pub(crate) fn file_source(config: &Config, name: Option<&str>, data: &Path) -> anyhow::Result<FileSourceConfig> {
    let files: Vec<&FileSourceConfig> =
        config.sources.iter().filter_map(|s| if let SourceConfig::File(f) = s { Some(f) } else { None }).collect();
    let chosen = match name {
        Some(name) => {
            files.into_iter().find(|f| f.name == name).with_context(|| format!("no file source named `{name}`"))?
        }
        None => match files.as_slice() {
            [one] => *one,
            [] => bail!("the configuration has no file source describing the CSV columns"),
            _ => bail!("the configuration has several file sources; name one with --source"),
        },
    };
    let mut chosen = chosen.clone();
    chosen.path = data.to_path_buf();
    Ok(chosen)
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Read every row of `data`, grouped per asset, aligned into frames with
/// the configured frame policy.
///
/// # Errors
/// When the file cannot be read or a row breaks its source's settings.
pub(crate) fn read_frames(plant: &Plant, source: &FileSourceConfig, policy: FramePolicy) -> anyhow::Result<Rows> {
    let total = std::fs::metadata(&source.path).map(|m| m.len()).unwrap_or(0);
    let mut file = FileSource::open(source, plant)?;
    let bar = progress(total, "reading");
    let mut counts = RowCounts::default();
    let mut assemblers: BTreeMap<usize, FrameAssembler> = BTreeMap::new();
    let mut out: Rows = BTreeMap::new();
    let mut frames = Vec::new();
    let mut n = 0u64;
    while let Some((asset, ts, values)) = file.next_row(plant, &mut counts)? {
        let assembler = assemblers.entry(asset).or_insert_with(|| FrameAssembler::new(values.len(), policy));
        frames.clear();
        assembler.push_row(ts, values, &mut frames);
        out.entry(asset).or_default().extend(frames.drain(..).map(|f| (f.ts, f.values)));
        n += 1;
        if n.is_multiple_of(4096) {
            bar.set_position(file.position());
        }
    }
    for (asset, assembler) in &mut assemblers {
        frames.clear();
        assembler.flush(&mut frames);
        out.entry(*asset).or_default().extend(frames.drain(..).map(|f| (f.ts, f.values)));
    }
    bar.finish_and_clear();
    if counts.bad_values > 0 {
        eprintln!("note: {} cells were not numbers and were treated as missing", counts.bad_values);
    }
    if counts.skipped > 0 {
        eprintln!("note: {} rows of unconfigured assets were skipped", counts.skipped);
    }
    Ok(out)
}

/// `usan fit --config --data --out`.
///
/// # Errors
/// When the configuration or data cannot be read, or a detector cannot learn.
pub fn fit(
    config_path: &Path,
    data: &Path,
    source: Option<&str>,
    out: &Path,
    rows: Option<usize>,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let plant = config.plant();
    let source = file_source(&config, source, data)?;
    let frames = read_frames(&plant, &source, config.pipeline.frame)?;
    if frames.is_empty() {
        bail!("{} has no rows for any configured asset", data.display());
    }
    let mut written = 0;
    for (asset, asset_rows) in &frames {
        let plant_asset = &plant.assets[*asset];
        let take = rows.unwrap_or(usize::MAX).min(asset_rows.len());
        let baseline: Vec<Vec<f64>> = asset_rows[..take].iter().map(|(_, v)| v.clone()).collect();
        for &d in &plant_asset.detectors {
            let spec = &plant.detectors[d];
            // A package arrives trained: nothing to fit.
            let Some(algorithm) = spec.algorithm.native() else {
                continue;
            };
            let mut detector = algorithm.build()?;
            detector
                .learn(&baseline)
                .with_context(|| format!("asset `{}`, detector `{}`", plant_asset.path.asset, spec.name))?;
            let threshold_config = spec.threshold();
            let level = if threshold_config.needs_training_scores() {
                let mut probe = detector.clone();
                let scores: Vec<f64> = baseline.iter().filter_map(|r| probe.score(r).ok()).map(|s| s.value).collect();
                threshold_config.build(&scores).level()
            } else {
                threshold_config.build(&[]).level()
            };
            let mut model = FittedModel::new(plant_asset.signal_names(), detector);
            model.threshold = Some(level).filter(|l| l.is_finite());
            let dir = out.join(&plant_asset.path.asset);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let path = dir.join(format!("{}.json", spec.name));
            std::fs::write(&path, serde_json::to_string_pretty(&model)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written += 1;
        }
    }
    println!("fitted {written} model(s) on {} asset(s) into {}", frames.len(), out.display());
    Ok(())
}
