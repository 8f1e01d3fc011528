//! What `Cache-Control` says, on requests and on responses, and what the
//! cache may do with them. Pure functions, tested here case by case.

use crate::http::RequestHead;
use crate::http::head::tokens;

/// The `Cache-Control` directives the cache acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl Directives {
    /// Adds the directives of one `Cache-Control` field value.
    pub fn add(&mut self, value: &[u8]) {
        for token in tokens(value) {
            let (name, argument) = match token.iter().position(|&b| b == b'=') {
                Some(at) => (token[..at].trim_ascii(), Some(token[at + 1..].trim_ascii())),
                None => (token, None),
            };
            let seconds = || argument.and_then(parse_seconds);
            if name.eq_ignore_ascii_case(b"no-store") {
                self.no_store = true;
            } else if name.eq_ignore_ascii_case(b"no-cache") {
                self.no_cache = true;
            } else if name.eq_ignore_ascii_case(b"private") {
                self.private = true;
            } else if name.eq_ignore_ascii_case(b"public") {
                self.public = true;
            } else if name.eq_ignore_ascii_case(b"max-age") {
                // A malformed max-age is stale (RFC 9111 §4.2.1).
                self.max_age = Some(seconds().unwrap_or(0));
            } else if name.eq_ignore_ascii_case(b"s-maxage") {
                self.s_maxage = Some(seconds().unwrap_or(0));
            }
        }
    }

    /// The directives of every `Cache-Control` field of a head.
    pub fn of_fields<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut directives = Self::default();
        for value in values {
            directives.add(value);
        }
        directives
    }

    pub fn of_request(head: &RequestHead, buf: &[u8]) -> Self {
        Self::of_fields(
            head.headers
                .iter()
                .filter(|(name, _)| name.of(buf).eq_ignore_ascii_case(b"cache-control"))
                .map(|(_, value)| value.of(buf)),
        )
    }

    /// How long a shared cache may keep the answer: `s-maxage`, else `max-age`.
    fn shared_max_age(&self) -> Option<u64> {
        self.s_maxage.or(self.max_age)
    }
}

/// `delta-seconds`, optionally quoted; too large saturates.
fn parse_seconds(text: &[u8]) -> Option<u64> {
    let text = text
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(text);
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Whether the cache looks a request up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Yes,
    /// `max-age=0`: the client wants a fresh answer; it counts as a miss.
    Revalidate,
    /// `no-cache` / `no-store`: the cache stays out of the way.
    Bypass,
}

/// What the cache does with one request, decided from its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consult {
    pub lookup: Lookup,
    /// The answer of a miss may be stored.
    pub store: bool,
    /// The oldest entry the client accepts (request `max-age`).
    pub max_age: Option<u64>,
    /// A `POST` opted in with `Cache-Control: public, max-age=N`: the TTL
    /// its answer is kept for when the answer names none.
    pub opt_in_ttl: Option<u64>,
}

/// Which requests the cache applies to: `GET`/`HEAD` always; `POST` when
/// the client opts in (`public` with a positive `max-age`/`s-maxage`) or
/// when this shard holds answers to `POST`s (then it only looks up);
/// nothing else. `None`: the cache does not apply at all.
pub fn consult(method: &http::Method, request: Directives, post_entries: bool) -> Option<Consult> {
    let lookup = if request.no_store || request.no_cache {
        Lookup::Bypass
    } else if request.max_age == Some(0) {
        Lookup::Revalidate
    } else {
        Lookup::Yes
    };
    let mut consult = Consult {
        lookup,
        store: !request.no_store,
        max_age: request.max_age,
        opt_in_ttl: None,
    };
    match *method {
        http::Method::GET => Some(consult),
        // A HEAD answer has no body to keep; it is served from GET's entries.
        http::Method::HEAD => Some(Consult {
            store: false,
            ..consult
        }),
        http::Method::POST => {
            let opt_in = request
                .public
                .then(|| request.shared_max_age())
                .flatten()
                .filter(|&ttl| ttl > 0);
            consult.opt_in_ttl = opt_in;
            consult.store &= opt_in.is_some();
            (opt_in.is_some() || post_entries).then_some(consult)
        }
        _ => None,
    }
}

/// Who may be served a stored answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Only requests made with the same key (`private`).
    Key,
    /// Requests of the same project (the default).
    Tenant,
    /// Every tenant's identical request (`public`).
    Public,
}

/// How long an answer may be kept, and by whom; `None`: not at all.
/// `no-store` and `no-cache` keep it out (the cache does not revalidate);
/// `s-maxage` beats `max-age` (this is a shared cache); without either, a
/// `POST` keeps its opt-in TTL and a `GET` the default one.
pub fn storable(
    response: Directives,
    consult: &Consult,
    method: &http::Method,
    default_ttl: u64,
) -> Option<(u64, Sharing)> {
    if response.no_store || response.no_cache || !consult.store {
        return None;
    }
    let fallback = match *method {
        http::Method::GET => Some(default_ttl),
        _ => consult.opt_in_ttl,
    };
    let ttl = response
        .shared_max_age()
        .or(consult.opt_in_ttl)
        .or(fallback)?;
    if ttl == 0 {
        return None;
    }
    let sharing = if response.private {
        Sharing::Key
    } else if response.public {
        Sharing::Public
    } else {
        Sharing::Tenant
    };
    Some((ttl, sharing))
}

