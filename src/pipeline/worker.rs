//! One worker: owns a shard of assets and runs, for each batch, frame
//! assembly → detectors → thresholds → findings and alarms.
//!
//! A detector without a fitted model learns from the asset's first
//! `baseline_frames` frames, saves its model to the store, then scores.

use super::external::{ExternalModel, ExternalRun, ModelScored, Prepared, Scored};
use super::rul::{RulTransition, RulWatch};
use super::{AlarmBook, AssetLive, DetectorLive, LiveFrames, LiveRow, LiveRows, LiveState, SCORE_PREFIX};
use crate::plant::{Algorithm, DetectorSpec, Plant};
use crate::sink::Event;
use crate::source::{Batch, Routed};
use crate::store::{FrameBatch, FrameCorrection, JournalRelease, LearnedLevel, Store, WriteBatch};
use crate::telemetry::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;
use usan_core::detector::{AnyDetector, Detector, DetectorError, FittedModel};
use usan_core::frame::{AssemblyStats, Frame, FrameAssembler, FramePolicy};
use usan_core::model::{Finding, StatisticFinding, Timestamp};
use usan_core::threshold::{Threshold, ThresholdConfig};

/// How many signals a finding names.
const TOP_SIGNALS: usize = 5;
/// A baseline that cannot be fitted is retried with more frames, up to this factor.
const MAX_BASELINE_GROWTH: usize = 8;
/// At most this many queued batches are taken together, so that a package
/// scores the frames of many assets in one model call.
const MAX_BATCHES_TOGETHER: usize = 64;

enum Stage {
    Learning {
        rows: Vec<Vec<f64>>,
        needed: usize,
    },
    Monitoring {
        detector: Box<AnyDetector>,
        threshold: Threshold,
    },
    /// A package that arrived trained: scores from the first frame.
    External {
        run: Box<ExternalRun>,
        threshold: ExternalThreshold,
    },
    Failed(String),
}

/// A package's threshold: set, or waiting for the asset's baseline scores
/// (a configured quantile, or none from the manifest either). `basis` says
/// what the level is learned with; the store keeps the level under it.
enum ExternalThreshold {
    Baseline { config: ThresholdConfig, scores: Vec<f64>, needed: usize, basis: String },
    Ready(Threshold),
}

/// A batch made into frames, waiting for its detectors.
struct Assembled {
    asset: usize,
    frames: Vec<Frame>,
    release: Option<JournalRelease>,
    corrections: Vec<FrameCorrection>,
}

/// A package detector's scores of one batch, before its asset maps them
/// to its signals ([`ExternalRun::finish`]).
type PackageScores = anyhow::Result<Vec<Option<ModelScored>>>;

/// One model call: a package, and the frames of each (batch, detector)
/// that runs it.
type PackageCall = (Arc<ExternalModel>, Vec<(usize, usize)>, Vec<Prepared>);

/// What one detector made of one frame: its score, the threshold's
/// decision and, when the score exceeded the level, a finding.
type Outcome = (f64, usan_core::threshold::Decision, Option<Finding>);

struct DetectorRun {
    spec: DetectorSpec,
    stage: Stage,
    live: DetectorLive,
    /// Contributions of the latest score; ranked for the live view once per
    /// batch, not per frame.
    last_contributions: Vec<f64>,
}

struct AssetRun {
    index: usize,
    id: String,
    signals: Vec<String>,
    /// The stored columns: the signals, then each detector's score.
    stored_columns: Vec<String>,
    assembler: FrameAssembler,
    seen: AssemblyStats,
    detectors: Vec<DetectorRun>,
    ruls: Vec<RulWatch>,
    live: AssetLive,
    /// The operating mode in which the asset raises no alarm.
    quiet_mode: Option<(usize, crate::plant::ModeCondition)>,
    /// Journal entries processed and not yet released: `(seq, newest
    /// sample time they left pending)`, in journal order.
    unreleased: VecDeque<(i64, Option<Timestamp>)>,
}

