//! Sign-in for the CLI (`llm-proxy login`), served by the workers under
//! `/sso/`: the start/poll flow, the built-in password page, the OpenID
//! Connect redirect and callback, and the key's own logout and whoami.
//! Cold path: store calls and calls to the identity provider run on the
//! blocking pool, never on the worker thread. See docs/login.md.
//!
//! - `device`: the JSON endpoints the machine being signed in calls (the
//!   CLI: start, poll, then with its key whoami and logout).
//! - `browser`: the pages its user signs in and approves on (sign-in form,
//!   callback, approval).
//! - `pages`: their HTML; `oidc`: the provider.

mod browser;
mod device;
pub mod oidc;
mod pages;

use std::rc::Rc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;

use crate::api::{Answer, Errors, Local, Outcome, audit, blocking, not_allowed};
use crate::downstream::ClientConn;
use crate::error::{ErrorStyle, ProxyError};
use crate::http::RequestHead;
use crate::store::crypto::{fill_random, hex, sha256};
use crate::store::{Login, StoreError, now_ms};
use crate::worker::Worker;
use crate::worker::keys::CachedKey;

/// The cookie that ties a login's pages to the browser that opened it.
const COOKIE: &str = "llm_proxy_login";
/// Largest form or JSON body accepted here.
const MAX_BODY: usize = 16 << 10;
/// Wrong passwords that end a login.
const MAX_WRONG_PASSWORDS: u32 = 5;

/// Whether `path` is answered here.
pub fn owns(path: &[u8]) -> bool {
    path.starts_with(b"/sso/")
}

/// One request, with what the handlers need copied out of the head.
struct Request {
    method: Method,
    path: String,
    query: String,
    body: Vec<u8>,
    host: Option<String>,
    user_agent: String,
    /// The `llm_proxy_login` cookie's value.
    cookie: Option<String>,
    poll_secret: Option<String>,
    /// The client's IP address (no port), and with the port for the audit log.
    remote_ip: String,
    remote: String,
    request_id: String,
}

/// Whether errors on a path are rendered as a page or as JSON.
fn is_page(path: &str) -> bool {
    matches!(
        path,
        "/sso/key/generate" | "/sso/login" | "/sso/callback" | "/sso/cli/approve"
    )
}

pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let mut local = Local::new(worker, conn, head);
    local.errors = Errors::Json(ErrorStyle::WithDetail);
    let target = String::from_utf8_lossy(head.target.of(&conn.buf)).into_owned();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (target.clone(), String::new()),
    };
    let text = |name: &str| {
        head.header(&conn.buf, name)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    };
    let host = text("host");
    let user_agent = text("user-agent").unwrap_or_default();
    let cookie = text("cookie").and_then(|c| cookie_value(&c, COOKIE).map(str::to_string));
    let poll_secret = text("x-litellm-cli-poll-secret").filter(|s| !s.is_empty());
    // whoami with the master key: not a virtual key, but it may ask too.
    let master = path == "/sso/cli/whoami"
        && (worker.settings.management_token.as_deref())
            .is_some_and(|token| crate::worker::auth::presents_bearer(head, &conn.buf, token));
    let key = (!master && matches!(path.as_str(), "/sso/cli/whoami" | "/sso/cli/logout"))
        .then(|| crate::worker::auth::authenticate(worker, head, &conn.buf));
    let peer = conn.stream.peer_addr().ok();
    let timeout = worker.settings.limits.body_timeout;
    let body = match conn.read_body(head, MAX_BODY, timeout).await {
        Ok(body) => body,
        Err(ProxyError::ClientGone) => return false,
        Err(error) => {
            // Not counted, and written whole even for HEAD.
            local.close = true;
            local.head_only = false;
            return local.send(conn, Err(error)).await;
        }
    };
    if is_page(&path) {
        local.errors = Errors::Page(pages::error);
    }
    let request = Request {
        method: head.method.clone(),
        path,
        query,
        body,
        host,
        user_agent,
        cookie,
        poll_secret,
        remote_ip: peer.map_or_else(|| "unknown".into(), |a| a.ip().to_string()),
        remote: peer.map_or_else(|| "unknown".into(), |a| a.to_string()),
        request_id: local.request_id.clone(),
    };
    // The time counted starts once the body is in.
    local.received = std::time::Instant::now();
    let outcome = match master {
        true if request.method == Method::GET || request.method == Method::HEAD => {
            Ok(device::whoami_master())
        }
        _ => dispatch(worker, &request, key).await,
    };
    if let Err(error) = &outcome
        && error.status().is_server_error()
    {
        tracing::warn!(request_id = request.request_id, %error, "sign-in request failed");
    }
    local.respond(worker, conn, outcome).await
}

