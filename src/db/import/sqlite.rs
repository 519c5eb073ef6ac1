//! The SQLite import: batches of validated rows go in as multi-row `INSERT ... VALUES
//! (...),(...)`, and the unique index on (owner_id, email_key) decides about duplicates, both
//! against existing clients and inside the file.

use std::collections::HashSet;

use chrono::SecondsFormat;
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{
    BatchOutcome, ClientImport, Columns, Conflict, ConflictKind, INSERT_INTO, MAX_ID_SQL,
    NewClient, OnConflict, Target, Upsert, keep_last, on_conflict_sql, split_first,
};
use crate::error::Result;

/// SQLite page cache for the import connection, in KiB (negative = KiB in PRAGMA terms).
/// Within the 64 MB peak RSS budget of a million-row import (benches/import.sh: 52-55 MiB
/// with 16 MiB of cache; 24 MiB was 8% faster on a file in random order but 59 MiB, and
/// 8 MiB about 25% slower there). A file in email order writes the index near its right edge and
/// needs little cache.
const SQLITE_IMPORT_CACHE_KIB: i64 = 16 * 1024;

/// Rows per INSERT: seven parameters each stay under SQLite's limit of 32,766; a batch of
/// `BATCH` rows goes in as whole statements of this size (one cached text).
const ROWS_PER_STATEMENT: usize = 2500;

/// The import's transaction. Dropping it without `commit` rolls everything back.
pub struct SqliteImport {
    tx: Transaction<'static, Sqlite>,
    target: Target,
    /// The statement for a full batch, built once.
    full_batch_sql: Option<String>,
}

impl SqliteImport {
    pub async fn begin(
        pool: &SqlitePool,
        owner_id: i64,
        mode: OnConflict,
        columns: Columns,
    ) -> Result<Self> {
        // IMMEDIATE: take the write lock now, so no other writer slips in between the
        // counts below and our first insert.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        // Only the page cache of this connection; durability settings stay as they are.
        sqlx::query(&format!("PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}"))
            .execute(&mut *tx)
            .await?;
        let max_id_before: i64 = sqlx::query_scalar(MAX_ID_SQL).fetch_one(&mut *tx).await?;
        Ok(SqliteImport {
            tx,
            target: Target::new(owner_id, mode, columns, max_id_before),
            full_batch_sql: None,
        })
    }
}

impl ClientImport for SqliteImport {
    /// Inserts (or updates, or skips) one batch of rows, in file order.
    async fn write(&mut self, rows: Vec<NewClient>) -> Result<BatchOutcome> {
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let total = rows.len() as u64;
        match self.target.mode {
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

    /// Every batch was settled as it was written.
    async fn finish(&mut self) -> Result<BatchOutcome> {
        Ok(BatchOutcome::default())
    }

    async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

impl SqliteImport {
    /// How many of the (distinct) emails of `rows` the owner has right now.
    async fn count_existing(&mut self, rows: &[NewClient]) -> Result<u64> {
        let params = vec!["?"; rows.len()].join(",");
        let sql =
            format!("SELECT COUNT(*) FROM clients WHERE owner_id = ? AND email_key IN ({params})");
        let mut q = sqlx::query_scalar(&sql).bind(self.target.owner_id);
        for r in rows {
            q = q.bind(r.key.as_str());
        }
        let n: i64 = q.fetch_one(&mut *self.tx).await?;
        Ok(n as u64)
    }

    /// True when the owner's client with this key was inserted by this import.
    async fn inserted_by_us(&mut self, key: &str) -> Result<bool> {
        let sql = "SELECT id FROM clients WHERE owner_id = $1 AND email_key = $2";
        let owner_id = self.target.owner_id;
        let id: Option<i64> = sqlx::query_scalar(sql)
            .bind(owner_id)
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(id.is_some_and(|id| id > self.target.max_id_before))
    }

    /// The multi-row statements; returns the number of rows inserted or updated.
    async fn insert(&mut self, mut rows: Vec<NewClient>, upsert: Upsert) -> Result<u64> {
        let mut done = 0;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(ROWS_PER_STATEMENT));
            let sql = sqlite_insert_sql(
                rows.len(),
                &self.target,
                upsert,
                false,
                &mut self.full_batch_sql,
            );
            let mut q = sqlx::query(&sql);
            for r in rows {
                q = q
                    .bind(r.email)
                    .bind(r.key)
                    .bind(r.full_name)
                    .bind(r.comment)
                    .bind(r.tags)
                    .bind(r.fields)
                    .bind(r.search);
            }
            done += q.execute(&mut *self.tx).await?.rows_affected();
            rows = rest;
        }
        Ok(done)
    }

    /// Inserts, skipping conflicts; returns the keys that went in.
    async fn insert_returning_keys(&mut self, mut rows: Vec<NewClient>) -> Result<Vec<String>> {
        let mut keys = Vec::with_capacity(rows.len());
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(ROWS_PER_STATEMENT));
            let sql = sqlite_insert_sql(rows.len(), &self.target, Upsert::Nothing, true, &mut None);
            let mut q = sqlx::query_scalar(&sql);
            for r in rows {
                q = q
                    .bind(r.email)
                    .bind(r.key)
                    .bind(r.full_name)
                    .bind(r.comment)
                    .bind(r.tags)
                    .bind(r.fields)
                    .bind(r.search);
            }
            keys.extend(q.fetch_all(&mut *self.tx).await?);
            rows = rest;
        }
        Ok(keys)
    }
}

/// `VALUES (?,?,?,?,?,?), ...` with the owner and the creation time written into the statement
/// (an integer and a timestamp we format ourselves, in the text sqlx would bind). Anonymous
/// `?` only: SQLite looks named or numbered parameters up by a linear scan, which makes
/// binding a statement with thousands of them quadratic.
fn sqlite_insert_sql(
    n: usize,
    target: &Target,
    upsert: Upsert,
    returning: bool,
    cache: &mut Option<String>,
) -> String {
    let cacheable = n == ROWS_PER_STATEMENT && upsert == Upsert::Nothing && !returning;
    if cacheable && let Some(sql) = cache {
        return sql.clone();
    }
    let owner_id = target.owner_id;
    let created = target
        .created_at
        .to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let mut sql = String::with_capacity(INSERT_INTO.len() + n * 60 + 200);
    sql.push_str(INSERT_INTO);
    sql.push_str(" VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("({owner_id},?,?,?,?,?,?,'{created}',?)"));
    }
    sql.push_str(&on_conflict_sql(upsert, returning, target.columns));
    if cacheable {
        *cache = Some(sql.clone());
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::super::BATCH;
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn sqlite_statement_has_anonymous_parameters() {
        let mut target = Target::new(7, OnConflict::Skip, Columns::default(), 0);
        target.created_at = "2026-01-02T03:04:05.123456Z"
            .parse::<DateTime<Utc>>()
            .unwrap();
        let sql = sqlite_insert_sql(2, &target, Upsert::Nothing, false, &mut None);
        let v = "(7,?,?,?,?,?,?,'2026-01-02T03:04:05.123456+00:00',?)";
        assert!(
            sql.contains(&format!("VALUES {v},{v} ON CONFLICT")),
            "{sql}"
        );
        const { assert!(7 * ROWS_PER_STATEMENT <= 32766) };
        const { assert!(BATCH.is_multiple_of(ROWS_PER_STATEMENT)) };
    }
}
