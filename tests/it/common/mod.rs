//! Test harness shared by the integration tests.
//!
//! - [`Mock`] and [`Proxy`]: the real `llm-proxy` binary started as
//!   `mock-upstream` / `server` on `127.0.0.1:0`, each in its own temporary
//!   working directory, killed on drop. Their stderr is drained by a thread
//!   for their whole life and kept for assertions.
//! - [`Conn`]: a raw HTTP/1.1 client on `std::net::TcpStream` that sends
//!   arbitrary bytes and parses responses (Content-Length, chunked, or until
//!   close), keeping the connection for reuse.
//! - [`TcpRelay`]: a counting TCP forwarder, to see how many upstream
//!   connections the proxy opens (and to cut them).
//! - [`ScriptedUpstream`]: a tiny upstream that answers with fixed bytes (or
//!   bytes chosen per request), for response shapes the mock cannot produce.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod cli;
pub mod counting;
pub mod litellm;
pub mod postgres;
pub mod pty;
pub mod sdk;
pub mod store;

#[allow(unused_imports, reason = "for the tests that use the SDKs")]
pub use sdk::{run_sdk_script, sdk_python};

/// The key clients present to the proxy in most tests.
pub const CLIENT_KEY: &str = "sk-client-7f3a9c41d2";
/// The key the proxy sends upstream in most tests.
pub const UPSTREAM_KEY: &str = "sk-upstream-91c2e8b05f";
/// The management API token of the test proxies.
pub const MANAGEMENT_TOKEN: &str = "mt-test-5b1e0c93a7d4";

/// How long a process may take to print its "listening on" line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default read timeout of [`Conn`]: generous, tests must not hang forever.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Words the mock streams, in order (see `src/mock/openai.rs`).
pub const MOCK_WORDS: [&str; 16] = [
    "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "mock",
    "model", "streams", "its", "answer",
];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_llm-proxy")
}

// ---------------------------------------------------------------------------
// Temporary directories (std only)
// ---------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "llm-proxy-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Variables passed through from the test environment to the children.
const PASS_THROUGH_ENV: [&str; 2] = ["MONOIO_FORCE_LEGACY_DRIVER", "RUST_BACKTRACE"];

