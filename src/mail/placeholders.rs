//! `{{key}}` and `{{key|default text}}` in a message's subject, text and HTML.
//!
//! A template is parsed once into pieces (the sender fills it for every letter). Keys are
//! case-insensitive: `full_name`, `email`, or any custom field of the client. An empty or
//! missing value gives the default, or the empty string. `messages add|edit` refuse a malformed
//! placeholder ([`check`]); filling is lenient, so a stray `{{` in an older message stays text.

use crate::error::{Error, Result};

/// The keys every client has.
pub const BUILTIN: [&str; 2] = ["full_name", "email"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value {
        key: String,
        default: Option<String>,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Why the placeholder starting at a `{{` is malformed.
fn placeholder_at(rest: &str) -> std::result::Result<(usize, String, Option<String>), String> {
    let inner_start = 2;
    let Some(close) = rest[inner_start..].find("}}") else {
        return Err("has no closing }}".into());
    };
    let inner = &rest[inner_start..inner_start + close];
    if inner.contains("{{") {
        return Err("has no closing }}".into());
    }
    let (key, default) = match inner.split_once('|') {
        Some((k, d)) => (k, Some(d.to_string())),
        None => (inner, None),
    };
    let key = crate::validate::label("key", key)?;
    Ok((inner_start + close + 2, key, default))
}

/// A short quote of a placeholder for messages: at most 40 characters.
fn quote(s: &str) -> String {
    let end = s.find("}}").map(|i| i + 2).unwrap_or(s.len());
    let q: String = s[..end].chars().take(40).collect();
    if q.len() < end { format!("{q}…") } else { q }
}

/// Refuses a text with a malformed placeholder, naming it and its line (exit 5).
pub fn check(field: &str, text: &str) -> Result<()> {
    let mut offset = 0;
    while let Some(at) = text[offset..].find("{{") {
        let start = offset + at;
        let rest = &text[start..];
        match placeholder_at(rest) {
            Ok((len, _, _)) => offset = start + len,
            Err(why) => {
                let line = text[..start].matches('\n').count() + 1;
                return Err(Error::invalid(
                    field,
                    format!(
                        "malformed placeholder '{}' on line {line}: {why} (use {{{{key}}}} or {{{{key|default}}}})",
                        quote(rest)
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Template {
    /// Parses leniently: a malformed placeholder is kept as text.
    pub fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("{{") {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            match placeholder_at(tail) {
                Ok((len, key, default)) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Value { key, default });
                    rest = &tail[len..];
                }
                Err(_) => {
                    literal.push_str("{{");
                    rest = &tail[2..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Template { pieces }
    }

    /// Custom field keys used without a default (a recipient lacking one gets "").
    pub fn required_fields(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Value { key, default: None } if !BUILTIN.contains(&key.as_str()) => {
                Some(key.as_str())
            }
            _ => None,
        })
    }

    /// True when a custom field is used (the recipient's fields are needed).
    pub fn uses_fields(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Value { key, .. } if !BUILTIN.contains(&key.as_str())))
    }

    /// The text for one recipient; values are HTML-escaped when `html`.
    pub fn fill(&self, value: impl Fn(&str) -> Option<String>, html: bool) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Value { key, default } => match value(key).filter(|v| !v.is_empty()) {
                    Some(v) if html => out.push_str(&crate::web::pages::escape(&v)),
                    Some(v) => out.push_str(&v),
                    None => out.push_str(default.as_deref().unwrap_or("")),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(t: &str, html: bool) -> String {
        Template::parse(t).fill(
            |k| match k {
                "full_name" => Some("<b>A&B</b>".into()),
                "email" => Some("a@x".into()),
                "city" => Some("Москва".into()),
                "empty" => Some(String::new()),
                _ => None,
            },
            html,
        )
    }

    #[test]
    fn values_defaults_and_escaping() {
        assert_eq!(
            fill("Hi {{full_name}} <{{EMAIL}}>", false),
            "Hi <b>A&B</b> <a@x>"
        );
        assert_eq!(
            fill("<p>{{ full_name }}</p>", true),
            "<p>&lt;b&gt;A&amp;B&lt;/b&gt;</p>"
        );
        assert_eq!(
            fill("{{city}}, {{zip|00000}}, {{empty|none}}, [{{nope}}]", false),
            "Москва, 00000, none, []"
        );
        // Malformed ones stay text when filling.
        assert_eq!(
            fill("{{{{email}} {{ {{full_name}} {{", false),
            "{{a@x {{ <b>A&B</b> {{"
        );
    }

    #[test]
    fn malformed_placeholders_are_refused_by_name() {
        assert!(check("body", "Hi {{full_name}} {{x|y z}}").is_ok());
        for (bad, quoted) in [
            ("Hi {{full_name", "{{full_name"),
            ("Hi {{}}", "{{}}"),
            ("x\n{{ |d}}", "{{ |d}}"),
            ("{{a{b}}", "{{a{b}}"),
        ] {
            let e = check("body", bad).unwrap_err();
            assert_eq!(e.exit_code(), 5);
            assert!(e.to_string().contains(quoted), "{e}");
        }
        assert!(
            check("body", "a\nb {{x")
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }

    #[test]
    fn required_fields_are_those_without_default() {
        let t = Template::parse("{{full_name}} {{City}} {{zip|0}} {{city}}");
        assert_eq!(t.required_fields().collect::<Vec<_>>(), ["city", "city"]);
        assert!(t.uses_fields());
        assert!(!Template::parse("{{email}}").uses_fields());
    }
}
