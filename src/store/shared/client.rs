//! The PostgreSQL thread: a single-threaded tokio runtime holding three
//! connections: one for queries (catching up, heartbeats), one that
//! `LISTEN`s for changes, and one for write sessions (one at a time per
//! node; PostgreSQL serialises them across nodes anyway). When a
//! connection breaks, the thread reconnects with backoff; meanwhile the
//! node serves from its replica and management writes are refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, GenericClient};

use super::{
    AllowanceLimit, Change, Command, Finish, Shared, SharedConfig, SharedError, SliceAsk,
    TermClock, WriteSession, schema, tls,
};
use crate::store::Store;
use crate::store::escrow::{Batch, Slice};
use crate::store::journal::{Row, Table};

/// The channel changes are announced on (payload: the change number).
const CHANNEL: &str = "llm_proxy_changes";
/// How often a node says it is alive and looks for changes it may have
/// missed (a notification is lost when its connection breaks).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a write session may stay open without its writer finishing.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the thread, connected, migrated and caught up; or, when
/// PostgreSQL cannot be reached but this replica was filled before,
/// serving from the replica while it tries again.
pub(crate) fn spawn(config: SharedConfig, store: Arc<Store>) -> Result<Shared, SharedError> {
    let (commands, inbox) = mpsc::unbounded_channel();
    let up = Arc::new(AtomicBool::new(false));
    let term = Arc::new(TermClock::new(config.term));
    let (ready, started) = std::sync::mpsc::channel();
    let node = config.node.clone();
    let thread = std::thread::Builder::new()
        .name("postgres".into())
        .spawn({
            let up = up.clone();
            let term = term.clone();
            move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(SharedError::Invalid(format!(
                            "cannot start the PostgreSQL thread: {error}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(run(config, store, inbox, up, term, ready));
            }
        })
        .map_err(|e| SharedError::Invalid(format!("cannot start the PostgreSQL thread: {e}")))?;
    started
        .recv()
        .map_err(|_| SharedError::Invalid("the PostgreSQL thread stopped at start".into()))??;
    Ok(Shared {
        node,
        commands,
        up,
        term,
        thread: std::sync::Mutex::new(Some(thread)),
    })
}

type Ready = std::sync::mpsc::Sender<Result<(), SharedError>>;

async fn run(
    config: SharedConfig,
    store: Arc<Store>,
    mut inbox: mpsc::UnboundedReceiver<Command>,
    up: Arc<AtomicBool>,
    term: Arc<TermClock>,
    ready: Ready,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = connected(&config, &store, &mut inbox, &up, &term, &mut ready).await;
        up.store(false, Ordering::Release);
        let error = match outcome {
            Ok(()) => return,
            Err(error) if error.is_fatal() => {
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(error));
                    }
                    None => tracing::error!(%error, "shared store: stopped"),
                }
                return;
            }
            Err(error) => error,
        };
        if let Some(start) = ready.take() {
            // A replica filled before can serve; an empty one cannot.
            match store.replica_state() {
                Ok(Some(_)) => {
                    tracing::warn!(%error, "shared store unreachable at start: serving from this node's replica");
                    let _ = start.send(Ok(()));
                }
                _ => {
                    let _ = start.send(Err(error));
                    return;
                }
            }
        } else {
            tracing::warn!(%error, retry_in = ?backoff, "shared store unreachable: serving from this node's replica");
        }
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                command = inbox.recv() => match command {
                    None => return,
                    Some(Command::Shutdown { reply }) => {
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => refuse(command, &error),
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Answers a command that needs PostgreSQL while it is unreachable.
fn refuse(command: Command, error: &SharedError) {
    let unavailable = || {
        SharedError::Unavailable(match error {
            SharedError::Unavailable(reason) => reason.clone(),
            other => other.to_string(),
        })
    };
    match command {
        Command::BeginWrite { reply, .. } => {
            let _ = reply.send(Err(unavailable()));
        }
        Command::CatchUp { reply } => {
            let _ = reply.send(Err(unavailable()));
        }
        Command::TakeSlice { reply, .. } => {
            let _ = reply.send(Err(unavailable()));
        }
        Command::WaitForNodes { reply, .. } => {
            let _ = reply.send(Err(unavailable()));
        }
        Command::Shutdown { reply } => {
            let _ = reply.send(());
        }
    }
}

async fn open(config: &tokio_postgres::Config) -> Result<Client, SharedError> {
    let (client, connection) = config.connect(tls::connector()?).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Connects, checks the schema and the cluster, catches up, then serves
/// commands and notifications until a connection breaks (an error) or
/// the thread is told to stop (`Ok`).
async fn connected(
    config: &SharedConfig,
    store: &Arc<Store>,
    inbox: &mut mpsc::UnboundedReceiver<Command>,
    up: &AtomicBool,
    clock: &TermClock,
    ready: &mut Option<Ready>,
) -> Result<(), SharedError> {
    let pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| SharedError::Invalid(format!("DATABASE_URL: {e}")))?;
    let mut main = open(&pg).await?;
    let (_, cluster) = schema::migrate(&mut main).await?;
    {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.join_cluster(&cluster))
            .await
            .map_err(|e| SharedError::Invalid(e.to_string()))?
            .map_err(|e| SharedError::Invalid(e.to_string()))?;
    }
    let writer = open(&pg).await?;
    writer
        .batch_execute(&format!(
            "SET lock_timeout = '{}ms'; SET idle_in_transaction_session_timeout = '{}ms'",
            super::WRITE_LOCK_TIMEOUT.as_millis(),
            SESSION_TIMEOUT.as_millis()
        ))
        .await?;
    let writer = Arc::new(Mutex::new(writer));
    let (_listener, mut notes) = listen(&pg).await?;
    main.execute(
        "INSERT INTO llm_proxy_nodes (node) VALUES ($1)
         ON CONFLICT (node) DO UPDATE SET started_at = now(), seen_at = now()",
        &[&config.node],
    )
    .await?;
    catch_up(&main, store, &config.node).await?;
    let term = hold_term(&main, store, config, clock).await?;
    send_reports(&mut main, store, false).await?;
    up.store(true, Ordering::Release);
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    } else {
        tracing::info!("shared store reachable again");
    }
    let mut term = term;
    // When the nodes' sums of use were last read (PostgreSQL's clock).
    let mut usage_seen: Option<f64> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            command = inbox.recv() => match command {
                None => return Ok(()),
                Some(Command::Shutdown { reply }) => {
                    if let Err(error) = give_back(&mut main, store, &term).await {
                        tracing::warn!(%error, "shared store: this node's slices of limits could not be handed back; they are taken back when its term expires");
                    }
                    let _ = reply.send(());
                    return Ok(());
                }
                Some(Command::TakeSlice { ask, reply }) => {
                    let slice = take_slice(&mut main, &term, &ask).await;
                    let failed = matches!(&slice, Err(error) if error.is_unreachable());
                    let _ = reply.send(slice);
                    if failed {
                        return Err(SharedError::Unavailable("a lease could not be taken".into()));
                    }
                }
                Some(Command::BeginWrite { applied, reply }) => {
                    tokio::spawn(write_session(writer.clone(), applied, reply));
                }
                Some(Command::CatchUp { reply }) => {
                    let _ = reply.send(catch_up(&main, store, &config.node).await);
                }
                Some(Command::WaitForNodes { change, timeout, reply }) => {
                    let pg = pg.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(wait_for_nodes(&pg, change, timeout).await);
                    });
                }
            },
            note = notes.recv() => {
                if note.is_none() {
                    return Err(SharedError::Unavailable("the LISTEN connection closed".into()));
                }
                // Several notifications may be waiting: one catch-up covers them all.
                while notes.try_recv().is_ok() {}
                catch_up(&main, store, &config.node).await?;
            },
            _ = heartbeat.tick() => {
                let asked = std::time::Instant::now();
                if renew_term(&main, &term, config.term).await? {
                    clock.renewed(asked);
                } else {
                    clock.expire();
                    tracing::warn!("shared store: this node's lease term expired; what it held of limits is counted as used");
                    let renewed = hold_term(&main, store, config, clock).await?;
                    term.clone_from(&renewed);
                }
                reclaim_expired(&main).await?;
                send_reports(&mut main, store, false).await?;
                ship_audit(&main, store, &config.node).await?;
                share_usage(&main, store, &config.node, &mut usage_seen).await?;
                catch_up(&main, store, &config.node).await?;
            },
        }
    }
}

