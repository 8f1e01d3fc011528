//! The response cache, case by case, against the real binary and the mock
//! upstream: what is stored and served, what each `Cache-Control` directive
//! does, `Vary`, ETags and `304`s, expiry, size limits, tenant isolation,
//! limits and revocation still applying to hits, streamed answers, and
//! purges across workers. tests/it/cache_workers.rs has the same across
//! workers: every worker's shard holds every answer.
//!
//! Most sequences run on one connection, or on a one-worker proxy.

use std::time::Duration;

use crate::common::cli::Cli;
use crate::common::*;
use serde_json::json;

/// `/v1` requests the mock answered since `since` (a reading of its
/// request counter; each reading is itself a request).
pub(crate) struct Upstream<'a> {
    mock: &'a Mock,
    seen: u64,
}

impl<'a> Upstream<'a> {
    pub(crate) fn of(mock: &'a Mock) -> Self {
        Self {
            mock,
            seen: mock.stat("requests"),
        }
    }

    /// Requests that reached the mock since the last call.
    pub(crate) fn requests(&mut self) -> u64 {
        let now = self.mock.stat("requests");
        let new = now - self.seen - 1;
        self.seen = now;
        new
    }
}

fn one_worker(mock: &Mock) -> ProxyBuilder {
    Proxy::for_mock(mock).workers(1)
}

fn cache_state(response: &Response) -> (Option<&str>, Option<&str>) {
    (
        response.header("x-proxy-cache"),
        response.header("cache-status"),
    )
}

#[track_caller]
pub(crate) fn assert_hit(response: &Response) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        cache_state(response),
        (Some("hit"), Some("hit")),
        "{:?}",
        response.headers
    );
    assert!(response.header("age").is_some(), "a hit tells its age");
    assert!(response.header("x-upstream-request-start").is_none());
}

#[track_caller]
pub(crate) fn assert_miss(response: &Response, status: &str) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        cache_state(response),
        (Some("miss"), Some(status)),
        "{:?}",
        response.headers
    );
}

fn models() -> Req {
    models_for(CLIENT_KEY)
}

fn models_for(key: &str) -> Req {
    Req::get("/v1/models").auth(key)
}

fn opt_in_chat(content: &str) -> Req {
    Req::post("/v1/chat/completions", chat_body(false, content))
        .authed()
        .header("Cache-Control", "public, max-age=60")
}

#[test]
fn get_is_stored_then_served_without_the_upstream() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();
    let first = conn.roundtrip(&models().bytes());
    assert_miss(&first, "stored");
    let key = first
        .header("x-proxy-cache-key")
        .expect("a key")
        .to_string();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!key.contains(CLIENT_KEY));

    let second = conn.roundtrip(&models().header("X-Request-ID", "req-cached-1").bytes());
    assert_hit(&second);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("x-request-id"), Some("req-cached-1"));
    assert_eq!(second.header("content-type"), first.header("content-type"));
    assert_eq!(
        second.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    assert_eq!(upstream.requests(), 1, "the hit did not reach the upstream");

    // HEAD is served from GET's entry: the same head, no body.
    conn.send(&Req::new("HEAD", "/v1/models").authed().bytes());
    let head = conn.read_head_response().expect("HEAD response");
    assert_hit(&head);
    assert_eq!(
        head.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    // The connection is still in step.
    assert_hit(&conn.roundtrip(&models().bytes()));
    assert_eq!(upstream.requests(), 0);
}

#[test]
fn post_is_stored_only_when_the_client_opts_in() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();
    let plain = || Req::post("/v1/chat/completions", chat_body(false, "cache me")).authed();
    for _ in 0..2 {
        let response = conn.roundtrip(&plain().bytes());
        assert_eq!(response.status, 200);
        assert_eq!(cache_state(&response), (None, None), "no cache, no fields");
    }
    assert_eq!(upstream.requests(), 2);

    assert_miss(&conn.roundtrip(&opt_in_chat("cache me").bytes()), "stored");
    let hit = conn.roundtrip(&opt_in_chat("cache me").bytes());
    assert_hit(&hit);
    assert_eq!(hit.json()["object"], "chat.completion");
    // Once this shard holds POST answers, the same POST without the
    // header is looked up too.
    assert_hit(&conn.roundtrip(&plain().bytes()));
    assert_eq!(upstream.requests(), 1);

    // Another body is another request.
    let other = Req::post("/v1/chat/completions", chat_body(false, "something else")).authed();
    let response = conn.roundtrip(&other.bytes());
    assert_miss(&response, "miss");
    // The client can keep the cache out of it.
    let response = conn.roundtrip(&plain().header("Cache-Control", "no-cache").bytes());
    assert_miss(&response, "bypass");
    assert_eq!(upstream.requests(), 2);
}

