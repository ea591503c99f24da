//! `usan bench`: the hot paths measured on this machine, so the figures in
//! BENCHMARKS.md can be reproduced by anyone with the binary.
//!
//! - `detectors`: scoring throughput of each detector in usan-core, on the
//!   same synthetic data as the Python peers' `throughput.py` (N×D standard
//!   normal rows, 1 % shifted by +4, fitted on the first 2,000 rows).
//! - `pipeline`: a CSV replayed as fast as possible through frame assembly,
//!   detectors and the SQLite store; samples/s until everything is stored.
//! - `soak`: a generated plant fed at a fixed rate for a duration, printing
//!   resident memory over time (growth would show as a rising column).
//! - `load`: the same over HTTP to a `usan serve` process with a dashboard
//!   open: push latency, memory and queue depths over time.
//! - `onnx`: rows per second of ONNX model packages (onnxruntime beside it
//!   in `scripts/onnx/bench.sh`).

pub mod load;
pub mod mqtt;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod push;

use crate::config::Config;
use crate::pipeline::Engine;
use crate::source::Batch;
use anyhow::Context;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use usan_core::detector::{
    ContextMemoryConfig, CvaConfig, Detector, DetectorConfig, EwmaConfig, FlatlineConfig, HalfSpaceTreesConfig,
    IsolationForestConfig, KnnCadConfig, MsetConfig, PcaConfig, RobustZConfig,
};
use usan_core::model::Timestamp;
use usan_core::stats::SeededNormal;

/// `usan bench` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Rows per second of ONNX model packages on their golden inputs.
    #[cfg(feature = "onnx")]
    Onnx {
        /// Package folders (`model.onnx` + `golden/inputs.csv`).
        #[arg(required = true)]
        models: Vec<std::path::PathBuf>,
        /// Rows to score per model.
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        /// Rows per call.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
    },
    /// Streaming I–MR chart updates per second with every Nelson rule.
    Spc {
        /// Values to chart.
        #[arg(long, default_value_t = 10_000_000)]
        values: usize,
    },
    /// Scoring throughput of each detector (same data as the Python peers).
    Detectors {
        /// Rows to score.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Signal counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "8,52")]
        dims: Vec<usize>,
        /// Only these detector types (their config `type`, comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Batch rows: best of this many runs of `score_values`.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// A CSV replayed at full speed through detectors into the store.
    Pipeline {
        /// Assets.
        #[arg(long, default_value_t = 10)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Rows per asset.
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// Detector on every asset.
        #[arg(long, value_enum, default_value = "robust_z")]
        detector: PlantDetector,
        /// Instead of `--detector`, a model package (`type = "onnx"`) on
        /// every asset; its manifest's signals replace `--signals`.
        #[arg(long)]
        package: Option<std::path::PathBuf>,
    },
    /// JSON batches published to an MQTT broker and ingested by an MQTT source.
    Mqtt {
        /// The broker, host:port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Assets.
        #[arg(long, default_value_t = 10)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Messages to publish.
        #[arg(long, default_value_t = 2_000)]
        messages: usize,
        /// Rows (timestamps) per message.
        #[arg(long, default_value_t = 50)]
        rows: usize,
        /// QoS of publisher and subscription (0 or 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// `[pipeline] ack`: acknowledge after the journal commit, or once queued.
        #[arg(long, value_parser = ["commit", "received"], default_value = "commit")]
        ack: String,
    },
    /// Concurrent clients pushing to `POST /api/v1/samples`: samples/s acknowledged, request latency.
    Push {
        /// Assets.
        #[arg(long, default_value_t = 100)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 10)]
        signals: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Rows (timestamps) per request.
        #[arg(long, default_value_t = 50)]
        rows: usize,
        /// How long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// `[pipeline] ack`: answer after the journal commit, or once queued.
        #[arg(long, value_parser = ["commit", "received"], default_value = "commit")]
        ack: String,
    },
    /// Latency from an MQTT publish to the finding coming back through the MQTT sink.
    MqttLatency {
        /// The broker, host:port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Signals per message (one row per message).
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Samples per second.
        #[arg(long, default_value_t = 10_000)]
        rate: usize,
        /// How long, in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The store's commit period (`200ms`, `5s`).
        #[arg(long, default_value = "200ms")]
        flush_interval: String,
    },
    /// Live remaining-useful-life estimates per second: the demo's engines
    /// replayed cycle by cycle through the demo's RUL model.
    Rul {
        /// Times the ten engines are replayed.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// Another RUL model over the same 3 settings and 21 sensors (e.g. an
        /// ensemble from `usan fit rul` on C-MAPSS FD001).
        #[arg(long)]
        model: Option<std::path::PathBuf>,
    },
    /// A generated plant fed at a fixed rate; prints resident memory over time.
    Soak {
        /// Assets.
        #[arg(long, default_value_t = 1000)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Samples per second.
        #[arg(long, default_value_t = 20_000)]
        rate: usize,
        /// How long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        duration: Duration,
        /// Detector on every asset.
        #[arg(long, value_enum, default_value = "pca")]
        detector: PlantDetector,
    },
    /// A `usan serve` process pushed to over HTTP at a fixed rate with a dashboard open: memory, queues, latency.
    Load {
        /// Assets.
        #[arg(long, default_value_t = 1000)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 10)]
        signals: usize,
        /// Samples per second, all clients together.
        #[arg(long, default_value_t = 100_000)]
        rate: usize,
        /// Concurrent pushing clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Rows (timestamps) per request.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        /// How long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        duration: Duration,
        /// Print a line this often.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
        report: Duration,
        /// Detector on every asset.
        #[arg(long, value_enum, default_value = "robust_z")]
        detector: PlantDetector,
        /// Exit 1 unless memory stayed flat, the queues drained and nothing was refused.
        #[arg(long)]
        check: bool,
    },
}

