//! Requests for registered models: routed to their deployments (upstream,
//! key, model name), balanced, retried on another deployment, checked
//! against the key's model allowlist and budget, and charged for the tokens
//! they used.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

/// The key and model prices used below: a request of the mock's default
/// answer costs a round, exact amount.
const INPUT_COST: f64 = 0.001;
const OUTPUT_COST: f64 = 0.002;
/// The mock's answer (16 tokens): what a budgeted request without
/// `max_tokens` is assumed to use at most, in the tests of budgets below.
const ANSWER_TOKENS: &str = "16";

fn register(proxy: &Proxy, name: &str, mock_url: &str, extra: Value) -> String {
    let mut params = json!({
        "model": format!("openai/{name}-upstream"),
        "api_base": format!("{mock_url}/v1"),
        "api_key": format!("sk-deployment-of-{name}"),
    });
    if let (Some(params), Value::Object(extra)) = (params.as_object_mut(), extra) {
        params.extend(extra);
    }
    let body = json!({
        "model_name": name,
        "litellm_params": params,
        "model_info": {"input_cost_per_token": INPUT_COST, "output_cost_per_token": OUTPUT_COST},
    });
    let response = proxy.manage("POST", "/model/new", Some(body));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["model_id"].as_str().unwrap().to_string()
}

fn generate_key(proxy: &Proxy, fields: Value) -> String {
    let response = proxy.manage("POST", "/key/generate", Some(fields));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["key"].as_str().unwrap().to_string()
}

fn ask(proxy: &Proxy, key: &str, path: &str, model: &str, stream: bool) -> Response {
    let body = json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "sixteen chars!!!"}],
    });
    proxy.call(
        Req::post(path, body.to_string())
            .auth(key)
            .header("Content-Type", "application/json"),
    )
}

