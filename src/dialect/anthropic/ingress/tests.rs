//! The translations against golden fixtures (`fixtures/`), and checked
//! with the official Anthropic SDK when `LLM_PROXY_SDK_PYTHON` names a
//! Python that has it. `LLM_PROXY_BLESS=1` rewrites the stream goldens.

#![allow(clippy::print_stderr, reason = "a skipped check says why")]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::request::{Reading, requested_model, to_chat};
use super::response::{error_from_openai, from_chat};
use super::stream::MessagesStream;
use crate::dialect::TokenUsage;

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

// ---------------------------------------------------------------------------------------------
// Streams

const STREAMS: [&str; 6] = [
    "stream_text",
    "stream_parallel_tools",
    "stream_usage_after_finish",
    "stream_cut",
    "stream_error",
    "stream_unterminated",
];

fn translate(input: &[u8], cuts: &[usize]) -> (Vec<u8>, MessagesStream) {
    let mut stream = MessagesStream::new(&reading());
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([input.len()].iter()) {
        stream.feed(&input[from..cut], &mut out);
        from = cut;
    }
    stream.finish(&mut out);
    (out, stream)
}

#[test]
fn streams_match_their_goldens() {
    let bless = std::env::var_os("LLM_PROXY_BLESS").is_some();
    for name in STREAMS {
        let (out, stream) = translate(&read(&format!("{name}.sse")), &[]);
        assert!(stream.is_done(), "{name}");
        let golden = format!("{name}.out");
        if bless {
            std::fs::write(fixture(&golden), &out).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(read(&golden)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_stream_split_at_any_byte_translates_the_same() {
    for name in STREAMS {
        let input = read(&format!("{name}.sse"));
        let (whole, _) = translate(&input, &[]);
        for cut in 0..=input.len() {
            let (split, _) = translate(&input, &[cut]);
            assert!(split == whole, "{name} split at {cut}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert!(translate(&input, &every).0 == whole, "{name} byte by byte");
    }
}

#[test]
fn stream_usage_is_known_at_the_end() {
    let (_, stream) = translate(&read("stream_text.sse"), &[]);
    let expected = TokenUsage {
        prompt_tokens: 12,
        completion_tokens: 5,
        cache_read_tokens: 4,
        cache_creation_tokens: 0,
    };
    assert_eq!(stream.usage(), Some(expected));
    let (_, cut) = translate(&read("stream_cut.sse"), &[]);
    assert_eq!(cut.usage(), None);
}

#[test]
fn events_are_written_as_soon_as_their_chunk_is_complete() {
    let mut stream = MessagesStream::new(&reading());
    let mut out = Vec::new();
    stream.feed(
        b"data: {\"id\":\"a\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n",
        &mut out,
    );
    assert!(out.is_empty(), "nothing before the blank line");
    stream.feed(b"\n", &mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(
        text.ends_with("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"),
        "{text}"
    );
    // A finish_reason closes the block; message_delta waits for usage.
    out.clear();
    stream.feed(b"data: {\"id\":\"a\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n", &mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    assert_eq!(
        text,
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    );
    assert!(!stream.is_done());
    // [DONE] without a usage chunk ends the message with what is known.
    out.clear();
    stream.feed(b"data: [DONE]\n\n", &mut out);
    assert!(stream.is_done());
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"usage\":{\"output_tokens\":0}"), "{text}");
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
}

#[test]
fn an_event_over_a_mebibyte_ends_the_stream_with_an_error() {
    let mut stream = MessagesStream::new(&reading());
    let mut out = Vec::new();
    let piece = vec![b'a'; 64 * 1024];
    stream.feed(b"data: {\"x\":\"", &mut out);
    for _ in 0..17 {
        stream.feed(&piece, &mut out);
    }
    assert!(stream.is_done());
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("event: error\n"), "{text}");
    assert!(text.contains("larger than 1 MiB"), "{text}");
    // Nothing more is written once the stream is over.
    let before = out.len();
    stream.feed(b"\n\ndata: [DONE]\n\n", &mut out);
    stream.finish(&mut out);
    assert_eq!(out.len(), before);
}

#[test]
fn an_empty_upstream_body_is_an_error_event() {
    let (out, stream) = translate(b"", &[]);
    assert!(stream.is_done());
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""
        ),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// The official SDK reads what is written

#[test]
fn the_anthropic_sdk_reads_the_translations() {
    let Some(python) = std::env::var_os("LLM_PROXY_SDK_PYTHON") else {
        eprintln!("skipped: LLM_PROXY_SDK_PYTHON does not name a Python with `anthropic`");
        return;
    };
    let dir = std::env::temp_dir().join(format!("llm-proxy-ingress-sdk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in STREAMS {
        let (out, _) = translate(&read(&format!("{name}.sse")), &[]);
        std::fs::write(dir.join(format!("{name}.out")), out).unwrap();
    }
    let (chat, _) = to_chat(&read("request.json"), "gpt-4o-mini").unwrap();
    std::fs::write(dir.join("request.chat.json"), chat).unwrap();
    let (message, _) = from_chat(&read("answer_tools.json"), &reading()).unwrap();
    std::fs::write(dir.join("answer_tools.message.json"), message).unwrap();
    for status in [400, 401, 403, 404, 413, 429, 500, 503] {
        let (answered, body) = error_from_openai(status, br#"{"error":{"message":"m"}}"#);
        let mut file = format!("{answered}\n").into_bytes();
        file.extend_from_slice(&body);
        std::fs::write(dir.join(format!("error_{status}.txt")), file).unwrap();
    }
    let run = std::process::Command::new(python)
        .arg(fixture("sdk_check.py"))
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("sdk check: all read"), "{stdout}\n{stderr}");
}

fn events(input: &str) -> Vec<Value> {
    let (out, _) = translate(input.as_bytes(), &[]);
    String::from_utf8(out)
        .unwrap()
        .split_terminator("\n\n")
        .map(|block| {
            let (name, data) = block.split_once('\n').unwrap();
            let data = json_of(data.strip_prefix("data: ").unwrap().as_bytes());
            assert_eq!(name.strip_prefix("event: ").unwrap(), data["type"]);
            data
        })
        .collect()
}

#[test]
fn interleaved_tool_calls_keep_their_blocks_and_reasoning_is_a_thinking_block() {
    // An Azure-style first chunk with no choices, reasoning, then two tool
    // calls whose pieces alternate, the first without an id.
    let input = concat!(
        "data: {\"id\":\"\",\"choices\":[],\"prompt_filter_results\":[]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"t2\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let events = events(input);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(events[0]["message"]["id"], "msg_c");
    assert_eq!(
        events[2]["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        events[3]["delta"],
        json!({"type": "thinking_delta", "thinking": "hmm"})
    );
    assert_eq!(
        events[5]["content_block"],
        json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}})
    );
    assert_eq!(events[8]["content_block"]["id"], "t2");
    // The late piece of the first call goes to the first call's block.
    assert_eq!(events[10]["index"], 1);
    assert_eq!(events[10]["delta"]["partial_json"], ":1}");
    // finish_reason "stop" after tool calls is tool_use.
    assert_eq!(events[12]["delta"]["stop_reason"], "tool_use");
}

#[test]
fn an_error_before_any_content_is_the_only_event() {
    let events = events(
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":503}}\n\n",
    );
    assert_eq!(
        events,
        [json!({"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}})]
    );
    let garbage = self::events("data: {not json}\n\ndata: [DONE]\n\n");
    assert_eq!(garbage.len(), 1);
    assert_eq!(garbage[0]["error"]["type"], "api_error");
}
