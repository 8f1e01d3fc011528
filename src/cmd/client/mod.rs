//! The LiteLLM-style client commands: `models`, `credentials`, `keys`,
//! `users`, `chat`, `http`, and `login`, `logout`, `whoami`, run by
//! `llm-proxy` and by `dheera_ai-proxy`.
//!
//! Every command runs in three steps:
//!
//! 1. `plan`: the arguments become one request ([`Call`]): every value is
//!    checked here (JSON, `KEY=VALUE`, `role:content`, durations), so that a
//!    mistake is reported on one line, exit 1, before anything is sent;
//! 2. the request is sent with the shared blocking [`Client`];
//! 3. `render`: the answer becomes a table (listings, by default), the
//!    server's JSON (single objects, by default), or text (chat).
//!
//! The API key is `--api-key`, else the environment, else the key of the
//! stored login (`login_file`), which is only ever sent to the server that
//! issued it.
//!
//! Exit statuses: 0 ok, 1 bad arguments or any other failure, 2 server
//! unreachable, 3 no API key or the key was rejected, 4 unknown model,
//! credential, key or user (a 404 from the server).

mod browser;
mod chat;
mod credentials;
mod http;
mod keys;
mod login;
pub mod login_file;
mod models;
mod users;

use std::time::Duration;

use serde_json::{Map, Value};
use ureq::http::Method;

use super::output::{field_table, pretty, print};
use crate::cli::client::{ClientCommand, ClientOptions, Format, HttpCommand};
use crate::client::{Client, ClientError, Service};
use login_file::StoredLogin;

/// What differs between the two programs that run these commands.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// The program's name, for advice such as "run `llm-proxy login`".
    pub program: &'static str,
    /// Base URL when neither `--base-url` nor an environment variable is set.
    pub base_url: &'static str,
    /// The environment variable suggested when no API key was given.
    pub key_env: &'static str,
}

/// `llm-proxy <command>`: the port `llm-proxy server` listens on by default.
pub const LLM_PROXY: Defaults = Defaults {
    program: "llm-proxy",
    base_url: "http://localhost:8080",
    key_env: "LLM_PROXY_API_KEY",
};

/// `dheera_ai-proxy <command>`: the address the seed's examples use.
pub const DHEERA_AI_PROXY: Defaults = Defaults {
    program: "dheera_ai-proxy",
    base_url: "http://localhost:4000",
    key_env: "DHEERA_AI_PROXY_API_KEY",
};

/// Environment variables of the base URL, first found wins.
const URL_ENV: [&str; 2] = ["DHEERA_AI_PROXY_URL", "LLM_PROXY_URL"];
/// Environment variables of the API key, first found wins.
const KEY_ENV: [&str; 2] = ["DHEERA_AI_PROXY_API_KEY", "LLM_PROXY_API_KEY"];

/// Names the source of a base URL that came from the login file.
const LOGIN_FILE_URL: &str = "the base_url of the login file";

/// Time allowed for a chat completion or a free-form request.
const LONG_TIMEOUT: Duration = Duration::from_secs(600);

/// One JSON request, planned from the arguments before anything is sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub method: Method,
    /// Path and query, percent-encoded.
    pub path: String,
    pub body: Option<Value>,
    /// What a 404 answer means, e.g. `model "m-1"`: exit 4 naming it.
    pub subject: Option<String>,
}

impl Call {
    fn get(path: impl Into<String>) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            body: None,
            subject: None,
        }
    }

    fn post(path: impl Into<String>, body: Value) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            body: Some(body),
            subject: None,
        }
    }

    fn about(mut self, subject: String) -> Call {
        self.subject = Some(subject);
        self
    }
}

