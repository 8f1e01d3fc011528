//! Shared mode: several nodes on one PostgreSQL (started by the test, see
//! `common::postgres`), each with its own LMDB replica.
//!
//! - A key made through one node works on the others; a block through
//!   another stops it on all of them, within the bound the docs state
//!   (each test prints what it measured: docs/benchmarks.md, "Shared
//!   mode").
//! - `max_requests` holds across three nodes hammered at once, also with
//!   `kill -9` of a node and of PostgreSQL in the middle.
//! - Schema versions, `migrate`, the import of a single-node store, and
//!   management refused with 503 while PostgreSQL is down.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::counting::CountingUpstream;
use crate::common::litellm::{add_deployment, generate_key, ok, post};
use crate::common::postgres::PgCluster;
use crate::common::*;
use serde_json::{Value, json};

/// The model every test registers, routed to the mock.
pub(crate) const MODEL: &str = "shared-model";

/// A node of the cluster: a server in shared mode on its own data directory.
pub(crate) fn node(pg: &PgCluster, mock: &Mock, name: &str, db: &Path) -> Proxy {
    node_with(pg, mock, name, db, &[])
}

pub(crate) fn node_with(
    pg: &PgCluster,
    mock: &Mock,
    name: &str,
    db: &Path,
    env: &[(&str, &str)],
) -> Proxy {
    let mut builder = Proxy::for_mock(mock)
        .unseeded()
        .env("DATABASE_URL", pg.url())
        .env("NODE_ID", name)
        .arg("--db")
        .arg(db.to_str().unwrap());
    for (key, value) in env {
        builder = builder.env(key, *value);
    }
    builder.start()
}

/// `count` nodes named `{prefix}1`, `{prefix}2`, … on `dirs/{name}`, with `env`.
pub(crate) fn nodes(
    pg: &PgCluster,
    mock: &Mock,
    dirs: &TempDir,
    prefix: &str,
    count: usize,
    env: &[(&str, &str)],
) -> Vec<Proxy> {
    (1..=count)
        .map(|i| {
            let name = format!("{prefix}{i}");
            node_with(pg, mock, &name, &dirs.path().join(&name), env)
        })
        .collect()
}

/// A key made through the first node with `fields`, once every node
/// accepts it: its secret and its id.
pub(crate) fn key_everywhere(nodes: &[Proxy], fields: Value) -> (String, String) {
    let generated = ok(post(&nodes[0], "/key/generate", fields));
    let key = generated["key"].as_str().unwrap().to_string();
    let id = generated["id"].as_str().unwrap().to_string();
    for node in nodes {
        wait_until(Duration::from_secs(5), "the key on every node", || {
            models_status(node, &key) == 200
        });
    }
    (key, id)
}

/// What one request of the budget tests costs: the mock answers "Sixteen
/// chars ok" with 16 completion tokens, at a dollar per million
/// ([`add_priced_model`]).
pub(crate) const REQUEST_COST: f64 = 0.000016;

/// `MODEL` on `mock`, at a dollar per million completion tokens.
pub(crate) fn add_priced_model(node: &Proxy, mock: &Mock) {
    add_deployment(
        node,
        MODEL,
        mock,
        crate::common::litellm::prices(0.0, 0.000001),
    );
}

