//! Configuration: one TOML file, inert data, validated once.
//!
//! Loading happens in three passes so a user sees every mistake at once:
//! the TOML syntax (the parser's first error, with its line), then the shape
//! of each section and each array entry on its own (unknown fields, wrong
//! types), then the meaning (unknown references, duplicates, bad ranges).
//! Every error carries the path of the offending entry and, where the file
//! has it, its line number. [`Config::plant`] then turns the data into the
//! indexed form the runtime uses.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use usan_core::model::{AssetPath, SignalSpec};

use crate::common::{HumanDuration, id_problem, out_of_range};

use crate::api::ServerConfig;
use crate::api::auth::AuthConfig;
use crate::pipeline::alarms::AlarmConfig;
use crate::pipeline::rul::RulSpec;
use crate::pipeline::{EngineConfig, MAX_QUEUE_CAPACITY, PipelineConfig};
use crate::plant::{DetectorSpec, ModeCondition, Plant, PlantAsset};
use crate::sink::SinkConfig;
use crate::source::SourceConfig;
use crate::store::{SqliteConfig, StoreConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where samples, findings, alarms and models are kept.
    pub store: StoreConfig,
    /// The HTTP API.
    pub server: ServerConfig,
    /// API tokens and their roles.
    pub auth: AuthConfig,
    /// Runtime sizing and frame policy.
    pub pipeline: PipelineConfig,
    /// Where data comes from.
    pub sources: Vec<SourceConfig>,
    /// Detector templates, applied to assets by name.
    pub detectors: Vec<DetectorSpec>,
    /// The monitored equipment.
    pub assets: Vec<AssetConfig>,
    /// How alarms behave.
    pub alarms: AlarmConfig,
    /// Where findings and alarms are sent besides the store.
    pub sinks: Vec<SinkConfig>,
    /// Remaining-useful-life models watching assets cycle by cycle.
    pub rul: Vec<RulSpec>,
}

/// A signal written as a bare name or as a table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SignalEntry {
    /// `"temperature"`
    Name(String),
    /// `{ name = "temperature", unit = "degC", lower_spec = 10.0 }`
    Spec(SignalSpecEntry),
}

/// The table form of a signal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSpecEntry {
    name: String,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    lower_spec: Option<f64>,
    #[serde(default)]
    upper_spec: Option<f64>,
}

impl SignalEntry {
    fn spec(&self) -> SignalSpec {
        match self {
            SignalEntry::Name(name) => {
                SignalSpec { name: name.clone(), unit: None, lower_spec: None, upper_spec: None }
            }
            SignalEntry::Spec(s) => SignalSpec {
                name: s.name.clone(),
                unit: s.unit.clone(),
                lower_spec: s.lower_spec,
                upper_spec: s.upper_spec,
            },
        }
    }
}

/// `[[assets]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Identifier, unique in the file.
    pub id: String,
    /// ISA-95 site.
    #[serde(default = "default_site")]
    pub site: String,
    /// ISA-95 line or area.
    #[serde(default = "default_line")]
    pub line: String,
    /// Signals, in the order detectors see them.
    pub signals: Vec<SignalEntry>,
    /// Detector names to run; all detectors when absent.
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
    /// An operating mode in which this asset raises no alarm (stopped,
    /// cleaning, changeover): `{ signal = "running", below = 0.5 }`.
    #[serde(default)]
    pub suppress_alarms_when: Option<ModeCondition>,
}

