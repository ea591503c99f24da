//! Storage: samples (as frames), findings, alarms and model artifacts.
//!
//! [`Store`] is the one boundary; [`sqlite::SqliteStore`] is the embedded
//! implementation (a PostgreSQL one comes with scale-out).
//!
//! **Flush policy.** Frames and findings are batched by the store writer
//! and committed at least every `flush_interval` (200 ms by default) and at
//! shutdown; a crash loses at most the uncommitted interval, and a replay
//! source resumes after the newest stored frame. Alarm changes (raise,
//! acknowledge, clear) are committed before the call returns, so an
//! acknowledgement the API confirmed is never lost. SQLite runs in WAL mode
//! with `synchronous=FULL`: a committed transaction survives `kill -9` and
//! power loss, and a torn write is rolled back on the next open.

pub mod sqlite;

use crate::common::HumanDuration;
use serde::Deserialize;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use usan_core::alarm::{Alarm, AlarmState, AlarmTransitionError, MaintenanceWindow};
use usan_core::detector::FittedModel;
use usan_core::model::{Finding, Timestamp};

/// `[store]`: the embedded SQLite store (PostgreSQL comes with scale-out).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StoreConfig {
    /// Embedded SQLite in WAL mode.
    Sqlite(SqliteConfig),
}

/// `[store] type = "sqlite"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Database file; `:memory:` keeps nothing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Samples and findings older than this (source time) are deleted.
    #[serde(default)]
    pub retention: Option<HumanDuration>,
    /// Accepted samples and findings are committed at least this often.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: HumanDuration,
    /// Check the file with `PRAGMA quick_check` at start (about 1.5 s per
    /// GB); a damaged file is moved aside either way.
    #[serde(default = "default_verify_at_start")]
    pub verify_at_start: bool,
}

fn default_verify_at_start() -> bool {
    true
}

fn default_store_path() -> PathBuf {
    PathBuf::from("usan.db")
}
fn default_flush_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite(SqliteConfig {
            path: default_store_path(),
            retention: None,
            flush_interval: default_flush_interval(),
            verify_at_start: default_verify_at_start(),
        })
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// A stored JSON column could not be read or written.
    #[error("stored data is not valid: {0}")]
    Encoding(#[from] serde_json::Error),
    /// No alarm with that id.
    #[error("no alarm {0}")]
    NoSuchAlarm(i64),
    /// No maintenance window with that id.
    #[error("no maintenance window {0}")]
    NoSuchWindow(i64),
    /// The alarm lifecycle forbids it.
    #[error(transparent)]
    Transition(#[from] AlarmTransitionError),
    /// A lock was poisoned by a panic elsewhere.
    #[error("store lock poisoned")]
    Poisoned,
    /// The database file is damaged: not a database, or malformed.
    #[error("the database is damaged: {0}")]
    Damaged(String),
}

impl StoreError {
    /// The same error, as [`StoreError::Damaged`] when the database reported
    /// a corrupt or foreign file.
    #[must_use]
    pub fn classify_damage(self) -> StoreError {
        match self {
            StoreError::Database(rusqlite::Error::SqliteFailure(e, message))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) =>
            {
                StoreError::Damaged(message.unwrap_or_else(|| e.to_string()))
            }
            other => other,
        }
    }
}

/// Frames of one asset to persist.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameBatch {
    /// Asset id.
    pub asset: String,
    /// Signal names, the layout of `rows`.
    pub signals: Vec<String>,
    /// `(timestamp, values)`; NaN marks a value that was not measured.
    pub rows: Vec<(Timestamp, Vec<f64>)>,
}

/// A value for one signal of a frame already stored (or not stored at all):
/// a sample that arrived after its frame was scored. It replaces the stored
/// value; the frame's scores and findings stay as they were.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameCorrection {
    /// Asset id.
    pub asset: String,
    /// The signal.
    pub signal: String,
    /// The frame's time.
    pub ts: Timestamp,
    /// The value to store.
    pub value: f64,
}

