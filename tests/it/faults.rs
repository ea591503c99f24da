//! Faults of the machine under usan: its disk fills up. (More of issue 23's
//! faults — a damaged store or spool at start, a broker down for minutes,
//! peers restarted — join this module.)

use crate::harness::{Server, required, wait_for, write_config};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A tmpfs of `size` mounted on `dir` for the test's life.
pub(crate) struct SmallDisk<'a> {
    dir: &'a Path,
}

impl<'a> SmallDisk<'a> {
    pub(crate) fn mount(dir: &'a Path, size: &str) -> Option<SmallDisk<'a>> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    pub(crate) fn resize(&self, size: &str) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.dir).status().unwrap();
        assert!(status.success(), "remount {}", self.dir.display());
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir).status();
    }
}

/// POST a push as the tests' admin: status, body and `Retry-After`; `None`
/// when no answer came (the engine held the request back).
fn push(base: &str, body: &serde_json::Value) -> Option<(u16, serde_json::Value, Option<String>)> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let response = client
        .post(format!("{base}/api/v1/samples"))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .json(body)
        .send()
        .ok()?;
    let status = response.status().as_u16();
    let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    Some((status, response.json().unwrap_or(serde_json::Value::Null), retry))
}

/// With the store's disk full, a push is refused with 503 and Retry-After
/// (nothing of it kept, nothing corrupted); once space returns, pushes are
/// taken again and everything acknowledged is stored.
#[test]
fn a_full_disk_refuses_pushes_with_503_then_recovers() {
    let outer = tempfile::tempdir().unwrap();
    let disk_dir = outer.path().join("disk");
    std::fs::create_dir_all(&disk_dir).unwrap();
    let disk = SmallDisk::mount(&disk_dir, "3m");
    if !required(disk.is_some(), "permission to mount a tmpfs (root)") {
        return;
    }
    let disk = disk.unwrap();
    let text = format!(
        "[store]\ntype = \"sqlite\"\npath = \"{}/full.db\"\n\n[[sources]]\ntype = \"http\"\nname = \"push\"\n\n[[assets]]\nid = \"pump-1\"\nsignals = [\"temp\", \"flow\"]\n",
        disk_dir.display()
    );
    let server = Server::serve(&write_config(outer.path(), "full.toml", &text), &[]);
    let t0 = 1_700_000_000_000i64;
    let batch = |first: i64| {
        let samples: Vec<serde_json::Value> = (first..first + 500)
            .flat_map(|k| {
                [
                    json!({"asset": "pump-1", "signal": "temp", "ts": t0 + k * 1000, "value": k as f64}),
                    json!({"asset": "pump-1", "signal": "flow", "ts": t0 + k * 1000, "value": 0.5}),
                ]
            })
            .collect();
        json!({ "samples": samples })
    };
    // Push until the disk is full.
    let mut acknowledged = 0i64;
    let mut refused = None;
    for round in 0..10_000 {
        let (status, body, retry_after) = push(&server.base, &batch(round * 500)).expect("an answer");
        match status {
            202 => acknowledged = (round + 1) * 500,
            503 => {
                refused = Some((body, retry_after));
                break;
            }
            other => panic!("push answered {other}: {body}"),
        }
    }
    let (body, retry_after) = refused.expect("the disk never filled");
    assert!(body["error"].as_str().unwrap().contains("journal"), "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(acknowledged > 0);

    // Space returns: pushes are taken again.
    disk.resize("64m");
    let next = acknowledged;
    wait_for("a push is accepted again", Duration::from_secs(60), || {
        push(&server.base, &batch(next)).is_some_and(|(status, ..)| status == 202)
    });
    let last = next + 499;
    assert!(server.terminate().success(), "usan stops cleanly");

    let db = crate::harness::open_store(&disk_dir.join("full.db"));
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    // Every frame acknowledged before the disk filled, and after, is stored.
    let stored: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM frames WHERE ts < ?1 OR ts BETWEEN ?2 AND ?3",
            [t0 + acknowledged * 1000, t0 + (last - 499) * 1000, t0 + last * 1000],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, acknowledged + 500, "frames acknowledged: {} + 500", acknowledged);
}

/// A store file damaged while usan was down (garbage in place of the
/// database, or a database cut short) is moved aside with its WAL, kept for
/// an expert, and usan starts on an empty store and takes pushes.
#[test]
fn a_damaged_store_is_moved_aside_and_usan_runs_on_a_fresh_one() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 2] = [
        ("garbage in place of the database", |db| std::fs::write(db, vec![0x5a; 64 * 1024]).unwrap()),
        ("a database cut short", |db| {
            let len = std::fs::metadata(db).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(db).unwrap().set_len(len / 2).unwrap();
        }),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let text = "[store]\ntype = \"sqlite\"\npath = \"{dir}/usan.db\"\n\n[[sources]]\ntype = \"http\"\nname = \"push\"\n\n[[assets]]\nid = \"pump-1\"\nsignals = [\"temp\", \"flow\"]\n";
        let config = write_config(dir.path(), "usan.toml", text);
        let t0 = 1_700_000_000_000i64;
        let batch = |from: i64, to: i64| {
            let samples: Vec<serde_json::Value> = (from..to)
                .flat_map(|k| {
                    [
                        json!({"asset": "pump-1", "signal": "temp", "ts": t0 + k * 1000, "value": k as f64}),
                        json!({"asset": "pump-1", "signal": "flow", "ts": t0 + k * 1000, "value": 0.5}),
                    ]
                })
                .collect();
            json!({ "samples": samples })
        };
        // A store with history: 20,000 frames.
        let server = Server::serve(&config, &[]);
        for part in 0..4 {
            let (status, body, _) = push(&server.base, &batch(part * 5000, (part + 1) * 5000)).unwrap();
            assert_eq!(status, 202, "{what}: {body}");
        }
        assert!(server.terminate().success());
        let db = dir.path().join("usan.db");
        damage(&db);
        let damaged = std::fs::read(&db).unwrap();

        let server = Server::serve(&config, &[]);
        assert_eq!(crate::harness::metric_of(&server, "usan_store_quarantined_total"), 1.0, "{what}");
        let (status, body, _) = push(&server.base, &batch(30_000, 30_010)).unwrap();
        assert_eq!(status, 202, "{what}: {body}");
        assert!(server.terminate().success(), "{what}: usan stops cleanly");

        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("usan.db.damaged-"))
            .collect();
        let main =
            aside.iter().find(|p| !p.to_string_lossy().ends_with("-wal") && !p.to_string_lossy().ends_with("-shm"));
        assert_eq!(std::fs::read(main.expect("the damaged file kept")).unwrap(), damaged, "{what}: kept as it was");
        let db = crate::harness::open_store(&db);
        let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(integrity, "ok", "{what}");
        let frames: i64 = db.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0)).unwrap();
        assert_eq!(frames, 10, "{what}: the fresh store holds what came after");
    }
}
