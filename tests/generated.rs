//! completions/ and man/ are generated from the clap tree and committed; this fails when they
//! drift. Regenerate with `MAILCTL_REGENERATE=1 cargo test --test generated`.

use std::path::Path;

use assert_cmd::Command;

fn check(path: &Path, expected: &[u8], stale: &mut Vec<String>) {
    if std::env::var_os("MAILCTL_REGENERATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, expected).unwrap();
        return;
    }
    match std::fs::read(path) {
        Ok(actual) if actual == expected => {}
        _ => stale.push(path.display().to_string()),
    }
}

#[test]
fn completions_and_man_pages_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (file, shell) in mailctl::docs::COMPLETIONS {
        check(
            &root.join("completions").join(file),
            &mailctl::docs::completion(*shell),
            &mut stale,
        );
    }
    let pages = mailctl::docs::man_pages();
    for (file, text) in &pages {
        check(&root.join("man").join(file), text, &mut stale);
    }
    // No page left behind for a command that is gone.
    let names: Vec<&str> = pages.iter().map(|(f, _)| f.as_str()).collect();
    for entry in std::fs::read_dir(root.join("man")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !names.contains(&name.as_str()) {
            stale.push(format!("man/{name} (no such command)"));
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are out of date: {stale:?}\nrun: MAILCTL_REGENERATE=1 cargo test --test generated"
    );
}

#[test]
fn completions_command_prints_the_committed_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (shell, file) in [
        ("bash", "mailctl.bash"),
        ("zsh", "_mailctl"),
        ("fish", "mailctl.fish"),
    ] {
        let out = Command::cargo_bin("mailctl")
            .unwrap()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            out.stdout,
            std::fs::read(root.join("completions").join(file)).unwrap(),
            "{shell}"
        );
    }
}

#[test]
fn man_pages_document_environment_exit_codes_and_fields() {
    let pages = mailctl::docs::man_pages();
    let top = String::from_utf8(pages[0].1.clone()).unwrap();
    for needle in [
        "MAILCTL_DATABASE_URL",
        "MAILCTL_SMTP_URL",
        "MAILCTL_SMTP_CA_FILE",
        "EXIT STATUS",
        "FILES",
        "FIELDS",
        "full_name",
    ] {
        assert!(top.contains(needle), "mailctl.1 lacks {needle}");
    }
    let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
    for page in [
        "mailctl-clients.1",
        "mailctl-clients-import.1",
        "mailctl-send-due.1",
        "mailctl-stats.1",
    ] {
        assert!(names.contains(&page), "missing {page}");
    }
}

#[test]
fn every_command_help_has_an_example() {
    fn walk(cmd: &clap::Command, path: String, missing: &mut Vec<String>) {
        let subs: Vec<_> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        // Leaves, and the top: `mailctl --help` is where a newcomer starts.
        if subs.is_empty() || path == "mailctl" {
            let after = cmd
                .get_after_help()
                .map(|s| s.to_string())
                .unwrap_or_default();
            if !after.contains("Example") {
                missing.push(path.clone());
            }
        }
        for sub in subs {
            walk(sub, format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&mailctl::docs::command(), "mailctl".into(), &mut missing);
    assert!(missing.is_empty(), "no example in --help of: {missing:?}");
}

#[test]
fn version_names_the_package() {
    let out = Command::cargo_bin("mailctl")
        .unwrap()
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("mailctl {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[test]
fn every_setting_is_in_help_man_page_and_readme() {
    let settings = mailctl::docs::settings();
    let names: Vec<&str> = settings.iter().map(|(env, _, _)| env.as_str()).collect();
    assert_eq!(
        names,
        [
            "MAILCTL_DATABASE_URL",
            "MAILCTL_SMTP_URL",
            "MAILCTL_SMTP_CA_FILE",
            "MAILCTL_SMTP_TIMEOUT",
            "MAILCTL_SEND_LEASE",
            "MAILCTL_RETRY_DELAY",
            "MAILCTL_FROM",
            "MAILCTL_BOUNCE_ADDRESS",
            "MAILCTL_BASE_URL",
            "MAILCTL_REDIS_URL",
            "MAILCTL_SESSION_FILE",
            "MAILCTL_FORMAT",
        ]
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let man = std::fs::read_to_string(root.join("man/mailctl.1")).unwrap();
    let help = Command::cargo_bin("mailctl")
        .unwrap()
        .env_clear()
        .arg("--help")
        .output()
        .unwrap();
    // clap wraps lines: compare with the whitespace collapsed.
    let help = String::from_utf8(help.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for (env, flag, text) in &settings {
        assert!(text.contains("[default: "), "{env}: no default in {text:?}");
        assert!(
            readme.contains(&format!("| `--{flag}` | `{env}` |")),
            "README's configuration table lacks {env}"
        );
        assert!(man.contains(env.as_str()), "mailctl.1 lacks {env}");
        assert!(help.contains(&format!("--{flag}")), "--help lacks --{flag}");
        assert!(help.contains(&format!("[env: {env}")), "--help lacks {env}");
    }
}

#[test]
fn help_never_shows_the_value_of_a_url_setting() {
    let out = Command::cargo_bin("mailctl")
        .unwrap()
        .env("MAILCTL_DATABASE_URL", "postgres://u:hunter2@h/db")
        .env("MAILCTL_SMTP_URL", "smtp://u:hunter2@relay")
        .env("MAILCTL_REDIS_URL", "redis://:hunter2@h")
        .args(["send-due", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("MAILCTL_SMTP_URL"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
