//! Issue 15 points 1-2: `messages preview`, `mailings preview` (the exact letter) and
//! `mailings test --to` (one copy, no delivery, attempt or stats), on both backends.

mod common;

use common::servers::start_smtp;
use common::{Caller, Env};
use serde_json::Value;

on_both_backends!(
    mailing_preview_equals_the_letter_sent,
    message_preview_without_mailing_headers,
    preview_and_test_refuse_what_the_caller_may_not_see,
);
on_both_backends_mut!(test_send_leaves_stats_and_attempts_unchanged);

fn add_client(who: &Caller, args: &[&str]) -> i64 {
    let mut all = vec!["clients", "add"];
    all.extend_from_slice(args);
    who.json(&all)["id"].as_i64().unwrap()
}

/// A message with a text and an HTML part, using a field, a default and the name.
fn rich_message(env: &Env, who: &Caller) -> i64 {
    let html = env.dir.path().join("body.html");
    std::fs::write(
        &html,
        "<p>Привет, {{full_name}} из {{city|ниоткуда}}!</p>\n",
    )
    .unwrap();
    who.json(&[
        "messages",
        "add",
        "--subject",
        "Новости для {{full_name}}",
        "--body",
        "Привет, {{full_name}} из {{city|ниоткуда}}!\nКод: {{code}}",
        "--html-file",
        html.to_str().unwrap(),
    ])["id"]
        .as_i64()
        .unwrap()
}

