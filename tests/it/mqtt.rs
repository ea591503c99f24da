//! MQTT against the machine's Mosquitto (127.0.0.1:1883), with publishers
//! usan did not write: `mosquitto_pub`, Eclipse Paho and pysparkplug
//! (`tests/peers/*.py`, run by the Python in `.venv-peers`, which `.ci/run`
//! installs; `USAN_PEER_PYTHON` points elsewhere). Without a broker or the
//! peers these tests skip with a message — except under `CI`, where they fail.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BROKER: &str = "127.0.0.1:1883";

fn broker_running() -> bool {
    required(
        TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "an MQTT broker on 127.0.0.1:1883",
    )
}

/// The Python with paho-mqtt and pysparkplug, if there is one.
fn peer_python() -> Option<PathBuf> {
    python_with("paho.mqtt.client, pysparkplug")
}

/// A topic prefix and client id no other run shares (the broker keeps sessions).
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("usan-test-{name}-{}-{nanos}", std::process::id())
}

fn config(dir: &std::path::Path, port: u16, client_id: &str, subscriptions: &str) -> PathBuf {
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{{dir}}/mqtt.db"
flush_interval = "100ms"

[[sources]]
type = "mqtt"
name = "broker"
broker = {{ port = {port}, client_id = "{client_id}", keep_alive = "2s", reconnect_delay = "200ms", reconnect_max_delay = "1s" }}
{subscriptions}

[[assets]]
id = "pump-1"
signals = ["temp", "flow"]
"#
    );
    write_config(dir, "mqtt.toml", &text)
}

fn metrics(server: &Server) -> String {
    let (status, text) = server.get_raw("/metrics");
    assert_eq!(status, 200);
    text
}

/// The value of a metric line starting with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

fn connected(server: &Server) -> bool {
    metric(&metrics(server), "usan_source_connected{source=\"broker\"}") == 1.0
}

/// Whether the broker has acknowledged the source's subscriptions: from
/// then on, what is published reaches usan.
fn subscribed(server: &Server) -> bool {
    metric(&metrics(server), "usan_source_subscribed{source=\"broker\"}") == 1.0
}

/// Every stored point of `signal`: (ts, value), each from exactly one frame.
fn stored(server: &Server, signal: &str) -> Points {
    let body = server.get(&format!("/api/v1/samples?asset=pump-1&signal={signal}&max_points=100000"));
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["count"], 1, "one stored value per timestamp: {p}");
            (p["ts"].as_i64().unwrap(), p["value"].as_f64().unwrap())
        })
        .collect()
}

/// What the peers publish at step k.
/// Stored points: (ts, value).
type Points = Vec<(i64, f64)>;

fn expected(first: i64, steps: impl Iterator<Item = i64>) -> (Points, Points) {
    steps.map(|k| ((first + 1000 * k, 20.0 + 0.5 * k as f64), (first + 1000 * k, k as f64))).unzip()
}

fn mosquitto_pub(topic: &str, message: &str) {
    mosquitto_pub_to(1883, topic, message);
}

fn mosquitto_pub_to(port: u16, topic: &str, message: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-m", message])
        .status()
        .expect("mosquitto_pub (Debian's mosquitto-clients) runs");
    assert!(status.success());
}

