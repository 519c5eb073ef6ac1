//! Real servers for integration tests: PostgreSQL, Redis and a scriptable SMTP server, all on
//! 127.0.0.1. Nothing is mocked and nothing is skipped: if a server cannot start, the test
//! panics with the reason (and the server's log).
//!
//! * PostgreSQL and the shared Redis start once per test process (`OnceLock`), unless CI hands
//!   us running ones through `MAILCTL_TEST_PG_URL` / `MAILCTL_TEST_REDIS_URL`.
//! * Every test gets its own database (`postgres_fresh_database`) and, when it needs one, its
//!   own SMTP server (`start_smtp`) or killable Redis (`start_private_redis`).
//! * Server processes are children of the test process and get SIGKILL when it dies, however
//!   it dies (see `spawn_tied`). Their scratch directories live in the system temp dir, are
//!   removed at exit, and leftovers of crashed runs are swept on the next run.
#![allow(dead_code)] // each test binary uses a different subset of this module

use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long any server may take to come up before we give up loudly.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Interpreter that has python3-aiosmtpd (the pyenv python first on PATH does not).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
const SMTP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_server.py");
const SCRATCH_PREFIX: &str = "mailctl-test-";

/// A TCP port that was free a moment ago. Another process may grab it before we use it,
/// so the callers that pass it to a server retry with a new port on "address in use".
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0 to find a free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// Superuser URL of a running PostgreSQL: `MAILCTL_TEST_PG_URL`, or a private throwaway cluster
/// started on first use.
pub fn postgres_admin_url() -> String {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    // The Result is stored so that, if the start fails, every test fails fast with the same
    // message instead of each one retrying a 30 s start.
    match URL.get_or_init(|| match env_url("MAILCTL_TEST_PG_URL") {
        Some(url) => Ok(url),
        None => start_private_postgres(),
    }) {
        Ok(url) => url.clone(),
        Err(e) => panic!("test PostgreSQL is not available: {e}"),
    }
}

/// Creates an empty database with a unique name and returns its URL,
/// `postgres://USER@127.0.0.1:PORT/mailctl_test_<pid>_<n>`.
pub fn postgres_fresh_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin = postgres_admin_url();
    let name = format!(
        "mailctl_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_psql(&admin, &format!("CREATE DATABASE \"{name}\"")) {
            Ok(_) => break,
            // Leftover of an earlier run against the same external server (pid reuse).
            Err(e) if e.contains("already exists") && attempt < 5 => {
                psql(&admin, &format!("DROP DATABASE \"{name}\" WITH (FORCE)"));
            }
            // CREATE DATABASE copies template1 and refuses while anything else touches it.
            Err(e) if e.contains("being accessed by other users") && attempt < 50 => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot create test database {name}: {e}"),
        }
    }
    with_database(&admin, &name)
}

/// Runs SQL with the `psql` client against `url`; returns the output (unaligned, tuples only,
/// trimmed). Panics with psql's error if it fails. Handy for asserting on database state.
pub fn psql(url: &str, sql: &str) -> String {
    try_psql(url, sql).unwrap_or_else(|e| panic!("psql failed on {sql:?}: {e}"))
}

fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(psql_binary())
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql ({}): {e}", psql_binary().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "psql exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn psql_binary() -> PathBuf {
    match pg_bin_dir() {
        Ok(dir) if dir.join("psql").exists() => dir.join("psql"),
        _ => PathBuf::from("psql"),
    }
}

/// `/usr/lib/postgresql/<highest version>/bin`.
fn pg_bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let best = fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    best.map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "no PostgreSQL server binaries under {}/*/bin (install postgresql-15, or set \
             MAILCTL_TEST_PG_URL)",
            root.display()
        )
    })
}

