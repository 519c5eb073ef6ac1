//! Accounts and their login sessions.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, is_unique_violation, now};
use crate::auth::policy::{Actor, Role};
use crate::error::{Error, Result};
use crate::on_pool;
use crate::output::{Record, time};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    pub email: String,
    pub role: String,
    pub email_confirmed: bool,
    pub blocked: bool,
    pub created_at: DateTime<Utc>,
}

impl Record for Account {
    const HEADERS: &'static [&'static str] = &[
        "id",
        "email",
        "role",
        "email_confirmed",
        "blocked",
        "created_at",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.email.clone(),
            self.role.clone(),
            self.email_confirmed.to_string(),
            self.blocked.to_string(),
            time(&self.created_at),
        ]
    }
}

impl Account {
    pub fn role(&self) -> Role {
        Role::parse(&self.role)
    }
}

/// An account with its password hash, for login only.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub email: String,
    pub role: String,
    pub password_hash: String,
    pub email_confirmed: bool,
    pub blocked: bool,
}

/// The key that makes emails unique case-insensitively (Unicode-aware).
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

const COLUMNS: &str = "id, email, role, email_confirmed, blocked, created_at";

pub async fn create(
    db: &Db,
    email: &str,
    password_hash: &str,
    role: Role,
    confirmed: bool,
) -> Result<Account> {
    let sql = format!(
        "INSERT INTO accounts (email, email_key, password_hash, role, email_confirmed, blocked, created_at) \
         VALUES ($1, $2, $3, $4, $5, FALSE, $6) RETURNING {COLUMNS}"
    );
    let res = on_pool!(db, p => sqlx::query_as::<_, Account>(&sql)
        .bind(email)
        .bind(email_key(email))
        .bind(password_hash)
        .bind(role.as_str())
        .bind(confirmed)
        .bind(now())
        .fetch_one(p)
        .await);
    res.map_err(|e| {
        if is_unique_violation(&e) {
            Error::invalid("email", format!("an account with {email} already exists"))
        } else {
            e.into()
        }
    })
}

pub async fn admin_exists(db: &Db) -> Result<bool> {
    let sql = "SELECT 1 FROM accounts WHERE role = 'admin' LIMIT 1";
    let row: Option<i32> = on_pool!(db, p => sqlx::query_scalar(sql).fetch_optional(p).await)?;
    Ok(row.is_some())
}

pub async fn credentials(db: &Db, email: &str) -> Result<Option<Credentials>> {
    let sql = "SELECT id, email, role, password_hash, email_confirmed, blocked FROM accounts WHERE email_key = $1";
    Ok(
        on_pool!(db, p => sqlx::query_as::<_, Credentials>(sql).bind(email_key(email)).fetch_optional(p).await)?,
    )
}

pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<Account>> {
    let sql = format!("SELECT {COLUMNS} FROM accounts WHERE email_key = $1");
    Ok(
        on_pool!(db, p => sqlx::query_as::<_, Account>(&sql).bind(email_key(email)).fetch_optional(p).await)?,
    )
}

pub async fn find_by_id(db: &Db, id: i64) -> Result<Option<Account>> {
    let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
    Ok(on_pool!(db, p => sqlx::query_as::<_, Account>(&sql).bind(id).fetch_optional(p).await)?)
}

pub async fn list(db: &Db) -> Result<Vec<Account>> {
    let sql = format!("SELECT {COLUMNS} FROM accounts ORDER BY id");
    Ok(on_pool!(db, p => sqlx::query_as::<_, Account>(&sql).fetch_all(p).await)?)
}

pub async fn set_password(db: &Db, account_id: i64, password_hash: &str) -> Result<()> {
    let sql = "UPDATE accounts SET password_hash = $1 WHERE id = $2";
    on_pool!(db, p => sqlx::query(sql).bind(password_hash).bind(account_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Blocks or unblocks; blocking also ends every session of the account at once.
pub async fn set_blocked(db: &Db, account_id: i64, blocked: bool) -> Result<()> {
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query("UPDATE accounts SET blocked = $1 WHERE id = $2")
            .bind(blocked)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        if blocked {
            sqlx::query("DELETE FROM sessions WHERE account_id = $1")
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    })?;
    Ok(())
}

pub async fn create_session(
    db: &Db,
    account_id: i64,
    token_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    let sql = "INSERT INTO sessions (account_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)";
    on_pool!(db, p => sqlx::query(sql)
        .bind(account_id)
        .bind(token_hash)
        .bind(now())
        .bind(expires_at)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    email: String,
    role: String,
    blocked: bool,
    expires_at: DateTime<Utc>,
}

/// What a session token stands for.
pub enum SessionState {
    Valid(Actor),
    Expired,
    Blocked,
    Unknown,
}

pub async fn session_actor(db: &Db, token_hash: &str) -> Result<SessionState> {
    let sql = "SELECT a.id, a.email, a.role, a.blocked, s.expires_at \
               FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE s.token_hash = $1";
    let row = on_pool!(db, p => sqlx::query_as::<_, SessionRow>(sql).bind(token_hash).fetch_optional(p).await)?;
    Ok(match row {
        None => SessionState::Unknown,
        Some(r) if r.blocked => SessionState::Blocked,
        Some(r) if r.expires_at <= Utc::now() => SessionState::Expired,
        Some(r) => SessionState::Valid(Actor {
            id: r.id,
            email: r.email,
            role: Role::parse(&r.role),
        }),
    })
}

pub async fn delete_session(db: &Db, token_hash: &str) -> Result<()> {
    on_pool!(db, p => sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Ends every session of an account (password changed or reset).
pub async fn delete_sessions_of(db: &Db, account_id: i64) -> Result<()> {
    on_pool!(db, p => sqlx::query("DELETE FROM sessions WHERE account_id = $1").bind(account_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Drops expired sessions of one account, so the table does not grow forever.
pub async fn prune_sessions(db: &Db, account_id: i64) -> Result<()> {
    let sql = "DELETE FROM sessions WHERE account_id = $1 AND expires_at <= $2";
    on_pool!(db, p => sqlx::query(sql).bind(account_id).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}
