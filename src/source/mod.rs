//! Sources: where plant data enters the engine.
//!
//! A source `run`s until shutdown, turning whatever it reads (a CSV file, an
//! HTTP request, MQTT messages, Modbus registers, OPC UA values) into [`Batch`]es addressed by
//! asset and signal index, and sends them through the [`Router`], whose
//! bounded channels push back when the engine is busy.
//!
//! **The registry** is the `registry!` list below: a source kind is one
//! module (its settings implementing [`SourceKind`], its running part
//! implementing [`Source`]) plus one line there.

use crate::plant::Plant;
use crate::telemetry::Metrics;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use usan_core::model::{Sample, Timestamp};

/// What sources send: one asset's data, as whole rows or as loose samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Rows of values in the asset's signal order (NaN = missing).
    Rows {
        /// Asset index.
        asset: usize,
        /// `(timestamp, values)` rows.
        rows: Vec<(Timestamp, Vec<f64>)>,
    },
    /// Loose samples of one asset, any signals, any order.
    Samples {
        /// Asset index.
        asset: usize,
        /// The samples.
        samples: Vec<Sample>,
    },
}

impl Batch {
    /// The asset the batch belongs to.
    #[must_use]
    pub fn asset(&self) -> usize {
        match self {
            Batch::Rows { asset, .. } | Batch::Samples { asset, .. } => *asset,
        }
    }

    /// Number of values carried.
    #[must_use]
    pub fn sample_count(&self) -> usize {
        match self {
            Batch::Rows { rows, .. } => rows.iter().map(|(_, v)| v.iter().filter(|x| !x.is_nan()).count()).sum(),
            Batch::Samples { samples, .. } => samples.len(),
        }
    }
}

/// A batch on its way to its worker, with its journal position when it was
/// made durable before it was acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The batch.
    pub batch: Batch,
    /// Its journal entry, released once its samples are committed.
    pub seq: Option<i64>,
}

/// Batches to make durable before their source acknowledges them, and whom
/// to tell (the engine's journal committer takes them).
pub(crate) struct Submission {
    pub batches: Vec<Batch>,
    pub done: oneshot::Sender<Result<(), Refused>>,
}

/// The journal refused a submission (the store could not commit it, e.g. a
/// full disk); nothing of it was accepted and the source must not acknowledge.
#[derive(Debug, Clone, thiserror::Error)]
#[error("samples not accepted: the journal cannot commit ({0})")]
pub struct Refused(pub String);

/// The promise of [`Router::submit`]: resolves once the batches are as safe
/// as the engine's `ack` setting asks (committed, or received).
#[must_use = "a source acknowledges only once its receipt resolves"]
pub struct Receipt(Option<oneshot::Receiver<Result<(), Refused>>>);

impl Receipt {
    /// Wait until the submission is durable (at once when `ack = "received"`).
    ///
    /// # Errors
    /// [`Refused`] when the journal could not commit it, or the engine
    /// stopped before it did.
    pub async fn durable(&mut self) -> Result<(), Refused> {
        match self.0.as_mut() {
            None => Ok(()),
            Some(pending) => {
                let outcome = pending.await.unwrap_or_else(|_| Err(Refused("the engine is stopping".into())));
                self.0 = None;
                outcome
            }
        }
    }
}

/// Sends batches to the worker that owns the asset (sharded by asset index).
#[derive(Clone)]
pub struct Router {
    shards: Arc<Vec<mpsc::Sender<Routed>>>,
    /// The journal committer, when sources acknowledge only what is committed.
    journal: Option<mpsc::Sender<Submission>>,
    metrics: Arc<Metrics>,
}

/// The engine is shutting down; the batch was not accepted.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline is shutting down")]
pub struct Closed;

impl Router {
    /// A router over the workers' input channels; with `journal`, submitted
    /// batches go through the journal committer first.
    #[must_use]
    pub(crate) fn new(
        shards: Arc<Vec<mpsc::Sender<Routed>>>,
        journal: Option<mpsc::Sender<Submission>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Router { shards, journal, metrics }
    }

    /// Send a batch that nobody acknowledges (a file read, a poll), waiting
    /// while the owning worker's queue is full.
    ///
    /// # Errors
    /// [`Closed`] when the pipeline is shutting down.
    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        let count = batch.sample_count() as u64;
        let shard = &self.shards[batch.asset() % self.shards.len()];
        shard.send(Routed { batch, seq: None }).await.map_err(|_| Closed)?;
        self.metrics.samples_in.inc_by(count);
        Ok(())
    }

    /// Hand over batches a source will acknowledge (a pushed request, an
    /// MQTT QoS 1 message), waiting while the engine is busy; acknowledge
    /// once the [`Receipt`] resolves. The batches of one submission are
    /// committed together.
    ///
    /// # Errors
    /// [`Closed`] when the pipeline is shutting down.
    pub async fn submit(&self, batches: Vec<Batch>) -> Result<Receipt, Closed> {
        let Some(journal) = &self.journal else {
            for batch in batches {
                self.send(batch).await?;
            }
            return Ok(Receipt(None));
        };
        if batches.is_empty() {
            return Ok(Receipt(None));
        }
        let (done, receipt) = oneshot::channel();
        journal.send(Submission { batches, done }).await.map_err(|_| Closed)?;
        Ok(Receipt(Some(receipt)))
    }

    /// Batches waiting in the workers' queues, summed.
    #[must_use]
    pub fn queued(&self) -> usize {
        let journal = self.journal.as_ref().map_or(0, |j| j.max_capacity() - j.capacity());
        journal + self.shards.iter().map(|s| s.max_capacity() - s.capacity()).sum::<usize>()
    }
}

