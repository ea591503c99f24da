//! The learners behind one small trait (estimate the cycles of one prepared
//! history), how they are fitted, and how an ensemble combines them.

use super::RulConfig;
use super::features::Prepared;
use super::network::{self, Network};
use crate::trees::gbdt::{Gbdt, GbdtError};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// What every fitted learner does: raw RUL estimates for some cycles
/// (a range within `from..` of one prepared history), on the calling thread.
pub(super) trait Estimator {
    fn estimate(&self, history: &Prepared, cycles: Range<usize>, cap: f64) -> Vec<f64>;
}

impl Estimator for Gbdt {
    fn estimate(&self, history: &Prepared, cycles: Range<usize>, _cap: f64) -> Vec<f64> {
        self.predict_many(&history.rows[cycles.start - history.from..cycles.end - history.from])
    }
}

impl Estimator for Network {
    fn estimate(&self, history: &Prepared, cycles: Range<usize>, cap: f64) -> Vec<f64> {
        let ends: Vec<usize> = cycles.collect();
        self.predict(&history.sequence, &ends).into_iter().map(|v| v * cap).collect()
    }
}

/// Fewest cycles per core worth splitting a history's estimates over cores
/// (a thread costs about as much as 30 windows).
pub(super) const CYCLES_PER_CORE: usize = 32;

/// The fitted learners of a model; with both, its estimate is their
/// weighted mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Learners {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) trees: Option<Gbdt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) network: Option<Network>,
    /// The network's share of an ensemble's estimate.
    #[serde(default = "half")]
    pub(super) network_weight: f64,
}

pub(super) fn half() -> f64 {
    0.5
}

/// Estimates of each learner (empty when absent) for some cycles.
#[derive(Default)]
pub(super) struct Parts {
    pub(super) trees: Vec<f64>,
    pub(super) network: Vec<f64>,
}

impl Parts {
    /// The weighted mean (or the one learner's estimates), clamped to `0..=cap`.
    pub(super) fn combine(&self, network_weight: f64, cap: f64) -> Vec<f64> {
        let raw: Vec<f64> = match (self.trees.is_empty(), self.network.is_empty()) {
            (false, false) => self
                .trees
                .iter()
                .zip(&self.network)
                .map(|(t, n)| (1.0 - network_weight) * t + network_weight * n)
                .collect(),
            (false, true) => self.trees.clone(),
            _ => self.network.clone(),
        };
        raw.into_iter().map(|r| r.clamp(0.0, cap)).collect()
    }
}

impl Learners {
    /// Fits the configured learners on prepared histories (from cycle 0)
    /// and their capped RUL targets.
    pub(super) fn fit(
        config: &RulConfig,
        histories: &[&Prepared],
        targets: &[&Vec<f64>],
    ) -> Result<Learners, GbdtError> {
        let trees = if config.learner.uses_trees() {
            let rows: Vec<Vec<f64>> = histories.iter().flat_map(|h| h.rows.iter().cloned()).collect();
            let flat: Vec<f64> = targets.iter().flat_map(|t| t.iter().copied()).collect();
            Some(Gbdt::fit(&config.trees, &rows, &flat)?)
        } else {
            None
        };
        let network = config.learner.uses_network().then(|| {
            let inputs: Vec<Vec<Vec<f32>>> = histories.iter().map(|h| h.sequence.clone()).collect();
            let scaled: Vec<Vec<f32>> =
                targets.iter().map(|t| t.iter().map(|v| (v / config.cap) as f32).collect()).collect();
            Network::fit(&config.network, &network::Sequences { inputs: &inputs, targets: &scaled })
        });
        Ok(Learners { trees, network, network_weight: half() })
    }

    /// Each learner's estimates for the cycles `from..` of a history; a
    /// long history is cut into consecutive stretches, one per core (each
    /// estimate does not depend on the cut).
    pub(super) fn parts(&self, history: &Prepared, cap: f64) -> Parts {
        let (from, to) = (history.from, history.from.max(history.cycles));
        let mut stretches =
            crate::parallel::over_cores(from..to, CYCLES_PER_CORE, 1, |cycles| self.parts_of(history, cycles, cap))
                .into_iter();
        let mut parts = stretches.next().unwrap_or_default();
        for more in stretches {
            parts.trees.extend(more.trees);
            parts.network.extend(more.network);
        }
        parts
    }

    /// [`Self::parts`] for some cycles, on the calling thread.
    pub(super) fn parts_of(&self, history: &Prepared, cycles: Range<usize>, cap: f64) -> Parts {
        Parts {
            trees: self.trees.as_ref().map(|t| t.estimate(history, cycles.clone(), cap)).unwrap_or_default(),
            network: self.network.as_ref().map(|n| n.estimate(history, cycles, cap)).unwrap_or_default(),
        }
    }

    pub(super) fn estimate(&self, history: &Prepared, cap: f64) -> Vec<f64> {
        self.parts(history, cap).combine(self.network_weight, cap)
    }
}

/// The network's weight in steps of 5 % that minimises the squared error
/// of out-of-fold estimates against their truth (stacking).
pub(super) fn best_network_weight(out_of_fold: &Parts, truth: &[f64], cap: f64) -> f64 {
    let squared_error =
        |w: f64| -> f64 { out_of_fold.combine(w, cap).iter().zip(truth).map(|(e, t)| (e - t) * (e - t)).sum() };
    (0..=20)
        .map(|step| f64::from(step) / 20.0)
        .min_by(|a, b| squared_error(*a).total_cmp(&squared_error(*b)))
        .unwrap_or(0.5)
}
