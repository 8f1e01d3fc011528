//! The LiteLLM-compatible management API: models, credentials, keys,
//! users and teams, with the LiteLLM proxy's paths, field names and envelopes, so that
//! LiteLLM's clients work unchanged. Behind the master key
//! (`MANAGEMENT_TOKEN`) or a virtual key whose user's role allows the route
//! (`roles`); the model listings (and `/models/{id}`) accept any virtual
//! key, and show such a caller only the models it may use.
//!
//! Request bodies are lenient as LiteLLM's are: unknown fields are ignored,
//! numbers may come as numeric strings; a field of the wrong type is a 400
//! that names it (`param`).

mod credentials;
mod keys;
pub mod limits;
pub mod models;
pub mod roles;
mod teams;
mod users;

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Answer;
use crate::api::{not_allowed, query_value};
use crate::error::{ErrorStyle, ProxyError};
use crate::worker::Worker;

/// Who is calling.
pub enum Caller {
    /// No key needed (the readiness check).
    Anonymous,
    /// The master key: everything.
    Master,
    /// A virtual key: what its user's role allows (`roles`); on the model
    /// listings, these models (`None`: every model; empty: none, when its
    /// own list, its user's and its team's share none).
    Key {
        key_id: uuid::Uuid,
        user_id: Option<String>,
        models: Option<Vec<String>>,
    },
}

impl Caller {
    /// As the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Master => "master_key".into(),
            Caller::Key { key_id, .. } => format!("key:{key_id}"),
        }
    }
}

/// Whether `path` belongs to this API.
pub fn owns(path: &[u8]) -> bool {
    const EXACT: [&[u8]; 6] = [
        b"/models",
        b"/v1/models",
        b"/v1/model/info",
        b"/model_group/info",
        b"/credentials",
        b"/health/readiness",
    ];
    const PREFIXES: [&[u8]; 7] = [
        b"/model/",
        b"/models/",
        b"/v1/models/",
        b"/credentials/",
        b"/key/",
        b"/user/",
        b"/team/",
    ];
    EXACT.contains(&path) || PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Who is let in before the role check: nobody needs a key for the
/// readiness check; a listing takes any key; the other routes the master
/// key, or a key (whose role `roles::check` then weighs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    AnyKey,
    Management,
}

pub fn access(path: &[u8]) -> Access {
    match path {
        b"/health/readiness" => Access::Public,
        b"/models" | b"/v1/models" | b"/model/info" | b"/v1/model/info" | b"/model_group/info" => {
            Access::AnyKey
        }
        _ if model_id(path).is_some() => Access::AnyKey,
        _ => Access::Management,
    }
}

/// The envelope of this API's errors on `path`: OpenAI's on
/// `/models/{id}`, which OpenAI's clients call (`model_not_found` is the
/// code they know), LiteLLM's everywhere else.
pub fn error_style(path: &[u8]) -> ErrorStyle {
    if model_id(path).is_some() {
        ErrorStyle::OpenAi
    } else {
        ErrorStyle::LiteLlm
    }
}

/// The still percent-encoded `{id}` of `/models/{id}` or `/v1/models/{id}`:
/// the rest of the path, `/` and `:` included (`openai/gpt-4o`,
/// `ft:gpt-4o:org::x`).
fn model_id(path: &[u8]) -> Option<&[u8]> {
    path.strip_prefix(b"/v1/models/")
        .or_else(|| path.strip_prefix(b"/models/"))
}

