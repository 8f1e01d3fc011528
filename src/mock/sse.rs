//! Server-sent events as the mock writes them: a chunked `text/event-stream`
//! answer, one HTTP chunk per event, paced by the chunk interval.

use std::io::Write;

use monoio::io::AsyncWriteRent;

use super::{Behaviour, Mock, Next, send};

/// The head of a streamed answer, with the `x-mock-response-header` fields
/// and `extra` ones (a `Cache-Control` among the former replaces `no-cache`).
pub(super) fn start(out: &mut Vec<u8>, behaviour: &Behaviour, extra: &[(&str, &[u8])]) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n");
    let fields = behaviour.fields();
    if !fields
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("cache-control"))
    {
        out.extend_from_slice(b"Cache-Control: no-cache\r\n");
    }
    for (name, value) in fields.iter().chain(extra) {
        crate::http::io::header(out, name, value);
    }
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
}

/// Appends `data: <payload>\n\n` as one HTTP chunk.
pub(super) fn data(out: &mut Vec<u8>, payload: &[u8]) {
    let _ = write!(out, "{:x}\r\n", payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n\r\n");
}

/// Appends `event: <name>\ndata: <payload>\n\n` as one HTTP chunk.
pub(super) fn named(out: &mut Vec<u8>, name: &str, payload: &[u8]) {
    let _ = write!(out, "{:x}\r\n", name.len() + payload.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n\r\n");
}

/// Ends the chunked body and sends what is left; counts the stream as
/// completed or aborted.
pub(super) async fn finish<S: AsyncWriteRent>(
    mock: &Mock,
    stream: &mut S,
    out: &mut Vec<u8>,
) -> Next {
    out.extend_from_slice(b"0\r\n\r\n");
    let stats = &mock.stats;
    match send(stream, out).await {
        Next::KeepAlive => {
            stats
                .streams_completed
                .set(stats.streams_completed.get() + 1);
            Next::KeepAlive
        }
        Next::Close => abort(mock),
    }
}

/// Counts the stream as aborted; the connection closes.
pub(super) fn abort(mock: &Mock) -> Next {
    let stats = &mock.stats;
    stats.streams_aborted.set(stats.streams_aborted.get() + 1);
    Next::Close
}

/// After an event: with pacing, sends it and waits one interval. `Close`
/// when the client went away.
pub(super) async fn pace<S: AsyncWriteRent>(
    stream: &mut S,
    out: &mut Vec<u8>,
    behaviour: &Behaviour,
) -> Next {
    if behaviour.interval.is_zero() {
        return Next::KeepAlive;
    }
    if matches!(send(stream, out).await, Next::Close) {
        return Next::Close;
    }
    out.clear();
    monoio::time::sleep(behaviour.interval).await;
    Next::KeepAlive
}

/// Streams OpenAI-shaped chunks: `delta(i)` for each of the deltas, then
/// the `tail` events and `data: [DONE]`. `x-mock-cut-after` drops the
/// connection after that many deltas.
pub(super) async fn openai<S: AsyncWriteRent>(
    mock: &Mock,
    stream: &mut S,
    out: &mut Vec<u8>,
    behaviour: &Behaviour,
    delta: impl Fn(u32) -> Vec<u8>,
    tail: &[Vec<u8>],
) -> Next {
    let stats = &mock.stats;
    stats.streams_started.set(stats.streams_started.get() + 1);
    start(out, behaviour, &[]);
    for index in 0..behaviour.chunks {
        if behaviour.cut_after == Some(index) {
            // Flush what was promised so far, then drop the connection.
            let _ = send(stream, out).await;
            return abort(mock);
        }
        data(out, &delta(index));
        if matches!(pace(stream, out, behaviour).await, Next::Close) {
            return abort(mock);
        }
    }
    for event in tail {
        data(out, event);
    }
    data(out, b"[DONE]");
    finish(mock, stream, out).await
}
