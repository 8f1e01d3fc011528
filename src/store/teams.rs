//! Teams: keys and users belong to them; a team's models, limits and
//! budget apply to its keys' requests. A team's spend is kept apart from
//! the record (`payer_spend`), added to by the ledger.
//!
//! Memberships are written in two places, the team's `members` and each
//! member's `User.teams`, always in the same write transaction, so that
//! neither is ever seen without the other.

use heed::RwTxn;

use super::crypto::new_id;
use super::model::{Budget, Limits, Team, TeamMember, TeamRole, User, now_ms};
use super::{Payer, Store, StoreError};

/// A team to create.
#[derive(Debug, Default)]
pub struct NewTeam {
    /// `None`: a new UUID.
    pub team_id: Option<String>,
    /// Unique among teams when set.
    pub team_alias: Option<String>,
    pub models: Vec<String>,
    /// Each must be an existing user.
    pub members: Vec<TeamMember>,
    pub max_budget: Option<Budget>,
    pub limits: Limits,
    pub blocked: bool,
    /// A JSON object as text; empty means `{}`.
    pub metadata: String,
}

/// Fields of a team that an update may change. `Some(None)` clears.
#[derive(Debug, Default)]
pub struct TeamChanges {
    pub team_alias: Option<Option<String>>,
    pub models: Option<Vec<String>>,
    pub max_budget: Option<Option<Budget>>,
    pub limits: Option<Limits>,
    pub blocked: Option<bool>,
    pub metadata: Option<String>,
}

impl Store {
    pub fn get_team(&self, team_id: &str) -> Result<Team, StoreError> {
        let txn = self.env.read_txn()?;
        self.teams
            .get(&txn, team_id)?
            .ok_or(StoreError::NotFound("team"))
    }

