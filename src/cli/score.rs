//! `usan score`: a history CSV replayed through the artifacts `usan fit`
//! wrote, one line per row and detector (score, threshold, decision, the
//! signal that explains it most).

use super::fit::{file_source, read_frames};
use crate::config::Config;
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use usan_core::detector::{Detector, FittedModel};
use usan_core::model::Finding;

/// `usan score` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// The CSV, read with the settings of the config's file source.
    #[arg(long)]
    data: PathBuf,
    /// Which file source of the config describes the CSV (when there are several).
    #[arg(long)]
    source: Option<String>,
    /// Folder of fitted artifacts written by `usan fit`.
    #[arg(long)]
    models: PathBuf,
    /// Output CSV.
    #[arg(long)]
    out: PathBuf,
}

/// Run `usan score`.
///
/// # Errors
/// As [`score`].
pub fn run(args: Args) -> anyhow::Result<()> {
    score(&args.config, &args.data, args.source.as_deref(), &args.models, &args.out)
}

/// Score `data` with the artifacts in `models` into `out`.
///
/// # Errors
/// When the configuration, data or a model cannot be read.
pub fn score(config_path: &Path, data: &Path, source: Option<&str>, models: &Path, out: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let plant = config.plant();
    let source = file_source(&config, source, data)?;
    let frames = read_frames(&plant, &source, config.pipeline.frame)?;
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    writeln!(writer, "asset,ts,detector,score,threshold,exceeded,anomalous,t2,spe,top_signal,top_contribution")?;
    let mut lines = 0u64;
    let mut anomalous = 0u64;
    for (asset, asset_rows) in &frames {
        let plant_asset = &plant.assets[*asset];
        let names = plant_asset.signal_names();
        for &d in &plant_asset.detectors {
            let spec = &plant.detectors[d];
            let path = models.join(&plant_asset.path.asset).join(format!("{}.json", spec.name));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("no fitted model {} (run usan fit)", path.display()))?;
            let model: FittedModel =
                serde_json::from_str(&text).with_context(|| format!("{} is not a usan model", path.display()))?;
            model.check_format()?;
            if model.signals != names {
                bail!("{} was fitted on other signals than asset `{}` has now", path.display(), plant_asset.path.asset);
            }
            let mut threshold = match model.threshold {
                Some(level) => spec.threshold().build_at(level),
                None => spec.threshold().build(&[]),
            };
            let mut detector = model.detector;
            for (ts, values) in asset_rows {
                let Ok(score) = detector.score(values) else {
                    continue;
                };
                let decision = threshold.decide(score.value);
                let top = Finding::ranked_contributions(&names, &score.contributions, 1);
                let fmt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
                writeln!(
                    writer,
                    "{},{},{},{},{},{},{},{},{},{},{}",
                    plant_asset.path.asset,
                    ts.0,
                    spec.name,
                    score.value,
                    threshold.level(),
                    u8::from(decision.exceeded),
                    u8::from(decision.anomalous),
                    fmt(score.t2),
                    fmt(score.spe),
                    top.first().map(|c| c.signal.as_str()).unwrap_or(""),
                    top.first().map(|c| c.value.to_string()).unwrap_or_default()
                )?;
                lines += 1;
                anomalous += u64::from(decision.anomalous);
            }
        }
    }
    writer.flush()?;
    println!("scored {lines} row(s) ({anomalous} anomalous) into {}", out.display());
    Ok(())
}
