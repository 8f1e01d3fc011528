//! Every node names itself in what it emits: `node` in each record of the
//! event log (request events, budget alerts), as written, and the `node`
//! label on every series of `/metrics`; `NODE_ID`, or the host's name and
//! the port bound. Records written before records named their node are
//! still delivered, without it.

use std::path::Path;
use std::time::Duration;

use crate::common::litellm::{add_deployment, generate_key, prices};
use crate::common::*;
use crate::metrics::{Samples, promtool_check};
use serde_json::{Value, json};

/// The records of a JSONL sink, in file order, with their lines.
fn sink_records(path: &Path) -> Vec<(String, Value)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|line| {
            let value = serde_json::from_str(line).expect("a sink line is one JSON object");
            (line.to_string(), value)
        })
        .collect()
}

/// `/metrics`, every sample of which must carry `node="<node>"`; returns
/// the page.
#[track_caller]
fn assert_every_sample_names(proxy: &Proxy, node: &str) -> String {
    let response = proxy.call(Req::get("/metrics"));
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let samples = Samples::parse(&text);
    assert!(samples.0.len() > 30, "{text}");
    for (name, labels, _) in &samples.0 {
        assert_eq!(
            labels.get("node").map(String::as_str),
            Some(node),
            "{name} {labels:?}"
        );
    }
    text
}

/// The host's name as the server reads it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("/proc/sys/kernel/hostname")
        .trim()
        .to_string()
}

