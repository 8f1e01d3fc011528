//! Phase 1, authenticate: the client's virtual key from `Authorization`.

use super::error::ProxyError;
use crate::http::RequestHead;
use crate::server::worker::Worker;

/// The key in `Authorization: Bearer <key>`, if the header has that shape.
pub fn bearer_key(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, key) = value.split_at(value.iter().position(|&b| b == b' ')?);
    let key = key.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !key.is_empty()).then_some(key)
}

pub fn authenticate(worker: &Worker, head: &RequestHead, buf: &[u8]) -> Result<(), ProxyError> {
    let value = head
        .header(buf, "authorization")
        .ok_or(ProxyError::MissingKey)?;
    let key = bearer_key(value).ok_or(ProxyError::MissingKey)?;
    let known = worker.settings.client_keys.iter().fold(false, |found, k| {
        found | constant_time_eq(k.as_bytes(), key)
    });
    if known {
        Ok(())
    } else {
        Err(ProxyError::InvalidKey)
    }
}

/// Compares without an early exit, so timing does not reveal a key prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_key(b"Bearer sk-1"), Some(&b"sk-1"[..]));
        assert_eq!(bearer_key(b"bearer   sk-1 "), Some(&b"sk-1"[..]));
        assert_eq!(bearer_key(b"Basic abc"), None);
        assert_eq!(bearer_key(b"Bearer "), None);
        assert_eq!(bearer_key(b"sk-1"), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
