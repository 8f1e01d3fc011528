//! Requests per minute, tokens per minute, parallel requests and budget
//! windows on keys and users, against the real server: what is served,
//! what is refused (429, its code, `Retry-After`), and the
//! `x-ratelimit-*` fields of the answers.
//!
//! The per-minute limits count in wall-clock minutes: a test that needs
//! one whole minute first waits out the end of the current one when it
//! is near (`fresh_minute`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::counting::CountingUpstream;
use crate::common::litellm::{add_deployment, generate_key, key_info, new_model, prices};
use crate::common::store::{conn_per_worker, send_on, timestamp};
use crate::common::*;
use serde_json::{Value, json};

/// Sixteen characters: the mock counts 4 prompt tokens for them.
const CONTENT: &str = "Sixteen chars ok";
/// What the mock's answer to `CONTENT` uses: 4 prompt and 16 completion tokens.
const TOKENS: u64 = 20;

/// A chat completion of `model` with `key`; a stream asks for its usage.
fn ask(model: &str, key: &str, stream: bool) -> Req {
    let mut body = json!({
        "model": model,
        "stream": stream,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": CONTENT}],
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    Req::post("/v1/chat/completions", body.to_string()).auth(key)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Seconds the server gives in `Retry-After` for a per-minute limit now.
fn seconds_left_in_minute() -> u64 {
    60 - (now_ms() % 60_000) / 1_000
}

/// Waits for the next minute when fewer than `seconds` are left of this
/// one, so that what follows runs within one minute's count.
pub fn fresh_minute(seconds: u64) {
    let into = now_ms() % 60_000;
    if 60_000 - into < seconds * 1_000 {
        std::thread::sleep(Duration::from_millis(60_000 - into + 20));
    }
}

/// `Retry-After` of a refusal, checked to be a number of seconds in 1..=60.
#[track_caller]
fn retry_after(response: &Response) -> u64 {
    let value = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", response.headers));
    let seconds: u64 = value.parse().expect("Retry-After in seconds");
    assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    seconds
}

/// Asserts a refusal by a per-minute limit: `code`, `Retry-After` the
/// seconds left in the minute (give or take the second it took), and no
/// `x-should-retry: false` (waiting helps).
#[track_caller]
fn assert_per_minute_refusal(response: &Response, code: &str) {
    response.assert_error(429, code);
    let expected = seconds_left_in_minute();
    let seconds = retry_after(response);
    assert!(
        seconds.abs_diff(expected) <= 1,
        "Retry-After {seconds}, {expected} s left in the minute"
    );
    assert_eq!(response.header("x-should-retry"), None);
}

#[track_caller]
fn header_number(response: &Response, name: &str) -> u64 {
    response
        .header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", response.headers))
}

/// Five requests per minute on two workers, streamed and not: five are
/// served, each saying how many are left, then both workers refuse until
/// the minute ends, and nothing of the refused requests goes upstream.
#[test]
fn rpm_serves_the_limit_then_refuses_until_the_minute_ends() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    add_deployment(&proxy, "paced", &mock, Value::Null);
    let key = generate_key(&proxy, json!({"rpm_limit": 5}));
    let mut conns = conn_per_worker(&proxy, 2);
    fresh_minute(10);

    for i in 0..5 {
        let response = send_on(&mut conns[i % 2], &ask("paced", &key, i % 2 == 1));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert_eq!(header_number(&response, "x-ratelimit-limit-requests"), 5);
        assert_eq!(
            header_number(&response, "x-ratelimit-remaining-requests"),
            4 - i as u64,
            "request {i}"
        );
    }
    let before = mock.stat("requests");
    for conn in &mut conns {
        for stream in [false, true] {
            let refused = send_on(conn, &ask("paced", &key, stream));
            assert_per_minute_refusal(&refused, "rpm_limit_exceeded");
            assert!(refused.text().contains("5 requests per minute"));
            // The refusal also says which limit, and that none of it is left.
            assert_eq!(header_number(&refused, "x-ratelimit-limit-requests"), 5);
            assert_eq!(header_number(&refused, "x-ratelimit-remaining-requests"), 0);
        }
    }
    assert_eq!(mock.stat("requests"), before + 1, "only the stats call");
}

/// Tokens are drawn from the answers' usage: a request is admitted while
/// the minute's tokens are not used up, so the one whose usage goes past
/// the limit is served, and the next is refused. The remaining tokens
/// each answer shows are what the answers before it used.
#[test]
fn tpm_is_charged_from_usage_and_refuses_once_used_up() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    add_deployment(&proxy, "paced", &mock, Value::Null);
    let key = generate_key(&proxy, json!({"tpm_limit": 50}));
    let mut conn = proxy.conn();
    fresh_minute(10);

    // 0, 20 and 40 tokens used before each: the third goes past 50.
    for (i, left) in [50, 50 - TOKENS, 50 - 2 * TOKENS].into_iter().enumerate() {
        let response = send_on(&mut conn, &ask("paced", &key, i == 1));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert_eq!(header_number(&response, "x-ratelimit-limit-tokens"), 50);
        assert_eq!(
            header_number(&response, "x-ratelimit-remaining-tokens"),
            left,
            "request {i}"
        );
        assert_eq!(response.header("x-ratelimit-limit-requests"), None);
    }
    let before = mock.stat("requests");
    for stream in [false, true] {
        let refused = send_on(&mut conn, &ask("paced", &key, stream));
        assert_per_minute_refusal(&refused, "tpm_limit_exceeded");
        assert!(refused.text().contains("50 tokens per minute"));
    }
    // The other worker knows it too, from the ledger.
    let refused = proxy.call(ask("paced", &key, false));
    assert_per_minute_refusal(&refused, "tpm_limit_exceeded");
    assert_eq!(mock.stat("requests"), before + 1, "only the stats call");
}

/// A deployment named `name` on a counting upstream.
fn on_counting(proxy: &Proxy, name: &str, upstream: &CountingUpstream) {
    new_model(
        proxy,
        json!({
            "model_name": name,
            "litellm_params": {
                "model": format!("openai/{name}-upstream"),
                "api_base": format!("{}/v1", upstream.url()),
                "api_key": "sk-counting",
            },
        }),
    );
}

/// `n` requests at once, each on its own connection; their answers.
fn at_once(proxy: &Proxy, n: usize, request: &Req) -> Vec<std::thread::JoinHandle<Response>> {
    (0..n)
        .map(|_| {
            let (addr, bytes) = (proxy.addr, request.bytes());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                conn.roundtrip(&bytes)
            })
        })
        .collect()
}

