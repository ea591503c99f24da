//! The Numenta Anomaly Benchmark score, as NAB's own sweeper computes it at
//! one threshold (Lavin & Ahmad 2015; `nab/sweeper.py`):
//!
//! - the first 15 % of each file (at most 750 rows) is probationary and not scored;
//! - a detection inside a labelled window scores `tp_weight ·
//!   σ(position) / σ(−1)`, where position runs from −1 at the window's left
//!   edge towards 0 at its right edge and σ(x) = 2/(1 + e^{5x}) − 1; only
//!   the best (earliest) detection of a window counts;
//! - a window with no detection scores `−fn_weight`;
//! - every detection outside a window scores `fp_weight · σ(d)`, where d is
//!   the distance past the previous window's right edge in window widths
//!   (σ = −1 before any window or 3 widths past one);
//! - the normalised score is 100 · (raw − null) / (perfect − null), with the
//!   null detector (no detection: −fn_weight per window) and the perfect one
//!   (every window at its left edge: +tp_weight per window).

use serde::Serialize;

/// Weights of a NAB application profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NabProfile {
    /// Profile name as NAB spells it.
    pub name: &'static str,
    /// Weight of a detected window.
    pub tp_weight: f64,
    /// Weight of a false detection.
    pub fp_weight: f64,
    /// Weight of a missed window.
    pub fn_weight: f64,
}

/// NAB's three profiles: standard, reward low false positives, reward low false negatives.
pub const NAB_PROFILES: [NabProfile; 3] = [
    NabProfile { name: "standard", tp_weight: 1.0, fp_weight: 0.11, fn_weight: 1.0 },
    NabProfile { name: "reward_low_FP_rate", tp_weight: 1.0, fp_weight: 0.22, fn_weight: 1.0 },
    NabProfile { name: "reward_low_FN_rate", tp_weight: 1.0, fp_weight: 0.11, fn_weight: 2.0 },
];

/// NAB's scaled sigmoid of a relative position.
#[must_use]
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position >= 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * position).exp()) - 1.0 }
}

/// Raw score parts of one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NabFileScore {
    /// Raw score.
    pub raw: f64,
    /// Windows scored (outside the probationary period).
    pub windows: usize,
    /// Windows with at least one detection.
    pub detected_windows: usize,
    /// Detections outside every window.
    pub false_positives: usize,
}

/// Score one file. `windows` are inclusive row-index ranges, sorted and
/// disjoint; `detections[i]` says whether row `i` is flagged.
#[must_use]
pub fn score_file(detections: &[bool], windows: &[(usize, usize)], profile: &NabProfile) -> NabFileScore {
    let rows = detections.len();
    let probation = ((0.15 * rows as f64).floor()).min(0.15 * 5000.0) as usize;
    let max_tp = scaled_sigmoid(-1.0);
    let mut out = NabFileScore::default();
    // Best sweep score per window, once it has a detection.
    let mut best: Vec<Option<f64>> = vec![None; windows.len()];
    let mut scored_window = vec![false; windows.len()];
    let mut fp_total = 0.0;
    let mut next_window = 0;
    let mut previous: Option<(usize, f64)> = None; // (right edge, width)
    for (i, detected) in detections.iter().enumerate() {
        while next_window < windows.len() && windows[next_window].1 < i {
            let (left, right) = windows[next_window];
            previous = Some((right, (right - left + 1) as f64));
            next_window += 1;
        }
        let inside = windows.get(next_window).filter(|(left, right)| *left <= i && i <= *right);
        if i < probation {
            continue;
        }
        if inside.is_some() {
            scored_window[next_window] = true;
        }
        if !detected {
            continue;
        }
        match inside {
            Some((left, right)) => {
                let width = (right - left + 1) as f64;
                let position = -((*right as f64) - i as f64 + 1.0) / width;
                let sweep = scaled_sigmoid(position) * profile.tp_weight / max_tp;
                let slot = &mut best[next_window];
                *slot = Some(slot.map_or(sweep, |b: f64| b.max(sweep)));
            }
            None => {
                let past = match previous {
                    None => 3.0,
                    Some((right, width)) => (i - right) as f64 / (width - 1.0),
                };
                fp_total += scaled_sigmoid(past) * profile.fp_weight;
                out.false_positives += 1;
            }
        }
    }
    for (w, scored) in scored_window.iter().enumerate() {
        if !scored {
            continue;
        }
        out.windows += 1;
        match best[w] {
            Some(score) => {
                out.raw += score.max(-profile.fn_weight);
                out.detected_windows += 1;
            }
            None => out.raw -= profile.fn_weight,
        }
    }
    out.raw += fp_total;
    out
}

/// 100 · (raw − null) / (perfect − null) over files scored with `profile`.
#[must_use]
pub fn normalized(files: &[NabFileScore], profile: &NabProfile) -> f64 {
    let raw: f64 = files.iter().map(|f| f.raw).sum();
    let windows: f64 = files.iter().map(|f| f.windows as f64).sum();
    let null = -profile.fn_weight * windows;
    let perfect = profile.tp_weight * windows;
    if perfect == null { 0.0 } else { 100.0 * (raw - null) / (perfect - null) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: NabProfile = NAB_PROFILES[0];

    #[test]
    fn sigmoid_matches_the_nab_docstring() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
    }

    /// 100 rows (probation: the first 15), one window over rows 40..=59.
    fn case(detected: &[usize]) -> NabFileScore {
        let mut detections = vec![false; 100];
        for &i in detected {
            detections[i] = true;
        }
        score_file(&detections, &[(40, 59)], &STANDARD)
    }

    #[test]
    fn scoring_table() {
        // Hand-derived from the sweeper's rules.
        // Position = −(right − i + 1) / width: −1 at the left edge (row 40), −0.5 at row 50.
        let left_edge = 1.0;
        let half_way = scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0);
        let fp_after = |i: usize| 0.11 * scaled_sigmoid((i - 59) as f64 / 19.0);
        let cases: Vec<(&str, Vec<usize>, f64)> = vec![
            ("nothing detected", vec![], -1.0),
            ("detected at the left edge", vec![40], left_edge),
            ("only the best detection of a window counts", vec![40, 50], left_edge),
            ("detected half way", vec![50], half_way),
            ("false positive before any window", vec![20], -1.0 - 0.11),
            ("probation is not scored", vec![10], -1.0),
            ("false positive just after the window", vec![62], -1.0 + fp_after(62)),
            ("every false positive counts", vec![40, 62, 90], left_edge + fp_after(62) + fp_after(90)),
        ];
        for (name, detected, want) in cases {
            let got = case(&detected).raw;
            assert!((got - want).abs() < 1e-12, "{name}: {got} vs {want}");
        }
    }

    #[test]
    fn normalisation_spans_null_to_perfect() {
        let null = [case(&[])];
        let perfect = [NabFileScore { raw: 1.0, windows: 1, detected_windows: 1, false_positives: 0 }];
        assert_eq!(normalized(&null, &STANDARD), 0.0);
        assert_eq!(normalized(&perfect, &STANDARD), 100.0);
    }
}
