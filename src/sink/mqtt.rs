//! MQTT sink: findings and alarm events published to a broker, through a
//! disk spool so that nothing is lost while the broker is unreachable.
//!
//! ```toml
//! [[sinks]]
//! type = "mqtt"
//! name = "events"
//! broker = { host = "10.0.0.5" }
//! topic = "usan/{asset}/{event}"      # {asset}, {detector}, {event}
//! findings = false                    # alarm events only by default
//! spool = "spool/events"              # relative to the configuration file
//! spool_max_bytes = 104857600
//! ```
//!
//! `write` appends each event (topic and JSON) to the spool and syncs it; a
//! forwarder task publishes the spool in order and acknowledges a record
//! only when the broker has (QoS 1 PUBACK). After an outage or a restart it
//! resumes at the first unacknowledged record: delivery is at least once,
//! in order. A full spool refuses new events, counted in
//! `usan_sink_overflow_total` and logged; the backlog is `usan_sink_backlog`.

use super::spool::{Appender, Record, Spool};
use super::{Event, Sink, SinkKind};
use crate::common::CauseLog;
use crate::protocol::mqtt::Broker;
use crate::telemetry::{LinkStats, Metrics};
use anyhow::Context;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// `[[sinks]] type = "mqtt"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// Sink name (metrics label, default client id `usan-sink-<name>`, default spool folder).
    pub name: String,
    /// The broker.
    #[serde(default)]
    pub broker: Broker,
    /// Topic template of `{asset}`, `{detector}` and `{event}` (`finding`,
    /// `alarm_raised`, `alarm_condition_cleared`, `alarm_acknowledged`, ...).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Also publish findings (alarm events only when false).
    #[serde(default)]
    pub findings: bool,
    /// 0 or 1; with 0 a record counts as delivered once written to the socket.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish retained.
    #[serde(default)]
    pub retain: bool,
    /// Spool folder; `spool/<name>` beside the configuration file by default.
    #[serde(default)]
    pub spool: Option<PathBuf>,
    /// Most bytes the spool holds undelivered.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
}

fn default_topic() -> String {
    "usan/{asset}/{event}".to_string()
}
fn default_qos() -> u8 {
    1
}
fn default_spool_max_bytes() -> u64 {
    100 * 1024 * 1024
}

/// Records published per round trip: the forwarder waits for all of them
/// before acknowledging the spool.
const WINDOW: usize = 64;
/// A window not confirmed in this long is published again.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

impl SinkKind for MqttSinkConfig {
    const NAME: &'static str = "mqtt";
    const SUMMARY: &'static str = "Publishes events to an MQTT broker through a disk spool (store-and-forward).";

    fn validate(&self) -> Vec<String> {
        let at = format!("sink `{}`", self.name);
        let mut problems = self.broker.validate(&at);
        if self.qos > 1 {
            problems.push(format!("{at}: qos {} (0 or 1)", self.qos));
        }
        if self.topic.is_empty() || self.topic.contains(['+', '#']) {
            problems.push(format!("{at}: topic `{}` must be a topic name, without wildcards", self.topic));
        }
        problems.extend(super::spool::check_max_bytes(&at, self.spool_max_bytes));
        problems
    }

    fn resolve_paths(&mut self, dir: &Path) {
        self.spool = Some(super::spool::resolve_dir(self.spool.take(), &self.name, dir));
    }

    fn build(&self, metrics: &Metrics) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(self.open(metrics)?))
    }
}

impl MqttSinkConfig {

    /// Open the spool and start the forwarder (on the current Tokio runtime).
    ///
    /// # Errors
    /// When the spool cannot be opened or the broker settings not used (TLS files, password variable).
    pub fn open(&self, metrics: &Metrics) -> anyhow::Result<MqttSink> {
        let at = || format!("sink `{}`", self.name);
        let dir = self.spool.clone().unwrap_or_else(|| PathBuf::from("spool").join(&self.name));
        let spool = Spool::open(&dir, self.spool_max_bytes)
            .with_context(|| format!("sink `{}`: spool {}", self.name, dir.display()))?;
        let mut options = self.broker.options(&format!("usan-sink-{}", self.name)).with_context(at)?;
        // The spool is the session: anything unconfirmed is published again from it.
        options.set_clean_session(true);
        let stats = metrics.sink(&self.name);
        stats.backlog.store(spool.backlog(), Ordering::Relaxed);
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let forwarder = Forwarder {
            name: self.name.clone(),
            options,
            backoff: self.broker.backoff(),
            qos: if self.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce },
            retain: self.retain,
            spool: Arc::clone(&spool),
            wake: Arc::clone(&wake),
            stats: Arc::clone(&stats),
        };
        tokio::spawn(forwarder.run());
        let appender = Appender { spool, wake, stats, log: CauseLog::new(&self.name) };
        Ok(MqttSink { config: self.clone(), appender })
    }
}

