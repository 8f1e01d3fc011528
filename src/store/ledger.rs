//! The usage ledger: quota and budget leases for limited keys (and users
//! with a budget), and the request counts and spend the workers report.
//!
//! A worker serves a limited key only out of quota it has leased: the
//! lease is added to `reserved` and committed (fsynced) before the first
//! request it covers is forwarded, and `reserved` never exceeds the key's
//! `max_requests`. Unused quota is handed back later. Budgets work the same
//! way with amounts of money: a lease is added to the key's (or user's)
//! `reserved` amount, and `spend + reserved` never exceeds the budget. What
//! a request cost moves from `reserved` to `spend` when its worker reports.
//!
//! A crash loses the unused part of the leases in flight: they stay
//! reserved, so a limit can be undershot by a little, never exceeded. A
//! server marks the store while it serves (`begin_serving`); the next one
//! to start finds the mark if the last did not stop cleanly, and takes
//! everything still leased as used: request counts become the reserved
//! counts and reserved money becomes spend, so that what the store shows
//! is never less than what was served.

use uuid::Uuid;

use super::model::{Budget, BudgetWindow, Money, Usage, now_ms};
use super::{Store, StoreError};

/// Largest lease handed out at once (requests; for budgets, this many
/// times the estimate of the request that asked).
pub(super) const MAX_LEASE: u64 = 64;
/// The mark of a server at work, in `meta`.
const SERVING: &str = "serving";

/// The outcome of a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many requests may be served.
    Granted(u64),
    /// The key has no quota left.
    Exhausted,
    /// The key has no limit (or no longer exists as a limited key).
    Unlimited,
    /// Shared mode: the limit is held in PostgreSQL, which cannot be
    /// reached, and this node's slice of it is used up.
    Unavailable,
}

/// Whose budget a lease is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payer<'a> {
    Key(Uuid),
    User(&'a str),
    Team(&'a str),
    /// A key's use of one model (`model_max_budget`).
    KeyModel(Uuid, &'a str),
}

impl<'a> Payer<'a> {
    /// The payer's entry in the `reserved`, `budget_windows` and
    /// `payer_spend` databases, and the name of its leases in the workers.
    pub fn slot(self) -> Vec<u8> {
        match self {
            Payer::Key(id) => [&b"k"[..], id.as_bytes()].concat(),
            Payer::User(user_id) => [&b"u"[..], user_id.as_bytes()].concat(),
            Payer::Team(team_id) => [&b"t"[..], team_id.as_bytes()].concat(),
            Payer::KeyModel(id, model) => [&b"m"[..], id.as_bytes(), model.as_bytes()].concat(),
        }
    }

    /// The payer whose slot this is.
    pub fn of_slot(slot: &'a [u8]) -> Option<Self> {
        let (tag, rest) = slot.split_first()?;
        let text = || std::str::from_utf8(rest).ok();
        let id = |bytes: &[u8]| Uuid::from_slice(bytes).ok();
        match tag {
            b'k' => Some(Payer::Key(id(rest)?)),
            b'u' => Some(Payer::User(text()?)),
            b't' => Some(Payer::Team(text()?)),
            b'm' if rest.len() >= 16 => Some(Payer::KeyModel(
                id(&rest[..16])?,
                std::str::from_utf8(&rest[16..]).ok()?,
            )),
            _ => None,
        }
    }
}

/// The outcome of a budget lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetGrant {
    /// This much may be spent.
    Granted(Money),
    /// Less than was asked for is left: the budget, less what was spent
    /// and what is leased.
    Exhausted { left: Money },
    /// No budget (or no such payer any more).
    Unlimited,
    /// Shared mode: the budget is held in PostgreSQL, which cannot be
    /// reached, and this node's slice of it is used up.
    Unavailable,
}

/// What one worker reports for one key.
#[derive(Debug, Clone)]
pub struct Report {
    pub key_id: Uuid,
    /// Requests served since the last report.
    pub served: u64,
    /// Leased quota handed back unused.
    pub returned: u64,
    /// What the requests served since the last report cost; added to the
    /// key's spend, its user's and its team's.
    pub cost: Money,
    /// The part of `cost` spent on models whose spend the key counts apart
    /// (`model_max_budget`).
    pub by_model: Vec<(String, Money)>,
    pub last_used_at: i64,
}

/// Everything one worker reports at once, written in one transaction.
#[derive(Debug, Default)]
pub struct Reports {
    pub keys: Vec<Report>,
    /// Leased budget no longer held by the worker (spent, or handed back),
    /// by payer slot.
    pub released: Vec<(Box<[u8]>, Money)>,
    /// Leases of per-minute and parallel limits handed back or overdrawn.
    pub counters: Vec<super::counters::CounterReport>,
}

impl Reports {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.released.is_empty() && self.counters.is_empty()
    }
}

