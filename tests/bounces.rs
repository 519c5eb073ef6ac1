//! Bounces and complaints close the loop (issue 16): letters go out with a signed VERP
//! return path; `bounces import` reads hand-written reports shaped like real ones (Postfix,
//! Exim, Gmail, an ARF complaint), records them, suppresses addresses, and refuses forged,
//! truncated and garbage input; the next mailing skips the addresses and `stats` counts them.
//! `suppressions` manages the list by hand.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::servers::{SmtpServer, start_smtp};
use common::{Caller, Env};
use serde_json::Value;

on_both_backends_mut!(
    reports_close_the_loop,
    maildir_stdin_and_unreadable_input,
    a_refused_message_is_left_out_whole
);
on_both_backends!(suppressions_by_hand);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn smtp(env: &mut Env) -> SmtpServer {
    let server = start_smtp();
    env.set("MAILCTL_SMTP_URL", &server.url());
    env.set("MAILCTL_FROM", "News <news@example.com>");
    env.set("MAILCTL_BOUNCE_ADDRESS", "bounces@example.com");
    server
}

/// The envelope sender each recipient's letter went out with (the SMTP server's log).
fn return_paths(server: &SmtpServer) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in server.log() {
        let v: Value = serde_json::from_str(&line).unwrap();
        let from = v["mail_from"].as_str().unwrap().to_string();
        for to in v["rcpt_tos"].as_array().unwrap() {
            out.insert(to.as_str().unwrap().to_string(), from.clone());
        }
    }
    out
}

/// A report from tests/bounces/NAME.eml with its placeholders filled.
fn report(name: &str, to: &str, rcpt: &str, mid: &str, nonce: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/bounces/{name}.eml"));
    std::fs::read_to_string(&path)
        .unwrap()
        .replace("{TO}", to)
        .replace("{RCPT}", rcpt)
        .replace("{MID}", mid)
        .replace("{NONCE}", nonce)
}

