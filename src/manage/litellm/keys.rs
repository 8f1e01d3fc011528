//! `/key/generate`, `/key/info`, `/key/list`, `/key/update`, `/key/block`,
//! `/key/unblock`, `/key/delete`, `/key/regenerate`:
//! virtual keys. These are the same records as `/manage/tokens`; a key is
//! named by its secret, its `token` (the secret's SHA-256 in hex) or its id.
//!
//! A caller with a scoped grant (`roles::Grant`: an `internal_user`, or a
//! team admin) reaches only its own keys and its teams': another key is a
//! 403 that says so (an unknown one stays a 404), and `/key/list` shows only
//! the keys it reaches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::roles::Grant;
use super::{invalid, lenient_number, limits, null_as_empty, paginate, parse, query_number};
use crate::api::{blocking, query_pairs, query_value, rfc3339, rfc3339_opt};
use crate::error::ProxyError;
use crate::manage::views::{present, requested_duration};
use crate::manage::{Answer, expiry_after};
use crate::store::crypto::hex;
use crate::store::{Budget, KeyChanges, KeyRecord, Limits, Money, NewKey, Payer, Store, Usage};

/// A key as LiteLLM shows it (never with its secret).
pub fn view(key: &KeyRecord, usage: &Usage) -> Value {
    view_with_window(key, usage, None)
}

/// `view`, with the end of the budget's current window.
pub fn view_with_window(key: &KeyRecord, usage: &Usage, reset_at: Option<i64>) -> Value {
    let metadata: Value = serde_json::from_str(&key.metadata).unwrap_or_else(|_| json!({}));
    let mut view = json!({
        "token": hex(&key.secret_hash),
        "key_name": key.hint,
        "key_alias": key.alias,
        "id": key.id,
        "project_id": key.project_id,
        "user_id": key.user_id,
        "team_id": key.team_id,
        "models": key.models,
        "aliases": key.model_aliases,
        "expires": rfc3339_opt(key.expires_at),
        "max_budget": key.max_budget.map(|b| b.dollars),
        "spend": usage.spend.dollars(),
        "max_requests": key.max_requests,
        "request_count": usage.requests,
        "metadata": metadata,
        "blocked": !key.is_active,
        "created_at": rfc3339(key.created_at),
        "updated_at": rfc3339(key.updated_at),
        "last_used_at": rfc3339_opt(usage.last_used_at),
    });
    limits::show(&mut view, &key.limits, reset_at);
    limits::show_models(&mut view, &key.model_limits);
    view
}

/// The key's view as the store has it now: spend in the budget's current
/// window, and the window's end.
fn current_view(s: &Store, key: &KeyRecord) -> Result<Value, crate::store::StoreError> {
    let mut usage = s.usage_of(key.id)?;
    let payer = Payer::Key(key.id);
    usage.spend = s.payer_spend(payer)?;
    let reset_at = s.budget_reset_at(payer, key.limits.budget_duration)?;
    Ok(view_with_window(key, &usage, reset_at))
}

#[derive(Debug, Deserialize)]
struct GenerateInput {
    /// A chosen secret instead of a generated one.
    key: Option<String>,
    models: Option<Vec<String>>,
    aliases: Option<BTreeMap<String, String>>,
    duration: Option<String>,
    key_alias: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    /// Pass-through requests of a key with a project use its provider key.
    project_id: Option<String>,
    #[serde(default)]
    max_budget: Value,
    #[serde(default)]
    spend: Value,
    #[serde(default)]
    max_requests: Value,
    metadata: Option<Map<String, Value>>,
}

fn budget(field: &str, value: &Value) -> Result<Option<Budget>, ProxyError> {
    match lenient_number(field, value)? {
        Some(n) if n < 0.0 => Err(invalid(field, "must not be negative")),
        other => Ok(other.map(Budget::new)),
    }
}

