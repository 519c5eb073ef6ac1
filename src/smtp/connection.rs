//! One SMTP session: connect (implicit TLS or STARTTLS, AUTH), then letters one after the
//! other. With PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one write and their
//! replies are read together, then the body: two round trips per letter instead of four.
//! When the caller already knows the next letter, its MAIL, RCPT and DATA go out in the same
//! write as this letter's body (RFC 2920 lets message content open a group): one round trip
//! per letter while letters keep coming.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine;
use lettre::address::Envelope;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::reply::Reply;
use super::target::{Target, TlsMode};
use super::{Failure, FailureKind, Outcome, wire};

/// A byte stream that may be plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// The longest reply accepted; a server that sends more is cut off.
const MAX_REPLY: usize = 64 * 1024;

/// What the server said it can do (EHLO).
#[derive(Debug, Default, Clone)]
pub struct Capabilities {
    pub pipelining: bool,
    pub starttls: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub auth: Vec<String>,
}

pub struct Connection {
    stream: BufReader<Box<dyn Io>>,
    pub capabilities: Capabilities,
    /// The greeting, all its lines.
    pub greeting: Reply,
    /// The TLS version of the session (`TLSv1_3`), if it is encrypted.
    pub tls: Option<String>,
    /// Whether AUTH succeeded.
    pub authenticated: bool,
    out: Vec<u8>,
    /// The next letter's MAIL, RCPT and DATA, written behind the last body; their replies
    /// are not read yet, and after a 354 the server takes whatever comes next as a body.
    ahead: Option<Vec<String>>,
}

/// A failure that ends the session before any letter: about the server.
fn connect_failure(target: &Target, why: impl std::fmt::Display, reply: Option<Reply>) -> Failure {
    Failure {
        kind: FailureKind::Connect,
        text: format!("cannot connect to {}: {why}", target.address()),
        reply,
    }
}

