//! Where letters go: an SMTP server (MAILCTL_SMTP_URL, through `crate::smtp`) or, by
//! default, the on-disk outbox.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::address::Envelope;

use crate::config::Config;
use crate::error::Result;
use crate::smtp::{Connection, Failure, FailureKind, Outcome, Reply, Target, wire};

/// Where the sender's workers deliver: an SMTP server (parsed once from the URL) or the outbox.
#[derive(Clone)]
pub enum Endpoint {
    Smtp(Arc<Target>),
    Outbox(PathBuf),
}

impl Endpoint {
    pub fn from_config(config: &Config) -> Result<Endpoint> {
        Ok(match Target::from_config(config)? {
            Some(target) => Endpoint::Smtp(Arc::new(target)),
            None => Endpoint::Outbox(config.outbox_dir.clone()),
        })
    }

    /// A worker's own session: one connection, reused letter after letter.
    pub fn session(&self) -> Session {
        Session {
            endpoint: self.clone(),
            conn: None,
            last_used: Instant::now(),
        }
    }
}

/// Writes a letter as `<random>.eml` into the outbox directory (created 0700), readable by
/// its owner only (letters carry live links), with CRLF line ends as on the wire.
fn write_to_outbox(dir: &Path, letter: &Wire) -> Outcome {
    let failed = |e: &dyn std::fmt::Display| {
        Outcome::NoReply(Failure {
            kind: FailureKind::Local,
            text: format!("outbox {}: {e}", dir.display()),
            reply: None,
        })
    };
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return failed(&e);
    }
    let mut bytes = Vec::new();
    wire::crlf(&letter.bytes, &mut bytes);
    let name = format!("{}.eml", hex::encode(rand::random::<[u8; 16]>()));
    let path = dir.join(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes));
    match written {
        Ok(()) => Outcome::Replied(Reply::local(250, format!("written to {}", path.display()))),
        Err(e) => failed(&e),
    }
}

/// A letter as it goes out: its envelope and its bytes (formatted once).
pub struct Wire {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

impl From<&Message> for Wire {
    fn from(letter: &Message) -> Wire {
        Wire {
            envelope: letter.envelope().clone(),
            bytes: letter.formatted(),
        }
    }
}

/// One worker's connection. Any error or timeout drops the connection (so a late reply can
/// never be mistaken for the answer to the next command); the next letter opens a new one.
pub struct Session {
    endpoint: Endpoint,
    conn: Option<Connection>,
    last_used: Instant,
}

impl Session {
    /// Sends one letter; the whole exchange (connecting included) is bounded by
    /// `MAILCTL_SMTP_TIMEOUT`.
    pub async fn send(&mut self, letter: &Message) -> Outcome {
        self.send_wire(&Wire::from(letter), None).await
    }

    /// Sends one letter; over SMTP, `next` (the letter this session sends next, if known)
    /// has its envelope written behind this letter's body (see `smtp::connection`).
    pub async fn send_wire(&mut self, letter: &Wire, next: Option<&Wire>) -> Outcome {
        match &self.endpoint {
            Endpoint::Outbox(dir) => write_to_outbox(dir, letter),
            Endpoint::Smtp(target) => {
                let target = target.clone();
                let limit = target.timeout;
                match tokio::time::timeout(limit, self.exchange(&target, letter, next)).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        self.conn = None;
                        Outcome::lost(format!(
                            "timed out after {}s waiting for {}",
                            limit.as_secs_f64(),
                            target.address()
                        ))
                    }
                }
            }
        }
    }

    async fn exchange(&mut self, target: &Target, letter: &Wire, next: Option<&Wire>) -> Outcome {
        // Commands written ahead for a letter that did not come (its worker gave it back):
        // the server waits for that letter's body, so the connection goes (no QUIT either).
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.ahead_of_other(&letter.envelope, &letter.bytes))
        {
            self.conn = None;
        }
        // A connection idle for a while may have been closed by the server: check it first.
        if let Some(conn) = self.conn.as_mut()
            && self.last_used.elapsed() > Duration::from_secs(5)
            && !conn.noop().await
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            match Connection::open(target).await {
                Ok(conn) => self.conn = Some(conn),
                Err(failure) => return Outcome::NoReply(failure),
            }
        }
        let conn = self.conn.as_mut().expect("connected");
        let next = next.map(|n| (&n.envelope, n.bytes.as_slice()));
        let (outcome, keep) = conn.send(&letter.envelope, &letter.bytes, next).await;
        if !keep && let Some(conn) = self.conn.take() {
            conn.quit_now().await;
        }
        self.last_used = Instant::now();
        outcome
    }

    /// Forgets the connection (after the caller gave up waiting on it).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// Says goodbye politely (QUIT), without waiting long.
    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.quit().await;
        }
    }
}