/// What the store writer commits in one transaction.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Frames, per asset.
    pub frames: Vec<FrameBatch>,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Open alarms whose observation (active, last seen, frames, peak, top signals) changed.
    pub alarm_observations: Vec<Alarm>,
    /// Journal entries whose samples are in these (or earlier) frames:
    /// deleted in the same transaction.
    pub journal_release: Vec<JournalRelease>,
    /// Late values written into stored frames, after `frames`.
    pub corrections: Vec<FrameCorrection>,
}

/// A batch of acknowledged samples to keep in the journal until what it
/// carries is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRecord {
    /// Asset id.
    pub asset: String,
    /// The samples, encoded by the pipeline (versioned, see CHANGELOG.md).
    pub payload: Vec<u8>,
}

/// A journal entry read back at start.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Position in the journal; increases and is never reused.
    pub seq: i64,
    /// Asset id.
    pub asset: String,
    /// The encoded samples.
    pub payload: Vec<u8>,
}

/// Every journal entry of `asset` up to `through` (inclusive) is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRelease {
    /// Asset id.
    pub asset: String,
    /// Highest released position.
    pub through: i64,
}

impl WriteBatch {
    /// Nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
            && self.findings.is_empty()
            && self.alarm_observations.is_empty()
            && self.journal_release.is_empty()
            && self.corrections.is_empty()
    }

    /// Add `other`'s writes after this batch's.
    pub fn extend(&mut self, other: WriteBatch) {
        self.frames.extend(other.frames);
        self.findings.extend(other.findings);
        self.alarm_observations.extend(other.alarm_observations);
        self.journal_release.extend(other.journal_release);
        self.corrections.extend(other.corrections);
    }
}

/// Which alarms to list.
#[derive(Debug, Clone, Default)]
pub struct AlarmQuery {
    /// Only this asset.
    pub asset: Option<String>,
    /// Only these states.
    pub states: Vec<AlarmState>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// One point of a signal's history; a bucket of points when downsampled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket (the point's own time when not downsampled).
    pub ts: i64,
    /// Mean over the bucket.
    pub value: f64,
    /// Smallest value in the bucket.
    pub min: f64,
    /// Largest value in the bucket.
    pub max: f64,
    /// Points in the bucket.
    pub count: usize,
}

/// Several columns of an asset's stored frames on one time axis, for charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesTable {
    /// Row times, Unix ms (bucket starts when downsampled).
    pub ts: Vec<i64>,
    /// Per requested column, a value per row: the bucket mean when
    /// downsampled, NaN (JSON `null`) where nothing was measured.
    pub columns: Vec<Vec<f64>>,
    /// Whether rows are buckets of several frames.
    pub downsampled: bool,
}

/// The two ends of an asset's stored frames (see [`Store::frame_ends`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameEnds {
    /// Frames stored in all.
    pub count: u64,
    /// The oldest frames, oldest first.
    pub head: Vec<(Timestamp, Vec<f64>)>,
    /// The newest frames after those, oldest first.
    pub tail: Vec<(Timestamp, Vec<f64>)>,
}

/// What the engine reads to take up where it stopped (see [`Store::snapshot`]).
#[derive(Debug, Clone)]
pub struct SnapshotRequest {
    /// Now: maintenance windows that ended before it are left out.
    pub now: Timestamp,
    /// The assets whose stored frames remaining-useful-life models take up
    /// again, each with the signals to read (in this order).
    pub frame_ends: Vec<(String, Vec<String>)>,
    /// How many of each asset's oldest frames to read.
    pub head: usize,
    /// How many of its newest frames to read.
    pub tail: usize,
}

/// The alarm level a package detector set on an asset's baseline scores,
/// kept so that a restart monitors at once instead of learning again.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedLevel {
    /// What the level was learned with (the package's digest, the quantile,
    /// the baseline's length): a level whose basis differs is not used.
    pub basis: String,
    /// The level.
    pub level: f64,
}

