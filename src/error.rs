//! The one table that turns every request-path failure into a status, an
//! OpenAI error `type` and a machine-readable `code`, and its rendering as the
//! OpenAI error envelope `{"error":{"message","type","param","code"}}`.

use std::io;

use http::StatusCode;

use crate::http::head::HeadError;
use crate::http::io::{Reply, json_response};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("missing API key: send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>')")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key has been revoked")]
    KeyRevoked,
    #[error("this API key has expired")]
    KeyExpired,
    #[error("this API key has reached its maximum number of requests")]
    QuotaExhausted,
    #[error("the project of this API key is not active")]
    ProjectInactive,
    #[error("this API key has no project: it reaches registered models only (see /v1/models)")]
    KeyWithoutProject,
    #[error("internal error: {0}")]
    Internal(String),
    /// The store cannot write for want of room: says which (disk or map).
    #[error("{0}")]
    StoreFull(String),
    /// Shared mode: PostgreSQL cannot be reached, so nothing can be written.
    #[error("{0}")]
    SharedStoreUnavailable(String),
    #[error("missing or invalid management token: send 'Authorization: Bearer <MANAGEMENT_TOKEN>'")]
    ManagementUnauthorized,
    #[error("the management API is disabled: set MANAGEMENT_TOKEN on the server")]
    ManagementDisabled,
    #[error("missing or invalid metrics token: send 'Authorization: Bearer <METRICS_TOKEN>'")]
    MetricsUnauthorized,
    #[error("{0} not found")]
    ResourceNotFound(&'static str),
    /// Something named in the request does not exist; says what.
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidBody(String),
    /// A field of a JSON body is wrong; `field` is its path.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// Refused by a key's (or its user's) `models` allowlist; says why.
    #[error("{0}")]
    ModelAccessDenied(String),
    /// A budget (the key's, its user's, its team's or the key's on one
    /// model) is spent; `resets_in`: seconds to the end of its window, for
    /// a budget that has one.
    #[error("budget exceeded: {message}")]
    BudgetExceeded {
        message: String,
        resets_in: Option<u64>,
    },
    /// A rate limit is reached; says which and whose.
    #[error("{message}")]
    RateLimited {
        limit: RateLimit,
        message: String,
        /// Seconds after which trying again may succeed.
        retry_after: u64,
        /// The limit reached (requests or tokens per minute, requests in
        /// parallel); `x-ratelimit-limit-*` of the answer.
        value: u64,
    },
    /// The key's team is blocked.
    #[error("this API key's team {0:?} is blocked")]
    TeamBlocked(String),
    #[error("model {0:?} is not available on this gateway")]
    ModelNotFound(String),
    #[error("no such route")]
    NotFound,
    #[error("endpoint {0} is not allowed")]
    EndpointNotAllowed(String),
    /// A model's deployment is at a provider without this endpoint.
    #[error("model {model:?} is served by {provider}, which has no {endpoint} endpoint")]
    EndpointNotServed {
        model: String,
        provider: &'static str,
        endpoint: String,
    },
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: http::Method, allow: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("request header fields are larger than {0} bytes")]
    HeaderTooLarge(usize),
    #[error("too many request header fields")]
    TooManyHeaders,
    #[error("request body is larger than the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("the client took too long to send the request")]
    ClientTimeout,
    /// The worker holds as many request bodies as its budget allows.
    #[error("the server is holding as many request bodies as it can; retry shortly")]
    ServerBusy,
    #[error("transfer codings other than 'chunked' are not supported")]
    UnsupportedTransferEncoding,
    #[error("could not connect to the upstream: {0}")]
    UpstreamConnect(io::Error),
    #[error("TLS handshake with the upstream failed: {0}")]
    UpstreamTls(String),
    #[error("timed out connecting to the upstream")]
    UpstreamConnectTimeout,
    #[error("timed out waiting for the upstream's response")]
    UpstreamTimeout,
    #[error("the upstream closed the connection before responding")]
    UpstreamClosed,
    #[error("the upstream sent an invalid response: {0}")]
    UpstreamProtocol(String),
    /// A stream the upstream ended with an error event (passed on to the
    /// client as one), or cut short.
    #[error("the upstream's stream ended with an error")]
    UpstreamStreamFailed,
    #[error("upstream I/O error: {0}")]
    UpstreamIo(io::Error),
    #[error("sign-in from the CLI is not enabled on this gateway (EXPERIMENTAL_UI_LOGIN)")]
    LoginDisabled,
    #[error("no such login: start again with `llm-proxy login`")]
    LoginNotFound,
    #[error("this login has expired or was already used: start again with `llm-proxy login`")]
    LoginExpired,
    #[error("this login's poll needs its poll secret in x-litellm-cli-poll-secret")]
    PollSecretRequired,
    /// The provider or the proxy refused the sign-in; says why.
    #[error("the sign-in was refused: {0}")]
    LoginRefused(String),
    #[error("wrong email or password")]
    WrongPassword,
    #[error(
        "this page belongs to a sign-in started in another browser (or its cookie is gone): open the link from your terminal in this browser"
    )]
    LoginBrowserMismatch,
    #[error("the form is out of date: open the link from your terminal again")]
    LoginFormInvalid,
    #[error(
        "the code in the link is not this login's code: open the link from your terminal again"
    )]
    UserCodeMismatch,
    #[error("the identity provider failed: {0}")]
    IdentityProvider(String),
    #[error("this key was not issued by a sign-in: only such keys can log out")]
    NotALoginKey,
    /// The caller's role (or its scope: its own keys, its team's) does not
    /// allow the management call; says which role and which route.
    #[error("{0}")]
    RoleForbidden(String),
    /// The client went away; nothing can be sent back.
    #[error("client closed the connection")]
    ClientGone,
    /// The client stopped reading the response for longer than allowed.
    #[error("client stopped reading the response")]
    ClientStalled,
}

