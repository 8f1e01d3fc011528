//! A stored answer: immutable once made, so every worker's shard holds the
//! same bytes (one `Arc`), and a hit on any worker writes them out without
//! a lock. Two atomics are all that change, each written rarely: whether
//! the answer was dropped (once), and when it was last used (at most once a
//! second).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use std::time::{Duration, Instant};

use super::policy::{self, Sharing};
use crate::http::RequestHead;
use crate::http::io::{header, header_u64};

/// A field the answer varies on, and the request's value of it (if any).
pub(super) type VaryValue = (Box<str>, Option<Box<[u8]>>);

/// A stored answer.
pub struct Entry {
    pub(super) status: u16,
    /// Status line and fields, `Content-Length` included, no blank line.
    pub(super) head: Box<[u8]>,
    /// The `304 Not Modified` status line and validator fields.
    pub(super) not_modified: Box<[u8]>,
    pub(super) body: Box<[u8]>,
    pub(super) etag: Option<Box<[u8]>>,
    pub(super) stored: Instant,
    pub(super) ttl: Duration,
    /// The request's values of the answer's `Vary` fields.
    pub(super) vary: Box<[VaryValue]>,
    pub(super) sharing: Sharing,
    pub(super) post: bool,
    /// `path?sorted-query`, what purges match.
    pub(super) target: Box<[u8]>,
    pub(super) key_hex: [u8; 32],
    /// What the entry counts against `HTTP_CACHE_MAX_BYTES`, once for all
    /// workers.
    pub(super) size: usize,
    /// Set by the first shard that drops the answer (evicted, expired,
    /// replaced, purged): its bytes stop counting then, and no shard serves
    /// it after, even before the news reached that shard.
    pub(super) retired: AtomicBool,
    /// The last hit on any worker, in seconds of the cache's clock: a
    /// shard evicting by its own recency spares what others still use.
    pub(super) used: AtomicU32,
}

impl Entry {
    pub(super) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    pub(super) fn vary_matches(&self, head: &RequestHead, buf: &[u8]) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| head.header(buf, name).map(<[u8]>::trim_ascii) == value.as_deref())
    }

    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Marks the entry dropped; `true` for the one caller that did it first
    /// (and so uncounts its bytes).
    pub(super) fn retire(&self) -> bool {
        !self.retired.swap(true, Ordering::AcqRel)
    }

    pub(super) fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// Notes a hit at `stamp`; the shared word is written only when the
    /// second changed, so hits on several cores do not fight over it.
    pub(super) fn touch(&self, stamp: u32) {
        if self.used.load(Ordering::Relaxed) < stamp {
            self.used.store(stamp, Ordering::Relaxed);
        }
    }

    /// Writes the stored answer (or a `304` when `If-None-Match` names its
    /// tag) into `out`; returns the status written.
    pub fn write(&self, out: &mut Vec<u8>, reply: &HitReply) -> u16 {
        let revalidated = match (&self.etag, reply.if_none_match) {
            (Some(etag), Some(tags)) => policy::none_match(tags, etag),
            _ => false,
        };
        let body = if revalidated || reply.head_only {
            &[][..]
        } else {
            &self.body[..]
        };
        out.reserve(self.head.len() + body.len() + 192 + reply.request_id.len());
        out.extend_from_slice(if revalidated {
            &self.not_modified
        } else {
            &self.head
        });
        header_u64(out, "Age", self.age(reply.now).as_secs());
        let status: &[u8] = if revalidated {
            b"conditional-hit"
        } else {
            b"hit"
        };
        header(out, "Cache-Status", status);
        out.extend_from_slice(b"X-PROXY-CACHE: hit\r\n");
        header(out, "X-PROXY-CACHE-KEY", &self.key_hex);
        header_u64(out, "X-PROXY-CACHE-WORKER", reply.worker as u64);
        header(out, "X-Request-ID", reply.request_id.as_bytes());
        if reply.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        if revalidated { 304 } else { self.status }
    }
}

/// What a hit's answer adds to the stored one.
pub struct HitReply<'a> {
    pub request_id: &'a str,
    pub if_none_match: Option<&'a [u8]>,
    pub head_only: bool,
    pub close: bool,
    pub now: Instant,
    /// The worker answering, shown in `X-PROXY-CACHE-WORKER`.
    pub worker: usize,
}
