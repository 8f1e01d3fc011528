//! `llm-proxy mock-upstream`'s Anthropic, Azure OpenAI, Bedrock and Gemini dialects, checked
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

const AWS_KEY_ID: &str = "AKIDMOCKBEDROCK1";
const AWS_SECRET: &str = "mock/bedrock+secret/4d1f";
const BEDROCK_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn bedrock_mock() -> Mock {
    Mock::builder()
        .args([
            "--aws-access-key-id",
            AWS_KEY_ID,
            "--aws-secret-access-key",
            AWS_SECRET,
        ])
        .start()
}

#[test]
fn boto3_is_a_client_of_the_bedrock_mock() {
    let mock = bedrock_mock();
    let Some(output) = run_sdk_script(
        "bedrock_mock.py",
        &[&mock.url(), AWS_KEY_ID, AWS_SECRET],
        &[
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ],
    ) else {
        return;
    };
    assert_checks(
        &output,
        &[
            "converse text, stopReason and usage",
            "converse maxTokens",
            "converse_stream events, text and usage",
            "tools: toolUse block",
            "tools: toolResult round trip ends end_turn",
            "tools: toolChoice names the tool",
            "stream: toolUse input in pieces",
            "errors: 429 raises ThrottlingException",
            "errors: ValidationException",
            "errors: a wrong secret raises InvalidSignatureException",
            "stream: exception frame raises EventStreamError throttlingException",
        ],
    );
}

/// A Converse request for the mock, signed by the dialect's signer with
/// `secret`, with `extra` fields.
fn bedrock(chat: Value, secret: &str, extra: &[(&str, &str)]) -> Req {
    use llm_proxy::dialect::bedrock::{from_chat, target};
    let (body, reading) = from_chat(chat.to_string().as_bytes(), BEDROCK_MODEL).unwrap();
    signed(&target(BEDROCK_MODEL, reading.stream), body, secret, extra)
}

/// A `POST` of `body` to `target`, signed with `secret` and a session
/// token, with `extra` fields (signed too).
fn signed(target: &str, body: Vec<u8>, secret: &str, extra: &[(&str, &str)]) -> Req {
    use llm_proxy::dialect::bedrock::{Credentials, sign};
    // The Host that `Req` sends.
    let host = "proxy.test";
    let credentials = Credentials {
        access_key_id: AWS_KEY_ID.into(),
        secret_access_key: secret.into(),
        session_token: Some("mock-session-token".into()),
        region: "us-east-1".into(),
    };
    let mut fields = vec![("content-type", "application/json")];
    fields.extend_from_slice(extra);
    let now = std::time::SystemTime::now();
    let lines = sign(&credentials, host, target, &body, &fields, now).unwrap();
    let mut req = Req::post(target, body);
    for (name, value) in fields {
        req = req.header(name, value);
    }
    for line in String::from_utf8(lines).unwrap().lines() {
        let (name, value) = line.split_once(": ").unwrap();
        req = req.header(name, value);
    }
    req
}

#[track_caller]
fn assert_bedrock_error(response: &Response, status: u16, kind: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let error_type = response.header("x-amzn-ErrorType").unwrap_or_default();
    assert!(error_type.starts_with(&format!("{kind}:")), "{error_type}");
    assert!(
        response.json()["message"].is_string(),
        "{}",
        response.text()
    );
    assert!(response.header("x-amzn-RequestId").is_some());
}

