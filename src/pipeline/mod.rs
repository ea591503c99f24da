//! The runtime: sources → per-asset workers → alarms → sinks and store.
//!
//! Every hop is a bounded channel, so a slow store or sink pushes back to
//! the sources instead of growing memory. Assets are sharded over worker
//! tasks by index; a worker owns its assets' state outright (no locks on the
//! hot path). Shutdown stops the sources, lets the workers drain and flush
//! what they accepted, then lets the store writer commit and the sinks write
//! the rest.

pub mod alarms;
pub mod external;

use alarms::AlarmConfig;
pub mod journal;
pub mod rul;
mod worker;

pub use alarms::AlarmBook;

use crate::plant::Plant;
use crate::sink::{Event, SinkConfig};
use crate::source::{Router, SourceConfig, SourceContext};
use crate::store::{SnapshotRequest, Store, WriteBatch};
use crate::store::{SqliteConfig, StoreConfig};
use crate::telemetry::Metrics;
use anyhow::Context;
use serde::Deserialize;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use usan_core::detector::FittedModel;
use usan_core::frame::FramePolicy;
use usan_core::model::{Contribution, Timestamp};

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of every channel, in batches.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Asset worker tasks; assets are sharded over them.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How samples become frames.
    #[serde(default)]
    pub frame: FramePolicy,
    /// Fitted model artifacts, `<dir>/<asset>/<detector>.json`, loaded at start.
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    /// Keep raw samples in the store (findings and alarms are always kept).
    #[serde(default = "default_true")]
    pub store_samples: bool,
    /// When a source that acknowledges (HTTP push, MQTT QoS 1) does so.
    #[serde(default)]
    pub ack: AckMode,
}

/// `[pipeline] ack`: when sources acknowledge what they receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After the samples are committed to the store's journal: an
    /// acknowledged sample survives a crash or a power cut.
    #[default]
    Commit,
    /// As soon as the engine has queued them: faster, and a crash loses
    /// what was acknowledged in the last flush interval.
    Received,
}

/// The largest `queue_capacity`: more batches than an edge box holds in memory (Tokio refuses channels near `usize::MAX / 8`).
pub const MAX_QUEUE_CAPACITY: usize = 1_000_000;

fn default_queue_capacity() -> usize {
    1024
}
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn default_true() -> bool {
    true
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_capacity: default_queue_capacity(),
            workers: default_workers(),
            frame: FramePolicy::default(),
            models_dir: None,
            store_samples: true,
            ack: AckMode::default(),
        }
    }
}

/// What the API shows about one detector on one asset.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DetectorLive {
    /// Detector name.
    pub name: String,
    /// `learning`, `monitoring` or `failed: ...`.
    pub status: String,
    /// Baseline frames collected while learning.
    pub baseline_frames: usize,
    /// Baseline frames wanted.
    pub baseline_needed: usize,
    /// Latest score.
    pub score: Option<f64>,
    /// Threshold level.
    pub threshold: Option<f64>,
    /// Whether the threshold currently declares the asset anomalous.
    pub anomalous: bool,
    /// Signals explaining the latest score, largest first.
    pub top_signals: Vec<Contribution>,
    /// The package, for a detector that runs a model exported from Python.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<external::ModelInfo>,
    /// A classifier package's latest predicted class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What the API shows about one asset.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AssetLive {
    /// Frames assembled.
    pub frames: u64,
    /// Source time of the newest frame.
    pub last_ts: Option<Timestamp>,
    /// Per detector.
    pub detectors: Vec<DetectorLive>,
    /// Per remaining-useful-life model watching the asset.
    pub rul: Vec<rul::RulLive>,
}

impl AssetLive {
    /// `learning`, `normal`, `anomalous` or `idle` (no data yet).
    #[must_use]
    pub fn health(&self) -> &'static str {
        if self.detectors.iter().any(|d| d.anomalous) || self.rul.iter().any(|r| r.alarming) {
            "anomalous"
        } else if self.frames == 0 {
            "idle"
        } else if self.detectors.iter().any(|d| d.status == "learning") {
            "learning"
        } else {
            "normal"
        }
    }
}

