//! `users list|create|update|get|delete`: internal users through `/user/*`.

use std::io::{self, BufRead, IsTerminal};

use serde_json::{Value, json};

use super::{Call, expect_items, expect_object, list, object, page_line, quoted, spend_cell};
use crate::cli::litellm::{Format, UsersCommand};
use crate::cmd::output::{Column, Layout, cell, field_table, listing, pretty};
use crate::http_client::{ClientError, with_query};

/// Reads the password `--password -` stands for.
pub(super) type ReadPassword<'a> = &'a mut dyn FnMut() -> Result<String, ClientError>;

pub(super) fn plan(
    command: &UsersCommand,
    read_password: ReadPassword,
) -> Result<Call, ClientError> {
    Ok(match command {
        UsersCommand::List { page, page_size } => {
            let (page, size) = (
                page.map(|p| p.to_string()),
                page_size.map(|s| s.to_string()),
            );
            let query: Vec<(&str, &str)> =
                [("page", page.as_deref()), ("page_size", size.as_deref())]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?)))
                    .collect();
            Call::get(with_query("/user/list", &query))
        }
        UsersCommand::Create {
            email,
            role,
            alias,
            teams,
            max_budget,
            models,
            user_id,
            no_key,
            password,
            limits,
        } => {
            check_email(email)?;
            let mut body = json!({"user_email": email.trim(), "user_role": role});
            if let Some(alias) = alias {
                body["user_alias"] = json!(alias);
            }
            let teams: Vec<&str> = teams
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .collect();
            if !teams.is_empty() {
                body["teams"] = json!(teams);
            }
            if let Some(budget) = max_budget {
                body["max_budget"] = json!(budget);
            }
            if let Some(models) = models {
                body["models"] = json!(list("--models", models)?);
            }
            super::add_limits(&mut body, limits)?;
            if let Some(user_id) = user_id {
                if user_id.trim().is_empty() {
                    return Err(ClientError::Usage("--user-id is empty".into()));
                }
                body["user_id"] = json!(user_id);
            }
            if *no_key {
                body["auto_create_key"] = json!(false);
            }
            if let Some(password) = password {
                body["password"] = json!(password_value(password, read_password)?);
            }
            Call::post("/user/new", body)
        }
        UsersCommand::Update {
            user_id,
            email,
            role,
            max_budget,
            models,
            password,
            limits,
        } => {
            check_id(user_id)?;
            let mut body = json!({"user_id": user_id});
            if let Some(email) = email {
                check_email(email)?;
                body["user_email"] = json!(email.trim());
            }
            if let Some(role) = role {
                body["user_role"] = json!(role);
            }
            if let Some(budget) = max_budget {
                body["max_budget"] = json!(budget);
            }
            if let Some(models) = models {
                body["models"] = json!(list("--models", models)?);
            }
            super::add_limits(&mut body, limits)?;
            if body.as_object().is_some_and(|fields| fields.len() == 1) && password.is_none() {
                return Err(ClientError::Usage(
                    "nothing to change: give --email, --role, --max-budget, --models, --password or a limit"
                        .into(),
                ));
            }
            // Last, so that a mistake in another flag is reported before stdin is read.
            if let Some(password) = password {
                body["password"] = json!(password_value(password, read_password)?);
            }
            Call::post("/user/update", body).about(format!("user {}", quoted(user_id)))
        }
        UsersCommand::Get { user_id } => {
            check_id(user_id)?;
            Call::get(with_query("/user/info", &[("user_id", user_id)]))
                .about(format!("user {}", quoted(user_id)))
        }
        UsersCommand::Delete { user_ids } => {
            for id in user_ids {
                check_id(id)?;
            }
            let subject = match user_ids.as_slice() {
                [one] => format!("user {}", quoted(one)),
                many => {
                    let names: Vec<String> = many.iter().map(|id| quoted(id)).collect();
                    format!("one of the users {}", names.join(", "))
                }
            };
            Call::post("/user/delete", json!({"user_ids": user_ids})).about(subject)
        }
    })
}

