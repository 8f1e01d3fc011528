//! Limits across nodes (shared mode): each node holds a slice of a key's
//! allowance, leased from PostgreSQL, and its workers lease from that
//! slice exactly as they lease from the whole limit in single-node mode.
//!
//! For each allowance it holds a slice of, the node keeps in LMDB a
//! [`NodeAllowance`]: its `ceiling`, the most its workers may have been
//! handed (`usage.reserved` never exceeds it), and `reported`, how much of
//! its use PostgreSQL was told of. A slice from PostgreSQL raises the
//! ceiling, and is committed in LMDB before a worker gets any of it. What
//! was used since the last report goes to PostgreSQL in numbered batches
//! (the outbox, in LMDB first: a batch sent again after a lost answer is
//! applied once). What the workers were not handed goes back at shutdown.
//!
//! A node's slices belong to its lease term, which it renews every second.
//! A term not renewed in time expires, and PostgreSQL takes what it held as
//! used: the node may have served it. The node stops handing out its
//! slices before that moment (it counts from when it asked for the
//! renewal), so a limit may be undershot by what a vanished node held,
//! never exceeded.

use heed::types::{Bytes, SerdeBincode, Str};
use heed::{Database, RwTxn};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Store, StoreError};

/// The meter of `max_requests`.
pub const REQUESTS: &str = "requests";

/// Largest slice a node asks for at once, per worker.
const SLICE_PER_WORKER: u64 = 64;

/// What a node holds of one allowance.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct NodeAllowance {
    pub ceiling: u64,
    pub reported: u64,
}

/// A report of use: for each allowance, what was used since the last
/// report and what is handed back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Batch {
    pub term: [u8; 16],
    pub entries: Vec<BatchEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEntry {
    pub party: String,
    pub meter: String,
    pub used: u64,
    pub returned: u64,
}

pub type AllowanceDb = Database<Str, SerdeBincode<NodeAllowance>>;
pub type OutboxDb = Database<Bytes, SerdeBincode<Batch>>;

/// `meta`: this node's lease term (16 bytes).
const TERM: &str = "shared_term";
/// `meta`: the number of the next report batch (u64, big-endian).
const NEXT_BATCH: &str = "shared_next_batch";

/// The name of a key's allowance in PostgreSQL.
pub fn key_party(id: Uuid) -> String {
    format!("key:{id}")
}

fn entry_name(party: &str, meter: &str) -> String {
    format!("{meter} {party}")
}

fn split_name(name: &str) -> Option<(&str, &str)> {
    let (meter, party) = name.split_once(' ')?;
    Some((party, meter))
}

/// The outcome of asking PostgreSQL for a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    Granted(u64),
    /// Nothing is left of the allowance.
    Exhausted,
    /// PostgreSQL cannot be reached, or this node's term has expired.
    Unavailable,
}

