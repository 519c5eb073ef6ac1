//! Recording a bounce or complaint against the letter it is about: an attempt row
//! (`bounced` / `complained`, the stats counters follow by trigger), the delivery marked
//! failed for a hard bounce, and the address suppressed for the owner when the report says
//! so. `bounce_reports` makes a second import a no-op.
//!
//! Each message is all or nothing. A batch of reports is written in one transaction by a few
//! set-based statements (a commit or a round trip per report would cap PostgreSQL at its
//! commit rate or network latency: benches/README.md), so a message's rows commit together
//! with the batch or not at all. When the database refuses one of the batch's rows (say a
//! report's mailing was deleted between the lookup and the write), the whole batch rolls
//! back and is written again one message per transaction: the message it refuses is left out
//! whole (`Applied::Refused`), the others are recorded. Any other database error (connection,
//! disk, deadlock) ends the run with nothing of the batch written.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};

use super::Db;
use crate::bounce::report::Kind;
use crate::error::Result;

/// The letter's recipient as the database knows it, when that letter went out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Sent {
    pub mailing_id: i64,
    pub client_id: i64,
    pub owner_id: i64,
    pub email_key: String,
}

/// Of these (mailing, client) pairs, the letters that were sent (or failed after they were
/// sent), in one query: a report about a letter that never left is about no letter of ours.
pub async fn sent(db: &Db, pairs: &[(i64, i64)]) -> Result<HashMap<(i64, i64), Sent>> {
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    let ok = "d.state IN ('sent', 'failed')";
    let rows: Vec<Sent> = match db {
        Db::Sqlite(p) => {
            sqlx::query_as(&format!(
                "SELECT d.mailing_id, d.client_id, m.owner_id, c.email_key FROM deliveries d \
                 JOIN mailings m ON m.id = d.mailing_id \
                 JOIN clients c ON c.id = d.client_id AND c.owner_id = m.owner_id \
                 JOIN json_each($1) j \
                 ON d.mailing_id = j.value ->> 0 AND d.client_id = j.value ->> 1 WHERE {ok}"
            ))
            .bind(serde_json::to_string(pairs)?)
            .fetch_all(p)
            .await?
        }
        Db::Postgres(p) => {
            // One index probe per pair, whatever the plan: after five runs PostgreSQL plans a
            // prepared statement generically, guesses 10 rows for the arrays, and a plain join
            // then scanned the owner's clients once per pair (400 ms per batch of 500 at
            // 10,000 clients). LIMIT 1 keeps the subquery from being flattened into a join.
            sqlx::query_as(&format!(
                "SELECT l.* FROM unnest($1::bigint[], $2::bigint[]) AS j(m, c) \
                 CROSS JOIN LATERAL (SELECT d.mailing_id, d.client_id, m.owner_id, c.email_key \
                   FROM deliveries d JOIN mailings m ON m.id = d.mailing_id \
                   JOIN clients c ON c.id = d.client_id AND c.owner_id = m.owner_id \
                   WHERE d.mailing_id = j.m AND d.client_id = j.c AND {ok} LIMIT 1) l"
            ))
            .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
            .fetch_all(p)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|s| ((s.mailing_id, s.client_id), s))
        .collect())
}

/// One report about one letter.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub digest: &'a str,
    pub recipient: &'a Sent,
    pub kind: Kind,
    pub text: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Recorded {
        suppressed: bool,
    },
    /// This report was imported before: nothing changed.
    Duplicate,
    /// The database refused this message's rows (the reason): nothing of it was written.
    Refused(String),
}

/// Soft bounces of one address within this window that suppress it.
pub const SOFT_LIMIT: i64 = 3;
pub const SOFT_WINDOW_DAYS: i64 = 30;

/// Records reports received at `at`, one result per event, each message wholly or not at
/// all (see the module comment). A report seen before, in an earlier run or earlier in
/// this batch, changes nothing.
pub async fn apply_all(db: &Db, at: DateTime<Utc>, events: &[Event<'_>]) -> Result<Vec<Applied>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let first = match write(db, at, events).await {
        Ok(out) => return Ok(out),
        Err(e) => e,
    };
    let Some(why) = refused(&first) else {
        return Err(first.into());
    };
    if events.len() == 1 {
        return Ok(vec![Applied::Refused(why)]);
    }
    // One transaction per message: only the refused one is left out. Rare, so the commit
    // per message costs nothing in the common case.
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        match write(db, at, std::slice::from_ref(e)).await {
            Ok(mut one) => out.push(one.remove(0)),
            Err(err) => match refused(&err) {
                Some(why) => out.push(Applied::Refused(why)),
                None => return Err(err.into()),
            },
        }
    }
    Ok(out)
}

