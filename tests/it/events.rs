//! Request events: what they carry (and never carry), the event log across
//! `kill -9` of the server and of the dispatcher, retries against a failing
//! HTTP sink, several dispatchers, and compaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::cli::read_request;
use crate::common::*;
use serde_json::{Value, json};

const INPUT_COST: f64 = 0.001;
const OUTPUT_COST: f64 = 0.002;
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// `dispatcher --once` into a file sink; asserts it succeeded.
fn dispatch_once(db: &Path, sink: &Path, extra: &[&str]) {
    let exited = dispatcher(db, sink, &["--once"], extra);
    assert_eq!(
        exited.status.code(),
        Some(0),
        "dispatcher failed: {}",
        exited.stderr
    );
}

fn dispatcher(db: &Path, sink: &Path, mode: &[&str], extra: &[&str]) -> Exited {
    let db = db.to_str().unwrap();
    let sink = sink.to_str().unwrap();
    let mut args = vec!["dispatcher", "--db", db, "--service", "file"];
    args.extend(["--endpoint", sink]);
    args.extend(mode);
    args.extend(extra);
    run_command(Path::new(db), &args, &[], DISPATCH_TIMEOUT)
}

/// The events of a JSONL sink, in file order.
fn sink_events(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a sink line is one JSON object"))
        .collect()
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    found
}

/// The `seq` of each event, in order.
fn seq_numbers(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn by_request_id<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["request_id"] == id)
        .unwrap_or_else(|| panic!("no event for {id} in {events:#?}"))
}

#[test]
fn events_carry_what_each_request_did_and_no_secret() {
    let mock = Mock::start();
    let deployment = Mock::start();
    let db = TempDir::new("events-content");
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.path().to_str().unwrap())
        .env("EVENT_LOG_BODIES", "true")
        .start();

    // Streamed pass-through (no model registered yet), bodies on.
    let streamed = proxy.call(chat(true).header("X-Request-ID", "ev-stream"));
    assert_eq!(streamed.status, 200);

    // A routed request with usage and cost.
    let body = json!({
        "model_name": "fast",
        "litellm_params": {
            "model": "openai/fast-upstream",
            "api_base": format!("{}/v1", deployment.url()),
            "api_key": "sk-deployment-secret-42",
        },
        "model_info": {"input_cost_per_token": INPUT_COST, "output_cost_per_token": OUTPUT_COST},
    });
    assert_eq!(proxy.manage("POST", "/model/new", Some(body)).status, 200);
    let generated = proxy.manage("POST", "/key/generate", Some(json!({"user_id": "ada"})));
    let routed_key = generated.json()["key"].as_str().unwrap().to_string();
    let routed_body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    let routed = proxy.call(
        Req::post("/v1/chat/completions", routed_body.to_string())
            .auth(&routed_key)
            .header("X-Request-ID", "ev-routed"),
    );
    assert_eq!(routed.status, 200, "{}", routed.text());

    // A refused key.
    let refused = proxy.call(
        Req::post("/v1/chat/completions", chat_body(false, "hi"))
            .auth("sk-not-a-key")
            .header("X-Request-ID", "ev-401"),
    );
    assert_eq!(refused.status, 401);

    let data = db.path().to_path_buf();
    proxy.stop();
    let sink_dir = TempDir::new("sink");
    let sink = sink_dir.path().join("events.jsonl");
    dispatch_once(&data, &sink, &[]);
    let events = sink_events(&sink);
    assert_eq!(events.len(), 3, "{events:#?}");
    let seqs = seq_numbers(&events);
    assert_eq!(seqs, [1, 2, 3]);

    let stream = by_request_id(&events, "ev-stream");
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["endpoint"], "/v1/chat/completions");
    assert_eq!(stream["method"], "POST");
    assert_eq!(stream["project_id"], proxy_project(&events));
    assert!(stream["key_id"].is_string());
    assert!(stream["error"].is_null());
    assert_eq!(stream["request_body"]["stream"], true);
    assert_eq!(stream["request_body_truncated"], false);
    let merged = &stream["response_body"];
    assert_eq!(merged["object"], "chat.completion");
    assert_eq!(merged["choices"][0]["message"]["content"], mock_text(16));
    assert_eq!(merged["choices"][0]["finish_reason"], "stop");
    let latency = &stream["latency"];
    for field in [
        "total_us",
        "proxy_us",
        "upstream_us",
        "upstream_head_us",
        "first_token_us",
    ] {
        assert!(latency[field].is_u64(), "latency.{field}: {latency}");
    }
    assert!(latency["upstream_us"].as_u64() <= latency["total_us"].as_u64());
    assert_eq!(stream["response_complete"], true);
    assert!(stream["time"].as_str().unwrap().ends_with('Z'));

    let routed = by_request_id(&events, "ev-routed");
    assert_eq!(routed["model"], "fast");
    assert_eq!(routed["user_id"], "ada");
    assert_eq!(routed["status"], 200);
    let prompt = routed["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = routed["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 0 && completion > 0);
    assert_eq!(routed["usage"]["total_tokens"], prompt + completion);
    let cost = prompt as f64 * INPUT_COST + completion as f64 * OUTPUT_COST;
    let logged = routed["cost_usd"].as_f64().unwrap();
    assert!(
        (logged - cost).abs() < 1e-9,
        "cost {logged}, expected {cost}"
    );
    assert_eq!(routed["request_body"], routed_body);
    assert!(routed["response_body"]["choices"][0]["message"]["content"].is_string());

    let refused = by_request_id(&events, "ev-401");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["error"], "invalid_api_key");
    assert!(refused["key_id"].is_null());

    // No secret in the sink nor in the event log.
    let mut files = files_under(&data.join("events"));
    files.push((sink.clone(), std::fs::read(&sink).unwrap()));
    for secret in [
        CLIENT_KEY,
        routed_key.as_str(),
        UPSTREAM_KEY,
        "sk-deployment-secret-42",
        "sk-not-a-key",
    ] {
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, secret),
                "{secret} found in {}",
                path.display()
            );
        }
    }
}

