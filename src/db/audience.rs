//! A mailing's audience: all of the owner's clients, or those carrying any of its tags.
//! It is resolved into `mailing_clients` when the mailing is made or edited, and again at the
//! start of every send-due run while it is due ([`resolve`]), so a client added or tagged
//! later becomes a recipient then; the delivery rows follow from `mailing_clients` as for
//! explicit recipients, and their unique key keeps it to one letter.

use super::Db;
use super::fields;
use super::tags::{self, Tags};
use crate::error::{Error, Result};
use crate::mail::placeholders;
use crate::on_pool;

/// `INSERT` of the audience's clients that are not recipients yet: `$1` the mailing, `$2` the
/// owner, `$3...` the needles of the tags (none: all clients). A run with nobody new costs one
/// pass over the owner's clients and no write. On PostgreSQL the anti-join spares a
/// speculative insertion per client; on SQLite the insert's own key lookup does that job, and
/// an anti-join would double the lookups (1,000,000 clients: 1.6 s instead of 0.9 s).
pub fn resolve_sql(db: &Db, all_clients: bool, tag_count: usize) -> String {
    let matching = if all_clients {
        String::new()
    } else {
        let any: Vec<String> = (0..tag_count)
            .map(|i| tags::carries(db, "c.tags", i + 3))
            .collect();
        format!(" AND ({})", any.join(" OR "))
    };
    let anti_join = match db {
        Db::Postgres(_) => {
            " AND NOT EXISTS (SELECT 1 FROM mailing_clients mc \
               WHERE mc.mailing_id = $1 AND mc.client_id = c.id)"
        }
        Db::Sqlite(_) => "",
    };
    format!(
        "INSERT INTO mailing_clients (mailing_id, client_id) SELECT $1, c.id FROM clients c \
         WHERE c.owner_id = $2{matching}{anti_join} ON CONFLICT DO NOTHING"
    )
}

/// Runs [`resolve_sql`] inside a transaction `$tx`; evaluates to the rows added.
/// (A macro so it expands once per backend inside `on_pool!`.)
#[macro_export]
macro_rules! resolve_audience {
    ($db:expr, $tx:expr, $mailing:expr, $owner:expr, $all:expr, $tags:expr) => {{
        let tags: &$crate::db::tags::Tags = $tags;
        if $all || !tags.is_empty() {
            let sql = $crate::db::audience::resolve_sql($db, $all, tags.0.len());
            let mut q = sqlx::query(&sql).bind($mailing).bind($owner);
            for needle in tags.needles() {
                q = q.bind(needle);
            }
            q.execute(&mut *$tx).await?.rows_affected()
        } else {
            0
        }
    }};
}

#[derive(sqlx::FromRow)]
struct Audience {
    owner_id: i64,
    all_clients: bool,
    #[sqlx(try_from = "String")]
    audience_tags: Tags,
}

/// At the start of a run: makes the mailing's audience members that are not recipients yet
/// recipients. Returns how many were added.
pub async fn resolve(db: &Db, mailing_id: i64) -> Result<u64> {
    let sql = "SELECT owner_id, all_clients, audience_tags FROM mailings WHERE id = $1";
    let found: Option<Audience> =
        on_pool!(db, p => sqlx::query_as(sql).bind(mailing_id).fetch_optional(p).await)?;
    let Some(a) = found else { return Ok(0) };
    if !a.all_clients && a.audience_tags.is_empty() {
        return Ok(0);
    }
    Ok(on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let n = crate::resolve_audience!(db, tx, mailing_id, a.owner_id, a.all_clients, &a.audience_tags);
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    })?)
}

/// Custom fields the message uses without a default, each once, sorted.
pub fn required_fields(subject: &str, body: &str, html: Option<&str>) -> Vec<String> {
    let mut keys: Vec<String> = [Some(subject), Some(body), html]
        .into_iter()
        .flatten()
        .flat_map(|t| {
            placeholders::Template::parse(t)
                .required_fields()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// SQL: how many recipients of mailing `$1` lack the field `$2`, and how many there are.
pub fn lacking_sql(db: &Db) -> String {
    format!(
        "SELECT COUNT(*) FILTER (WHERE {}), COUNT(*) FROM mailing_clients mc \
         JOIN clients c ON c.id = mc.client_id WHERE mc.mailing_id = $1",
        fields::lacks(db, "c", 2)
    )
}

/// The error for a field some recipients lack (exit 5).
pub fn lacking_error(key: &str, lacking: i64, total: i64) -> Error {
    Error::invalid(
        "message",
        format!(
            "uses {{{{{key}}}}} without a default, and {lacking} of the {total} recipient(s) \
             have no '{key}' field (write {{{{{key}|default}}}} or fill the field)"
        ),
    )
}

/// Refuses the mailing (inside its transaction `$tx`) when a field the message needs is missing
/// for some current recipient. (A macro so it expands once per backend inside `on_pool!`.)
#[macro_export]
macro_rules! check_required_fields {
    ($db:expr, $tx:expr, $mailing:expr, $keys:expr) => {{
        let sql = $crate::db::audience::lacking_sql($db);
        for key in $keys {
            let (lacking, total): (i64, i64) = sqlx::query_as(&sql)
                .bind($mailing)
                .bind(key)
                .fetch_one(&mut *$tx)
                .await?;
            if lacking > 0 {
                return Err($crate::db::audience::lacking_error(key, lacking, total));
            }
        }
    }};
}
