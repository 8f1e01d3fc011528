//! The request path with real keys from the store: one status and code per
//! rejection, the provider key swap, revocation across workers, limits that
//! hold exactly under concurrency and across `kill -9`, encryption at rest,
//! secrets kept out of the log, and the schema version check.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::common::store::*;
use crate::common::*;
use serde_json::json;

/// The `Authorization` values the mock received with its last `/v1` request.
fn upstream_authorization(mock: &Mock) -> Vec<String> {
    let headers = mock.last_request_headers();
    header_values(&headers, "authorization")
        .into_iter()
        .map(String::from)
        .collect()
}

/// A proxy in front of `mock` on the data directory `db`.
fn on_db(mock: &Mock, db: &Path) -> ProxyBuilder {
    Proxy::for_mock(mock)
        .arg("--db")
        .arg(db.display().to_string())
}

// --- one code per rejection ---------------------------------------------------

#[test]
fn missing_and_unknown_keys_are_401() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();
    let body = chat_body(false, "hi");
    let missing = [
        Req::post("/v1/chat/completions", body.clone()),
        Req::post("/v1/chat/completions", body.clone()).header("Authorization", ""),
        Req::post("/v1/chat/completions", body.clone()).header("Authorization", "Bearer"),
        Req::post("/v1/chat/completions", body.clone()).header("Authorization", "Bearer   "),
        Req::post("/v1/chat/completions", body.clone()).header("Authorization", CLIENT_KEY),
        Req::post("/v1/chat/completions", body.clone())
            .header("Authorization", format!("Basic {CLIENT_KEY}")),
    ];
    for request in missing {
        send_on(&mut conn, &request).assert_error(401, "missing_api_key");
    }
    for key in ["sk-unknown-key-000000", UPSTREAM_KEY] {
        send_on(&mut conn, &chat_with(key)).assert_error(401, "invalid_api_key");
    }
    // The master key is a key for the registered models only (it has no
    // project): with none registered, nothing goes upstream with it.
    send_on(&mut conn, &chat_with(MANAGEMENT_TOKEN)).assert_error(403, "key_without_project");
    assert!(
        mock.last_request().is_null(),
        "nothing may reach the upstream"
    );
    // The scheme is case-insensitive; the same connection still serves.
    let response = send_on(
        &mut conn,
        &Req::post("/v1/chat/completions", body)
            .header("Authorization", format!("bearer {CLIENT_KEY}")),
    );
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn revoked_key_is_401_key_revoked() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);

    // PATCH is_active=false, then true again.
    let path = format!("/manage/tokens/{CLIENT_KEY}");
    let response = proxy.manage("PATCH", &path, Some(json!({"is_active": false})));
    assert_eq!(response.status, 200, "{}", response.text());
    send_on(&mut conn, &chat(false)).assert_error(401, "key_revoked");
    proxy.call(chat(false)).assert_error(401, "key_revoked");
    let requests = mock.stat("requests");
    let response = proxy.manage("PATCH", &path, Some(json!({"is_active": true})));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);
    assert_eq!(
        mock.stat("requests"),
        requests + 2,
        "one chat, one stat call"
    );

    // DELETE.
    let other = proxy.create_token(json!({}));
    let other_secret = other["token"].as_str().unwrap();
    assert_eq!(send_on(&mut conn, &chat_with(other_secret)).status, 200);
    let response = proxy.manage("DELETE", &format!("/manage/tokens/{other_secret}"), None);
    assert_eq!(response.status, 204);
    send_on(&mut conn, &chat_with(other_secret)).assert_error(401, "key_revoked");
    // Other keys of the project are not affected.
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);
}

