//! usan: the engine behind the `usan` binary.
//!
//! The algorithms live in `usan-core`; this crate is everything with IO,
//! along the one data path: [`source`]s → the engine's per-asset workers
//! ([`pipeline`]) → alarms → [`sink`]s and the [`store`], with the HTTP
//! [`api`] and dashboard beside it and the [`cli`] commands on top.
//!
//! - [`config`]: the TOML file, validated whole, built into the parts below;
//! - [`plant`]: the configured assets, signals and detectors, indexed;
//! - [`common`]: value types the configuration, sources and sinks share;
//! - [`protocol`]: MQTT and Sparkplug B plumbing shared by sources and sinks;
//! - [`telemetry`]: the engine's counters, exposed to Prometheus.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod common;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod pipeline;
pub mod plant;
pub mod protocol;
pub mod sink;
pub mod source;
pub mod store;
pub mod telemetry;
