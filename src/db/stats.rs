//! Statistics of send attempts, read from the running counters that the triggers of migration
//! 0005 keep in the same transaction as each attempt (`mailing_stats`, `mailing_day_stats`,
//! `stats_reached`), so no query here scans the whole attempts table.
//!
//! `--since`/`--until` select the half-open range [since, until). Whole UTC days inside the
//! range come from the per-day counters; the one or two partial days at its edges are counted
//! exactly from `attempts` (index on attempted_at) and `stats_reached` (index on reached_at).

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Db, dialect};
use crate::auth::policy::Scope;
use crate::error::{Error, Result};
use crate::on_pool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Group {
    Overall,
    Mailing,
    User,
    Day,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub group: Group,
    pub mailing: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// One row of figures, whatever the grouping; `id`/`owner_id`/`label` hold the group's
/// identity (mailing id and owner, user id and email, or the day). Cached as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Row {
    pub id: Option<i64>,
    pub owner_id: Option<i64>,
    pub label: Option<String>,
    pub attempted: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Tries refused for now (4xx, no answer) and made again later.
    #[serde(default)]
    pub deferred: i64,
    pub recipients_reached: i64,
    /// Bounce reports and complaints received (`bounces import`), apart from the tries.
    #[serde(default)]
    pub bounced: i64,
    #[serde(default)]
    pub complained: i64,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// What the cache key needs from the database: which installation, and the sum of the
/// versions of the owners in scope (bumped by the triggers on every write that changes them).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Version {
    pub installation: String,
    pub version: i64,
}

pub async fn version(db: &Db, scope: Scope) -> Result<Version> {
    let sql = "SELECT (SELECT installation FROM stats_meta WHERE id = 1) AS installation, \
               CAST(COALESCE(SUM(version), 0) AS BIGINT) AS version \
               FROM stats_versions WHERE ($1 IS NULL OR owner_id = $1)";
    Ok(on_pool!(db, p => sqlx::query_as::<_, Version>(sql)
        .bind(scope.owner()).fetch_one(p).await)?)
}

/// The mailing exists and the scope may see it (else exit 4, like any other record).
pub async fn check_mailing(db: &Db, scope: Scope, id: i64) -> Result<()> {
    let sql = "SELECT id FROM mailings WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)";
    let found: Option<i64> = on_pool!(db, p => sqlx::query_scalar(sql)
        .bind(id).bind(scope.owner()).fetch_optional(p).await)?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::not_found("mailing", id))
}

/// A bound parameter; the SQL is assembled from pieces, so the parameters are a list.
#[derive(Debug, Clone)]
enum Param {
    Int(Option<i64>),
    Time(DateTime<Utc>),
    Day(NaiveDate),
}

struct Sql {
    params: Vec<Param>,
}

impl Sql {
    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(NaiveTime::MIN).and_utc()
}

