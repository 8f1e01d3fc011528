//! LiteLLM's own client, unmodified, against `llm-proxy server`: the
//! `litellm-proxy` command from the `litellm` package on PyPI manages
//! models, credentials, keys and users, and its keys work on the proxy; its
//! `chat` and `http request POST /chat/completions` use the master key as
//! a key for the models, and that key's spend is accounted.
//!
//! The command is found through `LITELLM_PROXY_CLI` or on `PATH`. Where it
//! is not installed the test says so and passes, unless
//! `LLM_PROXY_REQUIRE_LITELLM=1` (set by CI, which installs it) makes that
//! a failure.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::litellm::{add_deployment, key_info, prices};
use crate::common::*;
use serde_json::{Value, json};

fn find_cli() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LITELLM_PROXY_CLI") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("litellm-proxy"))
        .find(|candidate| candidate.is_file())
}

struct LiteLlm {
    cli: PathBuf,
    url: String,
    home: TempDir,
}

impl LiteLlm {
    fn run_as(&self, api_key: &str, args: &[&str]) -> Output {
        Command::new(&self.cli)
            .args(args)
            .env("LITELLM_PROXY_URL", &self.url)
            .env("LITELLM_PROXY_API_KEY", api_key)
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1")
            .env("COLUMNS", "250")
            .output()
            .expect("run litellm-proxy")
    }

