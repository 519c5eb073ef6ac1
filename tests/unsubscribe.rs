//! The whole unsubscribe path as a recipient walks it: a letter from `send-due` carries
//! List-Unsubscribe headers, the link's page changes nothing on GET, the RFC 8058 one-click
//! POST unsubscribes, and the next mailing of that owner skips the address.

mod common;
mod support;

use common::{Backend, Env};
use support::{outbox_letters, start_listener};

/// The URL path in the List-Unsubscribe header of a letter (headers may be folded).
fn unsubscribe_path(letter: &str) -> String {
    let head = letter.split("\n\n").next().unwrap().replace("\n ", " ");
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("list-unsubscribe:"))
        .unwrap_or_else(|| panic!("no List-Unsubscribe in:\n{head}"));
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("List-Unsubscribe-Post: List-Unsubscribe=One-Click")),
        "no one-click header in:\n{head}"
    );
    let url = line
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .expect("<url>");
    let path = &url[url.find("/unsubscribe/").expect("unsubscribe path")..];
    path.to_string()
}

fn walk(backend: Backend) {
    let mut env = Env::new(backend);
    let server = start_listener(&mut env);
    let ann = env.account("user", "ann");
    let ivan = ann.client("ivan@example.com");
    let olga = ann.client("olga@example.com");
    let first = ann.message("News");
    ann.mailing(first, &[ivan, olga]);
    ann.json(&["send-due"]);
    let letters = outbox_letters(&env.outbox(), "ivan@example.com");
    assert_eq!(letters.len(), 1);
    let path = unsubscribe_path(&letters[0]);

    // A mail scanner's GET shows a button and changes nothing.
    let page = server.get(&path);
    page.expect(200);
    assert!(page.body.contains("<form"), "{}", page.body);
    let count =
        |env: &Env| env.count("SELECT COUNT(*) FROM suppressions WHERE reason = 'unsubscribed'");
    assert_eq!(count(&env), 0);

    // A forged link (another client's id with this signature) is refused.
    let forged = path.replacen(&format!(".{ivan}."), &format!(".{olga}."), 1);
    assert_ne!(forged, path);
    server
        .post(&forged, "List-Unsubscribe=One-Click")
        .expect(404);
    assert_eq!(count(&env), 0);

    // The one-click POST unsubscribes, and is idempotent.
    server.post(&path, "List-Unsubscribe=One-Click").expect(200);
    server.post(&path, "List-Unsubscribe=One-Click").expect(200);
    assert_eq!(count(&env), 1);

    // The next mailing of the same owner skips ivan and still reaches olga.
    let second = ann.message("More news");
    ann.mailing(second, &[ivan, olga]);
    ann.json(&["send-due"]);
    assert_eq!(outbox_letters(&env.outbox(), "ivan@example.com").len(), 1);
    assert_eq!(outbox_letters(&env.outbox(), "olga@example.com").len(), 2);

    // Another owner's mailing to the same address is not affected.
    let bob = env.account("user", "bob");
    let bobs_ivan = bob.client("ivan@example.com");
    let bobs = bob.message("Bob's news");
    bob.mailing(bobs, &[bobs_ivan]);
    bob.json(&["send-due"]);
    assert_eq!(outbox_letters(&env.outbox(), "ivan@example.com").len(), 2);
}

#[test]
fn unsubscribe_round_trip_sqlite() {
    walk(Backend::Sqlite);
}

#[test]
fn unsubscribe_round_trip_postgres() {
    walk(Backend::Postgres);
}
