//! Headless-browser test of the confirm and reset pages: Debian's chromium, driven through
//! chromedriver by tests/browser/confirm_reset.py (standard-library Python, nothing downloaded).
//!
//! Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them); without them the
//! test fails with the script's message, it does not skip.
//! Set MAILCTL_BROWSER_SCREENSHOTS=DIR to keep PNGs of the pages.

mod common;
mod support;

use std::process::Command;

use common::{Backend, Env, PASSWORD};
use support::{last_link, start_listener};

#[test]
fn confirm_and_reset_pages_in_a_real_browser() {
    let mut env = Env::new(Backend::Sqlite);
    let server = start_listener(&mut env);
    env.account("user", "ann");
    let anon = env.as_("anon");
    anon.stdin(
        &["register", "--email", "web@example.com", "--password-stdin"],
        PASSWORD,
    )
    .success();
    anon.run(&["password", "reset", "--email", "ann@example.com"])
        .success();
    let confirm = last_link(&env, "web@example.com", "confirm");
    let reset = last_link(&env, "ann@example.com", "reset");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/confirm_reset.py"
    );
    let mut cmd = Command::new("python3");
    cmd.args([
        script,
        "--base",
        &format!("http://127.0.0.1:{}", server.port),
    ])
    .args([
        "--confirm",
        &confirm,
        "--password",
        PASSWORD,
        "--reset",
        &reset,
    ]);
    if let Ok(dir) = std::env::var("MAILCTL_BROWSER_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        cmd.args(["--screenshots", &dir]);
    }
    let out = cmd.output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("2 passed, 0 failed"),
        "browser script failed:\n{stdout}\n{}\nlistener log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    // What the browser did really happened.
    env.as_("web")
        .stdin(
            &["login", "--email", "web@example.com", "--password-stdin"],
            PASSWORD,
        )
        .success();
    env.as_("ann")
        .stdin(
            &["login", "--email", "ann@example.com", "--password-stdin"],
            "browser-pass-1",
        )
        .success();
}
