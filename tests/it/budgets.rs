//! Budgets hold like `max_requests`: a routed request holds an estimate of
//! its cost out of a worker's lease of the key's budget before it goes
//! upstream, and settles to its real cost when the usage is known. Measured
//! with 64 connections on two workers, streamed and not, with an instant
//! and a slow upstream, strictly sequential, and across `kill -9`.
//!
//! The model is priced on completion tokens only and every request asks
//! for `max_tokens` equal to what the mock answers (16 tokens), so the
//! estimate is exact: a budget of N requests must serve at most N.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::cli::RecordingServer;
use crate::common::litellm::{add_deployment, generate_key, prices};
use crate::common::store::{conn_per_worker, send_on};
use crate::common::*;
use serde_json::{Value, json};

/// The mock's answer: 16 completion tokens, streamed or not.
const COMPLETION_TOKENS: u64 = 16;
/// One dollar per million completion tokens.
const OUTPUT_COST: f64 = 0.000001;
/// What one request costs, in picodollars (the ledger's unit).
const REQUEST_PICO: u64 = 16_000_000;
const CONNECTIONS: usize = 64;

/// The model every request here asks for, priced on completion tokens only.
fn register(proxy: &Proxy, mock: &Mock) {
    add_deployment(proxy, "priced", mock, prices(0.0, OUTPUT_COST));
}

/// A key whose budget pays for exactly `requests` requests.
fn key_for(proxy: &Proxy, requests: u64) -> String {
    let budget = (requests * REQUEST_PICO) as f64 / 1e12;
    generate_key(proxy, json!({"max_budget": budget}))
}

fn ask(key: &str, stream: bool, max_tokens: u64) -> Req {
    let body = json!({
        "model": "priced",
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "What does a budget hold?"}],
    });
    Req::post("/v1/chat/completions", body.to_string())
        .auth(key)
        .header("Content-Type", "application/json")
}

fn pico(dollars: f64) -> u64 {
    (dollars * 1e12).round() as u64
}

/// What a run of clients saw.
#[derive(Debug, Default)]
struct Run {
    served: usize,
    refused: usize,
    /// Sum of the `x-litellm-response-cost` headers of the 200s, in
    /// picodollars (non-streamed answers carry one).
    cost_pico: u64,
    unexpected: Vec<String>,
}

