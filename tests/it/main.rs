//! The integration tests, one module per area, built as one binary so that
//! the shared harness in `common` is compiled and linked once.
//! `cargo test --test it AREA` runs one area (e.g. `cargo test --test it access::`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

mod access;
mod audit;
mod benchmark_cli;
mod body_memory;
mod budgets;
mod cache;
mod cache_workers;
mod client_cli;
mod client_cli_output;
mod client_cli_server;
mod client_cli_teams;
mod client_login;
mod dialects;
mod errors;
mod events;
mod first_steps_cli;
mod full_disk;
mod keys;
mod lifecycle;
mod litellm_api;
mod litellm_cli_compat;
mod litellm_credentials;
mod litellm_keys;
mod litellm_models;
mod litellm_teams;
mod litellm_users;
mod login;
mod login_browser;
mod manage_cli;
mod management_api;
mod metrics;
mod mock_sdk;
mod node_id;
mod openai_chat;
mod operations;
mod postgres_harness;
mod providers;
mod proxy_passthrough;
mod rate_limits;
mod rate_limits_load;
mod request_bodies;
mod roles;
mod routing;
mod routing_config;
mod sdk_gateway;
mod setup_cli;
mod shared_failures;
mod shared_store;
mod smuggling;
mod streaming;
