//! `login`, `logout`, `whoami` and the stored key, in `llm-proxy` and
//! `dheera_ai-proxy`, as subprocesses against a scripted sign-in server that
//! answers `/sso/cli/*` as docs/login.md says and records every request; and
//! `users create|update --password -`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::*;
use common::*;
use serde_json::{Value, json};

const LOGIN_ID: &str = "lg_3Jx9";
const POLL_SECRET: &str = "ps-9c1e2b7a55";
const USER_CODE: &str = "WDJB-MJHT";
const ISSUED_KEY: &str = "sk-issued-by-login-7e21c0";
const EXPIRES_AT: &str = "2030-01-02T03:04:05Z";

// ---------------------------------------------------------------------------
// A scripted sign-in server
// ---------------------------------------------------------------------------

/// What the server answers: status and JSON body, from the request and the
/// number of polls before it (0 for the first poll).
type Script = dyn Fn(&Recorded, usize) -> (u16, String) + Send + Sync;

struct LoginServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl LoginServer {
    fn start(script: impl Fn(&Recorded, usize) -> (u16, String) + Send + Sync + 'static) -> Self {
        Self::start_with_stop(Arc::new(AtomicBool::new(false)), script)
    }

    /// [`LoginServer::start`]; once `stop` is set, the next connection is
    /// closed unanswered and the server is gone.
    fn start_with_stop(
        stop: Arc<AtomicBool>,
        script: impl Fn(&Recorded, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                // One at a time: the poll count stays exact.
                serve(stream, &*script, &seen);
            }
        });
        Self {
            addr,
            requests,
            stop,
        }
    }

    /// The flow of docs/login.md: `pending` for the first `pending` polls,
    /// then `ready` with [`ISSUED_KEY`].
    fn contract(pending: usize) -> Self {
        Self::start(move |request, polls| contract(request, polls, pending))
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.target.starts_with(prefix))
            .collect()
    }
}

impl Drop for LoginServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn contract(request: &Recorded, polls: usize, pending: usize) -> (u16, String) {
    let host = request.header("host").unwrap_or("localhost").to_string();
    let bearer = request.header("authorization") == Some(&format!("Bearer {ISSUED_KEY}"));
    match (request.method.as_str(), request.target.as_str()) {
        ("POST", "/sso/cli/start") => {
            let page = format!("http://{host}/sso/key/generate?source=litellm-cli&key={LOGIN_ID}");
            ok(json!({
                "login_id": LOGIN_ID, "poll_secret": POLL_SECRET, "user_code": USER_CODE,
                "verification_uri": page,
                "verification_uri_complete": format!("{page}&user_code={USER_CODE}"),
                "expires_in": 300, "interval": 1,
            }))
        }
        ("GET", target) if target == format!("/sso/cli/poll/{LOGIN_ID}") => {
            if request.header("x-litellm-cli-poll-secret") != Some(POLL_SECRET) {
                return error(403, "poll_secret_required", "no or wrong poll secret");
            }
            if polls < pending {
                return ok(json!({"status": "pending"}));
            }
            ok(json!({
                "status": "ready", "key": ISSUED_KEY, "key_id": "key-17", "user_id": "u-alice",
                "user_email": "alice@example.com", "user_role": "internal_user",
                "expires_at": EXPIRES_AT, "team_id": null, "teams": [],
            }))
        }
        (_, "/sso/cli/whoami" | "/sso/cli/logout" | "/models" | "/v1/chat/completions")
            if !bearer =>
        {
            error(401, "invalid_api_key", "invalid API key")
        }
        ("GET", "/sso/cli/whoami") => ok(whoami_json()),
        ("POST", "/sso/cli/logout") => ok(json!({"status": "logged_out", "key_id": "key-17"})),
        ("GET", "/models") => ok(json!({"object": "list", "data": [{"id": "gpt-4"}]})),
        ("POST", "/v1/chat/completions") => (200, completion_json("Hello, Alice.")),
        _ => error(404, "not_found", "no such route"),
    }
}

