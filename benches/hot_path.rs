//! Micro-benchmarks of the functions every proxied request goes through.
//! Run with `cargo bench --bench hot_path`; results in docs/benchmarks.md.
//!
//! With `HOT_PATH_ITERATIONS=N` set, criterion is skipped: each function
//! runs N times through its own non-inlined wrapper (`profile_*`), so that
//! `valgrind --tool=callgrind` counts instructions per call exactly:
//!
//! ```text
//! HOT_PATH_ITERATIONS=100000 HOT_PATH_MESSAGES=loadtest \
//!     valgrind --tool=callgrind target/release/deps/hot_path-<hash>
//! callgrind_annotate --inclusive=yes callgrind.out.* | grep profile_
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's setup fails by panicking, and it prints what it measured"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use llm_proxy::cache::policy::{self, Consult, Directives};
use llm_proxy::cache::{
    CacheSettings, HitReply, Miss, Request as CacheRequest, ResponseCache, Shared,
};
use llm_proxy::http::RequestId;
use llm_proxy::http::rewrite::{Stamp, Upstream, write_client_head, write_request_head};
use llm_proxy::http::{BodyTracker, ChunkedDecoder, Framing, Parsed, RequestHead, ResponseHead};
use llm_proxy::metrics::{Endpoint, WorkerMetrics};
use llm_proxy::providers::ProviderTable;
use llm_proxy::proxy::fields::{self, RoutingFields};
use llm_proxy::record::Record;
use llm_proxy::record::usage::{Usage, UsageScan};
use llm_proxy::store::Money;
use llm_proxy::worker::auth::bearer_key;

