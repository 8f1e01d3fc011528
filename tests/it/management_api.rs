//! The management API (`/manage/...`) against the real server: every
//! route, the JSON shapes, where secrets are shown and where only hints,
//! and every error path with its status and envelope.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::store::*;
use crate::common::*;
use serde_json::{Value, json};

const PROJECT_FIELDS: [&str; 7] = [
    "id",
    "name",
    "openai_api_key",
    "is_active",
    "created_at",
    "updated_at",
    "deactivated_at",
];

const TOKEN_FIELDS: [&str; 12] = [
    "id",
    "token",
    "project_id",
    "alias",
    "expires_at",
    "is_active",
    "request_count",
    "max_requests",
    "metadata",
    "created_at",
    "updated_at",
    "last_used_at",
];

#[track_caller]
fn message(response: &Response) -> String {
    response.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A 400 `invalid_body` whose message mentions `mentions`.
#[track_caller]
fn assert_invalid_body(response: &Response, mentions: &str) {
    response.assert_error(400, "invalid_body");
    let message = message(response);
    assert!(
        message.contains(mentions),
        "the message {message:?} should mention {mentions:?}"
    );
}

/// A management call with an arbitrary raw body.
fn manage_raw(proxy: &Proxy, method: &str, path: &str, body: &str) -> Response {
    proxy.call(
        Req::new(method, path)
            .auth(MANAGEMENT_TOKEN)
            .header("Content-Type", "application/json")
            .body(body),
    )
}

fn start() -> (Mock, Proxy) {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    (mock, proxy)
}

// --- access to the API ------------------------------------------------------

#[test]
fn missing_or_wrong_management_token_is_401() {
    let (_mock, proxy) = start();
    let routes = [
        ("GET", "/manage/projects".to_string()),
        ("POST", "/manage/projects".to_string()),
        ("GET", format!("/manage/projects/{}", proxy.project_id)),
        ("DELETE", format!("/manage/projects/{}", proxy.project_id)),
        (
            "POST",
            format!("/manage/projects/{}/tokens/revoke", proxy.project_id),
        ),
        ("GET", "/manage/tokens".to_string()),
        ("GET", format!("/manage/tokens/{CLIENT_KEY}")),
        ("DELETE", format!("/manage/tokens/{CLIENT_KEY}")),
    ];
    let wrong_token = format!("{MANAGEMENT_TOKEN}x");
    for (method, path) in &routes {
        let body = r#"{"name":"intruder","openai_api_key":"sk-intruder-0000"}"#;
        let attempts = [
            Req::new(method, path).body(body),
            Req::new(method, path).auth(&wrong_token).body(body),
            Req::new(method, path)
                .header("Authorization", MANAGEMENT_TOKEN)
                .body(body),
            Req::new(method, path)
                .header("Authorization", format!("Basic {MANAGEMENT_TOKEN}"))
                .body(body),
        ];
        for request in attempts {
            let response = proxy.call(request);
            response.assert_error(401, "invalid_management_token");
            assert!(
                !response.text().contains(MANAGEMENT_TOKEN),
                "{}",
                response.text()
            );
        }
        // A key without a user has no role here.
        proxy
            .call(Req::new(method, path).auth(CLIENT_KEY).body(body))
            .assert_error(403, "role_forbidden");
    }
    // Nothing was changed by the refused calls.
    let projects = proxy.manage("GET", "/manage/projects", None).json();
    assert_eq!(projects.as_array().unwrap().len(), 1, "{projects}");
    let token = proxy
        .manage("GET", &format!("/manage/tokens/{CLIENT_KEY}"), None)
        .json();
    assert_eq!(token["is_active"], true);
    // The management token is a key for the registered models only (it
    // has no project): with none registered, nothing goes upstream with it.
    proxy
        .call(Req::post("/v1/chat/completions", chat_body(false, "hi")).auth(MANAGEMENT_TOKEN))
        .assert_error(403, "key_without_project");
}

#[test]
fn management_api_without_management_token_is_503() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .unseeded()
        .env_remove("MANAGEMENT_TOKEN")
        .start();
    for (method, path) in [
        ("GET", "/manage/projects"),
        ("POST", "/manage/tokens"),
        ("GET", "/manage/tokens/sk-anything-at-all"),
    ] {
        for request in [
            Req::new(method, path),
            Req::new(method, path).auth(MANAGEMENT_TOKEN),
        ] {
            proxy.call(request).assert_error(503, "management_disabled");
        }
    }
    assert!(
        proxy.log().contains("MANAGEMENT_TOKEN"),
        "the server says why the API is disabled: {}",
        proxy.log()
    );
}

#[test]
fn unknown_management_paths_are_404() {
    let (_mock, proxy) = start();
    for path in [
        "/manage",
        "/manage/",
        "/manage/nothing",
        "/manage/projects/a/b",
        "/manage/tokens/a/b",
        &format!("/manage/projects/{}/tokens", proxy.project_id),
        &format!("/manage/projects/{}/tokens/revoke/x", proxy.project_id),
    ] {
        proxy
            .manage("GET", path, None)
            .assert_error(404, "not_found");
    }
}

