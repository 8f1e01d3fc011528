//! Every error path: status, OpenAI error envelope and code, and what
//! happens to the connection afterwards.

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

// --- authentication -------------------------------------------------------

#[test]
fn missing_api_key_is_401() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let cases = [
        Req::get("/v1/models"),
        Req::get("/v1/models").header("Authorization", "Basic dXNlcjpwYXNz"),
        Req::get("/v1/models").header("Authorization", "Bearer "),
        Req::get("/v1/models").header("Authorization", CLIENT_KEY),
    ];
    for request in cases {
        let response = proxy.call(request.header("X-Request-ID", "auth-check"));
        response.assert_error(401, "missing_api_key");
        assert_eq!(response.header("x-request-id"), Some("auth-check"));
    }
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
}

#[test]
fn wrong_api_key_is_401() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    for key in [
        "sk-wrong",
        &CLIENT_KEY[..CLIENT_KEY.len() - 1],
        &format!("{CLIENT_KEY}x"),
    ] {
        proxy
            .call(Req::get("/v1/models").auth(key))
            .assert_error(401, "invalid_api_key");
    }
    // The upstream key is not a client key.
    proxy
        .call(Req::get("/v1/models").auth(UPSTREAM_KEY))
        .assert_error(401, "invalid_api_key");
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
}

#[test]
fn rejected_request_leaves_the_connection_usable() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    // A body that arrived whole is skipped, and the next request is served.
    let rejected = Req::post("/v1/chat/completions", chat_body(false, "x")).auth("sk-wrong");
    let response = conn.roundtrip(&rejected.bytes());
    response.assert_error(401, "invalid_api_key");
    assert!(!response.closes());
    let response = conn.roundtrip(&Req::get("/v1/unknown").authed().bytes());
    response.assert_error(404, "endpoint_not_allowed");
    let response = conn.roundtrip(&chat(false).bytes());
    assert_eq!(response.status, 200, "{}", response.text());
}

// --- routing ----------------------------------------------------------------

#[test]
fn endpoint_outside_the_allow_list_is_404() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    for path in ["/v1/unknown", "/v1/chat/completionsX", "/v1/admin/keys"] {
        proxy
            .call(Req::get(path).authed())
            .assert_error(404, "endpoint_not_allowed");
    }

    // With an API config, only its endpoints are allowed.
    let yaml = format!(
        "default_api: openai\napis:\n  openai:\n    base_url: {}\n    \
         allowed_endpoints: [/v1/chat/completions, /v1/models]\n    allowed_methods: [GET, POST]\n",
        mock.url()
    );
    let restricted = Proxy::builder().api_config(yaml).start();
    let body = r#"{"input":"x"}"#;
    restricted
        .call(Req::post("/v1/embeddings", body).authed())
        .assert_error(404, "endpoint_not_allowed");
    assert_eq!(
        restricted
            .call(Req::get("/v1/models/gpt-4o").authed())
            .status,
        404
    );
    assert_eq!(restricted.call(Req::get("/v1/models").authed()).status, 200);
    assert_eq!(mock.last_request()["target"], "/v1/models");
}

#[test]
fn method_not_allowed_is_405_with_allow() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    for method in ["PUT", "PATCH", "OPTIONS"] {
        let response = proxy.call(Req::new(method, "/v1/chat/completions").authed());
        response.assert_error(405, "method_not_allowed");
        assert_eq!(response.header("allow"), Some("GET, POST, DELETE"));
    }

    let restricted = Proxy::builder()
        .api_config(api_config(&mock.url(), &[]))
        .start();
    let response = restricted.call(Req::new("DELETE", "/v1/models/x").authed());
    response.assert_error(405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET, POST"));
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
}

#[test]
fn paths_outside_v1_are_404_not_found() {
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", closed_port()))
        .start();
    for path in [
        "/",
        "/admin",
        "/v2/models",
        "/v1",
        "/healthz",
        "//v1/models",
    ] {
        let response = proxy.call(Req::get(path).header("X-Request-ID", "nf-1"));
        response.assert_error(404, "not_found");
        assert_eq!(response.header("x-request-id"), Some("nf-1"));
    }
}

#[test]
fn paths_not_in_normal_form_are_rejected() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    for path in [
        "/v1/chat/completions/../../admin",
        "/v1/models/./x",
        "/v1/%2e%2e/admin",
        "/v1/files%2f..%2fsecrets",
        "/v1/",
        "/v1/chat/completions/",
        "/v1//chat/completions",
    ] {
        let mut conn = proxy.conn();
        let response = conn.roundtrip(&Req::get(path).authed().bytes());
        response.assert_error(400, "bad_request");
    }
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
}

// --- malformed requests ---------------------------------------------------

