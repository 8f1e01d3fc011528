//! `/credentials`: named provider settings (an API key, a base URL, ...)
//! that model deployments refer to with `litellm_credential_name`. The
//! values are sealed in the store and only ever shown masked.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{invalid, mask, parse};
use crate::api::{blocking, not_allowed};
use crate::error::ProxyError;
use crate::manage::Answer;
use crate::store::{Credential, CredentialChanges, Store};

fn view(s: &Store, credential: &Credential) -> Result<Value, ProxyError> {
    let values: Map<String, Value> =
        serde_json::from_str(&s.credential_values(credential)?).unwrap_or_default();
    let masked: Map<String, Value> = values
        .into_iter()
        .map(|(name, value)| {
            let shown = match value {
                Value::String(text) => mask(&text),
                _ => "****".into(),
            };
            (name, Value::String(shown))
        })
        .collect();
    let info: Value = serde_json::from_str(&credential.info).unwrap_or_else(|_| json!({}));
    Ok(json!({
        "credential_name": credential.name,
        "credential_info": info,
        "credential_values": masked,
    }))
}

/// `GET /credentials`.
pub async fn list(store: Arc<Store>) -> Answer {
    blocking(store, |s| {
        let credentials = s
            .list_credentials()?
            .iter()
            .map(|c| view(s, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((StatusCode::OK, Some(json!({"credentials": credentials}))))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct CreateInput {
    credential_name: Option<String>,
    credential_values: Option<Map<String, Value>>,
    credential_info: Option<Map<String, Value>>,
}

/// `POST /credentials`.
pub async fn create(store: Arc<Store>, body: &[u8]) -> Answer {
    let input: CreateInput = parse(body)?;
    let name = input
        .credential_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid("credential_name", "required"))?;
    let values = input
        .credential_values
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid("credential_values", "required (an object of values)"))?;
    let changes = CredentialChanges {
        name,
        info: Value::Object(input.credential_info.unwrap_or_default()).to_string(),
        values: Value::Object(values).to_string(),
    };
    blocking(store, move |s| {
        let credential = s.create_credential(changes)?;
        let mut answer = view(s, &credential)?;
        answer["success"] = json!(true);
        Ok((StatusCode::OK, Some(answer)))
    })
    .await
}

/// `GET /credentials/by_name/{name}` and `DELETE /credentials/{name}`.
pub async fn by_path(store: Arc<Store>, method: &Method, rest: &str) -> Answer {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    match rest.strip_prefix("by_name/") {
        Some(name) if !name.is_empty() && !name.contains('/') => {
            if *method != Method::GET && *method != Method::HEAD {
                return not_allowed(method, "GET, HEAD");
            }
            let name = decode(name);
            blocking(store, move |s| {
                let credential = s.get_credential(&name).map_err(|_| missing(&name))?;
                Ok((StatusCode::OK, Some(view(s, &credential)?)))
            })
            .await
        }
        Some(_) => Err(ProxyError::NotFound),
        None if rest.is_empty() || rest.contains('/') => Err(ProxyError::NotFound),
        None => {
            if *method != Method::DELETE {
                return not_allowed(method, "DELETE");
            }
            let name = decode(rest);
            blocking(store, move |s| {
                s.get_credential(&name).map_err(|_| missing(&name))?;
                s.delete_credential(&name)?;
                Ok((
                    StatusCode::OK,
                    Some(json!({"success": true, "credential_name": name})),
                ))
            })
            .await
        }
    }
}

fn missing(name: &str) -> ProxyError {
    ProxyError::Missing(format!("no credential named {name:?}"))
}
