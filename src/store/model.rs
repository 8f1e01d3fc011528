//! The records kept in the store. Timestamps are unix milliseconds.

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

/// A virtual key (a "token" in the management API). The secret itself is
/// never stored, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: Uuid,
    pub secret_hash: [u8; 32],
    /// Shown in place of the secret: `sk-abcd…wxyz`.
    pub hint: String,
    pub project_id: Uuid,
    pub alias: Option<String>,
    pub expires_at: Option<i64>,
    pub is_active: bool,
    /// `None`: unlimited.
    pub max_requests: Option<u64>,
    /// Free-form JSON object, kept as text (the record encoding is binary).
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
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
