//! Command-line definitions (clap) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "llm-proxy",
    version,
    about = "A thread-per-core gateway for OpenAI-compatible LLM APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway.
    Server(ServerArgs),
    /// Run an OpenAI-compatible mock upstream for tests, demos and benchmarks.
    MockUpstream(MockArgs),
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
    /// Require "Authorization: Bearer <KEY>" on /v1 requests
    #[arg(long, env = "MOCK_API_KEY")]
    pub api_key: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}
