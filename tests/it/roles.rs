//! Roles on the management API: every route (the LiteLLM-compatible ones
//! and `/manage/...`) × every kind of caller (the master key, a user's key
//! for each role, a key without a user), allowed or exactly 403; an
//! `internal_user` reaches only its own keys and user, within its user's
//! limits; a signed-in user's key acts with its user's role; team admins
//! manage their teams' keys and members.

use crate::common::litellm::*;
use crate::common::*;
use serde_json::{Value, json};

/// The callers of the matrix.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Master,
    Admin,
    AdminViewer,
    User,
    UserViewer,
    /// A key without a user.
    Plain,
}

const EVERY: [Who; 6] = [
    Who::Master,
    Who::Admin,
    Who::AdminViewer,
    Who::User,
    Who::UserViewer,
    Who::Plain,
];

impl Who {
    /// Its letter in the matrix's "allowed" column.
    fn letter(self) -> char {
        match self {
            Who::Master => 'M',
            Who::Admin => 'A',
            Who::AdminViewer => 'V',
            Who::User => 'U',
            Who::UserViewer => 'W',
            Who::Plain => 'K',
        }
    }

    /// Its user and that user's role.
    fn user(self) -> Option<(&'static str, &'static str)> {
        match self {
            Who::Admin => Some(("adele", "proxy_admin")),
            Who::AdminViewer => Some(("victor", "proxy_admin_viewer")),
            Who::User => Some(("ursula", "internal_user")),
            Who::UserViewer => Some(("wanda", "internal_user_viewer")),
            Who::Master | Who::Plain => None,
        }
    }

    /// How a refusal names it.
    fn named(self) -> &'static str {
        self.user().map_or("no role", |(_, role)| role)
    }
}

/// A user with `role` (and `fields`), with a key of its own; returns the key.
fn user_with_key(proxy: &Proxy, user_id: &str, role: &str, fields: Value) -> String {
    let mut body = json!({"user_id": user_id, "user_role": role});
    for (name, value) in fields.as_object().unwrap() {
        body[name] = value.clone();
    }
    let answer = ok(post(proxy, "/user/new", body));
    answer["key"].as_str().unwrap().to_string()
}

/// A proxy with a model, a user for each role and a key for each caller.
fn start_with_callers() -> (Mock, Proxy, Vec<(Who, String)>) {
    let (mock, proxy) = start();
    add_model(&proxy, "gpt-x", "gpt-4o");
    let keys = EVERY
        .iter()
        .map(|&who| {
            let key = match who.user() {
                Some((user_id, role)) => user_with_key(&proxy, user_id, role, json!({})),
                None if who == Who::Master => MANAGEMENT_TOKEN.to_string(),
                None => CLIENT_KEY.to_string(),
            };
            (who, key)
        })
        .collect();
    (mock, proxy, keys)
}

/// A project id that names no project.
const NO_PROJECT: &str = "00000000-0000-4000-8000-000000000000";

