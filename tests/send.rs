//! The sender against a real SMTP server (tests/smtp_server.py) on both backends:
//! send-due, mailings send, retries, permanent failures, crashes, overlapping runs, workers.

mod common;

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::servers::{SmtpServer, start_smtp};
use common::{Backend, Caller, Env};
use mailparse::MailHeaderMap;
use serde_json::Value;

on_both_backends_mut!(
    delivers_letters_a_mail_client_can_read,
    temporary_failure_is_retried_on_a_later_run_after_backoff,
    permanent_failure_is_final_and_suppresses_the_address,
    server_down_defers_and_exits_1,
    slow_server_times_out_and_is_retried,
    throttling_slows_down_without_burning_tries,
    overlapping_runs_never_send_twice,
    killed_mid_run_recovers_within_the_window,
    who_may_send_and_what_is_due,
    attempts_list_is_scoped_and_filtered,
    unsubscribed_addresses_are_skipped,
    stats_counters_follow_the_sender,
    a_large_mailing_gets_its_rows_while_sending,
    rows_made_before_the_run_go_out_beside_rows_made_by_it,
    deleting_recipients_and_mailings_deletes_their_rows,
    workers_share_a_slow_relay,
    the_pace_follows_a_throttling_relay,
    a_relay_that_throttles_forever_leaves_the_rest_for_the_next_run,
    cron_log_with_format_json_is_json_lines,
);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn smtp(env: &mut Env) -> SmtpServer {
    let server = start_smtp();
    env.set("MAILCTL_SMTP_URL", &server.url());
    env.set("MAILCTL_FROM", "News <news@example.org>");
    env.set("MAILCTL_BASE_URL", "https://mail.example.org");
    server
}

fn send_due(caller: &Caller, extra: &[&str]) -> Value {
    let mut args = vec!["send-due"];
    args.extend_from_slice(extra);
    caller.json(&args)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// `n` clients `{tag}{i}@example.com` of the caller, created in one statement, then a
/// mailing of a fresh message to all of them. Returns the mailing id.
fn bulk_mailing(caller: &Caller, tag: &str, count: usize) -> i64 {
    let owner = caller.json(&["whoami"])["id"].as_i64().unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let now = if caller.env.backend == Backend::Sqlite {
        now.replace('Z', "+00:00")
    } else {
        now
    };
    caller.env.sql(&format!(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {count}) \
             INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at) \
             SELECT {owner}, '{tag}' || n || '@example.com', '{tag}' || n || '@example.com', \
                    'Person ' || n, '', '{now}' FROM seq"
    ));
    let msg = caller.message(&format!("Bulk {tag}"));
    let start = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let end = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    caller.json(&[
        "mailings",
        "add",
        "--message",
        &msg.to_string(),
        "--start",
        &start,
        "--end",
        &end,
        "--all-clients",
    ])["id"]
        .as_i64()
        .unwrap()
}

