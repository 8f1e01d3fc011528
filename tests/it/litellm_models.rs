//! The model routes of the LiteLLM-compatible management API against the
//! real server: `/model/new`, `/model/update`, `/model/delete`,
//! `/model/info` (and `/v1/model/info`) and `/model_group/info`, their wire
//! shapes, every error path with its status and envelope (`code` the
//! status as a string, `type` LiteLLM's, `param` the field), deployment
//! keys never shown again, and the `/models` and `/v1/models` listings:
//! the upstream's list until a model is registered, then what the caller's
//! key and user allow; and `/v1/models/{id}` (and `/models/{id}`), answered
//! by the same rule.

use std::collections::BTreeSet;
use std::time::SystemTime;

use crate::common::litellm::*;
use crate::common::store::*;
use crate::common::*;
use serde_json::{Value, json};

// --- models ---------------------------------------------------------------------

#[test]
fn model_new_accepts_numeric_strings_and_stores_numbers() {
    let (mock, proxy) = start();
    let answer = new_model(
        &proxy,
        json!({
            "model_name": "gpt-x",
            "litellm_params": {
                "model": "openai/gpt-4o",
                "api_base": mock.url(),
                "rpm": "100",
                "tpm": 5000,
                "timeout": "2.5",
                "max_retries": " 3 ",
                "custom_flag": "kept as text",
            },
            "model_info": {
                "input_cost_per_token": "0.000001",
                "output_cost_per_token": 0.000002,
                "max_tokens": "4096",
                "mode": "chat",
            },
        }),
    );
    assert_fields(
        &answer,
        &["model_name", "litellm_params", "model_info", "model_id"],
    );
    let id = answer["model_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(answer["model_name"], "gpt-x");
    let params = &answer["litellm_params"];
    assert_eq!(
        *params,
        json!({"model": "openai/gpt-4o", "api_base": mock.url(), "rpm": 100, "tpm": 5000,
            "timeout": 2.5, "max_retries": 3, "custom_flag": "kept as text"})
    );
    assert!(params["rpm"].is_u64() && params["max_retries"].is_u64());
    assert!(params["timeout"].is_f64());
    let info = &answer["model_info"];
    assert_fields(
        info,
        &[
            "input_cost_per_token",
            "output_cost_per_token",
            "max_tokens",
            "mode",
            "id",
            "db_model",
            "created_at",
            "updated_at",
        ],
    );
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["db_model"], true);
    assert_eq!(info["input_cost_per_token"].as_f64(), Some(0.000001));
    assert_eq!(info["output_cost_per_token"].as_f64(), Some(0.000002));
    assert!(info["max_tokens"].is_u64());
    assert_eq!(info["max_tokens"], 4096);
    assert_eq!(info["mode"], "chat");
    assert!(seconds_from_now(&info["created_at"]).abs() < 60.0);
    assert_eq!(info["created_at"], info["updated_at"]);

    // Stored as numbers: /model/info shows the same, without `model_id`.
    let listed = ok(get(&proxy, "/model/info"));
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_fields(&data[0], &["model_name", "litellm_params", "model_info"]);
    assert_eq!(data[0]["litellm_params"], answer["litellm_params"]);
    assert_eq!(data[0]["model_info"], answer["model_info"]);
}

#[test]
fn model_api_key_is_never_shown_again() {
    let (mock, proxy) = start();
    let secrets = [
        "sk-model-secret-DISTINCT-4b7e9a",
        "aws-secret-DISTINCT-81c3f0",
        "azure-ad-token-DISTINCT-5d2e77",
    ];
    let answer = new_model(
        &proxy,
        json!({"model_name": "gpt-x", "litellm_params": {
            "model": "azure/gpt-4o", "api_base": mock.url(), "api_key": secrets[0],
            "aws_secret_access_key": secrets[1], "azure_ad_token": secrets[2],
            "api_version": "2024-06-01"}}),
    );
    let id = answer["model_id"].as_str().unwrap().to_string();
    assert_eq!(
        answer["litellm_params"],
        json!({"model": "azure/gpt-4o", "api_base": mock.url(), "api_version": "2024-06-01"})
    );
    let mut seen = vec![answer.to_string()];
    let updated = ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"rpm": 5}}),
    ));
    assert!(
        updated["litellm_params"].get("api_key").is_none(),
        "{updated}"
    );
    seen.push(updated.to_string());
    // A new key replaces the old one, and is not shown either.
    let replaced = ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"api_key": "sk-model-secret-DISTINCT-rotated"}}),
    ));
    assert!(
        replaced["litellm_params"].get("api_key").is_none(),
        "{replaced}"
    );
    assert_eq!(replaced["litellm_params"]["rpm"], 5);
    seen.push(replaced.to_string());
    let by_id = format!("/model/info?litellm_model_id={id}");
    let listings = [
        "/model/info",
        "/v1/model/info",
        &by_id,
        "/models",
        "/v1/models",
    ];
    for path in listings {
        seen.push(ok(get(&proxy, path)).to_string());
        seen.push(ok(get_as(&proxy, path, CLIENT_KEY)).to_string());
    }
    seen.push(ok(get(&proxy, "/credentials")).to_string());
    seen.push(proxy.log());
    for text in &seen {
        for secret in secrets
            .iter()
            .chain(["sk-model-secret-DISTINCT-rotated"].iter())
        {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(!text.contains("DISTINCT"), "a secret is shown in {text}");
    }
}

