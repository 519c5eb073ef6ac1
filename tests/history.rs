//! Issue 18, point 5: history that a user can trust. Attempts keep the address and name they
//! went to after the client is deleted, counters never drop, a 4xx is `deferred` (not a
//! final `failure`), success_rate counts recipients, stats by mailing carry the subject,
//! deleting a mailing with history needs --purge-history, and CSV can carry a BOM for Excel.

mod common;

use common::servers::{SmtpServer, start_smtp};
use common::{Caller, Env};
use serde_json::Value;

on_both_backends_mut!(
    deferred_failed_and_kept_after_delete,
    purge_history_and_bom,
    message_delete_keeps_history,
    ids_never_reused
);

fn smtp(env: &mut Env) -> SmtpServer {
    let server = start_smtp();
    env.set("MAILCTL_SMTP_URL", &server.url());
    env.set("MAILCTL_FROM", "News <news@example.org>");
    server
}

fn attempts(caller: &Caller, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["attempts", "list"];
    args.extend_from_slice(extra);
    caller.json(&args).as_array().unwrap().clone()
}

fn mailing_stats(caller: &Caller, mailing: i64) -> Value {
    caller.json(&[
        "stats",
        "--by",
        "mailing",
        "--mailing",
        &mailing.to_string(),
    ])[0]
        .clone()
}

fn deferred_failed_and_kept_after_delete(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(
        r#"{"rcpt": [{"match": "tempfail", "reply": "451 4.3.0 Try again later", "times": 1},
                     {"match": "reject", "reply": "550 5.1.1 User unknown"}]}"#,
    );
    let ann = env.account("user", "ann");
    let ok = ann.json(&[
        "clients",
        "add",
        "--email",
        "ok@example.com",
        "--name",
        "Иван Петров",
    ])["id"]
        .as_i64()
        .unwrap();
    let temp = ann.client("tempfail@example.com");
    let bad = ann.client("reject@example.com");
    let msg = ann.message("Winter news");
    let mailing = ann.mailing(msg, &[ok, temp, bad]);

    ann.run(&["send-due"]).success();
    // The 451 is deferred, the 550 a final failure.
    let deferred = attempts(&ann, &["--status", "deferred"]);
    assert_eq!(deferred.len(), 1, "{deferred:?}");
    assert_eq!(deferred[0]["email"], "tempfail@example.com");
    let failed = attempts(&ann, &["--status", "failure"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["email"], "reject@example.com");
    let s = mailing_stats(&ann, mailing);
    assert_eq!(
        (
            &s["attempted"],
            &s["succeeded"],
            &s["failed"],
            &s["deferred"]
        ),
        (
            &Value::from(3),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1)
        ),
        "{s}"
    );
    assert_eq!(s["subject"], "Winter news", "{s}");
    // One reached, one refused for good; the deferred one has no outcome yet.
    assert_eq!(s["success_rate"], 0.5, "{s}");

    // The retry, due now.
    env.set("MAILCTL_RETRY_DELAY", "0");
    env.sql("UPDATE deliveries SET next_try_at = NULL WHERE state = 'pending'");
    let ann = env.as_("ann");
    ann.run(&["send-due"]).success();
    let s = mailing_stats(&ann, mailing);
    assert_eq!(s["recipients_reached"], 2, "{s}");
    // Reached on the retry: 2 of the 3 recipients with a final outcome.
    assert_eq!(s["success_rate"], 0.6667, "{s}");
    assert_eq!(s["deferred"], 1, "{s}");

    // The client is deleted: its attempts keep address, name and id; counters do not drop.
    ann.run(&["clients", "delete", &ok.to_string(), "--yes"])
        .success();
    let kept: Vec<Value> = attempts(&ann, &["--mailing", &mailing.to_string()])
        .into_iter()
        .filter(|a| a["email"] == "ok@example.com")
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["full_name"], "Иван Петров");
    assert_eq!(kept[0]["client_id"], ok);
    assert_eq!(kept[0]["status"], "success");
    let after = mailing_stats(&ann, mailing);
    assert_eq!(after["recipients_reached"], 2, "{after}");
    assert_eq!(after["succeeded"], 2, "{after}");
    // A rebuild of the counters from the attempts agrees.
    env.admin().run(&["stats", "--rebuild"]).success();
    let rebuilt = mailing_stats(&ann, mailing);
    assert_eq!(rebuilt["recipients_reached"], 2, "{rebuilt}");
    assert_eq!(rebuilt["deferred"], 1, "{rebuilt}");
    assert_eq!(rebuilt["failed"], 1, "{rebuilt}");
}