pub(super) fn render(
    command: &UsersCommand,
    answer: Option<Value>,
    format: Option<Format>,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        UsersCommand::List { .. } => {
            let answer = expect_object(answer, "the user list")?;
            if format == Some(Format::Json) {
                return Ok(pretty(&answer));
            }
            let users = expect_items(&answer, "users", "the user list")?;
            let first = page_line(
                users.len(),
                &answer["total"],
                &answer["page"],
                &answer["total_pages"],
                "users",
            );
            Ok(format!("{first}{}", user_table(users, layout)))
        }
        UsersCommand::Create { .. } => {
            let answer = expect_object(answer, "the new user")?;
            match (format, answer["key"].as_str()) {
                (Some(Format::Table), Some(key)) => {
                    let mut rest = answer.clone();
                    if let Some(fields) = rest.as_object_mut() {
                        fields.remove("key");
                    }
                    let rows = super::flatten(&rest);
                    let table = field_table(rows.iter().map(|(k, v)| (k.as_str(), v.clone())));
                    Ok(format!("Key: {key}  (shown once; store it now)\n{table}"))
                }
                _ => object(answer, format),
            }
        }
        UsersCommand::Get { .. } => object(expect_object(answer, "the user info")?, format),
        UsersCommand::Update { .. } => object(expect_object(answer, "the updated user")?, format),
        UsersCommand::Delete { user_ids } => match (format, answer) {
            (Some(Format::Table), _) => Ok(format!(
                "Deleted {} user{} and their keys.\n",
                user_ids.len(),
                if user_ids.len() == 1 { "" } else { "s" }
            )),
            (_, Some(answer)) => Ok(pretty(&answer)),
            (_, None) => Ok(pretty(&json!({"deleted_users": user_ids}))),
        },
    }
}

/// `--password`: as given, or `-`: one line read by `read_password`.
fn password_value(given: &str, read_password: ReadPassword) -> Result<String, ClientError> {
    let password = if given == "-" {
        read_password()?
    } else {
        given.to_string()
    };
    if password.is_empty() {
        return Err(ClientError::Usage("--password is empty".into()));
    }
    Ok(password)
}

/// `--password -` in a real run: a prompt without echo (asked twice) on a
/// terminal, else the first line of stdin, without its line ending.
pub(super) fn read_password_from_stdin() -> Result<String, ClientError> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return dialoguer::Password::new()
            .with_prompt("Password")
            .with_confirmation("Repeat the password", "the passwords differ")
            .interact()
            .map_err(|e| ClientError::Usage(format!("--password -: {e}")));
    }
    let mut line = String::new();
    let read = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Usage(format!("--password -: cannot read stdin ({e})")))?;
    if read == 0 {
        return Err(ClientError::Usage(
            "--password -: stdin is empty; give the password on its first line".into(),
        ));
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// Something, an `@`, something with a dot after it; no spaces.
fn check_email(email: &str) -> Result<(), ClientError> {
    let email = email.trim();
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "--email {} is not an email address",
            quoted(email)
        )))
    }
}

fn check_id(id: &str) -> Result<(), ClientError> {
    if id.trim().is_empty() {
        return Err(ClientError::Usage("a user id is empty".into()));
    }
    Ok(())
}

const USER_COLUMNS: [Column; 6] = [
    Column::id("USER ID"),
    Column::whole("EMAIL", 5),
    Column::wraps("ROLE", 4),
    Column::wraps("ALIAS", 2),
    Column::wraps("TEAMS", 1),
    Column::wraps("SPEND", 3),
];

