//! Per-worker quota and usage: requests are served out of leases taken
//! from the store's ledger (see `store::ledger`), and counts are reported
//! back in batches, about once a second. Budgets likewise: a request holds
//! an estimate of its cost out of this worker's lease of the key's (and the
//! user's) budget until its real cost is known (`BudgetHold`).
//!
//! One lease request per key (or budget) is in flight per worker at a
//! time: requests that find the lease empty while it is being refilled
//! wait for it instead of each reserving quota of their own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use uuid::Uuid;

use crate::store::{Money, Report, Reports, now_ms};

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
    served: HashMap<Uuid, Served>,
    /// Unused quota to hand back with the next report.
    returned: HashMap<Uuid, u64>,
    /// Leases of budgets, by payer slot (`store::Payer::slot`).
    money: Purses,
    /// Leases of per-minute and parallel limits.
    pub counters: super::limits::Counters,
}

/// What a key's requests since the last report came to.
#[derive(Default)]
struct Served {
    requests: u64,
    cost: Money,
    /// Cost by model, for the models whose spend the key counts apart.
    by_model: Vec<(String, Money)>,
}

/// Leases of budgets, by payer slot.
#[derive(Default)]
struct Purses {
    purses: HashMap<Box<[u8]>, Purse>,
    refilling: HashMap<Box<[u8]>, Rc<Event>>,
    /// Payers found without enough budget: when, under which budget, and
    /// how much the ledger had left then.
    exhausted: HashMap<Box<[u8]>, (Instant, Money, Money)>,
    /// Leased budget no longer held (spent or unused), for the next report.
    released: HashMap<Box<[u8]>, Money>,
    /// Spent beyond this worker's leases (answers that cost more than
    /// their hold and the lease could cover) since the last report: the
    /// ledger learns of it only with the report, so it is paid out of the
    /// next lease first.
    owed: HashMap<Box<[u8]>, Money>,
    /// The same, carried by the last report: until the next one, the
    /// ledger may not have it yet, so it is paid too (paid, it is released
    /// from the lease: counted twice meanwhile, never not at all).
    owed_in_transit: HashMap<Box<[u8]>, Money>,
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

impl Purses {
    fn take(&mut self, owner: &[u8], need: Money, budget: Money) -> Take {
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
        self.refilling.insert(owner.into(), Rc::new(Event::new()));
        Take::Refill(missing)
    }

    fn refilled(&mut self, owner: &[u8], budget: Money, answer: Result<Money, Money>) {
        match answer {
            Ok(granted) => {
                let mut paid = Money(0);
                for owed in [&mut self.owed, &mut self.owed_in_transit] {
                    if let Some(owed) = owed.get_mut(owner) {
                        let more = owed.0.min(granted.0 - paid.0);
                        *owed = Money(owed.0 - more);
                        paid = Money(paid.0 + more);
                    }
                }
                // Paid: spent, no longer held.
                self.release(owner, paid);
                self.add_lease(owner, budget, Money(granted.0 - paid.0));
            }
            Err(left) => {
                self.exhausted
                    .insert(owner.into(), (Instant::now(), budget, left));
            }
        }
        self.refill_failed(owner);
    }

    fn add_lease(&mut self, owner: &[u8], budget: Money, granted: Money) {
        match self.purses.get_mut(owner) {
            Some(purse) => purse.free = purse.free.saturating_add(granted),
            None => {
                self.purses.insert(
                    owner.into(),
                    Purse {
                        free: granted,
                        last_drawn: Instant::now(),
                        budget,
                    },
                );
            }
        }
    }

    fn refill_failed(&mut self, owner: &[u8]) {
        if let Some(event) = self.refilling.remove(owner) {
            event.notify(usize::MAX);
        }
    }

    fn is_refilling(&self, owner: &[u8]) -> bool {
        self.refilling.contains_key(owner)
    }

    /// Ends a hold of `held` for a request that cost `cost`: the cost is
    /// paid out of the hold (and, if it was more, out of the lease, as far
    /// as it goes); what the hold had over goes back to the lease.
    fn settle(&mut self, owner: &[u8], held: Money, cost: Money) {
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
            if extra > covered {
                let owed = self.owed.entry(owner.into()).or_default();
                *owed = owed.saturating_add(Money(extra - covered));
            }
            Money(held.0 + covered)
        };
        self.release(owner, spent);
    }

    fn release(&mut self, owner: &[u8], amount: Money) {
        if amount == Money(0) {
            return;
        }
        match self.released.get_mut(owner) {
            Some(released) => *released = released.saturating_add(amount),
            None => {
                self.released.insert(owner.into(), amount);
            }
        }
    }

    /// Hands back leases not drawn on since `LEASE_IDLE` before `now`
    /// (all of them with `None`).
    fn hand_back(&mut self, now: Option<Instant>) {
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
        self.served.entry(key).or_default().requests += 1;
    }