#[test]
fn json_from_mosquitto_pub_and_paho_is_stored_and_bad_payloads_only_counted() {
    if !broker_running() {
        return;
    }
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("json");
    let subscriptions = format!(
        r#"
[[sources.subscriptions]]
format = "json"
topic = "{prefix}/+/telemetry"
asset = "{{1}}"
timestamp = "$.ts"
values = "$"

[[sources.subscriptions]]
format = "json"
topic = "{prefix}/batch"
records = "$.samples"
asset = "$.asset"
timestamp = "$.ts"
signal = "$.signal"
value = "$.value"
"#
    );
    let server = Server::serve(&config(dir.path(), 1883, &prefix, &subscriptions), &[]);
    server.wait_until("the broker acknowledges the subscriptions", Duration::from_secs(20), subscribed);

    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let telemetry = format!("{prefix}/pump-1/telemetry");
    mosquitto_pub(&telemetry, &format!(r#"{{"ts": {first}, "temp": 20.0, "flow": 0}}"#));
    mosquitto_pub(&telemetry, "{this is not JSON");
    mosquitto_pub(&telemetry, r#"{"temp": 1.0}"#);
    mosquitto_pub(&format!("{prefix}/pump-9/telemetry"), &format!(r#"{{"ts": {first}, "temp": 1}}"#));
    mosquitto_pub(&telemetry, &format!(r#"{{"ts": {}, "temp": 20.5, "flow": 1}}"#, first + 1000));
    // Paho: timestamps 2..101 in batches of 10 records per message.
    let out = Command::new(&python)
        .arg(repo().join("tests/peers/mqtt_publish.py"))
        .args(["127.0.0.1", "1883", &format!("{prefix}/batch"), &(first + 2000).to_string(), "100", "1000"])
        .args(["--batch", "10"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    server.wait_until("102 frames are stored", Duration::from_secs(20), |s| stored(s, "flow").len() >= 102);
    let (temp, flow) = expected(first, 0..102);
    // The batch publisher numbers its own steps from 0: shift its values.
    let shifted = |points: Vec<(i64, f64)>, f: fn(i64) -> f64| -> Vec<(i64, f64)> {
        points
            .into_iter()
            .map(|(ts, v)| if ts < first + 2000 { (ts, v) } else { (ts, f((ts - first - 2000) / 1000)) })
            .collect()
    };
    assert_eq!(stored(&server, "temp"), shifted(temp, |k| 20.0 + 0.5 * k as f64));
    assert_eq!(stored(&server, "flow"), shifted(flow, |k| k as f64));

    let text = metrics(&server);
    assert_eq!(metric(&text, "usan_source_malformed_total{source=\"broker\",cause=\"bad JSON\"}"), 1.0, "{text}");
    assert_eq!(metric(&text, "usan_source_malformed_total{source=\"broker\",cause=\"missing or bad timestamp\"}"), 1.0);
    assert_eq!(metric(&text, "usan_samples_dropped_total"), 1.0, "pump-9 is not configured");
    assert_eq!(metric(&text, "usan_source_messages_total{source=\"broker\"}"), 15.0);
    assert_eq!(metric(&text, "usan_source_disconnects_total{source=\"broker\"}"), 0.0);
}

/// A TCP relay to the broker that can cut every connection and refuse new
/// ones for a while: a network outage between usan and its broker.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start() -> Relay {
        Relay::to(BROKER)
    }

    /// A relay to the broker at `upstream` (host:port).
    fn to(upstream: &str) -> Relay {
        let upstream_address = upstream.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, open2) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&upstream_address) else { continue };
                let mut list = open2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(upstream.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Relay { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn qos1_samples_survive_a_cut_connection_exactly_once_and_the_outage_shows() {
    if !broker_running() {
        return;
    }
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("outage");
    let relay = Relay::start();
    let subscriptions = format!(
        r#"
[[sources.subscriptions]]
format = "json"
topic = "{prefix}/+/telemetry"
asset = "{{1}}"
timestamp = "$.ts"
values = "$"
"#
    );
    let server = Server::serve(&config(dir.path(), relay.port, &prefix, &subscriptions), &[]);
    server.wait_until("the broker acknowledges the subscriptions", Duration::from_secs(20), subscribed);

    // 1,000 messages straight to the broker, in three stretches: 0..300 while
    // usan is connected, 300..800 while its link is cut (the broker keeps them
    // for usan's session), 800..1000 after the link is back.
    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let topic = format!("{prefix}/pump-1/telemetry");
    let publish = |from: usize, to: usize| {
        let out = Command::new(&python)
            .arg(repo().join("tests/peers/mqtt_publish.py"))
            .args(["127.0.0.1", "1883", &topic, &first.to_string(), &to.to_string(), "500"])
            .args(["--from", &from.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    publish(0, 300);
    server.wait_until("the first stretch is stored", Duration::from_secs(30), |s| stored(s, "flow").len() >= 299);
    relay.cut();
    server.wait_until("the source notices the outage", Duration::from_secs(10), |s| !connected(s));
    publish(300, 800);
    let during = stored(&server, "flow").len();
    assert!(during <= 300, "nothing arrives while the link is cut: {during}");
    // Five failed attempts, 200 ms apart: the outage lasts over a second.
    server.wait_until("usan keeps trying", Duration::from_secs(20), |s| {
        metric(&metrics(s), "usan_source_connect_failures_total{source=\"broker\",cause=\"cannot connect\"}") >= 5.0
    });
    relay.restore();
    publish(800, 1000);
    server.wait_until("every message is stored", Duration::from_secs(30), |s| stored(s, "flow").len() >= 1000);
    // A barrier: one more message, after everything. Anything the broker
    // redelivers (a duplicate) was queued before it, so it has landed once
    // the barrier is stored.
    publish(1000, 1001);
    server.wait_until("the barrier is stored", Duration::from_secs(30), |s| stored(s, "flow").len() >= 1001);
    let (temp, flow) = expected(first, 0..1001);
    assert_eq!(stored(&server, "temp"), temp);
    assert_eq!(stored(&server, "flow"), flow);

    let text = metrics(&server);
    assert!(metric(&text, "usan_source_disconnects_total{source=\"broker\"}") >= 1.0, "{text}");
    assert!(metric(&text, "usan_source_outage_seconds_total{source=\"broker\"}") >= 1.0, "{text}");
    assert_eq!(metric(&text, "usan_source_connected{source=\"broker\"}"), 1.0);
}

#[test]
fn sparkplug_b_aliases_resolve_and_a_sequence_gap_brings_a_rebirth() {
    if !broker_running() {
        return;
    }
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let group = unique("spb");
    let subscriptions = format!(
        r#"
[[sources.subscriptions]]
format = "sparkplug_b"
topic = "spBv1.0/{group}/#"
asset = "{{device}}"
"#
    );
    let server = Server::serve(&config(dir.path(), 1883, &group, &subscriptions), &[]);
    server.wait_until("the broker acknowledges the subscriptions", Duration::from_secs(20), subscribed);

    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let out = Command::new(&python)
        .arg(repo().join("tests/peers/sparkplug_edge.py"))
        .args(["127.0.0.1", "1883", &group, "edge-1", "pump-1", &first.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the edge node: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_until("18 frames are stored", Duration::from_secs(20), |s| stored(s, "flow").len() >= 18);
    let (temp, flow) = expected(first, 0..18);
    assert_eq!(stored(&server, "temp"), temp);
    assert_eq!(stored(&server, "flow"), flow);
    let text = metrics(&server);
    assert_eq!(metric(&text, "usan_source_malformed_total{source=\"broker\",cause=\"sequence gap\"}"), 1.0, "{text}");
    assert_eq!(metric(&text, "usan_source_rebirths_requested_total{source=\"broker\"}"), 1.0, "{text}");
}

fn sink_config(dir: &std::path::Path, port: u16, prefix: &str, spool_max_bytes: u64) -> PathBuf {
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{{dir}}/sink.db"
flush_interval = "100ms"

[[sources]]
type = "http"
name = "push"

[[detectors]]
name = "z"
baseline_frames = 5
algorithm = {{ type = "robust_z", window = 20 }}
threshold = {{ value = 0.0, k = 1, n = 1 }}

[[sinks]]
type = "mqtt"
name = "events"
broker = {{ port = {port}, keep_alive = "2s", reconnect_delay = "200ms", reconnect_max_delay = "1s" }}
topic = "{prefix}/{{asset}}/{{event}}"
findings = true
spool = "{{dir}}/spool"
spool_max_bytes = {spool_max_bytes}

[[sinks]]                     # the same events, counted
type = "jsonl"
path = "{{dir}}/events.jsonl"
findings = true

[[assets]]
id = "pump-1"
signals = ["temp", "flow"]
"#
    );
    write_config(dir, "sink.toml", &text)
}

/// Push frames `from..to` (one per second of source time after `first`).
fn push_frames(server: &Server, first: i64, steps: std::ops::Range<i64>) {
    let samples: Vec<serde_json::Value> = steps
        .flat_map(|k| {
            let ts = first + 1000 * k;
            [
                serde_json::json!({"asset": "pump-1", "signal": "temp", "ts": ts, "value": 20.0 + (k % 7) as f64}),
                serde_json::json!({"asset": "pump-1", "signal": "flow", "ts": ts, "value": (k % 5) as f64}),
            ]
        })
        .collect();
    let (status, body) = server.post("/api/v1/samples", &serde_json::json!({ "samples": samples }));
    assert_eq!(status, 202, "{body}");
}

fn sink_metric(server: &Server, name: &str) -> f64 {
    metric(&metrics(server), &format!("{name}{{sink=\"events\"}}"))
}

/// `mosquitto_sub` on `prefix/#`, its lines (one payload each) collected as they come.
struct Subscriber {
    child: std::process::Child,
    port: u16,
    prefix: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Subscriber {
    /// Subscribed once a probe published after the start comes back.
    fn start(prefix: &str) -> Subscriber {
        Subscriber::start_on(1883, prefix)
    }

    /// Subscribed to `prefix/#` at the broker on `port`.
    fn start_on(port: u16, prefix: &str) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", &format!("{prefix}/#")])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (Debian's mosquitto-clients) runs");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child.stdout.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let subscriber = Subscriber { child, port, prefix: prefix.to_string(), lines };
        // Until the subscription is in place probes are lost: send them until one arrives.
        let mut sent = 0;
        wait_for("mosquitto_sub is subscribed", Duration::from_secs(20), || {
            sent += 1;
            mosquitto_pub_to(port, &format!("{prefix}/probe"), &format!(r#"{{"probe": {sent}}}"#));
            subscriber.has_probe(None)
        });
        subscriber
    }

    fn has_probe(&self, number: Option<u64>) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["probe"].as_u64().is_some_and(|n| number.is_none_or(|wanted| n == wanted)))
    }

    /// The finding timestamps received, in arrival order, once everything
    /// the broker had accepted before this call has arrived: a last probe,
    /// published now, is queued behind it.
    fn finding_times(self) -> Vec<i64> {
        let barrier = 1_000_000;
        mosquitto_pub_to(self.port, &format!("{}/probe", self.prefix), &format!(r#"{{"probe": {barrier}}}"#));
        wait_for("the subscriber has everything", Duration::from_secs(30), || self.has_probe(Some(barrier)));
        let lines = self.lines.lock().unwrap().clone();
        lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == "finding")
            .map(|v| v["ts"].as_i64().unwrap())
            .collect()
    }
}

#[test]
fn findings_wait_in_the_spool_through_an_outage_and_arrive_in_order() {
    if !broker_running() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("sink");
    let relay = Relay::start();
    let server = Server::serve(&sink_config(dir.path(), relay.port, &prefix, 100 << 20), &[]);
    server
        .wait_until("the sink is connected", Duration::from_secs(20), |s| sink_metric(s, "usan_sink_connected") == 1.0);
    let subscriber = Subscriber::start(&prefix);
    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let findings = |s: &Server| metric(&metrics(s), "usan_findings_total");

    push_frames(&server, first, 0..30);
    // The sink carries alarm events too: delivered ≥ findings.
    server.wait_until("live findings are delivered", Duration::from_secs(20), |s| {
        findings(s) > 0.0
            && sink_metric(s, "usan_sink_backlog") == 0.0
            && sink_metric(s, "usan_sink_delivered_total") >= findings(s)
    });
    let delivered_before = sink_metric(&server, "usan_sink_delivered_total");

    relay.cut();
    push_frames(&server, first, 30..90);
    server.wait_until("the findings wait in the spool", Duration::from_secs(20), |s| {
        sink_metric(s, "usan_sink_backlog") >= 50.0
    });
    assert!(sink_metric(&server, "usan_sink_delivered_total") <= delivered_before + 64.0);
    // Five failed attempts, 200 ms apart: the outage lasts over a second.
    server.wait_until("the sink keeps trying", Duration::from_secs(20), |s| {
        metric(&metrics(s), "usan_sink_connect_failures_total{sink=\"events\",cause=\"cannot connect\"}") >= 5.0
    });
    relay.restore();
    server.wait_until("the backlog is delivered", Duration::from_secs(30), |s| {
        sink_metric(s, "usan_sink_backlog") == 0.0 && sink_metric(s, "usan_sink_delivered_total") >= findings(s)
    });
    let total = findings(&server) as usize;
    let text = metrics(&server);
    assert!(metric(&text, "usan_sink_disconnects_total{sink=\"events\"}") >= 1.0, "{text}");
    assert!(metric(&text, "usan_sink_outage_seconds_total{sink=\"events\"}") >= 1.0, "{text}");
    assert_eq!(metric(&text, "usan_sink_overflow_total{sink=\"events\"}"), 0.0);

    // At least once, in order: every finding arrived, first arrivals in
    // timestamp order; a window cut mid-flight may arrive twice.
    let received = subscriber.finding_times();
    let mut first_arrivals = Vec::new();
    for ts in &received {
        if !first_arrivals.contains(ts) {
            first_arrivals.push(*ts);
        }
    }
    assert_eq!(first_arrivals.len(), total, "{received:?}");
    assert!(first_arrivals.windows(2).all(|w| w[0] < w[1]), "{first_arrivals:?}");
    assert!(received.len() - total <= 64, "{} duplicates", received.len() - total);
}

#[test]
fn a_full_spool_refuses_and_counts_instead_of_growing() {
    if !broker_running() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("overflow");
    let relay = Relay::start();
    relay.cut();
    let server = Server::serve(&sink_config(dir.path(), relay.port, &prefix, 8192), &[]);
    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    push_frames(&server, first, 0..100);
    server.wait_until("the spool overflows", Duration::from_secs(20), |s| {
        sink_metric(s, "usan_sink_overflow_total") > 0.0
    });
    let events = || std::fs::read_to_string(dir.path().join("events.jsonl")).map_or(0, |t| t.lines().count()) as f64;
    // The sinks write each batch of events in turn: once every frame is
    // scored and the file holds every finding, the counts settle.
    server.wait_until("every event is either waiting or counted as refused", Duration::from_secs(20), |s| {
        let text = metrics(s);
        let waiting = metric(&text, "usan_sink_backlog{sink=\"events\"}");
        let refused = metric(&text, "usan_sink_overflow_total{sink=\"events\"}");
        metric(&text, "usan_frames_total") >= 99.0
            && events() >= metric(&text, "usan_findings_total")
            && waiting + refused == events()
    });
    let backlog = sink_metric(&server, "usan_sink_backlog");
    let overflow = sink_metric(&server, "usan_sink_overflow_total");
    assert!(overflow > 0.0 && backlog > 0.0, "{backlog} waiting, {overflow} refused");
    let spool = std::fs::metadata(dir.path().join("spool/records.log")).unwrap().len();
    assert!(spool <= 8192, "the spool holds {spool} bytes, over its cap");

    let subscriber = Subscriber::start(&prefix);
    relay.restore();
    server.wait_until("the backlog is delivered", Duration::from_secs(30), |s| {
        sink_metric(s, "usan_sink_backlog") == 0.0
    });
    // Delivery is at least once: a record whose acknowledgement the cut
    // connection lost comes again, so duplicates are counted apart.
    let received = subscriber.finding_times();
    let mut first_arrivals: Vec<i64> = Vec::new();
    for ts in &received {
        if !first_arrivals.contains(ts) {
            first_arrivals.push(*ts);
        }
    }
    assert!(
        !first_arrivals.is_empty() && first_arrivals.len() as f64 <= backlog,
        "{} findings arrived of {backlog} events waiting: {received:?}",
        first_arrivals.len()
    );
    assert!(first_arrivals.windows(2).all(|w| w[0] < w[1]), "in order: {received:?}");
    assert!(received.len() - first_arrivals.len() <= 64, "{} duplicates", received.len() - first_arrivals.len());
}

/// The disk under a sink's spool fills up while its broker is away: events
/// that do not fit are refused and counted (never lost silently), usan runs
/// on and takes pushes; once space returns the spool takes events again and
/// delivers everything it holds, in order.
#[test]
fn a_full_disk_under_the_spool_refuses_and_counts_events_then_recovers() {
    if !broker_running() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk_dir = dir.path().join("disk");
    std::fs::create_dir_all(&disk_dir).unwrap();
    let disk = crate::faults::SmallDisk::mount(&disk_dir, "256k");
    if !required(disk.is_some(), "permission to mount a tmpfs (root)") {
        return;
    }
    let disk = disk.unwrap();
    let prefix = unique("spoolfull");
    let relay = Relay::start();
    relay.cut();
    let config = sink_config(dir.path(), relay.port, &prefix, 100 << 20);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("spool = \"{}/spool\"", dir.path().display()),
        &format!("spool = \"{}/spool\"", disk_dir.display()),
    );
    assert!(text.contains(&disk_dir.display().to_string()), "the spool is on the small disk");
    std::fs::write(&config, text).unwrap();
    let server = Server::serve(&config, &[]);
    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut k = 0;
    while sink_metric(&server, "usan_sink_overflow_total") == 0.0 {
        assert!(k < 20_000, "the disk never filled");
        push_frames(&server, first, k..k + 200);
        k += 200;
        server.wait_until("the frames are scored", Duration::from_secs(30), |s| {
            metric(&metrics(s), "usan_frames_total") >= (k - 1) as f64
        });
    }
    let (status, _) = server.get_raw("/api/v1/health");
    assert_eq!(status, 200, "usan runs on");
    let waiting = sink_metric(&server, "usan_sink_backlog");
    assert!(waiting > 0.0);

    // Space returns: events are spooled again.
    disk.resize("64m");
    let refused = sink_metric(&server, "usan_sink_overflow_total");
    push_frames(&server, first, k..k + 50);
    server.wait_until("new events are spooled", Duration::from_secs(30), |s| {
        sink_metric(s, "usan_sink_backlog") > waiting
    });
    assert_eq!(sink_metric(&server, "usan_sink_overflow_total"), refused, "nothing refused once there is room");

    let subscriber = Subscriber::start(&prefix);
    relay.restore();
    server.wait_until("the backlog is delivered", Duration::from_secs(60), |s| {
        sink_metric(s, "usan_sink_backlog") == 0.0
    });
    let backlog = sink_metric(&server, "usan_sink_delivered_total");
    let received = subscriber.finding_times();
    let mut seen = std::collections::HashSet::new();
    let first_arrivals: Vec<i64> = received.iter().copied().filter(|ts| seen.insert(*ts)).collect();
    assert!(first_arrivals.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(first_arrivals.last().is_some_and(|&ts| ts >= first + 1000 * k), "the events after the recovery arrived");
    assert!(first_arrivals.len() as f64 <= backlog, "{} findings, {backlog} delivered", first_arrivals.len());
    drop(disk);
}

/// The spool's records on disk, each as (offset, bytes), from `records.log`'s format.
fn spool_records(path: &std::path::Path) -> Vec<(u64, Vec<u8>)> {
    let log = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= log.len() {
        let length = u32::from_le_bytes(log[at..at + 4].try_into().unwrap()) as usize;
        out.push((at as u64, log[at + 8..at + 8 + length].to_vec()));
        at += 8 + length;
    }
    out
}

/// Damage found at start is set aside and the rest runs: a spool record
/// with a flipped byte is kept aside (every other waiting event is
/// delivered, in order), and a model file that is not a model is refused
/// (the detector learns anew and raises its findings).
#[test]
fn a_damaged_spool_record_and_model_file_are_set_aside_and_the_rest_runs() {
    if !broker_running() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("damaged");
    let relay = Relay::start();
    relay.cut();
    let models = dir.path().join("models/pump-1");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("z.json"), b"{\"format\": 1, \"detector\": {\"type\": \"robust_z\"").unwrap();
    let config = sink_config(dir.path(), relay.port, &prefix, 100 << 20);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[pipeline]\nmodels_dir = \"{}/models\"\n", dir.path().display()));
    std::fs::write(&config, text).unwrap();

    let server = Server::serve(&config, &[]);
    assert_eq!(metric(&metrics(&server), "usan_models_refused_total"), 1.0);
    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    push_frames(&server, first, 0..60);
    server.wait_until("findings wait in the spool", Duration::from_secs(20), |s| {
        sink_metric(s, "usan_sink_backlog") >= 10.0
    });
    assert!(server.terminate().success());

    let log = dir.path().join("spool/records.log");
    let records = spool_records(&log);
    let findings: Vec<(u64, i64)> = records
        .iter()
        .filter_map(|(at, bytes)| {
            let json = &bytes[bytes.iter().position(|&b| b == b'{').unwrap()..];
            let event: serde_json::Value = serde_json::from_slice(json).unwrap();
            (event["event"] == "finding").then(|| (*at, event["ts"].as_i64().unwrap()))
        })
        .collect();
    assert!(findings.len() >= 10, "{} findings spooled", findings.len());
    // Flip a byte inside the third finding's record.
    let (damaged_at, damaged_ts) = findings[2];
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"#", damaged_at + 12).unwrap();
    drop(file);

    let subscriber = Subscriber::start(&prefix);
    relay.restore();
    let server = Server::serve(&config, &[]);
    server.wait_until("the backlog is delivered", Duration::from_secs(30), |s| {
        sink_metric(s, "usan_sink_backlog") == 0.0 && sink_metric(s, "usan_sink_delivered_total") > 0.0
    });
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("records.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged record is kept aside: {aside:?}");
    let received = subscriber.finding_times();
    let expected: Vec<i64> = findings.iter().map(|&(_, ts)| ts).filter(|&ts| ts != damaged_ts).collect();
    assert_eq!(received, expected, "every other waiting finding, in order, once");
}

/// A Mosquitto of the test's own on `port`, without persistence: when it
/// stops, its sessions and subscriptions are gone.
struct OwnBroker {
    child: std::process::Child,
}

impl OwnBroker {
    fn start(dir: &std::path::Path, port: u16) -> OwnBroker {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("user root\npersistence false\nlistener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
        .unwrap();
        let child = Command::new(mosquitto_binary().expect("mosquitto is installed"))
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the broker listens", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        OwnBroker { child }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pump-1`'s finding timestamps in `lines` (JSON events), in order.
fn pump_findings(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "finding" && v["asset"] == "pump-1")
        .map(|v| v["ts"].as_i64().unwrap())
        .collect()
}

/// The broker goes down mid-stream (its process killed, its sessions lost)
/// for `USAN_BROKER_OUTAGE_SECS` (3 s by default; 600 for the ten-minute
/// run in BENCHMARKS.md) while findings keep coming: the sink's spool holds
/// them and replays every one, in order, to the restarted broker; the
/// source reconnects with backoff, subscribes again and stores what is
/// published after, exactly once.
#[test]
fn a_broker_down_mid_stream_gets_the_whole_spool_in_order_and_the_source_subscribes_again() {
    if !broker_running() || mosquitto_binary().is_none() {
        return;
    }
    let Some(python) = peer_python() else { return };
    let outage =
        Duration::from_secs(std::env::var("USAN_BROKER_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prefix = unique("down");
    let mut broker = OwnBroker::start(dir.path(), port);
    // The sink reaches the broker through a relay, held shut after the
    // restart until the new subscriber listens: nothing replayed is missed.
    let relay = Relay::to(&format!("127.0.0.1:{port}"));
    // The sink test's plant, with an MQTT source and an asset it feeds.
    let config = sink_config(dir.path(), relay.port, &prefix, 100 << 20);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[[sources]]
type = "mqtt"
name = "broker"
broker = {{ port = {port}, client_id = "{prefix}-usan", keep_alive = "2s", reconnect_delay = "200ms", reconnect_max_delay = "1s" }}
[[sources.subscriptions]]
format = "json"
topic = "{prefix}/+/telemetry"
qos = 1
asset = "{{1}}"
timestamp = "$.ts"
values = "$"

[[assets]]
id = "press-1"
signals = ["temp", "flow"]
"#
    ));
    std::fs::write(&config, text).unwrap();
    let server = Server::serve(&config, &[]);
    server.wait_until("the source is subscribed", Duration::from_secs(20), subscribed);
    let subscriber = Subscriber::start_on(port, &prefix);
    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let publish = |from: usize, to: usize| {
        let out = Command::new(&python)
            .arg(repo().join("tests/peers/mqtt_publish.py"))
            .args(["127.0.0.1", &port.to_string(), &format!("{prefix}/press-1/telemetry")])
            .args([&first.to_string(), &to.to_string(), "500", "--from", &from.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let press_stored = |s: &Server| -> Points {
        let body = s.get("/api/v1/samples?asset=press-1&signal=flow&max_points=100000");
        body["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["ts"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
            .collect()
    };
    let truth = || {
        pump_findings(
            &std::fs::read_to_string(dir.path().join("events.jsonl"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        )
    };

    // Before: everything flows.
    publish(0, 50);
    push_frames(&server, first, 0..40);
    server.wait_until("press-1's first stretch is stored", Duration::from_secs(30), |s| press_stored(s).len() >= 50);
    server.wait_until("the findings so far reached the subscriber", Duration::from_secs(30), |_| {
        let seen = pump_findings(&subscriber.lines.lock().unwrap());
        !seen.is_empty() && seen.len() >= truth().len()
    });

    // The broker goes down; findings keep coming for the whole outage.
    relay.cut();
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let before = subscriber.lines.lock().unwrap().clone();
    drop(subscriber);
    server.wait_until("the source sees the outage", Duration::from_secs(20), |s| !connected(s));
    let started = std::time::Instant::now();
    let mut k = 40;
    // A frame (one second of source time) every 200 ms, at least ten: ten
    // minutes fit in the hour before now.
    while started.elapsed() < outage || k < 50 {
        push_frames(&server, first, k..k + 1);
        k += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    server.wait_until("the findings wait in the spool", Duration::from_secs(20), |s| {
        sink_metric(s, "usan_sink_backlog") > 0.0 && metric(&metrics(s), "usan_frames_total") >= k as f64 - 1.0
    });
    let failures =
        metric(&metrics(&server), "usan_source_connect_failures_total{source=\"broker\",cause=\"cannot connect\"}");
    assert!(failures >= 2.0, "the source kept trying: {failures}");

    // The broker is back (empty: no sessions); the sink is let through once
    // a new subscriber listens.
    broker = OwnBroker::start(dir.path(), port);
    let subscriber = Subscriber::start_on(port, &prefix);
    relay.restore();
    server.wait_until("the source subscribes again", Duration::from_secs(30), |s| connected(s) && subscribed(s));
    publish(50, 100);
    server.wait_until("press-1's second stretch is stored", Duration::from_secs(30), |s| press_stored(s).len() >= 100);
    let (_, flow) = expected(first, 0..100);
    assert_eq!(press_stored(&server), flow, "every message before and after the outage, once");
    server.wait_until("the spool is replayed", Duration::from_secs(60), |s| sink_metric(s, "usan_sink_backlog") == 0.0);

    let barrier = 1_000_000;
    mosquitto_pub_to(port, &format!("{prefix}/probe"), &format!(r#"{{"probe": {barrier}}}"#));
    wait_for("the subscriber has everything", Duration::from_secs(30), || subscriber.has_probe(Some(barrier)));
    let mut received = pump_findings(&before);
    received.extend(pump_findings(&subscriber.lines.lock().unwrap()));
    let mut seen = std::collections::HashSet::new();
    let first_arrivals: Vec<i64> = received.iter().copied().filter(|ts| seen.insert(*ts)).collect();
    let truth = truth();
    let before_outage = pump_findings(&before).len();
    assert!(truth.len() > before_outage, "findings during the outage: {}", truth.len() - before_outage);
    assert_eq!(first_arrivals, truth, "every finding, in order");
    assert!(received.len() - truth.len() <= 64, "{} duplicates", received.len() - truth.len());
    eprintln!(
        "broker down {outage:?}: {} findings, {} of them spooled during the outage, all delivered in order, {} duplicates; the source stored 100 of 100 messages",
        truth.len(),
        truth.len() - before_outage,
        received.len() - truth.len()
    );
    drop(broker);
}

/// A private Mosquitto with TLS and a password file, on its own port.
struct SecureBroker {
    child: std::process::Child,
    port: u16,
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(program: &str, args: &[&str], dir: &std::path::Path) {
    let out = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn secure_broker(dir: &std::path::Path) -> SecureBroker {
    let openssl = |args: &[&str]| run("openssl", args, dir);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=usan test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    run("mosquitto_passwd", &["-c", "-b", "passwd", "usan", "s3cret"], dir);
    let port = free_port();
    let conf = format!(
        "user root\npersistence false\nlistener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nallow_anonymous false\npassword_file {d}/passwd\n",
        d = dir.display()
    );
    std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
    let child = Command::new(mosquitto_binary().unwrap())
        .args(["-c", "mosquitto.conf"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the TLS broker listens", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    SecureBroker { child, port }
}

fn on_path(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

/// The broker's program: on PATH, or where Debian puts it (/usr/sbin is not always on PATH).
fn mosquitto_binary() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/mosquitto");
    if on_path("mosquitto") { Some(PathBuf::from("mosquitto")) } else { debian.exists().then_some(debian) }
}

#[test]
fn tls_and_a_password_are_used_and_a_wrong_password_never_connects() {
    let tools =
        ["openssl", "mosquitto_passwd", "mosquitto_pub"].iter().all(|t| on_path(t)) && mosquitto_binary().is_some();
    if !required(tools, "openssl and Mosquitto's programs (Debian's openssl, mosquitto, mosquitto-clients)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = secure_broker(dir.path());
    let prefix = unique("tls");
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{{dir}}/tls.db"
flush_interval = "100ms"

[[sources]]
type = "mqtt"
name = "secure"
broker = {{ port = {port}, client_id = "{prefix}-ok", username = "usan", password = "s3cret", tls = {{ ca = "{{dir}}/ca.pem" }}, reconnect_delay = "200ms", reconnect_max_delay = "1s" }}
[[sources.subscriptions]]
format = "json"
topic = "{prefix}/+/telemetry"
asset = "{{1}}"
timestamp = "$.ts"
values = "$"

[[sources]]
type = "mqtt"
name = "intruder"
broker = {{ port = {port}, client_id = "{prefix}-bad", username = "usan", password = "guess", tls = {{ ca = "{{dir}}/ca.pem" }}, reconnect_delay = "200ms", reconnect_max_delay = "1s" }}
[[sources.subscriptions]]
format = "json"
topic = "{prefix}/#"
asset = "pump-1"
values = "$"

[[assets]]
id = "pump-1"
signals = ["temp", "flow"]
"#,
        port = broker.port
    );
    let server = Server::serve(&write_config(dir.path(), "tls.toml", &text), &[]);
    server.wait_until("the source is connected and subscribed over TLS", Duration::from_secs(20), |s| {
        metric(&metrics(s), "usan_source_subscribed{source=\"secure\"}") == 1.0
    });
    let first = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let ca = dir.path().join("ca.pem");
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "--cafile", ca.to_str().unwrap()])
        .args(["-u", "usan", "-P", "s3cret", "-q", "1", "-t", &format!("{prefix}/pump-1/telemetry")])
        .args(["-m", &format!(r#"{{"ts": {first}, "temp": 20.0, "flow": 0}}"#)])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_until("the TLS message is stored", Duration::from_secs(20), |s| !stored(s, "flow").is_empty());
    assert_eq!(stored(&server, "temp"), vec![(first, 20.0)]);
    let text = metrics(&server);
    assert_eq!(metric(&text, "usan_source_connected{source=\"intruder\"}"), 0.0, "a wrong password never connects");
    assert_eq!(metric(&text, "usan_source_messages_total{source=\"intruder\"}"), 0.0);
}