#[test]
fn expired_key_is_401_key_expired() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let token = proxy.create_token(json!({"duration": "100ms"}));
    // The lifetime began before the answer arrived, so it ends by then.
    let ended_by = SystemTime::now() + Duration::from_millis(100);
    let secret = token["token"].as_str().unwrap();
    let expires = humantime::parse_rfc3339(token["expires_at"].as_str().unwrap()).unwrap();
    // The view has whole seconds: the real expiry is less than a second later.
    sleep_until_time(ended_by.min(expires + Duration::from_secs(1)));
    let requests = mock.stat("requests");
    proxy
        .call(chat_with(secret))
        .assert_error(401, "key_expired");
    assert_eq!(mock.stat("requests"), requests + 1, "only the stat call");
    // Still listed as active: expiry is not revocation.
    let shown = proxy
        .manage("GET", &format!("/manage/tokens/{secret}"), None)
        .json();
    assert_eq!(shown["is_active"], true);
    // A new lifetime makes it usable again.
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{secret}"),
        Some(json!({"duration": "1h"})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(proxy.call(chat_with(secret)).status, 200);
    // A revoked key that has also expired says revoked.
    let token = proxy.create_token(json!({"duration": "100ms"}));
    let ended_by = SystemTime::now() + Duration::from_millis(100);
    let secret = token["token"].as_str().unwrap();
    proxy.manage("DELETE", &format!("/manage/tokens/{secret}"), None);
    sleep_until_time(ended_by);
    proxy
        .call(chat_with(secret))
        .assert_error(401, "key_revoked");
}

#[test]
fn inactive_project_is_403_until_reactivated() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let second = proxy.create_token(json!({}));
    let second = second["token"].as_str().unwrap();
    let other = proxy.create_project("other", "sk-other-upstream-000000");
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({"project_id": other, "token": "sk-other-client-00000003"})),
    );
    assert_eq!(response.status, 201);
    let mut conn = proxy.conn();
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);

    let project = format!("/manage/projects/{}", proxy.project_id);
    let response = proxy.manage("PATCH", &project, Some(json!({"is_active": false})));
    assert_eq!(response.status, 200, "{}", response.text());
    let requests = mock.stat("requests");
    for key in [CLIENT_KEY, second] {
        send_on(&mut conn, &chat_with(key)).assert_error(403, "project_inactive");
    }
    assert_eq!(mock.stat("requests"), requests + 1, "only the stat call");
    // The keys themselves stay active; the other project is unaffected.
    let token = proxy
        .manage("GET", &format!("/manage/tokens/{CLIENT_KEY}"), None)
        .json();
    assert_eq!(token["is_active"], true);
    assert_eq!(
        send_on(&mut conn, &chat_with("sk-other-client-00000003")).status,
        200
    );

    let response = proxy.manage("PATCH", &project, Some(json!({"is_active": true})));
    assert_eq!(response.status, 200);
    for key in [CLIENT_KEY, second] {
        assert_eq!(send_on(&mut conn, &chat_with(key)).status, 200);
    }
}

#[test]
fn max_requests_reached_is_429() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let token = proxy.create_token(json!({"max_requests": 3}));
    let secret = token["token"].as_str().unwrap();
    let id = token["id"].as_str().unwrap();
    let mut conn = proxy.conn();
    for _ in 0..3 {
        let response = send_on(&mut conn, &chat_with(secret));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let requests = mock.stat("requests");
    for _ in 0..3 {
        let response = send_on(&mut conn, &chat_with(secret));
        response.assert_error(429, "max_requests_exceeded");
        assert_eq!(response.json()["error"]["type"], "insufficient_quota");
        // Waiting does not help: the SDKs are told not to retry.
        assert_eq!(response.header("x-should-retry"), Some("false"));
        assert!(!response.closes());
    }
    // A fresh connection (maybe another worker) is refused too.
    for _ in 0..4 {
        proxy
            .call(chat_with(secret))
            .assert_error(429, "max_requests_exceeded");
    }
    assert_eq!(mock.stat("requests"), requests + 1, "only the stat call");
    // Other keys are not limited by it.
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);
    let shown = wait_request_count(&proxy, id, 3, Duration::from_secs(5));
    assert_eq!(shown["request_count"], 3, "{shown}");
    assert!(shown["last_used_at"].is_string(), "{shown}");

    // Raising the limit allows exactly the difference.
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{id}"),
        Some(json!({"max_requests": 5})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let mut served = 0;
    for _ in 0..6 {
        let response = send_on(&mut conn, &chat_with(secret));
        match response.status {
            200 => served += 1,
            _ => response.assert_error(429, "max_requests_exceeded"),
        }
    }
    assert_eq!(served, 2);
    // No limit at all.
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{id}"),
        Some(json!({"max_requests": null})),
    );
    assert_eq!(response.status, 200);
    for _ in 0..3 {
        assert_eq!(send_on(&mut conn, &chat_with(secret)).status, 200);
    }
}