/// A payer whose spend went past its soft budget with a report.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftBudgetCrossed {
    /// `key`, `user` or `team`.
    pub kind: &'static str,
    pub id: String,
    pub spend: Money,
    pub soft_budget: Money,
}

/// A payer's budget, if it has one, and the budget's window, if it has one.
type PayerBudget = (Option<Budget>, Option<BudgetWindow>);

/// What a start after an unclean stop took as used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Keys whose leases were taken as used.
    pub keys: usize,
    /// Requests added to the keys' counts.
    pub requests: u64,
    /// Money added to the keys' spend.
    pub spend: Money,
}

impl Store {
    /// Leases quota for `key_id`. The lease shrinks as the limit nears, so
    /// that little quota sits idle in one worker while another needs it. A
    /// key with a budget and no `max_requests` gets leases too (of
    /// `MAX_LEASE`): they are what keeps its request count right after a
    /// crash.
    pub fn lease(&self, key_id: Uuid, workers: usize) -> Result<Grant, StoreError> {
        if self.shared().is_some() {
            return self.lease_from_slice(key_id, workers);
        }
        self.lease_local(key_id, workers)
    }

    /// `lease` from the key's whole limit (single-node mode, and keys
    /// whose requests are only counted).
    pub(super) fn lease_local(&self, key_id: Uuid, workers: usize) -> Result<Grant, StoreError> {
        let mut txn = self.env.write_txn()?;
        let Some(key) = self.keys.get(&txn, key_id.as_bytes())? else {
            return Ok(Grant::Unlimited);
        };
        let max = match (key.max_requests, key.max_budget) {
            (Some(max), _) => max,
            (None, Some(_)) => u64::MAX,
            (None, None) => return Ok(Grant::Unlimited),
        };
        let mut usage = self.usage.get(&txn, key_id.as_bytes())?.unwrap_or_default();
        // Requests counted while the key was unlimited count against the limit too.
        usage.reserved = usage.reserved.max(usage.requests);
        let remaining = max.saturating_sub(usage.reserved);
        if remaining == 0 {
            return Ok(Grant::Exhausted);
        }
        let share = remaining / (4 * workers.max(1) as u64);
        let grant = share.clamp(1, MAX_LEASE).min(remaining);
        usage.reserved += grant;
        self.usage.put(&mut txn, key_id.as_bytes(), &usage)?;
        super::commit(txn, self.path())?;
        Ok(Grant::Granted(grant))
    }

