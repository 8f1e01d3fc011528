//! The heads the proxy sends on: the client's request head rewritten for
//! the upstream, and the upstream's response head rewritten for the client.
//! Hop-by-hop fields are dropped in both directions; the framing fields are
//! never taken from the client, and no `Connection` option removes them.

use super::RequestHead;
use super::ResponseHead;
use super::body::Framing;
use super::head::{Field, listed_in_connection};
use super::io::{header, header_u64, push_u64};

/// Where a request goes and what it carries there instead of the client's
/// `Host` and `Authorization`.
pub struct Upstream<'a> {
    /// Prefix of every upstream path, e.g. `/openai` (empty for none).
    pub base_path: &'a str,
    /// The `Host` field value.
    pub authority: &'a str,
    /// The provider's key as whole header lines, each ending in CRLF, e.g.
    /// `Authorization: Bearer sk-...\r\n` or `x-api-key: ...\r\n`, with
    /// any fields the provider's dialect always wants; empty for an
    /// upstream that takes no key.
    pub auth_fields: &'a [u8],
    /// More whole header lines the gateway adds (a dialect's version
    /// field, say); empty for none.
    pub extra_fields: &'a [u8],
    /// The answer is read by the gateway (priced or translated): the
    /// client's `Accept-Encoding` is not sent, so that it comes uncompressed.
    pub identity: bool,
    /// Replaces the client's request target (a routed request's endpoint).
    pub target: Option<&'a [u8]>,
    /// The length of a body rewritten by the proxy: sent as
    /// `Content-Length` instead of the client's body's framing.
    pub body_length: Option<usize>,
}

/// Writes the head sent upstream for `head` (parsed from `buf`).
///
/// The framing is the proxy's own, from what it sends: `Content-Length`
/// of the body it rewrote or of the client's length-delimited body,
/// `Transfer-Encoding: chunked` for a chunked body (relayed with its chunk
/// boundaries, see `BodyTracker::relay`), `Content-Length: 0` for a method
/// that defines content sent without any. The client's framing fields,
/// `Host`, `Authorization` and the other provider key fields, `Expect` and
/// `X-Request-ID` are never copied.
pub fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    upstream: &Upstream,
    request_id: &str,
) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(upstream.base_path.as_bytes());
    out.extend_from_slice(upstream.target.unwrap_or_else(|| head.target.of(buf)));
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(upstream.authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        let name = name.of(buf);
        let field = Field::of(name);
        if field.is_owned()
            || field.is_hop_by_hop()
            || (upstream.identity && field == Field::AcceptEncoding)
            || listed_in_connection(buf, head.connection, name)
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.of(buf));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(upstream.auth_fields);
    out.extend_from_slice(upstream.extra_fields);
    match (upstream.body_length, head.framing) {
        (Some(length), _) => header_u64(out, "Content-Length", length as u64),
        (None, Framing::Length(length)) => header_u64(out, "Content-Length", length),
        (None, Framing::Chunked) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        (None, Framing::Empty | Framing::UntilClose) => {
            if matches!(
                head.method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            ) {
                out.extend_from_slice(b"Content-Length: 0\r\n");
            }
        }
    }
    out.extend_from_slice(b"X-Request-ID: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// What the gateway adds to a response head it sends on.
pub struct Stamp<'a> {
    pub request_id: &'a str,
    /// Unix ns when the request went upstream and when the head came back.
    pub upstream_times: (u64, u64),
    /// Further fields (a routed request's cost, say).
    pub extra: &'a [(&'a str, &'a [u8])],
}

