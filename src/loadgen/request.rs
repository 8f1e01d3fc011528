//! The request every connection sends: serialized once, with only the
//! `X-REQUEST-START` value written per request.

use std::io::Write;

use crate::providers::Target;

/// Header fields the load generator owns: they frame the message or carry
/// its timing, so `--header` may not set them.
pub const RESERVED_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "x-request-start",
];

/// What to send, as the user asked for it.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: http::Method,
    /// Path (and query) appended to the base URL's path.
    pub endpoint: String,
    pub token: Option<String>,
    pub body: Option<Vec<u8>>,
    /// `Cache-Control: public, max-age=<ttl>` when set.
    pub cache_ttl: Option<u64>,
    /// Extra fields; a name given here replaces the default of that name.
    pub headers: Vec<(String, String)>,
}

/// A request serialized up to its `X-REQUEST-START` field.
#[derive(Debug)]
pub struct RequestTemplate {
    pub method: http::Method,
    head: Vec<u8>,
    body: Vec<u8>,
}

impl RequestTemplate {
    pub fn new(spec: &RequestSpec, target: &Target) -> Self {
        let mut head = Vec::with_capacity(512);
        let _ = write!(
            head,
            "{} {}{} HTTP/1.1\r\nHost: {}\r\n",
            spec.method, target.base_path, spec.endpoint, target.authority
        );
        let overridden = |name: &str| {
            spec.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let mut default = |name: &str, value: &str| {
            if !overridden(name) {
                let _ = write!(head, "{name}: {value}\r\n");
            }
        };
        default(
            "User-Agent",
            concat!("llm-proxy-benchmark/", env!("CARGO_PKG_VERSION")),
        );
        default("Accept", "*/*");
        if let Some(token) = &spec.token {
            default("Authorization", &format!("Bearer {token}"));
        }
        if spec.body.is_some() {
            default("Content-Type", "application/json");
        }
        if let Some(ttl) = spec.cache_ttl {
            default("Cache-Control", &format!("public, max-age={ttl}"));
        }
        for (name, value) in &spec.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let body = spec.body.clone().unwrap_or_default();
        let sends_length = !body.is_empty()
            || matches!(
                spec.method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            );
        if sends_length {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        Self {
            method: spec.method.clone(),
            head,
            body,
        }
    }

    /// Writes the whole request into `out` (cleared first).
    pub fn write(&self, out: &mut Vec<u8>, unix_nanos: u64) {
        out.clear();
        out.extend_from_slice(&self.head);
        let _ = write!(out, "X-REQUEST-START: {unix_nanos}\r\n\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The request head as text, for `--debug`; the caller redacts it.
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RequestSpec {
        RequestSpec {
            method: http::Method::POST,
            endpoint: "/chat/completions".into(),
            token: Some("sk-1".into()),
            body: Some(b"{}".to_vec()),
            cache_ttl: Some(60),
            headers: vec![("X-Extra".into(), "1".into())],
        }
    }

    #[test]
    fn serializes_once_with_a_timing_field_per_request() {
        let target = Target::parse("http://localhost:8080/v1").unwrap();
        let template = RequestTemplate::new(&spec(), &target);
        let mut out = Vec::new();
        template.write(&mut out, 42);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8080\r\n"));
        assert!(text.contains("Authorization: Bearer sk-1\r\n"));
        assert!(text.contains("Cache-Control: public, max-age=60\r\n"));
        assert!(text.contains("X-Extra: 1\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\nX-REQUEST-START: 42\r\n\r\n{}"));
    }

    #[test]
    fn extra_headers_replace_defaults() {
        let mut spec = spec();
        spec.headers = vec![("authorization".into(), "Basic x".into())];
        let target = Target::parse("http://h").unwrap();
        let text = RequestTemplate::new(&spec, &target).head_text();
        assert!(!text.contains("Bearer"));
        assert!(text.contains("authorization: Basic x\r\n"));
    }

    #[test]
    fn get_without_body_sends_no_length() {
        let mut spec = spec();
        spec.method = http::Method::GET;
        spec.body = None;
        let target = Target::parse("http://h").unwrap();
        let text = RequestTemplate::new(&spec, &target).head_text();
        assert!(!text.contains("Content-Length"));
        assert!(!text.contains("Content-Type"));
    }
}
