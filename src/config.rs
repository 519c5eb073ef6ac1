//! Flags + environment -> Config, with the defaults of CLI.md. Every `MAILCTL_*` variable is a
//! global flag of the clap tree (`cli::Settings`, so `--help` and the man page show it) and is
//! parsed here, once; a bad value is an error naming the variable (exit 5).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::cli::Settings;
use crate::error::{Error, Result};
use crate::output::Format;

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub smtp_url: Option<String>,
    /// PEM file of extra CA certificates to trust for SMTP over TLS (a private relay's CA).
    pub smtp_ca_file: Option<PathBuf>,
    /// `MAILCTL_SMTP_TIMEOUT`: the wait for the SMTP server at each step of a letter.
    pub smtp_timeout: Duration,
    /// `MAILCTL_SEND_LEASE`: how long a claim holds before another worker may take it over.
    pub send_lease: Duration,
    /// `MAILCTL_RETRY_DELAY`: the first retry delay after a temporary failure (doubles per try).
    pub retry_delay: Duration,
    pub from: String,
    /// `MAILCTL_BOUNCE_ADDRESS`: VERP return path for mailing letters (bounces+TOKEN@domain).
    /// Parsed and checked only; nothing uses it yet.
    pub bounce_address: Option<String>,
    pub base_url: String,
    pub redis_url: Option<String>,
    pub session_file: PathBuf,
    pub outbox_dir: PathBuf,
    pub format: Format,
    /// CSV output starts with a UTF-8 byte order mark (`--bom`).
    pub bom: bool,
}

pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(60);
/// The lease is at least this, and at least ten SMTP timeouts.
pub const MIN_DEFAULT_SEND_LEASE: Duration = Duration::from_secs(600);

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn home() -> PathBuf {
    env_nonempty("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$XDG_DATA_HOME/mailctl`, falling back to `~/.local/share/mailctl`.
pub fn data_dir() -> PathBuf {
    env_nonempty("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"))
        .join("mailctl")
}

/// `$XDG_CONFIG_HOME/mailctl`, falling back to `~/.config/mailctl`.
pub fn config_dir() -> PathBuf {
    env_nonempty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"))
        .join("mailctl")
}

/// An empty (or blank) variable counts as unset, as it always has.
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// How an error names a setting: the variable and its flag.
fn field(var: &str) -> String {
    let flag = var
        .trim_start_matches("MAILCTL_")
        .to_ascii_lowercase()
        .replace('_', "-");
    format!("{var} (--{flag})")
}

fn bad(var: &str, reason: impl fmt::Display) -> Error {
    Error::invalid(field(var), reason)
}

/// Seconds, decimals allowed (`0.5`); `zero_ok` for the settings where 0 means "at once".
fn seconds(var: &str, raw: &Option<String>, zero_ok: bool) -> Result<Option<Duration>> {
    let Some(text) = given(raw) else {
        return Ok(None);
    };
    let wanted = if zero_ok {
        "a number of seconds (0 or more)"
    } else {
        "a number of seconds greater than 0"
    };
    let d = text
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| bad(var, format!("'{text}' is not {wanted}")))?;
    if d.is_zero() && !zero_ok {
        return Err(bad(var, format!("'{text}' is not {wanted}")));
    }
    Ok(Some(d))
}

impl Config {
    pub fn load(s: &Settings) -> Result<Config> {
        let data = data_dir();
        let smtp_timeout = seconds("MAILCTL_SMTP_TIMEOUT", &s.smtp_timeout, false)?
            .unwrap_or(DEFAULT_SMTP_TIMEOUT);
        let send_lease = seconds("MAILCTL_SEND_LEASE", &s.send_lease, false)?
            .unwrap_or_else(|| (smtp_timeout * 10).max(MIN_DEFAULT_SEND_LEASE));
        let retry_delay =
            seconds("MAILCTL_RETRY_DELAY", &s.retry_delay, true)?.unwrap_or(DEFAULT_RETRY_DELAY);
        let bounce_address = given(&s.bounce_address)
            .map(|a| crate::validate::email(&field("MAILCTL_BOUNCE_ADDRESS"), &a))
            .transpose()?;
        let path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        Ok(Config {
            database_url: given(&s.database_url).unwrap_or_else(default_database_url),
            smtp_url: given(&s.smtp_url),
            smtp_ca_file: path(&s.smtp_ca_file),
            smtp_timeout,
            send_lease,
            retry_delay,
            from: given(&s.from).unwrap_or_else(|| "mailctl@localhost".into()),
            bounce_address,
            base_url: given(&s.base_url)
                .unwrap_or_else(|| "http://127.0.0.1:8025".into())
                .trim_end_matches('/')
                .to_string(),
            redis_url: given(&s.redis_url),
            session_file: path(&s.session_file).unwrap_or_else(|| config_dir().join("session")),
            outbox_dir: data.join("outbox"),
            format: s.format.unwrap_or(Format::Table),
            bom: s.bom,
        })
    }
}