fn base_command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).env_clear();
    for key in PASS_THROUGH_ENV {
        if let Ok(value) = std::env::var(key) {
            cmd.env(key, value);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A running child process whose stderr is captured; killed on drop.
pub struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` and drains its stderr into a log for its whole life.
    /// Returns the process and a receiver that gets every stderr line.
    fn spawn(mut cmd: Command) -> (Self, mpsc::Receiver<String>) {
        let mut child = cmd.spawn().expect("spawn llm-proxy");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).into_owned();
                        sink.lock().unwrap().push_str(&text);
                        // The receiver may be gone; keep draining regardless.
                        let _ = tx.send(text);
                    }
                }
            }
        });
        (
            Self {
                child,
                log,
                exited: None,
            },
            rx,
        )
    }

    /// Waits for a stderr line containing "listening on http" and returns
    /// the address printed in it.
    fn wait_listening(
        &mut self,
        lines: mpsc::Receiver<String>,
        what: &str,
    ) -> (String, SocketAddr) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = parse_listening(&line) {
                        return found;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{what} did not start within {STARTUP_TIMEOUT:?}; log:\n{}",
                        self.log()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    panic!(
                        "{what} exited during startup ({status:?}); log:\n{}",
                        self.log()
                    )
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal by name ("TERM", "INT", ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return self.exited;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let start = line.find("listening on ")? + "listening on ".len();
    let url = line[start..].split_whitespace().next()?;
    let (scheme, rest) = url.split_once("://")?;
    let addr = rest.trim_end_matches('/').parse().ok()?;
    Some((scheme.to_string(), addr))
}

/// Waits up to `timeout` for `child` to exit; after that kills it and
/// panics with `what` (worked out then) and the timeout.
#[track_caller]
pub fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
    what: impl FnOnce() -> String,
) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not exit within {timeout:?}", what());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Result of a process that was expected to exit on its own.
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Exited {
    /// Asserts exit status `code` and a stderr of one line that says `says`.
    #[track_caller]
    pub fn assert_one_line(&self, code: i32, says: &str) {
        assert_eq!(self.status.code(), Some(code), "{}", self.stderr);
        assert_eq!(
            self.stderr.trim().lines().count(),
            1,
            "one line: {:?}",
            self.stderr
        );
        assert!(self.stderr.contains(says), "{}", self.stderr);
    }
}

fn run_to_exit(cmd: Command, timeout: Duration) -> Exited {
    let (mut proc, _lines) = Proc::spawn(cmd);
    let Some(status) = proc.wait_exit(timeout) else {
        panic!(
            "process did not exit within {timeout:?}; log:\n{}",
            proc.log()
        );
    };
    // The stderr thread may still be copying the last bytes: wait for EOF.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&proc.log) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Exited {
        status,
        stderr: proc.log(),
    }
}

/// `llm-proxy <args>` started in `dir` with `env`, for commands that run
/// beside a server (the dispatcher); killed on drop.
pub fn spawn_command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = base_command(dir);
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    Proc::spawn(cmd).0
}

/// `llm-proxy <args>` in `dir` with `env`, expected to exit within `timeout`.
pub fn run_command(dir: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Exited {
    let mut cmd = base_command(dir);
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    run_to_exit(cmd, timeout)
}

// ---------------------------------------------------------------------------
// The mock upstream
// ---------------------------------------------------------------------------

pub struct MockBuilder {
    args: Vec<String>,
}

impl MockBuilder {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn start(self) -> Mock {
        let dir = TempDir::new("mock");
        let mut cmd = base_command(dir.path());
        cmd.args(["mock-upstream", "--addr", "127.0.0.1:0"])
            .args(&self.args);
        let (mut proc, lines) = Proc::spawn(cmd);
        let (scheme, addr) = proc.wait_listening(lines, "mock upstream");
        Mock {
            proc,
            addr,
            scheme,
            _dir: dir,
        }
    }
}

/// `llm-proxy mock-upstream` on an ephemeral port.
pub struct Mock {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub scheme: String,
    _dir: TempDir,
}

impl Mock {
    pub fn builder() -> MockBuilder {
        MockBuilder { args: Vec::new() }
    }

    pub fn start() -> Mock {
        Self::builder().start()
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    fn get_json(&self, path: &str) -> Value {
        assert_eq!(
            self.scheme, "http",
            "mock introspection needs a plain-HTTP mock"
        );
        let mut conn = Conn::open(self.addr);
        let response = conn.roundtrip(&Req::get(path).header("Connection", "close").bytes());
        assert_eq!(
            response.status,
            200,
            "GET {path} on the mock: {}",
            response.text()
        );
        response.json()
    }

    /// `GET /mock/stats`.
    pub fn stats(&self) -> Value {
        self.get_json("/mock/stats")
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no stat {name}"))
    }

    /// `GET /mock/last-request`: `{method, target, headers: [[name, value], ...]}`.
    pub fn last_request(&self) -> Value {
        self.get_json("/mock/last-request")
    }

    /// Headers of the last `/v1` or `/openai` request the mock received.
    pub fn last_request_headers(&self) -> Vec<(String, String)> {
        headers_of(&self.last_request())
    }
}

pub fn headers_of(last_request: &Value) -> Vec<(String, String)> {
    last_request["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in {last_request}"))
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Values of every header named `name` (case-insensitive).
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

pub struct ProxyBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
    api_config: Option<String>,
    workers: usize,
    /// The project seeded through the management API after start-up:
    /// its provider key and the client keys created for it.
    seed: Option<(String, Vec<String>)>,
}

impl ProxyBuilder {
    /// Sets (or, with an empty value, clears) an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// The provider key of the seeded project.
    pub fn upstream_key(mut self, key: &str) -> Self {
        if let Some(seed) = &mut self.seed {
            seed.0 = key.to_string();
        }
        self
    }

    /// The client keys created for the seeded project.
    pub fn client_keys(mut self, keys: &[&str]) -> Self {
        if let Some(seed) = &mut self.seed {
            seed.1 = keys.iter().map(|k| k.to_string()).collect();
        }
        self
    }

    /// Start with an empty store: no project, no key.
    pub fn unseeded(mut self) -> Self {
        self.seed = None;
        self
    }

    /// `OPENAI_API_URL`.
    pub fn upstream(self, url: impl Into<String>) -> Self {
        self.env("OPENAI_API_URL", url)
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Writes `yaml` to `api.yaml` in the working directory and passes `--api-config`.
    pub fn api_config(mut self, yaml: impl Into<String>) -> Self {
        self.api_config = Some(yaml.into());
        self
    }

    /// Writes a file into the proxy's working directory before it starts.
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_string(), contents.into()));
        self
    }

    fn command(&self, dir: &TempDir) -> Command {
        for (name, contents) in &self.files {
            dir.write(name, contents);
        }
        let mut cmd = base_command(dir.path());
        cmd.args(["server", "--addr", "127.0.0.1:0", "--workers"])
            .arg(self.workers.to_string());
        if let Some(yaml) = &self.api_config {
            let path = dir.write("api.yaml", yaml);
            cmd.arg("--api-config").arg(path);
        }
        cmd.args(&self.args);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    pub fn start(self) -> Proxy {
        let dir = TempDir::new("proxy");
        let cmd = self.command(&dir);
        let (mut proc, lines) = Proc::spawn(cmd);
        let (_, addr) = proc.wait_listening(lines, "proxy");
        let mut proxy = Proxy {
            proc,
            addr,
            dir,
            project_id: String::new(),
        };
        if let Some((upstream_key, client_keys)) = &self.seed {
            proxy.project_id = proxy.create_project("test", upstream_key);
            for key in client_keys {
                proxy.create_token(serde_json::json!({"token": key}));
            }
        }
        proxy
    }

    /// Runs the server expecting it to exit by itself (startup errors).
    pub fn run_to_exit(self) -> Exited {
        let dir = TempDir::new("proxy-exit");
        let cmd = self.command(&dir);
        run_to_exit(cmd, Duration::from_secs(20))
    }
}

/// `llm-proxy server` on an ephemeral port.
pub struct Proxy {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: TempDir,
    /// The seeded project (empty when started `unseeded`).
    pub project_id: String,
}

impl Proxy {
    /// A builder with two workers, `MANAGEMENT_TOKEN`, and a project
    /// (provider key `UPSTREAM_KEY`) with the client key `CLIENT_KEY`,
    /// created through the management API once the server is up.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            env: vec![("MANAGEMENT_TOKEN".into(), MANAGEMENT_TOKEN.into())],
            args: Vec::new(),
            files: Vec::new(),
            api_config: None,
            workers: 2,
            seed: Some((UPSTREAM_KEY.into(), vec![CLIENT_KEY.into()])),
        }
    }

    /// A proxy in front of `mock` that swaps in `UPSTREAM_KEY`.
    pub fn for_mock(mock: &Mock) -> ProxyBuilder {
        Self::builder().upstream(mock.url())
    }

    /// A management API call with the management token.
    pub fn manage(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let mut request = Req::new(method, path).auth(MANAGEMENT_TOKEN);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        self.call(request)
    }

    /// Creates a project; returns its id.
    pub fn create_project(&self, name: &str, upstream_key: &str) -> String {
        let body = serde_json::json!({"name": name, "openai_api_key": upstream_key});
        let response = self.manage("POST", "/manage/projects", Some(body));
        assert_eq!(response.status, 201, "create project: {}", response.text());
        response.json()["id"].as_str().unwrap().to_string()
    }

    /// Creates a token for the seeded project with the extra fields of
    /// `fields` (an object); returns the creation response's JSON.
    pub fn create_token(&self, fields: Value) -> Value {
        let mut body = serde_json::json!({"project_id": self.project_id});
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        let response = self.manage("POST", "/manage/tokens", Some(body));
        assert_eq!(response.status, 201, "create token: {}", response.text());
        response.json()
    }

    pub fn conn(&self) -> Conn {
        Conn::open(self.addr)
    }

    /// One request on a fresh connection.
    pub fn call(&self, request: Req) -> Response {
        let mut conn = self.conn();
        conn.roundtrip(&request.bytes())
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// `http://` and the address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server with SIGTERM and asserts that it exits with status
    /// 0 within 20 s.
    #[track_caller]
    pub fn stop(mut self) {
        self.proc.signal("TERM");
        assert_eq!(
            self.proc
                .wait_exit(Duration::from_secs(20))
                .and_then(|s| s.code()),
            Some(0)
        );
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Builds the raw bytes of an HTTP/1.1 request.
#[derive(Clone)]
pub struct Req {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    content_length: bool,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: vec![("Host".into(), "proxy.test".into())],
            body: Vec::new(),
            content_length: true,
        }
    }

    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Self {
        let mut req = Self::new("POST", target);
        req.body = body.into();
        req.header("Content-Type", "application/json")
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `Authorization: Bearer <key>`.
    pub fn auth(self, key: &str) -> Self {
        self.header("Authorization", format!("Bearer {key}"))
    }

    /// `Authorization: Bearer CLIENT_KEY`.
    pub fn authed(self) -> Self {
        self.auth(CLIENT_KEY)
    }

    pub fn version(mut self, version: &str) -> Self {
        self.version = version.into();
        self
    }

    /// Do not add `Content-Length` (for hand-framed bodies).
    pub fn no_content_length(mut self) -> Self {
        self.content_length = false;
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn head_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.target, self.version);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.content_length && !self.body.is_empty() {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.head_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A chat completion request body; a stream asks for its usage chunk.
pub fn chat_body(stream: bool, content: &str) -> String {
    let mut body = serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    });
    if stream {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    body.to_string()
}

pub fn chat(stream: bool) -> Req {
    Req::post(
        "/v1/chat/completions",
        chat_body(stream, "Hello there, mock!"),
    )
    .authed()
}

/// The content the mock produces for `n` words.
pub fn mock_text(n: usize) -> String {
    (0..n)
        .map(|i| MOCK_WORDS[i % MOCK_WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The embedding the mock computes for one input (see `src/mock/openai.rs`),
/// so a test can check that a body reached the mock byte for byte.
pub fn expected_embedding(input: &Value) -> Vec<f32> {
    let text = input.to_string();
    let seed = text
        .bytes()
        .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    (0..16u32)
        .map(|d| ((seed.wrapping_add(d * 7919) % 2000) as f32 / 1000.0) - 1.0)
        .collect()
}

/// Asserts that an embeddings response carries the expected vector for each input.
pub fn assert_embeddings(response: &Response, inputs: &[Value]) {
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    let data = json["data"].as_array().expect("data array");
    assert_eq!(data.len(), inputs.len());
    for (index, (item, input)) in data.iter().zip(inputs).enumerate() {
        assert_eq!(item["index"], index);
        let got: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want = expected_embedding(input);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - *w as f64).abs() < 1e-5,
                "embedding {index} differs: got {got:?}, want {want:?}"
            );
        }
    }
}

/// Frames `parts` as a chunked body, terminator included.
pub fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------
// Responses and the raw client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The first value of header `name` (case-insensitive).
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// `error.code` of an OpenAI error envelope.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_string()
    }

    /// Asserts the status and the OpenAI error envelope with `code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body {}",
            self.text()
        );
        assert_error_envelope(&self.json(), code);
        assert!(
            self.header("content-type")
                .is_some_and(|v| v.starts_with("application/json")),
            "error without JSON content type: {:?}",
            self.headers
        );
    }

    pub fn timing(&self) -> (u64, u64) {
        let start = self
            .header("x-upstream-request-start")
            .unwrap_or_else(|| panic!("no X-UPSTREAM-REQUEST-START in {:?}", self.headers))
            .parse::<u64>()
            .expect("START is an integer");
        let stop = self
            .header("x-upstream-request-stop")
            .unwrap_or_else(|| panic!("no X-UPSTREAM-REQUEST-STOP in {:?}", self.headers))
            .parse::<u64>()
            .expect("STOP is an integer");
        (start, stop)
    }
}

