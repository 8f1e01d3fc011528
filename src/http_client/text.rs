//! Text helpers of the client: server error messages on one line, and
//! percent-encoded paths and queries.

use serde_json::Value;

use super::MAX_MESSAGE_CHARS;

/// The message of an error body: the OpenAI envelope `error.message`, or the
/// other usual shapes (`error` as a string, `detail`, `message`), or the raw
/// text if it is short.
pub fn error_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(json) = serde_json::from_str::<Value>(text) {
        let found = [
            &json["error"]["message"],
            &json["error"],
            &json["detail"],
            &json["message"],
        ]
        .into_iter()
        .find_map(|v| v.as_str().filter(|s| !s.trim().is_empty()));
        if let Some(message) = found {
            return Some(one_line(message, MAX_MESSAGE_CHARS));
        }
    }
    Some(one_line(text, MAX_MESSAGE_CHARS))
}

/// The machine-readable code of an OpenAI error envelope, `error.code`
/// (a string, or a number as text).
pub fn error_code(body: &[u8]) -> Option<String> {
    let json: Value = serde_json::from_slice(body).ok()?;
    match &json["error"]["code"] {
        Value::String(code) => Some(code.clone()),
        Value::Number(code) => Some(code.to_string()),
        _ => None,
    }
}

/// Collapses whitespace (newlines included) and cuts to `max` characters.
pub(super) fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max).collect();
    cut.push('…');
    cut
}

/// Percent-encodes one path segment (or query component): everything but
/// the RFC 3986 unreserved characters.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `path?k=v&…` with every key and value percent-encoded; `path` alone when
/// `pairs` is empty.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&encode(key));
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_segments_and_queries() {
        assert_eq!(encode("sk-AZ09_.~"), "sk-AZ09_.~");
        assert_eq!(encode("a/b c?d"), "a%2Fb%20c%3Fd");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(with_query("/t", &[]), "/t");
        assert_eq!(
            with_query("/t", &[("project_id", "a b"), ("active_only", "true")]),
            "/t?project_id=a%20b&active_only=true"
        );
    }

    #[test]
    fn extracts_error_messages() {
        let envelope = br#"{"error":{"message":"project not found","type":"invalid_request_error","param":null,"code":"not_found"}}"#;
        assert_eq!(error_message(envelope).unwrap(), "project not found");
        assert_eq!(error_message(br#"{"detail":"nope"}"#).unwrap(), "nope");
        assert_eq!(error_message(br#"{"error":"flat"}"#).unwrap(), "flat");
        assert_eq!(error_message(b"Bad\n  Gateway\n").unwrap(), "Bad Gateway");
        assert_eq!(error_message(b"  "), None);
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(long.as_bytes()).unwrap().chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }
}
