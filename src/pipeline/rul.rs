//! Live remaining useful life: each `[[rul]]` model watches its assets,
//! one frame per cycle, and estimates after every frame how many cycles are
//! left, with the model's interval and, when an alarm rule is set, the
//! probability of failing within its horizon.
//!
//! A watch keeps the asset's first cycles (the model compares each sensor
//! with its own start) and the latest `TAIL` cycles (the window features
//! and the smoothed level need no more), so its cost per frame stays flat
//! however long the asset runs. After a restart a watch takes its history up
//! again from the asset's stored frames (when samples are stored: retention
//! that deleted an asset's oldest frames shortens its count of cycles).

use super::external::{ExternalModel, ExternalRun, ModelInfo, Purpose};
use crate::plant::Plant;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use usan_core::model::Timestamp;
use usan_core::rul::{RulModel, UnitHistory};

/// `[[rul]]`: a remaining-useful-life model (from `usan fit rul`) that
/// estimates, after every frame of an asset (one frame = one cycle), how many
/// cycles it has left, and can raise an alarm when failure is near.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulSpec {
    /// Name, shown in the API and on its alarms.
    #[serde(default = "default_rul_name")]
    pub name: String,
    /// The model artifact (relative to the configuration file): usan's own
    /// (`usan fit rul`) or a package folder whose manifest's role is `rul`.
    pub model: PathBuf,
    /// Assets it watches; by default every asset that has all the model's sensors.
    #[serde(default)]
    pub assets: Option<Vec<String>>,
    /// Model sensor or setting name → the asset's signal, where the names differ.
    #[serde(default)]
    pub signals: std::collections::BTreeMap<String, String>,
    /// Raise an alarm when failure within a horizon becomes likely.
    #[serde(default)]
    pub alarm: Option<RulAlarm>,
}

fn default_rul_name() -> String {
    "rul".into()
}

/// The alarm rule of a [`RulSpec`]: raise when P(RUL ≤ `below`) ≥ `confidence`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulAlarm {
    /// Horizon in cycles.
    pub below: f64,
    /// Probability of failing within the horizon that raises the alarm.
    #[serde(default = "default_rul_confidence")]
    pub confidence: f64,
}

fn default_rul_confidence() -> f64 {
    0.9
}

/// Cycles kept at the start of a history.
const HEAD: usize = 20;
/// Latest cycles kept.
const TAIL: usize = 200;

/// What the API shows about one RUL model on one asset.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct RulLive {
    /// Name of the `[[rul]]` entry.
    pub name: String,
    /// Cycles (frames) seen.
    pub cycles: u64,
    /// Source time of the latest estimate.
    pub updated_at: Option<Timestamp>,
    /// Estimated remaining cycles (absent before the first frame).
    pub rul: Option<f64>,
    /// Lower end of the interval.
    pub lower: Option<f64>,
    /// Upper end of the interval.
    pub upper: Option<f64>,
    /// Share of true values the interval holds (e.g. 0.9).
    pub coverage: f64,
    /// The alarm rule's horizon, when there is one.
    pub horizon: Option<f64>,
    /// Probability that the asset fails within the horizon.
    pub probability_within_horizon: Option<f64>,
    /// Whether the alarm rule currently holds.
    pub alarming: bool,
    /// The package, for a model exported from Python.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
}

/// One model watching one asset.
pub struct RulWatch {
    /// usan's own model (`None` for a package).
    model: Option<Arc<RulModel>>,
    /// Per model sensor, its index in the asset's frame.
    sensors: Vec<usize>,
    /// Per model setting, its index in the asset's frame (None: not measured).
    settings: Vec<Option<usize>>,
    alarm: Option<RulAlarm>,
    /// The kept cycles: the first [`HEAD`], then the latest [`TAIL`].
    history: UnitHistory,
    /// A package exported from Python estimating instead of `model`.
    package: Option<Box<ExternalRun>>,
    pub(crate) live: RulLive,
}