/// `CONNECTIONS` clients, each on its own keep-alive connection, ask until
/// each is refused with `budget_exceeded` (or `stop` is set: the server is
/// being killed, and errors from then on are expected).
fn run(
    addr: std::net::SocketAddr,
    key: &str,
    stream: bool,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Run {
    run_with(addr, key, stream, CONNECTIONS, served, stop)
}

fn run_with(
    addr: std::net::SocketAddr,
    key: &str,
    stream: bool,
    connections: usize,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Run {
    let request = ask(key, stream, COMPLETION_TOKENS).bytes();
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let (request, served, stop) = (request.clone(), served.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut run = Run::default();
                let mut conn = match Conn::try_open(addr) {
                    Ok(conn) => conn,
                    Err(e) => {
                        run.unexpected.push(format!("connect: {e}"));
                        return run;
                    }
                };
                for _ in 0..10_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let response = conn.try_send(&request).and_then(|()| conn.read_response());
                    match response {
                        Ok(response) if response.status == 200 => {
                            if let Some(cost) = response.header("x-litellm-response-cost") {
                                run.cost_pico += pico(cost.parse().expect("a cost"));
                            }
                            run.served += 1;
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(response)
                            if response.status == 429
                                && response.error_code() == "budget_exceeded" =>
                        {
                            run.refused += 1;
                            break;
                        }
                        Ok(response) => {
                            run.unexpected
                                .push(format!("{} {}", response.status, response.text()));
                            break;
                        }
                        Err(_) if stop.load(Ordering::SeqCst) => break,
                        Err(e) => {
                            run.unexpected.push(format!("I/O: {e}"));
                            break;
                        }
                    }
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for client in clients {
        let run = client.join().expect("client thread");
        total.served += run.served;
        total.refused += run.refused;
        total.cost_pico += run.cost_pico;
        total.unexpected.extend(run.unexpected);
    }
    total
}

fn run_to_the_end(proxy: &Proxy, key: &str, stream: bool) -> Run {
    run(proxy.addr, key, stream, Arc::default(), Arc::default())
}

/// `/key/info` as it is now.
fn info_now(proxy: &Proxy, key: &str) -> Value {
    proxy
        .manage("GET", &format!("/key/info?key={key}"), None)
        .json()["info"]
        .clone()
}

/// `/key/info` once the workers' reports (about once a second) show at
/// least `requests` requests.
fn key_info(proxy: &Proxy, key: &str, requests: u64) -> Value {
    let mut info = Value::Null;
    let reported = wait_until(Duration::from_secs(10), || {
        info = info_now(proxy, key);
        info["request_count"].as_u64().unwrap_or(0) >= requests
    });
    assert!(reported, "request_count never reached {requests}: {info}");
    info
}

/// 64 connections against a budget of N requests: at most N served, and
/// close to N (nothing is lost without a crash); the key's spend is the sum
/// of the costs the answers reported, and its request count what was served.
fn budget_holds_under_load(latency_ms: u64, stream: bool) {
    const N: u64 = 150;
    let mock = Mock::builder()
        .args(["--latency-ms", &latency_ms.to_string()])
        .start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    register(&proxy, &mock);
    let key = key_for(&proxy, N);

    let result = run_to_the_end(&proxy, &key, stream);
    eprintln!("latency {latency_ms} ms, stream {stream}: {result:?}");
    assert!(
        result.unexpected.is_empty(),
        "unexpected answers: {:?}",
        result.unexpected
    );
    assert_eq!(result.refused, CONNECTIONS, "every client ends refused");
    assert!(
        result.served as u64 <= N,
        "a budget of {N} requests served {}",
        result.served
    );
    assert!(
        result.served as u64 >= N - 2,
        "a budget of {N} requests served only {}",
        result.served
    );

    let info = key_info(&proxy, &key, result.served as u64);
    assert_eq!(info["request_count"], result.served as u64, "{info}");
    let spend = pico(info["spend"].as_f64().unwrap());
    assert_eq!(spend, result.served as u64 * REQUEST_PICO, "{info}");
    if !stream {
        assert_eq!(
            spend, result.cost_pico,
            "the spend is what the answers said"
        );
    }
    // Once reported, it stays refused, and clients are told not to retry.
    let refused = proxy.call(ask(&key, stream, COMPLETION_TOKENS));
    refused.assert_error(429, "budget_exceeded");
    assert_eq!(refused.header("x-should-retry"), Some("false"));
}

#[test]
fn budget_holds_with_64_connections_instant_upstream() {
    budget_holds_under_load(0, false);
}

#[test]
fn budget_holds_with_64_connections_instant_upstream_streamed() {
    budget_holds_under_load(0, true);
}

#[test]
fn budget_holds_with_64_connections_slow_upstream() {
    budget_holds_under_load(50, false);
}

#[test]
fn budget_holds_with_64_connections_slow_upstream_streamed() {
    budget_holds_under_load(50, true);
}

/// A user's budget is shared by all their keys: two keys of one user, 32
/// connections each, one streamed and one not, serve at most what the
/// user's budget pays for, and the user's spend is what was served.
#[test]
fn a_users_budget_holds_across_their_keys() {
    const N: u64 = 120;
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    register(&proxy, &mock);
    let budget = (N * REQUEST_PICO) as f64 / 1e12;
    let user = proxy.manage(
        "POST",
        "/user/new",
        Some(json!({"max_budget": budget, "auto_create_key": false})),
    );
    assert_eq!(user.status, 200, "{}", user.text());
    let user_id = user.json()["user_id"].as_str().unwrap().to_string();
    let keys: Vec<String> = (0..2)
        .map(|_| generate_key(&proxy, json!({"user_id": user_id})))
        .collect();

    let served = run_keys_to_the_end(&proxy, &keys);
    assert!(
        served <= N,
        "a user's budget of {N} requests served {served}"
    );
    assert!(
        served >= N - 2,
        "a user's budget of {N} requests served only {served}"
    );
    let reported = wait_until(Duration::from_secs(10), || {
        let user = proxy
            .manage("GET", &format!("/user/info?user_id={user_id}"), None)
            .json();
        pico(user["user_info"]["spend"].as_f64().unwrap_or(0.0)) == served * REQUEST_PICO
    });
    assert!(
        reported,
        "the user's spend never reached {served} requests' worth"
    );
}

/// Half the clients on each of `keys` (the second's streamed) until each
/// is refused; what they were served, all told.
fn run_keys_to_the_end(proxy: &Proxy, keys: &[String]) -> u64 {
    let runs: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (key, addr) = (key.clone(), proxy.addr);
            std::thread::spawn(move || {
                run_with(
                    addr,
                    &key,
                    i == 1,
                    CONNECTIONS / 2,
                    Arc::default(),
                    Arc::default(),
                )
            })
        })
        .collect();
    let runs: Vec<Run> = runs
        .into_iter()
        .map(|r| r.join().expect("clients"))
        .collect();
    eprintln!("{runs:?}");
    for run in &runs {
        assert!(run.unexpected.is_empty(), "{:?}", run.unexpected);
        assert_eq!(run.refused, CONNECTIONS / 2);
    }
    runs.iter().map(|r| r.served as u64).sum()
}

#[test]
fn a_teams_budget_holds_across_its_keys() {
    const N: u64 = 120;
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    register(&proxy, &mock);
    let budget = (N * REQUEST_PICO) as f64 / 1e12;
    let team = proxy.manage(
        "POST",
        "/team/new",
        Some(json!({"team_id": "red", "max_budget": budget})),
    );
    assert_eq!(team.status, 200, "{}", team.text());
    let keys: Vec<String> = (0..2)
        .map(|_| generate_key(&proxy, json!({"team_id": "red"})))
        .collect();
    // Held out of the team's budget, not only checked against its spend.
    let served = run_keys_to_the_end(&proxy, &keys);
    assert!(
        served <= N,
        "a team's budget of {N} requests served {served}"
    );
    assert!(
        served >= N - 2,
        "a team's budget of {N} requests served only {served}"
    );
    let reported = wait_until(Duration::from_secs(10), || {
        let team = proxy.manage("GET", "/team/info?team_id=red", None).json();
        pico(team["team_info"]["spend"].as_f64().unwrap_or(0.0)) == served * REQUEST_PICO
    });
    assert!(
        reported,
        "the team's spend never reached {served} requests' worth"
    );
}

/// One request at a time, alternating between the two workers: exactly the
/// number that fit. A request whose estimate does not fit in what is left
/// is refused even when a smaller one still fits.
#[test]
fn sequential_requests_get_exactly_what_fits() {
    const N: u64 = 5;
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    register(&proxy, &mock);
    let key = key_for(&proxy, N);
    let mut conns = conn_per_worker(&proxy, 2);

    for served in 0..N - 1 {
        let conn = &mut conns[served as usize % 2];
        let response = send_on(conn, &ask(&key, false, COMPLETION_TOKENS));
        assert_eq!(
            response.status,
            200,
            "request {served}: {}",
            response.text()
        );
    }
    // One request's worth is left: a request that may use more is refused,
    // and nothing of it goes upstream.
    let before = mock.stat("requests");
    let greedy = send_on(&mut conns[0], &ask(&key, false, 10 * COMPLETION_TOKENS));
    greedy.assert_error(429, "budget_exceeded");
    assert_eq!(mock.stat("requests"), before + 1, "only the stats call");
    let last = send_on(&mut conns[1], &ask(&key, false, COMPLETION_TOKENS));
    assert_eq!(
        last.status,
        200,
        "the last request that fits: {}",
        last.text()
    );
    for conn in &mut conns {
        send_on(conn, &ask(&key, false, COMPLETION_TOKENS)).assert_error(429, "budget_exceeded");
        send_on(conn, &ask(&key, true, 1)).assert_error(429, "budget_exceeded");
    }

    let info = key_info(&proxy, &key, N);
    assert_eq!(info["request_count"], N, "{info}");
    assert_eq!(
        pico(info["spend"].as_f64().unwrap()),
        N * REQUEST_PICO,
        "{info}"
    );
}

/// A server of two workers on the data directory `db`, in front of `mock`.
fn on_db(mock: &Mock, db: &str) -> Proxy {
    Proxy::for_mock(mock)
        .unseeded()
        .arg("--db")
        .arg(db)
        .workers(2)
        .start()
}

/// Once `served` reaches `progress` (or after 30 s), kills the server with
/// SIGKILL and tells the `clients` to stop; returns what they saw.
fn kill_9_once_served<T>(
    proxy: &Proxy,
    progress: usize,
    served: &AtomicUsize,
    stop: &AtomicBool,
    clients: JoinHandle<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.load(Ordering::SeqCst) < progress && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Stop first: a client that sees its connection die must already know
    // that the kill is why (its request in flight is still cut short).
    stop.store(true, Ordering::SeqCst);
    proxy.proc.signal("KILL");
    clients.join().expect("clients")
}

/// `kill -9` in the middle of a 64-connection run, a restart on the same
/// data directory, and the rest of the budget: never more than N in all,
/// and the request count shown after the restart never less than what was
/// served (over by at most one lease per worker and the requests in flight,
/// as docs/architecture.md says).
#[test]
fn budget_holds_across_kill_9() {
    const N: u64 = 600;
    /// Count leases of a key without `max_requests`, per worker.
    const COUNT_LEASE: u64 = 64;
    let data = TempDir::new("budget-crash");
    let db = data.path().join("data").display().to_string();
    let mock = Mock::builder().args(["--latency-ms", "20"]).start();
    let start = || on_db(&mock, &db);
    let mut proxy = start();
    register(&proxy, &mock);
    let key = key_for(&proxy, N);

    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (served, stop, key, addr) = (served.clone(), stop.clone(), key.clone(), proxy.addr);
        std::thread::spawn(move || run(addr, &key, false, served, stop))
    };
    let before = kill_9_once_served(&proxy, (N / 3) as usize, &served, &stop, clients);
    eprintln!("before the crash: {before:?}");
    assert!(
        before.served as u64 >= N / 3,
        "no progress before the kill: {before:?}"
    );
    assert!(before.unexpected.is_empty(), "{:?}", before.unexpected);
    assert_eq!(before.refused, 0, "refused below the budget: {before:?}");
    let status = proxy.proc.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.code().is_none()),
        "killed: {status:?}"
    );
    drop(proxy);

    let proxy = start();
    let shown = info_now(&proxy, &key);
    let shown_count = shown["request_count"].as_u64().unwrap();
    let in_flight = CONNECTIONS as u64;
    assert!(
        shown_count >= before.served as u64,
        "request_count {shown_count} after the crash, {} served",
        before.served
    );
    assert!(
        shown_count <= before.served as u64 + in_flight + 2 * COUNT_LEASE,
        "request_count {shown_count} after the crash, {} served: more over than the bound",
        before.served
    );
    let spend = pico(shown["spend"].as_f64().unwrap());
    assert!(
        spend >= before.served as u64 * REQUEST_PICO,
        "spend {spend} after the crash, {} served",
        before.served
    );
    assert!(
        spend <= N * REQUEST_PICO,
        "spend {spend} past the budget after the crash"
    );

    let after = run_to_the_end(&proxy, &key, false);
    eprintln!("after the restart: {after:?}");
    assert!(after.unexpected.is_empty(), "{:?}", after.unexpected);
    assert_eq!(after.refused, CONNECTIONS);
    let total = (before.served + after.served) as u64;
    assert!(
        total <= N,
        "a budget of {N} requests served {total} across a crash"
    );
    // Requests served after the restart are counted on top.
    let info = key_info(&proxy, &key, shown_count + after.served as u64);
    assert!(info["request_count"].as_u64().unwrap() >= total, "{info}");
}

