//! The request path. `handle` reads top to bottom, one phase after another,
//! each given the request's `Session`:
//!
//! 1. authenticate: the virtual key (`worker::auth`);
//! 2. plan (`plan`): the path in normal form, then everything decided
//!    before anything is checked or sent, in one value: the body read whole
//!    when a decision needs it, the model the allowlists check, the
//!    deployments to try (a registered model's) or the key's project's
//!    provider (the pass-through), whether the cache applies, and the most
//!    the request may cost;
//! 3. admit, once (`admit`): allowlists, budgets (holding the estimate),
//!    `max_requests`;
//! 4. the cache lookup, once (`cached`): a hit is answered here;
//! 5. forward over the plan's candidates (`forward`): retries and
//!    fallbacks, until one answers; each deployment is sent the request in
//!    its own dialect (`prepare`);
//! 6. relay the answer as it comes (`relay`), or translated into the
//!    client's dialect (`translate`), metering a priced one (`charge`), then
//!    charge what it cost;
//! 7. finish: runs exactly once per request, whatever happened before it:
//!    a failure is answered (`answer_error`, the only place an error is
//!    rendered), then the request is counted in the metrics, logged, and
//!    its event made (`event`).

mod admit;
mod cached;
mod charge;
mod counted;
mod event;
pub mod fields;
mod forward;
mod path;
mod plan;
mod prepare;
mod relay;
mod translate;

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Instant;

use crate::downstream::ClientConn;
use crate::error::{ErrorStyle, ProxyError};
use crate::http::io::Reply;
use crate::http::{RequestHead, RequestId};
use crate::metrics;
use crate::record::Record;
use crate::worker::Worker;
use crate::worker::keys::CachedKey;

/// One request on its way through the phases: the worker, the client's
/// connection and request head, and what the request has done so far.
pub struct Session<'a> {
    worker: &'a Worker,
    conn: &'a mut ClientConn,
    head: &'a RequestHead,
    request_id: RequestId,
    received: Instant,
    /// Once the response head went out, errors can only close the connection.
    response_started: bool,
    status: u16,
    /// The request body has been read from the client entirely.
    body_done: bool,
    /// The client connection must close after this request.
    close: bool,
    /// The authenticated key (absent when authentication failed).
    key: Option<Rc<CachedKey>>,
    /// What the request did, for the metrics and its event.
    record: Record,
    /// The endpoint, as the metrics label it (read while the head is whole).
    endpoint: metrics::Endpoint,
    /// A cache miss whose answer the relay may store.
    cache: Option<Box<crate::cache::Miss>>,
}

/// Proxies one `/v1/…` request. Returns whether the connection may be reused.
pub async fn handle(worker: &Worker, conn: &mut ClientConn, head: &RequestHead) -> bool {
    let mut session = Session {
        worker,
        request_id: RequestId::of(head, &conn.buf),
        received: Instant::now(),
        response_started: false,
        status: 0,
        body_done: !head.has_body(),
        close: false,
        key: None,
        record: Record::default(),
        endpoint: metrics::Endpoint::of(head.path(&conn.buf)),
        cache: None,
        conn,
        head,
    };
    let result = run(&mut session).await;
    if let Err(error) = &result {
        answer_error(&mut session, error).await;
    }
    finish(session, result)
}