/// Whose failure an error is (`ProxyError::side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Gateway,
}

/// Whether an upstream's answer with this status is one that another
/// deployment may do better than: a 429 or a 5xx.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || status >= 500
}

impl ProxyError {
    /// Status, OpenAI error type and error code, in one place.
    pub fn table(&self) -> (StatusCode, &'static str, &'static str) {
        use ProxyError::*;
        match self {
            MissingKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "missing_api_key",
            ),
            InvalidKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            KeyRevoked => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "key_revoked",
            ),
            KeyExpired => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "key_expired",
            ),
            QuotaExhausted => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "max_requests_exceeded",
            ),
            ProjectInactive => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "project_inactive",
            ),
            KeyWithoutProject => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "key_without_project",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
            StoreFull(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "server_error",
                "insufficient_storage",
            ),
            SharedStoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "shared_store_unavailable",
            ),
            ManagementUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_management_token",
            ),
            MetricsUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_metrics_token",
            ),
            ManagementDisabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "management_disabled",
            ),
            ResourceNotFound(_) | Missing(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
            }
            Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            InvalidBody(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_body",
            ),
            InvalidField { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_body",
            ),
            ModelAccessDenied(_) => (
                StatusCode::UNAUTHORIZED,
                "key_model_access_denied",
                "key_model_access_denied",
            ),
            BudgetExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "budget_exceeded",
                "budget_exceeded",
            ),
            RateLimited { limit, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                limit.code(),
            ),
            TeamBlocked(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "team_blocked",
            ),
            ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            NotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            EndpointNotServed { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "endpoint_not_supported",
            ),
            EndpointNotAllowed(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "endpoint_not_allowed",
            ),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
            ),
            BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "bad_request",
            ),
            HeaderTooLarge(_) | TooManyHeaders => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request_error",
                "header_too_large",
            ),
            BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            ClientTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
            ),
            ServerBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "server_busy",
            ),
            UnsupportedTransferEncoding => (
                StatusCode::NOT_IMPLEMENTED,
                "invalid_request_error",
                "unsupported_transfer_encoding",
            ),
            UpstreamConnect(_) | UpstreamTls(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_unavailable",
            ),
            UpstreamConnectTimeout | UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            UpstreamClosed | UpstreamProtocol(_) | UpstreamIo(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "bad_upstream_response",
            ),
            UpstreamStreamFailed => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_stream_failed",
            ),
            LoginDisabled => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "login_disabled",
            ),
            LoginNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "login_not_found",
            ),
            LoginExpired => (StatusCode::GONE, "invalid_request_error", "login_expired"),
            PollSecretRequired => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "poll_secret_required",
            ),
            LoginRefused(_) => (StatusCode::FORBIDDEN, "permission_error", "login_refused"),
            WrongPassword => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "wrong_password",
            ),
            LoginBrowserMismatch => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "login_browser_mismatch",
            ),
            LoginFormInvalid => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "invalid_form_token",
            ),
            UserCodeMismatch => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "user_code_mismatch",
            ),
            IdentityProvider(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "identity_provider_error",
            ),
            NotALoginKey => (StatusCode::FORBIDDEN, "permission_error", "not_a_login_key"),
            RoleForbidden(_) => (StatusCode::FORBIDDEN, "permission_error", "role_forbidden"),
            // Never rendered: there is nobody to send it to. 499 as nginx logs it.
            ClientGone => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "client_error",
                "client_closed_request",
            ),
            ClientStalled => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "client_error",
                "client_stalled",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.table().0
    }

    /// Whose failure this is: the client's (what it sent, or it went away),
    /// the upstream's (it could not be reached or did not answer properly),
    /// or the gateway's own refusal or fault.
    pub fn side(&self) -> Side {
        use ProxyError::*;
        match self {
            UpstreamConnect(_)
            | UpstreamTls(_)
            | UpstreamConnectTimeout
            | UpstreamTimeout
            | UpstreamClosed
            | UpstreamProtocol(_)
            | UpstreamStreamFailed
            | UpstreamIo(_) => Side::Upstream,
            ClientGone | ClientStalled | ClientTimeout => Side::Client,
            _ if self.status().is_client_error() => Side::Client,
            _ => Side::Gateway,
        }
    }

    /// Whether another deployment may do better: the upstream failed before
    /// it answered. (An answer that came is judged by `retryable_status`.)
    pub fn retryable(&self) -> bool {
        self.side() == Side::Upstream
    }

    /// The client went away or stopped reading: nothing more can be sent to
    /// it, not even this error.
    /// Seconds after which the same request may succeed, for a limit
    /// that frees up with time.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::RateLimited { retry_after, .. } => Some(*retry_after),
            ProxyError::BudgetExceeded { resets_in, .. } => *resets_in,
            _ => None,
        }
    }

    pub fn client_lost(&self) -> bool {
        matches!(self, ProxyError::ClientGone | ProxyError::ClientStalled)
    }

    /// Errors after which the client connection cannot be trusted for reuse.
    pub fn must_close(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::HeaderTooLarge(_)
                | ProxyError::TooManyHeaders
                | ProxyError::BodyTooLarge(_)
                | ProxyError::ClientTimeout
                | ProxyError::UnsupportedTransferEncoding
                | ProxyError::ClientGone
                | ProxyError::ClientStalled
        )
    }

    /// The JSON field a validation error is about.
    fn param(&self) -> Option<&str> {
        match self {
            ProxyError::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Serializes the full HTTP response for this error into `out`,
    /// replacing whatever was there.
    pub fn render(&self, out: &mut Vec<u8>, request_id: &str, reply: Reply) {
        self.render_as(ErrorStyle::OpenAi, out, request_id, reply);
    }

    /// `render` in the given style of envelope.
    pub fn render_as(&self, style: ErrorStyle, out: &mut Vec<u8>, request_id: &str, reply: Reply) {
        out.clear();
        let (status, kind, code) = self.table();
        let mut body = match style {
            ErrorStyle::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": anthropic_type(status), "message": self.to_string()},
            }),
            _ => {
                let (kind, code) = match style {
                    ErrorStyle::LiteLlm => {
                        (litellm_type(status, kind), status.as_u16().to_string())
                    }
                    _ => (kind, code.to_string()),
                };
                serde_json::json!({
                    "error": {
                        "message": self.to_string(),
                        "type": kind,
                        "param": self.param(),
                        "code": code,
                    }
                })
            }
        };
        if style == ErrorStyle::WithDetail {
            body["detail"] = self.to_string().into();
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut extra: Vec<(&str, &[u8])> = Vec::with_capacity(2);
        if !request_id.is_empty() {
            extra.push(("X-Request-ID", request_id.as_bytes()));
        }
        match self {
            ProxyError::MethodNotAllowed { allow, .. } => extra.push(("Allow", allow.as_bytes())),
            // A held body is given back within moments.
            ProxyError::ServerBusy => extra.push(("Retry-After", b"1")),
            // Spent for good: the OpenAI and Anthropic SDKs would otherwise
            // retry a 429 twice for nothing.
            ProxyError::QuotaExhausted
            | ProxyError::BudgetExceeded {
                resets_in: None, ..
            } => extra.push(("x-should-retry", b"false")),
            _ => {}
        }
        let seconds;
        if let Some(after) = self.retry_after() {
            seconds = after.to_string();
            extra.push(("Retry-After", seconds.as_bytes()));
        }
        // A refused key's answer says which per-minute limit, and that
        // nothing is left of it.
        let value;
        if let ProxyError::RateLimited {
            limit: limit @ (RateLimit::Requests | RateLimit::Tokens),
            value: n,
            ..
        } = self
        {
            value = n.to_string();
            let (limit_field, remaining_field) = match limit {
                RateLimit::Requests => (
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                ),
                _ => ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"),
            };
            extra.push((limit_field, value.as_bytes()));
            extra.push((remaining_field, b"0"));
        }
        json_response(out, status, &body, &extra, reply);
    }
}

