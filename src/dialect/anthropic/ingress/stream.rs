//! A Chat Completions SSE stream as a Messages SSE stream, one upstream
//! event at a time: each `data:` event is parsed when its blank line
//! arrives and its Messages events are written at once; nothing but the
//! event being read is kept.
//!
//! ```text
//! first chunk            message_start (input_tokens 0), ping
//! delta.content/refusal  [content_block_stop] content_block_start text, text_delta
//! delta.tool_calls[i]    new i: [content_block_stop] content_block_start tool_use;
//!                        arguments: input_json_delta (to i's block)
//! finish_reason          content_block_stop; message_delta waits for the usage chunk
//! usage chunk / [DONE]   message_delta (stop_reason, usage), message_stop
//! {"error": ...}         event: error, and the stream is over
//! cut before the end     event: error
//! ```

use std::io::Write;

use serde::Deserialize;
use serde_json::{Value, json};

use super::request::Reading;
use super::{ChatUsage, Str, error_type, error_type_named, stop_reason, usage_json};
use crate::dialect::TokenUsage;

/// The largest upstream event read (its data lines together).
const MAX_EVENT: usize = 1 << 20;

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Str<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Str<'a>>,
    /// Why the model declines, in place of content (OpenAI's refusals).
    #[serde(borrow, default)]
    refusal: Option<Str<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    arguments: Option<Str<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text(u32),
    Thinking(u32),
    Tool(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Content may still come.
    Answering,
    /// A finish_reason came: waiting for the usage chunk or `[DONE]`.
    Finishing,
    /// message_stop or an error event was written; the rest is ignored.
    Done,
}

/// One streamed answer being translated.
pub struct MessagesStream {
    /// The model the client named.
    model: String,
    /// The SSE line a chunk ended inside of.
    line: Vec<u8>,
    /// The data lines of the event being read, joined by `\n`.
    data: Vec<u8>,
    started: bool,
    /// The index of the next content block.
    next_block: u32,
    open: Option<Open>,
    /// The content block of each tool call so far, by its Chat index.
    tools: Vec<(u32, u32)>,
    stop_reason: Option<&'static str>,
    /// The model declined (a `refusal` delta): the stop reason is `refusal`.
    refused: bool,
    usage: Option<TokenUsage>,
    phase: Phase,
    /// It ended with an error event.
    failed: bool,
}

impl MessagesStream {
    pub fn new(reading: &Reading) -> Self {
        Self {
            model: reading.model.clone(),
            line: Vec::new(),
            data: Vec::new(),
            started: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            stop_reason: None,
            refused: false,
            usage: None,
            phase: Phase::Answering,
            failed: false,
        }
    }