fn default_site() -> String {
    "site".into()
}
fn default_line() -> String {
    "line".into()
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `assets[2].signals`.
    pub path: String,
    /// Line number in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} error(s) in the configuration:", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const SECTIONS: &[&str] =
    &["store", "server", "auth", "pipeline", "sources", "detectors", "assets", "alarms", "sinks", "rul"];

impl Config {
    /// Read and validate a configuration file. Relative paths inside it are
    /// resolved against the file's folder.
    ///
    /// # Errors
    /// Every problem found, or the file cannot be read.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let mut config = Config::parse(&text).map_err(anyhow::Error::new)?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    /// Parse and validate configuration text.
    ///
    /// # Errors
    /// Every problem found, each with its path and line.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            ConfigErrors(vec![ConfigError { path: "(syntax)".into(), line, message: e.message().to_string() }])
        })?;
        let locator = Locator::new(text);
        let mut errors = Vec::new();
        let mut config = Config::default();
        for (key, value) in &table {
            match key.as_str() {
                "store" => section(&locator, key, value, &mut errors, |v| config.store = v),
                "server" => section(&locator, key, value, &mut errors, |v| config.server = v),
                "auth" => section(&locator, key, value, &mut errors, |v| config.auth = v),
                "pipeline" => section(&locator, key, value, &mut errors, |v| config.pipeline = v),
                "alarms" => section(&locator, key, value, &mut errors, |v| config.alarms = v),
                "sources" => config.sources = entries(&locator, key, value, &mut errors),
                "detectors" => config.detectors = entries(&locator, key, value, &mut errors),
                "assets" => config.assets = entries(&locator, key, value, &mut errors),
                "sinks" => config.sinks = entries(&locator, key, value, &mut errors),
                "rul" => config.rul = entries(&locator, key, value, &mut errors),
                other => errors.push(locator.error(
                    &[Seg::Key(other)],
                    format!("unknown section `{other}`; expected one of {}", SECTIONS.join(", ")),
                )),
            }
        }
        config.validate(&locator, &mut errors);
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() && p.as_os_str() != ":memory:" {
                *p = dir.join(&*p);
            }
        };
        let StoreConfig::Sqlite(SqliteConfig { path, .. }) = &mut self.store;
        resolve(path);
        if let Some(models) = &mut self.pipeline.models_dir {
            resolve(models);
        }
        for source in &mut self.sources {
            source.resolve_paths(dir);
        }
        for sink in &mut self.sinks {
            sink.resolve_paths(dir);
        }
        for rul in &mut self.rul {
            resolve(&mut rul.model);
        }
        for detector in &mut self.detectors {
            if let crate::plant::Algorithm::Onnx(onnx) = &mut detector.algorithm {
                resolve(&mut onnx.package);
            }
        }
    }

    fn validate(&self, locator: &Locator, errors: &mut Vec<ConfigError>) {
        // Every number has a range: a value outside it is refused here, by
        // `usan check` and `usan serve` alike, never clamped or left to panic.
        let ms = Duration::from_millis;
        let days = |d: u64| Duration::from_secs(d * 86_400);
        let pipeline = &self.pipeline;
        let ranges = [
            (
                ["pipeline", "queue_capacity"],
                out_of_range("queue_capacity", pipeline.queue_capacity, 1, MAX_QUEUE_CAPACITY),
            ),
            (["pipeline", "workers"], out_of_range("workers", pipeline.workers, 1, 1024)),
            (["pipeline", "frame"], out_of_range("max_pending", pipeline.frame.max_pending, 1, 1_000_000)),
            (
                ["pipeline", "frame"],
                out_of_range("max_lateness_ms", pipeline.frame.max_lateness_ms, 0, 365 * 86_400_000),
            ),
            (["server", "max_body_bytes"], out_of_range("max_body_bytes", self.server.max_body_bytes, 1024, 1 << 30)),
            (["server", "max_future"], self.server.max_future.out_of("max_future", Duration::ZERO, days(365))),
            (
                ["server", "max_batch_samples"],
                out_of_range("max_batch_samples", self.server.max_batch_samples, 1, 10_000_000),
            ),
            (["server", "max_connections"], out_of_range("max_connections", self.server.max_connections, 1, 100_000)),
            (
                ["server", "header_timeout"],
                self.server.header_timeout.out_of("header_timeout", Duration::from_secs(1), Duration::from_secs(600)),
            ),
            (
                ["server", "request_timeout"],
                self.server.request_timeout.out_of(
                    "request_timeout",
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                ),
            ),
            (
                ["server", "max_query_points"],
                out_of_range("max_query_points", self.server.max_query_points, 10, 10_000_000),
            ),
            (["server", "max_list_items"], out_of_range("max_list_items", self.server.max_list_items, 1, 1_000_000)),
            (["server", "max_note_bytes"], out_of_range("max_note_bytes", self.server.max_note_bytes, 16, 1 << 20)),
            (
                ["alarms", "escalate_after"],
                self.alarms.escalate_after.and_then(|d| d.out_of("escalate_after", Duration::from_secs(1), days(365))),
            ),
        ];
        let StoreConfig::Sqlite(SqliteConfig { flush_interval, retention, .. }) = &self.store;
        let store = [
            (["store", "flush_interval"], flush_interval.out_of("flush_interval", ms(1), Duration::from_secs(3600))),
            (
                ["store", "retention"],
                retention.and_then(|r| r.out_of("retention", Duration::from_secs(60), HumanDuration::MAX)),
            ),
        ];
        for ([section, key], problem) in ranges.into_iter().chain(store) {
            if let Some(problem) = problem {
                errors.push(locator.error(&[Seg::Key(section), Seg::Key(key)], problem));
            }
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            errors.push(locator.error(
                &[Seg::Key("server"), Seg::Key("listen")],
                format!("`{}` is not an address like 127.0.0.1:8080", self.server.listen),
            ));
        }
        for problem in self.auth.validate() {
            errors.push(locator.error(&[Seg::Key("auth")], problem));
        }
        let mut detector_names = HashSet::new();
        for (i, detector) in self.detectors.iter().enumerate() {
            let at = [Seg::Key("detectors"), Seg::Index(i)];
            if !detector_names.insert(detector.name.as_str()) {
                errors.push(locator.error(&at, format!("detector name `{}` is used twice", detector.name)));
            }
            if let Some(problem) = id_problem(&detector.name) {
                errors.push(locator.error(&[at[0], at[1], Seg::Key("name")], format!("detector name {problem}")));
            }
            for problem in detector.algorithm.validate() {
                errors.push(locator.error(&[at[0], at[1], Seg::Key("algorithm")], problem));
            }
            let mut threshold = detector.threshold();
            if matches!(detector.algorithm, crate::plant::Algorithm::Onnx(_))
                && threshold.value.is_none()
                && threshold.quantile.is_none()
            {
                // A package's threshold may give only the persistence: its level comes from the manifest.
                threshold.quantile = detector.algorithm.default_threshold().quantile;
            }
            for problem in threshold.validate() {
                errors.push(locator.error(&[at[0], at[1], Seg::Key("threshold")], problem));
            }
            let min = detector.algorithm.min_baseline_rows();
            if detector.baseline_frames < min.max(1) {
                errors.push(locator.error(
                    &[at[0], at[1], Seg::Key("baseline_frames")],
                    format!(
                        "{} needs at least {} baseline frames, got {}",
                        detector.algorithm.kind(),
                        min.max(1),
                        detector.baseline_frames
                    ),
                ));
            }
        }
        let mut asset_ids = HashSet::new();
        for (i, asset) in self.assets.iter().enumerate() {
            let at = [Seg::Key("assets"), Seg::Index(i)];
            if let Some(problem) = id_problem(&asset.id) {
                errors.push(locator.error(&[at[0], at[1], Seg::Key("id")], format!("asset id {problem}")));
            }
            if !asset_ids.insert(asset.id.as_str()) {
                errors.push(locator.error(&at, format!("asset id `{}` is used twice", asset.id)));
            }
            if asset.signals.is_empty() {
                errors.push(
                    locator.error(&[at[0], at[1], Seg::Key("signals")], "an asset needs at least one signal".into()),
                );
            }
            if let Some(mode) = &asset.suppress_alarms_when {
                let here = [at[0], at[1], Seg::Key("suppress_alarms_when")];
                if !asset.signals.iter().any(|signal| signal.spec().name == mode.signal) {
                    errors.push(locator.error(&here, format!("`{}` is not a signal of this asset", mode.signal)));
                }
                if mode.equals.is_none() && mode.below.is_none() && mode.above.is_none() {
                    errors.push(locator.error(&here, "give `equals`, `below` or `above`".into()));
                }
            }
            let mut signal_names = HashSet::new();
            for (j, signal) in asset.signals.iter().enumerate() {
                let spec = signal.spec();
                let sat = [at[0], at[1], Seg::Key("signals"), Seg::Index(j)];
                if !signal_names.insert(spec.name.clone()) {
                    errors.push(locator.error(&sat, format!("signal `{}` is listed twice", spec.name)));
                }
                if spec.name.starts_with('@') || spec.name.trim().is_empty() {
                    errors.push(locator.error(
                        &sat,
                        format!("signal name `{}` is blank or starts with `@` (kept for detector scores)", spec.name),
                    ));
                }
                if let (Some(lo), Some(hi)) = (spec.lower_spec, spec.upper_spec)
                    && lo >= hi
                {
                    errors.push(locator.error(&sat, format!("lower_spec {lo} is not below upper_spec {hi}")));
                }
            }
            for name in asset.detectors.iter().flatten() {
                if !detector_names.contains(name.as_str()) {
                    errors.push(locator.error(
                        &[at[0], at[1], Seg::Key("detectors")],
                        format!("no detector named `{name}` (defined: {})", sorted(&detector_names)),
                    ));
                }
            }
        }
        let mut source_names = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let at = [Seg::Key("sources"), Seg::Index(i)];
            if !source_names.insert(source.name()) {
                errors.push(locator.error(&at, format!("source name `{}` is used twice", source.name())));
            }
            if let Some(problem) = id_problem(source.name()) {
                errors.push(locator.error(&at, format!("source name {problem}")));
            }
            for problem in source.validate(&asset_ids) {
                errors.push(locator.error(&at, problem));
            }
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            for problem in sink.validate() {
                errors.push(locator.error(&[Seg::Key("sinks"), Seg::Index(i)], problem));
            }
        }
        for (i, rul) in self.rul.iter().enumerate() {
            let at = [Seg::Key("rul"), Seg::Index(i)];
            if let Some(problem) = id_problem(&rul.name) {
                errors.push(locator.error(&[at[0], at[1], Seg::Key("name")], format!("name {problem}")));
            }
            if !detector_names.insert(rul.name.as_str()) {
                errors.push(locator.error(
                    &at,
                    format!(
                        "name `{}` is already used by a detector or another [[rul]] (alarms are keyed by it)",
                        rul.name
                    ),
                ));
            }
            for id in rul.assets.iter().flatten() {
                if !asset_ids.contains(id.as_str()) {
                    errors.push(locator.error(&[at[0], at[1], Seg::Key("assets")], format!("no asset `{id}`")));
                }
            }
            if let Some(alarm) = rul.alarm {
                if !(alarm.below > 0.0 && alarm.below.is_finite()) {
                    errors.push(locator.error(
                        &[at[0], at[1], Seg::Key("alarm")],
                        format!("below must be a positive number of cycles, got {}", alarm.below),
                    ));
                }
                if !(alarm.confidence > 0.0 && alarm.confidence < 1.0) {
                    errors.push(locator.error(
                        &[at[0], at[1], Seg::Key("alarm")],
                        format!("confidence must be in (0, 1), got {}", alarm.confidence),
                    ));
                }
            }
        }
    }

    /// The parts the engine runs.
    #[must_use]
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            plant: self.plant(),
            store: self.store.clone(),
            pipeline: self.pipeline.clone(),
            alarms: self.alarms.clone(),
            rul: self.rul.clone(),
            sources: self.sources.clone(),
            sinks: self.sinks.clone(),
        }
    }

    /// The indexed plant the runtime works on.
    #[must_use]
    pub fn plant(&self) -> Plant {
        let assets: Vec<PlantAsset> = self
            .assets
            .iter()
            .map(|a| {
                let signals: Vec<SignalSpec> = a.signals.iter().map(SignalEntry::spec).collect();
                let signal_index = signals.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
                let detectors = self
                    .detectors
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| a.detectors.as_ref().is_none_or(|names| names.contains(&d.name)))
                    .map(|(i, _)| i)
                    .collect();
                let suppress_alarms_when = a
                    .suppress_alarms_when
                    .as_ref()
                    .and_then(|mode| signals.iter().position(|s| s.name == mode.signal).map(|i| (i, mode.clone())));
                PlantAsset {
                    path: AssetPath { site: a.site.clone(), line: a.line.clone(), asset: a.id.clone() },
                    signals,
                    signal_index,
                    detectors,
                    suppress_alarms_when,
                }
            })
            .collect();
        let asset_index = assets.iter().enumerate().map(|(i, a)| (a.path.asset.clone(), i)).collect();
        Plant { assets, asset_index, detectors: self.detectors.clone() }
    }
}

