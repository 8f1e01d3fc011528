//! Request smuggling through the gateway: whatever a client sends, the
//! upstream sees well-framed requests with the gateway's own framing, and a
//! pooled upstream connection shared by several projects never carries one
//! client's bytes into another client's request.
//!
//! The upstream here is a *recording upstream*: a strict HTTP/1.1 parser on
//! a std `TcpListener` that records every request and records a violation
//! for any byte that is not part of a well-framed request, bytes after the
//! end of a request that came before it was answered included (the gateway
//! never pipelines upstream). After a violation it goes on as a lenient
//! server would, so that a desync shows as the wrong answer too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cli::read_head;
use common::*;
use serde_json::json;

/// Project B's client key and provider key (project A is the seeded one:
/// `CLIENT_KEY` and `UPSTREAM_KEY`).
const CLIENT_KEY_B: &str = "sk-client-b-4e8d21c7a0";
const UPSTREAM_KEY_B: &str = "sk-upstream-b-0c55f9e318";

/// How long a test waits for something the upstream side records.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The recording upstream
// ---------------------------------------------------------------------------

/// One request as the upstream parsed it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which upstream connection it came on (in order of acceptance).
    conn: usize,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    /// Chunk extensions, as sent.
    extensions: Vec<String>,
    /// Trailer field lines after the last chunk, as sent.
    trailers: Vec<String>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }
}

#[derive(Debug, Default, Clone)]
struct Log {
    requests: Vec<Seen>,
    violations: Vec<String>,
    /// Request heads parsed, whether their bodies arrived or not.
    heads: usize,
    /// Connections the gateway closed in the middle of a request.
    incomplete: usize,
}

struct Recorder {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Log>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let accepted = AtomicUsize::new(0);
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = accepted.fetch_add(1, Ordering::SeqCst);
                let log = shared.clone();
                std::thread::spawn(move || serve(stream, conn, &log));
            }
        });
        Self { addr, log, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
    }

    #[track_caller]
    fn wait_for(&self, what: &str, condition: impl Fn(&Log) -> bool) {
        assert!(
            wait_until(WAIT, || condition(&self.log.lock().unwrap())),
            "the upstream never saw {what}: {:#?}",
            self.log()
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Why a connection's loop stopped.
enum Stop {
    /// Closed between requests.
    Closed,
    /// Closed in the middle of a request.
    Incomplete,
    /// A byte that is not part of a well-framed request.
    Violation(String),
}

/// Bytes read from one upstream connection and not yet parsed.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Reads more; `Err(Incomplete)` (or `Closed` if nothing is buffered) at
    /// the end of the stream.
    fn fill(&mut self) -> Result<(), Stop> {
        let mut chunk = [0u8; 16 << 10];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) if self.buf.is_empty() => Err(Stop::Closed),
            Ok(0) | Err(_) => Err(Stop::Incomplete),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// One line ending in CRLF (a bare LF or CR is a violation), taken out
    /// of the buffer without its CRLF.
    fn line(&mut self, what: &str) -> Result<Vec<u8>, Stop> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                if at == 0 || self.buf[at - 1] != b'\r' {
                    return Err(violation(what, "a line ending in a bare LF", &self.buf));
                }
                let line: Vec<u8> = self.buf.drain(..=at).take(at - 1).collect();
                if line.contains(&b'\r') {
                    return Err(violation(what, "a bare CR", &line));
                }
                return Ok(line);
            }
            if self.buf.len() > 64 << 10 {
                return Err(violation(what, "a line longer than 64 KiB", &self.buf));
            }
            self.fill()?;
        }
    }

    fn exactly(&mut self, n: usize) -> Result<Vec<u8>, Stop> {
        while self.buf.len() < n {
            self.fill().map_err(|_| Stop::Incomplete)?;
        }
        Ok(self.buf.drain(..n).collect())
    }
}

