//! Per-worker leases of the per-minute and parallel limits of keys, users,
//! teams, keys' use of a model and deployments (the ledger's side is
//! `store::counters`). A request is admitted out of this worker's leases;
//! a lease runs out, and a new one is asked for, one request at a time per
//! counter while others wait for it (as `quota` does for `max_requests`).
//!
//! - Requests per minute: one request draws one from the minute's lease.
//! - Tokens per minute: a request is admitted while the minute's lease has
//!   tokens left; what its answer used is drawn when known, beyond the
//!   lease if need be (reported as overdrawn, and paid out of the next
//!   lease until the ledger has the report).
//! - Parallel requests: a request holds one of the worker's leased slots
//!   until it ends.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;

use super::quota::LEASE_IDLE;
use crate::store::{CounterReport, Meter, now_ms};

/// How long a worker takes a parallel limit found full as full before it
/// asks the ledger again: slots come back as other workers' requests end.
const PARALLEL_RECHECK: Duration = Duration::from_millis(50);

/// The minute `now_ms` falls in: the window of the per-minute limits.
pub fn minute(now_ms: i64) -> i64 {
    now_ms.div_euclid(60_000)
}

/// Seconds from `now_ms` to the end of its minute (at least 1).
pub fn seconds_left_in_minute(now_ms: i64) -> u64 {
    (60 - now_ms.rem_euclid(60_000) / 1_000).max(1) as u64
}

struct Lease {
    /// The minute it is for (0 for parallel slots).
    window: i64,
    limit: u64,
    /// Unused: requests, tokens or slots.
    free: u64,
    /// Parallel slots held by requests in flight.
    in_use: u64,
    /// What all workers held of the window at this worker's last lease.
    taken: u64,
    last_drawn: Instant,
}

/// What a request should do about one counter.
pub enum Step {
    /// Admitted (and, for requests and slots, drawn).
    Done,
    /// At the limit, and known to be so very recently.
    Full,
    /// Another request is refilling this counter: wait, then try again.
    Wait(Rc<Event>),
    /// Ask the ledger for a lease, then call `refilled`.
    Refill,
}

#[derive(Default)]
pub struct Counters {
    leases: HashMap<Box<[u8]>, Lease>,
    refilling: HashMap<Box<[u8]>, Rc<Event>>,
    /// Counters found full: when, in which window, under which limit.
    full: HashMap<Box<[u8]>, (Instant, i64, u64)>,
    /// For the next report: by counter, (window, handed back, overdrawn).
    reports: HashMap<Box<[u8]>, (i64, u64, u64)>,
    /// Tokens overdrawn that the last report carries, by counter (window,
    /// tokens): until the next report, the ledger may not have them yet.
    in_transit: HashMap<Box<[u8]>, (i64, u64)>,
}

impl Counters {
    /// Admits one request against `id` (a counter of `limit` in `window`).
    pub fn admit(&mut self, id: &[u8], limit: u64, window: i64) -> Step {
        let meter = Meter::of_counter(id);
        if let Some(lease) = self.leases.get_mut(id) {
            if lease.window != window || lease.limit != limit {
                // A minute gone by needs no report; a changed limit gets
                // back what was leased under the old one.
                let stale = self.leases.remove(id);
                if let Some(stale) = stale
                    && stale.window == window
                {
                    self.report(id, window, stale.free, 0);
                    if stale.in_use > 0 {
                        self.leases.insert(
                            id.into(),
                            Lease {
                                free: 0,
                                limit,
                                ..stale
                            },
                        );
                    }
                }
            } else if lease.free > 0 {
                if meter != Meter::Tokens {
                    lease.free -= 1;
                }
                if meter == Meter::Parallel {
                    lease.in_use += 1;
                }
                lease.last_drawn = Instant::now();
                return Step::Done;
            }
        }
        if let Some(event) = self.refilling.get(id) {
            return Step::Wait(event.clone());
        }
        if let Some(&(at, full_window, full_limit)) = self.full.get(id) {
            let recheck = if meter == Meter::Parallel {
                PARALLEL_RECHECK
            } else {
                LEASE_IDLE
            };
            if at.elapsed() < recheck && full_window == window && full_limit == limit {
                return Step::Full;
            }
            self.full.remove(id);
        }
        self.refilling.insert(id.into(), Rc::new(Event::new()));
        Step::Refill
    }

    /// Ends a refill: `Some((amount, taken))` adds a lease, `None` records
    /// that the counter is full. Waiters are woken.
    pub fn refilled(&mut self, id: &[u8], limit: u64, window: i64, granted: Option<(u64, u64)>) {
        match granted {
            Some((amount, taken)) => {
                // Tokens this worker's answers used beyond its leases and
                // has not reported yet are paid out of the new lease first:
                // the ledger counts the lease, not them, so admitting on the
                // whole lease would let the minute's use run past the limit
                // by a lease's worth per refill until the report.
                let paid = match self.reports.get_mut(id) {
                    Some(report) if report.0 == window => {
                        let paid = report.2.min(amount);
                        report.2 -= paid;
                        paid
                    }
                    _ => 0,
                };
                // Those of the report being written are paid too, and the
                // part of the lease that paid them goes back with the next
                // report: counted twice meanwhile, never not at all.
                let in_transit = match self.in_transit.get_mut(id) {
                    Some(sent) if sent.0 == window => {
                        let paid_again = sent.1.min(amount - paid);
                        sent.1 -= paid_again;
                        paid_again
                    }
                    _ => 0,
                };
                if in_transit > 0 {
                    self.report(id, window, in_transit, 0);
                }
                let amount = amount - paid - in_transit;
                let lease = self.leases.entry(id.into()).or_insert(Lease {
                    window,
                    limit,
                    free: 0,
                    in_use: 0,
                    taken,
                    last_drawn: Instant::now(),
                });
                lease.free += amount;
                lease.taken = taken;
                lease.last_drawn = Instant::now();
            }
            None => {
                self.full.insert(id.into(), (Instant::now(), window, limit));
            }
        }
        self.refill_failed(id);
    }