pub fn run(command: &ClientCommand, defaults: &Defaults) -> anyhow::Result<()> {
    let options = command.options();
    let format = options.format;
    let output = match command {
        ClientCommand::Models(args) => {
            let call = models::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            models::render(&args.command, answer, format)?
        }
        ClientCommand::Credentials(args) => {
            let call = credentials::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            credentials::render(&args.command, answer, format)?
        }
        ClientCommand::Keys(args) => {
            let call = keys::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            keys::render(&args.command, answer, format)?
        }
        ClientCommand::Users(args) => {
            let call = users::plan(&args.command, &mut users::read_password_from_stdin)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            users::render(&args.command, answer, format)?
        }
        ClientCommand::Chat(args) => {
            let call = chat::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Long)?;
            chat::render(answer, format)?
        }
        ClientCommand::Http(args) => {
            let HttpCommand::Request(request) = &args.command;
            let plan = http::plan(request)?;
            let connection = connect(options, defaults, &env_var, &stored_login, false)?;
            let client = connection.client.with_timeout(LONG_TIMEOUT);
            http::run(&client, &plan)?
        }
        ClientCommand::Login(args) => login::login(args, defaults)?,
        ClientCommand::Logout(args) => login::logout(args, defaults)?,
        ClientCommand::Whoami(args) => login::whoami(args, defaults)?,
    };
    print(&output)?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    /// The client's default: management calls.
    Short,
    /// [`LONG_TIMEOUT`]: model calls.
    Long,
}

/// Sends a planned call with the master or virtual key (required); a 404
/// about the call's subject becomes exit 4.
fn send(
    call: &Call,
    options: &ClientOptions,
    defaults: &Defaults,
    timeout: Timeout,
) -> Result<Option<Value>, ClientError> {
    let mut connection = connect(options, defaults, &env_var, &stored_login, true)?;
    if timeout == Timeout::Long {
        connection.client = connection.client.with_timeout(LONG_TIMEOUT);
    }
    connection
        .client
        .call(call.method.clone(), &call.path, call.body.as_ref())
        .map_err(|error| match &call.subject {
            Some(subject) => error.not_found(subject),
            None => connection.explain(error, defaults),
        })
}

// ---------------------------------------------------------------------------
// Where to connect, with which key
// ---------------------------------------------------------------------------

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The login stored in this user's login file, if any.
pub(crate) fn stored_login() -> Result<Option<StoredLogin>, ClientError> {
    match login_file::path(&env_var) {
        Some(path) => login_file::load(&path),
        None => Ok(None),
    }
}

/// The first of `names` set to something other than blanks, and its value.
fn first_set(
    env: &dyn Fn(&str) -> Option<String>,
    names: [&'static str; 2],
) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|name| {
        env(name)
            .filter(|value| !value.trim().is_empty())
            .map(|value| (name, value))
    })
}

/// Where to connect and with which key, decided before any client exists.
#[derive(Debug)]
struct Target {
    /// What set the base URL, for messages: a flag, a variable, the login file.
    url_source: &'static str,
    base_url: String,
    key: Option<String>,
    /// The variable that gave the key, or the one to suggest.
    key_env: &'static str,
    /// The key is the stored login's.
    key_from_login: bool,
    /// The base URL of a stored login that was not used because another
    /// server was named: its key is not sent there.
    login_elsewhere: Option<String>,
}

