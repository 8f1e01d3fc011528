//! The user routes of the LiteLLM-compatible management API against the
//! real server: `/user/new` (and the key it makes), `/user/list`,
//! `/user/info`, `/user/update` and `/user/delete`: roles, emails unique
//! whatever their case, paging, null clearing a field, every error path
//! with its status and envelope (`param` the field), a user's teams kept
//! in step with the teams' members, and a user's keys deleted with the
//! user.

use std::collections::BTreeSet;

use crate::common::litellm::*;
use crate::common::store::*;
use crate::common::*;
use serde_json::json;

const USER_FIELDS: [&str; 17] = [
    "user_id",
    "user_email",
    "user_role",
    "user_alias",
    "teams",
    "models",
    "max_budget",
    "spend",
    "metadata",
    "created_at",
    "updated_at",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "budget_duration",
    "soft_budget",
    "budget_reset_at",
];

const ROLES: [&str; 4] = [
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
];

// --- users -------------------------------------------------------------------------

#[test]
fn user_new_defaults_roles_and_the_automatic_key() {
    let (_mock, proxy) = start();
    let answer = ok(post(&proxy, "/user/new", json!({})));
    let mut fields = USER_FIELDS.to_vec();
    fields.extend(["key", "token"]);
    assert_fields(&answer, &fields);
    assert!(uuid::Uuid::parse_str(answer["user_id"].as_str().unwrap()).is_ok());
    assert_eq!(answer["user_role"], "internal_user");
    for field in ["user_email", "user_alias", "max_budget"] {
        assert!(answer[field].is_null(), "{field} in {answer}");
    }
    assert_eq!(answer["teams"], json!([]));
    assert_eq!(answer["models"], json!([]));
    assert_eq!(answer["spend"], 0.0);
    assert_eq!(answer["metadata"], json!({}));
    let key = secret(&answer);
    assert_eq!(answer["token"], sha256_hex(&key));
    // The key belongs to the user and works.
    let info = key_info(&proxy, &key);
    assert_eq!(info["user_id"], answer["user_id"]);
    ok(get_as(&proxy, "/models", &key));

    for role in ROLES {
        let user = ok(post(&proxy, "/user/new", json!({"user_role": role})));
        assert_eq!(user["user_role"], role);
    }
    for role in [json!("god"), json!("PROXY_ADMIN"), json!(1)] {
        assert_bad_field(
            &post(&proxy, "/user/new", json!({"user_role": role})),
            "user_role",
        );
    }
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 5);
}

#[test]
fn user_new_with_every_field_and_without_a_key() {
    let (_mock, proxy) = start();
    new_team(&proxy, "red");
    new_team(&proxy, "blue");
    let answer = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "user_email": "Ann@Example.com", "user_role": "proxy_admin",
            "user_alias": "Ann", "teams": ["red", "blue"], "max_budget": "20",
            "models": ["gpt-x"], "metadata": {"dept": "ml"}, "auto_create_key": false}),
    ));
    assert_fields(&answer, &USER_FIELDS);
    assert_eq!(answer["user_id"], "ann");
    assert_eq!(answer["user_email"], "Ann@Example.com");
    assert_eq!(answer["user_role"], "proxy_admin");
    assert_eq!(answer["user_alias"], "Ann");
    assert_eq!(answer["teams"], json!(["red", "blue"]));
    assert_eq!(answer["max_budget"], 20.0);
    assert_eq!(answer["models"], json!(["gpt-x"]));
    assert_eq!(answer["metadata"], json!({"dept": "ml"}));
    assert_eq!(ok(get(&proxy, "/key/list?user_id=ann"))["total_count"], 0);

    // With a key: the key carries the user's models.
    let bob = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "models": ["a", "b"], "auto_create_key": true}),
    ));
    let info = key_info(&proxy, &secret(&bob));
    assert_eq!(info["user_id"], "bob");
    assert_eq!(info["models"], json!(["a", "b"]));

    let taken = post(&proxy, "/user/new", json!({"user_id": "ann"}));
    let message = assert_bad_field(&taken, "user_id");
    assert!(message.contains("ann"), "{message}");
    assert_each_bad(
        &proxy,
        "/user/new",
        json!([
            ["user_email", {"user_email": "not-an-email"}],
            ["max_budget", {"max_budget": -1}],
            ["max_budget", {"max_budget": "x"}],
            ["teams", {"teams": "red"}],
            ["models", {"models": {}}],
            ["auto_create_key", {"auto_create_key": "no"}],
        ]),
    );
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 2);
}

