//! `usan eval skab`: the Skoltech Anomaly Benchmark, outlier protocol.
//!
//! For every labelled `DATA/<group>/<name>.csv` (`;`-separated: `datetime`,
//! the sensors, `anomaly`, `changepoint`), the detector is fitted on that
//! file's first 400 rows only, then every row is scored in order. Writes
//! `OUT/<group>/<name>.csv` with `datetime,anomaly,changepoint,score`, one
//! row per input row: the 400 training rows get `anomaly = 0`; `changepoint`
//! marks where the predicted anomaly state changes. The `anomaly-free` file
//! has no labels and is not scored, but it is a long normal run, which the
//! protocol allows fitting on: with `reference_rows = N`, N of its rows
//! (ten contiguous stretches spread over the run, apart by missing rows) join each file's training rows, moved to that file's
//! operating point (each sensor scaled by the ratio of the two files' means,
//! or shifted when a mean is near zero). They teach the detector how much
//! each sensor moves in normal operation over hours (thermal drift, for
//! one), which 400 rows cannot show. Missing cells are missing values (the
//! detectors accept them); a file whose header does not start with
//! `datetime` and end with `anomaly;changepoint`, or with a cell that is
//! not a number, is refused with its line.

use super::validation::{self, Folds, Selection};
use super::{EvalSettings, GroupFile, print_settings};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use usan_core::detector::Detector;
use usan_core::detector::{DetectorConfig, DifferenceRule, PcaConfig};
use usan_core::metrics::Confusion;
use usan_core::threshold::ThresholdConfig;

/// Rows of each file the detector may learn from.
pub const TRAINING_ROWS: usize = 400;

/// The false-alarm budget (percent of normal test rows) a setting must keep
/// to be chosen by its F1; over it, a setting ranks by false alarms alone,
/// below every setting within it. Without a budget, choosing by F1 alone
/// favours settings that hold every alarm on and buy recall with false alarms.
pub const MAX_FALSE_ALARM_PERCENT: f64 = 10.0;

/// SKAB settings: a detector, its decision rule, and the reference run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkabSettings {
    /// The algorithm (`type = "pca"`, ...).
    pub algorithm: DetectorConfig,
    /// The decision rule over its scores.
    pub threshold: ThresholdConfig,
    /// Rows of the anomaly-free run added to each file's training rows (0: none).
    #[serde(default)]
    pub reference_rows: usize,
}

/// The default SKAB detector: dynamic PCA (1 lag, 90 % variance), signals
/// that trend through the training rows watched by their change over 30
/// rows, statistics smoothed over 10 rows, cross-fitted limits at 99 %,
/// trained on each file's first 400 rows plus 1,000 rows of the
/// anomaly-free run. An anomaly is raised at 1.5 × the limit and held
/// while scores stay above 0.6 × the limit (deadband 0.6 of the level:
/// 1.5 − 0.9), until 5 rows in a row fall below (chosen among 140 decision rules, `scripts/skab-candidates.toml`,
/// by 17 of the 20 leave-one-file-out folds).
#[must_use]
pub fn default_settings() -> SkabSettings {
    let algorithm = DetectorConfig::Pca(PcaConfig {
        difference: DifferenceRule::Trending,
        difference_lag: 30,
        ..super::pca_settings(0.99, 1, 10)
    });
    SkabSettings {
        algorithm,
        threshold: ThresholdConfig { k: 1, n: 5, deadband: 0.6, ..ThresholdConfig::fixed(1.5) },
        reference_rows: 1000,
    }
}

/// A reference run: its sensor names and rows.
type Reference = (Vec<String>, Vec<Vec<f64>>);

/// The first unlabelled file's rows (the anomaly-free run), with its sensor names.
fn read_reference(files: &[GroupFile]) -> anyhow::Result<Option<Reference>> {
    for (_, _, path) in files {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let Some(header) = text.lines().next() else { continue };
        let columns: Vec<String> = header.split(';').map(|c| c.trim().to_string()).collect();
        if columns.first().map(String::as_str) != Some("datetime") || columns.iter().any(|c| c == "anomaly") {
            continue;
        }
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1).filter(|(_, l)| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split(';').collect();
            if cells.len() != columns.len() {
                bail!("{}: line {} has {} cells, the header has {}", path.display(), i + 1, cells.len(), columns.len());
            }
            rows.push(cells[1..].iter().map(|c| parse_cell(c, path, i + 1)).collect::<anyhow::Result<Vec<f64>>>()?);
        }
        return Ok(Some((columns[1..].to_vec(), rows)));
    }
    Ok(None)
}