#[test]
fn wrong_method_is_405_with_allow() {
    let (_mock, proxy) = start();
    let project = format!("/manage/projects/{}", proxy.project_id);
    let revoke = format!("{project}/tokens/revoke");
    let token = format!("/manage/tokens/{CLIENT_KEY}");
    let cases: [(&str, &str, &[&str]); 8] = [
        ("PUT", "/manage/projects", &["GET", "POST"]),
        ("DELETE", "/manage/projects", &["GET", "POST"]),
        ("POST", &project, &["GET", "PATCH", "DELETE"]),
        ("PUT", &project, &["GET", "PATCH", "DELETE"]),
        ("GET", &revoke, &["POST"]),
        ("PATCH", "/manage/tokens", &["GET", "POST"]),
        ("POST", &token, &["GET", "PATCH", "DELETE"]),
        ("PUT", &token, &["GET", "PATCH", "DELETE"]),
    ];
    for (method, path, allowed) in cases {
        let response = proxy.manage(method, path, None);
        response.assert_error(405, "method_not_allowed");
        let allow = response
            .header("allow")
            .unwrap_or_else(|| panic!("405 without Allow for {method} {path}"));
        let allow: BTreeSet<&str> = allow.split(',').map(str::trim).collect();
        let want: BTreeSet<&str> = allowed.iter().copied().collect();
        assert_eq!(allow, want, "{method} {path}");
    }
    // The refused calls changed nothing.
    assert_eq!(
        proxy.manage("GET", &project, None).json()["is_active"],
        true
    );
    assert_eq!(proxy.manage("GET", &token, None).json()["is_active"], true);
}

// --- projects -----------------------------------------------------------------

#[test]
fn project_lifecycle() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).unseeded().start();
    assert_eq!(
        proxy.manage("GET", "/manage/projects", None).json(),
        json!([])
    );

    let provider_key = "sk-proj-lifecycle-0123456789abcdef";
    let response = proxy.manage(
        "POST",
        "/manage/projects",
        Some(json!({"name": "alpha", "openai_api_key": provider_key})),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json"))
    );
    assert!(
        !response.text().contains(provider_key),
        "{}",
        response.text()
    );
    let alpha = response.json();
    assert_fields(&alpha, &PROJECT_FIELDS);
    let id = alpha["id"].as_str().unwrap().to_string();
    uuid::Uuid::parse_str(&id).expect("the id is a UUID");
    assert_eq!(alpha["name"], "alpha");
    assert_hint(&alpha["openai_api_key"], provider_key);
    assert_eq!(alpha["is_active"], true);
    assert!(alpha["deactivated_at"].is_null());
    assert!(seconds_from_now(&alpha["created_at"]).abs() < 120.0);
    assert_eq!(alpha["created_at"], alpha["updated_at"]);

    let beta_id = proxy.create_project("beta", "sk-proj-beta-abcdefghijklmnop");

    // GET one, and the list.
    let response = proxy.manage("GET", &format!("/manage/projects/{id}"), None);
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), alpha);
    let list = proxy.manage("GET", "/manage/projects", None);
    assert_eq!(list.status, 200);
    assert!(!list.text().contains(provider_key), "{}", list.text());
    let list = list.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id.as_str()) && ids.contains(&beta_id.as_str()));
    for project in list.as_array().unwrap() {
        assert_fields(project, &PROJECT_FIELDS);
    }

    // PATCH: name, provider key, deactivation, reactivation.
    let new_key = "sk-proj-rotated-fedcba9876543210";
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/projects/{id}"),
        Some(json!({"name": "alpha-2", "openai_api_key": new_key})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(!response.text().contains(new_key), "{}", response.text());
    let patched = response.json();
    assert_fields(&patched, &PROJECT_FIELDS);
    assert_eq!(patched["id"], id.as_str());
    assert_eq!(patched["name"], "alpha-2");
    assert_hint(&patched["openai_api_key"], new_key);
    assert_ne!(patched["openai_api_key"], alpha["openai_api_key"]);
    assert_eq!(patched["created_at"], alpha["created_at"]);
    assert!(timestamp(&patched["updated_at"]) >= timestamp(&alpha["updated_at"]));

    let patched = proxy
        .manage(
            "PATCH",
            &format!("/manage/projects/{id}"),
            Some(json!({"is_active": false})),
        )
        .json();
    assert_eq!(patched["is_active"], false);
    assert_eq!(patched["name"], "alpha-2", "other fields are kept");
    assert!(seconds_from_now(&patched["deactivated_at"]).abs() < 120.0);
    let patched = proxy
        .manage(
            "PATCH",
            &format!("/manage/projects/{id}"),
            Some(json!({"is_active": true})),
        )
        .json();
    assert_eq!(patched["is_active"], true);
    assert!(patched["deactivated_at"].is_null());

    // The old name is free again, the new one is taken.
    proxy.create_project("alpha", "sk-proj-alpha-again-0000");
    let response = proxy.manage(
        "POST",
        "/manage/projects",
        Some(json!({"name": "alpha-2", "openai_api_key": "sk-x-000000000"})),
    );
    response.assert_error(409, "conflict");

    // DELETE: 204 without a body, then 404 everywhere.
    let response = proxy.manage("DELETE", &format!("/manage/projects/{id}"), None);
    assert_eq!(response.status, 204, "{}", response.text());
    assert!(response.body.is_empty());
    proxy
        .manage("GET", &format!("/manage/projects/{id}"), None)
        .assert_error(404, "not_found");
    proxy
        .manage("DELETE", &format!("/manage/projects/{id}"), None)
        .assert_error(404, "not_found");
    let list = proxy.manage("GET", "/manage/projects", None).json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != id.as_str())
    );
    // Its name can be used again.
    proxy.create_project("alpha-2", "sk-proj-alpha-3-0000");
}

