//! Passwords for the built-in sign-in page: Argon2id hashes as PHC strings,
//! the form in which a user's password is stored. Hashing takes tens of
//! milliseconds of CPU on purpose, so both calls are made on the blocking
//! pool, never on a worker thread (`api::hash_password` for hashing).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::StoreError;
use super::crypto::fill_random;

/// Longest password accepted (hashing cost grows with it).
const MAX_LEN: usize = 1024;

/// Why a password was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Longer than `MAX_LEN` bytes: the caller's mistake (the message is
    /// about the `password` field).
    #[error("must be at most {MAX_LEN} bytes")]
    TooLong,
    /// No salt: the system's random generator failed.
    #[error(transparent)]
    Random(#[from] StoreError),
    /// Argon2 refused the salt or the hash (the whole message).
    #[error("{0}")]
    Argon2(String),
}

/// The Argon2id PHC string of `password` (a random 16-byte salt).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    if password.len() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| PasswordError::Argon2(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Argon2(format!("password hash: {e}")))
}

/// Whether `password` matches the PHC string `hash`. With no hash (an
/// unknown user, or one without a password) a hash is still checked, so
/// the answer takes as long either way.
pub fn verify_blocking(hash: Option<&str>, password: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    let (hash, real) = match hash {
        Some(hash) => (hash, true),
        None => (DUMMY_HASH, false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matches && real
}

/// Argon2id (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0m0Qc4S2VSFNBoNTvBuNFSaSldEXG3X7wOxnbXxhpvk";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_blocking("correct horse").unwrap();
        let b = hash_blocking("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_blocking(Some(&a), "correct horse"));
        assert!(!verify_blocking(Some(&a), "correct horsE"));
        assert!(!verify_blocking(None, "correct horse"));
        assert!(!verify_blocking(Some("not a hash"), "x"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
