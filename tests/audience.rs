//! Issue 15 (tags, custom fields, placeholders) and issue 18 point 2 (an audience resolved on
//! every run), on both backends: tags on clients, `tags list`, `mailings add --tag`, a client
//! tagged or added later getting the letter once, fields through add/edit/import/export.

mod common;

use std::collections::HashMap;

use common::{Caller, Env};
use serde_json::Value;

on_both_backends!(
    tags_on_clients_and_tags_list,
    bad_tags_and_fields_are_refused_by_name,
    tagged_later_gets_the_letter_once,
    all_clients_is_an_audience_too,
    fields_round_trip_through_export_and_import,
    import_with_a_bad_tag_or_field_writes_nothing,
    a_field_without_default_blocks_mailings_add_with_the_count,
    fields_fill_placeholders_in_sent_letters,
);

fn ids(v: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

fn add_client(who: &Caller, email: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["clients", "add", "--email", email];
    args.extend_from_slice(extra);
    who.json(&args)["id"].as_i64().unwrap()
}

fn window() -> (String, String) {
    (
        (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
        (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
    )
}

/// `mailings add --message M` over a due window, with extra audience flags.
fn mailing_with(who: &Caller, message: i64, audience: &[&str]) -> Value {
    let (start, end) = window();
    let msg = message.to_string();
    let mut args = vec![
        "mailings",
        "add",
        "--message",
        &msg,
        "--start",
        &start,
        "--end",
        &end,
    ];
    args.extend_from_slice(audience);
    who.json(&args)
}

/// Letters in the outbox, by recipient address (the To header).
fn outbox_recipients(env: &Env) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let Ok(dir) = std::fs::read_dir(env.outbox()) else {
        return seen;
    };
    for file in dir {
        let raw = std::fs::read(file.unwrap().path()).unwrap();
        let mail = mailparse::parse_mail(&raw).unwrap();
        let to = mail.headers.iter().find(|h| h.get_key() == "To").unwrap();
        let addr = match &mailparse::addrparse_header(to).unwrap()[0] {
            mailparse::MailAddr::Single(s) => s.addr.clone(),
            other => panic!("unexpected To: {other:?}"),
        };
        *seen.entry(addr).or_insert(0) += 1;
    }
    seen
}

fn tags_on_clients_and_tags_list(env: &Env) {
    let ann = env.account("user", "ann");
    let a = ann.json(&[
        "clients",
        "add",
        "--email",
        "a@example.com",
        "--tag",
        "News",
        "--tag",
        "vip",
        "--tag",
        "NEWS",
    ]);
    assert_eq!(a["tags"], serde_json::json!(["news", "vip"]), "{a}");
    let a = a["id"].as_i64().unwrap();
    let b = add_client(&ann, "b@example.com", &["--tag", "news"]);
    let c = add_client(&ann, "c@example.com", &[]);
    // Bob's tags are his own.
    let bob = env.account("user", "bob");
    add_client(&bob, "z@example.com", &["--tag", "news"]);

    assert_eq!(
        ids(&ann.json(&["clients", "list", "--tag", "news"])),
        [a, b]
    );
    assert_eq!(
        ids(&ann.json(&["clients", "list", "--tag", "NEWS", "--tag", "vip"])),
        [a],
        "--tag repeated: all of them"
    );
    assert_eq!(
        ids(&ann.json(&["clients", "list", "--tag", "nope"])),
        [0i64; 0]
    );

    let edited = ann.json(&[
        "clients",
        "edit",
        &c.to_string(),
        "--tag",
        "vip",
        "--tag",
        "new-year 2027",
    ]);
    assert_eq!(edited["tags"], serde_json::json!(["new-year 2027", "vip"]));
    let edited = ann.json(&["clients", "edit", &a.to_string(), "--untag", "VIP"]);
    assert_eq!(edited["tags"], serde_json::json!(["news"]));

    let list = ann.json(&["tags", "list"]);
    let counts: Vec<(String, i64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tag"].as_str().unwrap().to_string(),
                t["clients"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("new-year 2027".to_string(), 1),
            ("news".to_string(), 2),
            ("vip".to_string(), 1)
        ]
    );
    // CSV: the stored form of the import, one header row.
    let csv = ann.run(&["clients", "list", "--tag", "vip", "--format", "csv"]);
    csv.success();
    let text = csv.stdout();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,email,full_name,comment,tags,fields,owner_id,created_at"
    );
    assert!(
        lines.next().unwrap().contains(",new-year 2027;vip,{},"),
        "{text}"
    );
    // Another user's client: not found.
    ann.run(&["clients", "edit", "999999", "--tag", "x"])
        .expect_code(4);
}

fn bad_tags_and_fields_are_refused_by_name(env: &Env) {
    let ann = env.account("user", "ann");
    let c = add_client(&ann, "a@example.com", &["--tag", "keep"]).to_string();
    let long = "x".repeat(65);
    for (args, named) in [
        (
            vec!["clients", "add", "--email", "b@example.com", "--tag", ""],
            "tag",
        ),
        (
            vec!["clients", "add", "--email", "b@example.com", "--tag", &long],
            "tag",
        ),
        (
            vec![
                "clients",
                "add",
                "--email",
                "b@example.com",
                "--tag",
                "a\u{7}b",
            ],
            "tag",
        ),
        (
            vec!["clients", "add", "--email", "b@example.com", "--tag", "a;b"],
            "tag",
        ),
        (vec!["clients", "edit", &c, "--tag", " "], "tag"),
        (vec!["clients", "edit", &c, "--untag", ""], "untag"),
        (vec!["clients", "edit", &c, "--field", "city"], "field"),
        (vec!["clients", "edit", &c, "--field", "=x"], "field"),
        (
            vec!["clients", "edit", &c, "--field", &format!("{long}=x")],
            "field",
        ),
        (
            vec!["clients", "edit", &c, "--field", "ci\u{1}ty=x"],
            "field",
        ),
        (vec!["clients", "edit", &c, "--field", "email=x"], "field"),
        (vec!["clients", "list", "--tag", ""], "tag"),
    ] {
        let run = ann.run(&args);
        run.expect_code(5);
        let err = run.stderr();
        assert!(
            err.starts_with(&format!("mailctl: error: {named}: ")),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // Nothing changed and nobody was added.
    let shown = ann.json(&["clients", "show", &c]);
    assert_eq!(shown["tags"], serde_json::json!(["keep"]));
    assert_eq!(shown["fields"], serde_json::json!({}));
    assert_eq!(ann.json(&["clients", "list"]).as_array().unwrap().len(), 1);
    // Mailings: a bad tag is exit 5, an unknown message exit 4.
    let m = ann.message("Hi");
    let (start, end) = window();
    ann.run(&[
        "mailings",
        "add",
        "--message",
        &m.to_string(),
        "--start",
        &start,
        "--end",
        &end,
        "--tag",
        "",
    ])
    .expect_code(5);
    ann.run(&[
        "mailings",
        "add",
        "--message",
        "999999",
        "--start",
        &start,
        "--end",
        &end,
        "--tag",
        "keep",
    ])
    .expect_code(4);
    assert_eq!(ann.json(&["mailings", "list"]).as_array().unwrap().len(), 0);
}

fn tagged_later_gets_the_letter_once(env: &Env) {
    let ann = env.account("user", "ann");
    let a = add_client(&ann, "a@example.com", &["--tag", "news"]);
    let b = add_client(&ann, "b@example.com", &["--tag", "other"]);
    let c = add_client(&ann, "c@example.com", &[]);
    let explicit = add_client(&ann, "explicit@example.com", &[]);
    let m = ann.message("Tagged");
    let mailing = mailing_with(
        &ann,
        m,
        &[
            "--tag",
            "news",
            "--tag",
            "VIP",
            "--client",
            &explicit.to_string(),
        ],
    );
    assert_eq!(
        mailing["tags"],
        serde_json::json!(["news", "vip"]),
        "{mailing}"
    );
    assert_eq!(mailing["all_clients"], false);
    assert_eq!(mailing["clients"], 2, "a and the explicit one");
    let id = mailing["id"].as_i64().unwrap().to_string();
    // mailings show lists the tags; CSV keeps them as in the import.
    assert_eq!(
        ann.json(&["mailings", "show", &id])["tags"],
        serde_json::json!(["news", "vip"])
    );

    let first = ann.json(&["send-due"]);
    assert_eq!(first["sent"], 2, "{first}");

    // Tagged after the run, and a new client with the tag: both on the next run, once.
    ann.run(&["clients", "edit", &b.to_string(), "--tag", "vip"])
        .success();
    let d = add_client(&ann, "d@example.com", &["--tag", "news"]);
    // Untagging after the letter went out changes nothing (the letter is sent).
    ann.run(&["clients", "edit", &a.to_string(), "--untag", "news"])
        .success();
    let second = ann.json(&["send-due"]);
    assert_eq!(second["sent"], 2, "{second}");
    let third = ann.json(&["send-due"]);
    assert_eq!(third["sent"], 0, "nothing new: {third}");

    let got = outbox_recipients(env);
    for addr in [
        "a@example.com",
        "b@example.com",
        "d@example.com",
        "explicit@example.com",
    ] {
        assert_eq!(got.get(addr), Some(&1), "{addr}: {got:?}");
    }
    assert!(!got.contains_key("c@example.com"), "{got:?}");
    assert_eq!(ann.json(&["mailings", "show", &id])["clients"], 4);
    let _ = (c, d);

    // Edit replaces the tags; recipients already resolved stay, the new tag's clients join.
    let e = add_client(&ann, "e@example.com", &["--tag", "late"]);
    let edited = ann.json(&["mailings", "edit", &id, "--tag", "late"]);
    assert_eq!(edited["tags"], serde_json::json!(["late"]));
    assert_eq!(edited["clients"], 5);
    assert_eq!(ann.json(&["send-due"])["sent"], 1);
    assert_eq!(outbox_recipients(env).get("e@example.com"), Some(&1));
    let _ = e;
    // Delivery rows: one per recipient, never two.
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE mailing_id = {id}"
        )),
        5
    );
}

