//! `teams list|available|info|create|update|delete|add-member|remove-member|block|unblock`:
//! teams through `/team/*`.

use serde_json::{Value, json};

use super::{Call, json_object, list, object, quoted, spend_cell, unexpected};
use crate::cli::litellm::{Format, TeamSettings, TeamsCommand};
use crate::cmd::output::{Column, Layout, cell, listing, pretty};
use crate::http_client::{ClientError, with_query};

pub(super) fn plan(command: &TeamsCommand) -> Result<Call, ClientError> {
    Ok(match command {
        TeamsCommand::List { user_id } => match user_id {
            Some(user_id) => Call::get(with_query("/team/list", &[("user_id", user_id)])),
            None => Call::get("/team/list"),
        },
        TeamsCommand::Available => Call::get("/team/available"),
        TeamsCommand::Info { team_id } => {
            check_id(team_id)?;
            Call::get(with_query("/team/info", &[("team_id", team_id)])).about(team(team_id))
        }
        TeamsCommand::Create { team_id, settings } => {
            let mut body = settings_body(settings)?;
            if let Some(team_id) = team_id {
                check_id(team_id)?;
                body["team_id"] = json!(team_id);
            }
            Call::post("/team/new", body)
        }
        TeamsCommand::Update { team_id, settings } => {
            check_id(team_id)?;
            let mut body = settings_body(settings)?;
            if body.as_object().is_some_and(|fields| fields.is_empty()) {
                return Err(ClientError::Usage(
                    "nothing to change: give --alias, --models, --max-budget, --rpm-limit, \
                     --tpm-limit, --max-parallel-requests, --budget-duration or --metadata"
                        .into(),
                ));
            }
            body["team_id"] = json!(team_id);
            Call::post("/team/update", body).about(team(team_id))
        }
        TeamsCommand::Delete { team_ids } => {
            for id in team_ids {
                check_id(id)?;
            }
            let subject = match team_ids.as_slice() {
                [one] => team(one),
                many => {
                    let names: Vec<String> = many.iter().map(|id| quoted(id)).collect();
                    format!("one of the teams {}", names.join(", "))
                }
            };
            Call::post("/team/delete", json!({"team_ids": team_ids})).about(subject)
        }
        TeamsCommand::AddMember {
            team_id,
            user_id,
            user_email,
            role,
        } => {
            check_id(team_id)?;
            let mut member = user_body(user_id, user_email)?;
            member["role"] = json!(role);
            Call::post(
                "/team/member_add",
                json!({"team_id": team_id, "member": member}),
            )
            .about(format!("{} or its user", team(team_id)))
        }
        TeamsCommand::RemoveMember {
            team_id,
            user_id,
            user_email,
        } => {
            check_id(team_id)?;
            let mut body = user_body(user_id, user_email)?;
            body["team_id"] = json!(team_id);
            Call::post("/team/member_delete", body).about(format!("{} or its user", team(team_id)))
        }
        TeamsCommand::Block { team_id } => {
            check_id(team_id)?;
            Call::post("/team/block", json!({"team_id": team_id})).about(team(team_id))
        }
        TeamsCommand::Unblock { team_id } => {
            check_id(team_id)?;
            Call::post("/team/unblock", json!({"team_id": team_id})).about(team(team_id))
        }
    })
}

fn team(team_id: &str) -> String {
    format!("team {}", quoted(team_id))
}

fn check_id(id: &str) -> Result<(), ClientError> {
    if id.trim().is_empty() {
        return Err(ClientError::Usage("a team id is empty".into()));
    }
    Ok(())
}

/// `{"user_id"}` or `{"user_email"}` (clap makes sure one is given).
fn user_body(user_id: &Option<String>, user_email: &Option<String>) -> Result<Value, ClientError> {
    match (user_id, user_email) {
        (Some(id), _) if id.trim().is_empty() => {
            Err(ClientError::Usage("--user-id is empty".into()))
        }
        (Some(id), _) => Ok(json!({"user_id": id.trim()})),
        (None, Some(email)) if email.trim().is_empty() => {
            Err(ClientError::Usage("--user-email is empty".into()))
        }
        (None, Some(email)) => Ok(json!({"user_email": email.trim()})),
        (None, None) => Err(ClientError::Usage("give --user-id or --user-email".into())),
    }
}

/// The fields of `settings` that were given.
fn settings_body(settings: &TeamSettings) -> Result<Value, ClientError> {
    let mut body = json!({});
    if let Some(alias) = &settings.alias {
        if alias.trim().is_empty() {
            return Err(ClientError::Usage("--alias is empty".into()));
        }
        body["team_alias"] = json!(alias);
    }
    if let Some(models) = &settings.models {
        body["models"] = json!(list("--models", models)?);
    }
    if let Some(budget) = settings.max_budget {
        body["max_budget"] = json!(budget);
    }
    if let Some(rpm) = settings.rpm_limit {
        body["rpm_limit"] = json!(rpm);
    }
    if let Some(tpm) = settings.tpm_limit {
        body["tpm_limit"] = json!(tpm);
    }
    if let Some(parallel) = settings.max_parallel_requests {
        body["max_parallel_requests"] = json!(parallel);
    }
    if let Some(duration) = &settings.budget_duration {
        if duration.trim().is_empty() {
            return Err(ClientError::Usage("--budget-duration is empty".into()));
        }
        body["budget_duration"] = json!(duration.trim());
    }
    if let Some(metadata) = &settings.metadata {
        body["metadata"] = Value::Object(json_object("--metadata", metadata)?);
    }
    Ok(body)
}

