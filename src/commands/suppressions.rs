//! suppressions list|add|remove|import: an owner's addresses not to write to again.

use super::{Ctx, notice};
use crate::auth::policy::{self, Actor};
use crate::cli::SuppressionsCmd;
use crate::db::accounts::{self, email_key};
use crate::db::suppressions::{self, Reason};
use crate::error::{Error, Result};
use crate::output::print_list;
use crate::validate;

pub async fn run(ctx: &Ctx, cmd: SuppressionsCmd) -> Result<()> {
    let actor = ctx.actor().await?;
    match cmd {
        SuppressionsCmd::List { owner } => {
            let owner_id = owner_of(ctx, &actor, owner.as_deref()).await?;
            let rows = suppressions::list(ctx.db().await?, owner_id).await?;
            print_list(ctx.format(), &rows)
        }
        SuppressionsCmd::Add { emails, owner } => {
            let owner_id = owner_of(ctx, &actor, owner.as_deref()).await?;
            let emails = checked(emails.iter().map(|e| ("email".to_string(), e.as_str())))?;
            add(ctx, owner_id, &emails).await
        }
        SuppressionsCmd::Remove { emails, owner } => {
            let owner_id = owner_of(ctx, &actor, owner.as_deref()).await?;
            let emails = checked(emails.iter().map(|e| ("email".to_string(), e.as_str())))?;
            let n = suppressions::remove_many(ctx.db().await?, owner_id, &emails).await?;
            notice(format!("{n} address(es) allowed again"));
            Ok(())
        }
        SuppressionsCmd::Import { file, owner } => {
            let owner_id = owner_of(ctx, &actor, owner.as_deref()).await?;
            let text = read(&file)?;
            let list = addresses(&text)?;
            let emails = checked(list.iter().map(|(f, e)| (f.clone(), e.as_str())))?;
            add(ctx, owner_id, &emails).await
        }
    }
}

async fn add(ctx: &Ctx, owner_id: i64, emails: &[String]) -> Result<()> {
    let n = suppressions::add_many(ctx.db().await?, owner_id, emails, Reason::Manual).await?;
    notice(format!(
        "{n} address(es) suppressed, {} already were",
        emails.len() as u64 - n
    ));
    Ok(())
}

/// Whose list: the caller's own, or with `--owner` another account's (administrators only;
/// policy::check_write says exit 3 for anyone else).
async fn owner_of(ctx: &Ctx, actor: &Actor, owner: Option<&str>) -> Result<i64> {
    let Some(email) = owner else {
        return Ok(actor.id);
    };
    let db = ctx.db().await?;
    let account = accounts::find_by_email(db, email).await?;
    match account {
        Some(a) => {
            policy::check_write(actor, a.id)?;
            Ok(a.id)
        }
        // Only an administrator learns whether the account exists.
        None => {
            policy::check_write(actor, -1)?;
            Err(Error::not_found("account", email))
        }
    }
}

/// Valid, de-duplicated addresses, or exit 5 naming the first bad one (nothing changed).
fn checked<'a>(items: impl Iterator<Item = (String, &'a str)>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (field, raw) in items {
        let e = validate::email(&field, raw)?;
        if !out.iter().any(|o| email_key(o) == email_key(&e)) {
            out.push(e);
        }
    }
    Ok(out)
}

fn read(file: &str) -> Result<String> {
    let bytes = if file == "-" {
        use std::io::Read;
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| Error::runtime(format!("cannot read standard input: {e}")))?;
        b
    } else {
        std::fs::read(file).map_err(|e| Error::runtime(format!("cannot read {file}: {e}")))?
    };
    String::from_utf8(bytes).map_err(|e| Error::invalid(file, format!("is not UTF-8 ({e})")))
}

/// One address per line (blank lines and `#` comments skipped), or CSV whose header has an
/// `email` column. Each address comes with the field name that errors will quote.
fn addresses(text: &str) -> Result<Vec<(String, String)>> {
    let text = text.trim_start_matches('\u{feff}');
    let first = text.lines().next().unwrap_or("").to_ascii_lowercase();
    if first.contains(',') || first.trim().trim_matches('"') == "email" {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| Error::invalid("line 1", e))?
            .clone();
        let col = headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case("email"))
            .ok_or_else(|| Error::invalid("line 1", "a CSV file needs an `email` column"))?;
        let mut out = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| Error::invalid("csv", e))?;
            let line = record.position().map_or(0, |p| p.line());
            let cell = record.get(col).unwrap_or("").trim();
            out.push((format!("line {line}"), cell.to_string()));
        }
        return Ok(out);
    }
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| (format!("line {}", i + 1), l.trim().to_string()))
        .collect())
}
