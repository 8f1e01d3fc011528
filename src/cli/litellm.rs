//! Clap definitions of the LiteLLM-style client commands (`models`,
//! `credentials`, `keys`, `users`, `teams`, `chat`, `http`, `login`, `logout`,
//! `whoami`). One tree, used twice:
//! flattened into the top level of `llm-proxy`, and the whole top level of
//! `dheera_ai-proxy`.
//!
//! Only the shape of the command line lives here: values that need more
//! than a type (JSON, `KEY=VALUE`, `role:content`, durations, headers) are
//! checked in `cmd::litellm`, before anything is sent, so that a mistake is
//! reported on one line.

use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// `dheera_ai-proxy`: the client commands alone.
#[derive(Debug, Parser)]
#[command(
    name = "dheera_ai-proxy",
    version,
    propagate_version = true,
    about = "Manage models, credentials, keys, users and teams of an llm-proxy \
             (LiteLLM-compatible) server, sign in to it, and send it chat and HTTP requests"
)]
pub struct LiteLlmCli {
    /// Accepted before the command too; the commands see the same values.
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: LiteLlmCommand,
}

/// Options of every client command, accepted anywhere on the line.
#[derive(Debug, Clone, Default, Args)]
pub struct LiteLlmOptions {
    /// Base URL of the proxy [env: DHEERA_AI_PROXY_URL, then LLM_PROXY_URL]
    /// [default: the one of the stored login, else http://localhost:8080;
    /// for dheera_ai-proxy http://localhost:4000]
    #[arg(long, global = true, value_name = "URL")]
    pub base_url: Option<String>,
    /// API key: the master key (MANAGEMENT_TOKEN) or a virtual key
    /// [env: DHEERA_AI_PROXY_API_KEY, then LLM_PROXY_API_KEY]
    /// [default: the key of the stored login, for its own server only]
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Output format [default: table for listings, json for single objects,
    /// the answer's text for chat completions]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Print each request and response on stderr, secrets redacted
    #[arg(long, global = true)]
    pub debug: bool,
    /// Tables: every column at full width, even wider than the terminal
    /// (by default, columns are left out and wrapped to fit it)
    #[arg(long, global = true)]
    pub wide: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum LiteLlmCommand {
    /// List, add, update, get and delete models.
    Models(ModelsArgs),
    /// List, create, get and delete provider credentials.
    Credentials(CredentialsArgs),
    /// Generate, list, inspect and delete API keys.
    Keys(KeysArgs),
    /// Create, list, inspect, update and delete users.
    Users(UsersArgs),
    /// Create, list, inspect, update, block and delete teams; add and
    /// remove their members.
    Teams(TeamsArgs),
    /// Run chat completions.
    Chat(ChatArgs),
    /// Make custom HTTP requests to the proxy.
    Http(HttpArgs),
    /// Sign in through the browser and store a key of your own.
    Login(LoginArgs),
    /// Delete the stored login's key on the server, and the login file.
    Logout(LogoutArgs),
    /// Show whose key the commands use: user, email, role, expiry.
    Whoami(WhoamiArgs),
}

impl LiteLlmCommand {
    /// The options as given anywhere on the command line.
    pub fn options(&self) -> &LiteLlmOptions {
        match self {
            LiteLlmCommand::Models(args) => &args.options,
            LiteLlmCommand::Credentials(args) => &args.options,
            LiteLlmCommand::Keys(args) => &args.options,
            LiteLlmCommand::Users(args) => &args.options,
            LiteLlmCommand::Teams(args) => &args.options,
            LiteLlmCommand::Chat(args) => &args.options,
            LiteLlmCommand::Http(args) => &args.options,
            LiteLlmCommand::Login(args) => &args.options,
            LiteLlmCommand::Logout(args) => &args.options,
            LiteLlmCommand::Whoami(args) => &args.options,
        }
    }
}

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models the key may use (GET /models).
    List,
    /// Show every deployment with its settings (GET /model/info).
    Info {
        /// Columns of the table, comma-separated
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            value_name = "COLUMNS",
            default_value = "id,public_model,upstream_model,updated_at"
        )]
        columns: Vec<InfoColumn>,
    },
    /// Show one deployment, by id or by model name.
    #[command(group(ArgGroup::new("which").args(["id", "name"]).required(true)))]
    Get {
        /// The deployment's id (model_info.id)
        #[arg(long, value_name = "MODEL_ID")]
        id: Option<String>,
        /// The public model name
        #[arg(long, value_name = "MODEL_NAME")]
        name: Option<String>,
    },
    /// Add a model deployment (POST /model/new).
    Add {
        /// Public name clients ask for
        #[arg(value_name = "MODEL_NAME")]
        model_name: String,
        /// litellm_params entry, KEY=VALUE (repeatable); `model` defaults to MODEL_NAME
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// model_info entry, KEY=VALUE (repeatable)
        #[arg(short = 'i', long = "info", value_name = "KEY=VALUE")]
        info: Vec<String>,
    },
    /// Change a deployment; given entries are merged into it (POST /model/update).
    Update {
        /// The deployment's id
        #[arg(value_name = "MODEL_ID")]
        model_id: String,
        /// litellm_params entry, KEY=VALUE (repeatable)
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// model_info entry, KEY=VALUE (repeatable)
        #[arg(short = 'i', long = "info", value_name = "KEY=VALUE")]
        info: Vec<String>,
        /// New public model name
        #[arg(long, value_name = "MODEL_NAME")]
        name: Option<String>,
    },
    /// Delete a deployment (POST /model/delete).
    Delete {
        /// The deployment's id
        #[arg(value_name = "MODEL_ID")]
        model_id: String,
    },
}

