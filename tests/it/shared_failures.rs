//! Shared mode when things fail, each test against a PostgreSQL of its own
//! (`common::postgres`) and nodes on loopback:
//!
//! - `kill -9` of a node while a key's `max_requests` is being used up: the
//!   others go on to the limit, never past it, and what the dead node held
//!   comes back written off once its lease term expires; restarted on its
//!   data directory within its term, it renews the term instead and hands
//!   back what its workers were not handed.
//! - PostgreSQL killed (and stopped cleanly) under load: the nodes serve
//!   from their slices, refuse with 503 what needs a new slice, and go on
//!   to exactly the limit once it is back.
//! - Management writes refused while PostgreSQL is down, with nothing
//!   written; requests still served.
//! - A schema newer than the binary, `migrate`, and the import of a
//!   single-node store.
//!
//! Each test prints what it measured.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::cli::Cli;
use crate::common::litellm::{add_deployment, assert_lite_error, generate_key, get, ok, post};
use crate::common::postgres::PgCluster;
use crate::common::*;
use crate::shared_store::{
    MODEL, REQUEST_COST, add_priced_model, allowance, chat_with, key_everywhere, models_status,
    node, node_with, nodes, priced_request, wait_until,
};

/// A lease term short enough to wait for one to expire.
const SHORT_TERM: (&str, &str) = ("SHARED_LEASE_TERM", "4s");
/// Connections hammering each node at once.
const PER_NODE: usize = 8;
/// Workers of each node (`Proxy::builder`'s default).
const WORKERS: u64 = 2;
/// The largest lease a worker holds at once (`MAX_LEASE` in
/// src/store/ledger.rs).
const MAX_LEASE: u64 = 64;
/// The shared store's schema version: the number of migrations in
/// src/store/shared/migrations/.
fn schema_version() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/shared/migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
        .count()
}
/// How long a hammer may go on before the test gives up on it.
const LOAD_LIMIT: Duration = Duration::from_secs(40);

/// What the clients of a hammer saw, counted as they go.
#[derive(Default)]
struct Load {
    /// Answers 200.
    served: AtomicUsize,
    /// Answers 503 `shared_store_unavailable`.
    unavailable: AtomicUsize,
    /// Requests whose connection broke before the answer was read (their
    /// node was killed): perhaps counted by the node, not served.
    cut: AtomicUsize,
    /// Anything else, with its body.
    unexpected: Mutex<Vec<String>>,
}

impl Load {
    fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    fn unavailable(&self) -> usize {
        self.unavailable.load(Ordering::Relaxed)
    }

    fn cut(&self) -> usize {
        self.cut.load(Ordering::Relaxed)
    }

    fn unexpected(&self) -> Vec<String> {
        self.unexpected.lock().unwrap().clone()
    }

    fn note(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }
}

/// Hammers `key` on each of `addrs` from [`PER_NODE`] connections, a new
/// one per request, until every connection got five refusals (429
/// `max_requests_exceeded`) in a row, or found its node gone. A 503
/// `shared_store_unavailable` is retried after a pause. Returns when all
/// are done.
fn hammer(addrs: &[SocketAddr], key: &str, load: &Load) {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    hammer_until(addrs, key, load, &body, "max_requests_exceeded");
}

