//! Phase 2, plan: everything about a request that is decided before
//! anything is checked or sent, decided once and returned as one `Plan`.
//!
//! - The path must be in normal form (`path`).
//! - A `POST` to a model endpoint, while models are registered, has its
//!   body read whole and is routed by its `model`: the model's deployments,
//!   then its fallbacks', in the order to try them. A model that is not
//!   registered goes to the key's project's provider, as it came.
//! - Every other request goes to the key's project's provider (the
//!   pass-through), if the provider's endpoint and method allowlists take
//!   it. Its body streams upstream as it arrives, unless a decision needs
//!   it first: the cache key, or the model a restricted key names.
//! - Whether the cache applies, from the head alone.
//! - The most the request may cost, held out of budgets by `admit`.

use std::rc::Rc;

use super::fields::{self, AnswerLimits, Rewrite, RoutingFields};
use super::forward::Destination;
use super::{Session, cached, path};
use crate::cache::policy::Consult;
use crate::dialect::Dialect;
use crate::dialect::anthropic::ingress;
use crate::downstream::{BodyRead, HeldBody};
use crate::error::ProxyError;
use crate::http::{Framing, RequestHead};
use crate::litellm_config::RouterSettings;
use crate::providers::Provider;
use crate::store::Money;
use crate::upstream::Slot;
use crate::worker::Worker;
use crate::worker::auth::Allowlist;
use crate::worker::keys::CachedKey;
use crate::worker::models::{self, Deployment, ModelTable};

/// What was decided for one request.
pub struct Plan<'a> {
    /// The body, read whole when a decision needed it.
    pub body: Option<HeldBody<'a>>,
    /// What the allowlists check.
    pub named: Named,
    /// Where the request goes.
    pub target: Target<'a>,
    /// How the cache is consulted, when it applies.
    pub consult: Option<Consult>,
    /// The most the request may cost (zero when it is not priced).
    pub estimate: Money,
    /// What lowering its `max_tokens` would save, when a budget that
    /// cannot pay for the estimate may do that (`BUDGET_CAP_MAX_TOKENS`).
    pub cap: Option<Box<CapBasis>>,
}

impl Plan<'_> {
    /// The body read whole, or nothing.
    pub fn body(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }

    /// Sets the routed body's answer length to `max_tokens` (the field it
    /// has, `max_tokens` or `max_completion_tokens`, else `max_tokens`),
    /// and points the model's rewrite at the new body.
    pub fn cap_max_tokens(&mut self, max_tokens: u64) -> Result<(), ProxyError> {
        let (Some(body), Target::Deployments(routed)) = (self.body.as_mut(), &mut self.target)
        else {
            return Ok(());
        };
        let mut value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ProxyError::InvalidBody(format!("invalid JSON: {e}")))?;
        let Some(object) = value.as_object_mut() else {
            return Ok(());
        };
        let mut set = false;
        for field in ["max_tokens", "max_completion_tokens"] {
            if let Some(old) = object.get_mut(field).filter(|v| !v.is_null()) {
                *old = max_tokens.into();
                set = true;
            }
        }
        if !set {
            object.insert("max_tokens".into(), max_tokens.into());
        }
        let bytes = body.as_mut_vec();
        bytes.clear();
        serde_json::to_writer(&mut *bytes, &value)
            .map_err(|e| ProxyError::Internal(format!("cannot write the body: {e}")))?;
        let fields = RoutingFields::parse(bytes)?
            .ok_or_else(|| ProxyError::Internal("the capped body lost its model".into()))?;
        routed.rewrite = Rewrite::new(&fields);
        Ok(())
    }
}

/// What a routed request's estimate is made of, to find the longest
/// answer a budget can still pay for.
#[derive(Debug)]
pub struct CapBasis {
    prompt_tokens: u64,
    /// The answer's choices (`n`, `best_of`).
    choices: u64,
    /// The answer length the estimate assumed, per choice.
    max_tokens: u64,
    /// Input and output prices per token of the deployments it may go to.
    prices: Vec<(f64, f64)>,
}

impl CapBasis {
    /// The longest answer (per choice) whose estimate fits in `left`, and
    /// that estimate; `None` when not even one token's does, or when the
    /// request's own `max_tokens` already fits.
    pub fn within(&self, left: Money) -> Option<(u64, Money)> {
        let left = left.dollars();
        let tokens = self
            .prices
            .iter()
            .map(|&(input, output)| {
                let room = left - input * self.prompt_tokens as f64;
                if output <= 0.0 {
                    return f64::INFINITY;
                }
                (room / (output * self.choices as f64)).floor()
            })
            .fold(f64::INFINITY, f64::min);
        if !(1.0..self.max_tokens as f64).contains(&tokens) {
            return None;
        }
        let tokens = tokens as u64;
        let cost = self
            .prices
            .iter()
            .map(|&(input, output)| {
                Money::from_dollars(
                    input * self.prompt_tokens as f64 + output * (tokens * self.choices) as f64,
                )
            })
            .max()
            .unwrap_or_default();
        Some((tokens, cost))
    }
}

