//! Frame assembly: per-signal samples in, per-asset aligned frames out.
//!
//! Detectors look at all of an asset's signals at one instant, but plant
//! sources deliver one tag at a time, sometimes late, out of order, twice or
//! not at all. The [`FrameAssembler`] makes that explicit:
//!
//! - **Alignment**: samples with the same timestamp form one frame.
//! - **Complete frames** are emitted at once, together with every older
//!   pending frame (oldest first).
//! - **Out of order** samples are fine while their frame is still pending.
//!   A frame stays pending until it is complete, until a sample arrives more
//!   than `max_lateness_ms` after it, or until more than `max_pending` frames
//!   are pending (memory bound); then it is emitted incomplete.
//! - **Late** samples, at or before the last emitted frame, are counted and
//!   not scored again: a frame is scored once. An assembler told to
//!   [`FrameAssembler::keep_late`] hands them back ([`FrameAssembler::take_late`])
//!   so the caller can store them into the frame already emitted.
//! - **Duplicates** (same signal, same timestamp, frame still pending) are
//!   counted; the last value wins.
//! - **Missing** values of an emitted frame are filled with the signal's last
//!   emitted value when `hold_last` is set (counted in [`Frame::filled`]),
//!   else left as NaN, which every detector accepts.
//! - Samples whose quality is not [`Quality::Good`] are counted and treated
//!   as missing.

use crate::model::{Quality, Sample, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Settings of a [`FrameAssembler`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramePolicy {
    /// How long a frame waits for its missing signals, in ms of source time.
    #[serde(default = "default_max_lateness_ms")]
    pub max_lateness_ms: i64,
    /// At most this many frames wait at once; the oldest is emitted beyond it.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Fill missing values with the signal's last emitted value.
    #[serde(default = "default_hold_last")]
    pub hold_last: bool,
}

fn default_max_lateness_ms() -> i64 {
    5_000
}
fn default_max_pending() -> usize {
    256
}
fn default_hold_last() -> bool {
    true
}

impl Default for FramePolicy {
    fn default() -> Self {
        FramePolicy {
            max_lateness_ms: default_max_lateness_ms(),
            max_pending: default_max_pending(),
            hold_last: default_hold_last(),
        }
    }
}

/// One asset's signals aligned at one timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The common timestamp.
    pub ts: Timestamp,
    /// One value per signal, in the asset's signal order; NaN when missing.
    pub values: Vec<f64>,
    /// Indices of the values that were missing and filled from the last frame.
    pub filled: Vec<usize>,
    /// How many values are NaN (missing, not filled).
    pub missing: usize,
}

/// Counters of what the assembler did with its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AssemblyStats {
    /// Samples accepted into a pending frame.
    pub accepted: u64,
    /// Samples at or before the last emitted frame, dropped.
    pub late: u64,
    /// Samples that replaced a value already pending.
    pub duplicate: u64,
    /// Samples whose quality was not good.
    pub not_good: u64,
    /// Samples naming a signal index the asset does not have.
    pub unknown_signal: u64,
    /// Frames emitted.
    pub frames: u64,
    /// Frames emitted with at least one value missing or filled.
    pub incomplete_frames: u64,
}

struct Pending {
    values: Vec<f64>,
    seen: usize,
}

/// Aligns one asset's samples into frames. See the module docs for the policy.
pub struct FrameAssembler {
    policy: FramePolicy,
    signals: usize,
    pending: BTreeMap<Timestamp, Pending>,
    last_emitted: Option<Timestamp>,
    last_values: Vec<f64>,
    stats: AssemblyStats,
    /// Late samples kept for the caller, when asked to.
    late: Option<Vec<Sample>>,
}

impl FrameAssembler {
    /// An assembler for an asset with `signals` signals.
    #[must_use]
    pub fn new(signals: usize, policy: FramePolicy) -> Self {
        FrameAssembler {
            policy,
            signals,
            pending: BTreeMap::new(),
            last_emitted: None,
            last_values: vec![f64::NAN; signals],
            stats: AssemblyStats::default(),
            late: None,
        }
    }

    /// Keep late (good, finite) samples for [`FrameAssembler::take_late`]
    /// instead of only counting them. The caller must take them after each
    /// push, or they accumulate.
    #[must_use]
    pub fn keep_late(mut self) -> Self {
        self.late = Some(Vec::new());
        self
    }

