//! End-to-end behaviour of the `usan` binary: configurations, replay into
//! the store, alarms through the API, crash safety, bad input.

use crate::harness::*;
use crate::scenario::Plant;
use serde_json::{Value, json};
use std::time::Duration;

/// The TEP sample: 500 training, 300 normal, 200 faulty samples, 3 min apart.
const TEP_ORIGIN_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const SAMPLE_MS: i64 = 180_000;
fn sample_ts(sample: i64) -> i64 {
    TEP_ORIGIN_MS + sample * SAMPLE_MS
}

fn tep_config(dir: &std::path::Path, speed: &str) -> std::path::PathBuf {
    let signals: Vec<String> =
        (1..=41).map(|i| format!("\"xmeas_{i}\"")).chain((1..=11).map(|i| format!("\"xmv_{i}\""))).collect();
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{{dir}}/tep.db"
flush_interval = "100ms"

[server]
max_body_bytes = 65536

[pipeline]
workers = 1
queue_capacity = 64

[[sources]]
type = "file"
name = "tep"
path = "{{repo}}/tests/data/tep/tep_normal_then_idv1.csv"
asset = "reactor"
time_column = "sample"
time_unit_s = 180.0
time_origin = "2026-01-01T00:00:00Z"
speed = {speed}

[[sources]]
type = "http"
name = "push"

[[detectors]]
name = "pca"
algorithm = {{ type = "pca", variance = 0.9, alpha = 0.999 }}
baseline_frames = 500
threshold = {{ value = 1.0, k = 4, n = 5 }}

[[sinks]]
type = "jsonl"
path = "{{dir}}/events.jsonl"

[[assets]]
id = "reactor"
signals = [{}]
"#,
        signals.join(", ")
    );
    write_config(dir, "tep.toml", &text)
}

fn frames_of(server: &Server, asset: &str) -> u64 {
    server.get(&format!("/api/v1/assets/{asset}"))["frames"].as_u64().unwrap()
}

#[test]
fn every_example_config_parses_and_builds() {
    let mut checked = 0;
    let folders = [repo().join("examples"), repo().join("examples/onnx")];
    for entry in folders.iter().flat_map(|f| std::fs::read_dir(f).unwrap()) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = usan(&["check", path.to_str().unwrap()]);
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            let config = usan::config::Config::load(&path).unwrap();
            let plant = config.plant();
            for source in &config.sources {
                source.build(&plant).unwrap();
            }
            for detector in &config.detectors {
                if let Some(algorithm) = detector.algorithm.native() {
                    algorithm.build().unwrap();
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "examples/ has the demo and TEP configurations");
}

#[test]
fn check_reports_every_config_error_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        dir.path(),
        "bad.toml",
        r#"
[pipeline]
queue_capacity = 0

[[detectors]]
name = "pca"
algorithm = { type = "pca", alpha = 2.0 }

[[assets]]
id = "a"
signals = ["x"]
detectors = ["missing"]

[[sources]]
type = "file"
name = "f"
path = "nowhere.csv"
delimiter = ";;"
"#,
    );
    let out = usan(&["check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "line 3: pipeline.queue_capacity",
        "line 7: detectors[0].algorithm",
        "no detector named `missing`",
        "delimiter must be one character",
        "set `asset` or `asset_column`",
        "set `time_column` or `period`",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    let syntax = write_config(dir.path(), "syntax.toml", "[store\ntype = 1\n");
    let out = usan(&["check", syntax.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn tep_fault_is_found_stored_and_alarmed_while_normal_operation_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "\"max\"");
    let server = Server::serve(&config, &[]);
    server.wait_until("all 1000 samples are scored", Duration::from_secs(120), |s| frames_of(s, "reactor") >= 1000);
    server.wait_until("all 1000 frames are stored", Duration::from_secs(30), |s| {
        s.get_raw("/metrics").1.contains("usan_frames_stored_total 1000")
    });

    let asset = server.get("/api/v1/assets/reactor");
    assert_eq!(asset["detectors"][0]["status"], "monitoring");
    assert_eq!(asset["health"], "anomalous", "the replay ends inside the fault");

    let alarms = server.get("/api/v1/alarms?state=all");
    let alarms = alarms.as_array().unwrap();
    assert_eq!(alarms.len(), 1, "one fault, one alarm: {alarms:#?}");
    let alarm = &alarms[0];
    let raised = alarm["raised_at"].as_i64().unwrap();
    assert!(
        raised >= sample_ts(801),
        "no alarm in normal operation (raised at sample {})",
        (raised - TEP_ORIGIN_MS) / SAMPLE_MS
    );
    assert!(raised <= sample_ts(820), "IDV1 is caught within 20 samples");
    assert_eq!(alarm["state"], "raised");
    assert!(alarm["frames"].as_u64().unwrap() >= 1);
    assert!(!alarm["top_signals"].as_array().unwrap().is_empty(), "the alarm says which signals moved");

    let findings = server.get("/api/v1/findings?asset=reactor&limit=10000");
    let anomalous: Vec<&Value> = findings.as_array().unwrap().iter().filter(|f| f["anomalous"] == true).collect();
    assert!(anomalous.len() >= 150, "the fault's findings are served: {}", anomalous.len());
    assert!(anomalous.iter().all(|f| f["ts"].as_i64().unwrap() >= sample_ts(801)));
    // A PCA finding explains both of its statistics, each against its own limit.
    for finding in &anomalous {
        let statistics = finding["statistics"].as_array().unwrap();
        let names: Vec<&str> = statistics.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["t2", "spe"], "{finding}");
        for statistic in statistics {
            assert!(statistic["limit"].as_f64().unwrap() > 0.0, "{statistic}");
            assert!(!statistic["contributions"].as_array().unwrap().is_empty(), "{statistic}");
        }
        let out_of_limit = statistics.iter().any(|s| s["value"].as_f64().unwrap() > s["limit"].as_f64().unwrap());
        assert!(out_of_limit || finding["score"].as_f64().unwrap() <= 1.0, "{finding}");
    }

    let metrics = server.get_raw("/metrics").1;
    assert!(metrics.contains("usan_frames_total 1000"), "{metrics}");
    assert!(metrics.contains("usan_alarms_raised_total 1"), "{metrics}");

    assert!(server.terminate().success(), "SIGTERM is a clean exit");
    let db = open_store(&dir.path().join("tep.db"));
    let stored: i64 = db.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 1000, "every frame accepted is stored at shutdown");
    let fault_findings: i64 = db
        .query_row("SELECT COUNT(*) FROM findings WHERE anomalous = 1 AND ts >= ?1", [sample_ts(801)], |r| r.get(0))
        .unwrap();
    let normal_alarms: i64 =
        db.query_row("SELECT COUNT(*) FROM alarms WHERE raised_at < ?1", [sample_ts(801)], |r| r.get(0)).unwrap();
    assert!(fault_findings >= 150, "{fault_findings}");
    assert_eq!(normal_alarms, 0);
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert!(events.lines().any(|l| l.contains("\"event\":\"alarm_raised\"")), "the sink got the alarm");
}