/// The same for a key limited by `max_requests` alone (not routed): after
/// `kill -9` its `request_count` is never less than what was served.
#[test]
fn request_count_is_never_short_after_kill_9() {
    const MAX: u64 = 2000;
    const LEASE: u64 = 64;
    let data = TempDir::new("count-crash");
    let db = data.path().join("data").display().to_string();
    let mock = Mock::builder().args(["--latency-ms", "5"]).start();
    let start = || on_db(&mock, &db);
    let mut proxy = start();
    proxy.project_id = proxy.create_project("crash", UPSTREAM_KEY);
    let token = proxy.create_token(json!({"max_requests": MAX}));
    let (id, secret) = (
        token["id"].as_str().unwrap().to_string(),
        token["token"].as_str().unwrap().to_string(),
    );

    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (served, stop, addr) = (served.clone(), stop.clone(), proxy.addr);
        std::thread::spawn(move || common::store::load(addr, &secret, CONNECTIONS, served, stop))
    };
    let before = kill_9_once_served(&proxy, 400, &served, &stop, clients);
    assert!(before.ok >= 400, "no progress before the kill: {before:?}");
    assert_eq!(before.limited, 0, "{before:?}");
    proxy.proc.wait_exit(Duration::from_secs(10));
    drop(proxy);

    let proxy = start();
    let shown = proxy.manage("GET", &format!("/manage/tokens/{id}"), None);
    assert_eq!(shown.status, 200, "{}", shown.text());
    let count = shown.json()["request_count"].as_u64().unwrap();
    let served = before.ok as u64;
    eprintln!("served {served}, shown {count} after the crash");
    assert!(
        count >= served,
        "request_count {count} after a crash, {served} served"
    );
    assert!(
        count <= served + CONNECTIONS as u64 + 2 * LEASE,
        "request_count {count} after a crash, {served} served: over the bound"
    );
    assert!(count <= MAX);
}

