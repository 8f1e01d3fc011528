//! A streamed Messages answer → a streamed Chat Completions answer, one
//! server-sent event at a time.
//!
//! The upstream body is cut into lines as it comes; the `data` of the event
//! being received is the only thing kept between calls. Each complete event
//! is parsed once (strings borrowed where they hold no escapes) and its
//! chunk written straight to the output.

use std::borrow::Cow;

use serde::Deserialize;

use super::error::{envelope, event_envelope};
use super::request::Reading;
use super::response::{Usage, finish_reason, usage_json};
use crate::dialect::TokenUsage;
use crate::dialect::chat;

/// The largest event accepted: a longer one ends the stream with an error.
pub const MAX_EVENT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Events still expected.
    Open,
    /// `message_stop` seen: `finish` ends the stream with [DONE].
    Stopped,
    /// An error event was written: nothing follows it.
    Failed,
}

/// What the content block being streamed becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, with its index among the answer's tool calls.
    Tool(usize),
    /// The `response_format` tool: its input is the content.
    Json,
    /// What OpenAI has no word for (redacted thinking, server tools).
    Other,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    message: Option<Start<'a>>,
    #[serde(default, borrow)]
    content_block: Option<BlockStart<'a>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Start<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize)]
struct BlockStart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

/// A buffer emptied for the next line or event; one that grew large for a
/// big event is let go rather than kept for the rest of the stream.
fn reuse(mut buffer: Vec<u8>) -> Vec<u8> {
    if buffer.capacity() > KEPT_BUFFER {
        return Vec::new();
    }
    buffer.clear();
    buffer
}

/// The largest buffer kept from one event to the next.
const KEPT_BUFFER: usize = 64 << 10;

/// One streamed answer being translated.
pub struct ChatStream {
    include_usage: bool,
    json_tool: Option<String>,
    created: u64,
    state: State,
    /// `finish` has run.
    ended: bool,
    /// The line being received, when it came in pieces.
    line: Vec<u8>,
    /// The data of the event being received.
    data: Vec<u8>,
    /// Whether the event being received has a data line yet.
    has_data: bool,
    /// The last line ended in `\r`: a `\n` next is part of its end.
    after_cr: bool,
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    /// once `message_start` has named them.
    head: Vec<u8>,
    /// The content block being streamed, with its index.
    block: Option<(usize, Block)>,
    tool_calls: usize,
    json_answered: bool,
    usage: Option<Usage>,
}

impl ChatStream {
    pub fn new(reading: &Reading, created: u64) -> Self {
        Self {
            include_usage: reading.include_usage,
            json_tool: reading.json_tool.clone(),
            created,
            state: State::Open,
            ended: false,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            head: Vec::new(),
            block: None,
            tool_calls: 0,
            json_answered: false,
            usage: None,
        }
    }

