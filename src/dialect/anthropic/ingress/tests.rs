//! The translations against golden fixtures (`fixtures/`): requests and
//! whole answers here, streams and the official SDK's reading in
//! `tests/streams.rs`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::request::{Reading, requested_model, to_chat};
use super::response::{error_from_openai, from_chat};
use crate::dialect::TokenUsage;

mod streams;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/dialect/anthropic/ingress/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn reading() -> Reading {
    Reading {
        model: "claude-sonnet-4-5".into(),
        stream: true,
    }
}

fn chat_of(request: Value) -> Value {
    let (body, _) = to_chat(request.to_string().as_bytes(), "up").unwrap();
    json_of(&body)
}

fn refusal(request: &str) -> (String, String) {
    let e = to_chat(request.as_bytes(), "up").unwrap_err();
    (e.field, e.message)
}

// ---------------------------------------------------------------------------------------------
// Requests

#[test]
fn a_full_request_translates_field_by_field() {
    let (body, reading) = to_chat(&read("request.json"), "gpt-4o-mini").unwrap();
    assert_eq!(json_of(&body), json_of(&read("request.chat.json")));
    assert_eq!(
        reading,
        Reading {
            model: "claude-sonnet-4-5".into(),
            stream: true
        }
    );
}

#[test]
fn a_plain_request_stays_plain() {
    let chat = chat_of(json!({
        "model": "m", "max_tokens": 10, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
    }));
    assert_eq!(
        chat,
        json!({
            "model": "up",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "max_tokens": 10,
        })
    );
}

#[test]
fn tool_choices_and_thinking_budgets() {
    let base = |extra: Value| {
        let mut req =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        chat_of(req)
    };
    assert_eq!(
        base(json!({"tool_choice": {"type": "auto"}}))["tool_choice"],
        "auto"
    );
    assert_eq!(
        base(json!({"tool_choice": {"type": "none"}}))["tool_choice"],
        "none"
    );
    let named = base(
        json!({"tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true}}),
    );
    assert_eq!(
        named["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(named["parallel_tool_calls"], false);
    for (budget, effort) in [
        (1024, "low"),
        (1025, "medium"),
        (2048, "medium"),
        (2049, "high"),
    ] {
        let chat = base(json!({"thinking": {"type": "enabled", "budget_tokens": budget}}));
        assert_eq!(chat["reasoning_effort"], effort, "{budget}");
    }
    let chat = base(json!({"thinking": {"type": "disabled"}, "top_k": 3, "stream": false}));
    assert!(chat.get("reasoning_effort").is_none());
    assert!(chat.get("top_k").is_none());
    assert!(chat.get("stream").is_none() && chat.get("stream_options").is_none());
}

#[test]
fn a_turn_of_tool_results_only_becomes_tool_messages_and_images_follow_them() {
    let chat = chat_of(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "a screenshot"},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        ]}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "u"}]},
    ]}));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "shot", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "t", "content": "a screenshot"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "tool", "tool_call_id": "u", "content": ""},
        ])
    );
}

#[test]
fn malformed_requests_are_refused_naming_the_field() {
    let cases = [
        ("{", "body"),
        ("[1]", "body"),
        (r#"{"model":"m","max_tokens":5}"#, "messages"),
        (r#"{"model":"m","max_tokens":5,"messages":[]}"#, "messages"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#,
            "messages[0].role",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user"}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[]}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"search_result"}]}]}"#,
            "messages[0].content[0].type",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"u"}}]}]}"#,
            "messages[0].content[0].source.type",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}"#,
            "messages[0].content[0].source.type",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#,
            "messages[0].content[0].tool_use_id",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":[1]}]}]}"#,
            "messages[0].content[0].input",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
            "tools[0].type",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f"}]}"#,
            "tools[0].input_schema",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"tool"}}"#,
            "tool_choice.name",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled"}}"#,
            "thinking.budget_tokens",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"stop_sequences":"x"}"#,
            "stop_sequences",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            "stream",
        ),
    ];
    for (request, field) in cases {
        let (got, message) = refusal(request);
        assert_eq!(got, field, "{request}: {message}");
        assert!(!message.is_empty());
    }
}

