//! The event writer: one OS thread per server that takes the workers'
//! batches, encodes them (`stored`), appends them to the event log in one durable
//! transaction per round, and compacts the log. It is not on the request
//! path: when it falls behind, the workers count their events as dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::buffer::{self, Batch, EventBuffer};
use super::stored;
use crate::store::{EventLog, Retention, StoreError};

/// Batches that may wait for the writer, all workers together.
const CHANNEL_BATCHES: usize = 256;
/// How often the log is compacted and flushed to disk while events come.
const COMPACT_INTERVAL: Duration = Duration::from_secs(1);
/// Events encoded or appended between two offers of the CPU (see `Pacer`).
const EVENTS_PER_TURN: usize = 16;

pub struct EventWriter {
    log: Arc<EventLog>,
    sender: Option<SyncSender<Batch>>,
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    body_limit: Option<usize>,
}

impl EventWriter {
    pub fn start(
        log: Arc<EventLog>,
        retention: Retention,
        body_limit: Option<usize>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(CHANNEL_BATCHES);
        let written = Arc::new(AtomicU64::new(0));
        let thread = {
            let (log, written) = (log.clone(), written.clone());
            std::thread::Builder::new()
                .name("event-writer".into())
                .spawn(move || write_loop(&log, &retention, &receiver, &written))?
        };
        Ok(Self {
            log,
            sender: Some(sender),
            written,
            thread: Some(thread),
            body_limit,
        })
    }

    /// A worker's buffer, feeding this writer.
    pub fn buffer(&self) -> EventBuffer {
        match &self.sender {
            Some(sender) => EventBuffer::new(
                sender.clone(),
                self.body_limit,
                self.written.clone(),
                Some(self.log.clone()),
            ),
            None => EventBuffer::disabled(),
        }
    }

    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// Waits until every buffer has closed and everything handed over is
    /// in the log.
    pub fn finish(mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(
    log: &EventLog,
    retention: &Retention,
    receiver: &Receiver<Batch>,
    written: &AtomicU64,
) {
    compact(log, retention);
    let mut last_compaction = Instant::now();
    let mut unsynced = false;
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    loop {
        // Ends when every sender (the workers' buffers and the writer's own
        // handle) is gone and the channel is empty.
        match receiver.recv_timeout(COMPACT_INTERVAL) {
            Ok(batch) => {
                encoded.clear();
                let mut pacer = Pacer::default();
                encode(batch, &mut encoded, &mut pacer);
                // Whatever else is waiting goes in the same transaction.
                while encoded.len() < 16 * 1024
                    && let Ok(more) = receiver.try_recv()
                {
                    encode(more, &mut encoded, &mut pacer);
                }
                match append(log, retention, &encoded, &mut pacer) {
                    Ok(()) => {
                        written.fetch_add(encoded.len() as u64, Ordering::Relaxed);
                        unsynced = true;
                    }
                    Err(error) => tracing::error!(
                        %error,
                        events = encoded.len(),
                        "cannot write events to the event log"
                    ),
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if unsynced && last_compaction.elapsed() >= COMPACT_INTERVAL {
            compact(log, retention);
            sync(log);
            log.release_mapped_pages();
            crate::alloc::release_free_memory();
            unsynced = false;
            last_compaction = Instant::now();
        }
    }
    compact(log, retention);
    sync(log);
}

fn sync(log: &EventLog) {
    if let Err(error) = log.sync() {
        tracing::warn!(%error, "cannot flush the event log to disk");
    }
}

/// Offers the CPU every `EVENTS_PER_TURN` events. The writer shares a core
/// with a worker (there is a worker on every core): 50 ms of events is up
/// to a millisecond of work, and a worker woken meanwhile by a request
/// waited for all of it, which showed in the p99 (everything on one core,
/// one connection: 160-230 µs against 80-90 µs with events off). With a
/// `sched_yield` every 16 events it waits for ~10 µs of it (p99 90-115 µs)
/// at no cost the per-request CPU could show. `SCHED_IDLE` did as well while
/// the core had room, but an unprivileged thread cannot leave it when the
/// core gets busy, and the writer would then starve and drop events.
#[derive(Default)]
struct Pacer {
    since_yield: usize,
}

impl Pacer {
    fn step(&mut self) {
        self.since_yield += 1;
        if self.since_yield == EVENTS_PER_TURN {
            self.since_yield = 0;
            std::thread::yield_now();
        }
    }
}

/// Serializes a batch and gives its emptied vector back to its worker.
fn encode(batch: Batch, encoded: &mut Vec<Vec<u8>>, pacer: &mut Pacer) {
    let Batch {
        mut events,
        clock,
        spare,
    } = batch;
    encoded.extend(events.iter().map(|event| {
        pacer.step();
        let mut bytes = Vec::with_capacity(192);
        stored::encode(event, buffer::unix_ns(clock, event.end), &mut bytes);
        bytes
    }));
    events.clear();
    let _ = spare.try_send(events);
}

/// Appends; when the log is full, compacts harder and tries once more.
fn append(
    log: &EventLog,
    retention: &Retention,
    encoded: &[Vec<u8>],
    pacer: &mut Pacer,
) -> Result<(), StoreError> {
    let paced = encoded.iter().map(|event| {
        pacer.step();
        event.as_slice()
    });
    match log.append(paced) {
        Err(StoreError::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull))) => {
            let tighter = Retention {
                max_bytes: retention.max_bytes / 2,
                ..*retention
            };
            compact(log, &tighter);
            log.append(encoded.iter().map(Vec::as_slice)).map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

fn compact(log: &EventLog, retention: &Retention) {
    match log.compact(retention) {
        Ok(0) => {}
        Ok(removed) => tracing::debug!(removed, "old events compacted"),
        Err(error) => tracing::warn!(%error, "cannot compact the event log"),
    }
}
