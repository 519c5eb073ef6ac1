//! Messages: a subject, a plain-text body and an optional HTML alternative.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, now};
use crate::auth::policy::Scope;
use crate::error::{Error, Result};
use crate::on_pool;
use crate::output::{Record, time};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Message {
    pub id: i64,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub owner_id: i64,
    pub created_at: DateTime<Utc>,
}

impl Record for Message {
    const HEADERS: &'static [&'static str] =
        &["id", "subject", "body", "html", "owner_id", "created_at"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.subject.clone(),
            preview(&self.body),
            self.html.as_deref().map(preview).unwrap_or_default(),
            self.owner_id.to_string(),
            time(&self.created_at),
        ]
    }
}

/// The first line of a long text, for tables.
fn preview(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    let mut short: String = first.chars().take(60).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

const COLUMNS: &str = "id, subject, body, html, owner_id, created_at";

pub async fn add(
    db: &Db,
    owner_id: i64,
    subject: &str,
    body: &str,
    html: Option<&str>,
) -> Result<Message> {
    let sql = format!(
        "INSERT INTO messages (owner_id, subject, body, html, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    );
    Ok(on_pool!(db, p => sqlx::query_as::<_, Message>(&sql)
        .bind(owner_id)
        .bind(subject)
        .bind(body)
        .bind(html)
        .bind(now())
        .fetch_one(p)
        .await)?)
}

pub async fn list(db: &Db, scope: Scope) -> Result<Vec<Message>> {
    let sql =
        format!("SELECT {COLUMNS} FROM messages WHERE ($1 IS NULL OR owner_id = $1) ORDER BY id");
    Ok(
        on_pool!(db, p => sqlx::query_as::<_, Message>(&sql).bind(scope.owner()).fetch_all(p).await)?,
    )
}

pub async fn get(db: &Db, scope: Scope, id: i64) -> Result<Message> {
    let sql =
        format!("SELECT {COLUMNS} FROM messages WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)");
    on_pool!(db, p => sqlx::query_as::<_, Message>(&sql).bind(id).bind(scope.owner()).fetch_optional(p).await)?
        .ok_or_else(|| Error::not_found("message", id))
}

#[derive(Debug, Default)]
pub struct MessageChanges {
    pub subject: Option<String>,
    pub body: Option<String>,
    /// Some(None) removes the HTML alternative.
    pub html: Option<Option<String>>,
}

pub async fn update(db: &Db, scope: Scope, id: i64, ch: &MessageChanges) -> Result<Message> {
    let sql = format!(
        "UPDATE messages SET subject = COALESCE($1, subject), body = COALESCE($2, body), \
           html = CASE WHEN $3 THEN $4 ELSE html END \
         WHERE id = $5 AND ($6 IS NULL OR owner_id = $6) RETURNING {COLUMNS}"
    );
    let html_set = ch.html.is_some();
    let html = ch.html.clone().flatten();
    on_pool!(db, p => sqlx::query_as::<_, Message>(&sql)
        .bind(ch.subject.as_deref())
        .bind(ch.body.as_deref())
        .bind(html_set)
        .bind(html.as_deref())
        .bind(id)
        .bind(scope.owner())
        .fetch_optional(p)
        .await)?
    .ok_or_else(|| Error::not_found("message", id))
}

/// The first mailing of a message that has send attempts, with how many: the history that
/// `messages delete --force` would take along.
const MAILING_WITH_HISTORY: &str = "SELECT a.mailing_id, COUNT(*) FROM attempts a \
     JOIN mailings m ON m.id = a.mailing_id WHERE m.message_id = $1 \
     GROUP BY a.mailing_id ORDER BY a.mailing_id LIMIT 1";

/// Refuses early (before a prompt) when a message's mailings have send attempts and
/// `purge_history` is off, as `mailings delete` does.
pub async fn check_history(db: &Db, ids: &[i64], purge_history: bool) -> Result<()> {
    if purge_history {
        return Ok(());
    }
    for &id in ids {
        let found: Option<(i64, i64)> = on_pool!(db, p => sqlx::query_as(MAILING_WITH_HISTORY)
            .bind(id).fetch_optional(p).await)?;
        if let Some((mailing, n)) = found {
            return Err(super::mailings::history_kept(mailing, n));
        }
    }
    Ok(())
}

/// Deletes all the given messages or none. A message used by a mailing is kept unless
/// `force`, which deletes those mailings too; a mailing with send attempts goes only with
/// `purge_history` (checked in the same transaction, like `mailings::delete`).
pub async fn delete(
    db: &Db,
    scope: Scope,
    ids: &[i64],
    force: bool,
    purge_history: bool,
) -> Result<u64> {
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        for &id in ids {
            let visible: Option<i64> = sqlx::query_scalar("SELECT id FROM messages WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)")
                .bind(id).bind(scope.owner()).fetch_optional(&mut *tx).await?;
            if visible.is_none() {
                return Err(Error::not_found("message", id));
            }
            let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailings WHERE message_id = $1")
                .bind(id).fetch_one(&mut *tx).await?;
            if used > 0 {
                if !force {
                    return Err(Error::invalid("id", format!(
                        "message {id} is used by {used} mailing(s); delete them first or pass --force")));
                }
                if !purge_history {
                    let found: Option<(i64, i64)> = sqlx::query_as(MAILING_WITH_HISTORY)
                        .bind(id).fetch_optional(&mut *tx).await?;
                    if let Some((mailing, n)) = found {
                        return Err(super::mailings::history_kept(mailing, n));
                    }
                }
                sqlx::query("DELETE FROM mailings WHERE message_id = $1").bind(id).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM messages WHERE id = $1").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    })
}
