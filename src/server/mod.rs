//! The gateway server: per-worker listeners and accept loops, connection
//! handling, local endpoints, and draining on shutdown.

mod conn;
mod health;
mod listener;
mod metrics;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use monoio::time::Instant;

/// How often each worker reports usage to the ledger.
const USAGE_REPORT_INTERVAL: Duration = Duration::from_secs(1);
use crate::worker::{BodyBudget, Drain, Worker, cache_notes, control};
pub use listener::bind_listeners;

use crate::events::{self, EventBuffer, EventWriter};
use crate::runtime::{self, Driver};
use crate::settings::ServerSettings;
use crate::store::{EventLog, Store, event_log};
use crate::upstream::{DnsCache, Pool, tls};

/// A running server: its address, and the means to drain and join it.
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    pub driver: Driver,
    drainer: Drainer,
    threads: Vec<JoinHandle<()>>,
    /// The request event writer (absent when events are off).
    events: Option<EventWriter>,
    /// Marked as served until every worker has reported (see `join`).
    store: Arc<Store>,
    /// Set by a worker that stopped with requests still holding budget or
    /// quota (shutdown timeout) or whose last report failed: the mark stays,
    /// and the next start takes what was leased as used.
    unreported: Arc<AtomicBool>,
}

/// Starts draining every worker; can be handed to a signal thread.
#[derive(Clone)]
pub struct Drainer(Vec<Arc<Drain>>);

impl Drainer {
    /// Stops accepting and lets in-flight requests finish (up to the
    /// shutdown timeout). Returns at once.
    pub fn drain(&self) {
        for drain in &self.0 {
            drain.start();
        }
    }
}

impl ServerHandle {
    pub fn drainer(&self) -> Drainer {
        self.drainer.clone()
    }

    /// Waits until every worker has finished and their events are in the log.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
        // Every worker has reported and handed its leases back.
        if !self.unreported.load(Ordering::Acquire)
            && let Err(error) = self.store.end_serving()
        {
            tracing::error!(%error, "cannot mark the store as stopped cleanly");
        }
        if let Some(events) = self.events {
            events.finish();
        }
    }

    /// The event log, when events are on.
    pub fn event_log(&self) -> Option<Arc<EventLog>> {
        self.events.as_ref().map(|writer| writer.log().clone())
    }
}

/// Binds the server's listeners, one per worker. Done first, before the
/// store is opened or written: a server refused its address changes nothing.
pub fn listen(settings: &ServerSettings) -> anyhow::Result<Vec<std::net::TcpListener>> {
    bind_listeners(settings.addr, settings.workers).map_err(|error| {
        // "already in use by another process" says it all.
        if error.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::Error::new(error)
        } else {
            anyhow::Error::new(error).context(format!("cannot listen on {}", settings.addr))
        }
    })
}