/// The project id the pass-through events name (the seeded project).
fn proxy_project(events: &[Value]) -> Value {
    by_request_id(events, "ev-stream")["project_id"].clone()
}

#[test]
fn events_can_be_turned_off() {
    let mock = Mock::start();
    let db = TempDir::new("events-off");
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.path().to_str().unwrap())
        .env("EVENT_LOG", "false")
        .start();
    assert_eq!(proxy.call(chat(false)).status, 200);
    let data = db.path().to_path_buf();
    proxy.stop();
    assert!(!data.join("events").exists());
    let sink = data.join("sink.jsonl");
    let exited = dispatcher(&data, &sink, &["--once"], &[]);
    assert_eq!(exited.status.code(), Some(1));
    assert!(exited.stderr.contains("no event log"), "{}", exited.stderr);
}

/// Clients sending requests on keep-alive connections until stopped or
/// the server goes away; the IDs of the requests answered are kept.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    answered: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
}

impl Load {
    fn start(addr: SocketAddr, phase: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|client| {
                let (stop, answered, count) = (stop.clone(), answered.clone(), count.clone());
                let prefix = format!("{phase}-{client}");
                std::thread::spawn(move || client_loop(addr, &prefix, &stop, &answered, &count))
            })
            .collect();
        Load {
            stop,
            threads,
            answered,
            count,
        }
    }

    fn wait_for(&self, answered: usize) {
        assert!(
            wait_until(Duration::from_secs(30), || self
                .count
                .load(Ordering::Relaxed)
                >= answered),
            "the load did not reach {answered} requests"
        );
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.answered)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn client_loop(
    addr: SocketAddr,
    prefix: &str,
    stop: &AtomicBool,
    answered: &Mutex<Vec<String>>,
    count: &AtomicUsize,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = Conn::try_open(addr) else {
            return;
        };
        conn.set_read_timeout(Duration::from_secs(10));
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let id = format!("{prefix}-{n}");
            let request = chat(false).header("X-Request-ID", &id);
            if conn.try_send(&request.bytes()).is_err() {
                break;
            }
            match conn.read_response() {
                Ok(response) if response.status == 200 => {
                    answered.lock().unwrap().push(id);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                _ => break,
            }
        }
    }
}

