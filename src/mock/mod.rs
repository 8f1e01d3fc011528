//! An OpenAI-compatible mock upstream for tests, demos and benchmarks; it
//! also speaks Anthropic Messages (`anthropic.rs`), Azure OpenAI
//! (`azure.rs`), AWS Bedrock Converse (`bedrock.rs`) and Gemini
//! (`gemini.rs`).
//!
//! Per-request fault injection through request headers (they pass through
//! the proxy untouched):
//! - `x-mock-status: 503`: answer with that status and an OpenAI error body
//! - `x-mock-latency-ms`, `x-mock-stream-chunks`, `x-mock-chunk-interval-ms`:
//!   override the server-wide settings for this request
//! - `x-mock-cut-after: N`: close the connection after N streamed deltas
//! - `x-mock-fault: close | garbage | hang`: close without answering, answer
//!   with bytes that are not HTTP, or never answer
//! - `x-mock-response-header: Name: value` (repeatable): add that field to
//!   the answer (a `Cache-Control` replaces the stream's `no-cache`)
//! - `x-mock-stream-error-after`, `x-mock-tool-calls`, `x-mock-tool-text`:
//!   Anthropic, Bedrock and Gemini only, see their files
//! - `x-mock-blocked: 1`: Gemini only, see `gemini.rs`
//!
//! A stream ends with a usage chunk only when the request asks for it with
//! `stream_options.include_usage`, as OpenAI does.
//!
//! `GET /mock/stats` and `GET /mock/last-request` report what this worker saw.

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod openai;
mod sse;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use http::StatusCode;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio_rustls::TlsAcceptor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::http::io::{Reply, json_response, read_append, unix_nanos};
use crate::http::{ChunkedDecoder, Framing, Parsed, RequestHead};
use crate::runtime::{self, Driver};
use crate::server::bind_listeners;
use openai::Endpoint;

const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 16 << 20;
const EMBEDDING_DIMS: usize = 16;

#[derive(Debug, Clone)]
pub struct MockSettings {
    pub addr: SocketAddr,
    pub workers: usize,
    pub pin_cores: bool,
    pub latency: Duration,
    pub stream_chunks: u32,
    pub chunk_interval: Duration,
    pub api_key: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bedrock routes: the access key id a request must be signed with.
    pub aws_access_key_id: Option<String>,
    /// Bedrock routes: the secret their signatures are checked with.
    pub aws_secret_access_key: Option<String>,
}

pub struct MockHandle {
    pub local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl MockHandle {
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// What one mock worker has seen, for `/mock/stats`.
#[derive(Default)]
struct Stats {
    requests: Cell<u64>,
    streams_started: Cell<u64>,
    streams_completed: Cell<u64>,
    streams_aborted: Cell<u64>,
    /// Raw head of the last `/v1` or `/openai` request, for `/mock/last-request`.
    last_head: RefCell<Vec<u8>>,
}

struct Mock {
    settings: Arc<MockSettings>,
    stats: Stats,
}

pub fn start(settings: MockSettings) -> anyhow::Result<MockHandle> {
    let acceptor = match &settings.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listeners = bind_listeners(settings.addr, settings.workers)
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    let local_addr = listeners[0].local_addr()?;
    let listeners: Arc<Mutex<Vec<Option<std::net::TcpListener>>>> =
        Arc::new(Mutex::new(listeners.into_iter().map(Some).collect()));
    let settings = Arc::new(settings);
    let threads = runtime::spawn_workers(
        "mock",
        settings.workers,
        settings.pin_cores,
        Driver::detect(),
        move |id| {
            let listener = listeners.lock().ok().and_then(|mut l| l[id].take());
            let mock = Rc::new(Mock {
                settings: settings.clone(),
                stats: Stats::default(),
            });
            accept_loop(mock, listener, acceptor.clone())
        },
    )?;
    Ok(MockHandle {
        local_addr,
        threads,
    })
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid certificate PEM in {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    mock: Rc<Mock>,
    listener: Option<std::net::TcpListener>,
    acceptor: Option<TlsAcceptor>,
) {
    let Some(Ok(listener)) = listener.map(monoio::net::TcpListener::from_std) else {
        tracing::error!("mock worker has no usable listener");
        return;
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "mock accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mock = mock.clone();
        match &acceptor {
            None => {
                monoio::spawn(serve(mock, stream));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                monoio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => serve(mock, tls).await,
                        Err(error) => tracing::debug!(%error, "mock TLS handshake failed"),
                    }
                });
            }
        }
    }
}

/// Per-request behaviour, from the server settings and `x-mock-*` headers.
struct Behaviour {
    status: Option<u16>,
    latency: Duration,
    chunks: u32,
    interval: Duration,
    cut_after: Option<u32>,
    /// Anthropic streams: an `error` event after this many deltas.
    stream_error_after: Option<u32>,
    /// Anthropic tool answers: how many `tool_use` blocks.
    tool_calls: Option<u32>,
    /// Anthropic tool answers: words of a text block before them.
    tool_text: Option<u32>,
    fault: Option<String>,
    /// Fields to add to the answer (`x-mock-response-header`).
    headers: Vec<(String, Vec<u8>)>,
}

