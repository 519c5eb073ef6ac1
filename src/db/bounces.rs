//! Recording a bounce or complaint against the letter it is about: an attempt row
//! (`bounced` / `complained`, the stats counters follow by trigger), the delivery marked
//! failed for a hard bounce, and the address suppressed for the owner when the report says
//! so. `bounce_reports` makes a second import a no-op. Reports are written in batches, one
//! transaction each (a commit per report would cap PostgreSQL at its fsync rate): a report is
//! never half-applied, since any database error rolls back the batch and ends the run.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::Db;
use crate::bounce::report::Kind;
use crate::error::Result;
use crate::on_pool;

/// The letter's recipient as the database knows it, when that letter went out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Sent {
    pub mailing_id: i64,
    pub client_id: i64,
    pub owner_id: i64,
    pub email_key: String,
}

/// Of these (mailing, client) pairs, the letters that were sent (or failed after they were
/// sent), in one query: a report about a letter that never left is about no letter of ours.
pub async fn sent(db: &Db, pairs: &[(i64, i64)]) -> Result<HashMap<(i64, i64), Sent>> {
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    let cols = "d.mailing_id, d.client_id, m.owner_id, c.email_key FROM deliveries d \
                JOIN mailings m ON m.id = d.mailing_id \
                JOIN clients c ON c.id = d.client_id AND c.owner_id = m.owner_id";
    let ok = "d.state IN ('sent', 'failed')";
    let rows: Vec<Sent> = match db {
        Db::Sqlite(p) => {
            let json = serde_json::to_string(pairs)?;
            sqlx::query_as(&format!(
                "SELECT {cols} JOIN json_each($1) j \
                 ON d.mailing_id = j.value ->> 0 AND d.client_id = j.value ->> 1 WHERE {ok}"
            ))
            .bind(json)
            .fetch_all(p)
            .await?
        }
        Db::Postgres(p) => {
            sqlx::query_as(&format!(
                "SELECT {cols} JOIN unnest($1::bigint[], $2::bigint[]) AS j(m, c) \
                 ON d.mailing_id = j.m AND d.client_id = j.c WHERE {ok}"
            ))
            .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
            .fetch_all(p)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|s| ((s.mailing_id, s.client_id), s))
        .collect())
}

/// One report about one letter.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub digest: &'a str,
    pub recipient: &'a Sent,
    pub kind: Kind,
    pub text: &'a str,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Recorded {
        suppressed: bool,
    },
    /// This report was imported before: nothing changed.
    Duplicate,
}

/// Soft bounces of one address within this window that suppress it.
pub const SOFT_LIMIT: i64 = 3;
pub const SOFT_WINDOW_DAYS: i64 = 30;

/// Records reports in one transaction, each wholly or (on a database error, which ends the
/// run) not at all. A report seen before, in an earlier run or earlier in this batch,
/// changes nothing.
pub async fn apply_all(db: &Db, events: &[Event<'_>]) -> Result<Vec<Applied>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let mut out = Vec::with_capacity(events.len());
        let mut attempts = Vec::new();
        for e in events {
            let status = if e.kind == Kind::Complaint {
                "complained"
            } else {
                "bounced"
            };
            let owner = e.recipient.owner_id;
            let key = e.recipient.email_key.as_str();
            let fresh = sqlx::query(
                "INSERT INTO bounce_reports (digest, owner_id, email_key, mailing_id, client_id, kind, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest) DO NOTHING",
            )
            .bind(e.digest)
            .bind(owner)
            .bind(key)
            .bind(e.recipient.mailing_id)
            .bind(e.recipient.client_id)
            .bind(e.kind.as_str())
            .bind(e.at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                out.push(Applied::Duplicate);
                continue;
            }
            attempts.push((e.recipient.mailing_id, e.recipient.client_id, e.at, status, e.text));
            let reason = match e.kind {
                Kind::Hard => {
                    sqlx::query(
                        "UPDATE deliveries SET state = 'failed', last_reply = $3, updated_at = $4 \
                         WHERE mailing_id = $1 AND client_id = $2 AND state = 'sent'",
                    )
                    .bind(e.recipient.mailing_id)
                    .bind(e.recipient.client_id)
                    .bind(e.text)
                    .bind(e.at)
                    .execute(&mut *tx)
                    .await?;
                    Some("bounced")
                }
                Kind::Soft => {
                    let since = e.at - Duration::days(SOFT_WINDOW_DAYS);
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM bounce_reports \
                         WHERE owner_id = $1 AND email_key = $2 AND kind = 'soft' AND received_at >= $3",
                    )
                    .bind(owner)
                    .bind(key)
                    .bind(since)
                    .fetch_one(&mut *tx)
                    .await?;
                    (n >= SOFT_LIMIT).then_some("bounced")
                }
                Kind::Complaint => Some("complained"),
            };
            let mut suppressed = false;
            if let Some(reason) = reason {
                suppressed = sqlx::query(
                    "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (owner_id, email_key) DO NOTHING",
                )
                .bind(owner)
                .bind(key)
                .bind(reason)
                .bind(e.at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
            }
            out.push(Applied::Recorded { suppressed });
        }
        // All the batch's attempts in one statement: PostgreSQL's stats trigger runs per
        // statement (migration 0006), once for the batch instead of once per report.
        (&mut *tx).insert_attempts(&attempts).await?;
        tx.commit().await?;
        Ok::<_, crate::error::Error>(out)
    })
}

/// (mailing, client, time, status, server response) of a report.
type AttemptRow<'a> = (i64, i64, DateTime<Utc>, &'static str, &'a str);

/// One insert for a batch of attempt rows (a JSON array on SQLite, arrays on PostgreSQL).
trait InsertAttempts {
    async fn insert_attempts(self, rows: &[AttemptRow<'_>]) -> sqlx::Result<()>;
}

impl InsertAttempts for &mut sqlx::SqliteConnection {
    async fn insert_attempts(self, rows: &[AttemptRow<'_>]) -> sqlx::Result<()> {
        use super::attempts::sqlite_time;
        if rows.is_empty() {
            return Ok(());
        }
        let json: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!([r.0, r.1, sqlite_time(&r.2), r.3, r.4]))
            .collect();
        sqlx::query(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
             FROM json_each($1) ORDER BY key",
        )
        .bind(serde_json::Value::Array(json).to_string())
        .execute(self)
        .await?;
        Ok(())
    }
}

impl InsertAttempts for &mut sqlx::PgConnection {
    async fn insert_attempts(self, rows: &[AttemptRow<'_>]) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[])",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
        .execute(self)
        .await?;
        Ok(())
    }
}
