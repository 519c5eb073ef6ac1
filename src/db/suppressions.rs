//! Suppressed addresses (an owner must not write to them again) and installation secrets.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::accounts::email_key;
use super::{Db, now};
use crate::error::{Error, Result};
use crate::on_pool;
use crate::output::{Record, time};

/// A random secret kept in the database, created the first time it is asked for.
pub async fn secret(db: &Db, name: &str) -> Result<Vec<u8>> {
    let fresh = crate::auth::token::generate();
    let sql_insert =
        "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
    let sql_read = "SELECT value FROM secrets WHERE name = $1";
    // Read first: the insert is a write (on SQLite it waits for the one writer) that is only
    // needed once per installation.
    let value: String = on_pool!(db, p => {
        match sqlx::query_scalar(sql_read).bind(name).fetch_optional(p).await? {
            Some(v) => Ok(v),
            None => {
                sqlx::query(sql_insert).bind(name).bind(&fresh).execute(p).await?;
                sqlx::query_scalar(sql_read).bind(name).fetch_one(p).await
            }
        }
    })?;
    Ok(value.into_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The recipient followed the unsubscribe link.
    Unsubscribed,
    /// The receiving server refused the address for good (5xx) while we sent.
    Refused,
    /// A bounce report: a hard bounce, or the third soft one within 30 days.
    Bounced,
    /// A spam complaint (ARF).
    Complained,
    /// Added by the owner (`suppressions add|import`).
    Manual,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unsubscribed => "unsubscribed",
            Reason::Refused => "refused",
            Reason::Bounced => "bounced",
            Reason::Complained => "complained",
            Reason::Manual => "manual",
        }
    }
}

/// One suppressed address of an owner (stored lower-cased).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Suppression {
    pub email: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

impl Record for Suppression {
    const HEADERS: &'static [&'static str] = &["email", "reason", "created_at"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.email.clone(),
            self.reason.clone(),
            time(&self.created_at),
        ]
    }
}

pub async fn list(db: &Db, owner_id: i64) -> Result<Vec<Suppression>> {
    let sql = "SELECT email_key AS email, reason, created_at FROM suppressions \
               WHERE owner_id = $1 ORDER BY created_at, email_key";
    Ok(on_pool!(db, p => sqlx::query_as::<_, Suppression>(sql)
        .bind(owner_id).fetch_all(p).await)?)
}

/// Suppresses addresses in one transaction; those already suppressed keep their reason.
/// Returns how many were new.
pub async fn add_many(db: &Db, owner_id: i64, emails: &[String], reason: Reason) -> Result<u64> {
    let sql = "INSERT INTO suppressions (owner_id, email_key, reason, created_at) VALUES ($1, $2, $3, $4) \
               ON CONFLICT (owner_id, email_key) DO NOTHING";
    let at = now();
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let mut added = 0;
        for e in emails {
            added += sqlx::query(sql).bind(owner_id).bind(email_key(e)).bind(reason.as_str()).bind(at)
                .execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok::<_, Error>(added)
    })
}

/// Allows addresses again, all or none: one that is not suppressed is exit 4, nothing changed.
pub async fn remove_many(db: &Db, owner_id: i64, emails: &[String]) -> Result<u64> {
    let sql = "DELETE FROM suppressions WHERE owner_id = $1 AND email_key = $2";
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        for e in emails {
            let n = sqlx::query(sql).bind(owner_id).bind(email_key(e))
                .execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Err(Error::not_found("suppression", e));
            }
        }
        tx.commit().await?;
        Ok::<_, Error>(emails.len() as u64)
    })
}

/// Suppresses an address for one owner; an existing entry stays as it is.
pub async fn suppress(db: &Db, owner_id: i64, email: &str, reason: Reason) -> Result<()> {
    let sql = "INSERT INTO suppressions (owner_id, email_key, reason, created_at) VALUES ($1, $2, $3, $4) \
               ON CONFLICT (owner_id, email_key) DO NOTHING";
    on_pool!(db, p => sqlx::query(sql)
        .bind(owner_id)
        .bind(email_key(email))
        .bind(reason.as_str())
        .bind(now())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn is_suppressed(db: &Db, owner_id: i64, email: &str) -> Result<bool> {
    let sql = "SELECT 1 FROM suppressions WHERE owner_id = $1 AND email_key = $2";
    let row: Option<i32> = on_pool!(db, p => sqlx::query_scalar(sql)
        .bind(owner_id).bind(email_key(email)).fetch_optional(p).await)?;
    Ok(row.is_some())
}

/// The recipient an unsubscribe link names: (owner of the mailing, client email).
pub async fn recipient(db: &Db, mailing_id: i64, client_id: i64) -> Result<Option<(i64, String)>> {
    let sql = "SELECT m.owner_id, c.email FROM mailings m JOIN clients c ON c.id = $2 AND c.owner_id = m.owner_id \
               WHERE m.id = $1";
    Ok(on_pool!(db, p => sqlx::query_as::<_, (i64, String)>(sql)
        .bind(mailing_id).bind(client_id).fetch_optional(p).await)?)
}

/// Unsubscribes the recipient of a verified link. Returns the address, or None when the
/// mailing or client no longer exists.
pub async fn unsubscribe(db: &Db, mailing_id: i64, client_id: i64) -> Result<Option<String>> {
    let Some((owner_id, email)) = recipient(db, mailing_id, client_id).await? else {
        return Ok(None);
    };
    suppress(db, owner_id, &email, Reason::Unsubscribed).await?;
    Ok(Some(email))
}
