//! The client connection loop: read a head, dispatch it, repeat while the
//! connection is kept alive. Pipelined requests are served in order.

use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::io::Canceller;
use monoio::net::TcpStream;
use monoio::time::Instant;

use super::worker::{ConnectionGuard, Worker};
use super::{health, metrics};
use crate::http::io::{Reply, read_append, read_append_cancelable};
use crate::http::{BodyTracker, ChunkedDecoder, Framing, Parsed, RequestHead};
use crate::proxy::error::ProxyError;
use crate::{login, manage, proxy};

/// Largest single read from a client.
const READ_SIZE: usize = 16 << 10;
/// Read buffer kept by an idle keep-alive connection (an io_uring read
/// owns its buffer while it waits): small, so that many idle connections
/// stay cheap. It grows while a request needs more.
const IDLE_READ_SIZE: usize = 4 << 10;
/// Initial room for the heads and small bodies a request writes.
const OUT_SIZE: usize = 4 << 10;
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
    fn new(stream: TcpStream, write_timeout: Duration) -> Self {
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

pub async fn serve(worker: Rc<Worker>, stream: TcpStream) {
    let _guard = ConnectionGuard::new(&worker);
    let _ = stream.set_nodelay(true);
    let mut conn = ClientConn::new(stream, worker.settings.limits.write_timeout);
    let drain = worker.drain.clone();
    let mut drained = pin!(drain.wait());
    loop {
        let head = match next_head(&worker, &mut conn, drained.as_mut()).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(error) => {
                let request_id = proxy::new_request_id();
                error.render(&mut conn.out, &request_id, Reply::CLOSE);
                conn.send_out().await;
                tracing::debug!(%error, request_id, "rejected request head");
                return;
            }
        };
        conn.out.reserve(OUT_SIZE);
        // The handlers' futures are boxed: inline, the largest of them
        // would set the size of every connection's task, idle ones included.
        let keep_alive = match Handler::for_request(&worker, &head, &conn.buf) {
            Handler::Proxy => Box::pin(proxy::handle(&worker, &mut conn, &head)).await,
            Handler::Manage => Box::pin(manage::handle(&worker, &mut conn, &head)).await,
            Handler::Local => Box::pin(health::handle(&worker, &mut conn, &head)).await,
            Handler::Metrics => Box::pin(metrics::handle(&worker, &mut conn, &head)).await,
            Handler::Login => Box::pin(login::handle(&worker, &mut conn, &head)).await,
        };
        if !keep_alive || worker.draining() {
            return;
        }
        // The handler consumed the body; what follows the head is the next request.
        conn.buf.drain(..head.len.min(conn.buf.len()));
        conn.shed_buffers();
    }
}

/// Who answers a request, by its path.
enum Handler {
    Proxy,
    Manage,
    Local,
    Metrics,
    Login,
}

impl Handler {
    fn for_request(worker: &Worker, head: &RequestHead, buf: &[u8]) -> Self {
        let path = head.path(buf);
        if path.starts_with(b"/v1/") {
            // `/v1/models` lists the registered models, if there are any,
            // and always for the master key; otherwise it is the upstream's
            // list, passed through.
            let local = path == b"/v1/model/info"
                || (path == b"/v1/models"
                    && (worker.store.has_deployments().unwrap_or(false)
                        || manage::is_master(worker, head, buf)));
            return if local {
                Handler::Manage
            } else {
                Handler::Proxy
            };
        }
        if path == b"/manage" || path.starts_with(b"/manage/") || manage::litellm::owns(path) {
            Handler::Manage
        } else if matches!(
            path,
            b"/chat/completions" | b"/completions" | b"/embeddings"
        ) {
            // The OpenAI endpoints without `/v1`, as LiteLLM serves them.
            Handler::Proxy
        } else if path == b"/metrics" && worker.settings.metrics.enabled {
            Handler::Metrics
        } else if login::owns(path) {
            Handler::Login
        } else {
            Handler::Local
        }
    }
}

impl ClientConn {
    /// Gives back what a request grew, before waiting for the next one:
    /// an idle connection keeps only a small read buffer. (The allocator's
    /// per-thread free lists make the next request's buffers cheap.)
    fn shed_buffers(&mut self) {
        self.out = Vec::new();
        self.relay = Vec::new();
        if self.buf.is_empty() && self.buf.capacity() > IDLE_READ_SIZE {
            self.buf = Vec::with_capacity(IDLE_READ_SIZE);
        }
    }
}

/// Waits for the next complete request head. `Ok(None)` means the
/// connection should close quietly (client left, idle timeout, draining).
async fn next_head(
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