impl Behaviour {
    /// The extra fields, as the serializers take them.
    fn fields(&self) -> Vec<(&str, &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect()
    }

    /// The status `x-mock-status` asks for.
    fn status_code(&self) -> StatusCode {
        self.status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The latency asked for, before answering.
    async fn wait(&self) {
        if !self.latency.is_zero() {
            monoio::time::sleep(self.latency).await;
        }
    }

    fn of(settings: &MockSettings, head: &RequestHead, buf: &[u8]) -> Self {
        let number = |name: &str| {
            head.header(buf, name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Self {
            status: number("x-mock-status").and_then(|s| u16::try_from(s).ok()),
            latency: number("x-mock-latency-ms").map_or(settings.latency, Duration::from_millis),
            chunks: number("x-mock-stream-chunks").map_or(settings.stream_chunks, |n| n as u32),
            interval: number("x-mock-chunk-interval-ms")
                .map_or(settings.chunk_interval, Duration::from_millis),
            cut_after: number("x-mock-cut-after").map(|n| n as u32),
            stream_error_after: number("x-mock-stream-error-after").map(|n| n as u32),
            tool_calls: number("x-mock-tool-calls").map(|n| n as u32),
            tool_text: number("x-mock-tool-text").map(|n| n as u32),
            fault: head
                .header(buf, "x-mock-fault")
                .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase()),
            headers: head
                .headers
                .iter()
                .filter(|(name, _)| name.of(buf).eq_ignore_ascii_case(b"x-mock-response-header"))
                .filter_map(|(_, value)| {
                    let text = String::from_utf8_lossy(value.of(buf)).into_owned();
                    let (name, value) = text.split_once(':')?;
                    Some((name.trim().to_string(), value.trim().as_bytes().to_vec()))
                })
                .collect(),
        }
    }
}

/// Whether to keep the connection open after a response.
enum Next {
    KeepAlive,
    Close,
}

async fn serve<S: AsyncReadRent + AsyncWriteRent>(mock: Rc<Mock>, mut stream: S) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut out: Vec<u8> = Vec::with_capacity(4 << 10);
    loop {
        let head = loop {
            match RequestHead::parse(&buf) {
                Ok(Parsed::Complete(head)) => break head,
                Ok(Parsed::Partial) if buf.len() < MAX_HEAD => {}
                _ => {
                    json_response(
                        &mut out,
                        StatusCode::BAD_REQUEST,
                        &openai::error("malformed request", "invalid_request_error", "bad_request"),
                        &[],
                        Reply::CLOSE,
                    );
                    let _ = stream.write_all(out).await;
                    return;
                }
            }
            let (result, returned) = read_append(&mut stream, buf, 16 << 10).await;
            buf = returned;
            match result {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        };
        let Some((body, consumed)) = read_body(&mut stream, &mut buf, &head).await else {
            return;
        };
        out.clear();
        let next = respond(&mock, &mut stream, &head, &buf, &body, &mut out).await;
        if matches!(next, Next::Close) || !head.keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
        buf.drain(..consumed);
    }
}

/// Reads the whole request body (decoded). Returns it and the bytes of
/// `buf` the request used, head included.
async fn read_body<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head: &RequestHead,
) -> Option<(Vec<u8>, usize)> {
    match head.framing {
        Framing::Empty | Framing::UntilClose => Some((Vec::new(), head.len)),
        Framing::Length(length) => {
            let length = usize::try_from(length).ok().filter(|&l| l <= MAX_BODY)?;
            let end = head.len + length;
            while buf.len() < end {
                let (result, returned) =
                    read_append(stream, std::mem::take(buf), end - buf.len()).await;
                *buf = returned;
                match result {
                    Ok(n) if n > 0 => {}
                    _ => return None,
                }
            }
            Some((buf[head.len..end].to_vec(), end))
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            let mut scanned = head.len;
            loop {
                let end = decoder
                    .feed(&buf[scanned..], |data| body.extend_from_slice(data))
                    .ok()?;
                if let Some(end) = end {
                    return Some((body, scanned + end));
                }
                if body.len() > MAX_BODY {
                    return None;
                }
                scanned = buf.len();
                let (result, returned) = read_append(stream, std::mem::take(buf), 64 << 10).await;
                *buf = returned;
                match result {
                    Ok(n) if n > 0 => {}
                    _ => return None,
                }
            }
        }
    }
}

async fn respond<S: AsyncWriteRent>(
    mock: &Mock,
    stream: &mut S,
    head: &RequestHead,
    buf: &[u8],
    body: &[u8],
    out: &mut Vec<u8>,
) -> Next {
    let stats = &mock.stats;
    stats.requests.set(stats.requests.get() + 1);
    let path = head.path(buf);
    let behaviour = Behaviour::of(&mock.settings, head, buf);
    let anthropic = path.starts_with(b"/v1/messages");
    let azure = path.starts_with(b"/openai/");
    let bedrock = path.starts_with(b"/model/");
    let gemini = path.starts_with(b"/v1beta/");
    if path.starts_with(b"/v1/") || azure || bedrock || gemini {
        *stats.last_head.borrow_mut() = buf[..head.len].to_vec();
        match behaviour.fault.as_deref() {
            Some("close") => return Next::Close,
            Some("garbage") => {
                let _ = stream.write_all(&b"this is not HTTP\r\n\r\n"[..]).await;
                return Next::Close;
            }
            Some("hang") => {
                monoio::time::sleep(Duration::from_secs(3600)).await;
                return Next::Close;
            }
            _ => {}
        }
        if anthropic {
            return anthropic::respond(mock, stream, head, buf, body, out, &behaviour).await;
        }
        if azure {
            return azure::respond(mock, stream, head, buf, body, out, &behaviour).await;
        }
        if bedrock {
            return bedrock::respond(mock, stream, head, buf, body, out, &behaviour).await;
        }
        if gemini {
            return gemini::respond(mock, stream, head, buf, body, out, &behaviour).await;
        }
        if let Some(key) = &mock.settings.api_key {
            let expected = format!("Bearer {key}");
            if head.header(buf, "authorization") != Some(expected.as_bytes()) {
                let body = openai::error(
                    "Incorrect API key provided",
                    "invalid_request_error",
                    "invalid_api_key",
                );
                json_response(out, StatusCode::UNAUTHORIZED, &body, &[], Reply::KEEP_ALIVE);
                return send(stream, out).await;
            }
        }
        behaviour.wait().await;
        if behaviour.status.is_some() {
            return openai::mock_status(stream, out, &behaviour).await;
        }
    }
    let created = unix_nanos() / 1_000_000_000;
    match (&head.method, path) {
        (&http::Method::POST, b"/v1/chat/completions") => {
            return openai::answer(mock, stream, out, Endpoint::Chat, body, &behaviour, None).await;
        }
        (&http::Method::POST, b"/v1/embeddings") => {
            return openai::answer(
                mock,
                stream,
                out,
                Endpoint::Embeddings,
                body,
                &behaviour,
                None,
            )
            .await;
        }
        (&http::Method::GET | &http::Method::HEAD, b"/v1/models") => {
            json_response(
                out,
                StatusCode::OK,
                &openai::models(created),
                &behaviour.fields(),
                Reply {
                    close: false,
                    head_only: head.method == http::Method::HEAD,
                },
            );
        }
        (&http::Method::GET, b"/mock/stats") => {
            let body = json!({
                "requests": stats.requests.get(),
                "streams_started": stats.streams_started.get(),
                "streams_completed": stats.streams_completed.get(),
                "streams_aborted": stats.streams_aborted.get(),
            });
            json_response(
                out,
                StatusCode::OK,
                body.to_string().as_bytes(),
                &[],
                Reply::KEEP_ALIVE,
            );
        }
        (&http::Method::GET, b"/mock/last-request") => {
            let body = last_request_json(&stats.last_head.borrow());
            json_response(
                out,
                StatusCode::OK,
                body.to_string().as_bytes(),
                &[],
                Reply::KEEP_ALIVE,
            );
        }
        (&http::Method::GET, b"/health") => {
            json_response(
                out,
                StatusCode::OK,
                br#"{"status":"ok"}"#,
                &[],
                Reply::KEEP_ALIVE,
            );
        }
        _ => return not_found(stream, out).await,
    }
    send(stream, out).await
}

async fn not_found<S: AsyncWriteRent>(stream: &mut S, out: &mut Vec<u8>) -> Next {
    let body = openai::error("unknown route", "invalid_request_error", "not_found");
    json_response(out, StatusCode::NOT_FOUND, &body, &[], Reply::KEEP_ALIVE);
    send(stream, out).await
}

async fn send<S: AsyncWriteRent>(stream: &mut S, out: &mut Vec<u8>) -> Next {
    let (result, returned) = stream.write_all(std::mem::take(out)).await;
    *out = returned;
    if result.is_ok() {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

fn last_request_json(raw: &[u8]) -> serde_json::Value {
    match RequestHead::parse(raw) {
        Ok(Parsed::Complete(head)) => {
            let headers: Vec<serde_json::Value> = head
                .headers
                .iter()
                .map(|(name, value)| {
                    json!([
                        String::from_utf8_lossy(name.of(raw)),
                        String::from_utf8_lossy(value.of(raw))
                    ])
                })
                .collect();
            json!({
                "method": head.method.as_str(),
                "target": String::from_utf8_lossy(head.target.of(raw)),
                "headers": headers,
            })
        }
        _ => json!(null),
    }
}

/// Splits `text` into up to `pieces` parts on character boundaries (a
/// tool input streamed in pieces, by the Anthropic and Bedrock routes).
fn split(text: &str, pieces: usize) -> Vec<&str> {
    let size = text.len().div_ceil(pieces).max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        parts.push(&text[start..end]);
        start = end;
    }
    parts
}