/// initdb + `postgres` in a scratch dir, listening on 127.0.0.1 only, durability off.
fn start_private_postgres() -> Result<String, String> {
    let bin = pg_bin_dir()?;
    let dir = scratch_dir("pg");
    let data = dir.join("data");

    // initdb and postgres refuse to run as root: run them as the `postgres` system user.
    let run_as = if is_root() {
        let ids = system_user("postgres").ok_or(
            "running as root, but there is no `postgres` system user to run the server as \
             (it comes with the postgresql package)",
        )?;
        chown(&dir, ids)?;
        Some(ids)
    } else {
        None
    };

    // C.UTF-8 makes lower()/ILIKE behave on non-ASCII text like a production cluster would.
    let locale = if Path::new("/usr/lib/locale/C.utf8").exists() {
        "C.UTF-8"
    } else {
        "C"
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ])
        .arg(format!("--locale={locale}"))
        .current_dir(&dir)
        .stdin(Stdio::null());
    as_user(&mut initdb, run_as);
    let out = initdb
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    let log = dir.join("postgres.log");
    for _attempt in 0..5 {
        let port = free_port();
        let _ = fs::remove_file(&log); // only this attempt's messages decide "port taken"
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D").arg(&data).arg("-p").arg(port.to_string());
        for setting in [
            "listen_addresses=127.0.0.1".to_string(),
            format!("unix_socket_directories={}", dir.display()),
            // A test server: speed over durability.
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            // Parallel tests, each with a connection pool and sometimes several workers.
            "max_connections=300".into(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?);
        as_user(&mut cmd, run_as);
        let mut child = spawn_tied(cmd).map_err(|e| format!("cannot start postgres: {e}"))?;

        let pg_isready = bin.join("pg_isready");
        let ready = wait_until(&mut child, &log, || {
            Command::new(&pg_isready)
                .args([
                    "-q",
                    "-t",
                    "1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .arg("-p")
                .arg(port.to_string())
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        match ready {
            Ok(()) => {
                // Lives until the process exits; the exit hook (or PDEATHSIG) kills it.
                register_cleanup(child.id(), &dir);
                return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"));
            }
            Err(Failure::PortTaken) => continue,
            Err(Failure::Other(e)) => return Err(format!("postgres on port {port}: {e}")),
        }
    }
    Err("postgres: could not find a free port in 5 attempts".into())
}

/// Replaces the database name (path) of a postgres URL, keeping any `?query`.
fn with_database(url: &str, db: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let base = match head[authority_start..].find('/') {
        Some(i) => &head[..authority_start + i],
        None => head,
    };
    format!("{base}/{db}{query}")
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// URL of the Redis shared by the tests of this process: `MAILCTL_TEST_REDIS_URL`, or a
/// private `redis-server` started on first use. Tests that kill Redis use
/// [`start_private_redis`] instead.
pub fn redis_url() -> String {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    match URL.get_or_init(|| match env_url("MAILCTL_TEST_REDIS_URL") {
        Some(url) => Ok(url),
        None => {
            let dir = scratch_dir("redis");
            let (port, child) = launch_redis_any_port(&dir)?;
            // Lives until the process exits; the exit hook (or PDEATHSIG) kills it.
            register_cleanup(child.id(), &dir);
            Ok(format!("redis://127.0.0.1:{port}"))
        }
    }) {
        Ok(url) => url.clone(),
        Err(e) => panic!("test Redis is not available: {e}"),
    }
}

/// A Redis of one test's own, which the test may kill and restart ("Redis dies mid-run").
/// Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

pub fn start_private_redis() -> RedisServer {
    let dir = scratch_dir("redis");
    match launch_redis_any_port(&dir) {
        Ok((port, child)) => RedisServer {
            port,
            dir,
            child: Some(child),
        },
        Err(e) => panic!("cannot start a private redis-server: {e}"),
    }
}

impl RedisServer {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, like a crash: no shutdown, clients see their connections drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (killing it first if it still runs); data is gone.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match launch_redis(self.port, &self.dir) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                // The old socket may linger for a moment.
                Err(Failure::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(Failure::PortTaken) => {
                    panic!("cannot restart redis: port {} stays taken", self.port)
                }
                Err(Failure::Other(e)) => panic!("cannot restart redis: {e}"),
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn launch_redis_any_port(dir: &Path) -> Result<(u16, Child), String> {
    for _attempt in 0..5 {
        let port = free_port();
        match launch_redis(port, dir) {
            Ok(child) => return Ok((port, child)),
            Err(Failure::PortTaken) => continue,
            Err(Failure::Other(e)) => return Err(e),
        }
    }
    Err("redis-server: could not find a free port in 5 attempts".into())
}

/// Starts `redis-server` on `port`, without persistence, and waits until it answers PING.
fn launch_redis(port: u16, dir: &Path) -> Result<Child, Failure> {
    let log = dir.join("redis.log");
    let _ = fs::remove_file(&log); // only this start's messages decide "port taken"
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&dir.join("redis.stderr")).map_err(Failure::Other)?);
    let mut child = spawn_tied(cmd).map_err(|e| {
        Failure::Other(format!(
            "cannot run redis-server ({e}); install the redis-server package or set \
             MAILCTL_TEST_REDIS_URL"
        ))
    })?;
    match wait_until(&mut child, &log, || redis_ping(port)) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    stream.write_all(b"PING\r\n").is_ok()
        && BufReader::new(stream).read_line(&mut line).is_ok()
        && line.starts_with("+PONG")
}

// ---------------------------------------------------------------------------------------------
// SMTP
// ---------------------------------------------------------------------------------------------

/// One test's own SMTP server (tests/smtp_server.py). Every accepted message is stored as
/// `<n>.eml` in `dir`; replies are scripted with [`SmtpServer::set_rules`]. Killed when dropped.
pub struct SmtpServer {
    pub port: u16,
    pub dir: PathBuf,
    auth: Option<(String, String)>,
    tls: Option<SmtpTls>,
    /// More arguments for tests/smtp_server.py (`--no-pipelining`, `--multiline-greeting`).
    args: Vec<String>,
    child: Option<Child>,
}

/// How a test SMTP server speaks TLS (`tests/smtp_server.py --tls`), with a certificate for
/// localhost and 127.0.0.1 issued by a throwaway CA ([`SmtpServer::ca_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Offers STARTTLS; mail over a plain session is accepted too.
    Starttls,
    /// Offers STARTTLS and refuses mail before it (530).
    StarttlsRequired,
    /// TLS from the first byte (smtps://).
    Implicit,
}

/// Starts an SMTP server accepting everything (until rules say otherwise), no AUTH.
pub fn start_smtp() -> SmtpServer {
    start_smtp_inner(None, None)
}

/// Same, but the server requires AUTH PLAIN/LOGIN with these credentials (over plain text).
pub fn start_smtp_with_auth(user: &str, password: &str) -> SmtpServer {
    start_smtp_inner(Some((user.to_string(), password.to_string())), None)
}

/// An SMTP server speaking TLS as `mode` says. Trust it with
/// `MAILCTL_SMTP_CA_FILE=server.ca_file()`.
pub fn start_smtp_tls(mode: SmtpTls) -> SmtpServer {
    start_smtp_inner(None, Some(mode))
}

/// Same, and requiring AUTH; with STARTTLS the server refuses AUTH before it.
pub fn start_smtp_tls_with_auth(mode: SmtpTls, user: &str, password: &str) -> SmtpServer {
    start_smtp_inner(Some((user.to_string(), password.to_string())), Some(mode))
}

/// A plain server started with more arguments of tests/smtp_server.py, e.g.
/// `["--no-pipelining"]` or `["--multiline-greeting"]`.
pub fn start_smtp_with_args(args: &[&str]) -> SmtpServer {
    let mut server = SmtpServer {
        port: 0,
        dir: scratch_dir("smtp"),
        auth: None,
        tls: None,
        args: args.iter().map(|a| a.to_string()).collect(),
        child: None,
    };
    server.launch();
    server
}

fn start_smtp_inner(auth: Option<(String, String)>, tls: Option<SmtpTls>) -> SmtpServer {
    let dir = scratch_dir("smtp");
    if tls.is_some() {
        make_test_certificates(&dir);
    }
    let mut server = SmtpServer {
        port: 0, // the script binds port 0 and reports the port: no race for a free port
        dir,
        auth,
        tls,
        args: Vec::new(),
        child: None,
    };
    server.launch();
    server
}

/// `ca.pem` (a throwaway CA) and `cert.pem` + `key.pem` (the server's certificate for
/// localhost and 127.0.0.1, signed by that CA) in `dir`, made by the openssl command line.
/// A real chain rather than one self-signed certificate: rustls refuses a CA certificate
/// presented as the server's own.
fn make_test_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let steps: [&[&str]; 2] = [
        &[
            "-subj",
            "/CN=mailctl test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    ];
    for step in steps {
        let out = Command::new("openssl")
            .args(["req", "-x509", "-days", "2"])
            .args(ec)
            .args(step)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("TLS tests need the openssl command (apt-get install openssl): {e}")
            });
        assert!(
            out.status.success(),
            "openssl req {step:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl SmtpServer {
    /// `smtp://127.0.0.1:PORT` (`smtps://` for implicit TLS), with `user:password@` when the
    /// server requires AUTH, and `?tls=none` when that AUTH is over a plain session (which
    /// mailctl refuses unless told).
    pub fn url(&self) -> String {
        let scheme = match self.tls {
            Some(SmtpTls::Implicit) => "smtps",
            _ => "smtp",
        };
        match &self.auth {
            Some((user, password)) if self.tls.is_none() => {
                format!(
                    "{scheme}://{user}:{password}@127.0.0.1:{}?tls=none",
                    self.port
                )
            }
            Some((user, password)) => {
                format!("{scheme}://{user}:{password}@127.0.0.1:{}", self.port)
            }
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The PEM file of the CA that issued a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls.is_some(), "a plain SMTP server has no certificate");
        self.dir.join("ca.pem")
    }

    /// The TLS version of the session each accepted message came over (`"TLSv1.3"`), or
    /// `None` for a plain session; in arrival order.
    pub fn tls_versions(&self) -> Vec<Option<String>> {
        self.log()
            .iter()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("log.jsonl line {line:?}: {e}"));
                entry["tls"].as_str().map(str::to_string)
            })
            .collect()
    }

    /// Replaces the behaviour rules (JSON, format documented in tests/smtp_server.py), e.g.
    /// `{"rcpt": [{"match": "tempfail", "reply": "451 4.3.0 Try again later", "times": 1}]}`.
    /// Takes effect from the next MAIL FROM.
    pub fn set_rules(&self, json: &str) {
        // Write then rename: the server never reads a half-written file.
        let tmp = self.dir.join(".rules.json.tmp");
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, self.rules_path()))
            .unwrap_or_else(|e| panic!("cannot write SMTP rules: {e}"));
    }

    /// Back to accepting everything.
    pub fn clear_rules(&self) {
        let _ = fs::remove_file(self.rules_path());
    }

    /// Raw accepted messages (as received, after dot-unstuffing), in arrival order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.message_files()
            .into_iter()
            .map(|path| {
                fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            })
            .collect()
    }

    pub fn received_count(&self) -> usize {
        self.message_files().len()
    }

    /// Waits until at least `n` messages arrived (for sends that happen in the background).
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while self.received_count() < n {
            if Instant::now() > deadline {
                panic!(
                    "SMTP server got {} message(s), expected {n} within {timeout:?}",
                    self.received_count()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.messages()
    }

    /// Lines of `log.jsonl`: one JSON object per accepted message
    /// (`n`, `file`, `mail_from`, `rcpt_tos`, `reply`).
    pub fn log(&self) -> Vec<String> {
        read_lines(&self.dir.join("log.jsonl"))
    }

    /// Lines of `events.jsonl`: one JSON object per RCPT/DATA answer, rejections included
    /// (`stage`, `mail_from`, `rcpt` or `rcpt_tos`, `reply`). Counts attempts.
    pub fn events(&self) -> Vec<String> {
        read_lines(&self.dir.join("events.jsonl"))
    }

    /// SIGKILL the server: connections drop, new ones are refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, keeping the stored messages and rules
    /// ("times" counters start over).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let port_file = self.dir.join("port");
        let log = self.dir.join("server.log");
        let _ = fs::remove_file(&port_file);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let _ = fs::remove_file(&log); // only this start's messages decide "port taken"
            let mut cmd = Command::new(SYSTEM_PYTHON);
            // -I: ignore PYTHONPATH/user site-packages, so the Debian aiosmtpd is what we get.
            cmd.arg("-I")
                .arg(SMTP_SCRIPT)
                .arg("--port")
                .arg(self.port.to_string())
                .arg("--dir")
                .arg(&self.dir)
                .arg("--rules")
                .arg(self.rules_path())
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(log_file(&log).unwrap_or_else(|e| panic!("{e}")))
                .stderr(log_file(&log).unwrap_or_else(|e| panic!("{e}")));
            if let Some((user, password)) = &self.auth {
                cmd.arg("--auth").arg(format!("{user}:{password}"));
            }
            cmd.args(&self.args);
            if let Some(mode) = self.tls {
                let mode = match mode {
                    SmtpTls::Starttls => "starttls",
                    SmtpTls::StarttlsRequired => "starttls-required",
                    SmtpTls::Implicit => "implicit",
                };
                cmd.args(["--tls", mode, "--cert", "cert.pem", "--key", "key.pem"]);
            }
            let mut child = spawn_tied(cmd)
                .unwrap_or_else(|e| panic!("cannot run {SYSTEM_PYTHON} {SMTP_SCRIPT}: {e}"));
            // An implicit-TLS server greets only after a handshake: accepting is enough there.
            let implicit = self.tls == Some(SmtpTls::Implicit);
            let ready = wait_until(&mut child, &log, || {
                fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<u16>().ok())
                    .is_some_and(|port| {
                        if implicit {
                            TcpStream::connect(("127.0.0.1", port)).is_ok()
                        } else {
                            smtp_greets(port)
                        }
                    })
            });
            match ready {
                Ok(()) => {
                    self.port = fs::read_to_string(&port_file)
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    self.child = Some(child);
                    return;
                }
                // Only on restart (fixed port): the old socket may linger for a moment.
                Err(Failure::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!(
                    "test SMTP server did not start: {}\n(it needs {SYSTEM_PYTHON} with aiosmtpd: \
                     apt-get install python3-aiosmtpd)",
                    e.message()
                ),
            }
        }
    }

    fn rules_path(&self) -> PathBuf {
        self.dir.join("rules.json")
    }

    fn message_files(&self) -> Vec<PathBuf> {
        // Only the final `<n>.eml` names: the server writes `.<n>.eml.tmp` first.
        let mut numbered: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", self.dir.display()))
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let n = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".eml")?
                    .parse()
                    .ok()?;
                Some((n, path))
            })
            .collect();
        numbered.sort();
        numbered.into_iter().map(|(_, path)| path).collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Keep the evidence; the next run sweeps it (the name carries our pid).
            eprintln!("test SMTP server files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn smtp_greets(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let ok = BufReader::new(&stream).read_line(&mut line).is_ok() && line.starts_with("220");
    let _ = stream.write_all(b"QUIT\r\n");
    ok
}