/// Columns of `models info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum InfoColumn {
    Id,
    PublicModel,
    UpstreamModel,
    ApiBase,
    CredentialName,
    InputCost,
    OutputCost,
    CreatedAt,
    UpdatedAt,
}

// ---------------------------------------------------------------------------
// credentials
// ---------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: CredentialsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List credentials; their values are masked (GET /credentials).
    List,
    /// Store a credential (POST /credentials).
    Create {
        /// Name models refer to it by (litellm_credential_name)
        #[arg(value_name = "CREDENTIAL_NAME")]
        credential_name: String,
        /// credential_info, a JSON object, e.g. '{"custom_llm_provider": "azure"}'
        #[arg(long, value_name = "JSON")]
        info: Option<String>,
        /// credential_values, a JSON object, e.g. '{"api_key": "sk-..."}'
        #[arg(long, value_name = "JSON")]
        values: String,
    },
    /// Show one credential, values masked (GET /credentials/by_name/NAME).
    Get {
        #[arg(value_name = "CREDENTIAL_NAME")]
        credential_name: String,
    },
    /// Delete a credential (DELETE /credentials/NAME).
    Delete {
        #[arg(value_name = "CREDENTIAL_NAME")]
        credential_name: String,
    },
}

// ---------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List keys, one page at a time (GET /key/list).
    List {
        /// Page number, from 1
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        page: Option<u64>,
        /// Keys per page
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        size: Option<u64>,
        /// Only the keys of this user
        #[arg(long, value_name = "ID")]
        user_id: Option<String>,
        /// Only the keys of this team
        #[arg(long, value_name = "ID")]
        team_id: Option<String>,
        /// Only the key with this alias
        #[arg(long, value_name = "ALIAS")]
        key_alias: Option<String>,
        /// Only the key with this hash (the `token` field)
        #[arg(long, value_name = "HASH")]
        key_hash: Option<String>,
    },
    /// Generate a key; its secret is shown once (POST /key/generate).
    Generate {
        /// Models the key may use, comma-separated [default: all]
        #[arg(long, value_name = "MODELS")]
        models: Option<String>,
        /// Maximum spend of the key in USD (sent as max_budget)
        #[arg(long = "spend", visible_alias = "max-budget", value_name = "USD",
              value_parser = parse_amount)]
        max_budget: Option<f64>,
        /// How long the key is valid: a number and s, m, h or d, e.g. 30s, 24h, 7d
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
        /// Unique alias of the key
        #[arg(long, value_name = "ALIAS")]
        key_alias: Option<String>,
        /// User the key belongs to
        #[arg(long, value_name = "ID")]
        user_id: Option<String>,
        /// Team the key belongs to
        #[arg(long, value_name = "ID")]
        team_id: Option<String>,
        /// Most requests the key may make
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_requests: Option<u64>,
        /// Model aliases, a JSON object, e.g. '{"gpt4": "gpt-4"}'
        #[arg(long, value_name = "JSON")]
        aliases: Option<String>,
        /// Metadata, a JSON object
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show a key's settings and spend (GET /key/info).
    Info {
        /// The key (sk-...)
        #[arg(long, value_name = "KEY")]
        key: String,
    },
    /// Delete keys by secret and/or alias (POST /key/delete).
    #[command(group(ArgGroup::new("which").args(["keys", "key_aliases"]).required(true).multiple(true)))]
    Delete {
        /// Keys to delete, comma-separated
        #[arg(long, value_name = "KEYS")]
        keys: Option<String>,
        /// Aliases of keys to delete, comma-separated
        #[arg(long, value_name = "ALIASES")]
        key_aliases: Option<String>,
    },
}