/// Three requests held by a slow upstream fill a limit of three in
/// parallel: a fourth is refused (and told to retry in a second), and
/// once they are answered, three at once pass again.
#[test]
fn parallel_requests_are_capped_while_held_and_pass_once_answered() {
    let upstream = CountingUpstream::start(Duration::from_millis(600), (4, 16));
    let proxy = Proxy::builder().unseeded().start();
    on_counting(&proxy, "slow", &upstream);
    let key = generate_key(&proxy, json!({"max_parallel_requests": 3}));

    let held = at_once(&proxy, 3, &ask("slow", &key, false));
    assert!(
        wait_until(Duration::from_secs(5), || upstream.in_flight() == 3),
        "three requests never reached the upstream at once"
    );
    for stream in [false, true] {
        let refused = proxy.call(ask("slow", &key, stream));
        refused.assert_error(429, "parallel_request_limit_exceeded");
        assert_eq!(retry_after(&refused), 1);
        assert!(refused.text().contains("3 requests in parallel"));
    }
    for answer in held {
        let answer = answer.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(upstream.max_in_flight(), 3);

    // The slots come back: those of the worker that served as soon as
    // its requests end, those leased by the other once it hands them back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answers: Vec<Response> = at_once(&proxy, 3, &ask("slow", &key, true))
            .into_iter()
            .map(|a| a.join().unwrap())
            .collect();
        if answers.iter().all(|a| a.status == 200) {
            break;
        }
        for answer in &answers {
            if answer.status != 200 {
                answer.assert_error(429, "parallel_request_limit_exceeded");
            }
        }
        assert!(
            Instant::now() < deadline,
            "three requests at once still refused 10 s after the others ended"
        );
    }
    assert_eq!(upstream.max_in_flight(), 3);
}

/// A user's limit and their key's both apply: a key of the user stops at
/// its own limit, and another key of the same user at what is left of
/// the user's.
#[test]
fn a_users_and_a_keys_rpm_both_apply() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    add_deployment(&proxy, "paced", &mock, Value::Null);
    let user = proxy.manage(
        "POST",
        "/user/new",
        Some(json!({"rpm_limit": 4, "auto_create_key": false})),
    );
    assert_eq!(user.status, 200, "{}", user.text());
    let user_id = user.json()["user_id"].as_str().unwrap().to_string();
    let limited = generate_key(&proxy, json!({"user_id": user_id, "rpm_limit": 3}));
    let free = generate_key(&proxy, json!({"user_id": user_id}));
    let mut conn = proxy.conn();
    fresh_minute(10);

    for i in 0..3 {
        let response = send_on(&mut conn, &ask("paced", &limited, false));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        // The tightest of the two limits is shown.
        assert_eq!(header_number(&response, "x-ratelimit-limit-requests"), 3);
    }
    let refused = send_on(&mut conn, &ask("paced", &limited, false));
    assert_per_minute_refusal(&refused, "rpm_limit_exceeded");
    assert!(
        refused.text().contains("this key has"),
        "{}",
        refused.text()
    );

    let last = send_on(&mut conn, &ask("paced", &free, true));
    assert_eq!(last.status, 200, "{}", last.text());
    assert_eq!(header_number(&last, "x-ratelimit-limit-requests"), 4);
    assert_eq!(header_number(&last, "x-ratelimit-remaining-requests"), 0);
    let refused = send_on(&mut conn, &ask("paced", &free, false));
    assert_per_minute_refusal(&refused, "rpm_limit_exceeded");
    assert!(
        refused.text().contains("this key's user has"),
        "{}",
        refused.text()
    );
}

