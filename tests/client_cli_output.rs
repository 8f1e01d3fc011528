//! What the LiteLLM-style client commands print: tables and JSON, chat
//! answers and HTTP bodies, `--debug` traces with secrets redacted, and
//! `--help` with the seed's flags. Against a recording server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use common::cli::*;
use serde_json::{Value, json};

#[test]
fn listings_are_tables_or_json() {
    let models = json!({"object": "list", "data": [
        {"id": "gpt-4", "object": "model", "created": 1_700_000_000, "owned_by": "openai"},
    ]});
    let keys = json!({"keys": [{
        "token": "5f1e9c", "key_alias": "my-key", "user_id": USER_ID, "team_id": null,
        "models": ["gpt-4", "gpt-4o"], "spend": 1.25, "max_budget": 100.0, "expires": null,
    }], "total_count": 3, "current_page": 1, "total_pages": 2});
    let users = json!({"users": [{
        "user_id": USER_ID, "user_email": "user@example.com", "user_role": "internal_user",
        "user_alias": "Alice", "teams": ["team1"], "spend": 0, "max_budget": 100.0,
    }], "total": 1, "page": 1, "page_size": 25, "total_pages": 1});
    let credentials = json!({"credentials": [{
        "credential_name": "azure-prod", "credential_info": {"custom_llm_provider": "azure"},
        "credential_values": {"api_key": "sk-…1234"},
    }]});
    let info = json!({"data": [{
        "model_name": "gpt-4", "litellm_params": {"model": "openai/gpt-4", "api_base": "http://up"},
        "model_info": {"id": MODEL_ID, "updated_at": "2025-03-01T10:00:00.123Z"},
    }]});
    let cases: [(&[&str], &Value, &[&str]); 5] = [
        (
            &["models", "list"],
            &models,
            &["gpt-4", "openai", "2023-11-14T22:13:20Z"],
        ),
        (
            &["keys", "list"],
            &keys,
            &[
                "Showing 1 of 3 keys (page 1 of 2)",
                "5f1e9c",
                "my-key",
                "gpt-4, gpt-4o",
                "$1.25 / $100",
                "never",
            ],
        ),
        (
            &["users", "list"],
            &users,
            &[
                "Showing 1 of 1 users",
                USER_ID,
                "user@example.com",
                "internal_user",
                "Alice",
                "team1",
            ],
        ),
        (
            &["credentials", "list"],
            &credentials,
            &["azure-prod", "azure", "api_key: sk-…1234"],
        ),
        (
            &["models", "info"],
            &info,
            &[MODEL_ID, "gpt-4", "openai/gpt-4", "2025-03-01T10:00:00Z"],
        ),
    ];
    for (args, answer, needles) in cases {
        let server = RecordingServer::json(200, &answer.to_string());
        let table = dheera_at(&server.url(), args).ok().to_string();
        for needle in needles {
            assert!(table.contains(needle), "{needle} in `{args:?}`:\n{table}");
        }
        assert!(table.contains('│'), "a table:\n{table}");
        let json = dheera_at(&server.url(), &[args, &["--format", "json"]].concat()).json();
        assert_eq!(&json, answer);
    }
    let server = RecordingServer::json(200, r#"{"object": "list", "data": []}"#);
    assert_eq!(
        dheera_at(&server.url(), &["models", "list"]).ok(),
        "No models.\n"
    );
    let out = dheera_at(
        &server.url(),
        &["models", "info", "--columns", "id,api_base"],
    )
    .ok()
    .to_string();
    assert_eq!(out, "No models.\n");
    let run = dheera_at(&server.url(), &["models", "info", "--columns", "id,colour"]);
    run.assert_code(1);
}

#[test]
fn single_objects_are_json_or_field_tables() {
    let answer =
        json!({"key": NEW_KEY, "token": "ab12", "key_alias": "my-key", "max_budget": 100.0});
    let server = RecordingServer::json(200, &answer.to_string());
    assert_eq!(
        dheera_at(&server.url(), &["keys", "generate"]).json(),
        answer
    );
    let table = dheera_at(&server.url(), &["keys", "generate", "--format", "table"])
        .ok()
        .to_string();
    assert!(
        table.starts_with(&format!("Key: {NEW_KEY}  (shown once; store it now)\n")),
        "{table}"
    );
    assert_eq!(table.matches(NEW_KEY).count(), 1);
    for needle in ["key_alias", "my-key", "max_budget", "100.0"] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
    let server = RecordingServer::json(200, &deployment_json(MODEL_ID));
    let table = dheera_at(
        &server.url(),
        &["models", "add", "gpt-4", "--format", "table"],
    )
    .ok()
    .to_string();
    for needle in [
        "litellm_params.max_tokens",
        "2048",
        "model_info.id",
        MODEL_ID,
    ] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
}

#[test]
fn chat_prints_the_answer_and_http_the_body() {
    let server = RecordingServer::json(200, &completion_json("Once upon a time."));
    let out = dheera_at(
        &server.url(),
        &["chat", "completions", "gpt-4", "-m", "user:Write a story"],
    );
    assert_eq!(out.ok(), "Once upon a time.\n");
    let full = dheera_at(
        &server.url(),
        &[
            "chat",
            "completions",
            "gpt-4",
            "-m",
            "user:x",
            "--format",
            "json",
        ],
    )
    .json();
    assert_eq!(full["usage"]["total_tokens"], 7);
    let body = dheera_at(&server.url(), &["http", "request", "get", "/v1/models"]).json();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Once upon a time."
    );
    let request = server.requests().pop().unwrap();
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("GET", "/v1/models")
    );

    let server = RecordingServer::raw(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    );
    let run = Cli::dheera([
        "http",
        "request",
        "POST",
        "/x?y=1",
        "--data",
        "a=1",
        "-H",
        "X-Trace: 7",
    ])
    .env("DHEERA_AI_PROXY_URL", server.url())
    .run();
    assert_eq!(run.ok(), "ok\n");
    let request = server.only_request();
    assert_eq!(request.target, "/x?y=1");
    assert_eq!(request.body, b"a=1");
    assert_eq!(request.header("x-trace"), Some("7"));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.header("authorization"), None, "no key, none sent");
}

