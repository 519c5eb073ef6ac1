//! Clients (recipients), each owned by an account; email unique per owner, case-insensitively.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::accounts::email_key;
use super::{Db, is_unique_violation, now, search};
use crate::auth::policy::Scope;
use crate::error::{Error, Result};
use crate::on_pool;
use crate::output::{Record, time};

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Client {
    pub id: i64,
    pub email: String,
    pub full_name: String,
    pub comment: String,
    pub owner_id: i64,
    pub created_at: DateTime<Utc>,
}

impl Record for Client {
    const HEADERS: &'static [&'static str] = &[
        "id",
        "email",
        "full_name",
        "comment",
        "owner_id",
        "created_at",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.email.clone(),
            self.full_name.clone(),
            self.comment.clone(),
            self.owner_id.to_string(),
            time(&self.created_at),
        ]
    }
}

pub(crate) const COLUMNS: &str = "id, email, full_name, comment, owner_id, created_at";

fn duplicate(email: &str) -> Error {
    Error::invalid("email", format!("a client with {email} already exists"))
}

pub async fn add(
    db: &Db,
    owner_id: i64,
    email: &str,
    full_name: &str,
    comment: &str,
) -> Result<Client> {
    let sql = format!(
        "INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at, search_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let res = on_pool!(db, p => sqlx::query_as::<_, Client>(&sql)
        .bind(owner_id)
        .bind(email)
        .bind(email_key(email))
        .bind(full_name)
        .bind(comment)
        .bind(now())
        .bind(search::key(email, full_name, comment))
        .fetch_one(p)
        .await);
    res.map_err(|e| {
        if is_unique_violation(&e) {
            duplicate(email)
        } else {
            e.into()
        }
    })
}

/// `%text%` for LIKE, with the wildcards in the text escaped.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

pub async fn list(db: &Db, scope: Scope, text: Option<&str>) -> Result<Vec<Client>> {
    if text.is_some() {
        fill_search_keys(db).await?;
    }
    // Both sides folded (db::search), so a plain LIKE compares them on either backend.
    let sql = format!(
        "SELECT {COLUMNS} FROM clients \
         WHERE ($1 IS NULL OR owner_id = $1) \
           AND ($2 IS NULL OR search_key LIKE $2 ESCAPE '\\') \
         ORDER BY id"
    );
    let pattern = text.map(|t| like_pattern(&search::fold(t)));
    Ok(on_pool!(db, p => sqlx::query_as::<_, Client>(&sql)
        .bind(scope.owner())
        .bind(pattern.as_deref())
        .fetch_all(p)
        .await)?)
}

/// Rows written before migration 0015 (or by another tool) have no search key yet: fold
/// them here, in batches, the first time someone searches. The partial index finds them.
async fn fill_search_keys(db: &Db) -> Result<()> {
    const SELECT: &str = "SELECT id, email, full_name, comment FROM clients \
                          WHERE search_key IS NULL ORDER BY id LIMIT 1000";
    const UPDATE: &str = "UPDATE clients SET search_key = $1 WHERE id = $2";
    loop {
        let rows: Vec<(i64, String, String, String)> =
            on_pool!(db, p => sqlx::query_as(SELECT).fetch_all(p).await)?;
        if rows.is_empty() {
            return Ok(());
        }
        on_pool!(db, p => {
            let mut tx = p.begin().await?;
            for (id, email, name, comment) in &rows {
                sqlx::query(UPDATE).bind(search::key(email, name, comment)).bind(id)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, Error>(())
        })?;
    }
}

pub async fn get(db: &Db, scope: Scope, id: i64) -> Result<Client> {
    let sql =
        format!("SELECT {COLUMNS} FROM clients WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)");
    on_pool!(db, p => sqlx::query_as::<_, Client>(&sql).bind(id).bind(scope.owner()).fetch_optional(p).await)?
        .ok_or_else(|| Error::not_found("client", id))
}

#[derive(Debug, Default)]
pub struct ClientChanges {
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub comment: Option<String>,
}

pub async fn update(db: &Db, scope: Scope, id: i64, ch: &ClientChanges) -> Result<Client> {
    let c = update_fields(db, scope, id, ch).await?;
    // The key follows the stored values (a NULL one is filled by the next search anyway).
    let key = search::key(&c.email, &c.full_name, &c.comment);
    on_pool!(db, p => sqlx::query("UPDATE clients SET search_key = $1 WHERE id = $2")
        .bind(key).bind(c.id).execute(p).await.map(|_| ()))?;
    Ok(c)
}

async fn update_fields(db: &Db, scope: Scope, id: i64, ch: &ClientChanges) -> Result<Client> {
    let sql = format!(
        "UPDATE clients SET \
           email = COALESCE($1, email), email_key = COALESCE($2, email_key), \
           full_name = COALESCE($3, full_name), comment = COALESCE($4, comment), search_key = NULL \
         WHERE id = $5 AND ($6 IS NULL OR owner_id = $6) RETURNING {COLUMNS}"
    );
    let res = on_pool!(db, p => sqlx::query_as::<_, Client>(&sql)
        .bind(ch.email.as_deref())
        .bind(ch.email.as_deref().map(email_key))
        .bind(ch.full_name.as_deref())
        .bind(ch.comment.as_deref())
        .bind(id)
        .bind(scope.owner())
        .fetch_optional(p)
        .await);
    match res {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(Error::not_found("client", id)),
        Err(e) if is_unique_violation(&e) => Err(duplicate(ch.email.as_deref().unwrap_or(""))),
        Err(e) => Err(e.into()),
    }
}

/// Deletes all the given clients or none: an id the scope cannot see fails the whole call.
pub async fn delete(db: &Db, scope: Scope, ids: &[i64]) -> Result<u64> {
    let sql = "DELETE FROM clients WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)";
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        for &id in ids {
            let done = sqlx::query(sql).bind(id).bind(scope.owner()).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(Error::not_found("client", id));
            }
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    })
}

/// The subset of `ids` that belong to `owner_id`.
pub async fn owned_ids(db: &Db, owner_id: i64, ids: &[i64]) -> Result<Vec<i64>> {
    let sql = "SELECT id FROM clients WHERE id = $1 AND owner_id = $2";
    let mut found = Vec::with_capacity(ids.len());
    on_pool!(db, p => {
        for &id in ids {
            let row: Option<i64> = sqlx::query_scalar(sql).bind(id).bind(owner_id).fetch_optional(p).await?;
            found.extend(row);
        }
        Ok::<_, sqlx::Error>(())
    })?;
    Ok(found)
}
