//! The embedded store: one SQLite file in WAL mode.
//!
//! Samples are stored a frame per row (`asset, ts, layout, values`), the
//! values packed as little-endian f64 (NaN = not measured). That is a tenth
//! of the rows of a sample-per-row table and what makes hundreds of thousands
//! of samples per second persistable on an edge box. `layout` names the
//! signals of the blob, so changing an asset's signals never misreads old
//! rows. One connection writes, another reads, so API queries do not wait
//! for the writer's transaction.

use super::{
    AlarmAction, AlarmQuery, FrameBatch, FrameCorrection, FrameEnds, JournalEntry, JournalRecord, LearnedLevel,
    SeriesPoint, SeriesTable, Snapshot, SnapshotRequest, Store, StoreError, WriteBatch,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use usan_core::alarm::{Alarm, AlarmState, Assignment, MaintenanceWindow, Signoff};
use usan_core::detector::FittedModel;
use usan_core::model::{Contribution, Finding, StatisticFinding, Timestamp};

const SCHEMA_VERSION: i64 = 5;

/// Columns each schema version added (the version it upgrades from, table,
/// column, type), applied in order when an older store is opened. A table the
/// schema below has just made already has them: those are skipped.
const ADDED_COLUMNS: &[(i64, &str, &str, &str)] = &[
    (1, "findings", "statistics", "TEXT NOT NULL DEFAULT '[]'"),
    (2, "alarms", "assigned_to", "TEXT"),
    (2, "alarms", "assigned_by", "TEXT"),
    (2, "alarms", "assigned_at", "INTEGER"),
    (2, "alarms", "cause", "TEXT"),
    (2, "alarms", "escalated_at", "INTEGER"),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assets(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS layouts(id INTEGER PRIMARY KEY, signals TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS frames(
  asset_id INTEGER NOT NULL, ts INTEGER NOT NULL, layout_id INTEGER NOT NULL, vals BLOB NOT NULL,
  PRIMARY KEY(asset_id, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS findings(
  id INTEGER PRIMARY KEY, asset TEXT NOT NULL, detector TEXT NOT NULL, ts INTEGER NOT NULL,
  score REAL, threshold REAL, anomalous INTEGER NOT NULL, contributions TEXT NOT NULL,
  statistics TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS findings_by_asset ON findings(asset, ts);
CREATE INDEX IF NOT EXISTS findings_by_time ON findings(ts);
CREATE TABLE IF NOT EXISTS alarms(
  id INTEGER PRIMARY KEY, asset TEXT NOT NULL, detector TEXT NOT NULL, state TEXT NOT NULL,
  active INTEGER NOT NULL, raised_at INTEGER NOT NULL, last_seen_at INTEGER NOT NULL,
  frames INTEGER NOT NULL, peak_score REAL, threshold REAL, top_signals TEXT NOT NULL,
  ack_by TEXT, ack_at INTEGER, cleared_by TEXT, cleared_at INTEGER, notes TEXT NOT NULL,
  assigned_to TEXT, assigned_by TEXT, assigned_at INTEGER, cause TEXT, escalated_at INTEGER);
CREATE INDEX IF NOT EXISTS alarms_by_state ON alarms(state, id);
CREATE TABLE IF NOT EXISTS maintenance(
  id INTEGER PRIMARY KEY, asset TEXT, starts INTEGER NOT NULL, ends INTEGER NOT NULL,
  by TEXT NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, asset TEXT NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS journal_by_asset ON journal(asset, seq);
CREATE TABLE IF NOT EXISTS models(
  asset TEXT NOT NULL, detector TEXT NOT NULL, created_at INTEGER NOT NULL, artifact TEXT NOT NULL,
  PRIMARY KEY(asset, detector));
CREATE TABLE IF NOT EXISTS levels(
  asset TEXT NOT NULL, detector TEXT NOT NULL, created_at INTEGER NOT NULL, basis TEXT NOT NULL, level REAL NOT NULL,
  PRIMARY KEY(asset, detector));
";

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    write: Arc<Mutex<Connection>>,
    read: Arc<Mutex<Connection>>,
    ids: Mutex<IdCache>,
}

#[derive(Default)]
struct IdCache {
    assets: HashMap<String, i64>,
    layouts: HashMap<Vec<String>, i64>,
}

/// A damaged store file moved aside at start (see [`SqliteStore::open_or_quarantine`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// Where the damaged file now is (its `-wal` and `-shm` beside it).
    pub moved_to: PathBuf,
    /// What was wrong.
    pub reason: String,
}

/// Move `path` and its `-wal` and `-shm` companions to `<name>.damaged-<time>…`.
fn quarantine(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let moved_to = with_suffix(&format!(".damaged-{stamp}"));
    for companion in ["-wal", "-shm"] {
        let from = with_suffix(companion);
        if from.exists() {
            std::fs::rename(&from, with_suffix(&format!(".damaged-{stamp}{companion}")))?;
        }
    }
    std::fs::rename(path, &moved_to)?;
    Ok(moved_to)
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, StoreError> {
    mutex.lock().map_err(|_| StoreError::Poisoned)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl SqliteStore {
    /// Open (creating when absent) the database at `path`; `:memory:` keeps
    /// everything in memory.
    ///
    /// # Errors
    /// When the file cannot be opened or has another schema version.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_verified(path, false)
    }

    /// Open the store at `path` as [`SqliteStore::open`] does; when the file
    /// is damaged (not a database, malformed, or failing `PRAGMA
    /// quick_check` when `verify`), move it and its WAL aside to
    /// `<name>.damaged-<UTC time>` and start an empty store at `path`. What
    /// was moved is kept for an expert; the engine runs on.
    ///
    /// # Errors
    /// When the file cannot be opened for another reason (permissions,
    /// another schema version), or cannot be moved aside.
    pub fn open_or_quarantine(path: &Path, verify: bool) -> Result<(Self, Option<Quarantined>), StoreError> {
        match Self::open_verified(path, verify) {
            Err(StoreError::Damaged(reason)) if path.as_os_str() != ":memory:" => {
                let moved_to = quarantine(path)
                    .map_err(|e| StoreError::Damaged(format!("{reason}; moving it aside failed: {e}")))?;
                let store = Self::open_verified(path, false)?;
                Ok((store, Some(Quarantined { moved_to, reason })))
            }
            other => other.map(|store| (store, None)),
        }
    }

    fn open_verified(path: &Path, verify: bool) -> Result<Self, StoreError> {
        Self::open_unclassified(path, verify).map_err(StoreError::classify_damage)
    }

    fn open_unclassified(path: &Path, verify: bool) -> Result<Self, StoreError> {
        let in_memory = path.as_os_str() == ":memory:";
        let write = open_connection(path)?;
        if verify && !in_memory {
            let verdict: Vec<String> =
                write.prepare("PRAGMA quick_check(3)")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            if verdict != ["ok"] {
                return Err(StoreError::Damaged(format!("PRAGMA quick_check: {}", verdict.join("; "))));
            }
        }
        write.execute_batch(SCHEMA)?;
        let version: Option<i64> = write
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok());
        match version {
            None => {
                write.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v < SCHEMA_VERSION => {
                let tx = write.unchecked_transaction()?;
                for (_, table, column, kind) in ADDED_COLUMNS.iter().filter(|(from, ..)| *from >= v) {
                    let present: bool = tx.query_row(
                        &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                        [column],
                        |r| r.get(0),
                    )?;
                    if !present {
                        tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
                    }
                }
                tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [SCHEMA_VERSION.to_string()])?;
                tx.commit()?;
            }
            Some(v) if v != SCHEMA_VERSION => {
                return Err(StoreError::Database(rusqlite::Error::InvalidParameterName(format!(
                    "store schema version {v}, this build uses {SCHEMA_VERSION}"
                ))));
            }
            Some(_) => {}
        }
        let write = Arc::new(Mutex::new(write));
        let read = if in_memory { write.clone() } else { Arc::new(Mutex::new(open_connection(path)?)) };
        Ok(SqliteStore { write, read, ids: Mutex::new(IdCache::default()) })
    }

    fn asset_id(&self, conn: &Connection, ids: &mut IdCache, name: &str) -> Result<i64, StoreError> {
        if let Some(id) = ids.assets.get(name) {
            return Ok(*id);
        }
        conn.execute("INSERT OR IGNORE INTO assets(name) VALUES (?1)", [name])?;
        let id = conn.query_row("SELECT id FROM assets WHERE name = ?1", [name], |r| r.get(0))?;
        ids.assets.insert(name.to_string(), id);
        Ok(id)
    }

    fn layout_id(&self, conn: &Connection, ids: &mut IdCache, signals: &[String]) -> Result<i64, StoreError> {
        if let Some(id) = ids.layouts.get(signals) {
            return Ok(*id);
        }
        let json = serde_json::to_string(signals)?;
        conn.execute("INSERT OR IGNORE INTO layouts(signals) VALUES (?1)", [&json])?;
        let id = conn.query_row("SELECT id FROM layouts WHERE signals = ?1", [&json], |r| r.get(0))?;
        ids.layouts.insert(signals.to_vec(), id);
        Ok(id)
    }

    fn write_frames(&self, conn: &Connection, ids: &mut IdCache, batch: &FrameBatch) -> Result<(), StoreError> {
        let asset_id = self.asset_id(conn, ids, &batch.asset)?;
        let layout_id = self.layout_id(conn, ids, &batch.signals)?;
        let mut stmt = conn
            .prepare_cached("INSERT OR REPLACE INTO frames(asset_id, ts, layout_id, vals) VALUES (?1, ?2, ?3, ?4)")?;
        let mut blob = Vec::with_capacity(batch.signals.len() * 8);
        for (ts, values) in &batch.rows {
            blob.clear();
            for v in values {
                blob.extend_from_slice(&v.to_le_bytes());
            }
            stmt.execute(params![asset_id, ts.0, layout_id, blob])?;
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Write a late value into its stored frame: in place when the frame's
    /// layout has the signal, as an added column when not, as a frame of
    /// that one signal when there is no frame at that time.
    fn correct_frame(
        &self,
        conn: &Connection,
        ids: &mut IdCache,
        correction: &FrameCorrection,
    ) -> Result<(), StoreError> {
        let asset_id = self.asset_id(conn, ids, &correction.asset)?;
        let stored: Option<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT layout_id, vals FROM frames WHERE asset_id = ?1 AND ts = ?2")?
            .query_row(params![asset_id, correction.ts.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let value = correction.value.to_le_bytes();
        let (layout_id, vals) = match stored {
            None => (self.layout_id(conn, ids, std::slice::from_ref(&correction.signal))?, value.to_vec()),
            Some((layout_id, mut vals)) => {
                let json: String = conn
                    .prepare_cached("SELECT signals FROM layouts WHERE id = ?1")?
                    .query_row([layout_id], |r| r.get(0))?;
                let mut signals: Vec<String> = serde_json::from_str(&json)?;
                if vals.len() != signals.len() * 8 {
                    // Not a frame this store wrote: leave it as it is.
                    tracing::warn!(asset = %correction.asset, ts = correction.ts.0, "stored frame does not match its layout; late value not written");
                    return Ok(());
                }
                match signals.iter().position(|s| *s == correction.signal) {
                    Some(at) => {
                        vals[at * 8..at * 8 + 8].copy_from_slice(&value);
                        (layout_id, vals)
                    }
                    None => {
                        signals.push(correction.signal.clone());
                        vals.extend_from_slice(&value);
                        (self.layout_id(conn, ids, &signals)?, vals)
                    }
                }
            }
        };
        conn.prepare_cached("INSERT OR REPLACE INTO frames(asset_id, ts, layout_id, vals) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![asset_id, correction.ts.0, layout_id, vals])?;
        Ok(())
    }

    /// Visit `(ts, values of columns)` of an asset's frames in `[from, to]`,
    /// oldest first (newest first when `newest_first`), until `visit`
    /// returns `false`; NaN where a frame lacks a column; frames with no
    /// value in any column are skipped. Rows stream: nothing is collected.
    fn scan_columns(
        &self,
        asset: &str,
        columns: &[String],
        (from, to): (Timestamp, Timestamp),
        newest_first: bool,
        mut visit: impl FnMut(i64, Vec<f64>) -> bool,
    ) -> Result<(), StoreError> {
        let conn = lock(&self.read)?;
        let mut reader = ColumnReader::new(columns);
        let mut stmt = conn.prepare_cached(if newest_first {
            "SELECT ts, layout_id, vals FROM frames WHERE asset_id = (SELECT id FROM assets WHERE name = ?1)
             AND ts BETWEEN ?2 AND ?3 ORDER BY ts DESC"
        } else {
            "SELECT ts, layout_id, vals FROM frames WHERE asset_id = (SELECT id FROM assets WHERE name = ?1)
             AND ts BETWEEN ?2 AND ?3 ORDER BY ts"
        })?;
        let mut rows = stmt.query(params![asset, from.0, to.0])?;
        while let Some(row) = rows.next()? {
            let positions = reader.positions(&conn, row.get(1)?)?;
            if positions.iter().all(Option::is_none) {
                continue;
            }
            let values = ColumnReader::values(positions, row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?);
            if values.iter().any(|v| v.is_finite()) && !visit(row.get(0)?, values) {
                break;
            }
        }
        Ok(())
    }

    /// The newest frame time of an asset in `[from, to]`.
    fn last_frame_in(&self, asset: &str, from: Timestamp, to: Timestamp) -> Result<Option<i64>, StoreError> {
        let conn = lock(&self.read)?;
        let mut stmt = conn.prepare_cached(
            "SELECT ts FROM frames WHERE asset_id = (SELECT id FROM assets WHERE name = ?1)
             AND ts BETWEEN ?2 AND ?3 ORDER BY ts DESC LIMIT 1",
        )?;
        Ok(stmt.query_row(params![asset, from.0, to.0], |r| r.get(0)).optional()?)
    }

    /// Rows of `columns` in `[from, to]` folded into at most `max_points`
    /// equal-time buckets as they stream (memory bounded by `max_points`).
    fn buckets(
        &self,
        asset: &str,
        columns: &[String],
        (from, to): (Timestamp, Timestamp),
        max_points: usize,
    ) -> Result<Buckets, StoreError> {
        let last = self.last_frame_in(asset, from, to)?.unwrap_or(to.0);
        let mut buckets = Buckets::new(columns.len(), max_points.max(1), last);
        self.scan_columns(asset, columns, (from, to), false, |ts, values| {
            buckets.add(ts, values);
            true
        })?;
        Ok(buckets)
    }
}

/// Rows as stored (oldest first) on one time axis, a column per value.
fn rows_table(rows: Vec<(i64, Vec<f64>)>, columns: usize) -> SeriesTable {
    let mut table = SeriesTable { columns: vec![Vec::with_capacity(rows.len()); columns], ..SeriesTable::default() };
    for (ts, values) in rows {
        table.ts.push(ts);
        for (column, v) in table.columns.iter_mut().zip(values) {
            column.push(v);
        }
    }
    table
}

/// Per bucket and column: what the bucket holds.
#[derive(Debug, Clone, Copy)]
struct Tally {
    sum: f64,
    n: u32,
    min: f64,
    max: f64,
}

impl Tally {
    const EMPTY: Tally = Tally { sum: 0.0, n: 0, min: f64::INFINITY, max: f64::NEG_INFINITY };

    fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.sum += v;
            self.n += 1;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    fn mean(&self) -> f64 {
        if self.n > 0 { self.sum / f64::from(self.n) } else { f64::NAN }
    }
}

/// Equal-time buckets built while rows stream by, oldest first: rows are
/// kept as they are while there are at most `max_points`; beyond, they are
/// folded into buckets `(last - first) / max_points + 1` ms wide from the
/// first row's time, `last` being the newest frame time of the range.
struct Buckets {
    columns: usize,
    max_points: usize,
    last: i64,
    raw: Vec<(i64, Vec<f64>)>,
    /// Once downsampled: the first row's time and the bucket width.
    grid: Option<(i64, i64)>,
    starts: Vec<i64>,
    tallies: Vec<Vec<Tally>>,
}

impl Buckets {
    fn new(columns: usize, max_points: usize, last: i64) -> Buckets {
        Buckets { columns, max_points, last, raw: Vec::new(), grid: None, starts: Vec::new(), tallies: Vec::new() }
    }

    fn add(&mut self, ts: i64, values: Vec<f64>) {
        let Some((first, width)) = self.grid else {
            self.raw.push((ts, values));
            if self.raw.len() > self.max_points {
                let first = self.raw[0].0;
                let width = ((self.last.max(ts) - first) / self.max_points as i64).max(1) + 1;
                self.grid = Some((first, width));
                for (ts, values) in std::mem::take(&mut self.raw) {
                    self.fold(first, width, ts, &values);
                }
            }
            return;
        };
        self.fold(first, width, ts, &values);
    }

    fn fold(&mut self, first: i64, width: i64, ts: i64, values: &[f64]) {
        let start = first + (ts - first) / width * width;
        if self.starts.last() != Some(&start) {
            self.starts.push(start);
            self.tallies.push(vec![Tally::EMPTY; self.columns]);
        }
        if let Some(tallies) = self.tallies.last_mut() {
            for (tally, v) in tallies.iter_mut().zip(values) {
                tally.add(*v);
            }
        }
    }

    fn into_table(self) -> SeriesTable {
        if self.grid.is_none() {
            return rows_table(self.raw, self.columns);
        }
        let mut table =
            SeriesTable { columns: vec![Vec::new(); self.columns], downsampled: true, ..SeriesTable::default() };
        table.ts = self.starts;
        for tallies in &self.tallies {
            for (column, tally) in table.columns.iter_mut().zip(tallies) {
                column.push(tally.mean());
            }
        }
        table
    }

    /// The first column as points (mean, min, max and count per bucket).
    fn into_series(self) -> Vec<SeriesPoint> {
        if self.grid.is_none() {
            return self
                .raw
                .into_iter()
                .map(|(ts, values)| SeriesPoint { ts, value: values[0], min: values[0], max: values[0], count: 1 })
                .collect();
        }
        self.starts
            .into_iter()
            .zip(self.tallies)
            .map(|(ts, tallies)| {
                let t = tallies[0];
                SeriesPoint { ts, value: t.mean(), min: t.min, max: t.max, count: t.n as usize }
            })
            .collect()
    }
}

/// Reads stored frames' values in the order of the wanted columns, whatever
/// layout each frame was stored with (NaN for a column a layout lacks).
struct ColumnReader<'a> {
    wanted: &'a [String],
    by_layout: HashMap<i64, Vec<Option<usize>>>,
}

impl<'a> ColumnReader<'a> {
    fn new(wanted: &'a [String]) -> Self {
        ColumnReader { wanted, by_layout: HashMap::new() }
    }

    /// Where each wanted column sits in frames of `layout_id`.
    fn positions(&mut self, conn: &Connection, layout_id: i64) -> Result<&[Option<usize>], StoreError> {
        match self.by_layout.entry(layout_id) {
            std::collections::hash_map::Entry::Occupied(known) => Ok(known.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let json: String =
                    conn.query_row("SELECT signals FROM layouts WHERE id = ?1", [layout_id], |r| r.get(0))?;
                let names: Vec<String> = serde_json::from_str(&json)?;
                Ok(slot.insert(self.wanted.iter().map(|c| names.iter().position(|n| n == c)).collect()))
            }
        }
    }

    fn values(positions: &[Option<usize>], blob: &[u8]) -> Vec<f64> {
        positions
            .iter()
            .map(|p| {
                p.and_then(|p| blob.get(p * 8..p * 8 + 8)).map_or(f64::NAN, |bytes| {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(bytes);
                    f64::from_le_bytes(raw)
                })
            })
            .collect()
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn alarm_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Alarm> {
    let state: String = row.get("state")?;
    let json_err =
        |e: serde_json::Error| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e));
    let top: String = row.get("top_signals")?;
    let notes: String = row.get("notes")?;
    let ack_by: Option<String> = row.get("ack_by")?;
    let ack_at: Option<i64> = row.get("ack_at")?;
    let cleared_by: Option<String> = row.get("cleared_by")?;
    let cleared_at: Option<i64> = row.get("cleared_at")?;
    let assigned_to: Option<String> = row.get("assigned_to")?;
    let assigned_by: Option<String> = row.get("assigned_by")?;
    let assigned_at: Option<i64> = row.get("assigned_at")?;
    Ok(Alarm {
        id: row.get("id")?,
        asset: row.get("asset")?,
        detector: row.get("detector")?,
        state: AlarmState::parse(&state).unwrap_or(AlarmState::Raised),
        active: row.get::<_, i64>("active")? != 0,
        raised_at: Timestamp(row.get("raised_at")?),
        last_seen_at: Timestamp(row.get("last_seen_at")?),
        frames: row.get::<_, i64>("frames")? as u64,
        peak_score: row.get::<_, Option<f64>>("peak_score")?.unwrap_or(f64::NAN),
        threshold: row.get::<_, Option<f64>>("threshold")?.unwrap_or(f64::NAN),
        top_signals: serde_json::from_str(&top).map_err(json_err)?,
        acknowledged: ack_by.zip(ack_at).map(|(by, at)| Signoff { by, at: Timestamp(at) }),
        assigned: assigned_to.zip(assigned_by).zip(assigned_at).map(|((to, by), at)| Assignment {
            to,
            by,
            at: Timestamp(at),
        }),
        cleared: cleared_by.zip(cleared_at).map(|(by, at)| Signoff { by, at: Timestamp(at) }),
        cause: row.get("cause")?,
        escalated_at: row.get::<_, Option<i64>>("escalated_at")?.map(Timestamp),
        notes: serde_json::from_str(&notes).map_err(json_err)?,
    })
}

fn window_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MaintenanceWindow> {
    Ok(MaintenanceWindow {
        id: row.get("id")?,
        asset: row.get("asset")?,
        starts: Timestamp(row.get("starts")?),
        ends: Timestamp(row.get("ends")?),
        by: row.get("by")?,
        note: row.get("note")?,
    })
}

fn finding_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Finding> {
    let json = |column: &str| -> rusqlite::Result<String> { row.get(column) };
    let decode_err = |e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e));
    let contributions: Vec<Contribution> = serde_json::from_str(&json("contributions")?).map_err(decode_err)?;
    let statistics: Vec<StatisticFinding> = serde_json::from_str(&json("statistics")?).map_err(decode_err)?;
    Ok(Finding {
        asset: row.get("asset")?,
        detector: row.get("detector")?,
        ts: Timestamp(row.get("ts")?),
        score: row.get::<_, Option<f64>>("score")?.unwrap_or(f64::NAN),
        threshold: row.get::<_, Option<f64>>("threshold")?.unwrap_or(f64::NAN),
        anomalous: row.get::<_, i64>("anomalous")? != 0,
        contributions,
        statistics,
    })
}

/// An alarm's observation columns (never its state, which only transitions change).
fn write_observation(conn: &Connection, alarm: &Alarm) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE alarms SET active = ?2, last_seen_at = ?3, frames = ?4, peak_score = ?5, top_signals = ?6 WHERE id = ?1",
    )?
    .execute(params![
        alarm.id,
        alarm.active as i64,
        alarm.last_seen_at.0,
        alarm.frames as i64,
        finite(alarm.peak_score),
        serde_json::to_string(&alarm.top_signals)?
    ])?;
    Ok(())
}

impl Store for SqliteStore {
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = lock(&self.write)?;
        let mut ids = lock(&self.ids)?;
        let tx = conn.transaction()?;
        for frames in &batch.frames {
            self.write_frames(&tx, &mut ids, frames)?;
        }
        for correction in &batch.corrections {
            self.correct_frame(&tx, &mut ids, correction)?;
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO findings(asset, detector, ts, score, threshold, anomalous, contributions, statistics) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for f in &batch.findings {
                stmt.execute(params![
                    f.asset,
                    f.detector,
                    f.ts.0,
                    finite(f.score),
                    finite(f.threshold),
                    f.anomalous as i64,
                    serde_json::to_string(&f.contributions)?,
                    serde_json::to_string(&f.statistics)?
                ])?;
            }
        }
        for alarm in &batch.alarm_observations {
            write_observation(&tx, alarm)?;
        }
        {
            let mut stmt = tx.prepare_cached("DELETE FROM journal WHERE asset = ?1 AND seq <= ?2")?;
            for release in &batch.journal_release {
                stmt.execute(params![release.asset, release.through])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_alarm(&self, alarm: &mut Alarm) -> Result<(), StoreError> {
        let conn = lock(&self.write)?;
        conn.execute(
            "INSERT INTO alarms(asset, detector, state, active, raised_at, last_seen_at, frames, peak_score, threshold, top_signals, notes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                alarm.asset,
                alarm.detector,
                alarm.state.as_str(),
                alarm.active as i64,
                alarm.raised_at.0,
                alarm.last_seen_at.0,
                alarm.frames as i64,
                finite(alarm.peak_score),
                finite(alarm.threshold),
                serde_json::to_string(&alarm.top_signals)?,
                serde_json::to_string(&alarm.notes)?
            ],
        )?;
        alarm.id = conn.last_insert_rowid();
        Ok(())
    }

    fn update_alarm_observation(&self, alarm: &Alarm) -> Result<(), StoreError> {
        let conn = lock(&self.write)?;
        write_observation(&conn, alarm)
    }

    fn transition_alarm(
        &self,
        id: i64,
        action: AlarmAction<'_>,
        by: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<Alarm, StoreError> {
        let mut conn = lock(&self.write)?;
        let tx = conn.transaction()?;
        let mut alarm = tx
            .query_row("SELECT * FROM alarms WHERE id = ?1", [id], alarm_from_row)
            .optional()?
            .ok_or(StoreError::NoSuchAlarm(id))?;
        match action {
            AlarmAction::Acknowledge => alarm.acknowledge(by, note, at)?,
            AlarmAction::Assign { to } => alarm.assign(by, to, note, at)?,
            AlarmAction::Comment => alarm.comment(by, note, at),
            AlarmAction::Clear { cause } => alarm.clear(by, note, cause, at)?,
            AlarmAction::Escalate => alarm.escalate(note, at)?,
        }
        tx.execute(
            "UPDATE alarms SET state = ?2, ack_by = ?3, ack_at = ?4, cleared_by = ?5, cleared_at = ?6, notes = ?7,
               assigned_to = ?8, assigned_by = ?9, assigned_at = ?10, cause = ?11, escalated_at = ?12 WHERE id = ?1",
            params![
                id,
                alarm.state.as_str(),
                alarm.acknowledged.as_ref().map(|a| a.by.clone()),
                alarm.acknowledged.as_ref().map(|a| a.at.0),
                alarm.cleared.as_ref().map(|c| c.by.clone()),
                alarm.cleared.as_ref().map(|c| c.at.0),
                serde_json::to_string(&alarm.notes)?,
                alarm.assigned.as_ref().map(|a| a.to.clone()),
                alarm.assigned.as_ref().map(|a| a.by.clone()),
                alarm.assigned.as_ref().map(|a| a.at.0),
                alarm.cause,
                alarm.escalated_at.map(|t| t.0)
            ],
        )?;
        tx.commit()?;
        Ok(alarm)
    }

    fn insert_maintenance(&self, window: &mut MaintenanceWindow) -> Result<(), StoreError> {
        let conn = lock(&self.write)?;
        conn.execute(
            "INSERT INTO maintenance(asset, starts, ends, by, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![window.asset, window.starts.0, window.ends.0, window.by, window.note],
        )?;
        window.id = conn.last_insert_rowid();
        Ok(())
    }

    fn end_maintenance(&self, id: i64, at: Timestamp) -> Result<MaintenanceWindow, StoreError> {
        let conn = lock(&self.write)?;
        conn.execute("UPDATE maintenance SET ends = MIN(ends, MAX(starts, ?2)) WHERE id = ?1", params![id, at.0])?;
        conn.query_row("SELECT * FROM maintenance WHERE id = ?1", [id], window_from_row)
            .optional()?
            .ok_or(StoreError::NoSuchWindow(id))
    }

    fn alarm(&self, id: i64) -> Result<Option<Alarm>, StoreError> {
        let conn = lock(&self.read)?;
        Ok(conn.query_row("SELECT * FROM alarms WHERE id = ?1", [id], alarm_from_row).optional()?)
    }

    fn findings(
        &self,
        asset: Option<&str>,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Finding>, StoreError> {
        let conn = lock(&self.read)?;
        let mut stmt = conn.prepare_cached(
            "SELECT * FROM findings WHERE (?1 IS NULL OR asset = ?1) AND ts >= ?2 ORDER BY ts DESC, id DESC LIMIT ?3",
        )?;
        let rows =
            stmt.query_map(params![asset, since.map_or(i64::MIN, |t| t.0), limit.max(1) as i64], finding_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn series(
        &self,
        asset: &str,
        signal: &str,
        from: Timestamp,
        to: Timestamp,
        max_points: usize,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        Ok(self.buckets(asset, &[signal.to_string()], (from, to), max_points)?.into_series())
    }

    fn table(
        &self,
        asset: &str,
        columns: &[String],
        from: Timestamp,
        to: Timestamp,
        max_points: usize,
    ) -> Result<SeriesTable, StoreError> {
        Ok(self.buckets(asset, columns, (from, to), max_points)?.into_table())
    }

    fn newest_rows(
        &self,
        asset: &str,
        columns: &[String],
        from: Timestamp,
        to: Timestamp,
        rows: usize,
    ) -> Result<SeriesTable, StoreError> {
        let mut newest = Vec::new();
        if rows > 0 {
            self.scan_columns(asset, columns, (from, to), true, |ts, values| {
                newest.push((ts, values));
                newest.len() < rows
            })?;
        }
        newest.reverse();
        Ok(rows_table(newest, columns.len()))
    }

    fn each_row(
        &self,
        asset: &str,
        columns: &[String],
        from: Timestamp,
        to: Timestamp,
        visit: &mut dyn FnMut(i64, &[f64]) -> bool,
    ) -> Result<(), StoreError> {
        self.scan_columns(asset, columns, (from, to), false, |ts, values| visit(ts, &values))
    }

    fn maintenance(&self, after: Timestamp) -> Result<Vec<MaintenanceWindow>, StoreError> {
        maintenance_on(&*lock(&self.read)?, after)
    }

    fn alarms(&self, query: &AlarmQuery) -> Result<Vec<Alarm>, StoreError> {
        alarms_on(&*lock(&self.read)?, query)
    }

    fn frame_ends(&self, asset: &str, signals: &[String], first: usize, last: usize) -> Result<FrameEnds, StoreError> {
        frame_ends_on(&*lock(&self.read)?, asset, signals, first, last)
    }

    fn last_frame_times(&self) -> Result<HashMap<String, Timestamp>, StoreError> {
        last_frame_times_on(&*lock(&self.read)?)
    }

    fn models(&self) -> Result<Vec<(String, String, FittedModel)>, StoreError> {
        models_on(&*lock(&self.read)?).map(|(models, _)| models)
    }

    fn snapshot(&self, request: &SnapshotRequest) -> Result<Snapshot, StoreError> {
        let mut conn = lock(&self.read)?;
        // One read transaction: every part as of the same commit.
        let tx = conn.transaction()?;
        let open = AlarmQuery { states: AlarmState::OPEN.to_vec(), limit: usize::MAX >> 1, ..AlarmQuery::default() };
        let mut frame_ends = HashMap::new();
        for (asset, signals) in &request.frame_ends {
            frame_ends.insert(asset.clone(), frame_ends_on(&tx, asset, signals, request.head, request.tail)?);
        }
        let (models, refused_models) = models_on(&tx)?;
        let snapshot = Snapshot {
            last_frame_times: last_frame_times_on(&tx)?,
            models,
            refused_models,
            levels: levels_on(&tx)?,
            open_alarms: alarms_on(&tx, &open)?,
            maintenance: maintenance_on(&tx, request.now)?,
            frame_ends,
        };
        tx.commit()?;
        Ok(snapshot)
    }

    fn frame_count(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.read)?;
        Ok(conn.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn save_model(&self, asset: &str, detector: &str, model: &FittedModel) -> Result<(), StoreError> {
        let conn = lock(&self.write)?;
        conn.execute(
            "INSERT OR REPLACE INTO models(asset, detector, created_at, artifact) VALUES (?1, ?2, ?3, ?4)",
            params![asset, detector, chrono::Utc::now().timestamp_millis(), serde_json::to_string(model)?],
        )?;
        Ok(())
    }

    fn save_level(&self, asset: &str, detector: &str, level: &LearnedLevel) -> Result<(), StoreError> {
        let conn = lock(&self.write)?;
        conn.execute(
            "INSERT OR REPLACE INTO levels(asset, detector, created_at, basis, level) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![asset, detector, chrono::Utc::now().timestamp_millis(), level.basis, level.level],
        )?;
        Ok(())
    }

    fn delete_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let conn = lock(&self.write)?;
        let frames = conn.execute("DELETE FROM frames WHERE ts < ?1", [before.0])?;
        let findings = conn.execute("DELETE FROM findings WHERE ts < ?1", [before.0])?;
        Ok((frames + findings) as u64)
    }

    fn journal_append(&self, records: &[JournalRecord]) -> Result<Vec<i64>, StoreError> {
        let mut conn = lock(&self.write)?;
        let tx = conn.transaction()?;
        let mut seqs = Vec::with_capacity(records.len());
        {
            let mut stmt = tx.prepare_cached("INSERT INTO journal(asset, payload) VALUES (?1, ?2)")?;
            for record in records {
                stmt.execute(params![record.asset, record.payload])?;
                seqs.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    fn journal_read(&self, after: i64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let conn = lock(&self.read)?;
        let mut stmt =
            conn.prepare_cached("SELECT seq, asset, payload FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![after, limit.min(i64::MAX as usize) as i64], |r| {
            Ok(JournalEntry { seq: r.get(0)?, asset: r.get(1)?, payload: r.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn maintenance_on(conn: &Connection, after: Timestamp) -> Result<Vec<MaintenanceWindow>, StoreError> {
    let mut stmt = conn.prepare("SELECT * FROM maintenance WHERE ends > ?1 ORDER BY starts, id")?;
    let rows = stmt.query_map([after.0], window_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn alarms_on(conn: &Connection, query: &AlarmQuery) -> Result<Vec<Alarm>, StoreError> {
    let states: Vec<&str> = if query.states.is_empty() {
        AlarmState::OPEN.iter().chain([&AlarmState::Cleared]).map(|s| s.as_str()).collect()
    } else {
        query.states.iter().map(|s| s.as_str()).collect()
    };
    let placeholders = (0..states.len()).map(|i| format!("?{}", i + 3)).collect::<Vec<_>>().join(",");
    let sql = format!(
        "SELECT * FROM alarms WHERE (?1 IS NULL OR asset = ?1) AND state IN ({placeholders}) ORDER BY id DESC LIMIT ?2"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut values: Vec<rusqlite::types::Value> = vec![
        query.asset.clone().map_or(rusqlite::types::Value::Null, rusqlite::types::Value::Text),
        rusqlite::types::Value::Integer(query.limit.max(1) as i64),
    ];
    values.extend(states.iter().map(|s| rusqlite::types::Value::Text((*s).to_string())));
    let rows = stmt.query_map(rusqlite::params_from_iter(values), alarm_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn frame_ends_on(
    conn: &Connection,
    asset: &str,
    signals: &[String],
    first: usize,
    last: usize,
) -> Result<FrameEnds, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM frames f JOIN assets a ON a.id = f.asset_id WHERE a.name = ?1",
        [asset],
        |r| r.get(0),
    )?;
    let count = count.max(0) as u64;
    let mut reader = ColumnReader::new(signals);
    let mut read = |order: &str, limit: u64| -> Result<Vec<(Timestamp, Vec<f64>)>, StoreError> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT f.ts, f.layout_id, f.vals FROM frames f JOIN assets a ON a.id = f.asset_id
             WHERE a.name = ?1 ORDER BY f.ts {order} LIMIT ?2"
        ))?;
        let mut rows = stmt.query(params![asset, limit as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let positions = reader.positions(conn, row.get(1)?)?;
            let values = ColumnReader::values(positions, row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?);
            out.push((Timestamp(row.get(0)?), values));
        }
        Ok(out)
    };
    let head = read("ASC", (first as u64).min(count))?;
    let mut tail = read("DESC", (last as u64).min(count.saturating_sub(head.len() as u64)))?;
    tail.reverse();
    Ok(FrameEnds { count, head, tail })
}

fn last_frame_times_on(conn: &Connection) -> Result<HashMap<String, Timestamp>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT a.name, (SELECT MAX(ts) FROM frames f WHERE f.asset_id = a.id) FROM assets a")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (name, ts) = row?;
        if let Some(ts) = ts {
            out.insert(name, Timestamp(ts));
        }
    }
    Ok(out)
}

/// Stored models that read back whole, and `(asset, detector, why)` of those
/// that do not (damaged, or of another format): refused, not fatal.
type ModelsRead = (Vec<(String, String, FittedModel)>, Vec<(String, String, String)>);

fn models_on(conn: &Connection) -> Result<ModelsRead, StoreError> {
    let mut stmt = conn.prepare("SELECT asset, detector, artifact FROM models")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    let (mut models, mut refused) = (Vec::new(), Vec::new());
    for row in rows {
        let (asset, detector, artifact) = row?;
        let model = serde_json::from_str::<FittedModel>(&artifact)
            .map_err(|e| e.to_string())
            .and_then(|m| m.check_format().map(|()| m).map_err(|e| e.to_string()));
        match model {
            Ok(model) => models.push((asset, detector, model)),
            Err(why) => refused.push((asset, detector, why)),
        }
    }
    Ok((models, refused))
}

fn levels_on(conn: &Connection) -> Result<HashMap<(String, String), LearnedLevel>, StoreError> {
    let mut stmt = conn.prepare("SELECT asset, detector, basis, level FROM levels")?;
    let rows = stmt.query_map([], |r| {
        Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), LearnedLevel { basis: r.get(2)?, level: r.get(3)? }))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SqliteStore {
        SqliteStore::open(Path::new(":memory:")).unwrap()
    }

    #[test]
    fn a_table_aligns_columns_across_layouts_and_buckets_means() {
        let store = store();
        let first = FrameBatch {
            asset: "a".into(),
            signals: vec!["x".into(), "@score/pca".into()],
            rows: (0..10).map(|i| (Timestamp(i * 1000), vec![i as f64, f64::NAN])).collect(),
        };
        let second = FrameBatch {
            asset: "a".into(),
            signals: vec!["y".into(), "x".into(), "@score/pca".into()],
            rows: (10..20).map(|i| (Timestamp(i * 1000), vec![-1.0, i as f64, 0.5])).collect(),
        };
        store.write(&WriteBatch { frames: vec![first, second], ..WriteBatch::default() }).unwrap();
        let columns = ["x".to_string(), "@score/pca".to_string(), "absent".to_string()];
        let all = store.table("a", &columns, Timestamp(0), Timestamp(i64::MAX), 100).unwrap();
        assert!(!all.downsampled);
        assert_eq!(all.ts.len(), 20);
        assert_eq!(all.columns[0][15], 15.0);
        assert!(all.columns[1][3].is_nan() && all.columns[1][13] == 0.5);
        assert!(all.columns[2].iter().all(|v| v.is_nan()));
        let coarse = store.table("a", &columns, Timestamp(0), Timestamp(i64::MAX), 4).unwrap();
        assert!(coarse.downsampled && coarse.ts.len() <= 4, "{coarse:?}");
        // Bucket means ignore NaN: the score column's first bucket has none.
        assert_eq!(coarse.columns[0][0], 2.0);
        assert!(coarse.columns[1][0].is_nan());
        let none = store.table("a", &["absent".to_string()], Timestamp(0), Timestamp(i64::MAX), 10).unwrap();
        assert!(none.ts.is_empty());
    }

    #[test]
    fn a_late_value_replaces_the_stored_one_adds_its_column_or_makes_a_frame() {
        let store = store();
        let rows = vec![(Timestamp(1000), vec![1.0, f64::NAN, 0.7]), (Timestamp(2000), vec![2.0, 20.0, 0.1])];
        let signals = vec!["x".to_string(), "y".to_string(), "@score/z".to_string()];
        store
            .write(&WriteBatch { frames: vec![FrameBatch { asset: "a".into(), signals, rows }], ..Default::default() })
            .unwrap();
        let correction = |signal: &str, ts: i64, value: f64| FrameCorrection {
            asset: "a".into(),
            signal: signal.into(),
            ts: Timestamp(ts),
            value,
        };
        // (what, correction, the stored (x, y, w, score) at its time after it)
        let cases = [
            ("a resend with another value replaces it", correction("x", 2000, 2.5), [2.5, 20.0, f64::NAN, 0.1]),
            ("a value the frame lacked fills it", correction("y", 1000, 10.0), [1.0, 10.0, f64::NAN, 0.7]),
            ("a signal the layout lacks is added", correction("w", 2000, -1.0), [2.5, 20.0, -1.0, 0.1]),
            ("no frame at that time: one is made", correction("x", 500, 0.5), [0.5, f64::NAN, f64::NAN, f64::NAN]),
        ];
        let columns = ["x", "y", "w", "@score/z"].map(String::from);
        for (what, correction, want) in cases {
            let ts = correction.ts;
            store.write(&WriteBatch { corrections: vec![correction], ..Default::default() }).unwrap();
            let table = store.table("a", &columns, ts, ts, 10).unwrap();
            assert_eq!(table.ts, vec![ts.0], "{what}");
            let got: Vec<f64> = table.columns.iter().map(|c| c[0]).collect();
            for (g, w) in got.iter().zip(want) {
                assert!(*g == w || (g.is_nan() && w.is_nan()), "{what}: {got:?} vs {want:?}");
            }
        }
        assert_eq!(store.frame_count().unwrap(), 3, "one frame per time");
    }

    #[test]
    fn buckets_fold_as_rows_stream_and_hold_at_most_max_points() {
        // (rows' times, max_points): raw below the bound, buckets above it.
        let cases: [(Vec<i64>, usize); 4] = [
            ((0..5).map(|i| i * 1000).collect(), 10),
            ((0..1000).map(|i| i * 1000).collect(), 10),
            ((0..997).map(|i| i * i * 7 + i % 13).collect(), 64),
            ((0..11).collect(), 10),
        ];
        for (times, max_points) in cases {
            let last = *times.last().unwrap();
            let mut buckets = Buckets::new(2, max_points, last);
            for &ts in &times {
                buckets.add(ts, vec![ts as f64, if ts % 2 == 0 { 1.0 } else { f64::NAN }]);
                assert!(buckets.raw.len() <= max_points + 1 && buckets.starts.len() <= max_points + 1);
            }
            let table = buckets.into_table();
            assert_eq!(table.downsampled, times.len() > max_points);
            assert!(table.ts.len() <= max_points.max(times.len().min(max_points)));
            // Reference: the same buckets computed over every row at once.
            let width = ((last - times[0]) / max_points as i64).max(1) + 1;
            for (row, &start) in table.ts.iter().enumerate() {
                let inside: Vec<i64> = if table.downsampled {
                    times.iter().copied().filter(|t| *t >= start && *t < start + width).collect()
                } else {
                    vec![start]
                };
                let mean = inside.iter().sum::<i64>() as f64 / inside.len() as f64;
                assert!((table.columns[0][row] - mean).abs() < 1e-9, "bucket at {start}");
                let has_even = inside.iter().any(|t| t % 2 == 0);
                assert_eq!(table.columns[1][row].is_nan(), !has_even, "NaN only where nothing was measured");
            }
        }
    }

    #[test]
    fn the_newest_rows_come_oldest_first_without_reading_the_rest() {
        let store = store();
        let rows = (0..100).map(|i| (Timestamp(i * 1000), vec![if i == 98 { f64::NAN } else { i as f64 }])).collect();
        let batch = FrameBatch { asset: "a".into(), signals: vec!["x".into()], rows };
        store.write(&WriteBatch { frames: vec![batch], ..WriteBatch::default() }).unwrap();
        let newest = store.newest_rows("a", &["x".to_string()], Timestamp(0), Timestamp(i64::MAX), 3).unwrap();
        assert_eq!(newest.ts, [96_000, 97_000, 99_000], "a frame without the column is skipped");
        assert_eq!(newest.columns[0], [96.0, 97.0, 99.0]);
        let within = store.newest_rows("a", &["x".to_string()], Timestamp(0), Timestamp(1000), 5).unwrap();
        assert_eq!(within.ts, [0, 1000]);
    }

    #[test]
    fn frames_round_trip_and_downsample() {
        let store = store();
        let rows = (0..1000).map(|i| (Timestamp(i * 1000), vec![i as f64, f64::NAN])).collect();
        let batch = FrameBatch { asset: "a".into(), signals: vec!["x".into(), "y".into()], rows };
        store.write(&WriteBatch { frames: vec![batch], ..WriteBatch::default() }).unwrap();
        let all = store.series("a", "x", Timestamp(0), Timestamp(i64::MAX), 5000).unwrap();
        assert_eq!(all.len(), 1000);
        assert_eq!(all[10].value, 10.0);
        assert!(store.series("a", "y", Timestamp(0), Timestamp(i64::MAX), 5000).unwrap().is_empty());
        let coarse = store.series("a", "x", Timestamp(0), Timestamp(i64::MAX), 10).unwrap();
        assert!(coarse.len() <= 10, "{}", coarse.len());
        assert_eq!(coarse.iter().map(|b| b.count).sum::<usize>(), 1000);
        assert_eq!(coarse[0].min, 0.0);
        assert_eq!(store.last_frame_times().unwrap()["a"], Timestamp(999_000));
        assert_eq!(store.frame_count().unwrap(), 1000);
        let ends = store.frame_ends("a", &["y".into(), "x".into()], 3, 2).unwrap();
        assert_eq!(ends.count, 1000);
        assert_eq!(ends.head.iter().map(|(_, v)| v[1]).collect::<Vec<_>>(), [0.0, 1.0, 2.0]);
        assert_eq!(
            ends.tail.iter().map(|(t, v)| (t.0, v[1])).collect::<Vec<_>>(),
            [(998_000, 998.0), (999_000, 999.0)]
        );
        assert!(ends.head.iter().all(|(_, v)| v[0].is_nan()), "y is missing in every frame");
        let short = store.frame_ends("a", &["x".into()], 800, 800).unwrap();
        assert_eq!((short.head.len(), short.tail.len()), (800, 200), "the ends do not overlap");
        assert_eq!(store.frame_ends("nobody", &["x".into()], 3, 3).unwrap(), FrameEnds::default());
        assert_eq!(store.delete_before(Timestamp(500_000)).unwrap(), 500);
    }

    #[test]
    fn alarm_lifecycle_is_persisted() {
        let store = store();
        let mut alarm = Alarm::raise("a", "pca", Timestamp(5), 3.0, 1.0, vec![]);
        store.insert_alarm(&mut alarm).unwrap();
        assert!(alarm.id > 0);
        alarm.observe(Timestamp(9), 7.0, vec![Contribution { signal: "x".into(), value: 6.0 }]);
        store.update_alarm_observation(&alarm).unwrap();
        let acked = store.transition_alarm(alarm.id, AlarmAction::Acknowledge, "kim", "on it", Timestamp(10)).unwrap();
        assert_eq!(acked.state, AlarmState::Acknowledged);
        assert_eq!(acked.peak_score, 7.0);
        // Observations that ride with a frame batch change the observation, never the state.
        let mut later = alarm.clone();
        later.observe(Timestamp(12), 9.0, vec![]);
        store.write(&WriteBatch { alarm_observations: vec![later], ..WriteBatch::default() }).unwrap();
        let stored = store.alarm(alarm.id).unwrap().unwrap();
        assert_eq!(
            (stored.state, stored.peak_score, stored.last_seen_at),
            (AlarmState::Acknowledged, 9.0, Timestamp(12))
        );
        let again = store.transition_alarm(alarm.id, AlarmAction::Acknowledge, "lee", "", Timestamp(11));
        assert!(matches!(again, Err(StoreError::Transition(_))));
        assert!(matches!(
            store.transition_alarm(999, AlarmAction::Clear { cause: None }, "x", "", Timestamp(0)),
            Err(StoreError::NoSuchAlarm(999))
        ));
        let open = store
            .alarms(&AlarmQuery { states: vec![AlarmState::Acknowledged], limit: 10, ..Default::default() })
            .unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].notes.len(), 2);
    }

    #[test]
    fn a_snapshot_holds_everything_the_engine_restores() {
        let store = store();
        let frames = |asset: &str, from: i64, to: i64| FrameBatch {
            asset: asset.into(),
            signals: vec!["x".into(), "y".into()],
            rows: (from..to).map(|i| (Timestamp(i * 1000), vec![i as f64, -(i as f64)])).collect(),
        };
        store
            .write(&WriteBatch { frames: vec![frames("a", 0, 50), frames("b", 10, 20)], ..WriteBatch::default() })
            .unwrap();
        let model = FittedModel::new(
            vec!["x".into(), "y".into()],
            usan_core::detector::DetectorConfig::Ewma(usan_core::detector::EwmaConfig::default()).build().unwrap(),
        );
        store.save_model("a", "ewma", &model).unwrap();
        let level = |basis: &str, level| LearnedLevel { basis: basis.into(), level };
        store.save_level("a", "forest", &level("first", 0.5)).unwrap();
        // A level learned again replaces the one before.
        store.save_level("a", "forest", &level("second", 0.625)).unwrap();
        store.save_level("b", "forest", &level("first", 0.25)).unwrap();
        let (mut open, mut closed) = (
            Alarm::raise("a", "ewma", Timestamp(5), 3.0, 1.0, vec![]),
            Alarm::raise("b", "ewma", Timestamp(6), 3.0, 1.0, vec![]),
        );
        store.insert_alarm(&mut open).unwrap();
        store.insert_alarm(&mut closed).unwrap();
        store.transition_alarm(closed.id, AlarmAction::Clear { cause: None }, "kim", "", Timestamp(7)).unwrap();
        let window = |starts, ends| MaintenanceWindow {
            id: 0,
            asset: Some("a".into()),
            starts: Timestamp(starts),
            ends: Timestamp(ends),
            by: "kim".into(),
            note: String::new(),
        };
        let (mut over, mut coming) = (window(0, 100), window(200, 300));
        store.insert_maintenance(&mut over).unwrap();
        store.insert_maintenance(&mut coming).unwrap();

        let request = SnapshotRequest {
            now: Timestamp(150),
            frame_ends: vec![("a".into(), vec!["y".into(), "x".into()]), ("none".into(), vec!["x".into()])],
            head: 3,
            tail: 4,
        };
        let snapshot = store.snapshot(&request).unwrap();
        assert_eq!(snapshot.last_frame_times["a"], Timestamp(49_000));
        assert_eq!(snapshot.last_frame_times["b"], Timestamp(19_000));
        assert_eq!(snapshot.models, vec![("a".to_string(), "ewma".to_string(), model)]);
        let key = |asset: &str| (asset.to_string(), "forest".to_string());
        assert_eq!(
            snapshot.levels,
            HashMap::from([(key("a"), level("second", 0.625)), (key("b"), level("first", 0.25))])
        );
        assert_eq!(snapshot.open_alarms.iter().map(|a| a.id).collect::<Vec<_>>(), vec![open.id]);
        assert_eq!(snapshot.maintenance.iter().map(|w| w.id).collect::<Vec<_>>(), vec![coming.id]);
        let ends = &snapshot.frame_ends["a"];
        assert_eq!(ends.count, 50);
        assert_eq!(ends.head.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), vec![0, 1000, 2000]);
        assert_eq!(ends.tail.iter().map(|(t, _)| t.0).collect::<Vec<_>>(), vec![46_000, 47_000, 48_000, 49_000]);
        assert_eq!(ends.tail[3].1, vec![-49.0, 49.0], "values in the order asked for");
        assert_eq!(snapshot.frame_ends["none"].count, 0);
        // The same as the separate reads.
        assert_eq!(snapshot.last_frame_times, store.last_frame_times().unwrap());
        assert_eq!(*ends, store.frame_ends("a", &["y".into(), "x".into()], 3, 4).unwrap());
    }

    #[test]
    fn a_version_1_store_is_migrated_and_keeps_its_findings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema_version', '1');
                 CREATE TABLE findings(
                   id INTEGER PRIMARY KEY, asset TEXT NOT NULL, detector TEXT NOT NULL, ts INTEGER NOT NULL,
                   score REAL, threshold REAL, anomalous INTEGER NOT NULL, contributions TEXT NOT NULL);
                 INSERT INTO findings(asset, detector, ts, score, threshold, anomalous, contributions)
                   VALUES ('pump', 'pca', 7, 2.5, 1.0, 1, '[{\"signal\":\"flow\",\"value\":2.0}]');
                 CREATE TABLE alarms(
                   id INTEGER PRIMARY KEY, asset TEXT NOT NULL, detector TEXT NOT NULL, state TEXT NOT NULL,
                   active INTEGER NOT NULL, raised_at INTEGER NOT NULL, last_seen_at INTEGER NOT NULL,
                   frames INTEGER NOT NULL, peak_score REAL, threshold REAL, top_signals TEXT NOT NULL,
                   ack_by TEXT, ack_at INTEGER, cleared_by TEXT, cleared_at INTEGER, notes TEXT NOT NULL);
                 INSERT INTO alarms(asset, detector, state, active, raised_at, last_seen_at, frames, top_signals, notes)
                   VALUES ('pump', 'pca', 'raised', 1, 7, 7, 1, '[]', '[]');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let old = store.findings(None, None, 10).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].contributions[0].signal, "flow");
        // The old alarm gains the workflow's columns and can be assigned and closed with a cause.
        let assigned = store.transition_alarm(1, AlarmAction::Assign { to: "lee" }, "kim", "", Timestamp(8)).unwrap();
        assert_eq!(assigned.assigned.map(|a| a.to), Some("lee".to_string()));
        let closed = store
            .transition_alarm(1, AlarmAction::Clear { cause: Some("seal leak") }, "lee", "", Timestamp(9))
            .unwrap();
        assert_eq!(store.alarm(1).unwrap().unwrap().cause.as_deref(), Some("seal leak"));
        assert_eq!(closed.state, AlarmState::Cleared);
        assert!(old[0].statistics.is_empty());
        let statistic = StatisticFinding {
            name: "spe".into(),
            value: 3.0,
            limit: 1.5,
            contributions: vec![Contribution { signal: "flow".into(), value: 2.0 }],
        };
        let finding = Finding { ts: Timestamp(8), statistics: vec![statistic], ..old[0].clone() };
        store.write(&WriteBatch { findings: vec![finding.clone()], ..WriteBatch::default() }).unwrap();
        let all = store.findings(None, None, 10).unwrap();
        assert!(all.contains(&finding), "{all:?}");
        drop(store);
        let version: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
    }
}