/// A request that costs [`REQUEST_COST`].
pub(crate) fn priced_request() -> Value {
    json!({"model": MODEL, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Sixteen chars ok"}]})
}

/// `GET /v1/models` with `key`: the cheapest call that checks a key.
pub(crate) fn models_status(proxy: &Proxy, key: &str) -> u16 {
    proxy.call(Req::get("/v1/models").auth(key)).status
}

pub(crate) fn chat_with(proxy: &Proxy, key: &str) -> Response {
    let body = priced_request();
    proxy.call(Req::post("/v1/chat/completions", body.to_string()).auth(key))
}

/// Polls until `check` holds; returns how long it took, or panics after `limit`.
#[track_caller]
pub(crate) fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[test]
fn a_key_made_on_one_node_works_on_all_and_a_block_on_another_stops_it_everywhere() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-nodes");
    let nodes = nodes(&pg, &mock, &dirs, "node", 3, &[]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let key = generate_key(&nodes[0], json!({"models": [MODEL]}));
    // Made through node 1: usable on nodes 2 and 3 as soon as they applied it.
    let mut reached = Vec::new();
    for other in &nodes[1..] {
        reached.push(wait_until(
            Duration::from_secs(5),
            "the key on another node",
            || models_status(other, &key) == 200,
        ));
        let answer = chat_with(other, &key);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    println!("a new key reached the other nodes after {reached:?}");

    // Blocks through node 2, each followed by the time until nodes 1 and 3
    // refuse the key; then unblocks, and the same for the way back.
    let mut blocked = Vec::new();
    let mut unblocked = Vec::new();
    for _ in 0..20 {
        for (action, expect, times) in [
            ("/key/block", 401, &mut blocked),
            ("/key/unblock", 200, &mut unblocked),
        ] {
            ok(post(&nodes[1], action, json!({"key": key})));
            let start = Instant::now();
            for other in [&nodes[0], &nodes[2]] {
                wait_until(Duration::from_secs(5), action, || {
                    models_status(other, &key) == expect
                });
            }
            times.push(start.elapsed());
        }
    }
    blocked.sort();
    unblocked.sort();
    println!(
        "block seen on the other two nodes: p50 {:?}, p99 {:?}, max {:?}; unblock: p50 {:?}, p99 {:?}",
        percentile(&blocked, 0.5),
        percentile(&blocked, 0.99),
        blocked[blocked.len() - 1],
        percentile(&unblocked, 0.5),
        percentile(&unblocked, 0.99),
    );
    // The bound the docs state: the notification, or at worst the
    // once-a-second catch-up.
    assert!(
        blocked[blocked.len() - 1] < Duration::from_millis(1500),
        "{blocked:?}"
    );
    // A write that asks to wait for the nodes answers once all applied it.
    let answer = nodes[0].call(
        Req::post("/key/generate", json!({"models": [MODEL]}).to_string())
            .auth(MANAGEMENT_TOKEN)
            .header("Content-Type", "application/json")
            .header("X-Wait-For-Nodes", "5"),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-nodes-applied"), Some("3/3"));
    let waited = answer.json()["key"].as_str().unwrap().to_string();
    for node in &nodes {
        assert_eq!(models_status(node, &waited), 200, "on {}", node.addr);
    }
    // Deleted through node 3: gone everywhere.
    ok(post(&nodes[2], "/key/delete", json!({"keys": [key]})));
    for node in &nodes {
        wait_until(Duration::from_secs(5), "the delete", || {
            models_status(node, &key) == 401
        });
    }
    // PostgreSQL holds the records as JSON a person can read.
    let aliases = pg.psql("SELECT count(*) FROM llm_proxy_records WHERE tbl = 'deployments' AND body->>'model_name' = 'shared-model'");
    assert_eq!(aliases, "1");
    // Every node says, in its metrics, which change it applied last: the same.
    let applied: Vec<Option<u64>> = nodes
        .iter()
        .map(|node| metric(node, "llm_proxy_replica_applied_change"))
        .collect();
    assert!(
        applied[0].is_some() && applied.iter().all(|a| a == &applied[0]),
        "{applied:?}"
    );
    // Every node reported the last change it applied.
    let applied = pg.psql("SELECT count(DISTINCT applied) FROM llm_proxy_nodes");
    assert_eq!(
        applied,
        "1",
        "{}",
        pg.psql("SELECT node, applied FROM llm_proxy_nodes")
    );
}

#[test]
fn a_node_that_was_down_catches_up_when_it_starts_again() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-restart");
    let first = node(&pg, &mock, "a", &dirs.path().join("a"));
    let second = node(&pg, &mock, "b", &dirs.path().join("b"));
    add_deployment(&first, MODEL, &mock, Value::Null);
    let early = generate_key(&first, json!({"models": [MODEL]}));
    wait_until(Duration::from_secs(5), "early key on b", || {
        models_status(&second, &early) == 200
    });
    second.stop();
    // Made and revoked while b was down.
    let late = generate_key(&first, json!({"models": [MODEL]}));
    ok(post(&first, "/key/delete", json!({"keys": [early]})));
    let second = node(&pg, &mock, "b", &dirs.path().join("b"));
    // Caught up before it listened.
    assert_eq!(models_status(&second, &late), 200);
    assert_eq!(models_status(&second, &early), 401);
}

/// Hammers `key` on every node from `per_node` connections each, until
/// every connection got a refusal `code`; returns the requests served.
fn hammer(nodes: &[&Proxy], key: &str, per_node: usize, stop: &AtomicBool) -> (usize, Vec<String>) {
    hammer_with(nodes, key, per_node, stop, "hi")
}

fn hammer_with(
    nodes: &[&Proxy],
    key: &str,
    per_node: usize,
    stop: &AtomicBool,
    content: &str,
) -> (usize, Vec<String>) {
    let served = Arc::new(AtomicUsize::new(0));
    let unexpected = Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for node in nodes {
            for _ in 0..per_node {
                let served = served.clone();
                let unexpected = unexpected.clone();
                let addr = node.addr;
                let body =
                    json!({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": content}]})
                        .to_string();
                scope.spawn(move || {
                    let request = Req::post("/v1/chat/completions", body).auth(key).bytes();
                    let mut refused_in_a_row = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut conn) = Conn::try_open(addr) else {
                            // The node was killed: its clients are done.
                            return;
                        };
                        let sent = conn.try_send(&request).and_then(|()| conn.read_response());
                        let Ok(answer) = sent else {
                            // Cut by a kill: the next connection tells.
                            continue;
                        };
                        match answer.status {
                            200 => {
                                refused_in_a_row = 0;
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            429 => {
                                // Another node may still hold a slice: try a few more.
                                refused_in_a_row += 1;
                                if refused_in_a_row >= 5 {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            503 => std::thread::sleep(Duration::from_millis(20)),
                            other => {
                                unexpected
                                    .lock()
                                    .unwrap()
                                    .push(format!("{other}: {}", answer.text()));
                                return;
                            }
                        }
                    }
                });
            }
        }
    });
    let unexpected = unexpected.lock().unwrap().clone();
    (served.load(Ordering::Relaxed), unexpected)
}

/// `used`, `leased`, `written_off` of a key's allowance of requests.
pub(crate) fn allowance(pg: &PgCluster, key_id: &str) -> (i64, i64, i64) {
    let row = pg.psql(&format!(
        "SELECT used, leased, written_off FROM llm_proxy_allowances WHERE party = 'key:{key_id}' AND meter = 'requests'"
    ));
    let numbers: Vec<i64> = row.split('|').map(|n| n.parse().unwrap()).collect();
    (numbers[0], numbers[1], numbers[2])
}

#[test]
fn max_requests_holds_exactly_across_three_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-quota");
    let nodes = nodes(&pg, &mock, &dirs, "q", 3, &[]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, id) = key_everywhere(&nodes, json!({"models": [MODEL], "max_requests": 1000}));
    let stop = AtomicBool::new(false);
    let refs: Vec<&Proxy> = nodes.iter().collect();
    let (served, unexpected) = hammer(&refs, &key, 8, &stop);
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert_eq!(
        served, 1000,
        "three nodes served the key's 1000 requests, not one more or less"
    );
    for node in &nodes {
        chat_with(node, &key).assert_error(429, "max_requests_exceeded");
    }
    // Every node shows the key's use over all nodes, a second or two later.
    for node in &nodes {
        wait_until(Duration::from_secs(5), "the sum of use", || {
            crate::common::litellm::key_info(node, &key)["request_count"] == 1000
        });
    }
    for node in nodes {
        node.stop();
    }
    // A clean stop hands back what each node held: all used, nothing leased.
    assert_eq!(allowance(&pg, &id), (1000, 0, 0));
}

#[test]
fn a_budget_holds_across_three_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-budget");
    let nodes = nodes(&pg, &mock, &dirs, "b", 3, &[]);
    add_priced_model(&nodes[0], &mock);
    // A budget of 100 requests for the key, and one of 60 for its team.
    ok(post(
        &nodes[0],
        "/team/new",
        json!({"team_id": "t", "max_budget": 60.0 * REQUEST_COST}),
    ));
    let key = generate_key(
        &nodes[0],
        json!({"models": [MODEL], "max_budget": 100.0 * REQUEST_COST}),
    );
    let team_key = generate_key(&nodes[1], json!({"models": [MODEL], "team_id": "t"}));
    for node in &nodes {
        wait_until(Duration::from_secs(5), "the keys everywhere", || {
            models_status(node, &key) == 200 && models_status(node, &team_key) == 200
        });
    }
    let refs: Vec<&Proxy> = nodes.iter().collect();
    for (key, requests) in [(&key, 100), (&team_key, 60)] {
        let first = chat_with(&nodes[2], key);
        assert_eq!(first.status, 200, "{}", first.text());
        let stop = AtomicBool::new(false);
        let (served, unexpected) = hammer_with(&refs, key, 6, &stop, "Sixteen chars ok");
        assert!(unexpected.is_empty(), "{unexpected:?}");
        println!("a budget of {requests} requests over three nodes: {served} served");
        let served = served + 1;
        assert!(
            served <= requests,
            "{served} served of a budget of {requests}"
        );
        // What is stranded in other nodes' slices comes back when idle; a
        // node holds at most one request's worth it cannot use.
        assert!(
            served + 3 >= requests,
            "{served} served of a budget of {requests}"
        );
    }
    // Spend as every node shows it: the sum over the nodes.
    let shown = |node: &Proxy| {
        crate::common::litellm::key_info(node, &key)["spend"]
            .as_f64()
            .unwrap()
    };
    wait_until(
        Duration::from_secs(5),
        "the key's spend on every node",
        || {
            nodes.iter().all(|node| {
                (shown(node) - shown(&nodes[0])).abs() < 1e-12 && shown(node) > 90.0 * REQUEST_COST
            })
        },
    );
    println!("the key's spend as the nodes show it: {}", shown(&nodes[0]));
    assert!(shown(&nodes[0]) <= 100.0 * REQUEST_COST + 1e-12);
    let team = ok(crate::common::litellm::get(
        &nodes[2],
        "/team/info?team_id=t",
    ));
    println!(
        "the team's spend as node 3 shows it: {}",
        team["team_info"]["spend"]
    );
    for node in nodes {
        node.stop();
    }
    let spent = pg.psql(
        "SELECT sum(used) FROM llm_proxy_allowances WHERE meter = 'budget' AND party LIKE 'team:%'",
    );
    let spent: i64 = spent.parse().unwrap();
    assert!(
        spent as f64 <= 60.0 * REQUEST_COST * 1e12 + 1.0,
        "team spent {spent} pico$"
    );
    let leased = pg.psql("SELECT sum(leased) FROM llm_proxy_allowances");
    assert_eq!(leased, "0", "a clean stop hands every slice back");
}

#[test]
fn requests_per_minute_and_parallel_requests_hold_across_three_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-rpm");
    let nodes = nodes(&pg, &mock, &dirs, "r", 3, &[]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, _) = key_everywhere(&nodes, json!({"models": [MODEL], "rpm_limit": 30}));
    crate::rate_limits::fresh_minute(20);
    let minute = crate::rate_limits::now_ms() / 60_000;
    let refs: Vec<&Proxy> = nodes.iter().collect();
    let stop = AtomicBool::new(false);
    let (served, unexpected) = hammer(&refs, &key, 6, &stop);
    assert!(unexpected.is_empty(), "{unexpected:?}");
    let same_minute = crate::rate_limits::now_ms() / 60_000 == minute;
    println!("rpm 30 over three nodes: {served} served (in one minute: {same_minute})");
    if same_minute {
        assert!(served <= 30, "{served} requests in a minute with rpm 30");
        assert!(served >= 20, "only {served} of 30");
    }
    // In PostgreSQL, the nodes' slices of the minute never passed the limit.
    let taken = pg.psql(&format!(
        "SELECT coalesce(max(used + leased), 0) FROM llm_proxy_allowances WHERE meter = 'rpm@{minute}'"
    ));
    assert!(taken.parse::<i64>().unwrap() <= 30, "{taken}");

    // Two requests at once at most, over all nodes: an upstream that holds
    // each answer 300 ms, and three clients per node asking at once.
    let upstream = CountingUpstream::start(Duration::from_millis(300), (4, 16));
    crate::common::litellm::new_model(
        &nodes[0],
        json!({"model_name": "slow", "litellm_params": {
            "model": "openai/slow-upstream",
            "api_base": format!("{}/v1", upstream.url()),
            "api_key": "sk-counting",
        }}),
    );
    let parallel = generate_key(
        &nodes[0],
        json!({"models": ["slow"], "max_parallel_requests": 2}),
    );
    for node in &nodes {
        wait_until(Duration::from_secs(5), "the key everywhere", || {
            models_status(node, &parallel) == 200
        });
    }
    let (served, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for node in &nodes {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..4 {
                        let body = json!({"model": "slow", "max_tokens": 16,
                            "messages": [{"role": "user", "content": "hi"}]});
                        let answer = node.call(
                            Req::post("/v1/chat/completions", body.to_string()).auth(&parallel),
                        );
                        match answer.status {
                            200 => served.fetch_add(1, Ordering::SeqCst),
                            _ => {
                                answer.assert_error(429, "parallel_request_limit_exceeded");
                                refused.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                });
            }
        }
    });
    println!(
        "max_parallel_requests 2 over three nodes: {} served, {} refused, at most {} at once upstream",
        served.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
        upstream.max_in_flight()
    );
    assert!(served.load(Ordering::SeqCst) >= 2);
    assert!(
        upstream.max_in_flight() <= 2,
        "{} at once",
        upstream.max_in_flight()
    );
}

