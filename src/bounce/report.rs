//! Reading one incoming message: a delivery status notification (RFC 3464), a spam complaint
//! (ARF, RFC 5965), a plain-text bounce, or something else. Only the structure decides; the
//! words of the report are kept for people (the attempt's server response).

use mailparse::{MailHeaderMap, ParsedMail};
use sha2::{Digest, Sha256};

/// What a report says happened to the letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 5.x.x: the address will not work.
    Hard,
    /// 4.x.x (or delayed): it may work later.
    Soft,
    /// The recipient marked the letter as spam.
    Complaint,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hard => "hard",
            Kind::Soft => "soft",
            Kind::Complaint => "complaint",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub kind: Kind,
    /// The report's own words: status and diagnostic, or the feedback type.
    pub text: String,
    /// Addresses the report names as failed or complaining (lower-cased); empty when it
    /// names none (a plain-text bounce, an ARF report with the recipient redacted).
    pub recipients: Vec<String>,
    /// What makes this report itself: its own Message-ID, else its bytes.
    pub identity: [u8; 32],
}

#[derive(Debug)]
pub enum Parsed {
    Report(Report),
    /// A well-formed message that is not a bounce or complaint (an auto-reply, a success
    /// notification, a person's answer).
    NotReport(&'static str),
    /// Cannot be read as a message, or a report with its report part missing (truncated).
    Malformed(&'static str),
}

/// Longest server response kept from a report.
const MAX_TEXT: usize = 1000;

pub fn parse(raw: &[u8]) -> Parsed {
    if raw.is_empty() {
        return Parsed::Malformed("empty message");
    }
    let mail = match mailparse::parse_mail(raw) {
        Ok(m) => m,
        Err(_) => return Parsed::Malformed("not a MIME message"),
    };
    // A message starts with header fields; binary garbage parses as "no headers".
    let bad_name = |h: &mailparse::MailHeader<'_>| {
        let k = h.get_key_raw();
        k.is_empty() || !k.iter().all(|b| (33..=126).contains(b) && *b != b':')
    };
    if mail.headers.is_empty() || mail.headers.iter().any(bad_name) || raw.contains(&0) {
        return Parsed::Malformed("no header fields");
    }
    let identity = identity(&mail, raw);
    let report_type = mail
        .ctype
        .params
        .get("report-type")
        .map(|s| s.to_ascii_lowercase());
    if mail.ctype.mimetype == "multipart/report" {
        return match report_type.as_deref() {
            Some("delivery-status") => dsn(&mail, identity),
            Some("feedback-report") => arf(&mail, identity),
            _ => Parsed::NotReport("multipart/report of another type"),
        };
    }
    plain(&mail, identity)
}

fn identity(mail: &ParsedMail<'_>, raw: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    match mail.headers.get_first_value("Message-ID") {
        Some(id) if !id.trim().is_empty() => {
            h.update(b"message-id:");
            h.update(id.trim().as_bytes());
        }
        _ => {
            h.update(b"bytes:");
            h.update(raw);
        }
    }
    h.finalize().into()
}

/// The first subpart (at any depth) of this MIME type.
fn part<'a>(mail: &'a ParsedMail<'a>, mimetype: &str) -> Option<&'a ParsedMail<'a>> {
    mail.parts().find(|p| p.ctype.mimetype == mimetype)
}

