//! stats: figures of the send attempts, from the running counters (db::stats), cached in
//! Redis under a key that holds every input of the answer, the versions included.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{Ctx, notice};
use crate::auth::policy::{self, Access, Scope};
use crate::cache::{self, Cache};
use crate::cli::{StatsArgs, StatsBy};
use crate::db::stats::{self as db_stats, Group, Query, Row};
use crate::error::{Error, Result};
use crate::output::{self, Record, opt_time};
use crate::when;

/// Bump when `Row` or the meaning of a figure changes: old cache entries are then ignored.
const CACHE_FORMAT: &str = "stats-v2";
/// Entries never go stale (the key holds the versions); this only bounds Redis' memory.
const CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Recipients reached over recipients with a final outcome (reached, or refused for good),
/// rounded to 4 decimals; empty while no recipient has one. A 4xx retried later is not an
/// outcome: a mailing everyone got on the second try has a rate of 1.
fn rate(r: &Row) -> Option<f64> {
    let settled = r.recipients_reached + r.failed;
    (settled > 0)
        .then(|| (r.recipients_reached as f64 / settled as f64 * 10_000.0).round() / 10_000.0)
}

fn opt_rate(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The records, one type per grouping, sharing the figures' names and order.
macro_rules! stats_record {
    ($name:ident { $($field:ident : $ty:ty = $from:expr, $cell:expr;)* }) => {
        #[derive(Debug, Clone, Serialize)]
        pub struct $name {
            $(pub $field: $ty,)*
            pub attempted: i64,
            pub succeeded: i64,
            pub failed: i64,
            pub deferred: i64,
            pub recipients_reached: i64,
            pub bounced: i64,
            pub complained: i64,
            pub success_rate: Option<f64>,
            pub first_attempt_at: Option<DateTime<Utc>>,
            pub last_attempt_at: Option<DateTime<Utc>>,
        }

        impl Record for $name {
            const HEADERS: &'static [&'static str] = &[
                $(stringify!($field),)*
                "attempted",
                "succeeded",
                "failed",
                "deferred",
                "recipients_reached",
                "bounced",
                "complained",
                "success_rate",
                "first_attempt_at",
                "last_attempt_at",
            ];
            fn cells(&self) -> Vec<String> {
                #[allow(clippy::redundant_closure_call)]
                let mut cells: Vec<String> = vec![$(($cell)(&self.$field),)*];
                cells.extend([
                    self.attempted.to_string(),
                    self.succeeded.to_string(),
                    self.failed.to_string(),
                    self.deferred.to_string(),
                    self.recipients_reached.to_string(),
                    self.bounced.to_string(),
                    self.complained.to_string(),
                    opt_rate(self.success_rate),
                    opt_time(&self.first_attempt_at),
                    opt_time(&self.last_attempt_at),
                ]);
                cells
            }
        }

        impl From<&Row> for $name {
            fn from(r: &Row) -> Self {
                #[allow(clippy::redundant_closure_call)]
                $name {
                    $($field: ($from)(r),)*
                    attempted: r.attempted,
                    succeeded: r.succeeded,
                    failed: r.failed,
                    deferred: r.deferred,
                    recipients_reached: r.recipients_reached,
                    bounced: r.bounced,
                    complained: r.complained,
                    success_rate: rate(r),
                    first_attempt_at: r.first_attempt_at,
                    last_attempt_at: r.last_attempt_at,
                }
            }
        }
    };
}

stats_record!(OverallStats {});
stats_record!(MailingStats {
    mailing_id: i64 = |r: &Row| r.id.unwrap_or_default(), |v: &i64| v.to_string();
    owner_id: i64 = |r: &Row| r.owner_id.unwrap_or_default(), |v: &i64| v.to_string();
    subject: String = |r: &Row| r.label.clone().unwrap_or_default(), |v: &String| v.clone();
});
stats_record!(UserStats {
    user_id: i64 = |r: &Row| r.id.unwrap_or_default(), |v: &i64| v.to_string();
    email: String = |r: &Row| r.label.clone().unwrap_or_default(), |v: &String| v.clone();
});
stats_record!(DayStats {
    day: String = |r: &Row| r.label.clone().unwrap_or_default(), |v: &String| v.clone();
});

fn print<T: Record + for<'a> From<&'a Row>>(ctx: &Ctx, rows: &[Row]) -> Result<()> {
    let records: Vec<T> = rows.iter().map(T::from).collect();
    output::print_list(ctx.format(), &records)
}

fn iso(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

pub async fn run(ctx: &Ctx, args: StatsArgs) -> Result<()> {
    let now = crate::db::now();
    let since = args
        .since
        .as_deref()
        .map(|s| when::parse("since", s, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| when::parse("until", s, now))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        return Err(Error::invalid("until", "must be after --since"));
    }
    let group = match args.by {
        None => Group::Overall,
        Some(StatsBy::Mailing) => Group::Mailing,
        Some(StatsBy::User) => Group::User,
        Some(StatsBy::Day) => Group::Day,
    };

    // Redis connects while the database opens and checks the session.
    let url = ctx
        .config
        .redis_url
        .as_deref()
        .filter(|_| !args.no_cache && !args.rebuild);
    let pending = url.map(Cache::start);
    let actor = ctx.actor().await?;
    let scope = policy::scope(&actor, Access::Read);
    let db = ctx.db().await?;
    if args.rebuild {
        // Rewrites every owner's counters: for whoever may write everyone's data.
        if policy::scope(&actor, Access::Write) != Scope::All {
            return Err(Error::forbidden(
                "permission denied: rebuilding the counters needs an administrator",
            ));
        }
        db_stats::rebuild(db).await?;
        notice("stats counters rebuilt from the attempts");
        return Ok(());
    }
    if group == Group::User && scope != Scope::All {
        return Err(Error::forbidden(
            "permission denied: --by user needs a manager or an administrator",
        ));
    }
    if let Some(id) = args.mailing {
        db_stats::check_mailing(db, scope, id).await?;
    }
    let q = Query {
        group,
        mailing: args.mailing,
        since,
        until,
    };

    let rows = match pending {
        None => db_stats::query(db, scope, &q).await?,
        Some(pending) => {
            // The versions are read before the answer: a write landing in between makes the
            // stored answer newer than its key, never older.
            let (mut cache, version) = tokio::join!(pending.ready(), db_stats::version(db, scope));
            let version = version?;
            let scope_part = match scope {
                Scope::All => "all".to_string(),
                Scope::Own(id) => format!("own:{id}"),
            };
            let key = cache::key(
                "stats",
                &[
                    CACHE_FORMAT,
                    &version.installation,
                    &version.version.to_string(),
                    &scope_part,
                    &format!("{group:?}"),
                    &args.mailing.map(|m| m.to_string()).unwrap_or_default(),
                    &iso(&since),
                    &iso(&until),
                ],
            );
            let cached = match cache.get(&key).await {
                Some(text) => serde_json::from_str::<Vec<Row>>(&text).ok(),
                None => None,
            };
            match cached {
                Some(rows) => rows,
                None => {
                    let rows = db_stats::query(db, scope, &q).await?;
                    if cache.is_on() {
                        cache
                            .set(&key, &serde_json::to_string(&rows)?, CACHE_TTL)
                            .await;
                    }
                    rows
                }
            }
        }
    };

    match group {
        Group::Overall => print::<OverallStats>(ctx, &rows),
        Group::Mailing => print::<MailingStats>(ctx, &rows),
        Group::User => print::<UserStats>(ctx, &rows),
        Group::Day => print::<DayStats>(ctx, &rows),
    }
}
