//! The crash loop: what usan acknowledged survives `kill -9`.
//!
//! Four HTTP clients push samples (each request completes the frames the
//! previous one left pending) and an MQTT publisher streams QoS 1 messages
//! through the machine's broker, while `usan serve` is killed with SIGKILL
//! at random moments and started again. Every sample answered with 202, and
//! every message the broker accepted, must end up stored exactly once with
//! its value; the store must pass `PRAGMA integrity_check`; alarms must be
//! readable and consistent; and after a clean stop the journal is empty.
//!
//! `USAN_CRASH_ROUNDS` sets the rounds (10 by default, as in CI;
//! `scripts/crash-loop.sh` runs 100 on a release build) and
//! `USAN_CRASH_SEED` replays a run's random kill moments;
//! `USAN_CRASH_ACK=received` shows what the opt-in fast mode loses.

use crate::harness::{Server, required, write_config};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HTTP_CLIENTS: usize = 4;
const SIGNALS: [&str; 3] = ["x", "y", "z"];
/// Source-time step between frames, ms.
const STEP: i64 = 10;
/// Frames per request.
const FRAMES_PER_REQUEST: i64 = 20;

/// The value every sample carries: a function of where it belongs, so the
/// check needs no record of values.
fn value(asset: usize, signal: usize, ts: i64) -> f64 {
    (asset * 1000) as f64 + signal as f64 * 0.25 + ((ts / STEP) % 997) as f64
}

/// A small deterministic generator for the kill moments (seeded, printed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// The configuration; `USAN_CRASH_ACK=received` runs the loop against the
/// opt-in fast mode, to see what it loses.
fn config(dir: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    let ack = std::env::var("USAN_CRASH_ACK").unwrap_or_else(|_| "commit".into());
    let assets: String = (0..=HTTP_CLIENTS)
        .map(|i| {
            let id = if i == HTTP_CLIENTS { "m-1".to_string() } else { format!("h-{i}") };
            format!("[[assets]]\nid = \"{id}\"\nsignals = [\"x\", \"y\", \"z\"]\n\n")
        })
        .collect();
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{{dir}}/crash.db"

[pipeline]
ack = "{ack}"

[[sources]]
type = "http"
name = "push"

[[sources]]
type = "mqtt"
name = "broker"
broker = {{ port = 1883, client_id = "{prefix}-usan", keep_alive = "5s", reconnect_delay = "200ms", reconnect_max_delay = "1s" }}
[[sources.subscriptions]]
format = "json"
topic = "{prefix}/+/telemetry"
qos = 1
asset = "{{1}}"
timestamp = "$.ts"
values = "$.v"

[[detectors]]
name = "z"
baseline_frames = 20
algorithm = {{ type = "robust_z", window = 50 }}
threshold = {{ value = 3.0, k = 1, n = 1 }}

{assets}"#
    );
    write_config(dir, "crash.toml", &text)
}

/// What one HTTP client has had acknowledged: its next block and the
/// acknowledged `(signal, ts)` pairs.
struct Pusher {
    asset: usize,
    next_block: i64,
    acked: Vec<(usize, i64)>,
}

impl Pusher {
    fn ts(&self, block: i64, k: i64) -> i64 {
        1_700_000_000_000 + (block * FRAMES_PER_REQUEST + k) * STEP
    }

    /// Request `block`: signals x and y of its frames, and z of the previous
    /// block's frames (left pending by the previous request).
    fn request(&self, block: i64) -> (serde_json::Value, Vec<(usize, i64)>) {
        let mut samples = Vec::new();
        let mut keys = Vec::new();
        let asset = format!("h-{}", self.asset);
        for k in 0..FRAMES_PER_REQUEST {
            let ts = self.ts(block, k);
            for signal in [0, 1] {
                samples.push(serde_json::json!({"asset": asset, "signal": SIGNALS[signal], "ts": ts, "value": value(self.asset, signal, ts)}));
                keys.push((signal, ts));
            }
            if block > 0 {
                let ts = self.ts(block - 1, k);
                samples.push(
                    serde_json::json!({"asset": asset, "signal": "z", "ts": ts, "value": value(self.asset, 2, ts)}),
                );
                keys.push((2, ts));
            }
        }
        (serde_json::json!({ "samples": samples }), keys)
    }

    /// Push until a request fails (the server was killed) or `stop`.
    fn run(&mut self, base: &str, stop: &AtomicBool) {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        while !stop.load(Ordering::Relaxed) {
            let (body, keys) = self.request(self.next_block);
            let sent = client
                .post(format!("{base}/api/v1/samples"))
                .bearer_auth(crate::harness::ADMIN_TOKEN)
                .json(&body)
                .send();
            match sent {
                Ok(response) if response.status() == 202 => {
                    self.acked.extend(keys);
                    self.next_block += 1;
                }
                Ok(response) => panic!("push answered {}: {:?}", response.status(), response.text()),
                // Killed mid-request: not acknowledged. The same block goes
                // again next round (a client's retry): stored once all the same.
                Err(_) => return,
            }
        }
    }
}

