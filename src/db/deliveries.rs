//! Per-recipient delivery rows: the sender's source of truth.
//!
//! A row is `pending` until a worker claims it (`sending`, with a lease), then `sent`,
//! `failed` (permanent), back to `pending` with a `next_try_at` (temporary), or
//! `suppressed` (the owner must not write to that address). A `sending` row whose lease has
//! run out belongs to a worker that died; any worker may claim it again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres, Sqlite};

use super::Db;
use super::attempts::{Finished, RecordTries, sqlite_time};
use crate::auth::policy::Scope;
use crate::error::{Error, Result};
use crate::on_pool;

/// A mailing with what the sender needs to write its letters.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Target {
    pub id: i64,
    pub owner_id: i64,
    pub status: String,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub disabled: bool,
    pub blocked: bool,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
}

const TARGET: &str = "SELECT m.id, m.owner_id, m.status, m.start_at, m.end_at, m.disabled, a.blocked, \
       msg.subject, msg.body, msg.html \
     FROM mailings m JOIN messages msg ON msg.id = m.message_id JOIN accounts a ON a.id = m.owner_id";

/// Due mailings: inside their window, not disabled, owner not blocked. Completed ones are
/// included, so recipients added after completion still get their letter.
pub async fn due(db: &Db, now: DateTime<Utc>) -> Result<Vec<Target>> {
    let sql = format!(
        "{TARGET} WHERE m.start_at <= $1 AND m.end_at >= $1 AND NOT m.disabled AND NOT a.blocked \
         ORDER BY m.id"
    );
    Ok(on_pool!(db, p => sqlx::query_as::<_, Target>(&sql).bind(now).fetch_all(p).await)?)
}

/// One mailing the actor may send (`mailings send ID`).
pub async fn target(db: &Db, scope: Scope, id: i64) -> Result<Target> {
    let sql = format!("{TARGET} WHERE m.id = $1 AND ($2 IS NULL OR m.owner_id = $2)");
    on_pool!(db, p => sqlx::query_as::<_, Target>(&sql)
        .bind(id).bind(scope.owner()).fetch_optional(p).await)?
    .ok_or_else(|| Error::not_found("mailing", id))
}

/// Mailings whose window has passed are completed, whatever is left.
pub async fn complete_expired(db: &Db, now: DateTime<Utc>) -> Result<u64> {
    let sql =
        "UPDATE mailings SET status = 'completed' WHERE end_at < $1 AND status <> 'completed'";
    Ok(on_pool!(db, p => sqlx::query(sql).bind(now).execute(p).await.map(|r| r.rows_affected()))?)
}

/// The reply kept on a delivery that was set aside because the owner may no longer write to
/// the address.
pub const SUPPRESSED_REPLY: &str = "suppressed: unsubscribed or refused before";

const SUPPRESSED: &str = "EXISTS (SELECT 1 FROM clients c JOIN suppressions s \
       ON s.owner_id = c.owner_id AND s.email_key = c.email_key WHERE c.id = deliveries.client_id)";

/// Gets a mailing ready for this run: suppressed addresses among its rows set aside, status
/// `active` if any row is left to send. Returns how many rows were set aside as suppressed.
/// The rows themselves come from [`materialise`] (a recipient with no row yet has none to set
/// aside; the claim checks its address again anyway).
pub async fn prepare(db: &Db, mailing_id: i64, now: DateTime<Utc>) -> Result<u64> {
    let suppress = format!(
        "UPDATE deliveries SET state = 'suppressed', lease_until = NULL, \
           last_reply = '{SUPPRESSED_REPLY}', updated_at = $2 \
         WHERE mailing_id = $1 AND (state = 'pending' OR (state = 'sending' AND lease_until < $2)) \
           AND {SUPPRESSED}"
    );
    let activate = "UPDATE mailings SET status = 'active' WHERE id = $1 AND status <> 'active' \
         AND EXISTS (SELECT 1 FROM deliveries WHERE mailing_id = $1 AND state IN ('pending', 'sending'))";
    let suppressed = on_pool!(db, p => {
        let n = sqlx::query(&suppress).bind(mailing_id).bind(now).execute(p).await?.rows_affected();
        sqlx::query(activate).bind(mailing_id).execute(p).await?;
        Ok::<_, sqlx::Error>(n)
    })?;
    Ok(suppressed)
}

