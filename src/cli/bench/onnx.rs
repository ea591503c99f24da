//! `usan bench onnx MODEL...`: rows per second of ONNX models in usan,
//! scored in batches of `--batch` (one thread: tract runs a graph on the
//! calling thread), with the process's peak memory. `scripts/onnx/bench.sh`
//! runs onnxruntime on the same rows beside it (BENCHMARKS.md).
//!
//! The rows are distinct, as live data is: a pool of up to [`POOL`] rows
//! (and [`POOL_VALUES`] values) whose every value is drawn from the same
//! column of a golden input row (`drawn_row`, which `scripts/onnx/bench.py`
//! repeats bit for bit). A few golden rows repeated would let the
//! processor's branch predictor learn the trees' paths, which no plant's
//! data allows.

use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;
use usan_onnx::{Package, table};

/// What `usan bench onnx` measures.
pub struct OnnxRun {
    /// Packages (folders with `model.onnx` and `golden/inputs.csv`).
    pub models: Vec<PathBuf>,
    /// Rows to score per model.
    pub rows: usize,
    /// Rows per call.
    pub batch: usize,
}

/// The most distinct rows a benchmark holds; batches cycle through them.
pub const POOL: usize = 65_536;

/// The most values the pool holds (16 MiB of `f64`): fewer rows for a
/// sequence model's wide rows.
pub const POOL_VALUES: usize = 1 << 21;

/// splitmix64, the pool's random numbers.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pool row `i`: value `j` is column `j` of golden row
/// `mix(i * width + j) mod golden rows`.
fn drawn_row(golden: &[f64], width: usize, i: usize) -> impl Iterator<Item = f64> + '_ {
    let count = (golden.len() / width.max(1)).max(1) as u64;
    (0..width).map(move |j| {
        let row = (mix((i * width + j) as u64) % count) as usize;
        golden.get(row * width + j).copied().unwrap_or(0.0)
    })
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|kb| kb / 1024.0)
}

/// Runs the benchmark and prints one line per model.
///
/// # Errors
/// A package that does not load or has no golden inputs.
pub fn onnx(run: &OnnxRun) -> anyhow::Result<()> {
    // As `usan model run` scores a file.
    usan_core::allocator::keep_freed_memory_for_reuse();
    println!("{:<48} {:>9} {:>7} {:>12} {:>10}", "model", "rows", "batch", "rows/s", "peak MiB");
    for path in &run.models {
        let package = Package::open(path)?;
        let (model, _) = package.load().with_context(|| path.display().to_string())?;
        let (inputs, _) =
            package.golden.as_ref().with_context(|| format!("{} has no golden inputs", path.display()))?;
        let golden = table::read_rows(std::fs::File::open(inputs)?, model.input_width(), model.takes_f32())?;
        let width = model.input_width();
        let batch = run.batch.max(1);
        anyhow::ensure!(golden.count > 0, "{}: the golden inputs have no rows", path.display());
        // Whole batches of distinct rows, cycled through.
        let batches = run.rows.min(POOL).min(POOL_VALUES / width.max(1)).div_ceil(batch).max(1);
        let values: Vec<f64> = (0..batches * batch).flat_map(|i| drawn_row(&golden.values, width, i)).collect();
        let warm = model.run(batch.min(golden.count), &values[..batch.min(golden.count) * width]);
        warm.with_context(|| path.display().to_string())?;
        let start = Instant::now();
        let mut done = 0;
        while done < run.rows {
            let n = batch.min(run.rows - done);
            let first = (done / batch) % batches * batch;
            std::hint::black_box(model.run(n, &values[first * width..(first + n) * width])?);
            done += n;
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        println!("{name:<48} {done:>9} {batch:>7} {rate:>12.0} {:>10.1}", peak_rss_mib().unwrap_or(f64::NAN));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_splitmix64_as_the_python_peer_draws_it() {
        // splitmix64's first outputs from state 0 (its reference).
        assert_eq!(mix(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
        let golden = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        let rows: Vec<Vec<f64>> = (0..64).map(|i| drawn_row(&golden, 2, i).collect()).collect();
        assert!(rows.iter().all(|r| [1.0, 2.0, 3.0].contains(&r[0]) && [10.0, 20.0, 30.0].contains(&r[1])));
        // Columns are drawn apart: pairs no golden row holds appear.
        assert!(rows.iter().any(|r| r[1] != r[0] * 10.0));
        // What scripts/onnx/bench.py's `pool` gives for these golden rows.
        let python =
            [[2.0, 30.0], [2.0, 10.0], [2.0, 30.0], [3.0, 10.0], [2.0, 20.0], [2.0, 10.0], [1.0, 20.0], [3.0, 30.0]];
        assert!(rows.iter().zip(python).all(|(r, p)| r[..] == p[..]));
    }
}