#[test]
fn project_request_errors() {
    let (_mock, proxy) = start();
    let project = format!("/manage/projects/{}", proxy.project_id);

    // Bad JSON, missing body, missing field, unknown field.
    for (method, path) in [("POST", "/manage/projects"), ("PATCH", project.as_str())] {
        assert_invalid_body(&manage_raw(&proxy, method, path, r#"{"name": "x""#), "JSON");
        assert_invalid_body(&manage_raw(&proxy, method, path, "not json"), "JSON");
        assert_invalid_body(&manage_raw(&proxy, method, path, "[1, 2]"), "JSON");
        proxy
            .manage(method, path, None)
            .assert_error(400, "invalid_body");
        assert_invalid_body(
            &manage_raw(
                &proxy,
                method,
                path,
                r#"{"name":"x","openai_api_key":"sk-0000000000","colour":"red"}"#,
            ),
            "colour",
        );
    }
    assert_invalid_body(
        &manage_raw(&proxy, "POST", "/manage/projects", r#"{"name":"x"}"#),
        "openai_api_key",
    );
    assert_invalid_body(
        &manage_raw(
            &proxy,
            "POST",
            "/manage/projects",
            r#"{"openai_api_key":"sk-0000000000"}"#,
        ),
        "name",
    );

    // Values the store refuses.
    for body in [
        json!({"name": "", "openai_api_key": "sk-0000000000"}),
        json!({"name": "   ", "openai_api_key": "sk-0000000000"}),
        json!({"name": "x".repeat(201), "openai_api_key": "sk-0000000000"}),
        json!({"name": "ok", "openai_api_key": ""}),
        json!({"name": "ok", "openai_api_key": "sk with spaces"}),
    ] {
        proxy
            .manage("POST", "/manage/projects", Some(body.clone()))
            .assert_error(400, "invalid_body");
    }

    // Duplicate names: on create and on rename.
    let response = proxy.manage(
        "POST",
        "/manage/projects",
        Some(json!({"name": "test", "openai_api_key": "sk-0000000000"})),
    );
    response.assert_error(409, "conflict");
    assert!(message(&response).contains("test"), "{}", response.text());
    let other = proxy.create_project("other", "sk-other-0000000000");
    proxy
        .manage(
            "PATCH",
            &format!("/manage/projects/{other}"),
            Some(json!({"name": "test"})),
        )
        .assert_error(409, "conflict");
    // Renaming to its own name is no conflict.
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/projects/{other}"),
        Some(json!({"name": "other"})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    // A failed write changes nothing.
    let list = proxy.manage("GET", "/manage/projects", None).json();
    let names: BTreeSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["test", "other"]));

    // Unknown UUID and non-UUID ids: 404 on every project route.
    let unknown = uuid::Uuid::from_u128(0x1234).to_string();
    for id in [unknown.as_str(), "not-a-uuid", "12345"] {
        let path = format!("/manage/projects/{id}");
        proxy
            .manage("GET", &path, None)
            .assert_error(404, "not_found");
        proxy
            .manage("PATCH", &path, Some(json!({"is_active": false})))
            .assert_error(404, "not_found");
        proxy
            .manage("DELETE", &path, None)
            .assert_error(404, "not_found");
        proxy
            .manage("POST", &format!("{path}/tokens/revoke"), None)
            .assert_error(404, "not_found");
    }
}

/// A value of the wrong type is refused with a message that names the field.
#[test]
fn wrong_type_is_400_naming_the_field() {
    let (_mock, proxy) = start();
    let project = format!("/manage/projects/{}", proxy.project_id);
    let token = format!("/manage/tokens/{CLIENT_KEY}");
    let cases = [
        (
            "POST",
            "/manage/projects",
            json!({"name": 5, "openai_api_key": "sk-0000000000"}),
            "name",
        ),
        (
            "PATCH",
            project.as_str(),
            json!({"is_active": "no"}),
            "is_active",
        ),
        (
            "POST",
            "/manage/tokens",
            json!({"project_id": proxy.project_id, "max_requests": "5"}),
            "max_requests",
        ),
        (
            "POST",
            "/manage/tokens",
            json!({"project_id": proxy.project_id, "metadata": [1]}),
            "metadata",
        ),
        ("PATCH", token.as_str(), json!({"alias": 7}), "alias"),
    ];
    for (method, path, body, field) in cases {
        let response = proxy.manage(method, path, Some(body.clone()));
        response.assert_error(400, "invalid_body");
        let message = message(&response);
        assert!(
            message.contains(field),
            "{method} {path} with {body}: the message {message:?} does not name the field {field:?}"
        );
    }
}

// --- tokens ---------------------------------------------------------------------

#[test]
fn token_lifecycle() {
    let (_mock, proxy) = start();

    // Creation: 201, the full secret, once.
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({
            "project_id": proxy.project_id,
            "duration_minutes": 90,
            "max_requests": 7,
            "alias": "ci",
            "metadata": {"team": "search", "n": 1},
        })),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let created = response.json();
    assert_fields(&created, &TOKEN_FIELDS);
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk-") && secret.len() >= 40, "{secret}");
    let id = created["id"].as_str().unwrap().to_string();
    uuid::Uuid::parse_str(&id).expect("the id is a UUID");
    assert_eq!(created["project_id"], proxy.project_id.as_str());
    assert_eq!(created["alias"], "ci");
    assert_eq!(created["max_requests"], 7);
    assert_eq!(created["request_count"], 0);
    assert_eq!(created["is_active"], true);
    assert_eq!(created["metadata"], json!({"team": "search", "n": 1}));
    assert!(created["last_used_at"].is_null());
    let ahead = seconds_from_now(&created["expires_at"]);
    assert!(
        (90.0 * 60.0 - 120.0..=90.0 * 60.0 + 5.0).contains(&ahead),
        "expires in {ahead}s, want 90 minutes"
    );
    // The secret works at once.
    assert_eq!(proxy.call(chat_with(&secret)).status, 200);

    // Two creations never share a secret or an id.
    let second = proxy.create_token(json!({}));
    assert_ne!(second["token"], created["token"]);
    assert_ne!(second["id"], created["id"]);

    // GET by id and by secret: the same view, with the hint only.
    let by_id = proxy.manage("GET", &format!("/manage/tokens/{id}"), None);
    assert_eq!(by_id.status, 200, "{}", by_id.text());
    assert!(!by_id.text().contains(&secret), "{}", by_id.text());
    let by_id = by_id.json();
    assert_fields(&by_id, &TOKEN_FIELDS);
    assert_hint(&by_id["token"], &secret);
    let by_secret = proxy.manage("GET", &format!("/manage/tokens/{secret}"), None);
    assert_eq!(by_secret.status, 200);
    assert!(!by_secret.text().contains(&secret));
    let by_secret = by_secret.json();
    assert_eq!(by_secret["id"], id.as_str());
    assert_eq!(by_secret["token"], by_id["token"]);
    for field in [
        "alias",
        "max_requests",
        "metadata",
        "expires_at",
        "created_at",
    ] {
        assert_eq!(by_id[field], created[field], "{field}");
    }

    // The list: every token, hints only.
    let list = proxy.manage("GET", "/manage/tokens", None);
    assert_eq!(list.status, 200);
    for secret in [&secret, CLIENT_KEY, second["token"].as_str().unwrap()] {
        assert!(!list.text().contains(secret), "{}", list.text());
    }
    let list = list.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let mine = list.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_fields(mine, &TOKEN_FIELDS);
    assert_hint(&mine["token"], &secret);
    let seeded = list
        .iter()
        .find(|t| t["alias"].is_null() && t["id"] != second["id"])
        .unwrap();
    assert_hint(&seeded["token"], CLIENT_KEY);

    // PATCH by id and by secret: hint only, changes applied, the rest kept.
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{id}"),
        Some(json!({"alias": "ci-2", "max_requests": 9, "duration": "2h"})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(!response.text().contains(&secret));
    let patched = response.json();
    assert_fields(&patched, &TOKEN_FIELDS);
    assert_hint(&patched["token"], &secret);
    assert_eq!(patched["alias"], "ci-2");
    assert_eq!(patched["max_requests"], 9);
    assert_eq!(patched["metadata"], created["metadata"]);
    let ahead = seconds_from_now(&patched["expires_at"]);
    assert!(
        (7200.0 - 120.0..=7205.0).contains(&ahead),
        "expires in {ahead}s"
    );
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{secret}"),
        Some(json!({"alias": null, "max_requests": null, "metadata": {"x": true}})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(!response.text().contains(&secret));
    let patched = response.json();
    assert!(patched["alias"].is_null(), "null clears: {patched}");
    assert!(patched["max_requests"].is_null(), "null clears: {patched}");
    assert_eq!(patched["metadata"], json!({"x": true}));
    // An empty PATCH changes nothing but is fine.
    let response = proxy.manage("PATCH", &format!("/manage/tokens/{id}"), Some(json!({})));
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["metadata"], json!({"x": true}));
    assert_eq!(response.json()["is_active"], true);

    // DELETE revokes: 204, the token is kept but inactive.
    let response = proxy.manage("DELETE", &format!("/manage/tokens/{secret}"), None);
    assert_eq!(response.status, 204, "{}", response.text());
    assert!(response.body.is_empty());
    let after = proxy
        .manage("GET", &format!("/manage/tokens/{id}"), None)
        .json();
    assert_eq!(after["is_active"], false);
    proxy
        .call(chat_with(&secret))
        .assert_error(401, "key_revoked");
    let response = proxy.manage("DELETE", &format!("/manage/tokens/{id}"), None);
    assert_eq!(response.status, 204, "deleting twice is still a success");
    // PATCH is_active=true brings it back.
    let response = proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{id}"),
        Some(json!({"is_active": true})),
    );
    assert_eq!(response.json()["is_active"], true);
    assert_eq!(proxy.call(chat_with(&secret)).status, 200);
}

#[test]
fn token_durations_and_imports() {
    let (_mock, proxy) = start();
    // The default lifetime is 24 hours; "duration" takes human units.
    let default = proxy.create_token(json!({}));
    let ahead = seconds_from_now(&default["expires_at"]);
    assert!((86400.0 - 120.0..=86405.0).contains(&ahead), "{ahead}");
    let hours = proxy.create_token(json!({"duration": "24h"}));
    let ahead = seconds_from_now(&hours["expires_at"]);
    assert!((86400.0 - 120.0..=86405.0).contains(&ahead), "{ahead}");
    let minutes = proxy.create_token(json!({"duration": "90m"}));
    let ahead = seconds_from_now(&minutes["expires_at"]);
    assert!((5400.0 - 120.0..=5405.0).contains(&ahead), "{ahead}");
    let short = proxy.create_token(json!({"duration_minutes": 1}));
    let ahead = seconds_from_now(&short["expires_at"]);
    assert!((0.0..=65.0).contains(&ahead), "{ahead}");
    // max_requests 0 means unlimited.
    let unlimited = proxy.create_token(json!({"max_requests": 0}));
    assert!(unlimited["max_requests"].is_null(), "{unlimited}");

    // An imported secret is returned as given and works.
    let imported = "sk-imported-secret-4c9d21e07b";
    let created = proxy.create_token(json!({"token": imported, "alias": "imp"}));
    assert_eq!(created["token"], imported);
    assert_eq!(proxy.call(chat_with(imported)).status, 200);
    let shown = proxy
        .manage("GET", &format!("/manage/tokens/{imported}"), None)
        .json();
    assert_eq!(shown["id"], created["id"]);
    assert_hint(&shown["token"], imported);
}

#[test]
fn token_request_errors() {
    let (_mock, proxy) = start();
    let project_id = proxy.project_id.clone();
    let create = |body: Value| proxy.manage("POST", "/manage/tokens", Some(body));

    assert_invalid_body(
        &create(json!({"project_id": project_id, "duration_minutes": 60, "duration": "1h"})),
        "duration",
    );
    assert_invalid_body(
        &proxy.manage(
            "PATCH",
            &format!("/manage/tokens/{CLIENT_KEY}"),
            Some(json!({"duration_minutes": 60, "duration": "1h"})),
        ),
        "duration",
    );
    for bad in ["soon", "", "-1h", "0s"] {
        create(json!({"project_id": project_id, "duration": bad}))
            .assert_error(400, "invalid_body");
    }
    create(json!({"project_id": project_id, "duration_minutes": 0}))
        .assert_error(400, "invalid_body");
    create(json!({"project_id": project_id, "max_requests": -1})).assert_error(400, "invalid_body");
    assert_invalid_body(
        &create(json!({"project_id": project_id, "expires": "tomorrow"})),
        "expires",
    );
    assert_invalid_body(&create(json!({"alias": "no project"})), "project_id");
    assert_invalid_body(&create(json!({"project_id": "nope"})), "project_id");
    let unknown = uuid::Uuid::from_u128(0xfeed).to_string();
    create(json!({"project_id": unknown})).assert_error(404, "not_found");
    // An imported secret must be long enough and must not exist yet.
    create(json!({"project_id": project_id, "token": "short"})).assert_error(400, "invalid_body");
    create(json!({"project_id": project_id, "token": "sk with spaces in it"}))
        .assert_error(400, "invalid_body");
    let response = create(json!({"project_id": project_id, "token": CLIENT_KEY}));
    assert_invalid_body(&response, "exists");
    for (method, path) in [
        ("POST", "/manage/tokens".to_string()),
        ("PATCH", format!("/manage/tokens/{CLIENT_KEY}")),
    ] {
        assert_invalid_body(&manage_raw(&proxy, method, &path, "{"), "JSON");
        proxy
            .manage(method, &path, None)
            .assert_error(400, "invalid_body");
    }
    assert_invalid_body(
        &proxy.manage(
            "PATCH",
            &format!("/manage/tokens/{CLIENT_KEY}"),
            Some(json!({"project_id": project_id})),
        ),
        "project_id",
    );
    // Nothing was created by the refused calls.
    let list = proxy.manage("GET", "/manage/tokens", None).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Unknown ids: UUID, secret, neither.
    let unknown_uuid = uuid::Uuid::from_u128(0xabc).to_string();
    for id in [
        unknown_uuid.as_str(),
        "sk-not-a-known-secret-123456",
        "x",
        &format!("{CLIENT_KEY}0"),
    ] {
        let path = format!("/manage/tokens/{id}");
        proxy
            .manage("GET", &path, None)
            .assert_error(404, "not_found");
        proxy
            .manage("PATCH", &path, Some(json!({"alias": "a"})))
            .assert_error(404, "not_found");
        proxy
            .manage("DELETE", &path, None)
            .assert_error(404, "not_found");
    }

    // Query parameters of the list.
    let response = proxy.manage("GET", "/manage/tokens?colour=red", None);
    assert_invalid_body(&response, "colour");
    proxy
        .manage("GET", "/manage/tokens?project_id=nope", None)
        .assert_error(400, "invalid_body");
    proxy
        .manage("GET", "/manage/tokens?active_only=maybe", None)
        .assert_error(400, "invalid_body");
}

#[test]
fn token_list_filters() {
    let (_mock, proxy) = start();
    let other = proxy.create_project("other", "sk-other-upstream-000000");
    let create_in = |project: &str, alias: &str| -> String {
        let response = proxy.manage(
            "POST",
            "/manage/tokens",
            Some(json!({"project_id": project, "alias": alias})),
        );
        assert_eq!(response.status, 201, "{}", response.text());
        response.json()["id"].as_str().unwrap().to_string()
    };
    let a1 = create_in(&proxy.project_id, "a1");
    let a2 = create_in(&proxy.project_id, "a2");
    let b1 = create_in(&other, "b1");
    let b2 = create_in(&other, "b2");
    let seeded = proxy
        .manage("GET", &format!("/manage/tokens/{CLIENT_KEY}"), None)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        proxy
            .manage("DELETE", &format!("/manage/tokens/{a2}"), None)
            .status,
        204
    );
    assert_eq!(
        proxy
            .manage(
                "PATCH",
                &format!("/manage/tokens/{b2}"),
                Some(json!({"is_active": false}))
            )
            .status,
        200
    );

    let ids = |query: &str| -> BTreeSet<String> {
        let response = proxy.manage("GET", &format!("/manage/tokens{query}"), None);
        assert_eq!(response.status, 200, "{query}: {}", response.text());
        response
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let set =
        |items: &[&String]| -> BTreeSet<String> { items.iter().map(|s| s.to_string()).collect() };
    assert_eq!(ids(""), set(&[&seeded, &a1, &a2, &b1, &b2]));
    assert_eq!(ids("?active_only=false"), ids(""));
    assert_eq!(ids("?active_only=true"), set(&[&seeded, &a1, &b1]));
    assert_eq!(
        ids(&format!("?project_id={}", proxy.project_id)),
        set(&[&seeded, &a1, &a2])
    );
    assert_eq!(ids(&format!("?project_id={other}")), set(&[&b1, &b2]));
    assert_eq!(
        ids(&format!("?project_id={other}&active_only=true")),
        set(&[&b1])
    );
    let nobody = uuid::Uuid::from_u128(77).to_string();
    assert!(ids(&format!("?project_id={nobody}")).is_empty());
}

// --- effects on the request path -------------------------------------------------

#[test]
fn deleting_a_project_revokes_its_tokens() {
    let (mock, proxy) = start();
    let extra = proxy.create_token(json!({"alias": "extra"}));
    let extra_secret = extra["token"].as_str().unwrap();
    let other = proxy.create_project("other", "sk-other-upstream-000000");
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({"project_id": other, "token": "sk-other-client-00000001"})),
    );
    assert_eq!(response.status, 201);

    let mut conn = proxy.conn();
    for key in [CLIENT_KEY, extra_secret, "sk-other-client-00000001"] {
        assert_eq!(send_on(&mut conn, &chat_with(key)).status, 200);
    }
    let response = proxy.manage(
        "DELETE",
        &format!("/manage/projects/{}", proxy.project_id),
        None,
    );
    assert_eq!(response.status, 204, "{}", response.text());

    let served_before = mock.stat("requests");
    for key in [CLIENT_KEY, extra_secret] {
        send_on(&mut conn, &chat_with(key)).assert_error(401, "key_revoked");
        proxy.call(chat_with(key)).assert_error(401, "key_revoked");
    }
    assert_eq!(
        mock.stat("requests"),
        served_before + 1,
        "only the stat call"
    );
    // The other project's key is untouched.
    assert_eq!(
        send_on(&mut conn, &chat_with("sk-other-client-00000001")).status,
        200
    );
    // The tokens are still listed, inactive.
    let list = proxy
        .manage(
            "GET",
            &format!("/manage/tokens?project_id={}", proxy.project_id),
            None,
        )
        .json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|t| t["is_active"] == false), "{list:?}");
}

