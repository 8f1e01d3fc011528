//! Gemini error answers → the OpenAI error envelope.
//!
//! Gemini answers errors as `{"error":{"code","message","status"}}` (Google's
//! RPC status names in `status`), whole or as one chunk of a stream, and at
//! times wrapped in a one-element array. The status is kept; the OpenAI
//! `type` and `code` come from the RPC status name, else from the status.

use serde::Deserialize;

pub(crate) use crate::dialect::chat::error_envelope as envelope;
use serde_json::Value;

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// The OpenAI `type` and `code` of a Google RPC status name.
fn kind(status: &str) -> Option<(&'static str, &'static str)> {
    Some(match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
            ("invalid_request_error", "invalid_request_error")
        }
        "UNAUTHENTICATED" => ("authentication_error", "invalid_api_key"),
        "PERMISSION_DENIED" => ("authentication_error", "permission_denied"),
        "NOT_FOUND" => ("invalid_request_error", "not_found"),
        "RESOURCE_EXHAUSTED" => ("rate_limit_error", "rate_limit_exceeded"),
        "CANCELLED" => ("server_error", "cancelled"),
        "DEADLINE_EXCEEDED" => ("server_error", "timeout"),
        "UNAVAILABLE" => ("server_error", "overloaded"),
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" | "UNIMPLEMENTED" => {
            ("server_error", "upstream_error")
        }
        _ => return None,
    })
}

/// The OpenAI `type` and `code` for a status, when the body says nothing.
fn kind_of_status(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request_error"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("authentication_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "overloaded"),
        504 => ("server_error", "timeout"),
        status if status < 500 => ("invalid_request_error", "upstream_error"),
        _ => ("server_error", "upstream_error"),
    }
}

/// Gemini's error detail in `body`: an error object, or one in an array.
pub(crate) fn detail(body: &[u8]) -> Option<ErrorDetail> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|body| body.error),
        Some(b'[') => {
            let mut list = serde_json::from_slice::<Vec<ErrorBody>>(body).ok()?;
            (list.len() == 1).then(|| list.remove(0).error)
        }
        _ => None,
    }
}

/// The OpenAI envelope for an error chunk of a stream.
pub(crate) fn event_envelope(error: &ErrorDetail) -> Value {
    let (kind, code) = error
        .status
        .as_deref()
        .and_then(kind)
        .unwrap_or_else(|| kind_of_status(error.code.unwrap_or(500)));
    envelope(&error.message, kind, code)
}

/// The OpenAI error envelope `{"error":{"message","type","param","code"}}`
/// and the status to answer with, for a Gemini error answer (its status and
/// body; body may be anything).
pub fn to_openai_error(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let status = match status {
        400..=599 => status,
        // Not an error status: the upstream answered something else than
        // an error where one was expected.
        _ => 502,
    };
    let value = match detail(body) {
        Some(error) => {
            let (kind, code) = error
                .status
                .as_deref()
                .and_then(kind)
                .unwrap_or_else(|| kind_of_status(status));
            envelope(&error.message, kind, code)
        }
        None => {
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

/// The start of a body that is not Gemini's, for a message: text, at most
/// 200 characters.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(800)]);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}
