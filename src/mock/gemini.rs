//! Gemini (Google AI Studio) routes of the mock upstream.
//!
//! - `POST /v1beta/models/{model}:generateContent` and
//!   `POST /v1beta/models/{model}:streamGenerateContent` (`?alt=sse` for
//!   server-sent events, `data: {...}\r\n\r\n` as the real API writes them;
//!   without it, one JSON array of the chunks). A key in `x-goog-api-key` or
//!   the `key` query parameter, equal to `--api-key` when the mock has one
//!   (none: 403 `PERMISSION_DENIED`; a wrong one: 400 `INVALID_ARGUMENT`, as
//!   the real API answers). `contents` checked as the real API does.
//! - The answer: the mock's words as text, one chunk a word when streamed
//!   (`maxOutputTokens` fewer: `MAX_TOKENS`), `candidateCount` candidates; or
//!   `functionCall` parts when the request declares functions and the last
//!   turn is the user's (not a `functionResponse`), unless the calling mode
//!   is `NONE` (`ANY` calls whatever the turn): the first declared function
//!   (of `allowedFunctionNames` when given), the first N with
//!   `x-mock-tool-calls: N`, after a text part of N words with
//!   `x-mock-tool-text: N`. Every answer and chunk has `usageMetadata`,
//!   `modelVersion` and `responseId`.
//! - `x-mock-blocked: 1`: the prompt is blocked (`promptFeedback.blockReason`,
//!   no candidates). `x-mock-status`: Gemini's error shape
//!   `{"error":{"code","message","status"}}`. `x-mock-cut-after: N` drops the
//!   connection after N chunks, `x-mock-stream-error-after: N` sends an error
//!   object as the chunk after N.

use http::StatusCode;
use monoio::io::AsyncWriteRent;
use serde_json::{Value, json};

use super::{Behaviour, Mock, Next, openai, send, sse};
use crate::http::RequestHead;
use crate::http::io::{Reply, json_response};

/// The most candidates the mock answers with.
const MAX_CANDIDATES: u64 = 8;

/// Google's RPC status name for an HTTP status.
fn rpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// Gemini's error body.
fn error_body(status: StatusCode, message: &str) -> Value {
    json!({"error": {"code": status.as_u16(), "message": message, "status": rpc_status(status)}})
}

/// A query parameter of the request target.
fn query<'a>(target: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let query = &target[target.iter().position(|&b| b == b'?')? + 1..];
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        (key == name.as_bytes()).then_some(value)
    })
}