/// The engine's side of the sink: appends to the spool.
pub struct MqttSink {
    config: MqttSinkConfig,
    appender: Appender,
}

impl MqttSink {
    fn topic(&self, event: &Event) -> String {
        let ((asset, detector), kind) = (event.source(), event.kind());
        // Topic levels must not be split or wildcarded by a name.
        let clean = |s: &str| s.replace(['/', '+', '#'], "_");
        self.config
            .topic
            .replace("{asset}", &clean(asset))
            .replace("{detector}", &clean(detector))
            .replace("{event}", kind)
    }
}

/// A spool record: topic length (u16 LE), topic, payload.
fn encode(topic: &str, payload: &[u8]) -> Vec<u8> {
    let topic = &topic.as_bytes()[..topic.len().min(usize::from(u16::MAX))];
    let mut record = Vec::with_capacity(2 + topic.len() + payload.len());
    record.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    record.extend_from_slice(topic);
    record.extend_from_slice(payload);
    record
}

fn decode(record: &Record) -> Option<(String, Vec<u8>)> {
    let bytes = &record.bytes;
    let length = usize::from(u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]));
    let topic = std::str::from_utf8(bytes.get(2..2 + length)?).ok()?;
    Some((topic.to_string(), bytes[2 + length..].to_vec()))
}

