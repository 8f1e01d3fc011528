//! A small blocking HTTP client for the cold-path commands that talk to a
//! running server (`manage`, `openai chat` and the LiteLLM-style client
//! commands); the event sinks and the OpenID Connect sign-in take its
//! [`agent`] alone.
//!
//! JSON in, JSON out ([`Client::call`]), or bytes in, bytes out
//! ([`Client::send`]). Every failure becomes a [`ClientError`] whose one-line
//! `Display` says what to do, and whose [`ClientError::exit_code`] follows the
//! CLI convention: 0 ok, 1 general error, 2 server unreachable, 3
//! authentication failed, 4 not found. The bearer token is never part of any
//! message; with [`Client::with_debug`] every exchange is printed on stderr
//! with secrets redacted (see `debug`).

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::http::{self, Method, StatusCode};

/// Time allowed to open the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole exchange, response body included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read; management listings stay far below this.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Longest server error text repeated to the user.
const MAX_MESSAGE_CHARS: usize = 300;

mod debug;
mod text;

use text::one_line;
pub use text::{encode, error_code, error_message, with_query};

/// The end of the message of [`ClientError::Unreachable`], as a rule.
pub const UNREACHABLE_ADVICE: &str = "is `llm-proxy server` running?";

/// Which server API a [`Client`] talks to, and how the user supplies its
/// address and token: used only to word error messages.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// "the management API".
    pub name: &'static str,
    /// The flag that sets the base URL, e.g. `--manage-api-base-url`.
    pub url_flag: &'static str,
    /// What the token is called, e.g. "management token".
    pub token_name: &'static str,
    /// The flag that sets the token, e.g. `--management-token`.
    pub token_flag: &'static str,
    /// The environment variable that sets the token, e.g. `MANAGEMENT_TOKEN`.
    pub token_env: &'static str,
}

/// The `/manage` API of `llm-proxy server`.
pub const MANAGEMENT_API: Service = Service {
    name: "the management API",
    url_flag: "--manage-api-base-url",
    token_name: "management token",
    token_flag: "--management-token",
    token_env: "MANAGEMENT_TOKEN",
};

/// Why a call failed; each variant maps to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection: refused, DNS failure, TLS failure, timeout, reset.
    /// `advice` is what to do about it ([`UNREACHABLE_ADVICE`] unless the
    /// command knows better).
    #[error("cannot reach {service} at {url} ({reason}): {advice}")]
    Unreachable {
        service: &'static str,
        url: String,
        reason: String,
        advice: String,
    },
    /// The server rejected the token (401/403), or no token was given
    /// (`status` is `None`). `message` is the whole user-facing line.
    #[error("{message}")]
    Auth {
        status: Option<u16>,
        message: String,
    },
    /// Any other non-2xx answer; `message` is the server's `error.message`.
    #[error("{service} answered {status}: {message}")]
    Api {
        service: &'static str,
        status: u16,
        message: String,
    },
    /// A 2xx answer that is not the JSON expected, or not HTTP at all.
    #[error("{0}")]
    BadResponse(String),
    /// Bad arguments, found before anything was sent.
    #[error("{0}")]
    Usage(String),
    /// Any other failure, worded whole by the command (e.g. sign-in not
    /// enabled on the server, a login that timed out, a damaged login file).
    #[error("{0}")]
    Failed(String),
    /// The server does not know the model, credential, key or user asked
    /// for (a 404 the caller turned into this with [`ClientError::not_found`]).
    #[error("{message}")]
    NotFound { message: String },
}

impl ClientError {
    /// The process exit code for this error (2 unreachable, 3 auth, 4 not
    /// found, else 1).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => 2,
            ClientError::Auth { .. } => 3,
            ClientError::NotFound { .. } => 4,
            ClientError::Api { .. }
            | ClientError::BadResponse(_)
            | ClientError::Usage(_)
            | ClientError::Failed(_) => 1,
        }
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Auth { status, .. } => *status,
            ClientError::Api { status, .. } => Some(*status),
            ClientError::NotFound { .. } => Some(404),
            _ => None,
        }
    }

    /// A 404 answer becomes [`ClientError::NotFound`] naming `subject`
    /// (e.g. `model "m-1"`); any other error is kept.
    pub fn not_found(self, subject: &str) -> ClientError {
        match self {
            ClientError::Api {
                status: 404,
                message,
                ..
            } => ClientError::NotFound {
                message: format!("{subject} not found (404: {message})"),
            },
            other => other,
        }
    }
}