    /// Leases at least `at_least` of `payer`'s budget, and more while much
    /// is left (a share of what is left, at most `MAX_LEASE` times
    /// `at_least`), so that a worker asks again only now and then. Nothing
    /// is leased when less than `at_least` is left.
    pub fn lease_budget(
        &self,
        payer: Payer<'_>,
        at_least: Money,
        workers: usize,
    ) -> Result<BudgetGrant, StoreError> {
        if self.shared().is_some() {
            return self.lease_budget_from_slice(payer, at_least, workers);
        }
        let mut txn = self.env.write_txn()?;
        let Some((budget, window)) = self.payer_budget(&txn, payer)? else {
            return Ok(BudgetGrant::Unlimited);
        };
        let Some(budget) = budget else {
            return Ok(BudgetGrant::Unlimited);
        };
        self.roll_window(&mut txn, payer, window, now_ms())?;
        let spend = self.stored_spend(&txn, payer)?;
        let slot = payer.slot();
        let reserved = self.reserved.get(&txn, &slot)?.unwrap_or_default();
        let left = budget
            .amount
            .0
            .saturating_sub(spend.0)
            .saturating_sub(reserved.0);
        let at_least = at_least.0.max(1);
        if left < at_least {
            // A window rolled over is worth keeping even when nothing is leased.
            super::commit(txn, self.path())?;
            return Ok(BudgetGrant::Exhausted { left: Money(left) });
        }
        // Whole multiples of what was asked for: requests of one size then
        // use a lease up exactly, with nothing left over too small to use.
        let share = left / (4 * workers.max(1) as u64);
        let units = (share / at_least).clamp(1, MAX_LEASE);
        let grant = at_least.saturating_mul(units).min(left);
        self.reserved
            .put(&mut txn, &slot, &reserved.saturating_add(Money(grant)))?;
        super::commit(txn, self.path())?;
        Ok(BudgetGrant::Granted(Money(grant)))
    }

    /// Records what workers served, hands back unused leases and applies
    /// the counters' reports, in one transaction. Returns the payers whose
    /// spend went past their soft budget with these reports.
    pub fn settle(&self, reports: &Reports) -> Result<Vec<SoftBudgetCrossed>, StoreError> {
        let mut crossed = Vec::new();
        if reports.is_empty() {
            return Ok(crossed);
        }
        let now = now_ms();
        let mut txn = self.env.write_txn()?;
        for report in &reports.keys {
            let id = report.key_id.as_bytes();
            let Some(key) = self.keys.get(&txn, id)? else {
                continue;
            };
            let mut usage = self.usage.get(&txn, id)?.unwrap_or_default();
            usage.requests += report.served;
            usage.reserved = usage.reserved.saturating_sub(report.returned);
            if report.served > 0 {
                usage.last_used_at = Some(usage.last_used_at.unwrap_or(0).max(report.last_used_at));
            }
            self.usage.put(&mut txn, id, &usage)?;
            if report.cost == Money(0) {
                continue;
            }
            let key_payer = Payer::Key(report.key_id);
            let soft = key.limits.soft_budget.map(|b| b.amount);
            if let Some(spend) = self.add_spend(
                &mut txn,
                key_payer,
                key.limits.budget_duration,
                report.cost,
                now,
                soft,
            )? {
                crossed.push(SoftBudgetCrossed {
                    kind: "key",
                    id: key.id.to_string(),
                    spend,
                    soft_budget: soft.unwrap_or_default(),
                });
            }
            if let Some(user_id) = &key.user_id
                && let Some(user) = self.users.get(&txn, user_id)?
            {
                let soft = user.limits.soft_budget.map(|b| b.amount);
                let payer = Payer::User(user_id);
                let window = user.limits.budget_duration;
                if let Some(spend) =
                    self.add_spend(&mut txn, payer, window, report.cost, now, soft)?
                {
                    crossed.push(SoftBudgetCrossed {
                        kind: "user",
                        id: user_id.clone(),
                        spend,
                        soft_budget: soft.unwrap_or_default(),
                    });
                }
            }
            if let Some(team_id) = &key.team_id
                && let Some(team) = self.teams.get(&txn, team_id)?
            {
                let soft = team.limits.soft_budget.map(|b| b.amount);
                let payer = Payer::Team(team_id);
                let window = team.limits.budget_duration;
                if let Some(spend) =
                    self.add_spend(&mut txn, payer, window, report.cost, now, soft)?
                {
                    crossed.push(SoftBudgetCrossed {
                        kind: "team",
                        id: team_id.clone(),
                        spend,
                        soft_budget: soft.unwrap_or_default(),
                    });
                }
            }
            for (model, cost) in &report.by_model {
                let window = key.model_limits.get(model).and_then(|m| m.budget_duration);
                let payer = Payer::KeyModel(report.key_id, model);
                self.add_spend(&mut txn, payer, window, *cost, now, None)?;
            }
        }
        for (slot, released) in &reports.released {
            self.release(&mut txn, slot, *released)?;
        }
        super::commit(txn, self.path())?;
        self.settle_counters(&reports.counters)?;
        Ok(crossed)
    }

