//! A request for a registered model: read the body, find the model's
//! deployments, check that the key may use the model and can still pay
//! (`proxy::authorize`),
//! rewrite the body for the deployment drawn, forward (on to another
//! deployment when one fails before anything reached the client), relay
//! while reading the token usage, and charge what it cost.
//!
//! Only `POST` to the endpoints below is routed, and only while models are
//! registered: without them every request takes the plain pass-through.

use std::rc::Rc;
use std::time::Duration;

use super::Exchange;
use super::cached;
use super::fields::{self, AnswerLimits, RoutingFields};
use super::forward::{self, Destination, ResponseStart};
use super::relay::{self, Extras};
use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http::io::read_append;
use crate::http::{Framing, RequestHead};
use crate::litellm_config::RouterSettings;
use crate::record::usage::UsageScan;
use crate::store::{KeyView, Money, Spend};
use crate::worker::Worker;
use crate::worker::keys::CachedKey;
use crate::worker::models::{self, Deployment, ModelTable};
use crate::worker::quota::BudgetHold;

/// The endpoints whose requests name a model.
const ENDPOINTS: [&[u8]; 3] = [b"/chat/completions", b"/completions", b"/embeddings"];
/// Largest answer read whole to report its cost in the response head.
const MAX_COSTED_ANSWER: u64 = 1 << 20;
/// The output buffer a request body went out in is kept for the answer up
/// to this size; larger, it is freed rather than held during the relay.
const KEPT_OUT_CAPACITY: usize = 64 << 10;

/// The endpoint of a routable request (its path without `/v1`), if it is one.
pub fn endpoint(head: &RequestHead, path: &[u8]) -> Option<&'static [u8]> {
    if head.method != http::Method::POST {
        return None;
    }
    let path = path.strip_prefix(b"/v1").unwrap_or(path);
    ENDPOINTS.iter().copied().find(|e| *e == path)
}

/// Whether this worker routes by model at all (any model registered).
pub fn active(worker: &Worker) -> Result<bool, ProxyError> {
    let mut table = worker.models.borrow_mut();
    table.sync(&worker.store)?;
    Ok(!table.is_empty())
}

pub async fn handle(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    key: &CachedKey,
    endpoint: &'static [u8],
    exchange: &mut Exchange,
) -> Result<(), ProxyError> {
    let mut body = super::read_body(worker, conn, head, exchange, fields::REWRITE_HEADROOM).await?;
    let fields = RoutingFields::parse(&body)?;
    let requested = fields.as_ref().map(|f| f.model);
    exchange.record.model = requested.map(Into::into);
    let name = requested.map(|m| key.view.model_aliases.get(m).map_or(m, String::as_str));
    // The deployments to try, drawn while the table is at hand (it is not
    // held across an `.await`).
    let candidates: Option<Vec<Rc<Deployment>>> = name.and_then(|n| {
        let table = worker.models.borrow();
        let routes = table.deployments(n)?;
        Some(candidates(&table, &worker.settings.router, n, routes))
    });
    let (Some(fields), Some(name), Some(candidates)) = (fields, name, candidates) else {
        // Not a registered model: the key's project's provider, if it has one.
        if key.upstream_auth.is_none() {
            return Err(match requested {
                Some(model) => ProxyError::ModelNotFound(model.to_string()),
                None => ProxyError::InvalidField {
                    field: "model".into(),
                    message: "required".into(),
                },
            });
        }
        // The body goes as it came: the model checked is the one it names.
        return super::pass_through(worker, conn, head, key, Some((&body, requested)), exchange)
            .await;
    };
    exchange.record.routed = true;
    let estimate = estimate_cost(worker, key, (&body, &fields.limits), endpoint, &candidates);
    let (spend, hold) = super::authorize(worker, key, super::Named::Model(name), estimate).await?;
    if let Some(consult) = cached::consult(worker, head, &conn.buf)
        && cached::lookup(worker, conn, head, key, consult, &body, exchange).await?
    {
        return Ok(());
    }

    if candidates.is_empty() {
        return Err(ProxyError::Internal(format!(
            "model {name:?} has no deployment to try"
        )));
    }

    let stream = fields.stream;
    let ask_usage = stream && !fields.has_stream_options && endpoint != b"/embeddings";
    // The body is rewritten in place for each deployment tried: held once.
    let mut rewrite = fields::Rewrite::new(&fields);
    for (index, route) in candidates.iter().enumerate() {
        rewrite.apply(body.as_mut_vec(), &route.upstream_model, ask_usage);
        let destination = Destination {
            slot: route.slot.clone(),
            provider: &route.provider,
            authorization: &route.authorization,
            routed: Some((endpoint, &body)),
        };
        let last = index + 1 == candidates.len();
        let response = match forward::forward(worker, conn, head, &destination, exchange).await {
            Ok(response) if !last && retryable(response.head.status) => {
                tracing::debug!(
                    request_id = exchange.request_id.as_str(),
                    deployment = route.id,
                    status = response.head.status,
                    "deployment failed; trying the next"
                );
                continue;
            }
            Ok(response) => response,
            Err(error) if !last && is_upstream_failure(&error) => {
                tracing::debug!(
                    request_id = exchange.request_id.as_str(),
                    deployment = route.id,
                    %error,
                    "deployment failed; trying the next"
                );
                continue;
            }
            Err(error) => return Err(error),
        };
        // No more tries: the body (and its share of the worker's budget)
        // and the copy of it that went out are given back before the
        // answer is relayed, which may take long.
        let destination = Destination {
            slot: route.slot.clone(),
            provider: &route.provider,
            authorization: &route.authorization,
            routed: None,
        };
        drop(body);
        if conn.out.capacity() > KEPT_OUT_CAPACITY {
            conn.out = Vec::new();
        }
        return relay_and_charge(
            worker,
            conn,
            head,
            key,
            route,
            &destination,
            response,
            exchange,
            (stream, spend, hold),
        )
        .await;
    }
    Err(ProxyError::Internal(
        "the last deployment tried had no answer".into(),
    ))
}

