//! What a new user meets first: `--version` after any command, the error of
//! a missing `--config` file, and an empty listing, against the real binaries
//! and a real server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use common::cli::*;
use common::*;

#[test]
fn version_works_after_every_command() {
    let version = env!("CARGO_PKG_VERSION");
    let cases: [(&[&str], &str); 5] = [
        (&["--version"], "llm-proxy"),
        (&["server", "--version"], "llm-proxy"),
        (&["manage", "token", "list", "--version"], "llm-proxy"),
        (&["keys", "list", "--version"], "llm-proxy"),
        (&["setup", "-V"], "llm-proxy"),
    ];
    for (args, program) in cases {
        let run = Cli::new(args.iter().copied()).run();
        assert_eq!(run.ok(), format!("{program} {version}\n"), "{args:?}");
    }
    for args in [
        &["--version"][..],
        &["keys", "list", "--version"],
        &["whoami", "-V"],
    ] {
        let run = Cli::dheera(args.iter().copied()).run();
        assert_eq!(run.ok(), format!("dheera_ai-proxy {version}\n"), "{args:?}");
    }
}

#[test]
fn a_missing_config_file_says_its_cause_once() {
    let dir = TempDir::new("missing-config");
    let missing = dir.path().join("nowhere/.env");
    for command in ["server", "dispatcher"] {
        let run = Cli::new([command, "--config", &missing.display().to_string()]).run();
        let line = run.fails(1);
        assert!(line.contains(&missing.display().to_string()), "{line}");
        assert_eq!(
            line.matches("No such file or directory").count(),
            1,
            "{command}: {line}"
        );
    }
}

#[test]
fn an_empty_key_list_says_so_without_pages() {
    let proxy = Proxy::builder().unseeded().start();
    for (args, empty) in [
        (&["keys", "list"][..], "No keys.\n"),
        (&["users", "list"][..], "No users.\n"),
    ] {
        let run = Cli::new(args.iter().copied())
            .env("LLM_PROXY_URL", proxy.url())
            .env("LLM_PROXY_API_KEY", MANAGEMENT_TOKEN)
            .run();
        assert_eq!(run.ok(), empty, "{args:?}");
    }
}

/// `llm-proxy server --demo` with stdout captured: the management token it
/// prints, in the `export` line it prints.
struct Demo {
    child: std::process::Child,
    /// The variables of the printed `export` line.
    exports: Vec<(String, String)>,
    _dir: TempDir,
}

impl Demo {
    fn start() -> Demo {
        use std::io::BufRead;
        let dir = TempDir::new("demo");
        let mut child = std::process::Command::new(bin())
            .args([
                "server",
                "--demo",
                "--addr",
                "127.0.0.1:0",
                "--workers",
                "2",
            ])
            .current_dir(dir.path())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn llm-proxy server --demo");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Stopped on drop from here on, even if no export line comes.
        let mut demo = Demo {
            child,
            exports: Vec::new(),
            _dir: dir,
        };
        let mut printed = String::new();
        demo.exports = loop {
            let line = received
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no export line from the demo; it printed:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
            if let Some(rest) = line.trim().strip_prefix("export ") {
                break rest
                    .split_whitespace()
                    .map(|pair| {
                        let (name, value) = pair.split_once('=').expect("NAME=value");
                        (name.to_string(), value.to_string())
                    })
                    .collect::<Vec<_>>();
            }
        };
        demo
    }

    fn export(&self, name: &str) -> &str {
        self.exports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} not in the export line: {:?}", self.exports))
    }

    /// `llm-proxy <args>` with the printed variables, as after pasting the line.
    fn run(&self, args: &[&str]) -> CliRun {
        let mut cli = Cli::new(args.iter().copied());
        for (name, value) in &self.exports {
            cli = cli.env(name, value.clone());
        }
        cli.run()
    }
}

impl Drop for Demo {
    /// SIGTERM, so that the demo removes its temporary store; SIGKILL if it
    /// has not exited after that.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let stopped = wait_until(std::time::Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The quick start: `server --demo`, then the management commands of the
/// README and the LiteLLM-style client, with the token the demo prints.
#[test]
fn the_demo_prints_a_management_token_that_the_commands_work_with() {
    let demo = Demo::start();
    let token = demo.export("MANAGEMENT_TOKEN");
    assert!(token.len() >= 16, "{token}");
    assert_eq!(demo.export("LLM_PROXY_API_KEY"), token);

    let projects = demo.run(&["manage", "project", "list", "--json"]).json();
    let project = &projects[0];
    assert_eq!(project["name"], "demo", "{projects}");
    let project_id = project["id"].as_str().unwrap();
    let generated = demo
        .run(&[
            "manage",
            "token",
            "generate",
            "--project-id",
            project_id,
            "--json",
        ])
        .json();
    assert!(generated["token"].as_str().is_some(), "{generated}");
    let tokens = demo.run(&["manage", "token", "list", "--json"]).json();
    assert_eq!(tokens.as_array().map(Vec::len), Some(2), "{tokens}");

    let key = demo
        .run(&["keys", "generate", "--key-alias", "mine"])
        .json();
    assert!(
        key["key"].as_str().is_some_and(|k| k.starts_with("sk-")),
        "{key}"
    );
    let keys = demo.run(&["keys", "list", "--format", "json"]).json();
    assert_eq!(keys["total_count"], 3, "{keys}");
    demo.run(&["models", "list"]).ok();
    let users = demo.run(&["users", "list", "--format", "json"]).json();
    assert!(users["users"].is_array(), "{users}");
}

/// `llm-proxy <args>` against `proxy` with the master key, `COLUMNS` set
/// when `columns` is.
fn listing(proxy: &Proxy, args: &[&str], columns: Option<u16>) -> String {
    let mut cli = Cli::new(args.iter().copied())
        .env("MANAGE_API_BASE_URL", proxy.url())
        .env("MANAGEMENT_TOKEN", MANAGEMENT_TOKEN)
        .env("LLM_PROXY_URL", proxy.url())
        .env("LLM_PROXY_API_KEY", MANAGEMENT_TOKEN);
    if let Some(columns) = columns {
        cli = cli.env("COLUMNS", columns.to_string());
    }
    cli.run().ok().to_string()
}

fn widest(text: &str) -> usize {
    text.lines()
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0)
}

