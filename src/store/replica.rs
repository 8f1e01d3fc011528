//! The store as a replica of the shared store (shared mode), and the one
//! way management writes go, in either mode: [`Store::admin_txn`] and
//! [`Store::commit_admin`].
//!
//! In single-node mode a management write is an LMDB write transaction, as
//! it always was. In shared mode it is also a write session in PostgreSQL
//! (see `shared`): the rows it changed (the journal) commit there first,
//! and LMDB commits after, recording the change's number as applied. A
//! write PostgreSQL refuses or cannot take leaves LMDB untouched.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use heed::RwTxn;

use super::journal::{Row, TABLES, Table};
use super::shared::{AllowanceLimit, Change, Shared, SharedConfig, SharedError, WriteSession};
use super::{Store, StoreError};

/// `meta`: the last change applied from the shared store (u64, big-endian).
const APPLIED: &str = "shared_applied";
/// `meta`: the id of the cluster this replica copies.
const CLUSTER: &str = "shared_cluster";

/// A single-node store as `migrate --import` copies it.
#[derive(Debug)]
pub struct Imported {
    pub rows: Vec<Row>,
    /// Each limited key's allowance and what it used.
    pub used: Vec<(AllowanceLimit, i64)>,
}

/// A management write in progress. Derefs to its LMDB transaction.
pub(super) struct AdminTxn<'s> {
    txn: RwTxn<'s>,
    session: Option<WriteSession>,
    /// Changes of other nodes were applied when the write opened: the
    /// workers must re-read even if the write itself is one they need not
    /// see.
    caught_up: bool,
    _journal: JournalOpen<'s>,
}

/// Drops what the journal noted when a write is abandoned (an error before
/// `commit_admin`); after a commit there is nothing left to drop.
struct JournalOpen<'s>(&'s Store);

impl<'s> Deref for AdminTxn<'s> {
    type Target = RwTxn<'s>;
    fn deref(&self) -> &RwTxn<'s> {
        &self.txn
    }
}

impl<'s> DerefMut for AdminTxn<'s> {
    fn deref_mut(&mut self) -> &mut RwTxn<'s> {
        &mut self.txn
    }
}

impl Drop for JournalOpen<'_> {
    fn drop(&mut self) {
        self.0.journal.discard();
    }
}

impl From<SharedError> for StoreError {
    fn from(error: SharedError) -> Self {
        if error.is_unreachable() {
            StoreError::SharedUnavailable(error.to_string())
        } else {
            StoreError::Shared(error.to_string())
        }
    }
}

