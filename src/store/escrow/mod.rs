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

mod lease;
mod report;

use heed::types::{Bytes, SerdeBincode, Str};
use heed::{Database, RwTxn};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::model::now_ms;
use crate::store::{Meter, Payer, Store, StoreError, counter_id};

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
        crate::store::commit(txn, self.path())
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

    /// For `migrate --import`: the allowance of every budget (of keys,
    /// users, teams and keys' models) in its current window, with what was
    /// spent (and is held by workers) counted as used.
    pub(in crate::store) fn budgets_for_import(
        &self,
    ) -> Result<Vec<(crate::store::shared::AllowanceLimit, i64)>, StoreError> {
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
                crate::store::shared::AllowanceLimit {
                    meter: budget_meter(end),
                    party,
                    limit: Some(budget.amount.0.min(i64::MAX as u64) as i64),
                },
                spent.saturating_add(held).min(i64::MAX as u64) as i64,
            ));
        }
        Ok(budgets)
    }

    /// The allowances the keys changed by a management write have in
    /// PostgreSQL: `(party, meter, limit)`, `None` when there is none (no
    /// limit, or the key is gone).
    pub(in crate::store) fn allowance_limits(
        rows: &[crate::store::journal::Row],
    ) -> Result<Vec<crate::store::shared::AllowanceLimit>, StoreError> {
        let mut limits = Vec::new();
        for row in rows {
            if !std::ptr::eq(row.table, &crate::store::journal::KEYS) {
                continue;
            }
            let (id, value) = row.table.decode(row)?;
            let Ok(id) = Uuid::from_slice(&id) else {
                continue;
            };
            let limit = match value {
                Some(bytes) => bincode::deserialize::<crate::store::KeyRecord>(&bytes)
                    .map_err(|e| StoreError::Invalid(format!("a key record: {e}")))?
                    .max_requests
                    .map(|n| n.min(i64::MAX as u64) as i64),
                None => None,
            };
            limits.push(crate::store::shared::AllowanceLimit {
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
