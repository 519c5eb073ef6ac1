//! Test helpers: a clean environment per test, the real binary, and real servers.
#![allow(dead_code)]

pub mod servers;

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's world: a temp dir for XDG data/config (SQLite file, outbox, sessions) and a
/// fresh database on the chosen backend.
pub struct Env {
    pub dir: TempDir,
    pub backend: Backend,
    pub db_url: String,
    /// Extra environment for every command (MAILCTL_SMTP_URL, MAILCTL_REDIS_URL...).
    pub vars: Vec<(String, String)>,
}

pub const PASSWORD: &str = "correct-horse-battery";

impl Env {
    pub fn new(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}",
                dir.path().join("data/mailctl/mailctl.db").display()
            ),
            Backend::Postgres => servers::postgres_fresh_database(),
        };
        Env {
            dir,
            backend,
            db_url,
            vars: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
    }

    /// Runs `f` on a fresh connection to the test database, outside mailctl.
    fn with_db<T>(&self, f: impl AsyncFnOnce(&mailctl::db::Db) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = mailctl::db::Db::connect(&self.db_url, 1)
                .await
                .expect("connect");
            let v = f(&db).await;
            db.close().await;
            v
        })
    }

    /// Runs one SQL statement directly on the test database (to age a session, say).
    pub fn sql(&self, statement: &str) -> u64 {
        self.with_db(async |db| {
            mailctl::on_pool!(db, p => sqlx::query(statement).execute(p).await.map(|r| r.rows_affected()))
                .unwrap_or_else(|e| panic!("{statement}: {e}"))
        })
    }

    /// The number a `SELECT COUNT(*) ...` query returns on the test database.
    pub fn count(&self, query: &str) -> i64 {
        self.with_db(async |db| {
            mailctl::on_pool!(db, p => sqlx::query_scalar(query).fetch_one(p).await)
                .unwrap_or_else(|e| panic!("{query}: {e}"))
        })
    }

    /// The text a one-value query returns on the test database.
    pub fn text(&self, query: &str) -> String {
        self.with_db(async |db| {
            mailctl::on_pool!(db, p => sqlx::query_scalar(query).fetch_one(p).await)
                .unwrap_or_else(|e| panic!("{query}: {e}"))
        })
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("data/mailctl/outbox")
    }

    pub fn session_file(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("sessions/{who}"))
    }

    /// The binary with a clean environment: nothing from the developer's own setup leaks in.
    pub fn command(&self, who: &str) -> Command {
        let mut cmd = Command::from_std(self.process(who));
        cmd.timeout(std::time::Duration::from_secs(120));
        cmd
    }

    /// The same environment as `command`, as a plain process to spawn (and kill, or run
    /// beside others).
    pub fn process(&self, who: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mailctl"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("MAILCTL_DATABASE_URL", &self.db_url)
            .env("MAILCTL_SESSION_FILE", self.session_file(who))
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// A caller with their own session file.
    pub fn as_(&self, who: &str) -> Caller<'_> {
        Caller {
            env: self,
            who: who.to_string(),
        }
    }

    /// The first administrator, logged in as "admin".
    pub fn admin(&self) -> Caller<'_> {
        let admin = self.as_("admin");
        if !self.session_file("admin").exists() {
            admin
                .stdin(
                    &["csu", "--email", "admin@example.com", "--password-stdin"],
                    PASSWORD,
                )
                .success();
            admin.login("admin@example.com");
        }
        admin
    }

    /// Creates an account (by the admin) and logs it in under the name `who`.
    pub fn account(&self, role: &str, who: &str) -> Caller<'_> {
        let email = format!("{who}@example.com");
        let cmd = match role {
            "user" => "create-user",
            "manager" => "create-manager",
            "admin" => "csu",
            other => panic!("unknown role {other}"),
        };
        self.admin()
            .stdin(&[cmd, "--email", &email, "--password-stdin"], PASSWORD)
            .success();
        let caller = self.as_(who);
        caller.login(&email);
        caller
    }
}

pub struct Caller<'a> {
    pub env: &'a Env,
    pub who: String,
}

/// The result of one run, with helpers that print everything when an assertion fails.
pub struct Run {
    pub output: Output,
    pub args: String,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "`mailctl {}` exited {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "`mailctl {}` printed no JSON ({e}):\n{}\n{}",
                self.args,
                self.stdout(),
                self.stderr()
            )
        })
    }
}

impl Caller<'_> {
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    pub fn stdin(&self, args: &[&str], input: &str) -> Run {
        self.run_with(args, Some(input))
    }

    fn run_with(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = self.env.command(&self.who);
        cmd.args(args);
        cmd.write_stdin(input.map(|i| format!("{i}\n")).unwrap_or_default());
        let output = cmd.output().expect("run mailctl");
        Run {
            output,
            args: args.join(" "),
        }
    }

    /// Runs with `--format json`, expects success, returns the parsed output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        self.run(&all).success().json()
    }

    pub fn code(&self, args: &[&str]) -> i32 {
        self.run(args).code()
    }

    pub fn login(&self, email: &str) {
        self.stdin(&["login", "--email", email, "--password-stdin"], PASSWORD)
            .success();
    }

    /// Adds a client and returns its id.
    pub fn client(&self, email: &str) -> i64 {
        self.json(&["clients", "add", "--email", email, "--name", "Test Person"])["id"]
            .as_i64()
            .expect("client id")
    }

    /// Adds a message and returns its id.
    pub fn message(&self, subject: &str) -> i64 {
        self.json(&[
            "messages",
            "add",
            "--subject",
            subject,
            "--body",
            "Hello {{full_name}}",
        ])["id"]
            .as_i64()
            .expect("message id")
    }

    /// Adds a mailing of `message` to `clients` over a window from an hour ago to tomorrow.
    pub fn mailing(&self, message: i64, clients: &[i64]) -> i64 {
        let start = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let end = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
        let msg = message.to_string();
        let ids: Vec<String> = clients.iter().map(i64::to_string).collect();
        let mut args = vec![
            "mailings",
            "add",
            "--message",
            &msg,
            "--start",
            &start,
            "--end",
            &end,
        ];
        for id in &ids {
            args.extend(["--client", id]);
        }
        self.json(&args)["id"].as_i64().expect("mailing id")
    }
}

/// Runs a scenario `fn name(env: &Env)` once on SQLite and once on PostgreSQL:
/// `on_both_backends!(name);` makes the tests `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&$crate::common::Env::new($crate::common::Backend::Sqlite));
                }
                #[test]
                fn postgres() {
                    super::$name(&$crate::common::Env::new($crate::common::Backend::Postgres));
                }
            }
        )+
    };
}

/// Like `on_both_backends!`, for scenarios `fn name(env: &mut Env)` that change the
/// environment (point links at a listener, set MAILCTL_SMTP_URL...).
#[macro_export]
macro_rules! on_both_backends_mut {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&mut $crate::common::Env::new($crate::common::Backend::Sqlite));
                }
                #[test]
                fn postgres() {
                    super::$name(&mut $crate::common::Env::new($crate::common::Backend::Postgres));
                }
            }
        )+
    };
}
