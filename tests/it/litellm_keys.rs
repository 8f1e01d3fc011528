//! The virtual-key routes of the LiteLLM-compatible management API against
//! the real server: `/key/generate`, `/key/info`, `/key/list`, `/key/update`,
//! `/key/delete` and `/key/regenerate`: the wire shapes (`token` the SHA-256
//! of the secret), durations and expiry, paging and filters, every error path
//! with its status and envelope (`param` the field), blocking and new secrets
//! seen on every worker, pass-through only with a project, and the same
//! records as `/manage/tokens`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::common::litellm::*;
use crate::common::store::*;
use crate::common::*;
use serde_json::{Value, json};

// --- helpers ------------------------------------------------------------------

/// The `keys` of a `/key/list` answer (tokens, or objects' tokens).
#[track_caller]
fn listed_tokens(list: &Value) -> Vec<String> {
    list["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {list}"))
        .iter()
        .map(|k| match k {
            Value::String(token) => token.clone(),
            object => object["token"].as_str().unwrap().to_string(),
        })
        .collect()
}

// --- keys -------------------------------------------------------------------------

#[test]
fn key_generate_with_an_empty_body() {
    let (_mock, proxy) = start();
    let mut secrets = BTreeSet::new();
    for body in ["{}", ""] {
        let answer = ok(raw(
            &proxy,
            "POST",
            "/key/generate",
            body,
            Some(MANAGEMENT_TOKEN),
        ));
        let mut fields = KEY_FIELDS.to_vec();
        fields.push("key");
        assert_fields(&answer, &fields);
        let key = secret(&answer);
        assert!(key.starts_with("sk-") && key.len() >= 32, "{key}");
        assert_eq!(answer["token"], sha256_hex(&key));
        assert_hint(&answer["key_name"], &key);
        assert!(uuid::Uuid::parse_str(answer["id"].as_str().unwrap()).is_ok());
        for field in [
            "key_alias",
            "project_id",
            "user_id",
            "team_id",
            "expires",
            "max_budget",
            "max_requests",
            "last_used_at",
        ] {
            assert!(answer[field].is_null(), "{field} in {answer}");
        }
        assert_eq!(answer["models"], json!([]));
        assert_eq!(answer["aliases"], json!({}));
        assert_eq!(answer["metadata"], json!({}));
        assert_eq!(answer["spend"], 0.0);
        assert_eq!(answer["request_count"], 0);
        assert_eq!(answer["blocked"], false);
        assert!(seconds_from_now(&answer["created_at"]).abs() < 60.0);
        assert!(secrets.insert(key));
        // The key is known: it may list models.
        ok(get_as(&proxy, "/models", secrets.last().unwrap()));
    }
}

#[test]
fn key_generate_with_every_field() {
    let (_mock, proxy) = start();
    new_team(&proxy, "t-1");
    let answer = generate(
        &proxy,
        json!({
            "models": ["gpt-x", "claude"],
            "aliases": {"fast": "gpt-x"},
            "duration": "7d",
            "key_alias": "ci-key",
            "user_id": "u-1",
            "team_id": "t-1",
            "project_id": proxy.project_id,
            "max_budget": "10.5",
            "spend": 2,
            "max_requests": "100",
            "metadata": {"env": "ci", "n": 1},
        }),
    );
    let key = secret(&answer);
    assert_eq!(answer["token"], sha256_hex(&key));
    assert_eq!(answer["models"], json!(["gpt-x", "claude"]));
    assert_eq!(answer["aliases"], json!({"fast": "gpt-x"}));
    assert_eq!(answer["key_alias"], "ci-key");
    assert_eq!(answer["user_id"], "u-1");
    assert_eq!(answer["team_id"], "t-1");
    assert_eq!(answer["project_id"], proxy.project_id.as_str());
    assert_eq!(answer["max_budget"], 10.5);
    assert_eq!(answer["spend"], 2.0);
    assert_eq!(answer["max_requests"], 100);
    assert_eq!(answer["metadata"], json!({"env": "ci", "n": 1}));
    let expires = seconds_from_now(&answer["expires"]);
    assert!((expires - 7.0 * 86400.0).abs() < 10.0, "{expires}");
    // What /key/info shows afterwards is the same record, without the secret.
    let shown = key_info(&proxy, &key);
    assert_fields(&shown, &KEY_FIELDS);
    let mut expected = answer.clone();
    expected.as_object_mut().unwrap().remove("key");
    assert_eq!(shown, expected);
    assert!(!key_info(&proxy, &key).to_string().contains(&key));
    // A chosen secret.
    let chosen = generate(&proxy, json!({"key": "sk-chosen-secret-0042"}));
    assert_eq!(chosen["key"], "sk-chosen-secret-0042");
    assert_eq!(chosen["token"], sha256_hex("sk-chosen-secret-0042"));
}