#[test]
fn model_new_errors_name_the_field() {
    let (_mock, proxy) = start();
    assert_each_bad(
        &proxy,
        "/model/new",
        json!([
            ["model_name", {"litellm_params": {"model": "gpt-4o"}}],
            ["model_name", {"model_name": "  ", "litellm_params": {"model": "gpt-4o"}}],
            ["model_name", {"model_name": 7, "litellm_params": {"model": "x"}}],
            ["litellm_params", {"model_name": "m"}],
            ["litellm_params", {"model_name": "m", "litellm_params": "gpt-4o"}],
            ["litellm_params.model", {"model_name": "m", "litellm_params": {}}],
            ["litellm_params.model", {"model_name": "m", "litellm_params": {"model": ""}}],
            ["litellm_params.model", {"model_name": "m", "litellm_params": {"model": 4}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": "ftp://host"}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": "not a url"}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": "http://"}}],
            ["litellm_params.api_base",
                {"model_name": "m", "litellm_params": {"model": "x", "api_base": 8080}}],
            ["litellm_params.rpm",
                {"model_name": "m", "litellm_params": {"model": "x", "rpm": "lots"}}],
            ["litellm_params.timeout",
                {"model_name": "m", "litellm_params": {"model": "x", "timeout": [1]}}],
            ["model_info.max_tokens",
                {"model_name": "m", "litellm_params": {"model": "x"}, "model_info": {"max_tokens": "many"}}],
            ["model_info", {"model_name": "m", "litellm_params": {"model": "x"}, "model_info": []}],
            ["litellm_params.litellm_credential_name",
                {"model_name": "m", "litellm_params": {"model": "x", "litellm_credential_name": "nope"}}],
            ["litellm_params.litellm_credential_name",
                {"model_name": "m", "litellm_params": {"model": "x", "litellm_credential_name": 3}}],
        ]),
    );
    for body in ["{bad", "[]", "\"x\""] {
        let response = raw(&proxy, "POST", "/model/new", body, Some(MANAGEMENT_TOKEN));
        let message = assert_lite_error(&response, 400, "bad_request_error", None);
        assert!(message.contains("JSON"), "{body}: {message}");
    }
    // No body at all is `{}`: the first missing field.
    let response = raw(&proxy, "POST", "/model/new", "", Some(MANAGEMENT_TOKEN));
    assert_bad_field(&response, "model_name");
    // Nothing was created.
    assert_eq!(ok(get(&proxy, "/model/info")), json!({"data": []}));
}

#[test]
fn model_ids_may_be_chosen_and_are_unique() {
    let (_mock, proxy) = start();
    let by_info = new_model(
        &proxy,
        json!({"model_name": "a", "litellm_params": {"model": "x"}, "model_info": {"id": "dep-1"}}),
    );
    assert_eq!(by_info["model_id"], "dep-1");
    assert_eq!(by_info["model_info"]["id"], "dep-1");
    let top = new_model(
        &proxy,
        json!({"model_name": "b", "id": "dep-2", "litellm_params": {"model": "x"}}),
    );
    assert_eq!(top["model_id"], "dep-2");
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "c", "litellm_params": {"model": "x"}, "model_info": {"id": "dep-1"}}),
    );
    let message = assert_bad_field(&response, "model_info.id");
    assert!(message.contains("dep-1"), "{message}");
    let response = post(
        &proxy,
        "/model/new",
        json!({"model_name": "c", "id": "dep-2", "litellm_params": {"model": "x"}}),
    );
    assert_bad_field(&response, "id");
    assert_eq!(info_names(&ok(get(&proxy, "/model/info"))), ["a", "b"]);
}

