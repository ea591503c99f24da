//! MQTT: subscribe to a broker and map JSON or Sparkplug B payloads to signals.
//!
//! ```toml
//! [[sources]]
//! type = "mqtt"
//! name = "line-1"
//! broker = { host = "127.0.0.1", client_id = "usan-line-1" }   # see crate::protocol::mqtt::Broker
//!
//! [[sources.subscriptions]]   # plant/pump-1/telemetry: {"ts": ..., "temp": 71.2, "flow": 3.1}
//! format = "json"
//! topic = "plant/+/telemetry"
//! asset = "{1}"               # topic level 1; or "$.asset" from the record; or a fixed id
//! timestamp = "$.ts"          # RFC 3339 text or a number of `time_unit`
//! values = "$"                # every number in this object is a signal
//!
//! [[sources.subscriptions]]
//! format = "sparkplug_b"      # spBv1.0/#; asset = device id ("{device}"), node metrics → "{node}"
//! ```
//!
//! A JSON message is one record, an array of records, or (with `records`)
//! holds its records under a path. A record gives its values in one of three
//! shapes: `signal` + `value` paths (one sample per record), `values` (an
//! object of signal → number) or `signals` (signal → path).
//!
//! Delivery: the session is persistent (`clean_session = false`) and QoS 1
//! messages are acknowledged (PUBACK, in arrival order) only after their
//! samples are committed to the journal (`[pipeline] ack = "commit"`, the
//! default) or queued (`ack = "received"`), so
//! what the broker held during an outage arrives after it, and a redelivered
//! duplicate lands on the same (asset, timestamp) frame. A lost connection is
//! retried after `reconnect_delay`, doubling up to `reconnect_max_delay`
//! (with jitter); outages show in
//! `usan_source_disconnects_total` and `usan_source_outage_seconds_total`.
//! A malformed message is counted by cause, logged once per cause per
//! minute, and never stops the source.

use super::{Batch, BoxFuture, Closed, Receipt, Refused, Source, SourceContext, SourceKind};
use crate::common::CauseLog;
use crate::common::HumanDuration;
use crate::plant::Plant;
use crate::protocol::mqtt::Broker;
use crate::protocol::sparkplug::{self, Host};
use crate::telemetry::LinkStats;
use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use usan_core::model::{Quality, Sample, Timestamp};

/// `[[sources]] type = "mqtt"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Source name.
    pub name: String,
    /// The broker; 127.0.0.1:1883 by default, client id `usan-<name>`.
    #[serde(default)]
    pub broker: Broker,
    /// Start a fresh session at every connect (the broker then keeps nothing while usan is away).
    #[serde(default)]
    pub clean_session: bool,
    /// What to subscribe to and how to read it.
    pub subscriptions: Vec<Subscription>,
    /// A larger message is refused (counted as `too large`) and acknowledged.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}

/// One subscription and its payload format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Subscription {
    /// JSON payloads mapped by paths.
    Json(JsonSubscription),
    /// Sparkplug B.
    SparkplugB(SparkplugSubscription),
}

impl Subscription {
    fn topic(&self) -> &str {
        match self {
            Subscription::Json(s) => &s.topic,
            Subscription::SparkplugB(s) => &s.topic,
        }
    }

    fn qos(&self) -> u8 {
        match self {
            Subscription::Json(s) => s.qos,
            Subscription::SparkplugB(s) => s.qos,
        }
    }
}

/// `format = "json"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSubscription {
    /// Topic filter (`+` and `#` wildcards).
    pub topic: String,
    /// 0 or 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Path to the array of records; the message itself by default.
    #[serde(default)]
    pub records: Option<String>,
    /// The asset: `$.path` in the record, a template with `{N}` for topic
    /// level N (0-based), or a fixed asset id.
    pub asset: String,
    /// Path to the timestamp; arrival time when absent.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Unit of numeric timestamps since the epoch: `s`, `ms`, `us`, `ns`.
    #[serde(default = "default_time_unit")]
    pub time_unit: String,
    /// Path to the signal name (with `value`).
    #[serde(default)]
    pub signal: Option<String>,
    /// Path to the value (with `signal`).
    #[serde(default)]
    pub value: Option<String>,
    /// Path to a quality (`good`/`uncertain`/`bad`, or an OPC code: ≥ 192 good, ≥ 64 uncertain).
    #[serde(default)]
    pub quality: Option<String>,
    /// Path to an object of signal → value.
    #[serde(default)]
    pub values: Option<String>,
    /// Signal → path.
    #[serde(default)]
    pub signals: BTreeMap<String, String>,
}

fn default_qos() -> u8 {
    1
}
fn default_time_unit() -> String {
    "ms".to_string()
}

