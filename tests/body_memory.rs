//! Request bodies the proxy must hold whole (model routing, cache keys)
//! share one budget per worker (`MAX_BUFFERED_BODY_BYTES`): many large
//! bodies at once get some through and the rest a 503 with `Retry-After`,
//! the bytes held (`llm_proxy_buffered_body_bytes`) never pass the budget,
//! and everything is given back afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::litellm::{add_deployment, generate_key};
use common::*;
use serde_json::{Value, json};

/// The per-worker budget of the proxies below.
const BUDGET: u64 = 16 << 20;
/// Bodies of 2.5 MiB, reserved twice (their buffer and the copy that goes
/// upstream): three fit in the budget, a fourth does not.
const BODY_BYTES: usize = 5 << 19;
/// Requests sent at once.
const CONCURRENT: usize = 10;
/// How long the mock takes to answer: the bodies being forwarded stay
/// held that long, longer than a request waits for room.
const UPSTREAM_LATENCY_MS: &str = "3000";

/// A chat body of about `BODY_BYTES`, different for each `n` (so that no
/// two share a cache key).
fn big_body(model: &str, n: usize) -> String {
    let filler = "x".repeat(BODY_BYTES - 100);
    json!({
        "model": model,
        "messages": [{"role": "user", "content": format!("{n} {filler}")}],
    })
    .to_string()
}

/// The sum over workers of a metric's samples (0 when it has none).
fn metric(proxy: &Proxy, name: &str) -> Option<u64> {
    let response = proxy.call(Req::get("/metrics"));
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        *found.get_or_insert(0) += value as u64;
    }
    found
}

/// Scrapes the gauge of held body bytes until stopped; the highest value seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    highest: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(proxy: &Arc<Proxy>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let highest = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let thread = {
            let (proxy, stop, highest, samples) = (
                proxy.clone(),
                stop.clone(),
                highest.clone(),
                samples.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Only samples that have the gauge count.
                    if let Some(held) = metric(&proxy, "llm_proxy_buffered_body_bytes") {
                        highest.fetch_max(held, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            stop,
            highest,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the highest value seen.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("sampler");
        }
        assert!(
            self.samples.load(Ordering::Relaxed) > 0,
            "no sample of llm_proxy_buffered_body_bytes taken"
        );
        self.highest.load(Ordering::Relaxed)
    }
}

