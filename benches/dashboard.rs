//! Dashboard responsiveness on a large plant: first paint of the overview
//! and the time to a drawn asset page, in headless Chromium (Debian's,
//! driven by Playwright), against a usan serving a generated plant.
//!
//! ```text
//! cargo bench --bench dashboard -- [--assets 1000] [--signals 20] [--rows 300] [--python .venv-peers/bin/python]
//! ```
//!
//! The plant has `assets` assets of `signals` signals in 10 sites × 10
//! lines, each with a PCA detector; `rows` frames of history per asset are
//! replayed into the store first, so the asset page draws `signals` charts
//! and the score chart from stored history. While the browser works, every
//! asset gets a new frame every second (`assets × signals` samples/s through
//! the detectors into the store, and live to the asset page). Each figure is
//! measured three times from a cold page load. Run by `cargo test` (no `--bench`), it is a
//! small smoke run that fails unless the pages come up.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap fails, as it should

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};
use usan::cli::bench::tempfile_dir;
use usan::config::Config;
use usan::pipeline::Engine;

struct Args {
    assets: usize,
    signals: usize,
    rows: usize,
    python: String,
}

fn args() -> anyhow::Result<Args> {
    let benchmarking = std::env::args().any(|w| w == "--bench");
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-peers/bin/python").to_string();
    let mut parsed = if benchmarking {
        Args { assets: 1000, signals: 20, rows: 300, python }
    } else {
        Args { assets: 20, signals: 5, rows: 60, python }
    };
    let mut words = std::env::args().skip(1).filter(|w| w != "--bench");
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|_| anyhow::anyhow!("{flag}: `{value}` is not a number"));
        match flag.as_str() {
            "--assets" => parsed.assets = number()?,
            "--signals" => parsed.signals = number()?,
            "--rows" => parsed.rows = number()?,
            "--python" => parsed.python = value.clone(),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(parsed)
}

fn plant(dir: &std::path::Path, args: &Args, port: u16) -> anyhow::Result<String> {
    let csv = dir.join("history.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    let mut g = usan_core::stats::SeededNormal::new(7);
    let header: Vec<String> = (0..args.signals).map(|s| format!("s{s}")).collect();
    writeln!(out, "t,asset,{}", header.join(","))?;
    for r in 0..args.rows {
        for a in 0..args.assets {
            write!(out, "{},a{a:04}", 1_767_225_600 + r * 60)?;
            for s in 0..args.signals {
                write!(out, ",{:.3}", 10.0 * s as f64 + g.normal())?;
            }
            writeln!(out)?;
        }
    }
    out.flush()?;
    let mut text = format!(
        "[store]\ntype = \"sqlite\"\npath = \"{}\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[sources]]\ntype = \"file\"\nname = \"history\"\npath = \"{}\"\nasset_column = \"asset\"\n\
         time_column = \"t\"\ntime_unit_s = 1.0\nspeed = \"max\"\n\n\
         [[detectors]]\nname = \"pca\"\nalgorithm = {{ type = \"pca\", variance = 0.9 }}\nbaseline_frames = 50\n\n",
        dir.join("bench.db").display(),
        csv.display()
    );
    let signals: Vec<String> = (0..args.signals).map(|s| format!("{{ name = \"s{s}\", unit = \"bar\" }}")).collect();
    for a in 0..args.assets {
        let _ = writeln!(
            text,
            "[[assets]]\nid = \"a{a:04}\"\nsite = \"site-{}\"\nline = \"line-{}\"\nsignals = [{}]\n",
            a % 10,
            (a / 10) % 10,
            signals.join(", ")
        );
    }
    Ok(text)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let benchmarking = std::env::args().any(|w| w == "--bench");
    let chromium = std::path::Path::new("/usr/bin/chromium");
    let playwright = Command::new(&args.python).args(["-c", "import playwright.sync_api"]).status();
    if !chromium.exists() || !playwright.is_ok_and(|s| s.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI is set but Chromium or Playwright is missing");
        println!("dashboard bench skipped: needs /usr/bin/chromium and Playwright in {}", args.python);
        return Ok(());
    }
    let dir = tempfile_dir("usan-bench-dashboard")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config_path = dir.join("plant.toml");
    std::fs::write(&config_path, plant(&dir, &args, port)?)?;
    let config = Config::load(&config_path)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (engine, history_s) = runtime.block_on(async {
        let start = Instant::now();
        let engine = Engine::start(config.engine()).await?;
        let expected = (args.assets * args.rows) as u64;
        while engine.metrics.frames_stored.get() < expected {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(900), "history not stored within 15 minutes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, anyhow::Error>((engine, start.elapsed().as_secs_f64()))
    })?;
    // The plant keeps running: a frame per asset per second, continuing the history.
    let feed = {
        let router = engine.router.clone();
        let (assets, signals, rows) = (args.assets, args.signals, args.rows as i64);
        runtime.spawn(async move {
            let mut g = usan_core::stats::SeededNormal::new(8);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for r in rows.. {
                tick.tick().await;
                let ts = usan_core::model::Timestamp((1_767_225_600 + r * 60) * 1000);
                for asset in 0..assets {
                    let values = (0..signals).map(|s| 10.0 * s as f64 + g.normal()).collect();
                    if router.send(usan::source::Batch::Rows { asset, rows: vec![(ts, values)] }).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))?;
    let app = usan::api::router(usan::api::ApiState::new(&engine, &config.server, &config.auth));
    let server = runtime.spawn(async move { axum::serve(listener, app).await });

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts/bench");
    std::fs::create_dir_all(&artifacts)?;
    let output = Command::new(&args.python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.py"))
        .args(["timing", &format!("http://127.0.0.1:{port}"), artifacts.to_str().unwrap_or("."), "a0000"])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    println!(
        "dashboard: {} assets x {} signals, {} frames of history each (stored in {history_s:.1} s), \
         live {} samples/s while measuring",
        args.assets,
        args.signals,
        args.rows,
        args.assets * args.signals
    );
    println!("run  overview FCP ms  overview ready ms  tiles  asset page ms  charts");
    for (run, r) in runs.as_object().into_iter().flatten() {
        let ms = |k: &str| r[k].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "{run:<4} {:>15}  {:>17}  {:>5}  {:>13}  {:>6}",
            ms("overview_first_contentful_paint_ms"),
            ms("overview_ready_ms"),
            r["tiles"],
            ms("asset_page_ms"),
            r["asset_charts"]
        );
        anyhow::ensure!(r["tiles"].as_u64() == Some(args.assets as u64), "the overview shows every asset");
        anyhow::ensure!(r["asset_charts"].as_u64() == Some(args.signals as u64), "the asset page charts every signal");
    }
    if !benchmarking {
        println!("(smoke run; `cargo bench --bench dashboard` measures the 1,000-asset plant)");
    }
    // The API and the feed hold senders into the pipeline: stop them before the engine drains.
    feed.abort();
    let _ = runtime.block_on(feed);
    server.abort();
    let _ = runtime.block_on(server);
    runtime.block_on(engine.stop())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
