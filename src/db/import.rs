//! Bulk import and streamed export of clients (`clients import` / `clients export`).
//!
//! The import runs in ONE transaction. Nothing is visible to others before `commit`; a killed
//! process leaves the database as it was.
//!
//! SQLite and PostgreSQL load rows in different ways (multi-row INSERTs; binary COPY), so each
//! has its own implementation of [`ClientImport`] (`import/sqlite.rs`, `import/postgres.rs`);
//! [`Importer`] is the one the database in use needs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;

use super::fields::{self, Fields};
use super::tags::Tags;
use super::{Db, now};
use crate::auth::policy::Scope;
use crate::error::Result;
use crate::on_pool;
use crate::output::Record;

mod postgres;
mod sqlite;

pub use postgres::PgImport;
pub use sqlite::SqliteImport;

/// Rows per statement. SQLite binds 6 parameters per row, under its limit of 32766 parameters
/// per statement; PostgreSQL copies the same batches.
pub const BATCH: usize = 5000;

/// A validated row of the file, ready to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    /// Physical line number of the record's start in the file (for messages).
    pub line: u64,
    pub email: String,
    /// `accounts::email_key(email)`: the case-insensitive key of the unique index.
    pub key: String,
    pub full_name: String,
    pub comment: String,
    /// Stored form of the tags (`;news;vip;`, or empty).
    pub tags: String,
    /// Stored form of the custom fields (a JSON object).
    pub fields: String,
    /// `db::search::key` of the row, for `clients list --search`.
    pub search: String,
}

/// Which optional columns the file has: under `--on-conflict update` only these replace the
/// existing client's (a file without a `tags` column keeps the tags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    pub tags: bool,
    pub fields: bool,
}

/// What to do when a row's email already belongs to a client of the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    Skip,
    Update,
    Error,
}

/// Why a row could not be inserted under `OnConflict::Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictKind {
    /// The owner already had this client before the import.
    Existing,
    /// The same email (case-insensitively) appears on the given earlier line of the file, or
    /// on an earlier line in another batch (`None`).
    InFile(Option<u64>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub line: u64,
    pub email: String,
    pub kind: ConflictKind,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ConflictKind::Existing => {
                write!(
                    f,
                    "line {}: a client with {} already exists",
                    self.line, self.email
                )
            }
            ConflictKind::InFile(Some(first)) => write!(
                f,
                "line {}: {} is a duplicate of line {first}",
                self.line, self.email
            ),
            ConflictKind::InFile(None) => write!(
                f,
                "line {}: {} is a duplicate of an earlier line",
                self.line, self.email
            ),
        }
    }
}

/// What one batch (or, on PostgreSQL, `finish`) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub skipped: u64,
    /// Only under `OnConflict::Error`: the rows that were not inserted, in line order (at most
    /// `LISTED_CONFLICTS` of them from `finish`).
    pub conflicts: Vec<Conflict>,
    /// Conflicting rows beyond those in `conflicts`.
    pub more_conflicts: u64,
}

/// How many conflicts `finish` lists by line (the rest are counted).
pub const LISTED_CONFLICTS: usize = 50;

/// One bulk import of clients, in ONE transaction (dropped without `commit`: rolled back).
/// The backends load rows in different ways, so each implements it: [`SqliteImport`],
/// [`PgImport`].
pub(crate) trait ClientImport: Sized {
    /// Inserts (or updates, or skips) one batch of rows, in file order, or keeps it for
    /// `finish`; returns what it settled.
    async fn write(&mut self, rows: Vec<NewClient>) -> Result<BatchOutcome>;
    /// After the last `write`: settles what the batches left pending; returns what it did.
    async fn finish(&mut self) -> Result<BatchOutcome>;
    async fn commit(self) -> Result<()>;
    async fn rollback(self) -> Result<()>;
}

/// What both imports know about their target.
#[derive(Debug, Clone, Copy)]
struct Target {
    owner_id: i64,
    mode: OnConflict,
    columns: Columns,
    created_at: DateTime<Utc>,
    /// The highest client id before the import: a conflicting row with a higher id was
    /// inserted by this import, so the conflict is a duplicate inside the file.
    max_id_before: i64,
}

impl Target {
    fn new(owner_id: i64, mode: OnConflict, columns: Columns, max_id_before: i64) -> Target {
        Target {
            owner_id,
            mode,
            columns,
            created_at: now(),
            max_id_before,
        }
    }
}

/// `Target::max_id_before`, read inside the import's transaction.
const MAX_ID_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM clients";

/// The import for the database in use, chosen once at `begin`.
pub enum Importer {
    Sqlite(SqliteImport),
    Postgres(PgImport),
}

impl Importer {
    pub async fn begin(
        db: &Db,
        owner_id: i64,
        mode: OnConflict,
        columns: Columns,
    ) -> Result<Importer> {
        Ok(match db {
            Db::Sqlite(pool) => {
                Importer::Sqlite(SqliteImport::begin(pool, owner_id, mode, columns).await?)
            }
            Db::Postgres(pool) => {
                Importer::Postgres(PgImport::begin(pool, owner_id, mode, columns).await?)
            }
        })
    }
}

impl ClientImport for Importer {
    async fn write(&mut self, rows: Vec<NewClient>) -> Result<BatchOutcome> {
        match self {
            Importer::Sqlite(i) => i.write(rows).await,
            Importer::Postgres(i) => i.write(rows).await,
        }
    }

