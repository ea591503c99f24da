//! HTTP push throughput: concurrent clients `POST /api/v1/samples` to an
//! engine and API in this process, each request answered once its samples
//! are as safe as `[pipeline] ack` asks (committed to the journal, or queued).

use super::{PlantDetector, plant_config, tempfile_dir, thousands};
use crate::api::{ApiState, router};
use crate::config::Config;
use crate::pipeline::Engine;
use anyhow::Context;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use usan_core::stats::SeededNormal;

/// What one run measures.
#[derive(Debug, Clone, Copy)]
pub struct PushRun {
    /// Assets.
    pub assets: usize,
    /// Signals per asset.
    pub signals: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Rows (timestamps) per request.
    pub rows: usize,
    /// How long the clients push.
    pub duration: Duration,
}

/// Push for `run.duration` with `run.clients` clients; prints samples/s
/// acknowledged and the request latency at p50 / p99.
///
/// # Errors
/// When the engine or API cannot start, or a request is refused.
pub async fn push(run: PushRun, ack: &str) -> anyhow::Result<()> {
    let dir = tempfile_dir("usan-bench-push")?;
    let _ = std::fs::remove_file(dir.join("bench.db"));
    let token = "usan-bench-push-token";
    let source = format!(
        "[[sources]]\ntype = \"http\"\nname = \"push\"\n\n[auth]\ntokens = [{{ name = \"bench\", role = \"admin\", sha256 = \"{}\" }}]\n",
        crate::api::auth::sha256_hex(token)
    );
    let text = plant_config(&dir, run.assets, run.signals, PlantDetector::None, &source)
        .replace("[pipeline]\n", &format!("[pipeline]\nack = \"{ack}\"\n"));
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, text)?;
    let config = Config::load(&config_path)?;
    let engine = Engine::start(config.engine()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let api = ApiState::new(&engine, &config.server, &config.auth);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(crate::api::listen::serve(listener, router(api.clone()), config.server.limits(), async {
            let _ = server_stopped.await;
        }));

    let url = format!("http://{address}/api/v1/samples");
    let client = reqwest::Client::builder().pool_max_idle_per_host(run.clients).build()?;
    let start = Instant::now();
    let deadline = start + run.duration;
    let mut tasks = Vec::new();
    for c in 0..run.clients {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut g = SeededNormal::new(c as u64);
            let mut latencies = Vec::new();
            let mut samples = 0u64;
            let mut next_row = vec![0usize; run.assets];
            let mut k = c;
            while Instant::now() < deadline {
                // Client c pushes to assets c, c + clients, ... in turn.
                let asset = k % run.assets;
                k += run.clients;
                let first = next_row[asset];
                next_row[asset] += run.rows;
                let times = (first..first + run.rows).map(|row| 1_700_000_000_000 + 1000 * row as i64);
                let body = push_body(asset, times, run.signals, &mut g);
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 202, "push answered {}", response.status());
                latencies.push(sent.elapsed());
                samples += (run.rows * run.signals) as u64;
            }
            Ok::<_, anyhow::Error>((samples, latencies))
        }));
    }
    let mut samples = 0u64;
    let mut latencies = Vec::new();
    for task in tasks {
        let (n, l) = task.await.context("client task")??;
        samples += n;
        latencies.extend(l);
    }
    let elapsed = start.elapsed();
    api.close_streams();
    drop(api);
    let _ = stop_server.send(());
    let _ = server.await;
    let commits = engine.metrics.journal_commits.get();
    engine.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "http push, ack = {ack}: {} clients x {} rows x {} signals per request over {} assets for {:.0?}",
        run.clients, run.rows, run.signals, run.assets, run.duration
    );
    println!(
        "  {} samples acknowledged = {} samples/s; {} requests, p50 {:.2} ms, p99 {:.2} ms; {} journal commits",
        thousands(samples as f64),
        thousands(samples as f64 / elapsed.as_secs_f64()),
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        commits
    );
    Ok(())
}

/// A `POST /api/v1/samples` body: for asset `a<asset>`, signals `s0…`, a
/// normal value per signal at each of `times` (Unix ms).
pub(super) fn push_body(
    asset: usize,
    times: impl Iterator<Item = i64>,
    signals: usize,
    g: &mut SeededNormal,
) -> String {
    let mut body = String::from("{\"samples\":[");
    for (r, ts) in times.enumerate() {
        for s in 0..signals {
            let sep = if r + s > 0 { "," } else { "" };
            let _ = write!(
                body,
                "{sep}{{\"asset\":\"a{asset}\",\"signal\":\"s{s}\",\"ts\":{ts},\"value\":{:.4}}}",
                g.normal()
            );
        }
    }
    body.push_str("]}");
    body
}