#[test]
fn key_durations() {
    let (_mock, proxy) = start();
    for (duration, seconds) in [
        ("30s", 30.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("90m", 5400.0),
    ] {
        let answer = generate(&proxy, json!({"duration": duration}));
        let ahead = seconds_from_now(&answer["expires"]);
        assert!(
            ahead <= seconds + 1.0 && ahead > seconds - 10.0,
            "{duration}: expires in {ahead}s"
        );
    }
    for duration in [json!(""), json!(null)] {
        assert!(generate(&proxy, json!({"duration": duration}))["expires"].is_null());
    }
    for duration in ["soon", "0s", "-5m", "7 parsecs"] {
        let response = post(&proxy, "/key/generate", json!({"duration": duration}));
        let message = assert_bad_field(&response, "duration");
        assert!(!message.contains("duration: duration"), "{message}");
    }
    assert_bad_field(
        &post(&proxy, "/key/generate", json!({"duration": 30})),
        "duration",
    );

    // An expired key is refused.
    let answer = generate(
        &proxy,
        json!({"duration": "100ms", "project_id": proxy.project_id}),
    );
    // The lifetime began before the answer arrived, so it ends by then.
    let ended_by = SystemTime::now() + Duration::from_millis(100);
    let key = secret(&answer);
    sleep_until_time(ended_by);
    proxy.call(chat_with(&key)).assert_error(401, "key_expired");
    let response = get_as(&proxy, "/models", &key);
    let message = assert_lite_error(&response, 401, "auth_error", None);
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn key_generate_errors_name_the_field() {
    let (_mock, proxy) = start();
    generate(&proxy, json!({"key_alias": "taken"}));
    let message = assert_bad_field(
        &post(&proxy, "/key/generate", json!({"key_alias": "taken"})),
        "key_alias",
    );
    assert!(message.contains("taken"), "{message}");
    assert_each_bad(
        &proxy,
        "/key/generate",
        json!([
            ["max_budget", {"max_budget": -1}],
            ["max_budget", {"max_budget": "lots"}],
            ["max_budget", {"max_budget": true}],
            ["spend", {"spend": -0.5}],
            ["max_requests", {"max_requests": 1.5}],
            ["max_requests", {"max_requests": -3}],
            ["max_requests", {"max_requests": "x"}],
            ["models", {"models": "gpt-x"}],
            ["models[0]", {"models": [1]}],
            ["aliases", {"aliases": ["a"]}],
            ["metadata", {"metadata": "x"}],
            ["user_id", {"user_id": 5}],
            ["project_id", {"project_id": "not-a-uuid"}],
        ]),
    );
    let response = post(
        &proxy,
        "/key/generate",
        json!({"project_id": "00000000-0000-0000-0000-000000000000"}),
    );
    assert_not_found(&response);
    let response = post(&proxy, "/key/generate", json!({"key": "short"}));
    assert_lite_error(&response, 400, "bad_request_error", None);
    let response = post(&proxy, "/key/generate", json!({"key": CLIENT_KEY}));
    assert_lite_error(&response, 400, "bad_request_error", None);
    let response = raw(
        &proxy,
        "POST",
        "/key/generate",
        "{\"models\":",
        Some(MANAGEMENT_TOKEN),
    );
    assert_lite_error(&response, 400, "bad_request_error", None);
    // Only the seeded key and the one with the alias exist.
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 2);
}

#[test]
fn generated_keys_pass_through_only_with_a_project() {
    let (mock, proxy) = start();
    let without = secret(&generate(&proxy, json!({})));
    let before = mock_requests(&mock);
    let response = proxy.call(chat_with(&without));
    response.assert_error(403, "key_without_project");
    assert_eq!(
        mock_requests(&mock),
        before + 1,
        "only the stats call: nothing went upstream"
    );

    let answer = generate(&proxy, json!({"project_id": proxy.project_id}));
    let with = secret(&answer);
    let response = proxy.call(chat_with(&with));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["object"], "chat.completion");
    assert_eq!(
        header_values(&mock.last_request_headers(), "authorization"),
        [format!("Bearer {UPSTREAM_KEY}")]
    );
    // The request is counted on the key, as both APIs show it.
    let id = answer["id"].as_str().unwrap().to_string();
    let token = wait_request_count(&proxy, &id, 1, Duration::from_secs(10));
    assert_eq!(token["request_count"], 1, "{token}");
    let info = key_info(&proxy, &with);
    assert_eq!(info["request_count"], 1, "{info}");
    assert!(
        seconds_from_now(&info["last_used_at"]).abs() < 60.0,
        "{info}"
    );

    // A registered model is another matter: its requests go to the
    // deployment with the deployment's key, project or not.
    new_model(
        &proxy,
        json!({"model_name": "routed", "litellm_params": {"model": "openai/routed-upstream",
            "api_base": format!("{}/v1", mock.url()), "api_key": "sk-deployment-0123456789"}}),
    );
    let body = json!({"model": "routed", "messages": [{"role": "user", "content": "hi"}]});
    let response = proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(&without));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "routed-upstream");
    assert_eq!(
        header_values(&mock.last_request_headers(), "authorization"),
        ["Bearer sk-deployment-0123456789"]
    );
}

