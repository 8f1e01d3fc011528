//! [`CountingUpstream`]: a slow OpenAI-shaped upstream that counts the
//! requests it holds at once, for the tests of parallel-request limits
//! (the mock upstream does not say how many requests it has in flight).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

/// Answers every chat completion after `delay`, whole or as a stream (as
/// the request's `"stream"` says), with a fixed usage; counts what it holds.
pub struct CountingUpstream {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    answered: AtomicUsize,
}

impl CountingUpstream {
    /// `usage`: the prompt and completion tokens every answer reports.
    pub fn start(delay: Duration, usage: (u64, u64)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<Counts> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || serve(stream, delay, usage, &seen));
            }
        });
        Self { addr, counts, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.counts.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests held at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.counts.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.counts.answered.load(Ordering::SeqCst)
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut stream: TcpStream, delay: Duration, usage: (u64, u64), counts: &Counts) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some((_, body)) = super::next_request(&mut stream, &mut buf) else {
            return;
        };
        let request: serde_json::Value =
            serde_json::from_slice(&buf[body.clone()]).unwrap_or_default();
        buf.drain(..body.end);
        let held = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counts.max_in_flight.fetch_max(held, Ordering::SeqCst);
        std::thread::sleep(delay);
        // No longer held once the answer may be on its way: the proxy
        // cannot start another request on this slot before it has it.
        counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        let answer = answer(request["stream"] == true, usage);
        if stream.write_all(&answer).is_err() {
            return;
        }
        counts.answered.fetch_add(1, Ordering::SeqCst);
    }
}

fn answer(stream: bool, (prompt, completion): (u64, u64)) -> Vec<u8> {
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    });
    if !stream {
        let body = json!({
            "id": "chatcmpl-counting",
            "object": "chat.completion",
            "created": 1,
            "model": "counting",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Counted."},
                "finish_reason": "stop",
            }],
            "usage": usage,
        })
        .to_string();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body.as_bytes());
        return out;
    }
    let chunk = |choices: serde_json::Value, usage: serde_json::Value| {
        json!({
            "id": "chatcmpl-counting",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "counting",
            "choices": choices,
            "usage": usage,
        })
    };
    let events = [
        chunk(
            json!([{"index": 0, "delta": {"content": "Counted."}, "finish_reason": null}]),
            serde_json::Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            serde_json::Value::Null,
        ),
        chunk(json!([]), usage),
    ];
    let mut sse = String::new();
    for event in events {
        sse.push_str(&format!("data: {event}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{sse}\r\n0\r\n\r\n",
        sse.len()
    )
    .into_bytes()
}