impl AssetRun {
    /// Push a batch into the assembler; the newest time of the samples it
    /// accepted (they are pending or in `frames`).
    fn assemble(&mut self, batch: Batch, frames: &mut Vec<Frame>) -> Option<Timestamp> {
        let mut newest: Option<Timestamp> = None;
        let mut accepted = self.assembler.stats().accepted;
        let mut note = |ts: Timestamp, assembler: &FrameAssembler| {
            let now = assembler.stats().accepted;
            if now > accepted {
                accepted = now;
                newest = Some(newest.map_or(ts, |n| n.max(ts)));
            }
        };
        match batch {
            Batch::Rows { rows, .. } => {
                for (ts, values) in rows {
                    self.assembler.push_row(ts, values, frames);
                    note(ts, &self.assembler);
                }
            }
            Batch::Samples { samples, .. } => {
                for sample in samples {
                    let ts = sample.ts;
                    self.assembler.push(sample, frames);
                    note(ts, &self.assembler);
                }
            }
        }
        newest
    }

    /// The late samples of the last batch, as values to write into their
    /// stored frames.
    fn corrections(&mut self) -> Vec<FrameCorrection> {
        self.assembler
            .take_late()
            .into_iter()
            .map(|sample| FrameCorrection {
                asset: self.id.clone(),
                signal: self.signals[sample.signal].clone(),
                ts: sample.ts,
                value: sample.value,
            })
            .collect()
    }

    /// Record a processed journal entry; the release of every entry whose
    /// samples are now all in emitted frames (in journal order).
    fn release(&mut self, seq: Option<(i64, Option<Timestamp>)>) -> Option<JournalRelease> {
        self.unreleased.extend(seq);
        let watermark = self.assembler.watermark();
        let mut through = None;
        while let Some(&(seq, newest)) = self.unreleased.front() {
            if newest.is_some_and(|ts| watermark.is_none_or(|w| ts > w)) {
                break;
            }
            through = Some(seq);
            self.unreleased.pop_front();
        }
        through.map(|through| JournalRelease { asset: self.id.clone(), through })
    }
}

/// Everything a worker is built from.
pub(crate) struct WorkerParts<'a> {
    pub plant: Arc<Plant>,
    pub assets: Vec<usize>,
    pub policy: FramePolicy,
    pub store_samples: bool,
    pub models: &'a HashMap<(String, String), FittedModel>,
    /// Levels package detectors learned on their baselines before.
    pub levels: &'a HashMap<(String, String), LearnedLevel>,
    pub resume: &'a HashMap<String, Timestamp>,
    pub store: Arc<dyn Store>,
    pub store_queue: mpsc::Sender<WriteBatch>,
    pub sink_queue: mpsc::Sender<Vec<Event>>,
    pub alarms: Arc<AlarmBook>,
    pub live: Arc<LiveState>,
    pub live_frames: Arc<LiveFrames>,
    pub metrics: Arc<Metrics>,
    /// Remaining-useful-life watches of this worker's assets.
    pub ruls: HashMap<usize, Vec<RulWatch>>,
    /// Packages by detector index, or why each was refused.
    pub external: &'a super::external::Loaded,
}

/// A native detector's first stage: the stored model when it was fitted on
/// these signals, else learning.
fn native_stage(spec: &DetectorSpec, stored: Option<&FittedModel>, signals: &[String], asset: &str) -> Stage {
    match stored {
        Some(model) if model.signals == signals => {
            let threshold = match model.threshold {
                Some(level) => spec.threshold().build_at(level),
                None => spec.threshold().build(&[]),
            };
            Stage::Monitoring { detector: Box::new(model.detector.clone()), threshold }
        }
        Some(_) => {
            tracing::warn!(asset, detector = %spec.name, "stored model has other signals; learning again");
            Stage::Learning { rows: Vec::new(), needed: spec.baseline_frames }
        }
        None => Stage::Learning { rows: Vec::new(), needed: spec.baseline_frames },
    }
}