fn whoami_json() -> Value {
    json!({
        "user_id": "u-alice", "user_email": "alice@example.com", "user_role": "internal_user",
        "key_id": "key-17", "expires_at": EXPIRES_AT, "models": ["gpt-4", "gpt-4o"],
        "max_budget": 25.0, "spend": 1.5,
    })
}

fn ok(body: Value) -> (u16, String) {
    (200, body.to_string())
}

/// The envelope of docs/login.md, `detail` included.
fn error(status: u16, code: &str, message: &str) -> (u16, String) {
    let body = json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": code},
        "detail": message,
    });
    (status, body.to_string())
}

fn serve(mut stream: TcpStream, script: &Script, seen: &Mutex<Vec<Recorded>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let polls = {
        let mut seen = seen.lock().unwrap();
        let polls = seen
            .iter()
            .filter(|r| r.target.starts_with("/sso/cli/poll/"))
            .count();
        seen.push(request.clone());
        polls
    };
    let (status, body) = script(&request, polls);
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------
// Running the programs
// ---------------------------------------------------------------------------

/// One user's home: a config directory (not created yet) for the login file.
struct Home {
    dir: TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: TempDir::new("login"),
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn login_file(&self) -> PathBuf {
        self.config_dir().join("login.json")
    }

    fn stored(&self) -> Value {
        let text = std::fs::read_to_string(self.login_file()).expect("the login file");
        serde_json::from_str(&text).unwrap()
    }

    /// `program args` with this home's config directory and nothing else
    /// in the environment.
    fn cli(&self, program: Program, args: &[&str]) -> Cli {
        let cli = match program {
            Program::LlmProxy => Cli::new(args.iter().copied()),
            Program::Dheera => Cli::dheera(args.iter().copied()),
        };
        cli.env(
            "LLM_PROXY_CONFIG_DIR",
            self.config_dir().display().to_string(),
        )
    }

    fn run(&self, program: Program, args: &[&str]) -> CliRun {
        self.cli(program, args).run()
    }

    /// A finished `login --no-browser` to `server`.
    fn log_in(&self, program: Program, server: &LoginServer) -> CliRun {
        let run = self.run(
            program,
            &["login", "--no-browser", "--base-url", &server.url()],
        );
        run.assert_code(0);
        run
    }
}

#[derive(Debug, Clone, Copy)]
enum Program {
    LlmProxy,
    Dheera,
}

const BOTH: [Program; 2] = [Program::LlmProxy, Program::Dheera];

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::LlmProxy => "llm-proxy",
            Program::Dheera => "dheera_ai-proxy",
        }
    }
}

