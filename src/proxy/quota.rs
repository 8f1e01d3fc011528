//! Per-worker quota and usage: requests are served out of leases taken
//! from the store's ledger (see `store::ledger`), and counts are reported
//! back in batches, about once a second.
//!
//! One lease request per key is in flight per worker at a time: requests
//! that find the lease empty while it is being refilled wait for it
//! instead of each reserving quota of their own.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use uuid::Uuid;

use crate::store::{Money, Report, now_ms};

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

    /// Hands back every lease (the worker stops).
    pub fn return_all(&mut self) {
        for (key, lease) in self.leases.drain() {
            if lease.remaining > 0 {
                *self.returned.entry(key).or_default() += lease.remaining;
            }
        }
    }

    /// Hands back leases idle for longer than `LEASE_IDLE`, then takes
    /// the reports accumulated since the last call.
    pub fn take_reports(&mut self) -> Vec<Report> {
        let now = Instant::now();
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
        let mut reports: Vec<Report> = self
            .served
            .drain()
            .map(|(key_id, (served, cost))| Report {
                key_id,
                served,
                cost,
                returned: self.returned.remove(&key_id).unwrap_or(0),
                last_used_at: now_ms(),
            })
            .collect();
        reports.extend(self.returned.drain().map(|(key_id, returned)| Report {
            key_id,
            served: 0,
            returned,
            cost: Money(0),
            last_used_at: 0,
        }));
        reports
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
        let reports = quota.take_reports();
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
        let reports = quota.take_reports();
        assert_eq!((reports[0].served, reports[0].returned), (0, 4));
        assert!(quota.take_reports().is_empty());
    }
}
