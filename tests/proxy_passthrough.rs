//! Non-streaming requests through the proxy to the real mock upstream:
//! bodies and headers on the way up and down, key swap, request IDs, timing
//! headers, and connection reuse on both sides.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use common::*;
use serde_json::{Value, json};

fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn chat_completion_is_relayed_with_usage() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let response = proxy.call(chat(false).header("x-mock-stream-chunks", "5"));

    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["message"]["content"], mock_text(5));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "Hello there, mock!" is 18 characters: 18 / 4 = 4 prompt tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 9);
    assert_eq!(
        response
            .header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        response.body.len()
    );

    let seen = mock.last_request();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["target"], "/v1/chat/completions");
}

#[test]
fn client_key_is_swapped_for_the_upstream_key() {
    // The mock only answers requests that carry the upstream key.
    let mock = Mock::builder().args(["--api-key", UPSTREAM_KEY]).start();
    let proxy = Proxy::for_mock(&mock).env("LOG_LEVEL", "debug").start();

    let response = proxy.call(chat(false));
    assert_eq!(response.status, 200, "{}", response.text());

    let headers = mock.last_request_headers();
    assert_eq!(
        header_values(&headers, "authorization"),
        [format!("Bearer {UPSTREAM_KEY}").as_str()],
        "upstream must get exactly the upstream key"
    );
    for (name, value) in &headers {
        assert!(
            !value.contains(CLIENT_KEY),
            "client key leaked upstream in {name}: {value}"
        );
    }
    // Neither key shows up in the proxy's logs, even at debug level.
    let log = proxy.log();
    assert!(!log.contains(CLIENT_KEY), "client key in proxy log:\n{log}");
    assert!(
        !log.contains(UPSTREAM_KEY),
        "upstream key in proxy log:\n{log}"
    );
    assert!(!mock.proc.log().contains(CLIENT_KEY));
}

#[test]
fn every_configured_client_key_is_accepted() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .client_keys(&["sk-team-a", "sk-team-b"])
        .start();

    for key in ["sk-team-a", "sk-team-b"] {
        let response = proxy.call(Req::get("/v1/models").auth(key));
        assert_eq!(response.status, 200, "key {key}: {}", response.text());
    }
    proxy
        .call(Req::get("/v1/models").auth("sk-team-c"))
        .assert_error(401, "invalid_api_key");
    // The scheme is case-insensitive.
    let response = proxy.call(Req::get("/v1/models").header("Authorization", "bearer sk-team-b"));
    assert_eq!(response.status, 200);
}

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let request = chat(false)
        .header("Connection", "keep-alive, X-Hop-Secret")
        .header("X-Hop-Secret", "drop-me")
        .header("Keep-Alive", "timeout=5")
        .header("TE", "trailers")
        .header("Trailer", "X-Checksum")
        .header("Upgrade", "websocket")
        .header("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0")
        .header("Proxy-Connection", "keep-alive")
        .header("X-End-To-End", "keep-me")
        .header("User-Agent", "integration-test/1.0")
        .header("OpenAI-Organization", "org-test");
    let response = proxy.call(request);
    assert_eq!(response.status, 200, "{}", response.text());

    let headers = mock.last_request_headers();
    for name in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            header_values(&headers, name).is_empty(),
            "hop-by-hop header {name} was forwarded: {headers:?}"
        );
    }
    assert_eq!(header_values(&headers, "x-end-to-end"), ["keep-me"]);
    assert_eq!(
        header_values(&headers, "user-agent"),
        ["integration-test/1.0"]
    );
    assert_eq!(header_values(&headers, "openai-organization"), ["org-test"]);
    assert_eq!(
        header_values(&headers, "content-type"),
        ["application/json"]
    );
    // Host names the upstream, not the client's idea of the proxy.
    assert_eq!(
        header_values(&headers, "host"),
        [mock.addr.to_string().as_str()]
    );
}

