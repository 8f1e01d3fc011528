//! A streamed Gemini answer (`:streamGenerateContent?alt=sse`) → a streamed
//! Chat Completions answer, one server-sent event at a time.
//!
//! Each event's `data` is a whole GenerateContentResponse chunk: text and
//! function-call parts (a call comes whole, never in pieces), the usage so
//! far (every chunk has it: the last one counts), and `finishReason` on the
//! last chunk of a candidate. An error object instead of a chunk ends the
//! stream with an OpenAI error event. The upstream body is cut into lines as
//! it comes; the `data` of the event being received is the only thing kept
//! between calls.

use super::error::{ErrorDetail, detail, envelope, event_envelope};
use super::request::Reading;
use super::response::{GenerateResponse, Usage, answer_id, finish_reason};
use crate::dialect::TokenUsage;
use crate::dialect::chat;

/// The largest event accepted: a longer one ends the stream with an error.
pub const MAX_EVENT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Chunks still expected.
    Open,
    /// Every candidate has its `finishReason` (or the prompt was blocked):
    /// `finish` ends the stream with [DONE].
    Stopped,
    /// An error event was written: nothing follows it.
    Failed,
}

/// What is known of one candidate (one OpenAI choice).
#[derive(Clone, Copy, Debug)]
struct Choice {
    index: usize,
    /// Tool calls of this choice so far.
    calls: usize,
    finished: bool,
}

/// One streamed answer being translated.
pub struct ChatStream {
    include_usage: bool,
    model: String,
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
    /// once the first chunk has named the answer.
    head: Vec<u8>,
    choices: Vec<Choice>,
    /// Tool calls so far, all choices together: the next call's number.
    tool_calls: usize,
    usage: Option<Usage>,
}

impl ChatStream {
    pub fn new(reading: &Reading, created: u64) -> Self {
        Self {
            include_usage: reading.include_usage,
            model: reading.model.clone(),
            created,
            state: State::Open,
            ended: false,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            head: Vec::new(),
            choices: Vec::new(),
            tool_calls: 0,
            usage: None,
        }
    }