/// What the OpenAI Python client sends.
const REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: OpenAI/Python 1.51.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate\r\n\
Authorization: Bearer sk-0123456789abcdef0123456789abcdef\r\n\
Content-Type: application/json\r\n\
X-Stainless-Lang: python\r\n\
X-Stainless-Package-Version: 1.51.0\r\n\
Content-Length: 68\r\n\
\r\n\
{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

/// The head of a streamed answer from OpenAI.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Sun, 22 Nov 2026 10:00:00 GMT\r\n\
Content-Type: text/event-stream; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\n\
Connection: keep-alive\r\n\
openai-processing-ms: 120\r\n\
x-request-id: req_0123456789abcdef\r\n\
Cache-Control: no-cache\r\n\
\r\n";

/// What `loadtest/compare_nginx.sh` sends (wrk with `chat.lua`) and what
/// the mock upstream answers: the load test's request path.
const LOADTEST_REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: 127.0.0.1:19002\r\n\
Content-Type: application/json\r\n\
Authorization: Bearer sk-bench\r\n\
Content-Length: 67\r\n\
\r\n";
const LOADTEST_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json\r\n\
Content-Length: 350\r\n\
\r\n";

const UPSTREAM: Upstream = Upstream {
    base_path: "",
    authority: "api.openai.com",
    auth_fields: b"Authorization: Bearer sk-upstream-0123456789abcdef0123456789abcdef\r\n",
    extra_fields: b"",
    identity: false,
    target: None,
    body_length: None,
};
const REQUEST_ID: &str = "0b3c4d5e-6f70-4182-93a4-b5c6d7e8f901";
const TIMES: (u64, u64) = (1_795_473_602_123_456_789, 1_795_473_602_223_456_789);

fn sse_stream(events: usize) -> Vec<u8> {
    let event = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}"#;
    let mut body = Vec::new();
    for _ in 0..events {
        body.extend_from_slice(format!("{:x}\r\n", event.len() + 2).as_bytes());
        body.extend_from_slice(event);
        body.extend_from_slice(b"\n\n\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

fn request_head(raw: &[u8]) -> RequestHead {
    match RequestHead::parse(raw) {
        Ok(Parsed::Complete(head)) => head,
        _ => panic!("bench request does not parse"),
    }
}

fn response_head(raw: &[u8]) -> ResponseHead {
    match ResponseHead::parse(raw) {
        Ok(Parsed::Complete(head)) => head,
        _ => panic!("bench response does not parse"),
    }
}

#[inline(never)]
fn profile_parse_request(raw: &[u8]) -> usize {
    match RequestHead::parse(black_box(raw)) {
        Ok(Parsed::Complete(head)) => head.len,
        _ => 0,
    }
}

#[inline(never)]
fn profile_parse_response(raw: &[u8]) -> usize {
    match ResponseHead::parse(black_box(raw)) {
        Ok(Parsed::Complete(head)) => head.len,
        _ => 0,
    }
}

#[inline(never)]
fn profile_write_request_head(out: &mut Vec<u8>, raw: &[u8], head: &RequestHead) -> usize {
    out.clear();
    write_request_head(out, black_box(raw), head, &UPSTREAM, REQUEST_ID);
    out.len()
}

#[inline(never)]
fn profile_write_client_head(out: &mut Vec<u8>, raw: &[u8], head: &ResponseHead) -> usize {
    out.clear();
    let stamp = Stamp {
        request_id: REQUEST_ID,
        upstream_times: TIMES,
        extra: &[],
    };
    write_client_head(out, black_box(raw), head, &stamp, false, false);
    out.len()
}

#[inline(never)]
fn profile_request_id(raw: &[u8], head: &RequestHead) -> usize {
    RequestId::of(head, black_box(raw)).as_str().len()
}

/// Runs every profiled function `n` times on each message pair, or on the
/// one named by `HOT_PATH_MESSAGES` (`openai` or `loadtest`).
fn profile(n: usize) {
    let mut out = Vec::with_capacity(4096);
    let mut total = 0;
    let pairs = match std::env::var("HOT_PATH_MESSAGES").as_deref() {
        Ok("openai") => vec![(REQUEST, RESPONSE)],
        Ok("loadtest") => vec![(LOADTEST_REQUEST, LOADTEST_RESPONSE)],
        _ => vec![(REQUEST, RESPONSE), (LOADTEST_REQUEST, LOADTEST_RESPONSE)],
    };
    for (request, response) in pairs {
        let (request_head, response_head) = (request_head(request), response_head(response));
        for _ in 0..n {
            total += profile_parse_request(request);
            total += profile_parse_response(response);
            total += profile_write_request_head(&mut out, request, &request_head);
            total += profile_write_client_head(&mut out, response, &response_head);
            total += profile_request_id(request, &request_head);
        }
    }
    let (body, payload) = (chat_body(), sse_payload(64));
    for _ in 0..n {
        total += profile_routing_fields(&body);
        total += profile_rewrite(&body);
        total += profile_usage_scan(&payload) as usize;
    }
    let mut metrics = WorkerMetrics::new(0);
    let (plain, routed) = (finished_record(None), finished_record(Some("gpt-4o-mini")));
    for _ in 0..n {
        profile_metrics_record(&mut metrics, b"/v1/chat/completions", &plain);
        profile_metrics_record(&mut metrics, b"/v1/chat/completions", &routed);
    }
    println!("{n} iterations per function and message pair ({total})");
}

fn heads(c: &mut Criterion) {
    c.bench_function("parse request head", |b| {
        b.iter(|| profile_parse_request(REQUEST))
    });
    c.bench_function("parse response head", |b| {
        b.iter(|| profile_parse_response(RESPONSE))
    });
    let request = request_head(REQUEST);
    let response = response_head(RESPONSE);
    let mut out = Vec::with_capacity(4096);
    c.bench_function("write upstream request head", |b| {
        b.iter(|| profile_write_request_head(&mut out, REQUEST, &request))
    });
    c.bench_function("write client response head", |b| {
        b.iter(|| profile_write_client_head(&mut out, RESPONSE, &response))
    });
    c.bench_function("request id", |b| {
        b.iter(|| profile_request_id(REQUEST, &request))
    });
    c.bench_function("bearer key", |b| {
        b.iter(|| bearer_key(black_box(b"Bearer sk-0123456789abcdef0123456789abcdef")))
    });
    let table = ProviderTable::openai("https://api.openai.com").expect("default table");
    let provider = table.default_provider();
    c.bench_function("endpoint allowlist", |b| {
        b.iter(|| provider.allows_path(black_box(b"/v1/vector_stores/vs_1/files")))
    });
}

/// A 1 KB chat request body as routed requests carry it: a system prompt,
/// a short conversation, the model after the messages.
fn chat_body() -> Vec<u8> {
    let turn = "Tell me about thread-per-core servers and io_uring in two sentences, please. ";
    serde_json::json!({
        "messages": [
            {"role": "system", "content": turn.repeat(3)},
            {"role": "user", "content": turn.repeat(3)},
            {"role": "assistant", "content": turn.repeat(2)},
            {"role": "user", "content": turn},
        ],
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "stream": true,
    })
    .to_string()
    .into_bytes()
}

/// The payload (de-chunked) of a stream with `events` deltas and a final
/// usage chunk.
fn sse_payload(events: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut decoder = ChunkedDecoder::new();
    let _ = decoder.feed(&sse_stream(events), |data| payload.extend_from_slice(data));
    payload.extend_from_slice(
        br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":64,"total_tokens":184}}"#,
    );
    payload.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    payload
}

/// What a routed request reads of its body: `proxy::fields::RoutingFields::parse`.
#[inline(never)]
fn profile_routing_fields(body: &[u8]) -> usize {
    RoutingFields::parse(black_box(body))
        .ok()
        .flatten()
        .map_or(0, |f| f.model_span.1)
}

/// The body sent to the deployment, rewritten in place
/// (`proxy::fields::Rewrite`), with its copy into a buffer of its own as
/// the server reads it.
#[inline(never)]
fn profile_rewrite(body: &[u8]) -> usize {
    match RoutingFields::parse(body) {
        Ok(Some(fields)) => {
            let mut held = Vec::with_capacity(body.len() + fields::REWRITE_HEADROOM);
            held.extend_from_slice(black_box(body));
            fields::Rewrite::new(&fields).apply(&mut held, "gpt-4o-mini-2024-07-18", true);
            held.len()
        }
        _ => 0,
    }
}

/// The usage of a relayed stream: `record::usage::UsageScan`, fed as the
/// relay feeds it (one read at a time).
#[inline(never)]
fn profile_usage_scan(payload: &[u8]) -> u64 {
    let mut scan = UsageScan::new(true);
    for read in black_box(payload).chunks(4096) {
        scan.feed(read);
    }
    scan.finish().map_or(0, |u| u.completion_tokens)
}

fn routing(c: &mut Criterion) {
    let body = chat_body();
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("model field of a 1 KB body", |b| {
        b.iter(|| profile_routing_fields(&body))
    });
    group.bench_function("rewrite a 1 KB body", |b| b.iter(|| profile_rewrite(&body)));
    group.finish();
    let payload = sse_payload(64);
    let mut group = c.benchmark_group("usage");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("scan SSE stream for usage", |b| {
        b.iter(|| profile_usage_scan(&payload))
    });
    group.finish();
}

fn chunked(c: &mut Criterion) {
    let stream = sse_stream(64);
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("frame SSE stream (relay)", |b| {
        b.iter(|| {
            let mut tracker = BodyTracker::new(Framing::Chunked);
            tracker.advance(black_box(&stream)).ok()
        })
    });
    group.bench_function("decode SSE stream", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::new();
            let mut payload = 0usize;
            let end = decoder.feed(black_box(&stream), |data| payload += data.len());
            (end.ok(), payload)
        })
    });
    group.finish();
}