/// The advisory lock that making delivery rows takes shared and deleting clients or mailings
/// takes exclusive (PostgreSQL, migration 0009).
pub const DELIVERY_ROWS_LOCK: i64 = 0x6d61_696c_6374_6c01;

/// PostgreSQL: the first key of the per-mailing advisory lock a claim holds while it makes
/// that mailing's next rows (the second key is the mailing id), so two runs never pick the
/// same recipients. The two-key form is a key space of its own.
const MAKING_ROWS_LOCK: i32 = 0x6d61_6b65;

/// SQLite: makes the delivery rows of a mailing's recipients that have none yet (recipients
/// added later get theirs on a later run), all in one statement before the run sends; it has
/// a single writer anyway. On PostgreSQL the claims make the rows (see [`turn`]).
pub async fn materialise(db: &Db, mailing_id: i64, now: DateTime<Utc>) -> Result<()> {
    let all = "INSERT INTO deliveries (mailing_id, client_id, state, tries, updated_at) \
         SELECT mailing_id, client_id, 'pending', 0, $2 FROM mailing_clients WHERE mailing_id = $1 \
         ON CONFLICT (mailing_id, client_id) DO NOTHING";
    on_pool!(db, p => sqlx::query(all).bind(mailing_id).bind(now).execute(p).await.map(drop))?;
    Ok(())
}

/// `completed` once every recipient has a final outcome (sent, failed, suppressed).
pub async fn complete_if_done(db: &Db, mailing_id: i64) -> Result<bool> {
    let sql = "UPDATE mailings SET status = 'completed' WHERE id = $1 AND status <> 'completed' \
         AND NOT EXISTS (SELECT 1 FROM mailing_clients mc LEFT JOIN deliveries d \
             ON d.mailing_id = mc.mailing_id AND d.client_id = mc.client_id \
           WHERE mc.mailing_id = $1 AND (d.id IS NULL OR d.state IN ('pending', 'sending')))";
    Ok(
        on_pool!(db, p => sqlx::query(sql).bind(mailing_id).execute(p).await.map(|r| r.rows_affected()))?
            > 0,
    )
}

fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

const CLAIMABLE: &str = "((state = 'pending' AND (next_try_at IS NULL OR next_try_at <= $1)) \
       OR (state = 'sending' AND lease_until < $1))";

/// How many letters could go out now (for the progress bar and `--dry-run`). Recipients
/// without a row yet count too.
pub async fn claimable(db: &Db, mailing_ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
    if mailing_ids.is_empty() {
        return Ok(0);
    }
    let ids = id_list(mailing_ids);
    let sql = format!(
        "SELECT \
           (SELECT COUNT(*) FROM deliveries WHERE mailing_id IN ({ids}) AND {CLAIMABLE} AND NOT {SUPPRESSED}) + \
           (SELECT COUNT(*) FROM mailing_clients mc WHERE mc.mailing_id IN ({ids}) AND NOT EXISTS \
              (SELECT 1 FROM deliveries d WHERE d.mailing_id = mc.mailing_id AND d.client_id = mc.client_id))"
    );
    let n: i64 = on_pool!(db, p => sqlx::query_scalar(&sql).bind(now).fetch_one(p).await)?;
    Ok(n.max(0) as u64)
}

/// A delivery claimed by this worker, with what its letter needs.
/// (On SQLite read from a JSON array of the fields in this order.)
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Claimed {
    pub id: i64,
    pub mailing_id: i64,
    pub client_id: i64,
    pub tries: i32,
    pub email: String,
    pub full_name: String,
    /// Custom fields, as stored (a JSON object), for placeholders.
    pub fields: String,
    /// The owner may no longer write to this address: record it as suppressed, don't send.
    pub suppressed: bool,
}

/// What to claim in a [`turn`]: up to `n` deliveries of these mailings that are due now
/// (pending and due, or `sending` with a lapsed lease), marked `sending` until `lease_until`
/// (which also serves as the claim's token: results are recorded only while it still holds).
pub struct Claim<'a> {
    pub mailing_ids: &'a [i64],
    pub n: usize,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// Also look for lapsed leases (a crashed worker's rows) and retries whose time has
    /// come, not only for rows never tried.
    pub sweep: bool,
    /// PostgreSQL: per mailing, the last recipient (client id) this run has looked at when
    /// making rows; the next rows are made after it (see [`Taken::made_through`]).
    pub made_through: &'a HashMap<i64, i64>,
}

