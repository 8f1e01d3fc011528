//! Leasing from the node's slices: a worker's lease of `max_requests`, of a
//! budget or of a rate limit comes out of what the node holds, and the node
//! asks PostgreSQL for another slice when that is not enough.

use heed::RwTxn;
use uuid::Uuid;

use super::{
    LocalUse, NodeAllowance, REQUESTS, SLICE_PER_WORKER, Slice, budget_meter, counter_meter,
    counter_party, entry_name, key_party, payer_party,
};
use crate::store::counters::{Counter, MAX_COUNT_LEASE};
use crate::store::model::{Money, now_ms};
use crate::store::{BudgetGrant, Grant, Meter, Payer, Store, StoreError, WindowGrant};

impl Store {
    /// Shared mode's `lease`: from the node's slice, asking PostgreSQL for
    /// another slice when it is used up.
    pub(in crate::store) fn lease_from_slice(
        &self,
        key_id: Uuid,
        workers: usize,
    ) -> Result<Grant, StoreError> {
        let Some(shared) = self.shared() else {
            return Err(StoreError::Invalid("not in shared mode".into()));
        };
        let party = key_party(key_id);
        let name = entry_name(&party, REQUESTS);
        let mut asked = false;
        loop {
            let mut txn = self.env.write_txn()?;
            let Some(key) = self.keys.get(&txn, key_id.as_bytes())? else {
                return Ok(Grant::Unlimited);
            };
            if key.max_requests.is_none() {
                // Counted, not limited: nothing to share with other nodes.
                drop(txn);
                return self.lease_local(key_id, workers);
            }
            let mut usage = self.usage.get(&txn, key_id.as_bytes())?.unwrap_or_default();
            usage.reserved = usage.reserved.max(usage.requests);
            let mut held = self
                .node_allowances
                .get(&txn, &name)?
                .unwrap_or(NodeAllowance {
                    ceiling: usage.reserved,
                    reported: usage.requests,
                    touched_at: 0,
                    returning: 0,
                });
            let free = held.ceiling.saturating_sub(usage.reserved);
            if free > 0 && shared.term_is_live() {
                let share = free / (4 * workers.max(1) as u64);
                let grant = share.clamp(1, crate::store::ledger::MAX_LEASE).min(free);
                usage.reserved += grant;
                held.touched_at = now_ms();
                self.usage.put(&mut txn, key_id.as_bytes(), &usage)?;
                self.node_allowances.put(&mut txn, &name, &held)?;
                crate::store::commit(txn, self.path())?;
                return Ok(Grant::Granted(grant));
            }
            drop(txn);
            if asked {
                return Ok(Grant::Exhausted);
            }
            asked = true;
            let want = SLICE_PER_WORKER * workers.max(1) as u64;
            match shared.take_slice(&party, REQUESTS.into(), want, 1, None) {
                Slice::Granted(granted) => self.add_to_ceiling(&name, granted, |store, txn| {
                    let usage = store.usage.get(txn, key_id.as_bytes())?.unwrap_or_default();
                    Ok(LocalUse {
                        used: usage.requests,
                        handed: usage.reserved.max(usage.requests),
                    })
                })?,
                Slice::Exhausted { .. } => return Ok(Grant::Exhausted),
                Slice::Unavailable => return Ok(Grant::Unavailable),
            }
        }
    }

