//! The server as a process: HTTPS upstreams, several workers, and draining
//! on SIGTERM with a stream in flight.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files in `dir`.
fn self_signed(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("generate a certificate");
    let cert_path = dir.write("upstream.pem", cert.cert.pem());
    let key_path = dir.write("upstream.key", cert.key_pair.serialize_pem());
    (cert_path, key_path)
}

fn tls_mock(dir: &TempDir) -> Mock {
    let (cert, key) = self_signed(dir);
    Mock::builder()
        .args(["--api-key", UPSTREAM_KEY, "--tls-cert"])
        .arg(cert.display().to_string())
        .arg("--tls-key")
        .arg(key.display().to_string())
        .start()
}

#[test]
fn https_upstream_trusted_through_an_extra_ca_file() {
    let dir = TempDir::new("tls");
    let mock = tls_mock(&dir);
    assert!(mock.url().starts_with("https://"), "{}", mock.url());
    let ca = dir.path().join("upstream.pem");
    let proxy = Proxy::for_mock(&mock)
        .arg("--upstream-ca-file")
        .arg(ca.display().to_string())
        .start();

    let mut conn = proxy.conn();
    let response = conn.roundtrip(&chat(false).bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["object"], "chat.completion");

    // Streams over TLS, then the pooled TLS connection is reused.
    conn.send(&chat(true).bytes());
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    let (events, end) = read_sse(&mut conn);
    end.expect("complete stream over TLS");
    let payloads: Vec<String> = events.into_iter().map(|e| e.data).collect();
    assert_complete_stream(&payloads, MOCK_WORDS.len());
    assert_eq!(conn.roundtrip(&chat(false).bytes()).status, 200);
}

#[test]
fn https_upstream_with_an_unknown_certificate_is_502() {
    let dir = TempDir::new("tls-untrusted");
    let mock = tls_mock(&dir);
    let proxy = Proxy::for_mock(&mock).start();
    let response = proxy.call(chat(false));
    response.assert_error(502, "upstream_unavailable");
    assert!(
        response.text().contains("TLS"),
        "the message names the TLS failure: {}",
        response.text()
    );
}

#[test]
fn missing_extra_ca_file_is_a_startup_error() {
    let exited = Proxy::builder()
        .arg("--upstream-ca-file")
        .arg("/nonexistent/ca.pem")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("/nonexistent/ca.pem"),
        "{}",
        exited.stderr
    );
}

#[test]
fn several_workers_serve_connections_concurrently() {
    let mock = Mock::builder().args(["--workers", "2"]).start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();

    // The kernel spreads connections over both workers' listeners.
    let mut workers_seen = BTreeSet::new();
    for _ in 0..64 {
        let health = proxy.call(Req::get("/health")).json();
        assert_eq!(health["workers"], 2);
        workers_seen.insert(health["worker"].as_u64().unwrap());
        if workers_seen.len() == 2 {
            break;
        }
    }
    assert_eq!(workers_seen, BTreeSet::from([0, 1]));

    // Slow streams held open on many connections at once do not block each other.
    let started = Instant::now();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                conn.send(
                    &chat(true)
                        .header("x-mock-stream-chunks", "5")
                        .header("x-mock-chunk-interval-ms", "100")
                        .bytes(),
                );
                assert_eq!(conn.read_head().unwrap().status, 200);
                let (events, end) = read_sse(&mut conn);
                end.expect("complete stream");
                let payloads: Vec<String> = events.into_iter().map(|e| e.data).collect();
                assert_complete_stream(&payloads, 5);
                conn.roundtrip(&chat(false).bytes()).status
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 200);
    }
    // 16 streams of 500 ms each: concurrent, not one after the other (8 s).
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn sigterm_lets_a_stream_in_flight_finish_then_exits_zero() {
    let mock = Mock::start();
    let mut proxy = Proxy::for_mock(&mock).start();

    let mut conn = proxy.conn();
    conn.send(
        &chat(true)
            .header("x-mock-stream-chunks", "10")
            .header("x-mock-chunk-interval-ms", "100")
            .bytes(),
    );
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    // An idle keep-alive connection is closed by the drain.
    let mut idle = proxy.conn();
    assert_eq!(idle.roundtrip(&Req::get("/live").bytes()).status, 200);

    proxy.proc.signal("TERM");
    assert!(proxy.proc.wait_for_log("draining", Duration::from_secs(5)));

    let (events, end) = read_sse(&mut conn);
    end.expect("the stream in flight runs to its end");
    let payloads: Vec<String> = events.into_iter().map(|e| e.data).collect();
    assert_complete_stream(&payloads, 10);
    idle.assert_closed();

    let status = proxy.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", proxy.log());
    // Nothing listens any more.
    assert!(Conn::try_open(proxy.addr).is_err());
}

