//! Clients (recipients), each owned by an account; email unique per owner, case-insensitively.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::accounts::email_key;
use super::fields::Fields;
use super::tags::{self, Tags};
use super::{Db, is_unique_violation, now, search};
use crate::auth::policy::Scope;
use crate::error::{Error, Result};
use crate::on_pool;
use crate::output::{Record, time};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Client {
    pub id: i64,
    pub email: String,
    pub full_name: String,
    pub comment: String,
    #[sqlx(try_from = "String")]
    pub tags: Tags,
    #[sqlx(try_from = "String")]
    pub fields: Fields,
    pub owner_id: i64,
    pub created_at: DateTime<Utc>,
}

impl Record for Client {
    const HEADERS: &'static [&'static str] = &[
        "id",
        "email",
        "full_name",
        "comment",
        "tags",
        "fields",
        "owner_id",
        "created_at",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.email.clone(),
            self.full_name.clone(),
            self.comment.clone(),
            self.tags.0.join(", "),
            self.fields.shown(),
            self.owner_id.to_string(),
            time(&self.created_at),
        ]
    }
    /// Tags as in the import (`news;vip`), fields as a JSON object, the time in RFC 3339 UTC
    /// as in JSON.
    fn csv_cells(&self) -> Option<Vec<String>> {
        let mut cells = self.cells();
        cells[4] = self.tags.cell();
        cells[5] = self.fields.stored();
        cells[7] = self
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        Some(cells)
    }
}

pub(crate) const COLUMNS: &str =
    "id, email, full_name, comment, tags, fields, owner_id, created_at";

/// What a new client is made of (validated by the caller).
pub struct NewClient<'a> {
    pub email: &'a str,
    pub full_name: &'a str,
    pub comment: &'a str,
    pub tags: &'a Tags,
    pub fields: &'a Fields,
}

fn duplicate(email: &str) -> Error {
    Error::invalid("email", format!("a client with {email} already exists"))
}

pub async fn add(db: &Db, owner_id: i64, c: &NewClient<'_>) -> Result<Client> {
    let sql = format!(
        "INSERT INTO clients (owner_id, email, email_key, full_name, comment, tags, fields, created_at, search_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    );
    let email = c.email;
    let res = on_pool!(db, p => sqlx::query_as::<_, Client>(&sql)
        .bind(owner_id)
        .bind(email)
        .bind(email_key(email))
        .bind(c.full_name)
        .bind(c.comment)
        .bind(c.tags.stored())
        .bind(c.fields.stored())
        .bind(now())
        .bind(search::key(email, c.full_name, c.comment))
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

/// The clients in `scope` matching `text` and carrying every one of `with_tags`.
pub async fn list(
    db: &Db,
    scope: Scope,
    text: Option<&str>,
    with_tags: &Tags,
) -> Result<Vec<Client>> {
    if text.is_some() {
        fill_search_keys(db).await?;
    }
    // Both sides folded (db::search), so a plain LIKE compares them on either backend.
    let mut sql = format!(
        "SELECT {COLUMNS} FROM clients \
         WHERE ($1 IS NULL OR owner_id = $1) \
           AND ($2 IS NULL OR search_key LIKE $2 ESCAPE '\\')"
    );
    let needles = with_tags.needles();
    for i in 0..needles.len() {
        sql.push_str(&format!(" AND {}", tags::carries(db, "tags", i + 3)));
    }
    sql.push_str(" ORDER BY id");
    let pattern = text.map(|t| like_pattern(&search::fold(t)));
    Ok(on_pool!(db, p => {
        let mut q = sqlx::query_as::<_, Client>(&sql)
            .bind(scope.owner())
            .bind(pattern.as_deref());
        for n in &needles {
            q = q.bind(n);
        }
        q.fetch_all(p).await
    })?)
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
    /// The whole new set (the caller applied `--tag`/`--untag` to the current one).
    pub tags: Option<Tags>,
    /// The whole new map (the caller applied `--field` to the current one).
    pub fields: Option<Fields>,
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
           full_name = COALESCE($3, full_name), comment = COALESCE($4, comment), \
           tags = COALESCE($7, tags), fields = COALESCE($8, fields), search_key = NULL \
         WHERE id = $5 AND ($6 IS NULL OR owner_id = $6) RETURNING {COLUMNS}"
    );
    let tags = ch.tags.as_ref().map(Tags::stored);
    let fields = ch.fields.as_ref().map(Fields::stored);
    let res = on_pool!(db, p => sqlx::query_as::<_, Client>(&sql)
        .bind(ch.email.as_deref())
        .bind(ch.email.as_deref().map(email_key))
        .bind(ch.full_name.as_deref())
        .bind(ch.comment.as_deref())
        .bind(id)
        .bind(scope.owner())
        .bind(tags.as_deref())
        .bind(fields.as_deref())
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

/// The owner's first client (a sample recipient for `messages preview`).
pub async fn first_of_owner(db: &Db, owner_id: i64) -> Result<Option<Client>> {
    let sql = format!("SELECT {COLUMNS} FROM clients WHERE owner_id = $1 ORDER BY id LIMIT 1");
    Ok(on_pool!(db, p => sqlx::query_as::<_, Client>(&sql).bind(owner_id).fetch_optional(p).await)?)
}

/// The mailing's first recipient (by client id), if it has any.
pub async fn first_recipient(db: &Db, mailing_id: i64) -> Result<Option<Client>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM clients WHERE id = \
           (SELECT MIN(client_id) FROM mailing_clients WHERE mailing_id = $1)"
    );
    Ok(
        on_pool!(db, p => sqlx::query_as::<_, Client>(&sql).bind(mailing_id).fetch_optional(p).await)?,
    )
}