#[test]
fn the_requested_model_is_read_without_translating() {
    let body = br#"{"max_tokens":5,"model":"claude-haiku","messages":"not read"}"#;
    assert_eq!(requested_model(body), Ok("claude-haiku"));
    assert_eq!(requested_model(b"{}").unwrap_err().field, "model");
    assert_eq!(
        requested_model(b"{\"model\":\"\"}").unwrap_err().field,
        "model"
    );
    assert_eq!(requested_model(b"nope").unwrap_err().field, "body");
    let escaped = requested_model(br#"{"model":"cl\u0061ude"}"#).unwrap_err();
    assert_eq!(escaped.field, "model");
    assert!(escaped.message.contains("escapes"), "{}", escaped.message);
}

// ---------------------------------------------------------------------------------------------
// Whole answers

#[test]
fn an_answer_with_tool_calls_becomes_a_message() {
    let (body, usage) = from_chat(&read("answer_tools.json"), &reading()).unwrap();
    assert_eq!(json_of(&body), json_of(&read("answer_tools.message.json")));
    let expected = TokenUsage {
        prompt_tokens: 100,
        completion_tokens: 20,
        cache_read_tokens: 64,
        cache_creation_tokens: 0,
    };
    assert_eq!(usage, expected);
}

fn answer(message: Value, finish: &str) -> Value {
    let chat =
        json!({"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
    json_of(
        &from_chat(chat.to_string().as_bytes(), &reading())
            .unwrap()
            .0,
    )
}

#[test]
fn stop_reasons_and_empty_content() {
    let text = json!({"role": "assistant", "content": "hi"});
    assert_eq!(answer(text.clone(), "stop")["stop_reason"], "end_turn");
    assert_eq!(answer(text.clone(), "length")["stop_reason"], "max_tokens");
    assert_eq!(answer(text, "content_filter")["stop_reason"], "refusal");
    let empty = answer(json!({"role": "assistant", "content": ""}), "stop");
    assert_eq!(empty["content"], json!([]));
    assert_eq!(
        empty["usage"],
        json!({"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    );
    let call = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    let message = answer(call, "stop");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        message["content"],
        json!([{"type": "tool_use", "id": "x", "name": "f", "input": {}}])
    );
    let thinking = answer(
        json!({"role": "assistant", "content": "4", "reasoning_content": "2+2"}),
        "stop",
    );
    assert_eq!(
        thinking["content"][0],
        json!({"type": "thinking", "thinking": "2+2", "signature": ""})
    );
    let refused = answer(
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
        "stop",
    );
    assert_eq!(refused["stop_reason"], "refusal");
    assert_eq!(
        refused["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    assert_eq!(
        from_chat(b"{\"choices\":[]}", &reading())
            .unwrap_err()
            .field,
        "response.choices"
    );
}

#[test]
fn openai_errors_become_anthropic_errors() {
    let envelope = br#"{"error":{"message":"bad thing","type":"invalid_request_error","param":null,"code":null}}"#;
    for (status, answered, kind) in [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (413, 413, "request_too_large"),
        (422, 422, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (502, 502, "api_error"),
        (504, 504, "api_error"),
        (503, 529, "overloaded_error"),
        (529, 529, "overloaded_error"),
        (200, 500, "api_error"),
    ] {
        let (got, body) = error_from_openai(status, envelope);
        assert_eq!(got, answered, "{status}");
        assert_eq!(
            json_of(&body),
            json!({"type": "error", "error": {"type": kind, "message": "bad thing"}}),
            "{status}"
        );
    }
    let (_, body) = error_from_openai(502, b"<html>Bad Gateway</html>\n");
    assert_eq!(
        json_of(&body)["error"]["message"],
        "<html>Bad Gateway</html>"
    );
    let (_, body) = error_from_openai(500, b"");
    assert_eq!(
        json_of(&body)["error"]["message"],
        "upstream answered 500 without a message"
    );
    let (_, body) = error_from_openai(500, &vec![b'x'; 10_000]);
    assert_eq!(
        json_of(&body)["error"]["message"].as_str().unwrap().len(),
        2048
    );
}
