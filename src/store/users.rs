//! Users: the people and services that own keys. A user's spend is kept
//! apart from the record (`user_spend`), added to by the ledger. The teams a
//! user is given are memberships, written with the teams' members (see
//! `teams.rs`).

use heed::RwTxn;

use super::crypto::new_id;
use super::model::{Budget, Limits, Money, User, UserRole, now_ms};
use super::{Store, StoreError};

/// A user to create.
#[derive(Debug)]
pub struct NewUser {
    /// `None`: a new UUID.
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub user_role: UserRole,
    pub user_alias: Option<String>,
    /// Existing teams; the user joins each as a member with the role `user`.
    pub teams: Vec<String>,
    pub max_budget: Option<Budget>,
    pub models: Vec<String>,
    /// A JSON object as text; empty means `{}`.
    pub metadata: String,
    pub password_hash: Option<String>,
    pub limits: Limits,
}

/// Fields of a user that an update may change. `Some(None)` clears.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub user_email: Option<Option<String>>,
    pub user_role: Option<UserRole>,
    pub user_alias: Option<Option<String>>,
    /// Existing teams: the user becomes a member of exactly these (see
    /// `set_user_teams`).
    pub teams: Option<Vec<String>>,
    pub max_budget: Option<Option<Budget>>,
    pub models: Option<Vec<String>>,
    pub metadata: Option<String>,
    pub password_hash: Option<Option<String>>,
    pub limits: Option<Limits>,
}

impl Store {
    pub fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let user_id = match new.user_id {
            Some(id) => check_user_id(&id)?,
            None => new_id()?.to_string(),
        };
        let now = now_ms();
        let mut user = User {
            user_id,
            user_email: new.user_email,
            user_role: new.user_role,
            user_alias: new.user_alias,
            teams: Vec::new(),
            max_budget: new.max_budget,
            models: new.models,
            metadata: if new.metadata.is_empty() {
                "{}".into()
            } else {
                new.metadata
            },
            password_hash: new.password_hash,
            created_at: now,
            updated_at: now,
            limits: new.limits,
        };
        let mut txn = self.admin_txn()?;
        if self.users.get(&txn, &user.user_id)?.is_some() {
            return Err(StoreError::Taken("user_id", user.user_id));
        }
        if let Some(email) = &user.user_email {
            self.check_email_free(&txn, email, &user.user_id)?;
        }
        self.users.put(&mut txn, &user.user_id, &user)?;
        if !new.teams.is_empty() {
            user = self.set_user_teams(&mut txn, &user.user_id, &new.teams)?;
        }
        let payer = super::Payer::User(&user.user_id);
        self.set_budget_window(&mut txn, payer, None, user.limits.budget_duration)?;
        self.commit_admin(txn)?;
        Ok(user)
    }

    /// Users with their spend, oldest first.
    pub fn list_users(&self) -> Result<Vec<(User, Money)>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut users = Vec::new();
        for entry in self.users.iter(&txn)? {
            let (_, user) = entry?;
            let spend = self
                .user_spend
                .get(&txn, &user.user_id)?
                .unwrap_or_default();
            let spend = self.shown_spend(&txn, super::Payer::User(&user.user_id), spend)?;
            users.push((user, spend));
        }
        users.sort_by(|(a, _), (b, _)| (a.created_at, &a.user_id).cmp(&(b.created_at, &b.user_id)));
        Ok(users)
    }

    pub fn get_user(&self, user_id: &str) -> Result<(User, Money), StoreError> {
        let txn = self.env.read_txn()?;
        let user = self
            .users
            .get(&txn, user_id)?
            .ok_or(StoreError::NotFound("user"))?;
        let spend = self.user_spend.get(&txn, user_id)?.unwrap_or_default();
        let spend = self.shown_spend(&txn, super::Payer::User(user_id), spend)?;
        Ok((user, spend))
    }

    /// The user with this email (compared without regard to case).
    pub fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let txn = self.env.read_txn()?;
        for entry in self.users.iter(&txn)? {
            let (_, user) = entry?;
            if user
                .user_email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
            {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    pub fn update_user(&self, user_id: &str, changes: UserChanges) -> Result<User, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut user = self
            .users
            .get(&txn, user_id)?
            .ok_or(StoreError::NotFound("user"))?;
        if let Some(email) = changes.user_email {
            if let Some(email) = &email {
                self.check_email_free(&txn, email, user_id)?;
            }
            user.user_email = email;
        }
        if let Some(role) = changes.user_role {
            user.user_role = role;
        }
        if let Some(alias) = changes.user_alias {
            user.user_alias = alias;
        }
        if let Some(budget) = changes.max_budget {
            user.max_budget = budget;
        }
        if let Some(models) = changes.models {
            user.models = models;
        }
        if let Some(metadata) = changes.metadata {
            user.metadata = metadata;
        }
        if let Some(hash) = changes.password_hash {
            user.password_hash = hash;
        }
        if let Some(limits) = changes.limits {
            let payer = super::Payer::User(user_id);
            let old = user.limits.budget_duration;
            self.set_budget_window(&mut txn, payer, old, limits.budget_duration)?;
            user.limits = limits;
        }
        user.updated_at = now_ms();
        self.users.put(&mut txn, user_id, &user)?;
        if let Some(teams) = changes.teams {
            user = self.set_user_teams(&mut txn, user_id, &teams)?;
        }
        self.commit_admin(txn)?;
        Ok(user)
    }

    /// Deletes users and every key they own; returns the users deleted and
    /// how many keys went with them. Unknown ids are skipped.
    pub fn delete_users(&self, user_ids: &[String]) -> Result<(Vec<String>, usize), StoreError> {
        let mut txn = self.admin_txn()?;
        let mut deleted = Vec::new();
        for user_id in user_ids {
            if self.users.delete(&mut txn, user_id)? {
                self.user_spend.delete(&mut txn, user_id)?;
                self.forget_payer(&mut txn, super::Payer::User(user_id))?;
                deleted.push(user_id.clone());
            }
        }
        self.drop_members(&mut txn, &deleted)?;
        let mut doomed = Vec::new();
        for entry in self.keys.iter(&txn)? {
            let (_, key) = entry?;
            if key.user_id.as_ref().is_some_and(|u| deleted.contains(u)) {
                doomed.push((key.id, key.secret_hash));
            }
        }
        for (id, hash) in &doomed {
            self.key_hashes.delete(&mut txn, hash)?;
            self.keys.delete(&mut txn, id.as_bytes())?;
            self.usage.delete(&mut txn, id.as_bytes())?;
            self.forget_payer(&mut txn, super::Payer::Key(*id))?;
        }
        self.commit_admin(txn)?;
        Ok((deleted, doomed.len()))
    }

    /// Emails are unique; admin writes are rare enough for a scan.
    fn check_email_free(&self, txn: &RwTxn, email: &str, owner: &str) -> Result<(), StoreError> {
        for entry in self.users.iter(txn)? {
            let (_, user) = entry?;
            if user.user_id != owner
                && user
                    .user_email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            {
                return Err(StoreError::Taken("user_email", email.to_string()));
            }
        }
        Ok(())
    }
}

fn check_user_id(id: &str) -> Result<String, StoreError> {
    let id = id.trim();
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "user_id must be 1 to 200 characters".into(),
        ));
    }
    Ok(id.to_string())
}
