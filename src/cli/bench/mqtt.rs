//! MQTT benchmarks against a real broker on loopback: ingest throughput of
//! JSON batches into the pipeline, and latency from publish to finding.
//!
//! Publisher and engine run in this process (the publisher on its own
//! connection), so the figures include the broker's hop both ways.

use super::{PlantDetector, plant_config, tempfile_dir, thousands};
use crate::config::Config;
use crate::pipeline::Engine;
use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use usan_core::stats::SeededNormal;

fn qos(level: u8) -> QoS {
    if level == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
}

fn run_id() -> String {
    format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis())
}

/// A publisher connection whose event loop runs on its own task; returns the
/// client and a receiver of incoming publishes (topic, payload).
fn connect(broker: &str, client_id: &str) -> anyhow::Result<(AsyncClient, tokio::sync::mpsc::Receiver<Vec<u8>>)> {
    let (host, port) = broker.rsplit_once(':').context("--broker is host:port")?;
    let mut options = MqttOptions::new(client_id, host, port.parse::<u16>().context("--broker port")?);
    options.set_max_packet_size(16 << 20, 16 << 20);
    options.set_inflight(1000);
    let (client, mut events) = crate::protocol::mqtt::client(options, 1000);
    let (tx, rx) = tokio::sync::mpsc::channel(100_000);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p.payload.to_vec()).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("bench publisher: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok((client, rx))
}

fn mqtt_source(broker: &str, id: &str, qos: u8) -> anyhow::Result<String> {
    let (host, port) = broker.rsplit_once(':').context("--broker is host:port")?;
    Ok(format!(
        r#"[[sources]]
type = "mqtt"
name = "bench"
clean_session = true
broker = {{ host = "{host}", port = {port}, client_id = "usan-bench-{id}" }}
[[sources.subscriptions]]
format = "json"
topic = "usan-bench/{id}/+/data"
qos = {qos}
asset = "{{2}}"
records = "$.rows"
timestamp = "$.t"
values = "$.v"
"#
    ))
}

/// The messages of [`ingest`].
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Assets.
    pub assets: usize,
    /// Signals per asset.
    pub signals: usize,
    /// Messages to publish.
    pub messages: usize,
    /// Rows per message.
    pub rows: usize,
}

