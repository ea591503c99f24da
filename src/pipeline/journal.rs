//! The ingest journal: why an acknowledged sample survives a crash.
//!
//! A source that acknowledges what it receives (a 2xx on
//! `POST /api/v1/samples`, a PUBACK for MQTT QoS 1) hands its batches to
//! the journal committer, which appends them to the store's journal in one
//! durable commit per group (many requests share one sync) and only then
//! routes them to the workers and lets the source acknowledge. A worker
//! releases an entry once every sample of it is in an emitted frame (the
//! release commits in the same transaction as those frames), so the journal
//! holds only what is still on its way: at start, the engine routes it again.
//! A replayed sample already in a stored frame is at or before its asset's
//! resume point and is dropped as late, so nothing is stored twice.
//!
//! Entries are encoded by [`encode`] with signal names, not indices, so a
//! journal written under one configuration replays under the next (a signal
//! that is gone is dropped and counted).

use crate::plant::Plant;
use crate::source::{Batch, Refused, Routed, Submission};
use crate::store::{JournalRecord, JournalRelease, Store, StoreError, WriteBatch};
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use usan_core::model::{Quality, Sample, Timestamp};

/// The version byte of [`encode`]'s format (CHANGELOG.md).
pub const FORMAT_VERSION: u8 = 1;

const KIND_SAMPLES: u8 = 0;
const KIND_ROWS: u8 = 1;

/// Why a journal entry could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Written by another version of usan.
    #[error("journal entry format {0}; this build reads {FORMAT_VERSION}")]
    Version(u8),
    /// Cut short or malformed.
    #[error("journal entry is malformed: {0}")]
    Malformed(&'static str),
}

/// Encode one asset's batch with its signal names.
#[must_use]
pub fn encode(plant: &Plant, batch: &Batch) -> JournalRecord {
    let asset = &plant.assets[batch.asset()];
    let mut out = vec![FORMAT_VERSION];
    match batch {
        Batch::Samples { samples, .. } => {
            // Only the signals the batch names, each once.
            let mut refs: HashMap<usize, u32> = HashMap::new();
            let mut names: Vec<&str> = Vec::new();
            for s in samples {
                refs.entry(s.signal).or_insert_with(|| {
                    names.push(asset.signals.get(s.signal).map_or("", |spec| spec.name.as_str()));
                    (names.len() - 1) as u32
                });
            }
            put_names(&mut out, &names);
            out.push(KIND_SAMPLES);
            out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
            for s in samples {
                out.extend_from_slice(&refs[&s.signal].to_le_bytes());
                out.extend_from_slice(&s.ts.0.to_le_bytes());
                out.extend_from_slice(&s.value.to_le_bytes());
                out.push(match s.quality {
                    Quality::Good => 0,
                    Quality::Uncertain => 1,
                    Quality::Bad => 2,
                });
            }
        }
        Batch::Rows { rows, .. } => {
            let names: Vec<&str> = asset.signals.iter().map(|s| s.name.as_str()).collect();
            put_names(&mut out, &names);
            out.push(KIND_ROWS);
            out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
            for (ts, values) in rows {
                out.extend_from_slice(&ts.0.to_le_bytes());
                for i in 0..names.len() {
                    out.extend_from_slice(&values.get(i).copied().unwrap_or(f64::NAN).to_le_bytes());
                }
            }
        }
    }
    JournalRecord { asset: asset.path.asset.clone(), payload: out }
}

fn put_names(out: &mut Vec<u8>, names: &[&str]) {
    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
    for name in names {
        let bytes = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
}

/// A decoded entry: the batch for today's plant, and how many values named
/// a signal the asset no longer has.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The batch, in today's signal indices.
    pub batch: Batch,
    /// Values dropped because their signal is gone.
    pub dropped: u64,
}

