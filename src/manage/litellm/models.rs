//! `/models`, `/model/info`, `/model_group/info`, `/model/new`,
//! `/model/update`, `/model/delete`: model deployments. Secret `litellm_params` (`api_key` and the like) are
//! sealed in the store and never shown again.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::{Caller, invalid, normalize_numbers, parse};
use crate::api::{blocking, query_pairs, query_value, rfc3339};
use crate::dialect::{self, Dialect};
use crate::error::ProxyError;
use crate::manage::Answer;
use crate::store::{Deployment, DeploymentChanges, Store, StoreError};

/// `litellm_params` that are numbers (numeric strings are accepted).
const NUMERIC_PARAMS: [&str; 8] = [
    "rpm",
    "tpm",
    "weight",
    "timeout",
    "stream_timeout",
    "max_retries",
    "num_retries",
    "order",
];

/// `model_info` fields that are numbers.
const NUMERIC_INFO: [&str; 6] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "max_tokens",
    "max_input_tokens",
    "max_output_tokens",
    "input_cost_per_second",
];

/// Whether a `litellm_params` entry is a secret (sealed, never shown).
pub fn is_secret_param(name: &str) -> bool {
    name == "api_key"
        || name.ends_with("_api_key")
        || name.contains("secret")
        || name.ends_with("_token")
        || name.ends_with("password")
        || name == "vertex_credentials"
}

/// `GET /models`: the model names the caller may use, OpenAI's list shape.
pub async fn list_names(store: Arc<Store>, caller: Caller) -> Answer {
    blocking(store, move |s| {
        let mut seen = Vec::<String>::new();
        let mut data = Vec::new();
        for deployment in s.list_deployments()? {
            if seen.contains(&deployment.model_name) || !may_use(&caller, &deployment.model_name) {
                continue;
            }
            data.push(model_object(&deployment));
            seen.push(deployment.model_name);
        }
        Ok((
            StatusCode::OK,
            Some(json!({"object": "list", "data": data})),
        ))
    })
    .await
}

/// `GET /models/{name}`: one model the caller may use, OpenAI's retrieve
/// shape (as listed). A name that is not registered and one the caller may
/// not use are the same 404, so that a key learns nothing of the others.
pub async fn retrieve(store: Arc<Store>, caller: Caller, name: String) -> Answer {
    blocking(store, move |s| {
        let first = s
            .list_deployments()?
            .into_iter()
            .find(|deployment| deployment.model_name == name);
        match first {
            Some(deployment) if may_use(&caller, &name) => {
                Ok((StatusCode::OK, Some(model_object(&deployment))))
            }
            _ => Err(ProxyError::ModelNotFound(name)),
        }
    })
    .await
}

/// A model name as OpenAI's `/v1/models` shows it, from its first
/// deployment: `owned_by` is the provider prefix of the upstream model.
fn model_object(deployment: &Deployment) -> Value {
    json!({
        "id": deployment.model_name,
        "object": "model",
        "created": deployment.created_at / 1000,
        "owned_by": provider(&object(&deployment.params)),
    })
}

/// The provider prefix of a deployment's upstream model
/// (`anthropic/claude-3` → `anthropic`), `openai` without one.
fn provider(params: &Object) -> String {
    params
        .get("model")
        .and_then(Value::as_str)
        .and_then(|m| m.split_once('/'))
        .map_or("openai", |(provider, _)| provider)
        .to_string()
}

fn may_use(caller: &Caller, model_name: &str) -> bool {
    match caller {
        Caller::Master => true,
        Caller::Anonymous => false,
        Caller::Key { models, .. } => models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model_name)),
    }
}

