//! The downstream connection: a client's socket and its buffers, and its
//! I/O. Reading the next request head (parking idle connections without a
//! buffer), bodies read whole or skipped, answers written with a deadline.
//! The server's connection loop and every handler use it.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Canceller};
use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::error::ProxyError;
use crate::http::io::{read_append, read_append_cancelable};
use crate::http::{BodyTracker, ChunkedDecoder, Framing, Parsed, RequestHead};
use crate::worker::{BodyBudget, Reservation, Worker};

/// Largest single read from a client.
const READ_SIZE: usize = 16 << 10;
/// First buffer of a chunked body held whole; it then grows by half.
const MIN_CHUNKED_ROOM: usize = 64 << 10;
/// The copies of a held body that live at once, all reserved from the
/// worker's budget: its own buffer, and the upstream write buffer it goes
/// out in behind the request head (one buffer holds the whole request, so
/// that a stale pooled connection can be retried with it). Both are freed
/// together: by the routed path once the request is out, otherwise once the
/// answer has been relayed.
const HELD_COPIES: usize = 2;
/// Read buffer kept by an idle keep-alive connection (an io_uring read
/// owns its buffer while it waits): small, so that many idle connections
/// stay cheap. It grows while a request needs more.
const IDLE_READ_SIZE: usize = 4 << 10;
/// Initial room for the heads and small bodies a request writes.
pub const OUT_SIZE: usize = 4 << 10;
/// How long a keep-alive connection waits with its read buffer in the
/// kernel's hands, once its worker has many connections
/// (`park_from_connections`). After that its read is cancelled, the buffer
/// freed, and it waits for readability instead, holding no buffer at all:
/// busy connections never get here, and thousands of idle ones cost little.
/// (Below the threshold the read is not made cancellable: that costs
/// about 0.15 µs a request, and a few idle buffers cost little memory.)
const PARK_AFTER: Duration = Duration::from_millis(500);

pub struct ClientConn {
    pub stream: TcpStream,
    /// Bytes received and not yet consumed. While a request is served its
    /// head sits at the front; body bytes follow it.
    pub buf: Vec<u8>,
    /// Serialization buffer for outgoing heads and small bodies.
    pub out: Vec<u8>,
    /// Buffer that carries response bodies from the upstream to the client.
    pub relay: Vec<u8>,
    /// Longest a write may wait for the client to read.
    write_timeout: Duration,
    /// Cancels the read of an idle connection to take its buffer back;
    /// kept for the connection's life so a request costs no allocation.
    /// Made on first use: connections of a worker below the parking
    /// threshold never need one.
    idle_read: Option<Canceller>,
}

