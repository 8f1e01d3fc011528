//! Phase 6 for an answer in another dialect than the client's: the
//! deployment's answer turned into the one the client asked for. A whole
//! answer is read (bounded), translated and sent with its cost in the head;
//! a stream is translated one event at a time, each written to the client
//! as soon as the upstream's event is complete, with no buffering beyond
//! the event being received.

use std::io::Write;
use std::time::Duration;

use super::Session;
use super::charge::Meter;
use super::forward::{Destination, ResponseStart};
use crate::dialect::anthropic::{self, ingress};
use crate::dialect::{TokenUsage, TranslateError};
use crate::dialect::{bedrock, gemini};
use crate::error::ProxyError;
use crate::http::io::{read_fresh, unix_nanos};
use crate::http::rewrite::{OwnFraming, Stamp, write_own_head};
use crate::http::{BodyTracker, Framing};
use crate::upstream::UpstreamStream;

/// Largest whole answer read to translate it.
const MAX_WHOLE_ANSWER: usize = 8 << 20;
const READ_SIZE: usize = 16 << 10;

/// How a deployment's answer becomes the client's, with what the request's
/// translation learnt for it.
pub enum Translation {
    /// Anthropic Messages into OpenAI Chat Completions (an OpenAI client,
    /// an Anthropic deployment).
    AnthropicToChat(anthropic::request::Reading),
    /// OpenAI Chat Completions into Anthropic Messages (an Anthropic
    /// client, an OpenAI-dialect deployment).
    ChatToMessages(ingress::request::Reading),
    /// Gemini's generateContent into Chat Completions.
    GeminiToChat(gemini::request::Reading),
    /// Bedrock's Converse into Chat Completions.
    BedrockToChat(bedrock::request::Reading),
}

impl Translation {
    /// A whole answer: the status, body and usage the client gets.
    fn whole(
        &self,
        status: u16,
        body: &[u8],
        created: u64,
    ) -> Result<(u16, Vec<u8>, Option<TokenUsage>), TranslateError> {
        let ok = (200..300).contains(&status);
        match self {
            Translation::AnthropicToChat(reading) if ok => {
                let (answer, usage) = anthropic::response::to_chat(body, reading, created)?;
                Ok((200, answer, Some(usage)))
            }
            Translation::AnthropicToChat(_) => {
                let (status, error) = anthropic::error::to_openai_error(status, body);
                Ok((status, error, None))
            }
            Translation::ChatToMessages(reading) if ok => {
                let (answer, usage) = ingress::response::from_chat(body, reading)?;
                Ok((200, answer, Some(usage)))
            }
            Translation::ChatToMessages(_) => {
                let (status, error) = ingress::response::error_from_openai(status, body);
                Ok((status, error, None))
            }
            Translation::GeminiToChat(reading) if ok => {
                let (answer, usage) = gemini::to_chat(body, reading, created)?;
                Ok((200, answer, Some(usage)))
            }
            Translation::GeminiToChat(_) => {
                let (status, error) = gemini::to_openai_error(status, body);
                Ok((status, error, None))
            }
            Translation::BedrockToChat(reading) if ok => {
                let (answer, usage) = bedrock::to_chat(body, reading, created)?;
                Ok((200, answer, Some(usage)))
            }
            Translation::BedrockToChat(_) => {
                let (status, error) = bedrock::to_openai_error(status, body);
                Ok((status, error, None))
            }
        }
    }

    fn stream(&self, created: u64) -> Events {
        match self {
            Translation::AnthropicToChat(reading) => {
                Events::Chat(anthropic::stream::ChatStream::new(reading, created))
            }
            Translation::ChatToMessages(reading) => {
                Events::Messages(ingress::stream::MessagesStream::new(reading))
            }
            Translation::GeminiToChat(reading) => {
                Events::Gemini(gemini::ChatStream::new(reading, created))
            }
            Translation::BedrockToChat(reading) => {
                Events::Bedrock(bedrock::ChatStream::new(reading, created))
            }
        }
    }
}

/// A stream's translator: one upstream event in, its translation out.
enum Events {
    Chat(anthropic::stream::ChatStream),
    Messages(ingress::stream::MessagesStream),
    Gemini(gemini::ChatStream),
    Bedrock(bedrock::ChatStream),
}

impl Events {
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match self {
            Events::Chat(events) => events.feed(data, out),
            Events::Messages(events) => events.feed(data, out),
            Events::Gemini(events) => events.feed(data, out),
            Events::Bedrock(events) => events.feed(data, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Events::Chat(events) => events.finish(out),
            Events::Messages(events) => events.finish(out),
            Events::Gemini(events) => events.finish(out),
            Events::Bedrock(events) => events.finish(out),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Events::Chat(events) => events.is_done(),
            Events::Messages(events) => events.is_done(),
            Events::Gemini(events) => events.is_done(),
            Events::Bedrock(events) => events.is_done(),
        }
    }

