//! The LiteLLM-compatible management API against the real server and a real
//! data directory: models, credentials, virtual keys and users, the wire
//! shapes LiteLLM's clients rely on, every error path with its status and
//! envelope (`code` the status as a string, `type` LiteLLM's, `param` the
//! field), who may call what, and where secrets are never shown or stored.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::store::*;
use common::*;
use serde_json::{Value, json};

const KEY_FIELDS: [&str; 19] = [
    "token",
    "key_name",
    "key_alias",
    "id",
    "project_id",
    "user_id",
    "team_id",
    "models",
    "aliases",
    "expires",
    "max_budget",
    "spend",
    "max_requests",
    "request_count",
    "metadata",
    "blocked",
    "created_at",
    "updated_at",
    "last_used_at",
];

const USER_FIELDS: [&str; 11] = [
    "user_id",
    "user_email",
    "user_role",
    "user_alias",
    "teams",
    "models",
    "max_budget",
    "spend",
    "metadata",
    "created_at",
    "updated_at",
];

const ROLES: [&str; 4] = [
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
];

/// 32 bytes in hex, as `ENCRYPTION_KEY` takes them.
const ENCRYPTION_KEY_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

// --- helpers ------------------------------------------------------------------

fn start() -> (Mock, Proxy) {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    (mock, proxy)
}

/// A proxy with an empty store (no project, no key), in front of `mock`.
fn start_empty(mock: &Mock) -> Proxy {
    Proxy::for_mock(mock).unseeded().start()
}

/// `GET path` with the master key.
fn get(proxy: &Proxy, path: &str) -> Response {
    proxy.manage("GET", path, None)
}

/// `POST path` with the master key and a JSON body.
fn post(proxy: &Proxy, path: &str, body: Value) -> Response {
    proxy.manage("POST", path, Some(body))
}

/// A request with an arbitrary raw body and, optionally, a bearer key.
fn raw(proxy: &Proxy, method: &str, path: &str, body: &str, key: Option<&str>) -> Response {
    let mut request = Req::new(method, path);
    if let Some(key) = key {
        request = request.auth(key);
    }
    if !body.is_empty() {
        request = request
            .header("Content-Type", "application/json")
            .body(body);
    }
    proxy.call(request)
}

/// `GET path` presenting `key`.
fn get_as(proxy: &Proxy, path: &str, key: &str) -> Response {
    proxy.call(Req::get(path).auth(key))
}

/// Asserts a 200 JSON answer and returns its body.
#[track_caller]
fn ok(response: Response) -> Value {
    assert_eq!(response.status, 200, "body {}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "not JSON: {:?}",
        response.headers
    );
    response.json()
}

/// Asserts LiteLLM's error envelope: the status, `code` the status as a
/// string, `type`, and `param` (the field, or null). Returns the message.
#[track_caller]
fn assert_lite_error(response: &Response, status: u16, kind: &str, param: Option<&str>) -> String {
    assert_eq!(response.status, status, "body {}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "error without JSON content type: {:?}",
        response.headers
    );
    let json = response.json();
    let error = json["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not an error envelope: {json}"));
    let fields: BTreeSet<&str> = error.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["message", "type", "param", "code"]),
        "{json}"
    );
    assert_eq!(error["code"], status.to_string(), "{json}");
    assert_eq!(error["type"], kind, "{json}");
    match param {
        Some(param) => assert_eq!(error["param"], param, "{json}"),
        None => assert!(error["param"].is_null(), "param should be null: {json}"),
    }
    let message = error["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "no message in {json}");
    message
}

/// A 400 `bad_request_error` about `param`.
#[track_caller]
fn assert_bad_field(response: &Response, param: &str) -> String {
    assert_lite_error(response, 400, "bad_request_error", Some(param))
}

/// Posts each `[param, body]` of `cases` to `path`: every one is a 400
/// whose `param` and message name the field.
#[track_caller]
fn assert_each_bad(proxy: &Proxy, path: &str, cases: Value) {
    for case in cases.as_array().expect("an array of [param, body]") {
        let (param, body) = (case[0].as_str().unwrap(), &case[1]);
        let response = post(proxy, path, body.clone());
        let message = assert_bad_field(&response, param);
        assert!(message.starts_with(param), "{body}: {message}");
    }
}

#[track_caller]
fn assert_not_found(response: &Response) -> String {
    assert_lite_error(response, 404, "not_found_error", None)
}

