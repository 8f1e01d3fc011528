//! The device side of a sign-in, as in OAuth's device authorization flow:
//! the JSON endpoints the machine being signed in (the CLI) calls.
//! `POST /sso/cli/start` gives it a user code and the page to open,
//! `GET /sso/cli/poll/{id}` hands it its key once the user approved in a
//! browser (`browser`), and with that key `GET /sso/cli/whoami` and
//! `POST /sso/cli/logout`.

use std::rc::Rc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{
    Answer, Outcome, Request, anonymous_machine, audit, base_url, check_fresh, load, random_token,
    user_code,
};
use crate::api::{allowed_models, blocking, rfc3339, rfc3339_opt};
use crate::error::ProxyError;
use crate::store::crypto::{same_secret, sha256};
use crate::store::{Issue, LoginState, NewLogin, StoreError, is_login_key};
use crate::worker::Worker;
use crate::worker::keys::CachedKey;

/// Seconds the CLI waits between polls.
const POLL_INTERVAL: u64 = 2;

#[derive(Debug, Default, Deserialize)]
struct StartInput {
    machine_id: Option<String>,
    hostname: Option<String>,
}

/// An optional text field: at most `max` characters, no control characters.
fn short_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ProxyError> {
    match value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => {
            Err(ProxyError::InvalidField {
                field: field.into(),
                message: format!("must be at most {max} characters, without control characters"),
            })
        }
        other => Ok(other),
    }
}

/// `POST /sso/cli/start`: a new login, its poll secret and user code.
pub async fn start(worker: &Worker, request: &Request) -> Outcome {
    let input: StartInput = if request.body.iter().all(u8::is_ascii_whitespace) {
        StartInput::default()
    } else {
        serde_json::from_slice(&request.body)
            .map_err(|e| ProxyError::InvalidBody(format!("invalid JSON: {e}")))?
    };
    let machine = short_text("machine_id", input.machine_id, 200)?
        .unwrap_or_else(|| anonymous_machine(request));
    let hostname = short_text("hostname", input.hostname, 255)?;
    let base = base_url(worker, request)?;
    let settings = &worker.settings.login;
    let ttl = settings.login_ttl;
    let (login, poll_secret) = blocking(worker.store.clone(), move |s| {
        let poll_secret = random_token(32)?;
        let new = NewLogin {
            id: format!("lg_{}", random_token(18)?),
            poll_secret_hash: Some(sha256(poll_secret.as_bytes())),
            user_code: user_code()?,
            ttl_ms: ttl.as_millis() as i64,
            machine: Some(machine),
            hostname,
            form_token: random_token(24)?,
        };
        Ok((s.start_login(new)?, poll_secret))
    })
    .await?;
    let uri = format!(
        "{base}/sso/key/generate?source=litellm-cli&key={}",
        login.id
    );
    let complete = format!("{uri}&user_code={}", login.user_code);
    Ok(Answer::JsonNoStore(
        StatusCode::OK,
        json!({
            "login_id": login.id,
            "poll_secret": poll_secret,
            "user_code": login.user_code,
            "verification_uri": uri,
            "verification_uri_complete": complete,
            "expires_in": ttl.as_secs(),
            "interval": POLL_INTERVAL,
        }),
    ))
}

