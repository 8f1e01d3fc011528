//! Anthropic Messages routes of the mock upstream.
//!
//! - `POST /v1/messages`: needs `anthropic-version` and a key, in
//!   `x-api-key` or as `Authorization: Bearer` (the official SDK sends its
//!   `api_key` so), equal to `--api-key` when the mock has one; `model`, `max_tokens` and a
//!   non-empty `messages` checked as the real API does. A text answer of the
//!   mock's words, or `tool_use` blocks when the request has `tools` and the
//!   last turn is the user's (not a `tool_result`): the first tool, the first
//!   N with `x-mock-tool-calls: N`, or the one `tool_choice` names; after
//!   a text block of N words with `x-mock-tool-text: N`.
//!   `"stream": true` gives the real event sequence (`message_start`,
//!   `content_block_start`, `ping`, `content_block_delta`…,
//!   `content_block_stop`, `message_delta`, `message_stop`);
//!   `x-mock-stream-error-after: N` sends an `error` event after N deltas.
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": N}`.
//!
//! Errors (`x-mock-status` included) have Anthropic's shape,
//! `{"type":"error","error":{"type","message"}}`, and every answer a
//! `request-id`.

use http::StatusCode;
use monoio::io::AsyncWriteRent;
use serde_json::{Value, json};

use super::{Behaviour, Mock, Next, openai, send, sse};
use crate::http::RequestHead;
use crate::http::io::{Reply, json_response};

/// Pieces a tool's JSON input is streamed in.
const INPUT_PIECES: usize = 3;

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
    let answer = Answer {
        request_id: format!("req_mock{n:012}"),
        stream,
        out,
    };
    let key = head.header(buf, "x-api-key").or_else(|| {
        head.header(buf, "authorization")
            .and_then(|value| value.strip_prefix(b"Bearer "))
    });
    let authorized = match (key, &mock.settings.api_key) {
        (Some(key), Some(expected)) => key == expected.as_bytes(),
        (Some(key), None) => !key.is_empty(),
        (None, _) => false,
    };
    if !authorized {
        return answer
            .error(StatusCode::UNAUTHORIZED, "invalid x-api-key")
            .await;
    }
    if head.header(buf, "anthropic-version").is_none() {
        let message = "anthropic-version: header is required";
        return answer.error(StatusCode::BAD_REQUEST, message).await;
    }
    behaviour.wait().await;
    if behaviour.status.is_some() {
        let message = "mock error requested with x-mock-status";
        return answer.error(behaviour.status_code(), message).await;
    }
    let count_tokens = match (&head.method, head.path(buf)) {
        (&http::Method::POST, b"/v1/messages") => false,
        (&http::Method::POST, b"/v1/messages/count_tokens") => true,
        _ => return answer.error(StatusCode::NOT_FOUND, "Not found").await,
    };
    let request: Value = match serde_json::from_slice(body) {
        Ok(request @ Value::Object(_)) => request,
        Ok(_) => {
            return answer
                .invalid("request body: Input should be an object")
                .await;
        }
        Err(error) => return answer.invalid(&format!("invalid JSON body: {error}")).await,
    };
    if let Err(message) = validate(&request, !count_tokens) {
        return answer.invalid(&message).await;
    }
    let input_tokens = (body.len() as u64 / 4).max(1);
    if count_tokens {
        let body = json!({"input_tokens": input_tokens});
        return answer.json(StatusCode::OK, &body, behaviour).await;
    }
    let plan = match Plan::of(&request, behaviour, n) {
        Ok(plan) => plan,
        Err(message) => return answer.invalid(&message).await,
    };
    let message = Message {
        id: format!("msg_mock{n:012}"),
        model: request["model"].as_str().unwrap_or_default(),
        plan,
        input_tokens,
    };
    if request["stream"] == json!(true) {
        return answer.events(mock, &message, behaviour).await;
    }
    answer
        .json(StatusCode::OK, &message.whole(), behaviour)
        .await
}

