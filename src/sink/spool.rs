//! Store-and-forward: a bounded on-disk queue between the engine and an
//! upstream that may be unreachable (a broker, later NATS or PostgreSQL).
//!
//! The engine appends records as they happen; a forwarder reads them in
//! order, delivers them, and only then acknowledges them. Both survive a
//! restart: what was appended and not acknowledged is delivered after it
//! (at least once: a record delivered just before a crash, but not yet
//! acknowledged, is delivered again).
//!
//! On disk, in the spool's folder:
//! - `records.log`: records, each `[length u32 LE][crc32 u32 LE][bytes]`;
//! - `records.ack`: the offset (u64 LE) of the first unacknowledged record.
//!
//! A torn record at the end (a crash mid-append) is cut off at open. The cap
//! bounds the unacknowledged bytes: a record that would exceed it is refused
//! and counted by the caller — never silently lost. When everything is
//! acknowledged the log is emptied; when the acknowledged head grows past
//! half the cap the unacknowledged tail is moved to the front.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: u64 = 8;

/// A bounded, durable FIFO of byte records.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    log: File,
    ack: File,
    /// Bytes in the log.
    len: u64,
    /// Offset of the first unacknowledged record.
    head: u64,
    /// Unacknowledged records.
    records: u64,
    max_bytes: u64,
}

/// One record read from the spool, with the offset just past it (to acknowledge).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The record's bytes.
    pub bytes: Vec<u8>,
    /// Acknowledging this offset acknowledges this record and all before it.
    pub end: u64,
}

