//! What a new user meets first: `--version` after any command, the error of
//! a missing `--config` file, and an empty listing, against the real binaries
//! and a real server.

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
        let mut printed = String::new();
        let exports = loop {
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
        Demo {
            child,
            exports,
            _dir: dir,
        }
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
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
