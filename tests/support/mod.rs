//! Helpers for the listener tests: run `mailctl serve` as a child process, talk raw HTTP/1.1
//! to it over a TcpStream, read links out of letters, and poke the database directly.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::common::{Env, servers};

/// `mailctl serve` on a free port of 127.0.0.1, stopped with SIGTERM when dropped.
pub struct Listener {
    pub port: u16,
    child: Option<Child>,
    log: std::path::PathBuf,
}

/// Sets MAILCTL_BASE_URL to the listener's address first (links in letters point at it),
/// so call this before `register` / `password reset`.
pub fn start_listener(env: &mut Env) -> Listener {
    start_listener_with(env, |_| {})
}

/// `start_listener`, with a last say on the command (limits, extra environment).
pub fn start_listener_with(env: &mut Env, setup: impl Fn(&mut std::process::Command)) -> Listener {
    for _ in 0..5 {
        let port = servers::free_port();
        env.set("MAILCTL_BASE_URL", &format!("http://127.0.0.1:{port}"));
        let log = env.dir.path().join(format!("serve-{port}.log"));
        let mut cmd = env.process("serve");
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("serve log"));
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("spawn mailctl serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Listener {
                    port,
                    child: Some(child),
                    log,
                };
            }
            if let Some(status) = child.try_wait().expect("wait serve") {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("in use") {
                    break; // somebody took the port: try another
                }
                panic!("mailctl serve exited {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "mailctl serve did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not find a free port for mailctl serve");
}

impl Listener {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_memory(&self) -> u64 {
        let pid = self.pid().expect("listener running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status");
        kb * 1024
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGTERM, then waits up to 10 s; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM)
    }

    /// Sends a signal, then waits up to 10 s; returns the exit code.
    pub fn signal(&mut self, sig: i32) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mailctl serve did not stop within 10 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        for (k, v) in headers {
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        self.raw(&raw)
    }

    /// Sends bytes as they are and parses the answer (status 0 when the server just closed).
    pub fn raw(&self, bytes: &[u8]) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to listener");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        // The server may answer (413) and close before reading everything: ignore write errors.
        let _ = s.write_all(bytes);
        let _ = s.flush();
        // Half-close: a request that never ends its headers meets EOF instead of waiting.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Resp::parse(&out)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    fn parse(raw: &[u8]) -> Resp {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Resp {
            status,
            headers,
            body: body.to_string(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn expect(&self, status: u16) -> &Resp {
        assert_eq!(self.status, status, "unexpected response: {self:#?}");
        self
    }

    /// The headers every page must carry; token pages must not be stored.
    pub fn assert_safe_headers(&self) {
        let csp = self
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("no CSP: {self:#?}"));
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(self.header("x-frame-options"), Some("DENY"));
        assert_eq!(self.header("referrer-policy"), Some("no-referrer"));
    }

    pub fn assert_no_store(&self) {
        self.assert_safe_headers();
        assert_eq!(self.header("cache-control"), Some("no-store"), "{self:#?}");
    }
}

/// The text of a letter: headers, then the body decoded from quoted-printable or base64.
pub fn letter_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("content-transfer-encoding: base64") {
        let joined: String = body.split_whitespace().collect();
        String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(joined)
                .expect("base64 body"),
        )
        .into_owned()
    } else if lower.contains("content-transfer-encoding: quoted-printable") {
        body.replace("=\n", "").replace("=3D", "=")
    } else {
        body.to_string()
    };
    format!("{head}\n\n{body}")
}

/// Letters in the outbox addressed to `to`, oldest first (by file modification time).
pub fn outbox_letters(dir: &Path, to: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort_by_key(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("mtime")
    });
    files
        .iter()
        .map(|p| letter_text(&std::fs::read(p).expect("read letter")))
        .filter(|t| {
            t.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(to))
        })
        .collect()
}

/// The path (`/confirm/TOKEN`) of the last link of that kind in a letter.
pub fn link_path(letter: &str, kind: &str) -> Option<String> {
    let marker = format!("/{kind}/");
    let start = letter.rfind(&marker)?;
    let token: String = letter[start + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    Some(format!("{marker}{token}"))
}

/// The newest letter to `to` in the outbox and the link of `kind` in it.
pub fn last_link(env: &Env, to: &str, kind: &str) -> String {
    let letters = outbox_letters(&env.outbox(), to);
    let letter = letters
        .last()
        .unwrap_or_else(|| panic!("no letter to {to} in the outbox"));
    link_path(letter, kind).unwrap_or_else(|| panic!("no /{kind}/ link in:\n{letter}"))
}

/// Runs one SQL statement on the test's database (either backend); returns rows affected.
pub fn sql(env: &Env, statement: &str) -> u64 {
    env.sql(statement)
}

/// One integer from a query, on either backend.
pub fn sql_count(env: &Env, query: &str) -> i64 {
    env.count(query)
}

/// One text value from a query, on either backend.
pub fn sql_text(env: &Env, query: &str) -> String {
    env.text(query)
}