    /// The budget of `payer` and its window: `None` when the payer is gone.
    pub(super) fn payer_budget(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        payer: Payer<'_>,
    ) -> Result<Option<PayerBudget>, StoreError> {
        Ok(match payer {
            Payer::Key(id) => self
                .keys
                .get(txn, id.as_bytes())?
                .map(|k| (k.max_budget, k.limits.budget_duration)),
            Payer::User(user_id) => self
                .users
                .get(txn, user_id)?
                .map(|u| (u.max_budget, u.limits.budget_duration)),
            Payer::Team(team_id) => self
                .teams
                .get(txn, team_id)?
                .map(|t| (t.max_budget, t.limits.budget_duration)),
            Payer::KeyModel(id, model) => self.keys.get(txn, id.as_bytes())?.map(|k| {
                let limits = k.model_limits.get(model).copied().unwrap_or_default();
                (limits.max_budget, limits.budget_duration)
            }),
        })
    }

    /// `payer`'s spend as stored (its current window's, if the window has
    /// been rolled over).
    pub(super) fn stored_spend(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        payer: Payer<'_>,
    ) -> Result<Money, StoreError> {
        Ok(match payer {
            Payer::Key(id) => {
                self.usage
                    .get(txn, id.as_bytes())?
                    .unwrap_or_default()
                    .spend
            }
            Payer::User(user_id) => self.user_spend.get(txn, user_id)?.unwrap_or_default(),
            Payer::Team(_) | Payer::KeyModel(..) => self
                .payer_spend
                .get(txn, &payer.slot())?
                .unwrap_or_default(),
        })
    }

    fn put_spend(
        &self,
        txn: &mut heed::RwTxn,
        payer: Payer<'_>,
        spend: Money,
    ) -> Result<(), StoreError> {
        match payer {
            Payer::Key(id) => {
                let mut usage = self.usage.get(txn, id.as_bytes())?.unwrap_or_default();
                usage.spend = spend;
                self.usage.put(txn, id.as_bytes(), &usage)?;
            }
            Payer::User(user_id) => self.user_spend.put(txn, user_id, &spend)?,
            Payer::Team(_) | Payer::KeyModel(..) => {
                self.payer_spend.put(txn, &payer.slot(), &spend)?
            }
        }
        Ok(())
    }

    /// `payer`'s spend in its budget's current window, as of `now`.
    pub(super) fn window_spend(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        payer: Payer<'_>,
        now: i64,
    ) -> Result<Money, StoreError> {
        if let Some(end) = self.budget_windows.get(txn, &payer.slot())?
            && end <= now
        {
            return Ok(Money(0));
        }
        self.stored_spend(txn, payer)
    }

    /// The end of `payer`'s current budget window, if its budget has one.
    pub(super) fn window_end(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        payer: Payer<'_>,
        window: Option<BudgetWindow>,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let Some(window) = window else {
            return Ok(None);
        };
        Ok(Some(match self.budget_windows.get(txn, &payer.slot())? {
            Some(end) if end > now => end,
            Some(end) => window.end_after(end, now),
            None => window.end(now),
        }))
    }