    /// Feeds de-chunked bytes of the upstream SSE body, split anywhere
    /// (mid-line, mid-UTF-8); appends each complete translated OpenAI SSE
    /// event (`data: {...}\n\n`) to `out` as soon as its Gemini chunk is
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
                line.clear();
                self.line = line;
            }
            data = &data[end + 1..];
        }
    }

    /// The upstream body ended. After the last `finishReason`: the usage
    /// chunk (when asked for) then `data: [DONE]`. Cut before it: an OpenAI
    /// error event, and no [DONE].
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        if self.state == State::Open && !self.after_cr && !self.line.is_empty() {
            // A last line without its line end: the body's end ends it.
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, out);
        }
        if self.state == State::Open && self.has_data {
            // A last event without its blank line: the body's end ends it.
            self.has_data = false;
            let data = std::mem::take(&mut self.data);
            self.on_event(&data, out);
        }
        match self.state {
            State::Stopped => {
                let usage = self
                    .include_usage
                    .then(|| self.usage.unwrap_or_default().json());
                chat::write_end(out, &self.head, usage.as_ref());
            }
            State::Open => self.fail(
                out,
                "the upstream stream ended before its finishReason",
                "upstream_error",
                "bad_upstream_response",
            ),
            State::Failed => {}
        }
    }

    /// Whether the stream is over (every candidate finished, or an error).
    pub fn is_done(&self) -> bool {
        self.state != State::Open
    }

    /// Whether it ended with an error event (the upstream's, or for a
    /// stream cut short).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The usage of the last chunk that had one.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage.map(|u| u.tokens())
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                let data = std::mem::take(&mut self.data);
                self.on_event(&data, out);
                self.data = data;
                self.data.clear();
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
        // `event:`, `id:`, `retry:` and comments mean nothing here.
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let chunk: GenerateResponse = match serde_json::from_slice(data) {
            Ok(chunk) => chunk,
            Err(e) => {
                // An error in a one-element array, or not JSON at all.
                if let Some(error) = detail(data) {
                    return self.upstream_error(out, &error);
                }
                let message = format!("the upstream sent a chunk that is not valid: {e}");
                return self.fail(out, &message, "upstream_error", "bad_upstream_response");
            }
        };
        // An error object reads as a chunk with nothing in it.
        if chunk.candidates.is_empty()
            && chunk.prompt_feedback.is_none()
            && chunk.usage_metadata.is_none()
            && let Some(error) = detail(data)
        {
            return self.upstream_error(out, &error);
        }
        if self.head.is_empty() {
            let id = answer_id(chunk.response_id.as_deref(), self.created);
            self.head.extend_from_slice(b"{\"id\":");
            let _ = serde_json::to_writer(&mut self.head, &id);
            self.head
                .extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            self.head
                .extend_from_slice(self.created.to_string().as_bytes());
            self.head.extend_from_slice(b",\"model\":");
            let _ = serde_json::to_writer(&mut self.head, &self.model);
            self.head.push(b',');
        }
        if let Some(usage) = chunk.usage_metadata {
            self.usage = Some(usage);
        }
        let blocked = chunk
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some());
        if chunk.candidates.is_empty() {
            if blocked {
                // A blocked prompt: one empty choice, filtered.
                self.choice(out, 0);
                self.chunk(out, 0, Some("content_filter"), |out| {
                    out.extend_from_slice(b"{}")
                });
                self.state = State::Stopped;
            }
            return;
        }
        for (position, candidate) in chunk.candidates.iter().enumerate() {
            let index = candidate.index.unwrap_or(position);
            let at = self.choice(out, index);
            let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts);
            for part in parts {
                if let Some(call) = &part.function_call {
                    let (id, arguments) =
                        call.id_and_arguments(self.tool_calls, part.thought_signature.as_deref());
                    // OpenAI numbers the calls of each choice from 0.
                    let k = self.choices[at].calls;
                    self.choices[at].calls += 1;
                    self.tool_calls += 1;
                    self.chunk(out, index, None, |out| {
                        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                        let _ = serde_json::to_writer(&mut *out, &k);
                        out.extend_from_slice(b",\"id\":");
                        let _ = serde_json::to_writer(&mut *out, &id);
                        out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                        let _ = serde_json::to_writer(&mut *out, &call.name);
                        out.extend_from_slice(b",\"arguments\":");
                        let _ = serde_json::to_writer(&mut *out, &arguments);
                        out.extend_from_slice(b"}}]}");
                    });
                } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                    let field: &[u8] = if part.thought == Some(true) {
                        b"{\"reasoning_content\":"
                    } else {
                        b"{\"content\":"
                    };
                    self.chunk(out, index, None, |out| {
                        out.extend_from_slice(field);
                        let _ = serde_json::to_writer(&mut *out, text);
                        out.push(b'}');
                    });
                }
            }
            if let Some(reason) = candidate.finish_reason.as_deref()
                && !self.choices[at].finished
            {
                let finish = finish_reason(reason, self.choices[at].calls > 0);
                self.choices[at].finished = true;
                self.chunk(out, index, Some(finish), |out| out.extend_from_slice(b"{}"));
            }
        }
        if self.choices.iter().all(|c| c.finished) {
            self.state = State::Stopped;
        }
    }

    /// The position of choice `index` among those seen; its first chunk
    /// (the role) is written when it is new.
    fn choice(&mut self, out: &mut Vec<u8>, index: usize) -> usize {
        if let Some(at) = self.choices.iter().position(|c| c.index == index) {
            return at;
        }
        self.choices.push(Choice {
            index,
            calls: 0,
            finished: false,
        });
        self.chunk(out, index, None, |out| {
            out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}")
        });
        self.choices.len() - 1
    }

    /// One `chat.completion.chunk` event for choice `index`, with the delta
    /// `delta` writes.
    fn chunk(
        &self,
        out: &mut Vec<u8>,
        index: usize,
        finish: Option<&str>,
        delta: impl FnOnce(&mut Vec<u8>),
    ) {
        chat::write_chunk(out, &self.head, index, finish, delta);
    }

    /// Ends the stream with Gemini's error, in the OpenAI envelope.
    fn upstream_error(&mut self, out: &mut Vec<u8>, error: &ErrorDetail) {
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &event_envelope(error));
        out.extend_from_slice(b"\n\n");
        self.state = State::Failed;
    }

    fn too_large(&mut self, out: &mut Vec<u8>) {
        let message = format!("the upstream sent an event larger than {MAX_EVENT} bytes");
        self.fail(out, &message, "upstream_error", "bad_upstream_response");
    }

    /// Ends the stream with an OpenAI error event.
    fn fail(&mut self, out: &mut Vec<u8>, message: &str, kind: &str, code: &str) {
        if self.state != State::Open {
            return;
        }
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &envelope(message, kind, code));
        out.extend_from_slice(b"\n\n");
        self.state = State::Failed;
        self.line = Vec::new();
        self.data = Vec::new();
    }
}
