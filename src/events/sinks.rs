//! Where a dispatcher delivers events. A sink acknowledges a batch only
//! once it is safe there (file: written and fsynced; HTTP: a 2xx answer);
//! until then the dispatcher's cursor does not move.
//!
//! - `file`: one JSON object per line (JSONL), with `seq`.
//! - `http`: `POST <endpoint>` with a JSON array of events (with `seq`).
//!   Both get gap records (`{"seq":N,"node":...,"gap":{...}}`) and budget
//!   alerts (`{"seq":N,"node":...,"budget_alert":{...}}`) as they are.
//! - `lunary`: `POST <endpoint>/v1/runs/ingest` with `{"events": [...]}`,
//!   a `type: "llm"` start event and an end (or error) event per request.
//! - `helicone`: `POST <endpoint>/custom/v1/log` per request, with
//!   `providerRequest`, `providerResponse` and `timing`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

/// Longest wait for an HTTP sink's answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

pub const LUNARY_ENDPOINT: &str = "https://api.lunary.ai";
pub const HELICONE_ENDPOINT: &str = "https://api.hconeai.com";

/// An event to deliver: its sequence number and JSON bytes.
pub type Logged = (u64, Vec<u8>);

/// Why a sink did not take a batch.
#[derive(Debug)]
pub enum Refusal {
    /// Worth another try (unreachable, 5xx, a write that failed).
    Failed(String),
    /// The sink refused the credentials (401 or 403): another try with
    /// the same key cannot do better.
    Unauthorized(String),
}

pub enum Sink {
    File(FileSink),
    Http(HttpSink),
    Lunary(HttpSink),
    Helicone(HttpSink),
}

impl Sink {
    pub fn file(path: &Path) -> std::io::Result<Sink> {
        FileSink::open(path).map(Sink::File)
    }

    pub fn http(kind: &str, url: String, api_key: Option<String>) -> Sink {
        let sink = HttpSink {
            agent: crate::http_client::agent(HTTP_TIMEOUT),
            url,
            api_key,
        };
        match kind {
            "lunary" => Sink::Lunary(sink),
            "helicone" => Sink::Helicone(sink),
            _ => Sink::Http(sink),
        }
    }

    /// Delivers `events`; `Ok` means the sink has them for good.
    pub fn deliver(&mut self, events: &[Logged]) -> Result<(), Refusal> {
        match self {
            Sink::File(sink) => sink
                .write(events)
                .map_err(|e| Refusal::Failed(e.to_string())),
            Sink::Http(sink) => {
                let mut body = Vec::with_capacity(events.iter().map(|e| e.1.len() + 16).sum());
                body.push(b'[');
                for (index, (seq, event)) in events.iter().enumerate() {
                    if index > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(&with_seq(*seq, event));
                }
                body.push(b']');
                sink.post("", body)
            }
            Sink::Lunary(sink) => {
                let runs: Vec<Value> = events
                    .iter()
                    .filter_map(|(_, bytes)| serde_json::from_slice(bytes).ok())
                    .filter(|event: &Value| is_request(event))
                    .flat_map(|event: Value| lunary_events(&event))
                    .collect();
                sink.post(
                    "/v1/runs/ingest",
                    json!({"events": runs}).to_string().into(),
                )
            }
            Sink::Helicone(sink) => {
                for (_, bytes) in events {
                    let Ok(event) = serde_json::from_slice::<Value>(bytes) else {
                        continue;
                    };
                    if !is_request(&event) {
                        continue;
                    }
                    sink.post("/custom/v1/log", helicone_log(&event).to_string().into())?;
                }
                Ok(())
            }
        }
    }
}

/// A request event, not a gap record (`stored::Gap`) or a budget alert
/// (`stored::BudgetAlert`): Lunary and Helicone have no shape for those,
/// and get only the request events around them.
fn is_request(event: &Value) -> bool {
    event.get("gap").is_none() && event.get("budget_alert").is_none()
}