    /// Feeds de-chunked bytes of the upstream's OpenAI SSE body, split
    /// anywhere; appends each complete Anthropic event to `out` as soon as
    /// the upstream event it comes from is complete. An upstream event over
    /// 1 MiB ends the stream with an error event.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() && self.phase != Phase::Done {
            let Some(n) = memchr::memchr(b'\n', data) else {
                if self.line.len() + self.data.len() + data.len() > MAX_EVENT {
                    return self.too_large(out);
                }
                self.line.extend_from_slice(data);
                return;
            };
            let line = &data[..n];
            data = &data[n + 1..];
            if self.line.is_empty() {
                self.on_line(line, out);
            } else {
                if self.line.len() + self.data.len() + line.len() > MAX_EVENT {
                    return self.too_large(out);
                }
                let mut pending = std::mem::take(&mut self.line);
                pending.extend_from_slice(line);
                self.on_line(&pending, out);
                pending.clear();
                self.line = pending;
            }
        }
    }

    /// The upstream body ended: the answer is closed (open block,
    /// message_delta, message_stop) when a finish_reason or `[DONE]` came,
    /// else the client gets an error event.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        // An event the body ended inside of counts only when it is whole.
        if self.phase != Phase::Done {
            let last = std::mem::take(&mut self.line);
            if !last.is_empty() {
                self.on_line(&last, out);
            }
            let data = std::mem::take(&mut self.data);
            let whole =
                data == b"[DONE]" || serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok();
            if self.phase != Phase::Done && !data.is_empty() && whole {
                self.on_event(&data, out);
            }
        }
        match self.phase {
            Phase::Done => {}
            Phase::Finishing => self.end(out),
            Phase::Answering => self.fail(
                "api_error",
                "the upstream stream ended before the answer was complete",
                out,
            ),
        }
    }

    /// message_stop or an error event has been written.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether it ended with an error event (the upstream's, or for a
    /// stream cut short).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The usage the upstream reported, once it has.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if !self.data.is_empty() {
                let mut event = std::mem::take(&mut self.data);
                self.on_event(&event, out);
                event.clear();
                self.data = event;
            }
        } else if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.data.len() + value.len() + 1 > MAX_EVENT {
                return self.too_large(out);
            }
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
        }
        // Comments, `event:`, `id:` and `retry:` lines say nothing here.
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data == b"[DONE]" {
            if self.phase == Phase::Answering {
                self.phase = Phase::Finishing;
            }
            return self.end(out);
        }
        let chunk: Chunk = match serde_json::from_slice(data) {
            Ok(chunk) => chunk,
            Err(e) => {
                let message = format!("the upstream sent an unreadable stream event: {e}");
                return self.fail("api_error", &message, out);
            }
        };
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            let (kind, message) = upstream_error(&error);
            return self.fail(kind, &message, out);
        }
        if !self.started && (!chunk.choices.is_empty() || chunk.usage.is_some()) {
            self.start(chunk.id.as_deref().unwrap_or(""), out);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(delta) = &choice.delta {
                self.delta(delta, out);
            }
            if let Some(reason) = &choice.finish_reason {
                self.close(out);
                self.stop_reason = Some(stop_reason(Some(reason), !self.tools.is_empty()));
                self.phase = Phase::Finishing;
            }
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.tokens());
            if self.phase == Phase::Finishing {
                self.end(out);
            }
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        self.started = true;
        let message = json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_{id}"),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        });
        event(out, "message_start", &message);
        event(out, "ping", &json!({"type": "ping"}));
    }

    fn delta(&mut self, delta: &Delta, out: &mut Vec<u8>) {
        if let Some(thinking) = delta.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some(Open::Thinking(index)) => index,
                _ => {
                    let block = json!({"type": "thinking", "thinking": "", "signature": ""});
                    let index = self.open_block(&block, out);
                    self.open = Some(Open::Thinking(index));
                    index
                }
            };
            delta_event(out, index, "thinking_delta", "thinking", thinking);
        }
        let refusal = delta.refusal.as_deref().filter(|t| !t.is_empty());
        if refusal.is_some() {
            self.refused = true;
        }
        for text in [delta.content.as_deref(), refusal]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
        {
            let index = match self.open {
                Some(Open::Text(index)) => index,
                _ => {
                    let index = self.open_block(&json!({"type": "text", "text": ""}), out);
                    self.open = Some(Open::Text(index));
                    index
                }
            };
            delta_event(out, index, "text_delta", "text", text);
        }
        for call in delta.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            let index = match self.tools.iter().find(|(i, _)| *i == call.index) {
                Some(&(_, block)) => block,
                None => {
                    let name = function.and_then(|f| f.name.as_deref()).unwrap_or("");
                    let id = match call.id.as_deref() {
                        Some(id) => id.to_owned(),
                        None => format!("toolu_{}", self.next_block),
                    };
                    let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                    let index = self.open_block(&block, out);
                    self.open = Some(Open::Tool(index));
                    self.tools.push((call.index, index));
                    index
                }
            };
            if let Some(arguments) = function.and_then(|f| f.arguments.as_deref())
                && !arguments.is_empty()
            {
                delta_event(out, index, "input_json_delta", "partial_json", arguments);
            }
        }
    }

    /// Closes the open block and starts `block` as the next one.
    fn open_block(&mut self, block: &Value, out: &mut Vec<u8>) -> u32 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        let start = json!({"type": "content_block_start", "index": index, "content_block": block});
        event(out, "content_block_start", &start);
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(Open::Text(index) | Open::Thinking(index) | Open::Tool(index)) =
            self.open.take()
        {
            let stop = json!({"type": "content_block_stop", "index": index});
            event(out, "content_block_stop", &stop);
        }
    }

    /// message_delta and message_stop: the answer is complete.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Done {
            return;
        }
        if !self.started {
            self.start("", out);
        }
        self.close(out);
        let stop_reason = match self.stop_reason {
            _ if self.refused => "refusal",
            Some(reason) => reason,
            None => stop_reason(None, !self.tools.is_empty()),
        };
        let usage = match &self.usage {
            Some(usage) => usage_json(usage),
            None => json!({"output_tokens": 0}),
        };
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": usage,
        });
        event(out, "message_delta", &delta);
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.phase = Phase::Done;
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.failed = true;
        let error = json!({"type": "error", "error": {"type": kind, "message": message}});
        event(out, "error", &error);
        self.phase = Phase::Done;
        self.line = Vec::new();
        self.data = Vec::new();
    }

    fn too_large(&mut self, out: &mut Vec<u8>) {
        self.fail(
            "api_error",
            "the upstream sent a stream event larger than 1 MiB",
            out,
        );
    }
}

/// The Anthropic error type and message of an upstream `error` object.
fn upstream_error(error: &Value) -> (&'static str, String) {
    let message = match error {
        Value::String(s) => s.clone(),
        _ => match error.get("message").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => error.to_string(),
        },
    };
    let status = ["status", "code"]
        .iter()
        .find_map(|k| error.get(*k).and_then(Value::as_u64));
    let kind = match status {
        Some(status) => error_type(u16::try_from(status).unwrap_or(500)).1,
        None => ["type", "code"]
            .iter()
            .filter_map(|k| error.get(*k).and_then(Value::as_str))
            .map(error_type_named)
            .find(|kind| *kind != "api_error")
            .unwrap_or("api_error"),
    };
    (kind, message)
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

/// A content_block_delta, written without building a tree: the hot event.
fn delta_event(out: &mut Vec<u8>, index: u32, kind: &str, key: &str, value: &str) {
    out.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    let _ = write!(out, "{index},\"delta\":{{\"type\":\"{kind}\",\"{key}\":");
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"}}\n\n");
}
