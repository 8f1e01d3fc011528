//! The HTTP response cache: one shard per worker, bounded in bytes, least
//! recently used out first. An entry is a prepared answer (status line and
//! end-to-end fields, body de-chunked) that a hit writes out in one piece,
//! with `Age`, the cache fields and the request's ID added.
//!
//! `policy` decides from `Cache-Control` what may be looked up and stored;
//! `key` makes the keys. The request path uses it in `proxy::cached` (look
//! up, serve a hit) and `proxy::relay` (keep a miss's answer).

pub mod key;
pub mod policy;

use std::num::NonZeroUsize;
use std::rc::Rc;
use std::time::{Duration, Instant};

use lru::LruCache;
use uuid::Uuid;

use crate::http::head::{Field, listed_in_connection};
use crate::http::io::{header, header_u64};
use crate::http::rewrite::status_line_with_reason;
use crate::http::{RequestHead, ResponseHead};
use key::{Base, Digest, Scope};
use policy::{Consult, Directives, Lookup, Sharing};

pub use crate::settings::CacheSettings;

/// What an entry costs beyond its bytes (map slot, list links, fields).
const ENTRY_OVERHEAD: usize = 256;
/// Primary keys whose answers vary on request fields, remembered per shard.
const VARY_INDEX_ENTRIES: usize = 4096;

/// A field the answer varies on, and the request's value of it (if any).
type VaryValue = (Box<str>, Option<Box<[u8]>>);

/// A stored answer.
pub struct Entry {
    status: u16,
    /// Status line and fields, `Content-Length` included, no blank line.
    head: Box<[u8]>,
    /// The `304 Not Modified` status line and validator fields.
    not_modified: Box<[u8]>,
    body: Box<[u8]>,
    etag: Option<Box<[u8]>>,
    stored: Instant,
    ttl: Duration,
    /// The request's values of the answer's `Vary` fields.
    vary: Box<[VaryValue]>,
    sharing: Sharing,
    post: bool,
    /// `path?sorted-query`, what purges match.
    target: Box<[u8]>,
    key_hex: [u8; 32],
    size: usize,
}

impl Entry {
    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    fn vary_matches(&self, head: &RequestHead, buf: &[u8]) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| head.header(buf, name).map(<[u8]>::trim_ascii) == value.as_deref())
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
        out.reserve(self.head.len() + body.len() + 160 + reply.request_id.len());
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
}

/// One worker's shard.
pub struct ResponseCache {
    entries: LruCache<Digest, Rc<Entry>>,
    /// Primary key → the `Vary` fields of the answers stored under it.
    vary: LruCache<Digest, Rc<[Box<str>]>>,
    bytes: usize,
    max_bytes: usize,
    /// Entries of each kind, so lookups skip scopes that hold nothing and
    /// `POST`s skip the cache while it has no `POST` answers.
    post_entries: usize,
    key_entries: usize,
    public_entries: usize,
}

impl ResponseCache {
    pub fn new(settings: &CacheSettings) -> Self {
        Self {
            entries: LruCache::unbounded(),
            vary: LruCache::new(NonZeroUsize::new(VARY_INDEX_ENTRIES).unwrap_or(NonZeroUsize::MIN)),
            bytes: 0,
            max_bytes: settings.max_bytes,
            post_entries: 0,
            key_entries: 0,
            public_entries: 0,
        }
    }