    fn usage(&self) -> Option<TokenUsage> {
        match self {
            Events::Chat(events) => events.usage(),
            Events::Messages(events) => events.usage(),
            Events::Gemini(events) => events.usage(),
            Events::Bedrock(events) => events.usage(),
        }
    }

    fn failed(&self) -> bool {
        match self {
            Events::Chat(events) => events.failed(),
            Events::Messages(events) => events.failed(),
            Events::Gemini(events) => events.failed(),
            Events::Bedrock(events) => events.failed(),
        }
    }
}

pub async fn relay(
    s: &mut Session<'_>,
    destination: &Destination<'_>,
    response: ResponseStart,
    translation: Translation,
    meter: &mut Meter<'_>,
) -> Result<(), ProxyError> {
    let ResponseStart {
        stream,
        head,
        buf,
        start_ns,
        stop_ns,
        ..
    } = response;
    let framing = head.framing(&s.head.method);
    // SSE, or AWS's binary event stream (Bedrock's).
    let streamed = (200..300).contains(&head.status)
        && head.header(&buf, "content-type").is_some_and(|t| {
            let t = t.trim_ascii_start();
            t.starts_with(b"text/event-stream")
                || t.starts_with(b"application/vnd.amazon.eventstream")
        });
    let upstream_id = ["request-id", "x-amzn-requestid"]
        .iter()
        .find_map(|name| head.header(&buf, name))
        .map(<[u8]>::to_vec);
    let mut upstream = Upstream {
        stream,
        body: BodyTracker::new(framing),
        framing,
        reusable: head.reusable && framing != Framing::UntilClose,
        buf,
        inactivity: destination.provider().timeouts.read,
    };
    // The body bytes that came with the head.
    let mut payload = Vec::new();
    upstream.take(head.len, &mut payload)?;
    s.record.first_byte_ns = Some(stop_ns);
    let answer = Answer {
        status: head.status,
        upstream_id,
        times: (start_ns, stop_ns),
        created: unix_nanos() / 1_000_000_000,
    };
    if streamed {
        relay_stream(
            s,
            destination,
            (upstream, payload),
            (translation, answer),
            meter,
        )
        .await
    } else {
        relay_whole(
            s,
            destination,
            (upstream, payload),
            (translation, answer),
            meter,
        )
        .await
    }
}

/// What the client's head says of the upstream's answer.
struct Answer {
    status: u16,
    /// The provider's request ID, sent on as `X-Upstream-Request-ID`.
    upstream_id: Option<Vec<u8>>,
    /// Unix ns when the request went upstream and when the head came back.
    times: (u64, u64),
    /// Unix s, for the translated answer's `created`.
    created: u64,
}

/// A whole answer: read (bounded), translated, charged, then sent with its
/// cost in the head.
async fn relay_whole(
    s: &mut Session<'_>,
    destination: &Destination<'_>,
    (mut upstream, mut payload): (Upstream, Vec<u8>),
    (translation, answer): (Translation, Answer),
    meter: &mut Meter<'_>,
) -> Result<(), ProxyError> {
    while !upstream.body.is_done() {
        if !upstream.read(&mut payload).await? {
            break;
        }
        if payload.len() > MAX_WHOLE_ANSWER {
            return Err(ProxyError::UpstreamProtocol(format!(
                "the answer is larger than {MAX_WHOLE_ANSWER} bytes"
            )));
        }
    }
    let (status, body, usage) = translation
        .whole(answer.status, &payload, answer.created)
        .map_err(|e| ProxyError::UpstreamProtocol(format!("untranslatable answer: {e}")))?;
    if let Some(usage) = usage {
        meter.charge_now(s, Some(usage.into()));
    }
    s.status = status;
    s.close |= !s.head.keep_alive || s.worker.draining();
    let extras = meter.extras();
    let stamp = Stamp {
        request_id: s.request_id.as_str(),
        upstream_times: answer.times,
        extra: extras.headers.as_slice(),
    };
    let out = &mut s.conn.out;
    out.clear();
    let framing = OwnFraming::Length(body.len());
    let upstream_id = answer.upstream_id.as_deref();
    write_own_head(
        out,
        status,
        "application/json",
        framing,
        upstream_id,
        &stamp,
        s.close,
    );
    out.extend_from_slice(&body);
    s.response_started = true;
    if !s.conn.send_out().await {
        return Err(ProxyError::ClientGone);
    }
    s.record.response_complete = true;
    upstream.give_back(s, destination);
    Ok(())
}

