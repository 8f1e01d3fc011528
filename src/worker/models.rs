//! The registered models as the request path uses them: per model name, its
//! deployments resolved once (upstream, provider key, upstream model name,
//! weight, prices) and rebuilt from the store when the store generation
//! moves. A worker holds its own table; nothing here is shared.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::dialect;
use crate::providers::{Provider, Target, Timeouts};
use crate::store::{self, Money, Store, StoreError};
use crate::upstream::Slot;

/// Idle upstream connections kept per worker and origin.
const MAX_IDLE: usize = 64;

/// One deployment as this worker sends to it: the stored deployment with
/// its provider, credentials and prices resolved.
#[derive(Debug)]
pub struct Deployment {
    pub id: String,
    pub model_name: String,
    pub provider: Provider,
    /// Its provider prefix's entry: the dialect it is spoken to in.
    pub dialect: &'static dialect::Provider,
    /// The pool stack for its origin.
    pub slot: Slot,
    /// The `model` sent upstream (`litellm_params.model` without its
    /// provider prefix).
    pub upstream_model: String,
    /// `Bearer <provider key>`; empty for an upstream that takes none.
    pub authorization: Box<[u8]>,
    /// Share of the model's traffic, relative to its other deployments.
    pub weight: f64,
    pub input_cost_per_token: f64,
    pub output_cost_per_token: f64,
}

impl Deployment {
    /// What a request that used these tokens cost.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Money {
        Money::from_dollars(
            prompt_tokens as f64 * self.input_cost_per_token
                + completion_tokens as f64 * self.output_cost_per_token,
        )
    }
}

#[derive(Default)]
pub struct ModelTable {
    generation: u64,
    groups: HashMap<String, Vec<Rc<Deployment>>>,
}

impl ModelTable {
    /// Rebuilds the table if the store changed since it was built.
    pub fn sync(&mut self, store: &Store) -> Result<(), StoreError> {
        let generation = store.generation();
        if generation == self.generation {
            return Ok(());
        }
        let mut groups: HashMap<String, Vec<Rc<Deployment>>> = HashMap::new();
        for deployment in store.list_deployments()? {
            match resolve(store, &deployment) {
                Ok(route) => groups
                    .entry(route.model_name.clone())
                    .or_default()
                    .push(Rc::new(route)),
                Err(reason) => tracing::warn!(
                    model = deployment.model_name,
                    id = deployment.id,
                    reason,
                    "model deployment skipped"
                ),
            }
        }
        self.groups = groups;
        self.generation = generation;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The deployments of `model_name`.
    pub fn deployments(&self, model_name: &str) -> Option<&[Rc<Deployment>]> {
        self.groups.get(model_name).map(Vec::as_slice)
    }
}

/// One deployment of `routes`, drawn with probability proportional to its
/// weight; `skip` lists ids already tried.
pub fn pick<'r>(routes: &'r [Rc<Deployment>], skip: &[&str]) -> Option<&'r Rc<Deployment>> {
    pick_where(routes, |r| !skip.contains(&r.id.as_str()))
}

/// One of the routes `open` admits, drawn by weight.
fn pick_where(
    routes: &[Rc<Deployment>],
    open: impl Fn(&Rc<Deployment>) -> bool,
) -> Option<&Rc<Deployment>> {
    let total: f64 = routes.iter().filter(|r| open(r)).map(|r| r.weight).sum();
    let mut point = fastrand::f64() * total;
    let mut last = None;
    for route in routes.iter().filter(|r| open(r)) {
        last = Some(route);
        if point < route.weight {
            return Some(route);
        }
        point -= route.weight;
    }
    last
}

/// Up to `attempts` different deployments of `routes`, in the order they
/// are to be tried: each drawn by weight from those not drawn yet.
pub fn draw_order(routes: &[Rc<Deployment>], attempts: usize) -> Vec<Rc<Deployment>> {
    let mut order: Vec<Rc<Deployment>> = Vec::with_capacity(attempts.min(routes.len()));
    while order.len() < attempts {
        let drawn = pick_where(routes, |r| !order.iter().any(|o| Rc::ptr_eq(o, r)));
        match drawn {
            Some(route) => order.push(route.clone()),
            None => break,
        }
    }
    order
}

fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

fn number(map: &Map<String, Value>, name: &str) -> Option<f64> {
    map.get(name).and_then(Value::as_f64)
}

