//! messages add | list | show | edit | delete.

use std::path::Path;

use super::{Ctx, confirm_delete, notice, preview};
use crate::auth::policy::{Access, check_write, scope};
use crate::cli::MessagesCmd;
use crate::db::messages::{self, MessageChanges};
use crate::error::{Error, Result};
use crate::mail::placeholders;
use crate::output::{print_list, print_one};
use crate::validate;

/// Bodies are capped so one message cannot fill the database by mistake.
const MAX_BODY: usize = 1_000_000;

fn read_file(field: &str, path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(field, format!("cannot read {}: {e}", path.display())))?;
    validate::text(field, &text, MAX_BODY)
}

fn body(body: Option<String>, body_file: Option<&Path>) -> Result<Option<String>> {
    match (body, body_file) {
        (Some(b), _) => Ok(Some(validate::text("body", &b, MAX_BODY)?)),
        (None, Some(f)) => Ok(Some(read_file("body-file", f)?)),
        (None, None) => Ok(None),
    }
}

pub async fn run(ctx: &Ctx, cmd: MessagesCmd) -> Result<()> {
    let actor = ctx.actor().await?;
    let db = ctx.db().await?;
    let format = ctx.format();
    match cmd {
        MessagesCmd::Add {
            subject,
            body: b,
            body_file,
            html_file,
        } => {
            let subject = validate::subject(&subject)?;
            let text = body(b, body_file.as_deref())?.unwrap_or_default();
            if text.trim().is_empty() {
                return Err(Error::invalid("body", "is required"));
            }
            let html = html_file.map(|f| read_file("html-file", &f)).transpose()?;
            placeholders::check("subject", &subject)?;
            placeholders::check("body", &text)?;
            if let Some(h) = &html {
                placeholders::check("html-file", h)?;
            }
            let msg = messages::add(db, actor.id, &subject, &text, html.as_deref()).await?;
            print_one(format, &msg)
        }
        MessagesCmd::List => print_list(
            format,
            &messages::list(db, scope(&actor, Access::Read)).await?,
        ),
        MessagesCmd::Show { id } => print_one(
            format,
            &messages::get(db, scope(&actor, Access::Read), id).await?,
        ),
        MessagesCmd::Edit {
            id,
            subject,
            body: b,
            body_file,
            html_file,
            no_html,
        } => {
            let changes = MessageChanges {
                subject: subject.map(|s| validate::subject(&s)).transpose()?,
                body: body(b, body_file.as_deref())?,
                html: if no_html {
                    Some(None)
                } else {
                    html_file
                        .map(|f| read_file("html-file", &f).map(Some))
                        .transpose()?
                },
            };
            if changes.body.as_deref().is_some_and(|b| b.trim().is_empty()) {
                return Err(Error::invalid("body", "is required"));
            }
            if let Some(s) = &changes.subject {
                placeholders::check("subject", s)?;
            }
            if let Some(b) = &changes.body {
                placeholders::check("body", b)?;
            }
            if let Some(Some(h)) = &changes.html {
                placeholders::check("html-file", h)?;
            }
            check_write(
                &actor,
                messages::get(db, scope(&actor, Access::Read), id)
                    .await?
                    .owner_id,
            )?;
            let msg = messages::update(db, scope(&actor, Access::Write), id, &changes).await?;
            print_one(format, &msg)
        }
        MessagesCmd::Preview { id, client } => preview::message(ctx, &actor, id, client).await,
        MessagesCmd::Delete {
            ids,
            yes,
            force,
            purge_history,
        } => {
            for &id in &ids {
                check_write(
                    &actor,
                    messages::get(db, scope(&actor, Access::Read), id)
                        .await?
                        .owner_id,
                )?;
            }
            // Only with --force do the mailings (and their history) go; without it the
            // transaction refuses with "--force" first, which is the flag to think about first.
            if force {
                messages::check_history(db, &ids, purge_history).await?;
            }
            confirm_delete("messages", &ids, yes)?;
            let n = messages::delete(db, scope(&actor, Access::Write), &ids, force, purge_history)
                .await?;
            notice(format!("deleted {n} message(s)"));
            Ok(())
        }
    }
}
