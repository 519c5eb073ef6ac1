//! Building letters with lettre.

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::web::pages::escape;

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
    subject: String,
    text: String,
    html: Option<String>,
}

/// One recipient of a letter.
pub struct Recipient<'a> {
    pub client_id: i64,
    pub email: &'a str,
    pub full_name: &'a str,
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
        Ok(Template {
            mailing_id,
            from,
            domain,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            bounce_address: config.bounce_address.clone(),
            secret,
            subject: subject.to_string(),
            text: text.to_string(),
            html: html.filter(|h| !h.trim().is_empty()).map(str::to_string),
        })
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
        let address = to
            .email
            .parse::<lettre::Address>()
            .map_err(|e| Error::invalid("email", format!("'{}': {e}", to.email)))?;
        let name = to.full_name.trim();
        // The envelope is given rather than parsed back out of the From and To headers.
        let envelope = Envelope::new(Some(self.return_path(to.client_id)?), vec![address.clone()])
            .map_err(|e| Error::invalid("email", format!("'{}': {e}", to.email)))?;
        let mailbox = Mailbox::new((!name.is_empty()).then(|| name.to_string()), address);
        let fill = |s: &str| fill(s, to.full_name, to.email, false);
        let mut body = MultiPart::alternative().singlepart(SinglePart::plain(fill(&self.text)));
        if let Some(html) = &self.html {
            body = body.singlepart(SinglePart::html(self::fill(
                html,
                to.full_name,
                to.email,
                true,
            )));
        }
        Message::builder()
            .from(self.from.clone())
            .to(mailbox)
            .subject(fill(&self.subject).replace(['\r', '\n'], " ").trim())
            .date_now()
            .message_id(Some(self.message_id(to.client_id)))
            .header(ListUnsubscribe(format!(
                "<{}>",
                self.unsubscribe_url(to.client_id)
            )))
            .header(ListUnsubscribePost)
            .envelope(envelope)
            .multipart(body)
            .map_err(|e| Error::runtime(format!("cannot build the letter: {e}")))
    }
}

/// Replaces `{{full_name}}` and `{{email}}`; in HTML the values are escaped. One pass over
/// the template (it runs for every letter).
pub fn fill(template: &str, full_name: &str, email: &str, html: bool) -> String {
    if !template.contains("{{") {
        return template.to_string();
    }
    let (name, email) = if html {
        (escape(full_name), escape(email))
    } else {
        (full_name.to_string(), email.to_string())
    };
    let mut out = String::with_capacity(template.len() + 2 * name.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{full_name}}") {
            out.push_str(&name);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{{email}}") {
            out.push_str(&email);
            rest = after;
        } else {
            out.push_str("{{");
            rest = &tail[2..];
        }
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_escaped_in_html() {
        assert_eq!(
            fill("Hi {{full_name}} <{{email}}>", "A&B", "a@x", false),
            "Hi A&B <a@x>"
        );
        assert_eq!(
            fill("<p>{{full_name}}</p>", "<b>A&B</b>", "a@x", true),
            "<p>&lt;b&gt;A&amp;B&lt;/b&gt;</p>"
        );
        assert_eq!(
            fill(
                "{{{{email}} {{ {{full_name}}{{nope}} {{",
                "Ann",
                "a@x",
                false
            ),
            "{{a@x {{ Ann{{nope}} {{"
        );
    }
}
