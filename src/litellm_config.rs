//! A LiteLLM-style `config.yaml`, so that a LiteLLM user can start from the
//! file they have: `model_list` (deployments), `router_settings` /
//! `litellm_settings` (`num_retries`, `fallbacks`) and
//! `general_settings.master_key`. String values of the form
//! `os.environ/NAME` are read from the environment, as LiteLLM does.

use std::collections::HashMap;

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// Tries per model before its fallbacks, when the config does not say.
pub const DEFAULT_NUM_RETRIES: usize = 2;

/// How requests for a model move on when a deployment fails.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Further deployments of the same model tried after a failure.
    pub num_retries: usize,
    /// Models tried, in order, once a model's deployments have failed.
    pub fallbacks: HashMap<String, Vec<String>>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            num_retries: DEFAULT_NUM_RETRIES,
            fallbacks: HashMap::new(),
        }
    }
}

/// One entry of `model_list`.
#[derive(Debug, Clone)]
pub struct ConfigModel {
    pub model_name: Option<String>,
    pub litellm_params: Option<Map<String, Value>>,
    pub model_info: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default)]
pub struct LiteLlmConfig {
    pub models: Vec<ConfigModel>,
    pub router: RouterSettings,
    pub master_key: Option<String>,
}

/// Whether a YAML text is a LiteLLM config (rather than an
/// `api_providers.yaml`): it has one of LiteLLM's top-level sections.
pub fn is_litellm_config(text: &str) -> bool {
    const SECTIONS: [&str; 4] = [
        "model_list",
        "router_settings",
        "litellm_settings",
        "general_settings",
    ];
    serde_yaml_ng::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .is_some_and(|top| SECTIONS.iter().any(|s| top.contains_key(*s)))
}

/// Parses the config; `env` looks up `os.environ/NAME` references.
pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<LiteLlmConfig> {
    let mut top: Value = serde_yaml_ng::from_str(text).context("invalid YAML")?;
    resolve_env(&mut top, &env, "")?;
    let Value::Object(mut top) = top else {
        bail!("the config must be a mapping");
    };
    let mut config = LiteLlmConfig::default();
    if let Some(list) = top.remove("model_list") {
        let Value::Array(list) = list else {
            bail!("model_list must be a list");
        };
        for (index, entry) in list.into_iter().enumerate() {
            let Value::Object(mut entry) = entry else {
                bail!("model_list[{index}] must be a mapping");
            };
            let mut take_map = |name: &str| match entry.remove(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(map)) => Ok(Some(map)),
                Some(_) => bail!("model_list[{index}].{name} must be a mapping"),
            };
            let litellm_params = take_map("litellm_params")?;
            let model_info = take_map("model_info")?;
            let model_name = match entry.remove("model_name") {
                Some(Value::String(name)) => Some(name),
                None | Some(Value::Null) => None,
                Some(_) => bail!("model_list[{index}].model_name must be a string"),
            };
            config.models.push(ConfigModel {
                model_name,
                litellm_params,
                model_info,
            });
        }
    }
    // `router_settings` wins over `litellm_settings` where both say.
    for section in ["litellm_settings", "router_settings"] {
        let Some(settings) = top.get(section).and_then(Value::as_object) else {
            continue;
        };
        if let Some(retries) = settings.get("num_retries") {
            config.router.num_retries = retries
                .as_u64()
                .with_context(|| format!("{section}.num_retries must be a whole number"))?
                as usize;
        }
        if let Some(fallbacks) = settings.get("fallbacks") {
            config.router.fallbacks =
                fallbacks_of(fallbacks).with_context(|| format!("{section}.fallbacks"))?;
        }
    }
    config.master_key = top
        .get("general_settings")
        .and_then(|g| g.get("master_key"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(config)
}

/// `[{"gpt-4o": ["gpt-4o-mini", ...]}, ...]`.
fn fallbacks_of(value: &Value) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let mut fallbacks = HashMap::new();
    let list = value
        .as_array()
        .context("must be a list of {model: [fallbacks]}")?;
    for entry in list {
        let entry = entry
            .as_object()
            .context("each entry must be {model: [fallbacks]}")?;
        for (model, to) in entry {
            let to = to
                .as_array()
                .and_then(|to| to.iter().map(|m| m.as_str().map(str::to_string)).collect())
                .with_context(|| format!("the fallbacks of {model:?} must be a list of names"))?;
            fallbacks.insert(model.clone(), to);
        }
    }
    Ok(fallbacks)
}

/// Replaces `os.environ/NAME` strings with the variable's value.
fn resolve_env(
    value: &mut Value,
    env: &impl Fn(&str) -> Option<String>,
    path: &str,
) -> anyhow::Result<()> {
    match value {
        Value::String(text) => {
            if let Some(name) = text.strip_prefix("os.environ/") {
                *text = env(name).with_context(|| {
                    format!("{path}: the environment variable {name} is not set")
                })?;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_env(item, env, &format!("{path}[{i}]"))?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                resolve_env(item, env, &path)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:9/v1
      api_key: os.environ/TEST_KEY
      rpm: 100
    model_info:
      input_cost_per_token: 0.0000025
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
router_settings:
  num_retries: 1
  fallbacks: [{"gpt-4o": ["gpt-4o-mini"]}]
general_settings:
  master_key: sk-master
"#;

    #[test]
    fn reads_a_litellm_config() {
        assert!(is_litellm_config(CONFIG));
        assert!(!is_litellm_config("apis:\n  openai:\n    base_url: x\n"));
        let env = |name: &str| (name == "TEST_KEY").then(|| "sk-from-env".to_string());
        let config = parse(CONFIG, env).unwrap();
        assert_eq!(config.models.len(), 2);
        let params = config.models[0].litellm_params.as_ref().unwrap();
        assert_eq!(params["api_key"], "sk-from-env");
        assert_eq!(params["rpm"], 100);
        assert_eq!(config.router.num_retries, 1);
        assert_eq!(config.router.fallbacks["gpt-4o"], vec!["gpt-4o-mini"]);
        assert_eq!(config.master_key.as_deref(), Some("sk-master"));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let error = parse(CONFIG, |_| None).unwrap_err();
        assert!(
            format!("{error:#}").contains(
                "model_list[0].litellm_params.api_key: the environment variable TEST_KEY is not set"
            ),
            "{error:#}"
        );
    }
}
