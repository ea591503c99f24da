//! The engine's own counters, served as Prometheus text on `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Metrics {
    /// Prometheus text exposition; `gauges` are `(name, help, value)`.
    #[must_use]
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let counters: [(&str, &str, &Counter); 14] = [
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
        out
    }
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
    }
}
