//! Times typed by people and times shown to them, in their zone (`TZ`, else the system
//! zone; jiff does the zone rules). Storage and JSON/CSV stay UTC: only the edges convert.
//! Every flag that takes a time (`--start`, `--end`, `--since`, `--until`) goes through
//! [`parse`], so they all accept the same forms.

use chrono::{DateTime, Utc};
use jiff::civil;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ZonedDateTime};

use crate::error::{Error, Result};

/// The forms [`parse`] takes, for error messages and help texts.
pub const FORMS: &str = "now, +2h, +3d, -1d, tomorrow 09:00, 2026-12-05 09:00, 2026-12-05T09:00, \
2026-12-05 (local time) or RFC 3339 with an offset (2026-12-05T09:00:00Z)";

/// The caller's zone: `TZ`, else the system's; UTC if neither can be read. Looked up once
/// per process (a table of many rows shows every time in it).
pub fn zone() -> TimeZone {
    static ZONE: std::sync::OnceLock<TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| TimeZone::try_system().unwrap_or(TimeZone::UTC))
        .clone()
}

fn to_jiff(t: &DateTime<Utc>) -> Timestamp {
    let ns = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    Timestamp::from_nanosecond(ns).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// A time a person typed, relative to `now` and read in `zone`. Forms: `now`; `+2h`,
/// `+3d`, `-1d`, `+1 week` (a signed span; days are calendar days in the zone);
/// `today|tomorrow|yesterday [HH:MM[:SS]]`; a date and time without offset
/// (`2026-12-05 09:00`, `2026-12-05T09:00`), or a date alone (its midnight), both local;
/// RFC 3339 with `Z` or an offset.
pub fn parse_in(
    field: &str,
    raw: &str,
    now: DateTime<Utc>,
    zone: &TimeZone,
) -> Result<DateTime<Utc>> {
    let s = raw.trim();
    let bad = |why: &str| Error::invalid(field, format!("'{s}' is not a time{why} (use {FORMS})"));
    let here = to_jiff(&now).to_zoned_datetime(zone.clone());
    let lower = s.to_ascii_lowercase();
    if lower == "now" {
        return Ok(now);
    }
    // A date never starts with a sign, so a signed text is a span from now.
    if s.starts_with(['+', '-']) {
        let span: Span = s.parse().map_err(|_| bad(""))?;
        let t = here.checked_add(span).map_err(|_| bad(": out of range"))?;
        return Ok(to_chrono(t.timestamp()));
    }
    for (word, days) in [("today", 0), ("tomorrow", 1), ("yesterday", -1)] {
        if let Some(rest) = lower.strip_prefix(word) {
            let day = here
                .date()
                .checked_add(Span::new().days(days))
                .map_err(|_| bad(": out of range"))?;
            let rest = rest.trim();
            let time = if rest.is_empty() {
                civil::Time::midnight()
            } else {
                parse_clock(rest).ok_or_else(|| bad(""))?
            };
            return local(day.to_datetime(time), zone).ok_or_else(|| bad(""));
        }
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(to_chrono(t));
    }
    if let Ok(z) = s.parse::<ZonedDateTime>() {
        return Ok(to_chrono(z.timestamp()));
    }
    if let Ok(dt) = s.parse::<civil::DateTime>() {
        return local(dt, zone).ok_or_else(|| bad(""));
    }
    if let Ok(d) = s.parse::<civil::Date>() {
        return local(d.to_datetime(civil::Time::midnight()), zone).ok_or_else(|| bad(""));
    }
    Err(bad(""))
}

/// [`parse_in`] in the caller's zone.
pub fn parse(field: &str, raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    parse_in(field, raw, now, &zone())
}

/// `09:00`, `9:00`, `09:00:30`.
fn parse_clock(s: &str) -> Option<civil::Time> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str| p.parse::<i8>().ok();
    match parts.as_slice() {
        [h, m] => civil::Time::new(num(h)?, num(m)?, 0, 0).ok(),
        [h, m, sec] => civil::Time::new(num(h)?, num(m)?, num(sec)?, 0).ok(),
        _ => None,
    }
}

/// A wall-clock time in `zone`; in a DST gap or overlap, the "compatible" choice (the
/// later side of a gap, the earlier of an overlap), as most calendars do.
fn local(dt: civil::DateTime, zone: &TimeZone) -> Option<DateTime<Utc>> {
    dt.to_zoned_datetime(zone.clone())
        .ok()
        .map(|z| to_chrono(z.timestamp()))
}

