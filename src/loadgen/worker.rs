//! The request loops: the probe (one request before the run, on its own
//! connection) and, per client thread, its share of the connections, each
//! sending its next request when the previous one is over.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio_rustls::TlsConnector;

use super::conn::{self, Conn, ConnectError};
use super::exchange::{ExchangeSpec, exchange};
use super::record::{Measured, Recorder};
use super::request::RequestTemplate;
use super::schedule::Schedule;
use crate::providers::Target;
use crate::upstream::DnsCache;

/// Pause after a failed connect, so that a dead target is not hammered.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Everything the client threads share; immutable but for the schedule.
pub struct Shared {
    pub target: Target,
    pub template: RequestTemplate,
    pub tls: TlsConnector,
    pub stream: bool,
    pub timeout: Duration,
    pub debug: bool,
    /// Redacted from samples.
    pub token: Option<String>,
    pub schedule: Schedule,
}

impl Shared {
    fn spec(&self) -> ExchangeSpec<'_> {
        ExchangeSpec {
            template: &self.template,
            stream: self.stream,
            timeout: self.timeout,
        }
    }

    /// Records a complete response, redacting its sample.
    fn record(&self, recorder: &mut Recorder, mut measured: Measured) {
        measured.sample = measured
            .sample
            .take()
            .map(|sample| sample.redacted(self.token.as_deref()));
        recorder.response(measured);
    }
}

/// How the probe went.
pub enum Probe {
    /// Connected and got a response (or a request-level error), recorded.
    Done(Box<Recorder>),
    /// Could not connect at all.
    Unreachable(ConnectError),
    /// The first response was 401 or 403; the server's message.
    AuthFailed { status: u16, message: String },
}

/// Connects and sends ticket 0 alone: a target that cannot be reached, or
/// that refuses the token, ends the run before any load is sent.
pub async fn probe(shared: Arc<Shared>) -> Probe {
    let dns = DnsCache::default();
    let mut recorder = Recorder::new();
    let mut conn = match conn::connect(&shared.target, shared.timeout, &dns, &shared.tls).await {
        Ok(conn) => conn,
        Err(error) => return Probe::Unreachable(error),
    };
    recorder.connections_opened += 1;
    let ticket = shared.schedule.probe();
    let mut out = Vec::new();
    let exchanged = exchange(&mut conn, &mut out, &shared.spec(), ticket.intended, |_| {
        true
    })
    .await;
    shared.schedule.finished_one();
    match exchanged.result {
        Ok(measured) if matches!(measured.status, 401 | 403) => {
            let message = measured
                .sample
                .as_ref()
                .map(|sample| sample.error_message(shared.token.as_deref()))
                .unwrap_or_default();
            Probe::AuthFailed {
                status: measured.status,
                message,
            }
        }
        Ok(mut measured) => {
            if !shared.debug {
                measured.sample = None;
            }
            shared.record(&mut recorder, measured);
            Probe::Done(Box::new(recorder))
        }
        Err(kind) => {
            recorder.error(kind);
            Probe::Done(Box::new(recorder))
        }
    }
}

/// One client thread: runs `connections` request loops to the end of the
/// run and returns what they recorded.
pub async fn worker(shared: Arc<Shared>, connections: usize) -> Recorder {
    let recorder = Rc::new(RefCell::new(Recorder::new()));
    let dns = Rc::new(DnsCache::default());
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            monoio::spawn(connection_loop(
                shared.clone(),
                recorder.clone(),
                dns.clone(),
            ))
        })
        .collect();
    for task in tasks {
        task.await;
    }
    Rc::try_unwrap(recorder)
        .map(RefCell::into_inner)
        .unwrap_or_else(|shared| shared.replace(Recorder::new()))
}

async fn connection_loop(shared: Arc<Shared>, recorder: Rc<RefCell<Recorder>>, dns: Rc<DnsCache>) {
    let schedule = &shared.schedule;
    let spec = shared.spec();
    let mut out = Vec::with_capacity(1024);
    let mut conn = open(&shared, &recorder, &dns).await;
    schedule.start_together().await;
    while let Some(ticket) = schedule.claim() {
        // Latency counts from the intended time only when the request is
        // late because every connection was busy; a connection that was
        // free sleeps until then, and the timer's own lateness (its
        // resolution is a millisecond) is the client's, not the target's.
        let mut intended = ticket.intended;
        if let Some(at) = intended
            && at > Instant::now()
        {
            monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
            intended = None;
        }
        let Ok(live) = &mut conn else {
            if let Err(error) = &conn {
                recorder.borrow_mut().error(error.kind);
            }
            schedule.finished_one();
            monoio::time::sleep(CONNECT_BACKOFF).await;
            conn = open(&shared, &recorder, &dns).await;
            continue;
        };
        let exchanged = exchange(live, &mut out, &spec, intended, |status| {
            shared.debug && recorder.borrow().wants_sample(status)
        })
        .await;
        match exchanged.result {
            Ok(measured) => shared.record(&mut recorder.borrow_mut(), measured),
            Err(kind) => recorder.borrow_mut().error(kind),
        }
        schedule.finished_one();
        if !exchanged.reusable && schedule.has_more() {
            conn = open(&shared, &recorder, &dns).await;
        }
    }
}

async fn open(
    shared: &Shared,
    recorder: &RefCell<Recorder>,
    dns: &DnsCache,
) -> Result<Conn, ConnectError> {
    let conn = conn::connect(&shared.target, shared.timeout, dns, &shared.tls).await;
    if conn.is_ok() {
        recorder.borrow_mut().connections_opened += 1;
    }
    conn
}