/// A clean stop (SIGTERM) reports everything and hands every lease back:
/// after a restart the figures are exact, nothing is taken as used, and
/// the rest of the budget is there to serve.
#[test]
fn a_clean_stop_leaves_exact_figures() {
    const N: u64 = 100;
    let data = TempDir::new("budget-clean");
    let db = data.path().join("data").display().to_string();
    let mock = Mock::start();
    let start = || on_db(&mock, &db);
    let proxy = start();
    register(&proxy, &mock);
    let key = key_for(&proxy, N);
    let mut conns = conn_per_worker(&proxy, 2);
    const SERVED: u64 = 10;
    for i in 0..SERVED {
        let response = send_on(
            &mut conns[i as usize % 2],
            &ask(&key, false, COMPLETION_TOKENS),
        );
        assert_eq!(response.status, 200, "{}", response.text());
    }
    drop(conns);
    proxy.stop();

    let proxy = start();
    let info = info_now(&proxy, &key);
    assert_eq!(info["request_count"], SERVED, "{info}");
    assert_eq!(
        pico(info["spend"].as_f64().unwrap()),
        SERVED * REQUEST_PICO,
        "{info}"
    );
    let rest = run_to_the_end(&proxy, &key, false);
    assert!(rest.unexpected.is_empty(), "{:?}", rest.unexpected);
    assert_eq!(
        rest.served as u64,
        N - SERVED,
        "the rest of the budget: {rest:?}"
    );
}

