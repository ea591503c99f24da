//! A plant in a few lines, so a test reads like what happens in it:
//!
//! ```text
//! let mut plant = Plant::start(PUMPS);                  // `usan serve` on this configuration
//! plant.push("pump-1", &[("flow", 31.8), ("pressure", 1.02)]);   // one frame, the next second
//! let alarm = plant.wait_for_alarm("pump-1", "multivariate");
//! assert_eq!(plant.frame_of(&alarm["raised_at"]), 420);
//! ```
//!
//! The configuration is TOML text (an example file's, or a test's own);
//! the store goes to a temporary folder and an HTTP push source is added
//! when the text has none. Frames are pushed through `POST /api/v1/samples`
//! one second apart, starting an hour ago; every wait has a deadline.

use crate::harness::{Server, write_config};
use serde_json::{Value, json};
use std::time::Duration;

/// How long a plant waits for anything before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `usan serve` fed by the test.
pub struct Plant {
    /// The server, for the API calls a scenario has no words for.
    pub server: Server,
    /// Source time of the first frame pushed, Unix ms.
    pub start: i64,
    /// Frames pushed so far per asset (the next frame's index).
    pushed: std::collections::HashMap<String, i64>,
    _dir: tempfile::TempDir,
}

impl Plant {
    /// `usan serve` on the configuration `text` (`{dir}` is the plant's
    /// temporary folder; a `[store]` path without a folder lands there).
    pub fn start(text: &str) -> Plant {
        let dir = tempfile::tempdir().unwrap();
        let mut text = text.to_string();
        if !text.contains("type = \"http\"") {
            text.push_str("\n[[sources]]\ntype = \"http\"\nname = \"scenario\"\n");
        }
        let config = write_config(dir.path(), "plant.toml", &text);
        let server = Server::serve(&config, &[]);
        let start = chrono::Utc::now().timestamp_millis() - 3_600_000;
        Plant { server, start, pushed: std::collections::HashMap::new(), _dir: dir }
    }

    /// The configuration of an example in `examples/`, its store moved to the plant's folder.
    pub fn example(name: &str) -> String {
        let text = std::fs::read_to_string(crate::harness::repo().join("examples").join(name)).unwrap();
        let stem = name.trim_end_matches(".toml");
        text.replace(&format!("path = \"{stem}.db\""), &format!("path = \"{{dir}}/{stem}.db\""))
    }

    /// One frame of `asset`, one second after its previous one.
    pub fn push(&mut self, asset: &str, values: &[(&str, f64)]) {
        let frame = self.pushed.entry(asset.to_string()).or_insert(0);
        let ts = self.start + *frame * 1000;
        *frame += 1;
        let samples: Vec<Value> = values
            .iter()
            .map(|(signal, value)| json!({"asset": asset, "signal": signal, "ts": ts, "value": value}))
            .collect();
        let (status, body) = self.server.post("/api/v1/samples", &json!({ "samples": samples }));
        assert_eq!(status, 202, "pushing frame {} of {asset}: {body}", *frame - 1);
    }

    /// Wait until the engine has assembled every frame pushed to `asset`
    /// (the last one is held back until a later one, or a flush, closes it).
    pub fn wait_for_frames(&self, asset: &str) {
        let pushed = self.pushed.get(asset).copied().unwrap_or(0) as u64;
        let path = format!("/api/v1/assets/{asset}");
        self.server.wait_until(&format!("{pushed} frames of {asset} are assembled"), PATIENCE, |s| {
            s.get(&path)["frames"].as_u64().unwrap_or(0) + 1 >= pushed
        });
    }

    /// Every alarm of `asset` raised by `detector`, in any state, newest first.
    pub fn alarms(&self, asset: &str, detector: &str) -> Vec<Value> {
        let alarms = self.server.get(&format!("/api/v1/alarms?state=all&asset={asset}"));
        alarms.as_array().unwrap().iter().filter(|a| a["detector"] == detector).cloned().collect()
    }

    /// The first alarm `detector` raised on `asset`, once there is one.
    pub fn wait_for_alarm(&self, asset: &str, detector: &str) -> Value {
        self.server.wait_until(&format!("{detector} raises an alarm on {asset}"), PATIENCE, |_| {
            !self.alarms(asset, detector).is_empty()
        });
        self.alarms(asset, detector).pop().unwrap()
    }

    /// The stored findings of `asset` (newest first, at most `limit`), once there are some.
    pub fn wait_for_findings(&self, asset: &str, limit: usize) -> Vec<Value> {
        let path = format!("/api/v1/findings?asset={asset}&limit={limit}");
        self.server.wait_until(&format!("findings of {asset} are stored"), PATIENCE, |s| {
            !s.get(&path).as_array().unwrap().is_empty()
        });
        self.server.get(&path).as_array().unwrap().clone()
    }

    /// The index of the frame stamped `ts` (a JSON number of Unix ms).
    pub fn frame_of(&self, ts: &Value) -> i64 {
        (ts.as_i64().unwrap() - self.start) / 1000
    }
}
