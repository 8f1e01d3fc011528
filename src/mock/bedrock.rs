//! AWS Bedrock Runtime (Converse) routes of the mock upstream.
//!
//! - `POST /model/{model id}/converse`: SigV4-signed requests only. The
//!   signature's form is always checked; with `--aws-access-key-id` the key
//!   id must be that one (else 403 `UnrecognizedClientException`), and with
//!   `--aws-secret-access-key` the signature is recomputed with that secret
//!   (else 403 `InvalidSignatureException`), as Bedrock does. A non-empty
//!   `messages` is required. A text answer of the mock's words (cut to
//!   `inferenceConfig.maxTokens`, `stopReason` `max_tokens`), or `toolUse`
//!   blocks when the request has `toolConfig.tools` and the last turn is
//!   the user's (not a `toolResult`): the first tool, the first N with
//!   `x-mock-tool-calls: N`, or the one `toolChoice.tool` names; after a
//!   text block of N words with `x-mock-tool-text: N`. With `usage` and
//!   `metrics.latencyMs`.
//! - `POST /model/{model id}/converse-stream`: the same answer as AWS
//!   event-stream frames (`messageStart`, `contentBlockStart` for tool uses,
//!   `contentBlockDelta`…, `contentBlockStop`, `messageStop`, `metadata`),
//!   one delta a chunk interval; `x-mock-cut-after: N` drops the connection
//!   after N deltas, `x-mock-stream-error-after: N` sends a
//!   `throttlingException` frame after N deltas.
//!
//! Errors (`x-mock-status` included) have Bedrock's shape, `{"message"}`
//! with the error's name in `x-amzn-ErrorType`, and every answer an
//! `x-amzn-RequestId`.

use std::io::Write;

use http::StatusCode;
use monoio::io::AsyncWriteRent;
use serde_json::{Value, json};

use super::{Behaviour, Mock, Next, openai, send, sse};
use crate::dialect::bedrock::sign::{VerifyError, verify};
use crate::dialect::bedrock::stream::{event_frame, exception_frame};
use crate::http::RequestHead;
use crate::http::io::{Reply, json_response};

/// Pieces a tool's JSON input is streamed in.
const INPUT_PIECES: usize = 3;

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";

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
        request_id: format!("00000000-0000-4000-8000-{n:012}"),
        stream,
        out,
    };
    let target = String::from_utf8_lossy(head.target.of(buf)).into_owned();
    let (path, _) = target.split_once('?').unwrap_or((&target, ""));
    let operation = match (&head.method, path.rsplit_once('/')) {
        (&http::Method::POST, Some((model, operation)))
            if model.len() > "/model/".len() && model.starts_with("/model/") =>
        {
            operation
        }
        _ => return answer.unknown_operation().await,
    };
    let stream_route = match operation {
        "converse" => false,
        "converse-stream" => true,
        _ => return answer.unknown_operation().await,
    };
    if let Err((kind, message)) = authenticate(mock, head, buf, &target, body) {
        return answer.error(StatusCode::FORBIDDEN, kind, &message).await;
    }
    behaviour.wait().await;
    if behaviour.status.is_some() {
        let status = behaviour.status_code();
        let message = "mock error requested with x-mock-status";
        return answer.error(status, error_type(status), message).await;
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(request @ Value::Object(_)) => request,
        _ => {
            let message = "Malformed input request, please reformat your input and try again.";
            return answer.invalid(message).await;
        }
    };
    match &request["messages"] {
        Value::Array(messages) if !messages.is_empty() => {}
        _ => {
            let message = "A conversation must start with a user message. Try again with a conversation that starts with a user message.";
            return answer.invalid(message).await;
        }
    }
    let plan = match Plan::of(&request, behaviour, n) {
        Ok(plan) => plan,
        Err(message) => return answer.invalid(&message).await,
    };
    let input_tokens = (body.len() as u64 / 4).max(1);
    if stream_route {
        return answer.events(mock, &plan, input_tokens, behaviour).await;
    }
    let content: Vec<Value> = plan.blocks.iter().map(Block::whole).collect();
    let output_tokens = plan.output_tokens();
    let whole = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": plan.stop_reason,
        "usage": usage(input_tokens, output_tokens),
        "metrics": {"latencyMs": behaviour.latency.as_millis() as u64 + 1},
    });
    answer.json(&whole, behaviour).await
}

