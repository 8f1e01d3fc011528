//! Phase 5, forward: send the request upstream (head, then the body as it
//! arrives) and wait for the response head; for a request routed by model,
//! over its deployments in turn until one answers (retries, fallbacks).

use std::pin::pin;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::time::Instant;

use std::rc::Rc;

use super::Session;
use super::plan::{Plan, Routed, Target};
use super::prepare::prepare;
use super::translate::Translation;
use crate::downstream::{ClientConn, HeldBody};
use crate::error::{ProxyError, RateLimit, retryable_status};
use crate::http::io::{read_append, unix_nanos};
use crate::http::rewrite::{Upstream, write_request_head};
use crate::http::{BodyTracker, Parsed, ResponseHead};
use crate::providers::Provider;
use crate::record::Capture;
use crate::store::now_ms;
use crate::upstream::{self, Slot, UpstreamStream};
use crate::worker::Worker;
use crate::worker::limits::seconds_left_in_minute;
use crate::worker::models::Deployment;

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

/// The output buffer a request body went out in is kept for the answer up
/// to this size; larger, it is freed rather than held during the relay.
const KEPT_OUT_CAPACITY: usize = 64 << 10;

/// Where a request goes upstream.
pub enum Destination<'a> {
    /// The key's project's provider, with its provider key.
    Provider {
        slot: Slot,
        provider: &'a Provider,
        /// `Authorization: Bearer <provider key>\r\n`.
        auth_fields: &'a [u8],
    },
    /// A model's deployment.
    Deployment(Rc<Deployment>),
}

impl Destination<'_> {
    /// The pool stack its connections come from and go back to.
    pub fn slot(&self) -> &Slot {
        match self {
            Destination::Provider { slot, .. } => slot,
            Destination::Deployment(deployment) => &deployment.slot,
        }
    }

    pub fn provider(&self) -> &Provider {
        match self {
            Destination::Provider { provider, .. } => provider,
            Destination::Deployment(deployment) => &deployment.provider,
        }
    }

    /// The provider key's header lines sent upstream.
    fn auth_fields(&self) -> &[u8] {
        match self {
            Destination::Provider { auth_fields, .. } => auth_fields,
            Destination::Deployment(deployment) => &deployment.auth_fields,
        }
    }

    /// The deployment, when the request was routed to one.
    pub fn deployment(&self) -> Option<&Deployment> {
        match self {
            Destination::Provider { .. } => None,
            Destination::Deployment(deployment) => Some(deployment),
        }
    }
}

/// A body read whole that replaces the client's, with the request target
/// it goes to.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub target: &'a [u8],
    pub body: &'a [u8],
    /// Header lines its dialect adds (`anthropic-version`); empty for none.
    pub fields: &'a [u8],
}

/// The answer that is relayed: its head has come, from `destination`.
pub struct Forwarded<'a> {
    pub response: ResponseStart,
    pub destination: Destination<'a>,
    /// The client asked for a stream (a routed request's `stream`; the
    /// pass-through's body is not read for it).
    pub stream: bool,
    /// A pass-through body read whole stays held (and counted against the
    /// worker's budget for bodies) until the answer has been relayed.
    pub held: Option<HeldBody<'a>>,
    /// How the answer is turned into the client's dialect, when the
    /// deployment speaks another.
    pub translation: Option<Translation>,
}

/// Sends the request where the plan says: the key's project's provider, or
/// the model's deployments one after another, on to the next while one
/// fails before anything reached the client (it cannot be reached, or
/// answers 429 or 5xx), until the last, whose answer is relayed whatever it
/// is.
pub async fn to_candidates<'a>(
    s: &mut Session<'_>,
    plan: Plan<'a>,
) -> Result<Forwarded<'a>, ProxyError> {
    let Plan { body, target, .. } = plan;
    match target {
        Target::CacheOnly(error) => Err(error),
        Target::Counted(_) => Err(ProxyError::Internal(
            "a counted request is answered before it is forwarded".into(),
        )),
        Target::Provider(destination) => {
            // A body read already goes out with the client's own request target.
            let target = body
                .as_ref()
                .map(|_| s.head.target.of(&s.conn.buf).to_vec());
            let outgoing = target
                .as_deref()
                .zip(body.as_deref())
                .map(|(target, body)| Outgoing {
                    target,
                    body,
                    fields: b"",
                });
            let response = forward(s, &destination, outgoing).await?;
            Ok(Forwarded {
                response,
                destination,
                stream: false,
                held: body,
                translation: None,
            })
        }
        Target::Deployments(routed) => match body {
            Some(body) => to_deployments(s, routed, body).await,
            None => Err(ProxyError::Internal(
                "a routed request without its body".into(),
            )),
        },
    }
}

