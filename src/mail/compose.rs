//! Building letters with lettre.

use email_encoding::body::Encoding;
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};

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
        let boundary = &hex::encode(Sha256::digest(self.message_id(to.client_id).as_bytes()))[..32];
        // The content type parsed once (lettre's `alternative().boundary(..)` parses it twice
        // and makes a random boundary first).
        let content_type =
            ContentType::parse(&format!("multipart/alternative; boundary=\"=_{boundary}\""))
                .map_err(|e| Error::runtime(format!("cannot build the letter: {e}")))?;
        let mut body = MultiPart::builder()
            .header(content_type)
            .singlepart(SinglePart::plain(part_body(self.text.fill(value, false))));
        if let Some(html) = &self.html {
            body = body.singlepart(SinglePart::html(part_body(html.fill(value, true))));
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

/// A part's body exactly as lettre's `Body::new` makes it, in one pass over the text: lettre
/// puts a `\r` before each bare `\n` with a `String::insert` (a copy of the rest of the text
/// per line: a tenth of the making of a 2 KB letter). The encoding is chosen as lettre chooses
/// it, on the text as given.
fn part_body(text: String) -> Body {
    let encoding = match Encoding::choose(text.as_str(), false) {
        Encoding::SevenBit => ContentTransferEncoding::SevenBit,
        Encoding::EightBit => ContentTransferEncoding::EightBit,
        Encoding::QuotedPrintable => ContentTransferEncoding::QuotedPrintable,
        Encoding::Base64 => ContentTransferEncoding::Base64,
    };
    let text = crlf(text);
    if encoding == ContentTransferEncoding::SevenBit {
        // Chosen because the text is ASCII in short lines: nothing to encode.
        return Body::dangerous_pre_encoded(text.into_bytes(), encoding);
    }
    // Only 7bit and 8bit can be refused, and 8bit is never chosen for a relay without UTF-8.
    Body::new_with_encoding(text, encoding).unwrap_or_else(Body::new)
}

/// `\r\n` for every `\n` not already after a `\r`.
fn crlf(text: String) -> String {
    let bare = |piece: &&str| piece.ends_with('\n') && !piece.ends_with("\r\n");
    if !text.split_inclusive('\n').any(|p| bare(&p)) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    for piece in text.split_inclusive('\n') {
        if bare(&piece) {
            out.push_str(&piece[..piece.len() - 1]);
            out.push_str("\r\n");
        } else {
            out.push_str(piece);
        }
    }
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
    fn part_body_is_what_lettre_makes() {
        let line = |n: usize| "x".repeat(n);
        let cases = [
            String::new(),
            "plain\n".into(),
            "\nleading and trailing\n".into(),
            "mixed\r\nends\nhere\r\n\n\n".into(),
            "a lone \r stays\r".into(),
            "no newline at all".into(),
            // 7bit up to 75 characters a line, then quoted-printable.
            format!("{}\n{}\n", line(74), line(75)),
            format!("{}\n", line(76)),
            format!("{}\r\n", line(75)),
            "Привет, {name}!\nВторая строка\n".into(),
            "mostly ascii, one é\n".into(),
            "nul \0 byte\n".into(),
            "tab\tand = sign\n".into(),
        ];
        for text in cases {
            let ours = part_body(text.clone());
            let lettre = Body::new(text.clone());
            assert_eq!(ours.encoding(), lettre.encoding(), "{text:?}");
            assert_eq!(ours.as_ref(), lettre.as_ref(), "{text:?}");
        }
    }
}
