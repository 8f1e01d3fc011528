//! Phase 3, admit: the checks between the plan and the answer, the same for
//! every request that may reach an upstream or be answered from the cache,
//! run once: the key's and its user's `models` allowlists, their budgets
//! (holding an estimate of the request's cost out of them), then
//! `max_requests` (which counts the request). Budget holds and request
//! counts come out of this worker's leases, or new ones from the ledger.

use super::plan::Named;
use crate::error::ProxyError;
use crate::store::{Budget, BudgetGrant, Grant, KeyView, Money, Payer, Spend};
use crate::worker::Worker;
use crate::worker::auth::Allowlist;
use crate::worker::keys::CachedKey;
use crate::worker::quota::{BudgetHold, Draw, Take};

/// Admits a planned request, in this order: the key's and its user's
/// `models` allowlists, their budgets (with a hold of `estimate`, the most
/// the request may cost, when it is priced), then `max_requests`. A key
/// with an allowlist may send a body only when it names an allowed model.
/// Returns the spend the budget check saw and the hold, settled once the
/// cost is known.
pub async fn admit<'a>(
    worker: &'a Worker,
    key: &'a CachedKey,
    named: &Named,
    estimate: Money,
) -> Result<(Spend, BudgetHold<'a>), ProxyError> {
    let allowlist = Allowlist::of(&key.view);
    match named {
        Named::Model(model) if !allowlist.allows(model) => {
            return Err(ProxyError::ModelAccessDenied(format!(
                "this API key cannot use model {model:?}"
            )));
        }
        Named::Unknown if allowlist.is_restricted() => {
            return Err(ProxyError::ModelAccessDenied(
                "this API key may use only some models: a request body must be a JSON object \
                 naming one of them in \"model\""
                    .into(),
            ));
        }
        _ => {}
    }
    let spend = check_budgets(worker, &key.view)?;
    let hold = reserve(worker, key, estimate).await?;
    count_request(worker, key).await?;
    Ok((spend, hold))
}

/// Refuses a key (or user) at or over its budget; returns what was spent.
/// The ledger's figure, plus what this worker has not reported yet. This is
/// the check for every request of a budgeted key, priced or not; a priced
/// (routed) request also holds an estimate of its cost (`reserve`), which
/// is what keeps the budget under concurrent load.
fn check_budgets(worker: &Worker, view: &KeyView) -> Result<Spend, ProxyError> {
    if view.max_budget.is_none() && view.user_max_budget.is_none() {
        return Ok(Spend::default());
    }
    let mut spend = worker
        .store
        .spend_of(view.key_id, view.user_id.as_deref())?;
    let unreported = worker.quota.borrow().unreported_cost(view.key_id);
    spend.key = spend.key.saturating_add(unreported);
    spend.user = spend.user.saturating_add(unreported);
    if let Some(budget) = view.max_budget
        && budget.is_spent(spend.key)
    {
        return Err(ProxyError::BudgetExceeded(format!(
            "this key has spent ${:.6} of its ${} budget",
            spend.key.dollars(),
            budget.dollars
        )));
    }
    if let Some(budget) = view.user_max_budget
        && budget.is_spent(spend.user)
    {
        return Err(ProxyError::BudgetExceeded(format!(
            "this key's user has spent ${:.6} of their ${} budget",
            spend.user.dollars(),
            budget.dollars
        )));
    }
    Ok(spend)
}

/// Charges one request to the key: out of this worker's lease, or a new
/// lease from the store's ledger (durable before the request goes out).
/// A key with a budget and no `max_requests` is counted out of leases too,
/// so that its request count is never short after a crash.
async fn count_request(worker: &Worker, key: &CachedKey) -> Result<(), ProxyError> {
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
async fn reserve<'a>(
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
