//! The event log: a separate LMDB environment in `<data dir>/events/`,
//! written by the server's event writer thread and read by dispatchers,
//! possibly in other processes (LMDB locks across processes).
//!
//! - `events`: sequence number (u64, big-endian, so in order) → the event
//!   as JSON bytes, so that readers need no schema.
//! - `batches`: first sequence number of each appended batch → unix ms of
//!   the append, so that compaction by age needs no event parsed.
//! - `cursors`: dispatcher name → last sequence number it delivered.
//! - `endpoints`: dispatcher name → SHA-256 of the endpoint its cursor was
//!   last used with (a hash: a URL may carry a secret), so that a cursor
//!   taken over by another endpoint is told.
//! - `meta`: `next_seq`, so numbers continue after restarts and compaction.
//!
//! Sequence numbers are contiguous from 1: a gap in what a sink received
//! is a lost delivery, never a numbering artefact. Events the server could
//! not write are not numbered; a gap record (an entry of its own, see
//! `events::stored::Gap`) stands where they would have been.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::Duration;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, PutFlags, WithoutTls};

use super::StoreError;
use super::model::now_ms;

type Seq = U64<BigEndian>;

/// Address space kept above the size limit, for the pages of a batch
/// written before compaction runs again.
const MAP_MARGIN: u64 = 64 << 20;

/// How much the log may keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_events: u64,
    pub max_age: Duration,
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: 1_000_000,
            max_age: Duration::from_secs(7 * 86400),
            max_bytes: 1 << 30,
        }
    }
}

pub struct EventLog {
    env: Env<WithoutTls>,
    events: Database<Seq, Bytes>,
    batches: Database<Seq, Seq>,
    cursors: Database<Str, Seq>,
    endpoints: Database<Str, Bytes>,
    meta: Database<Str, Seq>,
    /// Where LMDB mapped `data.mdb` in this process (start, length), for
    /// `release_mapped_pages`; LMDB reports it only for fixed maps.
    map: Option<(usize, usize)>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.env.path())
            .finish_non_exhaustive()
    }
}

/// Where the event log of a data directory lives.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

