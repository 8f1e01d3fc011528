//! Budget windows (`budget_duration`): how they are written, and when the
//! next one starts.

use time::{Date, Month, OffsetDateTime};

use super::model::BudgetWindow;

impl BudgetWindow {
    /// `30s`, `10m`, `1h`, `1d`, `30d`, `1mo` (LiteLLM's forms); `None`
    /// for anything else, a zero length included.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().ok().filter(|&n| n > 0)?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "mo" => {
                return u32::try_from(n)
                    .ok()
                    .filter(|&n| n <= 1_200)
                    .map(Self::Months);
            }
            _ => return None,
        };
        n.checked_mul(seconds)
            .filter(|&s| s <= 100 * 366 * 86_400)
            .map(Self::Seconds)
    }

    /// The window as `parse` reads it, in its largest whole unit.
    pub fn text(self) -> String {
        match self {
            Self::Months(n) => format!("{n}mo"),
            Self::Seconds(s) => {
                let unit = [(86_400, "d"), (3_600, "h"), (60, "m")]
                    .into_iter()
                    .find(|(size, _)| s % size == 0);
                match unit {
                    Some((size, name)) => format!("{}{name}", s / size),
                    None => format!("{s}s"),
                }
            }
        }
    }

    /// The end of a window that starts at `start` (unix milliseconds).
    pub fn end(self, start: i64) -> i64 {
        match self {
            Self::Seconds(s) => start.saturating_add((s as i64).saturating_mul(1_000)),
            Self::Months(n) => add_months(start, n),
        }
    }

    /// The end of the window, of windows laid end to end from `start`,
    /// that holds `now`.
    pub fn end_after(self, start: i64, now: i64) -> i64 {
        let mut end = self.end(start);
        if let Self::Seconds(s) = self
            && end <= now
        {
            // Skip whole windows at once.
            let size = (s as i64).saturating_mul(1_000).max(1);
            return end + ((now - end) / size + 1) * size;
        }
        while end <= now {
            end = self.end(end);
        }
        end
    }
}

/// `ms` plus `months` calendar months (UTC), on the same day of the month
/// or the month's last day if it has fewer.
fn add_months(ms: i64, months: u32) -> i64 {
    let Ok(at) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return ms;
    };
    let index = at.year() as i64 * 12 + (at.month() as i64 - 1) + months as i64;
    let (year, month) = (index.div_euclid(12) as i32, index.rem_euclid(12) as u8 + 1);
    let Ok(month) = Month::try_from(month) else {
        return ms;
    };
    let day = at.day().min(time::util::days_in_month(month, year));
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => (at.replace_date(date).unix_timestamp_nanos() / 1_000_000) as i64,
        Err(_) => ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_and_write_as_litellm_writes_them() {
        for (text, window) in [
            ("30s", BudgetWindow::Seconds(30)),
            ("1h", BudgetWindow::Seconds(3_600)),
            ("1d", BudgetWindow::Seconds(86_400)),
            ("30d", BudgetWindow::Seconds(30 * 86_400)),
            ("1mo", BudgetWindow::Months(1)),
        ] {
            assert_eq!(BudgetWindow::parse(text), Some(window), "{text}");
            assert_eq!(window.text(), text);
        }
        assert_eq!(
            BudgetWindow::parse("90s")
                .map(BudgetWindow::text)
                .as_deref(),
            Some("90s")
        );
        for bad in ["", "0d", "d", "5", "1y", "-1d", "1.5h"] {
            assert_eq!(BudgetWindow::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn months_are_calendar_months() {
        // 2026-01-31T12:00:00Z plus a month is the last day of February.
        let jan31 = 1_769_860_800_000;
        let feb28 = jan31 + 28 * 86_400_000;
        assert_eq!(BudgetWindow::Months(1).end(jan31), feb28);
        assert_eq!(
            BudgetWindow::Months(12).end(jan31),
            jan31 + 365 * 86_400_000
        );
    }

    #[test]
    fn the_window_holding_now() {
        let w = BudgetWindow::Seconds(10);
        assert_eq!(w.end_after(0, 5_000), 10_000);
        assert_eq!(w.end_after(0, 10_000), 20_000);
        assert_eq!(w.end_after(0, 95_000), 100_000);
        assert_eq!(
            BudgetWindow::Months(1).end_after(0, 1),
            BudgetWindow::Months(1).end(0)
        );
    }
}
