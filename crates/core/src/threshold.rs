//! Thresholds turn scores into decisions, with persistence and hysteresis.
//!
//! One score over the level is not an alarm: a frame is declared anomalous
//! once at least `k` of the last `n` scores exceed the level, and stays
//! anomalous until none of the last `n` do. That cuts the flapping a noisy
//! score would otherwise cause, at the price of up to `k − 1` frames of
//! detection delay.
//!
//! A **deadband** (ISA-18.2's term) lowers the bar for staying on: once
//! anomalous, a score counts as exceeding while it is above the level less
//! `deadband` × |level|. A fault's score rarely stays above the level that
//! raised it; without a deadband the decision flickers off on every dip,
//! and with a low level instead every normal wobble raises it.
//!
//! A level can also be **adaptive**: with `adaptive_window = w`, the level
//! in force is the larger of the configured level and `adaptive_margin` ×
//! the `adaptive_quantile` of the last `w` scores seen while not anomalous.
//! It rises when the normal score level rises (a noisier season) and never
//! falls below the configured level; scores during an anomaly are kept out,
//! so a long fault does not raise the bar that hides it.

use crate::stats::quantile;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Inert threshold settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// A fixed level. Exactly one of `value` and `quantile` is set.
    #[serde(default)]
    pub value: Option<f64>,
    /// The level is this quantile of the scores on the baseline, times `margin`.
    #[serde(default)]
    pub quantile: Option<f64>,
    /// Factor applied to a quantile level.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Exceedances needed among the last `n` scores to turn anomalous.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Length of the persistence window.
    #[serde(default = "default_n")]
    pub n: usize,
    /// Share of the level a score may fall below it and still count as
    /// exceeding while the frame is anomalous (0: clear at the level).
    #[serde(default)]
    pub deadband: f64,
    /// Recent non-anomalous scores an adaptive level follows; none: a fixed level.
    #[serde(default)]
    pub adaptive_window: Option<usize>,
    /// Quantile of those scores taken as the adaptive level.
    #[serde(default = "default_adaptive_quantile")]
    pub adaptive_quantile: f64,
    /// Factor applied to the adaptive level.
    #[serde(default = "default_margin")]
    pub adaptive_margin: f64,
}

fn default_adaptive_quantile() -> f64 {
    0.99
}

fn default_margin() -> f64 {
    1.0
}
fn default_k() -> usize {
    3
}
fn default_n() -> usize {
    5
}

impl ThresholdConfig {
    /// A static level with the default persistence.
    #[must_use]
    pub fn fixed(value: f64) -> Self {
        ThresholdConfig {
            value: Some(value),
            quantile: None,
            margin: 1.0,
            k: default_k(),
            n: default_n(),
            deadband: 0.0,
            adaptive_window: None,
            adaptive_quantile: default_adaptive_quantile(),
            adaptive_margin: 1.0,
        }
    }

    /// Every problem with the settings (empty when valid).
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (self.value, self.quantile) {
            (Some(_), Some(_)) => problems.push("threshold: set `value` or `quantile`, not both".into()),
            (None, None) => problems.push("threshold: set `value` or `quantile`".into()),
            (Some(v), None) if !v.is_finite() => problems.push(format!("threshold.value must be finite, got {v}")),
            (None, Some(q)) if !(q > 0.0 && q < 1.0) => {
                problems.push(format!("threshold.quantile must be in (0, 1), got {q}"))
            }
            _ => {}
        }
        if !(self.margin.is_finite() && self.margin > 0.0) {
            problems.push(format!("threshold.margin must be positive, got {}", self.margin));
        }
        if self.n == 0 || self.n > 100_000 {
            problems.push(format!("threshold.n must be between 1 and 100000, got {}", self.n));
        }
        if self.k == 0 || self.k > self.n {
            problems.push(format!("threshold.k must be between 1 and n ({}), got {}", self.n, self.k));
        }
        if !(self.deadband >= 0.0 && self.deadband < 1.0) {
            problems.push(format!("threshold.deadband must be in [0, 1), got {}", self.deadband));
        }
        if let Some(w) = self.adaptive_window
            && !(10..=1_000_000).contains(&w)
        {
            problems.push(format!("threshold.adaptive_window must be between 10 and 1000000, got {w}"));
        }
        if !(self.adaptive_quantile > 0.0 && self.adaptive_quantile < 1.0) {
            problems.push(format!("threshold.adaptive_quantile must be in (0, 1), got {}", self.adaptive_quantile));
        }
        if !(self.adaptive_margin.is_finite() && self.adaptive_margin > 0.0) {
            problems.push(format!("threshold.adaptive_margin must be positive, got {}", self.adaptive_margin));
        }
        problems
    }

    /// Whether the level needs baseline scores to be set.
    #[must_use]
    pub fn needs_training_scores(&self) -> bool {
        self.value.is_none()
    }

    /// Build the runtime threshold at a known level (e.g. from a model artifact).
    #[must_use]
    pub fn build_at(&self, level: f64) -> Threshold {
        Threshold {
            level,
            k: self.k.max(1),
            n: self.n.max(1),
            deadband: if (0.0..1.0).contains(&self.deadband) { self.deadband } else { 0.0 },
            recent: VecDeque::new(),
            exceeding: 0,
            anomalous: false,
            adaptive: self.adaptive_window.map(|window| Adaptive {
                window,
                quantile: self.adaptive_quantile,
                margin: self.adaptive_margin,
                arrival: VecDeque::new(),
                sorted: Vec::new(),
            }),
        }
    }

    /// Build the runtime threshold; `training_scores` set a quantile level.
    /// A quantile level with no finite training score falls back to +inf
    /// (never fires) rather than guessing.
    #[must_use]
    pub fn build(&self, training_scores: &[f64]) -> Threshold {
        let level = match (self.value, self.quantile) {
            (Some(v), _) => v,
            (None, Some(q)) => quantile(training_scores, q).map_or(f64::INFINITY, |l| l * self.margin),
            (None, None) => f64::INFINITY,
        };
        self.build_at(level)
    }
}

