//! The alarm lifecycle people work with: raised → acknowledged → (assigned)
//! → cleared, with who, when and a note at every step, comments at any
//! time, and the cause recorded when it is closed.
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
    /// Handed to somebody to fix.
    Assigned,
    /// Closed.
    Cleared,
}

impl AlarmState {
    /// The states of an alarm that is not closed.
    pub const OPEN: [AlarmState; 3] = [AlarmState::Raised, AlarmState::Acknowledged, AlarmState::Assigned];

    /// Lower-case name as stored and served.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Raised => "raised",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Assigned => "assigned",
            AlarmState::Cleared => "cleared",
        }
    }

    /// Parse the lower-case name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "raised" => Some(AlarmState::Raised),
            "acknowledged" => Some(AlarmState::Acknowledged),
            "assigned" => Some(AlarmState::Assigned),
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
    /// What they did: `raise`, `acknowledge`, `assign`, `comment`, `escalate`, `clear`.
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

/// Who has an alarm to fix, since when, and who handed it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Who is to fix it.
    pub to: String,
    /// Who assigned it.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// Declared maintenance: while it lasts no alarm is raised for its asset
/// (every asset when `asset` is `None`); findings are still recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    /// Store identifier (0 until stored).
    pub id: i64,
    /// The asset, or `None` for the whole plant.
    pub asset: Option<String>,
    /// First instant covered.
    pub starts: Timestamp,
    /// First instant no longer covered.
    pub ends: Timestamp,
    /// Who declared it.
    pub by: String,
    /// What is being done.
    pub note: String,
}

impl MaintenanceWindow {
    /// Whether it silences `asset` at `at`.
    #[must_use]
    pub fn covers(&self, asset: &str, at: Timestamp) -> bool {
        self.asset.as_deref().is_none_or(|a| a == asset) && self.starts <= at && at < self.ends
    }
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
    /// Who has it to fix (the latest assignment).
    #[serde(default)]
    pub assigned: Option<Assignment>,
    /// Who cleared, when.
    pub cleared: Option<Signoff>,
    /// Why it happened, as recorded when it was cleared.
    #[serde(default)]
    pub cause: Option<String>,
    /// When it was escalated for lying unacknowledged too long.
    #[serde(default)]
    pub escalated_at: Option<Timestamp>,
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
            assigned: None,
            cleared: None,
            cause: None,
            escalated_at: None,
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

    /// Hand the alarm to somebody to fix (again, to hand it on). Assigning
    /// a raised alarm acknowledges it too.
    ///
    /// # Errors
    /// When the alarm is cleared.
    pub fn assign(&mut self, by: &str, to: &str, note: &str, at: Timestamp) -> Result<(), AlarmTransitionError> {
        if self.state == AlarmState::Cleared {
            return Err(AlarmTransitionError { action: "assign", state: self.state.as_str() });
        }
        if self.acknowledged.is_none() {
            self.acknowledged = Some(Signoff { by: by.to_string(), at });
        }
        self.state = AlarmState::Assigned;
        self.assigned = Some(Assignment { to: to.to_string(), by: by.to_string(), at });
        let text = if note.is_empty() { format!("to {to}") } else { format!("to {to}: {note}") };
        self.notes.push(AlarmNote { at, by: by.into(), action: "assign".into(), text });
        Ok(())
    }

    /// Nobody has acknowledged it in time: escalate it (once).
    ///
    /// # Errors
    /// When it is no longer raised, or already escalated.
    pub fn escalate(&mut self, note: &str, at: Timestamp) -> Result<(), AlarmTransitionError> {
        if self.state != AlarmState::Raised || self.escalated_at.is_some() {
            return Err(AlarmTransitionError { action: "escalate", state: self.state.as_str() });
        }
        self.escalated_at = Some(at);
        self.notes.push(AlarmNote { at, by: "usan".into(), action: "escalate".into(), text: note.into() });
        Ok(())
    }

    /// Whether it is due for escalation at `now`: raised, unacknowledged, not
    /// yet escalated, raised at least `after_ms` ago.
    #[must_use]
    pub fn escalation_due(&self, now: Timestamp, after_ms: i64) -> bool {
        self.state == AlarmState::Raised && self.escalated_at.is_none() && now.0 - self.raised_at.0 >= after_ms
    }

    /// A comment in the alarm's history, in any state (also after it is closed).
    pub fn comment(&mut self, by: &str, text: &str, at: Timestamp) {
        self.notes.push(AlarmNote { at, by: by.into(), action: "comment".into(), text: text.into() });
    }

