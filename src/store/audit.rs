//! The audit log: one record per management call (who, what, when, from
//! where, outcome), appended in the call's own transaction order. Ids are
//! sequential, so the log reads newest first by walking ids down.

use std::borrow::Cow;

use heed::RwTxn;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::hint;
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

/// `meta`: the id of the last entry copied to PostgreSQL (shared mode).
const AUDIT_SHIPPED: &str = "audit_shipped";

/// The `meta` key set once every stored target went through `safe_target`.
const TARGETS_SAFE: &str = "audit_targets_safe";

impl Store {
    /// Appends `entry` (its id is assigned here), keeping at most `keep`
    /// entries (the oldest go), and returns the id.
    pub fn append_audit(&self, mut entry: AuditEntry, keep: u64) -> Result<u64, StoreError> {
        // Each node keeps its own log; in shared mode it is also copied to
        // PostgreSQL in batches (`shared`), never under the lock of
        // management writes: a flood of refused calls must not hold up the
        // cluster's writes.
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

    /// Shared mode: entries not yet copied to PostgreSQL, oldest first, at
    /// most `limit`.
    pub fn audit_to_ship(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.env.read_txn()?;
        let shipped = self
            .meta
            .get(&txn, AUDIT_SHIPPED)?
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map_or(0, u64::from_be_bytes);
        let start = (shipped + 1).to_be_bytes();
        let range = (
            std::ops::Bound::Included(&start[..]),
            std::ops::Bound::Unbounded,
        );
        let mut entries = Vec::new();
        for item in self.audit.range(&txn, &range)?.take(limit) {
            entries.push(item?.1);
        }
        Ok(entries)
    }

    /// Shared mode: entries up to `id` are in PostgreSQL.
    pub fn audit_shipped(&self, id: u64) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.meta.put(&mut txn, AUDIT_SHIPPED, &id.to_be_bytes())?;
        super::commit(txn, self.path())
    }

    /// Entries written by versions before `safe_target` could name a
    /// token by its secret in their target: on the first open by this
    /// version, every target goes through it once (`TARGETS_SAFE` in
    /// `meta` then says so). Returns how many entries changed.
    pub(super) fn scrub_audit_targets(&self, txn: &mut RwTxn) -> Result<usize, StoreError> {
        if self.meta.get(txn, TARGETS_SAFE)?.is_some() {
            return Ok(0);
        }
        let mut changed = Vec::new();
        for item in self.audit.iter(txn)? {
            let (_, entry) = item?;
            let target = safe_target(&entry.target);
            if target != entry.target {
                changed.push(AuditEntry { target, ..entry });
            }
        }
        for entry in &changed {
            self.audit.put(txn, &entry.id.to_be_bytes(), entry)?;
        }
        self.meta.put(txn, TARGETS_SAFE, &[1])?;
        Ok(changed.len())
    }

    /// Makes the next open scrub the audit log's targets again, as a store
    /// of an older version would; for tests of the scrub.
    #[doc(hidden)]
    pub fn forget_audit_scrub_for_tests(&self) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.meta.delete(&mut txn, TARGETS_SAFE)?;
        super::commit(txn, self.path())
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

/// Shown in place of a secret.
pub const HIDDEN: &str = "***";

/// Names whose values are secrets, wherever they appear in a body.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "key"
            | "keys"
            | "token"
            | "password"
            | "master_key"
            | "new_key"
            | "new_master_key"
            | "credential_values"
    ) || name.ends_with("api_key")
        || name.contains("secret")
        || name.ends_with("_token")
}

