//! Modbus TCP against a device usan did not write: a pymodbus server
//! (`tests/peers/modbus_server.py`) that the test starts, stops and starts
//! again. Skips without the peers' Python — except under `CI`, where it fails.

use crate::harness::*;
use std::time::Duration;

const SIGNALS: &[(&str, f64)] = &[
    ("int16", -5.0),
    ("scaled", 123.4 + 0.5),
    ("float_abcd", 123.456_001_281_738_28),
    ("float_cdab", 123.456_001_281_738_28),
    ("int32", -100_000.0),
    ("float64", std::f64::consts::PI),
    ("uint32_cdab", 70_000.0),
    ("input", 777.0),
    ("coil_on", 1.0),
    ("coil_off", 0.0),
    ("discrete", 1.0),
];

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let signals: Vec<String> =
        SIGNALS.iter().map(|(s, _)| format!("\"{s}\"")).chain(["\"nan\"".into(), "\"ghost\"".into()]).collect();
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{{dir}}/modbus.db"
flush_interval = "100ms"

[pipeline]
frame = {{ max_lateness_ms = 0, hold_last = false }}

[[sources]]
type = "modbus"
name = "plc"
address = "127.0.0.1:{port}"
asset = "press-1"
poll = "200ms"
timeout = "300ms"
retries = 1
reconnect_delay = "200ms"
reconnect_max_delay = "1s"
registers = [
  {{ signal = "int16", kind = "holding", address = 0, type = "int16" }},
  {{ signal = "scaled", kind = "holding", address = 1, type = "uint16", scale = 0.1, offset = 0.5 }},
  {{ signal = "float_abcd", kind = "holding", address = 2, type = "float32" }},
  {{ signal = "float_cdab", kind = "holding", address = 4, type = "float32", word_order = "little" }},
  {{ signal = "int32", kind = "holding", address = 6, type = "int32" }},
  {{ signal = "float64", kind = "holding", address = 8, type = "float64" }},
  {{ signal = "uint32_cdab", kind = "holding", address = 12, type = "uint32", word_order = "little" }},
  {{ signal = "nan", kind = "holding", address = 14, type = "float32" }},
  {{ signal = "ghost", kind = "holding", address = 500, type = "uint16" }},
  {{ signal = "input", kind = "input", address = 0, type = "uint16" }},
  {{ signal = "coil_on", kind = "coil", address = 0 }},
  {{ signal = "coil_off", kind = "coil", address = 1 }},
  {{ signal = "discrete", kind = "discrete", address = 0 }},
]

[[assets]]
id = "press-1"
signals = [{}]
"#,
        signals.join(", ")
    );
    write_config(dir, "modbus.toml", &text)
}

fn metric(server: &Server, prefix: &str) -> f64 {
    metric_of(server, prefix)
}

fn latest(server: &Server, signal: &str) -> Option<f64> {
    let body = server.get(&format!("/api/v1/samples?asset=press-1&signal={signal}&max_points=100000"));
    body["points"].as_array()?.last()?["value"].as_f64()
}

fn frames(server: &Server) -> u64 {
    server.get("/api/v1/assets/press-1")["frames"].as_u64().unwrap()
}

#[test]
fn registers_decode_exceptions_are_counted_and_a_restarted_device_is_redialled() {
    let Some(python) = python_with("pymodbus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let device = Peer::start(&python, "modbus_server.py", port);
    let server = Server::serve(&config(dir.path(), port), &[]);
    server.wait_until("five polls are stored", Duration::from_secs(20), |s| frames(s) >= 5);

    for (signal, want) in SIGNALS {
        let got = latest(&server, signal).unwrap_or_else(|| panic!("no value of {signal}"));
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{signal}: got {got}, want {want}");
    }
    assert_eq!(latest(&server, "nan"), None, "a NaN register is refused, not stored");
    assert_eq!(latest(&server, "ghost"), None);
    assert!(
        metric(&server, "usan_source_malformed_total{source=\"plc\",cause=\"modbus exception: illegal data address\"}")
            >= 5.0
    );
    assert!(
        metric(&server, "usan_source_malformed_total{source=\"plc\",cause=\"value is not a finite number\"}") >= 5.0
    );
    assert_eq!(metric(&server, "usan_source_connected{source=\"plc\"}"), 1.0);

    drop(device);
    server.wait_until("the outage is noticed", Duration::from_secs(20), |s| {
        metric(s, "usan_source_connected{source=\"plc\"}") == 0.0
    });
    let during = frames(&server);
    let failures =
        |s: &Server| metric(s, "usan_source_connect_failures_total{source=\"plc\",cause=\"cannot connect\"}");
    let before = failures(&server);
    // Five failed redials, 200 ms apart: an outage over a second.
    server.wait_until("usan keeps redialling", Duration::from_secs(20), |s| failures(s) >= before + 5.0);
    assert!(frames(&server) <= during + 1, "no polls while the device is down");
    let _device = Peer::start(&python, "modbus_server.py", port);
    server.wait_until("polling resumes", Duration::from_secs(20), |s| frames(s) >= during + 5);
    assert!(metric(&server, "usan_source_disconnects_total{source=\"plc\"}") >= 1.0);
    assert!(metric(&server, "usan_source_outage_seconds_total{source=\"plc\"}") >= 1.0);
    assert_eq!(latest(&server, "float64"), Some(std::f64::consts::PI));
}
