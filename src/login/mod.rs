//! Sign-in for the CLI (`llm-proxy login`), served by the workers under
//! `/sso/`: the start/poll flow, the built-in password page, the OpenID
//! Connect redirect and callback, and the key's own logout and whoami.
//! Cold path: store calls and calls to the identity provider run on the
//! blocking pool, never on the worker thread. See docs/login.md.

pub mod oidc;
pub mod password;

use crate::http::RequestHead;
use crate::http::io::Reply;
use crate::proxy;
use crate::proxy::error::ProxyError;
use crate::server::conn::ClientConn;
use crate::server::worker::Worker;

/// Whether `path` is answered here.
pub fn owns(path: &[u8]) -> bool {
    path.starts_with(b"/sso/")
}

pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let request_id = proxy::request_id(head, &conn.buf);
    let body_consumed = conn.discard_buffered_body(head);
    let close = !head.keep_alive || worker.draining() || !body_consumed;
    let reply = Reply {
        close,
        head_only: head.method == http::Method::HEAD,
    };
    ProxyError::NotFound.render(&mut conn.out, &request_id, reply);
    conn.send_out().await && !close
}
