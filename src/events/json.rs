//! An event as JSON, made by the dispatcher from the stored form: the same
//! object in the file sink (plus `seq`) and in HTTP batches. A streamed
//! (SSE) response body is merged into one completion object here, never on
//! a worker.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::stored::{self, Stored};
use crate::store::Money;

#[derive(Serialize)]
struct EventJson<'a> {
    request_id: &'a str,
    /// RFC 3339, when the request finished.
    time: String,
    time_unix_ms: u64,
    /// The server that served it (`NODE_ID`); absent in events written
    /// before events named their node.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    worker: u16,
    method: &'a str,
    endpoint: std::borrow::Cow<'a, str>,
    status: u16,
    error: Option<&'a str>,
    key_id: Option<String>,
    project_id: Option<String>,
    user_id: Option<&'a str>,
    model: Option<&'a str>,
    latency: Latency,
    usage: Option<UsageJson>,
    cost_usd: f64,
    cache: &'a str,
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

/// The JSON bytes (an object: always starts with `{`) of a stored event.
pub fn to_json(stored: &Stored<'_>) -> Vec<u8> {
    let micros = |ns: u64| ns / 1000;
    let end_ns = stored.end_unix_ns;
    let start_ns = end_ns.saturating_sub(stored.duration_ns);
    let upstream_us = stored
        .upstream_ns
        .map(|(sent, _)| micros(end_ns.saturating_sub(sent)));
    let total_us = micros(stored.duration_ns);
    let uuid = |bytes: [u8; 16]| uuid::Uuid::from_bytes(bytes).to_string();
    let json = EventJson {
        request_id: stored.request_id,
        time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(end_ns))
            .to_string(),
        time_unix_ms: end_ns / 1_000_000,
        node: stored.node,
        worker: stored.worker,
        method: stored.method,
        endpoint: String::from_utf8_lossy(stored.endpoint.0),
        status: stored.status,
        error: stored.error,
        key_id: stored.key_id.map(uuid),
        project_id: stored.project_id.map(uuid),
        user_id: stored.user_id,
        model: stored.model,
        latency: Latency {
            total_us,
            proxy_us: total_us.saturating_sub(upstream_us.unwrap_or(0)),
            upstream_us,
            upstream_head_us: stored
                .upstream_ns
                .map(|(sent, head)| micros(head.saturating_sub(sent))),
            first_token_us: stored
                .first_byte_ns
                .map(|first| micros(first.saturating_sub(start_ns))),
        },
        usage: stored.usage.map(|(prompt, completion)| UsageJson {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }),
        cost_usd: Money(stored.cost_picodollars).dollars(),
        cache: stored.cache,
        response_complete: stored.response_complete,
        request_body: stored
            .request_body
            .as_ref()
            .map(|(bytes, _)| body_value(bytes.0)),
        request_body_truncated: stored.request_body.as_ref().map(|(_, cut)| *cut),
        response_body: stored
            .response_body
            .as_ref()
            .map(|(bytes, _)| response_value(bytes.0)),
        response_body_truncated: stored.response_body.as_ref().map(|(_, cut)| *cut),
    };
    // Serializing plain fields and `Value`s cannot fail.
    serde_json::to_vec(&json).unwrap_or_else(|_| b"{}".to_vec())
}

/// The JSON of a logged event, gap record or budget alert (its stored
/// bytes); an event of an unknown layout becomes `{"undecodable": true}`.
pub fn logged_to_json(bytes: &[u8]) -> Vec<u8> {
    if let Some(gap) = stored::decode_gap(bytes) {
        return gap_to_json(&gap.record, gap.node);
    }
    if let Some(alert) = stored::decode_alert(bytes) {
        return alert_to_json(&alert.record, alert.node);
    }
    match stored::decode(bytes) {
        Some(stored) => to_json(&stored),
        None => br#"{"undecodable":true}"#.to_vec(),
    }
}

/// A gap record as sinks receive it:
/// `{"node":"edge-7","gap":{"lost_events":N,...}}`, an object with no
/// `request_id`.
pub fn gap_to_json(gap: &stored::Gap, node: Option<&str>) -> Vec<u8> {
    let time = |ns: u64| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
    };
    let fields = json!({
        "lost_events": gap.lost,
        "first_lost_at": time(gap.first_unix_ns),
        "last_lost_at": time(gap.last_unix_ns),
    });
    record_json(node, "gap", fields)
}

/// A budget alert as sinks receive it:
/// `{"node":"edge-7","budget_alert":{"type":"soft_budget_crossed","kind",...}}`,
/// an object with no `request_id`.
pub fn alert_to_json(alert: &stored::BudgetAlert, node: Option<&str>) -> Vec<u8> {
    let time =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(alert.at_unix_ns));
    let fields = json!({
        "type": "soft_budget_crossed",
        "kind": alert.kind,
        "id": alert.id,
        "spend": alert.spend.dollars(),
        "soft_budget": alert.soft_budget.dollars(),
        "time": time.to_string(),
    });
    record_json(node, "budget_alert", fields)
}

/// A record that is not a request event: the node that wrote it (when the
/// record names it) and its fields under `kind`, in that order.
fn record_json(node: Option<&str>, kind: &str, fields: Value) -> Vec<u8> {
    let mut object = Map::new();
    if let Some(node) = node {
        object.insert("node".into(), node.into());
    }
    object.insert(kind.into(), fields);
    serde_json::to_vec(&object).unwrap_or_default()
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
