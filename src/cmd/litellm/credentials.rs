//! `credentials list|create|get|delete`: provider credentials through
//! `/credentials`; the server masks their values on the way out.

use serde_json::{Value, json};

use super::{Call, expect_items, expect_object, json_object, object, quoted};
use crate::cli::litellm::{CredentialsCommand, Format};
use crate::cmd::output::{Column, Layout, cell, listing, pretty};
use crate::http_client::{ClientError, encode};

pub(super) fn plan(command: &CredentialsCommand) -> Result<Call, ClientError> {
    Ok(match command {
        CredentialsCommand::List => Call::get("/credentials"),
        CredentialsCommand::Create {
            credential_name,
            info,
            values,
        } => {
            check_name(credential_name)?;
            let info = match info {
                Some(info) => json_object("--info", info)?,
                None => Default::default(),
            };
            let values = json_object("--values", values)?;
            if values.is_empty() {
                return Err(ClientError::Usage(
                    "--values needs at least one entry, e.g. '{\"api_key\": \"sk-...\"}'".into(),
                ));
            }
            Call::post(
                "/credentials",
                json!({
                    "credential_name": credential_name,
                    "credential_values": values,
                    "credential_info": info,
                }),
            )
        }
        CredentialsCommand::Get { credential_name } => {
            check_name(credential_name)?;
            Call::get(format!("/credentials/by_name/{}", encode(credential_name)))
                .about(subject(credential_name))
        }
        CredentialsCommand::Delete { credential_name } => {
            check_name(credential_name)?;
            Call {
                method: ureq::http::Method::DELETE,
                ..Call::get(format!("/credentials/{}", encode(credential_name)))
            }
            .about(subject(credential_name))
        }
    })
}

pub(super) fn render(
    command: &CredentialsCommand,
    answer: Option<Value>,
    format: Option<Format>,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        CredentialsCommand::List => {
            let answer = expect_object(answer, "the credential list")?;
            if format == Some(Format::Json) {
                return Ok(pretty(&answer));
            }
            Ok(credential_table(
                expect_items(&answer, "credentials", "the credential list")?,
                layout,
            ))
        }
        CredentialsCommand::Get { .. } => object(expect_object(answer, "the credential")?, format),
        CredentialsCommand::Create {
            credential_name, ..
        } => match (format, answer) {
            (Some(Format::Table), _) => Ok(format!("Created credential {credential_name}.\n")),
            (_, Some(answer)) => Ok(pretty(&answer)),
            (_, None) => Ok(pretty(
                &json!({"credential_name": credential_name, "created": true}),
            )),
        },
        CredentialsCommand::Delete { credential_name } => match (format, answer) {
            (Some(Format::Table), _) => Ok(format!("Deleted credential {credential_name}.\n")),
            (_, Some(answer)) => Ok(pretty(&answer)),
            (_, None) => Ok(pretty(
                &json!({"credential_name": credential_name, "deleted": true}),
            )),
        },
    }
}

fn subject(name: &str) -> String {
    format!("credential {}", quoted(name))
}

fn check_name(name: &str) -> Result<(), ClientError> {
    if name.trim().is_empty() {
        return Err(ClientError::Usage("the credential name is empty".into()));
    }
    Ok(())
}

const CREDENTIAL_COLUMNS: [Column; 4] = [
    Column::id("NAME"),
    Column::wraps("PROVIDER", 3),
    Column::wraps("INFO", 1),
    Column::wraps("VALUES (MASKED)", 2),
];

fn credential_table(credentials: &[Value], layout: Layout) -> String {
    if credentials.is_empty() {
        return "No credentials.\n".into();
    }
    let mut rows = Vec::with_capacity(credentials.len());
    for credential in credentials {
        let info = &credential["credential_info"];
        let others = entries(info, &["custom_llm_provider"]);
        rows.push(vec![
            cell(&credential["credential_name"]),
            cell(&info["custom_llm_provider"]),
            others,
            entries(&credential["credential_values"], &[]),
        ]);
    }
    listing(&CREDENTIAL_COLUMNS, rows, layout)
}

/// `name: value` lines of an object, without the names in `skip`.
fn entries(value: &Value, skip: &[&str]) -> String {
    let Some(fields) = value.as_object() else {
        return cell(value);
    };
    let lines: Vec<String> = fields
        .iter()
        .filter(|(name, _)| !skip.contains(&name.as_str()))
        .map(|(name, value)| format!("{name}: {}", cell(value)))
        .collect();
    if lines.is_empty() {
        "-".into()
    } else {
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_checks_both_objects() {
        let create = |info: Option<&str>, values: &str| {
            plan(&CredentialsCommand::Create {
                credential_name: "azure-prod".into(),
                info: info.map(String::from),
                values: values.into(),
            })
        };
        let call = create(
            Some(r#"{"custom_llm_provider": "azure"}"#),
            r#"{"api_key": "sk-123", "api_base": "https://prod.azure.openai.com"}"#,
        )
        .unwrap();
        assert_eq!(call.path, "/credentials");
        assert_eq!(
            call.body.unwrap(),
            json!({
                "credential_name": "azure-prod",
                "credential_values": {"api_key": "sk-123", "api_base": "https://prod.azure.openai.com"},
                "credential_info": {"custom_llm_provider": "azure"},
            })
        );
        let error = create(Some("{bad"), "{}").unwrap_err();
        assert!(
            error.to_string().starts_with("invalid JSON in --info"),
            "{error}"
        );
        let error = create(None, r#"["x"]"#).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--values must be a JSON object")
        );
        assert!(create(None, "{}").is_err());
    }

    #[test]
    fn names_are_encoded_in_paths() {
        let call = plan(&CredentialsCommand::Get {
            credential_name: "a/b c".into(),
        })
        .unwrap();
        assert_eq!(call.path, "/credentials/by_name/a%2Fb%20c");
        let call = plan(&CredentialsCommand::Delete {
            credential_name: "x".into(),
        })
        .unwrap();
        assert_eq!(call.method, ureq::http::Method::DELETE);
        assert_eq!(call.path, "/credentials/x");
        assert_eq!(call.subject.as_deref(), Some("credential \"x\""));
    }

    #[test]
    fn table_shows_provider_and_masked_values() {
        let out = credential_table(
            &[json!({
                "credential_name": "azure-prod",
                "credential_info": {"custom_llm_provider": "azure", "region": "eu"},
                "credential_values": {"api_key": "sk-…1234"},
            })],
            Layout::default(),
        );
        for needle in ["azure-prod", "azure", "region: eu", "api_key: sk-…1234"] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
        assert_eq!(
            credential_table(&[], Layout::default()),
            "No credentials.\n"
        );
    }
}