/// The target as the log keeps it: `/key/info?key=sk-...` as
/// `/key/info?key=***`, and a token named in the path by its secret or its
/// hash (`/manage/tokens/sk-...`, `/key/sk-.../...`) as the listings show
/// it, `/manage/tokens/sk-abcd…wxyz`. A token's id stays as it is.
pub fn safe_target(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let segments: Vec<Cow<'_, str>> = path
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy())
        .collect();
    let mut out = String::with_capacity(target.len());
    for (index, (raw, decoded)) in path.split('/').zip(&segments).enumerate() {
        if index > 0 {
            out.push('/');
        }
        if names_a_key(&segments, index) || looks_like_secret(decoded) {
            out.push_str(&hint(decoded));
        } else {
            out.push_str(raw);
        }
    }
    if let Some(query) = query {
        let mut hidden = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if is_secret_name(&name) {
                hidden.append_pair(&name, HIDDEN);
            } else if looks_like_secret(&value) {
                hidden.append_pair(&name, &hint(&value));
            } else {
                hidden.append_pair(&name, &value);
            }
        }
        out.push('?');
        out.push_str(&hidden.finish());
    }
    out
}

/// Whether path segment `index` (of the decoded `segments`, the first
/// empty) names a key by what the caller may give for one: its id, its
/// secret, or the hex SHA-256 of the secret. Only the id is kept.
fn names_a_key(segments: &[Cow<'_, str>], index: usize) -> bool {
    let segment = segments[index].as_ref();
    let parent: Vec<&str> = segments[..index].iter().map(|s| s.as_ref()).collect();
    let reference = match parent.as_slice() {
        ["", "manage", "tokens"] => true,
        // LiteLLM's `/key/{key}/regenerate` and the like.
        ["", "key"] => !matches!(
            segment,
            "generate" | "info" | "list" | "update" | "delete" | "block" | "unblock" | "regenerate"
        ),
        _ => false,
    };
    reference && !segment.is_empty() && Uuid::parse_str(segment).is_err()
}

/// A value shaped like a key this gateway issues (`sk-` and more).
fn looks_like_secret(value: &str) -> bool {
    value.len() > 3 && value.starts_with("sk-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_paths_are_shown_as_hints() {
        let secret = "sk-abcdefghijklmnopqrstuvwxyz";
        let hash = "83165eaa242eb58df8858e31bd8052960b2ed033028f3c374f733c8c34c84b94";
        let id = "2b0e0f36-8f0c-4f57-9a57-0d1f3c2e8a11";
        for (target, logged) in [
            (
                format!("/manage/tokens/{secret}"),
                "/manage/tokens/sk-abcd…wxyz".to_string(),
            ),
            (
                format!("/manage/tokens/{hash}"),
                "/manage/tokens/83165ea…4b94".into(),
            ),
            (
                format!("/manage/tokens/{id}"),
                format!("/manage/tokens/{id}"),
            ),
            (
                "/manage/tokens/imported-secret-1".into(),
                "/manage/tokens/importe…et-1".into(),
            ),
            // Percent-encoded, as the CLI may send it, and under another spelling.
            (
                "/manage/%74okens/sk%2Dabcdefghijklmnopqrstuvwxyz/x".into(),
                "/manage/%74okens/sk-abcd…wxyz/x".into(),
            ),
            (
                format!("/key/{secret}/regenerate"),
                "/key/sk-abcd…wxyz/regenerate".into(),
            ),
            (
                "/key/info?key_alias=a&user_id=sk-abcdefghijklmnopqrstuvwxyz".into(),
                "/key/info?key_alias=a&user_id=sk-abcd%E2%80%A6wxyz".into(),
            ),
            (
                format!("/manage/projects/{id}/tokens/revoke"),
                format!("/manage/projects/{id}/tokens/revoke"),
            ),
            ("/key/generate".into(), "/key/generate".into()),
            ("/key/regenerate".into(), "/key/regenerate".into()),
            ("/key/block".into(), "/key/block".into()),
            ("/manage/tokens".into(), "/manage/tokens".into()),
            ("/manage/tokens/".into(), "/manage/tokens/".into()),
        ] {
            assert_eq!(safe_target(&target), logged, "{target}");
        }
    }

    #[test]
    fn new_secrets_are_secret_names() {
        for name in ["new_key", "new_master_key", "key", "openai_api_key"] {
            assert!(is_secret_name(name), "{name}");
        }
        assert!(!is_secret_name("key_alias"));
    }
}