/// `mailctl send-due ARGS` as a child process (for concurrent runs and SIGKILL).
fn spawn_send_due(env: &Env, args: &[&str]) -> Child {
    env.process("cron")
        .args(["send-due", "--format", "json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailctl send-due")
}

fn wait_ok(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "send-due failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Recipient address of each received letter (the To header, parsed).
fn recipients(server: &SmtpServer) -> Vec<String> {
    server
        .messages()
        .iter()
        .map(|raw| {
            let mail = mailparse::parse_mail(raw).unwrap();
            let to = mail.headers.iter().find(|h| h.get_key() == "To").unwrap();
            match &mailparse::addrparse_header(to).unwrap()[0] {
                mailparse::MailAddr::Single(s) => s.addr.clone(),
                other => panic!("unexpected To: {other:?}"),
            }
        })
        .collect()
}

fn counts(list: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in list {
        *m.entry(r.clone()).or_insert(0) += 1;
    }
    m
}

fn attempts(caller: &Caller, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["attempts", "list"];
    args.extend_from_slice(extra);
    caller.json(&args).as_array().unwrap().clone()
}

fn status(caller: &Caller, mailing: i64) -> String {
    caller.json(&["mailings", "show", &mailing.to_string()])["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every one of the mailing's `count` recipients got exactly one letter, its delivery row is
/// `sent`, and the mailing is completed.
fn each_got_one_letter(env: &Env, server: &SmtpServer, owner: &Caller, mailing: i64, count: usize) {
    let got = counts(&recipients(server));
    assert_eq!(got.len(), count);
    assert!(got.values().all(|&c| c == 1), "a recipient got two letters");
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE mailing_id = {mailing} AND state = 'sent'"
        )),
        count as i64
    );
    assert_eq!(status(owner, mailing), "completed");
}

/// A PostgreSQL transaction left open after writing the delivery row of (mailing, client);
/// with `lock` it also holds the lock that making delivery rows holds (migration 0009).
struct Uncommitted {
    rt: tokio::runtime::Runtime,
    conn: sqlx::PgConnection,
}

impl Uncommitted {
    fn delivery(env: &Env, mailing: i64, client: i64, lock: bool) -> Uncommitted {
        use sqlx::Connection;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(async {
                let mut conn = sqlx::PgConnection::connect(&env.db_url).await?;
                sqlx::query("BEGIN").execute(&mut conn).await?;
                if lock {
                    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                        .bind(mailctl::db::deliveries::DELIVERY_ROWS_LOCK)
                        .execute(&mut conn)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO deliveries (mailing_id, client_id, state, tries, updated_at) \
                     VALUES ($1, $2, 'pending', 0, now())",
                )
                .bind(mailing)
                .bind(client)
                .execute(&mut conn)
                .await?;
                Ok::<_, sqlx::Error>(conn)
            })
            .unwrap();
        Uncommitted { rt, conn }
    }

    fn commit(mut self) {
        self.rt
            .block_on(sqlx::query("COMMIT").execute(&mut self.conn))
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// scenarios
// ---------------------------------------------------------------------------------------------

fn delivers_letters_a_mail_client_can_read(env: &mut Env) {
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let anna = ann.json(&[
        "clients",
        "add",
        "--email",
        "anna@example.com",
        "--name",
        "Анна <Каренина> & Co",
    ])["id"]
        .as_i64()
        .unwrap();
    let plain = ann.json(&["clients", "add", "--email", "plain@example.com"])["id"]
        .as_i64()
        .unwrap();
    let html = env.dir.path().join("letter.html");
    std::fs::write(
        &html,
        "<p>Здравствуйте, <b>{{full_name}}</b> ({{email}})</p>",
    )
    .unwrap();
    let msg = ann.json(&[
        "messages",
        "add",
        "--subject",
        "Привет, {{full_name}}!",
        "--body",
        "Дорогая {{full_name}}, письмо для {{email}}.",
        "--html-file",
        html.to_str().unwrap(),
    ])["id"]
        .as_i64()
        .unwrap();
    let mailing = ann.mailing(msg, &[anna, plain]);
    // Due with letters left: active before any run has touched it.
    assert_eq!(status(&ann, mailing), "active");

    let summary = send_due(&ann, &[]);
    assert_eq!(n(&summary, "sent"), 2, "{summary}");
    assert_eq!(n(&summary, "failed"), 0);
    assert_eq!(n(&summary, "deferred"), 0);
    assert!(summary["letters_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(status(&ann, mailing), "completed");

    let letters = server.messages();
    assert_eq!(letters.len(), 2);
    let raw = letters
        .iter()
        .find(|l| String::from_utf8_lossy(l).contains("anna@example.com"))
        .unwrap();
    let mail = mailparse::parse_mail(raw).unwrap();
    let h = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();
    assert_eq!(h("Subject"), "Привет, Анна <Каренина> & Co!");
    let to = mail.headers.iter().find(|h| h.get_key() == "To").unwrap();
    match &mailparse::addrparse_header(to).unwrap()[0] {
        mailparse::MailAddr::Single(s) => {
            assert_eq!(s.display_name.as_deref(), Some("Анна <Каренина> & Co"));
            assert_eq!(s.addr, "anna@example.com");
        }
        other => panic!("{other:?}"),
    }
    assert!(h("From").contains("news@example.org"));
    assert_eq!(
        h("Message-ID"),
        format!("<mailing-{mailing}.client-{anna}@example.org>")
    );
    let date = mailparse::dateparse(&h("Date")).unwrap();
    assert!((chrono::Utc::now().timestamp() - date).abs() < 120);
    let unsub = h("List-Unsubscribe");
    let prefix = format!("<https://mail.example.org/unsubscribe/{mailing}.{anna}.");
    assert!(
        unsub.starts_with(&prefix) && unsub.ends_with('>'),
        "{unsub}"
    );
    assert_eq!(h("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    assert_eq!(mail.subparts.len(), 2);
    assert_eq!(mail.subparts[0].ctype.mimetype, "text/plain");
    assert_eq!(
        mail.subparts[0].get_body().unwrap().trim(),
        "Дорогая Анна <Каренина> & Co, письмо для anna@example.com."
    );
    assert_eq!(mail.subparts[1].ctype.mimetype, "text/html");
    assert_eq!(
        mail.subparts[1].get_body().unwrap().trim(),
        "<p>Здравствуйте, <b>Анна &lt;Каренина&gt; &amp; Co</b> (anna@example.com)</p>"
    );

    // Every try is recorded with the server's own reply.
    let tries = attempts(&ann, &["--mailing", &mailing.to_string()]);
    assert_eq!(tries.len(), 2);
    for t in &tries {
        assert_eq!(t["status"], "success");
        let reply = t["server_response"].as_str().unwrap();
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    }

    // Nothing left to do: exit 0, nothing sent again.
    let again = send_due(&ann, &[]);
    assert_eq!(n(&again, "sent"), 0);
    assert_eq!(server.received_count(), 2);
}

fn temporary_failure_is_retried_on_a_later_run_after_backoff(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(
        r#"{"rcpt": [{"match": "tempfail", "reply": "451 4.3.0 Try again later", "times": 1}]}"#,
    );
    let ann = env.account("user", "ann");
    let ok = ann.client("ok@example.com");
    let temp = ann.client("tempfail@example.com");
    let mailing = ann.mailing(ann.message("Retry"), &[ok, temp]);

    let first = send_due(&ann, &[]);
    assert_eq!(
        (n(&first, "sent"), n(&first, "deferred")),
        (1, 1),
        "{first}"
    );
    assert_eq!(status(&ann, mailing), "active");
    // A 4xx is `deferred` (tried again), not a final `failure`.
    assert!(attempts(&ann, &["--status", "failure"]).is_empty());
    let failures = attempts(&ann, &["--status", "deferred"]);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["server_response"], "451 4.3.0 Try again later");
    assert_eq!(failures[0]["email"], "tempfail@example.com");

    // Backoff (default a minute): an immediate second run does not retry yet.
    let early = send_due(&ann, &[]);
    assert_eq!(n(&early, "sent") + n(&early, "deferred"), 0, "{early}");

    env.set("MAILCTL_RETRY_DELAY", "0");
    env.sql("UPDATE deliveries SET next_try_at = NULL WHERE state = 'pending'");
    let ann = env.as_("ann");
    let second = send_due(&ann, &[]);
    assert_eq!(n(&second, "sent"), 1, "{second}");
    assert_eq!(status(&ann, mailing), "completed");
    assert_eq!(
        counts(&recipients(&server)),
        HashMap::from([
            ("ok@example.com".to_string(), 1),
            ("tempfail@example.com".to_string(), 1)
        ])
    );
    let temp_tries: Vec<String> = attempts(&ann, &[])
        .iter()
        .filter(|a| a["client_id"] == temp)
        .map(|a| a["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(temp_tries, ["deferred", "success"]);
}

fn permanent_failure_is_final_and_suppresses_the_address(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"rcpt": [{"match": "reject", "reply": "550 5.1.1 User unknown"}]}"#);
    env.set("MAILCTL_RETRY_DELAY", "0");
    let ann = env.account("user", "ann");
    let ok = ann.client("ok@example.com");
    let bad = ann.client("reject@example.com");
    let first_mailing = ann.mailing(ann.message("Once"), &[ok, bad]);

    let first = send_due(&ann, &[]);
    assert_eq!((n(&first, "sent"), n(&first, "failed")), (1, 1), "{first}");
    assert_eq!(status(&ann, first_mailing), "completed");
    let fail = attempts(&ann, &["--status", "failure"]);
    assert_eq!(fail.len(), 1);
    assert_eq!(fail[0]["server_response"], "550 5.1.1 User unknown");

    let again = send_due(&ann, &[]);
    assert_eq!(n(&again, "failed") + n(&again, "sent"), 0);
    let rcpt_events = server
        .events()
        .iter()
        .filter(|e| e.contains("reject@example.com") && e.contains("\"rcpt\""))
        .count();
    assert_eq!(rcpt_events, 1, "a permanent failure is never retried");

    // A later mailing of the same owner skips the bounced address.
    ann.mailing(ann.message("Later"), &[ok, bad]);
    let later = send_due(&ann, &[]);
    assert_eq!(
        (n(&later, "sent"), n(&later, "suppressed")),
        (1, 1),
        "{later}"
    );
    assert_eq!(server.received_count(), 2);
}

fn server_down_defers_and_exits_1(env: &mut Env) {
    let mut server = smtp(env);
    env.set("MAILCTL_RETRY_DELAY", "0");
    let ann = env.account("user", "ann");
    let ids: Vec<i64> = (0..5)
        .map(|i| ann.client(&format!("r{i}@example.com")))
        .collect();
    let mailing = ann.mailing(ann.message("Down"), &ids);
    server.kill();

    let run = ann.run(&["send-due", "--concurrency", "2"]);
    run.expect_code(1);
    assert!(run.stderr().contains("unreachable"), "{}", run.stderr());
    let tries = attempts(&ann, &[]);
    assert!(!tries.is_empty());
    assert!(tries.iter().all(|t| t["status"] == "deferred"));
    assert_eq!(status(&ann, mailing), "active");

    server.restart();
    let summary = send_due(&ann, &[]);
    assert_eq!(n(&summary, "sent"), 5, "{summary}");
    assert_eq!(recipients(&server).len(), 5);
    assert_eq!(status(&ann, mailing), "completed");
}

fn slow_server_times_out_and_is_retried(env: &mut Env) {
    let server = smtp(env);
    env.set("MAILCTL_SMTP_TIMEOUT", "1");
    env.set("MAILCTL_RETRY_DELAY", "0");
    server.set_rules(r#"{"delay_seconds": 4}"#);
    let ann = env.account("user", "ann");
    let c = ann.client("slow@example.com");
    ann.mailing(ann.message("Slow"), &[c]);

    let started = Instant::now();
    let first = send_due(&ann, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timeout not applied"
    );
    assert_eq!(n(&first, "deferred"), 1, "{first}");
    let fail = attempts(&ann, &[]);
    assert!(
        fail[0]["server_response"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("timed out"),
        "{fail:?}"
    );

    server.clear_rules();
    let second = send_due(&ann, &[]);
    assert_eq!(n(&second, "sent"), 1, "{second}");
    assert!(recipients(&server).contains(&"slow@example.com".to_string()));
}

fn throttling_slows_down_without_burning_tries(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(
        r#"{"rcpt": [{"match": "", "reply": "421 4.7.0 Too many messages, slow down", "times": 1}]}"#,
    );
    let ann = env.account("user", "ann");
    let c = ann.client("busy@example.com");
    ann.mailing(ann.message("Throttle"), &[c]);

    // The default retry delay is a minute; a throttled letter comes back within a second,
    // in the same run, and costs its recipient no try.
    let first = send_due(&ann, &["--concurrency", "1"]);
    assert_eq!(n(&first, "throttled"), 1, "{first}");
    assert_eq!(n(&first, "sent"), 1, "{first}");
    assert_eq!(
        env.count("SELECT CAST(tries AS BIGINT) FROM deliveries"),
        1,
        "the throttled try is not the recipient's"
    );
    let tries = attempts(&ann, &[]);
    assert_eq!(tries.len(), 2);
    assert!(
        tries
            .iter()
            .any(|t| t["server_response"].as_str().unwrap().starts_with("421")),
        "{tries:?}"
    );
}

fn overlapping_runs_never_send_twice(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"delay_seconds": 0.01}"#);
    let ann = env.account("user", "ann");
    bulk_mailing(&ann, "o", 300);

    let a = spawn_send_due(env, &["--concurrency", "4"]);
    let b = spawn_send_due(env, &["--concurrency", "4"]);
    let (a, b) = (wait_ok(a), wait_ok(b));
    assert_eq!(n(&a, "sent") + n(&b, "sent"), 300, "{a} {b}");
    let got = counts(&recipients(&server));
    assert_eq!(got.len(), 300);
    assert!(got.values().all(|&c| c == 1), "duplicates: {got:?}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM attempts WHERE status = 'success'"),
        300
    );
}

/// SIGKILL at three moments while sending at full speed: the next run on the host records
/// what the killed one had sent (its journal) and takes its other claims over at once, with
/// the default ten-minute lease. Nobody is lost, and only letters on the wire at the moment
/// of the kill (at most `--concurrency` per kill) can arrive twice.
fn killed_mid_run_recovers_within_the_window(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"delay_seconds": 0.002}"#);
    let ann = env.account("user", "ann");
    let total = 900;
    let mailing = bulk_mailing(&ann, "k", total);
    let concurrency = 4;
    let kills = 3;
    for k in 1..=kills {
        let mut child = spawn_send_due(env, &["--concurrency", &concurrency.to_string()]);
        server.wait_for_messages(k * 150, Duration::from_secs(60));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let before = server.received_count();
    assert!(before < total, "the runs finished before they were killed");

    let started = Instant::now();
    let summary = send_due(&ann, &[]);
    assert!(n(&summary, "sent") > 0, "{summary}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the killed runs' claims waited for their lease"
    );
    let got = counts(&recipients(&server));
    assert_eq!(
        got.len(),
        total,
        "every recipient got the letter; deliveries: {}",
        env.text(
            "SELECT group_concat(state || ':' || CAST(tries AS TEXT) || ':' || COALESCE(last_reply, ''), ' | ') \
             FROM deliveries WHERE state <> 'sent' OR last_reply NOT LIKE '250%'"
        )
    );
    let duplicates: usize = got.values().map(|c| c - 1).sum();
    assert!(
        duplicates <= kills * concurrency,
        "{duplicates} duplicates, more than the {} letters on the wire",
        kills * concurrency
    );
    assert_eq!(status(&ann, mailing), "completed");
    // One success per recipient in the history, whoever recorded it.
    assert_eq!(
        env.count("SELECT COUNT(DISTINCT client_id) FROM attempts WHERE status = 'success'"),
        total as i64
    );
    let journal = env.outbox().parent().unwrap().join("journal");
    let left: Vec<_> = walk(&journal);
    assert!(left.is_empty(), "journal files left: {left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Claims follow the pace: four workers started together against a slow relay each send a
/// fair share, and together finish much sooner than one alone would.
fn workers_share_a_slow_relay(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"delay_seconds": 0.2}"#);
    let ann = env.account("user", "ann");
    let total = 240;
    let mailing = bulk_mailing(&ann, "s", total);
    let started = Instant::now();
    let workers: Vec<Child> = (0..4)
        .map(|_| spawn_send_due(env, &["--concurrency", "6"]))
        .collect();
    let each: Vec<u64> = workers
        .into_iter()
        .map(|w| n(&wait_ok(w), "sent"))
        .collect();
    let elapsed = started.elapsed();
    assert_eq!(each.iter().sum::<u64>(), total as u64, "{each:?}");
    for sent in &each {
        let share = *sent as f64 / total as f64;
        assert!((0.12..=0.38).contains(&share), "unfair shares {each:?}");
    }
    // One worker: 240 / 6 x 0.2 s = 8 s.
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?} for {each:?}");
    each_got_one_letter(env, &server, &ann, mailing, total);
}

/// A relay that takes 100 letters a second and answers 451 4.7.1 above that: without
/// `--rate`, runs started back to back deliver everything once, close to the relay's pace,
/// and a throttled letter costs its recipient no try.
fn the_pace_follows_a_throttling_relay(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"rate_limit": {"per_second": 100, "burst": 10}}"#);
    env.set("MAILCTL_RETRY_DELAY", "1");
    let ann = env.account("user", "ann");
    let total = 300;
    let mailing = bulk_mailing(&ann, "t", total);
    let started = Instant::now();
    let mut throttled = 0;
    for _ in 0..10 {
        let summary = send_due(&ann, &[]);
        throttled += n(&summary, "throttled");
        if server.received_count() >= total {
            break;
        }
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    assert!(throttled > 0, "the relay never throttled");
    assert!(
        rate >= 55.0,
        "{rate:.0} letters/s against a relay taking 100/s"
    );
    each_got_one_letter(env, &server, &ann, mailing, total);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM deliveries WHERE tries <> 1"),
        0,
        "throttled letters cost a try"
    );
}

/// A relay that throttles everything: the run gives way after its patience and exits 0,
/// saying why, with every letter left for the next run.
fn a_relay_that_throttles_forever_leaves_the_rest_for_the_next_run(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"rate_limit": {"per_second": 0}}"#);
    env.set("MAILCTL_RETRY_DELAY", "1");
    let ann = env.account("user", "ann");
    let mailing = bulk_mailing(&ann, "f", 20);
    let started = Instant::now();
    let summary = send_due(&ann, &[]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(n(&summary, "sent"), 0, "{summary}");
    assert!(n(&summary, "throttled") > 0, "{summary}");
    assert!(summary["left_for_next_run"].is_string(), "{summary}");
    assert_eq!(server.received_count(), 0);
    // Every letter is left, untried. On PostgreSQL the claims make the rows, so a run that
    // gives way may not have made them all: a recipient without a row is still to be sent.
    assert_eq!(
        env.count("SELECT COUNT(*) FROM deliveries WHERE state <> 'pending' OR tries <> 0"),
        0
    );
    assert_eq!(status(&ann, mailing), "active");
    server.clear_rules();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(n(&send_due(&ann, &[]), "sent"), 20);
    each_got_one_letter(env, &server, &ann, mailing, 20);
}

fn who_may_send_and_what_is_due(env: &mut Env) {
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let mia = env.account("manager", "mia");
    let admin = env.admin();
    let c = ann.client("x@example.com");
    let m = ann.mailing(ann.message("Mine"), &[c]).to_string();

    assert_eq!(bob.code(&["mailings", "send", &m]), 4);
    let code = mia.code(&["mailings", "send", &m]);
    assert!(code == 3 || code == 4, "manager got {code}");
    assert_eq!(server.received_count(), 0);

    // Disabled: not due, and not sendable by hand.
    mia.run(&["mailings", "disable", &m]).success();
    assert_eq!(n(&send_due(&admin, &[]), "sent"), 0);
    assert_eq!(ann.code(&["mailings", "send", &m]), 5);
    mia.run(&["mailings", "enable", &m]).success();

    // Blocked owner: not due.
    mia.run(&["users", "block", "ann@example.com"]).success();
    assert_eq!(n(&send_due(&admin, &[]), "sent"), 0);
    mia.run(&["users", "unblock", "ann@example.com"]).success();
    ann.login("ann@example.com");

    // A mailing whose window has not started is not due either.
    let later_start = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let later_end = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let ann = env.as_("ann");
    let msg = ann.message("Later").to_string();
    let later = ann.json(&[
        "mailings",
        "add",
        "--message",
        &msg,
        "--start",
        &later_start,
        "--end",
        &later_end,
        "--client",
        &c.to_string(),
    ])["id"]
        .as_i64()
        .unwrap();
    let s = admin.json(&["mailings", "send", &m]);
    assert_eq!(n(&s, "sent"), 1, "{s}");
    assert_eq!(server.received_count(), 1);
    assert_eq!(n(&send_due(&admin, &[]), "sent"), 0);
    assert_eq!(status(&ann, later), "created");

    // Dry run counts without sending.
    let dry = ann.json(&["mailings", "send", &later.to_string(), "--dry-run"]);
    assert_eq!(dry["would_send"], 1);
    assert_eq!(server.received_count(), 1);
}

fn attempts_list_is_scoped_and_filtered(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(r#"{"rcpt": [{"match": "reject", "reply": "550 5.1.1 User unknown"}]}"#);
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let mia = env.account("manager", "mia");
    let a = ann.client("a@example.com");
    let r = ann.client("reject@example.com");
    let m = ann.mailing(ann.message("Scoped"), &[a, r]);
    send_due(&ann, &[]);

    assert_eq!(attempts(&ann, &[]).len(), 2);
    assert_eq!(attempts(&bob, &[]).len(), 0);
    assert_eq!(
        bob.code(&["attempts", "list", "--mailing", &m.to_string()]),
        4
    );
    assert_eq!(attempts(&mia, &[]).len(), 2);
    let ok = attempts(&ann, &["--status", "success"]);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["email"], "a@example.com");
    for key in [
        "id",
        "mailing_id",
        "client_id",
        "email",
        "attempted_at",
        "status",
        "server_response",
    ] {
        assert!(ok[0].get(key).is_some(), "missing {key}");
    }
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(attempts(&ann, &["--since", &future]).len(), 0);
    assert_eq!(attempts(&ann, &["--until", &future]).len(), 2);
    let csv = ann.run(&["attempts", "list", "--format", "csv"]);
    let text = csv.success().stdout();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,mailing_id,client_id,email,full_name,attempted_at,status,server_response")
    );
    assert_eq!(lines.count(), 2);
}

fn unsubscribed_addresses_are_skipped(env: &mut Env) {
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let keep = ann.client("keep@example.com");
    let gone = ann.client("Gone@Example.com");
    let m = ann.mailing(ann.message("Unsub"), &[keep, gone]);
    let owner = ann.json(&["whoami"])["id"].as_i64().unwrap();
    env.sql(&format!(
        "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
             VALUES ({owner}, 'gone@example.com', 'unsubscribed', '2026-01-01T00:00:00+00:00')"
    ));
    let s = send_due(&ann, &[]);
    assert_eq!((n(&s, "sent"), n(&s, "suppressed")), (1, 1), "{s}");
    assert_eq!(recipients(&server), ["keep@example.com"]);
    assert_eq!(status(&ann, m), "completed");
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE client_id = {gone} AND state = 'suppressed'"
        )),
        1
    );
}

/// 4 workers on PostgreSQL share 10,000 recipients: each gets exactly one letter.
#[test]
fn four_workers_on_postgres_deliver_10000_once() {
    let mut env = Env::new(Backend::Postgres);
    let server = smtp(&mut env);
    let ann = env.account("user", "ann");
    let mailing = bulk_mailing(&ann, "w", 10_000);
    let workers: Vec<Child> = (0..4)
        .map(|_| spawn_send_due(&env, &["--concurrency", "8"]))
        .collect();
    let each: Vec<u64> = workers
        .into_iter()
        .map(|w| n(&wait_ok(w), "sent"))
        .collect();
    assert_eq!(each.iter().sum::<u64>(), 10_000, "{each:?}");
    // The work is shared (SKIP LOCKED), not done by whichever worker came first.
    assert!(each.iter().filter(|&&s| s > 0).count() >= 2, "{each:?}");
    each_got_one_letter(&env, &server, &ann, mailing, 10_000);
}

/// PostgreSQL drops the sender's connections mid-run (an administrator's
/// `pg_terminate_backend`, a failover): the run ends with exit 1 and one line saying so, and
/// the next run sends the rest. Every recipient gets exactly one letter: those accepted before
/// the drop are recorded (from the journal if need be), none is sent again.
#[test]
fn postgres_going_away_mid_run_exits_1_and_the_next_run_sends_the_rest() {
    const COUNT: usize = 60;
    let mut env = Env::new(Backend::Postgres);
    let server = smtp(&mut env);
    server.set_rules(r#"{"delay_seconds": 0.05}"#);
    let ann = env.account("user", "ann");
    let mailing = bulk_mailing(&ann, "gone", COUNT);
    let run = spawn_send_due(&env, &["--concurrency", "2"]);
    server.wait_for_messages(10, Duration::from_secs(30));
    env.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    // "database: error returned from database: terminating connection due to administrator
    // command" (or the socket's error, if the drop is seen on writing).
    assert!(errors[0].contains("database"), "{stderr}");
    let sent_before = server.received_count();
    assert!(
        sent_before < COUNT,
        "the run ended before the drop: {sent_before}"
    );

    server.clear_rules();
    let rest = wait_ok(spawn_send_due(&env, &["--concurrency", "2"]));
    assert!(n(&rest, "sent") > 0, "{rest}");
    each_got_one_letter(&env, &server, &ann, mailing, COUNT);
}

/// On PostgreSQL the claims make the delivery rows. Here another transaction has the row of
/// the 1,025th recipient written and not committed: the claim that reaches it waits for that
/// commit (the row's key is taken) rather than make a second row or skip the recipient, then
/// claims the committed row. Every recipient gets exactly one letter, in the same run.
#[test]
fn a_row_another_transaction_is_making_is_sent_once() {
    let mut env = Env::new(Backend::Postgres);
    let server = smtp(&mut env);
    let ann = env.account("user", "ann");
    let mailing = bulk_mailing(&ann, "late", 3_000);
    let held = env.count(&format!(
        "SELECT client_id FROM mailing_clients WHERE mailing_id = {mailing} \
         ORDER BY client_id OFFSET 1024 LIMIT 1"
    ));
    let holder = Uncommitted::delivery(&env, mailing, held, false);
    let sent = || {
        env.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE mailing_id = {mailing} AND state = 'sent'"
        ))
    };
    let mut run = spawn_send_due(&env, &["--concurrency", "4"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The run sends until its claim reaches the held row, then waits.
    let mut last = -1;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = sent();
        if now > 0 && now == last {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "the run never settled");
    }
    assert!(last < 3_000, "the run went past the held row: {last}");
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run ended with rows still to come"
    );
    holder.commit();
    let summary = wait_ok(run);
    assert_eq!(n(&summary, "sent"), 3_000, "{summary}");
    each_got_one_letter(&env, &server, &ann, mailing, 3_000);
}

/// PostgreSQL has no foreign keys on `deliveries` (migration 0009): a client deleted while its
/// delivery row is being made (a transaction holding the lock that making rows holds, with
/// the row written and not yet committed) waits for that commit, then deletes the row too.
#[test]
fn a_client_deleted_while_its_rows_are_made_leaves_none() {
    let env = Env::new(Backend::Postgres);
    let ann = env.account("user", "ann");
    let c = ann.client("c@example.com");
    let m = ann.mailing(ann.message("Hello"), &[c]);
    let maker = Uncommitted::delivery(&env, m, c, true);
    let mut delete = env
        .process("ann")
        .args(["clients", "delete", &c.to_string(), "--yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        delete.try_wait().unwrap().is_none(),
        "the delete did not wait"
    );
    maker.commit();
    assert!(delete.wait().unwrap().success());
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE client_id = {c}"
        )),
        0
    );
}