/// [`hammer`] with a chosen body, until refused with `refusal`.
fn hammer_until(addrs: &[SocketAddr], key: &str, load: &Load, body: &Value, refusal: &str) {
    let request = Req::post("/v1/chat/completions", body.to_string())
        .auth(key)
        .bytes();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for &addr in addrs {
            for _ in 0..PER_NODE {
                let request = &request;
                scope.spawn(move || {
                    let mut refused_in_a_row = 0;
                    loop {
                        if started.elapsed() > LOAD_LIMIT {
                            load.note(format!("{addr}: still not refused after {LOAD_LIMIT:?}"));
                            return;
                        }
                        let Ok(mut conn) = Conn::try_open(addr) else {
                            // Its node was killed: this client is done.
                            return;
                        };
                        let sent = conn.try_send(request).and_then(|()| conn.read_response());
                        let Ok(answer) = sent else {
                            load.cut.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let code = serde_json::from_slice::<Value>(&answer.body)
                            .ok()
                            .and_then(|body| body["error"]["code"].as_str().map(str::to_string));
                        match (answer.status, code.as_deref()) {
                            (200, _) => {
                                refused_in_a_row = 0;
                                load.served.fetch_add(1, Ordering::Relaxed);
                            }
                            (429, Some(code)) if code == refusal => {
                                // Another worker or node may still hold a
                                // slice: a few more tries.
                                refused_in_a_row += 1;
                                if refused_in_a_row >= 5 {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            (503, Some("shared_store_unavailable")) => {
                                refused_in_a_row = 0;
                                load.unavailable.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            (status, _) => {
                                load.note(format!("{addr}: {status} {}", answer.text()));
                                return;
                            }
                        }
                    }
                });
            }
        }
    });
}

fn addrs(nodes: &[Proxy]) -> Vec<SocketAddr> {
    nodes.iter().map(|node| node.addr).collect()
}

/// Kills `node` with SIGKILL and waits until it is gone.
fn kill(node: &mut Proxy) {
    node.proc.signal("KILL");
    assert!(
        node.proc.wait_exit(Duration::from_secs(10)).is_some(),
        "the killed node is still there"
    );
}

/// How many lease terms of `node` are live in PostgreSQL.
fn live_terms(pg: &PgCluster, node: &str) -> usize {
    pg.psql(&format!(
        "SELECT count(*) FROM llm_proxy_lease_terms WHERE node = '{node}' AND NOT expired"
    ))
    .parse()
    .unwrap()
}

#[test]
fn a_node_killed_mid_load_costs_at_most_what_it_held_and_that_is_written_off() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-kill-node");
    let mut nodes = nodes(&pg, &mock, &dirs, "k", 3, &[SHORT_TERM]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, id) = key_everywhere(&nodes, json!({"models": [MODEL], "max_requests": 1000}));
    let targets = addrs(&nodes);
    let load = Load::default();
    let mut victim = nodes.pop().unwrap();
    let (killed_at, killed) = std::thread::scope(|scope| {
        scope.spawn(|| hammer(&targets, &key, &load));
        wait_until(Duration::from_secs(60), "300 requests served", || {
            load.served() >= 300
        });
        kill(&mut victim);
        (load.served(), Instant::now())
    });
    // The survivors went on until the key was refused.
    let served = load.served();
    assert!(load.unexpected().is_empty(), "{:?}", load.unexpected());
    assert!(served <= 1000, "served {served} of a key limited to 1000");
    // What the dead node held stays leased until its term expires; the
    // survivors' heartbeats then write it off.
    wait_until(
        Duration::from_secs(15),
        "the dead node's term to expire",
        || live_terms(&pg, "k3") == 0,
    );
    let expired_after = killed.elapsed();
    let (used, leased, written_off) = allowance(&pg, &id);
    assert_eq!(
        used + leased,
        1000,
        "all of the allowance is used or leased to the survivors (used {used}, leased {leased})"
    );
    for node in nodes {
        node.stop();
    }
    // The survivors handed back what they held: nothing is leased, all is
    // used, and a clean stop wrote nothing more off.
    assert_eq!(allowance(&pg, &id), (1000, 0, written_off));
    // What was not served was the dead node's: what it held in its term
    // (written off) and the requests it counted but never answered.
    let cut = load.cut();
    let shortfall = 1000 - served;
    println!(
        "kill -9 of 1 node of 3 at {killed_at} served: served {served} of 1000 (shortfall {shortfall}), \
         written off {written_off}, requests cut by the kill {cut}, its term expired {expired_after:?} after the kill"
    );
    assert!(
        shortfall <= written_off as usize + cut,
        "the shortfall {shortfall} is more than the dead node's slice written off ({written_off}) and the requests cut ({cut})"
    );
}

#[test]
fn a_node_killed_mid_load_and_restarted_within_its_term_renews_it_and_hands_back_its_slice() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-restart-node");
    let mut nodes = nodes(&pg, &mock, &dirs, "r", 3, &[SHORT_TERM]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, id) = key_everywhere(&nodes, json!({"models": [MODEL], "max_requests": 1000}));
    let targets = addrs(&nodes);
    let load = Load::default();
    let mut victim = nodes.pop().unwrap();
    let (killed_at, restart_took, restarted) = std::thread::scope(|scope| {
        let (key, load) = (&key, &load);
        scope.spawn(|| hammer(&targets, key, load));
        wait_until(Duration::from_secs(60), "300 requests served", || {
            load.served() >= 300
        });
        kill(&mut victim);
        let killed = Instant::now();
        let killed_at = load.served();
        let restarted = node_with(&pg, &mock, "r3", &dirs.path().join("r3"), &[SHORT_TERM]);
        let took = killed.elapsed();
        // It serves its share again, until the key is refused everywhere.
        let addr = restarted.addr;
        scope.spawn(move || hammer(&[addr], key, load));
        (killed_at, took, restarted)
    });
    assert!(load.unexpected().is_empty(), "{:?}", load.unexpected());
    // Back within its term, the node renewed it rather than starting
    // another: its slices were never written off.
    let terms = pg.psql("SELECT count(*), count(*) FILTER (WHERE NOT expired) FROM llm_proxy_lease_terms WHERE node = 'r3'");
    assert_eq!(
        terms, "1|1",
        "the restarted node's terms (all|live), restarted after {restart_took:?}"
    );
    for node in nodes {
        node.stop();
    }
    restarted.stop();
    let (used, leased, written_off) = allowance(&pg, &id);
    let served = load.served();
    let cut = load.cut();
    println!(
        "kill -9 of 1 node of 3 at {killed_at} served, restarted on its data directory in {restart_took:?}: \
         served {served}, used {used} (used - served = {}), leased {leased}, written off {written_off}, requests cut {cut}",
        used - served as i64
    );
    assert_eq!(
        (leased, written_off),
        (0, 0),
        "stopped cleanly, in its term: nothing leased, nothing written off"
    );
    // Everything was taken by the end, and what the nodes stopped cleanly
    // held came back: all of it is used.
    assert_eq!(used, 1000);
    // The restart took the leases the killed node's workers held as used
    // (what they had drawn counts as served, answered or not): `used`
    // exceeds what clients got by at most those leases (one per worker,
    // at most MAX_LEASE each) and the requests the kill cut in flight.
    let (served, used) = (served as u64, used as u64);
    assert!(served <= used, "served {served} > used {used}");
    let bound = WORKERS * MAX_LEASE + cut as u64;
    assert!(
        used - served <= bound,
        "used {used} - served {served} is more than the killed node's workers could hold leased ({bound})"
    );
}

