//! Signing in end to end, with a real browser: headless Chromium driven by
//! tests/e2e/browser.mjs (as `$BROWSER`), a real OpenID Connect provider
//! (node-oidc-provider, tests/e2e/idp.mjs), the real `llm-proxy server`
//! with the mock upstream, and the real CLIs (`llm-proxy login`,
//! `dheera_ai-proxy login`, LiteLLM's `litellm-proxy login`).
//!
//! Needs node, /usr/bin/chromium and `npm ci --prefix tests/e2e`. Where one
//! is missing each test says so and passes, unless
//! `LLM_PROXY_REQUIRE_BROWSER=1` (set by CI, which installs them) makes that
//! a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::common::cli::{Cli, CliRun};
use crate::common::*;
use llm_proxy::login::oidc;
use llm_proxy::settings::OidcSettings;
use serde_json::{Value, json};

const CLIENT_ID: &str = "llm-proxy-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret-4f1d9a";
/// The model registered in every proxy here, routed to the mock.
const MODEL: &str = "routed";
/// How long the browser may take to write its report once the CLI is done.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The tools: node, Chromium, the npm packages
// ---------------------------------------------------------------------------

struct E2e {
    node: PathBuf,
    /// tests/e2e, absolute.
    dir: PathBuf,
}

impl E2e {
    /// The tools, or `None` after saying what is missing (a failure when
    /// `LLM_PROXY_REQUIRE_BROWSER=1`).
    fn find() -> Option<E2e> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("tests/e2e");
        let node = find_on_path("node");
        let missing = if node.is_none() {
            Some("node is not installed")
        } else if !Path::new("/usr/bin/chromium").is_file() {
            Some("/usr/bin/chromium is not installed (apt-get install chromium)")
        } else if !dir.join("node_modules").is_dir() {
            Some("tests/e2e/node_modules is missing (npm ci --prefix tests/e2e)")
        } else {
            None
        };
        if let Some(reason) = missing {
            let required = std::env::var("LLM_PROXY_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
            assert!(!required, "{reason}, and LLM_PROXY_REQUIRE_BROWSER=1");
            eprintln!("skipped: {reason}");
            return None;
        }
        Some(E2e { node: node?, dir })
    }

