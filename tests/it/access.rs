//! A key's `models` allowlist (and its user's) and its budget hold on every
//! path that reaches an upstream: whatever endpoint the request names,
//! however its path is spelt, whether its model is registered or not, and
//! whether the answer would come from the cache. Every refusal is checked at
//! the mock upstream too: nothing of a refused request may reach it.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::cli::{read_head, read_more};
use crate::common::litellm::{add_deployment, generate_key, mock_requests, prices};
use crate::common::*;
use serde_json::{Value, json};

/// Everything under `/v1/` forwarded: the widest endpoint allowlist a
/// deployment may configure, so that only the key checks stand in the way.
fn open_config(base_url: &str) -> String {
    format!(
        "default_api: openai\napis:\n  openai:\n    base_url: {base_url}\n    \
         allowed_endpoints: [/v1/]\n    allowed_methods: [GET, POST, DELETE]\n"
    )
}

fn proxy_for(mock: &Mock, workers: usize) -> Proxy {
    Proxy::for_mock(mock)
        .api_config(open_config(&mock.url()))
        .workers(workers)
        .start()
}

/// Registers `name` as a priced deployment at `mock` (so that routing by
/// model is on).
fn register(proxy: &Proxy, name: &str, mock: &Mock) {
    add_deployment(proxy, name, mock, prices(0.001, 0.002));
}

/// A key of the seeded project with the fields of `fields`; returns its secret.
fn key(proxy: &Proxy, mut fields: Value) -> String {
    fields["project_id"] = json!(proxy.project_id);
    generate_key(proxy, fields)
}

fn post(path: &str, body: Value, key: &str) -> Req {
    Req::post(path, body.to_string()).auth(key)
}

fn chat(model: &str) -> Value {
    json!({"model": model, "input": "hi", "messages": [{"role": "user", "content": "hi"}]})
}

/// Sends `request` on a fresh connection; returns the answer and whether
/// anything reached the mock (its request counter moved by more than the
/// reading itself).
fn send(proxy: &Proxy, mock: &Mock, request: Req) -> (Response, bool) {
    let before = mock_requests(mock);
    let response = proxy.call(request);
    let reached = mock_requests(mock) > before + 1;
    (response, reached)
}

/// Sends `request`, which must be answered 200 and reach the mock.
#[track_caller]
fn assert_served(proxy: &Proxy, mock: &Mock, request: Req) {
    let (response, reached) = send(proxy, mock, request);
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(reached);
}

