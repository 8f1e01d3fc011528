//! Request and response heads, parsed once with `httparse` into spans of the
//! connection's read buffer, so nothing is copied or allocated per header.

use super::body::Framing;

/// Most headers accepted in one message head.
pub const MAX_HEADERS: usize = 100;

/// A byte range inside the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn within(buf: &[u8], part: &[u8]) -> Self {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Self {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed HTTP head: {0}")]
    Malformed(&'static str),
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("unsupported transfer coding")]
    UnsupportedTransferEncoding,
}

impl From<httparse::Error> for HeadError {
    fn from(error: httparse::Error) -> Self {
        match error {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid status line"),
            httparse::Error::Token => HeadError::Malformed("invalid token"),
            httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
        }
    }
}

/// What the framing-related header fields of a message say.
#[derive(Debug, Default, Clone)]
struct FieldSummary {
    content_length: Option<u64>,
    chunked: bool,
    connection: Option<Span>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

fn summarize(buf: &[u8], headers: &[(Span, Span)]) -> Result<FieldSummary, HeadError> {
    let mut summary = FieldSummary::default();
    let mut transfer_encoding = false;
    for (name, value) in headers {
        let name = name.of(buf);
        let value_bytes = value.of(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_content_length(value_bytes)
                .ok_or(HeadError::Malformed("invalid Content-Length"))?;
            if summary.content_length.is_some_and(|seen| seen != length) {
                return Err(HeadError::Malformed("conflicting Content-Length fields"));
            }
            summary.content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only "chunked" alone is supported; anything else cannot be framed.
            if transfer_encoding || !trim(value_bytes).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
            transfer_encoding = true;
            summary.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            summary.connection = Some(*value);
            for token in tokens(value_bytes) {
                summary.close |= token.eq_ignore_ascii_case(b"close");
                summary.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            summary.expect_continue = trim(value_bytes).eq_ignore_ascii_case(b"100-continue");
        }
    }
    if summary.chunked && summary.content_length.is_some() {
        // RFC 9112 §6.3: a request smuggling vector; refuse rather than guess.
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    Ok(summary)
}

fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = trim(value);
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

pub fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Comma-separated tokens of a list-valued header field.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) that a proxy must not forward.
/// `Transfer-Encoding` is handled apart because the proxy keeps the framing.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP_BY_HOP: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    ];
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether the `Connection` field lists `name` as hop-by-hop.
pub fn listed_in_connection(buf: &[u8], connection: Option<Span>, name: &[u8]) -> bool {
    connection.is_some_and(|value| tokens(value.of(buf)).any(|t| t.eq_ignore_ascii_case(name)))
}

/// Outcome of parsing a possibly incomplete head.
pub enum Parsed<T> {
    Complete(T),
    Partial,
}

/// A parsed request head; spans point into the buffer it was parsed from.
#[derive(Debug)]
pub struct RequestHead {
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
    pub method: http::Method,
    pub target: Span,
    pub http10: bool,
    pub headers: Vec<(Span, Span)>,
    pub framing: Framing,
    /// The `Connection` field's value, to drop the fields it lists.
    pub connection: Option<Span>,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    pub fn parse(buf: &[u8]) -> Result<Parsed<Self>, HeadError> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut raw);
        let len = match request.parse(buf)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(Parsed::Partial),
        };
        let method = request
            .method
            .ok_or(HeadError::Malformed("missing method"))?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid method"))?;
        let target = request.path.ok_or(HeadError::Malformed("missing target"))?;
        if !target.starts_with('/') {
            return Err(HeadError::Malformed(
                "request target must be an absolute path",
            ));
        }
        let target = Span::within(buf, target.as_bytes());
        let http10 = request.version == Some(0);
        let headers: Vec<(Span, Span)> = request
            .headers
            .iter()
            .map(|h| {
                (
                    Span::within(buf, h.name.as_bytes()),
                    Span::within(buf, h.value),
                )
            })
            .collect();
        let summary = summarize(buf, &headers)?;
        let framing = if summary.chunked {
            Framing::Chunked
        } else {
            match summary.content_length {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            }
        };
        let keep_alive = if http10 {
            summary.keep_alive && !summary.close
        } else {
            !summary.close
        };
        Ok(Parsed::Complete(Self {
            len,
            method,
            target,
            http10,
            headers,
            framing,
            connection: summary.connection,
            keep_alive,
            expect_continue: summary.expect_continue && !http10,
        }))
    }

    /// The request target without the query string.
    pub fn path<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let target = self.target.of(buf);
        match target.iter().position(|&b| b == b'?') {
            Some(end) => &target[..end],
            None => target,
        }
    }

    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.of(buf))
    }

    pub fn has_body(&self) -> bool {
        self.framing != Framing::Empty
    }
}

