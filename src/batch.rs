//! `usan fit` and `usan score`: the configuration's detectors on history.
//!
//! `fit` learns each asset's detectors from a history CSV and writes one
//! versioned artifact per asset and detector, `<out>/<asset>/<detector>.json`,
//! which `serve` loads (`[pipeline] models_dir`) so the edge scores exactly as
//! the fit did. `score` replays a CSV through fitted artifacts and writes one
//! line per row and detector. The CSV is read with the settings of one of the
//! configuration's file sources, with its path replaced by `--data`.

use crate::config::{Config, Plant};
use crate::source::SourceConfig;
use crate::source::file::{FileSource, FileSourceConfig, RowCounts};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use usan_core::detector::{Detector, FittedModel};
use usan_core::frame::{FrameAssembler, FramePolicy};
use usan_core::model::{Finding, Timestamp};

type Rows = BTreeMap<usize, Vec<(Timestamp, Vec<f64>)>>;

fn file_source(config: &Config, name: Option<&str>, data: &Path) -> anyhow::Result<FileSourceConfig> {
    let files: Vec<&FileSourceConfig> = config
        .sources
        .iter()
        .filter_map(|s| match s {
            SourceConfig::File(f) => Some(f),
            _ => None,
        })
        .collect();
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
fn read_frames(plant: &Plant, source: &FileSourceConfig, policy: FramePolicy) -> anyhow::Result<Rows> {
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

/// `usan fit`.
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
            let mut detector = spec.algorithm.build()?;
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

/// `usan score`.
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
