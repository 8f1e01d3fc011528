//! The records kept in the store. Timestamps are unix milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::crypto::Sealed;

/// A project: a named holder of one upstream provider key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    /// The provider key sent upstream for this project's keys.
    pub upstream_key: Sealed,
    /// Shown in place of the key: `sk-ab…wxyz`.
    pub upstream_key_hint: String,
    pub is_active: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub deactivated_at: Option<i64>,
}

/// A virtual key: a "token" of the management API and a LiteLLM "virtual
/// key" are this one record. The secret itself is never stored, only its
/// SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: Uuid,
    pub secret_hash: [u8; 32],
    /// Shown in place of the secret: `sk-abcd…wxyz`.
    pub hint: String,
    /// The project whose provider key the key's pass-through requests use;
    /// `None` for a key that reaches registered models only.
    pub project_id: Option<Uuid>,
    /// `key_alias`: unique among keys when set.
    pub alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// Model names the key may use; empty means every model.
    pub models: Vec<String>,
    /// Model names the key's requests may use in place of registered ones.
    pub model_aliases: BTreeMap<String, String>,
    pub expires_at: Option<i64>,
    pub is_active: bool,
    /// `None`: unlimited.
    pub max_requests: Option<u64>,
    /// `None`: unlimited.
    pub max_budget: Option<Budget>,
    /// Free-form JSON object, kept as text (the record encoding is binary).
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Rate limits, the budget's window and the soft budget.
    pub limits: Limits,
    /// Limits of the key's use of one model, by model name.
    pub model_limits: BTreeMap<String, ModelLimits>,
}

impl KeyRecord {
    /// The record of the master key (`Store::sync_master_key`).
    pub fn is_master(&self) -> bool {
        self.metadata == super::admin::MASTER_KEY_METADATA
    }
}

/// The usage ledger of one key, apart from the key so that accounting never
/// rewrites the key record.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Requests served and reported by the workers.
    pub requests: u64,
    /// Quota handed out to workers (served or still leased). Never more than
    /// `max_requests`; a crash can leave it above `requests` (lost leases).
    pub reserved: u64,
    pub last_used_at: Option<i64>,
    /// What the key's requests cost.
    pub spend: Money,
}

/// An amount of US dollars, counted in picodollars so that sums are exact
/// whatever order the workers' reports arrive in. (The largest amount, about
/// 18 million dollars, is far beyond any one key's or user's budget.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Money(pub u64);

const PICO_PER_DOLLAR: f64 = 1e12;

impl Money {
    /// Dollars (as the APIs speak them) to the nearest picodollar; negative
    /// and non-finite amounts are zero.
    pub fn from_dollars(dollars: f64) -> Self {
        if dollars.is_finite() && dollars > 0.0 {
            Money((dollars * PICO_PER_DOLLAR).round() as u64)
        } else {
            Money(0)
        }
    }

    pub fn dollars(self) -> f64 {
        self.0 as f64 / PICO_PER_DOLLAR
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }
}

/// A spending limit: the dollar figure as given, and its exact amount.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub dollars: f64,
    pub amount: Money,
}

impl Budget {
    pub fn new(dollars: f64) -> Self {
        Budget {
            dollars,
            amount: Money::from_dollars(dollars),
        }
    }

    /// At or over the limit: no more requests.
    pub fn is_spent(&self, spend: Money) -> bool {
        spend >= self.amount
    }
}

/// What a user may do through the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserRole {
    ProxyAdmin,
    ProxyAdminViewer,
    InternalUser,
    InternalUserViewer,
}

impl UserRole {
    pub const NAMES: [&'static str; 4] = [
        "proxy_admin",
        "proxy_admin_viewer",
        "internal_user",
        "internal_user_viewer",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::ProxyAdmin => Self::NAMES[0],
            UserRole::ProxyAdminViewer => Self::NAMES[1],
            UserRole::InternalUser => Self::NAMES[2],
            UserRole::InternalUserViewer => Self::NAMES[3],
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            UserRole::ProxyAdmin,
            UserRole::ProxyAdminViewer,
            UserRole::InternalUser,
            UserRole::InternalUserViewer,
        ]
        .into_iter()
        .find(|role| role.as_str() == name)
    }
}

