//! The management APIs, on the proxy's port, behind
//! `Authorization: Bearer $MANAGEMENT_TOKEN` or a virtual key whose user's
//! role allows the route (`litellm::roles`): `/manage/...` (projects and
//! tokens) and, in `litellm`, the LiteLLM-compatible one (models,
//! credentials, keys, users). Cold path: store calls run on the blocking
//! pool, never on the worker thread.

mod audit;
mod cache;
pub mod litellm;
pub mod views;

pub use views::expiry_after;

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{self, Errors, Local, allowed_models, blocking, not_allowed};
use crate::downstream::ClientConn;
use crate::error::{ErrorStyle, ProxyError};
use crate::http::RequestHead;
use crate::metrics;
use crate::store::{KeyChanges, NewKey, ProjectChanges};
use crate::worker::Worker;

/// Largest management request body.
const MAX_BODY: usize = 64 << 10;

/// A management answer: a status and its JSON body (none: 204, no body).
type Answer = Result<(StatusCode, Option<Value>), ProxyError>;

/// The two APIs served here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Manage,
    LiteLlm,
}

pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let mut local = Local::new(worker, conn, head);
    local.endpoint = match metrics::Endpoint::of(head.path(&conn.buf)) {
        metrics::Endpoint::Other => metrics::Endpoint::Manage,
        listing => listing,
    };
    let api = if litellm::owns(head.path(&conn.buf)) {
        Api::LiteLlm
    } else {
        Api::Manage
    };
    local.errors = Errors::Json(match api {
        Api::Manage => ErrorStyle::OpenAi,
        Api::LiteLlm => litellm::error_style(head.path(&conn.buf)),
    });
    let target = String::from_utf8_lossy(head.target.of(&conn.buf)).into_owned();
    let mut actor = "unauthenticated".to_string();
    let mut audited = !head.path(&conn.buf).starts_with(b"/health/");
    let mut body_seen = Vec::new();
    let listing =
        api == Api::LiteLlm && litellm::access(head.path(&conn.buf)) == litellm::Access::AnyKey;
    let answer = match authorize(worker, api, head, &conn.buf) {
        Ok(caller) => {
            actor = caller.actor();
            // Clients listing their models with their own keys are not management.
            audited &= !(listing && matches!(caller, litellm::Caller::Key { .. }));
            let timeout = worker.settings.limits.body_timeout;
            match conn.read_body(head, MAX_BODY, timeout).await {
                Ok(body) => {
                    let method = &head.method;
                    let answer = match litellm::roles::check(
                        worker, &caller, method, &target, &body,
                    )
                    .await
                    {
                        Err(refused) => Err(refused),
                        Ok(_) if api == Api::Manage => {
                            dispatch(worker, method, &target, &body).await
                        }
                        Ok(grant) => {
                            litellm::dispatch(worker, caller, grant, method, &target, &body).await
                        }
                    };
                    body_seen = body;
                    answer
                }
                Err(error) => {
                    local.close = true;
                    Err(error)
                }
            }
        }
        Err(error) => {
            // A model listing refused for its key is a client's error, as a
            // chat with that key would be, not a management call: not
            // audited (a flood of bad keys would be a flood of writes).
            audited &= !listing;
            // The body was not read: reuse the connection only if it all arrived.
            local.close |= !conn.discard_buffered_body(head);
            Err(error)
        }
    };
    if matches!(&answer, Err(ProxyError::ClientGone)) {
        return false;
    }
    let answer = match (answer, wait_for_nodes(head, &conn.buf)) {
        // The write is committed; the wait only says how far it got.
        (Ok(answer), Some(timeout)) if head.method != Method::GET => {
            let store = worker.store.clone();
            match api::blocking(store, move |s| Ok(s.wait_for_nodes(timeout)?)).await {
                Ok(Some(nodes)) => local.nodes_applied = Some(nodes_applied(&nodes)),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot tell which nodes applied a write"),
            }
            Ok(answer)
        }
        (answer, _) => answer,
    };
    let answer = answer.map(|(status, body)| match body {
        Some(value) => api::Answer::Json(status, value),
        None => api::Answer::NoContent,
    });
    let status = local.count(worker, &answer);
    if audited {
        let remote = conn
            .stream
            .peer_addr()
            .map_or_else(|_| "unknown".to_string(), |addr| addr.to_string());
        let call = api::audit::Call {
            actor: &actor,
            method: head.method.as_str(),
            target: &target,
            status: status.as_u16(),
            outcome: match &answer {
                Ok(_) => "ok",
                Err(error) => error.table().2,
            },
            body: &body_seen,
            request_id: &local.request_id,
            remote,
        };
        api::audit::record(worker, call).await;
    }
    let request_id = local.request_id.as_str();
    if let Err(error) = &answer
        && error.status().is_server_error()
    {
        tracing::error!(request_id, %error, "management request failed");
    }
    tracing::debug!(request_id, method = %head.method, status = status.as_u16(), "management request");
    local.send(conn, answer).await
}