#[test]
fn shutdown_timeout_cuts_a_stream_that_outlives_it() {
    let mock = Mock::start();
    let mut proxy = Proxy::for_mock(&mock)
        .env("SHUTDOWN_TIMEOUT", "300ms")
        .start();
    let mut conn = proxy.conn();
    conn.send(
        &chat(true)
            .header("x-mock-stream-chunks", "100")
            .header("x-mock-chunk-interval-ms", "100")
            .bytes(),
    );
    assert_eq!(conn.read_head().unwrap().status, 200);
    let signalled = Instant::now();
    proxy.proc.signal("TERM");
    let status = proxy.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", proxy.log());
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let (_, end) = read_sse(&mut conn);
    assert!(end.is_err(), "the cut stream must not look complete");
}

#[test]
fn demo_mode_streams_with_the_demo_key_and_cleans_up_its_store() {
    let mut proxy = Proxy::builder()
        .unseeded()
        .env_remove("MANAGEMENT_TOKEN")
        .arg("--demo")
        .start();
    let demo_dir = std::env::temp_dir().join(format!("llm-proxy-demo-{}", proxy.proc.pid()));
    assert!(
        demo_dir.join("data.mdb").exists(),
        "demo store in {demo_dir:?}"
    );

    let mut conn = proxy.conn();
    conn.send(
        &Req::post("/v1/chat/completions", chat_body(true, "Hello"))
            .auth("sk-demo-key")
            .header("x-mock-chunk-interval-ms", "0")
            .bytes(),
    );
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    let (events, end) = read_sse(&mut conn);
    end.expect("complete demo stream");
    let payloads: Vec<String> = events.into_iter().map(|e| e.data).collect();
    assert_complete_stream(&payloads, MOCK_WORDS.len());
    proxy
        .call(Req::get("/v1/models").auth("sk-wrong-key"))
        .assert_error(401, "invalid_api_key");

    proxy.proc.signal("TERM");
    let status = proxy.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", proxy.log());
    assert!(!demo_dir.exists(), "the demo store is removed on exit");
}

/// Longer than the half second after which an idle keep-alive connection
/// gives its read buffer back and waits for readability instead.
const PARKED: Duration = Duration::from_millis(800);

#[test]
fn parked_idle_connections_serve_their_next_requests() {
    let mock = Mock::start();
    // Park from the first connection (by default only from 1,024 on).
    let proxy = Proxy::for_mock(&mock)
        .env("IDLE_PARK_CONNECTIONS", "0")
        .start();
    let mut conn = proxy.conn();
    let chat = chat(false).bytes();
    assert_eq!(conn.roundtrip(&chat).status, 200);

    std::thread::sleep(PARKED);
    assert_eq!(conn.roundtrip(&chat).status, 200);

    // A request that trickles in after the park, split inside its head.
    std::thread::sleep(PARKED);
    let (first, rest) = chat.split_at(20);
    conn.send(first);
    std::thread::sleep(Duration::from_millis(100));
    conn.send(rest);
    let response = conn.read_response().expect("a response after the trickle");
    assert_eq!(response.status, 200);
    assert_eq!(mock.stat("requests"), 4, "three chats and this stats call");

    // Two pipelined requests sent at once to a parked connection.
    std::thread::sleep(PARKED);
    conn.send(&[chat.clone(), chat.clone()].concat());
    for _ in 0..2 {
        assert_eq!(conn.read_response().expect("pipelined").status, 200);
    }
}

#[test]
fn parked_idle_connections_close_at_the_idle_timeout_and_on_drain() {
    let mock = Mock::start();
    let mut proxy = Proxy::for_mock(&mock)
        .env("CLIENT_IDLE_TIMEOUT", "1500ms")
        .env("IDLE_PARK_CONNECTIONS", "0")
        .start();

    let mut timed_out = proxy.conn();
    let started = Instant::now();
    assert_eq!(timed_out.roundtrip(&Req::get("/live").bytes()).status, 200);
    timed_out.assert_closed();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "closed after {waited:?}, idle timeout 1.5 s"
    );

    let mut drained = proxy.conn();
    assert_eq!(drained.roundtrip(&Req::get("/live").bytes()).status, 200);
    std::thread::sleep(PARKED);
    proxy.proc.signal("TERM");
    drained.assert_closed();
    let status = proxy.proc.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", proxy.log());
}
