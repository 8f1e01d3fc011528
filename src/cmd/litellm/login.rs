//! `login`, `logout`, `whoami`: a key of one's own through the browser
//! sign-in of docs/login.md, kept in the login file ([`login_file`]).
//!
//! `login` asks the server to start a sign-in (`POST /sso/cli/start`), shows
//! the URL and the code, opens the browser, then polls
//! `GET /sso/cli/poll/{id}` until the key is ready, the sign-in is refused,
//! or time is up. What it says along the way goes to stderr; stdout gets
//! only the outcome, as for every other command.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use ureq::http::Method;

use super::login_file::{self, StoredLogin};
use super::{Defaults, LOGIN_FILE_URL, URL_ENV, browser, connect, env_var, first_set};
use crate::cli::litellm::{Format, LiteLlmOptions, LoginArgs, LogoutArgs, WhoamiArgs};
use crate::cmd::output::{any_time, cell, field_table, pretty};
use crate::http_client::{Answer, Client, ClientError, Service, encode, error_code, error_message};

const START_PATH: &str = "/sso/cli/start";
const LOGOUT_PATH: &str = "/sso/cli/logout";
const WHOAMI_PATH: &str = "/sso/cli/whoami";
/// The poll secret's header, named as LiteLLM's CLI names it.
const POLL_SECRET_HEADER: &str = "x-litellm-cli-poll-secret";
/// First pause before a poll; each next one is [`BACKOFF`] times longer, up
/// to the server's `interval` (or [`DEFAULT_INTERVAL`]).
const FIRST_WAIT: Duration = Duration::from_millis(500);
const BACKOFF: f64 = 1.5;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for a sign-in, whatever --timeout says (no login lasts a day).
const LONGEST_WAIT: Duration = Duration::from_secs(86_400);
/// Time allowed for one exchange of the sign-in, so that a stuck server
/// cannot hold the CLI long past its deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// login
// ---------------------------------------------------------------------------

pub(super) fn login(args: &LoginArgs, defaults: &Defaults) -> Result<String, ClientError> {
    let path = login_path()?;
    let earlier = login_file::load(&path).ok().flatten();
    let (url_source, base_url) = login_url(&args.options, defaults, earlier.as_ref());
    let client = Client::new(service(url_source, defaults), &base_url, None)?
        .with_debug(args.options.debug)
        .with_timeout(REQUEST_TIMEOUT);

    let body = json!({"machine_id": machine_id(), "hostname": hostname()});
    let answer = client.fetch(Method::POST, START_PATH, &[], Some(&body))?;
    if !answer.status.is_success() {
        return Err(refusal(&client, &answer, defaults));
    }
    let started = Started::read(client.json_of(&answer)?)?;
    note(&format!(
        "Open this URL in a browser to sign in:\n\n    {}\n",
        started.url
    ));
    if let Some(code) = &started.user_code {
        note(&format!("Confirm this code in the browser: {code}"));
    }
    if !args.no_browser {
        match browser::open(&started.url, &env_var) {
            Ok(()) => note("Opened a browser."),
            Err(why) => note(&format!(
                "Did not open a browser ({why}): open the URL yourself."
            )),
        }
    }
    let limit = started
        .expires_in
        .map_or(args.timeout, |expires| expires.min(args.timeout))
        .min(LONGEST_WAIT);
    note(&format!(
        "Waiting for the sign-in (up to {})…",
        humantime::format_duration(limit)
    ));

    let ready = poll(&client, &started, limit, defaults)?;
    let login = stored(&ready, client.base_url())?;
    login_file::save(&path, &login).map_err(|e| {
        ClientError::Failed(format!(
            "signed in, but cannot write the login file {} ({e})",
            path.display()
        ))
    })?;
    if let Some(earlier) = earlier.filter(|earlier| !earlier.is_for(&login.base_url)) {
        note(&format!(
            "This login replaces the one for {}.",
            earlier.base_url
        ));
    }
    Ok(match args.options.format {
        Some(Format::Json) => pretty(&summary(&login, &path)),
        _ => format!(
            "Logged in as {} ({}) to {}; the key expires {}.\n",
            login
                .user_email
                .as_deref()
                .or(login.user_id.as_deref())
                .unwrap_or("an unnamed user"),
            login.user_role.as_deref().unwrap_or("no role"),
            login.base_url,
            login.expires_at.as_deref().unwrap_or("never"),
        ),
    })
}

/// The server to sign in to: the flag, the environment, the server of the
/// earlier login (to renew it), or the program's default.
fn login_url(
    options: &LiteLlmOptions,
    defaults: &Defaults,
    earlier: Option<&StoredLogin>,
) -> (&'static str, String) {
    if let Some(url) = &options.base_url {
        return ("--base-url", url.clone());
    }
    if let Some(found) = first_set(&env_var, URL_ENV) {
        return found;
    }
    match earlier {
        Some(login) => (LOGIN_FILE_URL, login.base_url.clone()),
        None => ("--base-url", defaults.base_url.to_string()),
    }
}

