//! Batch scoring speed of the isolation forest (the data of `usan bench
//! detectors`): `cargo run --release -p usan-core --example iforest_speed -- [ROWS] [DIMS]`.

use std::time::Instant;
use usan_core::detector::{Detector, IsolationForest, IsolationForestConfig};
use usan_core::stats::SeededNormal;

fn main() {
    // As the `usan` binary does at start-up: the batch workers wait ready.
    usan_core::parallel::start();
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dims: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let mut g = SeededNormal::new(0);
    let data: Vec<Vec<f64>> =
        (0..rows).map(|i| (0..dims).map(|_| g.normal() + if i % 100 == 0 { 4.0 } else { 0.0 }).collect()).collect();
    let mut forest = IsolationForest::new(IsolationForestConfig::default()).expect("default settings");
    forest.learn(&data[..2000]).expect("fit");
    let mut checksum = 0.0;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let scores = forest.score_values(&data).expect("score");
        best = best.min(start.elapsed().as_secs_f64());
        checksum = scores.iter().sum::<f64>();
    }
    println!("D={dims}: {:.0} rows/s (best of 5), checksum {checksum:.6}", rows as f64 / best);
}