/// A package's stage. Its level: the configuration's `value` or `quantile`
/// (of the asset's first `baseline_frames` scores), else the manifest's,
/// else the default quantile of the baseline scores; the persistence (`k`
/// of `n`) is the configuration's when it gives a threshold. A level learned
/// on a baseline before (`stored`) is taken up when it was learned the same
/// way: the same package, quantile and baseline length.
fn external_stage(
    spec: &DetectorSpec,
    model: &ExternalModel,
    run: ExternalRun,
    stored: Option<&LearnedLevel>,
) -> Stage {
    let needed = spec.baseline_frames.max(1);
    let baseline = |config: ThresholdConfig| {
        let basis = format!(
            "package sha256 {}; quantile {}; baseline {needed} frames",
            model.digest,
            config.quantile.map_or_else(|| "none".to_string(), |q| q.to_string())
        );
        match stored.filter(|s| s.basis == basis && s.level.is_finite()) {
            Some(stored) => ExternalThreshold::Ready(config.build_at(stored.level)),
            None => ExternalThreshold::Baseline { config, scores: Vec::new(), needed, basis },
        }
    };
    let default = spec.algorithm.default_threshold();
    let threshold = match (spec.threshold.clone(), model.level) {
        (Some(config), _) if config.value.is_some() => ExternalThreshold::Ready(config.build(&[])),
        (Some(config), _) if config.quantile.is_some() => baseline(config),
        (Some(config), Some(level)) => ExternalThreshold::Ready(config.build_at(level)),
        (Some(config), None) => baseline(ThresholdConfig { quantile: default.quantile, ..config }),
        (None, Some(level)) => {
            let config = ThresholdConfig::fixed(level);
            // A classifier judges each part (frame) alone.
            let config = if model.classifier { ThresholdConfig { k: 1, n: 1, ..config } } else { config };
            ExternalThreshold::Ready(config.build_at(level))
        }
        (None, None) => baseline(default),
    };
    Stage::External { run: Box::new(run), threshold }
}

pub(crate) struct Worker {
    assets: HashMap<usize, AssetRun>,
    store_samples: bool,
    store: Arc<dyn Store>,
    store_queue: mpsc::Sender<WriteBatch>,
    sink_queue: mpsc::Sender<Vec<Event>>,
    alarms: Arc<AlarmBook>,
    live: Arc<LiveState>,
    live_frames: Arc<LiveFrames>,
    metrics: Arc<Metrics>,
}

impl Worker {
    pub(crate) fn new(mut parts: WorkerParts<'_>) -> Self {
        let mut assets = HashMap::new();
        for &index in &parts.assets {
            let asset = &parts.plant.assets[index];
            let id = asset.path.asset.clone();
            let signals = asset.signal_names();
            let assembler = FrameAssembler::new(signals.len(), parts.policy);
            // Late samples are stored into their frames (a resend replaces).
            let mut assembler = if parts.store_samples { assembler.keep_late() } else { assembler };
            if let Some(ts) = parts.resume.get(&id) {
                assembler.set_watermark(*ts);
            }
            let detectors = asset
                .detectors
                .iter()
                .map(|&d| {
                    let spec = parts.plant.detectors[d].clone();
                    let stage = match (&spec.algorithm, parts.external.get(&d)) {
                        (Algorithm::Onnx(config), Some(Ok(model))) => match model.bind(asset, &config.signals) {
                            Ok(run) => {
                                external_stage(&spec, model, run, parts.levels.get(&(id.clone(), spec.name.clone())))
                            }
                            Err(why) => {
                                tracing::error!(asset = %id, detector = %spec.name, "{why}");
                                Stage::Failed(why)
                            }
                        },
                        (Algorithm::Onnx(_), Some(Err(why))) => Stage::Failed(why.clone()),
                        (Algorithm::Onnx(_), None) => Stage::Failed("model not loaded".into()),
                        (Algorithm::Native(_), _) => {
                            native_stage(&spec, parts.models.get(&(id.clone(), spec.name.clone())), &signals, &id)
                        }
                    };
                    let model = match &stage {
                        Stage::External { run, .. } => Some(run.model.info.clone()),
                        _ => None,
                    };
                    let live = DetectorLive {
                        name: spec.name.clone(),
                        baseline_needed: spec.baseline_frames,
                        model,
                        ..Default::default()
                    };
                    let mut run = DetectorRun { spec, stage, live, last_contributions: Vec::new() };
                    run.refresh_status();
                    run
                })
                .collect::<Vec<_>>();
            let ruls = parts.ruls.remove(&index).unwrap_or_default();
            let live = AssetLive {
                detectors: detectors.iter().map(|d| d.live.clone()).collect(),
                rul: ruls.iter().map(|r| r.live.clone()).collect(),
                ..Default::default()
            };
            parts.live.set(index, live.clone());
            let stored_columns = signals
                .iter()
                .cloned()
                .chain(detectors.iter().map(|d| format!("{SCORE_PREFIX}{}", d.spec.name)))
                .collect();
            assets.insert(
                index,
                AssetRun {
                    index,
                    id,
                    signals,
                    stored_columns,
                    assembler,
                    seen: AssemblyStats::default(),
                    detectors,
                    ruls,
                    live,
                    quiet_mode: parts.plant.assets[index].suppress_alarms_when.clone(),
                    unreleased: VecDeque::new(),
                },
            );
        }
        Worker {
            assets,
            store_samples: parts.store_samples,
            store: parts.store,
            store_queue: parts.store_queue,
            sink_queue: parts.sink_queue,
            alarms: parts.alarms,
            live: parts.live,
            live_frames: parts.live_frames,
            metrics: parts.metrics,
        }
    }

