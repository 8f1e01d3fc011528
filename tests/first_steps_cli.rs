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
