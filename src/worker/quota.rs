//! Per-worker quota and usage: requests are served out of leases taken
//! from the store's ledger (see `store::ledger`), and counts are reported
//! back in batches, about once a second. Budgets likewise: a request holds
//! an estimate of its cost out of this worker's lease of the key's (and the
//! user's) budget until its real cost is known (`BudgetHold`).
//!
//! One lease request per key (or budget) is in flight per worker at a
//! time: requests that find the lease empty while it is being refilled
//! wait for it instead of each reserving quota of their own.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use uuid::Uuid;

use crate::store::{Money, Payer, Report, Reports, UserRelease, now_ms};

/// A lease not drawn on for this long is handed back, so that quota does
/// not sit idle in one worker while another needs it. Also how long a
/// worker remembers that a key's quota is used up before asking again.
pub const LEASE_IDLE: Duration = Duration::from_secs(1);

struct Lease {
    remaining: u64,
    last_drawn: Instant,
    /// The key's limit when the lease was taken; a lease taken under
    /// another limit goes back to the ledger.
    limit: Option<u64>,
}

#[derive(Default)]
pub struct Quota {
    leases: HashMap<Uuid, Lease>,
    /// Keys with a lease request in flight, and the event fired when it ends.
    refilling: HashMap<Uuid, Rc<Event>>,
    /// Keys found without quota: when, and under which limit.
    exhausted: HashMap<Uuid, (Instant, Option<u64>)>,
    /// Requests served per key since the last report, and what they cost.
    /// The report's time stands for their last use: no clock read per
    /// request.
    served: HashMap<Uuid, (u64, Money)>,
    /// Unused quota to hand back with the next report.
    returned: HashMap<Uuid, u64>,
    /// Leases of keys' budgets, and of users' budgets.
    key_money: Purses<Uuid>,
    user_money: Purses<String>,
}

/// Leases of one kind of budget (keys' or users'), by owner.
struct Purses<K> {
    purses: HashMap<K, Purse>,
    refilling: HashMap<K, Rc<Event>>,
    /// Owners found without enough budget: when, under which budget, and
    /// how much the ledger had left then.
    exhausted: HashMap<K, (Instant, Money, Money)>,
    /// Leased budget no longer held (spent or unused), for the next report.
    released: HashMap<K, Money>,
}

impl<K> Default for Purses<K> {
    fn default() -> Self {
        Self {
            purses: HashMap::new(),
            refilling: HashMap::new(),
            exhausted: HashMap::new(),
            released: HashMap::new(),
        }
    }
}

/// A lease of budget: what is left of it to hold for requests.
struct Purse {
    free: Money,
    last_drawn: Instant,
    /// The budget it was leased under; a lease taken under another budget
    /// goes back to the ledger.
    budget: Money,
}

/// What a request should do to hold an amount of a budget.
pub enum Take {
    /// Held out of this worker's lease.
    Held,
    /// The ledger had less than this left very recently.
    Exhausted(Money),
    /// Another request is refilling the lease: wait for this, then retry.
    Wait(Rc<Event>),
    /// Ask the ledger for at least this much; call `budget_refilled` with
    /// the answer.
    Refill(Money),
}

