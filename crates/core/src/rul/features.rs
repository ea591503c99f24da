//! The feature pipeline fitted on the training histories: regimes,
//! per-regime standardisation, the sensors kept, the health index, and the
//! window features (for the trees) or channels (for the network) of a history.

use super::{Learner, Regimes, RulConfig, RulError, UnitHistory};
use crate::stats::mean_std;
use serde::{Deserialize, Serialize};

/// Cycles at the start of a history that define the unit's own initial level.
pub(super) const START_CYCLES: usize = 20;

/// Feature pipeline fitted on the training histories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Features {
    pub(super) window: usize,
    pub(super) smoothing: f64,
    pub(super) regimes: Regimes,
    /// Per regime, per sensor: (mean, standard deviation).
    pub(super) scale: Vec<Vec<(f64, f64)>>,
    /// Sensors that vary after standardisation.
    pub(super) kept: Vec<usize>,
    /// Health index: intercept, then one weight per kept sensor (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) health: Vec<f64>,
}

impl Features {
    pub(super) fn fit(units: &[UnitHistory], config: &RulConfig) -> Result<Features, RulError> {
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
            health: Vec::new(),
        };
        let standardised: Vec<Vec<f64>> = units.iter().flat_map(|u| features.standardise(u)).collect();
        features.kept = (0..sensors)
            .filter(|&j| mean_std(standardised.iter().map(|z| z[j])).is_some_and(|(_, s)| s > 1e-6))
            .collect();
        if features.kept.is_empty() {
            return Err(RulError::BadData("no sensor varies in the training histories".into()));
        }
        if config.health_index {
            features.health = features.fit_health_index(units, config.cap);
        }
        Ok(features)
    }

    /// Intercept and per-kept-sensor weights of the least-squares line from
    /// the standardised sensors to `min(cycles to failure, cap)` (a tiny
    /// ridge keeps it defined when sensors are collinear); empty when the
    /// normal equations cannot be solved.
    pub(super) fn fit_health_index(&self, units: &[UnitHistory], cap: f64) -> Vec<f64> {
        let k = self.kept.len() + 1;
        let mut xtx = nalgebra::DMatrix::<f64>::zeros(k, k);
        let mut xty = nalgebra::DVector::<f64>::zeros(k);
        let mut x = vec![1.0; k];
        for unit in units {
            let failure = unit.cycles[unit.cycles.len() - 1];
            for (z, cycle) in self.standardise(unit).iter().zip(&unit.cycles) {
                let target = (failure - cycle).min(cap);
                for (slot, &j) in x[1..].iter_mut().zip(&self.kept) {
                    *slot = z[j];
                }
                for a in 0..k {
                    xty[a] += x[a] * target;
                    for b in 0..k {
                        xtx[(a, b)] += x[a] * x[b];
                    }
                }
            }
        }
        for a in 1..k {
            xtx[(a, a)] += 1e-6 * xtx[(0, 0)];
        }
        xtx.cholesky().map(|c| c.solve(&xty).iter().copied().collect()).unwrap_or_default()
    }

    /// Each cycle's sensors standardised within its regime, missing values carried forward.
    pub(super) fn standardise(&self, unit: &UnitHistory) -> Vec<Vec<f64>> {
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

    pub(super) fn width(&self) -> usize {
        (self.kept.len() + usize::from(!self.health.is_empty())) * 6 + 1 + usize::from(self.regimes.count() > 1)
    }

    /// Feature rows for the cycles from `from` on (the smoothed levels still
    /// run through every cycle).
    pub(super) fn rows_from(&self, unit: &UnitHistory, from: usize) -> Vec<Vec<f64>> {
        let z = self.standardise(unit);
        let cycles = z.len();
        // Running sums of x, x² and t·x per kept sensor make every window O(1).
        let mut columns: Vec<Vec<f64>> = self.kept.iter().map(|&j| z.iter().map(|r| r[j]).collect()).collect();
        if let Some((intercept, weights)) = self.health.split_first() {
            let index: Vec<f64> = (0..cycles)
                .map(|i| intercept + weights.iter().zip(&columns).map(|(w, c)| w * c[i]).sum::<f64>())
                .collect();
            columns.push(index);
        }
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
    pub(super) fn names(&self, sensor_names: &[String]) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        for &j in &self.kept {
            let s = sensor_names.get(j).cloned().unwrap_or_else(|| format!("sensor{j}"));
            names.extend(["last", "mean", "std", "slope", "smoothed", "drift"].map(|f| format!("{s}.{f}")));
        }
        if !self.health.is_empty() {
            names.extend(["last", "mean", "std", "slope", "smoothed", "drift"].map(|f| format!("health.{f}")));
        }
        names.push("cycle".into());
        if self.regimes.count() > 1 {
            names.push("regime".into());
        }
        names
    }
}

/// One history made ready for the learners.
pub(super) struct Prepared {
    /// Feature rows of the cycles from `from` on (for the trees).
    pub(super) rows: Vec<Vec<f64>>,
    /// Per cycle, the network's channels: the kept sensors standardised,
    /// their exponentially smoothed levels over the whole history, and the
    /// cycle count / 100 (a window alone cannot tell how long a unit has run).
    pub(super) sequence: Vec<Vec<f32>>,
    /// First cycle estimated.
    pub(super) from: usize,
    /// Cycles of the history.
    pub(super) cycles: usize,
}

impl Features {
    pub(super) fn prepare(&self, unit: &UnitHistory, from: usize, learner: Learner) -> Prepared {
        let rows = if learner.uses_trees() { self.rows_from(unit, from) } else { Vec::new() };
        let sequence = if learner.uses_network() {
            let mut smoothed: Option<Vec<f64>> = None;
            self.standardise(unit)
                .iter()
                .zip(&unit.cycles)
                .map(|(z, cycle)| {
                    let level = smoothed.get_or_insert_with(|| self.kept.iter().map(|&j| z[j]).collect());
                    for (l, &j) in level.iter_mut().zip(&self.kept) {
                        *l += self.smoothing * (z[j] - *l);
                    }
                    let mut channels: Vec<f32> = self.kept.iter().map(|&j| z[j] as f32).collect();
                    channels.extend(level.iter().map(|l| *l as f32));
                    channels.push((cycle / 100.0) as f32);
                    channels
                })
                .collect()
        } else {
            Vec::new()
        };
        Prepared { rows, sequence, from, cycles: unit.cycles.len() }
    }
}