/// The detector of a generated plant (`usan bench pipeline`, `soak`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlantDetector {
    /// No detector: ingestion and storage alone.
    None,
    /// Robust z-score, `baseline_frames = 1`.
    #[value(name = "robust_z")]
    RobustZ,
    /// EWMA residual, `baseline_frames = 1`.
    Ewma,
    /// PCA T² and SPE at 90 % variance, `baseline_frames = 50`.
    Pca,
}

impl PlantDetector {
    /// Its name on the command line.
    fn name(self) -> &'static str {
        match self {
            PlantDetector::None => "none",
            PlantDetector::RobustZ => "robust_z",
            PlantDetector::Ewma => "ewma",
            PlantDetector::Pca => "pca",
        }
    }

    /// Its `[[detectors]]` table, empty for none.
    fn table(self) -> &'static str {
        match self {
            PlantDetector::None => "",
            PlantDetector::RobustZ => {
                "[[detectors]]\nname = \"z\"\nalgorithm = { type = \"robust_z\" }\nbaseline_frames = 1\n\n"
            }
            PlantDetector::Ewma => {
                "[[detectors]]\nname = \"ewma\"\nalgorithm = { type = \"ewma\" }\nbaseline_frames = 1\n\n"
            }
            PlantDetector::Pca => {
                "[[detectors]]\nname = \"pca\"\nalgorithm = { type = \"pca\", variance = 0.9 }\nbaseline_frames = 50\n\n"
            }
        }
    }
}

