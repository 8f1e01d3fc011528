//! llm-proxy: a share-nothing, thread-per-core gateway for OpenAI-compatible
//! LLM APIs, and the tools around it.
//!
//! Module map, by floor: a module imports only modules on floors below its
//! own (`scripts/floors.py` checks it). HOT: on the request path; COLD:
//! startup and tools; SHARED: both.
//!
//! ```text
//! main, bin      COLD    the binaries: parse the command line, run a command, map exit codes
//! cmd            COLD    one module per subcommand; the only place the tools are put together
//! loadgen, mock  COLD    the load generator of `benchmark`; the mock upstream (every dialect)
//! ---------------------------------------------------------------------------------------------
//! server         HOT     per-worker listeners, the connection loop and its dispatch to the
//!                        handlers, /health and /metrics, shutdown and draining
//! ---------------------------------------------------------------------------------------------
//! proxy          HOT     the request path (start at proxy/mod.rs): authenticate, plan, admit,
//!                        cache lookup, forward over the candidates, relay, charge, finish
//! manage         COLD    the management APIs (/manage/..., the LiteLLM-compatible one)
//! login          COLD    sign-in for the CLI under /sso/: start/poll, password page, OpenID Connect
//!                        (the three handlers never import each other)
//! ---------------------------------------------------------------------------------------------
//! worker         HOT     one worker's state: settings, pools, key cache and authentication,
//!                        quota and budget leases, model table, body budget, cache shard and the
//!                        other shards' news (cache_notes), counters,
//!                        event buffer; `control` runs cold-path jobs on every worker's thread
//! downstream     HOT     the client connection and its I/O: heads, bodies read whole, writes
//! api            COLD    what the local endpoints share: the answer finisher, store calls on the
//!                        blocking pool, 405s, query pairs, RFC 3339 times, audit records
//! ---------------------------------------------------------------------------------------------
//! cache          HOT     the HTTP response cache: a shard per worker, each holding every answer
//!                        (immutable, shared), byte-bounded LRU for the server, Cache-Control policy
//! events         HOT     request events: the per-worker buffer (HOT), the writer thread (SHARED),
//!                        the dispatcher and its sinks (COLD)
//! metrics        HOT     per-worker Prometheus counters, recorded by finish, rendered at scrape
//! upstream       HOT     per-worker keep-alive pools, plain and TLS upstream connections, DNS
//! ---------------------------------------------------------------------------------------------
//! error          HOT     the one table of failures: status, type, code, whose fault, retryable
//! record         HOT     what a request did (usage, cost, cache status, captured bodies)
//! ---------------------------------------------------------------------------------------------
//! http           HOT     HTTP/1.1 on owned buffers: heads, chunked framing, rewriting, request ids
//! store          SHARED  the LMDB stores (heed), the only module on LMDB, and the forms secrets
//!                        are stored in (key digests, encryption, password hashes)
//! settings       COLD    typed settings from flags, environment and the .env file
//! cli            COLD    the clap definitions
//! providers      SHARED  the provider table (api_providers.yaml), immutable behind an Arc
//! dialect        HOT     provider prefixes of `litellm_params.model` (dialect, default base URL,
//!                        how the key is sent; unknown prefixes refused) and the translations:
//!                        Anthropic both ways, Bedrock (with SigV4), Gemini, event by event
//! litellm_config COLD    a LiteLLM-style config.yaml: model_list, retries, fallbacks, master key
//! http_client    COLD    the blocking HTTP client of the cold path (commands, event sinks, OIDC)
//! runtime        COLD    worker threads, one monoio runtime each, pinning, driver fallback
//! alloc          SHARED  the global allocator (mimalloc) and giving freed memory back
//! ```

pub mod alloc;
pub mod api;
pub mod cache;
pub mod cli;
pub mod cmd;
pub mod dialect;
pub mod downstream;
pub mod error;
pub mod events;
pub mod http;
pub mod http_client;
pub mod litellm_config;
pub mod loadgen;
pub mod login;
pub mod manage;
pub mod metrics;
pub mod mock;
pub mod providers;
pub mod proxy;
pub mod record;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod store;
pub mod upstream;
pub mod worker;