/// A connection that listens on the changes channel: each notification
/// comes out of the returned receiver, which closes with the connection.
/// The client must be kept as long as notifications are wanted.
async fn listen(
    config: &tokio_postgres::Config,
) -> Result<(Client, mpsc::UnboundedReceiver<()>), SharedError> {
    let (client, mut connection) = config.connect(tls::connector()?).await?;
    let (notify, notes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if notify.send(()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "PostgreSQL LISTEN connection ended");
                    return;
                }
                None => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, notes))
}

/// Rows written after change `applied`, in the order of their changes.
async fn changes_since(
    client: &impl GenericClient,
    applied: u64,
) -> Result<Vec<Change>, SharedError> {
    let rows = client
        .query(
            "SELECT tbl, id, body, change_no FROM llm_proxy_records
             WHERE change_no > $1 ORDER BY change_no",
            &[&(applied as i64)],
        )
        .await?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        let name: &str = row.get(0);
        let Some(table) = Table::named(name) else {
            return Err(SharedError::Invalid(format!(
                "the shared store has rows of an unknown table {name:?}"
            )));
        };
        changes.push(Change {
            no: row.get::<_, i64>(3) as u64,
            row: Row {
                table,
                id: row.get(1),
                body: row.get(2),
            },
        });
    }
    Ok(changes)
}

