//! `/user/new`, `/user/list`, `/user/info`, `/user/update`, `/user/delete`:
//! the people and services that own keys. Deleting a user deletes its keys.
//! A caller with a user reads itself with `/user/info` (no `user_id`); a
//! scoped caller (`internal_user`) reads and updates only itself, and
//! changes only its alias, email and password. The `teams` given make the
//! user a member of exactly those (existing) teams, as `/team/member_add`
//! and `/team/member_delete` would.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::keys::view as key_view;
use super::roles::Grant;
use super::{invalid, lenient_number, limits, null_as_empty, paginate, parse, query_number};
use crate::api::{blocking, hash_password, query_pairs, query_value, rfc3339};
use crate::error::ProxyError;
use crate::manage::Answer;
use crate::manage::views::present;
use crate::store::{
    Budget, Limits, Money, NewKey, NewUser, Payer, Store, User, UserChanges, UserRole,
};

pub fn view(user: &User, spend: Money) -> Value {
    view_with_window(user, spend, None)
}

/// `view`, with the end of the budget's current window.
fn view_with_window(user: &User, spend: Money, reset_at: Option<i64>) -> Value {
    let metadata: Value = serde_json::from_str(&user.metadata).unwrap_or_else(|_| json!({}));
    let mut view = json!({
        "user_id": user.user_id,
        "user_email": user.user_email,
        "user_role": user.user_role.as_str(),
        "user_alias": user.user_alias,
        "teams": user.teams,
        "models": user.models,
        "max_budget": user.max_budget.map(|b| b.dollars),
        "spend": spend.dollars(),
        "metadata": metadata,
        "created_at": rfc3339(user.created_at),
        "updated_at": rfc3339(user.updated_at),
    });
    limits::show(&mut view, &user.limits, reset_at);
    view
}

/// The user's view as the store has it now: spend in the budget's current
/// window, and the window's end.
fn current_view(s: &Store, user: &User) -> Result<Value, crate::store::StoreError> {
    let payer = Payer::User(&user.user_id);
    let spend = s.payer_spend(payer)?;
    let reset_at = s.budget_reset_at(payer, user.limits.budget_duration)?;
    Ok(view_with_window(user, spend, reset_at))
}

fn role(text: &str) -> Result<UserRole, ProxyError> {
    UserRole::parse(text).ok_or_else(|| {
        invalid(
            "user_role",
            format!("must be one of {}", UserRole::NAMES.join(", ")),
        )
    })
}

fn budget(value: &Value) -> Result<Option<Budget>, ProxyError> {
    match lenient_number("max_budget", value)? {
        Some(n) if n < 0.0 => Err(invalid("max_budget", "must not be negative")),
        other => Ok(other.map(Budget::new)),
    }
}

fn email(text: Option<String>) -> Result<Option<String>, ProxyError> {
    match text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        Some(email) if !email.contains('@') || email.len() > 320 => {
            Err(invalid("user_email", "not an email address"))
        }
        other => Ok(other),
    }
}

#[derive(Debug, Deserialize)]
struct CreateInput {
    user_id: Option<String>,
    user_email: Option<String>,
    user_role: Option<String>,
    user_alias: Option<String>,
    teams: Option<Vec<String>>,
    #[serde(default)]
    max_budget: Value,
    models: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    /// As in LiteLLM, a new user gets a key unless this is `false`.
    auto_create_key: Option<bool>,
    /// For the sign-in page; stored as an Argon2id hash, never returned.
    password: Option<String>,
}

/// `POST /user/new`.
pub async fn create(store: Arc<Store>, body: &[u8]) -> Answer {
    let input: CreateInput = parse(body)?;
    let object = limits::object(body)?;
    let new = NewUser {
        limits: limits::limits(&object, Limits::default())?.unwrap_or_default(),
        user_id: input.user_id.filter(|u| !u.trim().is_empty()),
        user_email: email(input.user_email)?,
        user_role: input
            .user_role
            .as_deref()
            .map(role)
            .transpose()?
            .unwrap_or(UserRole::InternalUser),
        user_alias: input.user_alias.filter(|a| !a.is_empty()),
        teams: input.teams.unwrap_or_default(),
        max_budget: budget(&input.max_budget)?,
        models: input.models.unwrap_or_default(),
        metadata: input
            .metadata
            .map(|m| Value::Object(m).to_string())
            .unwrap_or_default(),
        password_hash: match input.password.filter(|p| !p.is_empty()) {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        },
    };
    let with_key = input.auto_create_key.unwrap_or(true);
    blocking(store, move |s| {
        let user = s.create_user(new)?;
        let mut answer = current_view(s, &user)?;
        if with_key {
            let (key, secret) = s.create_key(NewKey {
                user_id: Some(user.user_id.clone()),
                models: user.models.clone(),
                ..NewKey::default()
            })?;
            answer["key"] = json!(secret);
            answer["token"] = key_view(&key, &s.usage_of(key.id)?)["token"].clone();
        }
        Ok((StatusCode::OK, Some(answer)))
    })
    .await
}