fn purge_history_and_bom(env: &mut Env) {
    let _server = smtp(env);
    let ann = env.account("user", "ann");
    let c = ann.client("c@example.com");
    let sent = ann.mailing(ann.message("Sent one"), &[c]);
    ann.run(&["send-due"]).success();
    let unsent = ann.mailing(ann.message("Never sent"), &[c]);
    let before = env.count("SELECT COUNT(*) FROM attempts");
    assert_eq!(before, 1);

    // With history: refused, naming the flag; nothing deleted (not even the other mailing).
    let r = ann.run(&[
        "mailings",
        "delete",
        &unsent.to_string(),
        &sent.to_string(),
        "--yes",
    ]);
    r.expect_code(5);
    assert!(r.stderr().contains("--purge-history"), "{}", r.stderr());
    assert!(r.stderr().contains(&sent.to_string()), "{}", r.stderr());
    ann.run(&["mailings", "show", &unsent.to_string()])
        .success();
    ann.run(&["mailings", "show", &sent.to_string()]).success();
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 1);

    // A mailing without attempts goes without the flag.
    ann.run(&["mailings", "delete", &unsent.to_string(), "--yes"])
        .success();
    // Stats as CSV for Excel: a BOM only when asked.
    let plain = ann
        .run(&["stats", "--by", "mailing", "--format", "csv"])
        .success()
        .output
        .stdout
        .clone();
    assert!(
        plain.starts_with(b"mailing_id,owner_id,subject,"),
        "{plain:?}"
    );
    let bom = ann
        .run(&["stats", "--by", "mailing", "--format", "csv", "--bom"])
        .success()
        .output
        .stdout
        .clone();
    assert!(bom.starts_with("\u{feff}mailing_id,".as_bytes()), "{bom:?}");
    assert!(String::from_utf8(bom).unwrap().contains("Sent one"));
    let attempts_csv = ann
        .run(&["attempts", "list", "--format", "csv", "--bom"])
        .success()
        .output
        .stdout
        .clone();
    assert!(attempts_csv.starts_with("\u{feff}id,".as_bytes()));

    ann.run(&[
        "mailings",
        "delete",
        &sent.to_string(),
        "--yes",
        "--purge-history",
    ])
    .success();
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM mailing_stats"), 0);
}

