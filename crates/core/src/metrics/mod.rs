//! Detection metrics, defined as the public benchmarks' scorers define them,
//! so `usan eval` prints the same numbers the scorers compute.

pub mod nab;

use serde::Serialize;

/// Counts of a binary decision against a binary truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Predicted anomalous, truly anomalous.
    pub tp: u64,
    /// Predicted anomalous, truly normal.
    pub fp: u64,
    /// Predicted normal, truly normal.
    pub tn: u64,
    /// Predicted normal, truly anomalous.
    pub fn_: u64,
}

impl Confusion {
    /// Count one decision.
    pub fn add(&mut self, predicted: bool, truth: bool) {
        match (predicted, truth) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
    }

    /// Add another set of counts.
    pub fn merge(&mut self, other: Confusion) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.tn += other.tn;
        self.fn_ += other.fn_;
    }

    /// F1 = TP / (TP + (FN + FP) / 2); 0 when there is nothing to find or flag.
    #[must_use]
    pub fn f1(&self) -> f64 {
        let denominator = self.tp as f64 + (self.fn_ + self.fp) as f64 / 2.0;
        if denominator == 0.0 { 0.0 } else { self.tp as f64 / denominator }
    }

    /// False alarm rate in percent: FP / (FP + TN) · 100.
    #[must_use]
    pub fn far(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn) * 100.0
    }

    /// Missed alarm rate in percent: FN / (FN + TP) · 100.
    #[must_use]
    pub fn mar(&self) -> f64 {
        ratio(self.fn_, self.fn_ + self.tp) * 100.0
    }

    /// Share of decisions that were positive.
    #[must_use]
    pub fn positive_rate(&self) -> f64 {
        ratio(self.tp + self.fp, self.tp + self.fp + self.tn + self.fn_)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Predictions, truths, then F1, FAR % and MAR % derived by hand.
    type Case<'a> = (&'a [bool], &'a [bool], f64, f64, f64);

    #[test]
    fn skab_definitions_table() {
        let cases: &[Case] = &[
            (&[true, true, false, false], &[true, false, true, false], 0.5, 50.0, 50.0),
            (&[true, true, true, true], &[true, true, false, false], 2.0 / 3.0, 100.0, 0.0),
            (&[false, false], &[false, false], 0.0, 0.0, 0.0),
            (&[false, false, true], &[true, true, true], 0.5, 0.0, 200.0 / 3.0),
        ];
        for (predicted, truth, f1, far, mar) in cases {
            let mut c = Confusion::default();
            for (p, t) in predicted.iter().zip(*truth) {
                c.add(*p, *t);
            }
            assert!((c.f1() - f1).abs() < 1e-12, "{c:?}");
            assert!((c.far() - far).abs() < 1e-12, "{c:?}");
            assert!((c.mar() - mar).abs() < 1e-12, "{c:?}");
        }
    }
}