impl Store {
    /// This node's lease term, if it has one.
    pub fn lease_term(&self) -> Result<Option<Uuid>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self
            .meta
            .get(&txn, TERM)?
            .and_then(|bytes| Uuid::from_slice(bytes).ok()))
    }

    /// Starts a new term: what the old one held is PostgreSQL's to write
    /// off, so nothing of it may be handed out any more, and its use is
    /// taken as reported (it is counted as used there).
    pub fn begin_term(&self, term: Uuid) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        let held: Vec<(String, NodeAllowance)> = self
            .node_allowances
            .iter(&txn)?
            .map(|entry| entry.map(|(name, held)| (name.to_string(), held)))
            .collect::<Result<_, _>>()?;
        for (name, mut held) in held {
            let reserved = self.handed_out(&txn, &name)?;
            held.ceiling = reserved;
            held.reported = held.reported.max(reserved);
            self.node_allowances.put(&mut txn, &name, &held)?;
        }
        self.outbox.clear(&mut txn)?;
        self.meta.put(&mut txn, TERM, term.as_bytes())?;
        super::commit(txn, self.path())
    }

    /// What the workers were handed of an allowance (`usage.reserved`).
    fn handed_out(&self, txn: &RwTxn, name: &str) -> Result<u64, StoreError> {
        let Some((party, _)) = split_name(name) else {
            return Ok(0);
        };
        let Some(id) = party.strip_prefix("key:").and_then(|id| id.parse::<Uuid>().ok()) else {
            return Ok(0);
        };
        let usage = self.usage.get(txn, id.as_bytes())?.unwrap_or_default();
        Ok(usage.reserved.max(usage.requests))
    }

    /// Shared mode's `lease`: from the node's slice, asking PostgreSQL for
    /// another slice when it is used up.
    pub(super) fn lease_from_slice(
        &self,
        key_id: Uuid,
        workers: usize,
    ) -> Result<super::Grant, StoreError> {
        let Some(shared) = self.shared() else {
            return Err(StoreError::Invalid("not in shared mode".into()));
        };
        let party = key_party(key_id);
        let name = entry_name(&party, REQUESTS);
        let mut asked = false;
        loop {
            let mut txn = self.env.write_txn()?;
            let Some(key) = self.keys.get(&txn, key_id.as_bytes())? else {
                return Ok(super::Grant::Unlimited);
            };
            if key.max_requests.is_none() {
                // Counted, not limited: nothing to share with other nodes.
                drop(txn);
                return self.lease_local(key_id, workers);
            }
            let mut usage = self.usage.get(&txn, key_id.as_bytes())?.unwrap_or_default();
            usage.reserved = usage.reserved.max(usage.requests);
            let held = self.node_allowances.get(&txn, &name)?.unwrap_or(NodeAllowance {
                ceiling: usage.reserved,
                reported: usage.requests,
            });
            let free = held.ceiling.saturating_sub(usage.reserved);
            if free > 0 && shared.term_is_live() {
                let share = free / (4 * workers.max(1) as u64);
                let grant = share.clamp(1, super::ledger::MAX_LEASE).min(free);
                usage.reserved += grant;
                self.usage.put(&mut txn, key_id.as_bytes(), &usage)?;
                super::commit(txn, self.path())?;
                return Ok(super::Grant::Granted(grant));
            }
            drop(txn);
            if asked {
                return Ok(super::Grant::Exhausted);
            }
            asked = true;
            let want = SLICE_PER_WORKER * workers.max(1) as u64;
            match shared.take_slice(&party, REQUESTS, want) {
                Slice::Granted(granted) => {
                    let mut txn = self.env.write_txn()?;
                    let mut usage = self.usage.get(&txn, key_id.as_bytes())?.unwrap_or_default();
                    usage.reserved = usage.reserved.max(usage.requests);
                    let mut held =
                        self.node_allowances.get(&txn, &name)?.unwrap_or(NodeAllowance {
                            ceiling: usage.reserved,
                            reported: usage.requests,
                        });
                    held.ceiling = held.ceiling.max(usage.reserved) + granted;
                    self.node_allowances.put(&mut txn, &name, &held)?;
                    super::commit(txn, self.path())?;
                }
                Slice::Exhausted => return Ok(super::Grant::Exhausted),
                Slice::Unavailable => return Ok(super::Grant::Unavailable),
            }
        }
    }

    /// Moves what was used since the last report (and, when `return_all`,
    /// every slice's part not handed to a worker) into a new batch of the
    /// outbox. Returns the batches waiting to be sent, oldest first.
    pub fn prepare_reports(&self, return_all: bool) -> Result<Vec<(u64, Batch)>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let Some(term) = self.meta.get(&txn, TERM)?.map(<[u8]>::to_vec) else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::new();
        let held: Vec<(String, NodeAllowance)> = self
            .node_allowances
            .iter(&txn)?
            .map(|entry| entry.map(|(name, held)| (name.to_string(), held)))
            .collect::<Result<_, _>>()?;
        for (name, mut held) in held {
            let Some((party, meter)) = split_name(&name) else {
                continue;
            };
            let Some(id) = party.strip_prefix("key:").and_then(|id| id.parse::<Uuid>().ok())
            else {
                continue;
            };
            let usage = self.usage.get(&txn, id.as_bytes())?.unwrap_or_default();
            let used = usage.requests.saturating_sub(held.reported);
            let returned = if return_all {
                held.ceiling.saturating_sub(usage.reserved.max(usage.requests))
            } else {
                0
            };
            if used == 0 && returned == 0 {
                continue;
            }
            held.reported += used;
            held.ceiling -= returned;
            entries.push(BatchEntry {
                party: party.to_string(),
                meter: meter.to_string(),
                used,
                returned,
            });
            self.node_allowances.put(&mut txn, &name, &held)?;
        }
        if !entries.is_empty() {
            let number = self
                .meta
                .get(&txn, NEXT_BATCH)?
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(1, u64::from_be_bytes);
            let mut term_bytes = [0; 16];
            term_bytes.copy_from_slice(&term[..16.min(term.len())]);
            self.outbox.put(
                &mut txn,
                &number.to_be_bytes(),
                &Batch {
                    term: term_bytes,
                    entries,
                },
            )?;
            self.meta
                .put(&mut txn, NEXT_BATCH, &(number + 1).to_be_bytes())?;
        }
        let waiting = self
            .outbox
            .iter(&txn)?
            .map(|entry| {
                entry.map(|(number, batch)| {
                    let number = <[u8; 8]>::try_from(number).map_or(0, u64::from_be_bytes);
                    (number, batch)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        super::commit(txn, self.path())?;
        Ok(waiting)
    }

    /// A batch PostgreSQL applied: it leaves the outbox.
    pub fn report_sent(&self, number: u64) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.outbox.delete(&mut txn, &number.to_be_bytes())?;
        super::commit(txn, self.path())
    }

    /// After a clean stop returned everything: the node holds no slice
    /// and no term.
    pub fn end_term(&self) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.node_allowances.clear(&mut txn)?;
        self.meta.delete(&mut txn, TERM)?;
        super::commit(txn, self.path())
    }

    /// The allowances the keys changed by a management write have in
    /// PostgreSQL: `(party, meter, limit)`, `None` when there is none (no
    /// limit, or the key is gone).
    pub(super) fn allowance_limits(
        rows: &[super::journal::Row],
    ) -> Result<Vec<super::shared::AllowanceLimit>, StoreError> {
        let mut limits = Vec::new();
        for row in rows {
            if !std::ptr::eq(row.table, &super::journal::KEYS) {
                continue;
            }
            let (id, value) = row.table.decode(row)?;
            let Ok(id) = Uuid::from_slice(&id) else {
                continue;
            };
            let limit = match value {
                Some(bytes) => bincode::deserialize::<super::KeyRecord>(&bytes)
                    .map_err(|e| StoreError::Invalid(format!("a key record: {e}")))?
                    .max_requests
                    .map(|n| n.min(i64::MAX as u64) as i64),
                None => None,
            };
            limits.push(super::shared::AllowanceLimit {
                party: key_party(id),
                meter: REQUESTS,
                limit,
            });
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_back() {
        let name = entry_name("key:abc", REQUESTS);
        assert_eq!(split_name(&name), Some(("key:abc", REQUESTS)));
    }
}
