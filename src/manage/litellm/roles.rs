//! Roles on the management API, as LiteLLM has them: which caller may call
//! which route, in one table (`RULES`), checked once before dispatch; and
//! the scope of a caller that may reach only its own records and its
//! teams' (`Grant`), which the handlers check, since they know the records.
//!
//! A caller is the master key (a `proxy_admin`), or a virtual key: the
//! role of its user (`User.user_role`), or none for a key without a user,
//! which may list models and nothing else. A team admin (a member of a team
//! with the role `admin`) may also manage its team's keys and members,
//! whatever its role.

use std::collections::HashMap;
use std::fmt;

use http::Method;
use serde_json::Value;

use super::Caller;
use crate::api::{blocking, query_pairs, query_value};
use crate::error::ProxyError;
use crate::store::{Budget, KeyRecord, Store, StoreError, TeamRole, UserRole};
use crate::worker::Worker;

/// What a caller is to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The master key, or a user with the role `proxy_admin`.
    ProxyAdmin,
    ProxyAdminViewer,
    InternalUser,
    InternalUserViewer,
    /// A key without a user: the model listings only.
    ModelKey,
}

impl Role {
    fn of(role: UserRole) -> Self {
        match role {
            UserRole::ProxyAdmin => Role::ProxyAdmin,
            UserRole::ProxyAdminViewer => Role::ProxyAdminViewer,
            UserRole::InternalUser => Role::InternalUser,
            UserRole::InternalUserViewer => Role::InternalUserViewer,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::ProxyAdmin => ADMIN,
            Role::ProxyAdminViewer => ADMIN_VIEWER,
            Role::InternalUser => USER,
            Role::InternalUserViewer => USER_VIEWER,
            Role::ModelKey => MODEL_KEY,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::ProxyAdmin => "proxy_admin",
            Role::ProxyAdminViewer => "proxy_admin_viewer",
            Role::InternalUser => "internal_user",
            Role::InternalUserViewer => "internal_user_viewer",
            Role::ModelKey => "a key without a user (no role)",
        })
    }
}

const ADMIN: u8 = 1;
const ADMIN_VIEWER: u8 = 2;
const USER: u8 = 4;
const USER_VIEWER: u8 = 8;
const MODEL_KEY: u8 = 16;

/// Roles, as a set of bits.
const NOBODY: u8 = 0;
const ADMINS: u8 = ADMIN;
const READERS: u8 = ADMIN | ADMIN_VIEWER;
const USERS: u8 = USER;
const ALL_USERS: u8 = USER | USER_VIEWER;
const EVERYONE: u8 = ADMIN | ADMIN_VIEWER | USER | USER_VIEWER | MODEL_KEY;

/// Whether, and how, a route's team admins may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teams {
    No,
    /// On the keys of their teams: the handler checks each key's team.
    Keys,
    /// On the team the request names (`team_id` in the body, or in the
    /// query of a GET): checked here, before dispatch.
    Named,
}

/// One line of the table.
struct Rule {
    /// `GET` (HEAD too), `POST`, or `*` for any.
    method: &'static str,
    /// The path, or a prefix ending in `*`.
    path: &'static str,
    /// Roles that reach every record of the route.
    all: u8,
    /// Roles that reach only their own records (their keys, their user).
    own: u8,
    teams: Teams,
}

const fn rule(method: &'static str, path: &'static str, all: u8, own: u8, teams: Teams) -> Rule {
    Rule {
        method,
        path,
        all,
        own,
        teams,
    }
}

