//! Request and response heads, parsed once with `httparse` into spans of the
//! connection's read buffer, so nothing is copied or allocated per header.

use std::mem::MaybeUninit;

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
    /// A `Connection` option names a field the gateway owns.
    connection_names_owned: bool,
    /// A name like `Transfer_Encoding`: read as a framing field by some servers.
    framing_lookalike: bool,
}

fn summarize(buf: &[u8], headers: &[(Span, Span)]) -> Result<FieldSummary, HeadError> {
    let mut summary = FieldSummary::default();
    let mut transfer_encoding = false;
    for (name, value) in headers {
        let field = Field::of(name.of(buf));
        if field == Field::Other {
            continue;
        }
        let value_bytes = value.of(buf);
        match field {
            Field::ContentLength => {
                let length = parse_content_length(value_bytes)
                    .ok_or(HeadError::Malformed("invalid Content-Length"))?;
                if summary.content_length.is_some_and(|seen| seen != length) {
                    return Err(HeadError::Malformed("conflicting Content-Length fields"));
                }
                summary.content_length = Some(length);
            }
            Field::TransferEncoding => {
                // Only "chunked" alone is supported; anything else cannot be framed.
                if transfer_encoding || !trim(value_bytes).eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::UnsupportedTransferEncoding);
                }
                transfer_encoding = true;
                summary.chunked = true;
            }
            Field::Connection => {
                summary.connection = Some(*value);
                for token in tokens(value_bytes) {
                    summary.close |= token.eq_ignore_ascii_case(b"close");
                    summary.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    summary.connection_names_owned |= Field::of(token).is_owned();
                }
            }
            Field::FramingLookalike => summary.framing_lookalike = true,
            Field::Expect => {
                summary.expect_continue = trim(value_bytes).eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
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
    // At most 19 digits: always fits in a u64.
    Some(
        value
            .iter()
            .fold(0u64, |length, digit| length * 10 + u64::from(digit - b'0')),
    )
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

/// The header fields the proxy acts on. Every field of every head is looked
/// up here (several times per request), so a name is told apart by its
/// length and first letter and then compared with one candidate at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Authorization,
    Connection,
    ContentLength,
    Expect,
    Host,
    KeepAlive,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyConnection,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    XRequestId,
    /// `api-key`, `x-api-key`, `x-goog-api-key`: how Azure, Anthropic and
    /// Gemini take a provider key. The gateway sends its own; a client's
    /// (its virtual key, for an Anthropic client) never goes upstream.
    ProviderKey,
    /// `Accept-Encoding`: dropped where the gateway reads the answer.
    AcceptEncoding,
    /// `Content_Length` or `Transfer_Encoding`, any case: not a framing
    /// field, but some servers read `_` as `-`.
    FramingLookalike,
    /// Any other field.
    Other,
}

impl Field {
    pub fn of(name: &[u8]) -> Self {
        let Some(&first) = name.first() else {
            return Field::Other;
        };
        // Length and first letter leave at most one candidate.
        let (candidate, field): (&[u8], Field) = match (name.len(), first | 0x20) {
            (2, b't') => (b"te", Field::Te),
            (4, b'h') => (b"host", Field::Host),
            (6, b'e') => (b"expect", Field::Expect),
            (7, b'a') => (b"api-key", Field::ProviderKey),
            (7, b't') => (b"trailer", Field::Trailer),
            (7, b'u') => (b"upgrade", Field::Upgrade),
            (10, b'c') => (b"connection", Field::Connection),
            (10, b'k') => (b"keep-alive", Field::KeepAlive),
            (9, b'x') => (b"x-api-key", Field::ProviderKey),
            (12, b'x') => (b"x-request-id", Field::XRequestId),
            (13, b'a') => (b"authorization", Field::Authorization),
            (14, b'c') => (b"content-length", Field::ContentLength),
            (14, b'x') => (b"x-goog-api-key", Field::ProviderKey),
            (15, b'a') => (b"accept-encoding", Field::AcceptEncoding),
            (16, b'p') => (b"proxy-connection", Field::ProxyConnection),
            (17, b't') => (b"transfer-encoding", Field::TransferEncoding),
            (18, b'p') => (b"proxy-authenticate", Field::ProxyAuthenticate),
            (19, b'p') => (b"proxy-authorization", Field::ProxyAuthorization),
            _ => return Field::Other,
        };
        if token_eq_lowercase(name, candidate) {
            field
        } else if matches!(field, Field::ContentLength | Field::TransferEncoding)
            && underscore_for_dash(name, candidate)
        {
            // Only names of these two lengths and first letters get here.
            Field::FramingLookalike
        } else {
            Field::Other
        }
    }

    /// Fields whose meaning on the way upstream is the gateway's alone:
    /// the framing (computed from what the gateway sends), `Host`,
    /// `Authorization` and the other provider key fields (the provider's), `X-Request-ID` (the request's ID)
    /// and `Expect` (answered by the gateway). No `Connection` option may
    /// name them: the request is refused (RFC 9110 §7.6.1 forbids a sender
    /// to name a field meant for every recipient; docs/errors.md).
    pub fn is_owned(self) -> bool {
        matches!(
            self,
            Field::ContentLength
                | Field::TransferEncoding
                | Field::FramingLookalike
                | Field::Host
                | Field::Authorization
                | Field::ProviderKey
                | Field::XRequestId
                | Field::Expect
        )
    }

    /// The fields that frame a message body.
    pub fn is_framing(self) -> bool {
        matches!(self, Field::ContentLength | Field::TransferEncoding)
    }

    /// Hop-by-hop fields (RFC 9110 §7.6.1) that a proxy must not forward.
    /// `Transfer-Encoding` is handled apart because the proxy keeps the framing.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::Te
                | Field::Trailer
                | Field::Upgrade
                | Field::ProxyAuthorization
                | Field::ProxyAuthenticate
        )
    }
}