/// Longest wait a client may ask for with `X-Wait-For-Nodes`.
const MAX_NODE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `X-Wait-For-Nodes: <seconds>`: in shared mode, a write answers once
/// every live node applied it, or after that many seconds (at most 30).
fn wait_for_nodes(head: &RequestHead, buf: &[u8]) -> Option<std::time::Duration> {
    let value = head.header(buf, "x-wait-for-nodes")?;
    let seconds: f64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds > 0.0)
        .then(|| std::time::Duration::from_secs_f64(seconds).min(MAX_NODE_WAIT))
}

/// `X-Nodes-Applied`: `applied/live`, and the nodes still behind.
fn nodes_applied(nodes: &crate::store::shared::NodesApplied) -> String {
    let mut text = format!("{}/{}", nodes.applied, nodes.live);
    if !nodes.pending.is_empty() {
        text.push_str("; pending=");
        text.push_str(&nodes.pending.join(","));
    }
    text
}

/// Who is calling: the master key; or a virtual key, whose user's role
/// `litellm::roles::check` weighs once the body is read; nobody needs a key
/// for the readiness check. A request with neither the master key nor a
/// known key is a 401 that asks for the management token, except on the
/// model listings, which ask for a key.
fn authorize(
    worker: &Worker,
    api: Api,
    head: &RequestHead,
    buf: &[u8],
) -> Result<litellm::Caller, ProxyError> {
    let access = match api {
        Api::Manage => litellm::Access::Management,
        Api::LiteLlm => litellm::access(head.path(buf)),
    };
    if access == litellm::Access::Public {
        return Ok(litellm::Caller::Anonymous);
    }
    match check_master(worker, head, buf) {
        Ok(()) => Ok(litellm::Caller::Master),
        // Without a management token there is no management: only the listings.
        Err(ProxyError::ManagementDisabled) if access == litellm::Access::Management => {
            Err(ProxyError::ManagementDisabled)
        }
        Err(ProxyError::ManagementDisabled | ProxyError::ManagementUnauthorized) => {
            let key = match crate::worker::auth::authenticate(worker, head, buf) {
                Ok(key) => key,
                Err(ProxyError::MissingKey | ProxyError::InvalidKey)
                    if access == litellm::Access::Management =>
                {
                    return Err(ProxyError::ManagementUnauthorized);
                }
                Err(error) => return Err(error),
            };
            let view = &key.view;
            Ok(litellm::Caller::Key {
                key_id: view.key_id,
                user_id: view.user_id.clone(),
                models: allowed_models(view),
            })
        }
        Err(error) => Err(error),
    }
}

/// Whether the request carries the master key.
pub fn is_master(worker: &Worker, head: &RequestHead, buf: &[u8]) -> bool {
    check_master(worker, head, buf).is_ok()
}

/// Checks the management token in constant time.
fn check_master(worker: &Worker, head: &RequestHead, buf: &[u8]) -> Result<(), ProxyError> {
    let Some(expected) = worker.settings.management_token.as_deref() else {
        return Err(ProxyError::ManagementDisabled);
    };
    if !crate::worker::auth::presents_bearer(head, buf, expected) {
        return Err(ProxyError::ManagementUnauthorized);
    }
    Ok(())
}