#[test]
fn user_emails_are_unique_whatever_their_case() {
    let (_mock, proxy) = start();
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "user_email": "Ann@Example.com"}),
    ));
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "user_email": "bob@example.com"}),
    ));
    for email in ["ann@example.com", "ANN@EXAMPLE.COM", " Ann@Example.com "] {
        let response = post(&proxy, "/user/new", json!({"user_email": email}));
        assert_bad_field(&response, "user_email");
        let response = post(
            &proxy,
            "/user/update",
            json!({"user_id": "bob", "user_email": email}),
        );
        assert_bad_field(&response, "user_email");
    }
    // A user may change the case of its own email.
    let same = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "user_email": "ANN@example.com"}),
    ));
    assert_eq!(same["user_email"], "ANN@example.com");
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 2);
}

#[test]
fn user_list_pages() {
    let mock = Mock::start();
    let proxy = start_empty(&mock);
    assert_eq!(
        ok(get(&proxy, "/user/list")),
        json!({"users": [], "total": 0, "page": 1, "page_size": 25, "total_pages": 0})
    );
    let ids: Vec<String> = (0..5).map(|i| format!("user-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let role = if i % 2 == 0 {
            "internal_user"
        } else {
            "proxy_admin_viewer"
        };
        ok(post(
            &proxy,
            "/user/new",
            json!({"user_id": id, "user_role": role, "auto_create_key": false}),
        ));
    }
    let all = ok(get(&proxy, "/user/list"));
    assert_fields(
        &all,
        &["users", "total", "page", "page_size", "total_pages"],
    );
    let users = all["users"].as_array().unwrap();
    assert_eq!(users.len(), 5);
    for user in users {
        assert_fields(user, &USER_FIELDS);
    }
    let mut paged = Vec::new();
    for (page, count) in [(1, 2), (2, 2), (3, 1)] {
        let body = ok(get(&proxy, &format!("/user/list?page={page}&page_size=2")));
        assert_eq!(body["total"], 5);
        assert_eq!(body["page"], page);
        assert_eq!(body["page_size"], 2);
        assert_eq!(body["total_pages"], 3);
        let users = body["users"].as_array().unwrap();
        assert_eq!(users.len(), count);
        paged.extend(
            users
                .iter()
                .map(|u| u["user_id"].as_str().unwrap().to_string()),
        );
    }
    // Oldest first.
    assert_eq!(paged, ids);
    let admins = ok(get(&proxy, "/user/list?role=proxy_admin_viewer"));
    assert_eq!(admins["total"], 2);
    let names: Vec<&str> = admins["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["user-1", "user-3"]);
    for (query, param) in [
        ("page=0", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("role=god", "user_role"),
    ] {
        assert_bad_field(&get(&proxy, &format!("/user/list?{query}")), param);
    }
}

#[test]
fn user_info_shows_the_user_and_its_keys() {
    let (_mock, proxy) = start();
    new_team(&proxy, "red");
    let ann = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "teams": ["red"], "user_email": "ann@example.com"}),
    ));
    let second = generate(&proxy, json!({"user_id": "ann", "key_alias": "ann-2"}));
    generate(&proxy, json!({"user_id": "bob"}));
    let info = ok(get(&proxy, "/user/info?user_id=ann"));
    assert_fields(&info, &["user_id", "user_info", "keys", "teams"]);
    assert_eq!(info["user_id"], "ann");
    assert_eq!(info["teams"], json!(["red"]));
    assert_fields(&info["user_info"], &USER_FIELDS);
    assert_eq!(info["user_info"]["user_email"], "ann@example.com");
    let keys = info["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_fields(key, &KEY_FIELDS);
        assert_eq!(key["user_id"], "ann");
    }
    let tokens: BTreeSet<&str> = keys.iter().map(|k| k["token"].as_str().unwrap()).collect();
    assert_eq!(
        tokens,
        BTreeSet::from([
            ann["token"].as_str().unwrap(),
            second["token"].as_str().unwrap()
        ])
    );
    assert!(!info.to_string().contains(&secret(&ann)));
    let message = assert_not_found(&get(&proxy, "/user/info?user_id=nobody"));
    assert!(message.contains("nobody"), "{message}");
    assert_bad_field(&get(&proxy, "/user/info"), "user_id");
    assert_bad_field(&get(&proxy, "/user/info?user_id="), "user_id");
}