    /// Adds what a served request cost to `key`'s next report; `model`:
    /// the model, when the key counts its spend on it apart.
    pub fn charge(&mut self, key: Uuid, cost: Money, model: Option<&str>) {
        let entry = self.served.entry(key).or_default();
        entry.cost = entry.cost.saturating_add(cost);
        if let Some(model) = model {
            match entry.by_model.iter_mut().find(|(m, _)| m == model) {
                Some((_, spent)) => *spent = spent.saturating_add(cost),
                None => entry.by_model.push((model.to_string(), cost)),
            }
        }
    }

    /// Cost charged to `key` here and not yet reported to the ledger (on
    /// `model`, when given).
    pub fn unreported_cost(&self, key: Uuid, model: Option<&str>) -> Money {
        let Some(served) = self.served.get(&key) else {
            return Money(0);
        };
        match model {
            None => served.cost,
            Some(model) => served
                .by_model
                .iter()
                .find(|(m, _)| m == model)
                .map_or(Money(0), |(_, cost)| *cost),
        }
    }

    /// Tries to hold `need` of the budget of the payer of `slot` (whose
    /// amount is `budget`).
    pub fn take_budget(&mut self, slot: &[u8], need: Money, budget: Money) -> Take {
        self.money.take(slot, need, budget)
    }

    /// Ends a refill started by `Take::Refill`: `Ok(granted)` adds to the
    /// lease, `Err(left)` records that the ledger had only `left`.
    pub fn budget_refilled(&mut self, slot: &[u8], budget: Money, answer: Result<Money, Money>) {
        self.money.refilled(slot, budget, answer)
    }

    /// What this worker's lease of the budget of the payer of `slot` has
    /// free.
    pub fn budget_free(&self, slot: &[u8]) -> Money {
        self.money
            .purses
            .get(slot)
            .map_or(Money(0), |purse| purse.free)
    }

    /// A budget refill that ended without an answer: waiters retry.
    pub fn budget_refill_failed(&mut self, slot: &[u8]) {
        self.money.refill_failed(slot)
    }

    pub fn is_refilling_budget(&self, slot: &[u8]) -> bool {
        self.money.is_refilling(slot)
    }

    /// Ends a hold of `held` for a request that cost `cost` (see `Purses::settle`).
    fn settle_budget(&mut self, slot: &[u8], held: Money, cost: Money) {
        self.money.settle(slot, held, cost)
    }

    /// Hands back every lease (the worker stops).
    pub fn return_all(&mut self) {
        for (key, lease) in self.leases.drain() {
            if lease.remaining > 0 {
                *self.returned.entry(key).or_default() += lease.remaining;
            }
        }
        self.money.hand_back(None);
        self.counters.return_all();
    }

    /// Hands back leases idle for longer than `LEASE_IDLE`, then takes
    /// the reports accumulated since the last call.
    pub fn take_reports(&mut self) -> Reports {
        let now = Instant::now();
        self.money.hand_back(Some(now));
        // What was spent beyond the leases is in the costs reported now;
        // the last report has been written.
        self.money.owed_in_transit = std::mem::take(&mut self.money.owed);
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
        let mut keys: Vec<Report> = self
            .served
            .drain()
            .map(|(key_id, served)| Report {
                key_id,
                served: served.requests,
                cost: served.cost,
                by_model: served.by_model,
                returned: self.returned.remove(&key_id).unwrap_or(0),
                last_used_at: now_ms(),
            })
            .collect();
        keys.extend(self.returned.drain().map(|(key_id, returned)| Report {
            key_id,
            served: 0,
            returned,
            cost: Money(0),
            by_model: Vec::new(),
            last_used_at: 0,
        }));
        Reports {
            keys,
            released: self.money.released.drain().collect(),
            counters: self.counters.take_reports(now),
        }
    }
}

/// What an admitted request holds until it ends: an estimate of its cost
/// out of the budget leases of the key, its user, its team and its use of
/// the model (until its real cost is known, `settle`), and parallel slots;
/// and the token counters its answer's usage is drawn from. Dropped, it
/// gives back the slots, and the budget it still holds (an error, a cache
/// hit, a client gone: nothing spent).
pub struct Hold<'a> {
    quota: &'a RefCell<Quota>,
    /// `None` until something is held: an unlimited key's request carries
    /// no more than this pointer through its phases.
    held: Option<Box<Held<'a>>>,
}