impl Spool {
    /// Open (or create) the spool in `dir`, holding at most `max_bytes` unacknowledged.
    ///
    /// # Errors
    /// When the folder or its files cannot be created, read or repaired.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let log =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join("records.log"))?;
        let ack =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join("records.ack"))?;
        let file_len = log.metadata()?.len();
        let ack_len = ack.metadata()?.len();
        let mut offset = [0u8; 8];
        let head = match ack_len {
            0 => Some(0),
            8 => {
                ack.read_exact_at(&mut offset, 0)?;
                Some(u64::from_le_bytes(offset)).filter(|&head| head <= file_len)
            }
            _ => None,
        };
        let mut spool = Spool { dir: dir.to_path_buf(), log, ack, len: file_len, head: 0, records: 0, max_bytes };
        spool.head = match head {
            Some(head) if head == file_len || spool.read_at(head)?.is_some() => head,
            _ => {
                // The offset is damaged or not on a record: deliver again
                // from the last record boundary before it (at least once).
                let wanted = head.unwrap_or(0);
                let mut at = 0;
                while at < wanted {
                    match spool.read_at(at)? {
                        Some(record) if record.end <= wanted => at = record.end,
                        _ => break,
                    }
                }
                tracing::warn!(
                    "spool {}: the acknowledged offset is damaged; delivering again from byte {at}",
                    dir.display()
                );
                at
            }
        };
        // Walk the unacknowledged records up to the first unreadable one.
        let mut at = spool.head;
        while let Some(record) = spool.read_at(at)? {
            spool.records += 1;
            at = record.end;
        }
        if at < file_len {
            if spool.record_reaches_end(at)? {
                tracing::warn!("spool {}: cut {} bytes of a torn record at the end", dir.display(), file_len - at);
                spool.log.set_len(at)?;
                spool.log.sync_all()?;
                spool.len = at;
            } else {
                spool.salvage(at)?;
            }
        }
        Ok(spool)
    }

    /// Whether the unreadable record at `at` is the last one, as a crash
    /// mid-append leaves it: its header or bytes reach the end of the log.
    fn record_reaches_end(&self, at: u64) -> io::Result<bool> {
        if at + HEADER > self.len {
            return Ok(true);
        }
        let mut header = [0u8; 4];
        self.log.read_exact_at(&mut header, at)?;
        Ok(at + HEADER + u64::from(u32::from_le_bytes(header)) >= self.len)
    }

    /// A damaged record at `damaged` with more of the log after it: keep the
    /// bytes from it to the end in `records.damaged-<UTC time>` for an
    /// expert, and go on with every record still readable (the ones before
    /// it, and those after it when its length led to a readable record).
    fn salvage(&mut self, damaged: u64) -> io::Result<()> {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let kept_path = self.dir.join(format!("records.damaged-{stamp}"));
        let mut kept = File::create(&kept_path)?;
        self.log.seek(SeekFrom::Start(damaged))?;
        io::copy(&mut (&self.log).take(self.len - damaged), &mut kept)?;
        kept.sync_all()?;

        let fresh_path = self.dir.join("records.log.new");
        let mut fresh = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&fresh_path)?;
        self.log.seek(SeekFrom::Start(self.head))?;
        io::copy(&mut (&self.log).take(damaged - self.head), &mut fresh)?;
        let (mut at, mut lost, mut salvaged) = (damaged, 0u64, 0u64);
        while at < self.len {
            if let Some(record) = self.read_at(at)? {
                fresh.write_all(&self.log_bytes(at, record.end)?)?;
                self.records += 1;
                salvaged += 1;
                at = record.end;
                continue;
            }
            // Skip the damaged record when its length leads to a readable one.
            let mut header = [0u8; 4];
            self.log.read_exact_at(&mut header, at)?;
            let next = at + HEADER + u64::from(u32::from_le_bytes(header));
            lost += 1;
            if next < self.len && self.read_at(next)?.is_some() {
                at = next;
            } else {
                break;
            }
        }
        tracing::error!(
            "spool {}: {lost} damaged record(s) kept aside in {} ({} bytes from the first); {salvaged} record(s) after it salvaged",
            self.dir.display(),
            kept_path.display(),
            self.len - damaged
        );
        self.replace_log(fresh, &fresh_path)
    }

    fn log_bytes(&self, from: u64, to: u64) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; (to - from) as usize];
        self.log.read_exact_at(&mut bytes, from)?;
        Ok(bytes)
    }

    /// The folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unacknowledged records.
    #[must_use]
    pub fn backlog(&self) -> u64 {
        self.records
    }

    /// Unacknowledged bytes (headers included).
    #[must_use]
    pub fn backlog_bytes(&self) -> u64 {
        self.len - self.head
    }

    /// Append a record; `false` (nothing written) when it would take the
    /// backlog past the cap. Call [`Spool::sync`] after a batch.
    ///
    /// # Errors
    /// When the log cannot be written.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<bool> {
        let size = HEADER + bytes.len() as u64;
        if self.backlog_bytes() + size > self.max_bytes {
            return Ok(false);
        }
        let length = u32::try_from(bytes.len()).map_err(|_| io::Error::other("record over 4 GiB"))?;
        let mut buffer = Vec::with_capacity(size as usize);
        buffer.extend_from_slice(&length.to_le_bytes());
        buffer.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        buffer.extend_from_slice(bytes);
        self.log.write_all_at(&buffer, self.len)?;
        self.len += size;
        self.records += 1;
        Ok(true)
    }

    /// Make every pushed record durable.
    ///
    /// # Errors
    /// When the disk refuses.
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()
    }

    /// A handle to sync the log with (see [`Spool::sync`]) without holding
    /// the spool: the forwarder can go on reading while the disk syncs.
    ///
    /// # Errors
    /// When the file handle cannot be duplicated.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.log.try_clone()
    }

    /// Up to `max` records from the head, oldest first (not removed).
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn peek(&self, max: usize) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut at = self.head;
        while out.len() < max && at < self.len {
            let Some(record) = self.read_at(at)? else { break };
            at = record.end;
            out.push(record);
        }
        Ok(out)
    }

    /// Acknowledge every record up to `end` (a [`Record::end`]).
    ///
    /// # Errors
    /// When the offset cannot be written or the log compacted.
    pub fn ack(&mut self, end: u64) -> io::Result<()> {
        let end = end.min(self.len);
        let mut at = self.head;
        while at < end {
            let Some(record) = self.read_at(at)? else { break };
            at = record.end;
            self.records -= 1;
        }
        self.head = at;
        if self.head == self.len {
            // Everything delivered: start the log again.
            self.log.set_len(0)?;
            self.len = 0;
            self.head = 0;
        } else if self.head > self.max_bytes / 2 {
            self.compact()?;
        }
        // Not synced: after a power cut the offset may be older than the
        // broker's confirmations, so some records go again (at least once).
        self.ack.write_all_at(&self.head.to_le_bytes(), 0)
    }

    /// Move the unacknowledged tail to the front of a fresh log.
    fn compact(&mut self) -> io::Result<()> {
        let fresh_path = self.dir.join("records.log.new");
        let mut fresh = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&fresh_path)?;
        self.log.seek(SeekFrom::Start(self.head))?;
        io::copy(&mut (&self.log).take(self.len - self.head), &mut fresh)?;
        self.replace_log(fresh, &fresh_path)
    }

    /// Make `fresh` (written at `fresh_path`, every record unacknowledged)
    /// the log. Offset 0 goes down before the new log does: a crash in
    /// between delivers the acknowledged head again (at least once), never
    /// skips the tail.
    fn replace_log(&mut self, fresh: File, fresh_path: &Path) -> io::Result<()> {
        fresh.sync_all()?;
        self.ack.write_all_at(&0u64.to_le_bytes(), 0)?;
        self.ack.sync_data()?;
        std::fs::rename(fresh_path, self.dir.join("records.log"))?;
        File::open(&self.dir)?.sync_all()?;
        self.len = fresh.metadata()?.len();
        self.log = fresh;
        self.head = 0;
        Ok(())
    }

    /// The record at `at`, or `None` if it is torn or corrupt.
    fn read_at(&self, at: u64) -> io::Result<Option<Record>> {
        if at + HEADER > self.len {
            return Ok(None);
        }
        let mut header = [0u8; 8];
        self.log.read_exact_at(&mut header, at)?;
        let length = u64::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if at + HEADER + length > self.len {
            return Ok(None);
        }
        let mut bytes = vec![0u8; length as usize];
        self.log.read_exact_at(&mut bytes, at + HEADER)?;
        if crc32fast::hash(&bytes) != crc {
            return Ok(None);
        }
        Ok(Some(Record { bytes, end: at + HEADER + length }))
    }
}

