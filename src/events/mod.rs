//! Request events: what each proxied request did, written to the event log
//! and delivered from there to sinks. Budget alerts (a soft budget crossed,
//! `stored::BudgetAlert`) take the same way, from the worker that saw them.
//!
//! - `buffer` (HOT): the per-worker buffer `finish` pushes one event into;
//!   no syscall, no lock, no serialization there.
//! - `writer` (SHARED): the process-wide writer thread: encodes batches
//!   (`stored`, compact binary), appends them to the event log, compacts it.
//! - `json` (COLD): a stored event as the JSON object sinks receive.
//! - `dispatch`, `sinks` (COLD): `llm-proxy dispatcher`: read the log from
//!   a durable cursor and deliver to a file, an HTTP endpoint, Lunary or
//!   Helicone, at least once and without a gap.

pub mod buffer;
pub mod dispatch;
pub mod json;
pub mod sinks;
pub mod stored;
pub mod writer;

use crate::http::RequestId;
use crate::record::usage::Usage;
use crate::record::{CacheStatus, Capture};
use crate::store::Money;

pub use buffer::EventBuffer;
pub use writer::EventWriter;

/// One request, as `finish` saw it: plain data, moved to the writer thread.
pub struct RequestEvent {
    pub request_id: RequestId,
    /// When `finish` ran (made wall-clock time on the writer: one clock
    /// read per event), and how long the request took until then.
    pub end: std::time::Instant,
    pub duration_ns: u64,
    pub worker: u16,
    pub key: Option<KeyIds>,
    pub model: Option<Box<str>>,
    pub method: http::Method,
    pub path: InlinePath,
    pub status: u16,
    /// The error code (of the error table) when the request failed.
    pub error: Option<&'static str>,
    /// Unix ns when the request went upstream and its response head came back.
    pub upstream_ns: Option<(u64, u64)>,
    pub first_byte_ns: Option<u64>,
    pub usage: Option<Usage>,
    pub cost: Money,
    pub cache: CacheStatus,
    pub response_complete: bool,
    /// Only when `EVENT_LOG_BODIES` is on.
    pub bodies: Option<Box<Bodies>>,
}

/// Who made the request (never the secret).
pub struct KeyIds {
    pub key_id: uuid::Uuid,
    pub project_id: Option<uuid::Uuid>,
    pub user_id: Option<Box<str>>,
}

pub struct Bodies {
    pub request: Option<Capture>,
    pub response: Option<Capture>,
}

/// Longest request path kept in an event (longer ones are cut).
const MAX_PATH: usize = 94;

/// A request path held inline: no allocation on the request path.
pub struct InlinePath {
    len: u8,
    bytes: [u8; MAX_PATH],
}

impl InlinePath {
    pub fn new(path: &[u8]) -> Self {
        let len = path.len().min(MAX_PATH);
        let mut bytes = [0; MAX_PATH];
        bytes[..len].copy_from_slice(&path[..len]);
        Self {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}
