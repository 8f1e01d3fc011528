//! A whole Messages answer → a Chat Completions answer.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::request::Reading;
use crate::dialect::{TokenUsage, TranslateError};

/// Anthropic's `usage`, as in a message, `message_start` and `message_delta`
/// (where every field may be missing or null).
#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub(crate) struct Usage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// This usage with the fields `later` reports replaced.
    pub fn update(&mut self, later: &Usage) {
        let fields = [
            (&mut self.input_tokens, later.input_tokens),
            (&mut self.output_tokens, later.output_tokens),
            (
                &mut self.cache_creation_input_tokens,
                later.cache_creation_input_tokens,
            ),
            (
                &mut self.cache_read_input_tokens,
                later.cache_read_input_tokens,
            ),
        ];
        for (mine, theirs) in fields {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }

    pub fn tokens(&self) -> TokenUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let creation = self.cache_creation_input_tokens.unwrap_or(0);
        TokenUsage {
            prompt_tokens: self.input_tokens.unwrap_or(0) + read + creation,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: read,
            cache_creation_tokens: creation,
        }
    }
}

/// OpenAI's `usage` object for `tokens`.
pub(crate) fn usage_json(tokens: &TokenUsage) -> Value {
    json!({
        "prompt_tokens": tokens.prompt_tokens,
        "completion_tokens": tokens.completion_tokens,
        "total_tokens": tokens.prompt_tokens + tokens.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": tokens.cache_read_tokens,
            "cache_write_tokens": tokens.cache_creation_tokens,
        },
    })
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and what comes later.
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    id: String,
    model: String,
    #[serde(borrow)]
    content: Vec<Block<'a>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

/// One content block, read flat (its fields depend on its `type`).
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::new("response", message)
}

/// The Chat Completions answer (JSON bytes) for a whole Messages answer;
/// `created` is unix seconds.
pub fn to_chat(
    message: &[u8],
    reading: &Reading,
    created: u64,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let message: Message = serde_json::from_slice(message)
        .map_err(|e| invalid(format!("not an Anthropic message: {e}")))?;
    let mut content = String::new();
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    let mut thinking_blocks = Vec::new();
    let mut answered_by_json_tool = false;
    for block in message.content {
        match block.kind.as_str() {
            "text" => content.push_str(block.text.as_deref().unwrap_or("")),
            "thinking" => {
                let thinking = block.thinking.unwrap_or_default();
                reasoning
                    .get_or_insert_with(String::new)
                    .push_str(&thinking);
                thinking_blocks.push(json!({
                    "type": "thinking",
                    "thinking": thinking,
                    "signature": block.signature.unwrap_or_default(),
                }));
            }
            "redacted_thinking" => thinking_blocks.push(json!({
                "type": "redacted_thinking",
                "data": block.data.unwrap_or_default(),
            })),
            "tool_use" => {
                let arguments = block.input.map_or("{}", RawValue::get);
                let name = block.name.unwrap_or_default();
                if reading.json_tool.as_deref() == Some(name.as_str()) {
                    content.push_str(arguments);
                    answered_by_json_tool = true;
                    continue;
                }
                calls.push(json!({
                    "id": block.id.unwrap_or_default(),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            // Server tools and what comes later.
            _ => {}
        }
    }
    let mut finish = finish_reason(message.stop_reason.as_deref().unwrap_or("end_turn"));
    if finish == "tool_calls" && calls.is_empty() && answered_by_json_tool {
        finish = "stop";
    }
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
    if !thinking_blocks.is_empty() {
        reply.insert("thinking_blocks".into(), Value::Array(thinking_blocks));
    }
    if !calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(calls));
    }
    let tokens = message.usage.tokens();
    let answer = json!({
        "id": message.id,
        "object": "chat.completion",
        "created": created,
        "model": message.model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage_json(&tokens),
    });
    let bytes = serde_json::to_vec(&answer).map_err(|e| invalid(e.to_string()))?;
    Ok((bytes, tokens))
}
