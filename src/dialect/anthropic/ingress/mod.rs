//! Anthropic Messages clients in front of a Chat Completions deployment:
//! a Messages request (`POST /v1/messages`) as a Chat Completions request,
//! and the Chat Completions answer, whole or streamed one SSE event at a
//! time, as the Messages answer the Anthropic SDK reads.
//!
//! ```text
//! request.rs   Messages request body -> Chat Completions body; the model it names
//! response.rs  Chat Completions answer -> Message; OpenAI error -> Anthropic error
//! stream.rs    Chat Completions SSE -> Messages SSE, event by event
//! ```
//!
//! Choices made where the two APIs differ:
//! - A tool call whose arguments are not a JSON object is answered with the
//!   input `{}`: the SDK's `ToolUseBlock.input` must be an object. In a
//!   stream the argument pieces are relayed as they come, as Anthropic does.
//! - A stream's `message_start` says `input_tokens: 0`: Chat Completions
//!   reports usage only at the end. The `message_delta` then carries every
//!   count (`input_tokens`, `output_tokens`, cache reads); the SDK takes the
//!   counts of `message_delta` as the totals.
//! - `finish_reason: stop` on an answer that calls tools is `tool_use`; a
//!   whole answer that is an OpenAI `refusal` is a text block with
//!   `stop_reason: refusal`.
//! - `stop_sequence` is always null: Chat Completions does not say which
//!   stop sequence ended the answer.
//! - Reasoning text (`reasoning_content`) is a thinking block with an empty
//!   signature; thinking blocks sent back are dropped from the request.

pub mod request;
pub mod response;
pub mod stream;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Error, Visitor};

use crate::dialect::TokenUsage;

/// A JSON string borrowed from the input when it has no escapes (serde's
/// own `Cow<str>` always copies).
#[derive(Debug)]
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

/// Chat Completions' `usage`, the fields read.
#[derive(Debug, Default, Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl ChatUsage {
    fn tokens(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
            cache_read_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_tokens: 0,
        }
    }
}

/// Anthropic's `usage` for token counts: its `input_tokens` leave out the
/// tokens read from or written to the prompt cache.
fn usage_json(usage: &TokenUsage) -> serde_json::Value {
    let cached = usage.cache_read_tokens + usage.cache_creation_tokens;
    serde_json::json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(cached),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
    })
}

/// Anthropic's `stop_reason` for a Chat Completions `finish_reason`.
fn stop_reason(finish_reason: Option<&str>, called_tools: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if called_tools => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic's error type for an HTTP status, and the status to answer
/// with (an overloaded upstream is Anthropic's 529).
fn error_type(status: u16) -> (u16, &'static str) {
    match status {
        401 => (401, "authentication_error"),
        402 => (402, "billing_error"),
        403 => (403, "permission_error"),
        404 => (404, "not_found_error"),
        413 => (413, "request_too_large"),
        429 => (429, "rate_limit_error"),
        503 | 529 => (529, "overloaded_error"),
        400..=499 => (status, "invalid_request_error"),
        500..=599 => (status, "api_error"),
        _ => (500, "api_error"),
    }
}

/// Anthropic's error type for an OpenAI error `type` or `code` string, as
/// sent in a stream where there is no status.
fn error_type_named(name: &str) -> &'static str {
    if name.contains("rate_limit") {
        "rate_limit_error"
    } else if name.contains("overloaded") {
        "overloaded_error"
    } else if name.contains("invalid_request") || name.contains("context_length") {
        "invalid_request_error"
    } else if name.contains("authentication") || name.contains("api_key") {
        "authentication_error"
    } else if name.contains("permission") {
        "permission_error"
    } else if name.contains("not_found") {
        "not_found_error"
    } else {
        "api_error"
    }
}

/// Anthropic's error body.
fn error_body(kind: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    body.to_string().into_bytes()
}