/// Nothing due: exit 0 and an all-zero summary.
#[test]
fn nothing_to_do_exits_0() {
    let env = Env::new(Backend::Sqlite);
    let admin = env.admin();
    let run = admin.run(&["send-due"]);
    run.success();
    assert!(run.stderr().contains("sent 0"), "{}", run.stderr());
}

/// Without MAILCTL_SMTP_URL letters land in the outbox as .eml files.
#[test]
fn outbox_without_smtp() {
    let env = Env::new(Backend::Sqlite);
    let ann = env.account("user", "ann");
    let c = ann.client("o@example.com");
    ann.mailing(ann.message("Outbox"), &[c]);
    assert_eq!(n(&send_due(&ann, &[]), "sent"), 1);
    let files: Vec<_> = std::fs::read_dir(env.outbox()).unwrap().collect();
    assert_eq!(files.len(), 1);
}

/// --rate caps letters per second.
#[test]
fn rate_limit_spaces_letters() {
    let mut env = Env::new(Backend::Sqlite);
    let server = smtp(&mut env);
    let ann = env.account("user", "ann");
    bulk_mailing(&ann, "r", 21);
    let started = Instant::now();
    let s = send_due(&ann, &["--rate", "20"]);
    assert_eq!(n(&s, "sent"), 21);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.received_count(), 21);
}