/// A failed test stops the sampler too, so that the proxy it holds is
/// dropped (and killed).
impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `CONCURRENT` requests at once, each on its own connection, and
/// returns their responses.
fn send_at_once(proxy: &Arc<Proxy>, request: impl Fn(usize) -> Req) -> Vec<Response> {
    let requests: Vec<Vec<u8>> = (0..CONCURRENT).map(|n| request(n).bytes()).collect();
    let threads: Vec<_> = requests
        .into_iter()
        .map(|bytes| {
            let proxy = proxy.clone();
            thread::spawn(move || {
                let mut conn = proxy.conn();
                conn.set_read_timeout(Duration::from_secs(60));
                conn.roundtrip(&bytes)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

/// Some got through, every other one is a 503 `server_busy` with
/// `Retry-After`; returns how many were refused.
fn check_outcome(responses: &[Response]) -> u64 {
    let mut served = 0;
    let mut refused = 0;
    for response in responses {
        match response.status {
            200 => served += 1,
            503 => {
                response.assert_error(503, "server_busy");
                assert_eq!(response.json()["error"]["type"], "server_error");
                let retry: u64 = response
                    .header("retry-after")
                    .unwrap_or_else(|| panic!("503 without Retry-After: {:?}", response.headers))
                    .parse()
                    .expect("Retry-After in seconds");
                assert!(retry >= 1);
                refused += 1;
            }
            other => panic!("unexpected status {other}: {}", response.text()),
        }
    }
    assert!(served >= 1, "none of the requests was served");
    assert!(refused >= 1, "no request was refused: {served} served");
    refused
}

/// The bytes held were seen, never over the budget, and all given back;
/// the refusals counted are the `refused` seen.
#[track_caller]
fn check_held_bytes(proxy: &Proxy, highest: u64, refused: u64) {
    assert!(highest > 0, "the held bytes were never seen");
    assert!(
        highest <= BUDGET,
        "held {highest} bytes, over the budget of {BUDGET}"
    );
    assert_eq!(metric(proxy, "llm_proxy_buffered_body_bytes"), Some(0));
    assert_eq!(
        metric(proxy, "llm_proxy_buffered_body_refusals_total"),
        Some(refused)
    );
}

fn budget_proxy(mock: &Mock) -> Arc<Proxy> {
    Arc::new(
        Proxy::for_mock(mock)
            .workers(1)
            .env("MAX_BUFFERED_BODY_BYTES", "16MiB")
            .start(),
    )
}

#[test]
fn routed_bodies_share_the_budget_and_the_rest_are_refused_with_503() {
    let mock = Mock::start();
    let proxy = budget_proxy(&mock);
    add_deployment(&proxy, "big", &mock, Value::Null);
    let key = generate_key(&proxy, json!({}));

    let sampler = Sampler::start(&proxy);
    let responses = send_at_once(&proxy, |n| {
        Req::post("/v1/chat/completions", big_body("big", n))
            .auth(&key)
            .header("x-mock-latency-ms", UPSTREAM_LATENCY_MS)
    });
    let refused = check_outcome(&responses);
    let highest = sampler.finish();
    for response in responses.iter().filter(|r| r.status == 200) {
        assert_eq!(response.json()["model"], "big-upstream");
    }

    check_held_bytes(&proxy, highest, refused);

    // The server still answers, a large body included.
    let response = proxy.call(Req::post("/v1/chat/completions", big_body("big", 99)).auth(&key));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(metric(&proxy, "llm_proxy_buffered_body_bytes"), Some(0));
}

#[test]
fn cache_opt_in_bodies_share_the_budget_and_the_rest_are_refused_with_503() {
    let mock = Mock::start();
    let proxy = budget_proxy(&mock);

    let sampler = Sampler::start(&proxy);
    let responses = send_at_once(&proxy, |n| {
        Req::post("/v1/chat/completions", big_body("gpt-4o", n))
            .authed()
            .header("Cache-Control", "public, max-age=60")
            .header("x-mock-latency-ms", UPSTREAM_LATENCY_MS)
    });
    let refused = check_outcome(&responses);
    let highest = sampler.finish();
    for response in responses.iter().filter(|r| r.status == 200) {
        assert_eq!(response.header("x-proxy-cache"), Some("miss"));
    }

    check_held_bytes(&proxy, highest, refused);

    // A served body was stored under its key: the same request is a hit.
    let served = responses.iter().position(|r| r.status == 200).unwrap();
    let again = proxy.call(
        Req::post("/v1/chat/completions", big_body("gpt-4o", served))
            .authed()
            .header("Cache-Control", "public, max-age=60"),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("x-proxy-cache"), Some("hit"));
    assert_eq!(metric(&proxy, "llm_proxy_buffered_body_bytes"), Some(0));
}

#[test]
fn a_body_the_budget_could_never_hold_is_413() {
    let mock = Mock::start();
    let proxy = budget_proxy(&mock);
    add_deployment(&proxy, "big", &mock, Value::Null);
    let key = generate_key(&proxy, json!({}));

    // Under MAX_REQUEST_SIZE (10 MiB) but over the 16 MiB budget counted
    // twice (the body and its copy upstream): it could never be held, so
    // waiting and retrying would not help. The answer comes from the head
    // alone.
    let filler = "x".repeat(9 << 20);
    let body = json!({"model": "big", "messages": [{"role": "user", "content": filler}]});
    let text = body.to_string();
    let mut conn = proxy.conn();
    conn.send(
        &Req::post("/v1/chat/completions", text.clone())
            .auth(&key)
            .head_bytes(),
    );
    let response = conn.read_response().unwrap();
    response.assert_error(413, "request_too_large");
    assert!(response.header("retry-after").is_none());

    // The same, chunked: refused once the decoded body outgrows the budget.
    // (The server closes while the rest is still coming: the send may fail.)
    let parts: Vec<&[u8]> = text.as_bytes().chunks(1 << 20).collect();
    let mut request = Req::post("/v1/chat/completions", Vec::new())
        .auth(&key)
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    request.extend_from_slice(&chunked(&parts));
    let mut conn = proxy.conn();
    let _ = conn.try_send(&request);
    let response = conn.read_response().unwrap();
    response.assert_error(413, "request_too_large");
    assert_eq!(metric(&proxy, "llm_proxy_buffered_body_bytes"), Some(0));

    // A chunked body within the budget is read and routed.
    let small = big_body("big", 1);
    let parts: Vec<&[u8]> = small.as_bytes().chunks(100_000).collect();
    let response = proxy.call(
        Req::post("/v1/chat/completions", chunked(&parts))
            .auth(&key)
            .header("Transfer-Encoding", "chunked")
            .no_content_length(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(metric(&proxy, "llm_proxy_buffered_body_bytes"), Some(0));
    let _: Value = response.json();
}

#[test]
fn a_refused_request_keeps_its_connection_for_the_next_one() {
    let mock = Mock::start();
    let proxy = budget_proxy(&mock);
    add_deployment(&proxy, "big", &mock, Value::Null);
    let key = generate_key(&proxy, json!({}));

    // Three slow requests fill the budget (3 x 2 x 2.5 MiB of 16 MiB)...
    let holders: Vec<_> = (0..3)
        .map(|n| {
            let proxy = proxy.clone();
            let request = Req::post("/v1/chat/completions", big_body("big", n))
                .auth(&key)
                .header("x-mock-latency-ms", "5000")
                .bytes();
            thread::spawn(move || proxy.conn().roundtrip(&request))
        })
        .collect();
    let full = wait_until(Duration::from_secs(20), || {
        metric(&proxy, "llm_proxy_buffered_body_bytes").unwrap_or(0) >= 6 * BODY_BYTES as u64
    });
    assert!(full, "the three bodies were never held at once");

    // ...so a fourth is refused, and its connection serves the next request.
    let mut conn = proxy.conn();
    let refused = conn.roundtrip(
        &Req::post("/v1/chat/completions", big_body("big", 3))
            .auth(&key)
            .bytes(),
    );
    refused.assert_error(503, "server_busy");
    assert!(!refused.closes(), "{:?}", refused.headers);
    let small = json!({"model": "big", "messages": [{"role": "user", "content": "hi"}]});
    let next = conn.roundtrip(
        &Req::post("/v1/chat/completions", small.to_string())
            .auth(&key)
            .bytes(),
    );
    assert_eq!(next.status, 200, "{}", next.text());

    for holder in holders {
        assert_eq!(holder.join().expect("holder").status, 200);
    }
    assert_eq!(metric(&proxy, "llm_proxy_buffered_body_bytes"), Some(0));
}

#[test]
fn a_budget_that_is_not_a_size_or_too_small_stops_the_server_with_one_line() {
    let mock = Mock::start();
    for (value, says) in [
        ("lots", "MAX_BUFFERED_BODY_BYTES: invalid size"),
        ("1KB", "MAX_BUFFERED_BODY_BYTES must be at least 64KB"),
    ] {
        let exited = Proxy::for_mock(&mock)
            .env("MAX_BUFFERED_BODY_BYTES", value)
            .run_to_exit();
        exited.assert_one_line(1, says);
    }
}