/// `GET /model/info[?litellm_model_id=ID]`.
pub async fn info(store: Arc<Store>, caller: Caller, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let only = query_value(&pairs, "litellm_model_id").map(str::to_string);
    blocking(store, move |s| {
        let data: Vec<Value> = s
            .list_deployments()?
            .iter()
            .filter(|d| only.as_ref().is_none_or(|id| *id == d.id))
            .filter(|d| may_use(&caller, &d.model_name))
            .map(view)
            .collect();
        if let Some(id) = &only
            && data.is_empty()
        {
            return Err(ProxyError::Missing(format!("no model with id {id:?}")));
        }
        Ok((StatusCode::OK, Some(json!({"data": data}))))
    })
    .await
}

/// The `supports_*` flags of LiteLLM's `ModelGroupInfo`: a group has one
/// when any of its deployments' `model_info` sets it.
const GROUP_FLAGS: [&str; 7] = [
    "supports_parallel_function_calling",
    "supports_vision",
    "supports_web_search",
    "supports_url_context",
    "supports_reasoning",
    "supports_function_calling",
    "supports_fast_mode",
];

/// `GET /model_group/info[?model_group=NAME]`: one entry per model name the
/// caller may use, in LiteLLM's `ModelGroupInfo` shape, combined from its
/// deployments. An unknown name, or one the caller may not use, is an
/// empty list (as in LiteLLM).
pub async fn group_info(store: Arc<Store>, caller: Caller, query: &str) -> Answer {
    let pairs = query_pairs(query);
    let only = query_value(&pairs, "model_group")
        .filter(|name| !name.is_empty())
        .map(str::to_string);
    blocking(store, move |s| {
        let mut groups: Vec<(String, Vec<Deployment>)> = Vec::new();
        for deployment in s.list_deployments()? {
            if only
                .as_ref()
                .is_some_and(|name| *name != deployment.model_name)
                || !may_use(&caller, &deployment.model_name)
            {
                continue;
            }
            match groups
                .iter_mut()
                .find(|(name, _)| *name == deployment.model_name)
            {
                Some((_, members)) => members.push(deployment),
                None => groups.push((deployment.model_name.clone(), vec![deployment])),
            }
        }
        let data: Vec<Value> = groups
            .iter()
            .map(|(name, members)| group_view(name, members))
            .collect();
        Ok((StatusCode::OK, Some(json!({"data": data}))))
    })
    .await
}

/// A model group as LiteLLM's router combines it: the providers of its
/// deployments, the largest token limits and prices, the summed rate
/// limits, a flag when any deployment has it, the first deployment's mode.
fn group_view(name: &str, members: &[Deployment]) -> Value {
    let mut providers = Vec::<String>::new();
    let mut largest: Map<String, Value> = Map::new();
    let mut sums: Map<String, Value> = Map::new();
    let mut flags: Map<String, Value> = GROUP_FLAGS
        .iter()
        .map(|flag| (flag.to_string(), json!(false)))
        .collect();
    let mut mode = None;
    let mut openai_params = None;
    for deployment in members {
        let params = object(&deployment.params);
        let info = object(&deployment.model_info);
        let provider = provider(&params);
        if !providers.contains(&provider) {
            providers.push(provider);
        }
        for field in [
            "max_input_tokens",
            "max_output_tokens",
            "input_cost_per_token",
            "output_cost_per_token",
        ] {
            if let Some(n) = info.get(field).and_then(Value::as_f64)
                && largest
                    .get(field)
                    .and_then(Value::as_f64)
                    .is_none_or(|current| n > current)
            {
                largest.insert(field.into(), info[field].clone());
            }
        }
        // A deployment's limit is in its params, or else in its info.
        for field in ["tpm", "rpm", "itpm", "otpm"] {
            let limit = params
                .get(field)
                .and_then(Value::as_f64)
                .or_else(|| info.get(field).and_then(Value::as_f64));
            if let Some(n) = limit {
                let total = sums.get(field).and_then(Value::as_f64).unwrap_or(0.0) + n;
                sums.insert(field.into(), whole(total));
            }
        }
        for flag in GROUP_FLAGS {
            if info.get(flag) == Some(&Value::Bool(true)) {
                flags.insert(flag.into(), json!(true));
            }
        }
        if mode.is_none() {
            mode = info.get("mode").and_then(Value::as_str).map(str::to_string);
        }
        if let Some(list) = info.get("supported_openai_params").filter(|v| v.is_array()) {
            openai_params = Some(list.clone());
        }
    }
    let mut group = Map::new();
    group.insert("model_group".into(), json!(name));
    group.insert("providers".into(), json!(providers));
    for field in [
        "max_input_tokens",
        "max_output_tokens",
        "input_cost_per_token",
        "output_cost_per_token",
    ] {
        group.insert(field.into(), largest.remove(field).unwrap_or(Value::Null));
    }
    group.insert("input_cost_per_pixel".into(), Value::Null);
    group.insert("mode".into(), json!(mode.as_deref().unwrap_or("chat")));
    for field in ["tpm", "rpm", "itpm", "otpm"] {
        group.insert(field.into(), sums.remove(field).unwrap_or(Value::Null));
    }
    group.extend(flags);
    group.insert("supported_reasoning_efforts".into(), Value::Null);
    group.insert(
        "supported_openai_params".into(),
        openai_params.unwrap_or_else(|| json!([])),
    );
    group.insert("configurable_clientside_auth_params".into(), Value::Null);
    Value::Object(group)
}