impl<K: Hash + Eq> Purses<K> {
    fn take<Q>(&mut self, owner: &Q, need: Money, budget: Money) -> Take
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut free = Money(0);
        if let Some(purse) = self.purses.get_mut(owner) {
            if purse.budget != budget {
                // The budget changed: what was leased under the old one goes back.
                let stale = purse.free;
                self.purses.remove(owner);
                self.exhausted.remove(owner);
                self.release(owner, stale);
            } else if purse.free >= need {
                purse.free = Money(purse.free.0 - need.0);
                purse.last_drawn = Instant::now();
                return Take::Held;
            } else {
                free = purse.free;
            }
        }
        if let Some(event) = self.refilling.get(owner) {
            return Take::Wait(event.clone());
        }
        let missing = Money(need.0 - free.0);
        if let Some((at, under, left)) = self.exhausted.get(owner) {
            if at.elapsed() < LEASE_IDLE && *under == budget && missing > *left {
                return Take::Exhausted(*left);
            }
            self.exhausted.remove(owner);
        }
        self.refilling
            .insert(owner.to_owned(), Rc::new(Event::new()));
        Take::Refill(missing)
    }

    fn refilled<Q>(&mut self, owner: &Q, budget: Money, answer: Result<Money, Money>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match answer {
            Ok(granted) => match self.purses.get_mut(owner) {
                Some(purse) => purse.free = purse.free.saturating_add(granted),
                None => {
                    self.purses.insert(
                        owner.to_owned(),
                        Purse {
                            free: granted,
                            last_drawn: Instant::now(),
                            budget,
                        },
                    );
                }
            },
            Err(left) => {
                self.exhausted
                    .insert(owner.to_owned(), (Instant::now(), budget, left));
            }
        }
        self.refill_failed(owner);
    }

    fn refill_failed<Q>(&mut self, owner: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(event) = self.refilling.remove(owner) {
            event.notify(usize::MAX);
        }
    }

    fn is_refilling<Q>(&self, owner: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.refilling.contains_key(owner)
    }

    /// Ends a hold of `held` for a request that cost `cost`: the cost is
    /// paid out of the hold (and, if it was more, out of the lease, as far
    /// as it goes); what the hold had over goes back to the lease.
    fn settle<Q>(&mut self, owner: &Q, held: Money, cost: Money)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let purse = self.purses.get_mut(owner);
        let spent = if cost <= held {
            let over = Money(held.0 - cost.0);
            match purse {
                Some(purse) => {
                    purse.free = purse.free.saturating_add(over);
                    cost
                }
                None => held,
            }
        } else {
            // More than the estimate: what the lease cannot cover is the
            // estimate's error, spent beyond what was leased.
            let extra = cost.0 - held.0;
            let covered = purse.map_or(0, |purse| {
                let covered = extra.min(purse.free.0);
                purse.free = Money(purse.free.0 - covered);
                covered
            });
            Money(held.0 + covered)
        };
        self.release(owner, spent);
    }

    fn release<Q>(&mut self, owner: &Q, amount: Money)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if amount == Money(0) {
            return;
        }
        match self.released.get_mut(owner) {
            Some(released) => *released = released.saturating_add(amount),
            None => {
                self.released.insert(owner.to_owned(), amount);
            }
        }
    }

    /// Hands back leases not drawn on since `LEASE_IDLE` before `now`
    /// (all of them with `None`).
    fn hand_back(&mut self, now: Option<Instant>)
    where
        K: Clone,
    {
        let released = &mut self.released;
        self.purses.retain(|owner, purse| {
            let idle = now.is_none_or(|now| now.duration_since(purse.last_drawn) >= LEASE_IDLE);
            if idle && purse.free > Money(0) {
                let entry = released.entry(owner.clone()).or_default();
                *entry = entry.saturating_add(purse.free);
            }
            !idle
        });
        if let Some(now) = now {
            self.exhausted
                .retain(|_, (at, _, _)| now.duration_since(*at) < LEASE_IDLE);
        }
    }
}

/// What a request should do to be charged.
pub enum Draw {
    /// Charged out of this worker's lease.
    Charged,
    /// The key's quota was used up very recently.
    Exhausted,
    /// Another request is refilling the lease: wait for this, then retry.
    Wait(Rc<Event>),
    /// Ask the ledger for a lease; call `refilled` when the answer is in.
    Refill,
}

impl Quota {
    /// Tries to charge one request for `key` (whose limit is `limit`).
    pub fn draw(&mut self, key: Uuid, limit: Option<u64>) -> Draw {
        if let Some(lease) = self.leases.get_mut(&key) {
            if lease.limit != limit {
                // The limit changed: quota leased under the old one goes back.
                let stale = self.leases.remove(&key).map_or(0, |l| l.remaining);
                *self.returned.entry(key).or_default() += stale;
                self.exhausted.remove(&key);
            } else if lease.remaining > 0 {
                lease.remaining -= 1;
                lease.last_drawn = Instant::now();
                return Draw::Charged;
            }
        }
        if let Some(event) = self.refilling.get(&key) {
            return Draw::Wait(event.clone());
        }
        if let Some((at, under)) = self.exhausted.get(&key) {
            if at.elapsed() < LEASE_IDLE && *under == limit {
                return Draw::Exhausted;
            }
            self.exhausted.remove(&key);
        }
        self.refilling.insert(key, Rc::new(Event::new()));
        Draw::Refill
    }