/// What a turn claimed, and the mailings in which it found nothing left to claim.
#[derive(Default)]
pub struct Taken {
    pub rows: Vec<Claimed>,
    pub drained: Vec<i64>,
    /// PostgreSQL: how far each mailing's recipients have been looked at for rows to make
    /// in this turn (carry into the next [`Claim::made_through`]).
    pub made_through: Vec<(i64, i64)>,
}

/// Which rows a claim statement takes. Each kind has its own partial index (migration 0008),
/// so a claim costs the same on the last recipient as on the first.
#[derive(Clone, Copy)]
enum Due {
    /// `sending` with a lapsed lease: a dead worker's rows (few: its letters in flight).
    Lapsed,
    /// `pending` with a retry time that has come.
    Retry,
    /// `pending` and never tried.
    Fresh,
}

/// The turns of one run (see [`Turns::turn`]), on a connection held from one turn to the
/// next: a connection taken from the pool for every turn costs two round trips more (sqlx
/// pings it when it is taken and again when it is given back).
pub struct Turns {
    db: Db,
    held: Option<(Held, Instant)>,
}

/// A connection taken from the pool, and kept.
enum Held {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// A connection held longer than this since its last turn is pinged before the next (the
/// server may have restarted meanwhile); back-to-back turns skip that round trip.
const HELD_UNTESTED: Duration = Duration::from_secs(1);

impl Turns {
    pub fn new(db: &Db) -> Turns {
        Turns {
            db: db.clone(),
            held: None,
        }
    }

    /// One turn of the sender's database loop, in one transaction: claims new deliveries and
    /// records the outcomes of finished ones. Claiming and recording together halves the
    /// commits, and nothing is claimed unless the outcomes that made room for it are durable.
    ///
    /// PostgreSQL: the claim uses `FOR UPDATE SKIP LOCKED`, so any number of workers share the
    /// table without waiting on each other, and runs first, so the stats counters' row locks
    /// (taken by the attempts insert) are held only until the commit right after. Rows never
    /// made are made by the claim itself, already `sending` (see [`ClaimRows::make_rows`]): a
    /// letter costs one row written and one update, instead of a row, a claim and an update.
    /// SQLite: the transaction holds the database's single write lock.
    ///
    /// PostgreSQL plans the turn's statements once and keeps the plans, but the claims fill
    /// `deliveries` during the run: a plan made while it was nearly empty would scan it whole,
    /// every turn (69 µs per letter instead of 10 for the record). And right after a large
    /// `mailings add` the statistics say a mailing has a few dozen recipients, so a bitmap scan
    /// would read all of them on every claim instead of the index in order up to its LIMIT. Every
    /// statement of a turn has an index made for it: sequential and bitmap scans are off for it.
    ///
    /// A turn that fails gives its connection back (rolled back), and the next takes one
    /// from the pool again.
    pub async fn turn(&mut self, claim: Option<&Claim<'_>>, done: &[Finished]) -> Result<Taken> {
        let mut conn = match self.held.take() {
            Some((conn, last)) if last.elapsed() < HELD_UNTESTED => conn,
            Some((mut conn, _)) => match conn.ping().await {
                true => conn,
                false => Held::take(&self.db).await?,
            },
            None => Held::take(&self.db).await?,
        };
        let out = conn.turn(claim, done).await?;
        self.held = Some((conn, Instant::now()));
        Ok(out)
    }
}

impl Held {
    async fn take(db: &Db) -> sqlx::Result<Held> {
        Ok(match db {
            Db::Sqlite(p) => Held::Sqlite(p.acquire().await?),
            Db::Postgres(p) => Held::Postgres(p.acquire().await?),
        })
    }

    async fn ping(&mut self) -> bool {
        match self {
            Held::Sqlite(c) => c.ping().await.is_ok(),
            Held::Postgres(c) => c.ping().await.is_ok(),
        }
    }