/// The routes and who may call them. A path not here is for `proxy_admin`
/// alone, who gets its 404; a method not here on a path that is, is a 405
/// for everyone (no handler takes it).
/// `/health/readiness` needs no key at all and is not here.
const RULES: &[Rule] = &[
    // The model listings show a key the models it may use.
    rule("GET", "/models", EVERYONE, NOBODY, Teams::No),
    rule("GET", "/v1/models", EVERYONE, NOBODY, Teams::No),
    rule("GET", "/models/*", EVERYONE, NOBODY, Teams::No),
    rule("GET", "/v1/models/*", EVERYONE, NOBODY, Teams::No),
    rule("GET", "/model/info", EVERYONE, NOBODY, Teams::No),
    rule("GET", "/v1/model/info", EVERYONE, NOBODY, Teams::No),
    rule("GET", "/model_group/info", EVERYONE, NOBODY, Teams::No),
    rule("POST", "/model/new", ADMINS, NOBODY, Teams::No),
    rule("POST", "/model/update", ADMINS, NOBODY, Teams::No),
    rule("POST", "/model/delete", ADMINS, NOBODY, Teams::No),
    rule("GET", "/credentials", READERS, NOBODY, Teams::No),
    rule("POST", "/credentials", ADMINS, NOBODY, Teams::No),
    rule("GET", "/credentials/*", READERS, NOBODY, Teams::No),
    rule("*", "/credentials/*", ADMINS, NOBODY, Teams::No),
    rule("POST", "/key/generate", ADMINS, USERS, Teams::Keys),
    rule("GET", "/key/info", READERS, ALL_USERS, Teams::Keys),
    rule("GET", "/key/list", READERS, ALL_USERS, Teams::Keys),
    rule("POST", "/key/update", ADMINS, USERS, Teams::Keys),
    rule("POST", "/key/delete", ADMINS, USERS, Teams::Keys),
    rule("POST", "/key/block", ADMINS, NOBODY, Teams::Keys),
    rule("POST", "/key/unblock", ADMINS, NOBODY, Teams::Keys),
    // A new secret for a key (also `/key/{key}/regenerate`, not listed:
    // for proxy_admin alone, as every path not here).
    rule("POST", "/key/regenerate", ADMINS, NOBODY, Teams::No),
    rule("POST", "/user/new", ADMINS, NOBODY, Teams::No),
    rule("GET", "/user/list", READERS, NOBODY, Teams::No),
    rule("GET", "/user/info", READERS, ALL_USERS, Teams::No),
    rule("POST", "/user/update", ADMINS, USERS, Teams::No),
    rule("POST", "/user/delete", ADMINS, NOBODY, Teams::No),
    rule("POST", "/team/new", ADMINS, NOBODY, Teams::No),
    rule("POST", "/team/update", ADMINS, NOBODY, Teams::Named),
    rule("POST", "/team/delete", ADMINS, NOBODY, Teams::No),
    rule("GET", "/team/info", READERS, NOBODY, Teams::Named),
    rule("GET", "/team/list", READERS, NOBODY, Teams::No),
    // The teams a user may join by itself.
    rule(
        "GET",
        "/team/available",
        READERS | ALL_USERS,
        NOBODY,
        Teams::No,
    ),
    rule("POST", "/team/member_add", ADMINS, NOBODY, Teams::Named),
    rule("POST", "/team/member_delete", ADMINS, NOBODY, Teams::Named),
    rule("POST", "/team/block", ADMINS, NOBODY, Teams::No),
    rule("POST", "/team/unblock", ADMINS, NOBODY, Teams::No),
    // Projects, tokens, the audit log, the cache.
    rule("*", "/manage/*", ADMINS, NOBODY, Teams::No),
];

/// Only proxy_admin: a path not in the table.
const ADMIN_ONLY: Rule = rule("*", "", ADMINS, NOBODY, Teams::No);
/// Anyone, to its 405: a method the table has not for a path it has.
const WRONG_METHOD: Rule = rule("*", "", EVERYONE, NOBODY, Teams::No);

fn find(method: &Method, path: &str) -> &'static Rule {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    let on_path = |rule: &&Rule| match rule.path.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix) && path.len() > prefix.len(),
        None => path == rule.path,
    };
    let takes = |rule: &&Rule| match rule.method {
        "*" => true,
        "GET" => method == Method::GET || method == Method::HEAD,
        name => method.as_str() == name,
    };
    match RULES.iter().filter(on_path).find(takes) {
        Some(rule) => rule,
        None if RULES.iter().any(|rule| on_path(&rule)) => &WRONG_METHOD,
        None => &ADMIN_ONLY,
    }
}

/// What the caller may reach on the route it called.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The caller's user, for a key that has one.
    pub user_id: Option<String>,
    role: Role,
    /// `None`: every record the route reaches. Otherwise only the caller's
    /// own records and those of the teams it administers, as `Scope` says.
    scope: Option<Scope>,
    /// `METHOD /path`, for the messages.
    route: String,
}

#[derive(Debug, Clone, Copy)]
struct Scope {
    /// The caller's own keys (or user).
    own: bool,
    /// The keys of the teams the caller administers.
    teams: bool,
}

