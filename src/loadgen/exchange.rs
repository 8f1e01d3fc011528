//! One request and its response on a keep-alive connection: write the
//! request, parse the head with the crate's HTTP module, read the body to
//! its end (Content-Length, chunked or until close), and time it all.

use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;

use super::conn::Conn;
use super::record::{CacheState, ErrorKind, MAX_CACHE_WORKERS, Measured, StreamMeasured};
use super::request::RequestTemplate;
use super::sample::{MAX_SAMPLE_BODY, Sample};
use super::sse::SseScanner;
use crate::http::body::ChunkError;
use crate::http::io::{read_append, read_fresh, unix_nanos};
use crate::http::{BodyTracker, Framing, Parsed, ResponseHead};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Most bytes asked for by one read.
const READ_SIZE: usize = 64 << 10;

/// What every exchange of a run shares.
pub struct ExchangeSpec<'a> {
    pub template: &'a RequestTemplate,
    /// The body asked for `"stream": true`.
    pub stream: bool,
    /// For the whole exchange, response body included.
    pub timeout: Duration,
}

/// The outcome, and whether the connection can carry the next request.
pub struct Exchanged {
    pub result: Result<Measured, ErrorKind>,
    pub reusable: bool,
}

impl Exchanged {
    fn failed(kind: ErrorKind) -> Self {
        Self {
            result: Err(kind),
            reusable: false,
        }
    }
}

/// Sends one request. `intended` is its scheduled send time (open loop);
/// latencies count from it, or from the actual send time without one.
/// `want_sample(status)` says whether to keep this response for `--debug`.
pub async fn exchange(
    conn: &mut Conn,
    out: &mut Vec<u8>,
    spec: &ExchangeSpec<'_>,
    intended: Option<Instant>,
    want_sample: impl Fn(u16) -> bool,
) -> Exchanged {
    match monoio::time::timeout(spec.timeout, run(conn, out, spec, intended, want_sample)).await {
        Ok(exchanged) => exchanged,
        Err(_) => Exchanged::failed(ErrorKind::Timeout),
    }
}

/// What is needed from a response head once its buffer is reused.
struct HeadFacts {
    len: usize,
    status: u16,
    framing: Framing,
    reusable: bool,
    /// `X-UPSTREAM-REQUEST-START` and `-STOP`, unix nanoseconds.
    upstream: Option<(u64, u64)>,
    cache: Option<CacheState>,
    cache_worker: Option<u16>,
    sample: Option<Sample>,
}

