//! `llm-proxy mock-upstream`'s Anthropic, Azure OpenAI and Gemini dialects, checked
//! with the providers' official SDKs as clients (the scripts in
//! `tests/sdk/`), and on the wire for what an SDK hides (header checks,
//! error bodies, the exact event sequence).

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::common::*;
use serde_json::{Value, json};

const MOCK_KEY: &str = "sk-mock-dialects-4d1f";

fn mock() -> Mock {
    Mock::builder().args(["--api-key", MOCK_KEY]).start()
}

#[track_caller]
fn assert_checks(output: &str, checks: &[&str]) {
    for check in checks {
        assert!(
            output.lines().any(|line| line == format!("ok: {check}")),
            "no `ok: {check}` in:\n{output}"
        );
    }
}

#[test]
fn the_anthropic_sdk_is_a_client_of_the_mock() {
    let mock = mock();
    let Some(output) = run_sdk_script("anthropic_mock.py", &[&mock.url(), MOCK_KEY], &[]) else {
        return;
    };
    assert_checks(
        &output,
        &[
            "messages.create text and usage",
            "messages.create max_tokens",
            "messages.stream text, stop_reason and usage",
            "tools: tool_use block",
            "tools: tool_result round trip ends end_turn",
            "tools: tool_choice forces a tool",
            "tools: parallel tool_use blocks",
            "tools: text before tool_use",
            "stream: input_json events give the non-stream input",
            "errors: 429 raises RateLimitError",
            "errors: 529 raises OverloadedError",
            "errors: wrong key raises AuthenticationError",
            "errors: empty messages raises BadRequestError",
            "stream: error event raises",
            "messages.count_tokens",
        ],
    );
}

#[test]
fn the_azure_openai_sdk_is_a_client_of_the_mock() {
    let mock = mock();
    let Some(output) = run_sdk_script("azure_mock.py", &[&mock.url(), MOCK_KEY], &[]) else {
        return;
    };
    assert_checks(
        &output,
        &[
            "azure chat",
            "azure chat stream",
            "azure embeddings",
            "azure completions",
            "azure_ad_token",
            "wrong key raises AuthenticationError",
            "429 raises RateLimitError",
            "v1 GA chat, stream and embeddings",
            "v1 GA wrong key raises AuthenticationError",
        ],
    );
    // The script ends with a chat on its deployment: the mock shows the
    // whole target and the key header.
    let last = mock.last_request();
    assert_eq!(
        last["target"],
        "/openai/deployments/gpt-4o-deploy/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(header_values(&headers_of(&last), "api-key"), vec![MOCK_KEY]);
}

fn messages_body(extra: Value) -> String {
    let mut body = json!({
        "model": "claude-mock-1",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hello"}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body.to_string()
}

fn anthropic(body: String) -> Req {
    Req::post("/v1/messages", body)
        .header("Content-Type", "application/json")
        .header("x-api-key", MOCK_KEY)
        .header("anthropic-version", "2023-06-01")
}

#[track_caller]
fn assert_anthropic_error(response: &Response, status: u16, kind: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        response
            .header("request-id")
            .is_some_and(|id| id.starts_with("req_")),
        "{:?}",
        response.headers
    );
}

#[test]
fn anthropic_routes_check_key_version_and_body() {
    let mock = mock();
    let mut conn = Conn::open(mock.addr);
    let ok = conn.roundtrip(&anthropic(messages_body(json!({}))).bytes());
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["type"], "message");
    assert!(ok.header("request-id").is_some());

    let no_version = Req::post("/v1/messages", messages_body(json!({})))
        .header("x-api-key", MOCK_KEY)
        .bytes();
    let response = conn.roundtrip(&no_version);
    assert_anthropic_error(&response, 400, "invalid_request_error");
    assert!(response.text().contains("anthropic-version"));

    let no_key = Req::post("/v1/messages", messages_body(json!({})))
        .header("anthropic-version", "2023-06-01")
        .bytes();
    assert_anthropic_error(&conn.roundtrip(&no_key), 401, "authentication_error");
    let wrong_key = anthropic(messages_body(json!({}))).header("x-api-key", "sk-other");
    let wrong_key = String::from_utf8(wrong_key.bytes()).unwrap().replacen(
        &format!("x-api-key: {MOCK_KEY}\r\n"),
        "",
        1,
    );
    assert_anthropic_error(
        &conn.roundtrip(wrong_key.as_bytes()),
        401,
        "authentication_error",
    );

    for (body, says) in [
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": "ten", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens: Input should be a valid integer",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            "model: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5}),
            "messages: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": []}),
            "messages: at least one message is required",
        ),
    ] {
        let response = conn.roundtrip(&anthropic(body.to_string()).bytes());
        assert_anthropic_error(&response, 400, "invalid_request_error");
        assert_eq!(response.json()["error"]["message"], says);
    }
    let response = conn.roundtrip(&anthropic("{not json".into()).bytes());
    assert_anthropic_error(&response, 400, "invalid_request_error");

    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ] {
        let request =
            anthropic(messages_body(json!({}))).header("x-mock-status", status.to_string());
        assert_anthropic_error(&conn.roundtrip(&request.bytes()), status, kind);
    }

    let count = Req::post(
        "/v1/messages/count_tokens",
        r#"{"model":"m","messages":[{"role":"user","content":"Hello there"}]}"#,
    )
    .header("x-api-key", MOCK_KEY)
    .header("anthropic-version", "2023-06-01");
    let response = conn.roundtrip(&count.bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.json()["input_tokens"].as_u64().unwrap() > 0);
    let last = mock.last_request();
    assert_eq!(last["target"], "/v1/messages/count_tokens");
}

