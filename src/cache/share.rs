//! What the shards of one server have in common: the bytes they hold
//! together (each entry counted once, against `HTTP_CACHE_MAX_BYTES`), a
//! clock for recency, and a mailbox per shard for the notes the others
//! send it when they store or drop an answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use concurrent_queue::ConcurrentQueue;
use event_listener::{Event, EventListener};

use super::entry::Entry;
use super::key::Digest;

/// A shard's notes, sent together to each other shard.
pub type Batch = Arc<[Note]>;

/// Shared by every shard of a server.
pub struct Shared {
    max_bytes: usize,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    /// Zero of the entries' `used` stamps.
    epoch: Instant,
    mailboxes: Box<[Mailbox]>,
}

/// The way into one shard: a lock-free queue (the others push, the shard
/// pops), a count of batches sent, and an event that wakes the shard's
/// task. Its own line of memory: the count is read on every lookup of its
/// shard and written by the others' stores.
#[repr(align(128))]
struct Mailbox {
    queue: ConcurrentQueue<Batch>,
    /// Batches sent so far: a shard whose count of batches taken is lower
    /// has news waiting.
    sent: AtomicU64,
    arrived: Event,
}

impl Shared {
    pub fn new(shards: usize, max_bytes: usize) -> Arc<Self> {
        let mailboxes = (0..shards.max(1))
            .map(|_| Mailbox {
                queue: ConcurrentQueue::unbounded(),
                sent: AtomicU64::new(0),
                arrived: Event::new(),
            })
            .collect();
        Arc::new(Self {
            max_bytes,
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            epoch: Instant::now(),
            mailboxes,
        })
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes of the entries held, counted whole and once.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Distinct entries held.
    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub(super) fn over(&self) -> bool {
        self.bytes() > self.max_bytes
    }

    pub(super) fn add(&self, entry: &Entry) {
        self.bytes.fetch_add(entry.size, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts `entry` if this call is the one that retired it; returns
    /// whether it was.
    pub(super) fn retire(&self, entry: &Entry) -> bool {
        if !entry.retire() {
            return false;
        }
        self.bytes.fetch_sub(entry.size, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// `now` in whole seconds of this cache's clock.
    pub(super) fn stamp(&self, now: Instant) -> u32 {
        let seconds = now.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(seconds).unwrap_or(u32::MAX)
    }

    /// Sends `batch` to every shard but `from`. The count goes up after
    /// the batch is in the mailbox, so a shard that sees it finds the batch.
    pub(super) fn send(&self, from: usize, batch: &Batch) {
        for (id, mailbox) in self.mailboxes.iter().enumerate() {
            // An unbounded queue is never full, and never closed.
            if id != from && mailbox.queue.push(batch.clone()).is_ok() {
                mailbox.sent.fetch_add(1, Ordering::Release);
                mailbox.arrived.notify(1);
            }
        }
    }

    /// Batches sent to shard `id` so far.
    pub(super) fn sent_to(&self, id: usize) -> u64 {
        self.mailboxes
            .get(id)
            .map_or(0, |mailbox| mailbox.sent.load(Ordering::Acquire))
    }

    /// The next batch waiting for shard `id`.
    pub(super) fn next_for(&self, id: usize) -> Option<Batch> {
        self.mailboxes.get(id)?.queue.pop().ok()
    }

    /// Resolves once a batch is sent to shard `id` after this call (listen,
    /// then take in what is waiting, then wait: nothing slips between).
    pub(super) fn on_arrival(&self, id: usize) -> Option<EventListener> {
        self.mailboxes
            .get(id)
            .map(|mailbox| mailbox.arrived.listen())
    }
}

/// What a shard changed that the other shards of the server must learn.
pub enum Note {
    /// An answer stored under `full` (`primary` before `Vary`; `vary`
    /// empty when the answer has none).
    Stored {
        primary: Digest,
        full: Digest,
        vary: Arc<[Box<str>]>,
        entry: Arc<Entry>,
    },
    /// The entry under `full` was dropped (evicted, expired or replaced):
    /// shards holding that very entry let it go.
    Dropped { full: Digest, entry: Arc<Entry> },
}
