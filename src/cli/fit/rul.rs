//! `usan fit rul --config FILE`: train a remaining-useful-life model from
//! run-to-failure history and write its artifact.
//!
//! The TOML file says where the history is and how to read it, where the
//! artifact goes, and (optionally) the model settings:
//!
//! ```toml
//! out = "engines.rul.json"          # relative to this file's folder
//!
//! [history]
//! path = "history.csv"              # relative to this file's folder
//! format = "csv"                    # or "cmapss" (NASA's 26-column text files)
//! unit = "engine"                   # column naming the asset
//! cycle = "cycle"                   # column counting its cycles
//! settings = ["altitude", "mach"]   # operating settings (may be empty)
//! sensors = ["t24", "p30"]          # when absent: every other column
//!
//! [model]                           # usan_core::rul::RulConfig, all optional
//! window = 30
//! ```
//!
//! Every unit's history must end at its failure. In a CSV, rows of one unit
//! may be interleaved with others' but its cycles must increase; an empty
//! cell is a missing value (carried forward), any other cell that is not a
//! number is refused with its line.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use usan_core::rul::{Learner, RulConfig, RulModel, UnitHistory};

/// The training specification.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    out: PathBuf,
    history: HistorySpec,
    #[serde(default)]
    model: RulConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistorySpec {
    path: PathBuf,
    #[serde(default)]
    format: Format,
    #[serde(default = "default_unit")]
    unit: String,
    #[serde(default = "default_cycle")]
    cycle: String,
    #[serde(default)]
    settings: Vec<String>,
    #[serde(default)]
    sensors: Option<Vec<String>>,
}

fn default_unit() -> String {
    "unit".into()
}
fn default_cycle() -> String {
    "cycle".into()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Format {
    #[default]
    Csv,
    Cmapss,
}

/// Read a history CSV with a header into one history per unit (in order of first appearance).
fn read_csv(path: &Path, spec: &HistorySpec) -> anyhow::Result<(Vec<String>, Vec<String>, Vec<UnitHistory>)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name:?} (columns: {})", path.display(), header.join(", ")))
    };
    let unit_at = column(&spec.unit)?;
    let cycle_at = column(&spec.cycle)?;
    let setting_at: Vec<usize> = spec.settings.iter().map(|s| column(s)).collect::<anyhow::Result<_>>()?;
    let sensor_names: Vec<String> = match &spec.sensors {
        Some(names) => names.clone(),
        None => header
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != unit_at && *i != cycle_at && !setting_at.contains(i))
            .map(|(_, h)| h.clone())
            .collect(),
    };
    if sensor_names.is_empty() {
        bail!("{}: no sensor columns", path.display());
    }
    let sensor_at: Vec<usize> = sensor_names.iter().map(|s| column(s)).collect::<anyhow::Result<_>>()?;
    let mut units: Vec<UnitHistory> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}: line {line}", path.display()))?;
        let cell = |at: usize, missing_ok: bool| -> anyhow::Result<f64> {
            match record.get(at).unwrap_or("") {
                "" if missing_ok => Ok(f64::NAN),
                text => text.parse::<f64>().ok().filter(|v| v.is_finite()).with_context(|| {
                    format!("{}: line {line}: {:?} in column {:?} is not a number", path.display(), text, header[at])
                }),
            }
        };
        let unit = record.get(unit_at).unwrap_or("").to_string();
        if unit.is_empty() {
            bail!("{}: line {line}: no unit", path.display());
        }
        let cycle = cell(cycle_at, false)?;
        let settings: Vec<f64> = setting_at.iter().map(|&a| cell(a, false)).collect::<anyhow::Result<_>>()?;
        let sensors: Vec<f64> = sensor_at.iter().map(|&a| cell(a, true)).collect::<anyhow::Result<_>>()?;
        let slot = *index.entry(unit.clone()).or_insert_with(|| {
            units.push(UnitHistory { unit: unit.clone(), cycles: vec![], settings: vec![], sensors: vec![] });
            units.len() - 1
        });
        let history = &mut units[slot];
        if let Some(&last) = history.cycles.last()
            && cycle <= last
        {
            bail!("{}: line {line}: unit {unit} goes from cycle {last} to {cycle}", path.display());
        }
        history.cycles.push(cycle);
        history.settings.push(settings);
        history.sensors.push(sensors);
    }
    if units.is_empty() {
        bail!("{} has no rows", path.display());
    }
    Ok((spec.settings.clone(), sensor_names, units))
}

const SETTINGS: usize = 3;
const SENSORS: usize = 21;

/// C-MAPSS sensor names, as the dataset's documentation numbers them.
pub fn cmapss_sensor_names() -> Vec<String> {
    (1..=SENSORS).map(|i| format!("s{i}")).collect()
}

