//! Lookups for the request path: one read transaction each, never held
//! across an `.await`, no write, no lock.

use uuid::Uuid;

use super::{Store, StoreError, crypto};

/// What the request path needs to know about a key, with its project's
/// provider key already decrypted.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub key_id: Uuid,
    pub is_active: bool,
    pub expires_at: Option<i64>,
    pub max_requests: Option<u64>,
    /// `false` when the project is deactivated (or gone).
    pub project_active: bool,
    /// The project's provider key; `None` when the project is gone.
    pub upstream_key: Option<String>,
}

impl Store {
    /// The key whose secret hashes to `secret_hash`, if there is one.
    pub fn lookup_key(&self, secret_hash: &[u8; 32]) -> Result<Option<KeyView>, StoreError> {
        let txn = self.env.read_txn()?;
        let Some(id) = self.key_hashes.get(&txn, secret_hash)? else {
            return Ok(None);
        };
        let Some(key) = self.keys.get(&txn, id)? else {
            return Ok(None);
        };
        let project = self.projects.get(&txn, key.project_id.as_bytes())?;
        drop(txn);
        let upstream_key = match &project {
            Some(project) => Some(crypto::unseal(self.cipher.as_ref(), &project.upstream_key)?),
            None => None,
        };
        Ok(Some(KeyView {
            key_id: key.id,
            is_active: key.is_active,
            expires_at: key.expires_at,
            max_requests: key.max_requests,
            project_active: project.as_ref().is_some_and(|p| p.is_active),
            upstream_key,
        }))
    }
}