fn violation(what: &str, problem: &str, bytes: &[u8]) -> Stop {
    Stop::Violation(format!(
        "{what}: {problem}: {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
    ))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A name a lenient server could take for a framing field.
fn framing_lookalike(name: &str) -> bool {
    let folded = name.to_ascii_lowercase().replace('_', "-");
    (folded == "content-length" || folded == "transfer-encoding")
        && !name.eq_ignore_ascii_case(&folded)
}

fn serve(stream: TcpStream, conn: usize, log: &Mutex<Log>) {
    let mut wire = Wire {
        stream,
        buf: Vec::new(),
    };
    loop {
        match serve_one(&mut wire, conn, log) {
            Ok(()) => {}
            Err(Stop::Closed) => return,
            Err(Stop::Incomplete) => {
                log.lock().unwrap().incomplete += 1;
                return;
            }
            Err(Stop::Violation(what)) => {
                log.lock().unwrap().violations.push(what);
                return;
            }
        }
    }
}

/// Reads one request strictly, records it and answers it.
fn serve_one(wire: &mut Wire, conn: usize, log: &Mutex<Log>) -> Result<(), Stop> {
    // Request line: method SP origin-form SP HTTP/1.1.
    let line = wire.line("request line")?;
    read_request(wire, conn, log, line).map_err(|stop| match stop {
        Stop::Closed => Stop::Incomplete,
        other => other,
    })
}

fn read_request(wire: &mut Wire, conn: usize, log: &Mutex<Log>, line: Vec<u8>) -> Result<(), Stop> {
    let text = String::from_utf8(line.clone())
        .map_err(|_| violation("request line", "not ASCII", &line))?;
    let parts: Vec<&str> = text.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(violation("request line", "not three parts", &line));
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !target.bytes().all(|b| b.is_ascii_graphic())
        || version != "HTTP/1.1"
    {
        return Err(violation("request line", "malformed", &line));
    }
    // Header fields.
    let mut headers = Vec::new();
    loop {
        let line = wire.line("header field")?;
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(violation("header field", "obsolete line folding", &line));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(violation("header field", "no colon", &line));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(violation("header field", "name is not a token", &line));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(violation("header field", "control byte in value", &line));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if framing_lookalike(&name) {
            return Err(violation("header field", "a framing look-alike", &line));
        }
        let value = String::from_utf8_lossy(value.trim_ascii()).into_owned();
        headers.push((name, value));
    }
    log.lock().unwrap().heads += 1;
    let lengths = header_values(&headers, "content-length");
    let codings = header_values(&headers, "transfer-encoding");
    if header_values(&headers, "host").len() != 1 {
        return Err(Stop::Violation(format!(
            "not exactly one Host: {headers:?}"
        )));
    }
    if lengths.len() > 1 || codings.len() > 1 || (!lengths.is_empty() && !codings.is_empty()) {
        return Err(Stop::Violation(format!("ambiguous framing: {headers:?}")));
    }
    let mut seen = Seen {
        conn,
        method: method.to_string(),
        target: target.to_string(),
        headers: headers.clone(),
        body: Vec::new(),
        chunked: false,
        extensions: Vec::new(),
        trailers: Vec::new(),
    };
    if let Some(coding) = codings.first() {
        if *coding != "chunked" {
            return Err(Stop::Violation(format!("transfer coding {coding:?}")));
        }
        seen.chunked = true;
        read_chunked(wire, &mut seen)?;
    } else if let Some(length) = lengths.first() {
        if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Stop::Violation(format!("Content-Length {length:?}")));
        }
        let length: usize = length.parse().unwrap();
        seen.body = wire.exactly(length)?;
    }
    // The gateway waits for each answer: nothing may follow a request yet.
    let early = !wire.buf.is_empty();
    let marker = seen.header("x-test-marker").first().map(|m| m.to_string());
    let index = {
        let mut log = log.lock().unwrap();
        if early {
            log.violations.push(format!(
                "{} bytes after the end of {method} {target}, before it was answered: {:?}",
                wire.buf.len(),
                String::from_utf8_lossy(&wire.buf[..wire.buf.len().min(300)])
            ));
        }
        log.requests.push(seen);
        log.requests.len() - 1
    };
    let body = json!({"object": "recorded", "index": index, "marker": marker}).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    wire.stream
        .write_all(response.as_bytes())
        .map_err(|_| Stop::Closed)
}

/// A chunked body, strictly: hex size, optional extensions, CRLF, data,
/// CRLF; the last chunk, trailer fields, an empty line.
fn read_chunked(wire: &mut Wire, seen: &mut Seen) -> Result<(), Stop> {
    loop {
        let line = wire.line("chunk size")?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let (size, extension) = match text.find(';') {
            Some(at) => (&text[..at], Some(&text[at..])),
            None => (&text[..], None),
        };
        if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(violation("chunk size", "not a hex number", &line));
        }
        if let Some(extension) = extension {
            seen.extensions.push(extension.to_string());
        }
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            break;
        }
        let data = wire.exactly(size + 2)?;
        if !data.ends_with(b"\r\n") {
            return Err(violation("chunk data", "no CRLF after the data", &data));
        }
        seen.body.extend_from_slice(&data[..size]);
    }
    loop {
        let line = wire.line("trailer section")?;
        if line.is_empty() {
            return Ok(());
        }
        seen.trailers
            .push(String::from_utf8_lossy(&line).into_owned());
    }
}