/// The answer to `POST /sso/cli/start`.
#[derive(Debug)]
struct Started {
    login_id: String,
    poll_secret: Option<String>,
    user_code: Option<String>,
    /// `verification_uri_complete` (with the code), else `verification_uri`.
    url: String,
    expires_in: Option<Duration>,
    interval: Option<Duration>,
}

impl Started {
    fn read(answer: Option<Value>) -> Result<Started, ClientError> {
        let answer = answer.unwrap_or(Value::Null);
        let text = |field: &str| {
            answer[field]
                .as_str()
                .filter(|value| !value.is_empty())
                .map(String::from)
        };
        let seconds = |field: &str| answer[field].as_f64().and_then(positive_seconds);
        let url = text("verification_uri_complete").or_else(|| text("verification_uri"));
        match (text("login_id"), url) {
            (Some(login_id), Some(url)) => Ok(Started {
                login_id,
                poll_secret: text("poll_secret"),
                user_code: text("user_code"),
                url,
                expires_in: seconds("expires_in"),
                interval: seconds("interval"),
            }),
            _ => Err(unexpected(START_PATH, &answer)),
        }
    }
}

fn positive_seconds(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// Polls until the key is ready (its answer), the server says no, or
/// `limit` has passed. Connection errors and a gateway's 502/503/504 are
/// retried until then; if the server was still unreachable at the end, that
/// is the error (exit 2), else the time that ran out (exit 1).
fn poll(
    client: &Client,
    started: &Started,
    limit: Duration,
    defaults: &Defaults,
) -> Result<Value, ClientError> {
    let deadline = Instant::now() + limit;
    let path = format!("/sso/cli/poll/{}", encode(&started.login_id));
    let headers: Vec<(&str, &str)> = started
        .poll_secret
        .as_deref()
        .map(|secret| (POLL_SECRET_HEADER, secret))
        .into_iter()
        .collect();
    let ceiling = started.interval.unwrap_or(DEFAULT_INTERVAL).max(FIRST_WAIT);
    let mut wait = FIRST_WAIT;
    let mut unreachable = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(unreachable.unwrap_or_else(|| {
                ClientError::Failed(format!(
                    "login timed out: nobody signed in within {}",
                    humantime::format_duration(limit)
                ))
            }));
        }
        std::thread::sleep(wait.min(left));
        wait = wait.mul_f64(BACKOFF).min(ceiling);
        let answer = match client.fetch(Method::GET, &path, &headers, None) {
            Ok(answer) => answer,
            Err(error @ ClientError::Unreachable { .. }) => {
                unreachable = Some(error);
                continue;
            }
            Err(error) => return Err(error),
        };
        unreachable = None;
        match answer.status.as_u16() {
            200..=299 => {
                let body = client.json_of(&answer)?.unwrap_or(Value::Null);
                match body["status"].as_str() {
                    Some("pending") => continue,
                    Some("ready") => return Ok(body),
                    _ => return Err(unexpected(&path, &body)),
                }
            }
            502..=504 => continue,
            _ => return Err(refusal(client, &answer, defaults)),
        }
    }
}

/// What the sign-in endpoints' error answers mean, in one line each.
fn refusal(client: &Client, answer: &Answer, defaults: &Defaults) -> ClientError {
    let message = error_message(&answer.body).unwrap_or_default();
    let url = client.base_url();
    let program = defaults.program;
    match (answer.status.as_u16(), error_code(&answer.body).as_deref()) {
        (404, Some("login_disabled")) => ClientError::Failed(format!(
            "sign-in is not enabled on the server at {url} \
             (its operator sets EXPERIMENTAL_UI_LOGIN=true)"
        )),
        (403, Some("login_refused")) => ClientError::Auth {
            status: Some(403),
            message: format!("sign-in refused: {message}"),
        },
        (410, _) => ClientError::Failed(format!("the login expired; run `{program} login` again")),
        (404, Some("login_not_found")) => ClientError::Failed(format!(
            "the server at {url} does not know this login ({message}); run `{program} login` again"
        )),
        (404, _) => ClientError::Failed(format!(
            "the server at {url} does not offer sign-in (404: {message}): \
             is it a recent `llm-proxy server`?"
        )),
        // No key is involved yet: the usual advice about --api-key would mislead.
        (status @ (401 | 403), _) => ClientError::Auth {
            status: Some(status),
            message: format!(
                "the server at {url} refused the sign-in ({status}: {message}); \
                 run `{program} login` again"
            ),
        },
        _ => match client.json_of(answer) {
            Err(error) => error,
            Ok(_) => ClientError::BadResponse(format!("unexpected answer {}", answer.status)),
        },
    }
}

