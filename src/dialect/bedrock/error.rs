//! Bedrock error answers → the OpenAI error envelope.
//!
//! Bedrock answers errors as `{"message": "..."}` (some services spell it
//! `Message`) with the error's name in the `x-amzn-ErrorType` field; the
//! body alone says it with `__type` when there is one
//! (`com.amazon.coral.validate#ValidationException`). In a stream, an
//! exception frame names it in `:exception-type` (`throttlingException`).

use serde::Deserialize;

pub(crate) use crate::dialect::chat::error_envelope as envelope;

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
}

/// The OpenAI `type` and `code` of a Bedrock error name (any case, with or
/// without its namespace and `:` suffix).
pub(crate) fn kind(name: &str) -> Option<(&'static str, &'static str)> {
    let name = name.rsplit('#').next().unwrap_or(name);
    let name = name.split(':').next().unwrap_or(name);
    Some(match name.to_ascii_lowercase().as_str() {
        "validationexception" => ("invalid_request_error", "invalid_request_error"),
        "accessdeniedexception"
        | "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "expiredtokenexception" => ("authentication_error", "invalid_api_key"),
        "resourcenotfoundexception" => ("invalid_request_error", "not_found"),
        "throttlingexception" | "servicequotaexceededexception" | "toomanyrequestsexception" => {
            ("rate_limit_error", "rate_limit_exceeded")
        }
        "modeltimeoutexception" => ("server_error", "timeout"),
        "serviceunavailableexception" | "modelnotreadyexception" => ("server_error", "overloaded"),
        "internalserverexception" | "modelerrorexception" | "modelstreamerrorexception" => {
            ("server_error", "upstream_error")
        }
        _ => return None,
    })
}

/// The OpenAI `type` and `code` for a status, when the body says nothing.
fn kind_of_status(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request_error"),
        401 | 403 => ("authentication_error", "invalid_api_key"),
        404 => ("invalid_request_error", "not_found"),
        408 => ("server_error", "timeout"),
        // ModelErrorException: the model failed on the request.
        424 => ("server_error", "upstream_error"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "overloaded"),
        status if status < 500 => ("invalid_request_error", "upstream_error"),
        _ => ("server_error", "upstream_error"),
    }
}

/// The OpenAI envelope for a stream's exception frame: its
/// `:exception-type` and its payload.
pub(crate) fn exception_envelope(exception: &str, payload: &[u8]) -> serde_json::Value {
    let (kind, code) = kind(exception).unwrap_or(("server_error", "upstream_error"));
    let message = serde_json::from_slice::<ErrorBody>(payload)
        .ok()
        .and_then(|b| b.message)
        .unwrap_or_else(|| format!("{exception}: {}", snippet(payload)));
    envelope(&message, kind, code)
}

/// The OpenAI error envelope and the status to answer with, for a Bedrock
/// error answer (its status and body; body may be anything).
pub fn to_openai_error(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let status = match status {
        400..=599 => status,
        // Not an error status: the upstream answered something else than
        // an error where one was expected.
        _ => 502,
    };
    let value = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            message: Some(message),
            kind: name,
        }) => {
            let (kind, code) = name
                .as_deref()
                .and_then(kind)
                .unwrap_or_else(|| kind_of_status(status));
            envelope(&message, kind, code)
        }
        _ => {
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

/// The start of a body that is not Bedrock's, for a message: text, at most
/// 200 characters.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(800)]);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}
