//! `usan check CONFIG`: validate a configuration and say what it sets up,
//! reporting every error at once (with its line) and every part that
//! cannot start (a file source whose file lacks its columns, a RUL model
//! that does not fit its assets).

use crate::config::Config;
use std::path::{Path, PathBuf};

/// `usan check` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML).
    config: PathBuf,
}

/// Run `usan check`.
///
/// # Errors
/// Every problem found, as one error.
pub fn run(args: Args) -> anyhow::Result<()> {
    check(&args.config)
}

/// Load and validate `path`, build what can be built without running, and
/// print a summary.
///
/// # Errors
/// Every problem found, as one error.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let plant = config.plant();
    let mut problems = Vec::new();
    for source in &config.sources {
        if let Err(e) = source.build(&plant) {
            problems.push(format!("{e:#}"));
        }
    }
    if let Err(e) = crate::pipeline::rul::prepare(&config.rul, &plant) {
        problems.push(format!("{e:#}"));
    }
    if !problems.is_empty() {
        anyhow::bail!("{} part(s) cannot start:\n  {}", problems.len(), problems.join("\n  "));
    }
    let signals: usize = plant.assets.iter().map(|a| a.signals.len()).sum();
    println!(
        "{}: ok ({} assets, {} signals, {} detectors, {} RUL models, {} sources, {} sinks)",
        path.display(),
        plant.assets.len(),
        signals,
        plant.detectors.len(),
        config.rul.len(),
        config.sources.len(),
        config.sinks.len()
    );
    Ok(())
}
