//! Where a client command connects, and with which API key: the flags,
//! then the environment, then the stored login, whose key is only ever sent
//! to the server that issued it.

use super::login_file::{self, StoredLogin};
use super::{Defaults, KEY_ENV, LOGIN_FILE_URL, URL_ENV};
use crate::cli::litellm::LiteLlmOptions;
use crate::http_client::{Client, ClientError, Service};

pub(super) fn env_var(name: &str) -> Option<String> {
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
pub(super) fn first_set(
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
/// (No `Debug`: it holds the key.)
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
    options: &LiteLlmOptions,
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
pub(super) struct Connection {
    pub client: Client,
    key_from_login: bool,
    pub login_elsewhere: Option<String>,
}

impl Connection {
    /// A stored login's key that the server does not know (401) has
    /// expired or was revoked: say how to get a new one. (A 403 is about
    /// what the key may do, and keeps the server's words.)
    pub fn explain(&self, error: ClientError, defaults: &Defaults) -> ClientError {
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
pub(super) fn connect(
    options: &LiteLlmOptions,
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

#[cfg(test)]
mod tests {
    use super::super::{DHEERA_AI_PROXY, LLM_PROXY};
    use super::*;
    use crate::cmd::litellm::test_env::env;

    fn options(base_url: Option<&str>, api_key: Option<&str>) -> LiteLlmOptions {
        LiteLlmOptions {
            base_url: base_url.map(String::from),
            api_key: api_key.map(String::from),
            ..LiteLlmOptions::default()
        }
    }

    fn no_login() -> Result<Option<StoredLogin>, ClientError> {
        Ok(None)
    }

    fn login_at(url: &str) -> StoredLogin {
        crate::cmd::litellm::test_env::login_at(url, "sk-stored-login-42")
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
        let run = |options: &LiteLlmOptions, env: &dyn Fn(&str) -> Option<String>| {
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
}
