//! A Messages request body as a Chat Completions request body.
//!
//! The body is read once into a `serde_json::Value` (a request is bounded
//! and read whole anyway) and the Chat Completions body is built field by
//! field; every field that cannot be expressed is refused naming it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Str;
use crate::dialect::TranslateError;

type Obj = Map<String, Value>;

/// What the answer's translation needs to know about its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// The model the client named, echoed in answers (not the upstream's).
    pub model: String,
    /// The client asked for a stream of events.
    pub stream: bool,
}

/// The `model` a Messages request names (for routing), without translating
/// it. Borrowed from the body: a model name written with JSON escapes
/// (`\u0067pt`) is refused, as is a body that is not a JSON object or names
/// no model.
pub fn requested_model(messages: &[u8]) -> Result<&str, TranslateError> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        model: Option<Str<'a>>,
    }
    let head: Head = serde_json::from_slice(messages)
        .map_err(|e| TranslateError::new("body", format!("not a valid JSON object: {e}")))?;
    match head.model {
        Some(Str(Cow::Borrowed(model))) if !model.is_empty() => Ok(model),
        Some(Str(Cow::Borrowed(_))) | None => Err(missing("model")),
        Some(Str(Cow::Owned(_))) => Err(TranslateError::new(
            "model",
            "a model name written with JSON escapes is not supported",
        )),
    }
}

/// The Chat Completions request body for a Messages request body, for
/// upstream `model` (streams ask for usage: `stream_options.include_usage`).
pub fn to_chat(messages: &[u8], model: &str) -> Result<(Vec<u8>, Reading), TranslateError> {
    let body: Value = serde_json::from_slice(messages)
        .map_err(|e| TranslateError::new("body", format!("not valid JSON: {e}")))?;
    let Value::Object(req) = body else {
        return Err(TranslateError::new("body", "must be a JSON object"));
    };
    let client_model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(missing("model")),
        Some(_) => return Err(TranslateError::new("model", "must be a string")),
    };
    let max_tokens = match req.get("max_tokens") {
        None | Some(Value::Null) => return Err(missing("max_tokens")),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| TranslateError::new("max_tokens", "must be a positive integer"))?,
    };
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(TranslateError::new("stream", "must be a boolean")),
    };

    let mut chat = Obj::new();
    chat.insert("model".into(), model.into());
    let mut out = Vec::new();
    if let Some(system) = req.get("system") {
        system_message(system, &mut out)?;
    }
    let turns = match req.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(turns)) if !turns.is_empty() => turns,
        Some(Value::Array(_)) => {
            return Err(TranslateError::new(
                "messages",
                "at least one message is required",
            ));
        }
        Some(_) => return Err(TranslateError::new("messages", "must be an array")),
    };
    for (i, turn) in turns.iter().enumerate() {
        message(turn, &format!("messages[{i}]"), &mut out)?;
    }
    chat.insert("messages".into(), Value::Array(out));
    chat.insert("max_tokens".into(), max_tokens.into());
    if let Some(stop) = req.get("stop_sequences").filter(|v| !v.is_null()) {
        let ok = stop
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(TranslateError::new(
                "stop_sequences",
                "must be an array of strings",
            ));
        }
        if stop.as_array().is_some_and(|a| !a.is_empty()) {
            chat.insert("stop".into(), stop.clone());
        }
    }
    for field in ["temperature", "top_p"] {
        match req.get(field) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => {
                chat.insert(field.into(), v.clone());
            }
            Some(_) => return Err(TranslateError::new(field, "must be a number")),
        }
    }
    if let Some(tools) = req.get("tools").filter(|v| !v.is_null()) {
        chat.insert("tools".into(), function_tools(tools)?);
    }
    if let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) {
        tool_choice(choice, &mut chat)?;
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|v| !v.is_null())
    {
        let user = user
            .as_str()
            .ok_or_else(|| TranslateError::new("metadata.user_id", "must be a string"))?;
        chat.insert("user".into(), user.into());
    }
    if let Some(thinking) = req.get("thinking").filter(|v| !v.is_null())
        && let Some(effort) = reasoning_effort(thinking)?
    {
        chat.insert("reasoning_effort".into(), effort.into());
    }
    if stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let body = serde_json::to_vec(&Value::Object(chat))
        .map_err(|e| TranslateError::new("body", e.to_string()))?;
    let reading = Reading {
        model: client_model,
        stream,
    };
    Ok((body, reading))
}