/// Contiguous stretches the reference rows are taken in, evenly spread over the run.
const REFERENCE_STRETCHES: usize = 10;
/// Missing rows between stretches (and before the file's own rows), so that
/// lagged and differenced values never pair frames from different stretches.
const REFERENCE_GAP: usize = 60;

/// About `count` reference rows in [`REFERENCE_STRETCHES`] contiguous
/// stretches spread over the run, separated by [`REFERENCE_GAP`] missing
/// rows, and moved to the operating point of `own`.
fn transplant(reference: &[Vec<f64>], own: &[Vec<f64>], count: usize) -> Vec<Vec<f64>> {
    let width = own.first().map_or(0, Vec::len);
    let mean = |rows: &[Vec<f64>], j: usize| {
        let values: Vec<f64> = rows.iter().map(|r| r[j]).filter(|v| v.is_finite()).collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let own_mean: Vec<f64> = (0..width).map(|j| mean(own, j)).collect();
    let reference_mean: Vec<f64> = (0..width).map(|j| mean(reference, j)).collect();
    let count = count.min(reference.len());
    let stretch = count.div_ceil(REFERENCE_STRETCHES).max(1);
    let starts = (reference.len() - stretch) / REFERENCE_STRETCHES.saturating_sub(1).max(1);
    let mut out = Vec::with_capacity(count + REFERENCE_STRETCHES * REFERENCE_GAP);
    for s in 0..REFERENCE_STRETCHES.min(count.div_ceil(stretch)) {
        let start = (s * starts).min(reference.len() - stretch);
        for r in &reference[start..start + stretch] {
            out.push(
                (0..width)
                    .map(|j| {
                        let (theirs, ours) = (reference_mean[j], own_mean[j]);
                        if theirs.abs() > 1e-9 { ours * r[j] / theirs } else { r[j] - theirs + ours }
                    })
                    .collect(),
            );
        }
        out.extend(std::iter::repeat_n(vec![f64::NAN; width], REFERENCE_GAP));
    }
    out
}

/// One SKAB file.
struct SkabFile {
    sensors: Vec<String>,
    datetimes: Vec<String>,
    rows: Vec<Vec<f64>>,
    labels: Vec<bool>,
}

fn parse_cell(cell: &str, path: &Path, line: usize) -> anyhow::Result<f64> {
    match cell.trim() {
        "" | "NaN" | "nan" | "NA" => Ok(f64::NAN),
        text => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .with_context(|| format!("{}: line {line}: {text:?} is not a number", path.display())),
    }
}

fn read_file(path: &Path) -> anyhow::Result<Option<SkabFile>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else { bail!("{} is empty", path.display()) };
    let columns: Vec<&str> = header.split(';').map(str::trim).collect();
    if columns.first() != Some(&"datetime") || columns.len() < 2 {
        bail!("{}: the header must be `;`-separated and start with `datetime` (got {header:?})", path.display());
    }
    let labelled = columns.ends_with(&["anomaly", "changepoint"]);
    if !labelled {
        return Ok(None);
    }
    let sensors = columns.len() - 3;
    if sensors == 0 {
        bail!("{}: no sensor columns between datetime and anomaly", path.display());
    }
    let sensors_named = columns[1..=sensors].iter().map(|c| (*c).to_string()).collect();
    let mut file = SkabFile { sensors: sensors_named, datetimes: Vec::new(), rows: Vec::new(), labels: Vec::new() };
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(';').collect();
        if cells.len() != columns.len() {
            bail!("{}: line {} has {} cells, the header has {}", path.display(), i + 1, cells.len(), columns.len());
        }
        file.datetimes.push(cells[0].trim().to_string());
        let values =
            cells[1..=sensors].iter().map(|c| parse_cell(c, path, i + 1)).collect::<anyhow::Result<Vec<f64>>>()?;
        file.rows.push(values);
        file.labels.push(parse_cell(cells[sensors + 1], path, i + 1)? > 0.5);
    }
    Ok(Some(file))
}