// ---------------------------------------------------------------------------
// users
// ---------------------------------------------------------------------------

/// The rate limits and budget window of a key or a user (docs/limits.md).
#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// Requests per minute
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rpm_limit: Option<u64>,
    /// Tokens (prompt and completion) per minute
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tpm_limit: Option<u64>,
    /// Requests in flight at once
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_parallel_requests: Option<u64>,
    /// The budget starts again after each window: 30s, 10m, 1h, 1d, 30d or 1mo
    #[arg(long, value_name = "DURATION")]
    pub budget_duration: Option<String>,
    /// Spend in USD past which an alert is raised (requests go on)
    #[arg(long, value_name = "USD", value_parser = parse_amount)]
    pub soft_budget: Option<f64>,
}

#[derive(Debug, Args)]
pub struct UsersArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users, one page at a time (GET /user/list).
    List {
        /// Page number, from 1
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        page: Option<u64>,
        /// Users per page
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        page_size: Option<u64>,
    },
    /// Create a user, with a key unless --no-key (POST /user/new).
    Create {
        /// The user's email address
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// The user's role
        #[arg(long, value_name = "ROLE", default_value = "internal_user",
              value_parser = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"])]
        role: String,
        /// Display name
        #[arg(long, value_name = "ALIAS")]
        alias: Option<String>,
        /// Team the user is in (repeatable)
        #[arg(long = "team", value_name = "TEAM_ID")]
        teams: Vec<String>,
        /// Maximum spend of the user in USD
        #[arg(long, value_name = "USD", value_parser = parse_amount)]
        max_budget: Option<f64>,
        /// Models the user may use, comma-separated [default: all]
        #[arg(long, value_name = "MODELS")]
        models: Option<String>,
        /// Id of the new user [default: chosen by the server]
        #[arg(long, value_name = "ID")]
        user_id: Option<String>,
        /// Do not create a key for the user
        #[arg(long)]
        no_key: bool,
        #[command(flatten)]
        limits: LimitArgs,
        /// Password for the proxy's own sign-in page; `-` reads one line from
        /// stdin, which keeps it out of `ps` and the shell history
        #[arg(long, value_name = "PASSWORD")]
        password: Option<String>,
    },
    /// Change a user; only the given fields change (POST /user/update).
    Update {
        /// The user's id
        #[arg(long, value_name = "USER_ID")]
        user_id: String,
        /// New email address
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
        /// New role
        #[arg(long, value_name = "ROLE",
              value_parser = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"])]
        role: Option<String>,
        /// New maximum spend in USD
        #[arg(long, value_name = "USD", value_parser = parse_amount)]
        max_budget: Option<f64>,
        /// Models the user may use, comma-separated
        #[arg(long, value_name = "MODELS")]
        models: Option<String>,
        /// New password for the proxy's own sign-in page; `-` reads one line
        /// from stdin, which keeps it out of `ps` and the shell history
        #[arg(long, value_name = "PASSWORD")]
        password: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show a user and their keys (GET /user/info).
    Get {
        /// The user's id
        #[arg(long = "id", value_name = "USER_ID")]
        user_id: String,
    },
    /// Delete users and their keys (POST /user/delete).
    Delete {
        /// Ids of the users
        #[arg(value_name = "USER_ID", required = true)]
        user_ids: Vec<String>,
    },
}

