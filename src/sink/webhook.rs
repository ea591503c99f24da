//! Webhook sink: alarm events POSTed as JSON to another system (a
//! maintenance system opening a work order, a chat bridge), signed, retried,
//! and kept on disk until the receiver has taken them.
//!
//! ```toml
//! [[sinks]]
//! type = "webhook"
//! name = "cmms"
//! url = "https://cmms.plant.local/hooks/usan"
//! secret_env = "USAN_WEBHOOK_SECRET"  # signs every request (or `secret = "..."`)
//! findings = false                    # alarm events only by default
//! timeout = "10s"
//! retry_max = "5m"                    # back-off between attempts doubles up to this
//! # ca = "certs/plant-ca.pem"         # a private CA besides the system's
//! ```
//!
//! Each event is one `POST` with the event's JSON as body and the headers
//! `X-Usan-Event` (`alarm_raised`, …), `X-Usan-Delivery` (unique per event,
//! the same on every retry: receivers de-duplicate on it), `X-Usan-Timestamp`
//! (Unix milliseconds of this attempt) and, with a secret,
//! `X-Usan-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
//!
//! Events go out one at a time, in order, from the same disk spool as the
//! MQTT sink's. A 2xx answer delivers; a connection failure, a timeout, a
//! 5xx, 408 or 429 is retried with back-off (the event waits on disk, and so
//! do the ones after it); any other 4xx means the receiver will never take
//! it: the event is dropped, counted in
//! `usan_sink_malformed_total{cause="refused by the receiver"}` and logged.

use super::spool::{Appender, Spool};
use super::{Event, Sink, SinkKind};
use crate::common::CauseLog;
use crate::common::HumanDuration;
use crate::telemetry::{LinkStats, Metrics};
use anyhow::Context;
use ring::hmac;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// `[[sinks]] type = "webhook"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Sink name (metrics label, default spool folder).
    pub name: String,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// HMAC key (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Environment variable holding the HMAC key.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Also send findings (alarm events only when false).
    #[serde(default)]
    pub findings: bool,
    /// Longest wait for an answer.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// First wait before a retry; it doubles per failed attempt.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: HumanDuration,
    /// Longest wait between attempts.
    #[serde(default = "default_retry_max")]
    pub retry_max: HumanDuration,
    /// PEM file of a CA to trust besides the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Spool folder; `spool/<name>` beside the configuration file by default.
    #[serde(default)]
    pub spool: Option<PathBuf>,
    /// Most bytes the spool holds undelivered.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_retry_initial() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_spool_max_bytes() -> u64 {
    100 * 1024 * 1024
}

impl SinkKind for WebhookSinkConfig {
    const NAME: &'static str = "webhook";
    const SUMMARY: &'static str = "POSTs alarm events, signed, to another system (a CMMS, a chat) through a disk spool.";

    fn validate(&self) -> Vec<String> {
        let at = format!("sink `{}`", self.name);
        let mut problems = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!("{at}: url `{}` must start with http:// or https://", self.url));
        }
        if self.secret.is_some() && self.secret_env.is_some() {
            problems.push(format!("{at}: give `secret` or `secret_env`, not both"));
        }
        let ms = Duration::from_millis;
        let ranges = [
            self.timeout.out_of("timeout", ms(100), ms(600_000)),
            self.retry_initial.out_of("retry_initial", ms(10), ms(3_600_000)),
            self.retry_max.out_of("retry_max", self.retry_initial.0, ms(86_400_000)),
        ];
        problems.extend(ranges.into_iter().flatten().map(|p| format!("{at}: {p}")));
        problems.extend(super::spool::check_max_bytes(&at, self.spool_max_bytes));
        problems
    }

    fn resolve_paths(&mut self, dir: &Path) {
        self.spool = Some(super::spool::resolve_dir(self.spool.take(), &self.name, dir));
        if let Some(ca) = &mut self.ca
            && ca.is_relative()
        {
            *ca = dir.join(&*ca);
        }
    }

    fn build(&self, metrics: &Metrics) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(self.open(metrics)?))
    }
}

impl WebhookSinkConfig {

    /// Open the spool and start the sender (on the current Tokio runtime).
    ///
    /// # Errors
    /// When the spool or the CA file cannot be read, or the secret's variable is not set.
    pub fn open(&self, metrics: &Metrics) -> anyhow::Result<WebhookSink> {
        let at = || format!("sink `{}`", self.name);
        let dir = self.spool.clone().unwrap_or_else(|| PathBuf::from("spool").join(&self.name));
        let spool = Spool::open(&dir, self.spool_max_bytes)
            .with_context(|| format!("sink `{}`: spool {}", self.name, dir.display()))?;
        let secret = crate::common::password(self.secret.as_ref(), self.secret_env.as_ref()).with_context(at)?;
        let key = (!secret.is_empty()).then(|| hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()));
        let mut client =
            reqwest::Client::builder().timeout(self.timeout.0).user_agent(concat!("usan/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).with_context(|| format!("{}: CA {}", at(), ca.display()))?;
            let certificate =
                reqwest::Certificate::from_pem(&pem).with_context(|| format!("{}: CA {}", at(), ca.display()))?;
            client = client.add_root_certificate(certificate);
        }
        let client = client.build().with_context(at)?;
        let stats = metrics.sink(&self.name);
        stats.backlog.store(spool.backlog(), Ordering::Relaxed);
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let sender = Sender {
            config: self.clone(),
            client,
            key,
            spool: Arc::clone(&spool),
            wake: Arc::clone(&wake),
            stats: Arc::clone(&stats),
        };
        tokio::spawn(sender.run());
        let appender = Appender { spool, wake, stats, log: CauseLog::new(&self.name) };
        Ok(WebhookSink { findings: self.findings, appender })
    }
}