    /// The late samples kept since the last call, in arrival order.
    pub fn take_late(&mut self) -> Vec<Sample> {
        self.late.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Counters since creation.
    #[must_use]
    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    /// Frames waiting for more samples.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The newest emitted frame's time: every accepted sample at or before it
    /// is in an emitted frame, every later one is pending.
    #[must_use]
    pub fn watermark(&self) -> Option<Timestamp> {
        self.last_emitted
    }

    /// Treat everything at or before `ts` as already emitted (e.g. restored
    /// from the store after a restart), so it is not scored twice.
    pub fn set_watermark(&mut self, ts: Timestamp) {
        self.last_emitted = Some(ts);
    }

    /// Add one sample; frames that became ready are appended to `out`.
    pub fn push(&mut self, sample: Sample, out: &mut Vec<Frame>) {
        if sample.signal >= self.signals {
            self.stats.unknown_signal += 1;
            return;
        }
        if sample.quality != Quality::Good || !sample.value.is_finite() {
            self.stats.not_good += 1;
            return;
        }
        if self.last_emitted.is_some_and(|last| sample.ts <= last) {
            self.stats.late += 1;
            if let Some(late) = &mut self.late {
                late.push(sample);
            }
            return;
        }
        self.stats.accepted += 1;
        let signals = self.signals;
        let slot =
            self.pending.entry(sample.ts).or_insert_with(|| Pending { values: vec![f64::NAN; signals], seen: 0 });
        if slot.values[sample.signal].is_nan() {
            slot.seen += 1;
        } else {
            self.stats.duplicate += 1;
        }
        slot.values[sample.signal] = sample.value;
        if slot.seen == self.signals {
            self.emit_through(sample.ts, out);
        }
        self.emit_overdue(out);
    }

    /// Add a whole row of values at one timestamp (the common case for file
    /// replay); NaN marks a missing value. A complete row on time skips the
    /// per-sample bookkeeping.
    pub fn push_row(&mut self, ts: Timestamp, values: Vec<f64>, out: &mut Vec<Frame>) {
        let on_time = self.last_emitted.is_none_or(|last| ts > last);
        let newest_pending = self.pending.last_key_value().map(|(t, _)| *t);
        let complete = values.len() == self.signals && values.iter().all(|v| v.is_finite());
        if on_time && complete && newest_pending.is_none_or(|p| ts > p) {
            self.stats.accepted += values.len() as u64;
            self.emit_through(ts, out);
            out.push(self.complete(ts, values));
            return;
        }
        for (signal, value) in values.into_iter().enumerate() {
            if value.is_nan() {
                continue;
            }
            self.push(Sample { signal, ts, value, quality: Quality::Good }, out);
        }
    }

    /// Emit every pending frame, oldest first (at shutdown).
    pub fn flush(&mut self, out: &mut Vec<Frame>) {
        if let Some((&newest, _)) = self.pending.last_key_value() {
            self.emit_through(newest, out);
        }
    }

    fn emit_overdue(&mut self, out: &mut Vec<Frame>) {
        while let (Some((&oldest, _)), Some((&newest, _))) =
            (self.pending.first_key_value(), self.pending.last_key_value())
        {
            let overdue = newest.0.saturating_sub(oldest.0) > self.policy.max_lateness_ms;
            if !overdue && self.pending.len() <= self.policy.max_pending {
                break;
            }
            self.emit_through(oldest, out);
        }
    }

    fn emit_through(&mut self, ts: Timestamp, out: &mut Vec<Frame>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > ts {
                break;
            }
            let (frame_ts, pending) = entry.remove_entry();
            out.push(self.complete(frame_ts, pending.values));
        }
    }

