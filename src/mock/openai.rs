//! OpenAI-shaped payloads produced by the mock upstream, and the answers
//! made of them (for `/v1` and Azure's routes).

use http::StatusCode;
use monoio::io::AsyncWriteRent;
use serde::Deserialize;
use serde_json::json;

use super::{Behaviour, EMBEDDING_DIMS, Mock, Next, azure, send, sse};
use crate::http::io::{Reply, json_response, unix_nanos};

const WORDS: &[&str] = &[
    "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "mock",
    "model", "streams", "its", "answer",
];

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

/// As OpenAI does, a stream ends with a usage chunk only when asked.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub content: serde_json::Value,
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    #[serde(default = "default_embedding_model")]
    pub model: String,
    pub input: serde_json::Value,
}

fn default_model() -> String {
    "gpt-4o-mini".into()
}

fn default_embedding_model() -> String {
    "text-embedding-3-small".into()
}

impl ChatRequest {
    pub fn wants_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// A rough token count: four characters a token, at least one.
    pub fn prompt_tokens(&self) -> u64 {
        let chars: usize = self
            .messages
            .iter()
            .map(|m| match &m.content {
                serde_json::Value::String(text) => text.len(),
                other => other.to_string().len(),
            })
            .sum();
        (chars as u64 / 4).max(1)
    }
}

pub fn word(index: u32) -> &'static str {
    WORDS[index as usize % WORDS.len()]
}

pub fn completion(id: &str, created: u64, model: &str, words: u32, prompt_tokens: u64) -> Vec<u8> {
    let content: Vec<&str> = (0..words).map(word).collect();
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content.join(" ")},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(prompt_tokens, words as u64),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// One `chat.completion.chunk` carrying a content delta.
pub fn delta_chunk(id: &str, created: u64, model: &str, index: u32) -> Vec<u8> {
    let text = if index == 0 {
        word(index).to_string()
    } else {
        format!(" {}", word(index))
    };
    let mut delta = json!({"content": text});
    if index == 0 {
        delta["role"] = json!("assistant");
    }
    chunk(
        id,
        created,
        model,
        json!([{"index": 0, "delta": delta, "finish_reason": null}]),
        None,
    )
}

pub fn finish_chunk(id: &str, created: u64, model: &str) -> Vec<u8> {
    chunk(
        id,
        created,
        model,
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        None,
    )
}

pub fn usage_chunk(id: &str, created: u64, model: &str, prompt: u64, completion: u64) -> Vec<u8> {
    chunk(
        id,
        created,
        model,
        json!([]),
        Some(usage(prompt, completion)),
    )
}

fn chunk(
    id: &str,
    created: u64,
    model: &str,
    choices: serde_json::Value,
    usage: Option<serde_json::Value>,
) -> Vec<u8> {
    let mut body = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let Some(usage) = usage {
        body["usage"] = usage;
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

fn usage(prompt: u64, completion: u64) -> serde_json::Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// Deterministic embeddings: one vector of `dims` floats per input.
pub fn embeddings(request: &EmbeddingRequest, dims: usize) -> Vec<u8> {
    let inputs: Vec<String> = match &request.input {
        serde_json::Value::Array(items) => items.iter().map(|i| i.to_string()).collect(),
        other => vec![other.to_string()],
    };
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let seed = text
                .bytes()
                .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            let vector: Vec<f32> = (0..dims)
                .map(|d| ((seed.wrapping_add(d as u32 * 7919) % 2000) as f32 / 1000.0) - 1.0)
                .collect();
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| (t.len() as u64 / 4).max(1)).sum();
    let body = json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

pub fn models(created: u64) -> Vec<u8> {
    let data: Vec<serde_json::Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "mock"}))
        .collect();
    serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default()
}

pub fn error(message: &str, kind: &str, code: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    }))
    .unwrap_or_default()
}

/// The answer `x-mock-status` asks for, in OpenAI's error envelope.
pub(super) async fn mock_status<S: AsyncWriteRent>(
    stream: &mut S,
    out: &mut Vec<u8>,
    behaviour: &Behaviour,
) -> Next {
    let status = behaviour.status_code();
    let body = error(
        "mock error requested with x-mock-status",
        "mock_error",
        &format!("mock_status_{}", status.as_u16()),
    );
    json_response(out, status, &body, &[], Reply::KEEP_ALIVE);
    send(stream, out).await
}

/// The OpenAI-shaped endpoints, for `/v1` and Azure's deployments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

/// Answers an OpenAI-shaped request; `model` (an Azure deployment) replaces
/// the body's model in the answer.
pub(super) async fn answer<S: AsyncWriteRent>(
    mock: &Mock,
    stream: &mut S,
    out: &mut Vec<u8>,
    endpoint: Endpoint,
    body: &[u8],
    behaviour: &Behaviour,
    model: Option<&str>,
) -> Next {
    let created = unix_nanos() / 1_000_000_000;
    let answer = match endpoint {
        Endpoint::Embeddings => {
            let mut request: EmbeddingRequest = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(error) => return bad_json(stream, out, &error).await,
            };
            if let Some(model) = model {
                request.model = model.to_string();
            }
            embeddings(&request, EMBEDDING_DIMS)
        }
        Endpoint::Chat => {
            let mut request: ChatRequest = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(error) => return bad_json(stream, out, &error).await,
            };
            if let Some(model) = model {
                request.model = model.to_string();
            }
            let id = format!("chatcmpl-mock{}", mock.stats.requests.get());
            let (model, prompt) = (request.model.as_str(), request.prompt_tokens());
            if request.stream {
                let mut tail = vec![finish_chunk(&id, created, model)];
                if request.wants_usage() {
                    let words = behaviour.chunks as u64;
                    tail.push(usage_chunk(&id, created, model, prompt, words));
                }
                let delta = |index| delta_chunk(&id, created, model, index);
                return sse::openai(mock, stream, out, behaviour, delta, &tail).await;
            }
            completion(&id, created, model, behaviour.chunks, prompt)
        }
        Endpoint::Completions => {
            return azure::completions(mock, stream, out, body, behaviour, model).await;
        }
    };
    json_response(
        out,
        StatusCode::OK,
        &answer,
        &behaviour.fields(),
        Reply::KEEP_ALIVE,
    );
    send(stream, out).await
}

pub(super) async fn bad_json<S: AsyncWriteRent>(
    stream: &mut S,
    out: &mut Vec<u8>,
    problem: &serde_json::Error,
) -> Next {
    let body = error(
        &format!("invalid JSON body: {problem}"),
        "invalid_request_error",
        "invalid_json",
    );
    json_response(out, StatusCode::BAD_REQUEST, &body, &[], Reply::KEEP_ALIVE);
    send(stream, out).await
}
