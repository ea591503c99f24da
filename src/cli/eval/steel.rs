//! `usan eval steel`: steel-plate surface defect classes (1,941 plates, 27
//! geometric and luminosity measurements, 7 classes: Pastry, Z_Scratch,
//! K_Scatch, Stains, Dirtiness, Bumps, Other_Faults).
//!
//! Protocol: stratified k-fold cross-validation (10 folds, seed in the
//! settings). Per fold, one gradient-boosted tree model per class learns
//! "this class or not" (squared loss on 0/1); a plate gets the class whose
//! model scores highest. Prints accuracy, macro-averaged F1, each class's
//! recall and precision, and the measurements that matter most (gain,
//! summed over the class models).
//!
//! Files: `DATA/Faults.NNA` (one plate per line, 34 tab-separated numbers,
//! optionally in quotes: 27 measurements then the 7 classes one-hot) and,
//! when present, `DATA/Faults27x7_var` (the 34 names, one per line).

use super::cross_validation::{check_folds, stratified_folds, top_shares};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use usan_core::trees::gbdt::{Gbdt, GbdtConfig};

/// Defect classes, in the file's order.
const CLASSES: [&str; 7] = ["Pastry", "Z_Scratch", "K_Scatch", "Stains", "Dirtiness", "Bumps", "Other_Faults"];
/// Measurements per plate.
const MEASUREMENTS: usize = 27;

/// Settings of the steel-plates protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteelSettings {
    /// Cross-validation folds.
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// Seed of the fold assignment.
    #[serde(default)]
    pub seed: u64,
    /// Each class's trees.
    #[serde(default = "default_trees")]
    pub trees: GbdtConfig,
}

fn default_folds() -> usize {
    10
}

fn default_trees() -> GbdtConfig {
    GbdtConfig { trees: 300, learning_rate: 0.05, leaves: 15, min_leaf_rows: 5, ..GbdtConfig::default() }
}

/// The default settings.
#[must_use]
pub fn default_settings() -> SteelSettings {
    SteelSettings { folds: default_folds(), seed: 0, trees: default_trees() }
}

/// The plates: measurement names, measurements and class indices.
struct Plates {
    names: Vec<String>,
    rows: Vec<Vec<f64>>,
    labels: Vec<usize>,
}

fn read(data: &Path) -> anyhow::Result<Plates> {
    let path = data.join("Faults.NNA");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let names: Vec<String> = std::fs::read_to_string(data.join("Faults27x7_var"))
        .ok()
        .map(|t| t.split_whitespace().take(MEASUREMENTS).map(str::to_string).collect())
        .filter(|n: &Vec<String>| n.len() == MEASUREMENTS)
        .unwrap_or_else(|| (0..MEASUREMENTS).map(|j| format!("m{j}")).collect());
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.trim().trim_matches('"').split_whitespace().collect();
        if cells.len() != MEASUREMENTS + CLASSES.len() {
            bail!("{} line {}: {} numbers, expected {}", path.display(), i + 1, cells.len(), MEASUREMENTS + 7);
        }
        let values = cells
            .iter()
            .map(|c| c.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .with_context(|| format!("{} line {}: a cell is not a number", path.display(), i + 1))?;
        let one_hot = &values[MEASUREMENTS..];
        let hot: Vec<usize> = (0..CLASSES.len()).filter(|&k| one_hot[k] == 1.0).collect();
        if hot.len() != 1 || one_hot.iter().any(|v| *v != 0.0 && *v != 1.0) {
            bail!("{} line {}: the last 7 numbers must mark exactly one class", path.display(), i + 1);
        }
        rows.push(values[..MEASUREMENTS].to_vec());
        labels.push(hot[0]);
    }
    Ok(Plates { names, rows, labels })
}

/// Run the protocol and print its metrics.
///
/// # Errors
/// A missing or malformed file, or settings the trees refuse.
pub fn run(data: &Path, settings: &SteelSettings) -> anyhow::Result<()> {
    let start = Instant::now();
    check_folds("steel", settings.folds)?;
    let Plates { names, rows, labels } = read(data)?;
    if rows.len() < settings.folds * 2 {
        bail!("too few plates ({}) for {} folds", rows.len(), settings.folds);
    }
    let fold_of = stratified_folds(&labels, settings.folds, settings.seed);
    let mut predicted = vec![0usize; rows.len()];
    let mut gains = vec![0.0; MEASUREMENTS];
    for fold in 0..settings.folds {
        let (train, test): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|&i| fold_of[i] != fold);
        let train_rows: Vec<Vec<f64>> = train.iter().map(|&i| rows[i].clone()).collect();
        let mut best = vec![(f64::NEG_INFINITY, 0usize); test.len()];
        for class in 0..CLASSES.len() {
            let targets: Vec<f64> = train.iter().map(|&i| f64::from(u8::from(labels[i] == class))).collect();
            let model = Gbdt::fit(&settings.trees, &train_rows, &targets).context("fitting the trees")?;
            for (slot, &i) in best.iter_mut().zip(&test) {
                let score = model.predict(&rows[i]);
                if score > slot.0 {
                    *slot = (score, class);
                }
            }
            for (g, v) in gains.iter_mut().zip(model.importances()) {
                *g += v / (settings.folds * CLASSES.len()) as f64;
            }
        }
        for (&i, (_, class)) in test.iter().zip(best) {
            predicted[i] = class;
        }
    }
    super::print_settings("steel", settings);
    let correct = labels.iter().zip(&predicted).filter(|(a, b)| a == b).count();
    println!(
        "steel plates: {} plates, {} measurements, {} classes; stratified {}-fold cross-validation, seed {}",
        rows.len(),
        MEASUREMENTS,
        CLASSES.len(),
        settings.folds,
        settings.seed
    );
    let mut f1_sum = 0.0;
    println!("| class | plates | recall | precision |");
    println!("|---|---|---|---|");
    for (k, name) in CLASSES.iter().enumerate() {
        let actual = labels.iter().filter(|l| **l == k).count() as f64;
        let said = predicted.iter().filter(|p| **p == k).count() as f64;
        let hit = labels.iter().zip(&predicted).filter(|(l, p)| **l == k && **p == k).count() as f64;
        let (recall, precision) = (hit / actual.max(1.0), hit / said.max(1.0));
        f1_sum += if recall + precision > 0.0 { 2.0 * recall * precision / (recall + precision) } else { 0.0 };
        println!("| {name} | {actual} | {:.1} % | {:.1} % |", 100.0 * recall, 100.0 * precision);
    }
    println!(
        "accuracy {:.2} %, macro F1 {:.3}",
        100.0 * correct as f64 / rows.len() as f64,
        f1_sum / CLASSES.len() as f64
    );
    println!("measurements that matter most (mean gain share): {}", top_shares(&names, &gains, 8));
    println!("wall time {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}
