//! register: self sign-up with an emailed confirmation link.
//!
//! The reply is the same whether or not the address already has an account: a new address
//! gets a confirmation link, an address with an unconfirmed account gets another link (bound to
//! the password given now), and a confirmed account gets a "you already have an account"
//! letter. Only the owner of the mailbox learns which. The password is hashed on every path
//! and the letter is queued and sent for a fixed while (system_letters), so the time taken does
//! not tell either.
//!
//! A second registration of a waiting address (in any letter case) cannot take it over: every
//! link confirms only when its reader types the password chosen at the registration that sent
//! it (web::handlers::confirm), and a later registration changes nothing an earlier link does.

use std::time::Instant;

use super::system_letters::queue_and_flush;
use super::{Ctx, notice, read_password};
use crate::auth::password;
use crate::auth::policy::Role;
use crate::cli::NewAccount;
use crate::db::accounts;
use crate::db::system_letters::Kind;
use crate::db::tokens;
use crate::error::{Error, Result};
use crate::mail::transport::Endpoint;
use crate::validate;

pub async fn register(ctx: &Ctx, args: NewAccount) -> Result<()> {
    let email = validate::email("email", &args.email)?;
    Endpoint::from_config(&ctx.config)?;
    let pw = read_password(args.password_stdin, "Password", true)?;
    password::validate(&pw)?;
    let started = Instant::now();
    let hash = password::hash(&pw)?;
    let db = ctx.db().await?;
    let _ = tokens::drop_expired(db).await;

    let account = match accounts::find_by_email(db, &email).await? {
        Some(a) => a,
        None => match accounts::create(db, &email, &hash, Role::User, false).await {
            Ok(a) => a,
            // Registered a moment ago by a concurrent call: treat as existing.
            Err(Error::Invalid { .. }) => accounts::find_by_email(db, &email)
                .await?
                .ok_or_else(|| Error::runtime("the account vanished while registering"))?,
            Err(e) => return Err(e),
        },
    };
    let letter = if account.email_confirmed {
        (Kind::Already, account.id, None)
    } else {
        (Kind::Confirm, account.id, Some(hash.as_str()))
    };
    queue_and_flush(ctx, started, Some(letter)).await?;
    notice(format!(
        "registration received: a letter was sent to {email}; open its link to confirm the address, then log in"
    ));
    Ok(())
}
