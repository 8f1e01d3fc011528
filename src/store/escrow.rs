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

use super::counters::{Counter, MAX_COUNT_LEASE};
use super::journal::{self, Row};
use super::model::{Money, now_ms};
use super::{BudgetGrant, Meter, Payer, Store, StoreError, WindowGrant, counter_id};

/// The meter of `max_requests`.
pub const REQUESTS: &str = "requests";
/// The meter of budgets: `budget`, or `budget@<end of the window>` for a
/// budget with a window (each window is an allowance of its own).
const BUDGET: &str = "budget";

/// Largest slice of requests a node asks for at once, per worker (and,
/// for budgets, of requests' worth): a slice is at most a quarter of
/// what is left, so this caps it only while much is left. A node asks
/// PostgreSQL again about once per this many requests per worker.
const SLICE_PER_WORKER: u64 = 1024;

/// What a node holds of one allowance.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct NodeAllowance {
    pub ceiling: u64,
    pub reported: u64,
    /// When a worker was last handed some of it (unix ms): a slice idle
    /// for `IDLE_RETURN` goes back, for other nodes to use.
    pub touched_at: i64,
    /// Taken off the ceiling, to go back with the next report.
    pub returning: u64,
}

/// How long a slice may sit unused in a node before it is handed back.
const IDLE_RETURN_MS: i64 = 3_000;

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

/// The name of a payer's allowance in PostgreSQL.
pub(super) fn payer_party(payer: Payer<'_>) -> String {
    match payer {
        Payer::Key(id) => key_party(id),
        Payer::User(user) => format!("user:{user}"),
        Payer::Team(team) => format!("team:{team}"),
        Payer::KeyModel(id, model) => format!("keymodel:{id}:{model}"),
    }
}

fn party_payer(party: &str) -> Option<Payer<'_>> {
    let (kind, rest) = party.split_once(':')?;
    match kind {
        "key" => Some(Payer::Key(rest.parse().ok()?)),
        "user" => Some(Payer::User(rest)),
        "team" => Some(Payer::Team(rest)),
        "keymodel" => {
            let (id, model) = rest.split_at_checked(36)?;
            Some(Payer::KeyModel(id.parse().ok()?, model.strip_prefix(':')?))
        }
        _ => None,
    }
}