#[test]
fn bedrock_routes_check_signatures_and_answer_in_converse_shape() {
    let mock = bedrock_mock();
    let mut conn = Conn::open(mock.addr);
    let hello = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 50});
    let ok = conn
        .roundtrip(&bedrock(hello.clone(), AWS_SECRET, &[("x-mock-stream-chunks", "3")]).bytes());
    assert_eq!(ok.status, 200, "{}", ok.text());
    let answer = ok.json();
    assert_eq!(
        answer["output"]["message"]["content"][0]["text"],
        "The quick brown"
    );
    assert_eq!(answer["stopReason"], "end_turn");
    assert_eq!(answer["usage"]["outputTokens"], 3);
    assert!(answer["metrics"]["latencyMs"].is_u64(), "{answer}");
    // The target went out URL-encoded, and the session token signed.
    let last = mock.last_request();
    assert_eq!(
        last["target"],
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    let headers = headers_of(&last);
    assert_eq!(
        header_values(&headers, "x-amz-security-token"),
        vec!["mock-session-token"]
    );
    // Our own translation reads the answer back.
    let reading = llm_proxy::dialect::bedrock::Reading {
        model: BEDROCK_MODEL.into(),
        ..Default::default()
    };
    let (chat, usage) = llm_proxy::dialect::bedrock::to_chat(&ok.body, &reading, 0).unwrap();
    let chat: Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(chat["choices"][0]["message"]["content"], "The quick brown");
    assert_eq!(usage.completion_tokens, 3);

    let wrong = conn.roundtrip(&bedrock(hello.clone(), "wrong-secret", &[]).bytes());
    assert_bedrock_error(&wrong, 403, "InvalidSignatureException");
    assert!(
        wrong.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match")
    );
    // A field changed after signing breaks the signature too.
    let mut tampered = bedrock(hello.clone(), AWS_SECRET, &[]).bytes();
    let at = tampered.windows(5).position(|w| w == b"Hello").unwrap();
    tampered[at] = b'J';
    assert_bedrock_error(&conn.roundtrip(&tampered), 403, "InvalidSignatureException");
    let unsigned = Req::post(
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        hello.to_string(),
    );
    assert_bedrock_error(
        &conn.roundtrip(&unsigned.bytes()),
        403,
        "MissingAuthenticationTokenException",
    );
    let throttled = bedrock(hello.clone(), AWS_SECRET, &[("x-mock-status", "429")]);
    assert_bedrock_error(
        &conn.roundtrip(&throttled.bytes()),
        429,
        "ThrottlingException",
    );
    let target = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
    let empty = signed(target, br#"{"messages":[]}"#.to_vec(), AWS_SECRET, &[]);
    assert_bedrock_error(&conn.roundtrip(&empty.bytes()), 400, "ValidationException");
}

#[test]
fn bedrock_streams_are_event_stream_frames_that_cut_or_fail_on_request() {
    use llm_proxy::dialect::bedrock::{ChatStream, Reading};
    let mock = bedrock_mock();
    let chat = json!({
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let reading = Reading {
        include_usage: true,
        stream: true,
        model: BEDROCK_MODEL.into(),
    };
    let translate = |body: &[u8]| {
        let mut stream = ChatStream::new(&reading, 0);
        let mut out = Vec::new();
        stream.feed(body, &mut out);
        stream.finish(&mut out);
        String::from_utf8(out).unwrap()
    };
    let mut conn = Conn::open(mock.addr);
    let req = bedrock(chat.clone(), AWS_SECRET, &[("x-mock-stream-chunks", "4")]);
    let whole = conn.roundtrip(&req.bytes());
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    assert!(whole.is_chunked());
    let sse = translate(&whole.body);
    assert_eq!(sse.matches("\"content\":\"").count(), 5, "{sse}");
    assert!(sse.contains(r#""finish_reason":"stop""#), "{sse}");
    assert!(sse.contains(r#""completion_tokens":4"#), "{sse}");
    assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");

    // Tools: a tool call in pieces.
    let tools = json!({
        "messages": [{"role": "user", "content": "Weather?"}],
        "stream": true,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    });
    let answer = conn.roundtrip(&bedrock(tools, AWS_SECRET, &[]).bytes());
    let sse = translate(&answer.body);
    assert!(sse.contains(r#""name":"get_weather""#), "{sse}");
    assert!(sse.contains(r#""finish_reason":"tool_calls""#), "{sse}");
    let arguments: String = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(arguments, r#"{"city":"mock city"}"#);

    let request = |header: &str| {
        bedrock(
            chat.clone(),
            AWS_SECRET,
            &[("x-mock-stream-chunks", "5"), (header, "2")],
        )
        .bytes()
    };
    let cut = until_close(&mock, &request("x-mock-cut-after"));
    assert_eq!(cut.matches("contentBlockDelta").count(), 2, "{cut}");
    assert!(!cut.contains("messageStop"), "{cut}");
    let failed = until_close(&mock, &request("x-mock-stream-error-after"));
    assert_eq!(failed.matches("contentBlockDelta").count(), 2, "{failed}");
    assert!(failed.contains("throttlingException"), "{failed}");
    assert!(!failed.contains("messageStop"), "{failed}");
    assert_eq!(mock.stat("streams_aborted"), 2);
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
