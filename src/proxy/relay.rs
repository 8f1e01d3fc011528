//! Phase 6, relay: send the response head to the client, then the body
//! piece by piece as the upstream produces it (SSE events included), with
//! one buffer read into and written from, no copies in between.
//!
//! How the body reaches the client is one `Passing` mode, chosen once per
//! answer: as is (zero copy), or decoded into the output buffer first. An
//! answer that must be rewritten as it streams (a provider's SSE events
//! turned into OpenAI's, one event in, one event out) is a mode of the
//! second kind: it writes through the output buffer, and only answers that
//! need it pay for it; the pass-through keeps the zero-copy loop.

use std::pin::Pin;
use std::time::Duration;

use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRentExt;
use monoio::time::{Instant, Sleep};

use super::Session;
use super::forward::{Destination, ResponseStart};
use crate::cache::{Miss, Pending};
use crate::error::ProxyError;
use crate::http::RequestHead;
use crate::http::body::ChunkError;
use crate::http::io::{read_fresh, unix_nanos};
use crate::http::rewrite::{Stamp, write_client_head};
use crate::http::{BodyTracker, Framing};
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
    pub headers: AddedFields<'a>,
    pub usage: Option<&'a mut UsageScan>,
}

/// The few header fields an answer adds (cost, spend, deployment, rate
/// limits), held inline: no allocation.
#[derive(Default)]
pub struct AddedFields<'a> {
    fields: [(&'a str, &'a [u8]); 7],
    len: usize,
}