fn all_clients_is_an_audience_too(env: &Env) {
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    add_client(&ann, "a@example.com", &[]);
    add_client(&bob, "bob-client@example.com", &[]);
    let m = ann.message("Everyone");
    let mailing = mailing_with(&ann, m, &["--all-clients"]);
    assert_eq!(mailing["all_clients"], true);
    assert_eq!(ann.json(&["send-due"])["sent"], 1);
    // Added after the first run: gets the letter on the next one, exactly once.
    add_client(&ann, "late@example.com", &[]);
    assert_eq!(ann.json(&["send-due"])["sent"], 1);
    assert_eq!(ann.json(&["send-due"])["sent"], 0);
    let got = outbox_recipients(env);
    assert_eq!(got.get("a@example.com"), Some(&1));
    assert_eq!(got.get("late@example.com"), Some(&1));
    assert!(!got.contains_key("bob-client@example.com"), "{got:?}");
    // The help says so.
    let help = ann.run(&["mailings", "add", "--help"]);
    assert!(
        help.stdout()
            .contains("resolved again at the start of every send-due run"),
        "{}",
        help.stdout()
    );
}

fn fields_round_trip_through_export_and_import(env: &Env) {
    let ann = env.account("user", "ann");
    let csv = "email,name,tags,City,note\n\
               ivan@example.com,Иван Петров,news;VIP,\"Москва, центр\",\"он сказал \"\"да\"\"\"\n\
               olga@example.com,Ольга,,Санкт-Петербург,\n\
               plain@example.com,,,,\n";
    let done = ann
        .stdin(&["clients", "import", "-", "--format", "json"], csv)
        .success()
        .json();
    assert_eq!(done["inserted"], 3, "{done}");
    let list = ann.json(&["clients", "list", "--tag", "vip"]);
    let ivan = &list[0];
    assert_eq!(ivan["tags"], serde_json::json!(["news", "vip"]));
    assert_eq!(
        ivan["fields"],
        serde_json::json!({"city": "Москва, центр", "note": "он сказал \"да\""})
    );
    // --field sets and KEY= removes.
    let id = ivan["id"].as_i64().unwrap().to_string();
    let edited = ann.json(&[
        "clients",
        "edit",
        &id,
        "--field",
        "note=",
        "--field",
        "Zip=101000",
    ]);
    assert_eq!(
        edited["fields"],
        serde_json::json!({"city": "Москва, центр", "zip": "101000"})
    );

    let exported = ann.run(&["clients", "export"]);
    exported.success();
    let text = exported.stdout();
    assert_eq!(
        text.lines().next().unwrap(),
        "email,full_name,comment,tags,city,zip"
    );
    // Into another account: the same clients, tags and fields.
    let bob = env.account("user", "bob");
    bob.stdin(&["clients", "import", "-"], &text).success();
    let strip = |v: Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                serde_json::json!([
                    c["email"],
                    c["full_name"],
                    c["comment"],
                    c["tags"],
                    c["fields"]
                ])
            })
            .collect()
    };
    assert_eq!(
        strip(bob.json(&["clients", "list"])),
        strip(ann.json(&["clients", "list"]))
    );
    // JSON export carries lists and maps.
    let json = ann.json(&["clients", "export"]);
    assert_eq!(json[0]["fields"]["city"], "Москва, центр");
    assert_eq!(json[0]["tags"], serde_json::json!(["news", "vip"]));
    // --on-conflict update without a tags column keeps the tags; with fields it replaces them.
    ann.stdin(
        &["clients", "import", "-", "--on-conflict", "update"],
        "email,city\nivan@example.com,Казань\n",
    )
    .success();
    let ivan = ann.json(&["clients", "show", &id]);
    assert_eq!(ivan["tags"], serde_json::json!(["news", "vip"]));
    assert_eq!(ivan["fields"], serde_json::json!({"city": "Казань"}));
}