// ---------------------------------------------------------------------------
// teams
// ---------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct TeamsArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: TeamsCommand,
}

/// A team's settings, for `teams create` and `teams update`.
#[derive(Debug, Clone, Default, Args)]
pub struct TeamSettings {
    /// Unique display name of the team
    #[arg(long, value_name = "ALIAS")]
    pub alias: Option<String>,
    /// Models the team's keys may use, comma-separated [default: all]
    #[arg(long, value_name = "MODELS")]
    pub models: Option<String>,
    /// Maximum spend of the team in USD
    #[arg(long, value_name = "USD", value_parser = parse_amount)]
    pub max_budget: Option<f64>,
    /// Requests per minute of all the team's keys together
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64))]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute of all the team's keys together
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64))]
    pub tpm_limit: Option<u64>,
    /// Requests in flight at once, all the team's keys together
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64))]
    pub max_parallel_requests: Option<u64>,
    /// How long the budget lasts before it starts again: 30s, 1h, 1d, 30d, 1mo
    #[arg(long, value_name = "DURATION")]
    pub budget_duration: Option<String>,
    /// Metadata, a JSON object
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// List teams (GET /team/list).
    List {
        /// Only the teams this user is a member of
        #[arg(long, value_name = "ID")]
        user_id: Option<String>,
    },
    /// List the teams you may join by yourself (GET /team/available).
    Available,
    /// Show a team, its members and its keys (GET /team/info).
    Info {
        /// The team's id
        #[arg(long, value_name = "TEAM_ID")]
        team_id: String,
    },
    /// Create a team (POST /team/new).
    Create {
        /// Id of the new team [default: chosen by the server]
        #[arg(long, value_name = "TEAM_ID")]
        team_id: Option<String>,
        #[command(flatten)]
        settings: TeamSettings,
    },
    /// Change a team; only the given fields change (POST /team/update).
    Update {
        /// The team's id
        #[arg(long, value_name = "TEAM_ID")]
        team_id: String,
        #[command(flatten)]
        settings: TeamSettings,
    },
    /// Delete teams and their keys (POST /team/delete).
    Delete {
        /// Ids of the teams
        #[arg(value_name = "TEAM_ID", required = true)]
        team_ids: Vec<String>,
    },
    /// Add a user to a team (POST /team/member_add).
    #[command(group(ArgGroup::new("member").args(["user_id", "user_email"]).required(true)))]
    AddMember {
        /// The team's id
        #[arg(long, value_name = "TEAM_ID")]
        team_id: String,
        /// The user's id
        #[arg(long, value_name = "USER_ID")]
        user_id: Option<String>,
        /// The user's email, instead of the id
        #[arg(long, value_name = "EMAIL")]
        user_email: Option<String>,
        /// The member's role in the team
        #[arg(long, value_name = "ROLE", default_value = "user", value_parser = ["admin", "user"])]
        role: String,
    },
    /// Take a user out of a team (POST /team/member_delete).
    #[command(group(ArgGroup::new("member").args(["user_id", "user_email"]).required(true)))]
    RemoveMember {
        /// The team's id
        #[arg(long, value_name = "TEAM_ID")]
        team_id: String,
        /// The user's id
        #[arg(long, value_name = "USER_ID")]
        user_id: Option<String>,
        /// The user's email, instead of the id
        #[arg(long, value_name = "EMAIL")]
        user_email: Option<String>,
    },
    /// Refuse every request of the team's keys (POST /team/block).
    Block {
        /// The team's id
        #[arg(long, value_name = "TEAM_ID")]
        team_id: String,
    },
    /// Let the team's keys work again (POST /team/unblock).
    Unblock {
        /// The team's id
        #[arg(long, value_name = "TEAM_ID")]
        team_id: String,
    },
}