#[test]
fn revoking_a_projects_tokens_returns_the_count() {
    let (_mock, proxy) = start();
    let second = proxy.create_token(json!({}));
    let third = proxy.create_token(json!({}));
    let inactive = proxy.create_token(json!({}));
    let response = proxy.manage(
        "DELETE",
        &format!("/manage/tokens/{}", inactive["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(response.status, 204);
    let other = proxy.create_project("other", "sk-other-upstream-000000");
    let response = proxy.manage(
        "POST",
        "/manage/tokens",
        Some(json!({"project_id": other, "token": "sk-other-client-00000002"})),
    );
    assert_eq!(response.status, 201);

    let path = format!("/manage/projects/{}/tokens/revoke", proxy.project_id);
    let response = proxy.manage("POST", &path, None);
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["revoked"], 3, "three were active: {body}");
    assert_eq!(body["project_id"], proxy.project_id.as_str());
    for key in [
        CLIENT_KEY,
        second["token"].as_str().unwrap(),
        third["token"].as_str().unwrap(),
    ] {
        proxy.call(chat_with(key)).assert_error(401, "key_revoked");
    }
    assert_eq!(
        proxy.call(chat_with("sk-other-client-00000002")).status,
        200
    );
    // The project itself stays active; nothing is left to revoke.
    let project = proxy
        .manage(
            "GET",
            &format!("/manage/projects/{}", proxy.project_id),
            None,
        )
        .json();
    assert_eq!(project["is_active"], true);
    let response = proxy.manage("POST", &path, None);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["revoked"], 0);
    // New tokens of the project work.
    let fresh = proxy.create_token(json!({}));
    assert_eq!(
        proxy
            .call(chat_with(fresh["token"].as_str().unwrap()))
            .status,
        200
    );
}

#[test]
fn the_management_token_never_reaches_the_log() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).env("LOG_LEVEL", "debug").start();
    let token = proxy.create_token(json!({"max_requests": 2}));
    let id = token["id"].as_str().unwrap();
    proxy.manage("GET", "/manage/projects", None);
    proxy.manage("GET", &format!("/manage/tokens/{id}"), None);
    proxy.manage(
        "PATCH",
        &format!("/manage/tokens/{id}"),
        Some(json!({"alias": "z"})),
    );
    proxy.manage("GET", "/manage/nothing", None);
    manage_raw(&proxy, "POST", "/manage/projects", "{broken");
    proxy.manage("PUT", "/manage/projects", None);
    proxy.call(Req::get("/manage/projects").auth(&format!("{MANAGEMENT_TOKEN}-wrong")));
    proxy.call(Req::get("/v1/models").auth(MANAGEMENT_TOKEN));
    assert_eq!(proxy.call(chat(false)).status, 200);

    assert!(
        wait_until(Duration::from_secs(5), || proxy
            .log()
            .contains("management request")),
        "debug logging is on: {}",
        proxy.log()
    );
    let log = proxy.log();
    assert!(
        !log.contains(MANAGEMENT_TOKEN),
        "the management token is in the log:\n{log}"
    );
}

