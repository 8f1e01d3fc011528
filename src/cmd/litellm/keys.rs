//! `keys list|generate|info|delete`: virtual keys through `/key/*`. The
//! same records as the tokens of `manage token`.

use serde_json::{Value, json};

use super::{Call, expect_items, expect_object, json_object, list, object, page_line, spend_cell};
use crate::cli::litellm::{Format, KeysCommand};
use crate::cmd::output::{Column, Layout, any_time, cell, field_table, listing, obfuscate, pretty};
use crate::http_client::{ClientError, with_query};

pub(super) fn plan(command: &KeysCommand) -> Result<Call, ClientError> {
    Ok(match command {
        KeysCommand::List {
            page,
            size,
            user_id,
            team_id,
            key_alias,
            key_hash,
        } => {
            let (page, size) = (page.map(|p| p.to_string()), size.map(|s| s.to_string()));
            let mut query = vec![("return_full_object", "true")];
            let optional = [
                ("page", page.as_deref()),
                ("size", size.as_deref()),
                ("user_id", user_id.as_deref()),
                ("team_id", team_id.as_deref()),
                ("key_alias", key_alias.as_deref()),
                ("key_hash", key_hash.as_deref()),
            ];
            query.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
            Call::get(with_query("/key/list", &query))
        }
        KeysCommand::Generate {
            models,
            max_budget,
            duration,
            key_alias,
            user_id,
            team_id,
            max_requests,
            aliases,
            metadata,
            limits,
        } => {
            let mut body = json!({});
            if let Some(models) = models {
                body["models"] = json!(list("--models", models)?);
            }
            if let Some(budget) = max_budget {
                body["max_budget"] = json!(budget);
            }
            if let Some(duration) = duration {
                body["duration"] = json!(check_duration(duration)?);
            }
            for (field, value) in [
                ("key_alias", key_alias),
                ("user_id", user_id),
                ("team_id", team_id),
            ] {
                if let Some(value) = value {
                    body[field] = json!(value);
                }
            }
            if let Some(max_requests) = max_requests {
                body["max_requests"] = json!(max_requests);
            }
            if let Some(aliases) = aliases {
                body["aliases"] = Value::Object(json_object("--aliases", aliases)?);
            }
            if let Some(metadata) = metadata {
                body["metadata"] = Value::Object(json_object("--metadata", metadata)?);
            }
            super::add_limits(&mut body, limits)?;
            Call::post("/key/generate", body)
        }
        KeysCommand::Info { key } => {
            if key.trim().is_empty() {
                return Err(ClientError::Usage("--key is empty".into()));
            }
            Call::get(with_query("/key/info", &[("key", key)]))
                .about(format!("key {}", obfuscate(key)))
        }
        KeysCommand::Delete { keys, key_aliases } => {
            let mut body = json!({});
            let mut named = Vec::new();
            if let Some(keys) = keys {
                let keys = list("--keys", keys)?;
                named.extend(keys.iter().map(|k| obfuscate(k)));
                body["keys"] = json!(keys);
            }
            if let Some(aliases) = key_aliases {
                let aliases = list("--key-aliases", aliases)?;
                named.extend(aliases.iter().cloned());
                body["key_aliases"] = json!(aliases);
            }
            let subject = match named.as_slice() {
                [one] => format!("key {one}"),
                many => format!("one of the keys {}", many.join(", ")),
            };
            Call::post("/key/delete", body).about(subject)
        }
    })
}

pub(super) fn render(
    command: &KeysCommand,
    answer: Option<Value>,
    format: Option<Format>,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        KeysCommand::List { .. } => {
            let answer = expect_object(answer, "the key list")?;
            if format == Some(Format::Json) {
                return Ok(pretty(&answer));
            }
            let keys = expect_items(&answer, "keys", "the key list")?;
            let first = page_line(
                keys.len(),
                &answer["total_count"],
                &answer["current_page"],
                &answer["total_pages"],
                "keys",
            );
            Ok(format!("{first}{}", key_table(keys, layout)))
        }
        KeysCommand::Generate { .. } => {
            let answer = expect_object(answer, "the new key")?;
            match format {
                Some(Format::Table) => generated(&answer),
                _ => Ok(pretty(&answer)),
            }
        }
        KeysCommand::Info { .. } => object(expect_object(answer, "the key info")?, format),
        KeysCommand::Delete { .. } => {
            let answer = answer.unwrap_or_else(|| json!({}));
            match format {
                Some(Format::Table) => {
                    let count = answer["deleted_keys"].as_array().map_or(0, Vec::len);
                    Ok(format!(
                        "Deleted {count} key{}.\n",
                        if count == 1 { "" } else { "s" }
                    ))
                }
                _ => Ok(pretty(&answer)),
            }
        }
    }
}

