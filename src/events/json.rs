//! An event as JSON, made on the writer thread: the same object in the log,
//! in the file sink (plus `seq`) and in HTTP batches. A streamed (SSE)
//! response body is merged into one completion object here, never on a
//! worker.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::RequestEvent;

#[derive(Serialize)]
struct EventJson<'a> {
    request_id: &'a str,
    /// RFC 3339, when the request finished.
    time: String,
    time_unix_ms: u64,
    worker: u16,
    method: &'a str,
    endpoint: std::borrow::Cow<'a, str>,
    status: u16,
    error: Option<&'static str>,
    key_id: Option<String>,
    project_id: Option<String>,
    user_id: Option<&'a str>,
    model: Option<&'a str>,
    latency: Latency,
    usage: Option<UsageJson>,
    cost_usd: f64,
    cache: &'static str,
    response_complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body_truncated: Option<bool>,
}

/// Microseconds. `proxy_us` is the request's time not spent waiting for
/// the upstream: `total_us - upstream_us`.
#[derive(Serialize)]
struct Latency {
    total_us: u64,
    proxy_us: u64,
    /// From sending the request upstream to the end of the response.
    upstream_us: Option<u64>,
    /// From sending the request upstream to its response head.
    upstream_head_us: Option<u64>,
    /// From receiving the request to the first response body bytes sent
    /// (the first token of a stream).
    first_token_us: Option<u64>,
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// The event's JSON bytes (an object: always starts with `{`), given the
/// wall-clock time (unix ns) of its end.
pub fn to_json(event: &RequestEvent, end_ns: u64) -> Vec<u8> {
    let micros = |ns: u64| ns / 1000;
    let start_ns = end_ns.saturating_sub(event.duration_ns);
    let upstream_us = event
        .upstream_ns
        .map(|(sent, _)| micros(end_ns.saturating_sub(sent)));
    let total_us = micros(event.duration_ns);
    let bodies = event.bodies.as_deref();
    let request = bodies.and_then(|b| b.request.as_ref());
    let response = bodies.and_then(|b| b.response.as_ref());
    let path = event.path.as_bytes();
    let json = EventJson {
        request_id: event.request_id.as_str(),
        time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(end_ns))
            .to_string(),
        time_unix_ms: end_ns / 1_000_000,
        worker: event.worker,
        method: event.method.as_str(),
        endpoint: String::from_utf8_lossy(path),
        status: event.status,
        error: event.error,
        key_id: event.key.as_ref().map(|k| k.key_id.to_string()),
        project_id: event
            .key
            .as_ref()
            .and_then(|k| k.project_id.map(|p| p.to_string())),
        user_id: event.key.as_ref().and_then(|k| k.user_id.as_deref()),
        model: event.model.as_deref(),
        latency: Latency {
            total_us,
            proxy_us: total_us.saturating_sub(upstream_us.unwrap_or(0)),
            upstream_us,
            upstream_head_us: event
                .upstream_ns
                .map(|(sent, head)| micros(head.saturating_sub(sent))),
            first_token_us: event
                .first_byte_ns
                .map(|first| micros(first.saturating_sub(start_ns))),
        },
        usage: event.usage.map(|u| UsageJson {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }),
        cost_usd: event.cost.dollars(),
        cache: event.cache.as_str(),
        response_complete: event.response_complete,
        request_body: request.map(|c| body_value(&c.bytes)),
        request_body_truncated: request.map(|c| c.overflowed),
        response_body: response.map(|c| response_value(&c.bytes)),
        response_body_truncated: response.map(|c| c.overflowed),
    };
    // Serializing plain fields and `Value`s cannot fail.
    serde_json::to_vec(&json).unwrap_or_else(|_| b"{}".to_vec())
}

/// A body as JSON when it is JSON, otherwise as a string.
fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A response body; an SSE stream becomes one completion object.
fn response_value(bytes: &[u8]) -> Value {
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"data:") || text.starts_with(b"event:") || text.starts_with(b":") {
        return merge_stream(bytes);
    }
    body_value(bytes)
}

/// Merges the `choices[].delta.content` pieces of a chat (or `text` of a
/// completion) stream into one `chat.completion`-like object.
pub fn merge_stream(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let mut merged = Map::new();
    let mut choices: Vec<(String, Option<Value>, Option<String>)> = Vec::new();
    let mut usage = None;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            continue;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        for field in ["id", "created", "model", "system_fingerprint"] {
            if let Some(value) = chunk.get(field)
                && !merged.contains_key(field)
            {
                merged.insert(field.into(), value.clone());
            }
        }
        if let Some(found) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = Some(found.clone());
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if choices.len() <= index {
                choices.resize_with(index + 1, || (String::new(), None, None));
            }
            let slot = &mut choices[index];
            let piece = choice
                .pointer("/delta/content")
                .or_else(|| choice.get("text"))
                .and_then(Value::as_str);
            if let Some(piece) = piece {
                slot.0.push_str(piece);
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                slot.1 = Some(reason.clone());
            }
            if let Some(role) = choice.pointer("/delta/role").and_then(Value::as_str) {
                slot.2 = Some(role.to_string());
            }
        }
    }
    merged.insert("object".into(), json!("chat.completion"));
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, (content, reason, role))| {
            json!({
                "index": index,
                "message": {"role": role.as_deref().unwrap_or("assistant"), "content": content},
                "finish_reason": reason,
            })
        })
        .collect();
    merged.insert("choices".into(), Value::Array(choices));
    if let Some(usage) = usage {
        merged.insert("usage".into(), usage);
    }
    merged.insert("stream".into(), Value::Bool(true));
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_merged() {
        let body = b"data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let merged = response_value(body);
        assert_eq!(merged["choices"][0]["message"]["content"], "Hello");
        assert_eq!(merged["choices"][0]["finish_reason"], "stop");
        assert_eq!(merged["usage"]["completion_tokens"], 2);
        assert_eq!(merged["id"], "c1");
    }
}