/// A parsed response head from an upstream.
#[derive(Debug)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub reason: Span,
    pub headers: Vec<(Span, Span)>,
    pub connection: Option<Span>,
    content_length: Option<u64>,
    chunked: bool,
    /// Whether the upstream connection may carry another request afterwards.
    pub reusable: bool,
}

impl ResponseHead {
    pub fn parse(buf: &[u8]) -> Result<Parsed<Self>, HeadError> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut raw);
        let len = match response.parse(buf)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(Parsed::Partial),
        };
        let status = response
            .code
            .ok_or(HeadError::Malformed("missing status"))?;
        let reason = Span::within(buf, response.reason.unwrap_or("").as_bytes());
        let http10 = response.version == Some(0);
        let headers: Vec<(Span, Span)> = response
            .headers
            .iter()
            .map(|h| {
                (
                    Span::within(buf, h.name.as_bytes()),
                    Span::within(buf, h.value),
                )
            })
            .collect();
        let summary = summarize(buf, &headers)?;
        let reusable = if http10 {
            summary.keep_alive && !summary.close
        } else {
            !summary.close
        };
        Ok(Parsed::Complete(Self {
            len,
            status,
            reason,
            headers,
            connection: summary.connection,
            content_length: summary.content_length,
            chunked: summary.chunked,
            reusable,
        }))
    }

    /// Informational responses (other than 101) precede the real one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Body framing of this response to a request with `method` (RFC 9112 §6.3).
    pub fn framing(&self, method: &http::Method) -> Framing {
        if *method == http::Method::HEAD || self.status == 204 || self.status == 304 {
            Framing::Empty
        } else if self.chunked {
            Framing::Chunked
        } else {
            match self.content_length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> Result<RequestHead, HeadError> {
        match RequestHead::parse(raw)? {
            Parsed::Complete(head) => Ok(head),
            Parsed::Partial => panic!("partial"),
        }
    }

    #[test]
    fn parses_request_framing_and_connection() {
        let raw = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: close, X-Foo\r\n\r\nbody";
        let head = request(raw).unwrap();
        assert_eq!(head.len, raw.len() - 4);
        assert_eq!(head.method, http::Method::POST);
        assert_eq!(head.path(raw), b"/v1/chat/completions");
        assert_eq!(head.framing, Framing::Length(12));
        assert!(!head.keep_alive);
        assert!(listed_in_connection(raw, head.connection, b"x-foo"));
        assert_eq!(head.header(raw, "host"), Some(&b"a"[..]));
    }

    #[test]
    fn http10_defaults_to_close() {
        let head = request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!head.keep_alive);
        let head = request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(head.keep_alive);
    }

    #[test]
    fn rejects_smuggling_shapes() {
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(request(both), Err(HeadError::Malformed(_))));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(request(two), Err(HeadError::Malformed(_))));
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            request(gzip).unwrap_err(),
            HeadError::UnsupportedTransferEncoding
        );
        let sign = b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n";
        assert!(matches!(request(sign), Err(HeadError::Malformed(_))));
        let absolute = b"GET http://x/ HTTP/1.1\r\n\r\n";
        assert!(matches!(request(absolute), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn response_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let Parsed::Complete(head) = ResponseHead::parse(raw).unwrap() else {
            panic!("partial")
        };
        assert_eq!(head.framing(&http::Method::POST), Framing::Chunked);
        assert_eq!(head.framing(&http::Method::HEAD), Framing::Empty);
        assert!(head.reusable);
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        let Parsed::Complete(head) = ResponseHead::parse(raw).unwrap() else {
            panic!("partial")
        };
        assert_eq!(head.framing(&http::Method::GET), Framing::UntilClose);
        assert!(!head.reusable);
    }
}
