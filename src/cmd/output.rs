//! Output of the client commands (`manage`, `models`, `keys`, ...): tables
//! for people, the server's JSON for scripts, printed to stdout.

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ColumnConstraint, ContentArrangement, Table};
use serde_json::Value;

/// A table with a header row, wrapped to the terminal's width.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// Identifiers are copied from tables: never wrap those columns.
pub fn keep_whole(table: &mut Table, columns: &[usize]) {
    for &index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
}

/// A two-column table: field, value.
pub fn field_table<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut table = table(["FIELD", "VALUE"]);
    for (field, value) in rows {
        table.add_row([field.to_string(), value]);
    }
    keep_whole(&mut table, &[0]);
    format!("{table}\n")
}

/// A JSON value as table text: strings bare, null as "-".
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn yes_no(value: &Value) -> String {
    match value {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => cell(other),
    }
}

/// An RFC 3339 time without its fraction of a second, for narrow columns.
pub fn time(value: &Value) -> String {
    let Value::String(s) = value else {
        return cell(value);
    };
    match s.find('.') {
        Some(dot) => {
            let digits = s[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
            format!("{}{}", &s[..dot], &s[dot + 1 + digits..])
        }
        None => s.clone(),
    }
}

/// Like [`time`], and a Unix time in seconds (or, when too large for
/// seconds, milliseconds) becomes RFC 3339 too.
pub fn any_time(value: &Value) -> String {
    let Some(number) = value.as_u64() else {
        return time(value);
    };
    // 10^11 seconds is the year 5138: anything larger is milliseconds.
    let seconds = if number >= 100_000_000_000 {
        number / 1000
    } else {
        number
    };
    let at = UNIX_EPOCH + Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A token secret, shortened like the server shows it; anything that is
/// not an `sk-` key is left as it is.
pub fn obfuscate(id: &str) -> String {
    if !id.starts_with("sk-") {
        return id.to_string();
    }
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 12 {
        return "sk-…".into();
    }
    let head: String = chars[..7].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Indented JSON and a newline.
pub fn pretty(value: &Value) -> String {
    let mut out = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    out.push('\n');
    out
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn print(output: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_lose_their_fraction() {
        assert_eq!(
            time(&json!("2025-01-02T03:04:05.123456Z")),
            "2025-01-02T03:04:05Z"
        );
        assert_eq!(
            time(&json!("2025-01-02T03:04:05.5+02:00")),
            "2025-01-02T03:04:05+02:00"
        );
        assert_eq!(time(&json!("2025-01-02T03:04:05Z")), "2025-01-02T03:04:05Z");
        assert_eq!(time(&Value::Null), "-");
    }

    #[test]
    fn unix_times() {
        assert_eq!(any_time(&json!(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(
            any_time(&json!(1_700_000_000_123_u64)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            any_time(&json!("2025-01-02T03:04:05.1Z")),
            "2025-01-02T03:04:05Z"
        );
    }

    #[test]
    fn secrets_are_shortened() {
        assert_eq!(obfuscate("sk-abcdefghijklmnop"), "sk-abcd…mnop");
        assert_eq!(obfuscate("sk-short"), "sk-…");
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(obfuscate(uuid), uuid);
    }
}
