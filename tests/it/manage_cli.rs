//! `llm-proxy manage`: the real binary as a subprocess against a recording
//! server (exact requests, output formats, exit codes) and against a real
//! `llm-proxy server` (whole project and token lifecycles).

use crate::common::cli::*;
use crate::common::*;
use serde_json::{Value, json};

/// The management token of every test server (the harness' own); must
/// never be printed.
const MT: &str = MANAGEMENT_TOKEN;
/// A project's upstream key given at creation; shown obfuscated afterwards.
const PROJECT_KEY: &str = "sk-project-upstream-3a8c7e1f4b2d";
const NEW_PROJECT_KEY: &str = "sk-project-rotated-9d4e2b7c1a6f";

const PROJECT_ID: &str = "123e4567-e89b-12d3-a456-426614174000";
const TOKEN_ID: &str = "9b2f0c3e-1d4a-4e8b-9c7f-2a5d6e8f1b3c";

/// `manage <args> --manage-api-base-url <url> --management-token MT`.
fn manage(url: &str, args: &[&str]) -> CliRun {
    Cli::manage(args.iter().copied())
        .args(["--manage-api-base-url", url, "--management-token", MT])
        .run()
}

/// Same, with the URL and token from the environment instead of flags.
fn manage_env(url: &str, args: &[&str]) -> CliRun {
    Cli::manage(args.iter().copied())
        .env("MANAGE_API_BASE_URL", url)
        .env("MANAGEMENT_TOKEN", MT)
        .run()
}

fn project_json(id: &str, name: &str) -> String {
    json!({
        "id": id, "name": name, "openai_api_key": "sk-pr…2b4d", "is_active": true,
        "created_at": "2025-03-01T10:00:00.123456Z", "updated_at": "2025-03-01T10:00:00Z",
        "deactivated_at": null,
    })
    .to_string()
}

fn token_json(id: &str, secret: &str) -> String {
    json!({
        "id": id, "token": secret, "project_id": PROJECT_ID, "alias": null,
        "expires_at": "2025-03-02T10:00:00Z", "is_active": true, "request_count": 0,
        "max_requests": null, "created_at": "2025-03-01T10:00:00Z", "last_used_at": null,
    })
    .to_string()
}

// --- without a management API ------------------------------------------------

#[test]
fn unreachable_server_exits_2_naming_the_url() {
    let url = format!("http://{}", closed_port());
    let commands: [&[&str]; 4] = [
        &["project", "list"],
        &["project", "create", "--name", "P", "--openai-key", "sk-k"],
        &["token", "generate", "--project-id", PROJECT_ID],
        &["token", "revoke", TOKEN_ID],
    ];
    for args in commands {
        for run in [manage(&url, args), manage_env(&url, args)] {
            let line = run.fails(2);
            assert!(line.contains(&url), "{line}");
            assert!(line.contains("connection refused"), "{line}");
            assert!(line.contains("llm-proxy server"), "{line}");
            run.assert_hides(MT);
        }
    }
    // The global flags also work before the subcommand.
    let run = Cli::manage(["--manage-api-base-url", &url, "--json", "project", "list"])
        .env("MANAGEMENT_TOKEN", MT)
        .run();
    assert!(run.fails(2).contains(&url));
}

#[test]
fn missing_management_token_exits_3() {
    let server = RecordingServer::json(200, "[]");
    let expected = "error: no management token: pass --management-token or set MANAGEMENT_TOKEN";
    let runs = [
        Cli::manage(["project", "list", "--manage-api-base-url", &server.url()]).run(),
        Cli::manage(["token", "list"])
            .env("MANAGE_API_BASE_URL", server.url())
            .env("MANAGEMENT_TOKEN", "")
            .run(),
        Cli::manage(["token", "revoke", TOKEN_ID, "--management-token", ""])
            .env("MANAGE_API_BASE_URL", server.url())
            .run(),
    ];
    for run in runs {
        assert_eq!(run.fails(3), expected);
    }
    // Even with nothing listening: the token is checked first.
    let url = format!("http://{}", closed_port());
    let run = Cli::manage(["project", "list", "--manage-api-base-url", &url]).run();
    assert_eq!(run.fails(3), expected);
    assert!(server.requests().is_empty(), "nothing may be sent");
}

