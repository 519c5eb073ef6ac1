//! Login throttling: at most `MAX_TRIES` password checks per account (by lower-cased email)
//! per `WINDOW_MINUTES`. A try is *reserved* before the password is checked, in one atomic
//! step (one Redis Lua script, or one SQL upsert), so parallel logins cannot all slip past a
//! separate "how many so far?" check. A successful login gives the tries back; `mailctl users
//! unlock` (administrators) clears a lock at once.
//!
//! With `MAILCTL_REDIS_URL` the tries live in Redis (shared by every host; a sliding window);
//! otherwise, or when Redis does not answer, in the database (a window that starts at the
//! first try). The key is the email as typed, whether or not such an account exists, so
//! throttling tells nothing about which accounts exist; a refused try checks no password, so
//! its reply cannot tell a right password from a wrong one.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::auth::token;
use crate::config::Config;
use crate::db::accounts::email_key;
use crate::db::{Db, now, tokens};
use crate::error::{Error, Result};

pub const MAX_TRIES: i64 = 5;
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

/// The reply to a refused try; `since` is when the oldest counted try was made.
fn refused(since: DateTime<Utc>) -> Error {
    let wait = (since + window() - Utc::now()).num_seconds().max(1);
    let minutes = (wait + 59) / 60;
    Error::forbidden(format!(
        "too many failed logins for this account: try again in {minutes} minute{}",
        if minutes == 1 { "" } else { "s" }
    ))
}

fn redis_err(e: redis::RedisError) -> Error {
    Error::runtime(format!("redis: {e}"))
}

/// Drops tries older than the window, then adds this one unless the window is full. Returns
/// {1, 0} when reserved, {0, oldest try in ms} when refused. One script: atomic in Redis.
const RESERVE_LUA: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2])}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 0}
";

async fn redis_reserve(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Result<std::result::Result<(), DateTime<Utc>>> {
    let at = now().timestamp_millis();
    let (reserved, oldest): (i64, i64) = redis::Script::new(RESERVE_LUA)
        .key(key)
        .arg(at)
        .arg(window().num_milliseconds())
        .arg(MAX_TRIES)
        .arg(format!("{at}:{}", token::generate()))
        .invoke_async(conn)
        .await
        .map_err(redis_err)?;
    if reserved == 1 {
        return Ok(Ok(()));
    }
    let since = Utc
        .timestamp_millis_opt(oldest)
        .single()
        .unwrap_or_else(Utc::now);
    Ok(Err(since))
}

async fn redis_clear(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Result<bool> {
    redis::cmd("DEL")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .map(|n| n > 0)
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

    /// True when the tries are counted in Redis.
    pub fn uses_redis(&self) -> bool {
        self.redis.is_some()
    }

    fn redis_down(&mut self, e: &Error) {
        crate::output::log::warn(format!("{e}; counting failed logins in the database"));
        self.redis = None;
    }

    /// Takes one try before the password is checked, or refuses (exit 3) when the account has
    /// used its tries for this window. The try stays counted unless `succeeded` follows.
    pub async fn reserve(&mut self) -> Result<()> {
        if let Some(conn) = self.redis.as_mut() {
            match redis_reserve(conn, &redis_key(&self.email)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(since)) => return Err(refused(since)),
                Err(e) => self.redis_down(&e),
            }
        }
        let (tries, since) = tokens::reserve_try(self.db, &self.email, now() - window()).await?;
        if tries > MAX_TRIES {
            return Err(refused(since));
        }
        Ok(())
    }

    /// Gives the tries back after a successful login.
    pub async fn succeeded(&mut self) -> Result<()> {
        self.clear().await.map(|_| ())
    }

    /// Forgets every try of the account (`users unlock`); true when there were any.
    pub async fn clear(&mut self) -> Result<bool> {
        let mut any = false;
        if let Some(conn) = self.redis.as_mut() {
            match redis_clear(conn, &redis_key(&self.email)).await {
                Ok(cleared) => any = cleared,
                Err(e) => self.redis_down(&e),
            }
        }
        // The database too: tries counted there while Redis was down still hold.
        Ok(tokens::clear_tries(self.db, &self.email).await? || any)
    }
}