fn proxy_on(db: &Path, mock: &Mock, seeded: bool) -> Proxy {
    let builder = Proxy::for_mock(mock).arg("--db").arg(db.to_str().unwrap());
    if seeded {
        builder.start()
    } else {
        builder.unseeded().start()
    }
}

/// A server on `db` (seeded or not) that serves `n` chats and stops: `n`
/// more events in its log.
fn serve_chats(db: &Path, mock: &Mock, seeded: bool, n: usize) {
    let proxy = proxy_on(db, mock, seeded);
    for _ in 0..n {
        assert_eq!(proxy.call(chat(false)).status, 200);
    }
    proxy.stop();
}

fn start_dispatcher(db: &Path, sink: &Path) -> Proc {
    let (db, sink) = (db.to_str().unwrap(), sink.to_str().unwrap());
    let args = [
        "dispatcher",
        "--db",
        db,
        "--service",
        "file",
        "--endpoint",
        sink,
        "--batch-size",
        "7",
        "--buffer",
        "20",
    ];
    let proc = spawn_command(Path::new(db), &args, &[]);
    assert!(
        proc.wait_for_log("dispatching events", Duration::from_secs(20)),
        "{}",
        proc.log()
    );
    proc
}

/// Checks the sink holds every event of the log exactly once after dedup
/// by request ID, numbered from 1 without a gap; returns the request IDs.
fn assert_complete(events: &[Value]) -> BTreeSet<String> {
    let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
    for event in events {
        let seq = event["seq"].as_u64().unwrap();
        let id = event["request_id"].as_str().unwrap().to_string();
        if let Some(previous) = by_seq.insert(seq, id.clone()) {
            assert_eq!(previous, id, "seq {seq} delivered as two different events");
        }
    }
    let last = *by_seq.keys().last().expect("some events");
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        expected,
        "seq numbers have a gap"
    );
    let mut seqs_of: HashMap<&str, u64> = HashMap::new();
    for (seq, id) in &by_seq {
        assert!(
            seqs_of.insert(id, *seq).is_none(),
            "request {id} appears under two seq numbers"
        );
    }
    by_seq.into_values().collect()
}

#[test]
fn the_event_log_survives_kill_9_of_the_server_and_of_the_dispatcher() {
    let mock = Mock::start();
    let db = TempDir::new("events-db");
    let sink_dir = TempDir::new("events-sink");
    let sink = sink_dir.path().join("events.jsonl");
    let proxy = proxy_on(db.path(), &mock, true);

    let mut dispatcher = start_dispatcher(db.path(), &sink);
    let load = Load::start(proxy.addr, "before", 2);
    load.wait_for(100);
    assert!(wait_until(Duration::from_secs(20), || !sink_events(&sink).is_empty()));
    dispatcher.signal("KILL");
    dispatcher.wait_exit(Duration::from_secs(10));
    load.wait_for(200);
    let dispatcher = start_dispatcher(db.path(), &sink);
    load.wait_for(300);

    // The server dies under load; the load stops with it.
    let mut proxy = proxy;
    proxy.proc.signal("KILL");
    proxy.proc.wait_exit(Duration::from_secs(10));
    let before = load.stop();
    assert!(before.len() >= 300);

    let proxy = proxy_on(db.path(), &mock, false);
    let load = Load::start(proxy.addr, "after", 2);
    load.wait_for(200);
    let after = load.stop();
    proxy.stop();
    drop(dispatcher);
    dispatch_once(db.path(), &sink, &[]);

    let events = sink_events(&sink);
    let ids = assert_complete(&events);
    for id in &after {
        assert!(
            ids.contains(id),
            "request {id}, answered after the restart, has no event"
        );
    }
    // Events handed to the writer before the crash are kept; at most the
    // last flush interval's worth may be lost, never numbered around.
    let kept_before = before.iter().filter(|id| ids.contains(*id)).count();
    assert!(kept_before > 0, "no event from before the crash");
}

