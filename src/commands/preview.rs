//! messages preview | mailings preview | mailings test: the exact letter a client would get,
//! on stdout or sent once to another address (no delivery, attempt or stats).

use std::io::Write;

use serde::Serialize;

use super::Ctx;
use crate::auth::policy::{Access, Actor, scope};
use crate::db::clients::{self, Client};
use crate::db::{deliveries, messages, suppressions};
use crate::error::{Error, Result};
use crate::mail::compose::{Recipient, Template};
use crate::mail::transport::Endpoint;
use crate::output::{Record, print_one};
use crate::smtp::{Verdict, wire};
use crate::validate;

/// Who a letter is personalised for: a client, or a made-up recipient when there is none.
struct Person {
    client_id: i64,
    email: String,
    full_name: String,
    fields: String,
}

impl Person {
    fn sample() -> Person {
        Person {
            client_id: 0,
            email: "recipient@example.com".into(),
            full_name: "Sample Recipient".into(),
            fields: "{}".into(),
        }
    }

    fn recipient(&self) -> Recipient<'_> {
        Recipient {
            client_id: self.client_id,
            email: &self.email,
            full_name: &self.full_name,
            fields: &self.fields,
        }
    }
}

impl From<Client> for Person {
    fn from(c: Client) -> Person {
        Person {
            client_id: c.id,
            fields: c.fields.stored(),
            email: c.email,
            full_name: c.full_name,
        }
    }
}

/// `--client ID`: a client the actor sees, of the record's owner (else exit 4).
async fn chosen(ctx: &Ctx, actor: &Actor, id: i64, owner_id: i64) -> Result<Person> {
    let client = clients::get(ctx.db().await?, scope(actor, Access::Read), id).await?;
    if client.owner_id != owner_id {
        return Err(Error::not_found("client", id));
    }
    Ok(client.into())
}

/// The letter's bytes as they go on the wire (CRLF line ends), as the outbox writes them.
fn wire_bytes(letter: &lettre::Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::crlf(&letter.formatted(), &mut bytes);
    bytes
}

fn print_letter(letter: &lettre::Message) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(&wire_bytes(letter))?;
    Ok(out.flush()?)
}

pub async fn message(ctx: &Ctx, actor: &Actor, id: i64, client: Option<i64>) -> Result<()> {
    let db = ctx.db().await?;
    let msg = messages::get(db, scope(actor, Access::Read), id).await?;
    let person = match client {
        Some(c) => chosen(ctx, actor, c, msg.owner_id).await?,
        None => clients::first_of_owner(db, msg.owner_id)
            .await?
            .map_or_else(Person::sample, Person::from),
    };
    let template =
        Template::for_message(&ctx.config, &msg.subject, &msg.body, msg.html.as_deref())?;
    print_letter(&template.letter(&person.recipient())?)
}

/// The mailing's letter template and the person it is for.
async fn mailing_letter(
    ctx: &Ctx,
    actor: &Actor,
    access: Access,
    id: i64,
    client: Option<i64>,
) -> Result<(Template, Person)> {
    let db = ctx.db().await?;
    let target = deliveries::target(db, scope(actor, access), id).await?;
    let person = match client {
        Some(c) => chosen(ctx, actor, c, target.owner_id).await?,
        None => clients::first_recipient(db, id)
            .await?
            .map_or_else(Person::sample, Person::from),
    };
    // The same secret as the sender's, so the unsubscribe link is the one sent.
    let secret = suppressions::secret(db, "unsubscribe").await?;
    let template = Template::new(
        &ctx.config,
        secret,
        id,
        &target.subject,
        &target.body,
        target.html.as_deref(),
    )?;
    Ok((template, person))
}

pub async fn mailing(ctx: &Ctx, actor: &Actor, id: i64, client: Option<i64>) -> Result<()> {
    let (template, person) = mailing_letter(ctx, actor, Access::Read, id, client).await?;
    print_letter(&template.letter(&person.recipient())?)
}

/// What `mailings test` did. Field names are a public contract.
#[derive(Debug, Serialize)]
pub struct TestSend {
    pub mailing_id: i64,
    pub client_id: i64,
    pub to: String,
    pub accepted: bool,
    pub reply: String,
}

impl Record for TestSend {
    const HEADERS: &'static [&'static str] =
        &["mailing_id", "client_id", "to", "accepted", "reply"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.mailing_id.to_string(),
            self.client_id.to_string(),
            self.to.clone(),
            self.accepted.to_string(),
            self.reply.clone(),
        ]
    }
}

/// One copy now through the configured transport; changes nothing in the database.
pub async fn test(ctx: &Ctx, actor: &Actor, id: i64, to: &str, client: Option<i64>) -> Result<()> {
    let to = validate::email("to", to)?;
    let endpoint = Endpoint::from_config(&ctx.config)?;
    // Sending is for the owner or an administrator, as `mailings send`.
    let (template, person) = mailing_letter(ctx, actor, Access::Write, id, client).await?;
    let letter = template.test_letter(&person.recipient(), &to)?;
    let mut session = endpoint.session();
    let outcome = session.send(&letter).await;
    session.close().await;
    let accepted = outcome.verdict() == Verdict::Positive;
    let result = TestSend {
        mailing_id: id,
        client_id: person.client_id,
        to,
        accepted,
        reply: outcome.text().to_string(),
    };
    print_one(ctx.format(), &result)?;
    if !accepted {
        return Err(Error::runtime(format!(
            "the test letter was not accepted: {}",
            result.reply
        )));
    }
    Ok(())
}
