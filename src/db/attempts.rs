//! Send attempts (one row per try) and the recording of a try's outcome.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Db;
use crate::auth::policy::Scope;
use crate::error::Result;
use crate::on_pool;
use crate::output::{Record, time};

/// What a finished try does to its delivery row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// 2xx: delivered, final.
    Sent,
    /// 5xx: refused for good, final; the address is suppressed for the owner (bounced).
    Failed,
    /// 4xx or no answer: try again at this time (the try counts).
    Retry(DateTime<Utc>),
    /// The server asked us to slow down: try again at this time, the try does not count.
    Throttled(DateTime<Utc>),
    /// Never sent (the run stopped first): back to pending, no attempt row.
    Release,
}

/// The outcome of one claimed delivery.
#[derive(Debug, Clone)]
pub struct Finished {
    pub delivery_id: i64,
    pub mailing_id: i64,
    pub client_id: i64,
    pub owner_id: i64,
    pub email: String,
    /// The claim's lease: the row is updated only while this claim still holds it.
    pub lease_until: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
    pub next: Next,
    /// The server's exact reply (or the connection error).
    pub reply: String,
}

/// The statements that record a batch of tries: an attempt row per try, the delivery's new
/// state, and a suppression for a permanent refusal. Everything a try changes is written
/// by these (the stats counters follow from the attempt rows, by trigger). Multi-row
/// statements: a batch costs three round trips whatever its size. Run them with
/// [`record_in!`] inside the caller's transaction.
pub struct Recording<'a> {
    pub done: &'a [Finished],
    /// Tries that reached the server (or failed to): one attempt row each, in mailing order.
    /// The stats triggers lock each mailing's counters, and a consistent order keeps
    /// concurrent writers (PostgreSQL) from deadlocking; they run last, so those locks are
    /// held only from then to the commit.
    pub tried: Vec<&'a Finished>,
    pub bounced: Vec<&'a Finished>,
    pub update_deliveries: String,
    pub insert_attempts: String,
    pub suppress: String,
}

