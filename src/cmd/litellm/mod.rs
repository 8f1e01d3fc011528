//! The LiteLLM-style client commands: `models`, `credentials`, `keys`,
//! `users`, `teams`, `chat`, `http`, and `login`, `logout`, `whoami`, run by
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
//! credential, key, user or team (a 404 from the server).

mod browser;
mod chat;
mod connection;
mod credentials;
mod http;
mod keys;
mod login;
pub mod login_file;
mod models;
mod teams;
mod users;

use std::time::Duration;

use serde_json::{Map, Value};
use ureq::http::Method;

use super::output::{Layout, field_table, pretty, print};
use crate::cli::litellm::{Format, HttpCommand, LimitArgs, LiteLlmCommand, LiteLlmOptions};
use crate::http_client::ClientError;
pub(crate) use connection::stored_login;
use connection::{connect, env_var, first_set};

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

pub fn run(command: &LiteLlmCommand, defaults: &Defaults) -> anyhow::Result<()> {
    let options = command.options();
    let format = options.format;
    let layout = Layout::detect(options.wide);
    let output = match command {
        LiteLlmCommand::Models(args) => {
            let call = models::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            models::render(&args.command, answer, format, layout)?
        }
        LiteLlmCommand::Credentials(args) => {
            let call = credentials::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            credentials::render(&args.command, answer, format, layout)?
        }
        LiteLlmCommand::Keys(args) => {
            let call = keys::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            keys::render(&args.command, answer, format, layout)?
        }
        LiteLlmCommand::Users(args) => {
            let call = users::plan(&args.command, &mut users::read_password_from_stdin)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            users::render(&args.command, answer, format, layout)?
        }
        LiteLlmCommand::Teams(args) => {
            let call = teams::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Short)?;
            teams::render(&args.command, answer, format, layout)?
        }
        LiteLlmCommand::Chat(args) => {
            let call = chat::plan(&args.command)?;
            let answer = send(&call, options, defaults, Timeout::Long)?;
            chat::render(answer, format)?
        }
        LiteLlmCommand::Http(args) => {
            let HttpCommand::Request(request) = &args.command;
            let plan = http::plan(request)?;
            let connection = connect(options, defaults, &env_var, &stored_login, false)?;
            let client = connection.client.with_timeout(LONG_TIMEOUT);
            http::run(&client, &plan)?
        }
        LiteLlmCommand::Login(args) => login::login(args, defaults)?,
        LiteLlmCommand::Logout(args) => login::logout(args, defaults)?,
        LiteLlmCommand::Whoami(args) => login::whoami(args, defaults)?,
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
    options: &LiteLlmOptions,
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

/// Adds the limit flags given to a key's or a user's body.
fn add_limits(body: &mut Value, limits: &LimitArgs) -> Result<(), ClientError> {
    let counts = [
        ("rpm_limit", limits.rpm_limit),
        ("tpm_limit", limits.tpm_limit),
        ("max_parallel_requests", limits.max_parallel_requests),
    ];
    for (field, value) in counts {
        if let Some(value) = value {
            body[field] = value.into();
        }
    }
    if let Some(window) = &limits.budget_duration {
        if crate::store::BudgetWindow::parse(window).is_none() {
            return Err(ClientError::Usage(format!(
                "--budget-duration {window:?}: give a number and s, m, h, d or mo, e.g. 1d or 1mo"
            )));
        }
        body["budget_duration"] = window.trim().into();
    }
    if let Some(soft) = limits.soft_budget {
        body["soft_budget"] = soft.into();
    }
    Ok(())
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

/// The first line of a paged listing, e.g. "Showing 2 of 7 keys (page 1 of 4)";
/// none when there is nothing at all (the table says "No keys.").
fn page_line(shown: usize, total: &Value, page: &Value, pages: &Value, what: &str) -> String {
    if shown == 0 && total.as_u64().is_none_or(|total| total == 0) {
        return String::new();
    }
    let mut line = match total.as_u64() {
        Some(total) => format!("Showing {shown} of {total} {what}"),
        None => format!("Showing {shown} {what}"),
    };
    if let (Some(page), Some(pages)) = (page.as_u64(), pages.as_u64())
        && pages > 0
    {
        line.push_str(&format!(" (page {page} of {pages})"));
    }
    line.push('\n');
    line
}

/// Environments and logins for unit tests of where commands connect.
#[cfg(test)]
pub(crate) mod test_env {
    use super::login_file::StoredLogin;

    /// An environment holding only `pairs`.
    pub fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// A stored login of `key` at `base_url`, with nothing else known.
    pub fn login_at(base_url: &str, key: &str) -> StoredLogin {
        StoredLogin {
            base_url: base_url.into(),
            key: key.into(),
            key_id: None,
            user_id: None,
            user_email: None,
            user_role: None,
            expires_at: None,
            logged_in_at: "2030-01-01T00:00:00Z".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            ""
        );
        assert_eq!(page_line(0, &json!(0), &json!(1), &json!(0), "keys"), "");
        assert_eq!(
            page_line(0, &json!(7), &json!(9), &json!(4), "keys"),
            "Showing 0 of 7 keys (page 9 of 4)\n"
        );
    }
}