#[test]
fn model_with_a_credential_name_needs_the_credential() {
    let (_mock, proxy) = start();
    ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "azure-prod", "credential_values": {"api_key": "sk-azure-0123456789"}}),
    ));
    let answer = new_model(
        &proxy,
        json!({"model_name": "gpt-x",
            "litellm_params": {"model": "azure/gpt-4o", "litellm_credential_name": "azure-prod"}}),
    );
    assert_eq!(
        answer["litellm_params"],
        json!({"model": "azure/gpt-4o", "litellm_credential_name": "azure-prod"})
    );
    let id = answer["model_id"].as_str().unwrap();
    // Pointing it at a credential that does not exist is refused on update too.
    let response = post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"litellm_credential_name": "azure-dev"}}),
    );
    let message = assert_bad_field(&response, "litellm_params.litellm_credential_name");
    assert!(message.contains("azure-dev"), "{message}");
    let info = ok(get(&proxy, &format!("/model/info?litellm_model_id={id}")));
    assert_eq!(
        info["data"][0]["litellm_params"]["litellm_credential_name"],
        "azure-prod"
    );
}

#[test]
fn model_info_on_both_paths_and_by_id() {
    let (_mock, proxy) = start();
    let first = add_model(&proxy, "gpt-x", "openai/gpt-4o");
    let second = add_model(&proxy, "gpt-x", "openai/gpt-4o-mini");
    let third = add_model(&proxy, "claude", "anthropic/claude-3");
    let all = ok(get(&proxy, "/model/info"));
    assert_eq!(ok(get(&proxy, "/v1/model/info")), all);
    // Every deployment, two of them under one name.
    let ids: BTreeSet<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["model_info"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([first.as_str(), second.as_str(), third.as_str()])
    );
    assert_eq!(info_names(&all), ["claude", "gpt-x", "gpt-x"]);
    for id in [&first, &second, &third] {
        for path in ["/model/info", "/v1/model/info"] {
            let one = ok(get(&proxy, &format!("{path}?litellm_model_id={id}")));
            let data = one["data"].as_array().unwrap();
            assert_eq!(data.len(), 1, "{one}");
            assert_eq!(data[0]["model_info"]["id"], id.as_str());
        }
    }
    // An unknown id is a 404 (LiteLLM itself answers 400 here).
    for path in ["/model/info", "/v1/model/info"] {
        let response = get(&proxy, &format!("{path}?litellm_model_id=nope"));
        let message = assert_not_found(&response);
        assert!(message.contains("nope"), "{message}");
    }
}

#[test]
fn model_update_merges_and_null_removes() {
    let (mock, proxy) = start();
    let created = new_model(
        &proxy,
        json!({"model_name": "gpt-x",
            "litellm_params": {"model": "openai/gpt-4o", "api_base": mock.url(), "rpm": 10,
                "tpm": 1000, "api_key": "sk-old-key-0123456789"},
            "model_info": {"input_cost_per_token": 0.000001, "mode": "chat"}}),
    );
    let id = created["model_id"].as_str().unwrap().to_string();
    // Timestamps have whole seconds: the update's must be a later one.
    sleep_past_second_of(timestamp(&created["model_info"]["updated_at"]));

    // The id at the top level; params merged, a null removes one.
    let updated = ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"rpm": "20", "tpm": null, "max_retries": 2}}),
    ));
    assert_eq!(updated["model_id"], id.as_str());
    assert_eq!(updated["model_name"], "gpt-x");
    assert_eq!(
        updated["litellm_params"],
        json!({"model": "openai/gpt-4o", "api_base": mock.url(), "rpm": 20, "max_retries": 2})
    );
    assert_eq!(
        updated["model_info"]["input_cost_per_token"].as_f64(),
        Some(0.000001)
    );
    assert_eq!(updated["model_info"]["mode"], "chat");
    assert_eq!(
        updated["model_info"]["created_at"],
        created["model_info"]["created_at"]
    );
    assert!(
        seconds_from_now(&updated["model_info"]["updated_at"])
            > seconds_from_now(&created["model_info"]["updated_at"]),
        "{updated}"
    );

    // The id in model_info; info merged; the name changes.
    let updated = ok(post(
        &proxy,
        "/model/update",
        json!({"model_name": "gpt-y",
            "model_info": {"id": id, "output_cost_per_token": "0.000004", "mode": "completion"}}),
    ));
    assert_eq!(updated["model_name"], "gpt-y");
    let info = &updated["model_info"];
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["input_cost_per_token"].as_f64(), Some(0.000001));
    assert_eq!(info["output_cost_per_token"].as_f64(), Some(0.000004));
    assert_eq!(info["mode"], "completion");
    assert_eq!(updated["litellm_params"]["rpm"], 20);

    // What /model/info shows afterwards is the merged deployment.
    let shown = ok(get(&proxy, &format!("/model/info?litellm_model_id={id}")));
    assert_eq!(shown["data"][0]["model_name"], "gpt-y");
    assert_eq!(
        shown["data"][0]["litellm_params"],
        updated["litellm_params"]
    );
    assert_eq!(shown["data"][0]["model_info"], updated["model_info"]);
    assert_eq!(listed(&ok(get(&proxy, "/models"))), ["gpt-y"]);

    // Errors: unknown id, no id, bad values; the deployment is untouched.
    let response = post(
        &proxy,
        "/model/update",
        json!({"id": "nope", "litellm_params": {"rpm": 1}}),
    );
    let message = assert_not_found(&response);
    assert!(message.contains("model"), "{message}");
    let response = post(
        &proxy,
        "/model/update",
        json!({"model_info": {"id": "nope"}}),
    );
    assert_not_found(&response);
    let response = post(
        &proxy,
        "/model/update",
        json!({"litellm_params": {"rpm": 1}}),
    );
    assert_bad_field(&response, "id");
    assert_each_bad(
        &proxy,
        "/model/update",
        json!([
            ["litellm_params.api_base", {"id": id, "litellm_params": {"api_base": "nope"}}],
            ["litellm_params.rpm", {"id": id, "litellm_params": {"rpm": "x"}}],
            ["model_info.max_tokens", {"id": id, "model_info": {"max_tokens": "x"}}],
            ["model_name", {"id": id, "model_name": " "}],
            ["litellm_params.model", {"id": id, "litellm_params": {"model": null}}],
            ["litellm_params.model", {"id": id, "litellm_params": {"model": ""}}],
            ["litellm_params.model", {"id": id, "litellm_params": {"model": 5}}],
            ["litellm_params", {"id": id, "litellm_params": [1]}],
        ]),
    );
    let after = ok(get(&proxy, &format!("/model/info?litellm_model_id={id}")));
    assert_eq!(after, shown);
}