#[test]
fn kill_9_loses_no_acknowledgement_and_the_replay_continues() {
    let dir = tempfile::tempdir().unwrap();
    // 1000 samples x 180 s at 20,000x: 9 s of replay; the fault starts near 7.2 s.
    let config = tep_config(dir.path(), "20000.0");
    let server = Server::serve(&config, &[]);
    server.wait_until("the fault raises an alarm", Duration::from_secs(60), |s| {
        !s.get("/api/v1/alarms").as_array().unwrap().is_empty()
    });
    let id = server.get("/api/v1/alarms")[0]["id"].as_i64().unwrap();
    let (status, acked) = server.post(&format!("/api/v1/alarms/{id}/acknowledge"), &json!({"note": "checking feed"}));
    assert_eq!(status, 200, "{acked}");
    let frames_before = frames_of(&server, "reactor");
    assert!(frames_before < 1000, "killed during the replay ({frames_before} frames)");
    server.kill9();

    let db_path = dir.path().join("tep.db");
    {
        let db = open_store(&db_path);
        let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        let state: String = db.query_row("SELECT state FROM alarms WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        assert_eq!(state, "acknowledged", "the acknowledgement survived kill -9");
    }

    let server = Server::serve(&config, &["--exit-when-done"]);
    let status = server.wait(Duration::from_secs(120));
    assert!(status.success());
    let db = open_store(&db_path);
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let frames: i64 = db.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0)).unwrap();
    assert_eq!(frames, 1000, "the replay resumed where the store left off and finished");
    let (alarms, ack_by): (i64, String) =
        db.query_row("SELECT COUNT(*), MAX(ack_by) FROM alarms", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(alarms, 1, "the open, acknowledged alarm kept collecting the fault after restart");
    assert_eq!(ack_by, "tester");
    let models: i64 = db.query_row("SELECT COUNT(*) FROM models", [], |r| r.get(0)).unwrap();
    assert_eq!(models, 1, "the fitted model was reloaded, not refitted on faulty data");
}