/// Run `usan bench`.
///
/// # Errors
/// As the benchmark run.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        BenchCommand::Spc { values } => spc(values),
        #[cfg(feature = "onnx")]
        BenchCommand::Onnx { models, rows, batch } => onnx::onnx(&onnx::OnnxRun { models, rows, batch }),
        BenchCommand::Detectors { rows, dims, only, repeat } => detectors(rows, &dims, &only, repeat),
        BenchCommand::Pipeline { assets, signals, rows, detector, package } => {
            let detector = match package {
                Some(package) => BenchDetector::Package(package),
                None => BenchDetector::Plant(detector),
            };
            super::runtime()?.block_on(pipeline(assets, signals, rows, &detector))
        }
        BenchCommand::Mqtt { broker, assets, signals, messages, rows, qos, ack } => {
            let shape = mqtt::Shape { assets, signals, messages, rows };
            super::runtime()?.block_on(mqtt::ingest(&broker, shape, qos, &ack))
        }
        BenchCommand::Push { assets, signals, clients, rows, duration, ack } => {
            let run = push::PushRun { assets, signals, clients, rows, duration };
            super::runtime()?.block_on(push::push(run, &ack))
        }
        BenchCommand::MqttLatency { broker, signals, rate, seconds, flush_interval } => {
            super::runtime()?.block_on(mqtt::latency(&broker, signals, rate, seconds, &flush_interval))
        }
        BenchCommand::Rul { repeat, model } => rul(repeat, model.as_deref()),
        BenchCommand::Load { assets, signals, rate, clients, rows, duration, report, detector, check } => {
            let run = load::LoadRun { assets, signals, rate, clients, rows, duration, report, detector, check };
            super::runtime()?.block_on(load::load(run))
        }
        BenchCommand::Soak { assets, signals, rate, duration, detector } => {
            super::runtime()?.block_on(soak(assets, signals, rate, duration, detector))
        }
    }
}

/// The peers' data: standard normal, 1 % of rows shifted by +4.
fn synthetic(rows: usize, dims: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut g = SeededNormal::new(seed);
    (0..rows)
        .map(|i| {
            let shift = if i % 100 == 37 { 4.0 } else { 0.0 };
            (0..dims).map(|_| g.normal() + shift).collect()
        })
        .collect()
}

/// Scoring throughput of every detector (or of the types in `only`);
/// prints a Markdown table. Batch rows take the best of `repeat` runs.
///
/// # Errors
/// When a detector cannot be fitted on the synthetic data, or `only` names
/// no detector measured here.
pub fn detectors(rows: usize, dims: &[usize], only: &[String], repeat: usize) -> anyhow::Result<()> {
    let candidates = [
        ("robust_z (window 120)", DetectorConfig::RobustZ(RobustZConfig::default())),
        ("ewma", DetectorConfig::Ewma(EwmaConfig::default())),
        ("pca T²+SPE (90 % variance)", DetectorConfig::Pca(PcaConfig::default())),
        (
            "isolation forest (100 trees, 256 samples)",
            DetectorConfig::IsolationForest(IsolationForestConfig::default()),
        ),
        ("mset (memory 100)", DetectorConfig::Mset(MsetConfig::default())),
        (
            "half-space trees (10 trees, height 8, window 250), score+learn",
            DetectorConfig::HalfSpaceTrees(HalfSpaceTreesConfig::default()),
        ),
        ("flatline (min run 10)", DetectorConfig::Flatline(FlatlineConfig::default())),
        (
            "knn_cad (window 32, reference 2000, k 5), score+learn",
            DetectorConfig::KnnCad(KnnCadConfig { window: 32, reference: 2000, k: 5, calibration: 1000 }),
        ),
        (
            "context_memory (window 1000, 4 levels, order 3), score+learn",
            DetectorConfig::ContextMemory(ContextMemoryConfig::default()),
        ),
        ("cva (past 2, future 2, a state per signal, smoothing 3)", DetectorConfig::Cva(CvaConfig::default())),
    ];
    let measured: Vec<&str> = candidates.iter().map(|(_, config)| config.kind()).collect();
    if let Some(unknown) = only.iter().find(|name| !measured.contains(&name.as_str())) {
        anyhow::bail!("--only {unknown}: not measured here; the detectors measured are {}", measured.join(", "));
    }
    let candidates: Vec<_> = candidates
        .into_iter()
        .filter(|(_, config)| only.is_empty() || only.iter().any(|name| name == config.kind()))
        .collect();
    println!("| detector | D | rows | fit s | score s | rows/s | samples/s |");
    println!("|---|---|---|---|---|---|---|");
    for &d in dims {
        let data = synthetic(rows, d, 0);
        let fit_rows = rows.min(2000);
        for (name, config) in &candidates {
            let mut detector = config.build()?;
            let start = Instant::now();
            detector.learn(&data[..fit_rows])?;
            let fit_s = start.elapsed().as_secs_f64();
            // kNN search is quadratic in its reference: a sample of rows tells its rate.
            let scored = if matches!(config, DetectorConfig::KnnCad(_)) { &data[..rows.min(10_000)] } else { &data };
            let start = Instant::now();
            let mut checksum = 0.0;
            for row in scored {
                checksum += detector.score(row)?.value;
            }
            let score_s = start.elapsed().as_secs_f64();
            std::hint::black_box(checksum);
            let row = |label: &str, seconds: f64| {
                let rows = scored.len();
                let rate = rows as f64 / seconds;
                println!(
                    "| {label} | {d} | {rows} | {fit_s:.3} | {seconds:.3} | {} | {} |",
                    thousands(rate),
                    thousands(rate * d as f64)
                );
            };
            row(name, score_s);
            if matches!(config, DetectorConfig::Pca(_) | DetectorConfig::IsolationForest(_) | DetectorConfig::Cva(_)) {
                let mut batch = config.build()?;
                batch.learn(&data[..fit_rows])?;
                let mut batch_s = f64::INFINITY;
                for _ in 0..repeat.max(1) {
                    let start = Instant::now();
                    let values = batch.score_values(&data)?;
                    batch_s = batch_s.min(start.elapsed().as_secs_f64());
                    std::hint::black_box(values);
                }
                // CVA carries its lags and smoothing from row to row: one core.
                let cores = if matches!(config, DetectorConfig::Cva(_)) { 1 } else { usan_core::parallel::cores() };
                let cores = if cores == 1 { "one core".to_string() } else { format!("{cores} cores") };
                row(&format!("{name}, batch `score_values` (no contributions, {cores})"), batch_s);
            }
        }
    }
    Ok(())
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A generated plant configuration: `assets` × `signals`, one detector.
pub fn plant_config(
    dir: &std::path::Path,
    assets: usize,
    signals: usize,
    detector: PlantDetector,
    source: &str,
) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "[store]\ntype = \"sqlite\"\npath = \"{}\"\nflush_interval = \"200ms\"\n\n[pipeline]\nqueue_capacity = 256\n\n{source}\n",
        dir.join("bench.db").display()
    );
    let signal_list: Vec<String> = (0..signals).map(|s| format!("\"s{s}\"")).collect();
    let signal_list = signal_list.join(", ");
    text.push_str(detector.table());
    for a in 0..assets {
        let _ = writeln!(text, "[[assets]]\nid = \"a{a}\"\nsignals = [{signal_list}]\n");
    }
    text
}

