//! Where letters go: an SMTP server (MAILCTL_SMTP_URL) or, by default, the on-disk outbox.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, redact_url};
use crate::error::{Error, Result};

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

/// Writes a letter as `<id>.eml` into the outbox directory (created 0700 on first use).
async fn write_to_outbox(dir: &std::path::Path, letter: Message) -> Outcome {
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
    use super::{Outcome, dot_stuff};

    #[test]
    fn dots_at_line_starts_are_doubled() {
        let stuffed = |s: &str| {
            let mut out = Vec::new();
            dot_stuff(s.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(stuffed(".a\r\n.b\r\n..c\r\n"), "..a\r\n..b\r\n...c\r\n");
        assert_eq!(
            stuffed("a.\r\nb\n.c\r\r\n.\r\n."),
            "a.\r\nb\n.c\r\r\n..\r\n.."
        );
        assert_eq!(stuffed(""), "");
    }

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
    /// Built once per run (see [`tls_parameters`]); cloning it is cheap.
    tls_parameters: TlsParameters,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    /// Set once the server did not offer PIPELINING on a plain connection (or offered
    /// STARTTLS): from then on lettre's client is used.
    no_pipelining: std::sync::atomic::AtomicBool,
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
            tls_parameters: tls_parameters(&host, config.smtp_ca_file.as_deref())?,
            host,
            tls,
            credentials,
            hello: ClientId::default(),
            timeout: smtp_timeout(),
            no_pipelining: std::sync::atomic::AtomicBool::new(false),
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

/// TLS settings for `host`: lettre's bundled Mozilla roots plus the CA certificates in
/// `MAILCTL_SMTP_CA_FILE` (a private relay's own CA). Read and checked once, before any letter
/// is claimed, so a bad file stops the run as a configuration error instead of failing every
/// connection.
fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters> {
    let builder = TlsParameters::builder(host.to_string());
    let Some(path) = ca_file else {
        return builder
            .build()
            .map_err(|e| Error::runtime(format!("TLS setup: {e}")));
    };
    let bad = |why: &dyn std::fmt::Display| {
        Error::invalid("MAILCTL_SMTP_CA_FILE", format!("{}: {why}", path.display()))
    };
    let pem = std::fs::read(path).map_err(|e| bad(&e))?;
    // lettre reads a file without any PEM certificate as an empty list: refuse it here.
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(bad(&"not a PEM file with CA certificates"));
    }
    let certificates = Certificate::from_pem(&pem).map_err(|e| bad(&e))?;
    // Building parses each certificate: a corrupt one is reported here, not per connection.
    builder
        .add_root_certificate(certificates)
        .build()
        .map_err(|e| bad(&e))
}

impl SmtpTarget {
    /// Connects, upgrades to TLS, authenticates. Any failure here (even a 5xx to AUTH) is
    /// about the server, never about a recipient: the text starts with "cannot connect".
    async fn connect(&self) -> std::result::Result<Conn, String> {
        let fail = |e: &dyn std::fmt::Display| {
            format!("cannot connect to {}:{}: {e}", self.host, self.port)
        };
        // Plain, unauthenticated: our pipelining client, unless this server turned out not to
        // offer PIPELINING (or offers STARTTLS, which lettre's client takes up).
        if self.tls == TlsMode::Opportunistic
            && self.credentials.is_none()
            && !self
                .no_pipelining
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| fail(&e))?;
            tcp.set_nodelay(true).map_err(|e| fail(&e))?;
            match Pipelined::start(tcp, &self.hello).await {
                Ok(conn) => return Ok(Conn::Pipelined(conn)),
                Err(NoPipelining::Unsupported) => self
                    .no_pipelining
                    .store(true, std::sync::atomic::Ordering::Relaxed),
                Err(NoPipelining::Failed) => {}
            }
        }
        self.try_connect()
            .await
            .map(|c| Conn::Lettre(Box::new(c)))
            .map_err(|e| match e {
                ConnectError::Io(e) => fail(&e),
                ConnectError::Smtp(e) => {
                    let text = smtp_error_text(&e);
                    // rustls: "invalid peer certificate: UnknownIssuer". Say how to fix it.
                    if text.contains("UnknownIssuer") {
                        fail(&format!(
                            "{text} (signed by a private CA? trust it with MAILCTL_SMTP_CA_FILE)"
                        ))
                    } else {
                        fail(&text)
                    }
                }
            })
    }

    async fn try_connect(&self) -> std::result::Result<AsyncSmtpConnection, ConnectError> {
        let mut conn = if self.tls == TlsMode::Implicit {
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(self.tls_parameters.clone()),
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
            conn.starttls(self.tls_parameters.clone(), &self.hello)
                .await?;
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
    conn: Option<Conn>,
    last_used: Instant,
}

/// A worker's connection: our own pipelining client on plain connections to a server that
/// offers PIPELINING (RFC 2920), lettre's client for everything else (TLS, AUTH).
enum Conn {
    Lettre(Box<AsyncSmtpConnection>),
    Pipelined(Pipelined),
}

impl Session {
    /// Sends one letter; the whole exchange (connecting included) is bounded by
    /// `MAILCTL_SMTP_TIMEOUT`.
    pub async fn send(&mut self, letter: &Message) -> Outcome {
        match &self.endpoint {
            Endpoint::Outbox(dir) => write_to_outbox(dir, letter.clone()).await,
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
        {
            let alive = match conn {
                Conn::Lettre(c) => c.test_connected().await,
                Conn::Pipelined(c) => c.noop().await,
            };
            if !alive {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            match target.connect().await {
                Ok(conn) => self.conn = Some(conn),
                Err(text) => return Outcome::Temporary(text),
            }
        }
        let (outcome, keep) = match self.conn.as_mut().expect("connected") {
            Conn::Lettre(conn) => {
                let result = conn.send(letter.envelope(), &letter.formatted()).await;
                let keep = result.is_ok() && !conn.has_broken();
                (classify(result), keep)
            }
            Conn::Pipelined(conn) => conn.send(letter.envelope(), &letter.formatted()).await,
        };
        // Not kept: dropped (lettre's client already said QUIT).
        if !keep && let Some(Conn::Pipelined(mut conn)) = self.conn.take() {
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
        match self.conn.take() {
            Some(Conn::Lettre(mut conn)) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
            }
            Some(Conn::Pipelined(mut conn)) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
            }
            None => {}
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

/// Our own SMTP client for plain, unauthenticated connections to a server that offers
/// PIPELINING (RFC 2920): per letter, MAIL FROM, RCPT TO and DATA go out in one write and
/// their replies are read together, then the dot-stuffed body with its final "." and the
/// last reply: two round trips instead of lettre's four. Commands (lettre's own `Mail`,
/// `Rcpt`, `Data`), dot-stuffing, reply texts and their 2xx/4xx/5xx classification are the
/// same as lettre's; as with lettre, any negative reply or error ends the connection.
struct Pipelined {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    eightbitmime: bool,
    smtputf8: bool,
    out: Vec<u8>,
}

/// Why no pipelining connection was made.
enum NoPipelining {
    /// The server does not offer PIPELINING, or offers STARTTLS: use lettre from now on.
    Unsupported,
    /// The greeting or EHLO failed: lettre's client tries (and reports) this time.
    Failed,
}

impl Pipelined {
    async fn start(
        tcp: tokio::net::TcpStream,
        hello: &ClientId,
    ) -> std::result::Result<Pipelined, NoPipelining> {
        let mut conn = Pipelined {
            stream: tokio::io::BufReader::new(tcp),
            eightbitmime: false,
            smtputf8: false,
            out: Vec::with_capacity(4096),
        };
        match conn.read_reply().await {
            Ok(r) if r.is_positive() => {}
            _ => return Err(NoPipelining::Failed),
        }
        if conn
            .write(format!("EHLO {hello}\r\n").as_bytes())
            .await
            .is_err()
        {
            return Err(NoPipelining::Failed);
        }
        let ehlo = match conn.read_reply().await {
            Ok(r) if r.is_positive() => r,
            _ => return Err(NoPipelining::Failed),
        };
        let (mut pipelining, mut starttls) = (false, false);
        for line in ehlo.message().skip(1) {
            match line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase()
                .as_str()
            {
                "PIPELINING" => pipelining = true,
                "STARTTLS" => starttls = true,
                "8BITMIME" => conn.eightbitmime = true,
                "SMTPUTF8" => conn.smtputf8 = true,
                _ => {}
            }
        }
        if !pipelining || starttls {
            conn.quit_now().await;
            return Err(NoPipelining::Unsupported);
        }
        Ok(conn)
    }

    async fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), String> {
        use tokio::io::AsyncWriteExt;
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|e| format!("network error: {e}"))
    }

    /// One reply (all its lines), or lettre's wording for why none could be read.
    async fn read_reply(
        &mut self,
    ) -> std::result::Result<lettre::transport::smtp::response::Response, String> {
        use tokio::io::AsyncBufReadExt;
        let mut buf = String::with_capacity(128);
        loop {
            let start = buf.len();
            let n = self
                .stream
                .read_line(&mut buf)
                .await
                .map_err(|e| format!("network error: {e}"))?;
            if n == 0 {
                return Err("response error: incomplete response".into());
            }
            if buf.len() > 64 * 1024 {
                return Err("response error: SMTP response too large".into());
            }
            // "250-..." continues a multi-line reply; any other line ends it.
            if buf.as_bytes().get(start + 3) != Some(&b'-') {
                return buf
                    .parse()
                    .map_err(|e: lettre::transport::smtp::Error| e.to_string());
            }
        }
    }

    /// Sends one letter. Returns the outcome and whether the connection can be reused.
    async fn send(
        &mut self,
        envelope: &lettre::address::Envelope,
        email: &[u8],
    ) -> (Outcome, bool) {
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter};
        use std::io::Write;
        let mut params = Vec::new();
        let non_ascii = envelope
            .from()
            .is_some_and(|a| !AsRef::<str>::as_ref(a).is_ascii())
            || envelope
                .to()
                .iter()
                .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !self.smtputf8 {
                return (
                    Outcome::Temporary(
                        "internal client error: Envelope contains non-ascii chars but server does not support SMTPUTF8".into(),
                    ),
                    false,
                );
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !email.is_ascii() {
            if !self.eightbitmime {
                return (
                    Outcome::Temporary(
                        "internal client error: Message contains non-ascii chars but server does not support 8BITMIME".into(),
                    ),
                    false,
                );
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let _ = write!(out, "{}", Mail::new(envelope.from().cloned(), params));
        for to in envelope.to() {
            let _ = write!(out, "{}", Rcpt::new(to.clone(), vec![]));
        }
        let _ = write!(out, "{Data}");
        let sent = self.write(&out).await;
        self.out = out;
        if let Err(text) = sent {
            return (Outcome::Temporary(text), false);
        }
        // MAIL, each RCPT, DATA: the first negative reply is the letter's outcome.
        for _ in 0..envelope.to().len() + 2 {
            match self.read_reply().await {
                Ok(r) if r.is_positive() => {}
                Ok(r) => return (negative(&r), false),
                Err(text) => return (Outcome::Temporary(text), false),
            }
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        dot_stuff(email, &mut out);
        out.extend_from_slice(b"\r\n.\r\n");
        let sent = self.write(&out).await;
        self.out = out;
        if let Err(text) = sent {
            return (Outcome::Temporary(text), false);
        }
        match self.read_reply().await {
            Ok(r) if r.is_positive() => (
                Outcome::Accepted(format!(
                    "{} {}",
                    r.code(),
                    r.message().collect::<Vec<_>>().join(" ")
                )),
                true,
            ),
            Ok(r) => (negative(&r), false),
            Err(text) => (Outcome::Temporary(text), false),
        }
    }

    /// Whether the server still answers (NOOP), like lettre's `test_connected`.
    async fn noop(&mut self) -> bool {
        self.write(b"NOOP\r\n").await.is_ok()
            && self.read_reply().await.is_ok_and(|r| r.is_positive())
    }

    async fn quit(&mut self) {
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply().await;
        }
    }

    /// QUIT without waiting for the answer (the connection is dropped next).
    async fn quit_now(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.write(b"QUIT\r\n")).await;
    }
}

/// A 4xx/5xx reply as lettre reports it: `{code} {lines}`, the lines joined with spaces and an
/// enhanced status code repeated on every line kept only once.
fn negative(r: &lettre::transport::smtp::response::Response) -> Outcome {
    use lettre::transport::smtp::response::Severity;
    let lines: Vec<&str> = r.message().collect();
    let code = r.code();
    let class = match code.severity {
        Severity::TransientNegativeCompletion => "4",
        Severity::PermanentNegativeCompletion => "5",
        _ => "",
    };
    let repeated = lines
        .first()
        .and_then(|l| l.split_whitespace().next())
        .filter(|word| {
            let mut parts = word.split('.');
            let (Some(c), Some(s), Some(d), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            c == class
                && [s, d]
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        });
    let mut joined = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            joined.push(' ');
            joined.push_str(match repeated {
                Some(code) => line
                    .strip_prefix(code)
                    .filter(|rest| rest.starts_with(' '))
                    .map_or(line, str::trim_start),
                None => line,
            });
        } else {
            joined.push_str(line);
        }
    }
    let text = format!("{code} {joined}");
    match code.severity {
        Severity::PermanentNegativeCompletion => Outcome::Permanent(text),
        _ => Outcome::Temporary(text),
    }
}

/// SMTP transparency (RFC 5321 4.5.2), byte for byte as lettre's `ClientCodec`: a "." at the
/// start of a line (the frame's start, or after CRLF) is doubled. Copies whole runs between
/// the places found by memchr's substring search rather than byte by byte.
fn dot_stuff(frame: &[u8], buf: &mut Vec<u8>) {
    buf.reserve(frame.len() + 16);
    let mut rest = frame;
    if rest.first() == Some(&b'.') {
        buf.push(b'.');
    }
    let finder = memchr::memmem::Finder::new(b"\r\n.");
    while let Some(at) = finder.find(rest) {
        buf.extend_from_slice(&rest[..at + 3]);
        buf.push(b'.');
        rest = &rest[at + 3..];
    }
    buf.extend_from_slice(rest);
}
