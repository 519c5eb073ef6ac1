//! The listener: hyper's HTTP/1.1 connection handling on a bounded tokio accept loop.
//!
//! Why not tiny_http (the first listener): its accept thread ends for good on the first
//! `accept` error (EMFILE), so the process stays alive and deaf; it starts one thread per
//! connection without a bound; and it reads a request line or header of any length into
//! memory. None of that can be configured from outside the crate. hyper bounds the head it
//! buffers (431), times out slow headers, and runs each connection as a cheap task.
//!
//! Limits, each answered without reading further: a request line over `MAX_TARGET` gets 414
//! (checked here, before hyper, so a 16 MB URL costs 8 KiB of reading); a header section over
//! `MAX_HEADERS` gets 431 (hyper's buffer bound, then an exact check); a body over `MAX_BODY`
//! gets 413. Every connection has `DEADLINE` in all (reading, handling, writing), one request
//! per connection, and at most `max_connections()` are open at once (more wait in the
//! kernel's backlog). An `accept` error (out of descriptors) is logged and retried after a
//! short pause. SIGTERM/SIGINT stop accepting, give open requests `GRACE`, then end.
//!
//! CSRF: the listener keeps no cookies and no login state, so a forged cross-site request has
//! no ambient authority to ride on. Every state-changing POST carries the secret token in its
//! path; a site that could forge that POST must already know the token. `frame-ancestors
//! 'none'` stops clickjacking, `form-action 'self'` keeps forms on this origin, and
//! `Referrer-Policy: no-referrer` plus `Cache-Control: no-store` keep tokens out of Referer
//! headers and caches. GET never changes anything, so mail scanners spend no token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::handlers::{self, Body};
use super::pages::{self, Caching, Page};
use crate::db::Db;
use crate::error::{Error, Result};

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 16 * 1024;
/// Request targets (the URL path and query) above this are refused with 414.
pub const MAX_TARGET: usize = 8 * 1024;
/// Header sections above this are refused with 431.
pub const MAX_HEADERS: usize = 16 * 1024;
/// Everything a connection may take: read the request, answer, write the answer.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How long requests in progress may still run after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);
/// Connections open at once, at most (also bounded by the descriptor limit).
const MAX_CONNECTIONS: usize = 1024;
/// Descriptors kept free for the database, the log and the signal pipe.
const SPARE_DESCRIPTORS: usize = 24;
/// The longest request line: method, target, version.
const MAX_REQUEST_LINE: usize = MAX_TARGET + 32;

/// Open connections at most: `MAX_CONNECTIONS`, or fewer when the process may not open that
/// many descriptors, so running out of them is the exception, not the way to say "busy".
fn max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        MAX_CONNECTIONS
    };
    soft.saturating_sub(SPARE_DESCRIPTORS)
        .clamp(4, MAX_CONNECTIONS)
}

/// Serves until SIGINT or SIGTERM, then lets the requests in progress finish (for `GRACE`).
pub async fn serve(db: Db, bind: &str) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| Error::runtime(format!("cannot listen on {bind}: {e}")))?;
    eprintln!("mailctl: listening on http://{}", listener.local_addr()?);
    let permits = Arc::new(Semaphore::new(max_connections()));
    let state = Arc::new(handlers::State::new(db));
    let mut conns = JoinSet::new();
    let mut warned: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (or memory): say so now and then, wait a little,
                    // try again. Connections that end meanwhile give descriptors back.
                    if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        eprintln!("mailctl: warning: cannot accept a connection ({e}); retrying");
                        warned = Some(Instant::now());
                    }
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(DEADLINE, connection(stream, state)).await;
        });
        while conns.try_join_next().is_some() {}
    }
    eprintln!("mailctl: shutting down");
    drop(listener);
    let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
    Ok(())
}

/// One connection, one request. The request line is read here first, so an overlong target
/// is refused after `MAX_REQUEST_LINE` bytes; hyper then reads the rest of the head from the
/// bytes already read followed by the socket.
async fn connection(mut stream: TcpStream, state: Arc<handlers::State>) {
    let _ = stream.set_nodelay(true);
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while !head.contains(&b'\n') {
        if head.len() > MAX_REQUEST_LINE {
            eprintln!("mailctl: - (request target too long) 414");
            refuse(stream, pages::uri_too_long()).await;
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let line_len = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    if line_len > MAX_REQUEST_LINE {
        eprintln!("mailctl: - (request target too long) 414");
        refuse(stream, pages::uri_too_long()).await;
        return;
    }
    let (reader, writer) = stream.into_split();
    let io = TokioIo::new(tokio::io::join(
        std::io::Cursor::new(head).chain(reader),
        writer,
    ));
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(respond(&state, req).await) }
    });
    let _ = http1::Builder::new()
        .keep_alive(false)
        // A client may shut its sending side once the request is out; it still gets the answer.
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(DEADLINE)
        .max_buf_size(MAX_REQUEST_LINE + MAX_HEADERS + 1024)
        .serve_connection(io, service)
        .await;
}

async fn respond(state: &handlers::State, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let (page, name) = handlers::handle(state, req).await;
    eprintln!("mailctl: {method} {name} {}", page.status);
    response(page)
}

/// The headers every page carries, in the order they are sent.
fn headers(page: &Page) -> Vec<(&'static str, String)> {
    let mut h = vec![("Content-Type", page.content_type.to_string())];
    for (name, value) in pages::SECURITY_HEADERS {
        h.push((name, value.to_string()));
    }
    match &page.caching {
        Caching::NoStore => h.push(("Cache-Control", "no-store".into())),
        Caching::Static { etag } => {
            h.push(("Cache-Control", "public, max-age=86400".into()));
            h.push(("ETag", etag.clone()));
        }
    }
    if let Some(allow) = page.allow {
        h.push(("Allow", allow.into()));
    }
    h
}

fn response(page: Page) -> Response<Body> {
    let mut r = Response::builder().status(page.status);
    for (name, value) in headers(&page) {
        r = r.header(name, value);
    }
    r.body(Body::new(Bytes::from(page.body)))
        .unwrap_or_else(|_| Response::new(Body::new(Bytes::new())))
}

/// Answers before hyper has seen the request (the request line alone was too long), then
/// closes without reading the rest: a short lingering read lets the answer reach the client
/// before the close resets the connection.
async fn refuse(mut stream: TcpStream, page: Page) {
    let reason = hyper::StatusCode::from_u16(page.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", page.status);
    for (name, value) in headers(&page) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        page.body.len(),
        page.body
    ));
    if stream.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut drained = 0;
        while drained < 256 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
