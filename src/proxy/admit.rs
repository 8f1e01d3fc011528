//! Phase 3, admit: the checks between the plan and the answer, the same for
//! every request that may reach an upstream or be answered from the cache,
//! run once, in this order:
//!
//! 1. the `models` allowlists of the key, its user and its team, and the
//!    team's block;
//! 2. parallel requests (a slot held until the request ends);
//! 3. tokens per minute (admitted while the minute's tokens are not used up);
//! 4. budgets (an estimate of the request's cost held out of them);
//! 5. requests per minute, then `max_requests` (which count the request).
//!
//! Limits that give something back (slots, holds) come before those that
//! count the request, so that a request refused by one limit does not use
//! up another. Everything comes out of this worker's leases, or new ones
//! from the ledger (durable before the request goes out).

use super::plan::{CapBasis, Named};
use crate::error::{ProxyError, RateLimit};
use crate::store::{Budget, BudgetGrant, Grant, Money, Payer, Spend, WindowGrant, now_ms};
use crate::worker::Worker;
use crate::worker::auth::Allowlist;
use crate::worker::keys::{CachedKey, Party};
use crate::worker::limits::{Step, minute, seconds_left_in_minute};
use crate::worker::models::Deployment;
use crate::worker::quota::{Draw, Hold, Take, put};

/// What `admit` found: the spend the budget check saw, what the request
/// holds, and what the answer's `x-ratelimit-*` fields say.
pub struct Admitted<'a> {
    pub spend: Spend,
    pub hold: Hold<'a>,
    pub rate: RateFields,
    /// The `max_tokens` a budget can pay for, lower than the request's
    /// (`BUDGET_CAP_MAX_TOKENS`): the body is to say it.
    pub max_tokens: Option<u64>,
}

/// `x-ratelimit-{limit,remaining}-{requests,tokens}` of a rate-limited
/// key: the tightest of its parties' limits.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateFields {
    pub requests: Option<(u64, u64)>,
    pub tokens: Option<(u64, u64)>,
}

/// Admits a planned request (see the module's steps). `estimate`: the
/// most the request may cost, when it is priced; `cap`: how to lower it
/// when a budget cannot pay for it, if the server may.
pub async fn admit<'a>(
    worker: &'a Worker,
    key: &'a CachedKey,
    named: &Named,
    mut estimate: Money,
    cap: Option<&CapBasis>,
) -> Result<Admitted<'a>, ProxyError> {
    check_models(key, named)?;
    let model = match named {
        Named::Model(model) => key.model_parties.get_key_value(&**model),
        _ => None,
    };
    let parties = || key.parties.iter().chain(model.map(|(_, p)| p));
    let mut hold = Hold::new(&worker.quota);
    let mut rate = RateFields::default();
    if key.parties.is_empty() && model.is_none() && key.view.max_requests.is_none() {
        worker.quota.borrow_mut().served(key.view.key_id);
        return Ok(Admitted {
            spend: Spend::default(),
            hold,
            rate,
            max_tokens: None,
        });
    }
    let now = now_ms();
    let window = minute(now);
    for party in parties() {
        if let Some((limit, id)) = &party.parallel {
            if !step(worker, id, *limit, 0).await? {
                return Err(limited(RateLimit::Parallel, party, *limit, 1));
            }
            hold.holds_slot(id);
        }
    }
    for party in parties() {
        if let Some((limit, id)) = &party.tpm {
            if !step(worker, id, *limit, window).await? {
                let wait = seconds_left_in_minute(now);
                return Err(limited(RateLimit::Tokens, party, *limit, wait));
            }
            hold.draws_tokens(id);
            let left = worker.quota.borrow().counters.remaining(id, *limit, window);
            tighten(&mut rate.tokens, *limit, left);
        }
    }
    let spend = check_budgets(worker, key, model.map(|(m, _)| m.as_str()), now)?;
    let mut max_tokens = None;
    if estimate > Money(0) {
        for party in parties() {
            let Some(budget) = party.max_budget else {
                continue;
            };
            let held = match take(worker, &party.slot, estimate, budget).await {
                Err(Ok(left)) if max_tokens.is_none() => {
                    // Less is left than the request may cost: a shorter
                    // answer may still fit, when the server may ask for one.
                    // What this worker's lease has free is left too.
                    let free = worker.quota.borrow().budget_free(&party.slot);
                    match cap.and_then(|cap| cap.within(left.saturating_add(free))) {
                        Some((tokens, cost)) => {
                            max_tokens = Some(tokens);
                            estimate = cost;
                            take(worker, &party.slot, estimate, budget).await
                        }
                        None => Err(Ok(left)),
                    }
                }
                other => other,
            };
            if held.map_err(|left| over_budget(worker, party, (budget, left), estimate, now))? {
                hold.holds(&party.slot, estimate);
            }
        }
    }
    // The key, its user, its team and the key on the model: at most four.
    let mut drawn: [Option<&[u8]>; 4] = [None; 4];
    for party in parties() {
        if let Some((limit, id)) = &party.rpm {
            match step(worker, id, *limit, window).await {
                Ok(true) => {
                    put(&mut drawn, id);
                    let left = worker.quota.borrow().counters.remaining(id, *limit, window);
                    tighten(&mut rate.requests, *limit, left);
                }
                refused => {
                    undo(worker, &drawn, window);
                    refused?;
                    let wait = seconds_left_in_minute(now);
                    return Err(limited(RateLimit::Requests, party, *limit, wait));
                }
            }
        }
    }
    if let Err(error) = count_request(worker, key).await {
        undo(worker, &drawn, window);
        return Err(error);
    }
    Ok(Admitted {
        spend,
        hold,
        rate,
        max_tokens,
    })
}