    async fn turn(&mut self, claim: Option<&Claim<'_>>, done: &[Finished]) -> sqlx::Result<Taken> {
        let mut out = Taken::default();
        match self {
            Held::Sqlite(c) => {
                let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                claim_and_record(&mut *tx, claim, done, &mut out).await?;
                tx.commit().await?;
            }
            Held::Postgres(c) => {
                let mut tx = c.begin_with(pg_turn_opening(claim)).await?;
                claim_and_record(&mut *tx, claim, done, &mut out).await?;
                tx.commit().await?;
            }
        }
        out.rows.sort_by_key(|r| r.id);
        Ok(out)
    }
}

/// A turn's work inside its transaction: the claim first (see [`Turns::turn`]), then the
/// outcomes.
async fn claim_and_record<C: ClaimRows + RecordTries>(
    conn: &mut C,
    claim: Option<&Claim<'_>>,
    done: &[Finished],
    out: &mut Taken,
) -> sqlx::Result<()> {
    if let Some(c) = claim {
        claim_due(conn, c, out).await?;
    }
    conn.record_tries(done).await
}

/// PostgreSQL: a turn's first round trip, `BEGIN` and what every turn needs before its first
/// row, as one simple query (a round trip less per turn: on a busy machine each one waits
/// for both processes to be scheduled).
///
/// The shared lock stands in for the foreign keys `deliveries` has on SQLite (migration
/// 0009): a client or mailing deleted meanwhile waits for this commit, then deletes the rows
/// made here too. Taken first, before any row lock: the deletion, holding it, may be waiting
/// for rows this turn would otherwise lock first. Then, for a claim, each mailing's
/// [`MAKING_ROWS_LOCK`], in key order (so two runs never wait for each other in a circle), held
/// to the commit: two runs never pick the same recipients, as a run that waited for it sees
/// the other's rows in its next statement, and skips them.
fn pg_turn_opening(claim: Option<&Claim<'_>>) -> String {
    let mut sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock_shared({DELIVERY_ROWS_LOCK}); \
         SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off"
    );
    if let Some(c) = claim {
        // A mailing id past i32 wraps: two mailings may then share a lock, which only makes
        // one wait for the other. Sorted by the key itself, so the order holds then too.
        let mut keys: Vec<i32> = c.mailing_ids.iter().map(|&m| m as i32).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            sql.push_str(&format!(
                "; SELECT pg_advisory_xact_lock({MAKING_ROWS_LOCK}, {key})"
            ));
        }
    }
    sql
}

/// Which kinds of due rows a claim looks at, in order, before making rows. Where the claims
/// make the rows (PostgreSQL), the turns between sweeps look for rows never tried only after
/// making none (see [`claim_due`]): a statement less per turn while rows are being made.
fn kinds(c: &Claim<'_>, claims_make_rows: bool) -> impl Iterator<Item = Due> {
    [Due::Lapsed, Due::Retry, Due::Fresh]
        .into_iter()
        .filter(move |d| c.sweep || (matches!(d, Due::Fresh) && !claims_make_rows))
}

/// Claims up to `c.n` due rows of the claim's mailings, kind by kind (see [`Due`]), then
/// makes rows for recipients that have none; a mailing in which none of these found
/// anything is drained.
async fn claim_due<C: ClaimRows>(tx: &mut C, c: &Claim<'_>, out: &mut Taken) -> sqlx::Result<()> {
    for &mailing in c.mailing_ids {
        let mut found = false;
        for due in kinds(c, C::MAKES_ROWS) {
            let want = c.n - out.rows.len();
            if want == 0 {
                return Ok(());
            }
            let more = tx.claim_rows(c, due, mailing, want).await?;
            found |= !more.is_empty();
            out.rows.extend(more);
        }
        let want = c.n - out.rows.len();
        if want == 0 {
            return Ok(());
        }
        let after = c.made_through.get(&mailing).copied().unwrap_or(0);
        let mut made_some = false;
        if let Some((made, last)) = tx.make_rows(c, mailing, after, want).await? {
            found = true;
            made_some = !made.is_empty();
            out.rows.extend(made);
            out.made_through.push((mailing, last));
        }
        // Between sweeps, rows never tried that exist already (released by a run, or made up
        // front by an older version) are claimed once no row was made for the mailing.
        let want = c.n - out.rows.len();
        if C::MAKES_ROWS && !c.sweep && !made_some && want > 0 {
            let more = tx.claim_rows(c, Due::Fresh, mailing, want).await?;
            found |= !more.is_empty();
            out.rows.extend(more);
        }
        if !found {
            out.drained.push(mailing);
        }
    }
    Ok(())
}