#[test]
fn hop_by_hop_response_headers_are_not_forwarded() {
    let body = r#"{"object":"list","data":[]}"#;
    let upstream = ScriptedUpstream::start(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: keep-alive, X-Internal-Route\r\nX-Internal-Route: shard-7\r\n\
             Keep-Alive: timeout=30\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\n\
             X-Request-ID: provider-req-42\r\nOpenAI-Processing-Ms: 12\r\n\r\n{body}",
            body.len()
        ),
        false,
    );
    let proxy = Proxy::builder().upstream(upstream.url()).start();

    let response = proxy.call(
        Req::get("/v1/models")
            .authed()
            .header("X-Request-ID", "client-req-1"),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), body);
    for name in [
        "connection",
        "x-internal-route",
        "keep-alive",
        "upgrade",
        "proxy-authenticate",
    ] {
        assert!(
            response.header(name).is_none(),
            "{name} reached the client: {:?}",
            response.headers
        );
    }
    assert_eq!(response.header("openai-processing-ms"), Some("12"));
    // The gateway's request ID wins; the provider's is kept under another name.
    assert_eq!(response.header_all("x-request-id"), ["client-req-1"]);
    assert_eq!(
        response.header("x-upstream-request-id"),
        Some("provider-req-42")
    );
}

#[test]
fn request_id_is_generated_and_sent_upstream() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(1).start();
    let mut conn = proxy.conn();

    let first = conn.roundtrip(&Req::get("/v1/models").authed().bytes());
    assert_eq!(first.status, 200);
    let id = first
        .header("x-request-id")
        .expect("X-Request-ID")
        .to_string();
    assert!(is_uuid(&id), "generated request ID is not a UUID: {id}");
    let headers = mock.last_request_headers();
    assert_eq!(header_values(&headers, "x-request-id"), [id.as_str()]);

    let second = conn.roundtrip(&Req::get("/v1/models").authed().bytes());
    let other = second.header("x-request-id").unwrap();
    assert!(is_uuid(other));
    assert_ne!(id, other, "every request gets its own ID");
}

#[test]
fn client_request_id_is_passed_through() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let response = proxy.call(chat(false).header("X-Request-ID", "trace-abc-123"));
    assert_eq!(response.status, 200);
    assert_eq!(response.header_all("x-request-id"), ["trace-abc-123"]);
    let headers = mock.last_request_headers();
    assert_eq!(header_values(&headers, "x-request-id"), ["trace-abc-123"]);
}

#[test]
fn unusable_client_request_id_is_replaced() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    // A query of its own for each request: the second must reach the mock,
    // not be answered from the response cache.
    for (attempt, bad) in ["has spaces in it".to_string(), "x".repeat(200)]
        .into_iter()
        .enumerate()
    {
        let response = proxy.call(
            Req::get(&format!("/v1/models?attempt={attempt}"))
                .authed()
                .header("X-Request-ID", bad.clone()),
        );
        assert_eq!(response.status, 200);
        let id = response.header("x-request-id").unwrap();
        assert!(
            is_uuid(id),
            "{bad:?} should be replaced by a generated ID, got {id}"
        );
        let headers = mock.last_request_headers();
        assert_eq!(header_values(&headers, "x-request-id"), [id]);
    }
}

#[test]
fn timing_headers_bracket_the_upstream_exchange() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let before = unix_nanos();
    let response = proxy.call(chat(false).header("x-mock-latency-ms", "300"));
    let after = unix_nanos();

    assert_eq!(response.status, 200);
    let (start, stop) = response.timing();
    assert!(
        before <= start,
        "START {start} is before the request was sent ({before})"
    );
    assert!(start <= stop, "START {start} > STOP {stop}");
    assert!(
        stop <= after,
        "STOP {stop} is after the response arrived ({after})"
    );
    // The mock waited 300 ms before its response head.
    assert!(
        stop - start >= 300_000_000,
        "STOP - START = {} ns, but the upstream took at least 300 ms",
        stop - start
    );
}

#[test]
fn embeddings_reach_the_mock_byte_for_byte() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let inputs = vec![
        json!("The food was delicious"),
        json!("and the waiter was kind"),
    ];
    let body = json!({"model": "text-embedding-3-small", "input": inputs}).to_string();
    let response = proxy.call(Req::post("/v1/embeddings", body).authed());

    assert_embeddings(&response, &inputs);
    let json = response.json();
    assert_eq!(json["object"], "list");
    assert_eq!(json["model"], "text-embedding-3-small");
    assert!(json["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn models_are_listed_and_the_query_string_is_kept() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let response = proxy.call(Req::get("/v1/models?limit=2&order=desc").authed());
    assert_eq!(response.status, 200);
    let json = response.json();
    assert_eq!(json["object"], "list");
    let ids: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini"), "{ids:?}");
    let seen = mock.last_request();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["target"], "/v1/models?limit=2&order=desc");
}