/// What a frame changed about the alarm rule.
pub enum RulTransition {
    /// Nothing changed.
    None,
    /// The alarm rule began to hold.
    Raise {
        /// Probability of failing within the horizon.
        probability: f64,
        /// The rule's confidence.
        threshold: f64,
    },
    /// The alarm rule stopped holding.
    Clear,
}

impl RulWatch {
    /// A watch of one asset: `sensors[k]` is the frame index of the model's
    /// k-th sensor, `settings[k]` of its k-th setting (None: not measured).
    pub fn new(
        name: &str,
        model: Arc<RulModel>,
        sensors: Vec<usize>,
        settings: Vec<Option<usize>>,
        alarm: Option<RulAlarm>,
    ) -> Self {
        let live = RulLive {
            name: name.to_string(),
            coverage: model.config.coverage,
            horizon: alarm.map(|a| a.below),
            ..RulLive::default()
        };
        let history =
            UnitHistory { unit: name.to_string(), cycles: Vec::new(), settings: Vec::new(), sensors: Vec::new() };
        RulWatch { model: Some(model), sensors, settings, alarm, history, package: None, live }
    }

    /// A watch of one asset by a package (`role = "rul"`): its output is
    /// the remaining life, without an interval (an alarm rule holds when
    /// the estimate is within the horizon).
    pub fn package(name: &str, run: ExternalRun, alarm: Option<RulAlarm>) -> Self {
        let live = RulLive {
            name: name.to_string(),
            horizon: alarm.map(|a| a.below),
            model: Some(run.model.info.clone()),
            ..RulLive::default()
        };
        let history =
            UnitHistory { unit: name.to_string(), cycles: Vec::new(), settings: Vec::new(), sensors: Vec::new() };
        let (sensors, settings) = (Vec::new(), Vec::new());
        RulWatch { model: None, sensors, settings, alarm, history, package: Some(Box::new(run)), live }
    }

    /// Take up an asset's history from its stored frames after a restart:
    /// `count` frames in all, the oldest (`head`) and newest (`tail`) of them.
    pub fn restore(&mut self, count: u64, head: &[Vec<f64>], tail: &[Vec<f64>]) {
        if let Some(run) = &mut self.package {
            // The newest frames refill a window; the last estimate is shown again.
            match run.score(tail.iter().map(|v| (v.as_slice(), &[][..])), 0) {
                Ok(estimates) => self.live.rul = estimates.into_iter().flatten().last().map(|e| e.value),
                Err(e) => tracing::debug!("rul {}: {e:#}", self.live.name),
            }
            self.live.cycles = count;
            return;
        }
        let head = &head[..head.len().min(HEAD)];
        let tail = &tail[tail.len().saturating_sub(TAIL)..];
        let first_tail = count.saturating_sub(tail.len() as u64) + 1;
        let cycles = (1..=head.len() as u64).chain(first_tail..=count);
        self.history.cycles.clear();
        self.history.settings.clear();
        self.history.sensors.clear();
        for (cycle, values) in cycles.zip(head.iter().chain(tail)) {
            self.history.cycles.push(cycle as f64);
            self.history.settings.push(self.pick_settings(values));
            self.history.sensors.push(self.pick_sensors(values));
        }
        self.live.cycles = count;
    }

    fn pick_sensors(&self, values: &[f64]) -> Vec<f64> {
        self.sensors.iter().map(|&i| values.get(i).copied().unwrap_or(f64::NAN)).collect()
    }

    fn pick_settings(&self, values: &[f64]) -> Vec<f64> {
        self.settings.iter().map(|i| i.and_then(|i| values.get(i).copied()).unwrap_or(f64::NAN)).collect()
    }

    /// How many of an asset's oldest and newest frames a watch keeps.
    #[must_use]
    pub fn kept() -> (usize, usize) {
        (HEAD, TAIL)
    }

    /// The latest estimate and alarm state.
    #[must_use]
    pub fn live(&self) -> &RulLive {
        &self.live
    }