impl ClientConn {
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(IDLE_READ_SIZE),
            out: Vec::new(),
            relay: Vec::new(),
            write_timeout,
            idle_read: None,
        }
    }

    /// Writes `out` to the client; `false` if the client is gone or stopped
    /// reading.
    pub async fn send_out(&mut self) -> bool {
        self.send_out_since(Instant::now()).await
    }

    /// `send_out` with the write timeout counted from `since`, a clock
    /// reading taken a moment ago, so that no new one is needed.
    pub async fn send_out_since(&mut self, since: Instant) -> bool {
        let out = std::mem::take(&mut self.out);
        let write = self.stream.write_all(out);
        let written = match since.checked_add(self.write_timeout) {
            Some(deadline) => monoio::time::timeout_at(deadline, write).await,
            None => Ok(write.await),
        };
        match written {
            Ok((result, mut out)) => {
                out.clear();
                self.out = out;
                result.is_ok()
            }
            Err(_) => false,
        }
    }

    /// Reads this request's whole body (for requests handled locally),
    /// up to `limit` bytes, and removes it from the buffer so that the
    /// connection can go on to the next request.
    pub async fn read_body(
        &mut self,
        head: &RequestHead,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, ProxyError> {
        if let Framing::Length(length) = head.framing
            && length > limit as u64
        {
            return Err(ProxyError::BodyTooLarge(limit as u64));
        }
        let mut body = Vec::new();
        let mut decoder = ChunkedDecoder::new();
        let mut scanned = head.len;
        let mut asked_to_continue = false;
        loop {
            match head.framing {
                Framing::Empty | Framing::UntilClose => return Ok(body),
                Framing::Length(length) => {
                    let end = head.len + length as usize;
                    if self.buf.len() >= end {
                        body.extend_from_slice(&self.buf[head.len..end]);
                        self.buf.drain(head.len..end);
                        return Ok(body);
                    }
                }
                Framing::Chunked => {
                    let fed = decoder.feed(&self.buf[scanned..], |data| {
                        body.extend_from_slice(data);
                    });
                    let fed = fed.map_err(|e| {
                        ProxyError::BadRequest(format!("invalid chunked request body: {e}"))
                    })?;
                    if let Some(end) = fed {
                        self.buf.drain(head.len..scanned + end);
                        return Ok(body);
                    }
                    scanned = self.buf.len();
                    if body.len() > limit {
                        return Err(ProxyError::BodyTooLarge(limit as u64));
                    }
                }
            }
            if head.expect_continue && !asked_to_continue {
                asked_to_continue = true;
                let (result, _) = self
                    .stream
                    .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                    .await;
                result.map_err(|_| ProxyError::ClientGone)?;
            }
            let buf = std::mem::take(&mut self.buf);
            match monoio::time::timeout(timeout, read_append(&mut self.stream, buf, READ_SIZE))
                .await
            {
                Err(_) => return Err(ProxyError::ClientTimeout),
                Ok((Ok(n), buf)) if n > 0 => self.buf = buf,
                Ok((_, buf)) => {
                    self.buf = buf;
                    return Err(ProxyError::ClientGone);
                }
            }
        }
    }

    /// Reads this request's whole body into a buffer of its own, of exactly
    /// its `Content-Length` (plus `read.headroom`), after reserving that
    /// much of `budget` for each copy of it (`HELD_COPIES`); a chunked body
    /// grows its buffer and reservation as it arrives. The body is taken out of `self.buf`, which stays small.
    ///
    /// When the budget has no room (after a short wait) the request is
    /// refused with `ServerBusy`, but its body is still read and dropped,
    /// so that the client reads the refusal and may keep the connection.
    /// `body_done` tells whether the body is consumed either way: when it
    /// is not, the connection cannot be reused.
    pub async fn read_held_body<'w>(
        &mut self,
        budget: &'w BodyBudget,
        head: &RequestHead,
        read: &BodyRead,
        body_done: &mut bool,
    ) -> Result<HeldBody<'w>, ProxyError> {
        let mut done = false;
        let result = match head.framing {
            Framing::Empty | Framing::UntilClose => {
                done = true;
                Ok(HeldBody {
                    bytes: Vec::new(),
                    _reservation: budget.empty(),
                })
            }
            Framing::Length(length) => {
                self.read_length(budget, head, length, read, &mut done)
                    .await
            }
            Framing::Chunked => self.read_chunked(budget, head, read, &mut done).await,
        };
        if !done {
            // Part of the body may have been taken out of the buffer: what
            // is left must not be read as the start of one, or as the next
            // request. The connection closes.
            self.buf.truncate(head.len);
        }
        *body_done = done;
        result
    }

    async fn read_length<'w>(
        &mut self,
        budget: &'w BodyBudget,
        head: &RequestHead,
        length: u64,
        read: &BodyRead,
        done: &mut bool,
    ) -> Result<HeldBody<'w>, ProxyError> {
        if length > read.limit as u64 {
            return Err(ProxyError::BodyTooLarge(read.limit as u64));
        }
        let length = length as usize;
        // A body the worker could never hold: waiting would not help.
        let most = budget.limit() / HELD_COPIES;
        if length > most {
            return Err(ProxyError::BodyTooLarge(most as u64));
        }
        let size = length + read.headroom.min(most - length);
        let reservation = match budget.reserve(size * HELD_COPIES).await {
            Ok(reservation) => reservation,
            Err(error) => {
                *done = self.skip_body(head, read).await;
                return Err(error);
            }
        };
        let mut bytes = Vec::with_capacity(size);
        let arrived = (self.buf.len() - head.len).min(length);
        bytes.extend_from_slice(&self.buf[head.len..head.len + arrived]);
        self.buf.drain(head.len..head.len + arrived);
        if bytes.len() < length {
            self.continue_if_expected(head).await?;
        }
        while bytes.len() < length {
            // Straight into the body's buffer, never past its end (what
            // follows it is the next request).
            let window = bytes.len()..length;
            let read_more = self.stream.read(bytes.slice_mut(window));
            match monoio::time::timeout(read.timeout, read_more).await {
                Err(_) => return Err(ProxyError::ClientTimeout),
                Ok((Ok(n), slice)) if n > 0 => bytes = slice.into_inner(),
                Ok(_) => return Err(ProxyError::ClientGone),
            }
        }
        *done = true;
        Ok(HeldBody {
            bytes,
            _reservation: reservation,
        })
    }

    async fn read_chunked<'w>(
        &mut self,
        budget: &'w BodyBudget,
        head: &RequestHead,
        read: &BodyRead,
        done: &mut bool,
    ) -> Result<HeldBody<'w>, ProxyError> {
        let mut reservation = budget.empty();
        let mut bytes = Vec::new();
        let mut decoder = ChunkedDecoder::new();
        let mut asked_to_continue = false;
        // Once refused, the rest of the body is decoded and dropped.
        let mut refused = None;
        loop {
            // The payload in the buffer is at most as long as the buffer:
            // make room for that much before decoding it.
            let window = self.buf.len() - head.len;
            let needed = bytes.len() + window + read.headroom;
            if refused.is_none() && window > 0 && needed > bytes.capacity() {
                let most = budget.limit() / HELD_COPIES;
                if needed > most {
                    return Err(ProxyError::BodyTooLarge(most as u64));
                }
                let grown = (bytes.capacity() + bytes.capacity() / 2)
                    .max(MIN_CHUNKED_ROOM)
                    .min(most)
                    .max(needed);
                match reservation.grow_to(grown * HELD_COPIES).await {
                    Ok(()) => bytes.reserve_exact(grown - bytes.len()),
                    // The client waits for `100 Continue` to send the body.
                    Err(error) if head.expect_continue && !asked_to_continue => {
                        return Err(error);
                    }
                    Err(error) => {
                        refused = Some(error);
                        bytes = Vec::new();
                        reservation = budget.empty();
                    }
                }
            }
            let keep = refused.is_none();
            let fed = decoder.feed(&self.buf[head.len..], |data| {
                if keep {
                    bytes.extend_from_slice(data);
                }
            });
            let fed = fed.map_err(|e| {
                ProxyError::BadRequest(format!("invalid chunked request body: {e}"))
            })?;
            if let Some(end) = fed {
                self.buf.drain(head.len..head.len + end);
                *done = true;
                return match refused {
                    Some(error) => Err(error),
                    None => Ok(HeldBody {
                        bytes,
                        _reservation: reservation,
                    }),
                };
            }
            self.buf.truncate(head.len);
            if decoder.payload_len() > read.limit as u64 {
                return Err(ProxyError::BodyTooLarge(read.limit as u64));
            }
            if !asked_to_continue {
                asked_to_continue = true;
                self.continue_if_expected(head).await?;
            }
            self.read_more(read.timeout).await?;
        }
    }

    /// Reads and drops the body of a request refused before its body was
    /// held; `true` once all of it is consumed, `false` if the connection
    /// must close instead (client gone or too slow, body too large, or a
    /// client still waiting for `100 Continue`: it has not sent the body).
    async fn skip_body(&mut self, head: &RequestHead, read: &BodyRead) -> bool {
        if self.buf.len() < head.len {
            return false;
        }
        let mut tracker = BodyTracker::new(head.framing);
        loop {
            let Ok(taken) = tracker.advance(&self.buf[head.len..]) else {
                return false;
            };
            self.buf.drain(head.len..head.len + taken);
            if tracker.is_done() {
                return true;
            }
            if head.expect_continue || tracker.chunked_payload() > read.limit as u64 {
                return false;
            }
            let buf = std::mem::take(&mut self.buf);
            let max_read = tracker.read_limit(READ_SIZE);
            match monoio::time::timeout(read.timeout, read_append(&mut self.stream, buf, max_read))
                .await
            {
                Ok((Ok(n), buf)) if n > 0 => self.buf = buf,
                Ok((_, buf)) => {
                    self.buf = buf;
                    return false;
                }
                Err(_) => return false,
            }
        }
    }

    /// Sends `100 Continue` if the client asked for it.
    async fn continue_if_expected(&mut self, head: &RequestHead) -> Result<(), ProxyError> {
        if !head.expect_continue {
            return Ok(());
        }
        let (result, _) = self
            .stream
            .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
            .await;
        result.map(drop).map_err(|_| ProxyError::ClientGone)
    }

    /// Appends one read from the client to `self.buf`.
    async fn read_more(&mut self, timeout: Duration) -> Result<(), ProxyError> {
        let buf = std::mem::take(&mut self.buf);
        match monoio::time::timeout(timeout, read_append(&mut self.stream, buf, READ_SIZE)).await {
            Err(_) => Err(ProxyError::ClientTimeout),
            Ok((Ok(n), buf)) if n > 0 => {
                self.buf = buf;
                Ok(())
            }
            Ok((_, buf)) => {
                self.buf = buf;
                Err(ProxyError::ClientGone)
            }
        }
    }

    /// Drops this request's body from the buffer if all of it has arrived,
    /// so the connection can serve the next request without reading it.
    pub fn discard_buffered_body(&mut self, head: &RequestHead) -> bool {
        if self.buf.len() < head.len {
            // A failed read took the buffer with it: nothing left to reuse.
            return false;
        }
        let mut tracker = BodyTracker::new(head.framing);
        let Ok(taken) = tracker.advance(&self.buf[head.len..]) else {
            return false;
        };
        if !tracker.is_done() {
            return false;
        }
        self.buf.drain(head.len..head.len + taken);
        true
    }
}