/// Live state of every asset, updated by the workers after each batch.
pub struct LiveState {
    assets: Vec<Mutex<AssetLive>>,
}

impl LiveState {
    fn new(assets: usize) -> Self {
        LiveState { assets: (0..assets).map(|_| Mutex::new(AssetLive::default())).collect() }
    }

    /// A copy of one asset's state.
    #[must_use]
    pub fn get(&self, asset: usize) -> Option<AssetLive> {
        self.assets.get(asset).map(|m| m.lock().map(|g| g.clone()).unwrap_or_default())
    }

    pub(crate) fn set(&self, asset: usize, live: AssetLive) {
        if let Some(slot) = self.assets.get(asset)
            && let Ok(mut guard) = slot.lock()
        {
            *guard = live;
        }
    }
}

/// Prefix of the stored columns that hold detector scores, beside the
/// signals (`@score/pca`), so score history is charted like any signal.
/// Signal names may not start with `@`.
pub const SCORE_PREFIX: &str = "@score/";

/// One frame as live charts draw it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveRow {
    /// Source time, Unix ms.
    pub ts: i64,
    /// Signal values in the asset's order (`null` where not measured).
    pub values: Vec<f64>,
    /// Detector scores in the asset's detector order (`null` while learning).
    pub scores: Vec<f64>,
}

/// Frames of one asset, published after each batch.
#[derive(Debug, Clone)]
pub struct LiveRows {
    /// Asset index.
    pub asset: usize,
    /// The batch's frames.
    pub rows: Vec<LiveRow>,
}

/// Frames of the assets somebody watches, for live charts. Workers publish
/// only assets with a watcher, so nobody watching costs one atomic load per
/// batch; a watcher that falls behind misses frames (it never slows the engine).
pub struct LiveFrames {
    watchers: Vec<std::sync::atomic::AtomicUsize>,
    sender: tokio::sync::broadcast::Sender<Arc<LiveRows>>,
}