/// The sign-in function that answers the request's method and path.
/// `key`: the presented key, resolved for whoami and logout only.
async fn dispatch(
    worker: &Worker,
    request: &Request,
    key: Option<Result<Rc<CachedKey>, ProxyError>>,
) -> Outcome {
    let login = &worker.settings.login;
    let path = request.path.as_str();
    let method = &request.method;
    // Not HEAD: these GETs change state (a poll hands out the key once).
    let is_get = *method == Method::GET;
    // The key's own calls work whether or not sign-in is on.
    match path {
        "/sso/cli/whoami" if is_get || *method == Method::HEAD => {
            let key = key.unwrap_or(Err(ProxyError::MissingKey))?;
            return device::whoami(worker, key).await;
        }
        "/sso/cli/whoami" => return not_allowed(method, "GET, HEAD"),
        "/sso/cli/logout" if *method == Method::POST => {
            let key = key.unwrap_or(Err(ProxyError::MissingKey))?;
            return device::logout(worker, request, key).await;
        }
        "/sso/cli/logout" => return not_allowed(method, "POST"),
        _ => {}
    }
    if !login.enabled {
        return Err(ProxyError::LoginDisabled);
    }
    if let Some(id) = path.strip_prefix("/sso/cli/poll/") {
        return match is_get {
            true => device::poll(worker, request, &percent_decoded(id)).await,
            false => not_allowed(method, "GET"),
        };
    }
    match (path, is_get) {
        ("/sso/cli/start", _) if *method == Method::POST => device::start(worker, request).await,
        ("/sso/cli/start", _) => not_allowed(method, "POST"),
        ("/sso/key/generate", true) => browser::open(worker, request).await,
        ("/sso/key/generate", false) => not_allowed(method, "GET"),
        ("/sso/login", _) if *method == Method::POST => browser::sign_in(worker, request).await,
        ("/sso/login", _) => not_allowed(method, "POST"),
        ("/sso/callback", true) => browser::callback(worker, request).await,
        ("/sso/callback", false) => not_allowed(method, "GET"),
        ("/sso/cli/approve", _) if *method == Method::POST => {
            browser::approve(worker, request).await
        }
        ("/sso/cli/approve", _) => not_allowed(method, "POST"),
        _ => Err(ProxyError::NotFound),
    }
}

/// The login `id`, if it exists and its flow is served.
async fn load(worker: &Worker, id: &str) -> Result<Login, ProxyError> {
    let id = id.to_string();
    let login = blocking(worker.store.clone(), move |s| Ok(s.get_login(&id)?))
        .await?
        .ok_or(ProxyError::LoginNotFound)?;
    if login.legacy && !worker.settings.login.legacy_flow {
        return Err(ProxyError::LoginNotFound);
    }
    Ok(login)
}

fn check_fresh(login: &Login) -> Result<(), ProxyError> {
    match login.is_expired(now_ms()) {
        true => Err(ProxyError::LoginExpired),
        false => Ok(()),
    }
}

/// The proxy as browsers reach it.
fn base_url(worker: &Worker, request: &Request) -> Result<String, ProxyError> {
    if let Some(url) = &worker.settings.login.public_url {
        return Ok(url.clone());
    }
    let host = request
        .host
        .as_deref()
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .ok_or_else(|| ProxyError::BadRequest("a valid Host header is needed".into()))?;
    Ok(format!("http://{host}"))
}

/// `bytes` random bytes, URL-safe base64.
fn random_token(bytes: usize) -> Result<String, StoreError> {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A short code like `WDJB-MJHT`: consonants only, so it spells no word
/// and no two letters look alike.
fn user_code() -> Result<String, StoreError> {
    const LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut code = String::with_capacity(9);
    let mut byte = [0u8; 1];
    while code.len() < 9 {
        if code.len() == 4 {
            code.push('-');
        }
        fill_random(&mut byte)?;
        // 240 = 12 × 20: no letter is likelier than another.
        if byte[0] < 240 {
            code.push(LETTERS[usize::from(byte[0]) % LETTERS.len()] as char);
        }
    }
    Ok(code)
}

/// Stands for a machine that did not name itself (LiteLLM's CLI): its
/// address and `User-Agent`, hashed.
fn anonymous_machine(request: &Request) -> String {
    let seen = format!("{}\n{}", request.remote_ip, request.user_agent);
    format!("addr-{}", &hex(&sha256(seen.as_bytes()))[..16])
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        (n == name && !v.is_empty()).then_some(v)
    })
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Appends a sign-in event to the audit log: `actor` is `user:<id>` or
/// `unauthenticated`; `outcome` one of `login`, `login_refused`,
/// `wrong_password`, `logout`. No secret goes in: no body, no query.
async fn audit(worker: &Worker, request: &Request, actor: &str, status: u16, outcome: &str) {
    let call = audit::Call {
        actor,
        method: request.method.as_str(),
        target: &request.path,
        status,
        outcome,
        body: &[],
        request_id: &request.request_id,
        remote: request.remote.clone(),
    };
    audit::record(worker, call).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_cookies_and_tokens() {
        let code = user_code().unwrap();
        assert_eq!(code.len(), 9, "{code}");
        assert_eq!(&code[4..5], "-");
        assert!(
            code.bytes()
                .all(|b| b == b'-' || b"BCDFGHJKLMNPQRSTVWXZ".contains(&b))
        );
        assert_eq!(
            cookie_value("a=1; llm_proxy_login=xyz; b=2", COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("llm_proxy_login=", COOKIE), None);
        assert_eq!(cookie_value("xllm_proxy_login=1", COOKIE), None);
        assert_eq!(random_token(32).unwrap().len(), 43);
    }
}
