//! Golden tests: `testdata/*.json` in, `*.out` expected (written anew with
//! `BLESS=1`, then reviewed). Stream fixtures list `[event type, payload]`
//! pairs (`!name` for an exception frame), encoded as real frames here.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::super::error::to_openai_error;
use super::super::request::{Reading, from_chat, target};
use super::super::response::to_chat;
use super::super::sign::{Credentials, VerifyError, parse_amz_date, sign, verify};
use super::super::stream::{ChatStream, event_frame, exception_frame};
use crate::dialect::TokenUsage;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/dialect/bedrock/testdata")
        .join(name)
}

#[track_caller]
fn golden(name: &str, actual: &str) {
    let path = testdata(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "{} differs (BLESS=1 to rewrite)", name);
}

/// The ids of chunks are random: `chatcmpl-X` in goldens.
fn stable(sse: &str) -> String {
    let mut out = String::new();
    let mut rest = sse;
    while let Some(at) = rest.find("\"chatcmpl-") {
        out.push_str(&rest[..at]);
        out.push_str("\"chatcmpl-X");
        rest = &rest[at + 10..];
        let end = rest.find('"').unwrap();
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn frames(fixture: &str) -> Vec<u8> {
    let events: Vec<(String, Value)> =
        serde_json::from_slice(&std::fs::read(testdata(fixture)).unwrap()).unwrap();
    let mut bytes = Vec::new();
    for (kind, payload) in events {
        let payload = serde_json::to_vec(&payload).unwrap();
        match kind.strip_prefix('!') {
            Some(exception) => bytes.extend(exception_frame(exception, &payload)),
            None => bytes.extend(event_frame(&kind, &payload)),
        }
    }
    bytes
}

fn reading(include_usage: bool) -> Reading {
    Reading {
        include_usage,
        stream: true,
        model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(),
    }
}

fn run(bytes: &[u8], reading: &Reading, split: &[usize]) -> (String, ChatStream) {
    let mut stream = ChatStream::new(reading, 1_700_000_000);
    let mut out = Vec::new();
    let mut from = 0;
    for &at in split.iter().chain([&bytes.len()]) {
        stream.feed(&bytes[from..at], &mut out);
        from = at;
    }
    stream.finish(&mut out);
    (stable(&String::from_utf8(out).unwrap()), stream)
}

#[test]
fn request_full() {
    let chat = std::fs::read(testdata("request_full.json")).unwrap();
    let (body, reading) = from_chat(&chat, "anthropic.claude-3-5-sonnet-20240620-v1:0").unwrap();
    assert_eq!(reading, reading_of(true));
    let pretty = serde_json::to_string_pretty(&serde_json::from_slice::<Value>(&body).unwrap());
    golden("request_full.out", &(pretty.unwrap() + "\n"));
}

fn reading_of(include_usage: bool) -> Reading {
    reading(include_usage)
}

#[test]
fn request_targets_and_refusals() {
    assert_eq!(
        target("anthropic.claude-3-5-sonnet-20240620-v1:0", false),
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(
        target(
            "converse/arn:aws:bedrock:us-east-1::foundation-model/x",
            true
        ),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fx/converse-stream"
    );
    let (_, reading) = from_chat(
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        "converse/meta.llama3-8b-instruct-v1:0",
    )
    .unwrap();
    assert_eq!(reading.model, "meta.llama3-8b-instruct-v1:0");
    assert!(!reading.stream);
    for (body, field) in [
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n",
        ),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
    ] {
        let error = from_chat(&serde_json::to_vec(&body).unwrap(), "m").unwrap_err();
        assert_eq!(error.field, field, "{body}");
    }
    // tool_choice none: the tools are left out.
    let body = json!({
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "none",
    });
    let (out, _) = from_chat(&serde_json::to_vec(&body).unwrap(), "m").unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert!(out.get("toolConfig").is_none(), "{out}");
    // A named function: toolChoice.tool.
    let body = json!({
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
    });
    let (out, _) = from_chat(&serde_json::to_vec(&body).unwrap(), "m").unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        out["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
}

#[test]
fn response_text_and_tools() {
    let reading = reading(false);
    for name in ["response_text", "response_tools"] {
        let body = std::fs::read(testdata(&format!("{name}.json"))).unwrap();
        let (chat, _) = to_chat(&body, &reading, 1_700_000_000).unwrap();
        let mut chat: Value = serde_json::from_slice(&chat).unwrap();
        assert!(chat["id"].as_str().unwrap().starts_with("chatcmpl-"));
        chat["id"] = "chatcmpl-X".into();
        let pretty = serde_json::to_string_pretty(&chat).unwrap();
        golden(&format!("{name}.out.json"), &(pretty + "\n"));
    }
    let body = std::fs::read(testdata("response_tools.json")).unwrap();
    let (_, usage) = to_chat(&body, &reading, 0).unwrap();
    assert_eq!(
        usage,
        TokenUsage {
            prompt_tokens: 90,
            completion_tokens: 20,
            cache_read_tokens: 30,
            cache_creation_tokens: 20,
        }
    );
    let error = to_chat(b"{\"message\":\"nope\"}", &reading, 0).unwrap_err();
    assert_eq!(error.field, "response");
    for (stop, finish) in [
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ] {
        let body = json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop, "usage": {"inputTokens": 1, "outputTokens": 1}});
        let (chat, _) = to_chat(&serde_json::to_vec(&body).unwrap(), &reading, 0).unwrap();
        let chat: Value = serde_json::from_slice(&chat).unwrap();
        assert_eq!(chat["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

#[test]
fn stream_goldens() {
    for (name, include_usage) in [
        ("stream_text", true),
        ("stream_tools", false),
        ("stream_exception", true),
        ("stream_cut", true),
    ] {
        let bytes = frames(&format!("{name}.events.json"));
        let (out, _) = run(&bytes, &reading(include_usage), &[]);
        golden(&format!("{name}.out"), &out);
    }
}

#[test]
fn stream_frames_split_at_every_byte_offset() {
    for name in ["stream_text", "stream_tools", "stream_exception"] {
        let bytes = frames(&format!("{name}.events.json"));
        let reading = reading(true);
        let (whole, _) = run(&bytes, &reading, &[]);
        for at in 0..=bytes.len() {
            let (split, _) = run(&bytes, &reading, &[at]);
            assert_eq!(split, whole, "{name} split at {at}");
        }
        // One byte at a time.
        let every: Vec<usize> = (1..bytes.len()).collect();
        let (bytewise, _) = run(&bytes, &reading, &every);
        assert_eq!(bytewise, whole, "{name} byte by byte");
    }
}

#[test]
fn stream_usage_and_state() {
    let bytes = frames("stream_text.events.json");
    let (_, stream) = run(&bytes, &reading(false), &[]);
    assert!(stream.is_done());
    assert_eq!(
        stream.usage(),
        Some(TokenUsage {
            prompt_tokens: 15,
            completion_tokens: 2,
            cache_read_tokens: 5,
            cache_creation_tokens: 0,
        })
    );
    // Before metadata the stream is not over.
    let mut stream = ChatStream::new(&reading(false), 0);
    let mut out = Vec::new();
    stream.feed(
        &event_frame("messageStart", br#"{"role":"assistant"}"#),
        &mut out,
    );
    stream.feed(
        &event_frame("messageStop", br#"{"stopReason":"end_turn"}"#),
        &mut out,
    );
    assert!(!stream.is_done());
    stream.finish(&mut out);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );
}

#[test]
fn stream_refuses_corrupt_and_oversized_frames() {
    let mut bytes = event_frame("messageStart", br#"{"role":"assistant"}"#);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let (out, stream) = run(&bytes, &reading(false), &[]);
    assert!(stream.is_done());
    assert!(out.contains("bad_upstream_response"), "{out}");
    assert!(!out.contains("[DONE]"), "{out}");
    let (out, _) = run(&[0xff, 0xff, 0xff, 0xff, 0, 0], &reading(false), &[]);
    assert!(out.contains("at most"), "{out}");
}

#[test]
fn errors_map_to_openai_envelopes() {
    for (status, body, kind, code) in [
        (
            400,
            r#"{"message":"Malformed input request"}"#,
            "invalid_request_error",
            "invalid_request_error",
        ),
        (
            403,
            r#"{"message":"The security token included in the request is invalid."}"#,
            "authentication_error",
            "invalid_api_key",
        ),
        (
            403,
            r#"{"__type":"UnrecognizedClientException","message":"bad key"}"#,
            "authentication_error",
            "invalid_api_key",
        ),
        (
            404,
            r#"{"message":"Model not found"}"#,
            "invalid_request_error",
            "not_found",
        ),
        (
            429,
            r#"{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Too many requests"}"#,
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        (
            500,
            r#"{"Message":"internal"}"#,
            "server_error",
            "upstream_error",
        ),
        (
            503,
            r#"{"message":"unavailable"}"#,
            "server_error",
            "overloaded",
        ),
        (
            429,
            r#"{"__type":"ModelNotReadyException","message":"not ready"}"#,
            "server_error",
            "overloaded",
        ),
        (
            502,
            "<html>bad gateway</html>",
            "server_error",
            "upstream_error",
        ),
    ] {
        let (out_status, out) = to_openai_error(status, body.as_bytes());
        assert_eq!(out_status, status);
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["error"]["type"], kind, "{body}");
        assert_eq!(out["error"]["code"], code, "{body}");
        assert!(!out["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(to_openai_error(200, b"{}").0, 502);
}

const BODY: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}"#;
const HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const TARGET: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";

fn credentials(token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: token.map(str::to_string),
        region: "us-east-1".into(),
    }
}

/// What botocore's SigV4Auth computes for the same request at
/// 2024-06-20T12:34:56Z (`tests/sdk/bedrock_mock.py` has the script's
/// twin; the values were taken from boto3 1.44).
#[test]
fn sign_matches_boto3() {
    let at = UNIX_EPOCH + Duration::from_secs(1_718_886_896);
    assert_eq!(parse_amz_date("20240620T123456Z"), Some(at));
    let headers = [("Content-Type", "application/json")];
    let lines = sign(&credentials(None), HOST, TARGET, BODY, &headers, at).unwrap();
    let lines = String::from_utf8(lines).unwrap();
    assert!(
        lines.contains("X-Amz-Date: 20240620T123456Z\r\n"),
        "{lines}"
    );
    assert!(lines.contains(
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240620/us-east-1/bedrock/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, \
         Signature=98755cbd2f2fd847caf52525a31d9d6ed6de2c7fd2166df6c812e3c4200905c0\r\n"
    ), "{lines}");
    let token = "FQoGZXIvYXdzEXAMPLETOKEN";
    let lines = sign(&credentials(Some(token)), HOST, TARGET, BODY, &headers, at).unwrap();
    let lines = String::from_utf8(lines).unwrap();
    assert!(
        lines.contains("X-Amz-Security-Token: FQoGZXIvYXdzEXAMPLETOKEN\r\n"),
        "{lines}"
    );
    assert!(
        lines.contains(
            "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
         Signature=f79cabfc86f3fe751c5758116346df11100c2d339d0b57b119fb92c1e11ca4da\r\n"
        ),
        "{lines}"
    );
}

#[test]
fn verify_recomputes_the_signature() {
    let at = UNIX_EPOCH + Duration::from_secs(1_718_886_896);
    let headers = [("Content-Type", "application/json")];
    let token = "FQoGZXIvYXdzEXAMPLETOKEN";
    let lines = sign(&credentials(Some(token)), HOST, TARGET, BODY, &headers, at).unwrap();
    let lines = String::from_utf8(lines).unwrap();
    let mut fields: Vec<(String, String)> = lines
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    fields.push(("host".into(), HOST.into()));
    fields.push(("content-type".into(), "application/json".into()));
    let auth = fields
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap()
        .1
        .clone();
    let header = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    assert_eq!(
        verify(
            &auth,
            header,
            TARGET,
            BODY,
            Some("AKIDEXAMPLE"),
            Some(secret)
        ),
        Ok(())
    );
    assert_eq!(
        verify(
            &auth,
            header,
            TARGET,
            b"{}",
            Some("AKIDEXAMPLE"),
            Some(secret)
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify(
            &auth,
            header,
            TARGET,
            BODY,
            Some("AKIDEXAMPLE"),
            Some("wrong")
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify(&auth, header, TARGET, BODY, Some("AKIDOTHER"), Some(secret)),
        Err(VerifyError::UnknownKey)
    );
    assert!(matches!(
        verify("Bearer x", header, TARGET, BODY, None, None),
        Err(VerifyError::Malformed(_))
    ));
}
