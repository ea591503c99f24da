//! `usan eval nab`: the Numenta Anomaly Benchmark, streaming.
//!
//! For every `DATA/data/<category>/<file>.csv` (`timestamp,value`), the
//! detector scores each value using only the values before it, and usan
//! writes NAB's results layout `OUT/usan/<category>/usan_<file>.csv` with
//! `timestamp,value,anomaly_score,label`. NAB counts every flagged row, so
//! usan flags the onset of each anomalous episode (where its threshold's
//! decision turns anomalous): there the anomaly score is `r / (1 + r)` with
//! `r = score / threshold` (at least 0.5); elsewhere it is the same value
//! held below 0.5. `label` is 1 inside the
//! windows of `DATA/labels/combined_windows.json` (0 when absent); the
//! labels are read only to print the score, with NAB's own rules
//! ([`usan_core::metrics::nab`]) at that fixed 0.5 threshold. NAB's
//! `run.py --optimize` may pick another threshold from the same files.

use super::validation::{self, Folds, Selection};
use super::{DetectorSettings, EvalSettings, print_settings};
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use usan_core::detector::{ContextMemoryConfig, Detector, DetectorConfig, FlatlineConfig, FusionConfig, KnnCadConfig};
use usan_core::metrics::nab::{NAB_PROFILES, NabFileScore, normalized, score_file};
use usan_core::threshold::ThresholdConfig;

/// Highest anomaly score of a row that is not the onset of an episode.
const ONSET_ONLY: f64 = 0.499;

/// The default NAB detector, three streaming detectors fused, chosen by
/// validation (`--folds`, BENCHMARKS.md "Held-out figures"):
/// - kNN conformal anomaly detection on windows of 32 values against the
///   4,000 before them (two weeks of NAB's usual 5-minute steps), scaled so
///   that above 1 is "stranger than every one of the last 1,000" (the
///   conformal rank's resolution: 1000/1001 > 0.999);
/// - flatline: a value held unchanged longer than any earlier run (and at
///   least 10 values), scaled so that 1 is "as long as the record";
/// - context memory with its default settings, scaled so that 1 is a run of
///   surprises that fewer than 1 in 1,000 of the series' recent runs reached.
///
/// An episode starts when the fused score exceeds 1 and ends after 150
/// quiet values, so one anomaly is flagged once.
#[must_use]
pub fn default_settings() -> DetectorSettings {
    DetectorSettings {
        algorithm: DetectorConfig::Fusion(FusionConfig {
            members: vec![
                DetectorConfig::KnnCad(KnnCadConfig { window: 32, reference: 4000, k: 5, calibration: 1000 }),
                DetectorConfig::Flatline(FlatlineConfig { min_run: 10, tolerance: 0.0 }),
                DetectorConfig::ContextMemory(ContextMemoryConfig::default()),
            ],
            quantile: 0.99,
            scales: vec![0.999, 1.0, 3.0],
        }),
        threshold: ThresholdConfig { k: 1, n: 150, ..ThresholdConfig::fixed(1.0) },
    }
}

fn parse_time(text: &str) -> Option<chrono::NaiveDateTime> {
    let text = text.trim();
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
}

struct Series {
    timestamps: Vec<String>,
    times: Vec<chrono::NaiveDateTime>,
    values: Vec<f64>,
}

fn read_series(path: &Path) -> anyhow::Result<Series> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else { bail!("{} is empty", path.display()) };
    if header.trim() != "timestamp,value" {
        bail!("{}: the header must be `timestamp,value` (got {header:?})", path.display());
    }
    let mut series = Series { timestamps: Vec::new(), times: Vec::new(), values: Vec::new() };
    for (i, line) in lines {
        let (stamp, value) = line
            .split_once(',')
            .with_context(|| format!("{}: line {} is not `timestamp,value`", path.display(), i + 1))?;
        let time = parse_time(stamp)
            .with_context(|| format!("{}: line {}: bad timestamp {stamp:?}", path.display(), i + 1))?;
        let value = match value.trim() {
            "" | "NaN" | "nan" => f64::NAN,
            v => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .with_context(|| format!("{}: line {}: {v:?} is not a number", path.display(), i + 1))?,
        };
        series.timestamps.push(stamp.trim().to_string());
        series.times.push(time);
        series.values.push(value);
    }
    Ok(series)
}

