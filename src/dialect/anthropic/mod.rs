//! Anthropic's Messages API (`POST /v1/messages`) spoken for OpenAI Chat
//! Completions clients: requests translated on the way out, answers and
//! stream events on the way back, one event at a time.

pub mod ingress;

/// The `anthropic-version` the translations are written against.
pub const VERSION: &str = "2023-06-01";