/// Waits for the workers' usage reports (about once a second) to reach the
/// ledger, then returns the key's `/key/info`.
fn key_info_after_reports(proxy: &Proxy, key: &str, expected_requests: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = proxy
            .manage("GET", &format!("/key/info?key={key}"), None)
            .json();
        if info["info"]["request_count"] == expected_requests || Instant::now() > deadline {
            return info["info"].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_registered_model_goes_to_its_deployment_with_its_key_and_model_name() {
    let project_mock = Mock::start();
    let deployment = Mock::start();
    let other = Mock::start();
    let proxy = Proxy::for_mock(&project_mock).start();
    register(&proxy, "fast", &deployment.url(), json!({}));
    register(&proxy, "slow", &other.url(), json!({}));
    let key = generate_key(&proxy, json!({}));

    for path in ["/v1/chat/completions", "/chat/completions"] {
        let response = ask(&proxy, &key, path, "fast", false);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(
            response.json()["model"],
            "fast-upstream",
            "the upstream model name went up"
        );
        assert!(response.header("x-litellm-model-id").is_some());
    }
    let seen = deployment.last_request();
    assert_eq!(seen["target"], "/v1/chat/completions");
    let headers = headers_of(&seen);
    assert_eq!(
        header_value(&headers, "authorization"),
        Some("Bearer sk-deployment-of-fast")
    );
    assert_eq!(
        deployment.stat("requests"),
        4,
        "two chats and two stats calls"
    );
    assert_eq!(other.stat("requests"), 1, "only this stats call");
    assert_eq!(project_mock.stat("requests"), 1, "only this stats call");
}

#[test]
fn unregistered_models_pass_through_for_project_keys_only() {
    let project_mock = Mock::start();
    let deployment = Mock::start();
    let proxy = Proxy::for_mock(&project_mock).start();
    register(&proxy, "fast", &deployment.url(), json!({}));
    let projectless = generate_key(&proxy, json!({}));

    let response = ask(
        &proxy,
        &projectless,
        "/v1/chat/completions",
        "gpt-4o-mini",
        false,
    );
    response.assert_error(404, "model_not_found");

    let response = ask(
        &proxy,
        CLIENT_KEY,
        "/v1/chat/completions",
        "gpt-4o-mini",
        false,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "gpt-4o-mini");
    let headers = project_mock.last_request_headers();
    assert_eq!(
        header_value(&headers, "authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );

    // A project key reaches registered models too.
    let response = ask(&proxy, CLIENT_KEY, "/v1/chat/completions", "fast", false);
    assert_eq!(response.json()["model"], "fast-upstream");
}

#[test]
fn the_model_allowlist_and_aliases_of_a_key_apply() {
    let deployment = Mock::start();
    let proxy = Proxy::for_mock(&deployment).start();
    register(&proxy, "fast", &deployment.url(), json!({}));
    register(&proxy, "slow", &deployment.url(), json!({}));
    let key = generate_key(
        &proxy,
        json!({"models": ["slow"], "aliases": {"quick": "fast", "tortoise": "slow"}}),
    );

    ask(&proxy, &key, "/v1/chat/completions", "fast", false)
        .assert_error(401, "key_model_access_denied");
    ask(&proxy, &key, "/v1/chat/completions", "quick", false)
        .assert_error(401, "key_model_access_denied");
    let response = ask(&proxy, &key, "/v1/chat/completions", "tortoise", false);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "slow-upstream");

    // The user's allowlist applies as well.
    let user = proxy.manage(
        "POST",
        "/user/new",
        Some(json!({"models": ["fast"], "auto_create_key": false})),
    );
    let user_id = user.json()["user_id"].as_str().unwrap().to_string();
    let key = generate_key(&proxy, json!({"user_id": user_id}));
    ask(&proxy, &key, "/v1/chat/completions", "slow", false)
        .assert_error(401, "key_model_access_denied");
    assert_eq!(
        ask(&proxy, &key, "/v1/chat/completions", "fast", false).status,
        200
    );
}

#[test]
fn tokens_are_charged_and_budgets_stop_the_key() {
    let deployment = Mock::start();
    let proxy = Proxy::for_mock(&deployment)
        .env("BUDGET_DEFAULT_MAX_TOKENS", ANSWER_TOKENS)
        .start();
    register(&proxy, "fast", &deployment.url(), json!({}));
    // A request costs $0.036 and holds an estimate of $0.055 while it runs.
    let key = generate_key(&proxy, json!({"max_budget": 0.2}));

    let response = ask(&proxy, &key, "/v1/chat/completions", "fast", false);
    assert_eq!(response.status, 200);
    let usage = response.json()["usage"].clone();
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    let cost = prompt as f64 * INPUT_COST + completion as f64 * OUTPUT_COST;
    let reported: f64 = response
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (reported - cost).abs() < 1e-12,
        "cost header {reported}, expected {cost}"
    );

    // A streamed answer is charged from its final usage chunk.
    let response = ask(&proxy, &key, "/v1/chat/completions", "fast", true);
    assert_eq!(response.status, 200);
    let events = sse_data(&response.body);
    let last_usage: Value = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .rfind(|e| e["usage"].is_object())
        .expect("a usage chunk")["usage"]
        .clone();
    let stream_cost = last_usage["prompt_tokens"].as_u64().unwrap() as f64 * INPUT_COST
        + last_usage["completion_tokens"].as_u64().unwrap() as f64 * OUTPUT_COST;

    let info = key_info_after_reports(&proxy, &key, 2);
    let spend = info["spend"].as_f64().unwrap();
    assert!(
        (spend - (cost + stream_cost)).abs() < 1e-9,
        "spend {spend}, expected {}",
        cost + stream_cost
    );

    // Spent past the budget: refused before anything goes upstream.
    for _ in 0..200 {
        let before = deployment.stat("requests");
        let response = ask(&proxy, &key, "/v1/chat/completions", "fast", false);
        if response.status == 429 {
            response.assert_error(429, "budget_exceeded");
            assert_eq!(
                deployment.stat("requests"),
                before + 1,
                "only the stats call"
            );
            return;
        }
        assert_eq!(response.status, 200, "{}", response.text());
    }
    panic!("a $0.2 budget never ran out");
}

#[test]
fn a_failing_deployment_is_retried_on_another() {
    let healthy = Mock::start();
    let failing = ScriptedUpstream::start(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        false,
    );
    let proxy = Proxy::for_mock(&healthy).start();
    register(&proxy, "fast", &healthy.url(), json!({}));
    register(&proxy, "fast", &failing.url(), json!({"weight": 100}));
    // A deployment nobody listens on.
    register(&proxy, "fast", "http://127.0.0.1:9", json!({"weight": 100}));
    let key = generate_key(&proxy, json!({}));
    for _ in 0..20 {
        let response = ask(&proxy, &key, "/v1/chat/completions", "fast", false);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["model"], "fast-upstream");
    }
    assert!(
        !failing.requests().is_empty(),
        "the heavy failing deployment was tried"
    );

    // When every deployment fails, the last answer is the client's.
    let only_failing = Proxy::for_mock(&healthy).start();
    register(&only_failing, "down", &failing.url(), json!({}));
    let key = generate_key(&only_failing, json!({}));
    assert_eq!(
        ask(&only_failing, &key, "/v1/chat/completions", "down", false).status,
        503
    );
}

#[test]
fn traffic_is_balanced_by_weight() {
    let heavy = Mock::start();
    let light = Mock::start();
    let proxy = Proxy::for_mock(&heavy).start();
    register(&proxy, "fast", &heavy.url(), json!({"rpm": "300"}));
    register(&proxy, "fast", &light.url(), json!({"rpm": 100}));
    let key = generate_key(&proxy, json!({}));
    let mut conn = proxy.conn();
    let body =
        json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    for _ in 0..400 {
        let request = Req::post("/v1/chat/completions", body.clone()).auth(&key);
        assert_eq!(conn.roundtrip(&request.bytes()).status, 200);
    }
    let (heavy, light) = (heavy.stat("requests") - 1, light.stat("requests") - 1);
    assert_eq!(heavy + light, 400);
    assert!(
        (240..=360).contains(&heavy),
        "heavy {heavy}, light {light}: expected about 300 / 100"
    );
}

#[test]
fn spend_is_exact_under_concurrency_across_workers() {
    let deployment = Mock::start();
    let proxy = Proxy::for_mock(&deployment).workers(2).start();
    register(&proxy, "fast", &deployment.url(), json!({}));
    let key = generate_key(&proxy, json!({}));
    let one = ask(&proxy, &key, "/v1/chat/completions", "fast", false);
    let cost: f64 = one
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0);

    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, key) = (proxy.addr, key.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let body = json!({"model": "fast", "messages": [{"role": "user", "content": "sixteen chars!!!"}]}).to_string();
                for _ in 0..25 {
                    let request = Req::post("/v1/chat/completions", body.clone()).auth(&key);
                    assert_eq!(conn.roundtrip(&request.bytes()).status, 200);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let info = key_info_after_reports(&proxy, &key, 201);
    assert_eq!(info["request_count"], 201);
    let spend = info["spend"].as_f64().unwrap();
    assert!(
        (spend - 201.0 * cost).abs() < 1e-9,
        "spend {spend}, expected {}",
        201.0 * cost
    );
}

#[test]
fn spend_and_budgets_survive_a_kill_and_restart() {
    let deployment = Mock::start();
    let dir = TempDir::new("routing-db");
    let db = dir.path().join("data").display().to_string();
    let mut proxy = Proxy::for_mock(&deployment)
        .unseeded()
        .arg("--db")
        .arg(&db)
        .env("BUDGET_DEFAULT_MAX_TOKENS", ANSWER_TOKENS)
        .start();
    register(&proxy, "fast", &deployment.url(), json!({}));
    let user = proxy.manage(
        "POST",
        "/user/new",
        Some(json!({"max_budget": 1000, "auto_create_key": false})),
    );
    let user_id = user.json()["user_id"].as_str().unwrap().to_string();
    let key = generate_key(&proxy, json!({"max_budget": 0.2, "user_id": user_id}));
    let first = ask(&proxy, &key, "/v1/chat/completions", "fast", false);
    let cost: f64 = first
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    let mut served = 1u64;
    while ask(&proxy, &key, "/v1/chat/completions", "fast", false).status == 200 {
        served += 1;
        assert!(served < 100, "a $0.2 budget never ran out");
    }
    let info = key_info_after_reports(&proxy, &key, served);
    assert_eq!(info["request_count"], served);
    proxy.proc.signal("KILL");
    proxy.proc.wait_exit(Duration::from_secs(10));
    drop(proxy);

    let proxy = Proxy::for_mock(&deployment)
        .unseeded()
        .arg("--db")
        .arg(&db)
        .env("BUDGET_DEFAULT_MAX_TOKENS", ANSWER_TOKENS)
        .start();
    let info = proxy
        .manage("GET", &format!("/key/info?key={key}"), None)
        .json()["info"]
        .clone();
    // After a kill, budget still leased counts as spent: never less than
    // what was served, never more than the budget.
    let spend = info["spend"].as_f64().unwrap();
    assert!(
        spend >= served as f64 * cost - 1e-9 && spend <= 0.2 + 1e-9,
        "spend {spend} after the restart, {} served",
        served as f64 * cost
    );
    let user = proxy
        .manage("GET", &format!("/user/info?user_id={user_id}"), None)
        .json();
    let user_spend = user["user_info"]["spend"].as_f64().unwrap();
    assert!(
        user_spend >= spend - 1e-12,
        "the user's spend {user_spend} is at least the key's {spend}"
    );
    ask(&proxy, &key, "/v1/chat/completions", "fast", false).assert_error(429, "budget_exceeded");
}

#[test]
fn embeddings_are_routed_and_a_users_budget_stops_all_its_keys() {
    let deployment = Mock::start();
    let proxy = Proxy::for_mock(&deployment).start();
    register(&proxy, "embed", &deployment.url(), json!({}));
    let user = proxy.manage(
        "POST",
        "/user/new",
        // One request fits (it holds $0.014 while it runs, and costs $0.005);
        // a second does not.
        Some(json!({"max_budget": 0.015, "auto_create_key": false})),
    );
    let user_id = user.json()["user_id"].as_str().unwrap().to_string();
    let first = generate_key(&proxy, json!({"user_id": user_id}));
    let second = generate_key(&proxy, json!({"user_id": user_id}));

    let body = json!({"model": "embed", "input": ["one text", "another text"]});
    let request = |key: &str| {
        Req::post("/v1/embeddings", body.to_string())
            .auth(key)
            .header("Content-Type", "application/json")
    };
    let response = proxy.call(request(&first));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "embed-upstream");
    assert_eq!(response.json()["data"].as_array().unwrap().len(), 2);
    let cost: f64 = response
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0, "the request was charged: {cost}");

    // The user's spend reaches the ledger; then every key of theirs is refused.
    key_info_after_reports(&proxy, &first, 1);
    let refused = proxy.call(request(&second));
    refused.assert_error(429, "budget_exceeded");
    assert!(refused.text().contains("user"), "{}", refused.text());
}

