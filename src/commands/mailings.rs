//! mailings add | list | show | edit | delete | add-clients | remove-clients | disable | enable | send.

use super::{Ctx, confirm_delete, notice, send};
use crate::auth::policy::{self, Access, Capability, scope};
use crate::cli::{MailingStatus, MailingsCmd};
use crate::db::mailings::{self, MailingChanges, NewMailing};
use crate::error::Result;
use crate::output::{print_list, print_one};
use crate::validate;

pub async fn run(ctx: &Ctx, cmd: MailingsCmd) -> Result<()> {
    let actor = ctx.actor().await?;
    let db = ctx.db().await?;
    let format = ctx.format();
    let read = scope(&actor, Access::Read);
    let write = scope(&actor, Access::Write);
    // Changing a mailing: it must be visible, then the actor must be allowed to change it.
    let writable = |id: i64| {
        let actor = actor.clone();
        async move { policy::check_write(&actor, mailings::get(db, read, id).await?.owner_id) }
    };
    match cmd {
        MailingsCmd::Add {
            message,
            start,
            end,
            clients,
            all_clients,
        } => {
            let start_at = validate::datetime("start", &start)?;
            let end_at = validate::datetime("end", &end)?;
            validate::window(start_at, end_at)?;
            let id = mailings::add(
                db,
                &NewMailing {
                    owner_id: actor.id,
                    message_id: message,
                    start_at,
                    end_at,
                    client_ids: &clients,
                    all_clients,
                },
            )
            .await?;
            print_one(format, &mailings::get(db, read, id).await?)
        }
        MailingsCmd::List { status } => {
            let status = status.map(|s| match s {
                MailingStatus::Created => "created",
                MailingStatus::Active => "active",
                MailingStatus::Completed => "completed",
            });
            print_list(format, &mailings::list(db, read, status).await?)
        }
        MailingsCmd::Show { id } => print_one(format, &mailings::get(db, read, id).await?),
        MailingsCmd::Edit {
            id,
            message,
            start,
            end,
        } => {
            let changes = MailingChanges {
                message_id: message,
                start_at: start.map(|s| validate::datetime("start", &s)).transpose()?,
                end_at: end.map(|s| validate::datetime("end", &s)).transpose()?,
            };
            writable(id).await?;
            mailings::update(db, write, id, &changes).await?;
            print_one(format, &mailings::get(db, read, id).await?)
        }
        MailingsCmd::Delete {
            ids,
            yes,
            purge_history,
        } => {
            for &id in &ids {
                writable(id).await?;
            }
            mailings::check_history(db, &ids, purge_history).await?;
            confirm_delete("mailings", &ids, yes)?;
            let n = mailings::delete(db, write, &ids, purge_history).await?;
            notice(format!("deleted {n} mailing(s)"));
            Ok(())
        }
        MailingsCmd::AddClients { id, client_ids } => {
            writable(id).await?;
            let n = mailings::add_clients(db, write, id, &client_ids).await?;
            notice(format!("added {n} recipient(s)"));
            print_one(format, &mailings::get(db, read, id).await?)
        }
        MailingsCmd::RemoveClients { id, client_ids } => {
            writable(id).await?;
            let n = mailings::remove_clients(db, write, id, &client_ids).await?;
            notice(format!("removed {n} recipient(s)"));
            print_one(format, &mailings::get(db, read, id).await?)
        }
        MailingsCmd::Disable { id } => toggle(ctx, &actor, id, true).await,
        MailingsCmd::Enable { id } => toggle(ctx, &actor, id, false).await,
        MailingsCmd::Send { id, opts } => send::send_one(ctx, &actor, id, opts).await,
    }
}

async fn toggle(ctx: &Ctx, actor: &policy::Actor, id: i64, disabled: bool) -> Result<()> {
    policy::require(actor, Capability::ToggleMailings)?;
    let db = ctx.db().await?;
    mailings::set_disabled(db, id, disabled).await?;
    notice(format!(
        "mailing {id} {}",
        if disabled { "disabled" } else { "enabled" }
    ));
    print_one(
        ctx.format(),
        &mailings::get(db, scope(actor, Access::Read), id).await?,
    )
}