#[test]
fn model_delete_removes_it_and_unknown_ids_are_404() {
    let (_mock, proxy) = start();
    let keep = add_model(&proxy, "keep", "gpt-4o");
    let doomed = add_model(&proxy, "doomed", "gpt-4o");
    let response = post(&proxy, "/model/delete", json!({"id": "nope"}));
    assert_not_found(&response);
    assert_bad_field(&post(&proxy, "/model/delete", json!({})), "id");
    assert_bad_field(&post(&proxy, "/model/delete", json!({"id": ""})), "id");
    assert_bad_field(&post(&proxy, "/model/delete", json!({"id": 5})), "id");
    let answer = ok(post(&proxy, "/model/delete", json!({"id": doomed})));
    assert_eq!(
        answer,
        json!({"message": format!("Model: {doomed} deleted successfully")})
    );
    let info = ok(get(&proxy, "/model/info"));
    assert_eq!(info_names(&info), ["keep"]);
    assert_eq!(info["data"][0]["model_info"]["id"], keep.as_str());
    assert_eq!(listed(&ok(get(&proxy, "/models"))), ["keep"]);
    assert_not_found(&post(&proxy, "/model/delete", json!({"id": doomed})));
}

#[test]
fn v1_models_is_the_upstreams_list_until_a_model_is_registered() {
    let (mock, proxy) = start();
    // Nothing registered: /v1/models goes to the upstream with the project's key.
    let upstream = ok(get_as(&proxy, "/v1/models", CLIENT_KEY));
    assert_eq!(
        listed(&upstream),
        ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    );
    assert!(
        upstream["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["owned_by"] == "mock")
    );
    let last = mock.last_request();
    assert_eq!(last["method"], "GET");
    assert_eq!(last["target"], "/v1/models");
    assert_eq!(
        header_values(&headers_of(&last), "authorization"),
        [format!("Bearer {UPSTREAM_KEY}")]
    );
    // ... while the LiteLLM path lists what is registered here: nothing.
    assert_eq!(
        ok(get(&proxy, "/models")),
        json!({"object": "list", "data": []})
    );
    assert_eq!(
        ok(get_as(&proxy, "/models", CLIENT_KEY)),
        json!({"object": "list", "data": []})
    );

    let id = add_model(&proxy, "gpt-x", "openai/gpt-4o");
    let before = mock_requests(&mock);
    let local = ok(get_as(&proxy, "/v1/models", CLIENT_KEY));
    assert_eq!(listed(&local), ["gpt-x"]);
    let after = mock_requests(&mock);
    assert_eq!(
        after,
        before + 1,
        "only the counter was read: the upstream was not asked"
    );

    // With the last model gone, the upstream answers again (a query of its
    // own, so that the response cache, which holds the first listing, does
    // not answer instead).
    ok(post(&proxy, "/model/delete", json!({"id": id})));
    let upstream_again = ok(get_as(&proxy, "/v1/models?again=1", CLIENT_KEY));
    assert_eq!(listed(&upstream_again), listed(&upstream));
    assert_eq!(
        mock_requests(&mock),
        after + 2,
        "the listing and the counter"
    );
}

#[test]
fn v1_model_info_is_answered_here_even_with_no_model_registered() {
    let (mock, proxy) = start();
    let before = mock_requests(&mock);
    for key in [MANAGEMENT_TOKEN, CLIENT_KEY] {
        assert_eq!(
            ok(get_as(&proxy, "/v1/model/info", key)),
            json!({"data": []})
        );
    }
    assert_eq!(mock_requests(&mock), before + 1, "the upstream was asked");
}

#[test]
fn v1_models_answers_the_master_key_with_no_model_registered() {
    let (_mock, proxy) = start();
    assert_eq!(
        ok(get(&proxy, "/models")),
        json!({"object": "list", "data": []})
    );
    assert_eq!(
        ok(get(&proxy, "/v1/models")),
        json!({"object": "list", "data": []})
    );
}

#[test]
fn v1_models_id_retrieves_a_registered_model_here() {
    let (mock, proxy) = start();
    add_model(&proxy, "gpt-x", "openai/gpt-4o");
    add_model(&proxy, "gpt-x", "groq/gpt-4o");
    add_model(&proxy, "openai/gpt-4o", "openai/gpt-4o");
    add_model(&proxy, "ft:gpt-4o:org::x", "anthropic/claude-3");
    let virtual_key = secret(&generate(&proxy, json!({})));
    let listing = ok(get(&proxy, "/v1/models"));
    let listed_as = |name: &str| {
        listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {listing}"))
    };

    let before = mock_requests(&mock);
    // OpenAI's retrieve shape, as the listing shows the model (its first
    // deployment's provider), for a virtual key, a project key and the
    // master key, on both paths.
    for key in [virtual_key.as_str(), CLIENT_KEY, MANAGEMENT_TOKEN] {
        for path in ["/v1/models/gpt-x", "/models/gpt-x"] {
            let model = ok(get_as(&proxy, path, key));
            assert_fields(&model, &["id", "object", "created", "owned_by"]);
            assert_eq!(model["object"], "model");
            assert_eq!(model["owned_by"], "openai");
            assert_eq!(model, listed_as("gpt-x"), "{path}");
        }
    }
    // The id is the rest of the path, '/' and ':' included, percent-decoded.
    for path in [
        "/v1/models/openai/gpt-4o",
        "/v1/models/openai%2Fgpt-4o",
        "/models/openai/gpt-4o",
    ] {
        let model = ok(get_as(&proxy, path, &virtual_key));
        assert_eq!(model, listed_as("openai/gpt-4o"), "{path}");
    }
    for path in [
        "/v1/models/ft:gpt-4o:org::x",
        "/v1/models/ft%3Agpt-4o%3Aorg%3A%3Ax",
    ] {
        let model = ok(get_as(&proxy, path, &virtual_key));
        assert_eq!(model["owned_by"], "anthropic");
        assert_eq!(model, listed_as("ft:gpt-4o:org::x"), "{path}");
    }

    // HEAD: the same head, no body; the connection stays in step.
    let get_answer = get_as(&proxy, "/v1/models/gpt-x", &virtual_key);
    let mut conn = proxy.conn();
    conn.send(
        &Req::new("HEAD", "/v1/models/gpt-x")
            .auth(&virtual_key)
            .bytes(),
    );
    let head = conn.read_head_response().expect("HEAD response");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get_answer.body.len().to_string().as_str())
    );
    let next = conn.roundtrip(&Req::get("/v1/models/gpt-x").auth(&virtual_key).bytes());
    assert_eq!(next.status, 200);
    assert_eq!(next.json(), listed_as("gpt-x"));

    assert_eq!(
        mock_requests(&mock),
        before + 1,
        "only the counter was read: the upstream was not asked"
    );
}