/// A spooled sink's folder: `spool/<name>` by default, relative to the
/// configuration file's folder `dir`.
#[must_use]
pub fn resolve_dir(spool: Option<PathBuf>, name: &str, dir: &Path) -> PathBuf {
    let spool = spool.unwrap_or_else(|| PathBuf::from("spool").join(name));
    if spool.is_relative() { dir.join(spool) } else { spool }
}

/// The problem with a spool size, if any.
#[must_use]
pub fn check_max_bytes(at: &str, max_bytes: u64) -> Option<String> {
    (max_bytes < 4096).then(|| format!("{at}: spool_max_bytes {max_bytes} (at least 4096)"))
}

/// The engine's side of a spooled sink: appends records, syncs them, wakes
/// the sender, and counts what a full spool refuses.
pub struct Appender {
    /// The spool, shared with the sender.
    pub spool: std::sync::Arc<std::sync::Mutex<Spool>>,
    /// Woken when records were added.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// The sink's stats (backlog, overflow).
    pub stats: std::sync::Arc<crate::telemetry::LinkStats>,
    /// Rate-limited log of refusals.
    pub log: crate::common::CauseLog,
}

impl Appender {
    /// Append `records` and sync them to disk before returning. A record the
    /// spool has no room for (its cap, or a full disk) is refused: counted
    /// in the sink's overflow and logged, never silently lost; the next
    /// batch tries again.
    ///
    /// # Errors
    /// When the appended records cannot be synced.
    pub fn append(&mut self, records: impl IntoIterator<Item = Vec<u8>>) -> anyhow::Result<()> {
        let mut spool = self.spool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut added = false;
        let dir = spool.dir().to_path_buf();
        let at = || format!("spool {}", dir.display());
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            match spool.push(&record) {
                Ok(true) => added = true,
                Ok(false) => {
                    self.stats.overflow.inc_by(1);
                    self.log.note("spool full: event refused", &format!("{} bytes undelivered", spool.backlog_bytes()));
                }
                Err(e) => {
                    // The disk said no (full, failing): this record and the
                    // rest of the batch are refused.
                    self.stats.overflow.inc_by(1 + records.count() as u64);
                    self.log.note("spool cannot be written: events refused", &format!("{}: {e}", dir.display()));
                    break;
                }
            }
        }
        if added {
            self.stats.backlog.store(spool.backlog(), std::sync::atomic::Ordering::Relaxed);
            let log = anyhow::Context::with_context(spool.sync_handle(), at)?;
            drop(spool);
            self.wake.notify_one();
            anyhow::Context::with_context(log.sync_data(), at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| String::from_utf8(r.bytes.clone()).unwrap()).collect()
    }

