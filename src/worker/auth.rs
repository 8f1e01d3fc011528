//! Who is calling: the client's virtual key from `Authorization`, checked
//! against the worker's key cache (backed by the store), and the models it
//! may use (`Allowlist`). The request path and the local endpoints that
//! take a virtual key (model listings, sign-in) ask here.

use std::rc::Rc;

use super::Worker;
use super::keys::CachedKey;
use crate::error::ProxyError;
use crate::http::RequestHead;
use crate::store::{KeyView, now_ms};

/// The key in `Authorization: Bearer <key>`, if the header has that shape.
pub fn bearer_key(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, key) = value.split_at(value.iter().position(|&b| b == b' ')?);
    let key = key.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !key.is_empty()).then_some(key)
}

/// Whether the request's `Authorization: Bearer` value is `expected`,
/// compared in constant time (the management and metrics tokens).
pub fn presents_bearer(head: &RequestHead, buf: &[u8], expected: &str) -> bool {
    head.header(buf, "authorization")
        .and_then(bearer_key)
        .is_some_and(|presented| crate::store::crypto::same_secret(expected.as_bytes(), presented))
}

/// The virtual key a client presents: `Authorization: Bearer <key>`, or,
/// as Anthropic's clients send it, `x-api-key: <key>`.
fn presented_key<'b>(head: &RequestHead, buf: &'b [u8]) -> Option<&'b [u8]> {
    match head.header(buf, "authorization") {
        Some(value) => bearer_key(value),
        None => Some(head.header(buf, "x-api-key")?.trim_ascii()).filter(|k| !k.is_empty()),
    }
}

/// The key presented by the client, if it is known and usable.
pub fn authenticate(
    worker: &Worker,
    head: &RequestHead,
    buf: &[u8],
) -> Result<Rc<CachedKey>, ProxyError> {
    let secret = presented_key(head, buf).ok_or(ProxyError::MissingKey)?;
    let key = {
        let mut cache = worker.keys.borrow_mut();
        cache.sync(&worker.store);
        cache
            .lookup(&worker.store, secret)?
            .ok_or(ProxyError::InvalidKey)?
    };
    let view = &key.view;
    if !view.is_active {
        return Err(ProxyError::KeyRevoked);
    }
    if view.expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(ProxyError::KeyExpired);
    }
    Ok(key)
}

/// The models a key may use: its own `models` list, its user's and its
/// team's. An empty list restricts nothing; a model must be in every list
/// that is not empty. The one statement of this rule, for the request path
/// and for the listings that show a key its models.
#[derive(Clone, Copy)]
pub struct Allowlist<'a> {
    key: &'a [String],
    user: &'a [String],
    team: &'a [String],
}

impl<'a> Allowlist<'a> {
    pub fn new(key: &'a [String], user: &'a [String], team: &'a [String]) -> Self {
        Self { key, user, team }
    }

    pub fn of(view: &'a KeyView) -> Self {
        let team = view.team.as_ref().map_or(&[][..], |t| t.models.as_slice());
        Self::new(&view.models, &view.user_models, team)
    }

    fn lists(self) -> [&'a [String]; 3] {
        [self.key, self.user, self.team]
    }

    /// Whether any list restricts the key at all.
    pub fn is_restricted(self) -> bool {
        self.lists().iter().any(|list| !list.is_empty())
    }

    pub fn allows(self, model: &str) -> bool {
        self.lists()
            .iter()
            .all(|list| list.is_empty() || list.iter().any(|m| m == model))
    }

    /// The models allowed, in the order of the first list that is not
    /// empty (the key's, else the user's, else the team's); empty when
    /// nothing is restricted.
    pub fn models(self) -> Vec<String> {
        let listed = self
            .lists()
            .into_iter()
            .find(|list| !list.is_empty())
            .unwrap_or_default();
        listed.iter().filter(|m| self.allows(m)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlists() {
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let (a, ab, b, none) = (list(&["a"]), list(&["a", "b"]), list(&["b"]), list(&[]));
        let open = Allowlist::new(&none, &none, &none);
        assert!(!open.is_restricted() && open.allows("x") && open.models().is_empty());
        let key = Allowlist::new(&ab, &none, &none);
        assert!(key.is_restricted() && key.allows("b") && !key.allows("c"));
        assert_eq!(key.models(), ab);
        let user = Allowlist::new(&none, &a, &none);
        assert!(user.is_restricted() && user.allows("a") && !user.allows("b"));
        assert_eq!(user.models(), a);
        let both = Allowlist::new(&ab, &b, &none);
        assert!(both.allows("b") && !both.allows("a"));
        assert_eq!(both.models(), b);
        // Lists with nothing in common leave nothing, and restrict everything.
        let disjoint = Allowlist::new(&a, &b, &none);
        assert!(disjoint.is_restricted() && !disjoint.allows("a") && !disjoint.allows("b"));
        assert!(disjoint.models().is_empty());
        // The team's list narrows the key's and the user's, or stands alone.
        let team = Allowlist::new(&none, &none, &b);
        assert!(team.is_restricted() && team.allows("b") && !team.allows("a"));
        assert_eq!(team.models(), b);
        let all_three = Allowlist::new(&ab, &ab, &a);
        assert!(all_three.allows("a") && !all_three.allows("b"));
        assert_eq!(all_three.models(), a);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_key(b"Bearer sk-1"), Some(&b"sk-1"[..]));
        assert_eq!(bearer_key(b"bearer   sk-1 "), Some(&b"sk-1"[..]));
        assert_eq!(bearer_key(b"Basic abc"), None);
        assert_eq!(bearer_key(b"Bearer "), None);
        assert_eq!(bearer_key(b"sk-1"), None);
    }
}