#[test]
fn query_order_does_not_matter() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut conn = proxy.conn();
    let get = |target: &str| Req::get(target).authed().bytes();
    assert_miss(&conn.roundtrip(&get("/v1/models?b=2&a=1")), "stored");
    assert_hit(&conn.roundtrip(&get("/v1/models?a=1&b=2")));
    assert_miss(&conn.roundtrip(&get("/v1/models?a=1&b=3")), "stored");
}

#[test]
fn vary_keeps_one_answer_per_value() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();
    let get = |language: &str| {
        models()
            .header("x-mock-response-header", "Vary: X-Language")
            .header("X-Language", language)
            .bytes()
    };
    assert_miss(&conn.roundtrip(&get("en")), "stored");
    assert_miss(&conn.roundtrip(&get("fr")), "stored");
    assert_hit(&conn.roundtrip(&get("en")));
    let fr = conn.roundtrip(&get("fr"));
    assert_hit(&fr);
    assert_eq!(fr.header("vary"), Some("X-Language"));
    assert_eq!(upstream.requests(), 2);
}

#[test]
fn response_no_store_and_private() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    proxy.create_token(json!({"token": "sk-client-same-project-2"}));
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();
    let no_store = || {
        Req::get("/v1/models?kind=no-store")
            .authed()
            .header("x-mock-response-header", "Cache-Control: no-store")
            .bytes()
    };
    assert_miss(&conn.roundtrip(&no_store()), "miss");
    assert_miss(&conn.roundtrip(&no_store()), "miss");
    assert_eq!(upstream.requests(), 2);
    for refused in ["no-cache", "max-age=0"] {
        let request = Req::get(&format!("/v1/models?kind={refused}"))
            .authed()
            .header(
                "x-mock-response-header",
                format!("Cache-Control: {refused}"),
            );
        assert_miss(&conn.roundtrip(&request.bytes()), "miss");
        assert_miss(&conn.roundtrip(&request.bytes()), "miss");
    }

    // `private`: kept for the key that asked, not for its project's others.
    let private = |key: &str| {
        Req::get("/v1/models?kind=private")
            .auth(key)
            .header(
                "x-mock-response-header",
                "Cache-Control: private, max-age=60",
            )
            .bytes()
    };
    assert_miss(&conn.roundtrip(&private(CLIENT_KEY)), "stored");
    assert_hit(&conn.roundtrip(&private(CLIENT_KEY)));
    assert_miss(
        &conn.roundtrip(&private("sk-client-same-project-2")),
        "stored",
    );
    // A project's default answers are shared by its keys.
    assert_miss(&conn.roundtrip(&models().bytes()), "stored");
    assert_hit(&conn.roundtrip(&models_for("sk-client-same-project-2").bytes()));
}

#[test]
fn request_no_cache_no_store_and_max_age_zero() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();
    let with = |value: &str| models().header("Cache-Control", value).bytes();
    // no-store: neither looked up nor stored.
    assert_miss(&conn.roundtrip(&with("no-store")), "bypass");
    assert_miss(&conn.roundtrip(&models().bytes()), "stored");
    assert_hit(&conn.roundtrip(&models().bytes()));
    // no-cache: not looked up, and the fresh answer replaces the entry.
    assert_miss(&conn.roundtrip(&with("no-cache")), "stored");
    // max-age=0 wants a fresh answer: a miss.
    assert_miss(&conn.roundtrip(&with("max-age=0")), "stored");
    assert_hit(&conn.roundtrip(&models().bytes()));
    // A max-age the entry is within is a hit.
    assert_hit(&conn.roundtrip(&with("max-age=600")));
    assert_eq!(upstream.requests(), 4);
}

#[test]
fn entries_expire() {
    let mock = Mock::start();
    let proxy = one_worker(&mock)
        .env("HTTP_CACHE_DEFAULT_TTL", "1s")
        .start();
    let mut conn = proxy.conn();
    let short = || {
        Req::get("/v1/models?short")
            .authed()
            .header("x-mock-response-header", "Cache-Control: max-age=1")
            .bytes()
    };
    assert_miss(&conn.roundtrip(&short()), "stored");
    assert_miss(&conn.roundtrip(&models().bytes()), "stored");
    assert_hit(&conn.roundtrip(&short()));
    assert_hit(&conn.roundtrip(&models().bytes()));
    // Both entries were stored before these hits were answered and live one
    // second, the shortest lifetime the cache has (it counts whole seconds).
    std::thread::sleep(Duration::from_secs(1));
    assert_miss(&conn.roundtrip(&short()), "stored");
    assert_miss(&conn.roundtrip(&models().bytes()), "stored");
}

