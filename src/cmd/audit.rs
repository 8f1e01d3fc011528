//! `llm-proxy manage audit`: the audit log of management calls
//! (`GET /manage/audit`), newest first.

use serde_json::Value;

use super::manage::{expect_object, single};
use super::output::{Column, Layout, cell, listing, pretty, time};
use crate::cli::AuditCommand;
use crate::http_client::{Client, ClientError, with_query};

pub fn run(
    client: &Client,
    command: &AuditCommand,
    json: bool,
    layout: Layout,
) -> Result<String, ClientError> {
    match command {
        AuditCommand::List {
            limit,
            before_id,
            since,
            until,
            actor,
            method,
            path_prefix,
            status,
        } => {
            let (limit, before_id, status) = (
                limit.to_string(),
                before_id.map(|id| id.to_string()),
                status.map(|s| s.to_string()),
            );
            let mut query = vec![("limit", limit.as_str())];
            let optional = [
                ("before_id", before_id.as_deref()),
                ("since", since.as_deref()),
                ("until", until.as_deref()),
                ("actor", actor.as_deref()),
                ("method", method.as_deref()),
                ("path_prefix", path_prefix.as_deref()),
                ("status", status.as_deref()),
            ];
            query.extend(
                optional
                    .into_iter()
                    .filter_map(|(name, value)| value.map(|v| (name, v))),
            );
            let page = expect_object(
                client.get(&with_query("/manage/audit", &query))?,
                "audit log",
            )?;
            if json {
                return Ok(pretty(&Value::Object(page)));
            }
            let entries = page
                .get("entries")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let next = page.get("next_before_id").and_then(Value::as_u64);
            Ok(entry_table(&entries, next, layout))
        }
        AuditCommand::Get { id } => single(
            client.get(&format!("/manage/audit/{id}"))?,
            json,
            "audit entry",
        ),
    }
}

const ENTRY_COLUMNS: [Column; 8] = [
    Column::id("ID"),
    Column::wraps("AT", 6),
    Column::whole("ACTOR", 5),
    Column::wraps("FROM", 1),
    Column::wraps("METHOD", 4),
    Column::wraps("TARGET", 7),
    Column::wraps("STATUS", 3),
    Column::wraps("OUTCOME", 2),
];

fn entry_table(entries: &[Value], next: Option<u64>, layout: Layout) -> String {
    if entries.is_empty() {
        return "No audit entries.\n".into();
    }
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        rows.push(vec![
            cell(&entry["id"]),
            time(&entry["at"]),
            cell(&entry["actor"]),
            cell(&entry["remote"]),
            cell(&entry["method"]),
            cell(&entry["target"]),
            cell(&entry["status"]),
            cell(&entry["outcome"]),
        ]);
    }
    let table = listing(&ENTRY_COLUMNS, rows, layout);
    match next {
        Some(id) => format!("{table}More: --before-id {id}\n"),
        None => table,
    }
}