    /// Ends a refill started by `Draw::Refill`: `Some(n)` adds a lease of
    /// `n` requests, `None` records that the quota is used up (or that
    /// the request failed). Wakes the requests waiting for it.
    pub fn refilled(&mut self, key: Uuid, limit: Option<u64>, granted: Option<u64>) {
        match granted {
            Some(granted) => {
                let lease = self.leases.entry(key).or_insert(Lease {
                    remaining: 0,
                    last_drawn: Instant::now(),
                    limit,
                });
                lease.remaining += granted;
                lease.last_drawn = Instant::now();
            }
            None => {
                self.exhausted.insert(key, (Instant::now(), limit));
            }
        }
        if let Some(event) = self.refilling.remove(&key) {
            event.notify(usize::MAX);
        }
    }

    pub fn is_refilling(&self, key: Uuid) -> bool {
        self.refilling.contains_key(&key)
    }

    /// A refill that ended without an answer (an error): waiters retry.
    pub fn refill_failed(&mut self, key: Uuid) {
        if let Some(event) = self.refilling.remove(&key) {
            event.notify(usize::MAX);
        }
    }

    /// Counts one request served for `key`.
    pub fn served(&mut self, key: Uuid) {
        self.served.entry(key).or_default().0 += 1;
    }

    /// Adds what a served request cost to `key`'s next report.
    pub fn charge(&mut self, key: Uuid, cost: Money) {
        let entry = self.served.entry(key).or_default();
        entry.1 = entry.1.saturating_add(cost);
    }

    /// Cost charged to `key` here and not yet reported to the ledger.
    pub fn unreported_cost(&self, key: Uuid) -> Money {
        self.served.get(&key).map_or(Money(0), |(_, cost)| *cost)
    }

    /// Tries to hold `need` of `payer`'s budget (whose amount is `budget`).
    pub fn take_budget(&mut self, payer: Payer<'_>, need: Money, budget: Money) -> Take {
        match payer {
            Payer::Key(id) => self.key_money.take(&id, need, budget),
            Payer::User(user_id) => self.user_money.take(user_id, need, budget),
        }
    }

    /// Ends a refill started by `Take::Refill`: `Ok(granted)` adds to the
    /// lease, `Err(left)` records that the ledger had only `left`.
    pub fn budget_refilled(
        &mut self,
        payer: Payer<'_>,
        budget: Money,
        answer: Result<Money, Money>,
    ) {
        match payer {
            Payer::Key(id) => self.key_money.refilled(&id, budget, answer),
            Payer::User(user_id) => self.user_money.refilled(user_id, budget, answer),
        }
    }

    /// A budget refill that ended without an answer: waiters retry.
    pub fn budget_refill_failed(&mut self, payer: Payer<'_>) {
        match payer {
            Payer::Key(id) => self.key_money.refill_failed(&id),
            Payer::User(user_id) => self.user_money.refill_failed(user_id),
        }
    }

    pub fn is_refilling_budget(&self, payer: Payer<'_>) -> bool {
        match payer {
            Payer::Key(id) => self.key_money.is_refilling(&id),
            Payer::User(user_id) => self.user_money.is_refilling(user_id),
        }
    }

    /// Ends a hold of `held` for a request that cost `cost` (see `Purses::settle`).
    fn settle_budget(&mut self, payer: Payer<'_>, held: Money, cost: Money) {
        match payer {
            Payer::Key(id) => self.key_money.settle(&id, held, cost),
            Payer::User(user_id) => self.user_money.settle(user_id, held, cost),
        }
    }

    /// Hands back every lease (the worker stops).
    pub fn return_all(&mut self) {
        for (key, lease) in self.leases.drain() {
            if lease.remaining > 0 {
                *self.returned.entry(key).or_default() += lease.remaining;
            }
        }
        self.key_money.hand_back(None);
        self.user_money.hand_back(None);
    }

