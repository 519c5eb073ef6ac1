//! Bounces and complaints coming back: reading messages (source), understanding them
//! (report), and tying them to the letter they are about (here). Recording is db::bounces.

pub mod report;
pub mod source;

use report::{Kind, Report};

/// The letter a report is about, found by a signed VERP address or our Message-ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letter {
    pub mailing_id: i64,
    pub client_id: i64,
    /// Found by a signed return path (else by Message-ID, which anyone can write).
    pub signed: bool,
}

/// The letters a message may be about, signed ones first.
pub fn candidates(raw: &[u8], secret: &[u8], domain: &str) -> Vec<Letter> {
    let mut out: Vec<Letter> = crate::auth::verp::find(secret, raw)
        .into_iter()
        .map(|(m, c)| Letter {
            mailing_id: m,
            client_id: c,
            signed: true,
        })
        .collect();
    for (m, c) in report::message_ids(raw, domain) {
        if !out.iter().any(|l| l.mailing_id == m && l.client_id == c) {
            out.push(Letter {
                mailing_id: m,
                client_id: c,
                signed: false,
            });
        }
    }
    out
}

/// Whether the report agrees that `email_key` (the letter's recipient) is the one it is
/// about. A report naming recipients must name this one (a valid token or Message-ID of
/// another client's letter is a forgery). One naming none is taken on a signed return path;
/// without a signature the address must at least appear in it.
pub fn confirms(report: &Report, letter: &Letter, email_key: &str, raw: &[u8]) -> bool {
    if !report.recipients.is_empty() {
        // Complaints redact the recipient often; the signature is enough there.
        return report.recipients.iter().any(|r| r == email_key)
            || (letter.signed && report.kind == Kind::Complaint);
    }
    letter.signed
        || String::from_utf8_lossy(raw)
            .to_lowercase()
            .contains(email_key)
}

/// The key that makes importing the same report twice a no-op.
pub fn digest(report: &Report, mailing_id: i64, client_id: i64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(report.identity);
    h.update(mailing_id.to_be_bytes());
    h.update(client_id.to_be_bytes());
    h.update(report.kind.as_str().as_bytes());
    hex::encode(h.finalize())
}
