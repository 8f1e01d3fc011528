//! Reading an OpenAI Chat Completions request, for the dialects that
//! translate it (Anthropic, Bedrock, Gemini): the messages, each with the
//! turn it becomes, and the turns joined as those providers want them
//! (roles alternating).

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
