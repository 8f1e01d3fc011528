use serde_json::{Value, json};

use crate::dialect::TokenUsage;
use crate::dialect::gemini::request::Reading;
use crate::dialect::gemini::response::to_chat;

fn reading() -> Reading {
    Reading {
        model: "gemini-m".into(),
        ..Reading::default()
    }
}

fn translate(answer: Value) -> (Value, TokenUsage) {
    let (bytes, usage) = to_chat(answer.to_string().as_bytes(), &reading(), 7).unwrap();
    (serde_json::from_slice(&bytes).unwrap(), usage)
}

#[test]
fn usage_counts_thoughts_as_completion_and_cached_as_prompt() {
    let (chat, usage) = translate(json!({
        "candidates": [{"content": {"parts": [{"text": "hm", "thought": true}, {"text": "4"}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60,
            "candidatesTokenCount": 3, "thoughtsTokenCount": 20, "totalTokenCount": 123},
    }));
    assert_eq!(
        usage,
        TokenUsage {
            prompt_tokens: 100,
            completion_tokens: 23,
            cache_read_tokens: 60,
            cache_creation_tokens: 0
        }
    );
    assert_eq!(chat["usage"]["total_tokens"], 123);
    assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 60);
    assert_eq!(
        chat["usage"]["completion_tokens_details"]["reasoning_tokens"],
        20
    );
    let message = &chat["choices"][0]["message"];
    assert_eq!(
        (
            message["content"].as_str(),
            message["reasoning_content"].as_str()
        ),
        (Some("4"), Some("hm"))
    );
    assert_eq!(chat["model"], "gemini-m");
    assert_eq!(chat["created"], 7);
}

#[test]
fn finish_reasons_map_to_openai_ones() {
    for (reason, finish) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ] {
        let (chat, _) = translate(json!({"candidates": [
            {"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}));
        assert_eq!(chat["choices"][0]["finish_reason"], finish, "{reason}");
    }
    // A call, with no text: tool_calls, content null, Gemini's id kept.
    let (chat, _) = translate(json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"id": "fc-9", "name": "f", "args": {"a": 1}}},
        {"functionCall": {"name": "g"}}]}, "finishReason": "STOP"}]}));
    let message = &chat["choices"][0]["message"];
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["id"], "fc-9");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    assert_eq!(message["tool_calls"][1]["id"], "call_1");
    assert_eq!(message["tool_calls"][1]["function"]["arguments"], "{}");
}

#[test]
fn an_answer_that_is_not_geminis_is_an_error() {
    let error = to_chat(b"<html>", &reading(), 1).unwrap_err();
    assert_eq!(error.field, "response");
    let error = to_chat(br#"{"candidates": 3}"#, &reading(), 1).unwrap_err();
    assert!(error.message.contains("not a Gemini answer"), "{error}");
}

#[test]
fn a_thought_signature_rides_in_the_call_id_and_goes_back() {
    let (chat, _) = translate(
        json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2lnbmF0dXJl"}]},
        "finishReason": "STOP"}]}),
    );
    let call = chat["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["id"], "call_0__thought__c2lnbmF0dXJl");
    // The client sends the call back, with its answer.
    let next = json!({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0__thought__c2lnbmF0dXJl", "content": "done"},
    ]});
    let (body, _) = crate::dialect::gemini::from_chat(next.to_string().as_bytes(), "m").unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2lnbmF0dXJl"})
    );
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "f"
    );
}
