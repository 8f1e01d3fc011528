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

use super::leases::{
    drop_past_minutes, give_back, hold_term, reclaim_expired, renew_term, send_reports, take_slice,
};
use super::publish::{share_usage, ship_audit};
use super::{
    AllowanceLimit, Change, Command, Finish, Shared, SharedConfig, SharedError, TermClock,
    WriteSession, schema, tls,
};
use crate::store::Store;
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

/// Where PostgreSQL is and how to speak TLS to it.
#[derive(Clone)]
struct Target {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Target {
    fn new(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self, SharedError> {
        let config = url
            .parse()
            .map_err(|e| SharedError::Invalid(format!("DATABASE_URL: {e}")))?;
        Ok(Target {
            config,
            tls: tls::connector(ca_file)?,
        })
    }
}

async fn open(target: &Target) -> Result<Client, SharedError> {
    let (client, connection) = target.config.connect(target.tls.clone()).await?;
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
    let pg = Target::new(&config.url, config.ca_file.as_deref())?;
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
    // Heartbeats since this connection began.
    let mut beats: u64 = 0;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            command = inbox.recv() => match command {
                None => return Ok(()),
                Some(Command::Shutdown { reply }) => {
                    // The last second's audit entries and figures of use too.
                    let copied = ship_audit(&main, store, &config.node).await;
                    let shared = share_usage(&main, store, &config.node, &mut usage_seen).await;
                    if let Err(error) = copied.and(shared) {
                        tracing::warn!(%error, "shared store: the last audit entries or figures of use are copied at the next start");
                    }
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
                beats += 1;
                if beats.is_multiple_of(60) {
                    drop_past_minutes(&main).await?;
                }
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
async fn listen(target: &Target) -> Result<(Client, mpsc::UnboundedReceiver<()>), SharedError> {
    let (client, mut connection) = target.config.connect(target.tls.clone()).await?;
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

pub(super) fn store_error(error: crate::store::StoreError) -> SharedError {
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
    pg: &Target,
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

/// Runs a store call (an LMDB write) on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
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
pub fn connect_and_migrate(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(schema::Migrated, String), SharedError> {
    block_on(async {
        let pg = Target::new(url, ca_file)?;
        let mut client = open(&pg).await?;
        schema::migrate(&mut client).await
    })
}

/// Writes `rows` (a single-node store's records) into an empty shared
/// store as its first change; returns the cluster's id and that change's
/// number. Refused when the shared store already holds records.
pub fn import_rows(
    url: &str,
    ca_file: Option<&std::path::Path>,
    rows: &[Row],
    used: &[(AllowanceLimit, i64)],
) -> Result<(String, u64), SharedError> {
    block_on(async {
        let pg = Target::new(url, ca_file)?;
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
