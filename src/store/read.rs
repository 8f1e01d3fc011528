//! Lookups for the request path: one read transaction each, never held
//! across an `.await`, no write, no lock.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::model::{Budget, Money};
use super::{Store, StoreError, crypto};

/// What the request path needs to know about a key, with its project's
/// provider key already decrypted.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub key_id: Uuid,
    pub project_id: Option<Uuid>,
    pub is_active: bool,
    pub expires_at: Option<i64>,
    pub max_requests: Option<u64>,
    /// `false` when the key's project is deactivated or gone; `true` for a
    /// key without a project.
    pub project_active: bool,
    /// The project's provider key; `None` without a (live) project.
    pub upstream_key: Option<String>,
    /// Model names the key may use (empty: any), and the user's list.
    pub models: Vec<String>,
    pub user_models: Vec<String>,
    pub model_aliases: BTreeMap<String, String>,
    pub user_id: Option<String>,
    pub max_budget: Option<Budget>,
    pub user_max_budget: Option<Budget>,
    /// Spend recorded in the ledger when the view was read.
    pub spend: Money,
    pub user_spend: Money,
}

/// Spend recorded for a key and its user.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spend {
    pub key: Money,
    pub user: Money,
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
        let project = match key.project_id {
            Some(project_id) => Some(self.projects.get(&txn, project_id.as_bytes())?),
            None => None,
        };
        let user = match &key.user_id {
            Some(user_id) => self.users.get(&txn, user_id)?,
            None => None,
        };
        let spend = self.usage.get(&txn, id)?.unwrap_or_default().spend;
        let user_spend = match &key.user_id {
            Some(user_id) => self.user_spend.get(&txn, user_id)?.unwrap_or_default(),
            None => Money(0),
        };
        drop(txn);
        let (project_active, upstream_key) = match project {
            None => (true, None),
            Some(None) => (false, None),
            Some(Some(project)) => (
                project.is_active,
                Some(crypto::unseal(self.cipher.as_ref(), &project.upstream_key)?),
            ),
        };
        Ok(Some(KeyView {
            key_id: key.id,
            project_id: key.project_id,
            is_active: key.is_active,
            expires_at: key.expires_at,
            max_requests: key.max_requests,
            project_active,
            upstream_key,
            models: key.models,
            user_models: user.as_ref().map(|u| u.models.clone()).unwrap_or_default(),
            model_aliases: key.model_aliases,
            user_id: key.user_id,
            max_budget: key.max_budget,
            user_max_budget: user.and_then(|u| u.max_budget),
            spend,
            user_spend,
        }))
    }

    /// What a key and its user have spent so far.
    pub fn spend_of(&self, key_id: Uuid, user_id: Option<&str>) -> Result<Spend, StoreError> {
        let txn = self.env.read_txn()?;
        let key = self
            .usage
            .get(&txn, key_id.as_bytes())?
            .unwrap_or_default()
            .spend;
        let user = match user_id {
            Some(user_id) => self.user_spend.get(&txn, user_id)?.unwrap_or_default(),
            None => Money(0),
        };
        Ok(Spend { key, user })
    }
}
