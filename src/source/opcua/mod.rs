//! OPC UA client: subscribe to (or poll) variables of a server.
//!
//! ```toml
//! [[sources]]
//! type = "opcua"
//! name = "line-2-opc"
//! endpoint = "opc.tcp://10.0.0.7:4840/"
//! security_policy = "None"          # or Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss
//! security_mode = "none"            # or sign, sign_and_encrypt
//! # username = "usan", password_env = "OPCUA_PASSWORD"   (anonymous without)
//! pki_dir = "pki"                   # usan's certificate (made when missing) and trusted servers
//! mode = "subscribe"                # or "poll"; a server refusing subscriptions is polled anyway
//! publishing_interval = "1s"
//! sampling_interval = "500ms"
//! poll = "1s"
//! nodes = [
//!   { node = "ns=2;s=Pump1.Temperature", asset = "pump-1", signal = "temp" },
//! ]
//! # and/or: every variable under a folder whose browse path (relative to the
//! # folder, `.`-joined: `Temperature`, `Motor.Current`) is a signal of the asset
//! browse = [{ root = "ns=2;s=Pump2", asset = "pump-2" }]
//! ```
//!
//! `usan opcua browse ENDPOINT` prints a server's address space (and, with
//! `--asset`, `nodes` lines ready to paste). Browsed folders are browsed again
//! on every new session, so variables a restarted server added are picked up.
//!
//! Values arrive with the server's source timestamp (server timestamp, then
//! arrival time, when absent) and its status code as quality: good, uncertain
//! or bad (bad values are kept, never scored). A lost connection is retried
//! by the session, which recovers the subscriptions (transferred, or created
//! again on a new session); the outage is counted like any source's. Text and
//! other non-numeric values are counted by cause and skipped. usan only reads
//! and subscribes: it never writes to the server.

pub mod browse;

use super::{BoxFuture, Source, SourceContext, SourceKind};
use crate::common::CauseLog;
use crate::common::HumanDuration;
use crate::plant::Plant;
use crate::telemetry::LinkStats;
use anyhow::Context as _;
use futures_util::StreamExt;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Session, SessionPollResult};
use opcua::types::{
    DataValue, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringParameters, NodeId, ReadValueId,
    TimestampsToReturn, UserTokenPolicy, Variant,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use usan_core::model::{Quality, Sample, Timestamp};

/// `[[sources]] type = "opcua"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaSourceConfig {
    /// Source name.
    pub name: String,
    /// `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// Security policy name as OPC UA spells it (`None`, `Basic256Sha256`, ...).
    #[serde(default = "default_policy")]
    pub security_policy: String,
    /// `none`, `sign` or `sign_and_encrypt`.
    #[serde(default = "default_mode")]
    pub security_mode: String,
    /// User name; anonymous without.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (prefer `password_env`).
    #[serde(default)]
    pub password: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// usan's certificate and key (created when missing) and the trusted and rejected server certificates.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// Trust any server certificate (tests and first commissioning only).
    #[serde(default)]
    pub trust_server_certs: bool,
    /// `subscribe` (monitored items) or `poll` (periodic reads).
    #[serde(default = "default_opc_mode")]
    pub mode: String,
    /// Subscription publishing interval.
    #[serde(default = "default_publishing")]
    pub publishing_interval: HumanDuration,
    /// Monitored items' sampling interval.
    #[serde(default = "default_sampling")]
    pub sampling_interval: HumanDuration,
    /// Absolute deadband of monitored items (0 reports every change).
    #[serde(default)]
    pub deadband: f64,
    /// Read period in `poll` mode.
    #[serde(default = "default_poll")]
    pub poll: HumanDuration,
    /// The variables, one by one.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Folders whose variables are an asset's signals, by browse path.
    #[serde(default)]
    pub browse: Vec<BrowseRootConfig>,
}

/// A folder (object) whose variables are found by browsing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowseRootConfig {
    /// Node id of the folder.
    pub root: String,
    /// Asset id; its signals are matched to browse paths below the folder.
    pub asset: String,
    /// How many levels below the folder to browse.
    #[serde(default = "default_depth")]
    pub depth: usize,
}

/// One variable and where its values go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id in OPC UA text form (`ns=2;s=Pump1.Temperature`, `i=2258`).
    pub node: String,
    /// Asset id.
    pub asset: String,
    /// Signal name.
    pub signal: String,
}