    /// Runs a command with the master key and `input` on its standard
    /// input; it must succeed. Returns stdout.
    fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        let mut child = Command::new(&self.cli)
            .args(args)
            .env("LITELLM_PROXY_URL", &self.url)
            .env("LITELLM_PROXY_API_KEY", MANAGEMENT_TOKEN)
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1")
            .env("COLUMNS", "250")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run litellm-proxy");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "litellm-proxy {args:?} failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs a command with the master key; it must succeed. Returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run_as(MANAGEMENT_TOKEN, args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "litellm-proxy {args:?} failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// The JSON object or array printed by a command.
    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        let start = stdout.find(['{', '[']).unwrap_or(0);
        serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

/// The command, or `None` when it is not installed and not required (the
/// test then passes, and says so).
fn cli_or_skip() -> Option<PathBuf> {
    let cli = find_cli();
    if cli.is_none() {
        let required = std::env::var("LLM_PROXY_REQUIRE_LITELLM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "litellm-proxy is not installed (pip install 'litellm[cli]')"
        );
        eprintln!(
            "skipped: litellm-proxy is not installed (pip install 'litellm[cli]' to run this test)"
        );
    }
    cli
}

#[test]
fn litellms_own_cli_manages_the_gateway() {
    let Some(cli) = cli_or_skip() else {
        return;
    };
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let lite = LiteLlm {
        cli,
        url: format!("http://{}", proxy.addr),
        home: TempDir::new("litellm-home"),
    };

    let version = lite.ok(&["--version"]);
    assert!(
        version.contains(&format!("Server Version: {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // Models.
    let api_base = format!("api_base={}/v1", mock.url());
    let added = lite.json(&[
        "models",
        "add",
        "gpt-4",
        "--param",
        "model=openai/compat-upstream",
        "--param",
        &api_base,
        "--param",
        "api_key=sk-compat-upstream-secret",
        "--info",
        "input_cost_per_token=0.000001",
    ]);
    assert_eq!(added["model_name"], "gpt-4");
    let listed = lite.json(&["models", "list", "--format", "json"]);
    assert!(listed.to_string().contains("\"gpt-4\""), "{listed}");
    let info = lite.ok(&["models", "info"]);
    assert!(info.contains("openai/compat-upstream"), "{info}");
    assert!(!info.contains("sk-compat-upstream-secret"), "{info}");
    // Model groups: the table, and the JSON of `/model_group/info`'s data.
    let groups = lite.ok(&["model-groups", "list"]);
    assert!(groups.contains("gpt-4"), "{groups}");
    assert!(
        groups.contains("chat") && groups.contains("1e-06"),
        "{groups}"
    );
    let groups = lite.json(&["model-groups", "list", "--format", "json"]);
    assert_eq!(groups[0]["model_group"], "gpt-4", "{groups}");
    assert_eq!(groups[0]["providers"], json!(["openai"]), "{groups}");
    assert_eq!(groups[0]["input_cost_per_token"], 0.000001, "{groups}");

    // Credentials: stored, shown masked.
    lite.ok(&[
        "credentials",
        "create",
        "azure-prod",
        "--info",
        r#"{"custom_llm_provider": "azure"}"#,
        "--values",
        r#"{"api_key": "sk-credential-secret-value"}"#,
    ]);
    let credentials = lite.json(&["credentials", "list", "--format", "json"]);
    assert!(
        credentials.to_string().contains("azure-prod"),
        "{credentials}"
    );
    assert!(
        !credentials
            .to_string()
            .contains("sk-credential-secret-value")
    );

    // Keys: generated by LiteLLM's client, used on the proxy.
    let generated = lite.json(&[
        "keys",
        "generate",
        "--models",
        "gpt-4",
        "--duration",
        "24h",
        "--key-alias",
        "my-key",
    ]);
    let key = generated["key"].as_str().expect("a key").to_string();
    let chat = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]});
    let response = proxy.call(Req::post("/v1/chat/completions", chat.to_string()).auth(&key));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "compat-upstream");
    let keys = lite.json(&["keys", "list", "--return-full-object", "--format", "json"]);
    assert!(keys.to_string().contains("my-key"), "{keys}");

    // Users.
    lite.ok(&[
        "users",
        "create",
        "--email",
        "user@example.com",
        "--role",
        "internal_user",
        "--max-budget",
        "100",
    ]);
    let users = lite.ok(&["users", "list"]);
    assert!(users.contains("user@example.com"), "{users}");
    let duplicate = lite.run_as(
        MANAGEMENT_TOKEN,
        &["users", "create", "--email", "USER@example.com"],
    );
    assert!(!duplicate.status.success(), "a second user with that email");

    // Raw requests, and the master key checked.
    let ready = lite.ok(&["http", "request", "GET", "/health/readiness"]);
    assert!(ready.contains("healthy"), "{ready}");
    let refused = lite.run_as("sk-not-the-master-key", &["models", "list"]);
    assert!(!refused.status.success());

    // Deleting the key through LiteLLM's client revokes it on the proxy.
    lite.ok(&["keys", "delete", "--key-aliases", "my-key"]);
    let response = proxy.call(Req::post("/v1/chat/completions", chat.to_string()).auth(&key));
    response.assert_error(401, "invalid_api_key");
}

#[test]
fn litellms_cli_chats_with_the_master_key_and_its_spend_is_accounted() {
    let Some(cli) = cli_or_skip() else {
        return;
    };
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    add_deployment(&proxy, "gpt-4", &mock, prices(1e-6, 2e-6));
    let lite = LiteLlm {
        cli,
        url: format!("http://{}", proxy.addr),
        home: TempDir::new("litellm-home"),
    };
    assert_eq!(key_info(&proxy, MANAGEMENT_TOKEN)["spend"], 0.0);

    // A raw request, as LiteLLM's quick start makes it with the master key.
    let body = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]});
    let answer = lite.json(&[
        "http",
        "request",
        "POST",
        "/chat/completions",
        "-j",
        &body.to_string(),
    ]);
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["model"], "gpt-4-upstream", "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with(MOCK_WORDS[0]), "{answer}");
    let tokens = &answer["usage"];
    let cost = tokens["prompt_tokens"].as_f64().unwrap() * 1e-6
        + tokens["completion_tokens"].as_f64().unwrap() * 2e-6;
    assert!(cost > 0.0, "{answer}");

    // The interactive chat, streamed: one message, then /quit.
    let chat = lite.ok_with_input(&["chat", "gpt-4"], "Hello there\n/quit\n");
    assert!(chat.contains(&mock_text(4)), "{chat}");

    // Both requests are the master key's: counted and charged to its record.
    let mut info = Value::Null;
    let accounted = wait_until(Duration::from_secs(10), || {
        info = key_info(&proxy, MANAGEMENT_TOKEN);
        info["request_count"] == 2 && info["spend"].as_f64().is_some_and(|s| s > cost + 1e-12)
    });
    assert!(accounted, "one request cost {cost}: {info}");
}

