//! Command-line definitions (clap) and nothing else.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

pub mod litellm;

pub use litellm::LiteLlmCommand;

#[derive(Debug, Parser)]
#[command(
    name = "llm-proxy",
    version,
    propagate_version = true,
    about = "A thread-per-core gateway for OpenAI-compatible LLM APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway.
    #[command(
        after_help = "The management API (/manage/*, the LiteLLM-style key, model, credential \
        and user endpoints) is on when MANAGEMENT_TOKEN is set, in the environment or the --config \
        file: any non-empty token; one shorter than 16 characters is accepted with a warning."
    )]
    Server(ServerArgs),
    /// Write the .env, initialise the store, create a first project and token.
    Setup(SetupArgs),
    /// Run a mock upstream (OpenAI, Azure OpenAI, Anthropic, Bedrock and Gemini
    /// routes) for tests, demos and benchmarks.
    MockUpstream(MockArgs),
    /// Manage projects and tokens through a running server's management API.
    Manage(ManageArgs),
    /// Shared mode: bring PostgreSQL's schema up to date, and import a single-node store into it.
    Migrate(MigrateArgs),
    /// Deliver request events from the event log to a file, an HTTP endpoint, Lunary or Helicone.
    Dispatcher(DispatcherArgs),
    /// Measure latency, throughput and errors of the proxy or of an API directly.
    Benchmark(BenchmarkArgs),
    /// Talk to the OpenAI API through the proxy.
    Openai(OpenaiArgs),
    /// The LiteLLM-style client commands (also the `dheera_ai-proxy` binary).
    #[command(flatten)]
    LiteLlm(LiteLlmCommand),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on; ":8080" means every interface [default: :8080]
    #[arg(long, env = "LISTEN_ADDR")]
    pub addr: Option<String>,
    /// Data directory [default: data]
    #[arg(long, env = "DATABASE_PATH")]
    pub db: Option<PathBuf>,
    /// Environment file with settings (a YAML file here is read as --api-config) [default: .env]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Upstream providers file (api_providers.yaml)
    #[arg(long, env = "API_CONFIG_PATH")]
    pub api_config: Option<PathBuf>,
    /// Worker threads, one io_uring runtime each [default: number of cores]
    #[arg(long, env = "WORKERS")]
    pub workers: Option<usize>,
    /// Pin worker i to core i
    #[arg(long)]
    pub pin_cores: bool,
    /// Extra CA certificate (PEM) to trust for HTTPS upstreams
    #[arg(long, env = "UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Try it out: run the built-in mock upstream in-process and route to it
    #[arg(long)]
    pub demo: bool,
    /// Deliver request events to this JSONL file from within the server (env FILE_EVENT_LOG)
    #[arg(long)]
    pub file_event_log: Option<PathBuf>,
    /// Shared mode: PostgreSQL holding the state of several nodes (postgres://…); --db is then
    /// this node's replica
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// This node's name in events, metrics and the shared store [default: hostname:port]
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Extra CA certificate (PEM) to trust for TLS to PostgreSQL
    #[arg(long, env = "DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// PostgreSQL of the nodes (postgres://…) [env DATABASE_URL, or the --config file]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Copy the single-node store in --db into PostgreSQL, which must hold no records yet;
    /// --db then is a replica that a node in shared mode may start on
    #[arg(long)]
    pub import: bool,
    /// Data directory of the store to import [default: data]
    #[arg(long, env = "DATABASE_PATH")]
    pub db: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for TLS to PostgreSQL
    #[arg(long, env = "DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// Environment file with settings [default: .env]
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DispatcherArgs {
    /// Data directory holding the event log [default: data]
    #[arg(long, env = "DATABASE_PATH")]
    pub db: Option<PathBuf>,
    /// Environment file with settings [default: .env]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where events go
    #[arg(long, value_enum, default_value = "file")]
    pub service: SinkService,
    /// File path (file) or URL (http, lunary, helicone)
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Name of this dispatcher's cursor [default: the service name]
    #[arg(long)]
    pub name: Option<String>,
    /// Events read ahead from the log
    #[arg(long, default_value_t = 100)]
    pub buffer: usize,
    /// Events per delivery
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Bearer key of the sink [env: DISPATCHER_API_KEY, LUNARY_PUBLIC_KEY, HELICONE_API_KEY]
    #[arg(long)]
    pub api_key: Option<String>,
    /// Deliver what is in the log, then exit
    #[arg(long)]
    pub once: bool,
    /// Failed attempts of one batch before giving up [default: 5 with --once, else never]
    #[arg(long)]
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkService {
    File,
    Http,
    Lunary,
    Helicone,
}

impl SinkService {
    pub fn name(self) -> &'static str {
        match self {
            SinkService::File => "file",
            SinkService::Http => "http",
            SinkService::Lunary => "lunary",
            SinkService::Helicone => "helicone",
        }
    }
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Env file to write (mode 0600); other lines in it are kept
    #[arg(long, default_value = ".env")]
    pub config: PathBuf,
    /// Ask for the values instead of taking them from flags
    #[arg(long)]
    pub interactive: bool,
    /// Provider (OpenAI) API key of the first project
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_key: Option<String>,
    /// Management token for the proxy: any non-empty string; one shorter than
    /// 16 characters is accepted with a warning [default: generate one]
    #[arg(long, env = "MANAGEMENT_TOKEN", hide_env_values = true)]
    pub management_token: Option<String>,
    /// Name of the project to create
    #[arg(long, default_value = "DefaultProject")]
    pub project: String,
    /// Lifetime of the token, in hours
    #[arg(long, default_value_t = 24)]
    pub duration: u64,
    /// Skip project and token setup
    #[arg(long)]
    pub skip_project: bool,
    /// Data directory [default: DATABASE_PATH in the env file, else data]
    #[arg(long, env = "DATABASE_PATH")]
    pub db: Option<PathBuf>,
    /// Address the server will listen on (written to the .env)
    #[arg(long, default_value = "localhost:8080")]
    pub addr: String,
}