    /// Teams, oldest first.
    pub fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut teams = self
            .teams
            .iter(&txn)?
            .map(|entry| entry.map(|(_, team)| team))
            .collect::<Result<Vec<_>, _>>()?;
        teams.sort_by(|a, b| (a.created_at, &a.team_id).cmp(&(b.created_at, &b.team_id)));
        Ok(teams)
    }

    pub fn create_team(&self, new: NewTeam) -> Result<Team, StoreError> {
        let team_id = match new.team_id {
            Some(id) => check_team_id(&id)?,
            None => new_id()?.to_string(),
        };
        let now = now_ms();
        let mut team = Team {
            team_id,
            team_alias: new.team_alias,
            models: new.models,
            members: Vec::new(),
            max_budget: new.max_budget,
            limits: new.limits,
            blocked: new.blocked,
            metadata: if new.metadata.is_empty() {
                "{}".into()
            } else {
                new.metadata
            },
            created_at: now,
            updated_at: now,
        };
        let mut txn = self.admin_txn()?;
        if self.teams.get(&txn, &team.team_id)?.is_some() {
            return Err(StoreError::Taken("team_id", team.team_id));
        }
        if let Some(alias) = &team.team_alias {
            self.check_team_alias_free(&txn, alias, &team.team_id)?;
        }
        self.join(&mut txn, &mut team, new.members)?;
        self.teams.put(&mut txn, &team.team_id, &team)?;
        let payer = Payer::Team(&team.team_id);
        self.set_budget_window(&mut txn, payer, None, team.limits.budget_duration)?;
        self.commit_admin(txn)?;
        Ok(team)
    }

    pub fn update_team(&self, team_id: &str, changes: TeamChanges) -> Result<Team, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut team = self.team_in(&txn, team_id)?;
        if let Some(alias) = changes.team_alias {
            if let Some(alias) = &alias {
                self.check_team_alias_free(&txn, alias, team_id)?;
            }
            team.team_alias = alias;
        }
        if let Some(models) = changes.models {
            team.models = models;
        }
        if let Some(budget) = changes.max_budget {
            team.max_budget = budget;
        }
        if let Some(blocked) = changes.blocked {
            team.blocked = blocked;
        }
        if let Some(metadata) = changes.metadata {
            team.metadata = metadata;
        }
        if let Some(limits) = changes.limits {
            let old = team.limits.budget_duration;
            self.set_budget_window(&mut txn, Payer::Team(team_id), old, limits.budget_duration)?;
            team.limits = limits;
        }
        team.updated_at = now_ms();
        self.teams.put(&mut txn, team_id, &team)?;
        self.commit_admin(txn)?;
        Ok(team)
    }

    /// Blocks or unblocks a team: its keys stop, or start again, on every
    /// worker before this returns.
    pub fn set_team_blocked(&self, team_id: &str, blocked: bool) -> Result<Team, StoreError> {
        let changes = TeamChanges {
            blocked: Some(blocked),
            ..TeamChanges::default()
        };
        self.update_team(team_id, changes)
    }

    /// Adds members (existing users) to a team, all or none; a user already
    /// in the team is refused.
    pub fn add_team_members(
        &self,
        team_id: &str,
        members: Vec<TeamMember>,
    ) -> Result<Team, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut team = self.team_in(&txn, team_id)?;
        self.join(&mut txn, &mut team, members)?;
        team.updated_at = now_ms();
        self.teams.put(&mut txn, team_id, &team)?;
        self.commit_admin(txn)?;
        Ok(team)
    }

    /// Takes a member out of a team (and the team out of the user's
    /// `teams`); a user who is not a member is refused.
    pub fn remove_team_member(&self, team_id: &str, user_id: &str) -> Result<Team, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut team = self.team_in(&txn, team_id)?;
        if !self.part(&mut txn, &mut team, user_id)? {
            return Err(StoreError::Invalid(format!(
                "user {user_id:?} is not a member of team {team_id:?}"
            )));
        }
        team.updated_at = now_ms();
        self.teams.put(&mut txn, team_id, &team)?;
        self.commit_admin(txn)?;
        Ok(team)
    }

    /// Deletes teams with their keys (as LiteLLM does) and takes them out of
    /// their members' `teams`; returns the teams deleted and how many keys
    /// went with them. Unknown ids are skipped.
    pub fn delete_teams(&self, team_ids: &[String]) -> Result<(Vec<String>, usize), StoreError> {
        let mut txn = self.admin_txn()?;
        let mut deleted = Vec::new();
        for team_id in team_ids {
            let Some(team) = self.teams.get(&txn, team_id)? else {
                continue;
            };
            for member in &team.members {
                self.leave(&mut txn, &member.user_id, team_id)?;
            }
            self.teams.delete(&mut txn, team_id)?;
            self.forget_payer(&mut txn, Payer::Team(team_id))?;
            deleted.push(team_id.clone());
        }
        let mut doomed = Vec::new();
        for entry in self.keys.iter(&txn)? {
            let (_, key) = entry?;
            if key.team_id.as_ref().is_some_and(|t| deleted.contains(t)) {
                doomed.push(key.id);
            }
        }
        for id in &doomed {
            self.remove_key(&mut txn, *id)?;
        }
        self.commit_admin(txn)?;
        Ok((deleted, doomed.len()))
    }

    /// Whether a team with this id exists, in the caller's transaction
    /// (keys may name only existing teams).
    pub(super) fn check_team_exists(&self, txn: &RwTxn, team_id: &str) -> Result<(), StoreError> {
        self.team_in(txn, team_id).map(|_| ())
    }

    fn team_in(&self, txn: &RwTxn, team_id: &str) -> Result<Team, StoreError> {
        self.teams
            .get(txn, team_id)?
            .ok_or(StoreError::NotFound("team"))
    }

    /// Adds `members` to `team` and the team to each member's `teams`.
    fn join(
        &self,
        txn: &mut RwTxn,
        team: &mut Team,
        members: Vec<TeamMember>,
    ) -> Result<(), StoreError> {
        for member in members {
            if team.members.iter().any(|m| m.user_id == member.user_id) {
                return Err(StoreError::Invalid(format!(
                    "user {:?} is already a member of team {:?}",
                    member.user_id, team.team_id
                )));
            }
            let mut user = self
                .users
                .get(txn, &member.user_id)?
                .ok_or(StoreError::NotFound("user"))?;
            if !user.teams.contains(&team.team_id) {
                user.teams.push(team.team_id.clone());
                user.updated_at = now_ms();
                self.users.put(txn, &user.user_id, &user)?;
            }
            team.members.push(member);
        }
        Ok(())
    }

    /// Makes a user (already written in `txn`) a member of exactly the
    /// teams `team_ids`, in the caller's transaction, as `/user/new` and
    /// `/user/update` name them: each must exist; a team it joins lists it
    /// with the role `user`, a team it stays in keeps its role, a team no
    /// longer named drops it. Returns the user, its `teams` now those teams
    /// in the order given.
    pub(super) fn set_user_teams(
        &self,
        txn: &mut RwTxn,
        user_id: &str,
        team_ids: &[String],
    ) -> Result<User, StoreError> {
        let mut wanted: Vec<String> = Vec::with_capacity(team_ids.len());
        let mut joining = Vec::new();
        for team_id in team_ids {
            if wanted.contains(team_id) {
                continue;
            }
            let team = self
                .teams
                .get(txn, team_id)?
                .ok_or_else(|| StoreError::NoSuch("team", team_id.clone()))?;
            if !team.members.iter().any(|m| m.user_id == user_id) {
                joining.push(team);
            }
            wanted.push(team_id.clone());
        }
        let mut leaving = Vec::new();
        for entry in self.teams.iter(txn)? {
            let (_, team) = entry?;
            if !wanted.contains(&team.team_id) && team.members.iter().any(|m| m.user_id == user_id)
            {
                leaving.push(team);
            }
        }
        let now = now_ms();
        for mut team in leaving {
            self.part(txn, &mut team, user_id)?;
            team.updated_at = now;
            self.teams.put(txn, &team.team_id, &team)?;
        }
        for mut team in joining {
            let member = TeamMember {
                user_id: user_id.to_string(),
                role: TeamRole::User,
            };
            self.join(txn, &mut team, vec![member])?;
            team.updated_at = now;
            self.teams.put(txn, &team.team_id, &team)?;
        }
        let mut user = self
            .users
            .get(txn, user_id)?
            .ok_or(StoreError::NotFound("user"))?;
        // Also drops names of teams that were never made (a user written
        // before teams were checked), and keeps the order given.
        if user.teams != wanted {
            user.teams = wanted;
            user.updated_at = now;
            self.users.put(txn, user_id, &user)?;
        }
        Ok(user)
    }

    /// Takes a member out of `team` (the caller writes the team) and the
    /// team out of the user's `teams`; `false` when it was not a member.
    fn part(&self, txn: &mut RwTxn, team: &mut Team, user_id: &str) -> Result<bool, StoreError> {
        let before = team.members.len();
        team.members.retain(|m| m.user_id != user_id);
        if team.members.len() == before {
            return Ok(false);
        }
        self.leave(txn, user_id, &team.team_id)?;
        Ok(true)
    }

    /// Takes `team_id` out of the user's `teams` (a user deleted since is
    /// skipped).
    fn leave(&self, txn: &mut RwTxn, user_id: &str, team_id: &str) -> Result<(), StoreError> {
        if let Some(mut user) = self.users.get(txn, user_id)?
            && user.teams.iter().any(|t| t == team_id)
        {
            user.teams.retain(|t| t != team_id);
            user.updated_at = now_ms();
            self.users.put(txn, user_id, &user)?;
        }
        Ok(())
    }

    /// Takes deleted users out of the teams they were members of.
    pub(super) fn drop_members(
        &self,
        txn: &mut RwTxn,
        user_ids: &[String],
    ) -> Result<(), StoreError> {
        let mut changed = Vec::new();
        for entry in self.teams.iter(txn)? {
            let (_, mut team) = entry?;
            let before = team.members.len();
            team.members.retain(|m| !user_ids.contains(&m.user_id));
            if team.members.len() != before {
                team.updated_at = now_ms();
                changed.push(team);
            }
        }
        for team in changed {
            self.teams.put(txn, &team.team_id, &team)?;
        }
        Ok(())
    }

    /// Aliases are unique; admin writes are rare enough for a scan.
    fn check_team_alias_free(
        &self,
        txn: &RwTxn,
        alias: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        for entry in self.teams.iter(txn)? {
            let (_, team) = entry?;
            if team.team_id != owner && team.team_alias.as_deref() == Some(alias) {
                return Err(StoreError::Taken("team_alias", alias.to_string()));
            }
        }
        Ok(())
    }
}

fn check_team_id(id: &str) -> Result<String, StoreError> {
    let id = id.trim();
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "team_id must be 1 to 200 characters".into(),
        ));
    }
    Ok(id.to_string())
}