/// A raw answer of [`Client::send`].
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A blocking JSON client for one server.
pub struct Client {
    service: Service,
    /// Without a trailing slash; paths are appended as given.
    base_url: String,
    /// Sent as `Authorization: Bearer …`; never printed.
    token: Option<String>,
    agent: ureq::Agent,
    /// Print every exchange on stderr (secrets redacted).
    debug: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.service.name)
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client for `base_url` (must start with `http://` or `https://`).
    /// An empty token counts as none.
    pub fn new(
        service: Service,
        base_url: &str,
        token: Option<String>,
    ) -> Result<Client, ClientError> {
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        let valid = ["http://", "https://"].iter().any(|scheme| {
            base_url.len() > scheme.len()
                && base_url
                    .get(..scheme.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        });
        if !valid {
            return Err(ClientError::Usage(format!(
                "{} must be an http:// or https:// URL, got {base_url:?}",
                service.url_flag
            )));
        }
        let token = token.filter(|t| !t.trim().is_empty());
        if let Some(token) = &token
            && http::HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        {
            return Err(ClientError::Usage(format!(
                "the {} contains characters not allowed in an HTTP header",
                service.token_name
            )));
        }
        Ok(Client {
            service,
            base_url,
            token,
            agent: agent(DEFAULT_TIMEOUT),
            debug: false,
        })
    }

    /// Fails with exit code 3 unless a token was given.
    pub fn require_token(self) -> Result<Client, ClientError> {
        if self.token.is_some() {
            return Ok(self);
        }
        Err(ClientError::Auth {
            status: None,
            message: format!(
                "no {}: pass {} or set {}",
                self.service.token_name, self.service.token_flag, self.service.token_env
            ),
        })
    }

    /// Replaces the time allowed for one whole exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.agent = agent(timeout);
        self
    }

    /// Prints every request and response on stderr, secrets redacted.
    pub fn with_debug(mut self, debug: bool) -> Client {
        self.debug = debug;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether requests carry a bearer token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `GET path`; the answer must be JSON.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None)?
            .ok_or_else(|| self.empty(path))
    }

    /// `POST path` with a JSON body; the answer must be JSON.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body))?
            .ok_or_else(|| self.empty(path))
    }

    /// `PATCH path` with a JSON body; the answer must be JSON.
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::PATCH, path, Some(body))?
            .ok_or_else(|| self.empty(path))
    }

    /// `DELETE path`; `None` for an empty answer (204).
    pub fn delete(&self, path: &str) -> Result<Option<Value>, ClientError> {
        self.call(Method::DELETE, path, None)
    }

    /// One exchange: `None` when a 2xx answer has no body.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ClientError> {
        let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
        let body = body.map(|body| {
            headers.push(("Content-Type".into(), "application/json".into()));
            body.to_string().into_bytes()
        });
        let answer = self.exchange(method, path, &headers, body)?;
        self.interpret(answer.status, &answer.body)
    }

    /// One exchange with any body and headers (`headers` replace the
    /// defaults of the same name); a non-2xx answer is an error, as in
    /// [`Client::call`].
    pub fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let answer = self.exchange(method, path, headers, body)?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        Err(self.failure(answer.status, &answer.body))
    }

    /// One JSON exchange whose answer is returned whatever its status, for
    /// callers that tell error codes apart (sign-in); only a transport
    /// failure is an error. `headers` are added to the defaults.
    pub fn fetch(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let mut all = vec![("Accept".to_string(), "application/json".to_string())];
        let body = body.map(|body| {
            all.push(("Content-Type".into(), "application/json".into()));
            body.to_string().into_bytes()
        });
        all.extend(
            headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        self.exchange(method, path, &all, body)
    }

    /// What [`Client::call`] makes of an answer: its JSON if 2xx, else the
    /// error with the server's message.
    pub fn json_of(&self, answer: &Answer) -> Result<Option<Value>, ClientError> {
        self.interpret(answer.status, &answer.body)
    }

    /// Sends a request and reads the whole answer, whatever its status.
    fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base_url);
        let mut all: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
        if let Some(token) = &self.token {
            all.push(("Authorization".into(), format!("Bearer {token}")));
        }
        for (name, value) in headers {
            all.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            all.push((name.clone(), value.clone()));
        }
        if self.debug {
            debug::request(
                method.as_str(),
                &url,
                &all,
                body.as_deref(),
                self.token.as_deref(),
            );
        }
        let mut request = http::Request::builder().method(method).uri(&url);
        for (name, value) in &all {
            request = request.header(name.as_str(), value.as_str());
        }
        let started = Instant::now();
        let sent = match body {
            Some(body) => {
                let request = request.body(body).map_err(|e| self.bad_request(e))?;
                self.agent.run(request)
            }
            None => {
                let request = request.body(()).map_err(|e| self.bad_request(e))?;
                self.agent.run(request)
            }
        };
        let mut response = sent.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_string(), value)
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))?;
        let answer = Answer {
            status,
            headers,
            body,
        };
        if self.debug {
            debug::response(&answer, started.elapsed(), self.token.as_deref());
        }
        Ok(answer)
    }

    fn interpret(&self, status: StatusCode, bytes: &[u8]) -> Result<Option<Value>, ClientError> {
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            return serde_json::from_slice(bytes).map(Some).map_err(|e| {
                ClientError::BadResponse(format!(
                    "{} answered {} with invalid JSON ({e}): is {} the address of `llm-proxy server`?",
                    self.service.name,
                    status.as_u16(),
                    self.base_url
                ))
            });
        }
        Err(self.failure(status, bytes))
    }

    /// The error for a non-2xx answer, with the server's message.
    fn failure(&self, status: StatusCode, bytes: &[u8]) -> ClientError {
        let code = status.as_u16();
        let message = error_message(bytes).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no message")
                .to_string()
        });
        let message = self.redact(&message);
        if code == 401 || code == 403 {
            return ClientError::Auth {
                status: Some(code),
                message: format!(
                    "{} rejected the {} ({code}: {message}): check {} / {}",
                    self.service.name,
                    self.service.token_name,
                    self.service.token_flag,
                    self.service.token_env
                ),
            };
        }
        ClientError::Api {
            service: self.service.name,
            status: code,
            message,
        }
    }

    fn transport_error(&self, error: ureq::Error) -> ClientError {
        let unreachable = |reason: String| ClientError::Unreachable {
            service: self.service.name,
            url: self.base_url.clone(),
            reason,
            advice: UNREACHABLE_ADVICE.into(),
        };
        match error {
            ureq::Error::Io(e) => unreachable(io_reason(&e)),
            ureq::Error::HostNotFound => unreachable("host not found".into()),
            ureq::Error::Timeout(phase) => unreachable(format!("timed out: {phase}")),
            ureq::Error::ConnectionFailed => unreachable("connection failed".into()),
            ureq::Error::Tls(e) => unreachable(format!("TLS: {e}")),
            ureq::Error::Rustls(e) => unreachable(format!("TLS: {e}")),
            ureq::Error::Pem(e) => unreachable(format!("TLS certificates: {e:?}")),
            ureq::Error::TlsRequired => unreachable("TLS required".into()),
            ureq::Error::ConnectProxyFailed(e) => unreachable(format!("HTTP proxy: {e}")),
            ureq::Error::InvalidProxyUrl => {
                ClientError::Usage("invalid HTTP proxy URL in the environment".into())
            }
            ureq::Error::BadUri(e) => ClientError::Usage(format!(
                "invalid URL for {} ({e}): check {}",
                self.service.name, self.service.url_flag
            )),
            ureq::Error::Http(e) => ClientError::Usage(format!(
                "invalid request to {} ({e}): check {}",
                self.service.name, self.service.url_flag
            )),
            ureq::Error::BodyExceedsLimit(limit) => ClientError::BadResponse(format!(
                "{} sent a response larger than {limit} bytes",
                self.service.name
            )),
            other => ClientError::BadResponse(format!(
                "{} at {} did not answer with valid HTTP ({}): is it `llm-proxy server`?",
                self.service.name,
                self.base_url,
                one_line(&other.to_string(), MAX_MESSAGE_CHARS)
            )),
        }
    }

    fn bad_request(&self, error: http::Error) -> ClientError {
        ClientError::Usage(format!(
            "invalid request to {} ({error}): check {}",
            self.service.name, self.service.url_flag
        ))
    }

    fn empty(&self, path: &str) -> ClientError {
        ClientError::BadResponse(format!(
            "{} sent an empty answer to {path} where JSON was expected",
            self.service.name
        ))
    }

    /// Removes the token from text that came from the server.
    fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(token) => text.replace(token.as_str(), "[redacted]"),
            None => text.to_string(),
        }
    }
}