/// What a running source is given.
#[derive(Clone)]
pub struct SourceContext {
    /// The configured plant.
    pub plant: Arc<Plant>,
    /// Where batches go.
    pub router: Router,
    /// Becomes `true` at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Per asset, the newest timestamp already in the store: a replay resumes after it.
    pub resume_after: HashMap<usize, Timestamp>,
    /// Engine counters.
    pub metrics: Arc<Metrics>,
}

/// A boxed future, for the object-safe [`Source::run`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The contract every source keeps.
pub trait Source: Send {
    /// Read until the input ends or shutdown is signalled.
    ///
    /// # Errors
    /// When the source cannot go on (unreadable file, bad data); the error
    /// names the source.
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<anyhow::Result<()>>;
}

/// What the registry knows of a source kind, implemented by its settings
/// (the body of a `[[sources]]` table).
pub trait SourceKind {
    /// The `type` that selects it in `[[sources]]`.
    const NAME: &'static str;
    /// What it reads, in one line (the manual's table, `usan check`).
    const SUMMARY: &'static str;

    /// Its configured name.
    fn name(&self) -> &str;

    /// Every problem with the settings, given the configured asset ids.
    fn validate(&self, assets: &HashSet<&str>) -> Vec<String>;

    /// Make its relative paths relative to the configuration file's folder.
    fn resolve_paths(&mut self, _dir: &Path) {}

    /// Build the running source; `None` for a source the API serves.
    ///
    /// # Errors
    /// When the source cannot be prepared (a file whose header lacks the
    /// configured columns, a TLS file that cannot be read).
    fn build(&self, plant: &Plant) -> anyhow::Result<Option<Box<dyn Source>>>;
}

/// Generates the modules, [`SourceConfig`] and its dispatch from one list
/// of `Variant(module::Config)` lines; every `match` names every kind.
macro_rules! registry {
    ($($kind:ident($module:ident :: $config:ident),)+) => {
        $(pub mod $module;)+

        /// `[[sources]]`: one source of any kind, selected by `type`.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        #[allow(clippy::large_enum_variant)] // inert configuration, built once
        pub enum SourceConfig {
            $(
                #[doc = concat!("See [`", stringify!($module), "::", stringify!($config), "`].")]
                $kind($module::$config),
            )+
        }

        impl SourceConfig {
            /// Configured name.
            #[must_use]
            pub fn name(&self) -> &str {
                match self {
                    $(SourceConfig::$kind(c) => c.name(),)+
                }
            }

            /// The kind's `type`.
            #[must_use]
            pub fn kind(&self) -> &'static str {
                match self {
                    $(SourceConfig::$kind(_) => <$module::$config as SourceKind>::NAME,)+
                }
            }

            /// Every problem with the settings, given the configured asset ids.
            #[must_use]
            pub fn validate(&self, assets: &HashSet<&str>) -> Vec<String> {
                match self {
                    $(SourceConfig::$kind(c) => SourceKind::validate(c, assets),)+
                }
            }

            pub(crate) fn resolve_paths(&mut self, dir: &Path) {
                match self {
                    $(SourceConfig::$kind(c) => c.resolve_paths(dir),)+
                }
            }

            /// Build the running source; `None` for sources served by the API.
            ///
            /// # Errors
            /// See [`SourceKind::build`].
            pub fn build(&self, plant: &Plant) -> anyhow::Result<Option<Box<dyn Source>>> {
                match self {
                    $(SourceConfig::$kind(c) => c.build(plant),)+
                }
            }
        }

        /// Every source kind's settings fields: `(type, fields)`, in
        /// registry order (the manual's reference is checked against them).
        #[must_use]
        pub fn settings_fields() -> Vec<(&'static str, &'static [&'static str])> {
            vec![$((<$module::$config as SourceKind>::NAME, usan_core::fields::fields_of::<$module::$config>()),)+]
        }

        /// Every source kind, in registry order: `(type, summary)`.
        #[must_use]
        pub fn kinds() -> Vec<(&'static str, &'static str)> {
            vec![$((<$module::$config as SourceKind>::NAME, <$module::$config as SourceKind>::SUMMARY),)+]
        }
    };
}

// The registry: one line per source kind, `Variant(module::Config)`.
registry! {
    File(file::FileSourceConfig),
    Http(http::HttpSourceConfig),
    Mqtt(mqtt::MqttSourceConfig),
    Modbus(modbus::ModbusSourceConfig),
    Opcua(opcua::OpcUaSourceConfig),
}

/// Send each asset's samples as one batch; `false` when the pipeline is shutting down.
pub(crate) async fn send_per_asset(router: &Router, per_asset: std::collections::BTreeMap<usize, Vec<Sample>>) -> bool {
    for (asset, samples) in per_asset {
        if router.send(Batch::Samples { asset, samples }).await.is_err() {
            return false;
        }
    }
    true
}