fn default_policy() -> String {
    "None".to_string()
}
fn default_mode() -> String {
    "none".to_string()
}
pub(crate) fn default_pki_dir() -> PathBuf {
    PathBuf::from("pki")
}
pub(crate) fn default_opc_mode() -> String {
    "subscribe".to_string()
}
pub(crate) fn default_publishing() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
pub(crate) fn default_sampling() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_depth() -> usize {
    4
}
pub(crate) fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// The longest array usan decodes (notifications in one publish response, results of one call).
const MAX_ARRAY_LENGTH: usize = 100_000;
/// Notifications the server may put into one publish response: about 200 kB,
/// within the message size servers allow by default (async-opcua's: 320 kB);
/// the server sends the rest in the next responses.
const MAX_NOTIFICATIONS_PER_PUBLISH: u32 = 5_000;
/// Items per CreateMonitoredItems or Read call: servers limit operations per call
/// (often to 1,000 or fewer), so large lists go in several calls.
const ITEMS_PER_CALL: usize = 500;

const POLICIES: &[&str] = &["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"];

fn security_mode(text: &str) -> Option<MessageSecurityMode> {
    match text {
        "none" => Some(MessageSecurityMode::None),
        "sign" => Some(MessageSecurityMode::Sign),
        "sign_and_encrypt" => Some(MessageSecurityMode::SignAndEncrypt),
        _ => None,
    }
}

impl SourceKind for OpcUaSourceConfig {
    const NAME: &'static str = "opcua";
    const SUMMARY: &'static str = "Subscribes to (or polls) an OPC UA server's variables.";

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, assets: &HashSet<&str>) -> Vec<String> {
        let at = format!("source `{}`", self.name);
        let mut problems = Vec::new();
        if !self.endpoint.starts_with("opc.tcp://") {
            problems.push(format!("{at}: endpoint `{}` is not opc.tcp://host:port", self.endpoint));
        }
        if !POLICIES.contains(&self.security_policy.as_str()) {
            problems.push(format!("{at}: security_policy `{}`: one of {}", self.security_policy, POLICIES.join(", ")));
        }
        match security_mode(&self.security_mode) {
            None => {
                problems.push(format!("{at}: security_mode `{}`: none, sign or sign_and_encrypt", self.security_mode))
            }
            Some(MessageSecurityMode::None) if self.security_policy != "None" => {
                problems.push(format!(
                    "{at}: security_policy {} needs security_mode sign or sign_and_encrypt",
                    self.security_policy
                ));
            }
            Some(m) if m != MessageSecurityMode::None && self.security_policy == "None" => {
                problems.push(format!(
                    "{at}: security_mode {} needs a security_policy other than None",
                    self.security_mode
                ));
            }
            Some(_) => {}
        }
        if self.password.is_some() && self.password_env.is_some() {
            problems.push(format!("{at}: give `password` or `password_env`, not both"));
        }
        if !matches!(self.mode.as_str(), "subscribe" | "poll") {
            problems.push(format!("{at}: mode `{}`: subscribe or poll", self.mode));
        }
        if self.nodes.is_empty() && self.browse.is_empty() {
            problems.push(format!("{at}: no nodes and nothing to browse"));
        }
        if !(self.deadband.is_finite() && self.deadband >= 0.0) {
            problems.push(format!("{at}: deadband must be zero or positive"));
        }
        let ms = Duration::from_millis;
        let ranges = [
            self.publishing_interval.out_of("publishing_interval", ms(10), ms(86_400_000)),
            self.sampling_interval.out_of("sampling_interval", ms(0), ms(86_400_000)),
            self.poll.out_of("poll", ms(10), ms(86_400_000)),
        ];
        problems.extend(ranges.into_iter().flatten().map(|p| format!("{at}: {p}")));
        for (i, n) in self.nodes.iter().enumerate() {
            if NodeId::from_str(&n.node).is_err() {
                problems.push(format!("{at}, nodes[{i}]: `{}` is not an OPC UA node id", n.node));
            }
            if !assets.contains(n.asset.as_str()) {
                problems.push(format!("{at}, nodes[{i}]: asset `{}` is not configured", n.asset));
            }
        }
        for (i, b) in self.browse.iter().enumerate() {
            if NodeId::from_str(&b.root).is_err() {
                problems.push(format!("{at}, browse[{i}]: `{}` is not an OPC UA node id", b.root));
            }
            if !assets.contains(b.asset.as_str()) {
                problems.push(format!("{at}, browse[{i}]: asset `{}` is not configured", b.asset));
            }
            if b.depth == 0 {
                problems.push(format!("{at}, browse[{i}]: depth must be at least 1"));
            }
        }
        problems
    }

    fn resolve_paths(&mut self, dir: &std::path::Path) {
        if self.pki_dir.is_relative() {
            self.pki_dir = dir.join(&self.pki_dir);
        }
    }

    fn build(&self, plant: &Plant) -> anyhow::Result<Option<Box<dyn Source>>> {
        Ok(Some(Box::new(OpcUaSource::new(self, plant)?)))
    }
}