#[test]
fn a_lowered_max_requests_holds_on_nodes_that_hold_slices() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-lower");
    let nodes = nodes(&pg, &mock, &dirs, "l", 2, &[]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, _) = key_everywhere(&nodes, json!({"models": [MODEL], "max_requests": 1000}));
    for node in &nodes {
        for _ in 0..10 {
            assert_eq!(chat_with(node, &key).status, 200);
        }
    }
    // Both nodes hold slices of what was left; the limit drops to 25.
    let answer = nodes[1].call(
        Req::post(
            "/key/update",
            json!({"key": key, "max_requests": 25}).to_string(),
        )
        .auth(MANAGEMENT_TOKEN)
        .header("Content-Type", "application/json")
        .header("X-Wait-For-Nodes", "5"),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let refs: Vec<&Proxy> = nodes.iter().collect();
    let (at_once, unexpected) = hammer(&refs, &key, 4, &AtomicBool::new(false));
    assert!(unexpected.is_empty(), "{unexpected:?}");
    // What the nodes held goes back with their next reports (every
    // second): then the 5 left are served, and no more.
    std::thread::sleep(Duration::from_millis(2500));
    let (later, unexpected) = hammer(&refs, &key, 4, &AtomicBool::new(false));
    assert!(unexpected.is_empty(), "{unexpected:?}");
    let served = at_once + later;
    println!(
        "max_requests lowered from 1000 to 25 after 20: {at_once} more served at once, {later} after the nodes reported"
    );
    assert!(served <= 5, "{served} served past the lowered limit");
    assert!(served >= 4, "only {served} of the 5 left served");
}

