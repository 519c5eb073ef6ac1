//! What the listener answers: one request in, one page out. Checks the limits that hyper does
//! not know (target length, header bytes, Content-Length), routes, reads a body only for the
//! pages that take a form, and runs the page's database work.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::Request;
use hyper::body::{Bytes, Incoming};
use tokio::sync::Semaphore;

use super::pages::{self, Page};
use super::router::{self, Action, Route};
use super::server::{MAX_BODY, MAX_HEADERS, MAX_TARGET};
use crate::auth::{password, unsubscribe};
use crate::db::tokens::{self, Purpose, TokenState};
use crate::db::{Db, suppressions};
use crate::error::{Error, Result};

pub type Body = Full<Bytes>;

/// What every request shares.
pub struct State {
    db: Db,
    /// argon2 takes ~19 MB and a core for a moment: at most two at once, whatever arrives.
    hashing: Semaphore,
}

impl State {
    pub fn new(db: Db) -> State {
        State {
            db,
            hashing: Semaphore::new(2),
        }
    }

    /// Runs argon2 work off the async threads, two at a time at most.
    async fn argon2<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| Error::runtime(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::runtime(format!("password hashing: {e}")))
    }
}

/// The page for a request, and a name for the log that never holds a token.
pub async fn handle(state: &State, req: Request<Incoming>) -> (Page, &'static str) {
    let target = req.uri().to_string();
    if target.len() > MAX_TARGET {
        return (pages::uri_too_long(), "(request target too long)");
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADERS {
        return (pages::headers_too_large(), "(headers too large)");
    }
    let route = router::route(req.method().as_str(), &target);
    let name = route.log_name();
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return (pages::too_large(), name);
    }
    let if_none_match = req
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req.into_body();
    let page = AssertUnwindSafe(page_for(state, &route, if_none_match.as_deref(), body))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| pages::internal_error());
    (page, name)
}

/// Reads a form body of at most `MAX_BODY` bytes, or the page that says why not.
async fn read_form(body: Incoming) -> std::result::Result<Vec<(String, String)>, Page> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(router::parse_form(&collected.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => Err(pages::too_large()),
        Err(_) => Err(pages::bad_request()),
    }
}

/// Database failures become a plain 500 page (and one line on stderr), never a trace.
async fn page_for(
    state: &State,
    route: &Route,
    if_none_match: Option<&str>,
    body: Incoming,
) -> Page {
    let result = match route {
        Route::Style => return pages::style(if_none_match),
        Route::NotFound => return pages::not_found(),
        Route::MethodNotAllowed(allow) => return pages::method_not_allowed(allow),
        Route::Confirm(action, tok) => confirm(state, *action, tok, body).await,
        Route::Reset(action, tok) => reset(state, *action, tok, body).await,
        Route::Unsubscribe(action, tok) => unsubscribe_page(&state.db, *action, tok).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("mailctl: error: {} failed: {e}", route.log_name());
        pages::internal_error()
    })
}

fn token_problem(state: &TokenState) -> Option<Page> {
    match state {
        TokenState::Valid { .. } => None,
        TokenState::Used => Some(pages::used_link()),
        TokenState::Expired => Some(pages::expired_link()),
        TokenState::Unknown => Some(pages::invalid_link()),
    }
}

/// GET shows the form; POST confirms when the password typed is the one chosen at the
/// registration that sent this very link. So a link only ever sets a password its reader
/// knows: a later `register` of the same address (by anyone) cannot change what it sets.
async fn confirm(state: &State, action: Action, tok: &str, body: Incoming) -> Result<Page> {
    let (status, bound) = tokens::confirmation(&state.db, tok).await?;
    if let Some(problem) = token_problem(&status) {
        return Ok(problem);
    }
    let (TokenState::Valid { email, .. }, Some(bound)) = (status, bound) else {
        return Ok(pages::invalid_link());
    };
    if action == Action::Show {
        return Ok(pages::confirm_form(&email, None));
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let typed = router::field(&form, "password")
        .unwrap_or_default()
        .to_string();
    let ok = !typed.is_empty()
        && state
            .argon2(move || password::verify(&typed, &bound))
            .await?;
    if !ok {
        return Ok(pages::confirm_form(
            &email,
            Some("That is not the password given when this address was registered."),
        ));
    }
    let done = tokens::confirm(&state.db, tok).await?;
    if let Some(problem) = token_problem(&done) {
        return Ok(problem);
    }
    Ok(pages::confirmed(&email))
}

async fn reset(state: &State, action: Action, tok: &str, body: Incoming) -> Result<Page> {
    let status = tokens::check(&state.db, Purpose::Reset, tok).await?;
    if let Some(problem) = token_problem(&status) {
        return Ok(problem);
    }
    let TokenState::Valid { email, .. } = status else {
        return Ok(pages::invalid_link());
    };
    if action == Action::Show {
        return Ok(pages::reset_form(&email, None));
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let (Some(pw), Some(pw2)) = (
        router::field(&form, "password"),
        router::field(&form, "password2"),
    ) else {
        return Ok(pages::reset_form(
            &email,
            Some("Type the new password in both fields."),
        ));
    };
    if pw != pw2 {
        return Ok(pages::reset_form(
            &email,
            Some("The two passwords differ: type the same password twice."),
        ));
    }
    if let Err(e) = password::validate(pw) {
        let reason = match e {
            Error::Invalid { reason, .. } => format!("The password {reason}."),
            other => other.to_string(),
        };
        return Ok(pages::reset_form(&email, Some(&reason)));
    }
    let pw = pw.to_string();
    let hash = state.argon2(move || password::hash(&pw)).await??;
    let done = tokens::reset_password(&state.db, tok, &hash).await?;
    if let Some(problem) = token_problem(&done) {
        return Ok(problem);
    }
    Ok(pages::password_set(&email))
}

/// GET shows a button; POST (a person's press, or the RFC 8058 one-click POST with body
/// `List-Unsubscribe=One-Click`) unsubscribes. The body is not needed: the token says it all.
async fn unsubscribe_page(db: &Db, action: Action, tok: &str) -> Result<Page> {
    let secret = suppressions::secret(db, "unsubscribe").await?;
    let Some((mailing_id, client_id)) = unsubscribe::verify(&secret, tok) else {
        return Ok(pages::invalid_link());
    };
    Ok(match action {
        Action::Show => match suppressions::recipient(db, mailing_id, client_id).await? {
            Some((_, email)) => pages::unsubscribe_form(&email),
            None => pages::invalid_link(),
        },
        Action::Act => match suppressions::unsubscribe(db, mailing_id, client_id).await? {
            Some(email) => pages::unsubscribed(&email),
            None => pages::invalid_link(),
        },
    })
}
