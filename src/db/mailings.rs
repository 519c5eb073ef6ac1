//! Mailings: a message, a time window and a set of clients, all of one owner.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, now};
use crate::auth::policy::Scope;
use crate::error::{Error, Result};
use crate::on_pool;
use crate::output::{Record, time};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Mailing {
    pub id: i64,
    pub message_id: i64,
    pub subject: String,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub status: String,
    pub disabled: bool,
    pub clients: i64,
    pub owner_id: i64,
    pub created_at: DateTime<Utc>,
}

impl Record for Mailing {
    const HEADERS: &'static [&'static str] = &[
        "id",
        "message_id",
        "subject",
        "start_at",
        "end_at",
        "status",
        "disabled",
        "clients",
        "owner_id",
        "created_at",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.message_id.to_string(),
            self.subject.clone(),
            time(&self.start_at),
            time(&self.end_at),
            self.status.clone(),
            self.disabled.to_string(),
            self.clients.to_string(),
            self.owner_id.to_string(),
            time(&self.created_at),
        ]
    }
}

/// A mailing whose window has passed reads as completed even before the sender marks it.
const SELECT: &str = "SELECT m.id, m.message_id, msg.subject, m.start_at, m.end_at, \
       CASE WHEN m.status <> 'completed' AND m.end_at < $1 THEN 'completed' ELSE m.status END AS status, \
       m.disabled, \
       (SELECT COUNT(*) FROM mailing_clients mc WHERE mc.mailing_id = m.id) AS clients, \
       m.owner_id, m.created_at \
     FROM mailings m JOIN messages msg ON msg.id = m.message_id";

/// Inside a transaction: does `client` belong to `owner`? (A macro so it expands per backend.)
macro_rules! owns_client {
    ($tx:expr, $client:expr, $owner:expr) => {
        sqlx::query_scalar::<_, i64>("SELECT id FROM clients WHERE id = $1 AND owner_id = $2")
            .bind($client)
            .bind($owner)
            .fetch_optional(&mut *$tx)
            .await?
            .is_some()
    };
}

pub async fn get(db: &Db, scope: Scope, id: i64) -> Result<Mailing> {
    let sql = format!("{SELECT} WHERE m.id = $2 AND ($3 IS NULL OR m.owner_id = $3)");
    on_pool!(db, p => sqlx::query_as::<_, Mailing>(&sql)
        .bind(now()).bind(id).bind(scope.owner()).fetch_optional(p).await)?
    .ok_or_else(|| Error::not_found("mailing", id))
}

pub async fn list(db: &Db, scope: Scope, status: Option<&str>) -> Result<Vec<Mailing>> {
    let sql = format!(
        "SELECT * FROM ({SELECT} WHERE ($2 IS NULL OR m.owner_id = $2)) AS x \
         WHERE ($3 IS NULL OR x.status = $3) ORDER BY x.id"
    );
    Ok(on_pool!(db, p => sqlx::query_as::<_, Mailing>(&sql)
        .bind(now()).bind(scope.owner()).bind(status).fetch_all(p).await)?)
}

pub struct NewMailing<'a> {
    pub owner_id: i64,
    pub message_id: i64,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub client_ids: &'a [i64],
    pub all_clients: bool,
}

