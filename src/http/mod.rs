//! HTTP/1.1 on owned buffers: head parsing, body framing, serialization;
//! and the roots a TLS client trusts (`tls`).

pub mod body;
pub mod head;
pub mod io;
pub mod request_id;
pub mod rewrite;
pub mod tls;

pub use body::{BodyTracker, ChunkedDecoder, Framing};
pub use head::{HeadError, Parsed, RequestHead, ResponseHead, Span};
pub use request_id::RequestId;
