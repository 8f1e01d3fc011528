//! A full disk under the data directory (a small tmpfs, mounted here: the
//! test runs as root): requests are still answered, the events that could
//! not be written are counted in `/metrics` and stand in the log as a gap
//! record the dispatcher reports, management writes answer 507 "no space
//! left on device", and everything works again once there is room.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    mount: PathBuf,
    _dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = TempDir::new("full-disk");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("make the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test fills a disk of its own: it mounts a tmpfs, which needs root"
        );
        Tmpfs { mount, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Writes `path` until the file system has no room left, then gives
/// `room` bytes back: a write larger than that is cut short (which LMDB
/// reports as EIO), the ones after it fail with ENOSPC.
fn fill(path: &Path, room: u64) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let bytes = vec![0xA5u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let error = file.write_all(&[0]).expect_err("the disk is full");
    assert_eq!(error.raw_os_error(), Some(28), "{error}"); // ENOSPC
    let length = file.metadata().expect("the filler's size").len();
    file.set_len(length - room).expect("give some room back");
}

/// The sum of every sample of `name` in a `/metrics` page whose labels
/// include `label` (`""`: any).
fn metric(page: &str, name: &str, label: &str) -> u64 {
    page.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && line.contains(label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

struct EventCounts {
    emitted: u64,
    written: u64,
    dropped: u64,
    /// Of `dropped`, those the writer could not write.
    write_failed: u64,
}

fn event_counts(proxy: &Proxy) -> EventCounts {
    let page = proxy.call(Req::get("/metrics")).text();
    EventCounts {
        emitted: metric(&page, "llm_proxy_events_emitted_total", ""),
        written: metric(&page, "llm_proxy_events_written_total", ""),
        dropped: metric(&page, "llm_proxy_events_dropped_total", ""),
        write_failed: metric(
            &page,
            "llm_proxy_events_dropped_total",
            r#"reason="write_failed""#,
        ),
    }
}

/// Waits until the writer has accounted for all `emitted` events: each
/// one written or counted as dropped.
fn settled(proxy: &Proxy, emitted: u64) -> EventCounts {
    let mut last = None;
    let done = wait_until(WAIT, || {
        let counts = event_counts(proxy);
        let done = counts.emitted == emitted && counts.written + counts.dropped == emitted;
        last = Some(counts);
        done
    });
    let last = last.expect("a scrape");
    assert!(
        done,
        "events not accounted for: {} emitted (expected {emitted}), {} written, {} dropped",
        last.emitted, last.written, last.dropped
    );
    last
}

/// Sends `count` chat requests with IDs `<prefix>-<n>`; all must be answered.
fn requests(proxy: &Proxy, prefix: &str, count: usize) -> Vec<String> {
    let mut conn = proxy.conn();
    (0..count)
        .map(|n| {
            let id = format!("{prefix}-{n}");
            let response = conn.roundtrip(&chat(false).header("X-Request-ID", &id).bytes());
            assert_eq!(response.status, 200, "{}", response.text());
            id
        })
        .collect()
}

fn sink_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a sink line is one JSON object"))
        .collect()
}

#[test]
fn a_full_disk_loses_events_visibly_answers_507_and_recovers() {
    let disk = Tmpfs::mount("48m");
    let db = disk.mount.join("data");
    let work = TempDir::new("full-disk-work");
    let sink = work.path().join("events.jsonl");
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock)
        .arg("--db")
        .arg(db.display().to_string())
        .start();

    let mut sent = requests(&proxy, "before", 5);
    settled(&proxy, 5);

    // The disk fills up, but for a few pages.
    let filler = disk.mount.join("filler");
    fill(&filler, 4096);
    // Management writes say what is wrong, every time.
    let mut refused = 0;
    for n in 0..50 {
        let response = proxy.manage(
            "POST",
            "/manage/projects",
            Some(json!({"name": format!("full-{n}"), "openai_api_key": "sk-full"})),
        );
        if response.status == 201 {
            continue;
        }
        response.assert_error(507, "insufficient_storage");
        let message = response.json()["error"]["message"].to_string();
        assert!(message.contains("no space left on device"), "{message}");
        refused += 1;
    }
    assert!(
        refused > 0,
        "every management write succeeded on a full disk"
    );
    sent.extend(requests(&proxy, "full", 200));
    let during = settled(&proxy, 205);
    assert!(
        during.dropped > 0,
        "no event was dropped on a full disk ({} written)",
        during.written
    );
    // Lost because the writes failed, not because the writer was behind.
    assert_eq!(during.write_failed, during.dropped);

    // Room again: everything works by itself.
    std::fs::remove_file(&filler).expect("free the disk");
    sent.extend(requests(&proxy, "after", 20));
    let after = settled(&proxy, 225);
    assert_eq!(
        after.dropped, during.dropped,
        "events dropped with room on the disk"
    );
    let created = proxy.manage(
        "POST",
        "/manage/projects",
        Some(json!({"name": "room-again", "openai_api_key": "sk-room"})),
    );
    assert_eq!(created.status, 201, "{}", created.text());

    // The dispatcher delivers the events and the gap records, and says so.
    let sent: BTreeSet<String> = sent.into_iter().collect();
    let mut stderr = String::new();
    let delivered = wait_until(WAIT, || {
        let exited = run_command(
            work.path(),
            &[
                "dispatcher",
                "--db",
                db.to_str().unwrap(),
                "--service",
                "file",
                "--endpoint",
                sink.to_str().unwrap(),
                "--once",
            ],
            &[],
            WAIT,
        );
        assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);
        stderr.push_str(&exited.stderr);
        let lines = sink_lines(&sink);
        let lost: u64 = lines
            .iter()
            .filter_map(|l| l["gap"]["lost_events"].as_u64())
            .sum();
        let events = lines.iter().filter(|l| l["request_id"].is_string()).count();
        lost == during.dropped && events as u64 == after.written
    });
    let lines = sink_lines(&sink);
    assert!(delivered, "the sink holds: {lines:#?}");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());
    let with_event: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l["request_id"].as_str().map(String::from))
        .collect();
    assert!(with_event.is_subset(&sent));
    let without_event = sent.difference(&with_event).count() as u64;
    assert_eq!(without_event, during.dropped);
    let gaps: Vec<&Value> = lines.iter().filter(|l| l.get("gap").is_some()).collect();
    assert!(!gaps.is_empty());
    for gap in &gaps {
        assert!(gap.get("request_id").is_none(), "{gap}");
        assert!(gap["gap"]["first_lost_at"].as_str().is_some(), "{gap}");
    }
    assert!(
        stderr.contains("gap in the event log"),
        "the dispatcher did not report the gap: {stderr}"
    );
    proxy.stop();
}
