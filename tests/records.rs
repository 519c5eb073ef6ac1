//! Clients, messages and mailings: CRUD, validation, all-or-nothing, and the role matrix.

mod common;

use common::Env;
use serde_json::Value;

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

fn clients_crud_and_validation(env: &Env) {
    let ann = env.account("user", "ann");
    let c = ann.json(&[
        "clients",
        "add",
        "--email",
        "ivan@example.com",
        "--name",
        "Иван Петров",
        "--comment",
        "VIP 🎉",
    ]);
    assert_eq!(c["full_name"], "Иван Петров");
    assert_eq!(c["comment"], "VIP 🎉");
    let id = c["id"].as_i64().unwrap();
    // Case-insensitive uniqueness per owner, including non-ASCII addresses.
    ann.run(&["clients", "add", "--email", "IVAN@EXAMPLE.COM"])
        .expect_code(5);
    ann.run(&["clients", "add", "--email", "Иван@пример.рф"])
        .success();
    ann.run(&["clients", "add", "--email", "иван@ПРИМЕР.РФ"])
        .expect_code(5);
    // Another owner may keep the same contact.
    let bob = env.account("user", "bob");
    bob.run(&["clients", "add", "--email", "ivan@example.com"])
        .success();
    for bad in [
        vec!["--email", "nope"],
        vec!["--email", ""],
        vec!["--email", "a@b.com", "--name", "two\nlines"],
    ] {
        let mut args = vec!["clients", "add"];
        args.extend(bad);
        let run = ann.run(&args);
        run.expect_code(5);
        assert!(
            run.stderr().starts_with("mailctl: error: "),
            "{}",
            run.stderr()
        );
        assert_eq!(
            run.stderr().lines().count(),
            1,
            "one-line error: {}",
            run.stderr()
        );
    }
    assert_eq!(ids(&ann.json(&["clients", "list"])).len(), 2);
    assert_eq!(
        ids(&ann.json(&["clients", "list", "--search", "petrov"])).len(),
        0
    );
    assert_eq!(
        ids(&ann.json(&["clients", "list", "--search", "IVAN@EX"])),
        [id]
    );
    // Edit; an edit to a taken address is refused and changes nothing.
    let other = ann.client("olga@example.com");
    let edited = ann.json(&["clients", "edit", &id.to_string(), "--comment", "left"]);
    assert_eq!(edited["comment"], "left");
    assert_eq!(edited["email"], "ivan@example.com");
    ann.run(&[
        "clients",
        "edit",
        &other.to_string(),
        "--email",
        "Ivan@example.com",
    ])
    .expect_code(5);
    assert_eq!(
        ann.json(&["clients", "show", &other.to_string()])["email"],
        "olga@example.com"
    );
    // CSV has a header and one row per client.
    let csv = ann
        .run(&["clients", "list", "--format", "csv"])
        .success()
        .stdout();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,email,full_name,comment,tags,fields,owner_id,created_at")
    );
    assert_eq!(lines.count(), 3);
    // Delete: --yes off a terminal; unknown id fails the whole call.
    ann.run(&["clients", "delete", &id.to_string()])
        .expect_code(5);
    ann.run(&["clients", "delete", &id.to_string(), "999999", "--yes"])
        .expect_code(4);
    ann.run(&["clients", "show", &id.to_string()]).success();
    ann.run(&["clients", "delete", &id.to_string(), "--yes"])
        .success();
    ann.run(&["clients", "show", &id.to_string()])
        .expect_code(4);
}

fn messages_crud_and_validation(env: &Env) {
    let ann = env.account("user", "ann");
    let body = env.dir.path().join("body.txt");
    let html = env.dir.path().join("body.html");
    std::fs::write(&body, "Здравствуйте, {{full_name}}!\nSecond line.").unwrap();
    std::fs::write(&html, "<p>Hello <b>{{full_name}}</b></p>").unwrap();
    let m = ann.json(&[
        "messages",
        "add",
        "--subject",
        "Привет {{full_name}}",
        "--body-file",
        body.to_str().unwrap(),
        "--html-file",
        html.to_str().unwrap(),
    ]);
    assert_eq!(m["body"], "Здравствуйте, {{full_name}}!\nSecond line.");
    assert_eq!(m["html"], "<p>Hello <b>{{full_name}}</b></p>");
    let id = m["id"].as_i64().unwrap().to_string();
    ann.run(&[
        "messages",
        "add",
        "--subject",
        "Hi\r\nBcc: victim@example.com",
        "--body",
        "x",
    ])
    .expect_code(5);
    ann.run(&[
        "messages",
        "add",
        "--subject",
        "Hi",
        "--body-file",
        "/nonexistent/file",
    ])
    .expect_code(5);
    ann.run(&["messages", "add", "--subject", "Hi"])
        .expect_code(2);
    assert_eq!(ann.json(&["messages", "list"]).as_array().unwrap().len(), 1);
    let edited = ann.json(&["messages", "edit", &id, "--subject", "New", "--no-html"]);
    assert_eq!(edited["subject"], "New");
    assert_eq!(edited["html"], Value::Null);
    ann.run(&["messages", "edit", &id, "--subject", "a\nb"])
        .expect_code(5);
    // A message used by a mailing needs --force, which deletes the mailing too.
    let c = ann.client("ivan@example.com");
    let mailing = ann.mailing(id.parse().unwrap(), &[c]);
    let refused = ann.run(&["messages", "delete", &id, "--yes"]);
    refused.expect_code(5);
    assert!(refused.stderr().contains("--force"), "{}", refused.stderr());
    ann.run(&["messages", "show", &id]).success();
    ann.run(&["mailings", "show", &mailing.to_string()])
        .success();
    ann.run(&["messages", "delete", &id, "--yes", "--force"])
        .success();
    ann.run(&["messages", "show", &id]).expect_code(4);
    ann.run(&["mailings", "show", &mailing.to_string()])
        .expect_code(4);
}

