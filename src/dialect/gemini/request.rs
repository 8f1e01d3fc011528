//! Chat Completions request → generateContent request.
//!
//! The request is read once into a `Value` (it is small and read once per
//! request) and the generateContent body is built field by field; what
//! Gemini has no use for is dropped, what it cannot express is refused with
//! a [`TranslateError`] naming the field. The model and whether to stream
//! are not in the body but in the request target ([`target`]).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::response::THOUGHT_MARK;
use crate::dialect::TranslateError;
use crate::dialect::chat::{self, Turn, part_text, present};

/// What the answer's translation needs to know about its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    pub include_usage: bool,
    /// `stream: true`: the request goes to `:streamGenerateContent`.
    pub stream: bool,
    /// The upstream model, named in the answers (Gemini's own
    /// `modelVersion` may name a dated version of it).
    pub model: String,
}

/// The request target (path and query, after the base URL's path) for
/// `model`.
pub fn target(model: &str, stream: bool) -> String {
    if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    }
}

/// The thinking budget of each `reasoning_effort`.
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "none" => Some(0),
        "minimal" => Some(128),
        "low" => Some(1024),
        "medium" => Some(2048),
        "high" => Some(4096),
        _ => None,
    }
}

/// Schema keywords Gemini's `parameters` refuses.
const UNSUPPORTED_SCHEMA_KEYS: [&str; 3] = ["additionalProperties", "$schema", "strict"];

/// The MIME type of a file URL, from its extension.
fn mime_of_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => return None,
    })
}

fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

/// The generateContent body for a Chat Completions body, for upstream
/// `model`.
pub fn from_chat(chat: &[u8], model: &str) -> Result<(Vec<u8>, Reading), TranslateError> {
    let body: Value =
        serde_json::from_slice(chat).map_err(|e| err("body", format!("not a JSON object: {e}")))?;
    let Value::Object(body) = body else {
        return Err(err("body", "not a JSON object"));
    };
    let mut reading = Reading {
        model: model.to_string(),
        ..Reading::default()
    };
    for legacy in ["functions", "function_call"] {
        if present(&body, legacy).is_some() {
            return Err(err(legacy, "not supported: use tools and tool_choice"));
        }
    }
    let mut out = Map::new();
    let (system, contents) = contents(&body)?;
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
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
    if !tools.is_empty() {
        out.insert("tools".into(), json!([{ "functionDeclarations": tools }]));
    }
    if let Some(choice) = present(&body, "tool_choice") {
        out.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": tool_choice(choice)? }),
        );
    }

    let config = generation_config(&body)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
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

fn generation_config(body: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    for (field, name) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = present(body, field) {
            if !v.is_number() {
                return Err(err(field, "must be a number"));
            }
            config.insert(name.into(), v.clone());
        }
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = present(body, field) {
            let n = v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| err(field, "must be a positive integer"))?;
            config.insert("maxOutputTokens".into(), n.into());
        }
    }
    if let Some(stop) = present(body, "stop") {
        let sequences = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
            _ => return Err(err("stop", "must be a string or an array of strings")),
        };
        if !sequences.is_empty() {
            config.insert("stopSequences".into(), Value::Array(sequences));
        }
    }
    if let Some(n) = present(body, "n") {
        let n = n
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| err("n", "must be a positive integer"))?;
        if n != 1 {
            config.insert("candidateCount".into(), n.into());
        }
    }
    if let Some(seed) = present(body, "seed") {
        if seed.as_i64().is_none() {
            return Err(err("seed", "must be an integer"));
        }
        config.insert("seed".into(), seed.clone());
    }
    if let Some(format) = present(body, "response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), "application/json".into());
                match format.get("json_schema").and_then(|s| s.get("schema")) {
                    None | Some(Value::Null) => {}
                    Some(schema @ Value::Object(_)) => {
                        config.insert("responseJsonSchema".into(), schema.clone());
                    }
                    Some(_) => {
                        return Err(err(
                            "response_format.json_schema.schema",
                            "must be a JSON schema object",
                        ));
                    }
                }
            }
            _ => {
                return Err(err(
                    "response_format.type",
                    "must be text, json_object or json_schema",
                ));
            }
        }
    }
    if let Some(effort) = present(body, "reasoning_effort") {
        let budget = effort.as_str().and_then(thinking_budget).ok_or_else(|| {
            err(
                "reasoning_effort",
                "must be one of none, minimal, low, medium, high",
            )
        })?;
        let mut thinking = json!({ "thinkingBudget": budget });
        if budget > 0 {
            thinking["includeThoughts"] = true.into();
        }
        config.insert("thinkingConfig".into(), thinking);
    }
    Ok(config)
}

/// The system parts and the contents, roles `user` and `model`, a message
/// of the same role as the one before joined to it.
fn contents(body: &Map<String, Value>) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    // The function each tool call id called, for the tool messages.
    let mut calls: HashMap<String, String> = HashMap::new();
    chat::each_message(body, |turn, at| {
        let (role, parts) = match turn {
            Turn::System(content) => {
                system.extend(text_parts(content, &format!("{at}.content"))?);
                return Ok(());
            }
            Turn::User(content) => ("user", user_parts(content, &format!("{at}.content"))?),
            Turn::Assistant(message) => ("model", model_parts(message, at, &mut calls)?),
            Turn::Tool(message) => ("user", vec![function_response(message, at, &calls)?]),
        };
        chat::push_turn(&mut out, role, "parts", parts);
        Ok(())
    })?;
    if out.is_empty() {
        return Err(err("messages", "has no user or assistant message"));
    }
    Ok((system, out))
}