/// Header-like blocks separated by blank lines: `Name: value` fields, continuation lines
/// folded, names lower-cased.
fn field_blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut block: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some(last) = block.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            block.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; Ann <ann@example.com>` -> `ann@example.com`.
fn address(value: &str) -> Option<String> {
    let v = value.split_once(';').map_or(value, |(_, a)| a).trim();
    let v = v
        .rsplit_once('<')
        .map_or(v, |(_, a)| a.trim_end_matches('>'))
        .trim();
    (v.contains('@') && !v.contains(char::is_whitespace)).then(|| v.to_lowercase())
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    // One line, and no NUL: PostgreSQL text cannot hold one (the report would be refused).
    s.replace(|c: char| c.is_control(), " ")
}

/// `5.1.1` -> Hard, `4.2.2` -> Soft; anything else is no failure.
fn class(status: &str) -> Option<Kind> {
    let code = status.split_whitespace().next()?;
    let mut parts = code.split('.');
    let first = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.len() != 2
        || rest
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    match first {
        "5" => Some(Kind::Hard),
        "4" => Some(Kind::Soft),
        _ => None,
    }
}

fn dsn(mail: &ParsedMail<'_>, identity: [u8; 32]) -> Parsed {
    let Some(status_part) = part(mail, "message/delivery-status")
        .or_else(|| part(mail, "message/global-delivery-status"))
    else {
        return Parsed::Malformed("delivery report without its delivery-status part");
    };
    let body = match status_part.get_body() {
        Ok(b) => b,
        Err(_) => return Parsed::Malformed("unreadable delivery-status part"),
    };
    let blocks = field_blocks(&body);
    let mut kind: Option<Kind> = None;
    let mut words = Vec::new();
    let mut recipients = Vec::new();
    let mut any_recipient = false;
    // The first block is about the message; the others each about one recipient.
    for block in blocks.iter().skip(1) {
        let Some(final_rcpt) = field(block, "final-recipient") else {
            continue;
        };
        any_recipient = true;
        let action = field(block, "action").unwrap_or("").to_ascii_lowercase();
        let status = field(block, "status").unwrap_or("");
        let this = match action.as_str() {
            "failed" => class(status).or(Some(Kind::Hard)),
            "delayed" => Some(Kind::Soft),
            _ => None,
        };
        let Some(this) = this else { continue };
        // One hard failure makes the report hard.
        kind = Some(match (kind, this) {
            (Some(Kind::Hard), _) | (_, Kind::Hard) => Kind::Hard,
            _ => Kind::Soft,
        });
        recipients.extend(address(final_rcpt));
        if let Some(orig) = field(block, "original-recipient").and_then(address) {
            recipients.push(orig);
        }
        let diag = field(block, "diagnostic-code").unwrap_or("");
        words.push(format!("{status} {diag}").trim().to_string());
    }
    if !any_recipient {
        return Parsed::Malformed("delivery report without a recipient (truncated?)");
    }
    match kind {
        Some(kind) => Parsed::Report(Report {
            kind,
            text: clip(format!("DSN {}", words.join("; "))),
            recipients,
            identity,
        }),
        None => Parsed::NotReport("delivery report without a failure"),
    }
}

fn arf(mail: &ParsedMail<'_>, identity: [u8; 32]) -> Parsed {
    let Some(fb) = part(mail, "message/feedback-report") else {
        return Parsed::Malformed("feedback report without its feedback-report part");
    };
    let body = match fb.get_body() {
        Ok(b) => b,
        Err(_) => return Parsed::Malformed("unreadable feedback-report part"),
    };
    let fields: Vec<(String, String)> = field_blocks(&body).into_iter().flatten().collect();
    let Some(ftype) = field(&fields, "feedback-type") else {
        return Parsed::Malformed("feedback report without Feedback-Type (truncated?)");
    };
    let ftype = ftype.to_ascii_lowercase();
    // RFC 5965 types that say "unwanted"; not-spam and authentication reports are not.
    if !matches!(ftype.as_str(), "abuse" | "fraud" | "virus" | "other") {
        return Parsed::NotReport("feedback report that is no complaint");
    }
    let recipients = fields
        .iter()
        .filter(|(k, _)| k == "original-rcpt-to")
        .filter_map(|(_, v)| address(v))
        .collect();
    let agent = field(&fields, "user-agent").unwrap_or("");
    Parsed::Report(Report {
        kind: Kind::Complaint,
        text: clip(format!("ARF {ftype} {agent}").trim().to_string()),
        recipients,
        identity,
    })
}

/// Whether a plain message is from a mail system rather than a person: an empty return
/// path, a mailer-daemon or postmaster sender, or a bounce's usual subject.
fn from_mail_system(mail: &ParsedMail<'_>) -> bool {
    let get = |name: &str| {
        mail.headers
            .get_first_value(name)
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let from = get("From");
    let subject = get("Subject");
    get("Return-Path").trim() == "<>"
        || from.contains("mailer-daemon")
        || from.contains("postmaster")
        || [
            "undeliver",
            "delivery status",
            "delivery failure",
            "mail delivery failed",
            "returned mail",
            "failure notice",
        ]
        .iter()
        .any(|w| subject.contains(w))
}

/// An enhanced status code (`5.1.1`) in free text, else a reply code (`550`).
fn status_in_text(text: &str) -> Option<(Kind, String)> {
    let words = text.split(|c: char| {
        c.is_whitespace() || matches!(c, '(' | ')' | '<' | '>' | ',' | ';' | ':' | '[' | ']' | '"')
    });
    let mut reply = None;
    for w in words {
        let w = w.trim_end_matches('.');
        if let Some(kind) = class(w) {
            return Some((kind, w.to_string()));
        }
        if reply.is_none() && w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()) {
            reply = match &w[..1] {
                "5" => Some((Kind::Hard, w.to_string())),
                "4" => Some((Kind::Soft, w.to_string())),
                _ => None,
            };
        }
    }
    reply
}

fn plain(mail: &ParsedMail<'_>, identity: [u8; 32]) -> Parsed {
    if !from_mail_system(mail) {
        return Parsed::NotReport("not from a mail system");
    }
    // The first text part: the explanation a mail system writes for people.
    let text_part = if mail.subparts.is_empty() {
        Some(mail)
    } else {
        mail.parts().find(|p| p.ctype.mimetype == "text/plain")
    };
    let Some(body) = text_part.and_then(|p| p.get_body().ok()) else {
        return Parsed::Malformed("bounce without a readable text");
    };
    let Some((kind, code)) = status_in_text(&body) else {
        return Parsed::NotReport("bounce text without a status code");
    };
    // The line that carries the code says it best.
    let line = body
        .lines()
        .find(|l| l.contains(&code))
        .unwrap_or(&code)
        .trim()
        .to_string();
    Parsed::Report(Report {
        kind,
        text: clip(format!("bounce {line}")),
        recipients: Vec::new(),
        identity,
    })
}

/// Every `<mailing-M.client-C@domain>` (our Message-IDs, src/mail/compose.rs) in `raw`.
pub fn message_ids(raw: &[u8], domain: &str) -> Vec<(i64, i64)> {
    let mut found = Vec::new();
    let suffix = format!("@{}>", domain.to_ascii_lowercase());
    for at in memchr::memmem::find_iter(raw, b"<mailing-") {
        let rest = &raw[at + b"<mailing-".len()..];
        let m = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let Some(tail) = rest[m..].strip_prefix(b".client-") else {
            continue;
        };
        let c = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        let end = &tail[c..];
        if m == 0 || c == 0 || m > 18 || c > 18 || end.len() < suffix.len() {
            continue;
        }
        if !end[..suffix.len()].eq_ignore_ascii_case(suffix.as_bytes()) {
            continue;
        }
        // Ids start at 1: `mailing-0` or `mailing-007` is no Message-ID of ours.
        let num = |s: &[u8]| {
            let n = std::str::from_utf8(s).ok()?.parse::<i64>().ok()?;
            (n > 0 && s[0] != b'0').then_some(n)
        };
        if let (Some(mid), Some(cid)) = (num(&rest[..m]), num(&tail[..c]))
            && !found.contains(&(mid, cid))
        {
            found.push((mid, cid));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(class("5.1.1"), Some(Kind::Hard));
        assert_eq!(class("4.2.2 (mailbox full)"), Some(Kind::Soft));
        assert_eq!(class("2.0.0"), None);
        assert_eq!(class("5.1"), None);
        assert_eq!(class("5.x.1"), None);
    }

    #[test]
    fn addresses_and_ids() {
        assert_eq!(
            address("rfc822; Ann@Example.com").as_deref(),
            Some("ann@example.com")
        );
        assert_eq!(address("rfc822;<a@b.c>").as_deref(), Some("a@b.c"));
        assert_eq!(address("rfc822; nobody"), None);
        let raw = b"In-Reply-To: <mailing-7.client-42@Example.COM>\r\n<mailing-7.client-42@example.com> <mailing-x.client-1@example.com> <mailing-1.client-2@other.org>";
        assert_eq!(message_ids(raw, "example.com"), vec![(7, 42)]);
        // Found by the fuzz test: no id is 0, and ours are written without leading zeros.
        let raw = b"<mailing-0.client-2@example.com> <mailing-1.client-0@example.com> <mailing-01.client-2@example.com>";
        assert_eq!(message_ids(raw, "example.com"), vec![]);
    }

    #[test]
    fn plain_text_status() {
        assert_eq!(
            status_in_text("SMTP error: 550 5.1.1 <x@y>: user unknown").map(|s| s.0),
            Some(Kind::Hard)
        );
        assert_eq!(
            status_in_text("421 try later").map(|s| s.0),
            Some(Kind::Soft)
        );
        assert_eq!(status_in_text("no code at all 2026"), None);
    }

    #[test]
    fn texts_are_one_line_without_control_characters() {
        assert_eq!(clip("550\0 5.1.1\r\n\tgone".into()), "550  5.1.1   gone");
    }
}