/// Creates the mailing and its recipient list in one transaction. The message and every
/// client must belong to the owner (checked here, inside the transaction).
pub async fn add(db: &Db, m: &NewMailing<'_>) -> Result<i64> {
    let id = on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let msg: Option<i64> = sqlx::query_scalar("SELECT id FROM messages WHERE id = $1 AND owner_id = $2")
            .bind(m.message_id).bind(m.owner_id).fetch_optional(&mut *tx).await?;
        if msg.is_none() {
            return Err(Error::not_found("message", m.message_id));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO mailings (owner_id, message_id, start_at, end_at, status, disabled, created_at) \
             VALUES ($1, $2, $3, $4, 'created', FALSE, $5) RETURNING id")
            .bind(m.owner_id).bind(m.message_id).bind(m.start_at).bind(m.end_at).bind(now())
            .fetch_one(&mut *tx).await?;
        if m.all_clients {
            sqlx::query("INSERT INTO mailing_clients (mailing_id, client_id) SELECT $1, id FROM clients WHERE owner_id = $2")
                .bind(id).bind(m.owner_id).execute(&mut *tx).await?;
        }
        for &client in m.client_ids {
            if !owns_client!(tx, client, m.owner_id) {
                return Err(Error::not_found("client", client));
            }
            sqlx::query("INSERT INTO mailing_clients (mailing_id, client_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id).bind(client).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok::<_, Error>(id)
    })?;
    Ok(id)
}

pub struct MailingChanges {
    pub message_id: Option<i64>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
}

pub async fn update(db: &Db, scope: Scope, id: i64, ch: &MailingChanges) -> Result<()> {
    let current = get(db, scope, id).await?;
    let start = ch.start_at.unwrap_or(current.start_at);
    let end = ch.end_at.unwrap_or(current.end_at);
    crate::validate::window(start, end)?;
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        if let Some(message) = ch.message_id {
            let ok: Option<i64> = sqlx::query_scalar("SELECT id FROM messages WHERE id = $1 AND owner_id = $2")
                .bind(message).bind(current.owner_id).fetch_optional(&mut *tx).await?;
            if ok.is_none() {
                return Err(Error::not_found("message", message));
            }
        }
        sqlx::query("UPDATE mailings SET message_id = COALESCE($1, message_id), start_at = $2, end_at = $3 WHERE id = $4")
            .bind(ch.message_id).bind(start).bind(end).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// Deletes all the given mailings or none.
/// Why deleting a mailing with send attempts needs `--purge-history` (exit 5, naming it).
fn history_kept(id: i64, attempts: i64) -> Error {
    Error::invalid(
        "purge-history",
        format!(
            "mailing {id} has {attempts} send attempt(s) and its statistics: \
             pass --purge-history to delete them with it"
        ),
    )
}

const ATTEMPTS_OF: &str = "SELECT COUNT(*) FROM attempts WHERE mailing_id = $1";

/// Refuses early (before a prompt) when a mailing has history and `purge_history` is off.
pub async fn check_history(db: &Db, ids: &[i64], purge_history: bool) -> Result<()> {
    if purge_history {
        return Ok(());
    }
    for &id in ids {
        let n: i64 =
            on_pool!(db, p => sqlx::query_scalar(ATTEMPTS_OF).bind(id).fetch_one(p).await)?;
        if n > 0 {
            return Err(history_kept(id, n));
        }
    }
    Ok(())
}

/// Deletes mailings (all or none). One with send attempts goes only with `purge_history`,
/// checked in the same transaction, so history recorded after the prompt is not lost unasked.
pub async fn delete(db: &Db, scope: Scope, ids: &[i64], purge_history: bool) -> Result<u64> {
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        for &id in ids {
            if !purge_history {
                let n: i64 = sqlx::query_scalar(ATTEMPTS_OF).bind(id).fetch_one(&mut *tx).await?;
                if n > 0 {
                    return Err(history_kept(id, n));
                }
            }
            let done = sqlx::query("DELETE FROM mailings WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)")
                .bind(id).bind(scope.owner()).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(Error::not_found("mailing", id));
            }
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    })
}

/// Adds recipients; every client must belong to the mailing's owner. Returns how many were new.
pub async fn add_clients(db: &Db, scope: Scope, id: i64, client_ids: &[i64]) -> Result<u64> {
    let mailing = get(db, scope, id).await?;
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let mut added = 0;
        for &client in client_ids {
            if !owns_client!(tx, client, mailing.owner_id) {
                return Err(Error::not_found("client", client));
            }
            added += sqlx::query("INSERT INTO mailing_clients (mailing_id, client_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id).bind(client).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    })
}

/// Removes recipients; an id that is not a recipient of this mailing fails the whole call.
pub async fn remove_clients(db: &Db, scope: Scope, id: i64, client_ids: &[i64]) -> Result<u64> {
    get(db, scope, id).await?;
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        for &client in client_ids {
            let done = sqlx::query("DELETE FROM mailing_clients WHERE mailing_id = $1 AND client_id = $2")
                .bind(id).bind(client).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(Error::not_found("client", format!("{client} in mailing {id}")));
            }
        }
        tx.commit().await?;
        Ok(client_ids.len() as u64)
    })
}

pub async fn set_disabled(db: &Db, id: i64, disabled: bool) -> Result<()> {
    let done = on_pool!(db, p => sqlx::query("UPDATE mailings SET disabled = $1 WHERE id = $2")
        .bind(disabled).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    if done == 0 {
        return Err(Error::not_found("mailing", id));
    }
    Ok(())
}