/// Waits (up to 20 s) for a file another process writes.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A failed login after it showed the URL: exit `code`, nothing on stdout,
/// and one `error: ` line that ends stderr; returns that line.
#[track_caller]
fn failure_after_chatter(run: &CliRun, code: i32) -> &str {
    run.assert_code(code);
    assert!(run.stdout.is_empty(), "{run:?}");
    let last = run.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{run:?}");
    assert_eq!(run.stderr.matches("error: ").count(), 1, "{run:?}");
    last
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------
// login
// ---------------------------------------------------------------------------

#[test]
fn login_polls_until_ready_runs_the_browser_and_writes_a_private_file() {
    for program in BOTH {
        let server = LoginServer::contract(2);
        let home = Home::new();
        let opened = home.dir.path().join("opened.txt");
        let browser = home.dir.write(
            "browser.sh",
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n",
                opened.display()
            ),
        );
        std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = home
            .cli(program, &["login", "--base-url", &server.url()])
            .env("BROWSER", browser.display().to_string())
            .run();
        let out = run.ok();
        assert_eq!(
            out,
            format!(
                "Logged in as alice@example.com (internal_user) to {}; the key expires {EXPIRES_AT}.\n",
                server.url()
            )
        );
        let page = format!(
            "{}/sso/key/generate?source=litellm-cli&key={LOGIN_ID}&user_code={USER_CODE}",
            server.url()
        );
        assert!(run.stderr.contains("Open this URL"), "{run:?}");
        assert!(run.stderr.contains(&page), "{run:?}");
        assert!(
            run.stderr
                .contains(&format!("Confirm this code in the browser: {USER_CODE}")),
            "{run:?}"
        );
        run.assert_hides(ISSUED_KEY);
        run.assert_hides(POLL_SECRET);

        // $BROWSER got the URL.
        assert_eq!(wait_for_file(&opened), format!("{page}\n"));

        // The start request, then polls with the secret until ready.
        let start = &server.requests_to("/sso/cli/start")[0];
        let body = start.json();
        let machine_id = body["machine_id"].as_str().unwrap();
        assert_eq!(machine_id.len(), 64, "{body}");
        assert!(machine_id.bytes().all(|b| b.is_ascii_hexdigit()), "{body}");
        assert!(body["hostname"].is_string(), "{body}");
        let polls = server.requests_to("/sso/cli/poll/");
        assert_eq!(polls.len(), 3, "two pending, then ready: {polls:#?}");
        for poll in &polls {
            assert_eq!(poll.method, "GET");
            assert_eq!(poll.header("x-litellm-cli-poll-secret"), Some(POLL_SECRET));
            assert_eq!(poll.header("authorization"), None);
        }

        // The file: 0600 in a 0700 directory, with every field.
        assert_eq!(mode(&home.login_file()), 0o600);
        assert_eq!(mode(&home.config_dir()), 0o700);
        let stored = home.stored();
        for (field, value) in [
            ("base_url", server.url().as_str()),
            ("key", ISSUED_KEY),
            ("key_id", "key-17"),
            ("user_id", "u-alice"),
            ("user_email", "alice@example.com"),
            ("user_role", "internal_user"),
            ("expires_at", EXPIRES_AT),
        ] {
            assert_eq!(stored[field], value, "{field} of {stored}");
        }
        assert!(stored["logged_in_at"].as_str().unwrap().ends_with('Z'));
        // The same machine and user give the same id the next time.
        home.log_in(program, &server);
        let again = &server.requests_to("/sso/cli/start")[1];
        assert_eq!(again.json()["machine_id"], machine_id, "{}", program.name());
    }
}

#[test]
fn no_browser_still_prints_the_url_and_the_code() {
    let server = LoginServer::contract(0);
    let home = Home::new();
    let run = home
        .cli(
            Program::Dheera,
            &[
                "login",
                "--no-browser",
                "--base-url",
                &server.url(),
                "--format",
                "json",
                "--debug",
            ],
        )
        // Would fail loudly ("Did not open a browser") if it were run.
        .env("BROWSER", "/nonexistent/browser")
        .run();
    let summary = run.json();
    assert_eq!(summary["user_email"], "alice@example.com");
    assert_eq!(summary["base_url"], server.url());
    assert_eq!(
        summary["login_file"],
        home.login_file().display().to_string()
    );
    assert!(summary.get("key").is_none(), "{summary}");
    assert!(run.stderr.contains(&format!("key={LOGIN_ID}")), "{run:?}");
    assert!(run.stderr.contains(USER_CODE), "{run:?}");
    assert!(!run.stderr.contains("Opened a browser"), "{run:?}");
    assert!(!run.stderr.contains("Did not open a browser"), "{run:?}");
    // --debug shows the exchanges, not the secrets.
    assert!(run.stderr.contains("> GET "), "{run:?}");
    run.assert_hides(ISSUED_KEY);
    run.assert_hides(POLL_SECRET);
}

#[test]
fn a_browser_that_cannot_start_is_a_note_not_an_error() {
    let server = LoginServer::contract(0);
    let home = Home::new();
    let run = home
        .cli(Program::LlmProxy, &["login", "--base-url", &server.url()])
        .env("BROWSER", "/nonexistent/browser --flag")
        .run();
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("Did not open a browser (cannot run /nonexistent/browser"),
        "{run:?}"
    );
    assert_eq!(home.stored()["key"], ISSUED_KEY);
}