    pub(crate) async fn run(mut self, mut input: mpsc::Receiver<Routed>) {
        let mut queued = Vec::new();
        while let Some(first) = input.recv().await {
            // With it, what is already waiting (never waited for): packages
            // score all of it in one call each, then each batch goes on in
            // its order.
            queued.push(first);
            while queued.len() < MAX_BATCHES_TOGETHER {
                match input.try_recv() {
                    Ok(next) => queued.push(next),
                    Err(_) => break,
                }
            }
            let assembled: Vec<Assembled> = queued.drain(..).filter_map(|routed| self.assemble(routed)).collect();
            let scores = self.score_packages(&assembled);
            for (batch, scores) in assembled.into_iter().zip(scores) {
                self.process(batch, scores).await;
            }
        }
        // Input closed: flush what is still pending.
        let indices: Vec<usize> = self.assets.keys().copied().collect();
        for asset in indices {
            let mut frames = Vec::new();
            let mut release = None;
            if let Some(run) = self.assets.get_mut(&asset) {
                run.assembler.flush(&mut frames);
                release = run.release(None);
            }
            self.process(Assembled { asset, frames, release, corrections: Vec::new() }, HashMap::new()).await;
        }
    }

    /// A routed batch into its asset's frames (`None` for an asset this
    /// worker does not run: its samples are counted as dropped).
    fn assemble(&mut self, Routed { batch, seq }: Routed) -> Option<Assembled> {
        let asset = batch.asset();
        let Some(run) = self.assets.get_mut(&asset) else {
            self.metrics.samples_dropped.inc_by(batch.sample_count() as u64);
            return None;
        };
        let mut frames = Vec::new();
        let newest = run.assemble(batch, &mut frames);
        let release = run.release(seq.map(|seq| (seq, newest)));
        let corrections = run.corrections();
        Some(Assembled { asset, frames, release, corrections })
    }

    /// Every package detector's scores of `batches`, in one model call per
    /// package however many assets share it: per batch, by detector index.
    /// Each asset's stream advances in batch order.
    fn score_packages(&mut self, batches: &[Assembled]) -> Vec<HashMap<usize, PackageScores>> {
        let mut scores: Vec<HashMap<usize, PackageScores>> = batches.iter().map(|_| HashMap::new()).collect();
        // Per package: (batch, detector) of each prepared batch of frames.
        let mut packages: Vec<PackageCall> = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            let Some(run) = self.assets.get_mut(&batch.asset).filter(|_| !batch.frames.is_empty()) else {
                continue;
            };
            for (d, detector) in run.detectors.iter_mut().enumerate() {
                let Stage::External { run, .. } = &mut detector.stage else {
                    continue;
                };
                match run.prepare(batch.frames.iter().map(|f| (f.values.as_slice(), f.filled.as_slice()))) {
                    Ok(prepared) => {
                        let at = match packages.iter().position(|(model, ..)| Arc::ptr_eq(model, &run.model)) {
                            Some(at) => at,
                            None => {
                                packages.push((run.model.clone(), Vec::new(), Vec::new()));
                                packages.len() - 1
                            }
                        };
                        packages[at].1.push((b, d));
                        packages[at].2.push(prepared);
                    }
                    Err(e) => {
                        scores[b].insert(d, Err(e));
                    }
                }
            }
        }
        for (model, keys, prepared) in packages {
            let results: Vec<PackageScores> = match tokio::task::block_in_place(|| model.score_prepared(&prepared)) {
                Ok(all) => all.into_iter().map(Ok).collect(),
                // One asset's rows may be what fails: the others are still scored.
                Err(_) if prepared.len() > 1 => prepared
                    .iter()
                    .map(|p| {
                        tokio::task::block_in_place(|| model.score_prepared(std::slice::from_ref(p)))
                            .map(|mut one| one.pop().unwrap_or_default())
                    })
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            for ((b, d), result) in keys.into_iter().zip(results) {
                scores[b].insert(d, result);
            }
        }
        scores
    }

