//! Use as the management API shows it, in shared mode: the sums over the
//! nodes.
//!
//! Each node counts the requests and spend it serves in its own ledger, as
//! a single server does. Every second it publishes what changed of those
//! figures to PostgreSQL, whole (absolute, so that a lost write is made
//! good by the next), and reads back the sums of every party whose figures
//! changed on any node; it keeps them in `cluster_usage`. The management
//! reads (`find_key`, `list_keys`, `get_user`, `list_users`, `payer_spend`)
//! show those sums: a second or two behind. The request path never reads
//! them: limits go by the allowances (`escrow`).

use heed::types::{SerdeBincode, Str};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{Money, Usage, now_ms};
use super::{Payer, Store, StoreError};

/// One party's use as a node counted it, or as the nodes' sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyUse {
    pub requests: u64,
    pub spend: u64,
    /// The end of the budget window `spend` is counted in (0: none).
    pub window_end: i64,
    pub last_used_at: Option<i64>,
}

pub type UseDb = heed::Database<Str, SerdeBincode<PartyUse>>;

impl Store {
    /// What this node counted that it has not published yet, by party.
    pub fn usage_to_publish(&self) -> Result<Vec<(String, PartyUse)>, StoreError> {
        let txn = self.env.read_txn()?;
        let window_end = |payer: Payer<'_>| -> Result<i64, StoreError> {
            Ok(self.budget_windows.get(&txn, &payer.slot())?.unwrap_or(0))
        };
        let mut counted = Vec::new();
        for entry in self.usage.iter(&txn)? {
            let (id, usage) = entry?;
            let Ok(id) = Uuid::from_slice(id) else {
                continue;
            };
            counted.push((
                format!("key:{id}"),
                PartyUse {
                    requests: usage.requests,
                    spend: usage.spend.0,
                    window_end: window_end(Payer::Key(id))?,
                    last_used_at: usage.last_used_at,
                },
            ));
        }
        for entry in self.user_spend.iter(&txn)? {
            let (user, spend) = entry?;
            counted.push((
                format!("user:{user}"),
                PartyUse {
                    spend: spend.0,
                    window_end: window_end(Payer::User(user))?,
                    ..PartyUse::default()
                },
            ));
        }
        for entry in self.payer_spend.iter(&txn)? {
            let (slot, spend) = entry?;
            let Some(payer) = Payer::of_slot(slot) else {
                continue;
            };
            counted.push((
                super::escrow::payer_party(payer),
                PartyUse {
                    spend: spend.0,
                    window_end: window_end(payer)?,
                    ..PartyUse::default()
                },
            ));
        }
        let mut changed = Vec::new();
        for (party, now) in counted {
            if self.published.get(&txn, &party)? != Some(now) {
                changed.push((party, now));
            }
        }
        Ok(changed)
    }

    /// These figures are in PostgreSQL.
    pub fn usage_published(&self, published: &[(String, PartyUse)]) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        for (party, figures) in published {
            self.published.put(&mut txn, party, figures)?;
        }
        super::commit(txn, self.path())
    }

    /// The nodes' sums, as PostgreSQL has them now.
    pub fn set_cluster_usage(&self, sums: &[(String, PartyUse)]) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        for (party, figures) in sums {
            self.cluster_usage.put(&mut txn, party, figures)?;
        }
        super::commit(txn, self.path())
    }

    /// The nodes' sum for a party, in shared mode, once known.
    fn cluster_use(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        party: &str,
    ) -> Result<Option<PartyUse>, StoreError> {
        if self.shared().is_none() {
            return Ok(None);
        }
        Ok(self.cluster_usage.get(txn, party)?)
    }

    /// A key's use as the management API shows it: the nodes' sums in
    /// shared mode, this store's own figures otherwise.
    pub(super) fn shown_usage(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        id: Uuid,
        mut usage: Usage,
    ) -> Result<Usage, StoreError> {
        if let Some(sum) = self.cluster_use(txn, &format!("key:{id}"))? {
            usage.requests = sum.requests.max(usage.requests);
            usage.spend = Money(sum.spend.max(usage.spend.0));
            usage.last_used_at = sum.last_used_at.max(usage.last_used_at);
        }
        Ok(usage)
    }

    /// A payer's spend as the management API shows it (see `shown_usage`).
    pub(super) fn shown_spend(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        payer: Payer<'_>,
        own: Money,
    ) -> Result<Money, StoreError> {
        Ok(
            match self.cluster_use(txn, &super::escrow::payer_party(payer))? {
                // Spend of a window that has passed no longer counts.
                Some(sum) if sum.window_end == 0 || sum.window_end > now_ms() => {
                    Money(sum.spend.max(own.0))
                }
                _ => own,
            },
        )
    }

    /// A payer's spend over all nodes, as well as this node knows it: the
    /// last sums read, with this node's part as it is now (`own`) in place
    /// of what it last published. `own` alone in single-node mode.
    pub(super) fn spend_across_nodes(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        payer: Payer<'_>,
        own: Money,
    ) -> Result<Money, StoreError> {
        let party = super::escrow::payer_party(payer);
        let Some(sum) = self.cluster_use(txn, &party)? else {
            return Ok(own);
        };
        if sum.window_end != 0 && sum.window_end <= now_ms() {
            return Ok(own);
        }
        let published = self
            .published
            .get(txn, &party)?
            .filter(|mine| mine.window_end == sum.window_end)
            .map_or(0, |mine| mine.spend);
        Ok(Money(
            sum.spend
                .saturating_sub(published)
                .saturating_add(own.0)
                .max(own.0),
        ))
    }
}