/// What a threshold decided for one score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// This score alone is over the level.
    pub exceeded: bool,
    /// The persistence rule declares the asset anomalous.
    pub anomalous: bool,
    /// `anomalous` just turned on with this score.
    pub rising: bool,
    /// `anomalous` just turned off with this score.
    pub falling: bool,
}

/// A threshold in use: the level plus the persistence window.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    level: f64,
    k: usize,
    n: usize,
    deadband: f64,
    recent: VecDeque<bool>,
    exceeding: usize,
    anomalous: bool,
    adaptive: Option<Adaptive>,
}

/// The recent normal scores an adaptive level follows.
#[derive(Debug, Clone, PartialEq)]
struct Adaptive {
    window: usize,
    quantile: f64,
    margin: f64,
    arrival: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl Adaptive {
    /// The adaptive level once a tenth of the window is filled.
    fn level(&self) -> Option<f64> {
        if self.sorted.len() < (self.window / 10).max(10) {
            return None;
        }
        let at = ((self.sorted.len() - 1) as f64 * self.quantile).round() as usize;
        Some(self.sorted[at] * self.margin)
    }

    fn push(&mut self, score: f64) {
        if !score.is_finite() {
            return;
        }
        if self.arrival.len() == self.window
            && let Some(oldest) = self.arrival.pop_front()
        {
            let at = self.sorted.partition_point(|v| *v < oldest);
            self.sorted.remove(at);
        }
        self.arrival.push_back(score);
        let at = self.sorted.partition_point(|v| *v < score);
        self.sorted.insert(at, score);
    }
}

impl Threshold {
    /// The level scores are compared with now (the adaptive level when higher).
    #[must_use]
    pub fn level(&self) -> f64 {
        match self.adaptive.as_ref().and_then(Adaptive::level) {
            Some(adaptive) => self.level.max(adaptive),
            None => self.level,
        }
    }