/// Takes PostgreSQL down with `down` after 300 of a key's 1000 requests
/// were served by three nodes, for 2 s, then starts it again: the nodes
/// serve from their slices meanwhile, refuse with 503 what needs a new
/// slice, and go on to exactly 1000 once it is back.
fn postgres_down_under_load(how: &str, down: impl Fn(&PgCluster)) {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-pg-down");
    let nodes = nodes(&pg, &mock, &dirs, "p", 3, &[]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, id) = key_everywhere(&nodes, json!({"models": [MODEL], "max_requests": 1000}));
    let targets = addrs(&nodes);
    let load = Load::default();
    let (before, while_down, refused_while_down, back) = std::thread::scope(|scope| {
        scope.spawn(|| hammer(&targets, &key, &load));
        wait_until(Duration::from_secs(60), "300 requests served", || {
            load.served() >= 300
        });
        assert_eq!(load.unavailable(), 0, "503 before PostgreSQL went down");
        let before = load.served();
        down(&pg);
        std::thread::sleep(Duration::from_secs(2));
        let while_down = load.served() - before;
        let refused_while_down = load.unavailable();
        pg.start_again();
        (before, while_down, refused_while_down, Instant::now())
    });
    let to_the_end = back.elapsed();
    assert!(
        load.unexpected().is_empty(),
        "{:?}\nPostgreSQL refused: {:?}\nthe nodes' errors: {:?}",
        load.unexpected(),
        fatal_lines(&pg),
        nodes.iter().flat_map(errors_of).collect::<Vec<_>>()
    );
    let served = load.served();
    println!(
        "PostgreSQL {how} at {before} served: {while_down} served from the nodes' slices while it was down, \
         {refused_while_down} refused with 503 then ({} in all); back after 2 s, the last of the 1000 served {to_the_end:?} later",
        load.unavailable()
    );
    assert_eq!(load.cut(), 0, "no node died: no request was cut");
    assert!(
        while_down > 0,
        "nothing was served from the slices while PostgreSQL was down"
    );
    assert!(
        refused_while_down > 0,
        "no request needed a new slice while PostgreSQL was down"
    );
    assert_eq!(
        served, 1000,
        "the key's 1000 requests, not one more or less"
    );
    // What the nodes counted while PostgreSQL was down reaches it: every
    // node shows the sum, exactly.
    for node in &nodes {
        wait_until(
            Duration::from_secs(10),
            "the sum of use on every node",
            || crate::common::litellm::key_info(node, &key)["request_count"] == 1000,
        );
    }
    for node in nodes {
        node.stop();
    }
    assert_eq!(allowance(&pg, &id), (1000, 0, 0));
    let counted = pg.psql(&format!(
        "SELECT sum(requests) FROM llm_proxy_node_usage WHERE party = 'key:{id}'"
    ));
    assert_eq!(counted, "1000", "the nodes' counts in PostgreSQL");
}