fn mbox(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(b"From MAILER-DAEMON Wed Dec  2 09:15:02 2026\n");
        out.extend_from_slice(m);
        if !m.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

fn import(caller: &Caller, args: &[&str]) -> Value {
    let mut all = vec!["bounces", "import"];
    all.extend_from_slice(args);
    caller.json(&all)
}

fn n(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn counts(v: &Value) -> [i64; 7] {
    [
        "read",
        "hard",
        "soft",
        "complaints",
        "duplicates",
        "unmatched",
        "malformed",
    ]
    .map(|k| n(v, k))
}

fn mid(mailing: i64, client: i64) -> String {
    format!("<mailing-{mailing}.client-{client}@example.com>")
}

// ---------------------------------------------------------------------------------------------
// scenarios
// ---------------------------------------------------------------------------------------------

fn reports_close_the_loop(env: &mut Env) {
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let ivan = ann.client("ivan@example.com");
    let olga = ann.client("olga@example.com");
    let petr = ann.client("petr@example.com");
    let misha = ann.client("misha@example.com");
    let msg = ann.message("News");
    let first = ann.mailing(msg, &[ivan, olga, petr, misha]);
    ann.json(&["send-due"]);

    // Every letter left with its own signed return path; the header From stays as it was.
    let paths = return_paths(&server);
    assert_eq!(paths.len(), 4, "{paths:?}");
    for (to, id) in [
        ("ivan@example.com", ivan),
        ("olga@example.com", olga),
        ("petr@example.com", petr),
        ("misha@example.com", misha),
    ] {
        let rp = &paths[to];
        assert!(
            rp.starts_with(&format!("bounces+{first}.{id}.")) && rp.ends_with("@example.com"),
            "{to}: {rp}"
        );
    }
    for m in server.messages() {
        let text = String::from_utf8_lossy(&m).to_string();
        assert!(text.contains("From: News <news@example.com>"), "{text}");
    }

    let olga_rp = &paths["olga@example.com"];
    // The same signature with petr's id in it: no longer valid.
    let tampered = olga_rp.replacen(&format!(".{olga}."), &format!(".{petr}."), 1);
    assert_ne!(&tampered, olga_rp);
    let mut truncated = report(
        "postfix_hard",
        &paths["petr@example.com"],
        "petr@example.com",
        &mid(first, petr),
        "t",
    );
    truncated.truncate(
        truncated
            .find("Content-Description: Delivery report")
            .unwrap(),
    );
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    let hard = report(
        "postfix_hard",
        &paths["ivan@example.com"],
        "ivan@example.com",
        &mid(first, ivan),
        "1",
    );
    let soft_plain = report("exim_plain", "", "olga@example.com", &mid(first, olga), "1");
    let soft_gmail = report(
        "gmail_soft",
        &paths["petr@example.com"],
        "petr@example.com",
        "<unknown@example.net>",
        "1",
    );
    let complaint = report(
        "arf_complaint",
        &paths["misha@example.com"],
        "misha@example.com",
        &mid(first, misha),
        "1",
    );
    // Olga's valid token, but the report is about petr.
    let forged_token = report(
        "postfix_hard",
        olga_rp,
        "petr@example.com",
        "<none@example.net>",
        "2",
    );
    // Ivan's Message-ID, but the report is about olga (anyone can write a Message-ID).
    let forged_mid = report(
        "postfix_hard",
        "bounces@example.com",
        "olga@example.com",
        &mid(first, ivan),
        "3",
    );
    let forged_sig = report(
        "postfix_hard",
        &tampered,
        "petr@example.com",
        "<none@example.net>",
        "4",
    );
    let reply = report(
        "human_reply",
        "",
        "ivan@example.com",
        &mid(first, ivan),
        "1",
    );
    let all = mbox(&[
        hard.as_bytes(),
        soft_plain.as_bytes(),
        soft_gmail.as_bytes(),
        complaint.as_bytes(),
        forged_token.as_bytes(),
        forged_mid.as_bytes(),
        forged_sig.as_bytes(),
        reply.as_bytes(),
        truncated.as_bytes(),
        &garbage,
    ]);
    let file = env.dir.path().join("bounces.mbox");
    std::fs::write(&file, &all).unwrap();
    let rejects = env.dir.path().join("rejects");
    let path = file.to_str().unwrap();
    let rejects_arg = rejects.to_str().unwrap();

    // Bounces come from the system (MTA pipe, cron): no login needed.
    let system = env.as_("mta");
    let got = import(&system, &[path, "--rejects", rejects_arg]);
    // read, hard, soft, complaints, duplicates, unmatched, malformed
    assert_eq!(counts(&got), [10, 1, 2, 1, 0, 4, 2], "{got}");
    assert_eq!(n(&got, "suppressed"), 2, "{got}");
    let kept: Vec<String> = std::fs::read_dir(&rejects)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 6, "{kept:?}");
    assert_eq!(
        kept.iter().filter(|k| k.starts_with("malformed-")).count(),
        2
    );

    let state = |client: i64| {
        env.text(&format!(
            "SELECT state FROM deliveries WHERE mailing_id = {first} AND client_id = {client}"
        ))
    };
    assert_eq!(state(ivan), "failed");
    assert_eq!(state(olga), "sent");
    assert_eq!(state(petr), "sent");
    let reason = |email: &str| {
        env.text(&format!(
            "SELECT COALESCE(MAX(reason), '-') FROM suppressions WHERE email_key = '{email}'"
        ))
    };
    assert_eq!(reason("ivan@example.com"), "bounced");
    assert_eq!(reason("misha@example.com"), "complained");
    assert_eq!(reason("olga@example.com"), "-");
    assert_eq!(reason("petr@example.com"), "-");

    // The report's words are the attempt's server response.
    let bounced = ann.json(&["attempts", "list", "--status", "bounced"]);
    let bounced = bounced.as_array().unwrap();
    assert_eq!(bounced.len(), 3, "{bounced:?}");
    let ivans = bounced
        .iter()
        .find(|a| a["client_id"] == ivan)
        .expect("ivan's bounce");
    let words = ivans["server_response"].as_str().unwrap();
    assert!(words.contains("5.1.1") && words.contains("User"), "{words}");
    let complained = ann.json(&["attempts", "list", "--status", "complained"]);
    assert_eq!(complained.as_array().unwrap().len(), 1);
    assert_eq!(complained[0]["client_id"], misha);

    // The same mbox again changes nothing.
    let before = env.count("SELECT COUNT(*) FROM attempts");
    let again = import(&system, &[path]);
    assert_eq!(counts(&again), [10, 0, 0, 0, 4, 4, 2], "{again}");
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), before);

    // stats: tries apart from reports, by mailing, user and day.
    let by_mailing = ann.json(&["stats", "--by", "mailing"]);
    let row = &by_mailing[0];
    assert_eq!(
        (
            n(row, "attempted"),
            n(row, "succeeded"),
            n(row, "failed"),
            n(row, "bounced"),
            n(row, "complained")
        ),
        (4, 4, 0, 3, 1),
        "{row}"
    );
    let admin = env.admin();
    let by_user = admin.json(&["stats", "--by", "user"]);
    let ann_row = by_user
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == "ann@example.com")
        .unwrap();
    assert_eq!((n(ann_row, "bounced"), n(ann_row, "complained")), (3, 1));
    let by_day = ann.json(&["stats", "--by", "day"]);
    let total: i64 = by_day
        .as_array()
        .unwrap()
        .iter()
        .map(|r| n(r, "bounced"))
        .sum();
    assert_eq!(total, 3);
    // A range with a partial day counts the same, from the attempts themselves.
    let since = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let ranged = ann.json(&["stats", "--since", &since]);
    assert_eq!(
        (n(&ranged[0], "bounced"), n(&ranged[0], "complained")),
        (3, 1)
    );
    // The rebuilt counters agree with the running ones.
    admin.run(&["stats", "--rebuild"]).success();
    let rebuilt = ann.json(&["stats", "--by", "mailing"]);
    assert_eq!(rebuilt[0], by_mailing[0]);

    // Third soft bounce of olga within 30 days: suppressed.
    for nonce in ["2", "3"] {
        let more = report(
            "exim_plain",
            "",
            "olga@example.com",
            &mid(first, olga),
            nonce,
        );
        system
            .stdin(&["bounces", "import", "-", "--format", "json"], &more)
            .success();
    }
    assert_eq!(reason("olga@example.com"), "bounced");
    assert_eq!(reason("petr@example.com"), "-");

    // The next mailing of the same owner skips the hard bounce, the complaint and olga.
    let before = server.received_count();
    let msg2 = ann.message("More news");
    ann.mailing(msg2, &[ivan, olga, petr, misha]);
    ann.json(&["send-due"]);
    assert_eq!(server.received_count(), before + 1);
    let paths = return_paths(&server);
    assert_eq!(paths.len(), 4);
    let last: Value = serde_json::from_str(server.log().last().unwrap()).unwrap();
    assert_eq!(last["rcpt_tos"][0], "petr@example.com");
}

