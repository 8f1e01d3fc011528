//! `--debug`: every exchange of a [`Client`](super::Client) on stderr,
//! request lines starting with `> `, response lines with `< `, like
//! `curl -v`, with secrets redacted:
//!
//! - the value of `Authorization` and of any header whose name speaks of a
//!   key, token, secret, password or cookie;
//! - the bearer token of the client, wherever it appears;
//! - JSON values under secret-looking names (`key`, `keys`, `api_key`,
//!   `token`, `password`, `…_key`, `…_keys`, `…_token`, `…_secret`), and every
//!   value under `credential_values`;
//! - query parameters with such names;
//! - anything that looks like an API key (`sk-` and at least four more
//!   characters), in JSON strings and in plain text alike.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::Answer;

pub(super) const REDACTED: &str = "[redacted]";
/// Longest body printed; the rest is counted, not shown.
const MAX_BODY_SHOWN: usize = 16 * 1024;

pub(super) fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    token: Option<&str>,
) {
    let mut out = format!("> {method} {}\n", redact_url(url, token));
    for (name, value) in headers {
        out.push_str(&format!("> {name}: {}\n", header_value(name, value, token)));
    }
    if let Some(body) = body {
        push_body(&mut out, "> ", body, token);
    }
    emit(&out);
}

pub(super) fn response(answer: &Answer, elapsed: Duration, token: Option<&str>) {
    let mut out = format!(
        "< {} {} ({} ms)\n",
        answer.status.as_u16(),
        answer.status.canonical_reason().unwrap_or(""),
        elapsed.as_millis()
    );
    for (name, value) in &answer.headers {
        out.push_str(&format!("< {name}: {}\n", header_value(name, value, token)));
    }
    push_body(&mut out, "< ", &answer.body, token);
    emit(&out);
}

fn emit(text: &str) {
    let mut stderr = std::io::stderr().lock();
    // Debug output is best effort: a closed stderr must not fail the command.
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

fn push_body(out: &mut String, prefix: &str, body: &[u8], token: Option<&str>) {
    if body.is_empty() {
        return;
    }
    let shown = match serde_json::from_slice::<Value>(body) {
        Ok(json) => redact_json(json, token).to_string(),
        Err(_) => redact_text(&String::from_utf8_lossy(body), token),
    };
    let mut cut: String = shown.chars().take(MAX_BODY_SHOWN).collect();
    if cut.len() < shown.len() {
        cut.push_str(&format!("… ({} bytes in all)", body.len()));
    }
    for line in cut.lines() {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
    }
}

fn header_value(name: &str, value: &str, token: Option<&str>) -> String {
    let lower = name.to_ascii_lowercase();
    let secret = [
        "authorization",
        "key",
        "token",
        "secret",
        "password",
        "cookie",
    ]
    .iter()
    .any(|word| lower.contains(word));
    if !secret {
        return redact_text(value, token);
    }
    // Keep the scheme ("Bearer") so that the header's shape can be checked.
    match value.split_once(' ') {
        Some((scheme, _)) if lower.ends_with("authorization") => format!("{scheme} {REDACTED}"),
        _ => REDACTED.to_string(),
    }
}

/// Whether a JSON field or query parameter of this name holds a secret.
pub(super) fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "key" | "keys" | "apikey" | "token" | "tokens" | "secret" | "password" | "authorization"
    ) || ["_key", "_keys", "_token", "_tokens", "_secret", "_password"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

pub(super) fn redact_json(value: Value, token: Option<&str>) -> Value {
    match value {
        Value::String(text) => Value::String(redact_text(&text, token)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| redact_json(item, token))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| {
                    let value = if is_secret_name(&name) || name == "credential_values" {
                        redact_all(value)
                    } else {
                        redact_json(value, token)
                    };
                    (name, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// Every string inside `value` replaced; numbers, booleans and nulls kept.
fn redact_all(value: Value) -> Value {
    match value {
        Value::String(_) => Value::String(REDACTED.into()),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_all).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name, redact_all(value)))
                .collect(),
        ),
        other => other,
    }
}

fn redact_url(url: &str, token: Option<&str>) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return redact_text(url, token);
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
            _ => redact_text(pair, token),
        })
        .collect();
    format!("{}?{}", redact_text(base, token), pairs.join("&"))
}

/// The token, and anything shaped like an API key, replaced.
pub(super) fn redact_text(text: &str, token: Option<&str>) -> String {
    let text = match token {
        Some(token) if !token.is_empty() => text.replace(token, REDACTED),
        _ => text.to_string(),
    };
    redact_api_keys(&text)
}

/// `sk-` at the start of a word followed by at least four key characters.
fn redact_api_keys(text: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sk-") {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let after = &rest[at + 3..];
        let run = after.find(|c| !is_key_char(c)).unwrap_or(after.len());
        out.push_str(&rest[..at]);
        if starts_word && run >= 4 {
            out.push_str(REDACTED);
            rest = &after[run..];
        } else {
            out.push_str("sk-");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_keys_in_text() {
        assert_eq!(redact_api_keys("use sk-abcd1234 now"), "use [redacted] now");
        assert_eq!(redact_api_keys("\"sk-live_X-9\""), "\"[redacted]\"");
        assert_eq!(redact_api_keys("sk-ab…wxyz"), "sk-ab…wxyz");
        assert_eq!(redact_api_keys("task-force"), "task-force");
        assert_eq!(redact_api_keys("risk-free sk-"), "risk-free sk-");
        assert_eq!(
            redact_text("mt-secret and x", Some("mt-secret")),
            "[redacted] and x"
        );
    }

    #[test]
    fn json_fields() {
        let body = json!({
            "key": "anything", "keys": ["a", "b"], "api_key": "x", "master_key": "y",
            "key_alias": "visible", "token": "hash", "max_budget": 10,
            "credential_values": {"api_base": "https://h", "n": 1},
            "nested": [{"text": "has sk-abcdefgh inside", "aws_secret": "z"}],
            "deleted_keys": ["sk-abcdefgh"],
        });
        let out = redact_json(body, None);
        assert_eq!(
            out,
            json!({
                "key": "[redacted]", "keys": ["[redacted]", "[redacted]"],
                "api_key": "[redacted]", "master_key": "[redacted]",
                "key_alias": "visible", "token": "[redacted]", "max_budget": 10,
                "credential_values": {"api_base": "[redacted]", "n": 1},
                "nested": [{"text": "has [redacted] inside", "aws_secret": "[redacted]"}],
                "deleted_keys": ["[redacted]"],
            })
        );
    }

    #[test]
    fn headers_and_urls() {
        assert_eq!(
            header_value("Authorization", "Bearer mt-1", None),
            "Bearer [redacted]"
        );
        assert_eq!(header_value("x-api-key", "abc", None), "[redacted]");
        assert_eq!(
            header_value("Content-Type", "application/json", None),
            "application/json"
        );
        assert_eq!(
            redact_url("http://h/key/info?key=abc&page=2", None),
            "http://h/key/info?key=[redacted]&page=2"
        );
        assert_eq!(
            redact_url("http://h/user/info?user_id=u1", Some("u1")),
            "http://h/user/info?user_id=[redacted]"
        );
    }
}
