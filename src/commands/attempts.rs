//! attempts list: every try of every letter, streamed.

use super::Ctx;
use crate::auth::policy::{self, Access};
use crate::cli::{AttemptStatus, AttemptsCmd};
use crate::db::attempts::{self, Attempt, Filter};
use crate::db::mailings;
use crate::error::Result;
use crate::output::ListWriter;
use crate::when;

pub async fn run(ctx: &Ctx, cmd: AttemptsCmd) -> Result<()> {
    let AttemptsCmd::List {
        mailing,
        status,
        since,
        until,
    } = cmd;
    let actor = ctx.actor().await?;
    let db = ctx.db().await?;
    // Users see their own mailings' attempts; managers and admins see all.
    let scope = policy::scope(&actor, Access::Read);
    if let Some(id) = mailing {
        mailings::get(db, scope, id).await?;
    }
    let now = crate::db::now();
    let filter = Filter {
        mailing,
        status: status.map(|s| match s {
            AttemptStatus::Success => "success",
            AttemptStatus::Failure => "failure",
            AttemptStatus::Bounced => "bounced",
            AttemptStatus::Complained => "complained",
            AttemptStatus::Deferred => "deferred",
        }),
        since: since.map(|s| when::parse("since", &s, now)).transpose()?,
        until: until.map(|s| when::parse("until", &s, now)).transpose()?,
    };
    let mut out = ListWriter::<Attempt>::new(ctx.format())?;
    attempts::for_each(db, scope, &filter, |a| out.row(a)).await?;
    out.finish()
}