pub(super) async fn respond<S: AsyncWriteRent>(
    mock: &Mock,
    stream: &mut S,
    head: &RequestHead,
    buf: &[u8],
    body: &[u8],
    out: &mut Vec<u8>,
    behaviour: &Behaviour,
) -> Next {
    let n = mock.stats.requests.get();
    let mut answer = Answer { stream, out };
    let target = head.target.of(buf);
    let key = head
        .header(buf, "x-goog-api-key")
        .or_else(|| query(target, "key"))
        .filter(|key| !key.is_empty());
    let Some(key) = key else {
        let message = "Method doesn't allow unregistered callers (callers without established \
                       identity). Please use API Key or other form of API consumer identity to \
                       call this API.";
        return answer.error(StatusCode::FORBIDDEN, message).await;
    };
    if mock
        .settings
        .api_key
        .as_ref()
        .is_some_and(|expected| key != expected.as_bytes())
    {
        let message = "API key not valid. Please pass a valid API key.";
        return answer.error(StatusCode::BAD_REQUEST, message).await;
    }
    let path = head.path(buf);
    let route = path
        .strip_prefix(b"/v1beta/models/")
        .and_then(|rest| {
            let at = rest.iter().rposition(|&b| b == b':')?;
            Some((&rest[..at], &rest[at + 1..]))
        })
        .filter(|(model, _)| !model.is_empty());
    let (model, streamed) = match (&head.method, route) {
        (&http::Method::POST, Some((model, b"generateContent"))) => (model, false),
        (&http::Method::POST, Some((model, b"streamGenerateContent"))) => (model, true),
        _ => {
            let message = format!(
                "The requested URL {} was not found on this server.",
                String::from_utf8_lossy(path)
            );
            return answer.error(StatusCode::NOT_FOUND, &message).await;
        }
    };
    let model = String::from_utf8_lossy(model).into_owned();
    behaviour.wait().await;
    if behaviour.status.is_some() {
        let message = "mock error requested with x-mock-status";
        return answer.error(behaviour.status_code(), message).await;
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(request @ Value::Object(_)) => request,
        _ => {
            let message =
                "Invalid JSON payload received. Unknown name \"\": Root element must be a message.";
            return answer.error(StatusCode::BAD_REQUEST, message).await;
        }
    };
    if let Err(message) = validate(&request) {
        return answer.error(StatusCode::BAD_REQUEST, &message).await;
    }
    let blocked = head
        .header(buf, "x-mock-blocked")
        .is_some_and(|v| v.trim_ascii() == b"1");
    let plan = if blocked {
        None
    } else {
        match Plan::of(&request, behaviour) {
            Ok(plan) => Some(plan),
            Err(message) => return answer.error(StatusCode::BAD_REQUEST, &message).await,
        }
    };
    let reply = Generated {
        model,
        response_id: format!("mockResp{n:012}"),
        prompt_tokens: (body.len() as u64 / 4).max(1),
        candidates: request["generationConfig"]["candidateCount"]
            .as_u64()
            .unwrap_or(1)
            .clamp(1, MAX_CANDIDATES),
        plan,
    };
    let chunks = reply.chunks();
    if !streamed {
        let whole = reply.whole();
        return answer.json(&whole, behaviour).await;
    }
    if query(target, "alt") != Some(b"sse") {
        // Without alt=sse the real API streams one JSON array.
        return answer.json(&Value::Array(chunks), behaviour).await;
    }
    answer.events(mock, &chunks, behaviour).await
}

/// The essentials the real API checks, with its wording.
fn validate(request: &Value) -> Result<(), String> {
    let contents = match &request["contents"] {
        Value::Array(contents) if !contents.is_empty() => contents,
        _ => return Err("* GenerateContentRequest.contents: contents is not specified\n".into()),
    };
    for (i, content) in contents.iter().enumerate() {
        if content["parts"].as_array().is_none_or(|p| p.is_empty()) {
            return Err(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            ));
        }
        match content["role"].as_str() {
            None | Some("user") | Some("model") | Some("function") => {}
            Some(_) => return Err("Please use a valid role: user, model.".into()),
        }
    }
    Ok(())
}

/// What the answer holds: parts and why it stopped.
struct Plan {
    parts: Vec<Part>,
    finish_reason: &'static str,
}

enum Part {
    Word(String),
    Call { name: String, args: Value },
}

impl Part {
    fn json(&self) -> Value {
        match self {
            Part::Word(text) => json!({ "text": text }),
            Part::Call { name, args } => json!({"functionCall": {"name": name, "args": args}}),
        }
    }

    fn tokens(&self) -> u64 {
        match self {
            Part::Word(_) => 1,
            Part::Call { args, .. } => (args.to_string().len() as u64 / 4).max(1),
        }
    }
}

/// The text parts of `count` words, a space before every word but the first.
fn words(count: u32) -> impl Iterator<Item = Part> {
    (0..count).map(|i| {
        let word = openai::word(i);
        Part::Word(if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        })
    })
}