    /// Add one frame (one cycle) and estimate again.
    pub fn step(&mut self, ts: Timestamp, values: &[f64]) -> RulTransition {
        let Some(model) = self.model.clone() else {
            return self.step_package(ts, values);
        };
        let cycle = (self.live.cycles + 1) as f64;
        let sensors = self.pick_sensors(values);
        let settings = self.pick_settings(values);
        let history = &mut self.history;
        if history.cycles.len() == HEAD + TAIL {
            history.cycles.remove(HEAD);
            history.settings.remove(HEAD);
            history.sensors.remove(HEAD);
        }
        history.cycles.push(cycle);
        history.settings.push(settings);
        history.sensors.push(sensors);
        self.live.cycles += 1;
        self.live.updated_at = Some(ts);
        let estimate = match model.predict(&self.history) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!("rul {}: {e}", self.live.name);
                return RulTransition::None;
            }
        };
        self.live.rul = Some(estimate.rul);
        self.live.lower = Some(estimate.lower).filter(|v| v.is_finite());
        self.live.upper = Some(estimate.upper).filter(|v| v.is_finite());
        let Some(alarm) = self.alarm else { return RulTransition::None };
        let probability = model.probability_below(estimate.rul, alarm.below);
        // Without an interval the estimate itself decides.
        let probability =
            if probability.is_finite() { probability } else { f64::from(u8::from(estimate.rul <= alarm.below)) };
        self.transition(probability, alarm)
    }

    /// Record the probability of failing within the horizon; what changed.
    fn transition(&mut self, probability: f64, alarm: RulAlarm) -> RulTransition {
        self.live.probability_within_horizon = Some(probability);
        let holds = probability >= alarm.confidence;
        let was = std::mem::replace(&mut self.live.alarming, holds);
        match (was, holds) {
            (false, true) => RulTransition::Raise { probability, threshold: alarm.confidence },
            (true, false) => RulTransition::Clear,
            _ => RulTransition::None,
        }
    }
}

impl RulWatch {
    fn step_package(&mut self, ts: Timestamp, values: &[f64]) -> RulTransition {
        let Some(run) = &mut self.package else { return RulTransition::None };
        self.live.cycles += 1;
        self.live.updated_at = Some(ts);
        let estimate = match run.score(std::iter::once((values, &[][..])), 0) {
            Ok(mut estimates) => estimates.pop().flatten().map(|e| e.value),
            Err(e) => {
                tracing::debug!("rul {}: {e:#}", self.live.name);
                None
            }
        };
        let Some(rul) = estimate else { return RulTransition::None };
        self.live.rul = Some(rul);
        let Some(alarm) = self.alarm else { return RulTransition::None };
        let probability = f64::from(u8::from(rul <= alarm.below));
        self.transition(probability, alarm)
    }
}

/// The `[[rul]]` watches ready to run, and the entries whose model file
/// could not be read or used (each message names the entry and the file).
pub struct Prepared {
    /// Per asset index, its watches.
    pub watches: HashMap<usize, Vec<RulWatch>>,
    /// Entries refused for a missing or damaged model file: `usan serve`
    /// runs without them, `usan check` reports them.
    pub refused: Vec<String>,
}