#[test]
fn v1_models_id_is_404_for_a_model_not_registered_or_not_allowed() {
    let (mock, proxy) = start();
    add_model(&proxy, "alpha", "openai/gpt-4o");
    add_model(&proxy, "beta", "openai/gpt-4o-mini");
    let limited = secret(&generate(&proxy, json!({"models": ["alpha"]})));
    assert_eq!(
        ok(get_as(&proxy, "/v1/models/alpha", &limited))["id"],
        "alpha"
    );

    // Outside the key's allowlist and not registered at all: the same 404,
    // OpenAI's envelope with the request path's code for an unknown model.
    let before = mock_requests(&mock);
    let not_allowed = get_as(&proxy, "/v1/models/beta", &limited);
    not_allowed.assert_error(404, "model_not_found");
    let unknown = get_as(&proxy, "/v1/models/gamma", &limited);
    unknown.assert_error(404, "model_not_found");
    assert_eq!(not_allowed.text().replace("beta", "gamma"), unknown.text());
    assert!(
        not_allowed.text().contains("beta"),
        "{}",
        not_allowed.text()
    );
    for key in [CLIENT_KEY, MANAGEMENT_TOKEN] {
        for path in ["/v1/models/gamma", "/models/gamma", "/v1/models/alpha/x"] {
            get_as(&proxy, path, key).assert_error(404, "model_not_found");
        }
    }
    // A key whose user allows none of the models sees none.
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "models": ["beta"], "auto_create_key": false}),
    ));
    let crossed = secret(&generate(
        &proxy,
        json!({"user_id": "ann", "models": ["alpha"]}),
    ));
    get_as(&proxy, "/v1/models/alpha", &crossed).assert_error(404, "model_not_found");
    // No id is no model; bytes that are not UTF-8 name none.
    for path in ["/v1/models/", "/models/"] {
        get_as(&proxy, path, &limited).assert_error(404, "not_found");
    }
    get_as(&proxy, "/v1/models/a%FF", &limited).assert_error(404, "model_not_found");
    assert_eq!(
        mock_requests(&mock),
        before + 1,
        "the upstream was not asked"
    );

    // The key is checked as on every model path, in the same envelope.
    get_as(&proxy, "/v1/models/alpha", "sk-not-a-key").assert_error(401, "invalid_api_key");
    raw(&proxy, "GET", "/v1/models/alpha", "", None).assert_error(401, "missing_api_key");
    // Only GET and HEAD are answered here: `/models/{id}` refuses the others ...
    let refused = raw(&proxy, "POST", "/models/alpha", "{}", Some(&limited));
    refused.assert_error(405, "method_not_allowed");
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));
    // ... and `/v1/models/{id}` passes them through, as before.
    let deleted = raw(&proxy, "DELETE", "/v1/models/alpha", "", Some(CLIENT_KEY));
    deleted.assert_error(404, "not_found");
    let last = mock.last_request();
    assert_eq!(last["method"], "DELETE");
    assert_eq!(last["target"], "/v1/models/alpha");
}

