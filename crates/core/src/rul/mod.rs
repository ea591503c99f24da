//! Remaining useful life (RUL): how many cycles an asset has left.
//!
//! Trained from run-to-failure histories (one [`UnitHistory`] per asset,
//! ending at its failure), the model predicts from any prefix of a history,
//! as the cycles of a live asset arrive:
//!
//! 1. **Regimes** ([`Regimes`]) are found from the operating settings and
//!    each sensor is standardised within its regime on the training data.
//! 2. **Sensors** that are flat after standardisation carry no information
//!    and are dropped.
//! 3. **Features** of the trailing `window` cycles of every kept sensor
//!    (last value, mean, standard deviation, least-squares slope), an
//!    exponentially smoothed level over the whole history, the cycle count
//!    and, with several regimes, the current regime. Fewer cycles than the
//!    window use what there is (one cycle: zero spread and slope).
//! 4. **Target**: piecewise-linear RUL, `min(cycles to failure, cap)`:
//!    early in life nothing predicts the failure, so the model is not asked to.
//! 5. **Model**: gradient-boosted trees ([`crate::gbdt`]).
//! 6. **Interval**: split by units into folds, each fold predicted by a
//!    model fitted on the others; the quantiles of the out-of-fold errors,
//!    per band of predicted RUL, give a calibrated interval around every
//!    estimate (conformal, so its coverage holds without assuming a shape).
//!    The fold models are fitted on the other cores while the model itself
//!    is fitted; every fit is deterministic, so the result does not depend
//!    on the number of cores.
//!
//! Missing sensor values carry the unit's previous value forward (the
//! regime mean before the first one). Cycles must increase within a unit.

mod regimes;

pub use regimes::Regimes;

use crate::gbdt::{Gbdt, GbdtConfig, GbdtError};
use crate::stats::{mean_std, quantile};
use serde::{Deserialize, Serialize};

/// One asset's history: a value of every setting and sensor per cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitHistory {
    /// Asset (unit) identifier.
    pub unit: String,
    /// Cycle numbers, strictly increasing.
    pub cycles: Vec<f64>,
    /// Operating settings per cycle.
    pub settings: Vec<Vec<f64>>,
    /// Sensor values per cycle (NaN when missing).
    pub sensors: Vec<Vec<f64>>,
}

/// Settings of a [`RulModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulConfig {
    /// Largest RUL the target (and a prediction) takes.
    #[serde(default = "default_cap")]
    pub cap: f64,
    /// Trailing cycles the window features look at.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Smoothing factor of the exponentially smoothed level.
    #[serde(default = "default_smoothing")]
    pub smoothing: f64,
    /// Find operating regimes from the settings (else one regime).
    #[serde(default = "default_true")]
    pub regimes: bool,
    /// Coverage of the interval around each estimate, e.g. 0.9.
    #[serde(default = "default_coverage")]
    pub coverage: f64,
    /// Folds (by unit) of the cross-fitting behind the interval; 0 = no interval.
    #[serde(default = "default_folds")]
    pub interval_folds: usize,
    /// The gradient-boosted trees (300 trees at learning rate 0.06 by default:
    /// as accurate as 600 at 0.03 in cross-validation, and twice as fast to predict).
    #[serde(default = "default_trees")]
    pub trees: GbdtConfig,
}

fn default_cap() -> f64 {
    125.0
}
fn default_window() -> usize {
    30
}
fn default_smoothing() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
fn default_coverage() -> f64 {
    0.9
}
fn default_folds() -> usize {
    3
}
fn default_trees() -> GbdtConfig {
    GbdtConfig { trees: 300, learning_rate: 0.06, ..GbdtConfig::default() }
}

impl Default for RulConfig {
    fn default() -> Self {
        RulConfig {
            cap: default_cap(),
            window: default_window(),
            smoothing: default_smoothing(),
            regimes: true,
            coverage: default_coverage(),
            interval_folds: default_folds(),
            trees: default_trees(),
        }
    }
}