/// The base URL and key from the flags, then the environment
/// (`DHEERA_AI_PROXY_*` before `LLM_PROXY_*`); without a key from either,
/// the stored login gives the key, and the base URL unless one was given,
/// but only if that names the login's own server; then `defaults`.
fn target(
    options: &ClientOptions,
    defaults: &Defaults,
    env: &dyn Fn(&str) -> Option<String>,
    stored: &dyn Fn() -> Result<Option<StoredLogin>, ClientError>,
) -> Result<Target, ClientError> {
    let given_url = match &options.base_url {
        Some(url) => Some(("--base-url", url.clone())),
        None => first_set(env, URL_ENV),
    };
    let given_key = match &options.api_key {
        Some(key) => Some((defaults.key_env, key.clone())),
        None => first_set(env, KEY_ENV),
    };
    let default_url = || ("--base-url", defaults.base_url.to_string());
    let mut target = Target {
        url_source: "--base-url",
        base_url: String::new(),
        key: None,
        key_env: defaults.key_env,
        key_from_login: false,
        login_elsewhere: None,
    };
    // The login file is read only when it is needed: a damaged one does
    // not stand in the way of a key given by flag or environment.
    let login = match &given_key {
        Some(_) => None,
        None => stored()?,
    };
    let url = match (given_key, login) {
        (Some((key_env, key)), _) => {
            target.key = Some(key);
            target.key_env = key_env;
            given_url.unwrap_or_else(default_url)
        }
        (None, Some(login)) => match given_url {
            Some((_, url)) if !login.is_for(&url) => {
                target.login_elsewhere = Some(login.base_url);
                ("--base-url", url)
            }
            given => {
                target.key = Some(login.key);
                target.key_from_login = true;
                given.unwrap_or((LOGIN_FILE_URL, login.base_url))
            }
        },
        (None, None) => given_url.unwrap_or_else(default_url),
    };
    (target.url_source, target.base_url) = url;
    Ok(target)
}

/// A client, and where its key came from.
#[derive(Debug)]
struct Connection {
    client: Client,
    key_from_login: bool,
    login_elsewhere: Option<String>,
}

impl Connection {
    /// A stored login's key that the server does not know (401) has
    /// expired or was revoked: say how to get a new one. (A 403 is about
    /// what the key may do, and keeps the server's words.)
    fn explain(&self, error: ClientError, defaults: &Defaults) -> ClientError {
        match error {
            ClientError::Auth {
                status: Some(401), ..
            } if self.key_from_login => ClientError::Auth {
                status: Some(401),
                message: format!(
                    "the proxy at {} rejected the key of the stored login (401): \
                     it has expired or was revoked; run `{} login`",
                    self.client.base_url(),
                    defaults.program
                ),
            },
            other => other,
        }
    }
}

/// A client for the proxy and key [`target`] chooses; with `key_required`,
/// a missing API key fails here (exit 3).
fn connect(
    options: &ClientOptions,
    defaults: &Defaults,
    env: &dyn Fn(&str) -> Option<String>,
    stored: &dyn Fn() -> Result<Option<StoredLogin>, ClientError>,
    key_required: bool,
) -> Result<Connection, ClientError> {
    let target = target(options, defaults, env, stored)?;
    let service = Service {
        name: "the proxy",
        url_flag: target.url_source,
        token_name: "API key",
        token_flag: "--api-key",
        token_env: target.key_env,
    };
    let client = Client::new(service, &target.base_url, target.key)?.with_debug(options.debug);
    let client = match (&target.login_elsewhere, key_required) {
        (_, false) => client,
        (None, true) => client.require_token()?,
        (Some(elsewhere), true) => client.require_token().map_err(|_| ClientError::Auth {
            status: None,
            message: format!(
                "no API key: pass --api-key or set {} (the stored login is for {elsewhere}, \
                 and its key is only sent there)",
                target.key_env
            ),
        })?,
    };
    Ok(Connection {
        client,
        key_from_login: target.key_from_login,
        login_elsewhere: target.login_elsewhere,
    })
}

// ---------------------------------------------------------------------------
// Checking arguments
// ---------------------------------------------------------------------------

/// A JSON object given on the command line.
fn json_object(flag: &str, text: &str) -> Result<Map<String, Value>, ClientError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ClientError::Usage(format!(
            "{flag} must be a JSON object, e.g. '{{\"name\": \"value\"}}'"
        ))),
        Err(e) => Err(ClientError::Usage(format!("invalid JSON in {flag}: {e}"))),
    }
}

/// A comma-separated list without empty items; at least one item.
fn list(flag: &str, text: &str) -> Result<Vec<String>, ClientError> {
    let items: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect();
    if items.is_empty() {
        return Err(ClientError::Usage(format!(
            "{flag} needs at least one value, comma-separated"
        )));
    }
    Ok(items)
}

