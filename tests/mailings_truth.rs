//! Issue 18, points 1-4, on both backends: times in the user's zone, no silent empty or dead
//! mailings, recipients and a status that are true when read, and a dry run whose counts are
//! what the real run then does.

mod common;

use chrono::{Duration, SecondsFormat, Utc};
use common::servers::{SmtpServer, start_smtp};
use common::{Backend, Caller, Env};
use serde_json::Value;

on_both_backends_mut!(
    times_are_read_and_shown_in_the_users_zone,
    no_mailing_without_recipients_or_with_a_past_window,
    recipients_and_status_are_true_when_read,
    dry_run_lists_every_letter_and_matches_the_real_run,
);

fn smtp(env: &mut Env) -> SmtpServer {
    let server = start_smtp();
    env.set("MAILCTL_SMTP_URL", &server.url());
    env.set("MAILCTL_FROM", "News <news@example.org>");
    server
}

/// A time as SQL text for the test's backend (SQLite keeps the form sqlx writes).
fn sql_time(env: &Env, t: chrono::DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Micros, true);
    match env.backend {
        Backend::Sqlite => s.replace('Z', "+00:00"),
        Backend::Postgres => s,
    }
}

fn suppress(env: &Env, owner: &Caller, email: &str) {
    let owner_id = owner.json(&["whoami"])["id"].as_i64().unwrap();
    let now = sql_time(env, Utc::now());
    env.sql(&format!(
        "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
         VALUES ({owner_id}, '{email}', 'unsubscribed', '{now}')"
    ));
}

fn show(caller: &Caller, id: i64) -> Value {
    caller.json(&["mailings", "show", &id.to_string()])
}