/// --rate with Redis is shared by all workers.
#[test]
fn rate_limit_is_shared_through_redis() {
    let mut env = Env::new(Backend::Sqlite);
    let server = smtp(&mut env);
    env.set("MAILCTL_REDIS_URL", &common::servers::redis_url());
    let ann = env.account("user", "ann");
    bulk_mailing(&ann, "s", 30);
    let started = Instant::now();
    let a = spawn_send_due(&env, &["--rate", "20", "--concurrency", "2"]);
    let b = spawn_send_due(&env, &["--rate", "20", "--concurrency", "2"]);
    let sent = n(&wait_ok(a), "sent") + n(&wait_ok(b), "sent");
    assert_eq!(sent, 30);
    // 30 letters at 20/s in total take about 1.5 s; two private buckets would take 0.75 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.received_count(), 30);
}

/// Credentials in MAILCTL_SMTP_URL are used (AUTH); wrong ones stop the run without costing
/// any recipient a permanent failure.
#[test]
fn smtp_auth_from_the_url() {
    let mut env = Env::new(Backend::Sqlite);
    let server = common::servers::start_smtp_with_auth("mailer", "s3cret p@ss");
    let ann = env.account("user", "ann");
    let c = ann.client("auth@example.com");
    ann.mailing(ann.message("Auth"), &[c]);

    let port = server.url().rsplit(':').next().unwrap().to_string();
    env.set(
        "MAILCTL_SMTP_URL",
        &format!("smtp://mailer:wrong@127.0.0.1:{port}"),
    );
    let ann = env.as_("ann");
    let run = ann.run(&["send-due"]);
    run.expect_code(1);
    assert!(
        !run.stderr().contains("wrong"),
        "password leaked: {}",
        run.stderr()
    );
    assert_eq!(server.received_count(), 0);
    let tries = attempts(&ann, &[]);
    assert_eq!(tries.len(), 1);
    assert!(
        tries[0]["server_response"]
            .as_str()
            .unwrap()
            .contains("535"),
        "{tries:?}"
    );

    env.set("MAILCTL_RETRY_DELAY", "0");
    // The right password, but the server offers no STARTTLS: without `tls=none` the password
    // is not sent in clear, and the run stops before AUTH (exit 1, one clear line).
    let plain_port = port.trim_end_matches("?tls=none");
    env.set(
        "MAILCTL_SMTP_URL",
        &format!("smtp://mailer:s3cret%20p%40ss@127.0.0.1:{plain_port}"),
    );
    let ann = env.as_("ann");
    env.sql("UPDATE deliveries SET next_try_at = NULL");
    let refused = ann.run(&["send-due"]);
    refused.expect_code(1);
    assert!(
        refused.stderr().contains("not sent in clear"),
        "{}",
        refused.stderr()
    );
    assert!(!refused.stderr().contains("s3cret"), "{}", refused.stderr());
    assert_eq!(server.received_count(), 0);

    env.set(
        "MAILCTL_SMTP_URL",
        &format!("smtp://mailer:s3cret%20p%40ss@127.0.0.1:{port}"),
    );
    let ann = env.as_("ann");
    env.sql("UPDATE deliveries SET next_try_at = NULL");
    assert_eq!(n(&send_due(&ann, &[]), "sent"), 1);
    assert_eq!(recipients(&server), ["auth@example.com"]);
}

