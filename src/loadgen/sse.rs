//! Server-sent events seen in a streamed response body: when the first
//! `data:` line arrived, the gaps between events, and whether the stream
//! ended: with `data: [DONE]` (OpenAI's streams) or `event: message_stop`
//! (Anthropic's).

use std::time::{Duration, Instant};

/// Enough of a line to tell `data: [DONE]` and `event: message_stop` (with
/// a CR) from anything else.
const PREFIX: usize = 24;

#[derive(Debug, Default)]
pub struct SseScanner {
    line: [u8; PREFIX],
    line_len: usize,
    /// The current line is longer than `PREFIX`.
    long_line: bool,
    /// `data:` events, `[DONE]` not included.
    events: u32,
    first_event: Option<Instant>,
    last_event: Option<Instant>,
    done: bool,
}

/// What one stream looked like.
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    pub events: u32,
    pub first_event: Option<Instant>,
    /// Mean time between consecutive events (needs two or more).
    pub mean_gap: Option<Duration>,
    /// The stream ended with `data: [DONE]` or `event: message_stop`.
    pub done: bool,
}

impl SseScanner {
    /// Scans payload bytes that arrived at `now`.
    pub fn feed(&mut self, data: &[u8], now: Instant) {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.push(&rest[..end]);
            self.end_line(now);
            rest = &rest[end + 1..];
        }
        self.push(rest);
    }

    fn push(&mut self, part: &[u8]) {
        let room = PREFIX - self.line_len;
        let take = room.min(part.len());
        self.line[self.line_len..self.line_len + take].copy_from_slice(&part[..take]);
        self.line_len += take;
        self.long_line |= part.len() > room;
    }

    fn end_line(&mut self, now: Instant) {
        let line = &self.line[..self.line_len];
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.trim_ascii();
            if !self.long_line && value == b"[DONE]" {
                self.done = true;
            } else {
                self.events += 1;
                self.first_event.get_or_insert(now);
                self.last_event = Some(now);
            }
        } else if let Some(name) = line.strip_prefix(b"event:") {
            self.done |= !self.long_line && name.trim_ascii() == b"message_stop";
        }
        self.line_len = 0;
        self.long_line = false;
    }

    pub fn finish(&self) -> StreamTiming {
        let mean_gap = match (self.first_event, self.last_event) {
            (Some(first), Some(last)) if self.events >= 2 => {
                Some((last - first) / (self.events - 1))
            }
            _ => None,
        };
        StreamTiming {
            events: self.events,
            first_event: self.first_event,
            mean_gap,
            done: self.done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anthropic_stream_ends_with_message_stop() {
        let body = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";
        let mut scanner = SseScanner::default();
        scanner.feed(body, Instant::now());
        let timing = scanner.finish();
        assert_eq!(timing.events, 2);
        assert!(timing.done);
        let mut cut = SseScanner::default();
        cut.feed(
            b"event: message_start\ndata: {}\n\nevent: message_stopped\n",
            Instant::now(),
        );
        assert!(!cut.finish().done);
    }

    #[test]
    fn counts_events_split_anywhere_and_sees_done() {
        let body = b"data: {\"a\":1}\n\ndata: {\"long\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}\n\n: comment\n\ndata: [DONE]\r\n\r\n";
        for split in 0..body.len() {
            let mut scanner = SseScanner::default();
            let now = Instant::now();
            scanner.feed(&body[..split], now);
            scanner.feed(&body[split..], now + Duration::from_millis(10));
            let timing = scanner.finish();
            assert_eq!(timing.events, 2, "split {split}");
            assert!(timing.done, "split {split}");
            assert!(timing.first_event.is_some());
            assert!(timing.mean_gap.is_some());
        }
    }

    #[test]
    fn a_stream_without_done_is_incomplete() {
        let mut scanner = SseScanner::default();
        scanner.feed(b"data: {}\n\ndata: [DONE]x\n\n", Instant::now());
        let timing = scanner.finish();
        assert!(!timing.done);
        assert_eq!(timing.events, 2);
    }

    #[test]
    fn mean_gap_spreads_over_the_events() {
        let mut scanner = SseScanner::default();
        let t0 = Instant::now();
        scanner.feed(b"data: 1\n\n", t0);
        scanner.feed(b"data: 2\n\n", t0 + Duration::from_millis(10));
        scanner.feed(b"data: 3\n\n", t0 + Duration::from_millis(30));
        assert_eq!(scanner.finish().mean_gap, Some(Duration::from_millis(15)));
    }
}
