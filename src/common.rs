//! Value types shared by the configuration, sources and sinks: durations
//! written the human way, secrets given inline or by an environment
//! variable, and a log that reports a recurring problem once per cause. A
//! leaf: it uses nothing else of usan.

use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A duration written the human way (`200ms`, `30s`, `7d`), at most
/// [`HumanDuration::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The longest duration any setting takes: 100 years (a retention);
    /// each setting has its own, narrower range.
    pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// A problem when the duration is outside `[min, max]`, naming the setting.
    #[must_use]
    pub fn out_of(&self, name: &str, min: Duration, max: Duration) -> Option<String> {
        (self.0 < min || self.0 > max).then(|| {
            format!(
                "{name} must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(self.0)
            )
        })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let duration = humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))?;
        if duration > HumanDuration::MAX {
            return Err(serde::de::Error::custom(format!("duration {text:?} is longer than 100 years")));
        }
        Ok(HumanDuration(duration))
    }
}

/// A problem when `value` is outside `[min, max]`, naming the setting.
#[must_use]
pub fn out_of_range<T: PartialOrd + std::fmt::Display>(name: &str, value: T, min: T, max: T) -> Option<String> {
    (value < min || value > max).then(|| format!("{name} must be between {min} and {max}, got {value}"))
}

/// Why `id` is not a valid id of an asset, detector, source or sink: one or
/// more segments of letters, digits, `_`, `-` and `.` (not `.` or `..`
/// alone), joined by `/` (sub-assets, channels). Ids name files and topics,
/// so nothing else is allowed.
#[must_use]
pub fn id_problem(id: &str) -> Option<String> {
    const MAX_LEN: usize = 256;
    if id.is_empty() {
        return Some("is empty".into());
    }
    if id.len() > MAX_LEN {
        return Some(format!("is longer than {MAX_LEN} bytes"));
    }
    for segment in id.split('/') {
        if segment.is_empty() {
            return Some(format!("`{}` has an empty segment (a leading, trailing or double `/`)", id.escape_debug()));
        }
        if segment == "." || segment == ".." {
            return Some(format!("`{}` has a `{segment}` segment", id.escape_debug()));
        }
        if let Some(c) = segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Some(format!(
                "`{}` has `{}`: use letters, digits, `_`, `-` and `.`, and `/` between segments",
                id.escape_debug(),
                c.escape_debug()
            ));
        }
    }
    None
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

    #[test]
    fn ids_are_segments_of_safe_characters() {
        for good in ["pump-1", "line_2/press.3", "a", "fab1/tool-7/chamber-A", "v1.2"] {
            assert_eq!(id_problem(good), None, "{good}");
        }
        let cases = [
            ("", "is empty"),
            ("../escaped", "has a `..` segment"),
            ("../../etc", "has a `..` segment"),
            ("a/./b", "has a `.` segment"),
            ("/abs", "empty segment"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("a b", "has ` `"),
            ("nul\0", "has `\\0`"),
            ("esc\u{1b}[31m", "has `\\u{1b}`"),
            ("pump\\1", "has `\\\\`"),
            ("펌프", "has `펌`"),
        ];
        for (id, expected) in cases {
            let problem = id_problem(id).unwrap_or_default();
            assert!(problem.contains(expected), "{id:?}: {problem}");
        }
        assert!(id_problem(&"a".repeat(257)).unwrap().contains("longer"));
    }

    #[test]
    fn durations_and_numbers_have_ranges() {
        let d = HumanDuration(Duration::from_millis(5));
        assert!(
            d.out_of("x", Duration::from_millis(10), Duration::from_secs(1))
                .unwrap()
                .contains("between 10ms and 1s, got 5ms")
        );
        assert_eq!(d.out_of("x", Duration::ZERO, Duration::from_secs(1)), None);
        assert!(toml::from_str::<HashMap<String, HumanDuration>>("d = \"200years\"").is_err());
        assert_eq!(
            out_of_range("queue_capacity", 0usize, 1, 10),
            Some("queue_capacity must be between 1 and 10, got 0".into())
        );
        assert_eq!(out_of_range("w", 3usize, 1, 10), None);
    }
}
