//! Passwords in the database, SMTP and Redis URLs never reach stdout or stderr: not in a
//! failing command's message, not in `doctor`'s rows (issue 14, point 5). And every setting
//! is read once, with a bad value named (issue 13, point 3).

mod common;

use common::{Backend, Env, servers};

/// The strings a password of the URLs below may show as; none may be printed.
const SECRETS: &[&str] = &["hunter2", "p%2Fa%40ss", "p/a@ss", "pw-smtp", "pw-redis"];

fn assert_no_secret(run: &common::Run) {
    let all = format!("{}\n{}", run.stdout(), run.stderr());
    for secret in SECRETS {
        assert!(
            !all.contains(secret),
            "`mailctl {}` printed {secret:?}:\n{all}",
            run.args
        );
    }
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

/// Database URLs that cannot be used, with a password in every place one can hide.
fn broken_database_urls(env: &Env) -> Vec<(String, i32)> {
    let dead = servers::free_port();
    let not_a_dir = env.dir.path().join("a-file");
    std::fs::write(&not_a_dir, "").unwrap();
    vec![
        // Escaped `/` and `@` in the password, and a password parameter; nothing listens.
        (
            format!("postgres://u:p%2Fa%40ss@127.0.0.1:{dead}/x?password=hunter2"),
            1,
        ),
        // Unescaped: the url crate cannot read it, so the driver refuses it (exit 5).
        (
            format!("postgres://u:p/a@ss@127.0.0.1:{dead}/x?password=hunter2"),
            5,
        ),
        // A SQLite file that cannot be created (its directory is a file).
        (
            format!("sqlite://{}/x.db?password=hunter2", not_a_dir.display()),
            1,
        ),
    ]
}

#[test]
fn a_failing_command_never_prints_the_database_password() {
    let mut env = Env::new(Backend::Sqlite);
    for (url, code) in broken_database_urls(&env) {
        env.db_url = url.clone();
        for args in [&["migrate"][..], &["doctor", "--format", "json"][..]] {
            let run = env.as_("x").run(args);
            run.expect_code(if args[0] == "doctor" { 1 } else { code });
            assert_no_secret(&run);
        }
        // The same URL as a flag.
        env.db_url = "sqlite:///unused".into();
        let run = env.as_("x").run(&["migrate", "--database-url", &url]);
        run.expect_code(code);
        assert_no_secret(&run);
    }
}

/// Doctor on a working database whose URL carries `?password=`, with an SMTP server and a
/// Redis (both real) reached through URLs with passwords: every row names its URL, redacted.
fn doctor_shows_urls_without_passwords(env: &mut Env) {
    // The SMTP server checks the password: `%2F%40` must arrive decoded as `/@`.
    let smtp = servers::start_smtp_with_auth("user", "pw-smtp/@x");
    env.admin();
    env.db_url = format!("{}?password=hunter2", env.db_url);
    let port = smtp.port;
    env.set(
        "MAILCTL_SMTP_URL",
        &format!("smtp://user:pw-smtp%2F%40x@127.0.0.1:{port}?tls=none&token=hunter2"),
    );
    // The test Redis has no password: AUTH fails, and the row must not echo the password.
    let redis = servers::redis_url().replace("redis://", "redis://:pw-redis@");
    env.set("MAILCTL_REDIS_URL", &format!("{redis}?password=hunter2"));
    let run = env.as_("x").run(&["doctor", "--format", "json"]);
    assert_no_secret(&run);
    let report = run.json();
    let database = check(&report, "database");
    assert_eq!(database["status"], "ok", "{report}");
    assert!(
        database["detail"]
            .as_str()
            .unwrap()
            .ends_with("?password=***"),
        "{report}"
    );
    let smtp_row = check(&report, "smtp");
    assert!(
        smtp_row["detail"]
            .as_str()
            .unwrap()
            .starts_with("smtp://user:***@127.0.0.1:"),
        "{report}"
    );
    assert_ne!(smtp_row["status"], "FAIL", "{report}");
    let redis_row = check(&report, "redis");
    assert!(
        redis_row["detail"].as_str().unwrap().contains(":***@"),
        "{report}"
    );
    // The failing Redis check also makes the exit code 1; the output stays clean.
    run.expect_code(1);
}

on_both_backends_mut!(doctor_shows_urls_without_passwords);

#[test]
fn a_bad_smtp_url_is_named_without_its_password() {
    let mut env = Env::new(Backend::Sqlite);
    env.set(
        "MAILCTL_SMTP_URL",
        "smtp://user:p/a@ss@127.0.0.1:25?password=hunter2",
    );
    env.admin();
    let run = env.as_("admin").run(&["send-due"]);
    run.expect_code(5);
    assert_no_secret(&run);
    assert!(
        run.stderr().contains("MAILCTL_SMTP_URL"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_bad_setting_is_named_with_exit_5() {
    let env = Env::new(Backend::Sqlite);
    for (var, value) in [
        ("MAILCTL_SMTP_TIMEOUT", "abc"),
        ("MAILCTL_SMTP_TIMEOUT", "0"),
        ("MAILCTL_SEND_LEASE", "-1"),
        ("MAILCTL_RETRY_DELAY", "soon"),
        ("MAILCTL_BOUNCE_ADDRESS", "bounces at example"),
    ] {
        let mut cmd = env.command("x");
        cmd.env(var, value).arg("whoami");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{var}={value}: {stderr}");
        assert!(
            stderr.starts_with(&format!("mailctl: error: {var} (--")),
            "{var}={value}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // The flag is checked the same way, and named by the variable too.
    for args in [["--send-lease", "0"], ["--retry-delay", "-1"]] {
        let run = env.as_("x").run(&["whoami", args[0], args[1]]);
        run.expect_code(5);
        assert!(
            run.stderr().contains(&format!("({})", args[0])),
            "{}",
            run.stderr()
        );
    }
    // Good values pass (decimals allowed; a zero retry delay means "at once").
    let mut cmd = env.command("x");
    cmd.env("MAILCTL_SMTP_TIMEOUT", "2.5")
        .env("MAILCTL_RETRY_DELAY", "0")
        .env("MAILCTL_BOUNCE_ADDRESS", "bounces@example.com")
        .arg("whoami");
    let out = cmd.output().unwrap();
    // Not logged in (3), which is past the settings.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
