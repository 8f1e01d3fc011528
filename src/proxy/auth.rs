//! Phase 1, authenticate: the client's virtual key from `Authorization`,
//! checked against the worker's key cache (backed by the store); the
//! models it may use (`Allowlist`); then, once the request is routed and
//! checked, `admit` charges it to the key's quota.

use std::rc::Rc;

use super::error::ProxyError;
use super::keys::CachedKey;
use super::quota::{BudgetHold, Draw, Take};
use crate::http::RequestHead;
use crate::server::worker::Worker;
use crate::store::{Budget, BudgetGrant, Grant, KeyView, Money, Payer, now_ms};

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

/// The key presented by the client, if it is known and usable.
pub fn authenticate(
    worker: &Worker,
    head: &RequestHead,
    buf: &[u8],
) -> Result<Rc<CachedKey>, ProxyError> {
    let value = head
        .header(buf, "authorization")
        .ok_or(ProxyError::MissingKey)?;
    let secret = bearer_key(value).ok_or(ProxyError::MissingKey)?;
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

/// The `Bearer` value of a pass-through request's upstream: the key's
/// project's provider key, while the project is active.
pub fn project_upstream_auth(key: &CachedKey) -> Result<&[u8], ProxyError> {
    match &key.upstream_auth {
        Some(auth) if key.view.project_active => Ok(auth),
        // Active but without a provider key: a key made without a project.
        None if key.view.project_active => Err(ProxyError::KeyWithoutProject),
        _ => Err(ProxyError::ProjectInactive),
    }
}

/// The models a key may use: its own `models` list and its user's. An
/// empty list restricts nothing; a model must be in every list that is not
/// empty. The one statement of this rule, for the request path and for the
/// listings that show a key its models.
#[derive(Clone, Copy)]
pub struct Allowlist<'a> {
    key: &'a [String],
    user: &'a [String],
}

impl<'a> Allowlist<'a> {
    pub fn new(key: &'a [String], user: &'a [String]) -> Self {
        Self { key, user }
    }

    pub fn of(view: &'a KeyView) -> Self {
        Self::new(&view.models, &view.user_models)
    }

    /// Whether any list restricts the key at all.
    pub fn is_restricted(self) -> bool {
        !self.key.is_empty() || !self.user.is_empty()
    }

    pub fn allows(self, model: &str) -> bool {
        [self.key, self.user]
            .iter()
            .all(|list| list.is_empty() || list.iter().any(|m| m == model))
    }

    /// The models allowed, in the order of the key's list (the user's when
    /// the key has none); empty when nothing is restricted.
    pub fn models(self) -> Vec<String> {
        let listed = if self.key.is_empty() {
            self.user
        } else {
            self.key
        };
        listed.iter().filter(|m| self.allows(m)).cloned().collect()
    }
}

/// Charges one request to the key: out of this worker's lease, or a new
/// lease from the store's ledger (durable before the request goes out).
/// A key with a budget and no `max_requests` is counted out of leases too,
/// so that its request count is never short after a crash.
pub async fn admit(worker: &Worker, key: &CachedKey) -> Result<(), ProxyError> {
    let id = key.view.key_id;
    let limit = key.view.max_requests;
    if limit.is_some() || key.view.max_budget.is_some() {
        loop {
            let draw = worker.quota.borrow_mut().draw(id, limit);
            match draw {
                Draw::Charged => break,
                Draw::Exhausted => return Err(ProxyError::QuotaExhausted),
                Draw::Wait(event) => {
                    // Re-check after registering, in case the refill just ended.
                    let listener = event.listen();
                    if worker.quota.borrow().is_refilling(id) {
                        listener.await;
                    }
                }
                Draw::Refill => {
                    let store = worker.store.clone();
                    let workers = worker.settings.workers;
                    // A ledger write fsyncs: never on the worker thread.
                    let grant = monoio::spawn_blocking(move || store.lease(id, workers)).await;
                    let mut quota = worker.quota.borrow_mut();
                    match grant {
                        Ok(Ok(Grant::Granted(granted))) => quota.refilled(id, limit, Some(granted)),
                        Ok(Ok(Grant::Exhausted)) => quota.refilled(id, limit, None),
                        Ok(Ok(Grant::Unlimited)) => {
                            quota.refill_failed(id);
                            break;
                        }
                        Ok(Err(error)) => {
                            quota.refill_failed(id);
                            return Err(error.into());
                        }
                        Err(_) => {
                            quota.refill_failed(id);
                            return Err(ProxyError::Internal(
                                "the ledger task was cancelled".into(),
                            ));
                        }
                    }
                }
            }
        }
    }
    worker.quota.borrow_mut().served(id);
    Ok(())
}

