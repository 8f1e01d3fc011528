//! Prometheus metrics. Each worker counts what its own requests did in a
//! `WorkerMetrics` of its own (plain integers behind the worker's
//! `RefCell`: no atomics, no locks on the request path); a `/metrics` scrape
//! takes a `Snapshot` of every worker on its own thread and renders them
//! together (`render`), each worker's series under its `worker` label and
//! every series under the server's `node` label (`NODE_ID`, constant per
//! process: it keeps several nodes apart in one Prometheus).
//!
//! Label values are bounded and never chosen by a client: `route` is one of
//! a fixed set, `model` a registered model (or key alias) a request was
//! routed by, one of the first `MAX_MODELS` a worker saw (any other name is
//! "other"), `status` a status code, `reason` a code of the error table.
//! The histograms are rendered summed over the workers, by route, model and
//! status class, so that a scrape does not grow with the number of workers
//! or of status codes (see `render`).

mod histogram;
pub mod render;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use histogram::Histogram;

use crate::error::ProxyError;
use crate::record::{CacheStatus, Record};

/// Distinct routed model names a worker gives their own label; later ones
/// are "other".
pub const MAX_MODELS: usize = 64;
/// Longer model names are counted as "other" (they are client input).
const MAX_MODEL_LEN: usize = 128;
/// Model slot of requests that named no model (label `""`).
const NO_MODEL: u8 = 0;
/// Model slot of names past the cap.
const OTHER_MODEL: u8 = MAX_MODELS as u8 + 1;
const MODEL_SLOTS: usize = MAX_MODELS + 2;

/// The endpoint a request went to, as its `route` label: a fixed set, so
/// that no client can add series by inventing paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    ChatCompletions,
    /// Anthropic's Messages API, for Anthropic clients.
    Messages,
    MessagesCountTokens,
    Completions,
    Embeddings,
    Models,
    ModelInfo,
    Moderations,
    Responses,
    ImagesGenerations,
    AudioSpeech,
    AudioTranscriptions,
    AudioTranslations,
    /// The management APIs.
    Manage,
    /// The gateway's own endpoints (`/health`, `/metrics`, `/sso/...`).
    Local,
    Other,
}

impl Endpoint {
    const ALL: [Endpoint; 16] = [
        Endpoint::ChatCompletions,
        Endpoint::Messages,
        Endpoint::MessagesCountTokens,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Models,
        Endpoint::ModelInfo,
        Endpoint::Moderations,
        Endpoint::Responses,
        Endpoint::ImagesGenerations,
        Endpoint::AudioSpeech,
        Endpoint::AudioTranscriptions,
        Endpoint::AudioTranslations,
        Endpoint::Manage,
        Endpoint::Local,
        Endpoint::Other,
    ];

    /// The known OpenAI endpoint of `path`, with or without `/v1`; `Other`
    /// for anything else.
    pub fn of(path: &[u8]) -> Endpoint {
        match path.strip_prefix(b"/v1").unwrap_or(path) {
            b"/chat/completions" => Endpoint::ChatCompletions,
            b"/messages" => Endpoint::Messages,
            b"/messages/count_tokens" => Endpoint::MessagesCountTokens,
            b"/completions" => Endpoint::Completions,
            b"/embeddings" => Endpoint::Embeddings,
            b"/models" => Endpoint::Models,
            b"/model/info" => Endpoint::ModelInfo,
            b"/moderations" => Endpoint::Moderations,
            b"/responses" => Endpoint::Responses,
            b"/images/generations" => Endpoint::ImagesGenerations,
            b"/audio/speech" => Endpoint::AudioSpeech,
            b"/audio/transcriptions" => Endpoint::AudioTranscriptions,
            b"/audio/translations" => Endpoint::AudioTranslations,
            _ => Endpoint::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Messages => "/v1/messages",
            Endpoint::MessagesCountTokens => "/v1/messages/count_tokens",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Models => "/v1/models",
            Endpoint::ModelInfo => "/v1/model/info",
            Endpoint::Moderations => "/v1/moderations",
            Endpoint::Responses => "/v1/responses",
            Endpoint::ImagesGenerations => "/v1/images/generations",
            Endpoint::AudioSpeech => "/v1/audio/speech",
            Endpoint::AudioTranscriptions => "/v1/audio/transcriptions",
            Endpoint::AudioTranslations => "/v1/audio/translations",
            Endpoint::Manage => "manage",
            Endpoint::Local => "local",
            Endpoint::Other => "other",
        }
    }
}

