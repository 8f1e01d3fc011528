//! The rate limits under load: 64 connections on two workers, streamed
//! (odd connections) and not, against keys with requests per minute,
//! parallel requests, tokens per minute and a budget window, with
//! `kill -9` of the server in the middle and a restart on the same data
//! directory.
//!
//! - Requests per minute and parallel requests are exact: never one over.
//! - Tokens and budgets are known only from the answers: a request is
//!   admitted while what was charged is under the limit, so the limit is
//!   passed by at most what the requests in flight when it was reached
//!   use. A crash adds what the answers in flight then used and the dead
//!   server had not counted yet. Each test prints what it measured
//!   (docs/benchmarks.md, "Rate limits under load").
//!
//! Minutes. The per-minute limits count in wall-clock minutes (unix time
//! ÷ 60 s, the same clock here and in the server), and a new minute starts
//! from zero, so "never more than the limit" holds per minute. The tests
//! are short (a few seconds, most of it the restart) and start with at
//! least `MINUTE_NEEDED` left in the minute (waiting for the next one
//! otherwise), so they normally run within one. So that a slow run that
//! crosses a minute anyway does not make them wrong, successes are counted
//! by minute from the client's side: a request sent and answered within
//! minute m was admitted in m (the server admits it between the two), and
//! each minute's count is held to the limit. A request sent in one minute
//! and answered in the next could have been admitted in either: it is
//! counted in neither (and shown). What needs the whole run in one minute
//! (that the limit was reached at all) is checked only when it was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::common::counting::CountingUpstream;
use crate::common::litellm::{generate_key, new_model, prices};
use crate::common::store::timestamp;
use crate::common::*;
use crate::rate_limits::{fresh_minute, now_ms};
use serde_json::{Value, json};

const CONNECTIONS: usize = 64;
/// Seconds a test needs left in the current minute to start in it.
const MINUTE_NEEDED: u64 = 15;
/// Sixteen characters: the mock counts 4 prompt tokens for them.
const CONTENT: &str = "Sixteen chars ok";
/// What one answer of the mock uses: 4 prompt and 16 completion tokens.
const TOKENS: u64 = 20;
/// A dollar per million completion tokens: a request costs 16 µ$.
const OUTPUT_COST: f64 = 0.000001;
/// What one request costs, in picodollars (the ledger's unit).
const REQUEST_PICO: u64 = 16_000_000;

