//! The LiteLLM-compatible management API as a whole, against the real
//! server and a real data directory: readiness, who may call what (the
//! master-key routes, the model listings' virtual keys, no
//! `MANAGEMENT_TOKEN`), wrong methods and unknown paths with their status
//! and envelope (`code` the status as a string, `type` LiteLLM's, `param`
//! the field), secrets sealed at rest with `ENCRYPTION_KEY`, and records
//! surviving a restart. Models, credentials, keys and users have their own
//! files (`litellm_models.rs`, `litellm_credentials.rs`, `litellm_keys.rs`,
//! `litellm_users.rs`).

use crate::common::litellm::*;
use crate::common::store::*;
use crate::common::*;
use serde_json::json;

/// 32 bytes in hex, as `ENCRYPTION_KEY` takes them.
const ENCRYPTION_KEY_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

// --- health, access, methods --------------------------------------------------

#[test]
fn readiness_needs_no_key_and_reports_the_version() {
    let mock = Mock::start();
    let proxy = start_empty(&mock);
    for key in [None, Some("sk-not-a-key-at-all"), Some(MANAGEMENT_TOKEN)] {
        let body = ok(raw(&proxy, "GET", "/health/readiness", "", key));
        assert_eq!(
            body,
            json!({
                "status": "healthy",
                "db": "connected",
                "version": env!("CARGO_PKG_VERSION"),
                "litellm_version": env!("CARGO_PKG_VERSION"),
            })
        );
    }
    let mut conn = proxy.conn();
    conn.send(&Req::new("HEAD", "/health/readiness").bytes());
    let head = conn.read_head_response().unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let response = raw(&proxy, "POST", "/health/readiness", "{}", None);
    assert_lite_error(&response, 405, "bad_request_error", None);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

/// Every route that only the master key (or a user's key with a role) may call.
fn master_routes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("POST", "/model/new"),
        ("POST", "/model/update"),
        ("POST", "/model/delete"),
        ("GET", "/credentials"),
        ("POST", "/credentials"),
        ("GET", "/credentials/by_name/shared"),
        ("DELETE", "/credentials/shared"),
        ("POST", "/key/generate"),
        ("GET", "/key/info?key=x"),
        ("GET", "/key/list"),
        ("POST", "/key/update"),
        ("POST", "/key/block"),
        ("POST", "/key/unblock"),
        ("POST", "/key/delete"),
        ("POST", "/key/regenerate"),
        ("POST", "/key/x/regenerate"),
        ("POST", "/user/new"),
        ("GET", "/user/list"),
        ("GET", "/user/info?user_id=x"),
        ("POST", "/user/update"),
        ("POST", "/user/delete"),
    ]
}

#[test]
fn master_routes_refuse_missing_wrong_and_userless_keys() {
    let (_mock, proxy) = start();
    let id = add_model(&proxy, "gpt-x", "gpt-4o");
    ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "shared", "credential_values": {"api_key": "sk-shared-000111"}}),
    ));
    let virtual_key = secret(&generate(&proxy, json!({"project_id": proxy.project_id})));
    let wrong = format!("{MANAGEMENT_TOKEN}x");
    let body = json!({"id": id, "key": virtual_key, "user_ids": ["x"], "keys": [virtual_key],
        "model_name": "intruder", "litellm_params": {"model": "x"},
        "credential_name": "intruder", "credential_values": {"api_key": "x"}})
    .to_string();
    for (method, path) in master_routes() {
        for key in [None, Some(wrong.as_str())] {
            let response = raw(&proxy, method, path, &body, key);
            let message = assert_lite_error(&response, 401, "auth_error", None);
            assert!(
                message.contains("MANAGEMENT_TOKEN"),
                "{method} {path}: {message}"
            );
            assert!(!response.text().contains(MANAGEMENT_TOKEN));
        }
        // A key without a user has no role: the model listings only.
        let response = raw(&proxy, method, path, &body, Some(&virtual_key));
        let message = assert_lite_error(&response, 403, "auth_error", None);
        assert!(message.contains("no role"), "{method} {path}: {message}");
    }
    // Other schemes are not the master key either.
    for header in [
        MANAGEMENT_TOKEN.to_string(),
        format!("Basic {MANAGEMENT_TOKEN}"),
    ] {
        let response = proxy.call(Req::get("/key/list").header("Authorization", header));
        assert_lite_error(&response, 401, "auth_error", None);
    }
    // Nothing changed.
    let info = ok(get(&proxy, "/model/info"));
    assert_eq!(info_names(&info), ["gpt-x"]);
    assert_eq!(
        ok(get(&proxy, "/credentials"))["credentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 2);
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 0);
    assert_eq!(key_info(&proxy, &virtual_key)["blocked"], false);
}