/// The failures counted as key rejections, by their code in the error table.
fn key_rejection(error: &ProxyError) -> Option<&'static str> {
    use ProxyError::*;
    match error {
        MissingKey
        | InvalidKey
        | KeyRevoked
        | KeyExpired
        | QuotaExhausted
        | ProjectInactive
        | KeyWithoutProject
        | ModelAccessDenied(_)
        | BudgetExceeded { .. }
        | RateLimited { .. }
        | TeamBlocked(_) => Some(error.table().2),
        _ => None,
    }
}

/// What a request's series is counted under: route, model slot and status,
/// packed in one integer so that finding the series hashes one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey(u32);

impl SeriesKey {
    fn new(route: Endpoint, model: u8, status: u16) -> Self {
        Self(route as u32 | (model as u32) << 8 | (status as u32) << 16)
    }

    fn route(self) -> Endpoint {
        Endpoint::ALL[(self.0 & 0xff) as usize]
    }

    fn model(self) -> u8 {
        (self.0 >> 8) as u8
    }

    fn status(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// One multiply for a `SeriesKey` (SipHash would cost more than the rest
/// of `record`); the product is rotated so that the bucket index, taken
/// from the low bits, depends on every bit of the key.
#[derive(Default)]
struct SeriesHasher(u64);

impl Hasher for SeriesHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u32(byte.into());
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What requests of one route, model and status did.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// From the request head read to the request finished (its count is
    /// the number of requests).
    pub duration: Histogram,
    /// From the request sent upstream to the upstream's response head.
    pub upstream: Histogram,
    /// From the request sent upstream to the first response body bytes
    /// relayed to the client.
    pub first_byte: Histogram,
}

/// Tokens and spend of one model slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Picodollars.
    pub spend: u64,
}

/// How requests used the response cache.
#[derive(Debug, Clone, Default)]
pub struct CacheCounts {
    pub hits: u64,
    /// Including the misses whose answer was stored.
    pub misses: u64,
    pub stores: u64,
    pub bypasses: u64,
    /// Answers stored by other workers that this worker's shard took in.
    pub shared: u64,
    /// From an answer stored on one worker to this one holding it.
    pub share_delay: Histogram,
}

/// What a soft budget alert is about, as its `kind` label (the kinds of
/// `store::SoftBudgetCrossed`).
pub const SOFT_BUDGET_KINDS: [&str; 3] = ["key", "user", "team"];

