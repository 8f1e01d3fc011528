//! The PostgreSQL side of limits across nodes (see `store::escrow` for
//! the node's side): lease terms, slices of allowances, reports of use
//! applied once, and what a clean stop hands back.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::client::{blocking, store_error};
use super::{SharedConfig, SharedError, SliceAsk, TermClock};
use crate::store::Store;
use crate::store::escrow::{Batch, Slice};

/// Renews this node's term, or starts one (a new node, or one whose term
/// expired); returns the term. The node's clock starts from the renewal.
pub(super) async fn hold_term(
    main: &Client,
    store: &Arc<Store>,
    config: &SharedConfig,
    clock: &TermClock,
) -> Result<String, SharedError> {
    let held = blocking(store, |store| store.lease_term()).await?;
    if let Some(term) = held {
        let term = term.to_string();
        let asked = std::time::Instant::now();
        if renew_term(main, &term, config.term).await? {
            clock.renewed(asked);
            return Ok(term);
        }
    }
    let term = crate::store::crypto::new_id().map_err(store_error)?;
    blocking(store, move |store| store.begin_term(term)).await?;
    let term = term.to_string();
    let asked = std::time::Instant::now();
    main.execute(
        "INSERT INTO llm_proxy_lease_terms (term, node, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
        &[&term, &config.node, &config.term.as_secs_f64()],
    )
    .await?;
    clock.renewed(asked);
    Ok(term)
}

/// Pushes a live term's end forward; false when it has expired.
pub(super) async fn renew_term(
    main: &Client,
    term: &str,
    length: Duration,
) -> Result<bool, SharedError> {
    let renewed = main
        .execute(
            "UPDATE llm_proxy_lease_terms SET expires_at = now() + make_interval(secs => $2)
             WHERE term = $1 AND NOT expired",
            &[&term, &length.as_secs_f64()],
        )
        .await?;
    Ok(renewed == 1)
}

/// Expires the terms not renewed in time (any node may) and counts what
/// they held as used.
pub(super) async fn reclaim_expired(main: &Client) -> Result<(), SharedError> {
    main.execute(
        "WITH dead AS (
             UPDATE llm_proxy_lease_terms SET expired = true
             WHERE expires_at < now() AND NOT expired RETURNING term
         ), gone AS (
             DELETE FROM llm_proxy_leases l USING dead WHERE l.term = dead.term
             RETURNING l.party, l.meter, l.held
         )
         UPDATE llm_proxy_allowances a
         SET leased = a.leased - g.held, used = a.used + g.held,
             written_off = a.written_off + g.held
         FROM (SELECT party, meter, sum(held)::bigint AS held FROM gone GROUP BY party, meter) g
         WHERE a.party = g.party AND a.meter = g.meter",
        &[],
    )
    .await?;
    Ok(())
}

/// Drops the allowances of minutes of rate limits two minutes gone: of no
/// more use. A scan of the allowances, so a node runs it once a minute.
pub(super) async fn drop_past_minutes(main: &Client) -> Result<(), SharedError> {
    main.batch_execute(
        "WITH old AS (
             DELETE FROM llm_proxy_allowances
             WHERE (meter LIKE 'rpm@%' OR meter LIKE 'tpm@%')
               AND split_part(meter, '@', 2)::bigint
                   < floor(extract(epoch FROM now()) / 60)::bigint - 2
             RETURNING party, meter
         )
         DELETE FROM llm_proxy_leases l USING old WHERE l.party = old.party AND l.meter = old.meter",
    )
    .await?;
    Ok(())
}