impl Plan {
    fn of(request: &Value, behaviour: &Behaviour) -> Result<Plan, String> {
        let declarations: Vec<&Value> = request["tools"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|tool| tool["functionDeclarations"].as_array())
            .flatten()
            .collect();
        let config = &request["toolConfig"]["functionCallingConfig"];
        let mode = config["mode"].as_str().unwrap_or("AUTO");
        let last = request["contents"].as_array().and_then(|c| c.last());
        let user_turn = last.is_some_and(|c| {
            c["role"].as_str().unwrap_or("user") == "user"
                && !c["parts"].as_array().is_some_and(|parts| {
                    parts
                        .iter()
                        .any(|part| part.get("functionResponse").is_some())
                })
        });
        let call = !declarations.is_empty()
            && match mode {
                "NONE" => false,
                "ANY" => true,
                _ => user_turn,
            };
        if !call {
            let count = behaviour.chunks;
            let limit = request["generationConfig"]["maxOutputTokens"]
                .as_u64()
                .unwrap_or(u64::from(count));
            let (count, finish_reason) = if u64::from(count) > limit {
                (limit as u32, "MAX_TOKENS")
            } else {
                (count, "STOP")
            };
            return Ok(Plan {
                parts: words(count).collect(),
                finish_reason,
            });
        }
        let allowed: Vec<&str> = config["allowedFunctionNames"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let candidates: Vec<&Value> = declarations
            .into_iter()
            .filter(|d| allowed.is_empty() || allowed.iter().any(|name| d["name"] == *name))
            .collect();
        if candidates.is_empty() {
            return Err(format!(
                "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: \
                 {allowed:?} names no declared function\n"
            ));
        }
        let wanted = behaviour.tool_calls.unwrap_or(1).max(1) as usize;
        let calls = candidates.into_iter().take(wanted).map(|d| Part::Call {
            name: d["name"].as_str().unwrap_or("function").to_string(),
            args: args_for(&d["parameters"]),
        });
        let preface = words(behaviour.tool_text.unwrap_or(0));
        Ok(Plan {
            parts: preface.chain(calls).collect(),
            finish_reason: "STOP",
        })
    }
}

/// Arguments that fit the schema's properties in a simple way.
fn args_for(schema: &Value) -> Value {
    let mut args = serde_json::Map::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let value = match property["type"].as_str().map(str::to_ascii_lowercase) {
                _ if property["enum"].is_array() => property["enum"][0].clone(),
                Some(t) if t == "integer" => json!(1),
                Some(t) if t == "number" => json!(1.5),
                Some(t) if t == "boolean" => json!(true),
                Some(t) if t == "array" => json!([]),
                Some(t) if t == "object" => json!({}),
                _ => json!(format!("mock {name}")),
            };
            args.insert(name.clone(), value);
        }
    }
    Value::Object(args)
}

/// One answer: the plan (none when the prompt is blocked) and its names.
struct Generated {
    model: String,
    response_id: String,
    prompt_tokens: u64,
    candidates: u64,
    plan: Option<Plan>,
}

impl Generated {
    fn usage(&self, output_tokens: u64) -> Value {
        let mut usage = json!({
            "promptTokenCount": self.prompt_tokens,
            "totalTokenCount": self.prompt_tokens + output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        });
        if output_tokens > 0 {
            usage["candidatesTokenCount"] = output_tokens.into();
        }
        usage
    }

