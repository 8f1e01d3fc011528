//! Golden translations: requests, whole answers and streams from
//! `testdata/`, and the check of the outputs with the official SDKs' types.

use super::{golden, pretty, read, testdata};
use crate::dialect::anthropic::{ChatStream, Reading, from_chat, to_chat};

const CREATED: u64 = 1_760_000_000;

/// Each stream fixture and what its request asked for.
pub(super) fn streams() -> Vec<(&'static str, Reading)> {
    let plain = Reading::default();
    let usage = Reading {
        include_usage: true,
        ..Reading::default()
    };
    let json = Reading {
        include_usage: false,
        json_tool: Some("json_tool_call".into()),
    };
    vec![
        ("stream_text", usage.clone()),
        ("stream_parallel_tools", usage.clone()),
        ("stream_empty_text_then_tool", plain.clone()),
        ("stream_usage_last", usage.clone()),
        ("stream_error_mid", usage.clone()),
        ("stream_cut", usage),
        ("stream_thinking", plain),
        ("stream_json_tool", json),
    ]
}

/// The translation of `input` fed in the pieces `cuts` makes of it.
pub(super) fn translate(input: &[u8], reading: &Reading, cuts: &[usize]) -> Vec<u8> {
    let mut stream = ChatStream::new(reading, CREATED);
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([input.len()].iter()) {
        stream.feed(&input[from..cut], &mut out);
        from = cut;
    }
    stream.finish(&mut out);
    out
}

#[test]
fn streams_translate_as_their_golden_files() {
    for (name, reading) in streams() {
        let input = read(&format!("{name}.sse"));
        golden(&format!("{name}.out"), &translate(&input, &reading, &[]));
    }
}

#[test]
fn a_stream_split_at_any_byte_translates_the_same() {
    for (name, reading) in streams() {
        let input = read(&format!("{name}.sse"));
        let whole = translate(&input, &reading, &[]);
        for cut in 0..=input.len() {
            let split = translate(&input, &reading, &[cut]);
            assert!(split == whole, "{name} split at byte {cut}");
        }
        let bytes: Vec<usize> = (1..input.len()).collect();
        assert!(
            translate(&input, &reading, &bytes) == whole,
            "{name} byte by byte"
        );
    }
}

#[test]
fn crlf_line_ends_translate_the_same() {
    for (name, reading) in streams() {
        let input = read(&format!("{name}.sse"));
        let whole = translate(&input, &reading, &[]);
        let text = String::from_utf8(input).unwrap();
        for end in ["\r\n", "\r"] {
            let other = text.replace('\n', end).into_bytes();
            for cut in 0..=other.len() {
                let split = translate(&other, &reading, &[cut]);
                assert!(split == whole, "{name} with {end:?} split at byte {cut}");
            }
        }
    }
}

/// Each whole-answer fixture and what its request asked for.
pub(super) fn messages() -> Vec<(&'static str, Reading)> {
    let json = Reading {
        include_usage: false,
        json_tool: Some("json_tool_call".into()),
    };
    vec![
        ("message_text", Reading::default()),
        ("message_tools", Reading::default()),
        ("message_thinking", Reading::default()),
        ("message_json_tool", json),
    ]
}

#[test]
fn answers_translate_as_their_golden_files() {
    for (name, reading) in messages() {
        let (chat, _) = to_chat(&read(&format!("{name}.json")), &reading, CREATED).unwrap();
        golden(&format!("{name}.out.json"), &pretty(&chat));
    }
}

#[test]
fn requests_translate_as_their_golden_files() {
    for name in ["request_full", "request_json_schema", "request_reasoning"] {
        let (body, reading) =
            from_chat(&read(&format!("{name}.json")), "claude-sonnet-4-5").unwrap();
        let mut out = pretty(&body);
        out.extend_from_slice(format!("// {reading:?}\n").as_bytes());
        golden(&format!("{name}.out"), &out);
    }
}

/// The translated outputs parse with the official SDKs' types: the OpenAI
/// SDK's `ChatCompletion` and `ChatCompletionChunk`, and the fixtures with
/// the Anthropic SDK's `Message` and stream event types. Runs when
/// `LLM_PROXY_SDK_PYTHON` names a python with `openai` and `anthropic`.
#[test]
#[allow(clippy::print_stderr)] // the reason it was skipped
fn outputs_parse_with_the_official_sdk_types() {
    let Some(python) = std::env::var_os("LLM_PROXY_SDK_PYTHON") else {
        eprintln!("skipped: LLM_PROXY_SDK_PYTHON is not set (a python with openai and anthropic)");
        return;
    };
    let mut args = vec![testdata("sdk_check.py")];
    for (name, _) in streams() {
        args.push(testdata(&format!("{name}.sse")));
        args.push(testdata(&format!("{name}.out")));
    }
    for (name, _) in messages() {
        args.push(testdata(&format!("{name}.json")));
        args.push(testdata(&format!("{name}.out.json")));
    }
    let output = std::process::Command::new(python)
        .args(&args)
        .output()
        .expect("run LLM_PROXY_SDK_PYTHON");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
