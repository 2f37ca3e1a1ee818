//! Wall-clock helpers. Domain logic takes `now_ms` as an argument; only edges call `now_ms()`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 timestamp into Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 in UTC, for people.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Formats Unix milliseconds in UTC at a fixed width, for columns:
/// `2026-11-26 07:48:31.760Z`.
pub fn format_ms_column(ms: i64) -> String {
    const COLUMN: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(COLUMN).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_time_has_one_width() {
        assert_eq!(format_ms_column(1_764_143_311_760), "2025-11-26 07:48:31.760Z");
        assert_eq!(format_ms_column(1_764_143_311_000).len(), format_ms_column(1_764_143_311_761).len());
    }

    #[test]
    fn round_trips_rfc3339() {
        let ms = parse_rfc3339_ms("2026-11-22T03:04:05.250Z").unwrap();
        assert_eq!(format_ms(ms), "2026-11-22T03:04:05.25Z");
        assert!(parse_rfc3339_ms("yesterday").is_none());
    }

    #[test]
    fn go_zero_time_parses() {
        // Alertmanager sends Go's zero time for alerts that have not ended.
        assert!(parse_rfc3339_ms("0001-01-01T00:00:00Z").is_some());
    }
}