/// Checks the request's SigV4 signature: the error's name and message
/// when it does not hold.
fn authenticate(
    mock: &Mock,
    head: &RequestHead,
    buf: &[u8],
    target: &str,
    body: &[u8],
) -> Result<(), (&'static str, String)> {
    let header = |name: &str| {
        head.header(buf, name)
            .and_then(|value| std::str::from_utf8(value).ok())
    };
    let Some(authorization) = header("authorization") else {
        return Err((
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
        ));
    };
    let settings = &mock.settings;
    let key_id = settings.aws_access_key_id.as_deref();
    let secret = settings.aws_secret_access_key.as_deref();
    match verify(authorization, header, target, body, key_id, secret) {
        Ok(()) => Ok(()),
        Err(VerifyError::Malformed(message)) => Err(("IncompleteSignatureException", message)),
        Err(VerifyError::UnknownKey) => Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        )),
        Err(VerifyError::Mismatch) => Err(("InvalidSignatureException", SIGNATURE_MISMATCH.into())),
    }
}

/// The error name Bedrock gives each status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        s if s >= 500 => "InternalServerException",
        _ => "ValidationException",
    }
}

fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": input_tokens + output_tokens,
    })
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
            Block::Text(words) => json!({"text": words.join(" ")}),
            Block::ToolUse { id, name, input } => {
                json!({"toolUse": {"toolUseId": id, "name": name, "input": input}})
            }
        }
    }

    /// The `delta`s that stream it.
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
                    json!({ "text": text })
                })
                .collect(),
            Block::ToolUse { input, .. } => super::split(&input.to_string(), INPUT_PIECES)
                .into_iter()
                .map(|piece| json!({"toolUse": {"input": piece}}))
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
        let config = &request["toolConfig"];
        let tools: Vec<&Value> = config["tools"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|tool| tool.get("toolSpec"))
            .collect();
        let choice = &config["toolChoice"];
        let last = request["messages"].as_array().and_then(|m| m.last());
        let user_turn = last.is_some_and(|m| {
            m["role"] == "user"
                && !m["content"].as_array().is_some_and(|blocks| {
                    blocks.iter().any(|block| block.get("toolResult").is_some())
                })
        });
        let forced = choice.get("any").is_some() || choice.get("tool").is_some();
        if tools.is_empty() || !(forced || user_turn) {
            let words = behaviour.chunks as u64;
            let limit = request["inferenceConfig"]["maxTokens"]
                .as_u64()
                .unwrap_or(words);
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
        let chosen: Vec<&Value> = if let Some(name) = choice["tool"]["name"].as_str() {
            let tool = tools.iter().find(|tool| tool["name"] == name);
            vec![*tool.ok_or_else(|| {
                format!("The tool {name} named in toolChoice is not in toolConfig.tools.")
            })?]
        } else {
            let wanted = behaviour.tool_calls.unwrap_or(1).max(1) as usize;
            tools.into_iter().take(wanted).collect()
        };
        let preface = behaviour.tool_text.unwrap_or(0);
        let preface = (preface > 0).then(|| Block::Text((0..preface).map(openai::word).collect()));
        let uses = chosen
            .into_iter()
            .enumerate()
            .map(|(i, tool)| Block::ToolUse {
                id: format!("tooluse_mock{n:08}{i:04}"),
                name: tool["name"].as_str().unwrap_or("tool").to_string(),
                input: input_for(&tool["inputSchema"]["json"]),
            });
        Ok(Plan {
            blocks: preface.into_iter().chain(uses).collect(),
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

/// Appends one frame as one HTTP chunk.
fn chunk(out: &mut Vec<u8>, frame: &[u8]) {
    let _ = write!(out, "{:x}\r\n", frame.len());
    out.extend_from_slice(frame);
    out.extend_from_slice(b"\r\n");
}

fn event(out: &mut Vec<u8>, kind: &str, payload: &Value) {
    let payload = serde_json::to_vec(payload).unwrap_or_default();
    chunk(out, &event_frame(kind, &payload));
}

/// Where an answer goes, with its `x-amzn-RequestId`.
struct Answer<'a, S> {
    request_id: String,
    stream: &'a mut S,
    out: &'a mut Vec<u8>,
}

impl<S: AsyncWriteRent> Answer<'_, S> {
    async fn error(self, status: StatusCode, kind: &str, message: &str) -> Next {
        let body = serde_json::to_vec(&json!({ "message": message })).unwrap_or_default();
        let error_type = format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/");
        let fields = [
            ("x-amzn-RequestId", self.request_id.as_bytes()),
            ("x-amzn-ErrorType", error_type.as_bytes()),
        ];
        json_response(self.out, status, &body, &fields, Reply::KEEP_ALIVE);
        send(self.stream, self.out).await
    }

    async fn invalid(self, message: &str) -> Next {
        self.error(StatusCode::BAD_REQUEST, "ValidationException", message)
            .await
    }

    async fn unknown_operation(self) -> Next {
        self.error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "Unknown operation",
        )
        .await
    }

    async fn json(self, body: &Value, behaviour: &Behaviour) -> Next {
        let body = serde_json::to_vec(body).unwrap_or_default();
        let mut fields = behaviour.fields();
        fields.push(("x-amzn-RequestId", self.request_id.as_bytes()));
        json_response(self.out, StatusCode::OK, &body, &fields, Reply::KEEP_ALIVE);
        send(self.stream, self.out).await
    }

    /// The real frame sequence, one delta a chunk interval.
    async fn events(
        self,
        mock: &Mock,
        plan: &Plan,
        input_tokens: u64,
        behaviour: &Behaviour,
    ) -> Next {
        let (stream, out) = (self.stream, self.out);
        let stats = &mock.stats;
        stats.streams_started.set(stats.streams_started.get() + 1);
        out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\n",
        );
        for (name, value) in behaviour
            .fields()
            .into_iter()
            .chain([("x-amzn-RequestId", self.request_id.as_bytes())])
        {
            crate::http::io::header(out, name, value);
        }
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        event(out, "messageStart", &json!({"role": "assistant"}));
        let mut sent = 0u32;
        for (index, block) in plan.blocks.iter().enumerate() {
            if let Block::ToolUse { id, name, .. } = block {
                let start = json!({
                    "contentBlockIndex": index,
                    "start": {"toolUse": {"toolUseId": id, "name": name}},
                });
                event(out, "contentBlockStart", &start);
            }
            for delta in block.deltas() {
                if behaviour.cut_after == Some(sent) {
                    let _ = send(stream, out).await;
                    return sse::abort(mock);
                }
                if behaviour.stream_error_after == Some(sent) {
                    let payload =
                        json!({"message": "Too many requests, please wait before trying again."});
                    let payload = serde_json::to_vec(&payload).unwrap_or_default();
                    chunk(out, &exception_frame("throttlingException", &payload));
                    out.extend_from_slice(b"0\r\n\r\n");
                    let _ = send(stream, out).await;
                    return sse::abort(mock);
                }
                let delta = json!({"contentBlockIndex": index, "delta": delta});
                event(out, "contentBlockDelta", &delta);
                sent += 1;
                if matches!(sse::pace(stream, out, behaviour).await, Next::Close) {
                    return sse::abort(mock);
                }
            }
            event(
                out,
                "contentBlockStop",
                &json!({ "contentBlockIndex": index }),
            );
        }
        event(
            out,
            "messageStop",
            &json!({ "stopReason": plan.stop_reason }),
        );
        let metadata = json!({
            "usage": usage(input_tokens, plan.output_tokens()),
            "metrics": {"latencyMs": behaviour.latency.as_millis() as u64 + 1},
        });
        event(out, "metadata", &metadata);
        sse::finish(mock, stream, out).await
    }
}
