//! `usan export`: the store's history as files a data team trains on, the
//! other half of the round trip with Python (docs/models.md).
//!
//! `usan export --config CONFIG --out DIR [--asset ID]... [--from T] [--to T]`
//! writes, from the configuration's store:
//!
//! - `DIR/<asset>.csv`: one row per stored frame, oldest first: `ts` (Unix
//!   ms), `time` (RFC 3339, UTC), the asset's signals (empty where nothing
//!   was measured), each detector's score (`@score/<detector>`), and the
//!   labels the plant gave the data: `anomalous` (the detectors that
//!   declared the frame anomalous, `;`-separated), `alarm` (the ids of the
//!   alarms open from their raising to their last anomalous frame at that
//!   time), `alarm_cause` (the causes people gave those alarms when closing
//!   them) and `maintenance` (1 inside a declared maintenance window of the
//!   asset or the plant);
//! - `DIR/alarms.csv`: every alarm with its history's key facts;
//! - `DIR/maintenance.csv`: every maintenance window.
//!
//! Frames are streamed from the store (nothing is held but the labels), so a
//! long history exports in constant memory.

use crate::config::Config;
use crate::store::{AlarmQuery, Store};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use usan_core::alarm::{Alarm, AlarmState, MaintenanceWindow};
use usan_core::model::Timestamp;

/// `usan export` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML): its store and its assets.
    #[arg(long)]
    config: PathBuf,
    /// Folder to write into (created).
    #[arg(long)]
    out: PathBuf,
    /// Only these assets (repeat the option); all configured assets by default.
    #[arg(long)]
    asset: Vec<String>,
    /// Only frames at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Only frames at or before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
}

fn time_arg(text: Option<&str>, default: i64, what: &str) -> anyhow::Result<Timestamp> {
    match text {
        None => Ok(Timestamp(default)),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| Timestamp(t.timestamp_millis()))
            .with_context(|| format!("--{what} {t:?} is not an RFC 3339 time like 2026-01-01T00:00:00Z")),
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

fn number(v: f64) -> String {
    if v.is_finite() { format!("{v:?}") } else { String::new() }
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

/// Run `usan export`.
///
/// # Errors
/// A configuration or store that cannot be read, an unknown asset, a bad
/// time, a file that cannot be written.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let plant = config.plant();
    let from = time_arg(args.from.as_deref(), i64::MIN, "from")?;
    let to = time_arg(args.to.as_deref(), i64::MAX, "to")?;
    let unknown: Vec<&String> = args.asset.iter().filter(|a| !plant.asset_index.contains_key(*a)).collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "no asset {} in {}",
            unknown.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "),
            args.config.display()
        );
    }
    let store = crate::pipeline::open_store(&config.store, &crate::telemetry::Metrics::default())?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let every_state = [AlarmState::OPEN.as_slice(), &[AlarmState::Cleared]].concat();
    let alarms = store.alarms(&AlarmQuery { asset: None, states: every_state, limit: usize::MAX >> 1 })?;
    let maintenance = store.maintenance(Timestamp(i64::MIN))?;
    write_alarms(&args.out.join("alarms.csv"), &alarms)?;
    write_maintenance(&args.out.join("maintenance.csv"), &maintenance)?;
    let mut total = 0u64;
    for asset in &plant.assets {
        let id = &asset.path.asset;
        if !args.asset.is_empty() && !args.asset.contains(id) {
            continue;
        }
        let mut columns = asset.signal_names();
        columns.extend(
            asset.detectors.iter().map(|&d| format!("{}{}", crate::pipeline::SCORE_PREFIX, plant.detectors[d].name)),
        );
        let path = args.out.join(format!("{id}.csv"));
        let mine: Vec<&Alarm> = alarms.iter().filter(|a| &a.asset == id).collect();
        let windows: Vec<&MaintenanceWindow> =
            maintenance.iter().filter(|w| w.asset.as_ref().is_none_or(|a| a == id)).collect();
        let rows = write_frames(&*store, id, &columns, (from, to), &mine, &windows, &path)?;
        total += rows;
        println!("{}: {rows} frames", path.display());
    }
    println!(
        "{}: {} alarms, {} maintenance windows, {total} frames",
        args.out.display(),
        alarms.len(),
        maintenance.len()
    );
    Ok(())
}