/// Concurrency and rate out of range are usage errors, before anything is sent.
#[test]
fn absurd_concurrency_and_rate_are_usage_errors() {
    let env = Env::new(Backend::Sqlite);
    let ann = env.account("user", "ann");
    bulk_mailing(&ann, "u", 2);
    for args in [
        &["--concurrency", "0"][..],
        &["--concurrency", "100000"],
        &["--rate", "0"],
        &["--rate", "-5"],
        &["--rate", "99999999"],
    ] {
        let mut all = vec!["send-due"];
        all.extend_from_slice(args);
        let run = ann.run(&all);
        run.expect_code(2);
        assert!(run.stderr().contains(args[0]), "{args:?}: {}", run.stderr());
    }
    assert!(!env.outbox().exists(), "nothing was sent");
}

/// With `--format json` (or `MAILCTL_FORMAT=json`) a command line clap refuses ends like any
/// other error: one JSON line on stderr with `exit_code` 2, naming the flag; without it, clap's
/// usage text. A bad setting read before the run does the same.
#[test]
fn usage_errors_follow_format_json() {
    let mut env = Env::new(Backend::Sqlite);
    fn one_json_error(run: &common::Run, names: &str) {
        run.expect_code(2);
        let stderr = run.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        let line: Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(line["level"], "error", "{line}");
        assert_eq!(line["exit_code"], 2, "{line}");
        let message = line["message"].as_str().expect("message");
        assert!(message.contains(names), "{line}");
        assert!(!message.starts_with("error:"), "{line}");
    }
    let nobody = env.as_("nobody");
    one_json_error(
        &nobody.run(&["send-due", "--concurrency", "0", "--format", "json"]),
        "--concurrency",
    );
    one_json_error(
        &nobody.run(&["--format=json", "send-due", "--rate", "-5"]),
        "--rate",
    );
    let text = nobody.run(&["send-due", "--concurrency", "0"]);
    text.expect_code(2);
    assert!(text.stderr().starts_with("error: "), "{}", text.stderr());
    // The last --format wins.
    let text = nobody.run(&["--format", "json", "send-due", "--format", "csv", "--bogus"]);
    text.expect_code(2);
    assert!(text.stderr().starts_with("error: "), "{}", text.stderr());
    // Help is still help, on stdout.
    let help = nobody.run(&["send-due", "--help", "--format", "json"]);
    help.success();
    assert!(help.stdout().contains("--concurrency"));
    env.set("MAILCTL_FORMAT", "json");
    env.set("MAILCTL_SMTP_TIMEOUT", "soon");
    let nobody = env.as_("nobody");
    one_json_error(&nobody.run(&["sned-due"]), "sned-due");
    let bad_setting = nobody.run(&["send-due"]);
    assert_ne!(bad_setting.code(), 0);
    let line: Value = serde_json::from_str(bad_setting.stderr().trim()).expect("a JSON line");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("MAILCTL_SMTP_TIMEOUT"),
        "{line}"
    );
}

