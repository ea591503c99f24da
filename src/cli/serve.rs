//! `usan serve`: the engine plus the API until Ctrl-C, SIGTERM, a set
//! duration, or (with `--exit-when-done`) the end of every replay.

use crate::api::{ApiState, router};
use crate::config::Config;
use crate::pipeline::Engine;
use anyhow::Context;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;
use usan_core::alarm::AlarmState;

/// `usan serve` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Address of the HTTP API (overrides `[server] listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Stop after this long (e.g. `10m`); runs until Ctrl-C or SIGTERM when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop once every replay source has reached its end and everything is stored.
    #[arg(long)]
    exit_when_done: bool,
}

/// Run `usan serve`.
///
/// # Errors
/// As [`serve`], and when the configuration cannot be loaded.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let outcome = runtime.block_on(async {
        let mut config = Config::load(&args.config)?;
        if let Some(listen) = args.listen {
            config.server.listen = listen;
        }
        let options = ServeOptions { duration: args.duration, exit_when_done: args.exit_when_done, live_view: false };
        serve(config, options).await
    });
    // A store call still running after a stop that ran out of time is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    outcome
}

/// How long the API gets to finish its requests once asked to stop.
const API_STOP_LIMIT: Duration = Duration::from_secs(2);
/// How long stopping may take in all: the API, the sources, then draining
/// and committing what was accepted (a service manager's patience is ~10 s).
const STOP_LIMIT: Duration = Duration::from_secs(8);

/// How `serve` ends and what it prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop when every replay has ended and everything is stored.
    pub exit_when_done: bool,
    /// Print a live view of asset health and alarms.
    pub live_view: bool,
}

/// Run until told to stop, then flush everything accepted.
///
/// # Errors
/// When the engine cannot start, the address cannot be bound, or a source failed.
pub async fn serve(config: Config, options: ServeOptions) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let engine = Engine::start(config.engine()).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another usan running? use --listen)"))?;
    tracing::info!("API on http://{listen}/api/v1/health");
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = ApiState::new(&engine, &config.server, &config.auth);
    let app = router(api.clone());
    let limits = config.server.limits();
    let server = tokio::spawn(crate::api::listen::serve(listener, app, limits, async {
        let _ = server_stopped.await;
    }));

    let reason = wait_for_stop(&engine, options).await;
    tracing::info!("stopping: {reason}; flushing what was accepted");
    // Open dashboards' streams end first (a graceful shutdown waits for
    // them); this handle must not outlive the server: it holds the
    // pipeline's senders, which the engine waits to see closed.
    let stopping = async move {
        api.close_streams();
        drop(api);
        let _ = stop_server.send(());
        let mut server = server;
        match tokio::time::timeout(API_STOP_LIMIT, &mut server).await {
            Ok(finished) => finished.context("API task failed")?.context("API server failed")?,
            Err(_) => {
                // Clients that hold their connections open (or stall) are cut off.
                server.abort();
                tracing::warn!("the API did not finish its requests within {API_STOP_LIMIT:?}; connections closed");
            }
        }
        if options.live_view {
            println!("{}", live_view(&engine));
        }
        engine.stop().await
    };
    match tokio::time::timeout(STOP_LIMIT, stopping).await {
        Ok(outcome) => outcome,
        Err(_) => anyhow::bail!(
            "could not stop within {STOP_LIMIT:?}; what was acknowledged is in the store's journal and is taken up at the next start"
        ),
    }
}

async fn wait_for_stop(engine: &Engine, options: ServeOptions) -> &'static str {
    let deadline = async {
        match options.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let done = async {
        if options.exit_when_done {
            engine.wait_for_sources().await;
            engine.wait_idle().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let live = async {
        if !options.live_view {
            return std::future::pending::<()>().await;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            println!("{}", live_view(engine));
        }
    };
    tokio::select! {
        _ = deadline => "duration reached",
        _ = done => "every replay has ended",
        _ = terminate() => "signal received",
        _ = live => "live view ended",
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn terminate() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
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