#[test]
fn project_update_without_fields_exits_1() {
    let server = RecordingServer::json(200, &project_json(PROJECT_ID, "P"));
    let run = manage(&server.url(), &["project", "update", PROJECT_ID]);
    let line = run.fails(1);
    assert!(
        line.contains("--name") && line.contains("--openai-key"),
        "{line}"
    );
    run.assert_hides(MT);
    // Also without a token: arguments are checked first.
    let run = Cli::manage(["project", "update", PROJECT_ID]).run();
    assert!(run.fails(1).contains("--name"));
    assert!(server.requests().is_empty(), "nothing may be sent");
}

#[test]
fn bad_arguments_exit_1() {
    let server = RecordingServer::json(200, "[]");
    let url = server.url();
    let cases: [(&[&str], &str); 6] = [
        (&["project", "create", "--name", "P"], "--openai-key"),
        (&["project", "create", "--openai-key", "sk-k"], "--name"),
        (&["project", "get"], "project-id"),
        (&["token", "generate"], "--project-id"),
        (
            &[
                "token",
                "generate",
                "--project-id",
                PROJECT_ID,
                "--duration",
                "soon",
            ],
            "--duration",
        ),
        (&["token", "frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let run = manage(&url, args);
        run.assert_code(1);
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(run.stderr.contains(needle), "{needle} in {run:?}");
        run.assert_hides(MT);
    }
    for bad in ["localhost:8080", "ftp://localhost"] {
        let line = manage(bad, &["project", "list"]).fails(1).to_string();
        assert!(line.contains("--manage-api-base-url"), "{line}");
    }
    assert!(server.requests().is_empty(), "nothing may be sent");
}

#[test]
fn help_lists_the_seed_flags() {
    const GLOBAL: [&str; 3] = ["--manage-api-base-url", "--management-token", "--json"];
    let cases: [(&[&str], &[&str]); 11] = [
        (&[], &["project", "token", "http://localhost:8080"]),
        (&["project"], &["list", "get", "create", "update", "delete"]),
        (&["token"], &["list", "get", "generate", "revoke"]),
        (&["project", "list"], &[]),
        (&["project", "get"], &["<project-id>"]),
        (&["project", "create"], &["--name", "--openai-key"]),
        (
            &["project", "update"],
            &["<project-id>", "--name", "--openai-key"],
        ),
        (&["project", "delete"], &["<project-id>"]),
        (&["token", "list"], &["--project-id", "--active-only"]),
        (
            &["token", "generate"],
            &[
                "--project-id",
                "--duration",
                "[default: 24]",
                "--max-requests",
                "[default: 0]",
            ],
        ),
        (&["token", "revoke"], &["<token-id>"]),
    ];
    for (path, flags) in cases {
        let run = Cli::manage(path.iter().copied())
            .arg("--help")
            .env("MANAGEMENT_TOKEN", MT)
            .run();
        let out = run.ok();
        for flag in GLOBAL.iter().chain(flags) {
            assert!(
                out.contains(flag),
                "`manage {path:?} --help` lacks {flag}:\n{out}"
            );
        }
        run.assert_hides(MT);
    }
    let out = Cli::manage(["token", "get", "--help"])
        .run()
        .ok()
        .to_string();
    assert!(out.contains("<token-id>"), "{out}");
}

// --- against a recording server ----------------------------------------------

#[test]
fn requests_follow_the_management_api() {
    struct Case {
        args: &'static [&'static str],
        answer: (u16, String),
        method: &'static str,
        target: &'static str,
        body: Option<Value>,
    }
    let project = || (200, project_json(PROJECT_ID, "My AI Project"));
    let token = || (201, token_json(TOKEN_ID, "sk-abcd…wxyz"));
    let cases = [
        Case {
            args: &["project", "list"],
            answer: (200, "[]".into()),
            method: "GET",
            target: "/manage/projects",
            body: None,
        },
        Case {
            args: &["project", "get", PROJECT_ID],
            answer: project(),
            method: "GET",
            target: "/manage/projects/123e4567-e89b-12d3-a456-426614174000",
            body: None,
        },
        Case {
            args: &[
                "project",
                "create",
                "--name",
                "My AI Project",
                "--openai-key",
                "sk-your-openai-api-key",
            ],
            answer: (201, project_json(PROJECT_ID, "My AI Project")),
            method: "POST",
            target: "/manage/projects",
            body: Some(
                json!({"name": "My AI Project", "openai_api_key": "sk-your-openai-api-key"}),
            ),
        },
        Case {
            args: &["project", "update", PROJECT_ID, "--name", "Updated"],
            answer: project(),
            method: "PATCH",
            target: "/manage/projects/123e4567-e89b-12d3-a456-426614174000",
            body: Some(json!({"name": "Updated"})),
        },
        Case {
            args: &["project", "update", "a/b c", "--openai-key", "sk-new"],
            answer: project(),
            method: "PATCH",
            target: "/manage/projects/a%2Fb%20c",
            body: Some(json!({"openai_api_key": "sk-new"})),
        },
        Case {
            args: &[
                "project",
                "update",
                PROJECT_ID,
                "--name",
                "New",
                "--openai-key",
                "sk-new",
            ],
            answer: project(),
            method: "PATCH",
            target: "/manage/projects/123e4567-e89b-12d3-a456-426614174000",
            body: Some(json!({"name": "New", "openai_api_key": "sk-new"})),
        },
        Case {
            args: &["project", "delete", PROJECT_ID],
            answer: (204, String::new()),
            method: "DELETE",
            target: "/manage/projects/123e4567-e89b-12d3-a456-426614174000",
            body: None,
        },
        Case {
            args: &["token", "list"],
            answer: (200, "[]".into()),
            method: "GET",
            target: "/manage/tokens",
            body: None,
        },
        Case {
            args: &["token", "list", "--project-id", PROJECT_ID, "--active-only"],
            answer: (200, "[]".into()),
            method: "GET",
            target: "/manage/tokens?project_id=123e4567-e89b-12d3-a456-426614174000&active_only=true",
            body: None,
        },
        Case {
            args: &["token", "get", "sk-ABC123DEF456GHI789"],
            answer: (200, token_json(TOKEN_ID, "sk-ABC1…I789")),
            method: "GET",
            target: "/manage/tokens/sk-ABC123DEF456GHI789",
            body: None,
        },
        Case {
            args: &["token", "generate", "--project-id", PROJECT_ID],
            answer: token(),
            method: "POST",
            target: "/manage/tokens",
            body: Some(json!({"project_id": PROJECT_ID, "duration_minutes": 1440})),
        },
        Case {
            args: &[
                "token",
                "generate",
                "--project-id",
                PROJECT_ID,
                "--duration",
                "168",
                "--max-requests",
                "1000",
            ],
            answer: token(),
            method: "POST",
            target: "/manage/tokens",
            body: Some(json!({
                "project_id": PROJECT_ID, "duration_minutes": 10080, "max_requests": 1000,
            })),
        },
        Case {
            args: &["token", "revoke", TOKEN_ID],
            answer: (204, String::new()),
            method: "DELETE",
            target: "/manage/tokens/9b2f0c3e-1d4a-4e8b-9c7f-2a5d6e8f1b3c",
            body: None,
        },
    ];
    for case in cases {
        let server = RecordingServer::json(case.answer.0, &case.answer.1);
        let run = manage(&server.url(), case.args);
        run.ok();
        run.assert_hides(MT);
        server.only_request().assert_sent(
            case.args,
            case.method,
            case.target,
            MT,
            case.body.as_ref(),
        );
    }
}

#[test]
fn base_url_may_carry_a_path_and_a_trailing_slash() {
    let server = RecordingServer::json(200, "[]");
    manage(&format!("{}/gateway/", server.url()), &["project", "list"]).ok();
    assert_eq!(server.only_request().target, "/gateway/manage/projects");
}

#[test]
fn tables_and_json_output() {
    let listing = format!("[{}]", project_json(PROJECT_ID, "Table Project"));
    let server = RecordingServer::json(200, &listing);
    let table = manage(&server.url(), &["project", "list"]).ok().to_string();
    for needle in [
        PROJECT_ID,
        "Table Project",
        "sk-pr…2b4d",
        "2025-03-01T10:00:00Z",
    ] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
    let parsed = manage(&server.url(), &["project", "list", "--json"]).json();
    assert_eq!(parsed, serde_json::from_str::<Value>(&listing).unwrap());

    let server = RecordingServer::json(200, "[]");
    assert_eq!(
        manage(&server.url(), &["project", "list"]).ok(),
        "No projects.\n"
    );
    assert_eq!(
        manage(&server.url(), &["token", "list", "--json"]).json(),
        json!([])
    );

    let server = RecordingServer::json(200, &project_json(PROJECT_ID, "Single"));
    let details = manage(&server.url(), &["project", "get", PROJECT_ID])
        .ok()
        .to_string();
    for needle in ["is_active", "true", "deactivated_at", "Single", PROJECT_ID] {
        assert!(details.contains(needle), "{needle} in\n{details}");
    }
    let parsed = manage(&server.url(), &["--json", "project", "get", PROJECT_ID]).json();
    assert_eq!(parsed["name"], "Single");

    let server = RecordingServer::json(204, "");
    let out = manage(&server.url(), &["project", "delete", PROJECT_ID])
        .ok()
        .to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("Deleted") && out.contains(PROJECT_ID), "{out}");
    let out = manage(&server.url(), &["token", "revoke", "sk-ABC123DEF456GHI789"])
        .ok()
        .to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("Revoked"), "{out}");
    assert!(
        !out.contains("sk-ABC123DEF456GHI789"),
        "the secret is echoed: {out}"
    );
}

