//! Running the server: one server per address, paths in the env file taken
//! from the file's directory, and a `/metrics` scrape that stays small
//! whatever clients send.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cli::Cli;
use common::*;

/// The address of a "listening on http://ADDR" line in `log`.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let start = log.find("listening on http://")? + "listening on http://".len();
    log[start..].split_whitespace().next()?.parse().ok()
}

/// `server` started as a process in `dir` with `args`, once it listens.
fn spawn_server(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let proc = spawn_command(dir.path(), args, env);
    assert!(
        proc.wait_for_log("listening on http://", Duration::from_secs(30)),
        "the server did not start; log:\n{}",
        proc.log()
    );
    let addr = listening_addr(&proc.log()).expect("an address in the log");
    (proc, addr)
}

#[test]
fn a_second_server_on_a_served_address_exits_and_the_first_serves_on() {
    let mock = Mock::builder().args(["--api-key", UPSTREAM_KEY]).start();
    let first = Proxy::for_mock(&mock).start();
    let addr = first.addr.to_string();

    // A second server, with a store of its own, on the first one's address.
    let dir = TempDir::new("second-server");
    let mut second = spawn_command(
        dir.path(),
        &["server", "--addr", &addr, "--workers", "2"],
        &[("MANAGEMENT_TOKEN", MANAGEMENT_TOKEN)],
    );
    let status = second.wait_exit(Duration::from_secs(20));
    let log = second.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the second server refuses to start; log:\n{log}"
    );
    let expected = format!("address {addr} is already in use by another process");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line says why; log:\n{log}");
    assert!(errors[0].contains(&expected), "{log}");
    assert!(!log.contains("listening on"), "{log}");
    // Refused before it touched a store: its data directory was never made.
    assert!(
        !dir.path().join("data").exists(),
        "a refused server opened its store"
    );

    // Every request, each on a new connection, reaches the first server.
    for i in 0..24 {
        let response = first.call(chat(false));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
    }

    // Once the first one has stopped, the address can be served again.
    first.stop();
    let (mut again, again_addr) = spawn_server(
        &dir,
        &["server", "--addr", &addr, "--workers", "2"],
        &[("MANAGEMENT_TOKEN", MANAGEMENT_TOKEN)],
    );
    assert_eq!(again_addr.to_string(), addr);
    again.signal("TERM");
    assert_eq!(
        again
            .wait_exit(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn paths_in_the_config_file_are_taken_from_its_directory() {
    let mock = Mock::builder().args(["--api-key", UPSTREAM_KEY]).start();
    // `setup` run where the .env lives, as the quick start does it.
    let home = TempDir::new("config-home");
    let run = Cli::new([
        "setup",
        "--openai-key",
        UPSTREAM_KEY,
        "--addr",
        "127.0.0.1:0",
    ])
    .run_in(home.path());
    let stdout = run.ok().to_string();
    let token = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Token: "))
        .unwrap_or_else(|| panic!("no token in {stdout}"))
        .trim()
        .to_string();
    let env_path = home.path().join(".env");
    let env_file = std::fs::read_to_string(&env_path).unwrap();
    assert!(
        env_file.lines().any(|line| line == "DATABASE_PATH=data"),
        "{env_file}"
    );

    // The server started from elsewhere with `--config /abs/.env`.
    let elsewhere = TempDir::new("config-elsewhere");
    let env_arg = env_path.display().to_string();
    let (proc, addr) = spawn_server(
        &elsewhere,
        &["server", "--config", &env_arg, "--workers", "1"],
        &[("OPENAI_API_URL", &mock.url())],
    );
    let data_dir = home.path().join("data");
    assert!(
        proc.log()
            .contains(&format!("data directory {}", data_dir.display())),
        "the data directory is logged, absolute; log:\n{}",
        proc.log()
    );
    let mut conn = Conn::open(addr);
    let response = conn.roundtrip(
        &Req::post("/v1/chat/completions", chat_body(false, "hi"))
            .auth(&token)
            .bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        !elsewhere.path().join("data").exists(),
        "no store made where the server was started"
    );
    // Stopped, the server has written the request's event; the dispatcher
    // run from elsewhere with the same file finds the log.
    let mut proc = proc;
    proc.signal("TERM");
    assert_eq!(
        proc.wait_exit(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(0)
    );
    let sink = elsewhere.path().join("events.jsonl");
    let sink_arg = sink.display().to_string();
    let dispatched = run_command(
        elsewhere.path(),
        &[
            "dispatcher",
            "--config",
            &env_arg,
            "--once",
            "--endpoint",
            &sink_arg,
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(dispatched.status.code(), Some(0), "{}", dispatched.stderr);
    let delivered = std::fs::read_to_string(&sink).unwrap_or_default();
    assert_eq!(delivered.lines().count(), 1, "{delivered}");

    // A relative path from the process environment stays relative to the
    // current directory.
    let (proc_env, _) = spawn_server(
        &elsewhere,
        &["server", "--config", &env_arg, "--workers", "1"],
        &[
            ("OPENAI_API_URL", &mock.url()),
            ("DATABASE_PATH", "own-store"),
        ],
    );
    assert!(
        proc_env.log().contains(&format!(
            "data directory {}",
            elsewhere.path().join("own-store").display()
        )),
        "{}",
        proc_env.log()
    );
    drop((proc, proc_env));

    // `setup --config` from elsewhere uses the store the file names.
    let rerun =
        Cli::new(["setup", "--skip-project", "--config", &env_arg]).run_in(elsewhere.path());
    let rerun_out = rerun.ok().to_string();
    assert!(
        rerun_out.contains(&format!("Store ready in {}", data_dir.display())),
        "{rerun_out}"
    );
    let env_file = std::fs::read_to_string(&env_path).unwrap();
    assert!(
        env_file.lines().any(|line| line == "DATABASE_PATH=data"),
        "{env_file}"
    );
    assert!(!elsewhere.path().join("data").exists());
}

/// The sample lines of a scrape (no comments).
fn sample_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The sample lines but the scrapes' own counters (they appear per worker
/// as the workers happen to answer scrapes) and the event log's (they
/// appear once the writer has written).
fn request_lines(text: &str) -> Vec<&str> {
    sample_lines(text)
        .into_iter()
        .filter(|l| !l.contains("route=\"local\"") && !l.starts_with("llm_proxy_event"))
        .collect()
}

/// The distinct values of `label` in a scrape.
fn label_values(text: &str, label: &str) -> std::collections::BTreeSet<String> {
    let needle = format!("{label}=\"");
    sample_lines(text)
        .iter()
        .filter_map(|line| {
            let start = line.find(&needle)? + needle.len();
            let end = line[start..].find('"')?;
            Some(line[start..start + end].to_string())
        })
        .collect()
}

/// `round` distinct values of everything a client chooses: invalid keys,
/// request ids, paths, model names; and requests of the registered model.
fn varied_requests(proxy: &Proxy, round: &str, count: usize) {
    for i in 0..count {
        let mut conn = proxy.conn();
        let id = format!("req-{round}-{i}");
        let bad_key = format!("sk-bad-{round}-{i}");
        conn.roundtrip(
            &Req::post("/v1/chat/completions", chat_body(false, "hi"))
                .auth(&bad_key)
                .header("X-Request-ID", &id)
                .bytes(),
        )
        .assert_error(401, "invalid_api_key");
        let path = format!("/v1/unknown-{round}-{i}/x?y={i}");
        let response = conn.roundtrip(&Req::get(&path).authed().bytes());
        assert_eq!(response.status, 404, "{}", response.text());
        let path = format!("/nowhere-{round}-{i}");
        let response = conn.roundtrip(&Req::get(&path).header("X-Request-ID", &id).bytes());
        assert_eq!(response.status, 404, "{}", response.text());
        let made_up = serde_json::json!({
            "model": format!("made-up-{round}-{i}"),
            "messages": [{"role": "user", "content": "hi"}],
        });
        let response = conn.roundtrip(
            &Req::post("/v1/chat/completions", made_up.to_string())
                .authed()
                .header("X-Request-ID", &id)
                .bytes(),
        );
        assert_eq!(response.status, 200, "{}", response.text());
        let routed = serde_json::json!({
            "model": "routed",
            "stream": i % 2 == 0,
            "messages": [{"role": "user", "content": "hi"}],
        });
        let response = conn.roundtrip(
            &Req::post("/v1/chat/completions", routed.to_string())
                .authed()
                .bytes(),
        );
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

#[test]
fn a_metrics_scrape_does_not_grow_with_what_clients_choose() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    let model = serde_json::json!({
        "model_name": "routed",
        "litellm_params": {"model": "openai/routed-upstream", "api_base": format!("{}/v1", mock.url())},
    });
    let response = proxy.manage("POST", "/model/new", Some(model));
    assert_eq!(response.status, 200, "{}", response.text());

    let scrape = || {
        let response = proxy.call(Req::get("/metrics"));
        assert_eq!(response.status, 200, "{}", response.text());
        response.text()
    };
    varied_requests(&proxy, "a", 20);
    // Every series seen once (the scrapes themselves included).
    let _ = scrape();
    let first = scrape();
    varied_requests(&proxy, "b", 150);
    let _ = scrape();
    let second = scrape();

    // Label values are the server's own, never a client's.
    let models = label_values(&second, "model");
    let allowed: std::collections::BTreeSet<String> = ["", "other", "routed"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(models.is_subset(&allowed), "model labels {models:?}");
    for text in ["sk-bad-", "unknown-", "nowhere-", "made-up-", "req-"] {
        assert!(!second.contains(text), "{text} in a label:\n{second}");
    }
    // 150 more distinct keys, ids, paths and models add no series, and
    // the workers' histograms are one series each.
    let series = |text: &str| -> std::collections::BTreeSet<String> {
        request_lines(text)
            .iter()
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
            .collect()
    };
    let added: Vec<String> = series(&second)
        .difference(&series(&first))
        .cloned()
        .collect();
    assert!(added.is_empty(), "series were added: {added:#?}");
    assert!(!label_values(&second, "status_class").is_empty());
    assert!(
        !second
            .lines()
            .any(|l| l.starts_with("llm_proxy_request_duration_seconds") && l.contains("worker=")),
        "histograms are summed over workers"
    );
    assert!(second.len() < 48 << 10, "{} bytes", second.len());
}