#[test]
fn key_info_by_secret_token_and_id() {
    let (_mock, proxy) = start();
    let answer = generate(&proxy, json!({"key_alias": "lookup", "user_id": "u-9"}));
    let key = secret(&answer);
    let token = sha256_hex(&key);
    let id = answer["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    for name in [&key, &token, &id] {
        let body = ok(get(&proxy, &format!("/key/info?key={}", encode(name))));
        assert_fields(&body, &["key", "info"]);
        assert_eq!(body["key"], name.as_str());
        assert_fields(&body["info"], &KEY_FIELDS);
        assert_eq!(body["info"]["token"], token.as_str());
        assert_eq!(body["info"]["id"], id.as_str());
        assert_eq!(body["info"]["key_alias"], "lookup");
        seen.push(body["info"].clone());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
    assert_bad_field(&get(&proxy, "/key/info"), "key");
    assert_bad_field(&get(&proxy, "/key/info?key="), "key");
    for unknown in [
        "nope",
        "sk-unknown-but-long-secret-value",
        &sha256_hex("sk-other"),
        "00000000-0000-0000-0000-000000000000",
    ] {
        let response = get(&proxy, &format!("/key/info?key={}", encode(unknown)));
        let message = assert_not_found(&response);
        if unknown.len() > 12 {
            assert!(!message.contains(unknown), "the key is repeated: {message}");
        } else {
            assert!(message.contains(unknown), "{message}");
        }
    }
}

#[test]
fn unknown_keys_with_multibyte_text_are_404_and_the_server_lives() {
    let (_mock, proxy) = start();
    let unknown = "aééééééééé";
    let response = get(&proxy, &format!("/key/info?key={}", encode(unknown)));
    let message = assert_not_found(&response);
    assert!(message.contains("aéééééé"), "{message}");
    for path in ["/key/update", "/key/delete"] {
        let body = json!({"key": unknown, "keys": [unknown]});
        assert_not_found(&post(&proxy, path, body));
    }
    ok(raw(&proxy, "GET", "/health/readiness", "", None));
    ok(get(&proxy, "/key/list"));
}

#[test]
fn key_list_pages_and_filters() {
    let mock = Mock::start();
    let proxy = start_empty(&mock);
    assert_eq!(
        ok(get(&proxy, "/key/list")),
        json!({"keys": [], "total_count": 0, "current_page": 1, "total_pages": 0})
    );
    new_team(&proxy, "red");
    new_team(&proxy, "blue");
    let specs = [
        json!({"user_id": "ann", "team_id": "red", "key_alias": "ann-1"}),
        json!({"user_id": "ann", "team_id": "blue", "key_alias": "ann-2"}),
        json!({"user_id": "bob", "team_id": "red"}),
        json!({"user_id": "bob"}),
        json!({"team_id": "red"}),
        json!({}),
        json!({"key_alias": "solo"}),
    ];
    let answers: Vec<Value> = specs.iter().map(|s| generate(&proxy, s.clone())).collect();
    let tokens: Vec<String> = answers
        .iter()
        .map(|a| a["token"].as_str().unwrap().to_string())
        .collect();

    let first = ok(get(&proxy, "/key/list"));
    assert_fields(
        &first,
        &["keys", "total_count", "current_page", "total_pages"],
    );
    assert_eq!(first["total_count"], 7);
    assert_eq!(first["current_page"], 1);
    assert_eq!(first["total_pages"], 1);
    assert_eq!(sorted(listed_tokens(&first)), sorted(tokens.clone()));
    assert!(
        first["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string)
    );

    // Pages of three: 3 + 3 + 1, every key once.
    let mut paged = Vec::new();
    for (page, count) in [(1, 3), (2, 3), (3, 1)] {
        let body = ok(get(&proxy, &format!("/key/list?page={page}&size=3")));
        assert_eq!(body["total_count"], 7);
        assert_eq!(body["current_page"], page);
        assert_eq!(body["total_pages"], 3);
        assert_eq!(body["keys"].as_array().unwrap().len(), count, "{body}");
        paged.extend(listed_tokens(&body));
    }
    assert_eq!(sorted(paged), sorted(tokens.clone()));
    let beyond = ok(get(&proxy, "/key/list?page=4&size=3"));
    assert_eq!(
        beyond,
        json!({"keys": [], "total_count": 7, "current_page": 4, "total_pages": 3})
    );

    // Filters.
    let only = |query: &str| {
        let body = ok(get(&proxy, &format!("/key/list?{query}")));
        assert_eq!(body["total_count"], body["keys"].as_array().unwrap().len());
        sorted(listed_tokens(&body))
    };
    let pick = |indexes: &[usize]| sorted(indexes.iter().map(|&i| tokens[i].clone()).collect());
    assert_eq!(only("user_id=ann"), pick(&[0, 1]));
    assert_eq!(only("user_id=bob"), pick(&[2, 3]));
    assert_eq!(only("team_id=red"), pick(&[0, 2, 4]));
    assert_eq!(only("user_id=bob&team_id=red"), pick(&[2]));
    assert_eq!(only("key_alias=solo"), pick(&[6]));
    assert_eq!(only(&format!("key_hash={}", tokens[5])), pick(&[5]));
    assert_eq!(only("user_id=nobody"), Vec::<String>::new());
    // Filters apply before paging: three red keys make two pages of two.
    let red_page_two = ok(get(&proxy, "/key/list?team_id=red&size=2&page=2"));
    assert_eq!(red_page_two["total_count"], 3);
    assert_eq!(red_page_two["total_pages"], 2);
    assert_eq!(red_page_two["keys"].as_array().unwrap().len(), 1);

    // Full objects instead of tokens; never the secret.
    let full = ok(get(&proxy, "/key/list?return_full_object=true&user_id=ann"));
    let keys = full["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_fields(key, &KEY_FIELDS);
        assert_eq!(key["user_id"], "ann");
    }
    for answer in &answers {
        assert!(!full.to_string().contains(&secret(answer)));
    }
    let not_full = ok(get(
        &proxy,
        "/key/list?return_full_object=false&user_id=ann",
    ));
    assert!(
        not_full["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string)
    );

    for (query, param) in [
        ("page=0", "page"),
        ("page=x", "page"),
        ("page=-1", "page"),
        ("size=0", "size"),
        ("size=101", "size"),
        ("size=ten", "size"),
    ] {
        let response = get(&proxy, &format!("/key/list?{query}"));
        let message = assert_bad_field(&response, param);
        assert!(!message.contains("18446744073709551615"), "{message}");
    }
    assert_eq!(ok(get(&proxy, "/key/list?size=100"))["total_pages"], 1);
}

#[test]
fn key_update_changes_fields_and_null_clears() {
    let (_mock, proxy) = start();
    new_team(&proxy, "t-1");
    new_team(&proxy, "t-2");
    let answer = generate(
        &proxy,
        json!({"key_alias": "before", "user_id": "u-1", "team_id": "t-1", "max_budget": 5,
            "max_requests": 10, "duration": "1h", "models": ["a"], "aliases": {"x": "a"},
            "metadata": {"old": true}}),
    );
    let key = secret(&answer);
    let token = answer["token"].as_str().unwrap().to_string();
    // Timestamps have whole seconds: the update's must be a later one.
    sleep_past_second_of(timestamp(&answer["updated_at"]));

    // By secret: set fields, numeric strings accepted.
    let updated = ok(post(
        &proxy,
        "/key/update",
        json!({"key": key, "key_alias": "after", "user_id": "u-2", "team_id": "t-2",
            "max_budget": "7.5", "spend": "1.25", "max_requests": "20", "duration": "24h",
            "models": ["a", "b"], "aliases": {"y": "b"}, "metadata": {"new": 1}}),
    ));
    assert_fields(&updated, &KEY_FIELDS);
    assert_eq!(updated["token"], token.as_str());
    assert_eq!(updated["key_alias"], "after");
    assert_eq!(updated["user_id"], "u-2");
    assert_eq!(updated["team_id"], "t-2");
    assert_eq!(updated["max_budget"], 7.5);
    assert_eq!(updated["spend"], 1.25);
    assert_eq!(updated["max_requests"], 20);
    assert_eq!(updated["models"], json!(["a", "b"]));
    assert_eq!(updated["aliases"], json!({"y": "b"}));
    assert_eq!(updated["metadata"], json!({"new": 1}));
    assert!((seconds_from_now(&updated["expires"]) - 86400.0).abs() < 10.0);
    assert_eq!(updated["created_at"], answer["created_at"]);
    assert!(seconds_from_now(&updated["updated_at"]) > seconds_from_now(&answer["updated_at"]));
    assert_eq!(key_info(&proxy, &key), updated);

    // By token: fields left out stay; null clears.
    let cleared = ok(post(
        &proxy,
        "/key/update",
        json!({"key": token, "key_alias": null, "user_id": null, "team_id": null,
            "max_budget": null, "max_requests": null, "duration": null}),
    ));
    for field in [
        "key_alias",
        "user_id",
        "team_id",
        "max_budget",
        "max_requests",
        "expires",
    ] {
        assert!(cleared[field].is_null(), "{field} in {cleared}");
    }
    assert_eq!(cleared["models"], json!(["a", "b"]));
    assert_eq!(cleared["metadata"], json!({"new": 1}));
    assert_eq!(cleared["spend"], 1.25);
    // The freed alias can be taken by another key.
    generate(&proxy, json!({"key_alias": "before"}));
    generate(&proxy, json!({"key_alias": "after"}));

    // By id: an empty list opens the key to every model.
    let id = answer["id"].as_str().unwrap();
    let opened = ok(post(
        &proxy,
        "/key/update",
        json!({"key": id, "models": []}),
    ));
    assert_eq!(opened["models"], json!([]));

    // Errors.
    assert_not_found(&post(&proxy, "/key/update", json!({"key": "nope"})));
    assert_bad_field(&post(&proxy, "/key/update", json!({})), "key");
    let message = assert_bad_field(
        &post(
            &proxy,
            "/key/update",
            json!({"key": key, "key_alias": "before"}),
        ),
        "key_alias",
    );
    assert!(message.contains("before"), "{message}");
    assert_each_bad(
        &proxy,
        "/key/update",
        json!([
            ["blocked", {"key": key, "blocked": "yes"}],
            ["max_budget", {"key": key, "max_budget": -2}],
            ["max_requests", {"key": key, "max_requests": 0.5}],
            ["duration", {"key": key, "duration": "whenever"}],
            ["models", {"key": key, "models": "a"}],
            ["metadata", {"key": key, "metadata": []}],
        ]),
    );
    assert_eq!(key_info(&proxy, &key), opened);
}

#[test]
fn blocked_keys_get_key_revoked_on_every_worker() {
    let (_mock, proxy) = start();
    let key = secret(&generate(&proxy, json!({"project_id": proxy.project_id})));
    let mut conns = conn_per_worker(&proxy, 2);
    for conn in &mut conns {
        assert_eq!(send_on(conn, &chat_with(&key)).status, 200);
    }
    let blocked = ok(post(
        &proxy,
        "/key/update",
        json!({"key": key, "blocked": true}),
    ));
    assert_eq!(blocked["blocked"], true);
    for conn in &mut conns {
        send_on(conn, &chat_with(&key)).assert_error(401, "key_revoked");
    }
    assert_eq!(key_info(&proxy, &key)["blocked"], true);
    let unblocked = ok(post(
        &proxy,
        "/key/update",
        json!({"key": key, "blocked": false}),
    ));
    assert_eq!(unblocked["blocked"], false);
    for conn in &mut conns {
        assert_eq!(send_on(conn, &chat_with(&key)).status, 200);
    }
}

#[test]
fn key_block_and_unblock_take_effect_on_every_worker() {
    let (_mock, proxy) = start();
    let generated = generate(&proxy, json!({"project_id": proxy.project_id}));
    let key = secret(&generated);
    let token = generated["token"].as_str().unwrap().to_string();
    let mut conns = conn_per_worker(&proxy, 2);
    for conn in &mut conns {
        assert_eq!(send_on(conn, &chat_with(&key)).status, 200);
    }
    // By the secret: blocked everywhere before the answer.
    let blocked = ok(post(&proxy, "/key/block", json!({"key": key})));
    assert_eq!(blocked["blocked"], true);
    assert_eq!(blocked["token"], token.as_str());
    for conn in &mut conns {
        send_on(conn, &chat_with(&key)).assert_error(401, "key_revoked");
    }
    // By the token (the secret's hash), as LiteLLM's UI sends it.
    let unblocked = ok(post(&proxy, "/key/unblock", json!({"key": token})));
    assert_eq!(unblocked["blocked"], false);
    for conn in &mut conns {
        assert_eq!(send_on(conn, &chat_with(&key)).status, 200);
    }
    // Bad calls.
    assert_bad_field(&post(&proxy, "/key/block", json!({})), "key");
    assert_not_found(&post(&proxy, "/key/block", json!({"key": "sk-nope-0000"})));
    let response = get(&proxy, "/key/block");
    assert_eq!(response.status, 405, "{}", response.text());
    assert_eq!(response.header("allow"), Some("POST"));
    // A virtual key cannot block keys.
    let response = raw(
        &proxy,
        "POST",
        "/key/block",
        &json!({"key": key}).to_string(),
        Some(&key),
    );
    assert!(
        response.status == 401 || response.status == 403,
        "{}",
        response.text()
    );
    assert_eq!(key_info(&proxy, &key)["blocked"], false);
}

#[test]
fn key_delete_by_keys_and_aliases_all_or_nothing() {
    let (_mock, proxy) = start();
    let by_secret = secret(&generate(&proxy, json!({"project_id": proxy.project_id})));
    let by_token = generate(&proxy, json!({}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let by_alias = secret(&generate(
        &proxy,
        json!({"key_alias": "doomed", "project_id": proxy.project_id}),
    ));
    assert_eq!(proxy.call(chat_with(&by_secret)).status, 200);
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 4);

    // One unknown key or alias: 404, and nothing is deleted.
    let attempts = [
        json!({"keys": [by_secret, "nope"]}),
        json!({"keys": [by_secret], "key_aliases": ["no-such-alias"]}),
        json!({"key_aliases": ["doomed", "no-such-alias"]}),
    ];
    for body in attempts {
        let message = assert_not_found(&post(&proxy, "/key/delete", body.clone()));
        assert!(message.contains("no"), "{body}: {message}");
    }
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 4);
    assert_eq!(proxy.call(chat_with(&by_secret)).status, 200);

    for body in [json!({}), json!({"keys": [], "key_aliases": []})] {
        assert_bad_field(&post(&proxy, "/key/delete", body), "keys");
    }
    assert_bad_field(&post(&proxy, "/key/delete", json!({"keys": "x"})), "keys");

    let deleted = ok(post(
        &proxy,
        "/key/delete",
        json!({"keys": [by_secret, by_token], "key_aliases": ["doomed"]}),
    ));
    assert_eq!(
        deleted,
        json!({"deleted_keys": [by_secret, by_token, "doomed"]})
    );
    for key in [&by_secret, &by_alias] {
        proxy
            .call(chat_with(key))
            .assert_error(401, "invalid_api_key");
    }
    for key in [&by_secret, &by_token, &by_alias] {
        assert_not_found(&get(&proxy, &format!("/key/info?key={}", encode(key))));
    }
    // Only the seeded key is left, and it still works.
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 1);
    assert_eq!(proxy.call(chat_with(CLIENT_KEY)).status, 200);
    assert_not_found(&post(
        &proxy,
        "/key/delete",
        json!({"key_aliases": ["doomed"]}),
    ));
}

#[test]
fn keys_and_manage_tokens_are_the_same_records() {
    let (_mock, proxy) = start();
    // Made with /key/generate, seen by /manage/tokens.
    let answer = generate(
        &proxy,
        json!({"project_id": proxy.project_id, "key_alias": "lite", "max_requests": 5,
            "metadata": {"from": "litellm"}}),
    );
    let key = secret(&answer);
    let id = answer["id"].as_str().unwrap().to_string();
    let tokens = ok(get(&proxy, "/manage/tokens"));
    let listed = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {tokens}"))
        .clone();
    assert_eq!(listed["alias"], "lite");
    assert_eq!(listed["project_id"], proxy.project_id.as_str());
    assert_eq!(listed["max_requests"], 5);
    assert_eq!(listed["metadata"], json!({"from": "litellm"}));
    assert_eq!(listed["is_active"], true);
    assert_hint(&listed["token"], &key);
    assert_eq!(
        ok(get(&proxy, &format!("/manage/tokens/{key}")))["id"],
        id.as_str()
    );

    // Made with /manage/tokens, seen by /key/*.
    let made = proxy.create_token(json!({"alias": "manage", "max_requests": 3}));
    let manage_secret = made["token"].as_str().unwrap().to_string();
    let manage_id = made["id"].as_str().unwrap().to_string();
    let list = ok(get(&proxy, "/key/list"));
    assert_eq!(list["total_count"], 3);
    assert!(
        listed_tokens(&list).contains(&sha256_hex(&manage_secret)),
        "{list}"
    );
    let info = key_info(&proxy, &manage_secret);
    assert_eq!(info["id"], manage_id.as_str());
    assert_eq!(info["key_alias"], "manage");
    assert_eq!(info["project_id"], proxy.project_id.as_str());
    assert_eq!(info["max_requests"], 3);
    assert!(info["expires"].is_string(), "{info}");
    assert_eq!(
        ok(get(&proxy, "/key/list?key_alias=manage"))["total_count"],
        1
    );

    // A change through one API shows in the other.
    ok(post(
        &proxy,
        "/key/update",
        json!({"key": manage_id, "key_alias": "renamed", "metadata": {"v": 2}}),
    ));
    let token = ok(get(&proxy, &format!("/manage/tokens/{manage_id}")));
    assert_eq!(token["alias"], "renamed");
    assert_eq!(token["metadata"], json!({"v": 2}));
    let response = proxy.manage("DELETE", &format!("/manage/tokens/{id}"), None);
    assert_eq!(response.status, 204);
    assert_eq!(key_info(&proxy, &key)["blocked"], true);
    proxy.call(chat_with(&key)).assert_error(401, "key_revoked");

    // Both keys work on the pass-through path, and deleting one via /key/delete
    // removes it from /manage/tokens.
    assert_eq!(proxy.call(chat_with(&manage_secret)).status, 200);
    ok(post(
        &proxy,
        "/key/delete",
        json!({"keys": [manage_secret]}),
    ));
    let response = proxy.manage("GET", &format!("/manage/tokens/{manage_id}"), None);
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        !ok(get(&proxy, "/manage/tokens"))
            .to_string()
            .contains(&manage_id)
    );
}

#[test]
fn the_master_key_calls_the_models_and_its_spend_is_accounted() {
    let (mock, proxy) = start();
    add_deployment(&proxy, "gpt-x", &mock, prices(1e-6, 2e-6));
    let response = proxy.call(
        Req::post(
            "/v1/chat/completions",
            json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )
        .auth(MANAGEMENT_TOKEN),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let cost: f64 = response
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0);
    // Its record is found by its secret, and left out of the listings.
    let reached = wait_until(Duration::from_secs(10), || {
        key_info(&proxy, MANAGEMENT_TOKEN)["spend"]
            .as_f64()
            .is_some_and(|spend| (spend - cost).abs() < 1e-12)
    });
    assert!(reached, "{}", key_info(&proxy, MANAGEMENT_TOKEN));
    let list = ok(get(&proxy, "/key/list?return_full_object=true"));
    assert_eq!(list["total_count"], 1, "only the seeded client key: {list}");
}

/// A chat with `key` on the priced deployment `gpt-x`.
fn priced_chat(key: &str) -> Req {
    Req::post(
        "/v1/chat/completions",
        json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .auth(key)
}

#[test]
fn key_regenerate_gives_the_same_key_a_new_secret() {
    let (mock, proxy) = start();
    add_deployment(&proxy, "gpt-x", &mock, prices(1e-6, 2e-6));
    let generated = generate(
        &proxy,
        json!({"key_alias": "rotating", "max_requests": 50, "rpm_limit": 100,
            "max_budget": 5, "metadata": {"team": "core"}}),
    );
    let old = secret(&generated);
    let id = generated["id"].as_str().unwrap().to_string();
    let mut conns = conn_per_worker(&proxy, 2);
    for conn in &mut conns {
        let response = send_on(conn, &priced_chat(&old));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let charged = wait_until(Duration::from_secs(10), || {
        let info = key_info(&proxy, &old);
        info["request_count"] == 2 && info["spend"].as_f64().is_some_and(|spend| spend > 0.0)
    });
    assert!(charged, "{}", key_info(&proxy, &old));
    let before = key_info(&proxy, &old);

    // Regenerated by the old secret: every worker refuses it before the answer.
    let answer = ok(post(&proxy, "/key/regenerate", json!({"key": old})));
    let new = secret(&answer);
    assert_ne!(new, old);
    assert!(new.starts_with("sk-") && new.len() >= 32, "{new}");
    assert_eq!(answer["token"], sha256_hex(&new));
    assert_hint(&answer["key_name"], &new);
    for conn in &mut conns {
        send_on(conn, &priced_chat(&old)).assert_error(401, "invalid_api_key");
    }
    assert_not_found(&get(&proxy, &format!("/key/info?key={}", encode(&old))));
    // The same record: id, limits, spend and counts kept.
    let mut expected = before.clone();
    for field in ["token", "key_name", "updated_at"] {
        expected[field] = answer[field].clone();
    }
    let mut shown = answer.clone();
    shown.as_object_mut().unwrap().remove("key");
    assert_eq!(shown, expected);
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(answer["rpm_limit"], 100);
    assert_eq!(answer["spend"], before["spend"]);
    assert_eq!(key_info(&proxy, &new), shown);
    for conn in &mut conns {
        let response = send_on(conn, &priced_chat(&new));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let counted = wait_until(Duration::from_secs(10), || {
        let info = key_info(&proxy, &new);
        info["request_count"] == 4 && info["spend"].as_f64() > before["spend"].as_f64()
    });
    assert!(counted, "{}", key_info(&proxy, &new));
    // Only the secret's hash is stored.
    assert!(!file_contains(
        &default_data_dir(&proxy).join("data.mdb"),
        &new
    ));

    // By the path, with a chosen secret and changes to the key.
    let chosen = "sk-chosen-0123456789";
    let answer = ok(post(
        &proxy,
        &format!("/key/{}/regenerate", encode(&new)),
        json!({"new_key": chosen, "max_budget": 9, "models": ["gpt-x"], "tpm_limit": 1000}),
    ));
    assert_eq!(answer["key"], chosen);
    assert_eq!(answer["token"], sha256_hex(chosen));
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(answer["max_budget"], 9.0);
    assert_eq!(answer["models"], json!(["gpt-x"]));
    assert_eq!(answer["tpm_limit"], 1000);
    assert_eq!(answer["rpm_limit"], 100);
    assert_eq!(answer["key_alias"], "rotating");
    proxy
        .call(priced_chat(&new))
        .assert_error(401, "invalid_api_key");
    assert_eq!(proxy.call(priced_chat(chosen)).status, 200);
    // By the key's id, with no body.
    let response = raw(
        &proxy,
        "POST",
        &format!("/key/{id}/regenerate"),
        "",
        Some(MANAGEMENT_TOKEN),
    );
    let answer = ok(response);
    let last = secret(&answer);
    assert_eq!(answer["id"], id.as_str());
    proxy
        .call(priced_chat(chosen))
        .assert_error(401, "invalid_api_key");
    assert_eq!(proxy.call(priced_chat(&last)).status, 200);
    assert_eq!(ok(get(&proxy, "/key/list"))["total_count"], 2);
}

#[test]
fn key_regenerate_refuses_bad_calls() {
    let (_mock, proxy) = start();
    let key = generate_key(&proxy, json!({"key_alias": "kept"}));
    assert_bad_field(&post(&proxy, "/key/regenerate", json!({})), "key");
    let response = raw(
        &proxy,
        "POST",
        "/key/regenerate",
        "",
        Some(MANAGEMENT_TOKEN),
    );
    assert_bad_field(&response, "key");
    assert_not_found(&post(
        &proxy,
        "/key/regenerate",
        json!({"key": "sk-nope-0000"}),
    ));
    assert_not_found(&post(&proxy, "/key/sk-nope-0000/regenerate", json!({})));
    assert_each_bad(
        &proxy,
        "/key/regenerate",
        json!([
            ["new_key", {"key": key, "new_key": "sk-short"}],
            ["new_key", {"key": key, "new_key": "no-sk-prefix-0123456789"}],
            ["new_key", {"key": key, "new_key": 7}],
            ["new_master_key", {"key": key, "new_master_key": "sk-new-master-0123456"}],
            ["grace_period", {"key": key, "grace_period": "24h"}],
            ["max_budget", {"key": key, "max_budget": "lots"}],
            ["rpm_limit", {"key": key, "rpm_limit": -1}],
            ["key_alias", {"key": key, "key_alias": 3}],
        ]),
    );
    // A secret that is another key's, and the master key (the MANAGEMENT_TOKEN).
    let response = post(
        &proxy,
        "/key/regenerate",
        json!({"key": key, "new_key": CLIENT_KEY}),
    );
    assert_lite_error(&response, 400, "bad_request_error", None);
    let response = post(&proxy, "/key/regenerate", json!({"key": MANAGEMENT_TOKEN}));
    let message = assert_lite_error(&response, 400, "bad_request_error", None);
    assert!(message.contains("MANAGEMENT_TOKEN"), "{message}");
    assert_eq!(
        key_info(&proxy, MANAGEMENT_TOKEN)["token"],
        sha256_hex(MANAGEMENT_TOKEN)
    );
    // Only POST, and only the master key.
    for path in ["/key/regenerate", &format!("/key/{key}/regenerate")] {
        let response = get(&proxy, path);
        assert_eq!(response.status, 405, "{}", response.text());
        assert_eq!(response.header("allow"), Some("POST"));
    }
    let response = raw(
        &proxy,
        "POST",
        "/key/regenerate",
        &json!({"key": key}).to_string(),
        Some(&key),
    );
    assert!(
        response.status == 401 || response.status == 403,
        "{}",
        response.text()
    );
    // Nothing changed: the key still works under its secret.
    let info = key_info(&proxy, &key);
    assert_eq!(info["token"], sha256_hex(&key));
    assert_eq!(info["key_alias"], "kept");
    assert!(info["rpm_limit"].is_null(), "{info}");
}

#[test]
fn the_master_keys_metadata_is_reserved() {
    let (_mock, proxy) = start();
    let marker = json!({"master_key": true});
    let response = proxy.manage("POST", "/key/generate", Some(json!({"metadata": marker})));
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(response.text().contains("reserved"), "{}", response.text());
    let key = proxy.manage("POST", "/key/generate", Some(json!({})));
    let key = key.json()["key"].as_str().unwrap().to_string();
    let response = proxy.manage(
        "POST",
        "/key/update",
        Some(json!({"key": key, "metadata": marker})),
    );
    assert_eq!(response.status, 400, "{}", response.text());
    // Other metadata that mentions it is the key's own.
    let response = proxy.manage(
        "POST",
        "/key/update",
        Some(json!({"key": key, "metadata": {"master_key": true, "team": "a"}})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let listed = proxy.manage("GET", "/key/list", None).json();
    assert_eq!(listed["total_count"], 2, "{listed}");
}