/// The phases, in the order every request goes through them.
async fn run(s: &mut Session<'_>) -> Result<(), ProxyError> {
    let key = crate::worker::auth::authenticate(s.worker, s.head, &s.conn.buf)?;
    s.key = Some(key.clone());
    event::want_bodies(s);
    let mut plan = plan::plan(s, &key).await?;
    let admitted = admit::admit(
        s.worker,
        &key,
        &plan.named,
        plan.estimate,
        plan.cap.as_deref(),
    )
    .await?;
    if let Some(max_tokens) = admitted.max_tokens {
        plan.cap_max_tokens(max_tokens)?;
    }
    // The model, when the key counts its spend on it apart.
    let model = match &plan.named {
        plan::Named::Model(model) => key.model_parties.get_key_value(&**model),
        _ => None,
    }
    .map(|(model, _)| model.as_str());
    if let plan::Target::Counted(tokens) = plan.target {
        drop(admitted);
        return counted::answer(s, tokens).await;
    }
    if let Some(consult) = plan.consult
        && cached::lookup(s, &key, consult, plan.body()).await?
    {
        return Ok(());
    }
    let forward::Forwarded {
        mut response,
        destination,
        stream,
        held: _held,
        translation,
    } = forward::to_candidates(s, plan).await?;
    let mut meter = charge::Meter::new((&destination, &response), stream, &key, admitted, model);
    if let Some(translation) = translation {
        // Boxed: a large future, inline it would grow (and be copied with)
        // every request's, while only translated answers take it.
        let relay = translate::relay(s, &destination, response, translation, &mut meter);
        let result = Box::pin(relay).await;
        meter.charge(s);
        return result;
    }
    if let Some(length) = meter.whole_answer(s.head, &response) {
        meter.price_whole_answer(s, &mut response, length).await?;
    }
    let result = relay::relay(s, &destination, response, meter.extras()).await;
    // Whatever was relayed is charged, a stream cut short included.
    meter.charge(s);
    result
}

/// Answers a failed request with its error, if the client can still be
/// answered and nothing went out yet; otherwise the connection closes.
async fn answer_error(session: &mut Session<'_>, error: &ProxyError) {
    let (worker, head) = (session.worker, session.head);
    session.status = error.status().as_u16();
    if session.response_started || error.client_lost() {
        session.close = true;
        return;
    }
    if !session.body_done {
        session.body_done = session.conn.discard_buffered_body(head);
    }
    session.close |=
        error.must_close() || !session.body_done || !head.keep_alive || worker.draining();
    let reply = Reply {
        close: session.close,
        head_only: head.method == http::Method::HEAD,
    };
    // An Anthropic client reads Anthropic's error shape.
    let style = match session.endpoint {
        metrics::Endpoint::Messages | metrics::Endpoint::MessagesCountTokens => {
            ErrorStyle::Anthropic
        }
        _ => ErrorStyle::OpenAi,
    };
    let (out, request_id) = (&mut session.conn.out, session.request_id.as_str());
    error.render_as(style, out, request_id, reply);
    if !session.conn.send_out().await {
        session.close = true;
    }
}

/// Ends the request: counts it in the metrics, logs it and makes its event.
/// Returns whether the connection may be reused.
fn finish(session: Session<'_>, result: Result<(), ProxyError>) -> bool {
    let (worker, head) = (session.worker, session.head);
    // One clock reading ends the request for the metrics and the event.
    let ended = Instant::now();
    if let Some(mut metrics) = worker.metrics() {
        metrics.record(
            session.endpoint,
            session.status,
            ended.saturating_duration_since(session.received),
            &session.record,
            result.as_ref().err(),
        );
    }
    // Field values are only evaluated for enabled events: no clock read
    // when the event is filtered out.
    let received = session.received;
    match &result {
        Err(error) if error.status().is_server_error() => tracing::warn!(
            request_id = session.request_id.as_str(),
            method = %head.method,
            path = %log_path(head, &session.conn.buf),
            status = session.status,
            elapsed_us = elapsed_us(received),
            %error,
            "request failed"
        ),
        Err(error) => tracing::debug!(
            request_id = session.request_id.as_str(),
            method = %head.method,
            path = %log_path(head, &session.conn.buf),
            status = session.status,
            elapsed_us = elapsed_us(received),
            %error,
            "request rejected"
        ),
        Ok(()) => tracing::debug!(
            request_id = session.request_id.as_str(),
            method = %head.method,
            path = %log_path(head, &session.conn.buf),
            status = session.status,
            elapsed_us = elapsed_us(received),
            "request served"
        ),
    }
    let close = session.close;
    event::record(session, &result, ended);
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
