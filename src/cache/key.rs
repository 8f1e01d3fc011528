//! Cache keys: SHA-256 over the method, the path, the query parameters in
//! sorted order, the body, the scope (who may see the answer) and the
//! request's values of the fields the answer varies on. A collision would
//! serve one tenant another's answer, so the hash is a cryptographic one;
//! every part is length-prefixed so that no two requests feed it the same
//! bytes.

use ring::digest::{Context, SHA256};
use uuid::Uuid;

use super::policy::Sharing;
use crate::http::RequestHead;

pub type Digest = [u8; 32];

/// Most query parameters sorted on the stack; more are sorted in a `Vec`.
const INLINE_PARAMS: usize = 16;

/// The hash of what identifies a request, before its scope is added.
#[derive(Clone)]
pub struct Base(Context);

impl Base {
    /// HEAD shares GET's entries: `method` is the method the key is for.
    pub fn new(method: &http::Method, path: &[u8], query: Option<&[u8]>, body: &[u8]) -> Self {
        let mut context = Context::new(&SHA256);
        part(&mut context, method.as_str().as_bytes());
        part(&mut context, path);
        for_sorted_params(query, |param| part(&mut context, param));
        part(&mut context, body);
        Self(context)
    }

    /// The request's key in one scope (before `Vary`).
    pub fn scoped(&self, scope: &Scope) -> Digest {
        let mut context = self.0.clone();
        context.update(&scope.bytes());
        finish(context)
    }
}

/// Who a stored answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Key(Uuid),
    /// The key's project, or the key itself when it has none.
    Tenant(Uuid),
    Public,
}

impl Scope {
    pub fn of(sharing: Sharing, key_id: Uuid, project_id: Option<Uuid>) -> Self {
        match sharing {
            Sharing::Key => Scope::Key(key_id),
            Sharing::Tenant => Scope::Tenant(project_id.unwrap_or(key_id)),
            Sharing::Public => Scope::Public,
        }
    }

    fn bytes(&self) -> [u8; 17] {
        let mut bytes = [0; 17];
        let (tag, id) = match self {
            Scope::Key(id) => (1, Some(id)),
            Scope::Tenant(id) => (2, Some(id)),
            Scope::Public => (3, None),
        };
        bytes[0] = tag;
        if let Some(id) = id {
            bytes[1..].copy_from_slice(id.as_bytes());
        }
        bytes
    }
}

/// The key of one variant: `primary` and the request's values of `names`
/// (the response's `Vary` fields).
pub fn with_vary(primary: &Digest, names: &[Box<str>], head: &RequestHead, buf: &[u8]) -> Digest {
    let mut context = Context::new(&SHA256);
    context.update(primary);
    for name in names {
        part(&mut context, name.as_bytes());
        match head.header(buf, name) {
            Some(value) => {
                context.update(&[1]);
                part(&mut context, value.trim_ascii());
            }
            None => context.update(&[0]),
        }
    }
    finish(context)
}

/// The request target as the cache knows it: the path, then the query
/// parameters in sorted order (what purges match against).
pub fn normalized_target(path: &[u8], query: Option<&[u8]>) -> Vec<u8> {
    let mut target = path.to_vec();
    let mut first = true;
    for_sorted_params(query, |param| {
        target.push(if first { b'?' } else { b'&' });
        target.extend_from_slice(param);
        first = false;
    });
    target
}

/// The first half of a key in hex, for `X-PROXY-CACHE-KEY`.
pub fn hex(digest: &Digest) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; 32];
    for (i, byte) in digest[..16].iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

/// Calls `f` with each non-empty `&`-separated parameter, in sorted order.
fn for_sorted_params(query: Option<&[u8]>, mut f: impl FnMut(&[u8])) {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return;
    };
    let params = query.split(|&b| b == b'&').filter(|p| !p.is_empty());
    let mut inline: [&[u8]; INLINE_PARAMS] = [&[]; INLINE_PARAMS];
    let mut count = 0;
    for param in params.clone() {
        if count == INLINE_PARAMS {
            let mut all: Vec<&[u8]> = params.collect();
            all.sort_unstable();
            all.into_iter().for_each(f);
            return;
        }
        inline[count] = param;
        count += 1;
    }
    let sorted = &mut inline[..count];
    sorted.sort_unstable();
    sorted.iter().for_each(|param| f(param));
}

fn part(context: &mut Context, bytes: &[u8]) {
    context.update(&(bytes.len() as u64).to_le_bytes());
    context.update(bytes);
}

fn finish(context: Context) -> Digest {
    let mut digest = [0; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn key(method: &Method, path: &str, query: Option<&str>, body: &str) -> Digest {
        Base::new(
            method,
            path.as_bytes(),
            query.map(str::as_bytes),
            body.as_bytes(),
        )
        .scoped(&Scope::Public)
    }

    #[test]
    fn query_order_does_not_matter() {
        assert_eq!(
            key(&Method::GET, "/v1/models", Some("b=2&a=1"), ""),
            key(&Method::GET, "/v1/models", Some("a=1&b=2&"), "")
        );
        assert_ne!(
            key(&Method::GET, "/v1/models", Some("a=1"), ""),
            key(&Method::GET, "/v1/models", Some("a=2"), "")
        );
        let many: Vec<String> = (0..40).rev().map(|i| format!("p{i}=1")).collect();
        let mut sorted = many.clone();
        sorted.sort();
        assert_eq!(
            key(&Method::GET, "/x", Some(&many.join("&")), ""),
            key(&Method::GET, "/x", Some(&sorted.join("&")), "")
        );
        assert_eq!(
            normalized_target(b"/v1/models", Some(b"b=2&a=1")),
            b"/v1/models?a=1&b=2"
        );
    }

    #[test]
    fn every_part_counts() {
        let base = key(&Method::POST, "/v1/chat", None, "{}");
        assert_ne!(base, key(&Method::GET, "/v1/chat", None, "{}"));
        assert_ne!(base, key(&Method::POST, "/v1/chat", None, "{ }"));
        assert_ne!(base, key(&Method::POST, "/v1/chat", Some("x"), "{}"));
        // Lengths are part of the hash: moving bytes between parts changes it.
        assert_ne!(
            key(&Method::POST, "/ab", None, "c"),
            key(&Method::POST, "/a", None, "bc")
        );
        let b = Base::new(&Method::GET, b"/v1/models", None, b"");
        let (one, two) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_ne!(b.scoped(&Scope::Tenant(one)), b.scoped(&Scope::Tenant(two)));
        assert_ne!(b.scoped(&Scope::Tenant(one)), b.scoped(&Scope::Key(one)));
        assert_ne!(b.scoped(&Scope::Tenant(one)), b.scoped(&Scope::Public));
    }
}
