//! One worker's shard: every answer the server's workers stored, in a
//! least-recently-used list of its own, so a lookup is a local map read
//! with no lock. An answer stored here is sent to the other shards as a
//! note (`publish`); what they store arrives the same way (`catch_up`),
//! taken in by a task of the worker as it comes and, so that no lookup
//! misses what was stored before it began, by the lookup itself when the
//! shard's count of news is ahead of what it took in.
//!
//! The bytes are bounded for the server as a whole (`Shared`): the shard
//! that stores past the bound evicts its least recently used answers
//! everywhere, sparing those another worker used since this one last did.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::entry::{Entry, VaryValue};
use super::key::{self, Digest};
use super::policy::Sharing;
use super::share::{Batch, Note, Shared};
use super::{ENTRY_OVERHEAD, Miss, Pending, Purge, Request};
use crate::http::RequestHead;
use crate::http::io::header_u64;

/// Primary keys whose answers vary on request fields, remembered per shard.
const VARY_INDEX_ENTRIES: usize = 4096;

/// An entry as one shard holds it.
struct Slot {
    entry: Arc<Entry>,
    /// The entry's `used` stamp when this shard last made it its most
    /// recent: a later stamp means another worker used it since.
    seen: u32,
}

/// One worker's shard.
pub struct ResponseCache {
    entries: LruCache<Digest, Slot>,
    /// Primary key → the `Vary` fields of the answers stored under it.
    vary: LruCache<Digest, Arc<[Box<str>]>>,
    shared: Arc<Shared>,
    /// This shard's worker.
    id: usize,
    /// Batches of the other shards' notes taken in so far.
    received: u64,
    /// Changes the other shards have yet to be told of.
    notes: Vec<Note>,
    /// Entries of each kind, so lookups skip scopes that hold nothing and
    /// `POST`s skip the cache while it has no `POST` answers.
    post_entries: usize,
    key_entries: usize,
    public_entries: usize,
}

impl ResponseCache {
    /// Worker `id`'s shard of the cache whose common part is `shared`.
    pub fn new(shared: Arc<Shared>, id: usize) -> Self {
        Self {
            entries: LruCache::unbounded(),
            vary: LruCache::new(NonZeroUsize::new(VARY_INDEX_ENTRIES).unwrap_or(NonZeroUsize::MIN)),
            shared,
            id,
            received: 0,
            notes: Vec::new(),
            post_entries: 0,
            key_entries: 0,
            public_entries: 0,
        }
    }

    pub fn has_post_entries(&self) -> bool {
        self.post_entries > 0
    }

    /// Entries in this shard.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What all shards have in common: their totals.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Resolves when another shard sends this one news after the call.
    pub fn on_arrival(&self) -> Option<event_listener::EventListener> {
        self.shared.on_arrival(self.id)
    }

    /// Takes in the notes other shards sent and this one has not seen: one
    /// atomic read when there are none. `shared` hears, for each answer
    /// stored elsewhere, how long it took to get here.
    pub fn catch_up(&mut self, mut shared: impl FnMut(Duration)) {
        if self.shared.sent_to(self.id) <= self.received {
            return;
        }
        let now = Instant::now();
        while let Some(batch) = self.shared.next_for(self.id) {
            self.receive(&batch, now, &mut shared);
        }
    }

    /// Takes in a batch of another shard's notes, then tells the others
    /// what that dropped here (an older answer to the same request).
    fn receive(&mut self, batch: &Batch, now: Instant, mut shared: impl FnMut(Duration)) {
        self.received += 1;
        for note in batch.iter() {
            if let Some(stored) = self.apply(note) {
                shared(now.saturating_duration_since(stored));
            }
        }
        self.publish();
    }

    /// Sends what this shard changed to the other shards.
    pub fn publish(&mut self) {
        if self.notes.is_empty() {
            return;
        }
        let batch: Batch = std::mem::take(&mut self.notes).into();
        self.shared.send(self.id, &batch);
    }

