//! Optional Redis cache. Absent (`MAILCTL_REDIS_URL` unset) or down: every call is a miss
//! and the caller answers from the database; a dead Redis costs at most the short timeouts
//! below, once per process (after the first failure the cache stays off), with one warning
//! on stderr.
//!
//! There is no "invalidate": callers put everything the answer depends on into the key,
//! including version numbers that the database's own triggers bump on every relevant write
//! (see `db::stats::version`), so an entry can never be stale. Old entries expire.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use sha2::{Digest, Sha256};

use crate::config::redact_url;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);

pub struct Cache {
    con: Option<MultiplexedConnection>,
    url: String,
}

/// A key from its parts: `mailctl:<namespace>:<sha256 of the parts>`.
pub fn key(namespace: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("mailctl:{namespace}:{}", hex::encode(h.finalize()))
}

fn warn(url: &str, e: impl std::fmt::Display) {
    warn_unavailable(url, e, "answering from the database");
}

/// The one warning format for a Redis that cannot be used, with what mailctl does instead.
pub fn warn_unavailable(url: &str, e: impl std::fmt::Display, instead: &str) {
    crate::output::log::warn(format!(
        "Redis at {} is unavailable ({e}); {instead}",
        redact_url(url)
    ));
}

/// The one way to Redis: a multiplexed connection with short connect and response timeouts
/// (`CONNECT_TIMEOUT`, `RESPONSE_TIMEOUT`). On failure the error, for the caller to warn
/// with [`warn_unavailable`] (saying what it does instead) or to report (`doctor`).
pub async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let attempt = async {
        let client = redis::Client::open(url)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await {
        Ok(Ok(con)) => Ok(con),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

impl Cache {
    /// A cache that is always a miss.
    pub fn off() -> Cache {
        Cache {
            con: None,
            url: String::new(),
        }
    }

    /// Connects with short timeouts; on failure, warns and returns a cache that is off.
    pub async fn connect(url: Option<&str>) -> Cache {
        match url {
            None => Cache::off(),
            Some(url) => Cache::start(url).ready().await,
        }
    }

    /// Starts connecting in the background (so it overlaps the database work); `ready()`
    /// gives the cache, and the warning if it failed.
    pub fn start(url: &str) -> Pending {
        let owned = url.to_string();
        let task = tokio::spawn(async move { connect(&owned).await });
        Pending {
            task,
            url: url.to_string(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.con.is_some()
    }

    /// The cached value, or None on a miss or an error (which turns the cache off, with a
    /// warning naming the error).
    pub async fn get(&mut self, key: &str) -> Option<String> {
        let con = self.con.as_mut()?;
        match tokio::time::timeout(RESPONSE_TIMEOUT * 2, con.get::<_, Option<String>>(key)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                warn(&self.url, e);
                self.con = None;
                None
            }
            Err(_) => {
                warn(&self.url, "timed out");
                self.con = None;
                None
            }
        }
    }

    /// Stores a value for `ttl`; errors only warn (the answer is already computed).
    pub async fn set(&mut self, key: &str, value: &str, ttl: Duration) {
        let Some(con) = self.con.as_mut() else {
            return;
        };
        let ttl = ttl.as_secs().max(1);
        match tokio::time::timeout(
            RESPONSE_TIMEOUT * 2,
            con.set_ex::<_, _, ()>(key, value, ttl),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn(&self.url, e);
                self.con = None;
            }
            Err(_) => {
                warn(&self.url, "timed out");
                self.con = None;
            }
        }
    }
}

/// A connection being made; see [`Cache::start`].
pub struct Pending {
    task: tokio::task::JoinHandle<Result<MultiplexedConnection, String>>,
    url: String,
}

impl Pending {
    pub async fn ready(self) -> Cache {
        let result = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(con) => Cache {
                con: Some(con),
                url: self.url,
            },
            Err(e) => {
                warn(&self.url, e);
                Cache::off()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key("s", &["ab", "c"]), key("s", &["a", "bc"]));
        assert_eq!(key("s", &["a", "b"]), key("s", &["a", "b"]));
        assert!(key("stats", &["x"]).starts_with("mailctl:stats:"));
    }
}
