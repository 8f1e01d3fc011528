//! The limit fields shared by keys, users and teams (`rpm_limit`,
//! `tpm_limit`, `max_parallel_requests`, `budget_duration`, `soft_budget`)
//! and the per-model ones of keys (`model_rpm_limit`, `model_tpm_limit`,
//! `model_max_budget`): read from a request body, shown in answers.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{invalid, lenient_number};
use crate::api::rfc3339_opt;
use crate::error::ProxyError;
use crate::store::{Budget, BudgetWindow, Limits, ModelLimits};

/// The limit fields of a JSON object body.
const FIELDS: [&str; 5] = [
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "budget_duration",
    "soft_budget",
];
const MODEL_FIELDS: [&str; 3] = ["model_rpm_limit", "model_tpm_limit", "model_max_budget"];

/// The body as a JSON object (an empty body is `{}`).
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ProxyError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ProxyError::InvalidBody(
            "the body must be a JSON object".into(),
        )),
        Err(error) => Err(ProxyError::InvalidBody(format!("invalid JSON: {error}"))),
    }
}

/// `base` with the limit fields `body` has (`null` clears one); `None`
/// when it has none of them.
pub fn limits(body: &Map<String, Value>, base: Limits) -> Result<Option<Limits>, ProxyError> {
    if !FIELDS.iter().any(|f| body.contains_key(*f)) {
        return Ok(None);
    }
    let mut limits = base;
    if let Some(value) = body.get("rpm_limit") {
        limits.rpm_limit = count("rpm_limit", value)?;
    }
    if let Some(value) = body.get("tpm_limit") {
        limits.tpm_limit = count("tpm_limit", value)?;
    }
    if let Some(value) = body.get("max_parallel_requests") {
        limits.max_parallel_requests = count("max_parallel_requests", value)?;
    }
    if let Some(value) = body.get("budget_duration") {
        limits.budget_duration = window("budget_duration", value)?;
    }
    if let Some(value) = body.get("soft_budget") {
        limits.soft_budget = money("soft_budget", value)?;
    }
    Ok(Some(limits))
}

/// `base` with the per-model fields `body` has (`null` clears one, a
/// model's `null` clears that model's); `None` when it has none of them.
pub fn model_limits(
    body: &Map<String, Value>,
    base: &BTreeMap<String, ModelLimits>,
) -> Result<Option<BTreeMap<String, ModelLimits>>, ProxyError> {
    if !MODEL_FIELDS.iter().any(|f| body.contains_key(*f)) {
        return Ok(None);
    }
    let mut limits = base.clone();
    for field in MODEL_FIELDS {
        let Some(value) = body.get(field) else {
            continue;
        };
        let entries = match value {
            Value::Null => {
                for entry in limits.values_mut() {
                    clear(entry, field);
                }
                continue;
            }
            Value::Object(entries) => entries,
            _ => return Err(invalid(field, "must be an object of model names")),
        };
        for (model, value) in entries {
            let name = format!("{field}.{model}");
            let entry = limits.entry(model.clone()).or_default();
            match field {
                "model_rpm_limit" => entry.rpm_limit = count(&name, value)?,
                "model_tpm_limit" => entry.tpm_limit = count(&name, value)?,
                _ => match value {
                    // LiteLLM's form: {"budget_limit": 1.5, "time_period": "1d"}.
                    Value::Object(budget) => {
                        let limit = budget.get("budget_limit").unwrap_or(&Value::Null);
                        entry.max_budget = money(&format!("{name}.budget_limit"), limit)?;
                        let period = budget.get("time_period").unwrap_or(&Value::Null);
                        entry.budget_duration = window(&format!("{name}.time_period"), period)?;
                    }
                    other => entry.max_budget = money(&name, other)?,
                },
            }
        }
    }
    limits.retain(|_, l| *l != ModelLimits::default());
    Ok(Some(limits))
}

fn clear(limits: &mut ModelLimits, field: &str) {
    match field {
        "model_rpm_limit" => limits.rpm_limit = None,
        "model_tpm_limit" => limits.tpm_limit = None,
        _ => {
            limits.max_budget = None;
            limits.budget_duration = None;
        }
    }
}

/// A positive whole number; `null` (or 0, as LiteLLM's clients send for
/// "none") is no limit.
fn count(field: &str, value: &Value) -> Result<Option<u64>, ProxyError> {
    match lenient_number(field, value)? {
        None => Ok(None),
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n < 1e15 => Ok((n > 0.0).then_some(n as u64)),
        Some(_) => Err(invalid(field, "must be a whole number from 0")),
    }
}

fn money(field: &str, value: &Value) -> Result<Option<Budget>, ProxyError> {
    match lenient_number(field, value)? {
        Some(n) if n < 0.0 => Err(invalid(field, "must not be negative")),
        other => Ok(other.map(Budget::new)),
    }
}