/// Decode an entry of asset index `asset` against today's plant.
///
/// # Errors
/// [`DecodeError`] for an entry of another format or a damaged one; never panics.
pub fn decode(plant: &Plant, asset: usize, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let spec = plant.assets.get(asset).ok_or(DecodeError::Malformed("unknown asset"))?;
    let mut input = Reader(payload);
    let version = input.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let count = input.u32()? as usize;
    // Every name takes at least its two length bytes.
    if count > input.0.len() / 2 {
        return Err(DecodeError::Malformed("signal count exceeds the entry"));
    }
    let mut signals = Vec::with_capacity(count);
    for _ in 0..count {
        let len = input.u16()? as usize;
        let name = std::str::from_utf8(input.take(len)?).map_err(|_| DecodeError::Malformed("signal name"))?;
        signals.push(spec.signal_index.get(name).copied());
    }
    let kind = input.u8()?;
    let n = input.u32()? as usize;
    let mut dropped = 0u64;
    let batch = match kind {
        KIND_SAMPLES => {
            if n > input.0.len() / 21 {
                return Err(DecodeError::Malformed("sample count exceeds the entry"));
            }
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let reference = input.u32()? as usize;
                let ts = Timestamp(input.i64()?);
                let value = input.f64()?;
                let quality = match input.u8()? {
                    0 => Quality::Good,
                    1 => Quality::Uncertain,
                    2 => Quality::Bad,
                    _ => return Err(DecodeError::Malformed("quality")),
                };
                match signals.get(reference) {
                    Some(Some(signal)) => samples.push(Sample { signal: *signal, ts, value, quality }),
                    Some(None) => dropped += 1,
                    None => return Err(DecodeError::Malformed("signal reference")),
                }
            }
            Batch::Samples { asset, samples }
        }
        KIND_ROWS => {
            let row_bytes = 8 * (count + 1);
            if n > input.0.len() / row_bytes {
                return Err(DecodeError::Malformed("row count exceeds the entry"));
            }
            let width = spec.signals.len();
            let mut rows = Vec::with_capacity(n);
            for _ in 0..n {
                let ts = Timestamp(input.i64()?);
                let mut values = vec![f64::NAN; width];
                for signal in &signals {
                    let value = input.f64()?;
                    match signal {
                        Some(i) => values[*i] = value,
                        None if !value.is_nan() => dropped += 1,
                        None => {}
                    }
                }
                rows.push((ts, values));
            }
            Batch::Rows { asset, rows }
        }
        _ => return Err(DecodeError::Malformed("kind")),
    };
    if !input.0.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    Ok(Decoded { batch, dropped })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.array()?))
    }
}

/// Most submissions committed together.
const MAX_GROUP: usize = 512;
/// Most samples committed together.
const MAX_GROUP_SAMPLES: usize = 200_000;

/// Append submissions to the journal, a group per commit, then route them
/// (in journal order) and answer their sources. Ends when every submitter
/// is gone, after routing everything it committed.
pub(crate) async fn committer(
    store: Arc<dyn Store>,
    plant: Arc<Plant>,
    mut queue: mpsc::Receiver<Submission>,
    shards: Arc<Vec<mpsc::Sender<Routed>>>,
    metrics: Arc<Metrics>,
) {
    let mut group: Vec<Submission> = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut samples = first.batches.iter().map(Batch::sample_count).sum::<usize>();
        group.push(first);
        while group.len() < MAX_GROUP && samples < MAX_GROUP_SAMPLES {
            match queue.try_recv() {
                Ok(next) => {
                    samples += next.batches.iter().map(Batch::sample_count).sum::<usize>();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let records: Vec<JournalRecord> =
            group.iter().flat_map(|s| s.batches.iter().map(|b| encode(&plant, b))).collect();
        let appended = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.journal_append(&records)).await
        };
        let seqs = match appended.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(seqs) => seqs,
            Err(cause) => {
                refuse(&mut group, &metrics, &cause);
                continue;
            }
        };
        metrics.journal_commits.inc();
        let mut seqs = seqs.into_iter();
        for submission in group.drain(..) {
            for batch in submission.batches {
                let count = batch.sample_count() as u64;
                let shard = &shards[batch.asset() % shards.len()];
                // A closed worker means shutdown; the entry stays in the
                // journal and is replayed at the next start.
                let _ = shard.send(Routed { batch, seq: seqs.next() }).await;
                metrics.samples_in.inc_by(count);
            }
            let _ = submission.done.send(Ok(()));
        }
    }
}

fn refuse(group: &mut Vec<Submission>, metrics: &Metrics, cause: &str) {
    metrics.journal_errors.inc();
    tracing::error!("the journal cannot commit, {} submissions refused: {cause}", group.len());
    for submission in group.drain(..) {
        let _ = submission.done.send(Err(Refused(cause.to_string())));
    }
}

/// Journal entries read per query at start.
const REPLAY_CHUNK: usize = 1024;