    /// Somebody closes the alarm, saying why it happened when known.
    ///
    /// # Errors
    /// When the alarm is already cleared.
    pub fn clear(
        &mut self,
        by: &str,
        note: &str,
        cause: Option<&str>,
        at: Timestamp,
    ) -> Result<(), AlarmTransitionError> {
        if self.state == AlarmState::Cleared {
            return Err(AlarmTransitionError { action: "clear", state: self.state.as_str() });
        }
        self.state = AlarmState::Cleared;
        self.cleared = Some(Signoff { by: by.to_string(), at });
        self.cause = cause.map(str::to_string);
        let text = match cause {
            Some(cause) if note.is_empty() => format!("cause: {cause}"),
            Some(cause) => format!("cause: {cause}; {note}"),
            None => note.to_string(),
        };
        self.notes.push(AlarmNote { at, by: by.into(), action: "clear".into(), text });
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
        // (actions, expected final state, expected refusals)
        let cases: &[(&[&str], AlarmState, usize)] = &[
            (&["ack", "clear"], AlarmState::Cleared, 0),
            (&["clear"], AlarmState::Cleared, 0),
            (&["ack", "assign", "clear"], AlarmState::Cleared, 0),
            (&["assign"], AlarmState::Assigned, 0),
            (&["assign", "assign"], AlarmState::Assigned, 0),
            (&["assign", "ack"], AlarmState::Assigned, 1),
            (&["ack", "ack"], AlarmState::Acknowledged, 1),
            (&["clear", "ack"], AlarmState::Cleared, 1),
            (&["clear", "assign"], AlarmState::Cleared, 1),
            (&["clear", "clear"], AlarmState::Cleared, 1),
            (&["comment", "clear", "comment"], AlarmState::Cleared, 0),
        ];
        for (actions, want, want_refusals) in cases {
            let mut a = alarm();
            let refusals = actions
                .iter()
                .filter(|action| {
                    let result = match **action {
                        "ack" => a.acknowledge("kim", "looking", Timestamp(5)),
                        "assign" => a.assign("kim", "lee", "bearing?", Timestamp(6)),
                        "comment" => {
                            a.comment("lee", "vibration up since Monday", Timestamp(7));
                            Ok(())
                        }
                        _ => a.clear("lee", "replaced", Some("bearing wear"), Timestamp(9)),
                    };
                    result.is_err()
                })
                .count();
            assert_eq!(a.state, *want, "{actions:?}");
            assert_eq!(refusals, *want_refusals, "{actions:?}");
            // Every accepted step is in the history, with who and when.
            assert_eq!(a.notes.len(), 1 + actions.len() - refusals, "{actions:?}");
        }
    }

    #[test]
    fn assigning_a_raised_alarm_acknowledges_it_and_clearing_records_the_cause() {
        let mut a = alarm();
        a.assign("kim", "lee", "", Timestamp(6)).unwrap();
        assert_eq!(a.acknowledged, Some(Signoff { by: "kim".into(), at: Timestamp(6) }));
        assert_eq!(a.assigned, Some(Assignment { to: "lee".into(), by: "kim".into(), at: Timestamp(6) }));
        a.clear("lee", "replaced the bearing", Some("bearing wear"), Timestamp(9)).unwrap();
        assert_eq!(a.cause.as_deref(), Some("bearing wear"));
        let last = a.notes.last().unwrap();
        assert_eq!((last.by.as_str(), last.action.as_str()), ("lee", "clear"));
        assert_eq!(last.text, "cause: bearing wear; replaced the bearing");
        assert!(AlarmState::OPEN.iter().all(|s| AlarmState::parse(s.as_str()) == Some(*s)));
    }

    #[test]
    fn escalation_is_due_once_for_a_raised_alarm_left_alone() {
        let mut a = alarm(); // raised at 0
        assert!(!a.escalation_due(Timestamp(999), 1000));
        assert!(a.escalation_due(Timestamp(1000), 1000));
        a.escalate("unacknowledged for 1s", Timestamp(1000)).unwrap();
        assert!(!a.escalation_due(Timestamp(5000), 1000));
        assert!(a.escalate("again", Timestamp(6000)).is_err());
        let mut taken = alarm();
        taken.acknowledge("kim", "", Timestamp(10)).unwrap();
        assert!(!taken.escalation_due(Timestamp(5000), 1000));
    }

    #[test]
    fn a_maintenance_window_covers_its_asset_for_its_time() {
        let window = |asset: Option<&str>| MaintenanceWindow {
            id: 1,
            asset: asset.map(str::to_string),
            starts: Timestamp(100),
            ends: Timestamp(200),
            by: "kim".into(),
            note: "bearing change".into(),
        };
        // (window asset, asked asset, at, covered)
        for (asset, asked, at, covered) in [
            (Some("pump-1"), "pump-1", 100, true),
            (Some("pump-1"), "pump-1", 199, true),
            (Some("pump-1"), "pump-1", 200, false),
            (Some("pump-1"), "pump-1", 99, false),
            (Some("pump-1"), "pump-2", 150, false),
            (None, "pump-2", 150, true),
        ] {
            assert_eq!(window(asset).covers(asked, Timestamp(at)), covered, "{asset:?} {asked} {at}");
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
