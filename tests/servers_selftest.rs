//! Self-test of the integration-test harness (tests/common/servers.rs): the real servers start,
//! answer, and the scripted SMTP server replies as told. If these fail, every other
//! integration test would fail for reasons that have nothing to do with mailctl.

#[path = "common/servers.rs"]
mod servers;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use servers::*;

#[test]
fn postgres_fresh_databases_are_distinct_and_usable() {
    let a = postgres_fresh_database();
    let b = postgres_fresh_database();
    assert_ne!(a, b);
    assert!(a.starts_with("postgres://"), "{a}");
    assert_eq!(psql(&a, "SELECT 1"), "1");
    psql(&a, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)");
    assert_eq!(psql(&a, "SELECT x FROM t"), "42");
    // b is a different, empty database.
    assert_eq!(
        psql(&b, "SELECT count(*) FROM pg_tables WHERE tablename = 't'"),
        "0"
    );
    assert_eq!(psql(&a, "SHOW server_encoding"), "UTF8");
    // With MAILCTL_TEST_PG_URL set (CI), databases go to that server, not a private one.
    if let Ok(admin) = std::env::var("MAILCTL_TEST_PG_URL") {
        let host_port = |url: &str| {
            url.rsplit('@')
                .next()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(host_port(&a), host_port(&admin));
    }
}

#[test]
fn shared_redis_answers_ping() {
    let url = redis_url();
    if let Ok(expected) = std::env::var("MAILCTL_TEST_REDIS_URL") {
        assert_eq!(url, expected);
    }
    assert!(ping(&redis_addr(&url)), "no PONG from {url}");
}

#[test]
fn private_redis_can_be_killed_and_restarted() {
    let mut redis = start_private_redis();
    let addr = redis_addr(&redis.url());
    assert!(ping(&addr));
    redis.kill();
    assert!(!redis.is_running());
    assert!(!ping(&addr), "redis still answers after kill");
    redis.restart();
    assert!(redis.is_running());
    assert!(ping(&addr), "redis does not answer after restart");
}

#[test]
fn smtp_accepts_and_stores_messages() {
    let smtp = start_smtp();
    assert_eq!(smtp.url(), format!("smtp://127.0.0.1:{}", smtp.port));
    let mut c = SmtpClient::connect(smtp.port);
    for i in 0..2 {
        assert!(c.cmd("MAIL FROM:<sender@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@example.org>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let reply = c.cmd(&format!(
            "Subject: test {i}\r\n\r\nHello\r\n..dot line\r\n."
        ));
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        assert!(c.cmd("RSET").starts_with("250"));
    }
    c.cmd("QUIT");
    let messages = smtp.messages();
    assert_eq!(smtp.received_count(), 2);
    assert_eq!(
        messages[0],
        b"Subject: test 0\r\n\r\nHello\r\n.dot line\r\n"
    );
    assert_eq!(
        messages[1],
        b"Subject: test 1\r\n\r\nHello\r\n.dot line\r\n"
    );
    let log = smtp.log();
    assert_eq!(log.len(), 2);
    assert!(
        log[0].contains("\"rcpt_tos\": [\"alice@example.org\"]"),
        "{}",
        log[0]
    );
}

#[test]
fn smtp_rules_reject_and_tempfail_per_recipient() {
    let smtp = start_smtp();
    smtp.set_rules(
        r#"{"rcpt": [
            {"match": "reject", "reply": "550 5.1.1 User unknown"},
            {"match": "tempfail", "reply": "451 4.3.0 Try again later", "times": 1}
        ]}"#,
    );
    let mut c = SmtpClient::connect(smtp.port);
    c.cmd("MAIL FROM:<sender@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<reject@example.org>"),
        "550 5.1.1 User unknown"
    );
    assert_eq!(
        c.cmd("RCPT TO:<tempfail@example.org>"),
        "451 4.3.0 Try again later"
    );
    assert!(c.cmd("RCPT TO:<tempfail@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<ok@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: x\r\n\r\nbody\r\n.").starts_with("250"));
    // The rejected address is rejected every time; only the accepted ones got the message.
    c.cmd("MAIL FROM:<sender@example.org>");
    assert!(c.cmd("RCPT TO:<reject@example.org>").starts_with("550"));
    c.cmd("QUIT");
    assert_eq!(smtp.received_count(), 1);
    assert!(smtp.log()[0].contains(r#"["tempfail@example.org", "ok@example.org"]"#));
    assert_eq!(smtp.events().len(), 6); // 5 RCPT + 1 DATA

    smtp.clear_rules();
    let mut c = SmtpClient::connect(smtp.port);
    c.cmd("MAIL FROM:<sender@example.org>");
    assert!(c.cmd("RCPT TO:<reject@example.org>").starts_with("250"));
}

#[test]
fn smtp_can_drop_the_connection_and_be_restarted() {
    let mut smtp = start_smtp();
    smtp.set_rules(r#"{"drop_connection": "data"}"#);
    let mut c = SmtpClient::connect(smtp.port);
    c.cmd("MAIL FROM:<sender@example.org>");
    assert!(c.cmd("RCPT TO:<a@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert_eq!(
        c.cmd("Subject: x\r\n\r\nbody\r\n."),
        "",
        "expected the server to hang up"
    );
    assert_eq!(smtp.received_count(), 0);

    let port = smtp.port;
    smtp.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    smtp.clear_rules();
    smtp.restart();
    assert_eq!(smtp.port, port);
    let mut c = SmtpClient::connect(smtp.port);
    c.cmd("MAIL FROM:<sender@example.org>");
    c.cmd("RCPT TO:<a@example.org>");
    c.cmd("DATA");
    assert!(c.cmd("Subject: y\r\n\r\nbody\r\n.").starts_with("250"));
    assert_eq!(smtp.wait_for_messages(1, Duration::from_secs(5)).len(), 1);
}

#[test]
fn smtp_with_auth_requires_credentials() {
    let smtp = start_smtp_with_auth("mailer", "s3cret");
    assert_eq!(
        smtp.url(),
        format!("smtp://mailer:s3cret@127.0.0.1:{}?tls=none", smtp.port)
    );
    let mut c = SmtpClient::connect(smtp.port);
    assert!(c.cmd("MAIL FROM:<sender@example.org>").starts_with("530"));
    // AUTH PLAIN base64("\0mailer\0s3cret")
    assert!(c.cmd("AUTH PLAIN AG1haWxlcgBzM2NyZXQ=").starts_with("235"));
    assert!(c.cmd("MAIL FROM:<sender@example.org>").starts_with("250"));
}

// --- helpers -------------------------------------------------------------------------------

/// "redis://[user:pass@]host:port[/db]" -> "host:port"
fn redis_addr(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    authority.rsplit('@').next().unwrap().to_string()
}

fn ping(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut line = String::new();
    s.write_all(b"PING\r\n").is_ok()
        && BufReader::new(s).read_line(&mut line).is_ok()
        && line.starts_with("+PONG")
}

/// Just enough SMTP to talk to the test server by hand.
struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpClient {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = SmtpClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        assert!(c.reply().starts_with("220"));
        assert!(c.cmd("EHLO client.example.org").starts_with("250"));
        c
    }

    /// Sends one line, returns the last line of the reply ("" if the server hung up).
    fn cmd(&mut self, line: &str) -> String {
        let _ = self.writer.write_all(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return String::new(),
                Ok(_) => {}
            }
            // "250-..." continues a multi-line reply, "250 ..." ends it.
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }
}
