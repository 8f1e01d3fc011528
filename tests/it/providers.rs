//! Provider prefixes of `litellm_params.model`: a deployment of the
//! OpenAI-compatible family goes to its `api_base` with the prefix
//! stripped, its key as Bearer and no `Authorization` without a key; an
//! unknown prefix, or a provider without a default base URL and no
//! `api_base`, is refused at registration and in the config file.

use crate::common::litellm::*;
use crate::common::*;
use serde_json::{Value, json};

fn chat(proxy: &Proxy, key: &str, model: &str) -> Response {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
    });
    proxy.call(
        Req::post("/v1/chat/completions", body.to_string())
            .auth(key)
            .header("Content-Type", "application/json"),
    )
}

#[test]
fn the_family_goes_to_its_api_base_with_the_prefix_stripped() {
    let (_project_mock, proxy) = start();
    let deployment = Mock::start();
    let base = format!("{}/v1", deployment.url());
    new_model(
        &proxy,
        json!({"model_name": "compat", "litellm_params": {
            "model": "openai_compatible/m", "api_base": base, "api_key": "sk-compat"}}),
    );
    new_model(
        &proxy,
        json!({"model_name": "local", "litellm_params": {
            "model": "lm_studio/qwen/qwen3-8b", "api_base": base}}),
    );
    let key = generate_key(&proxy, json!({}));

    let response = chat(&proxy, &key, "compat");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["model"],
        "m",
        "the model went up without prefix"
    );
    let seen = deployment.last_request();
    assert_eq!(seen["target"], "/v1/chat/completions");
    let headers = headers_of(&seen);
    assert_eq!(
        header_value(&headers, "authorization"),
        Some("Bearer sk-compat")
    );

    let response = chat(&proxy, &key, "local");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "qwen/qwen3-8b");
    let headers = headers_of(&deployment.last_request());
    assert_eq!(
        header_value(&headers, "authorization"),
        None,
        "a provider that takes no key gets no Authorization header"
    );
}

#[test]
fn an_unknown_prefix_is_refused_naming_it_and_the_known_ones() {
    let (mock, proxy) = start();
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "typo", "litellm_params": {
            "model": "opnai/gpt-4o", "api_base": mock.url()}}),
    );
    let message = assert_bad_field(&response, "litellm_params.model");
    assert!(
        message.contains("unknown provider prefix \"opnai\""),
        "{message}"
    );
    assert!(message.contains("openai, groq, mistral"), "{message}");
    assert!(message.contains("openai_compatible"), "{message}");

    // Nothing was stored; a known prefix still registers, and an update
    // to an unknown one is refused the same way.
    let id = add_model(&proxy, "good", "groq/llama-3.1-8b");
    let info = get(&proxy, "/model/info");
    assert_eq!(info_names(&ok(info)), vec!["good".to_string()]);
    let response = post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"model": "grok/llama"}}),
    );
    let message = assert_bad_field(&response, "litellm_params.model");
    assert!(message.contains("\"grok\""), "{message}");
    let info = ok(get(&proxy, &format!("/model/info?litellm_model_id={id}")));
    assert_eq!(
        info["data"][0]["litellm_params"]["model"],
        "groq/llama-3.1-8b"
    );
}

#[test]
fn a_provider_without_a_default_base_needs_an_api_base() {
    let (mock, proxy) = start();
    for model in ["openai_compatible/m", "hosted_vllm/m"] {
        let response = post(
            &proxy,
            "/model/new",
            json!({"model_name": "m", "litellm_params": {"model": model}}),
        );
        let message = assert_bad_field(&response, "litellm_params.api_base");
        assert!(message.contains("api_base is required"), "{message}");
    }
    let id = add_model(&proxy, "m", "ollama/llama3");
    // Removing the api_base of a provider that needs one is refused too.
    let answer = new_model(
        &proxy,
        json!({"model_name": "v", "litellm_params": {
            "model": "hosted_vllm/m", "api_base": mock.url()}}),
    );
    let vllm = answer["model_id"].as_str().unwrap();
    let response = post(
        &proxy,
        "/model/update",
        json!({"id": vllm, "litellm_params": {"api_base": Value::Null}}),
    );
    assert_bad_field(&response, "litellm_params.api_base");
    let response = post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"model": "openai_compatible/m"}}),
    );
    assert_bad_field(&response, "litellm_params.api_base");
}

#[test]
fn a_config_with_an_unknown_prefix_stops_the_server() {
    let yaml = "model_list:\n  - model_name: m\n    litellm_params:\n      model: opnai/gpt-4o\n      api_base: http://127.0.0.1:9/v1\n";
    let exited = Proxy::builder()
        .unseeded()
        .file("config.yaml", yaml)
        .arg("--config")
        .arg("config.yaml")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    let line = exited
        .stderr
        .lines()
        .find(|l| l.contains("opnai"))
        .unwrap_or_else(|| panic!("no line names the prefix: {}", exited.stderr));
    assert!(
        line.contains("model_list[0]: litellm_params.model: unknown provider prefix \"opnai\"; known prefixes: openai,"),
        "{line}"
    );
}

#[test]
fn a_stored_deployment_with_an_unknown_prefix_is_skipped_with_a_warning() {
    let deployment = Mock::start();
    let dir = TempDir::new("providers-db");
    let db = dir.path().join("data");
    // Deployments stored before prefixes were checked.
    {
        let store = llm_proxy::store::Store::open(&db, None).expect("open the store");
        for (name, model) in [("old", "opnai/x"), ("good", "openai/x")] {
            let params = json!({"model": model, "api_base": format!("{}/v1", deployment.url())});
            store
                .create_deployment(
                    None,
                    llm_proxy::store::DeploymentChanges {
                        model_name: Some(name.into()),
                        params: Some(params.to_string()),
                        secrets: Some(None),
                        model_info: Some("{}".into()),
                    },
                )
                .expect("store a deployment");
        }
    }
    let proxy = Proxy::for_mock(&deployment)
        .unseeded()
        .arg("--db")
        .arg(db.display().to_string())
        .start();
    let key = generate_key(&proxy, json!({}));
    let response = chat(&proxy, &key, "good");
    assert_eq!(response.status, 200, "{}", response.text());
    let before = deployment.stat("requests");
    let response = chat(&proxy, &key, "old");
    assert_ne!(response.status, 200, "{}", response.text());
    assert_eq!(
        deployment.stat("requests"),
        before + 1,
        "only this stats call: nothing was sent for the skipped deployment"
    );
    wait_until(std::time::Duration::from_secs(5), || {
        proxy.proc.log().contains("model deployment skipped")
    });
    let log = proxy.proc.log();
    let line = log
        .lines()
        .find(|l| l.contains("model deployment skipped"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(line.contains("opnai"), "{line}");
}
