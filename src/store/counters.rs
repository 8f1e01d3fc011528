//! Leases of the limits counted per minute (`rpm_limit`, `tpm_limit`) and
//! of parallel requests (`max_parallel_requests`), for every limited party
//! (a key, a user, a team, a key's use of a model, a deployment).
//!
//! As with `max_requests` (see `ledger`), a worker serves a limited party
//! only out of what it has leased here: the lease is committed before it
//! is used, and what all workers hold never exceeds the limit. A minute's
//! leases end with the minute: the count starts from zero in the next one,
//! and what was not used of the last one need not come back. Parallel
//! slots come back when a worker no longer needs them; none is in flight
//! when a server starts, so a start clears them.
//!
//! Tokens are known only once an answer says how many it used: a worker
//! admits requests while its lease of the minute's tokens is not used up,
//! and reports what its answers used beyond it (`overdrawn`), which counts
//! against the limit like a lease.

use heed::Database;
use heed::types::{Bytes, SerdeBincode};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

pub type CounterDb = Database<Bytes, SerdeBincode<Counter>>;

/// Largest lease of requests or parallel slots handed out at once.
pub(super) const MAX_COUNT_LEASE: u64 = 1_024;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The minute counted (unix milliseconds ÷ 60,000); 0 for parallel slots.
    pub(super) window: i64,
    /// Leased to workers in that window, used or not yet handed back, plus
    /// tokens used beyond leases.
    pub(super) taken: u64,
}

/// What is counted of a limited party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meter {
    Requests,
    Tokens,
    Parallel,
}

impl Meter {
    /// The name of the meter in the shared store.
    pub(super) fn name(self) -> &'static str {
        match self {
            Meter::Requests => "rpm",
            Meter::Tokens => "tpm",
            Meter::Parallel => "parallel",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Meter::Requests => b'r',
            Meter::Tokens => b't',
            Meter::Parallel => b'p',
        }
    }

    /// The meter of counter `id` (`counter_id`).
    pub fn of_counter(id: &[u8]) -> Self {
        match id.first() {
            Some(b'r') => Meter::Requests,
            Some(b't') => Meter::Tokens,
            _ => Meter::Parallel,
        }
    }
}

/// The name of one counter of one limited party, in the ledger and in the
/// workers: the meter's tag, then the party's slot (`Payer::slot`, or a
/// deployment's).
pub fn counter_id(meter: Meter, slot: &[u8]) -> Box<[u8]> {
    let mut id = Vec::with_capacity(slot.len() + 1);
    id.push(meter.tag());
    id.extend_from_slice(slot);
    id.into_boxed_slice()
}

/// The outcome of a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowGrant {
    /// This much may be used; `taken` is what all workers hold of the
    /// window now, this lease included.
    Granted { amount: u64, taken: u64 },
    /// Nothing is left of the limit in this window.
    Exhausted,
    /// Shared mode: the limit is held in PostgreSQL, which cannot be
    /// reached, and this node's slice of it is used up.
    Unavailable,
}

/// A worker's report on one lease: what it hands back unused, and what its
/// answers used beyond it.
#[derive(Debug, Clone)]
pub struct CounterReport {
    /// The counter (`counter_id`).
    pub id: Box<[u8]>,
    pub window: i64,
    pub returned: u64,
    pub overdrawn: u64,
}

impl Store {
    /// Leases a share of what is left of `limit` for counter `id` in
    /// `window`: a quarter of it split between the workers, at least
    /// `at_least` (a worker's tokens owed, plus one), never more than is left.
    pub fn lease_counter(
        &self,
        id: &[u8],
        window: i64,
        (limit, at_least): (u64, u64),
        workers: usize,
    ) -> Result<WindowGrant, StoreError> {
        if self.shared().is_some() {
            return self.lease_counter_from_slice(id, window, (limit, at_least), workers);
        }
        let meter = Meter::of_counter(id);
        let mut txn = self.env.write_txn()?;
        let mut counter = self.counters.get(&txn, id)?.unwrap_or_default();
        if counter.window < window {
            counter = Counter { window, taken: 0 };
        }
        let remaining = limit.saturating_sub(counter.taken);
        if remaining == 0 {
            return Ok(WindowGrant::Exhausted);
        }
        let share = remaining / (4 * workers.max(1) as u64);
        let amount = match meter {
            // Tokens are drawn by the thousand: no cap.
            Meter::Tokens => share.max(at_least).max(1),
            Meter::Requests | Meter::Parallel => share.clamp(1, MAX_COUNT_LEASE),
        }
        .min(remaining);
        counter.taken += amount;
        self.counters.put(&mut txn, id, &counter)?;
        super::commit(txn, self.path())?;
        Ok(WindowGrant::Granted {
            amount,
            taken: counter.taken,
        })
    }

