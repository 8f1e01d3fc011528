use serde_json::{Value, json};

use crate::dialect::TokenUsage;
use crate::dialect::gemini::request::Reading;
use crate::dialect::gemini::stream::{ChatStream, MAX_EVENT};

fn event(data: &Value) -> String {
    format!("data: {data}\r\n\r\n")
}

/// The `data` of each event written.
fn events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text}");
    text.split_terminator("\n\n")
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

fn stream() -> ChatStream {
    ChatStream::new(&Reading::default(), 1)
}

fn text_chunk(text: &str, finish: Option<&str>, usage: Option<(u64, u64)>) -> Value {
    let mut chunk = json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}]});
    if let Some(finish) = finish {
        chunk["candidates"][0]["finishReason"] = finish.into();
    }
    if let Some((prompt, candidates)) = usage {
        chunk["usageMetadata"] =
            json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates});
    }
    chunk
}

#[test]
fn the_last_usage_counts_and_the_finish_reason_ends_the_stream() {
    let mut s = stream();
    let mut out = Vec::new();
    assert_eq!(s.usage(), None);
    s.feed(
        event(&text_chunk("a", None, Some((5, 1)))).as_bytes(),
        &mut out,
    );
    assert_eq!(s.usage().map(|u| u.completion_tokens), Some(1));
    assert!(!s.is_done());
    s.feed(
        event(&text_chunk("b", Some("STOP"), Some((5, 2)))).as_bytes(),
        &mut out,
    );
    assert!(s.is_done());
    assert_eq!(
        s.usage(),
        Some(TokenUsage {
            prompt_tokens: 5,
            completion_tokens: 2,
            ..TokenUsage::default()
        })
    );
    // After the end, more input is not read and finish ends once.
    s.feed(
        event(&text_chunk("c", None, Some((5, 9)))).as_bytes(),
        &mut out,
    );
    s.finish(&mut out);
    s.finish(&mut out);
    let events = events(&out);
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[4], "[DONE]");
    assert_eq!(s.usage().map(|u| u.completion_tokens), Some(2));
}

#[test]
fn an_error_chunk_ends_the_stream_without_done() {
    let mut s = stream();
    let mut out = Vec::new();
    s.feed(event(&text_chunk("a", None, None)).as_bytes(), &mut out);
    let error = json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}});
    s.feed(event(&error).as_bytes(), &mut out);
    assert!(s.is_done());
    s.finish(&mut out);
    let events = events(&out);
    let last = events.last().unwrap();
    assert_eq!(last["error"]["type"], "rate_limit_error");
    assert_eq!(last["error"]["message"], "Resource has been exhausted");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[test]
fn text_that_mentions_error_is_text() {
    let mut s = stream();
    let mut out = Vec::new();
    let chunk = text_chunk("\"error\": none", Some("STOP"), None);
    s.feed(event(&chunk).as_bytes(), &mut out);
    s.finish(&mut out);
    let events = events(&out);
    assert_eq!(
        events[1]["choices"][0]["delta"]["content"],
        "\"error\": none"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[test]
fn bad_chunks_end_the_stream_with_an_error() {
    for input in ["data: {not json\r\n\r\n", "data: [1,2]\r\n\r\n"] {
        let mut s = stream();
        let mut out = Vec::new();
        s.feed(input.as_bytes(), &mut out);
        assert!(s.is_done(), "{input}");
        s.finish(&mut out);
        let events = events(&out);
        assert_eq!(events.len(), 1, "{input}");
        assert_eq!(events[0]["error"]["code"], "bad_upstream_response");
    }
    // An event over the limit.
    let mut s = stream();
    let mut out = Vec::new();
    let big = format!("data: {}", "x".repeat(MAX_EVENT));
    s.feed(big.as_bytes(), &mut out);
    assert!(s.is_done());
    assert!(
        events(&out)[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than")
    );
    // Nothing at all: cut.
    let mut s = stream();
    let mut out = Vec::new();
    s.finish(&mut out);
    assert_eq!(events(&out)[0]["error"]["type"], "upstream_error");
}

#[test]
fn a_last_event_without_its_blank_line_still_counts() {
    let mut s = stream();
    let mut out = Vec::new();
    let chunk = text_chunk("end", Some("STOP"), Some((1, 1)));
    s.feed(format!("data: {chunk}").as_bytes(), &mut out);
    assert!(!s.is_done());
    s.finish(&mut out);
    assert_eq!(events(&out).last().unwrap(), "[DONE]");
}

#[test]
fn an_error_spread_over_data_lines_is_still_an_error() {
    // Google's errors come pretty-printed: one data line each.
    let mut s = stream();
    let mut out = Vec::new();
    let error = "data: {\ndata:   \"error\": {\ndata:     \"code\": 400,\ndata:     \"message\": \"Bad part\",\ndata:     \"status\": \"INVALID_ARGUMENT\"\ndata:   }\ndata: }\n\n";
    s.feed(error.as_bytes(), &mut out);
    assert!(s.is_done());
    s.finish(&mut out);
    let written = events(&out);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0]["error"]["type"], "invalid_request_error");
    assert_eq!(written[0]["error"]["message"], "Bad part");
    // In a one-element array, too.
    let mut s = stream();
    let mut out = Vec::new();
    let error = r#"data: [{"error": {"code": 500, "message": "Internal", "status": "INTERNAL"}}]"#;
    s.feed(format!("{error}\r\n\r\n").as_bytes(), &mut out);
    assert_eq!(events(&out)[0]["error"]["type"], "server_error");
}

#[test]
fn a_streamed_call_carries_its_thought_signature_in_its_id() {
    let mut s = stream();
    let mut out = Vec::new();
    let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"}]},
        "finishReason": "STOP", "index": 0}]});
    s.feed(event(&chunk).as_bytes(), &mut out);
    s.finish(&mut out);
    let events = events(&out);
    let call = &events[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["id"], "call_0__thought__c2ln");
    assert_eq!(call["function"]["arguments"], "{\"a\":1}");
    assert_eq!(events[2]["choices"][0]["finish_reason"], "tool_calls");
}
