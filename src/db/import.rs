//! Bulk import and streamed export of clients (`clients import` / `clients export`).
//!
//! The import runs in ONE transaction: batches of validated rows go in as multi-row statements
//! (SQLite: `INSERT ... VALUES (...),(...)`, PostgreSQL: `INSERT ... SELECT FROM UNNEST(arrays)`),
//! and the unique index on (owner_id, email_key) decides about duplicates, both against existing
//! clients and inside the file. Nothing is visible to others before `commit`; a killed process
//! leaves the database as it was.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{Postgres, Sqlite, Transaction};

use super::{Db, now};
use crate::auth::policy::Scope;
use crate::error::Result;
use crate::on_pool;
use crate::output::Record;

/// Rows per statement. SQLite binds 4 parameters per row, under its limit of 32766 parameters
/// per statement; PostgreSQL takes the same batches as 4 arrays.
pub const BATCH: usize = 8000;

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

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub skipped: u64,
    /// Only under `OnConflict::Error`: the rows that were not inserted, in line order.
    pub conflicts: Vec<Conflict>,
}

enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// The import's transaction. Dropping it without `commit` rolls everything back.
pub struct Importer {
    tx: Tx,
    owner_id: i64,
    mode: OnConflict,
    created_at: DateTime<Utc>,
    /// The highest client id before the import: a conflicting row with a higher id was
    /// inserted by this import, so the conflict is a duplicate inside the file.
    max_id_before: i64,
    /// The SQLite statement for a full batch, built once.
    sqlite_full_batch_sql: Option<String>,
}

/// SQLite page cache for the import connection, in KiB (negative = KiB in PRAGMA terms).
/// Large enough to keep the unique index of a million clients mostly cached, small enough
/// for the 64 MB peak RSS budget of a million-row import.
const SQLITE_IMPORT_CACHE_KIB: i64 = 24 * 1024;

impl Importer {
    pub async fn begin(db: &Db, owner_id: i64, mode: OnConflict) -> Result<Importer> {
        let max_sql = "SELECT COALESCE(MAX(id), 0) FROM clients";
        let (tx, max_id_before) = match db {
            Db::Sqlite(pool) => {
                // IMMEDIATE: take the write lock now, so no other writer slips in between the
                // counts below and our first insert.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                // Only the page cache of this connection; durability settings stay as they are.
                sqlx::query(&format!("PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}"))
                    .execute(&mut *tx)
                    .await?;
                let max: i64 = sqlx::query_scalar(max_sql).fetch_one(&mut *tx).await?;
                (Tx::Sqlite(tx), max)
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let max: i64 = sqlx::query_scalar(max_sql).fetch_one(&mut *tx).await?;
                (Tx::Postgres(tx), max)
            }
        };
        Ok(Importer {
            tx,
            owner_id,
            mode,
            created_at: now(),
            max_id_before,
            sqlite_full_batch_sql: None,
        })
    }