fn listed(caller: &Caller, status: &str) -> Vec<i64> {
    caller
        .json(&["mailings", "list", "--status", status])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

fn states(caller: &Caller, id: i64) -> Vec<(String, String)> {
    caller
        .json(&["mailings", "recipients", &id.to_string()])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["email"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn utc(v: &Value) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn times_are_read_and_shown_in_the_users_zone(env: &mut Env) {
    // Moscow has kept UTC+3 all year since 2014: expected instants are plain arithmetic.
    env.set("TZ", "Europe/Moscow");
    let ann = env.account("user", "ann");
    let msg = ann.message("Hi").to_string();
    ann.client("one@example.com");
    let add = |start: &str, end: &str, format: &str| {
        ann.run(&[
            "mailings",
            "add",
            "--message",
            &msg,
            "--all-clients",
            "--start",
            start,
            "--end",
            end,
            "--format",
            format,
        ])
    };
    // A time without offset is Moscow time, with a space or a T; JSON stays UTC.
    let run = add("2036-12-05 09:00", "2036-12-05T18:00", "json");
    let m = run.success().json();
    assert_eq!(m["start_at"], "2036-12-05T06:00:00Z");
    assert_eq!(m["end_at"], "2036-12-05T15:00:00Z");
    // The window is echoed on stderr, in local time.
    let said = run.stderr();
    assert!(said.contains("starts Fri 05 Dec 09:00 MSK, in "), "{said}");
    assert!(said.contains("ends Fri 05 Dec 18:00 MSK"), "{said}");
    let id = m["id"].as_i64().unwrap().to_string();
    // A table shows local time with the zone; CSV keeps UTC.
    let table = ann.run(&["mailings", "show", &id]).success().stdout();
    assert!(table.contains("2036-12-05 09:00:00 MSK"), "{table}");
    let csv = ann
        .run(&["mailings", "list", "--format", "csv"])
        .success()
        .stdout();
    assert!(csv.contains("2036-12-05T06:00:00Z"), "{csv}");
    assert!(!csv.contains("MSK"), "{csv}");
    // RFC 3339 with an offset means what it says; a date alone is local midnight.
    let m = add("2036-12-05T09:00:00Z", "2036-12-07", "json")
        .success()
        .json();
    assert_eq!(m["start_at"], "2036-12-05T09:00:00Z");
    assert_eq!(m["end_at"], "2036-12-06T21:00:00Z");
    // Relative and friendly forms.
    let before = Utc::now();
    let m = add("+2h", "+3d", "json").success().json();
    let start = utc(&m["start_at"]);
    assert!(start >= before + Duration::hours(2) && start <= Utc::now() + Duration::hours(2));
    let end = utc(&m["end_at"]);
    assert!(end >= before + Duration::days(3) && end <= Utc::now() + Duration::days(3));
    let m = add("tomorrow 09:00", "tomorrow 18:30", "json")
        .success()
        .json();
    let moscow_today = (Utc::now() + Duration::hours(3)).date_naive();
    let tomorrow = moscow_today.succ_opt().unwrap();
    let expected = tomorrow.and_hms_opt(6, 0, 0).unwrap().and_utc();
    // (Run at Moscow midnight, "today" may have moved on between the two clocks.)
    let got = utc(&m["start_at"]);
    assert!(
        got == expected || got == expected + Duration::days(1),
        "{got} vs {expected}"
    );
    assert_eq!(utc(&m["end_at"]) - got, Duration::minutes(570));
    // `edit` reads the same forms and echoes the window.
    let edited = ann.run(&[
        "mailings",
        "edit",
        &id,
        "--end",
        "2036-12-06 10:15",
        "--format",
        "json",
    ]);
    assert_eq!(edited.success().json()["end_at"], "2036-12-06T07:15:00Z");
    assert!(
        edited.stderr().contains("ends Sat 06 Dec 10:15 MSK"),
        "{}",
        edited.stderr()
    );
    // Every time flag goes through the same parser: stats and attempts too.
    let stats = ann.json(&["stats", "--since", "-7d", "--until", "tomorrow 00:00"]);
    assert_eq!(stats[0]["attempted"], 0, "{stats}");
    ann.json(&["attempts", "list", "--since", "2026-12-01 00:00"]);
    for (args, field) in [
        (vec!["stats", "--since", "next week"], "since"),
        (
            vec!["attempts", "list", "--until", "tomorrow 25:00"],
            "until",
        ),
    ] {
        let run = ann.run(&args);
        run.expect_code(5);
        assert!(
            run.stderr().contains(&format!("{field}: ")),
            "{}",
            run.stderr()
        );
    }
    let bad = add("next week", "+1d", "json");
    bad.expect_code(5);
    assert!(
        bad.stderr().contains("start: 'next week' is not a time"),
        "{}",
        bad.stderr()
    );
    assert_eq!(bad.stderr().lines().count(), 1, "{}", bad.stderr());
}

fn no_mailing_without_recipients_or_with_a_past_window(env: &mut Env) {
    let ann = env.account("user", "ann");
    let msg = ann.message("Hi").to_string();
    let c = ann.client("one@example.com").to_string();
    let base = [
        "mailings",
        "add",
        "--message",
        &msg,
        "--start",
        "now",
        "--end",
        "+1d",
    ];
    // No recipient option at all: a usage error naming the options.
    let run = ann.run(&base);
    run.expect_code(2);
    assert!(run.stderr().contains("--client"), "{}", run.stderr());
    assert!(run.stderr().contains("--all-clients"), "{}", run.stderr());
    // A window already over: invalid input, naming the field.
    let mut past = vec!["mailings", "add", "--message", &msg, "--client", &c];
    past.extend(["--start", "-3d", "--end", "-1d"]);
    let run = ann.run(&past);
    run.expect_code(5);
    assert!(run.stderr().contains("end: "), "{}", run.stderr());
    assert!(run.stderr().contains("already passed"), "{}", run.stderr());
    // Nothing was created by either.
    assert_eq!(ann.json(&["mailings", "list"]).as_array().unwrap().len(), 0);
    // With a recipient it works; moving its end into the past is refused and changes nothing.
    let mut ok = base.to_vec();
    ok.extend(["--client", &c]);
    let m = ann.run(&ok);
    m.success();
    assert!(m.stderr().contains("started "), "{}", m.stderr());
    let id = ann.json(&["mailings", "list"])[0]["id"].as_i64().unwrap();
    let end_before = show(&ann, id)["end_at"].clone();
    ann.run(&["mailings", "edit", &id.to_string(), "--end", "-1h"])
        .expect_code(5);
    assert_eq!(show(&ann, id)["end_at"], end_before);
    // Ending it now is allowed.
    ann.run(&["mailings", "edit", &id.to_string(), "--end", "now"])
        .success();
}

fn recipients_and_status_are_true_when_read(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"rcpt": [{"match": "reject", "reply": "550 5.1.1 User unknown"}]}"#);
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let boss = env.account("manager", "boss");
    let msg = ann.message("Hi");
    let ok = ann.client("ok@example.com");
    let bad = ann.client("reject@example.com");
    let gone = ann.client("gone@example.com");
    suppress(env, &ann, "gone@example.com");

    // Not started yet: created, with every recipient pending.
    let m = msg.to_string();
    let later = ann.json(&[
        "mailings",
        "add",
        "--message",
        &m,
        "--client",
        &ok.to_string(),
        "--start",
        "+1h",
        "--end",
        "+2h",
    ]);
    assert_eq!(later["status"], "created");
    assert_eq!(later["pending"], 1);
    let later = later["id"].as_i64().unwrap();

    // Due: active before any run touched it; the suppressed address reads suppressed.
    let due = ann.mailing(msg, &[ok, bad, gone]);
    let before = show(&ann, due);
    assert_eq!(before["status"], "active", "{before}");
    assert_eq!(
        (&before["pending"], &before["suppressed"], &before["sent"]),
        (&Value::from(2), &Value::from(1), &Value::from(0)),
        "{before}"
    );
    assert_eq!(listed(&ann, "active"), [due]);
    assert_eq!(listed(&ann, "created"), [later]);
    let mut st = states(&ann, due);
    st.sort();
    assert_eq!(
        st,
        [
            ("gone@example.com".into(), "suppressed".into()),
            ("ok@example.com".into(), "pending".into()),
            ("reject@example.com".into(), "pending".into()),
        ]
    );

    // After a run: every recipient has a final outcome, so completed, with the counts.
    ann.json(&["send-due"]);
    let after = show(&ann, due);
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(
        (
            &after["sent"],
            &after["failed"],
            &after["suppressed"],
            &after["pending"]
        ),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from(1),
            &Value::from(0)
        ),
        "{after}"
    );
    let failed = ann.json(&[
        "mailings",
        "recipients",
        &due.to_string(),
        "--state",
        "failed",
    ]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["email"], "reject@example.com");
    assert_eq!(failed[0]["tries"], 1);
    assert!(
        failed[0]["last_reply"].as_str().unwrap().starts_with("550"),
        "{failed:?}"
    );
    assert!(failed[0]["updated_at"].as_str().unwrap().ends_with('Z'));
    let csv = ann
        .run(&[
            "mailings",
            "recipients",
            &due.to_string(),
            "--format",
            "csv",
        ])
        .success()
        .stdout();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("client_id,email,full_name,state,tries,last_reply,updated_at,next_try_at")
    );
    assert_eq!(lines.count(), 3);
    let table = ann
        .run(&[
            "mailings",
            "recipients",
            &due.to_string(),
            "--state",
            "sent",
        ])
        .success()
        .stdout();
    assert!(
        table.contains("ok@example.com") && !table.contains("reject@"),
        "{table}"
    );

    // A recipient added later: active again, one letter pending.
    let newer = ann.client("new@example.com");
    ann.run(&[
        "mailings",
        "add-clients",
        &due.to_string(),
        &newer.to_string(),
    ])
    .success();
    let again = show(&ann, due);
    assert_eq!(
        (&again["status"], &again["pending"]),
        (&Value::from("active"), &Value::from(1)),
        "{again}"
    );
    // Disabled is shown beside the status and filtered on.
    boss.run(&["mailings", "disable", &due.to_string()])
        .success();
    assert_eq!(listed(&ann, "disabled"), [due]);
    assert_eq!(show(&ann, due)["status"], "active");
    boss.run(&["mailings", "enable", &due.to_string()])
        .success();
    assert!(listed(&ann, "disabled").is_empty());

    // The window ends with that letter still pending: completed, with letters left.
    let past = sql_time(env, Utc::now() - Duration::minutes(1));
    let start = sql_time(env, Utc::now() - Duration::hours(2));
    env.sql(&format!(
        "UPDATE mailings SET start_at = '{start}', end_at = '{past}' WHERE id = {due}"
    ));
    let ended = show(&ann, due);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["ended_with_letters_left"], true, "{ended}");
    assert_eq!(ended["pending"], 1);
    assert_eq!(listed(&ann, "ended-with-letters-left"), [due]);
    assert_eq!(listed(&ann, "completed"), [due]);

    // Recipients follow the same rules as show: another user's mailing is not found; a
    // manager reads it.
    bob.run(&["mailings", "recipients", &due.to_string()])
        .expect_code(4);
    assert_eq!(
        boss.json(&["mailings", "recipients", &due.to_string()])
            .as_array()
            .unwrap()
            .len(),
        4
    );
    ann.run(&["mailings", "recipients", "999999"])
        .expect_code(4);
    ann.run(&[
        "mailings",
        "recipients",
        &due.to_string(),
        "--state",
        "bogus",
    ])
    .expect_code(2);
}

