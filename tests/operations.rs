//! Running the server: one server per address, paths in the env file taken
//! from the file's directory, and a `/metrics` scrape that stays small
//! whatever clients send.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

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