    /// Feeds de-chunked bytes of the upstream SSE body, split anywhere
    /// (mid-line, mid-UTF-8); appends each complete translated OpenAI SSE
    /// event (`data: {...}\n\n`) to `out` as soon as its Anthropic event is
    /// complete. An event over [`MAX_EVENT`] bytes is an error event.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while self.state == State::Open && !data.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if data[0] == b'\n' {
                    data = &data[1..];
                    continue;
                }
            }
            let Some(end) = data.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                if self.line.len() + self.data.len() + data.len() > MAX_EVENT {
                    return self.too_large(out);
                }
                self.line.extend_from_slice(data);
                return;
            };
            self.after_cr = data[end] == b'\r';
            if self.line.is_empty() {
                self.on_line(&data[..end], out);
            } else {
                if self.line.len() + self.data.len() + end > MAX_EVENT {
                    return self.too_large(out);
                }
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&data[..end]);
                self.on_line(&line, out);
                self.line = reuse(line);
            }
            data = &data[end + 1..];
        }
    }

    /// The upstream body ended. After `message_stop`: the usage chunk (when
    /// asked for) then `data: [DONE]`. Cut before `message_stop`: an OpenAI
    /// error event, and no [DONE].
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        match self.state {
            State::Stopped => {
                let usage = self
                    .include_usage
                    .then(|| usage_json(&self.usage.unwrap_or_default().tokens()));
                chat::write_end(out, &self.head, usage.as_ref());
            }
            State::Open => self.fail(
                out,
                "the upstream stream ended before message_stop",
                "upstream_error",
                "bad_upstream_response",
            ),
            State::Failed => {}
        }
    }

    /// Whether the stream is over (`message_stop` or an error event seen).
    pub fn is_done(&self) -> bool {
        self.state != State::Open
    }

    /// Whether it ended with an error event (the upstream's, or for a
    /// stream cut short).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The usage reported so far (input tokens from `message_start`, output
    /// from `message_delta`).
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage.map(|u| u.tokens())
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                let data = std::mem::take(&mut self.data);
                self.on_event(&data, out);
                self.data = reuse(data);
            }
            return;
        }
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.data.len() + value.len() >= MAX_EVENT {
                return self.too_large(out);
            }
            if std::mem::replace(&mut self.has_data, true) {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
        }
        // `event:` repeats the data's `type`; `id:`, `retry:` and comments
        // mean nothing here.
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let event: Event = match serde_json::from_slice(data) {
            Ok(event) => event,
            Err(e) => {
                let message = format!("the upstream sent an event that is not valid: {e}");
                return self.fail(out, &message, "upstream_error", "bad_upstream_response");
            }
        };
        if self.head.is_empty() && !matches!(&*event.kind, "message_start" | "ping" | "error") {
            let message = "the upstream stream did not start with message_start";
            return self.fail(out, message, "upstream_error", "bad_upstream_response");
        }
        match &*event.kind {
            "message_start" => {
                let Some(start) = event.message else {
                    let message = "the upstream message_start has no message";
                    return self.fail(out, message, "upstream_error", "bad_upstream_response");
                };
                self.head.clear();
                self.head.extend_from_slice(b"{\"id\":");
                let _ = serde_json::to_writer(&mut self.head, &*start.id);
                self.head
                    .extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
                self.head
                    .extend_from_slice(self.created.to_string().as_bytes());
                self.head.extend_from_slice(b",\"model\":");
                let _ = serde_json::to_writer(&mut self.head, &*start.model);
                self.head.push(b',');
                self.usage
                    .get_or_insert_with(Usage::default)
                    .update(&start.usage);
                self.chunk(out, None, |out| {
                    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}")
                });
            }
            "content_block_start" => {
                let Some(start) = event.content_block else {
                    return;
                };
                let index = event.index.unwrap_or(0);
                let block = match &*start.kind {
                    "text" => Block::Text,
                    "thinking" => Block::Thinking,
                    "tool_use"
                        if self.json_tool.is_some()
                            && self.json_tool.as_deref() == start.name.as_deref() =>
                    {
                        self.json_answered = true;
                        Block::Json
                    }
                    "tool_use" => {
                        let k = self.tool_calls;
                        self.tool_calls += 1;
                        let id = start.id.as_deref().unwrap_or("");
                        let name = start.name.as_deref().unwrap_or("");
                        self.chunk(out, None, |out| {
                            out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                            let _ = serde_json::to_writer(&mut *out, &k);
                            out.extend_from_slice(b",\"id\":");
                            let _ = serde_json::to_writer(&mut *out, id);
                            out.extend_from_slice(
                                b",\"type\":\"function\",\"function\":{\"name\":",
                            );
                            let _ = serde_json::to_writer(&mut *out, name);
                            out.extend_from_slice(b",\"arguments\":\"\"}}]}");
                        });
                        Block::Tool(k)
                    }
                    _ => Block::Other,
                };
                self.block = Some((index, block));
                // A block may start with content of its own.
                let text = match block {
                    Block::Text => start.text,
                    Block::Thinking => start.thinking,
                    _ => None,
                };
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    self.piece(out, block, &text);
                }
            }
            "content_block_delta" => {
                let (Some(delta), Some((current, block))) = (event.delta, self.block) else {
                    return;
                };
                if event.index.unwrap_or(0) != current {
                    return;
                }
                let piece = match delta.kind.as_deref() {
                    Some("text_delta") => delta.text,
                    Some("thinking_delta") => delta.thinking,
                    Some("input_json_delta") => delta.partial_json,
                    // signature_delta, citations_delta: nothing in OpenAI's terms.
                    _ => None,
                };
                if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                    self.piece(out, block, &piece);
                }
            }
            "content_block_stop" => self.block = None,
            "message_delta" => {
                if let Some(usage) = &event.usage {
                    self.usage.get_or_insert_with(Usage::default).update(usage);
                }
                let stop = event.delta.and_then(|d| d.stop_reason);
                if let Some(stop) = stop {
                    let mut finish = finish_reason(&stop);
                    if finish == "tool_calls" && self.tool_calls == 0 && self.json_answered {
                        finish = "stop";
                    }
                    self.chunk(out, Some(finish), |out| out.extend_from_slice(b"{}"));
                }
            }
            "message_stop" => self.state = State::Stopped,
            "error" => {
                out.extend_from_slice(b"data: ");
                let _ = serde_json::to_writer(&mut *out, &event_envelope(data));
                out.extend_from_slice(b"\n\n");
                self.state = State::Failed;
            }
            // ping, and event types that come later.
            _ => {}
        }
    }

    /// A piece of a block's content.
    fn piece(&self, out: &mut Vec<u8>, block: Block, piece: &str) {
        let field: &[u8] = match block {
            Block::Text | Block::Json => b"{\"content\":",
            Block::Thinking => b"{\"reasoning_content\":",
            Block::Tool(k) => {
                return self.chunk(out, None, |out| {
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    let _ = serde_json::to_writer(&mut *out, &k);
                    out.extend_from_slice(b",\"function\":{\"arguments\":");
                    let _ = serde_json::to_writer(&mut *out, piece);
                    out.extend_from_slice(b"}}]}");
                });
            }
            Block::Other => return,
        };
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

    fn too_large(&mut self, out: &mut Vec<u8>) {
        let message = format!("the upstream sent an event larger than {MAX_EVENT} bytes");
        self.fail(out, &message, "upstream_error", "bad_upstream_response");
    }

    /// Ends the stream with an OpenAI error event.
    fn fail(&mut self, out: &mut Vec<u8>, message: &str, kind: &str, code: &str) {
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &envelope(message, kind, code));
        out.extend_from_slice(b"\n\n");
        self.state = State::Failed;
        self.line = Vec::new();
        self.data = Vec::new();
    }
}