    /// Inserts (or updates, or skips) one batch of rows, in file order.
    pub async fn write(&mut self, rows: Vec<NewClient>) -> Result<BatchOutcome> {
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let total = rows.len() as u64;
        match self.mode {
            OnConflict::Skip => {
                let inserted = self.insert(rows, Upsert::Nothing).await?;
                Ok(BatchOutcome {
                    inserted,
                    skipped: total - inserted,
                    ..Default::default()
                })
            }
            OnConflict::Update => {
                // One statement must not touch a row twice (PostgreSQL refuses to): keep the
                // last occurrence of each email, which is what applying the rows in order gives.
                let rows = keep_last(rows);
                let existing = self.count_existing(&rows).await?;
                let inserted = rows.len() as u64 - existing;
                self.insert(rows, Upsert::Update).await?;
                Ok(BatchOutcome {
                    inserted,
                    updated: total - inserted,
                    ..Default::default()
                })
            }
            OnConflict::Error => {
                let (rows, mut conflicts) = split_first(rows);
                let keys: Vec<(u64, String, String)> = rows
                    .iter()
                    .map(|r| (r.line, r.email.clone(), r.key.clone()))
                    .collect();
                let inserted_keys = self.insert_returning_keys(rows).await?;
                let inserted = inserted_keys.len() as u64;
                if inserted < keys.len() as u64 {
                    let done: HashSet<String> = inserted_keys.into_iter().collect();
                    for (line, email, key) in keys.into_iter().filter(|k| !done.contains(&k.2)) {
                        // Telling the two apart costs a query; only the first few are shown.
                        let kind = if conflicts.len() < 50 && self.inserted_by_us(&key).await? {
                            ConflictKind::InFile(None)
                        } else {
                            ConflictKind::Existing
                        };
                        conflicts.push(Conflict { line, email, kind });
                    }
                    conflicts.sort_by_key(|c| c.line);
                }
                Ok(BatchOutcome {
                    inserted,
                    conflicts,
                    ..Default::default()
                })
            }
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self.tx {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        match self.tx {
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// How many of the (distinct) emails of `rows` the owner has right now.
    async fn count_existing(&mut self, rows: &[NewClient]) -> Result<u64> {
        let n: i64 = match &mut self.tx {
            Tx::Sqlite(tx) => {
                let params = vec!["?"; rows.len()].join(",");
                let sql = format!(
                    "SELECT COUNT(*) FROM clients WHERE owner_id = ? AND email_key IN ({params})"
                );
                let mut q = sqlx::query_scalar(&sql).bind(self.owner_id);
                for r in rows {
                    q = q.bind(r.key.as_str());
                }
                q.fetch_one(&mut **tx).await?
            }
            Tx::Postgres(tx) => {
                let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM clients WHERE owner_id = $1 AND email_key = ANY($2::text[])",
                )
                .bind(self.owner_id)
                .bind(keys)
                .fetch_one(&mut **tx)
                .await?
            }
        };
        Ok(n as u64)
    }

    /// True when the owner's client with this key was inserted by this import.
    async fn inserted_by_us(&mut self, key: &str) -> Result<bool> {
        let sql = "SELECT id FROM clients WHERE owner_id = $1 AND email_key = $2";
        let id: Option<i64> = match &mut self.tx {
            Tx::Sqlite(tx) => {
                sqlx::query_scalar(sql)
                    .bind(self.owner_id)
                    .bind(key)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            Tx::Postgres(tx) => {
                sqlx::query_scalar(sql)
                    .bind(self.owner_id)
                    .bind(key)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        Ok(id.is_some_and(|id| id > self.max_id_before))
    }

    /// The multi-row statement; returns the number of rows inserted or updated.
    async fn insert(&mut self, rows: Vec<NewClient>, upsert: Upsert) -> Result<u64> {
        let done = match &mut self.tx {
            Tx::Sqlite(tx) => {
                let sql = sqlite_insert_sql(
                    rows.len(),
                    self.owner_id,
                    &self.created_at,
                    upsert,
                    false,
                    &mut self.sqlite_full_batch_sql,
                );
                let mut q = sqlx::query(&sql);
                for r in rows {
                    q = q
                        .bind(r.email)
                        .bind(r.key)
                        .bind(r.full_name)
                        .bind(r.comment);
                }
                q.execute(&mut **tx).await?.rows_affected()
            }
            Tx::Postgres(tx) => {
                let sql = pg_insert_sql(upsert, false);
                let [e, k, f, c] = columns(rows);
                sqlx::query(&sql)
                    .bind(self.owner_id)
                    .bind(self.created_at)
                    .bind(e)
                    .bind(k)
                    .bind(f)
                    .bind(c)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        };
        Ok(done)
    }

    /// Inserts, skipping conflicts; returns the keys that went in.
    async fn insert_returning_keys(&mut self, rows: Vec<NewClient>) -> Result<Vec<String>> {
        let keys = match &mut self.tx {
            Tx::Sqlite(tx) => {
                let sql = sqlite_insert_sql(
                    rows.len(),
                    self.owner_id,
                    &self.created_at,
                    Upsert::Nothing,
                    true,
                    &mut None,
                );
                let mut q = sqlx::query_scalar(&sql);
                for r in rows {
                    q = q
                        .bind(r.email)
                        .bind(r.key)
                        .bind(r.full_name)
                        .bind(r.comment);
                }
                q.fetch_all(&mut **tx).await?
            }
            Tx::Postgres(tx) => {
                let sql = pg_insert_sql(Upsert::Nothing, true);
                let [e, k, f, c] = columns(rows);
                sqlx::query_scalar(&sql)
                    .bind(self.owner_id)
                    .bind(self.created_at)
                    .bind(e)
                    .bind(k)
                    .bind(f)
                    .bind(c)
                    .fetch_all(&mut **tx)
                    .await?
            }
        };
        Ok(keys)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upsert {
    Nothing,
    Update,
}

const INSERT_INTO: &str =
    "INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at)";

fn on_conflict_sql(upsert: Upsert, returning: bool) -> String {
    let action = match upsert {
        Upsert::Nothing => "DO NOTHING",
        Upsert::Update => {
            "DO UPDATE SET email = excluded.email, full_name = excluded.full_name, \
             comment = excluded.comment"
        }
    };
    let ret = if returning {
        " RETURNING email_key"
    } else {
        ""
    };
    format!(" ON CONFLICT (owner_id, email_key) {action}{ret}")
}

/// `VALUES (?,?,?,?), ...` with the owner and the creation time written into the statement
/// (an integer and a timestamp we format ourselves, in the text sqlx would bind). Anonymous
/// `?` only: SQLite looks named or numbered parameters up by a linear scan, which makes
/// binding a statement with thousands of them quadratic.
fn sqlite_insert_sql(
    n: usize,
    owner_id: i64,
    created_at: &DateTime<Utc>,
    upsert: Upsert,
    returning: bool,
    cache: &mut Option<String>,
) -> String {
    let cacheable = n == BATCH && upsert == Upsert::Nothing && !returning;
    if cacheable && let Some(sql) = cache {
        return sql.clone();
    }
    let created = created_at.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let mut sql = String::with_capacity(INSERT_INTO.len() + n * 60 + 200);
    sql.push_str(INSERT_INTO);
    sql.push_str(" VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("({owner_id},?,?,?,?,'{created}')"));
    }
    sql.push_str(&on_conflict_sql(upsert, returning));
    if cacheable {
        *cache = Some(sql.clone());
    }
    sql
}

fn pg_insert_sql(upsert: Upsert, returning: bool) -> String {
    format!(
        "{INSERT_INTO} SELECT $1, t.e, t.k, t.f, t.c, $2 \
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS t(e, k, f, c, n) \
         ORDER BY t.n{}",
        on_conflict_sql(upsert, returning)
    )
}

fn columns(rows: Vec<NewClient>) -> [Vec<String>; 4] {
    let mut out: [Vec<String>; 4] = std::array::from_fn(|_| Vec::with_capacity(rows.len()));
    for r in rows {
        out[0].push(r.email);
        out[1].push(r.key);
        out[2].push(r.full_name);
        out[3].push(r.comment);
    }
    out
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

/// One exported client: the import's columns, so export -> import round-trips.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ExportRow {
    pub email: String,
    pub full_name: String,
    pub comment: String,
}

impl Record for ExportRow {
    const HEADERS: &'static [&'static str] = &["email", "full_name", "comment"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.email.clone(),
            self.full_name.clone(),
            self.comment.clone(),
        ]
    }
}

/// Streams the clients in `scope` (oldest first) to `each`, one row at a time; returns the count.
pub async fn export(
    db: &Db,
    scope: Scope,
    mut each: impl FnMut(ExportRow) -> Result<()>,
) -> Result<u64> {
    let sql = "SELECT email, full_name, comment FROM clients \
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

    #[test]
    fn sqlite_statement_has_anonymous_parameters() {
        let t = "2026-01-02T03:04:05.123456Z"
            .parse::<DateTime<Utc>>()
            .unwrap();
        let sql = sqlite_insert_sql(2, 7, &t, Upsert::Nothing, false, &mut None);
        let v = "(7,?,?,?,?,'2026-01-02T03:04:05.123456+00:00')";
        assert!(
            sql.contains(&format!("VALUES {v},{v} ON CONFLICT")),
            "{sql}"
        );
        const { assert!(4 * BATCH <= 32766) };
    }
}
