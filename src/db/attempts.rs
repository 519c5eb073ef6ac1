//! Send attempts (one row per try) and the recording of a try's outcome.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Db;
use super::accounts::email_key;
use crate::auth::policy::Scope;
use crate::error::Result;
use crate::on_pool;
use crate::output::{Record, time};

/// What a finished try does to its delivery row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// 2xx: delivered, final.
    Sent,
    /// 5xx: refused for good, final; the address is suppressed for the owner (refused).
    Failed,
    /// 4xx or no answer: try again at this time (the try counts).
    Retry(DateTime<Utc>),
    /// The server asked us to slow down: try again at this time, the try does not count.
    Throttled(DateTime<Utc>),
    /// Never sent (the run stopped first): back to pending, no attempt row.
    Release,
    /// Never sent: the owner may no longer write to the address (it unsubscribed or was
    /// refused after this run began). Final, no attempt row.
    Suppressed,
}

/// The outcome of one claimed delivery.
#[derive(Debug, Clone)]
pub struct Finished {
    pub delivery_id: i64,
    pub mailing_id: i64,
    pub client_id: i64,
    pub owner_id: i64,
    pub email: String,
    /// The recipient's name as the letter was addressed (empty: look it up).
    pub full_name: String,
    /// The claim's lease: the row is updated only while this claim still holds it.
    pub lease_until: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
    pub next: Next,
    /// The server's exact reply (or the connection error).
    pub reply: String,
}

impl Finished {
    /// Whether the letter was tried (and so gets an attempt row).
    pub fn tried(&self) -> bool {
        !matches!(self.next, Next::Release | Next::Suppressed)
    }
}

/// Records a batch of tries inside the caller's transaction: the delivery's new state, a
/// suppression for a permanent refusal, and an attempt row per try (the stats counters
/// follow from those, by trigger). Each statement takes the whole batch as one value (a JSON
/// array on SQLite, arrays on PostgreSQL), so its text never changes: it is prepared once per
/// connection, and a batch costs three round trips whatever its size.
pub(crate) trait RecordTries {
    async fn record_tries(&mut self, done: &[Finished]) -> sqlx::Result<()>;
}

/// The delivery row's new state, how its try count changes, and when to try again.
fn next_state(f: &Finished) -> (&'static str, i32, Option<DateTime<Utc>>) {
    match f.next {
        Next::Sent => ("sent", 0, None),
        Next::Failed => ("failed", 0, None),
        Next::Retry(at) => ("pending", 0, Some(at)),
        Next::Throttled(at) => ("pending", -1, Some(at)),
        Next::Release => ("pending", -1, None),
        Next::Suppressed => ("suppressed", -1, None),
    }
}

/// Tries that reached the server (or failed to): one attempt row each, in mailing order.
/// On PostgreSQL the stats trigger locks each mailing's counters; the attempts go in last,
/// so those locks are held only from then to the commit.
fn tried(done: &[Finished]) -> Vec<&Finished> {
    let mut tried: Vec<&Finished> = done.iter().filter(|f| f.tried()).collect();
    tried.sort_by_key(|f| f.mailing_id);
    tried
}

/// The attempt's status: a final refusal (`failure`) is told from a try that will be made
/// again (`deferred`: a 4xx, a throttling reply or no answer).
fn status(f: &Finished) -> &'static str {
    match f.next {
        Next::Sent => "success",
        Next::Failed => "failure",
        Next::Retry(_) | Next::Throttled(_) | Next::Release | Next::Suppressed => "deferred",
    }
}

/// The reply kept on the delivery row (none for a letter never sent).
fn reply(f: &Finished) -> Option<&str> {
    (f.next != Next::Release).then_some(f.reply.as_str())
}

/// A time as sqlx writes it into SQLite, so a lease compares equal to the one stored.
pub(crate) fn sqlite_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

