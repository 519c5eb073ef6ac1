//! Mailings: a message, a time window and a set of clients, all of one owner.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audience::required_fields;
use super::tags::Tags;
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
    /// As of the moment it is read: `created`, `active` or `completed`.
    pub status: String,
    pub disabled: bool,
    /// The window ended before every recipient had a final outcome.
    pub ended_with_letters_left: bool,
    pub clients: i64,
    pub sent: i64,
    /// Recipients without a final outcome (not tried yet, in flight, or waiting to retry).
    pub pending: i64,
    pub failed: i64,
    /// Set aside (unsubscribed or refused before), or about to be: pending to such an address.
    pub suppressed: i64,
    /// Audience: every client of the owner, resolved on every run while due.
    pub all_clients: bool,
    /// Audience: the owner's clients carrying any of these, resolved on every run while due.
    #[sqlx(try_from = "String")]
    pub tags: Tags,
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
        "ended_with_letters_left",
        "clients",
        "sent",
        "pending",
        "failed",
        "suppressed",
        "all_clients",
        "tags",
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
            self.ended_with_letters_left.to_string(),
            self.clients.to_string(),
            self.sent.to_string(),
            self.pending.to_string(),
            self.failed.to_string(),
            self.suppressed.to_string(),
            self.all_clients.to_string(),
            self.tags.0.join(", "),
            self.owner_id.to_string(),
            time(&self.created_at),
        ]
    }
    /// Times in RFC 3339 UTC as in JSON, tags as in the import (`news;vip`).
    fn csv_cells(&self) -> Option<Vec<String>> {
        let utc = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut cells = self.cells();
        let at = |name: &str| {
            Self::HEADERS
                .iter()
                .position(|h| *h == name)
                .expect("a mailing column")
        };
        cells[at("start_at")] = utc(&self.start_at);
        cells[at("end_at")] = utc(&self.end_at);
        cells[at("created_at")] = utc(&self.created_at);
        cells[at("tags")] = self.tags.cell();
        Some(cells)
    }
}

/// What `list --status` keeps: a status as of now, or a flag shown beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Status(&'static str),
    Disabled,
    EndedWithLettersLeft,
}

/// A mailing as of `$1` (now), for the mailings that `where_` keeps (`m` is the mailing).
/// The status is computed here, not read from the column the sender writes, so it is true
/// whether or not a run has touched the mailing: `created` before the start, `completed`
/// after the end or once no recipient is left without a final outcome, else `active`.
///
/// Each count is an index range on one mailing (the primary key of `mailing_clients`, the
/// unique key of `deliveries`); `open` walks the mailing's recipients once (about 0.25 s per
/// 200,000 on SQLite); `held` (letters left to an address that is now suppressed: they will
/// be set aside, not sent) starts from the owner's suppressions, which are few.
/// MATERIALIZED keeps SQLite from copying the counts into every expression that uses them.
fn select(where_: &str) -> String {
    format!(
        "WITH x AS MATERIALIZED (SELECT m.id, m.message_id, msg.subject, m.start_at, m.end_at, \
             m.disabled, m.all_clients, m.audience_tags, m.owner_id, m.created_at, \
             (SELECT COUNT(*) FROM mailing_clients mc WHERE mc.mailing_id = m.id) AS clients, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.mailing_id = m.id AND d.state = 'sent') AS sent, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.mailing_id = m.id AND d.state = 'failed') AS failed, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.mailing_id = m.id AND d.state = 'suppressed') AS suppressed, \
             (SELECT COUNT(*) FROM mailing_clients mc LEFT JOIN deliveries d \
                ON d.mailing_id = mc.mailing_id AND d.client_id = mc.client_id \
              WHERE mc.mailing_id = m.id AND (d.state IS NULL OR d.state IN ('pending', 'sending'))) AS open, \
             (SELECT COUNT(*) FROM suppressions s \
                JOIN clients c ON c.owner_id = s.owner_id AND c.email_key = s.email_key \
                JOIN mailing_clients mc ON mc.mailing_id = m.id AND mc.client_id = c.id \
                LEFT JOIN deliveries d ON d.mailing_id = m.id AND d.client_id = c.id \
              WHERE s.owner_id = m.owner_id AND (d.state IS NULL OR d.state IN ('pending', 'sending'))) AS held \
           FROM mailings m JOIN messages msg ON msg.id = m.message_id WHERE {where_}) \
         SELECT x.id, x.message_id, x.subject, x.start_at, x.end_at, \
           CASE WHEN $1 < x.start_at THEN 'created' \
                WHEN x.end_at < $1 OR x.open - x.held <= 0 THEN 'completed' ELSE 'active' END AS status, \
           x.disabled, (x.end_at < $1 AND x.open - x.held > 0) AS ended_with_letters_left, \
           x.clients, x.sent, x.open - x.held AS pending, x.failed, x.suppressed + x.held AS suppressed, \
           x.all_clients, x.audience_tags AS tags, x.owner_id, x.created_at FROM x"
    )
}

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
    let sql = select("m.id = $2 AND ($3 IS NULL OR m.owner_id = $3)");
    on_pool!(db, p => sqlx::query_as::<_, Mailing>(&sql)
        .bind(now()).bind(id).bind(scope.owner()).fetch_optional(p).await)?
    .ok_or_else(|| Error::not_found("mailing", id))
}

