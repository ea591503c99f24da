//! Bad input from a configuration, an API client or a peer: a clear error
//! or a counted rejection, never a panic, a hang or a held connection.
//! Each test is a failure once measured on usan (issue 23), kept fixed.

use crate::harness::{Server, free_port, usan, wait_for, write_config};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The store goes beside the configuration, in the test's folder.
const PLANT: &str = r#"
[[sources]]
type = "http"
name = "push"

[[assets]]
id = "pump-1"
signals = ["temp"]
"#;

/// `usan check` and `usan serve` refuse the same settings with the same
/// one-line reasons, and `serve` never panics on them.
#[test]
fn out_of_range_settings_and_unsafe_ids_are_refused_by_check_and_serve_alike() {
    let cases = [
        ("[pipeline]\nqueue_capacity = 9223372036854775807\n", "queue_capacity must be between 1 and 1000000"),
        ("[pipeline]\nworkers = 0\n", "workers must be between 1 and 1024"),
        ("[store]\ntype = \"sqlite\"\nflush_interval = \"0s\"\n", "flush_interval must be between 1ms and 1h"),
        ("[server]\nheader_timeout = \"200years\"\n", "longer than 100 years"),
        ("[[assets]]\nid = \"../escaped\"\nsignals = [\"x\"]\n", "asset id `../escaped` has a `..` segment"),
        ("[[assets]]\nid = \"a\\u0000b\"\nsignals = [\"x\"]\n", "asset id `a\\0b` has `\\0`"),
        ("[[assets]]\nid = \"esc\\u001b[31m\"\nsignals = [\"x\"]\n", "has `\\u{1b}`"),
        (
            "[[sources]]\ntype = \"mqtt\"\nname = \"m\"\nbroker = { keep_alive = \"100ms\" }\n[[sources.subscriptions]]\nformat = \"json\"\ntopic = \"t\"\nasset = \"pump-1\"\nvalues = \"$\"\n",
            "keep_alive must be between 1s and 18h 12m 15s",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (extra, expected)) in cases.iter().enumerate() {
        let text = format!("{PLANT}\n{extra}");
        let path = write_config(dir.path(), &format!("case-{i}.toml"), &text);
        let check = usan(&["check", path.to_str().unwrap()]);
        let check_err = String::from_utf8_lossy(&check.stderr).to_string() + &String::from_utf8_lossy(&check.stdout);
        assert!(!check.status.success(), "check accepted case {i}: {extra}");
        assert!(check_err.contains(expected), "check, case {i}: expected `{expected}` in\n{check_err}");
        let port = free_port().to_string();
        let serve = usan(&["serve", "--config", path.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")]);
        let serve_err = String::from_utf8_lossy(&serve.stderr);
        assert_eq!(serve.status.code(), Some(1), "serve, case {i}: exit code (101 is a panic)\n{serve_err}");
        assert!(serve_err.contains(expected), "serve, case {i}: expected `{expected}` in\n{serve_err}");
    }
}

#[test]
fn pushed_timestamps_before_1970_and_malformed_path_ids_get_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::serve(&write_config(dir.path(), "plant.toml", PLANT), &[]);
    for ts in [json!(-1), json!(i64::MIN), json!("0001-01-01T00:00:00Z")] {
        let sample = json!({"samples": [{"asset": "pump-1", "signal": "temp", "ts": ts, "value": 1.0}]});
        let (status, body) = server.post("/api/v1/samples", &sample);
        assert_eq!(status, 422, "ts {ts}: {body}");
        assert!(body["details"][0].as_str().unwrap().contains("before 1970-01-01"), "{body}");
    }
    // A huge unknown name is not echoed back whole.
    let long = "x".repeat(100_000);
    let (status, body) =
        server.post("/api/v1/samples", &json!({"samples": [{"asset": long, "signal": "temp", "ts": 0, "value": 1.0}]}));
    assert_eq!(status, 422);
    assert!(body.to_string().len() < 1000, "the error echoes the name: {} bytes", body.to_string().len());

    for path in ["/api/v1/alarms/not-a-number", "/api/v1/alarms/99999999999999999999999"] {
        let (status, text) = server.get_raw(path);
        assert_eq!(status, 400, "{path}: {text}");
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert!(body["error"].is_string(), "{path}: {body}");
    }
}

/// A client that opens a connection and trickles its headers, or never
/// finishes its body, is cut off; the server keeps answering others.
#[test]
fn stalled_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{PLANT}\n[server]\nheader_timeout = \"1s\"\nrequest_timeout = \"1s\"\n");
    let server = Server::serve(&write_config(dir.path(), "plant.toml", &text), &[]);
    let address = server.base.trim_start_matches("http://").to_string();

    // Slow loris: half a request line, then nothing.
    let mut loris = TcpStream::connect(&address).unwrap();
    loris.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    loris.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    // The server closes it (EOF) or answers 408 and closes; it does not hold it.
    let _ = loris.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A body announced and never sent.
    let mut stall = TcpStream::connect(&address).unwrap();
    stall
        .write_all(
            format!(
                "POST /api/v1/samples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"samples\": [",
                crate::harness::ADMIN_TOKEN
            )
            .as_bytes(),
        )
        .unwrap();
    stall.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let _ = stall.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(server.get("/api/v1/health")["status"], "ok");
}

