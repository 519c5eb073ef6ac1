//! The tiny_http listener: a few worker threads take parsed requests from tiny_http's queue
//! and run the (async, sqlx) handlers on the command's tokio runtime via `Handle::block_on`.
//!
//! CSRF: the listener keeps no cookies and no login state, so a forged cross-site request has
//! no ambient authority to ride on. Every state-changing POST carries the secret token in its
//! path (`<form method="post">` posts back to the page's own URL, no hidden field needed); a
//! site that could forge that POST must already know the token, and then it could use the link
//! itself. `frame-ancestors 'none'` / `X-Frame-Options: DENY` stop clickjacking of the buttons,
//! `form-action 'self'` keeps the forms on this origin, and `Referrer-Policy: no-referrer` plus
//! `Cache-Control: no-store` keep tokens out of Referer headers and caches. GET never changes
//! anything, so mail scanners that prefetch links spend no token.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tiny_http::{Header, Request, Response, Server};
use tokio::runtime::Handle;

use super::pages::{self, Caching, Page};
use super::router::{self, Action, Route};
use crate::auth::{password, unsubscribe};
use crate::db::tokens::{self, Purpose, TokenState};
use crate::db::{Db, suppressions};
use crate::error::{Error, Result};

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 16 * 1024;
const WORKERS: usize = 4;

/// Serves until SIGINT or SIGTERM, then lets the requests in progress finish.
pub async fn serve(db: Db, bind: &str) -> Result<()> {
    let server =
        Server::http(bind).map_err(|e| Error::runtime(format!("cannot listen on {bind}: {e}")))?;
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = Handle::current();
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let (server, stop, handle, db) = (server.clone(), stop.clone(), handle.clone(), db.clone());
        workers.push(
            std::thread::Builder::new()
                .name(format!("mailctl-web-{i}"))
                .spawn(move || worker(&server, &stop, &handle, &db))
                .map_err(|e| Error::runtime(format!("cannot start a worker: {e}")))?,
        );
    }
    eprintln!("mailctl: listening on http://{}", server.server_addr());
    wait_for_signal().await?;
    eprintln!("mailctl: shutting down");
    stop.store(true, Ordering::SeqCst);
    for _ in 0..WORKERS {
        server.unblock();
    }
    // Join off the runtime thread: workers may still need it to finish their requests.
    tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await
    .map_err(|e| Error::runtime(format!("worker: {e}")))?;
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

fn worker(server: &Server, stop: &AtomicBool, handle: &Handle, db: &Db) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(rq)) => serve_one(rq, handle, db),
            Ok(None) => {}
            // A broken connection is that client's problem, never the listener's.
            Err(_) => {}
        }
    }
}

enum Body {
    Ok(Vec<u8>),
    TooLarge,
    Unreadable,
}

fn read_body(rq: &mut Request) -> Body {
    if rq.body_length().is_some_and(|n| n > MAX_BODY) {
        return Body::TooLarge;
    }
    let mut buf = Vec::new();
    match rq
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut buf)
    {
        Ok(_) if buf.len() > MAX_BODY => Body::TooLarge,
        Ok(_) => Body::Ok(buf),
        Err(_) => Body::Unreadable,
    }
}

fn serve_one(mut rq: Request, handle: &Handle, db: &Db) {
    let method = rq.method().as_str().to_string();
    let route = router::route(&method, rq.url());
    let if_none_match = rq
        .headers()
        .iter()
        .find(|h| h.field.equiv("If-None-Match"))
        .map(|h| h.value.as_str().to_string());
    let page = match read_body(&mut rq) {
        Body::TooLarge => pages::too_large(),
        Body::Unreadable => pages::bad_request(),
        Body::Ok(body) => std::panic::catch_unwind(AssertUnwindSafe(|| {
            handle.block_on(page_for(db, &route, if_none_match.as_deref(), &body))
        }))
        .unwrap_or_else(|_| pages::internal_error()),
    };
    eprintln!("mailctl: {method} {} {}", route.log_name(), page.status);
    let _ = rq.respond(response(page));
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn response(page: Page) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut r = Response::from_data(page.body.into_bytes())
        .with_status_code(page.status)
        .with_header(header("Content-Type", page.content_type));
    for (name, value) in pages::SECURITY_HEADERS {
        r.add_header(header(name, value));
    }
    match page.caching {
        Caching::NoStore => r.add_header(header("Cache-Control", "no-store")),
        Caching::Static { etag } => {
            r.add_header(header("Cache-Control", "public, max-age=86400"));
            r.add_header(header("ETag", &etag));
        }
    }
    if let Some(allow) = page.allow {
        r.add_header(header("Allow", allow));
    }
    r
}

/// The page for a routed request; database failures become a plain 500 page (and one line on
/// stderr), never a trace for the visitor.
async fn page_for(db: &Db, route: &Route, if_none_match: Option<&str>, body: &[u8]) -> Page {
    let result = match route {
        Route::Style => return pages::style(if_none_match),
        Route::NotFound => return pages::not_found(),
        Route::MethodNotAllowed(allow) => return pages::method_not_allowed(allow),
        Route::Confirm(action, tok) => confirm(db, *action, tok).await,
        Route::Reset(action, tok) => reset(db, *action, tok, body).await,
        Route::Unsubscribe(action, tok) => unsubscribe_page(db, *action, tok).await,
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

async fn confirm(db: &Db, action: Action, tok: &str) -> Result<Page> {
    let state = match action {
        Action::Show => tokens::check(db, Purpose::Confirm, tok).await?,
        Action::Act => tokens::confirm(db, tok).await?,
    };
    if let Some(problem) = token_problem(&state) {
        return Ok(problem);
    }
    let TokenState::Valid { email, .. } = state else {
        return Ok(pages::invalid_link());
    };
    Ok(match action {
        Action::Show => pages::confirm_form(&email),
        Action::Act => pages::confirmed(&email),
    })
}

async fn reset(db: &Db, action: Action, tok: &str, body: &[u8]) -> Result<Page> {
    let state = tokens::check(db, Purpose::Reset, tok).await?;
    if let Some(problem) = token_problem(&state) {
        return Ok(problem);
    }
    let TokenState::Valid { email, .. } = state else {
        return Ok(pages::invalid_link());
    };
    if action == Action::Show {
        return Ok(pages::reset_form(&email, None));
    }
    let form = router::parse_form(body);
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
    let hash = password::hash(pw)?;
    let state = tokens::reset_password(db, tok, &hash).await?;
    if let Some(problem) = token_problem(&state) {
        return Ok(problem);
    }
    Ok(pages::password_set(&email))
}

/// GET shows a button; POST (a person's press, or the RFC 8058 one-click POST with body
/// `List-Unsubscribe=One-Click`) unsubscribes.
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
