//! The LiteLLM-style client commands (`models`, `credentials`, `keys`,
//! `users`, `chat`, `http`) of `llm-proxy` and `dheera_ai-proxy`, as
//! subprocesses against a recording server: the exact requests, output
//! environment and exit codes. `client_cli_output.rs` checks what they
//! print, `client_cli_server.rs` runs them against a real server.

use crate::common::cli::*;
use crate::common::*;
use serde_json::{Value, json};

/// `llm-proxy <args> --base-url URL --api-key API_KEY`.
fn llm_proxy(url: &str, args: &[&str]) -> CliRun {
    Cli::new(args.iter().copied())
        .args(["--base-url", url, "--api-key", API_KEY])
        .run()
}

struct Case {
    args: &'static [&'static str],
    answer: String,
    method: &'static str,
    target: String,
    body: Option<Value>,
}

/// Every example of the seed, with what it must send.
fn seed_examples() -> Vec<Case> {
    let case = |args, answer: String, method, target: &str, body| Case {
        args,
        answer,
        method,
        target: target.to_string(),
        body,
    };
    let list = |field: &str| json!({field: []}).to_string();
    vec![
        case(
            &["models", "list"],
            json!({"object": "list", "data": []}).to_string(),
            "GET",
            "/models",
            None,
        ),
        case(
            SEED_MODELS_ADD,
            deployment_json(MODEL_ID),
            "POST",
            "/model/new",
            Some(json!({
                "model_name": "gpt-4",
                "litellm_params": {"api_key": "sk-123", "max_tokens": 2048, "model": "gpt-4"},
            })),
        ),
        case(
            &["models", "update", MODEL_ID, "-p", "temperature=0.7"],
            deployment_json(MODEL_ID),
            "POST",
            "/model/update",
            Some(json!({
                "id": MODEL_ID, "model_info": {"id": MODEL_ID},
                "litellm_params": {"temperature": 0.7},
            })),
        ),
        case(
            &["models", "info"],
            json!({"data": []}).to_string(),
            "GET",
            "/model/info",
            None,
        ),
        case(
            &["models", "get", "--id", MODEL_ID],
            json!({"data": [{"model_name": "gpt-4", "model_info": {"id": MODEL_ID}}]}).to_string(),
            "GET",
            "/model/info",
            None,
        ),
        case(
            &["models", "delete", MODEL_ID],
            json!({"message": "deleted"}).to_string(),
            "POST",
            "/model/delete",
            Some(json!({"id": MODEL_ID})),
        ),
        case(
            &["credentials", "list"],
            list("credentials"),
            "GET",
            "/credentials",
            None,
        ),
        case(
            &[
                "credentials",
                "create",
                "azure-prod",
                "--info={\"custom_llm_provider\": \"azure\"}",
                "--values={\"api_key\": \"sk-123\", \"api_base\": \"https://prod.azure.openai.com\"}",
            ],
            json!({"credential_name": "azure-prod"}).to_string(),
            "POST",
            "/credentials",
            Some(json!({
                "credential_name": "azure-prod",
                "credential_values": {"api_key": "sk-123", "api_base": "https://prod.azure.openai.com"},
                "credential_info": {"custom_llm_provider": "azure"},
            })),
        ),
        case(
            &["credentials", "get", "azure-cred"],
            json!({"credential_name": "azure-cred", "credential_values": {"api_key": "sk-…123"}})
                .to_string(),
            "GET",
            "/credentials/by_name/azure-cred",
            None,
        ),
        case(
            &["credentials", "delete", "azure-cred"],
            json!({"message": "deleted"}).to_string(),
            "DELETE",
            "/credentials/azure-cred",
            None,
        ),
        case(
            &["keys", "list"],
            json!({"keys": [], "total_count": 0, "current_page": 1, "total_pages": 0}).to_string(),
            "GET",
            "/key/list?return_full_object=true",
            None,
        ),
        case(
            SEED_KEYS_GENERATE,
            json!({"key": NEW_KEY, "token": "ab12", "key_alias": "my-key", "max_budget": 100.0})
                .to_string(),
            "POST",
            "/key/generate",
            Some(json!({
                "models": ["gpt-4"], "max_budget": 100.0, "duration": "24h", "key_alias": "my-key",
            })),
        ),
        case(
            &[
                "keys",
                "generate",
                "--rpm-limit",
                "60",
                "--tpm-limit",
                "10000",
                "--max-parallel-requests",
                "4",
                "--budget-duration",
                "1mo",
                "--soft-budget",
                "5",
            ],
            json!({"key": NEW_KEY, "token": "ab12"}).to_string(),
            "POST",
            "/key/generate",
            Some(json!({
                "rpm_limit": 60, "tpm_limit": 10000, "max_parallel_requests": 4,
                "budget_duration": "1mo", "soft_budget": 5.0,
            })),
        ),
        case(
            &["users", "update", "--user-id", USER_ID, "--rpm-limit", "10"],
            json!({"user_id": USER_ID}).to_string(),
            "POST",
            "/user/update",
            Some(json!({"user_id": USER_ID, "rpm_limit": 10})),
        ),
        case(
            &["keys", "info", "--key", "sk-key1"],
            json!({"key": "sk-key1", "info": {"key_alias": "a"}}).to_string(),
            "GET",
            "/key/info?key=sk-key1",
            None,
        ),
        case(
            &[
                "keys",
                "delete",
                "--keys",
                "sk-key1,sk-key2",
                "--key-aliases",
                "alias1,alias2",
            ],
            json!({"deleted_keys": ["sk-key1", "sk-key2"]}).to_string(),
            "POST",
            "/key/delete",
            Some(json!({"keys": ["sk-key1", "sk-key2"], "key_aliases": ["alias1", "alias2"]})),
        ),
        case(
            &["users", "list"],
            json!({"users": [], "total": 0, "page": 1, "page_size": 25, "total_pages": 0})
                .to_string(),
            "GET",
            "/user/list",
            None,
        ),
        case(
            SEED_USERS_CREATE,
            json!({"user_id": USER_ID, "user_email": "user@example.com", "key": NEW_KEY})
                .to_string(),
            "POST",
            "/user/new",
            Some(json!({
                "user_email": "user@example.com", "user_role": "internal_user",
                "user_alias": "Alice", "teams": ["team1"], "max_budget": 100.0,
            })),
        ),
        case(
            &["users", "get", "--id", USER_ID],
            json!({"user_id": USER_ID, "user_info": {}, "keys": []}).to_string(),
            "GET",
            &format!("/user/info?user_id={USER_ID}"),
            None,
        ),
        case(
            &["users", "delete", USER_ID],
            json!({"deleted_users": [USER_ID]}).to_string(),
            "POST",
            "/user/delete",
            Some(json!({"user_ids": [USER_ID]})),
        ),
        case(
            &[
                "chat",
                "completions",
                "gpt-4",
                "-m",
                "user:Hello, how are you?",
            ],
            completion_json("Fine."),
            "POST",
            "/chat/completions",
            Some(
                json!({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello, how are you?"}]}),
            ),
        ),
        case(
            &[
                "http",
                "request",
                "POST",
                "/chat/completions",
                "--json",
                r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}"#,
            ],
            completion_json("Hi"),
            "POST",
            "/chat/completions",
            Some(json!({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]})),
        ),
    ]
}

