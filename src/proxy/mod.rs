//! The request path, as phases that read top to bottom:
//! read head (server::conn) → authenticate → plan (route) → authorize →
//! cache → forward → relay → finish.
//! `finish` runs exactly once per request, whatever happened before it, and
//! is the only place where a failure is rendered and logged.

mod admit;
mod cached;
mod event;
pub mod fields;
mod forward;
mod relay;
pub mod route;
mod routed;

use std::borrow::Cow;
use std::time::Instant;

use std::rc::Rc;

use crate::error::ProxyError;
use crate::http::RequestId;
use crate::record::Record;
use crate::worker::auth::Allowlist;
use crate::worker::keys::CachedKey;
use crate::worker::quota;

use crate::downstream::{BodyRead, ClientConn, HeldBody};
use crate::http::io::Reply;
use crate::http::{Framing, RequestHead};
use crate::metrics;
use crate::store;
use crate::upstream::Slot;
use crate::worker::Worker;

/// What one request/response exchange has done so far.
pub struct Exchange {
    pub request_id: RequestId,
    received: Instant,
    /// Once the response head went out, errors can only close the connection.
    response_started: bool,
    status: u16,
    /// The request body has been read from the client entirely.
    body_done: bool,
    /// The client connection must close after this exchange.
    close: bool,
    /// The authenticated key (absent when authentication failed).
    pub key: Option<Rc<CachedKey>>,
    /// What the request did, for the metrics and its event.
    pub record: Record,
    /// The endpoint, as the metrics label it (read while the head is whole).
    route: metrics::Endpoint,
    /// A cache miss whose answer the relay may store.
    cache: Option<Box<crate::cache::Miss>>,
}

/// Proxies one `/v1/…` request. Returns whether the connection may be reused.
pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let mut exchange = Exchange {
        request_id: RequestId::of(head, &conn.buf),
        received: Instant::now(),
        response_started: false,
        status: 0,
        body_done: !head.has_body(),
        close: false,
        key: None,
        record: Record::default(),
        route: metrics::Endpoint::of(head.path(&conn.buf)),
        cache: None,
    };
    let result = proxy(worker, conn, head, &mut exchange).await;
    finish(worker, conn, head, exchange, result).await
}

/// The phases every request goes through, decided here once:
/// authenticate → the path in normal form → plan (routed to a registered
/// model, or the pass-through) → `authorize` (allowlists, budgets,
/// `max_requests`) → cache → forward → relay.
async fn proxy(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    exchange: &mut Exchange,
) -> Result<(), ProxyError> {
    let key = crate::worker::auth::authenticate(worker, head, &conn.buf)?;
    exchange.key = Some(key.clone());
    event::want_bodies(worker, exchange);
    let path = head.path(&conn.buf);
    route::check_path(path)?;
    if let Some(endpoint) = routed::endpoint(head, path)
        && routed::active(worker)?
    {
        return routed::handle(worker, conn, head, &key, endpoint, exchange).await;
    }
    pass_through(worker, conn, head, &key, None, exchange).await
}

/// What a request names as its model, for the allowlists.
#[derive(Clone, Copy)]
enum Named<'a> {
    /// The `model` of its JSON body, as the upstream will read it.
    Model(&'a str),
    /// Nothing: it has no body.
    Nothing,
    /// Not known: a body that was not read, is not a JSON object, or has no
    /// plain string `model`.
    Unknown,
}

impl<'a> Named<'a> {
    fn in_body(body: &'a [u8]) -> Self {
        match fields::RoutingFields::parse(body) {
            Ok(Some(fields)) => Named::Model(fields.model),
            _ => Named::Unknown,
        }
    }
}

/// The checks between the plan and the answer, the same for every request
/// that may reach an upstream or be answered from the cache, in this order:
/// the key's and its user's `models` allowlists, their budgets (with a hold
/// of `estimate`, the most the request may cost, when it is priced), then
/// `max_requests` (which charges the request). A key with an allowlist may
/// send a body only when it names an allowed model. Returns the spend the
/// budget check saw and the hold, settled once the cost is known.
async fn authorize<'w>(
    worker: &'w Worker,
    key: &'w CachedKey,
    named: Named<'_>,
    estimate: store::Money,
) -> Result<(store::Spend, quota::BudgetHold<'w>), ProxyError> {
    let allowlist = Allowlist::of(&key.view);
    match named {
        Named::Model(model) if !allowlist.allows(model) => {
            return Err(ProxyError::ModelAccessDenied(format!(
                "this API key cannot use model {model:?}"
            )));
        }
        Named::Unknown if allowlist.is_restricted() => {
            return Err(ProxyError::ModelAccessDenied(
                "this API key may use only some models: a request body must be a JSON object \
                 naming one of them in \"model\""
                    .into(),
            ));
        }
        _ => {}
    }
    let spend = routed::check_budgets(worker, &key.view)?;
    let hold = admit::reserve(worker, key, estimate).await?;
    admit::admit(worker, key).await?;
    Ok((spend, hold))
}

/// Reads the request's whole body (up to `MAX_REQUEST_SIZE`, within the
/// worker's budget for bodies held whole) for a decision that needs it,
/// with `headroom` spare bytes for a rewrite in place; the request's event
/// gets it too, when it keeps bodies.
async fn read_body<'w>(
    worker: &'w Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    exchange: &mut Exchange,
    headroom: usize,
) -> Result<HeldBody<'w>, ProxyError> {
    let limits = &worker.settings.limits;
    let read = BodyRead {
        limit: limits.max_body_bytes as usize,
        headroom,
        timeout: limits.body_timeout,
    };
    let body = conn
        .read_held_body(&worker.bodies, head, &read, &mut exchange.body_done)
        .await?;
    if let Some(capture) = exchange.record.request.as_mut() {
        capture.feed(&body);
    }
    Ok(body)
}

