//! OPC UA against servers usan did not write: Python's asyncua
//! (`tests/peers/opcua_server.py`), which the tests start, stop and start
//! again, and the server of the async-opcua crate, run in process. The
//! asyncua tests skip without the peers' Python — except under `CI`, where
//! they fail.

use crate::harness::*;
use crate::rust_opcua;
use std::time::Duration;

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
{HEAD}
[[sources]]
type = "opcua"
name = "opc"
endpoint = "opc.tcp://127.0.0.1:{port}/"
pki_dir = "{{dir}}/pki"
trust_server_certs = true
publishing_interval = "100ms"
sampling_interval = "50ms"
nodes = [
  {{ node = "ns=2;s=Pump1.Temperature", asset = "pump-1", signal = "temp" }},
  {{ node = "ns=2;s=Pump1.Pressure", asset = "pump-1", signal = "pressure" }},
  {{ node = "ns=2;s=Pump1.Running", asset = "pump-1", signal = "running" }},
  {{ node = "ns=2;s=Pump1.Mode", asset = "pump-1", signal = "mode" }},
  {{ node = "ns=2;s=Pump1.Flow", asset = "pump-1", signal = "flow" }},
]

[[assets]]
id = "pump-1"
signals = ["temp", "pressure", "running", "mode", "flow"]
"#
    );
    write_config(dir, "opcua.toml", &text)
}

/// Store and pipeline settings every configuration here starts with.
const HEAD: &str = r#"[store]
type = "sqlite"
path = "{dir}/opcua.db"
flush_interval = "100ms"

[pipeline]
frame = { max_lateness_ms = 0, hold_last = false }
"#;

fn metric(server: &Server, prefix: &str) -> f64 {
    metric_of(server, prefix)
}

/// A signal's stored (timestamp, value) pairs.
fn series(server: &Server, asset: &str, signal: &str) -> Vec<(i64, f64)> {
    let body = server.get(&format!("/api/v1/samples?asset={asset}&signal={signal}&max_points=100000"));
    body["points"].as_array().unwrap().iter().filter_map(|p| Some((p["ts"].as_i64()?, p["value"].as_f64()?))).collect()
}

/// A signal's stored values.
fn values(server: &Server, asset: &str, signal: &str) -> Vec<f64> {
    series(server, asset, signal).into_iter().map(|(_, v)| v).collect()
}

fn points(server: &Server, signal: &str) -> Vec<(i64, f64)> {
    series(server, "pump-1", signal)
}

/// async-opcua's server on `port`, every variable of asset a, signal s set to
/// k + 10·s every `period`, k counting up.
fn rust_server(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    pki: &std::path::Path,
    (assets, signals): (usize, usize),
    subscriptions: bool,
    period: Duration,
) -> (std::sync::Arc<rust_opcua::RustOpcServer>, tokio::task::JoinHandle<()>) {
    let _inside = runtime.enter();
    let server = std::sync::Arc::new(rust_opcua::RustOpcServer::start_with(port, pki, assets, signals, subscriptions));
    let ticking = std::sync::Arc::clone(&server);
    let ticker = runtime.spawn(async move {
        for k in 0.. {
            ticking.set_all(|_, s| f64::from(k) + 10.0 * s as f64, opcua::types::DateTime::now());
            tokio::time::sleep(period).await;
        }
    });
    (server, ticker)
}

