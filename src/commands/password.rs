//! password reset | change.

use std::time::Instant;

use chrono::Duration;

use super::system_letters::queue_and_flush;
use super::{Ctx, notice, read_password};
use crate::auth::throttle::Throttle;
use crate::auth::{password, session, token};
use crate::cli::PasswordCmd;
use crate::db::accounts;
use crate::db::system_letters::Kind;
use crate::error::{Error, Result};
use crate::mail::transport::Endpoint;
use crate::validate;

pub async fn run(ctx: &Ctx, cmd: PasswordCmd) -> Result<()> {
    match cmd {
        PasswordCmd::Reset { email } => reset(ctx, &email).await,
        PasswordCmd::Change { password_stdin } => change(ctx, password_stdin).await,
    }
}

/// Emails a reset link when the account exists; the reply is the same either way (exit code,
/// words, and time: the letter is queued and the queue sent for a fixed while), so the command
/// cannot be used to learn which addresses have accounts, with the mail server up or down.
async fn reset(ctx: &Ctx, email: &str) -> Result<()> {
    let email = validate::email("email", email)?;
    Endpoint::from_config(&ctx.config)?;
    let started = Instant::now();
    let db = ctx.db().await?;
    let letter = accounts::find_by_email(db, &email)
        .await?
        .map(|account| (Kind::Reset, account.id, None));
    queue_and_flush(ctx, started, letter).await?;
    notice(format!(
        "if an account with {email} exists, a password reset link was sent to it (valid for 1 hour)"
    ));
    Ok(())
}

/// Changes the logged-in account's password: old, then new. Every session of the account
/// ends, and this terminal gets a fresh one.
async fn change(ctx: &Ctx, from_stdin: bool) -> Result<()> {
    let actor = ctx.actor().await?;
    let db = ctx.db().await?;
    let old = read_password(from_stdin, "Current password", false)?;
    let new = read_password(from_stdin, "New password", true)?;
    let creds = accounts::credentials(db, &actor.email)
        .await?
        .ok_or_else(|| Error::forbidden("session is no longer valid: log in again"))?;
    // Wrong current passwords count like failed logins, so a left-open terminal cannot be
    // used to guess the password.
    let mut throttle = Throttle::new(&ctx.config, db, &creds.email).await;
    throttle.reserve().await?;
    if !password::verify(&old, &creds.password_hash) {
        return Err(Error::forbidden("the current password is wrong"));
    }
    throttle.succeeded().await?;
    password::validate(&new)?;
    accounts::set_password(db, creds.id, &password::hash(&new)?).await?;
    accounts::delete_sessions_of(db, creds.id).await?;
    let tok = token::generate();
    let expires = crate::db::now() + Duration::days(session::LIFETIME_DAYS);
    accounts::create_session(db, creds.id, &token::hash(&tok), expires).await?;
    session::save(&ctx.config.session_file, &tok)?;
    notice("password changed; every other session of this account has ended");
    Ok(())
}