pub fn assert_error_envelope(json: &Value, code: &str) {
    let error = &json["error"];
    assert!(error.is_object(), "not an OpenAI error envelope: {json}");
    assert_eq!(error["code"], code, "wrong error code in {json}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message missing in {json}"
    );
    assert!(error["type"].is_string(), "error.type missing in {json}");
    assert!(
        error.as_object().unwrap().contains_key("param") && error["param"].is_null(),
        "error.param must be present and null in {json}"
    );
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A client connection speaking raw HTTP/1.1.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

fn timeout_error(error: io::Error) -> io::Error {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "read timed out")
        }
        _ => error,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub fn try_open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn open(addr: SocketAddr) -> Conn {
        Self::try_open(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("send to server");
    }

    pub fn try_send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// Bytes received and not yet consumed by a parse.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// One read from the socket into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(self.fill()?),
            Err(e) => Err(timeout_error(e)),
        }
    }

    fn fill_or_eof(&mut self, what: &str) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed while reading {what}; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            ));
        }
        Ok(())
    }

    /// Reads a response head (status line and headers); the body is left unread.
    pub fn read_head(&mut self) -> io::Result<Response> {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            self.fill_or_eof("a response head")?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP response: {status_line:?}"),
            ));
        }
        let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
        let reason = parts.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        })
    }

    /// Reads the next chunk of a chunked body: `Some(data)`, or `None` after
    /// the terminating zero-size chunk (and trailers). A connection closed
    /// before the terminator is an `UnexpectedEof` error.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let line_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                break end;
            }
            self.fill_or_eof("a chunk size")?;
        };
        let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size line {line:?}"),
            )
        })?;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                if self.buf.len() >= line_end + 4
                    && &self.buf[line_end..line_end + 4] == b"\r\n\r\n"
                {
                    self.buf.drain(..line_end + 4);
                    return Ok(None);
                }
                if let Some(end) = find(&self.buf[line_end..], b"\r\n\r\n") {
                    self.buf.drain(..line_end + end + 4);
                    return Ok(None);
                }
                self.fill_or_eof("the chunked terminator")?;
            }
        }
        let total = line_end + 2 + size + 2;
        while self.buf.len() < total {
            self.fill_or_eof("chunk data")?;
        }
        if &self.buf[total - 2..total] != b"\r\n" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk data not followed by CRLF",
            ));
        }
        let data = self.buf[line_end + 2..line_end + 2 + size].to_vec();
        self.buf.drain(..total);
        Ok(Some(data))
    }

    /// Reads the body of `response` (whose head was read) as its framing says.
    pub fn read_body(&mut self, response: &mut Response, head_request: bool) -> io::Result<()> {
        let status = response.status;
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(());
        }
        if response.is_chunked() {
            while let Some(data) = self.next_chunk()? {
                response.body.extend_from_slice(&data);
            }
            return Ok(());
        }
        if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            while self.buf.len() < length {
                self.fill_or_eof("a Content-Length body")?;
            }
            response.body = self.buf.drain(..length).collect();
            return Ok(());
        }
        response.body = self.read_until_close()?;
        Ok(())
    }

    /// Reads one complete response to a non-HEAD request.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let mut response = self.read_head()?;
        self.read_body(&mut response, false)?;
        Ok(response)
    }

    /// Reads one complete response to a HEAD request (no body is read).
    pub fn read_head_response(&mut self) -> io::Result<Response> {
        let mut response = self.read_head()?;
        self.read_body(&mut response, true)?;
        Ok(response)
    }

    /// Sends `request` and reads the response; panics on I/O errors.
    pub fn roundtrip(&mut self, request: &[u8]) -> Response {
        self.send(request);
        self.read_response().expect("read response")
    }

    /// Everything until the server closes the connection.
    pub fn read_until_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(std::mem::take(&mut self.buf));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asserts that the server closes the connection (within the read
    /// timeout) without sending anything more.
    pub fn assert_closed(&mut self) {
        let rest = self
            .read_until_close()
            .expect("the server should close the connection");
        assert!(
            rest.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// The `data:` payloads of a server-sent event stream.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| {
            event
                .trim()
                .strip_prefix("data:")
                .map(|d| d.trim().to_string())
        })
        .collect()
}