/// A number as JSON: an integer when it is whole.
fn whole(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// A deployment as `/model/info` shows it.
pub fn view(deployment: &Deployment) -> Value {
    let mut info = object(&deployment.model_info);
    info.insert("id".into(), json!(deployment.id));
    info.insert("db_model".into(), json!(!deployment.from_config));
    info.insert("created_at".into(), json!(rfc3339(deployment.created_at)));
    info.insert("updated_at".into(), json!(rfc3339(deployment.updated_at)));
    json!({
        "model_name": deployment.model_name,
        "litellm_params": object(&deployment.params),
        "model_info": info,
    })
}

/// What `/model/new` and `/model/update` answer.
fn answer(deployment: &Deployment) -> Value {
    let mut value = view(deployment);
    value["model_id"] = json!(deployment.id);
    value
}

/// Models of the config file change with the file, not through the API.
fn refuse_config(deployment: &Deployment) -> Result<(), ProxyError> {
    if deployment.from_config {
        return Err(ProxyError::InvalidField {
            field: "id".into(),
            message: format!(
                "model {} is defined in the server's config file; change it there",
                deployment.id
            ),
        });
    }
    Ok(())
}

fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

#[derive(Debug, serde::Deserialize)]
struct ModelInput {
    id: Option<String>,
    model_name: Option<String>,
    litellm_params: Option<Map<String, Value>>,
    model_info: Option<Map<String, Value>>,
}

/// A JSON object.
pub type Object = Map<String, Value>;

/// `litellm_params` checked and split into what is shown and what is sealed.
fn split_params(mut params: Object) -> Result<(Object, Object), ProxyError> {
    normalize_numbers(&mut params, "litellm_params", &NUMERIC_PARAMS)?;
    if let Some(base) = params.get("api_base").filter(|v| !v.is_null()) {
        let base = base
            .as_str()
            .ok_or_else(|| invalid("litellm_params.api_base", "must be a string"))?;
        let valid = base.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !valid {
            return Err(invalid(
                "litellm_params.api_base",
                format!("not an http(s) URL: {base:?}"),
            ));
        }
    }
    let (secrets, shown) = params
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .partition(|(name, _)| is_secret_param(name));
    Ok((shown, secrets))
}

fn check_info(mut info: Map<String, Value>) -> Result<Map<String, Value>, ProxyError> {
    normalize_numbers(&mut info, "model_info", &NUMERIC_INFO)?;
    for field in ["id", "db_model", "created_at", "updated_at"] {
        info.remove(field);
    }
    Ok(info)
}

fn check_credential(s: &Store, params: &Map<String, Value>) -> Result<(), ProxyError> {
    if let Some(name) = params.get("litellm_credential_name") {
        let name = name
            .as_str()
            .ok_or_else(|| invalid("litellm_params.litellm_credential_name", "must be a string"))?;
        if s.get_credential(name).is_err() {
            return Err(invalid(
                "litellm_params.litellm_credential_name",
                format!("no credential named {name:?}"),
            ));
        }
    }
    Ok(())
}

/// The model's provider prefix must be known, and a provider with no
/// default base URL needs an `api_base` (its own or its credential's).
fn check_model(params: &Object) -> Result<(), ProxyError> {
    let model = params
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (provider, _) =
        dialect::parse(model).map_err(|e| invalid("litellm_params.model", e.to_string()))?;
    // Values that go into a URL or a header field as they are.
    if provider.dialect == Dialect::Azure
        && let Some(version) = params.get("api_version").and_then(Value::as_str)
        && !dialect::azure::is_api_version(version)
    {
        return Err(invalid(
            "litellm_params.api_version",
            "must be a version such as 2024-10-21 or v1",
        ));
    }
    for name in [
        "api_key",
        "azure_ad_token",
        "aws_access_key_id",
        "aws_session_token",
    ] {
        if params
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|value| !dialect::is_field_value(value))
        {
            return Err(invalid(
                &format!("litellm_params.{name}"),
                "must not contain a line break or another control character",
            ));
        }
    }
    let has_credential = params.contains_key("litellm_credential_name");
    if provider.dialect == Dialect::Bedrock && !has_credential {
        // At its region's endpoint (its keys are secrets, kept apart).
        let region = params.get("aws_region_name").and_then(Value::as_str);
        if region.is_none_or(|r| !dialect::is_path_name(r)) {
            return Err(invalid(
                "litellm_params.aws_region_name",
                "required for bedrock/ (a region name such as us-east-1), or a litellm_credential_name that has it",
            ));
        }
        return Ok(());
    }
    let has_base = params.get("api_base").is_some_and(|v| !v.is_null()) || has_credential;
    if !has_base {
        provider
            .base(None)
            .map_err(|e| invalid("litellm_params.api_base", e.to_string()))?;
    }
    Ok(())
}

