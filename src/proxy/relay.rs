//! Phase 4, relay: send the response head to the client, then the body
//! piece by piece as the upstream produces it (SSE events included), with
//! one buffer read into and written from, no copies in between.

use std::pin::Pin;
use std::time::Duration;

use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRentExt;
use monoio::time::{Instant, Sleep};

use super::Exchange;
use super::forward::{Destination, ResponseStart};
use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http::body::ChunkError;
use crate::http::io::{read_fresh, unix_nanos};
use crate::http::rewrite::{Stamp, write_client_head};
use crate::http::{BodyTracker, Framing, RequestHead};
use crate::record::usage::UsageScan;
use crate::record::{CacheStatus, Capture};
use crate::worker::Worker;

const RELAY_READ_SIZE: usize = 16 << 10;
/// Stands for timeouts too long to add to an instant.
const NEVER: Duration = Duration::from_secs(86400 * 365 * 30);

/// What a routed response adds to the relay: fields for the client's
/// response head, and a scan of the body for its token usage.
#[derive(Default)]
pub struct Extras<'a> {
    pub headers: &'a [(&'a str, &'a [u8])],
    pub usage: Option<&'a mut UsageScan>,
}

pub async fn relay(
    worker: &Worker,
    conn: &mut ClientConn,
    request: &RequestHead,
    destination: &Destination<'_>,
    response: ResponseStart,
    exchange: &mut Exchange,
    extras: Extras<'_>,
) -> Result<(), ProxyError> {
    let Extras { headers, usage } = extras;
    let provider = destination.provider;
    let ResponseStart {
        mut stream,
        head,
        mut buf,
        start_ns,
        stop_ns,
        arrived,
    } = response;
    // A cache miss: keep the answer while it is relayed, if it may be stored.
    let miss = exchange.cache.take();
    let settings = &worker.settings.cache;
    let pending = miss
        .as_deref()
        .and_then(|miss| miss.prepare(settings, &head, &buf));
    if pending.is_some() {
        Capture::want(&mut exchange.record.response, settings.max_object_bytes);
    }
    let with_cache_fields: Vec<(&str, &[u8])>;
    let headers = match miss.as_deref() {
        Some(miss) => {
            with_cache_fields = [headers, &miss.fields(pending.is_some())[..]].concat();
            &with_cache_fields[..]
        }
        None => headers,
    };
    let mut taps = Taps {
        usage,
        capture: exchange.record.response.as_mut(),
    };
    let framing = head.framing(&request.method);
    // An HTTP/1.0 client cannot read chunked framing: decode it for them.
    let dechunk = request.http10 && framing == Framing::Chunked;
    exchange.status = head.status;
    exchange.close |=
        !request.keep_alive || worker.draining() || framing == Framing::UntilClose || dechunk;
    conn.out.clear();
    let stamp = Stamp {
        request_id: exchange.request_id.as_str(),
        upstream_times: (start_ns, stop_ns),
        extra: headers,
    };
    write_client_head(&mut conn.out, &buf, &head, &stamp, exchange.close, dechunk);

    let mut body = BodyTracker::new(framing);
    let mut reusable = head.reusable && framing != Framing::UntilClose;
    let first = &buf[head.len..];
    let taken =
        take_body(&mut body, first, dechunk, &mut conn.out, &mut taps).map_err(protocol_error)?;
    reusable &= taken == first.len();
    exchange.response_started = true;
    if taken > 0 {
        exchange.record.first_byte_ns = Some(stop_ns);
    }
    if !conn.send_out_since(arrived).await {
        return Err(ProxyError::ClientGone);
    }
    // Still the last clock reading if the whole body came with the head.
    let mut now = Some(arrived);

    let inactivity = provider.timeouts.read;
    let write_timeout = worker.settings.limits.write_timeout;
    // One timer for the reads and one for the writes of a body that takes
    // more than one read, made once and then pushed back chunk by chunk
    // (cheaper than a new timer, entered in and taken out of the timer
    // wheel, for every read and every write).
    let (mut read_timer, mut write_timer) = (None, None);
    while !body.is_done() {
        now = None;
        let limit = body.read_limit(RELAY_READ_SIZE);
        let read = read_fresh(&mut stream, buf, limit);
        let timer = arm(&mut read_timer, inactivity);
        let (result, returned) = monoio::select! {
            biased;
            read = read => read,
            _ = timer => return Err(ProxyError::UpstreamTimeout),
        };
        buf = returned;
        let n = match result {
            Ok(0) if framing == Framing::UntilClose => break,
            // Cut mid-body: closing the client connection without the final
            // chunk lets the client see the truncation.
            Ok(0) => return Err(ProxyError::UpstreamClosed),
            Err(error) => return Err(ProxyError::UpstreamIo(error)),
            Ok(n) => n,
        };
        if exchange.record.first_byte_ns.is_none() {
            exchange.record.first_byte_ns = Some(unix_nanos());
        }
        if dechunk {
            let taken = take_body(&mut body, &buf[..n], true, &mut conn.out, &mut taps)
                .map_err(protocol_error)?;
            // Bytes after the last chunk: the upstream is out of step.
            reusable &= taken == n;
            if !conn.send_out().await {
                return Err(ProxyError::ClientGone);
            }
            continue;
        }
        let taken = if taps.is_idle() {
            body.advance(&buf[..n])
        } else {
            body.advance_tapped(&buf[..n], |data| taps.feed(data))
        }
        .map_err(protocol_error)?;
        reusable &= taken == n;
        // A client that stops reading must not hold the upstream forever.
        let write = conn.stream.write_all(buf.slice(..taken));
        let timer = arm(&mut write_timer, write_timeout);
        let (result, slice) = monoio::select! {
            biased;
            written = write => written,
            _ = timer => return Err(ProxyError::ClientStalled),
        };
        buf = slice.into_inner();
        result.map_err(|_| ProxyError::ClientGone)?;
    }
    conn.relay = buf;
    exchange.record.response_complete = body.is_done();
    if let (Some(miss), Some(pending), Some(capture)) =
        (miss, pending, exchange.record.response.as_ref())
        && body.is_done()
        && !capture.overflowed
    {
        let stored = worker.cache.borrow_mut().insert(
            &miss,
            pending,
            &capture.bytes,
            request,
            &conn.buf,
            std::time::Instant::now(),
        );
        if stored {
            exchange.record.cache = CacheStatus::Stored;
        }
    }
    // The one place an upstream connection goes back to the pool: only after
    // an exchange that ended exactly at a message boundary on both sides,
    // the request sent whole as framed (forward sends the rest of the body
    // before it waits for the answer, and drops the connection when the
    // client or its body fails midway) and the response read to its end
    // and not a byte further. Any other way out of here drops, and so
    // closes, the connection.
    if reusable && body.is_done() && exchange.body_done {
        worker.pool.borrow_mut().put(
            &destination.slot,
            stream,
            provider.max_idle,
            provider.timeouts.idle,
            now.unwrap_or_else(Instant::now),
        );
    }
    Ok(())
}

