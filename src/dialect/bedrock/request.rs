//! Chat Completions request → Converse request.
//!
//! The request is read once into a `Value` and the Converse body built
//! field by field; the model goes in the URL ([`target`]), `stream` picks
//! the route. What Converse cannot express is refused with a
//! [`TranslateError`] naming the field.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::dialect::TranslateError;
use crate::dialect::chat::{self, Turn, part_text, present};

/// What the answer's translation needs to know about its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    pub include_usage: bool,
    /// `stream: true`: the answer comes from `/converse-stream`.
    pub stream: bool,
    /// The model id, for the answer's `model` (Converse does not name it).
    pub model: String,
}

/// The image formats Converse takes, by media type.
const IMAGE_FORMATS: [(&str, &str); 4] = [
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
];

/// What stays as it is in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The model id of a deployment's model name: `converse/<id>` is `<id>`.
pub fn model_id(model: &str) -> &str {
    model.strip_prefix("converse/").unwrap_or(model)
}

/// The request target for `model` (`/model/{id}/converse` or
/// `/converse-stream`, the id URL-encoded: `:` → `%3A`, `/` → `%2F`).
pub fn target(model: &str, stream: bool) -> String {
    let id = utf8_percent_encode(model_id(model), SEGMENT);
    let route = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("/model/{id}/{route}")
}

fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

/// The Converse body for a Chat Completions body (the model goes in the
/// URL, see [`target`]).
pub fn from_chat(chat: &[u8], model: &str) -> Result<(Vec<u8>, Reading), TranslateError> {
    let body: Value =
        serde_json::from_slice(chat).map_err(|e| err("body", format!("not a JSON object: {e}")))?;
    let Value::Object(body) = body else {
        return Err(err("body", "not a JSON object"));
    };
    let mut reading = Reading {
        model: model_id(model).to_string(),
        ..Reading::default()
    };
    if let Some(n) = present(&body, "n")
        && n.as_u64() != Some(1)
    {
        return Err(err("n", "Bedrock answers with one choice: n must be 1"));
    }
    for legacy in ["functions", "function_call"] {
        if present(&body, legacy).is_some() {
            return Err(err(legacy, "not supported: use tools and tool_choice"));
        }
    }
    let mut out = Map::new();
    let (system, messages) = messages(&body)?;
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }

    let mut inference = Map::new();
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = present(&body, field) {
            let n = v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| err(field, "must be a positive integer"))?;
            inference.insert("maxTokens".into(), n.into());
        }
    }
    for (field, name) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = present(&body, field) {
            if !v.is_number() {
                return Err(err(field, "must be a number"));
            }
            inference.insert(name.into(), v.clone());
        }
    }
    if let Some(stop) = present(&body, "stop") {
        let sequences = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
            _ => return Err(err("stop", "must be a string or an array of strings")),
        };
        if !sequences.is_empty() {
            inference.insert("stopSequences".into(), Value::Array(sequences));
        }
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }

    let tools = match present(&body, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, i))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("tools", "must be an array")),
    };
    let choice = match present(&body, "tool_choice") {
        None => Some(None),
        Some(choice) => tool_choice(choice)?,
    };
    // `tool_choice: "none"` (Some(None) is "auto, said or not"): no tools.
    if let Some(choice) = choice
        && !tools.is_empty()
    {
        let mut config = json!({ "tools": tools });
        if let Some(choice) = choice {
            config["toolChoice"] = choice;
        }
        out.insert("toolConfig".into(), config);
    }

    if let Some(stream) = present(&body, "stream") {
        reading.stream = stream
            .as_bool()
            .ok_or_else(|| err("stream", "must be a boolean"))?;
        if reading.stream {
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

/// The system blocks and the messages, consecutive same roles merged (tool
/// results join in one user turn), as Converse wants the roles to alternate.
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

/// Content that may only hold text (system, developer, tool results).
fn text_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, part)| match part_text(part) {
                Some("") => None,
                Some(text) => Some(Ok(json!({ "text": text }))),
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
                Some(text) => blocks.push(json!({ "text": text })),
                None => return Err(err(format!("{at}.text"), "must be a string")),
            },
            Some("image_url") => blocks.push(image(part, &at)?),
            Some(other) => {
                return Err(err(
                    format!("{at}.type"),
                    format!("content part {other:?} is not supported by Bedrock"),
                ));
            }
            None => return Err(err(format!("{at}.type"), "is required")),
        }
    }
    Ok(blocks)
}