/// Starts the workers on `listeners` (from `listen`).
pub fn start(
    settings: Arc<ServerSettings>,
    store: Arc<Store>,
    listeners: Vec<std::net::TcpListener>,
) -> anyhow::Result<ServerHandle> {
    let tls_config = tls::client_config(settings.upstream_ca_file.as_deref())?;
    let local_addr = listeners[0].local_addr()?;
    let recovered = store
        .begin_serving()
        .context("cannot record the server's start in the store")?;
    if let Some(recovered) = recovered {
        tracing::warn!(
            keys = recovered.keys,
            requests = recovered.requests,
            spend = recovered.spend.dollars(),
            "the last server on this store did not stop cleanly: what it had leased is counted as used"
        );
    }
    let driver = Driver::detect();
    let serving = store.clone();
    let unreported = Arc::new(AtomicBool::new(false));
    let worker_unreported = unreported.clone();
    let drains: Vec<Arc<Drain>> = (0..settings.workers).map(|_| Arc::default()).collect();
    // Each worker takes its own listener out by index (startup only).
    let listeners: Arc<Mutex<Vec<Option<std::net::TcpListener>>>> =
        Arc::new(Mutex::new(listeners.into_iter().map(Some).collect()));
    let (control, inboxes) = control::Control::new(settings.workers);
    let inboxes: Arc<Mutex<Vec<Option<control::Inbox>>>> =
        Arc::new(Mutex::new(inboxes.into_iter().map(Some).collect()));
    let worker_drains = drains.clone();
    // One copy of the node id for the whole process: the workers and the
    // event writer share it.
    let node: Arc<str> = settings.node_id.as_str().into();
    let events = start_events(&settings, &node)?;
    let event_buffers: Vec<EventBuffer> = (0..settings.workers)
        .map(|_| {
            events
                .as_ref()
                .map_or_else(EventBuffer::disabled, EventWriter::buffer)
        })
        .collect();
    let event_buffers: Arc<Mutex<Vec<Option<EventBuffer>>>> =
        Arc::new(Mutex::new(event_buffers.into_iter().map(Some).collect()));
    // What the cache's shards share: one count of bytes (an entry is held
    // once) and a mailbox each for the others' stores.
    let cache = crate::cache::Shared::new(settings.workers, settings.cache.max_bytes);
    let threads = runtime::spawn_workers(
        "worker",
        settings.workers,
        settings.pin_cores,
        driver,
        move |id| {
            let listener = listeners.lock().ok().and_then(|mut l| l[id].take());
            let inbox = inboxes.lock().ok().and_then(|mut i| i[id].take());
            let events = event_buffers.lock().ok().and_then(|mut e| e[id].take());
            let worker = Rc::new(Worker {
                id,
                driver,
                pool: RefCell::new(Pool::new(settings.providers.providers.len())),
                settings: settings.clone(),
                node: node.clone(),
                tls: tls_config.clone().into(),
                dns: DnsCache::default(),
                drain: worker_drains[id].clone(),
                connections: Cell::new(0),
                bodies: BodyBudget::new(settings.limits.max_buffered_body_bytes),
                store: store.clone(),
                keys: RefCell::default(),
                models: RefCell::default(),
                quota: RefCell::default(),
                control: control.clone(),
                metrics: RefCell::new(crate::metrics::WorkerMetrics::new(id)),
                cache: RefCell::new(crate::cache::ResponseCache::new(cache.clone(), id)),
                events: RefCell::new(events.unwrap_or_else(EventBuffer::disabled)),
            });
            run_worker(worker, listener, inbox, worker_unreported.clone())
        },
    )?;
    Ok(ServerHandle {
        local_addr,
        driver,
        drainer: Drainer(drains),
        threads,
        events,
        store: serving,
        unreported,
    })
}

