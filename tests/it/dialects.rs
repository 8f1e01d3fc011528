//! Deployments in other dialects than OpenAI's, through the gateway with
//! an OpenAI client: Azure OpenAI (its URLs, `api-key`, Entra ID tokens,
//! the v1 surface, credentials) and Anthropic Messages (requests, answers
//! and streams translated, errors mapped, usage priced, retries and
//! fallbacks), against the mock upstream's dialects and scripted upstreams
//! that send Anthropic's exact wire format.

use crate::common::litellm::*;
use crate::common::*;
use serde_json::{Value, json};

const AZURE_KEY: &str = "sk-azure-resource";
const ANTHROPIC_KEY: &str = "sk-ant-deployment";

fn chat_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"},
        ],
    })
}

fn call(proxy: &Proxy, key: &str, path: &str, body: &Value) -> Response {
    proxy.call(
        Req::post(path, body.to_string())
            .auth(key)
            .header("Content-Type", "application/json"),
    )
}

/// Waits (spend is recorded after the answer) until the key's spend is
/// what `expected` says.
#[track_caller]
fn assert_spend(proxy: &Proxy, key: &str, expected: impl Fn(f64) -> bool) {
    let mut spend = 0.0;
    let reached = wait_until(std::time::Duration::from_secs(10), || {
        spend = key_info(proxy, key)["spend"].as_f64().unwrap_or(0.0);
        expected(spend)
    });
    assert!(reached, "the key's spend stayed at {spend}");
}

/// A mock that wants `key` in its dialect's key field.
fn keyed_mock(key: &str) -> Mock {
    Mock::builder().args(["--api-key", key]).start()
}

// ---------------------------------------------------------------------------
// Azure OpenAI
// ---------------------------------------------------------------------------

