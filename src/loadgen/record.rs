//! Recording outcomes: one [`Recorder`] per client thread (no sharing on the
//! request loop), merged into one when the run is over.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::sample::Sample;

/// Largest time recorded, in nanoseconds (one hour); longer ones saturate.
const MAX_NANOS: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits kept by the histograms.
const SIGFIG: u8 = 3;
/// Proxy workers told apart by `X-PROXY-CACHE-WORKER`: indices 0 to 1023.
/// A higher index is ignored, so a target cannot make the per-worker counts
/// grow without bound.
pub const MAX_CACHE_WORKERS: u16 = 1024;

/// Why a request produced no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    ConnectRefused,
    ConnectTimeout,
    /// Any other connect failure (DNS, unreachable network, ...).
    Connect,
    Tls,
    /// The connection broke (reset, closed) before the response was complete.
    Reset,
    /// No complete response within `--timeout`.
    Timeout,
    /// The response was not valid HTTP/1.1.
    Protocol,
    /// A 2xx streamed response that did not end with `data: [DONE]`.
    IncompleteStream,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
        ErrorKind::IncompleteStream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Connect => "connect_error",
            ErrorKind::Tls => "tls",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::IncompleteStream => "incomplete_stream",
        }
    }
}

/// What a response said about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    Hit,
    Miss,
    Bypass,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CacheCounts {
    pub hit: u64,
    pub miss: u64,
    pub bypass: u64,
}

impl CacheCounts {
    pub fn add(&mut self, state: CacheState) {
        match state {
            CacheState::Hit => self.hit += 1,
            CacheState::Miss => self.miss += 1,
            CacheState::Bypass => self.bypass += 1,
        }
    }

    pub fn merge(&mut self, other: &CacheCounts) {
        self.hit += other.hit;
        self.miss += other.miss;
        self.bypass += other.bypass;
    }

    pub fn total(&self) -> u64 {
        self.hit + self.miss + self.bypass
    }

    /// Hits among the responses that named a cache state; `None` when none did.
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.hit as f64 / total as f64)
    }
}

/// Timings of one complete response; durations count from the request's
/// start (its intended send time in an open loop).
#[derive(Debug)]
pub struct Measured {
    pub status: u16,
    pub latency: Duration,
    pub ttfb: Duration,
    /// Upstream time and proxy overhead, from `X-UPSTREAM-REQUEST-START/STOP`.
    pub split: Option<(Duration, Duration)>,
    pub cache: Option<CacheState>,
    /// `X-PROXY-CACHE-WORKER`: the proxy worker that answered, below
    /// [`MAX_CACHE_WORKERS`].
    pub cache_worker: Option<u16>,
    /// Streamed requests only.
    pub stream: Option<StreamMeasured>,
    pub sample: Option<Sample>,
}

#[derive(Debug, Clone, Copy)]
pub struct StreamMeasured {
    pub events: u32,
    pub first_event: Option<Duration>,
    pub mean_gap: Option<Duration>,
    pub done: bool,
}

pub struct Recorder {
    pub latency: Histogram<u64>,
    pub ttfb: Histogram<u64>,
    pub upstream: Histogram<u64>,
    pub overhead: Histogram<u64>,
    pub first_event: Histogram<u64>,
    /// Each stream's mean inter-event gap.
    pub event_gap: Histogram<u64>,
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub cache: CacheCounts,
    /// The responses in `cache` that named the proxy worker which answered,
    /// by worker (at most [`MAX_CACHE_WORKERS`] entries).
    pub cache_workers: BTreeMap<u16, CacheCounts>,
    /// Latency of the responses the cache answered, and of those it did not
    /// (misses and bypasses).
    pub hit_latency: Histogram<u64>,
    pub miss_latency: Histogram<u64>,
    /// Streamed 2xx responses, complete or not.
    pub streams: u64,
    pub stream_events: u64,
    pub connections_opened: u64,
    /// The first response of each status, with `--debug`.
    pub samples: BTreeMap<u16, Sample>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[expect(
    clippy::expect_used,
    reason = "the bounds are constants that new_with_bounds accepts (1 <= low, high >= 2 * low, sigfig <= 5)"
)]
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NANOS, SIGFIG).expect("constant bounds are valid")
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            latency: histogram(),
            ttfb: histogram(),
            upstream: histogram(),
            overhead: histogram(),
            first_event: histogram(),
            event_gap: histogram(),
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            cache: CacheCounts::default(),
            cache_workers: BTreeMap::new(),
            hit_latency: histogram(),
            miss_latency: histogram(),
            streams: 0,
            stream_events: 0,
            connections_opened: 0,
            samples: BTreeMap::new(),
        }
    }

    pub fn wants_sample(&self, status: u16) -> bool {
        !self.samples.contains_key(&status)
    }

    pub fn error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn response(&mut self, measured: Measured) {
        if let Some(stream) = &measured.stream {
            self.streams += 1;
            self.stream_events += u64::from(stream.events);
            if !stream.done {
                self.error(ErrorKind::IncompleteStream);
                return;
            }
            if let Some(first) = stream.first_event {
                self.first_event.saturating_record(nanos(first));
            }
            if let Some(gap) = stream.mean_gap {
                self.event_gap.saturating_record(nanos(gap));
            }
        }
        *self.status.entry(measured.status).or_default() += 1;
        self.latency.saturating_record(nanos(measured.latency));
        self.ttfb.saturating_record(nanos(measured.ttfb));
        if let Some((upstream, overhead)) = measured.split {
            self.upstream.saturating_record(nanos(upstream));
            self.overhead.saturating_record(nanos(overhead));
        }
        if let Some(state) = measured.cache {
            self.cache.add(state);
            if let Some(worker) = measured.cache_worker {
                self.cache_workers.entry(worker).or_default().add(state);
            }
            let latency = nanos(measured.latency);
            match state {
                CacheState::Hit => self.hit_latency.saturating_record(latency),
                CacheState::Miss | CacheState::Bypass => {
                    self.miss_latency.saturating_record(latency)
                }
            }
        }
        if let Some(sample) = measured.sample {
            self.samples.entry(sample.status).or_insert(sample);
        }
    }

    /// Adds `other` into `self` (samples already here win).
    pub fn merge(&mut self, other: Recorder) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.ttfb.add(&other.ttfb);
        let _ = self.upstream.add(&other.upstream);
        let _ = self.overhead.add(&other.overhead);
        let _ = self.first_event.add(&other.first_event);
        let _ = self.event_gap.add(&other.event_gap);
        let _ = self.hit_latency.add(&other.hit_latency);
        let _ = self.miss_latency.add(&other.miss_latency);
        for (status, count) in other.status {
            *self.status.entry(status).or_default() += count;
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.cache.merge(&other.cache);
        for (worker, counts) in &other.cache_workers {
            self.cache_workers.entry(*worker).or_default().merge(counts);
        }
        self.streams += other.streams;
        self.stream_events += other.stream_events;
        self.connections_opened += other.connections_opened;
        for (status, sample) in other.samples {
            self.samples.entry(status).or_insert(sample);
        }
    }

    /// Requests that ended, whatever the outcome.
    pub fn requests(&self) -> u64 {
        self.status.values().sum::<u64>() + self.errors_total()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Responses that named a cache state but no proxy worker.
    pub fn cache_without_worker(&self) -> u64 {
        let named: u64 = self.cache_workers.values().map(CacheCounts::total).sum();
        self.cache.total().saturating_sub(named)
    }
}