fn mailings_crud_and_validation(env: &Env) {
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let msg = ann.message("Hello");
    let c1 = ann.client("one@example.com");
    let c2 = ann.client("two@example.com");
    let bobs_client = bob.client("three@example.com");
    let bobs_msg = bob.message("Bob's");
    let m = msg.to_string();
    let add = |extra: &[&str]| {
        let mut args = vec!["mailings", "add", "--message", &m, "--all-clients"];
        args.extend(extra);
        ann.run(&args)
    };
    // end must be after start; bad times; someone else's client or message: nothing created.
    add(&[
        "--start",
        "2036-12-02T09:00:00Z",
        "--end",
        "2036-12-01T09:00:00Z",
    ])
    .expect_code(5);
    add(&[
        "--start",
        "2036-12-02T09:00:00Z",
        "--end",
        "2036-12-02T09:00:00Z",
    ])
    .expect_code(5);
    add(&["--start", "next week", "--end", "2036-12-01T09:00:00Z"]).expect_code(5);
    let foreign = bobs_client.to_string();
    add(&[
        "--start",
        "2036-12-01T09:00:00Z",
        "--end",
        "2036-12-02T09:00:00Z",
        "--client",
        &c1.to_string(),
        "--client",
        &foreign,
    ])
    .expect_code(4);
    let bm = bobs_msg.to_string();
    ann.run(&[
        "mailings",
        "add",
        "--message",
        &bm,
        "--start",
        "2036-12-01T09:00:00Z",
        "--end",
        "2036-12-02T09:00:00Z",
        "--all-clients",
    ])
    .expect_code(4);
    assert_eq!(ann.json(&["mailings", "list"]).as_array().unwrap().len(), 0);
    // (Local times without an offset: tests/mailings_truth.rs.)
    let created = add(&[
        "--start",
        "2036-12-01T09:00:00Z",
        "--end",
        "2036-12-02T09:00:00Z",
        "--format",
        "json",
    ]);
    let mailing = created.success().json();
    assert_eq!(mailing["start_at"], "2036-12-01T09:00:00Z");
    assert_eq!(mailing["clients"], 2);
    assert_eq!(mailing["status"], "created");
    let id = mailing["id"].as_i64().unwrap().to_string();
    let c3 = ann.client("three@example.com");
    assert_eq!(
        ann.json(&["mailings", "add-clients", &id, &c3.to_string()])["clients"],
        3
    );
    ann.run(&["mailings", "add-clients", &id, &foreign])
        .expect_code(4);
    assert_eq!(
        ann.json(&["mailings", "remove-clients", &id, &c2.to_string()])["clients"],
        2
    );
    ann.run(&["mailings", "remove-clients", &id, &c2.to_string()])
        .expect_code(4);
    assert_eq!(ann.json(&["mailings", "show", &id])["clients"], 2);
    ann.run(&["mailings", "edit", &id, "--end", "2036-11-01T00:00:00Z"])
        .expect_code(5);
    let edited = ann.json(&["mailings", "edit", &id, "--end", "2036-12-03T09:00:00Z"]);
    assert_eq!(edited["end_at"], "2036-12-03T09:00:00Z");
    assert_eq!(
        ids(&ann.json(&["mailings", "list", "--status", "created"])).len(),
        1
    );
    assert_eq!(
        ids(&ann.json(&["mailings", "list", "--status", "completed"])).len(),
        0
    );
    // A window already over is refused: it could never send anything.
    ann.run(&[
        "mailings",
        "add",
        "--message",
        &m,
        "--all-clients",
        "--start",
        "2020-01-01T00:00:00Z",
        "--end",
        "2020-01-02T00:00:00Z",
    ])
    .expect_code(5);
    assert_eq!(
        ids(&ann.json(&["mailings", "list", "--status", "completed"])).len(),
        0
    );
    ann.run(&["mailings", "delete", &id, "--yes"]).success();
    ann.run(&["mailings", "show", &id]).expect_code(4);
}