#[test]
fn azure_goes_to_the_deployment_url_with_api_key_and_version() {
    let (_project, proxy) = start();
    let azure = keyed_mock(AZURE_KEY);
    new_model(
        &proxy,
        json!({"model_name": "gpt-4o", "litellm_params": {
            "model": "azure/gpt-4o-prod", "api_base": azure.url(),
            "api_key": AZURE_KEY, "api_version": "2024-10-21"}}),
    );
    let key = generate_key(&proxy, json!({}));

    // A client's own `api-key` never reaches the provider.
    let response = proxy.call(
        Req::post(
            "/v1/chat/completions",
            chat_request("gpt-4o", false).to_string(),
        )
        .auth(&key)
        .header("api-key", "client-supplied")
        .header("Content-Type", "application/json"),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["object"], "chat.completion");
    let seen = azure.last_request();
    assert_eq!(
        seen["target"],
        "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    );
    let headers = headers_of(&seen);
    assert_eq!(header_values(&headers, "api-key"), vec![AZURE_KEY]);
    assert_eq!(header_value(&headers, "authorization"), None);

    // Streams and embeddings go to the same deployment.
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("gpt-4o", true),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let events = sse_data(&response.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!sse_content(&events).is_empty());

    new_model(
        &proxy,
        json!({"model_name": "embed", "litellm_params": {
            "model": "azure/emb-prod", "api_base": azure.url(),
            "api_key": AZURE_KEY, "api_version": "2024-10-21"}}),
    );
    let response = call(
        &proxy,
        &key,
        "/v1/embeddings",
        &json!({"model": "embed", "input": "some text"}),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        azure.last_request()["target"],
        "/openai/deployments/emb-prod/embeddings?api-version=2024-10-21"
    );
}

#[test]
fn azure_takes_an_entra_id_token_and_the_v1_surface() {
    let (_project, proxy) = start();
    let azure = keyed_mock(AZURE_KEY);
    new_model(
        &proxy,
        json!({"model_name": "entra", "litellm_params": {
            "model": "azure/gpt-4o-prod", "api_base": azure.url(),
            "azure_ad_token": AZURE_KEY, "api_version": "2025-04-01-preview"}}),
    );
    new_model(
        &proxy,
        json!({"model_name": "v1", "litellm_params": {
            "model": "azure/gpt-4o-prod", "api_base": azure.url(),
            "api_key": AZURE_KEY, "api_version": "v1"}}),
    );
    let key = generate_key(&proxy, json!({}));

    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("entra", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = azure.last_request();
    assert_eq!(
        seen["target"],
        "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2025-04-01-preview"
    );
    let headers = headers_of(&seen);
    assert_eq!(
        header_value(&headers, "authorization").map(str::to_string),
        Some(format!("Bearer {AZURE_KEY}"))
    );
    assert_eq!(header_value(&headers, "api-key"), None);

    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("v1", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = azure.last_request();
    assert_eq!(seen["target"], "/openai/v1/chat/completions");
    assert_eq!(
        response.json()["model"],
        "gpt-4o-prod",
        "the model in the body"
    );
}

#[test]
fn azure_version_from_the_environment_and_a_wrong_key_is_the_providers_401() {
    let project = Mock::start();
    let proxy = Proxy::for_mock(&project)
        .env("AZURE_API_VERSION", "2024-06-01")
        .start();
    let azure = keyed_mock(AZURE_KEY);
    new_model(
        &proxy,
        json!({"model_name": "env-version", "litellm_params": {
            "model": "azure/dep", "api_base": azure.url(), "api_key": AZURE_KEY}}),
    );
    new_model(
        &proxy,
        json!({"model_name": "wrong-key", "litellm_params": {
            "model": "azure/dep", "api_base": azure.url(), "api_key": "sk-wrong"}}),
    );
    let key = generate_key(&proxy, json!({}));
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("env-version", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        azure.last_request()["target"],
        "/openai/deployments/dep/chat/completions?api-version=2024-06-01"
    );
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("wrong-key", false),
    );
    assert_eq!(response.status, 401, "{}", response.text());

    // A version that cannot go into a URL is refused at start.
    let exited = Proxy::for_mock(&project)
        .env("AZURE_API_VERSION", "2024&x=1")
        .run_to_exit();
    exited.assert_one_line(1, "AZURE_API_VERSION");
}

#[test]
fn an_azure_credential_carries_base_key_and_version() {
    let (_project, proxy) = start();
    let azure = keyed_mock(AZURE_KEY);
    ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "azure-eu",
               "credential_values": {"api_base": azure.url(), "api_key": AZURE_KEY,
                                     "api_version": "2024-10-21"},
               "credential_info": {"custom_llm_provider": "azure"}}),
    ));
    new_model(
        &proxy,
        json!({"model_name": "via-credential", "litellm_params": {
            "model": "azure/gpt-4o-eu", "litellm_credential_name": "azure-eu"}}),
    );
    let key = generate_key(&proxy, json!({}));
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("via-credential", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = azure.last_request();
    assert_eq!(
        seen["target"],
        "/openai/deployments/gpt-4o-eu/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        header_values(&headers_of(&seen), "api-key"),
        vec![AZURE_KEY]
    );
}

#[test]
fn azure_needs_an_api_base_and_a_deployment_name_fit_for_a_url() {
    let (_project, proxy) = start();
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "a", "litellm_params": {"model": "azure/dep"}}),
    );
    let message = assert_bad_field(&response, "litellm_params.api_base");
    assert!(message.contains("\"azure\""), "{message}");
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "a", "litellm_params": {
            "model": "azure/dep?x=1", "api_base": "http://127.0.0.1:9"}}),
    );
    let message = assert_bad_field(&response, "litellm_params.model");
    assert!(message.contains("Azure deployment name"), "{message}");
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "a", "litellm_params": {
            "model": "azure/dep", "api_base": "http://127.0.0.1:9", "api_version": "2024&x=1"}}),
    );
    assert_bad_field(&response, "litellm_params.api_version");
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "a", "litellm_params": {
            "model": "anthropic/claude", "api_key": "sk-ant\r\nX-Evil: 1"}}),
    );
    assert_bad_field(&response, "litellm_params.api_key");
}