#[derive(Debug, Args)]
pub struct MockArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: String,
    /// Worker threads
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Pin worker i to core i
    #[arg(long)]
    pub pin_cores: bool,
    /// Delay before every response head, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Content deltas per streamed chat completion
    #[arg(long, default_value_t = 16)]
    pub stream_chunks: u32,
    /// Pause between streamed deltas, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub chunk_interval_ms: u64,
    /// Require this key on API requests, in each dialect's field ("Authorization:
    /// Bearer", "api-key", "x-api-key", "x-goog-api-key")
    #[arg(long, env = "MOCK_API_KEY")]
    pub api_key: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bedrock routes: require SigV4 signatures by this access key id
    #[arg(long, env = "MOCK_AWS_ACCESS_KEY_ID")]
    pub aws_access_key_id: Option<String>,
    /// Bedrock routes: check SigV4 signatures with this secret access key
    #[arg(long, env = "MOCK_AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ManageArgs {
    /// Management API base URL
    #[arg(
        long,
        global = true,
        env = "MANAGE_API_BASE_URL",
        hide_env_values = true,
        default_value = "http://localhost:8080",
        value_name = "URL"
    )]
    pub manage_api_base_url: String,
    /// Management token (or set MANAGEMENT_TOKEN)
    #[arg(
        long,
        global = true,
        env = "MANAGEMENT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub management_token: Option<String>,
    /// Output results as JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Tables: every column at full width, even wider than the terminal
    /// (by default, columns are left out and wrapped to fit it)
    #[arg(long, global = true)]
    pub wide: bool,
    #[command(subcommand)]
    pub command: ManageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ManageCommand {
    /// Create, list, inspect, update and delete projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Generate, list, inspect and revoke tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the audit log of management calls.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Remove stored answers from the response cache of every worker.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Purge the answers stored for one URL, or for every URL under a prefix.
    Purge {
        /// The path and query of the request, e.g. /v1/models?limit=20
        #[arg(
            long,
            value_name = "URL",
            conflicts_with = "prefix",
            required_unless_present = "prefix"
        )]
        url: Option<String>,
        /// Every stored URL starting with this, e.g. /v1/
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List management calls, newest first.
    List {
        /// Most entries to show (1 to 1000)
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
        /// Only entries older than this id (the next page)
        #[arg(long, value_name = "ID")]
        before_id: Option<u64>,
        /// Only calls at or after this time (RFC 3339, e.g. 2026-11-24T00:00:00Z)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only calls at or before this time (RFC 3339)
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only calls by this actor (master_key, unauthenticated, key:<id>)
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
        /// Only calls with this method
        #[arg(long, value_name = "METHOD")]
        method: Option<String>,
        /// Only calls whose path starts with this
        #[arg(long, value_name = "PATH")]
        path_prefix: Option<String>,
        /// Only calls answered with this status
        #[arg(long, value_name = "CODE")]
        status: Option<u16>,
    },
    /// Show one entry.
    Get {
        /// The entry's id
        #[arg(value_name = "id")]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List all projects.
    List,
    /// Show one project.
    Get {
        /// UUID of the project
        #[arg(value_name = "project-id")]
        project_id: String,
    },
    /// Create a project.
    Create {
        /// Project name
        #[arg(long, value_name = "NAME")]
        name: String,
        /// OpenAI API key the project's requests are sent with
        #[arg(long, value_name = "KEY")]
        openai_key: String,
    },
    /// Change a project's name and/or OpenAI API key.
    Update {
        /// UUID of the project
        #[arg(value_name = "project-id")]
        project_id: String,
        /// New project name
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// New OpenAI API key
        #[arg(long, value_name = "KEY")]
        openai_key: Option<String>,
    },
    /// Delete a project and revoke all its tokens.
    Delete {
        /// UUID of the project
        #[arg(value_name = "project-id")]
        project_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List tokens (secrets are shown obfuscated).
    List {
        /// Only the tokens of this project
        #[arg(long, value_name = "ID")]
        project_id: Option<String>,
        /// Only active tokens
        #[arg(long)]
        active_only: bool,
    },
    /// Show one token.
    Get {
        /// UUID of the token, or the token itself
        #[arg(value_name = "token-id")]
        token_id: String,
    },
    /// Generate a token for a project; the secret is shown once.
    Generate {
        /// Project to create the token for
        #[arg(long, value_name = "ID")]
        project_id: String,
        /// Token lifetime in hours
        #[arg(
            long,
            value_name = "HOURS",
            default_value_t = 24,
            value_parser = clap::value_parser!(u64).range(1..=876_000)
        )]
        duration: u64,
        /// Maximum number of requests (0 = unlimited)
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_requests: u64,
    },
    /// Revoke (deactivate) a token.
    Revoke {
        /// UUID of the token, or the token itself
        #[arg(value_name = "token-id")]
        token_id: String,
    },
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("limit")
        .args(["requests", "duration"])
        .required(true)
        .multiple(true)
))]
pub struct BenchmarkArgs {
    /// Base URL of the target, e.g. http://localhost:8080 or https://api.openai.com/v1
    #[arg(long, value_name = "URL")]
    pub base_url: String,
    /// API path to hit, appended to the base URL's path, e.g. /v1/chat/completions
    #[arg(long, value_name = "PATH")]
    pub endpoint: String,
    /// Bearer token (proxy token or provider API key) [default: the --token-env variable]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Environment variable the token is read from when --token is absent
    #[arg(long, value_name = "NAME", default_value = "PROXY_TOKEN")]
    pub token_env: String,
    /// Total number of requests to send (with --duration: whichever ends first)
    #[arg(short = 'r', long, value_name = "N")]
    pub requests: Option<u64>,
    /// How long to send requests for, e.g. 30s or 2m
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Number of concurrent keep-alive connections
    #[arg(short = 'c', long, value_name = "N", default_value_t = 1)]
    pub concurrency: usize,
    /// Open loop: send this many requests per second in total, whatever the
    /// latency (latencies count from each request's intended send time)
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Client threads, one io_uring runtime each; connections are spread over them
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub workers: usize,
    /// JSON request body; `"stream": true` turns on streaming measurements
    #[arg(long, value_name = "BODY")]
    pub json: Option<String>,
    /// HTTP method
    #[arg(long, value_enum, ignore_case = true, default_value_t = BenchMethod::Post)]
    pub method: BenchMethod,
    /// Extra request header, "Name: value" (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Send "Cache-Control: public, max-age=<--cache-ttl>" to exercise response caching
    #[arg(long)]
    pub cache: bool,
    /// TTL in seconds used with --cache
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    pub cache_ttl: u64,
    /// Print one sample response and its headers per status code (secrets redacted)
    #[arg(long)]
    pub debug: bool,
    /// Report format
    #[arg(long, value_enum, default_value_t = BenchOutput::Text)]
    pub output: BenchOutput,
    /// Time allowed for connecting and for each whole request
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Extra CA certificate (PEM) to trust for https:// targets
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OpenaiArgs {
    #[command(subcommand)]
    pub command: OpenaiCommand,
}

#[derive(Debug, Subcommand)]
pub enum OpenaiCommand {
    /// Chat with a model: a line editor with history on a terminal, one
    /// message per line when stdin is a pipe.
    Chat(OpenaiChatArgs),
}

#[derive(Debug, Args)]
pub struct OpenaiChatArgs {
    /// Proxy token (or a provider API key when --base-url is the provider)
    /// [default: the key of the stored login, for its own server only]
    #[arg(
        long,
        env = "PROXY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Base URL of the proxy; one ending in /v1 (e.g. https://api.openai.com/v1)
    /// gets /chat/completions appended, any other /v1/chat/completions
    /// [default: the stored login's without --token, else http://localhost:8080]
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Model to chat with
    #[arg(long, value_name = "MODEL", default_value = "gpt-4")]
    pub model: String,
    /// System message that opens the conversation
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Sampling temperature, 0 to 2 [default: the model's]
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Most tokens in one answer [default: the model's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: Option<u32>,
    /// Print each answer whole once it is complete instead of streaming it
    #[arg(long)]
    pub no_stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMethod {
    Get,
    Post,
    Put,
    Patch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOutput {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}