#[test]
fn sign_in_disabled_exits_1() {
    let server = LoginServer::start(|_, _| {
        error(
            404,
            "login_disabled",
            "sign-in is not enabled on this proxy",
        )
    });
    for program in BOTH {
        let home = Home::new();
        let run = home.run(
            program,
            &["login", "--no-browser", "--base-url", &server.url()],
        );
        assert_eq!(
            run.fails(1),
            format!(
                "error: sign-in is not enabled on the server at {} \
                 (its operator sets EXPERIMENTAL_UI_LOGIN=true)",
                server.url()
            )
        );
        assert!(!home.login_file().exists());
    }
}

#[test]
fn a_refused_sign_in_exits_3() {
    let server = LoginServer::start(|request, polls| {
        if request.target.starts_with("/sso/cli/poll/") {
            return error(
                403,
                "login_refused",
                "bob@example.com has no user on this proxy",
            );
        }
        contract(request, polls, 0)
    });
    let home = Home::new();
    let run = home.run(
        Program::LlmProxy,
        &["login", "--no-browser", "--base-url", &server.url()],
    );
    assert_eq!(
        failure_after_chatter(&run, 3),
        "error: sign-in refused: bob@example.com has no user on this proxy"
    );
    assert!(!home.login_file().exists());
}

#[test]
fn an_unreachable_server_exits_2() {
    let url = format!("http://{}", closed_port());
    for program in BOTH {
        let home = Home::new();
        let run = home.run(program, &["login", "--no-browser", "--base-url", &url]);
        let line = run.fails(2);
        assert!(
            line.contains(&url) && line.contains("connection refused"),
            "{line}"
        );
    }
}

#[test]
fn nobody_signing_in_times_out_with_exit_1() {
    // Always pending; the server would wait five minutes, --timeout is shorter.
    let server = LoginServer::contract(usize::MAX);
    let home = Home::new();
    let run = home.run(
        Program::Dheera,
        &[
            "login",
            "--no-browser",
            "--timeout",
            "2s",
            "--base-url",
            &server.url(),
        ],
    );
    assert_eq!(
        failure_after_chatter(&run, 1),
        "error: login timed out: nobody signed in within 2s"
    );
    assert!(!server.requests_to("/sso/cli/poll/").is_empty());
    assert!(!home.login_file().exists());

    // The server's own expiry (410) ends it too.
    let server = LoginServer::start(|request, polls| {
        if request.target.starts_with("/sso/cli/poll/") {
            return error(410, "login_expired", "this login has expired");
        }
        contract(request, polls, 0)
    });
    let run = home.run(
        Program::LlmProxy,
        &["login", "--no-browser", "--base-url", &server.url()],
    );
    assert_eq!(
        failure_after_chatter(&run, 1),
        "error: the login expired; run `llm-proxy login` again"
    );
}

#[test]
fn a_server_that_goes_away_while_polling_exits_2() {
    let gone = Arc::new(AtomicBool::new(false));
    let going = gone.clone();
    let server = LoginServer::start_with_stop(gone, move |request, polls| {
        going.store(true, Ordering::SeqCst);
        contract(request, polls, 0)
    });
    let home = Home::new();
    let run = home.run(
        Program::LlmProxy,
        &[
            "login",
            "--no-browser",
            "--timeout",
            "2s",
            "--base-url",
            &server.url(),
        ],
    );
    let line = failure_after_chatter(&run, 2);
    assert!(
        line.starts_with(&format!(
            "error: cannot reach the proxy at {}",
            server.url()
        )),
        "{line}"
    );
    assert!(!home.login_file().exists());
}

// ---------------------------------------------------------------------------
// The stored key in later commands
// ---------------------------------------------------------------------------

