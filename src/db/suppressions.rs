//! Suppressed addresses (unsubscribed or permanently refused) and installation secrets.

use super::accounts::email_key;
use super::{Db, now};
use crate::error::Result;
use crate::on_pool;

/// A random secret kept in the database, created the first time it is asked for.
pub async fn secret(db: &Db, name: &str) -> Result<Vec<u8>> {
    let fresh = crate::auth::token::generate();
    let sql_insert =
        "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
    let sql_read = "SELECT value FROM secrets WHERE name = $1";
    let value: String = on_pool!(db, p => {
        sqlx::query(sql_insert).bind(name).bind(&fresh).execute(p).await?;
        sqlx::query_scalar(sql_read).bind(name).fetch_one(p).await
    })?;
    Ok(value.into_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Unsubscribed,
    Bounced,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Unsubscribed => "unsubscribed",
            Reason::Bounced => "bounced",
        }
    }
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