impl EventLog {
    /// Opens (creating if needed) the event log in `dir`. One per directory
    /// per process: the server and an in-process dispatcher share it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir(dir.to_path_buf(), e))?;
        let map_size = (max_bytes + max_bytes / 8 + MAP_MARGIN) as usize;
        // Page-aligned, as LMDB wants.
        let map_size = map_size.div_ceil(1 << 16) << 16;
        // SAFETY: opened once per process (see above); the files belong to
        // llm-proxy. Other processes open them with LMDB too, which is safe.
        // NO_SYNC: commits reach the page cache, which outlives a crash of
        // the process (kill -9 loses no committed event); the writer calls
        // `sync` about once a second for crashes of the system. An fsync per
        // commit cost 1.5 µs per event at 3,000 requests/s, more than the
        // whole request path may spend on events (see docs/events.md).
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .flags(EnvFlags::NO_SYNC)
                .map_size(map_size)
                .max_dbs(8)
                .max_readers(256)
                .open(dir)?
        };
        // Slots of readers killed with -9 would hold pages forever.
        env.clear_stale_readers()?;
        let mut txn = env.write_txn()?;
        let log = EventLog {
            events: env.create_database(&mut txn, Some("events"))?,
            batches: env.create_database(&mut txn, Some("batches"))?,
            cursors: env.create_database(&mut txn, Some("cursors"))?,
            endpoints: env.create_database(&mut txn, Some("endpoints"))?,
            meta: env.create_database(&mut txn, Some("meta"))?,
            map: mapping_of(&dir.join("data.mdb")),
            env: env.clone(),
        };
        super::commit(txn, dir)?;
        Ok(log)
    }

    /// Opens the log for the server's writer. A log damaged by a system
    /// crash (commits are not fsynced one by one) is moved aside to
    /// `events.damaged-<unix ms>` and a new one started: events are
    /// telemetry, and the gateway must come up.
    pub fn open_for_writing(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        use heed::MdbError::{Corrupted, Invalid, PageNotFound, VersionMismatch};
        match Self::open(dir, max_bytes) {
            Err(StoreError::Lmdb(heed::Error::Mdb(
                error @ (Corrupted | Invalid | PageNotFound | VersionMismatch),
            ))) => {
                let aside = dir.with_file_name(format!("events.damaged-{}", now_ms()));
                tracing::error!(
                    %error,
                    moved_to = %aside.display(),
                    "the event log is damaged; starting a new one"
                );
                std::fs::rename(dir, &aside)
                    .map_err(|e| StoreError::CreateDir(aside.clone(), e))?;
                Self::open(dir, max_bytes)
            }
            other => other,
        }
    }

    pub fn path(&self) -> &Path {
        self.env.path()
    }

    /// Takes the log's pages out of this process's memory. Appending reads
    /// each new page through the map once, so over time the whole log
    /// would count as resident memory of the server (hundreds of MB after
    /// a few million events), though it is only page cache: dropping the
    /// mapping costs nothing but a page fault on the next read.
    pub fn release_mapped_pages(&self) {
        if let Some((start, len)) = self.map {
            // SAFETY: the range is LMDB's shared, read-only map of data.mdb
            // (it writes with pwrite, not through the map). MADV_DONTNEED
            // on a shared file mapping only unmaps the pages: the next read
            // faults them back in from the page cache, with the same bytes.
            unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        }
    }

    /// Appends `events` in one durable transaction; returns the sequence
    /// number of the last one (0 when there were none and the log is empty).
    pub fn append<'a>(
        &self,
        events: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<u64, StoreError> {
        let mut txn = self.env.write_txn()?;
        let first = self.meta.get(&txn, "next_seq")?.unwrap_or(1);
        let mut next = first;
        for event in events {
            // Keys only grow: appending fills pages instead of splitting them.
            self.events
                .put_with_flags(&mut txn, PutFlags::APPEND, &next, event)?;
            next += 1;
        }
        if next > first {
            self.batches
                .put(&mut txn, &first, &now_ms().max(0).cast_unsigned())?;
            self.meta.put(&mut txn, "next_seq", &next)?;
        }
        super::commit(txn, self.path())?;
        Ok(next - 1)
    }

    /// Bytes of the pages in use (what `max_bytes` limits).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.env.non_free_pages_size()?)
    }

    /// Flushes committed events to disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.env.force_sync()?;
        Ok(())
    }

    /// Deletes the oldest events beyond the limits; returns how many.
    pub fn compact(&self, retention: &Retention) -> Result<u64, StoreError> {
        let mut txn = self.env.write_txn()?;
        let next = self.meta.get(&txn, "next_seq")?.unwrap_or(1);
        // Keep the newest `max_events`.
        let mut keep_from = next.saturating_sub(retention.max_events);
        // Keep batches younger than `max_age`.
        let cutoff = now_ms()
            .max(0)
            .cast_unsigned()
            .saturating_sub(retention.max_age.as_millis() as u64);
        let mut any_batch = false;
        let mut first_young = None;
        for entry in self.batches.iter(&txn)? {
            let (first, written) = entry?;
            any_batch = true;
            if written >= cutoff {
                first_young = Some(first);
                break;
            }
        }
        match first_young {
            Some(first) => keep_from = keep_from.max(first),
            // Every batch is old: all of them go.
            None if any_batch => keep_from = next,
            None => {}
        }
        // Keep the pages in use under `max_bytes`: drop a tenth at a time.
        let used = self.used_bytes()?;
        if used > retention.max_bytes / 10 * 9 {
            let first = self.events.first(&txn)?.map_or(next, |(seq, _)| seq);
            let count = next - first;
            keep_from = keep_from.max(first + count.div_ceil(10));
        }
        let range = (Bound::Unbounded, Bound::Excluded(keep_from));
        let removed = self.events.delete_range(&mut txn, &range)? as u64;
        // Batch entries before the one holding `keep_from` are not needed.
        let holding = self
            .batches
            .rev_range(&txn, &(Bound::Unbounded, Bound::Included(keep_from)))?
            .next()
            .transpose()?
            .map(|(first, _)| first);
        if let Some(holding) = holding {
            self.batches
                .delete_range(&mut txn, &(Bound::Unbounded, Bound::Excluded(holding)))?;
        }
        super::commit(txn, self.path())?;
        Ok(removed)
    }

    /// Up to `max` events after sequence number `after`, in order.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.env.read_txn()?;
        let range = (Bound::Excluded(after), Bound::Unbounded);
        let mut out = Vec::new();
        for entry in self.events.range(&txn, &range)?.take(max) {
            let (seq, bytes) = entry?;
            out.push((seq, bytes.to_vec()));
        }
        Ok(out)
    }

    /// The last sequence number the dispatcher `name` delivered (0: none).
    pub fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.cursors.get(&txn, name)?.unwrap_or(0))
    }

    /// Records that `name` delivered everything up to `seq` (durably).
    pub fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.cursors.put(&mut txn, name, &seq)?;
        super::commit(txn, self.path())?;
        Ok(())
    }

    /// Records that the dispatcher `name` delivers to `endpoint`; returns
    /// whether its cursor was last used with another endpoint (never for a
    /// cursor first used now, or recorded before endpoints were).
    pub fn use_cursor_for(&self, name: &str, endpoint: &str) -> Result<bool, StoreError> {
        let hash = ring::digest::digest(&ring::digest::SHA256, endpoint.as_bytes());
        let mut txn = self.env.write_txn()?;
        let other = self
            .endpoints
            .get(&txn, name)?
            .is_some_and(|before| before != hash.as_ref());
        if other || self.endpoints.get(&txn, name)?.is_none() {
            self.endpoints.put(&mut txn, name, hash.as_ref())?;
            super::commit(txn, self.path())?;
        }
        Ok(other)
    }

    /// Every dispatcher's cursor: its name and the last sequence number it
    /// delivered.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut cursors = Vec::new();
        for entry in self.cursors.iter(&txn)? {
            let (name, seq) = entry?;
            cursors.push((name.to_string(), seq));
        }
        Ok(cursors)
    }

    /// The first and last sequence numbers held (`None`: empty).
    pub fn bounds(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.env.read_txn()?;
        let first = self.events.first(&txn)?.map(|(seq, _)| seq);
        let last = self.events.last(&txn)?.map(|(seq, _)| seq);
        Ok(first.zip(last))
    }
}