/// Route every journal entry left by the previous run, oldest first;
/// entries of assets no longer configured are released. Returns how many
/// entries were routed.
///
/// # Errors
/// When the store cannot be read.
pub(crate) async fn replay(
    store: &Arc<dyn Store>,
    plant: &Plant,
    shards: &[mpsc::Sender<Routed>],
    metrics: &Metrics,
) -> Result<u64, StoreError> {
    let mut after = 0i64;
    let mut routed = 0u64;
    loop {
        let entries = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.journal_read(after, REPLAY_CHUNK))
                .await
                .map_err(|_| StoreError::Poisoned)??
        };
        let Some(last) = entries.last() else {
            break;
        };
        after = last.seq;
        let mut gone: HashMap<String, i64> = HashMap::new();
        for entry in entries {
            let Some(&asset) = plant.asset_index.get(&entry.asset) else {
                gone.insert(entry.asset, entry.seq);
                continue;
            };
            let batch = match decode(plant, asset, &entry.payload) {
                Ok(decoded) => {
                    metrics.samples_dropped.inc_by(decoded.dropped);
                    decoded.batch
                }
                Err(e) => {
                    // Routed empty, so the worker releases it in order.
                    tracing::error!(asset = %entry.asset, seq = entry.seq, "journal entry skipped: {e}");
                    Batch::Samples { asset, samples: Vec::new() }
                }
            };
            let count = batch.sample_count() as u64;
            if shards[asset % shards.len()].send(Routed { batch, seq: Some(entry.seq) }).await.is_err() {
                return Ok(routed);
            }
            metrics.samples_in.inc_by(count);
            routed += 1;
        }
        if !gone.is_empty() {
            for asset in gone.keys() {
                tracing::warn!(asset = %asset, "journal entries of an asset no longer configured are dropped");
            }
            let release = gone.into_iter().map(|(asset, through)| JournalRelease { asset, through }).collect();
            let batch = WriteBatch { journal_release: release, ..WriteBatch::default() };
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.write(&batch)).await.map_err(|_| StoreError::Poisoned)??;
        }
    }
    Ok(routed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plant(signals: &[&str]) -> Plant {
        Plant::of_signals(&[("a", signals), ("b", &["x"])])
    }

    #[test]
    fn batches_round_trip() {
        let p = plant(&["x", "y", "z"]);
        let cases = [
            Batch::Samples {
                asset: 0,
                samples: vec![
                    Sample { signal: 2, ts: Timestamp(-5), value: 1.5, quality: Quality::Good },
                    Sample { signal: 0, ts: Timestamp(i64::MAX), value: -0.0, quality: Quality::Bad },
                    Sample { signal: 2, ts: Timestamp(7), value: f64::MAX, quality: Quality::Uncertain },
                ],
            },
            Batch::Samples { asset: 1, samples: Vec::new() },
            Batch::Rows {
                asset: 0,
                rows: vec![(Timestamp(1), vec![1.0, f64::NAN, 3.0]), (Timestamp(2), vec![4.0, 5.0, 6.0])],
            },
        ];
        for batch in cases {
            let record = encode(&p, &batch);
            let asset = p.asset_index[&record.asset];
            let decoded = decode(&p, asset, &record.payload).unwrap();
            assert_eq!(decoded.dropped, 0);
            match (&decoded.batch, &batch) {
                (Batch::Rows { rows: a, .. }, Batch::Rows { rows: b, .. }) => {
                    for ((ta, va), (tb, vb)) in a.iter().zip(b) {
                        assert_eq!(ta, tb);
                        assert!(va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()));
                    }
                }
                _ => assert_eq!(decoded.batch, batch),
            }
        }
    }

    #[test]
    fn signals_are_matched_by_name_under_a_new_configuration() {
        let before = plant(&["x", "y", "z"]);
        let after = plant(&["z", "x"]);
        let samples = vec![
            Sample { signal: 0, ts: Timestamp(1), value: 10.0, quality: Quality::Good },
            Sample { signal: 1, ts: Timestamp(1), value: 20.0, quality: Quality::Good },
            Sample { signal: 2, ts: Timestamp(1), value: 30.0, quality: Quality::Good },
        ];
        let record = encode(&before, &Batch::Samples { asset: 0, samples });
        let decoded = decode(&after, 0, &record.payload).unwrap();
        assert_eq!(decoded.dropped, 1);
        let Batch::Samples { samples, .. } = decoded.batch else { panic!("samples expected") };
        let got: Vec<(usize, f64)> = samples.iter().map(|s| (s.signal, s.value)).collect();
        assert_eq!(got, vec![(1, 10.0), (0, 30.0)]);

        let rows = Batch::Rows { asset: 0, rows: vec![(Timestamp(1), vec![1.0, 2.0, 3.0])] };
        let decoded = decode(&after, 0, &encode(&before, &rows).payload).unwrap();
        assert_eq!(decoded.dropped, 1);
        assert_eq!(decoded.batch, Batch::Rows { asset: 0, rows: vec![(Timestamp(1), vec![3.0, 1.0])] });
    }

    #[test]
    fn damaged_entries_are_refused_without_panicking() {
        let p = plant(&["x", "y"]);
        let record = encode(
            &p,
            &Batch::Samples {
                asset: 0,
                samples: vec![Sample { signal: 1, ts: Timestamp(3), value: 2.0, quality: Quality::Good }],
            },
        );
        // Every prefix is cut short; every single-byte change either reads or is refused.
        for len in 0..record.payload.len() {
            assert!(decode(&p, 0, &record.payload[..len]).is_err(), "prefix of {len} bytes");
        }
        for i in 0..record.payload.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = record.payload.clone();
                damaged[i] ^= flip;
                let _ = decode(&p, 0, &damaged);
            }
        }
        let cases: [(&[u8], DecodeError); 4] = [
            (&[2], DecodeError::Version(2)),
            (&[1, 255, 255, 255, 255], DecodeError::Malformed("signal count exceeds the entry")),
            (&[1, 0, 0, 0, 0, 9, 0, 0, 0, 0], DecodeError::Malformed("kind")),
            (&[1, 0, 0, 0, 0, 0, 255, 255, 255, 255], DecodeError::Malformed("sample count exceeds the entry")),
        ];
        for (bytes, error) in cases {
            assert_eq!(decode(&p, 0, bytes), Err(error));
        }
        assert_eq!(decode(&p, 9, &record.payload), Err(DecodeError::Malformed("unknown asset")));
    }
}