/// The engine's side of the sink: appends to the spool.
pub struct WebhookSink {
    findings: bool,
    appender: Appender,
}

impl Sink for WebhookSink {
    fn write(&mut self, events: &[Event]) -> anyhow::Result<()> {
        let records = events
            .iter()
            .filter(|e| self.findings || !matches!(e, Event::Finding(_)))
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()?;
        self.appender.append(records)
    }
}

/// The signature header's value for `body` sent at `timestamp_ms`.
#[must_use]
pub fn signature(key: &hmac::Key, timestamp_ms: i64, body: &[u8]) -> String {
    let mut context = hmac::Context::with_key(key);
    context.update(timestamp_ms.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    /// Worth trying again later.
    Retry(String),
    /// The receiver will never take it.
    Refused(String),
}

/// Sends the spool, in order, one event at a time.
struct Sender {
    config: WebhookSinkConfig,
    client: reqwest::Client,
    key: Option<hmac::Key>,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    stats: Arc<LinkStats>,
}

impl Sender {
    async fn run(self) {
        let mut log = CauseLog::new(&self.config.name);
        let mut backoff = self.config.retry_initial.0;
        let mut down_since: Option<Instant> = None;
        loop {
            let next = self.spool.lock().unwrap_or_else(PoisonError::into_inner).peek(1);
            let record = match next {
                Ok(mut records) if !records.is_empty() => records.remove(0),
                Ok(_) => {
                    self.wake.notified().await;
                    continue;
                }
                Err(e) => {
                    log.note("cannot read the spool", &e.to_string());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let outcome = self.attempt(&record.bytes, record.end).await;
            if let Outcome::Retry(reason) = &outcome {
                if self.stats.connected.swap(false, Ordering::Relaxed) {
                    self.stats.disconnects.inc_by(1);
                }
                down_since.get_or_insert_with(Instant::now);
                log.note("webhook not delivered; it waits in the spool", reason);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.retry_max.0);
                continue;
            }
            if let Outcome::Refused(reason) = &outcome {
                self.stats.malformed("refused by the receiver");
                log.note("webhook refused by the receiver; event dropped", reason);
            } else {
                self.stats.messages.inc_by(1);
            }
            self.stats.connected.store(true, Ordering::Relaxed);
            if let Some(since) = down_since.take() {
                self.stats.outage_ms.inc_by(since.elapsed().as_millis() as u64);
            }
            backoff = self.config.retry_initial.0;
            let mut spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = spool.ack(record.end) {
                tracing::error!(sink = %self.config.name, "cannot acknowledge the spool: {e}");
            }
            self.stats.backlog.store(spool.backlog(), Ordering::Relaxed);
        }
    }

    async fn attempt(&self, body: &[u8], delivery: u64) -> Outcome {
        let kind = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        let timestamp = chrono::Utc::now().timestamp_millis();
        let mut request = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Usan-Event", kind)
            .header("X-Usan-Delivery", format!("{}-{delivery}", self.config.name))
            .header("X-Usan-Timestamp", timestamp.to_string());
        if let Some(key) = &self.key {
            request = request.header("X-Usan-Signature", signature(key, timestamp, body));
        }
        match request.body(body.to_vec()).send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Outcome::Delivered
                } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Outcome::Retry(format!("{} answered {status}", self.config.url))
                } else {
                    Outcome::Refused(format!("{} answered {status}", self.config.url))
                }
            }
            Err(e) => Outcome::Retry(format!("{}: {e}", self.config.url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split as usan sends it.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let message = b"what do ya want for nothing?";
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let mut context = hmac::Context::with_key(&key);
        context.update(message);
        let direct: String = context.sign().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(direct, expected);
        let signed = signature(&key, 1_700_000_000_000, b"{}");
        let check = hmac::sign(&key, b"1700000000000.{}");
        let hex: String = check.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(signed, format!("sha256={hex}"));
    }

    #[test]
    fn settings_are_checked() {
        let config: WebhookSinkConfig = toml::from_str(
            "name = \"w\"\nurl = \"ftp://x\"\nsecret = \"a\"\nsecret_env = \"B\"\nretry_max = \"1ms\"\nspool_max_bytes = 1",
        )
        .unwrap();
        assert_eq!(config.validate().len(), 4, "{:?}", config.validate());
        let mut config: WebhookSinkConfig = toml::from_str("name = \"w\"\nurl = \"http://cmms/hook\"").unwrap();
        assert!(config.validate().is_empty());
        config.resolve_paths(Path::new("/etc/usan"));
        assert_eq!(config.spool, Some(PathBuf::from("/etc/usan/spool/w")));
    }
}