#[test]
fn the_stored_key_is_used_for_its_server_only() {
    for program in BOTH {
        let server = LoginServer::contract(0);
        let home = Home::new();
        home.log_in(program, &server);

        // No key, no URL: the login's server and key.
        let run = home.run(program, &["models", "list", "--format", "json"]);
        assert_eq!(run.json()["data"][0]["id"], "gpt-4");
        let sent = server.requests_to("/models");
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].header("authorization"),
            Some(format!("Bearer {ISSUED_KEY}").as_str())
        );
        // The same server named with a trailing slash: still its key.
        let slash = format!("{}/", server.url());
        home.run(program, &["models", "list", "--base-url", &slash])
            .assert_code(0);

        // Another server: the key stays home.
        let other = RecordingServer::json(200, r#"{"object":"list","data":[]}"#);
        let run = home.run(program, &["models", "list", "--base-url", &other.url()]);
        let line = run.fails(3);
        assert!(
            line.contains(&format!("the stored login is for {}", server.url())),
            "{line}"
        );
        let run = home
            .cli(program, &["http", "request", "GET", "/models"])
            .env("LLM_PROXY_URL", other.url())
            .run();
        run.assert_code(0);
        let request = other.only_request();
        assert_eq!(request.header("authorization"), None, "{request:?}");

        // A key given in the environment wins over the stored one.
        let run = home
            .cli(program, &["models", "list"])
            .env("LLM_PROXY_API_KEY", "sk-from-env-0042")
            .env("LLM_PROXY_URL", server.url())
            .run();
        assert!(run.error_line(3).contains("rejected"), "{run:?}");
        let last = server.requests_to("/models").pop().unwrap();
        assert_eq!(
            last.header("authorization"),
            Some("Bearer sk-from-env-0042")
        );
    }
}

#[test]
fn openai_chat_uses_the_stored_key_without_a_token() {
    let server = LoginServer::contract(0);
    let home = Home::new();
    home.log_in(Program::LlmProxy, &server);
    let run = home
        .cli(Program::LlmProxy, &["openai", "chat", "--no-stream"])
        .stdin("hello\n")
        .run();
    assert!(run.ok().contains("Hello, Alice."), "{run:?}");
    let sent = server.requests_to("/v1/chat/completions");
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {ISSUED_KEY}").as_str())
    );
    // Not to another server.
    let other = format!("http://{}", closed_port());
    let run = home
        .cli(
            Program::LlmProxy,
            &["openai", "chat", "--no-stream", "--base-url", &other],
        )
        .stdin("hello\n")
        .run();
    assert!(run.fails(3).contains("--token"), "{run:?}");
}

#[test]
fn a_revoked_stored_key_says_to_log_in_again() {
    let server = LoginServer::contract(0);
    let home = Home::new();
    home.log_in(Program::Dheera, &server);
    let revoked = LoginServer::start(|_, _| error(401, "invalid_api_key", "key expired"));
    // The file now names a server that no longer knows the key.
    let mut stored = home.stored();
    stored["base_url"] = json!(revoked.url());
    std::fs::write(home.login_file(), stored.to_string()).unwrap();
    let run = home.run(Program::Dheera, &["models", "list"]);
    assert_eq!(
        run.fails(3),
        format!(
            "error: the proxy at {} rejected the key of the stored login (401): \
             it has expired or was revoked; run `dheera_ai-proxy login`",
            revoked.url()
        )
    );
    run.assert_hides(ISSUED_KEY);
}

// ---------------------------------------------------------------------------
// whoami, logout
// ---------------------------------------------------------------------------

