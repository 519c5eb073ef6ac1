//! register: self sign-up with an emailed confirmation link.
//!
//! The reply is the same whether or not the address already has an account: a new address
//! gets a confirmation link, an address with an unconfirmed account gets a fresh link (bound to
//! the password given now), and a confirmed account gets a "you already have an account"
//! letter. Only the owner of the mailbox learns which. The password is hashed on every path so
//! the time taken does not tell either.

use super::{Ctx, notice, read_password};
use crate::auth::password;
use crate::auth::policy::Role;
use crate::cli::NewAccount;
use crate::config::Config;
use crate::db::accounts;
use crate::db::tokens::{self, Purpose};
use crate::error::{Error, Result};
use crate::mail::compose::system_letter;
use crate::mail::transport::Endpoint;
use crate::smtp::Verdict;
use crate::validate;

pub async fn register(ctx: &Ctx, args: NewAccount) -> Result<()> {
    let email = validate::email("email", &args.email)?;
    let pw = read_password(args.password_stdin, "Password", true)?;
    password::validate(&pw)?;
    let hash = password::hash(&pw)?;
    let db = ctx.db().await?;
    let _ = tokens::drop_expired(db).await;

    let existing = match accounts::find_by_email(db, &email).await? {
        Some(a) => Some(a),
        None => match accounts::create(db, &email, &hash, Role::User, false).await {
            Ok(account) => {
                let tok = tokens::issue(db, account.id, Purpose::Confirm, None).await?;
                send_letter(
                    &ctx.config,
                    &email,
                    "Confirm your mailctl account",
                    &confirm_text(&ctx.config, &tok),
                )
                .await?;
                None
            }
            // Registered a moment ago by a concurrent call: treat as existing.
            Err(Error::Invalid { .. }) => accounts::find_by_email(db, &email).await?,
            Err(e) => return Err(e),
        },
    };
    match existing {
        Some(a) if !a.email_confirmed => {
            let tok = tokens::issue(db, a.id, Purpose::Confirm, Some(&hash)).await?;
            send_letter(
                &ctx.config,
                &a.email,
                "Confirm your mailctl account",
                &confirm_text(&ctx.config, &tok),
            )
            .await?;
        }
        Some(a) => {
            send_letter(
                &ctx.config,
                &a.email,
                "You already have a mailctl account",
                &already_text(&ctx.config, &a.email),
            )
            .await?;
        }
        None => {}
    }
    notice(format!(
        "registration received: a letter was sent to {email}; open its link to confirm the address, then log in"
    ));
    Ok(())
}

fn confirm_text(config: &Config, token: &str) -> String {
    format!(
        "Hello,\n\n\
         someone (we hope you) asked for a mailctl account with this address.\n\
         To confirm it, open this link and press the button on the page:\n\n\
         {}/confirm/{token}\n\n\
         The link works once and for 48 hours. If you did not ask for this, ignore this letter:\n\
         the account stays unconfirmed and nobody can log in to it.\n",
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

/// Sends a letter from the installation through the configured transport (SMTP or outbox).
pub(crate) async fn send_letter(
    config: &Config,
    to: &str,
    subject: &str,
    text: &str,
) -> Result<()> {
    let letter = system_letter(config, to, subject, text)?;
    // The sender's session: STARTTLS when offered, AUTH from the URL, a timeout per letter.
    let mut session = Endpoint::from_config(config)?.session();
    let outcome = session.send(&letter).await;
    session.close().await;
    match outcome.verdict() {
        Verdict::Positive => Ok(()),
        _ => Err(Error::runtime(format!(
            "could not send the letter: {}",
            outcome.text()
        ))),
    }
}