// --- the provider key -------------------------------------------------------------

#[test]
fn the_projects_provider_key_replaces_the_client_key() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);
    assert_eq!(
        upstream_authorization(&mock),
        vec![format!("Bearer {UPSTREAM_KEY}")]
    );
    let headers = mock.last_request_headers();
    assert!(
        headers.iter().all(|(_, v)| !v.contains(CLIENT_KEY)),
        "the client key went upstream: {headers:?}"
    );

    // Another project, another provider key.
    let other = proxy.create_project("other", "sk-other-upstream-5a5a5a5a");
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({"project_id": other, "token": "sk-other-client-00000004"})),
    );
    assert_eq!(response.status, 201);
    assert_eq!(
        send_on(&mut conn, &chat_with("sk-other-client-00000004")).status,
        200
    );
    assert_eq!(
        upstream_authorization(&mock),
        vec!["Bearer sk-other-upstream-5a5a5a5a".to_string()]
    );

    // A new provider key takes effect on the next request, on every connection.
    let rotated = "sk-upstream-rotated-c0ffee11";
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/projects/{}", proxy.project_id),
        Some(json!({"openai_api_key": rotated})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);
    assert_eq!(
        upstream_authorization(&mock),
        vec![format!("Bearer {rotated}")]
    );
    for _ in 0..4 {
        assert_eq!(proxy.call(chat(true)).status, 200);
        assert_eq!(
            upstream_authorization(&mock),
            vec![format!("Bearer {rotated}")]
        );
    }
}

// --- revocation on every worker ----------------------------------------------------

/// One way to revoke a key: given the proxy, the key's id and its secret.
type Revoke = fn(&Proxy, &str, &str);

#[test]
fn revocation_reaches_every_worker_before_the_call_returns() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    let mut conns = conn_per_worker(&proxy, 2);

    let revocations: [(&str, Revoke); 3] = [
        ("PATCH is_active=false", |proxy, id, _| {
            let response = proxy.manage(
                "PATCH",
                &format!("/manage/tokens/{id}"),
                Some(json!({"is_active": false})),
            );
            assert_eq!(response.status, 200, "{}", response.text());
        }),
        ("DELETE the token", |proxy, _, secret| {
            let response = proxy.manage("DELETE", &format!("/manage/tokens/{secret}"), None);
            assert_eq!(response.status, 204, "{}", response.text());
        }),
        ("revoke the project's tokens", |proxy, _, _| {
            let path = format!("/manage/projects/{}/tokens/revoke", proxy.project_id);
            let response = proxy.manage("POST", &path, None);
            assert_eq!(response.status, 200, "{}", response.text());
        }),
    ];
    for (how, revoke) in revocations {
        let token = proxy.create_token(json!({}));
        let (id, secret) = (
            token["id"].as_str().unwrap(),
            token["token"].as_str().unwrap(),
        );
        // Both workers have served the key (and hold it in their caches).
        for conn in conns.iter_mut() {
            for _ in 0..2 {
                let response = send_on(conn, &chat_with(secret));
                assert_eq!(response.status, 200, "{how}: {}", response.text());
            }
        }
        revoke(&proxy, id, secret);
        for (worker, conn) in conns.iter_mut().enumerate() {
            let response = send_on(conn, &chat_with(secret));
            assert_eq!(
                response.status,
                401,
                "{how}: worker {worker} still accepts the key: {}",
                response.text()
            );
            response.assert_error(401, "key_revoked");
        }
    }
    // The connections were kept and are still on their workers.
    for (worker, conn) in conns.iter_mut().enumerate() {
        let health = send_on(conn, &Req::get("/health")).json();
        assert_eq!(health["worker"], worker as u64);
    }
}

