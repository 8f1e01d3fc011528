//! `llm-proxy manage`: projects and tokens (and, in `audit`, the audit log)
//! through a running server's management API (`/manage/*`), printed as
//! tables or, with `--json`, as the server's JSON.

use serde_json::{Map, Value, json};

use super::output::{
    ALWAYS, Column, Layout, cell, field_table, listing, obfuscate, pretty, print, time, yes_no,
};
use crate::cli::{CacheCommand, ManageArgs, ManageCommand, ProjectCommand, TokenCommand};
use crate::http_client::{Client, ClientError, MANAGEMENT_API, encode, with_query};

pub fn run(args: &ManageArgs) -> anyhow::Result<()> {
    check_arguments(&args.command)?;
    let client = Client::new(
        MANAGEMENT_API,
        &args.manage_api_base_url,
        args.management_token.clone(),
    )?
    .require_token()?;
    let layout = Layout::detect(args.wide);
    let output = match &args.command {
        ManageCommand::Project(command) => project(&client, command, args.json, layout)?,
        ManageCommand::Token(command) => token(&client, command, args.json, layout)?,
        ManageCommand::Audit(command) => super::audit::run(&client, command, args.json, layout)?,
        ManageCommand::Cache(command) => cache(&client, command, args.json)?,
    };
    print(&output)?;
    Ok(())
}

/// `POST /manage/cache/purge`; prints how many answers were removed.
fn cache(client: &Client, command: &CacheCommand, json: bool) -> Result<String, ClientError> {
    let CacheCommand::Purge { url, prefix } = command;
    let body = match (url, prefix) {
        (Some(url), _) => json!({ "url": url }),
        (None, Some(prefix)) => json!({ "prefix": prefix }),
        (None, None) => return Err(ClientError::Usage("pass --url or --prefix".into())),
    };
    let answer = client.post("/manage/cache/purge", &body)?;
    if json {
        return Ok(pretty(&answer));
    }
    let purged = answer.get("purged").and_then(Value::as_u64).unwrap_or(0);
    let target = answer
        .get("target")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(match url {
        Some(_) => format!("Purged {purged} cached answer(s) for {target}"),
        None => format!("Purged {purged} cached answer(s) under {target}"),
    })
}

/// What clap cannot express, checked before anything is sent.
fn check_arguments(command: &ManageCommand) -> Result<(), ClientError> {
    if let ManageCommand::Project(ProjectCommand::Update {
        name: None,
        openai_key: None,
        ..
    }) = command
    {
        return Err(ClientError::Usage(
            "nothing to update: pass --name and/or --openai-key".into(),
        ));
    }
    Ok(())
}

fn project(
    client: &Client,
    command: &ProjectCommand,
    json: bool,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        ProjectCommand::List => {
            let projects = expect_array(client.get("/manage/projects")?, "project list")?;
            Ok(if json {
                pretty(&Value::Array(projects))
            } else {
                project_table(&projects, layout)
            })
        }
        ProjectCommand::Get { project_id } => {
            let project = client.get(&project_path(project_id))?;
            single(project, json, "project")
        }
        ProjectCommand::Create { name, openai_key } => {
            let body = json!({"name": name, "openai_api_key": openai_key});
            let project = client.post("/manage/projects", &body)?;
            single(project, json, "project")
        }
        ProjectCommand::Update {
            project_id,
            name,
            openai_key,
        } => {
            let mut body = Map::new();
            if let Some(name) = name {
                body.insert("name".into(), json!(name));
            }
            if let Some(key) = openai_key {
                body.insert("openai_api_key".into(), json!(key));
            }
            let project = client.patch(&project_path(project_id), &Value::Object(body))?;
            single(project, json, "project")
        }
        ProjectCommand::Delete { project_id } => {
            let answer = client.delete(&project_path(project_id))?;
            Ok(match (json, answer) {
                (true, Some(answer)) => pretty(&answer),
                (true, None) => pretty(&json!({"id": project_id, "deleted": true})),
                (false, _) => format!("Deleted project {project_id} and revoked its tokens.\n"),
            })
        }
    }
}

fn token(
    client: &Client,
    command: &TokenCommand,
    json: bool,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        TokenCommand::List {
            project_id,
            active_only,
        } => {
            let mut query = Vec::new();
            if let Some(project_id) = project_id {
                query.push(("project_id", project_id.as_str()));
            }
            if *active_only {
                query.push(("active_only", "true"));
            }
            let path = with_query("/manage/tokens", &query);
            let tokens = expect_array(client.get(&path)?, "token list")?;
            Ok(if json {
                pretty(&Value::Array(tokens))
            } else {
                token_table(&tokens, layout)
            })
        }
        TokenCommand::Get { token_id } => {
            let token = client.get(&token_path(token_id))?;
            single(token, json, "token")
        }
        TokenCommand::Generate {
            project_id,
            duration,
            max_requests,
        } => {
            let mut body = json!({
                "project_id": project_id,
                "duration_minutes": duration.saturating_mul(60),
            });
            if *max_requests > 0 {
                body["max_requests"] = json!(max_requests);
            }
            let token = expect_object(client.post("/manage/tokens", &body)?, "token")?;
            if json {
                return Ok(pretty(&Value::Object(token)));
            }
            generated(&token)
        }
        TokenCommand::Revoke { token_id } => {
            let answer = client.delete(&token_path(token_id))?;
            let shown = obfuscate(token_id);
            Ok(match (json, answer) {
                (true, Some(answer)) => pretty(&answer),
                (true, None) => pretty(&json!({"id": shown, "revoked": true})),
                (false, _) => format!("Revoked token {shown}.\n"),
            })
        }
    }
}

