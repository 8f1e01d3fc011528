//! Phase 3, forward: send the request upstream (head, then the body as it
//! arrives) and wait for the response head.

use std::pin::pin;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::time::Instant;

use super::Exchange;
use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http::io::{read_append, unix_nanos};
use crate::http::rewrite::{Upstream, write_request_head};
use crate::http::{BodyTracker, Parsed, RequestHead, ResponseHead};
use crate::providers::Provider;
use crate::upstream::{self, Slot, UpstreamStream};
use crate::worker::Worker;

/// Largest single read of a request body from the client.
const BODY_READ_SIZE: usize = 64 << 10;
/// Largest response head accepted from an upstream.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
const RELAY_BUFFER: usize = 16 << 10;
/// Read size while watching the client for a hang-up.
const CLIENT_PEEK: usize = 4096;
/// How long the upstream may take to start answering before the client is
/// watched for a hang-up (see `await_response_head`).
const CLIENT_WATCH_DELAY: Duration = Duration::from_millis(20);
/// Stands for timeouts too long to add to an instant.
const NEVER: Duration = Duration::from_secs(86400 * 365 * 30);

/// An upstream response whose head has arrived.
pub struct ResponseStart {
    pub stream: UpstreamStream,
    pub head: ResponseHead,
    /// The response head, followed by whatever body bytes came with it.
    pub buf: Vec<u8>,
    /// Unix ns when the request was sent upstream / the head came back.
    pub start_ns: u64,
    pub stop_ns: u64,
    /// When the head came back, on the monotonic clock: a clock read that
    /// the relay reuses (write deadline, pool entry) instead of taking its own.
    pub arrived: Instant,
}

/// A failed attempt; a stale pooled connection may be retried on a new one.
enum Failure {
    Stale(ProxyError),
    Fatal(ProxyError),
}

/// Where a request goes upstream, and what it carries there.
pub struct Destination<'a> {
    /// The pool stack its connections come from and go back to.
    pub slot: Slot,
    pub provider: &'a Provider,
    /// The whole `Authorization` value sent upstream.
    pub authorization: &'a [u8],
    /// For a routed request: the endpoint path and the rewritten body, read
    /// whole, that replace the client's.
    pub routed: Option<(&'a [u8], &'a [u8])>,
}

pub async fn forward(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    destination: &Destination<'_>,
    exchange: &mut Exchange,
) -> Result<ResponseStart, ProxyError> {
    let provider = destination.provider;
    conn.out.clear();
    let upstream = Upstream {
        base_path: &provider.target.base_path,
        authority: &provider.target.authority,
        authorization: destination.authorization,
        target: destination.routed.map(|(target, _)| target),
        body_length: destination.routed.map(|(_, body)| body.len()),
    };
    write_request_head(
        &mut conn.out,
        &conn.buf,
        head,
        &upstream,
        exchange.request_id.as_str(),
    );

    let mut body = BodyTracker::new(head.framing);
    if let Some((_, routed_body)) = destination.routed {
        // Read whole already (and taken out of the client buffer).
        conn.out.extend_from_slice(routed_body);
        exchange.body_done = true;
    } else {
        // Body bytes that came with the head go out in the same write.
        let window = &conn.buf[head.len..];
        let taken = relay_body(&mut body, window, &mut conn.out, exchange).map_err(chunk_error)?;
        check_chunked_limit(worker, &body)?;
        if body.is_done() {
            conn.buf.drain(head.len..head.len + taken);
            exchange.body_done = true;
        } else {
            conn.buf.truncate(head.len);
        }
    }
    // Only a request held whole in `conn.out` can be sent again.
    let replayable = exchange.body_done;

    let start_ns = unix_nanos();
    // One clock read for the pool's age check and, when nothing can hold the
    // request on its way out (a pooled connection, the whole request in
    // memory), as the start of the response-head deadline.
    let started = Instant::now();
    let mut fresh_only = false;
    loop {
        let (stream, reused) = acquire(worker, destination, fresh_only, started).await?;
        let sent = (reused && replayable).then_some(started);
        match attempt(
            worker, conn, head, provider, stream, &mut body, exchange, sent,
        )
        .await
        {
            Ok((stream, response, buf)) => {
                conn.out.clear();
                let stop_ns = unix_nanos();
                exchange.record.upstream_ns = Some((start_ns, stop_ns));
                return Ok(ResponseStart {
                    stream,
                    head: response,
                    buf,
                    start_ns,
                    stop_ns,
                    arrived: Instant::now(),
                });
            }
            Err(Failure::Stale(error)) if reused && replayable && !fresh_only => {
                tracing::debug!(%error, "pooled upstream connection was stale; retrying");
                fresh_only = true;
            }
            Err(Failure::Stale(error) | Failure::Fatal(error)) => return Err(error),
        }
    }
}