// ---------------------------------------------------------------------------
// The set-up: one worker, two projects with different provider keys
// ---------------------------------------------------------------------------

fn start(recorder: &Recorder) -> Proxy {
    // One worker: one upstream pool shared by every client and project.
    let proxy = Proxy::builder().upstream(recorder.url()).workers(1).start();
    let project_b = proxy.create_project("project-b", UPSTREAM_KEY_B);
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({"project_id": project_b, "token": CLIENT_KEY_B})),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    proxy
}

/// An honest chat request from project A, so that the pool holds a
/// connection the next requests reuse.
fn warm_up(proxy: &Proxy, recorder: &Recorder) {
    let response = proxy.call(
        Req::post("/v1/chat/completions", chat_body(false, "warm-up"))
            .authed()
            .header("X-Test-Marker", "warm-up"),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["marker"], "warm-up");
    assert_eq!(recorder.log().requests.len(), 1);
}

/// Project B's chat request, on a new client connection: it must get its
/// own answer, and the upstream must have seen it whole, with B's provider
/// key, as the `index`th request. Returns the request the upstream saw.
#[track_caller]
fn assert_victim_served(proxy: &Proxy, recorder: &Recorder, index: usize) -> Seen {
    let body = chat_body(false, "the victim's own prompt");
    let response = proxy.call(
        Req::post("/v1/chat/completions", body.clone())
            .auth(CLIENT_KEY_B)
            .header("X-Test-Marker", "victim"),
    );
    assert_eq!(response.status, 200, "victim: {}", response.text());
    assert_eq!(
        response.json()["marker"],
        "victim",
        "the victim got the answer to another request: {}; upstream: {:#?}",
        response.text(),
        recorder.log()
    );
    let log = recorder.log();
    assert!(
        log.violations.is_empty(),
        "the upstream saw bytes outside well-framed requests: {:#?}",
        log
    );
    assert_eq!(response.json()["index"], index);
    assert_eq!(
        log.requests.len(),
        index + 1,
        "the upstream saw other requests than expected: {:#?}",
        log.requests
    );
    let seen = log.requests[index].clone();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        seen.header("authorization"),
        [format!("Bearer {UPSTREAM_KEY_B}").as_str()]
    );
    assert_eq!(String::from_utf8_lossy(&seen.body), body);
    assert_eq!(
        seen.header("content-length"),
        [body.len().to_string().as_str()]
    );
    seen
}

/// A request the gateway must refuse: 400 `bad_request`, then the
/// connection closes.
#[track_caller]
fn assert_refused(proxy: &Proxy, request: &[u8]) {
    let mut conn = proxy.conn();
    conn.send(request);
    let response = conn.read_response().expect("an answer");
    response.assert_error(400, "bad_request");
    assert!(response.closes(), "{:?}", response.headers);
    conn.assert_closed();
}

/// A request smuggled inside another one's body.
const SMUGGLED: &str =
    "GET /v1/models HTTP/1.1\r\nHost: upstream\r\nX-Test-Marker: smuggled\r\n\r\n";

// ---------------------------------------------------------------------------
// Connection options naming fields the gateway owns
// ---------------------------------------------------------------------------

/// The desync attack: project A's client names a framing field (or
/// another field the gateway sets) in `Connection`, with a smuggled request
/// as the body; then project B's client sends a chat request.
fn connection_option_attack(option: &str, as_chunks: bool) {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    warm_up(&proxy, &recorder);

    let mut attack = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Connection", format!("keep-alive, {option}"))
        .header("X-Test-Marker", "attacker");
    attack = if as_chunks {
        attack
            .header("Transfer-Encoding", "chunked")
            .no_content_length()
            .body(chunked(&[SMUGGLED.as_bytes()]))
    } else {
        attack.body(SMUGGLED)
    };
    let mut conn = proxy.conn();
    conn.send(&attack.bytes());
    let answer = conn.read_response().expect("an answer to the attacker");

    assert_victim_served(&proxy, &recorder, 1);
    answer.assert_error(400, "bad_request");
    assert!(answer.closes(), "{:?}", answer.headers);
    conn.assert_closed();
}

#[test]
fn connection_content_length_cannot_desync_the_pooled_connection() {
    connection_option_attack("content-length", false);
}

#[test]
fn connection_transfer_encoding_cannot_desync_the_pooled_connection() {
    connection_option_attack("Transfer-Encoding", true);
}

#[test]
fn connection_host_is_refused() {
    connection_option_attack("host", false);
}

#[test]
fn connection_authorization_is_refused() {
    connection_option_attack("Authorization", false);
}

