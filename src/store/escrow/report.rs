//! What a node tells PostgreSQL of its slices: the use since the last
//! report and what it gives back, in numbered batches of the outbox; and
//! what it gives back when a party's record changed or it stops.

use heed::RwTxn;
use uuid::Uuid;

use super::{BUDGET, Batch, BatchEntry, IDLE_RETURN_MS, NEXT_BATCH, REQUESTS, TERM, split_name};
use crate::store::journal::{self, Row};
use crate::store::model::now_ms;
use crate::store::{Meter, Store, StoreError};

impl Store {
    /// Moves what was used since the last report, and what is not needed
    /// (slices idle for a while, those of budget windows that have passed,
    /// and with `return_all` every slice's part not handed to a worker),
    /// into a new batch of the outbox. Returns the batches waiting to be
    /// sent, oldest first.
    pub fn prepare_reports(&self, return_all: bool) -> Result<Vec<(u64, Batch)>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let Some(term) = self
            .meta
            .get(&txn, TERM)?
            .and_then(|term| <[u8; 16]>::try_from(term).ok())
        else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        let mut entries = Vec::new();
        for (name, mut held) in self.held_allowances(&txn)? {
            let Some((party, meter)) = split_name(&name) else {
                continue;
            };
            let (used, returned) = match self.local_use(&txn, party, meter, now)? {
                Some(local) => {
                    // Parallel slots free now are of use to other nodes at once.
                    let idle = now.saturating_sub(held.touched_at) > IDLE_RETURN_MS
                        || meter == Meter::Parallel.name();
                    let free = held.ceiling.saturating_sub(local.handed);
                    let returned = if return_all || idle { free } else { 0 };
                    (
                        local.used.saturating_sub(held.reported),
                        returned + held.returning,
                    )
                }
                // Gone, or a window that has passed: whatever is left of it
                // goes back, and so does the entry.
                None => (
                    0,
                    held.ceiling.saturating_sub(held.reported) + held.returning,
                ),
            };
            if used == 0 && returned == 0 {
                continue;
            }
            held.reported += used;
            held.ceiling -= returned - held.returning;
            held.returning = 0;
            entries.push(BatchEntry {
                party: party.to_string(),
                meter: meter.to_string(),
                used,
                returned,
            });
            if held.ceiling <= held.reported && self.local_use(&txn, party, meter, now)?.is_none() {
                self.node_allowances.delete(&mut txn, &name)?;
            } else {
                self.node_allowances.put(&mut txn, &name, &held)?;
            }
        }
        if !entries.is_empty() {
            let number = self
                .meta
                .get(&txn, NEXT_BATCH)?
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(1, u64::from_be_bytes);
            self.outbox
                .put(&mut txn, &number.to_be_bytes(), &Batch { term, entries })?;
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
        crate::store::commit(txn, self.path())?;
        Ok(waiting)
    }

    /// A party's record changed (its limits may be lower now): this node
    /// hands out nothing more of the slices it holds of the party's
    /// allowances, and gives back what it has not handed out with its
    /// next report; new slices are taken under the new limits.
    pub(in crate::store) fn drop_slices(
        &self,
        txn: &mut RwTxn,
        row: &Row,
    ) -> Result<(), StoreError> {
        let prefix = if std::ptr::eq(row.table, &journal::KEYS) {
            let (id, _) = row.table.decode(row)?;
            let Ok(id) = Uuid::from_slice(&id) else {
                return Ok(());
            };
            id.to_string()
        } else if std::ptr::eq(row.table, &journal::USERS) {
            format!("user:{}", row.id)
        } else if std::ptr::eq(row.table, &journal::TEAMS) {
            format!("team:{}", row.id)
        } else {
            return Ok(());
        };
        let now = now_ms();
        for (name, mut held) in self.held_allowances(txn)? {
            let Some((party, meter)) = split_name(&name) else {
                continue;
            };
            // A key's own allowances, and its per-model budgets.
            let of_party = party == prefix
                || party.strip_prefix("key:") == Some(prefix.as_str())
                || party
                    .strip_prefix("keymodel:")
                    .is_some_and(|rest| rest.starts_with(prefix.as_str()));
            if !of_party {
                continue;
            }
            if let Some(local) = self.local_use(txn, party, meter, now)? {
                // Workers give back what they leased under the old limits
                // (`worker::quota`), unused: of requests and budgets only
                // what was used stays. A minute's count keeps what its
                // workers took, used or not.
                let keep = if meter == REQUESTS || meter.starts_with(BUDGET) {
                    local.used
                } else {
                    local.handed
                };
                let free = held.ceiling.saturating_sub(keep.max(held.reported));
                held.ceiling -= free;
                held.returning += free;
                self.node_allowances.put(txn, &name, &held)?;
            }
        }
        Ok(())
    }

    /// A batch PostgreSQL applied: it leaves the outbox.
    pub fn report_sent(&self, number: u64) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.outbox.delete(&mut txn, &number.to_be_bytes())?;
        crate::store::commit(txn, self.path())
    }

    /// After a clean stop returned everything: the node holds no slice
    /// and no term.
    pub fn end_term(&self) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.node_allowances.clear(&mut txn)?;
        self.meta.delete(&mut txn, TERM)?;
        crate::store::commit(txn, self.path())
    }
}