/// The engine's state as the store kept it, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Newest stored frame time per asset: a replay resumes after it.
    pub last_frame_times: HashMap<String, Timestamp>,
    /// Every stored model artifact: `(asset, detector, model)`.
    pub models: Vec<(String, String, FittedModel)>,
    /// Stored models that did not read back (damaged or of another format):
    /// `(asset, detector, why)`. Their detectors learn anew.
    pub refused_models: Vec<(String, String, String)>,
    /// Alarm levels package detectors set on their baseline scores, by
    /// `(asset, detector)`.
    pub levels: HashMap<(String, String), LearnedLevel>,
    /// Alarms raised or acknowledged and not cleared, newest first.
    pub open_alarms: Vec<Alarm>,
    /// Maintenance windows not over at `now`.
    pub maintenance: Vec<MaintenanceWindow>,
    /// Per requested asset, the two ends of its stored frames.
    pub frame_ends: HashMap<String, FrameEnds>,
}

/// The storage boundary. Calls block; async callers use `spawn_blocking`.
pub trait Store: Send + Sync {
    /// Commit frames and findings in one transaction.
    ///
    /// # Errors
    /// When the database refuses the write; nothing of the batch is kept.
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Persist a newly raised alarm and give it its id.
    ///
    /// # Errors
    /// When the database refuses the write.
    fn insert_alarm(&self, alarm: &mut Alarm) -> Result<(), StoreError>;

    /// Persist what the engine observed on an open alarm (activity, count,
    /// peak, explanation), leaving what people set untouched.
    ///
    /// # Errors
    /// When the database refuses the write.
    fn update_alarm_observation(&self, alarm: &Alarm) -> Result<(), StoreError>;

