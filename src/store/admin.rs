//! Management reads and writes: projects and keys. Every write commits,
//! then bumps the store generation so that each worker's key cache re-reads
//! before the management call returns.

use std::collections::BTreeMap;

use heed::RwTxn;
use uuid::Uuid;

use super::crypto::{self, new_id, new_secret, sha256};
use super::model::{Budget, KeyRecord, Limits, ModelLimits, Money, Project, Usage, hint, now_ms};
use super::{Store, StoreError};

/// Fields of a project that an update may change.
#[derive(Debug, Default)]
pub struct ProjectChanges {
    pub name: Option<String>,
    pub upstream_key: Option<String>,
    pub is_active: Option<bool>,
}

/// The metadata that marks the master key's record (`sync_master_key`).
pub const MASTER_KEY_METADATA: &str = r#"{"master_key":true}"#;

/// A key to create.
#[derive(Debug, Default)]
pub struct NewKey {
    /// `None`: the key reaches registered models only.
    pub project_id: Option<Uuid>,
    pub expires_at: Option<i64>,
    pub max_requests: Option<u64>,
    pub max_budget: Option<Budget>,
    /// Spend already charged to the key (carried over from elsewhere).
    pub spend: Money,
    pub alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub models: Vec<String>,
    pub model_aliases: BTreeMap<String, String>,
    /// A JSON object as text; empty means `{}`.
    pub metadata: String,
    /// Use this secret instead of generating one (imports, tests).
    pub secret: Option<String>,
    pub limits: Limits,
    pub model_limits: BTreeMap<String, ModelLimits>,
}

/// Fields of a key that an update may change. `Some(None)` clears.
#[derive(Debug, Default)]
pub struct KeyChanges {
    pub is_active: Option<bool>,
    pub max_requests: Option<Option<u64>>,
    pub max_budget: Option<Option<Budget>>,
    /// Sets the key's spend (a correction by an administrator).
    pub spend: Option<Money>,
    pub expires_at: Option<Option<i64>>,
    pub alias: Option<Option<String>>,
    pub user_id: Option<Option<String>>,
    pub team_id: Option<Option<String>>,
    pub models: Option<Vec<String>>,
    pub model_aliases: Option<BTreeMap<String, String>>,
    pub metadata: Option<String>,
    pub limits: Option<Limits>,
    pub model_limits: Option<BTreeMap<String, ModelLimits>>,
}

/// The metadata that marks the master key's record is its alone: a key
/// given it would be hidden from listings and deleted at the next start.
fn check_metadata(metadata: &str) -> Result<(), StoreError> {
    if metadata.trim() == MASTER_KEY_METADATA {
        return Err(StoreError::Invalid(
            "metadata {\"master_key\": true} is reserved for the master key".into(),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<String, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(StoreError::Invalid(
            "name must be 1 to 200 characters".into(),
        ));
    }
    Ok(name.to_string())
}

fn check_upstream_key(key: &str) -> Result<&str, StoreError> {
    let key = key.trim();
    if key.is_empty() || key.len() > 1024 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Invalid(
            "openai_api_key must be 1 to 1024 visible ASCII characters".into(),
        ));
    }
    Ok(key)
}

/// The chosen secret if it may be one, else a new one.
fn chosen_or_new_secret(chosen: Option<String>) -> Result<String, StoreError> {
    match chosen {
        Some(secret) if secret.len() < 8 || !secret.bytes().all(|b| b.is_ascii_graphic()) => Err(
            StoreError::Invalid("a key must be at least 8 visible ASCII characters".into()),
        ),
        Some(secret) => Ok(secret),
        None => new_secret(),
    }
}