    fn complete(&mut self, ts: Timestamp, mut values: Vec<f64>) -> Frame {
        let mut filled = Vec::new();
        let mut missing = 0;
        for (i, (value, last)) in values.iter_mut().zip(self.last_values.iter_mut()).enumerate() {
            if value.is_nan() {
                if self.policy.hold_last && !last.is_nan() {
                    *value = *last;
                    filled.push(i);
                } else {
                    missing += 1;
                }
            } else {
                *last = *value;
            }
        }
        self.last_emitted = Some(ts);
        self.stats.frames += 1;
        if !filled.is_empty() || missing > 0 {
            self.stats.incomplete_frames += 1;
        }
        Frame { ts, values, filled, missing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(signal: usize, ts: i64, value: f64) -> Sample {
        Sample { signal, ts: Timestamp(ts), value, quality: Quality::Good }
    }

    fn run(policy: FramePolicy, samples: &[Sample]) -> (Vec<Frame>, AssemblyStats) {
        let mut asm = FrameAssembler::new(2, policy);
        let mut out = Vec::new();
        for sample in samples {
            asm.push(*sample, &mut out);
        }
        asm.flush(&mut out);
        (out, asm.stats())
    }

    #[test]
    fn alignment_policy_table() {
        let hold = FramePolicy { max_lateness_ms: 100, max_pending: 8, hold_last: true };
        let no_hold = FramePolicy { hold_last: false, ..hold };
        struct Case {
            name: &'static str,
            policy: FramePolicy,
            input: Vec<Sample>,
            frames: Vec<(i64, [f64; 2])>,
            late: u64,
            duplicate: u64,
        }
        let cases = vec![
            Case {
                name: "complete in order",
                policy: hold,
                input: vec![s(0, 0, 1.0), s(1, 0, 2.0), s(0, 10, 3.0), s(1, 10, 4.0)],
                frames: vec![(0, [1.0, 2.0]), (10, [3.0, 4.0])],
                late: 0,
                duplicate: 0,
            },
            Case {
                name: "out of order within lateness",
                policy: hold,
                input: vec![s(0, 10, 3.0), s(0, 0, 1.0), s(1, 0, 2.0), s(1, 10, 4.0)],
                frames: vec![(0, [1.0, 2.0]), (10, [3.0, 4.0])],
                late: 0,
                duplicate: 0,
            },
            Case {
                name: "late sample after emission is dropped",
                policy: hold,
                input: vec![s(0, 10, 3.0), s(1, 10, 4.0), s(0, 0, 1.0)],
                frames: vec![(10, [3.0, 4.0])],
                late: 1,
                duplicate: 0,
            },
            Case {
                name: "duplicate keeps last value",
                policy: hold,
                input: vec![s(0, 0, 1.0), s(0, 0, 9.0), s(1, 0, 2.0)],
                frames: vec![(0, [9.0, 2.0])],
                late: 0,
                duplicate: 1,
            },
            Case {
                name: "missing value held from last frame",
                policy: hold,
                input: vec![s(0, 0, 1.0), s(1, 0, 2.0), s(0, 10, 3.0), s(0, 500, 5.0), s(1, 500, 6.0)],
                frames: vec![(0, [1.0, 2.0]), (10, [3.0, 2.0]), (500, [5.0, 6.0])],
                late: 0,
                duplicate: 0,
            },
            Case {
                name: "missing value left NaN without hold",
                policy: no_hold,
                input: vec![s(0, 0, 1.0), s(1, 0, 2.0), s(0, 10, 3.0), s(0, 500, 5.0), s(1, 500, 6.0)],
                frames: vec![(0, [1.0, 2.0]), (10, [3.0, f64::NAN]), (500, [5.0, 6.0])],
                late: 0,
                duplicate: 0,
            },
        ];
        for case in cases {
            let (frames, stats) = run(case.policy, &case.input);
            let got: Vec<(i64, Vec<f64>)> = frames.iter().map(|f| (f.ts.0, f.values.clone())).collect();
            assert_eq!(got.len(), case.frames.len(), "{}: {got:?}", case.name);
            for ((ts, values), (want_ts, want)) in got.iter().zip(&case.frames) {
                assert_eq!(ts, want_ts, "{}", case.name);
                for (v, w) in values.iter().zip(want) {
                    assert!(v == w || (v.is_nan() && w.is_nan()), "{}: {values:?} vs {want:?}", case.name);
                }
            }
            assert_eq!(stats.late, case.late, "{}", case.name);
            assert_eq!(stats.duplicate, case.duplicate, "{}", case.name);
        }
    }

    #[test]
    fn pending_is_bounded() {
        let policy = FramePolicy { max_lateness_ms: i64::MAX, max_pending: 4, hold_last: false };
        let mut asm = FrameAssembler::new(2, policy);
        let mut out = Vec::new();
        for t in 0..100 {
            asm.push(s(0, t, 1.0), &mut out);
            assert!(asm.pending_len() <= 4);
        }
        assert_eq!(out.len(), 96);
    }

    #[test]
    fn bad_quality_and_nan_are_not_scored() {
        let mut asm = FrameAssembler::new(1, FramePolicy::default());
        let mut out = Vec::new();
        asm.push(Sample { quality: Quality::Bad, ..s(0, 0, 1.0) }, &mut out);
        asm.push(s(0, 1, f64::NAN), &mut out);
        asm.push(s(5, 1, 1.0), &mut out);
        assert!(out.is_empty());
        assert_eq!(asm.stats().not_good, 2);
        assert_eq!(asm.stats().unknown_signal, 1);
    }

    #[test]
    fn watermark_skips_replayed_history() {
        let mut asm = FrameAssembler::new(1, FramePolicy::default());
        asm.set_watermark(Timestamp(10));
        let mut out = Vec::new();
        asm.push_row(Timestamp(5), vec![1.0], &mut out);
        asm.push_row(Timestamp(11), vec![1.0], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(asm.stats().late, 1);
    }

    #[test]
    fn late_samples_are_handed_back_only_when_kept() {
        for keep in [false, true] {
            let asm = FrameAssembler::new(2, FramePolicy::default());
            let mut asm = if keep { asm.keep_late() } else { asm };
            let mut out = Vec::new();
            asm.push_row(Timestamp(10), vec![1.0, 2.0], &mut out);
            asm.push(s(1, 10, 2.5), &mut out); // a resend with another value
            asm.push(Sample { quality: Quality::Bad, ..s(0, 5, 1.0) }, &mut out); // not good: never kept
            asm.push(s(0, 11, 3.0), &mut out); // on time: pending
            assert_eq!(asm.stats().late, 1);
            let late = asm.take_late();
            if keep {
                assert_eq!(late.len(), 1);
                assert_eq!((late[0].signal, late[0].ts, late[0].value), (1, Timestamp(10), 2.5));
            } else {
                assert!(late.is_empty());
            }
            assert!(asm.take_late().is_empty(), "taken once");
        }
    }
}