/// The allowlists of the key, its user and its team; a key with an
/// allowlist may send a body only when it names an allowed model.
fn check_models(key: &CachedKey, named: &Named) -> Result<(), ProxyError> {
    if let Some(team) = &key.view.team
        && team.blocked
    {
        return Err(ProxyError::TeamBlocked(team.team_id.clone()));
    }
    let allowlist = Allowlist::of(&key.view);
    match named {
        Named::Model(model) if !allowlist.allows(model) => Err(ProxyError::ModelAccessDenied(
            format!("this API key cannot use model {model:?}"),
        )),
        Named::Unknown if allowlist.is_restricted() => Err(ProxyError::ModelAccessDenied(
            "this API key may use only some models: a request body must be a JSON object \
             naming one of them in \"model\""
                .into(),
        )),
        _ => Ok(()),
    }
}

fn tighten(field: &mut Option<(u64, u64)>, limit: u64, left: u64) {
    if field.is_none_or(|(_, known)| left < known) {
        *field = Some((limit, left));
    }
}

fn limited(limit: RateLimit, party: &Party, value: u64, retry_after: u64) -> ProxyError {
    let what = match limit {
        RateLimit::Requests => format!("its limit of {value} requests per minute"),
        RateLimit::Tokens => format!("its limit of {value} tokens per minute"),
        RateLimit::Parallel => format!("its limit of {value} requests in parallel"),
        RateLimit::Deployments => String::new(),
    };
    ProxyError::RateLimited {
        limit,
        message: format!("{} has reached {what}", whose(party)),
        retry_after,
        value,
    }
}

fn whose(party: &Party) -> &'static str {
    match party.whose {
        "user" => "this key's user",
        "team" => "this key's team",
        "model" => "this key, on this model,",
        _ => "this key",
    }
}

/// Gives back the requests per minute drawn for a request refused later.
fn undo(worker: &Worker, drawn: &[Option<&[u8]>], window: i64) {
    let mut quota = worker.quota.borrow_mut();
    for id in drawn.iter().flatten() {
        quota.counters.undo(id, window);
    }
}

/// Whether `deployment` may be sent one more request this minute: its
/// tokens per minute are not used up, and one of its requests per minute
/// is drawn.
pub async fn deployment_admits(
    worker: &Worker,
    deployment: &Deployment,
) -> Result<bool, ProxyError> {
    if deployment.rpm.is_none() && deployment.tpm.is_none() {
        return Ok(true);
    }
    let window = minute(now_ms());
    if let Some((limit, id)) = &deployment.tpm
        && !step(worker, id, *limit, window).await?
    {
        return Ok(false);
    }
    match &deployment.rpm {
        Some((limit, id)) => step(worker, id, *limit, window).await,
        None => Ok(true),
    }
}

