//! The credential routes of the LiteLLM-compatible management API against
//! the real server: `POST /credentials`, `GET /credentials`,
//! `GET /credentials/by_name/{name}` and `DELETE /credentials/{name}`: values
//! masked in every answer and in the log, every error path with its status
//! and envelope (`param` the field), deletion refused while a model uses
//! the credential, and names percent-decoded in the path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use common::litellm::*;
use common::store::*;
use serde_json::json;

// --- credentials -----------------------------------------------------------------

#[test]
fn credentials_are_masked_everywhere() {
    let (_mock, proxy) = start();
    let api_key = "sk-cred-SECRET-abcdef123";
    let created = ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "azure-prod",
            "credential_values": {"api_key": api_key, "api_base": "https://azure.example/v1",
                "short": "abc", "port": 443},
            "credential_info": {"description": "production", "custom_llm_provider": "azure"}}),
    ));
    let masked = json!({"api_key": "sk-c****f123", "api_base": "http****e/v1", "short": "****",
        "port": "****"});
    assert_eq!(
        created,
        json!({"credential_name": "azure-prod",
            "credential_info": {"description": "production", "custom_llm_provider": "azure"},
            "credential_values": masked, "success": true})
    );
    ok(post(
        &proxy,
        "/credentials",
        json!({"credential_name": "openai", "credential_values": {"api_key": "sk-other-7777777777"}}),
    ));
    let list = ok(get(&proxy, "/credentials"));
    assert_fields(&list, &["credentials"]);
    let credentials = list["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 2);
    let prod = credentials
        .iter()
        .find(|c| c["credential_name"] == "azure-prod")
        .unwrap();
    assert_fields(
        prod,
        &["credential_name", "credential_info", "credential_values"],
    );
    assert_eq!(prod["credential_values"], masked);
    let openai = credentials
        .iter()
        .find(|c| c["credential_name"] == "openai")
        .unwrap();
    assert_eq!(openai["credential_info"], json!({}));
    assert_eq!(
        openai["credential_values"],
        json!({"api_key": "sk-o****7777"})
    );
    let one = ok(get(&proxy, "/credentials/by_name/azure-prod"));
    assert_eq!(&one, prod);
    for text in [
        created.to_string(),
        list.to_string(),
        one.to_string(),
        proxy.log(),
    ] {
        assert!(
            !text.contains(api_key) && !text.contains("SECRET"),
            "{text}"
        );
        assert!(!text.contains("sk-other-7777777777"), "{text}");
    }
}

#[test]
fn credential_errors_and_deletion() {
    let (_mock, proxy) = start();
    let create = |name: &str| {
        post(
            &proxy,
            "/credentials",
            json!({"credential_name": name, "credential_values": {"api_key": "sk-0123456789"}}),
        )
    };
    ok(create("shared"));
    let message = assert_bad_field(&create("shared"), "credential_name");
    assert!(message.contains("shared"), "{message}");
    assert_each_bad(
        &proxy,
        "/credentials",
        json!([
            ["credential_name", {"credential_values": {"api_key": "x"}}],
            ["credential_name", {"credential_name": " ", "credential_values": {"api_key": "x"}}],
            ["credential_values", {"credential_name": "n"}],
            ["credential_values", {"credential_name": "n", "credential_values": {}}],
            ["credential_values", {"credential_name": "n", "credential_values": "x"}],
            ["credential_info",
                {"credential_name": "n", "credential_values": {"a": "b"}, "credential_info": 1}],
        ]),
    );
    let message = assert_not_found(&get(&proxy, "/credentials/by_name/nope"));
    assert!(message.contains("nope"), "{message}");
    assert_not_found(&proxy.manage("DELETE", "/credentials/nope", None));

    // In use by a model: refused, and both stay.
    let id = new_model(
        &proxy,
        json!({"model_name": "m", "litellm_params": {"model": "x", "litellm_credential_name": "shared"}}),
    )["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = proxy.manage("DELETE", "/credentials/shared", None);
    let message = assert_lite_error(&response, 400, "bad_request_error", None);
    assert!(message.contains(&id), "{message}");
    ok(get(&proxy, "/credentials/by_name/shared"));
    assert_eq!(info_names(&ok(get(&proxy, "/model/info"))), ["m"]);

    // Once the model no longer refers to it, it can go.
    ok(post(
        &proxy,
        "/model/update",
        json!({"id": id, "litellm_params": {"litellm_credential_name": null}}),
    ));
    let deleted = ok(proxy.manage("DELETE", "/credentials/shared", None));
    assert_eq!(
        deleted,
        json!({"success": true, "credential_name": "shared"})
    );
    assert_not_found(&get(&proxy, "/credentials/by_name/shared"));
    assert_eq!(ok(get(&proxy, "/credentials")), json!({"credentials": []}));

    // Names are percent-decoded in the path.
    ok(create("team a/prod"));
    let one = ok(get(&proxy, "/credentials/by_name/team%20a%2Fprod"));
    assert_eq!(one["credential_name"], "team a/prod");
    ok(proxy.manage("DELETE", "/credentials/team%20a%2Fprod", None));
    assert_eq!(ok(get(&proxy, "/credentials")), json!({"credentials": []}));
}