impl Connection {
    /// Opens a session as `target` says: TCP, implicit TLS or STARTTLS, EHLO, AUTH. Refuses to
    /// send a password over a session that is not encrypted unless the URL says `tls=none`.
    pub async fn open(target: &Target) -> Result<Connection, Failure> {
        let fail = |why: &dyn std::fmt::Display| connect_failure(target, why, None);
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| fail(&e))?;
        // Commands are small writes followed by a read: Nagle's delay would cost ~40 ms each.
        tcp.set_nodelay(true).map_err(|e| fail(&e))?;
        let mut tls = None;
        let stream: Box<dyn Io> = if target.tls == TlsMode::Implicit {
            let (stream, version) = handshake(target, Box::new(tcp)).await?;
            tls = Some(version);
            stream
        } else {
            Box::new(tcp)
        };
        let mut conn = Connection {
            stream: BufReader::new(stream),
            capabilities: Capabilities::default(),
            greeting: Reply::local(220, ""),
            tls,
            authenticated: false,
            out: Vec::with_capacity(4096),
            ahead: None,
        };
        conn.greeting = conn.expect(target, None, 220).await?;
        conn.ehlo(target).await?;
        let wants_tls = match target.tls {
            TlsMode::Required => true,
            TlsMode::Opportunistic => conn.capabilities.starttls,
            TlsMode::Implicit | TlsMode::None => false,
        };
        if wants_tls && conn.tls.is_none() {
            if !conn.capabilities.starttls {
                return Err(fail(&"the server offers no STARTTLS (tls=required)"));
            }
            conn.expect(target, Some("STARTTLS\r\n"), 220).await?;
            // Bytes that came with the STARTTLS reply would be read as if they had come over
            // TLS: a man in the middle could inject replies that way (CVE-2011-0411).
            if !conn.stream.buffer().is_empty() {
                return Err(fail(&"the server sent data after its STARTTLS reply"));
            }
            let plain = std::mem::replace(
                &mut conn.stream,
                BufReader::new(Box::new(tokio::io::empty())),
            );
            let (stream, version) = handshake(target, plain.into_inner()).await?;
            conn.stream = BufReader::new(stream);
            conn.tls = Some(version);
            conn.ehlo(target).await?;
        }
        if let Some(credentials) = &target.credentials {
            if conn.tls.is_none() && target.tls != TlsMode::None {
                return Err(fail(
                    &"the server offers no STARTTLS, and the password is not sent in clear \
                      (add ?tls=none to MAILCTL_SMTP_URL for a relay on the same host)",
                ));
            }
            conn.auth(target, &credentials.user, &credentials.password)
                .await?;
        }
        Ok(conn)
    }

    async fn ehlo(&mut self, target: &Target) -> Result<(), Failure> {
        let command = format!("EHLO {}\r\n", target.hello);
        let reply = self.command_lines(target, Some(&command)).await?;
        let (reply, lines) = reply;
        if !reply.is_positive() {
            return Err(connect_failure(target, &reply, Some(reply.clone())));
        }
        let mut caps = Capabilities::default();
        for line in lines.iter().skip(1) {
            let mut words = line.get(4..).unwrap_or("").split_whitespace();
            match words.next().unwrap_or("").to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "AUTH" => caps.auth = words.map(|w| w.to_ascii_uppercase()).collect(),
                _ => {}
            }
        }
        self.capabilities = caps;
        Ok(())
    }

    async fn auth(&mut self, target: &Target, user: &str, password: &str) -> Result<(), Failure> {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let offered = |m: &str| self.capabilities.auth.iter().any(|a| a == m);
        let reply = if offered("LOGIN") && !offered("PLAIN") {
            self.expect(target, Some("AUTH LOGIN\r\n"), 334).await?;
            self.expect(target, Some(&format!("{}\r\n", b64(user.as_bytes()))), 334)
                .await?;
            self.command(target, Some(&format!("{}\r\n", b64(password.as_bytes()))))
                .await?
        } else {
            let token = b64(format!("\0{user}\0{password}").as_bytes());
            self.command(target, Some(&format!("AUTH PLAIN {token}\r\n")))
                .await?
        };
        if reply.code != 235 {
            return Err(connect_failure(
                target,
                format!("authentication refused: {reply}"),
                Some(reply),
            ));
        }
        self.authenticated = true;
        Ok(())
    }

    /// Sends `command` (if any) and reads one reply, which must have code `code`.
    async fn expect(
        &mut self,
        target: &Target,
        command: Option<&str>,
        code: u16,
    ) -> Result<Reply, Failure> {
        let reply = self.command(target, command).await?;
        if reply.code != code {
            return Err(connect_failure(target, &reply, Some(reply.clone())));
        }
        Ok(reply)
    }

    async fn command(&mut self, target: &Target, command: Option<&str>) -> Result<Reply, Failure> {
        Ok(self.command_lines(target, command).await?.0)
    }

    async fn command_lines(
        &mut self,
        target: &Target,
        command: Option<&str>,
    ) -> Result<(Reply, Vec<String>), Failure> {
        if let Some(command) = command {
            self.write(command.as_bytes())
                .await
                .map_err(|e| connect_failure(target, e, None))?;
        }
        self.read_reply_lines()
            .await
            .map_err(|e| connect_failure(target, e, None))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.stream.get_mut();
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("network error: {e}"))?;
        stream
            .flush()
            .await
            .map_err(|e| format!("network error: {e}"))
    }

    /// One reply, all its lines (a multi-line greeting or EHLO reply included).
    pub async fn read_reply(&mut self) -> Result<Reply, String> {
        Ok(self.read_reply_lines().await?.0)
    }

    async fn read_reply_lines(&mut self) -> Result<(Reply, Vec<String>), String> {
        let mut lines = Vec::new();
        let mut size = 0;
        let mut buf = Vec::with_capacity(128);
        loop {
            buf.clear();
            let n = (&mut self.stream)
                .take((MAX_REPLY - size + 1) as u64)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| format!("network error: {e}"))?;
            size += n;
            if n == 0 || buf.last() != Some(&b'\n') {
                return Err(if size > MAX_REPLY {
                    "response error: SMTP response too large".into()
                } else {
                    "response error: incomplete response".into()
                });
            }
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            // "250-..." continues a multi-line reply; any other line ends it.
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                break;
            }
        }
        match Reply::parse(&lines) {
            Some(reply) => Ok((reply, lines)),
            None => Err(format!(
                "response error: not an SMTP reply: {:?}",
                lines.join(" | ").chars().take(200).collect::<String>()
            )),
        }
    }

    /// MAIL (with what the letter needs of SMTPUTF8 and 8BITMIME), each RCPT, DATA; or why
    /// this server cannot take the letter.
    fn commands(&self, envelope: &Envelope, email: &[u8]) -> Result<Vec<String>, Outcome> {
        let local = |text: &str| {
            Outcome::NoReply(Failure {
                kind: FailureKind::Local,
                text: text.to_string(),
                reply: None,
            })
        };
        let mut params = Vec::new();
        let non_ascii = envelope
            .from()
            .is_some_and(|a| !AsRef::<str>::as_ref(a).is_ascii())
            || envelope
                .to()
                .iter()
                .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !self.capabilities.smtputf8 {
                return Err(local(
                    "not sent: the address is not ASCII and the server does not offer SMTPUTF8",
                ));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !email.is_ascii() {
            if !self.capabilities.eightbitmime {
                return Err(local(
                    "not sent: the letter is not ASCII and the server does not offer 8BITMIME",
                ));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mut commands = vec![Mail::new(envelope.from().cloned(), params).to_string()];
        commands.extend(
            envelope
                .to()
                .iter()
                .map(|to| Rcpt::new(to.clone(), vec![]).to_string()),
        );
        commands.push(Data.to_string());
        Ok(commands)
    }

    /// Whether commands written ahead (behind the last body) are not this letter's: the
    /// session cannot take it then, and must be dropped (never sent a body it did not ask for).
    pub fn ahead_of_other(&self, envelope: &Envelope, email: &[u8]) -> bool {
        self.ahead
            .as_ref()
            .is_some_and(|ahead| self.commands(envelope, email).ok().as_ref() != Some(ahead))
    }

    /// Sends one letter, and writes `next`'s MAIL, RCPT and DATA behind its body when the
    /// server offers PIPELINING. Returns the outcome and whether the session can take the next
    /// letter (with commands written ahead, only `next`: see [`Connection::ahead_of_other`]).
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        email: &[u8],
        next: Option<(&Envelope, &[u8])>,
    ) -> (Outcome, bool) {
        let commands = match self.commands(envelope, email) {
            Ok(commands) => commands,
            Err(outcome) => return (outcome, self.ahead.is_none()),
        };
        let written = self.ahead.take();
        if written.as_ref().is_some_and(|ahead| *ahead != commands) {
            return (
                Outcome::lost("the session was waiting for another letter"),
                false,
            );
        }

        // MAIL, each RCPT, DATA: the first negative reply is the letter's outcome.
        let mut refused = None;
        if self.capabilities.pipelining {
            if written.is_none() {
                let mut out = std::mem::take(&mut self.out);
                out.clear();
                for c in &commands {
                    out.extend_from_slice(c.as_bytes());
                }
                let sent = self.write(&out).await;
                self.out = out;
                if let Err(text) = sent {
                    return (Outcome::lost(text), false);
                }
            }
            let mut data_accepted = false;
            for _ in &commands {
                match self.read_reply().await {
                    Ok(r) if r.is_positive() => data_accepted = r.code == 354,
                    Ok(r) => {
                        refused.get_or_insert(r);
                    }
                    Err(text) => return (Outcome::lost(text), false),
                }
            }
            // A server that took DATA after refusing the recipient now waits for a body:
            // this session is not worth saving.
            if data_accepted && let Some(reply) = refused.take() {
                return (Outcome::Replied(reply), false);
            }
        } else {
            for c in &commands {
                if let Err(text) = self.write(c.as_bytes()).await {
                    return (Outcome::lost(text), false);
                }
                match self.read_reply().await {
                    Ok(r) if r.is_positive() => {}
                    Ok(r) => {
                        refused = Some(r);
                        break;
                    }
                    Err(text) => return (Outcome::lost(text), false),
                }
            }
        }
        if let Some(reply) = refused {
            // The transaction is abandoned; RSET makes the session ready for the next letter.
            // A 421 means the server is closing it anyway.
            let keep = reply.code != 421 && self.reset().await;
            return (Outcome::Replied(reply), keep);
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        wire::data(email, &mut out);
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        let ahead = match next {
            Some((envelope, email)) if self.capabilities.pipelining => {
                self.commands(envelope, email).ok()
            }
            _ => None,
        };
        for c in ahead.iter().flatten() {
            out.extend_from_slice(c.as_bytes());
        }
        let sent = self.write(&out).await;
        self.out = out;
        if let Err(text) = sent {
            return (Outcome::lost(text), false);
        }
        match self.read_reply().await {
            Ok(r) => {
                // After the final reply, good or bad, the session can take the next letter,
                // unless the server said it is closing it (421).
                let keep = r.code != 421;
                if keep {
                    self.ahead = ahead;
                }
                (Outcome::Replied(r), keep)
            }
            Err(text) => (Outcome::lost(text), false),
        }
    }

    /// RSET after a refused transaction; whether the session is still usable.
    async fn reset(&mut self) -> bool {
        self.write(b"RSET\r\n").await.is_ok()
            && self.read_reply().await.is_ok_and(|r| r.is_positive())
    }

    /// Whether the server still answers (NOOP).
    pub async fn noop(&mut self) -> bool {
        // After commands written ahead the server may be reading a body: no command now.
        self.ahead.is_none()
            && self.write(b"NOOP\r\n").await.is_ok()
            && self.read_reply().await.is_ok_and(|r| r.is_positive())
    }

    /// Says goodbye (QUIT) and waits a moment for the answer.
    pub async fn quit(mut self) {
        // Closing is all that is left to do after commands written ahead (see `noop`); the
        // server drops a body that never ends.
        if self.ahead.is_some() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if self.write(b"QUIT\r\n").await.is_ok() {
                let _ = self.read_reply().await;
            }
        })
        .await;
    }

    /// QUIT without waiting for the answer (the connection is dropped next).
    pub async fn quit_now(mut self) {
        if self.ahead.is_some() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), self.write(b"QUIT\r\n")).await;
    }

    /// A description of the session for `doctor`.
    pub fn describe(&self) -> String {
        let mut s = String::from("EHLO ok");
        match &self.tls {
            Some(v) => {
                let _ = write!(s, ", {v}");
            }
            None => s.push_str(", not encrypted"),
        }
        if self.authenticated {
            s.push_str(", AUTH ok");
        }
        if self.capabilities.pipelining {
            s.push_str(", PIPELINING");
        }
        s
    }
}

