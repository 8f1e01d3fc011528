//! `/team/new`, `/team/update`, `/team/delete`, `/team/info`, `/team/list`,
//! `/team/member_add`, `/team/member_delete`, `/team/block`,
//! `/team/unblock`, `/team/available`: teams, with LiteLLM's field names
//! and answers. A member is an existing user; deleting a team deletes its
//! keys, as LiteLLM does.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::keys::view as key_view;
use super::roles::Grant;
use super::{invalid, lenient_number, limits, null_as_empty, parse};
use crate::api::{blocking, query_pairs, query_value, rfc3339};
use crate::error::ProxyError;
use crate::manage::Answer;
use crate::manage::views::present;
use crate::store::{
    Budget, Limits, NewTeam, Payer, Store, StoreError, Team, TeamChanges, TeamMember, TeamRole,
};

/// A team as LiteLLM shows it, with its spend in the budget's current
/// window and its members' emails.
fn view(s: &Store, team: &Team) -> Result<Value, StoreError> {
    let payer = Payer::Team(&team.team_id);
    let spend = s.payer_spend(payer)?;
    let reset_at = s.budget_reset_at(payer, team.limits.budget_duration)?;
    let mut members = Vec::with_capacity(team.members.len());
    for member in &team.members {
        let email = match s.get_user(&member.user_id) {
            Ok((user, _)) => user.user_email,
            Err(StoreError::NotFound(_)) => None,
            Err(error) => return Err(error),
        };
        members.push(json!({
            "user_id": member.user_id,
            "user_email": email,
            "role": member.role.as_str(),
        }));
    }
    let metadata: Value = serde_json::from_str(&team.metadata).unwrap_or_else(|_| json!({}));
    let mut view = json!({
        "team_id": team.team_id,
        "team_alias": team.team_alias,
        "organization_id": null,
        "models": team.models,
        "max_budget": team.max_budget.map(|b| b.dollars),
        "spend": spend.dollars(),
        "members_with_roles": members,
        "blocked": team.blocked,
        "metadata": metadata,
        "created_at": rfc3339(team.created_at),
        "updated_at": rfc3339(team.updated_at),
    });
    limits::show(&mut view, &team.limits, reset_at);
    Ok(view)
}

fn missing(team_id: &str) -> ProxyError {
    ProxyError::Missing(format!("no team {team_id:?}"))
}

/// The team, or a 404 naming it.
fn find(s: &Store, team_id: &str) -> Result<Team, ProxyError> {
    s.get_team(team_id).map_err(|error| match error {
        StoreError::NotFound(_) => missing(team_id),
        other => other.into(),
    })
}

fn budget(field: &str, value: &Value) -> Result<Option<Budget>, ProxyError> {
    match lenient_number(field, value)? {
        Some(n) if n < 0.0 => Err(invalid(field, "must not be negative")),
        other => Ok(other.map(Budget::new)),
    }
}

fn required(field: &str, value: Option<String>) -> Result<String, ProxyError> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(field, "required"))
}

/// A member as a request names it: by user id or by email.
#[derive(Debug, Clone)]
struct MemberInput {
    user: UserRef,
    role: TeamRole,
}

#[derive(Debug, Clone)]
enum UserRef {
    Id(String),
    Email(String),
}

impl UserRef {
    /// The user's id; a 404 when there is no such user.
    fn resolve(&self, s: &Store) -> Result<String, ProxyError> {
        match self {
            UserRef::Id(id) => match s.get_user(id) {
                Ok((user, _)) => Ok(user.user_id),
                Err(StoreError::NotFound(_)) => Err(ProxyError::Missing(format!("no user {id:?}"))),
                Err(error) => Err(error.into()),
            },
            UserRef::Email(email) => match s.find_user_by_email(email)? {
                Some(user) => Ok(user.user_id),
                None => Err(ProxyError::Missing(format!("no user with email {email:?}"))),
            },
        }
    }
}

/// `user_id` or `user_email` of an object (`field` names it in errors).
fn user_ref(object: &Map<String, Value>, field: &str) -> Result<UserRef, ProxyError> {
    let text = |name: &str| -> Result<Option<String>, ProxyError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(invalid(&format!("{field}{name}"), "must be a string")),
        }
    };
    match (text("user_id")?, text("user_email")?) {
        (Some(id), _) => Ok(UserRef::Id(id)),
        (None, Some(email)) => Ok(UserRef::Email(email)),
        (None, None) => Err(invalid(
            &format!("{field}user_id"),
            "give user_id or user_email",
        )),
    }
}

/// One member object: `{"user_id"|"user_email", "role": "admin"|"user"}`.
fn member(value: &Value, field: &str) -> Result<MemberInput, ProxyError> {
    let Value::Object(object) = value else {
        return Err(invalid(
            field,
            "must be an object with user_id or user_email, and role",
        ));
    };
    let prefix = format!("{field}.");
    let user = user_ref(object, &prefix)?;
    let role = match object.get("role") {
        Some(Value::String(role)) => TeamRole::parse(role.trim())
            .ok_or_else(|| invalid(&format!("{field}.role"), "must be admin or user"))?,
        None | Some(Value::Null) => {
            return Err(invalid(&format!("{field}.role"), "required: admin or user"));
        }
        Some(_) => return Err(invalid(&format!("{field}.role"), "must be admin or user")),
    };
    Ok(MemberInput { user, role })
}