/// A number and a unit: s, m, h or d (what the server accepts).
fn check_duration(text: &str) -> Result<String, ClientError> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let valid = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
        && matches!(unit, "s" | "m" | "h" | "d");
    if !valid {
        return Err(ClientError::Usage(format!(
            "--duration {text:?} is not a duration: use a number and s, m, h or d, e.g. 30s, 24h, 7d"
        )));
    }
    Ok(text.to_string())
}

/// The answer to `keys generate --format table`: the secret once, then
/// the rest of the key's fields.
fn generated(answer: &Value) -> Result<String, ClientError> {
    let secret = answer["key"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ClientError::BadResponse("the proxy created a key but did not send its secret".into())
        })?;
    let mut rest = answer.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("key");
    }
    let rows = super::flatten(&rest);
    let table = field_table(rows.iter().map(|(k, v)| (k.as_str(), v.clone())));
    Ok(format!(
        "Key: {secret}  (shown once; store it now)\n{table}"
    ))
}

const KEY_COLUMNS: [Column; 7] = [
    Column::id("KEY HASH"),
    Column::wraps("ALIAS", 6),
    Column::whole("USER", 3),
    Column::wraps("TEAM", 2),
    Column::wraps("MODELS", 4),
    Column::wraps("SPEND", 5),
    Column::wraps("EXPIRES", 1),
];

fn key_table(keys: &[Value], layout: Layout) -> String {
    if keys.is_empty() {
        return "No keys.\n".into();
    }
    let mut rows = Vec::with_capacity(keys.len());
    for key in keys {
        let expires = match &key["expires"] {
            Value::Null => "never".to_string(),
            value => any_time(value),
        };
        rows.push(vec![
            cell(&key["token"]),
            cell(&key["key_alias"]),
            cell(&key["user_id"]),
            cell(&key["team_id"]),
            super::joined(&key["models"]),
            spend_cell(&key["spend"], &key["max_budget"]),
            expires,
        ]);
    }
    listing(&KEY_COLUMNS, rows, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate() -> KeysCommand {
        KeysCommand::Generate {
            models: Some("gpt-4, gpt-4o".into()),
            max_budget: Some(100.0),
            duration: Some("24h".into()),
            key_alias: Some("my-key".into()),
            user_id: None,
            team_id: None,
            max_requests: None,
            aliases: None,
            metadata: Some(r#"{"env": "prod"}"#.into()),
            limits: Default::default(),
        }
    }

    #[test]
    fn generate_sends_spend_as_max_budget() {
        let call = plan(&generate()).unwrap();
        assert_eq!(call.path, "/key/generate");
        assert_eq!(
            call.body.unwrap(),
            json!({
                "models": ["gpt-4", "gpt-4o"], "max_budget": 100.0, "duration": "24h",
                "key_alias": "my-key", "metadata": {"env": "prod"},
            })
        );
    }

    #[test]
    fn durations() {
        for good in ["30s", "15m", "24h", "7d"] {
            assert_eq!(check_duration(good).unwrap(), good);
        }
        for bad in ["", "h", "24", "0h", "1w", "1.5h", "-1h", "24 h"] {
            assert!(check_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_query_and_delete_body() {
        let call = plan(&KeysCommand::List {
            page: Some(2),
            size: None,
            user_id: Some("u 1".into()),
            team_id: None,
            key_alias: None,
            key_hash: None,
        })
        .unwrap();
        assert_eq!(
            call.path,
            "/key/list?return_full_object=true&page=2&user_id=u%201"
        );
        let call = plan(&KeysCommand::Delete {
            keys: Some("sk-key1,sk-key2".into()),
            key_aliases: Some("alias1,alias2".into()),
        })
        .unwrap();
        assert_eq!(
            call.body.unwrap(),
            json!({"keys": ["sk-key1", "sk-key2"], "key_aliases": ["alias1", "alias2"]})
        );
        let error = plan(&KeysCommand::Delete {
            keys: Some(",".into()),
            key_aliases: None,
        })
        .unwrap_err();
        assert!(error.to_string().contains("--keys"));
    }

    #[test]
    fn generated_key_is_shown_once() {
        let answer = json!({"key": "sk-secret-1234567890", "token": "ab12", "key_alias": "k"});
        let out = generated(&answer).unwrap();
        assert!(out.starts_with("Key: sk-secret-1234567890  (shown once; store it now)\n"));
        assert_eq!(out.matches("sk-secret-1234567890").count(), 1);
        assert!(out.contains("ab12"));
    }
}
