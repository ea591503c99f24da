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
//! mode = "subscribe"                # or "poll" for servers without subscriptions
//! publishing_interval = "1s"
//! sampling_interval = "500ms"
//! poll = "1s"
//! nodes = [
//!   { node = "ns=2;s=Pump1.Temperature", asset = "pump-1", signal = "temp" },
//! ]
//! ```
//!
//! Values arrive with the server's source timestamp (server timestamp, then
//! arrival time, when absent) and its status code as quality: good, uncertain
//! or bad (bad values are kept, never scored). A lost connection is retried
//! by the session, which recovers the subscriptions (transferred, or created
//! again on a new session); the outage is counted like any source's. Text and
//! other non-numeric values are counted by cause and skipped. usan only reads
//! and subscribes: it never writes to the server.

use super::{BoxFuture, CauseLog, Source, SourceContext};
use crate::config::{HumanDuration, Plant};
use crate::metrics::LinkStats;
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
    /// The variables.
    pub nodes: Vec<NodeConfig>,
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
fn default_pki_dir() -> PathBuf {
    PathBuf::from("pki")
}
fn default_opc_mode() -> String {
    "subscribe".to_string()
}
fn default_publishing() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_sampling() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

const POLICIES: &[&str] = &["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"];

fn security_mode(text: &str) -> Option<MessageSecurityMode> {
    match text {
        "none" => Some(MessageSecurityMode::None),
        "sign" => Some(MessageSecurityMode::Sign),
        "sign_and_encrypt" => Some(MessageSecurityMode::SignAndEncrypt),
        _ => None,
    }
}

impl OpcUaSourceConfig {
    /// Every problem with the settings, given the configured asset ids.
    #[must_use]
    pub fn validate(&self, assets: &HashSet<&str>) -> Vec<String> {
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
        if self.nodes.is_empty() {
            problems.push(format!("{at}: no nodes"));
        }
        if !(self.deadband.is_finite() && self.deadband >= 0.0) {
            problems.push(format!("{at}: deadband must be zero or positive"));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if NodeId::from_str(&n.node).is_err() {
                problems.push(format!("{at}, nodes[{i}]: `{}` is not an OPC UA node id", n.node));
            }
            if !assets.contains(n.asset.as_str()) {
                problems.push(format!("{at}, nodes[{i}]: asset `{}` is not configured", n.asset));
            }
        }
        problems
    }

    pub(crate) fn resolve_paths(&mut self, dir: &std::path::Path) {
        if self.pki_dir.is_relative() {
            self.pki_dir = dir.join(&self.pki_dir);
        }
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

/// A running OPC UA client.
pub struct OpcUaSource {
    config: OpcUaSourceConfig,
    /// Per node: asset index and signal index.
    targets: Vec<(usize, usize)>,
    node_ids: Vec<NodeId>,
}

impl OpcUaSource {
    /// Prepare the client.
    ///
    /// # Errors
    /// A node id that does not parse, an asset or signal that is not configured.
    pub fn new(config: &OpcUaSourceConfig, plant: &Plant) -> anyhow::Result<OpcUaSource> {
        let mut targets = Vec::new();
        let mut node_ids = Vec::new();
        for n in &config.nodes {
            let asset =
                *plant.asset_index.get(&n.asset).with_context(|| format!("asset `{}` is not configured", n.asset))?;
            let signal = *plant.assets[asset]
                .signal_index
                .get(&n.signal)
                .with_context(|| format!("asset `{}` has no signal `{}`", n.asset, n.signal))?;
            targets.push((asset, signal));
            node_ids
                .push(NodeId::from_str(&n.node).map_err(|_| anyhow::anyhow!("`{}` is not an OPC UA node id", n.node))?);
        }
        Ok(OpcUaSource { config: config.clone(), targets, node_ids })
    }

    fn identity(&self) -> anyhow::Result<IdentityToken> {
        let password = crate::config::password(self.config.password.as_ref(), self.config.password_env.as_ref())?;
        Ok(match &self.config.username {
            Some(user) => IdentityToken::new_user_name(user.clone(), password),
            None => IdentityToken::Anonymous,
        })
    }

    fn token_policy(&self) -> UserTokenPolicy {
        match &self.config.username {
            Some(_) => {
                UserTokenPolicy { token_type: opcua::types::UserTokenType::UserName, ..UserTokenPolicy::anonymous() }
            }
            None => UserTokenPolicy::anonymous(),
        }
    }
}

impl Source for OpcUaSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move { self.run_until_shutdown(context).await })
    }
}

/// Aborts a task when dropped (the session driver ends with the source).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Values from the session's callbacks: (node index, value).
type Values = mpsc::Sender<(usize, DataValue)>;