fn missing(field: &str) -> TranslateError {
    TranslateError::new(field, "is required")
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Obj, TranslateError> {
    v.as_object()
        .ok_or_else(|| TranslateError::new(field, "must be an object"))
}

fn string<'a>(o: &'a Obj, key: &str, field: &str) -> Result<&'a str, TranslateError> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(missing(&format!("{field}.{key}"))),
        Some(_) => Err(TranslateError::new(
            format!("{field}.{key}"),
            "must be a string",
        )),
    }
}

fn block_type<'a>(block: &'a Obj, field: &str) -> Result<&'a str, TranslateError> {
    string(block, "type", field)
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// One text part is sent as a plain string, anything else as parts.
fn as_content(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0]["type"] == "text" {
        return parts.swap_remove(0)["text"].take();
    }
    Value::Array(parts)
}

fn system_message(system: &Value, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let content = match system {
        Value::Null => return Ok(()),
        Value::String(s) if s.is_empty() => return Ok(()),
        Value::String(s) => Value::String(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let field = format!("system[{i}]");
                let block = object(block, &field)?;
                match block_type(block, &field)? {
                    "text" => parts.push(text_part(string(block, "text", &field)?)),
                    other => return Err(unsupported_block(&field, other)),
                }
            }
            if parts.is_empty() {
                return Ok(());
            }
            as_content(parts)
        }
        _ => {
            return Err(TranslateError::new(
                "system",
                "must be a string or an array of text blocks",
            ));
        }
    };
    out.push(json!({"role": "system", "content": content}));
    Ok(())
}

fn unsupported_block(field: &str, kind: &str) -> TranslateError {
    TranslateError::new(
        format!("{field}.type"),
        format!("content blocks of type {kind:?} cannot be sent to this model"),
    )
}

fn message(turn: &Value, field: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let turn = object(turn, field)?;
    let role = string(turn, "role", field)?;
    let content_field = format!("{field}.content");
    let content = turn.get("content").ok_or_else(|| missing(&content_field))?;
    match role {
        "user" => user_turn(content, &content_field, out),
        "assistant" => assistant_turn(content, &content_field, out),
        _ => Err(TranslateError::new(
            format!("{field}.role"),
            "must be \"user\" or \"assistant\"",
        )),
    }
}

/// A user turn: its tool results become `tool` messages, placed before the
/// rest of the turn's content (a Chat Completions model expects the tool
/// answers right after the assistant's calls).
fn user_turn(content: &Value, field: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(TranslateError::new(
                field,
                "must be a string or an array of content blocks",
            ));
        }
    };
    let mut parts = Vec::with_capacity(blocks.len());
    let before = out.len();
    for (i, block) in blocks.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let block = object(block, &field)?;
        match block_type(block, &field)? {
            "text" => parts.push(text_part(string(block, "text", &field)?)),
            "image" => parts.push(image_part(block, &field)?),
            "document" => parts.push(document_part(block, &field)?),
            "tool_result" => out.push(tool_message(block, &field, &mut parts)?),
            other => return Err(unsupported_block(&field, other)),
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": as_content(parts)}));
    } else if out.len() == before {
        return Err(TranslateError::new(field, "must not be empty"));
    }
    Ok(())
}

