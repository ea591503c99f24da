//! The engine's own counters, served as Prometheus text on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

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

    /// Prometheus text exposition; `gauges` are `(name, help, value)`.
    #[must_use]
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let counters: [(&str, &str, &Counter); 15] = [
            ("usan_samples_in_total", "Values accepted from sources.", &self.samples_in),
            (
                "usan_samples_dropped_total",
                "Values dropped (unknown asset or signal, bad quality).",
                &self.samples_dropped,
            ),
            ("usan_samples_late_total", "Values older than their asset's last emitted frame.", &self.samples_late),
            ("usan_samples_duplicate_total", "Values replacing a pending value.", &self.samples_duplicate),
            ("usan_bad_values_total", "Cells that were not numbers.", &self.bad_values),
            ("usan_frames_total", "Frames assembled.", &self.frames),
            ("usan_frames_scored_total", "Frames scored by at least one detector.", &self.frames_scored),
            ("usan_findings_total", "Scores over their threshold.", &self.findings),
            ("usan_alarms_raised_total", "Alarms raised.", &self.alarms_raised),
            (
                "usan_alarms_suppressed_total",
                "Anomalous frames that raised no alarm: declared maintenance.",
                &self.alarms_suppressed,
            ),
            ("usan_detector_errors_total", "Detector learn or score errors.", &self.detector_errors),
            ("usan_frames_stored_total", "Frames written to the store.", &self.frames_stored),
            ("usan_store_commits_total", "Store commits.", &self.store_commits),
            ("usan_store_errors_total", "Store write failures.", &self.store_errors),
            ("usan_http_rejected_total", "HTTP requests refused for bad input.", &self.http_rejected),
        ];
        let mut out = String::new();
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", counter.get());
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        self.render_sources(&mut out);
        out
    }

    fn render_sources(&self, out: &mut String) {
        type Read = fn(&LinkStats) -> f64;
        let connected: Read = |s| f64::from(u8::from(s.connected.load(Ordering::Relaxed)));
        let disconnects: Read = |s| s.disconnects.get() as f64;
        let outage: Read = |s| s.outage_ms.get() as f64 / 1000.0;
        let sources: [(&str, &str, &str, Read); 5] = [
            ("usan_source_messages_total", "counter", "Messages or polls received.", |s| s.messages.get() as f64),
            ("usan_source_disconnects_total", "counter", "Connections lost.", disconnects),
            ("usan_source_outage_seconds_total", "counter", "Time disconnected, over ended outages.", outage),
            ("usan_source_rebirths_requested_total", "counter", "Sparkplug B rebirth requests sent.", |s| {
                s.rebirths_requested.get() as f64
            }),
            ("usan_source_connected", "gauge", "1 while the source is connected.", connected),
        ];
        let sinks: [(&str, &str, &str, Read); 6] = [
            ("usan_sink_delivered_total", "counter", "Records the upstream acknowledged.", |s| s.messages.get() as f64),
            ("usan_sink_backlog", "gauge", "Records waiting on disk for the upstream.", |s| {
                s.backlog.load(Ordering::Relaxed) as f64
            }),
            ("usan_sink_overflow_total", "counter", "Records refused because the spool was full.", |s| {
                s.overflow.get() as f64
            }),
            ("usan_sink_disconnects_total", "counter", "Connections lost.", disconnects),
            ("usan_sink_outage_seconds_total", "counter", "Time disconnected, over ended outages.", outage),
            ("usan_sink_connected", "gauge", "1 while the sink is connected.", connected),
        ];
        let links = [("source", &self.sources, &sources[..]), ("sink", &self.sinks, &sinks[..])];
        for (label, map, families) in links {
            let map = map.lock().unwrap_or_else(PoisonError::into_inner);
            if map.is_empty() {
                continue;
            }
            for (name, kind, help, read) in families {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (link, stats) in map.iter() {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {}", escape_label(link), read(stats));
                }
            }
            let by_cause: [(&str, &str, CountsOf); 2] = [
                ("malformed_total", "Messages refused, by cause.", LinkStats::malformed_counts),
                ("connect_failures_total", "Failed connection attempts, by cause.", LinkStats::connect_failure_counts),
            ];
            for (suffix, help, counts) in by_cause {
                let name = format!("usan_{label}_{suffix}");
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (link, stats) in map.iter() {
                    for (cause, count) in counts(stats) {
                        let _ = writeln!(out, "{name}{{{label}=\"{}\",cause=\"{cause}\"}} {count}", escape_label(link));
                    }
                }
            }
        }
    }
}

/// A Prometheus label value with `\\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = Metrics::default();
        metrics.samples_in.add(42);
        let text = metrics.render(&[("usan_queue_depth", "Batches queued.", 3.0)]);
        assert!(text.contains("usan_samples_in_total 42\n"));
        assert!(text.contains("# TYPE usan_queue_depth gauge\nusan_queue_depth 3\n"));
        assert!(!text.contains("usan_source_"), "no source families without sources");
    }

    #[test]
    fn renders_sources_with_labels() {
        let metrics = Metrics::default();
        let line = metrics.source("line \"1\"");
        line.messages.add(5);
        line.outage_ms.add(2_500);
        line.malformed("bad JSON");
        line.malformed("bad JSON");
        line.connected.store(true, Ordering::Relaxed);
        let text = metrics.render(&[]);
        assert!(text.contains("usan_source_messages_total{source=\"line \\\"1\\\"\"} 5\n"), "{text}");
        assert!(text.contains("usan_source_outage_seconds_total{source=\"line \\\"1\\\"\"} 2.5\n"));
        assert!(text.contains("usan_source_connected{source=\"line \\\"1\\\"\"} 1\n"));
        assert!(text.contains("usan_source_malformed_total{source=\"line \\\"1\\\"\",cause=\"bad JSON\"} 2\n"));
    }
}
