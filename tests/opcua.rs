//! OPC UA against a server usan did not write: asyncua
//! (`tests/peers/opcua_server.py`), which the test starts, stops and starts
//! again. Skips without the peers' Python — except under `CI`, where it fails.

mod common;

use common::*;
use std::time::Duration;

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{{dir}}/opcua.db"
flush_interval = "100ms"

[pipeline]
frame = {{ max_lateness_ms = 0, hold_last = false }}

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

fn metric(server: &Server, prefix: &str) -> f64 {
    metric_of(server, prefix)
}

fn points(server: &Server, signal: &str) -> Vec<(i64, f64)> {
    let body = server.get(&format!("/api/v1/samples?asset=pump-1&signal={signal}&max_points=100000"));
    body["points"].as_array().unwrap().iter().filter_map(|p| Some((p["ts"].as_i64()?, p["value"].as_f64()?))).collect()
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