#[test]
fn user_update_changes_fields_and_null_clears() {
    let (_mock, proxy) = start();
    new_team(&proxy, "red");
    new_team(&proxy, "blue");
    let created = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "user_email": "bob@example.com", "user_alias": "Bob",
            "max_budget": 5, "teams": ["red"], "models": ["a"], "auto_create_key": false}),
    ));
    let updated = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "bob", "user_email": "robert@example.com",
            "user_role": "internal_user_viewer", "user_alias": "Robert", "teams": ["blue"],
            "max_budget": "3.5", "models": ["b", "c"], "metadata": {"k": "v"}}),
    ));
    assert_fields(&updated, &USER_FIELDS);
    assert_eq!(updated["user_email"], "robert@example.com");
    assert_eq!(updated["user_role"], "internal_user_viewer");
    assert_eq!(updated["user_alias"], "Robert");
    assert_eq!(updated["teams"], json!(["blue"]));
    assert_eq!(updated["max_budget"], 3.5);
    assert_eq!(updated["models"], json!(["b", "c"]));
    assert_eq!(updated["metadata"], json!({"k": "v"}));
    assert_eq!(updated["created_at"], created["created_at"]);
    let cleared = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "bob", "user_email": null, "user_alias": null, "max_budget": null}),
    ));
    for field in ["user_email", "user_alias", "max_budget"] {
        assert!(cleared[field].is_null(), "{field} in {cleared}");
    }
    assert_eq!(cleared["models"], json!(["b", "c"]));
    assert_eq!(cleared["user_role"], "internal_user_viewer");
    assert_eq!(
        ok(get(&proxy, "/user/info?user_id=bob"))["user_info"],
        cleared
    );
    // The email is free again.
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_email": "bob@example.com"}),
    ));

    assert_not_found(&post(&proxy, "/user/update", json!({"user_id": "nobody"})));
    assert_bad_field(&post(&proxy, "/user/update", json!({})), "user_id");
    assert_each_bad(
        &proxy,
        "/user/update",
        json!([
            ["user_role", {"user_id": "bob", "user_role": "root"}],
            ["user_email", {"user_id": "bob", "user_email": "nope"}],
            ["max_budget", {"user_id": "bob", "max_budget": -1}],
            ["teams", {"user_id": "bob", "teams": 1}],
        ]),
    );
}

// --- teams ------------------------------------------------------------------------

/// The members of a team as `/team/info` shows them: `(user_id, role)`.
#[track_caller]
fn members(proxy: &Proxy, team_id: &str) -> Vec<(String, String)> {
    let info = ok(get(proxy, &format!("/team/info?team_id={team_id}")));
    info["team_info"]["members_with_roles"]
        .as_array()
        .unwrap_or_else(|| panic!("{info}"))
        .iter()
        .map(|m| {
            let text = |field: &str| m[field].as_str().unwrap().to_string();
            (text("user_id"), text("role"))
        })
        .collect()
}

