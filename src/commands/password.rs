//! password reset | change.

use chrono::Duration;

use super::register::send_letter;
use super::{Ctx, notice, read_password};
use crate::auth::throttle::Throttle;
use crate::auth::{password, session, token};
use crate::cli::PasswordCmd;
use crate::db::accounts;
use crate::db::tokens::{self, Purpose};
use crate::error::{Error, Result};
use crate::validate;

pub async fn run(ctx: &Ctx, cmd: PasswordCmd) -> Result<()> {
    match cmd {
        PasswordCmd::Reset { email } => reset(ctx, &email).await,
        PasswordCmd::Change { password_stdin } => change(ctx, password_stdin).await,
    }
}

/// Emails a reset link when the account exists; the reply is the same either way, so the
/// command cannot be used to learn which addresses have accounts.
async fn reset(ctx: &Ctx, email: &str) -> Result<()> {
    let email = validate::email("email", email)?;
    let db = ctx.db().await?;
    if let Some(account) = accounts::find_by_email(db, &email).await? {
        let tok = tokens::issue(db, account.id, Purpose::Reset, None).await?;
        let text = format!(
            "Hello,\n\n\
             someone (we hope you) asked to reset the password of the mailctl account\n\
             {}. To choose a new password, open this link:\n\n\
             {}/reset/{tok}\n\n\
             The link works once and for 1 hour; using it logs the account out everywhere.\n\
             If you did not ask for this, ignore this letter: your password stays as it is.\n",
            account.email, ctx.config.base_url
        );
        send_letter(
            &ctx.config,
            &account.email,
            "Reset your mailctl password",
            &text,
        )
        .await?;
    }
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
    throttle.check().await?;
    if !password::verify(&old, &creds.password_hash) {
        throttle.failed().await?;
        return Err(Error::forbidden("the current password is wrong"));
    }
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
