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

/// Waits between reconnection attempts to a peer that is down: `initial`
/// after the first failure, doubled after each further one up to `max`, each
/// drawn within ±20 % so that many clients cut off together do not all
/// retry in step; back to `initial` once a connection holds.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    /// Start at `initial`, never over `max` (raised to `initial` if below it).
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Backoff { initial, max: max.max(initial), next: initial, seed: nanos as u64 ^ u64::from(std::process::id()) }
    }

    /// The wait before the next attempt; the one after it is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        // SplitMix64: enough randomness to spread retries, no dependency.
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        let delay = self.next.mul_f64(0.8 + 0.4 * unit);
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// A connection held: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The problem with a reconnection `max` below its `initial` delay, if any.
#[must_use]
pub fn backoff_problem(initial: &HumanDuration, max: &HumanDuration) -> Option<String> {
    max.out_of("reconnect_max_delay", Duration::from_millis(10), Duration::from_secs(3600)).or_else(|| {
        (max.0 < initial.0).then(|| format!("reconnect_max_delay {:?} is below reconnect_delay {:?}", max.0, initial.0))
    })
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

    #[test]
    fn backoff_doubles_within_jitter_up_to_its_cap_and_starts_again_after_a_success() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(200), ms(1000));
        // (nominal wait) for successive failures: 200, 400, 800, then the cap.
        for nominal in [200u64, 400, 800, 1000, 1000] {
            let delay = backoff.next_delay();
            assert!(delay >= ms(nominal * 8 / 10) && delay <= ms(nominal * 12 / 10), "{delay:?} for {nominal} ms");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(240));
        let spread: std::collections::HashSet<Duration> =
            (0..20).map(|_| Backoff::new(ms(1000), ms(1000)).next_delay()).collect();
        assert!(spread.len() > 1, "retries are spread: {spread:?}");
        assert!(Backoff::new(ms(500), ms(100)).next_delay() >= ms(400), "a max below the start is raised to it");
    }
}