/// --limit caps one run; --dry-run counts without sending; the rest goes on the next run.
#[test]
fn limit_and_dry_run() {
    let env = Env::new(Backend::Sqlite);
    let ann = env.account("user", "ann");
    bulk_mailing(&ann, "l", 5);
    let dry = send_due(&ann, &["--dry-run"]);
    assert_eq!(dry["would_send"], 5);
    assert!(!env.outbox().exists(), "a dry run sends nothing");
    assert_eq!(n(&send_due(&ann, &["--limit", "2"]), "sent"), 2);
    assert_eq!(std::fs::read_dir(env.outbox()).unwrap().count(), 2);
    assert_eq!(n(&send_due(&ann, &[]), "sent"), 3);
    assert_eq!(std::fs::read_dir(env.outbox()).unwrap().count(), 5);
}

/// The sender keeps the stats counters itself, once per batch (on SQLite instead of the row
/// triggers): after runs with successes, retries and refusals over two mailings, `stats`
/// equals a plain GROUP BY over the attempts.
fn stats_counters_follow_the_sender(env: &mut Env) {
    let server = smtp(env);
    server.set_rules(
        r#"{"rcpt": [{"match": "tempfail", "reply": "451 4.3.0 Try again later", "times": 2},
                     {"match": "reject", "reply": "550 5.1.1 User unknown"}]}"#,
    );
    env.set("MAILCTL_RETRY_DELAY", "0");
    let ann = env.account("user", "ann");
    let ok: Vec<i64> = (1..=3)
        .map(|i| ann.client(&format!("ok{i}@example.com")))
        .collect();
    let temp = ann.client("tempfail@example.com");
    let bad = ann.client("reject@example.com");
    let m1 = ann.mailing(ann.message("One"), &[ok[0], ok[1], ok[2], temp, bad]);
    let m2 = ann.mailing(ann.message("Two"), &[ok[0], temp]);
    for _ in 0..3 {
        send_due(&ann, &[]);
        env.sql("UPDATE deliveries SET next_try_at = NULL WHERE state = 'pending'");
    }
    let reference = |id: i64| -> Vec<i64> {
        let q = |cond: &str| {
            env.count(&format!(
                "SELECT COUNT(*) FROM attempts WHERE mailing_id = {id} {cond}"
            ))
        };
        vec![
            q(""),
            q("AND status = 'success'"),
            q("AND status = 'failure'"),
            q("AND status = 'deferred'"),
            env.count(&format!(
                "SELECT COUNT(DISTINCT client_id) FROM attempts WHERE mailing_id = {id} AND status = 'success'"
            )),
        ]
    };
    // The first run: tempfail refused in both mailings (the rule's two times), reject refused
    // for good; the second run: tempfail delivered in both.
    assert_eq!(reference(m1), [6, 4, 1, 1, 4]);
    assert_eq!(reference(m2), [3, 2, 0, 1, 2]);
    let by_mailing = ann.json(&["stats", "--by", "mailing", "--no-cache"]);
    for (id, row) in [m1, m2].iter().zip(by_mailing.as_array().unwrap()) {
        assert_eq!(row["mailing_id"], *id, "{by_mailing}");
        let got: Vec<i64> = [
            "attempted",
            "succeeded",
            "failed",
            "deferred",
            "recipients_reached",
        ]
        .iter()
        .map(|f| row[*f].as_i64().unwrap())
        .collect();
        assert_eq!(got, reference(*id), "mailing {id}: {by_mailing}");
    }
    let by_day = ann.json(&["stats", "--by", "day", "--no-cache"]);
    let attempted: i64 = by_day
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["attempted"].as_i64().unwrap())
        .sum();
    assert_eq!(
        attempted,
        env.count("SELECT COUNT(*) FROM attempts"),
        "{by_day}"
    );
    if env.backend == Backend::Sqlite {
        assert_eq!(env.count("SELECT COUNT(*) FROM stats_batching"), 0);
    }
    // An attempt written by hand still goes through the triggers.
    env.sql(&format!(
        "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) \
         SELECT {m2}, {}, attempted_at, 'failure', 'by hand' FROM attempts LIMIT 1",
        ok[1]
    ));
    let after = ann.json(&["stats", "--mailing", &m2.to_string(), "--no-cache"]);
    assert_eq!(
        after[0]["attempted"].as_i64().unwrap(),
        reference(m2)[0],
        "{after}"
    );
}

