//! Issue 18, points 6 to 9: no database by accident, doctor checks what sending checks,
//! Unicode search, tables that fit the terminal (NO_COLOR, escaped control characters),
//! JSON-only logs from cron, users block by id, and a declined prompt.

mod common;

use std::process::{Command, Stdio};

use common::{Backend, Env};
use serde_json::Value;

on_both_backends_mut!(
    unicode_search,
    tables_fit_and_escape,
    cron_log_is_json_lines
);
on_both_backends!(users_block_by_id_or_email, doctor_checks_ca_file_and_from);

fn unicode_search(env: &mut Env) {
    let ann = env.account("user", "ann");
    for (email, name) in [
        ("ivan@example.com", "Иван Петров"),
        ("olga@example.com", "ОЛЬГА Ёлкина"),
        ("jose@example.com", "José Müller"),
        ("beth@example.com", "Beth"),
    ] {
        ann.run(&["clients", "add", "--email", email, "--name", name])
            .success();
    }
    let found = |text: &str| -> Vec<String> {
        ann.json(&["clients", "list", "--search", text])
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["email"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(found("иван"), ["ivan@example.com"]);
    assert_eq!(found("ПЕТРОВ"), ["ivan@example.com"]);
    assert_eq!(found("ольга"), ["olga@example.com"]);
    assert_eq!(found("елкина"), ["olga@example.com"], "ё folds to е");
    assert_eq!(found("jose"), ["jose@example.com"], "accents fold away");
    assert_eq!(found("MÜLLER"), ["jose@example.com"]);
    assert_eq!(found("BETH"), ["beth@example.com"]);
    assert!(found("nobody").is_empty());
    // LIKE wildcards in the text are literal.
    assert!(found("%").is_empty());

    // Imported rows (the bulk path) are found too, and an edit moves the key along.
    let csv = "email,full_name\nsasha@example.com,Александра Шевченко\n";
    ann.stdin(&["clients", "import", "-"], csv).success();
    assert_eq!(found("александра"), ["sasha@example.com"]);
    let ivan = ann.json(&["clients", "list", "--search", "иван"])[0]["id"]
        .as_i64()
        .unwrap();
    ann.run(&["clients", "edit", &ivan.to_string(), "--name", "Пётр"])
        .success();
    assert!(found("иван").is_empty());
    assert_eq!(found("петр"), ["ivan@example.com"]);

    // A row written without a key (an older binary, SQL by hand) is folded on the next search.
    env.sql("UPDATE clients SET search_key = NULL");
    let ann = env.as_("ann");
    let again: Vec<Value> = ann
        .json(&["clients", "list", "--search", "шевченко"])
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(again.len(), 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM clients WHERE search_key IS NULL"),
        0
    );
}

fn tables_fit_and_escape(env: &mut Env) {
    env.set("COLUMNS", "60");
    let ann = env.account("user", "ann");
    let long = "a very long comment that goes on and on well past the edge of any narrow terminal";
    ann.run(&[
        "clients",
        "add",
        "--email",
        "wide@example.com",
        "--name",
        "Wide",
        "--comment",
        long,
    ])
    .success();
    ann.client("cr@example.com");
    // Validation keeps these out of new comments; older rows or SQL by hand may hold them.
    let chr = if env.backend == Backend::Sqlite {
        "char"
    } else {
        "chr"
    };
    env.sql(&format!(
        "UPDATE clients SET comment = 'line one' || {chr}(13) || 'line two' || {chr}(27) || '[31m' \
         WHERE email = 'cr@example.com'"
    ));
    let ann = env.as_("ann");
    let out = ann.run(&["clients", "list"]).success().stdout();
    for line in out.lines() {
        assert!(
            line.chars().count() <= 60,
            "wider than COLUMNS=60: {line:?}\n{out}"
        );
    }
    // One line per row (header, two clients, three rules): nothing wraps.
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(out.contains('…'), "a long cell ends in …:\n{out}");
    // With room for the short columns, only the long comment is cut: email and time whole.
    let mut wider = env.command("ann");
    wider.env("COLUMNS", "140").args(["clients", "list"]);
    let out110 = String::from_utf8(wider.output().unwrap().stdout).unwrap();
    assert_eq!(out110.lines().count(), 6, "{out110}");
    assert!(out110.contains("wide@example.com"), "{out110}");
    assert!(out110.contains("created_at"), "{out110}");
    assert!(out110.contains("a very long comment"), "{out110}");
    assert!(!out110.contains(long), "{out110}");
    assert!(out110.lines().all(|l| l.chars().count() <= 140), "{out110}");
    // Control characters are shown, not obeyed.
    assert!(!out.contains('\r') && !out.contains('\x1b'), "{out:?}");
    assert!(
        out110.contains("line one\\rline two\\u{1b}[31m"),
        "{out110}"
    );
    // JSON keeps the value as stored.
    let json = ann.json(&["clients", "list", "--search", "cr@"]);
    assert_eq!(json[0]["comment"], "line one\rline two\x1b[31m");
    // Into a pipe with no width to fit, nothing is cut.
    let mut piped = env.command("ann");
    piped.env_remove("COLUMNS").args(["clients", "list"]);
    let full = String::from_utf8(piped.output().unwrap().stdout).unwrap();
    assert!(full.contains(long), "{full}");
}

/// `mailctl ARGS` on a pseudo-terminal (util-linux `script`), returning what it printed.
fn on_terminal(env: &Env, who: &str, args: &str, extra: &[(&str, &str)]) -> String {
    let bin = assert_cmd::cargo::cargo_bin("mailctl");
    let cmd = env.command(who);
    let mut script = Command::new("script");
    script.args([
        "-qfec",
        &format!("stty cols 200; {} {args}", bin.display()),
        "/dev/null",
    ]);
    script.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    script
        .env("TERM", "xterm")
        .envs(extra.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = script.output().expect("util-linux `script`");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn no_color_turns_styling_off() {
    let env = Env::new(Backend::Sqlite);
    let admin = env.admin();
    admin.client("ivan@example.com");
    let styled = on_terminal(&env, "admin", "clients list", &[]);
    assert!(
        styled.contains("\x1b["),
        "a terminal gets a bold header: {styled:?}"
    );
    let plain = on_terminal(&env, "admin", "clients list", &[("NO_COLOR", "1")]);
    assert!(plain.contains("ivan@example.com"), "{plain:?}");
    assert!(
        !plain.contains("\x1b["),
        "NO_COLOR: no escape at all: {plain:?}"
    );
}

fn cron_log_is_json_lines(env: &mut Env) {
    let ann = env.account("user", "ann");
    let c = ann.client("c@example.com");
    ann.mailing(ann.message("Cron"), &[c]);
    // As cron runs it: `send-due --format json >> log 2>&1`, twice.
    let log = env.dir.path().join("send.log");
    for _ in 0..2 {
        let mut cmd = env.process("ann");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.args(["send-due", "--format", "json"])
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        assert!(cmd.status().unwrap().success());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{text}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["sent"], 1, "{text}");
    assert_eq!(lines[1]["sent"], 0, "{text}");
    for l in &lines {
        let started = l["started_at"].as_str().unwrap();
        let finished = l["finished_at"].as_str().unwrap();
        assert!(started.ends_with('Z') && started <= finished, "{l}");
    }
    // Without --format json the people's line still goes to stderr.
    let r = ann.run(&["send-due"]);
    r.success();
    assert!(r.stderr().contains("sent 0"), "{}", r.stderr());
    assert!(r.stdout().is_empty());
}

fn users_block_by_id_or_email(env: &Env) {
    let boss = env.account("manager", "boss");
    let ann = env.account("user", "ann");
    let id = ann.json(&["whoami"])["id"].as_i64().unwrap().to_string();
    boss.run(&["users", "block", &id]).success();
    ann.run(&["whoami"]).expect_code(3);
    let list = boss.json(&["users", "list"]);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"].as_i64().map(|v| v.to_string()).as_deref() == Some(id.as_str()))
        .unwrap()
        .clone();
    assert_eq!(row["blocked"], true);
    boss.run(&["users", "unblock", &id]).success();
    boss.run(&["users", "block", "ann@example.com"]).success();
    boss.run(&["users", "unblock", "ANN@example.com"]).success();
    let r = boss.run(&["users", "block", "987654"]);
    r.expect_code(4);
    assert!(r.stderr().contains("987654"), "{}", r.stderr());
}

fn doctor_checks_ca_file_and_from(env: &Env) {
    let admin = env.admin();
    let mut cmd = env.command("admin");
    cmd.args(["doctor", "--format", "json"])
        .env("MAILCTL_SMTP_CA_FILE", "/nonexistent/ca.pem")
        .env("MAILCTL_FROM", "not an address");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |check: &str| -> String {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["check"] == check)
            .unwrap_or_else(|| panic!("no {check} row in {rows}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("smtp ca file"), "FAIL", "{rows}");
    assert_eq!(status("from"), "FAIL", "{rows}");
    assert_eq!(status("database"), "ok", "{rows}");
    // The same settings stop sending as configuration errors (exit 5) ...
    let mut send = env.command("admin");
    send.args(["send-due"])
        .env("MAILCTL_SMTP_URL", "smtp://127.0.0.1:1")
        .env("MAILCTL_SMTP_CA_FILE", "/nonexistent/ca.pem");
    assert_eq!(send.output().unwrap().status.code(), Some(5));
    // ... and good ones pass.
    admin.run(&["doctor"]).success();
}

#[test]
fn no_database_by_accident() {
    let env = Env::new(Backend::Sqlite);
    env.admin();
    let typo = env.dir.path().join("srv/mailctl.bd");
    let url = format!("sqlite://{}", typo.display());
    let run = |args: &[&str]| {
        let mut cmd = env.command("admin");
        cmd.env("MAILCTL_DATABASE_URL", &url).args(args);
        cmd.output().unwrap()
    };
    for args in [
        &["send-due", "--format", "json"][..],
        &["clients", "list"],
        &["doctor"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stderr.contains(&format!("no database at {}", typo.display()))
                || stdout.contains("no database at"),
            "{args:?}: {stderr} {stdout}"
        );
        assert!(stderr.contains("mailctl migrate") || stdout.contains("mailctl migrate"));
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    // `migrate` creates it on purpose.
    assert!(run(&["migrate"]).status.success());
    assert!(typo.exists());
    // And the first `csu` may start one elsewhere.
    let other = env.dir.path().join("elsewhere/first.db");
    let mut cmd = env.command("admin");
    cmd.env(
        "MAILCTL_DATABASE_URL",
        format!("sqlite://{}", other.display()),
    )
    .args(["csu", "--email", "root@example.com", "--password-stdin"])
    .write_stdin(format!("{}\n", common::PASSWORD));
    assert!(cmd.output().unwrap().status.success());
    assert!(other.exists());
}
