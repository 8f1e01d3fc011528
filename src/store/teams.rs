//! Teams: keys and users belong to them; a team's models, limits and
//! budget apply to its keys' requests. A team's spend is kept apart from
//! the record (`payer_spend`), added to by the ledger.

use super::model::Team;
use super::{Store, StoreError};

impl Store {
    pub fn get_team(&self, team_id: &str) -> Result<Team, StoreError> {
        let txn = self.env.read_txn()?;
        self.teams
            .get(&txn, team_id)?
            .ok_or(StoreError::NotFound("team"))
    }
}
