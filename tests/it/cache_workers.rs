//! The response cache of a server with several workers, against the real
//! binary and the mock upstream: an answer stored by one worker is a hit on
//! every worker, held once in memory, and the cache's rules (`Vary`,
//! tenants, ETags, the request's own `Cache-Control`, purges, expiry,
//! eviction) hold whichever worker answers.
//!
//! The kernel hands each new connection to any of the workers, so a check
//! made on many new connections is made on (nearly always) every worker: a
//! worker gets none of 20 connections about once in 80 runs, which makes
//! that check weaker, never wrong. The answers name their worker
//! (`X-PROXY-CACHE-WORKER`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cache::{Upstream, assert_hit, assert_miss, other_tenants_key, probe};
use crate::common::*;

const CHAT: &str = "/v1/chat/completions";

/// The proxy's workers in these tests.
const WORKERS: usize = 4;

/// The worker that answered, from `X-PROXY-CACHE-WORKER`.
#[track_caller]
fn worker_of(response: &Response) -> usize {
    let value = response
        .header("x-proxy-cache-worker")
        .unwrap_or_else(|| panic!("no worker named: {:?}", response.headers));
    let worker: usize = value.parse().expect("a worker's index");
    assert!(worker < WORKERS, "worker {worker} of {WORKERS}");
    worker
}

/// `request` on `n` new connections, each answer a hit; returns the
/// workers that answered.
#[track_caller]
fn hits_on_new_connections(proxy: &Proxy, request: &[u8], n: usize) -> BTreeSet<usize> {
    (0..n)
        .map(|_| {
            let response = proxy.conn().roundtrip(request);
            assert_hit(&response);
            worker_of(&response)
        })
        .collect()
}

/// The cache state (`hit` or `miss`) of `request`, a `HEAD`, on a new
/// connection. A `HEAD` is looked up but never stored, so probing does not
/// change the cache; the mock's provider does not take `HEAD`, so a miss is
/// refused with 405 (a hit never reaches it).
fn probe_new(proxy: &Proxy, request: Req) -> String {
    let mut conn = proxy.conn();
    conn.send(&request.bytes());
    let response = conn.read_head_response().expect("HEAD response");
    match response.header("x-proxy-cache") {
        Some(state) => state.to_string(),
        None if response.status == 405 => "miss".into(),
        None => panic!("no cache state: {:?}", response.headers),
    }
}

/// `probe_new` on `n` new connections for `target` with the client key.
fn probes(proxy: &Proxy, target: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| probe_new(proxy, Req::new("HEAD", target).authed()))
        .collect()
}

fn all(state: &str, n: usize) -> Vec<String> {
    vec![state.to_string(); n]
}

