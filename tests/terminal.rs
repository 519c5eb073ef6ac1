//! Prompts on a real terminal (a pty made by util-linux `script`): passwords are asked twice,
//! `delete` asks for confirmation, and `send-due` shows a progress bar.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::servers::start_smtp;
use common::{Backend, Env};

/// Runs `mailctl ARGS` on a pseudo-terminal, typing each answer after a pause.
fn on_terminal(env: &Env, who: &str, args: &str, answers: &[&str]) -> (i32, String) {
    let bin = assert_cmd::cargo::cargo_bin("mailctl");
    let cmd = env.command(who);
    let mut script = Command::new("script");
    script.args(["-qfec", &format!("{} {args}", bin.display()), "/dev/null"]);
    script.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    script
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = script
        .spawn()
        .expect("util-linux `script` is needed for terminal tests");
    let mut stdin = child.stdin.take().unwrap();
    for answer in answers {
        std::thread::sleep(Duration::from_millis(700));
        stdin.write_all(format!("{answer}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(Duration::from_millis(700));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn passwords_are_prompted_twice_and_delete_asks() {
    let env = Env::new(Backend::Sqlite);
    let (code, out) = on_terminal(
        &env,
        "admin",
        "csu --email admin@example.com",
        &["admin-pass-1", "admin-pass-1"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Password"), "{out}");
    assert!(!out.contains("admin-pass-1"), "password echoed: {out}");
    let (code, out) = on_terminal(
        &env,
        "admin",
        "login --email admin@example.com",
        &["admin-pass-1"],
    );
    assert_eq!(code, 0, "{out}");
    let admin = env.as_("admin");
    let id = admin.client("ivan@example.com").to_string();
    // Answer "no": nothing is deleted, exit 1 (not "invalid input"), and it says so.
    let (code, out) = on_terminal(&env, "admin", &format!("clients delete {id}"), &["n"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing deleted"), "{out}");
    admin.run(&["clients", "show", &id]).success();
    let (code, out) = on_terminal(&env, "admin", &format!("clients delete {id}"), &["y"]);
    assert_eq!(code, 0, "{out}");
    admin.run(&["clients", "show", &id]).expect_code(4);
    // Mismatched passwords are asked again, not accepted.
    let (code, out) = on_terminal(
        &env,
        "admin",
        "create-user --email ann@example.com",
        &["ann-pass-11", "ann-pass-22", "ann-pass-11", "ann-pass-11"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("do not match"), "{out}");
}

/// `send-due` draws its progress bar on a terminal only; piped, stderr is the one-line summary.
#[test]
fn send_due_progress_bar_on_a_terminal_only() {
    let mut env = Env::new(Backend::Sqlite);
    let server = start_smtp();
    // One connection and 0.3 s per letter: the bar (redrawn at most 20 times a second) is
    // drawn several times before the run ends and clears it.
    server.set_rules(r#"{"delay_seconds": 0.3}"#);
    env.set("MAILCTL_SMTP_URL", &server.url());
    let ann = env.account("user", "ann");
    let mailing = |tag: &str| {
        let ids: Vec<i64> = (0..5)
            .map(|i| ann.client(&format!("{tag}{i}@example.com")))
            .collect();
        ann.mailing(ann.message(tag), &ids);
    };

    mailing("tty");
    let (code, out) = on_terminal(&env, "ann", "send-due --concurrency 1", &[]);
    assert_eq!(code, 0, "{out}");
    // The bar's own text ("{pos}/{len} letters"), which the summary line does not have.
    assert!(
        out.contains("/5 letters"),
        "no progress bar on the terminal:\n{out}"
    );
    assert!(out.contains("sent 5,"), "{out}");

    mailing("pipe");
    let run = ann.run(&["send-due", "--concurrency", "1"]);
    run.success();
    let stderr = run.stderr();
    assert_eq!(
        stderr.lines().count(),
        1,
        "more than the summary:\n{stderr}"
    );
    assert!(stderr.starts_with("sent 5,"), "{stderr}");
    assert!(
        !stderr.contains("/5 letters") && !stderr.contains('\r') && !stderr.contains('\x1b'),
        "progress bar drawn into a pipe: {stderr:?}"
    );
    assert_eq!(server.received_count(), 10);
}