/// Sets `timer` (made on first use) to go off `timeout` from now.
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, timeout: Duration) -> Pin<&mut Sleep> {
    let now = Instant::now();
    // Too far to represent: as good as never.
    let deadline = now.checked_add(timeout).unwrap_or(now + NEVER);
    let fresh = timer.is_none();
    let timer = timer.get_or_insert_with(|| Box::pin(monoio::time::sleep_until(deadline)));
    if !fresh {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut()
}

/// Who looks at the response payload (de-chunked) as it goes by.
struct Taps<'a> {
    usage: Option<&'a mut UsageScan>,
    capture: Option<&'a mut Capture>,
}

impl Taps<'_> {
    fn is_idle(&self) -> bool {
        self.usage.is_none() && self.capture.is_none()
    }

    fn feed(&mut self, data: &[u8]) {
        if let Some(scan) = self.usage.as_deref_mut() {
            scan.feed(data);
        }
        if let Some(capture) = self.capture.as_deref_mut() {
            capture.feed(data);
        }
    }
}

/// Accounts for body bytes in `input`, appending what the client must
/// receive to `out` (decoded when `dechunk`), and showing the payload to
/// the taps. Returns the bytes used.
fn take_body(
    body: &mut BodyTracker,
    input: &[u8],
    dechunk: bool,
    out: &mut Vec<u8>,
    taps: &mut Taps<'_>,
) -> Result<usize, ChunkError> {
    if let (true, BodyTracker::Chunked(decoder)) = (dechunk, &mut *body) {
        return Ok(decoder
            .feed(input, |data| {
                out.extend_from_slice(data);
                taps.feed(data);
            })?
            .unwrap_or(input.len()));
    }
    let taken = if taps.is_idle() {
        body.advance(input)?
    } else {
        body.advance_tapped(input, |data| taps.feed(data))?
    };
    out.extend_from_slice(&input[..taken]);
    Ok(taken)
}

fn protocol_error(error: ChunkError) -> ProxyError {
    ProxyError::UpstreamProtocol(format!("invalid chunked body: {error}"))
}