fn dry_run_lists_every_letter_and_matches_the_real_run(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(
        r#"{"rcpt": [{"match": "reject", "reply": "550 5.1.1 User unknown"},
                     {"match": "tempfail", "reply": "451 4.3.0 Try again later"}]}"#,
    );
    let ann = env.account("user", "ann");
    let msg = ann.json(&[
        "messages",
        "add",
        "--subject",
        "Hello {{full_name}}",
        "--body",
        "Hi",
    ])["id"]
        .as_i64()
        .unwrap();
    let ok1 = ann.client("ok1@example.com");
    let ok2 = ann.client("ok2@example.com");
    let bad = ann.client("reject@example.com");
    let temp = ann.client("tempfail@example.com");
    let gone = ann.client("gone@example.com");
    suppress(env, &ann, "gone@example.com");
    let main = ann.mailing(msg, &[ok1, ok2, bad, temp, gone]);
    let small = ann.mailing(msg, &[ok1]);

    // Before: four letters to send, one to set aside; every line in JSON, CSV and a table.
    let dry = ann.json(&["send-due", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["mailings"], serde_json::json!([main, small]));
    assert_eq!(
        (&dry["would_send"], &dry["would_suppress"]),
        (&Value::from(5), &Value::from(1)),
        "{dry}"
    );
    let letters = dry["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 6);
    let gone_line = letters
        .iter()
        .find(|l| l["email"] == "gone@example.com")
        .unwrap();
    assert_eq!(
        (&gone_line["action"], &gone_line["reason"]),
        (&Value::from("suppress"), &Value::from("suppressed"))
    );
    let ok_line = letters
        .iter()
        .find(|l| l["email"] == "ok2@example.com")
        .unwrap();
    assert_eq!(ok_line["action"], "send");
    assert_eq!(ok_line["subject"], "Hello Test Person");
    let csv = ann
        .run(&["send-due", "--dry-run", "--format", "csv"])
        .success()
        .stdout();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("mailing_id,client_id,email,subject,action,reason")
    );
    assert_eq!(lines.filter(|l| l.contains(",send,")).count(), 5, "{csv}");
    let table = ann.run(&["send-due", "--dry-run"]);
    table.success();
    assert!(
        table.stdout().contains("Hello Test Person"),
        "{}",
        table.stdout()
    );
    assert!(
        table.stderr().contains("would send 5 letters"),
        "{}",
        table.stderr()
    );
    // --limit: the letters past it are listed as skipped.
    let limited = ann.json(&["send-due", "--dry-run", "--limit", "2"]);
    assert_eq!(limited["would_send"], 2);
    let over = limited["letters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["reason"] == "over --limit")
        .count();
    assert_eq!(over, 3);
    assert_eq!(server.received_count(), 0, "a dry run sends nothing");

    // The real run does what the dry run said.
    let real = ann.json(&["send-due"]);
    let tried = ["sent", "failed", "deferred"]
        .iter()
        .map(|k| real[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(tried, 5, "{real}");
    assert_eq!(real["suppressed"], 1, "{real}");
    assert_eq!(real["mailings"], 2, "{real}");

    // After: nothing to send; each skip has its reason; the finished mailing is not counted.
    let dry = ann.json(&["send-due", "--dry-run"]);
    assert_eq!(dry["would_send"], 0, "{dry}");
    assert_eq!(dry["mailings"], serde_json::json!([main]), "{dry}");
    let reason = |email: &str| {
        dry["letters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["email"] == email)
            .unwrap_or_else(|| panic!("{email} not in {dry}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(reason("ok1@example.com"), "already sent");
    assert_eq!(reason("reject@example.com"), "failed before");
    assert_eq!(reason("tempfail@example.com"), "retry not due");
    assert_eq!(reason("gone@example.com"), "suppressed before");
    let real = ann.json(&["send-due"]);
    assert_eq!(
        (&real["sent"], &real["mailings"]),
        (&Value::from(0), &Value::from(1)),
        "{real}"
    );

    // `mailings send ID --dry-run` plans that mailing only.
    let one = ann.json(&["mailings", "send", &small.to_string(), "--dry-run"]);
    assert_eq!(one["would_send"], 0);
    assert_eq!(one["mailings"], serde_json::json!([]));
}
