//! The event writer: one OS thread per server that takes the workers'
//! batches (request events, and budget alerts now and then), encodes them
//! (`stored`), appends them to the event log in one durable transaction per
//! round, and compacts the log. It is not on the request
//! path: when it falls behind, the workers count their events as dropped;
//! when the log cannot be written (a full disk), it counts them itself.
//! Either way the next write puts a gap record (`stored::Gap`) where the
//! lost events should be, so that dispatchers see the loss.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::buffer::{self, Batch, EventBuffer, WriterCounts};
use super::stored::{self, Gap};
use crate::http::io::unix_nanos;
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
    counts: Arc<WriterCounts>,
    thread: Option<JoinHandle<()>>,
    body_limit: Option<usize>,
}

impl EventWriter {
    /// Starts the writer of the node `node`: every record it writes names it.
    pub fn start(
        log: Arc<EventLog>,
        retention: Retention,
        body_limit: Option<usize>,
        node: Arc<str>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(CHANNEL_BATCHES);
        let counts = Arc::new(WriterCounts::default());
        let thread = {
            let (log, counts) = (log.clone(), counts.clone());
            std::thread::Builder::new()
                .name("event-writer".into())
                .spawn(move || write_loop(&log, &retention, &receiver, &counts, &node))?
        };
        Ok(Self {
            log,
            sender: Some(sender),
            counts,
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
                self.counts.clone(),
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
    counts: &WriterCounts,
    node: &str,
) {
    compact(log, retention);
    let mut last_compaction = Instant::now();
    let mut unsynced = false;
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    let mut lost = Lost::default();
    loop {
        // Ends when every sender (the workers' buffers and the writer's own
        // handle) is gone and the channel is empty.
        match receiver.recv_timeout(COMPACT_INTERVAL) {
            Ok(batch) => {
                encoded.clear();
                let mut pacer = Pacer::default();
                lost.add(batch.dropped);
                let mut alerts = encode(batch, node, &mut encoded, &mut pacer);
                // Whatever else is waiting goes in the same transaction.
                while encoded.len() < 16 * 1024
                    && let Ok(more) = receiver.try_recv()
                {
                    lost.add(more.dropped);
                    alerts += encode(more, node, &mut encoded, &mut pacer);
                }
                if let Some(gap) = lost.record(node) {
                    // Before the events that follow the loss.
                    encoded.insert(0, gap);
                }
                // Request events, for the counters (alerts are not).
                let events = encoded.len() - usize::from(lost.pending()) - alerts;
                match append(log, retention, &encoded, &mut pacer) {
                    Ok(()) => {
                        counts.written.fetch_add(events as u64, Ordering::Relaxed);
                        lost.recorded();
                        unsynced = true;
                    }
                    Err(error) => {
                        counts.failed.fetch_add(events as u64, Ordering::Relaxed);
                        // The gap record stands for the lost alerts too.
                        lost.failed((events + alerts) as u64, &error);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if lost.pending() && lost.retry_due() {
            // No event came since the loss: the gap record alone, once
            // there is room for it.
            write_gap(log, retention, &mut lost, node);
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
    if lost.pending() {
        write_gap(log, retention, &mut lost, node);
    }
    compact(log, retention);
    sync(log);
}

/// Events lost since the last gap record the log holds.
#[derive(Default)]
struct Lost {
    /// The gap record to write (`None`: nothing lost).
    gap: Option<Gap>,
    /// The last write failed (the error line is logged once per outage).
    failing: bool,
    /// When a write last failed, so that the gap record alone is tried
    /// again once a second, not in a loop.
    last_try: Option<Instant>,
}

impl Lost {
    fn add(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let now = unix_nanos();
        let gap = self.gap.get_or_insert(Gap {
            lost: 0,
            first_unix_ns: now,
            last_unix_ns: now,
        });
        gap.lost += count;
        gap.last_unix_ns = now;
    }

    /// Whether a gap record waits to be written.
    fn pending(&self) -> bool {
        self.gap.is_some()
    }

    /// The gap record to write, if any.
    fn record(&self, node: &str) -> Option<Vec<u8>> {
        self.gap.as_ref().map(|gap| stored::encode_gap(gap, node))
    }

    /// The gap record is in the log.
    fn recorded(&mut self) {
        if let Some(gap) = self.gap.take() {
            tracing::warn!(
                lost = gap.lost,
                "{} request events were lost; a gap record in the event log says so",
                gap.lost
            );
        }
        self.failing = false;
        self.last_try = None;
    }

    fn failed(&mut self, events: u64, error: &StoreError) {
        if !self.failing {
            tracing::error!(
                %error,
                events,
                "cannot write events to the event log; they are counted as dropped until it can be written again"
            );
        }
        self.failing = true;
        self.last_try = Some(Instant::now());
        self.add(events);
    }

    fn retry_due(&self) -> bool {
        self.last_try
            .is_none_or(|at| at.elapsed() >= COMPACT_INTERVAL)
    }
}

/// Writes the waiting gap record on its own.
fn write_gap(log: &EventLog, retention: &Retention, lost: &mut Lost, node: &str) {
    let Some(gap) = lost.record(node) else { return };
    match append(log, retention, &[gap], &mut Pacer::default()) {
        Ok(()) => lost.recorded(),
        Err(error) => lost.failed(0, &error),
    }
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

/// Serializes a batch, its events then its budget alerts, each naming
/// `node`, and gives its emptied vector back to its worker. Returns how
/// many alerts it held.
fn encode(batch: Batch, node: &str, encoded: &mut Vec<Vec<u8>>, pacer: &mut Pacer) -> usize {
    let Batch {
        mut events,
        alerts,
        clock,
        spare,
        ..
    } = batch;
    encoded.extend(events.iter().map(|event| {
        pacer.step();
        let mut bytes = Vec::with_capacity(192);
        stored::encode(event, buffer::unix_ns(clock, event.end), node, &mut bytes);
        bytes
    }));
    encoded.extend(alerts.iter().map(|alert| stored::encode_alert(alert, node)));
    events.clear();
    let _ = spare.try_send(events);
    alerts.len()
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
        Err(StoreError::MapFull) => {
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
