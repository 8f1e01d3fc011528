//! The management API's JSON: request bodies (unknown fields refused) and
//! the views of projects and keys (secrets never shown, only hints).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::api::{rfc3339, rfc3339_opt};
use crate::store::{KeyRecord, Project, Usage};

/// Tokens live 24 hours unless the request says otherwise (as in the seed CLI).
pub const DEFAULT_TOKEN_DURATION: Duration = Duration::from_secs(24 * 3600);

pub fn project(project: &Project) -> Value {
    json!({
        "id": project.id,
        "name": project.name,
        "openai_api_key": project.upstream_key_hint,
        "is_active": project.is_active,
        "created_at": rfc3339(project.created_at),
        "updated_at": rfc3339(project.updated_at),
        "deactivated_at": rfc3339_opt(project.deactivated_at),
    })
}

/// A key as listed; `secret` replaces the hint only in the creation response.
pub fn token(key: &KeyRecord, usage: &Usage, secret: Option<&str>) -> Value {
    let metadata: Value = serde_json::from_str(&key.metadata).unwrap_or_else(|_| json!({}));
    json!({
        "id": key.id,
        "token": secret.unwrap_or(&key.hint),
        "project_id": key.project_id,
        "alias": key.alias,
        "expires_at": rfc3339_opt(key.expires_at),
        "is_active": key.is_active,
        "request_count": usage.requests,
        "max_requests": key.max_requests,
        "metadata": metadata,
        "created_at": rfc3339(key.created_at),
        "updated_at": rfc3339(key.updated_at),
        "last_used_at": rfc3339_opt(usage.last_used_at),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
    pub openai_api_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    pub name: Option<String>,
    pub openai_api_key: Option<String>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub project_id: String,
    pub duration_minutes: Option<u64>,
    /// Like "24h" or "90m".
    pub duration: Option<String>,
    /// `null` or 0: unlimited.
    pub max_requests: Option<u64>,
    pub alias: Option<String>,
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Import an existing secret instead of generating one.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateToken {
    pub is_active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub max_requests: Option<Option<u64>>,
    pub duration_minutes: Option<u64>,
    pub duration: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub alias: Option<Option<String>>,
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The lifetime asked for with `duration_minutes` or `duration`, if any.
pub fn requested_duration(
    minutes: Option<u64>,
    text: Option<&str>,
) -> Result<Option<Duration>, String> {
    let duration = match (minutes, text) {
        (Some(_), Some(_)) => {
            return Err("give either duration_minutes or duration, not both".into());
        }
        (Some(minutes), None) => Duration::from_secs(minutes.saturating_mul(60)),
        (None, Some(text)) => humantime::parse_duration(text)
            .map_err(|e| format!("duration: {e} (try \"24h\" or \"90m\")"))?,
        (None, None) => return Ok(None),
    };
    if duration.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(Some(duration))
}

/// Unix milliseconds `duration` from now (saturating: far enough is never).
pub fn expiry_after(duration: Duration) -> i64 {
    SystemTime::now()
        .checked_add(duration)
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(i64::MAX, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            requested_duration(Some(90), None),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(
            requested_duration(None, Some("24h")),
            Ok(Some(Duration::from_secs(86400)))
        );
        assert_eq!(requested_duration(None, None), Ok(None));
        assert!(requested_duration(Some(1), Some("1h")).is_err());
        assert!(requested_duration(Some(0), None).is_err());
        assert!(requested_duration(None, Some("soon")).is_err());
        assert_eq!(expiry_after(Duration::from_secs(u64::MAX)), i64::MAX);
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn null_and_absent_differ() {
        let absent: UpdateToken = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.max_requests, None);
        let null: UpdateToken = serde_json::from_str(r#"{"max_requests":null}"#).unwrap();
        assert_eq!(null.max_requests, Some(None));
        assert!(serde_json::from_str::<UpdateToken>(r#"{"bogus":1}"#).is_err());
    }
}