/// Labelled files as `(group, name, path)`, sorted.
fn find_files(data: &Path) -> anyhow::Result<Vec<GroupFile>> {
    let root = if data.join("data").is_dir() { data.join("data") } else { data.to_path_buf() };
    super::csv_files_by_group(&root, "DATA/<group>/<name>.csv or DATA/data/<group>/<name>.csv")
}

/// Score one file: per-row (anomaly, score).
fn score_file(
    settings: &SkabSettings,
    file: &SkabFile,
    reference: Option<&Reference>,
) -> anyhow::Result<Vec<(bool, f64)>> {
    let own = &file.rows[..TRAINING_ROWS.min(file.rows.len())];
    let mut training = Vec::new();
    if let Some((sensors, rows)) = reference
        && settings.reference_rows > 0
    {
        if *sensors != file.sensors {
            bail!("the anomaly-free run has sensors {sensors:?}, this file {:?}", file.sensors);
        }
        training = transplant(rows, own, settings.reference_rows);
    }
    training.extend_from_slice(own);
    let mut detector = settings.algorithm.build()?;
    detector.learn(&training)?;
    let mut threshold = settings.threshold.build(&[]);
    let mut out = Vec::with_capacity(file.rows.len());
    for (i, row) in file.rows.iter().enumerate() {
        let score = match detector.score(row) {
            Ok(s) => s.value,
            Err(usan_core::DetectorError::NoData) => 0.0,
            Err(e) => return Err(e.into()),
        };
        let decision = threshold.decide(score);
        out.push((i >= TRAINING_ROWS && decision.anomalous, score));
    }
    Ok(out)
}

/// One setting's pass over one file: each row's (anomaly, score) and the
/// test rows' confusion.
struct FileRun {
    predictions: Vec<(bool, f64)>,
    confusion: Confusion,
}

/// The pooled confusion of some files' runs.
fn pooled(runs: &[&FileRun]) -> Confusion {
    let mut total = Confusion::default();
    for run in runs {
        total.tp += run.confusion.tp;
        total.fp += run.confusion.fp;
        total.tn += run.confusion.tn;
        total.fn_ += run.confusion.fn_;
    }
    total
}

/// How a setting ranks when folds choose: its F1 within the false-alarm
/// budget; over it, minus its false-alarm rate (below every F1 in [0, 1]).
fn merit(confusion: &Confusion) -> f64 {
    let far = confusion.far();
    if far <= MAX_FALSE_ALARM_PERCENT { confusion.f1() } else { -far }
}

/// `F1 …, FAR … %, MAR … %` of a confusion.
fn summary(c: &Confusion) -> String {
    format!("F1 {:.3}, FAR {:.2} %, MAR {:.2} %", c.f1(), c.far(), c.mar())
}

