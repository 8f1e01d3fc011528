//! A whole Converse answer → a Chat Completions answer.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::request::Reading;
use crate::dialect::{TokenUsage, TranslateError};

/// Converse's `usage` (whole answers and the stream's `metadata`).
#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_write_input_tokens: u64,
}

impl Usage {
    pub fn tokens(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.input_tokens
                + self.cache_read_input_tokens
                + self.cache_write_input_tokens,
            completion_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_input_tokens,
            cache_creation_tokens: self.cache_write_input_tokens,
        }
    }
}

/// OpenAI's `usage` object for `tokens`.
pub(crate) fn usage_json(tokens: &TokenUsage) -> Value {
    json!({
        "prompt_tokens": tokens.prompt_tokens,
        "completion_tokens": tokens.completion_tokens,
        "total_tokens": tokens.prompt_tokens + tokens.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": tokens.cache_read_tokens},
    })
}

/// OpenAI's `finish_reason` for Converse's `stopReason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence and what comes later.
        _ => "stop",
    }
}

/// A `chatcmpl-` id: Converse answers carry none.
pub(crate) fn new_id() -> String {
    format!(
        "chatcmpl-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    #[serde(borrow)]
    output: Output<'a>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize)]
struct Output<'a> {
    #[serde(borrow)]
    message: OutputMessage<'a>,
}

#[derive(Deserialize)]
struct OutputMessage<'a> {
    #[serde(borrow, default)]
    content: Vec<Block<'a>>,
}

/// One content block: one of its fields says what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Block<'a> {
    #[serde(default)]
    text: Option<String>,
    #[serde(borrow, default)]
    tool_use: Option<ToolUse<'a>>,
    #[serde(default)]
    reasoning_content: Option<Reasoning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse<'a> {
    tool_use_id: String,
    name: String,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reasoning {
    #[serde(default)]
    reasoning_text: Option<ReasoningText>,
}

#[derive(Deserialize)]
struct ReasoningText {
    #[serde(default)]
    text: String,
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::new("response", message)
}

/// The Chat Completions answer (JSON bytes) for a whole Converse answer;
/// `created` is unix seconds.
pub fn to_chat(
    body: &[u8],
    reading: &Reading,
    created: u64,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not a Converse answer: {e}")))?;
    let mut content = String::new();
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    for block in answer.output.message.content {
        if let Some(text) = block.text {
            content.push_str(&text);
        } else if let Some(tool) = block.tool_use {
            calls.push(json!({
                "id": tool.tool_use_id,
                "type": "function",
                "function": {
                    "name": tool.name,
                    "arguments": tool.input.map_or("{}", RawValue::get),
                },
            }));
        } else if let Some(text) = block.reasoning_content.and_then(|r| r.reasoning_text) {
            reasoning
                .get_or_insert_with(String::new)
                .push_str(&text.text);
        }
    }
    let finish = finish_reason(answer.stop_reason.as_deref().unwrap_or("end_turn"));
    let mut reply = Map::new();
    reply.insert("role".into(), "assistant".into());
    reply.insert(
        "content".into(),
        if content.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            content.into()
        },
    );
    if let Some(reasoning) = reasoning {
        reply.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(calls));
    }
    let tokens = answer.usage.tokens();
    let chat = json!({
        "id": new_id(),
        "object": "chat.completion",
        "created": created,
        "model": reading.model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage_json(&tokens),
    });
    let bytes = serde_json::to_vec(&chat).map_err(|e| invalid(e.to_string()))?;
    Ok((bytes, tokens))
}