fn max_requests(value: &Value) -> Result<Option<u64>, ProxyError> {
    match lenient_number("max_requests", value)? {
        None => Ok(None),
        Some(n) if n >= 0.0 && n.fract() == 0.0 => Ok((n > 0.0).then_some(n as u64)),
        Some(_) => Err(invalid("max_requests", "must be a whole number")),
    }
}

fn expiry(duration: Option<&str>) -> Result<Option<i64>, ProxyError> {
    match duration.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => {
            let duration = requested_duration(None, Some(text)).map_err(|message| {
                let message = message.strip_prefix("duration: ").unwrap_or(&message);
                invalid("duration", message)
            })?;
            Ok(duration.map(expiry_after))
        }
    }
}

fn project(id: Option<&str>) -> Result<Option<Uuid>, ProxyError> {
    id.map(|id| Uuid::parse_str(id).map_err(|_| invalid("project_id", "not a UUID")))
        .transpose()
}

/// `POST /key/generate`: every field optional, `{}` included. A scoped
/// caller makes keys for itself (`user_id` is its own), or, as a team
/// admin, for its team (`team_id`, with no user or itself); never for
/// another user, never with a project, and never above its user's budget
/// and rate limits.
pub async fn generate(store: Arc<Store>, grant: Grant, body: &[u8]) -> Answer {
    let input: GenerateInput = parse(body)?;
    let object = limits::object(body)?;
    let mut new = NewKey {
        limits: limits::limits(&object, Limits::default())?.unwrap_or_default(),
        model_limits: limits::model_limits(&object, &Default::default())?.unwrap_or_default(),
        project_id: project(input.project_id.as_deref())?,
        expires_at: expiry(input.duration.as_deref())?,
        max_requests: max_requests(&input.max_requests)?,
        max_budget: budget("max_budget", &input.max_budget)?,
        spend: budget("spend", &input.spend)?.map_or(Money(0), |b| b.amount),
        alias: input.key_alias.filter(|a| !a.is_empty()),
        user_id: input.user_id.filter(|u| !u.is_empty()),
        team_id: input.team_id.filter(|t| !t.is_empty()),
        models: input.models.unwrap_or_default(),
        model_aliases: input.aliases.unwrap_or_default(),
        metadata: input
            .metadata
            .map(|m| Value::Object(m).to_string())
            .unwrap_or_default(),
        secret: input.key,
    };
    blocking(store, move |s| {
        if grant.is_scoped() {
            scope_new_key(s, &grant, &mut new)?;
        }
        let (key, secret) = s.create_key(new)?;
        let mut answer = current_view(s, &key)?;
        answer["key"] = json!(secret);
        Ok((StatusCode::OK, Some(answer)))
    })
    .await
}

/// Holds a scoped caller's new key to what it may make.
fn scope_new_key(s: &Store, grant: &Grant, new: &mut NewKey) -> Result<(), ProxyError> {
    if new.project_id.is_some() {
        return Err(grant.refuse("may not make a key with a project_id"));
    }
    if let Some(team_id) = &new.team_id
        && !grant.administers(s, team_id)?
    {
        return Err(grant.refuse(format_args!(
            "may only make keys for the teams it administers, not {team_id:?}"
        )));
    }
    // Never a key of another user: it would act with that user's role.
    match &new.user_id {
        Some(user_id) if grant.user_id.as_ref() != Some(user_id) => {
            return Err(grant.refuse(format_args!(
                "may only make keys for itself, not for {user_id:?}"
            )));
        }
        // A team's key may have no user; any other is the caller's own.
        None if new.team_id.is_some() => {}
        _ => {
            new.user_id = grant.user_id.clone();
            grant.check_owner(new.user_id.as_deref())?;
        }
    }
    let limits = new.limits;
    grant.check_limits(s, new.max_budget, limits.rpm_limit, limits.tpm_limit)
}

