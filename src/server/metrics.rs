//! `GET /metrics`: every worker's counters in the Prometheus text format,
//! answered by whichever worker the scrape reached. It asks each worker
//! for a snapshot on that worker's own thread (`Control::on_each`), so no
//! counter is ever shared between threads.

use std::time::Instant;

use http::StatusCode;

use super::conn::ClientConn;
use super::worker::Worker;
use crate::http::RequestHead;
use crate::http::io::{Reply, header, header_u64, status_line};
use crate::metrics::render::{CONTENT_TYPE, render};
use crate::metrics::{Route, Snapshot};
use crate::proxy;
use crate::proxy::error::ProxyError;
use crate::store::crypto::same_secret;

pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let received = Instant::now();
    let request_id = proxy::request_id(head, &conn.buf);
    let body_consumed = conn.discard_buffered_body(head);
    let close = !head.keep_alive || worker.draining() || !body_consumed;
    let reply = Reply {
        close,
        head_only: head.method == http::Method::HEAD,
    };
    let status = match admit(worker, head, &conn.buf) {
        Ok(()) => {
            let mut snapshots = worker.control.on_each(snapshot).await;
            let text = render(&mut snapshots, worker.settings.workers);
            text_response(&mut conn.out, text.as_bytes(), &request_id, reply);
            StatusCode::OK
        }
        Err(error) => {
            error.render(&mut conn.out, &request_id, reply);
            error.status()
        }
    };
    if let Some(mut metrics) = worker.metrics() {
        metrics.record_local(Route::Local, status.as_u16(), received.elapsed());
    }
    conn.send_out().await && !close
}

/// One worker's counters and gauges, taken on its own thread. Other
/// modules' per-worker counters join here, as `snapshot.extra`.
fn snapshot(worker: &Worker) -> Snapshot {
    let mut snapshot = worker.metrics.borrow().snapshot();
    snapshot.connections = worker.connections.get();
    snapshot
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
    let presented = head
        .header(buf, "authorization")
        .and_then(proxy::auth::bearer_key)
        .ok_or(ProxyError::MetricsUnauthorized)?;
    if !same_secret(expected.as_bytes(), presented) {
        return Err(ProxyError::MetricsUnauthorized);
    }
    Ok(())
}

fn text_response(out: &mut Vec<u8>, body: &[u8], request_id: &str, reply: Reply) {
    status_line(out, StatusCode::OK);
    header(out, "Content-Type", CONTENT_TYPE.as_bytes());
    header_u64(out, "Content-Length", body.len() as u64);
    header(out, "Cache-Control", b"no-store");
    header(out, "X-Request-ID", request_id.as_bytes());
    if reply.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !reply.head_only {
        out.extend_from_slice(body);
    }
}