#[test]
fn whoami_shows_the_user_of_the_key() {
    for program in BOTH {
        let server = LoginServer::contract(0);
        let home = Home::new();
        let run = home.run(program, &["whoami"]);
        assert_eq!(
            run.fails(3),
            format!("error: not logged in: run `{} login`", program.name())
        );

        home.log_in(program, &server);
        let out = home.run(program, &["whoami"]).ok().to_string();
        for needle in [
            "alice@example.com",
            "internal_user",
            "u-alice",
            "key-17",
            EXPIRES_AT,
            "gpt-4, gpt-4o",
            "$1.5 / $25",
            &server.url(),
        ] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
        assert!(!out.contains(ISSUED_KEY), "{out}");
        let run = home.run(program, &["whoami", "--format", "json"]);
        assert_eq!(run.json(), whoami_json());
        let sent = server.requests_to("/sso/cli/whoami").pop().unwrap();
        assert_eq!(
            sent.header("authorization"),
            Some(format!("Bearer {ISSUED_KEY}").as_str())
        );

        // Another server named: not logged in there.
        let other = format!("http://{}", closed_port());
        let line = home
            .run(program, &["whoami", "--base-url", &other])
            .fails(3)
            .to_string();
        assert!(
            line.contains(&format!("not logged in to {other}")),
            "{line}"
        );
    }
}

/// With the master key, against a real server: whoami says it is the master
/// key, with every permission, in both programs; a virtual key still gets
/// its own answer.
#[test]
fn whoami_with_the_master_key_says_so() {
    let proxy = Proxy::builder().start();
    for program in [Cli::new(["whoami"]), Cli::dheera(["whoami"])] {
        let run = program
            .env("DHEERA_AI_PROXY_URL", proxy.url())
            .env("DHEERA_AI_PROXY_API_KEY", MANAGEMENT_TOKEN)
            .run();
        let out = run.ok().to_string();
        for needle in [
            "the master key",
            "MANAGEMENT_TOKEN",
            "all:",
            "proxy_admin",
            &proxy.url(),
        ] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
        run.assert_hides(MANAGEMENT_TOKEN);
    }
    let json = Cli::new(["whoami", "--format", "json"])
        .env("LLM_PROXY_URL", proxy.url())
        .env("LLM_PROXY_API_KEY", MANAGEMENT_TOKEN)
        .run()
        .json();
    assert_eq!(json["master_key"], true, "{json}");
    assert_eq!(json["key_id"], Value::Null, "{json}");

    let json = Cli::new(["whoami", "--format", "json"])
        .env("LLM_PROXY_URL", proxy.url())
        .env("LLM_PROXY_API_KEY", CLIENT_KEY)
        .run()
        .json();
    assert_eq!(json.get("master_key"), None, "{json}");
    assert!(json["key_id"].is_string(), "{json}");
    let line = Cli::new(["whoami"])
        .env("LLM_PROXY_URL", proxy.url())
        .env("LLM_PROXY_API_KEY", "sk-not-the-master-key")
        .run()
        .fails(3)
        .to_string();
    assert!(line.contains("401"), "{line}");
}

#[test]
fn logout_deletes_the_key_on_the_server_and_the_file() {
    for program in BOTH {
        let server = LoginServer::contract(0);
        let home = Home::new();
        home.log_in(program, &server);
        let out = home.run(program, &["logout"]).ok().to_string();
        assert_eq!(
            out,
            format!(
                "Logged out of {}: the key key-17 was deleted.\n",
                server.url()
            )
        );
        let sent = server.requests_to("/sso/cli/logout");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].method, "POST");
        assert_eq!(
            sent[0].header("authorization"),
            Some(format!("Bearer {ISSUED_KEY}").as_str())
        );
        assert!(!home.login_file().exists());
        assert_eq!(home.run(program, &["logout"]).ok(), "not logged in\n");
        assert_eq!(server.requests_to("/sso/cli/logout").len(), 1);
    }
}

