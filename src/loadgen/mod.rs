//! The load generator behind `llm-proxy benchmark`, on the same
//! thread-per-core monoio runtime as the gateway so that the client costs
//! less than what it measures.
//!
//! ```text
//! schedule   which request goes next and when: closed loop, or open loop at a fixed rate
//! request    the request, serialized once; only X-REQUEST-START changes per request
//! conn       connecting (TCP, TLS) with the gateway's upstream connector; why a connect failed
//! exchange   one request and its response: framing, timings, upstream split, cache headers
//! sse        server-sent events in a streamed body: first event, gaps, `[DONE]`
//! record     per-thread histograms and counts, merged at the end
//! sample     sample responses for --debug and error messages, secrets redacted
//! worker     the probe request, and each thread's connection loops
//! ```
//!
//! A run is a probe (one connection, one request: an unreachable target or
//! a refused token stops everything before any load is sent), then the
//! measured phase: every connection opens, then all start together.

mod conn;
mod exchange;
mod record;
mod request;
mod sample;
mod schedule;
mod sse;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use record::{CacheCounts, ErrorKind, Percentiles, Recorder};
pub use request::{RESERVED_HEADERS, RequestSpec};
pub use sample::{Sample, redact};

use crate::providers::Target;
use crate::runtime::{self, Driver};
use request::RequestTemplate;
use schedule::Schedule;
use worker::{Probe, Shared};

/// How often the progress callback runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A run that could not take place; each variant maps to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad arguments, found before anything was sent.
    #[error("{0}")]
    Usage(String),
    /// The probe connection failed.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The first response was 401 or 403.
    #[error("authentication failed ({status}): {message}")]
    Auth { status: u16, message: String },
    /// The client threads could not start.
    #[error("cannot start the client threads: {0}")]
    Runtime(std::io::Error),
}

impl LoadError {
    /// 2 unreachable, 3 authentication failed, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Unreachable { .. } => 2,
            LoadError::Auth { .. } => 3,
            LoadError::Usage(_) | LoadError::Runtime(_) => 1,
        }
    }
}

/// A validated run.
pub struct LoadSettings {
    /// The base URL as given, for messages.
    pub base_url: String,
    pub target: Target,
    pub request: RequestSpec,
    /// The body asked for `"stream": true`.
    pub stream: bool,
    pub connections: usize,
    pub workers: usize,
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    /// Open loop: requests per second in total.
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Keep one sample response per status.
    pub debug: bool,
    /// Set to end the run early (Ctrl-C).
    pub stop: Arc<AtomicBool>,
}

/// What a finished run measured.
pub struct LoadReport {
    pub recorder: Recorder,
    /// From the start of the measured phase to its end (the probe's own
    /// time when there was nothing after it).
    pub elapsed: Duration,
    /// Requests of the measured phase, the probe not included.
    pub measured_requests: u64,
    pub interrupted: bool,
    pub driver: Driver,
    pub workers: usize,
}

impl LoadReport {
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        if self.measured_requests > 0 {
            self.measured_requests as f64 / secs
        } else {
            self.recorder.requests() as f64 / secs
        }
    }
}

/// The request head that is sent, with credentials redacted (for `--debug`).
pub fn describe_request(settings: &LoadSettings) -> String {
    let template = RequestTemplate::new(&settings.request, &settings.target);
    let token = settings.request.token.as_deref();
    template
        .head_text()
        .lines()
        .map(|line| match line.split_once(':') {
            Some((name, _)) if sample::is_credential_header(name.trim()) => {
                format!("{name}: {}", sample::REDACTED)
            }
            _ => redact(line, token),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the probe, then the measured phase; calls `progress(completed)`
/// every 100 ms from this thread while the load runs.
pub fn run(settings: LoadSettings, mut progress: impl FnMut(u64)) -> Result<LoadReport, LoadError> {
    let tls = conn::tls_connector(&settings.target, settings.ca_file.as_deref())
        .map_err(|e| LoadError::Usage(format!("{e:#}")))?;
    let connections = settings.connections.max(1);
    let workers = settings.workers.clamp(1, connections);
    let shared = Arc::new(Shared {
        template: RequestTemplate::new(&settings.request, &settings.target),
        target: settings.target.clone(),
        tls,
        stream: settings.stream,
        timeout: settings.timeout,
        debug: settings.debug,
        token: settings.request.token.clone(),
        schedule: Schedule::new(
            settings.requests,
            settings.duration,
            settings.rate,
            connections,
            settings.stop.clone(),
        ),
    });
    let driver = Driver::detect();
    let probe_started = Instant::now();
    let mut recorder = match run_probe(&shared, driver)? {
        Probe::Done(recorder) => *recorder,
        Probe::Unreachable(error) => {
            return Err(LoadError::Unreachable {
                url: settings.base_url.clone(),
                reason: error.reason,
            });
        }
        Probe::AuthFailed { status, message } => {
            return Err(LoadError::Auth { status, message });
        }
    };
    let probe_time = probe_started.elapsed();
    if !shared.schedule.has_more() {
        return Ok(LoadReport {
            recorder,
            elapsed: probe_time,
            measured_requests: 0,
            interrupted: shared.schedule.stopped(),
            driver,
            workers,
        });
    }

    let (results_tx, results_rx) = mpsc::channel::<(Recorder, Instant)>();
    let worker_shared = shared.clone();
    let handles = runtime::spawn_workers("bench", workers, false, driver, move |index| {
        let shared = worker_shared.clone();
        let results = results_tx.clone();
        let mine = connections / workers + usize::from(index < connections % workers);
        async move {
            let recorder = worker::worker(shared, mine).await;
            let _ = results.send((recorder, Instant::now()));
        }
    })
    .map_err(LoadError::Runtime)?;
    let mut ended = None;
    let mut reported = 0;
    while reported < workers {
        match results_rx.recv_timeout(PROGRESS_EVERY) {
            Ok((part, at)) => {
                recorder.merge(part);
                ended = ended.max(Some(at));
                reported += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => progress(shared.schedule.completed()),
            // A worker thread died without reporting (a panic aborts the
            // process, so this is not expected): report what arrived.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    progress(shared.schedule.completed());
    for handle in handles {
        let _ = handle.join();
    }
    let measured_requests = recorder.requests().saturating_sub(1);
    let elapsed = match (shared.schedule.epoch(), ended) {
        (Some(epoch), Some(ended)) => ended.saturating_duration_since(epoch),
        _ => probe_time,
    };
    Ok(LoadReport {
        recorder,
        elapsed,
        measured_requests,
        interrupted: shared.schedule.stopped(),
        driver,
        workers,
    })
}

/// Runs the probe on a runtime thread of its own.
fn run_probe(shared: &Arc<Shared>, driver: Driver) -> Result<Probe, LoadError> {
    let (tx, rx) = mpsc::channel::<Probe>();
    let shared = shared.clone();
    let handles = runtime::spawn_workers("bench-probe", 1, false, driver, move |_| {
        let shared = shared.clone();
        let tx = tx.clone();
        async move {
            let _ = tx.send(worker::probe(shared).await);
        }
    })
    .map_err(LoadError::Runtime)?;
    for handle in handles {
        let _ = handle.join();
    }
    rx.try_recv()
        .map_err(|_| LoadError::Runtime(std::io::Error::other("the probe thread ended early")))
}