async fn run(
    conn: &mut Conn,
    out: &mut Vec<u8>,
    spec: &ExchangeSpec<'_>,
    intended: Option<Instant>,
    want_sample: impl Fn(u16) -> bool,
) -> Exchanged {
    spec.template.write(out, unix_nanos());
    let sent_at = Instant::now();
    let start = intended.unwrap_or(sent_at);
    let (written, returned) = conn.stream.write_all(std::mem::take(out)).await;
    *out = returned;
    if written.is_err() {
        return Exchanged::failed(ErrorKind::Reset);
    }

    conn.buf.clear();
    let mut first_byte = None;
    let head = loop {
        match ResponseHead::parse(&conn.buf) {
            Ok(Parsed::Complete(head)) if head.is_interim() => {
                conn.buf.drain(..head.len);
                continue;
            }
            Ok(Parsed::Complete(head)) => {
                break facts(&head, &conn.buf, &spec.template.method, &want_sample);
            }
            Ok(Parsed::Partial) if conn.buf.len() < MAX_HEAD => {}
            _ => return Exchanged::failed(ErrorKind::Protocol),
        }
        let (read, buf) =
            read_append(&mut conn.stream, std::mem::take(&mut conn.buf), READ_SIZE).await;
        conn.buf = buf;
        match read {
            Ok(n) if n > 0 => {
                first_byte.get_or_insert_with(Instant::now);
            }
            _ => return Exchanged::failed(ErrorKind::Reset),
        }
    };
    let head_at = Instant::now();
    let streaming = spec.stream && (200..300).contains(&head.status);

    let mut sink = BodySink {
        scanner: streaming.then(SseScanner::default),
        sample: head.sample.as_ref().map(|_| Vec::new()),
        truncated: false,
    };
    let mut tracker = BodyTracker::new(head.framing);
    let mut reusable = head.reusable && head.framing != Framing::UntilClose;
    let mut offset = head.len;
    let mut now = head_at;
    let mut complete = true;
    loop {
        if offset < conn.buf.len() {
            let input = &conn.buf[offset..];
            match consume(&mut tracker, input, &mut sink, now) {
                // Bytes past the end: the server sent more than one response.
                Ok(used) => reusable &= used == input.len(),
                Err(_) => return Exchanged::failed(ErrorKind::Protocol),
            }
        }
        if tracker.is_done() {
            break;
        }
        let limit = tracker.read_limit(READ_SIZE);
        let (read, buf) = read_fresh(&mut conn.stream, std::mem::take(&mut conn.buf), limit).await;
        conn.buf = buf;
        offset = 0;
        now = Instant::now();
        match read {
            Ok(n) if n > 0 => {}
            Ok(_) if matches!(tracker, BodyTracker::UntilClose) => break,
            _ => {
                complete = false;
                break;
            }
        }
    }
    let end = Instant::now();
    if !complete && !streaming {
        return Exchanged::failed(ErrorKind::Reset);
    }
    reusable &= complete;

    let stream = sink.scanner.as_ref().map(|scanner| {
        let timing = scanner.finish();
        StreamMeasured {
            events: timing.events,
            first_event: timing
                .first_event
                .map(|at| at.saturating_duration_since(start)),
            mean_gap: timing.mean_gap,
            done: timing.done && complete,
        }
    });
    let split = head.upstream.map(|(up_start, up_stop)| {
        let upstream = Duration::from_nanos(up_stop.saturating_sub(up_start));
        let to_head = head_at.saturating_duration_since(sent_at);
        (upstream, to_head.saturating_sub(upstream))
    });
    let sample = head.sample.map(|mut sample| {
        let body = sink.sample.unwrap_or_default();
        sample.body = String::from_utf8_lossy(&body).into_owned();
        sample.truncated = sink.truncated;
        sample
    });
    Exchanged {
        result: Ok(Measured {
            status: head.status,
            latency: end.saturating_duration_since(start),
            ttfb: first_byte
                .unwrap_or(head_at)
                .saturating_duration_since(start),
            split,
            cache: head.cache,
            cache_worker: head.cache_worker,
            stream,
            sample,
        }),
        reusable,
    }
}

/// Where payload bytes go: the SSE scanner and the debug sample.
struct BodySink {
    scanner: Option<SseScanner>,
    sample: Option<Vec<u8>>,
    truncated: bool,
}

impl BodySink {
    fn feed(&mut self, data: &[u8], now: Instant) {
        if let Some(scanner) = &mut self.scanner {
            scanner.feed(data, now);
        }
        if let Some(sample) = &mut self.sample {
            let room = MAX_SAMPLE_BODY.saturating_sub(sample.len());
            sample.extend_from_slice(&data[..room.min(data.len())]);
            self.truncated |= data.len() > room;
        }
    }
}

/// Feeds body bytes to the tracker and their payload to the sink; returns
/// how many bytes of `input` belong to this body.
fn consume(
    tracker: &mut BodyTracker,
    input: &[u8],
    sink: &mut BodySink,
    now: Instant,
) -> Result<usize, ChunkError> {
    match tracker {
        BodyTracker::Chunked(decoder) => Ok(decoder
            .feed(input, |data| sink.feed(data, now))?
            .unwrap_or(input.len())),
        other => {
            let used = other.advance(input)?;
            sink.feed(&input[..used], now);
            Ok(used)
        }
    }
}