fn member(user_id: &str, role: &str) -> (String, String) {
    (user_id.to_string(), role.to_string())
}

#[track_caller]
fn user_teams(proxy: &Proxy, user_id: &str) -> serde_json::Value {
    ok(get(proxy, &format!("/user/info?user_id={user_id}")))["teams"].clone()
}

#[test]
fn user_teams_must_exist_and_nothing_is_written_otherwise() {
    let (_mock, proxy) = start();
    new_team(&proxy, "red");
    let keys = ok(get(&proxy, "/key/list"))["total_count"].clone();

    let response = post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "teams": ["red", "nope"]}),
    );
    let message = assert_not_found(&response);
    assert!(message.contains("nope"), "{message}");
    // Neither the user, nor its key, nor a membership of the team that
    // exists.
    assert_not_found(&get(&proxy, "/user/info?user_id=ann"));
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 0);
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], keys);
    assert_eq!(members(&proxy, "red"), []);

    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "teams": ["red"], "user_alias": "Ann",
            "auto_create_key": false}),
    ));
    let before = ok(get(&proxy, "/user/info?user_id=ann"))["user_info"].clone();
    let response = post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "user_alias": "Annie", "teams": ["ghost"]}),
    );
    let message = assert_not_found(&response);
    assert!(message.contains("ghost"), "{message}");
    // The whole update is refused: the alias too, and ann stays in red.
    assert_eq!(
        ok(get(&proxy, "/user/info?user_id=ann"))["user_info"],
        before
    );
    assert_eq!(members(&proxy, "red"), [member("ann", "user")]);
}

#[test]
fn a_new_user_is_a_member_of_its_teams() {
    let (_mock, proxy) = start();
    new_team(&proxy, "red");
    new_team(&proxy, "blue");
    let ann = ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "teams": ["red", "blue", "red"]}),
    ));
    assert_eq!(ann["teams"], json!(["red", "blue"]));
    assert_eq!(members(&proxy, "red"), [member("ann", "user")]);
    assert_eq!(members(&proxy, "blue"), [member("ann", "user")]);
    let listed = ok(get(&proxy, "/team/list?user_id=ann"));
    let ids: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["team_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["red", "blue"]));
    // The member is an ordinary member: /team/member_delete takes it out.
    ok(post(
        &proxy,
        "/team/member_delete",
        json!({"team_id": "red", "user_id": "ann"}),
    ));
    assert_eq!(user_teams(&proxy, "ann"), json!(["blue"]));
    assert_eq!(members(&proxy, "red"), []);
}

#[test]
fn user_update_moves_the_user_between_teams() {
    let (_mock, proxy) = start();
    for team in ["red", "blue", "green"] {
        new_team(&proxy, team);
    }
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "teams": ["red"], "auto_create_key": false}),
    ));
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "teams": ["red"], "auto_create_key": false}),
    ));

    // Out of red, into blue and green.
    let moved = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "teams": ["blue", "green"]}),
    ));
    assert_eq!(moved["teams"], json!(["blue", "green"]));
    assert_eq!(user_teams(&proxy, "ann"), json!(["blue", "green"]));
    assert_eq!(members(&proxy, "red"), [member("bob", "user")]);
    assert_eq!(members(&proxy, "blue"), [member("ann", "user")]);
    assert_eq!(members(&proxy, "green"), [member("ann", "user")]);

    // And back: into red, out of green.
    let back = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "teams": ["red", "blue"]}),
    ));
    assert_eq!(back["teams"], json!(["red", "blue"]));
    assert_eq!(
        members(&proxy, "red"),
        [member("bob", "user"), member("ann", "user")]
    );
    assert_eq!(members(&proxy, "blue"), [member("ann", "user")]);
    assert_eq!(members(&proxy, "green"), []);

    // An update without teams leaves them; an empty list leaves every team.
    let same = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "user_alias": "Ann"}),
    ));
    assert_eq!(same["teams"], json!(["red", "blue"]));
    let none = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "teams": []}),
    ));
    assert_eq!(none["teams"], json!([]));
    assert_eq!(members(&proxy, "red"), [member("bob", "user")]);
    assert_eq!(members(&proxy, "blue"), []);
    assert_eq!(user_teams(&proxy, "bob"), json!(["red"]));
}

