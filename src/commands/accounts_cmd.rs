//! csu, create-user, create-manager, login, logout, whoami.

use chrono::Duration;

use super::{Ctx, notice, read_password};
use crate::auth::policy::{self, Capability, Role};
use crate::auth::{password, session, token};
use crate::cli::{LoginArgs, NewAccount};
use crate::db::accounts;
use crate::error::{Error, Result};
use crate::output::print_one;
use crate::validate;

/// Creates an account of `role`. An administrator is needed, except for the very first
/// administrator of an installation (`csu` on an empty database).
pub async fn create(ctx: &Ctx, args: NewAccount, role: Role) -> Result<()> {
    let email = validate::email("email", &args.email)?;
    let db = ctx.db().await?;
    let bootstrap = role == Role::Admin && !accounts::admin_exists(db).await?;
    if !bootstrap {
        let actor = ctx.actor().await?;
        policy::require(&actor, Capability::CreateAccounts)?;
    }
    if accounts::find_by_email(db, &email).await?.is_some() {
        return Err(Error::invalid(
            "email",
            format!("an account with {email} already exists"),
        ));
    }
    let pw = read_password(args.password_stdin, "Password", true)?;
    password::validate(&pw)?;
    let hash = password::hash(&pw)?;
    let account = accounts::create(db, &email, &hash, role, true).await?;
    notice(format!("created {} {}", account.role, account.email));
    print_one(ctx.format(), &account)
}

/// The one reply to a failed login: an unknown address, a wrong password and a blocked
/// account (right password or not) read the same, so the reply tells nothing.
pub const LOGIN_REFUSED: &str = "wrong email or password, or the account is blocked";

pub async fn login(ctx: &Ctx, args: LoginArgs) -> Result<()> {
    let db = ctx.db().await?;
    let pw = read_password(args.password_stdin, "Password", false)?;
    let mut throttle = crate::auth::throttle::Throttle::new(&ctx.config, db, &args.email).await;
    // The try is taken before the password is checked: parallel logins cannot exceed the limit.
    throttle.reserve().await?;
    let creds = accounts::credentials(db, &args.email).await?;
    // Verify against a dummy hash when there is no such account: same time, same answer.
    let hash = creds
        .as_ref()
        .map(|c| c.password_hash.as_str())
        .unwrap_or(password::dummy_hash());
    let ok = password::verify(&pw, hash);
    let Some(creds) = creds.filter(|c| ok && !c.blocked) else {
        return Err(Error::forbidden(LOGIN_REFUSED));
    };
    throttle.succeeded().await?;
    if !creds.email_confirmed {
        return Err(Error::forbidden(
            "this account's email is not confirmed yet: open the link in the confirmation letter",
        ));
    }
    let tok = token::generate();
    let expires = crate::db::now() + Duration::days(session::LIFETIME_DAYS);
    accounts::prune_sessions(db, creds.id).await?;
    accounts::create_session(db, creds.id, &token::hash(&tok), expires).await?;
    session::save(&ctx.config.session_file, &tok)?;
    notice(format!("logged in as {} ({})", creds.email, creds.role));
    Ok(())
}

pub async fn logout(ctx: &Ctx) -> Result<()> {
    if let Some(tok) = session::load(&ctx.config.session_file) {
        accounts::delete_session(ctx.db().await?, &token::hash(&tok)).await?;
    }
    session::remove(&ctx.config.session_file)?;
    notice("logged out");
    Ok(())
}

pub async fn whoami(ctx: &Ctx) -> Result<()> {
    let actor = ctx.actor().await?;
    let account = accounts::find_by_email(ctx.db().await?, &actor.email)
        .await?
        .ok_or_else(|| Error::forbidden("session is no longer valid: log in again"))?;
    print_one(ctx.format(), &account)
}