#[test]
fn events_alerts_and_metrics_carry_node_id() {
    let mock = Mock::start();
    let dir = TempDir::new("node-id");
    let data = dir.path().join("data");
    let sink = dir.path().join("events.jsonl");
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(data.to_str().unwrap())
        .env("NODE_ID", "edge-7")
        .env("FILE_EVENT_LOG", sink.to_str().unwrap())
        .start();
    // A request event.
    let request = chat(false).header("X-Request-ID", "node-1");
    assert_eq!(proxy.call(request).status, 200);
    // A budget alert: a soft budget the first priced request crosses.
    add_deployment(&proxy, "priced", &mock, prices(0.001, 0.002));
    let key = generate_key(&proxy, json!({"soft_budget": 1e-9}));
    let body = json!({"model": "priced", "messages": [{"role": "user", "content": "hi"}]});
    let routed = proxy.call(
        Req::post("/v1/chat/completions", body.to_string())
            .auth(&key)
            .header("X-Request-ID", "node-2"),
    );
    assert_eq!(routed.status, 200, "{}", routed.text());

    // Delivered by the server's own file dispatcher while it runs.
    let delivered = wait_until(Duration::from_secs(20), || {
        let records = sink_records(&sink);
        records.iter().any(|(_, r)| r["request_id"] == "node-2")
            && records.iter().any(|(_, r)| r.get("budget_alert").is_some())
    });
    assert!(delivered, "{:#?}", sink_records(&sink));
    let records = sink_records(&sink);
    for (line, record) in &records {
        assert_eq!(record["node"], "edge-7", "{line}");
        assert!(line.contains(r#""node":"edge-7""#), "{line}");
    }
    let event = &records
        .iter()
        .find(|(_, r)| r["request_id"] == "node-1")
        .expect("the event of node-1")
        .1;
    assert_eq!(event["status"], 200);
    // Next to the worker: which node, then which thread of it.
    let fields: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let at = fields.iter().position(|f| *f == "node").unwrap();
    assert_eq!(fields[at + 1], "worker", "{fields:?}");
    let alert = &records
        .iter()
        .find(|(_, r)| r.get("budget_alert").is_some())
        .unwrap()
        .1;
    assert_eq!(alert["budget_alert"]["kind"], "key");
    assert!(alert.get("request_id").is_none());

    // Every series of /metrics, and promtool takes the page.
    let text = assert_every_sample_names(&proxy, "edge-7");
    assert!(
        text.contains("llm_proxy_workers{node=\"edge-7\"} 2\n"),
        "{text}"
    );
    promtool_check(&text);
    proxy.stop();

    // The record as written: another dispatcher, reading the data dir after
    // the server is gone, gets the same node.
    let again = dir.path().join("again.jsonl");
    let args = [
        "dispatcher",
        "--db",
        data.to_str().unwrap(),
        "--service",
        "file",
        "--endpoint",
        again.to_str().unwrap(),
        "--once",
    ];
    let exited = run_command(dir.path(), &args, &[], Duration::from_secs(60));
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);
    let again = sink_records(&again);
    assert_eq!(again.len(), records.len(), "{again:#?}");
    assert!(
        again.iter().all(|(_, r)| r["node"] == "edge-7"),
        "{again:#?}"
    );
}

#[test]
fn without_node_id_the_node_is_the_host_and_the_port_bound() {
    let mock = Mock::start();
    let dir = TempDir::new("node-id-default");
    let data = dir.path().join("data");
    let sink = dir.path().join("events.jsonl");
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(data.to_str().unwrap())
        .env("FILE_EVENT_LOG", sink.to_str().unwrap())
        .workers(1)
        .start();
    // Started on port 0: the node names the port it got.
    let node = format!("{}:{}", host_name(), proxy.addr.port());
    assert_ne!(proxy.addr.port(), 0);
    assert_eq!(proxy.call(chat(false)).status, 200);
    let delivered = wait_until(Duration::from_secs(20), || !sink_records(&sink).is_empty());
    assert!(delivered, "no event delivered");
    let (line, event) = &sink_records(&sink)[0];
    assert_eq!(event["node"], node.as_str(), "{line}");
    let text = assert_every_sample_names(&proxy, &node);
    promtool_check(&text);
    proxy.stop();
}

#[test]
fn a_node_id_that_cannot_be_a_label_is_refused_at_start() {
    let exited = Proxy::builder()
        .unseeded()
        .env("NODE_ID", "edge\n7")
        .run_to_exit();
    exited.assert_one_line(1, "NODE_ID: control characters are not allowed");
    let exited = Proxy::builder()
        .unseeded()
        .env("NODE_ID", "n".repeat(129))
        .run_to_exit();
    exited.assert_one_line(1, "NODE_ID: at most 128 bytes");
}

/// A log holding records of the layouts written before records named their
/// node (an event, a gap record, a budget alert), then a server's: all are
/// delivered, in order, the old ones without `node`.
#[test]
fn records_written_before_nodes_were_named_are_delivered_without_one() {
    use llm_proxy::events::stored::{BudgetAlert, Gap, Raw, Stored};
    use llm_proxy::store::{EventLog, Money};

    let mock = Mock::start();
    let dir = TempDir::new("node-id-old-records");
    let data = dir.path().join("data");
    let old_event = Stored {
        node: None,
        request_id: "before-nodes",
        end_unix_ns: 1_796_000_000_000_000_000,
        duration_ns: 2_000_000,
        worker: 0,
        key_id: None,
        project_id: None,
        user_id: None,
        model: None,
        method: "POST",
        endpoint: Raw(b"/v1/chat/completions"),
        status: 200,
        error: None,
        upstream_ns: None,
        first_byte_ns: None,
        usage: None,
        cost_picodollars: 0,
        cache: "none",
        response_complete: true,
        request_body: None,
        response_body: None,
    };
    let gap = Gap {
        lost: 4,
        first_unix_ns: 1_796_000_000_000_000_000,
        last_unix_ns: 1_796_000_001_000_000_000,
    };
    let alert = BudgetAlert {
        kind: "key".into(),
        id: "k-1".into(),
        spend: Money(2_000_000_000_000),
        soft_budget: Money(1_000_000_000_000),
        at_unix_ns: 1_796_000_002_000_000_000,
    };
    // Each: its first byte, then bincode of the fields and nothing else.
    let old = |first: u8, fields: Vec<u8>| [vec![first], fields].concat();
    let records = [
        old(1, bincode::serialize(&old_event).unwrap()),
        old(0xFF, bincode::serialize(&gap).unwrap()),
        old(0xFE, bincode::serialize(&alert).unwrap()),
    ];
    {
        let log = EventLog::open(&data.join("events"), 1 << 30).unwrap();
        log.append(records.iter().map(Vec::as_slice)).unwrap();
    }

    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(data.to_str().unwrap())
        .env("NODE_ID", "edge-7")
        .start();
    let request = chat(false).header("X-Request-ID", "after-nodes");
    assert_eq!(proxy.call(request).status, 200);
    proxy.stop();

    let sink = dir.path().join("events.jsonl");
    let args = [
        "dispatcher",
        "--db",
        data.to_str().unwrap(),
        "--service",
        "file",
        "--endpoint",
        sink.to_str().unwrap(),
        "--once",
    ];
    let exited = run_command(dir.path(), &args, &[], Duration::from_secs(60));
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);
    let records: Vec<Value> = sink_records(&sink).into_iter().map(|(_, r)| r).collect();
    assert_eq!(records.len(), 4, "{records:#?}");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(records[0]["request_id"], "before-nodes");
    assert_eq!(records[0]["endpoint"], "/v1/chat/completions");
    assert_eq!(records[0]["latency"]["total_us"], 2000);
    assert_eq!(records[1]["gap"]["lost_events"], 4);
    assert_eq!(records[2]["budget_alert"]["id"], "k-1");
    assert_eq!(records[2]["budget_alert"]["spend"], 2.0);
    for old in &records[..3] {
        assert!(old.get("node").is_none(), "{old}");
        assert!(old.get("undecodable").is_none(), "{old}");
    }
    assert_eq!(records[3]["request_id"], "after-nodes");
    assert_eq!(records[3]["node"], "edge-7");
    // The dispatcher counted the old gap record's lost events.
    assert!(
        exited
            .stderr
            .contains("the server lost 4 events before seq 2"),
        "{}",
        exited.stderr
    );
}
