//! The audit log: every management call (both APIs) is recorded with who,
//! what, when, from where and the outcome, secrets hidden; it is read with
//! `GET /manage/audit` (filters, pages) and `GET /manage/audit/{id}`, and
//! kept across a restart.

use crate::common::litellm::sha256_hex;
use crate::common::*;
use serde_json::{Value, json};

fn audit(proxy: &Proxy, query: &str) -> Value {
    let response = proxy.manage("GET", &format!("/manage/audit{query}"), None);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn entries(page: &Value) -> Vec<Value> {
    page["entries"].as_array().expect("entries").clone()
}

#[test]
fn management_calls_are_recorded_with_secrets_hidden() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    // The harness made a project and a token: both are in the log.
    let project = proxy.create_project("audited", "sk-audited-provider-secret");
    let generated = proxy.manage("POST", "/key/generate", Some(json!({"key_alias": "a1"})));
    let key = generated.json()["key"].as_str().unwrap().to_string();
    proxy.manage("GET", &format!("/key/info?key={key}"), None);
    // A refused call, and calls that are not management: not by the master key.
    let refused = proxy.call(Req::get("/manage/projects").auth("sk-wrong-master"));
    assert_eq!(refused.status, 401);
    proxy.call(Req::get("/health/readiness"));
    proxy.call(Req::get("/v1/models").auth(&key));
    // A model listing with a key that is not one is a client's error, as
    // a chat with it would be: not audited either.
    let unknown = proxy.call(Req::get("/v1/models").auth("sk-not-a-key-0123456789"));
    assert_eq!(unknown.status, 401);

    let log = audit(&proxy, "");
    let all = entries(&log);
    let text = log.to_string();
    for secret in [
        "sk-audited-provider-secret",
        key.as_str(),
        CLIENT_KEY,
        "sk-wrong-master",
        MANAGEMENT_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
    }
    // Newest first: the refused call, the key lookup, the generation, the project.
    assert_eq!(all[0]["actor"], "unauthenticated");
    assert_eq!(all[0]["status"], 401);
    assert_eq!(all[0]["outcome"], "invalid_management_token");
    assert_eq!(all[0]["target"], "/manage/projects");
    assert_eq!(all[1]["target"], "/key/info?key=***");
    assert_eq!(all[2]["method"], "POST");
    assert_eq!(all[2]["target"], "/key/generate");
    assert_eq!(all[2]["body"], json!({"key_alias": "a1"}));
    assert_eq!(all[2]["outcome"], "ok");
    assert_eq!(all[3]["target"], "/manage/projects");
    assert_eq!(all[3]["status"], 201);
    assert_eq!(all[3]["body"]["name"], "audited");
    assert_eq!(all[3]["body"]["openai_api_key"], "***");
    assert_eq!(all[3]["actor"], "master_key");
    assert!(
        all[3]["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{}",
        all[3]
    );
    assert!(all[3]["at"].as_str().unwrap().ends_with('Z'));
    assert!(
        all[3]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    // The readiness check and the key's own model listing are not there.
    assert!(
        all.iter()
            .all(|e| e["target"] != "/health/readiness" && e["target"] != "/v1/models")
    );
    assert!(project.len() > 10);

    // One entry by id; ids are sequential.
    let id = all[2]["id"].as_u64().unwrap();
    let one = proxy.manage("GET", &format!("/manage/audit/{id}"), None);
    assert_eq!(one.status, 200);
    assert_eq!(one.json(), all[2]);
    assert_eq!(all[1]["id"].as_u64().unwrap(), id + 1);
    proxy
        .manage("GET", "/manage/audit/999999", None)
        .assert_error(404, "not_found");
    proxy
        .manage("GET", "/manage/audit/x", None)
        .assert_error(404, "not_found");
}

#[test]
fn the_log_is_paged_and_filtered_and_survives_a_restart() {
    let mock = Mock::start();
    let dir = TempDir::new("audit-db");
    let db = dir.path().join("data").display().to_string();
    let mut proxy = Proxy::for_mock(&mock).arg("--db").arg(&db).start();
    for n in 0..7 {
        proxy.manage(
            "POST",
            "/user/new",
            Some(json!({"user_id": format!("u{n}"), "auto_create_key": false})),
        );
    }
    proxy.call(Req::get("/manage/tokens").auth("sk-nope"));

    let first = audit(&proxy, "?limit=3&path_prefix=/user/");
    let page: Vec<Value> = entries(&first);
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["body"]["user_id"], "u6");
    let next = first["next_before_id"].as_u64().expect("a next page");
    let second = entries(&audit(
        &proxy,
        &format!("?limit=3&path_prefix=/user/&before_id={next}"),
    ));
    assert_eq!(second[0]["body"]["user_id"], "u3");
    let refused = entries(&audit(&proxy, "?status=401"));
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["target"], "/manage/tokens");
    let by_master = entries(&audit(&proxy, "?actor=master_key&method=post&limit=1000"));
    assert!(
        by_master
            .iter()
            .all(|e| e["actor"] == "master_key" && e["method"] == "POST")
    );
    assert!(entries(&audit(&proxy, "?since=2999-01-01T00:00:00Z")).is_empty());
    assert!(!entries(&audit(&proxy, "?until=2999-01-01T00:00:00Z")).is_empty());
    for bad in ["?limit=0", "?since=yesterday", "?colour=red", "?status=x"] {
        proxy
            .manage("GET", &format!("/manage/audit{bad}"), None)
            .assert_error(400, "invalid_body");
    }
    proxy
        .manage("POST", "/manage/audit", None)
        .assert_error(405, "method_not_allowed");

    let before = entries(&audit(&proxy, "?limit=1000")).len();
    proxy.proc.signal("KILL");
    proxy.proc.wait_exit(std::time::Duration::from_secs(10));
    drop(proxy);
    let proxy = Proxy::for_mock(&mock)
        .unseeded()
        .arg("--db")
        .arg(&db)
        .start();
    let after = entries(&audit(&proxy, "?limit=1000"));
    // Everything from before, plus the reads of the log made since.
    assert!(
        after.len() > before,
        "{} after, {before} before",
        after.len()
    );
    assert!(after.iter().any(|e| e["body"]["user_id"] == "u0"));
}