/// What `finish` records of a request that reached the upstream, a
/// pass-through one (`model: None`) or a routed one with its usage.
fn finished_record(model: Option<&str>) -> Record {
    Record {
        model: model.map(Into::into),
        // A routed request's model has a label slot of its own.
        routed: model.is_some(),
        upstream_ns: Some(TIMES),
        first_byte_ns: Some(TIMES.1 + 1_000),
        usage: model.map(|_| Usage {
            prompt_tokens: 120,
            completion_tokens: 64,
        }),
        cost: Money(model.map_or(0, |_| 248_000_000)),
        ..Record::default()
    }
}

/// A request's whole metrics cost in `finish`: its route label (read from
/// the path) and `WorkerMetrics::record`.
#[inline(never)]
fn profile_metrics_record(metrics: &mut WorkerMetrics, path: &[u8], record: &Record) {
    let route = Endpoint::of(black_box(path));
    metrics.record(
        route,
        200,
        Duration::from_micros(850),
        black_box(record),
        None,
    );
}

fn metrics(c: &mut Criterion) {
    let mut metrics = WorkerMetrics::new(0);
    let record = finished_record(None);
    c.bench_function("metrics record (pass-through)", |b| {
        b.iter(|| profile_metrics_record(&mut metrics, b"/v1/chat/completions", &record))
    });
    let record = finished_record(Some("gpt-4o-mini"));
    c.bench_function("metrics record (routed, usage and cost)", |b| {
        b.iter(|| profile_metrics_record(&mut metrics, b"/v1/chat/completions", &record))
    });
}

/// A shard holding the answer to `raw` (a request head and body), as a
/// miss would have stored it, and what a lookup needs.
fn cache_with_answer(raw: &[u8], settings: &CacheSettings) -> (ResponseCache, RequestHead) {
    let head = request_head(raw);
    let body = &raw[head.len..];
    let consult = cache_consult(raw, &head, false);
    let request = CacheRequest::new(&head, raw, body, (KEY_ID, Some(PROJECT_ID)), &consult);
    let miss = Miss::new(request, consult, (&head, raw), 0);
    let answer = response_head(LOADTEST_RESPONSE);
    let pending = miss
        .prepare(settings, &answer, LOADTEST_RESPONSE)
        .expect("the answer may be stored");
    // Worker 0's shard of a server of two workers.
    let mut cache = ResponseCache::new(Shared::new(2, settings.max_bytes), 0);
    let stored = cache.insert(&miss, pending, &[b'x'; 350], &head, raw, Instant::now());
    assert!(stored);
    (cache, head)
}

const KEY_ID: uuid::Uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
const PROJECT_ID: uuid::Uuid = uuid::Uuid::from_u128(0xfedc_ba98_7654_3210_fedc_ba98_7654_3210);