/// The essentials the real API checks, with its wording.
fn validate(request: &Value, messages_endpoint: bool) -> Result<(), String> {
    if !request["model"].is_string() {
        return Err(field_error(&request["model"], "model", "a valid string"));
    }
    if messages_endpoint && !(request["max_tokens"].is_u64() || request["max_tokens"].is_i64()) {
        return Err(field_error(
            &request["max_tokens"],
            "max_tokens",
            "a valid integer",
        ));
    }
    match &request["messages"] {
        Value::Array(messages) if messages.is_empty() => {
            Err("messages: at least one message is required".into())
        }
        Value::Array(_) => Ok(()),
        other => Err(field_error(other, "messages", "a valid list")),
    }
}

fn field_error(value: &Value, field: &str, expected: &str) -> String {
    if value.is_null() {
        format!("{field}: Field required")
    } else {
        format!("{field}: Input should be {expected}")
    }
}

/// The error `type` Anthropic gives each status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

fn error_body(kind: &str, message: &str) -> Vec<u8> {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// One content block of the answer.
enum Block {
    Text(Vec<&'static str>),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl Block {
    fn whole(&self) -> Value {
        match self {
            Block::Text(words) => json!({"type": "text", "text": words.join(" ")}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        }
    }

    /// As `content_block_start` announces it.
    fn empty(&self) -> Value {
        match self {
            Block::Text(_) => json!({"type": "text", "text": ""}),
            Block::ToolUse { id, name, .. } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": {}})
            }
        }
    }

    /// The deltas that stream it.
    fn deltas(&self) -> Vec<Value> {
        match self {
            Block::Text(words) => words
                .iter()
                .enumerate()
                .map(|(i, word)| {
                    let text = if i == 0 {
                        (*word).to_string()
                    } else {
                        format!(" {word}")
                    };
                    json!({"type": "text_delta", "text": text})
                })
                .collect(),
            Block::ToolUse { input, .. } => super::split(&input.to_string(), INPUT_PIECES)
                .into_iter()
                .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                .collect(),
        }
    }

    fn output_tokens(&self) -> u64 {
        match self {
            Block::Text(words) => words.len() as u64,
            Block::ToolUse { input, .. } => (input.to_string().len() as u64 / 4).max(1),
        }
    }
}

/// What the answer holds and why it stopped.
struct Plan {
    blocks: Vec<Block>,
    stop_reason: &'static str,
}

impl Plan {
    fn of(request: &Value, behaviour: &Behaviour, n: u64) -> Result<Plan, String> {
        let tools = request["tools"].as_array().map_or(&[][..], Vec::as_slice);
        let choice = request["tool_choice"]["type"].as_str().unwrap_or("auto");
        let last = request["messages"].as_array().and_then(|m| m.last());
        let user_turn = last.is_some_and(|m| {
            m["role"] == "user"
                && !m["content"]
                    .as_array()
                    .is_some_and(|blocks| blocks.iter().any(|block| block["type"] == "tool_result"))
        });
        let use_tools = !tools.is_empty()
            && match choice {
                "none" => false,
                "tool" | "any" => true,
                _ => user_turn,
            };
        if !use_tools {
            let words = behaviour.chunks as u64;
            let limit = request["max_tokens"].as_u64().unwrap_or(words);
            let (words, stop_reason) = if words > limit {
                (limit, "max_tokens")
            } else {
                (words, "end_turn")
            };
            let words = (0..words as u32).map(openai::word).collect();
            return Ok(Plan {
                blocks: vec![Block::Text(words)],
                stop_reason,
            });
        }
        let chosen: Vec<&Value> = if choice == "tool" {
            let name = request["tool_choice"]["name"].as_str().unwrap_or_default();
            let tool = tools.iter().find(|tool| tool["name"] == name);
            vec![tool.ok_or_else(|| format!("tool_choice: tool '{name}' not found in tools"))?]
        } else {
            let wanted = behaviour.tool_calls.unwrap_or(1).max(1) as usize;
            tools.iter().take(wanted).collect()
        };
        let preface = behaviour.tool_text.unwrap_or(0);
        let preface = (preface > 0).then(|| Block::Text((0..preface).map(openai::word).collect()));
        let uses = chosen
            .into_iter()
            .enumerate()
            .map(|(i, tool)| Block::ToolUse {
                id: format!("toolu_mock{n:08}{i:04}"),
                name: tool["name"].as_str().unwrap_or("tool").to_string(),
                input: input_for(&tool["input_schema"]),
            });
        let blocks = preface.into_iter().chain(uses).collect();
        Ok(Plan {
            blocks,
            stop_reason: "tool_use",
        })
    }

    fn output_tokens(&self) -> u64 {
        self.blocks.iter().map(Block::output_tokens).sum()
    }
}

/// An input that fits the schema's properties in a simple way.
fn input_for(schema: &Value) -> Value {
    let mut input = serde_json::Map::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let value = match property["type"].as_str() {
                _ if property["enum"].is_array() => property["enum"][0].clone(),
                Some("integer") => json!(1),
                Some("number") => json!(1.5),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                Some("null") => Value::Null,
                _ => json!(format!("mock {name}")),
            };
            input.insert(name.clone(), value);
        }
    }
    Value::Object(input)
}