#[test]
fn logout_when_the_key_is_gone_or_the_server_is_not_there() {
    let server = LoginServer::contract(0);
    let home = Home::new();
    home.log_in(Program::LlmProxy, &server);
    let original = home.stored();

    // Unreachable: the file stays, the message names --local-only.
    let mut moved = original.clone();
    moved["base_url"] = json!(format!("http://{}", closed_port()));
    std::fs::write(home.login_file(), moved.to_string()).unwrap();
    let run = home.run(Program::LlmProxy, &["logout"]);
    let line = run.fails(2);
    assert!(
        line.contains("connection refused") && line.contains("`llm-proxy logout --local-only`"),
        "{line}"
    );
    assert!(home.login_file().exists());
    run.assert_hides(ISSUED_KEY);

    // Any other error: the file stays too.
    let broken = LoginServer::start(|_, _| error(500, "internal_error", "store unavailable"));
    moved["base_url"] = json!(broken.url());
    std::fs::write(home.login_file(), moved.to_string()).unwrap();
    let run = home.run(Program::LlmProxy, &["logout"]);
    assert_eq!(
        run.fails(1),
        format!(
            "error: the proxy at {} answered 500: store unavailable; the login is kept; \
             `llm-proxy logout --local-only` forgets it without telling the server",
            broken.url()
        )
    );
    assert!(home.login_file().exists());

    // --local-only asks no server.
    let out = home
        .run(Program::LlmProxy, &["logout", "--local-only"])
        .ok()
        .to_string();
    assert!(out.starts_with("Removed the login file"), "{out}");
    assert!(!home.login_file().exists());

    // 401: the key was already gone; the file goes too.
    let gone = LoginServer::start(|_, _| error(401, "invalid_api_key", "invalid API key"));
    let mut expired = original;
    expired["base_url"] = json!(gone.url());
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(home.login_file(), expired.to_string()).unwrap();
    let out = home.run(Program::Dheera, &["logout"]).ok().to_string();
    assert!(out.contains("already expired or been revoked"), "{out}");
    assert!(!home.login_file().exists());
    assert_eq!(gone.requests_to("/sso/cli/logout").len(), 1);
}

// ---------------------------------------------------------------------------
// Passwords for the built-in page
// ---------------------------------------------------------------------------

#[test]
fn passwords_are_read_from_stdin_and_sent_to_the_server() {
    const PASSWORD: &str = "correct horse battery";
    for program in BOTH {
        let server = RecordingServer::json(200, r#"{"user_id": "u-1"}"#);
        let url = server.url();
        let args = [
            "users",
            "update",
            "--user-id",
            "u-1",
            "--role",
            "proxy_admin",
            "--password",
            "-",
            "--base-url",
            &url,
            "--api-key",
            API_KEY,
        ];
        let cli = match program {
            Program::LlmProxy => Cli::new(args),
            Program::Dheera => Cli::dheera(args),
        };
        let run = cli.stdin(format!("{PASSWORD}\nnot this line\n")).run();
        assert_eq!(run.json()["user_id"], "u-1");
        run.assert_hides(PASSWORD);
        server.only_request().assert_sent(
            &args,
            "POST",
            "/user/update",
            API_KEY,
            Some(&json!({"user_id": "u-1", "user_role": "proxy_admin", "password": PASSWORD})),
        );
    }

    let server = RecordingServer::json(200, r#"{"user_id": "u-2", "key": null}"#);
    let run = Cli::new([
        "users",
        "create",
        "--email",
        "bob@example.com",
        "--no-key",
        "--password",
        "-",
        "--debug",
    ])
    .args(["--base-url", &server.url(), "--api-key", API_KEY])
    .stdin(format!("{PASSWORD}\r\n"))
    .run();
    run.assert_code(0);
    run.assert_hides(PASSWORD);
    assert_eq!(server.only_request().json()["password"], PASSWORD);

    // Nothing on stdin: refused before anything is sent.
    let server = RecordingServer::json(200, "{}");
    let run = Cli::new(["users", "update", "--user-id", "u-1", "--password", "-"])
        .args(["--base-url", &server.url(), "--api-key", API_KEY])
        .stdin("")
        .run();
    assert!(run.fails(1).contains("stdin is empty"), "{run:?}");
    assert!(server.requests().is_empty());
}
