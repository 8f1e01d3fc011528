//! Buffer-owning reads and response serialization shared by every server in
//! the crate (the proxy, the mock upstream).

use std::io;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, CancelHandle, CancelableAsyncReadRent};

/// Spare room kept free in a read buffer before each read.
const MIN_SPARE: usize = 4096;

/// Makes room after the bytes `buf` holds and returns where the next read
/// goes: at least `MIN_SPARE` bytes, at most `max_read`.
fn spare_window(buf: &mut Vec<u8>, max_read: usize) -> std::ops::Range<usize> {
    let len = buf.len();
    if buf.capacity() - len < MIN_SPARE {
        buf.reserve(MIN_SPARE);
    }
    len..len + max_read.min(buf.capacity() - len)
}

/// Reads once, appending at most `max_read` bytes to the end of `buf`.
pub async fn read_append<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    max_read: usize,
) -> (io::Result<usize>, Vec<u8>) {
    let window = spare_window(&mut buf, max_read);
    let (result, slice) = stream.read(buf.slice_mut(window)).await;
    (result, slice.into_inner())
}

/// `read_append` that `handle`'s canceller can stop; a cancelled read
/// returns its buffer with an error (or with data, if it won the race).
pub async fn read_append_cancelable<S: CancelableAsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    max_read: usize,
    handle: CancelHandle,
) -> (io::Result<usize>, Vec<u8>) {
    let window = spare_window(&mut buf, max_read);
    let (result, slice) = stream.cancelable_read(buf.slice_mut(window), handle).await;
    (result, slice.into_inner())
}

/// Reads once into the whole of `buf` (cleared first), at most `max_read` bytes.
pub async fn read_fresh<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    max_read: usize,
) -> (io::Result<usize>, Vec<u8>) {
    buf.clear();
    read_append(stream, buf, max_read).await
}

/// Appends a status line; the reason phrase is the canonical one.
pub fn status_line(out: &mut Vec<u8>, status: http::StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, status.as_u16().into());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[inline]
pub fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[inline]
pub fn header_u64(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_u64(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` in decimal. Runs for every response, so it goes without
/// the `fmt` machinery, two digits per division.
pub fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    const PAIRS: [u8; 200] = {
        let mut pairs = [0u8; 200];
        let mut i = 0;
        while i < 100 {
            pairs[2 * i] = b'0' + (i / 10) as u8;
            pairs[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        pairs
    };
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + value as u8;
    }
    out.extend_from_slice(&digits[at..]);
}

/// How a locally generated response goes out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reply {
    /// Announce `Connection: close`: the connection ends after this response.
    pub close: bool,
    /// Answering `HEAD`: the same head as for `GET` (its `Content-Length`
    /// included), no body, so a keep-alive connection stays in step.
    pub head_only: bool,
}

impl Reply {
    pub const KEEP_ALIVE: Reply = Reply {
        close: false,
        head_only: false,
    };
    pub const CLOSE: Reply = Reply {
        close: true,
        head_only: false,
    };
}

/// Serializes a complete JSON response with `Content-Length` framing.
pub fn json_response(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    body: &[u8],
    extra: &[(&str, &[u8])],
    reply: Reply,
) {
    body_response(out, status, b"application/json", body, extra, reply);
}

/// A whole response: status, `Content-Type`, `Content-Length`, the
/// `extra` fields, and the body (left out for HEAD).
pub fn body_response(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    content_type: &[u8],
    body: &[u8],
    extra: &[(&str, &[u8])],
    reply: Reply,
) {
    status_line(out, status);
    header(out, "Content-Type", content_type);
    header_u64(out, "Content-Length", body.len() as u64);
    for (name, value) in extra {
        header(out, name, value);
    }
    if reply.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !reply.head_only {
        out.extend_from_slice(body);
    }
}

/// Current wall-clock time in unix nanoseconds, for the timing headers.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for value in [
            0,
            7,
            10,
            99,
            100,
            101,
            4096,
            1_763_936_000_123_456_789,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_u64(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
        let mut out = Vec::new();
        status_line(&mut out, http::StatusCode::NOT_FOUND);
        assert_eq!(out, b"HTTP/1.1 404 Not Found\r\n");
    }
}