/// `GET /sso/cli/poll/{id}`: pending, refused, or (once) the key.
pub async fn poll(worker: &Worker, request: &Request, id: &str) -> Outcome {
    let login = load(worker, id).await?;
    if let Some(expected) = &login.poll_secret_hash {
        let presented = request
            .poll_secret
            .as_deref()
            .ok_or(ProxyError::PollSecretRequired)?;
        if !same_secret(expected, &sha256(presented.as_bytes())) {
            return Err(ProxyError::PollSecretRequired);
        }
    }
    check_fresh(&login)?;
    match login.state {
        LoginState::Pending | LoginState::AwaitingApproval { .. } => {
            return Ok(Answer::JsonNoStore(
                StatusCode::OK,
                json!({"status": "pending"}),
            ));
        }
        LoginState::Refused { reason } => return Err(ProxyError::LoginRefused(reason)),
        LoginState::Issued { .. } => return Err(ProxyError::LoginExpired),
        LoginState::Approved { .. } => {}
    }
    let id = login.id.clone();
    let key_ttl = worker.settings.login.key_ttl.as_millis() as i64;
    let machine = anonymous_machine(request);
    let issued = blocking(worker.store.clone(), move |s| {
        Ok(s.issue_login_key(&id, key_ttl, &machine)?)
    })
    .await?;
    match issued {
        Issue::Issued { key, secret, user } => Ok(Answer::JsonNoStore(
            StatusCode::OK,
            json!({
                "status": "ready",
                "key": secret,
                "key_id": key.id,
                "user_id": user.user_id,
                "user_email": user.user_email,
                "user_role": user.user_role.as_str(),
                "expires_at": rfc3339_opt(key.expires_at),
                "team_id": null,
                "teams": user.teams,
            }),
        )),
        // Another poll took the key first.
        Issue::NotApproved(LoginState::Refused { reason }) => Err(ProxyError::LoginRefused(reason)),
        Issue::NotApproved(_) => Err(ProxyError::LoginExpired),
    }
}

/// `GET /sso/cli/whoami`: who the presented key belongs to.
pub async fn whoami(worker: &Worker, key: Rc<CachedKey>) -> Outcome {
    let key_id = key.view.key_id;
    let user_id = key.view.user_id.clone();
    let (record, user) = blocking(worker.store.clone(), move |s| {
        let (record, _) = s.find_key(&key_id.to_string())?;
        let user = match &user_id {
            Some(user_id) => match s.get_user(user_id) {
                Ok(found) => Some(found),
                Err(StoreError::NotFound(_)) => None,
                Err(error) => return Err(error.into()),
            },
            None => None,
        };
        Ok((record, user))
    })
    .await?;
    let view = &key.view;
    // An empty list means every model, as in LiteLLM's key records.
    let models = allowed_models(view).unwrap_or_default();
    let (max_budget, spend) = match &user {
        Some((user, spend)) => (user.max_budget.map(|b| b.dollars), spend.dollars()),
        None => (view.max_budget.map(|b| b.dollars), view.spend.dollars()),
    };
    let user = user.map(|(user, _)| user);
    Ok(Answer::JsonNoStore(
        StatusCode::OK,
        json!({
            "user_id": record.user_id,
            "user_email": user.as_ref().and_then(|u| u.user_email.clone()),
            "user_role": user.as_ref().map(|u| u.user_role.as_str()),
            "key_id": record.id,
            "expires_at": record.expires_at.map(rfc3339),
            "models": models,
            "max_budget": max_budget,
            "spend": spend,
        }),
    ))
}

/// `GET /sso/cli/whoami` with the master key (`MANAGEMENT_TOKEN`): no user,
/// no key record, every permission.
pub fn whoami_master() -> Answer {
    Answer::JsonNoStore(
        StatusCode::OK,
        json!({
            "master_key": true,
            "user_id": null,
            "user_email": null,
            "user_role": "proxy_admin",
            "key_id": null,
            "expires_at": null,
            "models": [],
            "max_budget": null,
            "spend": null,
        }),
    )
}

/// `POST /sso/cli/logout`: deletes the presented key, if a login issued it.
pub async fn logout(worker: &Worker, request: &Request, key: Rc<CachedKey>) -> Outcome {
    let key_id = key.view.key_id;
    let actor = match &key.view.user_id {
        Some(user_id) => format!("user:{user_id}"),
        None => format!("key:{key_id}"),
    };
    blocking(worker.store.clone(), move |s| {
        let (record, _) = s.find_key(&key_id.to_string())?;
        if !is_login_key(&record.metadata) {
            return Err(ProxyError::NotALoginKey);
        }
        s.delete_keys(&[key_id])?;
        Ok(())
    })
    .await?;
    audit(worker, request, &actor, 200, "logout").await;
    Ok(Answer::JsonNoStore(
        StatusCode::OK,
        json!({"status": "logged_out", "key_id": key_id}),
    ))
}
