//! Dates as Celery writes them: ISO-8601 with microseconds and an explicit `+00:00`
//! offset (`app.now()` in the default UTC timezone), and parsing of whatever
//! `maybe_iso8601` accepts (naive dates are taken as UTC, the worker's default timezone).

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Now as a Unix timestamp with sub-second precision (`time.time()`).
pub fn unix_now() -> f64 {
    let now = Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_micros()) / 1e6
}

/// `2026-11-22T08:30:09.656519+00:00`, as Celery 5.5+ writes `date_done` and `eta`.
pub fn iso(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// The current time in [`iso`] form.
pub fn iso_now() -> String {
    iso(Utc::now())
}

/// Parse an ISO-8601 date; a naive one is taken as UTC.
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(n.and_utc());
        }
    }
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(dt.with_timezone(&Utc));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_micros_and_offset_like_celery() {
        let dt = parse_iso("2026-11-22T08:30:09.656519+00:00").unwrap();
        assert_eq!(iso(dt), "2026-11-22T08:30:09.656519+00:00");
    }

    #[test]
    fn naive_dates_are_utc() {
        let dt = parse_iso("2030-01-01T12:00:00").unwrap();
        assert_eq!(iso(dt), "2030-01-01T12:00:00.000000+00:00");
        assert!(parse_iso("not a date").is_none());
    }
}