/// Inclusive row ranges of the labelled windows of one file.
fn window_rows(series: &Series, windows: &[(chrono::NaiveDateTime, chrono::NaiveDateTime)]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = windows
        .iter()
        .filter_map(|(start, end)| {
            let first = series.times.iter().position(|t| t >= start)?;
            let last = series.times.iter().rposition(|t| t <= end)?;
            (first <= last).then_some((first, last))
        })
        .collect();
    out.sort_unstable();
    out
}

type Windows = HashMap<String, Vec<(chrono::NaiveDateTime, chrono::NaiveDateTime)>>;

fn read_labels(data: &Path) -> anyhow::Result<Windows> {
    let path = data.join("labels/combined_windows.json");
    if !path.exists() {
        return Ok(Windows::new());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw: HashMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&text).with_context(|| format!("{} is not NAB's windows JSON", path.display()))?;
    let mut out = Windows::new();
    for (file, windows) in raw {
        let mut parsed = Vec::new();
        for w in windows {
            let [start, end] = w.as_slice() else { bail!("{}: {file}: a window is not [start, end]", path.display()) };
            let (Some(s), Some(e)) = (parse_time(start), parse_time(end)) else {
                bail!("{}: {file}: bad window times {start:?}, {end:?}", path.display())
            };
            parsed.push((s, e));
        }
        out.insert(file, parsed);
    }
    Ok(out)
}

fn find_files(data: &Path) -> anyhow::Result<Vec<super::GroupFile>> {
    super::csv_files_by_group(&data.join("data"), "DATA/data/<category>/<file>.csv")
}

/// One setting's pass over one series.
struct SeriesRun {
    /// The anomaly score written for each row.
    anomaly_scores: Vec<f64>,
    /// The row's score under each of [`NAB_PROFILES`].
    scores: [NabFileScore; 3],
}

/// Scores `series` with a fresh detector of `settings`, causally.
fn run_series(settings: &DetectorSettings, series: &Series, windows: &[(usize, usize)]) -> anyhow::Result<SeriesRun> {
    let mut detector = settings.algorithm.build()?;
    let mut threshold = settings.threshold.build(&[]);
    let level = threshold.level();
    let mut detections = Vec::with_capacity(series.values.len());
    let mut anomaly_scores = Vec::with_capacity(series.values.len());
    for value in &series.values {
        let score = match detector.score(&[*value]) {
            Ok(s) => s.value,
            Err(usan_core::DetectorError::NoData) => 0.0,
            Err(e) => return Err(e.into()),
        };
        let decision = threshold.decide(score);
        let ratio = (score / level).max(0.0);
        let squashed = if ratio.is_finite() { ratio / (1.0 + ratio) } else { 1.0 };
        anomaly_scores.push(if decision.rising { squashed.max(0.5) } else { squashed.min(ONSET_ONLY) });
        detections.push(decision.rising);
    }
    let scores = NAB_PROFILES.map(|profile| score_file(&detections, windows, &profile));
    Ok(SeriesRun { anomaly_scores, scores })
}

