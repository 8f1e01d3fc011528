use serde_json::{Value, json};

use crate::dialect::TokenUsage;
use crate::dialect::anthropic::request::Reading;
use crate::dialect::anthropic::stream::{ChatStream, MAX_EVENT};

const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":7,"output_tokens":1}}}"#;

fn event(data: &str) -> String {
    format!("data: {data}\n\n")
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

#[test]
fn usage_is_known_from_message_start_and_completed_by_message_delta() {
    let mut s = stream();
    let mut out = Vec::new();
    assert_eq!(s.usage(), None);
    s.feed(event(START).as_bytes(), &mut out);
    assert_eq!(
        s.usage(),
        Some(TokenUsage {
            prompt_tokens: 7,
            completion_tokens: 1,
            ..TokenUsage::default()
        })
    );
    s.feed(
        event(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9,"cache_read_input_tokens":3}}"#)
            .as_bytes(),
        &mut out,
    );
    assert_eq!(
        s.usage(),
        Some(TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 9,
            cache_read_tokens: 3,
            cache_creation_tokens: 0
        })
    );
    assert!(!s.is_done());
    s.feed(event(r#"{"type":"message_stop"}"#).as_bytes(), &mut out);
    assert!(s.is_done());
    // After the end, more input is not read and finish ends once.
    s.feed(event(START).as_bytes(), &mut out);
    s.finish(&mut out);
    s.finish(&mut out);
    let events = events(&out);
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[2], "[DONE]");
}

#[test]
fn an_error_event_ends_the_stream_without_done() {
    let mut s = stream();
    let mut out = Vec::new();
    s.feed(event(START).as_bytes(), &mut out);
    let error = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    s.feed(
        format!("event: error\n{}", event(error)).as_bytes(),
        &mut out,
    );
    assert!(s.is_done());
    s.finish(&mut out);
    let events = events(&out);
    assert_eq!(
        events.last().unwrap(),
        &json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
    );
    assert_eq!(events.len(), 2);
}

#[test]
fn refusal_is_content_filter() {
    let mut s = stream();
    let mut out = Vec::new();
    s.feed(event(START).as_bytes(), &mut out);
    s.feed(event(r#"{"type":"message_delta","delta":{"stop_reason":"refusal"},"usage":{"output_tokens":2}}"#).as_bytes(), &mut out);
    assert_eq!(
        events(&out)[1]["choices"][0]["finish_reason"],
        "content_filter"
    );
}

#[test]
fn sse_details_multiline_data_comments_and_unknown_events() {
    let mut s = stream();
    let mut out = Vec::new();
    let delta =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#;
    let (head, tail) = delta.split_at(delta.find("\"index\"").unwrap());
    let input = format!(
        ": a comment\nevent: message_start\nid: 1\nretry: 10\n{}{}\
         data: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n\
         data:{head}\ndata:{tail}\n\n{}",
        event(START),
        event(r#"{"type":"ping"}"#),
        event(r#"{"type":"future_event","x":1}"#),
    );
    s.feed(input.as_bytes(), &mut out);
    assert!(!s.is_done());
    let events = events(&out);
    // Two data lines join with a newline, which JSON reads as blank space.
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["choices"][0]["delta"], json!({"content": "hi"}));
}

#[test]
fn a_stream_that_does_not_start_with_message_start_is_an_error() {
    let mut s = stream();
    let mut out = Vec::new();
    s.feed(
        event(
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        )
        .as_bytes(),
        &mut out,
    );
    assert!(s.is_done());
    assert_eq!(events(&out)[0]["error"]["code"], "bad_upstream_response");
}

#[test]
fn an_event_that_is_not_json_is_an_error() {
    let mut s = stream();
    let mut out = Vec::new();
    s.feed(event(START).as_bytes(), &mut out);
    s.feed(b"data: {\"type\": \n\n", &mut out);
    assert!(s.is_done());
    s.finish(&mut out);
    let events = events(&out);
    assert_eq!(events.len(), 2);
    assert!(
        events[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid")
    );
}

#[test]
fn events_are_bounded_at_one_mebibyte() {
    // Just under the bound: translated.
    let mut s = stream();
    let mut out = Vec::new();
    s.feed(event(START).as_bytes(), &mut out);
    let text = "a".repeat(MAX_EVENT - 200);
    let delta = format!(
        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{text}"}}}}"#
    );
    s.feed(
        event(
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        )
        .as_bytes(),
        &mut out,
    );
    s.feed(event(&delta).as_bytes(), &mut out);
    assert!(!s.is_done());
    assert_eq!(
        events(&out)[1]["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap()
            .len(),
        text.len()
    );

    // Over it, whether it comes whole or in pieces, in one line or many.
    let big = "b".repeat(MAX_EVENT + 1);
    let inputs = [
        format!("data: {big}\n\n"),
        format!(
            "data: {}\ndata: {}\n\n",
            &big[..MAX_EVENT / 2],
            &big[MAX_EVENT / 2..]
        ),
    ];
    for input in inputs {
        for piece in [input.len(), 4096] {
            let mut s = stream();
            let mut out = Vec::new();
            s.feed(event(START).as_bytes(), &mut out);
            for chunk in input.as_bytes().chunks(piece) {
                s.feed(chunk, &mut out);
            }
            assert!(s.is_done());
            s.finish(&mut out);
            let events = events(&out);
            assert_eq!(events.len(), 2);
            assert!(
                events[1]["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("larger than")
            );
        }
    }
}
