//! One worker's state. Everything here belongs to a single thread; only the
//! settings snapshot and the drain signal are shared, both immutable or atomic.

use std::cell::{Cell, RefCell, RefMut};
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;
use monoio::time::Instant;
use monoio_rustls::TlsConnector;

use crate::error::ProxyError;
use crate::events::EventBuffer;
use crate::metrics::WorkerMetrics;
use crate::runtime::Driver;
use crate::settings::ServerSettings;
use crate::store::Store;
use crate::upstream::{DnsCache, Pool};
use keys::KeyCache;
use models::ModelTable;
use quota::Quota;

pub mod auth;
pub mod cache_notes;
pub mod control;
mod drain;
pub mod keys;
pub mod limits;
pub mod models;
pub mod quota;

pub use control::Control;
pub use drain::Drain;

pub struct Worker {
    pub id: usize,
    pub driver: Driver,
    pub settings: Arc<ServerSettings>,
    /// This node's name (`NODE_ID`), one copy shared by the workers and the
    /// event writer: the `node` of every event record and metric sample.
    pub node: Arc<str>,
    pub tls: TlsConnector,
    /// Idle upstream connections, by provider index.
    pub pool: RefCell<Pool>,
    pub dns: DnsCache,
    /// Shared by all workers; read without locks, written off the workers.
    pub store: Arc<Store>,
    /// This worker's validated keys.
    pub keys: RefCell<KeyCache>,
    /// The registered models, as this worker routes to them.
    pub models: RefCell<ModelTable>,
    /// This worker's quota leases and unreported usage.
    pub quota: RefCell<Quota>,
    pub drain: Arc<Drain>,
    /// Open client connections, so that shutdown can wait for them.
    pub connections: Cell<usize>,
    /// Bytes of request bodies this worker holds whole, bounded.
    pub bodies: BodyBudget,
    /// Every worker of this server, for jobs that must reach all of them.
    pub control: Arc<Control>,
    /// This worker's request counters, summed with the others' at scrape.
    pub metrics: RefCell<WorkerMetrics>,
    /// This worker's shard of the HTTP response cache.
    pub cache: RefCell<crate::cache::ResponseCache>,
    /// This worker's request events on their way to the event log.
    pub events: RefCell<EventBuffer>,
}

impl Worker {
    pub fn draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// This worker's counters, unless metrics are turned off.
    pub fn metrics(&self) -> Option<RefMut<'_, WorkerMetrics>> {
        self.settings
            .metrics
            .enabled
            .then(|| self.metrics.borrow_mut())
    }
}

/// Counts a client connection for as long as it lives.
pub struct ConnectionGuard<'a>(&'a Worker);

impl<'a> ConnectionGuard<'a> {
    pub fn new(worker: &'a Worker) -> Self {
        worker.connections.set(worker.connections.get() + 1);
        Self(worker)
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

/// How long a request waits for room in its worker's body budget before it
/// is refused with a 503. Long enough to ride out a burst (a held body is
/// given back once it has gone upstream, usually within milliseconds to a
/// second), short enough that a client is told to come back rather than
/// left hanging with its body half sent.
const BODY_BUDGET_WAIT: Duration = Duration::from_secs(1);

/// The bytes of request bodies a worker holds whole at once (bodies read
/// before they go upstream: model routing, cache keys, each with its copy
/// on the way upstream), over all its connections, and the requests refused
/// for want of room. One thread's
/// state: plain cells, and an event that wakes the requests waiting for
/// room whenever some is given back.
pub struct BodyBudget {
    limit: usize,
    reserved: Cell<usize>,
    refusals: Cell<u64>,
    freed: Event,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            reserved: Cell::new(0),
            refusals: Cell::new(0),
            freed: Event::new(),
        }
    }

    /// The most this worker holds at once; no single body can be larger.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved right now.
    pub fn reserved(&self) -> usize {
        self.reserved.get()
    }

    /// Requests refused so far because the budget was spent.
    pub fn refusals(&self) -> u64 {
        self.refusals.get()
    }

    /// A reservation of nothing yet, to grow as a body arrives.
    pub fn empty(&self) -> Reservation<'_> {
        Reservation {
            budget: self,
            bytes: 0,
        }
    }

    /// Reserves `bytes`, waiting up to `BODY_BUDGET_WAIT` for room;
    /// `ServerBusy` if none came.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation<'_>, ProxyError> {
        let mut reservation = self.empty();
        reservation.grow_to(bytes).await?;
        Ok(reservation)
    }

    fn take(&self, bytes: usize) -> bool {
        let reserved = self.reserved.get();
        match reserved.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.reserved.set(total);
                true
            }
            _ => false,
        }
    }

    fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.reserved.set(self.reserved.get().saturating_sub(bytes));
        self.freed.notify(usize::MAX);
    }
}

/// A share of a worker's body budget, given back when dropped (on every
/// path: the body served, refused, or its request failed).
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Reservation<'_> {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to `total` bytes, waiting up to
    /// `BODY_BUDGET_WAIT` for room; `ServerBusy` (counted) if none came.
    pub async fn grow_to(&mut self, total: usize) -> Result<(), ProxyError> {
        let more = total.saturating_sub(self.bytes);
        if self.budget.take(more) {
            self.bytes += more;
            return Ok(());
        }
        let deadline = Instant::now() + BODY_BUDGET_WAIT;
        loop {
            let freed = self.budget.freed.listen();
            // Room may have come between the try above and the listener.
            if self.budget.take(more) {
                self.bytes += more;
                return Ok(());
            }
            if monoio::time::timeout_at(deadline, freed).await.is_err() {
                let budget = self.budget;
                budget.refusals.set(budget.refusals.get() + 1);
                return Err(ProxyError::ServerBusy);
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}