fn maildir_stdin_and_unreadable_input(env: &mut Env) {
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let ivan = ann.client("ivan@example.com");
    let olga = ann.client("olga@example.com");
    let msg = ann.message("News");
    let m = ann.mailing(msg, &[ivan, olga]);
    ann.json(&["send-due"]);
    let paths = return_paths(&server);

    // A Maildir: new/ is read, each message moved to cur/ once done.
    let maildir = env.dir.path().join("Maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(d)).unwrap();
    }
    let hard = report(
        "postfix_hard",
        &paths["ivan@example.com"],
        "ivan@example.com",
        &mid(m, ivan),
        "1",
    );
    std::fs::write(maildir.join("new/1764666902.M1P1.host"), &hard).unwrap();
    std::fs::write(maildir.join("new/1764666903.M2P1.host"), b"\x00\x01garbage").unwrap();
    let system = env.as_("mta");
    let got = import(&system, &[maildir.to_str().unwrap()]);
    assert_eq!(counts(&got), [2, 1, 0, 0, 0, 0, 1], "{got}");
    assert_eq!(std::fs::read_dir(maildir.join("new")).unwrap().count(), 0);
    let cur: Vec<String> = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cur.contains(&"1764666902.M1P1.host:2,S".to_string()),
        "{cur:?}"
    );

    // --delete removes instead; nothing left anywhere for the new message.
    let soft = report(
        "gmail_soft",
        &paths["olga@example.com"],
        "olga@example.com",
        &mid(m, olga),
        "1",
    );
    std::fs::write(maildir.join("new/1764666904.M3P1.host"), &soft).unwrap();
    let got = import(&system, &[maildir.to_str().unwrap(), "--delete"]);
    assert_eq!(counts(&got), [1, 0, 1, 0, 0, 0, 0], "{got}");
    assert_eq!(std::fs::read_dir(maildir.join("new")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(maildir.join("cur")).unwrap().count(), 2);

    // One message on stdin, as an MTA pipe gives it: the same hard bounce is a duplicate.
    let run = system.stdin(&["bounces", "import", "--format", "json"], &hard);
    assert_eq!(counts(&run.success().json()), [1, 0, 0, 0, 1, 0, 0]);
    // The summary line for people.
    let run = system.stdin(&["bounces", "import", "-"], &hard);
    assert!(
        run.success()
            .stdout()
            .starts_with("read 1, hard 0, soft 0, complaints 0, duplicates 1"),
        "{}",
        run.stdout()
    );

    // A NUL in the diagnostic (PostgreSQL text cannot hold one) is recorded as a space. Not
    // a raw one (a message with a NUL byte is garbage): quoted-printable `=00`.
    let nul = report(
        "postfix_hard",
        &paths["olga@example.com"],
        "olga@example.com",
        &mid(m, olga),
        "nul",
    )
    .replace(
        "Content-Type: message/delivery-status\n",
        "Content-Type: message/delivery-status\nContent-Transfer-Encoding: quoted-printable\n",
    )
    .replace("mailbox table", "mailbox=00table");
    assert!(nul.contains("quoted-printable") && nul.contains("=00"));
    let run = system.stdin(&["bounces", "import", "--format", "json"], &nul);
    assert_eq!(counts(&run.success().json()), [1, 1, 0, 0, 0, 0, 0]);
    let bounced = ann.json(&["attempts", "list", "--status", "bounced"]);
    assert!(
        bounced
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["client_id"] == olga
                && a["server_response"]
                    .as_str()
                    .unwrap()
                    .contains("mailbox table")),
        "{bounced}"
    );

    // Input that cannot be read: exit 1 naming it, nothing changed.
    let before = env.count("SELECT COUNT(*) FROM attempts");
    let missing = env.dir.path().join("no-such.mbox");
    let run = system.run(&["bounces", "import", missing.to_str().unwrap()]);
    run.expect_code(1);
    assert!(run.stderr().contains("no-such.mbox"), "{}", run.stderr());
    let run = system.run(&["bounces", "import", env.dir.path().to_str().unwrap()]);
    run.expect_code(1);
    assert!(run.stderr().contains("new"), "{}", run.stderr());
    // --delete is for a Maildir only.
    let run = system.stdin(&["bounces", "import", "-", "--delete"], &hard);
    run.expect_code(5);
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), before);

    // Without MAILCTL_BOUNCE_ADDRESS the envelope sender is MAILCTL_FROM, as before.
    env.vars.retain(|(k, _)| k != "MAILCTL_BOUNCE_ADDRESS");
    let ann = env.as_("ann");
    let petr = ann.client("petr@example.com");
    let msg2 = ann.message("Plain");
    ann.mailing(msg2, &[petr]);
    ann.json(&["send-due"]);
    assert_eq!(
        return_paths(&server)["petr@example.com"],
        "news@example.com"
    );
}

