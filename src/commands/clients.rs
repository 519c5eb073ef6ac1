//! clients add | list | show | edit | delete | import | export.

use super::{Ctx, confirm_delete, import, notice};
use crate::auth::policy::{Access, check_write, scope};
use crate::cli::ClientsCmd;
use crate::db::clients::{self, ClientChanges, NewClient};
use crate::db::fields::Fields;
use crate::db::tags::Tags;
use crate::error::{Error, Result};
use crate::output::{print_list, print_one};
use crate::validate::{self, MAX_COMMENT, MAX_NAME};

/// Applies `--field KEY=VALUE` flags (validated) to `fields`; `KEY=` removes the key.
fn apply_fields(fields: &mut Fields, flags: &[String]) -> Result<()> {
    for flag in flags {
        let Some((key, value)) = flag.split_once('=') else {
            return Err(Error::invalid(
                "field",
                format!("'{flag}' is not KEY=VALUE (KEY= removes the field)"),
            ));
        };
        let key = validate::field_key("field", key)?;
        let value = validate::field_value(&key, value)?;
        fields.set(key, value);
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: ClientsCmd) -> Result<()> {
    let actor = ctx.actor().await?;
    let db = ctx.db().await?;
    let format = ctx.format();
    match cmd {
        ClientsCmd::Add {
            email,
            name,
            comment,
            tags,
            fields,
        } => {
            let email = validate::email("email", &email)?;
            let name = validate::line("name", name.as_deref().unwrap_or(""), MAX_NAME)?;
            let comment = validate::text("comment", comment.as_deref().unwrap_or(""), MAX_COMMENT)?;
            let tags = Tags::from_flags("tag", &tags)?;
            let mut map = Fields::default();
            apply_fields(&mut map, &fields)?;
            let new = NewClient {
                email: &email,
                full_name: &name,
                comment: &comment,
                tags: &tags,
                fields: &map,
            };
            print_one(format, &clients::add(db, actor.id, &new).await?)
        }
        ClientsCmd::List { search, tags } => {
            let tags = Tags::from_flags("tag", &tags)?;
            let list =
                clients::list(db, scope(&actor, Access::Read), search.as_deref(), &tags).await?;
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
            tags,
            untags,
            fields,
        } => {
            let add_tags = Tags::from_flags("tag", &tags)?;
            let remove_tags = Tags::from_flags("untag", &untags)?;
            let mut changes = ClientChanges {
                email: email.map(|e| validate::email("email", &e)).transpose()?,
                full_name: name
                    .map(|n| validate::line("name", &n, MAX_NAME))
                    .transpose()?,
                comment: comment
                    .map(|c| validate::text("comment", &c, MAX_COMMENT))
                    .transpose()?,
                tags: None,
                fields: None,
            };
            let current = clients::get(db, scope(&actor, Access::Read), id).await?;
            check_write(&actor, current.owner_id)?;
            if !add_tags.is_empty() || !remove_tags.is_empty() {
                let mut set = current.tags.clone();
                for t in add_tags.0 {
                    set.insert(t);
                }
                for t in &remove_tags.0 {
                    set.remove(t);
                }
                changes.tags = Some(set);
            }
            if !fields.is_empty() {
                let mut map = current.fields.clone();
                apply_fields(&mut map, &fields)?;
                changes.fields = Some(map);
            }
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