/// How [since, until) splits into whole days (counters) and partial edges (exact rows).
#[derive(Debug, PartialEq)]
struct Split {
    /// Whole days: `day >= from` (if any) and `day < to` (if any); None: no whole day at all.
    days: Option<(Option<NaiveDate>, Option<NaiveDate>)>,
    /// Half-open time intervals counted from the attempts themselves.
    partial: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

fn split(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Split {
    let ceil = |t: DateTime<Utc>| {
        if t == midnight(t.date_naive()) {
            t.date_naive()
        } else {
            t.date_naive() + Duration::days(1)
        }
    };
    let lo = since.map(ceil);
    let hi = until.map(|t| t.date_naive());
    if let (Some(s), Some(u), Some(l), Some(h)) = (since, until, lo, hi)
        && l >= h
    {
        // Both ends inside one day (or adjacent partial days with no whole day between).
        return Split {
            days: None,
            partial: if s < u { vec![(s, u)] } else { vec![] },
        };
    }
    let mut partial = Vec::new();
    if let (Some(s), Some(l)) = (since, lo)
        && s < midnight(l)
    {
        partial.push((s, midnight(l)));
    }
    if let (Some(u), Some(h)) = (until, hi)
        && midnight(h) < u
    {
        partial.push((midnight(h), u));
    }
    Split {
        days: Some((lo, hi)),
        partial,
    }
}

/// The figures for `q` within `scope`: one row (overall) or one row per group, ordered.
pub async fn query(db: &Db, scope: Scope, q: &Query) -> Result<Vec<Row>> {
    let day_of = |col: &str| dialect::utc_day(db, col);
    let by_day = q.group == Group::Day;
    let mut sql = Sql { params: Vec::new() };

    // The facts: rows of (mailing_id, [day,] counters) that add up to the answer.
    let facts = if q.since.is_none() && q.until.is_none() {
        if by_day {
            "SELECT mailing_id, day, attempted, succeeded, failed, deferred, recipients_reached, \
             bounced, complained, first_attempt_at, last_attempt_at FROM mailing_day_stats"
                .to_string()
        } else {
            "SELECT mailing_id, attempted, succeeded, failed, deferred, recipients_reached, \
             bounced, complained, first_attempt_at, last_attempt_at FROM mailing_stats"
                .to_string()
        }
    } else {
        let parts = split(q.since, q.until);
        let mut branches = Vec::new();
        let day_col = |expr: String| {
            if by_day {
                format!("{expr} AS day, ")
            } else {
                String::new()
            }
        };
        if let Some((from, to)) = parts.days {
            let mut cond = vec!["1 = 1".to_string()];
            if let Some(f) = from {
                cond.push(format!("day >= {}", sql.bind(Param::Day(f))));
            }
            if let Some(t) = to {
                cond.push(format!("day < {}", sql.bind(Param::Day(t))));
            }
            branches.push(format!(
                "SELECT mailing_id, {}attempted, succeeded, failed, deferred, recipients_reached, \
                 bounced, complained, first_attempt_at, last_attempt_at FROM mailing_day_stats WHERE {}",
                day_col("day".into()),
                cond.join(" AND ")
            ));
        }
        for (a, b) in parts.partial {
            let (a1, b1) = (sql.bind(Param::Time(a)), sql.bind(Param::Time(b)));
            let (a2, b2) = (sql.bind(Param::Time(a)), sql.bind(Param::Time(b)));
            branches.push(format!(
                "SELECT mailing_id, {}\
                 SUM(CASE WHEN status IN ('bounced', 'complained') THEN 0 ELSE 1 END) AS attempted, \
                 SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS succeeded, \
                 SUM(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) AS failed, \
                 SUM(CASE WHEN status = 'deferred' THEN 1 ELSE 0 END) AS deferred, \
                 0 AS recipients_reached, \
                 SUM(CASE WHEN status = 'bounced' THEN 1 ELSE 0 END) AS bounced, \
                 SUM(CASE WHEN status = 'complained' THEN 1 ELSE 0 END) AS complained, \
                 MIN(attempted_at) AS first_attempt_at, \
                 MAX(attempted_at) AS last_attempt_at \
                 FROM attempts WHERE attempted_at >= {a1} AND attempted_at < {b1} \
                 GROUP BY mailing_id{}",
                day_col(day_of("attempted_at")),
                if by_day { ", 2" } else { "" }
            ));
            // reached_at is the time of a successful attempt in the same interval, so using
            // it as first/last changes neither MIN nor MAX.
            branches.push(format!(
                "SELECT mailing_id, {}0 AS attempted, 0 AS succeeded, 0 AS failed, 0 AS deferred, \
                 COUNT(*) AS recipients_reached, 0 AS bounced, 0 AS complained, \
                 MIN(reached_at) AS first_attempt_at, \
                 MAX(reached_at) AS last_attempt_at \
                 FROM stats_reached WHERE reached_at >= {a2} AND reached_at < {b2} \
                 GROUP BY mailing_id{}",
                day_col(day_of("reached_at")),
                if by_day { ", 2" } else { "" }
            ));
        }
        if branches.is_empty() {
            // since >= until: an empty range. A branch that yields no row keeps the SQL simple.
            branches.push(format!(
                "SELECT mailing_id, {}attempted, succeeded, failed, deferred, recipients_reached, \
                 bounced, complained, first_attempt_at, last_attempt_at FROM mailing_day_stats WHERE 1 = 0",
                day_col("day".into())
            ));
        }
        branches.join(" UNION ALL ")
    };

    let owner = sql.bind(Param::Int(scope.owner()));
    let mailing = sql.bind(Param::Int(q.mailing));
    let filter = format!(
        "({owner} IS NULL OR m.owner_id = {owner}) AND ({mailing} IS NULL OR f.mailing_id = {mailing})"
    );
    let sums = "CAST(COALESCE(SUM(f.attempted), 0) AS BIGINT) AS attempted, \
                CAST(COALESCE(SUM(f.succeeded), 0) AS BIGINT) AS succeeded, \
                CAST(COALESCE(SUM(f.failed), 0) AS BIGINT) AS failed, \
                CAST(COALESCE(SUM(f.deferred), 0) AS BIGINT) AS deferred, \
                CAST(COALESCE(SUM(f.recipients_reached), 0) AS BIGINT) AS recipients_reached, \
                CAST(COALESCE(SUM(f.bounced), 0) AS BIGINT) AS bounced, \
                CAST(COALESCE(SUM(f.complained), 0) AS BIGINT) AS complained, \
                MIN(f.first_attempt_at) AS first_attempt_at, \
                MAX(f.last_attempt_at) AS last_attempt_at";
    let from = format!("FROM ({facts}) f JOIN mailings m ON m.id = f.mailing_id");
    let text = match q.group {
        Group::Overall => format!(
            "SELECT CAST(NULL AS BIGINT) AS id, CAST(NULL AS BIGINT) AS owner_id, \
             CAST(NULL AS TEXT) AS label, {sums} {from} WHERE {filter}"
        ),
        // The label is the subject of the mailing's message (as written, before placeholders).
        Group::Mailing => format!(
            "SELECT f.mailing_id AS id, m.owner_id AS owner_id, msg.subject AS label, \
             {sums} {from} JOIN messages msg ON msg.id = m.message_id WHERE {filter} \
             GROUP BY f.mailing_id, m.owner_id, msg.subject ORDER BY f.mailing_id"
        ),
        Group::User => format!(
            "SELECT m.owner_id AS id, m.owner_id AS owner_id, a.email AS label, {sums} {from} \
             JOIN accounts a ON a.id = m.owner_id WHERE {filter} \
             GROUP BY m.owner_id, a.email ORDER BY m.owner_id"
        ),
        Group::Day => format!(
            "SELECT CAST(NULL AS BIGINT) AS id, CAST(NULL AS BIGINT) AS owner_id, \
             CAST(f.day AS TEXT) AS label, {sums} {from} WHERE {filter} \
             GROUP BY f.day ORDER BY f.day"
        ),
    };
    let rows = on_pool!(db, p => {
        let mut query = sqlx::query_as::<_, Row>(&text);
        for param in &sql.params {
            query = match param {
                Param::Int(v) => query.bind(*v),
                Param::Time(t) => query.bind(*t),
                Param::Day(d) => query.bind(*d),
            };
        }
        query.fetch_all(p).await
    })?;
    Ok(rows)
}

/// Emptying the counters before a rebuild: the statements before the markers
/// (`stats_reached`) are reloaded, and those after.
fn clear_counters(db: &Db) -> (&'static [&'static str], &'static [&'static str]) {
    match db {
        // Counters first, so the marker triggers fired by the reload find nothing to update.
        Db::Sqlite(_) => (
            &[
                "DELETE FROM mailing_stats",
                "DELETE FROM mailing_day_stats",
                "DELETE FROM stats_reached",
            ],
            &[],
        ),
        // TRUNCATE fires no row trigger; the marker trigger is off while markers are loaded
        // (the counters are computed with them afterwards). Both are undone on rollback.
        Db::Postgres(_) => (
            &[
                "TRUNCATE mailing_stats, mailing_day_stats, stats_reached",
                "ALTER TABLE stats_reached DISABLE TRIGGER stats_reached_change",
            ],
            &["ALTER TABLE stats_reached ENABLE TRIGGER stats_reached_change"],
        ),
    }
}

