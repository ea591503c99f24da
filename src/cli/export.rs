//! `usan export`: the store's history as files a data team trains on, the
//! other half of the round trip with Python (docs/models.md).
//!
//! `usan export --config CONFIG --out DIR [--asset ID]... [--from T] [--to T]
//! [--format csv|parquet]` writes, from the configuration's store:
//!
//! - `DIR/<asset>.csv` (or `.parquet`): one row per stored frame, oldest
//!   first: `ts` (Unix ms; in Parquet a UTC timestamp), `time` (RFC 3339,
//!   UTC; CSV only), the asset's signals (empty where nothing
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
    /// `csv` (default) or `parquet` for the frames (`<asset>.parquet`).
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
}

/// The frames' file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text, one header row.
    Csv,
    /// Apache Parquet (columnar, typed: `ts` a UTC timestamp in ms, values
    /// doubles with nulls where nothing was measured, labels text).
    Parquet,
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
        let extension = if args.format == Format::Parquet { "parquet" } else { "csv" };
        let path = args.out.join(format!("{id}.{extension}"));
        let mine: Vec<&Alarm> = alarms.iter().filter(|a| &a.asset == id).collect();
        let windows: Vec<&MaintenanceWindow> =
            maintenance.iter().filter(|w| w.asset.as_ref().is_none_or(|a| a == id)).collect();
        let mut sink: Box<dyn FrameSink> = match args.format {
            Format::Csv => Box::new(CsvFrames::create(&path, &columns)?),
            Format::Parquet => Box::new(ParquetFrames::create(&path, &columns)?),
        };
        let rows = write_frames(&*store, id, &columns, (from, to), &mine, &windows, sink.as_mut())
            .and_then(|rows| sink.finish().map(|()| rows))
            .with_context(|| format!("cannot write {}", path.display()))?;
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

