//! Local endpoints answered by the gateway itself: `/health`, `/ready`,
//! `/live`; everything else outside `/v1/` is a JSON 404.

use http::StatusCode;

use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http::RequestHead;
use crate::http::io::{Reply, json_response};
use crate::metrics::Endpoint;
use crate::worker::Worker;

pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let received = std::time::Instant::now();
    let request_id = crate::http::request_id::request_id(head, &conn.buf);
    let path = head.path(&conn.buf).to_vec();
    let body_consumed = conn.discard_buffered_body(head);
    let close = !head.keep_alive || worker.draining() || !body_consumed;
    let readable = head.method == http::Method::GET || head.method == http::Method::HEAD;
    let answer = match path.as_slice() {
        b"/health" | b"/ready" | b"/live" if !readable => Err(ProxyError::MethodNotAllowed {
            method: head.method.clone(),
            allow: "GET, HEAD".into(),
        }),
        b"/health" => Ok((
            StatusCode::OK,
            serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "driver": worker.driver.name(),
                "workers": worker.settings.workers,
                "worker": worker.id,
            }),
        )),
        b"/ready" if worker.draining() => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"}),
        )),
        b"/ready" => Ok((StatusCode::OK, serde_json::json!({"status": "ready"}))),
        b"/live" => Ok((StatusCode::OK, serde_json::json!({"status": "alive"}))),
        _ => Err(ProxyError::NotFound),
    };
    let reply = Reply {
        close,
        head_only: head.method == http::Method::HEAD,
    };
    // Counted before the answer goes out, so that a scrape that follows it
    // sees it.
    let (route, status) = match &answer {
        Ok((status, _)) => (Endpoint::Local, *status),
        Err(ProxyError::NotFound) => (Endpoint::Other, StatusCode::NOT_FOUND),
        Err(error) => (Endpoint::Local, error.status()),
    };
    if let Some(mut metrics) = worker.metrics() {
        metrics.record_local(route, status.as_u16(), received.elapsed());
    }
    match answer {
        Ok((status, body)) => {
            let body = serde_json::to_vec(&body).unwrap_or_default();
            json_response(
                &mut conn.out,
                status,
                &body,
                &[("X-Request-ID", request_id.as_bytes())],
                reply,
            );
        }
        Err(error) => error.render(&mut conn.out, &request_id, reply),
    }
    conn.send_out().await && !close
}
