//! `llm-proxy benchmark`: the real binary against the real mock upstream and
//! the real proxy on 127.0.0.1. Counts and outcomes only: no assertion here
//! depends on how fast anything is.

use crate::common::cli::*;
use crate::common::*;
use serde_json::{Value, json};

const CHAT: &str = "/v1/chat/completions";

/// `benchmark --base-url <url> --endpoint /v1/chat/completions --json <body>` plus `args`.
fn bench(url: &str, body: &str, args: &[&str]) -> Cli {
    Cli::new([
        "benchmark",
        "--base-url",
        url,
        "--endpoint",
        CHAT,
        "--json",
        body,
    ])
    .args(args.iter().copied())
}

fn count(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {report:#}"))
}

#[track_caller]
fn assert_no_errors(report: &Value) {
    assert_eq!(count(report, "/errors_total"), 0, "{report:#}");
}

#[test]
fn closed_loop_through_the_proxy_reports_every_request_and_the_upstream_split() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let run = bench(
        &proxy.url(),
        &chat_body(false, "hi"),
        &[
            "--token",
            CLIENT_KEY,
            "-r",
            "40",
            "-c",
            "4",
            "--workers",
            "2",
            "--output",
            "json",
        ],
    )
    .run();
    let report = run.json();
    assert_eq!(count(&report, "/requests"), 40);
    assert_eq!(report["status"], json!({"200": 40}), "{report:#}");
    assert_no_errors(&report);
    assert_eq!(report["load"]["mode"], "closed");
    assert_eq!(count(&report, "/load/workers"), 2);
    assert_eq!(count(&report, "/latency_us/count"), 40);
    for field in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][field].as_f64().unwrap() > 0.0,
            "{field}"
        );
    }
    // Every response carried X-UPSTREAM-REQUEST-START/STOP.
    assert_eq!(count(&report, "/upstream_split/responses"), 40);
    assert!(
        report["upstream_split"]["upstream_us"]["p50"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report["upstream_split"]["overhead_us"]["p50"].is_number());
    assert!(report["requests_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(report["streams"], Value::Null);
    // Keep-alive: a handful of connections, not one per request.
    assert!(count(&report, "/connections_opened") <= 5, "{report:#}");
    run.assert_hides(CLIENT_KEY);
    // Not a terminal: no progress line.
    assert!(!run.stderr.contains("requests,"), "{}", run.stderr);

    // Each request reached the mock, with the timing header.
    let headers = mock.last_request_headers();
    let start: u64 = header_value(&headers, "x-request-start")
        .expect("X-REQUEST-START reaches the upstream")
        .parse()
        .unwrap();
    assert!(start > 1_600_000_000_000_000_000, "unix ns: {start}");
}

#[test]
fn direct_to_the_mock_with_the_provider_key() {
    let mock = Mock::builder().args(["--api-key", UPSTREAM_KEY]).start();
    let run = bench(
        &mock.url(),
        &chat_body(false, "hi"),
        &[
            "--token",
            UPSTREAM_KEY,
            "-r",
            "20",
            "-c",
            "2",
            "--output",
            "json",
        ],
    )
    .run();
    let report = run.json();
    assert_eq!(count(&report, "/requests"), 20);
    assert_eq!(report["status"], json!({"200": 20}));
    assert_no_errors(&report);
    // No proxy in between: no upstream split.
    assert_eq!(report["upstream_split"], Value::Null);
    assert_eq!(mock.stat("requests"), 21, "20 requests and this stats call");

    // The human report.
    let text = bench(
        &mock.url(),
        &chat_body(false, "hi"),
        &["--token", UPSTREAM_KEY, "-r", "5"],
    )
    .run();
    let out = text.ok();
    assert!(out.contains("Requests    5 in "), "{out}");
    assert!(out.contains("Status      200: 5"), "{out}");
    assert!(out.contains("Latency     p50 "), "{out}");
}

#[test]
fn streaming_runs_time_first_events_and_count_cut_streams() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let url = proxy.url();
    let body = chat_body(true, "stream please");

    let report = bench(
        &url,
        &body,
        &[
            "--token", CLIENT_KEY, "-r", "12", "-c", "3", "--output", "json",
        ],
    )
    .run()
    .json();
    assert_eq!(report["target"]["stream"], true);
    assert_eq!(report["status"], json!({"200": 12}), "{report:#}");
    assert_no_errors(&report);
    assert_eq!(count(&report, "/streams/count"), 12);
    assert_eq!(count(&report, "/streams/complete"), 12);
    assert_eq!(count(&report, "/streams/incomplete"), 0);
    assert_eq!(count(&report, "/streams/first_event_us/count"), 12);
    assert_eq!(count(&report, "/streams/mean_gap_us/count"), 12);
    assert!(count(&report, "/streams/events") >= 12 * MOCK_WORDS.len() as u64);
    assert_eq!(count(&report, "/ttfb_us/count"), 12);
    assert_eq!(mock.stat("streams_completed"), 12);

    // The mock drops the connection after 3 deltas: no `data: [DONE]`.
    let report = bench(
        &url,
        &body,
        &[
            "--token",
            CLIENT_KEY,
            "-r",
            "4",
            "-c",
            "2",
            "--header",
            "x-mock-cut-after: 3",
            "--output",
            "json",
        ],
    )
    .run()
    .json();
    assert_eq!(count(&report, "/requests"), 4);
    assert_eq!(count(&report, "/errors/incomplete_stream"), 4, "{report:#}");
    assert_eq!(count(&report, "/streams/incomplete"), 4);
    assert_eq!(count(&report, "/streams/complete"), 0);
    assert_eq!(report["status"], json!({}));
}

#[test]
fn duration_and_open_loop_rate() {
    let mock = Mock::start();
    let url = mock.url();
    let body = chat_body(false, "hi");

    let started = std::time::Instant::now();
    let report = bench(
        &url,
        &body,
        &["--duration", "1s", "-c", "2", "--output", "json"],
    )
    .run()
    .json();
    let took = started.elapsed();
    assert!(count(&report, "/requests") > 1, "{report:#}");
    assert_no_errors(&report);
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    assert!((0.9..5.0).contains(&elapsed), "elapsed {elapsed}");
    assert!(took.as_secs() < 10, "the run took {took:?}");

    // 200 req/s for one second: the schedule holds 200 requests (the
    // probe included), whatever the latency.
    let report = bench(
        &url,
        &body,
        &[
            "--rate",
            "200",
            "--duration",
            "1s",
            "-c",
            "4",
            "--output",
            "json",
        ],
    )
    .run()
    .json();
    assert_eq!(report["load"]["mode"], "open");
    let requests = count(&report, "/requests");
    assert!((150..=230).contains(&requests), "{requests} requests");
    assert_eq!(count(&report, "/status/200"), requests);
}

#[test]
fn bad_input_fails_before_anything_is_sent() {
    let mock = Mock::start();
    let body = chat_body(false, "hi");

    // Nothing listening: exit 2.
    let closed = format!("http://{}", closed_port());
    let line = bench(&closed, &body, &["-r", "5"])
        .run()
        .fails(2)
        .to_string();
    assert!(
        line.contains("cannot reach") && line.contains(&closed),
        "{line}"
    );

    // Not JSON: exit 1, and the mock saw nothing.
    let line = bench(&mock.url(), "{\"model\": ", &["-r", "5"])
        .run()
        .fails(1)
        .to_string();
    assert!(line.contains("--json is not valid JSON"), "{line}");
    // Bad flags: exit 1.
    bench(&mock.url(), &body, &["-r", "5", "--method", "DELETE"])
        .run()
        .assert_code(1);
    bench(&mock.url(), &body, &["-r", "5", "-c", "0"])
        .run()
        .fails(1);
    bench(&mock.url(), &body, &["-r", "5", "--header", "no colon"])
        .run()
        .fails(1);
    bench(&mock.url(), &body, &[]).run().assert_code(1);
    Cli::new([
        "benchmark",
        "--base-url",
        "ftp://x",
        "--endpoint",
        "/",
        "-r",
        "1",
    ])
    .run()
    .fails(1);
    assert_eq!(mock.stat("requests"), 1, "only this stats call");
}

#[test]
fn a_refused_token_exits_3_with_the_proxys_message() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let wrong = "sk-wrong-0a1b2c3d";
    let refused = proxy.call(Req::post(CHAT, chat_body(false, "hi")).auth(wrong));
    assert_eq!(refused.status, 401, "{}", refused.text());
    let expected = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let run = bench(
        &proxy.url(),
        &chat_body(false, "hi"),
        &["--token", wrong, "-r", "50", "-c", "4"],
    )
    .run();
    let line = run.fails(3);
    assert!(line.contains("(401)") && line.contains(&expected), "{line}");
    run.assert_hides(wrong);
    assert_eq!(mock.stat("requests"), 1, "only this stats call");

    // No token at all: the same, with a hint.
    let line = bench(&proxy.url(), &chat_body(false, "hi"), &["-r", "5"])
        .run()
        .fails(3)
        .to_string();
    assert!(line.contains("PROXY_TOKEN"), "{line}");
}