/// What LiteLLM calls a key's `token`: the SHA-256 of the secret, in hex.
fn sha256_hex(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /model/new`; returns the answer.
#[track_caller]
fn new_model(proxy: &Proxy, body: Value) -> Value {
    ok(post(proxy, "/model/new", body))
}

/// A deployment named `name` of the upstream model `model`; returns its id.
#[track_caller]
fn add_model(proxy: &Proxy, name: &str, model: &str) -> String {
    let answer = new_model(
        proxy,
        json!({"model_name": name, "litellm_params": {"model": model}}),
    );
    answer["model_id"].as_str().unwrap().to_string()
}

/// `POST /key/generate`; returns the answer.
#[track_caller]
fn generate(proxy: &Proxy, body: Value) -> Value {
    ok(post(proxy, "/key/generate", body))
}

/// The secret of a `/key/generate` (or `/user/new`) answer.
#[track_caller]
fn secret(answer: &Value) -> String {
    answer["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {answer}"))
        .to_string()
}

/// `GET /key/info?key=` by the master key; returns `info`.
#[track_caller]
fn key_info(proxy: &Proxy, key: &str) -> Value {
    let path = format!("/key/info?key={}", encode(key));
    ok(get(proxy, &path))["info"].clone()
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The `id`s of an OpenAI model list, sorted (deployments made in the same
/// millisecond have no set order).
#[track_caller]
fn listed(list: &Value) -> Vec<String> {
    assert_eq!(list["object"], "list", "{list}");
    let ids = list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {list}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    sorted(ids)
}

/// The model names of a `/model/info` answer, sorted.
#[track_caller]
fn info_names(info: &Value) -> Vec<String> {
    let names = info["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {info}"))
        .iter()
        .map(|m| m["model_name"].as_str().unwrap().to_string())
        .collect();
    sorted(names)
}

/// The `keys` of a `/key/list` answer (tokens, or objects' tokens).
#[track_caller]
fn listed_tokens(list: &Value) -> Vec<String> {
    list["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {list}"))
        .iter()
        .map(|k| match k {
            Value::String(token) => token.clone(),
            object => object["token"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

/// The requests the mock has served, this read of the counter included
/// (`/mock/stats` is a request too).
fn mock_requests(mock: &Mock) -> u64 {
    mock.stat("requests")
}

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

/// Every route that only the master key may call.
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
        ("POST", "/key/delete"),
        ("POST", "/user/new"),
        ("GET", "/user/list"),
        ("GET", "/user/info?user_id=x"),
        ("POST", "/user/update"),
        ("POST", "/user/delete"),
    ]
}

#[test]
fn master_routes_refuse_missing_wrong_and_virtual_keys() {
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
        for key in [None, Some(wrong.as_str()), Some(virtual_key.as_str())] {
            let response = raw(&proxy, method, path, &body, key);
            let message = assert_lite_error(&response, 401, "auth_error", None);
            assert!(
                message.contains("MANAGEMENT_TOKEN"),
                "{method} {path}: {message}"
            );
            assert!(!response.text().contains(MANAGEMENT_TOKEN));
        }
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

// --- models ---------------------------------------------------------------------

#[test]
fn model_new_accepts_numeric_strings_and_stores_numbers() {
    let (mock, proxy) = start();
    let answer = new_model(
        &proxy,
        json!({
            "model_name": "gpt-x",
            "litellm_params": {
                "model": "openai/gpt-4o",
                "api_base": mock.url(),
                "rpm": "100",
                "tpm": 5000,
                "timeout": "2.5",
                "max_retries": " 3 ",
                "custom_flag": "kept as text",
            },
            "model_info": {
                "input_cost_per_token": "0.000001",
                "output_cost_per_token": 0.000002,
                "max_tokens": "4096",
                "mode": "chat",
            },
        }),
    );
    assert_fields(
        &answer,
        &["model_name", "litellm_params", "model_info", "model_id"],
    );
    let id = answer["model_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(answer["model_name"], "gpt-x");
    let params = &answer["litellm_params"];
    assert_eq!(
        *params,
        json!({"model": "openai/gpt-4o", "api_base": mock.url(), "rpm": 100, "tpm": 5000,
            "timeout": 2.5, "max_retries": 3, "custom_flag": "kept as text"})
    );
    assert!(params["rpm"].is_u64() && params["max_retries"].is_u64());
    assert!(params["timeout"].is_f64());
    let info = &answer["model_info"];
    assert_fields(
        info,
        &[
            "input_cost_per_token",
            "output_cost_per_token",
            "max_tokens",
            "mode",
            "id",
            "db_model",
            "created_at",
            "updated_at",
        ],
    );
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["db_model"], true);
    assert_eq!(info["input_cost_per_token"].as_f64(), Some(0.000001));
    assert_eq!(info["output_cost_per_token"].as_f64(), Some(0.000002));
    assert!(info["max_tokens"].is_u64());
    assert_eq!(info["max_tokens"], 4096);
    assert_eq!(info["mode"], "chat");
    assert!(seconds_from_now(&info["created_at"]).abs() < 60.0);
    assert_eq!(info["created_at"], info["updated_at"]);

    // Stored as numbers: /model/info shows the same, without `model_id`.
    let listed = ok(get(&proxy, "/model/info"));
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_fields(&data[0], &["model_name", "litellm_params", "model_info"]);
    assert_eq!(data[0]["litellm_params"], answer["litellm_params"]);
    assert_eq!(data[0]["model_info"], answer["model_info"]);
}

#[test]
fn model_api_key_is_never_shown_again() {
    let (mock, proxy) = start();
    let secrets = [
        "sk-model-secret-DISTINCT-4b7e9a",
        "aws-secret-DISTINCT-81c3f0",
        "azure-ad-token-DISTINCT-5d2e77",
    ];
    let answer = new_model(
        &proxy,
        json!({"model_name": "gpt-x", "litellm_params": {
            "model": "azure/gpt-4o", "api_base": mock.url(), "api_key": secrets[0],
            "aws_secret_access_key": secrets[1], "azure_ad_token": secrets[2],
            "api_version": "2024-06-01"}}),
    );
    let id = answer["model_id"].as_str().unwrap().to_string();
    assert_eq!(
        answer["litellm_params"],
        json!({"model": "azure/gpt-4o", "api_base": mock.url(), "api_version": "2024-06-01"})
    );
    let mut seen = vec![answer.to_string()];
    let updated = ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"rpm": 5}}),
    ));
    assert!(
        updated["litellm_params"].get("api_key").is_none(),
        "{updated}"
    );
    seen.push(updated.to_string());
    // A new key replaces the old one, and is not shown either.
    let replaced = ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"api_key": "sk-model-secret-DISTINCT-rotated"}}),
    ));
    assert!(
        replaced["litellm_params"].get("api_key").is_none(),
        "{replaced}"
    );
    assert_eq!(replaced["litellm_params"]["rpm"], 5);
    seen.push(replaced.to_string());
    let by_id = format!("/model/info?litellm_model_id={id}");
    let listings = [
        "/model/info",
        "/v1/model/info",
        &by_id,
        "/models",
        "/v1/models",
    ];
    for path in listings {
        seen.push(ok(get(&proxy, path)).to_string());
        seen.push(ok(get_as(&proxy, path, CLIENT_KEY)).to_string());
    }
    seen.push(ok(get(&proxy, "/credentials")).to_string());
    seen.push(proxy.log());
    for text in &seen {
        for secret in secrets
            .iter()
            .chain(["sk-model-secret-DISTINCT-rotated"].iter())
        {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(!text.contains("DISTINCT"), "a secret is shown in {text}");
    }
}

#[test]
fn model_new_errors_name_the_field() {
    let (_mock, proxy) = start();
    assert_each_bad(
        &proxy,
        "/model/new",
        json!([
            ["model_name", {"litellm_params": {"model": "gpt-4o"}}],
            ["model_name", {"model_name": "  ", "litellm_params": {"model": "gpt-4o"}}],
            ["model_name", {"model_name": 7, "litellm_params": {"model": "x"}}],
            ["litellm_params", {"model_name": "m"}],
            ["litellm_params", {"model_name": "m", "litellm_params": "gpt-4o"}],
            ["litellm_params.model", {"model_name": "m", "litellm_params": {}}],
            ["litellm_params.model", {"model_name": "m", "litellm_params": {"model": ""}}],
            ["litellm_params.model", {"model_name": "m", "litellm_params": {"model": 4}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": "ftp://host"}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": "not a url"}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": "http://"}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": 8080}}],
            ["litellm_params.rpm",
                {"model_name": "m", "litellm_params": {"model": "x", "rpm": "lots"}}],
            ["litellm_params.timeout",
                {"model_name": "m", "litellm_params": {"model": "x", "timeout": [1]}}],
            ["model_info.max_tokens",
                {"model_name": "m", "litellm_params": {"model": "x"}, "model_info": {"max_tokens": "many"}}],
            ["model_info", {"model_name": "m", "litellm_params": {"model": "x"}, "model_info": []}],
            ["litellm_params.litellm_credential_name",
                {"model_name": "m", "litellm_params": {"model": "x", "litellm_credential_name": "nope"}}],
            ["litellm_params.litellm_credential_name",
                {"model_name": "m", "litellm_params": {"model": "x", "litellm_credential_name": 3}}],
        ]),
    );
    for body in ["{bad", "[]", "\"x\""] {
        let response = raw(&proxy, "POST", "/model/new", body, Some(MANAGEMENT_TOKEN));
        let message = assert_lite_error(&response, 400, "bad_request_error", None);
        assert!(message.contains("JSON"), "{body}: {message}");
    }
    // No body at all is `{}`: the first missing field.
    let response = raw(&proxy, "POST", "/model/new", "", Some(MANAGEMENT_TOKEN));
    assert_bad_field(&response, "model_name");
    // Nothing was created.
    assert_eq!(ok(get(&proxy, "/model/info")), json!({"data": []}));
}

#[test]
fn model_ids_may_be_chosen_and_are_unique() {
    let (_mock, proxy) = start();
    let by_info = new_model(
        &proxy,
        json!({"model_name": "a", "litellm_params": {"model": "x"}, "model_info": {"id": "dep-1"}}),
    );
    assert_eq!(by_info["model_id"], "dep-1");
    assert_eq!(by_info["model_info"]["id"], "dep-1");
    let top = new_model(
        &proxy,
        json!({"model_name": "b", "id": "dep-2", "litellm_params": {"model": "x"}}),
    );
    assert_eq!(top["model_id"], "dep-2");
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "c", "litellm_params": {"model": "x"}, "model_info": {"id": "dep-1"}}),
    );
    let message = assert_bad_field(&response, "model_info.id");
    assert!(message.contains("dep-1"), "{message}");
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "c", "id": "dep-2", "litellm_params": {"model": "x"}}),
    );
    assert_bad_field(&response, "id");
    assert_eq!(info_names(&ok(get(&proxy, "/model/info"))), ["a", "b"]);
}

#[test]
fn model_with_a_credential_name_needs_the_credential() {
    let (_mock, proxy) = start();
    ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "azure-prod", "credential_values": {"api_key": "sk-azure-0123456789"}}),
    ));
    let answer = new_model(
        &proxy,
        json!({"model_name": "gpt-x",
            "litellm_params": {"model": "azure/gpt-4o", "litellm_credential_name": "azure-prod"}}),
    );
    assert_eq!(
        answer["litellm_params"],
        json!({"model": "azure/gpt-4o", "litellm_credential_name": "azure-prod"})
    );
    let id = answer["model_id"].as_str().unwrap();
    // Pointing it at a credential that does not exist is refused on update too.
    let response = post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"litellm_credential_name": "azure-dev"}}),
    );
    let message = assert_bad_field(&response, "litellm_params.litellm_credential_name");
    assert!(message.contains("azure-dev"), "{message}");
    let info = ok(get(&proxy, &format!("/model/info?litellm_model_id={id}")));
    assert_eq!(
        info["data"][0]["litellm_params"]["litellm_credential_name"],
        "azure-prod"
    );
}

#[test]
fn model_info_on_both_paths_and_by_id() {
    let (_mock, proxy) = start();
    let first = add_model(&proxy, "gpt-x", "openai/gpt-4o");
    let second = add_model(&proxy, "gpt-x", "openai/gpt-4o-mini");
    let third = add_model(&proxy, "claude", "anthropic/claude-3");
    let all = ok(get(&proxy, "/model/info"));
    assert_eq!(ok(get(&proxy, "/v1/model/info")), all);
    // Every deployment, two of them under one name.
    let ids: BTreeSet<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["model_info"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([first.as_str(), second.as_str(), third.as_str()])
    );
    assert_eq!(info_names(&all), ["claude", "gpt-x", "gpt-x"]);
    for id in [&first, &second, &third] {
        for path in ["/model/info", "/v1/model/info"] {
            let one = ok(get(&proxy, &format!("{path}?litellm_model_id={id}")));
            let data = one["data"].as_array().unwrap();
            assert_eq!(data.len(), 1, "{one}");
            assert_eq!(data[0]["model_info"]["id"], id.as_str());
        }
    }
    // An unknown id is a 404 (LiteLLM itself answers 400 here).
    for path in ["/model/info", "/v1/model/info"] {
        let response = get(&proxy, &format!("{path}?litellm_model_id=nope"));
        let message = assert_not_found(&response);
        assert!(message.contains("nope"), "{message}");
    }
}

#[test]
fn model_update_merges_and_null_removes() {
    let (mock, proxy) = start();
    let created = new_model(
        &proxy,
        json!({"model_name": "gpt-x",
            "litellm_params": {"model": "openai/gpt-4o", "api_base": mock.url(), "rpm": 10,
                "tpm": 1000, "api_key": "sk-old-key-0123456789"},
            "model_info": {"input_cost_per_token": 0.000001, "mode": "chat"}}),
    );
    let id = created["model_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));

    // The id at the top level; params merged, a null removes one.
    let updated = ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"rpm": "20", "tpm": null, "max_retries": 2}}),
    ));
    assert_eq!(updated["model_id"], id.as_str());
    assert_eq!(updated["model_name"], "gpt-x");
    assert_eq!(
        updated["litellm_params"],
        json!({"model": "openai/gpt-4o", "api_base": mock.url(), "rpm": 20, "max_retries": 2})
    );
    assert_eq!(
        updated["model_info"]["input_cost_per_token"].as_f64(),
        Some(0.000001)
    );
    assert_eq!(updated["model_info"]["mode"], "chat");
    assert_eq!(
        updated["model_info"]["created_at"],
        created["model_info"]["created_at"]
    );
    assert!(
        seconds_from_now(&updated["model_info"]["updated_at"])
            > seconds_from_now(&created["model_info"]["updated_at"]),
        "{updated}"
    );

    // The id in model_info; info merged; the name changes.
    let updated = ok(post(
        &proxy,
        "/model/update",
        json!({"model_name": "gpt-y",
            "model_info": {"id": id, "output_cost_per_token": "0.000004", "mode": "completion"}}),
    ));
    assert_eq!(updated["model_name"], "gpt-y");
    let info = &updated["model_info"];
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["input_cost_per_token"].as_f64(), Some(0.000001));
    assert_eq!(info["output_cost_per_token"].as_f64(), Some(0.000004));
    assert_eq!(info["mode"], "completion");
    assert_eq!(updated["litellm_params"]["rpm"], 20);

    // What /model/info shows afterwards is the merged deployment.
    let shown = ok(get(&proxy, &format!("/model/info?litellm_model_id={id}")));
    assert_eq!(shown["data"][0]["model_name"], "gpt-y");
    assert_eq!(
        shown["data"][0]["litellm_params"],
        updated["litellm_params"]
    );
    assert_eq!(shown["data"][0]["model_info"], updated["model_info"]);
    assert_eq!(listed(&ok(get(&proxy, "/models"))), ["gpt-y"]);

    // Errors: unknown id, no id, bad values; the deployment is untouched.
    let response = post(
        &proxy,
        "/model/update",
        json!({"id": "nope", "litellm_params": {"rpm": 1}}),
    );
    let message = assert_not_found(&response);
    assert!(message.contains("model"), "{message}");
    let response = post(
        &proxy,
        "/model/update",
        json!({"model_info": {"id": "nope"}}),
    );
    assert_not_found(&response);
    let response = post(
        &proxy,
        "/model/update",
        json!({"litellm_params": {"rpm": 1}}),
    );
    assert_bad_field(&response, "id");
    assert_each_bad(
        &proxy,
        "/model/update",
        json!([
            ["litellm_params.api_base", {"id": id, "litellm_params": {"api_base": "nope"}}],
            ["litellm_params.rpm", {"id": id, "litellm_params": {"rpm": "x"}}],
            ["model_info.max_tokens", {"id": id, "model_info": {"max_tokens": "x"}}],
            ["model_name", {"id": id, "model_name": " "}],
            ["litellm_params.model", {"id": id, "litellm_params": {"model": null}}],
            ["litellm_params.model", {"id": id, "litellm_params": {"model": ""}}],
            ["litellm_params.model", {"id": id, "litellm_params": {"model": 5}}],
            ["litellm_params", {"id": id, "litellm_params": [1]}],
        ]),
    );
    let after = ok(get(&proxy, &format!("/model/info?litellm_model_id={id}")));
    assert_eq!(after, shown);
}

#[test]
fn model_delete_removes_it_and_unknown_ids_are_404() {
    let (_mock, proxy) = start();
    let keep = add_model(&proxy, "keep", "gpt-4o");
    let doomed = add_model(&proxy, "doomed", "gpt-4o");
    let response = post(&proxy, "/model/delete", json!({"id": "nope"}));
    assert_not_found(&response);
    assert_bad_field(&post(&proxy, "/model/delete", json!({})), "id");
    assert_bad_field(&post(&proxy, "/model/delete", json!({"id": ""})), "id");
    assert_bad_field(&post(&proxy, "/model/delete", json!({"id": 5})), "id");
    let answer = ok(post(&proxy, "/model/delete", json!({"id": doomed})));
    assert_eq!(
        answer,
        json!({"message": format!("Model: {doomed} deleted successfully")})
    );
    let info = ok(get(&proxy, "/model/info"));
    assert_eq!(info_names(&info), ["keep"]);
    assert_eq!(info["data"][0]["model_info"]["id"], keep.as_str());
    assert_eq!(listed(&ok(get(&proxy, "/models"))), ["keep"]);
    assert_not_found(&post(&proxy, "/model/delete", json!({"id": doomed})));
}

#[test]
fn v1_models_is_the_upstreams_list_until_a_model_is_registered() {
    let (mock, proxy) = start();
    // Nothing registered: /v1/models goes to the upstream with the project's key.
    let upstream = ok(get_as(&proxy, "/v1/models", CLIENT_KEY));
    assert_eq!(
        listed(&upstream),
        ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    );
    assert!(
        upstream["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["owned_by"] == "mock")
    );
    let last = mock.last_request();
    assert_eq!(last["method"], "GET");
    assert_eq!(last["target"], "/v1/models");
    assert_eq!(
        header_values(&headers_of(&last), "authorization"),
        [format!("Bearer {UPSTREAM_KEY}")]
    );
    // ... while the LiteLLM path lists what is registered here: nothing.
    assert_eq!(
        ok(get(&proxy, "/models")),
        json!({"object": "list", "data": []})
    );
    assert_eq!(
        ok(get_as(&proxy, "/models", CLIENT_KEY)),
        json!({"object": "list", "data": []})
    );

    let id = add_model(&proxy, "gpt-x", "openai/gpt-4o");
    let before = mock_requests(&mock);
    let local = ok(get_as(&proxy, "/v1/models", CLIENT_KEY));
    assert_eq!(listed(&local), ["gpt-x"]);
    let after = mock_requests(&mock);
    assert_eq!(
        after,
        before + 1,
        "only the counter was read: the upstream was not asked"
    );

    // With the last model gone, the upstream answers again.
    ok(post(&proxy, "/model/delete", json!({"id": id})));
    let upstream_again = ok(get_as(&proxy, "/v1/models", CLIENT_KEY));
    assert_eq!(listed(&upstream_again), listed(&upstream));
    assert_eq!(
        mock_requests(&mock),
        after + 2,
        "the listing and the counter"
    );
}

#[test]
fn v1_model_info_is_answered_here_even_with_no_model_registered() {
    let (mock, proxy) = start();
    let before = mock_requests(&mock);
    for key in [MANAGEMENT_TOKEN, CLIENT_KEY] {
        assert_eq!(
            ok(get_as(&proxy, "/v1/model/info", key)),
            json!({"data": []})
        );
    }
    assert_eq!(mock_requests(&mock), before + 1, "the upstream was asked");
}

#[test]
fn v1_models_answers_the_master_key_with_no_model_registered() {
    let (_mock, proxy) = start();
    assert_eq!(
        ok(get(&proxy, "/models")),
        json!({"object": "list", "data": []})
    );
    assert_eq!(
        ok(get(&proxy, "/v1/models")),
        json!({"object": "list", "data": []})
    );
}

#[test]
fn model_listings_follow_the_callers_allowlist() {
    let (_mock, proxy) = start();
    add_model(&proxy, "alpha", "openai/gpt-4o");
    add_model(&proxy, "alpha", "openai/gpt-4o-mini");
    add_model(&proxy, "beta", "anthropic/claude-3");
    add_model(&proxy, "gamma", "gpt-4o");

    // OpenAI's list shape; a name with several deployments is listed once;
    // `owned_by` is the provider prefix of the upstream model.
    let all = ok(get(&proxy, "/models"));
    assert_fields(&all, &["object", "data"]);
    assert_eq!(listed(&all), ["alpha", "beta", "gamma"]);
    let owners: std::collections::BTreeMap<&str, &str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_fields(m, &["id", "object", "created", "owned_by"]);
            assert_eq!(m["object"], "model");
            let created = m["created"].as_u64().unwrap();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert!(created <= now && now - created < 60, "{m}");
            (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("alpha", "openai"),
            ("beta", "anthropic"),
            ("gamma", "openai")
        ]
        .into()
    );
    assert_eq!(ok(get(&proxy, "/v1/models")), all);

    // A key with a models allowlist sees only those.
    let limited = secret(&generate(
        &proxy,
        json!({"models": ["alpha", "gamma", "absent"]}),
    ));
    for path in ["/models", "/v1/models"] {
        assert_eq!(
            listed(&ok(get_as(&proxy, path, &limited))),
            ["alpha", "gamma"]
        );
    }
    for path in ["/model/info", "/v1/model/info"] {
        let info = ok(get_as(&proxy, path, &limited));
        assert_eq!(info_names(&info), ["alpha", "alpha", "gamma"]);
    }
    let beta_id = ok(get(&proxy, "/model/info"))["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model_name"] == "beta")
        .map(|d| d["model_info"]["id"].as_str().unwrap().to_string())
        .unwrap();
    let response = get_as(
        &proxy,
        &format!("/model/info?litellm_model_id={beta_id}"),
        &limited,
    );
    // Not visible to the key: as unknown as an id that does not exist.
    assert_not_found(&response);
    assert_eq!(
        info_names(&ok(get(
            &proxy,
            &format!("/model/info?litellm_model_id={beta_id}")
        ))),
        ["beta"]
    );

    // A key without one sees everything.
    let open = secret(&generate(&proxy, json!({})));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/models", &open))),
        ["alpha", "beta", "gamma"]
    );

    // A key and its user: only the models both allow.
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "models": ["alpha", "beta"], "auto_create_key": false}),
    ));
    let both = secret(&generate(
        &proxy,
        json!({"user_id": "ann", "models": ["beta", "gamma"]}),
    ));
    assert_eq!(listed(&ok(get_as(&proxy, "/models", &both))), ["beta"]);
    let user_only = secret(&generate(&proxy, json!({"user_id": "ann"})));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/v1/models", &user_only))),
        ["alpha", "beta"]
    );

    // Changing the allowlist takes effect at once.
    ok(post(
        &proxy,
        "/key/update",
        json!({"key": limited, "models": ["beta"]}),
    ));
    assert_eq!(listed(&ok(get_as(&proxy, "/models", &limited))), ["beta"]);
}

// --- credentials -----------------------------------------------------------------

#[test]
fn credentials_are_masked_everywhere() {
    let (_mock, proxy) = start();
    let api_key = "sk-cred-SECRET-abcdef123";
    let created = ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "azure-prod",
            "credential_values": {"api_key": api_key, "api_base": "https://azure.example/v1",
                "short": "abc", "port": 443},
            "credential_info": {"description": "production", "custom_llm_provider": "azure"}}),
    ));
    let masked = json!({"api_key": "sk-c****f123", "api_base": "http****e/v1", "short": "****",
        "port": "****"});
    assert_eq!(
        created,
        json!({"credential_name": "azure-prod",
            "credential_info": {"description": "production", "custom_llm_provider": "azure"},
            "credential_values": masked, "success": true})
    );
    ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "openai", "credential_values": {"api_key": "sk-other-7777777777"}}),
    ));
    let list = ok(get(&proxy, "/credentials"));
    assert_fields(&list, &["credentials"]);
    let credentials = list["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 2);
    let prod = credentials
        .iter()
        .find(|c| c["credential_name"] == "azure-prod")
        .unwrap();
    assert_fields(
        prod,
        &["credential_name", "credential_info", "credential_values"],
    );
    assert_eq!(prod["credential_values"], masked);
    let openai = credentials
        .iter()
        .find(|c| c["credential_name"] == "openai")
        .unwrap();
    assert_eq!(openai["credential_info"], json!({}));
    assert_eq!(
        openai["credential_values"],
        json!({"api_key": "sk-o****7777"})
    );
    let one = ok(get(&proxy, "/credentials/by_name/azure-prod"));
    assert_eq!(&one, prod);
    for text in [
        created.to_string(),
        list.to_string(),
        one.to_string(),
        proxy.log(),
    ] {
        assert!(
            !text.contains(api_key) && !text.contains("SECRET"),
            "{text}"
        );
        assert!(!text.contains("sk-other-7777777777"), "{text}");
    }
}

#[test]
fn credential_errors_and_deletion() {
    let (_mock, proxy) = start();
    let create = |name: &str| {
        post(
            &proxy,
            "/credentials",
            json!({"credential_name": name, "credential_values": {"api_key": "sk-0123456789"}}),
        )
    };
    ok(create("shared"));
    let message = assert_bad_field(&create("shared"), "credential_name");
    assert!(message.contains("shared"), "{message}");
    assert_each_bad(
        &proxy,
        "/credentials",
        json!([
            ["credential_name", {"credential_values": {"api_key": "x"}}],
            ["credential_name", {"credential_name": " ", "credential_values": {"api_key": "x"}}],
            ["credential_values", {"credential_name": "n"}],
            ["credential_values", {"credential_name": "n", "credential_values": {}}],
            ["credential_values", {"credential_name": "n", "credential_values": "x"}],
            ["credential_info",
                {"credential_name": "n", "credential_values": {"a": "b"}, "credential_info": 1}],
        ]),
    );
    let message = assert_not_found(&get(&proxy, "/credentials/by_name/nope"));
    assert!(message.contains("nope"), "{message}");
    assert_not_found(&proxy.manage("DELETE", "/credentials/nope", None));

    // In use by a model: refused, and both stay.
    let id = new_model(
        &proxy,
        json!({"model_name": "m", "litellm_params": {"model": "x", "litellm_credential_name": "shared"}}),
    )["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = proxy.manage("DELETE", "/credentials/shared", None);
    let message = assert_lite_error(&response, 400, "bad_request_error", None);
    assert!(message.contains(&id), "{message}");
    ok(get(&proxy, "/credentials/by_name/shared"));
    assert_eq!(info_names(&ok(get(&proxy, "/model/info"))), ["m"]);

    // Once the model no longer refers to it, it can go.
    ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"litellm_credential_name": null}}),
    ));
    let deleted = ok(proxy.manage("DELETE", "/credentials/shared", None));
    assert_eq!(
        deleted,
        json!({"success": true, "credential_name": "shared"})
    );
    assert_not_found(&get(&proxy, "/credentials/by_name/shared"));
    assert_eq!(ok(get(&proxy, "/credentials")), json!({"credentials": []}));

    // Names are percent-decoded in the path.
    ok(create("team a/prod"));
    let one = ok(get(&proxy, "/credentials/by_name/team%20a%2Fprod"));
    assert_eq!(one["credential_name"], "team a/prod");
    ok(proxy.manage("DELETE", "/credentials/team%20a%2Fprod", None));
    assert_eq!(ok(get(&proxy, "/credentials")), json!({"credentials": []}));
}

// --- keys -------------------------------------------------------------------------

#[test]
fn key_generate_with_an_empty_body() {
    let (_mock, proxy) = start();
    let mut secrets = BTreeSet::new();
    for body in ["{}", ""] {
        let answer = ok(raw(
            &proxy,
            "POST",
            "/key/generate",
            body,
            Some(MANAGEMENT_TOKEN),
        ));
        let mut fields = KEY_FIELDS.to_vec();
        fields.push("key");
        assert_fields(&answer, &fields);
        let key = secret(&answer);
        assert!(key.starts_with("sk-") && key.len() >= 32, "{key}");
        assert_eq!(answer["token"], sha256_hex(&key));
        assert_hint(&answer["key_name"], &key);
        assert!(uuid::Uuid::parse_str(answer["id"].as_str().unwrap()).is_ok());
        for field in [
            "key_alias",
            "project_id",
            "user_id",
            "team_id",
            "expires",
            "max_budget",
            "max_requests",
            "last_used_at",
        ] {
            assert!(answer[field].is_null(), "{field} in {answer}");
        }
        assert_eq!(answer["models"], json!([]));
        assert_eq!(answer["aliases"], json!({}));
        assert_eq!(answer["metadata"], json!({}));
        assert_eq!(answer["spend"], 0.0);
        assert_eq!(answer["request_count"], 0);
        assert_eq!(answer["blocked"], false);
        assert!(seconds_from_now(&answer["created_at"]).abs() < 60.0);
        assert!(secrets.insert(key));
        // The key is known: it may list models.
        ok(get_as(&proxy, "/models", secrets.last().unwrap()));
    }
}

#[test]
fn key_generate_with_every_field() {
    let (_mock, proxy) = start();
    let answer = generate(
        &proxy,
        json!({
            "models": ["gpt-x", "claude"],
            "aliases": {"fast": "gpt-x"},
            "duration": "7d",
            "key_alias": "ci-key",
            "user_id": "u-1",
            "team_id": "t-1",
            "project_id": proxy.project_id,
            "max_budget": "10.5",
            "spend": 2,
            "max_requests": "100",
            "metadata": {"env": "ci", "n": 1},
        }),
    );
    let key = secret(&answer);
    assert_eq!(answer["token"], sha256_hex(&key));
    assert_eq!(answer["models"], json!(["gpt-x", "claude"]));
    assert_eq!(answer["aliases"], json!({"fast": "gpt-x"}));
    assert_eq!(answer["key_alias"], "ci-key");
    assert_eq!(answer["user_id"], "u-1");
    assert_eq!(answer["team_id"], "t-1");
    assert_eq!(answer["project_id"], proxy.project_id.as_str());
    assert_eq!(answer["max_budget"], 10.5);
    assert_eq!(answer["spend"], 2.0);
    assert_eq!(answer["max_requests"], 100);
    assert_eq!(answer["metadata"], json!({"env": "ci", "n": 1}));
    let expires = seconds_from_now(&answer["expires"]);
    assert!((expires - 7.0 * 86400.0).abs() < 10.0, "{expires}");
    // What /key/info shows afterwards is the same record, without the secret.
    let shown = key_info(&proxy, &key);
    assert_fields(&shown, &KEY_FIELDS);
    let mut expected = answer.clone();
    expected.as_object_mut().unwrap().remove("key");
    assert_eq!(shown, expected);
    assert!(!key_info(&proxy, &key).to_string().contains(&key));
    // A chosen secret.
    let chosen = generate(&proxy, json!({"key": "sk-chosen-secret-0042"}));
    assert_eq!(chosen["key"], "sk-chosen-secret-0042");
    assert_eq!(chosen["token"], sha256_hex("sk-chosen-secret-0042"));
}

#[test]
fn key_durations() {
    let (_mock, proxy) = start();
    for (duration, seconds) in [
        ("30s", 30.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("90m", 5400.0),
    ] {
        let answer = generate(&proxy, json!({"duration": duration}));
        let ahead = seconds_from_now(&answer["expires"]);
        assert!(
            ahead <= seconds + 1.0 && ahead > seconds - 10.0,
            "{duration}: expires in {ahead}s"
        );
    }
    for duration in [json!(""), json!(null)] {
        assert!(generate(&proxy, json!({"duration": duration}))["expires"].is_null());
    }
    for duration in ["soon", "0s", "-5m", "7 parsecs"] {
        let response = post(&proxy, "/key/generate", json!({"duration": duration}));
        let message = assert_bad_field(&response, "duration");
        assert!(!message.contains("duration: duration"), "{message}");
    }
    assert_bad_field(
        &post(&proxy, "/key/generate", json!({"duration": 30})),
        "duration",
    );

    // An expired key is refused.
    let answer = generate(
        &proxy,
        json!({"duration": "1s", "project_id": proxy.project_id}),
    );
    let key = secret(&answer);
    std::thread::sleep(Duration::from_millis(2100));
    proxy.call(chat_with(&key)).assert_error(401, "key_expired");
    let response = get_as(&proxy, "/models", &key);
    let message = assert_lite_error(&response, 401, "auth_error", None);
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn key_generate_errors_name_the_field() {
    let (_mock, proxy) = start();
    generate(&proxy, json!({"key_alias": "taken"}));
    let message = assert_bad_field(
        &post(&proxy, "/key/generate", json!({"key_alias": "taken"})),
        "key_alias",
    );
    assert!(message.contains("taken"), "{message}");
    assert_each_bad(
        &proxy,
        "/key/generate",
        json!([
            ["max_budget", {"max_budget": -1}],
            ["max_budget", {"max_budget": "lots"}],
            ["max_budget", {"max_budget": true}],
            ["spend", {"spend": -0.5}],
            ["max_requests", {"max_requests": 1.5}],
            ["max_requests", {"max_requests": -3}],
            ["max_requests", {"max_requests": "x"}],
            ["models", {"models": "gpt-x"}],
            ["models[0]", {"models": [1]}],
            ["aliases", {"aliases": ["a"]}],
            ["metadata", {"metadata": "x"}],
            ["user_id", {"user_id": 5}],
            ["project_id", {"project_id": "not-a-uuid"}],
        ]),
    );
    let response = post(
        &proxy,
        "/key/generate",
        json!({"project_id": "00000000-0000-0000-0000-000000000000"}),
    );
    assert_not_found(&response);
    let response = post(&proxy, "/key/generate", json!({"key": "short"}));
    assert_lite_error(&response, 400, "bad_request_error", None);
    let response = post(&proxy, "/key/generate", json!({"key": CLIENT_KEY}));
    assert_lite_error(&response, 400, "bad_request_error", None);
    let response = raw(
        &proxy,
        "POST",
        "/key/generate",
        "{\"models\":",
        Some(MANAGEMENT_TOKEN),
    );
    assert_lite_error(&response, 400, "bad_request_error", None);
    // Only the seeded key and the one with the alias exist.
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 2);
}

#[test]
fn generated_keys_pass_through_only_with_a_project() {
    let (mock, proxy) = start();
    let without = secret(&generate(&proxy, json!({})));
    let before = mock_requests(&mock);
    let response = proxy.call(chat_with(&without));
    response.assert_error(403, "key_without_project");
    assert_eq!(
        mock_requests(&mock),
        before + 1,
        "only the stats call: nothing went upstream"
    );

    let answer = generate(&proxy, json!({"project_id": proxy.project_id}));
    let with = secret(&answer);
    let response = proxy.call(chat_with(&with));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["object"], "chat.completion");
    assert_eq!(
        header_values(&mock.last_request_headers(), "authorization"),
        [format!("Bearer {UPSTREAM_KEY}")]
    );
    // The request is counted on the key, as both APIs show it.
    let id = answer["id"].as_str().unwrap().to_string();
    let token = wait_request_count(&proxy, &id, 1, Duration::from_secs(10));
    assert_eq!(token["request_count"], 1, "{token}");
    let info = key_info(&proxy, &with);
    assert_eq!(info["request_count"], 1, "{info}");
    assert!(
        seconds_from_now(&info["last_used_at"]).abs() < 60.0,
        "{info}"
    );

    // A registered model is another matter: its requests go to the
    // deployment with the deployment's key, project or not.
    new_model(
        &proxy,
        json!({"model_name": "routed", "litellm_params": {"model": "openai/routed-upstream",
            "api_base": format!("{}/v1", mock.url()), "api_key": "sk-deployment-0123456789"}}),
    );
    let body = json!({"model": "routed", "messages": [{"role": "user", "content": "hi"}]});
    let response = proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(&without));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "routed-upstream");
    assert_eq!(
        header_values(&mock.last_request_headers(), "authorization"),
        ["Bearer sk-deployment-0123456789"]
    );
}

#[test]
fn key_info_by_secret_token_and_id() {
    let (_mock, proxy) = start();
    let answer = generate(&proxy, json!({"key_alias": "lookup", "user_id": "u-9"}));
    let key = secret(&answer);
    let token = sha256_hex(&key);
    let id = answer["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    for name in [&key, &token, &id] {
        let body = ok(get(&proxy, &format!("/key/info?key={}", encode(name))));
        assert_fields(&body, &["key", "info"]);
        assert_eq!(body["key"], name.as_str());
        assert_fields(&body["info"], &KEY_FIELDS);
        assert_eq!(body["info"]["token"], token.as_str());
        assert_eq!(body["info"]["id"], id.as_str());
        assert_eq!(body["info"]["key_alias"], "lookup");
        seen.push(body["info"].clone());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
    assert_bad_field(&get(&proxy, "/key/info"), "key");
    assert_bad_field(&get(&proxy, "/key/info?key="), "key");
    for unknown in [
        "nope",
        "sk-unknown-but-long-secret-value",
        &sha256_hex("sk-other"),
        "00000000-0000-0000-0000-000000000000",
    ] {
        let response = get(&proxy, &format!("/key/info?key={}", encode(unknown)));
        let message = assert_not_found(&response);
        if unknown.len() > 12 {
            assert!(!message.contains(unknown), "the key is repeated: {message}");
        } else {
            assert!(message.contains(unknown), "{message}");
        }
    }
}

#[test]
fn unknown_keys_with_multibyte_text_are_404_and_the_server_lives() {
    let (_mock, proxy) = start();
    let unknown = "aééééééééé";
    let response = get(&proxy, &format!("/key/info?key={}", encode(unknown)));
    let message = assert_not_found(&response);
    assert!(message.contains("aéééééé"), "{message}");
    for path in ["/key/update", "/key/delete"] {
        let body = json!({"key": unknown, "keys": [unknown]});
        assert_not_found(&post(&proxy, path, body));
    }
    ok(raw(&proxy, "GET", "/health/readiness", "", None));
    ok(get(&proxy, "/key/list"));
}

#[test]
fn key_list_pages_and_filters() {
    let mock = Mock::start();
    let proxy = start_empty(&mock);
    assert_eq!(
        ok(get(&proxy, "/key/list")),
        json!({"keys": [], "total_count": 0, "current_page": 1, "total_pages": 0})
    );
    let specs = [
        json!({"user_id": "ann", "team_id": "red", "key_alias": "ann-1"}),
        json!({"user_id": "ann", "team_id": "blue", "key_alias": "ann-2"}),
        json!({"user_id": "bob", "team_id": "red"}),
        json!({"user_id": "bob"}),
        json!({"team_id": "red"}),
        json!({}),
        json!({"key_alias": "solo"}),
    ];
    let answers: Vec<Value> = specs.iter().map(|s| generate(&proxy, s.clone())).collect();
    let tokens: Vec<String> = answers
        .iter()
        .map(|a| a["token"].as_str().unwrap().to_string())
        .collect();

    let first = ok(get(&proxy, "/key/list"));
    assert_fields(
        &first,
        &["keys", "total_count", "current_page", "total_pages"],
    );
    assert_eq!(first["total_count"], 7);
    assert_eq!(first["current_page"], 1);
    assert_eq!(first["total_pages"], 1);
    assert_eq!(sorted(listed_tokens(&first)), sorted(tokens.clone()));
    assert!(
        first["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string)
    );

    // Pages of three: 3 + 3 + 1, every key once.
    let mut paged = Vec::new();
    for (page, count) in [(1, 3), (2, 3), (3, 1)] {
        let body = ok(get(&proxy, &format!("/key/list?page={page}&size=3")));
        assert_eq!(body["total_count"], 7);
        assert_eq!(body["current_page"], page);
        assert_eq!(body["total_pages"], 3);
        assert_eq!(body["keys"].as_array().unwrap().len(), count, "{body}");
        paged.extend(listed_tokens(&body));
    }
    assert_eq!(sorted(paged), sorted(tokens.clone()));
    let beyond = ok(get(&proxy, "/key/list?page=4&size=3"));
    assert_eq!(
        beyond,
        json!({"keys": [], "total_count": 7, "current_page": 4, "total_pages": 3})
    );

    // Filters.
    let only = |query: &str| {
        let body = ok(get(&proxy, &format!("/key/list?{query}")));
        assert_eq!(body["total_count"], body["keys"].as_array().unwrap().len());
        sorted(listed_tokens(&body))
    };
    let pick = |indexes: &[usize]| sorted(indexes.iter().map(|&i| tokens[i].clone()).collect());
    assert_eq!(only("user_id=ann"), pick(&[0, 1]));
    assert_eq!(only("user_id=bob"), pick(&[2, 3]));
    assert_eq!(only("team_id=red"), pick(&[0, 2, 4]));
    assert_eq!(only("user_id=bob&team_id=red"), pick(&[2]));
    assert_eq!(only("key_alias=solo"), pick(&[6]));
    assert_eq!(only(&format!("key_hash={}", tokens[5])), pick(&[5]));
    assert_eq!(only("user_id=nobody"), Vec::<String>::new());
    // Filters apply before paging: three red keys make two pages of two.
    let red_page_two = ok(get(&proxy, "/key/list?team_id=red&size=2&page=2"));
    assert_eq!(red_page_two["total_count"], 3);
    assert_eq!(red_page_two["total_pages"], 2);
    assert_eq!(red_page_two["keys"].as_array().unwrap().len(), 1);

    // Full objects instead of tokens; never the secret.
    let full = ok(get(&proxy, "/key/list?return_full_object=true&user_id=ann"));
    let keys = full["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_fields(key, &KEY_FIELDS);
        assert_eq!(key["user_id"], "ann");
    }
    for answer in &answers {
        assert!(!full.to_string().contains(&secret(answer)));
    }
    let not_full = ok(get(
        &proxy,
        "/key/list?return_full_object=false&user_id=ann",
    ));
    assert!(
        not_full["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string)
    );

    for (query, param) in [
        ("page=0", "page"),
        ("page=x", "page"),
        ("page=-1", "page"),
        ("size=0", "size"),
        ("size=101", "size"),
        ("size=ten", "size"),
    ] {
        let response = get(&proxy, &format!("/key/list?{query}"));
        let message = assert_bad_field(&response, param);
        assert!(!message.contains("18446744073709551615"), "{message}");
    }
    assert_eq!(ok(get(&proxy, "/key/list?size=100"))["total_pages"], 1);
}

#[test]
fn key_update_changes_fields_and_null_clears() {
    let (_mock, proxy) = start();
    let answer = generate(
        &proxy,
        json!({"key_alias": "before", "user_id": "u-1", "team_id": "t-1", "max_budget": 5,
            "max_requests": 10, "duration": "1h", "models": ["a"], "aliases": {"x": "a"},
            "metadata": {"old": true}}),
    );
    let key = secret(&answer);
    let token = answer["token"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));

    // By secret: set fields, numeric strings accepted.
    let updated = ok(post(
        &proxy,
        "/key/update",
        json!({"key": key, "key_alias": "after", "user_id": "u-2", "team_id": "t-2",
            "max_budget": "7.5", "spend": "1.25", "max_requests": "20", "duration": "24h",
            "models": ["a", "b"], "aliases": {"y": "b"}, "metadata": {"new": 1}}),
    ));
    assert_fields(&updated, &KEY_FIELDS);
    assert_eq!(updated["token"], token.as_str());
    assert_eq!(updated["key_alias"], "after");
    assert_eq!(updated["user_id"], "u-2");
    assert_eq!(updated["team_id"], "t-2");
    assert_eq!(updated["max_budget"], 7.5);
    assert_eq!(updated["spend"], 1.25);
    assert_eq!(updated["max_requests"], 20);
    assert_eq!(updated["models"], json!(["a", "b"]));
    assert_eq!(updated["aliases"], json!({"y": "b"}));
    assert_eq!(updated["metadata"], json!({"new": 1}));
    assert!((seconds_from_now(&updated["expires"]) - 86400.0).abs() < 10.0);
    assert_eq!(updated["created_at"], answer["created_at"]);
    assert!(seconds_from_now(&updated["updated_at"]) > seconds_from_now(&answer["updated_at"]));
    assert_eq!(key_info(&proxy, &key), updated);

    // By token: fields left out stay; null clears.
    let cleared = ok(post(
        &proxy,
        "/key/update",
        json!({"key": token, "key_alias": null, "user_id": null, "team_id": null,
            "max_budget": null, "max_requests": null, "duration": null}),
    ));
    for field in [
        "key_alias",
        "user_id",
        "team_id",
        "max_budget",
        "max_requests",
        "expires",
    ] {
        assert!(cleared[field].is_null(), "{field} in {cleared}");
    }
    assert_eq!(cleared["models"], json!(["a", "b"]));
    assert_eq!(cleared["metadata"], json!({"new": 1}));
    assert_eq!(cleared["spend"], 1.25);
    // The freed alias can be taken by another key.
    generate(&proxy, json!({"key_alias": "before"}));
    generate(&proxy, json!({"key_alias": "after"}));

    // By id: an empty list opens the key to every model.
    let id = answer["id"].as_str().unwrap();
    let opened = ok(post(
        &proxy,
        "/key/update",
        json!({"key": id, "models": []}),
    ));
    assert_eq!(opened["models"], json!([]));

    // Errors.
    assert_not_found(&post(&proxy, "/key/update", json!({"key": "nope"})));
    assert_bad_field(&post(&proxy, "/key/update", json!({})), "key");
    let message = assert_bad_field(
        &post(
            &proxy,
            "/key/update",
            json!({"key": key, "key_alias": "before"}),
        ),
        "key_alias",
    );
    assert!(message.contains("before"), "{message}");
    assert_each_bad(
        &proxy,
        "/key/update",
        json!([
            ["blocked", {"key": key, "blocked": "yes"}],
            ["max_budget", {"key": key, "max_budget": -2}],
            ["max_requests", {"key": key, "max_requests": 0.5}],
            ["duration", {"key": key, "duration": "whenever"}],
            ["models", {"key": key, "models": "a"}],
            ["metadata", {"key": key, "metadata": []}],
        ]),
    );
    assert_eq!(key_info(&proxy, &key), opened);
}

#[test]
fn blocked_keys_get_key_revoked_on_every_worker() {
    let (_mock, proxy) = start();
    let key = secret(&generate(&proxy, json!({"project_id": proxy.project_id})));
    let mut conns = conn_per_worker(&proxy, 2);
    for conn in &mut conns {
        assert_eq!(send_on(conn, &chat_with(&key)).status, 200);
    }
    let blocked = ok(post(
        &proxy,
        "/key/update",
        json!({"key": key, "blocked": true}),
    ));
    assert_eq!(blocked["blocked"], true);
    for conn in &mut conns {
        send_on(conn, &chat_with(&key)).assert_error(401, "key_revoked");
    }
    assert_eq!(key_info(&proxy, &key)["blocked"], true);
    let unblocked = ok(post(
        &proxy,
        "/key/update",
        json!({"key": key, "blocked": false}),
    ));
    assert_eq!(unblocked["blocked"], false);
    for conn in &mut conns {
        assert_eq!(send_on(conn, &chat_with(&key)).status, 200);
    }
}

#[test]
fn key_delete_by_keys_and_aliases_all_or_nothing() {
    let (_mock, proxy) = start();
    let by_secret = secret(&generate(&proxy, json!({"project_id": proxy.project_id})));
    let by_token = generate(&proxy, json!({}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let by_alias = secret(&generate(
        &proxy,
        json!({"key_alias": "doomed", "project_id": proxy.project_id}),
    ));
    assert_eq!(proxy.call(chat_with(&by_secret)).status, 200);
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 4);

    // One unknown key or alias: 404, and nothing is deleted.
    let attempts = [
        json!({"keys": [by_secret, "nope"]}),
        json!({"keys": [by_secret], "key_aliases": ["no-such-alias"]}),
        json!({"key_aliases": ["doomed", "no-such-alias"]}),
    ];
    for body in attempts {
        let message = assert_not_found(&post(&proxy, "/key/delete", body.clone()));
        assert!(message.contains("no"), "{body}: {message}");
    }
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 4);
    assert_eq!(proxy.call(chat_with(&by_secret)).status, 200);

    for body in [json!({}), json!({"keys": [], "key_aliases": []})] {
        assert_bad_field(&post(&proxy, "/key/delete", body), "keys");
    }
    assert_bad_field(&post(&proxy, "/key/delete", json!({"keys": "x"})), "keys");

    let deleted = ok(post(
        &proxy,
        "/key/delete",
        json!({"keys": [by_secret, by_token], "key_aliases": ["doomed"]}),
    ));
    assert_eq!(
        deleted,
        json!({"deleted_keys": [by_secret, by_token, "doomed"]})
    );
    for key in [&by_secret, &by_alias] {
        proxy
            .call(chat_with(key))
            .assert_error(401, "invalid_api_key");
    }
    for key in [&by_secret, &by_token, &by_alias] {
        assert_not_found(&get(&proxy, &format!("/key/info?key={}", encode(key))));
    }
    // Only the seeded key is left, and it still works.
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 1);
    assert_eq!(proxy.call(chat_with(CLIENT_KEY)).status, 200);
    assert_not_found(&post(
        &proxy,
        "/key/delete",
        json!({"key_aliases": ["doomed"]}),
    ));
}

#[test]
fn keys_and_manage_tokens_are_the_same_records() {
    let (_mock, proxy) = start();
    // Made with /key/generate, seen by /manage/tokens.
    let answer = generate(
        &proxy,
        json!({"project_id": proxy.project_id, "key_alias": "lite", "max_requests": 5,
            "metadata": {"from": "litellm"}}),
    );
    let key = secret(&answer);
    let id = answer["id"].as_str().unwrap().to_string();
    let tokens = ok(get(&proxy, "/manage/tokens"));
    let listed = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {tokens}"))
        .clone();
    assert_eq!(listed["alias"], "lite");
    assert_eq!(listed["project_id"], proxy.project_id.as_str());
    assert_eq!(listed["max_requests"], 5);
    assert_eq!(listed["metadata"], json!({"from": "litellm"}));
    assert_eq!(listed["is_active"], true);
    assert_hint(&listed["token"], &key);
    assert_eq!(
        ok(get(&proxy, &format!("/manage/tokens/{key}")))["id"],
        id.as_str()
    );

    // Made with /manage/tokens, seen by /key/*.
    let made = proxy.create_token(json!({"alias": "manage", "max_requests": 3}));
    let manage_secret = made["token"].as_str().unwrap().to_string();
    let manage_id = made["id"].as_str().unwrap().to_string();
    let list = ok(get(&proxy, "/key/list"));
    assert_eq!(list["total_count"], 3);
    assert!(
        listed_tokens(&list).contains(&sha256_hex(&manage_secret)),
        "{list}"
    );
    let info = key_info(&proxy, &manage_secret);
    assert_eq!(info["id"], manage_id.as_str());
    assert_eq!(info["key_alias"], "manage");
    assert_eq!(info["project_id"], proxy.project_id.as_str());
    assert_eq!(info["max_requests"], 3);
    assert!(info["expires"].is_string(), "{info}");
    assert_eq!(
        ok(get(&proxy, "/key/list?key_alias=manage"))["total_count"],
        1
    );

    // A change through one API shows in the other.
    ok(post(
        &proxy,
        "/key/update",
        json!({"key": manage_id, "key_alias": "renamed", "metadata": {"v": 2}}),
    ));
    let token = ok(get(&proxy, &format!("/manage/tokens/{manage_id}")));
    assert_eq!(token["alias"], "renamed");
    assert_eq!(token["metadata"], json!({"v": 2}));
    let response = proxy.manage("DELETE", &format!("/manage/tokens/{id}"), None);
    assert_eq!(response.status, 204);
    assert_eq!(key_info(&proxy, &key)["blocked"], true);
    proxy.call(chat_with(&key)).assert_error(401, "key_revoked");

    // Both keys work on the pass-through path, and deleting one via /key/delete
    // removes it from /manage/tokens.
    assert_eq!(proxy.call(chat_with(&manage_secret)).status, 200);
    ok(post(
        &proxy,
        "/key/delete",
        json!({"keys": [manage_secret]}),
    ));
    let response = proxy.manage("GET", &format!("/manage/tokens/{manage_id}"), None);
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        !ok(get(&proxy, "/manage/tokens"))
            .to_string()
            .contains(&manage_id)
    );
}

// --- users -------------------------------------------------------------------------

#[test]
fn user_new_defaults_roles_and_the_automatic_key() {
    let (_mock, proxy) = start();
    let answer = ok(post(&proxy, "/user/new", json!({})));
    let mut fields = USER_FIELDS.to_vec();
    fields.extend(["key", "token"]);
    assert_fields(&answer, &fields);
    assert!(uuid::Uuid::parse_str(answer["user_id"].as_str().unwrap()).is_ok());
    assert_eq!(answer["user_role"], "internal_user");
    for field in ["user_email", "user_alias", "max_budget"] {
        assert!(answer[field].is_null(), "{field} in {answer}");
    }
    assert_eq!(answer["teams"], json!([]));
    assert_eq!(answer["models"], json!([]));
    assert_eq!(answer["spend"], 0.0);
    assert_eq!(answer["metadata"], json!({}));
    let key = secret(&answer);
    assert_eq!(answer["token"], sha256_hex(&key));
    // The key belongs to the user and works.
    let info = key_info(&proxy, &key);
    assert_eq!(info["user_id"], answer["user_id"]);
    ok(get_as(&proxy, "/models", &key));

    for role in ROLES {
        let user = ok(post(&proxy, "/user/new", json!({"user_role": role})));
        assert_eq!(user["user_role"], role);
    }
    for role in [json!("god"), json!("PROXY_ADMIN"), json!(1)] {
        assert_bad_field(
            &post(&proxy, "/user/new", json!({"user_role": role})),
            "user_role",
        );
    }
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 5);
}

#[test]
fn user_new_with_every_field_and_without_a_key() {
    let (_mock, proxy) = start();
    let answer = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "user_email": "Ann@Example.com", "user_role": "proxy_admin",
            "user_alias": "Ann", "teams": ["red", "blue"], "max_budget": "20",
            "models": ["gpt-x"], "metadata": {"dept": "ml"}, "auto_create_key": false}),
    ));
    assert_fields(&answer, &USER_FIELDS);
    assert_eq!(answer["user_id"], "ann");
    assert_eq!(answer["user_email"], "Ann@Example.com");
    assert_eq!(answer["user_role"], "proxy_admin");
    assert_eq!(answer["user_alias"], "Ann");
    assert_eq!(answer["teams"], json!(["red", "blue"]));
    assert_eq!(answer["max_budget"], 20.0);
    assert_eq!(answer["models"], json!(["gpt-x"]));
    assert_eq!(answer["metadata"], json!({"dept": "ml"}));
    assert_eq!(ok(get(&proxy, "/key/list?user_id=ann"))["total_count"], 0);

    // With a key: the key carries the user's models.
    let bob = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "models": ["a", "b"], "auto_create_key": true}),
    ));
    let info = key_info(&proxy, &secret(&bob));
    assert_eq!(info["user_id"], "bob");
    assert_eq!(info["models"], json!(["a", "b"]));

    let taken = post(&proxy, "/user/new", json!({"user_id": "ann"}));
    let message = assert_bad_field(&taken, "user_id");
    assert!(message.contains("ann"), "{message}");
    assert_each_bad(
        &proxy,
        "/user/new",
        json!([
            ["user_email", {"user_email": "not-an-email"}],
            ["max_budget", {"max_budget": -1}],
            ["max_budget", {"max_budget": "x"}],
            ["teams", {"teams": "red"}],
            ["models", {"models": {}}],
            ["auto_create_key", {"auto_create_key": "no"}],
        ]),
    );
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 2);
}

#[test]
fn user_emails_are_unique_whatever_their_case() {
    let (_mock, proxy) = start();
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "user_email": "Ann@Example.com"}),
    ));
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "user_email": "bob@example.com"}),
    ));
    for email in ["ann@example.com", "ANN@EXAMPLE.COM", " Ann@Example.com "] {
        let response = post(&proxy, "/user/new", json!({"user_email": email}));
        assert_bad_field(&response, "user_email");
        let response = post(
            &proxy,
            "/user/update",
            json!({"user_id": "bob", "user_email": email}),
        );
        assert_bad_field(&response, "user_email");
    }
    // A user may change the case of its own email.
    let same = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "user_email": "ANN@example.com"}),
    ));
    assert_eq!(same["user_email"], "ANN@example.com");
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 2);
}

#[test]
fn user_list_pages() {
    let mock = Mock::start();
    let proxy = start_empty(&mock);
    assert_eq!(
        ok(get(&proxy, "/user/list")),
        json!({"users": [], "total": 0, "page": 1, "page_size": 25, "total_pages": 0})
    );
    let ids: Vec<String> = (0..5).map(|i| format!("user-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let role = if i % 2 == 0 {
            "internal_user"
        } else {
            "proxy_admin_viewer"
        };
        ok(post(
            &proxy,
            "/user/new",
            json!({"user_id": id, "user_role": role, "auto_create_key": false}),
        ));
    }
    let all = ok(get(&proxy, "/user/list"));
    assert_fields(
        &all,
        &["users", "total", "page", "page_size", "total_pages"],
    );
    let users = all["users"].as_array().unwrap();
    assert_eq!(users.len(), 5);
    for user in users {
        assert_fields(user, &USER_FIELDS);
    }
    let mut paged = Vec::new();
    for (page, count) in [(1, 2), (2, 2), (3, 1)] {
        let body = ok(get(&proxy, &format!("/user/list?page={page}&page_size=2")));
        assert_eq!(body["total"], 5);
        assert_eq!(body["page"], page);
        assert_eq!(body["page_size"], 2);
        assert_eq!(body["total_pages"], 3);
        let users = body["users"].as_array().unwrap();
        assert_eq!(users.len(), count);
        paged.extend(
            users
                .iter()
                .map(|u| u["user_id"].as_str().unwrap().to_string()),
        );
    }
    // Oldest first.
    assert_eq!(paged, ids);
    let admins = ok(get(&proxy, "/user/list?role=proxy_admin_viewer"));
    assert_eq!(admins["total"], 2);
    let names: Vec<&str> = admins["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["user-1", "user-3"]);
    for (query, param) in [
        ("page=0", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("role=god", "user_role"),
    ] {
        assert_bad_field(&get(&proxy, &format!("/user/list?{query}")), param);
    }
}

#[test]
fn user_info_shows_the_user_and_its_keys() {
    let (_mock, proxy) = start();
    let ann = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "teams": ["red"], "user_email": "ann@example.com"}),
    ));
    let second = generate(&proxy, json!({"user_id": "ann", "key_alias": "ann-2"}));
    generate(&proxy, json!({"user_id": "bob"}));
    let info = ok(get(&proxy, "/user/info?user_id=ann"));
    assert_fields(&info, &["user_id", "user_info", "keys", "teams"]);
    assert_eq!(info["user_id"], "ann");
    assert_eq!(info["teams"], json!(["red"]));
    assert_fields(&info["user_info"], &USER_FIELDS);
    assert_eq!(info["user_info"]["user_email"], "ann@example.com");
    let keys = info["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_fields(key, &KEY_FIELDS);
        assert_eq!(key["user_id"], "ann");
    }
    let tokens: BTreeSet<&str> = keys.iter().map(|k| k["token"].as_str().unwrap()).collect();
    assert_eq!(
        tokens,
        BTreeSet::from([
            ann["token"].as_str().unwrap(),
            second["token"].as_str().unwrap()
        ])
    );
    assert!(!info.to_string().contains(&secret(&ann)));
    let message = assert_not_found(&get(&proxy, "/user/info?user_id=nobody"));
    assert!(message.contains("nobody"), "{message}");
    assert_bad_field(&get(&proxy, "/user/info"), "user_id");
    assert_bad_field(&get(&proxy, "/user/info?user_id="), "user_id");
}

#[test]
fn user_update_changes_fields_and_null_clears() {
    let (_mock, proxy) = start();
    let created = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "user_email": "bob@example.com", "user_alias": "Bob",
            "max_budget": 5, "teams": ["red"], "models": ["a"], "auto_create_key": false}),
    ));
    let updated = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "bob", "user_email": "robert@example.com",
            "user_role": "internal_user_viewer", "user_alias": "Robert", "teams": ["blue"],
            "max_budget": "3.5", "models": ["b", "c"], "metadata": {"k": "v"}}),
    ));
    assert_fields(&updated, &USER_FIELDS);
    assert_eq!(updated["user_email"], "robert@example.com");
    assert_eq!(updated["user_role"], "internal_user_viewer");
    assert_eq!(updated["user_alias"], "Robert");
    assert_eq!(updated["teams"], json!(["blue"]));
    assert_eq!(updated["max_budget"], 3.5);
    assert_eq!(updated["models"], json!(["b", "c"]));
    assert_eq!(updated["metadata"], json!({"k": "v"}));
    assert_eq!(updated["created_at"], created["created_at"]);
    let cleared = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "bob", "user_email": null, "user_alias": null, "max_budget": null}),
    ));
    for field in ["user_email", "user_alias", "max_budget"] {
        assert!(cleared[field].is_null(), "{field} in {cleared}");
    }
    assert_eq!(cleared["models"], json!(["b", "c"]));
    assert_eq!(cleared["user_role"], "internal_user_viewer");
    assert_eq!(
        ok(get(&proxy, "/user/info?user_id=bob"))["user_info"],
        cleared
    );
    // The email is free again.
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_email": "bob@example.com"}),
    ));

    assert_not_found(&post(&proxy, "/user/update", json!({"user_id": "nobody"})));
    assert_bad_field(&post(&proxy, "/user/update", json!({})), "user_id");
    assert_each_bad(
        &proxy,
        "/user/update",
        json!([
            ["user_role", {"user_id": "bob", "user_role": "root"}],
            ["user_email", {"user_id": "bob", "user_email": "nope"}],
            ["max_budget", {"user_id": "bob", "max_budget": -1}],
            ["teams", {"user_id": "bob", "teams": 1}],
        ]),
    );
}

#[test]
fn user_delete_removes_their_keys() {
    let (_mock, proxy) = start();
    let ann = ok(post(&proxy, "/user/new", json!({"user_id": "ann"})));
    let auto_key = secret(&ann);
    let project_key = secret(&generate(
        &proxy,
        json!({"user_id": "ann", "project_id": proxy.project_id}),
    ));
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "auto_create_key": false}),
    ));
    let bob_key = secret(&generate(
        &proxy,
        json!({"user_id": "bob", "project_id": proxy.project_id}),
    ));
    assert_eq!(proxy.call(chat_with(&project_key)).status, 200);
    // The automatic key has no project: known, but not for pass-through.
    proxy
        .call(chat_with(&auto_key))
        .assert_error(403, "key_without_project");

    // One unknown user: 404, nobody is deleted.
    let response = post(
        &proxy,
        "/user/delete",
        json!({"user_ids": ["ann", "nobody"]}),
    );
    let message = assert_not_found(&response);
    assert!(message.contains("nobody"), "{message}");
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 2);
    assert_eq!(proxy.call(chat_with(&project_key)).status, 200);
    assert_bad_field(&post(&proxy, "/user/delete", json!({})), "user_ids");
    assert_bad_field(
        &post(&proxy, "/user/delete", json!({"user_ids": []})),
        "user_ids",
    );

    let deleted = ok(post(&proxy, "/user/delete", json!({"user_ids": ["ann"]})));
    assert_eq!(
        deleted,
        json!({"deleted_users": ["ann"], "deleted_keys": 2})
    );
    for key in [&auto_key, &project_key] {
        proxy
            .call(chat_with(key))
            .assert_error(401, "invalid_api_key");
        assert_not_found(&get(&proxy, &format!("/key/info?key={}", encode(key))));
    }
    assert_not_found(&get(&proxy, "/user/info?user_id=ann"));
    assert_eq!(ok(get(&proxy, "/key/list?user_id=ann"))["total_count"], 0);
    // Bob and his key are untouched.
    assert_eq!(proxy.call(chat_with(&bob_key)).status, 200);
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 1);
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
