//! Registration, confirmation, password reset and login throttling, driven as a person would:
//! the real binary, letters read from the outbox (or a real SMTP server), links opened over
//! real HTTP on 127.0.0.1 against `mailctl serve`.

mod common;
mod support;

use common::{Backend, Env, PASSWORD, servers};
use support::{Listener, last_link, outbox_letters, sql, sql_count, start_listener};

on_both_backends_mut!(
    register_confirm_login_as_a_person,
    registering_an_existing_address_reveals_nothing,
    password_reset_round_trip,
    expired_and_foreign_tokens_are_refused,
    login_is_throttled_in_the_database,
    a_link_works_once_under_concurrent_posts,
);

fn register(env: &Env, email: &str, password: &str) -> common::Run {
    env.as_("anon").stdin(
        &["register", "--email", email, "--password-stdin"],
        password,
    )
}

fn login(env: &Env, who: &str, email: &str, password: &str) -> common::Run {
    env.as_(who)
        .stdin(&["login", "--email", email, "--password-stdin"], password)
}

fn confirmed(env: &Env, email: &str) -> bool {
    let users = env.admin().json(&["users", "list"]);
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email)
        .unwrap_or_else(|| panic!("{email} not in users list: {users}"))["email_confirmed"]
        .as_bool()
        .unwrap()
}

fn register_confirm_login_as_a_person(env: &mut Env) {
    let server: Listener = start_listener(env);
    let email = "newbie@example.com";
    let reg = register(env, email, PASSWORD);
    reg.success();
    assert!(
        reg.stdout().is_empty(),
        "register prints no record: {}",
        reg.stdout()
    );

    // Not confirmed yet: login refused with a clear message.
    let refused = login(env, "newbie", email, PASSWORD);
    refused.expect_code(3);
    assert!(
        refused.stderr().contains("not confirmed"),
        "{}",
        refused.stderr()
    );

    // The letter carries a link to the listener.
    let letters = outbox_letters(&env.outbox(), email);
    assert_eq!(letters.len(), 1, "one confirmation letter");
    assert!(letters[0].contains(&format!("http://127.0.0.1:{}/confirm/", server.port)));
    let path = last_link(env, email, "confirm");
    let token = path.rsplit('/').next().unwrap();
    assert_eq!(token.len(), 43, "256-bit token: {path}");
    // Only the hash is stored.
    assert_eq!(
        sql_count(
            env,
            &format!("SELECT COUNT(*) FROM account_tokens WHERE token_hash = '{token}'")
        ),
        0
    );

    // A GET (what a mail scanner does) shows the form and changes nothing, however often.
    for _ in 0..2 {
        let page = server.get(&path);
        page.expect(200).assert_no_store();
        assert!(
            page.body.contains("<form method=\"post\">"),
            "{}",
            page.body
        );
        assert!(page.body.contains("<button"), "{}", page.body);
        assert!(page.body.contains("name=\"password\""), "{}", page.body);
        assert!(page.body.contains(email));
    }
    assert!(!confirmed(env, email));
    login(env, "newbie", email, PASSWORD).expect_code(3);

    // The button confirms only with the password chosen at registration.
    for body in ["", "password=", "password=not-the-password"] {
        let wrong = server.post(&path, body);
        wrong.expect(400).assert_no_store();
        assert!(wrong.body.contains("not the password"), "{}", wrong.body);
    }
    assert!(!confirmed(env, email));
    let done = server.post(&path, &format!("password={PASSWORD}"));
    done.expect(200).assert_no_store();
    assert!(done.body.contains("confirmed"), "{}", done.body);
    assert!(confirmed(env, email));
    login(env, "newbie", email, PASSWORD).success();
    let me = env.as_("newbie").json(&["whoami"]);
    assert_eq!(me["email"], email);
    assert_eq!(me["role"], "user");

    // Single use: the same link again is gone (410), GET and POST alike.
    server
        .post(&path, &format!("password={PASSWORD}"))
        .expect(410)
        .assert_no_store();
    let again = server.get(&path);
    again.expect(410);
    assert!(again.body.contains("already been used"), "{}", again.body);
}