/// `GET /user/list?page=&page_size=`.
pub async fn list(store: Arc<Store>, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let page = query_number(&pairs, "page", 1, usize::MAX)?;
    let size = query_number(&pairs, "page_size", 25, 100)?;
    let role_filter = query_value(&pairs, "role").map(role).transpose()?;
    blocking(store, move |s| {
        let users: Vec<(User, Money)> = s
            .list_users()?
            .into_iter()
            .filter(|(u, _)| role_filter.is_none_or(|r| u.user_role == r))
            .collect();
        let (users, total, pages) = paginate(users, page, size);
        let users: Vec<Value> = users.iter().map(|(u, spend)| view(u, *spend)).collect();
        Ok((
            StatusCode::OK,
            Some(json!({
                "users": users,
                "total": total,
                "page": page,
                "page_size": size,
                "total_pages": pages,
            })),
        ))
    })
    .await
}

/// `GET /user/info?user_id=`: the user, its keys and its teams; without
/// `user_id`, the caller's own user (as LiteLLM answers).
pub async fn info(store: Arc<Store>, grant: Grant, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let user_id = match query_value(&pairs, "user_id") {
        Some("") => None,
        Some(user_id) => Some(user_id.to_string()),
        None => grant.user_id.clone(),
    }
    .ok_or_else(|| invalid("user_id", "required"))?;
    grant.check_user(&user_id)?;
    blocking(store, move |s| {
        let (user, spend) = s.get_user(&user_id).map_err(|_| missing(&user_id))?;
        let keys: Vec<Value> = s
            .list_keys(None, false)?
            .iter()
            .filter(|(k, _)| k.user_id.as_deref() == Some(user_id.as_str()))
            .map(|(k, u)| key_view(k, u))
            .collect();
        Ok((
            StatusCode::OK,
            Some(json!({
                "user_id": user.user_id,
                "user_info": view(&user, spend),
                "keys": keys,
                "teams": user.teams,
            })),
        ))
    })
    .await
}

fn missing(user_id: &str) -> ProxyError {
    ProxyError::Missing(format!("no user {user_id:?}"))
}

#[derive(Debug, Deserialize)]
struct UpdateInput {
    user_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    user_email: Option<Option<String>>,
    user_role: Option<String>,
    #[serde(default, deserialize_with = "present")]
    user_alias: Option<Option<String>>,
    teams: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    max_budget: Option<Option<Value>>,
    models: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    /// `null` or `""` clears it.
    #[serde(default, deserialize_with = "present")]
    password: Option<Option<String>>,
}

/// What a scoped caller may change of its own user.
const OWN_FIELDS: [&str; 4] = ["user_id", "user_alias", "user_email", "password"];

/// `POST /user/update {"user_id", ...}`; a scoped caller updates itself
/// (no `user_id`: itself too), and only `OWN_FIELDS`.
pub async fn update(store: Arc<Store>, grant: Grant, body: &[u8]) -> Answer {
    let input: UpdateInput = parse(body)?;
    let object = limits::object(body)?;
    let user_id = match input.user_id.filter(|u| !u.is_empty()) {
        None if grant.is_scoped() => grant.user_id.clone(),
        given => given,
    }
    .ok_or_else(|| invalid("user_id", "required"))?;
    if grant.is_scoped() {
        grant.check_user(&user_id)?;
        if let Some(field) = object.keys().find(|f| !OWN_FIELDS.contains(&f.as_str())) {
            return Err(grant.refuse(format_args!(
                "may change only its user_alias, user_email and password, not {field}"
            )));
        }
    }
    let changes = UserChanges {
        user_email: input.user_email.map(email).transpose()?,
        user_role: input.user_role.as_deref().map(role).transpose()?,
        user_alias: input.user_alias,
        teams: input.teams,
        max_budget: input
            .max_budget
            .map(|v| budget(&v.unwrap_or(Value::Null)))
            .transpose()?,
        models: input.models,
        metadata: input.metadata.map(|m| Value::Object(m).to_string()),
        password_hash: match input.password {
            None => None,
            Some(password) => match password.filter(|p| !p.is_empty()) {
                Some(password) => Some(Some(hash_password(password).await?)),
                None => Some(None),
            },
        },
        limits: None,
    };
    blocking(store, move |s| {
        let (user, _) = s.get_user(&user_id).map_err(|_| missing(&user_id))?;
        let changes = UserChanges {
            limits: limits::limits(&object, user.limits)?,
            ..changes
        };
        let user = s.update_user(&user_id, changes)?;
        Ok((StatusCode::OK, Some(current_view(s, &user)?)))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct DeleteInput {
    #[serde(default, deserialize_with = "null_as_empty")]
    user_ids: Vec<String>,
}

/// `POST /user/delete {"user_ids":[...]}`: all or nothing, with their keys.
pub async fn delete(store: Arc<Store>, body: &[u8]) -> Answer {
    let input: DeleteInput = parse(body)?;
    if input.user_ids.is_empty() {
        return Err(invalid("user_ids", "give the users to delete"));
    }
    blocking(store, move |s| {
        for user_id in &input.user_ids {
            s.get_user(user_id).map_err(|_| missing(user_id))?;
        }
        let (deleted, keys) = s.delete_users(&input.user_ids)?;
        Ok((
            StatusCode::OK,
            Some(json!({"deleted_users": deleted, "deleted_keys": keys})),
        ))
    })
    .await
}