// --- limits under load and across a crash ------------------------------------------

#[test]
fn max_requests_is_exact_under_concurrency() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    let token = proxy.create_token(json!({"max_requests": 50}));
    let (id, secret) = (
        token["id"].as_str().unwrap(),
        token["token"].as_str().unwrap(),
    );
    let before = mock.stat("requests");
    let result = load_until_limited(proxy.addr, secret, 16);
    assert!(
        result.unexpected.is_empty(),
        "unexpected answers: {:?}",
        result.unexpected
    );
    assert_eq!(result.limited, 16, "every client ends with a 429");
    assert_eq!(result.ok, 50, "successes under concurrent load");
    // Exactly 50 chats reached the upstream (and one stat call).
    assert_eq!(mock.stat("requests"), before + 51);
    let shown = wait_request_count(&proxy, id, 50, Duration::from_secs(5));
    assert_eq!(shown["request_count"], 50, "{shown}");
    // Once reported, it stays refused.
    proxy
        .call(chat_with(secret))
        .assert_error(429, "max_requests_exceeded");
}

#[test]
fn max_requests_holds_across_kill_9() {
    let data = TempDir::new("crash-db");
    let db = data.path().join("data");
    // Some upstream latency keeps the load slow enough to kill it halfway.
    let mock = Mock::builder().args(["--latency-ms", "10"]).start();
    let mut proxy = on_db(&mock, &db).workers(2).start();
    let token = proxy.create_token(json!({"max_requests": 200, "alias": "crash"}));
    let (id, secret) = (
        token["id"].as_str().unwrap().to_string(),
        token["token"].as_str().unwrap().to_string(),
    );
    let project_id = proxy.project_id.clone();

    // Load from 8 clients; kill the server once about 100 have succeeded.
    let ok = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (ok, stop, secret, addr) = (ok.clone(), stop.clone(), secret.clone(), proxy.addr);
        std::thread::spawn(move || load(addr, &secret, 8, ok, stop))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ok.load(Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let reached = ok.load(Ordering::SeqCst) >= 100;
    proxy.proc.signal("KILL");
    stop.store(true, Ordering::SeqCst);
    let before = loader.join().expect("load threads");
    eprintln!("before the crash: {before:?}");
    assert!(reached, "the load made no progress: {before:?}");
    assert_eq!(before.limited, 0, "no 429 below the limit: {before:?}");
    let status = proxy.proc.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.code().is_none()),
        "killed by a signal: {status:?}"
    );
    drop(proxy);

    // A new server on the same data directory.
    let proxy = on_db(&mock, &db).unseeded().workers(2).start();
    let response = proxy.manage("GET", &format!("/manage/projects/{project_id}"), None);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["name"], "test");
    let shown = proxy.manage("GET", &format!("/manage/tokens/{id}"), None);
    assert_eq!(shown.status, 200, "{}", shown.text());
    let shown = shown.json();
    assert_eq!(shown["alias"], "crash");
    assert_eq!(shown["max_requests"], 200);
    assert_eq!(shown["is_active"], true);
    let response = proxy.call(chat(false));
    assert_eq!(
        response.status,
        200,
        "the seeded key survives: {}",
        response.text()
    );

    let after = load_until_limited(proxy.addr, &secret, 8);
    assert!(
        after.unexpected.is_empty(),
        "unexpected answers after restart: {:?}",
        after.unexpected
    );
    assert_eq!(after.limited, 8);
    let total = before.ok + after.ok;
    eprintln!("after the restart: {after:?}; total {total}");
    assert!(
        total <= 200,
        "the limit was exceeded: {} before the crash + {} after = {total}",
        before.ok,
        after.ok
    );
    assert!(
        total >= 150,
        "too much quota lost in the crash: {} before + {} after = {total}",
        before.ok,
        after.ok
    );
}