impl<'a> AddedFields<'a> {
    /// Adds a field (past the capacity, silently not: the callers add at
    /// most as many as it holds).
    pub fn push(&mut self, name: &'a str, value: &'a [u8]) {
        if let Some(slot) = self.fields.get_mut(self.len) {
            *slot = (name, value);
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[(&'a str, &'a [u8])] {
        &self.fields[..self.len]
    }
}

/// How the body reaches the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Passing {
    /// The upstream's bytes, written from the buffer they were read into.
    AsIs,
    /// A chunked body decoded for an HTTP/1.0 client, which cannot read
    /// chunked framing.
    Dechunked,
}

pub async fn relay(
    s: &mut Session<'_>,
    destination: &Destination<'_>,
    response: ResponseStart,
    extras: Extras<'_>,
) -> Result<(), ProxyError> {
    let (worker, request) = (s.worker, s.head);
    let Extras { headers, usage } = extras;
    let provider = destination.provider();
    let ResponseStart {
        mut stream,
        head,
        mut buf,
        start_ns,
        stop_ns,
        arrived,
    } = response;
    // A cache miss: keep the answer while it is relayed, if it may be stored.
    let miss = s.cache.take();
    let settings = &worker.settings.cache;
    let pending = miss
        .as_deref()
        .and_then(|miss| miss.prepare(settings, &head, &buf));
    if pending.is_some() {
        Capture::want(&mut s.record.response, settings.max_object_bytes);
    }
    let with_cache_fields: Vec<(&str, &[u8])>;
    let headers = match miss.as_deref() {
        Some(miss) => {
            with_cache_fields = [headers.as_slice(), &miss.fields(pending.is_some())[..]].concat();
            &with_cache_fields[..]
        }
        None => headers.as_slice(),
    };
    let mut taps = Taps {
        usage,
        capture: s.record.response.as_mut(),
        keeping: None,
        cache_status: &mut s.record.cache,
    };
    let framing = head.framing(&request.method);
    let passing = if request.http10 && framing == Framing::Chunked {
        Passing::Dechunked
    } else {
        Passing::AsIs
    };
    let dechunk = passing == Passing::Dechunked;
    s.status = head.status;
    s.close |=
        !request.keep_alive || worker.draining() || framing == Framing::UntilClose || dechunk;
    s.conn.out.clear();
    let stamp = Stamp {
        request_id: s.request_id.as_str(),
        upstream_times: (start_ns, stop_ns),
        extra: headers,
    };
    write_client_head(&mut s.conn.out, &buf, &head, &stamp, s.close, dechunk);
    if let (Some(miss), Some(pending)) = (miss, pending) {
        taps.keeping = Some(Box::new((miss, pending)));
    }

    let mut body = BodyTracker::new(framing);
    let mut reusable = head.reusable && framing != Framing::UntilClose;
    let first = &buf[head.len..];
    let taken =
        take_body(&mut body, first, dechunk, &mut s.conn.out, &mut taps).map_err(protocol_error)?;
    reusable &= taken == first.len();
    s.response_started = true;
    if taken > 0 {
        s.record.first_byte_ns = Some(stop_ns);
    }
    if body.is_done() {
        taps.keep(worker, request, &s.conn.buf);
    }
    if !s.conn.send_out_since(arrived).await {
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
        if s.record.first_byte_ns.is_none() {
            s.record.first_byte_ns = Some(unix_nanos());
        }
        if passing == Passing::Dechunked {
            let taken = take_body(&mut body, &buf[..n], true, &mut s.conn.out, &mut taps)
                .map_err(protocol_error)?;
            // Bytes after the last chunk: the upstream is out of step.
            reusable &= taken == n;
            if body.is_done() {
                taps.keep(worker, request, &s.conn.buf);
            }
            if !s.conn.send_out().await {
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
        if body.is_done() {
            taps.keep(worker, request, &s.conn.buf);
        }
        // A client that stops reading must not hold the upstream forever.
        let write = s.conn.stream.write_all(buf.slice(..taken));
        let timer = arm(&mut write_timer, write_timeout);
        let (result, slice) = monoio::select! {
            biased;
            written = write => written,
            _ = timer => return Err(ProxyError::ClientStalled),
        };
        buf = slice.into_inner();
        result.map_err(|_| ProxyError::ClientGone)?;
    }
    s.conn.relay = buf;
    s.record.response_complete = body.is_done();
    if body.is_done() {
        // An answer read to its close (no framing) is whole only now.
        taps.keep(worker, request, &s.conn.buf);
    }
    // The one place an upstream connection goes back to the pool: only after
    // an exchange that ended exactly at a message boundary on both sides,
    // the request sent whole as framed (forward sends the rest of the body
    // before it waits for the answer, and drops the connection when the
    // client or its body fails midway) and the response read to its end
    // and not a byte further. Any other way out of here drops, and so
    // closes, the connection.
    if reusable && body.is_done() && s.body_done {
        worker.pool.borrow_mut().put(
            destination.slot(),
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
    /// A miss's answer to keep once it has arrived whole (boxed: the
    /// requests the cache does not apply to move one word around).
    keeping: Option<Box<(Box<Miss>, Pending)>>,
    /// Where the exchange says whether the answer was kept.
    cache_status: &'a mut CacheStatus,
}

impl Taps<'_> {
    fn is_idle(&self) -> bool {
        self.usage.is_none() && self.capture.is_none()
    }

    /// Keeps the miss's answer, its body having arrived whole (and within
    /// the object limit), and sends it to the other workers' shards, before
    /// the last bytes go to the client: a request sent once the client has
    /// the answer finds it on every worker. Runs once; later calls find
    /// nothing to keep.
    #[inline]
    fn keep(&mut self, worker: &Worker, request: &RequestHead, buf: &[u8]) {
        if let Some(keeping) = self.keeping.take() {
            self.store(*keeping, worker, request, buf);
        }
    }

    #[inline(never)]
    fn store(
        &mut self,
        (miss, pending): (Box<Miss>, Pending),
        worker: &Worker,
        request: &RequestHead,
        buf: &[u8],
    ) {
        let Some(capture) = self.capture.as_deref().filter(|c| !c.overflowed) else {
            return;
        };
        let mut cache = worker.cache.borrow_mut();
        let now = std::time::Instant::now();
        if cache.insert(&miss, pending, &capture.bytes, request, buf, now) {
            *self.cache_status = CacheStatus::Stored;
        }
        // What it stored, and what it evicted to make room.
        cache.publish();
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