/// The reason, when the database refused the rows themselves (a constraint, a value it
/// cannot store) rather than failed (connection, disk, deadlock, timeout).
fn refused(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    let rows = match d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation).
        Some(pg) => pg.code().starts_with("22") || pg.code().starts_with("23"),
        // SQLITE_CONSTRAINT, with any extended code in the high bits.
        None => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 19),
    };
    rows.then(|| d.message().to_string())
}

/// The events in one transaction.
async fn write(db: &Db, at: DateTime<Utc>, events: &[Event<'_>]) -> sqlx::Result<Vec<Applied>> {
    match db {
        Db::Sqlite(p) => {
            // IMMEDIATE: wait for the write lock before the first read. A transaction that
            // read first gets SQLITE_BUSY at once, with no wait, if another writer committed.
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            let out = record(&mut *tx, at, events).await?;
            tx.commit().await?;
            Ok(out)
        }
        Db::Postgres(p) => {
            let mut tx = p.begin().await?;
            let out = record(&mut *tx, at, events).await?;
            tx.commit().await?;
            Ok(out)
        }
    }
}

/// What the events do, decided here once for both backends; `Writes` does it in a few
/// statements. In order, as if one report after the other: the first report of a digest
/// counts, an address is suppressed by the first report that warrants it (and its reason),
/// a soft bounce counts the soft bounces before it.
async fn record<C: Writes>(
    c: &mut C,
    at: DateTime<Utc>,
    events: &[Event<'_>],
) -> sqlx::Result<Vec<Applied>> {
    let mut digests = HashSet::new();
    let first: Vec<bool> = events.iter().map(|e| digests.insert(e.digest)).collect();

    // Soft bounces already recorded, per address that has one in this batch.
    let mut soft: Vec<(i64, &str)> = Vec::new();
    for (e, _) in events
        .iter()
        .zip(&first)
        .filter(|(e, f)| **f && e.kind == Kind::Soft)
    {
        if !soft.contains(&address(e)) {
            soft.push(address(e));
        }
    }
    let mut soft_seen: HashMap<(i64, &str), i64> = HashMap::new();
    if !soft.is_empty() {
        let since = at - Duration::days(SOFT_WINDOW_DAYS);
        let counts = c.soft_counts(&soft, since).await?;
        soft_seen.extend(soft.into_iter().zip(counts));
    }

    let reports: Vec<&Event> = events
        .iter()
        .zip(&first)
        .filter(|(_, f)| **f)
        .map(|(e, _)| e)
        .collect();
    let mut new = c.insert_reports(&reports, at).await?.into_iter();
    let fresh: Vec<bool> = first
        .iter()
        .map(|f| *f && new.next() == Some(true))
        .collect();

    let mut failed: Vec<(i64, i64, &str)> = Vec::new();
    let mut letters = HashSet::new();
    let mut suppress: Vec<(i64, &str, &'static str)> = Vec::new();
    let mut suppressed_by: HashMap<(i64, &str), usize> = HashMap::new();
    let mut attempts: Vec<AttemptRow> = Vec::new();
    for (i, e) in events.iter().enumerate().filter(|(i, _)| fresh[*i]) {
        let (m, cl) = (e.recipient.mailing_id, e.recipient.client_id);
        let status = if e.kind == Kind::Complaint {
            "complained"
        } else {
            "bounced"
        };
        attempts.push((m, cl, at, status, e.text));
        let reason = match e.kind {
            Kind::Hard => {
                // Only the first report of a letter finds it still `sent`.
                if letters.insert((m, cl)) {
                    failed.push((m, cl, e.text));
                }
                Some("bounced")
            }
            Kind::Soft => {
                let n = soft_seen.entry(address(e)).or_insert(0);
                *n += 1;
                (*n >= SOFT_LIMIT).then_some("bounced")
            }
            Kind::Complaint => Some("complained"),
        };
        if let Some(reason) = reason
            && let Entry::Vacant(v) = suppressed_by.entry(address(e))
        {
            v.insert(i);
            suppress.push((address(e).0, address(e).1, reason));
        }
    }
    c.fail_deliveries(&failed, at).await?;
    let newly = c.suppress(&suppress, at).await?;
    let mut suppressed = vec![false; events.len()];
    for (s, _) in suppress.iter().zip(&newly).filter(|(_, n)| **n) {
        suppressed[suppressed_by[&(s.0, s.1)]] = true;
    }
    // All the batch's attempts in one statement: PostgreSQL's stats trigger runs per
    // statement (migration 0006), once for the batch instead of once per report.
    c.insert_attempts(&attempts).await?;

    Ok((0..events.len())
        .map(|i| {
            if fresh[i] {
                Applied::Recorded {
                    suppressed: suppressed[i],
                }
            } else {
                Applied::Duplicate
            }
        })
        .collect())
}

/// (owner, address) a report is about.
fn address<'a>(e: &Event<'a>) -> (i64, &'a str) {
    (e.recipient.owner_id, e.recipient.email_key.as_str())
}

/// (mailing, client, time, status, server response) of a report.
type AttemptRow<'a> = (i64, i64, DateTime<Utc>, &'static str, &'a str);

/// The statements of `record`, per backend. SQLite runs in this process, so a statement per
/// row costs no round trip; PostgreSQL gets one statement per step for the whole batch
/// (arrays of the rows' columns), a handful of round trips per batch.
trait Writes {
    /// Soft bounces recorded for each address since `since` (one count per address).
    async fn soft_counts(
        &mut self,
        addresses: &[(i64, &str)],
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<i64>>;
    /// Inserts the reports; for each, whether it is new (false: imported before).
    async fn insert_reports(
        &mut self,
        reports: &[&Event<'_>],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Vec<bool>>;
    /// Marks these letters (mailing, client, report's words) failed, if still `sent`.
    async fn fail_deliveries(
        &mut self,
        rows: &[(i64, i64, &str)],
        at: DateTime<Utc>,
    ) -> sqlx::Result<()>;
    /// Suppresses (owner, address, reason); for each, whether it is newly suppressed.
    async fn suppress(
        &mut self,
        rows: &[(i64, &str, &'static str)],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Vec<bool>>;
    async fn insert_attempts(&mut self, rows: &[AttemptRow<'_>]) -> sqlx::Result<()>;
}

const SOFT_COUNT: &str = "SELECT COUNT(*) FROM bounce_reports \
     WHERE owner_id = $1 AND email_key = $2 AND kind = 'soft' AND received_at >= $3";

impl Writes for sqlx::SqliteConnection {
    async fn soft_counts(
        &mut self,
        addresses: &[(i64, &str)],
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<i64>> {
        let mut out = Vec::with_capacity(addresses.len());
        for (owner, key) in addresses {
            let n: i64 = sqlx::query_scalar(SOFT_COUNT)
                .bind(owner)
                .bind(key)
                .bind(since)
                .fetch_one(&mut *self)
                .await?;
            out.push(n);
        }
        Ok(out)
    }

    async fn insert_reports(
        &mut self,
        reports: &[&Event<'_>],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Vec<bool>> {
        let mut out = Vec::with_capacity(reports.len());
        for e in reports {
            let n = sqlx::query(
                "INSERT INTO bounce_reports (digest, owner_id, email_key, mailing_id, client_id, kind, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest) DO NOTHING",
            )
            .bind(e.digest)
            .bind(e.recipient.owner_id)
            .bind(&e.recipient.email_key)
            .bind(e.recipient.mailing_id)
            .bind(e.recipient.client_id)
            .bind(e.kind.as_str())
            .bind(at)
            .execute(&mut *self)
            .await?
            .rows_affected();
            out.push(n > 0);
        }
        Ok(out)
    }

    async fn fail_deliveries(
        &mut self,
        rows: &[(i64, i64, &str)],
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        for (m, c, text) in rows {
            sqlx::query(
                "UPDATE deliveries SET state = 'failed', last_reply = $3, updated_at = $4 \
                 WHERE mailing_id = $1 AND client_id = $2 AND state = 'sent'",
            )
            .bind(m)
            .bind(c)
            .bind(text)
            .bind(at)
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }

    async fn suppress(
        &mut self,
        rows: &[(i64, &str, &'static str)],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Vec<bool>> {
        let mut out = Vec::with_capacity(rows.len());
        for (owner, key, reason) in rows {
            let n = sqlx::query(
                "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (owner_id, email_key) DO NOTHING",
            )
            .bind(owner)
            .bind(key)
            .bind(reason)
            .bind(at)
            .execute(&mut *self)
            .await?
            .rows_affected();
            out.push(n > 0);
        }
        Ok(out)
    }

    async fn insert_attempts(&mut self, rows: &[AttemptRow<'_>]) -> sqlx::Result<()> {
        use super::attempts::sqlite_time;
        if rows.is_empty() {
            return Ok(());
        }
        let json: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!([r.0, r.1, sqlite_time(&r.2), r.3, r.4]))
            .collect();
        sqlx::query(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
             FROM json_each($1) ORDER BY key",
        )
        .bind(serde_json::Value::Array(json).to_string())
        .execute(self)
        .await?;
        Ok(())
    }
}

impl Writes for sqlx::PgConnection {
    async fn soft_counts(
        &mut self,
        addresses: &[(i64, &str)],
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<i64>> {
        // A subquery per address (its index), in the addresses' order.
        sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM bounce_reports b \
                      WHERE b.owner_id = a.o AND b.email_key = a.k AND b.kind = 'soft' \
                        AND b.received_at >= $3) \
             FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS a(o, k, i) ORDER BY a.i",
        )
        .bind(addresses.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(addresses.iter().map(|a| a.1).collect::<Vec<_>>())
        .bind(since)
        .fetch_all(self)
        .await
    }

    async fn insert_reports(
        &mut self,
        reports: &[&Event<'_>],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Vec<bool>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let new: HashSet<String> = sqlx::query_scalar(
            "INSERT INTO bounce_reports (digest, owner_id, email_key, mailing_id, client_id, kind, received_at) \
             SELECT d, o, k, m, c, kind, $7 \
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) \
               AS r(d, o, k, m, c, kind) \
             ON CONFLICT (digest) DO NOTHING RETURNING digest",
        )
        .bind(reports.iter().map(|e| e.digest).collect::<Vec<_>>())
        .bind(reports.iter().map(|e| e.recipient.owner_id).collect::<Vec<_>>())
        .bind(reports.iter().map(|e| e.recipient.email_key.as_str()).collect::<Vec<_>>())
        .bind(reports.iter().map(|e| e.recipient.mailing_id).collect::<Vec<_>>())
        .bind(reports.iter().map(|e| e.recipient.client_id).collect::<Vec<_>>())
        .bind(reports.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .bind(at)
        .fetch_all(self)
        .await?
        .into_iter()
        .collect();
        Ok(reports.iter().map(|e| new.contains(e.digest)).collect())
    }

    async fn fail_deliveries(
        &mut self,
        rows: &[(i64, i64, &str)],
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // In key order, as two imports at once then lock rows in the same order.
        let mut rows = rows.to_vec();
        rows.sort_unstable();
        sqlx::query(
            "UPDATE deliveries d SET state = 'failed', last_reply = v.t, updated_at = $4 \
             FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS v(m, c, t) \
             WHERE d.mailing_id = v.m AND d.client_id = v.c AND d.state = 'sent'",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(at)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn suppress(
        &mut self,
        rows: &[(i64, &str, &'static str)],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Vec<bool>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        let new: HashSet<(i64, String)> = sqlx::query_as(
            "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
             SELECT o, k, r, $4 FROM unnest($1::bigint[], $2::text[], $3::text[]) AS s(o, k, r) \
             ON CONFLICT (owner_id, email_key) DO NOTHING RETURNING owner_id, email_key",
        )
        .bind(sorted.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(sorted.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(sorted.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(at)
        .fetch_all(self)
        .await?
        .into_iter()
        .collect();
        Ok(rows
            .iter()
            .map(|r| new.contains(&(r.0, r.1.to_string())))
            .collect())
    }

    async fn insert_attempts(&mut self, rows: &[AttemptRow<'_>]) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[])",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
        .execute(self)
        .await?;
        Ok(())
    }
}
