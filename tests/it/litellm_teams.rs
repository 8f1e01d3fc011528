//! The team routes of the LiteLLM-compatible management API against the
//! real server: `/team/new`, `/team/update`, `/team/delete` (and the keys
//! that go with a team), `/team/info`, `/team/list`, `/team/available`,
//! `/team/member_add`, `/team/member_delete`, `/team/block` and
//! `/team/unblock`; members kept in step with their users' `teams`; a
//! blocked team's keys refused; a team's models narrowing its keys'; every
//! error path with its status and envelope.

use crate::common::litellm::*;
use crate::common::store::*;
use crate::common::*;
use std::time::Duration;

use serde_json::{Value, json};

const TEAM_FIELDS: [&str; 17] = [
    "team_id",
    "team_alias",
    "organization_id",
    "models",
    "max_budget",
    "spend",
    "members_with_roles",
    "blocked",
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

fn user(proxy: &Proxy, user_id: &str, email: &str) {
    ok(post(
        proxy,
        "/user/new",
        json!({"user_id": user_id, "user_email": email, "auto_create_key": false}),
    ));
}

fn user_teams(proxy: &Proxy, user_id: &str) -> Value {
    ok(get(proxy, &format!("/user/info?user_id={user_id}")))["user_info"]["teams"].clone()
}

fn team_info(proxy: &Proxy, team_id: &str) -> Value {
    ok(get(
        proxy,
        &format!("/team/info?team_id={}", encode(team_id)),
    ))
}

fn chat_as(proxy: &Proxy, key: &str, model: &str) -> Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(key))
}

#[track_caller]
fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.json()["error"]["code"],
        code,
        "{}",
        response.text()
    );
}

// --- create, read, update -----------------------------------------------------------

#[test]
fn team_new_defaults_and_every_field() {
    let (_mock, proxy) = start();
    let answer = ok(post(&proxy, "/team/new", json!({})));
    assert_fields(&answer, &TEAM_FIELDS);
    assert!(uuid::Uuid::parse_str(answer["team_id"].as_str().unwrap()).is_ok());
    assert_eq!(answer["models"], json!([]));
    assert_eq!(answer["members_with_roles"], json!([]));
    assert_eq!(answer["blocked"], false);
    assert_eq!(answer["spend"], 0.0);
    assert_eq!(answer["metadata"], json!({}));
    for field in ["team_alias", "max_budget", "rpm_limit", "budget_reset_at"] {
        assert!(answer[field].is_null(), "{field} in {answer}");
    }

    user(&proxy, "ann", "ann@example.com");
    user(&proxy, "bob", "bob@example.com");
    let answer = ok(post(
        &proxy,
        "/team/new",
        json!({
            "team_id": "red", "team_alias": "Red", "models": ["alpha", "beta"],
            "max_budget": "10", "rpm_limit": 100, "tpm_limit": "5000",
            "max_parallel_requests": 4, "budget_duration": "30d", "soft_budget": 8,
            "metadata": {"cost_center": 7},
            "members_with_roles": [
                {"user_id": "ann", "role": "admin"},
                {"user_email": "BOB@example.com", "role": "user"},
            ],
        }),
    ));
    assert_fields(&answer, &TEAM_FIELDS);
    assert_eq!(answer["team_id"], "red");
    assert_eq!(answer["team_alias"], "Red");
    assert_eq!(answer["models"], json!(["alpha", "beta"]));
    assert_eq!(answer["max_budget"], 10.0);
    assert_eq!(answer["rpm_limit"], 100);
    assert_eq!(answer["tpm_limit"], 5000);
    assert_eq!(answer["max_parallel_requests"], 4);
    assert_eq!(answer["budget_duration"], "30d");
    assert_eq!(answer["soft_budget"], 8.0);
    assert!(answer["budget_reset_at"].is_string(), "{answer}");
    assert_eq!(answer["metadata"], json!({"cost_center": 7}));
    assert_eq!(
        answer["members_with_roles"],
        json!([
            {"user_id": "ann", "user_email": "ann@example.com", "role": "admin"},
            {"user_id": "bob", "user_email": "bob@example.com", "role": "user"},
        ])
    );
    // The members' users name the team.
    assert_eq!(user_teams(&proxy, "ann"), json!(["red"]));
    assert_eq!(user_teams(&proxy, "bob"), json!(["red"]));
}