pub async fn list(db: &Db, scope: Scope, filter: Option<Filter>) -> Result<Vec<Mailing>> {
    let (status, keep) = match filter {
        None => (None, "TRUE"),
        Some(Filter::Status(s)) => (Some(s), "TRUE"),
        Some(Filter::Disabled) => (None, "y.disabled"),
        Some(Filter::EndedWithLettersLeft) => (None, "y.ended_with_letters_left"),
    };
    let sql = format!(
        "SELECT * FROM ({}) AS y WHERE {keep} AND ($3 IS NULL OR y.status = $3) ORDER BY y.id",
        select("($2 IS NULL OR m.owner_id = $2)")
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
    pub tags: &'a Tags,
}

/// The message's texts, read inside a transaction when it belongs to `owner`.
macro_rules! owned_message {
    ($tx:expr, $message:expr, $owner:expr) => {
        sqlx::query_as::<_, (String, String, Option<String>)>(
            "SELECT subject, body, html FROM messages WHERE id = $1 AND owner_id = $2",
        )
        .bind($message)
        .bind($owner)
        .fetch_optional(&mut *$tx)
        .await?
        .ok_or_else(|| Error::not_found("message", $message))?
    };
}

/// Creates the mailing and its recipient list in one transaction. The message and every
/// client must belong to the owner (checked here, inside the transaction); the audience
/// (`all_clients`, `tags`) is stored and resolved now, and again on every run; a field the
/// message needs without a default that some recipient lacks refuses the whole mailing.
pub async fn add(db: &Db, m: &NewMailing<'_>) -> Result<i64> {
    let id = on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let (subject, body, html) = owned_message!(tx, m.message_id, m.owner_id);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO mailings (owner_id, message_id, start_at, end_at, status, disabled, created_at, \
               all_clients, audience_tags) \
             VALUES ($1, $2, $3, $4, 'created', FALSE, $5, $6, $7) RETURNING id")
            .bind(m.owner_id).bind(m.message_id).bind(m.start_at).bind(m.end_at).bind(now())
            .bind(m.all_clients).bind(m.tags.stored())
            .fetch_one(&mut *tx).await?;
        crate::resolve_audience!(db, tx, id, m.owner_id, m.all_clients, m.tags);
        for &client in m.client_ids {
            if !owns_client!(tx, client, m.owner_id) {
                return Err(Error::not_found("client", client));
            }
            sqlx::query("INSERT INTO mailing_clients (mailing_id, client_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id).bind(client).execute(&mut *tx).await?;
        }
        crate::check_required_fields!(db, tx, id, &required_fields(&subject, &body, html.as_deref()));
        tx.commit().await?;
        Ok::<_, Error>(id)
    })?;
    Ok(id)
}

pub struct MailingChanges {
    pub message_id: Option<i64>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    /// Address every client from now on.
    pub all_clients: bool,
    /// Replaces the audience's tags.
    pub tags: Option<Tags>,
}

pub async fn update(db: &Db, scope: Scope, id: i64, ch: &MailingChanges) -> Result<()> {
    let current = get(db, scope, id).await?;
    let start = ch.start_at.unwrap_or(current.start_at);
    let end = ch.end_at.unwrap_or(current.end_at);
    crate::validate::window(start, end)?;
    let all_clients = current.all_clients || ch.all_clients;
    let tags = ch.tags.clone().unwrap_or(current.tags);
    let message = ch.message_id.unwrap_or(current.message_id);
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let (subject, body, html) = owned_message!(tx, message, current.owner_id);
        sqlx::query("UPDATE mailings SET message_id = $1, start_at = $2, end_at = $3, \
               all_clients = $5, audience_tags = $6 WHERE id = $4")
            .bind(message).bind(start).bind(end).bind(id).bind(all_clients).bind(tags.stored())
            .execute(&mut *tx).await?;
        crate::resolve_audience!(db, tx, id, current.owner_id, all_clients, &tags);
        crate::check_required_fields!(db, tx, id, &required_fields(&subject, &body, html.as_deref()));
        tx.commit().await?;
        Ok(())
    })
}

/// Why deleting a mailing with send attempts needs `--purge-history` (exit 5, naming it).
pub(crate) fn history_kept(id: i64, attempts: i64) -> Error {
    Error::invalid(
        "purge-history",
        format!(
            "mailing {id} has {attempts} send attempt(s) and its statistics: \
             pass --purge-history to delete them with it"
        ),
    )
}

pub(crate) const ATTEMPTS_OF: &str = "SELECT COUNT(*) FROM attempts WHERE mailing_id = $1";

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
            // A letter not yet sent must not go out to someone no longer a recipient; the
            // rows of letters sent, failed or in flight stay, as the history of the mailing.
            sqlx::query("DELETE FROM deliveries WHERE mailing_id = $1 AND client_id = $2 AND state = 'pending'")
                .bind(id).bind(client).execute(&mut *tx).await?;
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