// --- encryption at rest --------------------------------------------------------------

const ENCRYPTION_KEY_HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";
/// The same 32 bytes as base64.
const ENCRYPTION_KEY_BASE64: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";
const OTHER_ENCRYPTION_KEY: &str =
    "2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn provider_keys_are_encrypted_at_rest() {
    let data = TempDir::new("sealed-db");
    let db = data.path().join("data");
    let provider_key = "sk-provider-DISTINCTIVE-7e1f0a9b3c5d";
    let rotated_key = "sk-provider-ROTATED-SECRET-44aa55bb";
    let mock = Mock::start();
    let proxy = on_db(&mock, &db)
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY_HEX)
        .upstream_key(provider_key)
        .start();
    assert_eq!(proxy.call(chat(false)).status, 200);
    assert_eq!(
        upstream_authorization(&mock),
        vec![format!("Bearer {provider_key}")]
    );
    let other = proxy.create_project("other", rotated_key);
    let token = proxy.create_token(json!({}));
    let secret = token["token"].as_str().unwrap().to_string();

    let file = db.join("data.mdb");
    for needle in [
        provider_key,
        rotated_key,
        CLIENT_KEY,
        &secret,
        MANAGEMENT_TOKEN,
    ] {
        assert!(
            !file_contains(&file, needle),
            "{needle:?} is stored in the clear in {}",
            file.display()
        );
    }
    // The project names are stored, so the file is the right one.
    assert!(file_contains(&file, "other"));

    proxy.stop();

    // Another key: refused at startup, in one line that says why.
    let exited = on_db(&mock, &db)
        .unseeded()
        .env("ENCRYPTION_KEY", OTHER_ENCRYPTION_KEY)
        .run_to_exit();
    exited.assert_one_line(1, "ENCRYPTION_KEY");
    assert!(!exited.stderr.contains(OTHER_ENCRYPTION_KEY));
    // No key at all: refused too.
    let exited = on_db(&mock, &db).unseeded().run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("ENCRYPTION_KEY"),
        "{}",
        exited.stderr
    );

    // The same key (written as base64) opens it; the keys still work.
    let proxy = on_db(&mock, &db)
        .unseeded()
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY_BASE64)
        .start();
    assert_eq!(proxy.call(chat(false)).status, 200);
    assert_eq!(
        upstream_authorization(&mock),
        vec![format!("Bearer {provider_key}")]
    );
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({"project_id": other, "token": "sk-other-client-00000005"})),
    );
    assert_eq!(response.status, 201);
    assert_eq!(
        proxy.call(chat_with("sk-other-client-00000005")).status,
        200
    );
    assert_eq!(
        upstream_authorization(&mock),
        vec![format!("Bearer {rotated_key}")]
    );
    assert_eq!(proxy.call(chat_with(&secret)).status, 200);
}

#[test]
fn encryption_key_settings_are_checked_at_startup() {
    let mock = Mock::start();
    let exited = Proxy::for_mock(&mock)
        .unseeded()
        .env("REQUIRE_ENCRYPTION_KEY", "true")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("ENCRYPTION_KEY"),
        "{}",
        exited.stderr
    );

    let exited = Proxy::for_mock(&mock)
        .unseeded()
        .env("ENCRYPTION_KEY", "too-short")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("ENCRYPTION_KEY"),
        "{}",
        exited.stderr
    );
    assert!(!exited.stderr.contains("too-short"), "{}", exited.stderr);

    // With a key, the requirement is met.
    let proxy = Proxy::for_mock(&mock)
        .env("REQUIRE_ENCRYPTION_KEY", "true")
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY_HEX)
        .start();
    assert_eq!(proxy.call(chat(false)).status, 200);
}