async fn run_worker(
    worker: Rc<Worker>,
    listener: Option<std::net::TcpListener>,
    inbox: Option<control::Inbox>,
    unreported: Arc<AtomicBool>,
) {
    let listener = match listener.map(monoio::net::TcpListener::from_std) {
        Some(Ok(listener)) => listener,
        Some(Err(error)) => {
            tracing::error!(worker = worker.id, %error, "cannot use the listener");
            return;
        }
        None => return,
    };
    monoio::spawn(report_usage(worker.clone(), unreported.clone()));
    if worker.events.borrow().enabled() {
        monoio::spawn(hand_over_events(worker.clone()));
    }
    if let Some(inbox) = inbox {
        monoio::spawn(control::serve_inbox(worker.clone(), inbox));
    }
    if worker.settings.cache.enabled && worker.settings.workers > 1 {
        monoio::spawn(cache_notes::serve(worker.clone()));
    }
    let drain = worker.drain.clone();
    let mut drained = pin!(drain.wait());
    loop {
        monoio::select! {
            _ = drained.as_mut() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    monoio::spawn(conn::serve(worker.clone(), stream));
                }
                Err(error) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(worker = worker.id, %error, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    let deadline = Instant::now() + worker.settings.shutdown_timeout;
    while worker.connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if worker.connections.get() > 0 {
        tracing::warn!(
            worker = worker.id,
            open = worker.connections.get(),
            "shutdown timeout reached; closing remaining connections"
        );
        // Their requests may hold budget and quota that is never reported.
        unreported.store(true, Ordering::Release);
    }
    worker.quota.borrow_mut().return_all();
    if !settle(&worker).await {
        unreported.store(true, Ordering::Release);
    }
    // Every request answered has its event handed to the writer.
    worker.events.borrow_mut().close();
}

/// Opens the event log and starts its writer, unless events are off.
fn start_events(settings: &ServerSettings, node: &Arc<str>) -> anyhow::Result<Option<EventWriter>> {
    let events = &settings.events;
    if !events.enabled {
        return Ok(None);
    }
    let dir = event_log::dir_of(&settings.data_dir);
    let log = EventLog::open_for_writing(&dir, events.retention.max_bytes)
        .with_context(|| format!("cannot open the event log in {}", dir.display()))?;
    let writer = EventWriter::start(
        Arc::new(log),
        events.retention,
        events.body_limit,
        node.clone(),
    )
    .context("cannot start the event writer")?;
    Ok(Some(writer))
}

/// Hands this worker's events to the writer every `HANDOFF_INTERVAL`.
async fn hand_over_events(worker: Rc<Worker>) {
    loop {
        monoio::time::sleep(events::buffer::HANDOFF_INTERVAL).await;
        worker.events.borrow_mut().hand_over();
    }
}

/// Reports this worker's usage to the ledger about once a second, hands
/// back leases it no longer draws on, and returns freed memory.
async fn report_usage(worker: Rc<Worker>, unreported: Arc<AtomicBool>) {
    loop {
        monoio::time::sleep(USAGE_REPORT_INTERVAL).await;
        if !settle(&worker).await {
            // Counts and spend lost: the next start takes the leases as used.
            unreported.store(true, Ordering::Release);
        }
        crate::alloc::release_free_memory();
    }
}

/// A key's, user's or team's spend went past its soft budget: an alert,
/// as a log line, a `budget_alert` record in the event log (handed over
/// with the worker's next batch) and `llm_proxy_soft_budget_alerts_total`.
fn soft_budget_crossed(worker: &Worker, crossed: crate::store::SoftBudgetCrossed) {
    tracing::warn!(
        worker = worker.id,
        kind = crossed.kind,
        id = %crossed.id,
        spend = crossed.spend.dollars(),
        soft_budget = crossed.soft_budget.dollars(),
        "soft budget crossed"
    );
    if let Some(mut metrics) = worker.metrics() {
        metrics.soft_budget_crossed(crossed.kind);
    }
    worker
        .events
        .borrow_mut()
        .alert(events::stored::BudgetAlert {
            kind: crossed.kind.into(),
            id: crossed.id,
            spend: crossed.spend,
            soft_budget: crossed.soft_budget,
            at_unix_ns: crate::http::io::unix_nanos(),
        });
}

/// Writes this worker's reports to the ledger; `false` if they were lost.
async fn settle(worker: &Worker) -> bool {
    let reports = worker.quota.borrow_mut().take_reports();
    if reports.is_empty() {
        return true;
    }
    let store = worker.store.clone();
    // A ledger write fsyncs: off the worker thread.
    let result = monoio::spawn_blocking(move || store.settle(&reports)).await;
    match result {
        Ok(Ok(crossed)) => {
            for crossed in crossed {
                soft_budget_crossed(worker, crossed);
            }
            true
        }
        Ok(Err(error)) => {
            tracing::error!(worker = worker.id, %error, "cannot record usage");
            false
        }
        Err(_) => {
            tracing::error!(worker = worker.id, "usage report cancelled");
            false
        }
    }
}
