//! File replay: a CSV history played back at 1×, N× or as fast as possible.
//!
//! The header names the columns; `columns` maps column names to signal names
//! (a column named like a signal maps itself). Rows belong to one fixed
//! `asset`, or to the asset named by `asset_column` through
//! `asset_template` (`"engine-{}"` turns unit `3` into `engine-3`).
//! Timestamps come from `time_column` (RFC 3339, `YYYY-MM-DD HH:MM:SS`, or a
//! number of `time_unit_s` seconds after `time_origin`), or from the row
//! number times `period`. Empty, `NA` and `NaN` cells are missing values;
//! other unparsable cells are counted as bad values and treated as missing.
//! A replay after a restart skips rows at or before what the store holds.

use super::{Batch, BoxFuture, Source, SourceContext, SourceKind};
use crate::common::HumanDuration;
use crate::plant::Plant;
use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use usan_core::model::Timestamp;

/// Replay pace.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Speed {
    /// As fast as the engine takes it.
    #[default]
    Max,
    /// This many source seconds per wall second (1.0 = real time).
    Factor(f64),
}

impl<'de> Deserialize<'de> for Speed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(f) if f > 0.0 && f.is_finite() => Ok(Speed::Factor(f)),
            Raw::Number(f) => Err(serde::de::Error::custom(format!("speed must be positive, got {f}"))),
            Raw::Text(t) if t == "max" => Ok(Speed::Max),
            Raw::Text(t) => Err(serde::de::Error::custom(format!("speed is a number or \"max\", got {t:?}"))),
        }
    }
}

/// `[[sources]] type = "file"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Source name.
    pub name: String,
    /// CSV file.
    pub path: PathBuf,
    /// Field delimiter, one character (`","`, `";"`, `"\t"`).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Column with the timestamp.
    #[serde(default)]
    pub time_column: Option<String>,
    /// Origin of numeric timestamps (RFC 3339); the Unix epoch when absent.
    #[serde(default)]
    pub time_origin: Option<String>,
    /// Seconds per unit of a numeric timestamp (3600 when the column counts hours).
    #[serde(default = "default_time_unit")]
    pub time_unit_s: f64,
    /// Row spacing when there is no time column.
    #[serde(default)]
    pub period: Option<HumanDuration>,
    /// The asset every row belongs to.
    #[serde(default)]
    pub asset: Option<String>,
    /// Column naming each row's asset.
    #[serde(default)]
    pub asset_column: Option<String>,
    /// Turns an `asset_column` value into an asset id; `{}` is the value.
    #[serde(default = "default_template")]
    pub asset_template: String,
    /// Column name to signal name, for columns not named like their signal.
    #[serde(default)]
    pub columns: HashMap<String, String>,
    /// Replay pace: a number (source seconds per wall second) or `"max"`.
    #[serde(default)]
    pub speed: Speed,
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_time_unit() -> f64 {
    1.0
}
fn default_template() -> String {
    "{}".into()
}

impl SourceKind for FileSourceConfig {
    const NAME: &'static str = "file";
    const SUMMARY: &'static str = "Replays a CSV file (history, lab data, a logger's export) at a chosen speed.";

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, assets: &HashSet<&str>) -> Vec<String> {
        let mut problems = Vec::new();
        if self.delimiter.len() != 1 {
            problems.push(format!("delimiter must be one character, got {:?}", self.delimiter));
        }
        match (&self.asset, &self.asset_column) {
            (None, None) => problems.push("set `asset` or `asset_column`".into()),
            (Some(_), Some(_)) => problems.push("set `asset` or `asset_column`, not both".into()),
            (Some(a), None) if !assets.contains(a.as_str()) => problems.push(format!("no asset `{a}` is configured")),
            _ => {}
        }
        if !self.asset_template.contains("{}") {
            problems.push(format!("asset_template must contain {{}}, got {:?}", self.asset_template));
        }
        if self.time_column.is_none() && self.period.is_none() {
            problems.push("set `time_column` or `period`".into());
        }
        if !(self.time_unit_s.is_finite() && self.time_unit_s > 0.0) {
            problems.push(format!("time_unit_s must be positive, got {}", self.time_unit_s));
        }
        if let Some(origin) = &self.time_origin
            && chrono::DateTime::parse_from_rfc3339(origin).is_err()
        {
            problems.push(format!("time_origin {origin:?} is not an RFC 3339 time"));
        }
        problems
    }

    fn resolve_paths(&mut self, dir: &std::path::Path) {
        if self.path.is_relative() {
            self.path = dir.join(&self.path);
        }
    }

    fn build(&self, plant: &Plant) -> anyhow::Result<Option<Box<dyn Source>>> {
        Ok(Some(Box::new(FileSource::open(self, plant)?)))
    }
}