    /// Applies workers' reports: leases of a window still counted are
    /// handed back; tokens used beyond a lease count in the window.
    pub fn settle_counters(&self, reports: &[CounterReport]) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let mut txn = self.env.write_txn()?;
        for report in reports {
            let mut counter = self.counters.get(&txn, &report.id)?.unwrap_or_default();
            if counter.window > report.window {
                continue;
            }
            if counter.window < report.window {
                counter = Counter {
                    window: report.window,
                    taken: 0,
                };
            }
            counter.taken = counter
                .taken
                .saturating_sub(report.returned)
                .saturating_add(report.overdrawn);
            self.counters.put(&mut txn, &report.id, &counter)?;
        }
        super::commit(txn, self.path())?;
        Ok(())
    }

    /// What all workers hold of counter `id` in `window`.
    pub fn counter_taken(&self, id: &[u8], window: i64) -> Result<u64, StoreError> {
        let txn = self.env.read_txn()?;
        let counter = self.counters.get(&txn, id)?.unwrap_or_default();
        Ok(if counter.window == window {
            counter.taken
        } else {
            0
        })
    }

    /// At a server's start: no request is in flight, so no parallel slot is
    /// held; counts of minutes gone by are dropped.
    pub(super) fn reset_counters(
        &self,
        txn: &mut heed::RwTxn,
        minute: i64,
    ) -> Result<(), StoreError> {
        let mut stale = Vec::new();
        for entry in self.counters.iter(txn)? {
            let (key, counter) = entry?;
            if key.first() == Some(&Meter::Parallel.tag()) || counter.window < minute {
                stale.push(key.to_vec());
            }
        }
        for key in stale {
            self.counters.delete(txn, &key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("llm-proxy-counters-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir, None).expect("store"), dir)
    }

    #[test]
    fn leases_never_exceed_the_limit_and_end_with_the_window() {
        let (store, dir) = store("window");
        let slot = b"kslot";
        let mut total = 0;
        while let WindowGrant::Granted { amount, taken } = store
            .lease_counter(&counter_id(Meter::Requests, slot), 7, (100, 1), 2)
            .unwrap()
        {
            total += amount;
            assert_eq!(taken, total);
        }
        assert_eq!(total, 100);
        // Handed back: leasable again.
        store
            .settle_counters(&[CounterReport {
                id: counter_id(Meter::Requests, slot),
                window: 7,
                returned: 5,
                overdrawn: 0,
            }])
            .unwrap();
        assert_eq!(
            store
                .counter_taken(&counter_id(Meter::Requests, slot), 7)
                .unwrap(),
            95
        );
        // A report on a window gone by changes nothing.
        assert!(matches!(
            store
                .lease_counter(&counter_id(Meter::Requests, slot), 8, (100, 1), 2)
                .unwrap(),
            WindowGrant::Granted {
                amount: 12,
                taken: 12
            }
        ));
        store
            .settle_counters(&[CounterReport {
                id: counter_id(Meter::Requests, slot),
                window: 7,
                returned: 50,
                overdrawn: 0,
            }])
            .unwrap();
        assert_eq!(
            store
                .counter_taken(&counter_id(Meter::Requests, slot), 8)
                .unwrap(),
            12
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_token_lease_covers_what_is_owed() {
        let (store, dir) = store("owed");
        let slot = b"tslot";
        // A quarter of 1,000 is 250; 600 are owed, so 601 are leased.
        assert!(matches!(
            store
                .lease_counter(&counter_id(Meter::Tokens, slot), 1, (1_000, 601), 1)
                .unwrap(),
            WindowGrant::Granted {
                amount: 601,
                taken: 601
            }
        ));
        // Never more than is left.
        assert!(matches!(
            store
                .lease_counter(&counter_id(Meter::Tokens, slot), 1, (1_000, 601), 1)
                .unwrap(),
            WindowGrant::Granted {
                amount: 399,
                taken: 1_000
            }
        ));
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tokens_used_beyond_a_lease_count_against_the_limit() {
        let (store, dir) = store("tokens");
        let slot = b"uslot";
        assert!(matches!(
            store
                .lease_counter(&counter_id(Meter::Tokens, slot), 1, (1_000, 1), 1)
                .unwrap(),
            WindowGrant::Granted { amount: 250, .. }
        ));
        store
            .settle_counters(&[CounterReport {
                id: counter_id(Meter::Tokens, slot),
                window: 1,
                returned: 0,
                overdrawn: 800,
            }])
            .unwrap();
        assert_eq!(
            store
                .counter_taken(&counter_id(Meter::Tokens, slot), 1)
                .unwrap(),
            1_050
        );
        assert_eq!(
            store
                .lease_counter(&counter_id(Meter::Tokens, slot), 1, (1_000, 1), 1)
                .unwrap(),
            WindowGrant::Exhausted
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