#[test]
fn every_field_the_gateway_sets_is_refused_as_a_connection_option() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    for option in [
        "CONTENT-LENGTH",
        "close, content-length",
        "transfer-encoding",
        "x-request-id",
        "expect",
        "Host",
        "authorization",
    ] {
        let request = Req::post("/v1/chat/completions", chat_body(false, "hi"))
            .authed()
            .header("Connection", option)
            .bytes();
        assert_refused(&proxy, &request);
    }
    // Several Connection fields: each one counts.
    let request = Req::post("/v1/chat/completions", chat_body(false, "hi"))
        .authed()
        .header("Connection", "content-length")
        .header("Connection", "keep-alive")
        .bytes();
    assert_refused(&proxy, &request);
    assert_victim_served(&proxy, &recorder, 0);
}

#[test]
fn ordinary_connection_options_still_drop_their_fields() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    let response = proxy.call(
        Req::post("/v1/chat/completions", chat_body(false, "hi"))
            .authed()
            .header("Connection", "keep-alive, X-Hop")
            .header("X-Hop", "drop me")
            .header("X-Test-Marker", "options"),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let log = recorder.log();
    assert!(log.violations.is_empty(), "{log:#?}");
    let seen = &log.requests[0];
    assert!(seen.header("x-hop").is_empty(), "{:?}", seen.headers);
    assert!(seen.header("connection").is_empty(), "{:?}", seen.headers);
    assert_victim_served(&proxy, &recorder, 1);
}

// ---------------------------------------------------------------------------
// Trailers
// ---------------------------------------------------------------------------

/// A chunked request whose trailer section carries an `Authorization` and
/// a `Content-Length`; with `split`, the trailer section comes in a later
/// read than the last chunk.
fn trailers_are_not_forwarded(split: bool) {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    let body = chat_body(false, "a chunked request with trailers");
    let (a, b) = body.as_bytes().split_at(20);
    let mut request = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .header("Trailer", "Authorization, Content-Length")
        .header("X-Test-Marker", "trailers")
        .head_bytes();
    request.extend_from_slice(format!("{:x};name=value\r\n", a.len()).as_bytes());
    request.extend_from_slice(a);
    request.extend_from_slice(format!("\r\n{:x}\r\n", b.len()).as_bytes());
    request.extend_from_slice(b);
    request.extend_from_slice(b"\r\n0;last=1\r\n");
    let trailers = b"Authorization: Bearer sk-trailer-secret\r\nContent-Length: 99\r\n\r\n";

    let mut conn = proxy.conn();
    if split {
        conn.send(&request);
        recorder.wait_for("the request head", |log| log.heads == 1);
        conn.send(trailers);
    } else {
        request.extend_from_slice(trailers);
        conn.send(&request);
    }
    let response = conn.read_response().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["marker"], "trailers");

    let log = recorder.log();
    assert!(log.violations.is_empty(), "{log:#?}");
    let seen = &log.requests[0];
    assert!(seen.chunked);
    assert_eq!(String::from_utf8_lossy(&seen.body), body);
    assert!(
        seen.trailers.is_empty(),
        "trailer fields reached the upstream: {:?}",
        seen.trailers
    );
    assert!(
        seen.extensions.is_empty(),
        "chunk extensions reached the upstream: {:?}",
        seen.extensions
    );
    assert_eq!(
        seen.header("authorization"),
        [format!("Bearer {UPSTREAM_KEY}").as_str()]
    );
    assert!(seen.header("trailer").is_empty());
    // The client connection is still in step, and so is the pooled one.
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
    assert_victim_served(&proxy, &recorder, 2);
}

#[test]
fn trailer_fields_of_a_chunked_request_are_not_forwarded() {
    trailers_are_not_forwarded(false);
}

#[test]
fn trailer_fields_arriving_in_a_later_read_are_not_forwarded() {
    trailers_are_not_forwarded(true);
}

// ---------------------------------------------------------------------------
// Header names
// ---------------------------------------------------------------------------

#[test]
fn framing_lookalike_names_are_refused() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    let body = chat_body(false, "hi");
    for field in [
        "Transfer_Encoding: chunked",
        "transfer_encoding: chunked",
        "TRANSFER_ENCODING: chunked",
        "Content_Length: 5",
        "content_length: 5",
    ] {
        let (name, value) = field.split_once(": ").unwrap();
        let request = Req::post("/v1/chat/completions", body.clone())
            .authed()
            .header(name, value)
            .bytes();
        assert_refused(&proxy, &request);
    }
    assert_victim_served(&proxy, &recorder, 0);
}