#[test]
fn delete_is_forwarded_and_upstream_404_passes_through() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let response = proxy.call(Req::new("DELETE", "/v1/models/ft-model-1").authed());
    // The mock has no such route: its own 404 comes back unchanged.
    response.assert_error(404, "not_found");
    assert_eq!(response.json()["error"]["message"], "unknown route");
    let seen = mock.last_request();
    assert_eq!(seen["method"], "DELETE");
    assert_eq!(seen["target"], "/v1/models/ft-model-1");
}

#[test]
fn keep_alive_reuses_client_and_upstream_connections() {
    let mock = Mock::start();
    let relay = TcpRelay::start(mock.addr);
    // One worker: one upstream pool for every client connection.
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", relay.addr))
        .upstream_key(UPSTREAM_KEY)
        .workers(1)
        .start();

    let mut conn = proxy.conn();
    for i in 0..5 {
        let request = if i % 2 == 0 {
            chat(false)
        } else {
            Req::get("/v1/models").authed()
        };
        let response = conn.roundtrip(&request.bytes());
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert!(
            !response.closes(),
            "request {i} closed the client connection"
        );
    }
    // A second client connection, one after the other, uses the same pool.
    let mut conn2 = proxy.conn();
    for _ in 0..3 {
        assert_eq!(conn2.roundtrip(&chat(false).bytes()).status, 200);
    }
    assert_eq!(
        relay.accepted(),
        1,
        "8 sequential requests should share one upstream connection"
    );
    // (The mock may count the /mock/stats request itself.)
    let requests = mock.stat("requests");
    assert!(
        (8..=9).contains(&requests),
        "the mock saw {requests} requests, expected 8"
    );
}

#[test]
fn stale_pooled_upstream_connection_is_replaced_transparently() {
    let mock = Mock::start();
    let relay = TcpRelay::start(mock.addr);
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", relay.addr))
        .workers(1)
        .start();
    let mut conn = proxy.conn();

    assert_eq!(
        conn.roundtrip(&Req::get("/v1/models").authed().bytes())
            .status,
        200
    );
    // The upstream side goes away while the connection sits in the pool.
    relay.close_all();
    for request in [Req::get("/v1/models").authed(), chat(false)] {
        let response = conn.roundtrip(&request.bytes());
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(
        relay.accepted(),
        2,
        "one new upstream connection replaces the stale one"
    );
}

#[test]
fn large_response_body_is_relayed_intact_and_connection_reused() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let inputs: Vec<Value> = (0..3000)
        .map(|i| json!(format!("sentence number {i}")))
        .collect();
    let body = json!({"input": inputs}).to_string();
    let response = conn.roundtrip(&Req::post("/v1/embeddings", body).authed().bytes());
    assert!(
        response.body.len() > 256 * 1024,
        "body of {} bytes",
        response.body.len()
    );
    assert_embeddings(&response, &inputs);

    // The relay stopped exactly at the end of the body.
    let next = conn.roundtrip(&Req::get("/v1/models").authed().bytes());
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["object"], "list");
}

#[test]
fn large_request_body_reaches_the_mock_intact() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    // 2 MiB in one input: the body crosses many reads on its way up.
    let big: String = (0..2 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let inputs = vec![json!(big), json!("tail")];
    let body = json!({"input": inputs}).to_string();
    let response = proxy.call(Req::post("/v1/embeddings", body).authed());
    assert_embeddings(&response, &inputs);
}

#[test]
fn http10_client_gets_a_response_and_the_connection_closes() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    conn.send(&Req::get("/v1/models").authed().version("HTTP/1.0").bytes());
    let response = conn.read_response().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["object"], "list");
    assert!(response.closes(), "{:?}", response.headers);
    conn.assert_closed();
}

#[test]
fn connection_close_from_the_client_is_honoured() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let response = conn.roundtrip(&chat(false).header("Connection", "close").bytes());
    assert_eq!(response.status, 200);
    assert!(response.closes(), "{:?}", response.headers);
    conn.assert_closed();
    // The proxy does not pass the client's Connection header upstream.
    assert!(header_values(&mock.last_request_headers(), "connection").is_empty());
}
