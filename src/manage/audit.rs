//! Recording management calls in the audit log (`store::audit`), and the
//! `/manage/audit` endpoints that read it. Secrets never reach the log:
//! body and query values under secret-looking names are replaced, and a
//! key named in the path by its secret or hash is shown as its hint,
//! before the entry is written.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::views::rfc3339;
use super::{Answer, blocking};
use crate::proxy::error::ProxyError;
use crate::server::worker::Worker;
use crate::store::{AuditEntry, AuditQuery, HIDDEN, Store, is_secret_name, now_ms, safe_target};

/// Longest body kept in an entry.
const MAX_BODY: usize = 16 << 10;
/// Entries per page unless `limit` says otherwise, and the most.
const PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// What is known about a call once it has been answered.
pub struct Call<'a> {
    pub actor: &'a str,
    pub method: &'a str,
    pub target: &'a str,
    pub status: u16,
    pub outcome: &'a str,
    pub body: &'a [u8],
    pub request_id: &'a str,
    pub remote: String,
}

/// Writes the call to the audit log before it is answered. A failure to
/// write is logged, not turned into a failed call.
pub async fn record(worker: &Worker, call: Call<'_>) {
    let entry = AuditEntry {
        id: 0,
        at: now_ms(),
        actor: call.actor.to_string(),
        remote: call.remote,
        method: call.method.to_string(),
        target: safe_target(call.target),
        status: call.status,
        outcome: call.outcome.to_string(),
        body: hide_body_secrets(call.body),
        request_id: call.request_id.to_string(),
    };
    let store = worker.store.clone();
    let keep = worker.settings.audit_max_entries;
    match monoio::spawn_blocking(move || store.append_audit(entry, keep)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::error!(%error, "cannot write the audit log"),
        Err(_) => tracing::error!("audit log write cancelled"),
    }
}

fn hide_value(value: &mut Value) {
    match value {
        Value::Object(map) => hide_object(map),
        Value::Array(items) => items.iter_mut().for_each(hide_value),
        _ => {}
    }
}

fn hide_object(map: &mut Map<String, Value>) {
    for (name, value) in map.iter_mut() {
        if is_secret_name(name) && !value.is_null() {
            *value = Value::String(HIDDEN.into());
        } else {
            hide_value(value);
        }
    }
}

/// The body as JSON with secrets hidden; a body that is not JSON is not
/// kept, only its size.
fn hide_body_secrets(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let mut text = match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            hide_value(&mut value);
            value.to_string()
        }
        Err(_) => format!("({} bytes, not JSON)", body.len()),
    };
    if text.len() > MAX_BODY {
        let mut cut = MAX_BODY;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

pub fn view(entry: &AuditEntry) -> Value {
    let body = if entry.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&entry.body).unwrap_or_else(|_| Value::String(entry.body.clone()))
    };
    json!({
        "id": entry.id,
        "at": rfc3339(entry.at),
        "actor": entry.actor,
        "remote": entry.remote,
        "method": entry.method,
        "target": entry.target,
        "status": entry.status,
        "outcome": entry.outcome,
        "body": body,
        "request_id": entry.request_id,
    })
}

/// `GET /manage/audit`: newest first; `before_id`, `since`, `until`
/// (RFC 3339), `actor`, `method`, `path_prefix`, `status`, `limit`.
pub async fn list(store: Arc<Store>, query: &str) -> Answer {
    let query = audit_query(query)?;
    blocking(store, move |s| {
        let entries = s.list_audit(&query)?;
        let next = (entries.len() == query.limit)
            .then(|| entries.last().map(|e| e.id))
            .flatten();
        let entries: Vec<Value> = entries.iter().map(view).collect();
        Ok((
            StatusCode::OK,
            Some(json!({"entries": entries, "next_before_id": next})),
        ))
    })
    .await
}

/// `GET /manage/audit/{id}`.
pub async fn get(store: Arc<Store>, id: &str) -> Answer {
    let id: u64 = id
        .parse()
        .map_err(|_| ProxyError::ResourceNotFound("audit entry"))?;
    blocking(store, move |s| {
        Ok((StatusCode::OK, Some(view(&s.get_audit(id)?))))
    })
    .await
}

fn audit_query(query: &str) -> Result<AuditQuery, ProxyError> {
    let mut parsed = AuditQuery {
        limit: PAGE,
        ..AuditQuery::default()
    };
    let bad = |name: &str, value: &str, what: &str| {
        ProxyError::InvalidBody(format!("{name}: {what}, got {value:?}"))
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "before_id" => {
                parsed.before_id = Some(
                    value
                        .parse()
                        .map_err(|_| bad("before_id", &value, "not an id"))?,
                )
            }
            "since" | "until" => {
                let at = humantime::parse_rfc3339_weak(&value)
                    .map_err(|_| bad(&name, &value, "not an RFC 3339 time"))?;
                let ms = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                if name == "since" {
                    parsed.since_ms = Some(ms);
                } else {
                    parsed.until_ms = Some(ms);
                }
            }
            "actor" => parsed.actor = Some(value),
            "method" => parsed.method = Some(value),
            "path_prefix" => parsed.path_prefix = Some(value),
            "status" => {
                parsed.status = Some(
                    value
                        .parse()
                        .map_err(|_| bad("status", &value, "not a status"))?,
                )
            }
            "limit" => {
                parsed.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad("limit", &value, "not a number from 1 to 1000"))?
            }
            other => {
                return Err(ProxyError::InvalidBody(format!(
                    "unknown query parameter {other:?} (expected before_id, since, until, actor, method, path_prefix, status, limit)"
                )));
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden() {
        let body = br#"{"name":"p","openai_api_key":"sk-live-1","nested":{"api_key":"sk-2","rpm":3},"credential_values":{"api_key":"sk-3"},"keys":["sk-4"],"token":null}"#;
        let hidden = hide_body_secrets(body);
        for secret in ["sk-live-1", "sk-2", "sk-3", "sk-4"] {
            assert!(!hidden.contains(secret), "{hidden}");
        }
        assert!(
            hidden.contains(r#""rpm":3"#) && hidden.contains(r#""token":null"#),
            "{hidden}"
        );
        assert_eq!(
            safe_target("/key/info?key=sk-5&x=1"),
            "/key/info?key=***&x=1"
        );
        assert_eq!(hide_body_secrets(b"not json"), "(8 bytes, not JSON)");
    }
}