/// Sends each request; every one must be refused with the `(status, code)`
/// that `expected` gives for its label (the entry labelled `""` for the
/// others) and none may reach the mock. Reports all that did not hold at
/// once.
#[track_caller]
fn assert_all_refused<L: AsRef<str>>(
    proxy: &Proxy,
    mock: &Mock,
    requests: Vec<(L, Req)>,
    expected: &[(&str, u16, &str)],
) {
    let mut failures = Vec::new();
    for (what, request) in requests {
        let what = what.as_ref();
        let (response, reached) = send(proxy, mock, request);
        let (status, code) = expected
            .iter()
            .find(|(name, _, _)| *name == what)
            .or_else(|| expected.iter().find(|(name, _, _)| name.is_empty()))
            .map(|(_, status, code)| (*status, *code))
            .expect("an expected answer");
        let code_seen = if response.status >= 400 {
            response.error_code()
        } else {
            String::new()
        };
        if reached || response.status != status || code_seen != code {
            failures.push(format!(
                "{what}: {} {code_seen}, reached the upstream: {reached}",
                response.status
            ));
        } else {
            response.assert_error(status, code);
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

const DENIED: (&str, u16, &str) = ("", 401, "key_model_access_denied");

#[test]
fn a_model_outside_the_allowlist_is_refused_on_every_endpoint() {
    let mock = Mock::start();
    let proxy = proxy_for(&mock, 2);
    register(&proxy, "A", &mock);
    let restricted = key(&proxy, json!({"models": ["A"]}));
    let user = proxy.manage(
        "POST",
        "/user/new",
        Some(json!({"models": ["A"], "auto_create_key": false})),
    );
    let user_id = user.json()["user_id"].as_str().unwrap().to_string();
    let of_user = key(&proxy, json!({"user_id": user_id}));

    let mut requests = Vec::new();
    for (who, secret) in [("key", &restricted), ("user", &of_user)] {
        for path in [
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/responses",
            "/v1/chat/completions/x",
            "/v1/audio/speech",
            "/v1/fine_tuning/jobs",
        ] {
            requests.push((format!("{who} {path}"), post(path, chat("B"), secret)));
        }
    }
    // A chunked body is read and checked the same way.
    requests.push((
        "chunked /v1/responses".to_string(),
        Req::new("POST", "/v1/responses")
            .auth(&restricted)
            .header("Content-Type", "application/json")
            .header("Transfer-Encoding", "chunked")
            .no_content_length()
            .body(chunked(&[br#"{"model":"#, br#""B","input":"hi"}"#])),
    ));
    assert_all_refused(&proxy, &mock, requests, &[DENIED]);
}

#[test]
fn a_key_and_user_sharing_no_model_are_shown_none_and_refused_all() {
    let mock = Mock::start();
    let proxy = proxy_for(&mock, 1);
    register(&proxy, "A", &mock);
    register(&proxy, "B", &mock);
    let user = proxy.manage(
        "POST",
        "/user/new",
        Some(json!({"models": ["B"], "auto_create_key": false})),
    );
    let user_id = user.json()["user_id"].as_str().unwrap().to_string();
    let disjoint = key(&proxy, json!({"user_id": user_id, "models": ["A"]}));

    for path in ["/v1/models", "/model/info"] {
        let listing = proxy.call(Req::get(path).auth(&disjoint));
        assert_eq!(listing.status, 200, "{path}: {}", listing.text());
        assert_eq!(
            listing.json()["data"],
            json!([]),
            "{path} shows a key no model it may not use"
        );
    }
    let requests = ["A", "B"].map(|model| {
        (
            format!("model {model}"),
            post("/v1/chat/completions", chat(model), &disjoint),
        )
    });
    assert_all_refused(&proxy, &mock, requests.into(), &[DENIED]);
}

#[test]
fn paths_are_checked_in_their_normal_form_only() {
    let mock = Mock::start();
    let proxy = proxy_for(&mock, 2);
    register(&proxy, "A", &mock);
    let restricted = key(&proxy, json!({"models": ["A"]}));
    let unrestricted = key(&proxy, json!({}));
    let mut requests = Vec::new();
    for (who, secret) in [("restricted", &restricted), ("unrestricted", &unrestricted)] {
        for path in [
            "/v1/chat/completions/",
            "/v1//chat/completions",
            "//v1//chat/completions",
            "/v1/chat/./completions",
            "/v1/chat/complet%69ons",
            "/v1/chat%2Fcompletions",
            "/v1/chat\\completions",
        ] {
            requests.push((format!("{who} {path}"), post(path, chat("B"), secret)));
        }
    }
    let outside_v1 = [
        ("restricted //v1//chat/completions", 404, "not_found"),
        ("unrestricted //v1//chat/completions", 404, "not_found"),
        ("", 400, "bad_request"),
    ];
    assert_all_refused(&proxy, &mock, requests, &outside_v1);
    // The normal spelling of the same request, by a key that may, works.
    assert_served(
        &proxy,
        &mock,
        post("/v1/chat/completions", chat("A"), &restricted),
    );
}

#[test]
fn a_restricted_key_may_not_send_a_body_whose_model_it_cannot_show() {
    let mock = Mock::start();
    let proxy = proxy_for(&mock, 2);
    let restricted = key(&proxy, json!({"models": ["gpt-4o-mini"]}));
    let multipart = "--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n\
         {\"body\":{\"model\":\"B\"}}\r\n--xyz--\r\n";
    let upload = |secret: &str, path: &str| {
        Req::new("POST", path)
            .auth(secret)
            .header("Content-Type", "multipart/form-data; boundary=xyz")
            .body(multipart)
    };
    let requests = vec![
        ("multipart /v1/files", upload(&restricted, "/v1/files")),
        (
            "multipart /v1/audio/transcriptions",
            upload(&restricted, "/v1/audio/transcriptions"),
        ),
        (
            "text /v1/images/edits",
            Req::new("POST", "/v1/images/edits")
                .auth(&restricted)
                .header("Content-Type", "text/plain")
                .body("model=B"),
        ),
        (
            "no model /v1/batches",
            post(
                "/v1/batches",
                json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions"}),
                &restricted,
            ),
        ),
        (
            "no model /v1/moderations",
            post("/v1/moderations", json!({"input": "hi"}), &restricted),
        ),
        (
            "escaped model",
            Req::post(
                "/v1/responses",
                r#"{"model":"gpt-4o-min\u0069","input":"hi"}"#,
            )
            .auth(&restricted),
        ),
        (
            "model twice",
            Req::post(
                "/v1/responses",
                r#"{"model":"gpt-4o-mini","model":"B","input":"hi"}"#,
            )
            .auth(&restricted),
        ),
        (
            "model not a string",
            Req::post("/v1/responses", r#"{"model":["B"],"input":"hi"}"#).auth(&restricted),
        ),
    ];
    assert_all_refused(&proxy, &mock, requests, &[DENIED]);

    // What a restricted key may do: requests without a body, and bodies
    // naming a model it may use.
    for request in [
        Req::get("/v1/models").auth(&restricted),
        Req::get("/v1/files/file-1").auth(&restricted),
        Req::new("DELETE", "/v1/files/file-1").auth(&restricted),
        Req::new("POST", "/v1/batches/batch-1/cancel").auth(&restricted),
        post("/v1/responses", chat("gpt-4o-mini"), &restricted),
    ] {
        let (response, reached) = send(&proxy, &mock, request);
        assert!(reached, "{} {}", response.status, response.text());
    }
    // An unrestricted key's upload goes through as before.
    let (response, reached) = send(&proxy, &mock, upload(CLIENT_KEY, "/v1/files"));
    assert!(reached, "{} {}", response.status, response.text());
    let seen = mock.last_request();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["target"], "/v1/files");
}

#[test]
fn an_allowed_model_still_works_on_each_path() {
    let mock = Mock::start();
    let proxy = proxy_for(&mock, 2);
    register(&proxy, "A", &mock);
    let restricted = key(&proxy, json!({"models": ["A", "gpt-4o-mini"]}));

    // A registered model goes to its deployment.
    let response = proxy.call(post("/v1/chat/completions", chat("A"), &restricted));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "A-upstream");
    // An unregistered one to the project's provider, streamed or not.
    let response = proxy.call(post(
        "/v1/chat/completions",
        chat("gpt-4o-mini"),
        &restricted,
    ));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "gpt-4o-mini");
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    let response = proxy.call(post("/v1/chat/completions", body, &restricted));
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        sse_data(&response.body)
            .last()
            .is_some_and(|e| e == "[DONE]")
    );
    // The Responses API names a model too: routed to its deployment.
    let (response, reached) = send(&proxy, &mock, post("/v1/responses", chat("A"), &restricted));
    assert!(reached, "{} {}", response.status, response.text());
    let seen = mock.last_request();
    assert_eq!(seen["target"], "/v1/responses");
    assert_eq!(
        header_value(&headers_of(&seen), "authorization"),
        Some("Bearer sk-deployment-of-A")
    );
    // Other endpoints reach the upstream with the project's key, the
    // client's body and target unchanged.
    for path in ["/v1/chat/completions/x", "/v1/audio/speech"] {
        let (response, reached) = send(&proxy, &mock, post(path, chat("A"), &restricted));
        assert!(reached, "{path}: {} {}", response.status, response.text());
        let seen = mock.last_request();
        assert_eq!(seen["target"], path);
        assert_eq!(
            header_value(&headers_of(&seen), "authorization"),
            Some(format!("Bearer {UPSTREAM_KEY}").as_str())
        );
    }
}

#[test]
fn a_key_over_its_budget_is_refused_on_every_path() {
    let mock = Mock::start();
    let proxy = proxy_for(&mock, 2);
    register(&proxy, "A", &mock);
    let spent = key(&proxy, json!({"max_budget": 1, "spend": 1}));
    let requests = vec![
        (
            "unregistered model",
            post("/v1/chat/completions", chat("gpt-4o-mini"), &spent),
        ),
        (
            "registered model",
            post("/v1/chat/completions", chat("A"), &spent),
        ),
        ("/v1/responses", post("/v1/responses", chat("A"), &spent)),
        ("a listing", Req::get("/v1/files").auth(&spent)),
        (
            "an upload",
            Req::new("POST", "/v1/files")
                .auth(&spent)
                .header("Content-Type", "text/plain")
                .body("x"),
        ),
    ];
    assert_all_refused(&proxy, &mock, requests, &[("", 429, "budget_exceeded")]);
    // A key under its budget is served.
    let fresh = key(&proxy, json!({"max_budget": 1}));
    assert_served(
        &proxy,
        &mock,
        post("/v1/chat/completions", chat("gpt-4o-mini"), &fresh),
    );
}

#[test]
fn cached_answers_are_refused_to_keys_that_may_not_have_them() {
    let mock = Mock::start();
    // One worker: one cache shard.
    let proxy = proxy_for(&mock, 1);
    let spent = key(&proxy, json!({"max_budget": 1, "spend": 1}));
    let restricted = key(&proxy, json!({"models": ["A"]}));
    let cached = |body: Value, secret: &str| {
        post("/v1/chat/completions", body, secret).header("Cache-Control", "public, max-age=60")
    };
    // The project's unrestricted key fills the cache (the answers are the
    // project's: every key of it may be served them).
    for request in [
        Req::get("/v1/models").authed(),
        cached(chat("gpt-4o-mini"), CLIENT_KEY),
        cached(chat("B"), CLIENT_KEY),
    ] {
        let mut conn = proxy.conn();
        let first = conn.roundtrip(&request.bytes());
        assert_eq!(first.status, 200, "{}", first.text());
        let again = conn.roundtrip(&request.bytes());
        assert_eq!(again.header("x-proxy-cache"), Some("hit"));
    }
    let budget = ("", 429, "budget_exceeded");
    assert_all_refused(
        &proxy,
        &mock,
        vec![
            ("listing", Req::get("/v1/models").auth(&spent)),
            ("chat", cached(chat("gpt-4o-mini"), &spent)),
            ("model B", cached(chat("B"), &restricted)),
        ],
        &[budget, ("model B", 401, "key_model_access_denied")],
    );
    // With routing on, the unregistered models' answers are the same entries.
    register(&proxy, "A", &mock);
    assert_all_refused(
        &proxy,
        &mock,
        vec![
            ("chat", cached(chat("gpt-4o-mini"), &spent)),
            ("model B", cached(chat("B"), &restricted)),
        ],
        &[budget, ("model B", 401, "key_model_access_denied")],
    );
    // The unrestricted key is still served from the cache.
    let hit = proxy.call(cached(chat("B"), CLIENT_KEY));
    assert_eq!(hit.header("x-proxy-cache"), Some("hit"));
}

/// An upstream that reports each request head as soon as it has it (before
/// the body), then reads a chunked body to its end and answers `{}`.
fn head_reporting_upstream() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = Vec::new();
            let Some(end) = read_head(&mut stream, &mut buf) else {
                return;
            };
            let _ = heads.send(String::from_utf8_lossy(&buf[..end]).into_owned());
            while !buf[end..].windows(5).any(|w| w == b"0\r\n\r\n") {
                if !read_more(&mut stream, &mut buf) {
                    return;
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            );
        }
    });
    (addr, seen)
}

#[test]
fn an_unrestricted_key_streams_its_body_to_the_upstream() {
    let (addr, heads) = head_reporting_upstream();
    let proxy = Proxy::builder()
        .api_config(open_config(&format!("http://{addr}")))
        .start();
    let mut conn = proxy.conn();
    let head = Req::new("POST", "/v1/files")
        .authed()
        .header("Content-Type", "multipart/form-data; boundary=xyz")
        .header("Transfer-Encoding", "chunked")
        .no_content_length()
        .head_bytes();
    conn.send(&head);
    conn.send(b"5\r\n--xyz\r\n");
    // The upstream has the request while the client is still sending it:
    // nothing waits for the whole body.
    let seen = heads
        .recv_timeout(Duration::from_secs(30))
        .expect("the request head reached the upstream before the body ended");
    assert!(seen.starts_with("POST /v1/files "), "{seen}");
    conn.send(b"0\r\n\r\n");
    let response = conn.read_response().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}
