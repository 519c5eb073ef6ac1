//! The one SMTP path (src/smtp/) against real servers that differ from the usual test server:
//! one without PIPELINING, one with a multi-line greeting; `doctor` connects exactly as
//! sending does; letters reach DATA with CRLF line ends only; outbox files are private.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::servers::{SmtpServer, start_smtp, start_smtp_with_args};
use common::{Backend, Caller, Env};

on_both_backends_mut!(
    a_server_without_pipelining_gets_every_letter,
    a_multi_line_greeting_is_read_whole,
    bare_cr_and_lf_never_reach_data,
);

fn use_server(env: &mut Env, server: &SmtpServer) {
    env.set("MAILCTL_SMTP_URL", &server.url());
    env.set("MAILCTL_FROM", "News <news@example.org>");
}

fn bulk(caller: &Caller, n: usize) -> i64 {
    let ids: Vec<i64> = (0..n)
        .map(|i| caller.client(&format!("p{i}@example.com")))
        .collect();
    caller.mailing(caller.message("Path"), &ids)
}

fn send_due(caller: &Caller) -> serde_json::Value {
    caller.json(&["send-due", "--concurrency", "2"])
}

fn doctor(env: &Env) -> serde_json::Value {
    let run = env.as_("x").run(&["doctor", "--format", "json"]);
    let report = run.json();
    report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "smtp")
        .cloned()
        .unwrap_or_else(|| panic!("no smtp check in {report}"))
}

/// The plain, one-command-at-a-time exchange: every letter arrives once, with several letters
/// per connection (RSET after a refusal keeps the session), and a refusal is recorded exactly.
fn a_server_without_pipelining_gets_every_letter(env: &mut Env) {
    let server = start_smtp_with_args(&["--no-pipelining"]);
    use_server(env, &server);
    server.set_rules(r#"{"rcpt": [{"match": "p3@", "reply": "550 5.1.1 User unknown"}]}"#);
    let ann = env.account("user", "ann");
    bulk(&ann, 8);
    let summary = send_due(&ann);
    assert_eq!(summary["sent"], 7, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(server.received_count(), 7);
    let refused = env
        .text("SELECT server_response FROM attempts WHERE status <> 'success' ORDER BY id LIMIT 1");
    assert_eq!(refused, "550 5.1.1 User unknown");
    assert!(
        doctor(env)["detail"]
            .as_str()
            .unwrap()
            .contains("EHLO ok, not encrypted"),
    );
    let with_pipelining = doctor_of(&start_smtp());
    assert!(with_pipelining.contains("PIPELINING"), "{with_pipelining}");
}

fn doctor_of(server: &SmtpServer) -> String {
    let mut env = Env::new(Backend::Sqlite);
    use_server(&mut env, server);
    env.admin();
    doctor(&env)["detail"].as_str().unwrap().to_string()
}

/// `220-...` lines before the last `220 ...`: legal, and both the sender and `doctor` read it.
fn a_multi_line_greeting_is_read_whole(env: &mut Env) {
    let server = start_smtp_with_args(&["--multiline-greeting"]);
    use_server(env, &server);
    let ann = env.account("user", "ann");
    bulk(&ann, 3);
    assert_eq!(send_due(&ann)["sent"], 3);
    assert_eq!(server.received_count(), 3);
    let check = doctor(env);
    assert_ne!(check["status"], "FAIL", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains("EHLO ok"),
        "{check}"
    );
}

/// A body with a bare CR before ".\r\n" (the SMTP smuggling shape) and bare LFs arrives with
/// CRLF line ends only, and still as one letter.
fn bare_cr_and_lf_never_reach_data(env: &mut Env) {
    let server = start_smtp();
    use_server(env, &server);
    let ann = env.account("user", "ann");
    let c = ann.client("crlf@example.com");
    let message = ann.json(&[
        "messages",
        "add",
        "--subject",
        "Smuggle",
        "--body",
        "L1\rL2\r.\r\nMAIL FROM:<evil@example.com>\nL3\n",
    ])["id"]
        .as_i64()
        .unwrap();
    ann.mailing(message, &[c]);
    assert_eq!(send_due(&ann)["sent"], 1);
    let got = server.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "one letter, not two");
    let raw = &got[0];
    for (i, b) in raw.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert_eq!(raw.get(i.wrapping_sub(1)), Some(&b'\r'), "bare LF at {i}"),
            _ => {}
        }
    }
}

/// Outbox letters carry live links: created readable by their owner only, CRLF throughout.
#[test]
fn outbox_letters_are_private() {
    let env = Env::new(Backend::Sqlite);
    let ann = env.account("user", "ann");
    bulk(&ann, 2);
    assert_eq!(send_due(&ann)["sent"], 2);
    let files: Vec<_> = std::fs::read_dir(env.outbox())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for f in files {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    }
}

/// A relay that answers every MAIL with 421 is throttling, not down: the run gives way with
/// exit 0 (saying so), and the letter waits without costing its recipient a try.
#[test]
fn a_421_to_mail_defers_without_a_try() {
    let server = start_smtp();
    let mut env = Env::new(Backend::Sqlite);
    use_server(&mut env, &server);
    env.set("MAILCTL_RETRY_DELAY", "1");
    server.set_rules(r#"{"rate_limit": {"per_second": 0, "reply": "421 4.7.0 Try later"}}"#);
    let ann = env.account("user", "ann");
    bulk(&ann, 1);
    let summary = send_due(&ann);
    assert!(summary["throttled"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["sent"], 0, "{summary}");
    assert!(summary["left_for_next_run"].is_string(), "{summary}");
    assert_eq!(
        env.count("SELECT CAST(tries AS BIGINT) FROM deliveries"),
        0,
        "a throttled try is not the recipient's"
    );
}
