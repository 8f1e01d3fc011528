//! The registered models as the request path uses them: per model name, its
//! deployments resolved once (upstream, provider key, upstream model name,
//! weight, prices) and rebuilt from the store when the store generation
//! moves. A worker holds its own table; nothing here is shared.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::dialect::{self, Dialect};
use crate::providers::{Provider, Target, Timeouts};
use crate::settings::ServerSettings;
use crate::store::{self, Meter, Money, Store, StoreError};
use crate::upstream::Slot;

/// Idle upstream connections kept per worker and origin.
const MAX_IDLE: usize = 64;

/// The endpoints whose requests name a model, as paths without `/v1`:
/// OpenAI's, then Anthropic's (`MESSAGES`, for Anthropic clients).
pub const ENDPOINTS: [&[u8]; 7] = [
    CHAT,
    b"/completions",
    b"/embeddings",
    b"/responses",
    b"/moderations",
    MESSAGES,
    COUNT_TOKENS,
];
pub const CHAT: &[u8] = b"/chat/completions";
pub const MESSAGES: &[u8] = b"/messages";
pub const COUNT_TOKENS: &[u8] = b"/messages/count_tokens";

/// Whether a request to `endpoint` is in Anthropic's Messages dialect
/// (else OpenAI's).
pub fn is_messages(endpoint: &[u8]) -> bool {
    endpoint == MESSAGES || endpoint == COUNT_TOKENS
}

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
    /// The provider key as its dialect sends it, as whole header lines
    /// (`api-key: ...\r\n`); empty for an upstream that takes no key.
    pub auth_fields: Box<[u8]>,
    /// The AWS credentials each request is signed with (Bedrock's).
    pub aws: Option<Box<dialect::bedrock::Credentials>>,
    /// The request target sent upstream for each endpoint of `ENDPOINTS`
    /// the deployment serves (after its base URL's path). A dialect whose
    /// target depends on the request (a stream's) makes its own.
    targets: Vec<(&'static [u8], Box<[u8]>)>,
    /// Share of the model's traffic, relative to its other deployments.
    pub weight: f64,
    pub input_cost_per_token: f64,
    pub output_cost_per_token: f64,
    /// `litellm_params.rpm` and `tpm`: what the gateway sends it per minute,
    /// with the names of their counters (`worker::limits`).
    pub rpm: Option<(u64, Box<[u8]>)>,
    pub tpm: Option<(u64, Box<[u8]>)>,
}

