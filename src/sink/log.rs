//! `[[sinks]] type = "log"`: alarm events as log lines on standard error,
//! for a first setup or a service manager's journal.

use super::{Event, Sink, SinkKind};
use crate::telemetry::Metrics;
use serde::Deserialize;

/// `[[sinks]] type = "log"`: no settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkConfig {}

impl SinkKind for LogSinkConfig {
    const NAME: &'static str = "log";
    const SUMMARY: &'static str = "Writes alarm events as log lines on standard error.";

    fn build(&self, _metrics: &Metrics) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(LogSink))
    }
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
