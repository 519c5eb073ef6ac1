//! Where letters go: an SMTP server (MAILCTL_SMTP_URL) or, by default, the on-disk outbox.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, redact_url};
use crate::error::{Error, Result};

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a directory, one per letter.
    Outbox(PathBuf),
}

/// How one try ended, with the server's reply text.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 2xx: the server took the letter.
    Accepted(String),
    /// 4xx, connection refused, timeout: worth trying again later.
    Temporary(String),
    /// 5xx: the address or letter is refused for good.
    Permanent(String),
}

impl Transport {
    pub fn from_config(config: &Config, pool_size: u32) -> Result<Transport> {
        match &config.smtp_url {
            Some(url) => {
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| {
                    Error::invalid("MAILCTL_SMTP_URL", format!("{} ({e})", redact_url(url)))
                })?;
                let pool = lettre::transport::smtp::PoolConfig::new().max_size(pool_size.max(1));
                Ok(Transport::Smtp(
                    builder
                        .timeout(Some(smtp_timeout()))
                        .pool_config(pool)
                        .build(),
                ))
            }
            None => Ok(Transport::Outbox(config.outbox_dir.clone())),
        }
    }

    /// Sends one letter and classifies the result. Never fails as a whole: every outcome,
    /// even a refused connection, is something to record.
    pub async fn send(&self, letter: Message) -> Outcome {
        match self {
            Transport::Smtp(smtp) => match smtp.send(letter).await {
                Ok(resp) => Outcome::Accepted(format!(
                    "{} {}",
                    resp.code(),
                    resp.message().collect::<Vec<_>>().join(" ")
                )),
                Err(e) if e.is_permanent() => Outcome::Permanent(smtp_error_text(&e)),
                Err(e) => Outcome::Temporary(smtp_error_text(&e)),
            },
            Transport::Outbox(dir) => {
                if let Err(e) = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                {
                    return Outcome::Temporary(format!("outbox {}: {e}", dir.display()));
                }
                match AsyncFileTransport::<Tokio1Executor>::new(dir)
                    .send(letter)
                    .await
                {
                    Ok(id) => Outcome::Accepted(format!(
                        "250 written to {}",
                        dir.join(format!("{id}.eml")).display()
                    )),
                    Err(e) => Outcome::Temporary(format!("outbox {}: {e}", dir.display())),
                }
            }
        }
    }
}

/// The server's own words when there are any (`550 5.1.1 User unknown`), else the error.
fn smtp_error_text(e: &lettre::transport::smtp::Error) -> String {
    match (e.status(), std::error::Error::source(e)) {
        (Some(code), Some(msg)) => format!("{code} {msg}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// Seconds to wait for the SMTP server at each step (`MAILCTL_SMTP_TIMEOUT`, default 30).
pub fn smtp_timeout() -> Duration {
    std::env::var("MAILCTL_SMTP_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

impl Outcome {
    pub fn reply(&self) -> &str {
        match self {
            Outcome::Accepted(r) | Outcome::Temporary(r) | Outcome::Permanent(r) => r,
        }
    }

    /// The SMTP reply code the text starts with, if the server answered at all.
    pub fn code(&self) -> Option<u16> {
        let head = self.reply().get(..3)?;
        head.parse().ok().filter(|c| (200..600).contains(c))
    }

    /// A server asking us to slow down (421, or 450/451/452 speaking of a rate or of too
    /// many messages): not the recipient's fault, so it should not cost them a try.
    pub fn is_throttling(&self) -> bool {
        let Outcome::Temporary(text) = self else {
            return false;
        };
        match self.code() {
            Some(421) => true,
            Some(450..=452) => {
                let t = text.to_ascii_lowercase();
                t.contains("rate") || t.contains("too many") || t.contains("throttl")
            }
            _ => false,
        }
    }

    /// No SMTP reply at all: connection refused, reset, timed out.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Outcome::Temporary(_)) && self.code().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn classifies_throttling() {
        assert!(Outcome::Temporary("421 4.7.0 Too many connections".into()).is_throttling());
        assert!(Outcome::Temporary("450 4.7.1 Rate limit exceeded".into()).is_throttling());
        assert!(!Outcome::Temporary("451 4.3.0 Try again later".into()).is_throttling());
        assert!(!Outcome::Permanent("550 5.1.1 User unknown".into()).is_throttling());
        assert!(Outcome::Temporary("network error: timed out".into()).is_unreachable());
        assert!(!Outcome::Temporary("451 4.3.0 Try again".into()).is_unreachable());
    }
}
