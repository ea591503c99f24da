//! `usan eval tep`: Tennessee Eastman, the standard protocol.
//!
//! Fits on `d00.dat` (the normal training run; stored transposed, 52 × 500,
//! and read either way), then scores every run independently from its first
//! sample: `dXX_te.dat` files when there are any (test mode; the fault starts
//! after sample 160), else the training fault runs `dXX.dat` plus `d00_te.dat`
//! (development mode; the fault is taken to start at sample 21). Writes
//! `OUT/dXX_te.csv` or `OUT/dXX.csv` with `sample,alarm,t2,spe` (for CVA,
//! `spe` holds the residual variates' T²).
//!
//! With `[[candidates.tep]]` settings, each is fitted and run on every run
//! and the files come from the best by Youden's J (detection less false
//! alarms) within a 5 % false-alarm budget on `d00_te`; with `--folds
//! series` each fault run's file comes from the setting chosen without it,
//! so the held-out detection rate is reported beside the in-sample one.

use super::validation::{self, FoldChoice, Folds, Selection};
use super::{DetectorSettings, EvalSettings, print_settings};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use usan_core::detector::{CvaConfig, Detector, DetectorConfig};
use usan_core::threshold::ThresholdConfig;

/// TEP has 52 variables (41 measured, 11 manipulated).
const VARIABLES: usize = 52;