/// How a body held whole is read.
pub struct BodyRead {
    /// Largest body accepted (`MAX_REQUEST_SIZE`).
    pub limit: usize,
    /// Room kept after the body, for a caller that rewrites it in place.
    pub headroom: usize,
    /// Longest wait for the next piece of the body.
    pub timeout: Duration,
}

/// A request body read whole, and the share of its worker's body budget it
/// holds until it is dropped.
pub struct HeldBody<'w> {
    bytes: Vec<u8>,
    _reservation: Reservation<'w>,
}

impl HeldBody<'_> {
    /// The body, for a caller that rewrites it in place: it may use the
    /// room reserved after it (`BodyRead::headroom`).
    pub fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

impl std::ops::Deref for HeldBody<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl ClientConn {
    /// Gives back what a request grew, before waiting for the next one:
    /// an idle connection keeps only a small read buffer. (The allocator's
    /// per-thread free lists make the next request's buffers cheap.)
    pub fn shed_buffers(&mut self) {
        self.out = Vec::new();
        self.relay = Vec::new();
        if self.buf.is_empty() && self.buf.capacity() > IDLE_READ_SIZE {
            self.buf = Vec::with_capacity(IDLE_READ_SIZE);
        }
    }
}

/// Waits for the next complete request head. `Ok(None)` means the
/// connection should close quietly (client left, idle timeout, draining).
pub async fn next_head(
    worker: &Worker,
    conn: &mut ClientConn,
    drained: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<RequestHead>, ProxyError> {
    let limits = &worker.settings.limits;
    if conn.buf.is_empty() {
        let got_bytes = if worker.connections.get() < limits.park_from_connections {
            wait_with_buffer(conn, limits.idle_timeout, drained).await
        } else {
            wait_for_bytes(conn, limits.idle_timeout, drained).await
        };
        if !got_bytes {
            return Ok(None);
        }
    }
    // Counted from the first incomplete parse: a head that arrived whole
    // (the usual case) costs no clock read.
    let mut deadline = None;
    loop {
        if let Parsed::Complete(head) = RequestHead::parse(&conn.buf)? {
            if head.len > limits.max_header_bytes {
                return Err(ProxyError::HeaderTooLarge(limits.max_header_bytes));
            }
            return Ok(Some(head));
        }
        if conn.buf.len() >= limits.max_header_bytes {
            return Err(ProxyError::HeaderTooLarge(limits.max_header_bytes));
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
        let buf = std::mem::take(&mut conn.buf);
        match monoio::time::timeout_at(deadline, read_append(&mut conn.stream, buf, READ_SIZE))
            .await
        {
            Err(_) => return Err(ProxyError::ClientTimeout),
            Ok((Ok(n), buf)) if n > 0 => conn.buf = buf,
            Ok(_) => return Ok(None),
        }
    }
}

/// Waits until the idle connection has bytes in `conn.buf`, keeping its
/// read buffer in the kernel's hands all along. `false` means close quietly
/// (client left, idle timeout, draining).
async fn wait_with_buffer(
    conn: &mut ClientConn,
    idle_timeout: Duration,
    drained: Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let buf = std::mem::take(&mut conn.buf);
    let read = monoio::time::timeout(idle_timeout, read_append(&mut conn.stream, buf, READ_SIZE));
    // The read first: most wake-ups are its completion, and then the drain
    // signal need not be polled.
    monoio::select! {
        biased;
        result = read => match result {
            Ok((Ok(n), buf)) if n > 0 => {
                conn.buf = buf;
                true
            }
            _ => false,
        },
        _ = drained => false,
    }
}

/// Waits until the idle connection has bytes in `conn.buf`, or has gone
/// parked and become readable: then `conn.buf` is empty and the header read
/// brings them. `false` means close quietly (client left, idle timeout,
/// draining).
async fn wait_for_bytes(
    conn: &mut ClientConn,
    idle_timeout: Duration,
    mut drained: Pin<&mut impl Future<Output = ()>>,
) -> bool {
    if let Some(got_bytes) = read_unless_idle(conn, idle_timeout, drained.as_mut()).await {
        return got_bytes;
    }
    let readable = conn.stream.readable(false);
    monoio::select! {
        biased;
        result = monoio::time::timeout(idle_timeout.saturating_sub(PARK_AFTER), readable) => {
            matches!(result, Ok(Ok(())))
        },
        _ = drained => false,
    }
}

/// Reads into the connection's buffer; `None` if nothing came for
/// `PARK_AFTER`, in which case the read was cancelled and the buffer freed.
async fn read_unless_idle(
    conn: &mut ClientConn,
    idle_timeout: Duration,
    drained: Pin<&mut impl Future<Output = ()>>,
) -> Option<bool> {
    let buf = std::mem::take(&mut conn.buf);
    let handle = conn.idle_read.get_or_insert_with(Canceller::new).handle();
    let mut read = pin!(read_append_cancelable(
        &mut conn.stream,
        buf,
        READ_SIZE,
        handle
    ));
    // The read first: most wake-ups are its completion, and then neither
    // the timer nor the drain signal need be polled.
    monoio::select! {
        biased;
        (result, buf) = read.as_mut() => {
            conn.buf = buf;
            return Some(matches!(result, Ok(n) if n > 0));
        },
        _ = drained => return Some(false),
        _ = monoio::time::sleep(PARK_AFTER.min(idle_timeout)) => {},
    }
    // Take the buffer back; bytes that raced the cancel are kept.
    conn.idle_read = conn.idle_read.take().map(Canceller::cancel);
    match read.await {
        (Ok(n), buf) => {
            conn.buf = buf;
            Some(n > 0)
        }
        (Err(_), _) => None,
    }
}