#[test]
fn subscriptions_deliver_values_with_quality_and_recover_after_a_server_restart() {
    let Some(python) = python_with("asyncua") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let opc = Peer::start(&python, "opcua_server.py", port);
    let server = Server::serve(&config(dir.path(), port), &[]);
    server
        .wait_until("temperatures arrive by subscription", Duration::from_secs(60), |s| points(s, "temp").len() >= 10);

    let temps = points(&server, "temp");
    // 20 + 0.1·k, k counting up: rising, on the 0.1 grid.
    assert!(temps.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "{temps:?}");
    assert!(temps.iter().all(|(_, v)| ((v - 20.0) * 10.0 - ((v - 20.0) * 10.0).round()).abs() < 1e-6), "{temps:?}");
    assert!(points(&server, "running").iter().all(|(_, v)| *v == 1.0));
    assert!(points(&server, "pressure").len() >= 2);
    assert!(points(&server, "mode").is_empty() && points(&server, "flow").is_empty());
    assert!(metric(&server, "usan_source_malformed_total{source=\"opc\",cause=\"value is not a number\"}") >= 1.0);
    assert_eq!(metric(&server, "usan_source_connected{source=\"opc\"}"), 1.0);

    drop(opc);
    server.wait_until("the outage is noticed", Duration::from_secs(30), |s| {
        metric(s, "usan_source_connected{source=\"opc\"}") == 0.0
    });
    let before = points(&server, "temp").len();
    let _opc = Peer::start(&python, "opcua_server.py", port);
    server.wait_until("the subscription is recovered on the new server", Duration::from_secs(60), |s| {
        points(s, "temp").len() >= before + 10
    });
    assert!(metric(&server, "usan_source_disconnects_total{source=\"opc\"}") >= 1.0);
    assert_eq!(metric(&server, "usan_source_connected{source=\"opc\"}"), 1.0);
}

