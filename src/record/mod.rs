//! What one request did, filled in by the phases as they learn it and read
//! once by `finish`, for the metrics and the request's event. Nothing here
//! costs more than a field write on the request path.

pub mod usage;

use crate::store::Money;
use usage::Usage;

#[derive(Default)]
pub struct Record {
    /// The model the client asked for, when the body was read for it.
    pub model: Option<Box<str>>,
    /// Whether `model` is a registered model (or one of the key's aliases)
    /// that the request was routed by: only those are metric labels.
    pub routed: bool,
    /// Unix ns when the request went upstream and its response head came
    /// back; unset when the upstream was not reached (cache hit, refusal).
    pub upstream_ns: Option<(u64, u64)>,
    /// Unix ns when the first response body bytes went to the client.
    pub first_byte_ns: Option<u64>,
    /// Token usage read from the answer (routed requests).
    pub usage: Option<Usage>,
    /// What the request cost (routed requests with a priced deployment).
    pub cost: Money,
    pub cache: CacheStatus,
    /// The response payload, kept while relayed when someone asked for it
    /// before the relay (`Capture::want`).
    pub response: Option<Capture>,
    /// Whether the response body reached the client whole.
    pub response_complete: bool,
    /// The request payload, kept as it is read or forwarded when someone
    /// asked for it before (`Capture::want`): events with bodies.
    pub request: Option<Capture>,
}

/// How the response cache treated the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheStatus {
    /// The cache was not consulted (not cacheable, or turned off).
    #[default]
    None,
    Hit,
    Miss,
    Bypass,
    /// A miss whose answer was stored.
    Stored,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::None => "none",
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Stored => "stored",
        }
    }
}

/// A payload kept while it is relayed (de-chunked), up to a limit: for the
/// response cache and for events that carry bodies.
#[derive(Debug, Default)]
pub struct Capture {
    pub bytes: Vec<u8>,
    limit: usize,
    /// More came than `limit`: `bytes` holds only the first part.
    pub overflowed: bool,
}

impl Capture {
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    /// Keeps up to `limit` bytes in all; raises the limit of a capture
    /// already asked for (two consumers, one copy).
    pub fn want(slot: &mut Option<Capture>, limit: usize) {
        match slot {
            Some(capture) => capture.limit = capture.limit.max(limit),
            None => *slot = Some(Capture::new(limit)),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.overflowed = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}
