//! `models list|info|get|add|update|delete`: model deployments through
//! `/models`, `/model/info` and `/model/{new,update,delete}`.
//!
//! `/model/info` rather than `/v1/model/info`: everything under `/v1/` may
//! be passed through to an upstream. `get` filters the whole list itself,
//! so that an unknown id or name is "not found" (exit 4) whatever the
//! server does with a `litellm_model_id` it does not know.

use serde_json::{Map, Value, json};

use super::{Call, expect_items, expect_object, object, quoted};
use crate::cli::litellm::{Format, InfoColumn, ModelsCommand};
use crate::cmd::output::{ALWAYS, Column, Layout, any_time, cell, listing, pretty};
use crate::http_client::ClientError;

/// `litellm_params` and `model_info` entries whose values stay strings even
/// when they look like numbers (a key or a version may be all digits).
const STRING_PARAMS: [&str; 9] = [
    "model",
    "api_key",
    "api_base",
    "api_version",
    "id",
    "organization",
    "litellm_credential_name",
    "custom_llm_provider",
    "base_model",
];

pub(super) fn plan(command: &ModelsCommand) -> Result<Call, ClientError> {
    Ok(match command {
        ModelsCommand::List => Call::get("/models"),
        ModelsCommand::Info { .. } | ModelsCommand::Get { .. } => Call::get("/model/info"),
        ModelsCommand::Add {
            model_name,
            params,
            info,
        } => {
            let mut params = pairs("--param", params)?;
            // A deployment needs its upstream model: by default, the same name.
            params
                .entry("model")
                .or_insert_with(|| Value::String(model_name.clone()));
            let mut body = json!({"model_name": model_name, "litellm_params": params});
            let info = pairs("--info", info)?;
            if !info.is_empty() {
                body["model_info"] = Value::Object(info);
            }
            Call::post("/model/new", body)
        }
        ModelsCommand::Update {
            model_id,
            params,
            info,
            name,
        } => {
            let params = pairs("--param", params)?;
            let mut info = pairs("--info", info)?;
            if params.is_empty() && info.is_empty() && name.is_none() {
                return Err(ClientError::Usage(
                    "nothing to update: pass --param KEY=VALUE, --info KEY=VALUE or --name".into(),
                ));
            }
            // The id goes at the top level and in model_info, where LiteLLM looks for it.
            info.insert("id".into(), json!(model_id));
            let mut body = json!({"id": model_id, "model_info": info});
            if !params.is_empty() {
                body["litellm_params"] = Value::Object(params);
            }
            if let Some(name) = name {
                body["model_name"] = json!(name);
            }
            Call::post("/model/update", body).about(format!("model {}", quoted(model_id)))
        }
        ModelsCommand::Delete { model_id } => Call::post("/model/delete", json!({"id": model_id}))
            .about(format!("model {}", quoted(model_id))),
    })
}

pub(super) fn render(
    command: &ModelsCommand,
    answer: Option<Value>,
    format: Option<Format>,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        ModelsCommand::List => {
            let answer = expect_object(answer, "the model list")?;
            if format == Some(Format::Json) {
                return Ok(pretty(&answer));
            }
            Ok(model_table(
                expect_items(&answer, "data", "the model list")?,
                layout,
            ))
        }
        ModelsCommand::Info { columns } => {
            let answer = expect_object(answer, "the model info")?;
            if format == Some(Format::Json) {
                return Ok(pretty(&answer));
            }
            Ok(info_table(
                expect_items(&answer, "data", "the model info")?,
                columns,
                layout,
            ))
        }
        ModelsCommand::Get { id, name } => {
            let answer = expect_object(answer, "the model info")?;
            let deployments = expect_items(&answer, "data", "the model info")?;
            let found = deployments.iter().find(|d| match (id, name) {
                (Some(id), _) => d["model_info"]["id"].as_str() == Some(id),
                (None, Some(name)) => d["model_name"].as_str() == Some(name),
                (None, None) => false,
            });
            let Some(found) = found else {
                let which = match (id, name) {
                    (Some(id), _) => format!("model {}", quoted(id)),
                    (None, name) => {
                        format!("model named {}", quoted(name.as_deref().unwrap_or("")))
                    }
                };
                return Err(ClientError::NotFound {
                    message: format!("{which} not found"),
                });
            };
            object(found.clone(), format)
        }
        ModelsCommand::Add { .. } | ModelsCommand::Update { .. } => {
            object(expect_object(answer, "the model")?, format)
        }
        ModelsCommand::Delete { model_id } => match (format, answer) {
            (Some(Format::Table), _) => Ok(format!("Deleted model {model_id}.\n")),
            (_, Some(answer)) => Ok(pretty(&answer)),
            (_, None) => Ok(pretty(&json!({"id": model_id, "deleted": true}))),
        },
    }
}