#[test]
fn v1_models_id_is_the_upstreams_until_a_model_is_registered() {
    let (mock, proxy) = start();
    // Nothing registered: the upstream answers, with the project's key (the
    // mock has no such route: its own 404).
    let upstream = get_as(&proxy, "/v1/models/gpt-4o", CLIENT_KEY);
    upstream.assert_error(404, "not_found");
    assert_eq!(upstream.json()["error"]["message"], "unknown route");
    let last = mock.last_request();
    assert_eq!(last["method"], "GET");
    assert_eq!(last["target"], "/v1/models/gpt-4o");
    assert_eq!(
        header_values(&headers_of(&last), "authorization"),
        [format!("Bearer {UPSTREAM_KEY}")]
    );
    // ... and the path checks of the upstream paths apply, as before.
    get_as(&proxy, "/v1/models/openai%2Fgpt-4o", CLIENT_KEY).assert_error(400, "bad_request");

    // The master key, which is not the upstream's, is answered here.
    let before = mock_requests(&mock);
    get(&proxy, "/v1/models/gpt-4o").assert_error(404, "model_not_found");
    assert_eq!(
        mock_requests(&mock),
        before + 1,
        "the upstream was not asked"
    );

    // Once a model is registered, the gateway answers for every key.
    add_model(&proxy, "gpt-x", "openai/gpt-4o");
    let before = mock_requests(&mock);
    get_as(&proxy, "/v1/models/gpt-4o", CLIENT_KEY).assert_error(404, "model_not_found");
    assert_eq!(
        ok(get_as(&proxy, "/v1/models/gpt-x", CLIENT_KEY))["id"],
        "gpt-x"
    );
    assert_eq!(
        mock_requests(&mock),
        before + 1,
        "the upstream was not asked"
    );
}

