//! The LiteLLM-style client commands against a real `llm-proxy server`
//! (with the real mock upstream behind it): the seed's examples as written,
//! whole lifecycles of models, credentials, keys and users, chat and http
//! requests routed to the mock, and the exit codes the server's answers
//! lead to.

use crate::common::cli::*;
use crate::common::*;
use serde_json::{Value, json};

/// The master key: must never be printed.
const MT: &str = MANAGEMENT_TOKEN;

/// `dheera_ai-proxy <args>` set up as in the seed: URL and key in the environment.
fn dheera(proxy: &Proxy, args: &[&str]) -> CliRun {
    dheera_with_key(proxy, MT, args)
}

fn dheera_with_key(proxy: &Proxy, key: &str, args: &[&str]) -> CliRun {
    let run = dheera_env(&proxy.url(), key, args);
    run.assert_hides(MT);
    run
}

fn start() -> (Mock, Proxy) {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    (mock, proxy)
}

/// Registers `name`, routed to the mock, with the upstream key; returns its id.
fn add_mock_model(proxy: &Proxy, mock: &Mock, name: &str) -> String {
    let created = dheera(
        proxy,
        &[
            "models",
            "add",
            name,
            "-p",
            &format!("api_base={}/v1", mock.url()),
            "-p",
            &format!("api_key={UPSTREAM_KEY}"),
            "-p",
            "model=gpt-4o-mini",
        ],
    )
    .json();
    model_id(&created)
}

/// The string `field` of each item of the array `items`.
fn each<'a>(items: &'a Value, field: &str) -> Vec<&'a str> {
    items
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item[field].as_str())
        .collect()
}

fn model_id(created: &Value) -> String {
    created["model_id"]
        .as_str()
        .or_else(|| created["model_info"]["id"].as_str())
        .unwrap_or_else(|| panic!("no model id in {created}"))
        .to_string()
}

#[test]
fn seed_model_examples_run_as_written() {
    let (_mock, proxy) = start();
    dheera(&proxy, &["models", "list"]).ok();
    let created = dheera(&proxy, SEED_MODELS_ADD);
    created.assert_hides("sk-123");
    let created = created.json();
    assert_eq!(created["model_name"], "gpt-4");
    let id = model_id(&created);

    let listed = dheera(&proxy, &["models", "list", "--format", "json"]).json();
    let ids = each(&listed["data"], "id");
    assert!(ids.contains(&"gpt-4"), "{listed}");
    assert!(dheera(&proxy, &["models", "list"]).ok().contains("gpt-4"));

    let info = dheera(&proxy, &["models", "info"]);
    info.assert_hides("sk-123");
    for needle in [id.as_str(), "gpt-4"] {
        assert!(info.ok().contains(needle), "{needle} in\n{}", info.stdout);
    }

    dheera(&proxy, &["models", "update", &id, "-p", "temperature=0.7"]).ok();
    let got = dheera(&proxy, &["models", "get", "--id", &id]);
    got.assert_hides("sk-123");
    let got = got.json();
    assert_eq!(got["model_name"], "gpt-4");
    assert_eq!(got["litellm_params"]["temperature"], json!(0.7), "{got}");
    assert!(got["litellm_params"].get("api_key").is_none(), "{got}");
    let by_name = dheera(&proxy, &["models", "get", "--name", "gpt-4"]).json();
    assert_eq!(model_id(&json!({"model_info": by_name["model_info"]})), id);

    dheera(&proxy, &["models", "delete", &id]).ok();
    let line = dheera(&proxy, &["models", "get", "--id", &id])
        .fails(4)
        .to_string();
    assert!(line.contains(&id), "{line}");
    let line = dheera(&proxy, &["models", "delete", &id])
        .fails(4)
        .to_string();
    assert!(
        line.starts_with(&format!("error: model \"{id}\" not found")),
        "{line}"
    );
    let line = dheera(&proxy, &["models", "update", &id, "-p", "rpm=5"])
        .fails(4)
        .to_string();
    assert!(line.contains("not found"), "{line}");
}