#[test]
fn plain_storage_is_allowed_without_encryption_key() {
    let data = TempDir::new("plain-db");
    let db = data.path().join("data");
    let mock = Mock::start();
    let mut proxy = on_db(&mock, &db).start();
    assert_eq!(proxy.call(chat(false)).status, 200);
    proxy.proc.signal("TERM");
    assert!(proxy.proc.wait_exit(Duration::from_secs(20)).is_some());
    drop(proxy);
    // Adding a key later keeps the existing projects usable.
    let proxy = on_db(&mock, &db)
        .unseeded()
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY_HEX)
        .start();
    assert_eq!(proxy.call(chat(false)).status, 200);
    assert_eq!(
        upstream_authorization(&mock),
        vec![format!("Bearer {UPSTREAM_KEY}")]
    );
}

// --- secrets in the log -----------------------------------------------------------------

#[test]
fn secrets_never_reach_the_log() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).env("LOG_LEVEL", "debug").start();
    let token = proxy.create_token(json!({"max_requests": 2}));
    let secret = token["token"].as_str().unwrap().to_string();
    let new_provider_key = "sk-provider-logcheck-9d8c7b6a";

    let mut conn = proxy.conn();
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);
    assert_eq!(send_on(&mut conn, &chat(true)).status, 200);
    for _ in 0..3 {
        send_on(&mut conn, &chat_with(&secret));
    }
    send_on(&mut conn, &chat_with(&format!("{secret}x"))).assert_error(401, "invalid_api_key");
    proxy.manage("GET", &format!("/manage/tokens/{secret}"), None);
    proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{secret}"),
        Some(json!({"alias": "logged?"})),
    );
    proxy.manage(
        "PATCH",
        &format!("/manage/projects/{}", proxy.project_id),
        Some(json!({"openai_api_key": new_provider_key})),
    );
    assert_eq!(send_on(&mut conn, &chat(false)).status, 200);
    proxy.manage("DELETE", &format!("/manage/tokens/{secret}"), None);
    send_on(&mut conn, &chat_with(&secret)).assert_error(401, "key_revoked");
    proxy
        .call(Req::get("/manage/projects").auth(CLIENT_KEY))
        .assert_error(403, "role_forbidden");

    assert!(
        wait_until(Duration::from_secs(5), || {
            let log = proxy.log();
            log.contains("request served") && log.contains("management request")
        }),
        "debug logging is on: {}",
        proxy.log()
    );
    let log = proxy.log();
    for (what, needle) in [
        ("the seeded client key", CLIENT_KEY),
        ("a generated client key", secret.as_str()),
        ("the provider key", UPSTREAM_KEY),
        ("the new provider key", new_provider_key),
        ("the management token", MANAGEMENT_TOKEN),
    ] {
        assert!(!log.contains(needle), "{what} is in the log:\n{log}");
    }
}

// --- the schema version ----------------------------------------------------------------

#[test]
fn a_store_from_a_newer_version_is_refused() {
    let data = TempDir::new("schema-db");
    let db = data.path().join("data");
    {
        let store = llm_proxy::store::Store::open(&db, None).expect("open a new store");
        assert_eq!(
            store.schema_version().unwrap(),
            llm_proxy::store::SCHEMA_VERSION
        );
        store.set_schema_version_for_tests(99).unwrap();
    }
    let mock = Mock::start();
    let exited = on_db(&mock, &db).unseeded().run_to_exit();
    exited.assert_one_line(1, "99");
    assert!(exited.stderr.contains("upgrade"), "{}", exited.stderr);

    // The library refuses it as well.
    let reopened = llm_proxy::store::Store::open(&db, None);
    assert!(
        matches!(
            reopened,
            Err(llm_proxy::store::StoreError::TooNew { found: 99, .. })
        ),
        "{reopened:?}"
    );
}