/// One worker's counters. Recording allocates only when a series or model
/// is seen for the first time.
#[derive(Debug)]
pub struct WorkerMetrics {
    worker: usize,
    /// Unix seconds at start, for `llm_proxy_start_time_seconds`.
    started: f64,
    series: HashMap<SeriesKey, Series, BuildHasherDefault<SeriesHasher>>,
    /// Model names with a slot of their own, and their slots (from 1).
    models: HashMap<Box<str>, u8>,
    usage: [ModelUsage; MODEL_SLOTS],
    cache: CacheCounts,
    /// Key rejections by error code; a handful of codes, scanned.
    rejections: Vec<(&'static str, u64)>,
    /// Soft budgets crossed, by `SOFT_BUDGET_KINDS`: counted by the worker
    /// whose usage report crossed them.
    soft_budget_alerts: [u64; 3],
}

impl WorkerMetrics {
    pub fn new(worker: usize) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            worker,
            started,
            series: HashMap::default(),
            models: HashMap::new(),
            usage: [ModelUsage::default(); MODEL_SLOTS],
            cache: CacheCounts::default(),
            rejections: Vec::new(),
            soft_budget_alerts: [0; 3],
        }
    }

    /// Counts an answer another worker stored reaching this worker's
    /// shard, `delay` after it was stored.
    pub fn cache_shared(&mut self, delay: Duration) {
        self.cache.shared += 1;
        self.cache.share_delay.observe(nanos(delay));
    }

    /// Counts a key's, user's or team's spend going past its soft budget.
    pub fn soft_budget_crossed(&mut self, kind: &str) {
        if let Some(slot) = SOFT_BUDGET_KINDS.iter().position(|k| *k == kind) {
            self.soft_budget_alerts[slot] += 1;
        }
    }

    /// Counts one proxied request, from what its record says: called once,
    /// by `finish`, with the time since the request head was read.
    pub fn record(
        &mut self,
        route: Endpoint,
        status: u16,
        elapsed: Duration,
        record: &Record,
        error: Option<&ProxyError>,
    ) {
        let model = match record.model.as_deref() {
            Some(name) if record.routed => self.model_slot(name),
            // A name no deployment answers to is client input: never a label.
            Some(_) => OTHER_MODEL,
            None => NO_MODEL,
        };
        let series = self.series_mut(route, model, status);
        series.duration.observe(nanos(elapsed));
        if let Some((sent, head)) = record.upstream_ns {
            series.upstream.observe(head.saturating_sub(sent));
            if let Some(first_byte) = record.first_byte_ns {
                series.first_byte.observe(first_byte.saturating_sub(sent));
            }
        }
        match record.cache {
            CacheStatus::None => {}
            CacheStatus::Hit => self.cache.hits += 1,
            CacheStatus::Miss => self.cache.misses += 1,
            CacheStatus::Stored => {
                self.cache.misses += 1;
                self.cache.stores += 1;
            }
            CacheStatus::Bypass => self.cache.bypasses += 1,
        }
        let usage = &mut self.usage[model as usize];
        if let Some(tokens) = record.usage {
            // Token counts come from the upstream's answer: never trusted
            // not to overflow.
            usage.prompt_tokens = usage.prompt_tokens.saturating_add(tokens.prompt_tokens);
            usage.completion_tokens = usage
                .completion_tokens
                .saturating_add(tokens.completion_tokens);
        }
        usage.spend = usage.spend.saturating_add(record.cost.0);
        if let Some(code) = error.and_then(key_rejection) {
            self.count_rejection(code);
        }
    }

    /// Counts a request answered by the gateway itself (management, local
    /// endpoints).
    pub fn record_local(&mut self, route: Endpoint, status: u16, elapsed: Duration) {
        self.series_mut(route, NO_MODEL, status)
            .duration
            .observe(nanos(elapsed));
    }

    fn series_mut(&mut self, route: Endpoint, model: u8, status: u16) -> &mut Series {
        self.series
            .entry(SeriesKey::new(route, model, status))
            .or_default()
    }

    fn model_slot(&mut self, name: &str) -> u8 {
        if let Some(&slot) = self.models.get(name) {
            return slot;
        }
        if self.models.len() >= MAX_MODELS || name.len() > MAX_MODEL_LEN {
            return OTHER_MODEL;
        }
        let slot = self.models.len() as u8 + 1;
        self.models.insert(name.into(), slot);
        slot
    }

    fn count_rejection(&mut self, code: &'static str) {
        match self.rejections.iter_mut().find(|(c, _)| *c == code) {
            Some((_, count)) => *count += 1,
            None => self.rejections.push((code, 1)),
        }
    }

    /// A copy of the counters, with labels resolved, to render elsewhere.
    pub fn snapshot(&self) -> Snapshot {
        let mut model_names = vec![String::new(); MODEL_SLOTS];
        for (name, &slot) in &self.models {
            model_names[slot as usize] = name.to_string();
        }
        model_names[OTHER_MODEL as usize] = "other".into();
        let label = |slot: u8| model_names[slot as usize].clone();
        let series = self
            .series
            .iter()
            .map(|(key, series)| SeriesSnapshot {
                route: key.route(),
                model: label(key.model()),
                status: key.status(),
                series: series.clone(),
            })
            .collect();
        let usage = self
            .usage
            .iter()
            .enumerate()
            .filter(|(_, usage)| {
                usage.prompt_tokens + usage.completion_tokens > 0 || usage.spend > 0
            })
            .map(|(slot, usage)| (label(slot as u8), *usage))
            .collect();
        Snapshot {
            worker: self.worker,
            started: self.started,
            connections: 0,
            series,
            usage,
            cache: self.cache.clone(),
            rejections: self.rejections.clone(),
            soft_budget_alerts: self.soft_budget_alerts,
            extra: Vec::new(),
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One series of a snapshot, with its labels.
#[derive(Debug, Clone)]
pub struct SeriesSnapshot {
    pub route: Endpoint,
    /// `""` when the request named no model.
    pub model: String,
    pub status: u16,
    pub series: Series,
}

/// One worker's counters at scrape time; sent from the worker's thread to
/// the one rendering.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub worker: usize,
    pub started: f64,
    /// Open client connections (the worker's own gauge).
    pub connections: usize,
    pub series: Vec<SeriesSnapshot>,
    /// Tokens and spend by model label (only models that had some).
    pub usage: Vec<(String, ModelUsage)>,
    pub cache: CacheCounts,
    pub rejections: Vec<(&'static str, u64)>,
    /// Soft budgets crossed, by `SOFT_BUDGET_KINDS`.
    pub soft_budget_alerts: [u64; 3],
    /// Counters and gauges of other modules, by worker.
    pub extra: Vec<Extra>,
}

/// A counter or gauge another module keeps per worker: each name becomes
/// one family, with a sample per worker (and per set of `labels`).
#[derive(Debug, Clone)]
pub struct Extra {
    /// The full metric name, `llm_proxy_...` (`_total` for a counter).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Labels besides `worker`.
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::usage::Usage;
    use crate::store::Money;

    #[test]
    fn soft_budget_alerts_are_counted_by_kind() {
        let mut metrics = WorkerMetrics::new(0);
        metrics.soft_budget_crossed("team");
        metrics.soft_budget_crossed("team");
        metrics.soft_budget_crossed("key");
        metrics.soft_budget_crossed("project");
        assert_eq!(metrics.snapshot().soft_budget_alerts, [1, 0, 2]);
    }

    #[test]
    fn routes_are_a_fixed_set() {
        assert_eq!(
            Endpoint::of(b"/v1/chat/completions"),
            Endpoint::ChatCompletions
        );
        assert_eq!(
            Endpoint::of(b"/chat/completions"),
            Endpoint::ChatCompletions
        );
        assert_eq!(Endpoint::of(b"/v1/embeddings"), Endpoint::Embeddings);
        assert_eq!(Endpoint::of(b"/v1/chat/completions/x"), Endpoint::Other);
        assert_eq!(Endpoint::of(b"/v1xyz"), Endpoint::Other);
        for route in Endpoint::ALL {
            assert_eq!(SeriesKey::new(route, 7, 404).route(), route);
        }
        let key = SeriesKey::new(Endpoint::Other, OTHER_MODEL, 499);
        assert_eq!((key.model(), key.status()), (OTHER_MODEL, 499));
    }

    #[test]
    fn models_past_the_cap_are_other() {
        let mut metrics = WorkerMetrics::new(3);
        let mut record = Record {
            routed: true,
            ..Record::default()
        };
        for i in 0..MAX_MODELS + 5 {
            record.model = Some(format!("model-{i}").into());
            metrics.record(
                Endpoint::ChatCompletions,
                200,
                Duration::ZERO,
                &record,
                None,
            );
        }
        record.model = Some("x".repeat(MAX_MODEL_LEN + 1).into());
        metrics.record(
            Endpoint::ChatCompletions,
            200,
            Duration::ZERO,
            &record,
            None,
        );
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.worker, 3);
        assert_eq!(snapshot.series.len(), MAX_MODELS + 1);
        let other = snapshot.series.iter().find(|s| s.model == "other").unwrap();
        assert_eq!(other.series.duration.count(), 6);
    }

    #[test]
    fn names_not_routed_by_are_other() {
        let mut metrics = WorkerMetrics::new(0);
        let mut record = Record::default();
        for i in 0..10 {
            record.model = Some(format!("made-up-{i}").into());
            metrics.record(
                Endpoint::ChatCompletions,
                200,
                Duration::ZERO,
                &record,
                None,
            );
        }
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.series.len(), 1);
        assert_eq!(snapshot.series[0].model, "other");
        assert_eq!(snapshot.series[0].series.duration.count(), 10);
    }

    #[test]
    fn a_record_counts_its_usage_cache_and_rejection() {
        let mut metrics = WorkerMetrics::new(0);
        let record = Record {
            model: Some("fast".into()),
            routed: true,
            usage: Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 20,
            }),
            cost: Money(5_000),
            cache: CacheStatus::Stored,
            upstream_ns: Some((1_000, 3_000)),
            first_byte_ns: Some(4_000),
            ..Record::default()
        };
        metrics.record(
            Endpoint::ChatCompletions,
            200,
            Duration::ZERO,
            &record,
            None,
        );
        metrics.record(
            Endpoint::Embeddings,
            401,
            Duration::ZERO,
            &Record::default(),
            Some(&ProxyError::InvalidKey),
        );
        metrics.record(
            Endpoint::Embeddings,
            502,
            Duration::ZERO,
            &Record::default(),
            Some(&ProxyError::UpstreamClosed),
        );
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.usage.len(), 1);
        let (model, usage) = &snapshot.usage[0];
        assert_eq!(model, "fast");
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.spend),
            (10, 20, 5_000)
        );
        assert_eq!((snapshot.cache.misses, snapshot.cache.stores), (1, 1));
        assert_eq!(snapshot.rejections, vec![("invalid_api_key", 1)]);
        let ok = snapshot.series.iter().find(|s| s.status == 200).unwrap();
        assert_eq!(ok.series.upstream.count(), 1);
        assert_eq!(ok.series.first_byte.count(), 1);
    }
}