    /// Tokens of `window` this worker's answers used beyond its leases that
    /// the ledger may not have yet: what its next lease pays first, so
    /// the lease asked for should be at least that much larger.
    pub fn debt(&self, id: &[u8], window: i64) -> u64 {
        let unreported = self
            .reports
            .get(id)
            .filter(|report| report.0 == window)
            .map_or(0, |report| report.2);
        let in_transit = self
            .in_transit
            .get(id)
            .filter(|sent| sent.0 == window)
            .map_or(0, |sent| sent.1);
        unreported + in_transit
    }

    /// A refill that ended without an answer: waiters try again.
    pub fn refill_failed(&mut self, id: &[u8]) {
        if let Some(event) = self.refilling.remove(id) {
            event.notify(usize::MAX);
        }
    }

    pub fn is_refilling(&self, id: &[u8]) -> bool {
        self.refilling.contains_key(id)
    }

    /// Gives back one request drawn by `admit` (a later check refused it).
    pub fn undo(&mut self, id: &[u8], window: i64) {
        if let Some(lease) = self.leases.get_mut(id)
            && lease.window == window
        {
            lease.free += 1;
        }
    }

    /// A request holding a parallel slot of `id` ended.
    pub fn release_slot(&mut self, id: &[u8]) {
        if let Some(lease) = self.leases.get_mut(id) {
            lease.in_use = lease.in_use.saturating_sub(1);
            lease.free += 1;
            lease.last_drawn = Instant::now();
        }
    }

    /// Draws `tokens` used by an answer from `id`'s lease of the current
    /// minute, beyond it if need be.
    pub fn draw_tokens(&mut self, id: &[u8], tokens: u64) {
        if tokens == 0 {
            return;
        }
        let window = minute(now_ms());
        let over = match self.leases.get_mut(id) {
            Some(lease) if lease.window == window => {
                let covered = tokens.min(lease.free);
                lease.free -= covered;
                lease.taken += tokens - covered;
                tokens - covered
            }
            _ => tokens,
        };
        if over > 0 {
            self.report(id, window, 0, over);
        }
    }

    /// What is left of `limit` in `window` as this worker knows it: what all
    /// workers held at its last lease counts as used, less what it has not
    /// used of its own.
    pub fn remaining(&self, id: &[u8], limit: u64, window: i64) -> u64 {
        match self.leases.get(id) {
            Some(lease) if lease.window == window => {
                limit.saturating_sub(lease.taken) + lease.free.min(limit)
            }
            _ => limit,
        }
        .min(limit)
    }

    fn report(&mut self, id: &[u8], window: i64, returned: u64, overdrawn: u64) {
        let entry = self.reports.entry(id.into()).or_insert((window, 0, 0));
        if entry.0 != window {
            // Only the latest window's report matters to the ledger.
            *entry = (window, 0, 0);
        }
        entry.1 += returned;
        entry.2 += overdrawn;
    }

    /// Hands back every unused lease (the worker stops).
    pub fn return_all(&mut self) {
        let leases: Vec<_> = self.leases.drain().collect();
        for (id, lease) in leases {
            self.report(&id, lease.window, lease.free + lease.in_use, 0);
        }
    }

    /// Hands back leases idle for `LEASE_IDLE` and leases of minutes gone
    /// by (those need no report), then takes the reports.
    pub fn take_reports(&mut self, now: Instant) -> Vec<CounterReport> {
        let minute = minute(now_ms());
        let mut idle = Vec::new();
        self.leases.retain(|id, lease| {
            if lease.window != 0 && lease.window < minute {
                return false;
            }
            let unused = lease.in_use == 0 && now.duration_since(lease.last_drawn) >= LEASE_IDLE;
            if unused {
                idle.push((id.clone(), lease.window, lease.free));
            }
            !unused
        });
        for (id, window, free) in idle {
            if free > 0 {
                self.report(&id, window, free, 0);
            }
        }
        self.full
            .retain(|_, (at, _, _)| now.duration_since(*at) < LEASE_IDLE);
        // The last report was written before this one is taken.
        self.in_transit.clear();
        let in_transit = &mut self.in_transit;
        self.reports
            .drain()
            .filter(|(_, (_, returned, overdrawn))| returned + overdrawn > 0)
            .map(|(id, (window, returned, overdrawn))| {
                if overdrawn > 0 {
                    in_transit.insert(id.clone(), (window, overdrawn));
                }
                CounterReport {
                    id,
                    window,
                    returned,
                    overdrawn,
                }
            })
            .collect()
    }
}
