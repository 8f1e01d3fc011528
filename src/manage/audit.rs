//! The `/manage/audit` endpoints, which read the audit log that
//! `api::audit` writes.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use super::Answer;
use crate::api::{blocking, rfc3339};
use crate::error::ProxyError;
use crate::store::{AuditEntry, AuditQuery, Store};

/// Entries per page unless `limit` says otherwise, and the most.
const PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

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
