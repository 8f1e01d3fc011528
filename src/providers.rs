//! The provider table: which upstream APIs exist, which endpoints and methods
//! each allows, and their timeouts. Read once from `api_providers.yaml` (the
//! seed project's format) or built from defaults; immutable afterwards and
//! shared between workers behind an `Arc`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// OpenAI's public endpoints, allowed when no configuration file is given.
const OPENAI_ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/moderations",
    "/v1/responses",
    "/v1/images",
    "/v1/audio",
    "/v1/files",
    "/v1/uploads",
    "/v1/batches",
    "/v1/fine_tuning",
    "/v1/assistants",
    "/v1/threads",
    "/v1/vector_stores",
];

#[derive(Debug, Deserialize)]
struct ProvidersFile {
    default_api: String,
    apis: BTreeMap<String, ProviderFile>,
}

#[derive(Debug, Deserialize)]
struct ProviderFile {
    base_url: String,
    allowed_endpoints: Vec<String>,
    allowed_methods: Vec<String>,
    #[serde(default)]
    timeouts: TimeoutsFile,
    #[serde(default)]
    connection: ConnectionFile,
}

#[derive(Debug, Default, Deserialize)]
struct TimeoutsFile {
    connect: Option<String>,
    request: Option<String>,
    response_header: Option<String>,
    idle_connection: Option<String>,
    /// Accepted for compatibility; every received chunk is flushed at once.
    #[allow(dead_code)]
    flush_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConnectionFile {
    max_idle_conns: Option<usize>,
    max_idle_conns_per_host: Option<usize>,
}

/// Where an upstream lives, parsed from its base URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Value of the `Host` header sent upstream.
    pub authority: String,
    /// Path prefix of the base URL, prepended to every request path.
    pub base_path: String,
}