/// To the key's project's provider. The client's body streams upstream as
/// it arrives, unless a decision needs it first: the cache key, or the
/// model a restricted key names. `read` is the body (and the model it
/// names) when routing has read it already (a model that is not
/// registered).
async fn pass_through(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    key: &CachedKey,
    read: Option<(&[u8], Option<&str>)>,
    exchange: &mut Exchange,
) -> Result<(), ProxyError> {
    let upstream_auth = admit::project_upstream_auth(key)?;
    let consult = cached::consult(worker, head, &conn.buf);
    let route = match route::route(worker, head, &conn.buf) {
        Ok(found) => Ok(found),
        // A `HEAD` the provider does not take may still be answered from
        // the cache (from `GET`'s entry); it is never sent upstream.
        Err(error @ ProxyError::MethodNotAllowed { .. })
            if head.method == http::Method::HEAD && consult.is_some() =>
        {
            Err(error)
        }
        Err(error) => return Err(error),
    };
    let limit = worker.settings.limits.max_body_bytes;
    if let Framing::Length(length) = head.framing
        && length > limit
    {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let restricted = Allowlist::of(&key.view).is_restricted();
    let owned;
    let (body, named) = match read {
        Some((body, model)) => (Some(body), model.map_or(Named::Unknown, Named::Model)),
        None if !head.has_body() => (None, Named::Nothing),
        None if restricted || consult.is_some() => {
            owned = read_body(worker, conn, head, exchange, 0).await?;
            let named = if restricted {
                Named::in_body(&owned)
            } else {
                Named::Unknown
            };
            (Some(&owned[..]), named)
        }
        None => (None, Named::Unknown),
    };
    // Unpriced: nothing is held, but a key at or over its budget is refused.
    let _hold = authorize(worker, key, named, store::Money(0)).await?;
    if let Some(consult) = consult
        && cached::lookup(
            worker,
            conn,
            head,
            key,
            consult,
            body.unwrap_or_default(),
            exchange,
        )
        .await?
    {
        return Ok(());
    }
    let (index, provider) = route?;
    // The body read already goes out with the client's own request target.
    let target = body.map(|_| head.target.of(&conn.buf).to_vec());
    let destination = forward::Destination {
        slot: Slot::Provider(index),
        provider,
        authorization: upstream_auth,
        routed: target.as_deref().zip(body),
    };
    let response = forward::forward(worker, conn, head, &destination, exchange).await?;
    relay::relay(
        worker,
        conn,
        head,
        &destination,
        response,
        exchange,
        Default::default(),
    )
    .await
}

async fn finish(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    mut exchange: Exchange,
    result: Result<(), ProxyError>,
) -> bool {
    if let Err(error) = &result {
        exchange.status = error.status().as_u16();
        if exchange.response_started
            || matches!(error, ProxyError::ClientGone | ProxyError::ClientStalled)
        {
            exchange.close = true;
        } else {
            if !exchange.body_done {
                exchange.body_done = conn.discard_buffered_body(head);
            }
            exchange.close |=
                error.must_close() || !exchange.body_done || !head.keep_alive || worker.draining();
            let reply = Reply {
                close: exchange.close,
                head_only: head.method == http::Method::HEAD,
            };
            error.render(&mut conn.out, exchange.request_id.as_str(), reply);
            if !conn.send_out().await {
                exchange.close = true;
            }
        }
    }
    // One clock reading ends the request for the metrics and the event.
    let ended = Instant::now();
    if let Some(mut metrics) = worker.metrics() {
        metrics.record(
            exchange.route,
            exchange.status,
            ended.saturating_duration_since(exchange.received),
            &exchange.record,
            result.as_ref().err(),
        );
    }
    // Field values are only evaluated for enabled events: no clock read
    // when the event is filtered out.
    let received = exchange.received;
    match &result {
        Err(error) if error.status().is_server_error() => tracing::warn!(
            request_id = exchange.request_id.as_str(),
            method = %head.method,
            path = %log_path(head, &conn.buf),
            status = exchange.status,
            elapsed_us = elapsed_us(received),
            %error,
            "request failed"
        ),
        Err(error) => tracing::debug!(
            request_id = exchange.request_id.as_str(),
            method = %head.method,
            path = %log_path(head, &conn.buf),
            status = exchange.status,
            elapsed_us = elapsed_us(received),
            %error,
            "request rejected"
        ),
        Ok(()) => tracing::debug!(
            request_id = exchange.request_id.as_str(),
            method = %head.method,
            path = %log_path(head, &conn.buf),
            status = exchange.status,
            elapsed_us = elapsed_us(received),
            "request served"
        ),
    }
    let close = exchange.close;
    event::record(worker, head, &conn.buf, exchange, &result, ended);
    !close
}

fn elapsed_us(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

fn log_path<'a>(head: &RequestHead, buf: &'a [u8]) -> Cow<'a, str> {
    if buf.len() >= head.len {
        String::from_utf8_lossy(head.path(buf))
    } else {
        Cow::Borrowed("-")
    }
}
