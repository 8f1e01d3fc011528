//! One exchange with the proxy, on a thread of its own: the request, the
//! answer read as server-sent events (or whole), and every failure as a
//! [`ClientError`].

use std::io::{self, BufRead, BufReader};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use serde_json::Value;
use ureq::http::{self, StatusCode, header};

use super::PROXY;
use crate::http_client::{self, ClientError};

/// Time allowed to open the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed until the response head arrives.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time allowed for a whole answer, streamed or not.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest answer read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;
/// Largest error body read.
const MAX_ERROR_BYTES: u64 = 1024 * 1024;

/// What the exchange thread reports.
pub(super) enum Progress {
    /// Text to print now.
    Delta(String),
    /// The whole answer, or why there is none.
    Done(Result<String, ClientError>),
}

#[derive(Clone)]
pub(super) struct Exchange {
    agent: ureq::Agent,
    /// The chat completions URL.
    url: String,
    /// For messages.
    base_url: String,
    /// Sent as `Authorization: Bearer …`; never printed.
    token: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        // 4xx/5xx bodies carry the error message: read them as responses.
        .http_status_as_error(false)
        // A redirect would carry the bearer token elsewhere: report it instead.
        .max_redirects(0)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .timeout_recv_body(Some(ANSWER_TIMEOUT))
        .user_agent(concat!("llm-proxy/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

impl Exchange {
    /// For the chat completions `url`; `base_url` is what messages name.
    pub(super) fn new(url: &str, base_url: &str, token: &str) -> Exchange {
        Exchange {
            agent: agent(),
            url: url.to_string(),
            base_url: base_url.to_string(),
            token: token.to_string(),
        }
    }

    /// Starts the exchange on its own thread. Dropping the receiver
    /// abandons it: the thread stops at its next delta.
    pub(super) fn spawn(
        &self,
        body: Vec<u8>,
        stream: bool,
    ) -> Result<Receiver<Progress>, ClientError> {
        let (tx, rx) = mpsc::channel();
        let exchange = self.clone();
        std::thread::Builder::new()
            .name("chat-exchange".into())
            .spawn(move || {
                let result = exchange.send(body, stream, &tx);
                let _ = tx.send(Progress::Done(result));
            })
            .map_err(|e| ClientError::BadResponse(format!("cannot start the request: {e}")))?;
        Ok(rx)
    }

    fn send(
        &self,
        body: Vec<u8>,
        stream: bool,
        tx: &Sender<Progress>,
    ) -> Result<String, ClientError> {
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let request = http::Request::post(&self.url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept)
            .body(body)
            .map_err(|e| ClientError::Usage(format!("invalid request ({e}): check --base-url")))?;
        let response = self
            .agent
            .run(request)
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let event_stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        let body = response.into_body();
        if !status.is_success() {
            // A cut-off error body still leaves the status to report.
            let bytes = body
                .into_with_config()
                .limit(MAX_ERROR_BYTES)
                .read_to_vec()
                .unwrap_or_default();
            return Err(self.status_error(status, &bytes));
        }
        let emit = |text: &str| tx.send(Progress::Delta(text.to_string())).is_ok();
        if event_stream {
            let reader = body.into_with_config().limit(MAX_ANSWER_BYTES).reader();
            return read_events(BufReader::new(reader), emit);
        }
        let bytes = body
            .into_with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| cut_off(&e.to_string()))?;
        let answer = whole_answer(&bytes)?;
        emit(&answer);
        Ok(answer)
    }

    fn status_error(&self, status: StatusCode, body: &[u8]) -> ClientError {
        let code = status.as_u16();
        let message = http_client::error_message(body)
            .map(|m| m.replace(self.token.as_str(), "[redacted]"))
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            });
        if code == 401 || code == 403 {
            return ClientError::Auth {
                status: Some(code),
                message: format!(
                    "{} rejected the token ({code}: {message}): check {} / {}",
                    PROXY.name, PROXY.token_flag, PROXY.token_env
                ),
            };
        }
        ClientError::Api {
            service: PROXY.name,
            status: code,
            message,
        }
    }