impl Sink for MqttSink {
    fn write(&mut self, events: &[Event]) -> anyhow::Result<()> {
        let records = events
            .iter()
            .filter(|e| self.config.findings || !matches!(e, Event::Finding(_)))
            .map(|e| Ok(encode(&self.topic(e), &serde_json::to_vec(e)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        self.appender.append(records)
    }
}

/// What the connection task reports to the forwarder.
enum Link {
    Up,
    Down(String),
    /// A publish went out with this packet id (0 at QoS 0).
    Sent(u16),
    /// The broker confirmed this packet id.
    Confirmed(u16),
}

/// Publishes the spool, in order, as the broker confirms.
struct Forwarder {
    name: String,
    options: MqttOptions,
    backoff: crate::common::Backoff,
    qos: QoS,
    retain: bool,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    stats: Arc<LinkStats>,
}

/// Poll one connection until it fails, reporting what matters.
async fn drive(mut connection: rumqttc::EventLoop, link: mpsc::Sender<Link>) {
    loop {
        let message = match connection.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => Link::Up,
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => Link::Confirmed(ack.pkid),
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => Link::Sent(pkid),
            Ok(_) => continue,
            Err(e) => {
                let _ = link.send(Link::Down(e.to_string())).await;
                return;
            }
        };
        if link.send(message).await.is_err() {
            return;
        }
    }
}

impl Forwarder {
    /// Each connection gets its own client, so nothing queued for a dead
    /// connection is published (or confirmed) on the next one: a window is
    /// confirmed only by acknowledgements of its own publishes.
    async fn run(self) {
        let mut backoff = self.backoff.clone();
        let mut log = CauseLog::new(&self.name);
        let mut down_since = Instant::now();
        loop {
            let (client, connection) = crate::protocol::mqtt::client(self.options.clone(), WINDOW * 2);
            let (link_tx, mut link) = mpsc::channel::<Link>(WINDOW * 4);
            let task = tokio::spawn(drive(connection, link_tx));
            match link.recv().await {
                Some(Link::Up) => {
                    backoff.reset();
                    self.stats.connected.store(true, Ordering::Relaxed);
                    if self.stats.disconnects.get() > 0 {
                        self.stats.outage_ms.inc_by(down_since.elapsed().as_millis() as u64);
                        tracing::info!(sink = %self.name, "MQTT sink reached the broker after {:.1?}", down_since.elapsed());
                    }
                    match self.forward(&client, &mut link).await {
                        Some(reason) => log.note("MQTT sink lost the broker; events wait in the spool", &reason),
                        None => return,
                    };
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.stats.disconnects.inc_by(1);
                    down_since = Instant::now();
                }
                Some(Link::Down(reason)) => {
                    self.stats.connect_failed("cannot connect");
                    log.note("MQTT sink cannot reach the broker", &reason);
                }
                _ => {}
            }
            task.abort();
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Publish the spool while the connection holds; the reason it ended,
    /// or `None` at shutdown.
    async fn forward(&self, client: &AsyncClient, link: &mut mpsc::Receiver<Link>) -> Option<String> {
        loop {
            let window = {
                let spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
                spool.peek(WINDOW)
            };
            let window = match window {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(sink = %self.name, "cannot read the spool: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if window.is_empty() {
                tokio::select! {
                    () = self.wake.notified() => {}
                    message = link.recv() => match message {
                        Some(Link::Down(reason)) => return Some(reason),
                        Some(_) => {}
                        None => return Some("connection task ended".to_string()),
                    },
                }
                continue;
            }
            match self.publish(client, &window, link).await {
                Ok(()) => {
                    let mut spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(last) = window.last()
                        && let Err(e) = spool.ack(last.end)
                    {
                        tracing::error!(sink = %self.name, "cannot acknowledge the spool: {e}");
                    }
                    self.stats.messages.inc_by(window.len() as u64);
                    self.stats.backlog.store(spool.backlog(), Ordering::Relaxed);
                }
                Err(reason) => return Some(reason),
            }
        }
    }

    /// Publish a window and wait until the broker has confirmed all of it;
    /// the reason when the connection dropped or confirmation timed out
    /// (the window goes again on the next connection).
    async fn publish(
        &self,
        client: &AsyncClient,
        window: &[Record],
        link: &mut mpsc::Receiver<Link>,
    ) -> Result<(), String> {
        let mut records = 0;
        for record in window {
            let Some((topic, payload)) = decode(record) else {
                self.stats.malformed("unreadable spool record");
                continue;
            };
            client.publish(topic, self.qos, self.retain, payload).await.map_err(|e| e.to_string())?;
            records += 1;
        }
        let mut pending: HashSet<u16> = HashSet::new();
        let mut confirmed = 0;
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        while confirmed < records {
            match tokio::time::timeout_at(deadline, link.recv()).await {
                Err(_) => return Err("no confirmation within 30 s".to_string()),
                Ok(None) => return Err("connection task ended".to_string()),
                Ok(Some(Link::Down(reason))) => return Err(reason),
                Ok(Some(Link::Up)) => {}
                Ok(Some(Link::Sent(pkid))) => {
                    if self.qos == QoS::AtMostOnce {
                        confirmed += 1;
                    } else {
                        pending.insert(pkid);
                    }
                }
                Ok(Some(Link::Confirmed(pkid))) => {
                    if pending.remove(&pkid) {
                        confirmed += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_topic_and_payload() {
        let record = Record { bytes: encode("usan/pump-1/finding", b"{\"x\":1}"), end: 0 };
        assert_eq!(decode(&record), Some(("usan/pump-1/finding".to_string(), b"{\"x\":1}".to_vec())));
        assert_eq!(decode(&Record { bytes: vec![9], end: 0 }), None);
        assert_eq!(decode(&Record { bytes: vec![5, 0, b'a'], end: 0 }), None);
    }

    #[test]
    fn settings_are_checked() {
        let config: MqttSinkConfig =
            toml::from_str("name = \"e\"\ntopic = \"usan/#\"\nqos = 2\nspool_max_bytes = 10").unwrap();
        assert_eq!(config.validate().len(), 3, "{:?}", config.validate());
        let mut config: MqttSinkConfig = toml::from_str("name = \"e\"").unwrap();
        assert!(config.validate().is_empty());
        config.resolve_paths(Path::new("/etc/usan"));
        assert_eq!(config.spool, Some(PathBuf::from("/etc/usan/spool/e")));
    }
}