#[test]
fn team_new_refuses_bad_input() {
    let (_mock, proxy) = start();
    user(&proxy, "ann", "ann@example.com");
    new_team(&proxy, "red");
    ok(post(
        &proxy,
        "/team/new",
        json!({"team_id": "blue", "team_alias": "Blue"}),
    ));
    assert_each_bad(
        &proxy,
        "/team/new",
        json!([
            ["team_id", {"team_id": "red"}],
            ["team_alias", {"team_alias": "Blue"}],
            ["models", {"models": "alpha"}],
            ["max_budget", {"max_budget": -1}],
            ["max_budget", {"max_budget": "lots"}],
            ["rpm_limit", {"rpm_limit": 1.5}],
            ["budget_duration", {"budget_duration": "soon"}],
            ["members_with_roles", {"members_with_roles": {"user_id": "ann"}}],
            ["members_with_roles[0].role", {"members_with_roles": [{"user_id": "ann"}]}],
            ["members_with_roles[0].role",
                {"members_with_roles": [{"user_id": "ann", "role": "owner"}]}],
            ["members_with_roles[0].user_id", {"members_with_roles": [{"role": "user"}]}],
        ]),
    );
    // A member must be a user; nothing is made when one is not.
    let response = post(
        &proxy,
        "/team/new",
        json!({"team_id": "green", "members_with_roles": [
            {"user_id": "ann", "role": "user"}, {"user_id": "nobody", "role": "user"}]}),
    );
    assert!(assert_not_found(&response).contains("nobody"));
    let response = post(
        &proxy,
        "/team/new",
        json!({"team_id": "green", "members_with_roles": [
            {"user_email": "none@example.com", "role": "user"}]}),
    );
    assert!(assert_not_found(&response).contains("none@example.com"));
    assert_not_found(&get(&proxy, "/team/info?team_id=green"));
    assert_eq!(user_teams(&proxy, "ann"), json!([]));
    // Not JSON, not an object.
    let response = raw(&proxy, "POST", "/team/new", "{oops", Some(MANAGEMENT_TOKEN));
    assert_lite_error(&response, 400, "bad_request_error", None);
    let response = raw(&proxy, "POST", "/team/new", "[1]", Some(MANAGEMENT_TOKEN));
    assert_lite_error(&response, 400, "bad_request_error", None);
    // Methods.
    let response = get(&proxy, "/team/new");
    assert_eq!(response.status, 405, "{}", response.text());
    let response = post(&proxy, "/team/list", json!({}));
    assert_eq!(response.status, 405, "{}", response.text());
    // Not for a key without a user (a role): 403.
    let key = generate_key(&proxy, json!({}));
    let response = get_as(&proxy, "/team/list", &key);
    assert_eq!(response.status, 403, "{}", response.text());
}