/// Keeps an asset watched while alive.
pub struct Watching {
    hub: Arc<LiveFrames>,
    asset: usize,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(count) = self.hub.watchers.get(self.asset) {
            count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl LiveFrames {
    fn new(assets: usize) -> Self {
        let (sender, _) = tokio::sync::broadcast::channel(256);
        LiveFrames { watchers: (0..assets).map(|_| std::sync::atomic::AtomicUsize::new(0)).collect(), sender }
    }

    /// Start watching `asset`: its frames arrive on the receiver (with other
    /// watched assets' frames: filter by [`LiveRows::asset`]) until the guard drops.
    #[must_use]
    pub fn watch(self: &Arc<Self>, asset: usize) -> (Watching, tokio::sync::broadcast::Receiver<Arc<LiveRows>>) {
        if let Some(count) = self.watchers.get(asset) {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        (Watching { hub: self.clone(), asset }, self.sender.subscribe())
    }

    pub(crate) fn watched(&self, asset: usize) -> bool {
        self.watchers.get(asset).is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }

    pub(crate) fn publish(&self, rows: LiveRows) {
        let _ = self.sender.send(Arc::new(rows));
    }
}

/// How long stopping sources get to finish what they are doing.
const SOURCE_STOP_LIMIT: Duration = Duration::from_secs(3);

/// A running engine.
pub struct Engine {
    /// The configured plant.
    pub plant: Arc<Plant>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where sources (and the push API) send batches.
    pub router: Router,
    /// Live asset state.
    pub live: Arc<LiveState>,
    /// Frames of watched assets, for live charts.
    pub live_frames: Arc<LiveFrames>,
    /// Open alarms and their transitions.
    pub alarms: Arc<AlarmBook>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Every finding and alarm event as the sinks receive it, for live views
    /// (a receiver that falls behind misses events; the sinks never do).
    pub live_events: tokio::sync::broadcast::Sender<Arc<[Event]>>,
    /// Whether a source takes samples pushed through the API (`POST /api/v1/samples`).
    pub accepts_pushed_samples: bool,
    shutdown: watch::Sender<bool>,
    sources: Vec<SourceTask>,
    journal: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    sinks: JoinHandle<()>,
    escalation: Option<JoinHandle<()>>,
    store_queue: mpsc::Sender<WriteBatch>,
    /// The sinks' queue, for alarm events that do not come from a worker.
    sink_queue: mpsc::Sender<Vec<Event>>,
}

/// What the engine runs: the parts of a configuration it needs
/// (`Config::engine` or `.into()` gives them).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The plant, indexed.
    pub plant: Plant,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[pipeline]`.
    pub pipeline: PipelineConfig,
    /// `[alarms]`.
    pub alarms: AlarmConfig,
    /// `[[rul]]`.
    pub rul: Vec<rul::RulSpec>,
    /// `[[sources]]`.
    pub sources: Vec<SourceConfig>,
    /// `[[sinks]]`.
    pub sinks: Vec<SinkConfig>,
}

/// Open the store a configuration names.
///
/// # Errors
/// When the store cannot be opened.
pub fn open_store(config: &StoreConfig, metrics: &Metrics) -> anyhow::Result<Arc<dyn Store>> {
    match config {
        StoreConfig::Sqlite(SqliteConfig { path, verify_at_start, .. }) => {
            let (store, quarantined) = crate::store::sqlite::SqliteStore::open_or_quarantine(path, *verify_at_start)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            if let Some(q) = quarantined {
                metrics.store_quarantined.inc_by(1);
                tracing::error!(
                    "the store {} is damaged ({}): moved aside to {}; starting with an empty store",
                    path.display(),
                    q.reason,
                    q.moved_to.display()
                );
            }
            Ok(Arc::new(store))
        }
    }
}

/// Fitted models from `<dir>/<asset>/<detector>.json`. A file that cannot
/// be read as a usan model of this format is refused (logged, counted): its
/// detector learns anew and the rest runs.
fn models_from_dir(dir: &std::path::Path, plant: &Plant, metrics: &Metrics) -> HashMap<(String, String), FittedModel> {
    let mut out = HashMap::new();
    for asset in &plant.assets {
        for &d in &asset.detectors {
            let name = &plant.detectors[d].name;
            let path = dir.join(&asset.path.asset).join(format!("{name}.json"));
            if !path.exists() {
                continue;
            }
            let model = std::fs::read_to_string(&path)
                .map_err(anyhow::Error::from)
                .and_then(|text| serde_json::from_str::<FittedModel>(&text).context("not a usan model"))
                .and_then(|model| model.check_format().map(|()| model).map_err(anyhow::Error::from));
            match model {
                Ok(model) => {
                    out.insert((asset.path.asset.clone(), name.clone()), model);
                }
                Err(e) => {
                    metrics.models_refused.inc_by(1);
                    tracing::error!(asset = %asset.path.asset, detector = %name, "model {} refused: {e:#}; the detector learns anew", path.display());
                }
            }
        }
    }
    out
}

impl Engine {
    /// Build every component and start the sources, workers, writer and sinks.
    ///
    /// # Errors
    /// When the store, a source, a sink or a model cannot be prepared.
    pub async fn start(config: impl Into<EngineConfig>) -> anyhow::Result<Engine> {
        let config: EngineConfig = config.into();
        let plant = Arc::new(config.plant.clone());
        let metrics = Arc::new(Metrics::default());
        let store = open_store(&config.store, &metrics)?;
        let live = Arc::new(LiveState::new(plant.assets.len()));
        let live_frames = Arc::new(LiveFrames::new(plant.assets.len()));

        let rul::Prepared { watches: mut ruls, refused } = rul::prepare(&config.rul, &plant)?;
        for why in refused {
            metrics.models_refused.inc_by(1);
            tracing::error!("{why}; running without it");
        }
        let external = tokio::task::block_in_place(|| external::load_all(&plant));
        for why in external.values().filter_map(|l| l.as_ref().err()) {
            metrics.models_refused.inc_by(1);
            tracing::error!("{why}; its assets run without it");
        }
        let restored = restore(&store, &plant, config.pipeline.models_dir.as_deref(), &mut ruls, &metrics).await?;
        let alarms = Arc::new(AlarmBook::new(
            store.clone(),
            restored.open_alarms,
            restored.maintenance,
            config.alarms.auto_clear,
            metrics.clone(),
        ));
        let (models, resume, levels) = (restored.models, restored.resume, restored.levels);

        let capacity = config.pipeline.queue_capacity;
        let (store_tx, store_rx) = mpsc::channel::<WriteBatch>(capacity);
        let (sink_tx, sink_rx) = mpsc::channel::<Vec<Event>>(capacity);
        let (shutdown, shutdown_rx) = watch::channel(false);

        let workers_n = config.pipeline.workers.min(plant.assets.len().max(1));
        let mut shard_senders = Vec::new();
        let mut workers = Vec::new();
        for shard in 0..workers_n {
            let (tx, rx) = mpsc::channel(capacity);
            shard_senders.push(tx);
            let assets: Vec<usize> = (0..plant.assets.len()).filter(|a| a % workers_n == shard).collect();
            let shard_ruls = assets.iter().filter_map(|a| ruls.remove(a).map(|w| (*a, w))).collect();
            let worker = worker::Worker::new(worker::WorkerParts {
                plant: plant.clone(),
                assets,
                policy: config.pipeline.frame,
                store_samples: config.pipeline.store_samples,
                models: &models,
                levels: &levels,
                resume: &resume,
                store: store.clone(),
                store_queue: store_tx.clone(),
                sink_queue: sink_tx.clone(),
                alarms: alarms.clone(),
                live: live.clone(),
                live_frames: live_frames.clone(),
                metrics: metrics.clone(),
                ruls: shard_ruls,
                external: &external,
            });
            workers.push(tokio::spawn(worker.run(rx)));
        }
        let shard_senders = Arc::new(shard_senders);
        let (router, journal) = match config.pipeline.ack {
            AckMode::Commit => {
                let (tx, rx) = mpsc::channel(capacity);
                let committer =
                    journal::committer(store.clone(), plant.clone(), rx, shard_senders.clone(), metrics.clone());
                (Router::new(shard_senders.clone(), Some(tx), metrics.clone()), Some(tokio::spawn(committer)))
            }
            AckMode::Received => (Router::new(shard_senders.clone(), None, metrics.clone()), None),
        };

        let StoreConfig::Sqlite(SqliteConfig { flush_interval, retention, .. }) = &config.store;
        let writer = tokio::spawn(store_writer(
            store.clone(),
            store_rx,
            flush_interval.0,
            retention.map(|r| r.0),
            metrics.clone(),
        ));

        let mut sinks_built = Vec::new();
        for sink in &config.sinks {
            sinks_built.push(sink.build(&metrics)?);
        }
        let (live_events, _) = tokio::sync::broadcast::channel(1024);
        let sinks = tokio::spawn(sink_loop(sinks_built, sink_rx, live_events.clone()));
        let escalation = config
            .alarms
            .escalate_after
            .map(|after| tokio::spawn(escalate(alarms.clone(), after.0, sink_tx.clone(), shutdown.subscribe())));

        // What was acknowledged but not yet committed when the last run ended,
        // before any source sends something new.
        let replayed =
            journal::replay(&store, &plant, &shard_senders, &metrics).await.context("replaying the store's journal")?;
        if replayed > 0 {
            tracing::info!("replayed {replayed} acknowledged batches from the journal");
        }
        drop(shard_senders);

        let resume_idx: HashMap<usize, Timestamp> =
            resume.iter().filter_map(|(name, ts)| plant.asset_index.get(name).map(|i| (*i, *ts))).collect();
        let context = SourceContext {
            plant: plant.clone(),
            router: router.clone(),
            shutdown: shutdown_rx,
            resume_after: resume_idx,
            metrics: metrics.clone(),
        };
        let (sources, accepts_pushed_samples) = start_sources(&config.sources, &context)?;

        Ok(Engine {
            plant,
            store,
            router,
            live,
            live_frames,
            alarms,
            metrics,
            live_events,
            accepts_pushed_samples,
            shutdown,
            sources,
            journal,
            workers,
            writer,
            sinks,
            escalation,
            store_queue: store_tx,
            sink_queue: sink_tx,
        })
    }

    /// Whether every source task has finished (a replay reached its end).
    #[must_use]
    pub fn sources_finished(&self) -> bool {
        self.sources.iter().all(|(_, h)| h.is_finished())
    }

    /// Batches waiting for the store writer.
    #[must_use]
    pub fn store_queue_depth(&self) -> usize {
        self.store_queue.max_capacity() - self.store_queue.capacity()
    }

    /// A probe of the store queue depth that does not keep the queue open.
    pub fn store_queue_depth_probe(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let weak = self.store_queue.downgrade();
        move || weak.upgrade().map_or(0, |q| q.max_capacity() - q.capacity())
    }

    /// A sender into the sinks' queue (alarm actions taken through the API).
    /// Like a `Router` clone, it must be dropped before [`Engine::stop`].
    #[must_use]
    pub fn sink_sender(&self) -> mpsc::Sender<Vec<Event>> {
        self.sink_queue.clone()
    }

    /// A watch that turns `true` at shutdown.
    #[must_use]
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stop the sources, drain and flush everything accepted, and wait.
    /// Every `Router` clone handed out (e.g. to the API) must be dropped first.
    ///
    /// # Errors
    /// The first source error, after everything else has been flushed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let mut first_error = None;
        let deadline = tokio::time::Instant::now() + SOURCE_STOP_LIMIT;
        for (name, mut handle) in self.sources {
            let Ok(outcome) = tokio::time::timeout_at(deadline, &mut handle).await else {
                // What it had acknowledged is in the journal; the rest its peer sends again.
                handle.abort();
                tracing::warn!(source = %name, "did not stop within {SOURCE_STOP_LIMIT:?}; stopped");
                continue;
            };
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e.context(format!("source `{name}` failed")));
                }
                Err(e) => {
                    first_error.get_or_insert(anyhow::anyhow!("source `{name}` panicked: {e}"));
                }
            }
        }
        drop(self.router);
        if let Some(journal) = self.journal {
            let _ = journal.await;
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        drop(self.store_queue);
        let _ = self.writer.await;
        if let Some(escalation) = self.escalation {
            let _ = escalation.await;
        }
        drop(self.sink_queue);
        let _ = self.sinks.await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until every source has finished (a replay has ended) or shutdown.
    pub async fn wait_for_sources(&self) {
        let mut shutdown = self.shutdown.subscribe();
        while !self.sources_finished() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Wait until the queues are empty (everything accepted has been
    /// processed and handed to the store writer).
    pub async fn wait_idle(&self) {
        while self.router.queued() > 0 || self.store_queue_depth() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the engine takes up from the store and the models folder.
struct Restored {
    /// Fitted models per (asset, detector): the store's, then the folder's.
    models: HashMap<(String, String), FittedModel>,
    /// Newest stored frame time per asset.
    resume: HashMap<String, Timestamp>,
    /// Levels package detectors learned, per (asset, detector).
    levels: HashMap<(String, String), crate::store::LearnedLevel>,
    open_alarms: Vec<usan_core::alarm::Alarm>,
    maintenance: Vec<usan_core::alarm::MaintenanceWindow>,
}

/// Read the engine's state from the store in one snapshot, add the models
/// of `models_dir`, and let every RUL watch take up its asset's stored history.
async fn restore(
    store: &Arc<dyn Store>,
    plant: &Plant,
    models_dir: Option<&std::path::Path>,
    ruls: &mut HashMap<usize, Vec<rul::RulWatch>>,
    metrics: &Metrics,
) -> anyhow::Result<Restored> {
    let (head, tail) = rul::RulWatch::kept();
    let request = SnapshotRequest {
        now: Timestamp(chrono::Utc::now().timestamp_millis()),
        frame_ends: ruls
            .keys()
            .map(|&index| (plant.assets[index].path.asset.clone(), plant.assets[index].signal_names()))
            .collect(),
        head,
        tail,
    };
    let snapshot = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.snapshot(&request))
            .await?
            .context("reading the engine's state from the store")?
    };
    for (asset, detector, why) in &snapshot.refused_models {
        metrics.models_refused.inc_by(1);
        tracing::error!(asset = %asset, detector = %detector, "stored model refused: {why}; the detector learns anew");
    }
    let mut models: HashMap<(String, String), FittedModel> =
        snapshot.models.into_iter().map(|(a, d, m)| ((a, d), m)).collect();
    if let Some(dir) = models_dir {
        models.extend(models_from_dir(dir, plant, metrics));
    }
    for (&index, watches) in ruls.iter_mut() {
        let Some(ends) = snapshot.frame_ends.get(&plant.assets[index].path.asset).filter(|e| e.count > 0) else {
            continue;
        };
        let head: Vec<Vec<f64>> = ends.head.iter().map(|(_, v)| v.clone()).collect();
        let tail: Vec<Vec<f64>> = ends.tail.iter().map(|(_, v)| v.clone()).collect();
        for watch in watches {
            watch.restore(ends.count, &head, &tail);
        }
    }
    Ok(Restored {
        models,
        resume: snapshot.last_frame_times,
        levels: snapshot.levels,
        open_alarms: snapshot.open_alarms,
        maintenance: snapshot.maintenance,
    })
}

/// A running source task, by source name.
type SourceTask = (String, JoinHandle<anyhow::Result<()>>);

/// Build and start every source; whether one of them is served by the API
/// (push over HTTP).
fn start_sources(configs: &[SourceConfig], context: &SourceContext) -> anyhow::Result<(Vec<SourceTask>, bool)> {
    let mut sources = Vec::new();
    let mut accepts_pushed_samples = false;
    for config in configs {
        let Some(source) = config.build(&context.plant)? else {
            // Built by nothing: the API serves it.
            accepts_pushed_samples = true;
            continue;
        };
        sources.push((config.name().to_string(), tokio::spawn(source.run(context.clone()))));
    }
    Ok((sources, accepts_pushed_samples))
}

/// Batches writes and commits them at least every `flush_interval`.
async fn store_writer(
    store: Arc<dyn Store>,
    mut queue: mpsc::Receiver<WriteBatch>,
    flush_interval: Duration,
    retention: Option<Duration>,
    metrics: Arc<Metrics>,
) {
    const MAX_FRAMES_PER_COMMIT: usize = 100_000;
    let mut pending = WriteBatch::default();
    let mut pending_frames = 0usize;
    let mut deadline = tokio::time::Instant::now() + flush_interval;
    let mut newest = i64::MIN;
    let mut last_retention = tokio::time::Instant::now();
    loop {
        let received = tokio::time::timeout_at(deadline, queue.recv()).await;
        let closed = matches!(received, Ok(None));
        if let Ok(Some(batch)) = received {
            for frames in &batch.frames {
                pending_frames += frames.rows.len();
                if let Some((ts, _)) = frames.rows.last() {
                    newest = newest.max(ts.0);
                }
            }
            pending.extend(batch);
        }
        let due = tokio::time::Instant::now() >= deadline;
        if (due || closed || pending_frames >= MAX_FRAMES_PER_COMMIT) && !pending.is_empty() {
            let batch = std::mem::take(&mut pending);
            let frames = pending_frames as u64;
            pending_frames = 0;
            commit_until_done(&store, batch, frames, flush_interval, closed, &metrics).await;
        }
        if due || closed {
            deadline = tokio::time::Instant::now() + flush_interval;
        }
        if let Some(keep) = retention
            && last_retention.elapsed() > Duration::from_secs(60)
            && newest > i64::MIN
        {
            last_retention = tokio::time::Instant::now();
            let before = Timestamp(newest - keep.as_millis() as i64);
            let store = store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.delete_before(before)).await {
                tracing::error!("retention delete failed: {e}");
            }
        }
        if closed {
            break;
        }
    }
}

/// Commit `batch`, retrying while the store refuses (a full disk, an I/O
/// error): frames are never dropped while later ones commit, which would
/// move the resume point past them. Meanwhile the queue fills and holds the
/// sources back; a push then fails its journal commit and gets 503. At
/// shutdown a few attempts are made; what is not committed stays in the
/// journal for the next start.
async fn commit_until_done(
    store: &Arc<dyn Store>,
    batch: WriteBatch,
    frames: u64,
    flush_interval: Duration,
    stopping: bool,
    metrics: &Metrics,
) {
    const ATTEMPTS_AT_SHUTDOWN: u32 = 3;
    let batch = Arc::new(batch);
    let mut wait = flush_interval.max(Duration::from_millis(50));
    for attempt in 1.. {
        let (store, pending) = (store.clone(), batch.clone());
        match tokio::task::spawn_blocking(move || store.write(&pending)).await {
            Ok(Ok(())) => {
                metrics.frames_stored.inc_by(frames);
                metrics.store_commits.inc_by(1);
                if attempt > 1 {
                    tracing::info!("store write succeeded after {attempt} attempts");
                }
                return;
            }
            Ok(Err(e)) => {
                metrics.store_errors.inc_by(1);
                if attempt == 1 || attempt % 20 == 0 {
                    tracing::error!("store write failed ({attempt} attempts), {frames} frames kept and retried: {e}");
                }
            }
            Err(e) => tracing::error!("store writer thread failed: {e}"),
        }
        if stopping && attempt >= ATTEMPTS_AT_SHUTDOWN {
            tracing::error!("stopping with {frames} frames not committed; the journal replays them at the next start");
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Escalate unacknowledged alarms once a second until shutdown.
async fn escalate(
    alarms: Arc<AlarmBook>,
    after: Duration,
    sinks: mpsc::Sender<Vec<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = Timestamp(chrono::Utc::now().timestamp_millis());
        let book = alarms.clone();
        match tokio::task::spawn_blocking(move || book.escalate_due(now, after)).await {
            Ok(Ok(escalated)) if !escalated.is_empty() => {
                let events = escalated.into_iter().map(Event::AlarmEscalated).collect();
                if sinks.send(events).await.is_err() {
                    return;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("cannot escalate alarms: {e}"),
            Err(e) => tracing::error!("escalation task failed: {e}"),
        }
    }
}

/// Sinks write files and sync them (the MQTT sink's spool): off the async
/// threads, so a slow disk never stalls sources or workers.
async fn sink_loop(
    mut sinks: Vec<Box<dyn crate::sink::Sink>>,
    mut queue: mpsc::Receiver<Vec<Event>>,
    live: tokio::sync::broadcast::Sender<Arc<[Event]>>,
) {
    while let Some(events) = queue.recv().await {
        if live.receiver_count() > 0 {
            let _ = live.send(events.clone().into());
        }
        let written = tokio::task::spawn_blocking(move || {
            for sink in &mut sinks {
                if let Err(e) = sink.write(&events) {
                    tracing::error!("sink write failed: {e:#}");
                }
            }
            sinks
        })
        .await;
        match written {
            Ok(back) => sinks = back,
            Err(e) => {
                tracing::error!("sink thread failed: {e}");
                return;
            }
        }
    }
}