/// Run the protocol: every candidate setting on every file (over the
/// machine's cores), then the files of the chosen one (with `folds`, each
/// file gets the candidate with the best pooled F1 without its fold, among
/// those within [`MAX_FALSE_ALARM_PERCENT`]).
///
/// # Errors
/// When a file is malformed or a detector cannot be fitted.
pub fn run(data: &Path, out: &Path, settings: &EvalSettings, folds: Option<Folds>) -> anyhow::Result<()> {
    let start = Instant::now();
    let candidates: Vec<&SkabSettings> = std::iter::once(&settings.skab).chain(&settings.candidates.skab).collect();
    let all_files = find_files(data)?;
    let needs_reference = candidates.iter().any(|c| c.reference_rows > 0);
    let reference = if needs_reference { read_reference(&all_files)? } else { None };
    let mut files = Vec::new();
    for (group, name, path) in &all_files {
        let Some(file) = read_file(path)? else { continue };
        if file.rows.len() <= TRAINING_ROWS {
            bail!("{}: {} rows; the protocol needs more than {TRAINING_ROWS}", path.display(), file.rows.len());
        }
        files.push((group, name, path, file));
    }
    if files.is_empty() {
        bail!("{} has no labelled SKAB files (<group>/<name>.csv ending in anomaly;changepoint)", data.display());
    }
    let runs = validation::score_every(candidates.len(), files.len(), |c, f| {
        let (_, _, path, file) = &files[f];
        let predictions =
            score_file(candidates[c], file, reference.as_ref()).with_context(|| path.display().to_string())?;
        let mut confusion = Confusion::default();
        for ((anomaly, _), truth) in predictions.iter().zip(&file.labels).skip(TRAINING_ROWS) {
            confusion.add(*anomaly, *truth);
        }
        Ok(FileRun { predictions, confusion })
    })?;
    let metric = |picked: &[&FileRun]| merit(&pooled(picked));
    let keys: Option<Vec<String>> =
        folds.map(|folds| files.iter().map(|(group, name, _, _)| folds.key(group, name)).collect());
    let selection = Selection::new(&runs, keys.as_deref(), &metric);
    let mut per_group: std::collections::BTreeMap<String, Vec<&FileRun>> = Default::default();
    let mut rows_scored = 0usize;
    for (f, (group, name, _, file)) in files.iter().enumerate() {
        let run = &runs[selection.chosen[f]][f];
        let dir = out.join(group);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let target = dir.join(format!("{name}.csv"));
        let mut writer = std::io::BufWriter::new(
            std::fs::File::create(&target).with_context(|| format!("cannot create {}", target.display()))?,
        );
        writeln!(writer, "datetime,anomaly,changepoint,score")?;
        let mut previous = false;
        for (i, (datetime, (anomaly, score))) in file.datetimes.iter().zip(&run.predictions).enumerate() {
            let changepoint = if i < TRAINING_ROWS {
                false
            } else if i == TRAINING_ROWS {
                *anomaly
            } else {
                *anomaly != previous
            };
            previous = *anomaly;
            writeln!(writer, "{datetime},{},{},{score}", u8::from(*anomaly), u8::from(changepoint))?;
        }
        writer.flush().with_context(|| format!("cannot write {}", target.display()))?;
        per_group.entry((*group).clone()).or_default().push(run);
        rows_scored += file.rows.len();
    }
    let wall_s = start.elapsed().as_secs_f64();
    print_settings("skab", &settings.skab);
    match (&reference, settings.skab.reference_rows) {
        (_, 0) => println!("reference run: not used"),
        (Some((_, rows)), n) => {
            println!("reference run: {} of its {} rows join each file's training rows", n.min(rows.len()), rows.len())
        }
        (None, _) => println!("reference run: none found (no unlabelled file); fitted on each file's rows alone"),
    }
    println!("| group | F1 | FAR % | MAR % |");
    println!("|---|---|---|---|");
    for (group, runs) in &per_group {
        let c = pooled(runs);
        println!("| {group} | {:.3} | {:.2} | {:.2} |", c.f1(), c.far(), c.mar());
    }
    let describe = |runs: &[&FileRun]| summary(&pooled(runs));
    selection.report("skab", "files", &runs, &settings.candidates, folds, &describe);
    let written = selection.picked(&runs);
    let total = pooled(&written);
    println!(
        "SKAB outlier detection over {} files ({} test rows): F1 {:.3}, FAR {:.2} %, MAR {:.2} %",
        files.len(),
        total.tp + total.fp + total.tn + total.fn_,
        total.f1(),
        total.far(),
        total.mar()
    );
    // Every candidate scored every row.
    let rows_scored = rows_scored * candidates.len();
    println!("wall time {wall_s:.2} s ({rows_scored} rows, {:.0} rows/s)", rows_scored as f64 / wall_s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_within_the_false_alarm_budget_rank_by_f1_above_every_other() {
        let confusion = |tp, fp, tn, fn_| Confusion { tp, fp, tn, fn_ };
        // (confusion, F1, FAR %)
        let within_low = confusion(50, 9, 91, 50); // F1 0.629, FAR 9 %
        let within_high = confusion(90, 10, 90, 10); // F1 0.900, FAR 10 %: at the budget
        let over_best_f1 = confusion(100, 11, 89, 0); // F1 0.948, FAR 11 %
        let far_over = confusion(100, 50, 50, 0); // FAR 50 %
        let silent = confusion(0, 0, 100, 100); // F1 0, FAR 0
        let order = [within_high, within_low, silent, over_best_f1, far_over];
        let merits: Vec<f64> = order.iter().map(merit).collect();
        assert!(merits.windows(2).all(|w| w[0] > w[1]), "{merits:?}");
        assert!((merit(&within_high) - within_high.f1()).abs() < 1e-12);
    }
}
