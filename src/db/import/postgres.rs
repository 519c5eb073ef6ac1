//! The PostgreSQL import: `COPY ... FROM STDIN` (multi-row heap inserts, the fast path
//! `psql \copy` uses). While no batch has conflicted, each batch is copied straight into
//! `clients` inside a savepoint; a unique violation rolls that batch back, and from then on
//! every batch is copied into a temporary table (`import_rows`, with the line numbers), which
//! `finish` resolves in one `INSERT ... SELECT ... ON CONFLICT` in file order. So a file of new
//! clients costs COPYs only, and a re-import COPYs into the temporary table plus one pass over
//! the unique index.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::{
    BatchOutcome, ClientImport, Columns, Conflict, ConflictKind, INSERT_INTO, LISTED_CONFLICTS,
    MAX_ID_SQL, NewClient, OnConflict, Target, Upsert, on_conflict_sql,
};
use crate::error::Result;

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

/// The import's transaction. Dropping it without `commit` rolls everything back.
pub struct PgImport {
    tx: Transaction<'static, Postgres>,
    target: Target,
    stage: PgStage,
}

impl PgImport {
    pub async fn begin(
        pool: &PgPool,
        owner_id: i64,
        mode: OnConflict,
        columns: Columns,
    ) -> Result<Self> {
        let mut tx = pool.begin().await?;
        let max_id_before: i64 = sqlx::query_scalar(MAX_ID_SQL).fetch_one(&mut *tx).await?;
        Ok(PgImport {
            tx,
            target: Target::new(owner_id, mode, columns, max_id_before),
            stage: PgStage::default(),
        })
    }
}

impl ClientImport for PgImport {
    /// Copies the batch; what it did is counted by `finish`.
    async fn write(&mut self, rows: Vec<NewClient>) -> Result<BatchOutcome> {
        if !rows.is_empty() {
            self.copy(rows).await?;
        }
        Ok(BatchOutcome::default())
    }

    async fn finish(&mut self) -> Result<BatchOutcome> {
        self.settle().await
    }

    async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

/// The temporary table of the staged rows; dropped with the transaction (commit or rollback).
const CREATE_STAGE: &str = "CREATE TEMPORARY TABLE import_rows \
     (line BIGINT NOT NULL, email TEXT NOT NULL, email_key TEXT NOT NULL, \
      full_name TEXT NOT NULL, comment TEXT NOT NULL, tags TEXT NOT NULL, fields TEXT NOT NULL, \
      search_key TEXT NOT NULL) ON COMMIT DROP";
const COPY_STAGE: &str = "COPY import_rows (line, email, email_key, full_name, comment, tags, fields, \
     search_key) \
     FROM STDIN (FORMAT binary)";
const COPY_DIRECT: &str = "COPY clients (owner_id, email, email_key, full_name, comment, tags, fields, \
     created_at, search_key) FROM STDIN (FORMAT binary)";
/// The staged rows' columns, in `INSERT_INTO`'s order after the owner (then `created_at`,
/// bound, and `search_key`).
const STAGED: &str = "email, email_key, full_name, comment, tags, fields";
/// PostgreSQL's unique_violation.
const UNIQUE_VIOLATION: &str = "23505";

impl PgImport {
    /// Copies one batch: straight into `clients` while nothing has conflicted, else (and from
    /// then on) into `import_rows`.
    async fn copy(&mut self, rows: Vec<NewClient>) -> Result<()> {
        let owner = self.target.owner_id;
        let created = pg_timestamp(&self.target.created_at);
        let mut buf = std::mem::take(&mut self.stage.buf);
        if !self.stage.staging {
            buf.clear();
            buf.extend_from_slice(BINARY_HEADER);
            for r in &rows {
                buf.extend_from_slice(&9i16.to_be_bytes());
                binary_field(&mut buf, &owner.to_be_bytes());
                for text in [
                    &r.email,
                    &r.key,
                    &r.full_name,
                    &r.comment,
                    &r.tags,
                    &r.fields,
                ] {
                    binary_field(&mut buf, text.as_bytes());
                }
                binary_field(&mut buf, &created.to_be_bytes());
                binary_field(&mut buf, r.search.as_bytes());
            }
            buf.extend_from_slice(&(-1i16).to_be_bytes());
            let tx = &mut self.tx;
            sqlx::query("SAVEPOINT import_batch")
                .execute(&mut **tx)
                .await?;
            let copied = copy_in(tx, COPY_DIRECT, &buf).await;
            match copied {
                Ok(n) => {
                    sqlx::query("RELEASE SAVEPOINT import_batch")
                        .execute(&mut **tx)
                        .await?;
                    self.stage.direct += n;
                    self.stage.buf = buf;
                    return Ok(());
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                    // An existing client or a duplicate inside the file: undo this batch and
                    // let `finish` sort it and the rest out.
                    sqlx::query("ROLLBACK TO SAVEPOINT import_batch")
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query(CREATE_STAGE).execute(&mut **tx).await?;
                    self.stage.staging = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        buf.clear();
        buf.extend_from_slice(BINARY_HEADER);
        for r in &rows {
            buf.extend_from_slice(&8i16.to_be_bytes());
            binary_field(&mut buf, &(r.line as i64).to_be_bytes());
            for text in [
                &r.email,
                &r.key,
                &r.full_name,
                &r.comment,
                &r.tags,
                &r.fields,
                &r.search,
            ] {
                binary_field(&mut buf, text.as_bytes());
            }
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        let n = copy_in(&mut self.tx, COPY_STAGE, &buf).await?;
        self.stage.staged += n;
        self.stage.buf = buf;
        Ok(())
    }

    /// Inserts the staged rows in file order under the conflict mode; counts everything.
    async fn settle(&mut self) -> Result<BatchOutcome> {
        self.stage.buf = Vec::new();
        let mut out = BatchOutcome {
            inserted: self.stage.direct,
            ..Default::default()
        };
        let staged = self.stage.staged;
        if !self.stage.staging {
            return Ok(out);
        }
        let (owner_id, created_at, max_id_before, mode, columns) = (
            self.target.owner_id,
            self.target.created_at,
            self.target.max_id_before,
            self.target.mode,
            self.target.columns,
        );
        let tx = &mut self.tx;
        // Sorting a million staged rows in memory rather than in temporary files (this
        // transaction only; server memory, not ours).
        sqlx::query("SET LOCAL work_mem = '64MB'")
            .execute(&mut **tx)
            .await?;
        match mode {
            OnConflict::Skip => {
                // In file order, so the first occurrence of a key is the one inserted.
                let sql = format!(
                    "{INSERT_INTO} SELECT $1, {STAGED}, $2, search_key FROM import_rows ORDER BY line{}",
                    on_conflict_sql(Upsert::Nothing, false, columns)
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
                    "WITH done AS ({INSERT_INTO} SELECT $1, {STAGED}, $2, search_key \
                     FROM (SELECT DISTINCT ON (email_key COLLATE \"C\") * FROM import_rows \
                           ORDER BY email_key COLLATE \"C\", line DESC) last \
                     ORDER BY line{} RETURNING (xmax = 0) AS fresh) \
                     SELECT COUNT(*) FILTER (WHERE fresh) FROM done",
                    on_conflict_sql(Upsert::Update, false, columns)
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
                    "{INSERT_INTO} SELECT $1, {STAGED}, $2, search_key FROM import_rows ORDER BY line{}",
                    on_conflict_sql(Upsert::Nothing, false, columns)
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
