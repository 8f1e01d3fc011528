//! Typed settings, resolved once at startup from flags, the process
//! environment and the `.env` file, in that order of precedence.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::ServerArgs;
use crate::litellm_config::{self, ConfigModel, RouterSettings};
use crate::providers::ProviderTable;

/// Default upstream when no API config file is given.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com";

/// The process environment, backed by the values of a `.env` file.
#[derive(Debug, Default)]
pub struct Env {
    file: HashMap<String, String>,
    /// The file's directory: relative paths in the file are taken from
    /// there, wherever the command runs (see `path`).
    dir: PathBuf,
}

impl Env {
    /// Reads `path`; a missing file is an error only when `required`.
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Self> {
        let iter = match dotenvy::from_path_iter(path) {
            Ok(iter) => iter,
            Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            // dotenvy's I/O error shows its cause and also returns it as its
            // source: keep only the cause, so the message says it once.
            Err(dotenvy::Error::Io(e)) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let file = iter
            .collect::<Result<HashMap<_, _>, _>>()
            .with_context(|| format!("invalid env file {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self { file, dir })
    }

    pub fn get(&self, key: &str) -> Option<String> {
        std::env::var(key)
            .ok()
            .or_else(|| self.file.get(key).cloned())
            .filter(|v| !v.is_empty())
    }

    /// A path: one from the process environment as it is (relative to the
    /// current directory), a relative one from the file against the file's
    /// directory, so that `--config /srv/proxy/.env` with
    /// `DATABASE_PATH=data` means `/srv/proxy/data` from anywhere.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        if let Ok(value) = std::env::var(key) {
            return Some(PathBuf::from(value)).filter(|p| !p.as_os_str().is_empty());
        }
        let value = Path::new(self.file.get(key).filter(|v| !v.is_empty())?);
        Some(if value.is_relative() {
            self.dir.join(value)
        } else {
            value.to_path_buf()
        })
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`); unset is `false`.
    pub fn flag(&self, key: &str) -> anyhow::Result<bool> {
        match self.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(other) => bail!("{key}: expected true or false, got {other:?}"),
        }
    }

    fn duration(&self, key: &str, default: Duration) -> anyhow::Result<Duration> {
        match self.get(key) {
            Some(text) => humantime::parse_duration(&text)
                .with_context(|| format!("{key}: invalid duration {text:?} (try \"30s\")")),
            None => Ok(default),
        }
    }

    fn size(&self, key: &str, default: u64) -> anyhow::Result<u64> {
        match self.get(key) {
            Some(text) => parse_size(&text)
                .with_context(|| format!("{key}: invalid size {text:?} (try \"10MB\")")),
            None => Ok(default),
        }
    }
}

/// A management token shorter than this is accepted, with a warning.
pub const MANAGEMENT_TOKEN_MIN_LEN: usize = 16;

/// The one rule for a management token, wherever one is read (`setup`, the
/// server's start): surrounding whitespace is dropped, an empty token is an
/// error, and one shorter than [`MANAGEMENT_TOKEN_MIN_LEN`] characters is
/// accepted with the warning returned beside it. `source` names where the
/// token came from, for both.
pub fn management_token(token: &str, source: &str) -> anyhow::Result<(String, Option<String>)> {
    let token = token.trim();
    if token.is_empty() {
        bail!("{source} is empty");
    }
    let length = token.chars().count();
    let warning = (length < MANAGEMENT_TOKEN_MIN_LEN).then(|| {
        format!(
            "{source} has only {length} characters: anyone who guesses it can manage the proxy; \
             use {MANAGEMENT_TOKEN_MIN_LEN} or more (`llm-proxy setup` generates one)"
        )
    });
    Ok((token.to_string(), warning))
}

/// Parses "1048576", "512KB", "10MB", "1GiB" (K/M/G are powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// `BUDGET_DEFAULT_MAX_TOKENS` when unset: enough for most answers; a
/// request that may run longer says so with `max_tokens`.
pub const DEFAULT_BUDGET_MAX_TOKENS: u64 = 4096;

/// Limits that protect the proxy from clients.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// Bytes of request bodies a worker holds whole at once (those read
    /// before they go upstream: model routing, cache keys), all its
    /// connections together; each body counts twice, its buffer and its
    /// copy on the way upstream.
    pub max_buffered_body_bytes: u64,
    /// From the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Longest a single write to the client may wait for it to read.
    pub write_timeout: Duration,
    /// From this many open connections on a worker, idle ones park (give
    /// their read buffer back); below it, waiting costs nothing extra.
    pub park_from_connections: usize,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// `DATABASE_URL`: shared mode, PostgreSQL as the truth of several nodes.
    pub database_url: Option<String>,
    /// This node's name (`NODE_ID`; the host's name and the port by default):
    /// in every event record, as the `node` label of every metric, and in
    /// the shared store.
    pub node_id: String,
    /// `node_id` is the default one: on port 0 it names the port bound
    /// (`listening_on`).
    node_id_is_default: bool,
    /// `SHARED_LEASE_TERM`: how long a node's slices of limits outlive its
    /// last contact with PostgreSQL.
    pub lease_term: Duration,
    /// `DATABASE_CA_FILE`: an extra CA to trust for TLS to PostgreSQL.
    pub database_ca_file: Option<PathBuf>,
    pub workers: usize,
    pub pin_cores: bool,
    pub providers: ProviderTable,
    /// Bearer token of the management API; `None` disables it.
    pub management_token: Option<String>,
    /// `ENCRYPTION_KEY`: seals provider keys at rest.
    pub encryption_key: Option<String>,
    /// `REQUIRE_ENCRYPTION_KEY=true`: refuse to start without one.
    pub require_encryption: bool,
    pub limits: ClientLimits,
    pub shutdown_timeout: Duration,
    pub upstream_ca_file: Option<PathBuf>,
    /// Retries and fallbacks of routed requests (from a LiteLLM config).
    pub router: RouterSettings,
    /// The `model_list` of a LiteLLM config, put in the store at start.
    pub config_models: Vec<ConfigModel>,
    /// Entries the audit log keeps; older ones are deleted as new ones come.
    pub audit_max_entries: u64,
    /// Completion tokens a routed request is assumed to use, for holding
    /// budget, when its body gives no `max_tokens`/`max_completion_tokens`.
    pub budget_default_max_tokens: u64,
    /// When what is left of a budget cannot pay for a request's estimate,
    /// lower its `max_tokens` to what it can pay for instead of refusing it
    /// (`BUDGET_CAP_MAX_TOKENS`).
    pub budget_cap_max_tokens: bool,
    /// The `api-version` of Azure deployments that name none themselves
    /// (`AZURE_API_VERSION`).
    pub azure_api_version: Option<String>,
    /// The per-worker HTTP response cache (`HTTP_CACHE_*`).
    pub cache: CacheSettings,
    pub metrics: MetricsSettings,
    /// Request events and their log.
    pub events: EventSettings,
    pub login: LoginSettings,
}

/// The `/metrics` endpoint.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// `METRICS_ENABLED=false` turns counting and `/metrics` off.
    pub enabled: bool,
    /// `METRICS_TOKEN`: when set, a scrape must send it as a bearer token.
    pub token: Option<String>,
}

/// Request events: on or off, bodies, how much the log keeps, and the
/// in-process file dispatcher.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// `EVENT_LOG` (default true): off, the request path does nothing.
    pub enabled: bool,
    /// `EVENT_LOG_BODIES` and `EVENT_LOG_BODY_MAX_BYTES`: bodies kept up to this size.
    pub body_limit: Option<usize>,
    pub retention: crate::store::Retention,
    /// `--file-event-log` / `FILE_EVENT_LOG`: deliver to this JSONL file in-process.
    pub file_event_log: Option<PathBuf>,
}

/// Sign-in for the CLI (`llm-proxy login`): the built-in password page or an
/// OpenID Connect provider, and the keys a login issues.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// `EXPERIMENTAL_UI_LOGIN`: the sign-in pages and `/sso/cli/*` are served.
    pub enabled: bool,
    /// `PROXY_BASE_URL`: the proxy's address as browsers reach it (links in
    /// the pages, the OpenID Connect callback); by default `http://` and the
    /// request's `Host`.
    pub public_url: Option<String>,
    /// `CLI_LOGIN_KEY_TTL`: how long a key issued by a login lives.
    pub key_ttl: Duration,
    /// `CLI_LOGIN_TIMEOUT`: how long a started login may take to finish.
    pub login_ttl: Duration,
    /// `CLI_LOGIN_LEGACY`: also serve the older LiteLLM CLI flow, whose
    /// poll needs no secret.
    pub legacy_flow: bool,
    /// `SSO_AUTO_CREATE_USERS`: a provider-verified email with no user
    /// becomes a new `internal_user`.
    pub auto_create_users: bool,
    /// The OpenID Connect provider, when `OIDC_ISSUER` is set; without one,
    /// users sign in with their password.
    pub oidc: Option<OidcSettings>,
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `OIDC_ISSUER`: discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// `OIDC_CLIENT_ID`.
    pub client_id: String,
    /// `OIDC_CLIENT_SECRET`; none for a public client (PKCE alone).
    pub client_secret: Option<String>,
    /// `OIDC_SCOPES`, space-separated; `openid email profile` by default.
    pub scopes: String,
    /// `OIDC_CA_FILE`: the certificates (PEM) that the provider's HTTPS
    /// certificate must chain to, instead of the public roots: for a
    /// provider inside the company, behind its own CA.
    pub roots: Option<ureq::tls::RootCerts>,
}

/// The certificates of a PEM file, as the only roots to trust.
fn root_certs(path: &Path) -> anyhow::Result<ureq::tls::RootCerts> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        let item = item.with_context(|| format!("invalid PEM in {}", path.display()))?;
        if let ureq::tls::PemItem::Certificate(cert) = item {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

impl LoginSettings {
    pub fn resolve(env: &Env) -> anyhow::Result<Self> {
        let oidc = match env.get("OIDC_ISSUER") {
            Some(issuer) => Some(OidcSettings {
                issuer: issuer.trim_end_matches('/').to_string(),
                client_id: env
                    .get("OIDC_CLIENT_ID")
                    .context("OIDC_ISSUER is set, so OIDC_CLIENT_ID is needed too")?,
                client_secret: env.get("OIDC_CLIENT_SECRET"),
                scopes: env
                    .get("OIDC_SCOPES")
                    .unwrap_or_else(|| "openid email profile".into()),
                roots: match env.path("OIDC_CA_FILE") {
                    Some(path) => Some(root_certs(&path).context("OIDC_CA_FILE")?),
                    None => None,
                },
            }),
            None => None,
        };
        let public_url = env
            .get("PROXY_BASE_URL")
            .map(|url| url.trim_end_matches('/').to_string());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("PROXY_BASE_URL: expected an http:// or https:// URL, got {url:?}");
        }
        let login_ttl = env.duration("CLI_LOGIN_TIMEOUT", Duration::from_secs(300))?;
        if login_ttl.is_zero() {
            bail!("CLI_LOGIN_TIMEOUT must be more than zero");
        }
        let key_ttl = env.duration("CLI_LOGIN_KEY_TTL", Duration::from_secs(24 * 3600))?;
        if key_ttl.is_zero() {
            bail!("CLI_LOGIN_KEY_TTL must be more than zero");
        }
        Ok(Self {
            enabled: env.flag("EXPERIMENTAL_UI_LOGIN")?,
            public_url,
            key_ttl,
            login_ttl,
            legacy_flow: env.get("CLI_LOGIN_LEGACY").is_none() || env.flag("CLI_LOGIN_LEGACY")?,
            auto_create_users: env.flag("SSO_AUTO_CREATE_USERS")?,
            oidc,
        })
    }
}

impl EventSettings {
    pub fn resolve(env: &Env, file_event_log: Option<PathBuf>) -> anyhow::Result<Self> {
        let defaults = crate::store::Retention::default();
        let enabled = match env.get("EVENT_LOG") {
            None => true,
            Some(_) => env.flag("EVENT_LOG")?,
        };
        let max_events = match env.get("EVENT_LOG_MAX_EVENTS") {
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => bail!("EVENT_LOG_MAX_EVENTS: expected a positive number, got {text:?}"),
            },
            None => defaults.max_events,
        };
        let max_bytes = env.size("EVENT_LOG_MAX_BYTES", defaults.max_bytes)?;
        if max_bytes < 1 << 20 {
            bail!("EVENT_LOG_MAX_BYTES must be at least 1MB");
        }
        Ok(Self {
            enabled,
            body_limit: if env.flag("EVENT_LOG_BODIES")? {
                Some(env.size("EVENT_LOG_BODY_MAX_BYTES", 64 << 10)? as usize)
            } else {
                None
            },
            retention: crate::store::Retention {
                max_events,
                max_age: env.duration("EVENT_LOG_MAX_AGE", defaults.max_age)?,
                max_bytes,
            },
            file_event_log: file_event_log.or_else(|| env.path("FILE_EVENT_LOG")),
        })
    }
}

impl ServerSettings {
    pub fn resolve(args: &ServerArgs) -> anyhow::Result<Self> {
        // A YAML file given to --config is the API config, not an env file.
        let (env_file, yaml_config) = match &args.config {
            Some(path) if is_yaml(path) => (None, Some(path.clone())),
            Some(path) => (Some(path.clone()), None),
            None => (None, None),
        };
        let env = match &env_file {
            Some(path) => Env::load(path, true)?,
            None => Env::load(Path::new(".env"), false)?,
        };
        let addr_text = args
            .addr
            .clone()
            .or_else(|| env.get("LISTEN_ADDR"))
            .unwrap_or_else(|| ":8080".into());
        let addr = parse_listen_addr(&addr_text)?;
        let data_dir = args
            .db
            .clone()
            .or_else(|| env.path("DATABASE_PATH"))
            .unwrap_or_else(|| PathBuf::from("data"));
        let workers = match args
            .workers
            .or(env.get("WORKERS").and_then(|w| w.parse().ok()))
        {
            Some(0) => bail!("--workers must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let base_url_override = env.get("OPENAI_API_URL");
        // Each YAML file is either an api_providers.yaml or a LiteLLM
        // config.yaml, told apart by what is in it; one of each may be given.
        let mut yaml_files: Vec<PathBuf> = args.api_config.iter().cloned().collect();
        yaml_files.extend(yaml_config);
        if yaml_files.is_empty() {
            yaml_files.extend(env.path("API_CONFIG_PATH"));
        }
        let (mut providers, mut litellm) = (None, None);
        for path in yaml_files {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if litellm_config::is_litellm_config(&text) {
                if litellm.is_some() {
                    bail!("two LiteLLM config files given; pass one");
                }
                let config = litellm_config::parse(&text, |name| env.get(name))
                    .with_context(|| format!("invalid LiteLLM config {}", path.display()))?;
                litellm = Some(config);
            } else {
                if providers.is_some() {
                    bail!("two API provider files given; pass one");
                }
                let table = ProviderTable::from_yaml(&text, base_url_override.as_deref())
                    .with_context(|| format!("invalid API config {}", path.display()))?;
                providers = Some(table);
            }
        }
        let providers = match providers {
            Some(table) => table,
            None => ProviderTable::openai(base_url_override.as_deref().unwrap_or(OPENAI_BASE_URL))?,
        };
        let litellm = litellm.unwrap_or_default();
        let limits = ClientLimits {
            max_header_bytes: env.size("MAX_HEADER_SIZE", 32 << 10)? as usize,
            max_body_bytes: env.size("MAX_REQUEST_SIZE", 10 << 20)?,
            max_buffered_body_bytes: env.size("MAX_BUFFERED_BODY_BYTES", 64 << 20)?,
            header_timeout: env.duration("CLIENT_HEADER_TIMEOUT", Duration::from_secs(10))?,
            body_timeout: env.duration("CLIENT_BODY_TIMEOUT", Duration::from_secs(30))?,
            idle_timeout: env.duration("CLIENT_IDLE_TIMEOUT", Duration::from_secs(60))?,
            write_timeout: env.duration("CLIENT_WRITE_TIMEOUT", Duration::from_secs(60))?,
            park_from_connections: match env.get("IDLE_PARK_CONNECTIONS") {
                Some(text) => text.trim().parse().with_context(|| {
                    format!("IDLE_PARK_CONNECTIONS: not a number of connections: {text:?}")
                })?,
                None => 1024,
            },
        };
        let cache = {
            let defaults = CacheSettings::default();
            CacheSettings {
                enabled: env.get("HTTP_CACHE_ENABLED").is_none()
                    || env.flag("HTTP_CACHE_ENABLED")?,
                max_bytes: env.size("HTTP_CACHE_MAX_BYTES", defaults.max_bytes as u64)? as usize,
                max_object_bytes: env.size(
                    "HTTP_CACHE_MAX_OBJECT_BYTES",
                    defaults.max_object_bytes as u64,
                )? as usize,
                default_ttl: env.duration("HTTP_CACHE_DEFAULT_TTL", defaults.default_ttl)?,
                stream_responses: env.flag("HTTP_CACHE_STREAM_RESPONSES")?,
            }
        };
        if limits.max_header_bytes < 1024 {
            bail!("MAX_HEADER_SIZE must be at least 1KB");
        }
        let management_token = match (env.get("MANAGEMENT_TOKEN"), litellm.master_key) {
            (Some(token), _) => Some(management_token(&token, "MANAGEMENT_TOKEN")?),
            (None, Some(key)) => Some(management_token(&key, "general_settings.master_key")?),
            (None, None) => None,
        };
        let management_token = management_token.map(|(token, warning)| {
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            token
        });
        if limits.max_buffered_body_bytes < 64 << 10 {
            bail!("MAX_BUFFERED_BODY_BYTES must be at least 64KB");
        }
        let database_url = args
            .database_url
            .clone()
            .or_else(|| env.get("DATABASE_URL"))
            .filter(|url| !url.is_empty());
        let node_id = args
            .node_id
            .clone()
            .or_else(|| env.get("NODE_ID"))
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty());
        if let Some(id) = &node_id {
            check_node_id(id)?;
        }
        let node_id_is_default = node_id.is_none();
        let node_id = node_id.unwrap_or_else(|| format!("{}:{}", host_name(), addr.port()));
        let lease_term = env.duration("SHARED_LEASE_TERM", crate::store::shared::DEFAULT_TERM)?;
        if lease_term < crate::store::shared::MIN_TERM {
            bail!(
                "SHARED_LEASE_TERM must be at least {:?}",
                crate::store::shared::MIN_TERM
            );
        }
        Ok(Self {
            addr,
            data_dir,
            database_url,
            node_id,
            node_id_is_default,
            lease_term,
            database_ca_file: args
                .database_ca_file
                .clone()
                .or_else(|| env.path("DATABASE_CA_FILE")),
            workers,
            pin_cores: args.pin_cores,
            providers,
            management_token,
            encryption_key: env.get("ENCRYPTION_KEY"),
            require_encryption: env.flag("REQUIRE_ENCRYPTION_KEY")?,
            limits,
            shutdown_timeout: env.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            upstream_ca_file: args
                .upstream_ca_file
                .clone()
                .or_else(|| env.path("UPSTREAM_CA_FILE")),
            router: litellm.router,
            config_models: litellm.models,
            audit_max_entries: match env.get("AUDIT_MAX_ENTRIES") {
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => bail!("AUDIT_MAX_ENTRIES: expected a positive number, got {text:?}"),
                },
                None => 1_000_000,
            },
            budget_default_max_tokens: match env.get("BUDGET_DEFAULT_MAX_TOKENS") {
                Some(text) => text.trim().parse::<u64>().with_context(|| {
                    format!("BUDGET_DEFAULT_MAX_TOKENS: expected a number of tokens, got {text:?}")
                })?,
                None => DEFAULT_BUDGET_MAX_TOKENS,
            },
            budget_cap_max_tokens: env.flag("BUDGET_CAP_MAX_TOKENS")?,
            azure_api_version: match env.get("AZURE_API_VERSION") {
                Some(text) if crate::dialect::azure::is_api_version(text.trim()) => {
                    Some(text.trim().to_string())
                }
                Some(text) => bail!(
                    "AZURE_API_VERSION: expected a version such as 2024-10-21 or v1, got {text:?}"
                ),
                None => None,
            },
            cache,
            metrics: MetricsSettings {
                enabled: env.get("METRICS_ENABLED").is_none() || env.flag("METRICS_ENABLED")?,
                token: env.get("METRICS_TOKEN"),
            },
            events: EventSettings::resolve(&env, args.file_event_log.clone())?,
            login: LoginSettings::resolve(&env)?,
        })
    }

    /// Settles what depends on the address the server actually got: the
    /// default node id of a server told to listen on port 0 names the port
    /// bound, not 0.
    pub fn listening_on(&mut self, local: SocketAddr) {
        if self.node_id_is_default && self.addr.port() == 0 {
            self.node_id = format!("{}:{}", host_name(), local.port());
        }
    }
}

/// Longest `NODE_ID`: a label value and a field of every event record.
const MAX_NODE_ID: usize = 128;

/// A node id goes into every event record and metric sample: printable,
/// and short.
fn check_node_id(id: &str) -> anyhow::Result<()> {
    if id.len() > MAX_NODE_ID {
        bail!("NODE_ID: at most {MAX_NODE_ID} bytes, got {}", id.len());
    }
    if id.chars().any(char::is_control) {
        bail!("NODE_ID: control characters are not allowed, got {id:?}");
    }
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// Accepts "host:port", "ip:port" and Go-style ":port" (every interface).
pub fn parse_listen_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| {
            format!("invalid listen address {text:?} (try \":8080\" or \"127.0.0.1:8080\")")
        })
}

/// Settings of the response cache (`HTTP_CACHE_*`).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Bytes the whole server's cache may hold (each entry counted once,
    /// whole, however many workers' shards hold it).
    pub max_bytes: usize,
    /// Largest answer (head and body) that is stored.
    pub max_object_bytes: usize,
    /// How long a `GET` answer without `max-age`/`s-maxage` is kept.
    pub default_ttl: Duration,
    /// Store `text/event-stream` answers (once they arrived whole).
    pub stream_responses: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 64 << 20,
            max_object_bytes: 1 << 20,
            default_ttl: Duration::from_secs(300),
            stream_responses: false,
        }
    }
}

/// The host's name, as the kernel knows it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("512 kb"), Some(512 << 10));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("10XB"), None);
    }

    #[test]
    fn management_tokens() {
        let (token, warning) = management_token(" your-token ", "--management-token").unwrap();
        assert_eq!(token, "your-token");
        let warning = warning.unwrap();
        assert!(
            warning.starts_with("--management-token has only 10 characters"),
            "{warning}"
        );
        let (_, warning) = management_token("0123456789abcdef", "MANAGEMENT_TOKEN").unwrap();
        assert_eq!(warning, None);
        let error = management_token("  ", "MANAGEMENT_TOKEN").unwrap_err();
        assert_eq!(error.to_string(), "MANAGEMENT_TOKEN is empty");
    }

    #[test]
    fn relative_paths_in_the_file_are_taken_from_its_directory() {
        let dir = std::env::temp_dir().join(format!("llm-proxy-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("proxy.env");
        std::fs::write(
            &file,
            "LLM_PROXY_TEST_REL=data\nLLM_PROXY_TEST_ABS=/srv/x\nLLM_PROXY_TEST_EMPTY=\n",
        )
        .unwrap();
        let env = Env::load(&file, true).unwrap();
        assert_eq!(env.path("LLM_PROXY_TEST_REL"), Some(dir.join("data")));
        assert_eq!(
            env.path("LLM_PROXY_TEST_ABS"),
            Some(PathBuf::from("/srv/x"))
        );
        assert_eq!(env.path("LLM_PROXY_TEST_EMPTY"), None);
        assert_eq!(env.path("LLM_PROXY_TEST_UNSET"), None);
        // The default `.env` of the current directory: relative as written.
        let env = Env {
            file: HashMap::from([("LLM_PROXY_TEST_REL".into(), "data".into())]),
            dir: Path::new(".env").parent().unwrap().to_path_buf(),
        };
        assert_eq!(env.path("LLM_PROXY_TEST_REL"), Some(PathBuf::from("data")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listen_addrs() {
        assert_eq!(
            parse_listen_addr(":8080").unwrap().to_string(),
            "0.0.0.0:8080"
        );
        assert_eq!(parse_listen_addr("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_listen_addr("nonsense").is_err());
    }
}