/// A value's number, by its variant; `None` for text and other kinds.
fn number(value: &Variant) -> Option<f64> {
    match value {
        Variant::Boolean(v) => Some(f64::from(u8::from(*v))),
        Variant::SByte(v) => Some(f64::from(*v)),
        Variant::Byte(v) => Some(f64::from(*v)),
        Variant::Int16(v) => Some(f64::from(*v)),
        Variant::UInt16(v) => Some(f64::from(*v)),
        Variant::Int32(v) => Some(f64::from(*v)),
        Variant::UInt32(v) => Some(f64::from(*v)),
        Variant::Int64(v) => Some(*v as f64),
        Variant::UInt64(v) => Some(*v as f64),
        Variant::Float(v) => Some(f64::from(*v)),
        Variant::Double(v) => Some(*v),
        _ => None,
    }
}

/// A data value as a sample of `signal`, or the cause it is not one.
fn to_sample(value: &DataValue, signal: usize, now_ms: i64) -> Result<Sample, &'static str> {
    let quality = match value.status {
        None => Quality::Good,
        Some(s) if s.is_good() => Quality::Good,
        Some(s) if s.is_uncertain() => Quality::Uncertain,
        Some(_) => Quality::Bad,
    };
    let ts = value.source_timestamp.or(value.server_timestamp).map_or(now_ms, |t| t.as_chrono().timestamp_millis());
    let number = match value.value.as_ref() {
        Some(v) => number(v),
        None => None,
    };
    match (number, quality) {
        (Some(v), _) if v.is_finite() => Ok(Sample { signal, ts: Timestamp(ts), value: v, quality }),
        // A bad value carries no number: kept as a bad sample (missing).
        (_, Quality::Bad) => Ok(Sample { signal, ts: Timestamp(ts), value: f64::NAN, quality }),
        _ => Err("value is not a number"),
    }
}

/// A variable usan reads and the signal its values go to.
#[derive(Debug)]
struct Watched {
    node: NodeId,
    asset: usize,
    signal: usize,
}

/// A browsed folder, resolved against the plant.
struct BrowseRoot {
    root: NodeId,
    asset: usize,
    asset_id: String,
    signals: HashMap<String, usize>,
    depth: usize,
}

/// A running OPC UA client.
pub struct OpcUaSource {
    config: OpcUaSourceConfig,
    /// The `nodes` of the configuration.
    explicit: Vec<Arc<Watched>>,
    /// The `browse` folders of the configuration.
    roots: Vec<BrowseRoot>,
}

impl OpcUaSource {
    /// Prepare the client.
    ///
    /// # Errors
    /// A node id that does not parse, an asset or signal that is not configured.
    pub fn new(config: &OpcUaSourceConfig, plant: &Plant) -> anyhow::Result<OpcUaSource> {
        let asset_of =
            |id: &str| plant.asset_index.get(id).copied().with_context(|| format!("asset `{id}` is not configured"));
        let node_id =
            |text: &str| NodeId::from_str(text).map_err(|_| anyhow::anyhow!("`{text}` is not an OPC UA node id"));
        let mut explicit = Vec::new();
        for n in &config.nodes {
            let asset = asset_of(&n.asset)?;
            let signal = *plant.assets[asset]
                .signal_index
                .get(&n.signal)
                .with_context(|| format!("asset `{}` has no signal `{}`", n.asset, n.signal))?;
            explicit.push(Arc::new(Watched { node: node_id(&n.node)?, asset, signal }));
        }
        let mut roots = Vec::new();
        for b in &config.browse {
            let asset = asset_of(&b.asset)?;
            let signals = plant.assets[asset].signal_index.iter().map(|(name, &i)| (name.clone(), i)).collect();
            roots.push(BrowseRoot {
                root: node_id(&b.root)?,
                asset,
                asset_id: b.asset.clone(),
                signals,
                depth: b.depth,
            });
        }
        Ok(OpcUaSource { config: config.clone(), explicit, roots })
    }