/// `format = "sparkplug_b"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugSubscription {
    /// Topic filter; every group by default.
    #[serde(default = "default_sparkplug_topic")]
    pub topic: String,
    /// 0 or 1.
    #[serde(default)]
    pub qos: u8,
    /// Asset of a device's metrics: a template of `{group}`, `{node}`, `{device}`.
    #[serde(default = "default_device_asset")]
    pub asset: String,
    /// Asset of a node's own metrics.
    #[serde(default = "default_node_asset")]
    pub node_asset: String,
    /// Ask a node for a rebirth on a sequence gap or unknown alias.
    #[serde(default = "default_true")]
    pub rebirth: bool,
    /// At most one rebirth request per node this often.
    #[serde(default = "default_rebirth_interval")]
    pub rebirth_interval: HumanDuration,
}

fn default_sparkplug_topic() -> String {
    "spBv1.0/#".to_string()
}
fn default_device_asset() -> String {
    "{device}".to_string()
}
fn default_node_asset() -> String {
    "{node}".to_string()
}
fn default_true() -> bool {
    true
}
fn default_rebirth_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl SourceKind for MqttSourceConfig {
    const NAME: &'static str = "mqtt";
    const SUMMARY: &'static str = "Subscribes to an MQTT broker: JSON samples or Sparkplug B.";

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, assets: &HashSet<&str>) -> Vec<String> {
        let mut problems = Vec::new();
        let name = &self.name;
        if self.subscriptions.is_empty() {
            problems.push(format!("source `{name}`: no subscriptions"));
        }
        problems.extend(self.broker.validate(&format!("source `{name}`")));
        if let Some(p) = crate::common::out_of_range(
            "max_message_bytes",
            self.max_message_bytes,
            1024,
            crate::protocol::mqtt::MAX_MQTT_PACKET,
        ) {
            problems.push(format!("source `{name}`: {p}"));
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            let at = format!("source `{name}`, subscriptions[{i}]");
            if let Err(e) = check_filter(s.topic()) {
                problems.push(format!("{at}: topic `{}`: {e}", s.topic()));
            }
            if s.qos() > 1 {
                problems.push(format!("{at}: qos {} (0 or 1; QoS 2 is not supported)", s.qos()));
            }
            if let Subscription::Json(j) = s {
                problems.extend(j.validate(assets).into_iter().map(|p| format!("{at}: {p}")));
            }
        }
        problems
    }

    fn build(&self, _plant: &Plant) -> anyhow::Result<Option<Box<dyn Source>>> {
        Ok(Some(Box::new(MqttSource::new(self)?)))
    }
}

impl JsonSubscription {
    fn validate(&self, assets: &HashSet<&str>) -> Vec<String> {
        let mut problems = Vec::new();
        let shapes = usize::from(self.signal.is_some() || self.value.is_some())
            + usize::from(self.values.is_some())
            + usize::from(!self.signals.is_empty());
        if shapes != 1 {
            problems.push("give exactly one of `signal` + `value`, `values`, or `signals`".to_string());
        }
        if self.signal.is_some() != self.value.is_some() {
            problems.push("`signal` and `value` go together".to_string());
        }
        if time_unit_ms(&self.time_unit).is_none() {
            problems.push(format!("time_unit `{}`: one of s, ms, us, ns", self.time_unit));
        }
        let paths = [&self.records, &self.timestamp, &self.signal, &self.value, &self.quality, &self.values];
        for path in paths.into_iter().flatten().chain(self.signals.values()) {
            if let Err(e) = Path::parse(path) {
                problems.push(format!("path `{path}`: {e}"));
            }
        }
        match AssetRule::parse(&self.asset) {
            Err(e) => problems.push(format!("asset `{}`: {e}", self.asset)),
            Ok(AssetRule::Fixed(id)) if !assets.contains(id.as_str()) => {
                problems.push(format!("asset `{id}` is not configured"));
            }
            Ok(_) => {}
        }
        problems
    }
}

fn time_unit_ms(unit: &str) -> Option<f64> {
    match unit {
        "s" => Some(1e3),
        "ms" => Some(1.0),
        "us" => Some(1e-3),
        "ns" => Some(1e-6),
        _ => None,
    }
}

/// Check an MQTT topic filter: `#` only as the last level, wildcards only as whole levels.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("empty".to_string());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("`#` must be a whole last level".to_string());
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level".to_string());
        }
    }
    Ok(())
}

/// Whether `topic` matches the filter (`+` one level, `#` the rest).
fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (l, Some(t)) if l == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// A path into a JSON document: `$`, `$.a.b`, `$.a[0].b`, `$.samples`.
#[derive(Debug, Clone, PartialEq)]
struct Path(Vec<Step>);

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

