//! Which request goes next, and when: the one schedule every connection of
//! every client thread draws its requests ("tickets") from.
//!
//! Closed loop: a connection takes a ticket as soon as its previous response
//! is complete. Open loop (`--rate`): ticket `k` has an intended send time
//! fixed in advance; a free connection takes the next ticket and waits for
//! that time, and a late one is sent at once with its latency counted from
//! the intended time, so a slow server cannot hide its queueing delay
//! (coordinated omission).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long connections waiting for the others to open poll the count.
const START_POLL: Duration = Duration::from_micros(500);

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    /// Open loop only: when the request should leave.
    pub intended: Option<Instant>,
}

pub struct Schedule {
    /// Next ticket index; may run past `max_requests` once the run is over.
    next: AtomicU64,
    /// Requests finished (any outcome), for the progress line.
    completed: AtomicU64,
    max_requests: Option<u64>,
    duration: Option<Duration>,
    /// Open loop: requests per second.
    rate: Option<f64>,
    /// Connections that have finished their first connect attempt.
    ready: AtomicUsize,
    connections: usize,
    /// Start of the measured phase: once every connection is open.
    epoch: OnceLock<Instant>,
    /// Set by Ctrl-C: take no more tickets.
    stop: Arc<AtomicBool>,
}

impl Schedule {
    pub fn new(
        max_requests: Option<u64>,
        duration: Option<Duration>,
        rate: Option<f64>,
        connections: usize,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            next: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            max_requests,
            duration,
            rate,
            ready: AtomicUsize::new(0),
            connections,
            epoch: OnceLock::new(),
            stop,
        }
    }

    /// The probe's ticket (the first), sent alone before the run proper.
    pub fn probe(&self) -> Ticket {
        self.next.fetch_add(1, Ordering::Relaxed);
        Ticket {
            intended: self.rate.map(|_| Instant::now()),
        }
    }

    /// Whether any request is left after the probe.
    pub fn has_more(&self) -> bool {
        !self.stopped()
            && self
                .max_requests
                .is_none_or(|max| self.next.load(Ordering::Relaxed) < max)
    }

    /// Waits until every connection has made its first connect attempt, so
    /// that the measured phase starts with all of them open.
    pub async fn start_together(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
        while self.ready.load(Ordering::Acquire) < self.connections && !self.stopped() {
            monoio::time::sleep(START_POLL).await;
        }
        self.epoch.get_or_init(Instant::now);
    }

    /// Start of the measured phase, if it has started.
    pub fn epoch(&self) -> Option<Instant> {
        self.epoch.get().copied()
    }

    /// The next request to send, or `None` when the run is over.
    pub fn claim(&self) -> Option<Ticket> {
        if self.stopped() {
            return None;
        }
        let epoch = *self.epoch.get_or_init(Instant::now);
        let deadline = self.duration.map(|d| epoch + d);
        if self.rate.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if self.max_requests.is_some_and(|max| index >= max) {
            return None;
        }
        let intended = match self.rate {
            None => None,
            Some(rate) => {
                // Ticket 1 is the first of the measured phase.
                let at = epoch + Duration::from_secs_f64(index.saturating_sub(1) as f64 / rate);
                if deadline.is_some_and(|d| at >= d) {
                    return None;
                }
                Some(at)
            }
        };
        Some(Ticket { intended })
    }

    pub fn finished_one(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(max: Option<u64>, duration: Option<Duration>, rate: Option<f64>) -> Schedule {
        Schedule::new(max, duration, rate, 1, Arc::new(AtomicBool::new(false)))
    }

    #[test]
    fn closed_loop_hands_out_exactly_the_requests() {
        let s = schedule(Some(3), None, None);
        assert!(s.probe().intended.is_none());
        assert!(s.has_more());
        assert!(s.claim().is_some());
        assert!(s.claim().is_some());
        assert!(s.claim().is_none());
        assert!(!s.has_more());
    }

    #[test]
    fn open_loop_spaces_intended_times_and_stops_at_the_deadline() {
        let s = schedule(None, Some(Duration::from_secs(1)), Some(3000.0));
        s.probe();
        let first = s.claim().and_then(|t| t.intended).unwrap();
        let second = s.claim().and_then(|t| t.intended).unwrap();
        assert_eq!(second - first, Duration::from_nanos(333_333));
        let mut count = 2;
        while s.claim().is_some() {
            count += 1;
        }
        assert_eq!(count, 3000);
    }

    #[test]
    fn stop_flag_ends_the_run() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Schedule::new(None, None, None, 1, stop.clone());
        assert!(s.claim().is_some());
        stop.store(true, Ordering::Relaxed);
        assert!(s.claim().is_none());
    }
}
