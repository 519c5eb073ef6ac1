//! `mailctl clients import` / `clients export` on both backends (issue 4).

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::{Caller, Env};
use serde_json::{Value, json};

/// Writes `content` to a file in the test's directory and returns its path.
fn file(env: &Env, name: &str, content: &[u8]) -> String {
    let path = env.dir.path().join(name);
    std::fs::write(&path, content).expect("write csv");
    path.display().to_string()
}

/// `clients import ... --format json`, successful, parsed summary.
fn import(who: &Caller, path: &str, extra: &[&str]) -> Value {
    let mut args = vec!["clients", "import", path];
    args.extend(extra);
    who.json(&args)
}

fn counts(summary: &Value) -> [u64; 5] {
    ["read", "inserted", "updated", "skipped", "rejected"].map(|k| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in {summary}"))
    })
}

fn export_json(who: &Caller) -> Vec<Value> {
    who.json(&["clients", "export"])
        .as_array()
        .expect("array")
        .clone()
}

fn emails(who: &Caller) -> Vec<String> {
    export_json(who)
        .iter()
        .map(|c| c["email"].as_str().unwrap().to_string())
        .collect()
}

const TRICKY: &str = "email,full_name,comment\n\
    ann@example.com,\"Ann, Jr.\",\"She said \"\"hi\"\"\nand left; twice\"\n\
    иван@пример.рф,Иван Петров,Комментарий 🎉 with emoji\n\
    zoe@example.com,Zoë 👩‍💻,\"  leading and trailing spaces  \"\n\
    tab@example.com,T,\"a\tb\r\nc\"\n\
    empty@example.com,,\n";

fn roundtrip_is_exact(env: &Env) {
    let ann = env.account("user", "ann");
    let s = import(&ann, &file(env, "in.csv", TRICKY.as_bytes()), &[]);
    assert_eq!(counts(&s), [5, 5, 0, 0, 0], "{s}");
    assert!(s["elapsed_seconds"].as_f64().is_some() && s["rows_per_second"].as_u64().is_some());

    let exported = export_json(&ann);
    assert_eq!(exported.len(), 5);
    assert_eq!(
        exported[0],
        json!({"email": "ann@example.com", "full_name": "Ann, Jr.",
               "comment": "She said \"hi\"\nand left; twice", "tags": [], "fields": {}})
    );
    assert_eq!(exported[1]["full_name"], "Иван Петров");
    assert_eq!(exported[1]["comment"], "Комментарий 🎉 with emoji");
    assert_eq!(exported[2]["full_name"], "Zoë 👩‍💻");
    assert_eq!(exported[2]["comment"], "  leading and trailing spaces  ");
    assert_eq!(exported[3]["comment"], "a\tb\r\nc");

    // CSV export (the default, even with --format table) -> import elsewhere -> same export.
    let csv = ann.run(&["clients", "export"]).success().stdout();
    assert!(csv.starts_with("email,full_name,comment,tags\n"), "{csv}");
    assert_eq!(
        ann.run(&["clients", "export", "--format", "table"])
            .success()
            .stdout(),
        csv
    );
    let bob = env.account("user", "bob");
    let s = import(&bob, &file(env, "export.csv", csv.as_bytes()), &[]);
    assert_eq!(counts(&s), [5, 5, 0, 0, 0]);
    assert_eq!(bob.run(&["clients", "export"]).success().stdout(), csv);
    assert_eq!(export_json(&bob), exported);
    // ... and through standard input.
    let carl = env.account("user", "carl");
    let s = carl
        .stdin(&["clients", "import", "-", "--format", "json"], &csv)
        .success()
        .json();
    assert_eq!(counts(&s), [5, 5, 0, 0, 0]);
    assert_eq!(export_json(&carl), exported);
}

fn header_variants(env: &Env) {
    let ann = env.account("user", "ann");
    // BOM, semicolons, any order and case, `name` for full_name, CRLF line ends.
    let content = "\u{feff}Comment;NAME;EMAIL\r\nc1;Ann;ann@example.com\r\n\r\n\"x;y\";Bob;bob@example.com\r\n";
    let s = import(&ann, &file(env, "semi.csv", content.as_bytes()), &[]);
    assert_eq!(counts(&s), [2, 2, 0, 0, 0], "{s}");
    let out = export_json(&ann);
    assert_eq!(
        out[0],
        json!({"email": "ann@example.com", "full_name": "Ann", "comment": "c1", "tags": [], "fields": {}})
    );
    assert_eq!(out[1]["comment"], "x;y");

    for (bad, what) in [
        ("", "empty"),
        // Without a header row its cells would be custom fields: no email column.
        ("ann@example.com,Ann\n", "a header row is required"),
        ("full_name,comment\nAnn,x\n", "no email column"),
    ] {
        let r = ann.run(&["clients", "import", &file(env, "bad.csv", bad.as_bytes())]);
        r.expect_code(5);
        assert!(r.stderr().contains(what), "{what}: {}", r.stderr());
    }
    let r = ann.run(&["clients", "import", "/nonexistent/file.csv"]);
    r.expect_code(5);
    assert_eq!(emails(&ann).len(), 2);
}

