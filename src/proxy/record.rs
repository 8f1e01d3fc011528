//! What one request did, filled in by the phases as they learn it and read
//! once by `finish`, for the metrics and the request's event. Nothing here
//! costs more than a field write on the request path.

use std::rc::Rc;

use super::keys::CachedKey;
use super::usage::Usage;
use crate::store::Money;

#[derive(Default)]
pub struct Record {
    /// The authenticated key (absent when authentication failed).
    pub key: Option<Rc<CachedKey>>,
    /// The model the client asked for, when the body was read for it.
    pub model: Option<Box<str>>,
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
