//! Validation that predicts unseen data: settings chosen on some series and
//! scored on others.
//!
//! A setting picked because it scores best on the series at hand says little
//! about series it has not seen (NAB: 70.6 on the 18 shipped series, 51.7
//! on all 58). With `--folds`, `usan eval` scores every candidate setting
//! (the benchmark's section and each `[[candidates.<benchmark>]]`) on every
//! series, then for each fold (a category, or a single series) picks the
//! candidate that scores best on the *other* folds and keeps that
//! candidate's result on the fold. The held-out figure joins those results;
//! the in-sample figure is the best candidate's on everything. A change
//! that raises one and lowers the other is not an improvement.

use super::{Candidates, print_candidates};
use anyhow::Context;
use std::collections::BTreeSet;

/// What one fold holds out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Folds {
    /// Leave one category (the data folder's subfolder) out.
    #[value(alias = "leave-one-category-out")]
    Category,
    /// Leave one series (file) out.
    #[value(alias = "leave-one-series-out")]
    Series,
}

impl Folds {
    /// How the report names the protocol.
    pub fn name(self) -> &'static str {
        match self {
            Folds::Category => "leave-one-category-out",
            Folds::Series => "leave-one-series-out",
        }
    }

    /// The fold of a series in `category` named `stem`.
    pub fn key(self, category: &str, stem: &str) -> String {
        match self {
            Folds::Category => category.to_string(),
            Folds::Series => format!("{category}/{stem}"),
        }
    }
}

/// The candidate whose results on `files` score best by `metric` (higher
/// is better); the first of equals, so the benchmark's own settings win a
/// tie. A metric that is NaN (nothing to score) never wins.
pub fn best<R>(results: &[Vec<R>], files: &[usize], metric: &dyn Fn(&[&R]) -> f64) -> usize {
    let mut chosen = (0, f64::NEG_INFINITY);
    for (c, per_file) in results.iter().enumerate() {
        let picked: Vec<&R> = files.iter().filter_map(|&f| per_file.get(f)).collect();
        let value = metric(&picked);
        if value > chosen.1 {
            chosen = (c, value);
        }
    }
    chosen.0
}

/// One fold's choice: its key, the candidate chosen on the other folds, and
/// how many series it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldChoice {
    /// The category or `category/series`.
    pub fold: String,
    /// Index into the candidates.
    pub candidate: usize,
    /// Series in the fold.
    pub series: usize,
}

/// For each file, the candidate chosen without its fold (`keys[f]` is file
/// `f`'s fold; `results[c][f]` candidate `c`'s result on it), and each
/// fold's choice in order of first appearance. A fold with no other fold
/// to learn from gets the first candidate.
pub fn held_out<R>(
    keys: &[String],
    results: &[Vec<R>],
    metric: &dyn Fn(&[&R]) -> f64,
) -> (Vec<usize>, Vec<FoldChoice>) {
    let mut chosen = vec![0; keys.len()];
    let mut folds = Vec::new();
    let mut seen = BTreeSet::new();
    for key in keys {
        if !seen.insert(key) {
            continue;
        }
        let training: Vec<usize> = (0..keys.len()).filter(|&f| &keys[f] != key).collect();
        let candidate = if training.is_empty() { 0 } else { best(results, &training, metric) };
        let mut series = 0;
        for (f, k) in keys.iter().enumerate() {
            if k == key {
                chosen[f] = candidate;
                series += 1;
            }
        }
        folds.push(FoldChoice { fold: key.clone(), candidate, series });
    }
    (chosen, folds)
}

/// Every candidate's result on every item (`results[c][f]`), the pairs
/// computed over the machine's cores (each as on one core).
///
/// # Errors
/// The first pair's error, in order.
pub fn score_every<R: Send>(
    candidates: usize,
    items: usize,
    score: impl Fn(usize, usize) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<Vec<R>>> {
    let mut slots: Vec<Option<anyhow::Result<R>>> = (0..candidates * items).map(|_| None).collect();
    usan_core::parallel::fill_over_cores(&mut slots, 1, |range, part| {
        for (i, slot) in range.zip(part) {
            *slot = Some(score(i / items, i % items));
        }
    });
    let mut results: Vec<Vec<R>> = (0..candidates).map(|_| Vec::with_capacity(items)).collect();
    for (i, slot) in slots.into_iter().enumerate() {
        let result = slot.context("a pair was not scored")?.with_context(|| format!("candidate {}", i / items + 1))?;
        results[i / items].push(result);
    }
    Ok(results)
}

/// Which candidate each item's output comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The best candidate on every item.
    pub in_sample: usize,
    /// Per item: the candidate chosen without its fold (with folds), else `in_sample`.
    pub chosen: Vec<usize>,
    /// Each fold's choice (empty without folds).
    pub folds: Vec<FoldChoice>,
}

impl Selection {
    /// The best candidate on all items and, given each item's fold key,
    /// the held-out choices.
    pub fn new<R>(results: &[Vec<R>], keys: Option<&[String]>, metric: &dyn Fn(&[&R]) -> f64) -> Self {
        let items = results.first().map_or(0, Vec::len);
        let every: Vec<usize> = (0..items).collect();
        let in_sample = best(results, &every, metric);
        match keys {
            Some(keys) => {
                let (chosen, folds) = held_out(keys, results, metric);
                Selection { in_sample, chosen, folds }
            }
            None => Selection { in_sample, chosen: vec![in_sample; items], folds: Vec::new() },
        }
    }