    /// Starts `payer`'s spend from zero if its budget window has ended,
    /// and starts its first window if it has none yet.
    pub(super) fn roll_window(
        &self,
        txn: &mut heed::RwTxn,
        payer: Payer<'_>,
        window: Option<BudgetWindow>,
        now: i64,
    ) -> Result<(), StoreError> {
        let Some(window) = window else {
            return Ok(());
        };
        let slot = payer.slot();
        match self.budget_windows.get(txn, &slot)? {
            Some(end) if end > now => {}
            Some(end) => {
                self.put_spend(txn, payer, Money(0))?;
                self.budget_windows
                    .put(txn, &slot, &window.end_after(end, now))?;
            }
            None => self.budget_windows.put(txn, &slot, &window.end(now))?,
        }
        Ok(())
    }

    /// Sets (or, with `None`, removes) `payer`'s budget window, starting
    /// now; unchanged when the window is the one it has.
    pub(super) fn set_budget_window(
        &self,
        txn: &mut heed::RwTxn,
        payer: Payer<'_>,
        old: Option<BudgetWindow>,
        new: Option<BudgetWindow>,
    ) -> Result<(), StoreError> {
        let slot = payer.slot();
        match new {
            None => {
                self.budget_windows.delete(txn, &slot)?;
            }
            Some(window)
                if old != Some(window) || self.budget_windows.get(txn, &slot)?.is_none() =>
            {
                self.budget_windows.put(txn, &slot, &window.end(now_ms()))?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Adds `cost` to `payer`'s spend (in its current window); returns the
    /// new spend if it went past `soft` with it.
    fn add_spend(
        &self,
        txn: &mut heed::RwTxn,
        payer: Payer<'_>,
        window: Option<BudgetWindow>,
        cost: Money,
        now: i64,
        soft: Option<Money>,
    ) -> Result<Option<Money>, StoreError> {
        self.roll_window(txn, payer, window, now)?;
        let before = self.stored_spend(txn, payer)?;
        let after = before.saturating_add(cost);
        self.put_spend(txn, payer, after)?;
        let Some(soft) = soft else {
            return Ok(None);
        };
        // Shared mode: the soft budget is the cluster's; what the other
        // nodes spent is known a second or two late.
        let seen = self.spend_across_nodes(txn, payer, before)?;
        let seen_after = seen.saturating_add(cost);
        Ok((seen < soft && seen_after >= soft).then_some(seen_after))
    }

    /// Takes `amount` off what the payer of `slot` has leased.
    fn release(&self, txn: &mut heed::RwTxn, slot: &[u8], amount: Money) -> Result<(), StoreError> {
        if amount == Money(0) {
            return Ok(());
        }
        let Some(reserved) = self.reserved.get(txn, slot)? else {
            return Ok(());
        };
        let rest = reserved.0.saturating_sub(amount.0);
        if rest == 0 {
            self.reserved.delete(txn, slot)?;
        } else {
            self.reserved.put(txn, slot, &Money(rest))?;
        }
        Ok(())
    }

    /// Forgets what `payer` has leased, spent and its window (the payer
    /// is deleted).
    pub(super) fn forget_payer(
        &self,
        txn: &mut heed::RwTxn,
        payer: Payer<'_>,
    ) -> Result<(), StoreError> {
        let slot = payer.slot();
        self.reserved.delete(txn, &slot)?;
        self.budget_windows.delete(txn, &slot)?;
        self.payer_spend.delete(txn, &slot)?;
        Ok(())
    }

    /// Budget leased out for `payer` and not yet spent or handed back.
    pub fn reserved_of(&self, payer: Payer<'_>) -> Result<Money, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.reserved.get(&txn, &payer.slot())?.unwrap_or_default())
    }

    /// A key's use as the management API shows it (in shared mode, the
    /// sums over the nodes: see `usage`).
    pub fn usage_of(&self, key_id: Uuid) -> Result<Usage, StoreError> {
        let txn = self.env.read_txn()?;
        let usage = self.usage.get(&txn, key_id.as_bytes())?.unwrap_or_default();
        self.shown_usage(&txn, key_id, usage)
    }

    /// Marks the store as served by this process (one server per data
    /// directory). If the mark is already there, the last server did not
    /// stop cleanly (`kill -9`, power loss): what its workers had leased
    /// may have been served without being reported, so it is taken as used
    /// first (`Recovered` says how much). Limits are unchanged by this: what
    /// was leased was already counted against them.
    pub fn begin_serving(&self) -> Result<Option<Recovered>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let recovered = match self.meta.get(&txn, SERVING)? {
            Some(_) => Some(self.take_leases_as_used(&mut txn)?),
            None => None,
        };
        self.meta.put(&mut txn, SERVING, &[1])?;
        self.reset_counters(&mut txn, now_ms() / 60_000)?;
        txn.commit()?;
        Ok(recovered)
    }

    /// Clears the mark of `begin_serving`, once every worker has reported
    /// and handed its leases back.
    pub fn end_serving(&self) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.meta.delete(&mut txn, SERVING)?;
        txn.commit()?;
        Ok(())
    }

    fn take_leases_as_used(&self, txn: &mut heed::RwTxn) -> Result<Recovered, StoreError> {
        let mut recovered = Recovered::default();
        // Request counts: whatever was leased counts as served.
        let mut counts = Vec::new();
        for entry in self.usage.iter(txn)? {
            let (id, usage) = entry?;
            if usage.reserved > usage.requests {
                counts.push((id.to_vec(), usage));
            }
        }
        let mut keys = std::collections::HashSet::new();
        for (id, mut usage) in counts {
            recovered.requests += usage.reserved - usage.requests;
            usage.requests = usage.reserved;
            self.usage.put(txn, &id, &usage)?;
            keys.insert(id);
        }
        // Money: a key's leased budget becomes its spend. A user's spend
        // grows by its own leased budget, or by its keys' if that is more
        // (a user without a budget of its own leases nothing).
        let mut leased = Vec::new();
        for entry in self.reserved.iter(txn)? {
            let (slot, amount) = entry?;
            leased.push((slot.to_vec(), amount));
        }
        // Users and teams: (their own lease, their keys' leases), by slot.
        let mut owners: std::collections::HashMap<Vec<u8>, (Money, Money)> = Default::default();
        for (slot, amount) in &leased {
            match Payer::of_slot(slot) {
                Some(Payer::Key(id)) => {
                    let Some(key) = self.keys.get(txn, id.as_bytes())? else {
                        continue;
                    };
                    let mut usage = self.usage.get(txn, id.as_bytes())?.unwrap_or_default();
                    usage.spend = usage.spend.saturating_add(*amount);
                    self.usage.put(txn, id.as_bytes(), &usage)?;
                    recovered.spend = recovered.spend.saturating_add(*amount);
                    keys.insert(id.as_bytes().to_vec());
                    let parents = [
                        key.user_id.as_deref().map(Payer::User),
                        key.team_id.as_deref().map(Payer::Team),
                    ];
                    for parent in parents.into_iter().flatten() {
                        let entry = owners.entry(parent.slot()).or_default();
                        entry.1 = entry.1.saturating_add(*amount);
                    }
                }
                Some(Payer::User(_) | Payer::Team(_)) => {
                    owners.entry(slot.clone()).or_default().0 = *amount;
                }
                Some(payer @ Payer::KeyModel(..)) => {
                    let spend = self.stored_spend(txn, payer)?;
                    self.put_spend(txn, payer, spend.saturating_add(*amount))?;
                }
                None => {}
            }
        }
        for (slot, (own, of_keys)) in owners {
            let Some(payer) = Payer::of_slot(&slot) else {
                continue;
            };
            if self.payer_budget(txn, payer)?.is_none() {
                continue;
            }
            let spend = self.stored_spend(txn, payer)?;
            self.put_spend(txn, payer, spend.saturating_add(own.max(of_keys)))?;
        }
        self.reserved.clear(txn)?;
        recovered.keys = keys.len();
        Ok(recovered)
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Budget;
    use super::super::{NewKey, Report};
    use super::*;

    fn store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("llm-proxy-ledger-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir, None).expect("store"), dir)
    }

    #[test]
    fn budget_leases_stay_within_the_budget_and_settle_into_spend() {
        let (store, dir) = store("lease");
        let (key, _) = store
            .create_key(NewKey {
                max_budget: Some(Budget {
                    dollars: 0.0,
                    amount: Money(1_000),
                }),
                ..NewKey::default()
            })
            .expect("key");
        let payer = Payer::Key(key.id);
        // A share of what is left, in whole multiples of what was asked.
        assert_eq!(
            store.lease_budget(payer, Money(30), 2).unwrap(),
            BudgetGrant::Granted(Money(120))
        );
        assert_eq!(store.reserved_of(payer).unwrap(), Money(120));
        // Never more than what is left.
        assert_eq!(
            store.lease_budget(payer, Money(900), 2).unwrap(),
            BudgetGrant::Exhausted { left: Money(880) }
        );
        assert_eq!(
            store.lease_budget(payer, Money(880), 2).unwrap(),
            BudgetGrant::Granted(Money(880))
        );
        assert_eq!(
            store.lease_budget(payer, Money(1), 2).unwrap(),
            BudgetGrant::Exhausted { left: Money(0) }
        );
        // 100 spent, 50 handed back: 850 stay leased.
        let report = Report {
            key_id: key.id,
            served: 1,
            returned: 0,
            cost: Money(100),
            by_model: Vec::new(),
            last_used_at: 1,
        };
        store
            .settle(&Reports {
                keys: vec![report],
                released: vec![(payer.slot().into(), Money(150))],
                counters: Vec::new(),
            })
            .unwrap();
        assert_eq!(store.usage_of(key.id).unwrap().spend, Money(100));
        assert_eq!(store.reserved_of(payer).unwrap(), Money(850));
        assert_eq!(
            store.lease_budget(payer, Money(50), 2).unwrap(),
            BudgetGrant::Granted(Money(50))
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unclean_stop_takes_what_was_leased_as_used() {
        let (store, dir) = store("recover");
        let (key, _) = store
            .create_key(NewKey {
                max_requests: Some(100),
                max_budget: Some(Budget {
                    dollars: 0.0,
                    amount: Money(1_000),
                }),
                ..NewKey::default()
            })
            .expect("key");
        assert_eq!(store.begin_serving().unwrap(), None);
        let Grant::Granted(count) = store.lease(key.id, 1).unwrap() else {
            panic!("no lease");
        };
        let BudgetGrant::Granted(money) = store
            .lease_budget(Payer::Key(key.id), Money(10), 1)
            .unwrap()
        else {
            panic!("no budget lease");
        };
        // The server dies: nothing reported, the mark stays.
        let recovered = store.begin_serving().unwrap().expect("an unclean stop");
        assert_eq!(recovered.requests, count);
        assert_eq!(recovered.spend, money);
        let usage = store.usage_of(key.id).unwrap();
        assert_eq!((usage.requests, usage.reserved), (count, count));
        assert_eq!(usage.spend, money);
        assert_eq!(store.reserved_of(Payer::Key(key.id)).unwrap(), Money(0));
        // What is left is what was left.
        assert_eq!(
            store
                .lease_budget(Payer::Key(key.id), Money(1_000), 1)
                .unwrap(),
            BudgetGrant::Exhausted {
                left: Money(1_000 - money.0)
            }
        );
        // A clean stop leaves nothing to recover.
        store.end_serving().unwrap();
        assert_eq!(store.begin_serving().unwrap(), None);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
