//! doctor: checks the database, migrations, SMTP, Redis and the base URL, and says plainly
//! what is wrong. Exit 1 when a check fails; warnings alone exit 0.

use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::Ctx;
use crate::config::{hide_secrets, redact_url};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::output::{Record, print_list};

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: &'static str,
    pub detail: String,
}

impl Record for Check {
    const HEADERS: &'static [&'static str] = &["check", "status", "detail"];
    fn cells(&self) -> Vec<String> {
        vec![self.check.into(), self.status.into(), self.detail.clone()]
    }
}

fn ok(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: "ok",
        detail: detail.into(),
    }
}
fn warn(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: "warning",
        detail: detail.into(),
    }
}
fn fail(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: "FAIL",
        detail: detail.into(),
    }
}

const WAIT: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Ctx) -> Result<()> {
    let config = &ctx.config;
    let mut checks = Vec::new();

    match Db::connect(&config.database_url, 1).await {
        Ok(db) => {
            checks.push(ok("database", redact_url(&config.database_url)));
            checks.push(match db.pending_migrations().await {
                Ok(0) => ok("migrations", "up to date"),
                Ok(n) => warn("migrations", format!("{n} pending: run `mailctl migrate`")),
                Err(e) => fail(
                    "migrations",
                    hide_secrets(&config.database_url, &e.to_string()),
                ),
            });
            db.close().await;
        }
        Err(e) => checks.push(fail(
            "database",
            hide_secrets(&config.database_url, &e.to_string()),
        )),
    }

    checks.push(match &config.smtp_url {
        None => match std::fs::create_dir_all(&config.outbox_dir) {
            Ok(()) => ok(
                "smtp",
                format!(
                    "not set: letters go to the outbox {}",
                    config.outbox_dir.display()
                ),
            ),
            Err(e) => fail(
                "smtp",
                format!(
                    "outbox {} is not writable: {e}",
                    config.outbox_dir.display()
                ),
            ),
        },
        Some(_) => check_smtp(config).await,
    });

    checks.push(match &config.redis_url {
        None => ok("redis", "not set: no cache, per-process rate limit"),
        Some(url) => check_redis(url).await,
    });

    checks.push(check_base_url(&config.base_url).await);

    print_list(ctx.format(), &checks)?;
    let failed = checks.iter().filter(|c| c.status == "FAIL").count();
    if failed > 0 {
        return Err(Error::runtime(format!("{failed} check(s) failed")));
    }
    Ok(())
}

/// host:port of a URL with a default port (IPv6 hosts without their brackets).
fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str().filter(|h| !h.is_empty())?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        url.port().unwrap_or(default_port),
    ))
}

/// Opens a session exactly as sending does (port, TLS mode, CA file, AUTH) through
/// `crate::smtp`, and says what it got.
async fn check_smtp(config: &crate::config::Config) -> Check {
    let target = match crate::smtp::Target::from_config(config) {
        Ok(Some(target)) => target,
        Ok(None) => return ok("smtp", "not set"),
        Err(e) => return fail("smtp", e.to_string()),
    };
    let shown = &target.shown;
    match timeout(WAIT, crate::smtp::Connection::open(&target)).await {
        Err(_) => fail(
            "smtp",
            format!("{shown}: no answer within {}s", WAIT.as_secs()),
        ),
        Ok(Err(failure)) => fail("smtp", format!("{shown}: {}", failure.text)),
        Ok(Ok(conn)) => {
            let described = conn.describe();
            let plain = conn.tls.is_none();
            conn.quit().await;
            if plain {
                warn(
                    "smtp",
                    format!("{shown}: {described}: letters travel unencrypted"),
                )
            } else {
                ok("smtp", format!("{shown}: {described}"))
            }
        }
    }
}

async fn check_redis(url: &str) -> Check {
    let shown = redact_url(url);
    // The same connector (and timeouts) as the cache, the login throttle and --rate.
    let mut con = match crate::cache::connect(url).await {
        Ok(con) => con,
        Err(e) => return fail("redis", hide_secrets(url, &format!("{shown}: {e}"))),
    };
    let ping = redis::cmd("PING");
    match timeout(WAIT, ping.query_async::<String>(&mut con)).await {
        Ok(Ok(pong)) if pong == "PONG" => ok("redis", format!("{shown}: PING answered")),
        Ok(Ok(other)) => fail("redis", format!("{shown}: PING answered {other:?}")),
        Ok(Err(e)) => fail("redis", hide_secrets(url, &format!("{shown}: {e}"))),
        Err(_) => fail(
            "redis",
            format!("{shown}: no answer within {}s", WAIT.as_secs()),
        ),
    }
}

async fn check_base_url(base: &str) -> Check {
    let shown = redact_url(base);
    let Ok(url) = url::Url::parse(base) else {
        return fail("base-url", format!("{shown}: not a URL"));
    };
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => {
            return fail(
                "base-url",
                format!("{shown}: must start with http:// or https://"),
            );
        }
    };
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return fail("base-url", format!("{shown}: not a URL with a host"));
    };
    let local = match &host {
        url::Host::Domain(d) => *d == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    let target = match host {
        url::Host::Domain(d) => (d.to_string(), port),
        url::Host::Ipv4(ip) => (ip.to_string(), port),
        url::Host::Ipv6(ip) => (ip.to_string(), port),
    };
    match timeout(WAIT, TcpStream::connect((target.0.as_str(), target.1))).await {
        Ok(Ok(_)) if !https && !local => warn(
            "base-url",
            format!("{shown}: reachable, but plain http: links in letters are not encrypted"),
        ),
        Ok(Ok(_)) if local => warn(
            "base-url",
            format!("{shown}: reachable, but a loopback address works only on this machine"),
        ),
        Ok(Ok(_)) => ok("base-url", format!("{shown}: reachable")),
        _ => warn(
            "base-url",
            format!("{shown}: nothing answers: is `mailctl serve` running behind it?"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_and_port() {
        assert_eq!(
            host_port("smtp://u:p@mx.example.com:2525", 25),
            Some(("mx.example.com".into(), 2525))
        );
        assert_eq!(
            host_port("smtp://mx.example.com", 25),
            Some(("mx.example.com".into(), 25))
        );
        assert_eq!(
            host_port("https://mail.example.com/x", 443),
            Some(("mail.example.com".into(), 443))
        );
        assert_eq!(
            host_port("smtp://[::1]:2525", 25),
            Some(("::1".into(), 2525))
        );
        assert_eq!(
            host_port("smtps://u:p%2Fx@relay?tls=required", 465),
            Some(("relay".into(), 465))
        );
        assert_eq!(host_port("no url", 1), None);
    }
}