    pub fn has_post_entries(&self) -> bool {
        self.post_entries > 0
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, entries counted whole.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// A fresh entry for the request, in the narrowest scope that has one.
    pub fn find(
        &mut self,
        request: &Request,
        head: &RequestHead,
        buf: &[u8],
        now: Instant,
    ) -> Option<Rc<Entry>> {
        let scopes = [
            (self.key_entries > 0).then_some(request.scope(Sharing::Key)),
            Some(request.scope(Sharing::Tenant)),
            (self.public_entries > 0).then_some(request.scope(Sharing::Public)),
        ];
        for scope in scopes.into_iter().flatten() {
            let primary = request.base.scoped(&scope);
            let full = match self.vary.get(&primary) {
                Some(names) => key::with_vary(&primary, names, head, buf),
                None => primary,
            };
            let Some(entry) = self.entries.get(&full) else {
                continue;
            };
            let age = entry.age(now);
            if age >= entry.ttl {
                self.remove(&full);
                continue;
            }
            let too_old = request.max_age.is_some_and(|max| age.as_secs() > max);
            if too_old || !entry.vary_matches(head, buf) {
                continue;
            }
            return Some(entry.clone());
        }
        None
    }

    /// Stores a miss's answer whose body arrived whole. Returns whether it
    /// was kept.
    pub fn insert(
        &mut self,
        miss: &Miss,
        pending: Pending,
        body: &[u8],
        head: &RequestHead,
        buf: &[u8],
        now: Instant,
    ) -> bool {
        let Pending {
            status,
            head: mut response_head,
            not_modified,
            etag,
            ttl,
            sharing,
            vary,
            max_object_bytes,
        } = pending;
        header_u64(&mut response_head, "Content-Length", body.len() as u64);
        let scope = miss.request.scope(sharing);
        let primary = miss.request.base.scoped(&scope);
        let full = if vary.is_empty() {
            self.vary.pop(&primary);
            primary
        } else {
            let full = key::with_vary(&primary, &vary, head, buf);
            self.vary.put(primary, vary.clone());
            full
        };
        let vary: Box<[VaryValue]> = vary
            .iter()
            .map(|name| {
                let value = head.header(buf, name).map(|v| v.trim_ascii().into());
                (name.clone(), value)
            })
            .collect();
        let size = ENTRY_OVERHEAD
            + response_head.len()
            + not_modified.len()
            + body.len()
            + miss.target.len()
            + etag.as_ref().map_or(0, |e| e.len())
            + vary
                .iter()
                .map(|(n, v)| n.len() + v.as_ref().map_or(0, |v| v.len()) + 40)
                .sum::<usize>();
        if size > max_object_bytes.saturating_add(ENTRY_OVERHEAD) || size > self.max_bytes {
            return false;
        }
        let entry = Entry {
            status,
            head: response_head.into(),
            not_modified: not_modified.into(),
            body: body.into(),
            etag,
            stored: now,
            ttl,
            vary,
            sharing,
            post: miss.post,
            target: miss.target.clone(),
            key_hex: key::hex(&full),
            size,
        };
        self.remove(&full);
        self.count(&entry, true);
        self.bytes += size;
        self.entries.put(full, Rc::new(entry));
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, old)) => self.forget(&old),
                None => break,
            }
        }
        true
    }

    /// Removes the entries whose target is `target` (or starts with it,
    /// for a prefix); returns how many.
    pub fn purge(&mut self, purge: &Purge) -> usize {
        let mut removed = Vec::new();
        for (key, entry) in self.entries.iter() {
            let hit = match purge {
                Purge::Exact(target) => entry.target[..] == target[..],
                Purge::Prefix(prefix) => entry.target.starts_with(prefix),
            };
            if hit {
                removed.push(*key);
            }
        }
        for key in &removed {
            self.remove(key);
        }
        removed.len()
    }

    fn remove(&mut self, key: &Digest) {
        if let Some(old) = self.entries.pop(key) {
            self.forget(&old);
        }
    }

    fn forget(&mut self, entry: &Entry) {
        self.bytes -= entry.size;
        self.count(entry, false);
    }

    fn count(&mut self, entry: &Entry, add: bool) {
        let step = |n: &mut usize| *n = if add { *n + 1 } else { n.saturating_sub(1) };
        if entry.post {
            step(&mut self.post_entries);
        }
        match entry.sharing {
            Sharing::Key => step(&mut self.key_entries),
            Sharing::Public => step(&mut self.public_entries),
            Sharing::Tenant => {}
        }
    }
}

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
}