#[test]
fn bad_http_input_gets_a_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "\"max\"");
    // Only the push source: drop the replay.
    let text = std::fs::read_to_string(&config).unwrap().replace("type = \"file\"", "type = \"file\"\n# disabled");
    let text = text.split("[[sources]]\ntype = \"file\"").next().unwrap().to_string()
        + "[[sources]]\ntype = \"http\"\nname = \"push\"\n"
        + text.split("name = \"push\"").nth(1).unwrap();
    let config = write_config(dir.path(), "push.toml", &text);
    let server = Server::serve(&config, &[]);
    let now = chrono::Utc::now().timestamp_millis();
    let sample = |signal: &str, value: Value| json!({"asset": "reactor", "signal": signal, "ts": now, "value": value});

    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("malformed JSON", "application/json", b"{\"samples\": [".to_vec(), 400),
        ("not JSON at all", "text/plain", b"hello".to_vec(), 415),
        ("wrong shape", "application/json", br#"{"samples": 3}"#.to_vec(), 422),
        ("unknown field", "application/json", br#"{"samples": [], "extra": 1}"#.to_vec(), 422),
        (
            "unknown asset",
            "application/json",
            serde_json::to_vec(&json!({"samples": [{"asset": "nope", "signal": "xmeas_1", "ts": now, "value": 1.0}]}))
                .unwrap(),
            422,
        ),
        (
            "unknown signal",
            "application/json",
            serde_json::to_vec(&json!({"samples": [sample("nope", json!(1.0))]})).unwrap(),
            422,
        ),
        (
            "null value",
            "application/json",
            serde_json::to_vec(&json!({"samples": [sample("xmeas_1", Value::Null)]})).unwrap(),
            422,
        ),
        (
            "NaN spelled out",
            "application/json",
            br#"{"samples": [{"asset": "reactor", "signal": "xmeas_1", "ts": 0, "value": NaN}]}"#.to_vec(),
            400,
        ),
        (
            "infinite number",
            "application/json",
            br#"{"samples": [{"asset": "reactor", "signal": "xmeas_1", "ts": 0, "value": 1e999}]}"#.to_vec(),
            400,
        ),
        (
            "far future",
            "application/json",
            serde_json::to_vec(
                &json!({"samples": [{"asset": "reactor", "signal": "xmeas_1", "ts": now + 86_400_000, "value": 1.0}]}),
            )
            .unwrap(),
            422,
        ),
        (
            "bad timestamp",
            "application/json",
            serde_json::to_vec(
                &json!({"samples": [{"asset": "reactor", "signal": "xmeas_1", "ts": "yesterday", "value": 1.0}]}),
            )
            .unwrap(),
            422,
        ),
        ("oversized body", "application/json", vec![b' '; 100_000], 413),
    ];
    for (name, content_type, body, want) in cases {
        let (status, body) = server.post_raw("/api/v1/samples", content_type, body);
        assert_eq!(status, want, "{name}: {body}");
        assert!(body["error"].is_string(), "{name}: errors are JSON: {body}");
    }
    // A batch with one bad sample among good ones is refused whole, naming the bad one.
    let mixed = json!({"samples": [sample("xmeas_1", json!(1.0)), sample("nope", json!(2.0))]});
    let (status, body) = server.post("/api/v1/samples", &mixed);
    assert_eq!(status, 422);
    assert!(body["details"][0].as_str().unwrap().contains("samples[1]"), "{body}");

    let (status, _) = server.get_raw("/api/v1/assets/nope");
    assert_eq!(status, 404);
    let (status, body) = server.get_raw("/api/v1/samples?asset=reactor&signal=xmeas_1&from=soon");
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.get_raw("/api/v1/alarms?state=maybe");
    assert_eq!(status, 400);
    let (status, _) = server.post("/api/v1/alarms/12345/acknowledge", &json!({"note": "which?"}));
    assert_eq!(status, 404);
    let (status, _) = server.post("/api/v1/alarms/12345/acknowledge", &json!({"by": "someone else"}));
    assert_eq!(status, 422, "who acts is the token's name, not a field");

    // Nothing of the refused requests reached the engine; a good batch does.
    let metrics = server.get_raw("/metrics").1;
    assert!(metrics.contains("usan_samples_in_total 0"), "{metrics}");
    let all: Vec<Value> = (1..=41).map(|i| sample(&format!("xmeas_{i}"), json!(i as f64))).collect();
    let (status, body) = server.post("/api/v1/samples", &json!({"samples": all}));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 41);
    // The frame is incomplete (the 11 xmv signals never came): it waits in
    // the assembler, and SIGTERM must still flush it into the store.
    assert!(server.terminate().success());
    let db = open_store(&dir.path().join("tep.db"));
    let frames: i64 = db.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0)).unwrap();
    assert_eq!(frames, 1, "everything accepted is flushed at shutdown");
}

#[test]
fn fit_then_score_a_history_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "\"max\"");
    let data = repo().join("tests/data/tep/tep_normal_then_idv1.csv");
    let models = dir.path().join("models");
    let scores = dir.path().join("scores.csv");
    let history = ["--config", config.to_str().unwrap(), "--data", data.to_str().unwrap(), "--source", "tep"];
    let run = |command: &str, extra: &[&str]| {
        let args: Vec<&str> = [command].iter().chain(&history).chain(extra).copied().collect();
        let out = usan(&args);
        assert!(out.status.success(), "usan {command}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run("fit", &["--rows", "500", "--out", models.to_str().unwrap()]);
    assert!(models.join("reactor/pca.json").exists());
    run("score", &["--models", models.to_str().unwrap(), "--out", scores.to_str().unwrap()]);
    let text = std::fs::read_to_string(&scores).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1000);
    let anomalous = |range: std::ops::Range<usize>| rows[range].iter().filter(|r| r[6] == "1").count();
    assert_eq!(anomalous(0..800), 0, "no anomaly in normal operation");
    assert!(anomalous(800..1000) >= 190, "the fault is anomalous");
}

#[test]
fn pushed_pump_data_learns_then_alarms_on_a_closed_valve_with_fused_detectors() {
    let mut plant = Plant::start(&Plant::example("pumps.toml"));
    let mut g = usan_core::stats::SeededNormal::new(1);
    for i in 0..460 {
        let c = g.normal();
        // The valve closes at frame 420: less flow, more pressure.
        let closed = i >= 420;
        plant.push(
            "pump-1",
            &[
                ("flow", 32.0 + c + 0.2 * g.normal() - if closed { 6.0 } else { 0.0 }),
                ("pressure", 1.0 + 0.1 * c + 0.02 * g.normal() + if closed { 0.5 } else { 0.0 }),
                ("current", 2.0 + 0.05 * c + 0.01 * g.normal()),
                ("vibration", 1.5 + 0.1 * g.normal()),
                ("temperature", 60.0 + 0.01 * f64::from(i) + 0.2 * g.normal()),
            ],
        );
    }
    plant.wait_for_frames("pump-1");
    let alarms = plant.alarms("pump-1", "multivariate");
    assert_eq!(alarms.len(), 1, "{alarms:#?}");
    let raised = plant.frame_of(&alarms[0]["raised_at"]);
    assert!((420..=430).contains(&raised), "raised at frame {raised}, the valve closed at 420");
    let top: Vec<&str> =
        alarms[0]["top_signals"].as_array().unwrap().iter().take(2).map(|c| c["signal"].as_str().unwrap()).collect();
    assert!(top.contains(&"flow") && top.contains(&"pressure"), "{top:?}");
    let asset = plant.server.get("/api/v1/assets/pump-1");
    assert!(asset["detectors"].as_array().unwrap().iter().all(|d| d["status"] == "monitoring"), "{asset:#}");
}