    /// An assembled batch through its detectors (`package_scores`: its
    /// package detectors' scores, by detector index, where already made),
    /// alarms, the live view and the store.
    async fn process(&mut self, batch: Assembled, mut package_scores: HashMap<usize, PackageScores>) {
        let Assembled { asset, frames, release, corrections } = batch;
        let frames = frames.as_slice();
        let Some(run) = self.assets.get_mut(&asset) else {
            return;
        };
        let stats = run.assembler.stats();
        self.metrics.samples_late.inc_by(stats.late - run.seen.late);
        self.metrics.samples_duplicate.inc_by(stats.duplicate - run.seen.duplicate);
        self.metrics
            .samples_dropped
            .inc_by((stats.not_good - run.seen.not_good) + (stats.unknown_signal - run.seen.unknown_signal));
        run.seen = stats;
        if frames.is_empty() {
            if release.is_some() || !corrections.is_empty() {
                let batch =
                    WriteBatch { journal_release: release.into_iter().collect(), corrections, ..WriteBatch::default() };
                if self.store_queue.send(batch).await.is_err() {
                    tracing::error!("store writer has stopped; journal entries kept for the next start");
                }
            }
            return;
        }
        self.metrics.frames.inc_by(frames.len() as u64);
        let mut findings = Vec::new();
        let mut notices = Notices {
            alarms: &self.alarms,
            metrics: &self.metrics,
            events: Vec::new(),
            persist: Vec::new(),
            quiet: false,
        };
        let mut scored = 0u64;
        // Each detector's outcome for every frame (a package scores the
        // whole batch in one call), then alarms frame by frame.
        let outcomes: Vec<Vec<Option<Outcome>>> = run
            .detectors
            .iter_mut()
            .enumerate()
            .map(|(d, detector)| {
                let scored = package_scores.remove(&d);
                detector.step_batch(&run.id, &run.signals, frames, scored, &self.store, &self.metrics)
            })
            .collect();
        let mut outcomes: Vec<std::vec::IntoIter<Option<Outcome>>> = outcomes.into_iter().map(Vec::into_iter).collect();
        // Each frame's detector scores (NaN while learning), row-major.
        let detectors_n = run.detectors.len();
        let mut scores: Vec<f64> = Vec::with_capacity(frames.len() * detectors_n);
        for frame in frames {
            notices.quiet = run
                .quiet_mode
                .as_ref()
                .is_some_and(|(signal, mode)| frame.values.get(*signal).is_some_and(|v| mode.holds(*v)));
            let mut frame_scored = false;
            for (detector, outcomes) in run.detectors.iter().zip(&mut outcomes) {
                let outcome = outcomes.next().flatten();
                let Some((score, decision, finding)) = outcome else {
                    scores.push(f64::NAN);
                    continue;
                };
                scores.push(score);
                frame_scored = true;
                if let Some(finding) = finding {
                    if decision.anomalous {
                        let contributions = finding.contributions.clone();
                        notices.raise(&run.id, &detector.spec.name, frame.ts, score, finding.threshold, contributions);
                    }
                    notices.events.push(Event::Finding(finding.clone()));
                    findings.push(finding);
                }
                if decision.falling {
                    notices.clear(&run.id, &detector.spec.name, frame.ts);
                }
            }
            if frame_scored {
                scored += 1;
            }
            for watch in &mut run.ruls {
                match watch.step(frame.ts, &frame.values) {
                    RulTransition::None => {}
                    RulTransition::Raise { probability, threshold } => {
                        notices.raise(&run.id, &watch.live.name, frame.ts, probability, threshold, Vec::new());
                    }
                    RulTransition::Clear => notices.clear(&run.id, &watch.live.name, frame.ts),
                }
            }
        }
        let events = notices.events;
        let alarm_observations = notices.persist;
        self.metrics.frames_scored.inc_by(scored);
        self.metrics.findings.inc_by(findings.len() as u64);

        let last = frames.last().map(|f| f.ts);
        run.live.frames += frames.len() as u64;
        run.live.last_ts = last.or(run.live.last_ts);
        for detector in &mut run.detectors {
            if !detector.last_contributions.is_empty() {
                detector.live.top_signals =
                    Finding::ranked_contributions(&run.signals, &detector.last_contributions, TOP_SIGNALS);
            }
        }
        run.live.detectors = run.detectors.iter().map(|d| d.live.clone()).collect();
        run.live.rul = run.ruls.iter().map(|r| r.live.clone()).collect();
        self.live.set(run.index, run.live.clone());

        // What was measured: a value the assembler filled in is stored as NaN.
        let watched = self.live_frames.watched(run.index);
        let rows: Vec<(Timestamp, Vec<f64>)> = frames
            .iter()
            .take(if self.store_samples || watched { usize::MAX } else { 0 })
            .enumerate()
            .map(|(i, f)| {
                let mut values = Vec::with_capacity(run.stored_columns.len());
                values.extend_from_slice(&f.values);
                for &filled in &f.filled {
                    values[filled] = f64::NAN;
                }
                values.extend_from_slice(&scores[i * detectors_n..(i + 1) * detectors_n]);
                (f.ts, values)
            })
            .collect();
        if watched {
            let signals_n = run.signals.len();
            let rows = rows
                .iter()
                .map(|(ts, values)| LiveRow {
                    ts: ts.0,
                    values: values[..signals_n].to_vec(),
                    scores: values[signals_n..].to_vec(),
                })
                .collect();
            self.live_frames.publish(LiveRows { asset: run.index, rows });
        }
        let frame_batch =
            self.store_samples.then(|| FrameBatch { asset: run.id.clone(), signals: run.stored_columns.clone(), rows });
        let batch = WriteBatch {
            frames: frame_batch.into_iter().collect(),
            findings,
            alarm_observations,
            journal_release: release.into_iter().collect(),
            corrections,
        };
        if !batch.is_empty() && self.store_queue.send(batch).await.is_err() {
            tracing::error!("store writer has stopped; frames not stored");
        }
        if !events.is_empty() {
            let _ = self.sink_queue.send(events).await;
        }
    }
}