/// Where rows come from: a CSV file, or a Parquet file (found by its
/// magic bytes) whose values are turned into the cells a CSV would hold.
enum Rows {
    Csv(csv::Reader<std::fs::File>),
    Parquet {
        rows: parquet::record::reader::RowIter<'static>,
        /// Per column, whether it holds nanosecond timestamps (pandas'
        /// default), which the row API gives as plain integers.
        nanos: Vec<bool>,
        read: u64,
        total: u64,
        bytes: u64,
    },
}

impl Rows {
    /// Open `path` and read its column names.
    fn open(config: &FileSourceConfig) -> anyhow::Result<(Rows, Vec<String>)> {
        let path = &config.path;
        let cannot = || format!("source `{}`: cannot open {}", config.name, path.display());
        let mut magic = [0u8; 4];
        let parquet = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| &magic == b"PAR1");
        if parquet {
            use parquet::file::reader::FileReader;
            let file = std::fs::File::open(path).with_context(cannot)?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            let opened = unpanicked(|| -> anyhow::Result<_> {
                let reader = parquet::file::serialized_reader::SerializedFileReader::new(file)?;
                let metadata = reader.metadata().file_metadata();
                let total = u64::try_from(metadata.num_rows()).unwrap_or(0);
                let schema = metadata.schema_descr();
                let header: Vec<String> =
                    schema.root_schema().get_fields().iter().map(|f| f.name().to_string()).collect();
                let nanos: Vec<bool> = (0..schema.num_columns())
                    .map(|i| {
                        matches!(
                            schema.column(i).logical_type_ref(),
                            Some(parquet::basic::LogicalType::Timestamp(parquet::basic::TimestampType { unit: parquet::basic::TimeUnit::NANOS, .. }))
                        )
                    })
                    .collect();
                Ok((reader.into_iter(), header, nanos, total))
            })
            .and_then(|opened| opened)
            .with_context(|| format!("source `{}`: {} is not a readable Parquet file", config.name, path.display()))?;
            let (rows, header, nanos, total) = opened;
            return Ok((Rows::Parquet { rows, nanos, read: 0, total, bytes }, header));
        }
        let delimiter = config.delimiter.as_bytes().first().copied().unwrap_or(b',');
        let mut reader =
            csv::ReaderBuilder::new().delimiter(delimiter).trim(csv::Trim::All).from_path(path).with_context(cannot)?;
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("source `{}`: cannot read the header of {}", config.name, path.display()))?
            .iter()
            .map(str::to_string)
            .collect();
        Ok((Rows::Csv(reader), header))
    }

    /// The next row's cells into `record`; `false` at the end.
    fn next(&mut self, record: &mut csv::StringRecord) -> anyhow::Result<bool> {
        match self {
            Rows::Csv(reader) => Ok(reader.read_record(record)?),
            Rows::Parquet { rows, nanos, read, .. } => {
                let Some(row) = unpanicked(|| rows.next())? else { return Ok(false) };
                let row = row?;
                record.clear();
                for (i, (_, field)) in row.get_column_iter().enumerate() {
                    record.push_field(&parquet_cell(field, nanos.get(i).copied().unwrap_or(false)));
                }
                *read += 1;
                Ok(true)
            }
        }
    }

    /// Bytes read so far (a Parquet file's: in proportion to its rows).
    fn position(&self) -> u64 {
        match self {
            Rows::Csv(reader) => reader.position().byte(),
            Rows::Parquet { read, total, bytes, .. } => {
                if *total == 0 { *bytes } else { (*bytes as f64 * (*read as f64 / *total as f64)) as u64 }
            }
        }
    }
}

