//! The listener's few HTML pages and the headers every response carries.
//!
//! Every dynamic value is HTML-escaped. Pages load nothing but the stylesheet, so the
//! Content-Security-Policy can forbid scripts, frames and foreign form targets outright.

use sha2::{Digest, Sha256};

/// Headers on every response.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
];

pub const STYLE: &str = "\
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f5f7;color:#1f2328;margin:0}
main{max-width:28rem;margin:10vh auto;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:2rem}
h1{font-size:1.35rem;margin:0 0 1rem}
p{line-height:1.5}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;border:1px solid #8c959f;border-radius:6px;font-size:1rem}
button{margin-top:1.25rem;padding:.6rem 1.2rem;border:0;border-radius:6px;background:#1f6feb;color:#fff;font-size:1rem;cursor:pointer}
button:hover{background:#1158c7}
.error{color:#b42318;font-weight:600}
code{background:#f0f1f3;padding:.1rem .3rem;border-radius:4px}
";

/// The stylesheet's ETag: a hash of its content, so it changes when the file does.
pub fn style_etag() -> String {
    let digest = Sha256::digest(STYLE.as_bytes());
    format!("\"{}\"", &hex::encode(digest)[..16])
}

/// How a response may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caching {
    /// Token pages and errors: never stored anywhere.
    NoStore,
    /// The stylesheet: cacheable, revalidated with its ETag.
    Static { etag: String },
}

#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub caching: Caching,
    /// `Allow` for 405 responses.
    pub allow: Option<&'static str>,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page; `title` is escaped here, `body_html` must already be safe HTML.
fn html(status: u16, title: &str, body_html: &str) -> Page {
    let title = escape(title);
    Page {
        status,
        content_type: "text/html; charset=utf-8",
        body: format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"referrer\" content=\"no-referrer\">\n\
             <title>{title} · mailctl</title>\n<link rel=\"stylesheet\" href=\"/static/style.css\">\n\
             </head>\n<body>\n<main>\n<h1>{title}</h1>\n{body_html}\n</main>\n</body>\n</html>\n"
        ),
        caching: Caching::NoStore,
        allow: None,
    }
}

fn message(status: u16, title: &str, text: &str) -> Page {
    html(status, title, &format!("<p>{}</p>", escape(text)))
}

pub fn style(if_none_match: Option<&str>) -> Page {
    let etag = style_etag();
    let fresh = if_none_match
        .map(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        .unwrap_or(false);
    Page {
        status: if fresh { 304 } else { 200 },
        content_type: "text/css; charset=utf-8",
        body: if fresh {
            String::new()
        } else {
            STYLE.to_string()
        },
        caching: Caching::Static { etag },
        allow: None,
    }
}

// ---- confirmation ----

/// The confirmation form asks for the password chosen at registration: a link then only ever
/// sets a password its reader knows.
pub fn confirm_form(email: &str, error: Option<&str>) -> Page {
    let error_html = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    html(
        if error.is_some() { 400 } else { 200 },
        "Confirm your address",
        &format!(
            "<p>To confirm <strong>{}</strong> for your mailctl account, type the password you \
             chose when you registered.</p>\n{error_html}\
             <form method=\"post\">\n\
             <label for=\"password\">Password</label>\n\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\n\
             <button type=\"submit\" id=\"confirm\">Confirm my address</button>\n</form>",
            escape(email)
        ),
    )
}

pub fn confirmed(email: &str) -> Page {
    html(
        200,
        "Address confirmed",
        &format!(
            "<p id=\"done\">Thank you: <strong>{0}</strong> is confirmed. You can now log in:</p>\n\
             <p><code>mailctl login --email {0}</code></p>",
            escape(email)
        ),
    )
}

// ---- password reset ----

pub fn reset_form(email: &str, error: Option<&str>) -> Page {
    let error_html = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    html(
        if error.is_some() { 400 } else { 200 },
        "Choose a new password",
        &format!(
            "<p>New password for <strong>{}</strong> (at least {} characters).</p>\n{error_html}\
             <form method=\"post\">\n\
             <label for=\"password\">New password</label>\n\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\" required>\n\
             <label for=\"password2\">Repeat the new password</label>\n\
             <input type=\"password\" id=\"password2\" name=\"password2\" autocomplete=\"new-password\" required>\n\
             <button type=\"submit\" id=\"save\">Set the new password</button>\n</form>",
            escape(email),
            crate::auth::password::MIN_LEN
        ),
    )
}

pub fn password_set(email: &str) -> Page {
    html(
        200,
        "Password changed",
        &format!(
            "<p id=\"done\">The password of <strong>{0}</strong> is changed, and every session of the \
             account has ended. Log in again:</p>\n<p><code>mailctl login --email {0}</code></p>",
            escape(email)
        ),
    )
}

// ---- unsubscribe ----

pub fn unsubscribe_form(email: &str) -> Page {
    html(
        200,
        "Unsubscribe",
        &format!(
            "<p>Stop these letters to <strong>{}</strong>?</p>\n\
             <form method=\"post\">\n<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\n\
             <button type=\"submit\" id=\"unsubscribe\">Unsubscribe</button>\n</form>",
            escape(email)
        ),
    )
}

pub fn unsubscribed(email: &str) -> Page {
    html(
        200,
        "Unsubscribed",
        &format!(
            "<p id=\"done\"><strong>{}</strong> will get no more letters from this sender.</p>",
            escape(email)
        ),
    )
}

// ---- errors ----

pub fn invalid_link() -> Page {
    message(
        404,
        "This link is not valid",
        "The link is incomplete or unknown. Copy the whole link from the letter, or ask for a new one.",
    )
}

pub fn used_link() -> Page {
    message(
        410,
        "This link has already been used",
        "Each link works once. If you still need to, ask for a new one.",
    )
}

pub fn expired_link() -> Page {
    message(
        410,
        "This link has expired",
        "Confirmation links work for 48 hours and password reset links for 1 hour. Ask for a new one.",
    )
}

pub fn not_found() -> Page {
    message(404, "Page not found", "There is nothing at this address.")
}

pub fn method_not_allowed(allow: &'static str) -> Page {
    let mut p = message(
        405,
        "Method not allowed",
        "This page cannot be used that way.",
    );
    p.allow = Some(allow);
    p
}

pub fn too_large() -> Page {
    message(
        413,
        "Request too large",
        "The request body is larger than 16 KiB.",
    )
}

pub fn uri_too_long() -> Page {
    message(
        414,
        "Address too long",
        "The requested address is longer than 8 KiB.",
    )
}

pub fn headers_too_large() -> Page {
    message(
        431,
        "Request headers too large",
        "The request headers are larger than 16 KiB.",
    )
}

pub fn bad_request() -> Page {
    message(400, "Bad request", "The request could not be read.")
}

pub fn internal_error() -> Page {
    message(
        500,
        "Something went wrong",
        "The request could not be completed. Try again in a moment.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_dynamic() {
        let p = confirm_form("<script>alert(1)</script>\"@x", None);
        assert!(!p.body.contains("<script>"));
        assert!(p.body.contains("&lt;script&gt;"));
        let p = reset_form("a@b", Some("<b>"));
        assert_eq!(p.status, 400);
        assert!(p.body.contains("&lt;b&gt;"));
    }

    #[test]
    fn style_revalidates_with_etag() {
        let etag = style_etag();
        assert_eq!(style(None).status, 200);
        assert_eq!(style(Some(&etag)).status, 304);
        assert_eq!(style(Some(&format!("\"x\", {etag}"))).status, 304);
        assert_eq!(style(Some("\"other\"")).status, 200);
    }
}