#[test]
fn answers_over_the_object_limit_are_not_stored() {
    let mock = Mock::start();
    let proxy = one_worker(&mock)
        .env("HTTP_CACHE_MAX_OBJECT_BYTES", "64")
        .start();
    let mut conn = proxy.conn();
    let first = conn.roundtrip(&models().bytes());
    assert!(first.body.len() > 64);
    assert_miss(&first, "miss");
    assert_miss(&conn.roundtrip(&models().bytes()), "miss");
}

#[test]
fn the_cache_can_be_turned_off() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).env("HTTP_CACHE_ENABLED", "false").start();
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();
    for _ in 0..2 {
        let response = conn.roundtrip(&models().bytes());
        assert_eq!(cache_state(&response), (None, None));
    }
    assert_eq!(upstream.requests(), 2);
}

#[test]
fn tenants_do_not_see_each_others_answers() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let other = other_tenants_key(&proxy);
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();

    let mine = conn.roundtrip(&models().bytes());
    assert_miss(&mine, "stored");
    let theirs = conn.roundtrip(&models_for(other).bytes());
    assert_miss(&theirs, "stored");
    assert_ne!(
        mine.header("x-proxy-cache-key"),
        theirs.header("x-proxy-cache-key")
    );
    assert_eq!(upstream.requests(), 2);
    assert_hit(&conn.roundtrip(&models().bytes()));
    assert_hit(&conn.roundtrip(&models_for(other).bytes()));
    assert_eq!(upstream.requests(), 0);
    assert_eq!(
        header_values(&mock.last_request_headers(), "authorization"),
        vec!["Bearer sk-upstream-other-1"],
        "the other project's answer came with its own provider key"
    );

    // A `public` answer is shared by every tenant's identical request.
    let public = |key: &str| {
        Req::get("/v1/models?shared=1")
            .auth(key)
            .header(
                "x-mock-response-header",
                "Cache-Control: public, max-age=60",
            )
            .bytes()
    };
    let mut upstream = Upstream::of(&mock);
    assert_miss(&conn.roundtrip(&public(CLIENT_KEY)), "stored");
    assert_hit(&conn.roundtrip(&public(other)));
    assert_eq!(upstream.requests(), 1);
}

#[test]
fn etag_and_if_none_match_give_304() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut conn = proxy.conn();
    let get = || models().header("x-mock-response-header", "ETag: \"v1\"");
    let first = conn.roundtrip(&get().bytes());
    assert_miss(&first, "stored");
    assert_eq!(first.header("etag"), Some("\"v1\""));

    let not_modified = conn.roundtrip(&get().header("If-None-Match", "\"v1\"").bytes());
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert_eq!(not_modified.header("cache-status"), Some("conditional-hit"));
    assert_eq!(not_modified.header("x-proxy-cache"), Some("hit"));
    // Weak comparison, and lists.
    let weak = conn.roundtrip(&get().header("If-None-Match", "\"v0\", W/\"v1\"").bytes());
    assert_eq!(weak.status, 304);
    // Another tag: the whole answer.
    let changed = conn.roundtrip(&get().header("If-None-Match", "\"v2\"").bytes());
    assert_hit(&changed);
    assert_eq!(changed.body, first.body);
}

#[test]
fn hits_count_toward_the_key_limits_and_revocation_applies() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    proxy.create_token(json!({"token": "sk-client-two-requests", "max_requests": 2}));
    let mut upstream = Upstream::of(&mock);
    let mut conn = proxy.conn();
    let limited = || models_for("sk-client-two-requests").bytes();
    // The project's entry is there already: both requests are hits.
    assert_miss(&conn.roundtrip(&models().bytes()), "stored");
    assert_hit(&conn.roundtrip(&limited()));
    assert_hit(&conn.roundtrip(&limited()));
    conn.roundtrip(&limited())
        .assert_error(429, "max_requests_exceeded");
    assert_eq!(upstream.requests(), 1);

    let revoked = proxy.manage("DELETE", &format!("/manage/tokens/{CLIENT_KEY}"), None);
    assert!(revoked.status < 300, "{}", revoked.text());
    conn.roundtrip(&models().bytes())
        .assert_error(401, "key_revoked");
    conn.roundtrip(&models_for("sk-unknown-000000").bytes())
        .assert_error(401, "invalid_api_key");
    assert_eq!(upstream.requests(), 0);
}