// ---------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------

/// A proxy with `claude` at an Anthropic mock, priced per token.
fn anthropic_setup() -> (Mock, Mock, Proxy, String) {
    let (project, proxy) = start();
    let anthropic = keyed_mock(ANTHROPIC_KEY);
    new_model(
        &proxy,
        json!({"model_name": "claude", "litellm_params": {
            "model": "anthropic/claude-sonnet-4-5", "api_base": anthropic.url(),
            "api_key": ANTHROPIC_KEY},
            "model_info": prices(3e-6, 15e-6)}),
    );
    let key = generate_key(&proxy, json!({}));
    (project, anthropic, proxy, key)
}

#[test]
fn anthropic_answers_are_chat_completions_priced_from_anthropic_usage() {
    let (_project, anthropic, proxy, key) = anthropic_setup();
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("claude", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "claude-sonnet-4-5");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    let usage = &answer["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 0 && completion > 0, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(prompt + completion),
        "{usage}"
    );
    // The cost in the head is the deployment's prices times Anthropic's counts.
    let cost: f64 = response
        .header("x-litellm-response-cost")
        .expect("a cost")
        .parse()
        .unwrap();
    let expected = prompt as f64 * 3e-6 + completion as f64 * 15e-6;
    assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");

    // What went upstream: Anthropic's URL, key, version and body.
    let seen = anthropic.last_request();
    assert_eq!(seen["target"], "/v1/messages");
    let headers = headers_of(&seen);
    assert_eq!(header_values(&headers, "x-api-key"), vec![ANTHROPIC_KEY]);
    assert_eq!(
        header_value(&headers, "anthropic-version"),
        Some("2023-06-01")
    );
    assert_eq!(header_value(&headers, "authorization"), None);

    // The key's spend is what it was charged.
    assert_spend(&proxy, &key, |spend| (spend - expected).abs() < 1e-9);
}