/// The text of the content deltas in SSE payloads.
pub fn sse_content(payloads: &[String]) -> String {
    payloads
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sleeps until `at` on the monotonic clock, which the proxy's in-memory
/// lifetimes (cache entries, leases, idle timers) are measured on too.
pub fn sleep_until(at: Instant) {
    let left = at.saturating_duration_since(Instant::now());
    std::thread::sleep(left);
}

/// Sleeps until the wall clock reads `at` or later: the proxy's stored
/// lifetimes (key expiry, logins, timestamps) are wall-clock milliseconds,
/// so once this returns, any request sent from now on is past them.
pub fn sleep_until_time(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left);
    }
}

/// Sleeps until the wall clock is in a later whole second than `at`: after
/// this, a timestamp the proxy renders in whole seconds differs from `at`'s.
pub fn sleep_past_second_of(at: SystemTime) {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let next = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs() + 1);
    sleep_until_time(next);
}

/// The file `name` in the first directory of `PATH` that has one.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A local port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

// ---------------------------------------------------------------------------
// A counting TCP relay
// ---------------------------------------------------------------------------

/// Forwards every accepted connection to `target`, counting them; can cut
/// every live connection at once.
pub struct TcpRelay {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl TcpRelay {
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (count, conns, stopped) = (accepted.clone(), live.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                {
                    let mut conns = conns.lock().unwrap();
                    conns.push(client.try_clone().unwrap());
                    conns.push(upstream.try_clone().unwrap());
                }
                pump(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pump(upstream, client);
            }
        });
        Self {
            addr,
            accepted,
            live,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every relayed connection on both sides.
    pub fn close_all(&self) {
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        self.close_all();
    }
}

// ---------------------------------------------------------------------------
// A scripted upstream
// ---------------------------------------------------------------------------

/// Answers every request with the same raw bytes; records the request heads.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ScriptedUpstream {
    /// With `close_after`, the connection is closed after each response.
    pub fn start(response: impl Into<Vec<u8>>, close_after: bool) -> Self {
        let response: Vec<u8> = response.into();
        Self::serve(Arc::new(move |_| response.clone()), close_after)
    }

