//! users list | block | unblock (managers and administrators).

use super::{Ctx, notice};
use crate::auth::policy::{self, Capability};
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
        UsersCmd::Block { email } => set_blocked(ctx, &actor, &email, true).await,
        UsersCmd::Unblock { email } => set_blocked(ctx, &actor, &email, false).await,
    }
}

async fn set_blocked(ctx: &Ctx, actor: &policy::Actor, email: &str, blocked: bool) -> Result<()> {
    let db = ctx.db().await?;
    let target = accounts::find_by_email(db, email)
        .await?
        .ok_or_else(|| Error::not_found("account", email))?;
    policy::may_block(actor, target.id, target.role())?;
    accounts::set_blocked(db, target.id, blocked).await?;
    notice(format!(
        "{} {}",
        if blocked { "blocked" } else { "unblocked" },
        target.email
    ));
    Ok(())
}
