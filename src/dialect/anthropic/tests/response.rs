use serde_json::{Value, json};

use crate::dialect::TokenUsage;
use crate::dialect::anthropic::request::{JSON_TOOL, Reading};
use crate::dialect::anthropic::response::to_chat;

fn message(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-m",
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    })
}

fn answer(message: Value, reading: &Reading) -> (Value, TokenUsage) {
    let (bytes, usage) = to_chat(message.to_string().as_bytes(), reading, 42).unwrap();
    (serde_json::from_slice(&bytes).unwrap(), usage)
}

#[test]
fn stop_reasons_become_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        let (chat, _) = answer(
            message(json!([{"type": "text", "text": "x"}]), stop),
            &Reading::default(),
        );
        assert_eq!(chat["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

#[test]
fn the_answer_has_the_message_id_model_and_created() {
    let (chat, _) = answer(message(json!([]), "end_turn"), &Reading::default());
    assert_eq!(
        (
            &chat["id"],
            &chat["object"],
            &chat["created"],
            &chat["model"]
        ),
        (
            &json!("msg_1"),
            &json!("chat.completion"),
            &json!(42),
            &json!("claude-m")
        )
    );
    // No text and no tool call: empty content, not null.
    assert_eq!(
        chat["choices"][0]["message"],
        json!({"role": "assistant", "content": ""})
    );
}

#[test]
fn text_beside_tool_calls_is_kept_and_arguments_are_json_text() {
    let content = json!([
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}},
    ]);
    let (chat, _) = answer(message(content, "tool_use"), &Reading::default());
    let reply = &chat["choices"][0]["message"];
    assert_eq!(reply["content"], "Let me check.");
    assert_eq!(
        reply["tool_calls"],
        json!([{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}}])
    );
}

#[test]
fn usage_counts_cache_reads_and_writes_as_prompt_tokens() {
    let mut m = message(json!([{"type": "text", "text": "x"}]), "end_turn");
    m["usage"] = json!({"input_tokens": 10, "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 30, "output_tokens": 5});
    let (chat, usage) = answer(m, &Reading::default());
    assert_eq!(
        chat["usage"],
        json!({"prompt_tokens": 60, "completion_tokens": 5, "total_tokens": 65,
            "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 20}})
    );
    assert_eq!(
        usage,
        TokenUsage {
            prompt_tokens: 60,
            completion_tokens: 5,
            cache_read_tokens: 30,
            cache_creation_tokens: 20
        }
    );
}

#[test]
fn the_json_tool_call_is_the_content_other_calls_stay_calls() {
    let reading = Reading {
        json_tool: Some(JSON_TOOL.into()),
        ..Reading::default()
    };
    let content = json!([
        {"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL, "input": {"a": 1}},
        {"type": "tool_use", "id": "toolu_2", "name": "w", "input": {}},
    ]);
    let (chat, _) = answer(message(content, "tool_use"), &reading);
    let choice = &chat["choices"][0];
    assert_eq!(choice["message"]["content"], "{\"a\":1}");
    assert_eq!(choice["message"]["tool_calls"].as_array().unwrap().len(), 1);
    assert_eq!(choice["finish_reason"], "tool_calls");
    // Without the reading, the same call is a tool call.
    let content =
        json!([{"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL, "input": {"a": 1}}]);
    let (chat, _) = answer(message(content, "tool_use"), &Reading::default());
    assert_eq!(chat["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn what_is_not_a_message_is_an_error() {
    for body in [
        &b"not json"[..],
        b"{}",
        br#"{"id":"m","model":"x","content":"text"}"#,
    ] {
        let error = to_chat(body, &Reading::default(), 1).unwrap_err();
        assert_eq!(error.field, "response");
    }
}

#[test]
fn thinking_is_reasoning_content_and_thinking_blocks_keep_the_signatures() {
    let content = json!([
        {"type": "thinking", "thinking": "Step one. ", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "Step two.", "signature": "s2"},
        {"type": "text", "text": "Answer."},
    ]);
    let (chat, _) = answer(message(content, "end_turn"), &Reading::default());
    let reply = &chat["choices"][0]["message"];
    assert_eq!(reply["reasoning_content"], "Step one. Step two.");
    assert_eq!(
        reply["thinking_blocks"],
        json!([
            {"type": "thinking", "thinking": "Step one. ", "signature": "s1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "Step two.", "signature": "s2"},
        ])
    );
    let (chat, _) = answer(
        message(json!([{"type": "text", "text": "x"}]), "end_turn"),
        &Reading::default(),
    );
    assert!(
        chat["choices"][0]["message"]
            .get("thinking_blocks")
            .is_none()
    );
}
