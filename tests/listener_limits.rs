//! `mailctl serve` against hostile clients (issue 14, point 1), each case against the real
//! binary over raw TCP on 127.0.0.1: idle and stalled connections, oversized heads, a process
//! out of descriptors, SIGTERM while clients hang on. Every loop is bounded in count and time.

mod common;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Backend, Env};
use support::{Listener, start_listener, start_listener_with};

fn connect(server: &Listener) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to listener");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A client that stops halfway: even ones stop in the headers, odd ones promise a 16000-byte
/// form to `path` (a page that reads its body), send one byte, then nothing.
fn stalled(server: &Listener, path: &str, i: usize) -> TcpStream {
    let mut s = connect(server);
    let head = if i.is_multiple_of(2) {
        "GET /static/style.css HTTP/1.1\r\nHost: x\r\n".to_string()
    } else {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 16000\r\n\r\np"
        )
    };
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// A live reset link, so that a POST to it reads its body.
fn reset_link(env: &Env) -> String {
    env.account("user", "ann");
    env.as_("anon")
        .run(&["password", "reset", "--email", "ann@example.com"])
        .success();
    support::last_link(env, "ann@example.com", "reset")
}

/// The time a plain request takes to be answered (200 for the stylesheet).
fn timed_get(server: &Listener) -> Duration {
    let started = Instant::now();
    server.get("/static/style.css").expect(200);
    started.elapsed()
}

/// Reads until the server closes the connection; returns how long that took and what came.
fn until_closed(mut s: TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (started.elapsed(), out)
}

#[test]
fn idle_and_stalled_clients_neither_block_others_nor_stay() {
    let mut env = Env::new(Backend::Sqlite);
    let mut server = start_listener(&mut env);
    let path = reset_link(&env);
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(&server)).collect();
    let stalled: Vec<TcpStream> = (0..20).map(|i| stalled(&server, &path, i)).collect();
    // Others are answered at once, again and again.
    for _ in 0..5 {
        let took = timed_get(&server);
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    }
    // A client that stalls is dropped within 10 s (measured from now, so with some margin).
    let started = Instant::now();
    for s in stalled.into_iter().take(4) {
        let (_, out) = until_closed(s, Duration::from_secs(20));
        assert!(
            started.elapsed() < Duration::from_secs(11),
            "{:?}",
            started.elapsed()
        );
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains(" 200 "), "{text}");
    }
    // The stalled form changed nothing: the link still works.
    server.get(&path).expect(200);
    let (_, out) = until_closed(idle.into_iter().next().unwrap(), Duration::from_secs(20));
    assert!(out.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(11),
        "{:?}",
        started.elapsed()
    );
    assert!(server.is_running());
    assert!(timed_get(&server) < Duration::from_secs(1));
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn sigterm_ends_it_within_5_s_whatever_clients_do() {
    let mut env = Env::new(Backend::Sqlite);
    let mut server = start_listener(&mut env);
    let path = reset_link(&env);
    let _idle: Vec<TcpStream> = (0..50).map(|_| connect(&server)).collect();
    let _stalled: Vec<TcpStream> = (0..20).map(|i| stalled(&server, &path, i)).collect();
    // One more, halfway through its headers.
    let mut half = connect(&server);
    half.write_all(b"GET /static/style.css HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    timed_get(&server);
    let started = Instant::now();
    assert_eq!(server.terminate(), Some(0));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn oversized_heads_are_refused_without_reading_the_rest() {
    let mut env = Env::new(Backend::Sqlite);
    let server = start_listener(&mut env);

    // Just under the limits: served (404 for an unknown page, not 414 or 431).
    let target = format!("/{}", "a".repeat(8 * 1024 - 1));
    server.get(&target).expect(404);
    let header = "h".repeat(15 * 1024);
    server
        .request("GET", "/static/style.css", &[("X-Big", &header)], b"")
        .expect(200);
    // Just over: 414 and 431, with the page's headers.
    let target = format!("/{}", "a".repeat(8 * 1024 + 1));
    server.get(&target).expect(414).assert_no_store();
    let header = "h".repeat(16 * 1024 + 1);
    server
        .request("GET", "/static/style.css", &[("X-Big", &header)], b"")
        .expect(431)
        .assert_no_store();
    let many: Vec<(String, String)> = (0..600)
        .map(|i| (format!("X-H{i}"), "v".repeat(20)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    server
        .request("GET", "/static/style.css", &many, b"")
        .expect(431);

    // Huge: a 16 MB target and four 32 MB headers at once. Each is answered while the client
    // is still sending (the server stopped reading), and the process stays small.
    let huge_target = {
        let mut r = b"GET /".to_vec();
        r.extend(std::iter::repeat_n(b'a', 16 << 20));
        r.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        r
    };
    let (status, unsent) = send_while_reading(&server, &huge_target);
    assert_eq!(status, 414);
    assert!(unsent, "the whole 16 MB target was read");
    let huge_header = {
        let mut r = b"GET /static/style.css HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        r.extend(std::iter::repeat_n(b'h', 32 << 20));
        r.extend_from_slice(b"\r\n\r\n");
        r
    };
    let results: Vec<(u16, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| send_while_reading(&server, &huge_header)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, unsent) in &results {
        assert_eq!(*status, 431, "{results:?}");
        assert!(*unsent, "a whole 32 MB header was read: {results:?}");
    }
    let peak = server.peak_memory();
    eprintln!("peak memory after the huge heads: {} KiB", peak / 1024);
    assert!(peak < 128 << 20, "peak memory {} MiB", peak >> 20);
    assert!(timed_get(&server) < Duration::from_secs(1));
}

/// Writes `bytes` from one thread while reading the answer on another; returns the status and
/// whether the server closed before the client could send everything.
fn send_while_reading(server: &Listener, bytes: &[u8]) -> (u16, bool) {
    let s = connect(server);
    let mut writer = s.try_clone().unwrap();
    std::thread::scope(|scope| {
        let w = scope.spawn(move || writer.write_all(bytes).is_err());
        let (_, out) = until_closed(s, Duration::from_secs(30));
        let unsent = w.join().unwrap();
        let text = String::from_utf8_lossy(&out);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, unsent)
    })
}

/// With `ulimit -n 64` and 120 clients holding connections, the listener is not deaf
/// afterwards: it answers (or, at worst, it exited non-zero for its supervisor to restart it).
#[test]
fn running_out_of_descriptors_is_survived() {
    let mut env = Env::new(Backend::Sqlite);
    let mut server = start_listener_with(&mut env, |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    timed_get(&server);
    let flood: Vec<TcpStream> = (0..120).map(|_| connect(&server)).collect();
    let mut stalled_ones: Vec<TcpStream> = (0..20)
        .map(|i| stalled(&server, "/static/style.css", i * 2))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(flood);
    stalled_ones.clear();
    // Within a few seconds it answers again, and keeps answering.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut answered = 0;
    while answered < 3 {
        if !server.is_running() {
            let code = server.terminate();
            assert_ne!(code, Some(0), "exited 0 while out of descriptors");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deaf after running out of descriptors:\n{}",
            server.log()
        );
        let r = server.get("/static/style.css");
        if r.status == 200 {
            answered += 1;
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(server.terminate(), Some(0));
}
