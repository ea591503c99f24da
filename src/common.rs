//! Value types shared by the configuration, sources and sinks: durations
//! written the human way, secrets given inline or by an environment
//! variable, and a log that reports a recurring problem once per cause. A
//! leaf: it uses nothing else of usan.

use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A duration written the human way (`200ms`, `30s`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// A password given in the file or, better, named by an environment
/// variable; empty when neither is set.
///
/// # Errors
/// When the variable is not set.
pub fn password(inline: Option<&String>, variable: Option<&String>) -> anyhow::Result<String> {
    match (inline, variable) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(var)) => std::env::var(var).map_err(|_| anyhow::anyhow!("password variable `{var}` is not set")),
        (None, None) => Ok(String::new()),
    }
}

/// Logs a recurring problem once per cause, then at most once a minute with
/// how many were not logged: a flood of bad messages must not become a flood
/// of log lines.
#[derive(Debug)]
pub struct CauseLog {
    source: String,
    seen: HashMap<String, (Instant, u64)>,
}

impl CauseLog {
    /// Quiet period per cause after a line is logged.
    const QUIET: Duration = Duration::from_secs(60);

    /// A log for source `source`.
    #[must_use]
    pub fn new(source: &str) -> Self {
        CauseLog { source: source.to_string(), seen: HashMap::new() }
    }

    /// One occurrence of `cause`; `detail` (a topic, a register) goes into the line when logged.
    /// Returns whether a line was written.
    pub fn note(&mut self, cause: &str, detail: &str) -> bool {
        let now = Instant::now();
        match self.seen.get_mut(cause) {
            Some((last, suppressed)) if now.duration_since(*last) < Self::QUIET => {
                *suppressed += 1;
                false
            }
            Some((last, suppressed)) => {
                tracing::warn!(source = %self.source, "{cause} ({detail}); {suppressed} more since the last report");
                *last = now;
                *suppressed = 0;
                true
            }
            None => {
                tracing::warn!(source = %self.source, "{cause} ({detail}); repeats are reported once a minute");
                self.seen.insert(cause.to_string(), (now, 0));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_logged_once_then_quietly_counted() {
        let mut log = CauseLog::new("s");
        assert!(log.note("bad JSON", "a"));
        assert!(!log.note("bad JSON", "b"));
        assert!(log.note("unknown alias", "c"));
        assert_eq!(log.seen["bad JSON"].1, 1);
    }
}
