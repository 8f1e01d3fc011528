//! Shared mode: PostgreSQL as the truth of several nodes, each node's LMDB
//! its replica.
//!
//! The PostgreSQL client (tokio-postgres, TLS by rustls) runs on a thread
//! of its own with a single-threaded tokio runtime (`client`), never on a
//! worker: the request path reads LMDB and worker memory only. The rest of
//! the store talks to that thread through [`Shared`], from blocking threads
//! (management calls already run on the blocking pool), and waits for its
//! answers there.
//!
//! - `schema`: the versioned SQL migrations.
//! - `client`: the thread: connections, the replica kept up to date from
//!   `LISTEN/NOTIFY` and change numbers, write sessions.
//! - `leases`: lease terms, slices of limits, reports of use (the
//!   PostgreSQL side of `store::escrow`).
//! - `publish`: the audit log and the figures of use each node copies.
//! - `tls`: the rustls configuration for PostgreSQL.
//!
//! A management write is a [`WriteSession`]: it locks the change counter in
//! PostgreSQL (so writes of all nodes are serialised, and commit in the
//! order of their numbers), brings the replica up to that change, runs in
//! LMDB as in single-node mode, sends the rows it changed, and commits
//! LMDB only after PostgreSQL committed.

mod client;
mod leases;
mod publish;
pub mod schema;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::escrow::Slice;
use super::journal::Row;

pub(crate) use client::spawn;
pub use client::{connect_and_migrate, import_rows};
pub use schema::Migrated;

/// How long a management write waits for other nodes' writes before it
/// gives up with "unavailable" (PostgreSQL's `lock_timeout`).
pub const WRITE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("PostgreSQL: {}", describe(.0))]
    Pg(#[from] tokio_postgres::Error),
    #[error("the shared store (PostgreSQL) is unreachable: {0}")]
    Unavailable(String),
    #[error(
        "the shared store's schema is version {found}, newer than this llm-proxy understands ({known}): upgrade llm-proxy"
    )]
    TooNew { found: i32, known: i32 },
    #[error("{0}")]
    Invalid(String),
}

/// tokio-postgres says "db error" for every error the server sends: the
/// server's own message and code say what happened.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

impl SharedError {
    /// Whether the error is PostgreSQL being out of reach for now (down,
    /// restarting, the connection cut, too busy, or other nodes' writes
    /// holding the lock too long), rather than a refusal that trying again
    /// would not change.
    pub fn is_unreachable(&self) -> bool {
        match self {
            SharedError::Unavailable(_) => true,
            SharedError::Pg(error) => match error.as_db_error() {
                None => true,
                Some(db) => {
                    let code = db.code().code();
                    // 08: connection exceptions; 57P01-57P03: shut down,
                    // restarting, not yet accepting; 53300: too many
                    // connections; 55P03: lock_timeout.
                    code.starts_with("08")
                        || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "55P03")
                }
            },
            _ => false,
        }
    }

    /// Whether the PostgreSQL thread should give up rather than reconnect:
    /// what a new connection cannot change (the schema is too new, the
    /// replica belongs to another cluster, the URL is wrong).
    pub fn is_fatal(&self) -> bool {
        matches!(self, SharedError::TooNew { .. } | SharedError::Invalid(_))
    }
}

/// One change as it reaches a replica: its number and a row it wrote.
#[derive(Debug, Clone)]
pub struct Change {
    pub no: u64,
    pub row: Row,
}

/// What a management write does when it is done with its session.
enum Finish {
    Commit(Vec<Row>, Vec<AllowanceLimit>),
}

/// The limit of an allowance as a management write set it (`None`: the
/// allowance is gone: no limit any more, or its key was deleted).
#[derive(Debug, Clone)]
pub struct AllowanceLimit {
    pub party: String,
    pub meter: String,
    pub limit: Option<i64>,
}

/// A management write in progress: the change counter is locked in
/// PostgreSQL until it commits or is dropped (which rolls back).
pub struct WriteSession {
    /// The last change committed before this one.
    pub base: u64,
    /// Changes after the replica's last applied one, up to `base`.
    pub missed: Vec<Change>,
    finish: oneshot::Sender<Finish>,
    done: oneshot::Receiver<Result<u64, SharedError>>,
}

impl WriteSession {
    /// Commits `rows` in PostgreSQL as change `base + 1` and returns its
    /// number once committed.
    pub fn commit(self, rows: Vec<Row>, limits: Vec<AllowanceLimit>) -> Result<u64, SharedError> {
        self.finish
            .send(Finish::Commit(rows, limits))
            .map_err(|_| SharedError::Unavailable("the write session ended".into()))?;
        self.done
            .blocking_recv()
            .unwrap_or_else(|_| Err(SharedError::Unavailable("the write session ended".into())))
    }
}

/// A request for a slice of an allowance (see `Shared::take_slice`).
#[derive(Debug)]
struct SliceAsk {
    party: String,
    meter: String,
    want: u64,
    at_least: u64,
    limit: Option<i64>,
}