/// For every record command: what a user, a manager and an admin may do with records of
/// their own and of others.
fn role_matrix(env: &Env) {
    let admin = env.admin();
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let boss = env.account("manager", "boss");
    let c = ann.client("c@example.com").to_string();
    let m = ann.message("Ann's").to_string();
    let ml = ann
        .mailing(m.parse().unwrap(), &[c.parse().unwrap()])
        .to_string();
    let c2 = ann.client("c2@example.com").to_string();

    // Reading: bob sees none of ann's records (not found, never leaked); boss and admin see all.
    for (args, kind) in [
        (vec!["clients", "show", &c], "client"),
        (vec!["messages", "show", &m], "message"),
        (vec!["mailings", "show", &ml], "mailing"),
    ] {
        let run = bob.run(&args);
        run.expect_code(4);
        assert!(run.stderr().contains(kind), "{}", run.stderr());
        boss.run(&args).success();
        admin.run(&args).success();
    }
    for list in [
        ["clients", "list"],
        ["messages", "list"],
        ["mailings", "list"],
    ] {
        assert_eq!(bob.json(&list).as_array().unwrap().len(), 0, "{list:?}");
        assert!(!boss.json(&list).as_array().unwrap().is_empty(), "{list:?}");
        assert!(
            !admin.json(&list).as_array().unwrap().is_empty(),
            "{list:?}"
        );
        assert!(!ann.json(&list).as_array().unwrap().is_empty(), "{list:?}");
    }

    // Changing: bob gets "not found" (4), the manager "not permitted" (3), the admin may.
    let writes: Vec<Vec<&str>> = vec![
        vec!["clients", "edit", &c, "--comment", "x"],
        vec!["clients", "delete", &c, "--yes"],
        vec!["messages", "edit", &m, "--subject", "x"],
        vec!["messages", "delete", &m, "--yes", "--force"],
        vec!["mailings", "edit", &ml, "--end", "2030-01-01T00:00:00Z"],
        vec!["mailings", "add-clients", &ml, &c2],
        vec!["mailings", "remove-clients", &ml, &c],
        vec!["mailings", "delete", &ml, "--yes"],
    ];
    for args in &writes {
        bob.run(args).expect_code(4);
        boss.run(args).expect_code(3);
    }
    // Nothing changed.
    assert_eq!(ann.json(&["clients", "show", &c])["comment"], "");
    assert_eq!(ann.json(&["mailings", "show", &ml])["clients"], 1);

    // Disable / enable: manager and admin only.
    ann.run(&["mailings", "disable", &ml]).expect_code(3);
    bob.run(&["mailings", "disable", &ml]).expect_code(3);
    assert_eq!(boss.json(&["mailings", "disable", &ml])["disabled"], true);
    assert_eq!(ann.json(&["mailings", "show", &ml])["disabled"], true);
    assert_eq!(admin.json(&["mailings", "enable", &ml])["disabled"], false);
    boss.run(&["mailings", "disable", "999999"]).expect_code(4);

    // Users list: manager and admin only.
    ann.run(&["users", "list"]).expect_code(3);
    boss.run(&["users", "list"]).success();

    // The admin may change anyone's records.
    assert_eq!(
        admin.json(&["clients", "edit", &c, "--comment", "by admin"])["comment"],
        "by admin"
    );
    assert_eq!(
        admin.json(&["mailings", "add-clients", &ml, &c2])["clients"],
        2
    );
    admin
        .run(&["messages", "delete", &m, "--yes", "--force"])
        .success();
    ann.run(&["mailings", "show", &ml]).expect_code(4);

    // A manager's own records are fully theirs.
    let own = boss.client("own@example.com").to_string();
    boss.run(&["clients", "edit", &own, "--name", "Mine"])
        .success();
    boss.run(&["clients", "delete", &own, "--yes"]).success();

    // Not logged in: every record command says so (3).
    let nobody = env.as_("nobody");
    for args in [
        vec!["clients", "list"],
        vec!["messages", "list"],
        vec!["mailings", "list"],
        vec!["whoami"],
    ] {
        nobody.run(&args).expect_code(3);
    }
}

on_both_backends!(
    clients_crud_and_validation,
    messages_crud_and_validation,
    mailings_crud_and_validation,
    role_matrix,
);