#[test]
fn user_update_keeps_a_team_admins_role() {
    let (_mock, proxy) = start();
    new_team(&proxy, "red");
    new_team(&proxy, "blue");
    let ann = secret(&ok(post(&proxy, "/user/new", json!({"user_id": "ann"}))));
    ok(post(
        &proxy,
        "/team/member_add",
        json!({"team_id": "red", "member": {"user_id": "ann", "role": "admin"}}),
    ));
    assert_eq!(user_teams(&proxy, "ann"), json!(["red"]));

    let updated = ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "teams": ["red", "blue"]}),
    ));
    assert_eq!(updated["teams"], json!(["red", "blue"]));
    assert_eq!(members(&proxy, "red"), [member("ann", "admin")]);
    assert_eq!(members(&proxy, "blue"), [member("ann", "user")]);
    // Still red's admin: she makes keys for red, not for blue.
    let generate_as = |team_id: &str| {
        let body = json!({"team_id": team_id}).to_string();
        raw(&proxy, "POST", "/key/generate", &body, Some(&ann))
    };
    assert_eq!(ok(generate_as("red"))["team_id"], "red");
    assert_lite_error(&generate_as("blue"), 403, "auth_error", None);

    // Listed again as the only team, it stays hers to administer.
    ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": "ann", "teams": ["red"]}),
    ));
    assert_eq!(members(&proxy, "red"), [member("ann", "admin")]);
    assert_eq!(members(&proxy, "blue"), []);
}

#[test]
fn user_delete_removes_their_keys() {
    let (_mock, proxy) = start();
    let ann = ok(post(&proxy, "/user/new", json!({"user_id": "ann"})));
    let auto_key = secret(&ann);
    let project_key = secret(&generate(
        &proxy,
        json!({"user_id": "ann", "project_id": proxy.project_id}),
    ));
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "bob", "auto_create_key": false}),
    ));
    let bob_key = secret(&generate(
        &proxy,
        json!({"user_id": "bob", "project_id": proxy.project_id}),
    ));
    assert_eq!(proxy.call(chat_with(&project_key)).status, 200);
    // The automatic key has no project: known, but not for pass-through.
    proxy
        .call(chat_with(&auto_key))
        .assert_error(403, "key_without_project");

    // One unknown user: 404, nobody is deleted.
    let response = post(
        &proxy,
        "/user/delete",
        json!({"user_ids": ["ann", "nobody"]}),
    );
    let message = assert_not_found(&response);
    assert!(message.contains("nobody"), "{message}");
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 2);
    assert_eq!(proxy.call(chat_with(&project_key)).status, 200);
    assert_bad_field(&post(&proxy, "/user/delete", json!({})), "user_ids");
    assert_bad_field(
        &post(&proxy, "/user/delete", json!({"user_ids": []})),
        "user_ids",
    );

    let deleted = ok(post(&proxy, "/user/delete", json!({"user_ids": ["ann"]})));
    assert_eq!(
        deleted,
        json!({"deleted_users": ["ann"], "deleted_keys": 2})
    );
    for key in [&auto_key, &project_key] {
        proxy
            .call(chat_with(key))
            .assert_error(401, "invalid_api_key");
        assert_not_found(&get(&proxy, &format!("/key/info?key={}", encode(key))));
    }
    assert_not_found(&get(&proxy, "/user/info?user_id=ann"));
    assert_eq!(ok(get(&proxy, "/key/list?user_id=ann"))["total_count"], 0);
    // Bob and his key are untouched.
    assert_eq!(proxy.call(chat_with(&bob_key)).status, 200);
    assert_eq!(ok(get(&proxy, "/user/list"))["total"], 1);
}