#[test]
fn streamed_answers_are_stored_only_when_asked_and_whole() {
    let stream = |cut: Option<u32>| {
        let mut request = Req::post("/v1/chat/completions", chat_body(true, "stream me"))
            .authed()
            .header("Cache-Control", "public, max-age=60");
        if let Some(cut) = cut {
            request = request.header("x-mock-cut-after", cut.to_string());
        }
        request.bytes()
    };
    // Off by default.
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut conn = proxy.conn();
    let response = conn.roundtrip(&stream(None));
    assert_miss(&response, "miss");
    assert!(response.is_chunked());
    assert_miss(&conn.roundtrip(&stream(None)), "miss");
    drop(proxy);

    let mock = Mock::start();
    let proxy = one_worker(&mock)
        .env("HTTP_CACHE_STREAM_RESPONSES", "true")
        .start();
    let mut upstream = Upstream::of(&mock);
    // A stream cut short is not kept.
    let mut cut = proxy.conn();
    cut.send(&stream(Some(3)));
    let head = cut.read_head().expect("a head");
    assert_eq!(head.status, 200);
    let _ = cut.read_until_close();
    let mut conn = proxy.conn();
    let first = conn.roundtrip(&stream(None));
    assert_miss(&first, "stored");
    let payloads = sse_data(&first.body);
    assert_complete_stream(&payloads, 16);
    let hit = conn.roundtrip(&stream(None));
    assert_hit(&hit);
    assert!(!hit.is_chunked(), "a stored stream goes out whole");
    assert_eq!(hit.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse_data(&hit.body), payloads);
    assert_eq!(upstream.requests(), 2);
}

#[test]
fn purges_reach_every_worker() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    // The kernel spreads connections over the workers: with 16, both
    // workers serve some (all but 2 in 65,536 times).
    let mut conns: Vec<Conn> = (0..16).map(|_| proxy.conn()).collect();
    let get = |target: &str| Req::get(target).authed().bytes();
    let targets = ["/v1/models?page=1&x=a", "/v1/models?page=2", "/v1/models"];
    let fill = |conns: &mut Vec<Conn>| {
        for (n, conn) in conns.iter_mut().enumerate() {
            for target in targets {
                // Stored by the first connection's worker, a hit on both.
                let response = conn.roundtrip(&get(target));
                let expected = if n == 0 { "miss" } else { "hit" };
                assert_eq!(
                    response.header("x-proxy-cache"),
                    Some(expected),
                    "{n}: {:?}",
                    response.headers
                );
            }
        }
    };
    fill(&mut conns);

    // Exact: the query in any order, or a full URL.
    let purged = proxy.manage(
        "POST",
        "/manage/cache/purge",
        Some(json!({"url": "http://proxy.test/v1/models?x=a&page=1"})),
    );
    assert_eq!(purged.status, 200, "{}", purged.text());
    // One answer, held by both workers' shards, counted once.
    assert_eq!(purged.json()["purged"], json!(1), "{}", purged.text());
    // HEAD looks up without storing: every worker's shard is probed as it is.
    for conn in conns.iter_mut() {
        assert_eq!(probe(conn, targets[0]).as_deref(), Some("miss"));
        assert_eq!(probe(conn, targets[1]).as_deref(), Some("hit"));
    }

    // Prefix: both pages, not the path without a query.
    let purged = proxy.manage(
        "POST",
        "/manage/cache/purge",
        Some(json!({"prefix": "/v1/models?"})),
    );
    assert_eq!(purged.status, 200, "{}", purged.text());
    // The second page: the first is gone already.
    assert_eq!(purged.json()["purged"], json!(1), "{}", purged.text());
    for conn in conns.iter_mut() {
        for (target, state) in [
            (targets[0], "miss"),
            (targets[1], "miss"),
            (targets[2], "hit"),
        ] {
            assert_eq!(probe(conn, target).as_deref(), Some(state), "{target}");
        }
    }
}

/// Whether a HEAD request for `target` is a hit or a miss. HEAD looks up
/// without storing; the mock's provider does not take HEAD, so a miss is
/// refused with 405 (a hit never reaches it).
/// The client key of a second project (another tenant) made on `proxy`.
pub(crate) fn other_tenants_key(proxy: &Proxy) -> &'static str {
    let key = "sk-client-other-project";
    let project = proxy.create_project("other", "sk-upstream-other-1");
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({"project_id": project, "token": key})),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    key
}