/// The database URL used when none is given.
pub fn default_database_url() -> String {
    format!("sqlite://{}", data_dir().join("mailctl.db").display())
}

impl Config {
    /// Whether the database is the default SQLite file (which is created on first use).
    pub fn database_is_default(&self) -> bool {
        match (
            crate::db::sqlite_path(&self.database_url),
            crate::db::sqlite_path(&default_database_url()),
        ) {
            (Some(given), Some(default)) => given == default,
            _ => false,
        }
    }

    /// `text` without the secrets of any configured URL (database, SMTP, Redis, base URL).
    pub fn hide_secrets(&self, text: &str) -> String {
        [
            Some(&self.database_url),
            self.smtp_url.as_ref(),
            self.redis_url.as_ref(),
            Some(&self.base_url),
        ]
        .into_iter()
        .flatten()
        .fold(text.to_string(), |t, url| hide_secrets(url, &t))
    }
}

/// Query parameter names that hold a secret: any name containing one of these, ignoring case.
const SECRET_PARAMS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
];

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

/// A query string (`a=1&password=x`) with the values of secret parameters replaced by `***`;
/// names are compared percent-decoded, everything else is kept as written.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let name = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            match pair.split_once('=') {
                Some((raw_name, _)) if is_secret_param(&name) => format!("{raw_name}=***"),
                _ => pair.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// For text that is not a URL the `url` crate reads as the driver would: everything between
/// `://` and the last `@` goes, and secret parameters after the first `?`.
fn redact_text(raw: &str) -> String {
    let with_query = match raw.split_once('?') {
        Some((head, query)) => format!("{head}?{}", redact_query(query)),
        None => raw.to_string(),
    };
    match with_query.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://***{}", &rest[at..]),
            None => with_query,
        },
        None => with_query,
    }
}

/// The one redaction for every URL shown in a message, a `doctor` row or a log line: the
/// password of the userinfo (whatever it holds) and the values of secret query parameters
/// (`password=`, `token=`, ...) become `***`. A URL that does not parse, or that has an `@`
/// after its host (an unescaped `/`, `?` or `#` in a password), loses everything between
/// `://` and its last `@`. A URL with nothing to hide is returned as written.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = Url::parse(raw) else {
        return redact_text(raw);
    };
    if let Some((_, rest)) = raw.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[authority_end..].contains('@') {
            return redact_text(raw);
        }
    }
    let mut changed = false;
    if url.password().is_some() {
        if url.set_password(Some("***")).is_err() {
            return redact_text(raw);
        }
        changed = true;
    }
    if let Some(query) = url.query() {
        let redacted = redact_query(query);
        if redacted != query {
            url.set_query(Some(&redacted));
            changed = true;
        }
    }
    if changed {
        url.to_string()
    } else {
        raw.to_string()
    }
}

/// The secrets of a URL as they may appear in a driver's message: the password and the
/// values of secret parameters, as written and percent-decoded.
fn secrets_of(raw: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut push = |s: &str| {
        let decoded = percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned();
        found.push(s.to_string());
        found.push(decoded);
    };
    match Url::parse(raw) {
        Ok(url) => {
            if let Some(p) = url.password() {
                push(p);
            }
        }
        Err(_) => {
            let userinfo = raw
                .split_once("://")
                .and_then(|(_, rest)| rest.rsplit_once('@'))
                .map(|(u, _)| u);
            if let Some((_, p)) = userinfo.and_then(|u| u.split_once(':')) {
                push(p);
            }
        }
    }
    if let Some((_, query)) = raw.split_once('?') {
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_secret_param(&percent_encoding::percent_decode_str(name).decode_utf8_lossy())
            {
                push(value);
            }
        }
    }
    found
}