#[test]
fn postgres_killed_under_load_max_requests_still_holds_exactly() {
    postgres_down_under_load("killed (kill -9)", PgCluster::kill);
}

#[test]
fn postgres_stopped_under_load_max_requests_still_holds_exactly() {
    postgres_down_under_load("stopped (pg_ctl stop -m fast)", PgCluster::stop);
}

/// The secrets' digests `/key/list` shows, sorted.
fn key_list(node: &Proxy) -> Vec<String> {
    let list = ok(get(node, "/key/list"));
    let mut keys: Vec<String> = list["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {list}"))
        .iter()
        .map(|key| match key {
            Value::String(token) => token.clone(),
            other => other["token"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn management_writes_are_refused_while_postgres_is_down_and_requests_go_on() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-manage-down");
    let nodes = nodes(&pg, &mock, &dirs, "m", 3, &[]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, _) = key_everywhere(&nodes, json!({"models": [MODEL]}));
    let listed = key_list(&nodes[0]);
    let in_postgres = "SELECT count(*) FROM llm_proxy_records WHERE tbl = 'keys'";
    let records = pg.psql(in_postgres);

    let projects = "SELECT count(*) FROM llm_proxy_records WHERE tbl = 'projects'";
    let project_records = pg.psql(projects);
    for node in &nodes {
        assert_eq!(metric(node, "llm_proxy_shared_store_up"), Some(1));
        assert_eq!(metric(node, "llm_proxy_shared_store_term_live"), Some(1));
    }

    pg.kill();
    // Each node says it lost PostgreSQL (within a heartbeat).
    for node in &nodes {
        wait_until(Duration::from_secs(5), "the node to say so", || {
            metric(node, "llm_proxy_shared_store_up") == Some(0)
        });
    }
    let mut refusal = String::new();
    for node in &nodes {
        // LiteLLM's envelope on its routes (`code` the status), the
        // gateway's on its own.
        let answer = post(node, "/key/generate", json!({"models": [MODEL]}));
        let message = assert_lite_error(&answer, 503, "internal_server_error", None);
        assert!(message.contains("shared store"), "{message}");
        refusal = message;
        let body = json!({"name": "while-down", "openai_api_key": UPSTREAM_KEY});
        node.manage("POST", "/manage/projects", Some(body))
            .assert_error(503, "shared_store_unavailable");
        assert_eq!(key_list(node), listed);
    }
    // The key works as before on every node, from the replicas, for as
    // long as PostgreSQL is down.
    let down = Instant::now();
    let mut served = 0;
    while down.elapsed() < Duration::from_secs(2) {
        for node in &nodes {
            let answer = chat_with(node, &key);
            assert_eq!(answer.status, 200, "{}", answer.text());
            served += 1;
        }
    }

    pg.start_again();
    let back = Instant::now();
    // Nothing was written, in PostgreSQL or in any replica.
    assert_eq!(pg.psql(in_postgres), records);
    assert_eq!(pg.psql(projects), project_records);
    for node in &nodes {
        assert_eq!(key_list(node), listed);
    }
    // Writes work again once the node has reconnected (backoff ≤ 5 s).
    let mut refused = 0;
    let made = loop {
        let answer = post(&nodes[1], "/key/generate", json!({"models": [MODEL]}));
        if answer.status == 200 {
            break answer.json()["key"].as_str().unwrap().to_string();
        }
        assert_lite_error(&answer, 503, "internal_server_error", None);
        refused += 1;
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "management writes still refused 10 s after PostgreSQL came back: {}\nPostgreSQL refused: {:?}\nthe node's log:\n{}",
            answer.text(),
            fatal_lines(&pg),
            nodes[1].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let writable_after = back.elapsed();
    for node in &nodes {
        let start = Instant::now();
        while models_status(node, &made) != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the new key not on {} within 5 s; PostgreSQL refused: {:?}\nits log:\n{}",
                node.addr,
                fatal_lines(&pg),
                node.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!(
        "management writes refused with 503 while PostgreSQL was down ({refusal:?}), {served} requests served meanwhile; after it was back, \
         the first write went through after {writable_after:?} ({refused} refused meanwhile)"
    );
}

/// The one `error: ` line of a command's stderr, its last; log lines
/// may come before it (see `a_refusal_in_shared_mode_is_one_line_on_stderr`).
#[track_caller]
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr:?}");
    assert_eq!(
        stderr.trim_end().lines().last(),
        Some(errors[0]),
        "the error comes last: {stderr:?}"
    );
    errors[0]
}

/// `psql -c sql` in `database` of `pg`'s server, for what `PgCluster::psql`
/// cannot do: its database may refuse connections.
fn psql_in(pg: &PgCluster, database: &str, sql: &str) {
    let psql = find_on_path("psql").expect("psql");
    let mut cmd = std::process::Command::new(psql);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .args(["-At", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(database_url(pg, database))
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql -c {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What happens to a node when PostgreSQL restarts and the node tries to
/// reconnect while it starts up ("the database system is not yet accepting
/// connections"), made certain: PostgreSQL ends the node's connections and
/// refuses new ones for a while; once it lets the node in again,
/// management writes work again.
#[test]
fn a_node_refused_by_postgres_for_a_while_reconnects_when_let_in() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-refused");
    let node = node(&pg, &mock, "d1", &dirs.path().join("d1"));
    generate_key(&node, json!({}));
    psql_in(
        &pg,
        "postgres",
        "ALTER DATABASE llmproxy ALLOW_CONNECTIONS false; \
         SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'llmproxy'",
    );
    // Its connections ended, the node is refused when it tries again.
    let start = Instant::now();
    while post(&node, "/key/generate", json!({})).status != 503 {
        assert!(start.elapsed() < Duration::from_secs(5), "{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        fatal_lines(&pg)
            .iter()
            .any(|line| line.contains("is not currently accepting connections")),
        "PostgreSQL did not refuse the node: {:?}",
        fatal_lines(&pg)
    );
    psql_in(
        &pg,
        "postgres",
        "ALTER DATABASE llmproxy ALLOW_CONNECTIONS true",
    );
    let back = Instant::now();
    loop {
        let answer = post(&node, "/key/generate", json!({}));
        if answer.status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "management writes still refused 10 s after PostgreSQL let the node in: {}\nthe node's errors: {:?}",
            answer.text(),
            errors_of(&node)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "the node took writes again {:?} after PostgreSQL let it in",
        back.elapsed()
    );
}

/// The lines of a node's log about errors.
fn errors_of(node: &Proxy) -> Vec<String> {
    node.log()
        .lines()
        .filter(|line| line.contains("ERROR"))
        .map(str::to_string)
        .collect()
}

/// The lines of PostgreSQL's log where it refused a connection or ended one.
fn fatal_lines(pg: &PgCluster) -> Vec<String> {
    pg.log()
        .lines()
        .filter(|line| line.contains("FATAL"))
        .map(str::to_string)
        .collect()
}

/// `postgres://…` of another database of `pg`'s server.
fn database_url(pg: &PgCluster, database: &str) -> String {
    let url = pg.url();
    let (server, _) = url.rsplit_once('/').unwrap();
    format!("{server}/{database}")
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_and_migrate_says_what_it_did() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-schema");

    // `migrate` on a fresh database, twice.
    let schema = schema_version();
    pg.psql("CREATE DATABASE fresh");
    let fresh = database_url(&pg, "fresh");
    let first = Cli::new(["migrate", "--database-url", &fresh]).run();
    let said = first.ok().trim().to_string();
    assert!(said.contains(&format!("version 0 → {schema}")), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    let second = Cli::new(["migrate", "--database-url", &fresh]).run();
    let again = second.ok().trim().to_string();
    assert!(
        again.contains(&format!("version {schema} (up to date)")),
        "{again}"
    );
    println!("migrate on a fresh database: {said:?}; again: {again:?}");

    // A node migrates its database; then a newer llm-proxy's migration.
    node(&pg, &mock, "s1", &dirs.path().join("s1")).stop();
    pg.psql("INSERT INTO llm_proxy_schema (version, name) VALUES (99, 'from a newer llm-proxy')");
    for (name, what) in [("s1", "the node that migrated it"), ("s2", "a new node")] {
        let exited = Proxy::for_mock(&mock)
            .unseeded()
            .env("DATABASE_URL", pg.url())
            .env("NODE_ID", name)
            .arg("--db")
            .arg(dirs.path().join(name).to_str().unwrap())
            .run_to_exit();
        assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
        let line = error_line(&exited.stderr);
        assert!(
            line.contains("schema is version 99, newer than this llm-proxy"),
            "{line}"
        );
        assert!(line.contains("upgrade llm-proxy"), "{line}");
        println!("{what} on a schema of version 99: {line:?}");
    }
    let refused = Cli::new(["migrate", "--database-url", &pg.url()]).run();
    refused.assert_code(1);
    assert!(error_line(&refused.stderr).contains("newer than this llm-proxy"));

    // Nothing listens there.
    let closed = closed_port();
    let unreachable = Cli::new([
        "migrate",
        "--database-url",
        &format!("postgres://llmproxy@{closed}/llmproxy"),
    ])
    .run();
    let code = unreachable.code;
    // 2: the server (here PostgreSQL) cannot be reached, as for every command.
    assert_eq!(code, Some(2), "{unreachable:?}");
    let line = error_line(&unreachable.stderr);
    assert!(
        line.contains("PostgreSQL") || line.contains("shared store"),
        "says what it could not reach: {line}"
    );
    println!("migrate with nothing listening at {closed}: exit {code:?}, {line:?}");
}

/// A single-node server on `dir` (no `DATABASE_URL`).
fn single_node(mock: &Mock, dir: &Path) -> Proxy {
    Proxy::for_mock(mock)
        .unseeded()
        .arg("--db")
        .arg(dir.to_str().unwrap())
        .start()
}

#[test]
fn a_single_node_store_is_imported_with_its_counts_and_not_joined_without_import() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-import");
    let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));

    // One node alone: a user, and a key of 50 requests, 10 of them used.
    let single = single_node(&mock, &a);
    add_deployment(&single, MODEL, &mock, Value::Null);
    ok(post(&single, "/user/new", json!({"user_id": "ann"})));
    let generated = ok(post(
        &single,
        "/key/generate",
        json!({"models": [MODEL], "max_requests": 50, "user_id": "ann"}),
    ));
    let key = generated["key"].as_str().unwrap().to_string();
    let id = generated["id"].as_str().unwrap().to_string();
    for _ in 0..10 {
        let answer = chat_with(&single, &key);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    single.stop();

    let import = |dir: &Path| {
        Cli::new([
            "migrate",
            "--import",
            "--db",
            dir.to_str().unwrap(),
            "--database-url",
        ])
        .arg(pg.url())
        .run()
    };
    let imported = import(&a);
    let said = imported.ok().trim().to_string();
    assert!(said.contains("imported"), "{said}");
    let twice = import(&a);
    twice.assert_code(1);
    let refusal = error_line(&twice.stderr);
    assert!(
        refusal.contains("already the replica of cluster"),
        "{refusal}"
    );
    println!("migrate --import: {said:?}; a second time: {refusal:?}");
    // The key's count came along.
    assert_eq!(allowance(&pg, &id), (10, 0, 0));

    // A node on the imported directory, and one on an empty one.
    let nodes = [node(&pg, &mock, "ia", &a), node(&pg, &mock, "ib", &b)];
    for node in &nodes {
        wait_until(
            Duration::from_secs(5),
            "the imported key on both nodes",
            || models_status(node, &key) == 200,
        );
    }
    let user = ok(get(&nodes[1], "/user/info?user_id=ann"));
    assert_eq!(user["user_id"], "ann", "{user}");
    let loads = [Load::default(), Load::default()];
    std::thread::scope(|scope| {
        for (node, load) in nodes.iter().zip(&loads) {
            let key = &key;
            scope.spawn(move || hammer(&[node.addr], key, load));
        }
    });
    for load in &loads {
        assert!(load.unexpected().is_empty(), "{:?}", load.unexpected());
    }
    let served: Vec<usize> = loads.iter().map(Load::served).collect();
    println!("after the import: served {served:?} on the two nodes");
    assert_eq!(
        served.iter().sum::<usize>(),
        40,
        "the 40 requests left of 50"
    );
    for node in nodes {
        node.stop();
    }
    assert_eq!(allowance(&pg, &id), (50, 0, 0));

    // A single-node store not imported is not made a replica.
    let c = dirs.path().join("c");
    let other = single_node(&mock, &c);
    generate_key(&other, json!({}));
    other.stop();
    let exited = Proxy::for_mock(&mock)
        .unseeded()
        .env("DATABASE_URL", pg.url())
        .env("NODE_ID", "ic")
        .arg("--db")
        .arg(c.to_str().unwrap())
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    let line = error_line(&exited.stderr);
    assert!(
        line.contains("import it with `llm-proxy migrate --import"),
        "{line}"
    );
    println!("shared mode on a single-node store: {line:?}");
}

/// What the tests above allow for: the refusals of a server in shared mode
/// and of `migrate --import` should be their error line alone, as every
/// command's are.
#[test]
fn a_refusal_in_shared_mode_is_one_line_on_stderr() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-one-line");
    let a = dirs.path().join("a");
    let single = single_node(&mock, &a);
    generate_key(&single, json!({}));
    single.stop();
    let import = || {
        Cli::new([
            "migrate",
            "--import",
            "--db",
            a.to_str().unwrap(),
            "--database-url",
        ])
        .arg(pg.url())
        .run()
    };
    import().ok();
    import().error_line(1);
    pg.psql("INSERT INTO llm_proxy_schema (version, name) VALUES (99, 'from a newer llm-proxy')");
    Proxy::for_mock(&mock)
        .unseeded()
        .env("DATABASE_URL", pg.url())
        .arg("--db")
        .arg(dirs.path().join("b").to_str().unwrap())
        .run_to_exit()
        .assert_one_line(1, "newer than this llm-proxy");
}

/// A budget across three nodes with `kill -9` of one mid-load: never more
/// than the budget is spent; what the dead node held is written off once
/// its term expires.
#[test]
fn a_budget_holds_across_a_node_killed_mid_load() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-kill-budget");
    let mut nodes = nodes(&pg, &mock, &dirs, "bk", 3, &[SHORT_TERM]);
    // A dollar per million completion tokens; the mock answers "Sixteen
    // chars ok" with 16: 16 µ$ a request, 200 of them in the budget.
    add_priced_model(&nodes[0], &mock);
    let (key, id) = key_everywhere(
        &nodes,
        json!({"models": [MODEL], "max_budget": 200.0 * REQUEST_COST}),
    );
    let body = priced_request();
    let targets = addrs(&nodes);
    let load = Load::default();
    let mut victim = nodes.pop().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| hammer_until(&targets, &key, &load, &body, "budget_exceeded"));
        wait_until(Duration::from_secs(60), "60 requests served", || {
            load.served() >= 60
        });
        kill(&mut victim);
    });
    let served = load.served();
    assert!(load.unexpected().is_empty(), "{:?}", load.unexpected());
    assert!(
        served <= 200,
        "served {served} with a budget of 200 requests"
    );
    wait_until(
        Duration::from_secs(15),
        "the dead node's term to expire",
        || live_terms(&pg, "bk3") == 0,
    );
    for node in nodes {
        node.stop();
    }
    let row = pg.psql(&format!(
        "SELECT lim, used, leased, written_off FROM llm_proxy_allowances \
         WHERE party = 'key:{id}' AND meter = 'budget'"
    ));
    let figures: Vec<i64> = row.split('|').map(|n| n.parse().unwrap()).collect();
    let (lim, used, leased, written_off) = (figures[0], figures[1], figures[2], figures[3]);
    println!(
        "budget of 200 requests, kill -9 of 1 node of 3 at 60 served: served {served}, \
         written off {} requests' worth",
        written_off / 16_000_000
    );
    assert_eq!(leased, 0, "{row}");
    assert!(used <= lim, "{row}");
    // Every request served was paid for: what the clients got is within
    // what PostgreSQL counts as used.
    assert!(served as i64 * 16_000_000 <= used, "{row}");
}