    /// The configured variables and those found under the browsed folders.
    async fn watch_list(&self, session: &Session) -> anyhow::Result<Vec<Arc<Watched>>> {
        let mut list = self.explicit.clone();
        for root in &self.roots {
            let found = browse::browse(session, &root.root, root.depth).await?;
            let variables: Vec<&browse::Browsed> =
                found.iter().filter(|n| n.class == opcua::types::NodeClass::Variable).collect();
            let before = list.len();
            for variable in &variables {
                if let Some(&signal) = root.signals.get(&variable.path.join(".")) {
                    list.push(Arc::new(Watched { node: variable.node.clone(), asset: root.asset, signal }));
                }
            }
            let matched = list.len() - before;
            tracing::debug!(
                source = %self.config.name,
                "browsed {}: {} variables, {matched} are signals of asset `{}`",
                root.root, variables.len(), root.asset_id
            );
            if matched == 0 {
                tracing::warn!(
                    source = %self.config.name,
                    "no variable under {} matches a signal of asset `{}` (signals are matched to browse paths \
                     like `Temperature` or `Motor.Current`; `usan opcua browse` shows them)",
                    root.root, root.asset_id
                );
            }
        }
        if !self.roots.is_empty() {
            tracing::info!(
                source = %self.config.name,
                "{} variables to read ({} found by browsing {} folders)",
                list.len(), list.len() - self.explicit.len(), self.roots.len()
            );
        }
        Ok(list)
    }
}

impl OpcUaSourceConfig {
    /// The client, with usan's certificate store and the session's retry policy.
    pub(crate) fn client(&self) -> anyhow::Result<opcua::client::Client> {
        // Sources sharing a pki_dir would race to make its key pair on first start
        // (one loses and runs without a certificate): one at a time.
        static MAKING_CLIENTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = MAKING_CLIENTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ClientBuilder::new()
            .application_name("usan")
            .application_uri("urn:usan")
            .product_uri("urn:usan")
            .pki_dir(self.pki_dir.clone())
            .create_sample_keypair(true)
            .trust_server_certs(self.trust_server_certs)
            .session_retry_limit(-1)
            .session_retry_initial(Duration::from_millis(500))
            .session_retry_max(Duration::from_secs(10))
            .keep_alive_interval(Duration::from_secs(2))
            // Plants have thousands of tags: the defaults (arrays of 1,000,
            // messages of 320 kB) refuse a publish response of a large subscription.
            .max_array_length(MAX_ARRAY_LENGTH)
            .max_message_size(64 << 20)
            .max_chunk_count(2048)
            .client()
            .map_err(|e| anyhow::anyhow!("source `{}`: OPC UA client settings: {e:?}", self.name))
    }

    /// The user: anonymous, or the user name with its password.
    pub(crate) fn identity(&self) -> anyhow::Result<IdentityToken> {
        let password = crate::common::password(self.password.as_ref(), self.password_env.as_ref())?;
        Ok(match &self.username {
            Some(user) => IdentityToken::new_user_name(user.clone(), password),
            None => IdentityToken::Anonymous,
        })
    }

    /// The endpoint to look for: URL, security policy and mode, user token kind.
    pub(crate) fn endpoint(&self) -> (&str, &str, MessageSecurityMode, UserTokenPolicy) {
        let mode = security_mode(&self.security_mode).unwrap_or(MessageSecurityMode::None);
        let token = match &self.username {
            Some(_) => {
                UserTokenPolicy { token_type: opcua::types::UserTokenType::UserName, ..UserTokenPolicy::anonymous() }
            }
            None => UserTokenPolicy::anonymous(),
        };
        (self.endpoint.as_str(), self.security_policy.as_str(), mode, token)
    }
}

impl Source for OpcUaSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move { self.run_until_shutdown(context).await })
    }
}

/// Aborts a task when dropped (the session driver ends with the source).
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Values from the session's callbacks and reads.
type Values = mpsc::Sender<(Arc<Watched>, DataValue)>;