impl<'a> Recording<'a> {
    pub fn new(db: &Db, done: &'a [Finished]) -> Recording<'a> {
        let mut tried: Vec<&Finished> = done.iter().filter(|f| f.next != Next::Release).collect();
        tried.sort_by_key(|f| f.mailing_id);
        let bounced: Vec<&Finished> = done.iter().filter(|f| f.next == Next::Failed).collect();
        Recording {
            update_deliveries: format!(
                "UPDATE deliveries SET state = v.column2, tries = deliveries.tries + v.column3, \
                   next_try_at = v.column4, lease_until = NULL, last_reply = v.column5, updated_at = v.column6 \
                 FROM (VALUES {}) AS v \
                 WHERE deliveries.id = v.column1 AND deliveries.state = 'sending' AND deliveries.lease_until = v.column7",
                placeholders(db, done.len(), 7)
            ),
            insert_attempts: format!(
                "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) VALUES {}",
                placeholders(db, tried.len(), 5)
            ),
            suppress: format!(
                "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
                 SELECT v.column1, v.column2, 'bounced', v.column3 FROM (VALUES {}) AS v \
                 WHERE TRUE ON CONFLICT (owner_id, email_key) DO NOTHING",
                placeholders(db, bounced.len(), 3)
            ),
            done,
            tried,
            bounced,
        }
    }

    /// The delivery row's new state, how its try count changes, and when to try again.
    pub fn next_state(f: &Finished) -> (&'static str, i32, Option<DateTime<Utc>>) {
        match f.next {
            Next::Sent => ("sent", 0, None),
            Next::Failed => ("failed", 0, None),
            Next::Retry(at) => ("pending", 0, Some(at)),
            Next::Throttled(at) => ("pending", -1, Some(at)),
            Next::Release => ("pending", -1, None),
        }
    }
}

/// Runs a [`Recording`] on an open transaction of either backend (a macro because the
/// transaction types differ): `record_in!(tx, recording)` inside `on_pool!`.
#[macro_export]
macro_rules! record_in {
    ($tx:ident, $rec:expr) => {{
        let rec: &$crate::db::attempts::Recording = $rec;
        if !rec.done.is_empty() {
            let mut q = sqlx::query(&rec.update_deliveries);
            for f in rec.done {
                let (state, adjust, next_try_at) = $crate::db::attempts::Recording::next_state(f);
                let reply =
                    (f.next != $crate::db::attempts::Next::Release).then_some(f.reply.as_str());
                q = q
                    .bind(f.delivery_id)
                    .bind(state)
                    .bind(adjust)
                    .bind(next_try_at)
                    .bind(reply)
                    .bind(f.attempted_at)
                    .bind(f.lease_until);
            }
            q.execute(&mut *$tx).await?;
        }
        if !rec.bounced.is_empty() {
            let mut q = sqlx::query(&rec.suppress);
            for f in &rec.bounced {
                q = q
                    .bind(f.owner_id)
                    .bind($crate::db::accounts::email_key(&f.email))
                    .bind(f.attempted_at);
            }
            q.execute(&mut *$tx).await?;
        }
        if !rec.tried.is_empty() {
            let mut q = sqlx::query(&rec.insert_attempts);
            for f in &rec.tried {
                let status = if f.next == $crate::db::attempts::Next::Sent {
                    "success"
                } else {
                    "failure"
                };
                q = q
                    .bind(f.mailing_id)
                    .bind(f.client_id)
                    .bind(f.attempted_at)
                    .bind(status)
                    .bind(&f.reply);
            }
            q.execute(&mut *$tx).await?;
        }
    }};
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` values.
fn placeholders(db: &Db, rows: usize, cols: usize) -> String {
    let numbered = db.is_postgres();
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            if numbered {
                s.push('$');
                s.push_str(&(r * cols + c + 1).to_string());
            } else {
                s.push('?');
            }
        }
        s.push(')');
    }
    s
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub mailing_id: i64,
    pub client_id: Option<i64>,
    pub email: Option<String>,
    pub attempted_at: DateTime<Utc>,
    pub status: String,
    pub server_response: String,
}

impl Record for Attempt {
    const HEADERS: &'static [&'static str] = &[
        "id",
        "mailing_id",
        "client_id",
        "email",
        "attempted_at",
        "status",
        "server_response",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.mailing_id.to_string(),
            self.client_id.map(|c| c.to_string()).unwrap_or_default(),
            self.email.clone().unwrap_or_default(),
            time(&self.attempted_at),
            self.status.clone(),
            self.server_response.clone(),
        ]
    }
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub mailing: Option<i64>,
    pub status: Option<&'static str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Streams the attempts the scope may see, oldest first, handing each to `each`.
pub async fn for_each(
    db: &Db,
    scope: Scope,
    filter: &Filter,
    mut each: impl FnMut(&Attempt) -> Result<()>,
) -> Result<u64> {
    use futures_util::TryStreamExt;
    let sql = "SELECT a.id, a.mailing_id, a.client_id, c.email, a.attempted_at, a.status, a.server_response \
               FROM attempts a JOIN mailings m ON m.id = a.mailing_id \
               LEFT JOIN clients c ON c.id = a.client_id \
               WHERE ($1 IS NULL OR m.owner_id = $1) AND ($2 IS NULL OR a.mailing_id = $2) \
                 AND ($3 IS NULL OR a.status = $3) AND ($4 IS NULL OR a.attempted_at >= $4) \
                 AND ($5 IS NULL OR a.attempted_at < $5) \
               ORDER BY a.id";
    let mut count = 0;
    on_pool!(db, p => {
        let mut rows = sqlx::query_as::<_, Attempt>(sql)
            .bind(scope.owner()).bind(filter.mailing).bind(filter.status)
            .bind(filter.since).bind(filter.until)
            .fetch(p);
        while let Some(row) = rows.try_next().await? {
            count += 1;
            each(&row)?;
        }
        Ok::<_, crate::error::Error>(())
    })?;
    Ok(count)
}
