//! Flags + environment -> Config, with the defaults of CLI.md.

use std::fmt;
use std::path::PathBuf;

use crate::output::Format;

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub smtp_url: Option<String>,
    /// PEM file of extra CA certificates to trust for SMTP over TLS (a private relay's CA).
    pub smtp_ca_file: Option<PathBuf>,
    pub from: String,
    pub base_url: String,
    pub redis_url: Option<String>,
    pub session_file: PathBuf,
    pub outbox_dir: PathBuf,
    pub format: Format,
}

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

impl Config {
    pub fn load(database_url: Option<String>, format: Option<Format>) -> Config {
        let data = data_dir();
        Config {
            database_url: database_url
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| format!("sqlite://{}", data.join("mailctl.db").display())),
            smtp_url: env_nonempty("MAILCTL_SMTP_URL"),
            smtp_ca_file: env_nonempty("MAILCTL_SMTP_CA_FILE").map(PathBuf::from),
            from: env_nonempty("MAILCTL_FROM").unwrap_or_else(|| "mailctl@localhost".into()),
            base_url: env_nonempty("MAILCTL_BASE_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8025".into())
                .trim_end_matches('/')
                .to_string(),
            redis_url: env_nonempty("MAILCTL_REDIS_URL"),
            session_file: env_nonempty("MAILCTL_SESSION_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| config_dir().join("session")),
            outbox_dir: data.join("outbox"),
            format: format.unwrap_or(Format::Table),
        }
    }
}

/// Replaces the password of a URL with `***` so it can be shown in logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("smtp_ca_file", &self.smtp_ca_file)
            .field("from", &self.from)
            .field("base_url", &self.base_url)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("session_file", &self.session_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://bob:hunter2@db:5432/mail"),
            "postgres://bob:***@db:5432/mail"
        );
        assert_eq!(redact_url("smtp://relay:25"), "smtp://relay:25");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
