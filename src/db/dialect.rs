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

/// The 1-based position of `needle` in `haystack` (0: absent): `instr` / `strpos`.
pub fn position(db: &Db, haystack: &str, needle: &str) -> String {
    match db {
        Db::Sqlite(_) => format!("instr({haystack}, {needle})"),
        Db::Postgres(_) => format!("strpos({haystack}, {needle})"),
    }
}

/// A subquery of `(owner_id, tag)`, one row per tag of each client, from the stored tag list
/// `;a;b;` in `column` of `clients`.
pub fn split_tags(db: &Db, column: &str) -> String {
    match db {
        // No split function in SQLite: peel one tag off per step of a recursive CTE.
        Db::Sqlite(_) => format!(
            "WITH RECURSIVE split(owner_id, tag, rest) AS ( \
               SELECT owner_id, NULL, substr({column}, 2) FROM clients WHERE {column} <> '' \
               UNION ALL \
               SELECT owner_id, substr(rest, 1, instr(rest, ';') - 1), substr(rest, instr(rest, ';') + 1) \
               FROM split WHERE rest <> '') \
             SELECT owner_id, tag FROM split WHERE tag IS NOT NULL"
        ),
        Db::Postgres(_) => format!(
            "SELECT owner_id, unnest(string_to_array(trim(both ';' from {column}), ';')) AS tag \
             FROM clients WHERE {column} <> ''"
        ),
    }
}