impl Path {
    fn parse(text: &str) -> Result<Path, String> {
        let rest = text.strip_prefix('$').ok_or("a path starts with `$`")?;
        let mut steps = Vec::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    let mut key = String::new();
                    while let Some(&c) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        key.push(c);
                        chars.next();
                    }
                    if key.is_empty() {
                        return Err("empty key".to_string());
                    }
                    steps.push(Step::Key(key));
                }
                '[' => {
                    let mut digits = String::new();
                    for c in chars.by_ref() {
                        if c == ']' {
                            break;
                        }
                        digits.push(c);
                    }
                    let index = digits.parse().map_err(|_| format!("`[{digits}]` is not an index"))?;
                    steps.push(Step::Index(index));
                }
                other => return Err(format!("unexpected `{other}`")),
            }
        }
        Ok(Path(steps))
    }

    fn get<'a>(&self, value: &'a Json) -> Option<&'a Json> {
        self.0.iter().try_fold(value, |v, step| match step {
            Step::Key(k) => v.get(k),
            Step::Index(i) => v.get(i),
        })
    }
}

/// Where a record's asset comes from.
#[derive(Debug, Clone, PartialEq)]
enum AssetRule {
    Fixed(String),
    Path(Path),
    /// Text and topic levels.
    Template(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Level(usize),
}

impl AssetRule {
    fn parse(text: &str) -> Result<AssetRule, String> {
        if text.starts_with('$') {
            return Path::parse(text).map(AssetRule::Path);
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or("unclosed `{`")? + open;
            let level = rest[open + 1..close].parse().map_err(|_| "`{N}` takes a topic level number".to_string())?;
            pieces.push(Piece::Level(level));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        match pieces.as_slice() {
            [] => Err("empty".to_string()),
            [Piece::Text(t)] => Ok(AssetRule::Fixed(t.clone())),
            _ => Ok(AssetRule::Template(pieces)),
        }
    }

    fn resolve(&self, levels: &[&str], record: &Json) -> Option<String> {
        match self {
            AssetRule::Fixed(id) => Some(id.clone()),
            AssetRule::Path(p) => match p.get(record)? {
                Json::String(s) => Some(s.clone()),
                Json::Number(n) => Some(n.to_string()),
                _ => None,
            },
            AssetRule::Template(pieces) => pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => Some(t.as_str()),
                    Piece::Level(i) => levels.get(*i).copied(),
                })
                .collect(),
        }
    }
}

/// Read `payload` with typical JSON mappings of each shape; the samples
/// found. The fuzz target's entry point (`fuzz/`): must never panic.
#[doc(hidden)]
#[must_use]
pub fn read_json_for_fuzzing(payload: &[u8]) -> usize {
    static MAPPINGS: std::sync::OnceLock<Vec<JsonMapping>> = std::sync::OnceLock::new();
    let mappings = MAPPINGS.get_or_init(|| {
        [
            "topic = \"p/+/t\"\nasset = \"{1}\"\ntimestamp = \"$.ts\"\nvalues = \"$\"",
            "topic = \"p/+/t\"\nasset = \"$.asset\"\nrecords = \"$.rows\"\ntimestamp = \"$.t\"\ntime_unit = \"s\"\nsignal = \"$.name\"\nvalue = \"$.v\"\nquality = \"$.q\"",
            "topic = \"p/+/t\"\nasset = \"pump-1\"\ntimestamp = \"$.meta.time[0]\"\ntime_unit = \"ns\"\nsignals = { temp = \"$.a.b\", flow = \"$.c[2]\" }",
        ]
        .iter()
        .filter_map(|text| toml::from_str::<JsonSubscription>(text).ok())
        .filter_map(|s| JsonMapping::new(&s).ok())
        .collect()
    });
    let mut found = 0;
    for mapping in mappings {
        let mut readings = Readings::default();
        mapping.read("p/pump-1/t", payload, 0, &mut readings);
        found += readings.samples.values().map(Vec::len).sum::<usize>();
    }
    found
}

/// A JSON subscription, its paths parsed.
struct JsonMapping {
    records: Option<Path>,
    asset: AssetRule,
    timestamp: Option<Path>,
    time_unit_ms: f64,
    signal_value: Option<(Path, Path)>,
    quality: Option<Path>,
    values: Option<Path>,
    signals: Vec<(String, Path)>,
}