/// The two requests of a load, not streamed and streamed, with `max_tokens`.
fn requests(model: &str, key: &str, max_tokens: u64) -> Arc<[Vec<u8>; 2]> {
    let one = |stream: bool| {
        let mut body = json!({
            "model": model,
            "stream": stream,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": CONTENT}],
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        Req::post("/v1/chat/completions", body.to_string())
            .auth(key)
            .bytes()
    };
    Arc::new([one(false), one(true)])
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Run {
    /// When each served request was sent and answered (unix ms).
    served: Vec<(u64, u64)>,
    /// Refusals with the load's code.
    refused: usize,
    unexpected: Vec<String>,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.served.extend(other.served);
        self.refused += other.refused;
        self.unexpected.extend(other.unexpected);
    }

    /// Served requests by the minute they were admitted in, and those
    /// that cannot be placed (see the module's comment).
    fn by_minute(&self) -> (BTreeMap<u64, u64>, u64) {
        let mut minutes = BTreeMap::new();
        let mut straddling = 0;
        for &(sent, answered) in &self.served {
            if sent / 60_000 == answered / 60_000 {
                *minutes.entry(sent / 60_000).or_default() += 1;
            } else {
                straddling += 1;
            }
        }
        (minutes, straddling)
    }
}

/// How the clients go on after a refusal with the load's code.
#[derive(Clone, Copy)]
enum OnRefusal {
    /// Stop: waiting would not help within the test.
    Stop,
    /// Try again after a pause, until `target` requests are served in all.
    Retry { target: usize },
}

/// A load of `CONNECTIONS` clients, each on its own keep-alive connection.
#[derive(Clone)]
struct Load {
    addr: std::net::SocketAddr,
    requests: Arc<[Vec<u8>; 2]>,
    code: &'static str,
    on_refusal: OnRefusal,
    /// Served so far, by all clients (for the kill and the target).
    served: Arc<AtomicUsize>,
    /// The server is being killed: errors from then on are expected.
    stop: Arc<AtomicBool>,
}

impl Load {
    fn new(
        addr: std::net::SocketAddr,
        requests: Arc<[Vec<u8>; 2]>,
        code: &'static str,
        on_refusal: OnRefusal,
    ) -> Self {
        Self {
            addr,
            requests,
            code,
            on_refusal,
            served: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// The same load against a restarted server.
    fn against(&self, addr: std::net::SocketAddr) -> Self {
        Self {
            addr,
            served: Arc::default(),
            stop: Arc::default(),
            ..self.clone()
        }
    }

    fn spawn(&self) -> JoinHandle<Run> {
        let load = self.clone();
        std::thread::spawn(move || load.run())
    }

    fn run(&self) -> Run {
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|i| {
                let load = self.clone();
                std::thread::spawn(move || load.client(i % 2))
            })
            .collect();
        let mut total = Run::default();
        for client in clients {
            total.add(client.join().expect("client thread"));
        }
        total
    }

    fn client(&self, which: usize) -> Run {
        let mut run = Run::default();
        let mut conn = match Conn::try_open(self.addr) {
            Ok(conn) => conn,
            Err(e) => {
                run.unexpected.push(format!("connect: {e}"));
                return run;
            }
        };
        let request = &self.requests[which];
        for _ in 0..100_000 {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            if let OnRefusal::Retry { target } = self.on_refusal
                && self.served.load(Ordering::SeqCst) >= target
            {
                break;
            }
            let sent = now_ms();
            let response = conn.try_send(request).and_then(|()| conn.read_response());
            match response {
                Ok(response) if response.status == 200 => {
                    run.served.push((sent, now_ms()));
                    self.served.fetch_add(1, Ordering::SeqCst);
                }
                Ok(response) if response.status == 429 && response.error_code() == self.code => {
                    run.refused += 1;
                    match self.on_refusal {
                        OnRefusal::Stop => break,
                        OnRefusal::Retry { .. } => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                Ok(response) => {
                    run.unexpected
                        .push(format!("{} {}", response.status, response.text()));
                    break;
                }
                Err(_) if self.stop.load(Ordering::SeqCst) => break,
                Err(e) => {
                    run.unexpected.push(format!("I/O: {e}"));
                    break;
                }
            }
        }
        run
    }
}

/// A server of two workers on the data directory `db`.
fn on_db(upstream_url: &str, db: &str) -> Proxy {
    Proxy::builder()
        .upstream(upstream_url)
        .unseeded()
        .arg("--db")
        .arg(db)
        .workers(2)
        .start()
}

/// Once `load` has served `progress` (or after 30 s), kills the server
/// with SIGKILL and stops the clients; returns what they saw.
fn kill_9_once_served(
    proxy: &mut Proxy,
    load: &Load,
    progress: usize,
    clients: JoinHandle<Run>,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.served.load(Ordering::SeqCst) < progress && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Stop first: a client that sees its connection die must already know
    // that the kill is why.
    load.stop.store(true, Ordering::SeqCst);
    proxy.proc.signal("KILL");
    let run = clients.join().expect("clients");
    let status = proxy.proc.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.code().is_none()),
        "killed: {status:?}"
    );
    assert!(
        run.served.len() >= progress,
        "no progress before the kill: {} served",
        run.served.len()
    );
    assert!(run.unexpected.is_empty(), "{:?}", run.unexpected);
    run
}

/// A load that ends with every client refused (`OnRefusal::Stop`), with a
/// kill in the middle: what was served before and after the restart.
struct Crashed {
    before: Run,
    after: Run,
    proxy: Proxy,
    _data: TempDir,
}

fn crash_in_the_middle(
    upstream_url: &str,
    setup: impl FnOnce(&Proxy) -> Load,
    progress: usize,
    between: impl FnOnce(),
) -> Crashed {
    let data = TempDir::new("limits-crash");
    let db = data.path().join("data").display().to_string();
    let mut proxy = on_db(upstream_url, &db);
    let load = setup(&proxy);
    let clients = load.spawn();
    let before = kill_9_once_served(&mut proxy, &load, progress, clients);
    drop(proxy);
    between();
    let proxy = on_db(upstream_url, &db);
    let after = load.against(proxy.addr).run();
    assert!(after.unexpected.is_empty(), "{:?}", after.unexpected);
    Crashed {
        before,
        after,
        proxy,
        _data: data,
    }
}

/// Registers `name` in front of `url` (an OpenAI-shaped `/v1`), priced or not.
fn deployment(proxy: &Proxy, name: &str, url: &str, model_info: Value) {
    let mut body = json!({
        "model_name": name,
        "litellm_params": {
            "model": format!("openai/{name}-upstream"),
            "api_base": format!("{url}/v1"),
            "api_key": "sk-load",
        },
    });
    if !model_info.is_null() {
        body["model_info"] = model_info;
    }
    new_model(proxy, body);
}

/// Served per minute (the module's comment): asserts that no minute had
/// more than `limit`; returns the most any minute had.
#[track_caller]
fn assert_per_minute(all: &Run, limit: u64, what: &str) -> u64 {
    let (minutes, straddling) = all.by_minute();
    eprintln!("{what}: served by minute {minutes:?}, {straddling} across a minute's end");
    for (minute, served) in &minutes {
        assert!(
            *served <= limit,
            "{what}: {served} served in minute {minute}, limit {limit}"
        );
    }
    minutes.values().copied().max().unwrap_or(0)
}

/// 400 requests per minute: never one more served in a minute, across a
/// `kill -9` after a third of them; every client ends refused.
#[test]
fn rpm_holds_with_64_connections_across_kill_9() {
    const RPM: u64 = 400;
    let mock = Mock::builder().args(["--latency-ms", "2"]).start();
    fresh_minute(MINUTE_NEEDED);
    let crashed = crash_in_the_middle(
        &mock.url(),
        |proxy| {
            deployment(proxy, "paced", &mock.url(), Value::Null);
            let key = generate_key(proxy, json!({"rpm_limit": RPM}));
            let requests = requests("paced", &key, 16);
            Load::new(proxy.addr, requests, "rpm_limit_exceeded", OnRefusal::Stop)
        },
        (RPM / 3) as usize,
        || {},
    );
    let mut all = Run::default();
    let (before, after) = (crashed.before.served.len(), crashed.after.served.len());
    all.add(crashed.before);
    all.add(crashed.after);
    eprintln!("rpm {RPM}: {before} served before the kill, {after} after the restart");
    assert_eq!(all.refused, CONNECTIONS, "every client ends refused");
    let most = assert_per_minute(&all, RPM, "rpm");
    let (minutes, straddling) = all.by_minute();
    if minutes.len() == 1 && straddling == 0 {
        // Within one minute: what the crash lost of the leases is all that
        // may be missing (a lease is at most a quarter of what is left,
        // split between the workers, for each of the two).
        assert!(most >= RPM / 2, "only {most} of {RPM} served in the minute");
    }
}

/// Six requests in parallel, on a slow upstream: the upstream never holds
/// more than six of the key's requests, across a `kill -9` (the dead
/// server's requests are let go before the restart: the new one cannot
/// know about them).
#[test]
fn parallel_requests_hold_with_64_connections_across_kill_9() {
    const PARALLEL: usize = 6;
    const TARGET: usize = 300;
    let upstream = CountingUpstream::start(Duration::from_millis(20), (4, 16));
    let crashed = crash_in_the_middle(
        &upstream.url(),
        |proxy| {
            deployment(proxy, "slow", &upstream.url(), Value::Null);
            let key = generate_key(proxy, json!({"max_parallel_requests": PARALLEL}));
            let requests = requests("slow", &key, 16);
            Load::new(
                proxy.addr,
                requests,
                "parallel_request_limit_exceeded",
                OnRefusal::Retry { target: TARGET / 2 },
            )
        },
        TARGET / 4,
        || {
            assert!(
                wait_until(Duration::from_secs(5), || upstream.in_flight() == 0),
                "the dead server's requests are still held upstream"
            );
        },
    );
    let (before, after) = (&crashed.before, &crashed.after);
    eprintln!(
        "parallel {PARALLEL}: {} served and {} refused before the kill, {} and {} after; \
         at most {} at once upstream",
        before.served.len(),
        before.refused,
        after.served.len(),
        after.refused,
        upstream.max_in_flight()
    );
    assert!(after.served.len() >= TARGET / 2, "{after:?}");
    assert!(
        upstream.max_in_flight() <= PARALLEL,
        "{} requests at once upstream, limit {PARALLEL}",
        upstream.max_in_flight()
    );
    assert!(before.refused + after.refused > 0, "never at the limit");
}

/// Tokens per minute, 64 connections: what is served in the minute uses
/// at most the limit plus what the requests in flight when it was reached
/// used (one answer's tokens each). Without a crash.
#[test]
fn tpm_overshoot_is_bounded_by_the_requests_in_flight() {
    const TPM: u64 = 4_000;
    let mock = Mock::builder().args(["--latency-ms", "2"]).start();
    let proxy = Proxy::for_mock(&mock).unseeded().workers(2).start();
    deployment(&proxy, "paced", &mock.url(), Value::Null);
    let key = generate_key(&proxy, json!({"tpm_limit": TPM}));
    fresh_minute(MINUTE_NEEDED);
    let load = Load::new(
        proxy.addr,
        requests("paced", &key, 16),
        "tpm_limit_exceeded",
        OnRefusal::Stop,
    );
    let run = load.run();
    assert!(run.unexpected.is_empty(), "{:?}", run.unexpected);
    assert_eq!(run.refused, CONNECTIONS, "every client ends refused");
    let most = assert_per_minute(&run, (TPM + TOKENS * CONNECTIONS as u64) / TOKENS, "tpm");
    let overshoot = (most * TOKENS).saturating_sub(TPM);
    eprintln!(
        "tpm {TPM}: {most} requests of {TOKENS} tokens in the minute, {} tokens; \
         overshoot {overshoot} tokens (bound {})",
        most * TOKENS,
        TOKENS * CONNECTIONS as u64
    );
    let (minutes, straddling) = run.by_minute();
    if minutes.len() == 1 && straddling == 0 {
        assert!(
            most * TOKENS >= TPM,
            "the limit was never reached: {most} served"
        );
    }
}

/// The same across a `kill -9`: the bound grows by what the answers in
/// flight at the crash used and the dead server had not counted.
#[test]
fn tpm_overshoot_is_bounded_across_kill_9() {
    const TPM: u64 = 6_000;
    let mock = Mock::builder().args(["--latency-ms", "2"]).start();
    fresh_minute(MINUTE_NEEDED);
    let crashed = crash_in_the_middle(
        &mock.url(),
        |proxy| {
            deployment(proxy, "paced", &mock.url(), Value::Null);
            let key = generate_key(proxy, json!({"tpm_limit": TPM}));
            Load::new(
                proxy.addr,
                requests("paced", &key, 16),
                "tpm_limit_exceeded",
                OnRefusal::Stop,
            )
        },
        (TPM / TOKENS / 3) as usize,
        || {},
    );
    let mut all = Run::default();
    let (before, after) = (crashed.before.served.len(), crashed.after.served.len());
    all.add(crashed.before);
    all.add(crashed.after);
    assert_eq!(all.refused, CONNECTIONS, "every client ends refused");
    let bound = 2 * TOKENS * CONNECTIONS as u64;
    let most = assert_per_minute(&all, (TPM + bound) / TOKENS, "tpm across kill -9");
    let overshoot = (most * TOKENS).saturating_sub(TPM);
    eprintln!(
        "tpm {TPM} across kill -9: {before} served before, {after} after; {} tokens in the \
         minute, overshoot {overshoot} tokens (bound {bound})",
        most * TOKENS
    );
}

/// The budget pays for this many requests.
const BUDGET_REQUESTS: u64 = 300;

/// A budget with a window (`budget_duration: 1h`) of `BUDGET_REQUESTS`
/// requests, asked for with half the tokens the answers use (`max_tokens`
/// 8, answers of 16): each request holds half its cost, so the budget may
/// be passed by what the requests in flight cost beyond their holds, half
/// a request each. Returns the load and the key.
fn budget_load(proxy: &Proxy, upstream_url: &str) -> (Load, String) {
    deployment(proxy, "priced", upstream_url, prices(0.0, OUTPUT_COST));
    let budget = (BUDGET_REQUESTS * REQUEST_PICO) as f64 / 1e12;
    let key = generate_key(
        proxy,
        json!({"max_budget": budget, "budget_duration": "1h"}),
    );
    let load = Load::new(
        proxy.addr,
        requests("priced", &key, 8),
        "budget_exceeded",
        OnRefusal::Stop,
    );
    (load, key)
}

/// The key's spend once the workers have reported (they do about once a
/// second), in picodollars.
fn reported_spend(proxy: &Proxy, key: &str) -> (u64, Value) {
    let info = || {
        proxy
            .manage("GET", &format!("/key/info?key={key}"), None)
            .json()["info"]
            .clone()
    };
    let spend = |info: &Value| (info["spend"].as_f64().unwrap() * 1e12).round() as u64;
    let mut last = info();
    // Settled: the same twice, a report apart.
    loop {
        std::thread::sleep(Duration::from_millis(1_500));
        let now = info();
        if spend(&now) == spend(&last) {
            return (spend(&now), now);
        }
        last = now;
    }
}

/// 64 connections on a budget whose holds are half the requests' cost:
/// over by at most half a request for each request in flight.
#[test]
fn budget_overshoot_is_bounded_by_the_requests_in_flight() {
    let mock = Mock::builder().args(["--latency-ms", "2"]).start();
    let proxy = Proxy::for_mock(&mock).unseeded().workers(2).start();
    let (load, key) = budget_load(&proxy, &mock.url());
    let run = load.run();
    assert!(run.unexpected.is_empty(), "{:?}", run.unexpected);
    assert_eq!(run.refused, CONNECTIONS, "every client ends refused");
    let served = run.served.len() as u64;
    let overshoot = served.saturating_sub(BUDGET_REQUESTS);
    let bound = CONNECTIONS as u64 / 2;
    let (spend, info) = reported_spend(&proxy, &key);
    eprintln!(
        "budget of {BUDGET_REQUESTS} requests: {served} served, overshoot {overshoot} \
         requests, ${:.6} (bound {bound} requests); spend shown ${:.6}",
        (overshoot * REQUEST_PICO) as f64 / 1e12,
        spend as f64 / 1e12
    );
    assert!(
        overshoot <= bound,
        "{served} served on a budget of {BUDGET_REQUESTS}: over by more than the requests in flight"
    );
    assert_eq!(
        spend,
        served * REQUEST_PICO,
        "the spend is what was served: {info}"
    );
    assert!(served >= BUDGET_REQUESTS - 2, "only {served} served");
}

/// The same across a `kill -9`: the bound grows by what the answers in
/// flight at the crash cost beyond their holds; what the dead server had
/// leased counts as spent after the restart.
#[test]
fn budget_overshoot_is_bounded_across_kill_9() {
    let mock = Mock::builder().args(["--latency-ms", "2"]).start();
    let key = Arc::new(std::sync::Mutex::new(String::new()));
    let crashed = {
        let (key, mock) = (key.clone(), &mock);
        crash_in_the_middle(
            &mock.url(),
            move |proxy| {
                let (load, secret) = budget_load(proxy, &mock.url());
                *key.lock().unwrap() = secret;
                load
            },
            (BUDGET_REQUESTS / 3) as usize,
            || {},
        )
    };
    let (before, after) = (crashed.before.served.len(), crashed.after.served.len());
    let served = (before + after) as u64;
    assert_eq!(
        crashed.before.refused + crashed.after.refused,
        CONNECTIONS,
        "every client ends refused"
    );
    let overshoot = served.saturating_sub(BUDGET_REQUESTS);
    let bound = CONNECTIONS as u64;
    let key = key.lock().unwrap().clone();
    let (spend, info) = reported_spend(&crashed.proxy, &key);
    eprintln!(
        "budget of {BUDGET_REQUESTS} requests across kill -9: {before} served before, {after} \
         after; overshoot {overshoot} requests, ${:.6} (bound {bound} requests); spend shown \
         ${:.6}",
        (overshoot * REQUEST_PICO) as f64 / 1e12,
        spend as f64 / 1e12
    );
    assert!(
        overshoot <= bound,
        "{served} served on a budget of {BUDGET_REQUESTS}: over by more than the requests in flight"
    );
    assert!(
        timestamp(&info["budget_reset_at"]) > SystemTime::now(),
        "{info}"
    );
}