/// The function of this API that answers `method` on `target`'s path.
pub async fn dispatch(
    worker: &Worker,
    caller: Caller,
    grant: roles::Grant,
    method: &Method,
    target: &str,
    body: &[u8],
) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let store = worker.store.clone();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    if let Some(id) = model_id(path.as_bytes()) {
        if !get {
            return not_allowed(method, "GET, HEAD");
        }
        // No model is named by nothing, and none by bytes that are not text.
        let name = percent_encoding::percent_decode(id).decode_utf8();
        return match name {
            Ok(name) if !name.is_empty() => models::retrieve(store, caller, name.into()).await,
            Ok(_) => Err(ProxyError::NotFound),
            Err(_) => Err(ProxyError::ModelNotFound(
                String::from_utf8_lossy(id).into_owned(),
            )),
        };
    }
    match path.trim_end_matches('/') {
        "/health/readiness" if get => Ok((
            StatusCode::OK,
            Some(serde_json::json!({
                "status": "healthy",
                "db": "connected",
                "version": env!("CARGO_PKG_VERSION"),
                // Where LiteLLM's clients look for the server's version.
                "litellm_version": env!("CARGO_PKG_VERSION"),
            })),
        )),
        "/health/readiness" => not_allowed(method, "GET, HEAD"),
        "/models" | "/v1/models" if get => models::list_names(store, caller).await,
        "/model/info" | "/v1/model/info" if get => models::info(store, caller, query).await,
        "/model_group/info" if get => models::group_info(store, caller, query).await,
        "/model/new" if post => models::create(store, body).await,
        "/model/update" if post => models::update(store, body).await,
        "/model/delete" if post => models::delete(store, body).await,
        "/models" | "/v1/models" | "/model/info" | "/v1/model/info" | "/model_group/info" => {
            not_allowed(method, "GET, HEAD")
        }
        "/model/new" | "/model/update" | "/model/delete" => not_allowed(method, "POST"),
        "/credentials" if get => credentials::list(store).await,
        "/credentials" if post => credentials::create(store, body).await,
        "/credentials" => not_allowed(method, "GET, POST"),
        "/key/generate" if post => keys::generate(store, grant, body).await,
        "/key/info" if get => keys::info(store, grant, query).await,
        "/key/list" if get => keys::list(store, grant, query).await,
        "/key/update" if post => keys::update(store, grant, body).await,
        "/key/block" if post => keys::block(store, grant, body, true).await,
        "/key/unblock" if post => keys::block(store, grant, body, false).await,
        "/key/delete" if post => keys::delete(store, grant, body).await,
        "/key/regenerate" if post => keys::regenerate(store, None, body).await,
        "/key/info" | "/key/list" => not_allowed(method, "GET, HEAD"),
        "/key/generate" | "/key/update" | "/key/block" | "/key/unblock" | "/key/delete"
        | "/key/regenerate" => not_allowed(method, "POST"),
        "/user/new" if post => users::create(store, body).await,
        "/user/list" if get => users::list(store, query).await,
        "/user/info" if get => users::info(store, grant, query).await,
        "/user/update" if post => users::update(store, grant, body).await,
        "/user/delete" if post => users::delete(store, body).await,
        "/user/list" | "/user/info" => not_allowed(method, "GET, HEAD"),
        "/user/new" | "/user/update" | "/user/delete" => not_allowed(method, "POST"),
        "/team/new" if post => teams::create(store, body).await,
        "/team/update" if post => teams::update(store, grant, body).await,
        "/team/delete" if post => teams::delete(store, body).await,
        "/team/info" if get => teams::info(store, query).await,
        "/team/list" if get => teams::list(store, query).await,
        "/team/available" if get => teams::available().await,
        "/team/member_add" if post => teams::member_add(store, body).await,
        "/team/member_delete" if post => teams::member_delete(store, body).await,
        "/team/block" if post => teams::block(store, body, true).await,
        "/team/unblock" if post => teams::block(store, body, false).await,
        "/team/info" | "/team/list" | "/team/available" => not_allowed(method, "GET, HEAD"),
        "/team/new"
        | "/team/update"
        | "/team/delete"
        | "/team/member_add"
        | "/team/member_delete"
        | "/team/block"
        | "/team/unblock" => not_allowed(method, "POST"),
        other => {
            if let Some(rest) = other.strip_prefix("/credentials/") {
                return credentials::by_path(store, method, rest).await;
            }
            // LiteLLM's `/key/{key}/regenerate`.
            match other
                .strip_prefix("/key/")
                .and_then(|rest| rest.strip_suffix("/regenerate"))
            {
                Some(key) if post => keys::regenerate(store, Some(key), body).await,
                Some(_) => not_allowed(method, "POST"),
                None => Err(ProxyError::NotFound),
            }
        }
    }
}

/// Parses a JSON body (unknown fields ignored); a wrong field is named.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProxyError> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    super::deserialize_body(body).map_err(|error| match error {
        super::BodyError::Json(message) => ProxyError::InvalidBody(message),
        super::BodyError::Field { path, message } => ProxyError::InvalidField {
            field: path,
            message,
        },
    })
}

/// A list field that may also come as `null` (LiteLLM's clients send that
/// for a list they were not given): empty.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize;
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

fn invalid(field: &str, message: impl Into<String>) -> ProxyError {
    ProxyError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A positive page number or size from the query.
fn query_number(
    pairs: &[(String, String)],
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ProxyError> {
    match query_value(pairs, name) {
        None | Some("") => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ if max == usize::MAX => Err(invalid(name, "must be a whole number from 1")),
            _ => Err(invalid(name, format!("must be a number from 1 to {max}"))),
        },
    }
}

/// One page of `items` with LiteLLM's counts: `(page items, total, pages)`.
fn paginate<T>(items: Vec<T>, page: usize, size: usize) -> (Vec<T>, usize, usize) {
    let total = items.len();
    let pages = total.div_ceil(size);
    let items = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    (items, total, pages)
}

/// A number given as a JSON number or a numeric string.
fn lenient_number(field: &str, value: &Value) -> Result<Option<f64>, ProxyError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| invalid(field, format!("not a number: {s:?}"))),
        _ => Err(invalid(field, "must be a number")),
    }
}

/// Rewrites numeric strings in the named fields of `object` as numbers
/// (integers stay integers), refusing anything else that is not a number.
fn normalize_numbers(
    object: &mut Map<String, Value>,
    prefix: &str,
    fields: &[&str],
) -> Result<(), ProxyError> {
    for field in fields {
        if let Some(value) = object.get_mut(*field) {
            let name = format!("{prefix}.{field}");
            *value = match lenient_number(&name, value)? {
                None => Value::Null,
                Some(n) if n.fract() == 0.0 && n.abs() < 9e15 => Value::from(n as i64),
                Some(n) => Value::from(n),
            };
        }
    }
    Ok(())
}

/// `sk-a****wxyz`: a secret value recognisable, not usable.
fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_may_be_strings() {
        let mut object = serde_json::json!({"rpm": "100", "cost": "0.5", "tpm": 7, "x": "y"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        normalize_numbers(&mut object, "p", &["rpm", "cost", "tpm"]).unwrap();
        assert_eq!(object["rpm"], 100);
        assert_eq!(object["cost"], 0.5);
        assert_eq!(object["tpm"], 7);
        let error = normalize_numbers(&mut object, "p", &["x"]).unwrap_err();
        assert!(matches!(error, ProxyError::InvalidField { field, .. } if field == "p.x"));
    }

    #[test]
    fn pages() {
        let (items, total, pages) = paginate((1..=25).collect::<Vec<_>>(), 3, 10);
        assert_eq!((items, total, pages), (vec![21, 22, 23, 24, 25], 25, 3));
        assert_eq!(paginate(Vec::<u8>::new(), 1, 10).2, 0);
    }

    #[test]
    fn masks() {
        assert_eq!(mask("sk-abcdefghijkl"), "sk-a****ijkl");
        assert_eq!(mask("short"), "****");
    }
}