#[test]
fn every_nodes_audit_log_is_copied_to_postgres_without_the_write_lock() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-audit");
    let nodes = nodes(&pg, &mock, &dirs, "a", 2, &[]);
    generate_key(&nodes[0], json!({"key_alias": "audited"}));
    // Refused calls are audited too; they take no change number.
    let before = pg.psql("SELECT change_no FROM llm_proxy_cluster");
    for _ in 0..20 {
        let refused = nodes[1].call(Req::post("/key/generate", "{}").auth("sk-not-the-token-123"));
        assert_eq!(refused.status, 401);
    }
    assert_eq!(pg.psql("SELECT change_no FROM llm_proxy_cluster"), before);
    wait_until(Duration::from_secs(5), "the audit copied", || {
        pg.psql("SELECT count(*) FROM llm_proxy_audit WHERE node = 'a2' AND entry->>'status' = '401'") == "20"
            && pg.psql("SELECT count(*) FROM llm_proxy_audit WHERE node = 'a1' AND entry->>'target' = '/key/generate'") == "1"
    });
}

#[test]
fn a_soft_budget_is_crossed_by_the_spend_of_all_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-soft");
    let nodes = nodes(&pg, &mock, &dirs, "s", 2, &[]);
    add_priced_model(&nodes[0], &mock);
    // Alert at 10 requests' worth: 6 through one node, then 6 through the
    // other; neither alone passes it.
    let key = generate_key(
        &nodes[0],
        json!({"models": [MODEL], "soft_budget": 9.5 * REQUEST_COST}),
    );
    wait_until(Duration::from_secs(5), "the key on node 2", || {
        models_status(&nodes[1], &key) == 200
    });
    for _ in 0..6 {
        assert_eq!(chat_with(&nodes[0], &key).status, 200);
    }
    // Node 2 reads node 1's figures within a couple of seconds.
    wait_until(
        Duration::from_secs(10),
        "node 1's spend seen by node 2",
        || {
            let spend = crate::common::litellm::key_info(&nodes[1], &key)["spend"]
                .as_f64()
                .unwrap();
            (spend - 6.0 * REQUEST_COST).abs() < 1e-12
        },
    );
    assert_eq!(soft_budget_alerts(&nodes[0], "key"), 0);
    for _ in 0..6 {
        assert_eq!(chat_with(&nodes[1], &key).status, 200);
    }
    wait_until(Duration::from_secs(5), "the alert", || {
        soft_budget_alerts(&nodes[1], "key") == 1
    });
    assert_eq!(
        soft_budget_alerts(&nodes[0], "key"),
        0,
        "one alert, not one per node"
    );
}