/// A mailing larger than one look of the row-making claim (4,096 recipients, PostgreSQL),
/// sent in two runs: the first stops after 4,500 letters; the second starts from the first
/// recipient again, so it must skip the 4,500 rows made before it (more than one look) and
/// send the other 500. Every recipient gets exactly one letter, and the mailing completes.
/// The letters are recorded in many batches (the window is at most 64 x 4), so the counters
/// the sender keeps per batch (issue 17: each batch read as a rowid range on SQLite) must add
/// up to the attempts, in `stats` and in `attempts list`.
fn a_large_mailing_gets_its_rows_while_sending(env: &mut Env) {
    const COUNT: i64 = 5_000;
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let mailing = bulk_mailing(&ann, "big", COUNT as usize);
    let first = send_due(&ann, &["--concurrency", "4", "--limit", "4500"]);
    assert_eq!(n(&first, "sent"), 4_500, "{first}");
    assert_eq!(status(&ann, mailing), "active");
    let rest = send_due(&ann, &["--concurrency", "4"]);
    assert_eq!(n(&rest, "sent"), 500, "{rest}");
    assert_eq!(status(&ann, mailing), "completed");
    each_got_one_letter(env, &server, &ann, mailing, COUNT as usize);
    assert_eq!(n(&send_due(&ann, &[]), "sent"), 0);

    let stats = ann.json(&["stats", "--mailing", &mailing.to_string(), "--no-cache"]);
    for field in ["attempted", "succeeded", "recipients_reached"] {
        assert_eq!(stats[0][field].as_i64(), Some(COUNT), "{field}: {stats}");
    }
    assert_eq!(stats[0]["failed"].as_i64(), Some(0), "{stats}");
    let by_day = ann.json(&["stats", "--by", "day", "--no-cache"]);
    let per_day = |field: &str| -> i64 {
        by_day
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_i64().unwrap())
            .sum()
    };
    assert_eq!(per_day("attempted"), COUNT, "{by_day}");
    assert_eq!(per_day("recipients_reached"), COUNT, "{by_day}");
    let listed = attempts(
        &ann,
        &["--mailing", &mailing.to_string(), "--status", "success"],
    );
    assert_eq!(listed.len() as i64, COUNT);
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(DISTINCT client_id) FROM attempts WHERE mailing_id = {mailing}"
        )),
        COUNT
    );
}

