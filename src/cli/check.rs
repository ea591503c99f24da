//! `usan check CONFIG`: validate a configuration and say what it sets up,
//! reporting every error at once (with its line) and every part that
//! cannot start (a file source whose file lacks its columns, a RUL model
//! that does not fit its assets).

use crate::config::Config;
use std::path::{Path, PathBuf};
use usan_core::threshold::ThresholdConfig;

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
    let external = crate::pipeline::external::load_all(&plant);
    problems.extend(crate::pipeline::external::problems(&plant, &external));
    match crate::pipeline::rul::prepare(&config.rul, &plant) {
        Ok(prepared) => problems.extend(prepared.refused),
        Err(e) => problems.push(format!("{e:#}")),
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
    print!("{}", parts(&config));
    Ok(())
}

/// One line per detector, source and sink: its name, its kind and what the
/// kind does (from the registries), a detector's threshold and baseline.
fn parts(config: &Config) -> String {
    let summary = |kinds: Vec<(&'static str, &'static str)>, kind: &str| {
        kinds.into_iter().find(|(name, _)| *name == kind).map_or("", |(_, summary)| summary)
    };
    let detector_kinds: Vec<(&'static str, &'static str)> =
        usan_core::detector::kinds().into_iter().map(|k| (k.name, k.summary)).collect();
    let mut text = String::new();
    for d in &config.detectors {
        let kind = d.algorithm.kind();
        if let crate::plant::Algorithm::Onnx(onnx) = &d.algorithm {
            let level = match &d.threshold {
                Some(t) if t.value.is_some() || t.quantile.is_some() => threshold(t),
                configured => {
                    let t = configured.clone().unwrap_or_else(|| ThresholdConfig::fixed(0.0));
                    let default = d.algorithm.default_threshold().quantile.unwrap_or_default();
                    format!(
                        "the package's threshold, else the {default} quantile of its first {} scores ({} of {} frames)",
                        d.baseline_frames, t.k, t.n
                    )
                }
            };
            text += &format!(
                "  detector `{}`: onnx package {}, {level}: a model exported from Python, checked against its goldens\n",
                d.name,
                onnx.package.display()
            );
            continue;
        }
        text += &format!(
            "  detector `{}`: {kind}, {}, learns {} frames: {}\n",
            d.name,
            threshold(&d.threshold()),
            d.baseline_frames,
            summary(detector_kinds.clone(), kind)
        );
    }
    for s in &config.sources {
        text += &format!("  source `{}`: {}: {}\n", s.name(), s.kind(), summary(crate::source::kinds(), s.kind()));
    }
    for (i, s) in config.sinks.iter().enumerate() {
        text += &format!("  sink {}: {}: {}\n", i + 1, s.kind(), summary(crate::sink::kinds(), s.kind()));
    }
    text
}

/// A threshold in words: its level and its persistence.
fn threshold(t: &ThresholdConfig) -> String {
    let level = match (t.value, t.quantile) {
        (Some(value), _) => format!("threshold {value}"),
        (None, Some(q)) => format!("threshold the {} quantile of its baseline scores", q),
        (None, None) => "no threshold".to_string(),
    };
    let margin = if t.margin == 1.0 { String::new() } else { format!(" × {}", t.margin) };
    let adaptive = t.adaptive_window.map(|w| format!(", adaptive over {w} scores")).unwrap_or_default();
    let deadband = if t.deadband > 0.0 {
        format!(", deadband {} (held on while above {:.3} of the level)", t.deadband, 1.0 - t.deadband)
    } else {
        String::new()
    };
    format!("{level}{margin} ({} of {} frames){deadband}{adaptive}", t.k, t.n)
}