fn secrets_text(secrets: &Map<String, Value>) -> Option<String> {
    (!secrets.is_empty()).then(|| Value::Object(secrets.clone()).to_string())
}

/// A new deployment, checked: `(id if given, what to store)`. Used by
/// `/model/new` and for the `model_list` of the config file. The named
/// credential, if any, is checked by the caller against the store.
pub fn prepare(
    model_name: Option<String>,
    params: Option<Object>,
    info: Option<Object>,
    id: Option<String>,
) -> Result<(Option<String>, DeploymentChanges), ProxyError> {
    let model_name = model_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid("model_name", "required"))?;
    let params = params.ok_or_else(|| invalid("litellm_params", "required"))?;
    let model = params
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if model.is_empty() {
        return Err(invalid(
            "litellm_params.model",
            "required (the upstream model name)",
        ));
    }
    check_model(&params)?;
    let (shown, secrets) = split_params(params)?;
    let id = info
        .as_ref()
        .and_then(|i| i.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(id);
    let info = check_info(info.unwrap_or_default())?;
    let changes = DeploymentChanges {
        model_name: Some(model_name.trim().to_string()),
        params: Some(Value::Object(shown).to_string()),
        secrets: Some(secrets_text(&secrets)),
        model_info: Some(Value::Object(info).to_string()),
    };
    Ok((id, changes))
}

/// The credential a deployment names, if any, must exist.
pub fn check_credential_of(s: &Store, changes: &DeploymentChanges) -> Result<(), ProxyError> {
    let params = object(changes.params.as_deref().unwrap_or("{}"));
    check_credential(s, &params)
}