/// Applies to the replica what PostgreSQL has beyond it, and records in
/// the nodes table how far this node is.
async fn catch_up(main: &Client, store: &Arc<Store>, node: &str) -> Result<u64, SharedError> {
    let applied = store.applied_change().map_err(store_error)?;
    let changes = changes_since(main, applied).await?;
    let applied = if changes.is_empty() {
        applied
    } else {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.apply_changes(&changes))
            .await
            .map_err(|e| SharedError::Invalid(e.to_string()))?
            .map_err(store_error)?
    };
    main.execute(
        "UPDATE llm_proxy_nodes SET applied = $2, seen_at = now() WHERE node = $1",
        &[&node, &(applied as i64)],
    )
    .await?;
    Ok(applied)
}

fn store_error(error: crate::store::StoreError) -> SharedError {
    SharedError::Invalid(format!("the replica: {error}"))
}

/// A management write's session (see `WriteSession`): locks the change
/// counter, hands the writer what its replica missed, and commits its rows
/// as the next change, or rolls back when the writer drops the session.
async fn write_session(
    writer: Arc<Mutex<Client>>,
    applied: u64,
    reply: oneshot::Sender<Result<WriteSession, SharedError>>,
) {
    let mut client = writer.lock().await;
    let opened = async {
        let txn = client.transaction().await?;
        let base: i64 = txn
            .query_one("SELECT change_no FROM llm_proxy_cluster FOR UPDATE", &[])
            .await?
            .get(0);
        let missed = changes_since(&txn, applied).await?;
        Ok::<_, SharedError>((txn, base as u64, missed))
    }
    .await;
    let (txn, base, missed) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = reply.send(Err(error));
            return;
        }
    };
    let (finish, finished) = oneshot::channel();
    let (done, answer) = oneshot::channel();
    let session = WriteSession {
        base,
        missed,
        finish,
        done: answer,
    };
    if reply.send(Ok(session)).is_err() {
        return;
    }
    // A writer that drops its session (or takes too long) rolls back: the
    // transaction's drop does.
    let Ok(Ok(Finish::Commit(rows, limits))) =
        tokio::time::timeout(SESSION_TIMEOUT, finished).await
    else {
        return;
    };
    let change = base + 1;
    let committed = async {
        write_rows(&txn, &rows, change).await?;
        set_limits(&txn, &limits).await?;
        txn.execute(
            "UPDATE llm_proxy_cluster SET change_no = $1",
            &[&(change as i64)],
        )
        .await?;
        txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.to_string()])
            .await?;
        txn.commit().await?;
        Ok(change)
    }
    .await;
    let _ = done.send(committed);
}

async fn write_rows(
    client: &impl GenericClient,
    rows: &[Row],
    change: u64,
) -> Result<(), SharedError> {
    let upsert = client
        .prepare(
            "INSERT INTO llm_proxy_records (tbl, id, body, change_no) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tbl, id) DO UPDATE SET body = excluded.body, change_no = excluded.change_no",
        )
        .await?;
    for row in rows {
        client
            .execute(
                &upsert,
                &[&row.table.name, &row.id, &row.body, &(change as i64)],
            )
            .await?;
    }
    Ok(())
}

/// How long ago a node must have been seen to count as live.
const LIVE_WITHIN_SECS: f64 = 5.0;