/// Where a request goes.
pub enum Target<'a> {
    /// The key's project's provider, with the provider key
    /// (`Destination::Provider`).
    Provider(Destination<'a>),
    /// A registered model's deployments.
    Deployments(Routed),
    /// Nowhere: the provider refuses it, but the cache may still answer it
    /// (a `HEAD` the provider does not take, from `GET`'s entry).
    CacheOnly(ProxyError),
    /// Answered here: an Anthropic client's token count for a model whose
    /// deployment has no count of its own to ask (not Anthropic's), an
    /// estimate (`ingress::request::estimate_input_tokens`).
    Counted(u64),
}

/// A request routed by its model.
pub struct Routed {
    /// The endpoint path without `/v1`, which the deployments are sent.
    pub endpoint: &'static [u8],
    /// The deployments to try, in order.
    pub candidates: Vec<Rc<Deployment>>,
    /// How the body is rewritten in place for each of them.
    pub rewrite: Rewrite,
    pub stream: bool,
    /// Whether to ask a stream for its token usage (`stream_options`).
    pub ask_usage: bool,
}

/// What a request names as its model, for the allowlists.
pub enum Named {
    /// The `model` of its JSON body, as the upstream will read it.
    Model(Box<str>),
    /// Nothing: it has no body.
    Nothing,
    /// Not known: a body that was not read, is not a JSON object, or has no
    /// plain string `model`.
    Unknown,
}

impl Named {
    fn in_body(body: &[u8]) -> Self {
        match RoutingFields::parse(body) {
            Ok(Some(fields)) => Named::Model(fields.model.into()),
            _ => Named::Unknown,
        }
    }

    fn of(model: Option<&str>) -> Self {
        model.map_or(Named::Unknown, |model| Named::Model(model.into()))
    }
}

pub async fn plan<'s: 'a, 'a>(
    s: &mut Session<'s>,
    key: &'a CachedKey,
) -> Result<Plan<'a>, ProxyError> {
    let path = s.head.path(&s.conn.buf);
    path::check_path(path)?;
    if let Some(endpoint) = model_endpoint(s.head, path)
        && models_registered(s.worker)?
    {
        return by_model(s, key, endpoint).await;
    }
    let (mut plan, restricted) = to_provider(s, key)?;
    // The body streams upstream as it arrives, unless a decision needs it
    // first: the model a restricted key names, or the cache key.
    if s.head.has_body() && (restricted || plan.consult.is_some()) {
        let body = read_body(s, 0).await?;
        if restricted {
            plan.named = Named::in_body(&body);
        }
        plan.body = Some(body);
    }
    Ok(plan)
}

/// The endpoint of a request that names a model (its path without `/v1`),
/// if it is one.
fn model_endpoint(head: &RequestHead, path: &[u8]) -> Option<&'static [u8]> {
    if head.method != http::Method::POST {
        return None;
    }
    let path = path.strip_prefix(b"/v1").unwrap_or(path);
    models::ENDPOINTS.iter().copied().find(|e| *e == path)
}

/// Whether this worker routes by model at all (any model registered).
fn models_registered(worker: &Worker) -> Result<bool, ProxyError> {
    let mut table = worker.models.borrow_mut();
    table.sync(&worker.store, &worker.settings)?;
    Ok(!table.is_empty())
}