/// `read` with a panic inside the parquet crate (a damaged file it does
/// not check) turned into an error: a file is outside input.
fn unpanicked<T>(read: impl FnOnce() -> T) -> anyhow::Result<T> {
    usan_core::guard::catch_quietly(read).map_err(|message| anyhow::anyhow!("damaged Parquet data: {message}"))
}

/// A Parquet value as the cell a CSV export of it would hold: numbers as
/// numbers, times as RFC 3339, nothing for null.
fn parquet_cell(field: &parquet::record::Field, nanos: bool) -> String {
    use parquet::record::Field;
    let time = |ms: i64, sub_ms_ns: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t + chrono::Duration::nanoseconds(sub_ms_ns))
            .map_or_else(String::new, |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    };
    match field {
        Field::Null => String::new(),
        Field::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Field::Long(ns) if nanos => time(ns.div_euclid(1_000_000), ns.rem_euclid(1_000_000)),
        Field::TimestampMillis(ms) => time(*ms, 0),
        Field::TimestampMicros(us) => time(us.div_euclid(1000), us.rem_euclid(1000) * 1000),
        Field::Date(days) => time(i64::from(*days) * 86_400_000, 0),
        Field::Float(v) if v.is_nan() => String::new(),
        Field::Double(v) if v.is_nan() => String::new(),
        Field::Str(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A prepared replay.
pub struct FileSource {
    config: FileSourceConfig,
    reader: Rows,
    time_index: Option<usize>,
    asset_index: Option<usize>,
    /// Per asset index: for each CSV column, the signal index it feeds.
    layouts: HashMap<usize, Vec<Option<usize>>>,
    origin_ms: i64,
    record: csv::StringRecord,
    row: u64,
}

impl FileSource {
    /// Open the file and map its header onto the plant.
    ///
    /// # Errors
    /// When the file cannot be read or lacks a configured column.
    pub fn open(config: &FileSourceConfig, plant: &Plant) -> anyhow::Result<Self> {
        let (reader, header) = Rows::open(config)?;
        let find = |name: &str| header.iter().position(|h| h == name);
        let required = |column: &Option<String>| -> anyhow::Result<Option<usize>> {
            let Some(name) = column else { return Ok(None) };
            find(name).map(Some).with_context(|| {
                format!(
                    "source `{}`: no column `{name}` in {} (columns: {})",
                    config.name,
                    config.path.display(),
                    header.join(", ")
                )
            })
        };
        let time_index = required(&config.time_column)?;
        let asset_index = required(&config.asset_column)?;
        for column in config.columns.keys() {
            if find(column).is_none() {
                bail!("source `{}`: mapped column `{column}` is not in {}", config.name, config.path.display());
            }
        }
        let layout_for = |asset: usize| -> Vec<Option<usize>> {
            let signals = &plant.assets[asset].signal_index;
            header.iter().map(|h| signals.get(config.columns.get(h).unwrap_or(h)).copied()).collect()
        };
        let candidates: Vec<usize> = match &config.asset {
            Some(id) => plant.asset_index.get(id).copied().into_iter().collect(),
            None => (0..plant.assets.len()).collect(),
        };
        let mut layouts = HashMap::new();
        for asset in candidates {
            let layout = layout_for(asset);
            if config.asset.is_some() && layout.iter().all(Option::is_none) {
                bail!(
                    "source `{}`: no column of {} matches a signal of asset `{}`",
                    config.name,
                    config.path.display(),
                    plant.assets[asset].path.asset
                );
            }
            layouts.insert(asset, layout);
        }
        let origin_ms = match &config.time_origin {
            Some(o) => chrono::DateTime::parse_from_rfc3339(o)
                .with_context(|| format!("source `{}`: bad time_origin", config.name))?
                .timestamp_millis(),
            None => 0,
        };
        Ok(FileSource {
            config: config.clone(),
            reader,
            time_index,
            asset_index,
            layouts,
            origin_ms,
            record: csv::StringRecord::new(),
            row: 0,
        })
    }

    fn timestamp(&self, cell: Option<&str>, row: u64) -> anyhow::Result<Timestamp> {
        if let Some(cell) = cell {
            return parse_time(cell, self.origin_ms, self.config.time_unit_s)
                .with_context(|| format!("source `{}`: row {row}: bad timestamp {cell:?}", self.config.name));
        }
        let period_ms = self.config.period.map_or(1000, |p| p.0.as_millis() as i64);
        Ok(Timestamp(self.origin_ms + period_ms * row as i64))
    }

    /// The next row that belongs to a configured asset, as
    /// `(asset index, timestamp, values in signal order)`; `None` at the end.
    /// Rows of unconfigured assets are counted in `skipped` and passed over.
    ///
    /// # Errors
    /// When the file cannot be read or a timestamp cannot be parsed.
    pub fn next_row(
        &mut self,
        plant: &Plant,
        counts: &mut RowCounts,
    ) -> anyhow::Result<Option<(usize, Timestamp, Vec<f64>)>> {
        loop {
            let more = self
                .reader
                .next(&mut self.record)
                .with_context(|| format!("source `{}`: cannot read row {}", self.config.name, self.row + 1))?;
            if !more {
                return Ok(None);
            }
            self.row += 1;
            let asset = match self.asset_index {
                None => *self.layouts.keys().next().context("no asset for this file")?,
                Some(column) => {
                    let key = self.record.get(column).unwrap_or_default();
                    let id = self.config.asset_template.replace("{}", key);
                    match plant.asset_index.get(&id) {
                        Some(a) => *a,
                        None => {
                            counts.skipped += 1;
                            if counts.unknown_assets.insert(id.clone()) {
                                tracing::warn!(source = %self.config.name, asset = %id, "rows for an unconfigured asset are skipped");
                            }
                            continue;
                        }
                    }
                }
            };
            let cell = self.time_index.and_then(|i| self.record.get(i));
            let ts = self.timestamp(cell, self.row)?;
            let layout = &self.layouts[&asset];
            let mut values = vec![f64::NAN; plant.assets[asset].signals.len()];
            for (cell, target) in self.record.iter().zip(layout) {
                if let Some(signal) = target {
                    values[*signal] = parse_value(cell).unwrap_or_else(|| {
                        counts.bad_values += 1;
                        f64::NAN
                    });
                }
            }
            return Ok(Some((asset, ts, values)));
        }
    }

    /// Bytes read so far (for progress bars).
    #[must_use]
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// The blocking replay loop (runs on a blocking thread).
    fn replay(mut self, context: SourceContext) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Handle::current();
        let plant = context.plant.clone();
        let mut pending: HashMap<usize, Vec<(Timestamp, Vec<f64>)>> = HashMap::new();
        let mut pace: Option<(Timestamp, Instant)> = None;
        let mut counts = RowCounts::default();
        const BATCH_ROWS: usize = 256;
        let send = |pending: &mut HashMap<usize, Vec<(Timestamp, Vec<f64>)>>| -> bool {
            for (asset, rows) in pending.drain() {
                if !rows.is_empty() && runtime.block_on(context.router.send(Batch::Rows { asset, rows })).is_err() {
                    return false;
                }
            }
            true
        };
        let mut reported = RowCounts::default();
        while !*context.shutdown.borrow() {
            let Some((asset, ts, values)) = self.next_row(&plant, &mut counts)? else {
                break;
            };
            context.metrics.samples_dropped.inc_by(counts.skipped - reported.skipped);
            context.metrics.bad_values.inc_by(counts.bad_values - reported.bad_values);
            reported.skipped = counts.skipped;
            reported.bad_values = counts.bad_values;
            if context.resume_after.get(&asset).is_some_and(|last| ts <= *last) {
                continue;
            }
            if let Speed::Factor(speed) = self.config.speed {
                let (start_ts, start_wall) = *pace.get_or_insert((ts, Instant::now()));
                let due = Duration::from_secs_f64(((ts.0 - start_ts.0).max(0) as f64 / 1000.0) / speed);
                let elapsed = start_wall.elapsed();
                if due > elapsed {
                    if !send(&mut pending) {
                        break;
                    }
                    sleep_unless_shutdown(due - elapsed, &context.shutdown);
                }
            }
            let rows = pending.entry(asset).or_default();
            rows.push((ts, values));
            if rows.len() >= BATCH_ROWS && !send(&mut pending) {
                break;
            }
        }
        send(&mut pending);
        tracing::info!(source = %self.config.name, rows = self.row, "replay finished");
        Ok(())
    }
}

/// What [`FileSource::next_row`] passed over.
#[derive(Debug, Default, Clone)]
pub struct RowCounts {
    /// Rows of unconfigured assets.
    pub skipped: u64,
    /// Cells that were not numbers.
    pub bad_values: u64,
    /// The unconfigured asset ids seen.
    pub unknown_assets: HashSet<String>,
}

fn sleep_unless_shutdown(duration: Duration, shutdown: &tokio::sync::watch::Receiver<bool>) {
    let end = Instant::now() + duration;
    while !*shutdown.borrow() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

impl Source for FileSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.replay(context)).await.context("file replay thread failed")?
        })
    }
}