impl OpcUaSource {
    async fn run_until_shutdown(self, mut context: SourceContext) -> anyhow::Result<()> {
        let name = self.config.name.clone();
        let stats = context.metrics.source(&name);
        let mut log = CauseLog::new(&name);
        let mut client = self.config.client()?;
        // Values go to the pipeline from their own task: this one may be waiting on
        // the session (subscribing) while the session waits for room in the queue.
        let (values_tx, values) = mpsc::channel::<(Arc<Watched>, DataValue)>(16_384);
        let _forwarder =
            AbortOnDrop(tokio::spawn(forward(values, context.router.clone(), Arc::clone(&stats), name.clone())));
        let mut down_since = Instant::now();

        // The first connection: retried until it works or shutdown.
        let (session, event_loop) = loop {
            let connecting = client.connect_to_matching_endpoint(self.config.endpoint(), self.config.identity()?);
            let attempt = tokio::select! {
                attempt = connecting => attempt,
                _ = context.shutdown.changed() => return Ok(()),
            };
            match attempt {
                Ok(pair) => break pair,
                Err(e) => {
                    stats.connect_failed("cannot connect");
                    log.note("cannot connect", &format!("{}: {e}", self.config.endpoint));
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = context.shutdown.changed() => return Ok(()),
                    }
                }
            }
        };
        // The session's event loop must run while this task awaits the
        // session (subscribing, reading): it gets its own task and reports
        // what matters here.
        let (poll_tx, mut polls) = mpsc::channel::<Result<SessionPollResult, opcua::types::StatusCode>>(64);
        let driver = tokio::spawn(async move {
            let mut stream = event_loop.enter().boxed();
            while let Some(event) = stream.next().await {
                let worth_telling = matches!(
                    event,
                    Ok(SessionPollResult::Reconnected(_)
                        | SessionPollResult::ConnectionLost(_)
                        | SessionPollResult::ReconnectFailed(_))
                        | Err(_)
                );
                if worth_telling && poll_tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        let _abort_driver = AbortOnDrop(driver);
        // What the poll timer reads (see `start`).
        let mut polled: Vec<Arc<Watched>> = Vec::new();
        let mut ready = false;
        let mut poll_timer = tokio::time::interval(self.config.poll.0);
        loop {
            tokio::select! {
                _ = context.shutdown.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
                    return Ok(());
                }
                event = polls.recv() => match event {
                    Some(Ok(SessionPollResult::Reconnected(how))) => {
                        // A new session (the server restarted): async-opcua 0.19 recreates
                        // the subscriptions but does not resume publishing on them, so
                        // browse and subscribe afresh.
                        if matches!(how, opcua::client::SessionConnectMode::NewSession(_)) && ready {
                            ready = false;
                        }
                        stats.connected.store(true, Ordering::Relaxed);
                        if stats.disconnects.get() > 0 {
                            stats.outage_ms.inc_by(down_since.elapsed().as_millis() as u64);
                            tracing::info!(source = %name, "OPC UA session back after {:.1?}", down_since.elapsed());
                        }
                        if !ready {
                            match self.start(&session, &values_tx, &stats).await {
                                Ok(list) => {
                                    polled = list;
                                    ready = true;
                                }
                                Err(e) => tracing::error!(source = %name, "cannot subscribe: {e:#}"),
                            }
                        }
                    }
                    Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                        if stats.connected.swap(false, Ordering::Relaxed) {
                            stats.disconnects.inc_by(1);
                            down_since = Instant::now();
                            tracing::warn!(source = %name, "OPC UA connection lost: {status}; reconnecting");
                        }
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(status))) => {
                        let (cause, detail) = why_not_connected(status, &self.config.pki_dir);
                        stats.connect_failed(cause);
                        log.note(cause, &detail);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => {
                        log.note("session ended", &status.to_string());
                        anyhow::bail!("source `{name}`: OPC UA session ended: {status}");
                    }
                    None => anyhow::bail!("source `{name}`: OPC UA session ended"),
                },
                _ = poll_timer.tick(), if ready && !polled.is_empty() => {
                    read_all(&session, &polled, &values_tx, &stats, &mut log).await;
                }
            }
        }
    }