/// The `/manage/...` function that answers `method` on `target`'s path.
async fn dispatch(worker: &Worker, method: &Method, target: &str, body: &[u8]) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(2) // "" and "manage"
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let store = worker.store.clone();
    match (segments.as_slice(), method) {
        (["projects"], &Method::GET) => {
            blocking(store, |s| {
                let list: Vec<Value> = s.list_projects()?.iter().map(views::project).collect();
                Ok((StatusCode::OK, Some(Value::Array(list))))
            })
            .await
        }
        (["projects"], &Method::POST) => {
            let input: views::CreateProject = parse(body)?;
            blocking(store, move |s| {
                let project = s.create_project(&input.name, &input.openai_api_key)?;
                Ok((StatusCode::CREATED, Some(views::project(&project))))
            })
            .await
        }
        (["projects"], _) => not_allowed(method, "GET, POST"),
        (["projects", id], &Method::GET) => {
            let id = uuid(id, "project")?;
            blocking(store, move |s| {
                Ok((StatusCode::OK, Some(views::project(&s.get_project(id)?))))
            })
            .await
        }
        (["projects", id], &Method::PATCH) => {
            let id = uuid(id, "project")?;
            let input: views::UpdateProject = parse(body)?;
            let changes = ProjectChanges {
                name: input.name,
                upstream_key: input.openai_api_key,
                is_active: input.is_active,
            };
            blocking(store, move |s| {
                let project = s.update_project(id, changes)?;
                Ok((StatusCode::OK, Some(views::project(&project))))
            })
            .await
        }
        (["projects", id], &Method::DELETE) => {
            let id = uuid(id, "project")?;
            blocking(store, move |s| {
                s.delete_project(id)?;
                Ok((StatusCode::NO_CONTENT, None))
            })
            .await
        }
        (["projects", _], _) => not_allowed(method, "GET, PATCH, DELETE"),
        (["projects", id, "tokens", "revoke"], &Method::POST) => {
            let id = uuid(id, "project")?;
            blocking(store, move |s| {
                let revoked = s.revoke_project_keys(id)?;
                Ok((
                    StatusCode::OK,
                    Some(json!({"project_id": id, "revoked": revoked})),
                ))
            })
            .await
        }
        (["projects", _, "tokens", "revoke"], _) => not_allowed(method, "POST"),
        (["tokens"], &Method::GET) => {
            let (project_id, active_only) = token_filters(query)?;
            blocking(store, move |s| {
                let list: Vec<Value> = s
                    .list_keys(project_id, active_only)?
                    .iter()
                    .map(|(key, usage)| views::token(key, usage, None))
                    .collect();
                Ok((StatusCode::OK, Some(Value::Array(list))))
            })
            .await
        }
        (["tokens"], &Method::POST) => {
            let input: views::CreateToken = parse(body)?;
            let new = new_key(input)?;
            blocking(store, move |s| {
                let (key, secret) = s.create_key(new)?;
                let usage = s.usage_of(key.id)?;
                Ok((
                    StatusCode::CREATED,
                    Some(views::token(&key, &usage, Some(&secret))),
                ))
            })
            .await
        }
        (["tokens"], _) => not_allowed(method, "GET, POST"),
        (["tokens", id], &Method::GET) => {
            let id = id.to_string();
            blocking(store, move |s| {
                let (key, usage) = s.find_key(&id)?;
                Ok((StatusCode::OK, Some(views::token(&key, &usage, None))))
            })
            .await
        }
        (["tokens", id], &Method::PATCH) => {
            let id = id.to_string();
            let input: views::UpdateToken = parse(body)?;
            let changes = key_changes(input)?;
            blocking(store, move |s| {
                let (key, _) = s.find_key(&id)?;
                let (key, usage) = s.update_key(key.id, changes)?;
                Ok((StatusCode::OK, Some(views::token(&key, &usage, None))))
            })
            .await
        }
        (["tokens", id], &Method::DELETE) => {
            let id = id.to_string();
            blocking(store, move |s| {
                let (key, _) = s.find_key(&id)?;
                let changes = KeyChanges {
                    is_active: Some(false),
                    ..KeyChanges::default()
                };
                s.update_key(key.id, changes)?;
                Ok((StatusCode::NO_CONTENT, None))
            })
            .await
        }
        (["tokens", _], _) => not_allowed(method, "GET, PATCH, DELETE"),
        (["audit"], &Method::GET) => audit::list(store, query).await,
        (["audit"], _) => not_allowed(method, "GET"),
        (["audit", id], &Method::GET) => audit::get(store, id).await,
        (["audit", _], _) => not_allowed(method, "GET"),
        (["cache", "purge"], &Method::POST) => cache::purge(worker, body).await,
        (["cache", "purge"], _) => not_allowed(method, "POST"),
        _ => Err(ProxyError::NotFound),
    }
}