/// With `max_connections = 1`, a second client is served only once the
/// first connection has closed (it waits; nothing is refused or lost).
#[test]
fn connections_beyond_the_bound_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{PLANT}\n[server]\nmax_connections = 1\nheader_timeout = \"2s\"\n");
    let server = Server::serve(&write_config(dir.path(), "plant.toml", &text), &[]);
    let address = server.base.trim_start_matches("http://").to_string();
    // The holder is served (so it holds the one connection), then stays idle.
    let mut holder = TcpStream::connect(&address).unwrap();
    holder.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    holder.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"status\":\"ok\"") {
        let mut chunk = [0u8; 512];
        let n = holder.read(&mut chunk).unwrap();
        assert!(n > 0, "the holder was closed before it was answered");
        seen.extend_from_slice(&chunk[..n]);
    }
    let base = server.base.clone();
    let second = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let status = client.get(format!("{base}/api/v1/health")).send().unwrap().status();
        (status, Instant::now())
    });
    let mut rest = Vec::new();
    let _ = holder.read_to_end(&mut rest); // the server closes the idle holder after header_timeout
    let closed = Instant::now();
    let (status, answered) = second.join().unwrap();
    assert_eq!(status, 200);
    assert!(answered >= closed, "the second client was served while the bound was taken");
}

/// SIGTERM stops the server within 10 s while its MQTT source retries a
/// broker that is not there.
#[test]
fn sigterm_stops_the_server_while_a_source_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = format!(
        "{PLANT}\n[[sources]]\ntype = \"mqtt\"\nname = \"gone\"\nbroker = {{ port = {port}, reconnect_delay = \"50ms\" }}\n[[sources.subscriptions]]\nformat = \"json\"\ntopic = \"t/#\"\nasset = \"pump-1\"\nvalues = \"$\"\n"
    );
    let server = Server::serve(&write_config(dir.path(), "plant.toml", &text), &[]);
    wait_for("the source has failed to connect", Duration::from_secs(30), || {
        server.get_raw("/metrics").1.contains("usan_source_connect_failures_total{source=\"gone\"")
    });
    let asked = Instant::now();
    let pid = server.pid();
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    let status = server.wait(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?} after {:?}", asked.elapsed());
}