fn sorted(names: &HashSet<&str>) -> String {
    let mut v: Vec<&str> = names.iter().copied().collect();
    v.sort_unstable();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

impl From<Config> for EngineConfig {
    fn from(config: Config) -> EngineConfig {
        config.engine()
    }
}

// ---- shape pass helpers ----

fn section<T: DeserializeOwned>(
    locator: &Locator,
    key: &str,
    value: &toml::Value,
    errors: &mut Vec<ConfigError>,
    mut set: impl FnMut(T),
) {
    match value.clone().try_into::<T>() {
        Ok(v) => set(v),
        Err(e) => errors.push(locator.shape_error(&[Seg::Key(key)], e.message())),
    }
}

fn entries<T: DeserializeOwned>(
    locator: &Locator,
    key: &str,
    value: &toml::Value,
    errors: &mut Vec<ConfigError>,
) -> Vec<T> {
    let Some(items) = value.as_array() else {
        errors.push(locator.error(&[Seg::Key(key)], format!("`{key}` must be an array: write [[{key}]] tables")));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.clone().try_into::<T>() {
            Ok(v) => out.push(v),
            Err(e) => errors.push(locator.shape_error(&[Seg::Key(key), Seg::Index(i)], e.message())),
        }
    }
    out
}

/// A step in a path into the document.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Finds line numbers for paths, using the span-keeping TOML parser.
struct Locator<'t> {
    text: &'t str,
    doc: Option<toml_edit::Document<&'t str>>,
}

