//! Micro-benchmarks of the functions every proxied request goes through.
//! Run with `cargo bench --bench hot_path`; results in docs/benchmarks.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_proxy::http::{BodyTracker, ChunkedDecoder, Framing, Parsed, RequestHead, ResponseHead};
use llm_proxy::providers::ProviderTable;
use llm_proxy::proxy::auth::bearer_key;
use std::hint::black_box;

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

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Sun, 22 Nov 2026 10:00:00 GMT\r\n\
Content-Type: text/event-stream; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\n\
Connection: keep-alive\r\n\
openai-processing-ms: 120\r\n\
x-request-id: req_0123456789abcdef\r\n\
Cache-Control: no-cache\r\n\
\r\n";

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

fn heads(c: &mut Criterion) {
    c.bench_function("parse request head", |b| {
        b.iter(|| match RequestHead::parse(black_box(REQUEST)) {
            Ok(Parsed::Complete(head)) => head.len,
            _ => 0,
        })
    });
    c.bench_function("parse response head", |b| {
        b.iter(|| match ResponseHead::parse(black_box(RESPONSE)) {
            Ok(Parsed::Complete(head)) => head.len,
            _ => 0,
        })
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

criterion_group!(benches, heads, chunked);
criterion_main!(benches);