#[test]
fn generated_secret_is_shown_once() {
    let secret = "sk-GeneratedSecret0123456789abcdef";
    let server = RecordingServer::json(201, &token_json(TOKEN_ID, secret));
    let out = manage(
        &server.url(),
        &["token", "generate", "--project-id", PROJECT_ID],
    )
    .ok()
    .to_string();
    assert!(
        out.contains(&format!("Token: {secret}  (shown once; store it now)")),
        "{out}"
    );
    assert_eq!(out.matches(secret).count(), 1, "{out}");
    for needle in [TOKEN_ID, "2025-03-02T10:00:00Z", "unlimited"] {
        assert!(out.contains(needle), "{needle} in\n{out}");
    }
    let parsed = manage(
        &server.url(),
        &["token", "generate", "--project-id", PROJECT_ID, "--json"],
    )
    .json();
    assert_eq!(parsed["token"], secret);
}

#[test]
fn server_errors_exit_1_with_the_message_and_status() {
    let cases = [
        (
            409,
            r#"{"error":{"message":"project name already exists","type":"invalid_request_error","param":"name","code":"conflict"}}"#,
            "project name already exists",
        ),
        (
            404,
            r#"{"error":{"message":"project not found","type":"invalid_request_error","param":null,"code":"not_found"}}"#,
            "project not found",
        ),
        (
            503,
            r#"{"error":{"message":"management API disabled: set MANAGEMENT_TOKEN on the server","type":"server_error","param":null,"code":"management_disabled"}}"#,
            "management API disabled",
        ),
        (500, "internal\nfailure", "internal failure"),
        (502, "", "Bad Gateway"),
    ];
    for (status, body, message) in cases {
        let server = RecordingServer::json(status, body);
        let run = manage(&server.url(), &["project", "get", PROJECT_ID]);
        let line = run.fails(1);
        assert!(line.contains(message), "{line}");
        assert!(line.contains(&status.to_string()), "{line}");
        run.assert_hides(MT);
    }
}