    /// Looks up a fresh entry for the request, in the narrowest scope that
    /// has one, and hands it to `serve`. The entry is lent, never cloned: a
    /// hit touches no reference count other cores' hits also write.
    pub fn find<R>(
        &mut self,
        request: &Request,
        (head, buf): (&RequestHead, &[u8]),
        now: Instant,
        serve: impl FnOnce(&Entry) -> R,
    ) -> Option<R> {
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
            let Some(slot) = self.entries.get_mut(&full) else {
                continue;
            };
            let entry = &slot.entry;
            if entry.is_retired() {
                // Dropped by another shard; the note is on its way.
                self.take(&full);
                continue;
            }
            let age = entry.age(now);
            if age >= entry.ttl {
                self.drop_entry(&full);
                continue;
            }
            let too_old = request.max_age.is_some_and(|max| age.as_secs() > max);
            if too_old || !entry.vary_matches(head, buf) {
                continue;
            }
            let stamp = self.shared.stamp(now);
            slot.entry.touch(stamp);
            slot.seen = stamp;
            return Some(serve(&slot.entry));
        }
        None
    }

    /// Stores a miss's answer whose body arrived whole. Returns whether it
    /// was kept; the other shards learn of it from `take_notes`.
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
            vary: names,
            max_object_bytes,
        } = pending;
        header_u64(&mut response_head, "Content-Length", body.len() as u64);
        let scope = miss.request.scope(sharing);
        let primary = miss.request.base.scoped(&scope);
        let full = if names.is_empty() {
            primary
        } else {
            key::with_vary(&primary, &names, head, buf)
        };
        let vary: Box<[VaryValue]> = names
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
        if size > max_object_bytes.saturating_add(ENTRY_OVERHEAD) || size > self.shared.max_bytes()
        {
            return false;
        }
        let stamp = self.shared.stamp(now);
        let entry = Arc::new(Entry {
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
            retired: AtomicBool::new(false),
            used: AtomicU32::new(stamp),
        });
        self.shared.add(&entry);
        self.place(primary, full, &names, entry.clone());
        self.notes.push(Note::Stored {
            primary,
            full,
            vary: names,
            entry,
        });
        self.make_room();
        true
    }

    /// Takes in what another shard did; for an answer it stored that this
    /// shard now holds, returns when it was stored.
    fn apply(&mut self, note: &Note) -> Option<Instant> {
        match note {
            Note::Stored {
                primary,
                full,
                vary,
                entry,
            } => {
                if entry.is_retired() {
                    return None;
                }
                if let Some(held) = self.entries.peek(full)
                    && (Arc::ptr_eq(&held.entry, entry) || held.entry.stored > entry.stored)
                {
                    // The newer answer stays, here and (by its own note)
                    // everywhere; the older one is dropped.
                    if !Arc::ptr_eq(&held.entry, entry) {
                        self.retire(*full, entry.clone());
                    }
                    return None;
                }
                self.place(*primary, *full, vary, entry.clone());
                Some(entry.stored)
            }
            Note::Dropped { full, entry } => {
                if self
                    .entries
                    .peek(full)
                    .is_some_and(|held| Arc::ptr_eq(&held.entry, entry))
                {
                    self.take(full);
                }
                None
            }
        }
    }

    /// Removes the entries whose target is `target` (or starts with it,
    /// for a prefix); returns how many this shard was the first to drop.
    /// Every shard runs the purge itself, so it sends no notes.
    pub fn purge(&mut self, purge: &Purge) -> usize {
        let removed: Vec<Digest> = self
            .entries
            .iter()
            .filter(|(_, slot)| match purge {
                Purge::Exact(target) => slot.entry.target[..] == target[..],
                Purge::Prefix(prefix) => slot.entry.target.starts_with(prefix),
            })
            .map(|(key, _)| *key)
            .collect();
        let mut first = 0;
        for key in &removed {
            if let Some(slot) = self.take(key) {
                first += usize::from(self.shared.retire(&slot.entry));
            }
        }
        first
    }

    /// Puts `entry` under `full` as the most recent, replacing (and
    /// dropping everywhere) what was there.
    fn place(&mut self, primary: Digest, full: Digest, vary: &Arc<[Box<str>]>, entry: Arc<Entry>) {
        if vary.is_empty() {
            self.vary.pop(&primary);
        } else {
            self.vary.put(primary, vary.clone());
        }
        self.drop_entry(&full);
        self.count(&entry, true);
        let seen = entry.used();
        self.entries.put(full, Slot { entry, seen });
    }

    /// Evicts least recently used entries, from every shard, until the
    /// server's bytes are within bounds. An entry another worker used
    /// since this shard last did gets one more turn, as the most recent.
    fn make_room(&mut self) {
        let mut spared = 0;
        let most = self.entries.len();
        while self.shared.over() {
            let Some((full, mut slot)) = self.entries.pop_lru() else {
                break;
            };
            let used = slot.entry.used();
            if used > slot.seen && spared < most && !slot.entry.is_retired() {
                spared += 1;
                slot.seen = used;
                self.entries.put(full, slot);
                continue;
            }
            self.count(&slot.entry, false);
            self.retire(full, slot.entry);
        }
    }

    /// Drops the entry under `full` here and, by a note, everywhere.
    fn drop_entry(&mut self, full: &Digest) {
        if let Some(slot) = self.take(full) {
            self.retire(*full, slot.entry);
        }
    }

    fn retire(&mut self, full: Digest, entry: Arc<Entry>) {
        if self.shared.retire(&entry) {
            self.notes.push(Note::Dropped { full, entry });
        }
    }

    /// Removes the entry under `full` from this shard alone.
    fn take(&mut self, full: &Digest) -> Option<Slot> {
        let slot = self.entries.pop(full)?;
        self.count(&slot.entry, false);
        Some(slot)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::cache::policy::{self, Directives};
    use crate::cache::{CacheSettings, HitReply};
    use crate::http::{Parsed, ResponseHead};

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
Connection: keep-alive\r\nSet-Cookie: a=b\r\nx-request-id: up-1\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n";
    const KEY: Uuid = Uuid::from_u128(7);

    fn request(raw: &[u8]) -> RequestHead {
        match RequestHead::parse(raw) {
            Ok(Parsed::Complete(head)) => head,
            _ => panic!("does not parse"),
        }
    }

    /// Shard 0 of a server with four workers.
    fn shard(max_bytes: usize) -> ResponseCache {
        ResponseCache::new(Shared::new(4, max_bytes), 0)
    }

    /// Worker `id`'s shard of the same server.
    fn sibling(of: &ResponseCache, id: usize) -> ResponseCache {
        ResponseCache::new(of.shared.clone(), id)
    }

    /// Stores a 100-byte answer to `GET target` at `now`; returns whether
    /// it was kept.
    fn store_at(cache: &mut ResponseCache, target: &str, now: Instant) -> bool {
        let settings = CacheSettings::default();
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        let head = request(&raw);
        let consult = policy::consult(&head.method, Directives::default(), false).unwrap();
        let miss = Miss::new(
            Request::new(&head, &raw, b"", (KEY, None), &consult),
            consult,
            (&head, &raw),
            0,
        );
        let Ok(Parsed::Complete(answer)) = ResponseHead::parse(ANSWER) else {
            panic!("does not parse")
        };
        let pending = miss.prepare(&settings, &answer, ANSWER).unwrap();
        cache.insert(&miss, pending, &[b'x'; 100], &head, &raw, now)
    }

    fn store(cache: &mut ResponseCache, target: &str) -> bool {
        store_at(cache, target, Instant::now())
    }

    fn cached_at(cache: &mut ResponseCache, target: &str, now: Instant) -> bool {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        let head = request(&raw);
        let consult = policy::consult(&head.method, Directives::default(), false).unwrap();
        let request = Request::new(&head, &raw, b"", (KEY, None), &consult);
        cache.find(&request, (&head, &raw), now, |_| ()).is_some()
    }

    fn cached(cache: &mut ResponseCache, target: &str) -> bool {
        cached_at(cache, target, Instant::now())
    }

    /// Sends `from`'s news; `to` takes in what is waiting for it.
    fn tell(from: &mut ResponseCache, to: &mut ResponseCache) {
        from.publish();
        to.catch_up(|_| ());
    }

    /// What an answer to `GET /x` counts (targets of two bytes here).
    fn entry_size() -> usize {
        let mut one = shard(usize::MAX);
        assert!(store(&mut one, "/p"));
        one.shared().bytes()
    }

    #[test]
    fn bounded_in_bytes_least_recently_used_out_first() {
        let size = entry_size();
        let mut cache = shard(size * 3);
        for target in ["/a", "/b", "/c"] {
            assert!(store(&mut cache, target));
        }
        assert_eq!((cache.len(), cache.shared().bytes()), (3, size * 3));
        assert!(cached(&mut cache, "/a")); // `/b` is now the oldest
        assert!(store(&mut cache, "/d"));
        assert_eq!(cache.len(), 3);
        assert!(!cached(&mut cache, "/b"));
        for kept in ["/a", "/c", "/d"] {
            assert!(cached(&mut cache, kept), "{kept}");
        }
        assert!(cache.shared().bytes() <= size * 3);
        assert_eq!(cache.purge(&Purge::prefix("/")), 3);
        assert_eq!((cache.len(), cache.shared().bytes()), (0, 0));
        assert_eq!(cache.shared().entries(), 0);
    }

    #[test]
    fn a_store_reaches_every_shard_and_counts_once() {
        let mut one = shard(usize::MAX);
        let (mut two, mut three) = (sibling(&one, 1), sibling(&one, 2));
        assert!(store(&mut one, "/m"));
        one.publish();
        two.catch_up(|_| ());
        assert!(cached(&mut two, "/m"));
        let mut delays = Vec::new();
        three.catch_up(|delay| delays.push(delay));
        assert_eq!(delays.len(), 1);
        assert!(cached(&mut three, "/m"));
        assert_eq!(
            (one.shared().entries(), one.shared().bytes()),
            (1, entry_size())
        );
        // The shards hold the same bytes: one allocation.
        let body = |c: &ResponseCache| c.entries.iter().next().map(|(_, s)| s.entry.body.as_ptr());
        assert_eq!(body(&one), body(&two));
        assert_eq!(body(&one), body(&three));
        // Each shard purges itself; the entry counts once.
        let purge = Purge::exact("/m");
        assert_eq!(
            one.purge(&purge) + two.purge(&purge) + three.purge(&purge),
            1
        );
        assert_eq!((one.shared().entries(), one.shared().bytes()), (0, 0));
        assert!(two.is_empty() && three.is_empty());
        assert!(one.notes.is_empty() && two.notes.is_empty() && three.notes.is_empty());
        // News of a store that reaches a shard after the answer was purged
        // elsewhere is not taken in.
        let mut four = sibling(&one, 3);
        four.catch_up(|_| ());
        assert_eq!((four.received, four.len()), (1, 0));
    }

    #[test]
    fn an_entry_dropped_anywhere_is_served_nowhere() {
        let mut one = shard(usize::MAX);
        let mut two = sibling(&one, 1);
        assert!(store(&mut one, "/a"));
        tell(&mut one, &mut two);
        // Expired on the first shard: dropped there, and the second stops
        // serving it before the news arrives.
        let later = Instant::now() + Duration::from_secs(301);
        assert!(!cached_at(&mut one, "/a", later));
        assert!(!cached(&mut two, "/a"));
        assert_eq!((one.shared().entries(), two.len()), (0, 0));
        assert!(matches!(one.notes[..], [Note::Dropped { .. }]));
    }

    #[test]
    fn eviction_reaches_every_shard() {
        let size = entry_size();
        let mut one = shard(size * 2);
        let mut two = sibling(&one, 1);
        for target in ["/a", "/b", "/c"] {
            assert!(store(&mut one, target));
        }
        assert_eq!(one.len(), 2);
        tell(&mut one, &mut two);
        // `/a` was stored, then dropped: the second shard lets it go.
        assert_eq!(two.len(), 2);
        assert!(!cached(&mut two, "/a") && cached(&mut two, "/b") && cached(&mut two, "/c"));
        assert_eq!(one.shared().bytes(), size * 2);
    }

    #[test]
    fn eviction_spares_what_another_worker_uses() {
        let size = entry_size();
        let start = Instant::now();
        let mut one = shard(size * 2);
        let mut two = sibling(&one, 1);
        assert!(store_at(&mut one, "/a", start));
        assert!(store_at(&mut one, "/b", start));
        tell(&mut one, &mut two);
        // `/a` is the oldest on the first shard, but the second used it
        // since: a store past the bound evicts `/b` instead.
        assert!(cached_at(&mut two, "/a", start + Duration::from_secs(2)));
        assert!(store_at(&mut one, "/c", start + Duration::from_secs(3)));
        tell(&mut one, &mut two);
        let now = start + Duration::from_secs(4);
        assert!(cached_at(&mut one, "/a", now) && cached_at(&mut two, "/a", now));
        assert!(!cached_at(&mut one, "/b", now) && !cached_at(&mut two, "/b", now));
        assert!(cached_at(&mut two, "/c", now));
    }

    #[test]
    fn two_stores_of_one_request_settle_on_the_newer() {
        let start = Instant::now();
        let mut one = shard(usize::MAX);
        let mut two = sibling(&one, 1);
        assert!(store_at(&mut one, "/a", start));
        assert!(store_at(&mut two, "/a", start + Duration::from_millis(5)));
        one.publish();
        two.publish();
        // Each takes in the other's answer; the second drops the older one
        // and says so.
        one.catch_up(|_| ());
        two.catch_up(|_| ());
        one.catch_up(|_| ());
        let stored = |c: &ResponseCache| {
            c.entries
                .iter()
                .map(|(_, s)| s.entry.stored)
                .collect::<Vec<_>>()
        };
        assert_eq!(stored(&one), vec![start + Duration::from_millis(5)]);
        assert_eq!(stored(&two), vec![start + Duration::from_millis(5)]);
        assert_eq!(
            (one.shared().entries(), one.shared().bytes()),
            (1, entry_size())
        );
    }

    #[test]
    fn a_hit_is_the_prepared_answer() {
        let mut cache = shard(usize::MAX);
        assert!(store(&mut cache, "/v1/models?b=1&a=2"));
        let raw = b"GET /v1/models?a=2&b=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = request(raw);
        let consult = policy::consult(&head.method, Directives::default(), false).unwrap();
        let lookup = Request::new(&head, raw, b"", (KEY, None), &consult);
        let reply = HitReply {
            request_id: "req-9",
            if_none_match: None,
            head_only: false,
            close: true,
            now: Instant::now(),
            worker: 3,
        };
        let mut out = Vec::new();
        let status = cache.find(&lookup, (&head, raw), Instant::now(), |entry| {
            entry.write(&mut out, &reply)
        });
        assert_eq!(status, Some(200));
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
            "\r\nX-PROXY-CACHE-WORKER: 3\r\nX-Request-ID: req-9\r\nConnection: close\r\n\r\n{}",
            "x".repeat(100)
        )));
        let mut out = Vec::new();
        let conditional = HitReply {
            if_none_match: Some(b"\"v1\""),
            close: false,
            ..reply
        };
        let status = cache.find(&lookup, (&head, raw), Instant::now(), |entry| {
            entry.write(&mut out, &conditional)
        });
        assert_eq!(status, Some(304));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nAge: 0\r\n"));
        assert!(text.ends_with("\r\n\r\n") && text.contains("conditional-hit"));
        assert_eq!(cache.purge(&Purge::exact("http://h/v1/models?a=2&b=1")), 1);
    }
}
