//! `mailctl doctor` against real servers, and against missing ones.

mod common;

use common::{Backend, Env, servers};

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

fn doctor_with_everything_up(env: &Env) {
    let smtp = servers::start_smtp();
    env.admin(); // creates and migrates the database
    let mut cmd = env.command("x");
    cmd.env("MAILCTL_SMTP_URL", smtp.url())
        .env("MAILCTL_REDIS_URL", servers::redis_url())
        .args(["doctor", "--format", "json"]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check(&report, "database")["status"], "ok");
    assert_eq!(check(&report, "migrations")["status"], "ok");
    assert_eq!(check(&report, "redis")["status"], "ok", "{report}");
    let smtp_check = check(&report, "smtp");
    assert_ne!(smtp_check["status"], "FAIL", "{report}");
    assert!(
        smtp_check["detail"].as_str().unwrap().contains("EHLO ok"),
        "{report}"
    );
    // Nothing listens on the default base URL in tests: a warning, not a failure.
    assert_eq!(check(&report, "base-url")["status"], "warning");
}

on_both_backends!(doctor_with_everything_up);

#[test]
fn doctor_says_plainly_what_is_down() {
    let mut env = Env::new(Backend::Sqlite);
    env.admin(); // migrates
    let dead = servers::free_port();
    env.set(
        "MAILCTL_SMTP_URL",
        &format!("smtp://user:secret-pw@127.0.0.1:{dead}"),
    );
    env.set(
        "MAILCTL_REDIS_URL",
        &format!("redis://127.0.0.1:{}", servers::free_port()),
    );
    let run = env.as_("x").run(&["doctor", "--format", "json"]);
    run.expect_code(1);
    let report = run.json();
    assert_eq!(check(&report, "database")["status"], "ok");
    assert_eq!(check(&report, "migrations")["status"], "ok");
    assert_eq!(check(&report, "smtp")["status"], "FAIL");
    assert_eq!(check(&report, "redis")["status"], "FAIL");
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert!(!all.contains("secret-pw"), "password leaked: {all}");
    assert!(all.contains("user:***@"), "{all}");
}

#[test]
fn doctor_reports_pending_migrations_without_applying_them() {
    let env = Env::new(Backend::Sqlite);
    let report = env.as_("x").json(&["doctor"]);
    assert_eq!(
        check(&report, "migrations")["status"],
        "warning",
        "{report}"
    );
    // Still pending afterwards: doctor does not change the database.
    let again = env.as_("x").json(&["doctor"]);
    assert_eq!(check(&again, "migrations")["status"], "warning");
}