/// Alarm transitions of one batch, recorded in the alarm book and queued as sink events.
struct Notices<'a> {
    alarms: &'a AlarmBook,
    metrics: &'a Metrics,
    events: Vec<Event>,
    /// Open alarms' new observations, committed with the batch's frames.
    persist: Vec<usan_core::alarm::Alarm>,
    /// The frame is in the asset's quiet operating mode: no new alarm.
    quiet: bool,
}

impl Notices<'_> {
    /// The condition named `cause` holds on `asset`: raise (or keep) its alarm.
    fn raise(
        &mut self,
        asset: &str,
        cause: &str,
        ts: Timestamp,
        score: f64,
        threshold: f64,
        contributions: Vec<usan_core::model::Contribution>,
    ) {
        if self.quiet {
            self.metrics.alarms_suppressed.inc_by(1);
            return;
        }
        match tokio::task::block_in_place(|| {
            self.alarms.on_anomalous((asset, cause), ts, score, threshold, contributions, &mut self.persist)
        }) {
            Ok(Some(alarm)) => {
                self.metrics.alarms_raised.inc_by(1);
                self.events.push(Event::AlarmRaised(alarm));
            }
            Ok(None) => {}
            Err(e) => tracing::error!(asset, "cannot record alarm: {e}"),
        }
    }

    /// The condition named `cause` no longer holds on `asset`.
    fn clear(&mut self, asset: &str, cause: &str, ts: Timestamp) {
        match tokio::task::block_in_place(|| self.alarms.on_normal(asset, cause, ts, &mut self.persist)) {
            Ok(Some(alarm)) => self.events.push(Event::AlarmConditionCleared(alarm)),
            Ok(None) => {}
            Err(e) => tracing::error!(asset, "cannot update alarm: {e}"),
        }
    }
}