#[test]
fn a_chunked_request_body_is_routed_with_a_length_of_its_own_and_bad_bodies_are_400() {
    let deployment = Mock::start();
    let proxy = Proxy::for_mock(&deployment).start();
    register(&proxy, "fast", &deployment.url(), json!({}));
    let key = generate_key(&proxy, json!({}));
    let body = json!({"messages": [{"role": "user", "content": "in pieces"}], "model": "fast"})
        .to_string();
    let (a, b) = body.as_bytes().split_at(17);
    let request = Req::post("/v1/chat/completions", chunked(&[a, b]))
        .auth(&key)
        .no_content_length()
        .header("Transfer-Encoding", "chunked");
    let mut conn = proxy.conn();
    let response = conn.roundtrip(&request.bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "fast-upstream");
    let headers = deployment.last_request_headers();
    assert!(header_value(&headers, "transfer-encoding").is_none());
    let expected = body.len() - "fast".len() + "fast-upstream".len();
    assert_eq!(
        header_value(&headers, "content-length"),
        Some(expected.to_string().as_str())
    );

    // The same connection goes on after a body that is not JSON.
    let bad = Req::post("/v1/chat/completions", "{not json").auth(&key);
    let response = conn.roundtrip(&bad.bytes());
    response.assert_error(400, "invalid_body");
    let model = Req::post("/v1/chat/completions", r#"{"model":["fast"]}"#).auth(&key);
    let response = conn.roundtrip(&model.bytes());
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], "invalid_body");
    assert_eq!(response.json()["error"]["param"], "model");
    let ok = Req::post("/v1/chat/completions", body.clone()).auth(&key);
    assert_eq!(conn.roundtrip(&ok.bytes()).status, 200);
}

