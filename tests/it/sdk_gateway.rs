//! The official SDKs as clients of the gateway, against a deployment of
//! each dialect (the scripts `tests/sdk/gateway_*.py`): the OpenAI SDK on
//! `/v1/chat/completions` and the Anthropic SDK on `/v1/messages`, to an
//! OpenAI deployment, an Azure OpenAI one and an Anthropic one, each on its
//! own mock upstream. Every call the script makes is then found in the
//! key's spend and in the request events, priced from the usage the SDK saw.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::litellm::*;
use crate::common::*;
use serde_json::{Value, json};

const AZURE_KEY: &str = "sk-azure-of-the-sdk-test";
const ANTHROPIC_KEY: &str = "sk-ant-of-the-sdk-test";
const GEMINI_KEY: &str = "AIza-of-the-sdk-test";
const AWS_KEY_ID: &str = "AKIDSDKGATEWAYTEST";
const AWS_SECRET: &str = "sdk/gateway+secret";

/// The models, their dialect as the scripts name it, and their prices
/// (input, output) a token.
const MODELS: [(&str, &str, f64, f64); 5] = [
    ("gpt-plain", "openai", 1e-6, 2e-6),
    ("gpt-azure", "azure", 3e-6, 5e-6),
    ("claude", "anthropic", 7e-6, 11e-6),
    ("gemini", "gemini", 13e-6, 17e-6),
    ("bedrock", "bedrock", 19e-6, 23e-6),
];

/// The dialects that serve Anthropic clients (`/v1/messages`).
const MESSAGES_DIALECTS: [&str; 3] = ["openai", "azure", "anthropic"];

struct Gateway {
    proxy: Proxy,
    key: String,
    key_id: String,
    sink: PathBuf,
    _mocks: [Mock; 5],
    _dir: TempDir,
}

/// A gateway with the three models, each on its own mock, writing its
/// events to a file, and a key for them.
fn gateway() -> Gateway {
    let plain = Mock::start();
    let azure = Mock::builder().args(["--api-key", AZURE_KEY]).start();
    let anthropic = Mock::builder().args(["--api-key", ANTHROPIC_KEY]).start();
    let gemini = Mock::builder().args(["--api-key", GEMINI_KEY]).start();
    let bedrock = Mock::builder()
        .args([
            "--aws-access-key-id",
            AWS_KEY_ID,
            "--aws-secret-access-key",
            AWS_SECRET,
        ])
        .start();
    let dir = TempDir::new("sdk-gateway");
    let sink = dir.path().join("events.jsonl");
    let proxy = Proxy::for_mock(&plain)
        .env("FILE_EVENT_LOG", sink.to_str().unwrap())
        .start();
    let params = [
        json!({"model": "openai/gpt-4o-mini", "api_base": format!("{}/v1", plain.url()),
               "api_key": "sk-plain"}),
        json!({"model": "azure/gpt-4o-prod", "api_base": azure.url(), "api_key": AZURE_KEY,
               "api_version": "2024-10-21"}),
        json!({"model": "anthropic/claude-sonnet-4-5", "api_base": anthropic.url(),
               "api_key": ANTHROPIC_KEY}),
        json!({"model": "gemini/gemini-2.5-flash", "api_base": gemini.url(),
               "api_key": GEMINI_KEY}),
        json!({"model": "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
               "api_base": bedrock.url(), "aws_access_key_id": AWS_KEY_ID,
               "aws_secret_access_key": AWS_SECRET, "aws_region_name": "us-east-1"}),
    ];
    for ((name, _, input, output), params) in MODELS.iter().zip(params) {
        new_model(
            &proxy,
            json!({"model_name": name, "litellm_params": params,
                   "model_info": prices(*input, *output)}),
        );
    }
    let generated = generate(&proxy, json!({}));
    Gateway {
        key: secret(&generated),
        key_id: generated["id"].as_str().unwrap().to_string(),
        proxy,
        sink,
        _mocks: [plain, azure, anthropic, gemini, bedrock],
        _dir: dir,
    }
}

