//! The per-worker event buffer. `finish` pushes one event into a `Vec`; a
//! worker task hands the batch to the writer thread every
//! `HANDOFF_INTERVAL` (or as soon as `HANDOFF_AT` events wait) with a
//! `try_send` that never blocks. When the writer cannot keep up, events
//! wait here up to `MAX_PENDING`, and are then counted as dropped: the
//! requests themselves are never slowed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use super::RequestEvent;
use super::stored::BudgetAlert;
use crate::http::io::unix_nanos;
use crate::store::EventLog;

/// How often each worker hands its events to the writer.
pub const HANDOFF_INTERVAL: Duration = Duration::from_millis(50);
/// Events that make a batch worth handing over before the interval ends.
const HANDOFF_AT: usize = 1024;
/// Most events a worker holds while the writer is behind.
const MAX_PENDING: usize = 32 * 1024;

/// Emptied batch vectors a worker keeps for reuse (fresh ones of this
/// size would cost page faults on every hand-over).
const SPARE_VECTORS: usize = 4;

/// A batch of events on its way to the writer.
pub struct Batch {
    pub events: Vec<RequestEvent>,
    /// Budget alerts the worker's usage reports raised, written after the
    /// events.
    pub alerts: Vec<BudgetAlert>,
    /// Events this worker dropped since its previous batch: the writer
    /// puts them in the log's next gap record.
    pub dropped: u64,
    /// One reading of both clocks at hand-over: events carry only a
    /// monotonic instant, turned into wall-clock time on the writer.
    pub clock: (Instant, u64),
    /// Where the emptied vector goes back to.
    pub spare: SyncSender<Vec<RequestEvent>>,
}

/// Unix ns of `instant`, from a reading of both clocks taken after it.
pub fn unix_ns(clock: (Instant, u64), instant: Instant) -> u64 {
    let (reference, unix) = clock;
    unix.saturating_sub(reference.saturating_duration_since(instant).as_nanos() as u64)
}

/// What the writer did with the events it was given: appended to the log,
/// or lost because the log could not be written.
#[derive(Debug, Default)]
pub struct WriterCounts {
    pub written: AtomicU64,
    pub failed: AtomicU64,
}

pub struct EventBuffer {
    pending: Vec<RequestEvent>,
    /// Budget alerts waiting to go with the next batch (rare: a few a day).
    alerts: Vec<BudgetAlert>,
    /// `None`: events are off, and `finish` builds none.
    sender: Option<SyncSender<Batch>>,
    /// Emptied vectors coming back from the writer, and the way back.
    spares: Receiver<Vec<RequestEvent>>,
    spares_back: SyncSender<Vec<RequestEvent>>,
    /// Largest body kept in an event, when bodies are on.
    body_limit: Option<usize>,
    /// Events `finish` made on this worker, and those lost here.
    emitted: u64,
    dropped: u64,
    /// Of `dropped`, those no batch has told the writer of yet.
    unreported: u64,
    /// What became of the events handed to the writer (process-wide).
    counts: Arc<WriterCounts>,
    /// The log itself, read by `/metrics` (never on the request path).
    log: Option<Arc<EventLog>>,
}

impl EventBuffer {
    /// Events off: `enabled()` is false and nothing is ever pushed.
    pub fn disabled() -> Self {
        let (spares_back, spares) = sync_channel(0);
        Self {
            pending: Vec::new(),
            alerts: Vec::new(),
            sender: None,
            spares,
            spares_back,
            body_limit: None,
            emitted: 0,
            dropped: 0,
            unreported: 0,
            counts: Arc::default(),
            log: None,
        }
    }

    pub fn new(
        sender: SyncSender<Batch>,
        body_limit: Option<usize>,
        counts: Arc<WriterCounts>,
        log: Option<Arc<EventLog>>,
    ) -> Self {
        let (spares_back, spares) = sync_channel(SPARE_VECTORS);
        Self {
            // Grows with the load and is reused from then on (`spares`): a
            // quiet server keeps no batch-sized vectors.
            pending: Vec::new(),
            alerts: Vec::new(),
            sender: Some(sender),
            spares,
            spares_back,
            body_limit,
            emitted: 0,
            dropped: 0,
            unreported: 0,
            counts,
            log,
        }
    }

    #[inline]
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Largest body an event keeps, when bodies are on.
    #[inline]
    pub fn body_limit(&self) -> Option<usize> {
        self.body_limit
    }