    fn transport_error(&self, error: ureq::Error) -> ClientError {
        let unreachable = |reason: String| ClientError::Unreachable {
            service: PROXY.name,
            url: self.base_url.clone(),
            reason,
            advice: http_client::UNREACHABLE_ADVICE.into(),
        };
        match error {
            ureq::Error::Io(e) => unreachable(match e.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".into(),
                io::ErrorKind::ConnectionReset => "connection reset".into(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
                io::ErrorKind::UnexpectedEof => "connection closed before an answer".into(),
                _ => e.to_string(),
            }),
            ureq::Error::HostNotFound => unreachable("host not found".into()),
            ureq::Error::Timeout(phase) => unreachable(format!("timed out: {phase}")),
            ureq::Error::ConnectionFailed => unreachable("connection failed".into()),
            ureq::Error::Tls(e) => unreachable(format!("TLS: {e}")),
            ureq::Error::Rustls(e) => unreachable(format!("TLS: {e}")),
            ureq::Error::TlsRequired => unreachable("TLS required".into()),
            ureq::Error::ConnectProxyFailed(e) => unreachable(format!("HTTP proxy: {e}")),
            ureq::Error::BadUri(e) => {
                ClientError::Usage(format!("invalid URL ({e}): check --base-url"))
            }
            other => ClientError::BadResponse(format!(
                "{} at {} did not answer with valid HTTP ({other}): is it `llm-proxy server`?",
                PROXY.name, self.base_url
            )),
        }
    }
}

fn cut_off(reason: &str) -> ClientError {
    ClientError::BadResponse(format!("the answer was cut off: {reason}"))
}

/// The answer of a `chat.completion` object.
fn whole_answer(body: &[u8]) -> Result<String, ClientError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        ClientError::BadResponse(format!(
            "{} answered with invalid JSON ({e}): is --base-url the proxy?",
            PROXY.name
        ))
    })?;
    if !json["error"].is_null() {
        return Err(stream_error(body));
    }
    let message = &json["choices"][0]["message"];
    if !message.is_object() {
        return Err(ClientError::BadResponse(format!(
            "{} answered without a message: is --base-url the proxy?",
            PROXY.name
        )));
    }
    Ok(message["content"].as_str().unwrap_or_default().to_string())
}

fn stream_error(data: &[u8]) -> ClientError {
    let message = http_client::error_message(data).unwrap_or_else(|| "no message".into());
    ClientError::BadResponse(format!("the answer ended with an error: {message}"))
}

/// Reads `chat.completion.chunk` events until `data: [DONE]` (or the end of
/// a stream whose last choice has a `finish_reason`), passing every content
/// delta to `emit`, which returns false to stop. Returns the whole answer.
fn read_events(
    mut reader: impl BufRead,
    mut emit: impl FnMut(&str) -> bool,
) -> Result<String, ClientError> {
    let mut events = SseEvents::default();
    let mut answer = String::new();
    let mut finished = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| cut_off(&e.to_string()))?;
        let event = if read == 0 {
            events.finish()
        } else {
            events.line(&String::from_utf8_lossy(&line))
        };
        if let Some(data) = event {
            if data.trim() == "[DONE]" {
                return Ok(answer);
            }
            let json: Value = serde_json::from_str(&data).map_err(|e| {
                ClientError::BadResponse(format!("the answer stream has an invalid event: {e}"))
            })?;
            if !json["error"].is_null() {
                return Err(stream_error(data.as_bytes()));
            }
            let choice = &json["choices"][0];
            if let Some(delta) = choice["delta"]["content"].as_str() {
                answer.push_str(delta);
                if !emit(delta) {
                    return Err(ClientError::BadResponse("cancelled".into()));
                }
            }
            finished |= !choice["finish_reason"].is_null();
        }
        if read == 0 {
            break;
        }
    }
    if finished {
        return Ok(answer);
    }
    Err(cut_off("the stream ended before the answer was complete"))
}

