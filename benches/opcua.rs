//! OPC UA subscription throughput: values per second from monitored items of
//! an OPC UA server (async-opcua's, in this process, on loopback) into usan's
//! pipeline and store. usan subscribes the way a user configures it: one
//! browsed folder per asset, every variable a signal.
//!
//! ```text
//! cargo bench --bench opcua -- [--assets 50] [--signals 20] [--period-ms 20] [--seconds 10] [--publishing-ms 100]
//!                                [--peer .venv-peers/bin/python]
//! ```
//!
//! With `--peer PYTHON`, the same server is then measured with Python's
//! asyncua client subscribing to the same variables
//! (`tests/peers/opcua_subscribe.py`), for the same time.
//!
//! Every `period-ms` the server gives every variable a new value; usan's
//! subscription publishes every `publishing-ms` with a queue of 100 values per
//! item. The figures include the server's own work (both share the 2 cores).
//! Run by `cargo test` (no `--bench`), it is a one-second smoke run that
//! fails unless values arrive.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap fails, as it should

#[path = "../tests/it/rust_opcua.rs"]
mod rust_opcua;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use usan::cli::bench::{PlantDetector, plant_config, tempfile_dir, thousands};
use usan::config::Config;
use usan::pipeline::Engine;

struct Args {
    peer: Option<String>,
    assets: usize,
    signals: usize,
    period_ms: u64,
    publishing_ms: u64,
    seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    // `cargo test --all-targets` runs this without `--bench`: a one-second smoke run.
    let benchmarking = std::env::args().any(|w| w == "--bench");
    let mut parsed = if benchmarking {
        Args { peer: None, assets: 50, signals: 20, period_ms: 20, publishing_ms: 100, seconds: 10 }
    } else {
        Args { peer: None, assets: 5, signals: 4, period_ms: 20, publishing_ms: 100, seconds: 1 }
    };
    let mut words = std::env::args().skip(1).filter(|w| w != "--bench");
    while let Some(flag) = words.next() {
        let mut value = || -> anyhow::Result<u64> {
            let text = words.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            text.parse().map_err(|_| anyhow::anyhow!("{flag}: `{text}` is not a number"))
        };
        if flag == "--peer" {
            parsed.peer = Some(words.next().ok_or_else(|| anyhow::anyhow!("--peer needs a Python"))?);
            continue;
        }
        match flag.as_str() {
            "--assets" => parsed.assets = usize::try_from(value()?)?,
            "--signals" => parsed.signals = usize::try_from(value()?)?,
            "--period-ms" => parsed.period_ms = value()?,
            "--publishing-ms" => parsed.publishing_ms = value()?,
            "--seconds" => parsed.seconds = value()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(parsed)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,usan=info,opcua_client=off,opcua_crypto=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile_dir("usan-bench-opcua")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = Arc::new(rust_opcua::RustOpcServer::start(port, &dir.join("server-pki"), args.assets, args.signals));
    let ns = server.namespace;
    let mut source = format!(
        "[[sources]]\ntype = \"opcua\"\nname = \"bench\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/\"\npki_dir = \"{}\"\n\
         trust_server_certs = true\npublishing_interval = \"{}ms\"\nsampling_interval = \"{}ms\"\nbrowse = [\n",
        dir.join("pki").display(),
        args.publishing_ms,
        args.period_ms,
    );
    for a in 0..args.assets {
        let _ = writeln!(source, "  {{ root = \"ns={ns};s=Line.A{a}\", asset = \"a{a}\" }},");
    }
    source.push_str("]\n");
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, plant_config(&dir, args.assets, args.signals, PlantDetector::None, &source))?;
    let engine = Engine::start(Config::load(&config_path)?).await?;

    // The server changes every variable every period, stamped with its own clock.
    let published = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (server, published) = (Arc::clone(&server), Arc::clone(&published));
        let items = (args.assets * args.signals) as u64;
        let period = Duration::from_millis(args.period_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for k in 0u64.. {
                tick.tick().await;
                server.set_all(|a, s| (k + a as u64 + s as u64) as f64, opcua::types::DateTime::now());
                published.fetch_add(items, Ordering::Relaxed);
            }
        })
    };
    let start = Instant::now();
    while engine.metrics.samples_in.get() == 0 {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "no value arrived within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // every item monitored, queues flowing

    let (published_0, received_0, cpu_0, t0) =
        (published.load(Ordering::Relaxed), engine.metrics.samples_in.get(), cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let published = (published.load(Ordering::Relaxed) - published_0) as f64;
    let received = (engine.metrics.samples_in.get() - received_0) as f64;
    let cpu = cpu_seconds() - cpu_0;
    anyhow::ensure!(received > 0.0, "no values arrived while measuring");
    let dropped = engine.metrics.source("bench").malformed_counts();
    engine.stop().await?;
    let peer = match &args.peer {
        Some(python) => Some(peer_rate(python, port, ns, args).await?),
        None => None,
    };
    ticker.abort();
    server.stop();
    println!(
        "opcua: {} monitored items ({} assets x {} signals), each changing every {} ms, publishing every {} ms: \
         server changed {} values/s, usan received {} values/s ({:.1} %); process CPU {:.0} % of one core (server included){}",
        args.assets * args.signals,
        args.assets,
        args.signals,
        args.period_ms,
        args.publishing_ms,
        thousands(published / elapsed),
        thousands(received / elapsed),
        100.0 * received / published.max(1.0),
        100.0 * cpu / elapsed,
        if dropped.is_empty() { String::new() } else { format!("; refused: {dropped:?}") },
    );
    if let Some((changed, received)) = peer {
        println!(
            "opcua peer (Python asyncua client, same server, same items): server changed {} values/s, asyncua received {} values/s ({:.1} %)",
            thousands(changed),
            thousands(received),
            100.0 * received / changed.max(1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The asyncua client's values/s on the same server: (changed/s, received/s).
async fn peer_rate(python: &str, port: u16, ns: u16, args: &Args) -> anyhow::Result<(f64, f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/opcua_subscribe.py");
    let items = (args.assets * args.signals) as f64;
    let started = Instant::now();
    let mut command = std::process::Command::new(python);
    command
        .arg(script)
        .arg(format!("opc.tcp://127.0.0.1:{port}/"))
        .args([ns.to_string(), args.assets.to_string(), args.signals.to_string()])
        .args([args.publishing_ms.to_string(), args.period_ms.to_string(), args.seconds.to_string()]);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    anyhow::ensure!(output.status.success(), "the peer failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let received = text
        .lines()
        .find_map(|l| l.strip_prefix("received_per_s="))
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("the peer printed no rate: {text}"))?;
    tracing::debug!("peer ran {:.1?}", started.elapsed());
    Ok((items * 1000.0 / args.period_ms as f64, received))
}
