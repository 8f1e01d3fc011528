//! Golden translations: requests, whole answers and streams from
//! `testdata/`, and the check of the outputs with the official SDKs' types.

use super::{golden, pretty, read, testdata};
use crate::dialect::gemini::{ChatStream, Reading, from_chat, to_chat};

const CREATED: u64 = 1_760_000_000;

fn reading(include_usage: bool) -> Reading {
    Reading {
        include_usage,
        stream: true,
        model: "gemini-2.5-flash".into(),
    }
}

/// Each stream fixture and what its request asked for.
pub(super) fn streams() -> Vec<(&'static str, Reading)> {
    let usage = reading(true);
    let plain = reading(false);
    vec![
        ("stream_text", usage.clone()),
        ("stream_parallel_tools", usage.clone()),
        ("stream_usage_last", usage.clone()),
        ("stream_error_mid", usage.clone()),
        ("stream_cut", usage.clone()),
        ("stream_thinking", plain.clone()),
        ("stream_blocked", usage.clone()),
        ("stream_max_tokens", plain.clone()),
        ("stream_two_candidates", usage),
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
fn any_line_end_translates_the_same() {
    for (name, reading) in streams() {
        let input = read(&format!("{name}.sse"));
        let whole = translate(&input, &reading, &[]);
        let text = String::from_utf8(input).unwrap().replace("\r\n", "\n");
        for end in ["\n", "\r\n", "\r"] {
            let other = text.replace('\n', end).into_bytes();
            for cut in 0..=other.len() {
                let split = translate(&other, &reading, &[cut]);
                assert!(split == whole, "{name} with {end:?} split at byte {cut}");
            }
        }
    }
}

/// Each whole-answer fixture.
pub(super) fn answers() -> Vec<&'static str> {
    vec![
        "response_text",
        "response_tools",
        "response_thinking",
        "response_blocked",
        "response_safety",
        "response_candidates",
    ]
}

#[test]
fn answers_translate_as_their_golden_files() {
    for name in answers() {
        let (chat, _) = to_chat(&read(&format!("{name}.json")), &reading(false), CREATED).unwrap();
        golden(&format!("{name}.out.json"), &pretty(&chat));
    }
}

/// Each request fixture.
const REQUESTS: [&str; 3] = ["request_full", "request_json_schema", "request_reasoning"];

#[test]
fn requests_translate_as_their_golden_files() {
    for name in REQUESTS {
        let (body, reading) =
            from_chat(&read(&format!("{name}.json")), "gemini-2.5-flash").unwrap();
        let mut out = pretty(&body);
        out.extend_from_slice(format!("// {reading:?}\n").as_bytes());
        golden(&format!("{name}.out"), &out);
    }
}

/// The fixtures parse as google-genai's `GenerateContentResponse`, the
/// translated outputs as the OpenAI SDK's `ChatCompletion` and
/// `ChatCompletionChunk`, and the translated requests' fields as
/// google-genai's types. Runs when `LLM_PROXY_SDK_PYTHON` names a python
/// with `openai` and `google-genai`.
#[test]
#[allow(clippy::print_stderr)] // the reason it was skipped
fn outputs_parse_with_the_official_sdk_types() {
    let Some(python) = std::env::var_os("LLM_PROXY_SDK_PYTHON") else {
        eprintln!(
            "skipped: LLM_PROXY_SDK_PYTHON is not set (a python with openai and google-genai)"
        );
        return;
    };
    let mut args = vec![testdata("sdk_check.py")];
    for (name, _) in streams() {
        args.push(testdata(&format!("{name}.sse")));
        args.push(testdata(&format!("{name}.out")));
    }
    for name in answers() {
        args.push(testdata(&format!("{name}.json")));
        args.push(testdata(&format!("{name}.out.json")));
    }
    for name in REQUESTS {
        args.push("request".into());
        args.push(testdata(&format!("{name}.out")));
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