/// Holds `estimate` of the key's budget and of its user's (those that have
/// one) before the request goes upstream, out of this worker's leases or
/// new ones from the ledger (durable before the request goes out). Refuses
/// the request when less than `estimate` is left of either.
pub async fn reserve<'a>(
    worker: &'a Worker,
    key: &'a CachedKey,
    estimate: Money,
) -> Result<BudgetHold<'a>, ProxyError> {
    let mut hold = BudgetHold::new(&worker.quota);
    if estimate == Money(0) {
        return Ok(hold);
    }
    let view = &key.view;
    if let Some(budget) = view.max_budget {
        let payer = Payer::Key(view.key_id);
        if take(worker, payer, estimate, budget)
            .await
            .map_err(|left| over_budget("this key", budget, left, estimate))?
        {
            hold.holds(payer, estimate);
        }
    }
    if let (Some(budget), Some(user_id)) = (view.user_max_budget, view.user_id.as_deref()) {
        let payer = Payer::User(user_id);
        if take(worker, payer, estimate, budget)
            .await
            .map_err(|left| over_budget("this key's user", budget, left, estimate))?
        {
            hold.holds(payer, estimate);
        }
    }
    Ok(hold)
}

/// Holds `need` of `payer`'s budget: `Ok(true)` when held, `Ok(false)` when
/// the ledger knows no budget (any more), `Err(Ok(left))` when it has only
/// `left`, `Err(Err(_))` when it could not be asked.
async fn take(
    worker: &Worker,
    payer: Payer<'_>,
    need: Money,
    budget: Budget,
) -> Result<bool, Result<Money, ProxyError>> {
    loop {
        let take = worker
            .quota
            .borrow_mut()
            .take_budget(payer, need, budget.amount);
        match take {
            Take::Held => return Ok(true),
            Take::Exhausted(left) => return Err(Ok(left)),
            Take::Wait(event) => {
                let listener = event.listen();
                if worker.quota.borrow().is_refilling_budget(payer) {
                    listener.await;
                }
            }
            Take::Refill(at_least) => {
                let store = worker.store.clone();
                let workers = worker.settings.workers;
                let owned = match payer {
                    Payer::Key(id) => Ok(id),
                    Payer::User(user_id) => Err(user_id.to_string()),
                };
                // A ledger write fsyncs: never on the worker thread.
                let grant = monoio::spawn_blocking(move || {
                    let payer = match &owned {
                        Ok(id) => Payer::Key(*id),
                        Err(user_id) => Payer::User(user_id),
                    };
                    store.lease_budget(payer, at_least, workers)
                })
                .await;
                let mut quota = worker.quota.borrow_mut();
                match grant {
                    Ok(Ok(BudgetGrant::Granted(granted))) => {
                        quota.budget_refilled(payer, budget.amount, Ok(granted))
                    }
                    Ok(Ok(BudgetGrant::Exhausted { left })) => {
                        quota.budget_refilled(payer, budget.amount, Err(left))
                    }
                    Ok(Ok(BudgetGrant::Unlimited)) => {
                        // The budget was lifted since this key was read.
                        quota.budget_refill_failed(payer);
                        return Ok(false);
                    }
                    Ok(Err(error)) => {
                        quota.budget_refill_failed(payer);
                        return Err(Err(error.into()));
                    }
                    Err(_) => {
                        quota.budget_refill_failed(payer);
                        return Err(Err(ProxyError::Internal(
                            "the ledger task was cancelled".into(),
                        )));
                    }
                }
            }
        }
    }
}

fn over_budget(
    whose: &str,
    budget: Budget,
    left: Result<Money, ProxyError>,
    estimate: Money,
) -> ProxyError {
    match left {
        Ok(left) => ProxyError::BudgetExceeded(format!(
            "{whose} has ${:.6} of its ${} budget left (neither spent nor held by requests in flight), less than this request may cost (${:.6})",
            left.dollars(),
            budget.dollars,
            estimate.dollars()
        )),
        Err(error) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlists() {
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let (a, ab, b, none) = (list(&["a"]), list(&["a", "b"]), list(&["b"]), list(&[]));
        let open = Allowlist::new(&none, &none);
        assert!(!open.is_restricted() && open.allows("x") && open.models().is_empty());
        let key = Allowlist::new(&ab, &none);
        assert!(key.is_restricted() && key.allows("b") && !key.allows("c"));
        assert_eq!(key.models(), ab);
        let user = Allowlist::new(&none, &a);
        assert!(user.is_restricted() && user.allows("a") && !user.allows("b"));
        assert_eq!(user.models(), a);
        let both = Allowlist::new(&ab, &b);
        assert!(both.allows("b") && !both.allows("a"));
        assert_eq!(both.models(), b);
        // Lists with nothing in common leave nothing, and restrict everything.
        let disjoint = Allowlist::new(&a, &b);
        assert!(disjoint.is_restricted() && !disjoint.allows("a") && !disjoint.allows("b"));
        assert!(disjoint.models().is_empty());
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