impl RulConfig {
    /// Every problem with the settings, as messages.
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.trees.validate();
        if !(self.cap > 0.0 && self.cap.is_finite()) {
            problems.push(format!("rul.cap must be a positive number, got {}", self.cap));
        }
        if self.window == 0 || self.window > 10_000 {
            problems.push(format!("rul.window must be between 1 and 10000, got {}", self.window));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            problems.push(format!("rul.smoothing must be in (0, 1], got {}", self.smoothing));
        }
        if !(self.coverage > 0.0 && self.coverage < 1.0) {
            problems.push(format!("rul.coverage must be in (0, 1), got {}", self.coverage));
        }
        if self.interval_folds == 1 || self.interval_folds > 20 {
            problems.push(format!("rul.interval_folds must be 0 or between 2 and 20, got {}", self.interval_folds));
        }
        problems
    }
}

/// Why a RUL model could not be fitted or used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulError {
    /// The histories cannot train a model.
    #[error("{0}")]
    BadData(String),
    /// The settings are invalid.
    #[error("invalid settings: {0}")]
    BadSettings(String),
    /// The history does not match the model (width) or is empty.
    #[error("{0}")]
    BadHistory(String),
    /// The trees could not be fitted.
    #[error(transparent)]
    Trees(#[from] GbdtError),
}

/// A RUL estimate with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RulEstimate {
    /// Predicted remaining cycles.
    pub rul: f64,
    /// Lower end of the interval (`coverage` of true values fall inside).
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
}

/// Bands of predicted RUL with their own error quantiles (the error of a
/// prediction near failure is smaller than one far from it).
const BAND_WIDTH: f64 = 25.0;

/// Cycles at the start of a history that define the unit's own initial level.
const START_CYCLES: usize = 20;

/// Feature pipeline fitted on the training histories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Features {
    window: usize,
    smoothing: f64,
    regimes: Regimes,
    /// Per regime, per sensor: (mean, standard deviation).
    scale: Vec<Vec<(f64, f64)>>,
    /// Sensors that vary after standardisation.
    kept: Vec<usize>,
}

impl Features {
    fn fit(units: &[UnitHistory], config: &RulConfig) -> Result<Features, RulError> {
        let sensors = units[0].sensors.first().map_or(0, Vec::len);
        let settings: Vec<Vec<f64>> = units.iter().flat_map(|u| u.settings.iter().cloned()).collect();
        let regimes = if config.regimes {
            Regimes::find(&settings)
        } else {
            Regimes::single(settings.first().map_or(0, Vec::len))
        };
        let assigned: Vec<(usize, &Vec<f64>)> =
            units.iter().flat_map(|u| u.settings.iter().zip(&u.sensors)).map(|(s, x)| (regimes.assign(s), x)).collect();
        let scale: Vec<Vec<(f64, f64)>> = (0..regimes.count())
            .map(|r| {
                (0..sensors)
                    .map(|j| {
                        mean_std(assigned.iter().filter(|(a, _)| *a == r).map(|(_, x)| x[j]))
                            .map_or((0.0, 0.0), |(m, s)| if s > 1e-9 * m.abs().max(1.0) { (m, s) } else { (m, 0.0) })
                    })
                    .collect()
            })
            .collect();
        let mut features = Features {
            window: config.window,
            smoothing: config.smoothing,
            regimes,
            scale,
            kept: (0..sensors).collect(),
        };
        let standardised: Vec<Vec<f64>> = units.iter().flat_map(|u| features.standardise(u)).collect();
        features.kept = (0..sensors)
            .filter(|&j| mean_std(standardised.iter().map(|z| z[j])).is_some_and(|(_, s)| s > 1e-6))
            .collect();
        if features.kept.is_empty() {
            return Err(RulError::BadData("no sensor varies in the training histories".into()));
        }
        Ok(features)
    }

    /// Each cycle's sensors standardised within its regime, missing values carried forward.
    fn standardise(&self, unit: &UnitHistory) -> Vec<Vec<f64>> {
        let mut last: Vec<f64> = vec![0.0; self.scale.first().map_or(0, Vec::len)];
        unit.settings
            .iter()
            .zip(&unit.sensors)
            .map(|(s, x)| {
                let scale = &self.scale[self.regimes.assign(s)];
                for (j, (v, (m, sd))) in x.iter().zip(scale).enumerate() {
                    if v.is_finite() {
                        last[j] = if *sd > 0.0 { (v - m) / sd } else { 0.0 };
                    }
                }
                last.clone()
            })
            .collect()
    }