fn image_part(block: &Obj, field: &str) -> Result<Value, TranslateError> {
    let source_field = format!("{field}.source");
    let source = object(
        block.get("source").ok_or_else(|| missing(&source_field))?,
        &source_field,
    )?;
    let url = match string(source, "type", &source_field)? {
        "base64" => format!(
            "data:{};base64,{}",
            string(source, "media_type", &source_field)?,
            string(source, "data", &source_field)?
        ),
        "url" => string(source, "url", &source_field)?.to_owned(),
        other => {
            return Err(TranslateError::new(
                format!("{source_field}.type"),
                format!("image sources of type {other:?} cannot be sent to this model"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A document: a base64 PDF as a `file` part, plain text as a text part.
fn document_part(block: &Obj, field: &str) -> Result<Value, TranslateError> {
    let source_field = format!("{field}.source");
    let source = object(
        block.get("source").ok_or_else(|| missing(&source_field))?,
        &source_field,
    )?;
    match string(source, "type", &source_field)? {
        "base64" => {
            let filename = match block.get("title") {
                Some(Value::String(title)) if !title.is_empty() => title.as_str(),
                _ => "document.pdf",
            };
            let data = format!(
                "data:{};base64,{}",
                string(source, "media_type", &source_field)?,
                string(source, "data", &source_field)?
            );
            Ok(json!({"type": "file", "file": {"filename": filename, "file_data": data}}))
        }
        "text" => Ok(text_part(string(source, "data", &source_field)?)),
        other => Err(TranslateError::new(
            format!("{source_field}.type"),
            format!("document sources of type {other:?} cannot be sent to this model"),
        )),
    }
}

/// A `tool_result` block as a `tool` message. Its text blocks are joined
/// with newlines; its images and documents, which a `tool` message cannot
/// carry, go to the user message that follows. `is_error` is said at the start of the text.
fn tool_message(block: &Obj, field: &str, parts: &mut Vec<Value>) -> Result<Value, TranslateError> {
    let id = string(block, "tool_use_id", field)?;
    let mut text = String::new();
    match block.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(blocks)) => {
            for (i, inner) in blocks.iter().enumerate() {
                let field = format!("{field}.content[{i}]");
                let inner = object(inner, &field)?;
                match block_type(inner, &field)? {
                    "text" => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(string(inner, "text", &field)?);
                    }
                    "image" => parts.push(image_part(inner, &field)?),
                    "document" => parts.push(document_part(inner, &field)?),
                    other => return Err(unsupported_block(&field, other)),
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::new(
                format!("{field}.content"),
                "must be a string or an array of content blocks",
            ));
        }
    }
    let is_error = match block.get("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(TranslateError::new(
                format!("{field}.is_error"),
                "must be a boolean",
            ));
        }
    };
    if is_error {
        text = if text.is_empty() {
            "Error".into()
        } else {
            format!("Error: {text}")
        };
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

/// An assistant turn: text, and `tool_use` blocks as `tool_calls`; thinking
/// blocks are dropped (a Chat Completions model cannot take them back).
fn assistant_turn(
    content: &Value,
    field: &str,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "assistant", "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(TranslateError::new(
                field,
                "must be a string or an array of content blocks",
            ));
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let block = object(block, &field)?;
        match block_type(block, &field)? {
            "text" => parts.push(text_part(string(block, "text", &field)?)),
            "tool_use" => {
                let input = block.get("input").unwrap_or(&Value::Null);
                let arguments = match input {
                    Value::Null => "{}".to_owned(),
                    Value::Object(_) => input.to_string(),
                    _ => {
                        return Err(TranslateError::new(
                            format!("{field}.input"),
                            "must be an object",
                        ));
                    }
                };
                calls.push(json!({
                    "id": string(block, "id", &field)?,
                    "type": "function",
                    "function": {"name": string(block, "name", &field)?, "arguments": arguments},
                }));
            }
            "thinking" | "redacted_thinking" => {}
            other => return Err(unsupported_block(&field, other)),
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut msg = Obj::new();
    msg.insert("role".into(), "assistant".into());
    let text = if parts.is_empty() {
        Value::Null
    } else {
        as_content(parts)
    };
    msg.insert("content".into(), text);
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(msg));
    Ok(())
}

fn function_tools(tools: &Value) -> Result<Value, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| TranslateError::new("tools", "must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let field = format!("tools[{i}]");
        let tool = object(tool, &field)?;
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "custom" => {}
            Some(other) => {
                return Err(TranslateError::new(
                    format!("{field}.type"),
                    format!("server tool {other} cannot be used with this model"),
                ));
            }
        }
        let schema_field = format!("{field}.input_schema");
        let schema = tool
            .get("input_schema")
            .ok_or_else(|| missing(&schema_field))?;
        object(schema, &schema_field)?;
        let mut function = Obj::new();
        function.insert("name".into(), string(tool, "name", &field)?.into());
        match tool.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(d)) => {
                function.insert("description".into(), d.as_str().into());
            }
            Some(_) => {
                return Err(TranslateError::new(
                    format!("{field}.description"),
                    "must be a string",
                ));
            }
        }
        function.insert("parameters".into(), schema.clone());
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