fn conflicts(env: &Env) {
    let ann = env.account("user", "ann");
    ann.client("old@example.com");
    // Another owner's identical client is no conflict for ann.
    env.account("user", "bob").client("new@example.com");
    let content = "email,full_name,comment\n\
                   OLD@example.com,Old Renamed,c\n\
                   new@example.com,New,first\n\
                   New@Example.com,New Again,second\n";
    let path = file(env, "c.csv", content.as_bytes());

    // skip (the default): the existing client and the in-file duplicate are skipped.
    let s = import(&ann, &path, &["--dry-run"]);
    assert_eq!(counts(&s), [3, 1, 0, 2, 0]);
    assert_eq!(s["dry_run"], true);
    assert_eq!(emails(&ann), vec!["old@example.com"], "dry run wrote");
    let s = import(&ann, &path, &[]);
    assert_eq!(counts(&s), [3, 1, 0, 2, 0]);
    let out = export_json(&ann);
    assert_eq!(out[0]["full_name"], "Test Person");
    assert_eq!(out[1]["full_name"], "New", "the first occurrence wins");

    // error: nothing changes, exit 5 names the lines.
    let r = ann.run(&["clients", "import", &path, "--on-conflict", "error"]);
    r.expect_code(5);
    let err = r.stderr();
    assert!(
        err.contains("line 2: a client with OLD@example.com already exists"),
        "{err}"
    );
    assert!(err.contains("line 3:") && err.contains("line 4:"), "{err}");
    assert_eq!(export_json(&ann), out);

    // error, fresh owner: only the duplicate inside the file conflicts.
    let carl = env.account("user", "carl");
    let r = carl.run(&["clients", "import", &path, "--on-conflict", "error"]);
    r.expect_code(5);
    assert!(
        r.stderr()
            .contains("line 4: New@Example.com is a duplicate of line 3"),
        "{}",
        r.stderr()
    );
    assert!(emails(&carl).is_empty());

    // update: the file's values win, the last occurrence last.
    let s = import(&ann, &path, &["--on-conflict", "update"]);
    assert_eq!(counts(&s), [3, 0, 3, 0, 0]);
    let out = export_json(&ann);
    assert_eq!(
        out,
        vec![
            json!({"email": "OLD@example.com", "full_name": "Old Renamed", "comment": "c", "tags": [], "fields": {}}),
            json!({"email": "New@Example.com", "full_name": "New Again", "comment": "second", "tags": [], "fields": {}}),
        ]
    );
    let s = import(&carl, &path, &["--on-conflict", "update"]);
    assert_eq!(counts(&s), [3, 2, 1, 0, 0]);
}

fn invalid_rows(env: &Env) {
    let ann = env.account("user", "ann");
    let mut content = b"email,full_name,comment\n\
        good@example.com,Good,\n\
        not-an-email,X,\n\
        ,No Email,\n\
        extra@example.com,a,b,c\n\
        utf@example.com,\xff\xfebad,\n"
        .to_vec();
    content.extend(format!("long@example.com,{},\n", "я".repeat(201)).as_bytes());
    content.extend(b"\"multi@example.com\",M,\"a\nb\"\nbad@,after multi,\n");
    content.extend(b"fine@example.com,Fine,\n");
    let path = file(env, "bad.csv", &content);

    let r = ann.run(&["clients", "import", &path]);
    r.expect_code(5);
    let err = r.stderr();
    for want in [
        "6 problem(s) in 9 row(s); nothing was imported",
        "line 3: email: 'not-an-email' is not a valid email address",
        "line 4: missing email",
        "line 5: too many columns (4; the header has 3)",
        "line 6: invalid UTF-8 in full_name",
        "line 7: full_name: is longer than 200 characters",
        "line 10: email: 'bad@' is not a valid email address",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(emails(&ann).is_empty(), "all-or-nothing");

    // Dry run validates the same way.
    ann.run(&["clients", "import", &path, "--dry-run"])
        .expect_code(5);

    let rejects = env.dir.path().join("rejects.csv");
    let rejects_arg = rejects.display().to_string();
    let s = import(&ann, &path, &["--skip-invalid", "--rejects", &rejects_arg]);
    assert_eq!(counts(&s), [9, 3, 0, 0, 6]);
    assert_eq!(
        emails(&ann),
        vec!["good@example.com", "multi@example.com", "fine@example.com"]
    );
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&rejects)
        .expect("rejects file");
    assert_eq!(
        rdr.byte_headers().unwrap(),
        &csv::ByteRecord::from(vec!["line", "reason", "email", "full_name", "comment"])
    );
    let recs: Vec<csv::ByteRecord> = rdr.byte_records().map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 6);
    assert_eq!(&recs[0][0], b"3");
    assert_eq!(&recs[0][2], b"not-an-email");
    assert_eq!(&recs[3][1], b"invalid UTF-8 in full_name");
    assert_eq!(&recs[3][3], b"\xff\xfebad", "the original bytes are kept");
    assert_eq!(recs[2].len(), 6, "the extra column is kept");
}