/// A cell as a value: `None` for unparsable text; NaN for an empty or NA cell.
pub(crate) fn parse_value(cell: &str) -> Option<f64> {
    match cell {
        "" | "NA" | "NaN" | "nan" | "null" => Some(f64::NAN),
        _ => cell.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// A timestamp cell: a number of `unit_s` seconds after `origin_ms`, RFC 3339,
/// or `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC.
pub(crate) fn parse_time(cell: &str, origin_ms: i64, unit_s: f64) -> Option<Timestamp> {
    if let Ok(number) = cell.parse::<f64>() {
        return number.is_finite().then(|| Timestamp(origin_ms + (number * unit_s * 1000.0).round() as i64));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(cell) {
        return Some(Timestamp(t.timestamp_millis()));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(cell, format) {
            return Some(Timestamp(t.and_utc().timestamp_millis()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cut and every flipped byte of a small Parquet file (the csv_file
    /// fuzzer's seed): an error or rows, never a panic out of the source.
    #[test]
    fn damaged_parquet_files_are_errors_not_panics() {
        let seed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/csv_file/seed-parquet")).unwrap();
        let mut damaged: Vec<Vec<u8>> = (4..seed.len()).step_by(7).map(|n| seed[..n].to_vec()).collect();
        for at in (0..seed.len()).step_by(3) {
            let mut flipped = seed.clone();
            flipped[at] ^= 0x5a;
            damaged.push(flipped);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.parquet");
        let plant = Plant::of_signals(&[("pump-1", &["temp", "flow"]), ("line/press.2", &["x"])]);
        let config: FileSourceConfig = toml::from_str(&format!(
            "name = \"f\"\npath = {:?}\ntime_column = \"t\"\nasset_column = \"asset\"\nasset_template = \"{{}}\"\n",
            path.display().to_string()
        ))
        .unwrap();
        let replay = |data: &[u8]| -> usize {
            std::fs::write(&path, data).unwrap();
            let Ok(mut source) = FileSource::open(&config, &plant) else { return 0 };
            let mut counts = RowCounts::default();
            let mut rows = 0;
            while let Ok(Some(_)) = source.next_row(&plant, &mut counts) {
                rows += 1;
            }
            rows
        };
        for data in &damaged {
            replay(data);
        }
        assert_eq!(replay(&seed), 3, "the intact file's three rows");
    }

    #[test]
    fn time_cells_table() {
        let cases: &[(&str, i64, f64, Option<i64>)] = &[
            ("10", 0, 1.0, Some(10_000)),
            ("2", 1_000, 3600.0, Some(7_201_000)),
            ("2026-01-01T00:00:01Z", 0, 1.0, Some(1_767_225_601_000)),
            ("2026-01-01 00:00:01.5", 0, 1.0, Some(1_767_225_601_500)),
            ("yesterday", 0, 1.0, None),
            ("inf", 0, 1.0, None),
        ];
        for (cell, origin, unit, want) in cases {
            assert_eq!(parse_time(cell, *origin, *unit).map(|t| t.0), *want, "{cell}");
        }
    }

    #[test]
    fn value_cells_table() {
        assert_eq!(parse_value("1.5"), Some(1.5));
        assert!(parse_value("").unwrap().is_nan());
        assert!(parse_value("NA").unwrap().is_nan());
        assert_eq!(parse_value("abc"), None);
        assert_eq!(parse_value("inf"), None);
    }
}
