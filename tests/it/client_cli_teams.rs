//! The `teams` client commands of `dheera_ai-proxy` and `llm-proxy`
//! against a real `llm-proxy server`: a team's whole life (create, list,
//! info, update, members, block, delete) in tables and JSON, and the exit
//! codes of mistakes and of unknown teams and users.

use crate::common::cli::*;
use crate::common::*;
use serde_json::{Value, json};

const MT: &str = MANAGEMENT_TOKEN;

fn dheera(proxy: &Proxy, args: &[&str]) -> CliRun {
    let run = dheera_env(&proxy.url(), MT, args);
    run.assert_hides(MT);
    run
}

fn llm_proxy(proxy: &Proxy, args: &[&str]) -> CliRun {
    let run = Cli::new(args.iter().copied())
        .env("LLM_PROXY_URL", proxy.url())
        .env("LLM_PROXY_API_KEY", MT)
        .run();
    run.assert_hides(MT);
    run
}

fn start() -> (Mock, Proxy) {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    (mock, proxy)
}

fn member_ids(team: &Value) -> Vec<&str> {
    team["members_with_roles"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {team}"))
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect()
}

#[test]
fn a_teams_life_through_the_cli() {
    let (_mock, proxy) = start();
    dheera(
        &proxy,
        &[
            "users",
            "create",
            "--email",
            "ann@example.com",
            "--user-id",
            "ann",
            "--no-key",
        ],
    )
    .ok();
    dheera(
        &proxy,
        &[
            "users",
            "create",
            "--email",
            "bob@example.com",
            "--user-id",
            "bob",
            "--no-key",
        ],
    )
    .ok();

    // Create: JSON by default, every setting sent.
    let created = dheera(
        &proxy,
        &[
            "teams",
            "create",
            "--team-id",
            "red",
            "--alias",
            "Red",
            "--models",
            "alpha,beta",
            "--max-budget",
            "10",
            "--rpm-limit",
            "60",
            "--tpm-limit",
            "5000",
            "--max-parallel-requests",
            "3",
            "--budget-duration",
            "30d",
            "--metadata",
            r#"{"owner": "ops"}"#,
        ],
    )
    .json();
    assert_eq!(created["team_id"], "red");
    assert_eq!(created["team_alias"], "Red");
    assert_eq!(created["models"], json!(["alpha", "beta"]));
    assert_eq!(created["max_budget"], 10.0);
    assert_eq!(created["rpm_limit"], 60);
    assert_eq!(created["tpm_limit"], 5000);
    assert_eq!(created["max_parallel_requests"], 3);
    assert_eq!(created["budget_duration"], "30d");
    assert_eq!(created["metadata"], json!({"owner": "ops"}));
    // llm-proxy runs the same commands; a server-chosen id.
    let blue = llm_proxy(&proxy, &["teams", "create", "--alias", "Blue"]).json();
    let blue_id = blue["team_id"].as_str().unwrap().to_string();

    // Members, by id and by email.
    let added = dheera(
        &proxy,
        &[
            "teams",
            "add-member",
            "--team-id",
            "red",
            "--user-id",
            "ann",
            "--role",
            "admin",
        ],
    )
    .json();
    assert_eq!(added["members_with_roles"][0]["role"], "admin");
    dheera(
        &proxy,
        &[
            "teams",
            "add-member",
            "--team-id",
            "red",
            "--user-email",
            "bob@example.com",
        ],
    )
    .ok();

    // List: a table by default, the server's array with --format json.
    let table = dheera(&proxy, &["teams", "list"]).ok().to_string();
    for needle in [
        "TEAM ID",
        "red",
        "Red",
        "alpha, beta",
        "ann (admin)",
        "bob (user)",
        "rpm 60",
    ] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
    assert!(table.contains(&blue_id), "{table}");
    let listed = dheera(&proxy, &["teams", "list", "--format", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let mine = dheera(
        &proxy,
        &["teams", "list", "--user-id", "bob", "--format", "json"],
    )
    .json();
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["team_id"], "red");
    let available = dheera(&proxy, &["teams", "available", "--format", "json"]).json();
    assert_eq!(available, json!([]));

    // Info shows its keys; update changes only what is given.
    dheera(
        &proxy,
        &[
            "keys",
            "generate",
            "--team-id",
            "red",
            "--key-alias",
            "red-key",
        ],
    )
    .ok();
    let info = dheera(&proxy, &["teams", "info", "--team-id", "red"]).json();
    assert_eq!(info["team_info"]["team_alias"], "Red");
    assert_eq!(member_ids(&info["team_info"]), ["ann", "bob"]);
    assert_eq!(info["keys"][0]["key_alias"], "red-key");
    let updated = dheera(
        &proxy,
        &[
            "teams",
            "update",
            "--team-id",
            "red",
            "--alias",
            "Crimson",
            "--tpm-limit",
            "100",
        ],
    )
    .json();
    assert_eq!(updated["team_alias"], "Crimson");
    assert_eq!(updated["tpm_limit"], 100);
    assert_eq!(updated["rpm_limit"], 60);
    let info_table = dheera(
        &proxy,
        &["teams", "info", "--team-id", "red", "--format", "table"],
    )
    .ok()
    .to_string();
    assert!(info_table.contains("team_info.team_alias"), "{info_table}");
    assert!(info_table.contains("Crimson"), "{info_table}");

    // Remove a member; block and unblock.
    let removed = dheera(
        &proxy,
        &[
            "teams",
            "remove-member",
            "--team-id",
            "red",
            "--user-id",
            "bob",
        ],
    )
    .json();
    assert_eq!(member_ids(&removed), ["ann"]);
    let blocked = dheera(&proxy, &["teams", "block", "--team-id", "red"]).json();
    assert_eq!(blocked["blocked"], true);
    let table = dheera(&proxy, &["teams", "list"]).ok().to_string();
    assert!(table.contains("yes"), "{table}");
    let unblocked = llm_proxy(&proxy, &["teams", "unblock", "--team-id", "red"]).json();
    assert_eq!(unblocked["blocked"], false);

    // Delete: the team and its key.
    let out = dheera(
        &proxy,
        &["teams", "delete", "red", &blue_id, "--format", "table"],
    )
    .ok()
    .to_string();
    assert_eq!(out, "Deleted 2 teams and 1 key.\n");
    let listed = dheera(&proxy, &["teams", "list", "--format", "json"]).json();
    assert_eq!(listed, json!([]));
    assert_eq!(dheera(&proxy, &["teams", "list"]).ok(), "No teams.\n");
}

#[test]
fn teams_mistakes_and_unknown_teams_exit_as_the_other_commands() {
    let (_mock, proxy) = start();
    dheera(&proxy, &["teams", "create", "--team-id", "red"]).ok();

    // Unknown team or user: exit 4, naming it.
    for args in [
        &["teams", "info", "--team-id", "nope"][..],
        &["teams", "block", "--team-id", "nope"],
        &["teams", "update", "--team-id", "nope", "--alias", "x"],
        &["teams", "delete", "nope"],
        &[
            "teams",
            "add-member",
            "--team-id",
            "red",
            "--user-id",
            "ghost",
        ],
    ] {
        let line = dheera(&proxy, args).fails(4).to_string();
        assert!(
            line.contains("team \"") || line.contains("ghost"),
            "{args:?}: {line}"
        );
    }
    // Checked before anything is sent: exit 1.
    let line = dheera(&proxy, &["teams", "update", "--team-id", "red"])
        .fails(1)
        .to_string();
    assert!(line.contains("nothing to change"), "{line}");
    let line = dheera(&proxy, &["teams", "create", "--metadata", "[1]"])
        .fails(1)
        .to_string();
    assert!(line.contains("--metadata"), "{line}");
    let line = dheera(&proxy, &["teams", "create", "--models", " , "])
        .fails(1)
        .to_string();
    assert!(line.contains("--models"), "{line}");
    // Refused by the server: exit 1 with its message.
    let line = dheera(&proxy, &["teams", "create", "--team-id", "red"])
        .fails(1)
        .to_string();
    assert!(line.contains("team_id"), "{line}");
    let line = dheera(&proxy, &["teams", "create", "--budget-duration", "soon"])
        .fails(1)
        .to_string();
    assert!(line.contains("budget_duration"), "{line}");
    // What clap checks (a member needs a user; the role is admin or user)
    // also exits 1.
    dheera(&proxy, &["teams", "add-member", "--team-id", "red"]).assert_code(1);
    dheera(
        &proxy,
        &[
            "teams",
            "add-member",
            "--team-id",
            "red",
            "--user-id",
            "a",
            "--role",
            "boss",
        ],
    )
    .assert_code(1);
    // A virtual key is not the master key: exit 3.
    let key = dheera(&proxy, &["keys", "generate"]).json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    dheera_env(&proxy.url(), &key, &["teams", "list"]).fails(3);
}
