//! Sinks: where findings and alarm events go besides the store.
//!
//! A sink `write`s batches of [`Event`]s; sinks run on their own task behind
//! a bounded channel. A sink slower than the events fills the channel and
//! then holds the workers back (backpressure): events are never dropped.
//! The registry of kinds is [`SinkConfig`].

pub mod mqtt;
pub mod spool;
pub mod webhook;

use crate::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use usan_core::alarm::Alarm;
use usan_core::model::Finding;

/// What sinks receive.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A score over its threshold.
    Finding(Finding),
    /// A new alarm.
    AlarmRaised(Alarm),
    /// An open alarm's condition returned to normal.
    AlarmConditionCleared(Alarm),
    /// Somebody acknowledged an alarm.
    AlarmAcknowledged(Alarm),
    /// An alarm was handed to somebody to fix.
    AlarmAssigned(Alarm),
    /// An alarm lay unacknowledged too long (`[alarms] escalate_after`).
    AlarmEscalated(Alarm),
    /// An alarm was closed (its cause in `cause`).
    AlarmCleared(Alarm),
}

impl Event {
    /// The event's name, as in its JSON `event` field.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Finding(_) => "finding",
            Event::AlarmRaised(_) => "alarm_raised",
            Event::AlarmConditionCleared(_) => "alarm_condition_cleared",
            Event::AlarmAcknowledged(_) => "alarm_acknowledged",
            Event::AlarmAssigned(_) => "alarm_assigned",
            Event::AlarmEscalated(_) => "alarm_escalated",
            Event::AlarmCleared(_) => "alarm_cleared",
        }
    }

    /// The asset and detector it concerns.
    #[must_use]
    pub fn source(&self) -> (&str, &str) {
        match self {
            Event::Finding(f) => (&f.asset, &f.detector),
            Event::AlarmRaised(a)
            | Event::AlarmConditionCleared(a)
            | Event::AlarmAcknowledged(a)
            | Event::AlarmAssigned(a)
            | Event::AlarmEscalated(a)
            | Event::AlarmCleared(a) => (&a.asset, &a.detector),
        }
    }
}

/// `[[sinks]]`: the registry of sink kinds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // inert configuration, built once
pub enum SinkConfig {
    /// Alarm events as log lines on standard error.
    Log,
    /// Every event as a JSON line appended to a file.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// Also write findings (alarms only when false).
        #[serde(default)]
        findings: bool,
    },
    /// Events published to an MQTT broker through a disk spool (store-and-forward).
    Mqtt(mqtt::MqttSinkConfig),
    /// Alarm events POSTed, signed, to another system through a disk spool.
    Webhook(webhook::WebhookSinkConfig),
}

impl SinkConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        match self {
            SinkConfig::Mqtt(c) => c.validate(),
            SinkConfig::Webhook(c) => c.validate(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        if let SinkConfig::Jsonl { path, .. } = self
            && path.is_relative()
        {
            *path = dir.join(&*path);
        }
        match self {
            SinkConfig::Mqtt(c) => c.resolve_paths(dir),
            SinkConfig::Webhook(c) => c.resolve_paths(dir),
            _ => {}
        }
    }

    /// Build the sink.
    ///
    /// # Errors
    /// When its file or spool cannot be opened. An MQTT sink starts its
    /// forwarder on the current Tokio runtime.
    pub fn build(&self, metrics: &Metrics) -> anyhow::Result<Box<dyn Sink>> {
        Ok(match self {
            SinkConfig::Log => Box::new(LogSink),
            SinkConfig::Jsonl { path, findings } => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("jsonl sink: cannot open {}: {e}", path.display()))?;
                Box::new(JsonlSink { out: std::io::BufWriter::new(file), findings: *findings })
            }
            SinkConfig::Mqtt(c) => Box::new(c.build(metrics)?),
            SinkConfig::Webhook(c) => Box::new(c.build(metrics)?),
        })
    }
}

/// The contract every sink keeps.
pub trait Sink: Send {
    /// Deliver a batch of events.
    ///
    /// # Errors
    /// When the destination refuses; the runtime logs and goes on.
    fn write(&mut self, events: &[Event]) -> anyhow::Result<()>;
}

struct LogSink;

impl Sink for LogSink {
    fn write(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            match event {
                Event::AlarmRaised(a) => tracing::warn!(
                    alarm = a.id,
                    asset = %a.asset,
                    detector = %a.detector,
                    "alarm raised: {}",
                    a.notes.first().map_or("", |n| n.text.as_str())
                ),
                Event::AlarmConditionCleared(a) => {
                    tracing::info!(alarm = a.id, asset = %a.asset, detector = %a.detector, "alarm condition returned to normal")
                }
                Event::AlarmEscalated(a) => tracing::warn!(
                    alarm = a.id,
                    asset = %a.asset,
                    detector = %a.detector,
                    "alarm escalated: nobody has acknowledged it since {}",
                    a.raised_at
                ),
                Event::AlarmAcknowledged(a) | Event::AlarmAssigned(a) | Event::AlarmCleared(a) => tracing::info!(
                    alarm = a.id,
                    asset = %a.asset,
                    "{}: {}",
                    event.kind(),
                    a.notes.last().map_or("", |n| n.by.as_str())
                ),
                Event::Finding(_) => {}
            }
        }
        Ok(())
    }
}

struct JsonlSink {
    out: std::io::BufWriter<std::fs::File>,
    findings: bool,
}

impl Sink for JsonlSink {
    fn write(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            if matches!(event, Event::Finding(_)) && !self.findings {
                continue;
            }
            serde_json::to_writer(&mut self.out, event)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}
