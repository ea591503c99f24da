//! `usan eval tep`: Tennessee Eastman, the standard protocol.
//!
//! Fits on `d00.dat` (the normal training run; stored transposed, 52 × 500,
//! and read either way), then scores every run independently from its first
//! sample: `dXX_te.dat` files when there are any (test mode; the fault starts
//! after sample 160), else the training fault runs `dXX.dat` plus `d00_te.dat`
//! (development mode; the fault is taken to start at sample 21). Writes
//! `OUT/dXX_te.csv` or `OUT/dXX.csv` with `sample,alarm,t2,spe`.

use super::{DetectorSettings, EvalSettings, print_settings};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use usan_core::detector::Detector;
use usan_core::threshold::ThresholdConfig;

/// TEP has 52 variables (41 measured, 11 manipulated).
const VARIABLES: usize = 52;

/// The default TEP detector: dynamic PCA (2 lags) with statistics smoothed
/// over 3 samples, limits at 99.5 % from cross-fitted training statistics.
#[must_use]
pub fn default_settings() -> DetectorSettings {
    DetectorSettings {
        algorithm: super::pca(0.995, 2, 3),
        threshold: ThresholdConfig { k: 1, n: 1, ..ThresholdConfig::fixed(1.0) },
    }
}

/// Read a whitespace-separated matrix, as samples × 52 variables.
fn read_matrix(path: &Path) -> anyhow::Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = line
            .split_whitespace()
            .map(|cell| cell.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .with_context(|| format!("{}: line {} has a value that is not a finite number", path.display(), i + 1))?;
        rows.push(row);
    }
    let Some(width) = rows.first().map(Vec::len) else { bail!("{} is empty", path.display()) };
    if let Some((i, _)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        bail!("{}: row {} has {} values, the first has {width}", path.display(), i + 1, rows[i].len());
    }
    if width == VARIABLES {
        return Ok(rows);
    }
    if rows.len() == VARIABLES {
        // Stored transposed (variables × samples), as d00.dat is.
        return Ok((0..width).map(|j| rows.iter().map(|r| r[j]).collect()).collect());
    }
    bail!("{}: {} × {width} is not samples × {VARIABLES} (nor transposed)", path.display(), rows.len())
}

/// One run's predictions.
struct Scored {
    alarms: Vec<bool>,
    t2: Vec<f64>,
    spe: Vec<f64>,
}

fn score_run(
    settings: &DetectorSettings,
    fitted: &usan_core::detector::AnyDetector,
    rows: &[Vec<f64>],
) -> anyhow::Result<Scored> {
    let mut detector = fitted.clone();
    let mut threshold = settings.threshold.build(&[]);
    let mut out = Scored { alarms: Vec::new(), t2: Vec::new(), spe: Vec::new() };
    for row in rows {
        let score = detector.score(row)?;
        out.alarms.push(threshold.decide(score.value).anomalous);
        out.t2.push(score.t2.unwrap_or(score.value));
        out.spe.push(score.spe.unwrap_or(0.0));
    }
    Ok(out)
}

fn write_predictions(path: &Path, scored: &Scored) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    writeln!(out, "sample,alarm,t2,spe")?;
    for (i, ((alarm, t2), spe)) in scored.alarms.iter().zip(&scored.t2).zip(&scored.spe).enumerate() {
        writeln!(out, "{},{},{t2},{spe}", i + 1, u8::from(*alarm))?;
    }
    out.flush()?;
    Ok(())
}

fn rate(alarms: &[bool]) -> f64 {
    if alarms.is_empty() { 0.0 } else { alarms.iter().filter(|a| **a).count() as f64 / alarms.len() as f64 }
}

/// Run the protocol.
///
/// # Errors
/// When a file is missing or malformed, or the detector cannot be fitted.
pub fn run(data: &Path, out: &Path, settings: &EvalSettings) -> anyhow::Result<()> {
    let start = Instant::now();
    let settings = &settings.tep;
    let training = read_matrix(&data.join("d00.dat"))?;
    let mut detector = settings.algorithm.build()?;
    detector.learn(&training).context("fitting on d00.dat")?;
    let fit_s = start.elapsed().as_secs_f64();

    let mut runs: Vec<(u32, bool)> = Vec::new(); // (fault number, test file?)
    for entry in std::fs::read_dir(data).with_context(|| format!("cannot list {}", data.display()))? {
        let name = entry?.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".dat").and_then(|s| s.strip_prefix('d')) else { continue };
        let (number, test) = match stem.strip_suffix("_te") {
            Some(n) => (n, true),
            None => (stem, false),
        };
        if number.len() == 2
            && let Ok(n) = number.parse::<u32>()
        {
            runs.push((n, test));
        }
    }
    let test_mode = runs.iter().any(|&(n, test)| test && n > 0);
    let mut selected: Vec<(u32, bool)> = runs
        .into_iter()
        .filter(|&(n, test)| if test_mode { test } else { (n > 0 && !test) || (n == 0 && test) })
        .collect();
    selected.sort_unstable();
    if selected.is_empty() {
        bail!("{} has no dXX_te.dat or dXX.dat runs to score", data.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let onset = if test_mode { 160 } else { 20 };
    println!(
        "TEP ({} mode): fitted on d00.dat ({} samples) in {fit_s:.3} s",
        if test_mode { "test" } else { "development" },
        training.len()
    );
    let mut detection = Vec::new();
    let mut far = None;
    let mut samples = 0usize;
    for (number, test) in selected {
        let name = if test { format!("d{number:02}_te") } else { format!("d{number:02}") };
        let rows = read_matrix(&data.join(format!("{name}.dat")))?;
        samples += rows.len();
        let scored = score_run(settings, &detector, &rows)?;
        write_predictions(&out.join(format!("{name}.csv")), &scored)?;
        if number == 0 {
            far = Some(rate(&scored.alarms));
        } else {
            let after = &scored.alarms[onset.min(scored.alarms.len())..];
            let before = &scored.alarms[..onset.min(scored.alarms.len())];
            detection.push((number, rate(after), rate(before)));
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    print_settings("tep", settings);
    match far {
        Some(f) => println!("false-alarm rate on d00_te: {f:.3}"),
        None => println!("false-alarm rate: no d00_te.dat in the data folder"),
    }
    println!("| fault | detection rate (after sample {onset}) | alarm rate before |");
    println!("|---|---|---|");
    for (number, dr, before) in &detection {
        println!("| IDV{number} | {dr:.3} | {before:.3} |");
    }
    let mean = |keep: &dyn Fn(u32) -> bool| {
        let v: Vec<f64> = detection.iter().filter(|(n, _, _)| keep(*n)).map(|d| d.1).collect();
        if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
    };
    println!(
        "mean detection rate excluding IDV3/9/15: {:.3}; over all faults: {:.3}",
        mean(&|n| ![3, 9, 15].contains(&n)),
        mean(&|_| true)
    );
    println!("wall time {wall_s:.2} s ({samples} samples scored, {:.0} samples/s)", samples as f64 / wall_s);
    Ok(())
}