/// Delivery rows already `pending` and never tried (made up front by an older version, or
/// released by a run) go out in the same run as a mailing whose rows the run makes (on
/// PostgreSQL the claims look for them only when a turn made no row), each letter once.
fn rows_made_before_the_run_go_out_beside_rows_made_by_it(env: &mut Env) {
    const COUNT: usize = 600;
    let server = smtp(env);
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let made_before = bulk_mailing(&ann, "old", COUNT);
    let made_now = bulk_mailing(&bob, "new", COUNT);
    let now = if env.backend == Backend::Sqlite {
        "2026-01-01T00:00:00.000000+00:00"
    } else {
        "2026-01-01T00:00:00Z"
    };
    env.sql(&format!(
        "INSERT INTO deliveries (mailing_id, client_id, state, tries, updated_at) \
         SELECT mailing_id, client_id, 'pending', 0, '{now}' FROM mailing_clients \
          WHERE mailing_id = {made_before}"
    ));
    let run = wait_ok(spawn_send_due(env, &["--concurrency", "4"]));
    assert_eq!(n(&run, "sent"), 2 * COUNT as u64, "{run}");
    let got = counts(&recipients(&server));
    assert_eq!(got.len(), 2 * COUNT);
    assert!(got.values().all(|&c| c == 1), "a recipient got two letters");
    for (owner, mailing) in [(&ann, made_before), (&bob, made_now)] {
        assert_eq!(
            env.count(&format!(
                "SELECT COUNT(*) FROM deliveries WHERE mailing_id = {mailing} AND state = 'sent'"
            )),
            COUNT as i64
        );
        assert_eq!(status(owner, mailing), "completed");
    }
}

/// A deleted recipient loses its delivery rows and keeps its attempts (id, address and name)
/// and its first-success markers (issue 18); a deleted mailing (`--purge-history`) takes its deliveries and attempts along (foreign keys on SQLite,
/// triggers on PostgreSQL: migration 0009).
fn deleting_recipients_and_mailings_deletes_their_rows(env: &mut Env) {
    let _server = smtp(env);
    let ann = env.account("user", "ann");
    let a = ann.client("a@example.com");
    let b = ann.client("b@example.com");
    let m1 = ann.mailing(ann.message("One"), &[a, b]);
    let m2 = ann.mailing(ann.message("Two"), &[a, b]);
    assert_eq!(n(&send_due(&ann, &[]), "sent"), 4);
    let count = |sql: &str| env.count(sql);
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE client_id = {a}"
        )),
        2
    );

    ann.run(&["clients", "delete", &a.to_string(), "--yes"])
        .success();
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE client_id = {a}"
        )),
        0
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM attempts WHERE client_id = {a} AND email = 'a@example.com'"
        )),
        2
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM attempts WHERE client_id IS NULL"),
        0
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM stats_reached WHERE client_id = {a}"
        )),
        2
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE client_id = {b}"
        )),
        2
    );

    ann.run(&[
        "mailings",
        "delete",
        &m1.to_string(),
        "--yes",
        "--purge-history",
    ])
    .success();
    for table in ["deliveries", "attempts", "stats_reached"] {
        assert_eq!(
            count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE mailing_id = {m1}"
            )),
            0,
            "{table}"
        );
    }
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE mailing_id = {m2}"
        )),
        1
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM attempts WHERE mailing_id = {m2}"
        )),
        2
    );
    // The counters agree (the stats tests check them in depth).
    let by_mailing = ann.json(&["stats", "--mailing", &m2.to_string(), "--no-cache"]);
    assert_eq!(by_mailing[0]["recipients_reached"], 2, "{by_mailing}");
}

/// The README's cron line, `send-due --format json >> log 2>&1` (issue 18, point 8): a run that
/// recovers a killed run's journal, one without a writable journal and one that ends in an
/// error leave a log where every line is a JSON object: summaries on stdout; notes, warnings
/// and the error (with its exit code) on stderr. Without --format json the text is unchanged.
fn cron_log_with_format_json_is_json_lines(env: &mut Env) {
    let mut server = smtp(env);
    env.set("MAILCTL_RETRY_DELAY", "0");
    server.set_rules(r#"{"delay_seconds": 0.005}"#);
    let ann = env.account("user", "ann");
    let total = 300;
    bulk_mailing(&ann, "j", total);
    let mut child = spawn_send_due(env, &["--concurrency", "2"]);
    server.wait_for_messages(50, Duration::from_secs(60));
    child.kill().unwrap(); // SIGKILL: its journal is left for the next run
    child.wait().unwrap();
    assert!(server.received_count() < total, "the run finished first");
    server.clear_rules();

    let log = env.dir.path().join("send.log");
    let cron = |env: &Env| -> i32 {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        env.process("cron")
            .args(["send-due", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap()
            .code()
            .unwrap()
    };
    let lines = || -> Vec<Value> {
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\nlog:\n{text}"));
                assert!(v.is_object(), "{l}");
                v
            })
            .collect()
    };
    let with_level = |all: &[Value], level: &str, words: &str| -> Vec<Value> {
        all.iter()
            .filter(|v| v["level"] == level && v["message"].as_str().unwrap().contains(words))
            .cloned()
            .collect()
    };

    // 1. The killed run is recovered: a note, and the summary.
    assert_eq!(cron(env), 0);
    let all = lines();
    let recovered = with_level(&all, "info", "recovered 1 killed run");
    assert_eq!(recovered.len(), 1, "{all:?}");
    assert!(
        recovered[0]["at"].as_str().unwrap().ends_with('Z'),
        "{recovered:?}"
    );
    let summaries: Vec<&Value> = all.iter().filter(|v| v.get("sent").is_some()).collect();
    assert_eq!(summaries.len(), 1, "{all:?}");
    assert_eq!(counts(&recipients(&server)).len(), total);

    // 2. The journal cannot be written: a warning, and the run goes on.
    let journal = env.outbox().parent().unwrap().join("journal");
    std::fs::remove_dir_all(&journal).unwrap();
    std::fs::write(&journal, "not a directory").unwrap();
    let c = ann.client("more@example.com");
    ann.mailing(ann.message("More"), &[c]);
    assert_eq!(cron(env), 0);
    let all = lines();
    assert_eq!(
        with_level(&all, "warning", "no send journal").len(),
        1,
        "{all:?}"
    );
    assert_eq!(all.iter().filter(|v| v.get("sent").is_some()).count(), 2);

    // 3. The relay is down: the run ends in an error, also one JSON line, with the exit code.
    server.kill();
    let d = ann.client("down@example.com");
    ann.mailing(ann.message("Down"), &[d]);
    assert_eq!(cron(env), 1);
    let all = lines();
    let last = all.last().unwrap();
    assert_eq!(last["level"], "error", "{all:?}");
    assert_eq!(last["exit_code"], 1, "{last}");
    assert!(
        last["message"].as_str().unwrap().contains("unreachable"),
        "{last}"
    );
    assert_eq!(all.iter().filter(|v| v.get("sent").is_some()).count(), 3);

    // For people: the same error as text.
    let run = ann.run(&["send-due"]);
    run.expect_code(1);
    assert!(
        run.stderr()
            .lines()
            .any(|l| l.starts_with("mailctl: error: ")),
        "{}",
        run.stderr()
    );
    assert!(!run.stderr().contains("\"level\""), "{}", run.stderr());
}
