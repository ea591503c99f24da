//! Telemetry: the engine's own counters and the health of every link to
//! another system, served on `GET /metrics` through `prometheus-client` in
//! the format the scraper negotiates (Prometheus text 0.0.4 or OpenMetrics).
//!
//! The counters are `prometheus-client` counters, updated where things
//! happen (sources, workers, the store writer, sinks); gauges of the moment
//! (queue depths, open alarms) are read at each scrape, as are the
//! per-source and per-sink families.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A monotonically increasing count (a `prometheus-client` counter: clones
/// share the count).
pub type Counter = prometheus_client::metrics::counter::Counter;

/// Every counter the engine keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Values accepted from sources.
    pub samples_in: Counter,
    /// Values dropped (unknown asset, bad quality, unknown signal).
    pub samples_dropped: Counter,
    /// Values at or before their asset's last emitted frame.
    pub samples_late: Counter,
    /// Values that replaced a pending value with the same timestamp.
    pub samples_duplicate: Counter,
    /// Cells that could not be parsed as numbers.
    pub bad_values: Counter,
    /// Frames assembled.
    pub frames: Counter,
    /// Frames scored by at least one detector.
    pub frames_scored: Counter,
    /// Findings (scores over their threshold).
    pub findings: Counter,
    /// Alarms raised.
    pub alarms_raised: Counter,
    /// Anomalous frames that raised no alarm because their asset was in declared maintenance.
    pub alarms_suppressed: Counter,
    /// Detector errors (e.g. a baseline that could not be fitted).
    pub detector_errors: Counter,
    /// Frames written to the store.
    pub frames_stored: Counter,
    /// Store commits.
    pub store_commits: Counter,
    /// Store write failures.
    pub store_errors: Counter,
    /// HTTP requests refused for bad input.
    pub http_rejected: Counter,
    /// Journal commits (each makes a group of acknowledged batches durable).
    pub journal_commits: Counter,
    /// Journal commits that failed: their batches were refused, not acknowledged.
    pub journal_errors: Counter,
    /// Damaged store files moved aside at start.
    pub store_quarantined: Counter,
    /// Damaged model files or stored models refused at start (their detector learns anew).
    pub models_refused: Counter,
    /// Per connected source (MQTT, Modbus, OPC UA), by source name.
    sources: Mutex<BTreeMap<String, Arc<LinkStats>>>,
    /// Per forwarding sink (MQTT), by sink name.
    sinks: Mutex<BTreeMap<String, Arc<LinkStats>>>,
}

/// The health of one link to another system (a source's or a sink's
/// connection), exported with a `source` or `sink` label.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Messages (or polls) received by a source; delivered by a sink.
    pub messages: Counter,
    /// Times the connection was lost.
    pub disconnects: Counter,
    /// Milliseconds spent disconnected, summed over outages that ended.
    pub outage_ms: Counter,
    /// Rebirth requests sent (Sparkplug B).
    pub rebirths_requested: Counter,
    /// Whether the link is up now.
    pub connected: AtomicBool,
    /// Whether the link subscribes (an MQTT source): only such links have a
    /// `subscribed` state.
    pub subscribes: AtomicBool,
    /// Whether the other side has acknowledged every subscription of the
    /// current connection: data can flow.
    pub subscribed: AtomicBool,
    /// Records waiting on disk for the upstream (store-and-forward).
    pub backlog: AtomicU64,
    /// Records refused because the spool was full.
    pub overflow: Counter,
    /// Messages refused, by cause (bad JSON, unknown alias, ...).
    malformed: CauseCounts,
    /// Failed connection attempts, by cause (login refused, certificate not trusted, ...).
    connect_failures: CauseCounts,
}

/// Reads one of a link's counts by cause.
type CountsOf = fn(&LinkStats) -> BTreeMap<&'static str, u64>;

