//! `[[sinks]] type = "jsonl"`: every event as a JSON line appended to a
//! file, for tools that tail a file (a log shipper, a script).

use super::{Event, Sink, SinkKind};
use crate::telemetry::Metrics;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `[[sinks]] type = "jsonl"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkConfig {
    /// The file (relative to the configuration file's folder).
    pub path: PathBuf,
    /// Also write findings (alarms only when false).
    #[serde(default)]
    pub findings: bool,
}

impl SinkKind for JsonlSinkConfig {
    const NAME: &'static str = "jsonl";
    const SUMMARY: &'static str = "Appends every alarm event (and, with `findings`, every finding) to a JSON-lines file.";

    fn resolve_paths(&mut self, dir: &Path) {
        if self.path.is_relative() {
            self.path = dir.join(&self.path);
        }
    }

    fn build(&self, _metrics: &Metrics) -> anyhow::Result<Box<dyn Sink>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| anyhow::anyhow!("jsonl sink: cannot open {}: {e}", self.path.display()))?;
        Ok(Box::new(JsonlSink { out: std::io::BufWriter::new(file), findings: self.findings }))
    }
}

struct JsonlSink {
    out: std::io::BufWriter<std::fs::File>,
    findings: bool,
}

impl Sink for JsonlSink {
    fn write(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            if matches!(event, Event::Finding(_)) && !self.findings {
                continue;
            }
            serde_json::to_writer(&mut self.out, event)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}