/// The limits a key, a user and a team may each have besides `max_budget`
/// (LiteLLM's field names). A request must pass all of its key's, its
/// user's and its team's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests per minute (a fixed window of the wall clock's minute).
    pub rpm_limit: Option<u64>,
    /// Tokens (prompt and completion) per minute.
    pub tpm_limit: Option<u64>,
    /// Requests in flight at once.
    pub max_parallel_requests: Option<u64>,
    /// The budget's window: spend starts again from zero at its end.
    pub budget_duration: Option<BudgetWindow>,
    /// Spend past which an alert is raised; requests go on.
    pub soft_budget: Option<Budget>,
}

impl Limits {
    /// Whether any limit is set that the request path enforces per request.
    pub fn limits_requests(&self) -> bool {
        self.rpm_limit.is_some() || self.tpm_limit.is_some() || self.max_parallel_requests.is_some()
    }
}

/// Limits of a key's use of one model (`model_rpm_limit`,
/// `model_tpm_limit`, `model_max_budget`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelLimits {
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_budget: Option<Budget>,
    pub budget_duration: Option<BudgetWindow>,
}

/// How long a budget's window lasts: `30s`, `1h`, `1d`, `30d`, `1mo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetWindow {
    Seconds(u64),
    /// Calendar months (UTC).
    Months(u32),
}

/// A team: keys and users belong to it; its models, limits and budget
/// apply to every request of its keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Team {
    pub team_id: String,
    pub team_alias: Option<String>,
    /// Model names the team's keys may use; empty means every model.
    pub models: Vec<String>,
    pub members: Vec<TeamMember>,
    pub max_budget: Option<Budget>,
    pub limits: Limits,
    /// A blocked team's keys are refused.
    pub blocked: bool,
    /// Free-form JSON object, as text.
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamMember {
    pub user_id: String,
    pub role: TeamRole,
}

/// A member's role in a team: an admin manages the team's keys and members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeamRole {
    Admin,
    User,
}

impl TeamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Admin => "admin",
            TeamRole::User => "user",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "admin" => Some(TeamRole::Admin),
            "user" => Some(TeamRole::User),
            _ => None,
        }
    }
}

/// A person (or service) that owns keys; its spend is the sum of its keys'.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    /// Unique among users when set.
    pub user_email: Option<String>,
    pub user_role: UserRole,
    pub user_alias: Option<String>,
    pub teams: Vec<String>,
    pub max_budget: Option<Budget>,
    /// Model names the user's keys may use; empty means every model.
    pub models: Vec<String>,
    /// Free-form JSON object, as text.
    pub metadata: String,
    /// For the built-in sign-in page; a PHC-format password hash.
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub limits: Limits,
}

/// One deployment of a model: where requests for `model_name` may go. Several
/// deployments may share a `model_name`; requests are balanced across them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub model_name: String,
    /// `litellm_params` as a JSON object, without its secrets.
    pub params: String,
    /// The secret `litellm_params` (`api_key` and the like) as a JSON
    /// object, sealed as a whole.
    pub secrets: Option<Sealed>,
    /// `model_info` as a JSON object, without `id` and the timestamps.
    pub model_info: String,
    /// Defined in the server's config file (`model_list`), not through the
    /// API: replaced at every start, not changed through the API.
    pub from_config: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Named provider settings (an API key, a base URL, ...) that deployments
/// refer to by name instead of repeating them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub name: String,
    /// `credential_info` as a JSON object (not secret).
    pub info: String,
    /// `credential_values` as a JSON object, sealed as a whole.
    pub values: Sealed,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `sk-abcd…wxyz`: enough to recognise a secret, not enough to use it.
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 12 {
        let head: String = chars.iter().take(3).collect();
        return format!("{head}…");
    }
    let head: String = chars[..7].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn hints_hide_the_middle() {
        assert_eq!(hint("sk-abcdefghijklmnopqrstuvwxyz"), "sk-abcd…wxyz");
        assert_eq!(hint("short"), "sho…");
    }
}
