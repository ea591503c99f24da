//! `usan demo`: a plant of NASA C-MAPSS turbofan engines, monitored live.
//!
//! The configuration (`examples/demo.toml`) and its data sample are built
//! into the binary, so the demo needs nothing but the binary: it writes them
//! to a temporary folder, serves the API, replays the engines on an
//! accelerated clock and prints a live view of asset health and alarms.

use super::serve::{ServeOptions, serve};
use crate::config::Config;
use crate::store::{SqliteConfig, StoreConfig};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// `usan demo` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Stop after this long (e.g. `30s`); runs until Ctrl-C when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Keep the demo's store in this file instead of a temporary one.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Replay speed: source seconds per wall second (36000 plays 10 engine cycles a second).
    #[arg(long, default_value_t = 36000.0)]
    speed: f64,
}

const DEMO_CONFIG: &str = include_str!("../../examples/demo.toml");
/// The demo's engines (C-MAPSS FD001 sample).
pub const DEMO_DATA: &str = include_str!("../../examples/data/cmapss_fd001_demo.csv");
/// The demo's RUL model.
pub const DEMO_RUL_MODEL: &str = include_str!("../../examples/models/fd001_demo.rul.json");

/// Run `usan demo`.
///
/// # Errors
/// As [`demo`].
pub fn run(args: Args) -> anyhow::Result<()> {
    super::runtime()?.block_on(demo(&args.listen, args.duration, args.store, args.speed))
}

/// Run the demo until `duration` has passed or Ctrl-C.
///
/// # Errors
/// When the demo files cannot be written or the engine cannot start.
pub async fn demo(listen: &str, duration: Option<Duration>, store: Option<PathBuf>, speed: f64) -> anyhow::Result<()> {
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
        let StoreConfig::Sqlite(SqliteConfig { path: store_path, .. }) = &mut config.store;
        *store_path = path;
    }
    // Writes (acknowledging an alarm) need a token: the demo makes an admin one
    // for this run (or takes USAN_DEMO_TOKEN, for scripted demos and tests).
    let token = match std::env::var("USAN_DEMO_TOKEN") {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => crate::api::auth::new_token()?.0,
    };
    config.auth.tokens.push(crate::api::auth::TokenConfig {
        name: "demo".into(),
        role: crate::api::auth::Role::Admin,
        sha256: crate::api::auth::sha256_hex(&token),
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