    #[test]
    fn records_come_back_in_order_and_acknowledged_ones_stay_gone_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            assert!(spool.push(format!("event {i}").as_bytes()).unwrap());
        }
        spool.sync().unwrap();
        let first = spool.peek(2).unwrap();
        assert_eq!(texts(&first), ["event 0", "event 1"]);
        spool.ack(first[1].end).unwrap();
        assert_eq!(spool.backlog(), 3);
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.backlog(), 3);
        let rest = spool.peek(10).unwrap();
        assert_eq!(texts(&rest), ["event 2", "event 3", "event 4"]);
        spool.ack(rest[2].end).unwrap();
        assert_eq!((spool.backlog(), spool.backlog_bytes()), (0, 0));
        assert_eq!(std::fs::metadata(dir.path().join("records.log")).unwrap().len(), 0, "emptied");
    }

    #[test]
    fn the_cap_refuses_new_records_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 40).unwrap();
        assert!(spool.push(&[1; 10]).unwrap()); // 18 bytes
        assert!(spool.push(&[2; 10]).unwrap()); // 36 bytes
        assert!(!spool.push(&[3; 10]).unwrap(), "54 bytes would pass the cap of 40");
        assert_eq!(spool.backlog(), 2);
        let head = spool.peek(1).unwrap();
        spool.ack(head[0].end).unwrap();
        assert!(spool.push(&[3; 10]).unwrap(), "room again after an acknowledgement");
        assert_eq!(spool.peek(5).unwrap().iter().map(|r| r.bytes[0]).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(b"whole").unwrap();
        spool.push(b"torn record").unwrap();
        spool.sync().unwrap();
        drop(spool);
        let path = dir.path().join("records.log");
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(texts(&spool.peek(10).unwrap()), ["whole"]);
        spool.push(b"after").unwrap();
        assert_eq!(texts(&spool.peek(10).unwrap()), ["whole", "after"]);
    }

    #[test]
    fn compaction_keeps_the_unacknowledged_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 200).unwrap();
        for i in 0..8u8 {
            assert!(spool.push(&[i; 12]).unwrap()); // 20 bytes each
        }
        let records = spool.peek(6).unwrap();
        spool.ack(records[5].end).unwrap(); // head 120 > 100: compacted
        assert_eq!(std::fs::metadata(dir.path().join("records.log")).unwrap().len(), 40);
        drop(spool);
        let spool = Spool::open(dir.path(), 200).unwrap();
        assert_eq!(spool.peek(10).unwrap().iter().map(|r| r.bytes[0]).collect::<Vec<_>>(), [6, 7]);
    }

    /// Damage done to a spool of six 7-byte records `event 0`…`event 5`
    /// (15 bytes each on disk) with the first `acked` acknowledged.
    struct Damage {
        what: &'static str,
        acked: usize,
        /// Bytes written at offsets of `records.log`.
        log: &'static [(u64, &'static [u8])],
        /// The whole of `records.ack`, when replaced.
        ack: Option<&'static [u8]>,
        /// What the reopened spool delivers.
        delivers: &'static [&'static str],
        /// Whether the damaged bytes were kept aside.
        kept_aside: bool,
    }

    const ALL: &[&str] = &["event 0", "event 1", "event 2", "event 3", "event 4", "event 5"];

    #[test]
    fn a_damaged_spool_keeps_what_it_can_and_sets_the_damage_aside() {
        let cases = [
            Damage {
                what: "a flipped byte in a record's bytes",
                acked: 0,
                log: &[(2 * 15 + 10, b"X")],
                ack: None,
                delivers: &["event 0", "event 1", "event 3", "event 4", "event 5"],
                kept_aside: true,
            },
            Damage {
                what: "a damaged length: nothing after it reads",
                acked: 1,
                log: &[(3 * 15, &[3, 0, 0, 0])],
                ack: None,
                delivers: &["event 1", "event 2"],
                kept_aside: true,
            },
            Damage {
                what: "a length past the end reads as a torn tail",
                acked: 0,
                log: &[(4 * 15, &[0xff, 0xff, 0, 0])],
                ack: None,
                delivers: &["event 0", "event 1", "event 2", "event 3"],
                kept_aside: false,
            },
            Damage {
                what: "a short acknowledgement file: everything again",
                acked: 3,
                log: &[],
                ack: Some(&[1, 2, 3]),
                delivers: ALL,
                kept_aside: false,
            },
            Damage {
                what: "an offset past the end: everything again",
                acked: 3,
                log: &[],
                ack: Some(&[0, 0, 0, 0, 0, 0, 1, 0]),
                delivers: ALL,
                kept_aside: false,
            },
            Damage {
                what: "an offset inside a record: from the record it falls in",
                acked: 3,
                log: &[],
                ack: Some(&[2 * 15 + 5, 0, 0, 0, 0, 0, 0, 0]),
                delivers: &["event 2", "event 3", "event 4", "event 5"],
                kept_aside: false,
            },
        ];
        for case in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..6 {
                spool.push(format!("event {i}").as_bytes()).unwrap();
            }
            if case.acked > 0 {
                let end = spool.peek(case.acked).unwrap()[case.acked - 1].end;
                spool.ack(end).unwrap();
            }
            drop(spool);
            let log = OpenOptions::new().write(true).open(dir.path().join("records.log")).unwrap();
            for (at, bytes) in case.log {
                log.write_all_at(bytes, *at).unwrap();
            }
            if let Some(ack) = case.ack {
                std::fs::write(dir.path().join("records.ack"), ack).unwrap();
            }

            let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
            let records = spool.peek(100).unwrap();
            assert_eq!(texts(&records), case.delivers, "{}", case.what);
            assert_eq!(spool.backlog(), case.delivers.len() as u64, "{}", case.what);
            let aside = std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("records.damaged-"))
                .count();
            assert_eq!(aside, usize::from(case.kept_aside), "{}", case.what);
            // The repaired spool goes on as any other, across a reopen.
            spool.push(b"after").unwrap();
            spool.ack(records[0].end).unwrap();
            drop(spool);
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            let mut expected: Vec<&str> = case.delivers[1..].to_vec();
            expected.push("after");
            assert_eq!(texts(&spool.peek(100).unwrap()), expected, "{} (reopened)", case.what);
        }
    }
}
