//! The pages a browser sees: `GET /sso/key/generate` (the sign-in form, or
//! a redirect to the provider), `POST /sso/login` (the password form),
//! `GET /sso/callback` (back from the provider) and `POST /sso/cli/approve`.
//! Each is bound to the browser that opened the login (its cookie) and
//! carries the login's form token.

use http::StatusCode;

use super::oidc::{self, OidcError, Pending};
use super::{
    Answer, COOKIE, MAX_WRONG_PASSWORDS, Outcome, Request, audit, base_url, check_fresh, load,
    pages, random_token, user_code,
};
use crate::api::{blocking, query_pairs, query_value};
use crate::error::ProxyError;
use crate::store::crypto::{same_secret, sha256};
use crate::store::password;
use crate::store::{
    Login, LoginState, MAX_LOGIN_ID, NewLogin, NewUser, OidcRequest, StoreError, UserRole, Via,
};
use crate::worker::Worker;

/// `GET /sso/key/generate?source=litellm-cli&key=<login_id>[&user_code=]`.
pub async fn open(worker: &Worker, request: &Request) -> Outcome {
    let query = query_pairs(request.query.as_bytes());
    let id = query_value(&query, "key")
        .filter(|k| !k.is_empty())
        .ok_or(ProxyError::LoginNotFound)?
        .to_string();
    let login = match load(worker, &id).await {
        Err(ProxyError::LoginNotFound) if is_legacy_id(worker, &id) => {
            start_legacy(worker, id).await?
        }
        other => other?,
    };
    check_fresh(&login)?;
    if let Some(code) = query_value(&query, "user_code")
        && !code.trim().eq_ignore_ascii_case(&login.user_code)
    {
        return Err(ProxyError::UserCodeMismatch);
    }
    let browser = match request.cookie.as_deref().filter(|c| is_cookie(c)) {
        Some(cookie) => cookie.to_string(),
        None => random_token(32)?,
    };
    let base = base_url(worker, request)?;
    let set_cookie = set_cookie(&browser, &base, worker.settings.login.login_ttl.as_secs());
    let browser_hash = sha256(browser.as_bytes());
    match &login.state {
        LoginState::Pending => {}
        LoginState::AwaitingApproval { user_id, .. } => {
            check_browser(&login, Some(&browser))?;
            let email = user_email(worker, user_id).await?;
            let html = pages::approve(&login.id, &login.form_token, &login.user_code, &email);
            return Ok(page(StatusCode::OK, html, Some(set_cookie)));
        }
        other => return settled(worker, other).await,
    }
    let Some(settings) = worker.settings.login.oidc.clone() else {
        let id = login.id.clone();
        let login = blocking(worker.store.clone(), move |s| {
            Ok(s.bind_login_browser(&id, browser_hash, None)?)
        })
        .await?;
        let html = pages::sign_in(&login.id, &login.form_token, &login.user_code, "", None);
        return Ok(page(StatusCode::OK, html, Some(set_cookie)));
    };
    let redirect_uri = format!("{base}/sso/callback");
    let id = login.id.clone();
    let location = blocking(worker.store.clone(), move |s| {
        let provider = oidc::discover(&settings).map_err(provider_failed)?;
        let pending = Pending::new()?;
        let url = oidc::authorization_url(&provider, &settings, &redirect_uri, &pending);
        let request = OidcRequest {
            state: pending.state,
            nonce: pending.nonce,
            code_verifier: pending.code_verifier,
        };
        s.bind_login_browser(&id, browser_hash, Some(request))?;
        Ok(url)
    })
    .await?;
    Ok(Answer::Redirect {
        location,
        cookie: Some(set_cookie),
    })
}