#[test]
fn litellms_own_cli_manages_teams() {
    let Some(cli) = cli_or_skip() else {
        return;
    };
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let lite = LiteLlm {
        cli,
        url: format!("http://{}", proxy.addr),
        home: TempDir::new("litellm-home"),
    };
    let api_base = format!("api_base={}/v1", mock.url());
    lite.ok(&[
        "models",
        "add",
        "gpt-4",
        "--param",
        "model=openai/compat-upstream",
        "--param",
        &api_base,
    ]);

    // The CLI's `teams` group has no create: its `http request` makes one,
    // with LiteLLM's body, and adds a member.
    lite.ok(&[
        "users",
        "create",
        "--email",
        "ann@example.com",
        "--role",
        "internal_user",
    ]);
    let created = lite.json(&[
        "http",
        "request",
        "POST",
        "/team/new",
        "--json",
        r#"{"team_id": "red", "team_alias": "Red team", "models": ["gpt-4"], "max_budget": 10}"#,
    ]);
    assert_eq!(created["team_id"], "red", "{created}");
    let added = lite.json(&[
        "http",
        "request",
        "POST",
        "/team/member_add",
        "--json",
        r#"{"team_id": "red", "member": {"user_email": "ann@example.com", "role": "admin"}}"#,
    ]);
    assert_eq!(added["members_with_roles"][0]["role"], "admin", "{added}");

    // `teams list`: its table of the teams.
    let listed = lite.ok(&["teams", "list"]);
    for needle in ["Red team", "red", "gpt-4", "$10"] {
        assert!(listed.contains(needle), "{needle} in\n{listed}");
    }
    // `teams available`: none to join.
    let available = lite.ok(&["teams", "available"]);
    assert!(available.contains("No available teams"), "{available}");

    // `teams assign-key`: the CLI's key is put in the team (through
    // /key/update) and the team's models are named.
    let assigned = lite.ok(&["teams", "assign-key", "--team-id", "red"]);
    assert!(
        assigned.contains("Successfully assigned key to team: red"),
        "{assigned}"
    );
    assert!(
        assigned.contains("You can now access models: gpt-4"),
        "{assigned}"
    );
    let info = proxy.manage("GET", &format!("/key/info?key={MANAGEMENT_TOKEN}"), None);
    assert_eq!(info.json()["info"]["team_id"], "red", "{}", info.text());
    // A team that does not exist is refused.
    let refused = lite.run_as(
        MANAGEMENT_TOKEN,
        &["teams", "assign-key", "--team-id", "nope"],
    );
    assert!(!refused.status.success());

    // Blocked through `http request`: the team's keys are refused.
    let key = lite.json(&["keys", "generate", "--team-id", "red"])["key"]
        .as_str()
        .expect("a key")
        .to_string();
    let chat = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]});
    let response = proxy.call(Req::post("/v1/chat/completions", chat.to_string()).auth(&key));
    assert_eq!(response.status, 200, "{}", response.text());
    lite.ok(&[
        "http",
        "request",
        "POST",
        "/team/block",
        "--json",
        r#"{"team_id": "red"}"#,
    ]);
    let response = proxy.call(Req::post("/v1/chat/completions", chat.to_string()).auth(&key));
    response.assert_error(401, "team_blocked");
}