#[test]
fn rejected_token_exits_3() {
    for status in [401, 403] {
        let server = RecordingServer::json(
            status,
            r#"{"error":{"message":"invalid management token","type":"invalid_request_error","param":null,"code":"invalid_management_token"}}"#,
        );
        let run = manage(&server.url(), &["token", "list"]);
        let line = run.fails(3);
        assert!(line.contains(&status.to_string()), "{line}");
        assert!(line.contains("--management-token"), "{line}");
        assert!(line.contains("MANAGEMENT_TOKEN"), "{line}");
        run.assert_hides(MT);
    }
}

#[test]
fn invalid_answers_exit_1() {
    let cases: [RecordingServer; 4] = [
        RecordingServer::json(200, "<html>not json</html>"),
        RecordingServer::json(200, r#"{"not":"a list"}"#),
        RecordingServer::json(200, ""),
        RecordingServer::raw("this is not HTTP\r\n\r\n"),
    ];
    for server in cases {
        let run = manage(&server.url(), &["project", "list"]);
        run.fails(1);
        run.assert_hides(MT);
    }
}

// --- against a real server -----------------------------------------------------

struct Managed {
    mock: Mock,
    proxy: Proxy,
    url: String,
}

impl Managed {
    fn start() -> Self {
        let mock = Mock::start();
        // The harness seeds a project of its own ("test") with CLIENT_KEY.
        let proxy = Proxy::for_mock(&mock).env("MANAGEMENT_TOKEN", MT).start();
        let url = proxy.url();
        Self { mock, proxy, url }
    }

    /// Runs `manage <args>` and checks that the token stays hidden.
    fn run(&self, args: &[&str]) -> CliRun {
        let run = manage(&self.url, args);
        run.assert_hides(MT);
        run
    }

    /// A non-streamed chat completion through the proxy with `key`.
    fn chat_status(&self, key: &str) -> u16 {
        let request = Req::post("/v1/chat/completions", chat_body(false, "hello")).auth(key);
        self.proxy.call(request).status
    }
}

/// The secret in "Token: sk-…  (shown once; store it now)".
fn secret_of(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("Token: "))
        .unwrap_or_else(|| panic!("no Token: line in\n{out}"));
    let secret = line["Token: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(secret.starts_with("sk-"), "{line}");
    assert!(line.ends_with("(shown once; store it now)"), "{line}");
    secret
}

/// The ids of a JSON array of objects.
fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn project_and_token_lifecycle() {
    let server = Managed::start();

    // Create, list, get, update.
    let created = server
        .run(&[
            "project",
            "create",
            "--name",
            "Lifecycle Project",
            "--openai-key",
            PROJECT_KEY,
            "--json",
        ])
        .json();
    assert_eq!(created["name"], "Lifecycle Project");
    assert_eq!(created["is_active"], true);
    assert_ne!(
        created["openai_api_key"], PROJECT_KEY,
        "the key must be obfuscated"
    );
    let project = created["id"].as_str().unwrap().to_string();

    let table = server.run(&["project", "list"]).ok().to_string();
    assert!(
        table.contains("Lifecycle Project") && table.contains(&project),
        "{table}"
    );
    assert!(!table.contains(PROJECT_KEY), "{table}");
    let list = server.run(&["project", "list", "--json"]).json();
    assert!(ids(&list).contains(&project), "{list}");

    let details = server.run(&["project", "get", &project]).ok().to_string();
    assert!(
        details.contains("Lifecycle Project") && details.contains(&project),
        "{details}"
    );
    assert!(!details.contains(PROJECT_KEY), "{details}");

    let updated = server
        .run(&[
            "project",
            "update",
            &project,
            "--name",
            "Renamed Project",
            "--json",
        ])
        .json();
    assert_eq!(updated["name"], "Renamed Project");
    server
        .run(&[
            "project",
            "update",
            &project,
            "--openai-key",
            NEW_PROJECT_KEY,
        ])
        .ok();
    let fetched = server.run(&["--json", "project", "get", &project]).json();
    assert_eq!(fetched["name"], "Renamed Project");
    assert_eq!(fetched["id"], project.as_str());

    // The name is taken now.
    let run = server.run(&[
        "project",
        "create",
        "--name",
        "Renamed Project",
        "--openai-key",
        PROJECT_KEY,
    ]);
    assert!(run.fails(1).contains("409"), "{run:?}");

    // Generate: the secret once, obfuscated everywhere afterwards.
    let out = server
        .run(&[
            "token",
            "generate",
            "--project-id",
            &project,
            "--duration",
            "2",
            "--max-requests",
            "5",
        ])
        .ok()
        .to_string();
    let secret = secret_of(&out);
    assert_eq!(out.matches(&secret).count(), 1, "{out}");
    let listed = server
        .run(&["token", "list", "--project-id", &project, "--json"])
        .json();
    assert_eq!(ids(&listed).len(), 1, "{listed}");
    let first = &listed[0];
    let token_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["project_id"], project.as_str());
    assert_eq!(first["max_requests"], 5);
    assert_eq!(first["is_active"], true);
    assert!(first["expires_at"].is_string(), "{first}");
    assert!(
        first["token"].as_str().unwrap().starts_with("sk-"),
        "{first}"
    );
    assert!(!listed.to_string().contains(&secret), "{listed}");
    let table = server.run(&["token", "list"]).ok().to_string();
    assert!(table.contains(&token_id), "{table}");
    assert!(!table.contains(&secret), "{table}");

    // Get by id and by secret.
    let by_id = server.run(&["token", "get", &token_id, "--json"]).json();
    assert_eq!(by_id["id"], token_id.as_str());
    assert!(!by_id.to_string().contains(&secret), "{by_id}");
    let run = server.run(&["token", "get", &secret, "--json"]);
    assert_eq!(run.json()["id"], token_id.as_str());
    run.assert_hides(&secret);
    let details = server.run(&["token", "get", &token_id]).ok().to_string();
    assert!(
        details.contains(&token_id) && details.contains("max_requests"),
        "{details}"
    );

    // Two more tokens: one revoked by its secret, one left for the project delete.
    let second = server
        .run(&["token", "generate", "--project-id", &project, "--json"])
        .json();
    let second_secret = second["token"].as_str().unwrap().to_string();
    let third = server
        .run(&["token", "generate", "--project-id", &project, "--json"])
        .json();
    let third_secret = third["token"].as_str().unwrap().to_string();
    assert!(third["max_requests"].is_null(), "{third}");

    // The token works, with the project's (updated) key upstream.
    assert_eq!(server.chat_status(&secret), 200);
    let headers = server.mock.last_request_headers();
    assert_eq!(
        header_values(&headers, "authorization"),
        [format!("Bearer {NEW_PROJECT_KEY}").as_str()]
    );

    // Revoke by id, then by secret.
    let out = server.run(&["token", "revoke", &token_id]).ok().to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(server.chat_status(&secret), 401);
    let revoked = server.run(&["token", "get", &token_id, "--json"]).json();
    assert_eq!(revoked["is_active"], false);
    let run = server.run(&["token", "revoke", &second_secret]);
    run.ok();
    run.assert_hides(&second_secret);
    assert_eq!(server.chat_status(&second_secret), 401);
    let active = server
        .run(&[
            "token",
            "list",
            "--active-only",
            "--project-id",
            &project,
            "--json",
        ])
        .json();
    assert_eq!(ids(&active), [third["id"].as_str().unwrap()], "{active}");
    assert_eq!(server.chat_status(&third_secret), 200);

    // Delete the project: its last token stops working.
    let out = server
        .run(&["project", "delete", &project])
        .ok()
        .to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(server.chat_status(&third_secret), 401);
    let run = server.run(&["project", "get", &project]);
    assert!(run.fails(1).contains("404"), "{run:?}");
    let list = server.run(&["project", "list", "--json"]).json();
    assert!(!ids(&list).contains(&project), "{list}");
}