async fn to_deployments<'a>(
    s: &mut Session<'_>,
    routed: Routed,
    mut body: HeldBody<'_>,
) -> Result<Forwarded<'a>, ProxyError> {
    let Routed {
        endpoint,
        candidates,
        mut rewrite,
        stream,
        ask_usage,
    } = routed;
    let last = candidates.len().saturating_sub(1);
    for (index, deployment) in candidates.into_iter().enumerate() {
        let destination = Destination::Deployment(Rc::clone(&deployment));
        let Some(target) = deployment.target(endpoint) else {
            // Not an endpoint this deployment's provider has.
            let error = ProxyError::EndpointNotServed {
                model: deployment.model_name.clone(),
                provider: deployment.dialect.prefix,
                endpoint: String::from_utf8_lossy(endpoint).into_owned(),
            };
            if index < last {
                next_deployment(s, &destination, &error);
                continue;
            }
            return Err(error);
        };
        if !super::admit::deployment_admits(s.worker, &deployment).await? {
            if index < last {
                next_deployment(s, &destination, &"at its requests or tokens per minute");
                continue;
            }
            return Err(ProxyError::RateLimited {
                limit: RateLimit::Deployments,
                message: format!(
                    "model {:?}: the deployments tried are at their requests or tokens per minute",
                    deployment.model_name
                ),
                retry_after: seconds_left_in_minute(now_ms()),
                value: 0,
            });
        }
        let prepared = prepare(
            s,
            &deployment,
            endpoint,
            &mut body,
            (&mut rewrite, ask_usage),
        )?;
        let outgoing = Outgoing {
            target: prepared.target.as_deref().unwrap_or(target),
            body: prepared.body.as_deref().unwrap_or(&body),
            fields: prepared.fields.as_deref().unwrap_or_default(),
        };
        let response = match forward(s, &destination, Some(outgoing)).await {
            Ok(response) if index < last && retryable_status(response.head.status) => {
                next_deployment(s, &destination, &response.head.status);
                continue;
            }
            Err(error) if index < last && error.retryable() => {
                next_deployment(s, &destination, &error);
                continue;
            }
            result => result?,
        };
        // No more tries: the body (and its share of the worker's budget)
        // and the copy of it that went out are given back before the
        // answer is relayed, which may take long.
        drop(body);
        let translation = prepared.translation;
        if s.conn.out.capacity() > KEPT_OUT_CAPACITY {
            s.conn.out = Vec::new();
        }
        return Ok(Forwarded {
            response,
            destination,
            stream,
            held: None,
            translation,
        });
    }
    Err(ProxyError::Internal(
        "the last deployment tried had no answer".into(),
    ))
}

fn next_deployment(s: &Session<'_>, failed: &Destination<'_>, why: &dyn std::fmt::Display) {
    tracing::debug!(
        request_id = s.request_id.as_str(),
        deployment = failed.deployment().map_or("", |d| d.id.as_str()),
        %why,
        "deployment failed; trying the next"
    );
}