/// How long a worker answers 429 for a key whose quota it found used up
/// before it asks the ledger again (the proxy's lease idle time).
const USED_UP_MEMORY: Duration = Duration::from_secs(1);

/// Any management write makes the workers hand back their leases; the quota
/// handed back must be usable at once, not refused with a 429 until the
/// next usage report.
#[test]
fn unrelated_management_writes_do_not_cause_early_429s() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(1).start();
    let token = proxy.create_token(json!({"max_requests": 20}));
    let secret = token["token"].as_str().unwrap();
    let mut conn = proxy.conn();
    // Successes until the first 429.
    let serve_until_limited = |conn: &mut Conn| -> usize {
        for served in 0..40 {
            let response = send_on(conn, &chat_with(secret));
            if response.status == 429 {
                response.assert_error(429, "max_requests_exceeded");
                return served;
            }
            assert_eq!(response.status, 200, "{}", response.text());
        }
        panic!("no 429 after 40 requests");
    };
    assert_eq!(send_on(&mut conn, &chat_with(secret)).status, 200);
    // A write that has nothing to do with this key.
    proxy.create_project("unrelated", "sk-unrelated-upstream-0000");
    let at_first_429 = 1 + serve_until_limited(&mut conn);
    let refused_at = Instant::now();
    // Quota that was held back becomes usable after the next usage report
    // (the one that shows every request served), once the worker has
    // stopped remembering the key as used up (a second after the 429).
    wait_request_count(&proxy, secret, at_first_429 as u64, Duration::from_secs(5));
    sleep_until(refused_at + USED_UP_MEMORY);
    let served = at_first_429 + serve_until_limited(&mut conn);
    assert!(served <= 20, "the limit was exceeded: {served} served");
    assert_eq!(
        at_first_429, 20,
        "429 max_requests_exceeded after {at_first_429} of 20 requests \
         ({served} served in the end)"
    );
}

/// A worker holds at most one lease of a key at a time: requests that find
/// its lease empty together must not each take a lease of their own. Then a
/// crash loses at most one lease (64 requests) per worker, as the ledger's
/// design says, however many requests were in flight.
#[test]
fn a_crash_loses_at_most_one_lease_per_worker() {
    const MAX: usize = 1000;
    const MAX_LEASE: usize = 64;
    const BURST: usize = 16;
    let data = TempDir::new("lease-db");
    let db = data.path().join("data");
    let mock = Mock::start();
    let mut proxy = on_db(&mock, &db).workers(1).start();
    let token = proxy.create_token(json!({"max_requests": MAX}));
    let secret = token["token"].as_str().unwrap().to_string();

    // One burst of concurrent first requests, all answered before the crash.
    let barrier = Arc::new(std::sync::Barrier::new(BURST));
    let clients: Vec<_> = (0..BURST)
        .map(|_| {
            let (barrier, secret) = (barrier.clone(), secret.clone());
            let mut conn = proxy.conn();
            std::thread::spawn(move || {
                barrier.wait();
                send_on(&mut conn, &chat_with(&secret)).status
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    proxy.proc.signal("KILL");
    proxy.proc.wait_exit(Duration::from_secs(10));
    drop(proxy);

    let proxy = on_db(&mock, &db).unseeded().workers(1).start();
    let after = load_until_limited(proxy.addr, &secret, 4);
    assert!(after.unexpected.is_empty(), "{:?}", after.unexpected);
    let total = BURST + after.ok;
    assert!(total <= MAX, "the limit was exceeded: {total}");
    assert!(
        total >= MAX - MAX_LEASE,
        "{} of {MAX} requests lost in a crash with nothing in flight: \
         {BURST} served before it, {} after; at most one lease ({MAX_LEASE}) may be lost",
        MAX - total,
        after.ok
    );
}