#[test]
fn the_token_comes_from_the_named_environment_variable() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let url = proxy.url();
    let body = chat_body(false, "hi");
    let report = bench(
        &url,
        &body,
        &["--token-env", "BENCH_KEY", "-r", "3", "--output", "json"],
    )
    .env("BENCH_KEY", CLIENT_KEY)
    .run()
    .json();
    assert_eq!(report["status"], json!({"200": 3}));
    // The default variable is PROXY_TOKEN.
    let report = bench(&url, &body, &["-r", "3", "--output", "json"])
        .env("PROXY_TOKEN", CLIENT_KEY)
        .run()
        .json();
    assert_eq!(report["status"], json!({"200": 3}));
}

#[test]
fn debug_shows_one_redacted_sample_per_status() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    // Three requests allowed, then 429.
    let token = proxy.create_token(json!({"max_requests": 3}));
    let secret = token["token"].as_str().unwrap();
    let url = proxy.url();
    let run = bench(
        &url,
        &chat_body(false, "hi"),
        &["--token", secret, "-r", "6", "--debug"],
    )
    .run();
    let out = run.ok();
    assert_eq!(
        out.matches("--- sample response: 200 ---").count(),
        1,
        "{out}"
    );
    assert_eq!(
        out.matches("--- sample response: 429 ---").count(),
        1,
        "{out}"
    );
    assert_eq!(out.matches("--- sample response:").count(), 2, "{out}");
    assert!(out.contains("Authorization: [REDACTED]"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("x-upstream-request-start: "),
        "{out}"
    );
    assert!(out.contains("Status      200: 3, 429: 3"), "{out}");
    run.assert_hides(secret);

    let run = bench(
        &url,
        &chat_body(false, "hi"),
        &["--token", secret, "-r", "2", "--debug", "--output", "json"],
    )
    .run();
    let report = run.json();
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1, "{report:#}");
    assert_eq!(samples[0]["status"], 429);
    assert!(
        samples[0]["body"]
            .as_str()
            .unwrap()
            .contains("max_requests_exceeded")
    );
    run.assert_hides(secret);
}