    /// Each item's result from its chosen candidate.
    pub fn picked<'a, R>(&self, results: &'a [Vec<R>]) -> Vec<&'a R> {
        self.chosen.iter().enumerate().map(|(f, &c)| &results[c][f]).collect()
    }

    /// Prints each candidate's in-sample figure (when there are several)
    /// and, with `folds`, the in-sample and held-out lines. `section` names
    /// the benchmark's own settings, `unit` its items (`series`, `files`).
    pub fn report<R>(
        &self,
        section: &str,
        unit: &str,
        results: &[Vec<R>],
        candidates: &Candidates,
        folds: Option<Folds>,
        describe: &dyn Fn(&[&R]) -> String,
    ) {
        let items = self.chosen.len();
        if results.len() > 1 {
            print_candidates(candidates);
            println!("| candidate | {} over {items} {unit} (in-sample) |", section.to_uppercase());
            println!("|---|---|");
            for (c, per_item) in results.iter().enumerate() {
                let name = if c == 0 { format!("1 ([{section}])") } else { (c + 1).to_string() };
                println!("| {name} | {} |", describe(&per_item.iter().collect::<Vec<_>>()));
            }
        }
        let Some(folds) = folds else { return };
        let best_runs: Vec<&R> = results[self.in_sample].iter().collect();
        println!("in-sample: candidate {} (best on all {items} {unit}): {}", self.in_sample + 1, describe(&best_runs));
        let choices: Vec<String> =
            self.folds.iter().map(|f| format!("{} ({}) → {}", f.fold, f.series, f.candidate + 1)).collect();
        println!(
            "held-out, {} ({} folds): {}; chosen without each fold: {}",
            folds.name(),
            self.folds.len(),
            describe(&self.picked(results)),
            choices.join(", ")
        );
        if results.len() == 1 {
            println!("(one candidate: nothing is chosen, so the held-out score is the in-sample one)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mean of the picked values (NaN when none).
    fn mean(values: &[&f64]) -> f64 {
        values.iter().copied().sum::<f64>() / values.len() as f64
    }

    #[test]
    fn the_best_candidate_wins_and_the_first_wins_a_tie() {
        let results = vec![vec![1.0, 3.0], vec![2.0, 2.0], vec![0.0, 4.0]];
        type Case<'a> = (&'a [usize], usize);
        let cases: [Case; 4] = [(&[0, 1], 0), (&[0], 1), (&[1], 2), (&[], 0)];
        for (files, want) in cases {
            assert_eq!(best(&results, files, &mean), want, "files {files:?}");
        }
    }

    #[test]
    fn each_fold_gets_the_candidate_the_other_folds_chose() {
        // Candidate 1 is best on category a, candidate 2 on b; c has one series.
        let keys: Vec<String> = ["a", "a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let results = vec![vec![5.0, 5.0, 5.0, 5.0], vec![9.0, 9.0, 0.0, 5.0], vec![0.0, 0.0, 20.0, 5.0]];
        let (chosen, folds) = held_out(&keys, &results, &mean);
        // a is held out: b, c score 5, 2.5, 12.5 → 2; b held out: a, a, c → 1; c held out: a, a, b → 2.
        assert_eq!(chosen, [2, 2, 1, 2]);
        let summary: Vec<(&str, usize, usize)> =
            folds.iter().map(|f| (f.fold.as_str(), f.candidate, f.series)).collect();
        assert_eq!(summary, [("a", 2, 2), ("b", 1, 1), ("c", 2, 1)]);
        let selection = Selection::new(&results, Some(&keys), &mean);
        assert_eq!((selection.in_sample, &selection.chosen), (2, &chosen));
        assert_eq!(selection.picked(&results), [&0.0, &0.0, &0.0, &5.0]);
        let without = Selection::new(&results, None, &mean);
        assert_eq!((without.chosen, without.folds), (vec![2; 4], vec![]));
    }

    #[test]
    fn every_pair_is_scored_in_order_and_the_first_error_is_named() {
        let results = score_every(3, 5, |c, f| Ok(10 * c + f)).unwrap();
        assert_eq!(results, (0..3).map(|c| (0..5).map(|f| 10 * c + f).collect::<Vec<_>>()).collect::<Vec<_>>());
        let err =
            score_every(3, 2, |c, f| if c >= 1 && f == 1 { anyhow::bail!("bad {c}") } else { Ok(()) }).unwrap_err();
        assert_eq!(format!("{err:#}"), "candidate 2: bad 1");
    }

    #[test]
    fn a_lone_fold_keeps_the_first_candidate() {
        let keys = vec!["only".to_string(); 2];
        let (chosen, folds) = held_out(&keys, &[vec![0.0, 0.0], vec![1.0, 1.0]], &mean);
        assert_eq!((chosen, folds[0].candidate), (vec![0, 0], 0));
    }

    #[test]
    fn folds_name_a_category_or_a_series() {
        assert_eq!(Folds::Category.key("realKnownCause", "nyc_taxi"), "realKnownCause");
        assert_eq!(Folds::Series.key("realKnownCause", "nyc_taxi"), "realKnownCause/nyc_taxi");
    }
}