#[test]
fn control_charts_raise_an_alarm_that_names_the_run_rule() {
    let mut plant = Plant::start(&Plant::example("spc.toml"));
    let mut g = usan_core::stats::SeededNormal::new(5);
    for i in 0..160 {
        // From frame 130 the force sits 1σ high: inside the 3σ limits, but a run.
        let force = 200.0 + 2.0 * g.normal() + if i >= 130 { 2.0 } else { 0.0 };
        plant.push("press-1", &[("force", force), ("stroke", 50.0 + 0.1 * g.normal())]);
    }
    plant.wait_for_frames("press-1");
    let alarm = plant.wait_for_alarm("press-1", "control-chart");
    let raised = plant.frame_of(&alarm["raised_at"]);
    assert!((130..=150).contains(&raised), "raised at frame {raised}; the shift began at 130");
    let findings = plant.wait_for_findings("press-1", 100);
    let rules: Vec<String> = findings
        .iter()
        .filter(|f| plant.frame_of(&f["ts"]) >= 130)
        .flat_map(|f| f["statistics"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["contributions"].as_array().is_some_and(|c| c.iter().any(|c| c["signal"] == "force")))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert!(rules.iter().any(|r| r.starts_with("nelson")), "findings name the rule on force: {findings:#?}");
}

/// Tokens of the people in the alarm tests: (name, role, token).
const PEOPLE: [(&str, &str, &str); 3] = [
    ("kim", "operator", "kim-token-0001"),
    ("lee", "operator", "lee-token-0002"),
    ("screen", "viewer", "screen-token-03"),
];

/// `config` with `[auth]` replaced by the people's tokens.
fn with_people(config: &std::path::Path, anonymous_read: bool) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut text = text[..text.find("\n[auth]").unwrap_or(text.len())].to_string();
    text.push_str(&format!("\n[auth]\nanonymous_read = {anonymous_read}\ntokens = [\n"));
    for (name, role, token) in PEOPLE {
        let sha = usan::api::auth::sha256_hex(token);
        text.push_str(&format!("  {{ name = \"{name}\", role = \"{role}\", sha256 = \"{sha}\" }},\n"));
    }
    text.push_str("]\n");
    std::fs::write(config, text).unwrap();
}

fn token_of(name: &str) -> &'static str {
    PEOPLE.iter().find(|(n, ..)| *n == name).unwrap().2
}

#[test]
fn an_alarm_is_worked_from_raised_to_closed_with_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "20000.0");
    with_people(&config, true);
    let server = Server::serve(&config, &[]);
    server.wait_until("the fault raises an alarm", Duration::from_secs(60), |s| {
        !s.get("/api/v1/alarms").as_array().unwrap().is_empty()
    });
    let id = server.get("/api/v1/alarms")[0]["id"].as_i64().unwrap();
    let act = |who: &str, action: &str, body: Value| {
        let body = serde_json::to_vec(&body).unwrap();
        server.post_as(Some(token_of(who)), &format!("/api/v1/alarms/{id}/{action}"), "application/json", body)
    };

    // Incomplete actions are refused whole, every problem named.
    for (action, body, expected) in [
        ("assign", json!({}), "`to` must name"),
        ("comment", json!({"note": "  "}), "`note` must say"),
        ("clear", json!({}), "`cause` must say"),
        ("acknowledge", json!({"cause": "x"}), "`cause` belongs to clear"),
    ] {
        let (status, body) = act("kim", action, body);
        assert_eq!(status, 422, "{action}: {body}");
        assert!(body["details"].to_string().contains(expected), "{action}: {body}");
    }

    let (status, alarm) = act("kim", "acknowledge", json!({"note": "looking"}));
    assert_eq!((status, alarm["state"].as_str()), (200, Some("acknowledged")), "{alarm}");
    let (status, alarm) = act("kim", "assign", json!({"to": "lee", "note": "check the feed valve"}));
    assert_eq!((status, alarm["state"].as_str()), (200, Some("assigned")), "{alarm}");
    assert_eq!(alarm["assigned"]["to"], "lee");
    let assigned: Vec<i64> = server
        .get("/api/v1/alarms?state=assigned")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(assigned, [id]);
    let all = server.get("/api/v1/alarms?state=all");
    assert!(all.as_array().unwrap().iter().any(|a| a["id"] == id && a["state"] == "assigned"), "{all}");
    let (status, _) = act("lee", "acknowledge", json!({}));
    assert_eq!(status, 409, "an assigned alarm is past acknowledging");
    let (status, _) = act("lee", "comment", json!({"note": "valve stuck at 40 %"}));
    assert_eq!(status, 200);
    let (status, alarm) = act("lee", "clear", json!({"note": "freed the stem", "cause": "sticky feed valve"}));
    assert_eq!((status, alarm["state"].as_str()), (200, Some("cleared")), "{alarm}");
    assert_eq!(alarm["cause"], "sticky feed valve");
    let (status, _) = act("kim", "comment", json!({"note": "add the valve to the PM list"}));
    assert_eq!(status, 200, "comments are welcome after closing");

    let alarm = server.get(&format!("/api/v1/alarms/{id}"));
    let history: Vec<(String, String)> = alarm["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["action"].as_str().unwrap().to_string(), n["by"].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        ("raise", "usan"),
        ("acknowledge", "kim"),
        ("assign", "kim"),
        ("comment", "lee"),
        ("clear", "lee"),
        ("comment", "kim"),
    ];
    assert_eq!(history, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    assert!(alarm["notes"].as_array().unwrap().iter().all(|n| n["at"].as_i64().unwrap() > 0));
    assert!(server.get("/api/v1/alarms?state=open").as_array().unwrap().iter().all(|a| a["id"] != id));
}

