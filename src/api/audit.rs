//! Recording management and sign-in calls in the audit log
//! (`store::audit`). Secrets never reach the log: body and query values
//! under secret-looking names are replaced, and a key named in the path by
//! its secret or hash is shown as its hint, before the entry is written.

use serde_json::{Map, Value};

use crate::store::{AuditEntry, HIDDEN, is_secret_name, now_ms, safe_target};
use crate::worker::Worker;

/// Longest body kept in an entry.
const MAX_BODY: usize = 16 << 10;

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