/// The script's arguments: the gateway, the key, and the `model:dialect`s
/// of the dialects `serves`.
fn script_args(gateway: &Gateway, serves: impl Fn(&str) -> bool) -> Vec<String> {
    let mut args = vec![gateway.proxy.url(), gateway.key.clone()];
    args.extend(
        MODELS
            .iter()
            .filter(|(_, dialect, ..)| serves(dialect))
            .map(|(name, dialect, ..)| format!("{name}:{dialect}")),
    );
    args
}

#[track_caller]
fn assert_checks(output: &str, checks: &[(&str, &[&str])]) {
    for (model, checks) in checks {
        for check in *checks {
            let line = format!("ok: {model}: {check}");
            assert!(
                output.lines().any(|l| l == line),
                "no `{line}` in:\n{output}"
            );
        }
    }
}

/// One call a script made, from its `call: {...}` line.
#[derive(Debug)]
struct Call {
    request_id: String,
    model: String,
    status: u64,
    /// `(prompt_tokens, completion_tokens)` the SDK saw, if any.
    usage: Option<(u64, u64)>,
    /// The `x-litellm-response-cost` of a whole answer.
    cost: Option<f64>,
}

fn calls(output: &str) -> Vec<Call> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("call: "))
        .map(|line| {
            let call: Value = serde_json::from_str(line).unwrap();
            let usage = &call["usage"];
            Call {
                request_id: call["request_id"].as_str().unwrap().to_string(),
                model: call["model"].as_str().unwrap().to_string(),
                status: call["status"].as_u64().unwrap(),
                usage: usage["prompt_tokens"]
                    .as_u64()
                    .zip(usage["completion_tokens"].as_u64()),
                cost: call["cost"].as_f64(),
            }
        })
        .collect()
}

/// What `model` charges for these tokens.
fn price(model: &str, (prompt, completion): (u64, u64)) -> f64 {
    let (_, _, input, output) = MODELS.iter().find(|m| m.0 == model).unwrap();
    prompt as f64 * input + completion as f64 * output
}

fn sink_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-12 + expected.abs() * 1e-9,
        "{what}: {actual}, expected {expected}"
    );
}