#[test]
fn writes_need_a_token_with_the_role_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "20000.0");
    with_people(&config, false);
    let server = Server::serve(&config, &[]);
    let get_as = |token: Option<&str>, path: &str| {
        let mut request = reqwest::blocking::Client::new().get(format!("{}{path}", server.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap().status().as_u16()
    };
    // Reads need a token here (anonymous_read = false); health and metrics stay open.
    assert_eq!(get_as(None, "/api/v1/alarms"), 401);
    assert_eq!(get_as(Some("guess"), "/api/v1/alarms"), 401);
    assert_eq!(get_as(Some(token_of("screen")), "/api/v1/alarms"), 200);
    assert_eq!(get_as(None, "/api/v1/health"), 200);
    assert_eq!(get_as(None, "/metrics"), 200);
    let alarms = |s: &Server| -> Vec<Value> {
        let response = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/alarms?state=all", s.base))
            .bearer_auth(token_of("screen"))
            .send()
            .unwrap();
        response.json::<Vec<Value>>().unwrap()
    };
    server.wait_until("the fault raises an alarm", Duration::from_secs(60), |s| !alarms(s).is_empty());
    let id = alarms(&server)[0]["id"].as_i64().unwrap();
    let ack = |token: Option<&str>| {
        let path = format!("/api/v1/alarms/{id}/acknowledge");
        server.post_as(token, &path, "application/json", b"{\"note\": \"mine\"}".to_vec())
    };
    let (status, body) = ack(None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = ack(Some("forged-token"));
    assert_eq!(status, 401, "{body}");
    let (status, body) = ack(Some(token_of("screen")));
    assert_eq!(status, 403, "a viewer cannot acknowledge: {body}");
    assert!(body["error"].as_str().unwrap().contains("viewer"), "{body}");
    assert_eq!(alarms(&server)[0]["state"], "raised", "nothing changed");
    let (status, body) = ack(Some(token_of("kim")));
    assert_eq!((status, body["acknowledged"]["by"].as_str()), (200, Some("kim")), "{body}");
}

/// What the webhook receiver saw: (headers, body) per request.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, Vec<u8>)>>>;

#[test]
fn alarms_reach_a_webhook_signed_and_retried_until_it_answers() {
    use axum::http::{HeaderMap, StatusCode};
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received: Received = std::sync::Arc::default();
    // The receiver is down for the first two attempts (503), then takes everything.
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let mut seen = seen.lock().unwrap();
                seen.push((headers, body.to_vec()));
                if seen.len() <= 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::NO_CONTENT }
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = tep_config(dir.path(), "20000.0");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\ntype = \"webhook\"\nname = \"cmms\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         secret = \"shared-secret\"\nretry_initial = \"100ms\"\nspool = \"{}/spool\"\n",
        dir.path().display()
    ));
    std::fs::write(&config, text).unwrap();
    let server = Server::serve(&config, &[]);
    server.wait_until("the alarm is delivered", Duration::from_secs(60), |s| {
        metric_of(s, "usan_sink_delivered_total{sink=\"cmms\"}") >= 1.0
    });

    let received = received.lock().unwrap().clone();
    assert!(received.len() >= 3, "two refusals, then the delivery: {}", received.len());
    let (first, last) = (&received[0].0, &received[2].0);
    assert_eq!(first["x-usan-delivery"], last["x-usan-delivery"], "a retry is the same delivery");
    assert_eq!(last["x-usan-event"], "alarm_raised");
    assert_eq!(last["content-type"], "application/json");
    let event: Value = serde_json::from_slice(&received[2].1).unwrap();
    assert_eq!((event["event"].as_str(), event["asset"].as_str()), (Some("alarm_raised"), Some("reactor")));
    // Every attempt is signed over its own timestamp and the body.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"shared-secret");
    for (headers, body) in &received {
        let signed = [headers["x-usan-timestamp"].as_bytes(), b".", body].concat();
        let hex = headers["x-usan-signature"].strip_prefix("sha256=").unwrap();
        let tag: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        assert!(ring::hmac::verify(&key, &signed, &tag).is_ok(), "signature of {headers:?}");
        let mut forged = signed.clone();
        forged.push(b' ');
        assert!(ring::hmac::verify(&key, &forged, &tag).is_err());
    }
    // Later events (the replay goes on) may still be on their way: the backlog drains.
    server.wait_until("the backlog drains", Duration::from_secs(60), |s| {
        metric_of(s, "usan_sink_backlog{sink=\"cmms\"}") == 0.0
    });
    assert!(metric_of(&server, "usan_sink_outage_seconds_total{sink=\"cmms\"}") > 0.0);
}

