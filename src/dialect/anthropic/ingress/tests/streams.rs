//! Streams against their golden fixtures, and every translation read by the
//! official Anthropic SDK when `LLM_PROXY_SDK_PYTHON` names a Python that
//! has it. `LLM_PROXY_BLESS=1` rewrites the stream goldens.

#![allow(clippy::print_stderr, reason = "a skipped check says why")]

use serde_json::{Value, json};

use super::super::request::to_chat;
use super::super::response::{error_from_openai, from_chat};
use super::super::stream::MessagesStream;
use super::{fixture, json_of, read, reading};
use crate::dialect::TokenUsage;

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

#[test]
fn a_streamed_refusal_is_text_with_stop_reason_refusal() {
    let events = events(concat!(
        "data: {\"id\":\"r\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"No.\"}}]}\n\n",
        "data: {\"id\":\"r\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    ));
    assert_eq!(
        events[3]["delta"],
        json!({"type": "text_delta", "text": "No."})
    );
    assert_eq!(events[5]["delta"]["stop_reason"], "refusal");
}