/// Requests of `max_tokens` 16, priced on completion tokens only, to an
/// upstream that answers 4 completion tokens, under a budget of 20 tokens'
/// worth: what `max_tokens` the upstream was asked for, in order, and how
/// the last request was answered.
fn capped_run(cap: bool) -> (Vec<u64>, Response) {
    let upstream = RecordingServer::json(
        200,
        &json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "four words said here"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 4, "total_tokens": 4},
        })
        .to_string(),
    );
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("BUDGET_CAP_MAX_TOKENS", if cap { "true" } else { "false" })
        .start();
    let body = json!({
        "model_name": "priced",
        "litellm_params": {"model": "openai/m", "api_base": format!("{}/v1", upstream.url()), "api_key": "sk-up"},
        "model_info": {"input_cost_per_token": 0.0, "output_cost_per_token": OUTPUT_COST},
    });
    assert_eq!(proxy.manage("POST", "/model/new", Some(body)).status, 200);
    let key = generate_key(&proxy, json!({"max_budget": 20.0 * OUTPUT_COST}));
    let mut conn = proxy.conn();
    let mut last = None;
    for _ in 0..10 {
        let response = send_on(&mut conn, &ask(&key, false, COMPLETION_TOKENS));
        let refused = response.status != 200;
        last = Some(response);
        if refused {
            break;
        }
    }
    let asked = upstream
        .requests()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
            body["max_tokens"].as_u64().expect("max_tokens")
        })
        .collect();
    (asked, last.expect("an answer"))
}

#[test]
fn a_budget_may_lower_max_tokens_instead_of_refusing() {
    // Refused as soon as less than 16 tokens' worth is left.
    let (asked, last) = capped_run(false);
    assert!(asked.iter().all(|&n| n == COMPLETION_TOKENS), "{asked:?}");
    last.assert_error(429, "budget_exceeded");
    let refused_at = asked.len();

    // With BUDGET_CAP_MAX_TOKENS, the requests that do not fit go with the
    // `max_tokens` what is left pays for, until not one token's is left.
    let (asked, last) = capped_run(true);
    last.assert_error(429, "budget_exceeded");
    assert!(asked.len() > refused_at, "{asked:?} against {refused_at}");
    assert!(
        asked[..refused_at].iter().all(|&n| n == COMPLETION_TOKENS),
        "{asked:?}"
    );
    let lowered = &asked[refused_at..];
    assert!(
        lowered.iter().all(|&n| (1..COMPLETION_TOKENS).contains(&n)),
        "{asked:?}"
    );
    // What was asked never costs more than the budget: 20 tokens' worth.
    let spent: u64 = asked.iter().map(|&n| n.min(4)).sum();
    assert!(spent <= 20, "{asked:?}");
}
