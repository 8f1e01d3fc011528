//! Admission: once the request is planned, hold an estimate of its cost
//! out of the key's and its user's budgets (`reserve`) and charge it to the
//! key's quota (`admit`), out of this worker's leases or new ones from the
//! ledger.

use crate::error::ProxyError;
use crate::store::{Budget, BudgetGrant, Grant, Money, Payer};
use crate::worker::Worker;
use crate::worker::keys::CachedKey;
use crate::worker::quota::{BudgetHold, Draw, Take};

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
