//! `GET /metrics`: every worker's counters in the Prometheus text format,
//! answered by whichever worker the scrape reached. It asks each worker
//! for a snapshot on that worker's own thread (`Control::on_each`), so no
//! counter is ever shared between threads.

use crate::api::{Answer, Local};
use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http::RequestHead;
use crate::metrics::render::{CONTENT_TYPE, render};
use crate::metrics::{Extra, Kind, Snapshot};
use crate::worker::Worker;

pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let mut local = Local::new(worker, conn, head);
    local.close |= !conn.discard_buffered_body(head);
    let answer = match admit(worker, head, &conn.buf) {
        Ok(()) => {
            let mut snapshots = worker.control.on_each(snapshot).await;
            Ok(Answer::Body {
                content_type: CONTENT_TYPE,
                body: render(&mut snapshots, worker.settings.workers, &worker.node),
            })
        }
        Err(error) => Err(error),
    };
    local.respond(worker, conn, answer).await
}

/// One worker's counters and gauges, taken on its own thread. Other
/// modules' per-worker counters join here, as `snapshot.extra`.
fn snapshot(worker: &Worker) -> Snapshot {
    let mut snapshot = worker.metrics.borrow().snapshot();
    snapshot.connections = worker.connections.get();
    body_budget(worker, &mut snapshot.extra);
    cache_figures(worker, &mut snapshot.extra);
    event_counters(worker, &mut snapshot.extra);
    shared_store(worker, &mut snapshot.extra);
    snapshot
}

/// Shared mode, once per process (under worker 0): whether PostgreSQL is
/// reachable, the last change this node's replica applied, and whether its
/// lease term is live (its slices of limits usable).
fn shared_store(worker: &Worker, extra: &mut Vec<Extra>) {
    let Some(shared) = worker.store.shared() else {
        return;
    };
    if worker.id != 0 {
        return;
    }
    let gauge = |name, help, value| Extra {
        name,
        help,
        kind: Kind::Gauge,
        labels: Vec::new(),
        value,
    };
    extra.push(gauge(
        "llm_proxy_shared_store_up",
        "1 while this node reaches PostgreSQL (shared mode), else 0.",
        u64::from(shared.is_up()),
    ));
    extra.push(gauge(
        "llm_proxy_shared_store_term_live",
        "1 while this node's lease term is live: it may hand out its slices of limits.",
        u64::from(shared.term_is_live()),
    ));
    // A short read transaction, not held across an await.
    if let Ok(change) = worker.store.applied_change() {
        extra.push(gauge(
            "llm_proxy_replica_applied_change",
            "The last change of the shared store this node's replica applied (compare across nodes).",
            change,
        ));
    }
}

/// The answers in this worker's shard of the response cache; under worker
/// 0, the bytes and distinct answers of all shards, each counted once.
fn cache_figures(worker: &Worker, extra: &mut Vec<Extra>) {
    if !worker.settings.cache.enabled {
        return;
    }
    let cache = worker.cache.borrow();
    let gauge = |name, help, value: usize| Extra {
        name,
        help,
        kind: Kind::Gauge,
        labels: Vec::new(),
        value: value as u64,
    };
    extra.push(gauge(
        "llm_proxy_cache_shard_entries",
        "Answers in the worker's shard of the response cache (every worker holds every answer).",
        cache.len(),
    ));
    if worker.id == 0 {
        let held = cache.shared();
        extra.push(gauge(
            "llm_proxy_cache_bytes",
            "Bytes the response cache holds, each answer counted once for all workers (bounded by HTTP_CACHE_MAX_BYTES).",
            held.bytes(),
        ));
        extra.push(gauge(
            "llm_proxy_cache_entries",
            "Distinct answers the response cache holds.",
            held.entries(),
        ));
    }
}

/// The bytes of request bodies the worker holds whole right now, and the
/// requests it refused because they would not fit.
fn body_budget(worker: &Worker, extra: &mut Vec<Extra>) {
    extra.push(Extra {
        name: "llm_proxy_buffered_body_bytes",
        help: "Bytes reserved from MAX_BUFFERED_BODY_BYTES for request bodies held whole (routing, cache keys): each body and its copy upstream.",
        kind: Kind::Gauge,
        labels: Vec::new(),
        value: worker.bodies.reserved() as u64,
    });
    extra.push(Extra {
        name: "llm_proxy_buffered_body_refusals_total",
        help: "Requests answered 503 server_busy because MAX_BUFFERED_BODY_BYTES was spent.",
        kind: Kind::Counter,
        labels: Vec::new(),
        value: worker.bodies.refusals(),
    });
}

/// The request events this worker made and lost; with worker 0's, the
/// process-wide figures of the event log (reported once, under worker 0):
/// events written, each dispatcher's progress, the log's size.
fn event_counters(worker: &Worker, extra: &mut Vec<Extra>) {
    let events = worker.events.borrow();
    if !events.enabled() {
        return;
    }
    let counter = |name, help, labels, value| Extra {
        name,
        help,
        kind: Kind::Counter,
        labels,
        value,
    };
    extra.push(counter(
        "llm_proxy_events_emitted_total",
        "Request events made by the worker.",
        Vec::new(),
        events.emitted(),
    ));
    let dropped =
        "Request events lost: the event log writer could not keep up, or could not write the log.";
    extra.push(counter(
        "llm_proxy_events_dropped_total",
        dropped,
        vec![("reason", "writer_behind".into())],
        events.dropped(),
    ));
    if worker.id != 0 {
        return;
    }
    extra.push(counter(
        "llm_proxy_events_dropped_total",
        dropped,
        vec![("reason", "write_failed".into())],
        events.failed(),
    ));
    extra.push(counter(
        "llm_proxy_events_written_total",
        "Request events appended to the event log by this process.",
        Vec::new(),
        events.written(),
    ));
    let Some(log) = events.log() else { return };
    // A short read transaction each, not held across an await.
    for (name, seq) in log.cursors().unwrap_or_default() {
        extra.push(counter(
            "llm_proxy_events_dispatched_total",
            "Sequence number of the last event each dispatcher delivered.",
            vec![("dispatcher", name)],
            seq,
        ));
    }
    if let Ok(Some((_, last))) = log.bounds() {
        extra.push(Extra {
            kind: Kind::Gauge,
            ..counter(
                "llm_proxy_event_log_last_sequence",
                "Sequence number of the newest event in the log (dispatcher lag = this - dispatched).",
                Vec::new(),
                last,
            )
        });
    }
    if let Ok(bytes) = log.used_bytes() {
        extra.push(Extra {
            kind: Kind::Gauge,
            ..counter(
                "llm_proxy_event_log_bytes",
                "Bytes of the event log's pages in use.",
                Vec::new(),
                bytes,
            )
        });
    }
}

/// GET or HEAD, with `METRICS_TOKEN` when one is set.
fn admit(worker: &Worker, head: &RequestHead, buf: &[u8]) -> Result<(), ProxyError> {
    if head.method != http::Method::GET && head.method != http::Method::HEAD {
        return Err(ProxyError::MethodNotAllowed {
            method: head.method.clone(),
            allow: "GET, HEAD".into(),
        });
    }
    let Some(expected) = worker.settings.metrics.token.as_deref() else {
        return Ok(());
    };
    if !crate::worker::auth::presents_bearer(head, buf, expected) {
        return Err(ProxyError::MetricsUnauthorized);
    }
    Ok(())
}
