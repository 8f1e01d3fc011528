use serde_json::{Value, json};

use crate::dialect::anthropic::error::to_openai_error;

fn translate(status: u16, body: &[u8]) -> (u16, Value) {
    let (status, bytes) = to_openai_error(status, body);
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn anthropic_errors_keep_their_status_and_message() {
    for (status, kind, openai, code, answered) in [
        (
            400,
            "invalid_request_error",
            "invalid_request_error",
            "invalid_request_error",
            400,
        ),
        (
            401,
            "authentication_error",
            "authentication_error",
            "invalid_api_key",
            401,
        ),
        (
            403,
            "permission_error",
            "permission_error",
            "permission_denied",
            403,
        ),
        (
            404,
            "not_found_error",
            "invalid_request_error",
            "not_found",
            404,
        ),
        (
            413,
            "request_too_large",
            "invalid_request_error",
            "request_too_large",
            413,
        ),
        (
            429,
            "rate_limit_error",
            "rate_limit_error",
            "rate_limit_exceeded",
            429,
        ),
        (500, "api_error", "server_error", "upstream_error", 500),
        (529, "overloaded_error", "server_error", "overloaded", 503),
    ] {
        let body =
            json!({"type": "error", "error": {"type": kind, "message": "why \"it\" failed"}});
        let (got, envelope) = translate(status, body.to_string().as_bytes());
        assert_eq!(got, answered, "{kind}");
        assert_eq!(
            envelope,
            json!({"error": {"message": "why \"it\" failed", "type": openai, "param": null, "code": code}}),
            "{kind}"
        );
    }
}

#[test]
fn a_body_that_is_not_anthropics_still_gets_an_envelope() {
    let (status, envelope) = translate(502, b"<html>Bad Gateway</html>");
    assert_eq!(status, 502);
    assert_eq!(envelope["error"]["type"], "server_error");
    assert_eq!(
        envelope["error"]["message"],
        "the upstream answered 502: <html>Bad Gateway</html>"
    );
    let (status, envelope) = translate(429, b"");
    assert_eq!(
        (status, &envelope["error"]["code"]),
        (429, &json!("rate_limit_exceeded"))
    );
    assert_eq!(envelope["error"]["message"], "the upstream answered 429");
    let (status, envelope) = translate(529, &[0xff, 0xfe]);
    assert_eq!(
        (status, &envelope["error"]["code"]),
        (503, &json!("overloaded"))
    );
    // An unknown Anthropic type is read by its status.
    let (status, envelope) = translate(
        409,
        br#"{"type":"error","error":{"type":"conflict_error","message":"busy"}}"#,
    );
    assert_eq!(
        (status, &envelope["error"]["message"]),
        (409, &json!("busy"))
    );
    assert_eq!(envelope["error"]["type"], "invalid_request_error");
    // An error without a message is named by its type.
    let (_, envelope) = translate(500, br#"{"type":"error","error":{"type":"api_error"}}"#);
    assert_eq!(
        envelope["error"]["message"],
        "the upstream answered api_error"
    );
    // Not an error status at all.
    assert_eq!(translate(200, b"{}").0, 502);
    let long = "x".repeat(5000);
    let (_, envelope) = translate(500, long.as_bytes());
    assert!(
        envelope["error"]["message"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            < 260
    );
}