/// A budget across three nodes while PostgreSQL is killed and started
/// again under load: never more than the budget is spent; the nodes' slices
/// carry them through the outage, and the rest is served once it is back.
#[test]
fn a_budget_holds_with_postgres_killed_under_load() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-pg-budget");
    let nodes = nodes(&pg, &mock, &dirs, "pb", 3, &[]);
    add_priced_model(&nodes[0], &mock);
    // 16 µ$ a request (16 completion tokens at a dollar per million).
    let (key, id) = key_everywhere(
        &nodes,
        json!({"models": [MODEL], "max_budget": 400.0 * REQUEST_COST}),
    );
    let body = priced_request();
    let targets = addrs(&nodes);
    let load = Load::default();
    std::thread::scope(|scope| {
        scope.spawn(|| hammer_until(&targets, &key, &load, &body, "budget_exceeded"));
        wait_until(Duration::from_secs(60), "100 requests served", || {
            load.served() >= 100
        });
        pg.kill();
        std::thread::sleep(Duration::from_secs(2));
        pg.start_again();
    });
    let served = load.served();
    assert!(load.unexpected().is_empty(), "{:?}", load.unexpected());
    assert_eq!(load.cut(), 0, "no node died: no request was cut");
    println!(
        "budget of 400 requests, PostgreSQL killed at 100 served: {served} served, {} refused with 503 meanwhile",
        load.unavailable()
    );
    assert!(
        served <= 400,
        "served {served} with a budget of 400 requests"
    );
    // What a worker holds and cannot use (less than one request's worth,
    // in each of the 2 workers of the 3 nodes) is all that may go unserved.
    assert!(served >= 394, "only {served} of 400 served");
    for node in nodes {
        node.stop();
    }
    let row = pg.psql(&format!(
        "SELECT used, leased FROM llm_proxy_allowances WHERE party = 'key:{id}' AND meter = 'budget'"
    ));
    let figures: Vec<i64> = row.split('|').map(|n| n.parse().unwrap()).collect();
    assert_eq!(figures[1], 0, "nothing leased after clean stops: {row}");
    assert_eq!(
        figures[0],
        served as i64 * 16_000_000,
        "PostgreSQL counts exactly what was served: {row}"
    );
}