    /// Find the variables; in subscribe mode, create the subscription and its
    /// monitored items. Returns what must be polled from now on: everything in
    /// poll mode; in subscribe mode, what the server would not monitor (all of
    /// it when it refuses subscriptions).
    async fn start(
        &self,
        session: &Arc<Session>,
        values: &Values,
        stats: &Arc<LinkStats>,
    ) -> anyhow::Result<Vec<Arc<Watched>>> {
        let watched = self.watch_list(session).await?;
        if self.config.mode != "subscribe" || watched.is_empty() {
            return Ok(watched);
        }
        // async-opcua chooses the client handles itself: values are routed by node id
        // (one node may feed several signals).
        let mut by_node: HashMap<NodeId, Vec<Arc<Watched>>> = HashMap::new();
        for target in &watched {
            by_node.entry(target.node.clone()).or_default().push(Arc::clone(target));
        }
        let tx = values.clone();
        let stats = Arc::clone(stats);
        let dropped_log = Arc::new(std::sync::Mutex::new(CauseLog::new(&self.config.name)));
        // On a multi-threaded runtime a full queue holds the session's event loop
        // (no new publish requests: the server keeps the values queued, as OPC UA
        // intends); elsewhere the callback must not block, and a value that does
        // not fit is counted and logged.
        let may_block = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let callback = DataChangeCallback::new(move |value, item| {
            let Some(targets) = by_node.get(&item.item_to_monitor().node_id) else { return };
            for target in targets {
                let sent = match tx.try_send((Arc::clone(target), value.clone())) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(pending)) if may_block => {
                        tokio::task::block_in_place(|| tx.blocking_send(pending)).is_ok()
                    }
                    Err(_) => false,
                };
                if !sent {
                    stats.malformed("pipeline busy: OPC UA value dropped");
                    if let Ok(mut log) = dropped_log.lock() {
                        log.note("pipeline busy: OPC UA value dropped", "");
                    }
                }
            }
        });
        let publishing = self.config.publishing_interval.0;
        let subscription = match session
            .create_subscription(publishing, 30, 10, MAX_NOTIFICATIONS_PER_PUBLISH, 0, true, callback)
            .await
        {
            Ok(id) => id,
            Err(status) => {
                tracing::warn!(
                    source = %self.config.name,
                    "the server refuses subscriptions ({status}); polling every {:?} instead",
                    self.config.poll.0
                );
                return Ok(watched);
            }
        };
        let filter = if self.config.deadband > 0.0 {
            let deadband = opcua::types::DataChangeFilter {
                trigger: opcua::types::DataChangeTrigger::StatusValue,
                deadband_type: opcua::types::DeadbandType::Absolute as u32,
                deadband_value: self.config.deadband,
            };
            opcua::types::ExtensionObject::from_message(deadband)
        } else {
            opcua::types::ExtensionObject::null()
        };
        let items: Vec<MonitoredItemCreateRequest> = watched
            .iter()
            .map(|target| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(target.node.clone()),
                monitoring_mode: opcua::types::MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: 0,
                    sampling_interval: self.config.sampling_interval.0.as_secs_f64() * 1000.0,
                    filter: filter.clone(),
                    queue_size: 100,
                    discard_oldest: true,
                },
            })
            .collect();
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(ITEMS_PER_CALL) {
            let created = session
                .create_monitored_items(subscription, TimestampsToReturn::Both, chunk.to_vec())
                .await
                .map_err(|e| anyhow::anyhow!("create monitored items: {e}"))?;
            results.extend(created);
        }
        use opcua::types::StatusCode as S;
        let mut polled = Vec::new();
        for (result, target) in results.iter().zip(&watched) {
            let status = result.result.status_code;
            if status.is_good() {
                continue;
            }
            if matches!(status, S::BadNodeIdUnknown | S::BadNodeIdInvalid | S::BadAttributeIdInvalid) {
                tracing::warn!(source = %self.config.name, "cannot monitor {}: {status}", target.node);
            } else {
                tracing::warn!(source = %self.config.name, "cannot monitor {}: {status}; polling it", target.node);
                polled.push(Arc::clone(target));
            }
        }
        Ok(polled)
    }
}

/// A failed connection's cause, with what to do about a refused server certificate.
fn why_not_connected(status: opcua::types::StatusCode, pki_dir: &std::path::Path) -> (&'static str, String) {
    use opcua::types::StatusCode as S;
    if matches!(status, S::BadCertificateUntrusted | S::BadSecurityChecksFailed) {
        let dir = pki_dir.display();
        let hint = format!(
            "{status}: the server's certificate is not trusted; check it, then move it from {dir}/rejected \
             to {dir}/trusted (usan picks it up on its next attempt)"
        );
        ("server certificate not trusted", hint)
    } else if status == S::BadCertificateHostNameInvalid {
        ("server certificate names another host", format!("{status}: connect by a host name the certificate lists"))
    } else if matches!(status, S::BadUserAccessDenied | S::BadIdentityTokenInvalid | S::BadIdentityTokenRejected) {
        ("login refused", format!("{status}: check username and password"))
    } else {
        ("cannot reconnect", status.to_string())
    }
}