/// The deployments to try, in order: up to `1 + num_retries` of the
/// model's, drawn by weight, then as many of each of its fallbacks'.
fn candidates(
    table: &ModelTable,
    router: &RouterSettings,
    name: &str,
    routes: &[Rc<Deployment>],
) -> Vec<Rc<Deployment>> {
    let attempts = router.num_retries + 1;
    let mut order = models::draw_order(routes, attempts);
    for fallback in router.fallbacks.get(name).into_iter().flatten() {
        if let Some(routes) = table.deployments(fallback) {
            order.extend(models::draw_order(routes, attempts));
        }
    }
    order
}

/// A 429 or 5xx from a deployment: another may do better.
fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

fn is_upstream_failure(error: &ProxyError) -> bool {
    matches!(
        error,
        ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamTls(_)
            | ProxyError::UpstreamConnectTimeout
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamClosed
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamIo(_)
    )
}

/// Refuses a key (or user) at or over its budget; returns what was spent.
/// The ledger's figure, plus what this worker has not reported yet. This is
/// the check for every request of a budgeted key, priced or not; a priced
/// (routed) request also holds an estimate of its cost (`estimate_cost`),
/// which is what keeps the budget under concurrent load.
pub(super) fn check_budgets(worker: &Worker, view: &KeyView) -> Result<Spend, ProxyError> {
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

/// The most this request may cost, to be held out of the key's and its
/// user's budgets (those that have one): `estimate` at the dearest price
/// among the deployments it may go to. Keys without a budget hold nothing
/// and read nothing more of the body.
fn estimate_cost(
    worker: &Worker,
    key: &CachedKey,
    (body, limits): (&[u8], &AnswerLimits),
    endpoint: &[u8],
    candidates: &[Rc<Deployment>],
) -> Money {
    let view = &key.view;
    if view.max_budget.is_none() && view.user_max_budget.is_none() {
        return Money(0);
    }
    let default_max_tokens = worker.settings.budget_default_max_tokens;
    let (prompt, completion) = estimate(body.len(), limits, endpoint, default_max_tokens);
    candidates
        .iter()
        .map(|route| route.cost(prompt, completion))
        .max()
        .unwrap_or_default()
}

/// The tokens a request may use: a prompt token for every 4 bytes of its
/// body (the body holds the prompt and more), and the completion tokens its
/// `max_tokens` or `max_completion_tokens` allow (or `default_max_tokens`),
/// for each of its `n` (or `best_of`) choices. Embeddings have no
/// completion.
fn estimate(
    body_len: usize,
    limits: &AnswerLimits,
    endpoint: &[u8],
    default_max_tokens: u64,
) -> (u64, u64) {
    let prompt = (body_len as u64).div_ceil(4);
    if endpoint == b"/embeddings" {
        return (prompt, 0);
    }
    let per_choice = match (limits.max_tokens, limits.max_completion_tokens) {
        (None, None) => default_max_tokens,
        (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)),
    };
    let choices = limits
        .n
        .unwrap_or(1)
        .max(limits.best_of.unwrap_or(1))
        .max(1);
    (prompt, per_choice.saturating_mul(choices))
}