/// TLS over `stream`, checked against the target's roots and name.
async fn handshake(target: &Target, stream: Box<dyn Io>) -> Result<(Box<dyn Io>, String), Failure> {
    let connector = tokio_rustls::TlsConnector::from(target.tls_config.clone());
    match connector.connect(target.server_name.clone(), stream).await {
        Ok(tls) => {
            let version = tls
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "TLS".into());
            Ok((Box::new(tls), version))
        }
        Err(e) => {
            let text = e.to_string();
            // rustls: "invalid peer certificate: UnknownIssuer". Say how to fix it.
            let hint = if text.contains("UnknownIssuer") {
                " (signed by a private CA? trust it with MAILCTL_SMTP_CA_FILE)"
            } else {
                ""
            };
            Err(connect_failure(target, format!("TLS: {text}{hint}"), None))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The next letter's envelope behind a body, against a scripted peer on 127.0.0.1 that
    //! answers the body only once the next envelope has arrived: a client that waited for
    //! the reply first would hang (and time out) here.

    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn target(port: u16) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            credentials: None,
            shown: format!("smtp://127.0.0.1:{port}"),
            tls_config: super::super::target::tls_config(None).unwrap(),
            server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            hello: "test".into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn letter(to: &str) -> (Envelope, Vec<u8>) {
        let envelope = Envelope::new(
            Some("from@example.org".parse().unwrap()),
            vec![to.parse().unwrap()],
        )
        .unwrap();
        (
            envelope,
            format!("Subject: for {to}\r\n\r\nHello {to}\r\n").into_bytes(),
        )
    }

    /// Reads lines until one equals `until`, returning everything read.
    async fn read_until_line(
        r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        until: &str,
    ) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).await.unwrap() > 0,
                "EOF after {all:?}"
            );
            all.push_str(&line);
            if line.trim_end() == until {
                return all;
            }
        }
    }

    /// Accepts one client, greets it, offers PIPELINING, and takes its first MAIL, RCPT and
    /// DATA (250, 250, 354). Returns the streams and what the client wrote after EHLO.
    async fn first_envelope(
        listener: TcpListener,
    ) -> (
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
        String,
    ) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 peer\r\n").await.unwrap();
        read_until_line(&mut r, "EHLO test").await;
        w.write_all(b"250-peer\r\n250 PIPELINING\r\n")
            .await
            .unwrap();
        let first = read_until_line(&mut r, "DATA").await;
        w.write_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
            .await
            .unwrap();
        (r, w, first)
    }

    #[tokio::test]
    async fn the_next_envelope_rides_behind_the_body_and_goes_out_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = tokio::spawn(async move {
            let (mut r, mut w, first) = first_envelope(listener).await;
            // The body, and the next envelope, before any reply to the body.
            let body_and_next = read_until_line(&mut r, "DATA").await;
            w.write_all(b"250 queued a\r\n250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .unwrap();
            let second = read_until_line(&mut r, ".").await;
            w.write_all(b"250 queued b\r\n").await.unwrap();
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest).await;
            (first, body_and_next, second, rest)
        });
        let mut conn = Connection::open(&target(port)).await.unwrap();
        let (ea, ma) = letter("a@example.com");
        let (eb, mb) = letter("b@example.com");
        let (a, keep) = tokio::time::timeout(
            Duration::from_secs(5),
            conn.send(&ea, &ma, Some((&eb, &mb))),
        )
        .await
        .expect("the body's reply came only after the next envelope");
        assert!(keep);
        assert_eq!(a.text(), "250 queued a");
        // Another letter than the one announced cannot use this session.
        let (ec, mc) = letter("c@example.com");
        assert!(conn.ahead_of_other(&ec, &mc));
        assert!(!conn.ahead_of_other(&eb, &mb));
        let (b, keep) = conn.send(&eb, &mb, None).await;
        assert!(keep);
        assert_eq!(b.text(), "250 queued b");
        conn.quit().await;
        let (first, body_and_next, second, rest) = peer.await.unwrap();
        assert!(first.contains("RCPT TO:<a@example.com>"), "{first}");
        assert!(
            body_and_next.starts_with("Subject: for a@example.com"),
            "{body_and_next}"
        );
        assert!(
            body_and_next.contains(
                "\r\n.\r\nMAIL FROM:<from@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
            ),
            "{body_and_next}"
        );
        // B's envelope went out once: what followed its DATA is its body alone.
        assert!(second.starts_with("Subject: for b@example.com"), "{second}");
        assert!(!second.contains("MAIL FROM"), "{second}");
        assert_eq!(rest, "QUIT\r\n");
    }

    #[tokio::test]
    async fn an_envelope_sent_ahead_for_a_letter_that_never_comes_gets_no_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = tokio::spawn(async move {
            let (mut r, mut w, _) = first_envelope(listener).await;
            read_until_line(&mut r, "DATA").await;
            w.write_all(b"250 queued a\r\n250 ok\r\n250 ok\r\n354 go\r\n")
                .await
                .unwrap();
            // Whatever comes now would be taken as the next letter's body.
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest).await;
            rest
        });
        let mut conn = Connection::open(&target(port)).await.unwrap();
        let (ea, ma) = letter("a@example.com");
        let (eb, mb) = letter("b@example.com");
        let (a, keep) = conn.send(&ea, &ma, Some((&eb, &mb))).await;
        assert!(keep);
        assert_eq!(a.text(), "250 queued a");
        // The worker gave B back: no NOOP, no QUIT, nothing but the connection closing.
        assert!(!conn.noop().await);
        conn.quit().await;
        assert_eq!(peer.await.unwrap(), "");
    }
}