/// Writes NAB's results file of one series.
fn write_results(
    target: &Path,
    series: &Series,
    windows: &[(usize, usize)],
    anomaly_scores: &[f64],
) -> anyhow::Result<()> {
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(target).with_context(|| format!("cannot create {}", target.display()))?,
    );
    writeln!(writer, "timestamp,value,anomaly_score,label")?;
    let mut window = windows.iter().peekable();
    for (i, ((stamp, value), anomaly_score)) in
        series.timestamps.iter().zip(&series.values).zip(anomaly_scores).enumerate()
    {
        while window.peek().is_some_and(|(_, end)| *end < i) {
            window.next();
        }
        let label = window.peek().is_some_and(|(s, e)| *s <= i && i <= *e);
        writeln!(writer, "{stamp},{value},{anomaly_score},{}", u8::from(label))?;
    }
    writer.flush().with_context(|| format!("cannot write {}", target.display()))
}

/// The three profiles' normalised scores of a set of series.
fn profile_scores(runs: &[&SeriesRun]) -> String {
    NAB_PROFILES
        .iter()
        .enumerate()
        .map(|(p, profile)| {
            let files: Vec<NabFileScore> = runs.iter().map(|r| r.scores[p]).collect();
            format!("{} {:.2}", profile.name, normalized(&files, profile))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run the protocol: every candidate setting on every series (over the
/// machine's cores), then the files of the chosen one (with `folds`, each
/// series gets the candidate chosen without its fold).
///
/// # Errors
/// When a file or the labels are malformed.
pub fn run(data: &Path, out: &Path, settings: &EvalSettings, folds: Option<Folds>) -> anyhow::Result<()> {
    let start = Instant::now();
    let candidates: Vec<&DetectorSettings> = std::iter::once(&settings.nab).chain(&settings.candidates.nab).collect();
    let labels = read_labels(data)?;
    let files = find_files(data)?;
    if files.is_empty() {
        bail!("{} has no data/<category>/<file>.csv series", data.display());
    }
    let mut loaded = Vec::with_capacity(files.len());
    for (category, stem, path) in &files {
        let series = read_series(path)?;
        let windows =
            window_rows(&series, labels.get(&format!("{category}/{stem}.csv")).map_or(&[][..], Vec::as_slice));
        loaded.push((series, windows));
    }
    let runs = validation::score_every(candidates.len(), files.len(), |c, f| {
        let (series, windows) = &loaded[f];
        run_series(candidates[c], series, windows).with_context(|| files[f].2.display().to_string())
    })?;
    let metric = |picked: &[&SeriesRun]| {
        let files: Vec<NabFileScore> = picked.iter().map(|r| r.scores[0]).collect();
        normalized(&files, &NAB_PROFILES[0])
    };
    let keys: Option<Vec<String>> =
        folds.map(|folds| files.iter().map(|(category, stem, _)| folds.key(category, stem)).collect());
    let selection = Selection::new(&runs, keys.as_deref(), &metric);
    let mut rows_scored = 0usize;
    println!("| series | rows | windows | detected | false detections |");
    println!("|---|---|---|---|---|");
    for (f, ((category, stem, _), (series, windows))) in files.iter().zip(&loaded).enumerate() {
        let run = &runs[selection.chosen[f]][f];
        let dir = out.join("usan").join(category);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_results(&dir.join(format!("usan_{stem}.csv")), series, windows, &run.anomaly_scores)?;
        rows_scored += series.values.len();
        let standard = run.scores[0];
        println!(
            "| {category}/{stem} | {} | {} | {} | {} |",
            series.values.len(),
            standard.windows,
            standard.detected_windows,
            standard.false_positives
        );
    }
    let wall_s = start.elapsed().as_secs_f64();
    print_settings("nab", &settings.nab);
    let describe = |runs: &[&SeriesRun]| profile_scores(runs);
    selection.report("nab", "series", &runs, &settings.candidates, folds, &describe);
    let written = selection.picked(&runs);
    println!("NAB score over {} series at anomaly_score >= 0.5: {}", files.len(), profile_scores(&written));
    // Every candidate scored every row.
    let rows_scored = rows_scored * candidates.len();
    println!("wall time {wall_s:.2} s ({rows_scored} rows, {:.0} rows/s)", rows_scored as f64 / wall_s);
    Ok(())
}