#[allow(clippy::too_many_arguments)]
async fn relay_and_charge(
    worker: &Worker,
    conn: &mut ClientConn,
    head: &RequestHead,
    key: &CachedKey,
    route: &Deployment,
    destination: &Destination<'_>,
    mut response: ResponseStart,
    exchange: &mut Exchange,
    (stream, spend, hold): (bool, Spend, BudgetHold<'_>),
) -> Result<(), ProxyError> {
    let key_id = key.view.key_id;
    let framing = response.head.framing(&head.method);
    let whole = match framing {
        Framing::Length(n) if !stream && n <= MAX_COSTED_ANSWER => {
            read_whole_body(&mut response, n, route.provider.timeouts.read).await?;
            true
        }
        _ => false,
    };
    if whole {
        // The cost is known before the head goes out: report it there.
        let mut scan = UsageScan::new(false);
        scan.feed(&response.buf[response.head.len..]);
        let usage = scan.finish();
        let cost = usage.map_or(Money(0), |u| {
            route.cost(u.prompt_tokens, u.completion_tokens)
        });
        worker.quota.borrow_mut().charge(key_id, cost);
        hold.settle(cost);
        exchange.record.usage = usage;
        exchange.record.cost = cost;
        let cost_text = format!("{}", cost.dollars());
        let spend_text = format!("{}", spend.key.saturating_add(cost).dollars());
        let extra: [(&str, &[u8]); 3] = [
            ("x-litellm-response-cost", cost_text.as_bytes()),
            ("x-litellm-key-spend", spend_text.as_bytes()),
            ("x-litellm-model-id", route.id.as_bytes()),
        ];
        let extras = Extras {
            headers: &extra,
            usage: None,
        };
        return relay::relay(worker, conn, head, destination, response, exchange, extras).await;
    }
    let spend_text = format!("{}", spend.key.dollars());
    let extra: [(&str, &[u8]); 2] = [
        ("x-litellm-key-spend", spend_text.as_bytes()),
        ("x-litellm-model-id", route.id.as_bytes()),
    ];
    let mut scan = UsageScan::new(stream);
    let extras = Extras {
        headers: &extra,
        usage: Some(&mut scan),
    };
    let result = relay::relay(worker, conn, head, destination, response, exchange, extras).await;
    // Whatever was relayed is charged, a stream cut short included.
    if let Some(usage) = scan.finish() {
        let cost = route.cost(usage.prompt_tokens, usage.completion_tokens);
        worker.quota.borrow_mut().charge(key_id, cost);
        hold.settle(cost);
        exchange.record.usage = Some(usage);
        exchange.record.cost = cost;
    }
    result
}

/// Reads the rest of a `Content-Length` body of `length` bytes into
/// `response.buf`.
async fn read_whole_body(
    response: &mut ResponseStart,
    length: u64,
    inactivity: Duration,
) -> Result<(), ProxyError> {
    let end = response.head.len + length as usize;
    while response.buf.len() < end {
        let buf = std::mem::take(&mut response.buf);
        let wanted = end - buf.len();
        let read = read_append(&mut response.stream, buf, wanted);
        match monoio::time::timeout(inactivity, read).await {
            Err(_) => return Err(ProxyError::UpstreamTimeout),
            Ok((Ok(n), buf)) if n > 0 => response.buf = buf,
            Ok((Ok(_), _)) => return Err(ProxyError::UpstreamClosed),
            Ok((Err(error), _)) => return Err(ProxyError::UpstreamIo(error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RoutingFields;

    /// The estimate of a whole body, its limits read as routing reads them.
    fn estimate(body: &[u8], endpoint: &[u8], default_max_tokens: u64) -> (u64, u64) {
        let fields = RoutingFields::parse(body).unwrap().unwrap();
        super::estimate(body.len(), &fields.limits, endpoint, default_max_tokens)
    }

    #[test]
    fn estimates_from_the_body() {
        let chat = |extra: &str| format!(r#"{{"model":"m","messages":[]{extra}}}"#);
        let plain = chat("");
        assert_eq!(
            estimate(plain.as_bytes(), b"/chat/completions", 100),
            (plain.len().div_ceil(4) as u64, 100)
        );
        let limited = chat(r#","max_tokens":16"#);
        assert_eq!(
            estimate(limited.as_bytes(), b"/chat/completions", 100).1,
            16
        );
        let both = chat(r#","max_tokens":16,"max_completion_tokens":40,"n":3"#);
        assert_eq!(estimate(both.as_bytes(), b"/chat/completions", 100).1, 120);
        let best_of = chat(r#","max_tokens":10,"best_of":5,"n":2"#);
        assert_eq!(estimate(best_of.as_bytes(), b"/completions", 100).1, 50);
        // A value that bounds nothing leaves the default.
        let odd = chat(r#","max_tokens":"lots""#);
        assert_eq!(estimate(odd.as_bytes(), b"/chat/completions", 100).1, 100);
        let embed = r#"{"model":"e","input":"some text","max_tokens":9}"#;
        assert_eq!(estimate(embed.as_bytes(), b"/embeddings", 100), (12, 0));
    }
}
