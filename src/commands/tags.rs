//! tags list: each tag with its number of clients.

use super::Ctx;
use crate::auth::policy::{Access, scope};
use crate::cli::TagsCmd;
use crate::db::tags;
use crate::error::Result;
use crate::output::print_list;

pub async fn run(ctx: &Ctx, cmd: TagsCmd) -> Result<()> {
    let actor = ctx.actor().await?;
    let db = ctx.db().await?;
    match cmd {
        TagsCmd::List => print_list(
            ctx.format(),
            &tags::list(db, scope(&actor, Access::Read)).await?,
        ),
    }
}