/// `POST /sso/login` (`login_id`, `csrf`, `email`, `password`).
pub async fn sign_in(worker: &Worker, request: &Request) -> Outcome {
    if worker.settings.login.oidc.is_some() {
        // With a provider, nobody signs in with a password here.
        return Err(ProxyError::NotFound);
    }
    let form = query_pairs(&request.body);
    let login = form_login(worker, request, &form).await?;
    match &login.state {
        LoginState::Pending => {}
        other => return settled(worker, other).await,
    }
    let email = query_value(&form, "email").unwrap_or("").trim().to_string();
    let given = query_value(&form, "password").unwrap_or("").to_string();
    let id = login.id.clone();
    let checked = blocking(worker.store.clone(), move |s| {
        let user = match email.is_empty() {
            true => None,
            false => s.find_user_by_email(&email)?,
        };
        // Checked even without a user, so that the answer takes as long.
        let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
        let matches = password::verify_blocking(hash, &given);
        if let Some(user) = user.as_ref().filter(|_| matches) {
            let approved = LoginState::Approved {
                user_id: user.user_id.clone(),
                via: Via::Password,
            };
            let login = s.set_login_state(&id, |state| *state == LoginState::Pending, approved)?;
            return Ok((login, user.user_email.clone(), email));
        }
        let login = s.count_failed_password(&id, MAX_WRONG_PASSWORDS)?;
        Ok((login, None, email))
    })
    .await?;
    match checked {
        (login, Some(user_email), _) => {
            let LoginState::Approved { user_id, .. } = &login.state else {
                return settled(worker, &login.state).await;
            };
            audit(worker, request, &format!("user:{user_id}"), 200, "login").await;
            Ok(page(StatusCode::OK, pages::success(&user_email), None))
        }
        (login, None, email) => {
            audit(worker, request, "unauthenticated", 401, "wrong_password").await;
            if let LoginState::Refused { reason } = login.state {
                audit(worker, request, "unauthenticated", 403, "login_refused").await;
                return Err(ProxyError::LoginRefused(reason));
            }
            let left = MAX_WRONG_PASSWORDS.saturating_sub(login.failed_passwords);
            let message = format!(
                "Wrong email or password. {left} {} left.",
                if left == 1 { "try" } else { "tries" }
            );
            let html = pages::sign_in(
                &login.id,
                &login.form_token,
                &login.user_code,
                &email,
                Some(&message),
            );
            Ok(page(StatusCode::UNAUTHORIZED, html, None))
        }
    }
}