fn import_with_a_bad_tag_or_field_writes_nothing(env: &Env) {
    let ann = env.account("user", "ann");
    let long = "x".repeat(65);
    for (csv, wanted) in [
        (
            "email,tags\na@example.com,news\nb@example.com,news;;vip\n".to_string(),
            "line 3: tags: tag is empty",
        ),
        (
            format!("email,tags\na@example.com,news\nb@example.com,{long}\n"),
            "line 3: tags: tag 'xxxx",
        ),
        (
            format!("email,{long}\na@example.com,1\n"),
            "header: column 2: field key",
        ),
        (
            "email,city\na@example.com,ok\nb@example.com,\"bad\u{7}\"\n".to_string(),
            "line 3: field city: contains control characters",
        ),
    ] {
        let run = ann.stdin(&["clients", "import", "-"], &csv);
        run.expect_code(5);
        assert!(run.stderr().contains(wanted), "{wanted}: {}", run.stderr());
    }
    assert_eq!(ann.json(&["clients", "list"]).as_array().unwrap().len(), 0);
}

fn a_field_without_default_blocks_mailings_add_with_the_count(env: &Env) {
    let ann = env.account("user", "ann");
    let with_city = add_client(
        &ann,
        "a@example.com",
        &["--tag", "news", "--field", "city=Москва"],
    );
    add_client(&ann, "b@example.com", &["--tag", "news"]);
    add_client(&ann, "c@example.com", &["--tag", "news"]);
    let m = ann.json(&[
        "messages",
        "add",
        "--subject",
        "Hi {{full_name|friend}}",
        "--body",
        "See you in {{City}}",
    ])["id"]
        .as_i64()
        .unwrap();
    let (start, end) = window();
    let run = ann.run(&[
        "mailings",
        "add",
        "--message",
        &m.to_string(),
        "--start",
        &start,
        "--end",
        &end,
        "--tag",
        "news",
    ]);
    run.expect_code(5);
    assert!(
        run.stderr().contains("{{city}}") && run.stderr().contains("2 of the 3 recipient(s)"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        ann.json(&["mailings", "list"]).as_array().unwrap().len(),
        0,
        "nothing made"
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM mailing_clients"), 0);
    // Only recipients who have it: accepted. A recipient added later without it gets "".
    let ok = mailing_with(&ann, m, &["--client", &with_city.to_string()]);
    let id = ok["id"].as_i64().unwrap().to_string();
    // Edit to an audience that lacks it: refused, and the mailing stays as it was.
    ann.run(&["mailings", "edit", &id, "--tag", "news"])
        .expect_code(5);
    let shown = ann.json(&["mailings", "show", &id]);
    assert_eq!(
        (shown["clients"].as_i64(), shown["tags"].clone()),
        (Some(1), serde_json::json!([]))
    );
    // With a default the field is not required.
    let m2 = ann.json(&[
        "messages",
        "add",
        "--subject",
        "Hi",
        "--body",
        "From {{city|your town}}",
    ])["id"]
        .as_i64()
        .unwrap();
    mailing_with(&ann, m2, &["--tag", "news"]);
    // A malformed placeholder is refused by messages add and edit, naming it.
    for body in ["Hi {{full_name", "Hi {{}}", "Hi {{a|b}} {{c{d}}"] {
        let run = ann.run(&["messages", "add", "--subject", "S", "--body", body]);
        run.expect_code(5);
        assert!(
            run.stderr().contains("malformed placeholder"),
            "{}",
            run.stderr()
        );
    }
    ann.run(&["messages", "edit", &m.to_string(), "--subject", "Hi {{x"])
        .expect_code(5);
}

fn fields_fill_placeholders_in_sent_letters(env: &Env) {
    let ann = env.account("user", "ann");
    add_client(
        &ann,
        "a@example.com",
        &[
            "--name",
            "Анна",
            "--tag",
            "t",
            "--field",
            "city=<Москва & Co>",
        ],
    );
    let html = env.dir.path().join("body.html");
    std::fs::write(&html, "<p>{{full_name}} из {{city}} {{zip|000}}</p>").unwrap();
    let m = ann.json(&[
        "messages",
        "add",
        "--subject",
        "{{full_name}}: {{city}}",
        "--body",
        "Город: {{CITY}}, {{zip|000}}",
        "--html-file",
        html.to_str().unwrap(),
    ])["id"]
        .as_i64()
        .unwrap();
    mailing_with(&ann, m, &["--tag", "t"]);
    assert_eq!(ann.json(&["send-due"])["sent"], 1);
    let file = std::fs::read_dir(env.outbox())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let raw = std::fs::read(file.path()).unwrap();
    let mail = mailparse::parse_mail(&raw).unwrap();
    let subject = mail
        .headers
        .iter()
        .find(|h| h.get_key() == "Subject")
        .unwrap();
    assert_eq!(subject.get_value(), "Анна: <Москва & Co>");
    let text = mail.subparts[0].get_body().unwrap();
    assert_eq!(text.trim_end(), "Город: <Москва & Co>, 000");
    let html = mail.subparts[1].get_body().unwrap();
    assert_eq!(
        html.trim_end(),
        "<p>Анна из &lt;Москва &amp; Co&gt; 000</p>"
    );
}
