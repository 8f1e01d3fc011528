//! Per-worker quota and usage: requests are served out of leases taken
//! from the store's ledger (see `store::ledger`), and counts are reported
//! back in batches, about once a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::store::{Report, now_ms};

/// A lease not drawn on for this long is handed back, so that quota does
/// not sit idle in one worker while another needs it.
pub const LEASE_IDLE: Duration = Duration::from_secs(1);

struct Lease {
    remaining: u64,
    last_drawn: Instant,
}

#[derive(Default)]
pub struct Quota {
    leases: HashMap<Uuid, Lease>,
    /// Requests served per key since the last report, with the last time.
    served: HashMap<Uuid, (u64, i64)>,
    /// Unused quota to hand back with the next report.
    returned: HashMap<Uuid, u64>,
}

impl Quota {
    /// Takes one request's worth of quota from this worker's lease.
    pub fn draw(&mut self, key: Uuid) -> bool {
        match self.leases.get_mut(&key) {
            Some(lease) if lease.remaining > 0 => {
                lease.remaining -= 1;
                lease.last_drawn = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Adds a fresh lease of `granted`, of which one is used at once.
    pub fn add_lease(&mut self, key: Uuid, granted: u64) {
        let lease = self.leases.entry(key).or_insert(Lease {
            remaining: 0,
            last_drawn: Instant::now(),
        });
        lease.remaining += granted.saturating_sub(1);
        lease.last_drawn = Instant::now();
    }

    /// Counts one request served for `key`.
    pub fn served(&mut self, key: Uuid) {
        let entry = self.served.entry(key).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = now_ms();
    }

    /// Hands back every lease (the keys changed, or the worker stops).
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
        let mut reports: Vec<Report> = self
            .served
            .drain()
            .map(|(key_id, (served, last_used_at))| Report {
                key_id,
                served,
                returned: self.returned.remove(&key_id).unwrap_or(0),
                last_used_at,
            })
            .collect();
        reports.extend(self.returned.drain().map(|(key_id, returned)| Report {
            key_id,
            served: 0,
            returned,
            last_used_at: 0,
        }));
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_drawn_then_returned() {
        let key = Uuid::from_u128(7);
        let mut quota = Quota::default();
        assert!(!quota.draw(key));
        quota.add_lease(key, 3);
        assert!(quota.draw(key));
        assert!(quota.draw(key));
        assert!(!quota.draw(key));
        quota.add_lease(key, 4);
        quota.served(key);
        quota.return_all();
        let reports = quota.take_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].served, 1);
        assert_eq!(reports[0].returned, 3);
        assert!(quota.take_reports().is_empty());
    }
}