/// The rate limits a request may hit, each with its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Requests,
    Tokens,
    Parallel,
    /// Every deployment of the model is at its own `rpm`/`tpm`.
    Deployments,
}

impl RateLimit {
    pub fn code(self) -> &'static str {
        match self {
            RateLimit::Requests => "rpm_limit_exceeded",
            RateLimit::Tokens => "tpm_limit_exceeded",
            RateLimit::Parallel => "parallel_request_limit_exceeded",
            RateLimit::Deployments => "deployments_at_limit",
        }
    }
}

/// The two envelopes errors are rendered in. Both are
/// `{"error":{"message","type","param","code"}}`; they differ in `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `code` names the error (`invalid_api_key`): the proxy and `/manage`.
    OpenAi,
    /// `code` is the status as a string and `type` one of LiteLLM's error
    /// types: the LiteLLM-compatible management API, whose clients expect it.
    LiteLlm,
    /// `OpenAi` plus a top-level `detail` with the message: the sign-in
    /// endpoints, as LiteLLM's CLI prints `detail`.
    WithDetail,
    /// Anthropic's `{"type":"error","error":{"type","message"}}`, its
    /// types by status: for Anthropic clients (`/v1/messages`).
    Anthropic,
}

fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn litellm_type(status: StatusCode, kind: &'static str) -> &'static str {
    match (status.as_u16(), kind) {
        (_, "key_model_access_denied" | "budget_exceeded") => kind,
        (401 | 403, _) => "auth_error",
        (404, _) => "not_found_error",
        (400..=499, _) => "bad_request_error",
        _ => "internal_server_error",
    }
}

impl From<StoreError> for ProxyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ProxyError::ResourceNotFound(what),
            StoreError::NoSuch(..) => ProxyError::Missing(error.to_string()),
            StoreError::NameTaken(_) => ProxyError::Conflict(error.to_string()),
            StoreError::Taken(field, value) => ProxyError::InvalidField {
                field: field.to_string(),
                message: format!("{value:?} is already taken"),
            },
            StoreError::Invalid(message) => ProxyError::InvalidBody(message),
            StoreError::SharedUnavailable(message) => ProxyError::SharedStoreUnavailable(format!(
                "{message}: nothing was written; requests to the models are still served"
            )),
            full if full.is_full() => ProxyError::StoreFull(full.to_string()),
            other => ProxyError::Internal(format!("store: {other}")),
        }
    }
}