fn cache_consult(raw: &[u8], head: &RequestHead, post_entries: bool) -> Consult {
    policy::consult(
        &head.method,
        Directives::of_request(head, raw),
        post_entries,
    )
    .expect("the cache applies")
}

/// What a hit costs before its answer is written: whether other shards
/// sent news, whether the cache applies, the key (SHA-256 over method,
/// path, query, body, scope) and the LRU lookup.
#[inline(never)]
fn profile_cache_lookup(cache: &mut ResponseCache, raw: &[u8], head: &RequestHead) -> bool {
    let raw = black_box(raw);
    cache.catch_up(|_| ());
    let consult = cache_consult(raw, head, cache.has_post_entries());
    let request = CacheRequest::new(
        head,
        raw,
        &raw[head.len..],
        (KEY_ID, Some(PROJECT_ID)),
        &consult,
    );
    cache
        .find(&request, (head, raw), Instant::now(), |_| ())
        .is_some()
}

fn cache(c: &mut Criterion) {
    let settings = CacheSettings::default();
    let get = b"GET /v1/models?limit=20&order=asc HTTP/1.1\r\n\
Host: 127.0.0.1:19002\r\n\
Authorization: Bearer sk-bench\r\n\
\r\n";
    let post = [
        &b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: 127.0.0.1:19002\r\n\
Content-Type: application/json\r\n\
Authorization: Bearer sk-bench\r\n\
Cache-Control: public, max-age=3600\r\n\
Content-Length: 68\r\n\
\r\n"[..],
        &REQUEST[REQUEST.len() - 68..],
    ]
    .concat();
    let mut group = c.benchmark_group("cache");
    for (name, raw) in [
        ("GET, 2 query params", &get[..]),
        ("POST, 68 B body", &post[..]),
    ] {
        let (mut shard, head) = cache_with_answer(raw, &settings);
        group.bench_function(format!("hit lookup ({name})"), |b| {
            b.iter(|| profile_cache_lookup(&mut shard, raw, &head))
        });
    }
    let (mut shard, head) = cache_with_answer(&post, &settings);
    let mut out = Vec::with_capacity(4096);
    group.bench_function("hit lookup and answer written (350 B body)", |b| {
        b.iter(|| {
            shard.catch_up(|_| ());
            let consult = cache_consult(&post, &head, true);
            let body = &post[head.len..];
            let request =
                CacheRequest::new(&head, &post, body, (KEY_ID, Some(PROJECT_ID)), &consult);
            out.clear();
            let reply = HitReply {
                request_id: REQUEST_ID,
                if_none_match: None,
                head_only: false,
                close: false,
                now: Instant::now(),
                worker: 0,
            };
            shard.find(&request, (&head, &post), Instant::now(), |e| {
                e.write(&mut out, &reply)
            })
        })
    });
    group.finish();
}

/// What `finish` does for a request's event: build the event from the
/// exchange's record (clock reads, ID and path copies) and push it into the
/// worker's buffer, which hands a batch to the writer every 1,024 events
/// (a thread here drops them).
fn events(c: &mut Criterion) {
    use llm_proxy::events::{EventBuffer, InlinePath, KeyIds, RequestEvent};
    use llm_proxy::record::CacheStatus;

    let (sender, receiver) = std::sync::mpsc::sync_channel(256);
    std::thread::spawn(move || while receiver.recv().is_ok() {});
    let mut buffer = EventBuffer::new(sender, None, Default::default(), None);
    let head = request_head(REQUEST);
    let received = Instant::now();
    let key_id = uuid::Uuid::from_u128(fastrand::u128(..));
    let mut group = c.benchmark_group("events");
    for (name, user) in [("push", None), ("push_with_user", Some("ada@example.com"))] {
        group.bench_function(name, |b| {
            b.iter_batched(
                RequestId::random,
                |request_id| {
                    let end = Instant::now();
                    buffer.push(RequestEvent {
                        request_id,
                        end,
                        duration_ns: (end - received).as_nanos() as u64,
                        worker: 0,
                        key: Some(KeyIds {
                            key_id,
                            project_id: Some(key_id),
                            user_id: user.map(Into::into),
                        }),
                        model: None,
                        method: head.method.clone(),
                        path: InlinePath::new(black_box(head.path(REQUEST))),
                        status: 200,
                        error: None,
                        upstream_ns: Some((1, 2)),
                        first_byte_ns: Some(3),
                        usage: None,
                        cost: Money(0),
                        cache: CacheStatus::None,
                        response_complete: true,
                        bodies: None,
                    })
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("request_id_only", |b| {
        b.iter_batched(
            RequestId::random,
            black_box,
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
    black_box(buffer.emitted());
}

criterion_group!(benches, heads, chunked, routing, metrics, cache, events);

fn main() {
    if let Some(n) = std::env::var("HOT_PATH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        profile(n);
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