#[test]
fn an_alarm_nobody_acknowledges_is_escalated_once_and_every_step_reaches_the_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "20000.0");
    let mut text = std::fs::read_to_string(&config).unwrap();
    // The replay's source times are in the past: an alarm is overdue as soon as it is raised.
    text.push_str("\n[alarms]\nescalate_after = \"10m\"\n");
    std::fs::write(&config, text).unwrap();
    let server = Server::serve(&config, &[]);
    server.wait_until("the alarm is escalated", Duration::from_secs(60), |s| {
        s.get("/api/v1/alarms").as_array().unwrap().first().is_some_and(|a| a["escalated_at"].is_i64())
    });
    let id = server.get("/api/v1/alarms")[0]["id"].as_i64().unwrap();
    let (status, _) = server.post(&format!("/api/v1/alarms/{id}/acknowledge"), &json!({}));
    assert_eq!(status, 200);
    let (status, _) = server.post(&format!("/api/v1/alarms/{id}/assign"), &json!({"to": "lee"}));
    assert_eq!(status, 200);
    let (status, _) = server.post(&format!("/api/v1/alarms/{id}/clear"), &json!({"cause": "feed ratio upset"}));
    assert_eq!(status, 200);
    let events_of = |kind: &str| -> usize {
        std::fs::read_to_string(dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{kind}\"")) && l.contains(&format!("\"id\":{id},")))
            .count()
    };
    server.wait_until("the sinks hear of every step", Duration::from_secs(10), |_| events_of("alarm_cleared") == 1);
    for kind in ["alarm_raised", "alarm_escalated", "alarm_acknowledged", "alarm_assigned", "alarm_cleared"] {
        assert_eq!(events_of(kind), 1, "{kind}");
    }
    let notes = server.get(&format!("/api/v1/alarms/{id}"))["notes"].clone();
    let escalation = notes.as_array().unwrap().iter().find(|n| n["action"] == "escalate").unwrap().clone();
    assert_eq!(escalation["by"], "usan");
    assert!(escalation["text"].as_str().unwrap().contains("10m"), "{escalation}");
}

#[test]
fn declared_maintenance_silences_an_asset_and_can_end_early() {
    let dir = tempfile::tempdir().unwrap();
    // The replay starts now, as live data would, and spans about 50 hours.
    let config = tep_config(dir.path(), "20000.0");
    let origin = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = std::fs::read_to_string(&config).unwrap().replace("2026-01-01T00:00:00Z", &origin);
    std::fs::write(&config, text).unwrap();
    let server = Server::serve(&config, &[]);
    let (status, body) = server.post("/api/v1/maintenance", &json!({"asset": "boiler", "note": ""}));
    assert_eq!(status, 422, "{body}");
    let details = body["details"].to_string();
    for expected in ["`boiler` is not configured", "`note` must say", "give `to`"] {
        assert!(details.contains(expected), "{details}");
    }
    let window = json!({"asset": "reactor", "duration": "3d", "note": "catalyst change"});
    let (status, declared) = server.post("/api/v1/maintenance", &window);
    assert_eq!(status, 201, "{declared}");
    assert_eq!((declared["by"].as_str(), declared["asset"].as_str()), (Some("tester"), Some("reactor")));
    let listed = server.get("/api/v1/maintenance");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    server.wait_until("the fault is found but raises no alarm", Duration::from_secs(60), |s| {
        metric_of(s, "usan_alarms_suppressed_total") >= 5.0
    });
    assert!(server.get("/api/v1/alarms?state=all").as_array().unwrap().is_empty());
    assert!(metric_of(&server, "usan_findings_total") >= 5.0, "findings are still recorded");

    let id = declared["id"].as_i64().unwrap();
    let (status, ended) = server.post(&format!("/api/v1/maintenance/{id}/end"), &json!({}));
    assert_eq!(status, 200, "{ended}");
    assert!(server.get("/api/v1/maintenance").as_array().unwrap().is_empty());
    let (status, _) = server.post("/api/v1/maintenance/999/end", &json!({}));
    assert_eq!(status, 404);
}

#[test]
fn an_asset_in_its_quiet_operating_mode_raises_no_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "20000.0");
    let text = std::fs::read_to_string(&config).unwrap();
    // Every xmv_1 value of the replay is above -1e9: the reactor is always "in the mode".
    let quiet = text.replace(
        "id = \"reactor\"\n",
        "id = \"reactor\"\nsuppress_alarms_when = { signal = \"xmv_1\", above = -1e9 }\n",
    );
    assert_ne!(quiet, text);
    std::fs::write(&config, &quiet).unwrap();
    let server = Server::serve(&config, &[]);
    server.wait_until("the fault is found but raises no alarm", Duration::from_secs(60), |s| {
        metric_of(s, "usan_alarms_suppressed_total") >= 5.0
    });
    assert!(server.get("/api/v1/alarms?state=all").as_array().unwrap().is_empty());
    drop(server);

    let broken =
        text.replace("id = \"reactor\"\n", "id = \"reactor\"\nsuppress_alarms_when = { signal = \"speed\" }\n");
    std::fs::write(&config, broken).unwrap();
    let out = usan(&["check", config.to_str().unwrap()]);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in ["`speed` is not a signal of this asset", "give `equals`, `below` or `above`"] {
        assert!(errors.contains(expected), "{errors}");
    }
}