    /// Takes one event; never blocks.
    #[inline]
    pub fn push(&mut self, event: RequestEvent) {
        self.emitted += 1;
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            self.unreported += 1;
            return;
        }
        self.pending.push(event);
        // At 1,024 and, while the writer is behind, at each further 1,024.
        if self.pending.len().is_multiple_of(HANDOFF_AT) {
            self.hand_over();
        }
    }

    /// Takes a budget alert, to go to the writer with the next hand-over;
    /// never blocks. With events off it is dropped (the log line and the
    /// metric remain).
    pub fn alert(&mut self, alert: BudgetAlert) {
        if self.enabled() {
            self.alerts.push(alert);
        }
    }

    /// Gives the waiting events and alerts to the writer if it has room
    /// for them; otherwise they wait for the next try.
    pub fn hand_over(&mut self) {
        let Some(sender) = &self.sender else { return };
        if self.pending.is_empty() && self.alerts.is_empty() {
            return;
        }
        let batch = Batch {
            events: std::mem::take(&mut self.pending),
            alerts: std::mem::take(&mut self.alerts),
            dropped: self.unreported,
            clock: (Instant::now(), unix_nanos()),
            spare: self.spares_back.clone(),
        };
        match sender.try_send(batch) {
            Ok(()) => {
                self.unreported = 0;
                self.pending = self.spares.try_recv().unwrap_or_default();
            }
            Err(TrySendError::Full(batch)) => {
                self.pending = batch.events;
                self.alerts = batch.alerts;
            }
            Err(TrySendError::Disconnected(batch)) => {
                self.dropped += batch.events.len() as u64;
                self.sender = None;
            }
        }
    }

    /// At shutdown: waits for the writer to take the last events, then
    /// lets it go (it stops once every worker has closed).
    pub fn close(&mut self) {
        if let Some(sender) = self.sender.take()
            && !(self.pending.is_empty() && self.alerts.is_empty())
        {
            let batch = Batch {
                events: std::mem::take(&mut self.pending),
                alerts: std::mem::take(&mut self.alerts),
                dropped: self.unreported,
                clock: (Instant::now(), unix_nanos()),
                spare: self.spares_back.clone(),
            };
            let count = batch.events.len() as u64;
            if sender.send(batch).is_err() {
                self.dropped += count;
            }
        }
    }

    /// Events made on this worker (for `/metrics`).
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Events lost on this worker because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events appended to the log by the writer, all workers together.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    /// Events the writer could not append to the log (a full disk, say),
    /// all workers together.
    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// The event log these events go to.
    pub fn log(&self) -> Option<&EventLog> {
        self.log.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::InlinePath;
    use crate::http::RequestId;
    use crate::record::CacheStatus;
    use crate::store::Money;

    fn event() -> RequestEvent {
        RequestEvent {
            request_id: RequestId::random(),
            end: Instant::now(),
            duration_ns: 0,
            worker: 0,
            key: None,
            model: None,
            method: http::Method::GET,
            path: InlinePath::new(b"/v1/models"),
            status: 200,
            error: None,
            upstream_ns: None,
            first_byte_ns: None,
            usage: None,
            cost: Money(0),
            cache: CacheStatus::None,
            response_complete: true,
            bodies: None,
        }
    }

    #[test]
    fn a_writer_that_does_not_keep_up_makes_events_dropped_not_waited_for() {
        // Room for one batch, and nobody takes it.
        let (sender, receiver) = sync_channel(1);
        let mut buffer = EventBuffer::new(sender, None, Arc::default(), None);
        let total = HANDOFF_AT + MAX_PENDING + 10;
        for _ in 0..total {
            buffer.push(event());
        }
        assert_eq!(buffer.emitted(), total as u64);
        assert_eq!(buffer.dropped(), 10);
        // Once the writer takes the first batch, the waiting ones go.
        let first = receiver.recv().unwrap();
        assert_eq!((first.events.len(), first.dropped), (HANDOFF_AT, 0));
        buffer.hand_over();
        // The next batch tells the writer of the events dropped meanwhile.
        let second = receiver.recv().unwrap();
        assert_eq!((second.events.len(), second.dropped), (MAX_PENDING, 10));
        buffer.push(event());
        buffer.hand_over();
        assert_eq!(receiver.recv().unwrap().dropped, 0);
        // A writer that is gone: what waits is dropped.
        buffer.push(event());
        drop(receiver);
        buffer.hand_over();
        assert_eq!(buffer.dropped(), 11);
        assert!(!buffer.enabled());
    }
}
