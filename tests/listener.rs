//! `mailctl serve` over real HTTP on 127.0.0.1: headers, status codes, limits, the unsubscribe
//! route, malformed and hostile requests (a bounded fuzz), and graceful shutdown.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{Backend, Env};
use support::start_listener;

const TOKEN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJK-_0123";

#[test]
fn status_codes_headers_and_limits() {
    let mut env = Env::new(Backend::Sqlite);
    let mut server = start_listener(&mut env);

    // Unknown paths 404, wrong methods 405 with Allow; all with the security headers.
    for path in [
        "/",
        "/nothing",
        "/confirm",
        "/confirm/",
        "/static/other.css",
        "/reset/a/b",
    ] {
        let r = server.get(path);
        r.expect(404).assert_no_store();
        assert!(
            r.body.contains("<h1>Page not found</h1>"),
            "{path}: {}",
            r.body
        );
    }
    let r = server.request("DELETE", &format!("/confirm/{TOKEN}"), &[], b"");
    r.expect(405).assert_safe_headers();
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    let r = server.request("PUT", "/static/style.css", &[], b"");
    r.expect(405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    // The stylesheet is cacheable and revalidates with its ETag.
    let css = server.get("/static/style.css");
    css.expect(200).assert_safe_headers();
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    assert!(css.header("cache-control").unwrap().contains("max-age"));
    let etag = css.header("etag").expect("ETag").to_string();
    let again = server.request("GET", "/static/style.css", &[("If-None-Match", &etag)], b"");
    again.expect(304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // Bodies over 16 KiB: 413, by Content-Length or by what actually arrives (chunked).
    let big = vec![b'a'; 16 * 1024 + 1];
    server
        .request("POST", &format!("/confirm/{TOKEN}"), &[], &big)
        .expect(413)
        .assert_no_store();
    let ok_size = vec![b'a'; 16 * 1024];
    server
        .request("POST", &format!("/confirm/{TOKEN}"), &[], &ok_size)
        .expect(404);
    // A body is read only by a page that takes one: a real reset link.
    env.account("user", "ann");
    env.as_("anon")
        .run(&["password", "reset", "--email", "ann@example.com"])
        .success();
    let reset = support::last_link(&env, "ann@example.com", "reset");
    let mut chunked = format!(
        "POST {reset} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'b'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    server.raw(&chunked).expect(413);

    // Token pages never leak the token into the log.
    server.get(&format!("/confirm/{TOKEN}")).expect(404);
    assert!(!server.log().contains(TOKEN), "{}", server.log());

    // SIGTERM: a clean stop with exit 0.
    assert!(server.is_running());
    assert_eq!(server.terminate(), Some(0));
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn unsubscribe_links() {
    let mut env = Env::new(Backend::Sqlite);
    let server = start_listener(&mut env);
    let ann = env.account("user", "ann");
    let client = ann.client("reader@example.com");
    let message = ann.message("News");
    let mailing = ann.mailing(message, &[client]);
    let suppressed = |env: &Env| support::sql_count(env, "SELECT COUNT(*) FROM suppressions");

    // Bad, forged or foreign tokens: 404, GET or POST, and nothing is suppressed.
    for token in [
        format!("{mailing}.{client}.AAAAAAAAAAAAAAAAAAAAAA"),
        format!("{mailing}.{client}"),
        "1.1.x".to_string(),
        "x".repeat(100),
    ] {
        let path = format!("/unsubscribe/{token}");
        server.get(&path).expect(404).assert_no_store();
        server.post(&path, "List-Unsubscribe=One-Click").expect(404);
    }
    assert_eq!(suppressed(&env), 0);

    // A link signed with the installation's secret (created by the requests above): GET shows
    // a button and changes nothing; the RFC 8058 one-click POST unsubscribes.
    let secret = support::sql_text(&env, "SELECT value FROM secrets WHERE name = 'unsubscribe'");
    let token = mailctl::auth::unsubscribe::token(secret.as_bytes(), mailing, client);
    let path = format!("/unsubscribe/{token}");
    let page = server.get(&path);
    page.expect(200).assert_no_store();
    assert!(page.body.contains("reader@example.com") && page.body.contains("<button"));
    assert_eq!(suppressed(&env), 0);
    let done = server.post(&path, "List-Unsubscribe=One-Click");
    done.expect(200).assert_no_store();
    assert_eq!(suppressed(&env), 1);
    // Again: still fine (idempotent), still one row.
    server.post(&path, "List-Unsubscribe=One-Click").expect(200);
    assert_eq!(suppressed(&env), 1);
}

/// A bounded fuzz of hostile requests: each gets an answer or a closed connection, never a
/// hang, and afterwards the listener still serves normal requests.
#[test]
fn hostile_requests_do_not_stop_the_listener() {
    use rand::{Rng, SeedableRng};
    let mut env = Env::new(Backend::Sqlite);
    let mut server = start_listener(&mut env);
    let started = Instant::now();

    let long_path = format!("/confirm/{}", "a".repeat(100_000));
    let huge_header = format!(
        "GET /confirm/{TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "h".repeat(1_000_000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n",
        "X-A: b\r\n".repeat(5_000)
    );
    let mut fixed: Vec<Vec<u8>> = vec![
        format!("GET {long_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes(),
        b"GET /confirm/\xff\xfe\xc3\x28 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /confirm/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET http://evil.example/confirm/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        huge_header.into_bytes(),
        many_headers.into_bytes(),
        b"\r\n\r\n".to_vec(),
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"POST /reset/x HTTP/1.1\r\nContent-Length: -5\r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /reset/x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /reset/x HTTP/1.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc".to_vec(),
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6c69_7374);
    for _ in 0..200 {
        let n = rng.gen_range(0..300);
        let mut junk: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
        if rng.gen_bool(0.5) {
            let mut line = b"GET /".to_vec();
            line.append(&mut junk);
            line.extend_from_slice(b" HTTP/1.1\r\nConnection: close\r\n\r\n");
            junk = line;
        }
        fixed.push(junk);
    }
    for (i, req) in fixed.iter().enumerate() {
        let r = server.raw(req);
        assert!(
            r.status == 0 || (100..500).contains(&r.status),
            "request {i}: {r:#?}"
        );
        assert!(
            !r.body.to_lowercase().contains("panicked"),
            "request {i}: {}",
            r.body
        );
        assert!(
            server.is_running(),
            "request {i} stopped the listener:\n{}",
            server.log()
        );
    }
    // Still serving normally, with no panic in its log.
    server.get("/static/style.css").expect(200);
    server.get(&format!("/confirm/{TOKEN}")).expect(404);
    assert!(!server.log().contains("panicked"), "{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "fuzz took {:?}",
        started.elapsed()
    );
    assert_eq!(server.terminate(), Some(0));
}

/// SIGINT (Ctrl-C) stops it cleanly too; a second listener on the same port is refused (exit 1)
/// while the first runs, without a trace.
#[test]
fn sigint_and_busy_port() {
    let mut env = Env::new(Backend::Sqlite);
    let mut server = start_listener(&mut env);
    let busy = env
        .as_("x")
        .run(&["serve", "--bind", &format!("127.0.0.1:{}", server.port)]);
    busy.expect_code(1);
    assert!(busy.stderr().contains("cannot listen"), "{}", busy.stderr());
    server.get("/static/style.css").expect(200);
    assert_eq!(server.signal(libc::SIGINT), Some(0));
}
