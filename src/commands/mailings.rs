//! mailings add | list | show | edit | delete | add-clients | remove-clients | recipients |
//! disable | enable | send.

use super::{Ctx, confirm_delete, notice, preview, send};
use crate::auth::policy::{self, Access, Capability, scope};
use crate::cli::{MailingStatus, MailingsCmd};
use crate::db::mailings::{self, Filter, Mailing, MailingChanges, NewMailing};
use crate::db::tags::Tags;
use crate::db::{self as database, recipients};
use crate::error::{Error, Result};
use crate::output::{print_list, print_one, rfc3339};
use crate::{validate, when};

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
            tags,
        } => {
            let tags = Tags::from_flags("tag", &tags)?;
            // One `now` for the whole command: `--end now` is not "in the past".
            let now = database::now();
            let start_at = when::parse("start", &start, now)?;
            let end_at = when::parse("end", &end, now)?;
            validate::window(start_at, end_at)?;
            // A window already over would be a mailing that can never send anything.
            if end_at <= now {
                return Err(Error::invalid(
                    "end",
                    format!("{} has already passed", rfc3339(&end_at)),
                ));
            }
            let id = mailings::add(
                db,
                &NewMailing {
                    owner_id: actor.id,
                    message_id: message,
                    start_at,
                    end_at,
                    client_ids: &clients,
                    all_clients,
                    tags: &tags,
                },
            )
            .await?;
            let created = mailings::get(db, read, id).await?;
            echo_window(&created);
            print_one(format, &created)
        }
        MailingsCmd::List { status } => {
            let filter = status.map(|s| match s {
                MailingStatus::Created => Filter::Status("created"),
                MailingStatus::Active => Filter::Status("active"),
                MailingStatus::Completed => Filter::Status("completed"),
                MailingStatus::Disabled => Filter::Disabled,
                MailingStatus::EndedWithLettersLeft => Filter::EndedWithLettersLeft,
            });
            print_list(format, &mailings::list(db, read, filter).await?)
        }
        MailingsCmd::Show { id } => print_one(format, &mailings::get(db, read, id).await?),
        MailingsCmd::Edit {
            id,
            message,
            start,
            end,
            all_clients,
            tags,
        } => {
            let now = database::now();
            let changes = MailingChanges {
                message_id: message,
                start_at: start.map(|s| when::parse("start", &s, now)).transpose()?,
                end_at: end.map(|s| when::parse("end", &s, now)).transpose()?,
                all_clients,
                tags: (!tags.is_empty())
                    .then(|| Tags::from_flags("tag", &tags))
                    .transpose()?,
            };
            // Ending a mailing now is fine; moving its end into the past is a mistake.
            if let Some(end_at) = changes.end_at
                && end_at < now
            {
                return Err(Error::invalid(
                    "end",
                    format!("{} has already passed", rfc3339(&end_at)),
                ));
            }
            writable(id).await?;
            mailings::update(db, write, id, &changes).await?;
            let edited = mailings::get(db, read, id).await?;
            if changes.start_at.is_some() || changes.end_at.is_some() {
                echo_window(&edited);
            }
            print_one(format, &edited)
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
        MailingsCmd::Recipients { id, state } => {
            mailings::get(db, read, id).await?;
            let rows = recipients::list(db, id, state.map(|s| s.as_str())).await?;
            print_list(format, &rows)
        }
        MailingsCmd::Disable { id } => toggle(ctx, &actor, id, true).await,
        MailingsCmd::Enable { id } => toggle(ctx, &actor, id, false).await,
        MailingsCmd::Send { id, opts } => send::send_one(ctx, &actor, id, opts).await,
        MailingsCmd::Preview { id, client } => preview::mailing(ctx, &actor, id, client).await,
        MailingsCmd::Test { id, to, client } => preview::test(ctx, &actor, id, &to, client).await,
    }
}

/// The window as a person reads it, in their zone: "mailing 7 starts Sat 05 Dec 09:00 MSK,
/// in 2 days; ends ...". On stderr, so scripts reading stdout are not disturbed.
fn echo_window(m: &Mailing) {
    notice(format!(
        "mailing {} {}",
        m.id,
        when::describe_window(&m.start_at, &m.end_at, database::now())
    ));
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
