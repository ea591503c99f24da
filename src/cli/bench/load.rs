//! The load soak: a `usan serve` process (this binary, started as a child so
//! its memory is measured alone) fed over HTTP at a fixed rate across many
//! assets while a dashboard is open (its two live streams and its polls) and
//! a scraper reads `/metrics`. Every `report` it prints the push rate and
//! latency, the dashboard's latency, the server's resident memory and its
//! queue depths; at the end, a summary and, with `check`, whether memory
//! stayed flat, the queues drained and nothing was refused.

use super::{PlantDetector, plant_config, tempfile_dir, thousands};
use anyhow::Context;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use usan_core::stats::SeededNormal;

/// What one soak does.
#[derive(Debug, Clone, Copy)]
pub struct LoadRun {
    /// Assets.
    pub assets: usize,
    /// Signals per asset.
    pub signals: usize,
    /// Samples per second, all clients together.
    pub rate: usize,
    /// Concurrent pushing clients.
    pub clients: usize,
    /// Rows (timestamps) per request.
    pub rows: usize,
    /// How long.
    pub duration: Duration,
    /// Print a line this often.
    pub report: Duration,
    /// Detector on every asset.
    pub detector: PlantDetector,
    /// Fail unless memory stayed flat, the queues drained and nothing was refused.
    pub check: bool,
}

/// Request latencies in microseconds, drained at each report.
#[derive(Default)]
struct Latencies {
    interval: Mutex<Vec<u32>>,
    all: Mutex<Vec<u32>>,
}

impl Latencies {
    fn record(&self, elapsed: Duration) {
        let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        lock(&self.interval).push(micros);
    }