#[test]
fn browsing_prints_the_address_space_and_a_browsed_folder_feeds_an_asset() {
    let Some(python) = python_with("asyncua") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _opc = Peer::start(&python, "opcua_server.py", port);
    let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
    let pki = dir.path().join("pki");
    let pki = pki.to_str().unwrap();
    let out = usan(&["opcua", "browse", &endpoint, "--pki-dir", pki, "--trust-server-certs"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = tree.lines().map(|l| l.split_whitespace().collect()).collect();
    for expected in [
        ["Pump1", "ns=2;s=Pump1", "Object"],
        ["Temperature", "ns=2;s=Pump1.Temperature", "Double"],
        ["Pressure", "ns=2;s=Pump1.Pressure", "Float"],
        ["Running", "ns=2;s=Pump1.Running", "Boolean"],
        ["Mode", "ns=2;s=Pump1.Mode", "String"],
        ["Current", "ns=2;s=Pump1.Motor.Current", "Double"],
    ] {
        assert!(rows.iter().any(|r| r[..] == expected[..]), "{expected:?} missing from\n{tree}");
    }
    // Deeper nodes are indented below their parent; the Server object is left out.
    let current = tree.lines().find(|l| l.contains("Pump1.Motor.Current")).unwrap();
    assert!(current.starts_with("    Current"), "{current:?}");
    assert!(!tree.contains("i=2253"), "{tree}");

    let out = usan(&[
        "opcua",
        "browse",
        &endpoint,
        "--root",
        "ns=2;s=Pump1",
        "--asset",
        "pump-1",
        "--pki-dir",
        pki,
        "--trust-server-certs",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nodes: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let signals: Vec<&str> = nodes["nodes"].as_array().unwrap().iter().map(|n| n["signal"].as_str().unwrap()).collect();
    assert_eq!(signals, ["Temperature", "Pressure", "Running", "Flow", "Motor.Current"]);

    // The same folder as a source: signals matched by browse path.
    let text = format!(
        r#"
{HEAD}
[[sources]]
type = "opcua"
name = "opc"
endpoint = "{endpoint}"
pki_dir = "{{dir}}/pki"
trust_server_certs = true
publishing_interval = "100ms"
sampling_interval = "50ms"
browse = [{{ root = "ns=2;s=Pump1", asset = "pump-1" }}]

[[assets]]
id = "pump-1"
signals = ["Temperature", "Motor.Current", "not_on_the_server"]
"#
    );
    let server = Server::serve(&write_config(dir.path(), "browse.toml", &text), &[]);
    let points = |s: &Server, signal: &str| values(s, "pump-1", signal).len();
    server.wait_until("browsed variables arrive", Duration::from_secs(60), |s| {
        points(s, "Temperature") >= 5 && points(s, "Motor.Current") >= 1
    });
    assert_eq!(points(&server, "not_on_the_server"), 0);
}

#[test]
fn a_signed_and_encrypted_session_with_a_user_polls_once_the_server_is_trusted() {
    let Some(python) = python_with("asyncua") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_dir = dir.path().join("server");
    std::fs::create_dir_all(&server_dir).unwrap();
    let _opc = Peer::start_with(&python, "opcua_server.py", port, &["--secure", server_dir.to_str().unwrap()]);
    let text = format!(
        r#"
{HEAD}
# Trusts only certificates in its pki's trusted folder.
[[sources]]
type = "opcua"
name = "secure"
endpoint = "opc.tcp://127.0.0.1:{port}/"
security_policy = "Basic256Sha256"
security_mode = "sign_and_encrypt"
username = "operator"
password = "s3cret"
pki_dir = "{{dir}}/pki"
mode = "poll"
poll = "200ms"
nodes = [{{ node = "ns=2;s=Pump1.Temperature", asset = "pump-1", signal = "temp" }}]

# Right certificate, wrong password: never gets a session.
[[sources]]
type = "opcua"
name = "intruder"
endpoint = "opc.tcp://127.0.0.1:{port}/"
security_policy = "Basic256Sha256"
security_mode = "sign"
username = "operator"
password = "guess"
pki_dir = "{{dir}}/pki-intruder"
trust_server_certs = true
nodes = [{{ node = "ns=2;s=Pump1.Temperature", asset = "pump-2", signal = "temp" }}]

[[assets]]
id = "pump-1"
signals = ["temp"]

[[assets]]
id = "pump-2"
signals = ["temp"]
"#
    );
    let config = write_config(dir.path(), "secure.toml", &text);
    let server = Server::serve(&config, &[]);
    let points = |s: &Server, asset: &str| series(s, asset, "temp");

    // First contact: the unknown server certificate is refused and filed under rejected/.
    let rejected = dir.path().join("pki/rejected");
    let mut certificate = None;
    wait_for("the server certificate is filed as rejected", Duration::from_secs(60), || {
        certificate = std::fs::read_dir(&rejected).ok().and_then(|mut d| d.next()).map(|e| e.unwrap().path());
        certificate.is_some()
    });
    let certificate = certificate.unwrap();
    assert!(points(&server, "pump-1").is_empty());
    assert_eq!(metric_of(&server, "usan_source_connected{source=\"secure\"}"), 0.0);
    server.wait_until("the refusal is counted", Duration::from_secs(10), |s| {
        metric_of(s, "usan_source_connect_failures_total{source=\"secure\",cause=\"server certificate not trusted\"}")
            >= 1.0
    });

    // The engineer trusts it: move it to trusted/, and the source gets on without a restart.
    let trusted = dir.path().join("pki/trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::rename(&certificate, trusted.join(certificate.file_name().unwrap())).unwrap();
    server.wait_until("polled values arrive over the encrypted session", Duration::from_secs(60), |s| {
        points(s, "pump-1").len() >= 5
    });
    let temps = points(&server, "pump-1");
    assert!(temps.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "{temps:?}");
    assert_eq!(metric_of(&server, "usan_source_connected{source=\"secure\"}"), 1.0);

    assert!(points(&server, "pump-2").is_empty());
    assert_eq!(metric_of(&server, "usan_source_connected{source=\"intruder\"}"), 0.0);
    let refused = "usan_source_connect_failures_total{source=\"intruder\",cause=\"login refused\"}";
    assert!(metric_of(&server, refused) >= 1.0, "{}", server.get_raw("/metrics").1);
}

#[test]
fn the_rust_crates_own_server_feeds_usan_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Each server publishes k + 10·s on asset a's signal s, k counting up every 100 ms.
    let serve =
        |pki: &str| rust_server(&runtime, port, &dir.path().join(pki), (2, 3), true, Duration::from_millis(100));
    let (opc, ticker) = serve("server-pki");
    let ns = opc.namespace;
    let text = format!(
        r#"
{HEAD}
[[sources]]
type = "opcua"
name = "opc"
endpoint = "opc.tcp://127.0.0.1:{port}/"
pki_dir = "{{dir}}/pki"
trust_server_certs = true
publishing_interval = "100ms"
sampling_interval = "100ms"
browse = [{{ root = "ns={ns};s=Line.A0", asset = "a0" }}]
nodes = [
  {{ node = "ns={ns};s=A1.S0", asset = "a1", signal = "first" }},
  {{ node = "ns={ns};s=A1.S2", asset = "a1", signal = "third" }},
]

# A1.S1 (+1 every 100 ms) through an absolute deadband of 2.5.
[[sources]]
type = "opcua"
name = "coarse"
endpoint = "opc.tcp://127.0.0.1:{port}/"
pki_dir = "{{dir}}/pki"
trust_server_certs = true
publishing_interval = "100ms"
sampling_interval = "50ms"
deadband = 2.5
nodes = [{{ node = "ns={ns};s=A1.S1", asset = "a2", signal = "coarse" }}]

[[assets]]
id = "a0"
signals = ["s0", "s1", "s2"]

[[assets]]
id = "a1"
signals = ["first", "third"]

[[assets]]
id = "a2"
signals = ["coarse"]
"#
    );
    let server = Server::serve(&write_config(dir.path(), "rust.toml", &text), &[]);
    let points = values;
    server.wait_until("values arrive from the Rust server", Duration::from_secs(60), |s| {
        points(s, "a0", "s2").len() >= 5 && points(s, "a1", "third").len() >= 5
    });
    // Browsed and listed variables land on their own signals: s2 - s0 = 20.
    let (s0, s2) = (points(&server, "a0", "s0"), points(&server, "a0", "s2"));
    assert!(s2.iter().all(|v| (v - 20.0).fract() == 0.0 && *v >= 20.0), "{s2:?}");
    assert!(s0.iter().all(|v| *v < 20.0 + s0.len() as f64), "{s0:?}");
    assert!(points(&server, "a1", "third").iter().all(|v| *v >= 20.0));
    assert!(points(&server, "a1", "first").windows(2).all(|w| w[0] < w[1]));
    server.wait_until("deadbanded values arrive", Duration::from_secs(30), |s| points(s, "a2", "coarse").len() >= 3);
    let coarse = points(&server, "a2", "coarse");
    assert!(coarse.windows(2).all(|w| w[1] - w[0] >= 3.0), "steps within the deadband: {coarse:?}");

    ticker.abort();
    opc.stop();
    server.wait_until("the outage is noticed", Duration::from_secs(30), |s| {
        metric_of(s, "usan_source_connected{source=\"opc\"}") == 0.0
    });
    let before = points(&server, "a0", "s1").len();
    let (_opc, _ticker) = serve("server-pki-2");
    server.wait_until("subscriptions are recovered on the new server", Duration::from_secs(60), |s| {
        points(s, "a0", "s1").len() >= before + 5
    });
    assert!(metric_of(&server, "usan_source_disconnects_total{source=\"opc\"}") >= 1.0);
}

#[test]
fn a_server_that_refuses_subscriptions_is_polled_instead() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pki = dir.path().join("server-pki");
    let (opc, _ticker) = rust_server(&runtime, port, &pki, (1, 2), false, Duration::from_millis(50));
    let ns = opc.namespace;
    let text = format!(
        r#"
{HEAD}
[[sources]]
type = "opcua"
name = "opc"
endpoint = "opc.tcp://127.0.0.1:{port}/"
pki_dir = "{{dir}}/pki"
trust_server_certs = true
mode = "subscribe"
poll = "100ms"
browse = [{{ root = "ns={ns};s=Line.A0", asset = "a0" }}]

[[assets]]
id = "a0"
signals = ["s0", "s1"]
"#
    );
    let server = Server::serve(&write_config(dir.path(), "fallback.toml", &text), &[]);
    let points = |s: &Server| values(s, "a0", "s1");
    server.wait_until("polled values arrive", Duration::from_secs(60), |s| points(s).len() >= 5);
    let values = points(&server);
    assert!(values.windows(2).all(|w| w[0] < w[1]) && values.iter().all(|v| *v >= 10.0), "{values:?}");
}