/// `GET /sso/callback?code&state` (or `?error=` when the provider refused).
pub async fn callback(worker: &Worker, request: &Request) -> Outcome {
    let Some(settings) = worker.settings.login.oidc.clone() else {
        return Err(ProxyError::NotFound);
    };
    let query = query_pairs(request.query.as_bytes());
    let state = query_value(&query, "state").unwrap_or("").to_string();
    let found = blocking(worker.store.clone(), move |s| {
        Ok(match state.is_empty() {
            true => None,
            false => s.find_login_by_oidc_state(&state)?,
        })
    })
    .await?;
    let login = found.ok_or(ProxyError::LoginNotFound)?;
    check_browser(&login, request.cookie.as_deref())?;
    check_fresh(&login)?;
    match &login.state {
        LoginState::Pending => {}
        other => return settled(worker, other).await,
    }
    if let Some(error) = query_value(&query, "error") {
        let reason = format!("the identity provider answered {error:?}");
        return refuse(worker, request, &login, reason).await;
    }
    let code = query_value(&query, "code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ProxyError::IdentityProvider("its callback carried no code".into()))?
        .to_string();
    let redirect_uri = format!("{}/sso/callback", base_url(worker, request)?);
    let pending = login.oidc.clone().map(|o| Pending {
        state: o.state,
        nonce: o.nonce,
        code_verifier: o.code_verifier,
    });
    let pending = pending.ok_or(ProxyError::LoginNotFound)?;
    let identity = blocking(worker.store.clone(), move |_| {
        let provider = oidc::discover(&settings).map_err(provider_failed)?;
        Ok(oidc::exchange_code(
            &provider,
            &settings,
            &redirect_uri,
            &code,
            &pending,
        ))
    })
    .await?;
    let identity = match identity {
        Ok(identity) => identity,
        Err(error @ OidcError::InvalidToken(_)) => {
            return refuse(worker, request, &login, error.to_string()).await;
        }
        Err(error) => return Err(provider_failed(error)),
    };
    let Some(email) = identity.email.filter(|e| !e.trim().is_empty()) else {
        let reason = "the identity provider gave no email address".to_string();
        return refuse(worker, request, &login, reason).await;
    };
    if !identity.email_verified {
        let reason = format!("the identity provider has not verified the email {email}");
        return refuse(worker, request, &login, reason).await;
    }
    let auto_create = worker.settings.login.auto_create_users;
    let lookup = email.clone();
    let name = identity.name;
    let user = blocking(worker.store.clone(), move |s| {
        if let Some(user) = s.find_user_by_email(&lookup)? {
            return Ok(Some(user));
        }
        if !auto_create {
            return Ok(None);
        }
        let new = NewUser {
            user_id: None,
            user_email: Some(lookup),
            user_role: UserRole::InternalUser,
            user_alias: name,
            teams: Vec::new(),
            max_budget: None,
            models: Vec::new(),
            metadata: String::new(),
            password_hash: None,
            limits: Default::default(),
        };
        Ok(Some(s.create_user(new)?))
    })
    .await?;
    let Some(user) = user else {
        let reason =
            format!("No account for {email} on this gateway; ask an administrator to create one");
        return refuse(worker, request, &login, reason).await;
    };
    let id = login.id.clone();
    let awaiting = LoginState::AwaitingApproval {
        user_id: user.user_id.clone(),
        via: Via::Oidc,
    };
    let login = blocking(worker.store.clone(), move |s| {
        Ok(s.set_login_state(&id, |state| *state == LoginState::Pending, awaiting)?)
    })
    .await?;
    if !matches!(login.state, LoginState::AwaitingApproval { .. }) {
        return settled(worker, &login.state).await;
    }
    let shown = user.user_email.unwrap_or(email);
    let html = pages::approve(&login.id, &login.form_token, &login.user_code, &shown);
    Ok(page(StatusCode::OK, html, None))
}

/// `POST /sso/cli/approve` (`login_id`, `csrf`).
pub async fn approve(worker: &Worker, request: &Request) -> Outcome {
    let form = query_pairs(&request.body);
    let login = form_login(worker, request, &form).await?;
    let LoginState::AwaitingApproval { user_id, via } = login.state.clone() else {
        return match login.state {
            LoginState::Pending => Err(ProxyError::LoginFormInvalid),
            other => settled(worker, &other).await,
        };
    };
    let id = login.id.clone();
    let approved = LoginState::Approved {
        user_id: user_id.clone(),
        via,
    };
    let login = blocking(worker.store.clone(), move |s| {
        Ok(s.set_login_state(
            &id,
            |state| matches!(state, LoginState::AwaitingApproval { .. }),
            approved,
        )?)
    })
    .await?;
    if !matches!(login.state, LoginState::Approved { .. }) {
        return settled(worker, &login.state).await;
    }
    audit(worker, request, &format!("user:{user_id}"), 200, "login").await;
    let email = user_email(worker, &user_id).await?;
    Ok(page(StatusCode::OK, pages::success(&email), None))
}

/// The login a form names, checked: fresh, this browser's, this form's.
async fn form_login(
    worker: &Worker,
    request: &Request,
    form: &[(String, String)],
) -> Result<Login, ProxyError> {
    let id = query_value(form, "login_id").ok_or(ProxyError::LoginNotFound)?;
    let login = load(worker, id).await?;
    check_browser(&login, request.cookie.as_deref())?;
    check_fresh(&login)?;
    let csrf = query_value(form, "csrf").unwrap_or("");
    if !same_secret(login.form_token.as_bytes(), csrf.as_bytes()) {
        return Err(ProxyError::LoginFormInvalid);
    }
    Ok(login)
}

/// The page for a login that is past signing in: approved, refused, spent.
async fn settled(worker: &Worker, state: &LoginState) -> Outcome {
    match state {
        LoginState::Approved { user_id, .. } => {
            let email = user_email(worker, user_id).await?;
            Ok(page(StatusCode::OK, pages::success(&email), None))
        }
        LoginState::Refused { reason } => Err(ProxyError::LoginRefused(reason.clone())),
        LoginState::Issued { .. } => Err(ProxyError::LoginExpired),
        LoginState::Pending | LoginState::AwaitingApproval { .. } => {
            Err(ProxyError::LoginFormInvalid)
        }
    }
}

/// Refuses the login (its poll answers 403 `login_refused` with `reason`).
async fn refuse(worker: &Worker, request: &Request, login: &Login, reason: String) -> Outcome {
    let id = login.id.clone();
    let refused = LoginState::Refused {
        reason: reason.clone(),
    };
    blocking(worker.store.clone(), move |s| {
        Ok(s.set_login_state(
            &id,
            |state| {
                matches!(
                    state,
                    LoginState::Pending | LoginState::AwaitingApproval { .. }
                )
            },
            refused,
        )?)
    })
    .await?;
    audit(worker, request, "unauthenticated", 403, "login_refused").await;
    Err(ProxyError::LoginRefused(reason))
}

fn check_browser(login: &Login, cookie: Option<&str>) -> Result<(), ProxyError> {
    match (&login.browser_hash, cookie) {
        (Some(expected), Some(cookie)) if same_secret(expected, &sha256(cookie.as_bytes())) => {
            Ok(())
        }
        _ => Err(ProxyError::LoginBrowserMismatch),
    }
}

async fn user_email(worker: &Worker, user_id: &str) -> Result<String, ProxyError> {
    let user_id = user_id.to_string();
    blocking(worker.store.clone(), move |s| {
        let (user, _) = s.get_user(&user_id)?;
        Ok(user.user_email.unwrap_or(user.user_id))
    })
    .await
}

/// An id LiteLLM's older CLI made up (`sk-<uuid>`): 8 to 200 visible ASCII
/// characters, never one of ours, and only while that flow is served.
fn is_legacy_id(worker: &Worker, id: &str) -> bool {
    worker.settings.login.legacy_flow
        && (8..=MAX_LOGIN_ID).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_graphic())
        && !id.starts_with("lg_")
}

