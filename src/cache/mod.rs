//! The HTTP response cache: a shard per worker, each holding every answer
//! the server stored, bounded in bytes for the server as a whole, least
//! recently used out first. An entry (`entry`) is a prepared answer
//! (status line and end-to-end fields, body de-chunked), immutable and
//! shared by the shards, that a hit writes out in one piece with `Age`,
//! the cache fields and the request's ID added.
//!
//! `policy` decides from `Cache-Control` what may be looked up and stored;
//! `key` makes the keys; `shard` is one worker's map; `share` what the
//! shards have in common and tell each other. The request path uses it in
//! `proxy::cached` (look up, serve a hit) and `proxy::relay` (keep a miss's
//! answer); `worker::cache_notes` takes in the other shards' news.

mod entry;
pub mod key;
pub mod policy;
mod shard;
mod share;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::http::head::{Field, listed_in_connection};
use crate::http::io::header;
use crate::http::rewrite::status_line_with_reason;
use crate::http::{RequestHead, ResponseHead};
use key::{Base, Scope};
use policy::{Consult, Directives, Lookup, Sharing};

pub use crate::settings::CacheSettings;
pub use entry::{Entry, HitReply};
pub use shard::ResponseCache;
pub use share::Shared;

/// What an entry costs beyond its bytes (the entry's fields, one shard's
/// map slot and list links).
const ENTRY_OVERHEAD: usize = 256;

/// Which entries a purge removes, by their normalized target.
#[derive(Debug, Clone)]
pub enum Purge {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl Purge {
    /// An exact purge of `url` (a full URL or a path with its query), or a
    /// prefix purge of `prefix`, normalized as the entries' targets are.
    pub fn exact(url: &str) -> Self {
        let target = strip_origin(url);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.as_bytes())),
            None => (target, None),
        };
        Purge::Exact(key::normalized_target(path.as_bytes(), query))
    }

    pub fn prefix(prefix: &str) -> Self {
        Purge::Prefix(strip_origin(prefix).as_bytes().to_vec())
    }
}

/// `http://host:port/path?q` → `/path?q`.
fn strip_origin(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => url,
    }
}

/// What identifies a request to the cache.
pub struct Request {
    base: Base,
    key_id: Uuid,
    project_id: Option<Uuid>,
    max_age: Option<u64>,
}

impl Request {
    pub fn new(
        head: &RequestHead,
        buf: &[u8],
        body: &[u8],
        (key_id, project_id): (Uuid, Option<Uuid>),
        consult: &Consult,
    ) -> Self {
        let (path, query) = split_target(head, buf);
        let method = if head.method == http::Method::HEAD {
            &http::Method::GET
        } else {
            &head.method
        };
        Self {
            base: Base::new(method, path, query, body),
            key_id,
            project_id,
            max_age: consult.max_age,
        }
    }

    fn scope(&self, sharing: Sharing) -> Scope {
        Scope::of(sharing, self.key_id, self.project_id)
    }

    /// The key shown on a miss: the tenant's, before `Vary`.
    pub fn shown_key(&self) -> [u8; 32] {
        key::hex(&self.base.scoped(&self.scope(Sharing::Tenant)))
    }
}

fn split_target<'a>(head: &RequestHead, buf: &'a [u8]) -> (&'a [u8], Option<&'a [u8]>) {
    let target = head.target.of(buf);
    match target.iter().position(|&b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    }
}

/// A request the cache did not answer: what its answer needs to be stored,
/// and what the answer's head tells the client.
pub struct Miss {
    pub request: Request,
    pub consult: Consult,
    pub method: http::Method,
    pub post: bool,
    pub target: Box<[u8]>,
    /// `miss` or `bypass`, as the client is told.
    pub shown: &'static str,
    pub key_hex: [u8; 32],
    /// The worker answering, shown in `X-PROXY-CACHE-WORKER`: its index
    /// in decimal, held inline (no allocation per miss).
    worker: ([u8; 20], usize),
}

impl Miss {
    pub fn new(
        request: Request,
        consult: Consult,
        (head, buf): (&RequestHead, &[u8]),
        worker: usize,
    ) -> Self {
        let (path, query) = split_target(head, buf);
        Self {
            worker: decimal(worker),
            key_hex: request.shown_key(),
            request,
            consult,
            method: head.method.clone(),
            post: head.method == http::Method::POST,
            target: key::normalized_target(path, query).into(),
            shown: match consult.lookup {
                Lookup::Bypass => "bypass",
                Lookup::Yes | Lookup::Revalidate => "miss",
            },
        }
    }

