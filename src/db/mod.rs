//! Storage: which backend, connecting, migrating. One file per aggregate holds its SQL.
//!
//! Queries are runtime `sqlx::query_as` with `$1` placeholders, which both SQLite and
//! PostgreSQL accept; the few differences sit side by side in `dialect.rs` (fragments), in
//! one implementation per backend of one trait (`import/`), or as one `match` on the backend
//! per statement in the sender's SQL (`deliveries.rs`: claim, making rows, releasing leases).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{hide_secrets, redact_url};
use crate::error::{Error, Result};

pub mod accounts;
pub mod attempts;
pub mod audience;
pub mod bounces;
pub mod clients;
pub mod deliveries;
pub mod dialect;
pub mod fields;
pub mod import;
pub mod mailings;
pub mod messages;
pub mod recipients;
pub mod search;
pub mod stats;
pub mod suppressions;
pub mod system_letters;
pub mod tags;
pub mod tokens;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body against whichever pool is in use: `on_pool!(db, pool => query.fetch_all(pool))`.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// The current time, truncated to microseconds so both backends store exactly the same value.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Db {
    /// Connects and, when the schema is behind, migrates. The check reads one row.
    /// A SQLite file that does not exist is created only when `create` is set (the default
    /// location, `migrate`, the first `csu`); elsewhere a typo in the URL would quietly start
    /// an empty database, so it is exit 1 instead.
    pub async fn open(url: &str, max_connections: u32, create: bool) -> Result<Db> {
        if !create {
            must_exist(url)?;
        }
        let db = Db::connect(url, max_connections).await?;
        if !db.is_current().await {
            db.migrate().await?;
        }
        Ok(db)
    }

    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| {
                    let text = format!("{} ({e})", redact_url(url));
                    Error::invalid("database-url", hide_secrets(url, &text))
                })?
                // Every statement here is short; JIT compiling one whose estimate looks large
                // (a claim's LIMIT over a scalar subquery) costs milliseconds and saves nothing.
                .options([("jit", "off")]);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(|e| {
                    let text = format!("cannot connect to {}: {e}", redact_url(url));
                    Error::runtime(hide_secrets(url, &text))
                })?;
            Ok(Db::Postgres(pool))
        } else if let Some(path) = sqlite_path(url) {
            create_private_file(&path)?;
            let opts = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            // A local file cannot drop a connection: no ping before every acquire.
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .test_before_acquire(false)
                .connect_with(opts)
                .await
                .map_err(|e| Error::runtime(format!("cannot open {}: {e}", path.display())))?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(Error::invalid(
                "database-url",
                "must start with sqlite:// or postgres://",
            ))
        }
    }

    /// Whether the sender's claims make the delivery rows as they go (PostgreSQL: a row is
    /// written once, already claimed), rather than all rows being made before the run
    /// (SQLite: one writer, and one statement for them all is cheapest there).
    pub fn claims_make_rows(&self) -> bool {
        match self {
            Db::Postgres(_) => true,
            Db::Sqlite(_) => false,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Db::Sqlite(_) => &SQLITE_MIGRATOR,
            Db::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// True when the newest applied migration is the newest this binary knows.
    async fn is_current(&self) -> bool {
        let latest = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        let sql =
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version DESC LIMIT 1";
        let applied: std::result::Result<Option<i64>, sqlx::Error> =
            on_pool!(self, p => sqlx::query_scalar(sql).fetch_optional(p).await);
        matches!(applied, Ok(Some(v)) if v >= latest)
    }

    /// How many migrations this binary knows that the database has not applied.
    pub async fn pending_migrations(&self) -> Result<usize> {
        let sql = "SELECT version FROM _sqlx_migrations WHERE success";
        let applied: Vec<i64> = match on_pool!(self, p => sqlx::query_scalar(sql).fetch_all(p).await)
        {
            Ok(v) => v,
            // No table yet: nothing applied.
            Err(sqlx::Error::Database(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(self
            .migrator()
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    /// Applies pending migrations (safe to run concurrently: sqlx takes a lock).
    pub async fn migrate(&self) -> Result<()> {
        on_pool!(self, p => self.migrator().run(p).await)?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

/// A SQLite URL whose file is missing: exit 1, saying how to create it.
pub fn must_exist(url: &str) -> Result<()> {
    match sqlite_path(url) {
        Some(path) if !is_memory(&path) && !path.exists() => Err(Error::runtime(format!(
            "no database at {} (run `mailctl migrate` to create it)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// The file of a `sqlite:` URL (None for PostgreSQL or anything else).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(PathBuf::from(path.split('?').next().unwrap_or(path)))
}

fn is_memory(path: &std::path::Path) -> bool {
    path.as_os_str().is_empty() || path.to_str() == Some(":memory:")
}

/// Creates the SQLite file (and its directory) readable by the owner alone, before SQLite
/// creates it with the default umask.
fn create_private_file(path: &std::path::Path) -> Result<()> {
    if is_memory(path) || path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::runtime(format!("cannot create {}: {e}", path.display())))?;
    Ok(())
}

/// True when the error is a unique-constraint violation (both backends).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// True when the error is a foreign-key violation (both backends).
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}
