//! Sample responses for `--debug` and for error messages, with secrets
//! removed before anything is kept.

/// Most body bytes kept per sample.
pub const MAX_SAMPLE_BODY: usize = 4096;
/// Longest server message repeated in an error line.
const MAX_MESSAGE_CHARS: usize = 300;
/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// One response as received (body cut at [`MAX_SAMPLE_BODY`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body was longer than what is kept.
    pub truncated: bool,
}

impl Sample {
    /// A copy with `Authorization`-like fields and every occurrence of
    /// `token` replaced.
    pub fn redacted(mut self, token: Option<&str>) -> Self {
        for (name, value) in &mut self.headers {
            *name = redact(name, token);
            *value = if is_credential_header(name) {
                REDACTED.to_string()
            } else {
                redact(value, token)
            };
        }
        self.reason = redact(&self.reason, token);
        self.body = redact(&self.body, token);
        self
    }

    /// The server's `error.message` (OpenAI envelope), or `message`, or the
    /// start of the body: one line, redacted.
    pub fn error_message(&self, token: Option<&str>) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_str(&self.body).ok();
        let message = parsed.as_ref().and_then(|json| {
            json.pointer("/error/message")
                .or_else(|| json.get("message"))
                .or_else(|| json.get("error").filter(|e| e.is_string()))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
        let message = message.unwrap_or_else(|| {
            if self.body.trim().is_empty() {
                self.reason.clone()
            } else {
                self.body.clone()
            }
        });
        let one_line: String = message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect();
        redact(&one_line, token)
    }
}

pub fn is_credential_header(name: &str) -> bool {
    [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// `text` with every occurrence of `token` replaced.
pub fn redact(text: &str, token: Option<&str>) -> String {
    match token {
        Some(token) if !token.is_empty() => text.replace(token, REDACTED),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: &str) -> Sample {
        Sample {
            status: 401,
            reason: "Unauthorized".into(),
            headers: vec![
                ("Authorization".into(), "Bearer other".into()),
                ("X-Echo".into(), "key sk-secret here".into()),
            ],
            body: body.into(),
            truncated: false,
        }
    }

    #[test]
    fn redacts_credentials_and_the_token_everywhere() {
        let s = sample("bad key sk-secret").redacted(Some("sk-secret"));
        assert_eq!(s.headers[0].1, REDACTED);
        assert_eq!(s.headers[1].1, "key [REDACTED] here");
        assert_eq!(s.body, "bad key [REDACTED]");
    }

    #[test]
    fn error_message_prefers_the_openai_envelope() {
        let s = sample(r#"{"error":{"message":"Invalid\nAPI key sk-secret","type":"x"}}"#);
        assert_eq!(
            s.error_message(Some("sk-secret")),
            "Invalid API key [REDACTED]"
        );
        assert_eq!(sample("").error_message(None), "Unauthorized");
        assert_eq!(sample("plain text").error_message(None), "plain text");
    }
}
