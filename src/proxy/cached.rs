//! The response cache on the request path: decide from the head whether
//! the cache applies (costing nothing when it does not), look the request
//! up, and answer a hit from the worker's shard without touching the
//! upstream. A hit still authenticates and counts toward the key's limits.
//! A miss leaves what storing needs in `exchange.cache` for the relay.

use std::time::Instant;

use super::Exchange;
use super::auth;
use super::error::ProxyError;
use super::keys::CachedKey;
use super::record::CacheStatus;
use crate::cache::policy::{Consult, Directives, Lookup};
use crate::cache::{HitReply, Miss, Request};
use crate::http::RequestHead;
use crate::http::io::unix_nanos;
use crate::server::conn::{BodyRead, ClientConn};
use crate::server::worker::Worker;

/// Whether the cache applies to this request, from its head alone: no
/// body read, no hashing.
pub fn consult(worker: &Worker, head: &RequestHead, buf: &[u8]) -> Option<Consult> {
    let settings = &worker.settings.cache;
    if !settings.enabled {
        return None;
    }
    let post_entries = match head.method {
        http::Method::GET | http::Method::HEAD => false,
        http::Method::POST => worker.cache.borrow().has_post_entries(),
        _ => return None,
    };
    crate::cache::policy::consult(
        &head.method,
        Directives::of_request(head, buf),
        post_entries,
    )
}

/// A pass-through request the cache applies to: its body is read (it is
/// part of the key), then it is answered from the cache or sent on.
pub async fn pass_through(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    key: &CachedKey,
    consult: Consult,
    exchange: &mut Exchange,
) -> Result<(), ProxyError> {
    let body = if head.has_body() {
        let limits = &worker.settings.limits;
        let read = BodyRead {
            limit: limits.max_body_bytes as usize,
            headroom: 0,
            timeout: limits.body_timeout,
        };
        let body = conn
            .read_held_body(&worker.bodies, head, &read, &mut exchange.body_done)
            .await?;
        Some(body)
    } else {
        None
    };
    let served = lookup(
        worker,
        conn,
        head,
        key,
        consult,
        body.as_deref().unwrap_or_default(),
        exchange,
        Admission::Pending,
    )
    .await?;
    if served {
        return Ok(());
    }
    super::pass_through(worker, conn, head, key, body.as_deref(), exchange).await
}

/// Whether a hit must still be admitted (`auth::admit`), or was already.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Pending,
    Done,
}

/// Looks the request up; on a hit writes the stored answer and returns
/// `true`. On a miss, leaves the miss in `exchange.cache` for the relay.
#[allow(clippy::too_many_arguments)]
pub async fn lookup(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    key: &CachedKey,
    consult: Consult,
    body: &[u8],
    exchange: &mut Exchange,
    admission: Admission,
) -> Result<bool, ProxyError> {
    let view = &key.view;
    let request = Request::new(
        head,
        &conn.buf,
        body,
        (view.key_id, view.project_id),
        &consult,
    );
    let found = match consult.lookup {
        Lookup::Yes => worker
            .cache
            .borrow_mut()
            .find(&request, head, &conn.buf, Instant::now()),
        Lookup::Revalidate | Lookup::Bypass => None,
    };
    let Some(entry) = found else {
        let miss = Miss::new(request, consult, head, &conn.buf);
        exchange.record.cache = match consult.lookup {
            Lookup::Bypass => CacheStatus::Bypass,
            Lookup::Yes | Lookup::Revalidate => CacheStatus::Miss,
        };
        exchange.cache = Some(Box::new(miss));
        return Ok(false);
    };
    if admission == Admission::Pending {
        // The key must be able to use its project, as it would upstream.
        auth::project_upstream_auth(key)?;
        auth::admit(worker, key).await?;
    }
    exchange.close |= !head.keep_alive || worker.draining();
    let reply = HitReply {
        request_id: exchange.request_id.as_str(),
        if_none_match: head.header(&conn.buf, "if-none-match"),
        head_only: head.method == http::Method::HEAD,
        close: exchange.close,
        now: Instant::now(),
    };
    conn.out.clear();
    exchange.status = entry.write(&mut conn.out, &reply);
    exchange.record.cache = CacheStatus::Hit;
    exchange.response_started = true;
    exchange.record.first_byte_ns = Some(unix_nanos());
    if !conn.send_out().await {
        return Err(ProxyError::ClientGone);
    }
    exchange.record.response_complete = true;
    Ok(true)
}
