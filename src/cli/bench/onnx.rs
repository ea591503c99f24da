//! `usan bench onnx MODEL...`: rows per second of ONNX models in usan, on
//! their packages' golden inputs repeated to `--rows`, scored in batches of
//! `--batch` (one thread: tract runs a graph on the calling thread), with
//! the process's peak memory. `scripts/onnx/bench.sh` runs onnxruntime on
//! the same rows beside it (BENCHMARKS.md).

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
        // The golden rows over and over, one batch's worth.
        let values: Vec<f64> = golden.values.chunks(width).cycle().take(batch).flatten().copied().collect();
        let warm = model.run(batch.min(golden.count.max(1)), &values[..batch.min(golden.count.max(1)) * width]);
        warm.with_context(|| path.display().to_string())?;
        let start = Instant::now();
        let mut done = 0;
        while done < run.rows {
            let n = batch.min(run.rows - done);
            std::hint::black_box(model.run(n, &values[..n * width])?);
            done += n;
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        println!("{name:<48} {done:>9} {batch:>7} {rate:>12.0} {:>10.1}", peak_rss_mib().unwrap_or(f64::NAN));
    }
    Ok(())
}
