//! The request's event, made by `finish` from the session's record and
//! pushed into the worker's event buffer: field moves and copies, no
//! serialization, no lock, no syscall (the writer thread does the rest).

use std::time::Instant;

use super::Session;
use crate::error::ProxyError;
use crate::events::{Bodies, InlinePath, KeyIds, RequestEvent};
use crate::record::Capture;

/// With bodies on, asks the forward and the relay to keep both payloads.
pub fn want_bodies(s: &mut Session<'_>) {
    if let Some(limit) = s.worker.events.borrow().body_limit() {
        Capture::want(&mut s.record.request, limit);
        Capture::want(&mut s.record.response, limit);
    }
}

pub fn record(session: Session<'_>, result: &Result<(), ProxyError>, end: Instant) {
    let (worker, head, buf) = (session.worker, session.head, &session.conn.buf);
    let Ok(mut events) = worker.events.try_borrow_mut() else {
        return;
    };
    if !events.enabled() {
        return;
    }
    let record = session.record;
    let path = if buf.len() >= head.len {
        head.path(buf)
    } else {
        b"-"
    };
    let bodies = events.body_limit().map(|_| {
        Box::new(Bodies {
            request: record.request,
            response: record.response,
        })
    });
    events.push(RequestEvent {
        request_id: session.request_id,
        end,
        duration_ns: end.saturating_duration_since(session.received).as_nanos() as u64,
        worker: worker.id as u16,
        key: session.key.map(|key| KeyIds {
            key_id: key.view.key_id,
            project_id: key.view.project_id,
            user_id: key.view.user_id.as_deref().map(Into::into),
        }),
        model: record.model,
        method: head.method.clone(),
        path: InlinePath::new(path),
        status: session.status,
        error: result.as_ref().err().map(|error| error.table().2),
        upstream_ns: record.upstream_ns,
        first_byte_ns: record.first_byte_ns,
        usage: record.usage,
        cost: record.cost,
        cache: record.cache,
        response_complete: record.response_complete,
        bodies,
    });
}
