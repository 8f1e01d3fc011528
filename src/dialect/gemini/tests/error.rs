use serde_json::{Value, json};

use crate::dialect::gemini::error::to_openai_error;

fn translate(status: u16, body: &[u8]) -> (u16, Value) {
    let (status, bytes) = to_openai_error(status, body);
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn gemini_errors_keep_their_status_and_message() {
    for (status, rpc, kind, code) in [
        (
            400,
            "INVALID_ARGUMENT",
            "invalid_request_error",
            "invalid_request_error",
        ),
        (
            400,
            "FAILED_PRECONDITION",
            "invalid_request_error",
            "invalid_request_error",
        ),
        (
            401,
            "UNAUTHENTICATED",
            "authentication_error",
            "invalid_api_key",
        ),
        (
            403,
            "PERMISSION_DENIED",
            "authentication_error",
            "permission_denied",
        ),
        (404, "NOT_FOUND", "invalid_request_error", "not_found"),
        (
            429,
            "RESOURCE_EXHAUSTED",
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        (500, "INTERNAL", "server_error", "upstream_error"),
        (503, "UNAVAILABLE", "server_error", "overloaded"),
        (504, "DEADLINE_EXCEEDED", "server_error", "timeout"),
    ] {
        let body =
            json!({"error": {"code": status, "message": "why \"it\" failed", "status": rpc}});
        let (got, envelope) = translate(status, body.to_string().as_bytes());
        assert_eq!(got, status, "{rpc}");
        assert_eq!(
            envelope,
            json!({"error": {"message": "why \"it\" failed", "type": kind, "param": null, "code": code}}),
            "{rpc}"
        );
        // Wrapped in an array, as some Google endpoints answer.
        let (_, wrapped) = translate(status, format!("[{body}]").as_bytes());
        assert_eq!(wrapped, envelope, "{rpc} in an array");
    }
}

#[test]
fn a_body_that_is_not_geminis_is_told_by_its_status() {
    let (status, envelope) = translate(429, b"Too Many Requests");
    assert_eq!(status, 429);
    assert_eq!(envelope["error"]["type"], "rate_limit_error");
    assert_eq!(
        envelope["error"]["message"],
        "the upstream answered 429: Too Many Requests"
    );
    let (status, envelope) = translate(502, b"");
    assert_eq!(status, 502);
    assert_eq!(envelope["error"]["type"], "server_error");
    assert_eq!(envelope["error"]["message"], "the upstream answered 502");
    // An unknown RPC status: the HTTP status decides.
    let body = br#"{"error":{"code":403,"message":"no","status":"SOMETHING_NEW"}}"#;
    let (_, envelope) = translate(403, body);
    assert_eq!(envelope["error"]["type"], "authentication_error");
    // Not an error status at all: a bad gateway.
    assert_eq!(translate(200, b"{}").0, 502);
}
