//! Helpers for testing the client commands (`manage`, ...) as subprocesses.
//!
//! - [`Cli`]: runs `llm-proxy <args>` with a cleared environment (and
//!   optionally some input on stdin) and captures stdout, stderr and the
//!   exit code.
//! - [`dheera_env`] and [`dheera_at`]: `dheera_ai-proxy` set up as the seed
//!   does, with the URL and key in its environment; the constants and the
//!   seed's examples the client-command tests share.
//! - [`RecordingServer`]: a tiny HTTP server that answers every request
//!   with one scripted response and records what the client sent (method,
//!   target, headers and body), one connection per request.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one CLI invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// One finished CLI run.
#[derive(Debug)]
pub struct CliRun {
    pub args: Vec<String>,
    /// `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Each piece of stdout with when it arrived, from the start.
    pub pieces: Vec<(Duration, String)>,
}

impl CliRun {
    /// Asserts the exit code, showing everything on failure.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "llm-proxy {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        self.assert_code(0);
        &self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let out = self.ok();
        serde_json::from_str(out)
            .unwrap_or_else(|e| panic!("stdout of {:?} is not JSON ({e}):\n{out}", self.args))
    }

    /// Asserts a failure with `code`, an empty stdout and exactly one
    /// stderr line starting with `error: `; returns that line.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        self.assert_code(code);
        assert!(
            self.stdout.is_empty(),
            "stdout of a failure should be empty: {:?}",
            self.stdout
        );
        self.error_line(code)
    }

    /// Asserts the exit `code` and exactly one stderr line starting with
    /// `error: `, whatever stdout holds; returns that line.
    #[track_caller]
    pub fn error_line(&self, code: i32) -> &str {
        self.assert_code(code);
        let line = self.stderr.strip_suffix('\n').unwrap_or(&self.stderr);
        assert!(
            !line.contains('\n') && line.starts_with("error: "),
            "expected one `error: ` line on stderr, got {:?}",
            self.stderr
        );
        line
    }

    /// Asserts that `needle` appears in neither stdout nor stderr.
    #[track_caller]
    pub fn assert_hides(&self, needle: &str) {
        assert!(
            !self.stdout.contains(needle) && !self.stderr.contains(needle),
            "{needle:?} leaked into the output of {:?}:\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
    }
}

/// Builds one `llm-proxy` (or `dheera_ai-proxy`) invocation with a cleared
/// environment.
pub struct Cli {
    program: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Written to stdin (then closed); `None`: stdin is `/dev/null`.
    input: Option<String>,
}

/// The `dheera_ai-proxy` binary: the client commands alone.
pub fn dheera_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dheera_ai-proxy")
}

impl Cli {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Self {
            program: super::bin(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            input: None,
        }
    }

    /// `dheera_ai-proxy <args>`.
    pub fn dheera<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Self {
            program: dheera_bin(),
            ..Self::new(args)
        }
    }

    /// `llm-proxy manage <args>`.
    pub fn manage<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Self::new(std::iter::once("manage".to_string()).chain(args.into_iter().map(Into::into)))
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Writes `input` to stdin, then closes it.
    pub fn stdin(mut self, input: impl Into<String>) -> Self {
        self.input = Some(input.into());
        self
    }

    /// Runs to completion (killed after a minute), in a fresh temp dir.
    pub fn run(&self) -> CliRun {
        let dir = super::TempDir::new("cli");
        self.run_in(dir.path())
    }

    /// Runs to completion (killed after a minute) in `dir`.
    pub fn run_in(&self, dir: &std::path::Path) -> CliRun {
        let mut cmd = Command::new(self.program);
        cmd.current_dir(dir)
            .env_clear()
            .args(&self.args)
            .stdin(match self.input {
                Some(_) => Stdio::piped(),
                None => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("spawn llm-proxy");
        let start = Instant::now();
        if let Some(input) = self.input.clone() {
            let mut stdin = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                // The command may exit before it reads everything.
                let _ = stdin.write_all(input.as_bytes());
            });
        }
        let stdout = drain_pieces(child.stdout.take().expect("piped stdout"), start);
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let status = super::wait_or_kill(&mut child, CLI_TIMEOUT, || {
            format!("llm-proxy {:?}", self.args)
        });
        let pieces = stdout.join().expect("stdout reader");
        let bytes: Vec<u8> = pieces
            .iter()
            .flat_map(|(_, bytes)| bytes)
            .copied()
            .collect();
        CliRun {
            args: self.args.clone(),
            code: status.code(),
            stdout: String::from_utf8_lossy(&bytes).into_owned(),
            stderr: stderr.join().expect("stderr reader"),
            pieces: pieces
                .into_iter()
                .map(|(at, bytes)| (at, String::from_utf8_lossy(&bytes).into_owned()))
                .collect(),
        }
    }
}