/// The name of a counter's party in PostgreSQL: its payer's, or the hex
/// of its slot for a deployment's.
fn counter_party(id: &[u8]) -> String {
    let slot = id.get(1..).unwrap_or_default();
    match Payer::of_slot(slot) {
        Some(payer) => payer_party(payer),
        None => format!(
            "slot:{}",
            slot.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// The meter of a counter's allowance: `rpm@<minute>`, `tpm@<minute>` or
/// `parallel`.
fn counter_meter(meter: Meter, window: i64) -> String {
    match meter {
        Meter::Parallel => meter.name().to_string(),
        Meter::Requests | Meter::Tokens => format!("{}@{window}", meter.name()),
    }
}

/// The counter (its id) and window an allowance of a counter names.
fn counter_of(party: &str, meter: &str) -> Option<(Box<[u8]>, i64)> {
    let (name, window) = match meter.split_once('@') {
        Some((name, window)) => (name, window.parse().ok()?),
        None => (meter, 0),
    };
    let meter = [Meter::Requests, Meter::Tokens, Meter::Parallel]
        .into_iter()
        .find(|m| m.name() == name)?;
    let slot = match party.strip_prefix("slot:") {
        Some(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?,
        None => party_payer(party)?.slot(),
    };
    Some((counter_id(meter, &slot), window))
}

fn budget_meter(window_end: Option<i64>) -> String {
    match window_end {
        Some(end) => format!("{BUDGET}@{end}"),
        None => BUDGET.to_string(),
    }
}

fn entry_name(party: &str, meter: &str) -> String {
    format!("{meter} {party}")
}

fn split_name(name: &str) -> Option<(&str, &str)> {
    let (meter, party) = name.split_once(' ')?;
    Some((party, meter))
}

/// What a node used of an allowance, and handed to its workers.
#[derive(Debug, Clone, Copy)]
struct LocalUse {
    used: u64,
    handed: u64,
}

/// The outcome of asking PostgreSQL for a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    Granted(u64),
    /// Less than was needed is left of the allowance: this much.
    Exhausted {
        left: u64,
    },
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
        let now = now_ms();
        for (name, mut held) in self.held_allowances(&txn)? {
            let Some((party, meter)) = split_name(&name) else {
                continue;
            };
            match self.local_use(&txn, party, meter, now)? {
                Some(local) => {
                    held.ceiling = local.handed;
                    held.reported = held.reported.max(local.handed);
                    held.returning = 0;
                    self.node_allowances.put(&mut txn, &name, &held)?;
                }
                None => {
                    self.node_allowances.delete(&mut txn, &name)?;
                }
            }
        }
        self.outbox.clear(&mut txn)?;
        self.meta.put(&mut txn, TERM, term.as_bytes())?;
        super::commit(txn, self.path())
    }

    fn held_allowances(&self, txn: &RwTxn) -> Result<Vec<(String, NodeAllowance)>, StoreError> {
        Ok(self
            .node_allowances
            .iter(txn)?
            .map(|entry| entry.map(|(name, held)| (name.to_string(), held)))
            .collect::<Result<_, _>>()?)
    }

    /// What this node used of an allowance and what its workers were
    /// handed of it (used, or leased and not yet used); `None` when the
    /// allowance is no longer the party's (its key is gone, or its budget
    /// window has passed).
    fn local_use(
        &self,
        txn: &RwTxn,
        party: &str,
        meter: &str,
        now: i64,
    ) -> Result<Option<LocalUse>, StoreError> {
        if let Some((counter, window)) = counter_of(party, meter) {
            let stored = self.counters.get(txn, &counter)?.unwrap_or_default();
            let minute = now / 60_000;
            let current = match window {
                0 => true,
                window => window == minute && stored.window == window,
            };
            return Ok(current.then_some(LocalUse {
                used: 0,
                handed: if stored.window == window {
                    stored.taken
                } else {
                    0
                },
            }));
        }
        if meter == REQUESTS {
            let Some(Payer::Key(id)) = party_payer(party) else {
                return Ok(None);
            };
            let usage = self.usage.get(txn, id.as_bytes())?.unwrap_or_default();
            return Ok(Some(LocalUse {
                used: usage.requests,
                handed: usage.reserved.max(usage.requests),
            }));
        }
        let Some(payer) = party_payer(party) else {
            return Ok(None);
        };
        let Some(window) = meter.strip_prefix(BUDGET) else {
            return Ok(None);
        };
        let slot = payer.slot();
        if let Some(end) = window.strip_prefix('@') {
            let current = self.budget_windows.get(txn, &slot)?;
            if current.map(|c| c.to_string()).as_deref() != Some(end)
                || current.is_some_and(|c| c <= now)
            {
                return Ok(None);
            }
        }
        let used = self.stored_spend(txn, payer)?.0;
        let reserved = self.reserved.get(txn, &slot)?.unwrap_or_default().0;
        Ok(Some(LocalUse {
            used,
            handed: used.saturating_add(reserved),
        }))
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
                let grant = share.clamp(1, super::ledger::MAX_LEASE).min(free);
                usage.reserved += grant;
                held.touched_at = now_ms();
                self.usage.put(&mut txn, key_id.as_bytes(), &usage)?;
                self.node_allowances.put(&mut txn, &name, &held)?;
                super::commit(txn, self.path())?;
                return Ok(super::Grant::Granted(grant));
            }
            drop(txn);
            if asked {
                return Ok(super::Grant::Exhausted);
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
                Slice::Exhausted { .. } => return Ok(super::Grant::Exhausted),
                Slice::Unavailable => return Ok(super::Grant::Unavailable),
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
        super::commit(txn, self.path())
    }

    /// Shared mode's `lease_budget`: from the node's slice of the payer's
    /// budget (of its current window), asking PostgreSQL for another slice
    /// when what is left of it is less than `at_least`.
    pub(super) fn lease_budget_from_slice(
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
                let units = (share / at_least).clamp(1, super::ledger::MAX_LEASE);
                let grant = at_least.saturating_mul(units).min(free);
                held.touched_at = now;
                self.reserved
                    .put(&mut txn, &slot, &Money(reserved.saturating_add(grant)))?;
                self.node_allowances.put(&mut txn, &name, &held)?;
                super::commit(txn, self.path())?;
                return Ok(BudgetGrant::Granted(Money(grant)));
            }
            // A window rolled over is worth keeping even when nothing is leased.
            super::commit(txn, self.path())?;
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
    pub(super) fn lease_counter_from_slice(
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
                super::commit(txn, self.path())?;
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

    /// Moves what was used since the last report, and what is not needed
    /// (slices idle for a while, those of budget windows that have passed,
    /// and with `return_all` every slice's part not handed to a worker),
    /// into a new batch of the outbox. Returns the batches waiting to be
    /// sent, oldest first.
    pub fn prepare_reports(&self, return_all: bool) -> Result<Vec<(u64, Batch)>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let Some(term) = self.meta.get(&txn, TERM)?.map(<[u8]>::to_vec) else {
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

    /// A party's record changed (its limits may be lower now): this node
    /// hands out nothing more of the slices it holds of the party's
    /// allowances, and gives back what it has not handed out with its
    /// next report; new slices are taken under the new limits.
    pub(super) fn drop_slices(&self, txn: &mut RwTxn, row: &Row) -> Result<(), StoreError> {
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

    /// For `migrate --import`: the allowance of every budget (of keys,
    /// users, teams and keys' models) in its current window, with what was
    /// spent (and is held by workers) counted as used.
    pub(super) fn budgets_for_import(
        &self,
    ) -> Result<Vec<(super::shared::AllowanceLimit, i64)>, StoreError> {
        let txn = self.env.read_txn()?;
        let now = now_ms();
        let mut payers: Vec<(String, Option<String>)> = Vec::new();
        for entry in self.keys.iter(&txn)? {
            let (_, key) = entry?;
            payers.push((key_party(key.id), None));
            for model in key.model_limits.keys() {
                payers.push((key_party(key.id), Some(model.clone())));
            }
        }
        for entry in self.users.iter(&txn)? {
            payers.push((format!("user:{}", entry?.0), None));
        }
        for entry in self.teams.iter(&txn)? {
            payers.push((format!("team:{}", entry?.0), None));
        }
        let mut budgets = Vec::new();
        for (party, model) in &payers {
            let party = match model {
                Some(model) => format!("keymodel:{}:{model}", &party["key:".len()..]),
                None => party.clone(),
            };
            let Some(payer) = party_payer(&party) else {
                continue;
            };
            let Some((Some(budget), window)) = self.payer_budget(&txn, payer)? else {
                continue;
            };
            let slot = payer.slot();
            let end = match window {
                Some(_) => match self.budget_windows.get(&txn, &slot)? {
                    // A window that has passed starts from nothing.
                    Some(end) if end > now => Some(end),
                    _ => continue,
                },
                None => None,
            };
            let spent = self.stored_spend(&txn, payer)?.0;
            let held = self.reserved.get(&txn, &slot)?.unwrap_or_default().0;
            budgets.push((
                super::shared::AllowanceLimit {
                    meter: budget_meter(end),
                    party,
                    limit: Some(budget.amount.0.min(i64::MAX as u64) as i64),
                },
                spent.saturating_add(held).min(i64::MAX as u64) as i64,
            ));
        }
        Ok(budgets)
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
                meter: REQUESTS.to_string(),
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
        let name = entry_name("user:ada@example.com", "budget@17");
        assert_eq!(
            split_name(&name),
            Some(("user:ada@example.com", "budget@17"))
        );
        let id = Uuid::from_u128(7);
        for payer in [
            Payer::Key(id),
            Payer::User("ada@example.com"),
            Payer::Team("t:1"),
            Payer::KeyModel(id, "gpt:4"),
        ] {
            let party = payer_party(payer);
            assert_eq!(party_payer(&party), Some(payer), "{party}");
        }
        assert_eq!(budget_meter(Some(5)), "budget@5");
        let rpm = counter_id(Meter::Requests, &Payer::User("ada").slot());
        let party = counter_party(&rpm);
        assert_eq!(party, "user:ada");
        let meter = counter_meter(Meter::Requests, 29_000_000);
        assert_eq!(counter_of(&party, &meter), Some((rpm, 29_000_000)));
        let deployment = counter_id(Meter::Parallel, b"d\x01\xff");
        let party = counter_party(&deployment);
        assert_eq!(counter_of(&party, "parallel"), Some((deployment, 0)));
        assert_eq!(counter_of("user:ada", "budget"), None);
        assert_eq!(budget_meter(None), "budget");
    }
}