/// Counts by a fixed set of causes.
#[derive(Debug, Default)]
struct CauseCounts(Mutex<BTreeMap<&'static str, u64>>);

impl CauseCounts {
    fn add(&self, cause: &'static str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(cause).or_default() += 1;
    }

    fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl LinkStats {
    /// Count one malformed message (or part of one) of `cause`.
    pub fn malformed(&self, cause: &'static str) {
        self.malformed.add(cause);
    }

    /// Malformed counts by cause.
    #[must_use]
    pub fn malformed_counts(&self) -> BTreeMap<&'static str, u64> {
        self.malformed.counts()
    }

    /// Count one failed connection attempt of `cause`.
    pub fn connect_failed(&self, cause: &'static str) {
        self.connect_failures.add(cause);
    }

    /// Failed connection attempts by cause.
    #[must_use]
    pub fn connect_failure_counts(&self) -> BTreeMap<&'static str, u64> {
        self.connect_failures.counts()
    }
}

impl Metrics {
    /// The stats of source `name`, created on first use.
    pub fn source(&self, name: &str) -> Arc<LinkStats> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(sources.entry(name.to_string()).or_default())
    }

    /// The stats of sink `name`, created on first use.
    pub fn sink(&self, name: &str) -> Arc<LinkStats> {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(sinks.entry(name.to_string()).or_default())
    }
}

/// The two text formats Prometheus scrapers negotiate (`Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// The Prometheus text format 0.0.4 (the default; `# TYPE x_total counter`).
    Prometheus,
    /// OpenMetrics 1.0 text (`# TYPE x counter`, `x_total`, `# EOF`).
    OpenMetrics,
}