    fn shell(&self, candidates: Option<Vec<Value>>, output_tokens: u64) -> Value {
        let mut body = json!({
            "usageMetadata": self.usage(output_tokens),
            "modelVersion": self.model,
            "responseId": self.response_id,
        });
        match candidates {
            Some(candidates) => body["candidates"] = Value::Array(candidates),
            None => {
                body["promptFeedback"] = json!({"blockReason": "SAFETY", "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"},
                ]})
            }
        }
        body
    }

    fn candidates(&self, parts: &[Part], finish_reason: Option<&str>) -> Vec<Value> {
        let parts: Vec<Value> = parts.iter().map(Part::json).collect();
        (0..self.candidates)
            .map(|index| {
                let mut candidate = json!({
                    "content": {"parts": parts, "role": "model"},
                    "index": index,
                });
                if let Some(reason) = finish_reason {
                    candidate["finishReason"] = reason.into();
                }
                candidate
            })
            .collect()
    }

    /// The whole answer of `:generateContent`.
    fn whole(&self) -> Value {
        let Some(plan) = &self.plan else {
            return self.shell(None, 0);
        };
        let mut parts: Vec<Part> = Vec::new();
        for part in &plan.parts {
            // Gemini gives the text whole, in one part.
            match (parts.last_mut(), part) {
                (Some(Part::Word(text)), Part::Word(word)) => text.push_str(word),
                (_, Part::Word(word)) => parts.push(Part::Word(word.clone())),
                (_, Part::Call { name, args }) => parts.push(Part::Call {
                    name: name.clone(),
                    args: args.clone(),
                }),
            }
        }
        let output: u64 = plan.parts.iter().map(Part::tokens).sum();
        let candidates = self.candidates(&parts, Some(plan.finish_reason));
        self.shell(Some(candidates), output * self.candidates)
    }

    /// The chunks of `:streamGenerateContent`: one a word, the calls in one,
    /// the finish reason on the last.
    fn chunks(&self) -> Vec<Value> {
        let Some(plan) = &self.plan else {
            return vec![self.shell(None, 0)];
        };
        let mut groups: Vec<&[Part]> = Vec::new();
        let calls_from = plan
            .parts
            .iter()
            .position(|p| matches!(p, Part::Call { .. }))
            .unwrap_or(plan.parts.len());
        groups.extend(plan.parts[..calls_from].chunks(1));
        if calls_from < plan.parts.len() {
            groups.push(&plan.parts[calls_from..]);
        }
        if groups.is_empty() {
            groups.push(&[]);
        }
        let mut output = 0;
        let last = groups.len() - 1;
        groups
            .iter()
            .enumerate()
            .map(|(i, parts)| {
                output += parts.iter().map(Part::tokens).sum::<u64>();
                let finish = (i == last).then_some(plan.finish_reason);
                let candidates = self.candidates(parts, finish);
                self.shell(Some(candidates), output * self.candidates)
            })
            .collect()
    }
}

/// Where an answer goes.
struct Answer<'a, S> {
    stream: &'a mut S,
    out: &'a mut Vec<u8>,
}

impl<S: AsyncWriteRent> Answer<'_, S> {
    async fn error(&mut self, status: StatusCode, message: &str) -> Next {
        let body = serde_json::to_vec(&error_body(status, message)).unwrap_or_default();
        json_response(self.out, status, &body, &[], Reply::KEEP_ALIVE);
        send(self.stream, self.out).await
    }

    async fn json(&mut self, body: &Value, behaviour: &Behaviour) -> Next {
        let body = serde_json::to_vec(body).unwrap_or_default();
        let fields = behaviour.fields();
        json_response(self.out, StatusCode::OK, &body, &fields, Reply::KEEP_ALIVE);
        send(self.stream, self.out).await
    }

    /// The chunks as server-sent events, one a chunk interval.
    async fn events(&mut self, mock: &Mock, chunks: &[Value], behaviour: &Behaviour) -> Next {
        let (stream, out) = (&mut *self.stream, &mut *self.out);
        let stats = &mock.stats;
        stats.streams_started.set(stats.streams_started.get() + 1);
        sse::start(out, behaviour, &[]);
        for (i, chunk) in chunks.iter().enumerate() {
            let sent = i as u32;
            if behaviour.cut_after == Some(sent) {
                let _ = send(stream, out).await;
                return sse::abort(mock);
            }
            if behaviour.stream_error_after == Some(sent) {
                let error = error_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The model is overloaded. Please try again later.",
                );
                data(out, &serde_json::to_vec(&error).unwrap_or_default());
                out.extend_from_slice(b"0\r\n\r\n");
                let _ = send(stream, out).await;
                return sse::abort(mock);
            }
            data(out, &serde_json::to_vec(chunk).unwrap_or_default());
            if matches!(sse::pace(stream, out, behaviour).await, Next::Close) {
                return sse::abort(mock);
            }
        }
        sse::finish(mock, stream, out).await
    }
}

/// Appends `data: <payload>\r\n\r\n`, as Gemini ends its events, as one
/// HTTP chunk.
fn data(out: &mut Vec<u8>, payload: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", payload.len() + 10);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n\r\n\r\n");
}