impl<'t> Locator<'t> {
    fn new(text: &'t str) -> Self {
        Locator { text, doc: toml_edit::Document::parse(text).ok() }
    }

    fn line(&self, path: &[Seg]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => item.get(*k),
                Seg::Index(i) => item.get(*i),
            };
            match next {
                Some(n) => {
                    item = n;
                    if let Some(span) = item.span() {
                        best = Some(span.start);
                    }
                }
                None => break,
            }
        }
        best.map(|offset| line_of(self.text, offset))
    }

    fn error(&self, path: &[Seg], message: String) -> ConfigError {
        ConfigError { path: path_string(path), line: self.line(path), message }
    }

    fn item(&self, path: &[Seg]) -> Option<&toml_edit::Item> {
        let mut item = self.doc.as_ref()?.as_item();
        for seg in path {
            item = match seg {
                Seg::Key(k) => item.get(*k)?,
                Seg::Index(i) => item.get(*i)?,
            };
        }
        Some(item)
    }

    /// A serde error; points at the field it names, searched below `path`.
    fn shape_error(&self, path: &[Seg], message: &str) -> ConfigError {
        let field_line = message
            .split('`')
            .nth(1)
            .and_then(|field| self.item(path).and_then(|item| find_key_item(item, field)))
            .map(|offset| line_of(self.text, offset));
        ConfigError {
            path: path_string(path),
            line: field_line.or_else(|| self.line(path)),
            message: message.trim().to_string(),
        }
    }
}