pub(super) fn render(
    command: &TeamsCommand,
    answer: Option<Value>,
    format: Option<Format>,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        TeamsCommand::List { .. } | TeamsCommand::Available => {
            let teams = match answer {
                Some(Value::Array(teams)) => teams,
                Some(other) => return Err(unexpected("the team list", &other.to_string())),
                None => return Err(unexpected("the team list", "an empty body")),
            };
            if format == Some(Format::Json) {
                return Ok(pretty(&Value::Array(teams)));
            }
            Ok(team_table(&teams, layout))
        }
        TeamsCommand::Delete { team_ids } => match (format, answer) {
            (Some(Format::Table), answer) => {
                let keys = answer
                    .as_ref()
                    .and_then(|a| a["deleted_keys"].as_u64())
                    .unwrap_or(0);
                Ok(format!(
                    "Deleted {} team{} and {keys} key{}.\n",
                    team_ids.len(),
                    if team_ids.len() == 1 { "" } else { "s" },
                    if keys == 1 { "" } else { "s" },
                ))
            }
            (_, Some(answer)) => Ok(pretty(&answer)),
            (_, None) => Ok(pretty(&json!({"deleted_teams": team_ids}))),
        },
        _ => object(super::expect_object(answer, "the team")?, format),
    }
}

const TEAM_COLUMNS: [Column; 7] = [
    Column::id("TEAM ID"),
    Column::whole("ALIAS", 5),
    Column::wraps("MODELS", 2),
    Column::wraps("MEMBERS", 1),
    Column::wraps("LIMITS", 3),
    Column::wraps("SPEND", 4),
    Column::whole("BLOCKED", 6),
];

fn team_table(teams: &[Value], layout: Layout) -> String {
    if teams.is_empty() {
        return "No teams.\n".into();
    }
    let mut rows = Vec::with_capacity(teams.len());
    for team in teams {
        let models = match team["models"].as_array() {
            Some(models) if !models.is_empty() => super::joined(&team["models"]),
            _ => "all".into(),
        };
        let members: Vec<String> = team["members_with_roles"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|m| format!("{} ({})", cell(&m["user_id"]), cell(&m["role"])))
            .collect();
        let limits: Vec<String> = [
            ("rpm", &team["rpm_limit"]),
            ("tpm", &team["tpm_limit"]),
            ("parallel", &team["max_parallel_requests"]),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(name, v)| format!("{name} {}", cell(v)))
        .collect();
        rows.push(vec![
            cell(&team["team_id"]),
            cell(&team["team_alias"]),
            models,
            if members.is_empty() {
                "-".into()
            } else {
                members.join(", ")
            },
            if limits.is_empty() {
                "-".into()
            } else {
                limits.join(", ")
            },
            spend_cell(&team["spend"], &team["max_budget"]),
            if team["blocked"].as_bool() == Some(true) {
                "yes".into()
            } else {
                "no".into()
            },
        ]);
    }
    listing(&TEAM_COLUMNS, rows, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_update_bodies() {
        let settings = TeamSettings {
            alias: Some("Red".into()),
            models: Some("a, b".into()),
            max_budget: Some(10.0),
            rpm_limit: Some(5),
            budget_duration: Some("30d".into()),
            ..TeamSettings::default()
        };
        let call = plan(&TeamsCommand::Create {
            team_id: Some("red".into()),
            settings: settings.clone(),
        })
        .unwrap();
        assert_eq!(call.path, "/team/new");
        assert_eq!(
            call.body.unwrap(),
            json!({"team_id": "red", "team_alias": "Red", "models": ["a", "b"],
                   "max_budget": 10.0, "rpm_limit": 5, "budget_duration": "30d"})
        );
        let error = plan(&TeamsCommand::Update {
            team_id: "red".into(),
            settings: TeamSettings::default(),
        })
        .unwrap_err();
        assert!(
            error.to_string().starts_with("nothing to change"),
            "{error}"
        );
        let call = plan(&TeamsCommand::Update {
            team_id: "red".into(),
            settings: TeamSettings {
                tpm_limit: Some(100),
                ..TeamSettings::default()
            },
        })
        .unwrap();
        assert_eq!(
            call.body.unwrap(),
            json!({"team_id": "red", "tpm_limit": 100})
        );
        assert_eq!(call.subject.as_deref(), Some("team \"red\""));
    }

    #[test]
    fn members() {
        let call = plan(&TeamsCommand::AddMember {
            team_id: "red".into(),
            user_id: None,
            user_email: Some("a@b.co".into()),
            role: "admin".into(),
        })
        .unwrap();
        assert_eq!(
            call.body.unwrap(),
            json!({"team_id": "red", "member": {"user_email": "a@b.co", "role": "admin"}})
        );
        let call = plan(&TeamsCommand::RemoveMember {
            team_id: "red".into(),
            user_id: Some("u-1".into()),
            user_email: None,
        })
        .unwrap();
        assert_eq!(call.path, "/team/member_delete");
        assert_eq!(
            call.body.unwrap(),
            json!({"team_id": "red", "user_id": "u-1"})
        );
    }

    #[test]
    fn listing() {
        let out = team_table(
            &[json!({
                "team_id": "red", "team_alias": "Red", "models": [], "rpm_limit": 5,
                "members_with_roles": [{"user_id": "ann", "role": "admin"}],
                "spend": 0.5, "max_budget": 10, "blocked": true,
            })],
            Layout::default(),
        );
        for needle in [
            "red",
            "Red",
            "all",
            "ann (admin)",
            "rpm 5",
            "$0.5 / $10",
            "yes",
        ] {
            assert!(out.contains(needle), "{needle} in\n{out}");
        }
    }
}