#[test]
fn metrics_are_served_in_the_format_the_scraper_asks_for() {
    let mut plant = Plant::start("[[assets]]\nid = \"a\"\nsignals = [\"x\"]\n");
    plant.push("a", &[("x", 1.0)]);
    let (kind, text) = plant.server.get_accepting("/metrics", "text/plain;version=0.0.4;q=1");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    assert!(text.contains("# TYPE usan_samples_in_total counter\nusan_samples_in_total 1\n"), "{text}");
    // What Prometheus sends: OpenMetrics first.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                  text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (kind, text) = plant.server.get_accepting("/metrics", accept);
    assert!(kind.starts_with("application/openmetrics-text; version=1.0.0"), "{kind}");
    assert!(text.contains("# TYPE usan_samples_in counter\nusan_samples_in_total 1\n"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// A sample is identified by asset, signal and timestamp: a resend is
/// stored once, a resend with another value replaces the stored one, even
/// after its frame was scored and stored (and across a restart).
#[test]
fn a_resend_is_stored_once_and_another_value_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "resend.toml",
        "[store]\ntype = \"sqlite\"\npath = \"{dir}/resend.db\"\nflush_interval = \"50ms\"\n\n\
         [[sources]]\ntype = \"http\"\nname = \"push\"\n\n[[assets]]\nid = \"pump-1\"\nsignals = [\"temp\", \"flow\"]\n",
    );
    let t0 = 1_700_000_000_000i64;
    let push = |server: &Server, samples: &[(i64, &str, f64)]| {
        let samples: Vec<Value> = samples
            .iter()
            .map(|(k, s, v)| json!({"asset": "pump-1", "signal": s, "ts": t0 + k * 1000, "value": v}))
            .collect();
        let (status, body) = server.post("/api/v1/samples", &json!({ "samples": samples }));
        assert_eq!(status, 202, "{body}");
    };
    let stored = |server: &Server, signal: &str| -> Vec<(i64, f64, i64)> {
        let body = server.get(&format!("/api/v1/samples?asset=pump-1&signal={signal}&max_points=1000"));
        body["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                ((p["ts"].as_i64().unwrap() - t0) / 1000, p["value"].as_f64().unwrap(), p["count"].as_i64().unwrap())
            })
            .collect()
    };
    let server = Server::serve(&config, &[]);
    push(&server, &[(0, "temp", 20.0), (0, "flow", 1.0), (1, "temp", 21.0), (1, "flow", 2.0)]);
    server.wait_until("both frames are stored", Duration::from_secs(20), |s| stored(s, "temp").len() == 2);
    // The same samples again, then frame 0's temperature with another value.
    push(&server, &[(0, "temp", 20.0), (0, "flow", 1.0), (1, "temp", 21.0), (1, "flow", 2.0)]);
    push(&server, &[(0, "temp", 25.0)]);
    server.wait_until("the new value replaces the stored one", Duration::from_secs(20), |s| {
        stored(s, "temp").first().is_some_and(|p| p.1 == 25.0)
    });
    assert_eq!(stored(&server, "temp"), vec![(0, 25.0, 1), (1, 21.0, 1)]);
    assert_eq!(stored(&server, "flow"), vec![(0, 1.0, 1), (1, 2.0, 1)]);
    assert!(server.terminate().success());

    let server = Server::serve(&config, &[]);
    push(&server, &[(1, "flow", 3.0)]);
    server.wait_until("after a restart too", Duration::from_secs(20), |s| {
        stored(s, "flow").get(1).is_some_and(|p| p.1 == 3.0)
    });
    assert_eq!(stored(&server, "flow"), vec![(0, 1.0, 1), (1, 3.0, 1)]);
    assert_eq!(stored(&server, "temp"), vec![(0, 25.0, 1), (1, 21.0, 1)]);
}