fn tool_choice(choice: &Value, chat: &mut Obj) -> Result<(), TranslateError> {
    let choice = object(choice, "tool_choice")?;
    let value = match string(choice, "type", "tool_choice")? {
        "auto" => "auto".into(),
        "any" => "required".into(),
        "none" => "none".into(),
        "tool" => json!({
            "type": "function",
            "function": {"name": string(choice, "name", "tool_choice")?},
        }),
        _ => {
            return Err(TranslateError::new(
                "tool_choice.type",
                "must be \"auto\", \"any\", \"tool\" or \"none\"",
            ));
        }
    };
    chat.insert("tool_choice".into(), value);
    match choice.get("disable_parallel_tool_use") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            chat.insert("parallel_tool_calls".into(), false.into());
        }
        Some(_) => {
            return Err(TranslateError::new(
                "tool_choice.disable_parallel_tool_use",
                "must be a boolean",
            ));
        }
    }
    Ok(())
}

/// Extended thinking's budget as a reasoning effort: up to 1024 tokens
/// `low`, up to 2048 `medium`, more `high`.
fn reasoning_effort(thinking: &Value) -> Result<Option<&'static str>, TranslateError> {
    let thinking = object(thinking, "thinking")?;
    match string(thinking, "type", "thinking")? {
        "enabled" => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    TranslateError::new("thinking.budget_tokens", "must be a positive integer")
                })?;
            Ok(Some(match budget {
                0..=1024 => "low",
                1025..=2048 => "medium",
                _ => "high",
            }))
        }
        "disabled" | "adaptive" => Ok(None),
        _ => Err(TranslateError::new(
            "thinking.type",
            "must be \"enabled\", \"disabled\" or \"adaptive\"",
        )),
    }
}

/// An estimate of a Messages request's input tokens (`count_tokens`) for a
/// model without Anthropic's tokenizer behind it: a token for every four
/// characters of its text (the system prompt, the messages' strings, the
/// tools' definitions), at least one.
pub fn estimate_input_tokens(messages: &[u8]) -> Result<u64, TranslateError> {
    let body: Value = serde_json::from_slice(messages)
        .map_err(|e| TranslateError::new("body", format!("invalid JSON: {e}")))?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(TranslateError::new(
            "messages",
            "required: an array of messages",
        ));
    }
    fn chars(value: &Value) -> u64 {
        match value {
            Value::String(text) => text.chars().count() as u64,
            Value::Array(items) => items.iter().map(chars).sum(),
            Value::Object(fields) => fields.iter().map(|(k, v)| k.len() as u64 + chars(v)).sum(),
            _ => 0,
        }
    }
    let text: u64 = ["system", "messages", "tools"]
        .iter()
        .filter_map(|field| body.get(*field))
        .map(chars)
        .sum();
    Ok(text.div_ceil(4).max(1))
}