impl Store {
    /// The connection to PostgreSQL, in shared mode.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.get()
    }

    /// Puts the store in shared mode: starts the PostgreSQL thread, which
    /// migrates the schema, checks this replica belongs to the cluster and
    /// brings it up to date before this returns.
    pub fn start_shared(self: &Arc<Self>, config: SharedConfig) -> Result<(), StoreError> {
        let shared = super::shared::spawn(config, self.clone())?;
        if self.shared.set(shared).is_err() {
            return Err(StoreError::Invalid("shared mode was started twice".into()));
        }
        Ok(())
    }

    /// Opens a management write (see the module's doc).
    pub(super) fn admin_txn(&self) -> Result<AdminTxn<'_>, StoreError> {
        let session = match self.shared() {
            Some(shared) => Some(shared.begin_write(self.applied_change()?)?),
            None => None,
        };
        let mut txn = self.env.write_txn()?;
        let mut caught_up = false;
        if let Some(session) = &session {
            let before = self.applied_in(&txn)?;
            caught_up = self.apply_in(&mut txn, &session.missed)? != before;
        }
        self.journal.open();
        Ok(AdminTxn {
            txn,
            session,
            caught_up,
            _journal: JournalOpen(self),
        })
    }

    /// Commits a management write and tells every worker to re-read.
    pub(super) fn commit_admin(&self, txn: AdminTxn<'_>) -> Result<(), StoreError> {
        self.commit_replicated(txn)?;
        self.bump_generation();
        Ok(())
    }

    /// Commits a management write that no worker needs to see (sign-ins in
    /// progress); the workers re-read all the same when other nodes'
    /// changes came in with it.
    pub(super) fn commit_replicated(&self, mut txn: AdminTxn<'_>) -> Result<(), StoreError> {
        let rows = self.journal.close()?;
        if txn.session.is_some() {
            for row in &rows {
                self.drop_slices(&mut txn.txn, row)?;
            }
        }
        if let Some(session) = txn.session.take() {
            let applied = if rows.is_empty() {
                session.base
            } else {
                let limits = Store::allowance_limits(&rows)?;
                session.commit(rows, limits)?
            };
            self.set_applied(&mut txn.txn, applied)?;
        }
        let AdminTxn { txn, caught_up, .. } = txn;
        super::commit(txn, self.path())?;
        if caught_up {
            self.bump_generation();
        }
        Ok(())
    }

    /// Shared mode: waits (at most `timeout`) until every live node applied
    /// what this one has; `None` in single-node mode.
    pub fn wait_for_nodes(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Option<super::shared::NodesApplied>, StoreError> {
        let Some(shared) = self.shared() else {
            return Ok(None);
        };
        let change = self.applied_change()?;
        Ok(Some(shared.wait_for_nodes(change, timeout)?))
    }

    /// The last change applied from the shared store (0: none).
    pub fn applied_change(&self) -> Result<u64, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self
            .meta
            .get(&txn, APPLIED)?
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn set_applied(&self, txn: &mut RwTxn, change: u64) -> Result<(), StoreError> {
        self.meta.put(txn, APPLIED, &change.to_be_bytes())?;
        Ok(())
    }

    /// The cluster this replica copies and the last change it applied, if
    /// it ever joined one.
    pub fn replica_state(&self) -> Result<Option<(String, u64)>, StoreError> {
        let txn = self.env.read_txn()?;
        let Some(cluster) = self.meta.get(&txn, CLUSTER)? else {
            return Ok(None);
        };
        let cluster = String::from_utf8_lossy(cluster).into_owned();
        drop(txn);
        Ok(Some((cluster, self.applied_change()?)))
    }

    /// Makes this store a replica of `cluster`: a new store (or one that
    /// already copies it) joins; a store that holds records of its own, or
    /// copies another cluster, is refused.
    pub fn join_cluster(&self, cluster: &str) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        match self.meta.get(&txn, CLUSTER)? {
            Some(joined) if joined == cluster.as_bytes() => return Ok(()),
            Some(joined) => {
                return Err(StoreError::Invalid(format!(
                    "this data directory is the replica of another cluster ({}), not of this database's ({cluster}): give this node an empty --db",
                    String::from_utf8_lossy(joined)
                )));
            }
            None => {}
        }
        for table in TABLES {
            if !self.replicated_is_empty(&txn, table)? {
                return Err(StoreError::Invalid(format!(
                    "this data directory holds a single-node store ({} are not empty): import it with `llm-proxy migrate --import --db DIR`, or give this node an empty --db",
                    table.name
                )));
            }
        }
        self.meta.put(&mut txn, CLUSTER, cluster.as_bytes())?;
        super::commit(txn, self.path())
    }

    /// After an import (`migrate --import`): this store is the replica of
    /// `cluster` up to `change`.
    pub fn mark_imported(&self, cluster: &str, change: u64) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.meta.put(&mut txn, CLUSTER, cluster.as_bytes())?;
        self.set_applied(&mut txn, change)?;
        super::commit(txn, self.path())
    }

    /// What `migrate --import` copies into PostgreSQL: every record, and
    /// the allowance of each key with `max_requests`, with what it used.
    pub fn export_for_import(&self) -> Result<Imported, StoreError> {
        let rows = self.replicated_rows()?;
        let mut used = Vec::new();
        let txn = self.env.read_txn()?;
        for limit in Store::allowance_limits(&rows)? {
            let Some(id) = limit
                .party
                .strip_prefix("key:")
                .and_then(|id| id.parse::<uuid::Uuid>().ok())
            else {
                continue;
            };
            if limit.limit.is_none() {
                continue;
            }
            let usage = self.usage.get(&txn, id.as_bytes())?.unwrap_or_default();
            // Quota still leased was possibly served: counted as used.
            let count = usage.requests.max(usage.reserved).min(i64::MAX as u64) as i64;
            used.push((limit, count));
        }
        drop(txn);
        used.extend(self.budgets_for_import()?);
        Ok(Imported { rows, used })
    }

    /// Every row of the replicated tables, as they travel.
    fn replicated_rows(&self) -> Result<Vec<Row>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut rows = Vec::new();
        for table in TABLES {
            for entry in self.raw_table(table).iter(&txn)? {
                let (key, value) = entry?;
                rows.push(table.encode(key, Some(value))?);
            }
        }
        Ok(rows)
    }

    fn replicated_is_empty(&self, txn: &RwTxn, table: &Table) -> Result<bool, StoreError> {
        Ok(self.raw_table(table).is_empty(txn)?)
    }

    /// The LMDB database of a replicated table, its rows as bytes.
    fn raw_table(&self, table: &Table) -> heed::Database<heed::types::Bytes, heed::types::Bytes> {
        match table.name {
            "projects" => self.projects.raw(),
            "project_names" => self.project_names.raw(),
            "keys" => self.keys.raw(),
            "key_hashes" => self.key_hashes.raw(),
            "users" => self.users.raw(),
            "deployments" => self.deployments.raw(),
            "credentials" => self.credentials.raw(),
            "teams" => self.teams.raw(),
            "budget_windows" => self.budget_windows.raw(),
            _ => self.logins.raw(),
        }
    }

    /// Applies changes from the shared store (those after the last applied
    /// one) in one transaction; returns the last change now applied.
    pub fn apply_changes(&self, changes: &[Change]) -> Result<u64, StoreError> {
        let mut txn = self.env.write_txn()?;
        let before = self.applied_in(&txn)?;
        let applied = self.apply_in(&mut txn, changes)?;
        super::commit(txn, self.path())?;
        if applied != before {
            self.bump_generation();
        }
        Ok(applied)
    }

    fn applied_in(&self, txn: &RwTxn) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(txn, APPLIED)?
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn apply_in(&self, txn: &mut RwTxn, changes: &[Change]) -> Result<u64, StoreError> {
        let applied = self.applied_in(txn)?;
        let mut last = applied;
        for change in changes.iter().filter(|c| c.no > applied) {
            let (key, value) = change.row.table.decode(&change.row)?;
            let db = self.raw_table(change.row.table);
            self.drop_slices(txn, &change.row)?;
            match value {
                Some(value) => db.put(txn, &key, &value)?,
                None => {
                    db.delete(txn, &key)?;
                    if std::ptr::eq(change.row.table, &super::journal::KEYS) {
                        // The key's own counts go with it, as on the node that deleted it.
                        self.usage.delete(txn, &key)?;
                    }
                }
            }
            last = last.max(change.no);
        }
        if last != applied {
            self.set_applied(txn, last)?;
        }
        Ok(last)
    }
}