/// One asset's frames with their labels, into `sink`; the number of rows.
fn write_frames(
    store: &dyn Store,
    asset: &str,
    columns: &[String],
    (from, to): (Timestamp, Timestamp),
    alarms: &[&Alarm],
    windows: &[&MaintenanceWindow],
    sink: &mut dyn FrameSink,
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
    let mut rows = 0u64;
    let mut failed: Option<anyhow::Error> = None;
    store.each_row(asset, columns, from, to, &mut |ts, values| {
        let holding: Vec<&&Alarm> = alarms.iter().filter(|a| a.raised_at.0 <= ts && ts <= a.last_seen_at.0).collect();
        let ids: Vec<String> = holding.iter().map(|a| a.id.to_string()).collect();
        let causes: Vec<&str> = holding.iter().filter_map(|a| a.cause.as_deref()).collect();
        let labels = Labels {
            anomalous: anomalous.get(&ts).map_or_else(String::new, |d| d.join(";")),
            alarm: ids.join(";"),
            alarm_cause: causes.join(";"),
            maintenance: windows.iter().any(|w| w.starts.0 <= ts && ts < w.ends.0),
        };
        if let Err(e) = sink.row(ts, values, &labels) {
            failed = Some(e);
            return false;
        }
        rows += 1;
        true
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// What the plant said about one frame.
struct Labels {
    anomalous: String,
    alarm: String,
    alarm_cause: String,
    maintenance: bool,
}

/// Where an asset's frames go, row by row.
trait FrameSink {
    /// One frame: its time, its values in column order, its labels.
    fn row(&mut self, ts: i64, values: &[f64], labels: &Labels) -> anyhow::Result<()>;
    /// Everything written and closed.
    fn finish(&mut self) -> anyhow::Result<()>;
}

struct CsvFrames {
    out: std::io::BufWriter<std::fs::File>,
    line: String,
}

impl CsvFrames {
    fn create(path: &Path, columns: &[String]) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let header: Vec<String> = ["ts", "time"]
            .iter()
            .map(|s| s.to_string())
            .chain(columns.iter().map(|c| field(c)))
            .chain(["anomalous", "alarm", "alarm_cause", "maintenance"].iter().map(|s| s.to_string()))
            .collect();
        writeln!(out, "{}", header.join(","))?;
        Ok(Self { out, line: String::new() })
    }
}

impl FrameSink for CsvFrames {
    fn row(&mut self, ts: i64, values: &[f64], labels: &Labels) -> anyhow::Result<()> {
        let line = &mut self.line;
        line.clear();
        line.push_str(&ts.to_string());
        line.push(',');
        line.push_str(&rfc3339(ts));
        for v in values {
            line.push(',');
            line.push_str(&number(*v));
        }
        for text in [&labels.anomalous, &labels.alarm, &labels.alarm_cause] {
            line.push(',');
            line.push_str(&field(text));
        }
        line.push_str(if labels.maintenance { ",1" } else { ",0" });
        writeln!(self.out, "{line}")?;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(self.out.flush()?)
    }
}

/// Rows per Parquet row group.
const ROW_GROUP: usize = 65_536;

/// Parquet frames: columns buffered for a row group, then written.
struct ParquetFrames {
    writer: Option<parquet::file::writer::SerializedFileWriter<std::fs::File>>,
    ts: Vec<i64>,
    /// Per value column: the present values and a definition level per row.
    values: Vec<(Vec<f64>, Vec<i16>)>,
    /// `anomalous`, `alarm`, `alarm_cause`: present texts and levels.
    labels: [(Vec<parquet::data_type::ByteArray>, Vec<i16>); 3],
    maintenance: Vec<bool>,
}

impl ParquetFrames {
    fn create(path: &Path, columns: &[String]) -> anyhow::Result<Self> {
        use parquet::basic::{LogicalType, Repetition, TimeUnit, Type as Physical};
        use parquet::schema::types::Type;
        use std::sync::Arc;
        let optional = |name: &str, physical: Physical, logical: Option<LogicalType>| {
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        };
        let mut fields = vec![Arc::new(
            Type::primitive_type_builder("ts", Physical::INT64)
                .with_repetition(Repetition::REQUIRED)
                .with_logical_type(Some(LogicalType::timestamp(true, TimeUnit::MILLIS)))
                .build()?,
        )];
        for column in columns {
            fields.push(optional(column, Physical::DOUBLE, None)?);
        }
        for label in ["anomalous", "alarm", "alarm_cause"] {
            fields.push(optional(label, Physical::BYTE_ARRAY, Some(LogicalType::String))?);
        }
        fields.push(Arc::new(
            Type::primitive_type_builder("maintenance", Physical::BOOLEAN)
                .with_repetition(Repetition::REQUIRED)
                .build()?,
        ));
        let schema = Arc::new(Type::group_type_builder("usan_frames").with_fields(fields).build()?);
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_created_by(format!("usan {}", env!("CARGO_PKG_VERSION")))
            .build();
        let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        let writer = parquet::file::writer::SerializedFileWriter::new(file, schema, Arc::new(properties))?;
        Ok(Self {
            writer: Some(writer),
            ts: Vec::new(),
            values: vec![(Vec::new(), Vec::new()); columns.len()],
            labels: Default::default(),
            maintenance: Vec::new(),
        })
    }

    /// Write the buffered rows as one row group.
    fn flush(&mut self) -> anyhow::Result<()> {
        use parquet::data_type::{BoolType, ByteArrayType, DoubleType, Int64Type};
        if self.ts.is_empty() {
            return Ok(());
        }
        let writer = self.writer.as_mut().context("the file is already closed")?;
        let mut group = writer.next_row_group()?;
        macro_rules! next {
            () => {
                group.next_column()?.context("the schema has fewer columns than written")?
            };
        }
        let mut column = next!();
        column.typed::<Int64Type>().write_batch(&self.ts, None, None)?;
        column.close()?;
        for (values, levels) in &self.values {
            let mut column = next!();
            column.typed::<DoubleType>().write_batch(values, Some(levels), None)?;
            column.close()?;
        }
        for (texts, levels) in &self.labels {
            let mut column = next!();
            column.typed::<ByteArrayType>().write_batch(texts, Some(levels), None)?;
            column.close()?;
        }
        let mut column = next!();
        column.typed::<BoolType>().write_batch(&self.maintenance, None, None)?;
        column.close()?;
        group.close()?;
        self.ts.clear();
        for (values, levels) in &mut self.values {
            values.clear();
            levels.clear();
        }
        for (texts, levels) in &mut self.labels {
            texts.clear();
            levels.clear();
        }
        self.maintenance.clear();
        Ok(())
    }
}

impl FrameSink for ParquetFrames {
    fn row(&mut self, ts: i64, values: &[f64], labels: &Labels) -> anyhow::Result<()> {
        self.ts.push(ts);
        for ((present, levels), v) in self.values.iter_mut().zip(values) {
            if v.is_finite() {
                present.push(*v);
                levels.push(1);
            } else {
                levels.push(0);
            }
        }
        for ((texts, levels), text) in
            self.labels.iter_mut().zip([&labels.anomalous, &labels.alarm, &labels.alarm_cause])
        {
            if text.is_empty() {
                levels.push(0);
            } else {
                texts.push(text.as_str().into());
                levels.push(1);
            }
        }
        self.maintenance.push(labels.maintenance);
        if self.ts.len() >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        if let Some(writer) = self.writer.take() {
            writer.close()?;
        }
        Ok(())
    }
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