/// A request to a model endpoint: read the body, find the model's
/// deployments and what the request may cost.
async fn by_model<'s: 'a, 'a>(
    s: &mut Session<'s>,
    key: &'a CachedKey,
    endpoint: &'static [u8],
) -> Result<Plan<'a>, ProxyError> {
    let body = read_body(s, fields::REWRITE_HEADROOM).await?;
    let fields = RoutingFields::parse(&body)?;
    let requested = fields.as_ref().map(|f| f.model);
    s.record.model = requested.map(Into::into);
    let name = requested.map(|m| key.view.model_aliases.get(m).map_or(m, String::as_str));
    // The deployments to try, drawn while the table is at hand (it is not
    // held across an `.await`).
    let candidates = name.and_then(|name| {
        let table = s.worker.models.borrow();
        let deployments = table.deployments(name)?;
        Some(candidates(
            &table,
            &s.worker.settings.router,
            name,
            deployments,
        ))
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
        let named = Named::of(requested);
        let (plan, _) = to_provider(s, key)?;
        return Ok(Plan {
            body: Some(body),
            named,
            ..plan
        });
    };
    if candidates.is_empty() {
        return Err(ProxyError::Internal(format!(
            "model {name:?} has no deployment to try"
        )));
    }
    s.record.routed = true;
    if endpoint == models::COUNT_TOKENS && candidates[0].dialect.dialect != Dialect::Anthropic {
        let tokens = ingress::request::estimate_input_tokens(&body).map_err(|e| {
            ProxyError::InvalidField {
                field: e.field,
                message: e.message,
            }
        })?;
        let named = Named::Model(name.into());
        return Ok(Plan {
            body: Some(body),
            named,
            target: Target::Counted(tokens),
            consult: None,
            estimate: Money(0),
            cap: None,
        });
    }
    let estimate = estimate_cost(
        s.worker,
        key,
        (&body, &fields.limits),
        endpoint,
        &candidates,
    );
    let cap = (estimate > Money(0)
        && s.worker.settings.budget_cap_max_tokens
        && endpoint != b"/embeddings")
        .then(|| {
            let default_max_tokens = s.worker.settings.budget_default_max_tokens;
            let (prompt_tokens, completion) =
                estimate_tokens(body.len(), &fields.limits, endpoint, default_max_tokens);
            let choices = choices(&fields.limits);
            Box::new(CapBasis {
                prompt_tokens,
                choices,
                max_tokens: completion / choices,
                prices: candidates
                    .iter()
                    .map(|d| (d.input_cost_per_token, d.output_cost_per_token))
                    .collect(),
            })
        });
    let routed = Routed {
        endpoint,
        candidates,
        rewrite: Rewrite::new(&fields),
        stream: fields.stream,
        // Only Chat Completions and Completions have `stream_options`.
        ask_usage: fields.stream
            && !fields.has_stream_options
            && (endpoint == models::CHAT || endpoint == b"/completions"),
    };
    Ok(Plan {
        named: Named::Model(name.into()),
        consult: cached::consult(s.worker, s.head, &s.conn.buf),
        body: Some(body),
        target: Target::Deployments(routed),
        estimate,
        cap,
    })
}

/// To the key's project's provider, with its provider key, if its
/// allowlists take the request; the body is not read here. Also returns
/// whether the key's allowlists restrict its models (then a body must be
/// read for the model it names).
fn to_provider<'a>(s: &Session<'a>, key: &'a CachedKey) -> Result<(Plan<'a>, bool), ProxyError> {
    let auth_fields = project_upstream_auth(key)?;
    let consult = cached::consult(s.worker, s.head, &s.conn.buf);
    let target = match provider_for(s.worker, s.head, &s.conn.buf) {
        Ok((index, provider)) => Target::Provider(Destination::Provider {
            slot: Slot::Provider(index),
            provider,
            auth_fields,
        }),
        // A `HEAD` the provider does not take may still be answered from
        // the cache (from `GET`'s entry); it is never sent upstream.
        Err(error @ ProxyError::MethodNotAllowed { .. })
            if s.head.method == http::Method::HEAD && consult.is_some() =>
        {
            Target::CacheOnly(error)
        }
        Err(error) => return Err(error),
    };
    let limit = s.worker.settings.limits.max_body_bytes;
    if let Framing::Length(length) = s.head.framing
        && length > limit
    {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let plan = Plan {
        body: None,
        named: if s.head.has_body() {
            Named::Unknown
        } else {
            Named::Nothing
        },
        target,
        consult,
        // Unpriced: nothing is held, but a key at or over its budget is
        // refused.
        estimate: Money(0),
        cap: None,
    };
    Ok((plan, Allowlist::of(&key.view).is_restricted()))
}

/// The `Authorization` line of a pass-through request's upstream: the
/// key's project's provider key, while the project is active.
pub fn project_upstream_auth(key: &CachedKey) -> Result<&[u8], ProxyError> {
    match &key.upstream_auth {
        Some(auth) if key.view.project_active => Ok(auth),
        // Active but without a provider key: a key made without a project.
        None if key.view.project_active => Err(ProxyError::KeyWithoutProject),
        _ => Err(ProxyError::ProjectInactive),
    }
}

/// The key's project's provider, if its endpoint and method allowlists
/// take the request: its index in the provider table, and the provider.
fn provider_for<'w>(
    worker: &'w Worker,
    head: &RequestHead,
    buf: &[u8],
) -> Result<(usize, &'w Provider), ProxyError> {
    let path = head.path(buf);
    let table = &worker.settings.providers;
    let provider = table.default_provider();
    if !provider.allows_path(path) {
        return Err(ProxyError::EndpointNotAllowed(
            String::from_utf8_lossy(path).into_owned(),
        ));
    }
    if !provider.allows_method(&head.method) {
        return Err(ProxyError::MethodNotAllowed {
            method: head.method.clone(),
            allow: provider.allow.clone(),
        });
    }
    Ok((table.default, provider))
}

