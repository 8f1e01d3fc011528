//! `GET /metrics`: the counters of every worker, whichever worker answers
//! the scrape, adding up exactly to what was sent; `METRICS_TOKEN`
//! enforced; the text accepted by `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::litellm::{add_deployment, generate_key, prices};
use crate::common::*;
use serde_json::{Value, json};

const METRICS_TOKEN: &str = "mt-metrics-3c8e1f52";
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const CHAT: &str = "/v1/chat/completions";

/// The samples of one scrape: name, labels, value.
pub struct Samples(pub Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Self(samples)
    }

    /// The sum of the samples of `name` that have all the `labels` given.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }

    fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let sum = self.sum(name, labels);
        assert_eq!(sum.fract(), 0.0, "{name} {labels:?} = {sum}");
        sum as u64
    }

    /// The distinct values of `label` among the samples of `name`.
    fn values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .0
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// `a="x",b="y\"z"` (values with the text format's escapes).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {name} of {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn scrape(proxy: &Proxy) -> String {
    let response = proxy.call(Req::get("/metrics").auth(METRICS_TOKEN));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some(CONTENT_TYPE));
    response.text()
}

/// Pipes `text` to `promtool check metrics`; without promtool the test
/// fails, unless LLM_PROXY_SKIP_PROMTOOL=1.
pub fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) if std::env::var("LLM_PROXY_SKIP_PROMTOOL").as_deref() == Ok("1") => {
            eprintln!("promtool not runnable ({error}); skipped the promtool check");
            return;
        }
        Err(error) => panic!(
            "cannot run promtool ({error}): install it (Debian: apt-get install prometheus) \
             or set LLM_PROXY_SKIP_PROMTOOL=1 to skip this check"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics:\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_workers_requests_add_up_in_every_scrape() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .workers(2)
        .start();
    add_deployment(&proxy, "priced", &mock, prices(0.001, 0.002));
    let priced_key = generate_key(&proxy, json!({}));
    // Seeding (project, token), the model and the key.
    let manage_calls = 4;

    // The token is enforced; only GET and HEAD are served.
    proxy
        .call(Req::get("/metrics"))
        .assert_error(401, "invalid_metrics_token");
    proxy
        .call(Req::get("/metrics").auth("mt-wrong"))
        .assert_error(401, "invalid_metrics_token");
    let response = proxy.call(Req::post("/metrics", "{}").auth(METRICS_TOKEN));
    response.assert_error(405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    let mut conn = proxy.conn();
    conn.send(&Req::new("HEAD", "/metrics").auth(METRICS_TOKEN).bytes());
    let head = conn.read_head_response().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some(CONTENT_TYPE));
    assert!(head.body.is_empty());

    // The traffic, each request on a connection of its own, so that both
    // workers serve some.
    let plain = 6;
    for _ in 0..plain {
        let response = proxy.call(chat(false));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let response = proxy.call(chat(true));
    assert_eq!(response.status, 200);
    assert!(response.is_chunked());
    let invalid = 3;
    for _ in 0..invalid {
        proxy
            .call(Req::post(CHAT, chat_body(false, "hi")).auth("sk-not-a-key"))
            .assert_error(401, "invalid_api_key");
    }
    let missing = 2;
    for _ in 0..missing {
        proxy
            .call(Req::post(CHAT, chat_body(false, "hi")))
            .assert_error(401, "missing_api_key");
    }
    for _ in 0..2 {
        proxy
            .call(Req::get("/no-such-page"))
            .assert_error(404, "not_found");
    }
    // Not an endpoint of the provider: refused before the upstream.
    proxy
        .call(Req::get("/v1/no-such-endpoint").authed())
        .assert_error(404, "endpoint_not_allowed");
    let routed = 2;
    let (mut prompt, mut completion, mut spend) = (0, 0, 0.0);
    for _ in 0..routed {
        let body = json!({"model": "priced", "messages": [{"role": "user", "content": "sixteen chars!!!"}]});
        let response = proxy.call(Req::post(CHAT, body.to_string()).auth(&priced_key));
        assert_eq!(response.status, 200, "{}", response.text());
        let usage: Value = response.json()["usage"].clone();
        prompt += usage["prompt_tokens"].as_u64().unwrap();
        completion += usage["completion_tokens"].as_u64().unwrap();
        spend += response
            .header("x-litellm-response-cost")
            .unwrap()
            .parse::<f64>()
            .unwrap();
    }
    assert!(prompt > 0 && completion > 0 && spend > 0.0);

    // A request's counters are written just after its answer went out:
    // wait until the last ones are in.
    let mut scrapes = 0;
    let settled = wait_until(Duration::from_secs(10), || {
        let samples = Samples::parse(&scrape(&proxy));
        scrapes += 1;
        samples.count("llm_proxy_tokens_total", &[("model", "priced")]) == prompt + completion
            && samples.count("llm_proxy_requests_total", &[("route", CHAT)])
                == plain + 1 + invalid + missing + routed
            && samples.count("llm_proxy_requests_total", &[("route", "other")]) == 3
    });
    assert!(settled, "the counters never reached what was sent");

    // From now on every scrape, whichever worker answers it, adds up exactly.
    let mut answered_by = Vec::new();
    let mut previous: Option<Samples> = None;
    let mut last_text = String::new();
    while answered_by.len() < 50 && !(answered_by.contains(&0) && answered_by.contains(&1)) {
        let text = scrape(&proxy);
        let samples = Samples::parse(&text);
        let requests = "llm_proxy_requests_total";
        let count = |labels: &[(&str, &str)]| samples.count(requests, labels);
        assert_eq!(
            count(&[("route", CHAT), ("status", "200")]),
            plain + 1 + routed
        );
        assert_eq!(
            // Not a registered model: client input, never a label value.
            count(&[("route", CHAT), ("status", "200"), ("model", "other")]),
            plain + 1
        );
        assert_eq!(
            count(&[("route", CHAT), ("status", "200"), ("model", "priced")]),
            routed
        );
        assert_eq!(
            count(&[("route", CHAT), ("status", "401"), ("model", "")]),
            invalid + missing
        );
        assert_eq!(count(&[("route", "other"), ("status", "404")]), 3);
        assert_eq!(count(&[("route", "manage")]), manage_calls);
        assert_eq!(count(&[("route", "local"), ("status", "401")]), 2);
        assert_eq!(count(&[("route", "local"), ("status", "405")]), 1);
        // Every successful scrape before this one (the HEAD included).
        assert_eq!(
            count(&[("route", "local"), ("status", "200")]),
            1 + scrapes as u64
        );
        assert_eq!(
            samples.count("llm_proxy_request_duration_seconds_count", &[]),
            samples.count(requests, &[])
        );
        assert_eq!(
            samples.count(
                "llm_proxy_request_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            samples.count(requests, &[])
        );
        // Every request that reached the mock, and only those.
        assert_eq!(
            samples.count("llm_proxy_upstream_duration_seconds_count", &[]),
            plain + 1 + routed
        );
        assert_eq!(
            samples.count("llm_proxy_upstream_first_byte_seconds_count", &[]),
            plain + 1 + routed
        );
        let rejections = "llm_proxy_key_rejections_total";
        assert_eq!(
            samples.count(rejections, &[("reason", "invalid_api_key")]),
            invalid
        );
        assert_eq!(
            samples.count(rejections, &[("reason", "missing_api_key")]),
            missing
        );
        assert_eq!(
            samples.values(rejections, "reason"),
            ["invalid_api_key", "missing_api_key"]
        );
        let tokens = "llm_proxy_tokens_total";
        assert_eq!(
            samples.count(tokens, &[("model", "priced"), ("type", "prompt")]),
            prompt
        );
        assert_eq!(
            samples.count(tokens, &[("model", "priced"), ("type", "completion")]),
            completion
        );
        assert_eq!(samples.values(tokens, "model"), ["priced"]);
        let dollars = samples.sum("llm_proxy_spend_dollars_total", &[("model", "priced")]);
        assert!((dollars - spend).abs() < 1e-9, "{dollars} != {spend}");
        assert_eq!(samples.count("llm_proxy_cache_hits_total", &[]), 0);
        assert_eq!(samples.count("llm_proxy_workers", &[]), 2);
        assert_eq!(samples.count("llm_proxy_workers_reporting", &[]), 2);
        assert_eq!(
            samples.values("llm_proxy_active_connections", "worker"),
            ["0", "1"]
        );
        // At least this scrape's own connection is open.
        assert!(samples.count("llm_proxy_active_connections", &[]) >= 1);
        assert_eq!(
            samples.values("llm_proxy_build_info", "version"),
            [env!("CARGO_PKG_VERSION")]
        );

        // The worker whose scrape count went up answered the scrape before.
        if let Some(previous) = &previous {
            for worker in ["0", "1"] {
                let labels = [("route", "local"), ("status", "200"), ("worker", worker)];
                if samples.count(requests, &labels) > previous.count(requests, &labels) {
                    answered_by.push(worker.parse::<usize>().unwrap());
                }
            }
        }
        previous = Some(samples);
        scrapes += 1;
        last_text = text;
    }
    assert!(
        answered_by.contains(&0) && answered_by.contains(&1),
        "both workers answered scrapes: {answered_by:?}"
    );
    promtool_check(&last_text);
}

#[test]
fn without_a_token_metrics_are_open() {
    let proxy = Proxy::builder().unseeded().workers(1).start();
    let response = proxy.call(Req::get("/metrics"));
    assert_eq!(response.status, 200, "{}", response.text());
    let samples = Samples::parse(&response.text());
    assert_eq!(samples.count("llm_proxy_workers", &[]), 1);
    promtool_check(&response.text());
}

#[test]
fn metrics_can_be_turned_off() {
    let proxy = Proxy::builder()
        .unseeded()
        .workers(1)
        .env("METRICS_ENABLED", "false")
        .start();
    let response = proxy.call(Req::get("/metrics"));
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "not_found");
}

#[test]
fn the_event_log_and_its_dispatchers_are_in_the_metrics() {
    let mock = Mock::start();
    let db = TempDir::new("metrics-events");
    let db_arg = db.path().to_str().unwrap();
    let proxy = Proxy::for_mock(&mock).arg("--db").arg(db_arg).start();
    let sent = 5;
    for _ in 0..sent {
        assert_eq!(proxy.call(chat(false)).status, 200);
    }
    let scrape = || Samples::parse(&proxy.call(Req::get("/metrics")).text());
    // The writer appends in the background.
    assert!(
        wait_until(Duration::from_secs(10), || {
            scrape().count("llm_proxy_events_written_total", &[]) == sent
        }),
        "events written never reached {sent}"
    );
    // A dispatcher in another process, while the server runs.
    let sink = db.path().join("sink.jsonl");
    let sink_arg = sink.to_str().unwrap();
    let args = [
        "dispatcher",
        "--db",
        db_arg,
        "--service",
        "file",
        "--endpoint",
        sink_arg,
        "--name",
        "archive",
        "--once",
    ];
    let exited = run_command(db.path(), &args, &[], Duration::from_secs(60));
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);

    let text = proxy.call(Req::get("/metrics")).text();
    let samples = Samples::parse(&text);
    assert_eq!(samples.count("llm_proxy_events_emitted_total", &[]), sent);
    assert_eq!(samples.count("llm_proxy_events_dropped_total", &[]), 0);
    assert_eq!(
        samples.count("llm_proxy_event_log_last_sequence", &[]),
        sent
    );
    assert_eq!(
        samples.count(
            "llm_proxy_events_dispatched_total",
            &[("dispatcher", "archive")]
        ),
        sent
    );
    assert!(samples.count("llm_proxy_event_log_bytes", &[]) > 0);
    promtool_check(&text);
}