trait ClaimRows {
    /// Whether [`ClaimRows::make_rows`] makes rows (else they are all made before the run).
    const MAKES_ROWS: bool = false;

    /// Up to `want` due rows of one kind of one mailing, marked `sending` under the claim's
    /// lease.
    async fn claim_rows(
        &mut self,
        c: &Claim<'_>,
        due: Due,
        mailing: i64,
        want: usize,
    ) -> sqlx::Result<Vec<Claimed>>;

    /// Rows made for up to `want` of the mailing's recipients after client id `after` that
    /// have none, already `sending` under the claim's lease, and the last client id looked
    /// at; `None` when no recipient is left without a row (or rows are made before the run).
    async fn make_rows(
        &mut self,
        _c: &Claim<'_>,
        _mailing: i64,
        _after: i64,
        _want: usize,
    ) -> sqlx::Result<Option<(Vec<Claimed>, i64)>> {
        Ok(None)
    }
}

impl ClaimRows for sqlx::PgConnection {
    const MAKES_ROWS: bool = true;

    async fn claim_rows(
        &mut self,
        c: &Claim<'_>,
        due: Due,
        mailing: i64,
        want: usize,
    ) -> sqlx::Result<Vec<Claimed>> {
        sqlx::query_as::<_, Claimed>(&claim_sql(due))
            .bind(c.now)
            .bind(c.lease_until)
            .bind(want as i64)
            .bind(mailing)
            .fetch_all(&mut *self)
            .await
    }

    /// The turn holds the mailing's advisory lock (see [`pg_turn_opening`]).
    async fn make_rows(
        &mut self,
        c: &Claim<'_>,
        mailing: i64,
        after: i64,
        want: usize,
    ) -> sqlx::Result<Option<(Vec<Claimed>, i64)>> {
        let rows: Vec<MadeRow> = sqlx::query_as(&make_rows_sql())
            .bind(c.now)
            .bind(c.lease_until)
            .bind(want as i64)
            .bind(mailing)
            .bind(after)
            .bind(MAKE_ROWS_LOOK_AHEAD)
            .fetch_all(&mut *self)
            .await?;
        let Some(last) = rows.first().and_then(|r| r.last) else {
            return Ok(None);
        };
        let made: Vec<Claimed> = rows.into_iter().filter_map(MadeRow::claimed).collect();
        Ok(Some((made, last)))
    }
}

/// How many recipients one statement of [`make_rows_sql`] looks at, at most: a run that starts
/// behind others (or after a run that stopped early) skips their rows this many at a time.
const MAKE_ROWS_LOOK_AHEAD: i64 = 4096;

/// `$1` now, `$2` the lease, `$3` how many, `$4` the mailing, `$5` the client id to start
/// after, `$6` how many recipients to look at, at most. The next recipients without a row
/// (looked up one by one in the unique index: a scalar subquery cannot become a hash join
/// over every row of the mailing) get one, already `sending`, and a mailing that gets rows is
/// `active` (again, when recipients were added after it completed). One result row per row made,
/// each with the last client id looked at; a single row without a claim when all of them had
/// a row already, its `last` NULL when no recipient was left.
fn make_rows_sql() -> String {
    let next = "SELECT mc.client_id FROM mailing_clients mc \
           WHERE mc.mailing_id = $4 AND mc.client_id > $5 ORDER BY mc.client_id LIMIT $6";
    format!(
        "WITH batch AS (SELECT w.client_id FROM ({next}) AS w \
           WHERE (SELECT d.id FROM deliveries d \
                   WHERE d.mailing_id = $4 AND d.client_id = w.client_id) IS NULL \
           ORDER BY w.client_id LIMIT $3), \
         made AS (INSERT INTO deliveries (mailing_id, client_id, state, tries, lease_until, updated_at) \
           SELECT $4, client_id, 'sending', 1, $2, $1 FROM batch ORDER BY client_id \
           ON CONFLICT (mailing_id, client_id) DO NOTHING \
           RETURNING id, mailing_id, client_id, tries), \
         active AS (UPDATE mailings SET status = 'active' \
           WHERE id = $4 AND status <> 'active' AND EXISTS (SELECT 1 FROM made)), \
         claimed AS (SELECT made.id, made.mailing_id, made.client_id, made.tries, \
             c.email, c.full_name, c.fields, {OWNER_REFUSES} AS suppressed \
           FROM made JOIN clients c ON c.id = made.client_id) \
         SELECT CASE WHEN (SELECT COUNT(*) FROM batch) = $3 THEN (SELECT MAX(client_id) FROM batch) \
                ELSE (SELECT MAX(client_id) FROM ({next}) AS w) END AS last, claimed.* \
           FROM (SELECT 1) AS one LEFT JOIN claimed ON true"
    )
}

