//! Google AI Studio's Gemini API (`POST /v1beta/models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse`) spoken for OpenAI Chat Completions
//! clients: requests translated on the way out, answers and stream chunks
//! on the way back, one chunk at a time.
//!
//! - [`request::from_chat`]: a Chat Completions body → a generateContent
//!   body, and the [`request::Reading`] the answer's translation needs;
//! - [`request::target`]: the path and query of the request for a model;
//! - [`response::to_chat`]: a whole GenerateContentResponse → a Chat
//!   Completions answer;
//! - [`stream::ChatStream`]: a stream of GenerateContentResponse chunks →
//!   chunk events;
//! - [`error::to_openai_error`]: a Gemini error answer → the OpenAI error
//!   envelope and its status.
//!
//! The mapping tables are in `docs/providers.md` ("Gemini").

pub mod error;
pub mod request;
pub mod response;
pub mod stream;

#[cfg(test)]
mod tests;

pub use error::to_openai_error;
pub use request::{Reading, from_chat, target};
pub use response::to_chat;
pub use stream::ChatStream;

/// Where a `gemini/` deployment goes when it names no `api_base`.
pub const DEFAULT_BASE: &str = "https://generativelanguage.googleapis.com";

/// The header that carries the API key.
pub const KEY_HEADER: &str = "x-goog-api-key";