/// Byte offset of the first key named `field` anywhere below `item`.
fn find_key_item(item: &toml_edit::Item, field: &str) -> Option<usize> {
    match item {
        toml_edit::Item::Table(table) => table.iter().find_map(|(key, child)| {
            if key == field {
                child.span().or_else(|| table.key(key).and_then(|k| k.span())).map(|s| s.start)
            } else {
                find_key_item(child, field)
            }
        }),
        toml_edit::Item::Value(value) => find_key_value(value, field),
        toml_edit::Item::ArrayOfTables(array) => array.iter().find_map(|t| {
            let wrapped = toml_edit::Item::Table(t.clone());
            find_key_item(&wrapped, field)
        }),
        toml_edit::Item::None => None,
    }
}

fn find_key_value(value: &toml_edit::Value, field: &str) -> Option<usize> {
    match value {
        toml_edit::Value::InlineTable(table) => table.iter().find_map(|(key, child)| {
            if key == field { child.span().map(|s| s.start) } else { find_key_value(child, field) }
        }),
        toml_edit::Value::Array(array) => array.iter().find_map(|v| find_key_value(v, field)),
        _ => None,
    }
}

fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_condition_holds_when_every_given_test_does() {
        let mode = |equals: Option<Vec<f64>>, below: Option<f64>, above: Option<f64>| ModeCondition {
            signal: "running".into(),
            equals,
            below,
            above,
        };
        // (condition, value, holds)
        let cases = [
            (mode(None, Some(0.5), None), 0.0, true),
            (mode(None, Some(0.5), None), 1.0, false),
            (mode(None, Some(0.5), None), f64::NAN, false),
            (mode(Some(vec![2.0, 3.0]), None, None), 3.0, true),
            (mode(Some(vec![2.0, 3.0]), None, None), 1.0, false),
            (mode(None, Some(10.0), Some(5.0)), 7.0, true),
            (mode(None, Some(10.0), Some(5.0)), 12.0, false),
        ];
        for (condition, value, holds) in cases {
            assert_eq!(condition.holds(value), holds, "{condition:?} at {value}");
        }
    }

    const GOOD: &str = r#"
