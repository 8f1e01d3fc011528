//! One worker's state. Everything here belongs to a single thread; only the
//! settings snapshot and the drain signal are shared, both immutable or atomic.

use std::cell::{Cell, RefCell, RefMut};
use std::sync::Arc;

use monoio_rustls::TlsConnector;

use super::control::Control;
use super::drain::Drain;
use crate::events::EventBuffer;
use crate::metrics::WorkerMetrics;
use crate::proxy::keys::KeyCache;
use crate::proxy::models::ModelTable;
use crate::proxy::quota::Quota;
use crate::runtime::Driver;
use crate::settings::ServerSettings;
use crate::store::Store;
use crate::upstream::{DnsCache, Pool};

pub struct Worker {
    pub id: usize,
    pub driver: Driver,
    pub settings: Arc<ServerSettings>,
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