    /// The interval's latencies (sorted), kept for the run's totals.
    fn drain(&self) -> Vec<u32> {
        let mut taken = std::mem::take(&mut *lock(&self.interval));
        taken.sort_unstable();
        lock(&self.all).extend_from_slice(&taken);
        taken
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `q` quantile of sorted microseconds, in ms.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    f64::from(sorted[at]) / 1000.0
}

/// The server process, stopped with SIGTERM (or killed) when dropped.
struct Child(std::process::Child);

impl Child {
    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        std::process::Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(Instant::now() < deadline, "the server did not stop within 15 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Resident memory of process `pid` in MiB.
fn rss_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The sum of every line of family `name` (all label sets) in a scrape.
fn family_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One report line's figures.
struct Row {
    elapsed: f64,
    rss: f64,
    worker_queue: f64,
    store_queue: f64,
}

/// Run the soak and print its table and summary.
///
/// # Errors
/// When the server cannot start, or with `check` when memory grew, a queue
/// did not drain, a push was refused or the server did not stop cleanly.
pub async fn load(run: LoadRun) -> anyhow::Result<()> {
    anyhow::ensure!(run.assets > 0 && run.signals > 0 && run.clients > 0 && run.rows > 0, "nothing to push");
    let dir = tempfile_dir("usan-bench-load")?;
    let _ = std::fs::remove_file(dir.join("bench.db"));
    let token = "usan-bench-load-token";
    let source = format!(
        "[[sources]]\ntype = \"http\"\nname = \"push\"\n\n[auth]\ntokens = [{{ name = \"bench\", role = \"admin\", sha256 = \"{}\" }}]\n",
        crate::api::auth::sha256_hex(token)
    );
    let config = dir.join("load.toml");
    std::fs::write(&config, plant_config(&dir, run.assets, run.signals, run.detector, &source))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let mut child = Child(
        std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting usan serve")?,
    );
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().pool_max_idle_per_host(run.clients + 8).build()?;
    let started = Instant::now();
    loop {
        if client.get(format!("{base}/api/v1/health")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the server did not answer within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let pushes = Arc::new(Latencies::default());
    let polls = Arc::new(Latencies::default());
    let acknowledged = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let streamed = Arc::new(AtomicU64::new(0));
    // Source time follows the clock: each asset gets a frame every `step` ms.
    let frames_per_s = (run.rate as f64 / run.signals as f64).max(1.0);
    let step_ms = ((1000.0 * run.assets as f64 / frames_per_s).round() as i64).max(1);
    let t0 = chrono::Utc::now().timestamp_millis() - 60_000;
    let requests_per_s = frames_per_s / run.rows as f64;
    let period = Duration::from_secs_f64(run.clients as f64 / requests_per_s);

    let mut tasks = Vec::new();
    for c in 0..run.clients {
        let (client, url, stop, pushes) =
            (client.clone(), format!("{base}/api/v1/samples"), stop.clone(), pushes.clone());
        let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut g = SeededNormal::new(c as u64 + 1);
            let mine: Vec<usize> = (c..run.assets).step_by(run.clients).collect();
            let mut next_frame = vec![0i64; mine.len()];
            let mut tick = tokio::time::interval(period);
            // Behind after a slow answer: catch up, so the rate holds while the server can.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) && !mine.is_empty() {
                tick.tick().await;
                let slot = turn % mine.len();
                turn += 1;
                let asset = mine[slot];
                let first = next_frame[slot];
                next_frame[slot] += run.rows as i64;
                let times = (first..first + run.rows as i64).map(|frame| t0 + frame * step_ms);
                let body = super::push::push_body(asset, times, run.signals, &mut g);
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(response) if response.status() == 202 => {
                        pushes.record(sent.elapsed());
                        acknowledged.fetch_add((run.rows * run.signals) as u64, Ordering::Relaxed);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // The dashboard: its two live streams, the overview every 2 s, an
    // asset's page (detail, series, alarms, findings) in turn; a scraper.
    for path in ["/api/v1/stream".to_string(), "/api/v1/stream?asset=a0".to_string()] {
        let (client, url, stop, streamed) = (client.clone(), format!("{base}{path}"), stop.clone(), streamed.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut response) = client.get(&url).bearer_auth(token).send().await else { return };
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), response.chunk()).await {
                    Ok(Ok(Some(bytes))) => {
                        streamed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Ok(_) => return,
                    Err(_) => {}
                }
            }
        }));
    }
    {
        let (client, base, stop, polls) = (client.clone(), base.clone(), stop.clone(), polls.clone());
        let assets = run.assets;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let id = format!("a{}", (turn * 37) % assets);
                turn += 1;
                let mut paths = vec![
                    "/api/v1/overview".to_string(),
                    "/api/v1/alarms/summary".to_string(),
                    format!("/api/v1/assets/{id}"),
                    format!("/api/v1/assets/{id}/series?max_points=800"),
                    format!("/api/v1/alarms?asset={id}&state=all&limit=200"),
                    format!("/api/v1/findings?asset={id}&limit=20"),
                ];
                if turn.is_multiple_of(3) {
                    paths.push("/metrics".to_string());
                }
                for path in paths {
                    let sent = Instant::now();
                    if let Ok(response) = client.get(format!("{base}{path}")).bearer_auth(token).send().await
                        && response.bytes().await.is_ok()
                    {
                        polls.record(sent.elapsed());
                    }
                }
            }
        }));
    }

    println!(
        "load soak: {} assets x {} signals, detector {}, {} samples/s wanted from {} clients x {} rows per request, dashboard open, for {:.0?}",
        run.assets,
        run.signals,
        run.detector.name(),
        thousands(run.rate as f64),
        run.clients,
        run.rows,
        run.duration
    );
    println!(
        "| elapsed s | samples/s acknowledged | push p50 / p99 ms | dashboard p99 ms | RSS MiB | worker queue | store queue |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rows: Vec<Row> = Vec::new();
    let mut last_count = 0u64;
    let mut last_at = Instant::now();
    let begun = Instant::now();
    let metrics_url = format!("{base}/metrics");
    while begun.elapsed() < run.duration {
        tokio::time::sleep(run.report.min(run.duration.saturating_sub(begun.elapsed()))).await;
        let count = acknowledged.load(Ordering::Relaxed);
        let rate = (count - last_count) as f64 / last_at.elapsed().as_secs_f64();
        (last_count, last_at) = (count, Instant::now());
        let push = pushes.drain();
        let poll = polls.drain();
        let scrape = match client.get(&metrics_url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let row = Row {
            elapsed: begun.elapsed().as_secs_f64(),
            rss: rss_of(pid).unwrap_or(f64::NAN),
            worker_queue: family_sum(&scrape, "usan_worker_queue_depth"),
            store_queue: family_sum(&scrape, "usan_store_queue_depth"),
        };
        println!(
            "| {:.0} | {} | {:.1} / {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            row.elapsed,
            thousands(rate),
            quantile_ms(&push, 0.5),
            quantile_ms(&push, 0.99),
            quantile_ms(&poll, 0.99),
            row.rss,
            row.worker_queue,
            row.store_queue
        );
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let elapsed = begun.elapsed().as_secs_f64();
    pushes.drain();
    polls.drain();
    let scrape = client.get(&metrics_url).send().await?.text().await?;
    let received = family_sum(&scrape, "usan_samples_in_total");
    let status = child.stop()?;

    let mut push_all = std::mem::take(&mut *lock(&pushes.all));
    push_all.sort_unstable();
    let mut poll_all = std::mem::take(&mut *lock(&polls.all));
    poll_all.sort_unstable();
    let total = acknowledged.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let half = rows.len() / 2;
    let max_rss = |rows: &[Row]| rows.iter().map(|r| r.rss).fold(f64::NAN, f64::max);
    let (first_half, second_half) = (max_rss(&rows[..half]), max_rss(&rows[half..]));
    let queue_end = rows.last().map_or(0.0, |r| r.worker_queue + r.store_queue);
    let queue_max = rows.iter().map(|r| r.worker_queue + r.store_queue).fold(0.0, f64::max);
    println!(
        "acknowledged {} samples = {} samples/s ({} refused requests); server received {}; push p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} requests; dashboard p99 {:.1} ms over {} requests, {} bytes streamed",
        thousands(total as f64),
        thousands(total as f64 / elapsed),
        refused,
        thousands(received),
        quantile_ms(&push_all, 0.5),
        quantile_ms(&push_all, 0.99),
        quantile_ms(&push_all, 1.0),
        push_all.len(),
        quantile_ms(&poll_all, 0.99),
        poll_all.len(),
        thousands(streamed.load(Ordering::Relaxed) as f64)
    );
    println!(
        "RSS max {first_half:.1} MiB in the first half, {second_half:.1} MiB in the second; queues max {queue_max:.0}, at the end {queue_end:.0}; server stopped: {status}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    if run.check {
        let mut problems = Vec::new();
        // Flat: the second half's peak within 10 % (and 16 MiB of allocator
        // slack) of the first half's.
        if half > 0 && second_half > first_half * 1.1 + 16.0 {
            problems.push(format!("RSS grew: {first_half:.1} MiB, then {second_half:.1} MiB"));
        }
        if queue_end > 64.0 {
            problems.push(format!("queues did not drain: {queue_end:.0} batches waiting at the end"));
        }
        if refused > 0 {
            problems.push(format!("{refused} pushes refused"));
        }
        if received < total as f64 {
            problems.push(format!("{total} samples acknowledged, {received} received"));
        }
        if !status.success() {
            problems.push(format!("the server stopped with {status}"));
        }
        anyhow::ensure!(problems.is_empty(), "load soak failed: {}", problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_sums_over_its_label_sets_only() {
        let text = "# TYPE usan_worker_queue_depth gauge\nusan_worker_queue_depth{worker=\"0\"} 3\nusan_worker_queue_depth{worker=\"1\"} 4\nusan_worker_queue_depth_other 100\nusan_store_queue_depth 2\n";
        assert_eq!(family_sum(text, "usan_worker_queue_depth"), 7.0);
        assert_eq!(family_sum(text, "usan_store_queue_depth"), 2.0);
        assert_eq!(family_sum(text, "absent"), 0.0);
    }

    #[test]
    fn quantiles_of_sorted_micros() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&sorted, 0.5), 51.0);
        assert_eq!(quantile_ms(&sorted, 0.99), 100.0);
        assert!(quantile_ms(&[], 0.5).is_nan());
    }
}
