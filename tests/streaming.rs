//! Server-sent event streams through the proxy: relayed event by event,
//! with the gateway's headers, and the ways a stream can end early.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::io;
use std::time::Duration;

use common::*;

fn stream_request(chunks: u32, interval_ms: u64) -> Req {
    chat(true)
        .header("x-mock-stream-chunks", chunks.to_string())
        .header("x-mock-chunk-interval-ms", interval_ms.to_string())
}

fn payloads(events: &[TimedEvent]) -> Vec<String> {
    events.iter().map(|e| e.data.clone()).collect()
}

#[test]
fn sse_events_are_relayed_as_they_are_produced() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    conn.send(&stream_request(10, 200).bytes());
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert!(head.is_chunked(), "{:?}", head.headers);
    let (events, end) = read_sse(&mut conn);
    end.expect("the stream ends with the terminating chunk");
    assert_complete_stream(&payloads(&events), 10);

    // The mock spends 10 x 200 ms producing the stream. Had the proxy
    // buffered it, every event would arrive at once; relayed as produced,
    // the first delta arrives while at least a second of events is still to come.
    let first = events.first().unwrap().at;
    let last_delta = events[9].at;
    let done = events.last().unwrap().at;
    assert!(
        last_delta.duration_since(first) >= Duration::from_secs(1),
        "deltas arrived within {:?} of each other",
        last_delta.duration_since(first)
    );
    assert!(done.duration_since(first) >= Duration::from_secs(1));
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));

    // The terminating chunk was relayed exactly: the connection is reusable.
    let next = conn.roundtrip(&chat(false).bytes());
    assert_eq!(next.status, 200);
    assert_eq!(mock.stat("streams_completed"), 1);
}

#[test]
fn streamed_response_carries_request_id_and_timing_headers() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    let sent = unix_nanos();
    conn.send(
        &stream_request(8, 150)
            .header("x-mock-latency-ms", "200")
            .header("X-Request-ID", "stream-req-7")
            .bytes(),
    );
    let head = conn.read_head().unwrap();
    let head_received = unix_nanos();
    assert_eq!(head.status, 200);
    assert_eq!(head.header_all("x-request-id"), ["stream-req-7"]);
    let (start, stop) = head.timing();
    assert!(
        sent <= start && start <= stop && stop <= head_received,
        "{sent} {start} {stop} {head_received}"
    );
    assert!(
        stop - start >= 200_000_000,
        "the mock waited 200 ms before its head"
    );

    let (events, end) = read_sse(&mut conn);
    end.unwrap();
    assert_complete_stream(&payloads(&events), 8);
    // STOP marks the response head, not the end of the stream.
    let done = events.last().unwrap().unix_ns;
    assert!(
        done - stop >= 1_000_000_000,
        "STOP {stop} is too close to the end {done}"
    );
}

#[test]
fn client_disconnect_mid_stream_aborts_the_upstream_stream() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).workers(1).start();

    let mut conn = proxy.conn();
    conn.send(&stream_request(60, 100).bytes());
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    let first = conn.next_chunk().unwrap().expect("a first event");
    assert!(first.starts_with(b"data: "));
    drop(conn);

    assert!(
        wait_until(Duration::from_secs(15), || mock.stat("streams_aborted")
            == 1),
        "the upstream stream was not aborted: {}",
        mock.stats()
    );
    assert_eq!(mock.stat("streams_completed"), 0);

    // The proxy keeps serving, streams included.
    assert_eq!(proxy.call(chat(false)).status, 200);
    let mut conn = proxy.conn();
    conn.send(&stream_request(3, 0).bytes());
    assert_eq!(conn.read_head().unwrap().status, 200);
    let (events, end) = read_sse(&mut conn);
    end.unwrap();
    assert_complete_stream(&payloads(&events), 3);
    assert_eq!(mock.stat("streams_completed"), 1);
}