#[test]
fn model_listings_follow_the_callers_allowlist() {
    let (_mock, proxy) = start();
    add_model(&proxy, "alpha", "openai/gpt-4o");
    add_model(&proxy, "alpha", "openai/gpt-4o-mini");
    add_model(&proxy, "beta", "anthropic/claude-3");
    add_model(&proxy, "gamma", "gpt-4o");

    // OpenAI's list shape; a name with several deployments is listed once;
    // `owned_by` is the provider prefix of the upstream model.
    let all = ok(get(&proxy, "/models"));
    assert_fields(&all, &["object", "data"]);
    assert_eq!(listed(&all), ["alpha", "beta", "gamma"]);
    let owners: std::collections::BTreeMap<&str, &str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_fields(m, &["id", "object", "created", "owned_by"]);
            assert_eq!(m["object"], "model");
            let created = m["created"].as_u64().unwrap();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert!(created <= now && now - created < 60, "{m}");
            (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("alpha", "openai"),
            ("beta", "anthropic"),
            ("gamma", "openai")
        ]
        .into()
    );
    assert_eq!(ok(get(&proxy, "/v1/models")), all);

    // A key with a models allowlist sees only those.
    let limited = secret(&generate(
        &proxy,
        json!({"models": ["alpha", "gamma", "absent"]}),
    ));
    for path in ["/models", "/v1/models"] {
        assert_eq!(
            listed(&ok(get_as(&proxy, path, &limited))),
            ["alpha", "gamma"]
        );
    }
    for path in ["/model/info", "/v1/model/info"] {
        let info = ok(get_as(&proxy, path, &limited));
        assert_eq!(info_names(&info), ["alpha", "alpha", "gamma"]);
    }
    let beta_id = ok(get(&proxy, "/model/info"))["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model_name"] == "beta")
        .map(|d| d["model_info"]["id"].as_str().unwrap().to_string())
        .unwrap();
    let response = get_as(
        &proxy,
        &format!("/model/info?litellm_model_id={beta_id}"),
        &limited,
    );
    // Not visible to the key: as unknown as an id that does not exist.
    assert_not_found(&response);
    assert_eq!(
        info_names(&ok(get(
            &proxy,
            &format!("/model/info?litellm_model_id={beta_id}")
        ))),
        ["beta"]
    );

    // A key without one sees everything.
    let open = secret(&generate(&proxy, json!({})));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/models", &open))),
        ["alpha", "beta", "gamma"]
    );

    // A key and its user: only the models both allow.
    ok(post(
        &proxy,
        "/user/new",
        json!({"user_id": "ann", "models": ["alpha", "beta"], "auto_create_key": false}),
    ));
    let both = secret(&generate(
        &proxy,
        json!({"user_id": "ann", "models": ["beta", "gamma"]}),
    ));
    assert_eq!(listed(&ok(get_as(&proxy, "/models", &both))), ["beta"]);
    let user_only = secret(&generate(&proxy, json!({"user_id": "ann"})));
    assert_eq!(
        listed(&ok(get_as(&proxy, "/v1/models", &user_only))),
        ["alpha", "beta"]
    );

    // Changing the allowlist takes effect at once.
    ok(post(
        &proxy,
        "/key/update",
        json!({"key": limited, "models": ["beta"]}),
    ));
    assert_eq!(listed(&ok(get_as(&proxy, "/models", &limited))), ["beta"]);
}

// --- model groups -----------------------------------------------------------------

/// The fields of LiteLLM's `ModelGroupInfo`, in its order.
const GROUP_FIELDS: [&str; 22] = [
    "model_group",
    "providers",
    "max_input_tokens",
    "max_output_tokens",
    "input_cost_per_token",
    "output_cost_per_token",
    "input_cost_per_pixel",
    "mode",
    "tpm",
    "rpm",
    "itpm",
    "otpm",
    "supports_parallel_function_calling",
    "supports_vision",
    "supports_web_search",
    "supports_url_context",
    "supports_reasoning",
    "supports_function_calling",
    "supports_fast_mode",
    "supported_reasoning_efforts",
    "supported_openai_params",
    "configurable_clientside_auth_params",
];

