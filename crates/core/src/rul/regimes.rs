//! Operating regimes found from the operating settings.
//!
//! Engines (and pumps, and presses) run at a few distinct operating points;
//! a sensor's normal level depends on the point, so degradation shows only
//! after each sensor is normalised within its regime. C-MAPSS FD002 and
//! FD004 mix six such points; FD001 and FD003 have one, with a little noise
//! on the settings. The regimes are the smallest number of k-means clusters
//! (k ≤ [`Regimes::MAX`]) whose members sit within 5 % of the settings'
//! overall spread of their centre; when no k does, the settings are noise
//! around one point and there is one regime.

use serde::{Deserialize, Serialize};

/// Fitted regimes: centres in standardised setting units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regimes {
    /// Per setting: mean and standard deviation used to standardise it
    /// (constant settings have deviation 0 and are ignored).
    scale: Vec<(f64, f64)>,
    centres: Vec<Vec<f64>>,
}

impl Regimes {
    /// Most regimes looked for.
    pub const MAX: usize = 10;
    /// Within-cluster spread, relative to the overall spread, below which clusters are regimes.
    const TIGHT: f64 = 0.05;

    /// One regime for everything.
    #[must_use]
    pub fn single(width: usize) -> Self {
        Regimes { scale: vec![(0.0, 0.0); width], centres: vec![vec![0.0; width]] }
    }

    /// Find the regimes of the settings rows (NaN values are ignored).
    #[must_use]
    pub fn find(settings: &[Vec<f64>]) -> Self {
        let width = settings.first().map_or(0, Vec::len);
        let scale: Vec<(f64, f64)> = (0..width)
            .map(|j| crate::stats::mean_std(settings.iter().map(|r| r[j])).unwrap_or((0.0, 0.0)))
            .map(|(m, s)| if s > 1e-12 * m.abs().max(1.0) { (m, s) } else { (m, 0.0) })
            .collect();
        let mut found = Regimes { scale, centres: vec![vec![0.0; width]] };
        let points: Vec<Vec<f64>> = settings.iter().map(|r| found.standardise(r)).collect();
        if points.is_empty() || found.scale.iter().all(|(_, s)| *s == 0.0) {
            return found;
        }
        // Distinct points only: k-means over thousands of repeats of six points is wasted work.
        let mut distinct = points.clone();
        distinct.sort_by(|a, b| {
            a.iter().zip(b).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        });
        distinct.dedup();
        let overall =
            (points.iter().map(|p| p.iter().map(|v| v * v).sum::<f64>()).sum::<f64>() / points.len() as f64).sqrt();
        for k in 2..=Self::MAX.min(distinct.len()) {
            let centres = k_means(&distinct, k);
            let spread = (points
                .iter()
                .map(|p| centres.iter().map(|c| distance2(p, c)).fold(f64::INFINITY, f64::min))
                .sum::<f64>()
                / points.len() as f64)
                .sqrt();
            if spread < Self::TIGHT * overall {
                found.centres = centres;
                break;
            }
        }
        found
    }

    fn standardise(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(&self.scale)
            .map(|(v, (m, s))| if *s > 0.0 && v.is_finite() { (v - m) / s } else { 0.0 })
            .collect()
    }

    /// Number of regimes.
    #[must_use]
    pub fn count(&self) -> usize {
        self.centres.len()
    }

    /// The regime of one settings row: its nearest centre.
    #[must_use]
    pub fn assign(&self, settings: &[f64]) -> usize {
        if self.centres.len() == 1 {
            return 0;
        }
        let p = self.standardise(settings);
        (0..self.centres.len())
            .min_by(|&a, &b| distance2(&p, &self.centres[a]).total_cmp(&distance2(&p, &self.centres[b])))
            .unwrap_or(0)
    }
}

fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Lloyd's k-means from a farthest-first start (deterministic).
fn k_means(points: &[Vec<f64>], k: usize) -> Vec<Vec<f64>> {
    let mut centres = vec![points[0].clone()];
    while centres.len() < k {
        let farthest = points
            .iter()
            .max_by(|a, b| {
                let da = centres.iter().map(|c| distance2(a, c)).fold(f64::INFINITY, f64::min);
                let db = centres.iter().map(|c| distance2(b, c)).fold(f64::INFINITY, f64::min);
                da.total_cmp(&db)
            })
            .map_or_else(|| points[0].clone(), Clone::clone);
        centres.push(farthest);
    }
    for _ in 0..50 {
        let mut sums = vec![vec![0.0; points[0].len()]; k];
        let mut counts = vec![0usize; k];
        for p in points {
            let c =
                (0..k).min_by(|&a, &b| distance2(p, &centres[a]).total_cmp(&distance2(p, &centres[b]))).unwrap_or(0);
            counts[c] += 1;
            for (s, v) in sums[c].iter_mut().zip(p) {
                *s += v;
            }
        }
        let next: Vec<Vec<f64>> = sums
            .into_iter()
            .zip(&counts)
            .zip(&centres)
            .map(|((s, &n), old)| if n == 0 { old.clone() } else { s.iter().map(|v| v / n as f64).collect() })
            .collect();
        if next == centres {
            break;
        }
        centres = next;
    }
    centres
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;

    #[test]
    fn six_operating_points_are_six_regimes_and_noise_is_one() {
        let points = [
            [0.0, 0.0, 100.0],
            [10.0, 0.25, 100.0],
            [20.0, 0.7, 100.0],
            [25.0, 0.62, 60.0],
            [35.0, 0.84, 100.0],
            [42.0, 0.84, 100.0],
        ];
        let mut g = SeededNormal::new(1);
        let rows: Vec<Vec<f64>> =
            (0..3000).map(|i| points[i % 6].iter().map(|v| v + 0.001 * g.normal()).collect()).collect();
        let regimes = Regimes::find(&rows);
        assert_eq!(regimes.count(), 6);
        let ids: Vec<usize> = points.iter().map(|p| regimes.assign(p)).collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "each point its own regime: {ids:?}");
        assert_eq!(regimes.assign(&rows[6]), ids[0]);

        let noise: Vec<Vec<f64>> = (0..3000).map(|_| vec![0.002 * g.normal(), 0.0003 * g.normal(), 100.0]).collect();
        assert_eq!(Regimes::find(&noise).count(), 1, "FD001-like settings are one regime");
        assert_eq!(Regimes::find(&[]).count(), 1);
    }
}