/// `KEY=VALUE` arguments as a JSON object; numbers, booleans and JSON
/// objects or arrays are sent as such, except for [`STRING_PARAMS`].
fn pairs(flag: &str, items: &[String]) -> Result<Map<String, Value>, ClientError> {
    let mut out = Map::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ClientError::Usage(format!(
                "{flag} {} is not KEY=VALUE",
                quoted(item)
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ClientError::Usage(format!(
                "{flag} {} has no KEY before '='",
                quoted(item)
            )));
        }
        out.insert(key.to_string(), typed(key, value));
    }
    Ok(out)
}

fn typed(key: &str, value: &str) -> Value {
    if STRING_PARAMS.contains(&key) {
        return Value::String(value.to_string());
    }
    match serde_json::from_str::<Value>(value.trim()) {
        Ok(parsed @ (Value::Number(_) | Value::Bool(_) | Value::Object(_) | Value::Array(_))) => {
            parsed
        }
        _ => Value::String(value.to_string()),
    }
}

const MODEL_COLUMNS: [Column; 4] = [
    Column::id("ID"),
    Column::wraps("OBJECT", 1),
    Column::wraps("CREATED", 2),
    Column::wraps("OWNED BY", 3),
];

fn model_table(models: &[Value], layout: Layout) -> String {
    if models.is_empty() {
        return "No models.\n".into();
    }
    let rows = models
        .iter()
        .map(|model| {
            vec![
                cell(&model["id"]),
                cell(&model["object"]),
                any_time(&model["created"]),
                cell(&model["owned_by"]),
            ]
        })
        .collect();
    listing(&MODEL_COLUMNS, rows, layout)
}

/// The columns of `--columns`: chosen, so none is left out; they wrap.
fn info_table(deployments: &[Value], columns: &[InfoColumn], layout: Layout) -> String {
    if deployments.is_empty() {
        return "No models.\n".into();
    }
    let shown: Vec<Column> = columns
        .iter()
        .map(|c| match c {
            InfoColumn::Id | InfoColumn::PublicModel => Column::id(header(*c)),
            _ => Column::wraps(header(*c), ALWAYS),
        })
        .collect();
    let rows = deployments
        .iter()
        .map(|deployment| columns.iter().map(|c| info_cell(deployment, *c)).collect())
        .collect();
    listing(&shown, rows, layout)
}

fn header(column: InfoColumn) -> &'static str {
    match column {
        InfoColumn::Id => "ID",
        InfoColumn::PublicModel => "PUBLIC MODEL",
        InfoColumn::UpstreamModel => "UPSTREAM MODEL",
        InfoColumn::ApiBase => "API BASE",
        InfoColumn::CredentialName => "CREDENTIAL",
        InfoColumn::InputCost => "INPUT $/TOKEN",
        InfoColumn::OutputCost => "OUTPUT $/TOKEN",
        InfoColumn::CreatedAt => "CREATED",
        InfoColumn::UpdatedAt => "UPDATED",
    }
}

