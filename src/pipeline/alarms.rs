//! The open alarms, shared by the workers (which raise and update them) and
//! the API (where people acknowledge and clear them).
//!
//! One lock orders the two, so a person clearing an alarm and a worker
//! folding in a new anomalous frame never overwrite each other; every change
//! is written to the store while the lock is held. Calls block on the store.

use crate::common::HumanDuration;
use crate::store::{AlarmAction, Store, StoreError};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use usan_core::alarm::{Alarm, AlarmState, MaintenanceWindow};
use usan_core::model::{Contribution, Timestamp};

/// `[alarms]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// Clear an alarm by itself once its condition has returned to normal
    /// and somebody has acknowledged it.
    #[serde(default)]
    pub auto_clear: bool,
    /// Escalate an alarm nobody has acknowledged this long after it was raised
    /// (an `alarm_escalated` event to the sinks, a note in its history).
    #[serde(default)]
    pub escalate_after: Option<HumanDuration>,
}

type Key = (String, String);

/// Open (not cleared) alarms by asset and detector.
pub struct AlarmBook {
    store: Arc<dyn Store>,
    open: Mutex<HashMap<Key, Alarm>>,
    auto_clear: bool,
    /// Declared maintenance not yet over.
    maintenance: Mutex<Vec<MaintenanceWindow>>,
    metrics: Arc<crate::telemetry::Metrics>,
}

/// How many anomalous frames pass between persisted updates of an open
/// alarm's counters (a new peak is always persisted at once).
const PERSIST_EVERY: u64 = 50;