/// `"value"` quoted for messages.
fn quoted(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// An object answer: its JSON (the default), or a field/value table with
/// nested fields flattened (`litellm_params.model`).
fn object(value: Value, format: Option<Format>) -> Result<String, ClientError> {
    match format.unwrap_or(Format::Json) {
        Format::Json => Ok(pretty(&value)),
        Format::Table => {
            let rows = flatten(&value);
            Ok(field_table(
                rows.iter().map(|(k, v)| (k.as_str(), v.clone())),
            ))
        }
    }
}

/// Leaves of a JSON value as `(dotted.path, text)`; arrays of scalars stay
/// one row (`a, b`), empty objects and arrays are `-`.
fn flatten(value: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(fields) if !fields.is_empty() => {
                for (name, value) in fields {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    walk(&path, value, out);
                }
            }
            other => out.push((prefix.to_string(), joined(other))),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// A value as one cell: arrays of scalars joined with ", ", empty as "-".
fn joined(value: &Value) -> String {
    match value {
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Object(fields) if fields.is_empty() => "-".into(),
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => items
            .iter()
            .map(super::output::cell)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(_) | Value::Object(_) => value.to_string(),
        other => super::output::cell(other),
    }
}

/// The server's answer must be an object; `what` names it in the error.
fn expect_object(value: Option<Value>, what: &str) -> Result<Value, ClientError> {
    match value {
        Some(value @ Value::Object(_)) => Ok(value),
        Some(other) => Err(unexpected(what, &other.to_string())),
        None => Err(unexpected(what, "an empty body")),
    }
}

/// `answer[field]` as an array, or an error naming `what`.
fn expect_items<'a>(
    answer: &'a Value,
    field: &str,
    what: &str,
) -> Result<&'a [Value], ClientError> {
    answer[field]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| unexpected(what, &answer.to_string()))
}

fn unexpected(what: &str, got: &str) -> ClientError {
    let got: String = got.chars().take(120).collect();
    ClientError::BadResponse(format!(
        "the proxy sent an unexpected answer for {what} ({got}): is it `llm-proxy server`?"
    ))
}

/// `spend / max_budget` in dollars, e.g. `$1.5 / $100`, or `$1.5 / -`.
fn spend_cell(spend: &Value, budget: &Value) -> String {
    let money = |value: &Value| match value.as_f64() {
        Some(amount) => format!("${amount}"),
        None => "-".into(),
    };
    let spend = match spend {
        Value::Null => "$0".into(),
        other => money(other),
    };
    format!("{spend} / {}", money(budget))
}