fn registering_an_existing_address_reveals_nothing(env: &mut Env) {
    let server = start_listener(env);
    env.account("user", "ann"); // ann@example.com exists and is confirmed
    let fresh = register(env, "fresh@example.com", PASSWORD);
    let taken = register(env, "ANN@example.com", "another-password-1");
    fresh.success();
    taken.success();
    // The same reply, apart from the address itself.
    assert_eq!(
        fresh.stderr().replace("fresh@example.com", "X"),
        taken.stderr().replace("ANN@example.com", "X")
    );
    assert_eq!(fresh.stdout(), taken.stdout());
    // The owner of ann's mailbox learns it instead, and nothing changed for ann.
    let letters = outbox_letters(&env.outbox(), "ann@example.com");
    assert_eq!(letters.len(), 1);
    assert!(letters[0].contains("already has one"), "{}", letters[0]);
    assert!(!letters[0].contains("/confirm/"));
    login(env, "ann2", "ann@example.com", PASSWORD).success();
    login(env, "ann3", "ann@example.com", "another-password-1").expect_code(3);
    // Bad input is still rejected (exit 5), and a password too short too.
    register(env, "not-an-email", PASSWORD).expect_code(5);
    register(env, "short@example.com", "short").expect_code(5);

    // Registering an unconfirmed address again sends another link, bound to the password given
    // then; the older link still confirms only with the first password. Once one is used,
    // every other is spent.
    let first = last_link(env, "fresh@example.com", "confirm");
    register(env, "fresh@example.com", "second-password-2").success();
    let second = last_link(env, "fresh@example.com", "confirm");
    assert_ne!(first, second);
    server
        .post(&first, "password=second-password-2")
        .expect(400);
    server
        .post(&second, &format!("password={PASSWORD}"))
        .expect(400);
    server
        .post(&second, "password=second-password-2")
        .expect(200);
    server
        .post(&first, &format!("password={PASSWORD}"))
        .expect(410);
    login(env, "fresh", "fresh@example.com", PASSWORD).expect_code(3);
    login(env, "fresh", "fresh@example.com", "second-password-2").success();
}

fn password_reset_round_trip(env: &mut Env) {
    let server = start_listener(env);
    let ann = env.account("user", "ann");
    let other = env.as_("ann-laptop");
    other.login("ann@example.com");

    // The same reply whether or not the account exists; a letter only when it does.
    let known = env
        .as_("anon")
        .run(&["password", "reset", "--email", "ann@example.com"]);
    let unknown = env
        .as_("anon")
        .run(&["password", "reset", "--email", "nobody@example.com"]);
    known.success();
    unknown.success();
    assert_eq!(
        known.stderr().replace("ann@example.com", "X"),
        unknown.stderr().replace("nobody@example.com", "X")
    );
    assert!(outbox_letters(&env.outbox(), "nobody@example.com").is_empty());
    let path = last_link(env, "ann@example.com", "reset");

    let form = server.get(&path);
    form.expect(200).assert_no_store();
    assert!(form.body.contains("name=\"password\"") && form.body.contains("name=\"password2\""));

    // Mismatch and too short: the form again with the reason (400); the token survives.
    let mismatch = server.post(&path, "password=new-password-1&password2=new-password-2");
    mismatch.expect(400).assert_no_store();
    assert!(mismatch.body.contains("differ"), "{}", mismatch.body);
    let short = server.post(&path, "password=short&password2=short");
    short.expect(400);
    assert!(short.body.contains("at least 8"), "{}", short.body);
    server.post(&path, "password=only-one").expect(400);
    ann.run(&["whoami"]).success();

    // The real thing: new password, every session ended, token spent.
    let done = server.post(&path, "password=new+password%21&password2=new+password%21");
    done.expect(200).assert_no_store();
    assert!(done.body.contains("changed"), "{}", done.body);
    ann.run(&["whoami"]).expect_code(3);
    other.run(&["whoami"]).expect_code(3);
    login(env, "ann", "ann@example.com", PASSWORD).expect_code(3);
    login(env, "ann", "ann@example.com", "new password!").success();
    server
        .post(&path, "password=x-password-9&password2=x-password-9")
        .expect(410);
    server.get(&path).expect(410);

    // `password change`: old then new, on standard input.
    ann.stdin(
        &["password", "change", "--password-stdin"],
        "wrong-old-pass\nnewer-password-3",
    )
    .expect_code(3);
    ann.stdin(
        &["password", "change", "--password-stdin"],
        "new password!\nshort",
    )
    .expect_code(5);
    login(env, "ann-laptop", "ann@example.com", "new password!").success();
    ann.stdin(
        &["password", "change", "--password-stdin"],
        "new password!\nnewer-password-3",
    )
    .success();
    ann.run(&["whoami"]).success(); // this terminal keeps a fresh session
    other.run(&["whoami"]).expect_code(3); // every other one has ended
    login(env, "ann", "ann@example.com", "newer-password-3").success();
}