    fn width(&self) -> usize {
        self.kept.len() * 6 + 1 + usize::from(self.regimes.count() > 1)
    }

    /// Feature rows for every cycle of a unit (row i uses cycles ..= i only).
    fn rows(&self, unit: &UnitHistory) -> Vec<Vec<f64>> {
        self.rows_from(unit, 0)
    }

    /// Feature rows for the cycles from `from` on (the smoothed levels still
    /// run through every cycle).
    fn rows_from(&self, unit: &UnitHistory, from: usize) -> Vec<Vec<f64>> {
        let z = self.standardise(unit);
        let cycles = z.len();
        // Running sums of x, x² and t·x per kept sensor make every window O(1).
        let columns: Vec<Vec<f64>> = self.kept.iter().map(|&j| z.iter().map(|r| r[j]).collect()).collect();
        let prefix = |f: &dyn Fn(usize, f64) -> f64, column: &[f64]| {
            let mut sums = Vec::with_capacity(column.len() + 1);
            sums.push(0.0);
            for (t, x) in column.iter().enumerate() {
                sums.push(sums[t] + f(t, *x));
            }
            sums
        };
        let sums: Vec<[Vec<f64>; 3]> = columns
            .iter()
            .map(|c| [prefix(&|_, x| x, c), prefix(&|_, x| x * x, c), prefix(&|t, x| t as f64 * x, c)])
            .collect();
        let mut smoothed: Vec<f64> = columns.iter().map(|c| c.first().copied().unwrap_or(0.0)).collect();
        let mut out = Vec::with_capacity(cycles.saturating_sub(from));
        for i in 0..cycles {
            if i < from {
                for (k, column) in columns.iter().enumerate() {
                    smoothed[k] += self.smoothing * (column[i] - smoothed[k]);
                }
                continue;
            }
            let start = (i + 1).saturating_sub(self.window);
            let count = i + 1 - start;
            let n = count as f64;
            // Window times start..=i: their mean and sum of squared deviations.
            let t_mean = (start + i) as f64 / 2.0;
            let t_var = n * (n * n - 1.0) / 12.0;
            let early = (i + 1).min(START_CYCLES);
            let mut row = Vec::with_capacity(self.width());
            for (k, (column, [s1, s2, stx])) in columns.iter().zip(&sums).enumerate() {
                let sum = s1[i + 1] - s1[start];
                let mean = sum / n;
                let var = ((s2[i + 1] - s2[start]) / n - mean * mean).max(0.0);
                let slope = if t_var > 0.0 { (stx[i + 1] - stx[start] - t_mean * sum) / t_var } else { 0.0 };
                smoothed[k] += self.smoothing * (column[i] - smoothed[k]);
                let start_level = s1[early] / early as f64;
                row.extend([column[i], mean, var.sqrt(), slope, smoothed[k], smoothed[k] - start_level]);
            }
            row.push(unit.cycles[i]);
            if self.regimes.count() > 1 {
                row.push(self.regimes.assign(&unit.settings[i]) as f64);
            }
            out.push(row);
        }
        out
    }

    /// Names of the features, for importances.
    fn names(&self, sensor_names: &[String]) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        for &j in &self.kept {
            let s = sensor_names.get(j).cloned().unwrap_or_else(|| format!("sensor{j}"));
            names.extend(["last", "mean", "std", "slope", "smoothed", "drift"].map(|f| format!("{s}.{f}")));
        }
        names.push("cycle".into());
        if self.regimes.count() > 1 {
            names.push("regime".into());
        }
        names
    }
}

/// A fitted RUL model: features, trees and the interval's error quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulModel {
    /// Artifact format version; see [`RulModel::FORMAT`].
    pub format: u32,
    /// The settings it was fitted with.
    pub config: RulConfig,
    /// Sensor names in the order histories give them.
    pub sensor_names: Vec<String>,
    /// Operating-setting names in the order histories give them.
    #[serde(default)]
    pub setting_names: Vec<String>,
    features: Features,
    trees: Gbdt,
    /// Per band of predicted RUL: the 0 %, 1 %, …, 100 % quantiles of
    /// true − predicted RUL out of fold (empty without interval folds).
    errors: Vec<Vec<f64>>,
}