impl JsonMapping {
    fn new(s: &JsonSubscription) -> anyhow::Result<JsonMapping> {
        let path = |p: &Option<String>| p.as_deref().map(Path::parse).transpose().map_err(anyhow::Error::msg);
        Ok(JsonMapping {
            records: path(&s.records)?,
            asset: AssetRule::parse(&s.asset).map_err(anyhow::Error::msg)?,
            timestamp: path(&s.timestamp)?,
            time_unit_ms: time_unit_ms(&s.time_unit).context("time_unit")?,
            signal_value: match (path(&s.signal)?, path(&s.value)?) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            },
            quality: path(&s.quality)?,
            values: path(&s.values)?,
            signals: s
                .signals
                .iter()
                .map(|(name, p)| Ok((name.clone(), Path::parse(p).map_err(anyhow::Error::msg)?)))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// The samples of one message, per asset id; problems by cause.
    fn read(&self, topic: &str, payload: &[u8], now_ms: i64, out: &mut Readings) {
        let document: Json = match serde_json::from_slice(payload) {
            Ok(d) => d,
            Err(_) => return out.problem("bad JSON"),
        };
        let records: &[Json] = match &self.records {
            Some(p) => match p.get(&document) {
                Some(Json::Array(a)) => a,
                _ => return out.problem("records path is not an array"),
            },
            None => match &document {
                Json::Array(a) => a,
                other => std::slice::from_ref(other),
            },
        };
        let levels: Vec<&str> = topic.split('/').collect();
        for record in records {
            let Some(asset) = self.asset.resolve(&levels, record) else {
                out.problem("no asset in record");
                continue;
            };
            let ts = match &self.timestamp {
                None => now_ms,
                Some(p) => match p.get(record).and_then(|v| json_time(v, self.time_unit_ms)) {
                    Some(ts) => ts,
                    None => {
                        out.problem("missing or bad timestamp");
                        continue;
                    }
                },
            };
            let quality = match self.quality.as_ref().map(|p| p.get(record).map(json_quality)) {
                None | Some(None) => Quality::Good,
                Some(Some(Some(q))) => q,
                Some(Some(None)) => {
                    out.problem("bad quality");
                    continue;
                }
            };
            if let Some((signal, value)) = &self.signal_value {
                match (signal.get(record), value.get(record).map(json_number)) {
                    (Some(Json::String(name)), Some(Some(v))) => out.push(&asset, name, ts, v, quality),
                    (Some(Json::String(_)), Some(None) | None) => out.problem("value is not a number"),
                    _ => out.problem("no signal name in record"),
                }
            } else if let Some(values) = &self.values {
                match values.get(record) {
                    Some(Json::Object(map)) => {
                        for (name, v) in map {
                            // The record's own timestamp, asset or quality field is not a
                            // signal; other non-numbers beside the values (an id) are skipped.
                            if self.is_reserved(values, name) {
                                continue;
                            }
                            if let Some(v) = json_number(v) {
                                out.push(&asset, name, ts, v, quality);
                            }
                        }
                    }
                    _ => out.problem("values path is not an object"),
                }
            } else {
                for (name, p) in &self.signals {
                    match p.get(record).map(json_number) {
                        Some(Some(v)) => out.push(&asset, name, ts, v, quality),
                        Some(None) => out.problem("value is not a number"),
                        None => {} // a signal absent from this record
                    }
                }
            }
        }
    }
}

impl JsonMapping {
    /// Whether key `name` of the `values` object is the timestamp, asset or quality field.
    fn is_reserved(&self, values: &Path, name: &str) -> bool {
        let asset = match &self.asset {
            AssetRule::Path(p) => Some(p),
            _ => None,
        };
        [self.timestamp.as_ref(), asset, self.quality.as_ref()].into_iter().flatten().any(|p| {
            p.0.len() == values.0.len() + 1
                && p.0.starts_with(&values.0)
                && p.0.last() == Some(&Step::Key(name.to_string()))
        })
    }
}

/// A number, a boolean as 0/1, or a numeric string; `null` is not a value.
fn json_number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Json::Bool(b) => Some(f64::from(u8::from(*b))),
        Json::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn json_time(v: &Json, unit_ms: f64) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(|f| (f * unit_ms).round() as i64),
        Json::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()),
        _ => None,
    }
}

fn json_quality(v: &Json) -> Option<Quality> {
    match v {
        Json::String(s) => match s.to_ascii_lowercase().as_str() {
            "good" => Some(Quality::Good),
            "uncertain" => Some(Quality::Uncertain),
            "bad" => Some(Quality::Bad),
            _ => None,
        },
        Json::Number(n) => n.as_u64().map(|code| match code {
            192.. => Quality::Good,
            64..=191 => Quality::Uncertain,
            _ => Quality::Bad,
        }),
        _ => None,
    }
}

/// What one message yielded: samples per asset id, and problems.
#[derive(Default)]
struct Readings {
    samples: BTreeMap<String, Vec<(String, Sample)>>,
    problems: Vec<&'static str>,
}

impl Readings {
    fn push(&mut self, asset: &str, signal: &str, ts: i64, value: f64, quality: Quality) {
        if ts < 0 {
            self.problem("timestamp before 1970");
            return;
        }
        let sample = Sample { signal: 0, ts: Timestamp(ts), value, quality };
        self.samples.entry(asset.to_string()).or_default().push((signal.to_string(), sample));
    }

    fn problem(&mut self, cause: &'static str) {
        self.problems.push(cause);
    }
}

/// A running MQTT source.
pub struct MqttSource {
    config: MqttSourceConfig,
    /// Per subscription: its JSON mapping (None for Sparkplug B).
    mappings: Vec<Option<JsonMapping>>,
    options: MqttOptions,
}