/// Every table of the manage and client listings fits `COLUMNS` (columns
/// left out by priority, the rest wrapped, ids whole); `--wide`, or output
/// that is not a terminal, has every column on one line a row.
#[test]
fn tables_fit_the_terminal_width_and_wide_shows_every_column() {
    let proxy = Proxy::builder().start();
    for _ in 0..2 {
        proxy.create_token(serde_json::json!({"max_requests": 1000}));
    }
    let mut tokens = Vec::new();
    for token in proxy
        .manage("GET", "/manage/tokens", None)
        .json()
        .as_array()
        .unwrap()
    {
        tokens.push(token["id"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), 3);
    let setup: [&[&str]; 4] = [
        &[
            "keys",
            "generate",
            "--key-alias",
            "a-key-with-a-long-alias",
            "--models",
            "gpt-4o,gpt-4o-mini,o3-mini",
        ],
        &[
            "users",
            "create",
            "--email",
            "someone.with.a.long.name@example.com",
            "--alias",
            "Someone",
        ],
        &[
            "credentials",
            "create",
            "azure-westeurope-production",
            "--info",
            r#"{"custom_llm_provider": "azure", "region": "westeurope", "tier": "production"}"#,
            "--values",
            r#"{"api_key": "sk-azure-0123456789abcdef", "api_base": "https://westeurope.example.com"}"#,
        ],
        &[
            "models",
            "add",
            "gpt-4o",
            "-p",
            "api_base=http://127.0.0.1:9/v1",
            "-p",
            "api_key=sk-0123456789",
        ],
    ];
    for args in setup {
        listing(&proxy, args, None);
    }

    let listings: [(&[&str], &[&str]); 7] = [
        (
            &["manage", "token", "list"],
            &[
                "ID",
                "TOKEN",
                "PROJECT",
                "ACTIVE",
                "REQUESTS",
                "EXPIRES",
                "LAST USED",
            ],
        ),
        (
            &["manage", "project", "list"],
            &["ID", "NAME", "OPENAI KEY", "ACTIVE", "CREATED"],
        ),
        (
            &["manage", "audit", "list"],
            &[
                "ID", "AT", "ACTOR", "FROM", "METHOD", "TARGET", "STATUS", "OUTCOME",
            ],
        ),
        (
            &["keys", "list"],
            &[
                "KEY HASH", "ALIAS", "USER", "TEAM", "MODELS", "SPEND", "EXPIRES",
            ],
        ),
        (
            &["users", "list"],
            &["USER ID", "EMAIL", "ROLE", "ALIAS", "TEAMS", "SPEND"],
        ),
        (
            &["credentials", "list"],
            &["NAME", "PROVIDER", "INFO", "VALUES (MASKED)"],
        ),
        (
            &["models", "list"],
            &["ID", "OBJECT", "CREATED", "OWNED BY"],
        ),
    ];
    for (args, headers) in listings {
        let narrow = listing(&proxy, args, Some(80));
        assert!(widest(&narrow) <= 80, "{args:?} at 80 columns:\n{narrow}");
        for (wide, columns) in [
            (
                listing(&proxy, &[args, &["--wide"]].concat(), Some(80)),
                "--wide",
            ),
            (listing(&proxy, args, None), "no COLUMNS, not a terminal"),
        ] {
            let header = wide.lines().find(|line| line.contains(headers[0])).unwrap();
            for name in headers {
                assert!(
                    header.contains(name),
                    "{args:?}, {columns}: {name} in\n{wide}"
                );
            }
            assert!(
                !wide.contains("hidden to fit"),
                "{args:?}, {columns}:\n{wide}"
            );
        }
    }

    let narrow = listing(&proxy, &["manage", "token", "list"], Some(80));
    for id in &tokens {
        assert!(narrow.contains(id.as_str()), "{id} whole in\n{narrow}");
    }
    assert!(narrow.contains("hidden to fit: PROJECT"), "{narrow}");
    assert!(narrow.contains("(--wide shows them)"), "{narrow}");
    let roomy = listing(&proxy, &["manage", "token", "list"], Some(250));
    assert!(!roomy.contains("hidden to fit"), "{roomy}");
    // Not a terminal and no COLUMNS: one line a token, nothing wrapped.
    let piped = listing(&proxy, &["manage", "token", "list"], None);
    for id in &tokens {
        let line = piped
            .lines()
            .find(|line| line.contains(id.as_str()))
            .unwrap();
        assert!(line.contains(&proxy.project_id), "{line}");
    }
}