/// `POST /model/new`.
pub async fn create(store: Arc<Store>, body: &[u8]) -> Answer {
    let input: ModelInput = parse(body)?;
    let in_info = input
        .model_info
        .as_ref()
        .and_then(|i| i.get("id"))
        .is_some_and(Value::is_string);
    let id_field = if in_info { "model_info.id" } else { "id" };
    let (id, changes) = prepare(
        input.model_name,
        input.litellm_params,
        input.model_info,
        input.id,
    )?;
    blocking(store, move |s| {
        check_credential_of(s, &changes)?;
        // A chosen id that is taken is a 400 naming the field it came in.
        let deployment = s
            .create_deployment(id, changes)
            .map_err(|error| match error {
                StoreError::Taken(_, id) => invalid(id_field, format!("{id:?} is already taken")),
                other => other.into(),
            })?;
        Ok((StatusCode::OK, Some(answer(&deployment))))
    })
    .await
}

/// `POST /model/update`: the id at the top level or in `model_info.id`;
/// the params and info given are merged into the deployment's.
pub async fn update(store: Arc<Store>, body: &[u8]) -> Answer {
    let input: ModelInput = parse(body)?;
    let id = input
        .model_info
        .as_ref()
        .and_then(|i| i.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(input.id)
        .ok_or_else(|| invalid("id", "required (or model_info.id)"))?;
    if input
        .model_name
        .as_ref()
        .is_some_and(|n| n.trim().is_empty())
    {
        return Err(invalid("model_name", "must not be empty"));
    }
    let params = input.litellm_params;
    let info = input.model_info.map(check_info).transpose()?;
    blocking(store, move |s| {
        let current = s.get_deployment(&id)?;
        refuse_config(&current)?;
        let mut changes = DeploymentChanges {
            model_name: input.model_name.map(|n| n.trim().to_string()),
            ..DeploymentChanges::default()
        };
        if let Some(params) = params {
            // Nulls remove params, as they would in a JSON merge patch.
            let removed: Vec<String> = params
                .iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k.clone())
                .collect();
            let (shown, secrets) = split_params(params)?;
            let mut merged = object(&current.params);
            merged.extend(shown);
            let mut merged_secrets: Map<String, Value> = s
                .deployment_secrets(&current)?
                .map(|text| object(&text))
                .unwrap_or_default();
            merged_secrets.extend(secrets);
            for name in &removed {
                merged.remove(name);
                merged_secrets.remove(name);
            }
            // The merged params must still name the upstream model.
            if merged
                .get("model")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(invalid(
                    "litellm_params.model",
                    "required (the upstream model name)",
                ));
            }
            check_model(&merged)?;
            check_credential(s, &merged)?;
            changes.params = Some(Value::Object(merged).to_string());
            changes.secrets = Some(secrets_text(&merged_secrets));
        }
        if let Some(info) = info {
            let mut merged = object(&current.model_info);
            merged.extend(info);
            changes.model_info = Some(Value::Object(merged).to_string());
        }
        let deployment = s.update_deployment(&id, changes)?;
        Ok((StatusCode::OK, Some(answer(&deployment))))
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct DeleteInput {
    id: Option<String>,
}

/// `POST /model/delete {"id"}`.
pub async fn delete(store: Arc<Store>, body: &[u8]) -> Answer {
    let input: DeleteInput = parse(body)?;
    let id = input
        .id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| invalid("id", "required"))?;
    blocking(store, move |s| {
        refuse_config(&s.get_deployment(&id)?)?;
        s.delete_deployment(&id)?;
        Ok((
            StatusCode::OK,
            Some(json!({"message": format!("Model: {id} deleted successfully")})),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_told_apart() {
        for name in [
            "api_key",
            "azure_api_key",
            "aws_secret_access_key",
            "azure_ad_token",
        ] {
            assert!(is_secret_param(name), "{name}");
        }
        for name in [
            "model",
            "api_base",
            "max_tokens",
            "litellm_credential_name",
            "rpm",
        ] {
            assert!(!is_secret_param(name), "{name}");
        }
    }
}