impl Grant {
    fn everything(role: Role, user_id: Option<String>, route: String) -> Self {
        Grant {
            user_id,
            role,
            scope: None,
            route,
        }
    }

    /// Whether the caller reaches only some records of the route.
    pub fn is_scoped(&self) -> bool {
        self.scope.is_some()
    }

    /// Whether the caller is proxy_admin (the master key, or a user with
    /// that role), not one let in as a team's admin.
    pub fn is_proxy_admin(&self) -> bool {
        matches!(self.role, Role::ProxyAdmin)
    }

    /// The refusal of something the caller's role does not allow.
    pub fn refuse(&self, what: impl fmt::Display) -> ProxyError {
        ProxyError::RoleForbidden(format!("{} {what} ({})", self.role, self.route))
    }

    /// What the caller's scope reaches, as a message says it.
    fn reach(&self) -> &'static str {
        match self.scope {
            Some(Scope {
                own: true,
                teams: true,
            }) => "may only reach its own keys and those of the teams it administers",
            Some(Scope { own: true, .. }) => "may only reach its own keys",
            _ => "may only reach the keys of the teams it administers",
        }
    }

    /// Whether the caller is an admin of the team `team_id` (an unknown
    /// team has none).
    pub fn administers(&self, s: &Store, team_id: &str) -> Result<bool, ProxyError> {
        let Some(user_id) = &self.user_id else {
            return Ok(false);
        };
        administers(s, user_id, team_id)
    }

    /// Whether the caller reaches `key`; `teams` remembers which teams it
    /// administers, for a listing.
    pub fn reaches(
        &self,
        s: &Store,
        key: &KeyRecord,
        teams: &mut HashMap<String, bool>,
    ) -> Result<bool, ProxyError> {
        let Some(scope) = self.scope else {
            return Ok(true);
        };
        if scope.own && self.user_id.is_some() && key.user_id == self.user_id {
            return Ok(true);
        }
        match (&key.team_id, scope.teams) {
            (Some(team_id), true) => {
                if let Some(&known) = teams.get(team_id) {
                    return Ok(known);
                }
                let admin = self.administers(s, team_id)?;
                teams.insert(team_id.clone(), admin);
                Ok(admin)
            }
            _ => Ok(false),
        }
    }

    /// `Ok` when the caller reaches `key`, else the 403 that says so.
    pub fn check_key(&self, s: &Store, key: &KeyRecord) -> Result<(), ProxyError> {
        if self.reaches(s, key, &mut HashMap::new())? {
            Ok(())
        } else {
            Err(self.refuse(format_args!(
                "{}: key {} is not one of them",
                self.reach(),
                key.id
            )))
        }
    }

    /// `Ok` when a key of `user_id` (and no team) is the caller's own and
    /// its scope reaches its own keys.
    pub fn check_owner(&self, user_id: Option<&str>) -> Result<(), ProxyError> {
        match self.scope {
            None => Ok(()),
            Some(Scope { own: true, .. })
                if user_id.is_some() && user_id == self.user_id.as_deref() =>
            {
                Ok(())
            }
            Some(_) => Err(self.refuse(format_args!("{}", self.reach()))),
        }
    }

    /// `Ok` when the caller's own user is the `user_id` named (an
    /// unscoped caller reaches every user).
    pub fn check_user(&self, user_id: &str) -> Result<(), ProxyError> {
        if self.scope.is_none() || self.user_id.as_deref() == Some(user_id) {
            Ok(())
        } else {
            Err(self.refuse(format_args!("may only reach its own user, not {user_id:?}")))
        }
    }

    /// A scoped caller may not give a key more than its own user has: a
    /// `max_budget`, `rpm_limit` or `tpm_limit` above its user's, when the
    /// user has one. The values are those the request sets.
    pub fn check_limits(
        &self,
        s: &Store,
        max_budget: Option<Budget>,
        rpm_limit: Option<u64>,
        tpm_limit: Option<u64>,
    ) -> Result<(), ProxyError> {
        let (Some(_), Some(user_id)) = (self.scope, &self.user_id) else {
            return Ok(());
        };
        let (user, _) = s.get_user(user_id)?;
        let above = |field: &str, own: String, key: String| {
            self.refuse(format_args!(
                "may not give a key a {field} ({key}) above its user's ({own})"
            ))
        };
        if let (Some(own), Some(key)) = (user.max_budget, max_budget)
            && key.amount > own.amount
        {
            return Err(above(
                "max_budget",
                own.dollars.to_string(),
                key.dollars.to_string(),
            ));
        }
        for (field, own, key) in [
            ("rpm_limit", user.limits.rpm_limit, rpm_limit),
            ("tpm_limit", user.limits.tpm_limit, tpm_limit),
        ] {
            if let (Some(own), Some(key)) = (own, key)
                && key > own
            {
                return Err(above(field, own.to_string(), key.to_string()));
            }
        }
        Ok(())
    }
}

