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

use super::model::{Money, Usage};
use super::{Store, StoreError};

/// Largest lease handed out at once (requests; for budgets, this many
/// times the estimate of the request that asked).
const MAX_LEASE: u64 = 64;
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
}

/// Whose budget a lease is taken from.
#[derive(Debug, Clone, Copy)]
pub enum Payer<'a> {
    Key(Uuid),
    User(&'a str),
}

impl Payer<'_> {
    /// The payer's entry in the `reserved` database.
    fn slot(self) -> Vec<u8> {
        match self {
            Payer::Key(id) => [&b"k"[..], id.as_bytes()].concat(),
            Payer::User(user_id) => [&b"u"[..], user_id.as_bytes()].concat(),
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
    /// No budget (or no such key or user any more).
    Unlimited,
}

/// What one worker reports for one key.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub key_id: Uuid,
    /// Requests served since the last report.
    pub served: u64,
    /// Leased quota handed back unused.
    pub returned: u64,
    /// What the requests served since the last report cost; added to the
    /// key's spend and to its user's.
    pub cost: Money,
    /// Leased budget of the key no longer held: spent (it is in `cost`) or
    /// handed back.
    pub released: Money,
    pub last_used_at: i64,
}

/// Leased budget of a user no longer held by a worker.
#[derive(Debug, Clone)]
pub struct UserRelease {
    pub user_id: String,
    pub released: Money,
}

/// Everything one worker reports at once, written in one transaction.
#[derive(Debug, Default)]
pub struct Reports {
    pub keys: Vec<Report>,
    pub users: Vec<UserRelease>,
}

impl Reports {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.users.is_empty()
    }
}

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
        let mut txn = self.env.write_txn()?;
        let (budget, spend) = match payer {
            Payer::Key(id) => {
                let Some(budget) = self
                    .keys
                    .get(&txn, id.as_bytes())?
                    .and_then(|k| k.max_budget)
                else {
                    return Ok(BudgetGrant::Unlimited);
                };
                let usage = self.usage.get(&txn, id.as_bytes())?.unwrap_or_default();
                (budget, usage.spend)
            }
            Payer::User(user_id) => {
                let Some(budget) = self.users.get(&txn, user_id)?.and_then(|u| u.max_budget) else {
                    return Ok(BudgetGrant::Unlimited);
                };
                (
                    budget,
                    self.user_spend.get(&txn, user_id)?.unwrap_or_default(),
                )
            }
        };
        let slot = payer.slot();
        let reserved = self.reserved.get(&txn, &slot)?.unwrap_or_default();
        let left = budget
            .amount
            .0
            .saturating_sub(spend.0)
            .saturating_sub(reserved.0);
        let at_least = at_least.0.max(1);
        if left < at_least {
            return Ok(BudgetGrant::Exhausted { left: Money(left) });
        }
        // Whole multiples of what was asked for: requests of one size then
        // use a lease up exactly, with nothing left over too small to use.
        let share = left / (4 * workers.max(1) as u64);
        let units = (share / at_least).clamp(1, MAX_LEASE);
        let grant = at_least.saturating_mul(units).min(left);
        self.reserved
            .put(&mut txn, &slot, &reserved.saturating_add(Money(grant)))?;
        txn.commit()?;
        Ok(BudgetGrant::Granted(Money(grant)))
    }

    /// Records what workers served and hands back unused leases, in one
    /// transaction.
    pub fn settle(&self, reports: &Reports) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let mut txn = self.env.write_txn()?;
        for report in &reports.keys {
            let id = report.key_id.as_bytes();
            let Some(key) = self.keys.get(&txn, id)? else {
                continue;
            };
            let mut usage = self.usage.get(&txn, id)?.unwrap_or_default();
            usage.requests += report.served;
            usage.reserved = usage.reserved.saturating_sub(report.returned);
            usage.spend = usage.spend.saturating_add(report.cost);
            if report.cost > Money(0)
                && let Some(user_id) = &key.user_id
            {
                let spend = self.user_spend.get(&txn, user_id)?.unwrap_or_default();
                self.user_spend
                    .put(&mut txn, user_id, &spend.saturating_add(report.cost))?;
            }
            if report.served > 0 {
                usage.last_used_at = Some(usage.last_used_at.unwrap_or(0).max(report.last_used_at));
            }
            self.usage.put(&mut txn, id, &usage)?;
            self.release(&mut txn, Payer::Key(report.key_id), report.released)?;
        }
        for release in &reports.users {
            self.release(&mut txn, Payer::User(&release.user_id), release.released)?;
        }
        super::commit(txn, self.path())?;
        Ok(())
    }

    /// Takes `amount` off what `payer` has leased.
    fn release(
        &self,
        txn: &mut heed::RwTxn,
        payer: Payer<'_>,
        amount: Money,
    ) -> Result<(), StoreError> {
        if amount == Money(0) {
            return Ok(());
        }
        let slot = payer.slot();
        let Some(reserved) = self.reserved.get(txn, &slot)? else {
            return Ok(());
        };
        let rest = reserved.0.saturating_sub(amount.0);
        if rest == 0 {
            self.reserved.delete(txn, &slot)?;
        } else {
            self.reserved.put(txn, &slot, &Money(rest))?;
        }
        Ok(())
    }

    /// Forgets what `payer` has leased (the key or user is deleted).
    pub(super) fn forget_reserved(
        &self,
        txn: &mut heed::RwTxn,
        payer: Payer<'_>,
    ) -> Result<(), StoreError> {
        self.reserved.delete(txn, &payer.slot())?;
        Ok(())
    }

    /// Budget leased out for `payer` and not yet spent or handed back.
    pub fn reserved_of(&self, payer: Payer<'_>) -> Result<Money, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.reserved.get(&txn, &payer.slot())?.unwrap_or_default())
    }

    pub fn usage_of(&self, key_id: Uuid) -> Result<Usage, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.usage.get(&txn, key_id.as_bytes())?.unwrap_or_default())
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
        let mut users: std::collections::HashMap<String, (Money, Money)> = Default::default();
        for (slot, amount) in &leased {
            match slot.split_first() {
                Some((b'k', id)) => {
                    let Some(key) = self.keys.get(txn, id)? else {
                        continue;
                    };
                    let mut usage = self.usage.get(txn, id)?.unwrap_or_default();
                    usage.spend = usage.spend.saturating_add(*amount);
                    self.usage.put(txn, id, &usage)?;
                    recovered.spend = recovered.spend.saturating_add(*amount);
                    keys.insert(id.to_vec());
                    if let Some(user_id) = key.user_id {
                        let entry = users.entry(user_id).or_default();
                        entry.1 = entry.1.saturating_add(*amount);
                    }
                }
                Some((b'u', user_id)) => {
                    if let Ok(user_id) = std::str::from_utf8(user_id) {
                        users.entry(user_id.to_string()).or_default().0 = *amount;
                    }
                }
                _ => {}
            }
        }
        for (user_id, (own, of_keys)) in users {
            if self.users.get(txn, &user_id)?.is_none() {
                continue;
            }
            let spend = self.user_spend.get(txn, &user_id)?.unwrap_or_default();
            self.user_spend
                .put(txn, &user_id, &spend.saturating_add(own.max(of_keys)))?;
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
            released: Money(150),
            last_used_at: 1,
        };
        store
            .settle(&Reports {
                keys: vec![report],
                users: Vec::new(),
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