/// A slice of what is left of an allowance: at most `want`, a quarter of
/// what is left while much is, down to what is asked for near the end;
/// none when less than `at_least` is left.
pub(super) async fn take_slice(
    main: &mut Client,
    term: &str,
    ask: &SliceAsk,
) -> Result<Slice, SharedError> {
    let clamp = |n: u64| n.min(i64::MAX as u64) as i64;
    let txn = main.transaction().await?;
    let live = txn
        .query_opt(
            "SELECT 1 FROM llm_proxy_lease_terms WHERE term = $1 AND NOT expired FOR SHARE",
            &[&term],
        )
        .await?;
    if live.is_none() {
        return Ok(Slice::Unavailable);
    }
    if let Some(limit) = ask.limit {
        txn.execute(
            "INSERT INTO llm_proxy_allowances (party, meter, lim) VALUES ($1, $2, $3)
             ON CONFLICT (party, meter) DO UPDATE SET lim = excluded.lim",
            &[&ask.party, &ask.meter, &limit],
        )
        .await?;
    }
    let left: Option<i64> = txn
        .query_opt(
            "SELECT lim - used - leased FROM llm_proxy_allowances
             WHERE party = $1 AND meter = $2 AND lim IS NOT NULL FOR UPDATE",
            &[&ask.party, &ask.meter],
        )
        .await?
        .map(|row| row.get(0));
    let left = left.unwrap_or(0).max(0);
    let at_least = clamp(ask.at_least).max(1);
    if left < at_least {
        txn.commit().await?;
        return Ok(Slice::Exhausted { left: left as u64 });
    }
    let slice = (left / 4)
        .clamp(at_least, clamp(ask.want).max(at_least))
        .min(left);
    txn.execute(
        "UPDATE llm_proxy_allowances SET leased = leased + $3 WHERE party = $1 AND meter = $2",
        &[&ask.party, &ask.meter, &slice],
    )
    .await?;
    txn.execute(
        "INSERT INTO llm_proxy_leases (term, party, meter, held) VALUES ($1, $2, $3, $4)
         ON CONFLICT (term, party, meter) DO UPDATE SET held = llm_proxy_leases.held + excluded.held",
        &[&term, &ask.party, &ask.meter, &slice],
    )
    .await?;
    txn.commit().await?;
    Ok(Slice::Granted(slice as u64))
}

/// Sends the outbox's batches (after moving what was used since the last
/// report into a new one; with `return_all`, everything not handed to a
/// worker too), each applied once.
pub(super) async fn send_reports(
    main: &mut Client,
    store: &Arc<Store>,
    return_all: bool,
) -> Result<(), SharedError> {
    let batches = blocking(store, move |store| store.prepare_reports(return_all)).await?;
    for (number, batch) in batches {
        apply_batch(main, number, &batch).await?;
        blocking(store, move |store| store.report_sent(number)).await?;
    }
    Ok(())
}

pub(super) async fn apply_batch(
    main: &mut Client,
    number: u64,
    batch: &Batch,
) -> Result<(), SharedError> {
    let term = uuid::Uuid::from_bytes(batch.term).to_string();
    let txn = main.transaction().await?;
    let first = txn
        .execute(
            "INSERT INTO llm_proxy_reports (term, batch) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&term, &(number as i64)],
        )
        .await?;
    if first == 0 {
        // Applied before; its answer was lost.
        return Ok(());
    }
    for entry in &batch.entries {
        let used = entry.used.min(i64::MAX as u64) as i64;
        let returned = entry.returned.min(i64::MAX as u64) as i64;
        let held = txn
            .execute(
                "UPDATE llm_proxy_leases SET held = greatest(0, held - $4 - $5)
                 WHERE term = $1 AND party = $2 AND meter = $3",
                &[&term, &entry.party, &entry.meter, &used, &returned],
            )
            .await?;
        if held == 1 {
            txn.execute(
                "UPDATE llm_proxy_allowances
                 SET used = used + $3, leased = greatest(0, leased - $3 - $4)
                 WHERE party = $1 AND meter = $2",
                &[&entry.party, &entry.meter, &used, &returned],
            )
            .await?;
        } else {
            // The term expired and what it held was counted as used:
            // what was handed back is not.
            txn.execute(
                "UPDATE llm_proxy_allowances
                 SET used = greatest(0, used - $4), written_off = greatest(0, written_off - $3 - $4)
                 WHERE party = $1 AND meter = $2",
                &[&entry.party, &entry.meter, &used, &returned],
            )
            .await?;
        }
    }
    txn.commit().await?;
    Ok(())
}

/// At a clean stop: reports, hands back every slice's unused part, and
/// ends the term (what it still holds, which should be nothing, counts as
/// used).
pub(super) async fn give_back(
    main: &mut Client,
    store: &Arc<Store>,
    term: &str,
) -> Result<(), SharedError> {
    send_reports(main, store, true).await?;
    let txn = main.transaction().await?;
    txn.execute(
        "WITH gone AS (
             DELETE FROM llm_proxy_leases WHERE term = $1 RETURNING party, meter, held
         )
         UPDATE llm_proxy_allowances a
         SET leased = a.leased - g.held, used = a.used + g.held,
             written_off = a.written_off + g.held
         FROM (SELECT party, meter, sum(held)::bigint AS held FROM gone GROUP BY party, meter) g
         WHERE a.party = g.party AND a.meter = g.meter",
        &[&term],
    )
    .await?;
    txn.execute(
        "UPDATE llm_proxy_lease_terms SET expired = true WHERE term = $1",
        &[&term],
    )
    .await?;
    txn.commit().await?;
    blocking(store, |store| store.end_term()).await
}