/// `text` (a driver's error message, say) without the secrets of `url` in it: a second line of
/// defence behind [`redact_url`] for messages we do not write ourselves. Secrets shorter than
/// four characters are left: replacing them would garble unrelated words.
pub fn hide_secrets(url: &str, text: &str) -> String {
    let mut secrets = secrets_of(url);
    secrets.retain(|s| s.chars().count() >= 4);
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(&s, "***");
    }
    out
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("smtp_ca_file", &self.smtp_ca_file)
            .field("smtp_timeout", &self.smtp_timeout)
            .field("send_lease", &self.send_lease)
            .field("retry_delay", &self.retry_delay)
            .field("from", &self.from)
            .field("bounce_address", &self.bounce_address)
            .field("base_url", &redact_url(&self.base_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("session_file", &self.session_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_userinfo_password() {
        assert_eq!(
            redact_url("postgres://bob:hunter2@db:5432/mail"),
            "postgres://bob:***@db:5432/mail"
        );
        // Escaped `/`, `@`, `:` in the password.
        assert_eq!(
            redact_url("postgres://u:p%2Fa%40s%3As@127.0.0.1:1/x"),
            "postgres://u:***@127.0.0.1:1/x"
        );
        // An unescaped `@`: the url crate takes the last one of the authority.
        assert_eq!(
            redact_url("smtp://u:p@ss@relay:25"),
            "smtp://u:***@relay:25"
        );
        assert_eq!(redact_url("smtp://u:a b@relay"), "smtp://u:***@relay");
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("smtps://user:hunter2@mx.example.com?tls=required"),
            "smtps://user:***@mx.example.com?tls=required"
        );
    }

    #[test]
    fn unescaped_separators_in_the_password_hide_up_to_the_last_at() {
        for (raw, shown) in [
            ("postgres://u:p/a@ss@h:5432/db", "postgres://***@h:5432/db"),
            ("postgres://u:12/ss@h/db", "postgres://***@h/db"),
            ("postgres://u:p?ss@h/db", "postgres://***@h/db"),
            ("postgres://u:p#ss@h/db", "postgres://***@h/db"),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn redacts_secret_query_parameters_whatever_their_case() {
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=hunter2"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("sqlite:///tmp/x.db?PassWord=hunter2&mode=rwc"),
            "sqlite:///tmp/x.db?PassWord=***&mode=rwc"
        );
        for name in [
            "pass",
            "pwd",
            "secret",
            "token",
            "api_key",
            "auth",
            "pass%77ord",
        ] {
            let shown = redact_url(&format!("redis://h/0?{name}=hunter2"));
            assert!(!shown.contains("hunter2"), "{name}: {shown}");
        }
        // Both at once, and a query after an unparsable authority.
        let shown = redact_url("postgres://u:p/x@h/db?password=hunter2&user=a@b");
        assert!(
            !shown.contains("hunter2") && !shown.contains("p/x"),
            "{shown}"
        );
        let shown = redact_url("postgres://u:p%2Fa%40ss@127.0.0.1:1/x?password=hunter2");
        assert_eq!(shown, "postgres://u:***@127.0.0.1:1/x?password=***");
    }

    #[test]
    fn keeps_urls_with_nothing_to_hide_as_written() {
        for raw in [
            "smtp://relay:25",
            "sqlite:///tmp/x.db",
            "http://127.0.0.1:8025",
            "postgres://mailctl@localhost/mailctl?sslmode=disable",
            "sqlite:relative.db",
            "not a url",
        ] {
            assert_eq!(redact_url(raw), raw);
        }
    }

    #[test]
    fn hides_the_secrets_of_a_url_in_any_text() {
        let url = "postgres://u:p%2Fa%40ss@h/db?password=hunter2";
        assert_eq!(
            hide_secrets(url, "auth for p/a@ss failed; p%2Fa%40ss; hunter2"),
            "auth for *** failed; ***; ***"
        );
        assert_eq!(
            hide_secrets("postgres://u:p/a@ss@h/db", "pw p/a@ss"),
            "pw ***"
        );
        assert_eq!(hide_secrets("sqlite:///x.db", "no secret"), "no secret");
    }

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn durations_have_defaults_and_the_lease_follows_the_timeout() {
        let c = Config::load(&settings()).unwrap();
        assert_eq!(c.smtp_timeout, Duration::from_secs(30));
        assert_eq!(c.send_lease, Duration::from_secs(600));
        assert_eq!(c.retry_delay, Duration::from_secs(60));
        let mut s = settings();
        s.smtp_timeout = Some("120".into());
        s.retry_delay = Some("0".into());
        let c = Config::load(&s).unwrap();
        assert_eq!(c.send_lease, Duration::from_secs(1200));
        assert_eq!(c.retry_delay, Duration::ZERO);
        s.send_lease = Some("2.5".into());
        assert_eq!(
            Config::load(&s).unwrap().send_lease,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (set, var) in [
            (
                (|s: &mut Settings| s.smtp_timeout = Some("abc".into())) as fn(&mut Settings),
                "MAILCTL_SMTP_TIMEOUT",
            ),
            (
                |s| s.smtp_timeout = Some("0".into()),
                "MAILCTL_SMTP_TIMEOUT",
            ),
            (|s| s.send_lease = Some("-5".into()), "MAILCTL_SEND_LEASE"),
            (|s| s.send_lease = Some("inf".into()), "MAILCTL_SEND_LEASE"),
            (|s| s.retry_delay = Some("-1".into()), "MAILCTL_RETRY_DELAY"),
            (
                |s| s.bounce_address = Some("not an address".into()),
                "MAILCTL_BOUNCE_ADDRESS",
            ),
        ] {
            let mut s = settings();
            set(&mut s);
            let e = Config::load(&s).unwrap_err();
            assert_eq!(e.exit_code(), 5);
            assert!(e.to_string().starts_with(var), "{e}");
        }
    }
}