impl AlarmBook {
    /// A book holding the alarms that were open when the engine stopped.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        open_alarms: Vec<Alarm>,
        maintenance: Vec<MaintenanceWindow>,
        auto_clear: bool,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        let open = open_alarms
            .into_iter()
            .filter(Alarm::is_open)
            .map(|a| ((a.asset.clone(), a.detector.clone()), a))
            .collect();
        AlarmBook { store, open: Mutex::new(open), auto_clear, maintenance: Mutex::new(maintenance), metrics }
    }

    /// Declare maintenance (committed before returning): no new alarm for
    /// its asset while it lasts.
    ///
    /// # Errors
    /// When the store refuses the write.
    pub fn declare_maintenance(&self, mut window: MaintenanceWindow) -> Result<MaintenanceWindow, StoreError> {
        let mut windows = self.maintenance.lock().map_err(|_| StoreError::Poisoned)?;
        self.store.insert_maintenance(&mut window)?;
        windows.push(window.clone());
        Ok(window)
    }

    /// End maintenance now (committed before returning).
    ///
    /// # Errors
    /// [`StoreError::NoSuchWindow`] or a database error.
    pub fn end_maintenance(&self, id: i64, now: Timestamp) -> Result<MaintenanceWindow, StoreError> {
        let mut windows = self.maintenance.lock().map_err(|_| StoreError::Poisoned)?;
        let ended = self.store.end_maintenance(id, now)?;
        for window in windows.iter_mut().filter(|w| w.id == id) {
            window.ends = ended.ends;
        }
        windows.retain(|w| w.ends > now);
        Ok(ended)
    }

    /// Maintenance not over at `now`.
    #[must_use]
    pub fn maintenance(&self, now: Timestamp) -> Vec<MaintenanceWindow> {
        self.maintenance.lock().map(|w| w.iter().filter(|w| w.ends > now).cloned().collect()).unwrap_or_default()
    }

    fn in_maintenance(&self, asset: &str, at: Timestamp) -> bool {
        self.maintenance.lock().is_ok_and(|w| w.iter().any(|w| w.covers(asset, at)))
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<Key, Alarm>>, StoreError> {
        self.open.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Alarms not cleared.
    #[must_use]
    pub fn open_count(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Open alarms per asset id.
    #[must_use]
    pub fn open_by_asset(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        if let Ok(open) = self.open.lock() {
            for (asset, _) in open.keys() {
                *counts.entry(asset.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// An anomalous frame: raise a new alarm (returned, committed before
    /// this returns) or update the open one. An update worth keeping goes
    /// into `persist`, for the store writer to commit with the frames: the
    /// frame path never waits for the disk on an alarm that is already open.
    ///
    /// # Errors
    /// When the store refuses the write.
    pub fn on_anomalous(
        &self,
        (asset, detector): (&str, &str),
        ts: Timestamp,
        score: f64,
        threshold: f64,
        top: Vec<Contribution>,
        persist: &mut Vec<Alarm>,
    ) -> Result<Option<Alarm>, StoreError> {
        let mut open = self.lock()?;
        let key = (asset.to_string(), detector.to_string());
        if let Some(alarm) = open.get_mut(&key) {
            let was_active = alarm.active;
            let peak = alarm.peak_score;
            alarm.observe(ts, score, top);
            if !was_active || alarm.peak_score > peak || alarm.frames % PERSIST_EVERY == 0 {
                persist.push(alarm.clone());
            }
            return Ok(None);
        }
        if self.in_maintenance(asset, ts) {
            self.metrics.alarms_suppressed.inc_by(1);
            return Ok(None);
        }
        let mut alarm = Alarm::raise(asset, detector, ts, score, threshold, top);
        self.store.insert_alarm(&mut alarm)?;
        open.insert(key, alarm.clone());
        Ok(Some(alarm))
    }

    /// The condition returned to normal: mark the open alarm inactive (into
    /// `persist`, as for [`AlarmBook::on_anomalous`]) and clear it, committed
    /// at once, when auto-clear is on and somebody acknowledged it.
    ///
    /// # Errors
    /// When the store refuses the write.
    pub fn on_normal(
        &self,
        asset: &str,
        detector: &str,
        ts: Timestamp,
        persist: &mut Vec<Alarm>,
    ) -> Result<Option<Alarm>, StoreError> {
        let mut open = self.lock()?;
        let key = (asset.to_string(), detector.to_string());
        let Some(alarm) = open.get_mut(&key) else {
            return Ok(None);
        };
        if !alarm.active {
            return Ok(None);
        }
        alarm.condition_cleared();
        persist.push(alarm.clone());
        let snapshot = alarm.clone();
        if self.auto_clear && matches!(alarm.state, AlarmState::Acknowledged | AlarmState::Assigned) {
            let cleared = AlarmAction::Clear { cause: None };
            self.store.transition_alarm(alarm.id, cleared, "usan", "condition returned to normal", ts)?;
            open.remove(&key);
        }
        Ok(Some(snapshot))
    }

    /// Escalate every open alarm nobody has acknowledged within `after`
    /// (by its source time against `now`); committed before returning.
    ///
    /// # Errors
    /// When the store refuses the write.
    pub fn escalate_due(&self, now: Timestamp, after: std::time::Duration) -> Result<Vec<Alarm>, StoreError> {
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let mut open = self.lock()?;
        let mut escalated = Vec::new();
        for held in open.values_mut().filter(|a| a.escalation_due(now, after_ms)) {
            let note = format!("nobody acknowledged it within {}", humantime::format_duration(after));
            let alarm = self.store.transition_alarm(held.id, AlarmAction::Escalate, "usan", &note, now)?;
            held.escalated_at = alarm.escalated_at;
            held.notes = alarm.notes.clone();
            escalated.push(alarm);
        }
        Ok(escalated)
    }

    /// A person acknowledges, assigns, comments on or clears an alarm; committed before returning.
    ///
    /// # Errors
    /// [`StoreError::NoSuchAlarm`], [`StoreError::Transition`] or a database error.
    pub fn transition(&self, id: i64, action: AlarmAction<'_>, by: &str, note: &str) -> Result<Alarm, StoreError> {
        let mut open = self.lock()?;
        let now = Timestamp(chrono::Utc::now().timestamp_millis());
        let alarm = self.store.transition_alarm(id, action, by, note, now)?;
        let key = (alarm.asset.clone(), alarm.detector.clone());
        if alarm.is_open() {
            if let Some(held) = open.get_mut(&key) {
                held.state = alarm.state;
                held.acknowledged = alarm.acknowledged.clone();
                held.assigned = alarm.assigned.clone();
                held.notes = alarm.notes.clone();
            }
        } else if open.get(&key).is_some_and(|held| held.id == id) {
            open.remove(&key);
        }
        Ok(alarm)
    }
}
