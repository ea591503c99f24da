//! Control charts as a detector: an I–MR chart per signal, limits
//! established on the baseline (Phase I), then every frame judged against
//! them with the Western Electric or Nelson rules (Phase II). Run-rule
//! violations thereby become findings and alarms like any detector's, and
//! the fitted limits are saved and restored with the model.
//!
//! Score per signal: `|z| / 3` while no rule is broken (so 1 is a 3σ
//! limit), `max(|z| / 3, 1) + 0.1 × rules broken` when one is; the frame's
//! score is the largest, and each signal's is its contribution. Each rule
//! broken on the frame is reported as a statistic named after it (`nelson2`,
//! `we1`: value 1, limit 1) whose contributions mark the signals that broke
//! it. A signal constant over the baseline has no σ and is not charted.

use super::{Detector, DetectorError, DetectorKind, Score, Statistic, check_row, check_rows, refuse_invalid};
use crate::spc::chart::ImrMonitor;
use crate::spc::rules::{Rule, RuleSet};
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};

/// Settings of [`ControlChart`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlChartConfig {
    /// Run rules: `nelson` (default) or `we`.
    #[serde(default = "default_rules")]
    pub rules: RuleSet,
    /// Re-establish the baseline limits without out-of-control points.
    #[serde(default = "default_exclude")]
    pub exclude_out_of_control: bool,
}

fn default_rules() -> RuleSet {
    RuleSet::Nelson
}

fn default_exclude() -> bool {
    true
}

impl Default for ControlChartConfig {
    fn default() -> Self {
        ControlChartConfig { rules: default_rules(), exclude_out_of_control: default_exclude() }
    }
}

impl ControlChartConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Per-signal I–MR charts with run rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlChart {
    config: ControlChartConfig,
    /// One chart per signal (None: constant over the baseline, not charted).
    charts: Vec<Option<ImrMonitor>>,
}

impl ControlChart {
    /// Least baseline rows (an I–MR chart needs three values).
    pub const MIN_ROWS: usize = 3;

    /// Unfitted charts.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: ControlChartConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(ControlChart { config, charts: Vec::new() })
    }
}

impl Detector for ControlChart {
    /// Establish each signal's limits from its baseline values.
    ///
    /// # Errors
    /// [`DetectorError::NotEnoughData`] when no signal has three finite,
    /// varying values; [`DetectorError::DimensionMismatch`] for ragged rows.
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, Self::MIN_ROWS)?;
        self.charts = (0..width)
            .map(|j| {
                let values: Vec<f64> = rows.iter().map(|r| r[j]).filter(|v| v.is_finite()).collect();
                ImrMonitor::from_baseline(&values, self.config.rules, self.config.exclude_out_of_control).ok()
            })
            .collect();
        if self.charts.iter().all(Option::is_none) {
            self.charts.clear();
            return Err(DetectorError::NotEnoughData { needed: Self::MIN_ROWS, got: rows.len() });
        }
        Ok(())
    }

    /// Judge one frame, signal by signal.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.charts.is_empty() {
            return Err(DetectorError::NotFitted);
        }
        check_row(row, self.charts.len())?;
        let mut contributions = vec![0.0; row.len()];
        let mut broken: Vec<(Rule, usize)> = Vec::new();
        for (j, (chart, value)) in self.charts.iter_mut().zip(row).enumerate() {
            let Some(chart) = chart else { continue };
            let update = chart.update(*value);
            if !update.z.is_finite() {
                continue;
            }
            let mut rules: Vec<Rule> = update.violations.iter().map(|v| v.rule).collect();
            rules.sort_unstable();
            rules.dedup();
            contributions[j] = if rules.is_empty() {
                update.z.abs() / 3.0
            } else {
                (update.z.abs() / 3.0).max(1.0) + 0.1 * rules.len() as f64
            };
            broken.extend(rules.into_iter().map(|r| (r, j)));
        }
        broken.sort_unstable();
        let mut statistics: Vec<Statistic> = Vec::new();
        for (rule, j) in broken {
            if statistics.last().is_none_or(|s| s.name != rule.name()) {
                statistics.push(Statistic {
                    name: rule.name().to_string(),
                    value: 1.0,
                    limit: 1.0,
                    contributions: vec![0.0; row.len()],
                });
            }
            if let Some(s) = statistics.last_mut() {
                s.contributions[j] = 1.0;
            }
        }
        let value = contributions.iter().copied().fold(0.0, f64::max);
        Ok(Score { value, contributions, t2: None, spe: None, statistics })
    }
}

impl DetectorKind for ControlChart {
    type Config = ControlChartConfig;
    const NAME: &'static str = "control_chart";
    const SUMMARY: &'static str = "An I–MR control chart per signal with Western Electric or Nelson rules.";

    fn validate(config: &ControlChartConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &ControlChartConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &ControlChartConfig) -> usize {
        Self::MIN_ROWS
    }

    fn default_threshold(_config: &ControlChartConfig) -> ThresholdConfig {
        // Scores are above 1 exactly when a limit or run rule is broken.
        ThresholdConfig::fixed(1.0)
    }

    fn examples() -> Vec<ControlChartConfig> {
        vec![ControlChartConfig::default(), ControlChartConfig { rules: RuleSet::We, exclude_out_of_control: false }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_on_one_signal_is_found_and_named() {
        let mut g = crate::stats::SeededNormal::new(4);
        let baseline: Vec<Vec<f64>> = (0..200).map(|_| vec![5.0 + g.normal(), 100.0 + 10.0 * g.normal()]).collect();
        let mut chart = ControlChart::new(ControlChartConfig::default()).unwrap();
        chart.learn(&baseline).unwrap();
        // Signal 1 sits 0.5σ above its centre: inside the limits, but nine in a row is Nelson 2.
        let mut last = None;
        for _ in 0..9 {
            last = Some(chart.score(&[5.0 + 0.1 * g.normal(), 105.0]).unwrap());
        }
        let score = last.unwrap();
        assert!(score.value > 1.0, "{score:?}");
        let run = score.statistics.iter().find(|s| s.name == "nelson2").unwrap();
        assert_eq!(run.contributions, vec![0.0, 1.0]);
        assert!(score.contributions[1] > score.contributions[0]);
    }

    #[test]
    fn a_constant_baseline_signal_is_not_charted() {
        let rows: Vec<Vec<f64>> = (0..50).map(|i| vec![f64::from(i % 7), 3.0]).collect();
        let mut chart = ControlChart::new(ControlChartConfig::default()).unwrap();
        chart.learn(&rows).unwrap();
        assert_eq!(chart.score(&[3.0, 9.0]).unwrap().contributions[1], 0.0);
        let constant: Vec<Vec<f64>> = (0..50).map(|_| vec![1.0, 3.0]).collect();
        assert!(matches!(chart.learn(&constant), Err(DetectorError::NotEnoughData { .. })));
    }
}