#[test]
fn nodes_speak_tls_to_postgres_and_check_its_certificate() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let Some(pg) = PgCluster::start_with_tls(&cert.cert.pem(), &cert.key_pair.serialize_pem())
    else {
        return;
    };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-tls");
    let ca = dirs.write("postgres-ca.pem", cert.cert.pem());
    let url = format!("{}?sslmode=require", pg.url());
    // Trusting the server's CA: the node connects, over TLS.
    let node = Proxy::for_mock(&mock)
        .unseeded()
        .env("DATABASE_URL", url.clone())
        .env("DATABASE_CA_FILE", ca.to_str().unwrap())
        .env("NODE_ID", "tls")
        .arg("--db")
        .arg(dirs.path().join("tls").to_str().unwrap())
        .start();
    add_deployment(&node, MODEL, &mock, Value::Null);
    let key = generate_key(&node, json!({"models": [MODEL]}));
    assert_eq!(chat_with(&node, &key).status, 200);
    let encrypted = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND usename = 'llmproxy' AND application_name <> 'psql'",
    );
    assert!(
        encrypted.parse::<u32>().unwrap() >= 3,
        "TLS connections: {encrypted}"
    );
    // Without it, the certificate is not trusted: the node does not start.
    let refused = Proxy::for_mock(&mock)
        .unseeded()
        .env("DATABASE_URL", url)
        .env("NODE_ID", "untrusting")
        .arg("--db")
        .arg(dirs.path().join("other").to_str().unwrap())
        .run_to_exit();
    assert_ne!(refused.status.code(), Some(0), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("certificate"),
        "says why: {}",
        refused.stderr
    );
}