fn info_cell(deployment: &Value, column: InfoColumn) -> String {
    let params = &deployment["litellm_params"];
    let info = &deployment["model_info"];
    match column {
        InfoColumn::Id => cell(&info["id"]),
        InfoColumn::PublicModel => cell(&deployment["model_name"]),
        InfoColumn::UpstreamModel => cell(&params["model"]),
        InfoColumn::ApiBase => cell(&params["api_base"]),
        InfoColumn::CredentialName => cell(&params["litellm_credential_name"]),
        InfoColumn::InputCost => cell(&info["input_cost_per_token"]),
        InfoColumn::OutputCost => cell(&info["output_cost_per_token"]),
        InfoColumn::CreatedAt => any_time(&info["created_at"]),
        InfoColumn::UpdatedAt => any_time(&info["updated_at"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::Method;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn add_sends_typed_params_and_a_default_model() {
        let call = plan(&ModelsCommand::Add {
            model_name: "gpt-4".into(),
            params: strings(&["api_key=sk-123", "max_tokens=2048", "api_version=2024"]),
            info: strings(&["input_cost_per_token=0.5", "mode=chat"]),
        })
        .unwrap();
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.path, "/model/new");
        assert_eq!(
            call.body.unwrap(),
            json!({
                "model_name": "gpt-4",
                "litellm_params": {
                    "api_key": "sk-123", "max_tokens": 2048, "api_version": "2024",
                    "model": "gpt-4",
                },
                "model_info": {"input_cost_per_token": 0.5, "mode": "chat"},
            })
        );
    }

    #[test]
    fn update_needs_something_and_carries_the_id_twice() {
        let error = plan(&ModelsCommand::Update {
            model_id: "m-1".into(),
            params: vec![],
            info: vec![],
            name: None,
        })
        .unwrap_err();
        assert_eq!(error.exit_code(), 1);
        let call = plan(&ModelsCommand::Update {
            model_id: "m-1".into(),
            params: strings(&["temperature=0.7"]),
            info: vec![],
            name: None,
        })
        .unwrap();
        assert_eq!(
            call.body.unwrap(),
            json!({"id": "m-1", "model_info": {"id": "m-1"}, "litellm_params": {"temperature": 0.7}})
        );
        assert_eq!(call.subject.as_deref(), Some("model \"m-1\""));
    }

    #[test]
    fn bad_pairs_are_refused() {
        for bad in ["novalue", "=x"] {
            let error = pairs("--param", &strings(&[bad])).unwrap_err();
            assert!(error.to_string().starts_with("--param \""), "{error}");
        }
        let parsed = pairs("-p", &strings(&["a==b", "t=true", "o={\"x\":1}", "s= 7 "])).unwrap();
        assert_eq!(parsed["a"], json!("=b"));
        assert_eq!(parsed["t"], json!(true));
        assert_eq!(parsed["o"], json!({"x": 1}));
        assert_eq!(parsed["s"], json!(7));
    }

    #[test]
    fn get_filters_the_info() {
        let answer = json!({"data": [
            {"model_name": "a", "model_info": {"id": "1"}},
            {"model_name": "b", "model_info": {"id": "2"}},
        ]});
        let by_id = ModelsCommand::Get {
            id: Some("2".into()),
            name: None,
        };
        let out = render(&by_id, Some(answer.clone()), None, Layout::default()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["model_name"],
            "b"
        );
        let missing = ModelsCommand::Get {
            id: None,
            name: Some("zz".into()),
        };
        let error = render(&missing, Some(answer), None, Layout::default()).unwrap_err();
        assert_eq!(error.exit_code(), 4);
        assert_eq!(error.to_string(), "model named \"zz\" not found");
    }

    #[test]
    fn info_table_has_the_chosen_columns() {
        let data = [json!({
            "model_name": "gpt-4",
            "litellm_params": {"model": "openai/gpt-4", "api_base": "http://up"},
            "model_info": {"id": "m-1", "updated_at": "2025-01-01T00:00:00.5Z"},
        })];
        let out = info_table(
            &data,
            &[
                InfoColumn::Id,
                InfoColumn::UpstreamModel,
                InfoColumn::UpdatedAt,
            ],
            Layout::default(),
        );
        for needle in [
            "ID",
            "UPSTREAM MODEL",
            "m-1",
            "openai/gpt-4",
            "2025-01-01T00:00:00Z",
        ] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
        assert!(!out.contains("http://up"));
    }
}