impl From<HeadError> for ProxyError {
    fn from(error: HeadError) -> Self {
        match error {
            HeadError::UnsupportedTransferEncoding => ProxyError::UnsupportedTransferEncoding,
            HeadError::TooManyHeaders => ProxyError::TooManyHeaders,
            HeadError::Malformed(what) => {
                ProxyError::BadRequest(format!("malformed request: {what}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whose_failure_and_whether_to_try_elsewhere() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        for upstream in [
            ProxyError::UpstreamConnect(io()),
            ProxyError::UpstreamTls("handshake".into()),
            ProxyError::UpstreamConnectTimeout,
            ProxyError::UpstreamTimeout,
            ProxyError::UpstreamClosed,
            ProxyError::UpstreamProtocol("bad head".into()),
            ProxyError::UpstreamIo(io()),
        ] {
            assert_eq!(upstream.side(), Side::Upstream, "{upstream}");
            assert!(
                upstream.retryable() && !upstream.client_lost(),
                "{upstream}"
            );
        }
        for client in [
            ProxyError::ClientGone,
            ProxyError::ClientStalled,
            ProxyError::ClientTimeout,
            ProxyError::InvalidKey,
            ProxyError::BodyTooLarge(1),
            ProxyError::BudgetExceeded {
                message: "spent".into(),
                resets_in: None,
            },
        ] {
            assert_eq!(client.side(), Side::Client, "{client}");
            assert!(!client.retryable(), "{client}");
        }
        assert!(ProxyError::ClientGone.client_lost() && ProxyError::ClientStalled.client_lost());
        assert!(!ProxyError::ClientTimeout.client_lost());
        for gateway in [
            ProxyError::Internal("bug".into()),
            ProxyError::ServerBusy,
            ProxyError::from(StoreError::NoSpace),
        ] {
            assert_eq!(gateway.side(), Side::Gateway, "{gateway}");
            assert!(!gateway.retryable(), "{gateway}");
        }
        assert!(retryable_status(429) && retryable_status(500) && retryable_status(503));
        assert!(!retryable_status(200) && !retryable_status(400) && !retryable_status(404));
    }

    #[test]
    fn a_full_store_is_507_with_its_cause() {
        let error = ProxyError::from(StoreError::NoSpace);
        let (status, kind, code) = error.table();
        assert_eq!(
            (status.as_u16(), kind, code),
            (507, "server_error", "insufficient_storage")
        );
        assert!(error.to_string().starts_with("no space left on device"));
    }

    #[test]
    fn renders_openai_envelope() {
        let mut out = Vec::new();
        ProxyError::MethodNotAllowed {
            method: http::Method::PUT,
            allow: "GET, POST".into(),
        }
        .render(&mut out, "req-1", Reply::KEEP_ALIVE);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Allow: GET, POST\r\n"));
        assert!(text.contains("X-Request-ID: req-1\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "method_not_allowed");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert!(json["error"]["param"].is_null());
    }
}