#[test]
fn header_names_that_are_not_tokens_are_refused() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    let body = chat_body(false, "hi");
    for field in [
        "Transfer-Encoding : chunked",
        "Content-Length : 5",
        "Transfer Encoding: chunked",
        "Content-Length\t: 5",
        "\"Content-Length\": 5",
        "X-A@B: 1",
        "X(1): 2",
        "Content-Length\u{0}: 5",
    ] {
        let mut request = Req::post("/v1/chat/completions", Vec::new())
            .authed()
            .head_bytes();
        // Before the blank line.
        request.truncate(request.len() - 2);
        request.extend_from_slice(
            format!("{field}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        request.extend_from_slice(body.as_bytes());
        assert_refused(&proxy, &request);
    }
    // Obsolete line folding: a field value continued on the next line.
    let mut request = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .head_bytes();
    request.truncate(request.len() - 2);
    request.extend_from_slice(
        format!(
            "X-Folded: a\r\n Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_refused(&proxy, &request);
    assert_victim_served(&proxy, &recorder, 0);
}

// ---------------------------------------------------------------------------
// Reusing a pooled connection only at a message boundary
// ---------------------------------------------------------------------------

#[test]
fn a_request_cut_short_by_its_client_is_not_reused() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    let head = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("X-Test-Marker", "attacker")
        .header("Content-Length", "300")
        .head_bytes();
    let mut conn = proxy.conn();
    conn.send(&head);
    conn.send(b"{\"model\":");
    recorder.wait_for("the head of the cut request", |log| log.heads == 1);
    // The client goes away with 291 bytes of its body unsent.
    conn.stream.shutdown(Shutdown::Write).unwrap();
    let _ = conn.read_until_close();
    recorder.wait_for("the upstream connection closed", |log| log.incomplete == 1);
    let victim = assert_victim_served(&proxy, &recorder, 0);
    assert_eq!(
        victim.conn, 1,
        "the victim's request needed a new connection"
    );
}

#[test]
fn a_request_whose_body_turns_invalid_midway_is_not_reused() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    let mut request = Req::post("/v1/chat/completions", Vec::new())
        .authed()
        .header("Transfer-Encoding", "chunked")
        .header("X-Test-Marker", "attacker")
        .head_bytes();
    request.extend_from_slice(b"9\r\n{\"model\":\r\n");
    let mut conn = proxy.conn();
    conn.send(&request);
    recorder.wait_for("the head of the broken request", |log| log.heads == 1);
    conn.send(b"zz\r\nnot a chunk\r\n0\r\n\r\n");
    let response = conn.read_response().unwrap();
    response.assert_error(400, "bad_request");
    conn.assert_closed();
    recorder.wait_for("the upstream connection closed", |log| log.incomplete == 1);
    let victim = assert_victim_served(&proxy, &recorder, 0);
    assert_eq!(
        victim.conn, 1,
        "the victim's request needed a new connection"
    );
}

/// An upstream whose first answer, chunked, is followed by the bytes of
/// another response; every other request gets `real`. A connection put
/// back into the pool after the first answer would hand the next request
/// the rest of that other response.
fn start_overrunning_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let first = Arc::new(AtomicBool::new(true));
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            eprintln!("UPSTREAM ACCEPT");
            let first = first.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    // Heads only (GET requests).
                    let Some(end) = read_head(&mut stream, &mut buf) else {
                        return;
                    };
                    buf.drain(..end);
                    if first.swap(false, Ordering::SeqCst) {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n",
                        );
                        // The body comes in a later read than the head, and
                        // a response split in two follows it: the gateway
                        // reads the first part with the body.
                        std::thread::sleep(Duration::from_millis(100));
                        let _ = stream
                            .write_all(b"5\r\nfirst\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le");
                        std::thread::sleep(Duration::from_millis(100));
                        let _ = stream.write_all(b"ngth: 5\r\n\r\nstray");
                    } else {
                        let _ =
                            stream.write_all(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 4\r\n\r\nreal");
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn bytes_after_a_dechunked_response_keep_its_connection_out_of_the_pool() {
    let upstream = start_overrunning_upstream();
    let proxy = Proxy::builder()
        .upstream(format!("http://{upstream}"))
        .workers(1)
        .start();
    // An HTTP/1.0 client: the chunked answer is decoded for it.
    let mut conn = proxy.conn();
    conn.send(&Req::get("/v1/models").version("HTTP/1.0").authed().bytes());
    let first = conn.read_head().unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(conn.read_until_close().unwrap(), b"first");
    // The next request must not read the stray bytes as its answer.
    let response = proxy.call(Req::get("/v1/models").authed());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "real", "{:?}", response.headers);
}