/// Polls the nodes table (on a connection of its own: the wait must not
/// hold up this node's catch-up) until every live node applied `change`.
async fn wait_for_nodes(
    pg: &tokio_postgres::Config,
    change: u64,
    timeout: Duration,
) -> Result<super::NodesApplied, SharedError> {
    let client = open(pg).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rows = client
            .query(
                "SELECT node, applied >= $1 FROM llm_proxy_nodes
                 WHERE seen_at > now() - make_interval(secs => $2) ORDER BY node",
                &[&(change as i64), &LIVE_WITHIN_SECS],
            )
            .await?;
        let mut state = super::NodesApplied {
            live: rows.len(),
            ..Default::default()
        };
        for row in rows {
            if row.get::<_, bool>(1) {
                state.applied += 1;
            } else {
                state.pending.push(row.get(0));
            }
        }
        if state.pending.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Renews this node's term, or starts one (a new node, or one whose term
/// expired); returns the term. The node's clock starts from the renewal.
async fn hold_term(
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
async fn renew_term(main: &Client, term: &str, length: Duration) -> Result<bool, SharedError> {
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
async fn reclaim_expired(main: &Client) -> Result<(), SharedError> {
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
    // Minutes of rate limits two minutes gone are of no more use.
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
async fn take_slice(main: &mut Client, term: &str, ask: &SliceAsk) -> Result<Slice, SharedError> {
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
async fn send_reports(
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

async fn apply_batch(main: &mut Client, number: u64, batch: &Batch) -> Result<(), SharedError> {
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
async fn give_back(main: &mut Client, store: &Arc<Store>, term: &str) -> Result<(), SharedError> {
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

/// Copies the audit entries this node wrote since the last copy (a
/// batch at a time; one copied twice is the same row).
async fn ship_audit(main: &Client, store: &Arc<Store>, node: &str) -> Result<(), SharedError> {
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
async fn share_usage(
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

/// Runs a store call (an LMDB write) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    call: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, SharedError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|e| SharedError::Invalid(e.to_string()))?
        .map_err(store_error)
}

/// Sets (or removes) the limits of allowances. What was used and leased
/// stays: a limit lowered below it leaves nothing to lease.
async fn set_limits(
    client: &impl GenericClient,
    limits: &[AllowanceLimit],
) -> Result<(), SharedError> {
    for limit in limits {
        match limit.limit {
            Some(value) => {
                client
                    .execute(
                        "INSERT INTO llm_proxy_allowances (party, meter, lim) VALUES ($1, $2, $3)
                         ON CONFLICT (party, meter) DO UPDATE SET lim = excluded.lim",
                        &[&limit.party, &limit.meter, &value],
                    )
                    .await?;
            }
            None => {
                client
                    .execute(
                        "UPDATE llm_proxy_allowances SET lim = NULL WHERE party = $1 AND meter = $2",
                        &[&limit.party, &limit.meter],
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Runs `job` on a runtime of its own (for the commands that use
/// PostgreSQL once, not a server's thread).
fn block_on<T>(
    job: impl std::future::Future<Output = Result<T, SharedError>>,
) -> Result<T, SharedError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SharedError::Invalid(format!("cannot start a runtime: {e}")))?
        .block_on(job)
}

/// `llm-proxy migrate`: applies the migrations the database lacks.
pub fn connect_and_migrate(url: &str) -> Result<(schema::Migrated, String), SharedError> {
    block_on(async {
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| SharedError::Invalid(format!("DATABASE_URL: {e}")))?;
        let mut client = open(&pg).await?;
        schema::migrate(&mut client).await
    })
}

/// Writes `rows` (a single-node store's records) into an empty shared
/// store as its first change; returns the cluster's id and that change's
/// number. Refused when the shared store already holds records.
pub fn import_rows(
    url: &str,
    rows: &[Row],
    used: &[(AllowanceLimit, i64)],
) -> Result<(String, u64), SharedError> {
    block_on(async {
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| SharedError::Invalid(format!("DATABASE_URL: {e}")))?;
        let mut client = open(&pg).await?;
        let (_, cluster) = schema::migrate(&mut client).await?;
        let txn = client.transaction().await?;
        let base: i64 = txn
            .query_one("SELECT change_no FROM llm_proxy_cluster FOR UPDATE", &[])
            .await?
            .get(0);
        let held: i64 = txn
            .query_one("SELECT count(*) FROM llm_proxy_records", &[])
            .await?
            .get(0);
        if held > 0 {
            return Err(SharedError::Invalid(format!(
                "the shared store already holds {held} records: import into an empty database"
            )));
        }
        let change = base as u64 + 1;
        write_rows(&txn, rows, change).await?;
        for (allowance, count) in used {
            txn.execute(
                "INSERT INTO llm_proxy_allowances (party, meter, lim, used) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (party, meter) DO UPDATE SET lim = excluded.lim, used = excluded.used",
                &[&allowance.party, &allowance.meter, &allowance.limit, count],
            )
            .await?;
        }
        txn.execute(
            "UPDATE llm_proxy_cluster SET change_no = $1",
            &[&(change as i64)],
        )
        .await?;
        txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.to_string()])
            .await?;
        txn.commit().await?;
        Ok((cluster, change))
    })
}