/// One read of every variable (poll mode).
async fn read_all(
    session: &Arc<Session>,
    watched: &[Arc<Watched>],
    values: &Values,
    stats: &Arc<LinkStats>,
    log: &mut CauseLog,
) {
    if watched.is_empty() {
        return;
    }
    for chunk in watched.chunks(ITEMS_PER_CALL) {
        let reads: Vec<ReadValueId> = chunk.iter().map(|w| ReadValueId::from(w.node.clone())).collect();
        match session.read(&reads, TimestampsToReturn::Both, 0.0).await {
            Ok(results) => {
                for (target, value) in chunk.iter().zip(results) {
                    if values.try_send((Arc::clone(target), value)).is_err() {
                        stats.malformed("pipeline busy: OPC UA value dropped");
                    }
                }
            }
            Err(status) => {
                stats.malformed("read failed");
                log.note("read failed", &status.to_string());
            }
        }
    }
}

/// Move values from the session to the pipeline, in batches, until either side closes.
async fn forward(
    mut values: mpsc::Receiver<(Arc<Watched>, DataValue)>,
    router: super::Router,
    stats: Arc<LinkStats>,
    name: String,
) {
    let mut log = CauseLog::new(&name);
    while let Some(first) = values.recv().await {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match values.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if !route(batch, &router, &stats, &mut log).await {
            return;
        }
    }
}

/// Route values; `false` when the pipeline is shutting down.
async fn route(
    batch: Vec<(Arc<Watched>, DataValue)>,
    router: &super::Router,
    stats: &Arc<LinkStats>,
    log: &mut CauseLog,
) -> bool {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut per_asset: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    stats.messages.inc_by(batch.len() as u64);
    for (target, value) in batch {
        match to_sample(&value, target.signal, now_ms) {
            Ok(sample) => per_asset.entry(target.asset).or_default().push(sample),
            Err(cause) => {
                stats.malformed(cause);
                log.note(cause, &target.node.to_string());
            }
        }
    }
    super::send_per_asset(router, per_asset).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{DateTime, StatusCode};

    #[test]
    fn values_become_samples_with_their_status_as_quality() {
        let at = DateTime::from(chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc());
        let value = |v: Variant, status: StatusCode| DataValue {
            value: Some(v),
            status: Some(status),
            source_timestamp: Some(at),
            ..DataValue::default()
        };
        let ts = 1_767_225_600_000;
        let good = to_sample(&value(Variant::Float(1.5), StatusCode::Good), 3, 0).unwrap();
        assert_eq!((good.signal, good.ts.0, good.value, good.quality), (3, ts, 1.5, Quality::Good));
        let uncertain = to_sample(&value(Variant::Int32(-7), StatusCode::UncertainLastUsableValue), 0, 0).unwrap();
        assert_eq!((uncertain.value, uncertain.quality), (-7.0, Quality::Uncertain));
        let bad = to_sample(&value(Variant::Empty, StatusCode::BadCommunicationError), 0, 0).unwrap();
        assert!(bad.value.is_nan() && bad.quality == Quality::Bad);
        assert_eq!(to_sample(&value(Variant::from("on"), StatusCode::Good), 0, 0), Err("value is not a number"));
        let no_time = DataValue { value: Some(Variant::Boolean(true)), ..DataValue::default() };
        assert_eq!(to_sample(&no_time, 0, 42).unwrap().ts.0, 42);
    }

    #[test]
    fn settings_are_checked_together() {
        let config: OpcUaSourceConfig = toml::from_str(
            r#"
            name = "opc"
            endpoint = "http://x"
            security_policy = "Basic256Sha256"
            mode = "guess"
            nodes = [{ node = "not a node", asset = "ghost", signal = "x" }]
            "#,
        )
        .unwrap();
        let problems = config.validate(&HashSet::from(["pump"])).join("\n");
        for expected in
            ["opc.tcp://", "needs security_mode", "mode `guess`", "not an OPC UA node id", "`ghost` is not configured"]
        {
            assert!(problems.contains(expected), "missing {expected:?} in\n{problems}");
        }
    }
}