/// An `image_url` part: only a base64 `data:` URL (Converse takes the
/// image's bytes, not a URL).
fn image(part: &Value, at: &str) -> Result<Value, TranslateError> {
    let field = format!("{at}.image_url.url");
    let url = match part.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
        None => "",
    };
    let Some(data) = url.strip_prefix("data:") else {
        return Err(err(
            field,
            "Bedrock takes images as data: URLs (base64), not links",
        ));
    };
    let (head, data) = data
        .split_once(',')
        .ok_or_else(|| err(&field, "a data URL without data"))?;
    let media_type = head
        .strip_suffix(";base64")
        .ok_or_else(|| err(&field, "a data URL must be base64-encoded"))?;
    let Some((_, format)) = IMAGE_FORMATS.iter().find(|(t, _)| *t == media_type) else {
        let known: Vec<&str> = IMAGE_FORMATS.iter().map(|(t, _)| *t).collect();
        return Err(err(
            field,
            format!(
                "image type {media_type:?} is not one of {}",
                known.join(", ")
            ),
        ));
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn assistant_blocks(message: &Value, at: &str) -> Result<Vec<Value>, TranslateError> {
    let content = message.get("content").filter(|c| !c.is_null());
    let mut blocks = Vec::new();
    match content {
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part.get("text"),
                    Some("refusal") => part.get("refusal"),
                    _ => None,
                };
                match text.and_then(Value::as_str) {
                    Some("") => {}
                    Some(text) => blocks.push(json!({ "text": text })),
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
        blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
    }
    Ok(blocks)
}

/// A tool message: a `toolResult` block. A result that is a JSON object
/// goes as `json`, other text as `text`.
fn tool_result(message: &Value, at: &str) -> Result<Value, TranslateError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{at}.tool_call_id"), "is required"))?;
    let content = match message.get("content") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(object @ Value::Object(_)) => vec![json!({ "json": object })],
            _ => vec![json!({ "text": s })],
        },
        content => text_blocks(content, &format!("{at}.content"))?,
    };
    // Converse refuses a result without content.
    let content = if content.is_empty() {
        vec![json!({"text": ""})]
    } else {
        content
    };
    Ok(json!({"toolResult": {"toolUseId": id, "content": content}}))
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
    let mut spec = json!({ "name": name });
    if let Some(description) = function.and_then(|f| f.get("description"))
        && !description.is_null()
    {
        spec["description"] = description.clone();
    }
    let schema = match function.and_then(|f| f.get("parameters")) {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(schema @ Value::Object(_)) => schema.clone(),
        Some(_) => {
            return Err(err(
                format!("{at}.function.parameters"),
                "must be a JSON schema object",
            ));
        }
    };
    spec["inputSchema"] = json!({ "json": schema });
    Ok(json!({ "toolSpec": spec }))
}

/// Converse's `toolChoice`: `None` for `"none"` (the tools are left out),
/// `Some(None)` to leave the choice to the model.
fn tool_choice(choice: &Value) -> Result<Option<Option<Value>>, TranslateError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(Some(Some(json!({"auto": {}})))),
            "none" => Ok(None),
            "required" => Ok(Some(Some(json!({"any": {}})))),
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
            Ok(Some(Some(json!({"tool": {"name": name}}))))
        }
        _ => Err(err("tool_choice", "must be a string or an object")),
    }
}