impl MqttSource {
    /// Prepare the source: parse the mappings, read the TLS files.
    ///
    /// # Errors
    /// A TLS file that cannot be read or parsed, a password variable that is not set.
    pub fn new(config: &MqttSourceConfig) -> anyhow::Result<MqttSource> {
        let at = || format!("source `{}`", config.name);
        let mappings = config
            .subscriptions
            .iter()
            .map(|s| match s {
                Subscription::Json(j) => JsonMapping::new(j).map(Some),
                Subscription::SparkplugB(_) => Ok(None),
            })
            .collect::<anyhow::Result<_>>()
            .with_context(at)?;
        let mut options = config.broker.options(&format!("usan-{}", config.name)).with_context(at)?;
        options.set_clean_session(config.clean_session);
        options.set_manual_acks(true);
        Ok(MqttSource { config: config.clone(), mappings, options })
    }
}

impl Source for MqttSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move { self.run_until_shutdown(context).await })
    }
}

/// Most QoS 1 messages waiting for their commit before new ones are read.
const MAX_UNACKED: usize = 4096;
/// How long a stopping source waits for pending commits to acknowledge them.
const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(2);

/// Poll the event loop and forward every event until the receiver is gone;
/// after a connection error, wait the backoff's next delay before polling
/// again (which reconnects).
async fn pump_events(
    mut events: rumqttc::EventLoop,
    forward: mpsc::Sender<Result<Event, rumqttc::ConnectionError>>,
    mut backoff: crate::common::Backoff,
) {
    loop {
        let event = events.poll().await;
        let failed = event.is_err();
        if matches!(event, Ok(Event::Incoming(Packet::ConnAck(_)))) {
            backoff.reset();
        }
        if forward.send(event).await.is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// What the source loop does next.
enum Next {
    Idle,
    Shutdown,
    Durable(Result<(), Refused>),
    Event(Result<Event, rumqttc::ConnectionError>),
}

/// The outcome of the oldest unacknowledged message's commit (never resolves
/// while there is none).
async fn next_durable(unacked: &mut VecDeque<(Publish, Option<Receipt>)>) -> Result<(), Refused> {
    match unacked.front_mut() {
        None => std::future::pending().await,
        Some((_, None)) => Ok(()),
        Some((_, Some(receipt))) => receipt.durable().await,
    }
}

/// The running state of one connection.
struct Session {
    client: AsyncClient,
    stats: Arc<LinkStats>,
    log: CauseLog,
    sparkplug: Host,
    last_rebirth: HashMap<String, Instant>,
    down_since: Option<Instant>,
}

impl MqttSource {
    async fn run_until_shutdown(self, mut context: SourceContext) -> anyhow::Result<()> {
        let (client, event_loop) = crate::protocol::mqtt::client(self.options.clone(), 1024);
        let stats = context.metrics.source(&self.config.name);
        let mut session = Session {
            client,
            stats,
            log: CauseLog::new(&self.config.name),
            sparkplug: Host::default(),
            last_rebirth: HashMap::new(),
            down_since: Some(Instant::now()),
        };
        // The event loop runs on its own task: its `poll` must never be
        // cancelled (a cancelled poll can lose a queued PUBACK, and the
        // broker then stops sending once its in-flight window is full).
        let (event_tx, mut events) = mpsc::channel(1024);
        let pump = tokio::spawn(pump_events(event_loop, event_tx, self.config.broker.backoff()));
        // QoS 1 messages in arrival order, acknowledged (PUBACK, in that
        // order) once what they carried is durable.
        let mut unacked: VecDeque<(Publish, Option<Receipt>)> = VecDeque::new();
        let outcome = loop {
            if *context.shutdown.borrow() {
                break self.stop(&mut session, &mut unacked, &mut events).await;
            }
            let step = tokio::select! {
                changed = context.shutdown.changed() => {
                    if changed.is_err() || *context.shutdown.borrow() { Next::Shutdown } else { Next::Idle }
                }
                outcome = next_durable(&mut unacked) => Next::Durable(outcome),
                event = events.recv(), if unacked.len() < MAX_UNACKED => match event {
                    Some(event) => Next::Event(event),
                    None => Next::Shutdown,
                },
            };
            match step {
                Next::Idle => {}
                Next::Shutdown => break self.stop(&mut session, &mut unacked, &mut events).await,
                Next::Durable(outcome) => {
                    let Some((publish, _)) = unacked.pop_front() else { continue };
                    match outcome {
                        Ok(()) => self.ack(&publish, &mut session),
                        Err(e) => {
                            // Not acknowledged: the broker sends it again after a reconnect.
                            session.log.note("not acknowledged", &e.to_string());
                            // Later messages must not be acknowledged before it.
                            unacked.clear();
                            let _ = session.client.try_disconnect();
                        }
                    }
                }
                Next::Event(event) => {
                    if !self.on_event(event, &mut session, &context, &mut unacked).await {
                        // Unacknowledged messages come again with the next session
                        // (the pump backs off before it tries again).
                        unacked.clear();
                    }
                }
            }
        };
        pump.abort();
        outcome
    }

    /// Acknowledge what was committed (the broker sends the rest again), disconnect.
    async fn stop(
        &self,
        session: &mut Session,
        unacked: &mut VecDeque<(Publish, Option<Receipt>)>,
        events: &mut mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_ACK_WAIT;
        while let Some((publish, receipt)) = unacked.pop_front() {
            let durable = match receipt {
                None => true,
                Some(mut r) => matches!(tokio::time::timeout_at(deadline, r.durable()).await, Ok(Ok(()))),
            };
            if !durable {
                break;
            }
            self.ack(&publish, session);
        }
        if session.client.try_disconnect().is_ok() && session.stats.connected.load(Ordering::Relaxed) {
            // The event loop sends the acknowledgements, then the disconnect.
            let deadline = tokio::time::Instant::now() + SHUTDOWN_ACK_WAIT;
            while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
                if matches!(event, Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_)) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn ack(&self, publish: &Publish, session: &mut Session) {
        if let Err(e) = session.client.try_ack(publish) {
            session.log.note("cannot acknowledge", &e.to_string());
        }
    }

    /// Handle one event; `false` after a connection error (wait, then retry).
    async fn on_event(
        &self,
        event: Result<Event, rumqttc::ConnectionError>,
        session: &mut Session,
        context: &SourceContext,
        unacked: &mut VecDeque<(Publish, Option<Receipt>)>,
    ) -> bool {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if let Some(since) = session.down_since.take()
                    && session.stats.disconnects.get() > 0
                {
                    session.stats.outage_ms.inc_by(since.elapsed().as_millis() as u64);
                    tracing::info!(source = %self.config.name, "MQTT connection restored after {:.1?}", since.elapsed());
                }
                session.stats.connected.store(true, Ordering::Relaxed);
                session.stats.subscribes.store(true, Ordering::Relaxed);
                session.stats.subscribed.store(false, Ordering::Relaxed);
                // Subscribe again even when the broker kept the session: harmless, and
                // a broker that lost its state gets the subscriptions back.
                let filters = self.config.subscriptions.iter().map(|s| {
                    let qos = if s.qos() == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                    rumqttc::SubscribeFilter::new(s.topic().to_string(), qos)
                });
                if let Err(e) = session.client.try_subscribe_many(filters) {
                    tracing::warn!(source = %self.config.name, "cannot subscribe: {e}");
                }
                tracing::debug!(source = %self.config.name, session_present = ack.session_present, "connected");
                true
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                session.stats.messages.inc_by(1);
                match self.on_publish(&publish, session, context).await {
                    // Not acknowledged, the broker sends it again after a reconnect.
                    Err(Closed) => {}
                    Ok(receipt) if publish.qos != QoS::AtMostOnce => unacked.push_back((publish, receipt)),
                    Ok(_) => {}
                }
                true
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack.return_codes.iter().filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)).count();
                if refused == 0 {
                    session.stats.subscribed.store(true, Ordering::Relaxed);
                } else {
                    session.log.note("the broker refused subscriptions", &format!("{refused} of {}", ack.return_codes.len()));
                }
                true
            }
            Ok(_) => true,
            Err(e) => {
                session.stats.subscribed.store(false, Ordering::Relaxed);
                if session.stats.connected.swap(false, Ordering::Relaxed) {
                    session.stats.disconnects.inc_by(1);
                    session.down_since = Some(Instant::now());
                    tracing::warn!(source = %self.config.name, "MQTT connection lost: {e}; retrying from {:?} on, backing off to {:?}", self.config.broker.reconnect_delay.0, self.config.broker.reconnect_max_delay.0);
                } else {
                    session.stats.connect_failed("cannot connect");
                    session.log.note("cannot connect", &e.to_string());
                }
                false
            }
        }
    }

    /// Submit one message's samples; the receipt to wait for before
    /// acknowledging (none when nothing was submitted). [`Closed`] when the
    /// pipeline is shutting down (the message is then not acknowledged, so
    /// the broker keeps it).
    async fn on_publish(
        &self,
        publish: &Publish,
        session: &mut Session,
        context: &SourceContext,
    ) -> Result<Option<Receipt>, Closed> {
        let topic = publish.topic.as_str();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let Some(index) = self.config.subscriptions.iter().position(|s| topic_matches(s.topic(), topic)) else {
            return Ok(None);
        };
        if publish.payload.len() > self.config.max_message_bytes {
            session.stats.malformed("too large");
            session.log.note("too large", topic);
            return Ok(None);
        }
        let mut readings = Readings::default();
        match (&self.config.subscriptions[index], &self.mappings[index]) {
            (_, Some(mapping)) => mapping.read(topic, &publish.payload, now_ms, &mut readings),
            (Subscription::SparkplugB(s), None) => {
                self.read_sparkplug(s, topic, &publish.payload, now_ms, session, &mut readings)
            }
            (Subscription::Json(_), None) => {}
        }
        for cause in readings.problems.drain(..) {
            session.stats.malformed(cause);
            session.log.note(cause, topic);
        }
        let batches = to_batches(&context.plant, readings.samples, &context.metrics, &mut session.log);
        if batches.is_empty() {
            return Ok(None);
        }
        context.router.submit(batches).await.map(Some)
    }

    fn read_sparkplug(
        &self,
        settings: &SparkplugSubscription,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        session: &mut Session,
        readings: &mut Readings,
    ) {
        let Some(parsed) = sparkplug::Topic::parse(topic) else {
            return;
        };
        let outcome = session.sparkplug.handle(&parsed, payload, now_ms);
        for problem in &outcome.problems {
            readings.problem(problem.cause());
        }
        for r in outcome.readings {
            let template = if r.device.is_some() { &settings.asset } else { &settings.node_asset };
            let asset = template
                .replace("{group}", parsed.group)
                .replace("{node}", parsed.node)
                .replace("{device}", r.device.as_deref().unwrap_or(parsed.node));
            readings.push(&asset, &r.metric, r.ts, r.value, Quality::Good);
        }
        if outcome.request_rebirth && settings.rebirth {
            let key = format!("{}/{}", parsed.group, parsed.node);
            let due = session.last_rebirth.get(&key).is_none_or(|t| t.elapsed() >= settings.rebirth_interval.0);
            if due {
                session.last_rebirth.insert(key, Instant::now());
                let request = sparkplug::rebirth_request(now_ms);
                match session.client.try_publish(parsed.node_command(), QoS::AtLeastOnce, false, request) {
                    Ok(()) => {
                        session.stats.rebirths_requested.inc_by(1);
                        tracing::info!(source = %self.config.name, "asked Sparkplug node {}/{} for a rebirth", parsed.group, parsed.node);
                    }
                    Err(e) => {
                        session.log.note("cannot request rebirth", &e.to_string());
                    }
                }
            }
        }
    }
}