/// Recomputes every counter from the attempts table, in one transaction (after a bulk load
/// with the trigger off, or a manual edit of attempts). Bumps every owner's version.
pub async fn rebuild(db: &Db) -> Result<()> {
    let day = dialect::utc_day(db, "attempted_at");
    let reached_day = dialect::utc_day(db, "r.reached_at");
    let ok = "SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END)";
    let ko = "SUM(CASE WHEN status = 'failure' THEN 1 ELSE 0 END)";
    // Reports (`bounces import`) are counted apart from the tries.
    let n = "SUM(CASE WHEN status IN ('bounced', 'complained') THEN 0 ELSE 1 END)";
    let bo = "SUM(CASE WHEN status = 'bounced' THEN 1 ELSE 0 END)";
    let co = "SUM(CASE WHEN status = 'complained' THEN 1 ELSE 0 END)";
    let later = "SUM(CASE WHEN status = 'deferred' THEN 1 ELSE 0 END)";
    let (clear, reload_done) = clear_counters(db);
    let mut steps: Vec<String> = clear.iter().map(|s| s.to_string()).collect();
    steps.push(
        "INSERT INTO stats_reached (mailing_id, client_id, reached_at) \
         SELECT mailing_id, client_id, MIN(attempted_at) FROM attempts \
         WHERE status = 'success' AND client_id IS NOT NULL GROUP BY mailing_id, client_id"
            .into(),
    );
    steps.extend(reload_done.iter().map(|s| s.to_string()));
    steps.push(format!(
        "INSERT INTO mailing_stats (mailing_id, attempted, succeeded, failed, deferred, recipients_reached, \
         bounced, complained, first_attempt_at, last_attempt_at) \
         SELECT a.mailing_id, a.n, a.ok, a.ko, a.later, COALESCE(r.n, 0), a.bo, a.co, a.first_at, a.last_at FROM \
         (SELECT mailing_id, {n} AS n, {ok} AS ok, {ko} AS ko, {later} AS later, {bo} AS bo, {co} AS co, MIN(attempted_at) AS first_at, \
          MAX(attempted_at) AS last_at FROM attempts GROUP BY mailing_id) a \
         LEFT JOIN (SELECT mailing_id, COUNT(*) AS n FROM stats_reached GROUP BY mailing_id) r \
         ON r.mailing_id = a.mailing_id"
    ));
    steps.push(format!(
        "INSERT INTO mailing_day_stats (mailing_id, day, attempted, succeeded, failed, deferred, \
         recipients_reached, bounced, complained, first_attempt_at, last_attempt_at) \
         SELECT a.mailing_id, a.day, a.n, a.ok, a.ko, a.later, COALESCE(r.n, 0), a.bo, a.co, a.first_at, a.last_at FROM \
         (SELECT mailing_id, {day} AS day, {n} AS n, {ok} AS ok, {ko} AS ko, {later} AS later, {bo} AS bo, {co} AS co, \
          MIN(attempted_at) AS first_at, MAX(attempted_at) AS last_at \
          FROM attempts GROUP BY mailing_id, {day}) a \
         LEFT JOIN (SELECT r.mailing_id, {reached_day} AS day, COUNT(*) AS n FROM stats_reached r \
          GROUP BY r.mailing_id, {reached_day}) r \
         ON r.mailing_id = a.mailing_id AND r.day = a.day"
    ));
    steps.push(
        "INSERT INTO stats_versions (owner_id, version) SELECT id, 1 FROM accounts WHERE true \
         ON CONFLICT (owner_id) DO UPDATE SET version = stats_versions.version + 1"
            .into(),
    );
    steps.push("UPDATE stats_versions SET version = version + 1".into());
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        for step in &steps {
            sqlx::query(step).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok::<_, Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn splits_ranges_into_days_and_edges() {
        assert_eq!(
            split(None, None),
            Split {
                days: Some((None, None)),
                partial: vec![]
            }
        );
        assert_eq!(
            split(
                Some(t("2026-12-01T00:00:00Z")),
                Some(t("2026-12-03T00:00:00Z"))
            ),
            Split {
                days: Some((Some(d("2026-12-01")), Some(d("2026-12-03")))),
                partial: vec![]
            }
        );
        assert_eq!(
            split(
                Some(t("2026-12-01T09:00:00Z")),
                Some(t("2026-12-03T10:00:00Z"))
            ),
            Split {
                days: Some((Some(d("2026-12-02")), Some(d("2026-12-03")))),
                partial: vec![
                    (t("2026-12-01T09:00:00Z"), t("2026-12-02T00:00:00Z")),
                    (t("2026-12-03T00:00:00Z"), t("2026-12-03T10:00:00Z"))
                ]
            }
        );
        // Inside one day: one exact interval, no whole day.
        assert_eq!(
            split(
                Some(t("2026-12-01T09:00:00Z")),
                Some(t("2026-12-01T10:00:00Z"))
            ),
            Split {
                days: None,
                partial: vec![(t("2026-12-01T09:00:00Z"), t("2026-12-01T10:00:00Z"))]
            }
        );
        // Adjacent partial days.
        assert_eq!(
            split(
                Some(t("2026-12-01T09:00:00Z")),
                Some(t("2026-12-02T10:00:00Z"))
            ),
            Split {
                days: None,
                partial: vec![(t("2026-12-01T09:00:00Z"), t("2026-12-02T10:00:00Z"))]
            }
        );
        // Open ends.
        assert_eq!(
            split(Some(t("2026-12-01T09:00:00Z")), None),
            Split {
                days: Some((Some(d("2026-12-02")), None)),
                partial: vec![(t("2026-12-01T09:00:00Z"), t("2026-12-02T00:00:00Z"))]
            }
        );
        assert_eq!(
            split(None, Some(t("2026-12-01T09:00:00Z"))),
            Split {
                days: Some((None, Some(d("2026-12-01")))),
                partial: vec![(t("2026-12-01T00:00:00Z"), t("2026-12-01T09:00:00Z"))]
            }
        );
        // Empty range.
        assert_eq!(
            split(
                Some(t("2026-12-02T09:00:00Z")),
                Some(t("2026-12-01T09:00:00Z"))
            ),
            Split {
                days: None,
                partial: vec![]
            }
        );
    }
}