/// A stream: each upstream event translated and written to the client as
/// one chunk as soon as it is complete; the end (or an error event) when
/// the upstream's stream ends; charged with the usage it reported.
async fn relay_stream(
    s: &mut Session<'_>,
    destination: &Destination<'_>,
    (mut upstream, mut payload): (Upstream, Vec<u8>),
    (translation, answer): (Translation, Answer),
    meter: &mut Meter<'_>,
) -> Result<(), ProxyError> {
    let mut translator = translation.stream(answer.created);
    // An HTTP/1.0 client cannot read chunks: its stream ends with the
    // connection.
    let chunked = !s.head.http10;
    s.status = 200;
    s.close |= !s.head.keep_alive || s.worker.draining() || !chunked;
    {
        let extras = meter.extras();
        let stamp = Stamp {
            request_id: s.request_id.as_str(),
            upstream_times: answer.times,
            extra: extras.headers.as_slice(),
        };
        let framing = if chunked {
            OwnFraming::Chunked
        } else {
            OwnFraming::UntilClose
        };
        let out = &mut s.conn.out;
        out.clear();
        let upstream_id = answer.upstream_id.as_deref();
        write_own_head(
            out,
            200,
            "text/event-stream",
            framing,
            upstream_id,
            &stamp,
            s.close,
        );
    }
    s.response_started = true;
    let mut events = Vec::new();
    translator.feed(&payload, &mut events);
    push_chunk(&mut s.conn.out, &events, chunked);
    if !s.conn.send_out().await {
        return Err(ProxyError::ClientGone);
    }
    // How the upstream's stream ended, when it did not end well.
    let mut failure = None;
    while !upstream.body.is_done() && !translator.is_done() {
        payload.clear();
        match upstream.read(&mut payload).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
        events.clear();
        translator.feed(&payload, &mut events);
        if events.is_empty() {
            continue;
        }
        push_chunk(&mut s.conn.out, &events, chunked);
        if !s.conn.send_out().await {
            return Err(ProxyError::ClientGone);
        }
    }
    // The end of the stream: the last events (or an error event, for a
    // stream cut short), then the last chunk.
    events.clear();
    translator.finish(&mut events);
    push_chunk(&mut s.conn.out, &events, chunked);
    if chunked {
        s.conn.out.extend_from_slice(b"0\r\n\r\n");
    }
    let sent = s.conn.send_out().await;
    meter.charge_now(s, translator.usage().map(Into::into));
    if !sent {
        return Err(ProxyError::ClientGone);
    }
    // The client's stream ended with an error event: the request failed,
    // as the client saw it.
    if translator.failed() && failure.is_none() {
        failure = Some(ProxyError::UpstreamStreamFailed);
    }
    if let Some(error) = failure {
        return Err(error);
    }
    s.record.response_complete = true;
    if upstream.body.is_done() {
        upstream.give_back(s, destination);
    }
    Ok(())
}

/// The upstream's side of a translated answer: its body as it is read.
struct Upstream {
    stream: UpstreamStream,
    body: BodyTracker,
    framing: Framing,
    /// The exchange has ended at a message boundary so far.
    reusable: bool,
    buf: Vec<u8>,
    inactivity: Duration,
}

impl Upstream {
    /// Accounts for `buf[from..]`, appending its payload to `payload`.
    fn take(&mut self, from: usize, payload: &mut Vec<u8>) -> Result<(), ProxyError> {
        let input = &self.buf[from..];
        let taken = self
            .body
            .advance_tapped(input, |data| payload.extend_from_slice(data))
            .map_err(|e| ProxyError::UpstreamProtocol(format!("invalid chunked body: {e}")))?;
        // Bytes after the body: the upstream is out of step.
        self.reusable &= taken == input.len();
        Ok(())
    }

    /// Reads once more of the body, appending its payload to `payload`;
    /// `false` at the end of a body that ends with the connection.
    async fn read(&mut self, payload: &mut Vec<u8>) -> Result<bool, ProxyError> {
        let limit = self.body.read_limit(READ_SIZE);
        let buf = std::mem::take(&mut self.buf);
        let read = read_fresh(&mut self.stream, buf, limit);
        let read = monoio::time::timeout(self.inactivity, read).await;
        let (result, buf) = read.map_err(|_| ProxyError::UpstreamTimeout)?;
        self.buf = buf;
        match result {
            Ok(0) if self.framing == Framing::UntilClose => Ok(false),
            Ok(0) => Err(ProxyError::UpstreamClosed),
            Err(error) => Err(ProxyError::UpstreamIo(error)),
            Ok(_) => {
                self.take(0, payload)?;
                Ok(true)
            }
        }
    }

    /// Returns the connection to the pool after an exchange that ended
    /// exactly at a message boundary on both sides.
    fn give_back(self, s: &Session<'_>, destination: &Destination<'_>) {
        if self.reusable && self.body.is_done() && s.body_done {
            let provider = destination.provider();
            s.worker.pool.borrow_mut().put(
                destination.slot(),
                self.stream,
                provider.max_idle,
                provider.timeouts.idle,
                monoio::time::Instant::now(),
            );
        }
    }
}

/// Appends `data` to `out` as one chunk (or as it is, for a client that
/// reads until the connection closes); nothing for no data, as an empty
/// chunk would end the body.
fn push_chunk(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}
