//! The pieces of SQL that differ between SQLite and PostgreSQL, side by side, one function per
//! difference; everything else is written once (`$n` placeholders, `ON CONFLICT`, `RETURNING`
//! work on both). A difference bigger than a fragment gets one implementation per backend of
//! one trait (`db::import::ClientImport`). Above db/ nothing knows the backend.

use super::Db;

/// A case-insensitive `LIKE`: PostgreSQL's `ILIKE`; SQLite's `LIKE` already ignores ASCII case.
pub fn ilike(db: &Db) -> &'static str {
    match db {
        Db::Sqlite(_) => "LIKE",
        Db::Postgres(_) => "ILIKE",
    }
}

/// The UTC day of a timestamp column, as the per-day counters store it.
pub fn utc_day(db: &Db, column: &str) -> String {
    match db {
        // Timestamps are RFC 3339 text in UTC: the day is the first ten characters.
        Db::Sqlite(_) => format!("substr({column}, 1, 10)"),
        Db::Postgres(_) => format!("CAST(({column} AT TIME ZONE 'UTC') AS DATE)"),
    }
}