/// Content that may only hold text (system, developer, assistant, tool).
fn text_parts(content: Option<&Value>, at: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, part)| {
                let text = part_text(part).or_else(|| {
                    (part.get("type").and_then(Value::as_str) == Some("refusal"))
                        .then(|| part.get("refusal").and_then(Value::as_str))
                        .flatten()
                });
                match text {
                    Some("") => None,
                    Some(text) => Some(Ok(json!({ "text": text }))),
                    None => Some(Err(err(
                        format!("{at}[{j}]"),
                        "only text parts are allowed here",
                    ))),
                }
            })
            .collect(),
        Some(_) => Err(err(at, "must be a string or an array of parts")),
    }
}

fn user_parts(content: Option<&Value>, at: &str) -> Result<Vec<Value>, TranslateError> {
    let Some(Value::Array(parts)) = content else {
        return text_parts(content, at);
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part_text(part) {
                Some("") => {}
                Some(text) => out.push(json!({ "text": text })),
                None => return Err(err(format!("{at}.text"), "must be a string")),
            },
            Some("image_url") => out.push(image(part, &at)?),
            Some(other) => {
                return Err(err(
                    format!("{at}.type"),
                    format!("content part {other:?} is not supported by Gemini"),
                ));
            }
            None => return Err(err(format!("{at}.type"), "is required")),
        }
    }
    Ok(out)
}

/// An `image_url` part: a `data:` URL becomes `inlineData`, an http(s) URL
/// `fileData` with the MIME type of its extension.
fn image(part: &Value, at: &str) -> Result<Value, TranslateError> {
    let url = match part.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
        None => "",
    };
    let field = format!("{at}.image_url.url");
    if let Some(data) = url.strip_prefix("data:") {
        let (head, data) = data
            .split_once(',')
            .ok_or_else(|| err(&field, "a data URL without data"))?;
        let mime = head
            .strip_suffix(";base64")
            .ok_or_else(|| err(&field, "a data URL must be base64-encoded"))?;
        if mime.is_empty() || !mime.contains('/') {
            return Err(err(&field, "a data URL must name its MIME type"));
        }
        Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        let mime = mime_of_url(url).ok_or_else(|| {
            err(
                &field,
                "the file type cannot be told from the URL's extension \
                 (.jpg, .png, .gif, .webp, .heic, .heif, .pdf, ...): send it as a data URL",
            )
        })?;
        Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
    } else {
        Err(err(&field, "must be a data: URL or an http(s) URL"))
    }
}

/// An assistant message: its text, then its tool calls as `functionCall`
/// parts (their names noted for the tool messages that answer them).
fn model_parts(
    message: &Value,
    at: &str,
    calls: &mut HashMap<String, String>,
) -> Result<Vec<Value>, TranslateError> {
    let content = message.get("content").filter(|c| !c.is_null());
    let mut parts = text_parts(content, &format!("{at}.content"))?;
    let list = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(parts),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(err(format!("{at}.tool_calls"), "must be an array")),
    };
    for (j, call) in list.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("{at}.function.name"), "is required"))?;
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            calls.insert(id.to_string(), name.to_string());
        }
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = if arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(arguments) {
                Ok(args @ Value::Object(_)) => args,
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
        let mut part = json!({"functionCall": {"name": name, "args": args}});
        // A signature the answer put in the id goes back to Gemini.
        let signature = call
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| id.split_once(THOUGHT_MARK))
            .map(|(_, signature)| signature)
            .filter(|signature| !signature.is_empty());
        if let Some(signature) = signature {
            part["thoughtSignature"] = signature.into();
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A tool message: a `functionResponse` part for the function its call id
/// called; its content as the response when it is a JSON object, else
/// under `content`.
fn function_response(
    message: &Value,
    at: &str,
    calls: &HashMap<String, String>,
) -> Result<Value, TranslateError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{at}.tool_call_id"), "is required"))?;
    let name = calls.get(id).ok_or_else(|| {
        err(
            format!("{at}.tool_call_id"),
            format!("{id:?} answers no tool call of an earlier assistant message"),
        )
    })?;
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        content => text_parts(content, &format!("{at}.content"))?
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({ "content": other }),
        Err(_) => json!({ "content": text }),
    };
    Ok(json!({"functionResponse": {"name": name, "response": response}}))
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
    match function.and_then(|f| f.get("parameters")) {
        None | Some(Value::Null) => {}
        Some(schema @ Value::Object(_)) => {
            let schema = pare(schema);
            // Gemini refuses an object schema without properties: a function
            // without parameters has none.
            let empty = schema
                .get("properties")
                .is_none_or(|p| p.as_object().is_some_and(Map::is_empty));
            if !empty {
                out["parameters"] = schema;
            }
        }
        Some(_) => {
            return Err(err(
                format!("{at}.function.parameters"),
                "must be a JSON schema object",
            ));
        }
    }
    Ok(out)
}

/// A JSON schema without the keywords Gemini refuses, at every depth.
fn pare(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !UNSUPPORTED_SCHEMA_KEYS.contains(&key.as_str()))
                .map(|(key, value)| {
                    // Property names are data, not keywords: keep them all.
                    let value = if key == "properties" {
                        match value {
                            Value::Object(props) => Value::Object(
                                props.iter().map(|(k, v)| (k.clone(), pare(v))).collect(),
                            ),
                            other => other.clone(),
                        }
                    } else {
                        pare(value)
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(pare).collect()),
        other => other.clone(),
    }
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"mode": "AUTO"})),
            "none" => Ok(json!({"mode": "NONE"})),
            "required" => Ok(json!({"mode": "ANY"})),
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
            Ok(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
        }
        _ => Err(err("tool_choice", "must be a string or an object")),
    }
}