fn window(field: &str, value: &Value) -> Result<Option<BudgetWindow>, ProxyError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.trim().is_empty() => Ok(None),
        Value::String(text) => BudgetWindow::parse(text).map(Some).ok_or_else(|| {
            invalid(
                field,
                format!("{text:?} is not a duration such as 30s, 10m, 1h, 1d, 30d or 1mo"),
            )
        }),
        _ => Err(invalid(field, "must be a duration such as 1d or 1mo")),
    }
}

/// The limit fields of an answer; `reset_at`: the end of the budget's
/// current window (`budget_reset_at`).
pub fn show(answer: &mut Value, limits: &Limits, reset_at: Option<i64>) {
    let Some(object) = answer.as_object_mut() else {
        return;
    };
    object.insert("rpm_limit".into(), json!(limits.rpm_limit));
    object.insert("tpm_limit".into(), json!(limits.tpm_limit));
    object.insert(
        "max_parallel_requests".into(),
        json!(limits.max_parallel_requests),
    );
    object.insert(
        "budget_duration".into(),
        json!(limits.budget_duration.map(BudgetWindow::text)),
    );
    object.insert(
        "soft_budget".into(),
        json!(limits.soft_budget.map(|b| b.dollars)),
    );
    object.insert("budget_reset_at".into(), rfc3339_opt(reset_at));
}

/// A key's per-model fields, as LiteLLM shows them.
pub fn show_models(answer: &mut Value, limits: &BTreeMap<String, ModelLimits>) {
    let Some(object) = answer.as_object_mut() else {
        return;
    };
    let pick = |f: fn(&ModelLimits) -> Option<Value>| -> Value {
        limits
            .iter()
            .filter_map(|(model, l)| Some((model.clone(), f(l)?)))
            .collect::<Map<_, _>>()
            .into()
    };
    object.insert(
        "model_rpm_limit".into(),
        pick(|l| l.rpm_limit.map(Value::from)),
    );
    object.insert(
        "model_tpm_limit".into(),
        pick(|l| l.tpm_limit.map(Value::from)),
    );
    object.insert(
        "model_max_budget".into(),
        pick(|l| {
            let budget = l.max_budget?;
            Some(json!({
                "budget_limit": budget.dollars,
                "time_period": l.budget_duration.map(BudgetWindow::text),
            }))
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Map<String, Value> {
        object(text.as_bytes()).expect("an object")
    }

    #[test]
    fn limits_are_read_and_cleared() {
        assert_eq!(limits(&body("{}"), Limits::default()).unwrap(), None);
        let set = limits(
            &body(r#"{"rpm_limit": "10", "tpm_limit": 1000, "max_parallel_requests": 2, "budget_duration": "30d", "soft_budget": 0.5}"#),
            Limits::default(),
        )
        .unwrap()
        .expect("limits");
        assert_eq!(
            (set.rpm_limit, set.tpm_limit, set.max_parallel_requests),
            (Some(10), Some(1000), Some(2))
        );
        assert_eq!(
            set.budget_duration,
            Some(BudgetWindow::Seconds(30 * 86_400))
        );
        assert_eq!(set.soft_budget.map(|b| b.dollars), Some(0.5));
        let cleared = limits(&body(r#"{"rpm_limit": null}"#), set)
            .unwrap()
            .expect("limits");
        assert_eq!((cleared.rpm_limit, cleared.tpm_limit), (None, Some(1000)));
        let error = limits(&body(r#"{"budget_duration": "soon"}"#), set).unwrap_err();
        assert!(
            matches!(error, ProxyError::InvalidField { field, .. } if field == "budget_duration")
        );
        let error = limits(&body(r#"{"rpm_limit": 1.5}"#), set).unwrap_err();
        assert!(matches!(error, ProxyError::InvalidField { field, .. } if field == "rpm_limit"));
    }

    #[test]
    fn model_limits_take_litellm_shapes() {
        let limits = model_limits(
            &body(r#"{"model_rpm_limit": {"gpt-4o": 5}, "model_max_budget": {"gpt-4o": {"budget_limit": "0.01", "time_period": "1d"}, "mini": 2}}"#),
            &BTreeMap::new(),
        )
        .unwrap()
        .expect("limits");
        assert_eq!(limits["gpt-4o"].rpm_limit, Some(5));
        assert_eq!(limits["gpt-4o"].max_budget.map(|b| b.dollars), Some(0.01));
        assert_eq!(
            limits["gpt-4o"].budget_duration,
            Some(BudgetWindow::Seconds(86_400))
        );
        assert_eq!(limits["mini"].max_budget.map(|b| b.dollars), Some(2.0));
        let cleared = model_limits(&body(r#"{"model_max_budget": null}"#), &limits)
            .unwrap()
            .expect("limits");
        assert_eq!(cleared.len(), 1);
        assert!(cleared["gpt-4o"].max_budget.is_none());
    }
}
