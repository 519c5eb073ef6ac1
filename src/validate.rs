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

/// Longest tag or field key, in characters.
pub const MAX_LABEL: usize = 64;
/// Longest field value, in characters.
pub const MAX_FIELD_VALUE: usize = 2000;
/// Columns of the import that are not custom fields (nor may a field be called so).
pub const RESERVED_KEYS: [&str; 5] = ["email", "full_name", "name", "comment", "tags"];

/// A tag or field key, trimmed and lower-cased (they are case-insensitive): not empty, at most
/// 64 characters, no control characters, none of `; { } | = "` (they separate tags in a
/// column, delimit placeholders, split `--field K=V`, quote JSON paths). Returns the reason.
pub fn label(what: &str, raw: &str) -> std::result::Result<String, String> {
    let s = raw.trim();
    let shown: String = s.chars().take(MAX_LABEL).collect();
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.chars().count() > MAX_LABEL {
        return Err(format!(
            "{what} '{shown}…' is longer than {MAX_LABEL} characters"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} {shown:?} contains control characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, ';' | '{' | '}' | '|' | '=' | '"'))
    {
        return Err(format!("{what} '{shown}' contains '{c}'"));
    }
    Ok(s.to_lowercase())
}

/// A tag (`--tag`, `--untag`, the import's `tags` column).
pub fn tag(field: &str, raw: &str) -> Result<String> {
    label("tag", raw).map_err(|r| Error::invalid(field, r))
}

/// A custom field's key: a [`label`] that is not one of the import's own columns.
pub fn field_key(field: &str, raw: &str) -> Result<String> {
    let key = label("field key", raw).map_err(|r| Error::invalid(field, r))?;
    if RESERVED_KEYS.contains(&key.as_str()) {
        return Err(Error::invalid(
            field,
            format!("'{key}' is a column of its own, not a custom field"),
        ));
    }
    Ok(key)
}

/// A custom field's value (the empty value removes the field).
pub fn field_value(key: &str, raw: &str) -> Result<String> {
    text(&format!("field {key}"), raw, MAX_FIELD_VALUE)
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