impl Deployment {
    /// The request target sent upstream for `endpoint` (one of
    /// `ENDPOINTS`), if the deployment serves it.
    pub fn target(&self, endpoint: &[u8]) -> Option<&[u8]> {
        self.targets
            .iter()
            .find(|(served, _)| *served == endpoint)
            .map(|(_, target)| &target[..])
    }

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
    pub fn sync(&mut self, store: &Store, settings: &ServerSettings) -> Result<(), StoreError> {
        let generation = store.generation();
        if generation == self.generation {
            return Ok(());
        }
        let mut groups: HashMap<String, Vec<Rc<Deployment>>> = HashMap::new();
        for deployment in store.list_deployments()? {
            match resolve(store, settings, &deployment) {
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

fn resolve(
    store: &Store,
    settings: &ServerSettings,
    deployment: &store::Deployment,
) -> Result<Deployment, String> {
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
    // The prefix decides the dialect and the default base URL; an unknown
    // one (stored before prefixes were checked) leaves the deployment out.
    let (known, upstream_model) = dialect::parse(model).map_err(|e| e.to_string())?;
    let upstream_model = upstream_model.to_string();
    let aws = match known.dialect {
        Dialect::Bedrock => Some(Box::new(aws_credentials(&setting)?)),
        _ => None,
    };
    let base = match (&aws, setting("api_base")) {
        (Some(aws), None) => dialect::bedrock::default_base(&aws.region),
        (_, given) => known.base(given).map_err(|e| e.to_string())?.to_string(),
    };
    let mut base = base.as_str();
    if known.dialect == Dialect::Anthropic {
        // A base given as the whole Messages URL, as LiteLLM accepts it.
        base = base.trim_end_matches('/');
        base = base.strip_suffix("/v1/messages").unwrap_or(base);
    }
    let target = Target::parse(base).map_err(|e| e.to_string())?;
    let origin: Rc<str> = format!(
        "{}://{}:{}",
        if target.tls { "https" } else { "http" },
        target.host,
        target.port
    )
    .into();
    let auth_fields = auth_fields(known, &setting)?;
    let api_version = setting("api_version")
        .map(str::to_string)
        .or_else(|| settings.azure_api_version.clone())
        .unwrap_or_else(|| dialect::azure::DEFAULT_API_VERSION.to_string());
    if known.dialect == Dialect::Azure && !dialect::azure::is_api_version(&api_version) {
        return Err(format!(
            "api_version {api_version:?} cannot be sent in a URL"
        ));
    }
    let targets = targets(known.dialect, &upstream_model, &api_version);
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
        auth_fields,
        aws,
        targets,
        weight,
        input_cost_per_token: number(&info, "input_cost_per_token").unwrap_or(0.0),
        output_cost_per_token: number(&info, "output_cost_per_token").unwrap_or(0.0),
        rpm: limit(&params, "rpm", Meter::Requests, &deployment.id),
        tpm: limit(&params, "tpm", Meter::Tokens, &deployment.id),
    })
}

/// A deployment's per-minute limit `field`, with its counter's name: the
/// deployment's id under its own tag in the ledger.
fn limit(
    params: &Map<String, Value>,
    field: &str,
    meter: Meter,
    id: &str,
) -> Option<(u64, Box<[u8]>)> {
    let value = number(params, field).filter(|n| *n >= 1.0)?;
    let slot = [&b"d"[..], id.as_bytes()].concat();
    Some((value as u64, store::counter_id(meter, &slot)))
}

/// The provider key as `provider` sends it. No key given, no key field: a provider that takes no key
/// (`dialect::Key::None`) gets none, and the others answer 401.
fn auth_fields<'s>(
    provider: &dialect::Provider,
    setting: &impl Fn(&str) -> Option<&'s str>,
) -> Result<Box<[u8]>, String> {
    let mut fields = String::new();
    let key = setting("api_key");
    // Azure takes an Entra ID token as Bearer instead of a key.
    let ad_token = setting("azure_ad_token").filter(|_| provider.dialect == Dialect::Azure);
    for (name, value) in [
        ("litellm_params.api_key", key),
        ("azure_ad_token", ad_token),
    ] {
        if value.is_some_and(|value| !dialect::is_field_value(value)) {
            return Err(format!(
                "{name} has a line break or another control character"
            ));
        }
    }
    match (provider.key, key, ad_token) {
        (dialect::Key::Field(name), Some(key), _) => fields = format!("{name}: {key}\r\n"),
        (_, None, Some(token)) => fields = format!("Authorization: Bearer {token}\r\n"),
        (_, Some(key), _) => fields = format!("Authorization: Bearer {key}\r\n"),
        (_, None, None) => {}
    }
    Ok(fields.into_bytes().into_boxed_slice())
}

/// A Bedrock deployment's AWS credentials and region (LiteLLM's names).
fn aws_credentials<'s>(
    setting: &impl Fn(&str) -> Option<&'s str>,
) -> Result<dialect::bedrock::Credentials, String> {
    let required = |name: &str| {
        setting(name)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("litellm_params.{name} is required for bedrock/"))
    };
    let credentials = dialect::bedrock::Credentials {
        access_key_id: required("aws_access_key_id")?,
        secret_access_key: required("aws_secret_access_key")?,
        session_token: setting("aws_session_token").map(str::to_string),
        region: required("aws_region_name")?,
    };
    // The region goes into the host name; the key id and token into fields.
    if !dialect::is_path_name(&credentials.region) {
        return Err("litellm_params.aws_region_name is not a region name".into());
    }
    let sent = [
        Some(&credentials.access_key_id),
        credentials.session_token.as_ref(),
    ];
    if sent
        .into_iter()
        .flatten()
        .any(|v| !dialect::is_field_value(v))
    {
        return Err("an AWS credential has a line break or another control character".into());
    }
    Ok(credentials)
}

/// The request target of each endpoint a deployment of `dialect` serves.
/// An Anthropic client's `/messages` goes to an OpenAI-dialect deployment
/// as a Chat Completions request (translated), and an OpenAI client's
/// chat to Anthropic as a Messages one.
fn targets(
    dialect: Dialect,
    upstream_model: &str,
    api_version: &str,
) -> Vec<(&'static [u8], Box<[u8]>)> {
    let target = |text: &str| Box::from(text.as_bytes());
    match dialect {
        Dialect::OpenAi => ENDPOINTS
            .iter()
            .filter(|e| **e != COUNT_TOKENS)
            .map(|e| {
                (
                    *e,
                    if *e == MESSAGES {
                        Box::from(CHAT)
                    } else {
                        Box::from(*e)
                    },
                )
            })
            .collect(),
        Dialect::Azure => ENDPOINTS
            .iter()
            .filter(|e| **e != COUNT_TOKENS)
            .map(|e| {
                let served = if *e == MESSAGES { CHAT } else { *e };
                let endpoint = std::str::from_utf8(served).unwrap_or_default();
                (
                    *e,
                    target(&dialect::azure::target(
                        endpoint,
                        upstream_model,
                        api_version,
                    )),
                )
            })
            .collect(),
        // Chat only, at a target made per request (see `Deployment::targets`).
        Dialect::Bedrock => vec![(
            CHAT,
            target(&dialect::bedrock::target(upstream_model, false)),
        )],
        Dialect::Gemini => vec![(
            CHAT,
            target(&dialect::gemini::target(upstream_model, false)),
        )],
        // Anthropic has no completions, embeddings, responses or moderations.
        Dialect::Anthropic => vec![
            (CHAT, target("/v1/messages")),
            (MESSAGES, target("/v1/messages")),
            (COUNT_TOKENS, target("/v1/messages/count_tokens")),
        ],
    }
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
            auth_fields: Box::default(),
            aws: None,
            targets: targets(Dialect::OpenAi, "m", ""),
            weight,
            input_cost_per_token: 1e-6,
            output_cost_per_token: 2e-6,
            rpm: None,
            tpm: None,
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
