//! Building letters with lettre.

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::db::fields::Fields;
use crate::error::{Error, Result};
use crate::mail::placeholders;

pub fn mailbox(field: &str, addr: &str) -> Result<Mailbox> {
    addr.parse::<Mailbox>()
        .map_err(|e| Error::invalid(field, format!("'{addr}' is not a usable address ({e})")))
}

/// A plain-text letter from the installation itself (confirmation, password reset).
pub fn system_letter(config: &Config, to: &str, subject: &str, text: &str) -> Result<Message> {
    Message::builder()
        .from(mailbox("MAILCTL_FROM", &config.from)?)
        .to(mailbox("email", to)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(text.to_string())
        .map_err(|e| Error::runtime(format!("cannot build the letter: {e}")))
}

/// A mailing's letter, prepared once and filled in per recipient.
pub struct Template {
    pub mailing_id: i64,
    from: Mailbox,
    /// The domain of `MAILCTL_FROM`, for stable Message-IDs.
    domain: String,
    base_url: String,
    /// `MAILCTL_BOUNCE_ADDRESS`: when set, each letter's envelope sender is its VERP address.
    bounce_address: Option<String>,
    secret: Vec<u8>,
    subject: placeholders::Template,
    text: placeholders::Template,
    html: Option<placeholders::Template>,
    /// Some placeholder names a custom field: the recipient's fields are read.
    uses_fields: bool,
    /// Message-ID and List-Unsubscribe of the mailing (not for a message's preview).
    mailing_headers: bool,
}

/// One recipient of a letter.
pub struct Recipient<'a> {
    pub client_id: i64,
    pub email: &'a str,
    pub full_name: &'a str,
    /// The client's custom fields, as stored (a JSON object).
    pub fields: &'a str,
}

/// A placeholder's value for one recipient: its name, address, or one of its fields.
fn value(to: &Recipient<'_>, fields: &Fields, key: &str) -> Option<String> {
    match key {
        "full_name" => Some(to.full_name.to_string()),
        "email" => Some(to.email.to_string()),
        _ => fields.get(key).map(str::to_string),
    }
}

/// A message's subject as the recipient's letter carries it (for the dry run's list).
pub fn subject(subject: &str, to: &Recipient<'_>) -> String {
    let fields = Fields::from(to.fields.to_string());
    placeholders::Template::parse(subject)
        .fill(|key| value(to, &fields, key), false)
        .replace(['\r', '\n'], " ")
        .trim()
        .to_string()
}

impl Template {
    pub fn new(
        config: &Config,
        secret: Vec<u8>,
        mailing_id: i64,
        subject: &str,
        text: &str,
        html: Option<&str>,
    ) -> Result<Template> {
        let from = mailbox("MAILCTL_FROM", &config.from)?;
        let domain = from.email.domain().to_string();
        let subject = placeholders::Template::parse(subject);
        let text = placeholders::Template::parse(text);
        let html = html
            .filter(|h| !h.trim().is_empty())
            .map(placeholders::Template::parse);
        let uses_fields = subject.uses_fields()
            || text.uses_fields()
            || html.as_ref().is_some_and(|h| h.uses_fields());
        Ok(Template {
            mailing_id,
            from,
            domain,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            bounce_address: config.bounce_address.clone(),
            secret,
            subject,
            text,
            html,
            uses_fields,
            mailing_headers: true,
        })
    }

    /// A message's letter outside any mailing (`messages preview`): no Message-ID nor
    /// List-Unsubscribe.
    pub fn for_message(
        config: &Config,
        subject: &str,
        text: &str,
        html: Option<&str>,
    ) -> Result<Template> {
        let mut t = Template::new(config, Vec::new(), 0, subject, text, html)?;
        t.mailing_headers = false;
        Ok(t)
    }

    /// `<mailing-{m}.client-{c}@{domain}>`: the same letter always has the same id, so a
    /// duplicate (after a crash) can be recognised by the receiving side.
    pub fn message_id(&self, client_id: i64) -> String {
        format!(
            "<mailing-{}.client-{client_id}@{}>",
            self.mailing_id, self.domain
        )
    }

    /// The envelope sender: the signed VERP address when a bounce address is configured
    /// (bounces then name their letter), else `MAILCTL_FROM`.
    pub fn return_path(&self, client_id: i64) -> Result<lettre::Address> {
        let Some(bounce) = &self.bounce_address else {
            return Ok(self.from.email.clone());
        };
        let verp = crate::auth::verp::return_path(bounce, &self.secret, self.mailing_id, client_id);
        verp.parse()
            .map_err(|e| Error::invalid("MAILCTL_BOUNCE_ADDRESS", format!("'{verp}': {e}")))
    }

    pub fn unsubscribe_url(&self, client_id: i64) -> String {
        format!(
            "{}/unsubscribe/{}",
            self.base_url,
            crate::auth::unsubscribe::token(&self.secret, self.mailing_id, client_id)
        )
    }

    /// The letter for one recipient: multipart/alternative (text, and HTML when the message
    /// has it), Date, Message-ID, List-Unsubscribe (+ RFC 8058 one-click).
    pub fn letter(&self, to: &Recipient<'_>) -> Result<Message> {
        self.build(to, to.email, self.message_id(to.client_id))
    }

    /// `mailings test`: the recipient's letter, addressed to `address` instead, under a
    /// Message-ID of its own (the real letter may still go out later).
    pub fn test_letter(&self, to: &Recipient<'_>, address: &str) -> Result<Message> {
        let id = format!(
            "<mailing-{}.client-{}.test-{}@{}>",
            self.mailing_id,
            to.client_id,
            hex::encode(rand::random::<[u8; 6]>()),
            self.domain
        );
        self.build(to, address, id)
    }

    fn build(&self, to: &Recipient<'_>, address: &str, message_id: String) -> Result<Message> {
        let address = address
            .parse::<lettre::Address>()
            .map_err(|e| Error::invalid("email", format!("'{address}': {e}")))?;
        let name = to.full_name.trim();
        // The envelope is given rather than parsed back out of the From and To headers.
        let envelope = Envelope::new(Some(self.return_path(to.client_id)?), vec![address.clone()])
            .map_err(|e| Error::invalid("email", format!("'{address}': {e}")))?;
        let mailbox = Mailbox::new((!name.is_empty()).then(|| name.to_string()), address);
        let fields = if self.uses_fields {
            Fields::from(to.fields.to_string())
        } else {
            Fields::default()
        };
        let value = |key: &str| value(to, &fields, key);
        // A boundary of its own per letter, but the same every time the letter is made, so a
        // preview equals the letter sent (apart from Date).
        let boundary = format!(
            "=_{}",
            &hex::encode(Sha256::digest(self.message_id(to.client_id).as_bytes()))[..32]
        );
        let mut body = MultiPart::alternative()
            .boundary(boundary)
            .singlepart(SinglePart::plain(self.text.fill(value, false)));
        if let Some(html) = &self.html {
            body = body.singlepart(SinglePart::html(html.fill(value, true)));
        }
        let subject = self.subject.fill(value, false);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(mailbox)
            .subject(subject.replace(['\r', '\n'], " ").trim())
            .date_now();
        if self.mailing_headers {
            builder = builder
                .message_id(Some(message_id))
                .header(ListUnsubscribe(format!(
                    "<{}>",
                    self.unsubscribe_url(to.client_id)
                )))
                .header(ListUnsubscribePost);
        }
        builder
            .envelope(envelope)
            .multipart(body)
            .map_err(|e| Error::runtime(format!("cannot build the letter: {e}")))
    }
}

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}