/// Samples per asset id → batches by asset index; unknown assets and
/// signals are counted as dropped and logged.
fn to_batches(
    plant: &Plant,
    samples: BTreeMap<String, Vec<(String, Sample)>>,
    metrics: &crate::telemetry::Metrics,
    log: &mut CauseLog,
) -> Vec<Batch> {
    let mut batches = Vec::new();
    for (asset_id, named) in samples {
        let Some(&asset) = plant.asset_index.get(&asset_id) else {
            metrics.samples_dropped.inc_by(named.len() as u64);
            log.note("unknown asset", &asset_id);
            continue;
        };
        let signals = &plant.assets[asset].signal_index;
        let mut batch = Vec::with_capacity(named.len());
        for (name, mut sample) in named {
            match signals.get(&name) {
                Some(&i) => {
                    sample.signal = i;
                    batch.push(sample);
                }
                None => {
                    metrics.samples_dropped.inc_by(1);
                    log.note("unknown signal", &format!("{asset_id}/{name}"));
                }
            }
        }
        if !batch.is_empty() {
            batches.push(Batch::Samples { asset, samples: batch });
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_match_like_a_broker() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b/c", "a/b/c", true),
            ("a/+/c", "a/x/c", true),
            ("a/+/c", "a/x/y/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("#", "$SYS/broker", false),
            ("a/+", "a/b/c", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(topic_matches(filter, topic), *want, "{filter} vs {topic}");
        }
        assert!(check_filter("a/+/#").is_ok());
        assert!(check_filter("a/#/b").is_err());
        assert!(check_filter("a/b+").is_err());
        assert!(check_filter("").is_err());
    }

    #[test]
    fn paths_read_nested_values() {
        let doc: Json = serde_json::json!({"a": {"b": [1, {"c": 2.5}]}, "x": "y"});
        let cases: &[(&str, Option<Json>)] = &[
            ("$", Some(doc.clone())),
            ("$.x", Some(Json::from("y"))),
            ("$.a.b[1].c", Some(Json::from(2.5))),
            ("$.a.b[0]", Some(Json::from(1))),
            ("$.a.missing", None),
            ("$.a.b[7]", None),
        ];
        for (path, want) in cases {
            assert_eq!(Path::parse(path).unwrap().get(&doc).cloned(), *want, "{path}");
        }
        for bad in ["a.b", "$..a", "$.a[x]", "$a"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn asset_rules_take_topic_levels_record_fields_or_a_fixed_id() {
        let levels = ["plant", "pump-7", "telemetry"];
        let record = serde_json::json!({"unit": 3, "name": "fan"});
        let cases: &[(&str, Option<&str>)] = &[
            ("{1}", Some("pump-7")),
            ("line-{1}-x", Some("line-pump-7-x")),
            ("{9}", None),
            ("$.name", Some("fan")),
            ("$.unit", Some("3")),
            ("$.absent", None),
            ("boiler", Some("boiler")),
        ];
        for (rule, want) in cases {
            let rule = AssetRule::parse(rule).unwrap();
            assert_eq!(rule.resolve(&levels, &record).as_deref(), *want, "{rule:?}");
        }
        assert!(AssetRule::parse("{x}").is_err());
        assert!(AssetRule::parse("{1").is_err());
    }

    fn subscription(extra: &str) -> JsonSubscription {
        let asset = if extra.contains("asset =") { "" } else { "asset = \"{1}\"\n" };
        toml::from_str(&format!("topic = \"t/+\"\n{asset}{extra}")).unwrap()
    }

    fn read(sub: &JsonSubscription, topic: &str, payload: &str) -> Readings {
        let mut out = Readings::default();
        JsonMapping::new(sub).unwrap().read(topic, payload.as_bytes(), 99, &mut out);
        out
    }

    fn flat(r: &Readings) -> Vec<(String, String, i64, f64)> {
        r.samples
            .iter()
            .flat_map(|(a, v)| v.iter().map(move |(s, x)| (a.clone(), s.clone(), x.ts.0, x.value)))
            .collect()
    }

    #[test]
    fn json_shapes_become_samples() {
        let wide = subscription("timestamp = \"$.ts\"\nvalues = \"$\"");
        let r = read(&wide, "t/p1", r#"{"ts": 1000, "temp": 20.5, "flow": 3, "id": "x"}"#);
        assert_eq!(flat(&r), vec![("p1".into(), "flow".into(), 1000, 3.0), ("p1".into(), "temp".into(), 1000, 20.5)]);
        assert!(r.problems.is_empty());

        let long = subscription(
            "records = \"$.samples\"\ntimestamp = \"$.t\"\ntime_unit = \"s\"\nsignal = \"$.s\"\nvalue = \"$.v\"\nasset = \"$.a\"",
        );
        let r = read(
            &long,
            "t/ignored",
            r#"{"samples": [{"a": "p2", "t": 2, "s": "temp", "v": 1.5}, {"a": "p2", "t": "1970-01-01T00:00:03Z", "s": "temp", "v": true}]}"#,
        );
        assert_eq!(flat(&r), vec![("p2".into(), "temp".into(), 2000, 1.5), ("p2".into(), "temp".into(), 3000, 1.0)]);

        let mapped = subscription("signals = { temp = \"$.m.t\", flow = \"$.m.f\" }");
        let r = read(&mapped, "t/p3", r#"[{"m": {"t": 1}}, {"m": {"t": 2, "f": "7.5"}}]"#);
        assert_eq!(
            flat(&r),
            vec![
                ("p3".into(), "temp".into(), 99, 1.0),
                ("p3".into(), "flow".into(), 99, 7.5),
                ("p3".into(), "temp".into(), 99, 2.0)
            ]
        );
    }

    #[test]
    fn malformed_json_is_counted_by_cause() {
        let long = subscription("timestamp = \"$.ts\"\nsignal = \"$.s\"\nvalue = \"$.v\"\nquality = \"$.q\"");
        let cases: &[(&str, &[&str])] = &[
            ("{not json", &["bad JSON"]),
            (r#"{"s": "temp", "v": 1}"#, &["missing or bad timestamp"]),
            (r#"{"ts": "yesterday", "s": "temp", "v": 1}"#, &["missing or bad timestamp"]),
            (r#"{"ts": 1, "s": "temp", "v": "hot"}"#, &["value is not a number"]),
            (r#"{"ts": 1, "v": 1}"#, &["no signal name in record"]),
            (r#"{"ts": 1, "s": "temp", "v": 1, "q": "meh"}"#, &["bad quality"]),
            (r#"[{"ts": 1, "s": "temp", "v": 1, "q": 0}, 5]"#, &["missing or bad timestamp"]),
        ];
        for (payload, want) in cases {
            let r = read(&long, "t/p", payload);
            assert_eq!(r.problems, *want, "{payload}");
        }
        let r = read(&long, "t/p", r#"{"ts": 1, "s": "temp", "v": 1, "q": 0}"#);
        assert_eq!(r.samples["p"][0].1.quality, Quality::Bad);
        let records = subscription("records = \"$.rows\"\nvalues = \"$\"");
        assert_eq!(read(&records, "t/p", r#"{"rows": 5}"#).problems, ["records path is not an array"]);
    }

    #[test]
    fn settings_are_validated_together() {
        let config: MqttSourceConfig = toml::from_str(
            r#"
            name = "m"
            broker = { password = "a", password_env = "B" }
            [[subscriptions]]
            format = "json"
            topic = "a/#/b"
            qos = 2
            asset = "nowhere"
            values = "$"
            signal = "$.s"
            time_unit = "h"
            [[subscriptions]]
            format = "sparkplug_b"
            "#,
        )
        .unwrap();
        let problems = config.validate(&HashSet::from(["pump"]));
        let text = problems.join("\n");
        for expected in [
            "not both",
            "`#` must be",
            "qos 2",
            "exactly one of",
            "go together",
            "time_unit",
            "`nowhere` is not configured",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(problems.len(), 7, "{text}");
    }
}