#[test]
fn client_hang_up_before_the_response_head_cancels_the_upstream_request() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let mut conn = proxy.conn();
    // The mock waits 500 ms before answering, then streams for 3 s.
    conn.send(
        &stream_request(30, 100)
            .header("x-mock-latency-ms", "500")
            .bytes(),
    );
    drop(conn);

    assert!(
        wait_until(Duration::from_secs(15), || mock.stat("streams_aborted")
            == 1),
        "the upstream request ran on for nobody: {}",
        mock.stats()
    );
    assert_eq!(mock.stat("streams_completed"), 0);
    assert_eq!(proxy.call(Req::get("/v1/models").authed()).status, 200);
}

#[test]
fn upstream_cut_mid_stream_truncates_the_client_response() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    for interval in [0, 50] {
        let mut conn = proxy.conn();
        conn.send(
            &stream_request(10, interval)
                .header("x-mock-cut-after", "3")
                .bytes(),
        );
        let head = conn.read_head().unwrap();
        assert_eq!(head.status, 200);
        let (events, end) = read_sse(&mut conn);
        let error = end.expect_err("the body must not end with a terminating chunk");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
        let payloads = payloads(&events);
        assert_eq!(payloads.len(), 3, "interval {interval}: {payloads:?}");
        assert_eq!(sse_content(&payloads), mock_text(3));
        assert!(!payloads.iter().any(|p| p == "[DONE]"));
        // ...and the connection is closed.
        conn.assert_closed();
    }
    assert_eq!(mock.stat("streams_aborted"), 2);
    assert_eq!(proxy.call(chat(false)).status, 200);
}

#[test]
fn http10_client_gets_a_dechunked_stream_ending_at_close() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let mut conn = proxy.conn();

    conn.send(&stream_request(4, 20).version("HTTP/1.0").bytes());
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    assert!(
        head.header("transfer-encoding").is_none(),
        "{:?}",
        head.headers
    );
    assert!(head.header("content-length").is_none());
    assert!(head.closes());
    let body = conn.read_until_close().unwrap();
    let payloads = sse_data(&body);
    assert_complete_stream(&payloads, 4);
    assert!(String::from_utf8_lossy(&body).ends_with("data: [DONE]\n\n"));
}

#[test]
fn stream_silent_longer_than_the_request_timeout_is_cut() {
    let mock = Mock::start();
    let proxy = Proxy::builder()
        .api_config(api_config(&mock.url(), &[("request", "500ms")]))
        .start();
    let mut conn = proxy.conn();

    // One event, then 3 s of silence.
    conn.send(&stream_request(3, 3000).bytes());
    let head = conn.read_head().unwrap();
    assert_eq!(head.status, 200);
    let (events, end) = read_sse(&mut conn);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    let payloads = payloads(&events);
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(sse_content(&payloads), mock_text(1));
    conn.assert_closed();
}

#[test]
fn long_stream_that_keeps_sending_is_not_cut() {
    let mock = Mock::start();
    let proxy = Proxy::builder()
        .api_config(api_config(&mock.url(), &[("request", "500ms")]))
        .start();
    let mut conn = proxy.conn();

    // 12 x 200 ms: far longer than 500 ms in total, never silent that long.
    conn.send(&stream_request(12, 200).bytes());
    assert_eq!(conn.read_head().unwrap().status, 200);
    let (events, end) = read_sse(&mut conn);
    end.expect("a stream that keeps sending is never cut");
    assert_complete_stream(&payloads(&events), 12);
}

#[test]
fn concurrent_streams_are_relayed_independently() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();

    let threads: Vec<_> = (0..6)
        .map(|i| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let chunks = 4 + i;
                conn.send(&stream_request(chunks, 50).bytes());
                assert_eq!(conn.read_head().unwrap().status, 200);
                let (events, end) = read_sse(&mut conn);
                end.unwrap();
                assert_complete_stream(&payloads(&events), chunks as usize);
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("stream thread");
    }
    assert_eq!(mock.stat("streams_completed"), 6);
    assert_eq!(mock.stat("streams_aborted"), 0);
}