fn facts(
    head: &ResponseHead,
    buf: &[u8],
    method: &http::Method,
    want_sample: &impl Fn(u16) -> bool,
) -> HeadFacts {
    let value = |name: &str| {
        head.headers
            .iter()
            .find(|(n, _)| n.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.of(buf).trim_ascii())
    };
    let number = |name: &str| {
        value(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let upstream = number("x-upstream-request-start").zip(number("x-upstream-request-stop"));
    // `Cache-Status` first: it tells a bypass from a miss.
    let cache = value("cache-status")
        .and_then(cache_state)
        .or_else(|| value("x-proxy-cache").and_then(cache_state));
    let cache_worker = value("x-proxy-cache-worker").and_then(cache_worker);
    let sample = want_sample(head.status).then(|| Sample {
        status: head.status,
        reason: String::from_utf8_lossy(head.reason.of(buf)).into_owned(),
        headers: head
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n.of(buf)).into_owned(),
                    String::from_utf8_lossy(v.of(buf)).into_owned(),
                )
            })
            .collect(),
        body: String::new(),
        truncated: false,
    });
    HeadFacts {
        len: head.len,
        status: head.status,
        framing: head.framing(method),
        reusable: head.reusable,
        upstream,
        cache,
        cache_worker,
        sample,
    }
}

/// `X-PROXY-CACHE: hit|miss`, or an RFC 9211 `Cache-Status` such as
/// `proxy; hit` / `proxy; fwd=miss; stored`, or the bare words the seed
/// lists (`hit`, `miss`, `bypass`, `stored`, `conditional-hit`).
fn cache_state(value: &[u8]) -> Option<CacheState> {
    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
    let words = || {
        value
            .split([';', ',', ' '])
            .map(str::trim)
            .filter(|w| !w.is_empty())
    };
    if words().any(|w| w == "hit" || w == "conditional-hit") {
        Some(CacheState::Hit)
    } else if words().any(|w| w == "bypass" || w == "fwd=bypass") {
        Some(CacheState::Bypass)
    } else if words().any(|w| w == "miss" || w == "stored" || w.starts_with("fwd=")) {
        Some(CacheState::Miss)
    } else {
        None
    }
}

/// `X-PROXY-CACHE-WORKER: <n>`, llm-proxy's index of the worker thread that
/// answered: a decimal number of at most four digits, below
/// [`MAX_CACHE_WORKERS`]; anything else (a sign, a name, a bigger number)
/// names no worker.
fn cache_worker(value: &[u8]) -> Option<u16> {
    if value.is_empty() || value.len() > 4 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let index = value
        .iter()
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    (index < MAX_CACHE_WORKERS).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cache_headers() {
        assert_eq!(cache_state(b"HIT"), Some(CacheState::Hit));
        assert_eq!(cache_state(b"miss"), Some(CacheState::Miss));
        assert_eq!(cache_state(b"proxy; hit"), Some(CacheState::Hit));
        assert_eq!(
            cache_state(b"proxy; fwd=miss; stored"),
            Some(CacheState::Miss)
        );
        assert_eq!(cache_state(b"conditional-hit"), Some(CacheState::Hit));
        assert_eq!(cache_state(b"bypass"), Some(CacheState::Bypass));
        assert_eq!(cache_state(b"whatever"), None);
    }

    #[test]
    fn reads_the_worker_index() {
        assert_eq!(cache_worker(b"0"), Some(0));
        assert_eq!(cache_worker(b"7"), Some(7));
        assert_eq!(cache_worker(b"007"), Some(7));
        assert_eq!(cache_worker(b"1023"), Some(1023));
        // Past the cap, or not a plain decimal number: ignored.
        assert_eq!(cache_worker(b"1024"), None);
        assert_eq!(cache_worker(b"9999"), None);
        assert_eq!(cache_worker(b"00000"), None);
        assert_eq!(cache_worker(b"99999999999999999999999"), None);
        assert_eq!(cache_worker(b""), None);
        assert_eq!(cache_worker(b"-1"), None);
        assert_eq!(cache_worker(b"+1"), None);
        assert_eq!(cache_worker(b"1.5"), None);
        assert_eq!(cache_worker(b"0x1"), None);
        assert_eq!(cache_worker(b"two"), None);
        assert_eq!(cache_worker(b"1 2"), None);
        assert_eq!(cache_worker("١".as_bytes()), None);
    }
}