#[test]
fn debug_shows_exchanges_with_secrets_redacted() {
    let answer = json!({"key": NEW_KEY, "token": "ab12", "key_alias": "my-key"});
    let server = RecordingServer::json(200, &answer.to_string());
    let run = dheera_at(
        &server.url(),
        &[
            "--debug",
            "keys",
            "generate",
            "--key-alias",
            "my-key",
            "--metadata",
            r#"{"api_key": "sk-upstream-0000"}"#,
        ],
    );
    assert_eq!(
        run.json(),
        answer,
        "stdout keeps the secret: it is the point"
    );
    let err = &run.stderr;
    for needle in [
        "> POST http://",
        "/key/generate",
        "> Authorization: Bearer [redacted]",
        r#""key_alias":"my-key""#,
        "< 200",
        r#""key":"[redacted]""#,
    ] {
        assert!(err.contains(needle), "{needle} in\n{err}");
    }
    for secret in [API_KEY, NEW_KEY, "sk-upstream-0000"] {
        assert!(!err.contains(secret), "{secret} leaked into\n{err}");
    }
    let server = RecordingServer::json(200, r#"{"key": "sk-key1", "info": {}}"#);
    let run = dheera_at(
        &server.url(),
        &["keys", "info", "--key", "sk-key1-secret", "--debug"],
    );
    run.ok();
    assert!(
        run.stderr.contains("/key/info?key=[redacted]"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("sk-key1"), "{}", run.stderr);
}

#[test]
fn help_shows_the_seed_flags() {
    let top = Cli::dheera(["--help"]).run().ok().to_string();
    for needle in [
        "models",
        "credentials",
        "keys",
        "users",
        "chat",
        "http",
        "--base-url",
        "--api-key",
        "--debug",
    ] {
        assert!(top.contains(needle), "{needle} in\n{top}");
    }
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["models", "add"],
            &["--param", "-p", "--info", "<MODEL_NAME>"],
        ),
        (&["models", "update"], &["-p", "<MODEL_ID>"]),
        (&["credentials", "create"], &["--info", "--values"]),
        (
            &["keys", "generate"],
            &[
                "--models",
                "--spend",
                "--max-budget",
                "--duration",
                "--key-alias",
            ],
        ),
        (&["keys", "delete"], &["--keys", "--key-aliases"]),
        (
            &["users", "create"],
            &["--email", "--role", "--alias", "--team", "--max-budget"],
        ),
        (
            &["http", "request"],
            &["<METHOD>", "<PATH>", "--json", "--data", "-H"],
        ),
    ];
    for (path, flags) in cases {
        for cli in [
            Cli::dheera(path.iter().copied()),
            Cli::new(path.iter().copied()),
        ] {
            let out = cli.arg("--help").run().ok().to_string();
            for flag in flags {
                assert!(out.contains(flag), "{path:?} --help lacks {flag}:\n{out}");
            }
            assert!(out.contains("--format"), "{out}");
        }
    }
    let version = Cli::dheera(["--version"]).run().ok().to_string();
    assert!(version.starts_with("dheera_ai-proxy "), "{version}");
}