/// `member` as one object or a list of them (`/team/member_add`), or
/// `members_with_roles` (a list; `null` is none).
fn members(value: Option<&Value>, field: &str, one: bool) -> Result<Vec<MemberInput>, ProxyError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| member(item, &format!("{field}[{i}]")))
            .collect(),
        Some(object @ Value::Object(_)) if one => Ok(vec![member(object, field)?]),
        Some(_) if one => Err(invalid(field, "must be a member object or a list of them")),
        Some(_) => Err(invalid(field, "must be a list of members")),
    }
}

/// The members with their users' ids; a 404 for a user that does not exist.
fn resolve(s: &Store, members: &[MemberInput]) -> Result<Vec<TeamMember>, ProxyError> {
    members
        .iter()
        .map(|m| {
            Ok(TeamMember {
                user_id: m.user.resolve(s)?,
                role: m.role,
            })
        })
        .collect()
}

fn metadata(value: Option<Map<String, Value>>) -> Option<String> {
    value.map(|m| Value::Object(m).to_string())
}

#[derive(Debug, Deserialize)]
struct CreateInput {
    team_id: Option<String>,
    team_alias: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    models: Vec<String>,
    #[serde(default)]
    max_budget: Value,
    metadata: Option<Map<String, Value>>,
    blocked: Option<bool>,
}