#[test]
fn malformed_request_is_400_and_only_that_connection_closes() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut bystander = proxy.conn();
    assert_eq!(
        bystander
            .roundtrip(&Req::get("/v1/models").authed().bytes())
            .status,
        200
    );

    let garbage: [&[u8]; 5] = [
        b"this is not http\r\n\r\n",
        b"GET http://example.com/v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"GET /v1/models HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /v1/models\r\n\r\n",
    ];
    for bytes in garbage {
        let mut conn = proxy.conn();
        conn.send(bytes);
        let response = conn.read_response().unwrap();
        response.assert_error(400, "bad_request");
        assert!(response.closes(), "{:?}", response.headers);
        conn.assert_closed();
    }

    // Other connections, old and new, are unaffected.
    assert_eq!(bystander.roundtrip(&chat(false).bytes()).status, 200);
    assert_eq!(proxy.call(Req::get("/v1/models").authed()).status, 200);
}

#[test]
fn oversized_request_head_is_431() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).env("MAX_HEADER_SIZE", "1KB").start();

    // A complete head over the limit.
    let mut conn = proxy.conn();
    conn.send(
        &Req::get("/v1/models")
            .authed()
            .header("X-Big", "b".repeat(3000))
            .bytes(),
    );
    let response = conn.read_response().unwrap();
    response.assert_error(431, "header_too_large");
    assert!(response.closes());
    conn.assert_closed();

    // A head that never ends but keeps growing.
    let mut conn = proxy.conn();
    let mut partial = Req::get("/v1/models").authed().head_bytes();
    partial.truncate(partial.len() - 2);
    partial.extend_from_slice(format!("X-Endless: {}", "e".repeat(2000)).as_bytes());
    conn.send(&partial);
    conn.read_response()
        .unwrap()
        .assert_error(431, "header_too_large");
    conn.assert_closed();

    // Under the limit is fine.
    assert_eq!(
        proxy
            .call(
                Req::get("/v1/models")
                    .authed()
                    .header("X-Small", "s".repeat(500))
            )
            .status,
        200
    );
}

#[test]
fn too_many_header_fields_is_431() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut request = Req::get("/v1/models").authed();
    for i in 0..120 {
        request = request.header(&format!("X-Field-{i}"), "v");
    }
    let mut conn = proxy.conn();
    let response = conn.roundtrip(&request.bytes());
    response.assert_error(431, "header_too_large");
    conn.assert_closed();
}

#[test]
fn slow_request_head_times_out_with_408() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("CLIENT_HEADER_TIMEOUT", "500ms")
        .start();
    let mut conn = proxy.conn();

    let started = Instant::now();
    conn.send(b"GET /v1/models HTTP/1.1\r\nHost: proxy.test\r\nAuthor");
    let response = conn.read_response().unwrap();
    let waited = started.elapsed();
    response.assert_error(408, "request_timeout");
    assert!(
        waited >= Duration::from_millis(450),
        "408 after only {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "408 only after {waited:?}"
    );
    assert!(response.closes());
    conn.assert_closed();
    assert!(mock.last_request().is_null());
}

#[test]
fn idle_connections_are_closed_quietly() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("CLIENT_IDLE_TIMEOUT", "300ms")
        .start();

    // A connection that never sends anything.
    let mut silent = proxy.conn();
    silent.assert_closed();

    // A keep-alive connection after its request.
    let mut conn = proxy.conn();
    let started = Instant::now();
    assert_eq!(
        conn.roundtrip(&Req::get("/v1/models").authed().bytes())
            .status,
        200
    );
    conn.assert_closed();
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn unsupported_transfer_coding_is_501() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    for coding in ["gzip", "gzip, chunked", "identity"] {
        let mut conn = proxy.conn();
        let request = Req::post("/v1/chat/completions", Vec::new())
            .authed()
            .header("Transfer-Encoding", coding);
        conn.send(&request.head_bytes());
        let response = conn.read_response().unwrap();
        response.assert_error(501, "unsupported_transfer_encoding");
        assert!(response.closes());
        conn.assert_closed();
    }
    assert!(mock.last_request().is_null());
}

#[test]
fn ambiguous_body_framing_is_400() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let both = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Content-Length", "5")
        .header("Transfer-Encoding", "chunked");
    let conflicting = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Content-Length", "5")
        .header("Content-Length", "6");
    let signed = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Content-Length", "+5");
    for request in [both, conflicting, signed] {
        let mut conn = proxy.conn();
        conn.send(&request.head_bytes());
        let response = conn.read_response().unwrap();
        response.assert_error(400, "bad_request");
        assert!(response.closes());
        conn.assert_closed();
    }
    assert!(mock.last_request().is_null());
}

// --- upstream failures ----------------------------------------------------

#[test]