#[test]
fn model_listings_take_virtual_keys_but_not_unknown_or_blocked_ones() {
    let (_mock, proxy) = start();
    add_model(&proxy, "gpt-x", "gpt-4o");
    let blocked = secret(&generate(&proxy, json!({})));
    ok(post(
        &proxy,
        "/key/update",
        json!({"key": blocked, "blocked": true}),
    ));
    let paths = ["/models", "/v1/models", "/model/info", "/v1/model/info"];
    for path in paths {
        let response = raw(&proxy, "GET", path, "", None);
        let message = assert_lite_error(&response, 401, "auth_error", None);
        assert!(message.contains("Bearer"), "{path}: {message}");
        let response = get_as(&proxy, path, "sk-unknown-key-0000");
        assert_eq!(
            assert_lite_error(&response, 401, "auth_error", None),
            "invalid API key"
        );
        let response = get_as(&proxy, path, &blocked);
        let message = assert_lite_error(&response, 401, "auth_error", None);
        assert!(message.contains("revoked"), "{path}: {message}");
        for key in [CLIENT_KEY, MANAGEMENT_TOKEN] {
            let body = ok(get_as(&proxy, path, key));
            let names = if path.ends_with("info") {
                info_names(&body)
            } else {
                listed(&body)
            };
            assert_eq!(names, ["gpt-x"], "{path} as {key}");
        }
    }
}

#[test]
fn without_management_token_the_master_routes_are_503() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env_remove("MANAGEMENT_TOKEN")
        .unseeded()
        .start();
    for (method, path) in master_routes() {
        for key in [None, Some(MANAGEMENT_TOKEN)] {
            let response = raw(&proxy, method, path, "{}", key);
            let message = assert_lite_error(&response, 503, "internal_server_error", None);
            assert!(message.contains("MANAGEMENT_TOKEN"), "{message}");
        }
    }
    // The listings fall back to virtual keys; there is none to present.
    for path in ["/models", "/model/info"] {
        let response = raw(&proxy, "GET", path, "", Some(MANAGEMENT_TOKEN));
        assert_lite_error(&response, 401, "auth_error", None);
    }
    ok(raw(&proxy, "GET", "/health/readiness", "", None));
}

#[test]
fn wrong_methods_are_405_with_allow_and_unknown_paths_404() {
    let (_mock, proxy) = start();
    // With a model registered, the `/v1/` listings are answered here.
    add_model(&proxy, "gpt-x", "gpt-4o");
    let cases = [
        ("PUT", "/health/readiness", "GET, HEAD"),
        ("POST", "/models", "GET, HEAD"),
        ("DELETE", "/v1/models", "GET, HEAD"),
        ("POST", "/model/info", "GET, HEAD"),
        ("POST", "/v1/model/info", "GET, HEAD"),
        ("GET", "/model/new", "POST"),
        ("PUT", "/model/update", "POST"),
        ("GET", "/model/delete", "POST"),
        ("PUT", "/credentials", "GET, POST"),
        ("POST", "/credentials/by_name/shared", "GET, HEAD"),
        ("GET", "/credentials/shared", "DELETE"),
        ("GET", "/key/generate", "POST"),
        ("POST", "/key/info", "GET, HEAD"),
        ("DELETE", "/key/list", "GET, HEAD"),
        ("GET", "/key/update", "POST"),
        ("GET", "/key/delete", "POST"),
        ("GET", "/user/new", "POST"),
        ("POST", "/user/list", "GET, HEAD"),
        ("POST", "/user/info", "GET, HEAD"),
        ("GET", "/user/update", "POST"),
        ("DELETE", "/user/delete", "POST"),
    ];
    for (method, path, allow) in cases {
        let response = raw(&proxy, method, path, "", Some(MANAGEMENT_TOKEN));
        let message = assert_lite_error(&response, 405, "bad_request_error", None);
        assert!(message.contains(method), "{message}");
        assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
    }
    for path in [
        "/model/nope",
        "/key/nope",
        "/user/nope",
        "/credentials/a/b",
        "/credentials/by_name/a/b",
    ] {
        let response = get(&proxy, path);
        assert_not_found(&response);
    }
}