/// Replay a generated CSV at full speed into the store; prints samples/s.
///
/// # Errors
/// When the engine cannot start or the files cannot be written.
pub async fn pipeline(assets: usize, signals: usize, rows: usize, detector: &BenchDetector) -> anyhow::Result<()> {
    let dir = tempfile_dir("usan-bench-pipeline")?;
    // A package reads its manifest's signals: the generated ones are mapped to them.
    let package = match detector {
        BenchDetector::Package(path) => Some((path, package_signals(path)?)),
        BenchDetector::Plant(_) => None,
    };
    let signals = package.as_ref().map_or(signals, |(_, names)| names.len());
    let csv = dir.join("history.csv");
    {
        let mut g = SeededNormal::new(1);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        use std::io::Write;
        let header: Vec<String> = (0..signals).map(|s| format!("s{s}")).collect();
        writeln!(out, "t,asset,{}", header.join(","))?;
        for r in 0..rows {
            for a in 0..assets {
                write!(out, "{r},a{a}")?;
                for _ in 0..signals {
                    write!(out, ",{:.4}", g.normal())?;
                }
                writeln!(out)?;
            }
        }
    }
    let source = format!(
        "[[sources]]\ntype = \"file\"\nname = \"history\"\npath = \"{}\"\nasset_column = \"asset\"\ntime_column = \"t\"\nspeed = \"max\"\n",
        csv.display()
    );
    let config_path = dir.join("bench.toml");
    let mut text = match detector {
        BenchDetector::Plant(detector) => plant_config(&dir, assets, signals, *detector, &source),
        BenchDetector::Package(_) => plant_config(&dir, assets, signals, PlantDetector::None, &source),
    };
    if let Some((path, names)) = &package {
        let map: Vec<String> = names.iter().enumerate().map(|(i, n)| format!("{n:?} = \"s{i}\"")).collect();
        // Scoring alone is measured: a level no score reaches keeps findings out.
        let _ = write!(
            text,
            "[[detectors]]\nname = \"package\"\nalgorithm = {{ type = \"onnx\", package = {:?}, signals = {{ {} }} }}\nthreshold = {{ value = 1e300 }}\n",
            path.canonicalize().unwrap_or_else(|_| path.to_path_buf()).display().to_string(),
            map.join(", ")
        );
    }
    std::fs::write(&config_path, text)?;
    let config = Config::load(&config_path)?;
    let expected = (assets * rows) as u64;
    let start = Instant::now();
    let engine = Engine::start(config).await?;
    while engine.metrics.frames_stored.get() < expected {
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("not everything was stored within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    engine.stop().await?;
    let samples = expected as f64 * signals as f64;
    println!(
        "pipeline: {assets} assets x {signals} signals x {rows} rows, detector {}: {} samples in {elapsed:.2} s = {} samples/s stored ({} frames/s)",
        match detector {
            BenchDetector::Plant(d) => d.name().to_string(),
            BenchDetector::Package(p) => format!("package {}", p.display()),
        },
        thousands(samples),
        thousands(samples / elapsed),
        thousands(expected as f64 / elapsed)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What `usan bench pipeline` runs on every asset.
pub enum BenchDetector {
    /// One of the generated detector tables.
    Plant(PlantDetector),
    /// A model package.
    Package(std::path::PathBuf),
}

/// The `signals` of a package's `usan-model.toml`.
fn package_signals(package: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let path = package.join("usan-model.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    let names = table
        .get("signals")
        .and_then(toml::Value::as_array)
        .with_context(|| format!("{} has no signals", path.display()))?;
    Ok(names.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
}

/// A scratch folder for one benchmark run, named by prefix and process id.
///
/// # Errors
/// The folder cannot be created.
pub fn tempfile_dir(prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Resident set size of this process in MiB (Linux), if readable.
#[must_use]
pub fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Feed a generated plant at `rate` samples/s for `duration`, printing RSS.
///
/// # Errors
/// When the engine cannot start.
pub async fn soak(
    assets: usize,
    signals: usize,
    rate: usize,
    duration: Duration,
    detector: PlantDetector,
) -> anyhow::Result<()> {
    let dir = tempfile_dir("usan-bench-soak")?;
    let config_path = dir.join("soak.toml");
    let source = "[[sources]]\ntype = \"http\"\nname = \"push\"\n";
    std::fs::write(&config_path, plant_config(&dir, assets, signals, detector, source))?;
    let config = Config::load(&config_path)?;
    let engine = Engine::start(config).await?;
    let frames_per_tick = (rate / signals / 10).max(1);
    let mut g = SeededNormal::new(2);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next_asset = 0usize;
    let mut frame_ts = vec![0i64; assets];
    let mut last_report = Instant::now();
    let mut peak = 0.0f64;
    let mut samples: Vec<(f64, f64)> = Vec::new();
    println!("| elapsed s | samples in | frames stored | RSS MiB |");
    println!("|---|---|---|---|");
    while start.elapsed() < duration {
        tick.tick().await;
        for _ in 0..frames_per_tick {
            let asset = next_asset;
            next_asset = (next_asset + 1) % assets;
            frame_ts[asset] += 1000;
            let values: Vec<f64> = (0..signals).map(|_| g.normal()).collect();
            engine.router.send(Batch::Rows { asset, rows: vec![(Timestamp(frame_ts[asset]), values)] }).await?;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let rss = rss_mib().unwrap_or(f64::NAN);
            peak = peak.max(rss);
            samples.push((start.elapsed().as_secs_f64(), rss));
            println!(
                "| {:.0} | {} | {} | {rss:.1} |",
                start.elapsed().as_secs_f64(),
                thousands(engine.metrics.samples_in.get() as f64),
                thousands(engine.metrics.frames_stored.get() as f64)
            );
        }
    }
    let achieved = engine.metrics.samples_in.get() as f64 / start.elapsed().as_secs_f64();
    engine.stop().await?;
    let half = samples.len() / 2;
    let early = samples[..half.max(1).min(samples.len())].iter().map(|s| s.1).fold(0.0, f64::max);
    let late = samples[half..].iter().map(|s| s.1).fold(0.0, f64::max);
    println!(
        "soak: {assets} assets x {signals} signals, detector {}, {} samples/s for {:.0} s: peak RSS {peak:.1} MiB (first half max {early:.1}, second half max {late:.1})",
        detector.name(),
        thousands(achieved),
        duration.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Live RUL estimates per second: the demo's ten engines replayed `repeat`
/// times, each through a fresh watch of the demo's model (every frame is a
/// cycle: features of the kept history, then the trees on the last cycle).
///
/// # Errors
/// When the model cannot be read or does not take C-MAPSS's 21 sensors.
pub fn rul(repeat: usize, model_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use crate::pipeline::rul::RulWatch;
    let text = match model_path {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => super::demo::DEMO_RUL_MODEL.to_string(),
    };
    let model = usan_core::rul::RulModel::from_json(&text).context("reading the RUL model")?;
    anyhow::ensure!(
        model.sensor_names.len() == 21,
        "the benchmark replays C-MAPSS engines (21 sensors); the model takes {}",
        model.sensor_names.len()
    );
    let model = std::sync::Arc::new(model);
    // unit, cycle, 3 settings, 21 sensors: the model's sensors are columns 5..26.
    // Rows are in time order with the engines interleaved.
    let mut by_unit: std::collections::BTreeMap<String, Vec<Vec<f64>>> = std::collections::BTreeMap::new();
    for line in super::demo::DEMO_DATA.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let values: Vec<f64> = cells[5..].iter().map(|c| c.parse().unwrap_or(f64::NAN)).collect();
        by_unit.entry(cells[0].to_string()).or_default().push(values);
    }
    let engines: Vec<Vec<Vec<f64>>> = by_unit.into_values().collect();
    let sensors: Vec<usize> = (0..model.sensor_names.len()).collect();
    let start = Instant::now();
    let mut estimates = 0usize;
    let mut checksum = 0.0;
    for _ in 0..repeat {
        for engine in &engines {
            let mut watch = RulWatch::new("rul", model.clone(), sensors.clone(), vec![None; 3], None);
            for (cycle, values) in engine.iter().enumerate() {
                watch.step(Timestamp(cycle as i64), values);
                checksum += watch.live().rul.unwrap_or(0.0);
                estimates += 1;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    println!(
        "rul: {estimates} live estimates ({} engines x {repeat}) in {seconds:.2} s = {} estimates/s per core",
        engines.len(),
        thousands(estimates as f64 / seconds)
    );
    Ok(())
}

/// Streaming I–MR chart updates per second on one signal, every Nelson rule
/// on the I chart and the limit on the MR chart.
///
/// # Errors
/// When the baseline cannot establish limits (it always can: normal noise).
pub fn spc(values: usize) -> anyhow::Result<()> {
    use usan_core::spc::chart::ImrMonitor;
    use usan_core::spc::rules::RuleSet;
    let mut g = SeededNormal::new(1);
    let baseline: Vec<f64> = (0..1000).map(|_| 10.0 + g.normal()).collect();
    // A pool of values replayed, so the measurement is the chart, not the random numbers.
    let pool: Vec<f64> = (0..65_536).map(|i| 10.0 + g.normal() + if i % 5000 < 20 { 1.5 } else { 0.0 }).collect();
    let mut monitor = ImrMonitor::from_baseline(&baseline, RuleSet::Nelson, false)?;
    let start = Instant::now();
    let mut violations = 0usize;
    for i in 0..values {
        violations += monitor.update(pool[i % pool.len()]).violations.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "spc: {values} I–MR updates with all 8 Nelson rules in {seconds:.3} s = {} updates/s per signal on one core ({violations} violations)",
        thousands(values as f64 / seconds)
    );
    Ok(())
}