fn group_names(answer: &Value) -> Vec<String> {
    assert_fields(answer, &["data"]);
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["model_group"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn model_group_info_combines_the_deployments_of_each_name() {
    let (_mock, proxy) = start();
    new_model(
        &proxy,
        json!({"model_name": "alpha",
            "litellm_params": {"model": "openai/gpt-4o", "rpm": 10, "tpm": "1000"},
            "model_info": {"max_input_tokens": 128000, "max_output_tokens": 4096,
                "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000004,
                "supports_vision": true, "mode": "chat"}}),
    );
    new_model(
        &proxy,
        json!({"model_name": "alpha",
            "litellm_params": {"model": "anthropic/claude-3", "rpm": 5},
            "model_info": {"max_input_tokens": 200000, "input_cost_per_token": 0.000003,
                "output_cost_per_token": 0.000002, "supports_function_calling": true,
                "tpm": 500}}),
    );
    new_model(
        &proxy,
        json!({"model_name": "alpha", "litellm_params": {"model": "gpt-4o-mini"}}),
    );
    new_model(
        &proxy,
        json!({"model_name": "beta", "litellm_params": {"model": "openai/text-embedding-3-small"},
            "model_info": {"mode": "embedding"}}),
    );

    let all = ok(get(&proxy, "/model_group/info"));
    assert_eq!(group_names(&all), ["alpha", "beta"]);
    let alpha = &all["data"][0];
    assert_fields(alpha, &GROUP_FIELDS);
    assert_eq!(
        *alpha,
        json!({
            "model_group": "alpha",
            "providers": ["openai", "anthropic"],
            "max_input_tokens": 200000,
            "max_output_tokens": 4096,
            "input_cost_per_token": 0.000003,
            "output_cost_per_token": 0.000004,
            "input_cost_per_pixel": null,
            "mode": "chat",
            "tpm": 1500,
            "rpm": 15,
            "itpm": null,
            "otpm": null,
            "supports_parallel_function_calling": false,
            "supports_vision": true,
            "supports_web_search": false,
            "supports_url_context": false,
            "supports_reasoning": false,
            "supports_function_calling": true,
            "supports_fast_mode": false,
            "supported_reasoning_efforts": null,
            "supported_openai_params": [],
            "configurable_clientside_auth_params": null,
        })
    );
    let beta = &all["data"][1];
    assert_fields(beta, &GROUP_FIELDS);
    assert_eq!(beta["providers"], json!(["openai"]));
    assert_eq!(beta["mode"], "embedding");
    for field in [
        "max_input_tokens",
        "input_cost_per_token",
        "output_cost_per_token",
        "tpm",
        "rpm",
    ] {
        assert!(beta[field].is_null(), "{field}: {beta}");
    }
    assert_eq!(beta["supports_vision"], false);

    // `?model_group=` narrows to one; a name not registered is no group.
    let only = ok(get(&proxy, "/model_group/info?model_group=beta"));
    assert_eq!(only["data"], json!([beta]));
    let none = ok(get(&proxy, "/model_group/info?model_group=gamma"));
    assert_eq!(none, json!({"data": []}));
    assert_eq!(ok(get(&proxy, "/model_group/info?model_group=")), all);
}

#[test]
fn model_group_info_follows_the_callers_allowlist() {
    let (_mock, proxy) = start();
    add_model(&proxy, "alpha", "openai/gpt-4o");
    add_model(&proxy, "alpha", "openai/gpt-4o-mini");
    add_model(&proxy, "beta", "anthropic/claude-3");
    let all = ok(get(&proxy, "/model_group/info"));
    assert_eq!(group_names(&all), ["alpha", "beta"]);

    // A virtual key sees the groups its allowlist allows, and no other,
    // not even by name.
    let limited = secret(&generate(&proxy, json!({"models": ["beta", "absent"]})));
    let seen = ok(get_as(&proxy, "/model_group/info", &limited));
    assert_eq!(seen["data"], json!([all["data"][1]]));
    let hidden = ok(get_as(
        &proxy,
        "/model_group/info?model_group=alpha",
        &limited,
    ));
    assert_eq!(hidden, json!({"data": []}));
    let open = secret(&generate(&proxy, json!({})));
    assert_eq!(ok(get_as(&proxy, "/model_group/info", &open)), all);
    assert_eq!(ok(get_as(&proxy, "/model_group/info", CLIENT_KEY)), all);

    // No key, an unknown key: 401 in LiteLLM's envelope.
    let response = raw(&proxy, "GET", "/model_group/info", "", None);
    let message = assert_lite_error(&response, 401, "auth_error", None);
    assert!(message.contains("Bearer"), "{message}");
    let response = get_as(&proxy, "/model_group/info", "sk-unknown-key-0000");
    assert_eq!(
        assert_lite_error(&response, 401, "auth_error", None),
        "invalid API key"
    );
    // Only GET and HEAD.
    let refused = raw(
        &proxy,
        "POST",
        "/model_group/info",
        "{}",
        Some(MANAGEMENT_TOKEN),
    );
    assert_lite_error(&refused, 405, "bad_request_error", None);
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));
}