#[test]
fn https_targets_with_an_extra_ca_file() {
    let dir = TempDir::new("bench-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("generate a certificate");
    let cert_path = dir.write("mock.pem", cert.cert.pem());
    let key_path = dir.write("mock.key", cert.key_pair.serialize_pem());
    let mock = Mock::builder()
        .args(["--api-key", UPSTREAM_KEY, "--tls-cert"])
        .arg(cert_path.display().to_string())
        .arg("--tls-key")
        .arg(key_path.display().to_string())
        .start();
    assert!(mock.url().starts_with("https://"));
    let body = chat_body(true, "hi");
    let ca = cert_path.display().to_string();
    let report = bench(
        &mock.url(),
        &body,
        &[
            "--token",
            UPSTREAM_KEY,
            "-r",
            "6",
            "-c",
            "2",
            "--ca-file",
            &ca,
            "--output",
            "json",
        ],
    )
    .run()
    .json();
    assert_eq!(report["status"], json!({"200": 6}), "{report:#}");
    assert_eq!(count(&report, "/streams/complete"), 6);

    // Without the CA the handshake fails on the probe: unreachable.
    let line = bench(&mock.url(), &body, &["--token", UPSTREAM_KEY, "-r", "1"])
        .run()
        .fails(2)
        .to_string();
    assert!(line.contains("TLS"), "{line}");
}

#[test]
fn cache_runs_report_the_hit_ratio_and_hit_and_miss_latency() {
    let mock = Mock::start();
    // One proxy worker: one cache shard, whatever connections the run opens.
    let proxy = Proxy::for_mock(&mock).workers(1).start();
    let body = chat_body(false, "cache this answer");
    let args = [
        "--token",
        CLIENT_KEY,
        "-r",
        "20",
        "-c",
        "1",
        "--workers",
        "1",
        "--cache",
    ];
    let run = bench(&proxy.url(), &body, &args).run();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let text = &run.stdout;
    assert!(
        text.contains("hit ratio 95.0% (hit: 19, miss: 1, bypass: 0)"),
        "{text}"
    );
    assert!(text.contains("Cache hit   p50 "), "{text}");
    assert!(text.contains("Cache miss  p50 "), "{text}");

    // The same POST without --cache now hits too: the shard holds it.
    let mut json_args = args[..8].to_vec();
    json_args.extend(["--output", "json"]);
    let run = bench(&proxy.url(), &body, &json_args).run();
    let report = run.json();
    assert_no_errors(&report);
    assert_eq!(count(&report, "/cache/hit"), 20, "{report:#}");
    assert_eq!(report["cache"]["hit_ratio"], json!(1.0));
    assert_eq!(count(&report, "/cache/hit_latency_us/count"), 20);
    assert_eq!(report["cache"]["miss_latency_us"], Value::Null);
}

#[test]
fn cache_runs_through_a_proxy_with_two_workers_hit_on_both_after_the_first_answer() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(2).start();
    let requests_before = mock.stat("requests");
    let body = chat_body(false, "cache this answer on every worker");
    // 24 connections: both proxy workers answer some (all but 2 times in
    // 2^24). The probe's answer is stored, and every worker has it for the
    // next request: one miss in the whole run.
    let args = [
        "--token",
        CLIENT_KEY,
        "-r",
        "80",
        "-c",
        "24",
        "--workers",
        "2",
        "--cache",
    ];
    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let report = bench(&proxy.url(), &body, &json_args).run().json();
    assert_no_errors(&report);
    let cache = &report["cache"];
    assert_eq!(
        (&cache["hit"], &cache["miss"], &cache["bypass"]),
        (&json!(79), &json!(1), &json!(0)),
        "{report:#}"
    );
    assert_eq!(cache["hit_ratio"], json!(79.0 / 80.0), "{report:#}");
    assert_eq!(cache["workers_answered"], 2, "{report:#}");
    assert_eq!(cache["without_worker"], 0, "{report:#}");
    let workers = cache["workers"].as_array().unwrap();
    let field =
        |name: &str| -> Vec<u64> { workers.iter().map(|w| w[name].as_u64().unwrap()).collect() };
    assert_eq!(field("worker"), [0, 1], "{report:#}");
    assert_eq!(field("hit").iter().sum::<u64>(), 79, "{report:#}");
    let mut misses = field("miss");
    misses.sort_unstable();
    assert_eq!(misses, [0, 1], "{report:#}");
    assert!(field("hit").iter().all(|&hits| hits > 0), "{report:#}");
    // /mock/stats is a request too.
    assert_eq!(mock.stat("requests") - requests_before, 2);

    // Again: every answer a hit, on both workers.
    let text = bench(&proxy.url(), &body, &args).run().ok().to_string();
    assert!(
        text.contains("Cache       hit ratio 100.0% (hit: 80, miss: 0, bypass: 0)\n"),
        "{text}"
    );
    let workers_line = text
        .lines()
        .find(|line| line.contains("proxy workers answered"))
        .unwrap_or_else(|| panic!("no worker line in {text}"));
    assert!(
        workers_line.starts_with("            2 proxy workers answered: #0 100.0% ("),
        "{text}"
    );
    assert!(workers_line.contains(", #1 100.0% ("), "{text}");
}