#[test]
fn manage_audit_lists_and_shows_entries() {
    use crate::common::cli::Cli;
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let url = proxy.url();
    proxy.call(Req::get("/manage/projects").auth("sk-intruder"));
    let manage = |args: &[&str]| {
        Cli::manage(args.iter().copied())
            .args([
                "--manage-api-base-url",
                url.as_str(),
                "--management-token",
                MANAGEMENT_TOKEN,
            ])
            .run()
    };

    let listed = manage(&["audit", "list", "--limit", "2"]);
    listed.ok();
    assert!(
        listed.stdout.contains("unauthenticated"),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("invalid_management_token"),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("More: --before-id"),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains("sk-intruder"));

    let json = manage(&["audit", "list", "--status", "401", "--json"]);
    json.ok();
    let page: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let refused = entries(&page);
    assert_eq!(refused.len(), 1);
    let id = refused[0]["id"].as_u64().unwrap().to_string();

    let shown = manage(&["audit", "get", &id, "--json"]);
    shown.ok();
    let entry: Value = serde_json::from_str(&shown.stdout).expect("JSON");
    assert_eq!(entry["target"], "/manage/projects");
    let missing = manage(&["audit", "get", "999999"]);
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let bad = manage(&["audit", "list", "--since", "yesterday"]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("since"), "{}", bad.stderr);
}

#[test]
fn the_log_keeps_the_newest_audit_max_entries() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).env("AUDIT_MAX_ENTRIES", "3").start();
    for n in 0..5 {
        proxy.manage(
            "POST",
            "/user/new",
            Some(json!({"user_id": format!("k{n}"), "auto_create_key": false})),
        );
    }
    let kept = entries(&audit(&proxy, "?limit=1000"));
    let users: Vec<&Value> = kept.iter().map(|e| &e["body"]["user_id"]).collect();
    assert_eq!(users, [&json!("k4"), &json!("k3"), &json!("k2")]);
    // The ids go on from where they were.
    assert!(kept[0]["id"].as_u64().unwrap() > 5);

    let refused = Proxy::for_mock(&mock)
        .unseeded()
        .env("AUDIT_MAX_ENTRIES", "0")
        .run_to_exit();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stderr.contains("AUDIT_MAX_ENTRIES"),
        "{}",
        refused.stderr
    );
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the data directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push((path.clone(), std::fs::read(&path).expect("read a file")));
        }
    }
    found
}

