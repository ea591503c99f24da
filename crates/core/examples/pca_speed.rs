//! Batch scoring speed of static PCA T² + SPE (the data of `usan bench
//! detectors`): `cargo run --release -p usan-core --example pca_speed -- [ROWS] [DIMS] [REPEAT]`.
//! Prints the first call (what the peers time) and the best of the rest.

use std::time::Instant;
use usan_core::detector::{Detector, Pca, PcaConfig};
use usan_core::stats::SeededNormal;

fn main() {
    // As the `usan` binary does at start-up: the batch workers wait ready.
    usan_core::parallel::start();
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dims: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let repeat: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut g = SeededNormal::new(0);
    let data: Vec<Vec<f64>> =
        (0..rows).map(|i| (0..dims).map(|_| g.normal() + if i % 100 == 0 { 4.0 } else { 0.0 }).collect()).collect();
    let mut pca = Pca::new(PcaConfig::default()).expect("default settings");
    pca.learn(&data[..rows.min(2000)]).expect("fit");
    let (mut first, mut best, mut checksum) = (0.0, f64::INFINITY, 0.0);
    for call in 0..repeat.max(1) {
        let start = Instant::now();
        let scores = pca.score_values(&data).expect("score");
        let seconds = start.elapsed().as_secs_f64();
        if call == 0 {
            first = seconds;
        }
        best = best.min(seconds);
        checksum = scores.iter().sum::<f64>();
    }
    println!(
        "D={dims}: first call {:.0} rows/s, best of {repeat} {:.0} rows/s, checksum {checksum:.6}",
        rows as f64 / first,
        rows as f64 / best
    );
}
