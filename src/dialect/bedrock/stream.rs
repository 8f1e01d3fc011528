//! ConverseStream's answer (AWS event-stream frames) → a streamed Chat
//! Completions answer.
//!
//! The body is a sequence of binary frames (`application/vnd.amazon.eventstream`):
//! a prelude (total and header lengths, CRC32), headers (`:message-type`
//! `event` or `exception`, `:event-type`, `:exception-type`), a JSON
//! payload and a CRC32 of the whole. The bytes of a frame not yet complete
//! are the only thing kept between calls; each complete frame is checked
//! and decoded by `aws-smithy-eventstream` and its chunk written straight
//! to the output.
//!
//! Events: `messageStart`, `contentBlockStart` (tool uses only),
//! `contentBlockDelta` (text, tool input pieces, reasoning),
//! `contentBlockStop`, `messageStop` (the stop reason), `metadata` (usage,
//! last).

use std::borrow::Cow;

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use serde::Deserialize;

use super::error::{envelope, exception_envelope, snippet};
use super::request::Reading;
use super::response::{Usage, finish_reason, new_id, usage_json};
use crate::dialect::TokenUsage;
use crate::dialect::chat;

/// The largest frame accepted: a longer one ends the stream with an error.
pub const MAX_FRAME: usize = 1 << 20;

/// The smallest frame: prelude (12 bytes) and message CRC (4).
const MIN_FRAME: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Events still expected.
    Open,
    /// `messageStop` seen; `metadata` may follow.
    Stopped,
    /// `metadata` seen after `messageStop`: the answer is complete.
    Ended,
    /// An error event was written: nothing follows it.
    Failed,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(default)]
    content_block_index: Option<usize>,
    #[serde(default, borrow)]
    start: Option<Start<'a>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start<'a> {
    #[serde(default, borrow)]
    tool_use: Option<ToolStart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolStart<'a> {
    #[serde(default, borrow)]
    tool_use_id: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_use: Option<ToolDelta<'a>>,
    #[serde(default, borrow)]
    reasoning_content: Option<ReasoningDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default, borrow)]
    input: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ReasoningDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// One streamed answer being translated.
pub struct ChatStream {
    include_usage: bool,
    state: State,
    /// `finish` has run.
    ended: bool,
    /// The bytes of the frame being received.
    pending: Vec<u8>,
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    head: Vec<u8>,
    /// The tool-use block being streamed: its `contentBlockIndex` and its
    /// index among the answer's tool calls.
    tool: Option<(usize, usize)>,
    tool_calls: usize,
    usage: Option<Usage>,
}