/// A tiny HTTP sink: answers 500 to the first `failures` posts, then 200,
/// keeping the bodies it accepted.
struct TestSink {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Value>>>,
    posts: Arc<AtomicUsize>,
    /// Request line, Authorization header and body of every accepted post.
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
}

impl TestSink {
    fn start(failures: usize) -> TestSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (kept, counted, seen) = (accepted.clone(), posts.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (kept, counted, seen) = (kept.clone(), counted.clone(), seen.clone());
                std::thread::spawn(move || serve_sink(stream, failures, &kept, &counted, &seen));
            }
        });
        TestSink {
            addr,
            accepted,
            posts,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    fn events(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }
}

fn serve_sink(
    stream: std::net::TcpStream,
    failures: usize,
    kept: &Mutex<Vec<Value>>,
    posts: &AtomicUsize,
    seen: &Mutex<Vec<(String, String, Value)>>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0;
        let mut line = String::new();
        let (mut request_line, mut authorization) = (String::new(), String::new());
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if request_line.is_empty() {
                request_line = line.trim().to_string();
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if lower.starts_with("authorization:") {
                authorization = line["authorization:".len()..].trim().to_string();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = posts.fetch_add(1, Ordering::SeqCst);
        let status = if n < failures {
            "500 Internal Server Error"
        } else {
            let json: Value = serde_json::from_slice(&body).unwrap();
            if let Value::Array(batch) = &json {
                kept.lock().unwrap().extend(batch.iter().cloned());
            }
            seen.lock()
                .unwrap()
                .push((request_line, authorization, json));
            "200 OK"
        };
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn http_dispatch(db: &Path, url: &str, extra: &[&str]) -> Exited {
    let db = db.to_str().unwrap();
    let mut args = vec!["dispatcher", "--db", db, "--service", "http"];
    args.extend(["--endpoint", url, "--once", "--batch-size", "4"]);
    args.extend(extra);
    run_command(Path::new(db), &args, &[], DISPATCH_TIMEOUT)
}

#[test]
fn the_dispatcher_retries_a_failing_http_sink_and_resumes_from_its_cursor() {
    let mock = Mock::start();
    let db = TempDir::new("events-http");
    serve_chats(db.path(), &mock, true, 10);

    let sink = TestSink::start(3);
    let exited = http_dispatch(db.path(), &sink.url(), &["--retries", "10"]);
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("delivery failed"),
        "{}",
        exited.stderr
    );
    assert!(sink.posts.load(Ordering::SeqCst) >= 3 + 3);
    let seqs = seq_numbers(&sink.events());
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());

    // More events later: the next run starts after its cursor.
    serve_chats(db.path(), &mock, false, 3);
    let exited = http_dispatch(db.path(), &sink.url(), &[]);
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);
    let seqs = seq_numbers(&sink.events());
    assert_eq!(seqs, (1..=13).collect::<Vec<_>>());

    // A sink that never answers: exit status 2 once the retries are spent.
    serve_chats(db.path(), &mock, false, 1);
    let url = format!("http://{}/ingest", closed_port());
    let exited = http_dispatch(db.path(), &url, &["--retries", "1"]);
    assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("the sink is unreachable"),
        "{}",
        exited.stderr
    );
}

