//! Letters from the installation itself: confirmation, password reset, "you already have an
//! account". `register` and `password reset` queue a letter (db::system_letters), then try to
//! send the queue for a fixed short while and return no sooner than that, so the reply takes
//! the same time whether or not a letter was queued and whether or not the server answered.
//! What could not go stays queued for the next `send-due` (which flushes the queue first) or
//! the running `serve` (every `SERVE_EVERY`).
//!
//! The link's token is made when the letter is composed, just before each try, so the queue
//! holds no live link; a token whose letter did not go is spent at once.

use std::time::{Duration, Instant};

use super::Ctx;
use crate::config::Config;
use crate::db::system_letters::{self, Kind, Queued};
use crate::db::tokens::{self, Purpose};
use crate::db::{Db, now};
use crate::error::Result;
use crate::mail::compose::system_letter;
use crate::mail::transport::Endpoint;
use crate::smtp::Verdict;

/// How long `register` and `password reset` try to send before they answer, always.
pub const BRIEF_WAIT: Duration = Duration::from_millis(600);
/// How often `serve` sends what is queued.
pub const SERVE_EVERY: Duration = Duration::from_secs(30);
/// A letter is held by one sender this long (longer than one SMTP try can take).
const LEASE_MINUTES: i64 = 5;
/// Letters older than this are dropped: the confirmation link would have expired.
const GIVE_UP_HOURS: i64 = 48;

/// What one flush did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flushed {
    pub sent: u64,
    pub dropped: u64,
    /// The last temporary failure, when the flush stopped on one.
    pub deferred: Option<String>,
}

/// Queues a letter and sends the queue for `BRIEF_WAIT` from `started`, returning no sooner.
/// Errors of the flush are not the caller's: the letter is kept and goes later.
pub async fn queue_and_flush(
    ctx: &Ctx,
    started: Instant,
    letter: Option<(Kind, i64, Option<&str>)>,
) -> Result<()> {
    let db = ctx.db().await?;
    if let Some((kind, account_id, hash)) = letter {
        system_letters::enqueue(db, kind, account_id, hash).await?;
    }
    let deadline = tokio::time::Instant::from_std(started + BRIEF_WAIT);
    let _ = tokio::time::timeout_at(deadline, flush(&ctx.config, db)).await;
    tokio::time::sleep_until(deadline).await;
    Ok(())
}

/// send-due's first step: the queued system letters go before any mailing. Says on stderr
/// what happened when there was anything to do.
pub async fn flush_for_send_due(ctx: &Ctx, dry_run: bool) -> Result<()> {
    Endpoint::from_config(&ctx.config)?;
    let db = ctx.db().await?;
    if dry_run {
        let n = system_letters::waiting(db).await?;
        if n > 0 {
            crate::output::log::info(format!("dry run: would send {n} queued system letter(s)"));
        }
        return Ok(());
    }
    let f = flush(&ctx.config, db).await?;
    report(&f, db).await;
    Ok(())
}

/// One line on stderr about a flush that did something.
pub async fn report(f: &Flushed, db: &Db) {
    if f.sent == 0 && f.dropped == 0 && f.deferred.is_none() {
        return;
    }
    let waiting = system_letters::waiting(db).await.unwrap_or(0);
    let mut line = format!("system letters: {} sent, {waiting} waiting", f.sent);
    if f.dropped > 0 {
        line.push_str(&format!(", {} dropped", f.dropped));
    }
    if let Some(why) = &f.deferred {
        line.push_str(&format!(" ({why})"));
    }
    crate::output::log::info(line);
}

/// Sends every due letter, one at a time over one session; stops at the first temporary
/// failure (the server is down or busy: the rest would fail the same way).
pub async fn flush(config: &Config, db: &Db) -> Result<Flushed> {
    let endpoint = Endpoint::from_config(config)?;
    let mut f = Flushed {
        dropped: system_letters::drop_older_than(
            db,
            now() - chrono::Duration::hours(GIVE_UP_HOURS),
        )
        .await?,
        ..Flushed::default()
    };
    let mut session = endpoint.session();
    while let Some(q) = system_letters::claim(db, chrono::Duration::minutes(LEASE_MINUTES)).await? {
        let (subject, text, token) = compose(config, db, &q).await?;
        let (verdict, reply) = match system_letter(config, &q.email, subject, &text) {
            Ok(letter) => {
                let outcome = session.send(&letter).await;
                (outcome.verdict(), outcome.text().to_string())
            }
            Err(e) => (Verdict::Permanent, e.to_string()),
        };
        if verdict != Verdict::Positive
            && let Some(tok) = &token
        {
            tokens::discard(db, tok).await?;
        }
        match verdict {
            Verdict::Positive => {
                system_letters::done(db, q.id).await?;
                f.sent += 1;
            }
            Verdict::Permanent => {
                crate::output::log::warn(format!("a system letter was refused for good: {reply}"));
                system_letters::done(db, q.id).await?;
                f.dropped += 1;
            }
            Verdict::Temporary | Verdict::Throttled => {
                // 30 s, doubling up to 15 minutes: the next send-due (a minute later) retries.
                let wait = chrono::Duration::seconds((30 << (q.tries - 1).clamp(0, 5)).min(900));
                system_letters::retry_at(db, q.id, now() + wait, &reply).await?;
                f.deferred = Some(reply);
                break;
            }
        }
    }
    session.close().await;
    Ok(f)
}

/// The subject and text of a queued letter, and the raw token of its link if it has one.
async fn compose(
    config: &Config,
    db: &Db,
    q: &Queued,
) -> Result<(&'static str, String, Option<String>)> {
    Ok(match q.kind {
        Kind::Confirm => {
            let tok = tokens::issue(
                db,
                q.account_id,
                Purpose::Confirm,
                q.password_hash.as_deref(),
            )
            .await?;
            (
                "Confirm your mailctl account",
                confirm_text(config, &tok),
                Some(tok),
            )
        }
        Kind::Reset => {
            let tok = tokens::issue(db, q.account_id, Purpose::Reset, None).await?;
            (
                "Reset your mailctl password",
                reset_text(config, &q.email, &tok),
                Some(tok),
            )
        }
        Kind::Already => (
            "You already have a mailctl account",
            already_text(config, &q.email),
            None,
        ),
    })
}

fn confirm_text(config: &Config, token: &str) -> String {
    format!(
        "Hello,\n\n\
         someone (we hope you) asked for a mailctl account with this address.\n\
         To confirm it, open this link and type the password you chose when you registered:\n\n\
         {}/confirm/{token}\n\n\
         The link works once and for 48 hours. If you did not ask for this, ignore this letter:\n\
         the account stays unconfirmed and nobody can log in to it.\n",
        config.base_url
    )
}

fn reset_text(config: &Config, email: &str, token: &str) -> String {
    format!(
        "Hello,\n\n\
         someone (we hope you) asked to reset the password of the mailctl account\n\
         {email}. To choose a new password, open this link:\n\n\
         {}/reset/{token}\n\n\
         The link works once and for 1 hour; using it logs the account out everywhere.\n\
         If you did not ask for this, ignore this letter: your password stays as it is.\n",
        config.base_url
    )
}

fn already_text(config: &Config, email: &str) -> String {
    format!(
        "Hello,\n\n\
         someone (we hope you) tried to register a mailctl account with this address, but it\n\
         already has one. Log in with:\n\n\
         mailctl login --email {email}\n\n\
         Forgot the password? Run `mailctl password reset --email {email}`; the reset link\n\
         will be served at {}/reset/...\n\n\
         If you did not ask for this, ignore this letter: nothing has changed.\n",
        config.base_url
    )
}