impl RulModel {
    /// Current artifact format.
    pub const FORMAT: u32 = 1;

    /// Fit on run-to-failure histories (each ends at its failure).
    ///
    /// # Errors
    /// [`RulError::BadSettings`] for invalid settings; [`RulError::BadData`]
    /// when there are no histories, widths differ, cycles do not increase or
    /// no sensor varies; [`RulError::Trees`] when the trees cannot be fitted.
    pub fn fit(config: &RulConfig, sensor_names: &[String], units: &[UnitHistory]) -> Result<RulModel, RulError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(RulError::BadSettings(problems.join("; ")));
        }
        check_histories(units)?;
        let features = Features::fit(units, config)?;
        let (rows, targets, owners) = training_rows(&features, units, config.cap);
        // The model and the interval's fold models are independent fits, so
        // they run on all cores; each is deterministic, so the result is too.
        let folds =
            if config.interval_folds >= 2 && units.len() >= config.interval_folds { config.interval_folds } else { 0 };
        let fit_fold = |fold: usize| -> Result<Vec<(f64, f64)>, GbdtError> {
            // Unit u belongs to fold u mod folds.
            let (fit_rows, fit_targets): (Vec<Vec<f64>>, Vec<f64>) = rows
                .iter()
                .zip(&targets)
                .zip(&owners)
                .filter(|(_, o)| **o % folds != fold)
                .map(|((r, t), _)| (r.clone(), *t))
                .unzip();
            let fold_trees = Gbdt::fit(&config.trees, &fit_rows, &fit_targets)?;
            let held_out: Vec<Vec<f64>> =
                rows.iter().zip(&owners).filter(|(_, o)| **o % folds == fold).map(|(r, _)| r.clone()).collect();
            let truth = targets.iter().zip(&owners).filter(|(_, o)| **o % folds == fold).map(|(t, _)| *t);
            Ok(fold_trees.predict_many(&held_out).into_iter().map(|p| p.clamp(0.0, config.cap)).zip(truth).collect())
        };
        let (trees, fold_pairs) = std::thread::scope(|scope| {
            let workers = std::thread::available_parallelism().map_or(1, usize::from).max(1);
            let handles: Vec<_> = (0..folds)
                .map(|fold| {
                    let fit_fold = &fit_fold;
                    (workers > 1).then(|| scope.spawn(move || fit_fold(fold)))
                })
                .collect();
            let trees = Gbdt::fit(&config.trees, &rows, &targets);
            let pairs: Vec<Result<Vec<(f64, f64)>, GbdtError>> = handles
                .into_iter()
                .enumerate()
                .map(|(fold, handle)| match handle {
                    Some(h) => h.join().unwrap_or_else(|_| Err(GbdtError::BadData("a fold's fit panicked".into()))),
                    None => fit_fold(fold),
                })
                .collect();
            (trees, pairs)
        });
        let trees = trees?;
        let mut pairs: Vec<(f64, f64)> = Vec::with_capacity(rows.len());
        for fold in fold_pairs {
            pairs.extend(fold?);
        }
        let errors = if folds == 0 { Vec::new() } else { error_bands(&pairs, config.cap) };
        Ok(RulModel {
            format: Self::FORMAT,
            config: config.clone(),
            sensor_names: sensor_names.to_vec(),
            setting_names: Vec::new(),
            features,
            trees,
            errors,
        })
    }

    /// Estimates after every cycle of `history` (each uses that cycle and the ones before).
    ///
    /// # Errors
    /// [`RulError::BadHistory`] when the history is empty or its widths differ from the model's.
    pub fn predict_all(&self, history: &UnitHistory) -> Result<Vec<RulEstimate>, RulError> {
        self.check_history(history)?;
        Ok(self.trees.predict_many(&self.features.rows(history)).into_iter().map(|raw| self.estimate(raw)).collect())
    }

    /// The estimate after the last cycle of `history` (the trees run on that cycle only).
    ///
    /// # Errors
    /// See [`RulModel::predict_all`].
    pub fn predict(&self, history: &UnitHistory) -> Result<RulEstimate, RulError> {
        self.check_history(history)?;
        let rows = self.features.rows_from(history, history.cycles.len() - 1);
        let last = rows.last().ok_or_else(|| RulError::BadHistory(format!("unit {}: no cycles", history.unit)))?;
        Ok(self.estimate(self.trees.predict(last)))
    }

    fn check_history(&self, history: &UnitHistory) -> Result<(), RulError> {
        if history.cycles.is_empty() {
            return Err(RulError::BadHistory(format!("unit {}: no cycles", history.unit)));
        }
        let sensors = self.features.scale.first().map_or(0, Vec::len);
        if history.sensors.iter().any(|x| x.len() != sensors) {
            return Err(RulError::BadHistory(format!(
                "unit {}: the model expects {sensors} sensors per cycle",
                history.unit
            )));
        }
        check_histories(std::slice::from_ref(history))
    }

    fn estimate(&self, raw: f64) -> RulEstimate {
        let rul = raw.clamp(0.0, self.config.cap);
        let (low, high) = ((1.0 - self.config.coverage) / 2.0, (1.0 + self.config.coverage) / 2.0);
        match self.band(rul) {
            Some(table) => RulEstimate {
                rul,
                lower: (rul + table_quantile(table, low)).max(0.0),
                upper: rul + table_quantile(table, high),
            },
            None => RulEstimate { rul, lower: f64::NAN, upper: f64::NAN },
        }
    }

    fn band(&self, rul: f64) -> Option<&Vec<f64>> {
        self.errors.get(((rul / BAND_WIDTH) as usize).min(self.errors.len().saturating_sub(1)))
    }

    /// How likely the true RUL behind an estimate of `rul` cycles is at most
    /// `horizon` cycles, from the out-of-fold errors; NaN without interval
    /// folds. (Above the cap the model cannot tell: an estimate at the cap
    /// means "at least the cap".)
    #[must_use]
    pub fn probability_below(&self, rul: f64, horizon: f64) -> f64 {
        let Some(table) = self.band(rul) else { return f64::NAN };
        let x = horizon - rul;
        let last = table.len() - 1;
        if x < table[0] {
            return 0.0;
        }
        if x >= table[last] {
            return 1.0;
        }
        let i = table.partition_point(|q| *q <= x).clamp(1, last);
        let (a, b) = (table[i - 1], table[i]);
        let within = if b > a { (x - a) / (b - a) } else { 1.0 };
        ((i - 1) as f64 + within) / last as f64
    }

    /// Feature names with their share of the trees' total split gain, largest first.
    #[must_use]
    pub fn importances(&self) -> Vec<(String, f64)> {
        let mut named: Vec<(String, f64)> =
            self.features.names(&self.sensor_names).into_iter().zip(self.trees.importances()).collect();
        named.sort_by(|a, b| b.1.total_cmp(&a.1));
        named
    }

    /// Number of operating regimes found.
    #[must_use]
    pub fn regimes(&self) -> usize {
        self.features.regimes.count()
    }

    /// Names of the sensors the model uses (the others were flat).
    #[must_use]
    pub fn kept_sensors(&self) -> Vec<String> {
        self.features.kept.iter().map(|&j| self.sensor_names.get(j).cloned().unwrap_or_default()).collect()
    }
}