/// An MQTT message over `max_message_bytes` is refused, counted and
/// acknowledged: the broker does not send it again, and what follows it is
/// stored (it used to be redelivered at every reconnect, blocking the rest).
#[test]
fn an_oversized_mqtt_message_is_counted_and_not_redelivered() {
    if !crate::harness::required(
        TcpStream::connect_timeout(&"127.0.0.1:1883".parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "an MQTT broker on 127.0.0.1:1883",
    ) {
        return;
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("usan-test-oversized-{}-{nanos}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{PLANT}\n[[sources]]\ntype = \"mqtt\"\nname = \"m\"\nmax_message_bytes = 1048576\nbroker = {{ client_id = \"{prefix}\", reconnect_delay = \"100ms\" }}\n[[sources.subscriptions]]\nformat = \"json\"\ntopic = \"{prefix}/+\"\nqos = 1\nasset = \"{{1}}\"\ntimestamp = \"$.ts\"\nvalues = \"$.v\"\n"
    );
    let config = write_config(dir.path(), "plant.toml", &text);
    let publish = |ts: i64, padding: usize| {
        let message = format!("{{\"ts\": {ts}, \"v\": {{\"temp\": 1.5}}, \"pad\": \"{}\"}}", "x".repeat(padding));
        let file = dir.path().join("message.json");
        std::fs::write(&file, message).unwrap();
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", "1883", "-q", "1", "-t", &format!("{prefix}/pump-1"), "-f"])
            .arg(&file)
            .status()
            .expect("mosquitto_pub (Debian's mosquitto-clients) runs");
        assert!(status.success());
    };
    let too_large = |server: &Server| {
        let text = server.get_raw("/metrics").1;
        text.lines()
            .find(|l| l.starts_with("usan_source_malformed_total{source=\"m\",cause=\"too large\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let frames = |server: &Server| server.get("/api/v1/assets/pump-1")["frames"].as_u64().unwrap_or(0);

    let server = Server::serve(&config, &[]);
    wait_for("the source is subscribed", Duration::from_secs(30), || {
        server.get_raw("/metrics").1.contains("usan_source_subscribed{source=\"m\"} 1")
    });
    let t0 = 1_700_000_000_000i64;
    publish(t0, 2 * 1024 * 1024);
    publish(t0 + 1000, 10);
    publish(t0 + 2000, 10);
    wait_for("the messages after the oversized one are taken", Duration::from_secs(30), || frames(&server) >= 1);
    assert_eq!(too_large(&server), 1.0);
    assert!(server.terminate().success());

    // The broker kept nothing for the session: the next start sees no oversized message.
    let server = Server::serve(&config, &[]);
    wait_for("the source is subscribed again", Duration::from_secs(30), || {
        server.get_raw("/metrics").1.contains("usan_source_subscribed{source=\"m\"} 1")
    });
    publish(t0 + 3000, 10);
    publish(t0 + 4000, 10);
    wait_for("new messages are taken", Duration::from_secs(30), || frames(&server) >= 1);
    assert_eq!(too_large(&server), 0.0, "the oversized message came again");
}

/// A push over `[server] max_batch_samples` is refused whole, naming the setting.
#[test]
fn a_push_over_the_batch_limit_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{PLANT}\n[server]\nmax_batch_samples = 3\n");
    let server = Server::serve(&write_config(dir.path(), "plant.toml", &text), &[]);
    let samples = |n: i64| -> serde_json::Value {
        json!({ "samples": (0..n).map(|k| json!({"asset": "pump-1", "signal": "temp", "ts": 1000 * k, "value": 1.0})).collect::<Vec<_>>() })
    };
    let (status, body) = server.post("/api/v1/samples", &samples(3));
    assert_eq!(status, 202, "{body}");
    let (status, body) = server.post("/api/v1/samples", &samples(4));
    assert_eq!(status, 422, "{body}");
    assert!(body["details"][0].as_str().unwrap().contains("max_batch_samples"), "{body}");
}

/// Query sizes and text lengths have configurable bounds: a history query
/// returns at most `max_query_points` (longer ranges come back as buckets),
/// a list at most `max_list_items`, and a note over `max_note_bytes` is
/// refused naming the setting.
#[test]
fn queries_and_notes_are_bounded_by_their_settings() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{PLANT}\n[[detectors]]\nname = \"z\"\nbaseline_frames = 5\nalgorithm = {{ type = \"robust_z\", window = 20 }}\nthreshold = {{ value = 0.0, k = 1, n = 1 }}\n\n[server]\nmax_query_points = 50\nmax_list_items = 5\nmax_note_bytes = 16\n"
    );
    let server = Server::serve(&write_config(dir.path(), "plant.toml", &text), &[]);
    let t0 = 1_700_000_000_000i64;
    let samples: Vec<serde_json::Value> = (0..400)
        .map(|k| json!({"asset": "pump-1", "signal": "temp", "ts": t0 + 1000 * k, "value": (k % 7) as f64}))
        .collect();
    let (status, body) = server.post("/api/v1/samples", &json!({ "samples": samples }));
    assert_eq!(status, 202, "{body}");
    server.wait_until("the frames are stored", Duration::from_secs(30), |s| {
        s.get("/api/v1/samples?asset=pump-1&signal=temp&max_points=50")["points"]
            .as_array()
            .is_some_and(|p| p.iter().map(|p| p["count"].as_u64().unwrap()).sum::<u64>() >= 399)
    });
    let body = server.get("/api/v1/samples?asset=pump-1&signal=temp&max_points=100000");
    let points = body["points"].as_array().unwrap();
    assert!(points.len() <= 50 && body["downsampled"] == true, "{} points", points.len());
    let body = server.get("/api/v1/assets/pump-1/series?max_points=100000");
    assert!(body["ts"].as_array().unwrap().len() <= 50, "{body}");
    let findings = server.get("/api/v1/findings?limit=1000");
    assert_eq!(findings.as_array().unwrap().len(), 5, "{findings}");
    let alarms = server.get("/api/v1/alarms?state=all&limit=1000");
    let id = alarms[0]["id"].as_i64().expect("an alarm");
    let (status, body) = server.post(&format!("/api/v1/alarms/{id}/comment"), &json!({"note": "x".repeat(17)}));
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("max_note_bytes"), "{body}");
    let (status, body) = server.post(&format!("/api/v1/alarms/{id}/comment"), &json!({"note": "short"}));
    assert_eq!(status, 200, "{body}");
}