#[test]
fn seed_credential_examples_run_as_written() {
    let (_mock, proxy) = start();
    dheera(&proxy, &["credentials", "list"]).ok();
    let secret = "sk-azure-9f8e7d6c5b4a";
    let values = format!(
        r#"--values={{"api_key": "{secret}", "api_base": "https://prod.azure.openai.com"}}"#
    );
    let created = dheera(
        &proxy,
        &[
            "credentials",
            "create",
            "azure-prod",
            r#"--info={"custom_llm_provider": "azure"}"#,
            &values,
        ],
    );
    created.ok();
    created.assert_hides(secret);

    let table = dheera(&proxy, &["credentials", "list"]);
    table.assert_hides(secret);
    assert!(
        table.ok().contains("azure-prod") && table.stdout.contains("azure"),
        "{}",
        table.stdout
    );
    let listed = dheera(&proxy, &["credentials", "list", "--format", "json"]).json();
    let names = each(&listed["credentials"], "credential_name");
    assert_eq!(names, ["azure-prod"]);

    let got = dheera(&proxy, &["credentials", "get", "azure-prod"]);
    got.assert_hides(secret);
    let got = got.json();
    assert_eq!(got["credential_name"], "azure-prod");
    assert_eq!(got["credential_info"]["custom_llm_provider"], "azure");
    assert!(
        got["credential_values"]["api_key"].is_string(),
        "masked, still there: {got}"
    );

    dheera(&proxy, &["credentials", "delete", "azure-prod"]).ok();
    let line = dheera(&proxy, &["credentials", "get", "azure-prod"])
        .fails(4)
        .to_string();
    assert!(
        line.starts_with("error: credential \"azure-prod\" not found"),
        "{line}"
    );
    dheera(&proxy, &["credentials", "delete", "azure-prod"]).fails(4);
}

#[test]
fn seed_key_examples_run_as_written() {
    let (_mock, proxy) = start();
    let generated = dheera(&proxy, SEED_KEYS_GENERATE).json();
    let key = generated["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {generated}"));
    assert!(key.starts_with("sk-"), "{generated}");
    assert_eq!(generated["key_alias"], "my-key");
    assert_eq!(
        generated["max_budget"].as_f64(),
        Some(100.0),
        "--spend is the budget: {generated}"
    );
    assert_eq!(generated["models"], json!(["gpt-4"]));
    assert!(!generated["expires"].is_null(), "{generated}");

    let info = dheera(&proxy, &["keys", "info", "--key", key]).json();
    assert_eq!(info["key"], key, "the key asked about, echoed: {info}");
    assert!(
        info["info"].get("key").is_none(),
        "no secret in the info: {info}"
    );
    assert_eq!(info["info"]["key_alias"], "my-key", "{info}");
    assert_eq!(info["info"]["max_budget"].as_f64(), Some(100.0), "{info}");

    let listed = dheera(&proxy, &["keys", "list", "--format", "json"]).json();
    let aliases = each(&listed["keys"], "key_alias");
    assert!(aliases.contains(&"my-key"), "{listed}");
    let table = dheera(&proxy, &["keys", "list"]);
    table.assert_hides(key);
    assert!(table.ok().contains("my-key"), "{}", table.stdout);
    let one = dheera(
        &proxy,
        &["keys", "list", "--key-alias", "my-key", "--format", "json"],
    )
    .json();
    assert_eq!(one["total_count"], 1, "{one}");

    // A second key, deleted by its secret; the first by its alias.
    let other = dheera(&proxy, &["keys", "generate"]).json();
    let other = other["key"].as_str().unwrap().to_string();
    let deleted = dheera(
        &proxy,
        &[
            "keys",
            "delete",
            "--keys",
            &other,
            "--key-aliases",
            "my-key",
        ],
    )
    .json();
    assert_eq!(
        deleted["deleted_keys"].as_array().map(Vec::len),
        Some(2),
        "{deleted}"
    );
    for gone in [key, other.as_str()] {
        let line = dheera(&proxy, &["keys", "info", "--key", gone])
            .fails(4)
            .to_string();
        assert!(!line.contains(gone), "the secret stays hidden: {line}");
    }
    dheera(&proxy, &["keys", "delete", "--key-aliases", "my-key"]).fails(4);
}