/// Server-sent events from lines: the `data:` lines of an event, joined by
/// newlines, are its data; a blank line ends the event. Other fields and
/// comments are ignored.
#[derive(Debug, Default)]
struct SseEvents {
    data: String,
    has_data: bool,
}

impl SseEvents {
    /// One line, its line ending included or not; returns the data of the
    /// event it completes.
    fn line(&mut self, line: &str) -> Option<String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return self.finish();
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            self.has_data = true;
        }
        None
    }

    /// The pending event, at the end of the stream.
    fn finish(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(std::mem::take(&mut self.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<String> {
        let mut sse = SseEvents::default();
        let mut out: Vec<String> = text
            .split_inclusive('\n')
            .filter_map(|l| sse.line(l))
            .collect();
        out.extend(sse.finish());
        out
    }

    #[test]
    fn sse_lines_become_events() {
        assert_eq!(
            events("data: a\n\n: comment\nevent: x\ndata:b\r\ndata:  c\r\n\r\ndata: [DONE]"),
            ["a", "b\n c", "[DONE]"]
        );
        assert_eq!(events("\n\nid: 1\n\n"), Vec::<String>::new());
    }

    fn chunk(content: &str) -> String {
        format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        )
    }

    #[test]
    fn reads_deltas_until_done() {
        let body = format!(
            "{}{}data: {{\"choices\":[]}}\n\ndata: [DONE]\n\n",
            chunk("Hel"),
            chunk("lo é")
        );
        let mut seen = Vec::new();
        let answer = read_events(body.as_bytes(), |d| {
            seen.push(d.to_string());
            true
        })
        .unwrap();
        assert_eq!(answer, "Hello é");
        assert_eq!(seen, ["Hel", "lo é"]);
    }

    #[test]
    fn a_stream_needs_done_or_a_finish_reason() {
        let cut = chunk("partial");
        let error = read_events(cut.as_bytes(), |_| true).unwrap_err();
        assert!(error.to_string().contains("cut off"), "{error}");
        let finished = format!(
            "{}data: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}",
            chunk("whole")
        );
        assert_eq!(read_events(finished.as_bytes(), |_| true).unwrap(), "whole");
    }

    #[test]
    fn an_error_event_or_a_refusing_sink_stops_the_stream() {
        let body = format!(
            "{}data: {{\"error\":{{\"message\":\"upstream went away\"}}}}\n\n",
            chunk("a")
        );
        let error = read_events(body.as_bytes(), |_| true).unwrap_err();
        assert!(error.to_string().contains("upstream went away"), "{error}");
        let body = format!("{}{}data: [DONE]\n\n", chunk("a"), chunk("b"));
        let mut calls = 0;
        assert!(
            read_events(body.as_bytes(), |_| {
                calls += 1;
                false
            })
            .is_err()
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn whole_answers() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"Hi there"}}]}"#;
        assert_eq!(whole_answer(body).unwrap(), "Hi there");
        assert!(whole_answer(b"{}").is_err());
        assert!(whole_answer(b"<html>").is_err());
        let error = whole_answer(br#"{"error":{"message":"nope"}}"#).unwrap_err();
        assert!(error.to_string().contains("nope"));
    }

    #[test]
    fn status_errors_keep_the_servers_message_and_hide_the_token() {
        let exchange = Exchange::new("http://x/v1/chat/completions", "http://x", "sk-secret-1");
        let error = exchange.status_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"message":"invalid API key sk-secret-1","code":"invalid_api_key"}}"#,
        );
        assert_eq!(error.exit_code(), 3);
        assert_eq!(
            error.to_string(),
            "the proxy rejected the token (401: invalid API key [redacted]): check --token / PROXY_TOKEN"
        );
        let error = exchange.status_error(StatusCode::TOO_MANY_REQUESTS, b"");
        assert_eq!(error.exit_code(), 1);
        assert_eq!(
            error.to_string(),
            "the proxy answered 429: Too Many Requests"
        );
    }
}