/// Starts a login of the older flow under the id the CLI made up.
async fn start_legacy(worker: &Worker, id: String) -> Result<Login, ProxyError> {
    let ttl = worker.settings.login.login_ttl.as_millis() as i64;
    let started = blocking(worker.store.clone(), move |s| {
        let new = NewLogin {
            id: id.clone(),
            poll_secret_hash: None,
            user_code: user_code()?,
            ttl_ms: ttl,
            machine: None,
            hostname: None,
            form_token: random_token(24)?,
        };
        match s.start_login(new) {
            // Opened twice at once: the other request made it.
            Err(StoreError::Taken(..)) => s.get_login(&id)?.ok_or(ProxyError::LoginNotFound),
            other => Ok(other?),
        }
    })
    .await?;
    Ok(started)
}

/// A cookie value this server could have set.
fn is_cookie(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn set_cookie(value: &str, base_url: &str, max_age: u64) -> String {
    let secure = if base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path=/sso; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

fn page(status: StatusCode, html: String, cookie: Option<String>) -> Answer {
    Answer::Page {
        status,
        html,
        cookie,
    }
}

fn provider_failed(error: OidcError) -> ProxyError {
    ProxyError::IdentityProvider(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_secure_behind_https() {
        let plain = set_cookie("v", "http://proxy", 300);
        assert_eq!(
            plain,
            "llm_proxy_login=v; Path=/sso; Max-Age=300; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie("v", "https://proxy", 300).ends_with("; Secure"));
        assert!(is_cookie(&"a-_B".repeat(11)[..43]));
        assert!(!is_cookie("short"));
    }
}
