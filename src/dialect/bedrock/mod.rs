//! AWS Bedrock Runtime's Converse API (`POST /model/{id}/converse` and
//! `/converse-stream`) spoken for OpenAI Chat Completions clients: requests
//! translated and SigV4-signed on the way out, answers and event-stream
//! frames translated on the way back.
//!
//! - [`request::from_chat`]: a Chat Completions body → a Converse body, and
//!   the [`request::Reading`] the answer's translation needs;
//!   [`request::target`] the path it goes to;
//! - [`sign::sign`]: the SigV4 header lines for a request (service
//!   `bedrock`); [`sign::verify`] checks them (the mock's side);
//! - [`response::to_chat`]: a whole Converse answer → a Chat Completions one;
//! - [`stream::ChatStream`]: ConverseStream's event-stream frames → chunk
//!   events;
//! - [`error::to_openai_error`]: a Bedrock error answer → the OpenAI error
//!   envelope and its status.
//!
//! The mapping tables are in `docs/providers.md` ("Bedrock").

pub mod error;
pub mod request;
pub mod response;
pub mod sign;
pub mod stream;

#[cfg(test)]
mod tests;

pub use error::to_openai_error;
pub use request::{Reading, from_chat, target};
pub use response::to_chat;
pub use sign::{Credentials, sign};
pub use stream::ChatStream;

/// The SigV4 service name of Bedrock Runtime.
pub const SERVICE: &str = "bedrock";

/// The base URL of Bedrock Runtime in `region`.
pub fn default_base(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}