impl RecordTries for sqlx::SqliteConnection {
    async fn record_tries(&mut self, done: &[Finished]) -> sqlx::Result<()> {
        use serde_json::json;
        if done.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = done
            .iter()
            .map(|f| {
                let (state, adjust, next_try_at) = next_state(f);
                json!([
                    f.delivery_id,
                    state,
                    adjust,
                    next_try_at.as_ref().map(sqlite_time),
                    reply(f),
                    sqlite_time(&f.attempted_at),
                    sqlite_time(&f.lease_until)
                ])
            })
            .collect();
        sqlx::query(
            "UPDATE deliveries SET state = v.value ->> 1, tries = deliveries.tries + (v.value ->> 2), \
               next_try_at = v.value ->> 3, lease_until = NULL, last_reply = v.value ->> 4, \
               updated_at = v.value ->> 5 \
             FROM json_each($1) AS v \
             WHERE deliveries.id = v.value ->> 0 AND deliveries.state = 'sending' \
               AND deliveries.lease_until = v.value ->> 6",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut *self)
        .await?;
        let bounced: Vec<_> = done
            .iter()
            .filter(|f| f.next == Next::Failed)
            .map(|f| {
                json!([
                    f.owner_id,
                    email_key(&f.email),
                    sqlite_time(&f.attempted_at)
                ])
            })
            .collect();
        if !bounced.is_empty() {
            sqlx::query(
                "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
                 SELECT value ->> 0, value ->> 1, 'refused', value ->> 2 FROM json_each($1) \
                 WHERE TRUE ON CONFLICT (owner_id, email_key) DO NOTHING",
            )
            .bind(serde_json::Value::Array(bounced).to_string())
            .execute(&mut *self)
            .await?;
        }
        let attempts: Vec<_> = tried(done)
            .into_iter()
            .map(|f| {
                json!([
                    f.mailing_id,
                    f.client_id,
                    sqlite_time(&f.attempted_at),
                    status(f),
                    f.reply,
                    f.email,
                    f.full_name
                ])
            })
            .collect();
        if attempts.is_empty() {
            return Ok(());
        }
        // The stats counters once per batch rather than by the row triggers (migration 0007).
        sqlx::query(
            "INSERT INTO stats_batching (id, after) SELECT 1, COALESCE(MAX(id), 0) FROM attempts",
        )
        .execute(&mut *self)
        .await?;
        sqlx::query(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response, email, full_name) \
             SELECT v.value ->> 0, v.value ->> 1, v.value ->> 2, v.value ->> 3, v.value ->> 4, v.value ->> 5, \
               coalesce(nullif(v.value ->> 6, ''), (SELECT c.full_name FROM clients c WHERE c.id = v.value ->> 1)) \
             FROM json_each($1) AS v ORDER BY v.key",
        )
        .bind(serde_json::Value::Array(attempts).to_string())
        .execute(&mut *self)
        .await?;
        sqlx::raw_sql(SQLITE_BATCH_STATS)
            .execute(&mut *self)
            .await?;
        Ok(())
    }
}

/// What the row triggers of 0005 do per attempt, once for the batch (the attempts with ids
/// above `stats_batching.after`), in one round trip; it ends by taking the batch marker out.
/// `attempts a NOT INDEXED`: the batch is a rowid range; left to itself SQLite reads it
/// through `attempts_mailing` to save the GROUP BY's sort, which walks every attempt of the
/// mailing on every batch and made the cost per letter grow with the mailing (issue 17).
const SQLITE_BATCH_STATS: &str = "
CREATE TEMP TABLE IF NOT EXISTS batch_reached (mailing_id INTEGER, client_id INTEGER, reached_at TEXT);
DELETE FROM temp.batch_reached;
-- First successes in this batch of recipients not reached before.
INSERT INTO temp.batch_reached
SELECT a.mailing_id, a.client_id, min(a.attempted_at) FROM attempts a NOT INDEXED
 WHERE a.id > (SELECT after FROM stats_batching) AND a.status = 'success' AND a.client_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM stats_reached r WHERE r.mailing_id = a.mailing_id AND r.client_id = a.client_id)
 GROUP BY a.mailing_id, a.client_id;
