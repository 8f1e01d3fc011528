//! Anthropic's Messages API (`POST /v1/messages`) spoken for OpenAI Chat
//! Completions clients: requests translated on the way out, answers and
//! stream events on the way back, one event at a time.
//!
//! - [`request::from_chat`]: a Chat Completions body → a Messages body, and
//!   the [`request::Reading`] the answer's translation needs;
//! - [`response::to_chat`]: a whole Messages answer → a Chat Completions one;
//! - [`stream::ChatStream`]: a Messages event stream → chunk events;
//! - [`error::to_openai_error`]: an Anthropic error answer → the OpenAI
//!   error envelope and its status.
//!
//! The mapping tables are in `docs/providers.md` ("Anthropic").

pub mod error;
pub mod request;
pub mod response;
pub mod stream;

#[cfg(test)]
mod tests;

pub use error::to_openai_error;
pub use request::{DEFAULT_MAX_TOKENS, Reading, from_chat};
pub use response::to_chat;
pub use stream::ChatStream;

pub mod ingress;

/// The `anthropic-version` the translations are written against.
pub const VERSION: &str = "2023-06-01";

/// `VERSION` as the header line sent with a request that names none.
pub const VERSION_FIELD: &[u8] = b"anthropic-version: 2023-06-01\r\n";