/// Whether the token `name` equals `lower` (lowercase letters and `-`
/// only), ignoring ASCII case, eight bytes at a time. Setting bit 0x20
/// lowercases a letter and leaves `-` as is; the only other byte it maps
/// onto one of these is `\r` (onto `-`), which no token contains.
fn token_eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    const LOWER: u64 = 0x2020_2020_2020_2020;
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len < 8 {
        return name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b);
    }
    let word = |bytes: &[u8], at: usize| {
        bytes[at..]
            .first_chunk::<8>()
            .map_or(0, |chunk| u64::from_ne_bytes(*chunk))
    };
    let same = |at: usize| word(name, at) | LOWER == word(lower, at);
    // Whole words, then one last word overlapping the previous one.
    let mut at = 0;
    while at + 8 < len {
        if !same(at) {
            return false;
        }
        at += 8;
    }
    same(len - 8)
}

/// Whether `name` is `lower` (lowercase letters and `-`) with at least
/// one `_` where `lower` has `-`, ignoring ASCII case.
fn underscore_for_dash(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name.contains(&b'_')
        && name.iter().zip(lower).all(|(&a, &b)| {
            if b == b'-' {
                a == b'-' || a == b'_'
            } else {
                a | 0x20 == b
            }
        })
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) that a proxy must not forward.
/// `Transfer-Encoding` is handled apart because the proxy keeps the framing.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    Field::of(name).is_hop_by_hop()
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
        let mut raw = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let len = match request.parse_with_uninit_headers(buf, &mut raw)? {
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
        if summary.framing_lookalike {
            return Err(HeadError::Malformed(
                "a field named like Content-Length or Transfer-Encoding with '_' for '-'",
            ));
        }
        if summary.connection_names_owned {
            return Err(HeadError::Malformed(
                "Connection may not name Content-Length, Transfer-Encoding, Host, \
                 Authorization, Expect or X-Request-ID",
            ));
        }
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
        let mut raw = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut raw,
        );
        let len = match parsed? {
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
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.of(buf))
    }

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
    fn connection_may_not_name_a_field_the_gateway_owns() {
        for option in [
            "content-length",
            "Transfer-Encoding",
            "HOST",
            "authorization",
            "x-request-id",
            "Expect",
            "content_length",
            "keep-alive, Content-Length",
        ] {
            let raw =
                format!("POST / HTTP/1.1\r\nConnection: {option}\r\nContent-Length: 3\r\n\r\n");
            assert!(
                matches!(request(raw.as_bytes()), Err(HeadError::Malformed(_))),
                "{option}"
            );
        }
        // Each of several Connection fields counts.
        let two = b"POST / HTTP/1.1\r\nConnection: host\r\nConnection: close\r\n\r\n";
        assert!(matches!(request(two), Err(HeadError::Malformed(_))));
        // Hop-by-hop and unknown options are fine.
        let fine = b"GET / HTTP/1.1\r\nConnection: keep-alive, te, upgrade, x-foo\r\n\r\n";
        assert!(request(fine).is_ok());
        // A response is not refused for it: the framing fields are kept.
        let response =
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n";
        let Parsed::Complete(head) = ResponseHead::parse(response).unwrap() else {
            panic!("partial")
        };
        assert_eq!(head.framing(&http::Method::GET), Framing::Length(2));
    }

    #[test]
    fn framing_lookalikes_are_refused() {
        for name in [
            "Transfer_Encoding",
            "transfer_encoding",
            "TRANSFER_ENCODING",
            "Content_Length",
            "content_length",
        ] {
            assert_eq!(
                Field::of(name.as_bytes()),
                Field::FramingLookalike,
                "{name}"
            );
            let raw = format!("POST / HTTP/1.1\r\n{name}: 3\r\nContent-Length: 3\r\n\r\n");
            assert!(
                matches!(request(raw.as_bytes()), Err(HeadError::Malformed(_))),
                "{name}"
            );
        }
        for other in [
            "Content_Type",
            "content-length_",
            "x_request_id",
            "cache_control",
        ] {
            assert_ne!(
                Field::of(other.as_bytes()),
                Field::FramingLookalike,
                "{other}"
            );
        }
    }

    #[test]
    fn fields_are_told_apart_whatever_their_case() {
        let known = [
            ("authorization", Field::Authorization),
            ("connection", Field::Connection),
            ("content-length", Field::ContentLength),
            ("expect", Field::Expect),
            ("host", Field::Host),
            ("keep-alive", Field::KeepAlive),
            ("proxy-authenticate", Field::ProxyAuthenticate),
            ("proxy-authorization", Field::ProxyAuthorization),
            ("proxy-connection", Field::ProxyConnection),
            ("te", Field::Te),
            ("trailer", Field::Trailer),
            ("transfer-encoding", Field::TransferEncoding),
            ("upgrade", Field::Upgrade),
            ("x-request-id", Field::XRequestId),
        ];
        for (name, field) in known {
            assert_eq!(Field::of(name.as_bytes()), field, "{name}");
            assert_eq!(Field::of(name.to_uppercase().as_bytes()), field, "{name}");
        }
        for other in [
            "",
            "t",
            "hosts",
            "content-type",
            "x-request-ie",
            "tE-",
            "upgrades",
        ] {
            assert_eq!(Field::of(other.as_bytes()), Field::Other, "{other}");
        }
        let hop_by_hop: Vec<&str> = known
            .iter()
            .filter(|(_, field)| field.is_hop_by_hop())
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(
            hop_by_hop,
            [
                "connection",
                "keep-alive",
                "proxy-authenticate",
                "proxy-authorization",
                "proxy-connection",
                "te",
                "trailer",
                "upgrade"
            ]
        );
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b" 350 "), Some(350));
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+3",
            b"-1",
            b"3 4",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_content_length(bad), None);
        }
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