    /// Keep-alive; answers the `n`th request it reads (counted from 0 over
    /// every connection, in the order they arrive) with `respond(n)`.
    pub fn answering(respond: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static) -> Self {
        Self::serve(Arc::new(respond), false)
    }

    fn serve(respond: Arc<Respond>, close_after: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        let numbered = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (respond, seen, numbered) = (respond.clone(), seen.clone(), numbered.clone());
                std::thread::spawn(move || {
                    serve_scripted(stream, respond.as_ref(), (&numbered, &seen), close_after)
                });
            }
        });
        Self {
            addr,
            requests,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// What a scripted upstream answers its `n`th request with.
type Respond = dyn Fn(usize) -> Vec<u8> + Send + Sync;

fn serve_scripted(
    mut stream: TcpStream,
    respond: &Respond,
    (numbered, seen): (&AtomicUsize, &Mutex<Vec<String>>),
    close_after: bool,
) {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = next_request(&mut stream, &mut buf) else {
            return;
        };
        buf.drain(..body.end);
        seen.lock().unwrap().push(head);
        let n = numbered.fetch_add(1, Ordering::SeqCst);
        if stream.write_all(&respond(n)).is_err() {
            return;
        }
        if close_after {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads the next request on `stream` into `buf` (which may already hold
/// the start of it): its head as text, and where its `Content-Length` body
/// is in `buf`; `None` once the client is gone. The caller drains what it
/// has handled.
pub(crate) fn next_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, std::ops::Range<usize>)> {
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, end..end + length))
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

// ---------------------------------------------------------------------------
// Server-sent events and configuration helpers
// ---------------------------------------------------------------------------

/// One SSE event with the moment it was fully received.
#[derive(Debug, Clone)]
pub struct TimedEvent {
    pub at: Instant,
    pub unix_ns: u64,
    pub data: String,
}

/// Reads the events of a chunked SSE body whose head was already read,
/// until the terminating chunk. Returns the events and how the body ended:
/// `Ok(())` after the terminator, or the error (e.g. `UnexpectedEof` when
/// the connection closed mid-stream).
pub fn read_sse(conn: &mut Conn) -> (Vec<TimedEvent>, io::Result<()>) {
    let mut events = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match conn.next_chunk() {
            Ok(Some(data)) => {
                let (at, unix_ns) = (Instant::now(), unix_nanos());
                pending.extend_from_slice(&data);
                while let Some(end) = find(&pending, b"\n\n") {
                    let event: Vec<u8> = pending.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&event);
                    if let Some(data) = text.trim().strip_prefix("data:") {
                        events.push(TimedEvent {
                            at,
                            unix_ns,
                            data: data.trim().to_string(),
                        });
                    }
                }
            }
            Ok(None) => {
                assert!(
                    pending.is_empty(),
                    "incomplete SSE event at the end: {pending:?}"
                );
                return (events, Ok(()));
            }
            Err(error) => return (events, Err(error)),
        }
    }
}