/// The event's JSON with its sequence number first: `{"seq":N,...}`.
pub fn with_seq(seq: u64, event: &[u8]) -> Vec<u8> {
    let rest = event.strip_prefix(b"{").unwrap_or(b"}");
    let mut out = Vec::with_capacity(event.len() + 24);
    out.extend_from_slice(format!("{{\"seq\":{seq}").as_bytes());
    if rest.trim_ascii_start() != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

pub struct FileSink {
    file: File,
    path: PathBuf,
}

impl FileSink {
    /// Opens `path` for appending. A line cut short by a crash is removed:
    /// its events were not acknowledged and come again.
    fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let length = file.metadata()?.len();
        if length > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(length - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                let mut contents = Vec::new();
                file.seek(SeekFrom::Start(0))?;
                file.read_to_end(&mut contents)?;
                let keep = memchr::memrchr(b'\n', &contents).map_or(0, |i| i + 1);
                file.set_len(keep as u64)?;
                file.sync_data()?;
            }
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, events: &[Logged]) -> std::io::Result<()> {
        let mut lines = Vec::with_capacity(events.iter().map(|e| e.1.len() + 24).sum());
        for (seq, event) in events {
            lines.extend_from_slice(&with_seq(*seq, event));
            lines.push(b'\n');
        }
        self.file.write_all(&lines)?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub struct HttpSink {
    agent: ureq::Agent,
    url: String,
    api_key: Option<String>,
}

impl HttpSink {
    fn post(&self, path: &str, body: Vec<u8>) -> Result<(), Refusal> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        match request.send(&body[..]) {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => Err(
                Refusal::Unauthorized(format!("{url} answered {}", response.status())),
            ),
            Ok(response) => Err(Refusal::Failed(format!(
                "{url} answered {}",
                response.status()
            ))),
            Err(error) => Err(Refusal::Failed(format!("{url}: {error}"))),
        }
    }
}

/// RFC 3339 of the request's start and end.
fn times(event: &Value) -> (u64, u64) {
    let end_ms = event["time_unix_ms"].as_u64().unwrap_or(0);
    let total_ms = event["latency"]["total_us"].as_u64().unwrap_or(0) / 1000;
    (end_ms.saturating_sub(total_ms), end_ms)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A request as Lunary's start and end (or error) events of one LLM run.
fn lunary_events(event: &Value) -> Vec<Value> {
    let (start, end) = times(event);
    let run_id = &event["request_id"];
    let request = &event["request_body"];
    let input = request.get("messages").unwrap_or(request);
    let output = event["response_body"]
        .pointer("/choices/0/message")
        .unwrap_or(&event["response_body"]);
    let metadata = json!({
        "node": event["node"],
        "key_id": event["key_id"],
        "project_id": event["project_id"],
        "endpoint": event["endpoint"],
        "status": event["status"],
        "cache": event["cache"],
        "cost_usd": event["cost_usd"],
        "latency": event["latency"],
    });
    let start_event = json!({
        "type": "llm",
        "event": "start",
        "runId": run_id,
        "timestamp": rfc3339(start),
        "name": event["model"],
        "input": input,
        "userId": event["user_id"],
        "metadata": metadata,
    });
    let mut end_event = json!({
        "type": "llm",
        "event": if event["error"].is_null() { "end" } else { "error" },
        "runId": run_id,
        "timestamp": rfc3339(end),
        "output": output,
        "tokensUsage": {
            "prompt": event["usage"]["prompt_tokens"],
            "completion": event["usage"]["completion_tokens"],
        },
    });
    if let Some(code) = event["error"].as_str() {
        end_event["error"] = json!({"message": code});
    }
    vec![start_event, end_event]
}

/// A request as Helicone's custom log.
fn helicone_log(event: &Value) -> Value {
    let (start, end) = times(event);
    let stamp = |ms: u64| json!({"seconds": ms / 1000, "milliseconds": ms % 1000});
    let request = match &event["request_body"] {
        Value::Null => json!({"model": event["model"]}),
        body => body.clone(),
    };
    let response = match &event["response_body"] {
        Value::Null => json!({"usage": event["usage"]}),
        body => body.clone(),
    };
    let meta: serde_json::Map<String, Value> = [
        ("Helicone-Request-Id", &event["request_id"]),
        ("Helicone-User-Id", &event["user_id"]),
        ("Helicone-Property-Key-Id", &event["key_id"]),
        ("Helicone-Property-Project-Id", &event["project_id"]),
        ("Helicone-Property-Node", &event["node"]),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_str().map(|v| (name.to_string(), json!(v))))
    .collect();
    json!({
        "providerRequest": {"url": event["endpoint"], "json": request, "meta": meta},
        "providerResponse": {"json": response, "status": event["status"], "headers": {}},
        "timing": {"startTime": stamp(start), "endTime": stamp(end)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lunary_and_helicone_are_told_the_node() {
        let event = json!({"request_id": "r", "node": "edge-7", "status": 200});
        assert_eq!(lunary_events(&event)[0]["metadata"]["node"], "edge-7");
        let meta = &helicone_log(&event)["providerRequest"]["meta"];
        assert_eq!(meta["Helicone-Property-Node"], "edge-7");
        // An event from before events named their node: no property.
        let old = json!({"request_id": "r", "status": 200});
        assert!(
            helicone_log(&old)["providerRequest"]["meta"]
                .get("Helicone-Property-Node")
                .is_none()
        );
    }

    #[test]
    fn seq_goes_first() {
        assert_eq!(with_seq(7, br#"{"a":1}"#), br#"{"seq":7,"a":1}"#);
        assert_eq!(with_seq(8, b"{}"), br#"{"seq":8}"#);
    }
}
