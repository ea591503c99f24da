//! `usan demo`: a plant of NASA C-MAPSS turbofan engines, monitored live.
//!
//! The configuration (`examples/demo.toml`) and its data sample are built
//! into the binary, so the demo needs nothing but the binary: it writes them
//! to a temporary folder, serves the API, replays the engines on an
//! accelerated clock and prints a live view of asset health and alarms.

use crate::config::{Config, StoreConfig};
use crate::pipeline::Engine;
use crate::serve::{ServeOptions, serve};
use anyhow::Context;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;
use usan_core::alarm::AlarmState;

const DEMO_CONFIG: &str = include_str!("../examples/demo.toml");
/// The demo's engines (C-MAPSS FD001 sample).
pub const DEMO_DATA: &str = include_str!("../examples/data/cmapss_fd001_demo.csv");
/// The demo's RUL model.
pub const DEMO_RUL_MODEL: &str = include_str!("../examples/models/fd001_demo.rul.json");

/// Run the demo until `duration` has passed or Ctrl-C.
///
/// # Errors
/// When the demo files cannot be written or the engine cannot start.
pub async fn run(listen: &str, duration: Option<Duration>, store: Option<PathBuf>, speed: f64) -> anyhow::Result<()> {
    anyhow::ensure!(speed.is_finite() && speed > 0.0, "--speed must be a positive number, got {speed}");
    let dir = std::env::temp_dir().join(format!("usan-demo-{}", std::process::id()));
    for sub in ["data", "models"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(dir.join("models/fd001_demo.rul.json"), DEMO_RUL_MODEL)?;
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, DEMO_CONFIG)?;
    std::fs::write(dir.join("data/cmapss_fd001_demo.csv"), DEMO_DATA)?;
    let mut config = Config::load(&config_path)?;
    config.server.listen = listen.to_string();
    for source in &mut config.sources {
        if let crate::source::SourceConfig::File(replay) = source {
            replay.speed = crate::source::file::Speed::Factor(speed);
        }
    }
    if let Some(path) = store {
        let StoreConfig::Sqlite { path: store_path, .. } = &mut config.store;
        *store_path = path;
    }
    // Writes (acknowledging an alarm) need a token: the demo makes an admin one
    // for this run (or takes USAN_DEMO_TOKEN, for scripted demos and tests).
    let token = match std::env::var("USAN_DEMO_TOKEN") {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => crate::auth::new_token()?.0,
    };
    config.auth.tokens.push(crate::auth::TokenConfig {
        name: "demo".into(),
        role: crate::auth::Role::Admin,
        sha256: crate::auth::sha256_hex(&token),
    });
    println!(
        "usan demo: {} C-MAPSS engines learn their healthy cycles, then run to failure.\n\
         Dashboard: http://{listen}/  (log in with the token below to act on alarms)\n\
         API: http://{listen}/api/v1/assets  alarms: http://{listen}/api/v1/alarms  metrics: http://{listen}/metrics\n\
         API token for this run (admin, needed to act on alarms): {token}\n",
        config.assets.len()
    );
    let result = serve(config, ServeOptions { duration, exit_when_done: false, live_view: true }).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A plain-text table of every asset's health, score and open alarms.
#[must_use]
pub fn live_view(engine: &Engine) -> String {
    let open = engine
        .store
        .alarms(&crate::store::AlarmQuery { states: AlarmState::OPEN.to_vec(), limit: 1000, ..Default::default() })
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "── {} assets │ {} samples in │ {} frames │ {} findings │ {} alarms raised, {} open ──",
        engine.plant.assets.len(),
        engine.metrics.samples_in.get(),
        engine.metrics.frames.get(),
        engine.metrics.findings.get(),
        engine.metrics.alarms_raised.get(),
        open.len()
    );
    let _ = writeln!(
        out,
        "{:<14} {:<10} {:>6}  {:<22} {:<16} top signals",
        "asset", "health", "frames", "score / threshold", "RUL (90 %)"
    );
    for (i, asset) in engine.plant.assets.iter().enumerate() {
        let live = engine.live.get(i).unwrap_or_default();
        let first = live.detectors.first();
        let score = match first {
            Some(d) if d.status == "learning" => {
                format!("learning {}/{}", d.baseline_frames, d.baseline_needed)
            }
            Some(d) => {
                format!("{} {:.2} / {:.2}", d.name, d.score.unwrap_or(f64::NAN), d.threshold.unwrap_or(f64::NAN))
            }
            None => "-".into(),
        };
        let top = first
            .map(|d| {
                d.top_signals
                    .iter()
                    .take(3)
                    .map(|c| format!("{} {:.2}", c.signal, c.value))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let rul = live
            .rul
            .first()
            .and_then(|r| {
                let (rul, lower, upper) = (r.rul?, r.lower?, r.upper?);
                Some(format!("{rul:.0} ({lower:.0}–{upper:.0})"))
            })
            .unwrap_or_else(|| "-".into());
        let alarm = if open.iter().any(|a| a.asset == asset.path.asset) { " [ALARM]" } else { "" };
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:>6}  {:<22} {:<16} {top}{alarm}",
            asset.path.asset,
            live.health(),
            live.frames,
            score,
            rul
        );
    }
    out
}