/// Read a C-MAPSS file (`format = "cmapss"`: whitespace-separated, 26
/// columns: unit, cycle, 3 settings, 21 sensors) into one history per unit,
/// in file order.
///
/// # Errors
/// When the file cannot be read, a row has another column count, a cell is
/// not a number, or a unit's cycles do not increase: with the file and line.
pub fn read_units(path: &Path) -> anyhow::Result<Vec<UnitHistory>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut units: Vec<UnitHistory> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() != 2 + SETTINGS + SENSORS {
            bail!("{}: line {}: {} columns, C-MAPSS has 26", path.display(), i + 1, cells.len());
        }
        let values: Vec<f64> = cells
            .iter()
            .map(|c| c.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .with_context(|| format!("{}: line {}: a cell is not a number", path.display(), i + 1))?;
        let unit = format!("{}", values[0]);
        let cycle = values[1];
        match units.last_mut() {
            Some(u) if u.unit == unit => {
                if let Some(&last) = u.cycles.last()
                    && cycle <= last
                {
                    bail!("{}: line {}: unit {unit} goes from cycle {last} to {cycle}", path.display(), i + 1);
                }
                u.cycles.push(cycle);
                u.settings.push(values[2..2 + SETTINGS].to_vec());
                u.sensors.push(values[2 + SETTINGS..].to_vec());
            }
            _ => {
                if units.iter().any(|u| u.unit == unit) {
                    bail!("{}: line {}: unit {unit} appears again after other units", path.display(), i + 1);
                }
                units.push(UnitHistory {
                    unit,
                    cycles: vec![cycle],
                    settings: vec![values[2..2 + SETTINGS].to_vec()],
                    sensors: vec![values[2 + SETTINGS..].to_vec()],
                });
            }
        }
    }
    if units.is_empty() {
        bail!("{} has no rows", path.display());
    }
    Ok(units)
}

/// What a fitted model learned from `units`: their size, the regimes, the
/// sensors kept and the most informative features (two lines).
pub fn describe(model: &RulModel, units: &[UnitHistory]) -> String {
    let top: Vec<String> = model.importances().iter().take(8).map(|(n, g)| format!("{n} {:.0} %", g * 100.0)).collect();
    let learner = match (model.config.learner, model.network_weight()) {
        (Learner::Trees, _) => "gradient-boosted trees".to_string(),
        (Learner::Network, _) => "convolutional network".to_string(),
        (Learner::Ensemble, weight) => {
            format!("trees and network, network weight {:.2}", weight.unwrap_or(f64::NAN))
        }
    };
    format!(
        "{} units ({} cycles): {} operating regime(s); sensors used: {}; learner: {learner}\nmost informative features{}: {}",
        units.len(),
        units.iter().map(|u| u.cycles.len()).sum::<usize>(),
        model.regimes(),
        model.kept_sensors().join(" "),
        if model.config.learner == Learner::Ensemble { " (of the trees)" } else { "" },
        if top.is_empty() { "none (a network has no feature importances)".to_string() } else { top.join(", ") }
    )
}

/// `usan fit rul` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training specification (TOML).
    #[arg(long)]
    config: PathBuf,
}

/// Train from the specification in `args.config` and write the artifact.
///
/// # Errors
/// When the specification or history cannot be read, or the model cannot be fitted.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let config = args.config.as_path();
    let start = Instant::now();
    let text = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let spec: Spec = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let problems = spec.model.validate();
    if !problems.is_empty() {
        bail!("{}: invalid [model] settings:\n  {}", config.display(), problems.join("\n  "));
    }
    let base = config.parent().unwrap_or(Path::new("."));
    let history_path = base.join(&spec.history.path);
    let (setting_names, sensor_names, units) = match spec.history.format {
        Format::Csv => read_csv(&history_path, &spec.history)?,
        Format::Cmapss => (
            ["setting1", "setting2", "setting3"].map(String::from).to_vec(),
            cmapss_sensor_names(),
            read_units(&history_path)?,
        ),
    };
    let fit_start = Instant::now();
    let mut model = RulModel::fit(&spec.model, &sensor_names, &units).context("fitting the RUL model")?;
    model.setting_names = setting_names;
    let fit_s = fit_start.elapsed().as_secs_f64();
    let out = base.join(&spec.out);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&out, serde_json::to_string(&model)?).with_context(|| format!("cannot write {}", out.display()))?;
    println!("fitted in {fit_s:.2} s on {}", describe(&model, &units));
    println!("wrote {} (wall time {:.2} s)", out.display(), start.elapsed().as_secs_f64());
    Ok(())
}