[store]
type = "sqlite"
path = ":memory:"

[[detectors]]
name = "pca"
algorithm = { type = "pca", variance = 0.9 }
baseline_frames = 50

[[assets]]
id = "pump-1"
signals = ["flow", { name = "temp", unit = "degC" }]

[[sources]]
type = "http"
name = "push"
"#;

    #[test]
    fn good_config_parses_and_indexes() {
        let config = Config::parse(GOOD).unwrap();
        let plant = config.plant();
        assert_eq!(plant.assets[0].signal_index["temp"], 1);
        assert_eq!(plant.assets[0].detectors, vec![0]);
        assert_eq!(plant.assets[0].signals[1].unit.as_deref(), Some("degC"));
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let bad = r#"
[store]
type = "sqlite"
path = ":memory:"
flush_interval = "soon"

[[detectors]]
name = "pca"
algorithm = { type = "pca", variance = 3.0 }

[[detectors]]
name = "z"
algorithm = { type = "robust_z", colour = "red" }

[[assets]]
id = "pump-1"
signals = ["flow", "flow", "@score/pca"]
detectors = ["pca", "nope"]

[[assets]]
id = "pump-1"
signals = []

[mystery]
x = 1
"#;
        let errors = Config::parse(bad).unwrap_err().0;
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(has("invalid duration"), "{text:#?}");
        assert!(has("colour"), "{text:#?}");
        assert!(has("pca.variance"), "{text:#?}");
        assert!(has("signal `flow` is listed twice"), "{text:#?}");
        assert!(has("signal name `@score/pca` is blank or starts with `@`"), "{text:#?}");
        assert!(has("no detector named `nope`"), "{text:#?}");
        assert!(has("asset id `pump-1` is used twice"), "{text:#?}");
        assert!(has("at least one signal"), "{text:#?}");
        assert!(has("unknown section `mystery`"), "{text:#?}");
        assert!(errors.iter().all(|e| e.line.is_some()), "{text:#?}");
        let colour = errors.iter().find(|e| e.message.contains("colour")).unwrap();
        assert_eq!(colour.line, Some(13));
        let mystery = errors.iter().find(|e| e.message.contains("mystery")).unwrap();
        assert_eq!(mystery.line, Some(24));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errors = Config::parse("[store]\ntype = \n").unwrap_err().0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(2), "{errors:?}");
    }
}
