//! clients add | list | show | edit | delete | import | export.

use super::{Ctx, confirm_delete, import, notice};
use crate::auth::policy::{Access, check_write, scope};
use crate::cli::ClientsCmd;
use crate::db::clients::{self, ClientChanges};
use crate::error::Result;
use crate::output::{print_list, print_one};
use crate::validate::{self, MAX_COMMENT, MAX_NAME};

pub async fn run(ctx: &Ctx, cmd: ClientsCmd) -> Result<()> {
    let actor = ctx.actor().await?;
    let db = ctx.db().await?;
    let format = ctx.format();
    match cmd {
        ClientsCmd::Add {
            email,
            name,
            comment,
        } => {
            let email = validate::email("email", &email)?;
            let name = validate::line("name", name.as_deref().unwrap_or(""), MAX_NAME)?;
            let comment = validate::text("comment", comment.as_deref().unwrap_or(""), MAX_COMMENT)?;
            let client = clients::add(db, actor.id, &email, &name, &comment).await?;
            print_one(format, &client)
        }
        ClientsCmd::List { search } => {
            let list = clients::list(db, scope(&actor, Access::Read), search.as_deref()).await?;
            print_list(format, &list)
        }
        ClientsCmd::Show { id } => print_one(
            format,
            &clients::get(db, scope(&actor, Access::Read), id).await?,
        ),
        ClientsCmd::Edit {
            id,
            email,
            name,
            comment,
        } => {
            let changes = ClientChanges {
                email: email.map(|e| validate::email("email", &e)).transpose()?,
                full_name: name
                    .map(|n| validate::line("name", &n, MAX_NAME))
                    .transpose()?,
                comment: comment
                    .map(|c| validate::text("comment", &c, MAX_COMMENT))
                    .transpose()?,
            };
            let current = clients::get(db, scope(&actor, Access::Read), id).await?;
            check_write(&actor, current.owner_id)?;
            let client = clients::update(db, scope(&actor, Access::Write), id, &changes).await?;
            print_one(format, &client)
        }
        ClientsCmd::Delete { ids, yes } => {
            for &id in &ids {
                check_write(
                    &actor,
                    clients::get(db, scope(&actor, Access::Read), id)
                        .await?
                        .owner_id,
                )?;
            }
            confirm_delete("clients", &ids, yes)?;
            let n = clients::delete(db, scope(&actor, Access::Write), &ids).await?;
            notice(format!("deleted {n} client(s)"));
            Ok(())
        }
        ClientsCmd::Import(args) => import::import(ctx, &actor, args).await,
        ClientsCmd::Export => import::export(ctx, &actor).await,
    }
}