/// One asset's frames with their labels; the number of rows written.
fn write_frames(
    store: &dyn Store,
    asset: &str,
    columns: &[String],
    (from, to): (Timestamp, Timestamp),
    alarms: &[&Alarm],
    windows: &[&MaintenanceWindow],
    path: &Path,
) -> anyhow::Result<u64> {
    // Which detectors declared each frame anomalous (their findings).
    let mut anomalous: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    for finding in store.findings(Some(asset), Some(from), usize::MAX >> 1)? {
        if finding.anomalous && finding.ts <= to {
            anomalous.entry(finding.ts.0).or_default().push(finding.detector);
        }
    }
    for detectors in anomalous.values_mut() {
        detectors.sort();
    }
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let header: Vec<String> = ["ts", "time"]
        .iter()
        .map(|s| s.to_string())
        .chain(columns.iter().map(|c| field(c)))
        .chain(["anomalous", "alarm", "alarm_cause", "maintenance"].iter().map(|s| s.to_string()))
        .collect();
    writeln!(out, "{}", header.join(","))?;
    let mut rows = 0u64;
    let mut failed: Option<std::io::Error> = None;
    let mut line = String::new();
    store.each_row(asset, columns, from, to, &mut |ts, values| {
        line.clear();
        line.push_str(&ts.to_string());
        line.push(',');
        line.push_str(&rfc3339(ts));
        for v in values {
            line.push(',');
            line.push_str(&number(*v));
        }
        let holding: Vec<&&Alarm> = alarms.iter().filter(|a| a.raised_at.0 <= ts && ts <= a.last_seen_at.0).collect();
        let ids: Vec<String> = holding.iter().map(|a| a.id.to_string()).collect();
        let causes: Vec<&str> = holding.iter().filter_map(|a| a.cause.as_deref()).collect();
        let in_maintenance = windows.iter().any(|w| w.starts.0 <= ts && ts < w.ends.0);
        line.push(',');
        line.push_str(&field(&anomalous.get(&ts).map_or_else(String::new, |d| d.join(";"))));
        line.push(',');
        line.push_str(&ids.join(";"));
        line.push(',');
        line.push_str(&field(&causes.join(";")));
        line.push_str(if in_maintenance { ",1" } else { ",0" });
        if let Err(e) = writeln!(out, "{line}") {
            failed = Some(e);
            return false;
        }
        rows += 1;
        true
    })?;
    if let Some(e) = failed {
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(rows)
}

fn write_alarms(path: &Path, alarms: &[Alarm]) -> anyhow::Result<()> {
    let mut text = String::from(
        "id,asset,detector,state,raised_at,last_seen_at,frames,peak_score,threshold,cause,top_signals,acknowledged_by,cleared_by\n",
    );
    for a in alarms.iter().rev() {
        let top: Vec<String> = a.top_signals.iter().map(|c| c.signal.clone()).collect();
        let row = [
            a.id.to_string(),
            field(&a.asset),
            field(&a.detector),
            a.state.as_str().to_string(),
            rfc3339(a.raised_at.0),
            rfc3339(a.last_seen_at.0),
            a.frames.to_string(),
            number(a.peak_score),
            number(a.threshold),
            field(a.cause.as_deref().unwrap_or("")),
            field(&top.join(";")),
            field(a.acknowledged.as_ref().map_or("", |s| s.by.as_str())),
            field(a.cleared.as_ref().map_or("", |s| s.by.as_str())),
        ];
        text += &row.join(",");
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_maintenance(path: &Path, windows: &[MaintenanceWindow]) -> anyhow::Result<()> {
    let mut text = String::from("id,asset,starts,ends,by,note\n");
    for w in windows {
        let row = [
            w.id.to_string(),
            field(w.asset.as_deref().unwrap_or("")),
            rfc3339(w.starts.0),
            rfc3339(w.ends.0),
            field(&w.by),
            field(&w.note),
        ];
        text += &row.join(",");
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
