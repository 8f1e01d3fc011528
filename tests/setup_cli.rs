//! `llm-proxy setup`: the .env it writes, the store it initialises, and the
//! token it prints, used end to end by a server that reads that .env.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::cli::Cli;
use common::pty::Pty;
use common::*;

fn env_value(env_file: &str, key: &str) -> Option<String> {
    env_file
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('\'').to_string())
}

fn printed_token(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Token: "))
        .unwrap_or_else(|| panic!("no token in {stdout}"))
        .trim()
        .to_string()
}

#[test]
fn setup_then_server_then_a_chat_completion_with_the_printed_token() {
    let mock = Mock::builder().args(["--api-key", UPSTREAM_KEY]).start();
    let dir = TempDir::new("setup");
    let db = dir.path().join("store");
    let run = Cli::new([
        "setup",
        "--openai-key",
        UPSTREAM_KEY,
        "--project",
        "My Project",
    ])
    .args(["--duration", "2", "--db"])
    .arg(db.display().to_string())
    .run_in(dir.path());
    let stdout = run.ok().to_string();
    let token = printed_token(&stdout);
    assert!(token.starts_with("sk-") && token.len() >= 40, "{token}");
    assert_eq!(
        stdout.matches(&token).count(),
        1,
        "the token is printed once"
    );

    let env_path = dir.path().join(".env");
    let mode = std::fs::metadata(&env_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the .env holds secrets");
    let env_file = std::fs::read_to_string(&env_path).unwrap();
    assert_eq!(
        env_value(&env_file, "OPENAI_API_KEY").as_deref(),
        Some(UPSTREAM_KEY)
    );
    let management = env_value(&env_file, "MANAGEMENT_TOKEN").expect("a management token");
    assert!(
        management.len() >= 40,
        "a strong generated token: {management}"
    );
    assert_eq!(
        env_value(&env_file, "DATABASE_PATH"),
        Some(db.display().to_string())
    );
    assert!(
        !env_file.contains(&token),
        "the client token is not written anywhere"
    );
    assert!(
        !stdout.contains(&management),
        "the management token is not printed"
    );

    // `server --config .env` reads the management token and the store from it.
    let proxy = Proxy::builder()
        .unseeded()
        .env_remove("MANAGEMENT_TOKEN")
        .upstream(mock.url())
        .arg("--config")
        .arg(env_path.display().to_string())
        .start();
    let response =
        proxy.call(Req::post("/v1/chat/completions", chat_body(false, "hi")).auth(&token));
    assert_eq!(response.status, 200, "{}", response.text());
    let projects = proxy.call(Req::get("/manage/projects").auth(&management));
    assert_eq!(projects.status, 200, "{}", projects.text());
    assert_eq!(projects.json()[0]["name"], "My Project");
    let tokens = proxy
        .call(Req::get("/manage/tokens").auth(&management))
        .json();
    let expires = tokens[0]["expires_at"].as_str().unwrap().to_string();
    assert!(!expires.is_empty());
}

#[test]
fn rerunning_keeps_the_management_token_and_other_lines() {
    let dir = TempDir::new("setup-rerun");
    dir.write(".env", "# mine\nLOG_LEVEL=debug\n");
    Cli::new(["setup", "--skip-project"])
        .run_in(dir.path())
        .ok();
    let first = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    let token = env_value(&first, "MANAGEMENT_TOKEN").unwrap();
    assert!(first.contains("# mine\nLOG_LEVEL=debug\n"), "{first}");

    let run = Cli::new(["setup", "--skip-project"]).run_in(dir.path());
    run.ok();
    assert!(!run.stdout.contains("Generated"), "{}", run.stdout);
    let second = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert_eq!(env_value(&second, "MANAGEMENT_TOKEN"), Some(token));
    assert!(second.contains("LOG_LEVEL=debug"));
    assert!(
        dir.path().join("data").join("data.mdb").exists(),
        "store initialised"
    );

    // A token given on the command line replaces it.
    Cli::new([
        "setup",
        "--skip-project",
        "--management-token",
        "mt-chosen-0123456789",
    ])
    .run_in(dir.path())
    .ok();
    let third = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert_eq!(
        env_value(&third, "MANAGEMENT_TOKEN").as_deref(),
        Some("mt-chosen-0123456789")
    );
}

#[test]
fn skip_project_creates_no_project_and_prints_no_token() {
    let dir = TempDir::new("setup-skip");
    let run =
        Cli::new(["setup", "--skip-project", "--openai-key", "sk-x-1234567890"]).run_in(dir.path());
    let stdout = run.ok();
    assert!(!stdout.contains("Token:"), "{stdout}");
    let env_file = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    let management = env_value(&env_file, "MANAGEMENT_TOKEN").unwrap();
    let proxy = Proxy::builder()
        .unseeded()
        .env("MANAGEMENT_TOKEN", management.clone())
        .arg("--db")
        .arg(dir.path().join("data").display().to_string())
        .start();
    let projects = proxy.call(Req::get("/manage/projects").auth(&management));
    assert_eq!(projects.json(), serde_json::json!([]));
}

#[test]
fn a_second_token_for_an_existing_project() {
    let dir = TempDir::new("setup-twice");
    let args = ["setup", "--openai-key", "sk-x-1234567890", "--project", "P"];
    let first = printed_token(Cli::new(args).run_in(dir.path()).ok());
    let run = Cli::new(args).run_in(dir.path());
    let second = printed_token(run.ok());
    assert_ne!(first, second);
    assert!(run.stdout.contains("exists already"), "{}", run.stdout);
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let dir = TempDir::new("setup-bad");
    let cases: [(&[&str], &str); 7] = [
        (&["setup"], "--openai-key"),
        (
            &["setup", "--skip-project", "--management-token", " "],
            "management token is empty",
        ),
        (
            &["setup", "--skip-project", "--addr", "localhost"],
            "--addr \"localhost\" is not host:port or :port",
        ),
        (
            &["setup", "--skip-project", "--addr", "localhost:http"],
            "--addr",
        ),
        (&["setup", "--skip-project", "--addr", "8080"], "--addr"),
        (
            &[
                "setup",
                "--openai-key",
                "sk-x-1234567890",
                "--duration",
                "0",
            ],
            "--duration",
        ),
        (&["setup", "--interactive"], "terminal"),
    ];
    for (args, needle) in cases {
        let run = Cli::new(args.iter().copied()).run_in(dir.path());
        let stderr = run.fails(1);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    assert!(
        !dir.path().join(".env").exists(),
        "nothing written on bad input"
    );
}

/// The seed's own examples: a short management token is taken, with one
/// line of warning, by `setup` (flag and environment) and by the server,
/// which then answers to it.
#[test]
fn a_short_management_token_is_taken_with_a_warning() {
    let dir = TempDir::new("setup-short-token");
    let run =
        Cli::new(["setup", "--skip-project", "--management-token", "token"]).run_in(dir.path());
    run.ok();
    let warning = run.stderr.trim();
    assert!(
        warning.starts_with("warning: ") && !warning.contains('\n') && warning.contains("16"),
        "{:?}",
        run.stderr
    );
    let env_file = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert_eq!(
        env_value(&env_file, "MANAGEMENT_TOKEN").as_deref(),
        Some("token")
    );

    let dir = TempDir::new("setup-short-token-env");
    let run = Cli::new(["setup", "--skip-project", "--addr", ":9090"])
        .env("MANAGEMENT_TOKEN", "your-token")
        .run_in(dir.path());
    run.ok();
    assert_eq!(run.stderr.trim().lines().count(), 1, "{:?}", run.stderr);
    let env_file = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert_eq!(
        env_value(&env_file, "MANAGEMENT_TOKEN").as_deref(),
        Some("your-token")
    );
    assert_eq!(
        env_value(&env_file, "LISTEN_ADDR").as_deref(),
        Some(":9090")
    );

    let proxy = Proxy::builder()
        .unseeded()
        .env("MANAGEMENT_TOKEN", "your-token")
        .start();
    let log = proxy.log();
    let warnings = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("MANAGEMENT_TOKEN has only"))
        .count();
    assert_eq!(warnings, 1, "{log}");
    assert!(
        !log.contains("your-token"),
        "the token is not logged:\n{log}"
    );
    let response = proxy.call(Req::get("/manage/projects").auth("your-token"));
    assert_eq!(response.status, 200, "{}", response.text());
}

/// `--interactive` on a real terminal (a pty from `script`): each answer is
/// typed once its prompt has appeared.
#[test]
fn interactive_setup_asks_for_what_the_flags_did_not_give() {
    let dir = TempDir::new("setup-interactive");
    let mut pty = Pty::spawn(&["setup", "--interactive"], dir.path(), "dumb", None);
    let answers = [
        ("OpenAI API key", "sk-typed-in-key-123\r"),
        ("Management token", "\r"),
        ("Create a project", "y"),
        ("Project name", "Typed Project\r"),
        ("Token lifetime", "5\r"),
    ];
    for (prompt, answer) in answers {
        pty.expect(prompt);
        pty.send(answer);
    }
    let status = pty.wait_exit(Duration::from_secs(20));
    let text = pty.output();
    assert!(status.success(), "{text}");
    assert!(text.contains("Created project \"Typed Project\""), "{text}");
    assert!(text.contains("expires in 5 h"), "{text}");
    assert!(
        !text.contains("sk-typed-in-key-123"),
        "the key is not echoed: {text}"
    );
    let env_file = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert_eq!(
        env_value(&env_file, "OPENAI_API_KEY").as_deref(),
        Some("sk-typed-in-key-123")
    );
    assert!(env_value(&env_file, "MANAGEMENT_TOKEN").is_some_and(|t| t.len() >= 40));
}
