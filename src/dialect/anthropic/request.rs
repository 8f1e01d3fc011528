//! Chat Completions request → Messages request.
//!
//! The request is read once into a `Value` (it is small and read once per
//! request) and the Messages body is built field by field; what Anthropic
//! has no use for is dropped, what it cannot express is refused with a
//! [`TranslateError`] naming the field.

use serde_json::{Map, Value, json};

use crate::dialect::TranslateError;
use crate::dialect::chat::{self, Turn, part_text, present};

/// Anthropic requires `max_tokens`; a request that names neither
/// `max_tokens` nor `max_completion_tokens` gets this.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The name of the tool that carries a `response_format` answer.
pub const JSON_TOOL: &str = "json_tool_call";

/// What the answer's translation needs to know about its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    pub include_usage: bool,
    /// The tool whose input is the answer (`response_format`): its call
    /// comes back as the message content.
    pub json_tool: Option<String>,
}

/// The thinking budget of each `reasoning_effort`.
fn thinking_budget(effort: &str) -> Option<Option<u64>> {
    match effort {
        "low" => Some(Some(1024)),
        "medium" => Some(Some(2048)),
        "high" => Some(Some(4096)),
        "none" | "minimal" => Some(None),
        _ => None,
    }
}

const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

/// The Messages request body for a Chat Completions request body, for
/// upstream `model`.
pub fn from_chat(chat: &[u8], model: &str) -> Result<(Vec<u8>, Reading), TranslateError> {
    let body: Value =
        serde_json::from_slice(chat).map_err(|e| err("body", format!("not a JSON object: {e}")))?;
    let Value::Object(body) = body else {
        return Err(err("body", "not a JSON object"));
    };
    let mut reading = Reading::default();
    let mut out = Map::new();
    out.insert("model".into(), model.into());

    if let Some(n) = present(&body, "n")
        && n.as_u64() != Some(1)
    {
        return Err(err("n", "Anthropic answers with one choice: n must be 1"));
    }
    for legacy in ["functions", "function_call"] {
        if present(&body, legacy).is_some() {
            return Err(err(legacy, "not supported: use tools and tool_choice"));
        }
    }

    let mut max_tokens = DEFAULT_MAX_TOKENS;
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = present(&body, field) {
            max_tokens = v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| err(field, "must be a positive integer"))?;
        }
    }

    let (system, messages) = messages(&body)?;
    let thinking = match present(&body, "reasoning_effort") {
        None => None,
        Some(v) => v.as_str().and_then(thinking_budget).ok_or_else(|| {
            err(
                "reasoning_effort",
                "must be one of none, minimal, low, medium, high",
            )
        })?,
    };
    // Anthropic refuses thinking when the assistant turn being continued
    // called tools without its thinking blocks (a client that kept only
    // `reasoning_content`): that request goes without thinking.
    let thinking = thinking.filter(|_| !unsigned_tool_turn(&messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(budget) = thinking {
        if max_tokens <= budget {
            max_tokens += budget;
        }
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    } else {
        for field in ["temperature", "top_p"] {
            if let Some(v) = present(&body, field) {
                if !v.is_number() {
                    return Err(err(field, "must be a number"));
                }
                out.insert(field.into(), v.clone());
            }
        }
    }
    out.insert("max_tokens".into(), max_tokens.into());

    if let Some(stop) = present(&body, "stop") {
        let sequences = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
            _ => return Err(err("stop", "must be a string or an array of strings")),
        };
        if !sequences.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(sequences));
        }
    }

    let mut tools = match present(&body, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, i))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("tools", "must be an array")),
    };
    let mut tool_choice = match present(&body, "tool_choice") {
        None => None,
        Some(choice) => Some(tool_choice(choice)?),
    };
    if let Some(schema) = json_schema(&body)? {
        if tool_choice.is_some() {
            return Err(err(
                "tool_choice",
                "cannot be combined with response_format, which forces its own tool",
            ));
        }
        if tools.iter().any(|t| t["name"] == JSON_TOOL) {
            let message = format!("the name {JSON_TOOL:?} is taken by response_format");
            return Err(err("tools", message));
        }
        tools.push(json!({
            "name": JSON_TOOL,
            "description": "Answer with the JSON that the response format asks for.",
            "input_schema": schema,
        }));
        tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
        reading.json_tool = Some(JSON_TOOL.into());
    }
    if present(&body, "parallel_tool_calls") == Some(&Value::Bool(false)) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
    }
    let forced = tool_choice
        .as_ref()
        .is_some_and(|c| c["type"] == "any" || c["type"] == "tool");
    if thinking.is_some() && forced {
        let field = if reading.json_tool.is_some() {
            "response_format"
        } else {
            "tool_choice"
        };
        return Err(err(
            field,
            "a forced tool cannot be combined with reasoning_effort (extended thinking)",
        ));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        out.insert("tool_choice".into(), choice);
    }

    let user = present(&body, "user").or_else(|| present(&body, "safety_identifier"));
    if let Some(user) = user {
        let user = user
            .as_str()
            .ok_or_else(|| err("user", "must be a string"))?;
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(stream) = present(&body, "stream") {
        let stream = stream
            .as_bool()
            .ok_or_else(|| err("stream", "must be a boolean"))?;
        out.insert("stream".into(), stream.into());
        if stream {
            reading.include_usage = body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|e| err("body", e.to_string()))?;
    Ok((bytes, reading))
}

/// The system blocks and the alternating messages.
fn messages(body: &Map<String, Value>) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    chat::each_message(body, |turn, at| {
        let (role, blocks) = match turn {
            Turn::System(content) => {
                system.extend(text_blocks(content, &format!("{at}.content"))?);
                return Ok(());
            }
            Turn::User(content) => ("user", user_blocks(content, &format!("{at}.content"))?),
            Turn::Assistant(message) => ("assistant", assistant_blocks(message, at)?),
            Turn::Tool(message) => ("user", vec![tool_result(message, at)?]),
        };
        chat::push_turn(&mut out, role, "content", blocks);
        Ok(())
    })?;
    if out.is_empty() {
        return Err(err("messages", "has no user or assistant message"));
    }
    Ok((system, out))
}

