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
                        .timeout(Some(Duration::from_secs(30)))
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
    let text = e.to_string();
    match e.status() {
        Some(code) if !text.contains(&code.to_string()) => format!("{code} {text}"),
        _ => text,
    }
}