impl ChatStream {
    pub fn new(reading: &Reading, created: u64) -> Self {
        let mut head = Vec::with_capacity(128);
        head.extend_from_slice(b"{\"id\":");
        let _ = serde_json::to_writer(&mut head, &new_id());
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.extend_from_slice(created.to_string().as_bytes());
        head.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut head, &reading.model);
        head.push(b',');
        Self {
            include_usage: reading.include_usage,
            state: State::Open,
            ended: false,
            pending: Vec::new(),
            head,
            tool: None,
            tool_calls: 0,
            usage: None,
        }
    }

    fn taking(&self) -> bool {
        matches!(self.state, State::Open | State::Stopped)
    }

    /// Feeds raw bytes of the upstream body (de-chunked), split anywhere;
    /// appends each translated OpenAI SSE event (`data: {...}\n\n`) to
    /// `out` as soon as its frame is complete. A frame over [`MAX_FRAME`]
    /// bytes, or one whose checksums fail, is an error event.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if !self.taking() || data.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let whole: &[u8] = if pending.is_empty() {
            data
        } else {
            pending.extend_from_slice(data);
            &pending
        };
        let mut at = 0;
        while self.taking() {
            let rest = &whole[at..];
            let Some(prefix) = rest.first_chunk::<4>() else {
                break;
            };
            let total = u32::from_be_bytes(*prefix) as usize;
            if !(MIN_FRAME..=MAX_FRAME).contains(&total) {
                let message = format!(
                    "the upstream sent an event-stream frame of {total} bytes (at most {MAX_FRAME})"
                );
                self.fail(out, &message);
                break;
            }
            if rest.len() < total {
                break;
            }
            match read_message_from(&rest[..total]) {
                Ok(message) => self.on_message(&message, out),
                Err(e) => {
                    let message =
                        format!("the upstream sent an event-stream frame that is not valid: {e}");
                    self.fail(out, &message);
                }
            }
            at += total;
        }
        if !self.taking() {
            return;
        }
        let left = whole.len() - at;
        if pending.is_empty() {
            pending.extend_from_slice(&data[data.len() - left..]);
        } else {
            pending.drain(..at);
        }
        self.pending = pending;
    }

    /// The upstream body ended. After `messageStop`: the usage chunk (when
    /// asked for) then `data: [DONE]`. Cut before it: an OpenAI error
    /// event, and no [DONE].
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        match self.state {
            State::Stopped | State::Ended => {
                let usage = self
                    .include_usage
                    .then(|| usage_json(&self.usage.unwrap_or_default().tokens()));
                chat::write_end(out, &self.head, usage.as_ref());
            }
            State::Open => self.fail(out, "the upstream stream ended before messageStop"),
            State::Failed => {}
        }
    }

    /// Whether the stream is over (`metadata` after `messageStop`, or an
    /// error event written).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Ended | State::Failed)
    }

    /// Whether it ended with an error event (an exception frame, or a
    /// stream cut short).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The usage reported (by `metadata`, the last event).
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage.map(|u| u.tokens())
    }

    fn on_message(&mut self, message: &Message, out: &mut Vec<u8>) {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| match h.value() {
                    HeaderValue::String(s) => Some(s.as_str()),
                    _ => None,
                })
        };
        let payload = message.payload();
        match header(":message-type") {
            Some("event") => {}
            Some("exception") => {
                let exception = header(":exception-type").unwrap_or("exception");
                let value = exception_envelope(exception, payload);
                return self.error_event(out, &value);
            }
            Some("error") => {
                let code = header(":error-code").unwrap_or("error");
                let text = header(":error-message").unwrap_or("");
                let value = envelope(
                    &format!("the upstream stream failed: {code}: {text}"),
                    "server_error",
                    "upstream_error",
                );
                return self.error_event(out, &value);
            }
            _ => {
                let message = "the upstream sent an event-stream frame without :message-type";
                return self.fail(out, message);
            }
        }
        let Some(kind) = header(":event-type") else {
            return self.fail(out, "the upstream sent an event without :event-type");
        };
        let event: Event = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(e) => {
                let message = format!(
                    "the upstream sent a {kind} event that is not valid: {e}: {}",
                    snippet(payload)
                );
                return self.fail(out, &message);
            }
        };
        match kind {
            "messageStart" => self.chunk(out, None, |out| {
                out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}")
            }),
            "contentBlockStart" => {
                let Some(tool) = event.start.and_then(|s| s.tool_use) else {
                    return;
                };
                let k = self.tool_calls;
                self.tool_calls += 1;
                self.tool = Some((event.content_block_index.unwrap_or(0), k));
                self.chunk(out, None, |out| {
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    let _ = serde_json::to_writer(&mut *out, &k);
                    out.extend_from_slice(b",\"id\":");
                    let _ = serde_json::to_writer(&mut *out, &*tool.tool_use_id);
                    out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    let _ = serde_json::to_writer(&mut *out, &*tool.name);
                    out.extend_from_slice(b",\"arguments\":\"\"}}]}");
                });
            }
            "contentBlockDelta" => {
                let Some(delta) = event.delta else {
                    return;
                };
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    self.text(out, b"{\"content\":", &text);
                } else if let Some(input) = delta.tool_use {
                    let index = event.content_block_index.unwrap_or(0);
                    let Some((_, k)) = self.tool.filter(|(block, _)| *block == index) else {
                        return;
                    };
                    if input.input.is_empty() {
                        return;
                    }
                    self.chunk(out, None, |out| {
                        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                        let _ = serde_json::to_writer(&mut *out, &k);
                        out.extend_from_slice(b",\"function\":{\"arguments\":");
                        let _ = serde_json::to_writer(&mut *out, &*input.input);
                        out.extend_from_slice(b"}}]}");
                    });
                } else if let Some(text) = delta
                    .reasoning_content
                    .and_then(|r| r.text)
                    .filter(|t| !t.is_empty())
                {
                    self.text(out, b"{\"reasoning_content\":", &text);
                }
            }
            "contentBlockStop" => {
                let index = event.content_block_index.unwrap_or(0);
                if self.tool.is_some_and(|(block, _)| block == index) {
                    self.tool = None;
                }
            }
            "messageStop" => {
                let stop = event.stop_reason.as_deref().unwrap_or("end_turn");
                let finish = finish_reason(stop);
                self.chunk(out, Some(finish), |out| out.extend_from_slice(b"{}"));
                self.state = State::Stopped;
            }
            "metadata" => {
                if let Some(usage) = event.usage {
                    self.usage = Some(usage);
                }
                if self.state == State::Stopped {
                    self.state = State::Ended;
                }
            }
            // Event types that come later.
            _ => {}
        }
    }

    /// A text piece in `field` (content or reasoning).
    fn text(&self, out: &mut Vec<u8>, field: &[u8], piece: &str) {
        self.chunk(out, None, |out| {
            out.extend_from_slice(field);
            let _ = serde_json::to_writer(&mut *out, piece);
            out.push(b'}');
        });
    }

    /// One `chat.completion.chunk` event with the delta `delta` writes.
    fn chunk(&self, out: &mut Vec<u8>, finish: Option<&str>, delta: impl FnOnce(&mut Vec<u8>)) {
        chat::write_chunk(out, &self.head, 0, finish, delta);
    }

    fn error_event(&mut self, out: &mut Vec<u8>, value: &serde_json::Value) {
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, value);
        out.extend_from_slice(b"\n\n");
        self.state = State::Failed;
        self.pending = Vec::new();
    }

    /// Ends the stream with an OpenAI error event.
    fn fail(&mut self, out: &mut Vec<u8>, message: &str) {
        let value = envelope(message, "upstream_error", "bad_upstream_response");
        self.error_event(out, &value);
    }
}

/// One event-stream frame as Bedrock sends them: `:event-type` `event`,
/// `:content-type` JSON, `:message-type` `event` (the mock's side, and
/// tests').
pub fn event_frame(event: &str, payload: &[u8]) -> Vec<u8> {
    frame(
        &[
            (":event-type", event),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// An exception frame (`:message-type` `exception`) of type `exception`
/// (`throttlingException`, say), its payload `{"message": ...}`.
pub fn exception_frame(exception: &str, payload: &[u8]) -> Vec<u8> {
    frame(
        &[
            (":exception-type", exception),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload,
    )
}

fn frame(headers: &[(&'static str, &str)], payload: &[u8]) -> Vec<u8> {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            aws_smithy_types::event_stream::Header::new(
                *name,
                HeaderValue::String(value.to_string().into()),
            )
        })
        .collect();
    let message = Message::new_from_parts(headers, payload.to_vec());
    let mut out = Vec::with_capacity(payload.len() + 128);
    // Writing fails only for headers or a payload over the format's limits
    // (16 MiB), which these are not.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut out);
    out
}