/// Reads the request's whole body (up to `MAX_REQUEST_SIZE`, within the
/// worker's budget for bodies held whole) for a decision that needs it,
/// with `headroom` spare bytes for a rewrite in place; the request's event
/// gets it too, when it keeps bodies.
async fn read_body<'s>(s: &mut Session<'s>, headroom: usize) -> Result<HeldBody<'s>, ProxyError> {
    let worker = s.worker;
    let limits = &worker.settings.limits;
    let read = BodyRead {
        limit: limits.max_body_bytes as usize,
        headroom,
        timeout: limits.body_timeout,
    };
    let body = s
        .conn
        .read_held_body(&worker.bodies, s.head, &read, &mut s.body_done)
        .await?;
    if let Some(capture) = s.record.request.as_mut() {
        capture.feed(&body);
    }
    Ok(body)
}

/// The deployments to try, in order: up to `1 + num_retries` of the
/// model's, drawn by weight, then as many of each of its fallbacks'.
fn candidates(
    table: &ModelTable,
    router: &RouterSettings,
    name: &str,
    deployments: &[Rc<Deployment>],
) -> Vec<Rc<Deployment>> {
    let attempts = router.num_retries + 1;
    let mut order = models::draw_order(deployments, attempts);
    for fallback in router.fallbacks.get(name).into_iter().flatten() {
        if let Some(deployments) = table.deployments(fallback) {
            order.extend(models::draw_order(deployments, attempts));
        }
    }
    order
}

/// The most this request may cost, to be held out of the budgets of the
/// key, its user, its team and its use of the model (those that have one):
/// `estimate` at the dearest price
/// among the deployments it may go to. Keys without a budget hold nothing
/// and read nothing more of the body.
fn estimate_cost(
    worker: &Worker,
    key: &CachedKey,
    (body, limits): (&[u8], &AnswerLimits),
    endpoint: &[u8],
    candidates: &[Rc<Deployment>],
) -> Money {
    if !key.has_budget() {
        return Money(0);
    }
    let default_max_tokens = worker.settings.budget_default_max_tokens;
    let (prompt, completion) = estimate_tokens(body.len(), limits, endpoint, default_max_tokens);
    candidates
        .iter()
        .map(|deployment| deployment.cost(prompt, completion))
        .max()
        .unwrap_or_default()
}

/// The tokens a request may use: a prompt token for every 4 bytes of its
/// body (the body holds the prompt and more), and the completion tokens its
/// `max_tokens` or `max_completion_tokens` allow (or `default_max_tokens`),
/// for each of its `n` (or `best_of`) choices. Embeddings have no
/// completion.
fn estimate_tokens(
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
    (prompt, per_choice.saturating_mul(choices(limits)))
}

/// The answer's choices: its `n` or `best_of`, at least 1.
fn choices(limits: &AnswerLimits) -> u64 {
    limits
        .n
        .unwrap_or(1)
        .max(limits.best_of.unwrap_or(1))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::RoutingFields;
    use super::{CapBasis, Money};

    #[test]
    fn the_longest_answer_a_budget_pays_for() {
        let basis = CapBasis {
            prompt_tokens: 100,
            choices: 2,
            max_tokens: 16,
            // The dearest deployment decides.
            prices: vec![(1e-6, 1e-6), (1e-6, 2e-6)],
        };
        let dollars = |d: f64| Money::from_dollars(d);
        // 100 prompt tokens ($0.0001), then 2 choices at $0.000002 a token.
        assert_eq!(
            basis.within(dollars(0.0001 + 0.000040)),
            Some((10, dollars(0.0001 + 0.000040)))
        );
        assert_eq!(basis.within(dollars(0.0001 + 0.000003)), None);
        // Enough for what was asked: nothing to lower.
        assert_eq!(basis.within(dollars(1.0)), None);
    }

    /// The estimate of a whole body, its limits read as routing reads them.
    fn estimate(body: &[u8], endpoint: &[u8], default_max_tokens: u64) -> (u64, u64) {
        let fields = RoutingFields::parse(body).unwrap().unwrap();
        super::estimate_tokens(body.len(), &fields.limits, endpoint, default_max_tokens)
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