    /// Hands back leases idle for longer than `LEASE_IDLE`, then takes
    /// the reports accumulated since the last call.
    pub fn take_reports(&mut self) -> Reports {
        let now = Instant::now();
        self.key_money.hand_back(Some(now));
        self.user_money.hand_back(Some(now));
        let returned = &mut self.returned;
        self.leases.retain(|key, lease| {
            let idle = now.duration_since(lease.last_drawn) >= LEASE_IDLE;
            if idle && lease.remaining > 0 {
                *returned.entry(*key).or_default() += lease.remaining;
            }
            !idle
        });
        self.exhausted
            .retain(|_, (at, _)| now.duration_since(*at) < LEASE_IDLE);
        let released = &mut self.key_money.released;
        let mut keys: Vec<Report> = self
            .served
            .drain()
            .map(|(key_id, (served, cost))| Report {
                key_id,
                served,
                cost,
                returned: self.returned.remove(&key_id).unwrap_or(0),
                released: released.remove(&key_id).unwrap_or_default(),
                last_used_at: now_ms(),
            })
            .collect();
        keys.extend(self.returned.drain().map(|(key_id, returned)| Report {
            key_id,
            served: 0,
            returned,
            cost: Money(0),
            released: released.remove(&key_id).unwrap_or_default(),
            last_used_at: 0,
        }));
        keys.extend(released.drain().map(|(key_id, released)| Report {
            key_id,
            served: 0,
            returned: 0,
            cost: Money(0),
            released,
            last_used_at: 0,
        }));
        let users = self
            .user_money
            .released
            .drain()
            .map(|(user_id, released)| UserRelease { user_id, released })
            .collect();
        Reports { keys, users }
    }
}

/// An estimate of a request's cost held out of the key's and the user's
/// budget leases until the request's real cost is known (`settle`). Dropped
/// unsettled (an error, a cache hit, a client gone), it costs nothing.
pub struct BudgetHold<'a> {
    quota: &'a RefCell<Quota>,
    key: Option<(Uuid, Money)>,
    user: Option<(&'a str, Money)>,
}

impl<'a> BudgetHold<'a> {
    /// A hold of nothing yet.
    pub fn new(quota: &'a RefCell<Quota>) -> Self {
        Self {
            quota,
            key: None,
            user: None,
        }
    }

    /// Records that `amount` of `payer`'s budget is held (by `take_budget`).
    pub fn holds(&mut self, payer: Payer<'a>, amount: Money) {
        match payer {
            Payer::Key(id) => self.key = Some((id, amount)),
            Payer::User(user_id) => self.user = Some((user_id, amount)),
        }
    }

    /// The request cost `cost`: paid out of the hold, the rest given back.
    pub fn settle(mut self, cost: Money) {
        self.end(cost);
    }

    fn end(&mut self, cost: Money) {
        if self.key.is_none() && self.user.is_none() {
            return;
        }
        // Never borrowed across an `.await`, so free whenever this runs.
        let Ok(mut quota) = self.quota.try_borrow_mut() else {
            return;
        };
        if let Some((id, held)) = self.key.take() {
            quota.settle_budget(Payer::Key(id), held, cost);
        }
        if let Some((user_id, held)) = self.user.take() {
            quota.settle_budget(Payer::User(user_id), held, cost);
        }
    }
}