/// A QoS 1 publisher that records which messages the broker acknowledged.
struct Publisher {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Publisher {
    fn start(prefix: &str) -> Publisher {
        let mut options = MqttOptions::new(format!("{prefix}-pub"), "127.0.0.1", 1883);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 64);
        let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // Messages in publish order; the event loop sends them in that order.
        let queued: Arc<Mutex<VecDeque<i64>>> = Arc::default();
        let events = {
            let (acked, queued, stop) = (acked.clone(), queued.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut in_flight: HashMap<u16, i64> = HashMap::new();
                for event in connection.iter() {
                    match event {
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            if let Some(ts) = queued.lock().unwrap().pop_front() {
                                in_flight.insert(pkid, ts);
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(ack))) => {
                            if let Some(ts) = in_flight.remove(&ack.pkid) {
                                acked.lock().unwrap().push(ts);
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => {
                            assert!(stop.load(Ordering::Relaxed), "the publisher lost the broker: {e}");
                            return;
                        }
                    }
                }
            })
        };
        let publishing = {
            let (stop, topic) = (stop.clone(), format!("{prefix}/m-1/telemetry"));
            std::thread::spawn(move || {
                let mut ts = 1_700_000_000_000i64;
                while !stop.load(Ordering::Relaxed) {
                    let asset = HTTP_CLIENTS;
                    let v: serde_json::Map<String, serde_json::Value> =
                        SIGNALS.iter().enumerate().map(|(i, s)| (s.to_string(), value(asset, i, ts).into())).collect();
                    let payload = serde_json::json!({ "ts": ts, "v": v }).to_string();
                    queued.lock().unwrap().push_back(ts);
                    client.publish(&topic, QoS::AtLeastOnce, false, payload).unwrap();
                    ts += STEP;
                    // The device's clock: one message every 5 ms, so the broker's
                    // queue for the stopped engine stays far below its limit.
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = client.disconnect();
            })
        };
        Publisher { acked, stop, threads: vec![publishing, events] }
    }

    /// Stop publishing; the timestamps the broker acknowledged, ascending.
    fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let mut acked = self.acked.lock().unwrap().clone();
        acked.sort_unstable();
        acked
    }
}

/// Stored frames of `asset`: ts → values by signal name.
fn stored_frames(db: &rusqlite::Connection, asset: &str) -> HashMap<i64, HashMap<String, f64>> {
    let mut layouts: HashMap<i64, Vec<String>> = HashMap::new();
    let mut stmt = db.prepare("SELECT id, signals FROM layouts").unwrap();
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).unwrap() {
        let (id, json) = row.unwrap();
        layouts.insert(id, serde_json::from_str(&json).unwrap());
    }
    let mut stmt = db
        .prepare("SELECT f.ts, f.layout_id, f.vals FROM frames f JOIN assets a ON a.id = f.asset_id WHERE a.name = ?1")
        .unwrap();
    let rows =
        stmt.query_map([asset], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))).unwrap();
    let mut out = HashMap::new();
    for row in rows {
        let (ts, layout, blob) = row.unwrap();
        let values = layouts[&layout]
            .iter()
            .zip(blob.chunks_exact(8))
            .map(|(name, bytes)| (name.clone(), f64::from_le_bytes(bytes.try_into().unwrap())))
            .collect();
        assert!(out.insert(ts, values).is_none(), "frame {asset}@{ts} stored twice");
    }
    out
}

/// Acknowledged samples that are not stored with their value; wrong values
/// among every stored frame.
fn check_samples(
    frames: &HashMap<i64, HashMap<String, f64>>,
    asset: usize,
    acked: &[(usize, i64)],
) -> (Vec<(usize, i64)>, usize) {
    let lost: Vec<(usize, i64)> = acked
        .iter()
        .copied()
        .filter(|&(signal, ts)| {
            frames.get(&ts).and_then(|f| f.get(SIGNALS[signal])).is_none_or(|v| *v != value(asset, signal, ts))
        })
        .collect();
    let wrong = frames
        .iter()
        .flat_map(|(ts, values)| {
            SIGNALS
                .iter()
                .enumerate()
                .filter(move |(i, s)| values.get(**s).is_some_and(|v| !v.is_nan() && *v != value(asset, *i, *ts)))
        })
        .count();
    (lost, wrong)
}