#[test]
fn team_update_info_list_and_available() {
    let (_mock, proxy) = start();
    user(&proxy, "ann", "ann@example.com");
    ok(post(
        &proxy,
        "/team/new",
        json!({"team_id": "red", "team_alias": "Red", "max_budget": 5, "rpm_limit": 10,
               "members_with_roles": [{"user_id": "ann", "role": "admin"}]}),
    ));
    new_team(&proxy, "blue");

    let updated = ok(post(
        &proxy,
        "/team/update",
        json!({"team_id": "red", "team_alias": "Crimson", "models": ["alpha"],
               "max_budget": null, "tpm_limit": 1000, "metadata": {"n": 1}}),
    ));
    assert_fields(&updated, &TEAM_FIELDS);
    assert_eq!(updated["team_alias"], "Crimson");
    assert_eq!(updated["models"], json!(["alpha"]));
    assert!(updated["max_budget"].is_null(), "{updated}");
    // Limits not named stay as they were.
    assert_eq!(updated["rpm_limit"], 10);
    assert_eq!(updated["tpm_limit"], 1000);
    assert_eq!(updated["metadata"], json!({"n": 1}));
    assert_eq!(updated["members_with_roles"][0]["user_id"], "ann");
    let cleared = ok(post(
        &proxy,
        "/team/update",
        json!({"team_id": "red", "rpm_limit": null, "models": null}),
    ));
    assert!(cleared["rpm_limit"].is_null(), "{cleared}");
    assert_eq!(cleared["models"], json!([]));
    assert_bad_field(
        &post(
            &proxy,
            "/team/update",
            json!({"team_id": "blue", "team_alias": "Crimson"}),
        ),
        "team_alias",
    );
    assert_bad_field(
        &post(&proxy, "/team/update", json!({"team_alias": "x"})),
        "team_id",
    );
    assert_bad_field(
        &post(
            &proxy,
            "/team/update",
            json!({"team_id": "red", "tpm_limit": -3}),
        ),
        "tpm_limit",
    );
    assert_not_found(&post(&proxy, "/team/update", json!({"team_id": "nope"})));

    // Info: the team and its keys, as LiteLLM answers it.
    let key = generate(&proxy, json!({"team_id": "red", "key_alias": "red-1"}));
    generate(&proxy, json!({"key_alias": "teamless"}));
    let info = team_info(&proxy, "red");
    assert_fields(&info, &["team_id", "team_info", "keys"]);
    assert_eq!(info["team_id"], "red");
    assert_fields(&info["team_info"], &TEAM_FIELDS);
    assert_eq!(info["team_info"]["team_alias"], "Crimson");
    let keys = info["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{info}");
    assert_eq!(keys[0]["token"], key["token"]);
    assert!(keys[0].get("key").is_none(), "no secret in {info}");
    assert_bad_field(&get(&proxy, "/team/info"), "team_id");
    assert_not_found(&get(&proxy, "/team/info?team_id=nope"));

    // List: an array of teams, oldest first; by member.
    let list = ok(get(&proxy, "/team/list"));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["team_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["red", "blue"]);
    assert_fields(&list[0], &TEAM_FIELDS);
    let mine = ok(get(&proxy, "/team/list?user_id=ann"));
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["team_id"], "red");
    assert_eq!(ok(get(&proxy, "/team/list?user_id=bob")), json!([]));

    assert_eq!(ok(get(&proxy, "/team/available")), json!([]));
}

#[test]
fn keys_may_name_only_existing_teams() {
    let (_mock, proxy) = start();
    let response = post(&proxy, "/key/generate", json!({"team_id": "nope"}));
    assert!(assert_not_found(&response).contains("team"));
    let key = generate_key(&proxy, json!({}));
    let response = post(
        &proxy,
        "/key/update",
        json!({"key": key, "team_id": "nope"}),
    );
    assert!(assert_not_found(&response).contains("team"));
    new_team(&proxy, "red");
    let updated = ok(post(
        &proxy,
        "/key/update",
        json!({"key": key, "team_id": "red"}),
    ));
    assert_eq!(updated["team_id"], "red");
}

// --- members --------------------------------------------------------------------------