/// Load every `[[rul]]` model and map its sensors and settings to each
/// asset's signals.
///
/// # Errors
/// When an asset named in `assets` lacks a signal the model needs, or an
/// entry's model fits no asset (every problem is listed): configuration
/// errors. A model file that cannot be read is refused, not an error.
pub fn prepare(specs: &[RulSpec], plant: &Plant) -> anyhow::Result<Prepared> {
    let mut watches: HashMap<usize, Vec<RulWatch>> = HashMap::new();
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    for spec in specs {
        if spec.model.is_dir() {
            prepare_package(spec, plant, &mut watches, &mut problems, &mut refused);
            continue;
        }
        let model = std::fs::read_to_string(&spec.model)
            .with_context(|| format!("[[rul]] {}: cannot read model {}", spec.name, spec.model.display()))
            .and_then(|text| {
                RulModel::from_json(&text)
                    .with_context(|| format!("[[rul]] {}: cannot use model {}", spec.name, spec.model.display()))
            });
        let model = match model {
            Ok(model) => Arc::new(model),
            Err(e) => {
                refused.push(format!("{e:#}"));
                continue;
            }
        };
        let signal = |name: &str| spec.signals.get(name).map_or(name, String::as_str).to_string();
        let mut watched = 0;
        for (index, asset) in plant.assets.iter().enumerate() {
            let listed = spec.assets.as_ref().is_some_and(|ids| ids.contains(&asset.path.asset));
            if spec.assets.is_some() && !listed {
                continue;
            }
            let sensors: Vec<Option<usize>> =
                model.sensor_names.iter().map(|n| asset.signal_index.get(&signal(n)).copied()).collect();
            let missing: Vec<String> =
                model.sensor_names.iter().zip(&sensors).filter(|(_, i)| i.is_none()).map(|(n, _)| signal(n)).collect();
            let settings: Vec<Option<usize>> =
                model.setting_names.iter().map(|n| asset.signal_index.get(&signal(n)).copied()).collect();
            let missing_settings = model.regimes() > 1 && settings.iter().any(Option::is_none);
            if !missing.is_empty() || missing_settings {
                if listed {
                    problems.push(format!(
                        "[[rul]] {}: asset {} has no signal {} (map model names to signals with `signals = {{ model_name = \"signal\" }}`)",
                        spec.name,
                        asset.path.asset,
                        if missing.is_empty() { "for the operating settings".to_string() } else { missing.join(", ") }
                    ));
                }
                continue;
            }
            watched += 1;
            watches.entry(index).or_default().push(RulWatch::new(
                &spec.name,
                model.clone(),
                sensors.into_iter().flatten().collect(),
                settings,
                spec.alarm,
            ));
        }
        if watched == 0 && spec.assets.is_none() {
            problems.push(watches_nothing(spec, &model));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(Prepared { watches, refused })
}

/// A `[[rul]]` entry whose model is a package folder (`role = "rul"`):
/// bound to each asset that has the manifest's signals, as for usan's own.
fn prepare_package(
    spec: &RulSpec,
    plant: &Plant,
    watches: &mut HashMap<usize, Vec<RulWatch>>,
    problems: &mut Vec<String>,
    refused: &mut Vec<String>,
) {
    let model = match ExternalModel::load_package(&spec.model, Purpose::Rul) {
        Ok(model) => Arc::new(model),
        Err(e) => {
            refused.push(format!("[[rul]] {}: package {} refused: {e:#}", spec.name, spec.model.display()));
            return;
        }
    };
    let mut watched = 0;
    let mut unfit = Vec::new();
    for (index, asset) in plant.assets.iter().enumerate() {
        let listed = spec.assets.as_ref().is_some_and(|ids| ids.contains(&asset.path.asset));
        if spec.assets.is_some() && !listed {
            continue;
        }
        match model.bind(asset, &spec.signals) {
            Ok(run) => {
                watched += 1;
                watches.entry(index).or_default().push(RulWatch::package(&spec.name, run, spec.alarm));
            }
            Err(why) if listed => problems.push(format!("[[rul]] {}: {why}", spec.name)),
            Err(why) => unfit.push(why),
        }
    }
    if watched == 0 && spec.assets.is_none() {
        problems.push(format!(
            "[[rul]] {}: no asset has all the signals the package reads ({})",
            spec.name,
            unfit.first().map_or("no assets", String::as_str)
        ));
    }
}

/// The message for a `[[rul]]` entry that found no asset to watch.
fn watches_nothing(spec: &RulSpec, model: &RulModel) -> String {
    let wanted: Vec<String> =
        model.sensor_names.iter().map(|n| spec.signals.get(n).cloned().unwrap_or_else(|| n.clone())).collect();
    format!(
        "[[rul]] {}: no asset has all the signals the model needs ({}); map model names to signals with `signals = {{ model_name = \"signal\" }}`",
        spec.name,
        wanted.join(", ")
    )
}