/// The `event:` names of an SSE body, in order, and the data of each.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap();
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[test]
fn anthropic_streams_have_the_real_event_sequence() {
    let mock = mock();
    let tools = json!([
        {"name": "a", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "b", "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    ]);
    let request = anthropic(messages_body(json!({"stream": true, "tools": tools})))
        .header("x-mock-tool-calls", "2");
    let response = Conn::open(mock.addr).roundtrip(&request.bytes());
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = events(&response.text());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let block = ["content_block_delta"; 3];
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(block);
    expected.extend(["content_block_stop", "content_block_start"]);
    expected.extend(block);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for (name, data) in &events {
        assert_eq!(data["type"], *name, "{data}");
    }
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["name"], "a");
    let input: String = events[3..6]
        .iter()
        .map(|(_, data)| data["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city": "mock city"})
    );
    assert_eq!(events[7].1["index"], 1);
    assert_eq!(events[7].1["content_block"]["name"], "b");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

/// Sends `request` on a fresh connection and reads until the mock closes it.
fn until_close(mock: &Mock, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(mock.addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn anthropic_streams_cut_or_fail_on_request() {
    let mock = mock();
    let request = |header: &str| {
        anthropic(messages_body(json!({"stream": true})))
            .header("x-mock-stream-chunks", "5")
            .header(header, "2")
            .bytes()
    };
    let cut = until_close(&mock, &request("x-mock-cut-after"));
    assert_eq!(
        cut.matches("event: content_block_delta").count(),
        2,
        "{cut}"
    );
    assert!(
        !cut.contains("message_stop") && !cut.ends_with("0\r\n\r\n"),
        "{cut}"
    );

    let failed = until_close(&mock, &request("x-mock-stream-error-after"));
    assert_eq!(
        failed.matches("event: content_block_delta").count(),
        2,
        "{failed}"
    );
    assert!(
        failed.contains(
            r#"event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        ),
        "{failed}"
    );
    assert!(!failed.contains("message_stop"), "{failed}");
    assert_eq!(mock.stat("streams_aborted"), 2);
}

#[test]
fn azure_routes_check_api_version_and_key() {
    let mock = mock();
    let mut conn = Conn::open(mock.addr);
    let chat = |target: &str| {
        Req::post(target, chat_body(false, "Hello")).header("Content-Type", "application/json")
    };
    let deployment = "/openai/deployments/dep-1/chat/completions";
    let response = conn.roundtrip(&chat(deployment).header("api-key", MOCK_KEY).bytes());
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );

    let target = format!("{deployment}?api-version=2024-10-21");
    let response = conn.roundtrip(&chat(&target).header("api-key", "sk-other").bytes());
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "401");
    assert!(
        response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Access denied due to invalid subscription key or wrong API endpoint.")
    );
    let response = conn.roundtrip(&chat(&target).bytes());
    assert_eq!(response.status, 401, "no key: {}", response.text());

    let response = conn.roundtrip(&chat(&target).header("api-key", MOCK_KEY).bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "dep-1");
    let response = conn.roundtrip(&chat(&target).auth(MOCK_KEY).bytes());
    assert_eq!(response.status, 200, "Entra ID token: {}", response.text());
    let last = mock.last_request();
    assert_eq!(last["target"], target.as_str());

    let response = conn.roundtrip(
        &chat("/openai/v1/chat/completions")
            .header("api-key", MOCK_KEY)
            .bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "gpt-4o-mini");
    let response = conn.roundtrip(
        &chat("/openai/v1/unknown")
            .header("api-key", MOCK_KEY)
            .bytes(),
    );
    assert_eq!(response.status, 404);
}

#[test]
fn the_gemini_sdk_is_a_client_of_the_mock() {
    let mock = mock();
    let Some(output) = run_sdk_script("gemini_mock.py", &[&mock.url(), MOCK_KEY], &[]) else {
        return;
    };
    assert_checks(
        &output,
        &[
            "generate_content text and usage_metadata",
            "generate_content max_output_tokens",
            "generate_content candidate_count",
            "generate_content_stream text, finish_reason and usage_metadata",
            "function calling: functionCall part",
            "function calling: functionResponse round trip ends with text",
            "function calling: mode ANY and NONE",
            "function calling: parallel calls streamed",
            "blocked prompt: prompt_feedback.block_reason",
            "errors: 400, 403 and 429 raise ClientError",
            "errors: 503 raises ServerError",
            "errors: wrong key raises ClientError",
            "errors: empty parts and a bad role raise ClientError",
            "stream: error chunk raises ServerError",
            "stream on a second model",
        ],
    );
    // The script ends with a stream on its second model: the mock shows the
    // whole target and the key header.
    let last = mock.last_request();
    assert_eq!(
        last["target"],
        "/v1beta/models/gemini-mock-2:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        header_values(&headers_of(&last), "x-goog-api-key"),
        vec![MOCK_KEY]
    );
}

const HELLO_CONTENTS: &str = r#"{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}"#;

fn gemini(target: &str, body: &str) -> Req {
    Req::post(target, body.to_string()).header("x-goog-api-key", MOCK_KEY)
}

#[track_caller]
fn assert_gemini_error(response: &Response, status: u16, rpc: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"]["code"], status, "{body}");
    assert_eq!(body["error"]["status"], rpc, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[test]
fn gemini_routes_check_the_key_and_the_body() {
    let mock = mock();
    let mut conn = Conn::open(mock.addr);
    let target = "/v1beta/models/gemini-2.5-flash:generateContent";
    let response = conn.roundtrip(&gemini(target, HELLO_CONTENTS).bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(answer["modelVersion"], "gemini-2.5-flash");
    assert_eq!(answer["candidates"][0]["content"]["role"], "model");
    assert_eq!(answer["candidates"][0]["finishReason"], "STOP");
    assert!(answer["responseId"].is_string(), "{answer}");
    assert!(
        answer["usageMetadata"]["promptTokenCount"]
            .as_u64()
            .unwrap()
            > 0
    );

    // The key may come as the `key` query parameter instead.
    let query = format!("{target}?key={MOCK_KEY}");
    let response = conn.roundtrip(&Req::post(&query, HELLO_CONTENTS).bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let no_key = Req::post(target, HELLO_CONTENTS).bytes();
    assert_gemini_error(&conn.roundtrip(&no_key), 403, "PERMISSION_DENIED");
    let wrong = Req::post(target, HELLO_CONTENTS).header("x-goog-api-key", "sk-other");
    let response = conn.roundtrip(&wrong.bytes());
    assert_gemini_error(&response, 400, "INVALID_ARGUMENT");
    assert!(response.text().contains("API key not valid"));

    for body in [
        "{not json",
        r#"{"contents":[]}"#,
        r#"{"contents":[{"role":"user","parts":[]}]}"#,
        r#"{"contents":[{"role":"system","parts":[{"text":"x"}]}]}"#,
    ] {
        let response = conn.roundtrip(&gemini(target, body).bytes());
        assert_gemini_error(&response, 400, "INVALID_ARGUMENT");
    }
    let unknown = "/v1beta/models/gemini-2.5-flash:embedContent";
    assert_gemini_error(
        &conn.roundtrip(&gemini(unknown, HELLO_CONTENTS).bytes()),
        404,
        "NOT_FOUND",
    );
    for (status, rpc) in [
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ] {
        let request = gemini(target, HELLO_CONTENTS).header("x-mock-status", status.to_string());
        assert_gemini_error(&conn.roundtrip(&request.bytes()), status, rpc);
    }

    let blocked = gemini(target, HELLO_CONTENTS).header("x-mock-blocked", "1");
    let answer = conn.roundtrip(&blocked.bytes()).json();
    assert_eq!(
        answer["promptFeedback"]["blockReason"], "SAFETY",
        "{answer}"
    );
    assert!(answer.get("candidates").is_none(), "{answer}");

    // Without alt=sse a stream is one JSON array of its chunks.
    let array = "/v1beta/models/g:streamGenerateContent";
    let request = gemini(array, HELLO_CONTENTS).header("x-mock-stream-chunks", "3");
    let chunks = conn.roundtrip(&request.bytes()).json();
    assert_eq!(chunks.as_array().map(Vec::len), Some(3), "{chunks}");
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
}

/// The chunks of a Gemini SSE body, whose events end in `\r\n\r\n`.
fn gemini_chunks(body: &str) -> Vec<Value> {
    assert!(body.ends_with("\r\n\r\n"), "{body:?}");
    body.split_terminator("\r\n\r\n")
        .map(|event| serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn gemini_streams_have_the_real_chunks_and_cut_or_fail_on_request() {
    let mock = mock();
    let target = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let tools = r#"{"contents":[{"role":"user","parts":[{"text":"Weather?"}]}],
        "tools":[{"functionDeclarations":[
            {"name":"a","parameters":{"type":"object","properties":{"city":{"type":"string"}}}},
            {"name":"b"}]}]}"#;
    let request = gemini(target, tools)
        .header("x-mock-tool-calls", "2")
        .header("x-mock-tool-text", "2");
    let response = Conn::open(mock.addr).roundtrip(&request.bytes());
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let chunks = gemini_chunks(&response.text());
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
        "The"
    );
    let parts = &chunks[2]["candidates"][0]["content"]["parts"];
    assert_eq!(
        parts,
        &json!([
            {"functionCall": {"name": "a", "args": {"city": "mock city"}}},
            {"functionCall": {"name": "b", "args": {}}},
        ])
    );
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    let counts: Vec<u64> = chunks
        .iter()
        .map(|c| c["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");

    let request = |header: &str| {
        gemini(target, HELLO_CONTENTS)
            .header("x-mock-stream-chunks", "5")
            .header(header, "2")
            .bytes()
    };
    let cut = until_close(&mock, &request("x-mock-cut-after"));
    assert_eq!(cut.matches("data: ").count(), 2, "{cut}");
    assert!(
        !cut.contains("finishReason") && !cut.ends_with("0\r\n\r\n"),
        "{cut}"
    );
    let failed = until_close(&mock, &request("x-mock-stream-error-after"));
    assert_eq!(failed.matches("data: ").count(), 3, "{failed}");
    assert!(
        failed.contains(r#"data: {"error":{"code":503,"#),
        "{failed}"
    );
    assert!(!failed.contains("finishReason"), "{failed}");
    assert_eq!(mock.stat("streams_aborted"), 2);
}

/// The dialect's translations against the mock: a Chat Completions request
/// translated, sent to the target it names, and the answer translated back.
#[test]
fn the_gemini_translations_read_the_mocks_answers() {
    use llm_proxy::dialect::gemini::{ChatStream, from_chat, target, to_chat};

    let mock = mock();
    let mut conn = Conn::open(mock.addr);
    let chat = json!({
        "model": "gemini/gemini-2.5-flash",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "additionalProperties": false,
            "properties": {"city": {"type": "string"}}}}}],
    });
    let (body, reading) = from_chat(chat.to_string().as_bytes(), "gemini-2.5-flash").unwrap();
    let request = gemini(&target("gemini-2.5-flash", false), "").body(body);
    let response = conn.roundtrip(&request.bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let (answer, usage) = to_chat(&response.body, &reading, 1).unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather", "{answer}");
    assert_eq!(call["function"]["arguments"], r#"{"city":"mock city"}"#);
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );

    let chat = json!({
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 3,
    });
    let (body, reading) = from_chat(chat.to_string().as_bytes(), "gemini-2.5-flash").unwrap();
    let request = gemini(&target("gemini-2.5-flash", true), "")
        .header("x-mock-stream-chunks", "5")
        .body(body);
    let response = conn.roundtrip(&request.bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let mut stream = ChatStream::new(&reading, 1);
    let mut out = Vec::new();
    stream.feed(&response.body, &mut out);
    assert!(stream.is_done());
    stream.finish(&mut out);
    let events: Vec<&str> = std::str::from_utf8(&out)
        .unwrap()
        .split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "The quick brown");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("length"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 3, "{usage}");
    assert_eq!(stream.usage().unwrap().completion_tokens, 3);
}
