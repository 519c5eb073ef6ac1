//! Which page a request is for: a pure function of the method and the request target, so it
//! can be tested (and fuzzed) without a socket. Nothing here touches the database.

/// The links the listener serves. The token is the raw path segment; the handler checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Confirm(Action, String),
    Reset(Action, String),
    Unsubscribe(Action, String),
    /// The stylesheet, cacheable with an ETag.
    Style,
    NotFound,
    /// The path exists but not for this method; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// GET (and HEAD) only show; POST acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Show,
    Act,
}

/// The longest path segment taken as a token; anything longer is not a link of ours.
pub const MAX_TOKEN_LEN: usize = 128;

pub const STYLE_PATH: &str = "/static/style.css";

/// Routes a request. `target` is the request target as sent (path and optional query).
pub fn route(method: &str, target: &str) -> Route {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path == STYLE_PATH {
        return match method {
            "GET" | "HEAD" => Route::Style,
            _ => Route::MethodNotAllowed("GET, HEAD"),
        };
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Route::NotFound;
    };
    let mut parts = rest.split('/');
    let (Some(kind), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return Route::NotFound;
    };
    if token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || token.starts_with('.')
    {
        return Route::NotFound;
    }
    let make: fn(Action, String) -> Route = match kind {
        "confirm" => Route::Confirm,
        "reset" => Route::Reset,
        "unsubscribe" => Route::Unsubscribe,
        _ => return Route::NotFound,
    };
    match method {
        "GET" | "HEAD" => make(Action::Show, token.to_string()),
        "POST" => make(Action::Act, token.to_string()),
        _ => Route::MethodNotAllowed("GET, HEAD, POST"),
    }
}

impl Route {
    /// A name for the log that never contains the token.
    pub fn log_name(&self) -> &'static str {
        match self {
            Route::Confirm(..) => "/confirm/…",
            Route::Reset(..) => "/reset/…",
            Route::Unsubscribe(..) => "/unsubscribe/…",
            Route::Style => STYLE_PATH,
            Route::NotFound => "(unknown path)",
            Route::MethodNotAllowed(_) => "(wrong method)",
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into (name, value) pairs with the `url`
/// crate's decoder: invalid percent escapes are kept literally and invalid UTF-8 is replaced,
/// never an error.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of a form field.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const TOKEN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJK-_0123";

    #[test]
    fn known_links() {
        assert_eq!(
            route("GET", &format!("/confirm/{TOKEN}")),
            Route::Confirm(Action::Show, TOKEN.into())
        );
        assert_eq!(
            route("POST", &format!("/reset/{TOKEN}?x=1")),
            Route::Reset(Action::Act, TOKEN.into())
        );
        assert_eq!(
            route("HEAD", "/unsubscribe/7.42.AAAA"),
            Route::Unsubscribe(Action::Show, "7.42.AAAA".into())
        );
        assert_eq!(route("GET", STYLE_PATH), Route::Style);
        assert_eq!(
            route("POST", STYLE_PATH),
            Route::MethodNotAllowed("GET, HEAD")
        );
        assert_eq!(
            route("DELETE", &format!("/confirm/{TOKEN}")),
            Route::MethodNotAllowed("GET, HEAD, POST")
        );
    }

    #[test]
    fn everything_else_is_not_found() {
        for target in [
            "",
            "/",
            "*",
            "confirm/x",
            "/confirm",
            "/confirm/",
            "/confirm/x/",
            "/confirm/x/y",
            "/confirm/../etc/passwd",
            "/confirm/..",
            "/confirm/%2e%2e",
            "/reset/a%2Fb",
            "/static/../static/style.css",
            "/CONFIRM/abc",
            "/other/abc",
            "http://evil.example/confirm/abc",
        ] {
            assert_eq!(route("GET", target), Route::NotFound, "{target:?}");
        }
        let long = format!("/confirm/{}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(route("GET", &long), Route::NotFound);
    }

    #[test]
    fn forms() {
        let f = parse_form(b"password=a+b%21&password2=%E2%82%AC&empty=&bad=%zz%4");
        assert_eq!(field(&f, "password"), Some("a b!"));
        assert_eq!(field(&f, "password2"), Some("€"));
        assert_eq!(field(&f, "empty"), Some(""));
        assert_eq!(field(&f, "bad"), Some("%zz%4"));
        assert_eq!(field(&f, "missing"), None);
        assert_eq!(field(&parse_form(b"x=%"), "x"), Some("%"));
        assert_eq!(field(&parse_form(b"x=%4"), "x"), Some("%4"));
        assert_eq!(field(&parse_form(b"x=%41"), "x"), Some("A"));
        assert_eq!(field(&parse_form(b"x=%ff"), "x"), Some("\u{fffd}"));
    }

    fn random_bytes(rng: &mut impl Rng, max: usize) -> Vec<u8> {
        let n = rng.gen_range(0..max);
        let alphabet: &[u8] = b"/.%?#&=+-_aZ09\0\xff\xfe\xc3\x28 \r\n";
        (0..n)
            .map(|_| {
                if rng.gen_bool(0.5) {
                    alphabet[rng.gen_range(0..alphabet.len())]
                } else {
                    rng.r#gen()
                }
            })
            .collect()
    }

    /// Property: for any input the router and the form parser return (no panic), a token
    /// route only ever carries a short, URL-safe segment, and parsing is deterministic.
    #[test]
    fn random_input_never_panics_and_tokens_stay_safe() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d61696c);
        let prefixes = ["/confirm/", "/reset/", "/unsubscribe/", "/static/", "/", ""];
        let methods = ["GET", "POST", "HEAD", "PUT", "", "G\u{0}T", "get"];
        for round in 0..20_000 {
            let raw = random_bytes(&mut rng, if round % 100 == 0 { 70_000 } else { 200 });
            let tail = String::from_utf8_lossy(&raw);
            let target = format!("{}{tail}", prefixes[round % prefixes.len()]);
            let method = methods[round % methods.len()];
            let r = route(method, &target);
            assert_eq!(r, route(method, &target));
            if let Route::Confirm(_, t) | Route::Reset(_, t) | Route::Unsubscribe(_, t) = &r {
                assert!(t.len() <= MAX_TOKEN_LEN, "{target:?}");
                assert!(!t.contains('/') && !t.starts_with('.'), "{target:?}");
                assert!(t.bytes().all(|b| b.is_ascii_graphic()), "{target:?}");
            }
            let form = parse_form(&raw);
            assert!(form.len() <= raw.len());
            let _ = crate::auth::token::is_well_formed(&tail);
            let _ = crate::auth::unsubscribe::verify(b"k", &tail);
        }
    }
}