async fn acquire(
    worker: &Worker,
    destination: &Destination<'_>,
    fresh_only: bool,
    now: Instant,
) -> Result<(UpstreamStream, bool), ProxyError> {
    let provider = destination.provider;
    if !fresh_only {
        let pooled = worker
            .pool
            .borrow_mut()
            .take(&destination.slot, provider.timeouts.idle, now);
        if let Some(stream) = pooled {
            return Ok((stream, true));
        }
    }
    let stream = upstream::connect(
        &provider.target,
        provider.timeouts.connect,
        &worker.dns,
        &worker.tls,
    )
    .await?;
    Ok((stream, false))
}

/// One try: write the request, stream the rest of the body, read the head.
/// `sent` is a recent clock reading that may stand for the moment the
/// request is out; without it the clock is read once the request is out.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    provider: &Provider,
    mut stream: UpstreamStream,
    body: &mut BodyTracker,
    exchange: &mut Exchange,
    sent: Option<Instant>,
) -> Result<(UpstreamStream, ResponseHead, Vec<u8>), Failure> {
    let out = std::mem::take(&mut conn.out);
    let (result, out) = stream.write_all(out).await;
    conn.out = out;
    if let Err(error) = result {
        return Err(Failure::Stale(ProxyError::UpstreamIo(error)));
    }
    if !exchange.body_done {
        stream_body(worker, conn, head, &mut stream, body, exchange)
            .await
            .map_err(Failure::Fatal)?;
    }
    let mut buf = std::mem::take(&mut conn.relay);
    buf.clear();
    if buf.capacity() < RELAY_BUFFER {
        buf.reserve(RELAY_BUFFER);
    }
    let sent = sent.unwrap_or_else(Instant::now);
    let (response, buf) = await_response_head(conn, provider, &mut stream, buf, sent).await?;
    Ok((stream, response, buf))
}

/// Waits for the response head while watching the client: if the client
/// hangs up first, the upstream request is abandoned (dropping its
/// connection cancels it) instead of running on for nobody.
///
/// Watching costs a read on the client socket and its cancellation, two
/// more io_uring operations, so it only starts once the upstream has taken
/// `CLIENT_WATCH_DELAY`: most answers come sooner and never pay for it.
/// One timer serves both the watch delay and the response-head deadline.
async fn await_response_head(
    conn: &mut ClientConn,
    provider: &Provider,
    stream: &mut UpstreamStream,
    buf: Vec<u8>,
    sent: Instant,
) -> Result<(ResponseHead, Vec<u8>), Failure> {
    let deadline = sent
        .checked_add(provider.timeouts.response_header)
        .unwrap_or_else(|| sent + NEVER);
    let watch_at = (sent + CLIENT_WATCH_DELAY).min(deadline);
    let mut head = pin!(read_response_head(stream, buf));
    let mut timer = pin!(monoio::time::sleep_until(watch_at));
    monoio::select! {
        biased;
        result = head.as_mut() => return result,
        _ = timer.as_mut() => {}
    }
    if watch_at >= deadline {
        return Err(Failure::Fatal(ProxyError::UpstreamTimeout));
    }
    timer.as_mut().reset(deadline);
    let peek = Vec::with_capacity(CLIENT_PEEK);
    monoio::select! {
        biased;
        result = head.as_mut() => result,
        _ = timer.as_mut() => Err(Failure::Fatal(ProxyError::UpstreamTimeout)),
        (peeked, peek) = conn.stream.read(peek) => match peeked {
            Ok(n) if n > 0 => {
                // A pipelined request: keep its bytes and stop watching.
                conn.buf.extend_from_slice(&peek[..n]);
                monoio::select! {
                    biased;
                    result = head => result,
                    _ = timer => Err(Failure::Fatal(ProxyError::UpstreamTimeout)),
                }
            }
            _ => Err(Failure::Fatal(ProxyError::ClientGone)),
        },
    }
}