/// Sends `request` on a fresh connection and waits at most `timeout` for
/// the answer: `Err` says what went wrong instead of panicking.
fn call_within(proxy: &Proxy, request: &Req, timeout: Duration) -> Result<Response, String> {
    let mut conn = Conn::try_open(proxy.addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(timeout);
    conn.try_send(&request.bytes())
        .map_err(|e| format!("send: {e}"))?;
    conn.read_response().map_err(|e| format!("no answer: {e}"))
}

fn manage_req(method: &str, path: &str, body: Value) -> Req {
    Req::new(method, path)
        .auth(MANAGEMENT_TOKEN)
        .header("Content-Type", "application/json")
        .body(body.to_string())
}

/// Whether the server (one worker) still answers the management API.
fn still_serving(proxy: &Proxy) -> Result<(), String> {
    let list = call_within(
        proxy,
        &Req::get("/manage/tokens").auth(MANAGEMENT_TOKEN),
        Duration::from_secs(2),
    )?;
    if list.status != 200 {
        return Err(format!(
            "GET /manage/tokens: {} {}",
            list.status,
            list.text()
        ));
    }
    let health = call_within(proxy, &Req::get("/health"), Duration::from_secs(2))?;
    if health.status != 200 {
        return Err(format!("GET /health: {}", health.status));
    }
    Ok(())
}

/// A lifetime too long to be a point in time is refused (or clamped), and
/// never takes the worker that parsed it down with it.
#[test]
fn huge_durations_do_not_kill_the_worker() {
    let mock = Mock::start();
    let mut failures = Vec::new();
    let cases = [
        ("POST", json!({"duration_minutes": u64::MAX})),
        ("POST", json!({"duration": "500000000000years"})),
        ("PATCH", json!({"duration_minutes": u64::MAX})),
    ];
    for (method, fields) in cases {
        // One worker: if it dies, nothing answers any more.
        let proxy = Proxy::for_mock(&mock).workers(1).start();
        let (path, body) = if method == "POST" {
            let mut body = json!({"project_id": proxy.project_id});
            body.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            ("/manage/tokens".to_string(), body)
        } else {
            (format!("/manage/tokens/{CLIENT_KEY}"), fields.clone())
        };
        let what = format!("{method} {path} {fields}");
        match call_within(
            &proxy,
            &manage_req(method, &path, body),
            Duration::from_secs(3),
        ) {
            Ok(response) if response.status == 400 => {
                assert_error_envelope(&response.json(), "invalid_body");
            }
            Ok(response) if response.status == 200 || response.status == 201 => {
                timestamp(&response.json()["expires_at"]);
            }
            Ok(response) => failures.push(format!(
                "{what}: unexpected {} {}",
                response.status,
                response.text()
            )),
            Err(error) => failures.push(format!("{what}: {error}")),
        }
        if let Err(error) = still_serving(&proxy) {
            failures.push(format!(
                "after {what}: the server stopped answering: {error}"
            ));
        }
        if proxy.log().contains("panicked") {
            failures.push(format!("after {what}: a thread panicked:\n{}", proxy.log()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// An expiry far in the future (past the year 9999) is refused or shown;
/// it never leaves a token that breaks the creation answer or the list.
#[test]
fn a_far_future_expiry_does_not_break_the_token_list() {
    let (_mock, proxy) = start();
    let body = json!({"project_id": proxy.project_id, "duration": "10000years"});
    let created = call_within(
        &proxy,
        &manage_req("POST", "/manage/tokens", body),
        Duration::from_secs(3),
    );
    let mut failures = Vec::new();
    match &created {
        Ok(response) if response.status == 400 => {
            assert_error_envelope(&response.json(), "invalid_body");
        }
        Ok(response) if response.status == 201 => {
            timestamp(&response.json()["expires_at"]);
        }
        Ok(response) => failures.push(format!(
            "creation: unexpected {} {}",
            response.status,
            response.text()
        )),
        Err(error) => failures.push(format!("creation: {error}")),
    }
    match call_within(
        &proxy,
        &Req::get("/manage/tokens").auth(MANAGEMENT_TOKEN),
        Duration::from_secs(3),
    ) {
        Ok(response) if response.status == 200 => {}
        Ok(response) => failures.push(format!(
            "list: unexpected {} {}",
            response.status,
            response.text()
        )),
        Err(error) => failures.push(format!("list: {error}")),
    }
    assert!(
        failures.is_empty(),
        "{}\nlog:\n{}",
        failures.join("\n"),
        proxy.log()
    );
}

// --- a new management token ------------------------------------------------------

#[test]
fn a_restart_with_a_new_management_token_retires_the_old_one_everywhere() {
    use crate::common::litellm::{add_deployment, generate_key, prices, sha256_hex};
    const NEW_TOKEN: &str = "mt-rotated-0c4f9e2b71a8";
    let mock = Mock::start();
    let db = TempDir::new("management-token-rotation");
    let db_arg = db.path().to_str().unwrap().to_string();
    let model_chat = |key: &str| {
        let body = json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]});
        Req::post("/v1/chat/completions", body.to_string()).auth(key)
    };

    // The first token opens the API and calls the models.
    let first = Proxy::for_mock(&mock).arg("--db").arg(&db_arg).start();
    add_deployment(&first, "gpt-x", &mock, prices(1e-6, 2e-6));
    let client = generate_key(&first, json!({"key_alias": "kept"}));
    let response = first.call(model_chat(MANAGEMENT_TOKEN));
    assert_eq!(response.status, 200, "{}", response.text());
    first.stop();

    let second = Proxy::for_mock(&mock)
        .unseeded()
        .env("MANAGEMENT_TOKEN", NEW_TOKEN)
        .arg("--db")
        .arg(&db_arg)
        .start();
    // The old token: neither the management APIs nor the models.
    for path in ["/manage/projects", "/manage/tokens"] {
        second
            .call(Req::get(path).auth(MANAGEMENT_TOKEN))
            .assert_error(401, "invalid_management_token");
    }
    for path in ["/key/list", "/model/info"] {
        let response = second.call(Req::get(path).auth(MANAGEMENT_TOKEN));
        assert_eq!(response.status, 401, "{path}: {}", response.text());
    }
    second
        .call(model_chat(MANAGEMENT_TOKEN))
        .assert_error(401, "invalid_api_key");

    // The new one: both, with the store as it was.
    let projects = second.call(Req::get("/manage/projects").auth(NEW_TOKEN));
    assert_eq!(projects.status, 200, "{}", projects.text());
    assert_eq!(projects.json()[0]["name"], "test");
    let response = second.call(model_chat(NEW_TOKEN));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(second.call(model_chat(&client)).status, 200);

    // Neither master key's record is listed; only the old one's is gone.
    let list = second.call(Req::get("/key/list?return_full_object=true").auth(NEW_TOKEN));
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let tokens: BTreeSet<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["token"].as_str().unwrap())
        .collect();
    let expected = BTreeSet::from([sha256_hex(CLIENT_KEY), sha256_hex(&client)]);
    assert_eq!(
        tokens,
        expected.iter().map(String::as_str).collect(),
        "{list}"
    );
    let manage_tokens = second.call(Req::get("/manage/tokens").auth(NEW_TOKEN));
    assert_eq!(manage_tokens.json().as_array().unwrap().len(), 2);
    let info = |key: &str| second.call(Req::get(&format!("/key/info?key={key}")).auth(NEW_TOKEN));
    assert_eq!(info(MANAGEMENT_TOKEN).status, 404);
    let current = info(NEW_TOKEN);
    assert_eq!(current.status, 200, "{}", current.text());
    assert_eq!(current.json()["info"]["token"], sha256_hex(NEW_TOKEN));
}