/// The login file's contents from the `ready` answer.
fn stored(ready: &Value, base_url: &str) -> Result<StoredLogin, ClientError> {
    let text = |field: &str| match &ready[field] {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        other => Some(cell(other)),
    };
    let key = ready["key"]
        .as_str()
        .filter(|key| !key.trim().is_empty())
        .ok_or_else(|| unexpected("the ready login", &json!({"key": null})))?;
    Ok(StoredLogin {
        base_url: base_url.to_string(),
        key: key.to_string(),
        key_id: text("key_id"),
        user_id: text("user_id"),
        user_email: text("user_email"),
        user_role: text("user_role"),
        expires_at: match &ready["expires_at"] {
            Value::Null => None,
            at => Some(any_time(at)),
        },
        logged_in_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    })
}

/// The stored login without its key, for `--format json`.
fn summary(login: &StoredLogin, path: &std::path::Path) -> Value {
    json!({
        "base_url": login.base_url,
        "key_id": login.key_id,
        "user_id": login.user_id,
        "user_email": login.user_email,
        "user_role": login.user_role,
        "expires_at": login.expires_at,
        "logged_in_at": login.logged_in_at,
        "login_file": path.display().to_string(),
    })
}

// ---------------------------------------------------------------------------
// logout
// ---------------------------------------------------------------------------

pub(super) fn logout(args: &LogoutArgs, defaults: &Defaults) -> Result<String, ClientError> {
    let Some(path) = login_file::path(&env_var) else {
        return Ok("not logged in\n".into());
    };
    let removed = |path: &PathBuf| {
        login_file::remove(path).map_err(|e| {
            ClientError::Failed(format!(
                "cannot delete the login file {} ({e})",
                path.display()
            ))
        })
    };
    if args.local_only {
        return Ok(if removed(&path)? {
            format!(
                "Removed the login file {}; its key stays valid on the server until it expires.\n",
                path.display()
            )
        } else {
            "not logged in\n".into()
        });
    }
    let Some(login) = login_file::load(&path)? else {
        return Ok("not logged in\n".into());
    };
    let client = Client::new(
        service(LOGIN_FILE_URL, defaults),
        &login.base_url,
        Some(login.key.clone()),
    )?
    .with_debug(args.options.debug)
    .with_timeout(REQUEST_TIMEOUT);
    let kept = format!(
        "the login is kept; `{} logout --local-only` forgets it without telling the server",
        defaults.program
    );
    let answer = match client.fetch(Method::POST, LOGOUT_PATH, &[], None) {
        Ok(answer) => answer,
        Err(ClientError::Unreachable {
            service,
            url,
            reason,
            ..
        }) => {
            return Err(ClientError::Unreachable {
                service,
                url,
                reason,
                advice: kept,
            });
        }
        Err(error) => return Err(error),
    };
    match answer.status.as_u16() {
        200..=299 => {
            removed(&path)?;
            Ok(format!(
                "Logged out of {}: the key {} was deleted.\n",
                login.base_url,
                login.key_id.as_deref().unwrap_or("of this login")
            ))
        }
        401 => {
            removed(&path)?;
            Ok(format!(
                "The key had already expired or been revoked on {}; removed the stored login.\n",
                login.base_url
            ))
        }
        status => {
            let message = error_message(&answer.body)
                .unwrap_or_else(|| answer.status.to_string())
                .replace(&login.key, "[redacted]");
            let line = format!(
                "the proxy at {} answered {status}: {message}; {kept}",
                login.base_url
            );
            Err(if status == 403 {
                ClientError::Auth {
                    status: Some(status),
                    message: line,
                }
            } else {
                ClientError::Failed(line)
            })
        }
    }
}

// ---------------------------------------------------------------------------
// whoami
// ---------------------------------------------------------------------------