INSERT INTO stats_reached (mailing_id, client_id, reached_at) SELECT * FROM temp.batch_reached WHERE true;
INSERT INTO mailing_stats (mailing_id, attempted, succeeded, failed, deferred, recipients_reached, first_attempt_at, last_attempt_at)
SELECT mailing_id, count(*), sum(status = 'success'), sum(status = 'failure'), sum(status = 'deferred'),
       (SELECT count(*) FROM temp.batch_reached b WHERE b.mailing_id = a.mailing_id),
       min(attempted_at), max(attempted_at)
  FROM attempts a NOT INDEXED WHERE id > (SELECT after FROM stats_batching) GROUP BY mailing_id
ON CONFLICT (mailing_id) DO UPDATE SET
    attempted = attempted + excluded.attempted,
    succeeded = succeeded + excluded.succeeded,
    failed = failed + excluded.failed,
    deferred = deferred + excluded.deferred,
    recipients_reached = recipients_reached + excluded.recipients_reached,
    first_attempt_at = min(first_attempt_at, excluded.first_attempt_at),
    last_attempt_at = max(last_attempt_at, excluded.last_attempt_at);
INSERT INTO mailing_day_stats (mailing_id, day, attempted, succeeded, failed, deferred, recipients_reached, first_attempt_at, last_attempt_at)
SELECT mailing_id, substr(attempted_at, 1, 10) AS d, count(*), sum(status = 'success'), sum(status = 'failure'), sum(status = 'deferred'),
       (SELECT count(*) FROM temp.batch_reached b
         WHERE b.mailing_id = a.mailing_id AND substr(b.reached_at, 1, 10) = substr(a.attempted_at, 1, 10)),
       min(attempted_at), max(attempted_at)
  FROM attempts a NOT INDEXED WHERE id > (SELECT after FROM stats_batching) GROUP BY mailing_id, d
ON CONFLICT (mailing_id, day) DO UPDATE SET
    attempted = attempted + excluded.attempted,
    succeeded = succeeded + excluded.succeeded,
    failed = failed + excluded.failed,
    deferred = deferred + excluded.deferred,
    recipients_reached = recipients_reached + excluded.recipients_reached,
    first_attempt_at = min(first_attempt_at, excluded.first_attempt_at),
    last_attempt_at = max(last_attempt_at, excluded.last_attempt_at);
INSERT INTO stats_versions (owner_id, version)
SELECT DISTINCT owner_id, 1 FROM mailings
 WHERE id IN (SELECT mailing_id FROM attempts WHERE id > (SELECT after FROM stats_batching))
ON CONFLICT (owner_id) DO UPDATE SET version = version + 1;
DELETE FROM stats_batching;
";

/// `$1`-`$7`: the outcomes' delivery ids, next states, tries adjustments, retry times,
/// replies, times and the leases they were claimed under. By primary key (`id = ANY`): a
/// `state = 'sending'` test would tempt the planner into the partial index of claimed rows,
/// whose dead entries pile up during a run. The lease alone says the claim still holds: only
/// a claim sets it, and every other change of state clears it. (The turn turns sequential
/// scans off: a plan cached while the table was nearly empty must not scan it once it is
/// large; see `deliveries::Turns::turn`.)
const PG_RECORD_OUTCOMES: &str = "UPDATE deliveries SET state = v.state, tries = deliveries.tries + v.adjust, \
       next_try_at = v.next_try_at, lease_until = NULL, last_reply = v.reply, updated_at = v.at \
     FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::text[], \
                 $6::timestamptz[], $7::timestamptz[]) \
          AS v(id, state, adjust, next_try_at, reply, at, lease) \
     WHERE deliveries.id = ANY($1) AND deliveries.id = v.id AND deliveries.lease_until = v.lease";