fn project_path(id: &str) -> String {
    format!("/manage/projects/{}", encode(id))
}

fn token_path(id: &str) -> String {
    format!("/manage/tokens/{}", encode(id))
}

// ---------------------------------------------------------------------------
// Shapes of the answers
// ---------------------------------------------------------------------------

pub(super) fn expect_array(value: Value, what: &str) -> Result<Vec<Value>, ClientError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(unexpected(what, "an array", &other)),
    }
}

pub(super) fn expect_object(value: Value, what: &str) -> Result<Map<String, Value>, ClientError> {
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(unexpected(what, "an object", &other)),
    }
}

fn unexpected(what: &str, wanted: &str, got: &Value) -> ClientError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ClientError::BadResponse(format!(
        "the management API sent {kind} where {wanted} ({what}) was expected: is the server the same version as this CLI?"
    ))
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// One object: the server's JSON, or a field/value table.
pub(super) fn single(value: Value, json: bool, what: &str) -> Result<String, ClientError> {
    let fields = expect_object(value, what)?;
    Ok(if json {
        pretty(&Value::Object(fields))
    } else {
        field_table(fields.iter().map(|(k, v)| (k.as_str(), cell(v))))
    })
}

/// The answer to `token generate`: the secret once, then the essentials.
fn generated(token: &Map<String, Value>) -> Result<String, ClientError> {
    let secret = token
        .get("token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ClientError::BadResponse(
                "the management API created a token but did not send its secret".into(),
            )
        })?;
    let field = |name: &str| token.get(name).map(cell).unwrap_or_else(|| "-".into());
    let max_requests = match token.get("max_requests") {
        None | Some(Value::Null) => "unlimited".to_string(),
        Some(value) => cell(value),
    };
    let expires = match token.get("expires_at") {
        None | Some(Value::Null) => "never".to_string(),
        Some(value) => cell(value),
    };
    let table = field_table([
        ("id", field("id")),
        ("project_id", field("project_id")),
        ("expires_at", expires),
        ("max_requests", max_requests),
    ]);
    Ok(format!(
        "Token: {secret}  (shown once; store it now)\n{table}"
    ))
}

const PROJECT_COLUMNS: [Column; 5] = [
    Column::id("ID"),
    Column::wraps("NAME", ALWAYS),
    Column::whole("OPENAI KEY", 2),
    Column::wraps("ACTIVE", 3),
    Column::wraps("CREATED", 1),
];

fn project_table(projects: &[Value], layout: Layout) -> String {
    if projects.is_empty() {
        return "No projects.\n".into();
    }
    let rows = projects
        .iter()
        .map(|project| {
            vec![
                cell(&project["id"]),
                cell(&project["name"]),
                cell(&project["openai_api_key"]),
                yes_no(&project["is_active"]),
                time(&project["created_at"]),
            ]
        })
        .collect();
    listing(&PROJECT_COLUMNS, rows, layout)
}

/// The project id goes first: the list can be filtered by it instead.
const TOKEN_COLUMNS: [Column; 7] = [
    Column::id("ID"),
    Column::id("TOKEN"),
    Column::whole("PROJECT", 1),
    Column::wraps("ACTIVE", 5),
    Column::wraps("REQUESTS", 4),
    Column::wraps("EXPIRES", 3),
    Column::wraps("LAST USED", 2),
];

fn token_table(tokens: &[Value], layout: Layout) -> String {
    if tokens.is_empty() {
        return "No tokens.\n".into();
    }
    let mut rows = Vec::with_capacity(tokens.len());
    for token in tokens {
        let limit = match &token["max_requests"] {
            Value::Null => "unlimited".to_string(),
            value => cell(value),
        };
        let expires = match &token["expires_at"] {
            Value::Null => "never".to_string(),
            value => time(value),
        };
        rows.push(vec![
            cell(&token["id"]),
            cell(&token["token"]),
            cell(&token["project_id"]),
            yes_no(&token["is_active"]),
            format!("{} / {limit}", cell(&token["request_count"])),
            expires,
            time(&token["last_used_at"]),
        ]);
    }
    listing(&TOKEN_COLUMNS, rows, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_shows_the_secret_once() {
        let token = json!({
            "id": "t-1", "token": "sk-full-secret-value", "project_id": "p-1",
            "expires_at": "2030-01-01T00:00:00Z", "max_requests": null,
        });
        let out = generated(token.as_object().unwrap()).unwrap();
        assert!(out.starts_with("Token: sk-full-secret-value  (shown once; store it now)\n"));
        assert_eq!(out.matches("sk-full-secret-value").count(), 1);
        assert!(out.contains("unlimited"));
        assert!(out.contains("t-1") && out.contains("2030-01-01T00:00:00Z"));
    }

    #[test]
    fn tables_hold_the_values() {
        let projects = [json!({
            "id": "p-1", "name": "Alpha", "openai_api_key": "sk-ab…wxyz",
            "is_active": true, "created_at": "2025-01-01T00:00:00.5Z",
        })];
        let out = project_table(&projects, Layout::default());
        for needle in ["p-1", "Alpha", "sk-ab…wxyz", "yes", "2025-01-01T00:00:00Z"] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
        assert_eq!(project_table(&[], Layout::default()), "No projects.\n");
        let tokens = [json!({
            "id": "t-1", "token": "sk-ab…wxyz", "project_id": "p-1", "is_active": false,
            "request_count": 3, "max_requests": 10, "expires_at": null, "last_used_at": null,
        })];
        let out = token_table(&tokens, Layout::default());
        for needle in ["t-1", "3 / 10", "never", "no"] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
    }
}