// --- at rest ------------------------------------------------------------------------

/// Registers a model with an inline key and a credential; returns the secrets.
fn store_secrets(proxy: &Proxy, tag: &str) -> [String; 3] {
    let model_key = format!("sk-model-{tag}-6f1d2c9e8a");
    let credential_key = format!("sk-cred-{tag}-4a7b3e0c5d");
    let credential_base = format!("https://{tag}-base.example");
    new_model(
        proxy,
        json!({"model_name": format!("model-{tag}"),
            "litellm_params": {"model": "gpt-4o", "api_key": model_key}}),
    );
    ok(post(
        proxy,
        "/credentials",
        json!({"credential_name": format!("credential-{tag}"),
            "credential_values": {"api_key": credential_key, "api_base": credential_base}}),
    ));
    [model_key, credential_key, credential_base]
}

#[test]
fn secrets_are_sealed_at_rest_with_an_encryption_key() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY_HEX)
        .start();
    let secrets = store_secrets(&proxy, "SEALED");
    let file = default_data_dir(&proxy).join("data.mdb");
    // The records are in this file ...
    assert!(file_contains(&file, "model-SEALED"));
    assert!(file_contains(&file, "credential-SEALED"));
    // ... their secrets are not.
    for secret in &secrets {
        assert!(
            !file_contains(&file, secret),
            "{secret} in the clear in {}",
            file.display()
        );
    }
    // Sealed, not lost: the credential reads back (masked) with the key.
    let credential = ok(get(&proxy, "/credentials/by_name/credential-SEALED"));
    assert_eq!(credential["credential_values"]["api_key"], "sk-c****0c5d");

    // Without the key the same records hold them in the clear: the search
    // above would have found them.
    let plain = Proxy::for_mock(&mock).start();
    let secrets = store_secrets(&plain, "PLAIN");
    let file = default_data_dir(&plain).join("data.mdb");
    assert!(file_contains(&file, "model-PLAIN"));
    assert!(
        file_contains(&file, &secrets[0]),
        "the model key is not found in {}",
        file.display()
    );
}

#[test]
fn records_survive_a_restart() {
    let mock = Mock::start();
    let data = TempDir::new("litellm-db");
    let db = data.path().join("data");
    let builder = || {
        Proxy::for_mock(&mock)
            .env("ENCRYPTION_KEY", ENCRYPTION_KEY_HEX)
            .arg("--db")
            .arg(db.display().to_string())
    };
    let proxy = builder().start();
    let model = new_model(
        &proxy,
        json!({"model_name": "gpt-x", "litellm_params": {"model": "gpt-4o", "rpm": "7",
            "api_key": "sk-survivor-0123456789"}, "model_info": {"max_tokens": "99"}}),
    );
    ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "kept", "credential_values": {"api_key": "sk-kept-0123456789"}}),
    ));
    let user = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "models": ["gpt-x"]}),
    ));
    let key = secret(&user);
    let before = (
        ok(get(&proxy, "/model/info")),
        ok(get(&proxy, "/credentials")),
        ok(get(&proxy, "/user/info?user_id=ann")),
    );
    proxy.stop();

    let proxy = builder().unseeded().start();
    let after = (
        ok(get(&proxy, "/model/info")),
        ok(get(&proxy, "/credentials")),
        ok(get(&proxy, "/user/info?user_id=ann")),
    );
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, before.1);
    assert_eq!(after.2, before.2);
    assert_eq!(after.0["data"][0]["litellm_params"]["rpm"], 7);
    assert_eq!(after.0["data"][0]["model_info"]["id"], model["model_id"]);
    assert_eq!(listed(&ok(get_as(&proxy, "/models", &key))), ["gpt-x"]);
}