fn expired_and_foreign_tokens_are_refused(env: &mut Env) {
    let server = start_listener(env);
    env.account("user", "ann");
    register(env, "late@example.com", PASSWORD).success();
    env.as_("anon")
        .run(&["password", "reset", "--email", "ann@example.com"])
        .success();
    let confirm = last_link(env, "late@example.com", "confirm");
    let reset = last_link(env, "ann@example.com", "reset");

    // A token of one kind does not work as the other.
    let swapped = confirm.replace("/confirm/", "/reset/");
    server.get(&swapped).expect(404).assert_no_store();
    server
        .post(&reset.replace("/reset/", "/confirm/"), "password=x")
        .expect(404);

    // Expired: a plain page, 410, and nothing happens.
    assert_eq!(
        sql(
            env,
            "UPDATE account_tokens SET expires_at = '2000-01-01T00:00:00+00:00'"
        ),
        2
    );
    let page = server.get(&confirm);
    page.expect(410).assert_no_store();
    assert!(page.body.contains("expired"), "{}", page.body);
    server
        .post(&confirm, &format!("password={PASSWORD}"))
        .expect(410);
    server
        .post(&reset, "password=new-password-1&password2=new-password-1")
        .expect(410);
    assert!(!confirmed(env, "late@example.com"));
    login(env, "ann", "ann@example.com", PASSWORD).success();

    // Unknown, malformed, tampered: 404, never a trace.
    let mut tampered = confirm.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for path in [
        tampered.as_str(),
        "/confirm/short",
        "/reset/x",
        "/confirm/..%2F..%2Fetc",
    ] {
        let r = server.get(path);
        r.expect(404).assert_safe_headers();
        assert!(!r.body.to_lowercase().contains("panick"), "{}", r.body);
    }
}

fn login_is_throttled_in_the_database(env: &mut Env) {
    env.account("user", "ann");
    env.account("user", "bob");
    for _ in 0..5 {
        let r = login(env, "ann", "ann@example.com", "wrong-password");
        r.expect_code(3);
        assert!(
            r.stderr().contains("wrong email or password"),
            "{}",
            r.stderr()
        );
    }
    // Now even the right password is refused, for a while.
    let refused = login(env, "ann", "ann@example.com", PASSWORD);
    refused.expect_code(3);
    assert!(
        refused.stderr().contains("too many failed logins"),
        "{}",
        refused.stderr()
    );
    // Another account is not affected; the same for an address that has no account.
    login(env, "bob", "bob@example.com", PASSWORD).success();
    for _ in 0..5 {
        login(env, "x", "ghost@example.com", "wrong-password").expect_code(3);
    }
    assert!(
        login(env, "x", "ghost@example.com", "wrong-password")
            .stderr()
            .contains("too many failed logins")
    );
    // When the failures are older than 15 minutes, logging in works again and clears them.
    sql(
        env,
        "UPDATE login_throttle SET window_start = '2000-01-01T00:00:00+00:00'",
    );
    login(env, "ann", "ann@example.com", PASSWORD).success();
    assert_eq!(
        sql_count(
            env,
            "SELECT COUNT(*) FROM login_throttle WHERE email_key = 'ann@example.com'"
        ),
        0
    );
}