/// `bounces import ARGS` (as the MTA) while another connection holds `statement` done but
/// not committed: the import reads the database as it was, then waits for the lock to write,
/// and the statement commits in between. What a `mailings delete` at the wrong moment does.
fn import_while(env: &Env, statement: &str, args: &[&str]) -> std::process::Output {
    use std::process::Stdio;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = mailctl::db::Db::connect(&env.db_url, 1).await.unwrap();
        let child = mailctl::on_pool!(&db, p => {
            let mut tx = p.begin().await.unwrap();
            sqlx::query(statement).execute(&mut *tx).await.unwrap();
            let mut child = env
                .process("mta")
                .args(["bounces", "import", "--format", "json"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_until_blocked(env, &mut child);
            tx.commit().await.unwrap();
            child
        });
        db.close().await;
        child.wait_with_output().unwrap()
    })
}

/// Until the import waits for the lock the other transaction holds. PostgreSQL shows it
/// waiting; SQLite does not, so there the import gets four seconds to read (it needs a few
/// milliseconds; the margin is for a loaded CI machine, well inside the 30 s busy timeout)
/// before it blocks on the one writer's lock.
fn wait_until_blocked(env: &Env, child: &mut std::process::Child) {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the import ended ({status}) before it waited for the lock");
        }
        match env.backend {
            common::Backend::Sqlite if started.elapsed().as_secs() >= 4 => return,
            common::Backend::Postgres => {
                let waiting = common::servers::psql(
                    &env.db_url,
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                );
                if waiting != "0" {
                    return;
                }
                assert!(started.elapsed().as_secs() < 60, "the import never waited");
            }
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Each message is one transaction's worth: a report the database refuses at the write (its
/// mailing was deleted after the import found the letter) is left out whole, the others of
/// its batch are recorded.
fn a_refused_message_is_left_out_whole(env: &mut Env) {
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let ivan = ann.client("ivan@example.com");
    let olga = ann.client("olga@example.com");
    let misha = ann.client("misha@example.com");
    let msg = ann.message("News");
    let kept = ann.mailing(msg, &[ivan, misha]);
    let gone = ann.mailing(msg, &[olga]);
    ann.json(&["send-due"]);
    let paths = return_paths(&server);
    let hard = |to: &str, m: i64, c: i64| report("postfix_hard", &paths[to], to, &mid(m, c), "1");
    let doomed = hard("olga@example.com", gone, olga);
    let complaint = report(
        "arf_complaint",
        &paths["misha@example.com"],
        "misha@example.com",
        &mid(kept, misha),
        "1",
    );
    // One batch: a hard bounce, the doomed hard bounce, a complaint.
    let all = mbox(&[
        hard("ivan@example.com", kept, ivan).as_bytes(),
        doomed.as_bytes(),
        complaint.as_bytes(),
    ]);
    let file = env.dir.path().join("bounces.mbox");
    std::fs::write(&file, &all).unwrap();
    let rejects = env.dir.path().join("rejects");
    let (path, rejects_arg) = (file.to_str().unwrap(), rejects.to_str().unwrap());

    let out = import_while(
        env,
        &format!("DELETE FROM mailings WHERE id = {gone}"),
        &[path, "--rejects", rejects_arg],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // read, hard, soft, complaints, duplicates, unmatched, malformed
    assert_eq!(counts(&got), [3, 1, 0, 1, 0, 0, 1], "{got} {stderr}");
    assert_eq!(n(&got, "suppressed"), 2, "{got}");
    assert!(
        stderr.contains("message 2: malformed: not recorded"),
        "{stderr}"
    );
    let kept_files: Vec<_> = std::fs::read_dir(&rejects)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept_files.len(), 1, "{kept_files:?}");
    assert_eq!(std::fs::read_to_string(&kept_files[0]).unwrap(), doomed);

    // Nothing of olga's report: neither its record (so a later import may take it), nor the
    // suppression it would have made, nor an attempt.
    let count = |q: &str| env.count(q);
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM bounce_reports WHERE client_id = {olga}"
        )),
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM suppressions WHERE email_key = 'olga@example.com'"),
        0
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM attempts WHERE client_id = {olga}"
        )),
        0
    );
    // The others wholly.
    assert_eq!(count("SELECT COUNT(*) FROM bounce_reports"), 2);
    assert_eq!(
        env.text("SELECT reason FROM suppressions WHERE email_key = 'ivan@example.com'"),
        "bounced"
    );
    assert_eq!(
        env.text("SELECT reason FROM suppressions WHERE email_key = 'misha@example.com'"),
        "complained"
    );
    assert_eq!(
        env.text(&format!(
            "SELECT state FROM deliveries WHERE mailing_id = {kept} AND client_id = {ivan}"
        )),
        "failed"
    );
    let reports = ann.json(&["attempts", "list", "--mailing", &kept.to_string()]);
    let statuses: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["status"].as_str().filter(|s| *s != "success"))
        .collect();
    assert_eq!(statuses.len(), 2, "{reports}");

    // Again: the two recorded are duplicates; olga's letter is gone with its mailing.
    let again = import(&env.as_("mta"), &[path]);
    assert_eq!(counts(&again), [3, 0, 0, 0, 2, 1, 0], "{again}");
    assert_eq!(count("SELECT COUNT(*) FROM bounce_reports"), 2);
}