/// Checks the shape of a complete mock stream of `n` deltas: the deltas,
/// the finish event, the usage event with `"choices":[]`, then `[DONE]`.
pub fn assert_complete_stream(payloads: &[String], n: usize) {
    assert_eq!(payloads.len(), n + 3, "events: {payloads:#?}");
    assert_eq!(sse_content(&payloads[..n]), mock_text(n));
    for payload in &payloads[..n] {
        let json: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(json["object"], "chat.completion.chunk");
        assert!(json["choices"][0]["finish_reason"].is_null());
    }
    let finish: Value = serde_json::from_str(&payloads[n]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage: Value = serde_json::from_str(&payloads[n + 1]).unwrap();
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], n as u64);
    assert_eq!(payloads[n + 2], "[DONE]");
}

/// An API config (seed format) with one provider, `openai`, at `base_url`.
pub fn api_config(base_url: &str, timeouts: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "default_api: openai\napis:\n  openai:\n    base_url: {base_url}\n    \
         allowed_endpoints: [/v1/chat/completions, /v1/embeddings, /v1/models]\n    \
         allowed_methods: [GET, POST]\n"
    );
    if !timeouts.is_empty() {
        yaml.push_str("    timeouts:\n");
        for (name, value) in timeouts {
            yaml.push_str(&format!("      {name}: {value}\n"));
        }
    }
    yaml
}

/// The sum over the workers of `llm_proxy_soft_budget_alerts_total{kind}`.
pub fn soft_budget_alerts(proxy: &Proxy, kind: &str) -> u64 {
    let response = proxy.call(Req::get("/metrics"));
    assert_eq!(response.status, 200, "{}", response.text());
    let prefix = format!("llm_proxy_soft_budget_alerts_total{{kind=\"{kind}\",");
    response
        .text()
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// The value of the first sample of the metric family `name` in
/// `/metrics` (a gauge labelled only by `node` and `worker`), if any.
pub fn metric(proxy: &Proxy, name: &str) -> Option<u64> {
    let page = proxy.call(Req::get("/metrics")).text();
    let labelled = format!("{name}{{");
    page.lines()
        .find(|line| line.starts_with(&labelled))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}