/// Relays the request body from the client as it arrives.
async fn stream_body(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    upstream: &mut UpstreamStream,
    body: &mut BodyTracker,
    exchange: &mut Exchange,
) -> Result<(), ProxyError> {
    if head.expect_continue {
        let (result, _) = conn
            .stream
            .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
            .await;
        result.map_err(|_| ProxyError::ClientGone)?;
    }
    let timeout = worker.settings.limits.body_timeout;
    let mut chunk = std::mem::take(&mut conn.relay);
    loop {
        let buf = std::mem::take(&mut conn.buf);
        let limit = body.read_limit(BODY_READ_SIZE);
        match monoio::time::timeout(timeout, read_append(&mut conn.stream, buf, limit)).await {
            Err(_) => return Err(ProxyError::ClientTimeout),
            Ok((Ok(n), buf)) if n > 0 => conn.buf = buf,
            Ok((_, buf)) => {
                conn.buf = buf;
                return Err(ProxyError::ClientGone);
            }
        }
        let window = &conn.buf[head.len..];
        chunk.clear();
        let taken = relay_body(body, window, &mut chunk, exchange).map_err(chunk_error)?;
        check_chunked_limit(worker, body)?;
        let done = body.is_done();
        if done {
            // Anything after the body is the client's next request.
            conn.buf.drain(head.len..head.len + taken);
        } else {
            conn.buf.truncate(head.len);
        }
        // (A read of trailer fields alone leaves nothing to send.)
        if !chunk.is_empty() {
            let (result, returned) = upstream.write_all(chunk).await;
            chunk = returned;
            result.map_err(ProxyError::UpstreamIo)?;
        }
        if done {
            exchange.body_done = true;
            conn.relay = chunk;
            return Ok(());
        }
    }
}

/// Reads until a complete final response head is in `buf` (interim 1xx
/// heads are skipped). The caller bounds the wait.
async fn read_response_head(
    stream: &mut UpstreamStream,
    mut buf: Vec<u8>,
) -> Result<(ResponseHead, Vec<u8>), Failure> {
    loop {
        if !buf.is_empty() {
            match ResponseHead::parse(&buf) {
                Err(error) => {
                    return Err(Failure::Fatal(ProxyError::UpstreamProtocol(
                        error.to_string(),
                    )));
                }
                Ok(Parsed::Complete(response)) if response.is_interim() => {
                    buf.drain(..response.len);
                    continue;
                }
                Ok(Parsed::Complete(response)) => return Ok((response, buf)),
                Ok(Parsed::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(Failure::Fatal(ProxyError::UpstreamProtocol(
                        "response head too large".into(),
                    )));
                }
                Ok(Parsed::Partial) => {}
            }
        }
        let nothing_yet = buf.is_empty();
        let (result, returned) = read_append(stream, buf, RELAY_BUFFER).await;
        buf = returned;
        let error = match result {
            Ok(n) if n > 0 => continue,
            Ok(_) => ProxyError::UpstreamClosed,
            Err(error) => ProxyError::UpstreamIo(error),
        };
        // A pooled connection closed by the upstream fails before any byte.
        return Err(if nothing_yet {
            Failure::Stale(error)
        } else {
            Failure::Fatal(error)
        });
    }
}

/// Accounts for request body bytes and appends what goes upstream to
/// `out` (a chunked body without extensions and trailer fields), showing
/// the payload to the request capture when there is one (events with bodies).
fn relay_body(
    body: &mut BodyTracker,
    window: &[u8],
    out: &mut Vec<u8>,
    exchange: &mut Exchange,
) -> Result<usize, crate::http::body::ChunkError> {
    match exchange.record.request.as_mut() {
        Some(capture) => body.relay(window, out, |data| capture.feed(data)),
        None => body.relay(window, out, |_| {}),
    }
}

fn chunk_error(error: crate::http::body::ChunkError) -> ProxyError {
    ProxyError::BadRequest(format!("invalid chunked request body: {error}"))
}

fn check_chunked_limit(worker: &Worker, body: &BodyTracker) -> Result<(), ProxyError> {
    let limit = worker.settings.limits.max_body_bytes;
    if body.chunked_payload() > limit {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    Ok(())
}