impl Store {
    pub fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut projects = self
            .projects
            .iter(&txn)?
            .map(|entry| entry.map(|(_, p)| p))
            .collect::<Result<Vec<_>, _>>()?;
        projects.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        Ok(projects)
    }

    pub fn get_project(&self, id: Uuid) -> Result<Project, StoreError> {
        let txn = self.env.read_txn()?;
        self.projects
            .get(&txn, id.as_bytes())?
            .ok_or(StoreError::NotFound("project"))
    }

    pub fn create_project(&self, name: &str, upstream_key: &str) -> Result<Project, StoreError> {
        let name = check_name(name)?;
        let upstream_key = check_upstream_key(upstream_key)?;
        let now = now_ms();
        let project = Project {
            id: new_id()?,
            upstream_key: crypto::seal(self.cipher.as_ref(), upstream_key)?,
            upstream_key_hint: hint(upstream_key),
            name,
            is_active: true,
            created_at: now,
            updated_at: now,
            deactivated_at: None,
        };
        let mut txn = self.admin_txn()?;
        if self.project_names.get(&txn, &project.name)?.is_some() {
            return Err(StoreError::NameTaken(project.name));
        }
        self.project_names
            .put(&mut txn, &project.name, project.id.as_bytes())?;
        self.projects
            .put(&mut txn, project.id.as_bytes(), &project)?;
        self.commit_admin(txn)?;
        Ok(project)
    }

    pub fn update_project(&self, id: Uuid, changes: ProjectChanges) -> Result<Project, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut project = self
            .projects
            .get(&txn, id.as_bytes())?
            .ok_or(StoreError::NotFound("project"))?;
        let now = now_ms();
        if let Some(name) = changes.name {
            let name = check_name(&name)?;
            if name != project.name {
                if self.project_names.get(&txn, &name)?.is_some() {
                    return Err(StoreError::NameTaken(name));
                }
                self.project_names.delete(&mut txn, &project.name)?;
                self.project_names.put(&mut txn, &name, id.as_bytes())?;
                project.name = name;
            }
        }
        if let Some(key) = changes.upstream_key {
            let key = check_upstream_key(&key)?;
            project.upstream_key = crypto::seal(self.cipher.as_ref(), key)?;
            project.upstream_key_hint = hint(key);
        }
        if let Some(active) = changes.is_active
            && active != project.is_active
        {
            project.is_active = active;
            project.deactivated_at = (!active).then_some(now);
        }
        project.updated_at = now;
        self.projects.put(&mut txn, id.as_bytes(), &project)?;
        self.commit_admin(txn)?;
        Ok(project)
    }

    /// Deletes the project and revokes its keys; returns how many were revoked.
    pub fn delete_project(&self, id: Uuid) -> Result<usize, StoreError> {
        let mut txn = self.admin_txn()?;
        let project = self
            .projects
            .get(&txn, id.as_bytes())?
            .ok_or(StoreError::NotFound("project"))?;
        let revoked = self.revoke_keys_in(&mut txn, id)?;
        self.project_names.delete(&mut txn, &project.name)?;
        self.projects.delete(&mut txn, id.as_bytes())?;
        self.commit_admin(txn)?;
        Ok(revoked)
    }

    /// Revokes every active key of the project; returns how many.
    pub fn revoke_project_keys(&self, id: Uuid) -> Result<usize, StoreError> {
        let mut txn = self.admin_txn()?;
        if self.projects.get(&txn, id.as_bytes())?.is_none() {
            return Err(StoreError::NotFound("project"));
        }
        let revoked = self.revoke_keys_in(&mut txn, id)?;
        self.commit_admin(txn)?;
        Ok(revoked)
    }

    fn revoke_keys_in(&self, txn: &mut RwTxn, project_id: Uuid) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut revoked = Vec::new();
        for entry in self.keys.iter(txn)? {
            let (_, key) = entry?;
            if key.project_id == Some(project_id) && key.is_active {
                revoked.push(key);
            }
        }
        let count = revoked.len();
        for mut key in revoked {
            key.is_active = false;
            key.updated_at = now;
            self.keys.put(txn, key.id.as_bytes(), &key)?;
        }
        Ok(count)
    }

    /// Creates a key; returns it with its secret (the only time the secret
    /// is available).
    pub fn create_key(&self, new: NewKey) -> Result<(KeyRecord, String), StoreError> {
        check_metadata(&new.metadata)?;
        let mut txn = self.admin_txn()?;
        let created = self.insert_key(&mut txn, new)?;
        self.commit_admin(txn)?;
        Ok(created)
    }

    /// `create_key` inside the caller's write transaction, for writes that
    /// make a key along with other changes.
    pub(super) fn insert_key(
        &self,
        txn: &mut RwTxn,
        new: NewKey,
    ) -> Result<(KeyRecord, String), StoreError> {
        let secret = chosen_or_new_secret(new.secret)?;
        let now = now_ms();
        let key = KeyRecord {
            id: new_id()?,
            secret_hash: sha256(secret.as_bytes()),
            hint: hint(&secret),
            project_id: new.project_id,
            alias: new.alias,
            user_id: new.user_id,
            team_id: new.team_id,
            models: new.models,
            model_aliases: new.model_aliases,
            expires_at: new.expires_at,
            is_active: true,
            max_requests: new.max_requests,
            max_budget: new.max_budget,
            metadata: if new.metadata.is_empty() {
                "{}".into()
            } else {
                new.metadata
            },
            created_at: now,
            updated_at: now,
            limits: new.limits,
            model_limits: new.model_limits,
        };
        if let Some(project_id) = key.project_id
            && self.projects.get(txn, project_id.as_bytes())?.is_none()
        {
            return Err(StoreError::NotFound("project"));
        }
        if let Some(team_id) = &key.team_id {
            self.check_team_exists(txn, team_id)?;
        }
        if self.key_hashes.get(txn, &key.secret_hash)?.is_some() {
            return Err(StoreError::Invalid("that key already exists".into()));
        }
        if let Some(alias) = &key.alias {
            self.check_alias_free(txn, alias, key.id)?;
        }
        self.key_hashes
            .put(txn, &key.secret_hash, key.id.as_bytes())?;
        self.keys.put(txn, key.id.as_bytes(), &key)?;
        self.set_key_windows(txn, None, &key)?;
        if new.spend > Money(0) {
            let usage = Usage {
                spend: new.spend,
                ..Usage::default()
            };
            self.usage.put(txn, key.id.as_bytes(), &usage)?;
        }
        Ok((key, secret))
    }

    /// Keys with their usage, oldest first.
    pub fn list_keys(
        &self,
        project_id: Option<Uuid>,
        active_only: bool,
    ) -> Result<Vec<(KeyRecord, Usage)>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut keys = Vec::new();
        for entry in self.keys.iter(&txn)? {
            let (_, key) = entry?;
            if project_id.is_some_and(|p| Some(p) != key.project_id)
                || (active_only && !key.is_active)
                || key.is_master()
            {
                continue;
            }
            let usage = self.usage.get(&txn, key.id.as_bytes())?.unwrap_or_default();
            let usage = self.shown_usage(&txn, key.id, usage)?;
            keys.push((key, usage));
        }
        keys.sort_by_key(|(key, _)| key.created_at);
        Ok(keys)
    }

    /// A key by its id, its secret, or its secret's SHA-256 in hex (what
    /// LiteLLM calls the key's `token`).
    pub fn find_key(&self, id_or_secret: &str) -> Result<(KeyRecord, Usage), StoreError> {
        let txn = self.env.read_txn()?;
        let hash =
            crypto::decode_hex32(id_or_secret).unwrap_or_else(|| sha256(id_or_secret.as_bytes()));
        let id = match Uuid::parse_str(id_or_secret) {
            Ok(id) => Some(id),
            Err(_) => self
                .key_hashes
                .get(&txn, &hash)?
                .and_then(|bytes| Uuid::from_slice(bytes).ok()),
        };
        let key = match id {
            Some(id) => self.keys.get(&txn, id.as_bytes())?,
            None => None,
        }
        .ok_or(StoreError::NotFound("token"))?;
        let usage = self.usage.get(&txn, key.id.as_bytes())?.unwrap_or_default();
        let usage = self.shown_usage(&txn, key.id, usage)?;
        Ok((key, usage))
    }

    pub fn update_key(
        &self,
        id: Uuid,
        changes: KeyChanges,
    ) -> Result<(KeyRecord, Usage), StoreError> {
        if let Some(metadata) = &changes.metadata {
            check_metadata(metadata)?;
        }
        let mut txn = self.admin_txn()?;
        let changed = self.change_key(&mut txn, id, changes)?;
        self.commit_admin(txn)?;
        Ok(changed)
    }

    /// Gives the key a new secret (`chosen`, or a generated one) and applies
    /// `changes`, in one write: the same record (id, limits, spend, counts),
    /// from now on found by the new secret's SHA-256 only, so that the old
    /// secret stops working on every worker before this returns. The
    /// master key's record is the management token's and is not changed
    /// here. Returns the key with its new secret (the only time it is
    /// available).
    pub fn regenerate_key(
        &self,
        id: Uuid,
        chosen: Option<String>,
        changes: KeyChanges,
    ) -> Result<(KeyRecord, Usage, String), StoreError> {
        if let Some(metadata) = &changes.metadata {
            check_metadata(metadata)?;
        }
        let secret = chosen_or_new_secret(chosen)?;
        let hash = sha256(secret.as_bytes());
        let mut txn = self.admin_txn()?;
        let mut key = self
            .keys
            .get(&txn, id.as_bytes())?
            .ok_or(StoreError::NotFound("token"))?;
        if key.is_master() {
            return Err(StoreError::Invalid(
                "the master key is the MANAGEMENT_TOKEN: change it there and restart".into(),
            ));
        }
        if self.key_hashes.get(&txn, &hash)?.is_some() {
            return Err(StoreError::Invalid("that key already exists".into()));
        }
        self.key_hashes.delete(&mut txn, &key.secret_hash)?;
        self.key_hashes.put(&mut txn, &hash, id.as_bytes())?;
        key.secret_hash = hash;
        key.hint = hint(&secret);
        self.keys.put(&mut txn, id.as_bytes(), &key)?;
        let (key, usage) = self.change_key(&mut txn, id, changes)?;
        self.commit_admin(txn)?;
        Ok((key, usage, secret))
    }

    /// `update_key` inside the caller's write transaction.
    fn change_key(
        &self,
        txn: &mut RwTxn,
        id: Uuid,
        changes: KeyChanges,
    ) -> Result<(KeyRecord, Usage), StoreError> {
        let mut key = self
            .keys
            .get(txn, id.as_bytes())?
            .ok_or(StoreError::NotFound("token"))?;
        if let Some(active) = changes.is_active {
            key.is_active = active;
        }
        if let Some(max) = changes.max_requests {
            key.max_requests = max;
        }
        if let Some(expires) = changes.expires_at {
            key.expires_at = expires;
        }
        if let Some(budget) = changes.max_budget {
            key.max_budget = budget;
        }
        if let Some(alias) = changes.alias {
            if let Some(alias) = &alias {
                self.check_alias_free(txn, alias, id)?;
            }
            key.alias = alias;
        }
        if let Some(user_id) = changes.user_id {
            key.user_id = user_id;
        }
        if let Some(team_id) = changes.team_id {
            if let Some(team_id) = &team_id {
                self.check_team_exists(txn, team_id)?;
            }
            key.team_id = team_id;
        }
        if let Some(models) = changes.models {
            key.models = models;
        }
        if let Some(aliases) = changes.model_aliases {
            key.model_aliases = aliases;
        }
        if let Some(metadata) = changes.metadata {
            key.metadata = metadata;
        }
        let before = (key.limits, key.model_limits.clone());
        if let Some(limits) = changes.limits {
            key.limits = limits;
        }
        if let Some(model_limits) = changes.model_limits {
            key.model_limits = model_limits;
        }
        key.updated_at = now_ms();
        self.keys.put(txn, id.as_bytes(), &key)?;
        self.set_key_windows(txn, Some(before), &key)?;
        let mut usage = self.usage.get(txn, id.as_bytes())?.unwrap_or_default();
        if let Some(spend) = changes.spend {
            usage.spend = spend;
            self.usage.put(txn, id.as_bytes(), &usage)?;
        }
        Ok((key, usage))
    }

    /// Starts (or ends) the budget windows of `key` and of its per-model
    /// budgets whose `budget_duration` changed from `before`.
    fn set_key_windows(
        &self,
        txn: &mut RwTxn,
        before: Option<(Limits, BTreeMap<String, ModelLimits>)>,
        key: &KeyRecord,
    ) -> Result<(), StoreError> {
        let (old, old_models) = before.unwrap_or_default();
        self.set_budget_window(
            txn,
            super::Payer::Key(key.id),
            old.budget_duration,
            key.limits.budget_duration,
        )?;
        for (model, limits) in &key.model_limits {
            let old = old_models.get(model).and_then(|m| m.budget_duration);
            let payer = super::Payer::KeyModel(key.id, model);
            self.set_budget_window(txn, payer, old, limits.budget_duration)?;
        }
        for model in old_models
            .keys()
            .filter(|m| !key.model_limits.contains_key(*m))
        {
            self.forget_payer(txn, super::Payer::KeyModel(key.id, model))?;
        }
        Ok(())
    }

    /// Deletes keys for good (their usage too); returns the ids deleted.
    /// Unknown ids are skipped.
    pub fn delete_keys(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut deleted = Vec::new();
        for id in ids {
            if self.remove_key(&mut txn, *id)? {
                deleted.push(*id);
            }
        }
        self.commit_admin(txn)?;
        Ok(deleted)
    }

    /// Deletes one key and its usage in the caller's transaction; `false`
    /// if there was no such key.
    pub(super) fn remove_key(&self, txn: &mut RwTxn, id: Uuid) -> Result<bool, StoreError> {
        let Some(key) = self.keys.get(txn, id.as_bytes())? else {
            return Ok(false);
        };
        self.key_hashes.delete(txn, &key.secret_hash)?;
        self.keys.delete(txn, id.as_bytes())?;
        self.usage.delete(txn, id.as_bytes())?;
        self.forget_payer(txn, super::Payer::Key(id))?;
        for model in key.model_limits.keys() {
            self.forget_payer(txn, super::Payer::KeyModel(id, model))?;
        }
        Ok(true)
    }

    /// Keeps the key record of the master key (the management token) in
    /// step with it, so that it also calls the models, as LiteLLM's master
    /// key does, its spend accounted like any key's: made when missing, and
    /// one of an earlier master key deleted. It is left out of listings.
    pub fn sync_master_key(&self, secret: &str) -> Result<(), StoreError> {
        let hash = sha256(secret.as_bytes());
        let mut txn = self.admin_txn()?;
        let mut current = false;
        let mut stale = Vec::new();
        for entry in self.keys.iter(&txn)? {
            let (_, key) = entry?;
            if key.is_master() {
                if key.secret_hash == hash {
                    current = true;
                } else {
                    stale.push(key.id);
                }
            }
        }
        if current && stale.is_empty() {
            return Ok(());
        }
        for id in stale {
            self.remove_key(&mut txn, id)?;
        }
        if !current {
            let new = NewKey {
                metadata: MASTER_KEY_METADATA.into(),
                secret: Some(secret.into()),
                ..NewKey::default()
            };
            self.insert_key(&mut txn, new)?;
        }
        self.commit_admin(txn)
    }

    /// The id of the key with this alias.
    pub fn key_id_by_alias(&self, alias: &str) -> Result<Option<Uuid>, StoreError> {
        let txn = self.env.read_txn()?;
        for entry in self.keys.iter(&txn)? {
            let (_, key) = entry?;
            if key.alias.as_deref() == Some(alias) {
                return Ok(Some(key.id));
            }
        }
        Ok(None)
    }

    /// Aliases are unique; admin writes are rare enough for a scan.
    fn check_alias_free(&self, txn: &RwTxn, alias: &str, owner: Uuid) -> Result<(), StoreError> {
        for entry in self.keys.iter(txn)? {
            let (_, key) = entry?;
            if key.id != owner && key.alias.as_deref() == Some(alias) {
                return Err(StoreError::Taken("key_alias", alias.to_string()));
            }
        }
        Ok(())
    }
}