#[test]
fn members_are_added_and_removed_in_step_with_their_users() {
    let (_mock, proxy) = start();
    user(&proxy, "ann", "ann@example.com");
    user(&proxy, "bob", "bob@example.com");
    user(&proxy, "cy", "cy@example.com");
    new_team(&proxy, "red");
    new_team(&proxy, "blue");

    // One member object.
    let answer = ok(post(
        &proxy,
        "/team/member_add",
        json!({"team_id": "red", "member": {"user_id": "ann", "role": "admin"}}),
    ));
    let mut fields = TEAM_FIELDS.to_vec();
    fields.extend(["updated_users", "updated_team_memberships"]);
    assert_fields(&answer, &fields);
    assert_eq!(
        answer["members_with_roles"],
        json!([{"user_id": "ann", "user_email": "ann@example.com", "role": "admin"}])
    );
    assert_eq!(answer["updated_users"][0]["user_id"], "ann");
    assert_eq!(answer["updated_users"][0]["teams"], json!(["red"]));
    assert_eq!(
        answer["updated_team_memberships"],
        json!([{"team_id": "red", "user_id": "ann"}])
    );
    // A list, by id and by email.
    let answer = ok(post(
        &proxy,
        "/team/member_add",
        json!({"team_id": "red", "member": [
            {"user_email": "bob@example.com", "role": "user"},
            {"user_id": "cy", "role": "user"}]}),
    ));
    let members: Vec<&str> = answer["members_with_roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["ann", "bob", "cy"]);
    ok(post(
        &proxy,
        "/team/member_add",
        json!({"team_id": "blue", "member": {"user_id": "ann", "role": "user"}}),
    ));
    assert_eq!(user_teams(&proxy, "ann"), json!(["red", "blue"]));

    // Refused, and nothing changed: a member twice, an unknown user (all or
    // none), an unknown team, bad members.
    let response = post(
        &proxy,
        "/team/member_add",
        json!({"team_id": "red", "member": {"user_id": "ann", "role": "user"}}),
    );
    let message = assert_lite_error(&response, 400, "bad_request_error", None);
    assert!(message.contains("already a member"), "{message}");
    user(&proxy, "dee", "dee@example.com");
    let response = post(
        &proxy,
        "/team/member_add",
        json!({"team_id": "blue", "member": [
            {"user_id": "dee", "role": "user"}, {"user_id": "ghost", "role": "user"}]}),
    );
    assert!(assert_not_found(&response).contains("ghost"));
    assert_eq!(user_teams(&proxy, "dee"), json!([]));
    assert_eq!(
        team_info(&proxy, "blue")["team_info"]["members_with_roles"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let response = post(
        &proxy,
        "/team/member_add",
        json!({"team_id": "nope", "member": {"user_id": "dee", "role": "user"}}),
    );
    assert!(assert_not_found(&response).contains("nope"));
    assert_each_bad(
        &proxy,
        "/team/member_add",
        json!([
            ["team_id", {"member": {"user_id": "dee", "role": "user"}}],
            ["member", {"team_id": "red"}],
            ["member", {"team_id": "red", "member": "dee"}],
            ["member.role", {"team_id": "red", "member": {"user_id": "dee", "role": "boss"}}],
            ["member.user_id", {"team_id": "red", "member": {"role": "user"}}],
            ["member[1].role", {"team_id": "red", "member": [
                {"user_id": "dee", "role": "user"}, {"user_id": "cy"}]}],
        ]),
    );

    // Removed by id and by email; the user's teams follow.
    let answer = ok(post(
        &proxy,
        "/team/member_delete",
        json!({"team_id": "red", "user_id": "ann"}),
    ));
    assert_fields(&answer, &TEAM_FIELDS);
    assert_eq!(user_teams(&proxy, "ann"), json!(["blue"]));
    ok(post(
        &proxy,
        "/team/member_delete",
        json!({"team_id": "red", "user_email": "bob@example.com"}),
    ));
    assert_eq!(user_teams(&proxy, "bob"), json!([]));
    let members = &team_info(&proxy, "red")["team_info"]["members_with_roles"];
    assert_eq!(
        members,
        &json!([{"user_id": "cy", "user_email": "cy@example.com", "role": "user"}])
    );
    let response = post(
        &proxy,
        "/team/member_delete",
        json!({"team_id": "red", "user_id": "ann"}),
    );
    let message = assert_lite_error(&response, 400, "bad_request_error", None);
    assert!(message.contains("not a member"), "{message}");
    assert_not_found(&post(
        &proxy,
        "/team/member_delete",
        json!({"team_id": "red", "user_id": "ghost"}),
    ));
    assert_not_found(&post(
        &proxy,
        "/team/member_delete",
        json!({"team_id": "nope", "user_id": "cy"}),
    ));
    assert_bad_field(
        &post(&proxy, "/team/member_delete", json!({"team_id": "red"})),
        "user_id",
    );
    assert_bad_field(
        &post(&proxy, "/team/member_delete", json!({"user_id": "cy"})),
        "team_id",
    );

    // A user deleted leaves its teams.
    ok(post(&proxy, "/user/delete", json!({"user_ids": ["cy"]})));
    assert_eq!(
        team_info(&proxy, "red")["team_info"]["members_with_roles"],
        json!([])
    );
}

// --- delete ---------------------------------------------------------------------------

#[test]
fn team_delete_deletes_its_keys_and_memberships() {
    let (mock, proxy) = start();
    add_deployment(&proxy, "alpha", &mock, prices(1e-6, 2e-6));
    user(&proxy, "ann", "ann@example.com");
    ok(post(
        &proxy,
        "/team/new",
        json!({"team_id": "red", "max_budget": 5, "budget_duration": "1d",
               "members_with_roles": [{"user_id": "ann", "role": "admin"}]}),
    ));
    new_team(&proxy, "blue");
    let red_1 = generate_key(&proxy, json!({"team_id": "red"}));
    let red_2 = generate_key(&proxy, json!({"team_id": "red", "user_id": "ann"}));
    let blue = generate_key(&proxy, json!({"team_id": "blue"}));
    assert_eq!(chat_as(&proxy, &red_1, "alpha").status, 200);
    // The team's spend is the sum of its keys'.
    let charged = wait_until(Duration::from_secs(10), || {
        team_info(&proxy, "red")["team_info"]["spend"]
            .as_f64()
            .is_some_and(|spend| spend > 0.0)
    });
    assert!(charged, "{}", team_info(&proxy, "red"));

    // All or nothing: an unknown team deletes none.
    let response = post(&proxy, "/team/delete", json!({"team_ids": ["red", "nope"]}));
    assert!(assert_not_found(&response).contains("nope"));
    team_info(&proxy, "red");
    assert_bad_field(&post(&proxy, "/team/delete", json!({})), "team_ids");
    assert_bad_field(
        &post(&proxy, "/team/delete", json!({"team_ids": []})),
        "team_ids",
    );
    assert_bad_field(
        &post(&proxy, "/team/delete", json!({"team_ids": "red"})),
        "team_ids",
    );

    let answer = ok(post(&proxy, "/team/delete", json!({"team_ids": ["red"]})));
    assert_eq!(answer, json!({"deleted_teams": ["red"], "deleted_keys": 2}));
    assert_not_found(&get(&proxy, "/team/info?team_id=red"));
    for key in [&red_1, &red_2] {
        let path = format!("/key/info?key={}", encode(key));
        assert_not_found(&get(&proxy, &path));
        assert_refused(&chat_as(&proxy, key, "alpha"), 401, "invalid_api_key");
    }
    assert_eq!(key_info(&proxy, &blue)["team_id"], "blue");
    assert_eq!(chat_as(&proxy, &blue, "alpha").status, 200);
    assert_eq!(user_teams(&proxy, "ann"), json!([]));
    // The id may be used again, for a new team with no past: no spend, no
    // budget window.
    let again = new_team(&proxy, "red");
    assert_eq!(again["spend"], 0.0);
    assert!(again["budget_reset_at"].is_null(), "{again}");
    assert_eq!(again["members_with_roles"], json!([]));
}

// --- the request path -----------------------------------------------------------------

#[test]
fn a_blocked_teams_keys_are_refused_until_it_is_unblocked() {
    let (mock, proxy) = start();
    add_deployment(&proxy, "alpha", &mock, Value::Null);
    new_team(&proxy, "red");
    let key = generate_key(&proxy, json!({"team_id": "red"}));
    let other = generate_key(&proxy, json!({}));
    assert_eq!(chat_as(&proxy, &key, "alpha").status, 200);

    let blocked = ok(post(&proxy, "/team/block", json!({"team_id": "red"})));
    assert_fields(&blocked, &TEAM_FIELDS);
    assert_eq!(blocked["blocked"], true);
    assert_refused(&chat_as(&proxy, &key, "alpha"), 401, "team_blocked");
    assert_eq!(chat_as(&proxy, &other, "alpha").status, 200);
    assert_eq!(team_info(&proxy, "red")["team_info"]["blocked"], true);

    let unblocked = ok(post(&proxy, "/team/unblock", json!({"team_id": "red"})));
    assert_eq!(unblocked["blocked"], false);
    assert_eq!(chat_as(&proxy, &key, "alpha").status, 200);

    // Blocking through /team/update works the same way.
    ok(post(
        &proxy,
        "/team/update",
        json!({"team_id": "red", "blocked": true}),
    ));
    assert_refused(&chat_as(&proxy, &key, "alpha"), 401, "team_blocked");

    assert_not_found(&post(&proxy, "/team/block", json!({"team_id": "nope"})));
    assert_bad_field(&post(&proxy, "/team/unblock", json!({})), "team_id");
    let response = get(&proxy, "/team/block");
    assert_eq!(response.status, 405, "{}", response.text());
}

#[test]
fn a_keys_models_are_those_its_own_its_users_and_its_teams_lists_allow() {
    let (mock, proxy) = start();
    for name in ["alpha", "beta", "gamma", "delta"] {
        add_deployment(&proxy, name, &mock, Value::Null);
    }
    ok(post(
        &proxy,
        "/team/new",
        json!({"team_id": "red", "models": ["alpha", "beta", "gamma"]}),
    ));
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "models": ["beta", "gamma", "delta"], "auto_create_key": false}),
    ));

    // The team alone.
    let team_only = generate_key(&proxy, json!({"team_id": "red"}));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/models", &team_only))),
        ["alpha", "beta", "gamma"]
    );
    assert_eq!(chat_as(&proxy, &team_only, "alpha").status, 200);
    assert_refused(
        &chat_as(&proxy, &team_only, "delta"),
        401,
        "key_model_access_denied",
    );

    // Team and user: both lists.
    let team_user = generate_key(&proxy, json!({"team_id": "red", "user_id": "ann"}));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/v1/models", &team_user))),
        ["beta", "gamma"]
    );
    assert_refused(
        &chat_as(&proxy, &team_user, "alpha"),
        401,
        "key_model_access_denied",
    );

    // Key, user and team: all three.
    let all_three = generate_key(
        &proxy,
        json!({"team_id": "red", "user_id": "ann", "models": ["gamma", "delta"]}),
    );
    assert_eq!(
        listed(&ok(get_as(&proxy, "/models", &all_three))),
        ["gamma"]
    );
    assert_eq!(chat_as(&proxy, &all_three, "gamma").status, 200);
    assert_refused(
        &chat_as(&proxy, &all_three, "beta"),
        401,
        "key_model_access_denied",
    );

    // A change of the team's list takes effect at once; an empty list
    // restricts nothing.
    ok(post(
        &proxy,
        "/team/update",
        json!({"team_id": "red", "models": ["alpha"]}),
    ));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/models", &team_only))),
        ["alpha"]
    );
    assert_refused(
        &chat_as(&proxy, &team_only, "beta"),
        401,
        "key_model_access_denied",
    );
    ok(post(
        &proxy,
        "/team/update",
        json!({"team_id": "red", "models": []}),
    ));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/models", &team_only))),
        ["alpha", "beta", "delta", "gamma"]
    );
    assert_eq!(chat_as(&proxy, &team_only, "delta").status, 200);
}