#[derive(Default)]
struct Held<'a> {
    /// Payer slots and what is held of each.
    money: [Option<(&'a [u8], Money)>; 4],
    /// Parallel counters a slot is held of.
    slots: [Option<&'a [u8]>; 3],
    /// Token counters to draw the answer's tokens from.
    tokens: [Option<&'a [u8]>; 4],
}

/// Puts `item` in the first free place of `list` (sized for the most a
/// request can hold: nothing is dropped).
pub fn put<T>(list: &mut [Option<T>], item: T) {
    if let Some(free) = list.iter_mut().find(|h| h.is_none()) {
        *free = Some(item);
    }
}

impl<'a> Hold<'a> {
    /// A hold of nothing yet.
    pub fn new(quota: &'a RefCell<Quota>) -> Self {
        Self { quota, held: None }
    }

    fn held(&mut self) -> &mut Held<'a> {
        self.held.get_or_insert_with(Default::default)
    }

    /// Records that `amount` of the budget of the payer of `slot` is held
    /// (by `take_budget`).
    pub fn holds(&mut self, slot: &'a [u8], amount: Money) {
        put(&mut self.held().money, (slot, amount));
    }

    /// Records that a slot of the parallel counter `id` is held.
    pub fn holds_slot(&mut self, id: &'a [u8]) {
        put(&mut self.held().slots, id);
    }

    /// Records that the answer's tokens are to be drawn from counter `id`.
    pub fn draws_tokens(&mut self, id: &'a [u8]) {
        put(&mut self.held().tokens, id);
    }

    /// Whether the answer's tokens are to be drawn from any counter.
    pub fn draws_tokens_at_all(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.tokens.iter().any(Option::is_some))
    }

    /// The request cost `cost` and used `tokens`: the cost is paid out of
    /// the budget holds (the rest given back), the tokens drawn.
    pub fn settle(&mut self, cost: Money, tokens: u64) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let Ok(mut quota) = self.quota.try_borrow_mut() else {
            return;
        };
        for (slot, money) in held.money.iter_mut().filter_map(Option::take) {
            quota.settle_budget(slot, money, cost);
        }
        for id in held.tokens.iter_mut().filter_map(Option::take) {
            quota.counters.draw_tokens(id, tokens);
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        // Never borrowed across an `.await`, so free whenever this runs.
        let Ok(mut quota) = self.quota.try_borrow_mut() else {
            return;
        };
        for (slot, money) in held.money.iter_mut().filter_map(Option::take) {
            quota.settle_budget(slot, money, Money(0));
        }
        for id in held.slots.iter_mut().filter_map(Option::take) {
            quota.counters.release_slot(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Payer;

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
        let slot = Payer::Key(key).slot();
        let payer = &slot[..];
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
        assert!(reports.keys.is_empty());
        // Spent: 40 + 130, not yet handed back: the hold of 130.
        assert_eq!(reports.released, vec![(payer.into(), Money(170))]);
    }

    #[test]
    fn budget_leases_go_back_when_the_budget_changes_or_the_worker_stops() {
        let user = "alice";
        let mut quota = Quota::default();
        let slot = Payer::User(user).slot();
        let payer = &slot[..];
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
        // 40 + 30 handed back; the second hold of 10 is still out.
        assert_eq!(reports.released, vec![(payer.into(), Money(70))]);
    }

    #[test]
    fn spent_beyond_the_lease_is_paid_out_of_the_next() {
        let key = Uuid::from_u128(12);
        let budget = Money(1_000);
        let mut quota = Quota::default();
        let slot = Payer::Key(key).slot();
        let payer = &slot[..];
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Refill(_)
        ));
        quota.budget_refilled(payer, budget, Ok(Money(100)));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Held
        ));
        // Twice the hold, and the lease is empty: 100 spent beyond it.
        quota.settle_budget(payer, Money(100), Money(200));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Refill(Money(100))
        ));
        // 100 of the next lease pays for it: 50 are left, too few.
        quota.budget_refilled(payer, budget, Ok(Money(150)));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Refill(Money(50))
        ));
        quota.budget_refilled(payer, budget, Ok(Money(50)));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Held
        ));
        // Released: the first hold, and the part of a lease that paid.
        let reports = quota.take_reports();
        assert_eq!(reports.released, vec![(payer.into(), Money(200))]);

        // Spent beyond again, and reported: until the next report the
        // ledger may not have it yet, so the next lease pays it too.
        quota.settle_budget(payer, Money(100), Money(300));
        let reports = quota.take_reports();
        assert_eq!(reports.released, vec![(payer.into(), Money(100))]);
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Refill(Money(100))
        ));
        quota.budget_refilled(payer, budget, Ok(Money(300)));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Held
        ));
        assert!(matches!(
            quota.take_budget(payer, Money(100), budget),
            Take::Refill(Money(100))
        ));
        let reports = quota.take_reports();
        assert_eq!(reports.released, vec![(payer.into(), Money(200))]);
    }

    #[test]
    fn a_dropped_hold_costs_nothing() {
        let key = Uuid::from_u128(11);
        let quota = RefCell::new(Quota::default());
        let slot = Payer::Key(key).slot();
        let payer = &slot[..];
        let _ = quota.borrow_mut().take_budget(payer, Money(5), Money(100));
        quota
            .borrow_mut()
            .budget_refilled(payer, Money(100), Ok(Money(5)));
        assert!(matches!(
            quota.borrow_mut().take_budget(payer, Money(5), Money(100)),
            Take::Held
        ));
        let mut hold = Hold::new(&quota);
        hold.holds(payer, Money(5));
        drop(hold);
        assert!(matches!(
            quota.borrow_mut().take_budget(payer, Money(5), Money(100)),
            Take::Held
        ));
    }
}