/// The letter without its Date header (the one line allowed to differ).
fn without_date(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).expect("letters are ASCII on the wire");
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if !line.starts_with("Date: ") {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

fn header(raw: &[u8], name: &str) -> Option<String> {
    let mail = mailparse::parse_mail(raw).unwrap();
    mail.headers
        .iter()
        .find(|h| h.get_key().eq_ignore_ascii_case(name))
        .map(|h| h.get_value())
}

fn mailing_preview_equals_the_letter_sent(env: &Env) {
    let ann = env.account("user", "ann");
    let first = add_client(
        &ann,
        &[
            "--email",
            "first@example.com",
            "--name",
            "Первый",
            "--field",
            "code=1",
        ],
    );
    let ivan = add_client(
        &ann,
        &[
            "--email",
            "ivan@example.com",
            "--name",
            "Иван Петров",
            "--field",
            "city=Москва",
            "--field",
            "code=42",
        ],
    );
    let m = rich_message(env, &ann);
    let mailing = ann.mailing(m, &[first, ivan]).to_string();

    let preview = ann.run(&[
        "mailings",
        "preview",
        &mailing,
        "--client",
        &ivan.to_string(),
    ]);
    preview.success();
    let previewed = preview.output.stdout.clone();
    assert!(
        previewed.windows(2).any(|w| w == b"\r\n"),
        "CRLF as on the wire"
    );
    let default = ann.run(&["mailings", "preview", &mailing]);
    default.success();
    assert!(
        header(&default.output.stdout, "To")
            .unwrap()
            .contains("first@example.com"),
        "the first recipient by default"
    );

    assert_eq!(ann.json(&["send-due"])["sent"], 2);
    let sent: Vec<Vec<u8>> = std::fs::read_dir(env.outbox())
        .unwrap()
        .map(|f| std::fs::read(f.unwrap().path()).unwrap())
        .collect();
    let to_ivan = sent
        .iter()
        .find(|raw| header(raw, "To").unwrap().contains("ivan@example.com"))
        .expect("Ivan's letter");
    assert_eq!(
        String::from_utf8(without_date(&previewed)).unwrap(),
        String::from_utf8(without_date(to_ivan)).unwrap(),
        "preview = the letter sent, apart from Date"
    );
    assert!(header(&previewed, "Date").is_some());
    assert!(header(&previewed, "List-Unsubscribe").is_some());
    assert_eq!(
        header(&previewed, "Message-ID").unwrap(),
        format!("<mailing-{mailing}.client-{ivan}@localhost>")
    );
    let mail = mailparse::parse_mail(&previewed).unwrap();
    assert_eq!(
        mail.subparts[0]
            .get_body()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "Привет, Иван Петров из Москва!\nКод: 42"
    );
    // Previewing writes nothing: no delivery rows beyond the two sent.
    assert_eq!(env.count("SELECT COUNT(*) FROM deliveries"), 2);
}

fn message_preview_without_mailing_headers(env: &Env) {
    let ann = env.account("user", "ann");
    let m = rich_message(env, &ann).to_string();
    // No client at all: a made-up sample recipient.
    let sample = ann.run(&["messages", "preview", &m]);
    sample.success();
    let raw = sample.output.stdout.clone();
    assert!(
        header(&raw, "To")
            .unwrap()
            .contains("recipient@example.com")
    );
    assert!(header(&raw, "Message-ID").is_none());
    assert!(header(&raw, "List-Unsubscribe").is_none());
    let mail = mailparse::parse_mail(&raw).unwrap();
    assert_eq!(
        mail.subparts[0]
            .get_body()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "Привет, Sample Recipient из ниоткуда!\nКод:"
    );
    // The owner's first client by default, or the one asked for.
    add_client(&ann, &["--email", "a@example.com", "--name", "Анна"]);
    let olga = add_client(
        &ann,
        &[
            "--email",
            "o@example.com",
            "--name",
            "Ольга",
            "--field",
            "city=Казань",
        ],
    );
    let first = ann.run(&["messages", "preview", &m]);
    assert!(
        header(&first.output.stdout, "To")
            .unwrap()
            .contains("a@example.com")
    );
    let chosen = ann.run(&["messages", "preview", &m, "--client", &olga.to_string()]);
    chosen.success();
    let mail = mailparse::parse_mail(&chosen.output.stdout).unwrap();
    assert_eq!(
        mail.headers
            .iter()
            .find(|h| h.get_key() == "Subject")
            .unwrap()
            .get_value(),
        "Новости для Ольга"
    );
    assert_eq!(
        mail.subparts[1]
            .get_body()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "<p>Привет, Ольга из Казань!</p>"
    );
}

fn preview_and_test_refuse_what_the_caller_may_not_see(env: &Env) {
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let c = add_client(&ann, &["--email", "a@example.com"]);
    let m = ann.message("Hi");
    let mailing = ann.mailing(m, &[c]).to_string();
    let bobs_client = add_client(&bob, &["--email", "b@example.com"]).to_string();
    for args in [
        vec!["messages", "preview", "999999"],
        vec!["mailings", "preview", "999999"],
        vec!["mailings", "test", "999999", "--to", "me@example.com"],
    ] {
        ann.run(&args).expect_code(4);
    }
    // Bob sees neither Ann's message nor her mailing; Ann may not use Bob's client.
    bob.run(&["messages", "preview", &m.to_string()])
        .expect_code(4);
    bob.run(&["mailings", "preview", &mailing]).expect_code(4);
    bob.run(&["mailings", "test", &mailing, "--to", "me@example.com"])
        .expect_code(4);
    ann.run(&["mailings", "preview", &mailing, "--client", &bobs_client])
        .expect_code(4);
    ann.run(&[
        "messages",
        "preview",
        &m.to_string(),
        "--client",
        &bobs_client,
    ])
    .expect_code(4);
    // --to must be an address.
    for bad in ["nope", "", "a b@example.com"] {
        let run = ann.run(&["mailings", "test", &mailing, "--to", bad]);
        run.expect_code(5);
        assert!(
            run.stderr().starts_with("mailctl: error: to: "),
            "{}",
            run.stderr()
        );
    }
    assert!(!env.outbox().exists(), "nothing was sent");
}

fn stats_and_attempts(who: &Caller) -> (Value, Value) {
    (
        who.json(&["stats", "--by", "mailing", "--no-cache"]),
        who.json(&["attempts", "list"]),
    )
}

fn test_send_leaves_stats_and_attempts_unchanged(env: &mut Env) {
    let server = start_smtp();
    env.set("MAILCTL_SMTP_URL", &server.url());
    let ann = env.account("user", "ann");
    let ivan = add_client(
        &ann,
        &[
            "--email",
            "ivan@example.com",
            "--name",
            "Иван",
            "--field",
            "code=7",
        ],
    );
    let other = add_client(&ann, &["--email", "other@example.com", "--field", "code=8"]);
    let m = rich_message(env, &ann);
    let mailing = ann.mailing(m, &[ivan, other]).to_string();
    // One real letter first, so there are stats to keep.
    ann.run(&["mailings", "send", &mailing, "--limit", "1"])
        .success();
    let before = stats_and_attempts(&ann);
    let deliveries = env.count("SELECT COUNT(*) FROM deliveries");

    let result = ann.json(&[
        "mailings",
        "test",
        &mailing,
        "--to",
        "me@example.org",
        "--client",
        &ivan.to_string(),
    ]);
    assert_eq!(result["accepted"], true, "{result}");
    assert_eq!(result["to"], "me@example.org");
    assert!(
        result["reply"].as_str().unwrap().starts_with("250"),
        "{result}"
    );
    let got = server.wait_for_messages(2, std::time::Duration::from_secs(10));
    let test_letter = got
        .iter()
        .find(|raw| header(raw, "To").unwrap().contains("me@example.org"))
        .expect("the test copy");
    let mail = mailparse::parse_mail(test_letter).unwrap();
    assert!(
        mail.subparts[0]
            .get_body()
            .unwrap()
            .replace("\r\n", "\n")
            .contains("Иван из ниоткуда!\nКод: 7"),
        "personalised as the client"
    );
    assert!(server.log().last().unwrap().contains("me@example.org"));

    assert_eq!(stats_and_attempts(&ann), before, "no attempt, no stats");
    assert_eq!(env.count("SELECT COUNT(*) FROM deliveries"), deliveries);

    // A refusal is printed and exits 1, still changing nothing.
    server.set_rules(r#"{"rcpt": [{"match": "reject", "reply": "550 5.1.1 User unknown"}]}"#);
    let refused = ann.run(&[
        "mailings",
        "test",
        &mailing,
        "--to",
        "reject@example.org",
        "--format",
        "json",
    ]);
    refused.expect_code(1);
    let printed: Value = serde_json::from_str(&refused.stdout()).unwrap();
    assert_eq!(printed["accepted"], false);
    assert!(
        printed["reply"].as_str().unwrap().contains("550 5.1.1"),
        "{printed}"
    );
    assert!(refused.stderr().contains("550"), "{}", refused.stderr());
    assert_eq!(stats_and_attempts(&ann), before);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM suppressions"),
        0,
        "a refused test copy suppresses nothing"
    );
}