#[test]
fn seed_examples_send_the_litellm_requests_from_both_binaries() {
    for case in seed_examples() {
        let mut seen = Vec::new();
        for run_with in [dheera_at, llm_proxy] {
            let server = RecordingServer::json(200, &case.answer);
            let run = run_with(&server.url(), case.args);
            run.ok();
            run.assert_hides(API_KEY);
            server.only_request().assert_sent(
                case.args,
                case.method,
                &case.target,
                API_KEY,
                case.body.as_ref(),
            );
            seen.push(run.stdout.clone());
        }
        assert_eq!(
            seen[0], seen[1],
            "both binaries print the same for {:?}",
            case.args
        );
    }
}

#[test]
fn options_go_before_or_after_the_command() {
    let answer = json!({"object": "list", "data": []}).to_string();
    let server = RecordingServer::json(200, &answer);
    let url = server.url();
    let runs = [
        Cli::dheera([
            "--base-url",
            &url,
            "--api-key",
            API_KEY,
            "--format",
            "json",
            "models",
            "list",
        ])
        .run(),
        Cli::dheera([
            "models",
            "--base-url",
            &url,
            "list",
            "--api-key",
            API_KEY,
            "--format",
            "json",
        ])
        .run(),
        Cli::new([
            "models",
            "list",
            "--format",
            "json",
            "--base-url",
            &url,
            "--api-key",
            API_KEY,
        ])
        .run(),
    ];
    for run in runs {
        assert_eq!(run.json(), json!({"object": "list", "data": []}));
    }
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn flag_beats_dheera_env_beats_llm_proxy_env() {
    let (flag, dheera_env, llm_env) = (
        RecordingServer::json(200, r#"{"credentials": []}"#),
        RecordingServer::json(200, r#"{"credentials": []}"#),
        RecordingServer::json(200, r#"{"credentials": []}"#),
    );
    let env = |cli: Cli| {
        cli.env("DHEERA_AI_PROXY_URL", dheera_env.url())
            .env("DHEERA_AI_PROXY_API_KEY", "sk-from-dheera-env")
            .env("LLM_PROXY_URL", llm_env.url())
            .env("LLM_PROXY_API_KEY", "sk-from-llm-env")
    };
    let programs: [fn(Vec<String>) -> Cli; 2] = [Cli::dheera, Cli::new];
    let args = |extra: &[&str]| -> Vec<String> {
        ["credentials", "list"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    for program in programs {
        env(program(args(&[]))).run().ok();
        env(program(args(&[
            "--base-url",
            &flag.url(),
            "--api-key",
            "sk-flag",
        ])))
        .run()
        .ok();
        program(args(&[]))
            .env("LLM_PROXY_URL", llm_env.url())
            .env("LLM_PROXY_API_KEY", "sk-from-llm-env")
            .env("DHEERA_AI_PROXY_URL", "")
            .run()
            .ok();
    }
    let auth = |server: &RecordingServer| -> Vec<String> {
        server
            .requests()
            .iter()
            .map(|r| r.header("authorization").unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(auth(&dheera_env), ["Bearer sk-from-dheera-env"; 2]);
    assert_eq!(auth(&flag), ["Bearer sk-flag"; 2]);
    assert_eq!(auth(&llm_env), ["Bearer sk-from-llm-env"; 2]);
}

#[test]
fn default_base_urls() {
    // Whatever listens there (most likely nothing), --debug shows where the request went.
    let run = Cli::dheera(["models", "list", "--api-key", API_KEY, "--debug"]).run();
    assert!(
        run.stderr
            .starts_with("> GET http://localhost:4000/models\n"),
        "{run:?}"
    );
    let run = Cli::new(["models", "list", "--api-key", API_KEY, "--debug"]).run();
    assert!(
        run.stderr
            .starts_with("> GET http://localhost:8080/models\n"),
        "{run:?}"
    );
}

// --- exit codes ---------------------------------------------------------------

#[test]
fn unreachable_server_exits_2() {
    let url = format!("http://{}", closed_port());
    for args in [
        &["models", "list"][..],
        &["keys", "generate"],
        &["users", "get", "--id", "x"],
    ] {
        let run = dheera_at(&url, args);
        let line = run.fails(2);
        assert!(
            line.contains(&url) && line.contains("connection refused"),
            "{line}"
        );
        run.assert_hides(API_KEY);
    }
    let line = Cli::dheera([
        "http",
        "request",
        "GET",
        "/health/readiness",
        "--base-url",
        &url,
    ])
    .run()
    .fails(2)
    .to_string();
    assert!(line.contains(&url), "{line}");
}

#[test]
fn missing_or_rejected_key_exits_3() {
    let server = RecordingServer::json(200, r#"{"keys": []}"#);
    let run = Cli::dheera(["keys", "list"])
        .env("DHEERA_AI_PROXY_URL", server.url())
        .run();
    assert_eq!(
        run.fails(3),
        "error: no API key: pass --api-key or set DHEERA_AI_PROXY_API_KEY"
    );
    let run = Cli::new(["keys", "list", "--base-url", &server.url()]).run();
    assert_eq!(
        run.fails(3),
        "error: no API key: pass --api-key or set LLM_PROXY_API_KEY"
    );
    assert!(
        server.requests().is_empty(),
        "nothing may be sent without a key"
    );

    let envelope =
        r#"{"error":{"message":"invalid API key","type":"auth_error","param":null,"code":"401"}}"#;
    let server = RecordingServer::json(401, envelope);
    let run = dheera_at(&server.url(), &["models", "list"]);
    let line = run.fails(3);
    assert!(
        line.contains("rejected the API key (401: invalid API key)"),
        "{line}"
    );
    assert!(line.contains("DHEERA_AI_PROXY_API_KEY"), "{line}");
    run.assert_hides(API_KEY);
}

#[test]
fn unknown_ids_exit_4() {
    let envelope = |what: &str| {
        json!({"error": {"message": format!("{what} not found"), "type": "not_found_error", "param": null, "code": "404"}})
            .to_string()
    };
    let cases: [(&[&str], &str); 8] = [
        (&["models", "delete", "nope"], "model \"nope\" not found"),
        (
            &["models", "update", "nope", "-p", "rpm=1"],
            "model \"nope\" not found",
        ),
        (
            &["credentials", "get", "nope"],
            "credential \"nope\" not found",
        ),
        (
            &["credentials", "delete", "nope"],
            "credential \"nope\" not found",
        ),
        (
            &["keys", "info", "--key", "sk-nope-0123456789"],
            "key sk-nope…6789 not found",
        ),
        (
            &["keys", "delete", "--key-aliases", "nope"],
            "key nope not found",
        ),
        (&["users", "get", "--id", "nope"], "user \"nope\" not found"),
        (&["users", "delete", "nope"], "user \"nope\" not found"),
    ];
    for (args, needle) in cases {
        let server = RecordingServer::json(404, &envelope("thing"));
        let run = dheera_at(&server.url(), args);
        let line = run.fails(4);
        assert!(line.starts_with(&format!("error: {needle}")), "{line}");
        assert!(
            line.contains("thing not found"),
            "the server's message: {line}"
        );
    }
    // `models get` looks the deployment up in the model info.
    let info =
        json!({"data": [{"model_name": "gpt-4", "model_info": {"id": MODEL_ID}}]}).to_string();
    let server = RecordingServer::json(200, &info);
    let line = dheera_at(&server.url(), &["models", "get", "--name", "gpt-5"])
        .fails(4)
        .to_string();
    assert_eq!(line, "error: model named \"gpt-5\" not found");
    let out = dheera_at(&server.url(), &["models", "get", "--id", MODEL_ID]).json();
    assert_eq!(out["model_name"], "gpt-4");
    // Any other failure is 1, with the server's message.
    let server = RecordingServer::json(
        400,
        &json!({"error": {"message": "key_alias taken"}}).to_string(),
    );
    let line = dheera_at(&server.url(), &["keys", "generate"])
        .fails(1)
        .to_string();
    assert!(
        line.contains("400") && line.contains("key_alias taken"),
        "{line}"
    );
}

#[test]
fn invalid_parameters_exit_1_before_sending() {
    let server = RecordingServer::json(200, "{}");
    let cases: [(&[&str], &str); 15] = [
        (
            &["credentials", "create", "c", "--values", "{oops"],
            "invalid JSON in --values",
        ),
        (
            &[
                "credentials",
                "create",
                "c",
                "--info",
                "[1]",
                "--values",
                "{\"a\":1}",
            ],
            "--info must be a JSON object",
        ),
        (
            &["models", "add", "m", "--param", "novalue"],
            "--param \"novalue\" is not KEY=VALUE",
        ),
        (&["models", "update", MODEL_ID], "nothing to update"),
        (
            &["keys", "generate", "--duration", "forever"],
            "--duration \"forever\" is not a duration",
        ),
        (
            &["keys", "generate", "--aliases", "{"],
            "invalid JSON in --aliases",
        ),
        (
            &["keys", "generate", "--budget-duration", "soon"],
            "--budget-duration \"soon\"",
        ),
        (
            &["keys", "generate", "--models", ","],
            "--models needs at least one value",
        ),
        (
            &["users", "create", "--email", "not-an-email"],
            "is not an email address",
        ),
        (
            &["chat", "completions", "gpt-4", "-m", "Hello"],
            "is not \"role:content\"",
        ),
        (
            &["chat", "completions", "gpt-4", "-m", "robot:Hi"],
            "unknown role \"robot\"",
        ),
        (
            &["http", "request", "POST", "/x", "--json", "{nope"],
            "invalid JSON in --json",
        ),
        (
            &["http", "request", "GET", "/x", "-H", "NoColon"],
            "is not a header",
        ),
        (&["http", "request", "GET", "x"], "must start with /"),
        (&["http", "request", "G E T", "/x"], "is not an HTTP method"),
    ];
    for (args, needle) in cases {
        let run = dheera_at(&server.url(), args);
        assert!(run.fails(1).contains(needle), "{needle} in {run:?}");
        // Arguments are checked before the key: the same error without one.
        let run = Cli::dheera(args.iter().copied()).run();
        assert!(run.fails(1).contains(needle), "{needle} in {run:?}");
    }
    // What clap checks (types, ranges, choices, required flags) also exits 1.
    let clap_cases: [&[&str]; 6] = [
        &["keys", "generate", "--spend", "lots"],
        &["keys", "generate", "--spend", "-5"],
        &["users", "create", "--email", "a@b.co", "--role", "god"],
        &["chat", "completions", "gpt-4"],
        &[
            "chat",
            "completions",
            "gpt-4",
            "-m",
            "user:x",
            "--temperature",
            "3",
        ],
        &["credentials", "create", "c"],
    ];
    for args in clap_cases {
        let run = dheera_at(&server.url(), args);
        run.assert_code(1);
        assert!(
            run.stdout.is_empty() && run.stderr.starts_with("error: "),
            "{run:?}"
        );
    }
    assert!(server.requests().is_empty(), "nothing may be sent");
}
