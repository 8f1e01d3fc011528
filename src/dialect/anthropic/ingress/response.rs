//! A whole Chat Completions answer as a Message, and an OpenAI error as
//! Anthropic's error body.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::request::Reading;
use super::{ChatUsage, error_body, error_type, stop_reason, usage_json};
use crate::dialect::{TokenUsage, TranslateError};

#[derive(Deserialize)]
struct Chat {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ChatMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<String>,
    /// Why the model declined, in place of content (OpenAI's refusals).
    #[serde(default)]
    refusal: Option<String>,
    /// The reasoning text of the servers that return it (DeepSeek, vLLM).
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: Option<String>,
    function: Function,
}

#[derive(Deserialize)]
struct Function {
    name: String,
    #[serde(default)]
    arguments: Option<String>,
}

/// The Messages answer for a whole Chat Completions answer, and its usage.
pub fn from_chat(chat: &[u8], reading: &Reading) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let chat: Chat = serde_json::from_slice(chat).map_err(|e| {
        TranslateError::new("response", format!("not a Chat Completions answer: {e}"))
    })?;
    let choice = chat
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| TranslateError::new("response.choices", "is empty"))?;
    let message = choice
        .message
        .ok_or_else(|| TranslateError::new("response.choices[0].message", "is required"))?;
    let mut content = Vec::new();
    if let Some(thinking) = message.reasoning_content.filter(|t| !t.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    let refused = match message.content.filter(|t| !t.is_empty()) {
        Some(text) => {
            content.push(json!({"type": "text", "text": text}));
            false
        }
        None => match message.refusal.filter(|t| !t.is_empty()) {
            Some(refusal) => {
                content.push(json!({"type": "text", "text": refusal}));
                true
            }
            None => false,
        },
    };
    let calls = message.tool_calls.unwrap_or_default();
    let called_tools = !calls.is_empty();
    for (i, call) in calls.into_iter().enumerate() {
        let input = match call.function.arguments.as_deref().map(serde_json::from_str) {
            Some(Ok(Value::Object(input))) => input,
            _ => Map::new(),
        };
        let id = call.id.unwrap_or_else(|| format!("toolu_{i}"));
        content.push(json!({
            "type": "tool_use", "id": id, "name": call.function.name, "input": input,
        }));
    }
    let usage = chat.usage.map(|u| u.tokens()).unwrap_or_default();
    let answer = json!({
        "id": format!("msg_{}", chat.id.unwrap_or_default()),
        "type": "message",
        "role": "assistant",
        "model": reading.model,
        "content": content,
        "stop_reason": if refused {
            "refusal"
        } else {
            stop_reason(choice.finish_reason.as_deref(), called_tools)
        },
        "stop_sequence": null,
        "usage": usage_json(&usage),
    });
    Ok((answer.to_string().into_bytes(), usage))
}

/// The longest upstream error text passed on, in bytes.
const MAX_MESSAGE: usize = 2048;

/// Anthropic's error body `{"type":"error","error":{"type","message"}}` for
/// an OpenAI error envelope (or any body) answered with `status`, and the
/// status to answer with: 503 and 529 are Anthropic's `overloaded_error`
/// 529, any status that is not an error is answered 500 `api_error`.
pub fn error_from_openai(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let (answer, kind) = error_type(status);
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match &v["error"] {
            Value::Object(e) => e.get("message").and_then(Value::as_str).map(str::to_owned),
            Value::String(s) => Some(s.clone()),
            _ => v["message"].as_str().map(str::to_owned),
        },
        Err(_) => None,
    };
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let mut text = text.trim().to_owned();
        if text.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    });
    let message = if message.is_empty() {
        format!("upstream answered {status} without a message")
    } else {
        message
    };
    (answer, error_body(kind, &message))
}
