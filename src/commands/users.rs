//! users list | block | unblock (managers and administrators) | unlock (administrators).

use super::{Ctx, notice};
use crate::auth::policy::{self, Capability};
use crate::auth::throttle::Throttle;
use crate::cli::UsersCmd;
use crate::db::accounts;
use crate::error::{Error, Result};
use crate::output::print_list;

pub async fn run(ctx: &Ctx, cmd: UsersCmd) -> Result<()> {
    let actor = ctx.actor().await?;
    policy::require(&actor, Capability::ManageUsers)?;
    let db = ctx.db().await?;
    match cmd {
        UsersCmd::List => print_list(ctx.format(), &accounts::list(db).await?),
        UsersCmd::Block { account } => set_blocked(ctx, &actor, &account, true).await,
        UsersCmd::Unblock { account } => set_blocked(ctx, &actor, &account, false).await,
        UsersCmd::Unlock { email } => unlock(ctx, &actor, &email).await,
    }
}

/// Clears the login-throttle lock of an existing account (in Redis and in the database).
async fn unlock(ctx: &Ctx, actor: &policy::Actor, email: &str) -> Result<()> {
    policy::require(actor, Capability::UnlockLogins)?;
    let db = ctx.db().await?;
    let target = accounts::find_by_email(db, email)
        .await?
        .ok_or_else(|| Error::not_found("account", email))?;
    let mut throttle = Throttle::new(&ctx.config, db, &target.email).await;
    let had = throttle.clear().await?;
    notice(if had {
        format!("unlocked {}: its failed logins are forgotten", target.email)
    } else {
        format!("{} had no failed logins to forget", target.email)
    });
    Ok(())
}

async fn set_blocked(ctx: &Ctx, actor: &policy::Actor, who: &str, blocked: bool) -> Result<()> {
    let db = ctx.db().await?;
    // `users list` shows ids; an email always has an `@`, so digits alone are an id.
    let found = match who.parse::<i64>() {
        Ok(id) => accounts::find_by_id(db, id).await?,
        Err(_) => accounts::find_by_email(db, who).await?,
    };
    let target = found.ok_or_else(|| Error::not_found("account", who))?;
    policy::may_block(actor, target.id, target.role())?;
    accounts::set_blocked(db, target.id, blocked).await?;
    notice(format!(
        "{} {}",
        if blocked { "blocked" } else { "unblocked" },
        target.email
    ));
    Ok(())
}