#[test]
fn a_deployment_at_its_rpm_is_skipped_and_all_at_theirs_is_429() {
    let small = Mock::start();
    let large = Mock::start();
    let proxy = Proxy::for_mock(&small).workers(2).start();
    // The small deployment takes 3 requests a minute, the large one 5.
    register(
        &proxy,
        "fast",
        &small.url(),
        json!({"rpm": 3, "weight": 100}),
    );
    register(&proxy, "fast", &large.url(), json!({"rpm": 5, "weight": 1}));
    let key = generate_key(&proxy, json!({}));
    let (small_before, large_before) = (small.stat("requests"), large.stat("requests"));
    let mut served = 0;
    let refused = loop {
        let response = ask(&proxy, &key, "/v1/chat/completions", "fast", false);
        if response.status != 200 {
            break response;
        }
        served += 1;
        assert!(served <= 16, "more than the deployments' 8 a minute");
    };
    if served > 8 {
        // A minute began in the middle: the counts start again; nothing to check.
        return;
    }
    assert_eq!(served, 8);
    refused.assert_error(429, "deployments_at_limit");
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Each deployment got what its limit allows, the small one despite its
    // weight (and the mock counts the stats call that reads its count).
    assert_eq!(small.stat("requests") - small_before, 3 + 1);
    assert_eq!(large.stat("requests") - large_before, 5 + 1);
}