pub(super) fn whoami(args: &WhoamiArgs, defaults: &Defaults) -> Result<String, ClientError> {
    let options = &args.options;
    let connection = connect(options, defaults, &env_var, &super::stored_login, false)?;
    if !connection.client.has_token() {
        let program = defaults.program;
        let url = connection.client.base_url();
        return Err(ClientError::Auth {
            status: None,
            message: match &connection.login_elsewhere {
                Some(elsewhere) => format!(
                    "not logged in to {url} (the stored login is for {elsewhere}): \
                     run `{program} login --base-url {url}`"
                ),
                None => format!("not logged in: run `{program} login`"),
            },
        });
    }
    let answer = connection
        .client
        .get(WHOAMI_PATH)
        .map_err(|error| connection.explain(error, defaults))?;
    if options.format == Some(Format::Json) {
        return Ok(pretty(&answer));
    }
    if answer["master_key"] == Value::Bool(true) {
        return Ok(field_table([
            ("server", connection.client.base_url().to_string()),
            (
                "key",
                "the master key (the server's MANAGEMENT_TOKEN)".into(),
            ),
            ("role", cell(&answer["user_role"])),
            (
                "permissions",
                "all: every management call and every model".into(),
            ),
            ("key expires", "never".into()),
        ]));
    }
    let models = match &answer["models"] {
        Value::Array(models) if models.is_empty() => "all".to_string(),
        other => super::joined(other),
    };
    let rows = [
        ("server", connection.client.base_url().to_string()),
        ("user", cell(&answer["user_id"])),
        ("email", cell(&answer["user_email"])),
        ("role", cell(&answer["user_role"])),
        ("key", cell(&answer["key_id"])),
        (
            "key expires",
            match &answer["expires_at"] {
                Value::Null => "never".to_string(),
                at => any_time(at),
            },
        ),
        ("models", models),
        (
            "spend / budget",
            super::spend_cell(&answer["spend"], &answer["max_budget"]),
        ),
    ];
    Ok(field_table(rows))
}

// ---------------------------------------------------------------------------
// Shared
// ---------------------------------------------------------------------------

fn login_path() -> Result<PathBuf, ClientError> {
    login_file::path(&env_var).ok_or_else(|| {
        ClientError::Failed(
            "no place for the login file: set HOME, XDG_CONFIG_HOME or LLM_PROXY_CONFIG_DIR".into(),
        )
    })
}

fn service(url_flag: &'static str, defaults: &Defaults) -> Service {
    Service {
        name: "the proxy",
        url_flag,
        token_name: "API key",
        token_flag: "--api-key",
        token_env: defaults.key_env,
    }
}

fn unexpected(what: &str, got: &Value) -> ClientError {
    let got: String = got.to_string().chars().take(120).collect();
    ClientError::BadResponse(format!(
        "the proxy sent an unexpected answer to {what} ({got}): does it offer sign-in?"
    ))
}

/// One line of what `login` is doing, on stderr (best effort: a closed
/// stderr must not fail the login).
pub(super) fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
    let _ = stderr.flush();
}

/// An opaque, stable id of this machine and OS user, so that the server can
/// replace the key of an earlier login from the same place: SHA-256 of the
/// machine id (or the host name), the user name and the program family.
fn machine_id() -> String {
    let machine = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
        .or_else(hostname)
        .unwrap_or_default();
    let user = ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|name| env_var(name).filter(|user| !user.is_empty()))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{machine}\n{user}\nllm-proxy").as_bytes(),
    );
    crate::store::crypto::hex(digest.as_ref())
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its whole length, which is
    // the length passed.
    let failed = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0;
    if failed {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_answer_needs_an_id_and_a_url() {
        let started = Started::read(Some(json!({
            "login_id": "lg_1", "poll_secret": "s", "user_code": "WDJB-MJHT",
            "verification_uri": "http://p/a", "verification_uri_complete": "http://p/a?c",
            "expires_in": 300, "interval": 2,
        })))
        .unwrap();
        assert_eq!(started.url, "http://p/a?c");
        assert_eq!(started.expires_in, Some(Duration::from_secs(300)));
        assert_eq!(started.interval, Some(Duration::from_secs(2)));
        let bare = Started::read(Some(
            json!({"login_id": "lg_1", "verification_uri": "http://p/a"}),
        ))
        .unwrap();
        assert_eq!(bare.url, "http://p/a");
        assert_eq!((bare.poll_secret, bare.interval), (None, None));
        assert!(Started::read(Some(json!({"login_id": "lg_1"}))).is_err());
        assert!(Started::read(None).is_err());
    }

    #[test]
    fn ready_answer_becomes_the_login_file() {
        let ready = json!({
            "status": "ready", "key": "sk-new-123456789", "key_id": "k-1", "user_id": "u-1",
            "user_email": "a@b.co", "user_role": "internal_user", "expires_at": 1_900_000_000,
            "team_id": null, "teams": [],
        });
        let login = stored(&ready, "http://p").unwrap();
        assert_eq!(login.key, "sk-new-123456789");
        assert_eq!(login.expires_at.as_deref(), Some("2030-03-17T17:46:40Z"));
        assert_eq!(login.user_role.as_deref(), Some("internal_user"));
        assert!(stored(&json!({"status": "ready"}), "http://p").is_err());
        let summary = summary(&login, std::path::Path::new("/x/login.json"));
        assert!(!summary.to_string().contains("sk-new"), "{summary}");
    }

    #[test]
    fn machine_id_is_stable_and_opaque() {
        let id = machine_id();
        assert_eq!(id, machine_id());
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