// ---------------------------------------------------------------------------------------------
// Processes, scratch directories, cleanup
// ---------------------------------------------------------------------------------------------

/// Why a server did not come up.
enum Failure {
    /// Its port was taken: worth retrying (with another port, or later).
    PortTaken,
    Other(String),
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Failure::PortTaken => "address already in use".into(),
            Failure::Other(e) => e.clone(),
        }
    }
}

/// Polls `ready` until it holds, the child exits, or START_TIMEOUT passes.
fn wait_until(
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log_text = fs::read_to_string(log).unwrap_or_default();
            let lower = log_text.to_lowercase();
            if lower.contains("address already in use") || lower.contains("could not bind") {
                return Err(Failure::PortTaken);
            }
            return Err(Failure::Other(format!(
                "exited with {status} before accepting connections; log {}:\n{}",
                log.display(),
                tail(&log_text)
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::Other(format!(
                "not accepting connections after {START_TIMEOUT:?}; log {}:\n{}",
                log.display(),
                tail(&fs::read_to_string(log).unwrap_or_default())
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spawns a server process that receives SIGKILL when this test process dies, even by
/// SIGKILL. PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and test
/// threads end with their test, so every spawn goes through one thread that lives as long as
/// the process (blocked on its request channel forever).
fn spawn_tied(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("test-server-spawner".into())
            .spawn(move || {
                // Never ends: SPAWNER holds a sender for the life of the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(&mut cmd));
                }
            })
            .expect("cannot start the test-server spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("test-server spawner thread is gone");
    reply_rx.recv().expect("test-server spawner thread is gone")
}

fn spawn_with_pdeathsig(cmd: &mut Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec. std runs this after
    // switching uid/gid (Command::uid/gid), which matters: a credential change clears the
    // death signal, which is also why we do not use setpriv/runuser to drop root.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal would ever come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn as_user(cmd: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        // std also drops root's supplementary groups when uid is set (like --clear-groups).
        cmd.uid(uid).gid(gid);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// (uid, gid) of a local system user.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam_r writes only into the buffers we pass.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
    }
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("cannot chown {} to the postgres user: {e}", path.display()))
}

/// A fresh directory `<tmp>/mailctl-test-<kind>-<pid>-<n>`. The system temp dir rather than
/// CARGO_TARGET_TMPDIR: the `postgres` user must be able to reach it, and the unix socket path
/// inside it must stay under the 107-byte limit.
fn scratch_dir(kind: &str) -> PathBuf {
    static SWEEP: OnceLock<()> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    SWEEP.get_or_init(sweep_stale_scratch_dirs);
    let dir = std::env::temp_dir().join(format!(
        "{SCRATCH_PREFIX}{kind}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir); // a leftover from a dead process with our pid
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Removes scratch dirs of test processes that no longer exist (killed runs).
fn sweep_stale_scratch_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Process-lifetime servers (PostgreSQL, shared Redis) are killed and their directories
/// removed when the test process exits normally (libtest returns or calls exit()).
fn register_cleanup(pid: u32, dir: &Path) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(cleanup_at_exit) };
    });
    cleanup_list()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, dir.to_path_buf()));
}

fn cleanup_list() -> &'static Mutex<Vec<(u32, PathBuf)>> {
    static LIST: OnceLock<Mutex<Vec<(u32, PathBuf)>>> = OnceLock::new();
    LIST.get_or_init(|| Mutex::new(Vec::new()))
}

extern "C" fn cleanup_at_exit() {
    let list = std::mem::take(&mut *cleanup_list().lock().unwrap_or_else(|e| e.into_inner()));
    for (pid, dir) in list {
        // SAFETY: these pids are our own children, never reaped elsewhere.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        // PostgreSQL backends may still be exiting; the next run's sweep gets any rest.
        let _ = fs::remove_dir_all(&dir);
    }
}

fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

fn log_file(path: &Path) -> Result<fs::File, String> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log {}: {e}", path.display()))
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The last lines of a log, for panic messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