    /// Decide on the next score. NaN never exceeds.
    pub fn decide(&mut self, score: f64) -> Decision {
        let level = self.level();
        let exceeded = score > level;
        // While on, the deadband's lower bar decides what keeps it on.
        let counted = if self.anomalous { score > level - self.deadband * level.abs() } else { exceeded };
        if self.recent.len() == self.n && self.recent.pop_front() == Some(true) {
            self.exceeding -= 1;
        }
        self.recent.push_back(counted);
        if counted {
            self.exceeding += 1;
        }
        let was = self.anomalous;
        if !was && self.exceeding >= self.k {
            self.anomalous = true;
        } else if was && self.exceeding == 0 {
            self.anomalous = false;
        }
        if !self.anomalous
            && let Some(adaptive) = &mut self.adaptive
        {
            adaptive.push(score);
        }
        Decision {
            exceeded,
            anomalous: self.anomalous,
            rising: !was && self.anomalous,
            falling: was && !self.anomalous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &ThresholdConfig, scores: &[f64]) -> String {
        let mut threshold = config.build(&[]);
        scores.iter().map(|s| if threshold.decide(*s).anomalous { '1' } else { '0' }).collect()
    }

    #[test]
    fn persistence_and_hysteresis_table() {
        let cases: &[(usize, usize, &[f64], &str)] = &[
            (1, 1, &[0.0, 2.0, 0.0, 2.0], "0101"),
            (3, 5, &[2.0, 0.0, 2.0, 0.0, 0.0, 0.0], "000000"),
            (3, 5, &[2.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "0001111100"),
            (2, 3, &[2.0, 2.0, 0.0, 2.0, 0.0, 0.0, 0.0], "0111110"),
            (1, 2, &[f64::NAN, 2.0, f64::NAN, f64::NAN], "0110"),
        ];
        for (k, n, scores, want) in cases {
            let config = ThresholdConfig { k: *k, n: *n, ..ThresholdConfig::fixed(1.0) };
            assert_eq!(run(&config, scores), *want, "k={k} n={n} {scores:?}");
        }
    }

    #[test]
    fn a_deadband_keeps_an_anomaly_on_through_dips_but_does_not_raise_one() {
        // (level, deadband, n, scores, decisions); k = 1
        let cases: &[(f64, f64, usize, &[f64], &str)] = &[
            // No deadband: off at the first dip below the level.
            (1.0, 0.0, 1, &[2.0, 0.8, 0.6, 2.0], "1001"),
            // Deadband 0.3: on until a score is at or below 0.7.
            (1.0, 0.3, 1, &[0.9, 2.0, 0.8, 0.71, 0.7, 0.8, 2.0], "0111001"),
            // Below the level but above its deadband never raises an anomaly.
            (1.0, 0.5, 1, &[0.6, 0.9, 0.99], "000"),
            // With persistence: off once none of the last 3 is above 0.5.
            (1.0, 0.5, 3, &[2.0, 0.6, 0.4, 0.4, 0.4, 0.6], "111100"),
            // A negative level: the band lies below it too (-2 → -3).
            (-2.0, 0.5, 1, &[-1.0, -2.5, -2.9, -3.0], "1110"),
            // NaN never counts, on or off.
            (1.0, 0.5, 1, &[2.0, f64::NAN, 2.0], "101"),
        ];
        for (level, deadband, n, scores, want) in cases {
            let config = ThresholdConfig { k: 1, n: *n, deadband: *deadband, ..ThresholdConfig::fixed(*level) };
            assert!(config.validate().is_empty());
            assert_eq!(run(&config, scores), *want, "level {level} deadband {deadband} n={n} {scores:?}");
        }
        // `exceeded` stays the raw comparison with the level.
        let mut t = ThresholdConfig { k: 1, n: 1, deadband: 0.5, ..ThresholdConfig::fixed(1.0) }.build(&[]);
        assert!(t.decide(2.0).exceeded);
        let inside = t.decide(0.8);
        assert!(inside.anomalous && !inside.exceeded);
    }

    #[test]
    fn rising_and_falling_edges() {
        let mut t = ThresholdConfig { k: 1, n: 1, ..ThresholdConfig::fixed(1.0) }.build(&[]);
        assert!(t.decide(2.0).rising);
        assert!(!t.decide(2.0).rising);
        assert!(t.decide(0.0).falling);
    }

    #[test]
    fn quantile_level_from_training_scores() {
        let config = ThresholdConfig {
            value: None,
            quantile: Some(0.5),
            margin: 2.0,
            k: 1,
            n: 1,
            ..ThresholdConfig::fixed(0.0)
        };
        assert!(config.validate().is_empty());
        assert_eq!(config.build(&[1.0, 2.0, 3.0]).level(), 4.0);
        assert_eq!(config.build(&[]).level(), f64::INFINITY);
    }

    #[test]
    fn adaptive_level_follows_normal_scores_but_not_faults() {
        let config = ThresholdConfig { k: 1, n: 1, adaptive_window: Some(100), ..ThresholdConfig::fixed(1.0) };
        let mut t = config.build(&[]);
        for i in 0..100 {
            t.decide(0.5 + 0.01 * f64::from(i % 10)); // quiet: scores 0.5..0.59
        }
        assert_eq!(t.level(), 1.0, "never below the configured level");
        for i in 0..100 {
            t.decide(2.0 + 0.01 * f64::from(i % 10)); // a noisier season: every score exceeds 1.0 ...
        }
        // ... so all were anomalous and kept out: the level did not move.
        assert_eq!(t.level(), 1.0);
        let mut noisy =
            ThresholdConfig { k: 5, n: 5, adaptive_window: Some(100), ..ThresholdConfig::fixed(1.0) }.build(&[]);
        for i in 0..300 {
            // Scores cross 1.0 two frames in five: never 5 of 5, so never anomalous.
            noisy.decide(if i % 5 < 2 { 1.2 } else { 0.8 });
        }
        assert!((noisy.level() - 1.2).abs() < 1e-12, "the level rose to the normal 99 % quantile: {}", noisy.level());
        assert!(!noisy.decide(1.1).exceeded);
    }

    #[test]
    fn validation_reports_everything() {
        let config = ThresholdConfig {
            value: Some(1.0),
            quantile: Some(0.9),
            margin: -1.0,
            k: 9,
            n: 0,
            deadband: 1.0,
            adaptive_window: Some(3),
            adaptive_quantile: 1.5,
            adaptive_margin: 0.0,
        };
        assert_eq!(config.validate().len(), 8);
        for deadband in [-0.1, f64::NAN, 1.5] {
            let problems = ThresholdConfig { deadband, ..ThresholdConfig::fixed(1.0) }.validate();
            assert_eq!(problems.len(), 1, "{deadband}: {problems:?}");
        }
    }
}