    /// The fields the answer's head carries: `Cache-Status` is `stored`
    /// when the answer is being kept.
    pub fn fields(&self, storing: bool) -> [(&'static str, &[u8]); 4] {
        let status = if storing { "stored" } else { self.shown };
        [
            ("Cache-Status", status.as_bytes()),
            ("X-PROXY-CACHE", b"miss"),
            ("X-PROXY-CACHE-KEY", &self.key_hex),
            ("X-PROXY-CACHE-WORKER", &self.worker.0[..self.worker.1]),
        ]
    }

    /// The stored form of an upstream answer's head, if the answer may be
    /// kept; its body is kept as it is relayed.
    pub fn prepare(
        &self,
        settings: &CacheSettings,
        response: &ResponseHead,
        buf: &[u8],
    ) -> Option<Pending> {
        if !matches!(response.status, 200 | 203) || !self.consult.store {
            return None;
        }
        let field = |wanted: &'static [u8]| {
            response
                .headers
                .iter()
                .filter(move |(name, _)| name.of(buf).eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value.of(buf))
        };
        let mut directives = Directives::of_fields(field(b"cache-control"));
        let streamed = field(b"content-type").any(|v| {
            v.trim_ascii()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"))
        });
        if streamed {
            if !settings.stream_responses {
                return None;
            }
            // Streams say `no-cache` to keep intermediaries from buffering
            // them; an operator who turned stream caching on means to keep
            // them (`no-store` still refuses).
            directives.no_cache = false;
        }
        let default_ttl = settings.default_ttl.as_secs();
        let (ttl, sharing) =
            policy::storable(directives, &self.consult, &self.method, default_ttl)?;
        if let crate::http::Framing::Length(length) = response.framing(&self.method)
            && length > settings.max_object_bytes as u64
        {
            return None;
        }
        let mut vary: Vec<Box<str>> = Vec::new();
        for value in field(b"vary") {
            for name in crate::http::head::tokens(value) {
                if name == b"*" {
                    return None;
                }
                vary.push(String::from_utf8_lossy(name).to_ascii_lowercase().into());
            }
        }
        vary.sort();
        vary.dedup();
        let etag = field(b"etag").next().map(|v| v.trim_ascii().into());
        let (head, not_modified) = stored_heads(response, buf);
        Some(Pending {
            status: response.status,
            head,
            not_modified,
            etag,
            ttl: Duration::from_secs(ttl),
            sharing,
            vary: vary.into(),
            max_object_bytes: settings.max_object_bytes,
        })
    }
}

/// `n` in decimal digits, and how many there are.
fn decimal(n: usize) -> ([u8; 20], usize) {
    use std::io::Write;
    let mut out = [0; 20];
    let mut rest = &mut out[..];
    // Twenty digits hold any `usize`.
    let _ = write!(rest, "{n}");
    let len = 20 - rest.len();
    (out, len)
}

/// An answer being kept while it is relayed.
pub struct Pending {
    status: u16,
    head: Vec<u8>,
    not_modified: Vec<u8>,
    etag: Option<Box<[u8]>>,
    ttl: Duration,
    sharing: Sharing,
    vary: Arc<[Box<str>]>,
    max_object_bytes: usize,
}

/// Fields a `304` repeats from the stored answer (RFC 9110 §15.4.5).
const VALIDATOR_FIELDS: [&[u8]; 5] = [b"etag", b"cache-control", b"vary", b"expires", b"date"];

/// The stored status line and end-to-end fields (no framing, no `Age`, no
/// `Set-Cookie`, the provider's request ID renamed as the relay does), and the `304`
/// head with the validator fields.
fn stored_heads(response: &ResponseHead, buf: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(response.len + 32);
    status_line_with_reason(&mut head, response.status, response.reason.of(buf));
    let mut not_modified = b"HTTP/1.1 304 Not Modified\r\n".to_vec();
    for (name, value) in &response.headers {
        let (name, value) = (name.of(buf), value.of(buf));
        let field = Field::of(name);
        if field.is_hop_by_hop()
            || matches!(field, Field::ContentLength | Field::TransferEncoding)
            || listed_in_connection(buf, response.connection, name)
            || name.eq_ignore_ascii_case(b"age")
            // Cookies are for the one client that got the answer.
            || name.eq_ignore_ascii_case(b"set-cookie")
        {
            continue;
        }
        if field == Field::XRequestId {
            header(&mut head, "X-Upstream-Request-ID", value);
            continue;
        }
        append_field(&mut head, name, value);
        if VALIDATOR_FIELDS
            .iter()
            .any(|v| name.eq_ignore_ascii_case(v))
        {
            append_field(&mut not_modified, name, value);
        }
    }
    (head, not_modified)
}

fn append_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
