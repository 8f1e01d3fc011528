//! Anthropic error answers → the OpenAI error envelope.
//!
//! Anthropic answers errors as `{"type":"error","error":{"type","message"}}`,
//! whole or as an `error` event in a stream. The OpenAI SDK raises by status
//! (and, in a stream, on any event with an `error` key), so the status is
//! kept, except Anthropic's own 529 `overloaded_error`, which becomes 503.

use serde::Deserialize;

pub(crate) use crate::dialect::chat::error_envelope as envelope;

/// Anthropic's error body.
#[derive(Deserialize)]
pub(crate) struct ErrorBody<'a> {
    #[serde(borrow)]
    pub error: ErrorDetail<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorDetail<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub message: std::borrow::Cow<'a, str>,
}

/// The OpenAI `type` and `code` of an Anthropic error type, and the status
/// Anthropic answers it with.
pub(crate) fn kind(anthropic: &str) -> Option<(&'static str, &'static str, u16)> {
    Some(match anthropic {
        "invalid_request_error" => ("invalid_request_error", "invalid_request_error", 400),
        "authentication_error" => ("authentication_error", "invalid_api_key", 401),
        "permission_error" => ("permission_error", "permission_denied", 403),
        "not_found_error" => ("invalid_request_error", "not_found", 404),
        "request_too_large" => ("invalid_request_error", "request_too_large", 413),
        "rate_limit_error" => ("rate_limit_error", "rate_limit_exceeded", 429),
        "api_error" => ("server_error", "upstream_error", 500),
        "overloaded_error" => ("server_error", "overloaded", 503),
        _ => return None,
    })
}

/// The OpenAI `type` and `code` for a status, when the body says nothing.
fn kind_of_status(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request_error"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 | 529 => ("server_error", "overloaded"),
        status if status < 500 => ("invalid_request_error", "upstream_error"),
        _ => ("server_error", "upstream_error"),
    }
}

/// The OpenAI envelope for an Anthropic error in a stream (`error` event
/// data), or for a body that is not one.
pub(crate) fn event_envelope(data: &[u8]) -> serde_json::Value {
    match serde_json::from_slice::<ErrorBody>(data) {
        Ok(body) => {
            let (kind, code, _) =
                kind(&body.error.kind).unwrap_or(("server_error", "upstream_error", 500));
            envelope(&message_of(&body.error), kind, code)
        }
        Err(_) => envelope(
            &format!("the upstream stream failed: {}", snippet(data)),
            "server_error",
            "upstream_error",
        ),
    }
}

/// The OpenAI error envelope `{"error":{"message","type","param","code"}}`
/// and the status to answer with, for an Anthropic error answer (its status
/// and body; body may be anything).
pub fn to_openai_error(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let status = match status {
        529 => 503,
        400..=599 => status,
        // Not an error status: the upstream answered something else than
        // an error where one was expected.
        _ => 502,
    };
    let value = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => {
            let (kind, code) = match kind(&body.error.kind) {
                Some((kind, code, _)) => (kind, code),
                None => kind_of_status(status),
            };
            envelope(&message_of(&body.error), kind, code)
        }
        Err(_) => {
            let (kind, code) = kind_of_status(status);
            let message = if body.is_empty() {
                format!("the upstream answered {status}")
            } else {
                format!("the upstream answered {status}: {}", snippet(body))
            };
            envelope(&message, kind, code)
        }
    };
    (status, serde_json::to_vec(&value).unwrap_or_default())
}

/// Anthropic's message, or its error type when the message is empty.
fn message_of(error: &ErrorDetail) -> String {
    if error.message.trim().is_empty() {
        format!("the upstream answered {}", error.kind)
    } else {
        error.message.to_string()
    }
}

/// The start of a body that is not Anthropic's, for a message: text, at most
/// 200 characters.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(800)]);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}