/// The samples of the metric family `name` in `/metrics`: labels and value.
fn samples(proxy: &Proxy, name: &str) -> Vec<(String, f64)> {
    let page = proxy.call(Req::get("/metrics")).text();
    let labelled = format!("{name}{{");
    page.lines()
        .filter_map(|line| line.strip_prefix(&labelled))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` for each worker, by the `worker` label.
fn per_worker(proxy: &Proxy, name: &str) -> Vec<(usize, u64)> {
    let mut values: Vec<(usize, u64)> = samples(proxy, name)
        .into_iter()
        .filter_map(|(labels, value)| {
            let worker = labels.split_once("worker=\"")?.1.split_once('"')?.0;
            Some((worker.parse().ok()?, value as u64))
        })
        .collect();
    values.sort_unstable();
    values
}

fn sum(proxy: &Proxy, name: &str) -> u64 {
    samples(proxy, name).iter().map(|(_, v)| *v as u64).sum()
}

/// The server's resident memory, from `/proc/<pid>/status`.
fn rss_bytes(proxy: &Proxy) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.proc.pid())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kb << 10
}

fn opt_in_chat(content: &str) -> Req {
    Req::post(CHAT, chat_body(false, content))
        .authed()
        .header("Cache-Control", "public, max-age=60")
}

#[test]
fn an_answer_stored_by_one_worker_is_a_hit_on_every_worker() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    let mut upstream = Upstream::of(&mock);
    let get = Req::get("/v1/models").authed().bytes();
    let first = proxy.call(Req::get("/v1/models").authed());
    assert_miss(&first, "stored");
    worker_of(&first);
    // Each request on a new connection, after the client had the answer:
    // every one a hit, whichever worker takes it.
    let workers = hits_on_new_connections(&proxy, &get, 40);
    assert!(workers.len() > 1, "40 connections, all on {workers:?}");
    assert_eq!(upstream.requests(), 1);

    // An opted-in POST: the same request without the opt-in is a hit on
    // every worker too (each shard knows it holds POST answers).
    let stored = proxy.call(opt_in_chat("shared by the workers"));
    assert_miss(&stored, "stored");
    let plain = Req::post(CHAT, chat_body(false, "shared by the workers")).authed();
    let workers = hits_on_new_connections(&proxy, &plain.bytes(), 40);
    assert!(workers.len() > 1, "40 connections, all on {workers:?}");
    let hit = proxy.call(plain);
    assert_eq!(hit.body, stored.body);
    assert_eq!(upstream.requests(), 1);
    // The workers' tasks that take in each other's answers do not keep the
    // server from stopping.
    proxy.stop();
}

#[test]
fn every_worker_holds_every_answer_in_one_copy() {
    const ANSWERS: usize = 1000;
    const WORDS: &str = "2000";
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    // Answers of about 10 KB: the mock answers a chat with as many words
    // as `x-mock-stream-chunks` says.
    let chat = |n: usize, opt_in: bool| {
        let mut request = Req::post(CHAT, chat_body(false, &format!("answer {n}")))
            .authed()
            .header("x-mock-stream-chunks", WORDS);
        if opt_in {
            request = request.header("Cache-Control", "public, max-age=600");
        }
        request.bytes()
    };
    let mut conns: Vec<Conn> = (0..4).map(|_| proxy.conn()).collect();
    // Answers of the same size, not stored (a POST is stored only when it
    // opts in): the connections' buffers are grown before measuring.
    for (n, conn) in conns.iter_mut().enumerate() {
        for _ in 0..5 {
            let response = conn.roundtrip(&chat(n, false));
            assert_eq!(response.status, 200, "{}", response.text());
            assert_eq!(response.header("x-proxy-cache"), None);
        }
    }
    assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(0));
    let before = rss_bytes(&proxy);

    let mut bodies = 0;
    for n in 0..ANSWERS {
        let response = conns[n % 4].roundtrip(&chat(n, true));
        assert_miss(&response, "stored");
        let size = response.body.len();
        assert!((10_000..11_000).contains(&size), "{size} bytes");
        bodies += response.body.len() as u64;
    }
    // Every worker's shard takes the others' answers in (its task does,
    // without a request to look them up).
    let held = || per_worker(&proxy, "llm_proxy_cache_shard_entries");
    let every = (0..WORKERS)
        .map(|w| (w, ANSWERS as u64))
        .collect::<Vec<_>>();
    wait_until(Duration::from_secs(5), || held() == every);
    assert_eq!(held(), every);
    let after = rss_bytes(&proxy);

    assert_eq!(
        metric(&proxy, "llm_proxy_cache_entries"),
        Some(ANSWERS as u64)
    );
    let bytes = metric(&proxy, "llm_proxy_cache_bytes").unwrap();
    assert!(
        bodies <= bytes && bytes <= bodies + bodies / 10,
        "{bytes} bytes held for {bodies} bytes of bodies"
    );
    // One copy for the four workers: about 10 MB. A copy per worker would
    // be 40 MB.
    let grown = after.saturating_sub(before);
    assert!(
        grown < 20 << 20,
        "resident memory grew by {} KiB (from {} KiB) for {} KiB of answers",
        grown >> 10,
        before >> 10,
        bodies >> 10
    );
    // And each is a hit on any worker.
    for n in [0, ANSWERS / 2, ANSWERS - 1] {
        hits_on_new_connections(&proxy, &chat(n, false), 8);
    }
}

#[test]
fn vary_is_kept_on_every_worker() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    let mut upstream = Upstream::of(&mock);
    let get = |method: &str, language: &str| {
        Req::new(method, "/v1/models")
            .authed()
            .header("x-mock-response-header", "Vary: X-Language")
            .header("X-Language", language)
    };
    assert_miss(&proxy.call(get("GET", "en")), "stored");
    let workers = hits_on_new_connections(&proxy, &get("GET", "en").bytes(), 20);
    assert!(workers.len() > 1, "{workers:?}");
    for _ in 0..20 {
        assert_eq!(probe_new(&proxy, get("HEAD", "fr")), "miss");
        assert_eq!(probe_new(&proxy, get("HEAD", "en")), "hit");
    }
    assert_eq!(upstream.requests(), 1);
    // A second value, stored by whichever worker: both hit everywhere.
    assert_miss(&proxy.call(get("GET", "fr")), "stored");
    for _ in 0..20 {
        assert_eq!(probe_new(&proxy, get("HEAD", "fr")), "hit");
        assert_eq!(probe_new(&proxy, get("HEAD", "en")), "hit");
        assert_eq!(probe_new(&proxy, get("HEAD", "de")), "miss");
    }
    assert_eq!(upstream.requests(), 1);
}

#[test]
fn tenants_are_apart_on_every_worker_and_public_answers_are_shared() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    let other = other_tenants_key(&proxy);
    let mut upstream = Upstream::of(&mock);

    let request = |key: &str, method: &str, target: &str| {
        Req::new(method, target).auth(key).header(
            "x-mock-response-header",
            if target.contains("public") {
                "Cache-Control: public, max-age=60"
            } else {
                "Cache-Control: max-age=60"
            },
        )
    };
    assert_miss(
        &proxy.call(request(CLIENT_KEY, "GET", "/v1/models")),
        "stored",
    );
    assert_miss(
        &proxy.call(request(CLIENT_KEY, "GET", "/v1/models?public")),
        "stored",
    );
    assert_eq!(upstream.requests(), 2);
    for _ in 0..20 {
        // The project's answer is not the other project's, on any worker.
        assert_eq!(
            probe_new(&proxy, request(other, "HEAD", "/v1/models")),
            "miss"
        );
        assert_eq!(
            probe_new(&proxy, request(CLIENT_KEY, "HEAD", "/v1/models")),
            "hit"
        );
        // A public answer is anyone's.
        assert_eq!(
            probe_new(&proxy, request(other, "HEAD", "/v1/models?public")),
            "hit"
        );
    }
    let theirs = proxy.call(request(other, "GET", "/v1/models?public"));
    assert_hit(&theirs);
    assert_eq!(upstream.requests(), 0);

    // A `private` answer is the asking key's alone, on every worker; the
    // project's other keys do not see it.
    let same_project = "sk-client-same-project-2";
    proxy.create_token(json!({"token": same_project}));
    let private = |key: &str, method: &str| {
        Req::new(method, "/v1/models?private").auth(key).header(
            "x-mock-response-header",
            "Cache-Control: private, max-age=60",
        )
    };
    assert_miss(&proxy.call(private(CLIENT_KEY, "GET")), "stored");
    for _ in 0..20 {
        assert_eq!(probe_new(&proxy, private(CLIENT_KEY, "HEAD")), "hit");
        assert_eq!(probe_new(&proxy, private(same_project, "HEAD")), "miss");
    }
    // The project's shared answer is its other keys' too.
    assert_eq!(
        probe_new(&proxy, request(same_project, "HEAD", "/v1/models")),
        "hit"
    );
    assert_eq!(upstream.requests(), 1);
}

#[test]
fn etags_give_304_on_every_worker() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    let mut upstream = Upstream::of(&mock);
    let get = || {
        Req::get("/v1/models")
            .authed()
            .header("x-mock-response-header", "ETag: \"v1\"")
    };
    let first = proxy.call(get());
    assert_miss(&first, "stored");
    let mut workers = BTreeSet::new();
    for _ in 0..20 {
        let response = proxy.call(get().header("If-None-Match", "\"v1\""));
        assert_eq!(response.status, 304, "{:?}", response.headers);
        assert!(response.body.is_empty());
        assert_eq!(response.header("etag"), Some("\"v1\""));
        assert_eq!(response.header("cache-status"), Some("conditional-hit"));
        assert_eq!(response.header("x-proxy-cache"), Some("hit"));
        workers.insert(worker_of(&response));
        let changed = proxy.call(get().header("If-None-Match", "\"v0\""));
        assert_hit(&changed);
        assert_eq!(changed.body, first.body);
    }
    assert!(workers.len() > 1, "{workers:?}");
    assert_eq!(upstream.requests(), 1);
}

#[test]
fn the_requests_own_cache_control_holds_on_every_worker() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    let mut upstream = Upstream::of(&mock);
    let tagged = |tag: &str| {
        Req::get("/v1/models")
            .authed()
            .header("x-mock-response-header", format!("ETag: \"{tag}\""))
    };
    assert_miss(&proxy.call(tagged("v1")), "stored");
    hits_on_new_connections(&proxy, &tagged("v1").bytes(), 8);
    assert_eq!(upstream.requests(), 1);
    // max-age=0 wants a fresh answer, no-store skips the cache: each a
    // miss on whichever worker takes it.
    for _ in 0..8 {
        let fresh = proxy.call(tagged("v1").header("Cache-Control", "max-age=0"));
        assert_miss(&fresh, "stored");
        let skipped = proxy.call(tagged("v1").header("Cache-Control", "no-store"));
        assert_miss(&skipped, "bypass");
        // Misses and bypasses name their worker too.
        worker_of(&fresh);
        worker_of(&skipped);
        // A max-age the entry is within is a hit.
        let within = proxy.call(tagged("v1").header("Cache-Control", "max-age=600"));
        assert_hit(&within);
    }
    assert_eq!(upstream.requests(), 16);
    // no-cache is not looked up, and its fresh answer replaces the entry
    // on every worker: the older answer is served nowhere after.
    let replaced = proxy.call(tagged("v2").header("Cache-Control", "no-cache"));
    assert_miss(&replaced, "stored");
    assert_eq!(replaced.header("etag"), Some("\"v2\""));
    for _ in 0..20 {
        let response = proxy.call(tagged("v1"));
        assert_hit(&response);
        assert_eq!(response.header("etag"), Some("\"v2\""));
    }
    assert_eq!(upstream.requests(), 1);
    assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(1));
}

#[test]
fn a_purge_reaches_every_worker_and_counts_one_answer() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    let get = Req::get("/v1/models?purge=me").authed();
    assert_miss(&proxy.call(get.clone()), "stored");
    assert_miss(&proxy.call(Req::get("/v1/models").authed()), "stored");
    let workers = hits_on_new_connections(&proxy, &get.bytes(), 20);
    assert!(workers.len() > 1, "{workers:?}");
    let purged = proxy.manage(
        "POST",
        "/manage/cache/purge",
        Some(json!({"url": "/v1/models?purge=me"})),
    );
    assert_eq!(purged.status, 200, "{}", purged.text());
    // One answer, held by the four shards.
    assert_eq!(purged.json()["purged"], json!(1), "{}", purged.text());
    // As soon as the purge answered: gone from every worker, the other
    // answer still there.
    assert_eq!(probes(&proxy, "/v1/models?purge=me", 20), all("miss", 20));
    assert_eq!(probes(&proxy, "/v1/models", 20), all("hit", 20));
    assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(1));
}

#[test]
fn an_answer_expires_on_every_worker() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .workers(WORKERS)
        .env("HTTP_CACHE_DEFAULT_TTL", "2s")
        .start();
    // Kept two seconds (the default), and three (the upstream's max-age),
    // from a time between sending the request and having the answer.
    let sent = Instant::now();
    assert_miss(&proxy.call(Req::get("/v1/models").authed()), "stored");
    let answered = Instant::now();
    let short = || {
        Req::get("/v1/models?short")
            .authed()
            .header("x-mock-response-header", "Cache-Control: max-age=3")
    };
    assert_miss(&proxy.call(short()), "stored");
    let short_answered = Instant::now();
    // Within their lifetimes: hits.
    hits_on_new_connections(&proxy, &Req::get("/v1/models").authed().bytes(), 8);
    hits_on_new_connections(&proxy, &short().bytes(), 8);
    assert!(sent.elapsed() < Duration::from_secs(2), "too slow to tell");
    // The first has expired on every worker, the second not yet.
    sleep_until(answered + Duration::from_millis(2050));
    assert_eq!(probes(&proxy, "/v1/models", 20), all("miss", 20));
    assert_eq!(probes(&proxy, "/v1/models?short", 4), all("hit", 4));
    sleep_until(short_answered + Duration::from_millis(3050));
    assert_eq!(probes(&proxy, "/v1/models?short", 20), all("miss", 20));
}

const TARGETS: [&str; 4] = [
    "/v1/models?n=1",
    "/v1/models?n=2",
    "/v1/models?n=3",
    "/v1/models?n=4",
];

/// What one answer to a `TARGETS` request counts, from a server that holds
/// just it.
fn answer_size() -> u64 {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(1).start();
    assert_miss(&proxy.call(Req::get(TARGETS[0]).authed()), "stored");
    metric(&proxy, "llm_proxy_cache_bytes").unwrap()
}

/// A proxy with room for three and a half answers of `size`.
fn room_for_three(mock: &Mock, size: u64) -> Proxy {
    Proxy::for_mock(mock)
        .workers(WORKERS)
        .env("HTTP_CACHE_MAX_BYTES", (size * 7 / 2).to_string())
        .start()
}

/// Whether each of `TARGETS` is held, probed on one new connection.
fn held_targets(proxy: &Proxy) -> Vec<String> {
    let mut conn = proxy.conn();
    TARGETS
        .iter()
        .map(|target| probe(&mut conn, target).expect("a cache state"))
        .collect()
}

#[test]
fn eviction_reaches_every_worker_and_the_bound_is_the_servers() {
    let size = answer_size();
    let bound = size * 7 / 2;
    // Stored one after the other by one worker (one connection), then by
    // whichever worker takes each new connection.
    for one_connection in [true, false] {
        let mock = Mock::start();
        let proxy = room_for_three(&mock, size);
        let mut conn = proxy.conn();
        for target in TARGETS {
            let request = Req::get(target).authed().bytes();
            let response = if one_connection {
                conn.roundtrip(&request)
            } else {
                proxy.conn().roundtrip(&request)
            };
            assert_miss(&response, "stored");
        }
        // Bytes count each answer once, not once per worker.
        assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(3));
        let bytes = metric(&proxy, "llm_proxy_cache_bytes").unwrap();
        assert!(bytes <= bound, "{bytes} bytes held, bound {bound}");
        assert_eq!(bytes, size * 3);
        // The least recently used went from every worker; the others are
        // on every worker.
        for _ in 0..20 {
            assert_eq!(held_targets(&proxy), ["miss", "hit", "hit", "hit"]);
        }
        let held = || per_worker(&proxy, "llm_proxy_cache_shard_entries");
        let three = (0..WORKERS).map(|w| (w, 3)).collect::<Vec<_>>();
        wait_until(Duration::from_secs(2), || held() == three);
        assert_eq!(held(), three);
        // Stored again by whichever worker: still three, within the bound.
        assert_miss(&proxy.call(Req::get(TARGETS[0]).authed()), "stored");
        assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(3));
        assert!(metric(&proxy, "llm_proxy_cache_bytes").unwrap() <= bound);
        let states = held_targets(&proxy);
        assert_eq!(
            states.iter().filter(|s| *s == "hit").count(),
            3,
            "{states:?}"
        );
        assert_eq!(states[0], "hit");
    }
}

#[test]
fn eviction_spares_an_answer_another_worker_used() {
    let mock = Mock::start();
    let proxy = room_for_three(&mock, answer_size());
    let get = |target: &str| Req::get(target).authed().bytes();
    let mut storing = proxy.conn();
    let first = storing.roundtrip(&get(TARGETS[0]));
    assert_miss(&first, "stored");
    let worker = worker_of(&first);
    for target in &TARGETS[1..3] {
        assert_miss(&storing.roundtrip(&get(target)), "stored");
    }
    // A connection another worker serves, found with requests that skip
    // the cache (they name the worker, and use no answer).
    let mut other = (0..100)
        .map(|_| {
            let mut conn = proxy.conn();
            let skip = Req::get("/v1/models?n=0")
                .authed()
                .header("Cache-Control", "no-store");
            let response = conn.roundtrip(&skip.bytes());
            assert_miss(&response, "bypass");
            (worker_of(&response), conn)
        })
        .find(|(answered, _)| *answered != worker)
        .expect("another worker")
        .1;
    // Recency counts whole seconds: the other worker uses the oldest answer
    // a second after it was stored.
    std::thread::sleep(Duration::from_millis(1100));
    assert_hit(&other.roundtrip(&get(TARGETS[0])));
    // The storing worker stores a fourth: the first is its least recently
    // used, but another worker used it since, so the second goes instead.
    assert_miss(&storing.roundtrip(&get(TARGETS[3])), "stored");
    assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(3));
    for _ in 0..20 {
        assert_eq!(held_targets(&proxy), ["hit", "miss", "hit", "hit"]);
    }
}

#[test]
fn metrics_count_what_each_worker_took_in() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    assert_eq!(sum(&proxy, "llm_proxy_cache_shared_total"), 0);
    assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(0));
    assert_miss(&proxy.call(Req::get("/v1/models").authed()), "stored");
    // The three other workers take it in, each once, as it comes (or at
    // their next lookup).
    let shared = || per_worker(&proxy, "llm_proxy_cache_shared_total");
    wait_until(Duration::from_secs(2), || {
        shared().iter().map(|(_, n)| n).sum::<u64>() == 3
    });
    let by_worker = shared();
    assert_eq!(by_worker.len(), 4, "{by_worker:?}");
    assert_eq!(by_worker.iter().map(|(_, n)| n).sum::<u64>(), 3);
    assert_eq!(
        by_worker.iter().filter(|(_, n)| *n == 1).count(),
        3,
        "the storing worker takes nothing in: {by_worker:?}"
    );
    let delays = samples(&proxy, "llm_proxy_cache_share_delay_seconds_count");
    assert_eq!(delays.len(), 1, "{delays:?}");
    assert_eq!(delays[0].1, 3.0);
    let held = per_worker(&proxy, "llm_proxy_cache_shard_entries");
    assert_eq!(held, (0..WORKERS).map(|w| (w, 1)).collect::<Vec<_>>());
    assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(1));
    assert!(metric(&proxy, "llm_proxy_cache_bytes").unwrap() > 0);
    // Hits take nothing more in.
    hits_on_new_connections(&proxy, &Req::get("/v1/models").authed().bytes(), 8);
    assert_eq!(sum(&proxy, "llm_proxy_cache_shared_total"), 3);
}

#[test]
fn stores_of_one_request_at_once_on_several_workers_settle_on_the_newest_answer() {
    const CLIENTS: usize = 16;
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    // Each answer tagged with who asked; the tags all have one length, so
    // the answers count alike.
    let tagged = |tag: &str| {
        Req::get("/v1/models?race")
            .authed()
            .header("x-mock-response-header", format!("ETag: \"{tag}\""))
    };
    assert_miss(&proxy.call(tagged("9-99")), "stored");
    let size = metric(&proxy, "llm_proxy_cache_bytes").unwrap();
    // Round after round, every client replaces the answer at the same time
    // (no-cache: not looked up, the answer stored), each on its own
    // connection, so on any of the workers.
    for round in 0..5 {
        let barrier = std::sync::Barrier::new(CLIENTS);
        std::thread::scope(|scope| {
            for client in 0..CLIENTS {
                let (proxy, barrier) = (&proxy, &barrier);
                let request = tagged(&format!("{round}-{client:02}"))
                    .header("Cache-Control", "no-cache")
                    .bytes();
                scope.spawn(move || {
                    let mut conn = proxy.conn();
                    barrier.wait();
                    assert_miss(&conn.roundtrip(&request), "stored");
                });
            }
        });
    }
    // One answer is left, counted once, the same on every worker.
    assert_eq!(metric(&proxy, "llm_proxy_cache_entries"), Some(1));
    assert_eq!(metric(&proxy, "llm_proxy_cache_bytes"), Some(size));
    let tags: BTreeSet<String> = (0..20)
        .map(|_| {
            let response = proxy.call(tagged("9-99"));
            assert_hit(&response);
            response.header("etag").unwrap().to_string()
        })
        .collect();
    assert_eq!(tags.len(), 1, "{tags:?}");
    let tag = tags.first().unwrap();
    assert!(
        tag.starts_with("\"4-"),
        "an answer of the last round: {tag}"
    );
    let held = || per_worker(&proxy, "llm_proxy_cache_shard_entries");
    let one = (0..WORKERS).map(|w| (w, 1)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(2), || held() == one);
    assert_eq!(held(), one);
}

#[test]
fn stores_of_many_answers_at_once_stay_within_the_bound_and_agree() {
    const CLIENTS: usize = 16;
    const DISTINCT: usize = 10;
    let size = answer_size();
    let mock = Mock::start();
    let proxy = room_for_three(&mock, size);
    let target = |n: usize| format!("/v1/models?n={}", n % DISTINCT);
    // Round after round, every client stores one of ten answers at the same
    // time, each on its own connection: all four workers store and evict
    // at once.
    for round in 0..5 {
        let barrier = std::sync::Barrier::new(CLIENTS);
        std::thread::scope(|scope| {
            for client in 0..CLIENTS {
                let (proxy, barrier) = (&proxy, &barrier);
                let request = Req::get(&target(round * CLIENTS + client)).authed().bytes();
                scope.spawn(move || {
                    let mut conn = proxy.conn();
                    barrier.wait();
                    let response = conn.roundtrip(&request);
                    assert_eq!(response.status, 200, "{}", response.text());
                });
            }
        });
    }
    // Within the bound, each answer counted once, and every worker holds
    // the same answers.
    let entries = metric(&proxy, "llm_proxy_cache_entries").unwrap();
    assert!((1..=3).contains(&entries), "{entries} answers held");
    assert_eq!(
        metric(&proxy, "llm_proxy_cache_bytes"),
        Some(entries * size)
    );
    let held = || per_worker(&proxy, "llm_proxy_cache_shard_entries");
    let same = (0..WORKERS).map(|w| (w, entries)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(2), || held() == same);
    assert_eq!(held(), same);
    let states = || {
        let mut conn = proxy.conn();
        (0..DISTINCT)
            .map(|n| probe(&mut conn, &target(n)).expect("a cache state"))
            .collect::<Vec<_>>()
    };
    let first = states();
    let hits = first.iter().filter(|s| *s == "hit").count();
    assert_eq!(hits as u64, entries, "{first:?}");
    for _ in 0..20 {
        assert_eq!(states(), first);
    }
}

/// A burst of stores from several connections at once, spread over the
/// workers, settles: every worker's shard holds every answer, each counted
/// once, and the server goes idle (no worker keeps waking itself for news).
#[test]
fn a_burst_of_stores_settles_on_every_worker_and_leaves_the_server_idle() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(WORKERS).start();
    const CONNECTIONS: usize = 4;
    const EACH: usize = 500;
    std::thread::scope(|scope| {
        for t in 0..CONNECTIONS {
            let proxy = &proxy;
            scope.spawn(move || {
                let mut conn = proxy.conn();
                for n in 0..EACH {
                    let target = format!("/v1/models?t={t}&n={n}");
                    let response = conn.roundtrip(&Req::get(&target).authed().bytes());
                    assert_eq!(response.status, 200, "{target}");
                    assert_eq!(response.header("cache-status"), Some("stored"));
                }
            });
        }
    });
    let stored = (CONNECTIONS * EACH) as u64;
    let every = |value| (0..WORKERS).map(|w| (w, value)).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(2);
    while per_worker(&proxy, "llm_proxy_cache_shard_entries") != every(stored)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        per_worker(&proxy, "llm_proxy_cache_shard_entries"),
        every(stored)
    );
    assert_eq!(sum(&proxy, "llm_proxy_cache_entries"), stored);
    assert_eq!(
        sum(&proxy, "llm_proxy_cache_shared_total"),
        stored * (WORKERS as u64 - 1),
        "each answer reached each other worker once"
    );
    // Idle now: a second of the server's CPU time is a few ticks at most.
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", proxy.proc.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let busy = cpu() - before;
    assert!(busy <= 20, "{busy} ticks of CPU in a second of no requests");
}