struct Message<'a> {
    id: String,
    model: &'a str,
    plan: Plan,
    input_tokens: u64,
}

impl Message<'_> {
    fn usage(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        })
    }

    fn shell(&self, content: Vec<Value>, stop_reason: Value, output_tokens: u64) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": self.usage(output_tokens),
        })
    }

    fn whole(&self) -> Value {
        let content = self.plan.blocks.iter().map(Block::whole).collect();
        self.shell(
            content,
            json!(self.plan.stop_reason),
            self.plan.output_tokens(),
        )
    }
}

/// Where an answer goes, with its `request-id`.
struct Answer<'a, S> {
    request_id: String,
    stream: &'a mut S,
    out: &'a mut Vec<u8>,
}

impl<S: AsyncWriteRent> Answer<'_, S> {
    async fn error(self, status: StatusCode, message: &str) -> Next {
        let body = error_body(error_type(status), message);
        let fields = [("request-id", self.request_id.as_bytes())];
        json_response(self.out, status, &body, &fields, Reply::KEEP_ALIVE);
        send(self.stream, self.out).await
    }

    async fn invalid(self, message: &str) -> Next {
        self.error(StatusCode::BAD_REQUEST, message).await
    }

    async fn json(self, status: StatusCode, body: &Value, behaviour: &Behaviour) -> Next {
        let body = serde_json::to_vec(body).unwrap_or_default();
        let mut fields = behaviour.fields();
        fields.push(("request-id", self.request_id.as_bytes()));
        json_response(self.out, status, &body, &fields, Reply::KEEP_ALIVE);
        send(self.stream, self.out).await
    }

    /// The real event sequence, one delta a chunk interval.
    async fn events(self, mock: &Mock, message: &Message<'_>, behaviour: &Behaviour) -> Next {
        let (stream, out) = (self.stream, self.out);
        let stats = &mock.stats;
        stats.streams_started.set(stats.streams_started.get() + 1);
        sse::start(
            out,
            behaviour,
            &[("request-id", self.request_id.as_bytes())],
        );
        let event = |out: &mut Vec<u8>, name: &str, payload: Value| {
            sse::named(out, name, &serde_json::to_vec(&payload).unwrap_or_default());
        };
        let start = message.shell(Vec::new(), Value::Null, 1);
        event(
            out,
            "message_start",
            json!({"type": "message_start", "message": start}),
        );
        let mut sent = 0u32;
        for (index, block) in message.plan.blocks.iter().enumerate() {
            let start = json!({"type": "content_block_start", "index": index, "content_block": block.empty()});
            event(out, "content_block_start", start);
            if index == 0 {
                event(out, "ping", json!({"type": "ping"}));
            }
            for delta in block.deltas() {
                if behaviour.cut_after == Some(sent) {
                    let _ = send(stream, out).await;
                    return sse::abort(mock);
                }
                if behaviour.stream_error_after == Some(sent) {
                    let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
                    event(out, "error", error);
                    out.extend_from_slice(b"0\r\n\r\n");
                    let _ = send(stream, out).await;
                    return sse::abort(mock);
                }
                let delta = json!({"type": "content_block_delta", "index": index, "delta": delta});
                event(out, "content_block_delta", delta);
                sent += 1;
                if matches!(sse::pace(stream, out, behaviour).await, Next::Close) {
                    return sse::abort(mock);
                }
            }
            event(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
        }
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": message.plan.stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": message.plan.output_tokens()},
        });
        event(out, "message_delta", delta);
        event(out, "message_stop", json!({"type": "message_stop"}));
        sse::finish(mock, stream, out).await
    }
}