/// `messages delete --force` takes the message's mailings along: one with send attempts only
/// with --purge-history, as `mailings delete` (before the prompt, and all or nothing).
fn message_delete_keeps_history(env: &mut Env) {
    let _server = smtp(env);
    let ann = env.account("user", "ann");
    let c = ann.client("c@example.com");
    let sent_msg = ann.message("Sent one");
    let sent = ann.mailing(sent_msg, &[c]);
    ann.run(&["send-due"]).success();
    let idle_msg = ann.message("Never sent");
    let idle = ann.mailing(idle_msg, &[c]);
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 1);
    let (sent_msg, idle_msg) = (sent_msg.to_string(), idle_msg.to_string());

    // Refused without --purge-history (even without --yes: before any prompt), naming the
    // flag and the mailing; nothing deleted, not even the message listed first.
    for extra in [&["--yes"][..], &[]] {
        let mut args = vec!["messages", "delete", &idle_msg, &sent_msg, "--force"];
        args.extend_from_slice(extra);
        let r = ann.run(&args);
        r.expect_code(5);
        assert!(r.stderr().contains("--purge-history"), "{}", r.stderr());
        assert!(
            r.stderr().contains(&format!("mailing {sent}")),
            "{}",
            r.stderr()
        );
        assert_eq!(r.stderr().trim().lines().count(), 1, "{}", r.stderr());
    }
    ann.run(&["messages", "show", &idle_msg]).success();
    ann.run(&["mailings", "show", &idle.to_string()]).success();
    ann.run(&["messages", "show", &sent_msg]).success();
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM mailing_stats"), 1);

    // --purge-history without --force: the message is still in use, so --force is asked for.
    let r = ann.run(&["messages", "delete", &sent_msg, "--yes", "--purge-history"]);
    r.expect_code(5);
    assert!(r.stderr().contains("--force"), "{}", r.stderr());

    // A message whose mailings never sent goes with --force alone.
    ann.run(&["messages", "delete", &idle_msg, "--yes", "--force"])
        .success();
    ann.run(&["mailings", "show", &idle.to_string()])
        .expect_code(4);
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 1);

    // Both flags: the mailing, its attempts and its statistics go with the message.
    ann.run(&[
        "messages",
        "delete",
        &sent_msg,
        "--yes",
        "--force",
        "--purge-history",
    ])
    .success();
    ann.run(&["messages", "show", &sent_msg]).expect_code(4);
    ann.run(&["mailings", "show", &sent.to_string()])
        .expect_code(4);
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM mailing_stats"), 0);
}

/// Ids that history keeps (attempts, first-success markers, Message-IDs, unsubscribe links)
/// are never handed out again: not to a new client after the last one is deleted, nor to a new
/// mailing after one is deleted with its history (SQLite reused max(id) + 1 before 0016).
fn ids_never_reused(env: &mut Env) {
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let a = ann.client("a@example.com");
    let b = ann.client("b@example.com");
    let mailing = ann.mailing(ann.message("Once each"), &[a, b]);
    ann.run(&["send-due"]).success();
    let reached = |caller: &Caller| mailing_stats(caller, mailing)["recipients_reached"].clone();
    assert_eq!(reached(&ann), 2);

    // The last client goes; the next one gets a new id, not b's.
    ann.run(&["clients", "delete", &b.to_string(), "--yes"])
        .success();
    let c = ann.client("c@example.com");
    assert!(c > b, "new client {c} took the id of deleted client {b}");
    // So it is a new recipient of the same mailing: it gets the letter and counts as reached.
    ann.run(&[
        "mailings",
        "add-clients",
        &mailing.to_string(),
        &c.to_string(),
    ])
    .success();
    let letters_before = server.messages().len();
    ann.run(&["send-due"]).success();
    assert_eq!(server.messages().len(), letters_before + 1);
    assert_eq!(reached(&ann), 3);
    let s = mailing_stats(&ann, mailing);
    assert_eq!(s["succeeded"], 3, "{s}");
    let to_c: Vec<Value> = attempts(&ann, &["--mailing", &mailing.to_string()])
        .into_iter()
        .filter(|x| x["client_id"] == c)
        .collect();
    assert_eq!(to_c.len(), 1, "{to_c:?}");
    assert_eq!(to_c[0]["email"], "c@example.com");

    // A mailing deleted with its history: the next mailing does not take its id.
    let msg = ann.message("Next");
    let last = ann.mailing(msg, &[a]);
    ann.run(&["send-due"]).success();
    ann.run(&[
        "mailings",
        "delete",
        &last.to_string(),
        "--yes",
        "--purge-history",
    ])
    .success();
    let next = ann.mailing(msg, &[a]);
    assert!(
        next > last,
        "new mailing {next} took the id of deleted mailing {last}"
    );
}