/// A result row of [`make_rows_sql`]: the last client id looked at, and a claimed row (all
/// `None` when every recipient looked at had a row already).
#[derive(sqlx::FromRow)]
struct MadeRow {
    last: Option<i64>,
    id: Option<i64>,
    mailing_id: Option<i64>,
    client_id: Option<i64>,
    tries: Option<i32>,
    email: Option<String>,
    full_name: Option<String>,
    fields: Option<String>,
    suppressed: Option<bool>,
}

impl MadeRow {
    fn claimed(self) -> Option<Claimed> {
        Some(Claimed {
            id: self.id?,
            mailing_id: self.mailing_id?,
            client_id: self.client_id?,
            tries: self.tries?,
            email: self.email?,
            full_name: self.full_name?,
            fields: self.fields?,
            suppressed: self.suppressed?,
        })
    }
}

/// SQLite: the due rows are read with what their letters need in one row of JSON, then
/// marked by id. sqlx hands each result row from SQLite's thread to ours on its own, which
/// cost more than the claim's SQL did. Reading before writing is safe: the turn holds the
/// write lock from its start (`BEGIN IMMEDIATE`).
impl ClaimRows for sqlx::SqliteConnection {
    async fn claim_rows(
        &mut self,
        c: &Claim<'_>,
        due: Due,
        mailing: i64,
        want: usize,
    ) -> sqlx::Result<Vec<Claimed>> {
        let rows: String = sqlx::query_scalar(&sqlite_due_sql(due))
            .bind(c.now)
            .bind(want as i64)
            .bind(mailing)
            .fetch_one(&mut *self)
            .await?;
        let rows: Vec<Claimed> =
            serde_json::from_str(&rows).map_err(|e| sqlx::Error::Decode(e.into()))?;
        if !rows.is_empty() {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            sqlx::query(
                "UPDATE deliveries SET state = 'sending', tries = tries + 1, lease_until = $2, \
                   updated_at = $1 WHERE id IN (SELECT value FROM json_each($3))",
            )
            .bind(c.now)
            .bind(c.lease_until)
            .bind(serde_json::to_string(&ids).map_err(|e| sqlx::Error::Encode(e.into()))?)
            .execute(&mut *self)
            .await?;
        }
        Ok(rows)
    }
}

/// Whether the owner may no longer write to client `c`'s address (checked per claimed row).
const OWNER_REFUSES: &str = "EXISTS (SELECT 1 FROM suppressions s \
       WHERE s.owner_id = c.owner_id AND s.email_key = c.email_key)";

/// SQLite: `$1` now, `$2` how many, `$3` the mailing; the due rows (as [`claim_sql`] picks
/// them) as one JSON array of [id, mailing, client, tries after this claim, email, name,
/// fields, suppressed].
fn sqlite_due_sql(due: Due) -> String {
    let candidates = candidates_sql(due, "$3", "$2");
    format!(
        "SELECT json_group_array(json_array(d.id, d.mailing_id, d.client_id, d.tries + 1, \
           c.email, c.full_name, c.fields, json(CASE WHEN {OWNER_REFUSES} THEN 'true' ELSE 'false' END))) \
         FROM ({candidates}) AS due JOIN deliveries d ON d.id = due.id JOIN clients c ON c.id = d.client_id"
    )
}

