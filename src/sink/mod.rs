//! Sinks: where findings and alarm events go besides the store.
//!
//! A sink `write`s batches of [`Event`]s; sinks run on their own task behind
//! a bounded channel. A sink slower than the events fills the channel and
//! then holds the workers back (backpressure): events are never dropped.
//!
//! **The registry** is the `registry!` list below: a sink kind is one
//! module (its settings implementing [`SinkKind`], its running part
//! implementing [`Sink`]) plus one line there.

pub mod spool;

use crate::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use std::path::Path;
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

/// The contract every sink keeps.
pub trait Sink: Send {
    /// Deliver a batch of events.
    ///
    /// # Errors
    /// When the destination refuses; the runtime logs and goes on.
    fn write(&mut self, events: &[Event]) -> anyhow::Result<()>;
}

/// What the registry knows of a sink kind, implemented by its settings (the
/// body of a `[[sinks]]` table).
pub trait SinkKind {
    /// The `type` that selects it in `[[sinks]]`.
    const NAME: &'static str;
    /// Where it sends events, in one line (the manual's table, `usan check`).
    const SUMMARY: &'static str;

    /// Every problem with the settings.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }

    /// Make its relative paths relative to the configuration file's folder.
    fn resolve_paths(&mut self, _dir: &Path) {}

    /// Build the sink.
    ///
    /// # Errors
    /// When its file or spool cannot be opened. A forwarding sink starts its
    /// forwarder on the current Tokio runtime.
    fn build(&self, metrics: &Metrics) -> anyhow::Result<Box<dyn Sink>>;
}

/// Generates the modules, [`SinkConfig`] and its dispatch from one list of
/// `Variant(module::Config)` lines; every `match` names every kind.
macro_rules! registry {
    ($($kind:ident($module:ident :: $config:ident),)+) => {
        $(pub mod $module;)+

        /// `[[sinks]]`: one sink of any kind, selected by `type`.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        #[allow(clippy::large_enum_variant)] // inert configuration, built once
        pub enum SinkConfig {
            $(
                #[doc = concat!("See [`", stringify!($module), "::", stringify!($config), "`].")]
                $kind($module::$config),
            )+
        }

        impl SinkConfig {
            /// The kind's `type`.
            #[must_use]
            pub fn kind(&self) -> &'static str {
                match self {
                    $(SinkConfig::$kind(_) => <$module::$config as SinkKind>::NAME,)+
                }
            }

            /// Every problem with the settings.
            #[must_use]
            pub fn validate(&self) -> Vec<String> {
                match self {
                    $(SinkConfig::$kind(c) => SinkKind::validate(c),)+
                }
            }

            pub(crate) fn resolve_paths(&mut self, dir: &Path) {
                match self {
                    $(SinkConfig::$kind(c) => c.resolve_paths(dir),)+
                }
            }

            /// Build the sink.
            ///
            /// # Errors
            /// See [`SinkKind::build`].
            pub fn build(&self, metrics: &Metrics) -> anyhow::Result<Box<dyn Sink>> {
                match self {
                    $(SinkConfig::$kind(c) => c.build(metrics),)+
                }
            }
        }

        /// Every sink kind's settings fields: `(type, fields)`, in
        /// registry order (the manual's reference is checked against them).
        #[must_use]
        pub fn settings_fields() -> Vec<(&'static str, &'static [&'static str])> {
            vec![$((<$module::$config as SinkKind>::NAME, usan_core::fields::fields_of::<$module::$config>()),)+]
        }

        /// Every sink kind, in registry order: `(type, summary)`.
        #[must_use]
        pub fn kinds() -> Vec<(&'static str, &'static str)> {
            vec![$((<$module::$config as SinkKind>::NAME, <$module::$config as SinkKind>::SUMMARY),)+]
        }
    };
}

// The registry: one line per sink kind, `Variant(module::Config)`.
registry! {
    Log(log::LogSinkConfig),
    Jsonl(jsonl::JsonlSinkConfig),
    Mqtt(mqtt::MqttSinkConfig),
    Webhook(webhook::WebhookSinkConfig),
}
