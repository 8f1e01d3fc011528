//! Secrets: virtual-key generation and hashing, and AES-256-GCM sealing of
//! provider keys at rest (`ENCRYPTION_KEY`). All from `ring`, which TLS
//! already links in.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A provider secret as stored: plain, or sealed with the encryption key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Sealed {
    Plain(String),
    Aes256Gcm {
        nonce: [u8; NONCE_LEN],
        ciphertext: Vec<u8>,
    },
}

/// The at-rest cipher, from `ENCRYPTION_KEY` (32 bytes, base64 or hex).
pub struct Cipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(AES-256-GCM)")
    }
}

impl Cipher {
    pub fn from_env_value(value: &str) -> Result<Self, StoreError> {
        let value = value.trim();
        let bytes = match decode_hex32(value) {
            Some(bytes) => Some(bytes.to_vec()),
            None => STANDARD.decode(value).ok(),
        };
        let key = bytes
            .filter(|b| b.len() == 32)
            .and_then(|b| UnboundKey::new(&AES_256_GCM, &b).ok())
            .ok_or(StoreError::BadEncryptionKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    fn seal(&self, plaintext: &str) -> Result<Sealed, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut ciphertext = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut ciphertext,
            )
            .map_err(|_| StoreError::Crypto)?;
        Ok(Sealed::Aes256Gcm { nonce, ciphertext })
    }

    fn open(&self, nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> Result<String, StoreError> {
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::empty(), &mut buf)
            .map_err(|_| StoreError::WrongEncryptionKey)?;
        String::from_utf8(plain.to_vec()).map_err(|_| StoreError::WrongEncryptionKey)
    }
}

/// Seals with the cipher when there is one.
pub fn seal(cipher: Option<&Cipher>, plaintext: &str) -> Result<Sealed, StoreError> {
    match cipher {
        Some(cipher) => cipher.seal(plaintext),
        None => Ok(Sealed::Plain(plaintext.to_string())),
    }
}

pub fn unseal(cipher: Option<&Cipher>, sealed: &Sealed) -> Result<String, StoreError> {
    match (sealed, cipher) {
        (Sealed::Plain(text), _) => Ok(text.clone()),
        (Sealed::Aes256Gcm { nonce, ciphertext }, Some(cipher)) => cipher.open(nonce, ciphertext),
        (Sealed::Aes256Gcm { .. }, None) => Err(StoreError::EncryptionKeyNeeded),
    }
}

/// 32 bytes written as 64 hex digits (a SHA-256 digest, a key).
pub fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

pub fn fill_random(buf: &mut [u8]) -> Result<(), StoreError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| StoreError::Crypto)
}

/// A new virtual key: `sk-` and 32 random bytes, URL-safe base64 (256 bits).
pub fn new_secret() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(format!("sk-{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// A random version-4 UUID from the system's secure generator.
pub fn new_id() -> Result<uuid::Uuid, StoreError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// Whether `presented` is the secret `expected`, in constant time: digests
/// have one length and are compared without an early exit, so timing
/// reveals neither the secret's length nor a matching prefix.
pub fn same_secret(expected: &[u8], presented: &[u8]) -> bool {
    let (expected, presented) = (sha256(expected), sha256(presented));
    let difference = expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    difference == 0
}

pub fn sha256(secret: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_roundtrip_and_wrong_key() {
        let cipher = Cipher::from_env_value(&"11".repeat(32)).unwrap();
        let sealed = seal(Some(&cipher), "sk-upstream").unwrap();
        assert!(matches!(sealed, Sealed::Aes256Gcm { .. }));
        assert_eq!(unseal(Some(&cipher), &sealed).unwrap(), "sk-upstream");
        let other = Cipher::from_env_value(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(matches!(
            unseal(Some(&other), &sealed),
            Err(StoreError::WrongEncryptionKey)
        ));
        assert!(matches!(
            unseal(None, &sealed),
            Err(StoreError::EncryptionKeyNeeded)
        ));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(Cipher::from_env_value("short").is_err());
        assert!(Cipher::from_env_value(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert!(a.starts_with("sk-") && a.len() == 46, "{a}");
        assert_ne!(a, b);
    }
}
