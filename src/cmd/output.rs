//! Output of the client commands (`manage`, `models`, `keys`, ...): tables
//! for people, the server's JSON for scripts, printed to stdout.

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ColumnConstraint, ContentArrangement, Table};
use serde_json::Value;

/// One column of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub header: &'static str,
    /// Copied from tables (ids, keys, names): never wrapped.
    pub whole: bool,
    /// When the table does not fit, columns go lowest `keep` first (the
    /// rightmost of equals first); [`ALWAYS`] never goes.
    pub keep: u8,
}

/// The `keep` of a column that is never dropped.
pub const ALWAYS: u8 = u8::MAX;

/// What a wrapping column needs (or its content, when narrower) for the
/// table to count as fitting; it may wrap narrower or grow wider.
const WRAP_FLOOR: u16 = 12;

impl Column {
    /// The column that names a row: never wrapped, never dropped.
    pub const fn id(header: &'static str) -> Column {
        Column {
            header,
            whole: true,
            keep: ALWAYS,
        }
    }

    /// A column that wraps to fit, dropped at `keep`.
    pub const fn wraps(header: &'static str, keep: u8) -> Column {
        Column {
            header,
            whole: false,
            keep,
        }
    }

    /// A column that is never wrapped, dropped at `keep`.
    pub const fn whole(header: &'static str, keep: u8) -> Column {
        Column {
            header,
            whole: true,
            keep,
        }
    }
}

/// How tables are fitted: to a width (or none), unless `--wide` asks for
/// every column at full width.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// `None`: no limit, every column on one line (a pipe or a file).
    pub width: Option<u16>,
    /// `--wide`: every column, nothing wrapped, whatever the width.
    pub wide: bool,
}

impl Layout {
    /// `COLUMNS` when set to a number, else the terminal's width when
    /// stdout is a terminal, else no limit: output piped to a file or to
    /// another program is never cut.
    pub fn detect(wide: bool) -> Layout {
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
            .filter(|&width| width > 0);
        Layout {
            width: columns.or_else(|| Table::new().width()),
            wide,
        }
    }
}

/// A listing as a table fitted to `layout`: columns dropped (lowest
/// `keep` first, unless `--wide`) until what is left fits, then the
/// wrapping columns wrapped; a line after the table names what was
/// dropped.
pub fn listing(columns: &[Column], rows: Vec<Vec<String>>, layout: Layout) -> String {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(columns.iter().map(|c| c.header));
    for row in rows {
        table.add_row(row);
    }
    // `--wide` is every column at its full width, as `kubectl -o wide`:
    // squeezing them all into a narrow terminal would leave none readable.
    let Some(width) = layout.width.filter(|_| !layout.wide) else {
        table.set_content_arrangement(ContentArrangement::Disabled);
        return format!("{table}\n");
    };
    let content = table.column_max_content_widths();
    let need = |index: usize| -> usize {
        let column = &columns[index];
        let content = content.get(index).copied().unwrap_or(1);
        let inner = if column.whole {
            content
        } else {
            content.min(WRAP_FLOOR)
        };
        // One space of padding on each side and the border on the left.
        usize::from(inner) + 3
    };
    let mut shown = vec![true; columns.len()];
    let fits = |shown: &[bool]| {
        let total: usize = (0..columns.len()).filter(|&i| shown[i]).map(need).sum();
        // And the border on the right.
        total < usize::from(width)
    };
    while !fits(&shown) {
        let dropped = (0..columns.len())
            .filter(|&i| shown[i] && columns[i].keep != ALWAYS)
            .min_by_key(|&i| (columns[i].keep, std::cmp::Reverse(i)));
        match dropped {
            Some(index) => shown[index] = false,
            None => break,
        }
    }
    // Wrapping columns get no lower boundary: comfy-table would hold such
    // a column at exactly its boundary even where there is room for more.
    for (index, column) in columns.iter().enumerate() {
        let constraint = match (shown[index], column.whole) {
            (false, _) => ColumnConstraint::Hidden,
            (true, true) => ColumnConstraint::ContentWidth,
            (true, false) => continue,
        };
        if let Some(target) = table.column_mut(index) {
            target.set_constraint(constraint);
        }
    }
    table
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
    let hidden: Vec<&str> = columns
        .iter()
        .zip(&shown)
        .filter(|(_, shown)| !**shown)
        .map(|(column, _)| column.header)
        .collect();
    if hidden.is_empty() {
        format!("{table}\n")
    } else {
        format!(
            "{table}\nhidden to fit: {} (--wide shows them)\n",
            hidden.join(", ")
        )
    }
}

/// A two-column table: field, value.
pub fn field_table<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let columns = [Column::id("FIELD"), Column::wraps("VALUE", ALWAYS)];
    let rows = rows
        .into_iter()
        .map(|(field, value)| vec![field.to_string(), value])
        .collect();
    listing(&columns, rows, Layout::detect(false))
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

    const COLUMNS: [Column; 4] = [
        Column::id("ID"),
        Column::wraps("NOTE", 3),
        Column::whole("OWNER", 1),
        Column::wraps("WHEN", 2),
    ];

    fn rows() -> Vec<Vec<String>> {
        vec![vec![
            "123e4567-e89b-12d3-a456-426614174000".into(),
            "a note that is long enough to be wrapped over lines".into(),
            "owner-0123456789".into(),
            "2025-01-02T03:04:05Z".into(),
        ]]
    }

    fn widest(text: &str) -> usize {
        text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    }

    #[test]
    fn listings_fit_the_width_dropping_columns_by_priority() {
        let unlimited = listing(&COLUMNS, rows(), Layout::default());
        assert!(widest(&unlimited) > 120, "{unlimited}");
        assert_eq!(unlimited.lines().count(), 5, "one line a row:\n{unlimited}");

        let at = |width: u16, wide: bool| {
            listing(
                &COLUMNS,
                rows(),
                Layout {
                    width: Some(width),
                    wide,
                },
            )
        };
        let roomy = at(200, false);
        assert!(!roomy.contains("hidden"), "{roomy}");
        // OWNER goes first, then WHEN; ID stays whole, NOTE wraps.
        let narrow = at(80, false);
        assert!(widest(&narrow) <= 80, "{narrow}");
        assert!(
            narrow.contains("123e4567-e89b-12d3-a456-426614174000"),
            "{narrow}"
        );
        let header = narrow.lines().nth(1).unwrap();
        assert!(
            !header.contains("OWNER") && header.contains("WHEN"),
            "{narrow}"
        );
        assert!(narrow.ends_with("\nhidden to fit: OWNER (--wide shows them)\n"));
        let narrower = at(60, false);
        assert!(widest(&narrower) <= 60, "{narrower}");
        assert!(
            narrower.contains("hidden to fit: OWNER, WHEN ("),
            "{narrower}"
        );
        // Only the id left: it is shown whole even where it does not fit.
        let tiny = at(30, false);
        assert!(
            tiny.contains("123e4567-e89b-12d3-a456-426614174000"),
            "{tiny}"
        );
        assert!(
            tiny.contains("hidden to fit: NOTE, OWNER, WHEN ("),
            "{tiny}"
        );

        assert_eq!(at(80, true), unlimited, "--wide: every column, unwrapped");
    }

    #[test]
    fn secrets_are_shortened() {
        assert_eq!(obfuscate("sk-abcdefghijklmnop"), "sk-abcd…mnop");
        assert_eq!(obfuscate("sk-short"), "sk-…");
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(obfuscate(uuid), uuid);
    }
}
