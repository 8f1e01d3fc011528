//! The client connection loop: read a head, dispatch it to its handler,
//! repeat while the connection is kept alive. Pipelined requests are served
//! in order.

use std::pin::pin;
use std::rc::Rc;

use http::Method;
use monoio::net::TcpStream;

use super::{health, metrics};
use crate::downstream::{ClientConn, OUT_SIZE, next_head};
use crate::http::RequestHead;
use crate::http::io::Reply;
use crate::worker::{ConnectionGuard, Worker};
use crate::{login, manage, proxy};

pub async fn serve(worker: Rc<Worker>, stream: TcpStream) {
    let _guard = ConnectionGuard::new(&worker);
    let _ = stream.set_nodelay(true);
    let mut conn = ClientConn::new(stream, worker.settings.limits.write_timeout);
    let drain = worker.drain.clone();
    let mut drained = pin!(drain.wait());
    loop {
        let head = match next_head(&worker, &mut conn, drained.as_mut()).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(error) => {
                let request_id = crate::http::request_id::new_request_id();
                error.render(&mut conn.out, &request_id, Reply::CLOSE);
                conn.send_out().await;
                tracing::debug!(%error, request_id, "rejected request head");
                return;
            }
        };
        conn.out.reserve(OUT_SIZE);
        // The handlers' futures are boxed: inline, the largest of them
        // would set the size of every connection's task, idle ones included.
        let keep_alive = match Handler::for_request(&worker, &head, &conn.buf) {
            Handler::Proxy => Box::pin(proxy::handle(&worker, &mut conn, &head)).await,
            Handler::Manage => Box::pin(manage::handle(&worker, &mut conn, &head)).await,
            Handler::Local => Box::pin(health::handle(&worker, &mut conn, &head)).await,
            Handler::Metrics => Box::pin(metrics::handle(&worker, &mut conn, &head)).await,
            Handler::Login => Box::pin(login::handle(&worker, &mut conn, &head)).await,
        };
        if !keep_alive || worker.draining() {
            return;
        }
        // The handler consumed the body; what follows the head is the next request.
        conn.buf.drain(..head.len.min(conn.buf.len()));
        conn.shed_buffers();
    }
}

/// Who answers a request, by its path.
enum Handler {
    Proxy,
    Manage,
    Local,
    Metrics,
    Login,
}

impl Handler {
    fn for_request(worker: &Worker, head: &RequestHead, buf: &[u8]) -> Self {
        let path = head.path(buf);
        if path.starts_with(b"/v1/") {
            // `/v1/models` lists the registered models, and `GET
            // /v1/models/{id}` retrieves one, if there are any, and always
            // for the master key; otherwise they are the upstream's, passed
            // through (as is every other method on `/v1/models/{id}`).
            let models = path == b"/v1/models"
                || (path.starts_with(b"/v1/models/")
                    && matches!(head.method, Method::GET | Method::HEAD));
            let local = path == b"/v1/model/info"
                || (models
                    && (worker.store.has_deployments().unwrap_or(false)
                        || manage::is_master(worker, head, buf)));
            return if local {
                Handler::Manage
            } else {
                Handler::Proxy
            };
        }
        if path == b"/manage" || path.starts_with(b"/manage/") || manage::litellm::owns(path) {
            Handler::Manage
        } else if matches!(
            path,
            b"/chat/completions" | b"/completions" | b"/embeddings"
        ) {
            // The OpenAI endpoints without `/v1`, as LiteLLM serves them.
            Handler::Proxy
        } else if path == b"/metrics" && worker.settings.metrics.enabled {
            Handler::Metrics
        } else if login::owns(path) {
            Handler::Login
        } else {
            Handler::Local
        }
    }
}