#[test]
fn dispatchers_with_different_names_each_get_every_event() {
    let mock = Mock::start();
    let db = TempDir::new("events-two");
    serve_chats(db.path(), &mock, true, 6);
    let sinks = TempDir::new("events-two-sinks");
    let (a, b) = (sinks.path().join("a.jsonl"), sinks.path().join("b.jsonl"));
    dispatch_once(db.path(), &a, &["--name", "a"]);
    dispatch_once(db.path(), &b, &["--name", "b"]);
    // A second run of "a" finds nothing new.
    dispatch_once(db.path(), &a, &["--name", "a"]);
    for sink in [&a, &b] {
        let seqs = seq_numbers(&sink_events(sink));
        assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "{}", sink.display());
    }
}

#[test]
fn compaction_keeps_the_newest_events() {
    let mock = Mock::start();
    let db = TempDir::new("events-compact");
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.path().to_str().unwrap())
        .env("EVENT_LOG_MAX_EVENTS", "5")
        // One worker: the log is in the order the requests were answered.
        .workers(1)
        .start();
    for n in 1..=12 {
        let request = chat(false).header("X-Request-ID", format!("compact-{n}"));
        assert_eq!(proxy.call(request).status, 200);
    }
    proxy.stop();
    let sink = db.path().join("sink.jsonl");
    dispatch_once(db.path(), &sink, &[]);
    let events = sink_events(&sink);
    let seqs = seq_numbers(&events);
    assert_eq!(seqs, (8..=12).collect::<Vec<_>>());
    assert_eq!(events[4]["request_id"], "compact-12");
}

#[test]
fn the_server_writes_the_file_event_log_itself() {
    let mock = Mock::start();
    let dir = TempDir::new("file-event-log");
    let sink = dir.path().join("events.jsonl");
    let proxy = Proxy::for_mock(&mock)
        .env("FILE_EVENT_LOG", sink.to_str().unwrap())
        .start();
    for n in 1..=3 {
        let request = chat(false).header("X-Request-ID", format!("inproc-{n}"));
        assert_eq!(proxy.call(request).status, 200);
    }
    // Delivered while the server runs...
    assert!(wait_until(Duration::from_secs(20), || sink_events(&sink)
        .len()
        == 3));
    assert_eq!(proxy.call(chat(false)).status, 200);
    // ...and what came last is delivered before the server exits.
    proxy.stop();
    let seqs = seq_numbers(&sink_events(&sink));
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[test]
fn lunary_and_helicone_get_their_ingestion_shapes() {
    let mock = Mock::start();
    let db = TempDir::new("events-services");
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.path().to_str().unwrap())
        .env("EVENT_LOG_BODIES", "true")
        .start();
    let request = chat(false).header("X-Request-ID", "svc-1");
    assert_eq!(proxy.call(request).status, 200);
    proxy.stop();
    let dbs = db.path().to_str().unwrap();

    let lunary = TestSink::start(0);
    let base = format!("http://{}", lunary.addr);
    let args = [
        "dispatcher",
        "--db",
        dbs,
        "--service",
        "lunary",
        "--endpoint",
        &base,
        "--once",
    ];
    let exited = run_command(
        db.path(),
        &args,
        &[("LUNARY_PUBLIC_KEY", "lk-1")],
        DISPATCH_TIMEOUT,
    );
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);
    let requests = lunary.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (line, authorization, body) = &requests[0];
    assert!(line.starts_with("POST /v1/runs/ingest "), "{line}");
    assert_eq!(authorization, "Bearer lk-1");
    let runs = body["events"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["type"], "llm");
    assert_eq!(runs[0]["event"], "start");
    assert_eq!(runs[0]["runId"], "svc-1");
    assert_eq!(runs[0]["input"][0]["role"], "user");
    assert_eq!(runs[1]["event"], "end");
    assert_eq!(runs[1]["runId"], "svc-1");
    assert_eq!(runs[1]["output"]["role"], "assistant");

    let helicone = TestSink::start(0);
    let base = format!("http://{}", helicone.addr);
    let args = [
        "dispatcher",
        "--db",
        dbs,
        "--service",
        "helicone",
        "--endpoint",
        &base,
        "--once",
        "--api-key",
        "hk-2",
    ];
    let exited = run_command(db.path(), &args, &[], DISPATCH_TIMEOUT);
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);
    let requests = helicone.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (line, authorization, body) = &requests[0];
    assert!(line.starts_with("POST /custom/v1/log "), "{line}");
    assert_eq!(authorization, "Bearer hk-2");
    assert_eq!(body["providerRequest"]["url"], "/v1/chat/completions");
    assert_eq!(
        body["providerRequest"]["json"]["messages"][0]["role"],
        "user"
    );
    assert_eq!(
        body["providerRequest"]["meta"]["Helicone-Request-Id"],
        "svc-1"
    );
    assert_eq!(body["providerResponse"]["status"], 200);
    assert!(body["providerResponse"]["json"]["choices"].is_array());
    assert!(body["timing"]["startTime"]["seconds"].is_u64());
    assert!(body["timing"]["endTime"]["milliseconds"].is_u64());

    // Without a key, these services are refused before anything is sent.
    let args = ["dispatcher", "--db", dbs, "--service", "lunary", "--once"];
    let exited = run_command(db.path(), &args, &[], DISPATCH_TIMEOUT);
    assert_eq!(exited.status.code(), Some(1));
    assert!(
        exited.stderr.contains("LUNARY_PUBLIC_KEY"),
        "{}",
        exited.stderr
    );
}