    /// Records a slice from PostgreSQL: the node's ceiling rises by it,
    /// committed before any worker gets some of it.
    fn add_to_ceiling(
        &self,
        name: &str,
        granted: u64,
        local: impl Fn(&Store, &RwTxn) -> Result<LocalUse, StoreError>,
    ) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        let now = local(self, &txn)?;
        let mut held = self
            .node_allowances
            .get(&txn, name)?
            .unwrap_or(NodeAllowance {
                ceiling: now.handed,
                reported: now.used,
                touched_at: 0,
                returning: 0,
            });
        held.ceiling = held.ceiling.max(now.handed).saturating_add(granted);
        self.node_allowances.put(&mut txn, name, &held)?;
        crate::store::commit(txn, self.path())
    }

    /// Shared mode's `lease_budget`: from the node's slice of the payer's
    /// budget (of its current window), asking PostgreSQL for another slice
    /// when what is left of it is less than `at_least`.
    pub(in crate::store) fn lease_budget_from_slice(
        &self,
        payer: Payer<'_>,
        at_least: Money,
        workers: usize,
    ) -> Result<BudgetGrant, StoreError> {
        let Some(shared) = self.shared() else {
            return Err(StoreError::Invalid("not in shared mode".into()));
        };
        let party = payer_party(payer);
        let slot = payer.slot();
        let at_least = at_least.0.max(1);
        let mut asked = false;
        loop {
            let now = now_ms();
            let mut txn = self.env.write_txn()?;
            let Some((Some(budget), window)) = self.payer_budget(&txn, payer)? else {
                return Ok(BudgetGrant::Unlimited);
            };
            self.roll_window(&mut txn, payer, window, now)?;
            let window_end = match window {
                Some(_) => self.budget_windows.get(&txn, &slot)?,
                None => None,
            };
            let meter = budget_meter(window_end);
            let name = entry_name(&party, &meter);
            let spend = self.stored_spend(&txn, payer)?.0;
            let reserved = self.reserved.get(&txn, &slot)?.unwrap_or_default().0;
            let handed = spend.saturating_add(reserved);
            let mut held = self
                .node_allowances
                .get(&txn, &name)?
                .unwrap_or(NodeAllowance {
                    ceiling: handed,
                    reported: spend,
                    touched_at: 0,
                    returning: 0,
                });
            let free = held.ceiling.saturating_sub(handed);
            if free >= at_least && shared.term_is_live() {
                let share = free / (4 * workers.max(1) as u64);
                let units = (share / at_least).clamp(1, crate::store::ledger::MAX_LEASE);
                let grant = at_least.saturating_mul(units).min(free);
                held.touched_at = now;
                self.reserved
                    .put(&mut txn, &slot, &Money(reserved.saturating_add(grant)))?;
                self.node_allowances.put(&mut txn, &name, &held)?;
                crate::store::commit(txn, self.path())?;
                return Ok(BudgetGrant::Granted(Money(grant)));
            }
            // A window rolled over is worth keeping even when nothing is leased.
            crate::store::commit(txn, self.path())?;
            if asked {
                return Ok(BudgetGrant::Exhausted { left: Money(free) });
            }
            asked = true;
            let limit = budget.amount.0.min(i64::MAX as u64) as i64;
            let want = at_least.saturating_mul(SLICE_PER_WORKER * workers.max(1) as u64);
            let need = at_least - free.min(at_least);
            match shared.take_slice(&party, meter.clone(), want, need, Some(limit)) {
                Slice::Granted(granted) => {
                    self.add_to_ceiling(&name, granted, |store, txn| {
                        let spend = store.stored_spend(txn, payer)?.0;
                        let reserved = store.reserved.get(txn, &slot)?.unwrap_or_default().0;
                        Ok(LocalUse {
                            used: spend,
                            handed: spend.saturating_add(reserved),
                        })
                    })?;
                }
                Slice::Exhausted { left } => {
                    return Ok(BudgetGrant::Exhausted {
                        left: Money(free.saturating_add(left)),
                    });
                }
                Slice::Unavailable => return Ok(BudgetGrant::Unavailable),
            }
        }
    }

    /// Shared mode's `lease_counter`: from the node's slice of the
    /// counter's limit in `window` (a minute; 0 for parallel slots). What
    /// a node takes of a minute counts as used there; what it does not
    /// hand out goes back when idle.
    pub(in crate::store) fn lease_counter_from_slice(
        &self,
        id: &[u8],
        window: i64,
        (limit, at_least): (u64, u64),
        workers: usize,
    ) -> Result<WindowGrant, StoreError> {
        let Some(shared) = self.shared() else {
            return Err(StoreError::Invalid("not in shared mode".into()));
        };
        let meter = Meter::of_counter(id);
        let party = counter_party(id);
        let meter_name = counter_meter(meter, window);
        let name = entry_name(&party, &meter_name);
        let mut asked = false;
        loop {
            let mut txn = self.env.write_txn()?;
            let mut counter = self.counters.get(&txn, id)?.unwrap_or_default();
            if counter.window < window {
                counter = Counter { window, taken: 0 };
            }
            let mut held = self
                .node_allowances
                .get(&txn, &name)?
                .unwrap_or(NodeAllowance {
                    ceiling: counter.taken,
                    reported: 0,
                    touched_at: 0,
                    returning: 0,
                });
            let free = held.ceiling.saturating_sub(counter.taken);
            let need = match meter {
                Meter::Tokens => at_least.max(1),
                Meter::Requests | Meter::Parallel => 1,
            };
            if free >= need && shared.term_is_live() {
                let share = free / (4 * workers.max(1) as u64);
                let amount = match meter {
                    Meter::Tokens => share.max(need),
                    Meter::Requests | Meter::Parallel => share.clamp(1, MAX_COUNT_LEASE),
                }
                .min(free);
                counter.taken += amount;
                held.touched_at = now_ms();
                self.counters.put(&mut txn, id, &counter)?;
                self.node_allowances.put(&mut txn, &name, &held)?;
                crate::store::commit(txn, self.path())?;
                return Ok(WindowGrant::Granted {
                    amount,
                    taken: counter.taken,
                });
            }
            // Tokens used beyond the node's slice are owed to it first.
            let owed = counter.taken.saturating_sub(held.ceiling);
            drop(txn);
            if asked {
                return Ok(WindowGrant::Exhausted);
            }
            asked = true;
            let want = match meter {
                // Tokens go by the thousand: a quarter of what is left.
                Meter::Tokens => u64::MAX,
                Meter::Requests | Meter::Parallel => MAX_COUNT_LEASE * workers.max(1) as u64,
            };
            let limit = limit.min(i64::MAX as u64) as i64;
            let need = need.saturating_sub(free).saturating_add(owed);
            match shared.take_slice(
                &party,
                meter_name.clone(),
                want.max(need),
                need,
                Some(limit),
            ) {
                Slice::Granted(granted) => {
                    self.add_to_ceiling(&name, granted, |store, txn| {
                        let counter = store.counters.get(txn, id)?.unwrap_or_default();
                        let taken = if counter.window == window {
                            counter.taken
                        } else {
                            0
                        };
                        Ok(LocalUse {
                            used: 0,
                            handed: taken,
                        })
                    })?;
                }
                Slice::Exhausted { .. } => return Ok(WindowGrant::Exhausted),
                Slice::Unavailable => return Ok(WindowGrant::Unavailable),
            }
        }
    }
}