/// Every management route: method, path, body and who may call it (the
/// letters of `Who::letter`). `{key}` is a fresh key of the caller's user
/// (a key without a user for the master key and the plain key), `{user}`
/// the caller's user (`nobody` without one), `{project}` no project.
const ROUTES: &[(&str, &str, &str, &str)] = &[
    // The model listings.
    ("GET", "/models", "", "MAVUWK"),
    ("GET", "/v1/models", "", "MAVUWK"),
    ("GET", "/models/gpt-x", "", "MAVUWK"),
    ("GET", "/v1/models/gpt-x", "", "MAVUWK"),
    ("GET", "/model/info", "", "MAVUWK"),
    ("GET", "/v1/model/info", "", "MAVUWK"),
    ("GET", "/model_group/info", "", "MAVUWK"),
    // Models and credentials.
    ("POST", "/model/new", "{}", "MA"),
    ("POST", "/model/update", "{}", "MA"),
    ("POST", "/model/delete", "{}", "MA"),
    ("GET", "/credentials", "", "MAV"),
    ("POST", "/credentials", "{}", "MA"),
    ("GET", "/credentials/by_name/none", "", "MAV"),
    ("DELETE", "/credentials/none", "", "MA"),
    // Keys.
    ("POST", "/key/generate", "{}", "MAU"),
    ("GET", "/key/info?key={key}", "", "MAVUW"),
    ("GET", "/key/list", "", "MAVUW"),
    (
        "POST",
        "/key/update",
        r#"{"key": "{key}", "metadata": {"touched": true}}"#,
        "MAU",
    ),
    ("POST", "/key/block", r#"{"key": "{key}"}"#, "MA"),
    ("POST", "/key/unblock", r#"{"key": "{key}"}"#, "MA"),
    ("POST", "/key/delete", r#"{"keys": ["{key}"]}"#, "MAU"),
    // Users.
    ("POST", "/user/new", r#"{"auto_create_key": false}"#, "MA"),
    ("GET", "/user/list", "", "MAV"),
    ("GET", "/user/info", "", "MAVUW"),
    ("GET", "/user/info?user_id={user}", "", "MAVUW"),
    (
        "POST",
        "/user/update",
        r#"{"user_id": "{user}", "user_alias": "renamed"}"#,
        "MAU",
    ),
    ("POST", "/user/delete", r#"{"user_ids": ["nobody"]}"#, "MA"),
    // Teams (`team_id` names no team: a team admin is tested apart).
    ("POST", "/team/new", r#"{"team_alias": "new"}"#, "MA"),
    ("POST", "/team/update", r#"{"team_id": "none"}"#, "MA"),
    ("POST", "/team/delete", r#"{"team_ids": ["none"]}"#, "MA"),
    ("GET", "/team/info?team_id=none", "", "MAV"),
    ("GET", "/team/list", "", "MAV"),
    ("GET", "/team/available", "", "MAVUW"),
    (
        "POST",
        "/team/member_add",
        r#"{"team_id": "none", "member": {"user_id": "x", "role": "user"}}"#,
        "MA",
    ),
    (
        "POST",
        "/team/member_delete",
        r#"{"team_id": "none", "user_id": "x"}"#,
        "MA",
    ),
    ("POST", "/team/block", r#"{"team_id": "none"}"#, "MA"),
    ("POST", "/team/unblock", r#"{"team_id": "none"}"#, "MA"),
    // Projects, tokens, the audit log, the cache.
    ("GET", "/manage/projects", "", "MA"),
    ("POST", "/manage/projects", "{}", "MA"),
    ("GET", "/manage/projects/{project}", "", "MA"),
    ("PATCH", "/manage/projects/{project}", "{}", "MA"),
    ("DELETE", "/manage/projects/{project}", "", "MA"),
    ("POST", "/manage/projects/{project}/tokens/revoke", "", "MA"),
    ("GET", "/manage/tokens", "", "MA"),
    ("POST", "/manage/tokens", "{}", "MA"),
    ("GET", "/manage/tokens/{key}", "", "MA"),
    ("PATCH", "/manage/tokens/{key}", "{}", "MA"),
    ("DELETE", "/manage/tokens/{key}", "", "MA"),
    ("GET", "/manage/audit", "", "MA"),
    ("GET", "/manage/audit/1", "", "MA"),
    ("POST", "/manage/cache/purge", "{}", "MA"),
];

/// The route with its placeholders filled for `who`.
fn fill(proxy: &Proxy, who: Who, text: &str) -> String {
    let user = who.user().map(|(user_id, _)| user_id);
    let mut text = text
        .replace("{user}", user.unwrap_or("nobody"))
        .replace("{project}", NO_PROJECT);
    if text.contains("{key}") {
        let key = generate_key(proxy, json!({"user_id": user}));
        text = text.replace("{key}", &key);
    }
    text
}

#[test]
fn every_route_for_every_role_is_allowed_or_403() {
    let (_mock, proxy, keys) = start_with_callers();
    let mut refused = 0;
    for &(method, path, body, allowed) in ROUTES {
        for (who, key) in &keys {
            let target = fill(&proxy, *who, path);
            let body = fill(&proxy, *who, body);
            let response = raw(&proxy, method, &target, &body, Some(key));
            let route = format!("{method} {}", path.split('?').next().unwrap());
            if allowed.contains(who.letter()) {
                assert!(
                    ![401, 403].contains(&response.status) && response.status < 500,
                    "{route} as {who:?}: {} {}",
                    response.status,
                    response.text()
                );
                continue;
            }
            refused += 1;
            assert_eq!(
                response.status,
                403,
                "{route} as {who:?}: {}",
                response.text()
            );
            let error = &response.json()["error"];
            let code = if path.starts_with("/manage/") {
                "role_forbidden"
            } else {
                "403"
            };
            assert_eq!(error["code"], code, "{route} as {who:?}: {error}");
            let message = error["message"].as_str().unwrap();
            assert!(
                message.contains(who.named()),
                "{route} as {who:?}: {message}"
            );
            let route_path = path.split('?').next().unwrap().replace("{key}", "");
            let route_path = route_path.split("{").next().unwrap();
            assert!(
                message.contains(route_path),
                "{route} as {who:?}: {message}"
            );
        }
    }
    assert!(refused > 100, "{refused} refusals");
    // The readiness check needs no key at all.
    for key in keys.iter().map(|(_, key)| Some(key.as_str())).chain([None]) {
        ok(raw(&proxy, "GET", "/health/readiness", "", key));
    }
}

#[test]
fn an_internal_user_reaches_only_its_own_keys() {
    let (_mock, proxy) = start();
    let ann = user_with_key(&proxy, "ann", "internal_user", json!({}));
    user_with_key(&proxy, "bob", "internal_user", json!({}));
    let bobs = generate_key(&proxy, json!({"user_id": "bob", "key_alias": "bobs"}));
    let as_ann = |method: &str, path: &str, body: Value| {
        raw(&proxy, method, path, &body.to_string(), Some(&ann))
    };

    // Another user's key: 403 that names the role and the route; an unknown
    // key: 404, as for the master key.
    let info = format!("/key/info?key={}", encode(&bobs));
    let refusals = [
        ("GET", info.as_str(), json!({})),
        (
            "POST",
            "/key/update",
            json!({"key": bobs, "metadata": {"mine": true}}),
        ),
        ("POST", "/key/delete", json!({"keys": [bobs]})),
        ("POST", "/key/delete", json!({"key_aliases": ["bobs"]})),
        ("POST", "/key/block", json!({"key": bobs})),
        ("POST", "/key/unblock", json!({"key": bobs})),
    ];
    for (method, path, body) in refusals {
        let response = as_ann(method, path, body);
        let message = assert_lite_error(&response, 403, "auth_error", None);
        assert!(message.contains("internal_user"), "{message}");
        assert!(
            message.contains(path.split('?').next().unwrap()),
            "{message}"
        );
    }
    assert_not_found(&as_ann(
        "GET",
        "/key/info?key=sk-nothing-here-0000",
        json!({}),
    ));
    assert_not_found(&as_ann(
        "POST",
        "/key/update",
        json!({"key": "sk-nothing-here-0000", "metadata": {}}),
    ));
    // Bob's key is untouched.
    let bob_info = key_info(&proxy, &bobs);
    assert_eq!(bob_info["blocked"], false);
    assert_eq!(bob_info["metadata"], json!({}));

    // Its keys are its own: made for itself, never for another user, a
    // project or a team it does not administer.
    let made = ok(as_ann(
        "POST",
        "/key/generate",
        json!({"key_alias": "anns"}),
    ));
    assert_eq!(made["user_id"], "ann");
    for (body, field) in [
        (json!({"user_id": "bob"}), "bob"),
        (json!({"project_id": proxy.project_id}), "project_id"),
        (json!({"team_id": "red"}), "red"),
    ] {
        let response = as_ann("POST", "/key/generate", body);
        let message = assert_lite_error(&response, 403, "auth_error", None);
        assert!(message.contains(field), "{message}");
    }

    // The listing shows its keys only, whatever it asks for.
    let list = ok(as_ann(
        "GET",
        "/key/list?return_full_object=true",
        json!({}),
    ));
    assert_eq!(list["total_count"], 2, "{list}");
    for key in list["keys"].as_array().unwrap() {
        assert_eq!(key["user_id"], "ann", "{key}");
    }
    let list = ok(as_ann("GET", "/key/list?user_id=bob", json!({})));
    assert_eq!(list["total_count"], 0, "{list}");
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 5);

    // Its own keys it reads, changes and deletes.
    let mine = made["key"].as_str().unwrap();
    let info = ok(as_ann(
        "GET",
        &format!("/key/info?key={}", encode(mine)),
        json!({}),
    ));
    assert_eq!(info["info"]["key_alias"], "anns");
    let updated = ok(as_ann(
        "POST",
        "/key/update",
        json!({"key": mine, "key_alias": "renamed", "max_requests": 10}),
    ));
    assert_eq!(updated["key_alias"], "renamed");
    // But not its owner, its spend, or whether it is blocked.
    for (body, field) in [
        (json!({"key": mine, "user_id": "bob"}), "user_id"),
        (json!({"key": mine, "spend": 0}), "spend"),
        (json!({"key": mine, "blocked": true}), "block"),
        (json!({"key": mine, "team_id": "red"}), "team"),
    ] {
        let response = as_ann("POST", "/key/update", body);
        let message = assert_lite_error(&response, 403, "auth_error", None);
        assert!(message.contains(field), "{message}");
    }
    assert_eq!(key_info(&proxy, mine)["blocked"], false);
    ok(as_ann(
        "POST",
        "/key/delete",
        json!({"key_aliases": ["renamed"]}),
    ));
    assert_not_found(&get(&proxy, &format!("/key/info?key={}", encode(mine))));
}

#[test]
fn an_internal_user_gives_its_keys_no_more_than_its_own_limits() {
    let (_mock, proxy) = start();
    let limits = json!({"max_budget": 10, "rpm_limit": 100, "tpm_limit": 1000});
    let ann = user_with_key(&proxy, "ann", "internal_user", limits);
    let as_ann = |path: &str, body: Value| raw(&proxy, "POST", path, &body.to_string(), Some(&ann));
    for (body, field) in [
        (json!({"max_budget": 20}), "max_budget"),
        (json!({"rpm_limit": 101}), "rpm_limit"),
        (json!({"tpm_limit": "5000"}), "tpm_limit"),
    ] {
        let response = as_ann("/key/generate", body);
        let message = assert_lite_error(&response, 403, "auth_error", None);
        assert!(message.contains(field), "{message}");
    }
    let made = ok(as_ann(
        "/key/generate",
        json!({"max_budget": 5, "rpm_limit": 100, "tpm_limit": 500}),
    ));
    let key = made["key"].as_str().unwrap();
    for (body, field) in [
        (json!({"key": key, "max_budget": 10.5}), "max_budget"),
        (json!({"key": key, "rpm_limit": 200}), "rpm_limit"),
        (json!({"key": key, "tpm_limit": 1001}), "tpm_limit"),
    ] {
        let response = as_ann("/key/update", body);
        let message = assert_lite_error(&response, 403, "auth_error", None);
        assert!(message.contains(field), "{message}");
    }
    let updated = ok(as_ann(
        "/key/update",
        json!({"key": key, "max_budget": 10, "tpm_limit": 1000, "max_parallel_requests": 2}),
    ));
    assert_eq!(updated["max_budget"], 10.0);
    assert_eq!(updated["rpm_limit"], 100);
    assert_eq!(updated["tpm_limit"], 1000);
    // The master key is not held to the user's limits.
    let answer = generate(&proxy, json!({"user_id": "ann", "max_budget": 20}));
    assert_eq!(answer["max_budget"], 20.0);
}

#[test]
fn an_internal_user_reads_and_updates_only_itself() {
    let (_mock, proxy) = start();
    new_team(&proxy, "red");
    let ann = user_with_key(&proxy, "ann", "internal_user", json!({"teams": ["red"]}));
    user_with_key(&proxy, "bob", "internal_user", json!({}));
    let as_ann = |method: &str, path: &str, body: Value| {
        raw(&proxy, method, path, &body.to_string(), Some(&ann))
    };

    // Without user_id, /user/info answers for the caller.
    let info = ok(as_ann("GET", "/user/info", json!({})));
    assert_eq!(info["user_id"], "ann");
    assert_eq!(info["user_info"]["user_role"], "internal_user");
    assert_eq!(info["keys"].as_array().unwrap().len(), 1, "{info}");
    assert_eq!(info["teams"], json!(["red"]));
    assert_eq!(
        ok(as_ann("GET", "/user/info?user_id=ann", json!({})))["user_id"],
        "ann"
    );
    let response = as_ann("GET", "/user/info?user_id=bob", json!({}));
    let message = assert_lite_error(&response, 403, "auth_error", None);
    assert!(
        message.contains("internal_user") && message.contains("bob"),
        "{message}"
    );

    // Its alias, email and password it changes; nothing else.
    let updated = ok(as_ann(
        "POST",
        "/user/update",
        json!({"user_alias": "Ann", "user_email": "ann@example.com", "password": "pw-1234"}),
    ));
    assert_eq!(updated["user_alias"], "Ann");
    assert_eq!(updated["user_email"], "ann@example.com");
    for field in ["user_role", "max_budget", "models", "rpm_limit", "teams"] {
        let value = match field {
            "user_role" => json!("proxy_admin"),
            "models" | "teams" => json!(["x"]),
            _ => json!(1000),
        };
        let response = as_ann(
            "POST",
            "/user/update",
            json!({"user_id": "ann", field: value}),
        );
        let message = assert_lite_error(&response, 403, "auth_error", None);
        assert!(message.contains(field), "{message}");
    }
    let response = as_ann(
        "POST",
        "/user/update",
        json!({"user_id": "bob", "user_alias": "not bob"}),
    );
    assert_lite_error(&response, 403, "auth_error", None);
    let ann_now = ok(get(&proxy, "/user/info?user_id=ann"))["user_info"].clone();
    assert_eq!(ann_now["user_role"], "internal_user");
    assert_eq!(ann_now["max_budget"], Value::Null);
    let bob_now = ok(get(&proxy, "/user/info?user_id=bob"))["user_info"].clone();
    assert_eq!(bob_now["user_alias"], Value::Null);
}

#[test]
fn viewers_read_without_changing() {
    let (_mock, proxy) = start();
    let viewer = user_with_key(&proxy, "vera", "proxy_admin_viewer", json!({}));
    let reader = user_with_key(&proxy, "wes", "internal_user_viewer", json!({}));
    let bobs = generate_key(&proxy, json!({"user_id": "bob"}));
    let info = format!("/key/info?key={}", encode(&bobs));

    // proxy_admin_viewer reads every key and user.
    assert_eq!(ok(get_as(&proxy, "/key/list", &viewer))["total_count"], 4);
    assert_eq!(ok(get_as(&proxy, &info, &viewer))["info"]["user_id"], "bob");
    assert_eq!(ok(get_as(&proxy, "/user/list", &viewer))["total"], 2);
    // internal_user_viewer reads its own only.
    let list = ok(get_as(&proxy, "/key/list", &reader));
    assert_eq!(list["total_count"], 1, "{list}");
    assert_lite_error(&get_as(&proxy, &info, &reader), 403, "auth_error", None);
    let own = format!("/key/info?key={}", encode(&reader));
    assert_eq!(ok(get_as(&proxy, &own, &reader))["info"]["user_id"], "wes");
    // Neither changes anything, its own keys included.
    for (key, role) in [
        (&viewer, "proxy_admin_viewer"),
        (&reader, "internal_user_viewer"),
    ] {
        for (path, body) in [
            ("/key/update", json!({"key": key, "metadata": {"x": 1}})),
            ("/key/delete", json!({"keys": [key]})),
            ("/key/generate", json!({})),
            ("/user/update", json!({"user_alias": "x"})),
        ] {
            let response = raw(&proxy, "POST", path, &body.to_string(), Some(key));
            let message = assert_lite_error(&response, 403, "auth_error", None);
            assert!(
                message.contains(role) && message.contains(path),
                "{message}"
            );
        }
    }
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 4);
}

#[test]
fn a_proxy_admin_users_key_is_the_master_keys_equal() {
    let (_mock, proxy) = start();
    let admin = user_with_key(&proxy, "adele", "proxy_admin", json!({}));
    let as_admin =
        |path: &str, body: Value| raw(&proxy, "POST", path, &body.to_string(), Some(&admin));
    ok(as_admin(
        "/user/new",
        json!({"user_id": "bob", "auto_create_key": false}),
    ));
    let made = ok(as_admin(
        "/key/generate",
        json!({"user_id": "bob", "max_budget": 1000, "project_id": proxy.project_id}),
    ));
    let key = made["key"].as_str().unwrap();
    assert_eq!(made["user_id"], "bob");
    assert_eq!(
        ok(as_admin("/key/block", json!({"key": key})))["blocked"],
        true
    );
    assert_eq!(ok(get_as(&proxy, "/key/list", &admin))["total_count"], 3);
    let projects = proxy.call(Req::get("/manage/projects").auth(&admin));
    assert_eq!(projects.status, 200, "{}", projects.text());
    ok(as_admin(
        "/user/update",
        json!({"user_id": "bob", "user_role": "proxy_admin"}),
    ));
    // Management calls with a user's key are audited under that key.
    let audit = proxy.manage("GET", "/manage/audit?limit=50", None).json();
    let by_key = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .unwrap()
        .iter()
        .filter(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("key:")))
        .count();
    assert!(by_key >= 4, "{audit}");
}

#[test]
fn a_signed_in_users_key_acts_with_its_users_role() {
    let mock = Mock::start();
    let proxy = crate::login::start(&mock, &[]);
    let users = ok(get(&proxy, "/user/list"));
    let alice = users["users"][0]["user_id"].as_str().unwrap().to_string();
    ok(post(
        &proxy,
        "/user/update",
        json!({"user_id": alice, "user_role": "proxy_admin_viewer"}),
    ));
    let ready = crate::login::log_in(&proxy, "machine-roles");
    let key = ready["key"].as_str().unwrap();
    let list = ok(get_as(&proxy, "/key/list", key));
    assert!(list["total_count"].as_u64().unwrap() >= 2, "{list}");
    let response = raw(&proxy, "POST", "/key/generate", "{}", Some(key));
    let message = assert_lite_error(&response, 403, "auth_error", None);
    assert!(
        message.contains("proxy_admin_viewer") && message.contains("/key/generate"),
        "{message}"
    );
}

#[test]
fn a_team_admin_manages_only_its_teams_keys_and_members() {
    let (_mock, proxy) = start();
    let ann = user_with_key(&proxy, "ann", "internal_user", json!({}));
    let bob = user_with_key(&proxy, "bob", "internal_user", json!({}));
    user_with_key(&proxy, "carl", "internal_user", json!({}));
    for (team, admin, member) in [("red", "ann", "bob"), ("blue", "carl", "ann")] {
        ok(post(
            &proxy,
            "/team/new",
            json!({"team_id": team, "members_with_roles": [
                {"user_id": admin, "role": "admin"},
                {"user_id": member, "role": "user"},
            ]}),
        ));
    }
    let red = generate_key(&proxy, json!({"team_id": "red", "user_id": "bob"}));
    let blue = generate_key(&proxy, json!({"team_id": "blue", "user_id": "carl"}));
    let call = |key: &str, path: &str, body: Value| {
        raw(&proxy, "POST", path, &body.to_string(), Some(key))
    };

    // Ann administers red: its keys she makes, reads, changes, blocks, deletes.
    let made = ok(call(&ann, "/key/generate", json!({"team_id": "red"})));
    assert_eq!(made["team_id"], "red");
    let info = format!("/key/info?key={}", encode(&red));
    assert_eq!(ok(get_as(&proxy, &info, &ann))["info"]["team_id"], "red");
    ok(call(
        &ann,
        "/key/update",
        json!({"key": red, "metadata": {"by": "ann"}}),
    ));
    assert_eq!(
        ok(call(&ann, "/key/block", json!({"key": red})))["blocked"],
        true
    );
    assert_eq!(
        ok(call(&ann, "/key/unblock", json!({"key": red})))["blocked"],
        false
    );
    let listed = ok(get_as(&proxy, "/key/list?team_id=red", &ann));
    assert_eq!(listed["total_count"], 2, "{listed}");
    // Her team's name and notes she may change; its budget, limits, models
    // and block are proxy_admin's.
    let renamed = ok(call(
        &ann,
        "/team/update",
        json!({"team_id": "red", "team_alias": "Red team", "metadata": {"by": "ann"}}),
    ));
    assert_eq!(renamed["team_alias"], "Red team", "{renamed}");
    for field in [
        json!({"max_budget": 1000}),
        json!({"rpm_limit": 1000000}),
        json!({"budget_duration": "1s"}),
        json!({"models": []}),
        json!({"blocked": false}),
    ] {
        let mut body = field.clone();
        body["team_id"] = json!("red");
        assert_lite_error(&call(&ann, "/team/update", body), 403, "auth_error", None);
    }
    // Never a key of another user, not even of her team: it would act as him.
    let response = call(
        &ann,
        "/key/generate",
        json!({"team_id": "red", "user_id": "bob"}),
    );
    assert_lite_error(&response, 403, "auth_error", None);
    // Blue is not hers to manage, though she is a member.
    assert_lite_error(
        &call(&ann, "/key/generate", json!({"team_id": "blue"})),
        403,
        "auth_error",
        None,
    );
    let blue_info = format!("/key/info?key={}", encode(&blue));
    assert_lite_error(&get_as(&proxy, &blue_info, &ann), 403, "auth_error", None);
    for path in ["/key/update", "/key/block"] {
        let response = call(&ann, path, json!({"key": blue, "metadata": {}}));
        assert_lite_error(&response, 403, "auth_error", None);
    }
    assert_eq!(
        ok(get_as(&proxy, "/key/list?team_id=blue", &ann))["total_count"],
        0
    );
    // Bob is a member of red, not its admin.
    assert_lite_error(
        &call(&bob, "/key/block", json!({"key": red})),
        403,
        "auth_error",
        None,
    );

    // The team itself: info, update and members for its admin only.
    ok(get_as(&proxy, "/team/info?team_id=red", &ann));
    assert_lite_error(
        &get_as(&proxy, "/team/info?team_id=blue", &ann),
        403,
        "auth_error",
        None,
    );
    ok(call(
        &ann,
        "/team/update",
        json!({"team_id": "red", "team_alias": "Red"}),
    ));
    assert_lite_error(
        &call(
            &ann,
            "/team/update",
            json!({"team_id": "blue", "team_alias": "mine"}),
        ),
        403,
        "auth_error",
        None,
    );
    ok(call(
        &ann,
        "/team/member_add",
        json!({"team_id": "red", "member": {"user_id": "carl", "role": "user"}}),
    ));
    ok(call(
        &ann,
        "/team/member_delete",
        json!({"team_id": "red", "user_id": "carl"}),
    ));
    for (path, body) in [
        ("/team/new", json!({"team_alias": "green"})),
        ("/team/delete", json!({"team_ids": ["red"]})),
        ("/team/block", json!({"team_id": "red"})),
    ] {
        assert_lite_error(&call(&ann, path, body), 403, "auth_error", None);
    }
    ok(call(&ann, "/key/delete", json!({"keys": [red]})));
}