/// Reads `pipe` to its end, noting when each piece arrived after `start`.
fn drain_pieces(
    mut pipe: impl Read + Send + 'static,
    start: Instant,
) -> std::thread::JoinHandle<Vec<(Duration, Vec<u8>)>> {
    std::thread::spawn(move || {
        let mut pieces = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => pieces.push((start.elapsed(), buf[..n].to_vec())),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        pieces
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// An OpenAI chat completion answering `text`.
pub fn completion_json(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    })
    .to_string()
}

/// A model deployment as `/model/new` answers it.
pub fn deployment_json(id: &str) -> String {
    serde_json::json!({
        "model_id": id, "model_name": "gpt-4",
        "litellm_params": {"model": "gpt-4", "max_tokens": 2048},
        "model_info": {"id": id},
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// The client commands as the seed sets them up
// ---------------------------------------------------------------------------

/// The API key of the tests against a recording server; must never be
/// printed.
pub const API_KEY: &str = "sk-master-5c2e91f0ab37";
/// A model deployment id the recording server answers with.
pub const MODEL_ID: &str = "8d1f2c3a-model";
/// A user id the recording server answers with.
pub const USER_ID: &str = "u-3f9a";
/// A key secret the recording server hands out.
pub const NEW_KEY: &str = "sk-generated-4b8e2d7f9c1a";

/// The seed's `models add` example.
pub const SEED_MODELS_ADD: &[&str] = &[
    "models",
    "add",
    "gpt-4",
    "--param",
    "api_key=sk-123",
    "--param",
    "max_tokens=2048",
];

/// The seed's `keys generate` example.
pub const SEED_KEYS_GENERATE: &[&str] = &[
    "keys",
    "generate",
    "--models=gpt-4",
    "--spend=100",
    "--duration=24h",
    "--key-alias=my-key",
];

/// The seed's `users create` example.
pub const SEED_USERS_CREATE: &[&str] = &[
    "users",
    "create",
    "--email=user@example.com",
    "--role=internal_user",
    "--alias=Alice",
    "--team=team1",
    "--max-budget=100.0",
];

/// `dheera_ai-proxy <args>` with the URL and `key` in its environment, as
/// the seed sets it up.
pub fn dheera_env(url: &str, key: &str, args: &[&str]) -> CliRun {
    Cli::dheera(args.iter().copied())
        .env("DHEERA_AI_PROXY_URL", url)
        .env("DHEERA_AI_PROXY_API_KEY", key)
        .run()
}

/// [`dheera_env`] with [`API_KEY`].
pub fn dheera_at(url: &str, args: &[&str]) -> CliRun {
    dheera_env(url, API_KEY, args)
}

// ---------------------------------------------------------------------------
// A recording server
// ---------------------------------------------------------------------------

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header_value(&self.headers, name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts that the command run with `args` sent `method target` with
    /// the bearer `key`, and `body` as JSON (or no body at all).
    #[track_caller]
    pub fn assert_sent(
        &self,
        args: &[&str],
        method: &str,
        target: &str,
        key: &str,
        body: Option<&Value>,
    ) {
        assert_eq!(self.method, method, "{args:?}");
        assert_eq!(self.target, target, "{args:?}");
        assert_eq!(
            self.header("authorization"),
            Some(format!("Bearer {key}").as_str())
        );
        match body {
            Some(body) => {
                assert_eq!(&self.json(), body, "{args:?}");
                assert_eq!(self.header("content-type"), Some("application/json"));
            }
            None => assert!(self.body.is_empty(), "{args:?}: {self:?}"),
        }
    }
}

/// Answers every request with the same status and body, then closes.
pub struct RecordingServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl RecordingServer {
    /// A JSON answer (an empty `body` sends no body and no content type).
    pub fn json(status: u16, body: &str) -> Self {
        let mut response = format!("HTTP/1.1 {status} Scripted\r\nConnection: close\r\n");
        if !body.is_empty() {
            response.push_str("Content-Type: application/json\r\n");
        }
        if status != 204 {
            response.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        response.push_str("\r\n");
        response.push_str(body);
        Self::raw(response)
    }

    /// Any raw bytes as the answer.
    pub fn raw(response: impl Into<Vec<u8>>) -> Self {
        let response: Arc<Vec<u8>> = Arc::new(response.into());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (response, seen) = (response.clone(), seen.clone());
                std::thread::spawn(move || serve_one(stream, &response, &seen));
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

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received so far.
    #[track_caller]
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "requests: {requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_one(mut stream: TcpStream, response: &[u8], seen: &Mutex<Vec<Recorded>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    seen.lock().unwrap().push(request);
    let _ = stream.write_all(response);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Appends what `stream` reads next to `buf`; false if the client went
/// away (end of stream or an error).
pub fn read_more(stream: &mut impl Read, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Reads from `stream` onto `buf` until `buf` holds a whole request head;
/// returns where the head ends, or `None` if the client went away first.
pub fn read_head(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        if !read_more(stream, buf) {
            return None;
        }
    }
}

/// Reads one request (head, and a `Content-Length` body) from `stream`;
/// `None` if the client went away first.
pub fn read_request(stream: &mut impl Read) -> Option<Recorded> {
    let mut buf = Vec::new();
    let end = read_head(stream, &mut buf)?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_string();
    let target = start.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = super::header_value(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < end + length {
        if !read_more(stream, &mut buf) {
            return None;
        }
    }
    Some(Recorded {
        method,
        target,
        headers,
        body: buf[end..end + length].to_vec(),
    })
}