#[test]
fn a_cursor_taken_over_by_another_endpoint_is_warned_about() {
    let mock = Mock::start();
    let db = TempDir::new("events-endpoint");
    serve_chats(db.path(), &mock, true, 4);
    let sinks = TempDir::new("events-endpoint-sinks");
    let (a, b) = (sinks.path().join("a.jsonl"), sinks.path().join("b.jsonl"));
    let warning = "was last used with another endpoint";
    let first = dispatcher(db.path(), &a, &["--once"], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", first.stderr);
    assert!(!first.stderr.contains(warning), "{}", first.stderr);
    // The same cursor ("file"), another file: it gets nothing of the past.
    let moved = dispatcher(db.path(), &b, &["--once"], &[]);
    assert_eq!(moved.status.code(), Some(0), "{}", moved.stderr);
    assert!(
        moved.stderr.contains(warning) && moved.stderr.contains("after seq 4"),
        "{}",
        moved.stderr
    );
    assert!(sink_events(&b).is_empty());
    // Said once: the cursor now belongs to the new endpoint.
    let again = dispatcher(db.path(), &b, &["--once"], &[]);
    assert!(!again.stderr.contains(warning), "{}", again.stderr);
    // With a name of its own, a new endpoint gets everything.
    dispatch_once(db.path(), &b, &["--name", "b"]);
    assert_eq!(sink_events(&b).len(), 4);
}

/// An HTTP sink that answers every request with `status`; returns its URL.
fn refusing_sink(status: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            // The request, read whole (or until the client goes away).
            let _ = read_request(&mut stream);
            let answer =
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url
}

#[test]
fn a_sink_refusing_the_api_key_is_exit_status_3() {
    let mock = Mock::start();
    let db = TempDir::new("events-401");
    serve_chats(db.path(), &mock, true, 1);
    let url = refusing_sink("401 Unauthorized");
    for mode in [
        &["--api-key", "wrong"][..],
        &["--api-key", "wrong", "--retries", "100"],
    ] {
        let exited = http_dispatch(db.path(), &url, mode);
        assert_eq!(exited.status.code(), Some(3), "{}", exited.stderr);
        assert!(
            exited.stderr.contains("the sink refused the API key"),
            "{}",
            exited.stderr
        );
        assert!(!exited.stderr.contains("wrong"), "{}", exited.stderr);
    }
    // Without --once too: a refused key is not retried for ever.
    let db_path = db.path().to_str().unwrap();
    let args = [
        "dispatcher",
        "--db",
        db_path,
        "--service",
        "http",
        "--endpoint",
        &url,
    ];
    let exited = run_command(db.path(), &args, &[], DISPATCH_TIMEOUT);
    assert_eq!(exited.status.code(), Some(3), "{}", exited.stderr);
}

#[test]
fn a_crossed_soft_budget_is_one_budget_alert_and_a_metric() {
    let mock = Mock::start();
    let db = TempDir::new("events-soft-budget");
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.path().to_str().unwrap())
        .workers(2)
        .start();
    let body = json!({
        "model_name": "fast",
        "litellm_params": {
            "model": "openai/fast-upstream",
            "api_base": format!("{}/v1", mock.url()),
            "api_key": "sk-deployment-secret-42",
        },
        "model_info": {"input_cost_per_token": INPUT_COST, "output_cost_per_token": OUTPUT_COST},
    });
    assert_eq!(proxy.manage("POST", "/model/new", Some(body)).status, 200);
    let chat_as = |key: &str| {
        let body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
        let response = proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(key));
        assert_eq!(response.status, 200, "{}", response.text());
        let cost: f64 = response
            .header("x-litellm-response-cost")
            .unwrap()
            .parse()
            .unwrap();
        assert!(cost > 0.0);
        cost
    };
    let generate = |fields: Value| {
        let response = proxy.manage("POST", "/key/generate", Some(fields));
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    };
    // What one request costs, paid by a key without a soft budget.
    let probe = generate(json!({}));
    let cost = chat_as(probe["key"].as_str().unwrap());
    // A soft budget of one and a half requests: the second one crosses it.
    let soft_budget = cost * 1.5;
    let watched = generate(json!({"soft_budget": soft_budget}));
    assert_eq!(watched["soft_budget"], soft_budget, "{watched}");
    let key = watched["key"].as_str().unwrap();
    let key_id = watched["id"].as_str().unwrap();
    for _ in 0..4 {
        chat_as(key);
    }
    // Counted once the workers' usage reports cross it (about a second).
    assert!(
        wait_until(Duration::from_secs(20), || soft_budget_alerts(
            &proxy, "key"
        ) == 1),
        "no alert counted: {}",
        proxy.call(Req::get("/metrics")).text()
    );
    // Further spend does not cross it again.
    chat_as(key);
    chat_as(probe["key"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(soft_budget_alerts(&proxy, "key"), 1);
    assert_eq!(soft_budget_alerts(&proxy, "user"), 0);
    assert_eq!(soft_budget_alerts(&proxy, "team"), 0);

    let data = db.path().to_path_buf();
    proxy.stop();
    let sink_dir = TempDir::new("soft-budget-sink");
    let sink = sink_dir.path().join("events.jsonl");
    dispatch_once(&data, &sink, &[]);
    let events = sink_events(&sink);
    let seqs = seq_numbers(&events);
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let (alerts, requests): (Vec<&Value>, Vec<&Value>) = events
        .iter()
        .partition(|event| event.get("budget_alert").is_some());
    assert_eq!(alerts.len(), 1, "{events:#?}");
    // Every request is still there, the alert among them.
    let chats = requests
        .iter()
        .filter(|e| e["endpoint"] == "/v1/chat/completions")
        .count();
    assert_eq!(chats, 7, "{events:#?}");
    let alert = &alerts[0]["budget_alert"];
    let fields: BTreeSet<&str> = alert
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["type", "kind", "id", "spend", "soft_budget", "time"]),
        "{alert}"
    );
    assert_eq!(alert["type"], "soft_budget_crossed");
    assert_eq!(alert["kind"], "key");
    assert_eq!(alert["id"], key_id);
    let shown = alert["soft_budget"].as_f64().unwrap();
    assert!((shown - soft_budget).abs() < 1e-9, "{alert}");
    let spend = alert["spend"].as_f64().unwrap();
    assert!(
        spend >= soft_budget && spend <= 4.0 * cost + 1e-9,
        "{alert}, one request costs {cost}"
    );
    let time = alert["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    assert!(alerts[0].get("request_id").is_none());
}