impl DetectorRun {
    fn refresh_status(&mut self) {
        self.live.status = match &self.stage {
            Stage::Learning { rows, needed } => {
                self.live.baseline_frames = rows.len();
                self.live.baseline_needed = *needed;
                "learning".into()
            }
            Stage::Monitoring { threshold, .. }
            | Stage::External { threshold: ExternalThreshold::Ready(threshold), .. } => {
                self.live.threshold = Some(threshold.level()).filter(|l| l.is_finite());
                "monitoring".into()
            }
            Stage::External { threshold: ExternalThreshold::Baseline { scores, needed, .. }, .. } => {
                self.live.baseline_frames = scores.len();
                self.live.baseline_needed = *needed;
                "learning".into()
            }
            Stage::Failed(why) => format!("failed: {why}"),
        };
    }

    /// Learn or score a batch of frames in order: each frame's outcome
    /// (`None` while learning or when it cannot be scored). A package
    /// detector takes its scores from `scored` when they were made with
    /// other assets' ([`Worker::score_packages`]), else scores here.
    fn step_batch(
        &mut self,
        asset: &str,
        signals: &[String],
        frames: &[Frame],
        scored: Option<PackageScores>,
        store: &Arc<dyn Store>,
        metrics: &Metrics,
    ) -> Vec<Option<Outcome>> {
        let Stage::External { run, threshold } = &mut self.stage else {
            return frames.iter().map(|frame| self.step(asset, signals, frame, store, metrics)).collect();
        };
        let scored = match scored {
            Some(scored) => scored.map(|scored| run.finish(scored, signals.len())),
            None => tokio::task::block_in_place(|| {
                run.score(frames.iter().map(|f| (f.values.as_slice(), f.filled.as_slice())), signals.len())
            }),
        };
        let scored = match scored {
            Ok(scored) => scored,
            Err(e) => {
                metrics.detector_errors.inc_by(1);
                tracing::debug!(asset, detector = %self.spec.name, "score failed: {e:#}");
                return vec![None; frames.len()];
            }
        };
        let mut outcomes = Vec::with_capacity(frames.len());
        for (frame, scored) in frames.iter().zip(scored) {
            let Some(Scored { value, contributions, label }) = scored else {
                outcomes.push(None);
                continue;
            };
            self.live.score = Some(value).filter(|v| v.is_finite());
            if label.is_some() {
                self.live.label = label;
            }
            let decide = match threshold {
                ExternalThreshold::Ready(threshold) => threshold,
                ExternalThreshold::Baseline { config, scores, needed, basis } => {
                    scores.push(value);
                    if scores.len() >= *needed {
                        let built = config.build(scores);
                        tracing::info!(asset, detector = %self.spec.name, level = built.level(), "threshold set on the baseline's scores; monitoring");
                        if built.level().is_finite() {
                            let learned = LearnedLevel { basis: std::mem::take(basis), level: built.level() };
                            if let Err(e) =
                                tokio::task::block_in_place(|| store.save_level(asset, &self.spec.name, &learned))
                            {
                                tracing::error!(asset, detector = %self.spec.name, "cannot save the learned level: {e}");
                            }
                        }
                        self.live.status = "monitoring".into();
                        self.live.threshold = Some(built.level()).filter(|l| l.is_finite());
                        *threshold = ExternalThreshold::Ready(built);
                    } else {
                        self.live.baseline_frames = scores.len();
                    }
                    // Baseline frames are scored, never decided on.
                    outcomes.push(Some((value, usan_core::threshold::Decision::default(), None)));
                    continue;
                }
            };
            let decision = decide.decide(value);
            self.live.anomalous = decision.anomalous;
            let finding = decision.exceeded.then(|| Finding {
                asset: asset.to_string(),
                detector: self.spec.name.clone(),
                ts: frame.ts,
                score: value,
                threshold: decide.level(),
                anomalous: decision.anomalous,
                contributions: Finding::ranked_contributions(signals, &contributions, TOP_SIGNALS),
                statistics: Vec::new(),
            });
            self.last_contributions = contributions;
            outcomes.push(Some((value, decision, finding)));
        }
        outcomes
    }