fn broker_running() -> bool {
    required(
        TcpStream::connect_timeout(&"127.0.0.1:1883".parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "an MQTT broker on 127.0.0.1:1883",
    )
}

#[test]
fn acknowledged_samples_survive_kill_9() {
    if !broker_running() {
        return;
    }
    let rounds: u64 = std::env::var("USAN_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let seed: u64 = std::env::var("USAN_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash loop: {rounds} rounds, USAN_CRASH_SEED={seed}");
    let mut random = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("usan-crash-{}-{}", std::process::id(), seed % 1_000_000);
    let config = config(dir.path(), &prefix);

    let mut pushers: Vec<Pusher> =
        (0..HTTP_CLIENTS).map(|asset| Pusher { asset, next_block: 0, acked: Vec::new() }).collect();
    let mut publisher = None;
    let started = Instant::now();
    for round in 0..rounds {
        let server = Server::serve(&config, &[]);
        if publisher.is_none() {
            // The broker keeps messages for usan's session once it has subscribed once.
            server.wait_until("the MQTT source has subscribed", Duration::from_secs(30), |s| {
                s.get_raw("/metrics").1.contains("usan_source_subscribed{source=\"broker\"} 1")
            });
            publisher = Some(Publisher::start(&prefix));
        }
        let base = server.base.clone();
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(100 + random.next(900));
        std::thread::scope(|scope| {
            for pusher in &mut pushers {
                let (base, stop) = (&base, &stop);
                scope.spawn(move || pusher.run(base, stop));
            }
            // The moment of the crash is the test's input, not a wait for a condition.
            std::thread::sleep(kill_after);
            stop.store(true, Ordering::Relaxed);
            server.kill9();
        });
        eprintln!("round {round}: killed after {kill_after:?}");
    }
    let mqtt_acked = publisher.map(Publisher::finish).unwrap_or_default();

    // A last start takes up the journal and the broker's backlog; a clean stop commits it all.
    let server = Server::serve(&config, &[]);
    let last = *mqtt_acked.last().expect("the broker acknowledged messages");
    let db_path = dir.path().join("crash.db");
    server.wait_until("the broker's backlog is stored", Duration::from_secs(60), |_| {
        let db = crate::harness::open_store(&db_path);
        stored_frames(&db, "m-1").contains_key(&last)
    });
    assert!(server.terminate().success(), "usan stops cleanly");

    let db = crate::harness::open_store(&db_path);
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let journal: i64 = db.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0)).unwrap();
    assert_eq!(journal, 0, "a clean stop releases every journal entry");

    let mut acknowledged = 0;
    for pusher in &pushers {
        let frames = stored_frames(&db, &format!("h-{}", pusher.asset));
        let (lost, wrong) = check_samples(&frames, pusher.asset, &pusher.acked);
        acknowledged += pusher.acked.len();
        assert!(
            lost.is_empty(),
            "h-{}: {} of {} acknowledged samples lost, first {:?}",
            pusher.asset,
            lost.len(),
            pusher.acked.len(),
            &lost[..lost.len().min(5)]
        );
        assert_eq!(wrong, 0, "h-{}: stored values differ from those sent", pusher.asset);
    }
    let frames = stored_frames(&db, "m-1");
    let mqtt_keys: Vec<(usize, i64)> =
        mqtt_acked.iter().flat_map(|&ts| (0..SIGNALS.len()).map(move |s| (s, ts))).collect();
    let (lost, wrong) = check_samples(&frames, HTTP_CLIENTS, &mqtt_keys);
    assert!(
        lost.is_empty(),
        "MQTT: {} of {} acknowledged samples lost, first {:?}",
        lost.len(),
        mqtt_keys.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(wrong, 0, "MQTT: stored values differ from those sent");

    // Alarms and their history: readable, each consistent.
    let mut stmt = db.prepare("SELECT asset, state, raised_at, last_seen_at, frames, notes FROM alarms").unwrap();
    let alarms = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    for (asset, state, raised, seen, frames, notes) in &alarms {
        assert!(asset.starts_with("h-") || asset == "m-1", "alarm on {asset}");
        assert!(["raised", "acknowledged", "assigned", "cleared"].contains(&state.as_str()), "alarm state {state}");
        assert!(raised <= seen && *frames >= 1, "alarm on {asset}: raised {raised}, last seen {seen}, {frames} frames");
        let _: serde_json::Value = serde_json::from_str(notes).unwrap();
    }
    eprintln!(
        "crash loop: {rounds} rounds in {:.0?}: {acknowledged} pushed and {} MQTT samples acknowledged, 0 lost, 0 wrong, {} alarms",
        started.elapsed(),
        mqtt_keys.len(),
        alarms.len()
    );
}
