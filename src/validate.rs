//! Input rules shared by commands and the CSV import. Errors name the field.

use chrono::{DateTime, Utc};
use email_address::EmailAddress;

use crate::error::{Error, Result};

pub const MAX_EMAIL: usize = 254;
pub const MAX_NAME: usize = 200;
pub const MAX_COMMENT: usize = 2000;
pub const MAX_SUBJECT: usize = 998;

/// A trimmed, syntactically valid address (internationalised local parts and domains allowed).
pub fn email(field: &str, raw: &str) -> Result<String> {
    let e = raw.trim();
    if e.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if e.chars().count() > MAX_EMAIL {
        return Err(Error::invalid(
            field,
            format!("is longer than {MAX_EMAIL} characters"),
        ));
    }
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) || !EmailAddress::is_valid(e) {
        return Err(Error::invalid(
            field,
            format!("'{e}' is not a valid email address"),
        ));
    }
    let domain = e.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !domain.contains('.') && !domain.eq_ignore_ascii_case("localhost") {
        return Err(Error::invalid(
            field,
            format!("'{e}' has no domain (expected name@example.com)"),
        ));
    }
    Ok(e.to_string())
}

/// Free text of at most `max` characters, without control characters other than newlines/tabs.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String> {
    if raw.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(raw.to_string())
}

/// One line of text (a name): no line breaks.
pub fn line(field: &str, raw: &str, max: usize) -> Result<String> {
    if raw.contains(['\r', '\n']) {
        return Err(Error::invalid(field, "must be a single line (no CR or LF)"));
    }
    text(field, raw.trim(), max)
}

pub fn subject(raw: &str) -> Result<String> {
    let s = line("subject", raw, MAX_SUBJECT)?;
    if s.is_empty() {
        return Err(Error::invalid("subject", "is required"));
    }
    Ok(s)
}

pub fn window(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<()> {
    if end <= start {
        return Err(Error::invalid("end", "must be after start"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            email("email", " ann@example.com ").unwrap(),
            "ann@example.com"
        );
        assert!(email("email", "иван@пример.рф").is_ok());
        assert!(email("email", "user@xn--e1afmkfd.xn--p1ai").is_ok());
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "a b@example.com",
            "Ann <ann@example.com>",
            "ann@example",
        ] {
            assert!(email("email", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn subjects_are_single_lines() {
        assert!(subject("Hello").is_ok());
        assert!(subject("Hello\r\nBcc: x@example.com").is_err());
        assert!(subject("  ").is_err());
    }

    #[test]
    fn windows() {
        let t = Utc::now();
        assert!(window(t, t).is_err());
        assert!(window(t, t + chrono::Duration::seconds(1)).is_ok());
    }
}
