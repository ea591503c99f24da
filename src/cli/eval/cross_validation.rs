//! What the classification protocols (`secom`, `steel`) share: stratified
//! k-fold assignment and the ranking of the measurements that matter.

use usan_core::stats::SeededNormal;

/// Refuses fewer than two folds.
///
/// # Errors
/// When `folds < 2`.
pub(crate) fn check_folds(section: &str, folds: usize) -> anyhow::Result<()> {
    anyhow::ensure!(folds >= 2, "{section}.folds must be at least 2, got {folds}");
    Ok(())
}

/// Fold of each item: each class shuffled with the seed, dealt round-robin
/// (so every fold holds each class in proportion).
pub(crate) fn stratified_folds<C: PartialEq + Copy>(classes: &[C], folds: usize, seed: u64) -> Vec<usize> {
    let mut random = SeededNormal::new(seed);
    let mut fold = vec![0; classes.len()];
    let mut seen: Vec<C> = Vec::new();
    for c in classes {
        if !seen.contains(c) {
            seen.push(*c);
        }
    }
    for class in seen {
        let mut members: Vec<usize> = (0..classes.len()).filter(|&i| classes[i] == class).collect();
        for i in (1..members.len()).rev() {
            members.swap(i, random.below(i + 1));
        }
        for (k, lot) in members.into_iter().enumerate() {
            fold[lot] = k % folds;
        }
    }
    fold
}

/// The `n` largest gain shares as `name share %`, largest first.
pub(crate) fn top_shares(names: &[String], gains: &[f64], n: usize) -> String {
    let mut ranked: Vec<(usize, f64)> = gains.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = ranked.iter().take(n).map(|(j, g)| format!("{} {:.1} %", names[*j], 100.0 * g)).collect();
    top.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified() {
        let failed: Vec<bool> = (0..100).map(|i| i % 10 == 0).collect();
        let folds = stratified_folds(&failed, 5, 3);
        for f in 0..5 {
            let members: Vec<usize> = (0..100).filter(|&i| folds[i] == f).collect();
            assert_eq!(members.len(), 20);
            assert_eq!(members.iter().filter(|&&i| failed[i]).count(), 2);
        }
    }

    #[test]
    fn top_shares_are_largest_first() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(top_shares(&names, &[0.2, 0.5, 0.3], 2), "b 50.0 %, c 30.0 %");
    }
}