fn many_problems_are_counted(env: &Env) {
    let ann = env.account("user", "ann");
    let mut content = String::from("email\n");
    for i in 0..30 {
        content.push_str(&format!("bad{i}\nok{i}@example.com\n"));
    }
    let r = ann.run(&["clients", "import", &file(env, "m.csv", content.as_bytes())]);
    r.expect_code(5);
    let err = r.stderr();
    assert!(err.contains("30 problem(s) in 60 row(s)"), "{err}");
    assert_eq!(err.matches("\n  line ").count(), 20, "{err}");
    assert!(err.contains("... and 10 more"), "{err}");
    assert!(err.contains("line 40: email: 'bad19'"), "{err}");
    assert!(!err.contains("line 42:"), "{err}");
}

/// Several batches, duplicates across batch boundaries, and the re-import.
fn large_stream(env: &Env) {
    let ann = env.account("user", "ann");
    let n = 20_000;
    let mut content = String::from("email,full_name,comment\n");
    for i in 0..n {
        content.push_str(&format!("user{i}@example.com,User {i},row {i}\n"));
    }
    content.push_str("USER7@example.com,Dup,late duplicate\n");
    let path = file(env, "big.csv", content.as_bytes());
    let s = import(&ann, &path, &[]);
    assert_eq!(counts(&s), [n + 1, n, 0, 1, 0]);
    let s = import(&ann, &path, &[]);
    assert_eq!(counts(&s), [n + 1, 0, 0, n + 1, 0]);
    let r = env
        .account("user", "bob")
        .run(&["clients", "import", &path, "--on-conflict", "error"]);
    r.expect_code(5);
    assert!(
        r.stderr()
            .contains(&format!("line {}: USER7@example.com is a duplicate", n + 2)),
        "{}",
        r.stderr()
    );
    let all = export_json(&ann);
    assert_eq!(all.len(), n as usize);
    assert_eq!(all[7]["comment"], "row 7");
}

fn export_scope(env: &Env) {
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let mgr = env.account("manager", "meg");
    ann.client("a@example.com");
    bob.client("b@example.com");
    assert_eq!(emails(&ann), vec!["a@example.com"]);
    assert_eq!(emails(&bob), vec!["b@example.com"]);
    assert_eq!(emails(&mgr), vec!["a@example.com", "b@example.com"]);
    // An import always goes to the caller, even for a manager.
    let s = import(&mgr, &file(env, "m.csv", b"email\na@example.com\n"), &[]);
    assert_eq!(counts(&s), [1, 1, 0, 0, 0]);
    assert_eq!(emails(&ann), vec!["a@example.com"]);
    assert_eq!(emails(&mgr).len(), 3);
    // Empty export still has its header.
    let carl = env.account("user", "carl");
    assert_eq!(
        carl.run(&["clients", "export"]).success().stdout(),
        "email,full_name,comment,tags\n"
    );
    assert_eq!(carl.json(&["clients", "export"]), json!([]));
    env.as_("nobody")
        .run(&["clients", "import", "-"])
        .expect_code(3);
    env.as_("nobody").run(&["clients", "export"]).expect_code(3);
}

/// A process killed in the middle of an import leaves the database as it was.
fn interrupted_import_changes_nothing(env: &Env) {
    let ann = env.account("user", "ann");
    ann.client("before@example.com");
    for signal in [libc::SIGKILL, libc::SIGINT] {
        let mut child = env
            .process("ann")
            .args(["clients", "import", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"email,full_name,comment\n").unwrap();
        // Several full batches reach the open transaction; then the process dies mid-file.
        for i in 0..50_000 {
            writeln!(stdin, "k{i}@example.com,Name {i},comment").unwrap();
        }
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before its input did"
        );
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert!(!status.success(), "signal {signal}: {status:?}");
        drop(stdin);
        assert_eq!(emails(&ann), vec!["before@example.com"], "signal {signal}");
    }
    // The database is usable afterwards (no stale lock, no half transaction).
    let s = import(
        &ann,
        &file(env, "after.csv", b"email\nafter@example.com\n"),
        &[],
    );
    assert_eq!(counts(&s), [1, 1, 0, 0, 0]);
}

on_both_backends!(
    roundtrip_is_exact,
    header_variants,
    conflicts,
    invalid_rows,
    many_problems_are_counted,
    large_stream,
    export_scope,
    interrupted_import_changes_nothing,
);