/// Migration 0016 on a SQLite database made by 0001-0015 and holding history: every row and
/// foreign key survives the rebuild, the cascades still work, and the id sequences start
/// above every id that history still names (here a deleted client, and a bounce report).
#[test]
fn migration_0016_keeps_the_data_and_starts_above_history() {
    let env = Env::new(common::Backend::Sqlite);
    let old = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("migrations/sqlite").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0016" {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = mailctl::db::Db::connect(&env.db_url, 1).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        mailctl::on_pool!(&db, p => migrator.run(p).await).unwrap();
        db.close().await;
    });
    let t = "2026-12-01T09:00:00+00:00";
    for statement in [
        format!(
            "INSERT INTO accounts (email, email_key, password_hash, role, created_at) VALUES ('a@x.org', 'a@x.org', 'h', 'user', '{t}')"
        ),
        format!(
            "INSERT INTO clients (owner_id, email, email_key, created_at) VALUES (1, 'c1@x.org', 'c1@x.org', '{t}'), (1, 'c2@x.org', 'c2@x.org', '{t}'), (1, 'c3@x.org', 'c3@x.org', '{t}')"
        ),
        format!(
            "INSERT INTO messages (owner_id, subject, body, created_at) VALUES (1, 'S', 'B', '{t}')"
        ),
        format!(
            "INSERT INTO mailings (owner_id, message_id, start_at, end_at, created_at) VALUES (1, 1, '{t}', '2026-12-09T09:00:00+00:00', '{t}')"
        ),
        "INSERT INTO mailing_clients (mailing_id, client_id) VALUES (1, 1), (1, 2), (1, 3)".into(),
        format!(
            "INSERT INTO deliveries (mailing_id, client_id, state, updated_at) VALUES (1, 1, 'sent', '{t}'), (1, 2, 'sent', '{t}'), (1, 3, 'sent', '{t}')"
        ),
        format!(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response, email) VALUES (1, 1, '{t}', 'success', '250 ok', 'c1@x.org'), (1, 2, '{t}', 'success', '250 ok', 'c2@x.org'), (1, 3, '{t}', 'success', '250 ok', 'c3@x.org')"
        ),
        format!(
            "INSERT INTO bounce_reports (digest, owner_id, email_key, mailing_id, client_id, kind, received_at) VALUES ('d', 1, 'old@x.org', 7, 2, 'hard', '{t}')"
        ),
        "DELETE FROM clients WHERE id = 3".into(),
    ] {
        env.sql(&statement);
    }

    let out = env.command("x").arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM pragma_foreign_key_check"),
        0
    );
    assert_eq!(env.text("PRAGMA integrity_check"), "ok");
    assert_eq!(env.count("SELECT COUNT(*) FROM clients"), 2);
    assert_eq!(env.count("SELECT COUNT(*) FROM mailing_clients"), 2);
    assert_eq!(env.count("SELECT COUNT(*) FROM deliveries"), 2);
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 3);
    assert_eq!(env.count("SELECT recipients_reached FROM mailing_stats"), 3);
    assert_eq!(env.count("SELECT COUNT(*) FROM stats_reached"), 3);
    // The sequences: above the deleted client 3 (still in attempts), above mailing 7 (named
    // by a bounce report).
    assert_eq!(
        env.count("SELECT seq FROM sqlite_sequence WHERE name = 'clients'"),
        3
    );
    assert_eq!(
        env.count("SELECT seq FROM sqlite_sequence WHERE name = 'mailings'"),
        7
    );
    env.sql(&format!("INSERT INTO clients (owner_id, email, email_key, created_at) VALUES (1, 'n@x.org', 'n@x.org', '{t}')"));
    assert_eq!(env.count("SELECT MAX(id) FROM clients"), 4);
    // The triggers are back: a new attempt counts, and a deleted client's rows still cascade.
    env.sql(&format!("INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) VALUES (1, 4, '{t}', 'success', '250 ok')"));
    assert_eq!(env.count("SELECT recipients_reached FROM mailing_stats"), 4);
    env.sql("DELETE FROM clients WHERE id = 1");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM deliveries WHERE client_id = 1"),
        0
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM mailing_clients WHERE client_id = 1"),
        0
    );
    env.sql("DELETE FROM mailings WHERE id = 1");
    assert_eq!(env.count("SELECT COUNT(*) FROM attempts"), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM mailing_stats"), 0);
}