/// The default TEP detector, chosen by `--folds series` among the settings
/// of `scripts/tep-candidates.toml`: canonical variate analysis of the
/// frame and its predecessor against the next four frames, 80 states of the
/// 104 variates, ridge 0.003, statistics smoothed over 12 samples, limits at
/// 99 % from cross-fitted training statistics.
#[must_use]
pub fn default_settings() -> DetectorSettings {
    DetectorSettings {
        algorithm: DetectorConfig::Cva(CvaConfig {
            past: 2,
            future: 4,
            states: Some(80),
            ridge: 0.003,
            smoothing: 12,
            ..CvaConfig::default()
        }),
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
        out.spe.push(score.spe.or_else(|| score.statistics.get(1).map(|s| s.value)).unwrap_or(0.0));
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

/// The most false alarms a setting may raise on `d00_te` to be chosen.
pub const MAX_FALSE_ALARM_RATE: f64 = 0.05;

/// One candidate's predictions on one run.
struct RunOutcome {
    /// Fault number (0: the normal test run `d00_te`).
    fault: u32,
    scored: Scored,
    /// Alarm rate from the fault's onset (on `d00_te`: over the run).
    after: f64,
    /// Alarm rate before the onset.
    before: f64,
}

/// The false-alarm rate on `d00_te` and the mean detection rate of the
/// faults other than IDV3/9/15 among `runs`.
fn rates(runs: &[&RunOutcome]) -> (Option<f64>, f64) {
    let far = runs.iter().find(|r| r.fault == 0).map(|r| r.after);
    let detected: Vec<f64> =
        runs.iter().filter(|r| r.fault > 0 && !UNDETECTABLE.contains(&r.fault)).map(|r| r.after).collect();
    let mean = if detected.is_empty() { f64::NAN } else { detected.iter().sum::<f64>() / detected.len() as f64 };
    (far, mean)
}

/// Faults the literature counts as undetectable (reported apart).
const UNDETECTABLE: [u32; 3] = [3, 9, 15];

/// The mean detection rate over every fault run, IDV3, 9 and 15 included
/// (NaN without fault runs).
fn all_faults_rate(runs: &[&RunOutcome]) -> f64 {
    let all: Vec<f64> = runs.iter().filter(|r| r.fault > 0).map(|r| r.after).collect();
    if all.is_empty() { f64::NAN } else { all.iter().sum::<f64>() / all.len() as f64 }
}

/// How validation ranks a setting on some runs: Youden's J, the mean
/// detection rate less `d00_te`'s false-alarm rate (an alarm system is
/// judged on both), when the false-alarm rate is within
/// [`MAX_FALSE_ALARM_RATE`]; below every such setting otherwise.
fn merit(runs: &[&RunOutcome]) -> f64 {
    match rates(runs) {
        (Some(far), _) if far > MAX_FALSE_ALARM_RATE => -far,
        (far, mean) => mean - far.unwrap_or(0.0),
    }
}

/// Run the protocol: every candidate setting fitted on `d00.dat` and run
/// on every run (over the machine's cores); the files of the one with the
/// best Youden's J within the false-alarm budget (see `merit`), or with `folds`
/// (`series`: each fault run is a fold), each fault run's from the setting
/// chosen on the other faults. `d00_te` is in every fold's choice: it holds
/// the false-alarm rate within budget.
///
/// # Errors
/// When a file is missing or malformed, a detector cannot be fitted, or the
/// folds are not `series`.
pub fn run(data: &Path, out: &Path, settings: &EvalSettings, folds: Option<Folds>) -> anyhow::Result<()> {
    if folds == Some(Folds::Category) {
        bail!("usan eval tep --folds takes series (each fault run is a fold; TEP has no categories)");
    }
    let start = Instant::now();
    let candidates: Vec<&DetectorSettings> = std::iter::once(&settings.tep).chain(&settings.candidates.tep).collect();
    let training = read_matrix(&data.join("d00.dat"))?;
    let fitted = candidates
        .iter()
        .enumerate()
        .map(|(c, candidate)| {
            let mut detector = candidate.algorithm.build()?;
            detector.learn(&training).with_context(|| format!("candidate {}: fitting on d00.dat", c + 1))?;
            Ok(detector)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
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
        "TEP ({} mode): {} setting(s) fitted on d00.dat ({} samples) in {fit_s:.3} s",
        if test_mode { "test" } else { "development" },
        candidates.len(),
        training.len()
    );
    let mut loaded = Vec::with_capacity(selected.len());
    for &(number, test) in &selected {
        let name = if test { format!("d{number:02}_te") } else { format!("d{number:02}") };
        let rows = read_matrix(&data.join(format!("{name}.dat")))?;
        loaded.push((number, name, rows));
    }
    let outcomes = validation::score_every(candidates.len(), loaded.len(), |c, f| {
        let (fault, name, rows) = &loaded[f];
        let scored = score_run(candidates[c], &fitted[c], rows).with_context(|| format!("{name}.dat"))?;
        let cut = if *fault == 0 { 0 } else { onset.min(scored.alarms.len()) };
        let (after, before) = (rate(&scored.alarms[cut..]), rate(&scored.alarms[..cut]));
        Ok(RunOutcome { fault: *fault, scored, after, before })
    })?;
    let selection = select(&outcomes, folds);
    let mut samples = 0usize;
    for (f, (_, name, rows)) in loaded.iter().enumerate() {
        samples += rows.len();
        write_predictions(&out.join(format!("{name}.csv")), &outcomes[selection.chosen[f]][f].scored)?;
    }
    let wall_s = start.elapsed().as_secs_f64();
    print_settings("tep", &settings.tep);
    let describe = |runs: &[&RunOutcome]| {
        let (far, mean) = rates(runs);
        let far = far.map_or("no d00_te".to_string(), |f| format!("{f:.3}"));
        format!(
            "FAR {far}, mean detection rate excluding IDV3/9/15 {mean:.3} (over all faults {:.3})",
            all_faults_rate(runs)
        )
    };
    selection.report("tep", "runs", &outcomes, &settings.candidates, folds, &describe);
    let written = selection.picked(&outcomes);
    let (far, _) = rates(&written);
    match far {
        Some(f) => println!("false-alarm rate on d00_te: {f:.3}"),
        None => println!("false-alarm rate: no d00_te.dat in the data folder"),
    }
    println!("| fault | detection rate (after sample {onset}) | alarm rate before |");
    println!("|---|---|---|");
    for run in written.iter().filter(|r| r.fault > 0) {
        println!("| IDV{} | {:.3} | {:.3} |", run.fault, run.after, run.before);
    }
    let (_, mean) = rates(&written);
    println!("mean detection rate excluding IDV3/9/15: {mean:.3}; over all faults: {:.3}", all_faults_rate(&written));
    let samples = samples * candidates.len();
    println!("wall time {wall_s:.2} s ({samples} samples scored, {:.0} samples/s)", samples as f64 / wall_s);
    Ok(())
}

/// The candidate each run's file comes from: the best by [`merit`] on
/// every run or, with folds, for each fault run the best on the other runs
/// (`d00_te` included), and for `d00_te` the best on every run.
fn select(outcomes: &[Vec<RunOutcome>], folds: Option<Folds>) -> Selection {
    let items = outcomes.first().map_or(0, Vec::len);
    let every: Vec<usize> = (0..items).collect();
    let in_sample = validation::best(outcomes, &every, &merit);
    let Some(_) = folds else {
        return Selection { in_sample, chosen: vec![in_sample; items], folds: Vec::new() };
    };
    let mut chosen = vec![in_sample; items];
    let mut choices = Vec::new();
    for f in 0..items {
        let fault = outcomes[0][f].fault;
        if fault == 0 {
            continue;
        }
        let others: Vec<usize> = (0..items).filter(|&g| g != f).collect();
        chosen[f] = validation::best(outcomes, &others, &merit);
        choices.push(FoldChoice { fold: format!("IDV{fault}"), candidate: chosen[f], series: 1 });
    }
    Selection { in_sample, chosen, folds: choices }
}
