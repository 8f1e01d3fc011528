//! A LiteLLM-style config.yaml given to `server --config`: its models are
//! served (and cannot be changed through the API), its `num_retries` and
//! `fallbacks` apply, its `master_key` opens the management API, and
//! `os.environ/NAME` values come from the environment.

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

const FAILING: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

fn config(primary: &str, backup: &str, num_retries: u32) -> String {
    format!(
        r#"
model_list:
  - model_name: primary
    litellm_params:
      model: openai/primary-a
      api_base: {primary}/v1
      api_key: os.environ/PRIMARY_KEY
  - model_name: primary
    litellm_params:
      model: openai/primary-b
      api_base: {primary}/v1
      api_key: os.environ/PRIMARY_KEY
  - model_name: backup
    litellm_params:
      model: openai/backup-upstream
      api_base: {backup}/v1
    model_info:
      id: backup-1
      input_cost_per_token: "0.001"
router_settings:
  num_retries: {num_retries}
  fallbacks: [{{"primary": ["backup"]}}]
"#
    )
}

fn chat(proxy: &Proxy, key: &str, model: &str) -> Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(key))
}

fn key(proxy: &Proxy) -> String {
    let response = proxy.manage("POST", "/key/generate", Some(json!({})));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["key"].as_str().unwrap().to_string()
}

#[test]
fn config_models_are_served_and_fall_back() {
    let failing = ScriptedUpstream::start(FAILING, false);
    let backup = Mock::start();
    let proxy = Proxy::for_mock(&backup)
        .env("PRIMARY_KEY", "sk-primary-from-env")
        .file("config.yaml", config(&failing.url(), &backup.url(), 1))
        .arg("--config")
        .arg("config.yaml")
        .start();

    let info = proxy.manage("GET", "/model/info", None).json();
    let data = info["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert!(data.iter().all(|m| m["model_info"]["db_model"] == false));
    let backup_entry = data.iter().find(|m| m["model_name"] == "backup").unwrap();
    assert_eq!(backup_entry["model_info"]["id"], "backup-1");
    assert_eq!(backup_entry["model_info"]["input_cost_per_token"], 0.001);
    assert!(!info.to_string().contains("sk-primary-from-env"));

    // Both primaries fail (num_retries 1: two tries), then the fallback answers.
    let key = key(&proxy);
    let response = chat(&proxy, &key, "primary");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "backup-upstream");
    let tried = failing.requests();
    assert_eq!(tried.len(), 2, "both primary deployments were tried once");
    assert!(tried.iter().all(|r| {
        r.to_ascii_lowercase()
            .contains("authorization: bearer sk-primary-from-env")
    }));

    // The config's models change with the file, not through the API.
    let response = proxy.manage("POST", "/model/delete", Some(json!({"id": "backup-1"})));
    assert_eq!(response.status, 400, "{}", response.text());
    let response = proxy.manage(
        "POST",
        "/model/update",
        Some(json!({"id": "backup-1", "model_name": "renamed"})),
    );
    assert_eq!(response.status, 400);
}

#[test]
fn num_retries_zero_goes_straight_to_the_fallback() {
    let failing = ScriptedUpstream::start(FAILING, false);
    let backup = Mock::start();
    let proxy = Proxy::for_mock(&backup)
        .env("PRIMARY_KEY", "sk-primary-from-env")
        .file("config.yaml", config(&failing.url(), &backup.url(), 0))
        .arg("--config")
        .arg("config.yaml")
        .start();
    let key = key(&proxy);
    assert_eq!(chat(&proxy, &key, "primary").status, 200);
    assert_eq!(failing.requests().len(), 1);
    // No fallback for the fallback: its own failure is the answer.
    let only = Proxy::for_mock(&backup)
        .env("PRIMARY_KEY", "x")
        .file("config.yaml", config(&failing.url(), &failing.url(), 0))
        .arg("--config")
        .arg("config.yaml")
        .start();
    let key = {
        let response = only.manage("POST", "/key/generate", Some(json!({})));
        response.json()["key"].as_str().unwrap().to_string()
    };
    assert_eq!(chat(&only, &key, "primary").status, 503);
}

#[test]
fn the_master_key_of_the_config_opens_the_management_api() {
    let mock = Mock::start();
    let yaml = format!(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/m\n      api_base: {}/v1\ngeneral_settings:\n  master_key: sk-config-master\n",
        mock.url()
    );
    let proxy = Proxy::builder()
        .unseeded()
        .env_remove("MANAGEMENT_TOKEN")
        .file("config.yaml", yaml)
        .arg("--config")
        .arg("config.yaml")
        .start();
    let response = proxy.call(Req::get("/model/info").auth("sk-config-master"));
    assert_eq!(response.status, 200, "{}", response.text());
    let models: Vec<Value> = response.json()["data"].as_array().unwrap().clone();
    assert_eq!(models.len(), 1);
    let response = proxy.call(Req::get("/model/info").auth(MANAGEMENT_TOKEN));
    assert_eq!(response.status, 401);
}

#[test]
fn a_bad_config_stops_the_server_with_a_clear_message() {
    let missing_env = "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/m\n      api_key: os.environ/NOT_SET_ANYWHERE\n";
    let exited = Proxy::builder()
        .unseeded()
        .file("config.yaml", missing_env)
        .arg("--config")
        .arg("config.yaml")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("NOT_SET_ANYWHERE is not set"),
        "{}",
        exited.stderr
    );

    let no_model =
        "model_list:\n  - model_name: m\n    litellm_params:\n      api_base: http://127.0.0.1:9\n";
    let exited = Proxy::builder()
        .unseeded()
        .file("config.yaml", no_model)
        .arg("--config")
        .arg("config.yaml")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1));
    assert!(
        exited
            .stderr
            .contains("model_list[0]: litellm_params.model: required"),
        "{}",
        exited.stderr
    );
}
