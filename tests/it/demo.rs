//! `usan demo`: runs with no flags and no services, lists its engines while
//! it runs, estimates each engine's remaining useful life, and alarms on
//! engines approaching failure, never in the healthy start.

use crate::harness::*;
use std::collections::HashMap;
use std::time::Duration;

const ORIGIN_MS: i64 = 1_767_225_600_000; // the demo's time_origin
const CYCLE_MS: i64 = 3_600_000; // one cycle is mapped to one hour

/// Each demo engine's life in cycles, from the shipped sample.
fn lives() -> HashMap<String, i64> {
    let text = std::fs::read_to_string(repo().join("examples/data/cmapss_fd001_demo.csv")).unwrap();
    let mut lives = HashMap::new();
    for line in text.lines().skip(1) {
        let mut cells = line.split(',');
        let unit = cells.next().unwrap();
        let cycle: i64 = cells.next().unwrap().parse().unwrap();
        let life = lives.entry(format!("engine-{unit}")).or_insert(0);
        *life = cycle.max(*life);
    }
    lives
}

#[test]
fn demo_runs_30s_and_alarms_only_on_failing_engines() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo.db");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server =
        Server::spawn(&["demo", "--duration", "30s", "--listen", &listen, "--store", store.to_str().unwrap()], port);

    let lives = lives();
    let assets = server.get("/api/v1/assets");
    let ids: Vec<&str> = assets.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|id| lives.contains_key(*id)), "{ids:?}");
    server.wait_until("the engines are monitored", Duration::from_secs(20), |s| {
        s.get("/api/v1/assets").as_array().unwrap().iter().all(|a| a["detectors"][0]["status"] == "monitoring")
    });

    server.wait_until("every engine has a RUL estimate", Duration::from_secs(20), |s| {
        ids.iter().all(|id| s.get(&format!("/api/v1/assets/{id}/rul"))["estimates"][0]["rul"].is_number())
    });

    let status = server.wait(Duration::from_secs(60));
    assert!(status.success(), "usan demo --duration 30s exits 0");

    let db = open_store(&store);
    let mut stmt = db.prepare("SELECT asset, raised_at FROM alarms WHERE detector = 'rul'").unwrap();
    let rul_alarms: Vec<(String, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert!(rul_alarms.len() >= 8, "engines run to failure get a RUL alarm: {rul_alarms:?}");
    for (asset, raised_at) in &rul_alarms {
        let left = lives[asset] - (raised_at - ORIGIN_MS) / CYCLE_MS;
        assert!((0..=40).contains(&left), "{asset}: RUL alarm {left} cycles before failure (horizon 30)");
    }
    let mut stmt = db.prepare("SELECT asset, raised_at FROM alarms").unwrap();
    let alarms: Vec<(String, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert!(!alarms.is_empty(), "at least one engine approaching failure raised an alarm");
    for (asset, raised_at) in &alarms {
        let cycle = (raised_at - ORIGIN_MS) / CYCLE_MS;
        let life = lives[asset];
        assert!(cycle > 50, "{asset}: alarm at cycle {cycle}, inside the healthy start");
        assert!(life - cycle <= 90, "{asset}: alarm at cycle {cycle} of {life}: approaching failure");
    }
}
