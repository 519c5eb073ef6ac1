//! The queue of letters from the installation itself (confirmation, password reset, "you
//! already have an account"). A row is written before the first try and deleted once the
//! server took the letter; a worker leases a row while it tries, so overlapping flushes
//! (send-due on two hosts, serve, a reset) never send the same row at once.

use chrono::{DateTime, Duration, Utc};

use super::{Db, now};
use crate::error::Result;
use crate::on_pool;

/// What a queued letter says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirm,
    Reset,
    Already,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Confirm => "confirm",
            Kind::Reset => "reset",
            Kind::Already => "already",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "confirm" => Kind::Confirm,
            "reset" => Kind::Reset,
            _ => Kind::Already,
        }
    }
}

/// A claimed letter, with the address it goes to.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub kind: Kind,
    pub account_id: i64,
    pub email: String,
    pub password_hash: Option<String>,
    pub tries: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    kind: String,
    account_id: i64,
    password_hash: Option<String>,
    tries: i64,
}

pub async fn enqueue(
    db: &Db,
    kind: Kind,
    account_id: i64,
    password_hash: Option<&str>,
) -> Result<()> {
    let at = now();
    let sql = "INSERT INTO system_letters (kind, account_id, password_hash, created_at, next_try_at) \
               VALUES ($1, $2, $3, $4, $4)";
    on_pool!(db, p => sqlx::query(sql)
        .bind(kind.as_str()).bind(account_id).bind(password_hash).bind(at)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Leases the oldest due letter for `lease`, or None when nothing is due. The lease is
/// checked again in the UPDATE itself, so of two concurrent claims only one gets a row.
pub async fn claim(db: &Db, lease: Duration) -> Result<Option<Queued>> {
    let at = now();
    let sql = "UPDATE system_letters SET lease_until = $1, tries = tries + 1 \
               WHERE id = (SELECT id FROM system_letters \
                           WHERE next_try_at <= $2 AND (lease_until IS NULL OR lease_until <= $2) \
                           ORDER BY id LIMIT 1) \
               AND (lease_until IS NULL OR lease_until <= $2) \
               RETURNING id, kind, account_id, password_hash, tries";
    let row = on_pool!(db, p => sqlx::query_as::<_, Row>(sql)
        .bind(at + lease).bind(at).fetch_optional(p).await)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let email_sql = "SELECT email FROM accounts WHERE id = $1";
    let email: Option<String> = on_pool!(db, p => sqlx::query_scalar(email_sql)
        .bind(row.account_id).fetch_optional(p).await)?;
    let Some(email) = email else {
        // The account is gone (the row goes with it by cascade): nothing to send.
        done(db, row.id).await?;
        return Ok(None);
    };
    Ok(Some(Queued {
        id: row.id,
        kind: Kind::parse(&row.kind),
        account_id: row.account_id,
        email,
        password_hash: row.password_hash,
        tries: row.tries,
    }))
}

/// The server took the letter (or refused it for good): forget it.
pub async fn done(db: &Db, id: i64) -> Result<()> {
    on_pool!(db, p => sqlx::query("DELETE FROM system_letters WHERE id = $1")
        .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A temporary failure: try again at `next`, keeping the server's words.
pub async fn retry_at(db: &Db, id: i64, next: DateTime<Utc>, error: &str) -> Result<()> {
    let sql = "UPDATE system_letters SET lease_until = NULL, next_try_at = $1, last_error = $2 WHERE id = $3";
    on_pool!(db, p => sqlx::query(sql)
        .bind(next).bind(error).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Drops letters queued before `cutoff` (their purpose has lapsed); returns how many.
pub async fn drop_older_than(db: &Db, cutoff: DateTime<Utc>) -> Result<u64> {
    Ok(
        on_pool!(db, p => sqlx::query("DELETE FROM system_letters WHERE created_at < $1")
        .bind(cutoff).execute(p).await.map(|r| r.rows_affected()))?,
    )
}

/// Letters waiting (for `send-due --dry-run` and the reports).
pub async fn waiting(db: &Db) -> Result<i64> {
    Ok(
        on_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM system_letters")
        .fetch_one(p).await)?,
    )
}
