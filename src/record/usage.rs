//! Token usage read from a routed response as it is relayed: the `usage`
//! block of a JSON answer, or of the events of a stream that have one
//! (the final chunk when `stream_options.include_usage` is on; Anthropic's
//! `message_start` and `message_delta`; the Responses API's
//! `response.completed`). Only the bytes that may hold it are kept: a JSON
//! answer up to a limit, and for a stream the event being received.

use memchr::memmem;
use serde::Deserialize;

/// Largest answer (or single event) kept to read its usage.
const MAX_KEPT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl From<crate::dialect::TokenUsage> for Usage {
    fn from(usage: crate::dialect::TokenUsage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}

/// Token counts as an answer states them, in whichever dialect: Chat
/// Completions' `prompt_tokens` and `completion_tokens`, or the Responses
/// API's and Anthropic's `input_tokens` and `output_tokens` (Anthropic
/// counts the prompt cache's reads and writes apart from its input).
#[derive(Deserialize)]
struct Stated {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl Stated {
    fn prompt(&self) -> Option<u64> {
        self.prompt_tokens.or_else(|| {
            let cached = self.cache_read_input_tokens.unwrap_or(0)
                + self.cache_creation_input_tokens.unwrap_or(0);
            self.input_tokens.map(|input| input + cached)
        })
    }

    fn completion(&self) -> Option<u64> {
        self.completion_tokens.or(self.output_tokens)
    }

    /// `earlier` with what this statement says: a stream may state the
    /// prompt and the completion in different events.
    fn over(&self, earlier: Option<Usage>) -> Option<Usage> {
        let (prompt, completion) = (self.prompt(), self.completion());
        if prompt.is_none() && completion.is_none() {
            return earlier;
        }
        let earlier = earlier.unwrap_or_default();
        Some(Usage {
            prompt_tokens: prompt.unwrap_or(earlier.prompt_tokens),
            completion_tokens: completion.unwrap_or(earlier.completion_tokens),
        })
    }
}

/// Where an answer or event states its usage: at the top, or in the
/// message (Anthropic's `message_start`) or response (the Responses API's
/// `response.completed`) it carries.
#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Stated>,
    message: Option<Nested>,
    response: Option<Nested>,
}

#[derive(Deserialize)]
struct Nested {
    usage: Option<Stated>,
}

impl WithUsage {
    fn stated(self) -> Option<Stated> {
        self.usage
            .or_else(|| self.message.and_then(|m| m.usage))
            .or_else(|| self.response.and_then(|r| r.usage))
    }
}

/// Collects a response body's payload (de-chunked) and finds its usage.
pub struct UsageScan {
    stream: bool,
    kept: Vec<u8>,
    /// Past `MAX_KEPT` without an end: what follows is not looked at.
    overflowed: bool,
    /// The last usage seen in a stream.
    found: Option<Usage>,
}

impl UsageScan {
    pub fn new(stream: bool) -> Self {
        Self {
            stream,
            kept: Vec::new(),
            overflowed: false,
            found: None,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.overflowed {
            return;
        }
        self.kept.extend_from_slice(data);
        if self.stream {
            self.scan_events();
        }
        if self.kept.len() > MAX_KEPT {
            self.overflowed = true;
            self.kept = Vec::new();
        }
    }

    /// Reads the complete events kept so far and keeps the incomplete one.
    fn scan_events(&mut self) {
        let mut start = 0;
        while let Some((end, next)) = event_end(&self.kept[start..]) {
            let event = &self.kept[start..start + end];
            if memmem::find(event, b"\"usage\"").is_some()
                && let Some(stated) = event_usage(event)
            {
                self.found = stated.over(self.found);
            }
            start += next;
        }
        self.kept.drain(..start);
    }

    /// The usage of the whole response, once it has been fed entirely.
    pub fn finish(mut self) -> Option<Usage> {
        if self.stream {
            // An event not followed by a blank line still counts.
            self.kept.extend_from_slice(b"\n\n");
            self.scan_events();
            return self.found;
        }
        if self.overflowed {
            return None;
        }
        serde_json::from_slice::<WithUsage>(&self.kept)
            .ok()
            .and_then(WithUsage::stated)
            .and_then(|stated| stated.over(None))
    }
}

/// Where the first event in `buf` ends (a blank line: `\n\n`, `\n\r\n`),
/// and where the next one starts.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(at) = memchr::memchr(b'\n', &buf[from..]) {
        let line_end = from + at;
        let rest = &buf[line_end + 1..];
        if rest.first() == Some(&b'\n') {
            return Some((line_end, line_end + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((line_end, line_end + 3));
        }
        from = line_end + 1;
    }
    None
}

/// The usage in one SSE event (`data: {...}` lines), if it has one.
fn event_usage(event: &[u8]) -> Option<Stated> {
    let text = std::str::from_utf8(event).ok()?;
    let data: String = text
        .lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str::<WithUsage>(&data).ok()?.stated()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_json_answer() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        let mut scan = UsageScan::new(false);
        for part in body.chunks(7) {
            scan.feed(part);
        }
        let usage = scan.finish();
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 5
            })
        );
    }

    #[test]
    fn usage_of_the_last_stream_event_split_anywhere() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\r\n\r\ndata: [DONE]\n\n";
        let stream = String::from_utf8_lossy(stream);
        for size in [1, 5, 64, 4096] {
            let mut scan = UsageScan::new(true);
            for part in stream.as_bytes().chunks(size) {
                scan.feed(part);
            }
            assert_eq!(
                scan.finish(),
                Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 9
                }),
                "parts of {size}"
            );
        }
    }

    #[test]
    fn anthropic_usage_comes_in_two_events_and_counts_the_cache() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",",
            "\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,",
            "\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",",
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":",
            "{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":31}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        for size in [1, 7, 4096] {
            let mut scan = UsageScan::new(true);
            for part in stream.as_bytes().chunks(size) {
                scan.feed(part);
            }
            assert_eq!(
                scan.finish(),
                Some(Usage {
                    prompt_tokens: 27,
                    completion_tokens: 31
                }),
                "parts of {size}"
            );
        }
        let whole = br#"{"id":"msg","type":"message","usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":6}}"#;
        let mut scan = UsageScan::new(false);
        scan.feed(whole);
        assert_eq!(
            scan.finish(),
            Some(Usage {
                prompt_tokens: 14,
                completion_tokens: 6
            })
        );
    }

    #[test]
    fn responses_api_usage_in_the_completed_event() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":",
            "{\"usage\":{\"input_tokens\":8,\"input_tokens_details\":{\"cached_tokens\":3},",
            "\"output_tokens\":4,\"total_tokens\":12}}}\n\n",
        );
        let mut scan = UsageScan::new(true);
        scan.feed(stream.as_bytes());
        assert_eq!(
            scan.finish(),
            Some(Usage {
                prompt_tokens: 8,
                completion_tokens: 4
            })
        );
    }

    #[test]
    fn no_usage_is_none() {
        let mut scan = UsageScan::new(true);
        scan.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
        assert_eq!(scan.finish(), None);
        let mut scan = UsageScan::new(false);
        scan.feed(b"{\"error\":{}}");
        assert_eq!(scan.finish(), None);
    }
}