/// `model_rpm_limit` limits the key's requests to that model only.
#[test]
fn a_keys_rpm_on_one_model_leaves_the_others_alone() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    add_deployment(&proxy, "alpha", &mock, Value::Null);
    add_deployment(&proxy, "beta", &mock, Value::Null);
    let key = generate_key(&proxy, json!({"model_rpm_limit": {"alpha": 2}}));
    let mut conn = proxy.conn();
    fresh_minute(10);

    for i in 0..2 {
        let response = send_on(&mut conn, &ask("alpha", &key, i == 1));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(header_number(&response, "x-ratelimit-limit-requests"), 2);
    }
    let refused = send_on(&mut conn, &ask("alpha", &key, false));
    assert_per_minute_refusal(&refused, "rpm_limit_exceeded");
    assert!(
        refused.text().contains("on this model"),
        "{}",
        refused.text()
    );
    for i in 0..5 {
        let response = send_on(&mut conn, &ask("beta", &key, i % 2 == 0));
        assert_eq!(response.status, 200, "beta {i}: {}", response.text());
        assert_eq!(response.header("x-ratelimit-limit-requests"), None);
    }
    let refused = send_on(&mut conn, &ask("alpha", &key, true));
    assert_per_minute_refusal(&refused, "rpm_limit_exceeded");
}

/// A budget of two requests a 2-second window: spent, it refuses with the
/// seconds until the window ends (and without `x-should-retry: false`);
/// `/key/info` shows when it resets; after that it serves again.
#[test]
fn a_budget_window_refuses_when_spent_and_serves_again_after_it() {
    /// 16 completion tokens at a dollar per million.
    const REQUEST_COST: f64 = 0.000016;
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    add_deployment(&proxy, "priced", &mock, prices(0.0, 0.000001));
    let key = generate_key(
        &proxy,
        json!({"max_budget": 2.0 * REQUEST_COST, "budget_duration": "2s"}),
    );
    let info = key_info(&proxy, &key);
    assert_eq!(info["budget_duration"], "2s", "{info}");
    let reset_at = timestamp(&info["budget_reset_at"]);
    let left = reset_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_millis(500) && left <= Duration::from_secs(2),
        "budget_reset_at {} s away: {info}",
        left.as_secs_f64()
    );

    let mut conns = conn_per_worker(&proxy, 2);
    for (i, conn) in conns.iter_mut().enumerate() {
        let response = send_on(conn, &ask("priced", &key, i == 1));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    for conn in &mut conns {
        let refused = send_on(conn, &ask("priced", &key, false));
        refused.assert_error(429, "budget_exceeded");
        assert!(retry_after(&refused) <= 2);
        assert_eq!(refused.header("x-should-retry"), None);
    }
    assert!(
        SystemTime::now() < reset_at,
        "the window ended before the refusals: too slow a machine for a 2 s window"
    );

    // Served again once the window is over, and not before.
    let mut served_at = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let asked_at = SystemTime::now();
        let response = send_on(&mut conns[0], &ask("priced", &key, false));
        if response.status == 200 {
            served_at = Some(asked_at);
            break;
        }
        response.assert_error(429, "budget_exceeded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let served_at = served_at.expect("never served again after the budget window");
    // `budget_reset_at` is shown in whole seconds.
    assert!(
        served_at + Duration::from_secs(1) >= reset_at,
        "served before the window ended"
    );
    let info = key_info(&proxy, &key);
    assert!(
        timestamp(&info["budget_reset_at"]) > reset_at,
        "budget_reset_at did not move on: {info}"
    );
}

/// The pass-through (a key of a project, a model nobody registered) obeys
/// the key's requests and tokens per minute too.
#[test]
fn the_pass_through_obeys_rpm_and_tpm() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let by_requests = generate_key(
        &proxy,
        json!({"project_id": proxy.project_id, "rpm_limit": 2}),
    );
    let by_tokens = generate_key(
        &proxy,
        json!({"project_id": proxy.project_id, "tpm_limit": 30}),
    );
    let mut conn = proxy.conn();
    fresh_minute(10);

    for i in 0..2 {
        let response = send_on(&mut conn, &ask("gpt-4o-mini", &by_requests, i == 1));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(header_number(&response, "x-ratelimit-limit-requests"), 2);
        assert_eq!(
            header_number(&response, "x-ratelimit-remaining-requests"),
            1 - i as u64
        );
    }
    let refused = send_on(&mut conn, &ask("gpt-4o-mini", &by_requests, false));
    assert_per_minute_refusal(&refused, "rpm_limit_exceeded");

    // 20 tokens an answer: the second goes past 30 and is served.
    for (i, left) in [30, 30 - TOKENS].into_iter().enumerate() {
        let response = send_on(&mut conn, &ask("gpt-4o-mini", &by_tokens, i == 1));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(header_number(&response, "x-ratelimit-limit-tokens"), 30);
        assert_eq!(
            header_number(&response, "x-ratelimit-remaining-tokens"),
            left
        );
    }
    let refused = send_on(&mut conn, &ask("gpt-4o-mini", &by_tokens, true));
    assert_per_minute_refusal(&refused, "tpm_limit_exceeded");
}