/// Sends the request to `destination`, with `outgoing` instead of the
/// client's target and body when they were read whole, and waits for the
/// response head. A stale pooled connection is retried once on a new one.
pub async fn forward(
    s: &mut Session<'_>,
    destination: &Destination<'_>,
    outgoing: Option<Outgoing<'_>>,
) -> Result<ResponseStart, ProxyError> {
    let (worker, head) = (s.worker, s.head);
    let provider = destination.provider();
    let conn = &mut *s.conn;
    conn.out.clear();
    let upstream = Upstream {
        base_path: &provider.target.base_path,
        authority: &provider.target.authority,
        auth_fields: destination.auth_fields(),
        extra_fields: outgoing.map_or(&b""[..], |o| o.fields),
        // A deployment's answer is read: priced, or translated.
        identity: destination.deployment().is_some(),
        target: outgoing.map(|o| o.target),
        body_length: outgoing.map(|o| o.body.len()),
    };
    write_request_head(
        &mut conn.out,
        &conn.buf,
        head,
        &upstream,
        s.request_id.as_str(),
    );

    let mut body = BodyTracker::new(head.framing);
    if let Some(outgoing) = outgoing {
        // Read whole already (and taken out of the client buffer).
        conn.out.extend_from_slice(outgoing.body);
        s.body_done = true;
    } else {
        // Body bytes that came with the head go out in the same write.
        let window = &conn.buf[head.len..];
        let capture = s.record.request.as_mut();
        let taken = relay_body(&mut body, window, &mut conn.out, capture).map_err(chunk_error)?;
        check_chunked_limit(worker, &body)?;
        if body.is_done() {
            conn.buf.drain(head.len..head.len + taken);
            s.body_done = true;
        } else {
            conn.buf.truncate(head.len);
        }
    }
    // Only a request held whole in `conn.out` can be sent again.
    let replayable = s.body_done;

    let start_ns = unix_nanos();
    // One clock read for the pool's age check and, when nothing can hold the
    // request on its way out (a pooled connection, the whole request in
    // memory), as the start of the response-head deadline.
    let started = Instant::now();
    let mut fresh_only = false;
    loop {
        let (stream, reused) = acquire(worker, destination, fresh_only, started).await?;
        let connection = Connection {
            stream,
            sent: (reused && replayable).then_some(started),
        };
        match attempt(s, provider, connection, &mut body).await {
            Ok((stream, response, buf)) => {
                s.conn.out.clear();
                let stop_ns = unix_nanos();
                s.record.upstream_ns = Some((start_ns, stop_ns));
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
    let provider = destination.provider();
    if !fresh_only {
        let pooled = worker
            .pool
            .borrow_mut()
            .take(destination.slot(), provider.timeouts.idle, now);
        if let Some(stream) = pooled {
            return Ok((stream, true));
        }
    }
    // Boxed: connecting (DNS, TCP, TLS) is a large future, and inline it
    // would be copied with every future that holds this one, on every
    // request; a new connection is rare and costs far more than the box.
    let connect = upstream::connect(
        &provider.target,
        provider.timeouts.connect,
        &worker.dns,
        &worker.tls,
    );
    let stream = Box::pin(connect).await?;
    Ok((stream, false))
}

/// An upstream connection for one try.
struct Connection {
    stream: UpstreamStream,
    /// A recent clock reading that may stand for the moment the request is
    /// out (a pooled connection, the whole request in memory); without it
    /// the clock is read once the request is out.
    sent: Option<Instant>,
}

/// One try: write the request, stream the rest of the body, read the head.
async fn attempt(
    s: &mut Session<'_>,
    provider: &Provider,
    connection: Connection,
    body: &mut BodyTracker,
) -> Result<(UpstreamStream, ResponseHead, Vec<u8>), Failure> {
    let Connection { mut stream, sent } = connection;
    let out = std::mem::take(&mut s.conn.out);
    let (result, out) = stream.write_all(out).await;
    s.conn.out = out;
    if let Err(error) = result {
        return Err(Failure::Stale(ProxyError::UpstreamIo(error)));
    }
    if !s.body_done {
        stream_body(s, &mut stream, body)
            .await
            .map_err(Failure::Fatal)?;
    }
    let conn = &mut *s.conn;
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
    s: &mut Session<'_>,
    upstream: &mut UpstreamStream,
    body: &mut BodyTracker,
) -> Result<(), ProxyError> {
    let (worker, head) = (s.worker, s.head);
    let conn = &mut *s.conn;
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
        let capture = s.record.request.as_mut();
        let taken = relay_body(body, window, &mut chunk, capture).map_err(chunk_error)?;
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
            s.body_done = true;
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
    capture: Option<&mut Capture>,
) -> Result<usize, crate::http::body::ChunkError> {
    match capture {
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