/// Admits one request against counter `id` (of `limit` in `window`):
/// `Ok(false)` when the counter is full.
async fn step(worker: &Worker, id: &[u8], limit: u64, window: i64) -> Result<bool, ProxyError> {
    loop {
        let step = worker.quota.borrow_mut().counters.admit(id, limit, window);
        match step {
            Step::Done => return Ok(true),
            Step::Full => return Ok(false),
            Step::Wait(event) => {
                // Re-check after registering, in case the refill just ended.
                let listener = event.listen();
                if worker.quota.borrow().counters.is_refilling(id) {
                    listener.await;
                }
            }
            Step::Refill => {
                let store = worker.store.clone();
                let workers = worker.settings.workers;
                let owned: Box<[u8]> = id.into();
                // Enough to pay what this worker owes and still admit: one
                // ledger write, not one per lease the debt would eat.
                let at_least = worker.quota.borrow().counters.debt(id, window) + 1;
                // A ledger write fsyncs: never on the worker thread.
                let grant = monoio::spawn_blocking(move || {
                    store.lease_counter(&owned, window, (limit, at_least), workers)
                })
                .await;
                let mut quota = worker.quota.borrow_mut();
                match grant {
                    Ok(Ok(WindowGrant::Granted { amount, taken })) => {
                        quota
                            .counters
                            .refilled(id, limit, window, Some((amount, taken)))
                    }
                    Ok(Ok(WindowGrant::Exhausted)) => {
                        quota.counters.refilled(id, limit, window, None)
                    }
                    Ok(Ok(WindowGrant::Unavailable)) => {
                        quota.counters.refill_failed(id);
                        return Err(ProxyError::SharedStoreUnavailable(
                            "this rate limit is held in the shared store, which cannot be reached, and this node's share of it is used up".into(),
                        ));
                    }
                    Ok(Err(error)) => {
                        quota.counters.refill_failed(id);
                        return Err(error.into());
                    }
                    Err(_) => {
                        quota.counters.refill_failed(id);
                        return Err(ProxyError::Internal("the ledger task was cancelled".into()));
                    }
                }
            }
        }
    }
}

/// Refuses a request whose key, user, team or model budget is spent;
/// returns what was spent. The ledger's figure, plus what this worker has
/// not reported yet. This is the check for every request of a budgeted
/// key, priced or not; a priced (routed) request also holds an estimate of
/// its cost, which is what keeps the budget under concurrent load.
fn check_budgets(
    worker: &Worker,
    key: &CachedKey,
    model: Option<&str>,
    now: i64,
) -> Result<Spend, ProxyError> {
    let view = &key.view;
    let model_party = model.and_then(|m| key.model_parties.get(m).map(|p| (m, p)));
    let budgeted = key.parties.iter().any(|p| p.max_budget.is_some())
        || model_party.is_some_and(|(_, p)| p.max_budget.is_some());
    if !budgeted {
        return Ok(Spend::default());
    }
    let team_id = view.team.as_ref().map(|t| t.team_id.as_str());
    let mut spend = worker
        .store
        .spend_of(view.key_id, view.user_id.as_deref(), team_id)?;
    let unreported = worker.quota.borrow().unreported_cost(view.key_id, None);
    spend.key = spend.key.saturating_add(unreported);
    spend.user = spend.user.saturating_add(unreported);
    spend.team = spend.team.saturating_add(unreported);
    for party in &key.parties {
        let (Some(budget), spent) = (
            party.max_budget,
            match party.whose {
                "user" => spend.user,
                "team" => spend.team,
                _ => spend.key,
            },
        ) else {
            continue;
        };
        if budget.is_spent(spent) {
            return Err(spent_error(worker, party, budget, spent, now));
        }
    }
    if let Some((model, party)) = model_party
        && let Some(budget) = party.max_budget
    {
        let payer = Payer::KeyModel(view.key_id, model);
        let spent = worker.store.payer_spend(payer)?.saturating_add(
            worker
                .quota
                .borrow()
                .unreported_cost(view.key_id, Some(model)),
        );
        if budget.is_spent(spent) {
            return Err(spent_error(worker, party, budget, spent, now));
        }
    }
    Ok(spend)
}

