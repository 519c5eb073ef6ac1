//! send-due (from cron) and mailings send ID (now, by the owner or an admin).

use std::io::IsTerminal;

use super::Ctx;
use crate::auth::policy::{self, Access, Actor};
use crate::cli::{SendArgs, SendOpts};
use crate::db::{self, audience, deliveries, recipients};
use crate::error::{Error, Result};
use crate::mail::sender::{self, Options, Summary};
use crate::mail::transport::Endpoint;
use crate::output::{Format, time};

pub async fn send_due(ctx: &Ctx, args: SendArgs) -> Result<()> {
    super::system_letters::flush_for_send_due(ctx, args.opts.dry_run).await?;
    // A bad MAILCTL_SMTP_URL or MAILCTL_SMTP_CA_FILE fails every run, also one with nothing
    // due, so cron mails the error the first time rather than on the day a mailing starts.
    let endpoint = Endpoint::from_config(&ctx.config)?;
    let db = ctx.db().await?;
    let now = db::now();
    deliveries::complete_expired(db, now).await?;
    let targets = deliveries::due(db, now).await?;
    run(ctx, endpoint, targets, &args.opts).await
}

pub async fn send_one(ctx: &Ctx, actor: &Actor, id: i64, opts: SendOpts) -> Result<()> {
    let endpoint = Endpoint::from_config(&ctx.config)?;
    let db = ctx.db().await?;
    // Owner or admin; anyone else (a manager included) does not see it: not found.
    let target = deliveries::target(db, policy::scope(actor, Access::Write), id).await?;
    let now = db::now();
    if target.disabled {
        return Err(Error::invalid(
            "mailing",
            format!("{id} is disabled by a manager"),
        ));
    }
    if target.blocked {
        return Err(Error::invalid(
            "mailing",
            format!("the owner of mailing {id} is blocked"),
        ));
    }
    if target.end_at < now {
        deliveries::complete_expired(db, now).await?;
        return Err(Error::invalid(
            "mailing",
            format!("{id} ended at {}", time(&target.end_at)),
        ));
    }
    run(ctx, endpoint, vec![target], &opts).await
}

async fn run(
    ctx: &Ctx,
    endpoint: Endpoint,
    targets: Vec<deliveries::Target>,
    opts: &SendOpts,
) -> Result<()> {
    let db = ctx.db().await?;
    // An audience (all clients, tags) first gains whoever joined it since the last run, also
    // in a dry run, whose list must show them: it adds recipients, it sends nothing.
    for t in &targets {
        audience::resolve(db, t.id).await?;
    }
    // A finished mailing (every recipient has a final outcome) has nothing for this run:
    // neither the run nor its dry run counts it.
    let ids: Vec<i64> = targets.iter().map(|t| t.id).collect();
    let unfinished = recipients::unfinished(db, &ids).await?;
    let targets: Vec<deliveries::Target> = targets
        .into_iter()
        .filter(|t| unfinished.binary_search(&t.id).is_ok())
        .collect();
    if opts.dry_run {
        return super::dry_run::run(ctx, &targets, opts.limit).await;
    }
    let mut options = Options::new(
        &ctx.config,
        opts.concurrency as usize,
        opts.rate,
        opts.limit,
    );
    options.progress = std::io::stderr().is_terminal();
    let started_at = db::now();
    let summary = sender::run(db, &ctx.config, endpoint, targets, &options).await?;
    report(ctx, &summary, started_at, db::now())?;
    match summary.stopped {
        Some(why) => Err(Error::runtime(why)),
        None => Ok(()),
    }
}

/// The run's summary: a line for people on stderr, and with `--format json` one JSON line on
/// stdout. A cron job's `>> log 2>&1` sends both to one file, so there the human line is left
/// out (stderr is not a terminal) and the log stays one JSON object per line.
fn report(
    ctx: &Ctx,
    summary: &Summary,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let json = ctx.format() == Format::Json;
    if !json || std::io::stderr().is_terminal() {
        eprintln!("{}", summary.line());
    }
    if json {
        let mut value = serde_json::json!({
            "started_at": time_us(&started_at),
            "finished_at": time_us(&finished_at),
        });
        if let (Some(obj), serde_json::Value::Object(fields)) =
            (value.as_object_mut(), serde_json::to_value(summary)?)
        {
            obj.extend(fields);
        }
        println!("{value}");
    }
    Ok(())
}

/// RFC 3339 in UTC with microseconds: two runs in the same second still sort.
fn time_us(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
