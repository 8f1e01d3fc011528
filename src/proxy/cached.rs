//! The response cache on the request path: decide from the head whether
//! the cache applies (costing nothing when it does not), look the request
//! up, and answer a hit from the worker's shard (which holds what every
//! worker stored) without touching the upstream. A lookup comes after
//! `admit`: a hit has passed the same allowlist, budget and `max_requests`
//! checks as a request sent upstream.
//! A miss leaves what storing needs in the session for the relay.

use std::time::Instant;

use super::Session;
use crate::cache::policy::{Consult, Directives, Lookup};
use crate::cache::{HitReply, Miss, Request};
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
    if !matches!(
        head.method,
        http::Method::GET | http::Method::HEAD | http::Method::POST
    ) {
        return None;
    }
    // What other workers stored before this request began is looked up
    // as if stored here.
    crate::worker::cache_notes::catch_up(worker);
    let post_entries =
        head.method == http::Method::POST && worker.cache.borrow().has_post_entries();
    crate::cache::policy::consult(
        &head.method,
        Directives::of_request(head, buf),
        post_entries,
    )
}

/// Looks the request up; on a hit writes the stored answer and returns
/// `true`. On a miss, leaves the miss in the session for the relay.
pub async fn lookup(
    s: &mut Session<'_>,
    key: &CachedKey,
    consult: Consult,
    body: &[u8],
) -> Result<bool, ProxyError> {
    let (worker, head) = (s.worker, s.head);
    let view = &key.view;
    let request = Request::new(
        head,
        &s.conn.buf,
        body,
        (view.key_id, view.project_id),
        &consult,
    );
    let now = Instant::now();
    let hit = match consult.lookup {
        Lookup::Yes => {
            // The entry is written out while the shard lends it.
            let mut cache = worker.cache.borrow_mut();
            let status = cache.find(&request, (head, &s.conn.buf), now, |entry| {
                s.close |= !head.keep_alive || worker.draining();
                let reply = HitReply {
                    request_id: s.request_id.as_str(),
                    if_none_match: head.header(&s.conn.buf, "if-none-match"),
                    head_only: head.method == http::Method::HEAD,
                    close: s.close,
                    now,
                    worker: worker.id,
                };
                s.conn.out.clear();
                entry.write(&mut s.conn.out, &reply)
            });
            // An expired entry this shard dropped: so do the others.
            cache.publish();
            status
        }
        Lookup::Revalidate | Lookup::Bypass => None,
    };
    let Some(status) = hit else {
        let miss = Miss::new(request, consult, (head, &s.conn.buf), worker.id);
        s.record.cache = match consult.lookup {
            Lookup::Bypass => CacheStatus::Bypass,
            Lookup::Yes | Lookup::Revalidate => CacheStatus::Miss,
        };
        s.cache = Some(Box::new(miss));
        return Ok(false);
    };
    s.status = status;
    s.record.cache = CacheStatus::Hit;
    s.response_started = true;
    s.record.first_byte_ns = Some(unix_nanos());
    if !s.conn.send_out().await {
        return Err(ProxyError::ClientGone);
    }
    s.record.response_complete = true;
    Ok(true)
}