impl Miss {
    pub fn new(request: Request, consult: Consult, head: &RequestHead, buf: &[u8]) -> Self {
        let (path, query) = split_target(head, buf);
        Self {
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
    pub fn fields(&self, storing: bool) -> [(&'static str, &[u8]); 3] {
        let status = if storing { "stored" } else { self.shown };
        [
            ("Cache-Status", status.as_bytes()),
            ("X-PROXY-CACHE", b"miss"),
            ("X-PROXY-CACHE-KEY", &self.key_hex),
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

/// An answer being kept while it is relayed.
pub struct Pending {
    status: u16,
    head: Vec<u8>,
    not_modified: Vec<u8>,
    etag: Option<Box<[u8]>>,
    ttl: Duration,
    sharing: Sharing,
    vary: Rc<[Box<str>]>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Parsed;

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
Connection: keep-alive\r\nSet-Cookie: a=b\r\nx-request-id: up-1\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n";
    const KEY: Uuid = Uuid::from_u128(7);

    fn request(raw: &[u8]) -> RequestHead {
        match RequestHead::parse(raw) {
            Ok(Parsed::Complete(head)) => head,
            _ => panic!("does not parse"),
        }
    }

    /// Stores a 100-byte answer to `GET target`; returns whether it was kept.
    fn store(cache: &mut ResponseCache, settings: &CacheSettings, target: &str) -> bool {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        let head = request(&raw);
        let consult = policy::consult(&head.method, Directives::default(), false).unwrap();
        let miss = Miss::new(
            Request::new(&head, &raw, b"", (KEY, None), &consult),
            consult,
            &head,
            &raw,
        );
        let Ok(Parsed::Complete(answer)) = ResponseHead::parse(ANSWER) else {
            panic!("does not parse")
        };
        let pending = miss.prepare(settings, &answer, ANSWER).unwrap();
        cache.insert(&miss, pending, &[b'x'; 100], &head, &raw, Instant::now())
    }

    fn cached(cache: &mut ResponseCache, target: &str) -> Option<Rc<Entry>> {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        let head = request(&raw);
        let consult = policy::consult(&head.method, Directives::default(), false).unwrap();
        let request = Request::new(&head, &raw, b"", (KEY, None), &consult);
        cache.find(&request, &head, &raw, Instant::now())
    }

    #[test]
    fn bounded_in_bytes_least_recently_used_out_first() {
        let probe = CacheSettings::default();
        let mut one = ResponseCache::new(&probe);
        assert!(store(&mut one, &probe, "/p"));
        let entry_size = one.bytes();
        let settings = CacheSettings {
            max_bytes: entry_size * 3,
            ..CacheSettings::default()
        };
        let mut cache = ResponseCache::new(&settings);
        for target in ["/a", "/b", "/c"] {
            assert!(store(&mut cache, &settings, target));
        }
        assert_eq!((cache.len(), cache.bytes()), (3, entry_size * 3));
        assert!(cached(&mut cache, "/a").is_some()); // `/b` is now the oldest
        assert!(store(&mut cache, &settings, "/d"));
        assert_eq!(cache.len(), 3);
        assert!(cached(&mut cache, "/b").is_none());
        for kept in ["/a", "/c", "/d"] {
            assert!(cached(&mut cache, kept).is_some(), "{kept}");
        }
        assert!(cache.bytes() <= settings.max_bytes);
        assert_eq!(cache.purge(&Purge::prefix("/")), 3);
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn a_hit_is_the_prepared_answer() {
        let settings = CacheSettings::default();
        let mut cache = ResponseCache::new(&settings);
        assert!(store(&mut cache, &settings, "/v1/models?b=1&a=2"));
        let entry = cached(&mut cache, "/v1/models?a=2&b=1").unwrap();
        let mut out = Vec::new();
        let reply = HitReply {
            request_id: "req-9",
            if_none_match: None,
            head_only: false,
            close: true,
            now: Instant::now(),
        };
        assert_eq!(entry.write(&mut out, &reply), 200);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
X-Upstream-Request-ID: up-1\r\nETag: \"v1\"\r\nContent-Length: 100\r\nAge: 0\r\n\
Cache-Status: hit\r\nX-PROXY-CACHE: hit\r\nX-PROXY-CACHE-KEY: "
            ),
            "{text}"
        );
        assert!(text.ends_with(&format!(
            "\r\nX-Request-ID: req-9\r\nConnection: close\r\n\r\n{}",
            "x".repeat(100)
        )));
        let mut out = Vec::new();
        let conditional = HitReply {
            if_none_match: Some(b"\"v1\""),
            close: false,
            ..reply
        };
        assert_eq!(entry.write(&mut out, &conditional), 304);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nAge: 0\r\n"));
        assert!(text.ends_with("\r\n\r\n") && text.contains("conditional-hit"));
        assert_eq!(cache.purge(&Purge::exact("http://h/v1/models?a=2&b=1")), 1);
    }
}