/// A 200 with the cache headers llm-proxy sends, as a raw HTTP/1.1 answer.
fn cached_answer(cache_headers: &str) -> Vec<u8> {
    let body = r#"{"ok":true}"#;
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{cache_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Request `n` of 33: the first 30 come from worker `n % 3`, each worker's
/// first answer a miss and request 5 (worker 2) a bypass; the last three
/// name no usable worker (none, past the cap, not a number).
fn three_workers(n: usize) -> Vec<u8> {
    let headers = match n {
        5 => "Cache-Status: llm-proxy; fwd=bypass\r\nX-PROXY-CACHE-WORKER: 2\r\n".to_string(),
        0..30 => format!(
            "X-PROXY-CACHE: {}\r\nX-PROXY-CACHE-WORKER: {}\r\n",
            if n < 3 { "miss" } else { "hit" },
            n % 3
        ),
        30 => "X-PROXY-CACHE: hit\r\n".to_string(),
        31 => "X-PROXY-CACHE: hit\r\nX-PROXY-CACHE-WORKER: 1024\r\n".to_string(),
        _ => "X-PROXY-CACHE: hit\r\nX-PROXY-CACHE-WORKER: two\r\n".to_string(),
    };
    cached_answer(&headers)
}

#[test]
fn cache_runs_report_the_hit_ratio_of_each_proxy_worker() {
    let body = chat_body(false, "cache this answer");
    let args = ["-r", "33", "-c", "4", "--workers", "2", "--cache"];

    let server = ScriptedUpstream::answering(three_workers);
    let run = bench(&server.url(), &body, &args).run();
    let text = run.ok();
    assert_eq!(server.requests().len(), 33);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("Cache       "))
        .unwrap_or_else(|| panic!("no cache line in {text}"));
    assert_eq!(
        lines[at..at + 3],
        [
            "Cache       hit ratio 87.9% (hit: 29, miss: 3, bypass: 1)",
            "            3 proxy workers answered: #0 90.0% (9/10), #1 90.0% (9/10), #2 80.0% (8/10, bypass: 1)",
            "            3 responses named no worker",
        ],
        "{text}"
    );
    assert!(lines[at + 3].starts_with("Cache hit   p50 "), "{text}");

    let server = ScriptedUpstream::answering(three_workers);
    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let report = bench(&server.url(), &body, &json_args).run().json();
    assert_no_errors(&report);
    let cache = &report["cache"];
    assert_eq!(
        (&cache["hit"], &cache["miss"], &cache["bypass"]),
        (&json!(29), &json!(3), &json!(1)),
        "{report:#}"
    );
    assert_eq!(cache["workers_answered"], 3, "{report:#}");
    assert_eq!(
        cache["workers"],
        json!([
            {"worker": 0, "hit": 9, "miss": 1, "bypass": 0, "hit_ratio": 0.9},
            {"worker": 1, "hit": 9, "miss": 1, "bypass": 0, "hit_ratio": 0.9},
            {"worker": 2, "hit": 8, "miss": 1, "bypass": 1, "hit_ratio": 0.8},
        ]),
        "{report:#}"
    );
    assert_eq!(cache["without_worker"], 3, "{report:#}");

    // A gateway that does not name its workers: the overall ratio alone.
    let server = ScriptedUpstream::answering(|_| cached_answer("X-PROXY-CACHE: hit\r\n"));
    let text = bench(&server.url(), &body, &args).run().ok().to_string();
    assert!(
        text.contains("Cache       hit ratio 100.0% (hit: 33, miss: 0, bypass: 0)\n"),
        "{text}"
    );
    assert!(!text.contains("worker"), "{text}");
    let report = bench(&server.url(), &body, &json_args).run().json();
    assert_eq!(report["cache"]["workers_answered"], 0, "{report:#}");
    assert_eq!(report["cache"]["workers"], json!([]), "{report:#}");
    assert_eq!(report["cache"]["without_worker"], 33, "{report:#}");
}