fn resolve(store: &Store, deployment: &store::Deployment) -> Result<Deployment, String> {
    let params = object(&deployment.params);
    let secrets = store
        .deployment_secrets(deployment)
        .map_err(|e| e.to_string())?
        .map(|text| object(&text))
        .unwrap_or_default();
    // A named credential fills in what the deployment does not say itself.
    let credential = match params
        .get("litellm_credential_name")
        .and_then(Value::as_str)
    {
        Some(name) => {
            let credential = store.get_credential(name).map_err(|e| e.to_string())?;
            object(
                &store
                    .credential_values(&credential)
                    .map_err(|e| e.to_string())?,
            )
        }
        None => Map::new(),
    };
    let setting = |name: &str| {
        params
            .get(name)
            .or_else(|| secrets.get(name))
            .or_else(|| credential.get(name))
            .and_then(Value::as_str)
    };
    let model = setting("model").ok_or("litellm_params.model is missing")?;
    // The prefix decides the default base URL; an unknown one (stored
    // before prefixes were checked) leaves the deployment out.
    let (known, upstream_model) = dialect::parse(model).map_err(|e| e.to_string())?;
    let upstream_model = upstream_model.to_string();
    let base = known.base(setting("api_base")).map_err(|e| e.to_string())?;
    let target = Target::parse(base).map_err(|e| e.to_string())?;
    let origin: Rc<str> = format!(
        "{}://{}:{}",
        if target.tls { "https" } else { "http" },
        target.host,
        target.port
    )
    .into();
    // No key given, no `Authorization` header: a provider that takes no
    // key (`dialect::Key::None`) gets none, and the others answer 401.
    let authorization = setting("api_key")
        .map(|key| format!("Bearer {key}").into_bytes().into_boxed_slice())
        .unwrap_or_default();
    let mut timeouts = Timeouts::default();
    if let Some(seconds) = number(&params, "timeout").filter(|s| *s > 0.0) {
        timeouts.response_header = Duration::from_secs_f64(seconds);
        timeouts.read = Duration::from_secs_f64(seconds);
    }
    let info = object(&deployment.model_info);
    let weight = number(&params, "weight")
        .or_else(|| number(&params, "rpm"))
        .filter(|w| *w > 0.0)
        .unwrap_or(1.0);
    let methods = vec![http::Method::POST];
    Ok(Deployment {
        id: deployment.id.clone(),
        model_name: deployment.model_name.clone(),
        dialect: known,
        provider: Provider {
            name: deployment.model_name.clone(),
            target,
            endpoints: Vec::new(),
            allow: "POST".into(),
            methods,
            timeouts,
            max_idle: MAX_IDLE,
        },
        slot: Slot::Origin(origin),
        upstream_model,
        authorization,
        weight,
        input_cost_per_token: number(&info, "input_cost_per_token").unwrap_or(0.0),
        output_cost_per_token: number(&info, "output_cost_per_token").unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, weight: f64) -> Rc<Deployment> {
        Rc::new(Deployment {
            id: id.into(),
            model_name: "m".into(),
            provider: crate::providers::ProviderTable::openai("http://127.0.0.1:1")
                .expect("table")
                .providers
                .remove(0),
            dialect: &dialect::PROVIDERS[0],
            slot: Slot::Provider(0),
            upstream_model: "m".into(),
            authorization: Box::default(),
            weight,
            input_cost_per_token: 1e-6,
            output_cost_per_token: 2e-6,
        })
    }

    #[test]
    fn picks_by_weight_and_skips_the_tried() {
        let routes = vec![route("a", 9.0), route("b", 1.0)];
        let mut a = 0;
        for _ in 0..10_000 {
            if pick(&routes, &[]).map(|r| r.id.as_str()) == Some("a") {
                a += 1;
            }
        }
        assert!((8_500..9_500).contains(&a), "a drawn {a} times in 10,000");
        assert_eq!(pick(&routes, &["a"]).map(|r| r.id.as_str()), Some("b"));
        assert!(pick(&routes, &["a", "b"]).is_none());
        let order: Vec<String> = draw_order(&routes, 5)
            .iter()
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(order.len(), 2);
        assert_ne!(order[0], order[1]);
        assert_eq!(draw_order(&routes, 1).len(), 1);
    }

    #[test]
    fn costs_are_exact() {
        let r = route("a", 1.0);
        assert_eq!(r.cost(10, 5), Money::from_dollars(20e-6));
        assert_eq!(r.cost(10, 5).0, 20_000_000);
    }
}
