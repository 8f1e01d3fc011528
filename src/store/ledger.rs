//! The usage ledger: quota leases for keys with `max_requests`, and the
//! request counts and spend the workers report.
//!
//! A worker serves a limited key only out of quota it has leased: the
//! lease is added to `reserved` and committed (fsynced) before the first
//! request it covers is forwarded, and `reserved` never exceeds the key's
//! `max_requests`. Unused quota is handed back later. A crash loses the
//! unused part of the leases in flight (the count stays reserved), so the
//! limit can be undershot by a little, never exceeded.

use uuid::Uuid;

use super::model::{Money, Usage};
use super::{Store, StoreError};

/// Largest lease handed out at once.
const MAX_LEASE: u64 = 64;

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
    pub last_used_at: i64,
}

impl Store {
    /// Leases quota for `key_id`. The lease shrinks as the limit nears, so
    /// that little quota sits idle in one worker while another needs it.
    pub fn lease(&self, key_id: Uuid, workers: usize) -> Result<Grant, StoreError> {
        let mut txn = self.env.write_txn()?;
        let Some(key) = self.keys.get(&txn, key_id.as_bytes())? else {
            return Ok(Grant::Unlimited);
        };
        let Some(max) = key.max_requests else {
            return Ok(Grant::Unlimited);
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

    /// Records what workers served and hands back unused leases, in one
    /// transaction.
    pub fn settle(&self, reports: &[Report]) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let mut txn = self.env.write_txn()?;
        for report in reports {
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
        }
        super::commit(txn, self.path())?;
        Ok(())
    }

    pub fn usage_of(&self, key_id: Uuid) -> Result<Usage, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.usage.get(&txn, key_id.as_bytes())?.unwrap_or_default())
    }
}