/// The usual summary of one histogram, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// `None` when nothing was recorded.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        Some(Self {
            count: histogram.len(),
            min: histogram.min_nz(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: u16, ms: u64) -> Measured {
        Measured {
            status,
            latency: Duration::from_millis(ms),
            ttfb: Duration::from_millis(ms / 2),
            split: Some((Duration::from_millis(1), Duration::from_micros(20))),
            cache: Some(CacheState::Hit),
            cache_worker: None,
            stream: None,
            sample: None,
        }
    }

    fn cached(state: CacheState, worker: Option<u16>) -> Measured {
        Measured {
            cache: Some(state),
            cache_worker: worker,
            ..ok(200, 1)
        }
    }

    #[test]
    fn every_request_is_counted_once() {
        let mut a = Recorder::new();
        a.response(ok(200, 10));
        a.error(ErrorKind::Reset);
        let mut incomplete = ok(200, 5);
        incomplete.stream = Some(StreamMeasured {
            events: 3,
            first_event: Some(Duration::from_millis(1)),
            mean_gap: None,
            done: false,
        });
        a.response(incomplete);
        let mut b = Recorder::new();
        b.response(ok(429, 20));
        a.merge(b);
        assert_eq!(a.requests(), 4);
        assert_eq!(a.status.get(&200), Some(&1));
        assert_eq!(a.errors.get(&ErrorKind::IncompleteStream), Some(&1));
        assert_eq!(a.cache.hit, 2);
        assert_eq!(a.cache.hit_ratio(), Some(1.0));
        assert_eq!(Percentiles::of(&a.hit_latency).unwrap().count, 2);
        assert!(Percentiles::of(&a.miss_latency).is_none());
        let latency = Percentiles::of(&a.latency).unwrap();
        assert_eq!(latency.count, 2);
        assert!(latency.max >= 20_000_000 && latency.max < 20_100_000);
    }

    #[test]
    fn cache_states_are_counted_per_worker_and_merged() {
        let mut a = Recorder::new();
        a.response(cached(CacheState::Miss, Some(0)));
        a.response(cached(CacheState::Hit, Some(0)));
        a.response(cached(CacheState::Hit, Some(2)));
        a.response(cached(CacheState::Hit, None));
        // A worker but no cache state: nothing to count.
        a.response(Measured {
            cache: None,
            cache_worker: Some(5),
            ..ok(200, 1)
        });
        let mut b = Recorder::new();
        b.response(cached(CacheState::Miss, Some(2)));
        b.response(cached(CacheState::Bypass, Some(1)));
        b.response(cached(CacheState::Hit, Some(0)));
        a.merge(b);

        let counts = |worker: u16| {
            let c = a.cache_workers[&worker];
            (c.hit, c.miss, c.bypass)
        };
        assert_eq!(
            a.cache_workers.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(counts(0), (2, 1, 0));
        assert_eq!(counts(1), (0, 0, 1));
        assert_eq!(counts(2), (1, 1, 0));
        assert_eq!(a.cache_workers[&0].hit_ratio(), Some(2.0 / 3.0));
        assert_eq!(a.cache.total(), 7);
        assert_eq!(a.cache_without_worker(), 1);
        assert!(Recorder::new().cache_workers.is_empty());
        assert_eq!(Recorder::new().cache_without_worker(), 0);
    }
}