impl OpcUaSource {
    async fn run_until_shutdown(self, mut context: SourceContext) -> anyhow::Result<()> {
        let name = self.config.name.clone();
        let stats = context.metrics.source(&name);
        let mut log = CauseLog::new(&name);
        let mut client = ClientBuilder::new()
            .application_name("usan")
            .application_uri("urn:usan")
            .product_uri("urn:usan")
            .pki_dir(self.config.pki_dir.clone())
            .create_sample_keypair(true)
            .trust_server_certs(self.config.trust_server_certs)
            .session_retry_limit(-1)
            .session_retry_initial(Duration::from_millis(500))
            .session_retry_max(Duration::from_secs(10))
            .keep_alive_interval(Duration::from_secs(2))
            .client()
            .map_err(|e| anyhow::anyhow!("source `{name}`: OPC UA client settings: {e:?}"))?;
        let mode = security_mode(&self.config.security_mode).unwrap_or(MessageSecurityMode::None);
        let endpoint = (self.config.endpoint.as_str(), self.config.security_policy.as_str(), mode, self.token_policy());
        let (values_tx, mut values) = mpsc::channel::<(usize, DataValue)>(16_384);
        let mut down_since = Instant::now();

        // The first connection: retried until it works or shutdown.
        let (session, event_loop) = loop {
            let connecting = client.connect_to_matching_endpoint(endpoint.clone(), self.identity()?);
            let attempt = tokio::select! {
                attempt = connecting => attempt,
                _ = context.shutdown.changed() => return Ok(()),
            };
            match attempt {
                Ok(pair) => break pair,
                Err(e) => {
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
                        // subscribe afresh.
                        if matches!(how, opcua::client::SessionConnectMode::NewSession(_)) && ready {
                            ready = false;
                        }
                        stats.connected.store(true, Ordering::Relaxed);
                        if stats.disconnects.get() > 0 {
                            stats.outage_ms.add(down_since.elapsed().as_millis() as u64);
                            tracing::info!(source = %name, "OPC UA session back after {:.1?}", down_since.elapsed());
                        }
                        if !ready {
                            match self.start(&session, &values_tx).await {
                                Ok(()) => ready = true,
                                Err(e) => tracing::error!(source = %name, "cannot subscribe: {e:#}"),
                            }
                        }
                    }
                    Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                        if stats.connected.swap(false, Ordering::Relaxed) {
                            stats.disconnects.add(1);
                            down_since = Instant::now();
                            tracing::warn!(source = %name, "OPC UA connection lost: {status}; reconnecting");
                        }
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(status))) => {
                        log.note("cannot reconnect", &status.to_string());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => {
                        log.note("session ended", &status.to_string());
                        anyhow::bail!("source `{name}`: OPC UA session ended: {status}");
                    }
                    None => anyhow::bail!("source `{name}`: OPC UA session ended"),
                },
                _ = poll_timer.tick(), if ready && self.config.mode == "poll" => {
                    self.read_all(&session, &values_tx, &stats, &mut log).await;
                }
                Some((first, value)) = values.recv() => {
                    let mut batch = vec![(first, value)];
                    while batch.len() < 4096 {
                        match values.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    if !self.route(batch, &context, &stats, &mut log).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Create the subscription and its monitored items (subscribe mode).
    async fn start(&self, session: &Arc<Session>, values: &Values) -> anyhow::Result<()> {
        if self.config.mode != "subscribe" {
            return Ok(());
        }
        let by_node: HashMap<NodeId, usize> = self.node_ids.iter().cloned().enumerate().map(|(i, n)| (n, i)).collect();
        let tx = values.clone();
        let dropped_log = Arc::new(std::sync::Mutex::new(CauseLog::new(&self.config.name)));
        let callback = DataChangeCallback::new(move |value, item| {
            let Some(&index) = by_node.get(&item.item_to_monitor().node_id) else { return };
            // The callback must not block the session: a full queue is counted and logged.
            if tx.try_send((index, value)).is_err()
                && let Ok(mut log) = dropped_log.lock()
            {
                log.note("pipeline busy: OPC UA value dropped", "");
            }
        });
        let publishing = self.config.publishing_interval.0;
        let subscription = session
            .create_subscription(publishing, 30, 10, 0, 0, true, callback)
            .await
            .map_err(|e| anyhow::anyhow!("create subscription: {e}"))?;
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
        let items: Vec<MonitoredItemCreateRequest> = self
            .node_ids
            .iter()
            .enumerate()
            .map(|(i, node)| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(node.clone()),
                monitoring_mode: opcua::types::MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: i as u32,
                    sampling_interval: self.config.sampling_interval.0.as_secs_f64() * 1000.0,
                    filter: filter.clone(),
                    queue_size: 100,
                    discard_oldest: true,
                },
            })
            .collect();
        let results = session
            .create_monitored_items(subscription, TimestampsToReturn::Both, items)
            .await
            .map_err(|e| anyhow::anyhow!("create monitored items: {e}"))?;
        for (result, node) in results.iter().zip(&self.config.nodes) {
            if !result.result.status_code.is_good() {
                tracing::warn!(source = %self.config.name, "cannot monitor {}: {}", node.node, result.result.status_code);
            }
        }
        Ok(())
    }

    /// One read of every node (poll mode).
    async fn read_all(&self, session: &Arc<Session>, values: &Values, stats: &Arc<LinkStats>, log: &mut CauseLog) {
        let reads: Vec<ReadValueId> = self.node_ids.iter().map(|n| ReadValueId::from(n.clone())).collect();
        match session.read(&reads, TimestampsToReturn::Both, 0.0).await {
            Ok(results) => {
                for (i, value) in results.into_iter().enumerate() {
                    let _ = values.try_send((i, value));
                }
            }
            Err(status) => {
                stats.malformed("read failed");
                log.note("read failed", &status.to_string());
            }
        }
    }

    /// Route values; `false` when the pipeline is shutting down.
    async fn route(
        &self,
        batch: Vec<(usize, DataValue)>,
        context: &SourceContext,
        stats: &Arc<LinkStats>,
        log: &mut CauseLog,
    ) -> bool {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut per_asset: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
        stats.messages.add(batch.len() as u64);
        for (index, value) in batch {
            let (asset, signal) = self.targets[index];
            match to_sample(&value, signal, now_ms) {
                Ok(sample) => per_asset.entry(asset).or_default().push(sample),
                Err(cause) => {
                    stats.malformed(cause);
                    log.note(cause, &self.config.nodes[index].node);
                }
            }
        }
        super::send_per_asset(&context.router, per_asset).await
    }
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
