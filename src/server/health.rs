//! Local endpoints answered by the gateway itself: `/health`, `/ready`,
//! `/live`; everything else outside `/v1/` is a JSON 404.

use http::StatusCode;

use crate::api::{Answer, Local};
use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http::RequestHead;
use crate::metrics::Endpoint;
use crate::worker::Worker;

pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let mut local = Local::new(worker, conn, head);
    let path = head.path(&conn.buf).to_vec();
    local.close |= !conn.discard_buffered_body(head);
    let readable = head.method == http::Method::GET || head.method == http::Method::HEAD;
    let answer = match path.as_slice() {
        b"/health" | b"/ready" | b"/live" if !readable => Err(ProxyError::MethodNotAllowed {
            method: head.method.clone(),
            allow: "GET, HEAD".into(),
        }),
        b"/health" => Ok(Answer::Json(
            StatusCode::OK,
            serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "driver": worker.driver.name(),
                "workers": worker.settings.workers,
                "worker": worker.id,
            }),
        )),
        b"/ready" if worker.draining() => Ok(Answer::Json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"}),
        )),
        b"/ready" => Ok(Answer::Json(
            StatusCode::OK,
            serde_json::json!({"status": "ready"}),
        )),
        b"/live" => Ok(Answer::Json(
            StatusCode::OK,
            serde_json::json!({"status": "alive"}),
        )),
        _ => Err(ProxyError::NotFound),
    };
    if matches!(answer, Err(ProxyError::NotFound)) {
        local.endpoint = Endpoint::Other;
    }
    local.respond(worker, conn, answer).await
}