    fn script(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `login --base-url <proxy>` of `program` (`llm-proxy` or
    /// `dheera_ai-proxy`), with browser.mjs as `$BROWSER` acting as `person`.
    fn login(&self, program: Program, proxy: &Proxy, person: &Person, home: &Path) -> Login {
        let report = report_path(home);
        let args = ["login", "--base-url", &proxy.url()];
        let cli = match program {
            Program::LlmProxy => Cli::new(args),
            Program::Dheera => Cli::dheera(args),
        };
        let mut cli = cli
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.display().to_string())
            .env("XDG_CONFIG_HOME", home.join("xdg").display().to_string())
            .env(
                "LLM_PROXY_CONFIG_DIR",
                config_dir(home).display().to_string(),
            )
            // Split on whitespace by the CLI; relative to the crate root,
            // where the CLI runs.
            .env("BROWSER", "node tests/e2e/browser.mjs");
        for (key, value) in person.env(&report) {
            cli = cli.env(key, value);
        }
        let run = cli.run_in(Path::new(env!("CARGO_MANIFEST_DIR")));
        // No URL printed: no browser was opened, no report will come.
        let opened = format!("{}{}", run.stdout, run.stderr).contains("/sso/key/generate?");
        let report = opened.then(|| wait_report(&report)).flatten();
        Login { run, report }
    }

    /// An executable that runs browser.mjs: Python's `webbrowser` (LiteLLM's
    /// CLI) takes `$BROWSER` as one command, not split.
    fn browser_wrapper(&self, dir: &Path) -> PathBuf {
        let path = dir.join("browser.sh");
        let script = format!(
            "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
            self.node.display(),
            self.script("browser.mjs").display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

#[derive(Clone, Copy)]
enum Program {
    LlmProxy,
    Dheera,
}

/// Who is at the browser, and how the login should end.
struct Person {
    mode: &'static str,
    login: String,
    password: String,
    expect: &'static str,
}

impl Person {
    fn oidc(login: &str, expect: &'static str) -> Person {
        Person {
            mode: "oidc",
            login: login.into(),
            password: "any-password".into(),
            expect,
        }
    }

    fn password(email: &str, password: &str) -> Person {
        Person {
            mode: "password",
            login: email.into(),
            password: password.into(),
            expect: "approved",
        }
    }

    fn env(&self, report: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("E2E_MODE", self.mode.into()),
            ("E2E_LOGIN", self.login.clone()),
            ("E2E_PASSWORD", self.password.clone()),
            ("E2E_EXPECT", self.expect.into()),
            ("E2E_REPORT", report.display().to_string()),
        ]
    }
}

fn config_dir(home: &Path) -> PathBuf {
    home.join("llm-proxy-config")
}

/// A fresh report file name under `home` for each browser run.
fn report_path(home: &Path) -> PathBuf {
    for n in 0.. {
        let path = home.join(format!("browser-report-{n}.json"));
        if !path.exists() {
            return path;
        }
    }
    unreachable!()
}

/// The browser's report once it has written it (it may outlive the CLI).
fn wait_report(path: &Path) -> Option<Value> {
    let deadline = Instant::now() + REPORT_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Some(serde_json::from_str(&text).expect("the report is JSON"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// One `login` run and what the browser saw.
struct Login {
    run: CliRun,
    report: Option<Value>,
}

impl Login {
    fn describe(&self, proxy: &Proxy, idp: Option<&Idp>) -> String {
        format!(
            "login {:?} exited {:?}\nstdout:\n{}\nstderr:\n{}\nbrowser report: {}\nproxy log:\n{}\nprovider log:\n{}",
            self.run.args,
            self.run.code,
            self.run.stdout,
            self.run.stderr,
            self.report
                .as_ref()
                .map_or("none written".to_string(), Value::to_string),
            proxy.log(),
            idp.map(Idp::log).unwrap_or_default(),
        )
    }

    /// Asserts exit 0, a browser that got through, the code it was shown
    /// printed by the CLI too; returns the stored login.
    #[track_caller]
    fn assert_approved(&self, proxy: &Proxy, idp: Option<&Idp>, home: &Path) -> Value {
        let context = || self.describe(proxy, idp);
        assert_eq!(self.run.code, Some(0), "{}", context());
        let report = self
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("{}", context()));
        assert_eq!(report["ok"], true, "{}", context());
        let code = report["code_seen"]
            .as_str()
            .unwrap_or_else(|| panic!("the pages never showed the code: {}", context()));
        let printed = format!("{}{}", self.run.stdout, self.run.stderr);
        assert!(
            printed.contains(code),
            "the CLI did not print {code}: {}",
            context()
        );
        assert!(
            printed.contains("/sso/key/generate?"),
            "no URL printed: {}",
            context()
        );
        stored_login(home, &proxy.url())
    }
}

/// login.json: its fields, readable by its owner alone.
#[track_caller]
fn stored_login(home: &Path, base_url: &str) -> Value {
    let path = config_dir(home).join("login.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    let stored: Value = serde_json::from_str(&text).unwrap();
    for field in [
        "base_url",
        "key",
        "key_id",
        "user_id",
        "user_email",
        "user_role",
        "expires_at",
    ] {
        assert!(stored.get(field).is_some(), "no {field} in {stored}");
    }
    assert_eq!(
        stored["base_url"].as_str().map(|u| u.trim_end_matches('/')),
        Some(base_url)
    );
    stored
}

// ---------------------------------------------------------------------------
// The identity provider
// ---------------------------------------------------------------------------

/// tests/e2e/idp.mjs, running until dropped (closing its stdin ends it).
struct Idp {
    child: Child,
    stdin: Option<ChildStdin>,
    issuer: String,
    log: Arc<Mutex<String>>,
}

impl Idp {
    fn start(e2e: &E2e, secret: Option<&str>) -> Idp {
        let mut child = Command::new(&e2e.node)
            .arg(e2e.script("idp.mjs"))
            .env("IDP_CLIENT_ID", CLIENT_ID)
            .env("IDP_CLIENT_SECRET", secret.unwrap_or(""))
            // A loopback redirect URI: any port of it is accepted.
            .env("IDP_REDIRECT_URI", "http://127.0.0.1/sso/callback")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node tests/e2e/idp.mjs");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let stdin = child.stdin.take();
        let mut idp = Idp {
            child,
            stdin,
            issuer: String::new(),
            log,
        };
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("idp.mjs did not start: {line:?}\n{}", idp.log()));
        idp.issuer = started["issuer"].as_str().unwrap().to_string();
        idp
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

/// A proxy with the sign-in pages on, signing in through `idp` when given
/// (else with passwords), and the model `routed` to the mock.
fn login_proxy(mock: &Mock, idp: Option<&Idp>, auto_create: bool) -> Proxy {
    let mut builder = Proxy::for_mock(mock)
        .env("EXPERIMENTAL_UI_LOGIN", "true")
        .env("CLI_LOGIN_TIMEOUT", "2m")
        .env("SSO_AUTO_CREATE_USERS", auto_create.to_string());
    if let Some(idp) = idp {
        builder = builder
            .env("OIDC_ISSUER", idp.issuer.clone())
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_SCOPES", "openid email");
    }
    let proxy = builder.start();
    let body = json!({"model_name": MODEL, "litellm_params": {"model": "openai/gpt-4o-mini",
        "api_base": format!("{}/v1", mock.url()), "api_key": UPSTREAM_KEY}});
    let response = proxy.manage("POST", "/model/new", Some(body));
    assert_eq!(response.status, 200, "/model/new: {}", response.text());
    proxy
}

/// Asserts that `key` gets a chat completion through the proxy.
#[track_caller]
fn assert_key_works(proxy: &Proxy, key: &str) {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let response = proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(key));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["object"], "chat.completion");
}

/// `llm-proxy whoami` with the stored login; returns stdout.
#[track_caller]
fn whoami(home: &Path) -> String {
    Cli::new(["whoami"])
        .env("HOME", home.display().to_string())
        .env(
            "LLM_PROXY_CONFIG_DIR",
            config_dir(home).display().to_string(),
        )
        .run()
        .ok()
        .to_string()
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

#[test]
fn oidc_login_creates_the_user_and_stores_a_working_key() {
    let Some(e2e) = E2e::find() else { return };
    let idp = Idp::start(&e2e, Some(CLIENT_SECRET));
    let mock = Mock::start();
    let proxy = login_proxy(&mock, Some(&idp), true);
    let home = TempDir::new("login-oidc");

    let login = e2e.login(
        Program::LlmProxy,
        &proxy,
        &Person::oidc("alice", "approved"),
        home.path(),
    );
    let stored = login.assert_approved(&proxy, Some(&idp), home.path());
    assert_eq!(stored["user_email"], "alice@example.com", "{stored}");
    assert_eq!(stored["user_role"], "internal_user", "{stored}");
    let key = stored["key"].as_str().unwrap();
    assert_key_works(&proxy, key);
    let me = whoami(home.path());
    assert!(me.contains("alice@example.com"), "{me}");
    // The key's own view of itself agrees.
    let answer = proxy.call(Req::get("/sso/cli/whoami").auth(key));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["user_email"], "alice@example.com");

    // An address the provider has not verified does not name a user.
    let home = TempDir::new("login-oidc-unverified");
    let login = e2e.login(
        Program::LlmProxy,
        &proxy,
        &Person::oidc("unverified-dan", "refused"),
        home.path(),
    );
    assert_refused(&login, &proxy, &idp, home.path());
}

#[test]
fn password_login_on_the_proxys_own_page() {
    let Some(e2e) = E2e::find() else { return };
    let mock = Mock::start();
    let proxy = login_proxy(&mock, None, false);
    let password = "correct horse battery staple";
    let created = proxy.manage(
        "POST",
        "/user/new",
        Some(
            json!({"user_email": "bob@example.com", "user_role": "internal_user",
            "password": password}),
        ),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    assert!(!created.text().contains(password), "{}", created.text());
    let person = Person::password("bob@example.com", password);
    let home = TempDir::new("login-password");

    let first = e2e.login(Program::LlmProxy, &proxy, &person, home.path());
    let stored = first.assert_approved(&proxy, None, home.path());
    assert_eq!(stored["user_email"], "bob@example.com", "{stored}");
    let first_key = stored["key"].as_str().unwrap().to_string();
    assert_key_works(&proxy, &first_key);
    assert!(whoami(home.path()).contains("bob@example.com"));

    // The same with the seed's binary.
    let second = e2e.login(Program::Dheera, &proxy, &person, home.path());
    let stored = second.assert_approved(&proxy, None, home.path());
    let second_key = stored["key"].as_str().unwrap();
    assert_ne!(second_key, first_key, "each login issues its own key");
    assert_key_works(&proxy, second_key);
}

#[test]
fn oidc_login_of_an_unknown_user_is_refused_without_auto_create() {
    let Some(e2e) = E2e::find() else { return };
    let idp = Idp::start(&e2e, Some(CLIENT_SECRET));
    let mock = Mock::start();
    let proxy = login_proxy(&mock, Some(&idp), false);
    let home = TempDir::new("login-refused");
    let login = e2e.login(
        Program::LlmProxy,
        &proxy,
        &Person::oidc("carol", "refused"),
        home.path(),
    );
    assert_refused(&login, &proxy, &idp, home.path());
}

/// The browser saw the refusal page, the CLI exited 3 with one line saying
/// the login was refused, and nothing was stored.
#[track_caller]
fn assert_refused(login: &Login, proxy: &Proxy, idp: &Idp, home: &Path) {
    let context = || login.describe(proxy, Some(idp));
    assert_eq!(login.run.code, Some(3), "{}", context());
    let report = login
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("{}", context()));
    assert_eq!(report["ok"], true, "{}", context());
    assert_eq!(report["status"], 403, "the refusal page: {}", context());
    let errors: Vec<&str> = login
        .run
        .stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", context());
    assert!(
        errors[0].to_lowercase().contains("refused"),
        "{}",
        context()
    );
    assert!(
        !config_dir(home).join("login.json").exists(),
        "a refused login stored a key: {}",
        context()
    );
}

#[test]
fn litellms_own_cli_logs_in_on_the_password_page() {
    let Some(e2e) = E2e::find() else { return };
    let Some(litellm) = litellm_cli() else { return };
    let mock = Mock::start();
    let proxy = login_proxy(&mock, None, false);
    let password = "lite-password-93b1";
    Cli::new([
        "users",
        "create",
        "--email",
        "lite@example.com",
        "--role",
        "internal_user",
        "--password",
        "-",
    ])
    .env("LLM_PROXY_URL", proxy.url())
    .env("LLM_PROXY_API_KEY", MANAGEMENT_TOKEN)
    .stdin(format!("{password}\n"))
    .run()
    .assert_code(0);
    let home = TempDir::new("login-litellm");
    let report = report_path(home.path());
    let mut command = Command::new(&litellm);
    command
        .arg("login")
        .env_remove("LITELLM_PROXY_API_KEY")
        .env("LITELLM_PROXY_URL", proxy.url())
        .env("HOME", home.path())
        // The token file, not the OS keychain, keeps the key.
        .env("LITELLM_CLI_DISABLE_KEYRING", "1")
        .env("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
        .env("BROWSER", e2e.browser_wrapper(home.path()))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in Person::password("lite@example.com", password).env(&report) {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run litellm-proxy login");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_or_kill(&mut child, Duration::from_secs(120), || {
        "litellm-proxy login".into()
    });
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let report = wait_report(&report);
    let context = format!(
        "litellm-proxy login: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}\nbrowser report: {report:?}\nproxy log:\n{}",
        proxy.log()
    );
    assert!(status.success(), "{context}");
    assert_eq!(
        report.as_ref().map(|r| r["ok"].clone()),
        Some(json!(true)),
        "{context}"
    );
    let token_file = home.path().join(".litellm/token.json");
    let stored: Value = std::fs::read_to_string(&token_file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("no {}: {context}", token_file.display()));
    let key = stored["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {stored}: {context}"));
    assert!(stdout.contains("Login successful"), "{context}");
    assert_key_works(&proxy, key);
}

/// LiteLLM's CLI, found as in tests/it/litellm_cli_compat.rs; `None` after
/// saying so (a failure when `LLM_PROXY_REQUIRE_LITELLM=1`).
fn litellm_cli() -> Option<PathBuf> {
    let found = std::env::var_os("LITELLM_PROXY_CLI")
        .map(PathBuf::from)
        .or_else(|| find_on_path("litellm-proxy"));
    if found.is_none() {
        let required = std::env::var("LLM_PROXY_REQUIRE_LITELLM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "litellm-proxy is not installed (pip install 'litellm[cli]')"
        );
        eprintln!("skipped: litellm-proxy is not installed (pip install 'litellm[cli]')");
    }
    found
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---------------------------------------------------------------------------
// The relying party alone against the real provider
// ---------------------------------------------------------------------------

/// A stand-in for the proxy's callback: records the provider's redirect,
/// then shows an approval button whose form ends the browser's run.
fn callback_page() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let redirect_uri = format!("http://{}/sso/callback", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let page = if target.starts_with("/sso/callback?") {
                let _ = tx.send(target);
                r#"<form method="post" action="/done"><button id="approve">Approve</button></form>"#
            } else {
                "<p>Approved.</p>"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    (redirect_uri, rx)
}

#[test]
fn the_relying_party_signs_in_at_a_real_provider() {
    sign_in_at_the_real_provider(Some(CLIENT_SECRET));
}

#[test]
fn the_relying_party_signs_in_as_a_public_client() {
    sign_in_at_the_real_provider(None);
}

/// oidc.rs alone (no proxy) with idp.mjs and the browser: discovery, the
/// authorization URL, the provider's sign-in pages, the callback, the code
/// exchange with `client_secret_basic` or as a public client.
fn sign_in_at_the_real_provider(secret: Option<&str>) {
    let Some(e2e) = E2e::find() else { return };
    let idp = Idp::start(&e2e, secret);
    let settings = OidcSettings {
        issuer: idp.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: secret.map(Into::into),
        scopes: "openid email".into(),
        roots: None,
    };
    let provider = oidc::discover(&settings).unwrap_or_else(|e| panic!("{e}\n{}", idp.log()));
    assert_eq!(provider.issuer, idp.issuer);
    let (redirect_uri, callbacks) = callback_page();
    let pending = oidc::Pending::new().unwrap();
    let url = oidc::authorization_url(&provider, &settings, &redirect_uri, &pending);

    let home = TempDir::new("oidc-rp");
    let report = report_path(home.path());
    let mut browser = Command::new(&e2e.node);
    browser
        .arg(e2e.script("browser.mjs"))
        .arg(&url)
        .env("HOME", home.path())
        .stdin(Stdio::null());
    for (key, value) in Person::oidc("erin", "approved").env(&report) {
        browser.env(key, value);
    }
    let mut browser = browser.spawn().expect("run browser.mjs");
    let status = wait_or_kill(&mut browser, Duration::from_secs(90), || {
        "browser.mjs".into()
    });
    let report = wait_report(&report);
    let context = || {
        format!(
            "browser: {status}, report {report:?}\nprovider log:\n{}",
            idp.log()
        )
    };
    assert!(status.success(), "{}", context());

    let target = callbacks
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("no callback: {}", context()));
    let query: Vec<(String, String)> =
        form_urlencoded::parse(target.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {target}"))
    };
    assert_eq!(param("state"), pending.state);
    assert_eq!(
        param("iss"),
        idp.issuer,
        "RFC 9207: the provider names itself"
    );
    let code = param("code");

    // The provider's ID token (RS256, its own keys) passes every check; the
    // email comes from the userinfo endpoint, as the code flow has it.
    let identity = oidc::exchange_code(&provider, &settings, &redirect_uri, &code, &pending)
        .unwrap_or_else(|e| panic!("{e}\n{}", idp.log()));
    assert_eq!(identity.subject, "erin");
    assert_eq!(identity.email.as_deref(), Some("erin@example.com"));
    assert!(identity.email_verified);

    // A code works once; the refusal says what to do and hides the code.
    let error = oidc::exchange_code(&provider, &settings, &redirect_uri, &code, &pending)
        .unwrap_err()
        .to_string();
    assert!(error.contains("invalid_grant"), "{error}");
    assert!(error.contains("start the login again"), "{error}");
    assert!(
        !error.contains(&code) && !error.contains(CLIENT_SECRET),
        "{error}"
    );
}