/// A text block, with the part's `cache_control` when it has one.
fn text_block(text: &str, part: Option<&Value>) -> Value {
    let block = json!({"type": "text", "text": text});
    match part {
        Some(part) => with_cache(block, part),
        None => block,
    }
}

/// Content that may only hold text (system, developer, tool results).
fn text_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_block(s, None)]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, part)| match part_text(part) {
                Some("") => None,
                Some(text) => Some(Ok(text_block(text, Some(part)))),
                None => Some(Err(err(
                    format!("{at}[{j}]"),
                    "only text parts are allowed here",
                ))),
            })
            .collect(),
        Some(_) => Err(err(at, "must be a string or an array of parts")),
    }
}

fn user_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, TranslateError> {
    let Some(Value::Array(parts)) = content else {
        return text_blocks(content, at);
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part_text(part) {
                Some("") => {}
                Some(text) => blocks.push(text_block(text, Some(part))),
                None => return Err(err(format!("{at}.text"), "must be a string")),
            },
            Some("image_url") => blocks.push(image(part, &at)?),
            Some("file") => blocks.push(document(part, &at)?),
            Some(other) => {
                return Err(err(
                    format!("{at}.type"),
                    format!("content part {other:?} is not supported by Anthropic"),
                ));
            }
            None => return Err(err(format!("{at}.type"), "is required")),
        }
    }
    Ok(blocks)
}

/// The media type and base64 data of a `data:` URL.
fn data_url<'a>(data: &'a str, at: &str) -> Result<(&'a str, &'a str), TranslateError> {
    let (head, data) = data
        .split_once(',')
        .ok_or_else(|| err(at, "a data URL without data"))?;
    let media_type = head
        .strip_suffix(";base64")
        .ok_or_else(|| err(at, "a data URL must be base64-encoded"))?;
    Ok((media_type, data))
}

/// An `image_url` part: a `data:` URL becomes a base64 source, an http(s)
/// URL a url source.
fn image(part: &Value, at: &str) -> Result<Value, TranslateError> {
    let url = match part.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
        None => "",
    };
    let at = format!("{at}.image_url.url");
    let source = if let Some(data) = url.strip_prefix("data:") {
        let (media_type, data) = data_url(data, &at)?;
        if !IMAGE_TYPES.contains(&media_type) {
            let types = IMAGE_TYPES.join(", ");
            let message = format!("image type {media_type:?} is not one of {types}");
            return Err(err(at, message));
        }
        json!({"type": "base64", "media_type": media_type, "data": data})
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({"type": "url", "url": url})
    } else {
        return Err(err(at, "must be a data: URL or an http(s) URL"));
    };
    Ok(with_cache(json!({"type": "image", "source": source}), part))
}

/// A `file` part with a PDF as a `data:` URL: a document block.
fn document(part: &Value, at: &str) -> Result<Value, TranslateError> {
    let file = part.get("file");
    if file.and_then(|f| f.get("file_id")).is_some() {
        let message = "uploaded files are not available to Anthropic: send file_data";
        return Err(err(format!("{at}.file.file_id"), message));
    }
    let at = format!("{at}.file.file_data");
    let url = file
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str);
    let data = url
        .and_then(|u| u.strip_prefix("data:"))
        .ok_or_else(|| err(&at, "must be a data: URL"))?;
    let (media_type, data) = data_url(data, &at)?;
    if media_type != "application/pdf" {
        return Err(err(
            at,
            format!("file type {media_type:?} is not application/pdf"),
        ));
    }
    let source = json!({"type": "base64", "media_type": media_type, "data": data});
    Ok(with_cache(
        json!({"type": "document", "source": source}),
        part,
    ))
}