// ---------------------------------------------------------------------------
// chat, http
// ---------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: ChatCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Ask for a chat completion (POST /chat/completions).
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Model to ask
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// A message, "role:content" (repeatable, in conversation order)
    #[arg(
        short = 'm',
        long = "message",
        value_name = "ROLE:CONTENT",
        required = true
    )]
    pub messages: Vec<String>,
    /// Sampling temperature, 0 to 2
    #[arg(short = 't', long, value_name = "T", value_parser = parse_temperature)]
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0 to 1
    #[arg(long, value_name = "P", value_parser = parse_top_p)]
    pub top_p: Option<f64>,
    /// Number of answers
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=128))]
    pub n: Option<u32>,
    /// Most tokens in an answer
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: Option<u32>,
    /// Presence penalty, -2 to 2
    #[arg(long, value_name = "X", value_parser = parse_penalty)]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty, -2 to 2
    #[arg(long, value_name = "X", value_parser = parse_penalty)]
    pub frequency_penalty: Option<f64>,
    /// End-user id passed to the provider
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    #[command(subcommand)]
    pub command: HttpCommand,
}

#[derive(Debug, Subcommand)]
pub enum HttpCommand {
    /// Send one request and print the answer's body.
    Request(HttpRequestArgs),
}

#[derive(Debug, Args)]
pub struct HttpRequestArgs {
    /// HTTP method, e.g. GET or POST
    #[arg(value_name = "METHOD")]
    pub method: String,
    /// Path on the proxy, e.g. /chat/completions (a query string may follow)
    #[arg(value_name = "PATH")]
    pub path: String,
    /// JSON body, checked before sending
    #[arg(short = 'j', long, value_name = "JSON", conflicts_with = "data")]
    pub json: Option<String>,
    /// Body sent as it is; @FILE reads a file, @- stdin
    #[arg(short = 'd', long, value_name = "DATA")]
    pub data: Option<String>,
    /// Extra header, "Name: value" (repeatable)
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
}

// ---------------------------------------------------------------------------
// login, logout, whoami
// ---------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    /// Do not open a browser; only print the URL and the code
    #[arg(long)]
    pub no_browser: bool,
    /// Give up when nobody has signed in after this long, e.g. 90s or 5m
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
    /// Only delete the login file; the key stays valid on the server until it expires
    #[arg(long)]
    pub local_only: bool,
}

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub options: LiteLlmOptions,
}

// ---------------------------------------------------------------------------
// Value parsers
// ---------------------------------------------------------------------------

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

fn parse_float(text: &str, min: f64, max: f64) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| "not a number".to_string())?;
    if !value.is_finite() || value < min || value > max {
        return Err(if max == f64::MAX {
            format!("must be at least {min}")
        } else {
            format!("must be between {min} and {max}")
        });
    }
    Ok(value)
}

fn parse_amount(text: &str) -> Result<f64, String> {
    parse_float(text, 0.0, f64::MAX)
}

fn parse_temperature(text: &str) -> Result<f64, String> {
    parse_float(text, 0.0, 2.0)
}

fn parse_top_p(text: &str) -> Result<f64, String> {
    parse_float(text, 0.0, 1.0)
}

fn parse_penalty(text: &str) -> Result<f64, String> {
    parse_float(text, -2.0, 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        LiteLlmCli::command().debug_assert();
    }

    #[test]
    fn options_are_accepted_before_and_after_the_command() {
        let cli = LiteLlmCli::try_parse_from([
            "dheera_ai-proxy",
            "--base-url",
            "http://a",
            "keys",
            "list",
            "--format",
            "json",
            "--debug",
        ])
        .unwrap();
        let options = cli.command.options();
        assert_eq!(options.base_url.as_deref(), Some("http://a"));
        assert_eq!(options.format, Some(Format::Json));
        assert!(options.debug);
    }

    #[test]
    fn amounts_and_ranges() {
        assert_eq!(parse_amount("100"), Ok(100.0));
        assert!(parse_amount("-1").is_err());
        assert!(parse_amount("NaN").is_err());
        assert!(parse_temperature("2.5").is_err());
        assert_eq!(parse_penalty("-2"), Ok(-2.0));
    }
}