fn check_histories(units: &[UnitHistory]) -> Result<(), RulError> {
    let Some(first) = units.first() else {
        return Err(RulError::BadData("no unit histories".into()));
    };
    let settings = first.settings.first().map_or(0, Vec::len);
    let sensors = first.sensors.first().map_or(0, Vec::len);
    for u in units {
        if u.cycles.is_empty() {
            return Err(RulError::BadData(format!("unit {}: no cycles", u.unit)));
        }
        if u.settings.len() != u.cycles.len() || u.sensors.len() != u.cycles.len() {
            return Err(RulError::BadData(format!("unit {}: cycles, settings and sensors differ in length", u.unit)));
        }
        if u.settings.iter().any(|s| s.len() != settings) || u.sensors.iter().any(|s| s.len() != sensors) {
            return Err(RulError::BadData(format!("unit {}: settings or sensors differ in width", u.unit)));
        }
        if let Some(w) = u.cycles.windows(2).find(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater)) {
            return Err(RulError::BadData(format!(
                "unit {}: cycles must increase, but {} is followed by {}",
                u.unit, w[0], w[1]
            )));
        }
    }
    Ok(())
}

/// Feature rows, capped RUL targets and the unit index of every training cycle.
fn training_rows(features: &Features, units: &[UnitHistory], cap: f64) -> (Vec<Vec<f64>>, Vec<f64>, Vec<usize>) {
    let (mut rows, mut targets, mut owners) = (Vec::new(), Vec::new(), Vec::new());
    for (u, unit) in units.iter().enumerate() {
        let failure = unit.cycles[unit.cycles.len() - 1];
        for (row, cycle) in features.rows(unit).into_iter().zip(&unit.cycles) {
            rows.push(row);
            targets.push((failure - cycle).min(cap));
            owners.push(u);
        }
    }
    (rows, targets, owners)
}