/// The attempts, their parameters numbered from `$first` (mailing, client, time, status,
/// reply, address, name).
fn pg_insert_attempts(first: usize) -> String {
    let p: Vec<String> = (first..first + 7).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response, email, full_name) \
         SELECT v.mailing_id, v.client_id, v.attempted_at, v.status, v.reply, v.email, \
           coalesce(nullif(v.full_name, ''), (SELECT c.full_name FROM clients c WHERE c.id = v.client_id)) \
         FROM unnest({}::bigint[], {}::bigint[], {}::timestamptz[], {}::text[], {}::text[], {}::text[], {}::text[]) \
              WITH ORDINALITY AS v(mailing_id, client_id, attempted_at, status, reply, email, full_name, n) \
         ORDER BY v.n",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    )
}

impl RecordTries for sqlx::PgConnection {
    /// The outcomes and the attempts go in one statement (a round trip less per turn), the
    /// attempts last: on PostgreSQL the stats trigger locks each mailing's counters, held
    /// from then to the commit.
    async fn record_tries(&mut self, done: &[Finished]) -> sqlx::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let bounced: Vec<&Finished> = done.iter().filter(|f| f.next == Next::Failed).collect();
        if !bounced.is_empty() {
            sqlx::query(
                "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
                 SELECT owner_id, email_key, 'refused', at \
                 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS v(owner_id, email_key, at) \
                 ON CONFLICT (owner_id, email_key) DO NOTHING",
            )
            .bind(bounced.iter().map(|f| f.owner_id).collect::<Vec<_>>())
            .bind(bounced.iter().map(|f| email_key(&f.email)).collect::<Vec<_>>())
            .bind(bounced.iter().map(|f| f.attempted_at).collect::<Vec<_>>())
            .execute(&mut *self)
            .await?;
        }
        let tried = tried(done);
        let sql = if tried.is_empty() {
            PG_RECORD_OUTCOMES.to_string()
        } else {
            format!(
                "WITH outcomes AS ({PG_RECORD_OUTCOMES}) {}",
                pg_insert_attempts(8)
            )
        };
        let states: Vec<_> = done.iter().map(next_state).collect();
        let mut query = sqlx::query(&sql)
            .bind(done.iter().map(|f| f.delivery_id).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.0).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.1).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.2).collect::<Vec<_>>())
            .bind(done.iter().map(reply).collect::<Vec<_>>())
            .bind(done.iter().map(|f| f.attempted_at).collect::<Vec<_>>())
            .bind(done.iter().map(|f| f.lease_until).collect::<Vec<_>>());
        if !tried.is_empty() {
            query = query
                .bind(tried.iter().map(|f| f.mailing_id).collect::<Vec<_>>())
                .bind(tried.iter().map(|f| f.client_id).collect::<Vec<_>>())
                .bind(tried.iter().map(|f| f.attempted_at).collect::<Vec<_>>())
                .bind(tried.iter().map(|f| status(f)).collect::<Vec<_>>())
                .bind(tried.iter().map(|f| f.reply.as_str()).collect::<Vec<_>>())
                .bind(tried.iter().map(|f| f.email.as_str()).collect::<Vec<_>>())
                .bind(
                    tried
                        .iter()
                        .map(|f| f.full_name.as_str())
                        .collect::<Vec<_>>(),
                );
        }
        query.execute(&mut *self).await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub mailing_id: i64,
    pub client_id: Option<i64>,
    /// The address the letter went to (kept when the client is deleted).
    pub email: Option<String>,
    /// The recipient's name when the letter went out (kept when the client is deleted).
    pub full_name: Option<String>,
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
        "full_name",
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
            self.full_name.clone().unwrap_or_default(),
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
    // Rows recorded before migration 0015 may lack the stored address: the client's, then.
    let sql = "SELECT a.id, a.mailing_id, a.client_id, COALESCE(a.email, c.email) AS email, \
               COALESCE(a.full_name, c.full_name) AS full_name, a.attempted_at, a.status, a.server_response \
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