/// Publish `messages` JSON batches of `rows` rows (all signals of one asset
/// per row) as fast as the broker takes them; prints samples/s accepted
/// into the pipeline and stored.
///
/// # Errors
/// When the broker cannot be reached or the engine cannot start.
pub async fn ingest(broker: &str, shape: Shape, qos_level: u8, ack: &str) -> anyhow::Result<()> {
    let Shape { assets, signals, messages, rows } = shape;
    let dir = tempfile_dir("usan-bench-mqtt")?;
    let _ = std::fs::remove_file(dir.join("bench.db"));
    let id = run_id();
    let config_path = dir.join("bench.toml");
    std::fs::write(
        &config_path,
        plant_config(&dir, assets, signals, PlantDetector::None, &mqtt_source(broker, &id, qos_level)?)
            .replace("[pipeline]\n", &format!("[pipeline]\nack = \"{ack}\"\n")),
    )?;
    let engine = Engine::start(Config::load(&config_path)?).await?;
    let stats = engine.metrics.source("bench");
    let ready = Instant::now();
    while !stats.connected.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(10), "usan did not reach the broker at {broker}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the SUBACK

    // Payloads made before the clock starts: message m is asset m % assets,
    // rows starting at cycle (m / assets) · rows.
    let mut g = SeededNormal::new(7);
    let payloads: Vec<(String, Vec<u8>)> = (0..messages)
        .map(|m| {
            let asset = m % assets;
            let first = (m / assets) * rows;
            let mut text = String::from("{\"rows\":[");
            for r in 0..rows {
                let _ = write!(text, "{}{{\"t\":{},\"v\":{{", if r > 0 { "," } else { "" }, 1_000 * (first + r));
                for s in 0..signals {
                    let _ = write!(text, "{}\"s{s}\":{:.4}", if s > 0 { "," } else { "" }, g.normal());
                }
                text.push_str("}}");
            }
            text.push_str("]}");
            (format!("usan-bench/{id}/a{asset}/data"), text.into_bytes())
        })
        .collect();
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let (publisher, _) = connect(broker, &format!("usan-bench-pub-{id}"))?;
    let total_samples = (messages * rows * signals) as u64;
    let total_frames = (messages * rows) as u64;
    // A broker queues a bounded number of messages per subscriber (Mosquitto:
    // 1,000) and drops beyond: keep at most WINDOW messages unconsumed.
    const WINDOW: u64 = 50;
    let start = Instant::now();
    for (sent, (topic, payload)) in payloads.into_iter().enumerate() {
        while sent as u64 >= stats.messages.get() + WINDOW {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "usan stopped consuming");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        publisher.publish(topic, qos(qos_level), false, payload).await?;
    }
    let published = start.elapsed();
    let mut accepted = None;
    let deadline = published + Duration::from_secs(30);
    while engine.metrics.frames_stored.get() < total_frames && start.elapsed() < deadline {
        if accepted.is_none() && engine.metrics.samples_in.get() >= total_samples {
            accepted = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stored = start.elapsed();
    let samples_in = engine.metrics.samples_in.get();
    let frames_stored = engine.metrics.frames_stored.get();
    engine.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    let accepted = accepted.unwrap_or(stored);
    println!(
        "mqtt ingest, QoS {qos_level}, ack = {ack}: {messages} messages x {rows} rows x {signals} signals ({} MB of JSON) over {assets} assets",
        bytes / 1_000_000
    );
    println!(
        "  published in {:.2} s; accepted into the pipeline: {} samples in {:.2} s = {} samples/s; stored: {} frames in {:.2} s = {} samples/s",
        published.as_secs_f64(),
        thousands(samples_in as f64),
        accepted.as_secs_f64(),
        thousands(samples_in as f64 / accepted.as_secs_f64()),
        thousands(frames_stored as f64),
        stored.as_secs_f64(),
        thousands((frames_stored * signals as u64) as f64 / stored.as_secs_f64()),
    );
    if samples_in < total_samples {
        println!(
            "  (the pipeline took {} of {} samples; the source received {} of {messages} messages)",
            thousands(samples_in as f64),
            thousands(total_samples as f64),
            stats.messages.get()
        );
    }
    Ok(())
}

/// Publish one row per message at `rate` samples/s for `seconds` with a
/// detector that finds every frame and an MQTT sink publishing findings back;
/// prints the latency from publish to finding (as the sink's subscriber
/// receives it) at p50, p99 and max. `flush_interval` is the store's commit
/// period: its commits share the disk with the sink's spool.
///
/// # Errors
/// When the broker cannot be reached or the engine cannot start.
pub async fn latency(
    broker: &str,
    signals: usize,
    rate: usize,
    seconds: u64,
    flush_interval: &str,
) -> anyhow::Result<()> {
    let dir = tempfile_dir("usan-bench-latency")?;
    let id = run_id();
    let (host, port) = broker.rsplit_once(':').context("--broker is host:port")?;
    let sink = format!(
        r#"
[[detectors]]
name = "every"
algorithm = {{ type = "robust_z", window = 20 }}
baseline_frames = 1
threshold = {{ value = 0.0, k = 1, n = 1 }}

[[sinks]]
type = "mqtt"
name = "findings"
broker = {{ host = "{host}", port = {port}, client_id = "usan-bench-sink-{id}" }}
topic = "usan-bench/{id}/findings/{{asset}}"
findings = true
spool = "{}"
"#,
        dir.join("spool").display()
    );
    let mut text = plant_config(&dir, 1, signals, PlantDetector::None, &mqtt_source(broker, &id, 1)?)
        .replace("flush_interval = \"200ms\"", &format!("flush_interval = \"{flush_interval}\""));
    text.push_str(&sink);
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, text)?;
    let engine = Engine::start(Config::load(&config_path)?).await?;
    let (publisher, mut received) = connect(broker, &format!("usan-bench-pub-{id}"))?;
    publisher.subscribe(format!("usan-bench/{id}/findings/#"), QoS::AtLeastOnce).await?;
    let stats = engine.metrics.source("bench");
    let ready = Instant::now();
    while !stats.connected.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(10), "usan did not reach the broker at {broker}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Findings as the engine makes them (its live event feed).
    let mut live = engine.live_events.subscribe();
    let made: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let recording = {
        let made = Arc::clone(&made);
        tokio::spawn(async move {
            while let Ok(events) = live.recv().await {
                let now = Instant::now();
                for event in events.iter() {
                    if let crate::sink::Event::Finding(f) = event
                        && let Ok(mut made) = made.lock()
                    {
                        made.insert(f.ts.0, now);
                    }
                }
            }
        })
    };
    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let rows = (rate / signals.max(1)).max(1) as u64 * seconds;
    let period = Duration::from_secs_f64(signals as f64 / rate as f64);
    let topic = format!("usan-bench/{id}/a0/data");
    let publishing = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut g = SeededNormal::new(3);
            let mut ticker = tokio::time::interval(period);
            let origin = chrono::Utc::now().timestamp_millis() - 86_400_000;
            for r in 0..rows {
                ticker.tick().await;
                let ts = origin + r as i64 * 10;
                let mut payload = format!("{{\"rows\":[{{\"t\":{ts},\"v\":{{");
                for s in 0..signals {
                    let _ = write!(payload, "{}\"s{s}\":{:.4}", if s > 0 { "," } else { "" }, g.normal());
                }
                payload.push_str("}}]}");
                sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(ts, Instant::now());
                publisher.publish(topic.clone(), QoS::AtLeastOnce, false, payload.into_bytes()).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut latencies = Vec::new();
    let mut to_finding = Vec::new();
    let warm_up = 100usize;
    let mut seen = 0usize;
    let deadline = Instant::now() + Duration::from_secs(seconds + 20);
    while (seen as u64) < rows && Instant::now() < deadline {
        let Ok(Some(payload)) = tokio::time::timeout(Duration::from_secs(5), received.recv()).await else { break };
        let now = Instant::now();
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&payload) else { continue };
        if event["event"] != "finding" {
            continue;
        }
        seen += 1;
        let Some(ts) = event["ts"].as_i64() else { continue };
        let start = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(&ts).copied();
        if let Some(start) = start
            && seen > warm_up
        {
            latencies.push(now.duration_since(start).as_secs_f64() * 1e3);
            let made = made.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(&ts).copied();
            if let Some(made) = made {
                to_finding.push(made.duration_since(start).as_secs_f64() * 1e3);
            }
        }
    }
    publishing.await??;
    engine.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    recording.abort();
    anyhow::ensure!(!latencies.is_empty() && !to_finding.is_empty(), "no findings came back");
    println!(
        "mqtt latency: {rate} samples/s ({signals} signals per message) for {seconds} s; {} findings measured (first {warm_up} skipped)",
        latencies.len()
    );
    println!("  publish → broker → usan source → frame → detector → finding: {}", percentiles(&mut to_finding));
    println!("  ... → MQTT sink (disk spool, fsync) → broker → subscriber: {}", percentiles(&mut latencies));
    Ok(())
}

/// "p50 …, p99 …, max …" of milliseconds.
fn percentiles(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", at(0.5), at(0.99), values[values.len() - 1])
}
