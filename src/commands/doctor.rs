//! doctor: checks the database, migrations, SMTP, Redis and the base URL, and says plainly
//! what is wrong. Exit 1 when a check fails; warnings alone exit 0.

use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::Ctx;
use crate::config::redact_url;
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

    // A missing file elsewhere than the default location is reported, not created (as every
    // command but `migrate` and `csu` does).
    let exists = match config.database_is_default() {
        true => Ok(()),
        false => crate::db::must_exist(&config.database_url),
    };
    let opened = match exists {
        Ok(()) => Db::connect(&config.database_url, 1).await,
        Err(e) => Err(e),
    };
    match opened {
        Ok(db) => {
            checks.push(ok("database", redact_url(&config.database_url)));
            checks.push(match db.pending_migrations().await {
                Ok(0) => ok("migrations", "up to date"),
                Ok(n) => warn("migrations", format!("{n} pending: run `mailctl migrate`")),
                Err(e) => fail("migrations", e.to_string()),
            });
            db.close().await;
        }
        Err(e) => checks.push(fail("database", e.to_string())),
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

    checks.push(check_ca_file(config));
    checks.push(check_from(config));

    checks.push(match &config.redis_url {
        None => ok("redis", "not set: no cache, per-process rate limit"),
        Some(url) => check_redis(url).await,
    });

    checks.push(check_base_url(&config.base_url).await);

    // Each row shows its URL through `redact_url`; this catches a secret that a driver or a
    // server echoed in its own words.
    for c in &mut checks {
        c.detail = config.hide_secrets(&c.detail);
    }
    print_list(ctx.format(), &checks)?;
    let failed = checks.iter().filter(|c| c.status == "FAIL").count();
    if failed > 0 {
        return Err(Error::runtime(format!("{failed} check(s) failed")));
    }
    Ok(())
}

/// `MAILCTL_SMTP_CA_FILE`, read and parsed by the very function sending uses.
fn check_ca_file(config: &crate::config::Config) -> Check {
    let Some(path) = &config.smtp_ca_file else {
        return ok("smtp ca file", "not set: the usual public roots");
    };
    match crate::smtp::target::tls_config(Some(path)) {
        Err(e) => fail("smtp ca file", e.to_string()),
        Ok(_) if config.smtp_url.is_none() => warn(
            "smtp ca file",
            format!(
                "{}: unused while MAILCTL_SMTP_URL is not set",
                path.display()
            ),
        ),
        Ok(_) => ok("smtp ca file", path.display().to_string()),
    }
}

/// `MAILCTL_FROM`, parsed as every letter's From is.
fn check_from(config: &crate::config::Config) -> Check {
    match crate::mail::compose::mailbox("MAILCTL_FROM", &config.from) {
        Ok(from) => ok("from", from.to_string()),
        Err(e) => fail("from", e.to_string()),
    }
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
        Err(e) => return fail("redis", format!("{shown}: {e}")),
    };
    let ping = redis::cmd("PING");
    match timeout(WAIT, ping.query_async::<String>(&mut con)).await {
        Ok(Ok(pong)) if pong == "PONG" => ok("redis", format!("{shown}: PING answered")),
        Ok(Ok(other)) => fail("redis", format!("{shown}: PING answered {other:?}")),
        Ok(Err(e)) => fail("redis", format!("{shown}: {e}")),
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
    // Without the brackets an IPv6 address keeps in a URL.
    let addr = match host {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    match timeout(WAIT, TcpStream::connect((addr.as_str(), port))).await {
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