/// The first line of a paged listing, e.g. "Showing 2 of 7 keys (page 1 of 4)".
fn page_line(shown: usize, total: &Value, page: &Value, pages: &Value, what: &str) -> String {
    let mut line = match total.as_u64() {
        Some(total) => format!("Showing {shown} of {total} {what}"),
        None => format!("Showing {shown} {what}"),
    };
    if let (Some(page), Some(pages)) = (page.as_u64(), pages.as_u64()) {
        line.push_str(&format!(" (page {page} of {pages})"));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(base_url: Option<&str>, api_key: Option<&str>) -> ClientOptions {
        ClientOptions {
            base_url: base_url.map(String::from),
            api_key: api_key.map(String::from),
            ..ClientOptions::default()
        }
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn no_login() -> Result<Option<StoredLogin>, ClientError> {
        Ok(None)
    }

    fn login_at(url: &str) -> StoredLogin {
        StoredLogin {
            base_url: url.into(),
            key: "sk-stored-login-42".into(),
            key_id: None,
            user_id: None,
            user_email: None,
            user_role: None,
            expires_at: None,
            logged_in_at: "2030-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn flag_beats_dheera_env_beats_llm_proxy_env_beats_default() {
        let both = env(&[
            ("DHEERA_AI_PROXY_URL", "http://dheera"),
            ("LLM_PROXY_URL", "http://llm"),
            ("DHEERA_AI_PROXY_API_KEY", "k-dheera"),
            ("LLM_PROXY_API_KEY", "k-llm"),
        ]);
        let client = connect(
            &options(Some("http://flag"), None),
            &LLM_PROXY,
            &both,
            &no_login,
            true,
        )
        .unwrap()
        .client;
        assert_eq!(client.base_url(), "http://flag");
        let client = connect(&options(None, None), &LLM_PROXY, &both, &no_login, true)
            .unwrap()
            .client;
        assert_eq!(client.base_url(), "http://dheera");
        let llm = env(&[
            ("DHEERA_AI_PROXY_URL", " "),
            ("LLM_PROXY_URL", "http://llm"),
        ]);
        let client = connect(&options(None, Some("k")), &LLM_PROXY, &llm, &no_login, true)
            .unwrap()
            .client;
        assert_eq!(client.base_url(), "http://llm");
        let none = env(&[]);
        let client = connect(
            &options(None, Some("k")),
            &LLM_PROXY,
            &none,
            &no_login,
            true,
        )
        .unwrap()
        .client;
        assert_eq!(client.base_url(), "http://localhost:8080");
        let client = connect(
            &options(None, Some("k")),
            &DHEERA_AI_PROXY,
            &none,
            &no_login,
            true,
        )
        .unwrap()
        .client;
        assert_eq!(client.base_url(), "http://localhost:4000");
    }

    #[test]
    fn missing_key_names_the_variable_of_the_program() {
        let none = env(&[]);
        let error = connect(
            &options(None, None),
            &DHEERA_AI_PROXY,
            &none,
            &no_login,
            true,
        )
        .unwrap_err();
        assert_eq!(error.exit_code(), 3);
        assert_eq!(
            error.to_string(),
            "no API key: pass --api-key or set DHEERA_AI_PROXY_API_KEY"
        );
        let error = connect(&options(None, None), &LLM_PROXY, &none, &no_login, true).unwrap_err();
        assert!(error.to_string().ends_with("set LLM_PROXY_API_KEY"));
        assert!(connect(&options(None, None), &LLM_PROXY, &none, &no_login, false).is_ok());
        let bad = env(&[("LLM_PROXY_URL", "localhost:1")]);
        let error = connect(&options(None, None), &LLM_PROXY, &bad, &no_login, false).unwrap_err();
        assert!(
            error.to_string().starts_with("LLM_PROXY_URL must be"),
            "{error}"
        );
    }

    #[test]
    fn stored_login_only_when_no_key_is_given_and_only_for_its_server() {
        let stored = || Ok(Some(login_at("http://proxy:8080/")));
        let none = env(&[]);
        let run = |options: &ClientOptions, env: &dyn Fn(&str) -> Option<String>| {
            target(options, &LLM_PROXY, env, &stored).unwrap()
        };
        // Nothing given: the login's server and key.
        let t = run(&options(None, None), &none);
        assert_eq!(t.base_url, "http://proxy:8080/");
        assert_eq!(t.url_source, LOGIN_FILE_URL);
        assert_eq!(t.key.as_deref(), Some("sk-stored-login-42"));
        assert!(t.key_from_login);
        // The same server named (without the slash): still its key.
        let t = run(&options(Some("http://proxy:8080"), None), &none);
        assert_eq!(t.key.as_deref(), Some("sk-stored-login-42"));
        let same = env(&[("LLM_PROXY_URL", "http://proxy:8080")]);
        assert!(run(&options(None, None), &same).key_from_login);
        // Another server named: the key is not sent there.
        let t = run(&options(Some("http://elsewhere:8080"), None), &none);
        assert_eq!(t.base_url, "http://elsewhere:8080");
        assert_eq!(t.key, None);
        assert_eq!(t.login_elsewhere.as_deref(), Some("http://proxy:8080/"));
        let other = env(&[("DHEERA_AI_PROXY_URL", "http://elsewhere")]);
        assert_eq!(run(&options(None, None), &other).key, None);
        // A key given by flag or environment wins, with the usual default URL.
        let t = run(&options(None, Some("k-flag")), &none);
        assert_eq!(
            (t.base_url.as_str(), t.key.as_deref()),
            ("http://localhost:8080", Some("k-flag"))
        );
        assert!(!t.key_from_login);
        let keyed = env(&[("LLM_PROXY_API_KEY", "k-env")]);
        let t = run(&options(None, None), &keyed);
        assert_eq!(t.key.as_deref(), Some("k-env"));
        assert_eq!(t.key_env, "LLM_PROXY_API_KEY");
        let damaged = || Err(ClientError::Failed("damaged".into()));
        assert!(target(&options(None, Some("k")), &LLM_PROXY, &none, &damaged).is_ok());
        assert!(target(&options(None, None), &LLM_PROXY, &none, &damaged).is_err());

        let error = connect(
            &options(Some("http://elsewhere"), None),
            &LLM_PROXY,
            &none,
            &stored,
            true,
        )
        .unwrap_err();
        assert_eq!(error.exit_code(), 3);
        assert!(
            error
                .to_string()
                .contains("the stored login is for http://proxy:8080/"),
            "{error}"
        );
        assert!(!error.to_string().contains("sk-stored"), "{error}");
    }

    #[test]
    fn a_rejected_stored_key_says_to_log_in_again() {
        let stored = || Ok(Some(login_at("http://proxy:8080")));
        let connection = connect(
            &options(None, None),
            &DHEERA_AI_PROXY,
            &env(&[]),
            &stored,
            true,
        )
        .unwrap();
        let rejected = |status| ClientError::Auth {
            status: Some(status),
            message: "the proxy rejected the API key".into(),
        };
        let error = connection.explain(rejected(401), &DHEERA_AI_PROXY);
        assert_eq!(error.exit_code(), 3);
        assert!(
            error.to_string().ends_with("run `dheera_ai-proxy login`"),
            "{error}"
        );
        let error = connection.explain(rejected(403), &DHEERA_AI_PROXY);
        assert_eq!(error.to_string(), "the proxy rejected the API key");
    }

    #[test]
    fn json_objects_and_lists() {
        assert_eq!(json_object("--info", r#"{"a": 1}"#).unwrap()["a"], json!(1));
        let error = json_object("--info", "{oops").unwrap_err();
        assert!(error.to_string().starts_with("invalid JSON in --info: "));
        assert!(json_object("--info", "[1]").is_err());
        assert_eq!(list("--models", " a, b ,,c").unwrap(), ["a", "b", "c"]);
        assert!(list("--models", " , ").is_err());
    }

    #[test]
    fn flattened_rows() {
        let value = json!({
            "model_name": "gpt-4", "litellm_params": {"model": "gpt-4", "rpm": 10},
            "models": ["a", "b"], "teams": [], "meta": {}, "nested": [{"x": 1}],
        });
        let rows = flatten(&value);
        let find = |k: &str| rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(find("litellm_params.model"), Some("gpt-4"));
        assert_eq!(find("litellm_params.rpm"), Some("10"));
        assert_eq!(find("models"), Some("a, b"));
        assert_eq!(find("teams"), Some("-"));
        assert_eq!(find("meta"), Some("-"));
        assert_eq!(find("nested"), Some(r#"[{"x":1}]"#));
    }

    #[test]
    fn cells() {
        assert_eq!(spend_cell(&json!(1.5), &json!(100)), "$1.5 / $100");
        assert_eq!(spend_cell(&Value::Null, &Value::Null), "$0 / -");
        assert_eq!(
            page_line(2, &json!(7), &json!(1), &json!(4), "keys"),
            "Showing 2 of 7 keys (page 1 of 4)\n"
        );
        assert_eq!(
            page_line(0, &Value::Null, &Value::Null, &Value::Null, "users"),
            "Showing 0 users\n"
        );
    }
}
