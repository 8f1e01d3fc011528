//! Phase 4, relay: send the response head to the client, then the body
//! piece by piece as the upstream produces it (SSE events included), with
//! one buffer read into and written from, no copies in between.

use std::io::Write;

use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRentExt;

use super::Exchange;
use super::error::ProxyError;
use super::forward::ResponseStart;
use crate::http::body::ChunkError;
use crate::http::head::{is_hop_by_hop, listed_in_connection};
use crate::http::io::{header, header_u64, read_fresh};
use crate::http::{BodyTracker, Framing, RequestHead, ResponseHead};
use crate::providers::Provider;
use crate::server::conn::ClientConn;
use crate::server::worker::Worker;

const RELAY_READ_SIZE: usize = 16 << 10;

pub async fn relay(
    worker: &Worker,
    conn: &mut ClientConn,
    request: &RequestHead,
    index: usize,
    provider: &Provider,
    response: ResponseStart,
    exchange: &mut Exchange,
) -> Result<(), ProxyError> {
    let ResponseStart {
        mut stream,
        head,
        mut buf,
        start_ns,
        stop_ns,
    } = response;
    let framing = head.framing(&request.method);
    // An HTTP/1.0 client cannot read chunked framing: decode it for them.
    let dechunk = request.http10 && framing == Framing::Chunked;
    exchange.status = head.status;
    exchange.close |=
        !request.keep_alive || worker.draining() || framing == Framing::UntilClose || dechunk;
    conn.out.clear();
    write_client_head(
        &mut conn.out,
        &buf,
        &head,
        &exchange.request_id,
        (start_ns, stop_ns),
        exchange.close,
        dechunk,
    );

    let mut body = BodyTracker::new(framing);
    let mut reusable = head.reusable && framing != Framing::UntilClose;
    let first = &buf[head.len..];
    let taken = take_body(&mut body, first, dechunk, &mut conn.out).map_err(protocol_error)?;
    reusable &= taken == first.len();
    exchange.response_started = true;
    if !conn.send_out().await {
        return Err(ProxyError::ClientGone);
    }

    let inactivity = provider.timeouts.read;
    let write_timeout = worker.settings.limits.write_timeout;
    while !body.is_done() {
        let limit = body.read_limit(RELAY_READ_SIZE);
        let read = monoio::time::timeout(inactivity, read_fresh(&mut stream, buf, limit)).await;
        let (result, returned) = read.map_err(|_| ProxyError::UpstreamTimeout)?;
        buf = returned;
        let n = match result {
            Ok(0) if framing == Framing::UntilClose => break,
            // Cut mid-body: closing the client connection without the final
            // chunk lets the client see the truncation.
            Ok(0) => return Err(ProxyError::UpstreamClosed),
            Err(error) => return Err(ProxyError::UpstreamIo(error)),
            Ok(n) => n,
        };
        if dechunk {
            take_body(&mut body, &buf[..n], true, &mut conn.out).map_err(protocol_error)?;
            if !conn.send_out().await {
                return Err(ProxyError::ClientGone);
            }
            continue;
        }
        let taken = body.advance(&buf[..n]).map_err(protocol_error)?;
        reusable &= taken == n;
        // A client that stops reading must not hold the upstream forever.
        let write = conn.stream.write_all(buf.slice(..taken));
        let (result, slice) = monoio::time::timeout(write_timeout, write)
            .await
            .map_err(|_| ProxyError::ClientStalled)?;
        buf = slice.into_inner();
        result.map_err(|_| ProxyError::ClientGone)?;
    }
    conn.relay = buf;
    if reusable && body.is_done() {
        worker
            .pool
            .borrow_mut()
            .put(index, stream, provider.max_idle, provider.timeouts.idle);
    }
    Ok(())
}

/// Accounts for body bytes in `input`, appending what the client must
/// receive to `out` (decoded when `dechunk`). Returns the bytes used.
fn take_body(
    body: &mut BodyTracker,
    input: &[u8],
    dechunk: bool,
    out: &mut Vec<u8>,
) -> Result<usize, ChunkError> {
    if let (true, BodyTracker::Chunked(decoder)) = (dechunk, &mut *body) {
        return Ok(decoder
            .feed(input, |data| out.extend_from_slice(data))?
            .unwrap_or(input.len()));
    }
    let taken = body.advance(input)?;
    out.extend_from_slice(&input[..taken]);
    Ok(taken)
}

fn protocol_error(error: ChunkError) -> ProxyError {
    ProxyError::UpstreamProtocol(format!("invalid chunked body: {error}"))
}

fn write_client_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    request_id: &str,
    (start_ns, stop_ns): (u64, u64),
    close: bool,
    dechunk: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    header_status(out, head.status, head.reason.of(buf));
    for (name, value) in &head.headers {
        let name = name.of(buf);
        if is_hop_by_hop(name)
            || listed_in_connection(buf, head.connection, name)
            || (dechunk && name.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-request-id") {
            // The gateway's ID is the request's ID; keep the provider's too.
            header(out, "X-Upstream-Request-ID", value.of(buf));
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.of(buf));
        out.extend_from_slice(b"\r\n");
    }
    header(out, "X-Request-ID", request_id.as_bytes());
    header_u64(out, "X-UPSTREAM-REQUEST-START", start_ns);
    header_u64(out, "X-UPSTREAM-REQUEST-STOP", stop_ns);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn header_status(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    let _ = write!(out, "{status} ");
    if reason.is_empty() {
        let canonical = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        out.extend_from_slice(canonical.as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
}