/// A blocking HTTP agent for the cold path: error answers are read as
/// responses, redirects are not followed, and the whole exchange has
/// `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    agent_config(timeout).build().new_agent()
}

/// [`agent`]'s configuration, for callers that add to it (TLS roots).
pub fn agent_config(timeout: Duration) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        // 4xx/5xx bodies carry the error message: read them as responses.
        .http_status_as_error(false)
        // A redirect would carry a token, a code or credentials elsewhere: report it instead.
        .max_redirects(0)
        .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
        .timeout_global(Some(timeout))
        .user_agent(concat!("llm-proxy/", env!("CARGO_PKG_VERSION")))
}

/// Short words for the usual socket failures.
fn io_reason(error: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut | WouldBlock => "timed out".into(),
        UnexpectedEof => "connection closed before a complete answer".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        AddrNotAvailable => "address not available".into(),
        _ => one_line(&error.to_string(), MAX_MESSAGE_CHARS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_base_url_and_token() {
        assert!(Client::new(MANAGEMENT_API, "http://localhost:8080/", None).is_ok());
        assert!(Client::new(MANAGEMENT_API, "HTTPS://example.com", None).is_ok());
        for bad in ["localhost:8080", "http://", "ftp://x", ""] {
            let error = Client::new(MANAGEMENT_API, bad, None).unwrap_err();
            assert_eq!(error.exit_code(), 1, "{bad}");
        }
        let error = Client::new(MANAGEMENT_API, "http://x", Some("a\nb".into())).unwrap_err();
        assert!(!error.to_string().contains("a\nb"));
        let client = Client::new(MANAGEMENT_API, "http://x", Some(String::new())).unwrap();
        let error = client.require_token().unwrap_err();
        assert_eq!(error.exit_code(), 3);
        assert_eq!(
            error.to_string(),
            "no management token: pass --management-token or set MANAGEMENT_TOKEN"
        );
    }

    #[test]
    fn status_mapping() {
        let client = Client::new(MANAGEMENT_API, "http://x", Some("mt-secret".into())).unwrap();
        let ok = client.interpret(StatusCode::OK, b"[1]").unwrap();
        assert_eq!(ok, Some(serde_json::json!([1])));
        assert_eq!(client.interpret(StatusCode::NO_CONTENT, b"").unwrap(), None);
        let bad = client.interpret(StatusCode::OK, b"<html>").unwrap_err();
        assert_eq!(bad.exit_code(), 1);
        for code in [401, 403] {
            let error = client
                .interpret(StatusCode::from_u16(code).unwrap(), b"{}")
                .unwrap_err();
            assert_eq!(error.exit_code(), 3);
            assert!(error.to_string().contains(&code.to_string()));
        }
        let error = client
            .interpret(
                StatusCode::CONFLICT,
                br#"{"error":{"message":"name taken by mt-secret"}}"#,
            )
            .unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert_eq!(error.status(), Some(409));
        assert!(!error.to_string().contains("mt-secret"), "{error}");
        let error = client.interpret(StatusCode::BAD_GATEWAY, b"").unwrap_err();
        assert!(error.to_string().contains("502: Bad Gateway"), "{error}");
    }
}