/// Writes the response head sent to the client for `head` (parsed from
/// `buf`), with the request ID and the upstream timing fields.
pub fn write_client_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    stamp: &Stamp,
    close: bool,
    dechunk: bool,
) {
    status_line_with_reason(out, head.status, head.reason.of(buf));
    for (name, value) in &head.headers {
        let name = name.of(buf);
        let field = Field::of(name);
        // The framing stays whatever the upstream's `Connection` names: the
        // client reads the body as the proxy relays it.
        if field.is_hop_by_hop()
            || (!field.is_framing() && listed_in_connection(buf, head.connection, name))
            || (dechunk && field == Field::TransferEncoding)
        {
            continue;
        }
        if field == Field::XRequestId {
            // The gateway's ID is the request's ID; keep the provider's too.
            header(out, "X-Upstream-Request-ID", value.of(buf));
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.of(buf));
        out.extend_from_slice(b"\r\n");
    }
    header(out, "X-Request-ID", stamp.request_id.as_bytes());
    header_u64(out, "X-UPSTREAM-REQUEST-START", stamp.upstream_times.0);
    header_u64(out, "X-UPSTREAM-REQUEST-STOP", stamp.upstream_times.1);
    for (name, value) in stamp.extra {
        header(out, name, value);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body of a head the gateway writes itself is framed for the
/// client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OwnFraming {
    Length(usize),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client's stream).
    UntilClose,
}

/// Writes the head of an answer the gateway made from the upstream's (a
/// translated one): the status, the content type and framing of what the
/// gateway sends, the request ID and timing fields, and the provider's
/// request ID (`upstream_id`) as `X-Upstream-Request-ID`.
pub fn write_own_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    framing: OwnFraming,
    upstream_id: Option<&[u8]>,
    stamp: &Stamp,
    close: bool,
) {
    status_line_with_reason(out, status, b"");
    header(out, "Content-Type", content_type.as_bytes());
    match framing {
        OwnFraming::Length(length) => header_u64(out, "Content-Length", length as u64),
        OwnFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        OwnFraming::UntilClose => {}
    }
    if framing != OwnFraming::Length(0) && content_type.starts_with("text/event-stream") {
        out.extend_from_slice(b"Cache-Control: no-cache\r\n");
    }
    if let Some(id) = upstream_id {
        header(out, "X-Upstream-Request-ID", id);
    }
    header(out, "X-Request-ID", stamp.request_id.as_bytes());
    header_u64(out, "X-UPSTREAM-REQUEST-START", stamp.upstream_times.0);
    header_u64(out, "X-UPSTREAM-REQUEST-STOP", stamp.upstream_times.1);
    for (name, value) in stamp.extra {
        header(out, name, value);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 <status> <reason>`, with the canonical reason when the
/// upstream gave none.
pub fn status_line_with_reason(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, status.into());
    out.push(b' ');
    if reason.is_empty() {
        let canonical = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        out.extend_from_slice(canonical.as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Parsed;

    fn stamp(request_id: &str, upstream_times: (u64, u64)) -> Stamp<'_> {
        Stamp {
            request_id,
            upstream_times,
            extra: &[],
        }
    }

    #[test]
    fn request_head_for_the_upstream() {
        let raw = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer client\r\n\
Content-Type: application/json\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\
Expect: 100-continue\r\nX-Request-ID: theirs\r\nTE: trailers\r\nContent-Length: 2\r\n\r\n";
        let Ok(Parsed::Complete(head)) = RequestHead::parse(raw) else {
            panic!("does not parse")
        };
        let upstream = Upstream {
            base_path: "/openai",
            authority: "api.example.com",
            auth_fields: b"Authorization: Bearer sk-up\r\n",
            extra_fields: b"",
            identity: false,
            target: None,
            body_length: None,
        };
        let mut out = Vec::new();
        write_request_head(&mut out, raw, &head, &upstream, "req-1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /openai/v1/chat/completions?x=1 HTTP/1.1\r\nHost: api.example.com\r\n\
Content-Type: application/json\r\nAuthorization: Bearer sk-up\r\nContent-Length: 2\r\n\
X-Request-ID: req-1\r\n\r\n"
        );
    }

    #[test]
    fn a_client_never_sends_a_provider_key_field_upstream() {
        let raw = b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nx-api-key: sk-virtual\r\n\
API-Key: k2\r\nx-goog-api-key: k3\r\nAccept-Encoding: gzip\r\nContent-Length: 2\r\n\r\n";
        let Ok(Parsed::Complete(head)) = RequestHead::parse(raw) else {
            panic!("does not parse")
        };
        let mut upstream = Upstream {
            base_path: "",
            authority: "api.anthropic.com",
            auth_fields: b"x-api-key: sk-ant\r\n",
            extra_fields: b"anthropic-version: 2023-06-01\r\n",
            identity: true,
            target: Some(b"/v1/messages"),
            body_length: Some(5),
        };
        let mut out = Vec::new();
        write_request_head(&mut out, raw, &head, &upstream, "r");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\n\
x-api-key: sk-ant\r\nanthropic-version: 2023-06-01\r\nContent-Length: 5\r\n\
X-Request-ID: r\r\n\r\n"
        );
        // An answer the gateway only relays may come compressed.
        upstream.identity = false;
        let mut out = Vec::new();
        write_request_head(&mut out, raw, &head, &upstream, "r");
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\r\nAccept-Encoding: gzip\r\n")
        );
    }

    fn upstream_head(raw: &[u8], body_length: Option<usize>) -> String {
        let Ok(Parsed::Complete(head)) = RequestHead::parse(raw) else {
            panic!("does not parse")
        };
        let upstream = Upstream {
            base_path: "",
            authority: "up",
            auth_fields: b"Authorization: Bearer sk-up\r\n",
            extra_fields: b"",
            identity: false,
            target: None,
            body_length,
        };
        let mut out = Vec::new();
        write_request_head(&mut out, raw, &head, &upstream, "r");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_framing_sent_upstream_is_the_proxys_own() {
        // The client's spelling of its framing is not copied: the proxy
        // writes the framing of what it sends.
        let chunked = b"POST /v1/x HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  CHUNKED \r\n\r\n";
        assert_eq!(
            upstream_head(chunked, None),
            "POST /v1/x HTTP/1.1\r\nHost: up\r\nAuthorization: Bearer sk-up\r\n\
Transfer-Encoding: chunked\r\nX-Request-ID: r\r\n\r\n"
        );
        let twice =
            b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(
            upstream_head(twice, None),
            "POST /v1/x HTTP/1.1\r\nHost: up\r\nAuthorization: Bearer sk-up\r\n\
Content-Length: 7\r\nX-Request-ID: r\r\n\r\n"
        );
        // A rewritten body has its own length, whatever the client's framing.
        assert!(upstream_head(chunked, Some(12)).contains("\r\nContent-Length: 12\r\n"));
        assert!(!upstream_head(chunked, Some(12)).contains("chunked"));
        // No body: a POST says so, a GET says nothing.
        let empty_post = b"POST /v1/x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(upstream_head(empty_post, None).contains("\r\nContent-Length: 0\r\n"));
        let get = b"GET /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
        assert!(!upstream_head(get, None).contains("Content-Length"));
    }

    #[test]
    fn an_upstream_connection_option_never_removes_the_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: content-length, transfer-encoding, x-a\r\n\
Content-Length: 2\r\nX-A: 1\r\n\r\n";
        let Ok(Parsed::Complete(head)) = ResponseHead::parse(raw) else {
            panic!("does not parse")
        };
        let mut out = Vec::new();
        write_client_head(&mut out, raw, &head, &stamp("r", (1, 2)), false, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nContent-Length: 2\r\n"), "{text}");
        assert!(!text.contains("X-A"), "{text}");
    }

    #[test]
    fn response_head_for_the_client() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\
Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-request-id: req_up\r\nCache-Control: no-cache\r\n\r\n";
        let Ok(Parsed::Complete(head)) = ResponseHead::parse(raw) else {
            panic!("does not parse")
        };
        let mut out = Vec::new();
        write_client_head(
            &mut out,
            raw,
            &head,
            &stamp("req-1", (12, 3456)),
            false,
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\
X-Upstream-Request-ID: req_up\r\nCache-Control: no-cache\r\nX-Request-ID: req-1\r\n\
X-UPSTREAM-REQUEST-START: 12\r\nX-UPSTREAM-REQUEST-STOP: 3456\r\n\r\n"
        );
        let mut out = Vec::new();
        write_client_head(
            &mut out,
            raw,
            &head,
            &stamp("req-1", (12, 3456)),
            true,
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
X-Upstream-Request-ID: req_up\r\nCache-Control: no-cache\r\nX-Request-ID: req-1\r\n\
X-UPSTREAM-REQUEST-START: 12\r\nX-UPSTREAM-REQUEST-STOP: 3456\r\nConnection: close\r\n\r\n"
        );
        let raw = b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n";
        let Ok(Parsed::Complete(head)) = ResponseHead::parse(raw) else {
            panic!("does not parse")
        };
        let mut out = Vec::new();
        write_client_head(&mut out, raw, &head, &stamp("r", (1, 2)), false, false);
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"));
    }
}
