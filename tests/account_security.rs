//! The accounts against an attacker (issue 14, points 2, 3 and 7), against the real binary on
//! both backends: registration take-over, parallel password guessing, locks and their
//! release, and a password reset that reveals nothing and loses no letter.

mod common;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Backend, Env, PASSWORD, servers};
use support::{outbox_letters, sql_count, start_listener};

on_both_backends_mut!(
    a_second_registration_cannot_take_the_address_over,
    a_pre_registration_cannot_take_the_address_over,
    password_reset_reveals_nothing_and_loses_nothing,
);
on_both_backends!(
    parallel_wrong_logins_check_at_most_five_passwords,
    locks_are_lifted_by_an_administrator_only,
    a_blocked_account_does_not_tell_a_right_password,
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

/// Every confirmation link in the victim's mailbox, oldest first.
fn confirm_links(env: &Env, to: &str) -> Vec<String> {
    outbox_letters(&env.outbox(), to)
        .iter()
        .filter_map(|l| support::link_path(l, "confirm"))
        .collect()
}

/// The victim registers, then an attacker registers the same address in another case with
/// their own password. No link sets the attacker's password for a reader who does not type
/// it, and the victim's link still sets the victim's.
fn a_second_registration_cannot_take_the_address_over(env: &mut Env) {
    let server = start_listener(env);
    register(env, "victim@example.com", "victim-password-1").success();
    register(env, "Victim@Example.com", "attacker-password").success();
    let links = confirm_links(env, "victim@example.com");
    assert_eq!(links.len(), 2, "{links:?}");
    // The newest letter's link, opened by the victim with the victim's password: refused.
    server
        .post(&links[1], "password=victim-password-1")
        .expect(400);
    // The first letter's link confirms with the victim's password, and only with it.
    server
        .post(&links[0], "password=attacker-password")
        .expect(400);
    server
        .post(&links[0], "password=victim-password-1")
        .expect(200);
    // The attacker's link is spent with the address confirmed.
    server
        .post(&links[1], "password=attacker-password")
        .expect(410);
    login(env, "attacker", "victim@example.com", "attacker-password").expect_code(3);
    login(env, "victim", "VICTIM@example.com", "victim-password-1").success();
    assert_eq!(
        sql_count(env, "SELECT COUNT(*) FROM accounts WHERE email_confirmed"),
        1
    );
}

/// The attacker registers first; the victim registers later and opens the newest letter.
fn a_pre_registration_cannot_take_the_address_over(env: &mut Env) {
    let server = start_listener(env);
    register(env, "Victim@Example.com", "attacker-password").success();
    register(env, "victim@example.com", "victim-password-1").success();
    let links = confirm_links(env, "Victim@Example.com");
    assert_eq!(links.len(), 2, "{links:?}");
    // The attacker's link does not take the victim's password, nor confirm without one.
    for body in ["", "password=victim-password-1"] {
        server.post(&links[0], body).expect(400);
    }
    server
        .post(&links[1], "password=victim-password-1")
        .expect(200);
    login(env, "attacker", "victim@example.com", "attacker-password").expect_code(3);
    login(env, "victim", "victim@example.com", "victim-password-1").success();
    server
        .post(&links[0], "password=attacker-password")
        .expect(410);
    login(env, "attacker", "victim@example.com", "attacker-password").expect_code(3);
}

/// Runs `n` `mailctl login` processes at once with `password`; returns their stderr texts.
fn parallel_logins(env: &Env, email: &str, password: &str, n: usize) -> Vec<(i32, String)> {
    use std::io::Write;
    let mut children: Vec<_> = (0..n)
        .map(|i| {
            let mut cmd = env.process(&format!("racer-{i}"));
            cmd.args(["login", "--email", email, "--password-stdin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.spawn().expect("spawn mailctl login")
        })
        .collect();
    // All started: now give each its password, as close together as possible.
    for c in &mut children {
        let mut stdin = c.stdin.take().unwrap();
        let _ = writeln!(stdin, "{password}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    children
        .into_iter()
        .map(|c| {
            assert!(Instant::now() < deadline, "logins took over 120 s");
            let out = c.wait_with_output().expect("wait login");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

/// How many of the replies checked a password, and how many were refused unchecked.
fn tally(replies: &[(i32, String)]) -> (usize, usize) {
    let checked = replies
        .iter()
        .filter(|(_, e)| e.contains("wrong email or password"))
        .count();
    let refused = replies
        .iter()
        .filter(|(_, e)| e.contains("too many failed logins"))
        .count();
    for (code, err) in replies {
        assert_eq!(*code, 3, "{err}");
    }
    (checked, refused)
}

fn parallel_wrong_logins_check_at_most_five_passwords(env: &Env) {
    env.account("user", "ann");
    let replies = parallel_logins(env, "ann@example.com", "wrong-password", 60);
    let (checked, refused) = tally(&replies);
    assert!(
        (1..=5).contains(&checked),
        "{checked} passwords checked: {replies:?}"
    );
    assert_eq!(checked + refused, 60, "{replies:?}");
    // Locked: the right password is refused with the same words as a wrong one.
    let right = login(env, "ann", "ann@example.com", PASSWORD);
    let wrong = login(env, "ann", "ann@example.com", "wrong-password");
    right.expect_code(3);
    wrong.expect_code(3);
    assert!(right.stderr().contains("too many failed logins"));
    assert_eq!(right.stderr(), wrong.stderr());
}

/// The same with the tries counted in Redis (one Lua script per try).
#[test]
fn parallel_wrong_logins_check_at_most_five_passwords_with_redis() {
    let redis = servers::start_private_redis();
    let mut env = Env::new(Backend::Sqlite);
    env.account("user", "ann");
    env.set("MAILCTL_REDIS_URL", &redis.url());
    let replies = parallel_logins(&env, "ann@example.com", "wrong-password", 60);
    let (checked, refused) = tally(&replies);
    assert!(
        (1..=5).contains(&checked),
        "{checked} passwords checked: {replies:?}"
    );
    assert_eq!(checked + refused, 60, "{replies:?}");
    assert!(
        replies.iter().all(|(_, e)| !e.contains("warning")),
        "Redis was not used: {replies:?}"
    );
    assert_eq!(sql_count(&env, "SELECT COUNT(*) FROM login_throttle"), 0);
    login(&env, "ann", "ann@example.com", PASSWORD).expect_code(3);
    // The administrator's unlock clears Redis too.
    env.admin()
        .run(&["users", "unlock", "ann@example.com"])
        .success();
    login(&env, "ann", "ann@example.com", PASSWORD).success();
}

fn locks_are_lifted_by_an_administrator_only(env: &Env) {
    let admin = env.admin();
    let boss = env.account("manager", "boss");
    let bob = env.account("user", "bob");
    env.account("user", "ann");
    for _ in 0..5 {
        login(env, "ann", "ann@example.com", "wrong-password").expect_code(3);
    }
    login(env, "ann", "ann@example.com", PASSWORD).expect_code(3);
    // Only an administrator unlocks (exit 3 for the others); an unknown account is exit 4.
    boss.run(&["users", "unlock", "ann@example.com"])
        .expect_code(3);
    bob.run(&["users", "unlock", "ann@example.com"])
        .expect_code(3);
    env.as_("nobody")
        .run(&["users", "unlock", "ann@example.com"])
        .expect_code(3);
    admin
        .run(&["users", "unlock", "nobody@example.com"])
        .expect_code(4);
    login(env, "ann", "ann@example.com", PASSWORD).expect_code(3);
    let r = admin.run(&["users", "unlock", "ANN@example.com"]);
    r.success();
    assert!(
        r.stderr().contains("unlocked ann@example.com"),
        "{}",
        r.stderr()
    );
    login(env, "ann", "ann@example.com", PASSWORD).success();
    // Nothing to clear now, and that is fine too.
    admin.run(&["users", "unlock", "ann@example.com"]).success();
}

fn a_blocked_account_does_not_tell_a_right_password(env: &Env) {
    let admin = env.admin();
    env.account("user", "ann");
    admin.run(&["users", "block", "ann@example.com"]).success();
    let right = login(env, "ann", "ann@example.com", PASSWORD);
    let wrong = login(env, "ann", "ann@example.com", "wrong-password");
    let nobody = login(env, "ann", "nobody@example.com", "wrong-password");
    for r in [&right, &wrong, &nobody] {
        r.expect_code(3);
    }
    assert_eq!(right.stderr(), wrong.stderr());
    assert_eq!(
        wrong.stderr(),
        nobody
            .stderr()
            .replace("nobody@example.com", "ann@example.com")
    );
    assert!(right.stderr().contains("blocked"), "{}", right.stderr());
}

/// One `password reset`: its exit code, its stderr with the address replaced, its duration.
fn reset(env: &Env, email: &str) -> (i32, String, Duration) {
    let started = Instant::now();
    let r = env
        .as_("anon")
        .run(&["password", "reset", "--email", email]);
    let took = started.elapsed();
    (r.code(), r.stderr().replace(email, "X"), took)
}

/// The median duration of `n` resets of `email`, checking each reply is `(0, expected)`.
fn median_reset(env: &Env, email: &str, expected: &str, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let (code, text, took) = reset(env, email);
            assert_eq!((code, text.as_str()), (0, expected));
            took
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// Known and unknown addresses: same code, same words, about the same time, with the SMTP
/// server up and down; a letter that could not go is sent by the next send-due, or by serve.
fn password_reset_reveals_nothing_and_loses_nothing(env: &mut Env) {
    let mut smtp = servers::start_smtp();
    env.set("MAILCTL_SMTP_URL", &smtp.url());
    env.account("user", "ann");
    let (code, expected, _) = reset(env, "ann@example.com");
    assert_eq!(code, 0);
    for up in [true, false] {
        if !up {
            smtp.kill();
        }
        let known = median_reset(env, "ann@example.com", &expected, 5);
        let unknown = median_reset(env, "nobody@example.com", &expected, 5);
        let (a, b) = (known.as_secs_f64(), unknown.as_secs_f64());
        eprintln!(
            "reset with SMTP {}: known {a:.3} s, unknown {b:.3} s",
            if up { "up" } else { "down" }
        );
        let diff = (a - b).abs();
        assert!(
            diff <= 0.030 || diff <= 0.25 * a.min(b),
            "SMTP up: {up}: known {a:.3} s, unknown {b:.3} s"
        );
    }
    assert_eq!(smtp.received_count(), 6);
    // While the server was down, the letters were kept (one row per reset of ann); nothing
    // for the unknown address.
    assert_eq!(sql_count(env, "SELECT COUNT(*) FROM system_letters"), 5);

    // The relay is back; a minute later (a deferred letter waits 30 s before its next try)
    // cron runs send-due, which sends them first.
    let back = servers::start_smtp();
    env.set("MAILCTL_SMTP_URL", &back.url());
    env.sql("UPDATE system_letters SET next_try_at = created_at");
    env.as_("cron").run(&["send-due"]).success();
    let letters = back.wait_for_messages(5, Duration::from_secs(20));
    assert_eq!(letters.len(), 5);
    assert_eq!(sql_count(env, "SELECT COUNT(*) FROM system_letters"), 0);
    let texts: Vec<String> = letters.iter().map(|l| support::letter_text(l)).collect();
    assert!(
        texts.iter().all(|t| t.contains("ann@example.com")),
        "{texts:?}"
    );
    let reset_link = support::link_path(texts.last().unwrap(), "reset").expect("reset link");

    // A registration during an outage: the confirmation letter goes from a running serve.
    env.set("MAILCTL_SMTP_URL", &smtp.url());
    register(env, "late@example.com", PASSWORD).success();
    assert_eq!(sql_count(env, "SELECT COUNT(*) FROM system_letters"), 1);
    let again = servers::start_smtp();
    env.set("MAILCTL_SMTP_URL", &again.url());
    env.sql("UPDATE system_letters SET next_try_at = created_at");
    let serve = start_listener(env);
    let letters = again.wait_for_messages(1, Duration::from_secs(20));
    let text = support::letter_text(&letters[0]);
    let link = support::link_path(&text, "confirm").expect("confirm link");
    serve
        .post(&link, &format!("password={PASSWORD}"))
        .expect(200);
    login(env, "late", "late@example.com", PASSWORD).success();
    assert_eq!(sql_count(env, "SELECT COUNT(*) FROM system_letters"), 0);
    // The newest reset link sent after the outage works.
    serve
        .post(
            &reset_link,
            "password=after-outage-1&password2=after-outage-1",
        )
        .expect(200);
    login(env, "ann", "ann@example.com", "after-outage-1").success();
}