fn upstream_failures_never_echo_the_upstream_request_to_the_client() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let refused = Proxy::builder()
        .upstream(format!("http://{}", closed_port()))
        .upstream_key(UPSTREAM_KEY)
        .start();

    let mut chunked_garbage = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    chunked_garbage.extend_from_slice(b"zz\r\n");
    let cases: Vec<(&Proxy, Vec<u8>)> = vec![
        (&refused, Req::get("/v1/models").authed().bytes()),
        (
            &proxy,
            Req::get("/v1/models")
                .authed()
                .header("x-mock-fault", "garbage")
                .bytes(),
        ),
        (&proxy, chunked_garbage),
    ];
    for (proxy, request) in cases {
        let mut conn = proxy.conn();
        conn.send(&request);
        let response = conn.read_response().expect("an error response first");
        assert!(
            (400..=599).contains(&response.status),
            "the first bytes back must be an error response, got {response:?}"
        );
        let mut seen = response.text();
        if response.closes() {
            seen.push_str(&String::from_utf8_lossy(
                &conn.read_until_close().unwrap_or_default(),
            ));
        } else {
            // Nothing else may follow on a kept-alive connection.
            conn.set_read_timeout(Duration::from_millis(200));
            let extra = conn.read_head();
            assert!(
                extra.is_err() && conn.buffered().is_empty(),
                "bytes after the error response: {extra:?} {:?}",
                String::from_utf8_lossy(conn.buffered())
            );
        }
        assert!(
            !seen.contains(UPSTREAM_KEY),
            "upstream key sent to the client: {seen}"
        );
    }
}

#[test]

fn upstream_connection_refused_is_502() {
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", closed_port()))
        .upstream_key(UPSTREAM_KEY)
        .start();
    let mut conn = proxy.conn();
    for _ in 0..2 {
        let response = conn.roundtrip(&chat(false).header("X-Request-ID", "refused-1").bytes());
        response.assert_error(502, "upstream_unavailable");
        assert_eq!(response.header("x-request-id"), Some("refused-1"));
        // The client did nothing wrong: the connection stays open.
        assert!(!response.closes());
    }
}

#[test]

fn upstream_that_never_answers_is_504() {
    let mock = Mock::start();
    let proxy = Proxy::builder()
        .api_config(api_config(
            &mock.url(),
            &[("response_header", "500ms"), ("connect", "1s")],
        ))
        .start();
    let mut conn = proxy.conn();

    let started = Instant::now();
    let response = conn.roundtrip(&chat(false).header("x-mock-fault", "hang").bytes());
    let waited = started.elapsed();
    response.assert_error(504, "upstream_timeout");
    assert!(
        waited >= Duration::from_millis(450),
        "504 after only {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "504 only after {waited:?}"
    );
    // The connection is still good for the next request.
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
}

#[test]

fn upstream_garbage_is_502() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();
    let response = conn.roundtrip(&chat(false).header("x-mock-fault", "garbage").bytes());
    response.assert_error(502, "bad_upstream_response");
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
}

#[test]

fn upstream_closing_without_an_answer_is_502() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();
    let response = conn.roundtrip(&chat(false).header("x-mock-fault", "close").bytes());
    response.assert_error(502, "bad_upstream_response");
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
}

#[test]
fn upstream_error_status_passes_through_untouched() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    for status in [503u16, 429, 500] {
        let response = conn.roundtrip(
            &chat(false)
                .header("x-mock-status", status.to_string())
                .header("X-Request-ID", "pass-1")
                .bytes(),
        );
        assert_eq!(response.status, status);
        // The mock's own error body, not one made up by the proxy.
        let json = response.json();
        assert_eq!(json["error"]["code"], format!("mock_status_{status}"));
        assert_eq!(json["error"]["type"], "mock_error");
        assert_eq!(response.header("x-request-id"), Some("pass-1"));
        let (start, stop) = response.timing();
        assert!(start <= stop);
        assert!(!response.closes());
    }
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
}

#[test]
fn upstream_rejecting_the_upstream_key_passes_through() {
    let mock = Mock::builder()
        .args(["--api-key", "sk-the-real-one"])
        .start();
    let proxy = Proxy::for_mock(&mock).start();
    let response = proxy.call(chat(false));
    response.assert_error(401, "invalid_api_key");
    assert_eq!(
        response.json()["error"]["message"],
        "Incorrect API key provided"
    );
}

// --- HEAD requests ----------------------------------------------------------

#[test]

fn error_responses_to_head_requests_have_no_body() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    for path in ["/nowhere", "/v1/models"] {
        conn.send(&Req::new("HEAD", path).authed().bytes());
        let response = conn.read_head_response().unwrap();
        assert!(response.status >= 400, "HEAD {path}: {}", response.status);
        // The next response on the connection must start right away.
        let next = conn.roundtrip(&Req::get("/health").bytes());
        assert_eq!(next.status, 200, "after HEAD {path}: {next:?}");
    }
}

#[test]
fn head_request_to_health_has_no_body() {
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", closed_port()))
        .start();
    let mut conn = proxy.conn();
    conn.send(&Req::new("HEAD", "/health").bytes());
    let response = conn.read_head_response().unwrap();
    assert_eq!(response.status, 200);
    let next = conn.roundtrip(&Req::get("/live").bytes());
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.json()["status"], "alive");
}

#[test]

fn head_request_to_health_reports_the_get_length() {
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", closed_port()))
        .start();
    let mut conn = proxy.conn();
    let get = conn.roundtrip(&Req::get("/health").bytes());
    conn.send(&Req::new("HEAD", "/health").bytes());
    let head = conn.read_head_response().unwrap();
    assert_eq!(head.header("content-length"), get.header("content-length"));
}
