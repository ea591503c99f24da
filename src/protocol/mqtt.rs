//! How usan reaches an MQTT broker: the `broker` table shared by the MQTT
//! source and the MQTT sink, and the client options built from it.
//!
//! ```toml
//! broker = { host = "10.0.0.5", port = 8883, client_id = "usan-line-2",
//!            username = "usan", password_env = "MQTT_PASSWORD",
//!            tls = { ca = "/etc/usan/ca.pem" } }
//! ```

use crate::common::HumanDuration;
use anyhow::Context;
use rumqttc::{MqttOptions, Transport};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A broker and how to log in to it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// Host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port; 1883, or 8883 with `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Client id; derived from the component's name by default. Keep it
    /// stable where the session matters: the broker keeps it under this id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// Wait after the first failed connection attempt; doubled after each
    /// further failure up to `reconnect_max_delay`.
    #[serde(default = "default_reconnect_delay")]
    pub reconnect_delay: HumanDuration,
    /// Longest wait between reconnection attempts.
    #[serde(default = "default_reconnect_max_delay")]
    pub reconnect_max_delay: HumanDuration,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (prefer `password_env`).
    #[serde(default)]
    pub password: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS; absent for plain TCP.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            host: default_host(),
            port: None,
            client_id: None,
            keep_alive: default_keep_alive(),
            reconnect_delay: default_reconnect_delay(),
            reconnect_max_delay: default_reconnect_max_delay(),
            username: None,
            password: None,
            password_env: None,
            tls: None,
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".to_string()
}
fn default_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_reconnect_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_reconnect_max_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// TLS to the broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the certificate authorities to trust.
    pub ca: PathBuf,
    /// PEM client certificate, for brokers that require one.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl Broker {
    /// The waits between reconnection attempts these settings ask for.
    #[must_use]
    pub fn backoff(&self) -> crate::common::Backoff {
        crate::common::Backoff::new(self.reconnect_delay.0, self.reconnect_max_delay.0)
    }

    /// Every problem with the settings; `at` names the component.
    #[must_use]
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.password.is_some() && self.password_env.is_some() {
            problems.push(format!("{at}: give `password` or `password_env`, not both"));
        }
        // MQTT counts the keep-alive in whole seconds, at most 65535.
        let ranges = [
            self.keep_alive.out_of("keep_alive", Duration::from_secs(1), Duration::from_secs(65_535)),
            self.reconnect_delay.out_of("reconnect_delay", Duration::from_millis(10), Duration::from_secs(3600)),
            crate::common::backoff_problem(&self.reconnect_delay, &self.reconnect_max_delay),
        ];
        problems.extend(ranges.into_iter().flatten().map(|p| format!("{at}: {p}")));
        if let Some(tls) = &self.tls
            && tls.client_cert.is_some() != tls.client_key.is_some()
        {
            problems.push(format!("{at}: tls needs both `client_cert` and `client_key`, or neither"));
        }
        problems
    }

    /// Client options: `default_id` unless `client_id` is set.
    ///
    /// # Errors
    /// A TLS file that cannot be read or parsed, a password variable that is not set.
    pub fn options(&self, default_id: &str) -> anyhow::Result<MqttOptions> {
        let client_id = self.client_id.clone().unwrap_or_else(|| default_id.to_string());
        let port = self.port.unwrap_or(if self.tls.is_some() { 8883 } else { 1883 });
        let mut options = MqttOptions::new(client_id, self.host.clone(), port);
        // Validated to 1..=65535 s; the bound again here keeps rumqttc's assert unreachable.
        options.set_keep_alive(self.keep_alive.0.clamp(Duration::from_secs(1), Duration::from_secs(65_535)));
        // Any packet MQTT allows is read whole, so a message the source refuses
        // as too large is still acknowledged (never redelivered forever);
        // what is sent stays within 16 MiB.
        options.set_max_packet_size(MAX_MQTT_PACKET, 16 * 1024 * 1024);
        if let Some(user) = &self.username {
            let password = crate::common::password(self.password.as_ref(), self.password_env.as_ref())?;
            options.set_credentials(user.clone(), password);
        }
        if let Some(tls) = &self.tls {
            let config = tls_config(tls).context("tls")?;
            options.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
        }
        Ok(options)
    }
}

/// The largest packet MQTT can express: a fixed header of 5 bytes and a
/// remaining length of at most 268,435,455.
pub const MAX_MQTT_PACKET: usize = 268_435_460;

/// A client and its event loop, with Nagle's algorithm off: MQTT sends many
/// small packets (PUBACKs, single events) that would otherwise wait up to
/// 40 ms for the peer's delayed ACK.
#[must_use]
pub fn client(options: MqttOptions, capacity: usize) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut events) = rumqttc::AsyncClient::new(options, capacity);
    let mut network = events.network_options();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    (client, events)
}

fn tls_config(settings: &TlsSettings) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&settings.ca).with_context(|| format!("{}", settings.ca.display()))? {
        roots.add(cert.with_context(|| format!("{}", settings.ca.display()))?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("{}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let broker: Broker = toml::from_str("").unwrap();
        assert_eq!(broker, Broker::default());
        let options = broker.options("usan-x").unwrap();
        assert_eq!(options.client_id(), "usan-x");
        assert_eq!(options.broker_address(), ("127.0.0.1".to_string(), 1883));

        let bad: Broker = toml::from_str(
            "password = \"a\"\npassword_env = \"B\"\ntls = { ca = \"ca.pem\", client_cert = \"c.pem\" }",
        )
        .unwrap();
        assert_eq!(bad.validate("sink").len(), 2);
        assert!(bad.options("x").is_err(), "the CA file does not exist");
        assert!(toml::from_str::<Broker>("hots = \"x\"").is_err(), "unknown keys are refused");

        let missing: Broker = toml::from_str("username = \"u\"\npassword_env = \"USAN_TEST_UNSET_VARIABLE\"").unwrap();
        let error = format!("{:#}", missing.options("x").unwrap_err());
        assert!(error.contains("USAN_TEST_UNSET_VARIABLE"), "{error}");
    }
}
