//! Lookups for the request path: one read transaction each, never held
//! across an `.await`, no write, no lock.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::ledger::Payer;
use super::model::{Budget, Limits, ModelLimits, Money, now_ms};
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
    /// Spend recorded in the ledger when the view was read (in the
    /// budget's current window).
    pub spend: Money,
    pub user_spend: Money,
    /// The key's team, when it has one that exists.
    pub team: Option<TeamView>,
    pub limits: Limits,
    pub user_limits: Limits,
    pub model_limits: BTreeMap<String, ModelLimits>,
}

/// What the request path needs to know about a key's team.
#[derive(Debug, Clone)]
pub struct TeamView {
    pub team_id: String,
    pub models: Vec<String>,
    pub max_budget: Option<Budget>,
    pub limits: Limits,
    pub blocked: bool,
}

/// Spend recorded for a key, its user and its team, in their budgets'
/// current windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spend {
    pub key: Money,
    pub user: Money,
    pub team: Money,
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
        let team = match &key.team_id {
            Some(team_id) => self.teams.get(&txn, team_id)?,
            None => None,
        };
        let now = now_ms();
        let spend = self.window_spend(&txn, Payer::Key(key.id), now)?;
        let user_spend = match &key.user_id {
            Some(user_id) => self.window_spend(&txn, Payer::User(user_id), now)?,
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
            user_max_budget: user.as_ref().and_then(|u| u.max_budget),
            spend,
            user_spend,
            team: team.map(|t| TeamView {
                team_id: t.team_id,
                models: t.models,
                max_budget: t.max_budget,
                limits: t.limits,
                blocked: t.blocked,
            }),
            limits: key.limits,
            user_limits: user.map(|u| u.limits).unwrap_or_default(),
            model_limits: key.model_limits,
        }))
    }

    /// What a key, its user and its team have spent so far, in their
    /// budgets' current windows.
    pub fn spend_of(
        &self,
        key_id: Uuid,
        user_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Spend, StoreError> {
        let txn = self.env.read_txn()?;
        let now = now_ms();
        let key = self.window_spend(&txn, Payer::Key(key_id), now)?;
        let user = match user_id {
            Some(user_id) => self.window_spend(&txn, Payer::User(user_id), now)?,
            None => Money(0),
        };
        let team = match team_id {
            Some(team_id) => self.window_spend(&txn, Payer::Team(team_id), now)?,
            None => Money(0),
        };
        Ok(Spend { key, user, team })
    }

    /// What `payer` has spent in its budget's current window.
    pub fn payer_spend(&self, payer: Payer<'_>) -> Result<Money, StoreError> {
        let txn = self.env.read_txn()?;
        let own = self.window_spend(&txn, payer, now_ms())?;
        self.shown_spend(&txn, payer, own)
    }

    /// How long `payer`'s budget windows last, if its budget has them.
    pub fn budget_window_of(
        &self,
        payer: Payer<'_>,
    ) -> Result<Option<super::BudgetWindow>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self
            .payer_budget(&txn, payer)?
            .and_then(|(_, window)| window))
    }

    /// The end of `payer`'s current budget window (`budget_reset_at`), for
    /// a budget with `window`.
    pub fn budget_reset_at(
        &self,
        payer: Payer<'_>,
        window: Option<super::BudgetWindow>,
    ) -> Result<Option<i64>, StoreError> {
        let txn = self.env.read_txn()?;
        self.window_end(&txn, payer, window, now_ms())
    }
}
