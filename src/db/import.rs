//! Bulk import and streamed export of clients (`clients import` / `clients export`).
//!
//! The import runs in ONE transaction. Nothing is visible to others before `commit`; a killed
//! process leaves the database as it was.
//!
//! SQLite: batches of validated rows go in as multi-row `INSERT ... VALUES (...),(...)`, and the
//! unique index on (owner_id, email_key) decides about duplicates, both against existing clients
//! and inside the file.
//!
//! PostgreSQL: `COPY ... FROM STDIN` (multi-row heap inserts, the fast path `psql \copy` uses).
//! While no batch has conflicted, each batch is copied straight into `clients` inside a savepoint;
//! a unique violation rolls that batch back, and from then on every batch is copied into a
//! temporary table (`import_rows`, with the line numbers), which `finish` resolves in one
//! `INSERT ... SELECT ... ON CONFLICT` in file order. So a file of new clients costs COPYs only,
//! and a re-import COPYs into the temporary table plus one pass over the unique index.

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

/// Where the PostgreSQL import puts the next batch.
#[derive(Debug, Default)]
struct PgStage {
    /// Set once a batch conflicted: the rest goes into the temporary table `import_rows`.
    staging: bool,
    /// Rows copied straight into `clients` (all new, all distinct).
    direct: u64,
    /// Rows copied into `import_rows`, resolved by `finish`.
    staged: u64,
    /// Reused COPY buffer.
    buf: Vec<u8>,
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
    pg: PgStage,
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
            pg: PgStage::default(),
        })
    }

    /// Inserts (or updates, or skips) one batch of rows, in file order.
    pub async fn write(&mut self, rows: Vec<NewClient>) -> Result<BatchOutcome> {
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        if let Tx::Postgres(_) = self.tx {
            self.pg_copy(rows).await?;
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

    /// After the last `write`: settles what the batches left pending (PostgreSQL: the staged
    /// rows, and the counts of the rows copied straight in). Returns what they did.
    pub async fn finish(&mut self) -> Result<BatchOutcome> {
        match self.tx {
            Tx::Sqlite(_) => Ok(BatchOutcome::default()),
            Tx::Postgres(_) => self.pg_finish().await,
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

    fn sqlite_tx(&mut self) -> &mut Transaction<'static, Sqlite> {
        match &mut self.tx {
            Tx::Sqlite(tx) => tx,
            Tx::Postgres(_) => unreachable!("SQLite batch statement on PostgreSQL"),
        }
    }

    /// How many of the (distinct) emails of `rows` the owner has right now.
    async fn count_existing(&mut self, rows: &[NewClient]) -> Result<u64> {
        let params = vec!["?"; rows.len()].join(",");
        let sql =
            format!("SELECT COUNT(*) FROM clients WHERE owner_id = ? AND email_key IN ({params})");
        let mut q = sqlx::query_scalar(&sql).bind(self.owner_id);
        for r in rows {
            q = q.bind(r.key.as_str());
        }
        let n: i64 = q.fetch_one(&mut **self.sqlite_tx()).await?;
        Ok(n as u64)
    }

    /// True when the owner's client with this key was inserted by this import.
    async fn inserted_by_us(&mut self, key: &str) -> Result<bool> {
        let sql = "SELECT id FROM clients WHERE owner_id = $1 AND email_key = $2";
        let owner_id = self.owner_id;
        let id: Option<i64> = sqlx::query_scalar(sql)
            .bind(owner_id)
            .bind(key)
            .fetch_optional(&mut **self.sqlite_tx())
            .await?;
        Ok(id.is_some_and(|id| id > self.max_id_before))
    }

    /// The multi-row statement; returns the number of rows inserted or updated.
    async fn insert(&mut self, rows: Vec<NewClient>, upsert: Upsert) -> Result<u64> {
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
        Ok(q.execute(&mut **self.sqlite_tx()).await?.rows_affected())
    }

    /// Inserts, skipping conflicts; returns the keys that went in.
    async fn insert_returning_keys(&mut self, rows: Vec<NewClient>) -> Result<Vec<String>> {
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
        Ok(q.fetch_all(&mut **self.sqlite_tx()).await?)
    }
}

/// The temporary table of the staged rows; dropped with the transaction (commit or rollback).
const CREATE_STAGE: &str = "CREATE TEMPORARY TABLE import_rows \
     (line BIGINT NOT NULL, email TEXT NOT NULL, email_key TEXT NOT NULL, \
      full_name TEXT NOT NULL, comment TEXT NOT NULL) ON COMMIT DROP";
const COPY_STAGE: &str =
    "COPY import_rows (line, email, email_key, full_name, comment) FROM STDIN (FORMAT binary)";
const COPY_DIRECT: &str = "COPY clients (owner_id, email, email_key, full_name, comment, created_at) \
     FROM STDIN (FORMAT binary)";
/// PostgreSQL's unique_violation.
const UNIQUE_VIOLATION: &str = "23505";

impl Importer {
    fn pg_tx(&mut self) -> &mut Transaction<'static, Postgres> {
        match &mut self.tx {
            Tx::Postgres(tx) => tx,
            Tx::Sqlite(_) => unreachable!("PostgreSQL import on SQLite"),
        }
    }

    /// Copies one batch: straight into `clients` while nothing has conflicted, else (and from
    /// then on) into `import_rows`.
    async fn pg_copy(&mut self, rows: Vec<NewClient>) -> Result<()> {
        let owner = self.owner_id;
        let created = pg_timestamp(&self.created_at);
        let mut buf = std::mem::take(&mut self.pg.buf);
        if !self.pg.staging {
            buf.clear();
            buf.extend_from_slice(BINARY_HEADER);
            for r in &rows {
                buf.extend_from_slice(&6i16.to_be_bytes());
                binary_field(&mut buf, &owner.to_be_bytes());
                for text in [&r.email, &r.key, &r.full_name, &r.comment] {
                    binary_field(&mut buf, text.as_bytes());
                }
                binary_field(&mut buf, &created.to_be_bytes());
            }
            buf.extend_from_slice(&(-1i16).to_be_bytes());
            let tx = self.pg_tx();
            sqlx::query("SAVEPOINT import_batch")
                .execute(&mut **tx)
                .await?;
            let copied = copy_in(tx, COPY_DIRECT, &buf).await;
            match copied {
                Ok(n) => {
                    sqlx::query("RELEASE SAVEPOINT import_batch")
                        .execute(&mut **tx)
                        .await?;
                    self.pg.direct += n;
                    self.pg.buf = buf;
                    return Ok(());
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                    // An existing client or a duplicate inside the file: undo this batch and
                    // let `finish` sort it and the rest out.
                    sqlx::query("ROLLBACK TO SAVEPOINT import_batch")
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query(CREATE_STAGE).execute(&mut **tx).await?;
                    self.pg.staging = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        buf.clear();
        buf.extend_from_slice(BINARY_HEADER);
        for r in &rows {
            buf.extend_from_slice(&5i16.to_be_bytes());
            binary_field(&mut buf, &(r.line as i64).to_be_bytes());
            for text in [&r.email, &r.key, &r.full_name, &r.comment] {
                binary_field(&mut buf, text.as_bytes());
            }
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        let n = copy_in(self.pg_tx(), COPY_STAGE, &buf).await?;
        self.pg.staged += n;
        self.pg.buf = buf;
        Ok(())
    }

    /// Inserts the staged rows in file order under the conflict mode; counts everything.
    async fn pg_finish(&mut self) -> Result<BatchOutcome> {
        self.pg.buf = Vec::new();
        let mut out = BatchOutcome {
            inserted: self.pg.direct,
            ..Default::default()
        };
        let staged = self.pg.staged;
        if !self.pg.staging {
            return Ok(out);
        }
        let (owner_id, created_at, max_id_before, mode) = (
            self.owner_id,
            self.created_at,
            self.max_id_before,
            self.mode,
        );
        let tx = self.pg_tx();
        // Sorting a million staged rows in memory rather than in temporary files (this
        // transaction only; server memory, not ours).
        sqlx::query("SET LOCAL work_mem = '64MB'")
            .execute(&mut **tx)
            .await?;
        match mode {
            OnConflict::Skip => {
                // In file order, so the first occurrence of a key is the one inserted.
                let sql = format!(
                    "{INSERT_INTO} SELECT $1, email, email_key, full_name, comment, $2 \
                     FROM import_rows ORDER BY line{}",
                    on_conflict_sql(Upsert::Nothing, false)
                );
                let inserted = sqlx::query(&sql)
                    .bind(owner_id)
                    .bind(created_at)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                out.inserted += inserted;
                out.skipped = staged - inserted;
            }
            OnConflict::Update => {
                // One statement must not touch a row twice: the last occurrence of each key,
                // which is what applying the rows in order gives. `xmax = 0`: a new row.
                let sql = format!(
                    "WITH done AS ({INSERT_INTO} SELECT $1, email, email_key, full_name, comment, $2 \
                     FROM (SELECT DISTINCT ON (email_key COLLATE \"C\") * FROM import_rows \
                           ORDER BY email_key COLLATE \"C\", line DESC) last \
                     ORDER BY line{} RETURNING (xmax = 0) AS fresh) \
                     SELECT COUNT(*) FILTER (WHERE fresh) FROM done",
                    on_conflict_sql(Upsert::Update, false)
                );
                let inserted: i64 = sqlx::query_scalar(&sql)
                    .bind(owner_id)
                    .bind(created_at)
                    .fetch_one(&mut **tx)
                    .await?;
                out.inserted += inserted as u64;
                out.updated = staged - inserted as u64;
            }
            OnConflict::Error => {
                sqlx::query("SAVEPOINT import_rest")
                    .execute(&mut **tx)
                    .await?;
                let sql = format!(
                    "{INSERT_INTO} SELECT $1, email, email_key, full_name, comment, $2 \
                     FROM import_rows ORDER BY line{}",
                    on_conflict_sql(Upsert::Nothing, false)
                );
                let inserted = sqlx::query(&sql)
                    .bind(owner_id)
                    .bind(created_at)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                if inserted == staged {
                    sqlx::query("RELEASE SAVEPOINT import_rest")
                        .execute(&mut **tx)
                        .await?;
                    out.inserted += inserted;
                    return Ok(out);
                }
                // The import fails: back to the clients as they were before the staged rows,
                // and name the conflicting lines.
                sqlx::query("ROLLBACK TO SAVEPOINT import_rest")
                    .execute(&mut **tx)
                    .await?;
                let sql = "SELECT line, email, first_line, client_id, COUNT(*) OVER () \
                     FROM (SELECT r.line, r.email, \
                                  MIN(r.line) OVER (PARTITION BY r.email_key COLLATE \"C\") AS first_line, \
                                  (SELECT c.id FROM clients c \
                                   WHERE c.owner_id = $1 AND c.email_key = r.email_key) AS client_id \
                           FROM import_rows r) t \
                     WHERE first_line < line OR client_id IS NOT NULL \
                     ORDER BY line LIMIT $2";
                let found: Vec<(i64, String, i64, Option<i64>, i64)> = sqlx::query_as(sql)
                    .bind(owner_id)
                    .bind(LISTED_CONFLICTS as i64)
                    .fetch_all(&mut **tx)
                    .await?;
                let total = found.first().map_or(0, |f| f.4 as u64);
                out.inserted = 0;
                out.conflicts = found
                    .into_iter()
                    .map(|(line, email, first_line, client_id, _)| {
                        let kind = if first_line < line {
                            ConflictKind::InFile(Some(first_line as u64))
                        } else if client_id.is_some_and(|id| id > max_id_before) {
                            // Copied straight in by an earlier batch of this import.
                            ConflictKind::InFile(None)
                        } else {
                            ConflictKind::Existing
                        };
                        Conflict {
                            line: line as u64,
                            email,
                            kind,
                        }
                    })
                    .collect();
                out.more_conflicts = total - out.conflicts.len() as u64;
            }
        }
        Ok(out)
    }
}

/// One COPY statement with `data` (binary format rows) as its input; returns the rows copied.
async fn copy_in(
    tx: &mut Transaction<'static, Postgres>,
    statement: &str,
    data: &[u8],
) -> std::result::Result<u64, sqlx::Error> {
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await
}

/// COPY's binary format: signature, flags, header extension length.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// One field of a binary COPY row: its length, then its bytes (a text in UTF-8, the client
/// and server encoding of our connections).
fn binary_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// A timestamptz on the wire: microseconds since 2000-01-01 00:00:00 UTC.
fn pg_timestamp(t: &DateTime<Utc>) -> i64 {
    const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800 * 1_000_000;
    t.timestamp_micros() - PG_EPOCH_UNIX_MICROS
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