enum Command {
    BeginWrite {
        applied: u64,
        reply: oneshot::Sender<Result<WriteSession, SharedError>>,
    },
    /// A slice of an allowance for this node's term.
    TakeSlice {
        ask: SliceAsk,
        reply: oneshot::Sender<Result<Slice, SharedError>>,
    },
    /// Waits until every live node applied `change` (or `timeout`).
    WaitForNodes {
        change: u64,
        timeout: Duration,
        reply: oneshot::Sender<Result<NodesApplied, SharedError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The end of this node's lease term as the node counts it: from the
/// moment it asked for the last renewal that succeeded, so that it stops
/// using its slices before PostgreSQL could take them back.
#[derive(Debug)]
pub struct TermClock {
    origin: std::time::Instant,
    /// How long a term lasts without renewal.
    term: Duration,
    /// Milliseconds after `origin`; 0: no live term.
    until: std::sync::atomic::AtomicU64,
}

impl TermClock {
    fn new(term: Duration) -> Self {
        Self {
            origin: std::time::Instant::now(),
            term,
            until: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn is_live(&self) -> bool {
        (self.origin.elapsed().as_millis() as u64) < self.until.load(Ordering::Acquire)
    }

    /// A renewal asked for at `asked` succeeded.
    fn renewed(&self, asked: std::time::Instant) {
        // A sixth of the term: room for the clocks' drift and a slow renewal.
        let until = asked.saturating_duration_since(self.origin) + self.term - self.term / 6;
        self.until
            .fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    fn expire(&self) {
        self.until.store(0, Ordering::Release);
    }
}

/// How long a lease term lasts without renewal (it is renewed every
/// second), by default (`SHARED_LEASE_TERM`).
pub const DEFAULT_TERM: Duration = Duration::from_secs(20);
/// The shortest term allowed: a few renewals must fit in one.
pub const MIN_TERM: Duration = Duration::from_secs(3);

/// How many of the live nodes (those seen in the last few seconds) have
/// applied a change, and the names of those that have not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodesApplied {
    pub applied: usize,
    pub live: usize,
    pub pending: Vec<String>,
}

/// Settings of shared mode.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `postgres://…` (or a key=value connection string).
    pub url: String,
    /// This node's name, as events, metrics and the nodes table show it.
    pub node: String,
    /// How long this node's lease term lasts without renewal: how long it
    /// may serve limited keys from its slices while PostgreSQL is
    /// unreachable, and how long a vanished node's slices stay lost.
    pub term: Duration,
    /// Extra CA certificates (PEM) to trust for TLS to PostgreSQL
    /// (`DATABASE_CA_FILE`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The store's handle on the PostgreSQL thread.
#[derive(Debug)]
pub struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    /// Whether the thread's connections are up.
    up: Arc<AtomicBool>,
    /// Until when this node may hand out its slices (see `escrow`).
    term: Arc<TermClock>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shared {
    /// Whether PostgreSQL was reachable at the last attempt.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SharedError>>) -> Command,
    ) -> Result<T, SharedError> {
        let (reply, answer) = oneshot::channel();
        let gone = || SharedError::Unavailable("the PostgreSQL thread has stopped".into());
        self.commands.send(command(reply)).map_err(|_| gone())?;
        answer.blocking_recv().map_err(|_| gone())?
    }

    /// Whether this node's lease term is surely still live in PostgreSQL.
    pub fn term_is_live(&self) -> bool {
        self.term.is_live()
    }

    /// Asks PostgreSQL for a slice of an allowance: at most `want`, none
    /// unless at least `at_least` is left. `limit` (budgets) sets the
    /// allowance's limit first, as this node's replica has it. Blocks: call
    /// it off the workers.
    pub fn take_slice(
        &self,
        party: &str,
        meter: String,
        want: u64,
        at_least: u64,
        limit: Option<i64>,
    ) -> Slice {
        let ask = SliceAsk {
            party: party.to_string(),
            meter,
            want,
            at_least,
            limit,
        };
        match self.ask(|reply| Command::TakeSlice { ask, reply }) {
            Ok(slice) => slice,
            Err(error) => {
                tracing::debug!(%error, "no slice of a limit from the shared store");
                Slice::Unavailable
            }
        }
    }

    /// Opens a management write (see the module's doc). Blocks: call it
    /// off the workers.
    pub fn begin_write(&self, applied: u64) -> Result<WriteSession, SharedError> {
        self.ask(|reply| Command::BeginWrite { applied, reply })
    }

    /// Waits (at most `timeout`) until every live node has applied
    /// `change`. Blocks: call it off the workers.
    pub fn wait_for_nodes(
        &self,
        change: u64,
        timeout: Duration,
    ) -> Result<NodesApplied, SharedError> {
        self.ask(|reply| Command::WaitForNodes {
            change,
            timeout,
            reply,
        })
    }

    /// Stops the thread (after what it has in hand).
    pub fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).is_ok() {
            let _ = done.blocking_recv();
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
