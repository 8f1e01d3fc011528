//! Reading an OpenAI Chat Completions request, for the dialects that
//! translate it (Anthropic, Bedrock, Gemini): the messages, each with the
//! turn it becomes, and the turns joined as those providers want them
//! (roles alternating).

use std::io::Write;

use serde_json::{Map, Value, json};

use super::TranslateError;

/// What a Chat Completions message becomes.
pub enum Turn<'a> {
    /// A `system` or `developer` message: the system prompt.
    System(Option<&'a Value>),
    /// A `user` message's content.
    User(Option<&'a Value>),
    /// An `assistant` message (its content, tool calls, …).
    Assistant(&'a Value),
    /// A `tool` message: a tool's result.
    Tool(&'a Value),
}

/// Calls `turn` with each message of the body's `messages` and its path
/// (`messages[2]`), refusing a missing or empty list, a message without a
/// role, the legacy `function` role and unknown roles.
pub fn each_message<'b>(
    body: &'b Map<String, Value>,
    mut turn: impl FnMut(Turn<'b>, &str) -> Result<(), TranslateError>,
) -> Result<(), TranslateError> {
    let list = match body.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(TranslateError::new("messages", "must not be empty")),
        Some(_) => {
            return Err(TranslateError::new(
                "messages",
                "must be an array of messages",
            ));
        }
        None => return Err(TranslateError::new("messages", "is required")),
    };
    for (i, message) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::new(format!("{at}.role"), "is required"))?;
        let content = message.get("content").filter(|c| !c.is_null());
        let message_turn = match role {
            "system" | "developer" => Turn::System(content),
            "user" => Turn::User(content),
            "assistant" => Turn::Assistant(message),
            "tool" => Turn::Tool(message),
            "function" => {
                return Err(TranslateError::new(
                    format!("{at}.role"),
                    "function messages are not supported: use tool messages",
                ));
            }
            other => {
                return Err(TranslateError::new(
                    format!("{at}.role"),
                    format!("unknown role {other:?}"),
                ));
            }
        };
        turn(message_turn, &at)?;
    }
    Ok(())
}

/// Appends a turn of `role` with `blocks` under `key` (`content`, or
/// Gemini's `parts`), joined to the last turn when that has the same role:
/// the providers want the roles to alternate. An empty turn is left out.
pub fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(Value::Array(existing)) = last.get_mut(key) {
                existing.extend(blocks);
            }
        }
        _ => turns.push(json!({"role": role, key: blocks})),
    }
}

/// A field that is there and not null.
pub fn present<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

/// The text of a `{"type": "text"}` content part.
pub fn part_text(part: &Value) -> Option<&str> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => part.get("text").and_then(Value::as_str),
        _ => None,
    }
}

/// The OpenAI error envelope `{"error":{"message","type","param","code"}}`.
pub fn error_envelope(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// Writes one `chat.completion.chunk` event: `head` (its opening fields,
/// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,`), then
/// choice `index` with the delta `delta` writes and its finish reason.
pub fn write_chunk(
    out: &mut Vec<u8>,
    head: &[u8],
    index: usize,
    finish: Option<&str>,
    delta: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(head);
    out.extend_from_slice(b"\"choices\":[{\"index\":");
    let _ = write!(out, "{index}");
    out.extend_from_slice(b",\"delta\":");
    delta(out);
    out.extend_from_slice(b",\"finish_reason\":");
    match finish {
        Some(reason) => {
            out.push(b'"');
            out.extend_from_slice(reason.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}]}\n\n");
}

/// Writes the end of a stream that finished: the usage chunk (no choices)
/// when the client asked for it (`usage`), then `[DONE]`.
pub fn write_end(out: &mut Vec<u8>, head: &[u8], usage: Option<&Value>) {
    if let Some(usage) = usage {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(head);
        out.extend_from_slice(b"\"choices\":[],\"usage\":");
        let _ = serde_json::to_writer(&mut *out, usage);
        out.extend_from_slice(b"}\n\n");
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
}