impl Drop for BudgetHold<'_> {
    fn drop(&mut self) {
        self.end(Money(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refill_at_a_time_then_draws() {
        let key = Uuid::from_u128(7);
        let mut quota = Quota::default();
        assert!(matches!(quota.draw(key, Some(10)), Draw::Refill));
        assert!(matches!(quota.draw(key, Some(10)), Draw::Wait(_)));
        quota.refilled(key, Some(10), Some(2));
        assert!(matches!(quota.draw(key, Some(10)), Draw::Charged));
        assert!(matches!(quota.draw(key, Some(10)), Draw::Charged));
        assert!(matches!(quota.draw(key, Some(10)), Draw::Refill));
        quota.refilled(key, Some(10), None);
        assert!(matches!(quota.draw(key, Some(10)), Draw::Exhausted));
        // A raised limit is asked about at once.
        assert!(matches!(quota.draw(key, Some(20)), Draw::Refill));
    }

    #[test]
    fn a_changed_limit_returns_the_lease() {
        let key = Uuid::from_u128(8);
        let mut quota = Quota::default();
        assert!(matches!(quota.draw(key, Some(10)), Draw::Refill));
        quota.refilled(key, Some(10), Some(5));
        assert!(matches!(quota.draw(key, Some(10)), Draw::Charged));
        quota.served(key);
        assert!(matches!(quota.draw(key, Some(3)), Draw::Refill));
        let reports = quota.take_reports().keys;
        assert_eq!(reports.len(), 1);
        assert_eq!((reports[0].served, reports[0].returned), (1, 4));
    }

    #[test]
    fn leases_go_back_when_the_worker_stops() {
        let key = Uuid::from_u128(9);
        let mut quota = Quota::default();
        assert!(matches!(quota.draw(key, None), Draw::Refill));
        quota.refilled(key, None, Some(4));
        quota.return_all();
        let reports = quota.take_reports().keys;
        assert_eq!((reports[0].served, reports[0].returned), (0, 4));
        assert!(quota.take_reports().is_empty());
    }

    #[test]
    fn a_hold_settles_to_the_cost_and_gives_the_rest_back() {
        let key = Uuid::from_u128(10);
        let budget = Money(1_000);
        let mut quota = Quota::default();
        let payer = Payer::Key(key);
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Refill(Money(100))
        ));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Wait(_)
        ));
        quota.budget_refilled(payer, budget, Ok(Money(300)));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Held
        ));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Held
        ));
        // Cheaper than held: the rest goes back to the lease.
        quota.settle_budget(payer, Money(100), Money(40));
        // Dearer than held: the lease covers the difference.
        quota.settle_budget(payer, Money(100), Money(130));
        // 300 - 200 + 60 - 30 are left: 130.
        assert!(matches!(
            quota.take_budget(payer, Money(130), budget),
            Take::Held
        ));
        assert!(matches!(
            quota.take_budget(payer, Money(1), budget),
            Take::Refill(Money(1))
        ));
        quota.budget_refilled(payer, budget, Err(Money(0)));
        // Told the ledger has nothing left: refused without asking again.
        assert!(matches!(
            quota.take_budget(payer, Money(1), budget),
            Take::Exhausted(Money(0))
        ));
        let reports = quota.take_reports();
        assert_eq!(reports.keys.len(), 1);
        // Spent: 40 + 130, not yet handed back: the hold of 130.
        assert_eq!(reports.keys[0].released, Money(170));
    }

    #[test]
    fn budget_leases_go_back_when_the_budget_changes_or_the_worker_stops() {
        let user = "alice";
        let mut quota = Quota::default();
        let payer = Payer::User(user);
        assert!(matches!(
            quota.take_budget(payer, Money(10), Money(100)),
            Take::Refill(_)
        ));
        quota.budget_refilled(payer, Money(100), Ok(Money(50)));
        assert!(matches!(
            quota.take_budget(payer, Money(10), Money(100)),
            Take::Held
        ));
        // A new budget: the 40 left of the old lease go back.
        assert!(matches!(
            quota.take_budget(payer, Money(10), Money(200)),
            Take::Refill(Money(10))
        ));
        quota.budget_refilled(payer, Money(200), Ok(Money(30)));
        assert!(matches!(
            quota.take_budget(payer, Money(10), Money(200)),
            Take::Held
        ));
        // The first hold ends without a cost (the lease has 20, gets 10 back).
        quota.settle_budget(payer, Money(10), Money(0));
        quota.return_all();
        let reports = quota.take_reports();
        assert_eq!(reports.users.len(), 1);
        assert_eq!(reports.users[0].user_id, user);
        // 40 + 30 handed back; the second hold of 10 is still out.
        assert_eq!(reports.users[0].released, Money(70));
    }

    #[test]
    fn a_dropped_hold_costs_nothing() {
        let key = Uuid::from_u128(11);
        let quota = RefCell::new(Quota::default());
        let payer = Payer::Key(key);
        let _ = quota.borrow_mut().take_budget(payer, Money(5), Money(100));
        quota
            .borrow_mut()
            .budget_refilled(payer, Money(100), Ok(Money(5)));
        assert!(matches!(
            quota.borrow_mut().take_budget(payer, Money(5), Money(100)),
            Take::Held
        ));
        let mut hold = BudgetHold::new(&quota);
        hold.holds(payer, Money(5));
        drop(hold);
        assert!(matches!(
            quota.borrow_mut().take_budget(payer, Money(5), Money(100)),
            Take::Held
        ));
    }
}
