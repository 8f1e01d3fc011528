//! The response cache on the request path: decide from the head whether
//! the cache applies (costing nothing when it does not), look the request
//! up, and answer a hit from the worker's shard without touching the
//! upstream. A lookup comes after `proxy::authorize`: a hit has passed the
//! same allowlist, budget and `max_requests` checks as a request sent
//! upstream. A miss leaves what storing needs in `exchange.cache` for the
//! relay.

use std::time::Instant;

use super::Exchange;
use crate::cache::policy::{Consult, Directives, Lookup};
use crate::cache::{HitReply, Miss, Request};
use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http::RequestHead;
use crate::http::io::unix_nanos;
use crate::record::CacheStatus;
use crate::worker::Worker;
use crate::worker::keys::CachedKey;

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

/// Looks the request up; on a hit writes the stored answer and returns
/// `true`. On a miss, leaves the miss in `exchange.cache` for the relay.
pub async fn lookup(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    key: &CachedKey,
    consult: Consult,
    body: &[u8],
    exchange: &mut Exchange,
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