#[test]
fn export_writes_frames_scores_and_the_plants_labels_for_training() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "\"max\"");
    let server = Server::serve(&config, &[]);
    server.wait_until("all 1000 frames are stored", Duration::from_secs(120), |s| {
        s.get_raw("/metrics").1.contains("usan_frames_stored_total 1000")
    });
    // The plant's own labels: a closed alarm's cause, a maintenance window.
    let alarm = server.get("/api/v1/alarms?state=all")[0].clone();
    let id = alarm["id"].as_i64().unwrap();
    let (status, body) = server.post(&format!("/api/v1/alarms/{id}/acknowledge"), &json!({"note": "seen"}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post(&format!("/api/v1/alarms/{id}/clear"), &json!({"cause": "feed ratio, A/C"}));
    assert_eq!(status, 200, "{body}");
    let window = json!({"asset": "reactor", "from": sample_ts(100), "to": sample_ts(110), "note": "valve swap"});
    let (status, body) = server.post("/api/v1/maintenance", &window);
    assert!(status == 200 || status == 201, "{body}");
    assert!(server.terminate().success());

    let out = dir.path().join("export");
    let result = usan(&["export", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let mut reader = csv::Reader::from_path(out.join("reactor.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(&header[..3], ["ts", "time", "xmeas_1"]);
    assert_eq!(&header[header.len() - 5..], ["@score/pca", "anomalous", "alarm", "alarm_cause", "maintenance"]);
    let rows: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
    assert_eq!(rows.len(), 1000, "every stored frame, oldest first");
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let sample = |row: &Vec<String>| (row[0].parse::<i64>().unwrap() - TEP_ORIGIN_MS) / SAMPLE_MS;
    assert!(rows.windows(2).all(|w| sample(&w[0]) < sample(&w[1])));
    assert_eq!(rows[0][1], "2026-01-01T00:03:00.000Z");
    for row in &rows {
        let s = sample(row);
        let anomalous = row[column("anomalous")] == "pca";
        assert!(!anomalous || s >= 801, "sample {s} labelled anomalous");
        assert_eq!(row[column("maintenance")] == "1", (100..110).contains(&s), "sample {s}");
        let labelled = row[column("alarm_cause")] == "feed ratio, A/C";
        assert_eq!(row[column("alarm")] == id.to_string(), labelled, "sample {s}");
        assert_eq!(row[column("@score/pca")].is_empty(), s <= 500, "learning frames have no score: sample {s}");
    }
    let anomalous = rows.iter().filter(|r| r[column("anomalous")] == "pca").count();
    assert!(anomalous >= 150, "{anomalous}");
    let alarms = std::fs::read_to_string(out.join("alarms.csv")).unwrap();
    assert!(alarms.lines().nth(1).unwrap().contains(",cleared,") && alarms.contains("\"feed ratio, A/C\""), "{alarms}");
    let maintenance = std::fs::read_to_string(out.join("maintenance.csv")).unwrap();
    assert!(maintenance.lines().nth(1).unwrap().contains("valve swap"), "{maintenance}");

    let bad =
        usan(&["export", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--asset", "boiler"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no asset boiler"));
}

#[test]
fn parquet_history_goes_out_for_training_and_comes_back_as_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let config = tep_config(dir.path(), "\"max\"");
    let server = Server::serve(&config, &[]);
    server.wait_until("all 1000 frames are stored", Duration::from_secs(120), |s| {
        s.get_raw("/metrics").1.contains("usan_frames_stored_total 1000")
    });
    assert!(server.terminate().success());
    let out = dir.path().join("export");
    let result =
        usan(&["export", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--format", "parquet"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let parquet = out.join("reactor.parquet");

    // The data team's reader sees typed columns: a UTC timestamp, doubles
    // with nulls where nothing was scored yet, text labels.
    if let Some(python) = onnx_python("pyarrow") {
        let script = r#"
import sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
assert t.num_rows == 1000, t.num_rows
assert str(t.schema.field("ts").type) == "timestamp[ms, tz=UTC]", t.schema
assert t.column("@score/pca").null_count == 500, "the learning frames have no score"
assert t.column("xmeas_1").null_count == 0
labels = t.column("anomalous").to_pylist()
assert labels.count("pca") >= 150 and all(v in (None, "pca") for v in labels), labels
# Written back as pandas does (through pyarrow): nanosecond timestamps.
import pyarrow as pa
signals = [f"xmeas_{i}" for i in range(1, 42)] + [f"xmv_{i}" for i in range(1, 12)]
ts = t.column("ts").cast(pa.timestamp("ns", tz="UTC"))
pq.write_table(pa.table([ts] + [t.column(s) for s in signals], names=["ts"] + signals), sys.argv[2])
"#;
        let pandas = dir.path().join("pandas.parquet");
        let run = std::process::Command::new(python)
            .args(["-c", script, parquet.to_str().unwrap(), pandas.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        // A file source replays both files: the same frames, the same findings.
        for (file, name) in [(&parquet, "usan"), (&pandas, "pandas")] {
            let replay = dir.path().join(format!("replay-{name}.toml"));
            let text = std::fs::read_to_string(&config)
                .unwrap()
                .replace(
                    &repo().join("tests/data/tep/tep_normal_then_idv1.csv").display().to_string(),
                    &file.display().to_string(),
                )
                .replace("time_column = \"sample\"", "time_column = \"ts\"")
                .replace("time_unit_s = 180.0\n", "")
                .replace("time_origin = \"2026-01-01T00:00:00Z\"\n", "")
                .replace("tep.db", &format!("replay-{name}.db"))
                .replace("events.jsonl", &format!("events-{name}.jsonl"));
            std::fs::write(&replay, text).unwrap();
            let server = Server::serve(&replay, &[]);
            server.wait_until("the replay is stored", Duration::from_secs(120), |s| {
                s.get_raw("/metrics").1.contains("usan_frames_stored_total 1000")
            });
            assert!(server.terminate().success());
            let [original, replayed] =
                [dir.path().join("tep.db"), dir.path().join(format!("replay-{name}.db"))].map(|db| {
                    let db = open_store(&db);
                    let frames: i64 = db.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0)).unwrap();
                    let findings: Vec<(i64, bool)> = db
                        .prepare("SELECT ts, anomalous FROM findings ORDER BY ts")
                        .unwrap()
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    (frames, findings)
                });
            assert_eq!(original, replayed, "{name}'s Parquet replays as the CSV did");
        }
    }
}