/// Per band of predicted RUL, the 0 %, 1 %, …, 100 % quantiles of the
/// (prediction, truth) pairs' errors; a band with few pairs borrows from all.
fn error_bands(pairs: &[(f64, f64)], cap: f64) -> Vec<Vec<f64>> {
    let table = |errors: &[f64]| -> Vec<f64> {
        (0..=100).map(|p| quantile(errors, f64::from(p) / 100.0).unwrap_or(0.0)).collect()
    };
    let all: Vec<f64> = pairs.iter().map(|(p, t)| t - p).collect();
    let overall = table(&all);
    let bands = (cap / BAND_WIDTH).ceil().max(1.0) as usize;
    (0..bands)
        .map(|b| {
            let errors: Vec<f64> = pairs
                .iter()
                .filter(|(p, _)| ((p / BAND_WIDTH) as usize).min(bands - 1) == b)
                .map(|(p, t)| t - p)
                .collect();
            if errors.len() < 50 { overall.clone() } else { table(&errors) }
        })
        .collect()
}

/// The `level` quantile of a 0 %…100 % quantile table, by linear interpolation.
fn table_quantile(table: &[f64], level: f64) -> f64 {
    let position = level.clamp(0.0, 1.0) * (table.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    table[below] + (table[above] - table[below]) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;

    /// Units that degrade exponentially towards failure in two regimes: s0
    /// wears, s1 is noise, s2 is flat, s3 depends on the regime only.
    pub(crate) fn fleet(units: usize, seed: u64) -> Vec<UnitHistory> {
        let mut g = SeededNormal::new(seed);
        (0..units)
            .map(|u| {
                let life = 120 + g.below(120);
                let (mut cycles, mut settings, mut sensors) = (Vec::new(), Vec::new(), Vec::new());
                for c in 1..=life {
                    let regime = g.below(2) as f64;
                    let wear = (0.03 * (c as f64 - life as f64)).exp();
                    cycles.push(c as f64);
                    settings.push(vec![regime * 20.0, 0.5]);
                    sensors.push(vec![
                        100.0 + 30.0 * regime + 5.0 * wear + 0.3 * g.normal(),
                        g.normal(),
                        7.0,
                        50.0 * regime + 0.1 * g.normal(),
                    ]);
                }
                UnitHistory { unit: format!("u{u}"), cycles, settings, sensors }
            })
            .collect()
    }

    fn names() -> Vec<String> {
        ["wear", "noise", "flat", "regime_only"].map(String::from).to_vec()
    }

    fn small() -> RulConfig {
        RulConfig {
            trees: GbdtConfig { trees: 150, learning_rate: 0.08, ..GbdtConfig::default() },
            ..RulConfig::default()
        }
    }

    #[test]
    fn learns_wear_across_regimes_with_calibrated_intervals() {
        let train = fleet(60, 1);
        let model = RulModel::fit(&small(), &names(), &train).unwrap();
        assert_eq!(model.regimes(), 2);
        assert!(!model.kept_sensors().contains(&"flat".to_string()), "{:?}", model.kept_sensors());
        let top = &model.importances()[0].0;
        assert!(top.starts_with("wear") || top == "cycle", "{:?}", &model.importances()[..3]);
        // Truncate test units at random points, as C-MAPSS's test set does.
        let mut g = SeededNormal::new(7);
        let (mut squared, mut covered, test) = (0.0, 0, fleet(80, 2));
        for unit in &test {
            let cut = 20 + g.below(unit.cycles.len() - 20);
            let truth = (unit.cycles.len() - cut) as f64;
            let prefix = UnitHistory {
                unit: unit.unit.clone(),
                cycles: unit.cycles[..cut].to_vec(),
                settings: unit.settings[..cut].to_vec(),
                sensors: unit.sensors[..cut].to_vec(),
            };
            let estimate = model.predict(&prefix).unwrap();
            let capped = truth.min(125.0);
            squared += (estimate.rul - capped).powi(2);
            covered += usize::from(estimate.lower <= capped && capped <= estimate.upper);
        }
        let rmse = (squared / test.len() as f64).sqrt();
        assert!(rmse < 20.0, "RMSE {rmse}");
        let coverage = covered as f64 / test.len() as f64;
        assert!((0.75..=1.0).contains(&coverage), "90 % intervals cover {coverage}");
        // The probability of failing within a horizon grows with the horizon
        // and is about 5 % at the interval's lower end, 95 % at its upper end.
        let estimate = model.predict(&test[0]).unwrap();
        let p = |h: f64| model.probability_below(estimate.rul, h);
        assert!(p(estimate.lower - 1.0) <= 0.05 + 1e-9 && p(estimate.upper + 1.0) >= 0.95 - 1e-9, "{estimate:?}");
        assert!((p(estimate.upper) - 0.95).abs() < 0.02, "{}", p(estimate.upper));
        assert!(p(10.0) <= p(20.0) && p(20.0) <= p(40.0));
    }

    #[test]
    fn short_histories_and_bad_input() {
        let train = fleet(20, 3);
        let config = RulConfig { interval_folds: 0, ..small() };
        let model = RulModel::fit(&config, &names(), &train).unwrap();
        let one = UnitHistory {
            unit: "new".into(),
            cycles: vec![1.0],
            settings: vec![vec![0.0, 0.5]],
            sensors: vec![vec![100.0, 0.0, 7.0, 0.0]],
        };
        let estimate = model.predict(&one).unwrap();
        assert!(estimate.rul > 60.0, "a new unit has long to live: {estimate:?}");
        assert!(estimate.lower.is_nan(), "no interval without folds");
        let mut backwards = train[0].clone();
        backwards.cycles.swap(3, 4);
        assert!(matches!(model.predict(&backwards), Err(RulError::BadData(m)) if m.contains("increase")));
        let mut narrow = one.clone();
        narrow.sensors[0].pop();
        assert!(matches!(model.predict(&narrow), Err(RulError::BadHistory(_))));
        assert!(matches!(RulModel::fit(&config, &names(), &[]), Err(RulError::BadData(_))));
        let bad = RulConfig { window: 0, coverage: 1.5, ..config.clone() };
        assert!(
            matches!(RulModel::fit(&bad, &names(), &train), Err(RulError::BadSettings(m)) if m.contains("window") && m.contains("coverage"))
        );
        // Missing values carry the previous value forward.
        let mut gappy = train[1].clone();
        gappy.sensors[10][0] = f64::NAN;
        assert!(model.predict(&gappy).unwrap().rul.is_finite());
    }

    #[test]
    fn the_artifact_round_trips_and_predicts_the_same() {
        let train = fleet(15, 4);
        let model = RulModel::fit(&RulConfig { interval_folds: 2, ..small() }, &names(), &train).unwrap();
        let json = serde_json::to_string(&model).unwrap();
        let back: RulModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back.format, RulModel::FORMAT);
        let all = model.predict_all(&train[0]).unwrap();
        assert_eq!(back.predict_all(&train[0]).unwrap(), all);
        assert_eq!(model.predict(&train[0]).unwrap(), *all.last().unwrap(), "the last cycle alone gives the same");
    }
}