    async fn finish(&mut self) -> Result<BatchOutcome> {
        match self {
            Importer::Sqlite(i) => i.finish().await,
            Importer::Postgres(i) => i.finish().await,
        }
    }

    async fn commit(self) -> Result<()> {
        match self {
            Importer::Sqlite(i) => i.commit().await,
            Importer::Postgres(i) => i.commit().await,
        }
    }

    async fn rollback(self) -> Result<()> {
        match self {
            Importer::Sqlite(i) => i.rollback().await,
            Importer::Postgres(i) => i.rollback().await,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upsert {
    Nothing,
    Update,
}

const INSERT_INTO: &str = "INSERT INTO clients (owner_id, email, email_key, full_name, comment, tags, fields, created_at, search_key)";

fn on_conflict_sql(upsert: Upsert, returning: bool, columns: Columns) -> String {
    let action = match upsert {
        Upsert::Nothing => "DO NOTHING".to_string(),
        Upsert::Update => format!(
            "DO UPDATE SET email = excluded.email, full_name = excluded.full_name, \
             comment = excluded.comment, search_key = excluded.search_key{}{}",
            if columns.tags {
                ", tags = excluded.tags"
            } else {
                ""
            },
            if columns.fields {
                ", fields = excluded.fields"
            } else {
                ""
            }
        ),
    };
    let ret = if returning {
        " RETURNING email_key"
    } else {
        ""
    };
    format!(" ON CONFLICT (owner_id, email_key) {action}{ret}")
}

/// The rows with each key once, at its last occurrence's values, in file order.
fn keep_last(rows: Vec<NewClient>) -> Vec<NewClient> {
    let mut last: HashMap<&str, u64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        last.insert(r.key.as_str(), r.line);
    }
    if last.len() == rows.len() {
        return rows;
    }
    let keep: Vec<bool> = rows
        .iter()
        .map(|r| last[r.key.as_str()] == r.line)
        .collect();
    rows.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

/// The rows with each key once (its first occurrence), and the later occurrences as conflicts.
fn split_first(rows: Vec<NewClient>) -> (Vec<NewClient>, Vec<Conflict>) {
    let mut first: HashMap<String, u64> = HashMap::with_capacity(rows.len());
    let mut keep = Vec::with_capacity(rows.len());
    let mut conflicts = Vec::new();
    for r in rows {
        if let Some(&line) = first.get(&r.key) {
            conflicts.push(Conflict {
                line: r.line,
                email: r.email,
                kind: ConflictKind::InFile(Some(line)),
            });
        } else {
            first.insert(r.key.clone(), r.line);
            keep.push(r);
        }
    }
    (keep, conflicts)
}

/// One exported client: the import's columns, so export -> import round-trips. In CSV the
/// fields are columns of their own (see `commands::import::export`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ExportRow {
    pub email: String,
    pub full_name: String,
    pub comment: String,
    #[sqlx(try_from = "String")]
    pub tags: Tags,
    #[sqlx(try_from = "String")]
    pub fields: Fields,
}

impl Record for ExportRow {
    const HEADERS: &'static [&'static str] = &["email", "full_name", "comment", "tags", "fields"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.email.clone(),
            self.full_name.clone(),
            self.comment.clone(),
            self.tags.cell(),
            self.fields.stored(),
        ]
    }
}

/// Every custom field key of the clients in `scope`, sorted (the export's extra columns).
pub async fn field_keys(db: &Db, scope: Scope) -> Result<Vec<String>> {
    let sql = fields::keys_sql(db);
    Ok(on_pool!(db, p => sqlx::query_scalar(sql).bind(scope.owner()).fetch_all(p).await)?)
}

/// Streams the clients in `scope` (oldest first) to `each`, one row at a time; returns the count.
pub async fn export(
    db: &Db,
    scope: Scope,
    mut each: impl FnMut(ExportRow) -> Result<()>,
) -> Result<u64> {
    let sql = "SELECT email, full_name, comment, tags, fields FROM clients \
               WHERE ($1 IS NULL OR owner_id = $1) ORDER BY id";
    let mut n = 0u64;
    on_pool!(db, p => {
        let mut rows = sqlx::query_as::<_, ExportRow>(sql).bind(scope.owner()).fetch(p);
        while let Some(row) = rows.try_next().await? {
            each(row)?;
            n += 1;
        }
    });
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64, key: &str) -> NewClient {
        NewClient {
            line,
            email: key.to_uppercase(),
            key: key.into(),
            full_name: format!("n{line}"),
            comment: String::new(),
            tags: String::new(),
            fields: "{}".into(),
            search: String::new(),
        }
    }

    #[test]
    fn keep_last_keeps_the_last_occurrence_in_order() {
        let rows = vec![row(2, "a"), row(3, "b"), row(4, "a"), row(5, "c")];
        let lines: Vec<u64> = keep_last(rows).iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
    }

    #[test]
    fn split_first_reports_later_duplicates() {
        let (keep, conflicts) = split_first(vec![row(2, "a"), row(3, "a"), row(4, "b")]);
        assert_eq!(keep.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].kind, ConflictKind::InFile(Some(2)));
        assert_eq!(
            conflicts[0].to_string(),
            "line 3: A is a duplicate of line 2"
        );
    }
}