#[test]
fn anthropic_streams_are_translated_event_by_event() {
    let (_project, _anthropic, proxy, key) = anthropic_setup();
    let mut body = chat_request("claude", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = call(&proxy, &key, "/v1/chat/completions", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert!(response.is_chunked());
    let events = sse_data(&response.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("stop")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    // The same words as the whole answer.
    let whole = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("claude", false),
    );
    assert_eq!(
        sse_content(&events),
        whole.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    // Both answers were charged.
    assert_spend(&proxy, &key, |spend| spend > 0.0);
}

#[test]
fn anthropic_tool_calls_round_trip() {
    let (_project, anthropic, proxy, key) = anthropic_setup();
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let mut body = chat_request("claude", false);
    body["tools"] = tools.clone();
    let response = call(&proxy, &key, "/v1/chat/completions", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let call_ = &choice["message"]["tool_calls"][0];
    assert_eq!(call_["type"], "function");
    assert_eq!(call_["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call_["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments.is_object(), "{arguments}");
    assert_eq!(anthropic.last_request()["target"], "/v1/messages");

    // The same, streamed: the call's pieces arrive as tool_calls deltas.
    body["stream"] = json!(true);
    let response = call(&proxy, &key, "/v1/chat/completions", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let events = sse_data(&response.body);
    let mut streamed_arguments = String::new();
    let mut name = None;
    let mut finish = None;
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let choice = &chunk["choices"][0];
        if let Some(call_) = choice["delta"]["tool_calls"].get(0) {
            assert_eq!(call_["index"], 0);
            if let Some(n) = call_["function"]["name"].as_str() {
                name = Some(n.to_string());
            }
            streamed_arguments.push_str(call_["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(name.as_deref(), Some("get_weather"));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let streamed: Value = serde_json::from_str(&streamed_arguments).unwrap();
    assert_eq!(streamed, arguments);

    // The tool's result goes back; the answer is text.
    body["stream"] = json!(false);
    let assistant = answer["choices"][0]["message"].clone();
    let id = call_["id"].as_str().unwrap().to_string();
    body["messages"].as_array_mut().unwrap().extend([
        assistant,
        json!({"role": "tool", "tool_call_id": id, "content": "sunny, 21 C"}),
    ]);
    let response = call(&proxy, &key, "/v1/chat/completions", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["choices"][0]["finish_reason"], "stop");
}

#[test]
fn anthropic_errors_are_openai_errors_and_unserved_endpoints_are_refused() {
    let (_project, _anthropic, proxy, key) = anthropic_setup();
    for (status, answered, kind) in [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (429, 429, "rate_limit_error"),
        (529, 503, "server_error"),
    ] {
        let response = proxy.call(
            Req::post(
                "/v1/chat/completions",
                chat_request("claude", false).to_string(),
            )
            .auth(&key)
            .header("x-mock-status", status.to_string()),
        );
        assert_eq!(response.status, answered, "{}", response.text());
        let error = &response.json()["error"];
        assert!(error["message"].is_string(), "{error}");
        assert_eq!(error["type"], kind, "{status}: {error}");
    }
    // An endpoint Anthropic does not have.
    let response = call(
        &proxy,
        &key,
        "/v1/embeddings",
        &json!({"model": "claude", "input": "x"}),
    );
    response.assert_error(400, "endpoint_not_supported");
}

#[test]
fn an_overloaded_anthropic_deployment_falls_back_to_another() {
    let error =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            .to_string();
    let overloaded = ScriptedUpstream::start(
        format!(
            "HTTP/1.1 529 \r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{error}",
            error.len()
        ),
        false,
    );
    let anthropic = keyed_mock(ANTHROPIC_KEY);
    let config = format!(
        r#"model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-haiku
      api_base: {overloaded}
      api_key: k
  - model_name: backup
    litellm_params:
      model: anthropic/claude-sonnet
      api_base: {backup}
      api_key: {ANTHROPIC_KEY}
router_settings:
  num_retries: 0
  fallbacks: [{{"claude": ["backup"]}}]
"#,
        overloaded = overloaded.url(),
        backup = anthropic.url()
    );
    let proxy = Proxy::for_mock(&anthropic)
        .file("config.yaml", config)
        .arg("--config")
        .arg("config.yaml")
        .start();
    let key = generate_key(&proxy, json!({}));
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("claude", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "claude-sonnet");
    assert_eq!(
        overloaded.requests().len(),
        1,
        "the overloaded one was tried"
    );
}

// ---------------------------------------------------------------------------
// Anthropic's wire format, scripted
// ---------------------------------------------------------------------------

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

fn stream_head(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nrequest-id: req_scripted\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn message_start(input_tokens: u64) -> (&'static str, Value) {
    (
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0}}}),
    )
}

fn scripted_proxy(upstream: &ScriptedUpstream) -> (Mock, Proxy, String) {
    let (project, proxy) = start();
    new_model(
        &proxy,
        json!({"model_name": "claude", "litellm_params": {
            "model": "anthropic/claude-x", "api_base": upstream.url(), "api_key": "k"},
            "model_info": prices(1e-6, 2e-6)}),
    );
    let key = generate_key(&proxy, json!({}));
    (project, proxy, key)
}

#[test]
fn parallel_streamed_tool_calls_keep_their_index_and_usage_comes_last() {
    let body = sse(&[
        message_start(20),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block":
                   {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block":
                   {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
                   "delta": {"type": "input_json_delta", "partial_json": "{\"tz\":\"CET\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use",
                   "stop_sequence": null}, "usage": {"output_tokens": 31}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let upstream = ScriptedUpstream::start(stream_head(&body), false);
    let (_project, proxy, key) = scripted_proxy(&upstream);
    let mut request = chat_request("claude", true);
    request["stream_options"] = json!({"include_usage": true});
    let response = call(&proxy, &key, "/v1/chat/completions", &request);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("x-upstream-request-id"),
        Some("req_scripted")
    );
    let events = sse_data(&response.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    let mut usage = Value::Null;
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        for delta in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = delta["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                calls.push(Default::default());
            }
            let entry = &mut calls[index];
            if let Some(id) = delta["id"].as_str() {
                entry.0 = id.into();
            }
            if let Some(name) = delta["function"]["name"].as_str() {
                entry.1 = name.into();
            }
            entry
                .2
                .push_str(delta["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(
        calls,
        vec![
            (
                "toolu_a".into(),
                "weather".into(),
                r#"{"city": "Paris"}"#.into()
            ),
            ("toolu_b".into(), "time".into(), r#"{"tz":"CET"}"#.into()),
        ]
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    // Cache reads count as prompt tokens.
    assert_eq!(usage["prompt_tokens"], 25, "{usage}");
    assert_eq!(usage["completion_tokens"], 31, "{usage}");
    // Charged from the last event's usage: 25 × 1e-6 + 31 × 2e-6.
    assert_spend(&proxy, &key, |spend| (spend - 87e-6).abs() < 1e-12);
}

#[test]
fn an_error_event_mid_stream_ends_the_clients_stream_with_an_error() {
    let body = sse(&[
        message_start(10),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    let upstream = ScriptedUpstream::start(stream_head(&body), false);
    let (_project, proxy, key) = scripted_proxy(&upstream);
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("claude", true),
    );
    assert_eq!(response.status, 200);
    let events = sse_data(&response.body);
    assert_eq!(sse_content(&events), "Hello");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["message"], "Overloaded", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[test]
fn a_stream_cut_before_message_stop_ends_with_an_error_not_a_hang() {
    let body = sse(&[
        message_start(10),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "Partial"}}),
        ),
    ]);
    // No length: the body ends when the upstream closes the connection.
    let raw = format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n{body}");
    let upstream = ScriptedUpstream::start(raw, true);
    let (_project, proxy, key) = scripted_proxy(&upstream);
    let mut conn = proxy.conn();
    conn.set_read_timeout(std::time::Duration::from_secs(10));
    let request = Req::post(
        "/v1/chat/completions",
        chat_request("claude", true).to_string(),
    )
    .auth(&key);
    let response = conn.roundtrip(&request.bytes());
    assert_eq!(response.status, 200);
    let events = sse_data(&response.body);
    assert_eq!(sse_content(&events), "Partial");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{last}");
}

// ---------------------------------------------------------------------------
// Anthropic clients: /v1/messages
// ---------------------------------------------------------------------------

fn messages_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello there"}],
    })
}

#[track_caller]
fn assert_anthropic_error(response: &Response, status: u16, kind: &str, says: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{body}");
}

/// `POST path` as an Anthropic client sends it: the key in `x-api-key`.
fn anthropic_call(proxy: &Proxy, key: &str, path: &str, body: &Value) -> Response {
    proxy.call(
        Req::post(path, body.to_string())
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("Content-Type", "application/json"),
    )
}

#[test]
fn messages_to_an_anthropic_deployment_pass_through_with_the_providers_key() {
    let (_project, anthropic, proxy, key) = anthropic_setup();
    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages",
        &messages_request("claude", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(answer["model"], "claude-sonnet-4-5");
    let usage = &answer["usage"];
    let (input, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["output_tokens"].as_u64().unwrap(),
    );
    let seen = anthropic.last_request();
    assert_eq!(seen["target"], "/v1/messages");
    let headers = headers_of(&seen);
    // The virtual key stays here; the deployment's key goes, once.
    assert_eq!(header_values(&headers, "x-api-key"), vec![ANTHROPIC_KEY]);
    assert_eq!(
        header_values(&headers, "anthropic-version"),
        vec!["2023-06-01"]
    );
    let expected = input as f64 * 3e-6 + output as f64 * 15e-6;
    assert_spend(&proxy, &key, |spend| (spend - expected).abs() < 1e-9);

    // Streamed, relayed as it comes: Anthropic's own events.
    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages",
        &messages_request("claude", true),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");

    // Counting tokens goes to Anthropic too, and is free.
    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages/count_tokens",
        &json!({"model": "claude", "messages": [{"role": "user", "content": "hello"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        anthropic.last_request()["target"],
        "/v1/messages/count_tokens"
    );

    // No key, a wrong key: refused here, in Anthropic's error shape.
    let response = proxy.call(Req::post(
        "/v1/messages",
        messages_request("claude", false).to_string(),
    ));
    assert_anthropic_error(&response, 401, "authentication_error", "missing API key");
    let response = anthropic_call(
        &proxy,
        "sk-wrong",
        "/v1/messages",
        &messages_request("claude", false),
    );
    assert_anthropic_error(&response, 401, "authentication_error", "invalid API key");
    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages",
        &messages_request("nope", false),
    );
    assert_anthropic_error(&response, 404, "not_found_error", "\"nope\"");
}

#[test]
fn messages_to_an_openai_deployment_are_translated_both_ways() {
    let (_project, proxy) = start();
    let openai = Mock::start();
    add_deployment(&proxy, "gpt", &openai, prices(1e-6, 2e-6));
    let key = generate_key(&proxy, json!({}));

    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages",
        &messages_request("gpt", false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"][0]["type"], "text");
    assert!(!answer["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(openai.last_request()["target"], "/v1/chat/completions");
    let usage = &answer["usage"];
    let expected = usage["input_tokens"].as_u64().unwrap() as f64 * 1e-6
        + usage["output_tokens"].as_u64().unwrap() as f64 * 2e-6;
    assert!(expected > 0.0);
    assert_spend(&proxy, &key, |spend| (spend - expected).abs() < 1e-9);

    let response = anthropic_call(&proxy, &key, "/v1/messages", &messages_request("gpt", true));
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(names.last(), Some(&"message_stop"), "{text}");
    assert!(names.contains(&"content_block_delta"), "{text}");
    assert!(names.contains(&"message_delta"), "{text}");

    // Its tokens are counted here, an estimate: a token per 4 characters of
    // the text ("Be brief." and "hello there", the roles and field names).
    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages/count_tokens",
        &json!({"model": "gpt", "system": "Be brief.",
                "messages": [{"role": "user", "content": "hello there"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let counted = response.json()["input_tokens"].as_u64().unwrap();
    assert!((5..=12).contains(&counted), "{counted}");
    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages/count_tokens",
        &json!({"model": "gpt", "messages": "none"}),
    );
    assert_anthropic_error(&response, 400, "invalid_request_error", "messages");

    // A Messages request the OpenAI side cannot take is the client's to fix.
    let response = anthropic_call(
        &proxy,
        &key,
        "/v1/messages",
        &json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(response.status, 400, "{}", response.text());
}

#[test]
fn a_key_without_project_reaches_every_model_endpoint_through_routing() {
    let (_project, proxy) = start();
    let openai = Mock::start();
    add_deployment(&proxy, "gpt", &openai, Value::Null);
    let key = generate_key(&proxy, json!({}));
    for (path, body) in [
        ("/v1/responses", json!({"model": "gpt", "input": "hello"})),
        ("/v1/moderations", json!({"model": "gpt", "input": "hello"})),
    ] {
        let response = call(&proxy, &key, path, &body);
        assert_ne!(response.status, 403, "{path}: {}", response.text());
        let seen = openai.last_request();
        assert_eq!(seen["target"], path, "{path} went to the deployment");
    }
}

// ---------------------------------------------------------------------------
// Gemini and Bedrock
// ---------------------------------------------------------------------------

const GEMINI_KEY: &str = "AIza-gemini-deployment";
const AWS_KEY_ID: &str = "AKIDGATEWAYTEST1";
const AWS_SECRET: &str = "gateway/bedrock+secret";

/// A proxy with `gemini` and `bedrock` models at their mocks (the Bedrock
/// mock checks every request's SigV4 signature), priced per token.
fn gemini_and_bedrock() -> (Mock, Mock, Mock, Proxy, String) {
    let (project, proxy) = start();
    let gemini = keyed_mock(GEMINI_KEY);
    let bedrock = Mock::builder()
        .args([
            "--aws-access-key-id",
            AWS_KEY_ID,
            "--aws-secret-access-key",
            AWS_SECRET,
        ])
        .start();
    new_model(
        &proxy,
        json!({"model_name": "gemini", "litellm_params": {
            "model": "gemini/gemini-2.5-flash", "api_base": gemini.url(), "api_key": GEMINI_KEY},
            "model_info": prices(1e-6, 4e-6)}),
    );
    new_model(
        &proxy,
        json!({"model_name": "bedrock", "litellm_params": {
            "model": "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
            "api_base": bedrock.url(), "aws_access_key_id": AWS_KEY_ID,
            "aws_secret_access_key": AWS_SECRET, "aws_region_name": "us-east-1"},
            "model_info": prices(3e-6, 15e-6)}),
    );
    let key = generate_key(&proxy, json!({}));
    (project, gemini, bedrock, proxy, key)
}

/// The whole answer and the stream of `model`: Chat Completions both, the
/// stream's text the whole answer's, usage in each.
#[track_caller]
fn answers_and_streams(proxy: &Proxy, key: &str, model: &str) -> (Value, Vec<String>) {
    let response = call(
        proxy,
        key,
        "/v1/chat/completions",
        &chat_request(model, false),
    );
    assert_eq!(response.status, 200, "{model}: {}", response.text());
    assert!(response.header("x-litellm-response-cost").is_some());
    let answer = response.json();
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    let mut body = chat_request(model, true);
    body["stream_options"] = json!({"include_usage": true});
    let response = call(proxy, key, "/v1/chat/completions", &body);
    assert_eq!(response.status, 200, "{model}: {}", response.text());
    let events = sse_data(&response.body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert_eq!(
        sse_content(&events),
        answer["choices"][0]["message"]["content"].as_str().unwrap(),
        "{model}"
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    (answer, events)
}

#[test]
fn gemini_deployments_answer_chat_completions() {
    let (_project, gemini, _bedrock, proxy, key) = gemini_and_bedrock();
    let (answer, _) = answers_and_streams(&proxy, &key, "gemini");
    assert_eq!(answer["model"], "gemini-2.5-flash");
    let seen = gemini.last_request();
    assert_eq!(
        seen["target"],
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let headers = headers_of(&seen);
    assert_eq!(header_values(&headers, "x-goog-api-key"), vec![GEMINI_KEY]);
    assert_eq!(header_value(&headers, "authorization"), None);

    // Tools: Gemini's functionCall is a tool call.
    let mut body = chat_request("gemini", false);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let response = call(&proxy, &key, "/v1/chat/completions", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(
        answer["choices"][0]["finish_reason"], "tool_calls",
        "{answer}"
    );
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    // Gemini's errors in OpenAI's envelope.
    let response = proxy.call(
        Req::post(
            "/v1/chat/completions",
            chat_request("gemini", false).to_string(),
        )
        .auth(&key)
        .header("x-mock-status", "429"),
    );
    assert_eq!(response.status, 429, "{}", response.text());
    assert!(response.json()["error"]["message"].is_string());
    assert_spend(&proxy, &key, |spend| spend > 0.0);
}

#[test]
fn bedrock_deployments_are_signed_and_answer_chat_completions() {
    let (_project, _gemini, bedrock, proxy, key) = gemini_and_bedrock();
    // The mock checks each request's signature with the secret.
    let (answer, _) = answers_and_streams(&proxy, &key, "bedrock");
    assert_eq!(answer["model"], "anthropic.claude-3-5-sonnet-20240620-v1:0");
    let seen = bedrock.last_request();
    assert_eq!(
        seen["target"],
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    );
    let headers = headers_of(&seen);
    let authorization = header_value(&headers, "authorization").unwrap();
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")),
        "{authorization}"
    );
    assert!(header_value(&headers, "x-amz-date").is_some());
    assert_spend(&proxy, &key, |spend| spend > 0.0);

    // A wrong secret: Bedrock's refusal, in OpenAI's envelope.
    new_model(
        &proxy,
        json!({"model_name": "bedrock-wrong", "litellm_params": {
            "model": "bedrock/anthropic.claude-3-haiku", "api_base": bedrock.url(),
            "aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": "not-the-secret",
            "aws_region_name": "us-east-1"}}),
    );
    let response = call(
        &proxy,
        &key,
        "/v1/chat/completions",
        &chat_request("bedrock-wrong", false),
    );
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(response.json()["error"]["message"].is_string());

    // A region is needed to know where Bedrock is.
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "b", "litellm_params": {"model": "bedrock/x",
            "aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET}}),
    );
    assert_bad_field(&response, "litellm_params.aws_region_name");
}

#[test]
fn a_litellm_config_with_every_dialect_answers_for_each_model() {
    let openai = Mock::start();
    let azure = keyed_mock(AZURE_KEY);
    let anthropic = keyed_mock(ANTHROPIC_KEY);
    let gemini = keyed_mock(GEMINI_KEY);
    let bedrock = Mock::builder()
        .args([
            "--aws-access-key-id",
            AWS_KEY_ID,
            "--aws-secret-access-key",
            AWS_SECRET,
        ])
        .start();
    let config = format!(
        r#"model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {openai}/v1
      api_key: sk-openai
    model_info:
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001
  - model_name: gpt-4o-azure
    litellm_params:
      model: azure/gpt-4o-prod
      api_base: {azure}
      api_key: os.environ/AZURE_KEY
      api_version: "2024-10-21"
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {anthropic}
      api_key: os.environ/ANTHROPIC_KEY
  - model_name: gemini
    litellm_params:
      model: gemini/gemini-2.5-flash
      api_base: {gemini}
      api_key: os.environ/GEMINI_KEY
  - model_name: bedrock
    litellm_params:
      model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
      api_base: {bedrock}
      aws_access_key_id: os.environ/AWS_ACCESS_KEY_ID
      aws_secret_access_key: os.environ/AWS_SECRET_ACCESS_KEY
      aws_region_name: us-east-1
"#,
        openai = openai.url(),
        azure = azure.url(),
        anthropic = anthropic.url(),
        gemini = gemini.url(),
        bedrock = bedrock.url(),
    );
    let proxy = Proxy::for_mock(&openai)
        .env("AZURE_KEY", AZURE_KEY)
        .env("ANTHROPIC_KEY", ANTHROPIC_KEY)
        .env("GEMINI_KEY", GEMINI_KEY)
        .env("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .file("config.yaml", config)
        .arg("--config")
        .arg("config.yaml")
        .start();
    let key = generate_key(&proxy, json!({}));
    for model in ["gpt-4o", "gpt-4o-azure", "claude", "gemini", "bedrock"] {
        for stream in [false, true] {
            let response = call(
                &proxy,
                &key,
                "/v1/chat/completions",
                &chat_request(model, stream),
            );
            assert_eq!(response.status, 200, "{model}: {}", response.text());
            if stream {
                let events = sse_data(&response.body);
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{model}");
                assert!(!sse_content(&events).is_empty(), "{model}");
            } else {
                let answer = response.json();
                assert_eq!(answer["object"], "chat.completion", "{model}: {answer}");
                assert!(
                    answer["choices"][0]["message"]["content"].is_string(),
                    "{model}"
                );
            }
        }
    }
}
