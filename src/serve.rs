//! `usan serve`: the engine plus the API until Ctrl-C, SIGTERM, a set
//! duration, or (with `--exit-when-done`) the end of every replay.

use crate::api::{ApiState, router};
use crate::config::Config;
use crate::pipeline::Engine;
use anyhow::Context;
use std::time::Duration;

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
    let engine = Engine::start(config).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another usan running? use --listen)"))?;
    tracing::info!("API on http://{listen}/api/v1/health");
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = ApiState::new(&engine);
    let app = router(api.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = server_stopped.await;
            })
            .await
    });

    let reason = wait_for_stop(&engine, options).await;
    tracing::info!("stopping: {reason}; flushing what was accepted");
    // Open dashboards' streams end first (a graceful shutdown waits for
    // them); this handle must not outlive the server: it holds the
    // pipeline's senders, which the engine waits to see closed.
    api.close_streams();
    drop(api);
    let _ = stop_server.send(());
    server.await.context("API task failed")?.context("API server failed")?;
    if options.live_view {
        println!("{}", crate::demo::live_view(&engine));
    }
    engine.stop().await
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
            println!("{}", crate::demo::live_view(engine));
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