/// Whether `If-None-Match` names the entity tag `etag` (weak comparison).
pub fn none_match(if_none_match: &[u8], etag: &[u8]) -> bool {
    fn weak(tag: &[u8]) -> &[u8] {
        tag.strip_prefix(b"W/").unwrap_or(tag)
    }
    let etag = weak(etag.trim_ascii());
    tokens(if_none_match).any(|tag| tag == b"*" || weak(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn directives(value: &str) -> Directives {
        let mut d = Directives::default();
        d.add(value.as_bytes());
        d
    }

    #[test]
    fn parses_directives() {
        let d = directives("public, max-age=60, s-maxage=\"30\"");
        assert!(d.public && !d.private);
        assert_eq!((d.max_age, d.s_maxage), (Some(60), Some(30)));
        let d = directives("No-Store,private=\"set-cookie\"");
        assert!(d.no_store && d.private);
        assert_eq!(directives("max-age=soon").max_age, Some(0));
        assert_eq!(
            directives("max-age=99999999999999999999999").max_age,
            Some(u64::MAX)
        );
    }

    #[test]
    fn get_and_head_are_looked_up() {
        let c = consult(&Method::GET, Directives::default(), false).unwrap();
        assert_eq!((c.lookup, c.store), (Lookup::Yes, true));
        let c = consult(&Method::HEAD, Directives::default(), false).unwrap();
        assert_eq!((c.lookup, c.store), (Lookup::Yes, false));
        assert!(consult(&Method::PUT, Directives::default(), true).is_none());
    }

    #[test]
    fn request_directives() {
        let c = consult(&Method::GET, directives("no-cache"), false).unwrap();
        assert_eq!((c.lookup, c.store), (Lookup::Bypass, true));
        let c = consult(&Method::GET, directives("no-store"), false).unwrap();
        assert_eq!((c.lookup, c.store), (Lookup::Bypass, false));
        let c = consult(&Method::GET, directives("max-age=0"), false).unwrap();
        assert_eq!((c.lookup, c.store), (Lookup::Revalidate, true));
    }

    #[test]
    fn post_needs_an_opt_in_or_stored_posts() {
        assert!(consult(&Method::POST, Directives::default(), false).is_none());
        assert!(consult(&Method::POST, directives("public"), false).is_none());
        assert!(consult(&Method::POST, directives("max-age=60"), false).is_none());
        let c = consult(&Method::POST, directives("public, max-age=60"), false).unwrap();
        assert_eq!((c.store, c.opt_in_ttl), (true, Some(60)));
        let c = consult(&Method::POST, directives("public, s-maxage=5"), false).unwrap();
        assert_eq!(c.opt_in_ttl, Some(5));
        let c = consult(&Method::POST, Directives::default(), true).unwrap();
        assert_eq!((c.lookup, c.store), (Lookup::Yes, false));
        let c = consult(&Method::POST, directives("no-cache"), true).unwrap();
        assert_eq!(c.lookup, Lookup::Bypass);
    }

    #[test]
    fn response_directives() {
        let get = consult(&Method::GET, Directives::default(), false).unwrap();
        assert_eq!(
            storable(Directives::default(), &get, &Method::GET, 300),
            Some((300, Sharing::Tenant))
        );
        assert_eq!(
            storable(
                directives("max-age=10, s-maxage=20"),
                &get,
                &Method::GET,
                300
            ),
            Some((20, Sharing::Tenant))
        );
        assert_eq!(
            storable(directives("public, max-age=10"), &get, &Method::GET, 300),
            Some((10, Sharing::Public))
        );
        assert_eq!(
            storable(directives("private"), &get, &Method::GET, 300),
            Some((300, Sharing::Key))
        );
        for refused in ["no-store", "no-cache", "max-age=0"] {
            assert_eq!(storable(directives(refused), &get, &Method::GET, 300), None);
        }
        let post = consult(&Method::POST, directives("public, max-age=60"), false).unwrap();
        assert_eq!(
            storable(Directives::default(), &post, &Method::POST, 300),
            Some((60, Sharing::Tenant))
        );
        let lookup_only = consult(&Method::POST, Directives::default(), true).unwrap();
        assert_eq!(
            storable(Directives::default(), &lookup_only, &Method::POST, 300),
            None
        );
    }

    #[test]
    fn entity_tags() {
        assert!(none_match(b"\"v1\"", b"\"v1\""));
        assert!(none_match(b"\"v0\", W/\"v1\"", b"\"v1\""));
        assert!(none_match(b"*", b"\"v1\""));
        assert!(!none_match(b"\"v2\"", b"\"v1\""));
    }
}