/// Requests per minute across three nodes with `kill -9` of one: never
/// more than the limit in the minute.
#[test]
fn requests_per_minute_hold_across_a_node_killed_mid_load() {
    let Some(pg) = PgCluster::start() else { return };
    let mock = Mock::start();
    let dirs = TempDir::new("shared-kill-rpm");
    let mut nodes = nodes(&pg, &mock, &dirs, "rk", 3, &[SHORT_TERM]);
    add_deployment(&nodes[0], MODEL, &mock, Value::Null);
    let (key, _) = key_everywhere(&nodes, json!({"models": [MODEL], "rpm_limit": 200}));
    crate::rate_limits::fresh_minute(20);
    let minute = crate::rate_limits::now_ms() / 60_000;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let targets = addrs(&nodes);
    let load = Load::default();
    let mut victim = nodes.pop().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| hammer_until(&targets, &key, &load, &body, "rpm_limit_exceeded"));
        wait_until(Duration::from_secs(30), "60 requests served", || {
            load.served() >= 60
        });
        kill(&mut victim);
    });
    let served = load.served();
    let same_minute = crate::rate_limits::now_ms() / 60_000 == minute;
    assert!(load.unexpected().is_empty(), "{:?}", load.unexpected());
    println!(
        "rpm 200, kill -9 of 1 node of 3 at 60 served: {served} served (one minute: {same_minute}), {} cut",
        load.cut()
    );
    if same_minute {
        assert!(served <= 200, "{served} requests in a minute with rpm 200");
    }
    let taken = pg.psql(&format!(
        "SELECT coalesce(max(used + leased), 0) FROM llm_proxy_allowances WHERE meter = 'rpm@{minute}'"
    ));
    assert!(taken.parse::<i64>().unwrap() <= 200, "{taken}");
}