/// Every call is one event of `endpoint` with its model and status; an
/// event's usage is what the SDK saw and its cost that usage at the
/// model's prices (a call the SDK saw no usage for is priced from the
/// event's usage: errors cost nothing). The key's spend settles at the sum
/// of it all. Stops the gateway (so that every event is written).
#[track_caller]
fn assert_spend_and_events(gateway: Gateway, calls: &[Call], endpoint: &str) {
    assert!(calls.len() > 10, "{calls:?}");
    let mut total = 0.0;
    let mut seen = 0.0;
    let mut failed_streams = 0;
    assert!(
        wait_until(Duration::from_secs(20), || sink_events(&gateway.sink).len()
            >= calls.len()),
        "events: {:#?}",
        sink_events(&gateway.sink)
    );
    let events = sink_events(&gateway.sink);
    for call in calls {
        let event = events
            .iter()
            .find(|e| e["request_id"] == call.request_id.as_str())
            .unwrap_or_else(|| panic!("no event for {call:?} in {events:#?}"));
        assert_eq!(event["model"], call.model.as_str(), "{event}");
        if event["error"] == "upstream_stream_failed" {
            // A stream the upstream ended with an error event: the client
            // got its 200 and then the error; the request is recorded as
            // failed.
            assert_eq!(call.status, 200, "{event}");
            assert_eq!(event["status"], 502, "{event}");
            assert_eq!(event["response_complete"], false, "{event}");
            failed_streams += 1;
        } else {
            assert_eq!(event["status"], call.status, "{event}");
        }
        assert!(
            event["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with(endpoint)),
            "{event}"
        );
        assert_eq!(event["key_id"], gateway.key_id.as_str(), "{event}");
        let cost = event["cost_usd"].as_f64().unwrap_or(0.0);
        let logged = event["usage"]["prompt_tokens"]
            .as_u64()
            .zip(event["usage"]["completion_tokens"].as_u64());
        match call.usage {
            Some(usage) => {
                assert_eq!(logged, Some(usage), "{call:?}: {event}");
                assert_close(cost, price(&call.model, usage), &call.request_id);
                if let Some(header) = call.cost {
                    assert_close(header, cost, &call.request_id);
                }
                seen += cost;
            }
            None if call.status >= 400 => assert_eq!(cost, 0.0, "{event}"),
            None => {
                if let Some(logged) = logged {
                    assert_close(cost, price(&call.model, logged), &call.request_id);
                }
            }
        }
        total += cost;
    }
    assert!(seen > 0.0);
    // The translated models' streams that end with an error event, on
    // /v1/chat/completions.
    let expected_failures = if endpoint == "/v1/chat/completions" {
        3
    } else {
        0
    };
    assert_eq!(failed_streams, expected_failures);
    assert_close(
        events
            .iter()
            .map(|e| e["cost_usd"].as_f64().unwrap_or(0.0))
            .sum(),
        total,
        "the events' cost",
    );
    let mut spend = 0.0;
    let settled = wait_until(Duration::from_secs(10), || {
        spend = key_info(&gateway.proxy, &gateway.key)["spend"]
            .as_f64()
            .unwrap_or(0.0);
        (spend - total).abs() <= 1e-12 + total * 1e-9
    });
    assert!(
        settled,
        "the key's spend is {spend}, its calls cost {total}"
    );

    // Written by the time the gateway has stopped: one event a call, no more.
    let sink = gateway.sink.clone();
    gateway.proxy.stop();
    assert_eq!(sink_events(&sink).len(), calls.len());
}

#[test]
fn the_openai_sdk_is_a_client_of_every_dialect() {
    let gateway = gateway();
    let args = script_args(&gateway, |_| true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(output) = run_sdk_script("gateway_openai.py", &args, &[]) else {
        return;
    };
    let common: &[&str] = &[
        "chat",
        "stream",
        "429 raises RateLimitError",
        "500 raises InternalServerError",
    ];
    let translated: &[&str] = &[
        "tools round trip",
        "streamed tool calls",
        "stream error raises APIError",
    ];
    assert_checks(
        &output,
        &[
            ("gpt-plain", common),
            ("gpt-plain", &["tools passed through"]),
            ("gpt-azure", common),
            ("gpt-azure", &["tools passed through"]),
            ("claude", common),
            ("claude", translated),
            ("gemini", common),
            ("gemini", translated),
            ("bedrock", common),
            ("bedrock", translated),
        ],
    );
    assert_spend_and_events(gateway, &calls(&output), "/v1/chat/completions");
}

#[test]
fn the_anthropic_sdk_is_a_client_of_every_dialect() {
    let gateway = gateway();
    let args = script_args(&gateway, |dialect| MESSAGES_DIALECTS.contains(&dialect));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(output) = run_sdk_script("gateway_anthropic.py", &args, &[]) else {
        return;
    };
    let common: &[&str] = &[
        "messages.create",
        "messages.stream",
        "429 raises RateLimitError",
    ];
    let translated: &[&str] = &["tools passed through", "messages.count_tokens estimated"];
    assert_checks(
        &output,
        &[
            ("gpt-plain", common),
            ("gpt-plain", translated),
            ("gpt-azure", common),
            ("gpt-azure", translated),
            ("claude", common),
            (
                "claude",
                &[
                    "tools round trip",
                    "streamed tool_use",
                    "messages.count_tokens",
                ],
            ),
        ],
    );
    assert_spend_and_events(gateway, &calls(&output), "/v1/messages");
}