#[test]
fn seed_user_examples_run_as_written() {
    let (_mock, proxy) = start();
    crate::common::litellm::new_team(&proxy, "team1");
    let created = dheera(&proxy, SEED_USERS_CREATE).json();
    let id = created["user_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    assert_eq!(created["user_email"], "user@example.com");
    assert!(
        created["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("sk-")),
        "{created}"
    );

    let line = dheera(&proxy, &["users", "create", "--email=user@example.com"])
        .fails(1)
        .to_string();
    assert!(line.contains("400"), "duplicate email: {line}");

    let table = dheera(&proxy, &["users", "list"]).ok().to_string();
    for needle in [
        id.as_str(),
        "user@example.com",
        "internal_user",
        "Alice",
        "team1",
    ] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
    let got = dheera(&proxy, &["users", "get", "--id", &id]).json();
    assert_eq!(got["user_id"], id.as_str());
    assert_eq!(got["keys"].as_array().map(Vec::len), Some(1), "{got}");

    dheera(&proxy, &["users", "delete", &id]).ok();
    let line = dheera(&proxy, &["users", "get", "--id", &id])
        .fails(4)
        .to_string();
    assert!(
        line.starts_with(&format!("error: user \"{id}\" not found")),
        "{line}"
    );
}

#[test]
fn chat_and_http_reach_the_mock_through_a_registered_model() {
    let (mock, proxy) = start();
    add_mock_model(&proxy, &mock, "mock-gpt");
    let generated = dheera(&proxy, &["keys", "generate", "--models", "mock-gpt"]).json();
    let key = generated["key"].as_str().unwrap().to_string();

    let run = dheera_with_key(
        &proxy,
        &key,
        &[
            "chat",
            "completions",
            "mock-gpt",
            "-m",
            "user:Write a story",
        ],
    );
    assert_eq!(run.ok(), format!("{}\n", mock_text(16)));
    let sent = mock.last_request();
    let auth: Vec<_> = headers_of(&sent);
    assert_eq!(
        header_values(&auth, "authorization"),
        [format!("Bearer {UPSTREAM_KEY}").as_str()]
    );

    let full = dheera_with_key(
        &proxy,
        &key,
        &[
            "chat",
            "completions",
            "mock-gpt",
            "-m",
            "system:Be brief",
            "-m",
            "user:Hi",
            "--format",
            "json",
        ],
    )
    .json();
    assert_eq!(full["object"], "chat.completion");
    assert!(full["usage"]["total_tokens"].as_u64().is_some(), "{full}");

    let body = r#"{"model": "mock-gpt", "messages": [{"role": "user", "content": "Hello"}]}"#;
    let answer = dheera_with_key(
        &proxy,
        &key,
        &[
            "http",
            "request",
            "POST",
            "/chat/completions",
            "--json",
            body,
        ],
    )
    .json();
    assert_eq!(answer["choices"][0]["message"]["content"], mock_text(16));

    // An unknown model is "not found"; a known one the key may not use is
    // an authentication failure, with the server's reason on the line.
    let run = dheera_with_key(
        &proxy,
        &key,
        &["chat", "completions", "gpt-4", "-m", "user:Hi"],
    );
    let line = run.fails(4);
    assert!(
        line.starts_with("error: model \"gpt-4\" not found (404: "),
        "{line}"
    );
    add_mock_model(&proxy, &mock, "other-gpt");
    let run = dheera_with_key(
        &proxy,
        &key,
        &["chat", "completions", "other-gpt", "-m", "user:Hi"],
    );
    let line = run.fails(3);
    assert!(line.contains("rejected the API key (401: "), "{line}");
    run.assert_hides(&key);
}

#[test]
fn http_request_without_a_key_and_the_readiness_check() {
    let (_mock, proxy) = start();
    let run = Cli::dheera(["http", "request", "GET", "/health/readiness"])
        .env("DHEERA_AI_PROXY_URL", proxy.url())
        .run();
    let ready = run.json();
    assert!(ready["version"].is_string(), "{ready}");
    let line = Cli::dheera(["http", "request", "GET", "/key/list"])
        .env("DHEERA_AI_PROXY_URL", proxy.url())
        .run()
        .fails(3)
        .to_string();
    assert!(line.contains("401"), "{line}");
}

#[test]
fn a_wrong_master_key_exits_3() {
    let (_mock, proxy) = start();
    for args in [
        &["models", "list"][..],
        &["keys", "generate"],
        &["users", "list"],
        &["credentials", "list"],
    ] {
        let run = dheera_with_key(&proxy, "sk-wrong-master-key", args);
        let line = run.fails(3);
        assert!(line.contains("rejected the API key (401: "), "{line}");
        run.assert_hides("sk-wrong-master-key");
    }
}

#[test]
fn llm_proxy_runs_the_same_commands() {
    let (_mock, proxy) = start();
    let generated = Cli::new(["keys", "generate", "--key-alias", "from-llm-proxy"])
        .env("LLM_PROXY_URL", proxy.url())
        .env("LLM_PROXY_API_KEY", MT)
        .run()
        .json();
    assert_eq!(generated["key_alias"], "from-llm-proxy");
    let listed = dheera(
        &proxy,
        &[
            "keys",
            "list",
            "--key-alias",
            "from-llm-proxy",
            "--format",
            "json",
        ],
    )
    .json();
    assert_eq!(listed["total_count"], 1, "{listed}");
}
