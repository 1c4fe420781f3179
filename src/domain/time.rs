//! Local time for the indicators: days are counted in Asia/Ho_Chi_Minh.
//!
//! Vietnam has kept UTC+07:00 all year since 1975 (no daylight saving), so a
//! fixed offset is exact for every date the pipeline will see and needs no
//! time-zone database.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Utc};

/// Seconds east of UTC of Asia/Ho_Chi_Minh.
pub const LOCAL_OFFSET_SECONDS: i32 = 7 * 3600;

/// The fixed offset of Asia/Ho_Chi_Minh.
pub fn local_offset() -> FixedOffset {
    FixedOffset::east_opt(LOCAL_OFFSET_SECONDS).expect("UTC+7 is a valid offset")
}

/// A calendar date written exactly `YYYY-MM-DD` (a four-digit year from
/// 0001, no sign, two-digit month and day), as the API's windows and
/// cursors take it and its OpenAPI document describes it; chrono's
/// `%Y-%m-%d` alone also takes `2026-7-1`, `+2026-07-01` and year 0.
pub fn parse_day(text: &str) -> Option<NaiveDate> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            _ => c.is_ascii_digit(),
        });
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
        .filter(|d| d.year() >= 1)
}

/// The local (Asia/Ho_Chi_Minh) calendar date of an instant.
pub fn local_date(at: DateTime<Utc>) -> NaiveDate {
    (at.naive_utc() + Duration::seconds(LOCAL_OFFSET_SECONDS as i64)).date()
}

/// The local date of an instant given with any offset.
pub fn local_date_of(at: &DateTime<FixedOffset>) -> NaiveDate {
    local_date(at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evening_in_utc_is_the_next_morning_in_vietnam() {
        let at = DateTime::parse_from_rfc3339("2023-03-30T18:30:00Z").unwrap();
        assert_eq!(
            local_date_of(&at),
            NaiveDate::from_ymd_opt(2023, 3, 31).unwrap()
        );
    }

    #[test]
    fn local_midnight_belongs_to_the_new_day() {
        let at = DateTime::parse_from_rfc3339("2023-03-31T00:00:00+07:00").unwrap();
        assert_eq!(
            local_date_of(&at),
            NaiveDate::from_ymd_opt(2023, 3, 31).unwrap()
        );
        let before = DateTime::parse_from_rfc3339("2023-03-30T23:59:59.999+07:00").unwrap();
        assert_eq!(
            local_date_of(&before),
            NaiveDate::from_ymd_opt(2023, 3, 30).unwrap()
        );
    }
}
