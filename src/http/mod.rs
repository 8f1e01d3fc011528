//! HTTP/1.1 on owned buffers: head parsing, body framing, serialization.

pub mod body;
pub mod head;
pub mod io;
pub mod rewrite;

pub use body::{BodyTracker, ChunkedDecoder, Framing};
pub use head::{HeadError, Parsed, RequestHead, ResponseHead, Span};