/// `$1` now, `$2` the lease, `$3` how many, `$4` the mailing. The candidates come from one
/// of the partial indexes of 0008, in index order, and are then updated by primary key
/// (PostgreSQL's `= ANY(ARRAY(...))` keeps the planner from scanning the table for an `IN`).
/// Whether the owner may still write to the address is looked up per claimed row in the
/// RETURNING list, where it cannot turn into a join over all clients; such rows come back
/// with `suppressed` set and are recorded as suppressed instead of sent.
fn claim_sql(due: Due) -> String {
    let candidates = candidates_sql(due, "$4", "$3");
    format!(
        "UPDATE deliveries SET state = 'sending', tries = deliveries.tries + 1, lease_until = $2, \
           updated_at = $1 \
         FROM clients c \
         WHERE deliveries.id = ANY(ARRAY({candidates} FOR UPDATE SKIP LOCKED)) \
           AND c.id = deliveries.client_id \
         RETURNING deliveries.id, deliveries.mailing_id, deliveries.client_id, deliveries.tries, \
           c.email, c.full_name, c.fields, {OWNER_REFUSES} AS suppressed"
    )
}

/// The ids of up to `limit` rows of `mailing` due now (`$1`) of one kind, from its partial
/// index (migration 0008), in index order.
fn candidates_sql(due: Due, mailing: &str, limit: &str) -> String {
    let (condition, order) = match due {
        Due::Lapsed => (
            "d.state = 'sending' AND d.lease_until < $1",
            "d.lease_until",
        ),
        Due::Retry => (
            "d.state = 'pending' AND d.next_try_at IS NOT NULL AND d.next_try_at <= $1",
            "d.next_try_at",
        ),
        Due::Fresh => ("d.state = 'pending' AND d.next_try_at IS NULL", "d.id"),
    };
    format!(
        "SELECT d.id FROM deliveries d WHERE d.mailing_id = {mailing} AND {condition} \
         ORDER BY {order} LIMIT {limit}"
    )
}

/// Records the journaled letters of a dead run (all accepted by the relay) whose claim still
/// holds; the others were recorded already, or their lease lapsed and another run took them.
/// Returns how many were recorded.
pub async fn record_still_claimed(db: &Db, done: &[Finished]) -> Result<u64> {
    let mut recorded = 0;
    for chunk in done.chunks(1000) {
        let ids: Vec<i64> = chunk.iter().map(|f| f.delivery_id).collect();
        let sql = format!(
            "SELECT id, lease_until FROM deliveries WHERE state = 'sending' AND id IN ({})",
            id_list(&ids)
        );
        recorded += on_pool!(db, p => {
            let mut tx = p.begin().await?;
            let held: std::collections::HashMap<i64, Option<DateTime<Utc>>> =
                sqlx::query_as(&sql).fetch_all(&mut *tx).await?.into_iter().collect();
            let still: Vec<Finished> = chunk
                .iter()
                .filter(|f| held.get(&f.delivery_id) == Some(&Some(f.lease_until)))
                .cloned()
                .collect();
            tx.record_tries(&still).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(still.len() as u64)
        })?;
    }
    Ok(recorded)
}

/// Lets any run claim again, right away, the deliveries still held under these leases (a
/// dead run's claims): their lease is moved into the past. Returns how many.
pub async fn release_leases(db: &Db, leases: &[DateTime<Utc>]) -> Result<u64> {
    let past = super::now() - chrono::Duration::seconds(1);
    let mut released = 0;
    for chunk in leases.chunks(1000) {
        released += match db {
            Db::Sqlite(p) => {
                let leases: Vec<String> = chunk.iter().map(sqlite_time).collect();
                sqlx::query(
                    "UPDATE deliveries SET lease_until = $1 WHERE state = 'sending' \
                       AND lease_until IN (SELECT value FROM json_each($2))",
                )
                .bind(past)
                .bind(serde_json::to_string(&leases)?)
                .execute(p)
                .await?
                .rows_affected()
            }
            Db::Postgres(p) => sqlx::query(
                "UPDATE deliveries SET lease_until = $1 WHERE state = 'sending' \
                   AND lease_until = ANY($2)",
            )
            .bind(past)
            .bind(chunk)
            .execute(p)
            .await?
            .rows_affected(),
        };
    }
    Ok(released)
}
