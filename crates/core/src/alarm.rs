//! The alarm lifecycle people work with: raised → acknowledged → cleared.
//!
//! An alarm is raised when a detector's decision turns anomalous and no alarm
//! for that asset and detector is open; while one is open, further anomalous
//! frames update it (count, peak, explanation) instead of raising new ones,
//! so a long fault is one alarm, not a flood. Whether the condition is still
//! present is tracked apart from the state people set (as ISA-18.2 does).

use crate::model::{Contribution, Timestamp};
use serde::{Deserialize, Serialize};

/// Where an alarm is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmState {
    /// Raised, nobody has looked at it yet.
    Raised,
    /// Somebody has taken it.
    Acknowledged,
    /// Closed.
    Cleared,
}

impl AlarmState {
    /// Lower-case name as stored and served.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Raised => "raised",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Cleared => "cleared",
        }
    }

    /// Parse the lower-case name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "raised" => Some(AlarmState::Raised),
            "acknowledged" => Some(AlarmState::Acknowledged),
            "cleared" => Some(AlarmState::Cleared),
            _ => None,
        }
    }
}

/// A transition that the lifecycle forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} an alarm that is {state}")]
pub struct AlarmTransitionError {
    /// What was attempted.
    pub action: &'static str,
    /// The state it was in.
    pub state: &'static str,
}

/// A note left by a person (or by usan) on an alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmNote {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub by: String,
    /// What they did: `raise`, `acknowledge`, `clear`, `note`.
    pub action: String,
    /// Free text.
    pub text: String,
}

/// Who did something to an alarm, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signoff {
    /// Who.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// One alarm on one asset from one detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Store identifier (0 until stored).
    pub id: i64,
    /// Asset identifier.
    pub asset: String,
    /// Detector name.
    pub detector: String,
    /// Lifecycle state.
    pub state: AlarmState,
    /// Whether the anomalous condition is still present.
    pub active: bool,
    /// Source time of the first anomalous frame.
    pub raised_at: Timestamp,
    /// Source time of the latest anomalous frame.
    pub last_seen_at: Timestamp,
    /// Anomalous frames so far.
    pub frames: u64,
    /// Highest score so far.
    pub peak_score: f64,
    /// Threshold level when raised.
    pub threshold: f64,
    /// The signals that explain the peak, largest first.
    pub top_signals: Vec<Contribution>,
    /// Who acknowledged, when.
    pub acknowledged: Option<Signoff>,
    /// Who cleared, when.
    pub cleared: Option<Signoff>,
    /// History of actions and notes.
    pub notes: Vec<AlarmNote>,
}

impl Alarm {
    /// A new raised alarm from the first anomalous frame.
    #[must_use]
    pub fn raise(
        asset: &str,
        detector: &str,
        at: Timestamp,
        score: f64,
        threshold: f64,
        top_signals: Vec<Contribution>,
    ) -> Self {
        let explanation =
            top_signals.iter().take(3).map(|c| format!("{} ({:.2})", c.signal, c.value)).collect::<Vec<_>>().join(", ");
        Alarm {
            id: 0,
            asset: asset.to_string(),
            detector: detector.to_string(),
            state: AlarmState::Raised,
            active: true,
            raised_at: at,
            last_seen_at: at,
            frames: 1,
            peak_score: score,
            threshold,
            top_signals,
            acknowledged: None,
            cleared: None,
            notes: vec![AlarmNote {
                at,
                by: "usan".into(),
                action: "raise".into(),
                text: format!("score {score:.3} over {threshold:.3}; top signals: {explanation}"),
            }],
        }
    }

    /// Fold in another anomalous frame of the same condition.
    pub fn observe(&mut self, at: Timestamp, score: f64, top_signals: Vec<Contribution>) {
        self.active = true;
        self.frames += 1;
        self.last_seen_at = self.last_seen_at.max(at);
        if score > self.peak_score {
            self.peak_score = score;
            self.top_signals = top_signals;
        }
    }

    /// The condition has returned to normal.
    pub fn condition_cleared(&mut self) {
        self.active = false;
    }

    /// Somebody takes the alarm.
    ///
    /// # Errors
    /// When the alarm is already acknowledged or cleared.
    pub fn acknowledge(&mut self, by: &str, note: &str, at: Timestamp) -> Result<(), AlarmTransitionError> {
        if self.state != AlarmState::Raised {
            return Err(AlarmTransitionError { action: "acknowledge", state: self.state.as_str() });
        }
        self.state = AlarmState::Acknowledged;
        self.acknowledged = Some(Signoff { by: by.to_string(), at });
        self.notes.push(AlarmNote { at, by: by.into(), action: "acknowledge".into(), text: note.into() });
        Ok(())
    }

    /// Somebody closes the alarm.
    ///
    /// # Errors
    /// When the alarm is already cleared.
    pub fn clear(&mut self, by: &str, note: &str, at: Timestamp) -> Result<(), AlarmTransitionError> {
        if self.state == AlarmState::Cleared {
            return Err(AlarmTransitionError { action: "clear", state: self.state.as_str() });
        }
        self.state = AlarmState::Cleared;
        self.cleared = Some(Signoff { by: by.to_string(), at });
        self.notes.push(AlarmNote { at, by: by.into(), action: "clear".into(), text: note.into() });
        Ok(())
    }

    /// Whether the alarm still collects frames (not cleared).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state != AlarmState::Cleared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm() -> Alarm {
        let top = vec![Contribution { signal: "temp".into(), value: 3.0 }];
        Alarm::raise("pump-1", "pca", Timestamp(0), 2.0, 1.0, top)
    }

    #[test]
    fn lifecycle_table() {
        // (actions, expected final state, expected errors)
        let cases: &[(&[&str], AlarmState, usize)] = &[
            (&["ack", "clear"], AlarmState::Cleared, 0),
            (&["clear"], AlarmState::Cleared, 0),
            (&["ack", "ack"], AlarmState::Acknowledged, 1),
            (&["clear", "ack"], AlarmState::Cleared, 1),
            (&["clear", "clear"], AlarmState::Cleared, 1),
        ];
        for (actions, want, want_errors) in cases {
            let mut a = alarm();
            let errors = actions
                .iter()
                .filter(|action| {
                    let result = if **action == "ack" {
                        a.acknowledge("kim", "looking", Timestamp(5))
                    } else {
                        a.clear("kim", "fixed", Timestamp(9))
                    };
                    result.is_err()
                })
                .count();
            assert_eq!(a.state, *want, "{actions:?}");
            assert_eq!(errors, *want_errors, "{actions:?}");
        }
    }

    #[test]
    fn observe_tracks_peak_and_explanation() {
        let mut a = alarm();
        a.observe(Timestamp(10), 1.5, vec![]);
        assert_eq!(a.top_signals[0].signal, "temp");
        a.observe(Timestamp(20), 5.0, vec![Contribution { signal: "flow".into(), value: 4.0 }]);
        assert_eq!((a.frames, a.peak_score, a.last_seen_at), (3, 5.0, Timestamp(20)));
        assert_eq!(a.top_signals[0].signal, "flow");
        assert!(a.notes[0].text.contains("temp"));
    }
}
