//! Login throttling: after `MAX_FAILURES` failed logins for one account (by lower-cased email)
//! within `WINDOW`, further attempts are refused until the oldest of those failures is older
//! than the window. The count is kept in Redis when `MAILCTL_REDIS_URL` is set (shared by every
//! host), otherwise, or when Redis does not answer, in the database.
//!
//! The key is the email as typed, whether or not such an account exists, so throttling tells
//! nothing about which accounts exist. A refused attempt does not verify the password at all.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::auth::token;
use crate::config::Config;
use crate::db::accounts::email_key;
use crate::db::{Db, now, tokens};
use crate::error::{Error, Result};

pub const MAX_FAILURES: i64 = 5;
pub const WINDOW_MINUTES: i64 = 15;

fn window() -> Duration {
    Duration::minutes(WINDOW_MINUTES)
}

pub struct Throttle<'a> {
    db: &'a Db,
    /// Set while Redis answers; a Redis error falls back to the database for good.
    redis: Option<redis::aio::MultiplexedConnection>,
    email: String,
}

fn redis_key(email: &str) -> String {
    // Hashed, so the Redis keyspace does not list addresses.
    format!("mailctl:login-failures:{}", token::hash(&email_key(email)))
}

async fn connect_redis(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    match crate::cache::connect(url).await {
        Ok(c) => Some(c),
        Err(e) => {
            crate::cache::warn_unavailable(url, e, "counting failed logins in the database");
            None
        }
    }
}

fn refused(oldest: Option<DateTime<Utc>>) -> Error {
    let wait = oldest
        .map(|t| (t + window() - Utc::now()).num_seconds().max(1))
        .unwrap_or(WINDOW_MINUTES * 60);
    let minutes = (wait + 59) / 60;
    Error::forbidden(format!(
        "too many failed logins for this account: try again in {minutes} minute{}",
        if minutes == 1 { "" } else { "s" }
    ))
}

fn redis_err(e: redis::RedisError) -> Error {
    Error::runtime(format!("redis: {e}"))
}

async fn redis_window(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    since: DateTime<Utc>,
) -> Result<(i64, Option<DateTime<Utc>>)> {
    let (scores,): (Vec<(String, f64)>,) = redis::pipe()
        .atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(key)
        .arg("-inf")
        .arg(since.timestamp_millis())
        .ignore()
        .cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .map_err(redis_err)?;
    let oldest = scores
        .first()
        .and_then(|(_, ms)| Utc.timestamp_millis_opt(*ms as i64).single());
    Ok((scores.len() as i64, oldest))
}

async fn redis_failed(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Result<()> {
    let at = now().timestamp_millis();
    let member = format!("{at}:{}", token::generate());
    redis::pipe()
        .atomic()
        .cmd("ZADD")
        .arg(key)
        .arg(at)
        .arg(member)
        .ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(window().num_milliseconds())
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(redis_err)
}

async fn redis_clear(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Result<()> {
    redis::cmd("DEL")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .map(|_| ())
        .map_err(redis_err)
}

impl<'a> Throttle<'a> {
    pub async fn new(config: &Config, db: &'a Db, email: &str) -> Throttle<'a> {
        let redis = match &config.redis_url {
            Some(url) => connect_redis(url).await,
            None => None,
        };
        Throttle {
            db,
            redis,
            email: email.to_string(),
        }
    }

    /// True when the failures are counted in Redis.
    pub fn uses_redis(&self) -> bool {
        self.redis.is_some()
    }

    fn redis_down(&mut self, e: &Error) {
        eprintln!("mailctl: warning: {e}; counting failed logins in the database");
        self.redis = None;
    }

    /// Refuses (exit 3) when the account has too many recent failures.
    pub async fn check(&mut self) -> Result<()> {
        let since = now() - window();
        if let Some(conn) = self.redis.as_mut() {
            match redis_window(conn, &redis_key(&self.email), since).await {
                Ok((count, oldest)) if count >= MAX_FAILURES => return Err(refused(oldest)),
                Ok(_) => return Ok(()),
                Err(e) => self.redis_down(&e),
            }
        }
        if tokens::failures_since(self.db, &self.email, since).await? >= MAX_FAILURES {
            let oldest = tokens::oldest_failure_since(self.db, &self.email, since).await?;
            return Err(refused(oldest));
        }
        Ok(())
    }

    /// Counts one failed login.
    pub async fn failed(&mut self) -> Result<()> {
        if let Some(conn) = self.redis.as_mut() {
            match redis_failed(conn, &redis_key(&self.email)).await {
                Ok(()) => return Ok(()),
                Err(e) => self.redis_down(&e),
            }
        }
        tokens::record_failure(self.db, &self.email, now() - window()).await
    }

    /// Forgets the failures after a successful login.
    pub async fn succeeded(&mut self) -> Result<()> {
        if let Some(conn) = self.redis.as_mut() {
            match redis_clear(conn, &redis_key(&self.email)).await {
                Ok(()) => return Ok(()),
                Err(e) => self.redis_down(&e),
            }
        }
        tokens::clear_failures(self.db, &self.email).await
    }
}
