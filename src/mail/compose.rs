//! Building letters with lettre.

use lettre::Message;
use lettre::message::{Mailbox, header::ContentType};

use crate::config::Config;
use crate::error::{Error, Result};

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