    /// Learn or score one frame. Returns the score, the decision and a
    /// finding when the score exceeded the threshold.
    fn step(
        &mut self,
        asset: &str,
        signals: &[String],
        frame: &Frame,
        store: &Arc<dyn Store>,
        metrics: &Metrics,
    ) -> Option<(f64, usan_core::threshold::Decision, Option<Finding>)> {
        match &mut self.stage {
            // Packages score whole batches (`step_batch`).
            Stage::Failed(_) | Stage::External { .. } => None,
            Stage::Learning { rows, needed } => {
                rows.push(frame.values.clone());
                self.live.baseline_frames = rows.len();
                if rows.len() >= *needed {
                    self.finish_learning(asset, signals, store, metrics);
                }
                None
            }
            Stage::Monitoring { detector, threshold } => {
                let score = match detector.score(&frame.values) {
                    Ok(score) => score,
                    Err(DetectorError::NoData) => return None,
                    Err(e) => {
                        metrics.detector_errors.inc_by(1);
                        tracing::debug!(asset, detector = %self.spec.name, "score failed: {e}");
                        return None;
                    }
                };
                let decision = threshold.decide(score.value);
                self.live.score = Some(score.value).filter(|v| v.is_finite());
                self.live.anomalous = decision.anomalous;
                // Only findings need ranked, named contributions on the hot path.
                let finding = decision.exceeded.then(|| Finding {
                    asset: asset.to_string(),
                    detector: self.spec.name.clone(),
                    ts: frame.ts,
                    score: score.value,
                    threshold: threshold.level(),
                    anomalous: decision.anomalous,
                    contributions: Finding::ranked_contributions(signals, &score.contributions, TOP_SIGNALS),
                    statistics: score
                        .statistics
                        .iter()
                        .map(|s| StatisticFinding {
                            name: s.name.clone(),
                            value: s.value,
                            limit: s.limit,
                            contributions: Finding::ranked_contributions(signals, &s.contributions, TOP_SIGNALS),
                        })
                        .collect(),
                });
                self.last_contributions = score.contributions;
                Some((score.value, decision, finding))
            }
        }
    }

    fn finish_learning(&mut self, asset: &str, signals: &[String], store: &Arc<dyn Store>, metrics: &Metrics) {
        let Stage::Learning { rows, needed } = &mut self.stage else {
            return;
        };
        let Some(algorithm) = self.spec.algorithm.native() else {
            return;
        };
        let built = algorithm.build().and_then(|mut detector| {
            detector.learn(rows)?;
            Ok(detector)
        });
        match built {
            Ok(detector) => {
                let threshold_config = self.spec.threshold();
                let threshold = if threshold_config.needs_training_scores() {
                    let mut probe = detector.clone();
                    let scores: Vec<f64> = rows.iter().filter_map(|r| probe.score(r).ok()).map(|s| s.value).collect();
                    threshold_config.build(&scores)
                } else {
                    threshold_config.build(&[])
                };
                let mut model = FittedModel::new(signals.to_vec(), detector.clone());
                model.threshold = Some(threshold.level()).filter(|l| l.is_finite());
                if let Err(e) = tokio::task::block_in_place(|| store.save_model(asset, &self.spec.name, &model)) {
                    tracing::error!(asset, detector = %self.spec.name, "cannot save the fitted model: {e}");
                }
                tracing::info!(asset, detector = %self.spec.name, frames = rows.len(), "baseline learned; monitoring");
                self.stage = Stage::Monitoring { detector: Box::new(detector), threshold };
            }
            Err(e) => {
                metrics.detector_errors.inc_by(1);
                if *needed < self.spec.baseline_frames * MAX_BASELINE_GROWTH {
                    tracing::warn!(asset, detector = %self.spec.name, "baseline not usable yet ({e}); collecting more");
                    *needed *= 2;
                } else {
                    tracing::error!(asset, detector = %self.spec.name, "cannot learn a baseline: {e}");
                    self.stage = Stage::Failed(e.to_string());
                }
            }
        }
        self.refresh_status();
    }
}