fn administers(s: &Store, user_id: &str, team_id: &str) -> Result<bool, ProxyError> {
    match s.get_team(team_id) {
        Ok(team) => Ok(team
            .members
            .iter()
            .any(|m| m.user_id == user_id && m.role == TeamRole::Admin)),
        Err(StoreError::NotFound(_)) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// The team a team route names: `team_id` in the query of a GET, in the
/// JSON body otherwise.
fn named_team(method: &Method, query: &str, body: &[u8]) -> Option<String> {
    if method == Method::GET || method == Method::HEAD {
        let pairs = query_pairs(query);
        return query_value(&pairs, "team_id").map(str::to_string);
    }
    match serde_json::from_slice::<Value>(body).ok()?.get("team_id")? {
        Value::String(id) => Some(id.clone()),
        _ => None,
    }
}

/// Checks the caller against the table for `method` on `target`: what it
/// may reach, or the 403 that names its role and the route.
pub async fn check(
    worker: &Worker,
    caller: &Caller,
    method: &Method,
    target: &str,
    body: &[u8],
) -> Result<Grant, ProxyError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = format!("{method} {path}");
    let user_id = match caller {
        Caller::Anonymous | Caller::Master => {
            return Ok(Grant::everything(Role::ProxyAdmin, None, route));
        }
        Caller::Key { user_id, .. } => user_id.clone(),
    };
    let rule = find(method, path);
    if rule.all == EVERYONE {
        // A listing: no role to look up.
        return Ok(Grant::everything(Role::ModelKey, user_id, route));
    }
    let team = (rule.teams == Teams::Named)
        .then(|| named_team(method, query, body))
        .flatten();
    // The caller's role, and whether it administers the team named.
    let (role, user_id, admin) = blocking(worker.store.clone(), move |s| {
        let Some(user_id) = user_id else {
            return Ok((Role::ModelKey, None, false));
        };
        match s.get_user(&user_id) {
            Ok((user, _)) => {
                let admin = match &team {
                    Some(team) => administers(s, &user_id, team)?,
                    None => false,
                };
                Ok((Role::of(user.user_role), Some(user_id), admin))
            }
            // A key whose user is gone is a key without a user.
            Err(StoreError::NotFound(_)) => Ok((Role::ModelKey, None, false)),
            Err(error) => Err(error.into()),
        }
    })
    .await?;
    let mut grant = Grant::everything(role, user_id, route);
    let bit = role.bit();
    if rule.all & bit != 0 {
        return Ok(grant);
    }
    let own = rule.own & bit != 0;
    let teams = rule.teams != Teams::No && grant.user_id.is_some();
    match rule.teams {
        _ if !own && !teams => Err(grant.refuse("may not call this route")),
        Teams::Named if admin => Ok(grant),
        Teams::Named => Err(grant.refuse("may only call this route for a team it administers")),
        _ => {
            grant.scope = Some(Scope { own, teams });
            Ok(grant)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_find_their_rules() {
        assert_eq!(find(&Method::GET, "/key/list").all, READERS);
        assert_eq!(find(&Method::HEAD, "/key/list/").all, READERS);
        assert_eq!(find(&Method::GET, "/v1/models/gpt-4o").all, EVERYONE);
        assert_eq!(find(&Method::GET, "/credentials/x").all, READERS);
        assert_eq!(find(&Method::DELETE, "/credentials/x").all, ADMINS);
        assert_eq!(find(&Method::GET, "/manage/tokens").all, ADMINS);
        // A wrong method: anyone, to its 405; a path not in the table:
        // proxy_admin alone.
        assert_eq!(find(&Method::GET, "/key/generate").all, EVERYONE);
        assert_eq!(find(&Method::POST, "/v1/models/x").all, EVERYONE);
        assert_eq!(find(&Method::GET, "/key/nothing").all, ADMINS);
        assert_eq!(find(&Method::GET, "/models/").all, EVERYONE);
    }
}
