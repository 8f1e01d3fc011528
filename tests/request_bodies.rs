//! Request bodies: chunked uploads, `Expect: 100-continue`, size limits,
//! body timeouts and pipelining.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn embeddings_body(inputs: &[Value]) -> String {
    json!({"model": "text-embedding-3-small", "input": inputs}).to_string()
}

/// A chat request body of exactly `len` bytes (JSON padded with spaces).
fn chat_body_of_len(len: usize) -> Vec<u8> {
    let mut body = chat_body(false, "padding test").into_bytes();
    assert!(body.len() <= len);
    let close = body.pop().unwrap();
    body.resize(len - 1, b' ');
    body.push(close);
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
    body
}

#[test]
fn chunked_upload_is_forwarded_intact() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let inputs = vec![
        json!("chunked uploads arrive in pieces"),
        json!("x".repeat(70_000)),
    ];
    let body = embeddings_body(&inputs).into_bytes();
    let head = Req::post("/v1/embeddings", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(40_000);
    // The first chunk travels with the head, the others later: the pauses
    // only make the body span several reads on the proxy's side.
    let mut first = head.clone();
    first.extend_from_slice(format!("{:x}\r\n", a.len()).as_bytes());
    first.extend_from_slice(a);
    first.extend_from_slice(b"\r\n");
    conn.send(&first);
    std::thread::sleep(Duration::from_millis(50));
    conn.send(format!("{:x}\r\n", b.len()).as_bytes());
    conn.send(b);
    conn.send(b"\r\n");
    std::thread::sleep(Duration::from_millis(50));
    let mut last = format!("{:x}\r\n", c.len()).into_bytes();
    last.extend_from_slice(c);
    last.extend_from_slice(b"\r\n0\r\n\r\n");
    conn.send(&last);

    let response = conn.read_response().unwrap();
    assert_embeddings(&response, &inputs);
    let headers = mock.last_request_headers();
    assert_eq!(header_values(&headers, "transfer-encoding"), ["chunked"]);
    assert!(header_values(&headers, "content-length").is_empty());
    // The connection is still in sync.
    assert_eq!(
        conn.roundtrip(&Req::get("/v1/models").authed().bytes())
            .status,
        200
    );
}

#[test]
fn chunk_extensions_and_trailers_are_accepted() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let inputs = vec![json!("with extensions and trailers")];
    let body = embeddings_body(&inputs).into_bytes();
    let (a, b) = body.split_at(17);
    let mut request = Req::post("/v1/embeddings", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    request.extend_from_slice(format!("{:X};name=value\r\n", a.len()).as_bytes());
    request.extend_from_slice(a);
    request.extend_from_slice(format!("\r\n{:x} ; x=\"y\"\r\n", b.len()).as_bytes());
    request.extend_from_slice(b);
    request.extend_from_slice(b"\r\n0\r\nX-Checksum: abc\r\n\r\n");
    let response = conn.roundtrip(&request);
    assert_embeddings(&response, &inputs);
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
}

#[test]
fn expect_100_continue_gets_100_then_the_response() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let body = chat_body(false, "sent after 100 Continue");
    let head = chat(false)
        .body(body.clone())
        .header("Expect", "100-continue")
        .head_bytes();
    conn.send(&head);
    let interim = conn.read_head().unwrap();
    assert_eq!(
        interim.status, 100,
        "expected 100 Continue, got {interim:?}"
    );
    assert_eq!(
        conn.buffered(),
        b"",
        "nothing may follow 100 Continue before the body is sent"
    );
    conn.send(body.as_bytes());
    let response = conn.read_response().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["object"], "chat.completion");
    // Expect is between the client and the proxy.
    assert!(header_values(&mock.last_request_headers(), "expect").is_empty());
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
}

#[test]
fn expect_100_continue_with_an_oversized_body_is_refused_up_front() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("MAX_REQUEST_SIZE", "1KB")
        .start();
    let mut conn = proxy.conn();

    let head = Req::post("/v1/chat/completions", vec![b'x'; 4096])
        .authed()
        .header("Expect", "100-continue")
        .head_bytes();
    conn.send(&head);
    let response = conn.read_response().unwrap();
    response.assert_error(413, "request_too_large");
    assert!(response.closes());
    conn.assert_closed();
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
}

#[test]
fn content_length_over_the_limit_is_refused_without_reading_the_body() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("MAX_REQUEST_SIZE", "1KB")
        .start();
    let mut conn = proxy.conn();

    // Only the head is sent: the answer must not wait for 2 KiB of body.
    conn.send(
        &Req::post("/v1/chat/completions", vec![b'x'; 2048])
            .authed()
            .head_bytes(),
    );
    let response = conn.read_response().unwrap();
    response.assert_error(413, "request_too_large");
    assert!(response.header("x-request-id").is_some());
    assert!(response.closes());
    conn.assert_closed();
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
}