/// `GET /key/info?key=K`.
pub async fn info(store: Arc<Store>, grant: Grant, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let key = query_value(&pairs, "key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("key", "required"))?
        .to_string();
    blocking(store, move |s| {
        let (record, _) = s.find_key(&key).map_err(|_| not_found(&key))?;
        grant.check_key(s, &record)?;
        Ok((
            StatusCode::OK,
            Some(json!({"key": key, "info": current_view(s, &record)?})),
        ))
    })
    .await
}

/// Names the key without repeating a secret: a long value is cut to its
/// first 8 characters (characters, not bytes: the value may be any text).
fn not_found(key: &str) -> ProxyError {
    if key.chars().count() > 12 {
        let shown: String = key.chars().take(8).collect();
        ProxyError::Missing(format!("no key {shown:?}…"))
    } else {
        ProxyError::Missing(format!("no key {key:?}"))
    }
}

/// `GET /key/list`: for a scoped caller, the keys it reaches.
pub async fn list(store: Arc<Store>, grant: Grant, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let page = query_number(&pairs, "page", 1, usize::MAX)?;
    let size = query_number(&pairs, "size", 10, 100)?;
    let full = query_value(&pairs, "return_full_object").is_some_and(|v| v == "true");
    let filter = |name: &str| query_value(&pairs, name).map(str::to_string);
    let (user_id, team_id, alias, hash) = (
        filter("user_id"),
        filter("team_id"),
        filter("key_alias"),
        filter("key_hash"),
    );
    blocking(store, move |s| {
        let mut teams = HashMap::new();
        let mut reached = Vec::new();
        for (key, usage) in s.list_keys(None, false)? {
            if grant.reaches(s, &key, &mut teams)? {
                reached.push((key, usage));
            }
        }
        let keys: Vec<(KeyRecord, Usage)> = reached
            .into_iter()
            .filter(|(k, _)| {
                user_id
                    .as_ref()
                    .is_none_or(|u| k.user_id.as_ref() == Some(u))
            })
            .filter(|(k, _)| {
                team_id
                    .as_ref()
                    .is_none_or(|t| k.team_id.as_ref() == Some(t))
            })
            .filter(|(k, _)| alias.as_ref().is_none_or(|a| k.alias.as_ref() == Some(a)))
            .filter(|(k, _)| hash.as_ref().is_none_or(|h| *h == hex(&k.secret_hash)))
            .collect();
        let (keys, total, pages) = paginate(keys, page, size);
        let keys: Vec<Value> = keys
            .iter()
            .map(|(k, u)| {
                if full {
                    view(k, u)
                } else {
                    json!(hex(&k.secret_hash))
                }
            })
            .collect();
        Ok((
            StatusCode::OK,
            Some(json!({
                "keys": keys,
                "total_count": total,
                "current_page": page,
                "total_pages": pages,
            })),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct UpdateInput {
    key: Option<String>,
    models: Option<Vec<String>>,
    aliases: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    key_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    team_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    max_budget: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    spend: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    max_requests: Option<Option<Value>>,
    metadata: Option<Map<String, Value>>,
    blocked: Option<bool>,
}

/// A field that was in the body, `null` included.
fn given(field: Option<Option<Value>>) -> Option<Value> {
    field.map(|value| value.unwrap_or(Value::Null))
}

/// `POST /key/update {"key", ...}`: the fields given change; `null` clears.
/// A scoped caller changes only keys it reaches, and not their `user_id`
/// or `spend`; it moves a key only between teams it administers, blocks
/// only its teams' keys, and gives no more than its user's limits.
pub async fn update(store: Arc<Store>, grant: Grant, body: &[u8]) -> Answer {
    let input: UpdateInput = parse(body)?;
    let object = limits::object(body)?;
    let key = input
        .key
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("key", "required"))?;
    let changes = changes(input)?;
    blocking(store, move |s| {
        let (record, _) = s.find_key(&key).map_err(|_| not_found(&key))?;
        let changes = with_limits(changes, &object, &record)?;
        if grant.is_scoped() {
            scope_changes(s, &grant, &record, &changes, &object)?;
        }
        let (record, _) = s.update_key(record.id, changes)?;
        Ok((StatusCode::OK, Some(current_view(s, &record)?)))
    })
    .await
}

/// The changes an update body asks for, but its limits (`with_limits`).
fn changes(input: UpdateInput) -> Result<KeyChanges, ProxyError> {
    Ok(KeyChanges {
        is_active: input.blocked.map(|blocked| !blocked),
        max_requests: given(input.max_requests)
            .map(|v| max_requests(&v))
            .transpose()?,
        max_budget: given(input.max_budget)
            .map(|v| budget("max_budget", &v))
            .transpose()?,
        spend: given(input.spend)
            .map(|v| budget("spend", &v).map(|b| b.map_or(Money(0), |b| b.amount)))
            .transpose()?,
        expires_at: input.duration.map(|d| expiry(d.as_deref())).transpose()?,
        alias: input.key_alias.map(|a| a.filter(|a| !a.is_empty())),
        user_id: input.user_id,
        team_id: input.team_id,
        models: input.models,
        model_aliases: input.aliases,
        metadata: input.metadata.map(|m| Value::Object(m).to_string()),
        limits: None,
        model_limits: None,
    })
}

/// `changes` with the limit fields of the body applied to the key's.
fn with_limits(
    changes: KeyChanges,
    object: &Map<String, Value>,
    record: &KeyRecord,
) -> Result<KeyChanges, ProxyError> {
    Ok(KeyChanges {
        limits: limits::limits(object, record.limits)?,
        model_limits: limits::model_limits(object, &record.model_limits)?,
        ..changes
    })
}

#[derive(Debug, Deserialize)]
struct RegenerateInput {
    key: Option<String>,
    /// The new secret, chosen by the caller.
    new_key: Option<String>,
    new_master_key: Option<String>,
    grace_period: Option<String>,
}

/// `POST /key/regenerate {"key", ...}` and `POST /key/{key}/regenerate`
/// (`path_key`, still percent-encoded; a `key` in the body wins, as in
/// LiteLLM): a new secret for the same key (id, limits, spend and counts
/// kept); the old secret stops working on every worker before the answer.
/// The other fields of the body change the key as `/key/update` does. The
/// answer is the key with its new secret in `key`, the only time it is shown.
pub async fn regenerate(store: Arc<Store>, path_key: Option<&str>, body: &[u8]) -> Answer {
    let input: RegenerateInput = parse(body)?;
    let update: UpdateInput = parse(body)?;
    let object = limits::object(body)?;
    let from_path = path_key.map(|k| {
        percent_encoding::percent_decode_str(k)
            .decode_utf8_lossy()
            .into_owned()
    });
    let key = input
        .key
        .filter(|k| !k.is_empty())
        .or(from_path.filter(|k| !k.is_empty()))
        .ok_or_else(|| invalid("key", "required"))?;
    if input.new_master_key.is_some() {
        return Err(invalid(
            "new_master_key",
            "the master key is the MANAGEMENT_TOKEN: change it there and restart",
        ));
    }
    if input
        .grace_period
        .as_deref()
        .is_some_and(|g| !g.trim().is_empty())
    {
        return Err(invalid(
            "grace_period",
            "not supported: the old secret stops working at once",
        ));
    }
    if let Some(new_key) = &input.new_key
        && (!new_key.starts_with("sk-") || new_key.chars().count() < 16)
    {
        return Err(invalid(
            "new_key",
            "must start with \"sk-\" and be at least 16 characters",
        ));
    }
    let changes = changes(update)?;
    blocking(store, move |s| {
        let (record, _) = s.find_key(&key).map_err(|_| not_found(&key))?;
        let changes = with_limits(changes, &object, &record)?;
        let (record, _, secret) = s.regenerate_key(record.id, input.new_key, changes)?;
        let mut answer = current_view(s, &record)?;
        answer["key"] = json!(secret);
        Ok((StatusCode::OK, Some(answer)))
    })
    .await
}

/// Holds a scoped caller's changes to `record` to what it may change.
fn scope_changes(
    s: &Store,
    grant: &Grant,
    record: &KeyRecord,
    changes: &KeyChanges,
    body: &Map<String, Value>,
) -> Result<(), ProxyError> {
    grant.check_key(s, record)?;
    let team_admin = |team: &Option<String>| match team {
        Some(team_id) => grant.administers(s, team_id),
        None => Ok(false),
    };
    if changes
        .user_id
        .as_ref()
        .is_some_and(|user_id| *user_id != record.user_id)
    {
        return Err(grant.refuse("may not change a key's user_id"));
    }
    if changes.spend.is_some() {
        return Err(grant.refuse("may not change a key's spend"));
    }
    if let Some(team_id) = &changes.team_id
        && *team_id != record.team_id
        && !(team_admin(&record.team_id)? && (team_id.is_none() || team_admin(team_id)?))
    {
        return Err(grant.refuse("may only move a key out of and into the teams it administers"));
    }
    if changes.is_active.is_some() && !team_admin(&record.team_id)? {
        return Err(
            grant.refuse("may not block or unblock a key (proxy_admin and its team's admins may)")
        );
    }
    // The limits the body sets, not those the key had.
    let set = |field: &str, value: Option<u64>| value.filter(|_| body.contains_key(field));
    let limits = changes.limits.unwrap_or_default();
    grant.check_limits(
        s,
        changes.max_budget.flatten(),
        set("rpm_limit", limits.rpm_limit),
        set("tpm_limit", limits.tpm_limit),
    )
}

#[derive(Debug, Deserialize)]
struct BlockInput {
    key: Option<String>,
}

/// `POST /key/block` and `/key/unblock {"key"}` (the secret, its hash or
/// the key's id): the key stops, or starts again, working on every worker
/// before the answer; the answer is the key.
pub async fn block(store: Arc<Store>, grant: Grant, body: &[u8], blocked: bool) -> Answer {
    let input: BlockInput = parse(body)?;
    let key = input
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("key", "required"))?;
    let changes = KeyChanges {
        is_active: Some(!blocked),
        ..KeyChanges::default()
    };
    blocking(store, move |s| {
        let (record, _) = s.find_key(&key).map_err(|_| not_found(&key))?;
        grant.check_key(s, &record)?;
        let (record, usage) = s.update_key(record.id, changes)?;
        Ok((StatusCode::OK, Some(view(&record, &usage))))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct DeleteInput {
    // LiteLLM's client sends `null` for the list it was not given.
    #[serde(default, deserialize_with = "null_as_empty")]
    keys: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    key_aliases: Vec<String>,
}

/// `POST /key/delete {"keys":[...], "key_aliases":[...]}`: all or nothing;
/// an unknown key or alias is a 404 and nothing is deleted.
pub async fn delete(store: Arc<Store>, grant: Grant, body: &[u8]) -> Answer {
    let input: DeleteInput = parse(body)?;
    if input.keys.is_empty() && input.key_aliases.is_empty() {
        return Err(invalid("keys", "give keys or key_aliases to delete"));
    }
    blocking(store, move |s| {
        let mut ids = Vec::new();
        for key in &input.keys {
            let (record, _) = s.find_key(key).map_err(|_| not_found(key))?;
            grant.check_key(s, &record)?;
            ids.push(record.id);
        }
        for alias in &input.key_aliases {
            let id = s
                .key_id_by_alias(alias)?
                .ok_or_else(|| ProxyError::Missing(format!("no key with alias {alias:?}")))?;
            if grant.is_scoped() {
                grant.check_key(s, &s.find_key(&id.to_string())?.0)?;
            }
            ids.push(id);
        }
        s.delete_keys(&ids)?;
        let mut deleted = input.keys;
        deleted.extend(input.key_aliases);
        Ok((StatusCode::OK, Some(json!({"deleted_keys": deleted}))))
    })
    .await
}
