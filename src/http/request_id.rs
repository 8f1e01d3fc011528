//! A request's ID: the client's `X-Request-ID` when it is sane, otherwise a
//! fresh UUIDv4. Every answer carries it, and so do the logs, the metrics'
//! exemplars and the request's event.

use super::RequestHead;

/// Longest client `X-Request-ID` that is passed on.
const MAX_REQUEST_ID: usize = 128;

/// A request's ID, held inline (no allocation on the request path): the
/// client's `X-Request-ID` when it is sane, otherwise a fresh UUIDv4.
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_REQUEST_ID],
}

impl RequestId {
    pub fn of(head: &RequestHead, buf: &[u8]) -> Self {
        match head.header(buf, "x-request-id") {
            Some(value)
                if !value.is_empty()
                    && value.len() <= MAX_REQUEST_ID
                    && value.iter().all(|b| b.is_ascii_graphic()) =>
            {
                let mut bytes = [0; MAX_REQUEST_ID];
                bytes[..value.len()].copy_from_slice(value);
                Self {
                    len: value.len() as u8,
                    bytes,
                }
            }
            _ => Self::random(),
        }
    }

    /// A random UUIDv4 from the thread's fast generator (no syscall).
    pub fn random() -> Self {
        let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut bytes = [0; MAX_REQUEST_ID];
        let len = uuid.hyphenated().encode_lower(&mut bytes).len();
        Self {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored, so this never fails.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

/// The client's `X-Request-ID` when it is sane, otherwise a fresh one.
pub fn request_id(head: &RequestHead, buf: &[u8]) -> String {
    RequestId::of(head, buf).as_str().to_owned()
}

/// A random UUIDv4 from the thread's fast generator (no syscall).
pub fn new_request_id() -> String {
    RequestId::random().as_str().to_owned()
}
