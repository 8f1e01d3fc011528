//! The dispatcher loop: read the event log after this dispatcher's cursor,
//! deliver in batches, and move the cursor only once the sink has
//! acknowledged a batch. A crash between delivery and cursor write sends
//! that batch again (at least once); the cursor never passes an event that
//! was not delivered (no gap). Dispatchers with different names keep
//! different cursors, so each gets every event.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::json;
use super::sinks::{Logged, Refusal, Sink};
use super::stored;
use crate::store::{EventLog, StoreError};

/// How often an idle dispatcher looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a running dispatcher is asked to do (an `AtomicU8` shared with
/// whoever stops it).
pub const RUN: u8 = 0;
/// Stop after the batch in flight (SIGTERM/SIGINT).
pub const STOP: u8 = 1;
/// Deliver what is in the log, then stop (the server's own dispatcher,
/// once the writer has flushed at shutdown).
pub const DRAIN: u8 = 2;

#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// The cursor's name.
    pub name: String,
    /// Events read from the log at a time.
    pub read_ahead: usize,
    pub batch_size: usize,
    /// Deliver what is there, then return.
    pub once: bool,
    /// Failed attempts of one batch before giving up (`None`: never).
    pub max_retries: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("event log: {0}")]
    Log(#[from] StoreError),
    #[error("the sink is unreachable: {0}")]
    SinkUnreachable(String),
    #[error("the sink refused the API key: {0}")]
    SinkUnauthorized(String),
}

/// How a dispatcher ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub events: u64,
    pub cursor: u64,
    /// Events the gap records delivered stand for (lost by the server).
    pub lost: u64,
}

pub fn run(
    log: &EventLog,
    sink: &mut Sink,
    options: &DispatchOptions,
    state: &AtomicU8,
) -> Result<Delivered, DispatchError> {
    let mut cursor = log.cursor(&options.name)?;
    let mut delivered = 0;
    let mut lost = 0;
    let batch_size = options.batch_size.max(1);
    loop {
        if state.load(Ordering::Acquire) == STOP {
            break;
        }
        let events: Vec<Logged> = log
            .read_after(cursor, options.read_ahead.max(batch_size))?
            .into_iter()
            .map(|(seq, bytes)| {
                if let Some(gap) = stored::decode_gap(&bytes) {
                    report_gap(&options.name, seq, &gap);
                    lost += gap.record.lost;
                }
                (seq, json::logged_to_json(&bytes))
            })
            .collect();
        let Some(&(first, _)) = events.first() else {
            if options.once || state.load(Ordering::Acquire) == DRAIN {
                break;
            }
            pause(POLL_INTERVAL, state);
            continue;
        };
        if first > cursor + 1 {
            tracing::warn!(
                dispatcher = options.name,
                missed = first - cursor - 1,
                "events were compacted before this dispatcher delivered them"
            );
        }
        for batch in events.chunks(batch_size) {
            if !deliver(sink, batch, options, state)? {
                return Ok(Delivered {
                    events: delivered,
                    cursor,
                    lost,
                });
            }
            cursor = batch[batch.len() - 1].0;
            log.set_cursor(&options.name, cursor)?;
            delivered += batch.len() as u64;
            if state.load(Ordering::Acquire) == STOP {
                break;
            }
        }
    }
    Ok(Delivered {
        events: delivered,
        cursor,
        lost,
    })
}

/// A gap record: the server lost events there (a full disk, say). Sinks
/// get the record itself; the operator gets this line.
fn report_gap(name: &str, seq: u64, read: &stored::Read<'_, stored::Gap>) {
    let gap = &read.record;
    let lost_at = |ns: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(ns))
    };
    tracing::warn!(
        dispatcher = name,
        seq,
        node = read.node.unwrap_or(""),
        lost = gap.lost,
        first_lost_at = %lost_at(gap.first_unix_ns),
        last_lost_at = %lost_at(gap.last_unix_ns),
        "gap in the event log: the server lost {} events before seq {seq} (it could not write them)",
        gap.lost
    );
}

/// Delivers one batch, retrying with exponential backoff and jitter.
/// Returns `false` when asked to stop while waiting to retry.
fn deliver(
    sink: &mut Sink,
    batch: &[Logged],
    options: &DispatchOptions,
    state: &AtomicU8,
) -> Result<bool, DispatchError> {
    let mut failures = 0u32;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match sink.deliver(batch) {
            Ok(()) => return Ok(true),
            Err(Refusal::Unauthorized(reason)) => {
                return Err(DispatchError::SinkUnauthorized(reason));
            }
            Err(Refusal::Failed(error)) => error,
        };
        failures += 1;
        if options.max_retries.is_some_and(|max| failures > max) {
            return Err(DispatchError::SinkUnreachable(error));
        }
        // Somewhere between half and all of the backoff, so that many
        // dispatchers do not retry in step.
        let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        tracing::warn!(
            dispatcher = options.name,
            %error,
            retry_in_ms = wait.as_millis() as u64,
            "delivery failed"
        );
        if !pause(wait, state) {
            return Ok(false);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps `duration`, waking early to stop. Returns `false` when asked to stop.
fn pause(duration: Duration, state: &AtomicU8) -> bool {
    let until = Instant::now() + duration;
    loop {
        if state.load(Ordering::Acquire) == STOP {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