impl Target {
    pub fn parse(base_url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = base_url
            .parse()
            .with_context(|| format!("invalid base URL {base_url:?}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("base URL {base_url:?} must start with http:// or https://"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("base URL {base_url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    /// From the end of the request to the upstream's response head.
    pub response_header: Duration,
    /// Longest silence allowed while relaying a response body. A long stream
    /// that keeps sending is never cut.
    pub read: Duration,
    /// How long an unused upstream connection stays in the pool.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            response_header: Duration::from_secs(300),
            read: Duration::from_secs(300),
            idle: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub target: Target,
    /// Allowed path prefixes, matched on whole path segments.
    pub endpoints: Vec<String>,
    pub methods: Vec<http::Method>,
    /// The `Allow` header value for 405 responses.
    pub allow: String,
    pub timeouts: Timeouts,
    /// Idle connections kept per worker for this upstream.
    pub max_idle: usize,
}

impl Provider {
    pub fn allows_path(&self, path: &[u8]) -> bool {
        self.endpoints.iter().any(|prefix| {
            let prefix = prefix.as_bytes();
            path.starts_with(prefix)
                && (path.len() == prefix.len()
                    || prefix.ends_with(b"/")
                    || path[prefix.len()] == b'/')
        })
    }

    pub fn allows_method(&self, method: &http::Method) -> bool {
        self.methods.contains(method)
    }
}

#[derive(Debug, Clone)]
pub struct ProviderTable {
    pub providers: Vec<Provider>,
    pub default: usize,
}

impl ProviderTable {
    pub fn default_provider(&self) -> &Provider {
        &self.providers[self.default]
    }

    /// OpenAI at `base_url` with its public endpoints.
    pub fn openai(base_url: &str) -> anyhow::Result<Self> {
        let methods = vec![http::Method::GET, http::Method::POST, http::Method::DELETE];
        Ok(Self {
            providers: vec![Provider {
                name: "openai".into(),
                target: Target::parse(base_url)?,
                endpoints: OPENAI_ENDPOINTS.iter().map(|e| e.to_string()).collect(),
                allow: allow_header(&methods),
                methods,
                timeouts: Timeouts::default(),
                max_idle: 64,
            }],
            default: 0,
        })
    }

    /// Loads an `api_providers.yaml`; `base_url_override` replaces the
    /// default provider's base URL (env `OPENAI_API_URL`).
    pub fn load(path: &Path, base_url_override: Option<&str>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read API config {}", path.display()))?;
        Self::from_yaml(&text, base_url_override)
            .with_context(|| format!("invalid API config {}", path.display()))
    }

    pub fn from_yaml(text: &str, base_url_override: Option<&str>) -> anyhow::Result<Self> {
        let file: ProvidersFile = serde_yaml_ng::from_str(text)?;
        let mut providers = Vec::with_capacity(file.apis.len());
        let mut default = None;
        for (name, api) in file.apis {
            if name == file.default_api {
                default = Some(providers.len());
            }
            let base_url = match base_url_override {
                Some(url) if name == file.default_api => url.to_string(),
                _ => api.base_url.clone(),
            };
            providers.push(build_provider(name, &base_url, api)?);
        }
        let default = default.with_context(|| {
            format!("default_api {:?} is not one of the apis", file.default_api)
        })?;
        Ok(Self { providers, default })
    }
}

fn build_provider(name: String, base_url: &str, api: ProviderFile) -> anyhow::Result<Provider> {
    let target = Target::parse(base_url).with_context(|| format!("api {name:?}"))?;
    if api.allowed_endpoints.is_empty() {
        bail!("api {name:?}: allowed_endpoints is empty");
    }
    for endpoint in &api.allowed_endpoints {
        if !endpoint.starts_with('/') {
            bail!("api {name:?}: endpoint {endpoint:?} must start with '/'");
        }
    }
    let methods = api
        .allowed_methods
        .iter()
        .map(|m| http::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("api {name:?}: invalid method in allowed_methods"))?;
    if methods.is_empty() {
        bail!("api {name:?}: allowed_methods is empty");
    }
    let defaults = Timeouts::default();
    let duration = |value: &Option<String>, default: Duration, field: &str| match value {
        Some(text) => humantime::parse_duration(text)
            .with_context(|| format!("api {name:?}: timeouts.{field}: invalid duration {text:?}")),
        None => Ok(default),
    };
    let timeouts = Timeouts {
        connect: duration(&api.timeouts.connect, defaults.connect, "connect")?,
        response_header: duration(
            &api.timeouts.response_header,
            defaults.response_header,
            "response_header",
        )?,
        read: duration(&api.timeouts.request, defaults.read, "request")?,
        idle: duration(
            &api.timeouts.idle_connection,
            defaults.idle,
            "idle_connection",
        )?,
    };
    let max_idle = api
        .connection
        .max_idle_conns_per_host
        .or(api.connection.max_idle_conns)
        .unwrap_or(64);
    Ok(Provider {
        name,
        target,
        endpoints: api.allowed_endpoints,
        allow: allow_header(&methods),
        methods,
        timeouts,
        max_idle,
    })
}

fn allow_header(methods: &[http::Method]) -> String {
    methods
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_STYLE: &str = r#"
default_api: openai
apis:
  openai:
    base_url: https://api.openai.com
    allowed_endpoints:
      - /v1/chat/completions
      - /v1/files
    allowed_methods: [GET, post]
    timeouts:
      request: 60s
      response_header: 30s
      idle_connection: 90s
      flush_interval: 100ms
    connection:
      max_idle_conns: 100
      max_idle_conns_per_host: 20
  local:
    base_url: http://127.0.0.1:9000/prefix/
    allowed_endpoints: [/v1/models]
    allowed_methods: [GET]
"#;

    #[test]
    fn loads_seed_format() {
        let table = ProviderTable::from_yaml(SEED_STYLE, None).unwrap();
        let openai = table.default_provider();
        assert_eq!(openai.name, "openai");
        assert!(openai.target.tls);
        assert_eq!(openai.target.port, 443);
        assert_eq!(openai.timeouts.response_header, Duration::from_secs(30));
        assert_eq!(openai.timeouts.read, Duration::from_secs(60));
        assert_eq!(openai.max_idle, 20);
        assert_eq!(openai.allow, "GET, POST");
        assert!(openai.allows_path(b"/v1/chat/completions"));
        assert!(openai.allows_path(b"/v1/files/file-123"));
        assert!(!openai.allows_path(b"/v1/chat/completionsX"));
        assert!(!openai.allows_path(b"/v1/embeddings"));
        let local = &table.providers[0];
        assert_eq!(local.target.base_path, "/prefix");
        assert_eq!(local.target.authority, "127.0.0.1:9000");
    }

    #[test]
    fn override_replaces_default_base_url() {
        let table = ProviderTable::from_yaml(SEED_STYLE, Some("http://127.0.0.1:1234")).unwrap();
        let openai = table.default_provider();
        assert!(!openai.target.tls);
        assert_eq!(openai.target.port, 1234);
    }

    #[test]
    fn rejects_bad_files() {
        let missing_default = "default_api: x\napis:\n  y:\n    base_url: http://a\n    allowed_endpoints: [/v1]\n    allowed_methods: [GET]\n";
        assert!(ProviderTable::from_yaml(missing_default, None).is_err());
        let bad_duration = SEED_STYLE.replace("60s", "sixty");
        let error = ProviderTable::from_yaml(&bad_duration, None).unwrap_err();
        assert!(format!("{error:#}").contains("timeouts.request"));
        assert!(Target::parse("ftp://x").is_err());
    }
}
