//! Where letters go: an SMTP server (MAILCTL_SMTP_URL) or, by default, the on-disk outbox.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
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

/// Where the sender's workers deliver: an SMTP server (parsed once from the URL) or the outbox.
#[derive(Clone)]
pub enum Endpoint {
    Smtp(Arc<SmtpTarget>),
    Outbox(PathBuf),
}

/// The parts of `MAILCTL_SMTP_URL`: `smtp://` (STARTTLS when offered), `?tls=required`
/// (STARTTLS or fail), `smtps://` (implicit TLS); optional `user:pass@`.
pub struct SmtpTarget {
    host: String,
    port: u16,
    tls: TlsMode,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Opportunistic,
    Required,
    Implicit,
}

impl Endpoint {
    pub fn from_config(config: &Config) -> Result<Endpoint> {
        let Some(raw) = &config.smtp_url else {
            return Ok(Endpoint::Outbox(config.outbox_dir.clone()));
        };
        let bad =
            |why: &str| Error::invalid("MAILCTL_SMTP_URL", format!("{} ({why})", redact_url(raw)));
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtps", _) => (TlsMode::Implicit, 465),
            ("smtp", Some("required")) => (TlsMode::Required, 587),
            ("smtp", None | Some("opportunistic")) => (TlsMode::Opportunistic, 25),
            _ => return Err(bad("use smtp://, smtp://...?tls=required or smtps://")),
        };
        let host = url
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = (!url.username().is_empty()).then(|| {
            Credentials::new(
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            )
        });
        Ok(Endpoint::Smtp(Arc::new(SmtpTarget {
            port: url.port().unwrap_or(default_port),
            host,
            tls,
            credentials,
            hello: ClientId::default(),
            timeout: smtp_timeout(),
        })))
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

impl SmtpTarget {
    fn tls_parameters(&self) -> std::result::Result<TlsParameters, lettre::transport::smtp::Error> {
        TlsParameters::new(self.host.clone())
    }

    /// Connects, upgrades to TLS, authenticates. Any failure here (even a 5xx to AUTH) is
    /// about the server, never about a recipient: the text starts with "cannot connect".
    async fn connect(&self) -> std::result::Result<AsyncSmtpConnection, String> {
        let fail = |e: &dyn std::fmt::Display| {
            format!("cannot connect to {}:{}: {e}", self.host, self.port)
        };
        self.try_connect().await.map_err(|e| match e {
            ConnectError::Io(e) => fail(&e),
            ConnectError::Smtp(e) => fail(&smtp_error_text(&e)),
        })
    }

    async fn try_connect(&self) -> std::result::Result<AsyncSmtpConnection, ConnectError> {
        let mut conn = if self.tls == TlsMode::Implicit {
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(self.tls_parameters()?),
                None,
            )
            .await?
        } else {
            // Our own socket, so that Nagle's algorithm is off: lettre writes a command and
            // then waits for the reply, and a delayed ACK would cost ~40 ms per letter.
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(ConnectError::Io)?;
            tcp.set_nodelay(true).map_err(ConnectError::Io)?;
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?
        };
        if self.tls != TlsMode::Implicit && (conn.can_starttls() || self.tls == TlsMode::Required) {
            conn.starttls(self.tls_parameters()?, &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }
}

enum ConnectError {
    Io(std::io::Error),
    Smtp(lettre::transport::smtp::Error),
}

impl From<lettre::transport::smtp::Error> for ConnectError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        ConnectError::Smtp(e)
    }
}

/// One worker's connection. Any error or timeout drops the connection (so a late reply can
/// never be mistaken for the answer to the next command); the next letter opens a new one.
pub struct Session {
    endpoint: Endpoint,
    conn: Option<AsyncSmtpConnection>,
    last_used: Instant,
}

impl Session {
    /// Sends one letter; the whole exchange (connecting included) is bounded by
    /// `MAILCTL_SMTP_TIMEOUT`.
    pub async fn send(&mut self, letter: &Message) -> Outcome {
        match &self.endpoint {
            Endpoint::Outbox(dir) => Transport::Outbox(dir.clone()).send(letter.clone()).await,
            Endpoint::Smtp(target) => {
                let target = target.clone();
                let limit = target.timeout;
                match tokio::time::timeout(limit, self.exchange(&target, letter)).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        self.conn = None;
                        Outcome::Temporary(format!(
                            "timed out after {}s waiting for {}:{}",
                            limit.as_secs_f64(),
                            target.host,
                            target.port
                        ))
                    }
                }
            }
        }
    }

    async fn exchange(&mut self, target: &SmtpTarget, letter: &Message) -> Outcome {
        // A connection idle for a while may have been closed by the server: check it first.
        if let Some(conn) = self.conn.as_mut()
            && self.last_used.elapsed() > Duration::from_secs(5)
            && !conn.test_connected().await
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            match target.connect().await {
                Ok(conn) => self.conn = Some(conn),
                Err(text) => return Outcome::Temporary(text),
            }
        }
        let conn = self.conn.as_mut().expect("connected");
        let result = conn.send(letter.envelope(), &letter.formatted()).await;
        if result.is_err() || conn.has_broken() {
            self.conn = None;
        }
        self.last_used = Instant::now();
        classify(result)
    }

    /// Forgets the connection (after the caller gave up waiting on it).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// Says goodbye politely (QUIT), without waiting long.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
        }
    }
}

fn classify(
    result: std::result::Result<
        lettre::transport::smtp::response::Response,
        lettre::transport::smtp::Error,
    >,
) -> Outcome {
    match result {
        Ok(resp) => Outcome::Accepted(format!(
            "{} {}",
            resp.code(),
            resp.message().collect::<Vec<_>>().join(" ")
        )),
        Err(e) if e.is_permanent() => Outcome::Permanent(smtp_error_text(&e)),
        Err(e) => Outcome::Temporary(smtp_error_text(&e)),
    }
}
