//! `POST /manage/cache/purge`: removes stored answers from every worker's
//! shard of the response cache, by exact URL or by prefix.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{Answer, parse};
use crate::cache::Purge;
use crate::error::ProxyError;
use crate::worker::Worker;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    /// A path with its query (or a full URL): the entries for it.
    url: Option<String>,
    /// Every entry whose path (and query) starts with this.
    prefix: Option<String>,
}

pub async fn purge(worker: &Worker, body: &[u8]) -> Answer {
    let input: PurgeRequest = parse(body)?;
    let purge = match (input.url.as_deref(), input.prefix.as_deref()) {
        (Some(url), None) if !url.is_empty() => Purge::exact(url),
        (None, Some(prefix)) if !prefix.is_empty() => Purge::prefix(prefix),
        _ => {
            return Err(ProxyError::InvalidBody(
                "give exactly one of `url` and `prefix`, not empty".into(),
            ));
        }
    };
    let (target, mode) = match &purge {
        Purge::Exact(target) => (target.clone(), "exact"),
        Purge::Prefix(prefix) => (prefix.clone(), "prefix"),
    };
    // Returns once every worker has purged its own shard.
    let removed: usize = worker
        .control
        .on_each(move |w| w.cache.borrow_mut().purge(&purge))
        .await
        .into_iter()
        .sum();
    Ok((
        StatusCode::OK,
        Some(json!({
            "purged": removed,
            "mode": mode,
            "target": String::from_utf8_lossy(&target),
        })),
    ))
}
