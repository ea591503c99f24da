//! `usan eval cmapss`: remaining useful life on NASA's C-MAPSS turbofans.
//!
//! Trains on `DATA/train_<subset>.txt` (run to failure), predicts every unit
//! of `DATA/test_<subset>.txt` at its last cycle and writes `unit,rul`, one
//! row per test unit, to the output file (the layout
//! `../shared/bench/score_cmapss.py` reads). `RUL_<subset>.txt` is read only
//! when present, and only to print RMSE, the PHM08 score and the interval's
//! coverage; it never touches the model. Files are whitespace-separated with
//! 26 columns (unit, cycle, 3 settings, 21 sensors); a wrong column count,
//! a cell that is not a number or cycles that do not increase within a unit
//! are refused with the file and line. A test unit with fewer cycles than
//! the feature window is predicted from the cycles it has.

use super::{EvalSettings, print_settings};
use crate::cli::fit::rul::{cmapss_sensor_names, describe, read_units};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use usan_core::rul::RulModel;

/// Run the protocol for one subset.
///
/// # Errors
/// When a file is missing or malformed, or the model cannot be fitted.
pub fn run(data: &Path, subset: &str, out: &Path, settings: &EvalSettings) -> anyhow::Result<()> {
    let start = Instant::now();
    let config = &settings.cmapss;
    let train = read_units(&data.join(format!("train_{subset}.txt")))?;
    let test = read_units(&data.join(format!("test_{subset}.txt")))?;
    let fit_start = Instant::now();
    let model = RulModel::fit(config, &cmapss_sensor_names(), &train).context("fitting the RUL model")?;
    let fit_s = fit_start.elapsed().as_secs_f64();

    let predict_start = Instant::now();
    let mut estimates = Vec::with_capacity(test.len());
    let mut windows = 0usize;
    for unit in &test {
        let all = model.predict_all(unit).with_context(|| format!("unit {}", unit.unit))?;
        windows += all.len();
        estimates.push(*all.last().context("a unit without cycles")?);
    }
    let predict_s = predict_start.elapsed().as_secs_f64();

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?);
    writeln!(file, "unit,rul")?;
    for (unit, estimate) in test.iter().zip(&estimates) {
        writeln!(file, "{},{:.4}", unit.unit, estimate.rul)?;
    }
    file.flush()?;

    print_settings("cmapss", config);
    println!("{subset}: trained on {}", describe(&model, &train));

    let truth_path = data.join(format!("RUL_{subset}.txt"));
    if truth_path.exists() {
        let truth: Vec<f64> = std::fs::read_to_string(&truth_path)
            .with_context(|| format!("cannot read {}", truth_path.display()))?
            .split_whitespace()
            .map(|v| v.parse::<f64>().with_context(|| format!("{}: {v:?} is not a number", truth_path.display())))
            .collect::<anyhow::Result<_>>()?;
        if truth.len() != test.len() {
            bail!("{} has {} values for {} test units", truth_path.display(), truth.len(), test.len());
        }
        let predicted: Vec<f64> = estimates.iter().map(|e| e.rul).collect();
        for (label, cap) in [("true RUL", f64::INFINITY), ("true RUL capped at the model's cap", config.cap)] {
            let capped: Vec<f64> = truth.iter().map(|t| t.min(cap)).collect();
            let (rmse, score) = rmse_and_phm08(&predicted, &capped);
            let covered = estimates.iter().zip(&capped).filter(|(e, t)| e.lower <= **t && **t <= e.upper).count();
            let interval = if estimates.iter().any(|e| e.lower.is_nan()) {
                "no interval (interval_folds = 0)".to_string()
            } else {
                format!(
                    "{:.0} % of units inside the {:.0} % interval",
                    100.0 * covered as f64 / test.len() as f64,
                    100.0 * config.coverage
                )
            };
            println!("{subset} vs {label}: RMSE {rmse:.3}, PHM08 score {score:.1}, {interval}");
        }
    } else {
        println!("{subset}: no {} beside the data, so no metrics", truth_path.display());
    }
    println!(
        "fit {fit_s:.2} s; predicted {windows} windows in {predict_s:.3} s ({:.0} windows/s); wall time {:.2} s",
        windows as f64 / predict_s.max(1e-9),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// RMSE and the PHM08 score (late predictions cost more than early ones).
fn rmse_and_phm08(predicted: &[f64], truth: &[f64]) -> (f64, f64) {
    let n = predicted.len().max(1) as f64;
    let mut squared = 0.0;
    let mut score = 0.0;
    for (p, t) in predicted.iter().zip(truth) {
        let d = p - t;
        squared += d * d;
        score += if d < 0.0 { (-d / 13.0).exp() - 1.0 } else { (d / 10.0).exp() - 1.0 };
    }
    ((squared / n).sqrt(), score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phm08_penalises_late_more_than_early() {
        let (rmse, early) = rmse_and_phm08(&[90.0], &[100.0]);
        assert!((rmse - 10.0).abs() < 1e-12);
        let (_, late) = rmse_and_phm08(&[110.0], &[100.0]);
        assert!((early - ((10.0f64 / 13.0).exp() - 1.0)).abs() < 1e-12);
        assert!(late > early);
    }
}
