//! Helpers for the tests of the key store, the management APIs and the
//! limits: secret hints, the fields and timestamps of JSON answers,
//! connections pinned to each worker, load loops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Conn, Proxy, Req, Response, chat_body, wait_until};

/// Asserts that `shown` (a JSON value from the management API) is the hint
/// of `secret` in the `sk-abcd…wxyz` style, and not the secret itself.
#[track_caller]
pub fn assert_hint(shown: &Value, secret: &str) {
    let shown = shown
        .as_str()
        .unwrap_or_else(|| panic!("the hint is not a string: {shown}"));
    assert_ne!(shown, secret, "the secret is shown in full");
    assert!(
        !shown.contains(secret),
        "the secret is shown in full: {shown}"
    );
    assert!(shown.contains('…'), "not a hint: {shown:?}");
    let chars: Vec<char> = secret.chars().collect();
    let head: String = chars.iter().take(3).collect();
    assert!(
        shown.starts_with(&head),
        "the hint {shown:?} does not start like {secret:?}"
    );
    if chars.len() > 12 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        assert!(
            shown.ends_with(&tail),
            "the hint {shown:?} does not end like {secret:?}"
        );
    }
    assert!(
        shown.chars().count() < chars.len(),
        "the hint {shown:?} is not shorter than the secret"
    );
}

/// Asserts that `value` is an object with exactly the keys `fields`.
#[track_caller]
pub fn assert_fields(value: &Value, fields: &[&str]) {
    let got: BTreeSet<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = fields.iter().copied().collect();
    assert_eq!(got, want, "fields of {value}");
}

/// An RFC 3339 timestamp.
#[track_caller]
pub fn timestamp(value: &Value) -> SystemTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("not RFC 3339: {text:?}: {e}"))
}

/// Seconds from now to an RFC 3339 timestamp (negative in the past).
#[track_caller]
pub fn seconds_from_now(value: &Value) -> f64 {
    let at = timestamp(value);
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    }
}

/// The proxy's data directory when it was started without `--db`.
pub fn default_data_dir(proxy: &Proxy) -> PathBuf {
    proxy.dir.path().join("data")
}

/// Whether the file at `path` contains `needle` anywhere.
pub fn file_contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let needle = needle.as_bytes();
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// A non-streaming chat completion presented with `key`.
pub fn chat_with(key: &str) -> Req {
    Req::post(
        "/v1/chat/completions",
        chat_body(false, "Hello there, mock!"),
    )
    .auth(key)
}

/// Sends `request` on `conn` and reads the answer; panics on I/O errors.
#[track_caller]
pub fn send_on(conn: &mut Conn, request: &Req) -> Response {
    conn.send(&request.bytes());
    conn.read_response().expect("read a response")
}

/// One keep-alive connection per worker, in worker order, found by asking
/// `/health` (which names the worker) on fresh connections.
pub fn conn_per_worker(proxy: &Proxy, workers: usize) -> Vec<Conn> {
    let mut found: BTreeMap<u64, Conn> = BTreeMap::new();
    for _ in 0..500 {
        let mut conn = proxy.conn();
        let response = conn.roundtrip(&Req::get("/health").bytes());
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(!response.closes(), "/health closed the connection");
        let worker = response.json()["worker"]
            .as_u64()
            .unwrap_or_else(|| panic!("no worker in {}", response.text()));
        found.entry(worker).or_insert(conn);
        if found.len() == workers {
            break;
        }
    }
    assert_eq!(
        found.len(),
        workers,
        "could not reach every worker; reached {:?}",
        found.keys().collect::<Vec<_>>()
    );
    found.into_values().collect()
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Complete 200 responses.
    pub ok: usize,
    /// 429 `max_requests_exceeded` responses.
    pub limited: usize,
    /// Anything else: status and body, or the I/O error.
    pub unexpected: Vec<String>,
}

/// `threads` clients, each on its own keep-alive connection, send chat
/// requests with `key` until each has seen a 429 (or `stop` says so, or the
/// connection fails). `ok` is shared, so a caller can watch progress.
pub fn load(
    proxy_addr: std::net::SocketAddr,
    key: &str,
    threads: usize,
    ok: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> LoadResult {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let key = key.to_string();
            let ok = ok.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut result = LoadResult::default();
                let request = chat_with(&key).bytes();
                let mut conn = match Conn::try_open(proxy_addr) {
                    Ok(conn) => conn,
                    Err(e) => {
                        result.unexpected.push(format!("connect: {e}"));
                        return result;
                    }
                };
                // Enough to exhaust any limit used in the tests.
                for _ in 0..10_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Err(e) = conn.try_send(&request) {
                        result.unexpected.push(format!("send: {e}"));
                        break;
                    }
                    match conn.read_response() {
                        Ok(response) if response.status == 200 => {
                            result.ok += 1;
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(response)
                            if response.status == 429
                                && response.error_code() == "max_requests_exceeded" =>
                        {
                            result.limited += 1;
                            break;
                        }
                        Ok(response) => {
                            result.unexpected.push(format!(
                                "{} {}",
                                response.status,
                                response.text()
                            ));
                            break;
                        }
                        Err(e) => {
                            result.unexpected.push(format!("read: {e}"));
                            break;
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut total = LoadResult::default();
    for handle in handles {
        let result = handle.join().expect("load thread");
        total.ok += result.ok;
        total.limited += result.limited;
        total.unexpected.extend(result.unexpected);
    }
    total
}

/// `load` until every client has been refused with a 429.
pub fn load_until_limited(
    proxy_addr: std::net::SocketAddr,
    key: &str,
    threads: usize,
) -> LoadResult {
    load(
        proxy_addr,
        key,
        threads,
        Arc::default(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
}

/// Polls `GET /manage/tokens/{id}` until `request_count` is `expected`;
/// returns the last value seen.
pub fn wait_request_count(proxy: &Proxy, id: &str, expected: u64, timeout: Duration) -> Value {
    let mut last = Value::Null;
    wait_until(timeout, || {
        let response = proxy.manage("GET", &format!("/manage/tokens/{id}"), None);
        assert_eq!(response.status, 200, "{}", response.text());
        last = response.json();
        last["request_count"] == expected
    });
    last
}