#[test]
fn body_at_the_limit_is_accepted_and_one_byte_more_is_not() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("MAX_REQUEST_SIZE", "1KB")
        .start();

    let response = proxy.call(Req::post("/v1/chat/completions", chat_body_of_len(1024)).authed());
    assert_eq!(response.status, 200, "{}", response.text());
    let response = proxy.call(Req::post("/v1/chat/completions", chat_body_of_len(1025)).authed());
    response.assert_error(413, "request_too_large");

    // Chunked: the limit counts payload bytes, not framing.
    let body = chat_body_of_len(1024);
    let (a, b) = body.split_at(512);
    let request = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked");
    let mut bytes = request.head_bytes();
    bytes.extend_from_slice(&chunked(&[a, b]));
    let response = proxy.conn().roundtrip(&bytes);
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn chunked_body_over_the_limit_is_refused() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("MAX_REQUEST_SIZE", "1KB")
        .start();
    let mut conn = proxy.conn();

    let part = vec![b'x'; 600];
    let mut request = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    request.extend_from_slice(&chunked(&[&part, &part, &part]));
    conn.send(&request);
    let response = conn.read_response().unwrap();
    response.assert_error(413, "request_too_large");
    assert!(response.closes());
    conn.assert_closed();
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
}

#[test]
fn chunked_body_growing_over_the_limit_while_forwarded_is_refused() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("MAX_REQUEST_SIZE", "1KB")
        .start();
    let mut conn = proxy.conn();

    // 100 Continue is sent once the request is on its way upstream; only
    // then does the body start, and it grows past the limit.
    let head = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .header("Expect", "100-continue")
        .head_bytes();
    conn.send(&head);
    assert_eq!(conn.read_head().unwrap().status, 100);
    let part = vec![b'y'; 600];
    conn.send(&chunked(&[&part, &part]));
    let response = conn.read_response().unwrap();
    response.assert_error(413, "request_too_large");
    assert!(response.closes());
    conn.assert_closed();
    assert!(
        mock.last_request().is_null(),
        "the mock never got a complete request"
    );
    assert_eq!(proxy.call(chat(false)).status, 200);
}

#[test]
fn invalid_chunked_framing_is_a_bad_request() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let mut request = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    request.extend_from_slice(b"zz\r\nnot a chunk\r\n0\r\n\r\n");
    conn.send(&request);
    let response = conn.read_response().unwrap();
    response.assert_error(400, "bad_request");
    assert!(response.closes());
    conn.assert_closed();
    assert!(mock.last_request().is_null());
}

#[test]
fn stalled_request_body_times_out_with_408() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("CLIENT_BODY_TIMEOUT", "500ms")
        .start();
    let mut conn = proxy.conn();

    let mut request = Req::post("/v1/chat/completions", vec![b'x'; 100])
        .authed()
        .head_bytes();
    request.extend_from_slice(b"{\"model\":");
    let sent = Instant::now();
    conn.send(&request);
    let response = conn.read_response().unwrap();
    let waited = sent.elapsed();
    response.assert_error(408, "request_timeout");
    assert!(
        waited >= Duration::from_millis(450),
        "timed out after only {waited:?}"
    );
    assert!(response.closes());
    conn.assert_closed();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let requests = [
        Req::get("/v1/models")
            .authed()
            .header("X-Request-ID", "pipe-1"),
        chat(false).header("X-Request-ID", "pipe-2"),
        Req::get("/health").header("X-Request-ID", "pipe-3"),
        Req::post("/v1/embeddings", embeddings_body(&[json!("pipe")]))
            .authed()
            .header("X-Request-ID", "pipe-4"),
        Req::get("/v1/nope")
            .authed()
            .header("X-Request-ID", "pipe-5"),
        chat(true)
            .header("X-Request-ID", "pipe-6")
            .header("x-mock-stream-chunks", "2"),
        Req::get("/v1/models")
            .authed()
            .header("X-Request-ID", "pipe-7"),
    ];
    let all: Vec<u8> = requests.iter().flat_map(|r| r.bytes()).collect();
    conn.send(&all);

    let responses: Vec<Response> = (0..requests.len())
        .map(|_| conn.read_response().unwrap())
        .collect();
    let ids: Vec<&str> = responses
        .iter()
        .map(|r| r.header("x-request-id").unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "pipe-1", "pipe-2", "pipe-3", "pipe-4", "pipe-5", "pipe-6", "pipe-7"
        ]
    );
    assert_eq!(responses[0].json()["object"], "list");
    assert_eq!(responses[1].json()["object"], "chat.completion");
    assert_eq!(responses[2].json()["status"], "ok");
    assert_embeddings(&responses[3], &[json!("pipe")]);
    responses[4].assert_error(404, "endpoint_not_allowed");
    assert_complete_stream(&sse_data(&responses[5].body), 2);
    assert_eq!(responses[6].json()["object"], "list");
    assert_eq!(conn.buffered(), b"");
}

#[test]
fn pipelined_bodies_keep_their_boundaries() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let inputs: Vec<Vec<Value>> = vec![
        vec![json!("first body")],
        vec![json!("second"), json!("body")],
        vec![json!("third body ".repeat(3000))],
    ];
    let mut all = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let request = Req::post("/v1/embeddings", embeddings_body(input)).authed();
        if i == 1 {
            // One of them chunked, so both framings meet the next request.
            let mut bytes = Req::post("/v1/embeddings", Vec::new())
                .authed()
                .header("Transfer-Encoding", "chunked")
                .head_bytes();
            let body = embeddings_body(input).into_bytes();
            let (a, b) = body.split_at(5);
            bytes.extend_from_slice(&chunked(&[a, b]));
            all.extend_from_slice(&bytes);
        } else {
            all.extend_from_slice(&request.bytes());
        }
    }
    conn.send(&all);
    for input in &inputs {
        let response = conn.read_response().unwrap();
        assert_embeddings(&response, input);
    }
}
