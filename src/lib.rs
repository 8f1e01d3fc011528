//! llm-proxy: a share-nothing, thread-per-core gateway for OpenAI-compatible
//! LLM APIs, and the tools around it.
//!
//! Module map (HOT: on the request path; COLD: startup and tools; SHARED: both):
//!
//! ```text
//! http       HOT     HTTP/1.1 on owned buffers: heads, chunked framing, serialization
//! server     HOT     per-worker listeners, the connection loop, local endpoints, /metrics,
//!                    draining, and `control`: cold-path jobs run on every worker's own thread
//! proxy      HOT     request phases: authenticate, route, forward, relay, finish; the error table;
//!                    the per-worker key cache and quota leases
//! cache      HOT     the per-worker HTTP response cache: byte-bounded LRU shards, Cache-Control
//!                    policy, tenant-scoped keys; served before the upstream is touched
//! events     HOT     request events: the per-worker buffer `finish` pushes into (HOT), the writer
//!                    thread that appends them to the event log (SHARED), the dispatcher and its
//!                    sinks (COLD)
//! store      SHARED  the LMDB stores (heed): projects, keys, usage ledger, audit log, and the
//!                    event log in its own environment; the only module on LMDB; and the forms
//!                    secrets are stored in (key digests, encryption, password hashes)
//! manage     COLD    the management API (/manage/...), served by the workers
//! login      COLD    sign-in for the CLI under /sso/: start/poll, password page, OpenID Connect
//! api        COLD    what manage and login share, one floor below both (which never import
//!                    each other): store calls on the blocking pool, 405s, query pairs,
//!                    RFC 3339 times, a key's allowed models, password hashing, audit records
//! metrics    HOT     per-worker Prometheus counters, recorded by finish, rendered together at scrape
//! upstream   HOT     per-worker keep-alive pools, plain and TLS upstream connections
//! providers  SHARED  the provider table (api_providers.yaml), immutable behind an Arc
//! runtime    COLD    worker threads, one monoio runtime each, pinning, driver fallback
//! settings   COLD    typed settings from flags, environment and the .env file
//! litellm_config COLD  a LiteLLM-style config.yaml: model_list, retries, fallbacks, master key
//! mock       COLD    the OpenAI-compatible mock upstream for tests, demos, benchmarks
//! cli, cmd   COLD    command-line definitions, one module per subcommand
//! http_client COLD   the blocking HTTP client of the cold path: JSON calls to a running server's
//!                    APIs for the commands, an agent for the event sinks and OpenID Connect
//! alloc      SHARED  the global allocator (mimalloc) and giving freed memory back to the system
//! loadgen    COLD    the load generator of `benchmark`: schedule, connections, exchanges, histograms
//! ```

pub mod alloc;
pub mod api;
pub mod cache;
pub mod cli;
pub mod cmd;
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
