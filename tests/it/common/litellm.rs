//! Helpers for the tests of the LiteLLM-compatible management API: a proxy
//! with or without the seeded project and key, requests with the master key
//! or another, LiteLLM's error envelope (`code` the status as a string,
//! `type` LiteLLM's, `param` the field), and the models, keys and listings
//! the tests make and read back.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Mock, Proxy, Req, Response};

/// The fields of a key record, as `/key/info` shows it.
pub const KEY_FIELDS: [&str; 28] = [
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
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "budget_duration",
    "soft_budget",
    "budget_reset_at",
    "model_rpm_limit",
    "model_tpm_limit",
    "model_max_budget",
];

/// A mock upstream and a proxy in front of it, with the seeded project and key.
pub fn start() -> (Mock, Proxy) {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    (mock, proxy)
}

/// A proxy with an empty store (no project, no key), in front of `mock`.
pub fn start_empty(mock: &Mock) -> Proxy {
    Proxy::for_mock(mock).unseeded().start()
}

/// `GET path` with the master key.
pub fn get(proxy: &Proxy, path: &str) -> Response {
    proxy.manage("GET", path, None)
}

/// `POST path` with the master key and a JSON body.
pub fn post(proxy: &Proxy, path: &str, body: Value) -> Response {
    proxy.manage("POST", path, Some(body))
}

/// A request with an arbitrary raw body and, optionally, a bearer key.
pub fn raw(proxy: &Proxy, method: &str, path: &str, body: &str, key: Option<&str>) -> Response {
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
pub fn get_as(proxy: &Proxy, path: &str, key: &str) -> Response {
    proxy.call(Req::get(path).auth(key))
}

/// Asserts a 200 JSON answer and returns its body.
#[track_caller]
pub fn ok(response: Response) -> Value {
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
pub fn assert_lite_error(
    response: &Response,
    status: u16,
    kind: &str,
    param: Option<&str>,
) -> String {
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
pub fn assert_bad_field(response: &Response, param: &str) -> String {
    assert_lite_error(response, 400, "bad_request_error", Some(param))
}

/// Posts each `[param, body]` of `cases` to `path`: every one is a 400
/// whose `param` and message name the field.
#[track_caller]
pub fn assert_each_bad(proxy: &Proxy, path: &str, cases: Value) {
    for case in cases.as_array().expect("an array of [param, body]") {
        let (param, body) = (case[0].as_str().unwrap(), &case[1]);
        let response = post(proxy, path, body.clone());
        let message = assert_bad_field(&response, param);
        assert!(message.starts_with(param), "{body}: {message}");
    }
}

#[track_caller]
pub fn assert_not_found(response: &Response) -> String {
    assert_lite_error(response, 404, "not_found_error", None)
}

/// What LiteLLM calls a key's `token`: the SHA-256 of the secret, in hex.
pub fn sha256_hex(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /model/new`; returns the answer.
#[track_caller]
pub fn new_model(proxy: &Proxy, body: Value) -> Value {
    ok(post(proxy, "/model/new", body))
}

/// A deployment named `name` of the upstream model `model`; returns its id.
#[track_caller]
pub fn add_model(proxy: &Proxy, name: &str, model: &str) -> String {
    let answer = new_model(
        proxy,
        json!({"model_name": name, "litellm_params": {"model": model}}),
    );
    answer["model_id"].as_str().unwrap().to_string()
}

/// A deployment named `name` that routes to `mock`: upstream model
/// `openai/{name}-upstream`, key `sk-deployment-of-{name}`, and
/// `model_info` unless it is null (see [`prices`]). Returns its id.
#[track_caller]
pub fn add_deployment(proxy: &Proxy, name: &str, mock: &Mock, model_info: Value) -> String {
    let mut body = json!({
        "model_name": name,
        "litellm_params": {
            "model": format!("openai/{name}-upstream"),
            "api_base": format!("{}/v1", mock.url()),
            "api_key": format!("sk-deployment-of-{name}"),
        },
    });
    if !model_info.is_null() {
        body["model_info"] = model_info;
    }
    new_model(proxy, body)["model_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The `model_info` of a deployment priced at `input` and `output`
/// dollars a token.
pub fn prices(input: f64, output: f64) -> Value {
    json!({"input_cost_per_token": input, "output_cost_per_token": output})
}

/// `POST /key/generate`; returns the answer.
#[track_caller]
pub fn generate(proxy: &Proxy, body: Value) -> Value {
    ok(post(proxy, "/key/generate", body))
}

/// `POST /key/generate` with `fields`; returns the new key's secret.
#[track_caller]
pub fn generate_key(proxy: &Proxy, fields: Value) -> String {
    secret(&generate(proxy, fields))
}

/// `POST /team/new` of a team with this id and nothing else; returns the
/// answer.
#[track_caller]
pub fn new_team(proxy: &Proxy, team_id: &str) -> Value {
    ok(post(proxy, "/team/new", json!({"team_id": team_id})))
}

/// The secret of a `/key/generate` (or `/user/new`) answer.
#[track_caller]
pub fn secret(answer: &Value) -> String {
    answer["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {answer}"))
        .to_string()
}

/// `GET /key/info?key=` by the master key; returns `info`.
#[track_caller]
pub fn key_info(proxy: &Proxy, key: &str) -> Value {
    let path = format!("/key/info?key={}", encode(key));
    ok(get(proxy, &path))["info"].clone()
}

pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The `id`s of an OpenAI model list, sorted (deployments made in the same
/// millisecond have no set order).
#[track_caller]
pub fn listed(list: &Value) -> Vec<String> {
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
pub fn info_names(info: &Value) -> Vec<String> {
    let names = info["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {info}"))
        .iter()
        .map(|m| m["model_name"].as_str().unwrap().to_string())
        .collect();
    sorted(names)
}

pub fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

/// The requests the mock has served, this read of the counter included
/// (`/mock/stats` is a request too).
pub fn mock_requests(mock: &Mock) -> u64 {
    mock.stat("requests")
}