impl Exposition {
    /// The format a scraper's `Accept` header prefers: OpenMetrics when it
    /// names `application/openmetrics-text`, the Prometheus text format otherwise.
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Prometheus,
        }
    }

    /// Its `Content-Type`.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// Every counter, with the gauges read at scrape time (`(name, help, value)`,
    /// help without a final period), in `format`.
    #[must_use]
    pub fn render(&self, gauges: &[(&str, &str, f64)], format: Exposition) -> String {
        let mut registry = Registry::default();
        let counters: [(&str, &str, &Counter); 19] = [
            ("usan_samples_in", "Values accepted from sources", &self.samples_in),
            ("usan_samples_dropped", "Values dropped (unknown asset or signal, bad quality)", &self.samples_dropped),
            (
                "usan_samples_late",
                "Values at or before their asset's last emitted frame: stored into it, not scored",
                &self.samples_late,
            ),
            ("usan_samples_duplicate", "Values replacing a pending value", &self.samples_duplicate),
            ("usan_bad_values", "Cells that were not numbers", &self.bad_values),
            ("usan_frames", "Frames assembled", &self.frames),
            ("usan_frames_scored", "Frames scored by at least one detector", &self.frames_scored),
            ("usan_findings", "Scores over their threshold", &self.findings),
            ("usan_alarms_raised", "Alarms raised", &self.alarms_raised),
            (
                "usan_alarms_suppressed",
                "Anomalous frames that raised no alarm: declared maintenance",
                &self.alarms_suppressed,
            ),
            ("usan_detector_errors", "Detector learn or score errors", &self.detector_errors),
            ("usan_frames_stored", "Frames written to the store", &self.frames_stored),
            ("usan_store_commits", "Store commits", &self.store_commits),
            ("usan_store_errors", "Store write failures", &self.store_errors),
            ("usan_http_rejected", "HTTP requests refused for bad input", &self.http_rejected),
            ("usan_journal_commits", "Journal commits of acknowledged batches", &self.journal_commits),
            ("usan_journal_errors", "Journal commits that failed (their batches were refused)", &self.journal_errors),
            ("usan_store_quarantined", "Damaged store files moved aside at start", &self.store_quarantined),
            (
                "usan_models_refused",
                "Damaged models refused at start (their detector learns anew)",
                &self.models_refused,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        for &(name, help, value) in gauges {
            // Whole numbers (counts, depths) as integers, as scrapes saw them before.
            if value.fract() == 0.0 && value.abs() < 9e15 {
                registry.register(name, help, ConstGauge::new(value as i64));
            } else {
                registry.register(name, help, ConstGauge::new(value));
            }
        }
        let links = |label, map: &Mutex<BTreeMap<String, Arc<LinkStats>>>| LinkCollector {
            label,
            links: map.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        };
        registry.register_collector(Box::new(links("source", &self.sources)));
        registry.register_collector(Box::new(links("sink", &self.sinks)));
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = match format {
            Exposition::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
            Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        };
        out
    }
}

/// The per-link families of the sources or of the sinks, read at each
/// scrape; nothing when there is no such link. (A collector's help is
/// written as given: these end with their period, as the registry's get one.)
#[derive(Debug)]
struct LinkCollector {
    /// `source` or `sink`: the families' prefix and label.
    label: &'static str,
    links: BTreeMap<String, Arc<LinkStats>>,
}

/// How a family reads one link.
enum Read {
    Counter(fn(&LinkStats) -> u64),
    Seconds(fn(&LinkStats) -> f64),
    Gauge(fn(&LinkStats) -> i64),
}

impl Collector for LinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.links.is_empty() {
            return Ok(());
        }
        let connected = Read::Gauge(|s| i64::from(s.connected.load(Ordering::Relaxed)));
        let disconnects = Read::Counter(|s| s.disconnects.get());
        let outage = Read::Seconds(|s| s.outage_ms.get() as f64 / 1000.0);
        let families: Vec<(&str, &str, Read)> = match self.label {
            "source" => vec![
                ("messages", "Messages or polls received.", Read::Counter(|s| s.messages.get())),
                ("disconnects", "Connections lost.", disconnects),
                ("outage_seconds", "Time disconnected, over ended outages.", outage),
                (
                    "rebirths_requested",
                    "Sparkplug B rebirth requests sent.",
                    Read::Counter(|s| s.rebirths_requested.get()),
                ),
                ("connected", "1 while the source is connected.", connected),
            ],
            _ => vec![
                ("delivered", "Records the upstream acknowledged.", Read::Counter(|s| s.messages.get())),
                (
                    "backlog",
                    "Records waiting on disk for the upstream.",
                    Read::Gauge(|s| s.backlog.load(Ordering::Relaxed) as i64),
                ),
                ("overflow", "Records refused because the spool was full.", Read::Counter(|s| s.overflow.get())),
                ("disconnects", "Connections lost.", disconnects),
                ("outage_seconds", "Time disconnected, over ended outages.", outage),
                ("connected", "1 while the sink is connected.", connected),
            ],
        };
        for (suffix, help, read) in families {
            let name = format!("usan_{}_{suffix}", self.label);
            let kind = match read {
                Read::Gauge(_) => MetricType::Gauge,
                Read::Counter(_) | Read::Seconds(_) => MetricType::Counter,
            };
            let mut family = encoder.encode_descriptor(&name, help, None, kind)?;
            for (link, stats) in &self.links {
                let labels = [(self.label, link.as_str())];
                let metric = family.encode_family(&labels)?;
                match &read {
                    Read::Counter(read) => ConstCounter::new(read(stats)).encode(metric)?,
                    Read::Seconds(read) => ConstCounter::new(read(stats)).encode(metric)?,
                    Read::Gauge(read) => ConstGauge::new(read(stats)).encode(metric)?,
                }
            }
        }
        let subscribing: Vec<(&String, &Arc<LinkStats>)> =
            self.links.iter().filter(|(_, s)| s.subscribes.load(Ordering::Relaxed)).collect();
        if !subscribing.is_empty() {
            let name = format!("usan_{}_subscribed", self.label);
            let help = "1 once every subscription of the connection is acknowledged.";
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
            for (link, stats) in subscribing {
                let labels = [(self.label, link.as_str())];
                ConstGauge::new(i64::from(stats.subscribed.load(Ordering::Relaxed)))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let by_cause: [(&str, &str, CountsOf); 2] = [
            ("malformed", "Messages refused, by cause.", LinkStats::malformed_counts),
            ("connect_failures", "Failed connection attempts, by cause.", LinkStats::connect_failure_counts),
        ];
        for (suffix, help, counts) in by_cause {
            let name = format!("usan_{}_{suffix}", self.label);
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (link, stats) in &self.links {
                for (cause, count) in counts(stats) {
                    let labels = [(self.label, link.as_str()), ("cause", cause)];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family name an existing scrape sees, with its type, as
    /// the hand-written exposition before `prometheus-client` served them.
    const FAMILIES: [(&str, &str); 30] = [
        ("usan_samples_in_total", "counter"),
        ("usan_samples_dropped_total", "counter"),
        ("usan_samples_late_total", "counter"),
        ("usan_samples_duplicate_total", "counter"),
        ("usan_bad_values_total", "counter"),
        ("usan_frames_total", "counter"),
        ("usan_frames_scored_total", "counter"),
        ("usan_findings_total", "counter"),
        ("usan_alarms_raised_total", "counter"),
        ("usan_alarms_suppressed_total", "counter"),
        ("usan_detector_errors_total", "counter"),
        ("usan_frames_stored_total", "counter"),
        ("usan_store_commits_total", "counter"),
        ("usan_store_errors_total", "counter"),
        ("usan_http_rejected_total", "counter"),
        ("usan_queue_depth", "gauge"),
        ("usan_source_messages_total", "counter"),
        ("usan_source_disconnects_total", "counter"),
        ("usan_source_outage_seconds_total", "counter"),
        ("usan_source_rebirths_requested_total", "counter"),
        ("usan_source_connected", "gauge"),
        ("usan_source_malformed_total", "counter"),
        ("usan_source_connect_failures_total", "counter"),
        ("usan_sink_delivered_total", "counter"),
        ("usan_sink_backlog", "gauge"),
        ("usan_sink_overflow_total", "counter"),
        ("usan_sink_disconnects_total", "counter"),
        ("usan_sink_outage_seconds_total", "counter"),
        ("usan_sink_connected", "gauge"),
        ("usan_sink_malformed_total", "counter"),
    ];

    fn busy() -> Metrics {
        let metrics = Metrics::default();
        metrics.samples_in.inc_by(42);
        let line = metrics.source("line \"1\"");
        line.messages.inc_by(5);
        line.outage_ms.inc_by(2_500);
        line.malformed("bad JSON");
        line.malformed("bad JSON");
        line.connected.store(true, Ordering::Relaxed);
        metrics.sink("events").backlog.store(7, Ordering::Relaxed);
        metrics
    }

    #[test]
    fn the_prometheus_text_keeps_every_family_name_and_type() {
        let text = busy().render(&[("usan_queue_depth", "Batches queued", 3.0)], Exposition::Prometheus);
        for (name, kind) in FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind} missing:\n{text}");
        }
        assert!(text.contains("# HELP usan_samples_in_total Values accepted from sources.\n"), "{text}");
        assert!(text.contains("\nusan_samples_in_total 42\n"), "{text}");
        assert!(text.contains("\nusan_queue_depth 3\n"), "{text}");
        assert!(text.contains("usan_source_messages_total{source=\"line \\\"1\\\"\"} 5\n"), "{text}");
        assert!(text.contains("usan_source_outage_seconds_total{source=\"line \\\"1\\\"\"} 2.5\n"), "{text}");
        assert!(text.contains("usan_source_connected{source=\"line \\\"1\\\"\"} 1\n"), "{text}");
        assert!(
            text.contains("usan_source_malformed_total{source=\"line \\\"1\\\"\",cause=\"bad JSON\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("usan_sink_backlog{sink=\"events\"} 7\n"), "{text}");
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn open_metrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = busy().render(&[], Exposition::OpenMetrics);
        assert!(text.contains("# TYPE usan_samples_in counter\n"), "{text}");
        assert!(text.contains("\nusan_samples_in_total 42\n"), "{text}");
        assert!(text.contains("# TYPE usan_source_connected gauge\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn no_link_families_without_links_and_the_format_follows_accept() {
        let text = Metrics::default().render(&[], Exposition::Prometheus);
        assert!(!text.contains("usan_source_") && !text.contains("usan_sink_"), "{text}");
        // (Accept header, format): Prometheus asks for OpenMetrics first.
        let cases = [
            (None, Exposition::Prometheus),
            (Some("text/plain"), Exposition::Prometheus),
            (Some("*/*"), Exposition::Prometheus),
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Exposition::OpenMetrics,
            ),
        ];
        for (accept, format) in cases {
            assert_eq!(Exposition::negotiate(accept), format, "{accept:?}");
        }
        assert!(Exposition::Prometheus.content_type().starts_with("text/plain; version=0.0.4"));
    }
}