#[test]
fn wrong_management_token_exits_3() {
    let server = Managed::start();
    let run = Cli::manage(["project", "list"])
        .args(["--manage-api-base-url", &server.url])
        .args(["--management-token", "mt-wrong-0000"])
        .run();
    let line = run.fails(3);
    assert!(line.contains("401"), "{line}");
    assert!(line.contains("--management-token"), "{line}");
    run.assert_hides("mt-wrong-0000");
    // The management token reaches registered models only (it has no
    // project), and none is registered here.
    assert_eq!(server.chat_status(MT), 403);
}

#[test]
fn unknown_ids_exit_1_with_the_server_message() {
    let server = Managed::start();
    let commands: [&[&str]; 6] = [
        &["project", "get", PROJECT_ID],
        &["project", "update", PROJECT_ID, "--name", "X"],
        &["project", "delete", PROJECT_ID],
        &["token", "get", TOKEN_ID],
        &["token", "get", "sk-no-such-token-0123456789"],
        &["token", "revoke", TOKEN_ID],
    ];
    for args in commands {
        let run = server.run(args);
        let line = run.fails(1);
        let (_, message) = line
            .split_once("404: ")
            .unwrap_or_else(|| panic!("no 404 in {line}"));
        assert!(!message.trim().is_empty(), "{line}");
    }
    // A token for a project that does not exist.
    let run = server.run(&["token", "generate", "--project-id", PROJECT_ID]);
    run.fails(1);
}

#[test]
fn disabled_management_api_exits_1() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env_remove("MANAGEMENT_TOKEN")
        .unseeded()
        .start();
    let url = proxy.url();
    let run = manage(&url, &["project", "list"]);
    let line = run.fails(1);
    assert!(line.contains("503"), "{line}");
    run.assert_hides(MT);
}