fn spent_error(
    worker: &Worker,
    party: &Party,
    budget: Budget,
    spent: Money,
    now: i64,
) -> ProxyError {
    ProxyError::BudgetExceeded {
        message: format!(
            "{} has spent ${:.6} of its ${} budget",
            whose(party),
            spent.dollars(),
            budget.dollars
        ),
        resets_in: resets_in(worker, party, now),
    }
}

/// Seconds until `party`'s budget window ends, for a budget that has one.
fn resets_in(worker: &Worker, party: &Party, now: i64) -> Option<u64> {
    let payer = Payer::of_slot(&party.slot)?;
    let window = worker.store.budget_window_of(payer).ok().flatten()?;
    let end = worker
        .store
        .budget_reset_at(payer, Some(window))
        .ok()
        .flatten()?;
    Some(((end - now).max(0) as u64).div_ceil(1_000).max(1))
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
                        Ok(Ok(Grant::Unavailable)) => {
                            quota.refill_failed(id);
                            return Err(ProxyError::SharedStoreUnavailable(
                                "this key's max_requests is held in the shared store, which cannot be reached, and this node's share of it is used up".into(),
                            ));
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

/// Holds `need` of the budget of the payer of `slot`: `Ok(true)` when held,
/// `Ok(false)` when the ledger knows no budget (any more), `Err(Ok(left))`
/// when it has only `left`, `Err(Err(_))` when it could not be asked.
async fn take(
    worker: &Worker,
    slot: &[u8],
    need: Money,
    budget: Budget,
) -> Result<bool, Result<Money, ProxyError>> {
    loop {
        let take = worker
            .quota
            .borrow_mut()
            .take_budget(slot, need, budget.amount);
        match take {
            Take::Held => return Ok(true),
            Take::Exhausted(left) => return Err(Ok(left)),
            Take::Wait(event) => {
                let listener = event.listen();
                if worker.quota.borrow().is_refilling_budget(slot) {
                    listener.await;
                }
            }
            Take::Refill(at_least) => {
                let store = worker.store.clone();
                let workers = worker.settings.workers;
                let owned: Box<[u8]> = slot.into();
                // A ledger write fsyncs: never on the worker thread.
                let grant = monoio::spawn_blocking(move || match Payer::of_slot(&owned) {
                    Some(payer) => store.lease_budget(payer, at_least, workers),
                    None => Ok(BudgetGrant::Unlimited),
                })
                .await;
                let mut quota = worker.quota.borrow_mut();
                match grant {
                    Ok(Ok(BudgetGrant::Granted(granted))) => {
                        quota.budget_refilled(slot, budget.amount, Ok(granted))
                    }
                    Ok(Ok(BudgetGrant::Exhausted { left })) => {
                        quota.budget_refilled(slot, budget.amount, Err(left))
                    }
                    Ok(Ok(BudgetGrant::Unlimited)) => {
                        // The budget was lifted since this key was read.
                        quota.budget_refill_failed(slot);
                        return Ok(false);
                    }
                    Ok(Ok(BudgetGrant::Unavailable)) => {
                        quota.budget_refill_failed(slot);
                        return Err(Err(ProxyError::SharedStoreUnavailable(
                            "this budget is held in the shared store, which cannot be reached, and this node's share of it is used up".into(),
                        )));
                    }
                    Ok(Err(error)) => {
                        quota.budget_refill_failed(slot);
                        return Err(Err(error.into()));
                    }
                    Err(_) => {
                        quota.budget_refill_failed(slot);
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
    worker: &Worker,
    party: &Party,
    (budget, left): (Budget, Result<Money, ProxyError>),
    estimate: Money,
    now: i64,
) -> ProxyError {
    match left {
        Ok(left) => ProxyError::BudgetExceeded {
            message: format!(
                "{} has ${:.6} of its ${} budget left (neither spent nor held by requests in flight), less than this request may cost (${:.6})",
                whose(party),
                left.dollars(),
                budget.dollars,
                estimate.dollars()
            ),
            resets_in: resets_in(worker, party, now),
        },
        Err(error) => error,
    }
}