/// Parses a JSON body; the message names the unknown field or the field
/// with the wrong type.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProxyError> {
    if body.is_empty() {
        return Err(ProxyError::InvalidBody("a JSON body is required".into()));
    }
    deserialize_body(body).map_err(|error| match error {
        BodyError::Json(message) => ProxyError::InvalidBody(message),
        BodyError::Field { path, message } => {
            ProxyError::InvalidBody(format!("invalid JSON at field `{path}`: {message}"))
        }
    })
}

/// Why a JSON body did not deserialize.
enum BodyError {
    /// Not JSON, or not the right kind of document.
    Json(String),
    /// One field (its path) has the wrong type or is unknown.
    Field { path: String, message: String },
}

fn deserialize_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            BodyError::Json(format!("invalid JSON: {inner}"))
        } else {
            BodyError::Field {
                path,
                message: inner.to_string(),
            }
        }
    })
}

fn uuid(text: &str, what: &'static str) -> Result<Uuid, ProxyError> {
    Uuid::parse_str(text).map_err(|_| ProxyError::ResourceNotFound(what))
}

fn token_filters(query: &str) -> Result<(Option<Uuid>, bool), ProxyError> {
    let mut project_id = None;
    let mut active_only = false;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "project_id" => {
                project_id = Some(Uuid::parse_str(&value).map_err(|_| {
                    ProxyError::InvalidBody(format!("project_id: not a UUID: {value:?}"))
                })?);
            }
            "active_only" => {
                active_only = match value.as_ref() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ProxyError::InvalidBody(format!(
                            "active_only: expected true or false, got {other:?}"
                        )));
                    }
                }
            }
            other => {
                return Err(ProxyError::InvalidBody(format!(
                    "unknown query parameter {other:?} (expected project_id, active_only)"
                )));
            }
        }
    }
    Ok((project_id, active_only))
}

fn new_key(input: views::CreateToken) -> Result<NewKey, ProxyError> {
    let project_id = Uuid::parse_str(&input.project_id).map_err(|_| {
        ProxyError::InvalidBody(format!("project_id: not a UUID: {:?}", input.project_id))
    })?;
    let duration = views::requested_duration(input.duration_minutes, input.duration.as_deref())
        .map_err(ProxyError::InvalidBody)?
        .unwrap_or(views::DEFAULT_TOKEN_DURATION);
    Ok(NewKey {
        project_id: Some(project_id),
        expires_at: Some(views::expiry_after(duration)),
        max_requests: input.max_requests.filter(|&max| max > 0),
        alias: input.alias,
        metadata: input
            .metadata
            .map(|m| Value::Object(m).to_string())
            .unwrap_or_default(),
        secret: input.token,
        ..NewKey::default()
    })
}

fn key_changes(input: views::UpdateToken) -> Result<KeyChanges, ProxyError> {
    let duration = views::requested_duration(input.duration_minutes, input.duration.as_deref())
        .map_err(ProxyError::InvalidBody)?;
    Ok(KeyChanges {
        is_active: input.is_active,
        max_requests: input.max_requests.map(|max| max.filter(|&m| m > 0)),
        expires_at: duration.map(|d| Some(views::expiry_after(d))),
        alias: input.alias,
        metadata: input.metadata.map(|m| Value::Object(m).to_string()),
        ..KeyChanges::default()
    })
}