/// With Redis configured the failures live there (none in the database); when Redis dies
/// the count falls back to the database and logins keep working.
#[test]
fn login_is_throttled_in_redis() {
    let mut redis = servers::start_private_redis();
    let mut env = Env::new(Backend::Sqlite);
    env.account("user", "ann");
    env.set("MAILCTL_REDIS_URL", &redis.url());
    for _ in 0..5 {
        login(&env, "ann", "ann@example.com", "wrong-password").expect_code(3);
    }
    assert_eq!(sql_count(&env, "SELECT COUNT(*) FROM login_throttle"), 0);
    let refused = login(&env, "ann", "ann@example.com", PASSWORD);
    refused.expect_code(3);
    assert!(
        refused.stderr().contains("too many failed logins"),
        "{}",
        refused.stderr()
    );
    // A fresh Redis has forgotten; with Redis down the database counts instead.
    redis.kill();
    let r = login(&env, "ann", "ann@example.com", PASSWORD);
    r.success();
    assert!(r.stderr().contains("warning"), "{}", r.stderr());
    assert!(
        r.stderr()
            .contains("counting failed logins in the database"),
        "{}",
        r.stderr()
    );
    login(&env, "ann", "ann@example.com", "wrong-password").expect_code(3);
    assert_eq!(
        sql_count(&env, "SELECT COALESCE(SUM(tries), 0) FROM login_throttle"),
        1
    );
}

/// The whole path with a real SMTP server instead of the outbox.
#[test]
fn register_through_smtp_then_confirm_and_log_in() {
    let smtp = servers::start_smtp();
    let mut env = Env::new(Backend::Sqlite);
    env.set("MAILCTL_SMTP_URL", &smtp.url());
    let server = start_listener(&mut env);
    register(&env, "smtp-person@example.com", PASSWORD).success();
    let letters = smtp.wait_for_messages(1, std::time::Duration::from_secs(10));
    let letter = support::letter_text(&letters[0]);
    assert!(letter.contains("smtp-person@example.com"));
    let path = support::link_path(&letter, "confirm").expect("link in the letter");
    assert!(
        env.outbox().read_dir().is_err(),
        "nothing in the outbox with SMTP configured"
    );
    server.get(&path).expect(200);
    login(&env, "p", "smtp-person@example.com", PASSWORD).expect_code(3);
    server
        .post(&path, &format!("password={PASSWORD}"))
        .expect(200);
    login(&env, "p", "smtp-person@example.com", PASSWORD).success();
}

fn a_link_works_once_under_concurrent_posts(env: &mut Env) {
    let server = start_listener(env);
    env.account("user", "ann");
    env.as_("anon")
        .run(&["password", "reset", "--email", "ann@example.com"])
        .success();
    let path = last_link(env, "ann@example.com", "reset");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (server, path) = (&server, &path);
                s.spawn(move || {
                    server
                        .post(
                            path,
                            &format!("password=racer-pass-{i}&password2=racer-pass-{i}"),
                        )
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 410),
        "{statuses:?}"
    );
    let winners = (0..4)
        .filter(|i| login(env, "ann", "ann@example.com", &format!("racer-pass-{i}")).code() == 0)
        .count();
    assert_eq!(winners, 1);
}