/// `block` with the part's `cache_control`, when it has one.
fn with_cache(mut block: Value, part: &Value) -> Value {
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    block
}

/// Whether the last assistant message calls tools without starting with
/// its thinking.
fn unsigned_tool_turn(messages: &[Value]) -> bool {
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "assistant") else {
        return false;
    };
    let Some(blocks) = last["content"].as_array() else {
        return false;
    };
    let thinks = blocks
        .first()
        .is_some_and(|b| b["type"] == "thinking" || b["type"] == "redacted_thinking");
    !thinks && blocks.iter().any(|b| b["type"] == "tool_use")
}

/// An assistant message's `thinking_blocks` (as answers give them), which
/// Anthropic needs back to continue a tool loop with thinking.
fn thinking_blocks(message: &Value, at: &str) -> Result<Vec<Value>, TranslateError> {
    let blocks = match message.get("thinking_blocks") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(blocks)) => blocks,
        Some(_) => return Err(err(format!("{at}.thinking_blocks"), "must be an array")),
    };
    blocks
        .iter()
        .enumerate()
        .map(
            |(j, block)| match block.get("type").and_then(Value::as_str) {
                Some("thinking") | Some("redacted_thinking") => Ok(block.clone()),
                _ => Err(err(
                    format!("{at}.thinking_blocks[{j}].type"),
                    "must be thinking or redacted_thinking",
                )),
            },
        )
        .collect()
}

fn assistant_blocks(message: &Value, at: &str) -> Result<Vec<Value>, TranslateError> {
    let content = message.get("content").filter(|c| !c.is_null());
    let mut blocks = thinking_blocks(message, at)?;
    match content {
        // An assistant's earlier answer: its text and refusal parts.
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part.get("text"),
                    Some("refusal") => part.get("refusal"),
                    _ => None,
                };
                match text.and_then(Value::as_str) {
                    Some("") => {}
                    Some(text) => blocks.push(text_block(text, Some(part))),
                    None => {
                        return Err(err(
                            format!("{at}.content[{j}]"),
                            "only text and refusal parts are allowed in an assistant message",
                        ));
                    }
                }
            }
        }
        content => blocks.extend(text_blocks(content, &format!("{at}.content"))?),
    }
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(err(format!("{at}.tool_calls"), "must be an array")),
    };
    for (j, call) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("{at}.id"), "is required"))?;
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("{at}.function.name"), "is required"))?;
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let input = if arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(arguments) {
                Ok(input @ Value::Object(_)) => input,
                Ok(_) => {
                    return Err(err(
                        format!("{at}.function.arguments"),
                        "must be a JSON object",
                    ));
                }
                Err(e) => {
                    return Err(err(
                        format!("{at}.function.arguments"),
                        format!("not valid JSON: {e}"),
                    ));
                }
            }
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

fn tool_result(message: &Value, at: &str) -> Result<Value, TranslateError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{at}.tool_call_id"), "is required"))?;
    let content = match message.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        content => Value::Array(text_blocks(content, &format!("{at}.content"))?),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

fn tool(tool: &Value, i: usize) -> Result<Value, TranslateError> {
    let at = format!("tools[{i}]");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(err(
            format!("{at}.type"),
            "only function tools are supported",
        ));
    }
    let function = tool.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{at}.function.name"), "is required"))?;
    let mut out = json!({ "name": name });
    if let Some(description) = function.and_then(|f| f.get("description"))
        && !description.is_null()
    {
        out["description"] = description.clone();
    }
    out["input_schema"] = match function.and_then(|f| f.get("parameters")) {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(schema @ Value::Object(_)) => object_schema(schema),
        Some(_) => {
            return Err(err(
                format!("{at}.function.parameters"),
                "must be a JSON schema object",
            ));
        }
    };
    Ok(with_cache(out, tool))
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            other => Err(err(
                "tool_choice",
                format!("unknown tool_choice {other:?}: auto, none, required or a function"),
            )),
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| err("tool_choice.function.name", "is required"))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(err("tool_choice", "must be a string or an object")),
    }
}

/// The schema of a `response_format` that asks for JSON, if it does.
fn json_schema(body: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let Some(format) = present(body, "response_format") else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => match format.get("json_schema").and_then(|s| s.get("schema")) {
            None | Some(Value::Null) => Ok(Some(json!({"type": "object"}))),
            Some(schema @ Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
                None | Some("object") => Ok(Some(object_schema(schema))),
                Some(_) => Err(err(
                    "response_format.json_schema.schema",
                    "the schema must describe an object",
                )),
            },
            Some(_) => Err(err(
                "response_format.json_schema.schema",
                "must be a JSON schema object",
            )),
        },
        _ => Err(err(
            "response_format.type",
            "must be text, json_object or json_schema",
        )),
    }
}

/// A tool's input schema: Anthropic requires its `type` to be `object`.
fn object_schema(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if schema.get("type").is_none() {
        schema["type"] = "object".into();
    }
    schema
}