    /// Acknowledge, assign, comment on or clear an alarm, committed before returning.
    ///
    /// # Errors
    /// [`StoreError::NoSuchAlarm`], [`StoreError::Transition`] or a database error.
    fn transition_alarm(
        &self,
        id: i64,
        action: AlarmAction<'_>,
        by: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<Alarm, StoreError>;

    /// Declare a maintenance window and give it its id, committed before returning.
    ///
    /// # Errors
    /// A database error.
    fn insert_maintenance(&self, window: &mut MaintenanceWindow) -> Result<(), StoreError>;

    /// Maintenance windows that end after `after`, earliest start first.
    ///
    /// # Errors
    /// A database error.
    fn maintenance(&self, after: Timestamp) -> Result<Vec<MaintenanceWindow>, StoreError>;

    /// End a window at `at` (if it would end later), committed before returning.
    ///
    /// # Errors
    /// [`StoreError::NoSuchWindow`] or a database error.
    fn end_maintenance(&self, id: i64, at: Timestamp) -> Result<MaintenanceWindow, StoreError>;

    /// One alarm.
    ///
    /// # Errors
    /// A database error.
    fn alarm(&self, id: i64) -> Result<Option<Alarm>, StoreError>;

    /// Alarms matching the query, newest first.
    ///
    /// # Errors
    /// A database error.
    fn alarms(&self, query: &AlarmQuery) -> Result<Vec<Alarm>, StoreError>;

    /// Findings, newest first.
    ///
    /// # Errors
    /// A database error.
    fn findings(&self, asset: Option<&str>, since: Option<Timestamp>, limit: usize)
    -> Result<Vec<Finding>, StoreError>;

    /// A signal's history in `[from, to]`, at most `max_points` points
    /// (equal-time buckets beyond that). `None` when the asset has no such signal stored.
    ///
    /// # Errors
    /// A database error.
    fn series(
        &self,
        asset: &str,
        signal: &str,
        from: Timestamp,
        to: Timestamp,
        max_points: usize,
    ) -> Result<Vec<SeriesPoint>, StoreError>;

    /// Columns (signals, or `@score/<detector>`) of an asset's frames in
    /// `[from, to]` on one time axis: at most `max_points` rows (equal-time
    /// buckets beyond that). Rows lacking every column are left out.
    ///
    /// # Errors
    /// A database error.
    fn table(
        &self,
        asset: &str,
        columns: &[String],
        from: Timestamp,
        to: Timestamp,
        max_points: usize,
    ) -> Result<SeriesTable, StoreError>;

    /// The newest `rows` frames of `columns` in `[from, to]` (oldest first),
    /// as stored: no buckets. Frames lacking every column are left out.
    ///
    /// # Errors
    /// A database error.
    fn newest_rows(
        &self,
        asset: &str,
        columns: &[String],
        from: Timestamp,
        to: Timestamp,
        rows: usize,
    ) -> Result<SeriesTable, StoreError>;

    /// Every frame of `columns` in `[from, to]`, oldest first, as stored,
    /// handed to `visit` one at a time (it returns `false` to stop): a
    /// whole history without holding it in memory (`usan export`).
    /// Frames lacking every column are left out.
    ///
    /// # Errors
    /// A database error.
    fn each_row(
        &self,
        asset: &str,
        columns: &[String],
        from: Timestamp,
        to: Timestamp,
        visit: &mut dyn FnMut(i64, &[f64]) -> bool,
    ) -> Result<(), StoreError>;

    /// The number of frames stored for `asset`, its oldest `first` and its
    /// newest `last` frames (oldest first, not overlapping), each as values
    /// in the order of `signals` (NaN where a frame lacks one).
    ///
    /// # Errors
    /// A database error.
    fn frame_ends(&self, asset: &str, signals: &[String], first: usize, last: usize) -> Result<FrameEnds, StoreError>;

    /// Newest stored frame time per asset.
    ///
    /// # Errors
    /// A database error.
    fn last_frame_times(&self) -> Result<HashMap<String, Timestamp>, StoreError>;

    /// Stored frame count (all assets).
    ///
    /// # Errors
    /// A database error.
    fn frame_count(&self) -> Result<u64, StoreError>;

    /// Save (replace) the model artifact of an asset's detector.
    ///
    /// # Errors
    /// A database error.
    fn save_model(&self, asset: &str, detector: &str, model: &FittedModel) -> Result<(), StoreError>;

    /// Every stored model artifact.
    ///
    /// # Errors
    /// A database or decoding error.
    fn models(&self) -> Result<Vec<(String, String, FittedModel)>, StoreError>;

    /// Save (replace) the alarm level a package detector learned on an
    /// asset's baseline.
    ///
    /// # Errors
    /// A database error.
    fn save_level(&self, asset: &str, detector: &str, level: &LearnedLevel) -> Result<(), StoreError>;

    /// Everything the engine needs to restore its state at start-up, as of
    /// one moment (one read transaction).
    ///
    /// # Errors
    /// A database or decoding error.
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Snapshot, StoreError>;

    /// Delete frames and findings older than `before`; returns rows deleted.
    ///
    /// # Errors
    /// A database error.
    fn delete_before(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Append acknowledged batches to the journal in one durable commit
    /// (one sync for the group); their positions, in order.
    ///
    /// # Errors
    /// When the database refuses the write (a full disk): nothing is kept.
    fn journal_append(&self, records: &[JournalRecord]) -> Result<Vec<i64>, StoreError>;

    /// Up to `limit` journal entries after position `after`, oldest first.
    ///
    /// # Errors
    /// A database error.
    fn journal_read(&self, after: i64, limit: usize) -> Result<Vec<JournalEntry>, StoreError>;
}

/// What a person does to an alarm (the note goes with each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction<'a> {
    /// Take it.
    Acknowledge,
    /// Hand it to somebody to fix.
    Assign {
        /// Who.
        to: &'a str,
    },
    /// Add the note to its history.
    Comment,
    /// Close it, with its cause when known.
    Clear {
        /// Why it happened.
        cause: Option<&'a str>,
    },
    /// usan: nobody acknowledged it in time.
    Escalate,
}
