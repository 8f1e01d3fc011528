//! What each node copies to PostgreSQL every second besides its reports:
//! its audit log, and its figures of use (with the sums read back; see
//! `store::usage`).

use std::sync::Arc;

use tokio_postgres::Client;

use super::SharedError;
use super::client::blocking;
use crate::store::Store;

/// Copies the audit entries this node wrote since the last copy (a
/// batch at a time; one copied twice is the same row).
pub(super) async fn ship_audit(
    main: &Client,
    store: &Arc<Store>,
    node: &str,
) -> Result<(), SharedError> {
    const BATCH: usize = 500;
    loop {
        let entries = blocking(store, |store| store.audit_to_ship(BATCH)).await?;
        let Some(last) = entries.last().map(|entry| entry.id) else {
            return Ok(());
        };
        let insert = main
            .prepare(
                "INSERT INTO llm_proxy_audit (node, id, at, entry)
                 VALUES ($1, $2, to_timestamp($3::float8 / 1000), $4)
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        for entry in &entries {
            let json = serde_json::to_value(entry)
                .map_err(|e| SharedError::Invalid(format!("an audit entry: {e}")))?;
            main.execute(
                &insert,
                &[&node, &(entry.id as i64), &(entry.at as f64), &json],
            )
            .await?;
        }
        blocking(store, move |store| store.audit_shipped(last)).await?;
        if entries.len() < BATCH {
            return Ok(());
        }
    }
}

/// Publishes this node's figures of use that changed, then reads the
/// nodes' sums of every party whose figures changed on any node since the
/// last read (with a margin: a row is stamped when its transaction began).
pub(super) async fn share_usage(
    main: &Client,
    store: &Arc<Store>,
    node: &str,
    seen: &mut Option<f64>,
) -> Result<(), SharedError> {
    let changed = blocking(store, |store| store.usage_to_publish()).await?;
    if !changed.is_empty() {
        let upsert = main
            .prepare(
                "INSERT INTO llm_proxy_node_usage
                     (node, party, requests, spend, window_end, last_used_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, now())
                 ON CONFLICT (node, party) DO UPDATE SET requests = excluded.requests,
                     spend = excluded.spend, window_end = excluded.window_end,
                     last_used_at = excluded.last_used_at, updated_at = now()",
            )
            .await?;
        let clamp = |n: u64| n.min(i64::MAX as u64) as i64;
        for (party, figures) in &changed {
            main.execute(
                &upsert,
                &[
                    &node,
                    party,
                    &clamp(figures.requests),
                    &clamp(figures.spend),
                    &figures.window_end,
                    &figures.last_used_at,
                ],
            )
            .await?;
        }
        blocking(store, move |store| store.usage_published(&changed)).await?;
    }
    let now: f64 = main
        .query_one("SELECT extract(epoch FROM now())::float8", &[])
        .await?
        .get(0);
    let since = seen.map_or(0.0, |seen| seen - 10.0);
    let rows = main
        .query(
            "SELECT party, sum(requests)::bigint,
                 coalesce(sum(spend) FILTER (WHERE window_end = 0
                     OR window_end > extract(epoch FROM now()) * 1000), 0)::bigint,
                 max(window_end), max(last_used_at)
             FROM llm_proxy_node_usage
             WHERE party IN (SELECT party FROM llm_proxy_node_usage
                             WHERE updated_at > to_timestamp($1))
             GROUP BY party",
            &[&since],
        )
        .await?;
    let sums: Vec<(String, crate::store::PartyUse)> = rows
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                crate::store::PartyUse {
                    requests: row.get::<_, i64>(1).max(0) as u64,
                    spend: row.get::<_, i64>(2).max(0) as u64,
                    window_end: row.get(3),
                    last_used_at: row.get(4),
                },
            )
        })
        .collect();
    if !sums.is_empty() {
        blocking(store, move |store| store.set_cluster_usage(&sums)).await?;
    }
    *seen = Some(now);
    Ok(())
}