/// `POST /team/new`: every field optional; `members_with_roles` must name
/// existing users.
pub async fn create(store: Arc<Store>, body: &[u8]) -> Answer {
    // An object first: a list would pass for a struct's fields.
    let object = limits::object(body)?;
    let input: CreateInput = parse(body)?;
    let members = members(
        object.get("members_with_roles"),
        "members_with_roles",
        false,
    )?;
    let mut new = NewTeam {
        team_id: input.team_id.filter(|t| !t.trim().is_empty()),
        team_alias: input.team_alias.filter(|a| !a.trim().is_empty()),
        models: input.models,
        members: Vec::new(),
        max_budget: budget("max_budget", &input.max_budget)?,
        limits: limits::limits(&object, Limits::default())?.unwrap_or_default(),
        blocked: input.blocked.unwrap_or(false),
        metadata: metadata(input.metadata).unwrap_or_default(),
    };
    blocking(store, move |s| {
        new.members = resolve(s, &members)?;
        let team = s.create_team(new)?;
        Ok((StatusCode::OK, Some(view(s, &team)?)))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct UpdateInput {
    team_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    team_alias: Option<Option<String>>,
    // `null` is "every model", as an empty list.
    #[serde(default, deserialize_with = "present")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    max_budget: Option<Option<Value>>,
    metadata: Option<Map<String, Value>>,
    blocked: Option<bool>,
}

/// `POST /team/update {"team_id", ...}`: the fields given change; `null`
/// clears. Members change through `/team/member_add` and `_delete`.
pub async fn update(store: Arc<Store>, grant: Grant, body: &[u8]) -> Answer {
    // An object first: a list would pass for a struct's fields.
    let object = limits::object(body)?;
    // A team's admin names it and keeps its notes; what it may spend and
    // use, and whether it is blocked, are proxy_admin's to say.
    if !grant.is_proxy_admin()
        && let Some(field) = ADMIN_ONLY_FIELDS.iter().find(|f| object.contains_key(**f))
    {
        return Err(grant.refuse(format_args!("may not change a team's {field}")));
    }
    let input: UpdateInput = parse(body)?;
    let team_id = required("team_id", input.team_id)?;
    let changes = TeamChanges {
        team_alias: input.team_alias.map(|a| a.filter(|a| !a.trim().is_empty())),
        models: input.models.map(Option::unwrap_or_default),
        max_budget: input
            .max_budget
            .map(|v| budget("max_budget", &v.unwrap_or(Value::Null)))
            .transpose()?,
        limits: None,
        blocked: input.blocked,
        metadata: metadata(input.metadata),
    };
    blocking(store, move |s| {
        let team = find(s, &team_id)?;
        let changes = TeamChanges {
            limits: limits::limits(&object, team.limits)?,
            ..changes
        };
        let team = s.update_team(&team_id, changes)?;
        Ok((StatusCode::OK, Some(view(s, &team)?)))
    })
    .await
}

/// The fields of `/team/update` that only proxy_admin may change.
const ADMIN_ONLY_FIELDS: [&str; 8] = [
    "models",
    "max_budget",
    "blocked",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "budget_duration",
    "soft_budget",
];

#[derive(Debug, Deserialize)]
struct DeleteInput {
    #[serde(default, deserialize_with = "null_as_empty")]
    team_ids: Vec<String>,
}

/// `POST /team/delete {"team_ids":[...]}`: all or nothing, with their keys.
pub async fn delete(store: Arc<Store>, body: &[u8]) -> Answer {
    limits::object(body)?;
    let input: DeleteInput = parse(body)?;
    if input.team_ids.iter().all(|t| t.trim().is_empty()) {
        return Err(invalid("team_ids", "give the teams to delete"));
    }
    blocking(store, move |s| {
        for team_id in &input.team_ids {
            find(s, team_id)?;
        }
        let (deleted, keys) = s.delete_teams(&input.team_ids)?;
        Ok((
            StatusCode::OK,
            Some(json!({"deleted_teams": deleted, "deleted_keys": keys})),
        ))
    })
    .await
}

/// `GET /team/info?team_id=`: the team and its keys.
pub async fn info(store: Arc<Store>, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let team_id = required(
        "team_id",
        query_value(&pairs, "team_id").map(str::to_string),
    )?;
    blocking(store, move |s| {
        let team = find(s, &team_id)?;
        let keys: Vec<Value> = s
            .list_keys(None, false)?
            .iter()
            .filter(|(k, _)| k.team_id.as_deref() == Some(team_id.as_str()))
            .map(|(k, u)| key_view(k, u))
            .collect();
        Ok((
            StatusCode::OK,
            Some(json!({
                "team_id": team.team_id,
                "team_info": view(s, &team)?,
                "keys": keys,
            })),
        ))
    })
    .await
}

/// `GET /team/list[?user_id=]`: every team (or those the user is a member
/// of) as a JSON array, as LiteLLM answers it.
pub async fn list(store: Arc<Store>, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let user_id = query_value(&pairs, "user_id")
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    blocking(store, move |s| {
        let mut teams = Vec::new();
        for team in s.list_teams()? {
            if user_id
                .as_ref()
                .is_none_or(|u| team.members.iter().any(|m| &m.user_id == u))
            {
                teams.push(view(s, &team)?);
            }
        }
        Ok((StatusCode::OK, Some(Value::Array(teams))))
    })
    .await
}

/// `GET /team/available`: teams a user may join by themselves. LiteLLM
/// lists those named in its `default_internal_user_params`; there are no
/// such settings here, so none.
pub async fn available() -> Answer {
    Ok((StatusCode::OK, Some(json!([]))))
}

#[derive(Debug, Deserialize)]
struct TeamIdInput {
    team_id: Option<String>,
}

/// `POST /team/member_add {"team_id", "member": {...} | [{...}]}`: all or
/// none; the answer is the team with the users added (`updated_users`).
pub async fn member_add(store: Arc<Store>, body: &[u8]) -> Answer {
    // An object first: a list would pass for a struct's fields.
    let object = limits::object(body)?;
    let input: TeamIdInput = parse(body)?;
    let team_id = required("team_id", input.team_id)?;
    let members = members(object.get("member"), "member", true)?;
    if members.is_empty() {
        return Err(invalid("member", "required: {\"user_id\", \"role\"}"));
    }
    blocking(store, move |s| {
        find(s, &team_id)?;
        let members = resolve(s, &members)?;
        let team = s.add_team_members(&team_id, members.clone())?;
        let mut answer = view(s, &team)?;
        let mut users = Vec::new();
        for member in &members {
            let (user, spend) = s.get_user(&member.user_id)?;
            users.push(super::users::view(&user, spend));
        }
        answer["updated_users"] = Value::Array(users);
        answer["updated_team_memberships"] = members
            .iter()
            .map(|m| json!({"team_id": team.team_id, "user_id": m.user_id}))
            .collect();
        Ok((StatusCode::OK, Some(answer)))
    })
    .await
}

/// `POST /team/member_delete {"team_id", "user_id"|"user_email"}`: the
/// answer is the team.
pub async fn member_delete(store: Arc<Store>, body: &[u8]) -> Answer {
    // An object first: a list would pass for a struct's fields.
    let object = limits::object(body)?;
    let input: TeamIdInput = parse(body)?;
    let team_id = required("team_id", input.team_id)?;
    let user = user_ref(&object, "")?;
    blocking(store, move |s| {
        find(s, &team_id)?;
        let user_id = user.resolve(s)?;
        let team = s.remove_team_member(&team_id, &user_id)?;
        Ok((StatusCode::OK, Some(view(s, &team)?)))
    })
    .await
}

/// `POST /team/block` and `/team/unblock {"team_id"}`: the team's keys stop,
/// or start again, on every worker before the answer; the answer is the team.
pub async fn block(store: Arc<Store>, body: &[u8], blocked: bool) -> Answer {
    limits::object(body)?;
    let input: TeamIdInput = parse(body)?;
    let team_id = required("team_id", input.team_id)?;
    blocking(store, move |s| {
        find(s, &team_id)?;
        let team = s.set_team_blocked(&team_id, blocked)?;
        Ok((StatusCode::OK, Some(view(s, &team)?)))
    })
    .await
}