#[test]
fn a_token_addressed_by_its_secret_leaves_no_secret_in_the_log_or_the_store() {
    use crate::common::cli::Cli;
    let mock = Mock::start();
    let dir = TempDir::new("audit-secret");
    let db = dir.path().join("data");
    let mut proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.display().to_string())
        .start();
    let secret = |proxy: &Proxy| {
        proxy.create_token(json!({}))["token"]
            .as_str()
            .expect("the new token's secret")
            .to_string()
    };
    let (by_api, by_cli, by_litellm, by_hash) = (
        secret(&proxy),
        secret(&proxy),
        secret(&proxy),
        secret(&proxy),
    );
    let listed = proxy.manage("GET", "/manage/tokens", None).json();
    let hint_of = |secret: &str| {
        listed
            .as_array()
            .expect("a token listing")
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_string())
            .find(|hint| {
                let (head, tail) = hint.split_once('…').expect("a hint");
                secret.starts_with(head) && secret.ends_with(tail)
            })
            .unwrap_or_else(|| panic!("no hint for a token in {listed}"))
    };

    // The management API, by secret: look up, change, revoke.
    let path = format!("/manage/tokens/{by_api}");
    assert_eq!(proxy.manage("GET", &path, None).status, 200);
    let patched = proxy.manage("PATCH", &path, Some(json!({"alias": "renamed"})));
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(proxy.manage("DELETE", &path, None).status, 204);
    // The CLI, by secret.
    let revoked = Cli::manage(["token", "revoke", by_cli.as_str()])
        .args([
            "--manage-api-base-url",
            proxy.url().as_str(),
            "--management-token",
            MANAGEMENT_TOKEN,
        ])
        .run();
    revoked.ok();
    // By the hex SHA-256 of the secret, the key's lookup id.
    let hash = sha256_hex(&by_hash);
    assert_eq!(
        proxy
            .manage("GET", &format!("/manage/tokens/{hash}"), None)
            .status,
        200
    );
    // The LiteLLM routes, by secret in the query, the path and the body.
    assert_eq!(
        proxy
            .manage("GET", &format!("/key/info?key={by_litellm}"), None)
            .status,
        200
    );
    // A regenerated key answers to its new secret only.
    let regenerated = proxy.manage("POST", &format!("/key/{by_litellm}/regenerate"), None);
    assert_eq!(regenerated.status, 200, "{}", regenerated.text());
    let renewed = regenerated.json()["key"].as_str().unwrap().to_string();
    proxy.manage("GET", &format!("/manage/tokens/{by_litellm}/x"), None);
    let deleted = proxy.manage("POST", "/key/delete", Some(json!({"keys": [renewed]})));
    assert_eq!(deleted.status, 200, "{}", deleted.text());

    let log = audit(&proxy, "?limit=1000");
    let text = log.to_string();
    let secrets = [&by_api, &by_cli, &by_litellm, &by_hash, &renewed];
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret} in the audit log: {text}"
        );
        assert!(
            !text.contains(&sha256_hex(secret)),
            "the SHA-256 of {secret} in the audit log: {text}"
        );
    }
    // Tokens are named as the listings show them.
    let all = entries(&log);
    let targets: Vec<&str> = all.iter().filter_map(|e| e["target"].as_str()).collect();
    for (method, secret) in [
        ("GET", &by_api),
        ("PATCH", &by_api),
        ("DELETE", &by_api),
        ("DELETE", &by_cli),
    ] {
        let target = format!("/manage/tokens/{}", hint_of(secret));
        assert!(
            all.iter()
                .any(|e| e["method"] == method && e["target"] == target.as_str()),
            "no {method} {target} in {targets:?}"
        );
    }

    // Nor anywhere in the store's files.
    proxy.proc.signal("TERM");
    assert_eq!(
        proxy
            .proc
            .wait_exit(std::time::Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(0)
    );
    let files = files_under(&db);
    assert!(files.iter().any(|(path, _)| path.ends_with("data.mdb")));
    for (path, bytes) in &files {
        for secret in secrets {
            for needle in [secret.to_string(), sha256_hex(secret)] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn secrets_in_entries_of_an_older_version_are_replaced_on_start() {
    use llm_proxy::store::{AuditEntry, Store};
    let dir = TempDir::new("audit-older");
    let db = dir.path().join("data");
    let secret = "sk-older-version-secret-0123456789";
    {
        // What an older version wrote for `manage token revoke <secret>`
        // and a LiteLLM key lookup.
        let store = Store::open(&db, None).expect("open the store");
        for (method, target) in [
            ("DELETE", format!("/manage/tokens/{secret}")),
            ("GET", format!("/key/info?key={secret}")),
            ("GET", "/manage/projects".to_string()),
        ] {
            let entry = AuditEntry {
                id: 0,
                at: 1_700_000_000_000,
                actor: "master_key".into(),
                remote: "127.0.0.1:1".into(),
                method: method.into(),
                target,
                status: 200,
                outcome: "ok".into(),
                body: String::new(),
                request_id: "older".into(),
            };
            store.append_audit(entry, 1000).expect("append");
        }
        store
            .forget_audit_scrub_for_tests()
            .expect("forget the scrub");
    }
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.display().to_string())
        .start();
    let log = audit(&proxy, "?limit=1000");
    assert!(!log.to_string().contains(secret), "{log}");
    let older: Vec<Value> = entries(&log)
        .into_iter()
        .filter(|e| e["request_id"] == "older")
        .collect();
    let targets: Vec<&str> = older.iter().filter_map(|e| e["target"].as_str()).collect();
    assert_eq!(
        targets,
        [
            "/manage/projects",
            "/key/info?key=***",
            "/manage/tokens/sk-olde…6789"
        ]
    );
}