pub(crate) fn probe(conn: &mut Conn, target: &str) -> Option<String> {
    conn.send(&Req::new("HEAD", target).authed().bytes());
    let response = conn.read_head_response().expect("HEAD response");
    match response.header("x-proxy-cache") {
        Some(state) => Some(state.to_string()),
        None if response.status == 405 => Some("miss".into()),
        None => None,
    }
}

#[test]
fn purging_needs_the_management_token() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let body = json!({"prefix": "/"}).to_string();
    let without = Req::post("/manage/cache/purge", body.clone());
    proxy
        .call(without)
        .assert_error(401, "invalid_management_token");
    // A key without a user has no role that may purge.
    let with_client_key = Req::post("/manage/cache/purge", body).authed();
    proxy
        .call(with_client_key)
        .assert_error(403, "role_forbidden");
    let bad = proxy.manage(
        "POST",
        "/manage/cache/purge",
        Some(json!({"url": "/a", "prefix": "/"})),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    let wrong_method = proxy.manage("GET", "/manage/cache/purge", None);
    assert_eq!(wrong_method.status, 405);
}

#[test]
fn routed_requests_are_cached_after_their_checks() {
    let project_mock = Mock::start();
    let deployment = Mock::start();
    let proxy = one_worker(&project_mock).start();
    let body = json!({
        "model_name": "fast",
        "litellm_params": {
            "model": "openai/fast-upstream",
            "api_base": format!("{}/v1", deployment.url()),
            "api_key": "sk-deployment-of-fast",
        },
    });
    let response = proxy.manage("POST", "/model/new", Some(body));
    assert_eq!(response.status, 200, "{}", response.text());
    let restricted = proxy.manage(
        "POST",
        "/key/generate",
        Some(json!({"models": ["slow"], "key": "sk-client-only-slow"})),
    );
    assert_eq!(restricted.status, 200, "{}", restricted.text());
    let ask = |key: &str| {
        Req::post(
            "/v1/chat/completions",
            json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )
        .auth(key)
        .header("Cache-Control", "public, max-age=60")
        .bytes()
    };
    let mut upstream = Upstream::of(&deployment);
    let mut conn = proxy.conn();
    let first = conn.roundtrip(&ask(CLIENT_KEY));
    assert_miss(&first, "stored");
    assert!(first.header("x-litellm-model-id").is_some());
    let hit = conn.roundtrip(&ask(CLIENT_KEY));
    assert_hit(&hit);
    assert_eq!(hit.json()["model"], first.json()["model"]);
    assert_eq!(upstream.requests(), 1);
    // A key that may not use the model is refused before the cache.
    conn.roundtrip(&ask(restricted.json()["key"].as_str().unwrap()))
        .assert_error(401, "key_model_access_denied");
}

#[test]
fn manage_cache_purge_from_the_command_line() {
    let mock = Mock::start();
    let proxy = one_worker(&mock).start();
    let mut conn = proxy.conn();
    for target in ["/v1/models?page=1", "/v1/models?page=2"] {
        conn.roundtrip(&Req::get(target).authed().bytes());
        assert_eq!(probe(&mut conn, target).as_deref(), Some("hit"));
    }
    let url = proxy.url();
    let manage = |args: &[&str]| {
        Cli::manage(args.iter().copied())
            .args([
                "--manage-api-base-url",
                &url,
                "--management-token",
                MANAGEMENT_TOKEN,
            ])
            .run()
    };
    let exact = manage(&["cache", "purge", "--url", "/v1/models?page=1"]);
    assert_eq!(
        exact.ok().trim(),
        "Purged 1 cached answer(s) for /v1/models?page=1"
    );
    assert_eq!(
        probe(&mut conn, "/v1/models?page=1").as_deref(),
        Some("miss")
    );
    assert_eq!(
        probe(&mut conn, "/v1/models?page=2").as_deref(),
        Some("hit")
    );
    let prefix = manage(&["cache", "purge", "--prefix", "/v1/", "--json"]);
    let answer: serde_json::Value = serde_json::from_str(prefix.ok()).unwrap();
    assert_eq!(answer["purged"], 1);
    assert_eq!(answer["mode"], "prefix");
    assert_eq!(
        probe(&mut conn, "/v1/models?page=2").as_deref(),
        Some("miss")
    );
    // One of the two is required, and not both: a usage error (exit 1).
    manage(&["cache", "purge"]).assert_code(1);
    manage(&["cache", "purge", "--url", "/a", "--prefix", "/"]).assert_code(1);
}
