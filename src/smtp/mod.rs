//! The one way mailctl talks SMTP: the sender, system letters and `doctor` all go through it.
//!
//! - [`target`]: `MAILCTL_SMTP_URL` and `MAILCTL_SMTP_CA_FILE`, parsed and checked once;
//! - [`connection`]: connecting (TLS modes, CA, AUTH) and the exchange of a letter
//!   (pipelined when the server offers PIPELINING);
//! - [`reply`]: the typed reply that decides what happens to a letter;
//! - [`wire`]: a letter's bytes as DATA carries them (CRLF line ends, dot-stuffing).

pub mod connection;
pub mod reply;
pub mod target;
pub mod wire;

pub use connection::Connection;
pub use reply::{Reply, Verdict};
pub use target::{Target, TlsMode};

/// How one letter's exchange ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The server answered the letter: its final reply, or the first negative one.
    Replied(Reply),
    /// No answer to the letter itself.
    NoReply(Failure),
}

/// Why a letter got no answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    /// For people and the attempt row: `cannot connect to host:port: ...`, `network error: ...`.
    pub text: String,
    /// The server's reply that ended the session, if it gave one (a 421 greeting, a 535 to
    /// AUTH): a throttling one still slows the run down.
    pub reply: Option<Reply>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No usable session: connection refused, TLS, EHLO or AUTH failed. About the server,
    /// never about a recipient.
    Connect,
    /// The session broke or timed out during the letter: it may or may not have arrived.
    Lost,
    /// Not sent, for a reason found here (an address the server cannot take).
    Local,
}

impl Outcome {
    /// The exact text for the attempt row.
    pub fn text(&self) -> &str {
        match self {
            Outcome::Replied(r) => &r.text,
            Outcome::NoReply(f) => &f.text,
        }
    }

    /// What the outcome means for the letter: an unanswered one is worth trying again,
    /// unless the server's last word was to slow down.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Replied(r) => r.verdict(),
            Outcome::NoReply(Failure { reply: Some(r), .. })
                if r.verdict() == Verdict::Throttled =>
            {
                Verdict::Throttled
            }
            Outcome::NoReply(_) => Verdict::Temporary,
        }
    }

    /// The server could not be reached, refused the session (TLS, AUTH) or did not answer:
    /// a run that sees only this stops. A server that asked to slow down was reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Outcome::NoReply(Failure {
                kind: FailureKind::Connect | FailureKind::Lost,
                ..
            })
        ) && self.verdict() != Verdict::Throttled
    }

    pub fn lost(text: impl Into<String>) -> Outcome {
        Outcome::NoReply(Failure {
            kind: FailureKind::Lost,
            text: text.into(),
            reply: None,
        })
    }
}
