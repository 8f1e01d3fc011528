//! What the local endpoints share (the management API in `manage`, sign-in
//! in `login`, and the server's `/health` and `/metrics`), so that none
//! imports another: (`respond`) the one finisher that counts, writes and
//! sends every local answer; running store calls on the blocking pool, the
//! 405 answer, query-string pairs, RFC 3339 times, the models a key may use,
//! hashing a password off the worker thread, and (`audit`) recording a call
//! in the audit log.

pub mod audit;
mod respond;

pub use respond::{Answer, Errors, Local, Outcome};

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::Method;
use serde_json::Value;

use crate::error::ProxyError;
use crate::store::Store;
use crate::store::password::{self, PasswordError};

/// Runs a store call on the blocking pool (writes fsync).
pub async fn blocking<T, F>(store: Arc<Store>, call: F) -> Result<T, ProxyError>
where
    F: FnOnce(&Store) -> Result<T, ProxyError> + Send + 'static,
    T: Send + 'static,
{
    monoio::spawn_blocking(move || call(&store))
        .await
        .map_err(|_| ProxyError::Internal("the store task was cancelled".into()))?
}

pub fn not_allowed<T>(method: &Method, allow: &str) -> Result<T, ProxyError> {
    Err(ProxyError::MethodNotAllowed {
        method: method.clone(),
        allow: allow.into(),
    })
}

/// A query string (or an `application/x-www-form-urlencoded` body) as
/// name/value pairs.
pub fn query_pairs(query: impl AsRef<[u8]>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_ref())
        .into_owned()
        .collect()
}

pub fn query_value<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The end of year 9999, the last moment RFC 3339 can write.
const MAX_RFC3339_MS: i64 = 253_402_300_799_000;

pub fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, MAX_RFC3339_MS) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

pub fn rfc3339_opt(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(rfc3339(ms)))
}

/// The models a key may use, given its own list, its user's and its
/// team's (empty: no restriction), by the rule the request path applies:
/// `None` when no list restricts it, else the models all allow (possibly
/// none).
pub fn allowed_models(view: &crate::store::KeyView) -> Option<Vec<String>> {
    let allowlist = crate::worker::auth::Allowlist::of(view);
    allowlist.is_restricted().then(|| allowlist.models())
}

/// `store::password::hash_blocking` on the blocking pool.
pub async fn hash_password(password: String) -> Result<String, ProxyError> {
    monoio::spawn_blocking(move || password::hash_blocking(&password))
        .await
        .map_err(|_| ProxyError::Internal("the password task was cancelled".into()))?
        .map_err(|error| match error {
            PasswordError::TooLong => ProxyError::InvalidField {
                field: "password".into(),
                message: error.to_string(),
            },
            PasswordError::Random(error) => error.into(),
            PasswordError::Argon2(message) => ProxyError::Internal(message),
        })
}