fn suppressions_by_hand(env: &Env) {
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    ann.run(&["suppressions", "add", "Gone@Example.com", "old@example.org"])
        .success();
    let list = ann.json(&["suppressions", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["email"], "gone@example.com");
    assert_eq!(list[0]["reason"], "manual");
    assert!(list[0]["created_at"].as_str().unwrap().ends_with('Z'));
    // Another user's list is their own.
    assert_eq!(
        bob.json(&["suppressions", "list"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Only an administrator names another owner.
    let run = bob.run(&["suppressions", "list", "--owner", "ann@example.com"]);
    run.expect_code(3);
    bob.run(&[
        "suppressions",
        "add",
        "x@example.com",
        "--owner",
        "ann@example.com",
    ])
    .expect_code(3);
    let admin = env.admin();
    let seen = admin.json(&["suppressions", "list", "--owner", "ann@example.com"]);
    assert_eq!(seen.as_array().unwrap().len(), 2);
    admin
        .run(&["suppressions", "list", "--owner", "nobody@example.com"])
        .expect_code(4);

    // A bad address: exit 5 naming it, nothing added.
    let run = ann.run(&["suppressions", "add", "ok@example.com", "not an address"]);
    run.expect_code(5);
    assert!(run.stderr().contains("not an address"), "{}", run.stderr());
    assert_eq!(env.count("SELECT COUNT(*) FROM suppressions"), 2);

    // Import: one per line, or CSV with an email column; a bad line names its number.
    let dir = env.dir.path();
    std::fs::write(
        dir.join("list.txt"),
        "# do not mail\na@example.com\n\nb@example.com\n",
    )
    .unwrap();
    ann.run(&[
        "suppressions",
        "import",
        dir.join("list.txt").to_str().unwrap(),
    ])
    .success();
    std::fs::write(
        dir.join("list.csv"),
        "name,email\n\"Doe, C\",c@example.com\nD,d@example.com\n",
    )
    .unwrap();
    ann.run(&[
        "suppressions",
        "import",
        dir.join("list.csv").to_str().unwrap(),
    ])
    .success();
    assert_eq!(env.count("SELECT COUNT(*) FROM suppressions"), 6);
    std::fs::write(dir.join("bad.txt"), "e@example.com\nnope\n").unwrap();
    let run = ann.run(&[
        "suppressions",
        "import",
        dir.join("bad.txt").to_str().unwrap(),
    ]);
    run.expect_code(5);
    assert!(run.stderr().contains("line 2"), "{}", run.stderr());
    assert_eq!(env.count("SELECT COUNT(*) FROM suppressions"), 6);

    // Remove: all or nothing; an address not in the list is exit 4.
    ann.run(&["suppressions", "remove", "a@example.com", "zzz@example.com"])
        .expect_code(4);
    assert_eq!(env.count("SELECT COUNT(*) FROM suppressions"), 6);
    ann.run(&["suppressions", "remove", "A@example.com", "b@example.com"])
        .success();
    assert_eq!(env.count("SELECT COUNT(*) FROM suppressions"), 4);

    // send-due skips a manual suppression like any other.
    let gone = ann.client("gone@example.com");
    let kept = ann.client("kept@example.com");
    let msg = ann.message("Hello");
    let m = ann.mailing(msg, &[gone, kept]);
    ann.json(&["send-due"]);
    let state = |c: i64| {
        env.text(&format!(
            "SELECT state FROM deliveries WHERE mailing_id = {m} AND client_id = {c}"
        ))
    };
    assert_eq!(state(gone), "suppressed");
    assert_eq!(state(kept), "sent");
}

// ---------------------------------------------------------------------------------------------
// no input panics the parser
// ---------------------------------------------------------------------------------------------

mod fuzz {
    use proptest::prelude::*;

    fn samples() -> Vec<Vec<u8>> {
        [
            "postfix_hard",
            "exim_plain",
            "gmail_soft",
            "arf_complaint",
            "human_reply",
        ]
        .iter()
        .map(|name| {
            super::report(
                name,
                "bounces+1.2.0123456789abcdef0123@example.com",
                "ivan@example.com",
                "<mailing-1.client-2@example.com>",
                "n",
            )
            .into_bytes()
        })
        .collect()
    }

    fn check(raw: &[u8]) {
        let _ = mailctl::bounce::report::parse(raw);
        let found = mailctl::bounce::candidates(raw, b"secret", "example.com");
        let _ = mailctl::bounce::source::split_mbox(raw);
        for l in found {
            assert!(l.mailing_id > 0 && l.client_id > 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..4096)) {
            check(&raw);
        }

        /// Real reports cut, with bytes overwritten: the likely shapes of damage.
        #[test]
        fn damaged_reports(
            which in 0usize..5,
            cut in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        ) {
            let mut raw = samples()[which].clone();
            let len = cut.index(raw.len() + 1);
            raw.truncate(len);
            for (at, b) in edits {
                if !raw.is_empty() {
                    let i = at.index(raw.len());
                    raw[i] = b;
                }
            }
            check(&raw);
        }

        #[test]
        fn header_soup(lines in proptest::collection::vec("[A-Za-z-]{1,20}: [ -~]{0,60}", 0..30), body in "[ -~\n]{0,500}") {
            let raw = format!("{}\n\n{}", lines.join("\n"), body);
            check(raw.as_bytes());
            let report = format!(
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\n{}\n\n{}\n--b--\n",
                lines.join("\n"), body
            );
            check(report.as_bytes());
        }
    }
}