/// The address range this process mapped `file` at, from
/// `/proc/self/maps` (the mapping LMDB made when the log was opened).
fn mapping_of(file: &Path) -> Option<(usize, usize)> {
    let file = std::fs::canonicalize(file).ok()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let path = fields.nth(4)?;
        if Path::new(path) != file {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        Some((start, end.checked_sub(start)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_log(tag: &str) -> (PathBuf, EventLog) {
        let dir = std::env::temp_dir().join(format!(
            "llm-proxy-event-log-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let log = EventLog::open(&dir, 16 << 20).unwrap();
        (dir, log)
    }

    /// The log finds its own map, so that its pages can be given back, and
    /// reads the same events after they were.
    #[test]
    fn mapped_pages_can_be_released() {
        let (dir, log) = temp_log("release");
        let (start, len) = log.map.expect("the map of data.mdb in /proc/self/maps");
        assert!(start > 0 && len >= 16 << 20);
        let events: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_be_bytes().repeat(64)).collect();
        log.append(events.iter().map(Vec::as_slice)).unwrap();
        log.release_mapped_pages();
        let read = log.read_after(0, 5000).unwrap();
        assert_eq!(read.len(), events.len());
        assert!(read.iter().zip(&events).all(|((_, got), sent)| got == sent));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn numbers_continue_across_compaction_and_cursors_stay() {
        let (dir, log) = temp_log("seq");
        assert_eq!(log.append([&b"{}"[..], b"{}", b"{}"]).unwrap(), 3);
        let keep_two = Retention {
            max_events: 2,
            ..Retention::default()
        };
        assert_eq!(log.compact(&keep_two).unwrap(), 1);
        assert_eq!(log.bounds().unwrap(), Some((2, 3)));
        assert_eq!(log.append([&b"{}"[..]]).unwrap(), 4);
        log.set_cursor("a", 3).unwrap();
        let after: Vec<u64> = log.read_after(3, 10).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(after, [4]);
        // Everything is older than a zero age.
        let no_age = Retention {
            max_age: Duration::ZERO,
            ..Retention::default()
        };
        std::thread::sleep(Duration::from_millis(5));
        log.compact(&no_age).unwrap();
        assert_eq!(log.bounds().unwrap(), None);
        assert_eq!(log.append([&b"{}"[..]]).unwrap(), 5);
        assert_eq!(log.cursor("a").unwrap(), 3);
        drop(log);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn size_limit_drops_the_oldest() {
        let (dir, log) = temp_log("size");
        let event = vec![b'x'; 1000];
        for _ in 0..20 {
            log.append((0..100).map(|_| event.as_slice())).unwrap();
        }
        let limit = Retention {
            max_bytes: 1 << 20,
            ..Retention::default()
        };
        assert!(log.used_bytes().unwrap() > limit.max_bytes);
        let mut rounds = 0;
        while log.used_bytes().unwrap() > limit.max_bytes / 10 * 9 {
            assert!(log.compact(&limit).unwrap() > 0);
            rounds += 1;
            assert!(
                rounds < 50,
                "compaction does not bring the log under its limit"
            );
        }
        let (first, last) = log.bounds().unwrap().unwrap();
        assert_eq!(last, 2000);
        assert!(first > 1000, "{first}");
        drop(log);
        let _ = std::fs::remove_dir_all(dir);
    }
}