/// A time for a table: `2026-12-05 09:00:00 MSK` in `zone`.
pub fn show_in(t: &DateTime<Utc>, zone: &TimeZone) -> String {
    to_jiff(t)
        .to_zoned_datetime(zone.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// [`show_in`] in the caller's zone.
pub fn show(t: &DateTime<Utc>) -> String {
    show_in(t, &zone())
}

/// `Sat 05 Dec 09:00 MSK, in 2 days`: a moment as a person reads it, against `now`.
pub fn describe_in(t: &DateTime<Utc>, now: DateTime<Utc>, zone: &TimeZone) -> String {
    let when = to_jiff(t)
        .to_zoned_datetime(zone.clone())
        .strftime("%a %d %b %H:%M %Z")
        .to_string();
    format!("{when}, {}", relative(*t - now))
}

/// "in 2 days", "3 hours ago", "now": the largest whole unit, so it reads at a glance.
fn relative(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    let abs = secs.unsigned_abs();
    if abs < 60 {
        return "just now".to_string();
    }
    let (n, unit) = match abs {
        a if a < 3600 => (a / 60, "minute"),
        a if a < 2 * 86_400 => (a / 3600, "hour"),
        a => (a / 86_400, "day"),
    };
    let s = if n == 1 { "" } else { "s" };
    if secs > 0 {
        format!("in {n} {unit}{s}")
    } else {
        format!("{n} {unit}{s} ago")
    }
}

/// The window of a mailing for stderr after `mailings add|edit`.
pub fn describe_window(start: &DateTime<Utc>, end: &DateTime<Utc>, now: DateTime<Utc>) -> String {
    let zone = zone();
    let verb = if *start <= now { "started" } else { "starts" };
    let end_verb = if *end < now { "ended" } else { "ends" };
    format!(
        "{verb} {}; {end_verb} {}",
        describe_in(start, now, &zone),
        describe_in(end, now, &zone)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moscow() -> TimeZone {
        TimeZone::get("Europe/Moscow").expect("tzdb has Europe/Moscow")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn local_forms_are_in_the_zone() {
        let now = at("2026-12-03T10:30:00Z"); // 13:30 in Moscow
        let z = moscow();
        let p = |s: &str| parse_in("start", s, now, &z).unwrap();
        let nine_msk = at("2026-12-05T06:00:00Z");
        assert_eq!(p("2026-12-05T09:00"), nine_msk);
        assert_eq!(p("2026-12-05 09:00"), nine_msk);
        assert_eq!(p("2026-12-05T09:00:00"), nine_msk);
        assert_eq!(p("2026-12-05"), at("2026-12-04T21:00:00Z"));
        assert_eq!(p("2026-12-05T09:00:00Z"), at("2026-12-05T09:00:00Z"));
        assert_eq!(p("2026-12-05T12:00:00+03:00"), at("2026-12-05T09:00:00Z"));
        assert_eq!(p("now"), now);
        assert_eq!(p("+2h"), at("2026-12-03T12:30:00Z"));
        assert_eq!(p("+3d"), at("2026-12-06T10:30:00Z"));
        assert_eq!(p("-1d"), at("2026-12-02T10:30:00Z"));
        assert_eq!(p("+90m"), at("2026-12-03T12:00:00Z"));
        assert_eq!(p("tomorrow 09:00"), at("2026-12-04T06:00:00Z"));
        assert_eq!(p("Tomorrow 9:00"), at("2026-12-04T06:00:00Z"));
        assert_eq!(p("today"), at("2026-12-02T21:00:00Z"));
        for bad in ["next week", "tomorrow 25:00", "+2x", "2026-13-01", "", "+"] {
            let e = parse_in("start", bad, now, &z).unwrap_err().to_string();
            assert!(e.starts_with("start: "), "{bad}: {e}");
        }
    }

    #[test]
    fn tomorrow_counts_days_in_the_zone() {
        // 22:30 UTC is already the next day in Moscow.
        let now = at("2026-12-03T22:30:00Z");
        let t = parse_in("start", "tomorrow 09:00", now, &moscow()).unwrap();
        assert_eq!(t, at("2026-12-05T06:00:00Z"));
    }

    #[test]
    fn shown_in_the_zone() {
        let t = at("2026-12-05T06:00:00Z");
        assert_eq!(show_in(&t, &moscow()), "2026-12-05 09:00:00 MSK");
        let now = at("2026-12-03T06:00:00Z");
        assert_eq!(
            describe_in(&t, now, &moscow()),
            "Sat 05 Dec 09:00 MSK, in 2 days"
        );
        assert_eq!(relative(chrono::Duration::minutes(-90)), "1 hour ago");
        assert_eq!(relative(chrono::Duration::seconds(5)), "just now");
    }
}