fn user_table(users: &[Value], layout: Layout) -> String {
    if users.is_empty() {
        return "No users.\n".into();
    }
    let mut rows = Vec::with_capacity(users.len());
    for user in users {
        rows.push(vec![
            cell(&user["user_id"]),
            cell(&user["user_email"]),
            cell(&user["user_role"]),
            cell(&user["user_alias"]),
            super::joined(&user["teams"]),
            spend_cell(&user["spend"], &user["max_budget"]),
        ]);
    }
    listing(&USER_COLUMNS, rows, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(email: &str) -> UsersCommand {
        UsersCommand::Create {
            email: email.into(),
            role: "internal_user".into(),
            alias: Some("Alice".into()),
            teams: vec!["team1".into()],
            max_budget: Some(100.0),
            models: None,
            user_id: None,
            no_key: false,
            password: None,
            limits: Default::default(),
        }
    }

    fn no_stdin() -> Result<String, ClientError> {
        panic!("stdin must not be read")
    }

    #[test]
    fn create_body() {
        let call = plan(&create("user@example.com"), &mut no_stdin).unwrap();
        assert_eq!(call.path, "/user/new");
        assert_eq!(
            call.body.unwrap(),
            json!({
                "user_email": "user@example.com", "user_role": "internal_user",
                "user_alias": "Alice", "teams": ["team1"], "max_budget": 100.0,
            })
        );
    }

    #[test]
    fn emails() {
        for good in ["a@b.co", " user@example.com "] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "user",
            "@x.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@b.",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn get_and_delete() {
        let call = plan(
            &UsersCommand::Get {
                user_id: "u 1".into(),
            },
            &mut no_stdin,
        )
        .unwrap();
        assert_eq!(call.path, "/user/info?user_id=u%201");
        assert_eq!(call.subject.as_deref(), Some("user \"u 1\""));
        let call = plan(
            &UsersCommand::Delete {
                user_ids: vec!["a".into(), "b".into()],
            },
            &mut no_stdin,
        )
        .unwrap();
        assert_eq!(call.body.unwrap(), json!({"user_ids": ["a", "b"]}));
        assert_eq!(
            call.subject.as_deref(),
            Some("one of the users \"a\", \"b\"")
        );
    }

    fn update(password: Option<&str>, email: Option<&str>) -> UsersCommand {
        UsersCommand::Update {
            user_id: "u-1".into(),
            email: email.map(String::from),
            role: None,
            max_budget: None,
            models: None,
            password: password.map(String::from),
            limits: Default::default(),
        }
    }

    #[test]
    fn passwords_given_or_read_from_stdin() {
        let mut from_stdin = || Ok("pa ss".to_string());
        let call = plan(&update(Some("-"), None), &mut from_stdin).unwrap();
        assert_eq!(call.path, "/user/update");
        assert_eq!(
            call.body.unwrap(),
            json!({"user_id": "u-1", "password": "pa ss"})
        );
        let mut create = create("a@b.co");
        if let UsersCommand::Create { password, .. } = &mut create {
            *password = Some("given".into());
        }
        let call = plan(&create, &mut no_stdin).unwrap();
        assert_eq!(call.body.unwrap()["password"], "given");
        let mut empty = || Ok(String::new());
        let error = plan(&update(Some("-"), None), &mut empty).unwrap_err();
        assert_eq!(error.to_string(), "--password is empty");
    }

    #[test]
    fn update_needs_a_change_and_checks_before_reading_stdin() {
        let error = plan(&update(None, None), &mut no_stdin).unwrap_err();
        assert!(
            error.to_string().starts_with("nothing to change"),
            "{error}"
        );
        let error = plan(&update(Some("-"), Some("nope")), &mut no_stdin).unwrap_err();
        assert!(error.to_string().contains("not an email"), "{error}");
        let call = plan(&update(None, Some("new@b.co")), &mut no_stdin).unwrap();
        assert_eq!(
            call.body.unwrap(),
            json!({"user_id": "u-1", "user_email": "new@b.co"})
        );
        assert_eq!(call.subject.as_deref(), Some("user \"u-1\""));
    }

    #[test]
    fn listing() {
        let out = user_table(
            &[json!({
                "user_id": "u-1", "user_email": "a@b.co", "user_role": "internal_user",
                "user_alias": null, "teams": ["t1", "t2"], "spend": 0.5, "max_budget": 10,
            })],
            Layout::default(),
        );
        for needle in ["u-1", "a@b.co", "internal_user", "t1, t2", "$0.5 / $10"] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
    }
}
