//! The audit log: one record per management call (who, what, when, from
//! where, outcome), appended in the call's own transaction order. Ids are
//! sequential, so the log reads newest first by walking ids down.

use heed::types::{Bytes, SerdeBincode};
use heed::{Database, RwTxn};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One management call, with secrets already obfuscated by the caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned on append: 1, 2, 3, ...
    pub id: u64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who called: `master_key`, or `key:<key id>` for a virtual key.
    pub actor: String,
    /// The client's address.
    pub remote: String,
    pub method: String,
    /// Path and query, with secret query values hidden.
    pub target: String,
    pub status: u16,
    /// `ok`, or the error code.
    pub outcome: String,
    /// The request body, JSON with secret values hidden; empty if none.
    pub body: String,
    pub request_id: String,
}

/// Which entries to list, newest first.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    /// Only entries with an id below this (the next page).
    pub before_id: Option<u64>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub method: Option<String>,
    /// Entries whose target starts with this.
    pub path_prefix: Option<String>,
    pub status: Option<u16>,
    pub limit: usize,
}

pub(super) type AuditDb = Database<Bytes, SerdeBincode<AuditEntry>>;

impl Store {
    /// Appends `entry` (its id is assigned here), keeping at most `keep`
    /// entries (the oldest go), and returns the id.
    pub fn append_audit(&self, mut entry: AuditEntry, keep: u64) -> Result<u64, StoreError> {
        let mut txn = self.env.write_txn()?;
        entry.id = self.last_audit_id(&txn)? + 1;
        self.audit.put(&mut txn, &entry.id.to_be_bytes(), &entry)?;
        if let Some(oldest_kept) = entry.id.checked_sub(keep.max(1) - 1)
            && oldest_kept > 1
        {
            let end = oldest_kept.to_be_bytes();
            let range = (
                std::ops::Bound::Unbounded,
                std::ops::Bound::Excluded(&end[..]),
            );
            self.audit.delete_range(&mut txn, &range)?;
        }
        super::commit(txn, self.path())?;
        Ok(entry.id)
    }

    fn last_audit_id(&self, txn: &RwTxn) -> Result<u64, StoreError> {
        Ok(self.audit.last(txn)?.map_or(0, |(_, entry)| entry.id))
    }

    pub fn get_audit(&self, id: u64) -> Result<AuditEntry, StoreError> {
        let txn = self.env.read_txn()?;
        self.audit
            .get(&txn, &id.to_be_bytes())?
            .ok_or(StoreError::NotFound("audit entry"))
    }

    /// Entries matching `query`, newest first, at most `query.limit`.
    pub fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut found = Vec::new();
        let upper = query.before_id.unwrap_or(u64::MAX).to_be_bytes();
        let range = (
            std::ops::Bound::Unbounded,
            std::ops::Bound::Excluded(&upper[..]),
        );
        for item in self.audit.rev_range(&txn, &range)? {
            let (_, entry) = item?;
            if query.since_ms.is_some_and(|since| entry.at < since) {
                // Ids grow with time: nothing older can match.
                break;
            }
            let matches = query.until_ms.is_none_or(|until| entry.at <= until)
                && query.actor.as_ref().is_none_or(|a| *a == entry.actor)
                && query
                    .method
                    .as_ref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(&entry.method))
                && query
                    .path_prefix
                    .as_ref()
                    .is_none_or(|p| entry.target.starts_with(p.as_str()))
                && query.status.is_none_or(|s| s == entry.status);
            if matches {
                found.push(entry);
                if found.len() >= query.limit {
                    break;
                }
            }
        }
        Ok(found)
    }
}
